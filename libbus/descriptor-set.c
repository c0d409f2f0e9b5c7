/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A DescriptorSet is a sorted array of the protoc-c descriptors added to it,
 * keyed by full name (binary search), so adding a type that is there already
 * costs a lookup and nothing else. The descriptors are borrowed: protoc-c
 * generates them as static data that lives as long as the program.
 *
 * Packing builds the google.protobuf tree afresh each time, from malloc'd
 * nodes only, so that protobuf_c_message_free_unpacked() can release it
 * whole, also when building failed halfway: every node is linked into its
 * parent as soon as it exists, and counts only ever cover linked nodes.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "libbus/descriptor-set.h"
#include "libbus/macro.h"

/* The file of types without a package: '-' cannot occur in a package name,
 * so no package's file is called the same. */
#define NO_PACKAGE_FILE "no-package.proto"

typedef enum EntryKind {
        ENTRY_MESSAGE,
        ENTRY_ENUM,
        ENTRY_SERVICE,
} EntryKind;

typedef struct Entry {
        const char *name;    /* full name, borrowed from the descriptor */
        const char *package; /* "" for none */
        EntryKind kind;
        unsigned generation; /* of the add that brought it in */
        const void *desc;
} Entry;

struct DescriptorSet {
        Entry *entries; /* sorted by name */
        size_t n, size;
        unsigned generation;
};

int descriptor_set_new(DescriptorSet **ret) {
        DescriptorSet *set = calloc(1, sizeof(*set));

        if (!set)
                return -ENOMEM;
        *ret = set;
        return 0;
}

DescriptorSet *descriptor_set_free(DescriptorSet *set) {
        if (set) {
                free(set->entries);
                free(set);
        }
        return NULL;
}

size_t descriptor_set_size(const DescriptorSet *set) {
        return set->n;
}

/* Compares a full name given with its length to a NUL-terminated one. */
static int name_cmp(const char *a, size_t alen, const char *b) {
        int r = strncmp(a, b, alen);

        if (r != 0)
                return r;
        return b[alen] == '\0' ? 0 : -1;
}

/* The entry called name, or NULL; *ret_pos gets where it is or would go. */
static const Entry *set_find(const DescriptorSet *set, const char *name, size_t len,
                             size_t *ret_pos) {
        size_t lo = 0, hi = set->n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int r = name_cmp(name, len, set->entries[mid].name);

                if (r == 0) {
                        if (ret_pos)
                                *ret_pos = mid;
                        return &set->entries[mid];
                }
                if (r < 0)
                        hi = mid;
                else
                        lo = mid + 1;
        }
        if (ret_pos)
                *ret_pos = lo;
        return NULL;
}

/* 1 if added, 0 if a type of that name is there already. */
static int set_insert(DescriptorSet *set, EntryKind kind, const char *name, const char *package,
                      const void *desc) {
        size_t pos;

        if (set_find(set, name, strlen(name), &pos))
                return 0;
        if (set->n == set->size) {
                size_t size = set->size ? set->size * 2 : 16;
                Entry *e = reallocarray(set->entries, size, sizeof(*e));

                if (!e)
                        return -ENOMEM;
                set->entries = e;
                set->size = size;
        }
        memmove(set->entries + pos + 1, set->entries + pos, (set->n - pos) * sizeof(Entry));
        set->entries[pos] = (Entry){
                .name = name,
                .package = package ?: "",
                .kind = kind,
                .generation = set->generation,
                .desc = desc,
        };
        set->n++;
        return 1;
}

/* Takes out what a failed add brought in, so that adding it again later
 * does not find it half there and skip what it uses. */
static void set_rollback(DescriptorSet *set) {
        size_t j = 0;

        for (size_t i = 0; i < set->n; i++)
                if (set->entries[i].generation != set->generation)
                        set->entries[j++] = set->entries[i];
        set->n = j;
}

static int add_enum(DescriptorSet *set, const ProtobufCEnumDescriptor *desc) {
        if (!desc || desc->magic != PROTOBUF_C__ENUM_DESCRIPTOR_MAGIC || !desc->name)
                return -EINVAL;
        return set_insert(set, ENTRY_ENUM, desc->name, desc->package_name, desc);
}

