/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of libbus/descriptor-set.c: the FileDescriptorSet built from
 * protoc-c's descriptors of tests/tools/calc.proto is compared, field by
 * field, with the one protoc itself wrote for that file (calc.desc, made by
 * the Makefile); then what protoc-c's descriptors cannot be checked against
 * protoc for: types of several packages, oneofs and packed fields (from
 * descriptors written out here by hand), parents that are not in the set,
 * adding twice, bad descriptors, and a stable order.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <protobuf-c/protobuf-c.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "libbus/descriptor-set.h"
#include "libbus/macro.h"
#include "proto/bus.pb-c.h"
#include "tests/lib/tap.h"
#include "tests/tools/calc.pb-c.h"

typedef Google__Protobuf__FileDescriptorSet FileSet;
typedef Google__Protobuf__FileDescriptorProto File;
typedef Google__Protobuf__DescriptorProto Message;
typedef Google__Protobuf__FieldDescriptorProto Field;
typedef Google__Protobuf__EnumDescriptorProto Enum;

static bool str_eq(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return strcmp(a, b) == 0;
}

/* Packs set and unpacks it again, as a reader of the bytes would. */
static FileSet *pack_and_read(DescriptorSet *set) {
        uint8_t *buf = NULL;
        size_t size = 0;
        FileSet *fs;
        int r;

        r = descriptor_set_pack(set, &buf, &size);
        if (!tap_check_int(r, 0))
                return NULL;
        fs = google__protobuf__file_descriptor_set__unpack(NULL, size, buf);
        tap_check(fs);
        free(buf);
        return fs;
}

/* What protoc wrote for tests/tools/calc.proto. */
static FileSet *read_protoc_set(void) {
        const char *dir = getenv("BUSD_BUILDDIR");
        char path[4096];
        uint8_t *buf = NULL;
        size_t size = 0, cap = 0;
        FileSet *fs = NULL;
        int fd;

        snprintf(path, sizeof(path), "%s/tests/tools/calc.desc", dir ?: ".");
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (!tap_check(fd >= 0)) {
                tap_diag("cannot open %s: %m", path);
                return NULL;
        }
        for (;;) {
                ssize_t n;

                if (size == cap) {
                        cap = cap ? cap * 2 : 4096;
                        buf = realloc(buf, cap);
                        assert(buf);
                }
                n = read(fd, buf + size, cap - size);
                if (n <= 0)
                        break;
                size += (size_t) n;
        }
        close(fd);
        fs = google__protobuf__file_descriptor_set__unpack(NULL, size, buf);
        tap_check(fs);
        free(buf);
        return fs;
}

static const File *file_of_package(const FileSet *fs, const char *package) {
        for (size_t i = 0; fs && i < fs->n_file; i++)
                if (str_eq(fs->file[i]->package, package))
                        return fs->file[i];
        return NULL;
}

static const File *file_named(const FileSet *fs, const char *name) {
        for (size_t i = 0; fs && i < fs->n_file; i++)
                if (str_eq(fs->file[i]->name, name))
                        return fs->file[i];
        return NULL;
}

static const Message *message_in(Message *const *list, size_t n, const char *name) {
        for (size_t i = 0; i < n; i++)
                if (str_eq(list[i]->name, name))
                        return list[i];
        return NULL;
}

static const Field *field_in(const Message *m, const char *name) {
        for (size_t i = 0; i < m->n_field; i++)
                if (str_eq(m->field[i]->name, name))
                        return m->field[i];
        return NULL;
}

static const Enum *enum_in(Enum *const *list, size_t n, const char *name) {
        for (size_t i = 0; i < n; i++)
                if (str_eq(list[i]->name, name))
                        return list[i];
        return NULL;
}

static bool is_map_entry(const Message *m) {
        return m->options && m->options->has_map_entry && m->options->map_entry;
}

static void compare_enum(const Enum *ours, const Enum *theirs) {
        if (!tap_check_int(ours->n_value, theirs->n_value))
                tap_diag("enum %s", theirs->name);
        for (size_t i = 0; i < theirs->n_value; i++) {
                const Google__Protobuf__EnumValueDescriptorProto *v = theirs->value[i], *w = NULL;

                for (size_t j = 0; j < ours->n_value; j++)
                        if (str_eq(ours->value[j]->name, v->name))
                                w = ours->value[j];
                if (!tap_check(w)) {
                        tap_diag("enum value %s missing", v->name);
                        continue;
                }
                tap_check(w->has_number);
                tap_check_int(w->number, v->number);
        }
}

