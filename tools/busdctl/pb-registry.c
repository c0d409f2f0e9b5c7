/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * PbRegistry: message, enum and service types loaded from serialized
 * FileDescriptorSets, indexed by fully qualified name.
 *
 * The registry keeps every unpacked set and points into it; it owns what it
 * derives (full names, json names, the per-message tables). One sorted table
 * of symbols maps names to types, as protobuf has a single namespace for
 * messages, enums and services.
 *
 * A set comes from a peer and is validated before anything of it is used.
 * Structural faults reject the whole set with -EBADMSG and leave the
 * registry as it was: a set that does not unpack, nesting deeper than
 * PB_MAX_DEPTH, a missing or malformed name, a field number outside
 * 1..2^29-1 or used twice in a message, two fields of one name, an unknown
 * type or label value, a message or enum field without type_name, a oneof
 * index out of range or on a repeated field, a method without input or
 * output type, a name defined twice in the set. A type_name that names no
 * type, or a type of the wrong kind, is not a fault of the set: it may be
 * in a set added later (protoc without --include_imports). Such a field
 * stays unresolved and decodes as an unknown field until it resolves.
 * Recursive and mutually recursive types are legal protobuf and are kept;
 * the codecs bound their recursion with PB_MAX_DEPTH.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "libbus/macro.h"
#include "tools/busdctl/pb-registry.h"

#define PB_NAME_MAX 1024

typedef Google__Protobuf__FileDescriptorSet DescSet;
typedef Google__Protobuf__FileDescriptorProto DescFile;
typedef Google__Protobuf__DescriptorProto DescMessage;
typedef Google__Protobuf__FieldDescriptorProto DescField;
typedef Google__Protobuf__EnumDescriptorProto DescEnum;
typedef Google__Protobuf__ServiceDescriptorProto DescService;

#define LABEL_OPTIONAL GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_OPTIONAL
#define LABEL_REQUIRED GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REQUIRED
#define LABEL_REPEATED GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED

/* What one set adds, before it is committed. */
typedef struct Staging {
        const PbRegistry *registry;
        PbMessage **messages;
        size_t n_messages;
        PbEnum **enums;
        size_t n_enums;
        PbService **services;
        size_t n_services;
} Staging;

static PbMessage *message_free(PbMessage *m) {
        if (!m)
                return NULL;
        for (size_t i = 0; i < m->n_fields; i++)
                free(m->fields[i].json_name);
        free(m->fields);
        free(m->by_number);
        free(m->by_name);
        free(m->by_json_name);
        free(m->oneofs);
        free(m->oneof_synthetic);
        free(m->oneof_first);
        free(m->full_name);
        free(m);
        return NULL;
}

static PbEnum *enum_free(PbEnum *e) {
        if (!e)
                return NULL;
        free(e->values);
        free(e->by_number);
        free(e->by_name);
        free(e->full_name);
        free(e);
        return NULL;
}

static PbService *service_free(PbService *s) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n_methods; i++) {
                free(s->methods[i].input);
                free(s->methods[i].output);
        }
        free(s->methods);
        free(s->full_name);
        free(s);
        return NULL;
}

static void staging_clear(Staging *st) {
        for (size_t i = 0; i < st->n_messages; i++)
                message_free(st->messages[i]);
        for (size_t i = 0; i < st->n_enums; i++)
                enum_free(st->enums[i]);
        for (size_t i = 0; i < st->n_services; i++)
                service_free(st->services[i]);
        free(st->messages);
        free(st->enums);
        free(st->services);
}

int pb_registry_new(PbRegistry **ret) {
        PbRegistry *r;

        if (!ret)
                return -EINVAL;
        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        *ret = r;
        return 0;
}

PbRegistry *pb_registry_free(PbRegistry *r) {
        if (!r)
                return NULL;
        for (size_t i = 0; i < r->n_messages; i++)
                message_free(r->messages[i]);
        for (size_t i = 0; i < r->n_enums; i++)
                enum_free(r->enums[i]);
        for (size_t i = 0; i < r->n_services; i++)
                service_free(r->services[i]);
        for (size_t i = 0; i < r->n_sets; i++)
                google__protobuf__file_descriptor_set__free_unpacked(r->sets[i], NULL);
        free(r->messages);
        free(r->enums);
        free(r->services);
        free(r->sets);
        free(r->symbols);
        free(r);
        return NULL;
}

/* ---- names */

static bool name_is_identifier(const char *s, size_t len) {
        if (len == 0 || len > PB_NAME_MAX)
                return false;
        for (size_t i = 0; i < len; i++) {
                char c = s[i];
                bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';

                if (!letter && !(i > 0 && c >= '0' && c <= '9'))
                        return false;
        }
        return true;
}

static bool name_is_valid(const char *s) {
        return s && name_is_identifier(s, strlen(s));
}

