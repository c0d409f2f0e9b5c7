/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Protobuf wire bytes to JSON: typed by a registry's message (the proto3
 * JSON mapping, see pb-json.h), or untyped (pb_decode_raw_json, as protoc
 * --decode_raw). Also the wire reader and the UTF-8 check the encoder and
 * the registry use.
 *
 * The typed decoder reads a message once, front to back, into one slot per
 * field, then builds the object in declaration order. The parse rules are
 * protobuf's: the last value of a singular field wins; occurrences of a
 * singular message field merge, which is what parsing their concatenation
 * gives, so that is how they are parsed; a repeated scalar may come packed,
 * unpacked, or both; a oneof keeps its last member seen. Field numbers the
 * message does not declare (or whose type did not resolve) go to
 * "@unknown". A known field with the wrong wire type is an error: these
 * are not the bytes of that message.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "libbus/macro.h"
#include "tools/busdctl/pb-registry.h"

/* ---- the wire reader */

int pb_reader_varint(PbReader *rd, uint64_t *ret) {
        uint64_t v = 0;

        for (unsigned shift = 0; shift < 64; shift += 7) {
                uint8_t b;

                if (rd->p >= rd->end)
                        return -EBADMSG;
                b = *rd->p++;
                v |= (uint64_t) (b & 0x7f) << shift;
                if (!(b & 0x80)) {
                        *ret = v;
                        return 0;
                }
        }
        return -EBADMSG; /* more than ten bytes */
}

static int reader_fixed(PbReader *rd, size_t n, uint64_t *ret) {
        uint64_t v = 0;

        if ((size_t) (rd->end - rd->p) < n)
                return -EBADMSG;
        for (size_t i = 0; i < n; i++)
                v |= (uint64_t) rd->p[i] << (8 * i);
        rd->p += n;
        *ret = v;
        return 0;
}

static int reader_field(PbReader *rd, unsigned depth, PbWireField *ret);

/* Skips to the end-group tag matching number; a group is what lies between. */
static int reader_group(PbReader *rd, unsigned depth, PbWireField *ret) {
        const uint8_t *start = rd->p;

        if (depth >= PB_MAX_DEPTH)
                return -EBADMSG;
        for (;;) {
                const uint8_t *before = rd->p;
                PbWireField inner;
                int r;

                r = reader_field(rd, depth + 1, &inner);
                if (r <= 0)
                        return -EBADMSG; /* unterminated */
                if (inner.wire_type == PB_WIRE_EGROUP) {
                        if (inner.number != ret->number)
                                return -EBADMSG;
                        ret->data = start;
                        ret->size = (size_t) (before - start);
                        return 1;
                }
        }
}

/* Like pb_reader_next(), but an end-group tag is returned, not refused. */
static int reader_field(PbReader *rd, unsigned depth, PbWireField *ret) {
        uint64_t tag, len;
        int r;

        if (rd->p >= rd->end)
                return 0;
        r = pb_reader_varint(rd, &tag);
        if (r < 0)
                return r;
        if (tag >> 3 == 0 || tag >> 3 > PB_FIELD_NUMBER_MAX)
                return -EBADMSG;
        *ret = (PbWireField) { .number = (uint32_t) (tag >> 3), .wire_type = tag & 7 };

        switch (ret->wire_type) {
        case PB_WIRE_VARINT:
                return pb_reader_varint(rd, &ret->value) ?: 1;
        case PB_WIRE_FIXED64:
                return reader_fixed(rd, 8, &ret->value) ?: 1;
        case PB_WIRE_FIXED32:
                return reader_fixed(rd, 4, &ret->value) ?: 1;
        case PB_WIRE_LEN:
                r = pb_reader_varint(rd, &len);
                if (r < 0 || len > (uint64_t) (rd->end - rd->p))
                        return -EBADMSG;
                ret->data = rd->p;
                ret->size = (size_t) len;
                rd->p += len;
                return 1;
        case PB_WIRE_SGROUP:
                return reader_group(rd, depth, ret);
        case PB_WIRE_EGROUP:
                return 1;
        default:
                return -EBADMSG;
        }
}

int pb_reader_next(PbReader *rd, unsigned depth, PbWireField *ret) {
        int r = reader_field(rd, depth, ret);

        if (r > 0 && ret->wire_type == PB_WIRE_EGROUP)
                return -EBADMSG; /* ends a group that never started */
        return r;
}

/* ---- UTF-8 */

