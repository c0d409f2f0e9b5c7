/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Protobuf reflection for busdctl: a registry of types loaded at run time
 * from serialized google.protobuf.FileDescriptorSets (what bus.Introspect
 * answers, what protoc --descriptor_set_out writes, what a capture file
 * keeps), and conversion between protobuf wire bytes and JSON following the
 * proto3 JSON mapping. libprotobuf-c has no reflection from descriptors, so
 * this walks the wire format against descriptor.proto's messages (compiled
 * with protoc-c).
 *
 * Every input is untrusted: malformed descriptors or payloads give an error,
 * never a crash, and recursion is bounded (PB_MAX_DEPTH).
 *
 * JSON mapping (proto3):
 *   - field names: lowerCamelCase json_name on output; input accepts the
 *     json_name or the original field name;
 *   - int32, sint32, sfixed32, uint32, fixed32: numbers; int64, sint64,
 *     sfixed64, uint64, fixed64: decimal strings (input: strings or numbers);
 *   - float, double: numbers, "NaN", "Infinity", "-Infinity";
 *   - bool: true/false; string: string; bytes: standard base64 with padding
 *     (input also accepts URL-safe and unpadded);
 *   - enum: the value's name (its number when the value is unknown; input:
 *     name or number);
 *   - message: object; repeated: array; map<K,V>: object keyed by the key as
 *     a string (a map is a repeated field of a nested "<Field>Entry" message
 *     with key = 1 and value = 2, marked map_entry or named by protoc's rule);
 *   - fields with their default value are printed too (PB_DECODE_DEFAULTS)
 *     or left out; unknown fields are kept under "@unknown" as
 *     {"<number>": <value or base64>}.
 *   - not supported: the well-known types' special forms (Timestamp,
 *     Duration, Any, wrappers, Struct, FieldMask are plain messages), groups
 *     (proto2; decode as unknown fields), extensions.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

#define PB_MAX_DEPTH 64

typedef struct PbRegistry PbRegistry;

int pb_registry_new(PbRegistry **ret);
PbRegistry *pb_registry_free(PbRegistry *r);

/* Adds the files of a serialized FileDescriptorSet. A type (or service)
 * already known keeps its first definition. Returns the number of new
 * message, enum and service types; -EBADMSG if the set does not decode or a
 * file in it is inconsistent (then nothing of it is added). */
int pb_registry_add_set(PbRegistry *r, const uint8_t *data, size_t size);
/* The same from a file holding a serialized FileDescriptorSet (protoc
 * --include_imports --descriptor_set_out=FILE). -errno of open/read. */
int pb_registry_add_file(PbRegistry *r, const char *path);

/* Type names are fully qualified, with or without the leading dot. */
bool pb_registry_has_message(const PbRegistry *r, const char *type);
bool pb_registry_has_service(const PbRegistry *r, const char *service);

/* Finds method in service (NULL: in any service known; the first match in
 * the order services were added) and gives the fully qualified input and
 * output types and service name (borrowed, no leading dot; any ret may be
 * NULL). -ENOENT no such method, -ENXIO no such service. */
int pb_registry_find_method(const PbRegistry *r, const char *service, const char *method,
                            const char **ret_input, const char **ret_output,
                            const char **ret_service);

/* A description of services and types, and every message and enum type they
 * use (recursively): as JSON,
 *   {"services": [{"name", "methods": [{"name", "input", "output"}]}],
 *    "messages": [{"name", "fields": [{"name", "jsonName", "number",
 *                  "label" ("optional"|"repeated"|"required"), "type"
 *                  (scalar name, or the full message/enum name),
 *                  "map": {"key", "value"} for maps, "oneof"}]}],
 *    "enums": [{"name", "values": [{"name", "number"}]}]}
 * or as .proto-like text. services and types are NULL-terminated arrays of
 * names (either may be NULL). Unknown names: -ENOENT. */
int pb_registry_describe_json(const PbRegistry *r, const char *const *services,
                              const char *const *types, json_object **ret);
int pb_registry_describe_text(const PbRegistry *r, const char *const *services,
                              const char *const *types, FILE *f);

enum {
        PB_DECODE_DEFAULTS = 1 << 0, /* print fields that have their default value */
};

/* Decodes a payload of a message type into a JSON object. -ENOENT unknown
 * type, -EBADMSG the bytes are not that message (truncated, wrong wire
 * types, depth past PB_MAX_DEPTH, bad UTF-8 in a string is NOT an error: it
 * is printed with U+FFFD). */
int pb_decode_json(const PbRegistry *r, const char *type, const uint8_t *data, size_t size,
                   unsigned flags, json_object **ret);
/* Decodes wire bytes without a type, as protoc --decode_raw does: an object
 * keyed by field number; a length-delimited field is shown as a nested
 * object if it parses as one, else as a string if it is printable UTF-8,
 * else base64; repeated numbers become arrays. -EBADMSG if the bytes are
 * not protobuf wire format. */
int pb_decode_raw_json(const uint8_t *data, size_t size, json_object **ret);

/* Whether bytes are text a terminal shows as it is: valid UTF-8 without
 * control characters but for tab and newlines (what pb_decode_raw_json
 * prints as a string). */
bool pb_text_is_printable(const uint8_t *data, size_t size);

/* Encodes a JSON object as a message of type. On failure returns -ENOENT
 * (unknown type) or -EINVAL and, if ret_error is not NULL, a malloc'd
 * message naming the field path and the problem ("field \"a\": expected a
 * number, got \"x\""; "unknown field \"foo\" in example.AddRequest"). *ret is
 * malloc'd (non-NULL also for an empty message). */
int pb_encode_json(const PbRegistry *r, const char *type, json_object *json, uint8_t **ret,
                   size_t *ret_size, char **ret_error);

/* Base64 (RFC 4648). Encoding gives standard alphabet with padding, malloc'd.
 * Decoding accepts standard and URL-safe alphabets, padded or not, and
 * ignores nothing else: -EINVAL for any other character. */
char *pb_base64_encode(const uint8_t *data, size_t size);
int pb_base64_decode(const char *text, size_t len, uint8_t **ret, size_t *ret_size);
