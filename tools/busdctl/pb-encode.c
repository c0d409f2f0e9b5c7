/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * JSON to protobuf wire bytes, for a message type of a registry (the proto3
 * JSON mapping, see pb-json.h).
 *
 * Input is typed by a person: it is checked strictly and the first problem
 * is reported with the path of the field it is in ("nested.items[2].id")
 * rather than guessed around. Integers must fit their type, floats their
 * range, strings must be UTF-8, enum names must exist; unknown JSON keys
 * are errors. A JSON null leaves a field unset. "@unknown", which the
 * decoder writes, is accepted and skipped, so that decoded output can be
 * edited and sent back.
 *
 * Fields are written in number order, with protoc's choices: proto3 scalar
 * fields without presence are left out when zero, repeated numbers are
 * packed unless the field says otherwise, map entries carry both key and
 * value. A length-delimited record is written in place and its length
 * inserted in front of it afterwards.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libbus/macro.h"
#include "tools/busdctl/pb-registry.h"

typedef struct Buffer {
        uint8_t *data;
        size_t size, allocated;
} Buffer;

typedef struct Encoder {
        Buffer out;
        char *path;     /* the field being encoded, NUL-terminated */
        size_t path_len, path_allocated;
        char *error;    /* the first error */
} Encoder;

/* A scalar ready for the wire: varint or fixed bits, or bytes. */
typedef struct Scalar {
        uint64_t bits;
        const char *data;
        size_t size;
        uint8_t *owned;
} Scalar;

/* A JSON integer as sign and magnitude, so that both INT64_MIN and
 * UINT64_MAX fit. */
typedef struct Integer {
        bool negative;
        uint64_t magnitude;
} Integer;

static void encoder_done(Encoder *e) {
        free(e->out.data);
        free(e->path);
        free(e->error);
}

static void scalar_clear(Scalar *s) {
        free(s->owned);
}

/* ---- output */

static int buffer_reserve(Buffer *b, size_t n) {
        size_t allocated;
        uint8_t *p;

        if (n <= b->allocated - b->size)
                return 0;
        if (n > SIZE_MAX / 2 - b->size)
                return -ENOMEM;
        allocated = MAX(2 * (b->size + n), (size_t) 256);
        p = realloc(b->data, allocated);
        if (!p)
                return -ENOMEM;
        b->data = p;
        b->allocated = allocated;
        return 0;
}

static int put_bytes(Buffer *b, const void *data, size_t n) {
        int r = buffer_reserve(b, n);

        if (r < 0)
                return r;
        if (n > 0)
                memcpy(b->data + b->size, data, n);
        b->size += n;
        return 0;
}

static size_t varint_encode(uint64_t v, uint8_t buf[static 10]) {
        size_t n = 0;

        while (v >= 0x80) {
                buf[n++] = (uint8_t) (v | 0x80);
                v >>= 7;
        }
        buf[n++] = (uint8_t) v;
        return n;
}

static int put_varint(Buffer *b, uint64_t v) {
        uint8_t buf[10];

        return put_bytes(b, buf, varint_encode(v, buf));
}

static int put_fixed(Buffer *b, uint64_t v, size_t n) {
        uint8_t buf[8];

        for (size_t i = 0; i < n; i++)
                buf[i] = (uint8_t) (v >> (8 * i));
        return put_bytes(b, buf, n);
}

static int put_tag(Buffer *b, uint32_t number, PbWireType type) {
        return put_varint(b, (uint64_t) number << 3 | type);
}

/* Inserts the length of what was written since start in front of it. */
static int put_length_before(Buffer *b, size_t start) {
        size_t len = b->size - start, n;
        uint8_t buf[10];
        int r;

        n = varint_encode(len, buf);
        r = buffer_reserve(b, n);
        if (r < 0)
                return r;
        memmove(b->data + start + n, b->data + start, len);
        memcpy(b->data + start, buf, n);
        b->size += n;
        return 0;
}

static int put_scalar(Buffer *b, PbType type, const Scalar *s) {
        int r;

        switch (pb_type_wire_type(type)) {
        case PB_WIRE_FIXED32:
                return put_fixed(b, s->bits, 4);
        case PB_WIRE_FIXED64:
                return put_fixed(b, s->bits, 8);
        case PB_WIRE_LEN:
                r = put_varint(b, s->size);
                return r < 0 ? r : put_bytes(b, s->data, s->size);
        default:
                return put_varint(b, s->bits);
        }
}