/* The length of the well-formed UTF-8 sequence at s (1 to 4), or, negated,
 * the length of its longest well-formed start: the "maximal subpart" that
 * Unicode recommends replacing with one U+FFFD. */
static int utf8_sequence(const uint8_t *s, size_t n) {
        uint8_t lo = 0x80, hi = 0xbf;
        size_t need;

        if (s[0] < 0x80)
                return 1;
        if (s[0] >= 0xc2 && s[0] <= 0xdf)
                need = 1;
        else if (s[0] >= 0xe0 && s[0] <= 0xef) {
                need = 2;
                if (s[0] == 0xe0)
                        lo = 0xa0; /* overlong */
                else if (s[0] == 0xed)
                        hi = 0x9f; /* surrogates */
        } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
                need = 3;
                if (s[0] == 0xf0)
                        lo = 0x90; /* overlong */
                else if (s[0] == 0xf4)
                        hi = 0x8f; /* past U+10FFFF */
        } else
                return -1;

        for (size_t i = 1; i <= need; i++) {
                if (i >= n || s[i] < lo || s[i] > hi)
                        return -(int) i;
                lo = 0x80;
                hi = 0xbf;
        }
        return (int) need + 1;
}

bool pb_utf8_is_valid(const char *s, size_t len) {
        const uint8_t *p = (const uint8_t *) s;

        for (size_t i = 0; i < len;) {
                int n = utf8_sequence(p + i, len - i);

                if (n < 0)
                        return false;
                i += (size_t) n;
        }
        return true;
}

/* A JSON string of bytes meant to be UTF-8; what is not shows as U+FFFD. */
static json_object *json_string_utf8(const uint8_t *s, size_t len) {
        _cleanup_free_ char *fixed = NULL;
        size_t n = 0;

        if (pb_utf8_is_valid((const char *) s, len))
                return json_object_new_string_len((const char *) s, (int) len);

        /* each bad byte grows to at most three */
        fixed = malloc(len * 3);
        if (!fixed)
                return NULL;
        for (size_t i = 0; i < len;) {
                int k = utf8_sequence(s + i, len - i);

                if (k > 0) {
                        memcpy(fixed + n, s + i, (size_t) k);
                        n += (size_t) k;
                        i += (size_t) k;
                } else {
                        memcpy(fixed + n, "\xef\xbf\xbd", 3);
                        n += 3;
                        i += (size_t) -k;
                }
        }
        return json_object_new_string_len(fixed, (int) n);
}

/* ---- scalars */

static json_object *json_int64_string(int64_t v) {
        char buf[24];

        snprintf(buf, sizeof(buf), "%" PRId64, v);
        return json_object_new_string(buf);
}

static json_object *json_uint64_string(uint64_t v) {
        char buf[24];

        snprintf(buf, sizeof(buf), "%" PRIu64, v);
        return json_object_new_string(buf);
}

/* The shortest text that reads back as the same float or double, rather
 * than the 17 digits that turn 0.1 into 0.10000000000000001. */
static json_object *json_floating(double d, bool is_float) {
        char buf[32];

        if (isnan(d))
                return json_object_new_string("NaN");
        if (isinf(d))
                return json_object_new_string(d > 0 ? "Infinity" : "-Infinity");
        if (d == 0 && signbit(d))
                return json_object_new_double_s(d, "-0.0"); /* "-0" would parse as integer 0 */
        for (int precision = 1; precision <= 17; precision++) {
                snprintf(buf, sizeof(buf), "%.*g", precision, d);
                if (is_float ? strtof(buf, NULL) == (float) d : strtod(buf, NULL) == d)
                        break;
        }
        return json_object_new_double_s(d, buf);
}

static json_object *json_bytes(const uint8_t *data, size_t size) {
        _cleanup_free_ char *text = pb_base64_encode(data, size);

        return text ? json_object_new_string(text) : NULL;
}

static json_object *json_enum(const PbEnum *e, int32_t number) {
        const PbEnumValue *v = pb_enum_value(e, number);

        return v ? json_object_new_string(v->name) : json_object_new_int(number);
}

static int32_t zigzag32(uint32_t v) {
        return (int32_t) (v >> 1) ^ -(int32_t) (v & 1);
}

static int64_t zigzag64(uint64_t v) {
        return (int64_t) (v >> 1) ^ -(int64_t) (v & 1);
}

