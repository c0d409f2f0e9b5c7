/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The inside of a PbRegistry, shared by pb-registry.c (which builds it),
 * pb-decode.c and pb-encode.c (which walk it), plus the wire-format reader
 * and the UTF-8 check both directions need.
 *
 * Everything reachable from a registry has been validated when its set was
 * added: names are identifiers, field numbers are in 1..2^29-1 and unique in
 * their message, types and labels are known values. A field of message or
 * enum type whose type_name names no known type has a NULL message or
 * enumeration: the codecs treat it as an unknown field (decode) or refuse it
 * (encode), and it is resolved when a later set brings the type.
 *
 * Strings not marked otherwise are borrowed from the unpacked
 * FileDescriptorSets, which the registry keeps until it is freed.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "tools/busdctl/pb-json.h"

/* The values of google.protobuf.FieldDescriptorProto.Type. */
typedef enum PbType {
        PB_TYPE_DOUBLE = 1,
        PB_TYPE_FLOAT = 2,
        PB_TYPE_INT64 = 3,
        PB_TYPE_UINT64 = 4,
        PB_TYPE_INT32 = 5,
        PB_TYPE_FIXED64 = 6,
        PB_TYPE_FIXED32 = 7,
        PB_TYPE_BOOL = 8,
        PB_TYPE_STRING = 9,
        PB_TYPE_GROUP = 10,
        PB_TYPE_MESSAGE = 11,
        PB_TYPE_BYTES = 12,
        PB_TYPE_UINT32 = 13,
        PB_TYPE_ENUM = 14,
        PB_TYPE_SFIXED32 = 15,
        PB_TYPE_SFIXED64 = 16,
        PB_TYPE_SINT32 = 17,
        PB_TYPE_SINT64 = 18,
        PB_TYPE_MAX = PB_TYPE_SINT64,
} PbType;

typedef enum PbWireType {
        PB_WIRE_VARINT = 0,
        PB_WIRE_FIXED64 = 1,
        PB_WIRE_LEN = 2,
        PB_WIRE_SGROUP = 3,
        PB_WIRE_EGROUP = 4,
        PB_WIRE_FIXED32 = 5,
} PbWireType;

#define PB_FIELD_NUMBER_MAX ((1u << 29) - 1)

/* json-c measures strings in int: payloads are kept well below, base64
 * and U+FFFD replacement included. */
#define PB_SIZE_MAX ((size_t) INT32_MAX / 4)

#define streq(a, b) (strcmp((a), (b)) == 0)

static inline void json_object_putp(json_object **o) {
        json_object_put(*o);
}

typedef struct PbMessage PbMessage;
typedef struct PbEnum PbEnum;

typedef struct PbField {
        const char *name;
        char *json_name;            /* owned: the descriptor's, or derived by protoc's rule */
        const char *type_name;      /* as written, for message and enum types */
        const char *default_value;  /* proto2 [default = ...], or NULL */
        const PbMessage *parent;
        uint32_t number;
        PbType type;
        bool repeated;
        bool required;
        bool proto3_optional;
        bool packed;                /* how the encoder writes a repeated scalar */
        bool map;                   /* map<K, V>: message is the entry, key 1, value 2 */
        int oneof;                  /* index in parent->oneofs, or -1 */
        int oneof_next;             /* the next field of that oneof, or -1 */
        const PbMessage *message;   /* PB_TYPE_MESSAGE, NULL while unresolved */
        const PbEnum *enumeration;  /* PB_TYPE_ENUM, NULL while unresolved */
} PbField;

struct PbMessage {
        char *full_name;            /* owned, without the leading dot */
        const char *name;
        const char *package;        /* "" for none */
        const PbMessage *parent;    /* the message it is nested in */
        size_t index;               /* in the registry's list of messages */
        bool proto3;
        bool map_entry;             /* options.map_entry */
        bool is_map_entry;          /* the entry type of some map field */
        PbField *fields;            /* declaration order */
        size_t n_fields;
        PbField **by_number;        /* sorted by number */
        PbField **by_name;          /* sorted by name */
        PbField **by_json_name;     /* sorted by json_name */
        const char **oneofs;        /* NULL for a name not worth printing */
        bool *oneof_synthetic;      /* a proto3 optional field's own oneof */
        int *oneof_first;           /* the index of each oneof's first field, or -1 */
        size_t n_oneofs;
};

typedef struct PbEnumValue {
        const char *name;
        int32_t number;
} PbEnumValue;

struct PbEnum {
        char *full_name;            /* owned, without the leading dot */
        const char *name;
        const char *package;
        const PbMessage *parent;    /* the message it is nested in */
        size_t index;
        bool proto3;
        PbEnumValue *values;        /* declaration order */
        size_t n_values;
        PbEnumValue **by_number;    /* sorted by number, aliases in declaration order */
        PbEnumValue **by_name;      /* sorted by name */
};