/* ---- where we are, and what went wrong */

static int path_append(Encoder *e, const char *format, ...) _printf_(2, 3);
static int path_append(Encoder *e, const char *format, ...) {
        va_list ap;
        int n;

        va_start(ap, format);
        n = vsnprintf(NULL, 0, format, ap);
        va_end(ap);
        if (n < 0)
                return -ENOMEM;
        if (e->path_len + (size_t) n + 1 > e->path_allocated) {
                size_t allocated = 2 * (e->path_len + (size_t) n + 1);
                char *p = realloc(e->path, allocated);

                if (!p)
                        return -ENOMEM;
                e->path = p;
                e->path_allocated = allocated;
        }
        va_start(ap, format);
        vsnprintf(e->path + e->path_len, (size_t) n + 1, format, ap);
        va_end(ap);
        e->path_len += (size_t) n;
        return 0;
}

static int path_push_field(Encoder *e, const char *name) {
        return e->path_len > 0 ? path_append(e, ".%s", name) : path_append(e, "%s", name);
}

static void path_truncate(Encoder *e, size_t len) {
        e->path_len = len;
        if (e->path)
                e->path[len] = '\0';
}

/* Keeps the first error; later ones are its consequences. */
static int encoder_verror(Encoder *e, bool at_field, const char *format, va_list ap)
        _printf_(3, 0);
static int encoder_verror(Encoder *e, bool at_field, const char *format, va_list ap) {
        _cleanup_free_ char *message = NULL;

        if (e->error)
                return -EINVAL;
        if (vasprintf(&message, format, ap) < 0)
                return -ENOMEM;
        if (at_field && e->path_len > 0) {
                if (asprintf(&e->error, "field \"%s\": %s", e->path, message) < 0) {
                        e->error = NULL;
                        return -ENOMEM;
                }
        } else
                e->error = TAKE_PTR(message);
        return -EINVAL;
}

/* An error about the value of the current field. */
static int field_error(Encoder *e, const char *format, ...) _printf_(2, 3);
static int field_error(Encoder *e, const char *format, ...) {
        va_list ap;
        int r;

        va_start(ap, format);
        r = encoder_verror(e, true, format, ap);
        va_end(ap);
        return r;
}

/* An error that names its place itself. */
static int plain_error(Encoder *e, const char *format, ...) _printf_(2, 3);
static int plain_error(Encoder *e, const char *format, ...) {
        va_list ap;
        int r;

        va_start(ap, format);
        r = encoder_verror(e, false, format, ap);
        va_end(ap);
        return r;
}

/* A JSON value, cut short, to quote in an error. */
static const char *json_quote(json_object *v, char buf[static 64]) {
        const char *s = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN |
                                                             JSON_C_TO_STRING_NOSLASHESCAPE);
        size_t n = 56;

        if (!s)
                return "?";
        if (strlen(s) < 60)
                return s;
        while (n > 0 && (s[n] & 0xc0) == 0x80)
                n--; /* not inside a UTF-8 sequence */
        snprintf(buf, 64, "%.*s...", (int) n, s);
        return buf;
}

/* ---- numbers */

/* Decimal digits with an optional minus: 1 and *ret, 0 if text is not that,
 * -ERANGE past 64 bits. */
static int integer_from_text(const char *s, size_t len, Integer *ret) {
        Integer x = {};
        size_t i = 0;

        if (len > 0 && s[0] == '-') {
                x.negative = true;
                i++;
        }
        if (i == len)
                return 0;
        for (; i < len; i++) {
                unsigned digit = (unsigned) (s[i] - '0');

                if (digit > 9)
                        return 0;
                if (x.magnitude > (UINT64_MAX - digit) / 10)
                        return -ERANGE;
                x.magnitude = x.magnitude * 10 + digit;
        }
        *ret = x;
        return 1;
}

/* Other number text, as JSON writes numbers ("1e3", "-2.5"): no spaces, no
 * hex, no "inf". */
static bool double_from_text(const char *s, size_t len, double *ret) {
        char *end;

        if (len == 0 || !((s[0] >= '0' && s[0] <= '9') || s[0] == '-'))
                return false;
        for (size_t i = 0; i < len; i++)
                if (!strchr("0123456789+-.eE", s[i]) || s[i] == '\0')
                        return false;
        errno = 0;
        *ret = strtod(s, &end);
        return end == s + len && errno == 0;
}

