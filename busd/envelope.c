/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Allocation-free parsing of bus.Envelope; see envelope.h. */
#include <errno.h>
#include <string.h>

#include "busd/envelope.h"

enum {
        WIRE_VARINT = 0,
        WIRE_FIXED64 = 1,
        WIRE_LENGTH = 2,
        WIRE_FIXED32 = 5,
};

/* Field numbers of bus.Envelope. */
enum {
        F_KIND = 1,
        F_SERIAL = 2,
        F_REPLY_SERIAL = 3,
        F_DESTINATION = 4,
        F_TOPIC = 5,
        F_METHOD = 6,
        F_TIMEOUT_MS = 7,
        F_FLAGS = 8,
        F_PAYLOAD_TYPE = 9,
        F_ERROR_NAME = 10,
        F_ERROR_MESSAGE = 11,
        F_MEMFD_PAYLOAD_SIZE = 12,
        F_SENDER = 16,
        F_SENDER_UID = 17,
        F_SENDER_GID = 18,
        F_SENDER_PID = 19,
        F_SUBSCRIPTIONS = 20,
        F_MISSED = 21,
        F_TIMESTAMP_NS = 22,
        F_MONITOR_RECEIVER = 23,
        F_MONITOR_RECEIVERS = 24,
        F_MONITOR_FDS = 25,
};

/* Envelope.flags bits only the broker sets (ENVELOPE_FLAG_MONITOR). */
#define BROKER_FLAGS 0x8u

typedef struct Cursor {
        const uint8_t *p;
        const uint8_t *end;
} Cursor;

static int read_varint(Cursor *c, uint64_t *ret) {
        uint64_t v = 0;

        /* Most values (kinds, flags, small serials, lengths) take one byte. */
        if (c->p < c->end && *c->p < 0x80) {
                *ret = *c->p++;
                return 0;
        }

        for (unsigned shift = 0; shift < 70; shift += 7) {
                uint8_t b;

                if (c->p == c->end)
                        return -EBADMSG;
                b = *c->p++;
                v |= (uint64_t) (b & 0x7f) << shift;
                if (!(b & 0x80)) {
                        *ret = v;
                        return 0;
                }
        }
        return -EBADMSG; /* more than 10 bytes */
}

/* A field key: at most five bytes, kept to 32 bits (protobuf-c drops the
 * bits above, so both accept the same keys). */
static int read_key(Cursor *c, uint32_t *ret) {
        uint32_t v = 0;

        if (c->p < c->end && *c->p < 0x80) {
                *ret = *c->p++;
                return 0;
        }

        for (unsigned i = 0; i < 5; i++) {
                uint8_t b;

                if (c->p == c->end)
                        return -EBADMSG;
                b = *c->p++;
                v |= (uint32_t) (b & 0x7f) << (7 * i);
                if (!(b & 0x80)) {
                        *ret = v;
                        return 0;
                }
        }
        return -EBADMSG;
}

static int read_length(Cursor *c, EnvelopeString *ret) {
        uint64_t len;
        int r;

        r = read_varint(c, &len);
        if (r < 0)
                return r;
        if (len > (uint64_t) (c->end - c->p))
                return -EBADMSG;
        *ret = (EnvelopeString){ .s = (const char *) c->p, .len = (size_t) len };
        c->p += len;
        return 0;
}

static int skip_field(Cursor *c, unsigned wire_type) {
        EnvelopeString ignored;
        uint64_t v;

        switch (wire_type) {
        case WIRE_VARINT:
                return read_varint(c, &v);
        case WIRE_LENGTH:
                return read_length(c, &ignored);
        case WIRE_FIXED64:
                if (c->end - c->p < 8)
                        return -EBADMSG;
                c->p += 8;
                return 0;
        case WIRE_FIXED32:
                if (c->end - c->p < 4)
                        return -EBADMSG;
                c->p += 4;
                return 0;
        default:
                return -EBADMSG; /* groups, and wire types that do not exist */
        }
}

/* The wire type each known field must have, plus one: 0 for fields the
 * broker does not read, which are skipped whatever their type. */