/* A package or type path: identifiers joined by dots, or empty. */
static bool name_is_dotted(const char *s) {
        const char *dot;

        if (!s || !*s)
                return true;
        if (strlen(s) > PB_NAME_MAX)
                return false;
        for (;;) {
                dot = strchr(s, '.');
                if (!name_is_identifier(s, dot ? (size_t) (dot - s) : strlen(s)))
                        return false;
                if (!dot)
                        return true;
                s = dot + 1;
        }
}

static char *name_join(const char *scope, const char *name) {
        char *s;

        if (!scope || !*scope)
                return strdup(name);
        if (asprintf(&s, "%s.%s", scope, name) < 0)
                return NULL;
        return s;
}

/* protoc's rule for json names and map entry names: drop each underscore
 * and upper-case the letter after it; an entry name also starts upper-case
 * and ends in "Entry". */
char *pb_name_camel_case(const char *name, bool upper_first, const char *suffix) {
        char *s = malloc(strlen(name) + strlen(suffix) + 1), *t = s;
        bool upper = upper_first;

        if (!s)
                return NULL;
        for (; *name; name++) {
                if (*name == '_')
                        upper = true;
                else {
                        *t++ = upper && *name >= 'a' && *name <= 'z' ? *name - 'a' + 'A' : *name;
                        upper = false;
                }
        }
        strcpy(t, suffix);
        return s;
}

/* A json_name from the descriptor is printed in quotes by describe: only
 * plain printable ASCII is taken as it is. */
static bool json_name_is_plain(const char *s) {
        if (!s || !*s || strlen(s) > PB_NAME_MAX)
                return false;
        for (; *s; s++)
                if (*s < 0x20 || *s > 0x7e || *s == '"' || *s == '\\')
                        return false;
        return true;
}

/* ---- symbols */

static int symbol_compare(const void *a, const void *b) {
        return strcmp(((const PbSymbol *) a)->name, ((const PbSymbol *) b)->name);
}

static const PbSymbol *symbol_find(const PbSymbol *symbols, size_t n, const char *name) {
        PbSymbol key = { .name = name };

        if (!name)
                return NULL;
        if (name[0] == '.')
                key.name++;
        if (n == 0)
                return NULL;
        return bsearch(&key, symbols, n, sizeof(PbSymbol), symbol_compare);
}

void *pb_registry_lookup(const PbRegistry *r, const char *name, PbKind kind) {
        const PbSymbol *s;

        if (!r)
                return NULL;
        s = symbol_find(r->symbols, r->n_symbols, name);
        return s && s->kind == kind ? s->object : NULL;
}

const PbMessage *pb_registry_message(const PbRegistry *r, const char *name) {
        return pb_registry_lookup(r, name, PB_KIND_MESSAGE);
}

const PbEnum *pb_registry_enum(const PbRegistry *r, const char *name) {
        return pb_registry_lookup(r, name, PB_KIND_ENUM);
}

bool pb_registry_has_message(const PbRegistry *r, const char *type) {
        return pb_registry_message(r, type);
}

bool pb_registry_has_service(const PbRegistry *r, const char *service) {
        return pb_registry_lookup(r, service, PB_KIND_SERVICE);
}

/* Finds the symbol a type_name refers to from inside scope: an absolute
 * ".pkg.Type" directly, a relative name in scope, then in each enclosing
 * scope out to the root, as protoc searches. */
static const PbSymbol *symbol_resolve(const PbSymbol *symbols, size_t n, const char *scope,
                                      const char *name) {
        _cleanup_free_ char *candidate = NULL;
        size_t len;

        if (!name || !*name)
                return NULL;
        if (name[0] == '.')
                return symbol_find(symbols, n, name);

        len = strlen(scope);
        candidate = malloc(len + 1 + strlen(name) + 1);
        if (!candidate)
                return NULL;
        for (;;) {
                const PbSymbol *s;

                if (len > 0)
                        sprintf(candidate, "%.*s.%s", (int) len, scope, name);
                else
                        strcpy(candidate, name);
                s = symbol_find(symbols, n, candidate);
                if (s || len == 0)
                        return s;
                while (len > 0 && scope[len - 1] != '.')
                        len--;
                if (len > 0)
                        len--; /* the dot */
        }
}

/* ---- adding a set: validation into a Staging, then commit */

DEFINE_CLEANUP(PbMessage, message_free)
DEFINE_CLEANUP(PbEnum, enum_free)
DEFINE_CLEANUP(PbService, service_free)

/* Makes room for n elements in *array. */
static int reserve(void *array, size_t n, size_t size) {
        void **p = array;
        void *a = reallocarray(*p, MAX(n, 1), size);

        if (!a)
                return -ENOMEM;
        *p = a;
        return 0;
}