/* A field's value from the wire (its wire type checked by the caller). */
static json_object *scalar_to_json(const PbField *f, const PbWireField *w) {
        uint64_t v = w->value;
        union {
                uint32_t u;
                float f;
        } f32 = { .u = (uint32_t) v };
        union {
                uint64_t u;
                double d;
        } f64 = { .u = v };

        switch (f->type) {
        case PB_TYPE_INT32:
        case PB_TYPE_SFIXED32:
                return json_object_new_int((int32_t) (uint32_t) v);
        case PB_TYPE_SINT32:
                return json_object_new_int(zigzag32((uint32_t) v));
        case PB_TYPE_UINT32:
        case PB_TYPE_FIXED32:
                return json_object_new_int64((uint32_t) v);
        case PB_TYPE_INT64:
        case PB_TYPE_SFIXED64:
                return json_int64_string((int64_t) v);
        case PB_TYPE_SINT64:
                return json_int64_string(zigzag64(v));
        case PB_TYPE_UINT64:
        case PB_TYPE_FIXED64:
                return json_uint64_string(v);
        case PB_TYPE_BOOL:
                return json_object_new_boolean(v != 0);
        case PB_TYPE_ENUM:
                return json_enum(f->enumeration, (int32_t) (uint32_t) v);
        case PB_TYPE_FLOAT:
                return json_floating(f32.f, true);
        case PB_TYPE_DOUBLE:
                return json_floating(f64.d, false);
        case PB_TYPE_STRING:
                return json_string_utf8(w->data, w->size);
        case PB_TYPE_BYTES:
                return json_bytes(w->data, w->size);
        default:
                return NULL;
        }
}

/* What an absent field shows with PB_DECODE_DEFAULTS: zero, or a proto2
 * [default = ...]. Bytes defaults are C-escaped in descriptors, and shown
 * empty. */
static json_object *default_to_json(const PbField *f) {
        const char *text = f->default_value;

        switch (f->type) {
        case PB_TYPE_INT32:
        case PB_TYPE_SINT32:
        case PB_TYPE_SFIXED32:
                return json_object_new_int(text ? (int32_t) strtol(text, NULL, 10) : 0);
        case PB_TYPE_UINT32:
        case PB_TYPE_FIXED32:
                return json_object_new_int64(text ? (uint32_t) strtoul(text, NULL, 10) : 0);
        case PB_TYPE_INT64:
        case PB_TYPE_SINT64:
        case PB_TYPE_SFIXED64:
                return json_int64_string(text ? strtoll(text, NULL, 10) : 0);
        case PB_TYPE_UINT64:
        case PB_TYPE_FIXED64:
                return json_uint64_string(text ? strtoull(text, NULL, 10) : 0);
        case PB_TYPE_BOOL:
                return json_object_new_boolean(text && streq(text, "true"));
        case PB_TYPE_FLOAT:
        case PB_TYPE_DOUBLE:
                return json_floating(text ? strtod(text, NULL) : 0.0, f->type == PB_TYPE_FLOAT);
        case PB_TYPE_STRING:
                return json_string_utf8((const uint8_t *) (text ?: ""), text ? strlen(text) : 0);
        case PB_TYPE_BYTES:
                return json_object_new_string("");
        case PB_TYPE_ENUM: {
                const PbEnum *e = f->enumeration;
                const PbEnumValue *v = text ? pb_enum_value_by_name(e, text, strlen(text)) : NULL;

                return json_enum(e, v ? v->number : pb_enum_default(e));
        }
        default:
                return NULL;
        }
}

/* ---- building JSON */

/* Adds v under the field number: the first time as is, then as an array of
 * every occurrence, as --decode_raw lists repeated fields. */
static int json_add_numbered(json_object *o, uint32_t number, json_object *v) {
        json_object *old, *array;
        char key[16];

        if (!v)
                return -ENOMEM;
        snprintf(key, sizeof(key), "%" PRIu32, number);
        if (!json_object_object_get_ex(o, key, &old))
                return pb_json_add(o, key, v);
        if (json_object_is_type(old, json_type_array))
                return pb_json_append(old, v);

        array = json_object_new_array();
        if (!array || pb_json_append(array, json_object_get(old)) < 0) {
                json_object_put(array);
                json_object_put(v);
                return -ENOMEM;
        }
        if (pb_json_append(array, v) < 0) {
                json_object_put(array);
                return -ENOMEM;
        }
        return pb_json_add(o, key, array);
}

/* ---- raw decoding */

static int raw_decode(const uint8_t *data, size_t size, unsigned depth, json_object **ret);