static int integer_from_double(double d, Integer *ret) {
        if (!isfinite(d) || d != trunc(d))
                return 0;
        if (fabs(d) >= 18446744073709551616.0)
                return -ERANGE;
        *ret = (Integer) { d < 0, (uint64_t) fabs(d) };
        return 1;
}

/* An integer from a JSON number or string: 1, 0 for no integer, -ERANGE. */
static int integer_from_json(json_object *v, Integer *ret) {
        const char *s;
        int64_t i;
        double d;
        int r;

        switch (json_object_get_type(v)) {
        case json_type_int:
                /* json-c keeps integers past INT64_MAX as uint64 */
                i = json_object_get_int64(v);
                if (i < 0)
                        *ret = (Integer) { true, (uint64_t) 0 - (uint64_t) i };
                else
                        *ret = (Integer) { false, json_object_get_uint64(v) };
                return 1;
        case json_type_double:
                return integer_from_double(json_object_get_double(v), ret);
        case json_type_string:
                s = json_object_get_string(v);
                r = integer_from_text(s, (size_t) json_object_get_string_len(v), ret);
                if (r != 0)
                        return r;
                if (double_from_text(s, (size_t) json_object_get_string_len(v), &d))
                        return integer_from_double(d, ret);
                return 0;
        default:
                return 0;
        }
}

static bool integer_fits(const Integer *x, bool is_signed, unsigned bits) {
        uint64_t max = bits == 64 ? UINT64_MAX : (UINT64_C(1) << bits) - 1;

        if (is_signed)
                return x->magnitude <= (x->negative ? max / 2 + 1 : max / 2);
        return !x->negative || x->magnitude == 0 ? x->magnitude <= max : false;
}

static int64_t integer_signed(const Integer *x) {
        if (!x->negative)
                return (int64_t) x->magnitude;
        if (x->magnitude == UINT64_C(1) << 63)
                return INT64_MIN;
        return -(int64_t) x->magnitude;
}

static int integer_field(Encoder *e, const PbField *f, json_object *v, Scalar *ret) {
        bool is_signed = f->type == PB_TYPE_INT32 || f->type == PB_TYPE_SINT32 ||
                         f->type == PB_TYPE_SFIXED32 || f->type == PB_TYPE_INT64 ||
                         f->type == PB_TYPE_SINT64 || f->type == PB_TYPE_SFIXED64;
        unsigned bits = pb_type_wire_type(f->type) == PB_WIRE_FIXED32 || f->type == PB_TYPE_INT32 ||
                                        f->type == PB_TYPE_UINT32 || f->type == PB_TYPE_SINT32
                                ? 32
                                : 64;
        char quote[64];
        Integer x;
        int64_t s;
        int r;

        r = integer_from_json(v, &x);
        if (r == 0)
                return field_error(e, "expected an integer, got %s", json_quote(v, quote));
        if (r < 0 || !integer_fits(&x, is_signed, bits))
                return field_error(e, "%s is out of range for %s", json_quote(v, quote),
                                   pb_type_name(f->type));

        s = integer_signed(&x);
        switch (f->type) {
        case PB_TYPE_INT32:
        case PB_TYPE_INT64:
        case PB_TYPE_SFIXED64:
                ret->bits = (uint64_t) s; /* an int32 below zero takes ten bytes */
                break;
        case PB_TYPE_SFIXED32:
                ret->bits = (uint32_t) s;
                break;
        case PB_TYPE_SINT32:
                ret->bits = s < 0 ? ~((uint32_t) s << 1) : (uint32_t) s << 1;
                break;
        case PB_TYPE_SINT64:
                ret->bits = s < 0 ? ~((uint64_t) s << 1) : (uint64_t) s << 1;
                break;
        default:
                ret->bits = x.magnitude;
        }
        return 0;
}