/* Makes room for one more element at the end of *array (n elements now).
 * Arrays grown only by this have a power of two as capacity, so they move
 * when full, not at every element. */
int pb_grow(void *array, size_t n, size_t size) {
        if (n > 0 && (n & (n - 1)) != 0)
                return 0;
        return reserve(array, n > 0 ? 2 * n : 1, size);
}

/* A name this set defines that the registry already knows keeps its first
 * definition: the new one is dropped, with what is nested in it. */
static bool staging_is_known(const Staging *st, const char *full_name) {
        return symbol_find(st->registry->symbols, st->registry->n_symbols, full_name);
}

static int value_compare_number(const void *a, const void *b) {
        const PbEnumValue *x = *(const PbEnumValue *const *) a, *y = *(const PbEnumValue *const *) b;

        /* aliases: the first declared comes first, and is the one shown */
        if (x->number != y->number)
                return x->number < y->number ? -1 : 1;
        return x < y ? -1 : x > y;
}

static int value_compare_name(const void *a, const void *b) {
        return strcmp((*(const PbEnumValue *const *) a)->name,
                      (*(const PbEnumValue *const *) b)->name);
}

static int enum_index_values(PbEnum *e) {
        e->by_number = calloc(MAX(e->n_values, 1), sizeof(PbEnumValue *));
        e->by_name = calloc(MAX(e->n_values, 1), sizeof(PbEnumValue *));
        if (!e->by_number || !e->by_name)
                return -ENOMEM;
        for (size_t i = 0; i < e->n_values; i++)
                e->by_number[i] = e->by_name[i] = &e->values[i];
        qsort(e->by_number, e->n_values, sizeof(PbEnumValue *), value_compare_number);
        qsort(e->by_name, e->n_values, sizeof(PbEnumValue *), value_compare_name);
        return 0;
}

static int stage_enum(Staging *st, const DescEnum *d, const char *scope, const char *package,
                      const PbMessage *parent, bool proto3) {
        _cleanup_(enum_freep) PbEnum *e = NULL;
        int r;

        if (!name_is_valid(d->name))
                return -EBADMSG;
        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        e->full_name = name_join(scope, d->name);
        if (!e->full_name)
                return -ENOMEM;
        if (staging_is_known(st, e->full_name))
                return 0;
        e->name = d->name;
        e->package = package;
        e->parent = parent;
        e->proto3 = proto3;
        e->values = calloc(MAX(d->n_value, 1), sizeof(PbEnumValue));
        if (!e->values)
                return -ENOMEM;
        for (size_t i = 0; i < d->n_value; i++) {
                if (!name_is_valid(d->value[i]->name) || !d->value[i]->has_number)
                        return -EBADMSG;
                e->values[i] = (PbEnumValue) { d->value[i]->name, d->value[i]->number };
        }
        e->n_values = d->n_value;
        r = enum_index_values(e);
        if (r < 0)
                return r;

        r = pb_grow(&st->enums, st->n_enums, sizeof(PbEnum *));
        if (r < 0)
                return r;
        st->enums[st->n_enums++] = TAKE_PTR(e);
        return 1;
}

static bool type_is_valid(int type) {
        return type >= PB_TYPE_DOUBLE && type <= PB_TYPE_MAX;
}

static int stage_field(PbMessage *m, PbField *f, const DescField *d, size_t n_oneofs) {
        const char *type_name = d->type_name;

        if (!name_is_valid(d->name) || !d->has_number || d->number < 1 ||
            (uint32_t) d->number > PB_FIELD_NUMBER_MAX || !d->has_type || !type_is_valid(d->type))
                return -EBADMSG;
        if (d->has_label && (d->label < LABEL_OPTIONAL || d->label > LABEL_REPEATED))
                return -EBADMSG;
        if ((int) d->type == PB_TYPE_MESSAGE || (int) d->type == PB_TYPE_ENUM ||
            (int) d->type == PB_TYPE_GROUP) {
                if (!type_name || !*type_name || !name_is_dotted(type_name + (type_name[0] == '.')))
                        return -EBADMSG;
                f->type_name = type_name;
        }

        f->name = d->name;
        f->number = (uint32_t) d->number;
        f->type = (PbType) d->type;
        f->parent = m;
        f->repeated = d->label == LABEL_REPEATED;
        f->required = d->label == LABEL_REQUIRED;
        f->proto3_optional = d->has_proto3_optional && d->proto3_optional;
        f->default_value = d->default_value;
        f->oneof = -1;
        if (d->has_oneof_index) {
                if (d->oneof_index < 0 || (size_t) d->oneof_index >= n_oneofs || f->repeated)
                        return -EBADMSG;
                f->oneof = d->oneof_index;
        }
        if (f->repeated && pb_type_is_packable(f->type))
                f->packed = d->options && d->options->has_packed ? d->options->packed : m->proto3;

        f->json_name = json_name_is_plain(d->json_name) ? strdup(d->json_name)
                                                        : pb_name_camel_case(d->name, false, "");
        return f->json_name ? 0 : -ENOMEM;
}