static int add_message(DescriptorSet *set, const ProtobufCMessageDescriptor *desc) {
        int r;

        if (!desc || desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC || !desc->name)
                return -EINVAL;
        r = set_insert(set, ENTRY_MESSAGE, desc->name, desc->package_name, desc);
        if (r <= 0)
                return r;
        /* Inserted before recursing: a type that uses itself ends here. */
        for (unsigned i = 0; i < desc->n_fields; i++) {
                const ProtobufCFieldDescriptor *f = &desc->fields[i];

                if (f->type == PROTOBUF_C_TYPE_MESSAGE)
                        r = add_message(set, f->descriptor);
                else if (f->type == PROTOBUF_C_TYPE_ENUM)
                        r = add_enum(set, f->descriptor);
                else
                        continue;
                if (r < 0)
                        return r;
        }
        return 1;
}

static int add_service(DescriptorSet *set, const ProtobufCServiceDescriptor *desc) {
        int r;

        if (!desc || desc->magic != PROTOBUF_C__SERVICE_DESCRIPTOR_MAGIC || !desc->name)
                return -EINVAL;
        r = set_insert(set, ENTRY_SERVICE, desc->name, desc->package, desc);
        if (r <= 0)
                return r;
        for (unsigned i = 0; i < desc->n_methods; i++) {
                r = add_message(set, desc->methods[i].input);
                if (r >= 0)
                        r = add_message(set, desc->methods[i].output);
                if (r < 0)
                        return r;
        }
        return 1;
}

/* Ends one public add: all of it or, on failure, nothing. n is the size
 * before it. */
static int set_finish(DescriptorSet *set, size_t n, int r) {
        if (r < 0) {
                set_rollback(set);
                return r;
        }
        return set->n > n;
}

int descriptor_set_add_service(DescriptorSet *set, const ProtobufCServiceDescriptor *desc) {
        size_t n = set->n;

        set->generation++;
        return set_finish(set, n, add_service(set, desc));
}

int descriptor_set_add_message(DescriptorSet *set, const ProtobufCMessageDescriptor *desc) {
        size_t n = set->n;

        set->generation++;
        return set_finish(set, n, add_message(set, desc));
}

int descriptor_set_add_enum(DescriptorSet *set, const ProtobufCEnumDescriptor *desc) {
        size_t n = set->n;

        set->generation++;
        return set_finish(set, n, add_enum(set, desc));
}

/* ---- Building the google.protobuf tree. */

/* Appends item to a protobuf-c repeated field (its array and count).
 * 0, or -ENOMEM with the field unchanged. */
#define PUSH(array, n, item)                                                    \
        ({                                                                      \
                __typeof__(array) _a_ = reallocarray((array), (n) + 1, sizeof(*_a_)); \
                if (_a_) {                                                      \
                        _a_[(n)++] = (item);                                    \
                        (array) = _a_;                                          \
                }                                                               \
                _a_ ? 0 : -ENOMEM;                                              \
        })

/* A node of the tree, zeroed and initialized by its protoc-c init. */
#define NEW_NODE(type, init)                            \
        ({                                              \
                type *_n_ = malloc(sizeof(type));       \
                if (_n_)                                \
                        init(_n_);                      \
                _n_;                                    \
        })

static void tree_freep(void *p) {
        ProtobufCMessage *m = *(ProtobufCMessage **) p;

        if (m)
                protobuf_c_message_free_unpacked(m, NULL);
}

/* ".full.Name", as protoc writes resolved type names. */
static char *type_name(const char *full_name) {
        size_t len = strlen(full_name);
        char *s = malloc(len + 2);

        if (!s)
                return NULL;
        s[0] = '.';
        memcpy(s + 1, full_name, len + 1);
        return s;
}

static char *package_file_name(const char *package) {
        size_t len = strlen(package);
        char *s;

        if (len == 0)
                return strdup(NO_PACKAGE_FILE);
        s = malloc(len + sizeof(".proto"));
        if (!s)
                return NULL;
        for (size_t i = 0; i < len; i++)
                s[i] = package[i] == '.' ? '/' : package[i];
        memcpy(s + len, ".proto", sizeof(".proto"));
        return s;
}

typedef struct FileBuilder {
        const DescriptorSet *set;
        const char *package;
        size_t package_len;
        Google__Protobuf__FileDescriptorProto *file;
        bool proto3;
} FileBuilder;

/* The name of a type inside its package ("Outer.Inner"). */
static const char *relative_name(const FileBuilder *fb, const char *full_name) {
        if (fb->package_len > 0 && strncmp(full_name, fb->package, fb->package_len) == 0 &&
            full_name[fb->package_len] == '.')
                return full_name + fb->package_len + 1;
        return full_name;
}