/* Lookups by fully qualified name, with or without the leading dot. */
/* Adds v to an object or an array, taking it over: on failure (v NULL from a
 * failed allocation, or no room) v is freed and -ENOMEM returned. */
static inline int pb_json_add(json_object *o, const char *key, json_object *v) {
        if (!v)
                return -ENOMEM;
        if (json_object_object_add(o, key, v) < 0) {
                json_object_put(v);
                return -ENOMEM;
        }
        return 0;
}

static inline int pb_json_append(json_object *a, json_object *v) {
        if (!v)
                return -ENOMEM;
        if (json_object_array_add(a, v) < 0) {
                json_object_put(v);
                return -ENOMEM;
        }
        return 0;
}

/* The registry's own tables, for pb-registry.c and pb-describe.c. */
typedef enum PbKind {
        PB_KIND_MESSAGE,
        PB_KIND_ENUM,
        PB_KIND_SERVICE,
} PbKind;

typedef struct PbSymbol {
        const char *name;
        PbKind kind;
        void *object;
} PbSymbol;

typedef struct PbMethod {
        const char *name;
        char *input, *output; /* owned, fully qualified without the dot */
        const char *input_written, *output_written;
        bool client_streaming, server_streaming;
} PbMethod;

typedef struct PbService {
        char *full_name;
        const char *name;
        const char *package;
        size_t index;
        PbMethod *methods;
        size_t n_methods;
} PbService;

struct PbRegistry {
        Google__Protobuf__FileDescriptorSet **sets;
        size_t n_sets;
        PbMessage **messages;
        size_t n_messages;
        PbEnum **enums;
        size_t n_enums;
        PbService **services;
        size_t n_services;
        PbSymbol *symbols; /* sorted by name */
        size_t n_symbols;
};

/* name in lowerCamelCase (UpperCamelCase with upper_first) as protoc
 * derives json_name and map entry names, with suffix appended; malloc'd. */
char *pb_name_camel_case(const char *name, bool upper_first, const char *suffix);
/* The type of kind named name (fully qualified, leading dot optional), or NULL. */
void *pb_registry_lookup(const PbRegistry *r, const char *name, PbKind kind);
/* Makes room for one more element at the end of *array (n elements now);
 * capacities are powers of two. */
int pb_grow(void *array, size_t n, size_t size);

const PbMessage *pb_registry_message(const PbRegistry *r, const char *name);
const PbEnum *pb_registry_enum(const PbRegistry *r, const char *name);

const PbField *pb_message_field(const PbMessage *m, uint32_t number);
/* By json_name or by name; len bytes of name, not necessarily NUL-terminated. */
const PbField *pb_message_field_by_name(const PbMessage *m, const char *name, size_t len);
/* The key and value fields of a map field's entry message. */
const PbField *pb_map_key(const PbField *f);
const PbField *pb_map_value(const PbField *f);
/* A singular field that PB_DECODE_DEFAULTS prints when it is absent: not a
 * message, not in a oneof, not proto3 optional. */
bool pb_field_prints_default(const PbField *f);

const PbEnumValue *pb_enum_value(const PbEnum *e, int32_t number);
const PbEnumValue *pb_enum_value_by_name(const PbEnum *e, const char *name, size_t len);
/* The value a field of this enum type has when absent: proto3 takes the
 * value numbered 0, proto2 the first one. */
int32_t pb_enum_default(const PbEnum *e);

/* "int32", "string", ...; "message", "enum", "group" for the others. */
const char *pb_type_name(PbType type);
PbWireType pb_type_wire_type(PbType type);
/* Numbers and enums: what may be packed in one length-delimited record. */
bool pb_type_is_packable(PbType type);

/* A cursor over wire-format bytes. */
typedef struct PbReader {
        const uint8_t *p, *end;
} PbReader;

static inline PbReader pb_reader(const uint8_t *data, size_t size) {
        static const uint8_t empty[1];

        /* no arithmetic on NULL, even of zero */
        return data ? (PbReader) { data, data + size } : (PbReader) { empty, empty };
}

typedef struct PbWireField {
        uint32_t number;
        PbWireType wire_type;
        uint64_t value;             /* VARINT, FIXED64, FIXED32 */
        const uint8_t *data;        /* LEN: the payload; SGROUP: what is between the tags */
        size_t size;
} PbWireField;

/* Reads the next field: 1 and *ret, 0 at the end, -EBADMSG for bytes that
 * are not wire format (truncation, field number 0, a stray end-group tag,
 * groups nested deeper than PB_MAX_DEPTH - depth). */
int pb_reader_next(PbReader *rd, unsigned depth, PbWireField *ret);
int pb_reader_varint(PbReader *rd, uint64_t *ret);

bool pb_utf8_is_valid(const char *s, size_t len);