static void compare_enums(Enum *const *ours, size_t n_ours, Enum *const *theirs, size_t n_theirs) {
        tap_check_int(n_ours, n_theirs);
        for (size_t i = 0; i < n_theirs; i++) {
                const Enum *e = enum_in(ours, n_ours, theirs[i]->name);

                if (!tap_check(e)) {
                        tap_diag("enum %s missing", theirs[i]->name);
                        continue;
                }
                compare_enum(e, theirs[i]);
        }
}

static void compare_field(const Field *ours, const Field *theirs) {
        bool ok = true;

        ok &= tap_check(ours->has_number && ours->has_label && ours->has_type);
        ok &= tap_check_int(ours->number, theirs->number);
        ok &= tap_check_int(ours->label, theirs->label);
        ok &= tap_check_int(ours->type, theirs->type);
        ok &= tap_check(str_eq(ours->type_name, theirs->type_name));
        ok &= tap_check_int(ours->has_oneof_index, theirs->has_oneof_index);
        if (!ok)
                tap_diag("field %s (type name %s, protoc's %s)", theirs->name,
                         ours->type_name ?: "none", theirs->type_name ?: "none");
}

static void compare_messages(Message *const *ours, size_t n_ours, Message *const *theirs,
                             size_t n_theirs);

static void compare_message(const Message *ours, const Message *theirs) {
        if (!tap_check_int(ours->n_field, theirs->n_field))
                tap_diag("message %s", theirs->name);
        for (size_t i = 0; i < theirs->n_field; i++) {
                const Field *f = field_in(ours, theirs->field[i]->name);

                if (!tap_check(f)) {
                        tap_diag("field %s.%s missing", theirs->name, theirs->field[i]->name);
                        continue;
                }
                compare_field(f, theirs->field[i]);
        }
        if (!tap_check_int(is_map_entry(ours), is_map_entry(theirs)))
                tap_diag("map entry mark of %s", theirs->name);
        tap_check_int(ours->n_oneof_decl, theirs->n_oneof_decl);
        compare_messages(ours->nested_type, ours->n_nested_type, theirs->nested_type,
                         theirs->n_nested_type);
        compare_enums(ours->enum_type, ours->n_enum_type, theirs->enum_type, theirs->n_enum_type);
}

static void compare_messages(Message *const *ours, size_t n_ours, Message *const *theirs,
                             size_t n_theirs) {
        tap_check_int(n_ours, n_theirs);
        for (size_t i = 0; i < n_theirs; i++) {
                const Message *m = message_in(ours, n_ours, theirs[i]->name);

                if (!tap_check(m)) {
                        tap_diag("message %s missing", theirs[i]->name);
                        continue;
                }
                compare_message(m, theirs[i]);
        }
}

static void compare_services(const File *ours, const File *theirs) {
        tap_check_int(ours->n_service, theirs->n_service);
        for (size_t i = 0; i < theirs->n_service && i < ours->n_service; i++) {
                const Google__Protobuf__ServiceDescriptorProto *s = ours->service[i],
                                                                *t = theirs->service[i];

                tap_check(str_eq(s->name, t->name));
                if (!tap_check_int(s->n_method, t->n_method))
                        continue;
                for (size_t j = 0; j < t->n_method; j++) {
                        tap_check(str_eq(s->method[j]->name, t->method[j]->name));
                        tap_check(str_eq(s->method[j]->input_type, t->method[j]->input_type));
                        tap_check(str_eq(s->method[j]->output_type, t->method[j]->output_type));
                }
        }
}

static void test_calc_matches_protoc(void) {
        DescriptorSet *set = NULL;
        FileSet *ours = NULL, *theirs = NULL;
        const File *a, *b;

        tap_check_int(descriptor_set_new(&set), 0);
        tap_check_int(descriptor_set_add_service(set, &example__calc__descriptor), 1);
        ours = pack_and_read(set);
        theirs = read_protoc_set();
        if (!ours || !theirs)
                goto finish;
        tap_check_int(ours->n_file, 1);
        a = file_of_package(ours, "example");
        b = file_of_package(theirs, "example");
        if (!tap_check(a && b))
                goto finish;
        tap_check(str_eq(a->name, "example.proto"));
        tap_check(str_eq(a->syntax, "proto3"));
        tap_check(str_eq(a->syntax, b->syntax));
        tap_check_int(a->n_dependency, 0);
        compare_messages(a->message_type, a->n_message_type, b->message_type, b->n_message_type);
        compare_enums(a->enum_type, a->n_enum_type, b->enum_type, b->n_enum_type);
        compare_services(a, b);
        /* Spot checks, in case both sides lost something alike. */
        tap_check(message_in(a->message_type, a->n_message_type, "AddRequest"));
        tap_check(enum_in(a->enum_type, a->n_enum_type, "Unit"));
finish:
        if (ours)
                google__protobuf__file_descriptor_set__free_unpacked(ours, NULL);
        if (theirs)
                google__protobuf__file_descriptor_set__free_unpacked(theirs, NULL);
        descriptor_set_free(set);
}