static const uint8_t field_wire_type[32] = {
        [F_KIND] = WIRE_VARINT + 1,
        [F_SERIAL] = WIRE_VARINT + 1,
        [F_REPLY_SERIAL] = WIRE_VARINT + 1,
        [F_DESTINATION] = WIRE_LENGTH + 1,
        [F_TOPIC] = WIRE_LENGTH + 1,
        [F_METHOD] = WIRE_LENGTH + 1,
        [F_TIMEOUT_MS] = WIRE_VARINT + 1,
        [F_FLAGS] = WIRE_VARINT + 1,
        [F_PAYLOAD_TYPE] = WIRE_LENGTH + 1,
        [F_ERROR_NAME] = WIRE_LENGTH + 1,
        [F_ERROR_MESSAGE] = WIRE_LENGTH + 1,
        [F_MEMFD_PAYLOAD_SIZE] = WIRE_VARINT + 1,
        [F_SENDER] = WIRE_LENGTH + 1,
        [F_SENDER_UID] = WIRE_VARINT + 1,
        [F_SENDER_GID] = WIRE_VARINT + 1,
        [F_SENDER_PID] = WIRE_VARINT + 1,
        [F_MISSED] = WIRE_VARINT + 1,
        [F_TIMESTAMP_NS] = WIRE_VARINT + 1,
        [F_MONITOR_RECEIVER] = WIRE_LENGTH + 1,
        [F_MONITOR_RECEIVERS] = WIRE_VARINT + 1,
        [F_MONITOR_FDS] = WIRE_VARINT + 1,
};

/* Repeated uint64 subscriptions: one varint, or a packed run of them. */
static int count_subscriptions(Cursor *c, unsigned wire_type, uint64_t *n) {
        EnvelopeString packed;
        uint64_t v;
        Cursor sub;
        int r;

        if (wire_type == WIRE_VARINT) {
                (*n)++;
                return read_varint(c, &v);
        }
        if (wire_type != WIRE_LENGTH)
                return -EBADMSG;
        r = read_length(c, &packed);
        if (r < 0)
                return r;
        sub = (Cursor){ (const uint8_t *) packed.s, (const uint8_t *) packed.s + packed.len };
        while (sub.p < sub.end) {
                r = read_varint(&sub, &v);
                if (r < 0)
                        return r;
                (*n)++;
        }
        return 0;
}

int envelope_view_parse(EnvelopeView *v, const uint8_t *data, size_t len) {
        Cursor c = { data, data + len };
        EnvelopeString sender = {}, monitor_receiver = {};
        uint64_t broker_values = 0, n_subscriptions = 0;

        *v = (EnvelopeView){};
        while (c.p < c.end) {
                uint64_t value = 0;
                uint32_t key;
                EnvelopeString str = {};
                unsigned field, wire_type, expected;
                int r;

                r = read_key(&c, &key);
                if (r < 0)
                        return r;
                field = key >> 3;
                wire_type = key & 7;
                if (field == 0)
                        return -EBADMSG;

                if (field == F_SUBSCRIPTIONS) {
                        r = count_subscriptions(&c, wire_type, &n_subscriptions);
                        if (r < 0)
                                return r;
                        continue;
                }
                expected = field < 32 ? field_wire_type[field] : 0;
                if (expected == 0)
                        r = skip_field(&c, wire_type);
                else if (wire_type != --expected)
                        return -EBADMSG;
                else if (expected == WIRE_LENGTH)
                        r = read_length(&c, &str);
                else
                        r = read_varint(&c, &value);
                if (r < 0)
                        return r;

                switch (field) {
                case F_KIND:
                        v->kind = (uint32_t) value;
                        break;
                case F_SERIAL:
                        v->serial = value;
                        break;
                case F_REPLY_SERIAL:
                        v->reply_serial = value;
                        break;
                case F_DESTINATION:
                        v->destination = str;
                        break;
                case F_TOPIC:
                        v->topic = str;
                        break;
                case F_METHOD:
                        v->method = str;
                        break;
                case F_TIMEOUT_MS:
                        v->timeout_ms = (uint32_t) value;
                        break;
                case F_FLAGS:
                        v->flags = (uint32_t) value;
                        break;
                case F_ERROR_NAME:
                        v->error_name = str;
                        break;
                case F_MEMFD_PAYLOAD_SIZE:
                        v->memfd_payload_size = value;
                        break;
                case F_SENDER:
                        sender = str;
                        break;
                case F_MONITOR_RECEIVER:
                        monitor_receiver = str;
                        break;
                case F_SENDER_UID:
                case F_SENDER_GID:
                case F_SENDER_PID:
                case F_MISSED:
                case F_TIMESTAMP_NS:
                case F_MONITOR_RECEIVERS:
                case F_MONITOR_FDS:
                        /* Only whether the last value is non-zero matters;
                         * one bit per field keeps "last one wins". */
                        if (value)
                                broker_values |= UINT64_C(1) << field;
                        else
                                broker_values &= ~(UINT64_C(1) << field);
                        break;
                default:
                        break;
                }
        }
        v->has_broker_fields = sender.len > 0 || monitor_receiver.len > 0 || broker_values ||
                               n_subscriptions > 0 || (v->flags & BROKER_FLAGS);
        return 0;
}

bool envelope_string_copy(EnvelopeString s, char *buf, size_t size) {
        if (s.len >= size || (s.len > 0 && memchr(s.s, '\0', s.len)))
                return false;
        if (s.len > 0)
                memcpy(buf, s.s, s.len);
        buf[s.len] = '\0';
        return true;
}