static int field_compare_number(const void *a, const void *b) {
        const PbField *x = *(const PbField *const *) a, *y = *(const PbField *const *) b;

        return x->number < y->number ? -1 : x->number > y->number;
}

static int field_compare_name(const void *a, const void *b) {
        return strcmp((*(const PbField *const *) a)->name, (*(const PbField *const *) b)->name);
}

static int field_compare_json_name(const void *a, const void *b) {
        return strcmp((*(const PbField *const *) a)->json_name,
                      (*(const PbField *const *) b)->json_name);
}

/* Builds the indexes and checks that numbers and names are unique. Two
 * json names may clash (protoc refuses that, a peer may not): the JSON
 * key then names the first in the index. */
static int message_index_fields(PbMessage *m) {
        size_t n = MAX(m->n_fields, 1);

        m->by_number = calloc(n, sizeof(PbField *));
        m->by_name = calloc(n, sizeof(PbField *));
        m->by_json_name = calloc(n, sizeof(PbField *));
        if (!m->by_number || !m->by_name || !m->by_json_name)
                return -ENOMEM;
        for (size_t i = 0; i < m->n_fields; i++)
                m->by_number[i] = m->by_name[i] = m->by_json_name[i] = &m->fields[i];
        qsort(m->by_number, m->n_fields, sizeof(PbField *), field_compare_number);
        qsort(m->by_name, m->n_fields, sizeof(PbField *), field_compare_name);
        qsort(m->by_json_name, m->n_fields, sizeof(PbField *), field_compare_json_name);
        for (size_t i = 1; i < m->n_fields; i++)
                if (m->by_number[i - 1]->number == m->by_number[i]->number ||
                    streq(m->by_name[i - 1]->name, m->by_name[i]->name))
                        return -EBADMSG;
        return 0;
}

static int message_add_oneofs(PbMessage *m, const DescMessage *d) {
        m->oneofs = calloc(MAX(d->n_oneof_decl, 1), sizeof(char *));
        m->oneof_synthetic = calloc(MAX(d->n_oneof_decl, 1), sizeof(bool));
        m->oneof_first = calloc(MAX(d->n_oneof_decl, 1), sizeof(int));
        if (!m->oneofs || !m->oneof_synthetic || !m->oneof_first)
                return -ENOMEM;
        /* Only describe prints these: a missing or odd name is not worth
         * rejecting a set for, describe makes one up. */
        for (size_t i = 0; i < d->n_oneof_decl; i++) {
                const char *name = d->oneof_decl[i]->name;

                m->oneofs[i] = name_is_valid(name) ? name : NULL;
                m->oneof_first[i] = -1;
        }
        m->n_oneofs = d->n_oneof_decl;
        return 0;
}

/* Chains each oneof's fields in declaration order (walking backwards, each
 * field links to the first one found so far), so that describe lists a
 * oneof without searching all fields for each. */
static void message_link_oneofs(PbMessage *m) {
        for (size_t i = m->n_fields; i-- > 0;) {
                PbField *f = &m->fields[i];

                f->oneof_next = -1;
                if (f->oneof < 0)
                        continue;
                f->oneof_next = m->oneof_first[f->oneof];
                m->oneof_first[f->oneof] = (int) i;
                if (f->proto3_optional)
                        m->oneof_synthetic[f->oneof] = true;
        }
}

static int stage_message(Staging *st, const DescMessage *d, const char *scope, const char *package,
                         const PbMessage *parent, bool proto3, unsigned depth) {
        _cleanup_(message_freep) PbMessage *m = NULL;
        PbMessage *added;
        int r;

        if (depth > PB_MAX_DEPTH || !name_is_valid(d->name))
                return -EBADMSG;
        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->full_name = name_join(scope, d->name);
        if (!m->full_name)
                return -ENOMEM;
        if (staging_is_known(st, m->full_name))
                return 0;
        m->name = d->name;
        m->package = package;
        m->parent = parent;
        m->proto3 = proto3;
        m->map_entry = d->options && d->options->has_map_entry && d->options->map_entry;

        r = message_add_oneofs(m, d);
        if (r < 0)
                return r;
        m->fields = calloc(MAX(d->n_field, 1), sizeof(PbField));
        if (!m->fields)
                return -ENOMEM;
        for (size_t i = 0; i < d->n_field; i++) {
                m->n_fields++; /* so that message_free() sees a half-built field */
                r = stage_field(m, &m->fields[i], d->field[i], m->n_oneofs);
                if (r < 0)
                        return r;
        }
        message_link_oneofs(m);
        r = message_index_fields(m);
        if (r < 0)
                return r;

        r = pb_grow(&st->messages, st->n_messages, sizeof(PbMessage *));
        if (r < 0)
                return r;
        added = st->messages[st->n_messages++] = TAKE_PTR(m);

        for (size_t i = 0; i < d->n_nested_type; i++) {
                r = stage_message(st, d->nested_type[i], added->full_name, package, added, proto3,
                                  depth + 1);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < d->n_enum_type; i++) {
                r = stage_enum(st, d->enum_type[i], added->full_name, package, added, proto3);
                if (r < 0)
                        return r;
        }
        return 1;
}