/* Lists a type's file among the file's imports when it is another one. */
static int file_add_dependency(FileBuilder *fb, const char *package) {
        Google__Protobuf__FileDescriptorProto *file = fb->file;
        _cleanup_free_ char *name = NULL;
        int r;

        if (strcmp(package ?: "", fb->package) == 0)
                return 0;
        name = package_file_name(package ?: "");
        if (!name)
                return -ENOMEM;
        for (size_t i = 0; i < file->n_dependency; i++)
                if (strcmp(file->dependency[i], name) == 0)
                        return 0;
        r = PUSH(file->dependency, file->n_dependency, name);
        if (r < 0)
                return r;
        TAKE_PTR(name);
        return 0;
}

/* The message node at a relative name, made empty if it is not there yet:
 * a nested type whose parent is not in the set still needs the parent to
 * live in. */
static int message_node(FileBuilder *fb, const char *rel, size_t len,
                        Google__Protobuf__DescriptorProto **ret) {
        const char *dot = memrchr(rel, '.', len);
        const char *short_name = dot ? dot + 1 : rel;
        size_t short_len = len - (size_t) (short_name - rel);
        Google__Protobuf__DescriptorProto ***list, *node;
        size_t *n;
        int r;

        if (dot) {
                Google__Protobuf__DescriptorProto *parent;

                r = message_node(fb, rel, (size_t) (dot - rel), &parent);
                if (r < 0)
                        return r;
                list = &parent->nested_type;
                n = &parent->n_nested_type;
        } else {
                list = &fb->file->message_type;
                n = &fb->file->n_message_type;
        }
        for (size_t i = 0; i < *n; i++)
                if (name_cmp(short_name, short_len, (*list)[i]->name) == 0) {
                        *ret = (*list)[i];
                        return 0;
                }
        node = NEW_NODE(Google__Protobuf__DescriptorProto,
                        google__protobuf__descriptor_proto__init);
        if (!node)
                return -ENOMEM;
        r = PUSH(*list, *n, node);
        if (r < 0) {
                free(node);
                return r;
        }
        node->name = strndup(short_name, short_len);
        if (!node->name)
                return -ENOMEM;
        *ret = node;
        return 0;
}

static Google__Protobuf__FieldDescriptorProto__Label field_label(ProtobufCLabel label) {
        switch (label) {
        case PROTOBUF_C_LABEL_REQUIRED:
                return GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REQUIRED;
        case PROTOBUF_C_LABEL_REPEATED:
                return GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED;
        default:
                /* proto3's singular fields (LABEL_NONE) are LABEL_OPTIONAL
                 * in descriptor.proto; the file's syntax tells them apart. */
                return GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_OPTIONAL;
        }
}

#define TYPE(t) GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_##t

static Google__Protobuf__FieldDescriptorProto__Type field_type(ProtobufCType type) {
        static const Google__Protobuf__FieldDescriptorProto__Type types[] = {
                [PROTOBUF_C_TYPE_INT32] = TYPE(INT32),
                [PROTOBUF_C_TYPE_SINT32] = TYPE(SINT32),
                [PROTOBUF_C_TYPE_SFIXED32] = TYPE(SFIXED32),
                [PROTOBUF_C_TYPE_INT64] = TYPE(INT64),
                [PROTOBUF_C_TYPE_SINT64] = TYPE(SINT64),
                [PROTOBUF_C_TYPE_SFIXED64] = TYPE(SFIXED64),
                [PROTOBUF_C_TYPE_UINT32] = TYPE(UINT32),
                [PROTOBUF_C_TYPE_FIXED32] = TYPE(FIXED32),
                [PROTOBUF_C_TYPE_UINT64] = TYPE(UINT64),
                [PROTOBUF_C_TYPE_FIXED64] = TYPE(FIXED64),
                [PROTOBUF_C_TYPE_FLOAT] = TYPE(FLOAT),
                [PROTOBUF_C_TYPE_DOUBLE] = TYPE(DOUBLE),
                [PROTOBUF_C_TYPE_BOOL] = TYPE(BOOL),
                [PROTOBUF_C_TYPE_ENUM] = TYPE(ENUM),
                [PROTOBUF_C_TYPE_STRING] = TYPE(STRING),
                [PROTOBUF_C_TYPE_BYTES] = TYPE(BYTES),
                [PROTOBUF_C_TYPE_MESSAGE] = TYPE(MESSAGE),
        };

        /* protoc-c has no groups, and no other types. */
        if ((unsigned) type >= ELEMENTSOF(types) || types[type] == 0)
                return TYPE(MESSAGE);
        return types[type];
}