static int floating_field(Encoder *e, const PbField *f, json_object *v, Scalar *ret) {
        char quote[64];
        double d;

        switch (json_object_get_type(v)) {
        case json_type_int:
        case json_type_double:
                d = json_object_get_double(v);
                break;
        case json_type_string: {
                const char *s = json_object_get_string(v);

                if (streq(s, "NaN"))
                        d = NAN;
                else if (streq(s, "Infinity"))
                        d = INFINITY;
                else if (streq(s, "-Infinity"))
                        d = -INFINITY;
                else if (!double_from_text(s, (size_t) json_object_get_string_len(v), &d))
                        return field_error(e, "expected a number, got %s", json_quote(v, quote));
                break;
        }
        default:
                return field_error(e, "expected a number, got %s", json_quote(v, quote));
        }

        if (f->type == PB_TYPE_FLOAT) {
                union {
                        float f;
                        uint32_t u;
                } x;

                /* Not fabs(d) > FLT_MAX: the shortest text of FLT_MAX reads
                 * back a little above it, and rounds to it. What rounds to
                 * infinity starts half a step above, and converting it
                 * would be undefined. */
                if (isfinite(d) && fabs(d) >= 0x1.ffffffp+127)
                        return field_error(e, "%s is out of range for float", json_quote(v, quote));
                x.f = (float) d;
                ret->bits = x.u;
        } else {
                union {
                        double d;
                        uint64_t u;
                } x = { .d = d };

                ret->bits = x.u;
        }
        return 0;
}

static int enum_field(Encoder *e, const PbField *f, json_object *v, Scalar *ret) {
        const PbEnum *en = f->enumeration;
        char quote[64];
        Integer x;
        int r;

        if (json_object_is_type(v, json_type_string)) {
                const char *name = json_object_get_string(v);
                size_t len = (size_t) json_object_get_string_len(v);
                const PbEnumValue *ev = pb_enum_value_by_name(en, name, len);

                if (ev) {
                        ret->bits = (uint64_t) (int64_t) ev->number;
                        return 0;
                }
                r = integer_from_text(name, len, &x);
                if (r == 0)
                        return field_error(e, "%s is not a value of %s", json_quote(v, quote),
                                           en->full_name);
        } else if (json_object_is_type(v, json_type_int) ||
                   json_object_is_type(v, json_type_double)) {
                r = integer_from_json(v, &x);
                if (r == 0)
                        return field_error(e, "expected an integer, got %s", json_quote(v, quote));
        } else
                return field_error(e, "expected a name or number of %s, got %s", en->full_name,
                                   json_quote(v, quote));

        if (r < 0 || !integer_fits(&x, true, 32))
                return field_error(e, "%s is out of range for an enum", json_quote(v, quote));
        /* open enums: a number the type does not name is kept as it is */
        ret->bits = (uint64_t) integer_signed(&x);
        return 0;
}

static int string_field(Encoder *e, const PbField *f, json_object *v, Scalar *ret) {
        char quote[64];
        int r;

        if (!json_object_is_type(v, json_type_string))
                return field_error(e, "expected a string, got %s", json_quote(v, quote));
        ret->data = json_object_get_string(v);
        ret->size = (size_t) json_object_get_string_len(v);
        if (f->type == PB_TYPE_STRING) {
                if (!pb_utf8_is_valid(ret->data, ret->size))
                        return field_error(e, "the string is not valid UTF-8");
                return 0;
        }

        r = pb_base64_decode(ret->data, ret->size, &ret->owned, &ret->size);
        if (r == -EINVAL)
                return field_error(e, "%s is not base64", json_quote(v, quote));
        if (r < 0)
                return r;
        ret->data = (const char *) ret->owned;
        return 0;
}

static int scalar_from_json(Encoder *e, const PbField *f, json_object *v, Scalar *ret) {
        char quote[64];

        *ret = (Scalar) {};
        switch (f->type) {
        case PB_TYPE_BOOL:
                if (!json_object_is_type(v, json_type_boolean))
                        return field_error(e, "expected true or false, got %s",
                                           json_quote(v, quote));
                ret->bits = json_object_get_boolean(v);
                return 0;
        case PB_TYPE_FLOAT:
        case PB_TYPE_DOUBLE:
                return floating_field(e, f, v, ret);
        case PB_TYPE_ENUM:
                return enum_field(e, f, v, ret);
        case PB_TYPE_STRING:
        case PB_TYPE_BYTES:
                return string_field(e, f, v, ret);
        default:
                return integer_field(e, f, v, ret);
        }
}

/* ---- messages */

static int encode_message(Encoder *e, const PbMessage *m, json_object *o, unsigned depth);

/* A proto3 field without presence is not written when zero, as protoc does. */
static bool field_skips_zero(const PbField *f) {
        return f->parent->proto3 && pb_field_prints_default(f);
}

/* One value of f (a singular field, an element, a map key or value) with
 * its tag; v is not null. */