/* Whether data reads as wire format to the end, without building anything. */
static bool raw_is_message(const uint8_t *data, size_t size, unsigned depth) {
        PbReader rd = pb_reader(data, size);
        PbWireField w;
        int r;

        while ((r = pb_reader_next(&rd, depth, &w)) > 0)
                ;
        return r == 0;
}

bool pb_text_is_printable(const uint8_t *data, size_t size) {
        for (size_t i = 0; i < size; i++)
                if ((data[i] < 0x20 && data[i] != '\t' && data[i] != '\n' && data[i] != '\r') ||
                    data[i] == 0x7f)
                        return false;
        return pb_utf8_is_valid((const char *) data, size);
}

static int raw_length_delimited(const PbWireField *w, unsigned depth, json_object **ret) {
        if (w->size > 0 && depth < PB_MAX_DEPTH && raw_is_message(w->data, w->size, depth + 1))
                return raw_decode(w->data, w->size, depth + 1, ret);

        if (pb_text_is_printable(w->data, w->size))
                *ret = json_object_new_string_len((const char *) w->data, (int) w->size);
        else
                *ret = json_bytes(w->data, w->size);
        return *ret ? 0 : -ENOMEM;
}

/* An unknown field's value: numbers as numbers, groups as objects; bytes
 * are guessed at (raw) or kept as base64 (typed). */
static int raw_value(const PbWireField *w, unsigned depth, bool guess, json_object **ret) {
        switch (w->wire_type) {
        case PB_WIRE_VARINT:
        case PB_WIRE_FIXED64:
                *ret = json_object_new_uint64(w->value);
                break;
        case PB_WIRE_FIXED32:
                *ret = json_object_new_int64((uint32_t) w->value);
                break;
        case PB_WIRE_LEN:
                if (guess)
                        return raw_length_delimited(w, depth, ret);
                *ret = json_bytes(w->data, w->size);
                break;
        case PB_WIRE_SGROUP:
                return raw_decode(w->data, w->size, depth + 1, ret);
        default:
                return -EBADMSG;
        }
        return *ret ? 0 : -ENOMEM;
}

static int raw_decode(const uint8_t *data, size_t size, unsigned depth, json_object **ret) {
        PbReader rd = pb_reader(data, size);
        json_object *o;
        PbWireField w;
        int r;

        if (depth > PB_MAX_DEPTH)
                return -EBADMSG;
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        while ((r = pb_reader_next(&rd, depth, &w)) > 0) {
                json_object *v;

                r = raw_value(&w, depth, true, &v);
                if (r >= 0)
                        r = json_add_numbered(o, w.number, v);
                if (r < 0)
                        break;
        }
        if (r < 0) {
                json_object_put(o);
                return r;
        }
        *ret = o;
        return 0;
}

int pb_decode_raw_json(const uint8_t *data, size_t size, json_object **ret) {
        if ((!data && size > 0) || !ret)
                return -EINVAL;
        if (size > PB_SIZE_MAX)
                return -EMSGSIZE;
        return raw_decode(data, size, 0, ret);
}

/* ---- typed decoding */

/* What has been read of one field of the message being decoded. */
typedef struct Slot {
        json_object *value;   /* a scalar; the array of a repeated field; a map's object */
        const uint8_t *data;  /* a singular message: its bytes so far, */
        uint8_t *merged;      /* in place if it came once, else copied here */
        size_t size, allocated;
        bool seen;
} Slot;

typedef struct Walk {
        const PbMessage *m;
        unsigned flags, depth;
        Slot *slots;          /* one per field, in declaration order */
        int *oneof_last;      /* per oneof: the index of the member seen last, or -1 */
        json_object *unknown;
} Walk;

static int decode_message(const PbMessage *m, const uint8_t *data, size_t size, unsigned flags,
                          unsigned depth, json_object **ret);

static void slot_clear(Slot *s) {
        json_object_put(s->value);
        free(s->merged);
        *s = (Slot) {};
}

static int slot_merge(Slot *s, const uint8_t *data, size_t size) {
        if (!s->seen) {
                s->data = data;
                s->size = size;
                s->seen = true;
                return 0;
        }
        if (s->size + size > s->allocated) {
                /* doubling: a field repeated a million times must not copy its
                 * bytes a million times */
                size_t allocated = MAX(2 * (s->size + size), (size_t) 64);
                uint8_t *p = realloc(s->merged, allocated);

                if (!p)
                        return -ENOMEM;
                if (!s->merged && s->size > 0)
                        memcpy(p, s->data, s->size);
                s->merged = p;
                s->allocated = allocated;
        }
        if (size > 0)
                memcpy(s->merged + s->size, data, size);
        s->size += size;
        s->data = s->merged;
        return 0;
}