#undef TYPE

/* Whether a field's name gives name under protoc's rule for map entries:
 * "by_method" -> "ByMethodEntry" (underscores dropped, the letter after
 * each and the first one upper-cased). */
static bool is_map_entry_name(const char *field, const char *name) {
        bool upper = true;

        for (; *field; field++) {
                char c = *field;

                if (c == '_') {
                        upper = true;
                        continue;
                }
                if (upper && c >= 'a' && c <= 'z')
                        c = (char) (c - 'a' + 'A');
                upper = false;
                if (*name++ != c)
                        return false;
        }
        return strcmp(name, "Entry") == 0;
}

/* protoc compiles map<K, V> name into a nested message "NameEntry" of the
 * fields key = 1 and value = 2, used by a repeated field of its parent;
 * protoc-c keeps no mark of it, so recognize the shape. */
static bool is_map_entry(const DescriptorSet *set, const ProtobufCMessageDescriptor *desc) {
        const char *dot = strrchr(desc->name, '.');
        const ProtobufCMessageDescriptor *parent;
        const Entry *e;

        if (!desc->short_name || desc->n_fields != 2 || desc->fields[0].id != 1 ||
            strcmp(desc->fields[0].name, "key") != 0 || desc->fields[1].id != 2 ||
            strcmp(desc->fields[1].name, "value") != 0 || !dot)
                return false;
        e = set_find(set, desc->name, (size_t) (dot - desc->name), NULL);
        if (!e || e->kind != ENTRY_MESSAGE)
                return false;
        parent = e->desc;
        for (unsigned i = 0; i < parent->n_fields; i++) {
                const ProtobufCFieldDescriptor *f = &parent->fields[i];

                if (f->label == PROTOBUF_C_LABEL_REPEATED && f->type == PROTOBUF_C_TYPE_MESSAGE &&
                    f->descriptor &&
                    strcmp(((const ProtobufCMessageDescriptor *) f->descriptor)->name,
                           desc->name) == 0 &&
                    is_map_entry_name(f->name, desc->short_name))
                        return true;
        }
        return false;
}

/* The oneofs of the message being built: protoc-c keeps no oneof names,
 * but the members of one share the offset of its case member. */
typedef struct Oneofs {
        unsigned *offsets; /* case member offset of oneof_decl[i] */
        size_t n;
} Oneofs;

/* The index of the oneof a field belongs to, declared on first use and
 * named after that first member. */
static int field_oneof(Google__Protobuf__DescriptorProto *node, Oneofs *oneofs,
                       const ProtobufCFieldDescriptor *f) {
        Google__Protobuf__OneofDescriptorProto *oneof;
        int r;

        for (size_t i = 0; i < oneofs->n; i++)
                if (oneofs->offsets[i] == f->quantifier_offset)
                        return (int) i;
        oneof = NEW_NODE(Google__Protobuf__OneofDescriptorProto,
                         google__protobuf__oneof_descriptor_proto__init);
        if (!oneof)
                return -ENOMEM;
        r = PUSH(node->oneof_decl, node->n_oneof_decl, oneof);
        if (r < 0) {
                free(oneof);
                return r;
        }
        if (asprintf(&oneof->name, "_oneof_%s", f->name) < 0) {
                oneof->name = NULL;
                return -ENOMEM;
        }
        /* Room for every field was made up front. */
        oneofs->offsets[oneofs->n] = f->quantifier_offset;
        return (int) oneofs->n++;
}