static int stage_service(Staging *st, const DescService *d, const char *package) {
        _cleanup_(service_freep) PbService *s = NULL;
        int r;

        if (!name_is_valid(d->name))
                return -EBADMSG;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->full_name = name_join(package, d->name);
        if (!s->full_name)
                return -ENOMEM;
        if (staging_is_known(st, s->full_name))
                return 0;
        s->name = d->name;
        s->package = package;
        s->methods = calloc(MAX(d->n_method, 1), sizeof(PbMethod));
        if (!s->methods)
                return -ENOMEM;
        for (size_t i = 0; i < d->n_method; i++) {
                const Google__Protobuf__MethodDescriptorProto *md = d->method[i];

                if (!name_is_valid(md->name) || !md->input_type || !md->output_type ||
                    !name_is_dotted(md->input_type + (md->input_type[0] == '.')) ||
                    !name_is_dotted(md->output_type + (md->output_type[0] == '.')) ||
                    !*md->input_type || !*md->output_type)
                        return -EBADMSG;
                s->methods[i] = (PbMethod) {
                        .name = md->name,
                        .input_written = md->input_type,
                        .output_written = md->output_type,
                        .client_streaming = md->has_client_streaming && md->client_streaming,
                        .server_streaming = md->has_server_streaming && md->server_streaming,
                };
        }
        s->n_methods = d->n_method;

        r = pb_grow(&st->services, st->n_services, sizeof(PbService *));
        if (r < 0)
                return r;
        st->services[st->n_services++] = TAKE_PTR(s);
        return 1;
}