static void test_map_entry(void) {
        DescriptorSet *set = NULL;
        FileSet *fs;
        const File *f;
        const Message *stats, *entry;
        const Field *by_method;

        tap_check_int(descriptor_set_new(&set), 0);
        tap_check_int(descriptor_set_add_message(set, &example__stats_reply__descriptor), 1);
        fs = pack_and_read(set);
        f = file_of_package(fs, "example");
        stats = f ? message_in(f->message_type, f->n_message_type, "StatsReply") : NULL;
        entry = stats ? message_in(stats->nested_type, stats->n_nested_type, "ByMethodEntry")
                      : NULL;
        if (tap_check(entry)) {
                tap_check(is_map_entry(entry));
                tap_check_int(entry->n_field, 2);
        }
        by_method = stats ? field_in(stats, "by_method") : NULL;
        if (tap_check(by_method)) {
                tap_check_int(by_method->label,
                              GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED);
                tap_check(str_eq(by_method->type_name, ".example.StatsReply.ByMethodEntry"));
        }
        /* Nested, so not at the top as well. */
        if (f)
                tap_check(!message_in(f->message_type, f->n_message_type, "ByMethodEntry"));
        /* Other messages are not map entries. */
        if (stats)
                tap_check(!is_map_entry(stats));
        if (fs)
                google__protobuf__file_descriptor_set__free_unpacked(fs, NULL);
        descriptor_set_free(set);
}

static void test_nested_without_parent(void) {
        const ProtobufCMessageDescriptor *entry_desc =
                &example__stats_reply__by_method_entry__descriptor;
        DescriptorSet *set = NULL;
        FileSet *fs;
        const File *f;
        const Message *stats, *entry;

        tap_check_int(descriptor_set_new(&set), 0);
        tap_check_int(descriptor_set_add_message(set, entry_desc), 1);
        tap_check_int(descriptor_set_size(set), 1);
        fs = pack_and_read(set);
        f = file_of_package(fs, "example");
        if (tap_check(f))
                tap_check_int(f->n_message_type, 1);
        stats = f ? message_in(f->message_type, f->n_message_type, "StatsReply") : NULL;
        /* The parent is made up, empty, to hold it. */
        if (tap_check(stats)) {
                tap_check_int(stats->n_field, 0);
                tap_check_int(stats->n_nested_type, 1);
        }
        entry = stats ? message_in(stats->nested_type, stats->n_nested_type, "ByMethodEntry")
                      : NULL;
        if (tap_check(entry)) {
                tap_check_int(entry->n_field, 2);
                /* No field of a parent uses it: no map. */
                tap_check(!is_map_entry(entry));
        }
        if (fs)
                google__protobuf__file_descriptor_set__free_unpacked(fs, NULL);
        descriptor_set_free(set);
}

static void test_add_twice(void) {
        DescriptorSet *set = NULL;
        uint8_t *a = NULL, *b = NULL;
        size_t a_size = 0, b_size = 0;

        tap_check_int(descriptor_set_new(&set), 0);
        tap_check_int(descriptor_set_size(set), 0);
        tap_check_int(descriptor_set_add_service(set, &example__calc__descriptor), 1);
        /* The service, its 8 messages and the enum Reading uses. */
        tap_check_int(descriptor_set_size(set), 10);
        tap_check_int(descriptor_set_pack(set, &a, &a_size), 0);
        tap_check_int(descriptor_set_add_service(set, &example__calc__descriptor), 0);
        tap_check_int(descriptor_set_add_message(set, &example__reading__descriptor), 0);
        tap_check_int(descriptor_set_add_enum(set, &example__unit__descriptor), 0);
        tap_check_int(descriptor_set_size(set), 10);
        tap_check_int(descriptor_set_pack(set, &b, &b_size), 0);
        tap_check(a && b && a_size == b_size && memcmp(a, b, a_size) == 0);
        free(a);
        free(b);
        descriptor_set_free(set);
}