static int build_field(FileBuilder *fb, Google__Protobuf__DescriptorProto *node, Oneofs *oneofs,
                       const ProtobufCFieldDescriptor *f) {
        Google__Protobuf__FieldDescriptorProto *field;
        const char *type = NULL, *package = NULL;
        int r;

        field = NEW_NODE(Google__Protobuf__FieldDescriptorProto,
                         google__protobuf__field_descriptor_proto__init);
        if (!field)
                return -ENOMEM;
        r = PUSH(node->field, node->n_field, field);
        if (r < 0) {
                free(field);
                return r;
        }
        field->name = strdup(f->name);
        if (!field->name)
                return -ENOMEM;
        field->has_number = true;
        field->number = (int32_t) f->id;
        field->has_label = true;
        field->label = field_label(f->label);
        field->has_type = true;
        field->type = field_type(f->type);
        if (f->label == PROTOBUF_C_LABEL_NONE)
                fb->proto3 = true;

        if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
                const ProtobufCMessageDescriptor *m = f->descriptor;

                type = m->name;
                package = m->package_name;
        } else if (f->type == PROTOBUF_C_TYPE_ENUM) {
                const ProtobufCEnumDescriptor *e = f->descriptor;

                type = e->name;
                package = e->package_name;
        }
        if (type) {
                field->type_name = type_name(type);
                if (!field->type_name)
                        return -ENOMEM;
                r = file_add_dependency(fb, package);
                if (r < 0)
                        return r;
        }

        if (f->flags & PROTOBUF_C_FIELD_FLAG_PACKED) {
                field->options = NEW_NODE(Google__Protobuf__FieldOptions,
                                          google__protobuf__field_options__init);
                if (!field->options)
                        return -ENOMEM;
                field->options->has_packed = true;
                field->options->packed = true;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
                r = field_oneof(node, oneofs, f);
                if (r < 0)
                        return r;
                field->has_oneof_index = true;
                field->oneof_index = r;
        }
        return 0;
}

static int build_message(FileBuilder *fb, const ProtobufCMessageDescriptor *desc) {
        const char *rel = relative_name(fb, desc->name);
        _cleanup_free_ unsigned *offsets = NULL;
        Google__Protobuf__DescriptorProto *node;
        Oneofs oneofs = {};
        int r;

        r = message_node(fb, rel, strlen(rel), &node);
        if (r < 0)
                return r;
        if (desc->n_fields > 0) {
                offsets = reallocarray(NULL, desc->n_fields, sizeof(*offsets));
                if (!offsets)
                        return -ENOMEM;
        }
        oneofs.offsets = offsets;
        for (unsigned i = 0; i < desc->n_fields; i++) {
                r = build_field(fb, node, &oneofs, &desc->fields[i]);
                if (r < 0)
                        return r;
        }
        if (is_map_entry(fb->set, desc)) {
                node->options = NEW_NODE(Google__Protobuf__MessageOptions,
                                         google__protobuf__message_options__init);
                if (!node->options)
                        return -ENOMEM;
                node->options->has_map_entry = true;
                node->options->map_entry = true;
        }
        return 0;
}

static int build_enum(FileBuilder *fb, const ProtobufCEnumDescriptor *desc) {
        const char *rel = relative_name(fb, desc->name), *dot = strrchr(rel, '.');
        Google__Protobuf__EnumDescriptorProto *node;
        int r;

        node = NEW_NODE(Google__Protobuf__EnumDescriptorProto,
                        google__protobuf__enum_descriptor_proto__init);
        if (!node)
                return -ENOMEM;
        if (dot) {
                Google__Protobuf__DescriptorProto *parent;

                r = message_node(fb, rel, (size_t) (dot - rel), &parent);
                if (r >= 0)
                        r = PUSH(parent->enum_type, parent->n_enum_type, node);
        } else
                r = PUSH(fb->file->enum_type, fb->file->n_enum_type, node);
        if (r < 0) {
                free(node);
                return r;
        }
        node->name = strdup(dot ? dot + 1 : rel);
        if (!node->name)
                return -ENOMEM;
        for (unsigned i = 0; i < desc->n_values; i++) {
                Google__Protobuf__EnumValueDescriptorProto *value;

                value = NEW_NODE(Google__Protobuf__EnumValueDescriptorProto,
                                 google__protobuf__enum_value_descriptor_proto__init);
                if (!value)
                        return -ENOMEM;
                r = PUSH(node->value, node->n_value, value);
                if (r < 0) {
                        free(value);
                        return r;
                }
                value->name = strdup(desc->values[i].name);
                if (!value->name)
                        return -ENOMEM;
                value->has_number = true;
                value->number = desc->values[i].value;
        }
        return 0;
}

static int build_method(FileBuilder *fb, Google__Protobuf__ServiceDescriptorProto *node,
                        const ProtobufCMethodDescriptor *m) {
        Google__Protobuf__MethodDescriptorProto *method;
        int r;

        method = NEW_NODE(Google__Protobuf__MethodDescriptorProto,
                          google__protobuf__method_descriptor_proto__init);
        if (!method)
                return -ENOMEM;
        r = PUSH(node->method, node->n_method, method);
        if (r < 0) {
                free(method);
                return r;
        }
        method->name = strdup(m->name);
        method->input_type = type_name(m->input->name);
        method->output_type = type_name(m->output->name);
        if (!method->name || !method->input_type || !method->output_type)
                return -ENOMEM;
        r = file_add_dependency(fb, m->input->package_name);
        if (r >= 0)
                r = file_add_dependency(fb, m->output->package_name);
        return r;
}

