/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Describing what a registry holds: the services and types asked for and,
 * transitively, every message and enum type they use, as JSON
 * (pb_registry_describe_json) or as .proto-like text
 * (pb_registry_describe_text) for busdctl introspect.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "libbus/macro.h"
#include "tools/busdctl/pb-registry.h"

/* ---- describe: what was asked for, and every type it uses */

typedef struct Closure {
        const PbService **services;
        size_t n_services;
        const PbMessage **messages;
        size_t n_messages;
        const PbEnum **enums;
        size_t n_enums;
        bool *has_message, *has_enum, *has_service; /* by registry index */
} Closure;

static void closure_clear(Closure *c) {
        free(c->services);
        free(c->messages);
        free(c->enums);
        free(c->has_message);
        free(c->has_enum);
        free(c->has_service);
}

static int closure_add_message(Closure *c, const PbMessage *m) {
        int r;

        if (!m || c->has_message[m->index])
                return 0;
        r = pb_grow(&c->messages, c->n_messages, sizeof(PbMessage *));
        if (r < 0)
                return r;
        c->has_message[m->index] = true;
        c->messages[c->n_messages++] = m;
        return 0;
}

static int closure_add_enum(Closure *c, const PbEnum *e) {
        int r;

        if (!e || c->has_enum[e->index])
                return 0;
        r = pb_grow(&c->enums, c->n_enums, sizeof(PbEnum *));
        if (r < 0)
                return r;
        c->has_enum[e->index] = true;
        c->enums[c->n_enums++] = e;
        return 0;
}

static int closure_add_service(Closure *c, const PbRegistry *r, const PbService *s) {
        int k;

        if (c->has_service[s->index])
                return 0;
        k = pb_grow(&c->services, c->n_services, sizeof(PbService *));
        if (k < 0)
                return k;
        c->has_service[s->index] = true;
        c->services[c->n_services++] = s;
        for (size_t i = 0; i < s->n_methods && k >= 0; i++) {
                k = closure_add_message(c, pb_registry_message(r, s->methods[i].input));
                if (k >= 0)
                        k = closure_add_message(c, pb_registry_message(r, s->methods[i].output));
        }
        return k;
}

/* A map's entry type is shown as map<K, V>: what it uses is its value's. */
static int closure_add_field_types(Closure *c, const PbField *f) {
        if (f->map)
                f = pb_map_value(f);
        if (f->type == PB_TYPE_MESSAGE)
                return closure_add_message(c, f->message);
        if (f->type == PB_TYPE_ENUM)
                return closure_add_enum(c, f->enumeration);
        return 0;
}

static int closure_add_named(Closure *c, const PbRegistry *r, const char *const *services,
                             const char *const *types) {
        int k = 0;

        for (size_t i = 0; services && services[i] && k >= 0; i++) {
                const PbService *s = pb_registry_lookup(r, services[i], PB_KIND_SERVICE);

                k = s ? closure_add_service(c, r, s) : -ENOENT;
        }
        for (size_t i = 0; types && types[i] && k >= 0; i++) {
                const PbMessage *m = pb_registry_message(r, types[i]);
                const PbEnum *e = pb_registry_enum(r, types[i]);

                k = m ? closure_add_message(c, m) : e ? closure_add_enum(c, e) : -ENOENT;
        }
        return k;
}

static int closure_add_all(Closure *c, const PbRegistry *r) {
        int k = 0;

        for (size_t i = 0; i < r->n_services && k >= 0; i++)
                k = closure_add_service(c, r, r->services[i]);
        for (size_t i = 0; i < r->n_messages && k >= 0; i++)
                if (!r->messages[i]->is_map_entry)
                        k = closure_add_message(c, r->messages[i]);
        for (size_t i = 0; i < r->n_enums && k >= 0; i++)
                k = closure_add_enum(c, r->enums[i]);
        return k;
}

/* Everything named (or, with no names at all, everything known) and the
 * types their fields use, recursively. */
static int closure_build(Closure *c, const PbRegistry *r, const char *const *services,
                         const char *const *types) {
        int k;

        c->has_message = calloc(r->n_messages + 1, sizeof(bool));
        c->has_enum = calloc(r->n_enums + 1, sizeof(bool));
        c->has_service = calloc(r->n_services + 1, sizeof(bool));
        if (!c->has_message || !c->has_enum || !c->has_service)
                return -ENOMEM;

        k = !services && !types ? closure_add_all(c, r) : closure_add_named(c, r, services, types);
        /* the list grows as we go: each message added is visited once */
        for (size_t i = 0; i < c->n_messages && k >= 0; i++)
                for (size_t j = 0; j < c->messages[i]->n_fields && k >= 0; j++)
                        k = closure_add_field_types(c, &c->messages[i]->fields[j]);
        return k;
}