static void walk_done(Walk *w) {
        for (size_t i = 0; w->slots && i < w->m->n_fields; i++)
                slot_clear(&w->slots[i]);
        free(w->slots);
        free(w->oneof_last);
        json_object_put(w->unknown);
        *w = (Walk) {};
}

static int walk_init(Walk *w, const PbMessage *m, unsigned flags, unsigned depth) {
        if (depth > PB_MAX_DEPTH)
                return -EBADMSG;
        *w = (Walk) { .m = m, .flags = flags, .depth = depth };
        w->slots = calloc(MAX(m->n_fields, 1), sizeof(Slot));
        w->oneof_last = calloc(MAX(m->n_oneofs, 1), sizeof(int));
        if (!w->slots || !w->oneof_last)
                return -ENOMEM;
        for (size_t i = 0; i < m->n_oneofs; i++)
                w->oneof_last[i] = -1;
        return 0;
}

/* Fields the decoder can read: the others are shown as unknown. */
static bool field_is_usable(const PbField *f) {
        switch (f->type) {
        case PB_TYPE_GROUP:
                return false;
        case PB_TYPE_MESSAGE:
                return f->message;
        case PB_TYPE_ENUM:
                return f->enumeration;
        default:
                return true;
        }
}

static int walk_unknown(Walk *w, const PbWireField *wf) {
        json_object *v;
        int r;

        if (!w->unknown) {
                w->unknown = json_object_new_object();
                if (!w->unknown)
                        return -ENOMEM;
        }
        r = raw_value(wf, w->depth, false, &v);
        if (r < 0)
                return r;
        return json_add_numbered(w->unknown, wf->number, v);
}

static int walk_packed(const PbField *f, Slot *s, const PbWireField *wf) {
        PbReader rd = pb_reader(wf->data, wf->size);
        PbWireType type = pb_type_wire_type(f->type);

        while (rd.p < rd.end) {
                PbWireField e = { .number = f->number, .wire_type = type };
                int r;

                if (type == PB_WIRE_VARINT)
                        r = pb_reader_varint(&rd, &e.value);
                else
                        r = reader_fixed(&rd, type == PB_WIRE_FIXED32 ? 4 : 8, &e.value);
                if (r >= 0)
                        r = pb_json_append(s->value, scalar_to_json(f, &e));
                if (r < 0)
                        return r;
        }
        return 0;
}

static int walk_repeated(Walk *w, const PbField *f, Slot *s, const PbWireField *wf) {
        if (!s->value) {
                s->value = json_object_new_array();
                if (!s->value)
                        return -ENOMEM;
                s->seen = true;
        }

        if (f->type == PB_TYPE_MESSAGE) {
                json_object *v;
                int r;

                if (wf->wire_type != PB_WIRE_LEN)
                        return -EBADMSG;
                r = decode_message(f->message, wf->data, wf->size, w->flags, w->depth + 1, &v);
                if (r < 0)
                        return r;
                return pb_json_append(s->value, v);
        }
        if (wf->wire_type == PB_WIRE_LEN && pb_type_is_packable(f->type))
                return walk_packed(f, s, wf);
        if (wf->wire_type != pb_type_wire_type(f->type))
                return -EBADMSG;
        return pb_json_append(s->value, scalar_to_json(f, wf));
}

static int walk_read(Walk *w, const uint8_t *data, size_t size);

/* A map key as the JSON object key: strings as they are, numbers in
 * decimal, bools as "true" or "false". */
static const char *map_key_text(json_object *key) {
        if (json_object_is_type(key, json_type_string))
                return json_object_get_string(key);
        return json_object_to_json_string_ext(key, JSON_C_TO_STRING_PLAIN);
}

/* One entry of a map: a message with the key as field 1 and the value as
 * field 2, either of which may be missing (then it has its default). */