static void test_bad_magic(void) {
        static const ProtobufCMessageDescriptor bad_message = { .name = "bad.Message" };
        static const ProtobufCEnumDescriptor bad_enum = { .name = "bad.Enum" };
        static const ProtobufCServiceDescriptor bad_service = { .name = "bad.Service" };
        /* A good message whose field names a bad one: nothing of it stays. */
        static const ProtobufCFieldDescriptor fields[] = {
                { .name = "reading", .id = 1, .label = PROTOBUF_C_LABEL_OPTIONAL,
                  .type = PROTOBUF_C_TYPE_MESSAGE, .descriptor = &example__reading__descriptor },
                { .name = "bad", .id = 2, .label = PROTOBUF_C_LABEL_OPTIONAL,
                  .type = PROTOBUF_C_TYPE_MESSAGE, .descriptor = &bad_message },
        };
        static const ProtobufCMessageDescriptor uses_bad = {
                .magic = PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
                .name = "bad.UsesBad",
                .short_name = "UsesBad",
                .package_name = "bad",
                .n_fields = ELEMENTSOF(fields),
                .fields = fields,
        };
        DescriptorSet *set = NULL;

        tap_check_int(descriptor_set_new(&set), 0);
        tap_check_int(descriptor_set_add_message(set, &bad_message), -EINVAL);
        tap_check_int(descriptor_set_add_enum(set, &bad_enum), -EINVAL);
        tap_check_int(descriptor_set_add_service(set, &bad_service), -EINVAL);
        /* The wrong kind of descriptor has the wrong magic too. */
        tap_check_int(descriptor_set_add_message(
                              set, (const ProtobufCMessageDescriptor *) &example__unit__descriptor),
                      -EINVAL);
        tap_check_int(descriptor_set_add_message(set, &uses_bad), -EINVAL);
        tap_check_int(descriptor_set_size(set), 0);
        /* Example.Reading came in and went out with it: it adds afresh. */
        tap_check_int(descriptor_set_add_message(set, &example__reading__descriptor), 1);
        tap_check_int(descriptor_set_size(set), 2);
        descriptor_set_free(set);
}

/* ---- Descriptors of a proto2 package "test.other", written out by hand as
 * protoc-c would generate them: a message with a field of another package,
 * two oneofs and a packed field, and a nested enum. */

typedef struct Holder {
        ProtobufCMessage base;
        Example__Reading *reading;
        uint32_t choice_case;
        int32_t a;
        char *b;
        uint32_t other_case;
        int32_t c;
        size_t n_nums;
        int32_t *nums;
        int kind;
} Holder;

static const ProtobufCEnumValue kind_values[] = {
        { "KIND_A", "TEST__OTHER__HOLDER__KIND__KIND_A", 0 },
        { "KIND_B", "TEST__OTHER__HOLDER__KIND__KIND_B", 5 },
};

static const ProtobufCEnumDescriptor kind_descriptor = {
        .magic = PROTOBUF_C__ENUM_DESCRIPTOR_MAGIC,
        .name = "test.other.Holder.Kind",
        .short_name = "Kind",
        .c_name = "Test__Other__Holder__Kind",
        .package_name = "test.other",
        .n_values = ELEMENTSOF(kind_values),
        .values = kind_values,
};

static const ProtobufCFieldDescriptor holder_fields[] = {
        { .name = "reading", .id = 1, .label = PROTOBUF_C_LABEL_OPTIONAL,
          .type = PROTOBUF_C_TYPE_MESSAGE, .offset = offsetof(Holder, reading),
          .descriptor = &example__reading__descriptor },
        { .name = "a", .id = 2, .label = PROTOBUF_C_LABEL_OPTIONAL, .type = PROTOBUF_C_TYPE_INT32,
          .quantifier_offset = offsetof(Holder, choice_case), .offset = offsetof(Holder, a),
          .flags = PROTOBUF_C_FIELD_FLAG_ONEOF },
        { .name = "b", .id = 3, .label = PROTOBUF_C_LABEL_OPTIONAL, .type = PROTOBUF_C_TYPE_STRING,
          .quantifier_offset = offsetof(Holder, choice_case), .offset = offsetof(Holder, b),
          .flags = PROTOBUF_C_FIELD_FLAG_ONEOF },
        { .name = "c", .id = 4, .label = PROTOBUF_C_LABEL_OPTIONAL, .type = PROTOBUF_C_TYPE_SINT32,
          .quantifier_offset = offsetof(Holder, other_case), .offset = offsetof(Holder, c),
          .flags = PROTOBUF_C_FIELD_FLAG_ONEOF },
        { .name = "nums", .id = 5, .label = PROTOBUF_C_LABEL_REPEATED,
          .type = PROTOBUF_C_TYPE_INT32, .quantifier_offset = offsetof(Holder, n_nums),
          .offset = offsetof(Holder, nums), .flags = PROTOBUF_C_FIELD_FLAG_PACKED },
        { .name = "kind", .id = 6, .label = PROTOBUF_C_LABEL_REQUIRED, .type = PROTOBUF_C_TYPE_ENUM,
          .offset = offsetof(Holder, kind), .descriptor = &kind_descriptor },
};