static int stage_file(Staging *st, const DescFile *f) {
        const char *package = f->package ?: "";
        bool proto3 = f->syntax && streq(f->syntax, "proto3");
        int r;

        if (!name_is_dotted(package))
                return -EBADMSG;
        for (size_t i = 0; i < f->n_message_type; i++) {
                r = stage_message(st, f->message_type[i], package, package, NULL, proto3, 0);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < f->n_enum_type; i++) {
                r = stage_enum(st, f->enum_type[i], package, package, NULL, proto3);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < f->n_service; i++) {
                r = stage_service(st, f->service[i], package);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* The registry's symbols plus the staged ones, sorted; -EBADMSG if the set
 * defines a name twice. */
static int staging_symbols(const Staging *st, PbSymbol **ret, size_t *ret_n) {
        const PbRegistry *r = st->registry;
        size_t n = r->n_symbols, n_new = st->n_messages + st->n_enums + st->n_services;
        _cleanup_free_ PbSymbol *symbols = calloc(n + n_new + 1, sizeof(PbSymbol));

        if (!symbols)
                return -ENOMEM;
        for (size_t i = 0; i < st->n_messages; i++) {
                PbMessage *m = st->messages[i];

                symbols[n++] = (PbSymbol) { m->full_name, PB_KIND_MESSAGE, m };
        }
        for (size_t i = 0; i < st->n_enums; i++) {
                PbEnum *e = st->enums[i];

                symbols[n++] = (PbSymbol) { e->full_name, PB_KIND_ENUM, e };
        }
        for (size_t i = 0; i < st->n_services; i++) {
                PbService *s = st->services[i];

                symbols[n++] = (PbSymbol) { s->full_name, PB_KIND_SERVICE, s };
        }

        /* Only the new ones can clash: known names were dropped while staging. */
        qsort(symbols + r->n_symbols, n_new, sizeof(PbSymbol), symbol_compare);
        for (size_t i = r->n_symbols + 1; i < n; i++)
                if (streq(symbols[i - 1].name, symbols[i].name))
                        return -EBADMSG;

        if (r->n_symbols > 0)
                memcpy(symbols, r->symbols, r->n_symbols * sizeof(PbSymbol));
        qsort(symbols, n, sizeof(PbSymbol), symbol_compare);
        *ret = TAKE_PTR(symbols);
        *ret_n = n;
        return 0;
}

static bool field_is_map(const PbField *f) {
        const PbMessage *e = f->message;
        const PbField *k, *v;
        _cleanup_free_ char *entry_name = NULL;

        if (!f->repeated || f->type != PB_TYPE_MESSAGE || !e || e->n_fields != 2)
                return false;
        k = pb_message_field(e, 1);
        v = pb_message_field(e, 2);
        if (!k || !v || !streq(k->name, "key") || !streq(v->name, "value") || k->repeated ||
            v->repeated || k->oneof >= 0 || v->oneof >= 0)
                return false;
        if (!pb_type_is_packable(k->type) && k->type != PB_TYPE_STRING)
                return false;
        if (k->type == PB_TYPE_FLOAT || k->type == PB_TYPE_DOUBLE || k->type == PB_TYPE_ENUM)
                return false;
        if (v->type == PB_TYPE_GROUP || (v->type == PB_TYPE_MESSAGE && !v->message) ||
            (v->type == PB_TYPE_ENUM && !v->enumeration))
                return false;
        if (e->map_entry)
                return true;

        /* Sets built from protoc-c's run-time descriptors lose the map_entry
         * option; protoc names the entry after the field, next to it. */
        if (e->parent != f->parent)
                return false;
        entry_name = pb_name_camel_case(f->name, true, "Entry");
        return entry_name && streq(entry_name, e->name);
}

static void field_resolve(const PbRegistry *r, PbField *f) {
        const PbSymbol *s;

        if ((f->type != PB_TYPE_MESSAGE || f->message) &&
            (f->type != PB_TYPE_ENUM || f->enumeration))
                return; /* not a reference, or resolved already */
        s = symbol_resolve(r->symbols, r->n_symbols, f->parent->full_name, f->type_name);
        if (!s)
                return;
        if (f->type == PB_TYPE_MESSAGE && s->kind == PB_KIND_MESSAGE)
                f->message = s->object;
        else if (f->type == PB_TYPE_ENUM && s->kind == PB_KIND_ENUM)
                f->enumeration = s->object;
}

/* Links fields to their types, old ones too: a set may bring what an
 * earlier one referred to. Then marks maps, whose entry may just have
 * resolved its value type. */
static void registry_resolve(PbRegistry *r) {
        for (size_t i = 0; i < r->n_messages; i++)
                for (size_t j = 0; j < r->messages[i]->n_fields; j++)
                        field_resolve(r, &r->messages[i]->fields[j]);

        for (size_t i = 0; i < r->n_messages; i++)
                for (size_t j = 0; j < r->messages[i]->n_fields; j++) {
                        PbField *f = &r->messages[i]->fields[j];

                        if (!f->map)
                                f->map = field_is_map(f);
                        if (f->map)
                                r->messages[f->message->index]->is_map_entry = true;
                }
}

/* A method's types as full names: resolved if we can, else as written. */
static char *method_type(const PbSymbol *symbols, size_t n, const PbService *s,
                         const char *written) {
        const PbSymbol *sym = symbol_resolve(symbols, n, s->package, written);

        if (sym && sym->kind == PB_KIND_MESSAGE)
                return strdup(sym->name);
        return strdup(written + (written[0] == '.'));
}

static int services_resolve(const Staging *st, const PbSymbol *symbols, size_t n) {
        for (size_t i = 0; i < st->n_services; i++)
                for (size_t j = 0; j < st->services[i]->n_methods; j++) {
                        PbService *s = st->services[i];
                        PbMethod *m = &s->methods[j];

                        m->input = method_type(symbols, n, s, m->input_written);
                        m->output = method_type(symbols, n, s, m->output_written);
                        if (!m->input || !m->output)
                                return -ENOMEM;
                }
        return 0;
}

/* Moves what was staged into the registry, which then owns set too. */
static int staging_commit(Staging *st, PbRegistry *r, DescSet *set) {
        PbSymbol *symbols;
        size_t n_symbols;
        int k;

        k = staging_symbols(st, &symbols, &n_symbols);
        if (k < 0)
                return k;
        /* Everything that can fail comes first: the commit itself cannot. */
        k = services_resolve(st, symbols, n_symbols);
        if (k >= 0)
                k = pb_grow(&r->sets, r->n_sets, sizeof(DescSet *));
        if (k >= 0)
                k = reserve(&r->messages, r->n_messages + st->n_messages, sizeof(PbMessage *));
        if (k >= 0)
                k = reserve(&r->enums, r->n_enums + st->n_enums, sizeof(PbEnum *));
        if (k >= 0)
                k = reserve(&r->services, r->n_services + st->n_services, sizeof(PbService *));
        if (k < 0) {
                free(symbols);
                return k;
        }

        free(r->symbols);
        r->symbols = symbols;
        r->n_symbols = n_symbols;
        r->sets[r->n_sets++] = set;
        for (size_t i = 0; i < st->n_messages; i++) {
                st->messages[i]->index = r->n_messages;
                r->messages[r->n_messages++] = st->messages[i];
        }
        for (size_t i = 0; i < st->n_enums; i++) {
                st->enums[i]->index = r->n_enums;
                r->enums[r->n_enums++] = st->enums[i];
        }
        for (size_t i = 0; i < st->n_services; i++) {
                st->services[i]->index = r->n_services;
                r->services[r->n_services++] = st->services[i];
        }
        k = (int) MIN(st->n_messages + st->n_enums + st->n_services, (size_t) INT32_MAX);
        free(st->messages);
        free(st->enums);
        free(st->services);
        *st = (Staging) {};
        return k;
}

/* protobuf-c unpacks recursively, with no bound: a set nesting messages a
 * million deep would overflow our stack inside it. Only DescriptorProto
 * contains itself (nested_type, field 3), so bounding that chain bounds
 * the recursion. child is the field to follow at this level:
 * FileDescriptorProto.message_type (4), then nested_type. */
static int check_nesting(const uint8_t *data, size_t size, uint32_t child, unsigned depth) {
        PbReader rd = pb_reader(data, size);
        PbWireField w;
        int r;

        if (depth > PB_MAX_DEPTH)
                return -EBADMSG;
        while ((r = pb_reader_next(&rd, 0, &w)) > 0)
                if (w.number == child && w.wire_type == PB_WIRE_LEN) {
                        r = check_nesting(w.data, w.size, 3, depth + 1);
                        if (r < 0)
                                return r;
                }
        return r;
}

static int check_set_nesting(const uint8_t *data, size_t size) {
        PbReader rd = pb_reader(data, size);
        PbWireField w;
        int r;

        while ((r = pb_reader_next(&rd, 0, &w)) > 0)
                if (w.number == 1 && w.wire_type == PB_WIRE_LEN) {
                        r = check_nesting(w.data, w.size, 4, 0);
                        if (r < 0)
                                return r;
                }
        return r;
}

int pb_registry_add_set(PbRegistry *r, const uint8_t *data, size_t size) {
        DescSet *set;
        Staging st = { .registry = r };
        int k = 0;

        if (!r || (!data && size > 0))
                return -EINVAL;
        if (check_set_nesting(data, size) < 0)
                return -EBADMSG;
        set = google__protobuf__file_descriptor_set__unpack(NULL, size, data);
        if (!set)
                return -EBADMSG;

        for (size_t i = 0; i < set->n_file && k >= 0; i++)
                k = stage_file(&st, set->file[i]);
        if (k >= 0 && st.n_messages + st.n_enums + st.n_services == 0) {
                /* nothing new points into it: a peer asked again need not cost memory */
                google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
                staging_clear(&st);
                return 0;
        }
        if (k >= 0)
                k = staging_commit(&st, r, set);
        if (k < 0) {
                staging_clear(&st);
                google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
                return k;
        }
        registry_resolve(r);
        return k;
}

static int read_all(FILE *f, uint8_t **ret, size_t *ret_size) {
        _cleanup_free_ uint8_t *data = NULL;
        size_t size = 0, allocated = 0, n;

        do {
                if (size == allocated) {
                        size_t more = allocated > 0 ? 2 * allocated : 65536;
                        uint8_t *p = more > allocated ? realloc(data, more) : NULL;

                        if (!p)
                                return -ENOMEM;
                        data = p;
                        allocated = more;
                }
                n = fread(data + size, 1, allocated - size, f);
                size += n;
        } while (n > 0);
        if (ferror(f))
                return -EIO;
        *ret = TAKE_PTR(data);
        *ret_size = size;
        return 0;
}

int pb_registry_add_file(PbRegistry *r, const char *path) {
        _cleanup_free_ uint8_t *data = NULL;
        size_t size;
        FILE *f;
        int k;

        if (!r || !path)
                return -EINVAL;
        f = fopen(path, "re");
        if (!f)
                return negative_errno();
        k = read_all(f, &data, &size);
        fclose(f);
        if (k < 0)
                return k;
        return pb_registry_add_set(r, data, size);
}

/* ---- lookups for the codecs */

const PbField *pb_message_field(const PbMessage *m, uint32_t number) {
        size_t lo = 0, hi = m->n_fields;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (m->by_number[mid]->number == number)
                        return m->by_number[mid];
                if (m->by_number[mid]->number < number)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

/* Orders len bytes of name as strcmp() orders strings. */
static int name_compare(const char *name, size_t len, const char *s) {
        size_t n = strlen(s);
        int k = memcmp(name, s, MIN(len, n));

        return k != 0 ? k : len < n ? -1 : len > n;
}

static const PbField *field_search(PbField *const *index, size_t n, bool json, const char *name,
                                   size_t len) {
        size_t lo = 0, hi = n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int k = name_compare(name, len, json ? index[mid]->json_name : index[mid]->name);

                if (k == 0)
                        return index[mid];
                if (k > 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

const PbField *pb_message_field_by_name(const PbMessage *m, const char *name, size_t len) {
        return field_search(m->by_json_name, m->n_fields, true, name, len) ?:
               field_search(m->by_name, m->n_fields, false, name, len);
}

const PbField *pb_map_key(const PbField *f) {
        return pb_message_field(f->message, 1);
}

const PbField *pb_map_value(const PbField *f) {
        return pb_message_field(f->message, 2);
}

bool pb_field_prints_default(const PbField *f) {
        return !f->repeated && f->oneof < 0 && !f->proto3_optional && f->type != PB_TYPE_MESSAGE &&
               f->type != PB_TYPE_GROUP;
}

const PbEnumValue *pb_enum_value(const PbEnum *e, int32_t number) {
        size_t lo = 0, hi = e->n_values;

        /* the first of equal numbers: the alias declared first */
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (e->by_number[mid]->number < number)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo < e->n_values && e->by_number[lo]->number == number ? e->by_number[lo] : NULL;
}

const PbEnumValue *pb_enum_value_by_name(const PbEnum *e, const char *name, size_t len) {
        size_t lo = 0, hi = e->n_values;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int k = name_compare(name, len, e->by_name[mid]->name);

                if (k == 0)
                        return e->by_name[mid];
                if (k > 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

int32_t pb_enum_default(const PbEnum *e) {
        return e->proto3 || e->n_values == 0 ? 0 : e->values[0].number;
}

static const char *const pb_type_names[] = {
        [PB_TYPE_DOUBLE] = "double",     [PB_TYPE_FLOAT] = "float",
        [PB_TYPE_INT64] = "int64",       [PB_TYPE_UINT64] = "uint64",
        [PB_TYPE_INT32] = "int32",       [PB_TYPE_FIXED64] = "fixed64",
        [PB_TYPE_FIXED32] = "fixed32",   [PB_TYPE_BOOL] = "bool",
        [PB_TYPE_STRING] = "string",     [PB_TYPE_GROUP] = "group",
        [PB_TYPE_MESSAGE] = "message",   [PB_TYPE_BYTES] = "bytes",
        [PB_TYPE_UINT32] = "uint32",     [PB_TYPE_ENUM] = "enum",
        [PB_TYPE_SFIXED32] = "sfixed32", [PB_TYPE_SFIXED64] = "sfixed64",
        [PB_TYPE_SINT32] = "sint32",     [PB_TYPE_SINT64] = "sint64",
};

const char *pb_type_name(PbType type) {
        return type >= PB_TYPE_DOUBLE && type <= PB_TYPE_MAX ? pb_type_names[type] : "unknown";
}

PbWireType pb_type_wire_type(PbType type) {
        switch (type) {
        case PB_TYPE_DOUBLE:
        case PB_TYPE_FIXED64:
        case PB_TYPE_SFIXED64:
                return PB_WIRE_FIXED64;
        case PB_TYPE_FLOAT:
        case PB_TYPE_FIXED32:
        case PB_TYPE_SFIXED32:
                return PB_WIRE_FIXED32;
        case PB_TYPE_STRING:
        case PB_TYPE_BYTES:
        case PB_TYPE_MESSAGE:
                return PB_WIRE_LEN;
        case PB_TYPE_GROUP:
                return PB_WIRE_SGROUP;
        default:
                return PB_WIRE_VARINT;
        }
}

bool pb_type_is_packable(PbType type) {
        return type >= PB_TYPE_DOUBLE && type <= PB_TYPE_MAX && type != PB_TYPE_STRING &&
               type != PB_TYPE_BYTES && type != PB_TYPE_MESSAGE && type != PB_TYPE_GROUP;
}

/* ---- services */

static const PbMethod *service_method(const PbService *s, const char *name) {
        for (size_t i = 0; i < s->n_methods; i++)
                if (streq(s->methods[i].name, name))
                        return &s->methods[i];
        return NULL;
}

int pb_registry_find_method(const PbRegistry *r, const char *service, const char *method,
                            const char **ret_input, const char **ret_output,
                            const char **ret_service) {
        const PbService *s = NULL;
        const PbMethod *m = NULL;

        if (!r || !method)
                return -EINVAL;
        if (service) {
                s = pb_registry_lookup(r, service, PB_KIND_SERVICE);
                if (!s)
                        return -ENXIO;
                m = service_method(s, method);
        } else
                for (size_t i = 0; i < r->n_services && !m; i++) {
                        s = r->services[i];
                        m = service_method(s, method);
                }
        if (!m)
                return -ENOENT;

        if (ret_input)
                *ret_input = m->input;
        if (ret_output)
                *ret_output = m->output;
        if (ret_service)
                *ret_service = s->full_name;
        return 0;
}