static int walk_map_entry(Walk *w, const PbField *f, Slot *s, const PbWireField *wf) {
        const PbField *kf = pb_map_key(f), *vf = pb_map_value(f);
        _cleanup_(walk_done) Walk entry = {};
        _cleanup_(json_object_putp) json_object *key = NULL;
        json_object *value = NULL;
        Slot *ks, *vs;
        int r;

        if (wf->wire_type != PB_WIRE_LEN)
                return -EBADMSG;
        if (!s->value) {
                s->value = json_object_new_object();
                if (!s->value)
                        return -ENOMEM;
                s->seen = true;
        }

        r = walk_init(&entry, f->message, w->flags, w->depth + 1);
        if (r >= 0)
                r = walk_read(&entry, wf->data, wf->size);
        if (r < 0)
                return r;
        ks = &entry.slots[kf - f->message->fields];
        vs = &entry.slots[vf - f->message->fields];

        key = ks->value ? json_object_get(ks->value) : default_to_json(kf);
        if (!key)
                return -ENOMEM;
        if (vf->type == PB_TYPE_MESSAGE) {
                r = decode_message(vf->message, vs->data, vs->size, w->flags, w->depth + 1, &value);
                if (r < 0)
                        return r;
        } else
                value = vs->value ? json_object_get(vs->value) : default_to_json(vf);
        return pb_json_add(s->value, map_key_text(key), value);
}

static int walk_field(Walk *w, const PbField *f, const PbWireField *wf) {
        int index = (int) (f - w->m->fields);
        Slot *s = &w->slots[index];
        json_object *v;

        if (f->oneof >= 0) {
                int *last = &w->oneof_last[f->oneof];

                if (*last >= 0 && *last != index)
                        slot_clear(&w->slots[*last]);
                *last = index;
        }
        if (f->map)
                return walk_map_entry(w, f, s, wf);
        if (f->repeated)
                return walk_repeated(w, f, s, wf);
        if (wf->wire_type != pb_type_wire_type(f->type))
                return -EBADMSG;
        if (f->type == PB_TYPE_MESSAGE)
                return slot_merge(s, wf->data, wf->size);

        v = scalar_to_json(f, wf);
        if (!v)
                return -ENOMEM;
        json_object_put(s->value);
        s->value = v;
        s->seen = true;
        return 0;
}

static int walk_read(Walk *w, const uint8_t *data, size_t size) {
        PbReader rd = pb_reader(data, size);
        PbWireField wf;
        int r;

        while ((r = pb_reader_next(&rd, w->depth, &wf)) > 0) {
                const PbField *f = pb_message_field(w->m, wf.number);

                if (f && field_is_usable(f))
                        r = walk_field(w, f, &wf);
                else
                        r = walk_unknown(w, &wf);
                if (r < 0)
                        return r;
        }
        return r;
}

/* A field that is not on the wire, shown because of PB_DECODE_DEFAULTS. */
static json_object *walk_default(const PbField *f) {
        if (f->map)
                return json_object_new_object();
        if (f->repeated)
                return json_object_new_array();
        return default_to_json(f);
}

static int walk_finish(Walk *w, json_object **ret) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        int r;

        if (!o)
                return -ENOMEM;
        for (size_t i = 0; i < w->m->n_fields; i++) {
                const PbField *f = &w->m->fields[i];
                bool defaults = w->flags & PB_DECODE_DEFAULTS;
                Slot *s = &w->slots[i];
                json_object *v;

                if (!field_is_usable(f))
                        continue;
                if (s->seen && f->type == PB_TYPE_MESSAGE && !f->repeated) {
                        r = decode_message(f->message, s->data, s->size, w->flags, w->depth + 1,
                                           &v);
                        if (r < 0)
                                return r;
                } else if (s->seen)
                        v = json_object_get(s->value);
                else if (defaults && (f->repeated || pb_field_prints_default(f)))
                        v = walk_default(f);
                else
                        continue;
                r = pb_json_add(o, f->json_name, v);
                if (r < 0)
                        return r;
        }
        if (w->unknown) {
                r = pb_json_add(o, "@unknown", json_object_get(w->unknown));
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(o);
        return 0;
}

static int decode_message(const PbMessage *m, const uint8_t *data, size_t size, unsigned flags,
                          unsigned depth, json_object **ret) {
        _cleanup_(walk_done) Walk w = {};
        int r;

        r = walk_init(&w, m, flags, depth);
        if (r >= 0)
                r = walk_read(&w, data, size);
        if (r >= 0)
                r = walk_finish(&w, ret);
        return r;
}

int pb_decode_json(const PbRegistry *r, const char *type, const uint8_t *data, size_t size,
                   unsigned flags, json_object **ret) {
        const PbMessage *m;

        if (!r || !type || (!data && size > 0) || !ret)
                return -EINVAL;
        if (size > PB_SIZE_MAX)
                return -EMSGSIZE;
        m = pb_registry_message(r, type);
        if (!m)
                return -ENOENT;
        return decode_message(m, data, size, flags, 0, ret);
}