static int encode_value(Encoder *e, const PbField *f, uint32_t number, json_object *v,
                        unsigned depth, bool skip_zero) {
        _cleanup_(scalar_clear) Scalar s = {};
        size_t start;
        int r;

        if (f->type == PB_TYPE_MESSAGE) {
                r = put_tag(&e->out, number, PB_WIRE_LEN);
                if (r < 0)
                        return r;
                start = e->out.size;
                r = encode_message(e, f->message, v, depth + 1);
                return r < 0 ? r : put_length_before(&e->out, start);
        }

        r = scalar_from_json(e, f, v, &s);
        if (r < 0)
                return r;
        if (skip_zero && s.bits == 0 && s.size == 0)
                return 0;
        r = put_tag(&e->out, number, pb_type_wire_type(f->type));
        return r < 0 ? r : put_scalar(&e->out, f->type, &s);
}

static int encode_packed(Encoder *e, const PbField *f, json_object *a) {
        size_t n = json_object_array_length(a), start, path_len = e->path_len;
        int r;

        if (n == 0)
                return 0;
        r = put_tag(&e->out, f->number, PB_WIRE_LEN);
        if (r < 0)
                return r;
        start = e->out.size;
        for (size_t i = 0; i < n; i++) {
                _cleanup_(scalar_clear) Scalar s = {};
                json_object *v = json_object_array_get_idx(a, i);

                r = path_append(e, "[%zu]", i);
                if (r < 0)
                        return r;
                if (!v)
                        return field_error(e, "null is not allowed in a list");
                r = scalar_from_json(e, f, v, &s);
                if (r < 0)
                        return r;
                r = put_scalar(&e->out, f->type, &s);
                if (r < 0)
                        return r;
                path_truncate(e, path_len);
        }
        return put_length_before(&e->out, start);
}

static int encode_repeated(Encoder *e, const PbField *f, json_object *a, unsigned depth) {
        size_t path_len = e->path_len;
        char quote[64];
        int r;

        if (!json_object_is_type(a, json_type_array))
                return field_error(e, "expected a list, got %s", json_quote(a, quote));
        if (f->packed)
                return encode_packed(e, f, a);

        for (size_t i = 0; i < json_object_array_length(a); i++) {
                json_object *v = json_object_array_get_idx(a, i);

                r = path_append(e, "[%zu]", i);
                if (r < 0)
                        return r;
                if (!v)
                        return field_error(e, "null is not allowed in a list");
                r = encode_value(e, f, f->number, v, depth, false);
                if (r < 0)
                        return r;
                path_truncate(e, path_len);
        }
        return 0;
}

/* A map key arrives as JSON object key text, whatever the key type. */
static int encode_map_key(Encoder *e, const PbField *kf, const char *key) {
        _cleanup_(json_object_putp) json_object *v = NULL;

        if (kf->type == PB_TYPE_BOOL) {
                if (!streq(key, "true") && !streq(key, "false"))
                        return field_error(e, "a bool map key is \"true\" or \"false\"");
                v = json_object_new_boolean(streq(key, "true"));
        } else
                v = json_object_new_string(key);
        if (!v)
                return -ENOMEM;
        return encode_value(e, kf, 1, v, 0, false);
}

static int encode_map(Encoder *e, const PbField *f, json_object *o, unsigned depth) {
        const PbField *kf = pb_map_key(f), *vf = pb_map_value(f);
        size_t path_len = e->path_len;
        char quote[64];
        int r;

        if (!json_object_is_type(o, json_type_object))
                return field_error(e, "expected an object, got %s", json_quote(o, quote));

        json_object_object_foreach(o, map_key, map_value) {
                size_t start;

                r = path_append(e, "[%s]", map_key);
                if (r < 0)
                        return r;
                if (!map_value)
                        return field_error(e, "null is not allowed as a map value");
                r = put_tag(&e->out, f->number, PB_WIRE_LEN);
                if (r < 0)
                        return r;
                start = e->out.size;
                r = encode_map_key(e, kf, map_key);
                if (r >= 0)
                        r = encode_value(e, vf, 2, map_value, depth, false);
                if (r >= 0)
                        r = put_length_before(&e->out, start);
                if (r < 0)
                        return r;
                path_truncate(e, path_len);
        }
        return 0;
}