static const char *field_type_text(const PbField *f) {
        if (f->type == PB_TYPE_MESSAGE && f->message)
                return f->message->full_name;
        if (f->type == PB_TYPE_ENUM && f->enumeration)
                return f->enumeration->full_name;
        if (f->type_name)
                return f->type_name + (f->type_name[0] == '.');
        return pb_type_name(f->type);
}

static const char *field_label_text(const PbField *f) {
        return f->repeated ? "repeated" : f->required ? "required" : "optional";
}

/* ---- describe as JSON */

static json_object *describe_json_method(const PbMethod *m) {
        json_object *o = json_object_new_object();

        if (!o ||
            pb_json_add(o, "name", json_object_new_string(m->name)) < 0 ||
            pb_json_add(o, "input", json_object_new_string(m->input)) < 0 ||
            pb_json_add(o, "output", json_object_new_string(m->output)) < 0 ||
            (m->client_streaming &&
             pb_json_add(o, "clientStreaming", json_object_new_boolean(1)) < 0) ||
            (m->server_streaming &&
             pb_json_add(o, "serverStreaming", json_object_new_boolean(1)) < 0)) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

static json_object *describe_json_service(const PbService *s) {
        json_object *o = json_object_new_object(), *methods = json_object_new_array();

        if (!o || pb_json_add(o, "name", json_object_new_string(s->full_name)) < 0 ||
            pb_json_add(o, "methods", methods) < 0) {
                json_object_put(o);
                return NULL;
        }
        for (size_t i = 0; i < s->n_methods; i++)
                if (pb_json_append(methods, describe_json_method(&s->methods[i])) < 0) {
                        json_object_put(o);
                        return NULL;
                }
        return o;
}

static json_object *describe_json_map(const PbField *f) {
        json_object *o = json_object_new_object();

        const char *key = pb_type_name(pb_map_key(f)->type);
        const char *value = field_type_text(pb_map_value(f));

        if (!o || pb_json_add(o, "key", json_object_new_string(key)) < 0 ||
            pb_json_add(o, "value", json_object_new_string(value)) < 0) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

static json_object *describe_json_field(const PbField *f) {
        const PbMessage *m = f->parent;
        json_object *o = json_object_new_object();

        if (!o || pb_json_add(o, "name", json_object_new_string(f->name)) < 0 ||
            pb_json_add(o, "jsonName", json_object_new_string(f->json_name)) < 0 ||
            pb_json_add(o, "number", json_object_new_int64(f->number)) < 0 ||
            pb_json_add(o, "label", json_object_new_string(field_label_text(f))) < 0 ||
            pb_json_add(o, "type", json_object_new_string(field_type_text(f))) < 0 ||
            (f->map && pb_json_add(o, "map", describe_json_map(f)) < 0) ||
            (f->oneof >= 0 && !m->oneof_synthetic[f->oneof] && m->oneofs[f->oneof] &&
             pb_json_add(o, "oneof", json_object_new_string(m->oneofs[f->oneof])) < 0)) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

static json_object *describe_json_message(const PbMessage *m) {
        json_object *o = json_object_new_object(), *fields = json_object_new_array();

        if (!o || pb_json_add(o, "name", json_object_new_string(m->full_name)) < 0 ||
            pb_json_add(o, "fields", fields) < 0) {
                json_object_put(o);
                return NULL;
        }
        for (size_t i = 0; i < m->n_fields; i++)
                if (pb_json_append(fields, describe_json_field(&m->fields[i])) < 0) {
                        json_object_put(o);
                        return NULL;
                }
        return o;
}

static json_object *describe_json_enum(const PbEnum *e) {
        json_object *o = json_object_new_object(), *values = json_object_new_array();

        if (!o || pb_json_add(o, "name", json_object_new_string(e->full_name)) < 0 ||
            pb_json_add(o, "values", values) < 0) {
                json_object_put(o);
                return NULL;
        }
        for (size_t i = 0; i < e->n_values; i++) {
                json_object *v = json_object_new_object();

                if (pb_json_append(values, v) < 0 ||
                    pb_json_add(v, "name", json_object_new_string(e->values[i].name)) < 0 ||
                    pb_json_add(v, "number", json_object_new_int64(e->values[i].number)) < 0) {
                        json_object_put(o);
                        return NULL;
                }
        }
        return o;
}

static int describe_json_closure(const Closure *c, json_object *o) {
        json_object *services = json_object_new_array(), *messages = json_object_new_array(),
                    *enums = json_object_new_array();
        int k;

        /* pb_json_add() takes each list, or drops it on failure */
        k = pb_json_add(o, "services", services);
        k = pb_json_add(o, "messages", messages) ?: k;
        k = pb_json_add(o, "enums", enums) ?: k;
        for (size_t i = 0; i < c->n_services && k >= 0; i++)
                k = pb_json_append(services, describe_json_service(c->services[i]));
        for (size_t i = 0; i < c->n_messages && k >= 0; i++)
                k = pb_json_append(messages, describe_json_message(c->messages[i]));
        for (size_t i = 0; i < c->n_enums && k >= 0; i++)
                k = pb_json_append(enums, describe_json_enum(c->enums[i]));
        return k;
}

int pb_registry_describe_json(const PbRegistry *r, const char *const *services,
                              const char *const *types, json_object **ret) {
        _cleanup_(closure_clear) Closure c = {};
        json_object *o;
        int k;

        if (!r || !ret)
                return -EINVAL;
        k = closure_build(&c, r, services, types);
        if (k < 0)
                return k;
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        k = describe_json_closure(&c, o);
        if (k < 0) {
                json_object_put(o);
                return k;
        }
        *ret = o;
        return 0;
}

/* ---- describe as .proto-like text */

/* A service or type to print. Sorted by the message it is printed inside
 * (0: none, at the top), then package, then seq, the items of a package
 * and the types nested in a message come together. */
typedef struct TextItem {
        uintptr_t parent;
        const char *package;
        size_t seq; /* the services, the messages, the enums, each in closure order */
} TextItem;

typedef struct TextOut {
        const Closure *c;
        FILE *f;
        TextItem *items;
        size_t n_items;
        bool blank; /* a blank line goes before the next block */
} TextOut;

static int text_item_compare(const void *a, const void *b) {
        const TextItem *x = a, *y = b;
        int k;

        if (x->parent != y->parent)
                return x->parent < y->parent ? -1 : 1;
        k = strcmp(x->package, y->package);
        if (k != 0)
                return k;
        return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Nested types go inside their message when it is printed too. */
static uintptr_t text_parent(const Closure *c, const PbMessage *parent) {
        return parent && c->has_message[parent->index] ? (uintptr_t) parent : 0;
}

static int text_items_build(TextOut *t) {
        const Closure *c = t->c;
        size_t n = 0;

        t->items = calloc(c->n_services + c->n_messages + c->n_enums + 1, sizeof(TextItem));
        if (!t->items)
                return -ENOMEM;
        for (size_t i = 0; i < c->n_services; i++, n++)
                t->items[n] = (TextItem) { 0, c->services[i]->package, n };
        for (size_t i = 0; i < c->n_messages; i++, n++)
                t->items[n] = (TextItem) { text_parent(c, c->messages[i]->parent),
                                           c->messages[i]->package, n };
        for (size_t i = 0; i < c->n_enums; i++, n++)
                t->items[n] = (TextItem) { text_parent(c, c->enums[i]->parent), c->enums[i]->package,
                                           n };
        t->n_items = n;
        qsort(t->items, n, sizeof(TextItem), text_item_compare);
        return 0;
}

static void text_block_start(TextOut *t, unsigned indent) {
        if (t->blank)
                fputc('\n', t->f);
        t->blank = true;
        fprintf(t->f, "%*s", (int) indent * 2, "");
}

/* At the top, a type's name inside its package; nested types whose parent
 * is not shown keep the path of their parents ("Outer.Inner"). */
static const char *text_name(const char *full_name, const char *name, const char *package,
                             unsigned indent) {
        if (indent > 0)
                return name;
        return *package ? full_name + strlen(package) + 1 : full_name;
}

static void text_service(TextOut *t, const PbService *s) {
        text_block_start(t, 0);
        fprintf(t->f, "service %s {\n", s->name);
        for (size_t i = 0; i < s->n_methods; i++) {
                const PbMethod *m = &s->methods[i];

                fprintf(t->f, "  rpc %s(%s%s) returns (%s%s);\n", m->name,
                        m->client_streaming ? "stream " : "", m->input,
                        m->server_streaming ? "stream " : "", m->output);
        }
        fputs("}\n", t->f);
}

/* The options protoc would need to give the field the same descriptor. */
static void text_field_options(TextOut *t, const PbField *f) {
        _cleanup_free_ char *derived = pb_name_camel_case(f->name, false, "");
        bool packed_differs = f->repeated && pb_type_is_packable(f->type) &&
                              f->packed != f->parent->proto3;
        bool json_differs = derived && !streq(derived, f->json_name);

        if (!packed_differs && !json_differs)
                return;
        fputs(" [", t->f);
        if (packed_differs)
                fprintf(t->f, "packed = %s%s", f->packed ? "true" : "false",
                        json_differs ? ", " : "");
        if (json_differs)
                fprintf(t->f, "json_name = \"%s\"", f->json_name);
        fputc(']', t->f);
}

static void text_field(TextOut *t, const PbField *f, unsigned indent) {
        const char *label = "";

        fprintf(t->f, "%*s", (int) indent * 2, "");
        if (f->map) {
                fprintf(t->f, "map<%s, %s> %s = %" PRIu32 ";\n", pb_type_name(pb_map_key(f)->type),
                        field_type_text(pb_map_value(f)), f->name, f->number);
                return;
        }
        if (f->repeated)
                label = "repeated ";
        else if (f->required)
                label = "required ";
        else if (f->proto3_optional || (!f->parent->proto3 && f->oneof < 0))
                label = "optional ";
        fprintf(t->f, "%s%s %s = %" PRIu32, label, field_type_text(f), f->name, f->number);
        text_field_options(t, f);
        fputs(";\n", t->f);
}

static void text_oneof(TextOut *t, const PbMessage *m, int oneof, unsigned indent) {
        fprintf(t->f, "%*s", (int) indent * 2, "");
        if (m->oneofs[oneof])
                fprintf(t->f, "oneof %s {\n", m->oneofs[oneof]);
        else
                fprintf(t->f, "oneof oneof_%d {\n", oneof);
        for (int i = m->oneof_first[oneof]; i >= 0; i = m->fields[i].oneof_next)
                text_field(t, &m->fields[i], indent + 1);
        fprintf(t->f, "%*s}\n", (int) indent * 2, "");
}

static void text_enum(TextOut *t, const PbEnum *e, unsigned indent) {
        text_block_start(t, indent);
        fprintf(t->f, "enum %s {\n", text_name(e->full_name, e->name, e->package, indent));
        for (size_t i = 0; i < e->n_values; i++)
                fprintf(t->f, "%*s%s = %" PRId32 ";\n", (int) (indent + 1) * 2, "",
                        e->values[i].name, e->values[i].number);
        fprintf(t->f, "%*s}\n", (int) indent * 2, "");
}

static void text_nested(TextOut *t, const PbMessage *m, unsigned indent);

static void text_message(TextOut *t, const PbMessage *m, unsigned indent) {
        text_block_start(t, indent);
        fprintf(t->f, "message %s {\n", text_name(m->full_name, m->name, m->package, indent));
        for (size_t i = 0; i < m->n_fields; i++) {
                const PbField *f = &m->fields[i];

                if (f->oneof < 0 || m->oneof_synthetic[f->oneof])
                        text_field(t, f, indent + 1);
                else if (m->oneof_first[f->oneof] == (int) i)
                        text_oneof(t, m, f->oneof, indent + 1); /* where its first field is */
        }
        t->blank = m->n_fields > 0;
        text_nested(t, m, indent + 1);
        fprintf(t->f, "%*s}\n", (int) indent * 2, "");
        t->blank = true;
}

static void text_item(TextOut *t, const TextItem *item, unsigned indent) {
        const Closure *c = t->c;
        size_t seq = item->seq;

        if (seq < c->n_services)
                text_service(t, c->services[seq]);
        else if ((seq -= c->n_services) < c->n_messages)
                text_message(t, c->messages[seq], indent);
        else
                text_enum(t, c->enums[seq - c->n_messages], indent);
}

/* The types nested in m, as in the .proto. */
static void text_nested(TextOut *t, const PbMessage *m, unsigned indent) {
        uintptr_t parent = (uintptr_t) m;
        size_t lo = 0, hi = t->n_items;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (t->items[mid].parent < parent)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        for (; lo < t->n_items && t->items[lo].parent == parent; lo++)
                text_item(t, &t->items[lo], indent);
}

int pb_registry_describe_text(const PbRegistry *r, const char *const *services,
                              const char *const *types, FILE *f) {
        _cleanup_(closure_clear) Closure c = {};
        TextOut t = { .c = &c, .f = f };
        int k;

        if (!r || !f)
                return -EINVAL;
        k = closure_build(&c, r, services, types);
        if (k >= 0)
                k = text_items_build(&t);
        /* the top level, a package at a time */
        for (size_t i = 0; k >= 0 && i < t.n_items && t.items[i].parent == 0; i++) {
                const char *package = t.items[i].package;

                if (*package && (i == 0 || !streq(package, t.items[i - 1].package))) {
                        text_block_start(&t, 0);
                        fprintf(f, "package %s;\n", package);
                }
                text_item(&t, &t.items[i], 0);
        }
        free(t.items);
        if (k < 0)
                return k;
        return ferror(f) ? -EIO : 0;
}