static const ProtobufCMessageDescriptor holder_descriptor = {
        .magic = PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
        .name = "test.other.Holder",
        .short_name = "Holder",
        .c_name = "Test__Other__Holder",
        .package_name = "test.other",
        .sizeof_message = sizeof(Holder),
        .n_fields = ELEMENTSOF(holder_fields),
        .fields = holder_fields,
};

static void test_other_package(void) {
        DescriptorSet *set = NULL;
        FileSet *fs = NULL;
        const File *other, *example;
        const Message *holder = NULL;
        const Field *f;

        tap_check_int(descriptor_set_new(&set), 0);
        tap_check_int(descriptor_set_add_message(set, &holder_descriptor), 1);
        /* Holder, its enum, Reading and Reading's enum. */
        tap_check_int(descriptor_set_size(set), 4);
        fs = pack_and_read(set);
        if (!fs)
                goto finish;
        tap_check_int(fs->n_file, 2);
        /* Files in package order. */
        tap_check(fs->n_file == 2 && str_eq(fs->file[0]->package, "example") &&
                  str_eq(fs->file[1]->package, "test.other"));
        other = file_named(fs, "test/other.proto");
        example = file_named(fs, "example.proto");
        if (!tap_check(other && example))
                goto finish;
        tap_check(str_eq(other->package, "test.other"));
        tap_check(str_eq(other->syntax, "proto2"));
        tap_check(str_eq(example->syntax, "proto3"));
        tap_check(other->n_dependency == 1 && str_eq(other->dependency[0], "example.proto"));
        tap_check_int(example->n_dependency, 0);
        tap_check(message_in(example->message_type, example->n_message_type, "Reading"));
        tap_check(enum_in(example->enum_type, example->n_enum_type, "Unit"));

        holder = message_in(other->message_type, other->n_message_type, "Holder");
        if (!tap_check(holder))
                goto finish;
        tap_check_int(holder->n_field, 6);
        f = field_in(holder, "reading");
        tap_check(f && str_eq(f->type_name, ".example.Reading") && !f->has_oneof_index &&
                  f->type == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_MESSAGE);
        /* Two oneofs, named after their first members. */
        if (tap_check_int(holder->n_oneof_decl, 2)) {
                tap_check(str_eq(holder->oneof_decl[0]->name, "_oneof_a"));
                tap_check(str_eq(holder->oneof_decl[1]->name, "_oneof_c"));
        }
        f = field_in(holder, "a");
        tap_check(f && f->has_oneof_index && f->oneof_index == 0);
        f = field_in(holder, "b");
        tap_check(f && f->has_oneof_index && f->oneof_index == 0 &&
                  f->type == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_STRING);
        f = field_in(holder, "c");
        tap_check(f && f->has_oneof_index && f->oneof_index == 1 &&
                  f->type == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SINT32);
        f = field_in(holder, "nums");
        tap_check(f && f->options && f->options->has_packed && f->options->packed &&
                  f->label == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED);
        f = field_in(holder, "kind");
        tap_check(f && str_eq(f->type_name, ".test.other.Holder.Kind") &&
                  f->label == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REQUIRED &&
                  (!f->options || !f->options->has_packed));
        /* The enum nests in its message. */
        tap_check_int(other->n_enum_type, 0);
        if (tap_check_int(holder->n_enum_type, 1)) {
                const Enum *e = holder->enum_type[0];

                tap_check(str_eq(e->name, "Kind"));
                tap_check(e->n_value == 2 && str_eq(e->value[1]->name, "KIND_B") &&
                          e->value[1]->number == 5);
        }
finish:
        if (fs)
                google__protobuf__file_descriptor_set__free_unpacked(fs, NULL);
        descriptor_set_free(set);
}