static int build_service(FileBuilder *fb, const ProtobufCServiceDescriptor *desc) {
        Google__Protobuf__ServiceDescriptorProto *node;
        int r;

        node = NEW_NODE(Google__Protobuf__ServiceDescriptorProto,
                        google__protobuf__service_descriptor_proto__init);
        if (!node)
                return -ENOMEM;
        r = PUSH(fb->file->service, fb->file->n_service, node);
        if (r < 0) {
                free(node);
                return r;
        }
        node->name = strdup(desc->short_name);
        if (!node->name)
                return -ENOMEM;
        for (unsigned i = 0; i < desc->n_methods; i++) {
                r = build_method(fb, node, &desc->methods[i]);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int cmp_string_ptr(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* One file of the set: the entries of one package, n of them from first. */
static int build_file(const DescriptorSet *set, const Entry *const *entries, size_t n,
                      Google__Protobuf__FileDescriptorProto *file) {
        FileBuilder fb = {
                .set = set,
                .package = entries[0]->package,
                .package_len = strlen(entries[0]->package),
                .file = file,
        };
        int r = 0;

        file->name = package_file_name(fb.package);
        if (!file->name)
                return -ENOMEM;
        if (fb.package_len > 0) {
                file->package = strdup(fb.package);
                if (!file->package)
                        return -ENOMEM;
        }
        /* By full name, so a parent comes before what it holds. */
        for (size_t i = 0; i < n && r >= 0; i++)
                switch (entries[i]->kind) {
                case ENTRY_MESSAGE:
                        r = build_message(&fb, entries[i]->desc);
                        break;
                case ENTRY_ENUM:
                        r = build_enum(&fb, entries[i]->desc);
                        break;
                case ENTRY_SERVICE:
                        r = build_service(&fb, entries[i]->desc);
                        break;
                }
        if (r < 0)
                return r;
        if (file->n_dependency > 1)
                qsort(file->dependency, file->n_dependency, sizeof(char *), cmp_string_ptr);
        file->syntax = strdup(fb.proto3 ? "proto3" : "proto2");
        return file->syntax ? 0 : -ENOMEM;
}

static int cmp_entry_ptr(const void *a, const void *b) {
        const Entry *x = *(const Entry *const *) a, *y = *(const Entry *const *) b;
        int r = strcmp(x->package, y->package);

        return r != 0 ? r : strcmp(x->name, y->name);
}

int descriptor_set_pack(const DescriptorSet *set, uint8_t **ret, size_t *ret_size) {
        _cleanup_(tree_freep) Google__Protobuf__FileDescriptorSet *tree = NULL;
        _cleanup_free_ const Entry **order = NULL;
        uint8_t *buf;
        size_t size;
        int r;

        tree = NEW_NODE(Google__Protobuf__FileDescriptorSet,
                        google__protobuf__file_descriptor_set__init);
        if (!tree)
                return -ENOMEM;
        if (set->n > 0) {
                order = reallocarray(NULL, set->n, sizeof(*order));
                if (!order)
                        return -ENOMEM;
                for (size_t i = 0; i < set->n; i++)
                        order[i] = &set->entries[i];
                qsort(order, set->n, sizeof(*order), cmp_entry_ptr);
        }
        for (size_t i = 0, j; i < set->n; i = j) {
                Google__Protobuf__FileDescriptorProto *file;

                for (j = i + 1; j < set->n && strcmp(order[j]->package, order[i]->package) == 0;
                     j++)
                        ;
                file = NEW_NODE(Google__Protobuf__FileDescriptorProto,
                                google__protobuf__file_descriptor_proto__init);
                if (!file)
                        return -ENOMEM;
                r = PUSH(tree->file, tree->n_file, file);
                if (r < 0) {
                        free(file);
                        return r;
                }
                r = build_file(set, order + i, j - i, file);
                if (r < 0)
                        return r;
        }
        size = google__protobuf__file_descriptor_set__get_packed_size(tree);
        buf = malloc(size ?: 1);
        if (!buf)
                return -ENOMEM;
        (void) google__protobuf__file_descriptor_set__pack(tree, buf);
        *ret = buf;
        *ret_size = size;
        return 0;
}