static int encode_field(Encoder *e, const PbField *f, json_object *v, unsigned depth) {
        if (f->type == PB_TYPE_GROUP)
                return field_error(e, "groups are not supported");
        if ((f->type == PB_TYPE_MESSAGE && !f->message) ||
            (f->type == PB_TYPE_ENUM && !f->enumeration))
                return field_error(e, "its type %s is not known", f->type_name);
        if (f->map)
                return encode_map(e, f, v, depth);
        if (f->repeated)
                return encode_repeated(e, f, v, depth);
        return encode_value(e, f, f->number, v, depth, field_skips_zero(f));
}

/* Two members of one oneof cannot both be set. */
static int check_oneofs(Encoder *e, const PbMessage *m, const char **keys, json_object **values) {
        _cleanup_free_ int *set = NULL; /* per oneof: the field given for it, or -1 */

        set = malloc(MAX(m->n_oneofs, 1) * sizeof(int));
        if (!set)
                return -ENOMEM;
        for (size_t k = 0; k < m->n_oneofs; k++)
                set[k] = -1;
        for (size_t i = 0; i < m->n_fields; i++) {
                int oneof = m->fields[i].oneof;

                if (oneof < 0 || !values[i])
                        continue;
                if (set[oneof] >= 0)
                        return field_error(e, "\"%s\" and \"%s\" are both set, but only "
                                           "one field of oneof %s can be", keys[set[oneof]],
                                           keys[i], m->oneofs[oneof] ?: "");
                set[oneof] = (int) i;
        }
        return 0;
}

static int encode_message(Encoder *e, const PbMessage *m, json_object *o, unsigned depth) {
        _cleanup_free_ const char **keys = NULL;
        _cleanup_free_ json_object **values = NULL;
        size_t path_len = e->path_len;
        char quote[64];
        int r;

        if (depth > PB_MAX_DEPTH)
                return field_error(e, "nested deeper than %d messages", PB_MAX_DEPTH);
        if (!json_object_is_type(o, json_type_object))
                return field_error(e, "expected an object (%s), got %s", m->full_name,
                                   json_quote(o, quote));

        /* which field each key names: JSON keys are unique, fields given by
         * both names are not */
        keys = calloc(MAX(m->n_fields, 1), sizeof(char *));
        values = calloc(MAX(m->n_fields, 1), sizeof(json_object *));
        if (!keys || !values)
                return -ENOMEM;
        json_object_object_foreach(o, key, value) {
                const PbField *f;
                size_t i;

                if (streq(key, "@unknown"))
                        continue;
                f = pb_message_field_by_name(m, key, strlen(key));
                if (!f) {
                        r = path_push_field(e, key);
                        if (r < 0)
                                return r;
                        return plain_error(e, "unknown field \"%s\" in %s", e->path, m->full_name);
                }
                i = (size_t) (f - m->fields);
                if (keys[i])
                        return plain_error(e, "\"%s\" and \"%s\" in %s are the same field", keys[i],
                                           key, m->full_name);
                keys[i] = key;
                values[i] = value; /* NULL for a JSON null: left unset */
        }
        r = check_oneofs(e, m, keys, values);
        if (r < 0)
                return r;

        for (size_t n = 0; n < m->n_fields; n++) {
                size_t i = (size_t) (m->by_number[n] - m->fields);

                if (!values[i])
                        continue;
                r = path_push_field(e, keys[i]);
                if (r >= 0)
                        r = encode_field(e, &m->fields[i], values[i], depth);
                if (r < 0)
                        return r;
                path_truncate(e, path_len);
        }
        return 0;
}

int pb_encode_json(const PbRegistry *r, const char *type, json_object *json, uint8_t **ret,
                   size_t *ret_size, char **ret_error) {
        _cleanup_(encoder_done) Encoder e = {};
        const PbMessage *m;
        int k;

        if (ret_error)
                *ret_error = NULL;
        if (!r || !type || !ret || !ret_size)
                return -EINVAL;
        m = pb_registry_message(r, type);
        if (!m) {
                k = plain_error(&e, "unknown type %s", type);
                if (ret_error)
                        *ret_error = TAKE_PTR(e.error);
                return k == -EINVAL ? -ENOENT : k;
        }

        k = encode_message(&e, m, json, 0);
        if (k >= 0)
                k = buffer_reserve(&e.out, 1); /* non-NULL for an empty message too */
        if (k < 0) {
                if (ret_error)
                        *ret_error = TAKE_PTR(e.error);
                return k;
        }
        *ret = TAKE_PTR(e.out.data);
        *ret_size = e.out.size;
        return 0;
}