static void test_stable_order(void) {
        const ProtobufCMessageDescriptor *messages[] = {
                &example__stats_reply__descriptor, &example__divide_reply__descriptor,
                &example__add_reply__descriptor,   &example__stats_request__descriptor,
                &example__divide_request__descriptor, &example__add_request__descriptor,
        };
        DescriptorSet *one = NULL, *two = NULL;
        uint8_t *a = NULL, *b = NULL;
        size_t a_size = 0, b_size = 0;

        tap_check_int(descriptor_set_new(&one), 0);
        tap_check_int(descriptor_set_new(&two), 0);
        tap_check_int(descriptor_set_add_service(one, &example__calc__descriptor), 1);
        tap_check_int(descriptor_set_add_message(one, &holder_descriptor), 1);
        /* The same types, a piece at a time and the other way round. */
        tap_check_int(descriptor_set_add_message(two, &holder_descriptor), 1);
        for (size_t i = 0; i < ELEMENTSOF(messages); i++)
                tap_check(descriptor_set_add_message(two, messages[i]) >= 0);
        tap_check_int(descriptor_set_add_service(two, &example__calc__descriptor), 1);
        tap_check_int(descriptor_set_size(one), descriptor_set_size(two));
        tap_check_int(descriptor_set_pack(one, &a, &a_size), 0);
        tap_check_int(descriptor_set_pack(two, &b, &b_size), 0);
        tap_check(a && b && a_size == b_size && memcmp(a, b, a_size) == 0);
        free(a);
        free(b);
        descriptor_set_free(one);
        descriptor_set_free(two);
}

/* The broker's own service: a second real file, with enums and packed
 * repeated enums, described from its protoc-c descriptors only. */
static void test_broker_service(void) {
        DescriptorSet *set = NULL;
        FileSet *fs = NULL;
        const File *f;
        const Message *m;
        const Field *kinds;

        tap_check_int(descriptor_set_new(&set), 0);
        tap_check_int(descriptor_set_add_service(set, &bus__bus__descriptor), 1);
        fs = pack_and_read(set);
        f = file_of_package(fs, "bus");
        if (!tap_check(f && fs->n_file == 1))
                goto finish;
        tap_check(str_eq(f->name, "bus.proto"));
        tap_check(str_eq(f->syntax, "proto3"));
        if (tap_check_int(f->n_service, 1)) {
                tap_check(str_eq(f->service[0]->name, "Bus"));
                tap_check_int(f->service[0]->n_method, bus__bus__descriptor.n_methods);
                tap_check(str_eq(f->service[0]->method[0]->name, "Hello"));
                tap_check(str_eq(f->service[0]->method[0]->input_type, ".bus.HelloRequest"));
                tap_check(str_eq(f->service[0]->method[0]->output_type, ".bus.HelloReply"));
        }
        tap_check(message_in(f->message_type, f->n_message_type, "GetStatsReply"));
        /* Only what the service uses: the envelope is not among it. */
        tap_check(!message_in(f->message_type, f->n_message_type, "Envelope"));
        m = message_in(f->message_type, f->n_message_type, "BecomeMonitorRequest");
        kinds = m ? field_in(m, "kinds") : NULL;
        if (tap_check(kinds)) {
                tap_check(str_eq(kinds->type_name, ".bus.Kind"));
                tap_check(kinds->options && kinds->options->packed);
                tap_check(enum_in(f->enum_type, f->n_enum_type, "Kind"));
        }
finish:
        if (fs)
                google__protobuf__file_descriptor_set__free_unpacked(fs, NULL);
        descriptor_set_free(set);
}

static void test_empty(void) {
        DescriptorSet *set = NULL;
        uint8_t *buf = NULL;
        size_t size = 1;

        tap_check_int(descriptor_set_new(&set), 0);
        tap_check_int(descriptor_set_pack(set, &buf, &size), 0);
        tap_check(buf);
        tap_check_int(size, 0);
        free(buf);
        tap_check(!descriptor_set_free(set));
        tap_check(!descriptor_set_free(NULL));
}

int main(void) {
        tap_init();
        TAP_RUN(test_calc_matches_protoc);
        TAP_RUN(test_map_entry);
        TAP_RUN(test_nested_without_parent);
        TAP_RUN(test_add_twice);
        TAP_RUN(test_bad_magic);
        TAP_RUN(test_other_package);
        TAP_RUN(test_stable_order);
        TAP_RUN(test_broker_service);
        TAP_RUN(test_empty);
        return tap_done();
}
