/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The broker's view of an Envelope: the routing fields, read straight out of
 * the frame's bytes without allocating. Strings point into the frame and are
 * not NUL-terminated; they stay valid while the frame is held.
 *
 * Why not protobuf_c_message_unpack(): routing a publish must not malloc and
 * free per message, and the broker needs a dozen fields, not a decoded
 * message. The parser follows the protobuf wire format for bus.Envelope
 * (proto/bus.proto): unknown fields are skipped, a field seen twice keeps its
 * last value, a known field with the wrong wire type makes the envelope
 * malformed, as it does for protobuf-c. test-envelope.c checks it against
 * protobuf-c on the same bytes.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct EnvelopeString {
        const char *s;  /* not NUL-terminated; NULL when absent */
        size_t len;
} EnvelopeString;

typedef struct EnvelopeView {
        uint32_t kind;
        uint64_t serial;
        uint64_t reply_serial;
        EnvelopeString destination;
        EnvelopeString topic;
        EnvelopeString method;
        uint32_t timeout_ms;
        uint32_t flags;
        EnvelopeString error_name;
        uint64_t memfd_payload_size;
        /* Set when a field only the broker may set is present (non-empty,
         * non-zero), whatever its value, or flags has a bit only the broker
         * sets (ENVELOPE_FLAG_MONITOR). */
        bool has_broker_fields;
} EnvelopeView;

/* Parses len bytes. Returns 0, or -EBADMSG when they are not a well-formed
 * bus.Envelope. */
int envelope_view_parse(EnvelopeView *v, const uint8_t *data, size_t len);

/* Copies a string into buf (size bytes) with a NUL, for lookups keyed by C
 * strings. Returns false when it does not fit or holds a NUL. */
bool envelope_string_copy(EnvelopeString s, char *buf, size_t size);

static inline bool envelope_string_eq(EnvelopeString s, const char *literal, size_t len) {
        return s.len == len && __builtin_memcmp(s.s, literal, len) == 0;
}
#define ENVELOPE_STRING_IS(s, literal) envelope_string_eq((s), literal, sizeof(literal) - 1)
