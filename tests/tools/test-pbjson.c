/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of tools/busdctl/pb-*.c: the registry (from the build's
 * FileDescriptorSets of tests/tools/types.proto and calc.proto, and from
 * hostile hand-made ones), JSON decoding and encoding of every field kind
 * against protobuf-c's own packing, raw decoding, base64, and a fuzz loop
 * that must neither crash nor leak (the suite runs under ASan and valgrind).
 *
 * Expected JSON is compared as compact text: that checks number formatting
 * ("0.1", "-0.0", int64 as strings) and field order, not only values.
 */
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "libbus/macro.h"
#include "tests/lib/tap.h"
#include "tests/tools/types.pb-c.h"
#include "tools/busdctl/pb-json.h"

#define EVERYTHING "pbtest.Everything"
#define RECURSIVE "pbtest.Recursive"

#define streq(a, b) (strcmp((a), (b)) == 0)

static PbRegistry *types; /* tests/tools/types.desc */
static PbRegistry *calc;  /* tests/tools/calc.desc */

static void json_object_putp(json_object **o) {
        json_object_put(*o);
}

static const char *json_text(json_object *o) {
        return json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                         JSON_C_TO_STRING_NOSLASHESCAPE);
}

static char *desc_path(const char *name) {
        char *path;

        if (asprintf(&path, "%s/tests/tools/%s", getenv("BUSD_BUILDDIR"), name) < 0)
                abort();
        return path;
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *size) {
        uint8_t *data = malloc(protobuf_c_message_get_packed_size(m) + 1);

        assert(data);
        *size = protobuf_c_message_pack(m, data);
        return data;
}

/* The compact JSON text of a decoded payload (malloc'd), or NULL and *ret_r. */
static char *decode_text(const PbRegistry *r, const char *type, const uint8_t *data, size_t size,
                         unsigned flags, int *ret_r) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        int k;

        k = pb_decode_json(r, type, data, size, flags, &o);
        if (ret_r)
                *ret_r = k;
        return k < 0 ? NULL : strdup(json_text(o));
}

static bool check_text_at(const char *file, int line, const char *got, const char *expected) {
        if (got && streq(got, expected))
                return true;
        tap_fail_at(file, line, "decoded JSON", "\n#   got      %s\n#   expected %s",
                    got ?: "(error)", expected);
        return false;
}

/* Checks that protobuf-c message m decodes (as type) to the JSON text expected. */
#define check_decode(type, m, flags, expected)                                                  \
        ({                                                                                      \
                size_t _size_;                                                                  \
                _cleanup_free_ uint8_t *_data_ = pack((const ProtobufCMessage *) (m), &_size_); \
                _cleanup_free_ char *_got_ =                                                    \
                        decode_text(types, (type), _data_, _size_, (flags), NULL);              \
                check_text_at(__FILE__, __LINE__, _got_, (expected));                           \
        })

/* Checks that bytes decode (as type) to the JSON text expected. */
#define check_decode_bytes(type, bytes, size, flags, expected)                          \
        ({                                                                              \
                _cleanup_free_ char *_got_ = decode_text(types, (type), (const uint8_t *) (bytes), \
                                                         (size), (flags), NULL);        \
                check_text_at(__FILE__, __LINE__, _got_, (expected));                   \
        })

/* Encodes JSON text as type: the result of pb_encode_json. */
static int encode_text(const PbRegistry *r, const char *type, const char *text, uint8_t **ret,
                       size_t *ret_size, char **ret_error) {
        _cleanup_(json_object_putp) json_object *o = json_tokener_parse(text);

        assert(o || streq(text, "null"));
        return pb_encode_json(r, type, o, ret, ret_size, ret_error);
}

/* Encodes JSON text as an Everything and unpacks it with protobuf-c. */
static Pbtest__Everything *encode_everything(const char *text) {
        _cleanup_free_ uint8_t *data = NULL;
        _cleanup_free_ char *error = NULL;
        Pbtest__Everything *m;
        size_t size;
        int r;

        r = encode_text(types, EVERYTHING, text, &data, &size, &error);
        if (!tap_check_int(r, 0)) {
                tap_diag("%s: %s", text, error ?: "(no message)");
                return NULL;
        }
        m = pbtest__everything__unpack(NULL, size, data);
        tap_check(m);
        return m;
}

/* ---- registry */

static void test_registry_load(void) {
        _cleanup_free_ char *path = desc_path("types.desc");
        const char *input, *output, *service;
        PbRegistry *r;

        tap_check(pb_registry_has_message(types, EVERYTHING));
        tap_check(pb_registry_has_message(types, ".pbtest.Everything"));
        tap_check(pb_registry_has_message(types, "pbtest.Everything.Nested"));
        tap_check(pb_registry_has_message(types, "pbtest.Everything.CountsEntry"));
        tap_check(!pb_registry_has_message(types, "pbtest.Color")); /* an enum */
        tap_check(!pb_registry_has_message(types, "Everything"));
        tap_check(!pb_registry_has_message(types, "pbtest"));
        tap_check(!pb_registry_has_service(types, "pbtest.Everything"));

        /* the same file again adds nothing */
        tap_check_int(pb_registry_add_file(types, path), 0);
        tap_check_int(pb_registry_add_file(types, "/nonexistent/x.desc"), -ENOENT);
        tap_check_int(pb_registry_add_set(types, (const uint8_t *) "\xff", 1), -EBADMSG);

        tap_check(pb_registry_has_service(calc, "example.Calc"));
        tap_check(pb_registry_has_service(calc, ".example.Calc"));
        tap_check_int(
                pb_registry_find_method(calc, "example.Calc", "Add", &input, &output, &service), 0);
        tap_check(streq(input, "example.AddRequest"));
        tap_check(streq(output, "example.AddReply"));
        tap_check(streq(service, "example.Calc"));
        tap_check_int(pb_registry_find_method(calc, NULL, "Divide", &input, NULL, &service), 0);
        tap_check(streq(input, "example.DivideRequest"));
        tap_check(streq(service, "example.Calc"));
        tap_check_int(pb_registry_find_method(calc, "example.Calc", "Nope", NULL, NULL, NULL),
                      -ENOENT);
        tap_check_int(pb_registry_find_method(calc, NULL, "Nope", NULL, NULL, NULL), -ENOENT);
        tap_check_int(pb_registry_find_method(calc, "example.Nope", "Add", NULL, NULL, NULL), -ENXIO);

        /* an empty registry knows nothing */
        tap_check_int(pb_registry_new(&r), 0);
        tap_check(!pb_registry_has_message(r, EVERYTHING));
        tap_check_int(pb_registry_find_method(r, NULL, "Add", NULL, NULL, NULL), -ENOENT);
        tap_check_int(pb_registry_add_set(r, NULL, 0), 0);
        pb_registry_free(r);
        tap_check(!pb_registry_free(NULL));
}

static void test_describe_text(void) {
        const char *const everything[] = { EVERYTHING, NULL };
        const char *const calc_service[] = { "example.Calc", NULL };
        const char *const nope[] = { "pbtest.Nope", NULL };
        _cleanup_free_ char *text = NULL;
        size_t size;
        FILE *f;

        f = open_memstream(&text, &size);
        tap_check_int(pb_registry_describe_text(types, NULL, everything, f), 0);
        fclose(f);
        tap_check(strstr(text, "package pbtest;\n"));
        tap_check(strstr(text, "message Everything {\n  double f_double = 1;\n"));
        tap_check(strstr(text, "  repeated int32 r_int32 = 23;\n"));
        tap_check(strstr(text, "  repeated int32 u_int32 = 41 [packed = false];\n"));
        tap_check(strstr(text, "  pbtest.Everything.Nested.Mood mood = 52;\n"));
        tap_check(strstr(text, "  oneof choice {\n    string choice_text = 60;\n"));
        tap_check(strstr(text, "  map<string, int32> counts = 70;\n"));
        tap_check(strstr(text, "  map<int64, pbtest.Everything.Nested> by_id = 71;\n"));
        tap_check(strstr(text, "  map<bool, pbtest.Color> flags = 72;\n"));
        tap_check(strstr(text, "  string renamed = 81 [json_name = \"otherName\"];\n"));
        tap_check(strstr(text, "  message Nested {\n    int32 id = 1;\n"));
        tap_check(strstr(text, "    enum Mood {\n      MOOD_UNSPECIFIED = 0;\n"));
        tap_check(strstr(text, "message Recursive {\n"));
        tap_check(strstr(text, "enum Color {\n  COLOR_UNSPECIFIED = 0;\n"));
        tap_check(strstr(text, "  COLOR_BLACK = -1;\n}\n"));
        tap_check(!strstr(text, "CountsEntry")); /* shown as map<> */
        free(text);
        text = NULL;

        f = open_memstream(&text, &size);
        tap_check_int(pb_registry_describe_text(calc, calc_service, NULL, f), 0);
        fclose(f);
        tap_check(strstr(
                text,
                "service Calc {\n  rpc Add(example.AddRequest) returns (example.AddReply);\n"));
        tap_check(strstr(text, "message AddRequest {\n  int32 a = 1;\n  int32 b = 2;\n}\n"));
        tap_check(strstr(text, "  map<string, uint64> by_method = 2;\n"));
        tap_check(strstr(text, "enum Unit {\n"));

        f = fopen("/dev/null", "we");
        tap_check_int(pb_registry_describe_text(types, nope, NULL, f), -ENOENT);
        tap_check_int(pb_registry_describe_text(types, NULL, nope, f), -ENOENT);
        tap_check_int(pb_registry_describe_text(types, NULL, NULL, f), 0);
        fclose(f);
}

static bool json_list_has_name(json_object *list, const char *name) {
        for (size_t i = 0; i < json_object_array_length(list); i++) {
                json_object *n;

                if (json_object_object_get_ex(json_object_array_get_idx(list, i), "name", &n) &&
                    streq(json_object_get_string(n), name))
                        return true;
        }
        return false;
}

static void test_describe_json(void) {
        const char *const calc_service[] = { "example.Calc", NULL };
        const char *const mood[] = { "pbtest.Everything.Nested.Mood", NULL };
        _cleanup_(json_object_putp) json_object *o = NULL, *all = NULL, *e = NULL;
        json_object *services, *messages, *enums;

        tap_check_int(pb_registry_describe_json(calc, calc_service, NULL, &o), 0);
        tap_check(json_object_object_get_ex(o, "services", &services));
        tap_check(json_object_object_get_ex(o, "messages", &messages));
        tap_check(json_object_object_get_ex(o, "enums", &enums));
        tap_check(strstr(json_text(services),
                         "{\"name\":\"example.Calc\",\"methods\":[{\"name\":\"Add\","
                         "\"input\":\"example.AddRequest\",\"output\":\"example.AddReply\"}"));
        tap_check(json_list_has_name(messages, "example.StatsReply"));
        tap_check(json_list_has_name(messages, "example.Reading")); /* through StatsReply */
        tap_check(json_list_has_name(enums, "example.Unit"));       /* through Reading */
        tap_check(!json_list_has_name(messages, "example.StatsReply.ByMethodEntry"));
        tap_check(strstr(json_text(messages), "{\"name\":\"by_method\",\"jsonName\":\"byMethod\","
                                              "\"number\":2,\"label\":\"repeated\",\"type\":"
                                              "\"example.StatsReply.ByMethodEntry\",\"map\":"
                                              "{\"key\":\"string\",\"value\":\"uint64\"}}"));

        tap_check_int(pb_registry_describe_json(types, NULL, NULL, &all), 0);
        tap_check(json_object_object_get_ex(all, "messages", &messages));
        tap_check(json_object_object_get_ex(all, "enums", &enums));
        tap_check(json_list_has_name(messages, EVERYTHING));
        tap_check(json_list_has_name(messages, RECURSIVE));
        tap_check(json_list_has_name(messages, "pbtest.Everything.Nested"));
        tap_check(!json_list_has_name(messages, "pbtest.Everything.ByIdEntry"));
        tap_check(json_list_has_name(enums, "pbtest.Color"));
        tap_check(json_list_has_name(enums, "pbtest.Everything.Nested.Mood"));
        tap_check(strstr(json_text(messages),
                         "\"name\":\"choice_text\",\"jsonName\":\"choiceText\","
                         "\"number\":60,\"label\":\"optional\",\"type\":\"string\","
                         "\"oneof\":\"choice\""));

        tap_check_int(pb_registry_describe_json(types, NULL, mood, &e), 0);
        tap_check(streq(json_text(e), "{\"services\":[],\"messages\":[],\"enums\":[{\"name\":"
                                      "\"pbtest.Everything.Nested.Mood\",\"values\":[{\"name\":"
                                      "\"MOOD_UNSPECIFIED\",\"number\":0},{\"name\":\"MOOD_HAPPY\","
                                      "\"number\":1},{\"name\":\"MOOD_GRUMPY\",\"number\":2}]}]}"));
        tap_check_int(pb_registry_describe_json(types, calc_service, NULL, &e), -ENOENT);
}

/* ---- decoding */

static void test_decode_scalars(void) {
        Pbtest__Everything m = PBTEST__EVERYTHING__INIT;
        uint8_t bytes[] = { 0, 1, 2, 0xff };

        m.f_double = 0.1;
        m.f_float = 0.1f;
        m.f_int32 = -1;
        m.f_int64 = INT64_MIN;
        m.f_uint32 = UINT32_MAX;
        m.f_uint64 = UINT64_MAX;
        m.f_sint32 = INT32_MIN;
        m.f_sint64 = INT64_MIN;
        m.f_fixed32 = UINT32_MAX;
        m.f_fixed64 = UINT64_MAX;
        m.f_sfixed32 = INT32_MIN;
        m.f_sfixed64 = INT64_MAX;
        m.f_bool = true;
        m.f_string = "h\xc3\xa9llo";
        m.f_bytes = (ProtobufCBinaryData) { sizeof(bytes), bytes };
        m.f_color = PBTEST__COLOR__COLOR_BLACK;
        check_decode(
                EVERYTHING, &m, 0,
                "{\"fDouble\":0.1,\"fFloat\":0.1,\"fInt32\":-1,\"fInt64\":\"-9223372036854775808\","
                "\"fUint32\":4294967295,\"fUint64\":\"18446744073709551615\","
                "\"fSint32\":-2147483648,\"fSint64\":\"-9223372036854775808\","
                "\"fFixed32\":4294967295,\"fFixed64\":\"18446744073709551615\","
                "\"fSfixed32\":-2147483648,\"fSfixed64\":\"9223372036854775807\",\"fBool\":true,"
                "\"fString\":\"h\xc3\xa9llo\",\"fBytes\":\"AAEC/w==\",\"fColor\":\"COLOR_BLACK\"}");

        m = (Pbtest__Everything) PBTEST__EVERYTHING__INIT;
        m.f_double = DBL_MAX;
        m.f_float = FLT_MAX;
        m.f_int32 = INT32_MAX;
        m.f_int64 = INT64_MAX;
        m.f_sint32 = INT32_MAX;
        m.f_sint64 = INT64_MAX;
        m.f_sfixed32 = INT32_MAX;
        m.f_sfixed64 = INT64_MIN;
        m.f_color = 7; /* no such value: shown as a number */
        check_decode(
                EVERYTHING, &m, 0,
                "{\"fDouble\":1.7976931348623157e+308,\"fFloat\":3.4028235e+38,"
                "\"fInt32\":2147483647,\"fInt64\":\"9223372036854775807\",\"fSint32\":2147483647,"
                "\"fSint64\":\"9223372036854775807\",\"fSfixed32\":2147483647,"
                "\"fSfixed64\":\"-9223372036854775808\",\"fColor\":7}");

        m = (Pbtest__Everything) PBTEST__EVERYTHING__INIT;
        m.f_double = 5e-324;
        m.f_float = -1.5f;
        m.f_sint32 = -1;
        m.f_sint64 = -2;
        check_decode(EVERYTHING, &m, 0,
                     "{\"fDouble\":5e-324,\"fFloat\":-1.5,\"fSint32\":-1,\"fSint64\":\"-2\"}");
}

static void test_decode_negative_int32(void) {
        static const uint8_t wire[] = { 0x18, 0xff, 0xff, 0xff, 0xff, 0xff,
                                        0xff, 0xff, 0xff, 0xff, 0x01 };
        Pbtest__Everything m = PBTEST__EVERYTHING__INIT, *back;
        _cleanup_free_ uint8_t *data = NULL, *ours = NULL;
        size_t size, our_size;

        /* a negative int32 is sign-extended: ten bytes of varint */
        m.f_int32 = -1;
        data = pack(&m.base, &size);
        tap_check_int(size, sizeof(wire));
        tap_check(memcmp(data, wire, sizeof(wire)) == 0);
        check_decode_bytes(EVERYTHING, wire, sizeof(wire), 0, "{\"fInt32\":-1}");

        tap_check_int(encode_text(types, EVERYTHING, "{\"fInt32\":-1}", &ours, &our_size, NULL), 0);
        tap_check_int(our_size, sizeof(wire));
        tap_check(memcmp(ours, wire, sizeof(wire)) == 0);

        /* a 64-bit varint in an int32 field keeps its low 32 bits, as protobuf does */
        check_decode_bytes(EVERYTHING, "\x18\x80\x80\x80\x80\x10", 6, 0, "{\"fInt32\":0}");
        check_decode_bytes(EVERYTHING, "\x18\xff\xff\xff\xff\x0f", 6, 0, "{\"fInt32\":-1}");

        back = encode_everything("{\"fInt32\":-2147483648,\"fSint32\":\"-2147483648\"}");
        if (back) {
                tap_check_int(back->f_int32, INT32_MIN);
                tap_check_int(back->f_sint32, INT32_MIN);
                pbtest__everything__free_unpacked(back, NULL);
        }
}

static void test_decode_special_floats(void) {
        Pbtest__Everything m = PBTEST__EVERYTHING__INIT, *back;

        m.f_double = NAN;
        m.f_float = INFINITY;
        m.n_r_double = 4;
        m.r_double = (double[]) { -INFINITY, -0.0, 0.0, NAN };
        m.n_r_float = 3;
        m.r_float = (float[]) { -0.0f, NAN, -INFINITY };
        check_decode(
                EVERYTHING, &m, 0,
                "{\"fDouble\":\"NaN\",\"fFloat\":\"Infinity\","
                "\"rDouble\":[\"-Infinity\",-0.0,0,\"NaN\"],"
                "\"rFloat\":[-0.0,\"NaN\",\"-Infinity\"]}");

        back = encode_everything(
                "{\"fDouble\":\"NaN\",\"fFloat\":\"-Infinity\","
                "\"rDouble\":[-0.0,\"Infinity\",\"1e3\",2,\"-2.5\"],\"rFloat\":[-0.0,\"NaN\"]}");
        if (back) {
                tap_check(isnan(back->f_double));
                tap_check(isinf(back->f_float) && back->f_float < 0);
                tap_check_int(back->n_r_double, 5);
                tap_check(back->r_double[0] == 0 && signbit(back->r_double[0]));
                tap_check(isinf(back->r_double[1]) && back->r_double[1] > 0);
                tap_check(back->r_double[2] == 1000);
                tap_check(back->r_double[3] == 2);
                tap_check(back->r_double[4] == -2.5);
                tap_check_int(back->n_r_float, 2);
                tap_check(back->r_float[0] == 0 && signbit(back->r_float[0]));
                tap_check(isnan(back->r_float[1]));
                pbtest__everything__free_unpacked(back, NULL);
        }
        /* the shortest text of FLT_MAX reads back a little above it: still a float */
        back = encode_everything("{\"fFloat\":3.4028235e+38}");
        if (back) {
                tap_check(back->f_float == FLT_MAX);
                pbtest__everything__free_unpacked(back, NULL);
        }
}

static void test_decode_repeated(void) {
        Pbtest__Everything m = PBTEST__EVERYTHING__INIT;
        uint8_t ff = 0xff;

        m.n_r_double = 2;
        m.r_double = (double[]) { 1.5, -2 };
        m.n_r_float = 1;
        m.r_float = (float[]) { 0.25f };
        m.n_r_int32 = 3;
        m.r_int32 = (int32_t[]) { -1, 0, 1 };
        m.n_r_int64 = 2;
        m.r_int64 = (int64_t[]) { INT64_MIN, INT64_MAX };
        m.n_r_uint32 = 1;
        m.r_uint32 = (uint32_t[]) { UINT32_MAX };
        m.n_r_uint64 = 2;
        m.r_uint64 = (uint64_t[]) { UINT64_MAX, 0 };
        m.n_r_sint32 = 2;
        m.r_sint32 = (int32_t[]) { -5, 5 };
        m.n_r_sint64 = 1;
        m.r_sint64 = (int64_t[]) { -5 };
        m.n_r_fixed32 = 1;
        m.r_fixed32 = (uint32_t[]) { 7 };
        m.n_r_fixed64 = 1;
        m.r_fixed64 = (uint64_t[]) { 8 };
        m.n_r_sfixed32 = 1;
        m.r_sfixed32 = (int32_t[]) { -9 };
        m.n_r_sfixed64 = 1;
        m.r_sfixed64 = (int64_t[]) { -10 };
        m.n_r_bool = 2;
        m.r_bool = (protobuf_c_boolean[]) { true, false };
        m.n_r_string = 2;
        m.r_string = (char *[]) { "a", "" };
        m.n_r_bytes = 2;
        m.r_bytes = (ProtobufCBinaryData[]) { { 0, NULL }, { 1, &ff } };
        m.n_r_color = 2;
        m.r_color = (Pbtest__Color[]) { PBTEST__COLOR__COLOR_RED, 5 };
        m.n_u_int32 = 2;
        m.u_int32 = (int32_t[]) { -3, 3 };
        m.n_u_sint64 = 1;
        m.u_sint64 = (int64_t[]) { INT64_MIN };
        m.n_u_fixed32 = 1;
        m.u_fixed32 = (uint32_t[]) { 1 };
        m.n_u_double = 1;
        m.u_double = (double[]) { 0.5 };
        m.n_u_color = 1;
        m.u_color = (Pbtest__Color[]) { PBTEST__COLOR__COLOR_GREEN };
        check_decode(
                EVERYTHING, &m, 0,
                "{\"rDouble\":[1.5,-2],\"rFloat\":[0.25],\"rInt32\":[-1,0,1],"
                "\"rInt64\":[\"-9223372036854775808\",\"9223372036854775807\"],"
                "\"rUint32\":[4294967295],\"rUint64\":[\"18446744073709551615\",\"0\"],"
                "\"rSint32\":[-5,5],\"rSint64\":[\"-5\"],\"rFixed32\":[7],\"rFixed64\":[\"8\"],"
                "\"rSfixed32\":[-9],\"rSfixed64\":[\"-10\"],\"rBool\":[true,false],"
                "\"rString\":[\"a\",\"\"],\"rBytes\":[\"\",\"/w==\"],\"rColor\":[\"COLOR_RED\",5],"
                "\"uInt32\":[-3,3],\"uSint64\":[\"-9223372036854775808\"],\"uFixed32\":[1],"
                "\"uDouble\":[0.5],\"uColor\":[\"COLOR_GREEN\"]}");
}

static void test_decode_packed_and_unpacked(void) {
        /* r_int32 (23) packed, then unpacked, then packed again: one list */
        static const uint8_t mixed[] = { 0xba, 0x01, 0x02, 0x01, 0x02, 0xb8, 0x01, 0x03,
                                         0xba, 0x01, 0x01, 0x04 };
        /* u_int32 (41) is [packed = false] but must read packed too */
        static const uint8_t packed_u[] = { 0xca, 0x02, 0x02, 0x05, 0x06, 0xc8, 0x02, 0x07 };
        /* r_fixed32 (29) packed, r_double (21) unpacked */
        static const uint8_t fixed[] = { 0xea, 0x01, 0x08, 1, 0, 0, 0, 2, 0, 0, 0,
                                         0xa9, 0x01, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f };
        _cleanup_free_ uint8_t *data = NULL;
        Pbtest__Everything *back;
        size_t size;
        int r;

        check_decode_bytes(EVERYTHING, mixed, sizeof(mixed), 0, "{\"rInt32\":[1,2,3,4]}");
        check_decode_bytes(EVERYTHING, packed_u, sizeof(packed_u), 0, "{\"uInt32\":[5,6,7]}");
        check_decode_bytes(EVERYTHING, fixed, sizeof(fixed), 0,
                           "{\"rDouble\":[1],\"rFixed32\":[1,2]}");
        /* a packed run of fixed32 that is not a multiple of four */
        tap_check(!decode_text(types, EVERYTHING, (const uint8_t *) "\xea\x01\x03\x01\x00\x00", 6,
                               0, &r));
        tap_check_int(r, -EBADMSG);

        back = pbtest__everything__unpack(NULL, sizeof(mixed), mixed);
        tap_check(back && back->n_r_int32 == 4);
        pbtest__everything__free_unpacked(back, NULL);

        /* we write proto3's packed form, but not for [packed = false] */
        tap_check_int(encode_text(types, EVERYTHING, "{\"rInt32\":[1,2],\"uInt32\":[3,4]}", &data,
                                  &size, NULL), 0);
        tap_check(size == 11 &&
                  memcmp(data, "\xba\x01\x02\x01\x02\xc8\x02\x03\xc8\x02\x04", 11) == 0);
}

static void test_decode_nested(void) {
        Pbtest__Everything m = PBTEST__EVERYTHING__INIT;
        Pbtest__Everything__Nested n = PBTEST__EVERYTHING__NESTED__INIT,
                                   n1 = PBTEST__EVERYTHING__NESTED__INIT,
                                   n2 = PBTEST__EVERYTHING__NESTED__INIT;
        Pbtest__Recursive t = PBTEST__RECURSIVE__INIT, c = PBTEST__RECURSIVE__INIT,
                          c1 = PBTEST__RECURSIVE__INIT, c2 = PBTEST__RECURSIVE__INIT;

        n.id = 7;
        n.mood = PBTEST__EVERYTHING__NESTED__MOOD__MOOD_GRUMPY;
        n1.id = 1;
        m.nested = &n;
        m.n_nesteds = 2;
        m.nesteds = (Pbtest__Everything__Nested *[]) { &n1, &n2 };
        m.mood = PBTEST__EVERYTHING__NESTED__MOOD__MOOD_HAPPY;
        t.depth = 1;
        t.child = &c;
        c.depth = 2;
        c.n_children = 2;
        c.children = (Pbtest__Recursive *[]) { &c1, &c2 };
        c1.depth = 3;
        m.tree = &t;
        check_decode(EVERYTHING, &m, 0,
                     "{\"nested\":{\"id\":7,\"mood\":\"MOOD_GRUMPY\"},\"nesteds\":[{\"id\":1},{}],"
                     "\"mood\":\"MOOD_HAPPY\",\"tree\":{\"depth\":1,\"child\":{\"depth\":2,"
                     "\"children\":[{\"depth\":3},{}]}}}");
}

/* A chain of n Recursive messages, each the child of the one before. */
static uint8_t *recursive_chain(size_t n, size_t *size) {
        Pbtest__Recursive *chain = calloc(n, sizeof(Pbtest__Recursive));
        uint8_t *data;

        assert(chain);
        for (size_t i = 0; i < n; i++) {
                pbtest__recursive__init(&chain[i]);
                chain[i].depth = (int32_t) i;
                chain[i].child = i + 1 < n ? &chain[i + 1] : NULL;
        }
        data = pack(&chain[0].base, size);
        free(chain);
        return data;
}

/* {"child": {"child": ... {}}} with n objects. */
static json_object *recursive_json(size_t n) {
        json_object *o = json_object_new_object();

        for (size_t i = 1; i < n; i++) {
                json_object *parent = json_object_new_object();

                json_object_object_add(parent, "child", o);
                o = parent;
        }
        return o;
}

static void test_depth_limit(void) {
        _cleanup_free_ uint8_t *ok = NULL, *deep = NULL, *bytes = NULL;
        _cleanup_(json_object_putp) json_object *o = NULL, *raw = NULL, *j_ok = NULL, *j_deep = NULL;
        _cleanup_free_ char *error = NULL;
        size_t ok_size, deep_size, size;

        /* the outermost message is at depth 0, and PB_MAX_DEPTH more fit */
        ok = recursive_chain(PB_MAX_DEPTH + 1, &ok_size);
        deep = recursive_chain(PB_MAX_DEPTH + 2, &deep_size);
        tap_check_int(pb_decode_json(types, RECURSIVE, ok, ok_size, 0, &o), 0);
        tap_check_int(pb_decode_json(types, RECURSIVE, deep, deep_size, 0, &o), -EBADMSG);
        tap_check_int(pb_decode_json(types, RECURSIVE, deep, deep_size, PB_DECODE_DEFAULTS, &o),
                      -EBADMSG);
        tap_check_int(pb_decode_raw_json(deep, deep_size, &raw), 0); /* stops guessing, no error */

        j_ok = recursive_json(PB_MAX_DEPTH + 1);
        j_deep = recursive_json(PB_MAX_DEPTH + 2);
        tap_check_int(pb_encode_json(types, RECURSIVE, j_ok, &bytes, &size, NULL), 0);
        free(bytes);
        bytes = NULL;
        tap_check_int(pb_encode_json(types, RECURSIVE, j_deep, &bytes, &size, &error), -EINVAL);
        tap_check(error && strstr(error, "nested deeper than"));
}

static void test_decode_maps(void) {
        Pbtest__Everything m = PBTEST__EVERYTHING__INIT;
        Pbtest__Everything__CountsEntry c1 = PBTEST__EVERYTHING__COUNTS_ENTRY__INIT,
                                        c2 = PBTEST__EVERYTHING__COUNTS_ENTRY__INIT;
        Pbtest__Everything__ByIdEntry b1 = PBTEST__EVERYTHING__BY_ID_ENTRY__INIT,
                                      b2 = PBTEST__EVERYTHING__BY_ID_ENTRY__INIT;
        Pbtest__Everything__FlagsEntry f1 = PBTEST__EVERYTHING__FLAGS_ENTRY__INIT,
                                       f2 = PBTEST__EVERYTHING__FLAGS_ENTRY__INIT;
        Pbtest__Everything__Nested n = PBTEST__EVERYTHING__NESTED__INIT;

        c1.key = "a";
        c1.value = 1;
        c2.key = "b";
        c2.value = -2;
        m.n_counts = 2;
        m.counts = (Pbtest__Everything__CountsEntry *[]) { &c1, &c2 };
        n.id = 1;
        n.label = "x";
        n.mood = PBTEST__EVERYTHING__NESTED__MOOD__MOOD_HAPPY;
        b1.key = -5;
        b1.value = &n;
        b2.key = INT64_MAX;
        m.n_by_id = 2;
        m.by_id = (Pbtest__Everything__ByIdEntry *[]) { &b1, &b2 };
        f1.key = true;
        f1.value = PBTEST__COLOR__COLOR_RED;
        m.n_flags = 2;
        m.flags = (Pbtest__Everything__FlagsEntry *[]) { &f1, &f2 };
        check_decode(EVERYTHING, &m, 0,
                     "{\"counts\":{\"a\":1,\"b\":-2},\"byId\":{\"-5\":{\"id\":1,\"label\":\"x\","
                     "\"mood\":\"MOOD_HAPPY\"},\"9223372036854775807\":{}},"
                     "\"flags\":{\"true\":\"COLOR_RED\",\"false\":\"COLOR_UNSPECIFIED\"}}");

        /* entries without key or value, and a key given twice: the last wins */
        check_decode_bytes(EVERYTHING,
                           "\xb2\x04\x00\xb2\x04\x03\x0a\x01k\xb2\x04\x05\x0a\x01k\x10\x09", 17, 0,
                           "{\"counts\":{\"\":0,\"k\":9}}");
        /* a map entry with a field it does not declare: ignored */
        check_decode_bytes(EVERYTHING, "\xb2\x04\x04\x18\x01\x10\x02", 7, 0, "{\"counts\":{\"\":2}}");
}

static void test_encode_maps(void) {
        Pbtest__Everything *back;

        back = encode_everything("{\"counts\":{\"a\":1,\"b\":\"-2\",\"\":0},"
                                 "\"byId\":{\"-9223372036854775808\":{\"id\":3},\"7\":{}},"
                                 "\"flags\":{\"false\":\"COLOR_GREEN\",\"true\":1}}");
        if (!back)
                return;
        tap_check_int(back->n_counts, 3);
        tap_check(back->n_counts == 3 && streq(back->counts[0]->key, "a") &&
                  back->counts[0]->value == 1 && streq(back->counts[1]->key, "b") &&
                  back->counts[1]->value == -2 && streq(back->counts[2]->key, ""));
        tap_check(back->n_by_id == 2 && back->by_id[0]->key == INT64_MIN && back->by_id[0]->value &&
                  back->by_id[0]->value->id == 3 && back->by_id[1]->key == 7 &&
                  back->by_id[1]->value);
        tap_check(back->n_flags == 2 && !back->flags[0]->key &&
                  back->flags[0]->value == PBTEST__COLOR__COLOR_GREEN && back->flags[1]->key &&
                  back->flags[1]->value == PBTEST__COLOR__COLOR_RED);
        pbtest__everything__free_unpacked(back, NULL);
}

static void test_oneof(void) {
        Pbtest__Everything m = PBTEST__EVERYTHING__INIT, *back;
        Pbtest__Everything__Nested n = PBTEST__EVERYTHING__NESTED__INIT;

        /* a oneof member is present even at zero */
        m.choice_case = PBTEST__EVERYTHING__CHOICE_CHOICE_NUMBER;
        m.choice_number = 0;
        check_decode(EVERYTHING, &m, 0, "{\"choiceNumber\":0}");
        m.choice_case = PBTEST__EVERYTHING__CHOICE_CHOICE_NESTED;
        m.choice_nested = &n;
        check_decode(EVERYTHING, &m, 0, "{\"choiceNested\":{}}");

        /* the last member on the wire wins */
        check_decode_bytes(EVERYTHING, "\xe2\x03\x01" "a\xe8\x03\x05", 7, 0, "{\"choiceNumber\":5}");
        check_decode_bytes(EVERYTHING,
                           "\xe8\x03\x05\xe2\x03\x01"
                           "a",
                           7, 0, "{\"choiceText\":\"a\"}");
        /* a member set again after another starts over: no merge with the old one */
        check_decode_bytes(EVERYTHING,
                           "\xe2\x03\x01"
                           "a\xf2\x03\x02\x08\x01\xe8\x03\x05\xf2\x03\x02\x18\x02",
                           17, 0, "{\"choiceNested\":{\"mood\":\"MOOD_GRUMPY\"}}");

        back = encode_everything("{\"choiceNumber\":0,\"choiceText\":null}");
        if (back) {
                tap_check_int(back->choice_case, PBTEST__EVERYTHING__CHOICE_CHOICE_NUMBER);
                pbtest__everything__free_unpacked(back, NULL);
        }
        back = encode_everything("{\"choiceNested\":{\"id\":4}}");
        if (back) {
                tap_check_int(back->choice_case, PBTEST__EVERYTHING__CHOICE_CHOICE_NESTED);
                tap_check(back->choice_nested && back->choice_nested->id == 4);
                pbtest__everything__free_unpacked(back, NULL);
        }
}

static void test_merge(void) {
        /* a singular message given three times merges; a scalar's last value wins */
        check_decode_bytes(EVERYTHING,
                           "\x92\x03\x02\x08\x01\x92\x03\x03\x12\x01x\x92\x03\x02\x08\x02", 16, 0,
                           "{\"nested\":{\"id\":2,\"label\":\"x\"}}");
        check_decode_bytes(EVERYTHING, "\x18\x01\x18\x02", 4, 0, "{\"fInt32\":2}");
        /* merging reaches into nested messages too */
        check_decode_bytes(RECURSIVE, "\x12\x02\x08\x01\x12\x04\x12\x02\x08\x05\x12\x02\x12\x00",
                           14, 0, "{\"child\":{\"depth\":1,\"child\":{\"depth\":5}}}");
}

static void test_defaults(void) {
        Pbtest__Everything m = PBTEST__EVERYTHING__INIT;
        Pbtest__Everything__Nested n = PBTEST__EVERYTHING__NESTED__INIT;
        Pbtest__Recursive r = PBTEST__RECURSIVE__INIT;
        _cleanup_free_ char *got = NULL;

        check_decode(EVERYTHING, &m, 0, "{}");
        check_decode(
                EVERYTHING, &m, PB_DECODE_DEFAULTS,
                "{\"fDouble\":0,\"fFloat\":0,\"fInt32\":0,\"fInt64\":\"0\",\"fUint32\":0,"
                "\"fUint64\":\"0\","
                "\"fSint32\":0,\"fSint64\":\"0\",\"fFixed32\":0,\"fFixed64\":\"0\",\"fSfixed32\":0,"
                "\"fSfixed64\":\"0\",\"fBool\":false,\"fString\":\"\",\"fBytes\":\"\","
                "\"fColor\":\"COLOR_UNSPECIFIED\",\"rDouble\":[],\"rFloat\":[],\"rInt32\":[],"
                "\"rInt64\":[],\"rUint32\":[],\"rUint64\":[],\"rSint32\":[],\"rSint64\":[],"
                "\"rFixed32\":[],\"rFixed64\":[],\"rSfixed32\":[],\"rSfixed64\":[],\"rBool\":[],"
                "\"rString\":[],\"rBytes\":[],\"rColor\":[],\"uInt32\":[],\"uSint64\":[],"
                "\"uFixed32\":[],\"uDouble\":[],\"uColor\":[],\"nesteds\":[],"
                "\"mood\":\"MOOD_UNSPECIFIED\",\"counts\":{},\"byId\":{},\"flags\":{},"
                "\"otherName\":\"\",\"oddName2x\":0}");
        check_decode(RECURSIVE, &r, PB_DECODE_DEFAULTS, "{\"depth\":0,\"children\":[]}");
        /* a message that is there shows its defaults; one that is not, nothing */
        m.nested = &n;
        {
                size_t size;
                _cleanup_free_ uint8_t *data = pack(&m.base, &size);

                got = decode_text(types, EVERYTHING, data, size, PB_DECODE_DEFAULTS, NULL);
        }
        tap_check(
                got &&
                strstr(got, "\"nested\":{\"id\":0,\"label\":\"\",\"mood\":\"MOOD_UNSPECIFIED\"}"));
        tap_check(got && !strstr(got, "tree") && !strstr(got, "choice"));
}

static void test_unknown_fields(void) {
        static const uint8_t wire[] = {
                0x18, 0x05,                         /* fInt32: 5 */
                0xc0, 0x3e, 0x01,                   /* 1000: varint 1 */
                0xca, 0x3e, 0x02, 'h', 'i',         /* 1001: "hi" */
                0xd5, 0x3e, 0x05, 0x00, 0x00, 0x00, /* 1002: fixed32 5 */
                0xc0, 0x3e, 0x02,                   /* 1000 again */
                0xdb, 0x3e, 0x08, 0x07, 0xdc, 0x3e, /* 1003: a group holding 1: 7 */
                0xd1, 0x3e, 1, 0, 0, 0, 0, 0, 0, 0, /* 1002 as fixed64 */
        };
        _cleanup_free_ uint8_t *data = NULL;
        size_t size;

        check_decode_bytes(
                EVERYTHING, wire, sizeof(wire), 0,
                "{\"fInt32\":5,\"@unknown\":{\"1000\":[1,2],\"1001\":\"aGk=\",\"1002\":[5,1],"
                "\"1003\":{\"1\":7}}}");
        /* inside a nested message too */
        check_decode_bytes(EVERYTHING, "\x92\x03\x05\x08\x01\x98\x06\x03", 8, 0,
                           "{\"nested\":{\"id\":1,\"@unknown\":{\"99\":3}}}");
        /* what the decoder shows can be sent back: "@unknown" is skipped */
        tap_check_int(encode_text(types, EVERYTHING, "{\"fInt32\":5,\"@unknown\":{\"1000\":1}}",
                                  &data, &size, NULL),
                      0);
        tap_check(size == 2 && memcmp(data, "\x18\x05", 2) == 0);
}

static void test_utf8(void) {
        _cleanup_free_ uint8_t *data = NULL;
        _cleanup_free_ char *error = NULL;
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        size_t size;

        check_decode_bytes(EVERYTHING,
                           "\x72\x03"
                           "a\xff"
                           "b",
                           5, 0,
                           "{\"fString\":\"a\xef\xbf\xbd"
                           "b\"}");
        /* a cut sequence is one U+FFFD, an overlong or a surrogate one per byte */
        check_decode_bytes(EVERYTHING,
                           "\x72\x03\xe2\x82"
                           "c",
                           5, 0,
                           "{\"fString\":\"\xef\xbf\xbd"
                           "c\"}");
        check_decode_bytes(EVERYTHING, "\x72\x02\xc0\xaf", 4, 0,
                           "{\"fString\":\"\xef\xbf\xbd\xef\xbf\xbd\"}");
        check_decode_bytes(EVERYTHING, "\x72\x03\xed\xa0\x80", 5, 0,
                           "{\"fString\":\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"}");
        check_decode_bytes(EVERYTHING, "\x72\x04\xf0\x9f\x98\x80", 6, 0,
                           "{\"fString\":\"\xf0\x9f\x98\x80\"}");
        check_decode_bytes(EVERYTHING, "\x72\x04\xf4\x90\x80\x80", 6, 0,
                           "{\"fString\":\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"}");
        /* a NUL is a character like another */
        check_decode_bytes(EVERYTHING, "\x72\x03" "a\0b", 5, 0, "{\"fString\":\"a\\u0000b\"}");

        json_object_object_add(o, "fString", json_object_new_string_len("a\xff", 2));
        tap_check_int(pb_encode_json(types, EVERYTHING, o, &data, &size, &error), -EINVAL);
        tap_check(error && strstr(error, "field \"fString\": the string is not valid UTF-8"));
}

static void test_enums(void) {
        Pbtest__Everything *back;
        _cleanup_free_ uint8_t *data = NULL;
        _cleanup_free_ char *error = NULL;
        size_t size;

        check_decode_bytes(EVERYTHING, "\x80\x01\x01", 3, 0, "{\"fColor\":\"COLOR_RED\"}");
        check_decode_bytes(EVERYTHING, "\x80\x01\x07", 3, 0, "{\"fColor\":7}");
        check_decode_bytes(EVERYTHING, "\x80\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12, 0,
                           "{\"fColor\":\"COLOR_BLACK\"}");
        check_decode_bytes(EVERYTHING, "\xa0\x03\x02", 3, 0, "{\"mood\":\"MOOD_GRUMPY\"}");

        back = encode_everything("{\"fColor\":\"COLOR_GREEN\",\"mood\":\"MOOD_HAPPY\",\"rColor\":"
                                 "[\"COLOR_BLACK\",2,\"1\",99,-7,\"COLOR_UNSPECIFIED\"]}");
        if (back) {
                tap_check_int(back->f_color, PBTEST__COLOR__COLOR_GREEN);
                tap_check_int(back->mood, PBTEST__EVERYTHING__NESTED__MOOD__MOOD_HAPPY);
                tap_check(back->n_r_color == 6 && back->r_color[0] == -1 && back->r_color[1] == 2 &&
                          back->r_color[2] == 1 && (int) back->r_color[3] == 99 &&
                          (int) back->r_color[4] == -7 && back->r_color[5] == 0);
                pbtest__everything__free_unpacked(back, NULL);
        }
        tap_check_int(
                encode_text(types, EVERYTHING, "{\"mood\":\"COLOR_RED\"}", &data, &size, &error),
                -EINVAL);
        tap_check(error && strstr(error, "field \"mood\": \"COLOR_RED\" is not a value of "
                                         "pbtest.Everything.Nested.Mood"));
}

static void test_json_names(void) {
        Pbtest__Everything m = PBTEST__EVERYTHING__INIT, *back;
        _cleanup_free_ uint8_t *data = NULL;
        _cleanup_free_ char *error = NULL;
        size_t size;

        m.renamed = "r";
        m.odd__name_2x = 3;
        m.f_int32 = 1;
        check_decode(EVERYTHING, &m, 0, "{\"fInt32\":1,\"otherName\":\"r\",\"oddName2x\":3}");

        /* input takes either name */
        back = encode_everything(
                "{\"f_int32\":1,\"renamed\":\"r\",\"odd__name_2x\":3,\"fString\":\"s\"}");
        if (back) {
                tap_check(back->f_int32 == 1 && streq(back->renamed, "r") &&
                          back->odd__name_2x == 3 && streq(back->f_string, "s"));
                pbtest__everything__free_unpacked(back, NULL);
        }
        tap_check_int(encode_text(types, EVERYTHING, "{\"renamed\":\"a\",\"otherName\":\"b\"}", &data,
                                  &size, &error), -EINVAL);
        tap_check(error && strstr(error, "are the same field"));
}

/* An Everything with every field set, and the storage it points into. */
typedef struct Full {
        Pbtest__Everything m;
        Pbtest__Everything__Nested nested, n1, n2, choice;
        Pbtest__Everything__CountsEntry c1, c2;
        Pbtest__Everything__ByIdEntry b1, b2;
        Pbtest__Everything__FlagsEntry f1;
        Pbtest__Recursive tree, child;
        Pbtest__Everything__Nested *nesteds[2];
        Pbtest__Everything__CountsEntry *counts[2];
        Pbtest__Everything__ByIdEntry *by_id[2];
        Pbtest__Everything__FlagsEntry *flags[1];
        uint8_t bytes[3];
} Full;

static void full_init(Full *x) {
        static double r_double[] = { 1.25, -1e-300, 0 };
        static float r_float[] = { 3.5f, -0.0f };
        static int32_t r_int32[] = { INT32_MIN, -1, INT32_MAX };
        static int64_t r_int64[] = { INT64_MIN, 1 };
        static uint32_t r_uint32[] = { 0, UINT32_MAX };
        static uint64_t r_uint64[] = { UINT64_MAX };
        static int32_t r_sint32[] = { -1, 1, INT32_MIN };
        static int64_t r_sint64[] = { INT64_MIN, INT64_MAX };
        static uint32_t r_fixed32[] = { 1, UINT32_MAX };
        static uint64_t r_fixed64[] = { UINT64_MAX, 2 };
        static int32_t r_sfixed32[] = { INT32_MIN };
        static int64_t r_sfixed64[] = { INT64_MIN, -1 };
        static protobuf_c_boolean r_bool[] = { true, true, false };
        static char *r_string[] = { "", "\xe2\x82\xac", "two words" };
        static Pbtest__Color r_color[] = { PBTEST__COLOR__COLOR_BLACK, PBTEST__COLOR__COLOR_RED };
        static int32_t u_int32[] = { -100, 100 };
        static int64_t u_sint64[] = { -3 };
        static uint32_t u_fixed32[] = { 9, 10 };
        static double u_double[] = { 2.5 };
        static Pbtest__Color u_color[] = { PBTEST__COLOR__COLOR_GREEN,
                                           PBTEST__COLOR__COLOR_UNSPECIFIED };

        *x = (Full) { .m = PBTEST__EVERYTHING__INIT, .bytes = { 0xfb, 0xff, 0x00 } };
        pbtest__everything__nested__init(&x->nested);
        pbtest__everything__nested__init(&x->n1);
        pbtest__everything__nested__init(&x->n2);
        pbtest__everything__nested__init(&x->choice);
        pbtest__everything__counts_entry__init(&x->c1);
        pbtest__everything__counts_entry__init(&x->c2);
        pbtest__everything__by_id_entry__init(&x->b1);
        pbtest__everything__by_id_entry__init(&x->b2);
        pbtest__everything__flags_entry__init(&x->f1);
        pbtest__recursive__init(&x->tree);
        pbtest__recursive__init(&x->child);

        x->m.f_double = -123.456;
        x->m.f_float = 1e-10f;
        x->m.f_int32 = -42;
        x->m.f_int64 = -4200000000000;
        x->m.f_uint32 = 42;
        x->m.f_uint64 = 4200000000000;
        x->m.f_sint32 = -7;
        x->m.f_sint64 = -70000000000;
        x->m.f_fixed32 = 77;
        x->m.f_fixed64 = 7700000000000;
        x->m.f_sfixed32 = -777;
        x->m.f_sfixed64 = -77700000000000;
        x->m.f_bool = true;
        x->m.f_string = "quote \" backslash \\ slash / tab \t";
        x->m.f_bytes = (ProtobufCBinaryData) { sizeof(x->bytes), x->bytes };
        x->m.f_color = PBTEST__COLOR__COLOR_GREEN;
#define SET_ARRAY(field) (x->m.n_##field = ELEMENTSOF(field), x->m.field = field)
        SET_ARRAY(r_double);
        SET_ARRAY(r_float);
        SET_ARRAY(r_int32);
        SET_ARRAY(r_int64);
        SET_ARRAY(r_uint32);
        SET_ARRAY(r_uint64);
        SET_ARRAY(r_sint32);
        SET_ARRAY(r_sint64);
        SET_ARRAY(r_fixed32);
        SET_ARRAY(r_fixed64);
        SET_ARRAY(r_sfixed32);
        SET_ARRAY(r_sfixed64);
        SET_ARRAY(r_bool);
        SET_ARRAY(r_string);
        SET_ARRAY(r_color);
        SET_ARRAY(u_int32);
        SET_ARRAY(u_sint64);
        SET_ARRAY(u_fixed32);
        SET_ARRAY(u_double);
        SET_ARRAY(u_color);
#undef SET_ARRAY
        x->m.n_r_bytes = 1;
        x->m.r_bytes = &x->m.f_bytes;

        x->nested.id = 5;
        x->nested.label = "five";
        x->nested.mood = PBTEST__EVERYTHING__NESTED__MOOD__MOOD_HAPPY;
        x->m.nested = &x->nested;
        x->n1.id = -1;
        x->n2.label = "2";
        x->m.n_nesteds = 2;
        x->nesteds[0] = &x->n1;
        x->nesteds[1] = &x->n2;
        x->m.nesteds = x->nesteds;
        x->m.mood = PBTEST__EVERYTHING__NESTED__MOOD__MOOD_GRUMPY;
        x->choice.mood = PBTEST__EVERYTHING__NESTED__MOOD__MOOD_GRUMPY;
        x->m.choice_case = PBTEST__EVERYTHING__CHOICE_CHOICE_NESTED;
        x->m.choice_nested = &x->choice;
        x->c1.key = "one";
        x->c1.value = 1;
        x->c2.key = "minus";
        x->c2.value = -1;
        x->m.n_counts = 2;
        x->counts[0] = &x->c1;
        x->counts[1] = &x->c2;
        x->m.counts = x->counts;
        x->b1.key = INT64_MIN;
        x->b1.value = &x->n1;
        x->b2.key = 12;
        x->b2.value = &x->n2;
        x->m.n_by_id = 2;
        x->by_id[0] = &x->b1;
        x->by_id[1] = &x->b2;
        x->m.by_id = x->by_id;
        x->f1.key = true;
        x->f1.value = PBTEST__COLOR__COLOR_BLACK;
        x->m.n_flags = 1;
        x->flags[0] = &x->f1;
        x->m.flags = x->flags;
        x->tree.depth = 1;
        x->tree.child = &x->child;
        x->child.depth = 2;
        x->m.tree = &x->tree;
        x->m.renamed = "renamed";
        x->m.odd__name_2x = 2;
}

/* protobuf-c bytes → JSON → our bytes → protobuf-c → the same bytes again. */
static void check_round_trip(const ProtobufCMessage *m, const char *type, unsigned flags) {
        _cleanup_(json_object_putp) json_object *o = NULL, *reparsed = NULL;
        _cleanup_free_ uint8_t *original = NULL, *ours = NULL, *again = NULL;
        _cleanup_free_ char *error = NULL;
        size_t original_size, our_size, again_size;
        ProtobufCMessage *back;

        original = pack(m, &original_size);
        if (!tap_check_int(pb_decode_json(types, type, original, original_size, flags, &o), 0))
                return;
        /* through text, as a user would edit it */
        reparsed = json_tokener_parse(json_text(o));
        if (!tap_check(reparsed))
                return;
        if (!tap_check_int(pb_encode_json(types, type, reparsed, &ours, &our_size, &error), 0)) {
                tap_diag("%s", error);
                return;
        }
        back = protobuf_c_message_unpack(m->descriptor, NULL, our_size, ours);
        if (!tap_check(back))
                return;
        again = pack(back, &again_size);
        protobuf_c_message_free_unpacked(back, NULL);
        if (!tap_check(again_size == original_size && memcmp(again, original, original_size) == 0))
                tap_diag("%s", json_text(o));
}

static void test_round_trip(void) {
        Pbtest__Everything empty = PBTEST__EVERYTHING__INIT;
        Full x;

        full_init(&x);
        check_round_trip(&x.m.base, EVERYTHING, 0);
        check_round_trip(&x.m.base, EVERYTHING, PB_DECODE_DEFAULTS);
        check_round_trip(&empty.base, EVERYTHING, 0);
        check_round_trip(&empty.base, EVERYTHING, PB_DECODE_DEFAULTS);
        x.m.choice_case = PBTEST__EVERYTHING__CHOICE_CHOICE_TEXT;
        x.m.choice_text = "";
        check_round_trip(&x.m.base, EVERYTHING, 0);
        check_round_trip(&x.tree.base, RECURSIVE, 0);
}

static void test_encode_errors(void) {
        static const struct {
                const char *json, *error;
        } cases[] = {
                { "{\"nope\":1}", "unknown field \"nope\" in pbtest.Everything" },
                { "{\"fInt32\":\"x\"}", "field \"fInt32\": expected an integer, got \"x\"" },
                { "{\"fInt32\":2147483648}",
                  "field \"fInt32\": 2147483648 is out of range for int32" },
                { "{\"fInt32\":-2147483649}", "out of range for int32" },
                { "{\"fSint32\":\"2147483648\"}", "out of range for sint32" },
                { "{\"fSfixed32\":-2147483649}", "out of range for sfixed32" },
                { "{\"fUint32\":-1}", "field \"fUint32\": -1 is out of range for uint32" },
                { "{\"fUint32\":4294967296}", "out of range for uint32" },
                { "{\"fFixed32\":\"4294967296\"}", "out of range for fixed32" },
                { "{\"fUint64\":\"-1\"}", "out of range for uint64" },
                { "{\"fInt64\":\"9223372036854775808\"}", "out of range for int64" },
                { "{\"fSint64\":\"-9223372036854775809\"}", "out of range for sint64" },
                { "{\"fUint64\":\"18446744073709551616\"}", "out of range for uint64" },
                { "{\"fUint64\":1e20}", "out of range for uint64" },
                { "{\"fInt32\":1.5}", "field \"fInt32\": expected an integer, got 1.5" },
                { "{\"fInt64\":\"12abc\"}", "expected an integer" },
                { "{\"fInt64\":\" 12\"}", "expected an integer" },
                { "{\"fInt32\":true}", "expected an integer, got true" },
                { "{\"fBytes\":\"!!!!\"}", "field \"fBytes\": \"!!!!\" is not base64" },
                { "{\"fBytes\":\"QUJD=\"}", "is not base64" },
                { "{\"fBytes\":5}", "expected a string" },
                { "{\"fBool\":1}", "field \"fBool\": expected true or false, got 1" },
                { "{\"fBool\":\"true\"}", "expected true or false" },
                { "{\"fString\":5}", "field \"fString\": expected a string, got 5" },
                { "{\"fColor\":\"COLOR_NOPE\"}", "\"COLOR_NOPE\" is not a value of pbtest.Color" },
                { "{\"fColor\":2147483648}", "out of range for an enum" },
                { "{\"fColor\":[]}", "expected a name or number of pbtest.Color" },
                { "{\"fFloat\":1e39}", "field \"fFloat\": 1e39 is out of range for float" },
                { "{\"fFloat\":\"-3.4028236e38\"}", "out of range for float" },
                { "{\"fDouble\":\"abc\"}", "field \"fDouble\": expected a number, got \"abc\"" },
                { "{\"fDouble\":\"inf\"}", "expected a number" },
                { "{\"fDouble\":{}}", "expected a number" },
                { "{\"rInt32\":5}", "field \"rInt32\": expected a list, got 5" },
                { "{\"rInt32\":[1,null]}", "field \"rInt32[1]\": null is not allowed" },
                { "{\"rInt32\":[1,\"x\"]}", "field \"rInt32[1]\": expected an integer" },
                { "{\"uInt32\":[1,\"x\"]}", "field \"uInt32[1]\": expected an integer" },
                { "{\"nesteds\":[{\"id\":1},{\"id\":true}]}",
                  "field \"nesteds[1].id\": expected an integer" },
                { "{\"nested\":{\"id\":\"x\"}}", "field \"nested.id\": expected an integer" },
                { "{\"nested\":5}",
                  "field \"nested\": expected an object (pbtest.Everything.Nested), got 5" },
                { "{\"nested\":{\"nope\":1}}",
                  "unknown field \"nested.nope\" in pbtest.Everything.Nested" },
                { "{\"tree\":{\"child\":{\"child\":{\"depth\":\"deep\"}}}}",
                  "field \"tree.child.child.depth\"" },
                { "{\"byId\":{\"x\":{}}}", "field \"byId[x]\": expected an integer, got \"x\"" },
                { "{\"byId\":{\"1\":{\"mood\":3.5}}}",
                  "field \"byId[1].mood\": expected an integer" },
                { "{\"flags\":{\"yes\":\"COLOR_RED\"}}", "a bool map key is \"true\" or \"false\"" },
                { "{\"counts\":[1]}", "field \"counts\": expected an object, got [1]" },
                { "{\"counts\":{\"a\":null}}", "field \"counts[a]\": null is not allowed" },
                { "{\"counts\":{\"a\":\"b\"}}", "field \"counts[a]\": expected an integer" },
                { "{\"choiceText\":\"a\",\"choiceNumber\":1}",
                  "\"choiceText\" and \"choiceNumber\" are both set, but only one field of "
                  "oneof choice" },
                { "{\"nested\":{},\"choice_nested\":{},\"choiceNumber\":1}", "are both set" },
                { "{\"renamed\":\"a\",\"otherName\":\"b\"}",
                  "\"renamed\" and \"otherName\" in pbtest.Everything are the same field" },
                { "[1,2]", "expected an object (pbtest.Everything), got [1,2]" },
                { "5", "expected an object (pbtest.Everything), got 5" },
                { "\"{}\"", "expected an object" },
                { "null", "expected an object (pbtest.Everything), got null" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ uint8_t *data = NULL;
                _cleanup_free_ char *error = NULL;
                size_t size;
                int r;

                r = encode_text(types, EVERYTHING, cases[i].json, &data, &size, &error);
                if (!tap_check_int(r, -EINVAL) || !tap_check(error && strstr(error, cases[i].error)))
                        tap_diag("%s: got \"%s\", expected \"%s\"", cases[i].json, error ?: "(none)",
                                 cases[i].error);
                tap_check(!data);
        }
}

static void test_encode_edges(void) {
        _cleanup_free_ uint8_t *data = NULL;
        _cleanup_free_ char *error = NULL;
        Pbtest__Everything *back;
        size_t size = 99;

        /* nulls leave fields unset; an empty message is zero bytes, not NULL */
        tap_check_int(encode_text(types, EVERYTHING,
                                  "{\"fInt32\":null,\"nested\":null,\"rInt32\":null,"
                                  "\"counts\":null,\"choiceText\":null,\"choiceNumber\":null}",
                                  &data, &size, &error),
                      0);
        tap_check(data && size == 0 && !error);
        free(data);
        data = NULL;

        /* proto3 zeros are left out, but not in a oneof */
        tap_check_int(encode_text(types, EVERYTHING,
                                  "{\"fInt32\":0,\"fString\":\"\",\"fColor\":\"COLOR_UNSPECIFIED\","
                                  "\"fDouble\":0,\"choiceNumber\":0}",
                                  &data, &size, NULL),
                      0);
        tap_check(size == 3 && memcmp(data, "\xe8\x03\x00", 3) == 0);
        free(data);
        data = NULL;

        /* every integer spelling the mapping allows */
        back = encode_everything(
                "{\"fInt32\":\"-5\",\"fInt64\":-9007199254740993,\"fUint64\":"
                "18446744073709551615,\"fSint64\":\"-9223372036854775808\",\"fUint32\":1e3,"
                "\"fFixed64\":\"1e2\",\"fSfixed32\":-2.0,\"fFixed32\":\"4294967295\","
                "\"fInt32\":-0,\"fSfixed64\":\"-0\"}");
        if (back) {
                tap_check_int(back->f_int64, -9007199254740993);
                tap_check(back->f_uint64 == UINT64_MAX);
                tap_check(back->f_sint64 == INT64_MIN);
                tap_check_int(back->f_uint32, 1000);
                tap_check_int(back->f_fixed64, 100);
                tap_check_int(back->f_sfixed32, -2);
                tap_check(back->f_fixed32 == UINT32_MAX);
                tap_check_int(back->f_int32, 0);
                pbtest__everything__free_unpacked(back, NULL);
        }

        /* bytes: standard or URL-safe, padded or not */
        back = encode_everything("{\"fBytes\":\"-_8\",\"rBytes\":[\"+/8=\",\"\",\"AA\"]}");
        if (back) {
                tap_check(back->f_bytes.len == 2 && back->f_bytes.data[0] == 0xfb &&
                          back->f_bytes.data[1] == 0xff);
                tap_check(back->n_r_bytes == 3 && back->r_bytes[0].len == 2 &&
                          back->r_bytes[1].len == 0 && back->r_bytes[2].len == 1 &&
                          back->r_bytes[2].data[0] == 0);
                pbtest__everything__free_unpacked(back, NULL);
        }

        /* unknown type, bad arguments */
        tap_check_int(encode_text(types, "pbtest.Nope", "{}", &data, &size, &error), -ENOENT);
        tap_check(error && strstr(error, "pbtest.Nope"));
        tap_check_int(pb_encode_json(types, EVERYTHING, NULL, NULL, &size, NULL), -EINVAL);
        tap_check_int(pb_encode_json(NULL, EVERYTHING, NULL, &data, &size, NULL), -EINVAL);
}

static void test_decode_errors(void) {
        static const struct {
                const char *bytes;
                size_t size;
        } bad[] = {
                { "\x18", 1 },                                 /* no value */
                { "\x18\xff", 2 },                             /* cut varint */
                { "\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12 }, /* eleven bytes */
                { "\x72\x05" "ab", 4 },                        /* length past the end */
                { "\x72\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11 }, /* huge length */
                { "\x00\x01", 2 },                             /* field 0 */
                { "\x1e", 1 },                                 /* wire type 6 */
                { "\x1f", 1 },                                 /* wire type 7 */
                { "\x1c", 1 },                                 /* end of a group never started */
                { "\xdb\x3e\x08\x01", 4 },                     /* unterminated group */
                { "\xdb\x3e\xe4\x3e", 4 },                     /* group ended by another number */
                { "\x1a\x00", 2 },                             /* fInt32 as bytes */
                { "\x70\x01", 2 },                             /* fString as varint */
                { "\x0d\x00\x00\x00\x00", 5 },                 /* fDouble as fixed32 */
                { "\x90\x03\x01", 3 },                         /* nested as varint */
                { "\x92\x03\x02\x08", 4 },                     /* length past the end */
                { "\x92\x03\x01\x08", 4 },                     /* nested message cut */
                { "\xb2\x04\x02\x10\x80", 5 },                 /* map entry cut */
                { "\xb2\x04\x02\x0a\x05", 5 },                 /* map key past its entry */
                { "\xb0\x04\x01", 3 },                         /* map entry as varint */
                { "\xba\x01\x02\x01\x80", 5 },                 /* packed varints cut */
                { "\xf2\x01\x01\x00", 4 },                     /* packed fixed64 cut */
                { "\xff\xff\xff\xff\xff\xff\xff\xff\xff", 9 }, /* tag varint cut */
                { "\xf8\xff\xff\xff\x1f\x00", 6 },             /* field number past 2^29-1 */
        };
        _cleanup_free_ uint8_t *full = NULL;
        json_object *o = NULL;
        size_t full_size;
        Full x;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                int r = pb_decode_json(types, EVERYTHING, (const uint8_t *) bad[i].bytes,
                                       bad[i].size, 0, &o);

                if (!tap_check_int(r, -EBADMSG))
                        tap_diag("case %zu", i);
        }
        tap_check(!o);

        /* every cut of a full message is an error or a shorter message */
        full_init(&x);
        full = pack(&x.m.base, &full_size);
        for (size_t n = 0; n < full_size; n++) {
                int r = pb_decode_json(types, EVERYTHING, full, n, PB_DECODE_DEFAULTS, &o);

                tap_check(r == 0 || r == -EBADMSG);
                json_object_put(o);
                o = NULL;
        }

        tap_check_int(pb_decode_json(types, "pbtest.Nope", full, full_size, 0, &o), -ENOENT);
        tap_check_int(pb_decode_json(types, "pbtest.Color", full, full_size, 0, &o), -ENOENT);
        tap_check_int(pb_decode_json(NULL, EVERYTHING, full, full_size, 0, &o), -EINVAL);
        tap_check_int(pb_decode_json(types, EVERYTHING, NULL, 1, 0, &o), -EINVAL);
        tap_check_int(pb_decode_json(types, EVERYTHING, NULL, 0, 0, &o), 0);
        tap_check(o && streq(json_text(o), "{}"));
        json_object_put(o);
}

/* ---- raw decoding */

static bool check_raw_at(const char *file, int line, const void *bytes, size_t size,
                         const char *expected) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        int r = pb_decode_raw_json(bytes, size, &o);

        return check_text_at(file, line, r < 0 ? NULL : json_text(o), expected);
}
#define check_raw(bytes, size, expected) check_raw_at(__FILE__, __LINE__, (bytes), (size), (expected))

static void test_decode_raw(void) {
        Pbtest__Everything m = PBTEST__EVERYTHING__INIT;
        Pbtest__Everything__Nested n = PBTEST__EVERYTHING__NESTED__INIT;
        _cleanup_free_ uint8_t *data = NULL, *deep = NULL;
        json_object *o = NULL;
        size_t size, deep_size;

        m.f_double = 1.0;
        m.f_int32 = 150;
        m.f_fixed32 = 5;
        m.f_string = "testing";
        m.n_r_int32 = 2;
        m.r_int32 = (int32_t[]) { 1, 2 };
        m.n_u_int32 = 2;
        m.u_int32 = (int32_t[]) { 5, 6 };
        n.id = 1;
        n.label = "x";
        m.nested = &n;
        data = pack(&m.base, &size);
        check_raw(data, size,
                  "{\"1\":4607182418800017408,\"3\":150,\"9\":5,\"14\":\"testing\",\"23\":\"AQI=\","
                  "\"41\":[5,6],\"50\":{\"1\":1,\"2\":\"x\"}}");

        check_raw("", 0, "{}");
        check_raw("\x0a\x00", 2, "{\"1\":\"\"}");
        check_raw("\x0b\x10\x01\x0c", 4, "{\"1\":{\"2\":1}}");               /* a group */
        check_raw("\x0a\x02\xff\xfe", 4, "{\"1\":\"//4=\"}");                 /* not text: base64 */
        check_raw("\x0a\x03" "a\nb", 5, "{\"1\":\"a\\nb\"}");
        check_raw("\x0d\xff\xff\xff\xff\x09\x01\0\0\0\0\0\0\0", 14, "{\"1\":[4294967295,1]}");
        check_raw("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11, "{\"1\":18446744073709551615}");

        tap_check_int(pb_decode_raw_json((const uint8_t *) "\x0b\x10\x01", 3, &o), -EBADMSG);
        tap_check_int(pb_decode_raw_json((const uint8_t *) "\x0c", 1, &o), -EBADMSG);
        tap_check_int(pb_decode_raw_json((const uint8_t *) "\x0b\x14", 2, &o), -EBADMSG);
        tap_check_int(pb_decode_raw_json((const uint8_t *) "\x0a\x05", 2, &o), -EBADMSG);
        tap_check_int(pb_decode_raw_json((const uint8_t *) "\x08", 1, &o), -EBADMSG);
        tap_check_int(pb_decode_raw_json((const uint8_t *) "\x07", 1, &o), -EBADMSG);
        tap_check_int(pb_decode_raw_json(NULL, 1, &o), -EINVAL);
        tap_check(!o);

        /* groups nested past the limit are an error; messages just stop being guessed */
        deep_size = 2 * (PB_MAX_DEPTH + 2);
        deep = malloc(deep_size);
        for (size_t i = 0; i < PB_MAX_DEPTH + 2; i++) {
                deep[i] = 0x0b;
                deep[deep_size - 1 - i] = 0x0c;
        }
        tap_check_int(pb_decode_raw_json(deep, deep_size, &o), -EBADMSG);
        tap_check_int(pb_decode_raw_json(deep, 2 * 10, &o), -EBADMSG); /* unbalanced */
        tap_check_int(pb_decode_raw_json(deep + PB_MAX_DEPTH + 2 - 10, 2 * 10, &o), 0);
        json_object_put(o);
}

/* ---- base64 */

static void test_base64(void) {
        static const char *const rfc[][2] = {
                { "", "" },           { "f", "Zg==" },         { "fo", "Zm8=" },
                { "foo", "Zm9v" },    { "foob", "Zm9vYg==" },  { "fooba", "Zm9vYmE=" },
                { "foobar", "Zm9vYmFy" },
        };
        static const char *const bad[] = { "Zm9v!", "Z", "Zg=", "Z===", "Zm 9v", "Zm9v\n", "====",
                                           "Zg==Zg==", "=Zg=", "Zm9vY" };
        uint8_t all[256];
        _cleanup_free_ char *text = NULL;
        uint8_t *data;
        size_t size;

        for (size_t i = 0; i < ELEMENTSOF(rfc); i++) {
                _cleanup_free_ char *enc =
                        pb_base64_encode((const uint8_t *) rfc[i][0], strlen(rfc[i][0]));
                char unpadded[16];

                tap_check(enc && streq(enc, rfc[i][1]));
                tap_check_int(pb_base64_decode(rfc[i][1], strlen(rfc[i][1]), &data, &size), 0);
                tap_check(size == strlen(rfc[i][0]) && memcmp(data, rfc[i][0], size) == 0);
                free(data);
                /* without padding */
                snprintf(unpadded, sizeof(unpadded), "%s", rfc[i][1]);
                unpadded[strcspn(unpadded, "=")] = '\0';
                tap_check_int(pb_base64_decode(unpadded, strlen(unpadded), &data, &size), 0);
                tap_check(size == strlen(rfc[i][0]) && memcmp(data, rfc[i][0], size) == 0);
                free(data);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                if (!tap_check_int(pb_base64_decode(bad[i], strlen(bad[i]), &data, &size), -EINVAL))
                        tap_diag("\"%s\" accepted", bad[i]);

        for (size_t i = 0; i < sizeof(all); i++)
                all[i] = (uint8_t) i;
        text = pb_base64_encode(all, sizeof(all));
        tap_check(
                text &&
                strspn(text, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") ==
                        strlen(text));
        tap_check_int(pb_base64_decode(text, strlen(text), &data, &size), 0);
        tap_check(size == sizeof(all) && memcmp(data, all, size) == 0);
        free(data);
        /* the URL-safe alphabet */
        for (char *p = text; *p; p++)
                *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
        tap_check_int(pb_base64_decode(text, strlen(text), &data, &size), 0);
        tap_check(size == sizeof(all) && memcmp(data, all, size) == 0);
        free(data);
        tap_check_int(pb_base64_decode(NULL, 0, &data, &size), 0);
        tap_check(size == 0);
        free(data);
        tap_check_int(pb_base64_decode(NULL, 1, &data, &size), -EINVAL);
}

/* ---- hostile descriptor sets */

typedef Google__Protobuf__FieldDescriptorProto DescField;
typedef Google__Protobuf__DescriptorProto DescMessage;

#define TYPE(t) GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_##t
#define LABEL(l) GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_##l

static DescField desc_field(const char *name, int32_t number, int type, const char *type_name) {
        DescField f = GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__INIT;

        f.name = (char *) name;
        f.has_number = true;
        f.number = number;
        f.has_label = true;
        f.label = LABEL(OPTIONAL);
        f.has_type = true;
        f.type = type;
        f.type_name = (char *) type_name;
        return f;
}

static DescMessage desc_message(const char *name, DescField **fields, size_t n_fields) {
        DescMessage m = GOOGLE__PROTOBUF__DESCRIPTOR_PROTO__INIT;

        m.name = (char *) name;
        m.field = fields;
        m.n_field = n_fields;
        return m;
}

/* Adds a set of one proto3 file in package holding messages. */
static int add_messages(PbRegistry *r, const char *package, DescMessage **messages, size_t n) {
        Google__Protobuf__FileDescriptorSet set = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_SET__INIT;
        Google__Protobuf__FileDescriptorProto file = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_PROTO__INIT;
        Google__Protobuf__FileDescriptorProto *files[] = { &file };
        _cleanup_free_ uint8_t *data = NULL;
        size_t size;

        file.name = "hostile.proto";
        file.package = (char *) package;
        file.syntax = "proto3";
        file.message_type = messages;
        file.n_message_type = n;
        set.file = files;
        set.n_file = 1;
        data = pack(&set.base, &size);
        return pb_registry_add_set(r, data, size);
}

/* Adds a message A holding the one field f. */
static int add_field(PbRegistry *r, DescField f) {
        DescField *fields[] = { &f };
        DescMessage m = desc_message("A", fields, 1), *messages[] = { &m };

        return add_messages(r, "hostile", messages, 1);
}

static void test_hostile_fields(void) {
        DescField ok = desc_field("x", 1, TYPE(INT32), NULL), bad;
        DescField *two[2];
        DescMessage m, *messages[2];
        PbRegistry *r;

        tap_check_int(pb_registry_new(&r), 0);

        tap_check_int(add_field(r, desc_field("x", 0, TYPE(INT32), NULL)), -EBADMSG);
        tap_check_int(add_field(r, desc_field("x", -1, TYPE(INT32), NULL)), -EBADMSG);
        tap_check_int(add_field(r, desc_field("x", 1 << 29, TYPE(INT32), NULL)), -EBADMSG);
        tap_check_int(add_field(r, desc_field(NULL, 1, TYPE(INT32), NULL)), -EBADMSG);
        tap_check_int(add_field(r, desc_field("", 1, TYPE(INT32), NULL)), -EBADMSG);
        tap_check_int(add_field(r, desc_field("a-b", 1, TYPE(INT32), NULL)), -EBADMSG);
        tap_check_int(add_field(r, desc_field("x", 1, 19, NULL)), -EBADMSG);
        tap_check_int(add_field(r, desc_field("x", 1, 0, NULL)), -EBADMSG);
        tap_check_int(add_field(r, desc_field("x", 1, TYPE(MESSAGE), NULL)), -EBADMSG);
        tap_check_int(add_field(r, desc_field("x", 1, TYPE(ENUM), "")), -EBADMSG);
        tap_check_int(add_field(r, desc_field("x", 1, TYPE(MESSAGE), ".a..b")), -EBADMSG);
        bad = ok;
        bad.label = 9;
        tap_check_int(add_field(r, bad), -EBADMSG);
        bad = ok;
        bad.has_number = false;
        tap_check_int(add_field(r, bad), -EBADMSG);
        bad = ok;
        bad.has_oneof_index = true;
        bad.oneof_index = 3; /* there is no oneof */
        tap_check_int(add_field(r, bad), -EBADMSG);

        /* two fields with one number, or one name */
        bad = desc_field("y", 1, TYPE(STRING), NULL);
        two[0] = &ok;
        two[1] = &bad;
        m = desc_message("A", two, 2);
        messages[0] = &m;
        tap_check_int(add_messages(r, "hostile", messages, 1), -EBADMSG);
        bad = desc_field("x", 2, TYPE(STRING), NULL);
        tap_check_int(add_messages(r, "hostile", messages, 1), -EBADMSG);

        /* bad message names and packages; a name twice in one set */
        m = desc_message("has space", NULL, 0);
        tap_check_int(add_messages(r, "hostile", messages, 1), -EBADMSG);
        m = desc_message(NULL, NULL, 0);
        tap_check_int(add_messages(r, "hostile", messages, 1), -EBADMSG);
        m = desc_message("A", NULL, 0);
        tap_check_int(add_messages(r, "bad..package", messages, 1), -EBADMSG);
        tap_check_int(add_messages(r, ".hostile", messages, 1), -EBADMSG);
        messages[1] = &m;
        tap_check_int(add_messages(r, "hostile", messages, 2), -EBADMSG);

        /* nothing of the rejected sets stayed */
        tap_check(!pb_registry_has_message(r, "hostile.A"));
        tap_check_int(add_field(r, ok), 1);
        tap_check(pb_registry_has_message(r, "hostile.A"));
        pb_registry_free(r);
}

static void test_hostile_enums_services(void) {
        Google__Protobuf__FileDescriptorSet set = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_SET__INIT;
        Google__Protobuf__FileDescriptorProto file = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_PROTO__INIT;
        Google__Protobuf__FileDescriptorProto *files[] = { &file };
        Google__Protobuf__EnumDescriptorProto e = GOOGLE__PROTOBUF__ENUM_DESCRIPTOR_PROTO__INIT,
                                              *enums[] = { &e };
        Google__Protobuf__EnumValueDescriptorProto
                v = GOOGLE__PROTOBUF__ENUM_VALUE_DESCRIPTOR_PROTO__INIT,
                *values[] = { &v };
        Google__Protobuf__ServiceDescriptorProto s = GOOGLE__PROTOBUF__SERVICE_DESCRIPTOR_PROTO__INIT,
                                                 *services[] = { &s };
        Google__Protobuf__MethodDescriptorProto md = GOOGLE__PROTOBUF__METHOD_DESCRIPTOR_PROTO__INIT,
                                                *methods[] = { &md };
        const char *input;
        PbRegistry *r;
        size_t size;
        uint8_t *data;

        file.package = "hostile";
        set.file = files;
        set.n_file = 1;
        tap_check_int(pb_registry_new(&r), 0);

        /* an enum value without a number */
        e.name = "E";
        e.value = values;
        e.n_value = 1;
        v.name = "E_ZERO";
        file.enum_type = enums;
        file.n_enum_type = 1;
        data = pack(&set.base, &size);
        tap_check_int(pb_registry_add_set(r, data, size), -EBADMSG);
        free(data);
        v.has_number = true;

        /* a method without an input type */
        s.name = "S";
        s.method = methods;
        s.n_method = 1;
        md.name = "Do";
        md.output_type = ".hostile.Nowhere";
        file.service = services;
        file.n_service = 1;
        data = pack(&set.base, &size);
        tap_check_int(pb_registry_add_set(r, data, size), -EBADMSG);
        free(data);

        /* a method whose types are not known is kept as written */
        md.input_type = "Relative";
        data = pack(&set.base, &size);
        tap_check_int(pb_registry_add_set(r, data, size), 2);
        free(data);
        tap_check_int(pb_registry_find_method(r, "hostile.S", "Do", &input, NULL, NULL), 0);
        tap_check(streq(input, "Relative"));
        tap_check(!pb_registry_has_message(r, "hostile.E"));
        pb_registry_free(r);
}

/* Bytes built from the inside out, each record wrapped in a tag and a
 * length: as deep as a peer might nest them, without protobuf-c. */
typedef struct Nest {
        uint8_t *buf;
        size_t allocated, pos;
} Nest;

static void nest_init(Nest *n, size_t allocated) {
        n->buf = malloc(allocated);
        assert(n->buf);
        n->allocated = n->pos = allocated;
}

static void nest_prepend(Nest *n, const void *data, size_t size) {
        assert(size <= n->pos);
        n->pos -= size;
        memcpy(n->buf + n->pos, data, size);
}

/* Wraps everything so far as a length-delimited field with this tag byte. */
static void nest_wrap(Nest *n, uint8_t tag) {
        size_t len = n->allocated - n->pos, k = 0;
        uint8_t v[11];

        do {
                v[k++] = (uint8_t) (len | 0x80);
                len >>= 7;
        } while (len);
        v[k - 1] &= 0x7f;
        nest_prepend(n, v, k);
        nest_prepend(n, &tag, 1);
}

static uint8_t *nest_finish(Nest *n, size_t *size) {
        *size = n->allocated - n->pos;
        memmove(n->buf, n->buf + n->pos, *size);
        return n->buf;
}

/* A set whose one message "X" nests levels messages "X" inside it. */
static uint8_t *deep_set(size_t levels, size_t *size) {
        Nest n;

        nest_init(&n, 16 * levels + 64);
        nest_prepend(&n, "\x0a\x01X", 3);
        for (size_t i = 0; i < levels; i++) {
                nest_wrap(&n, 0x1a); /* DescriptorProto.nested_type */
                nest_prepend(&n, "\x0a\x01X", 3);
        }
        nest_wrap(&n, 0x22); /* FileDescriptorProto.message_type */
        nest_wrap(&n, 0x0a); /* FileDescriptorSet.file */
        return nest_finish(&n, size);
}

/* levels messages, each in field inner of the one around it but the
 * outermost, in field outer. */
static uint8_t *deep_message(size_t levels, uint8_t outer, uint8_t inner, size_t *size) {
        Nest n;

        nest_init(&n, 16 * levels + 16);
        for (size_t i = 1; i < levels; i++)
                nest_wrap(&n, i + 1 < levels ? inner : outer);
        return nest_finish(&n, size);
}

static void test_hostile_nesting(void) {
        _cleanup_free_ uint8_t *shallow = NULL, *deep = NULL;
        size_t shallow_size, deep_size;
        PbRegistry *r;

        tap_check_int(pb_registry_new(&r), 0);
        shallow = deep_set(40, &shallow_size);
        tap_check_int(pb_registry_add_set(r, shallow, shallow_size), 41);
        tap_check(pb_registry_has_message(r, "X.X.X.X"));
        /* deep enough to overflow the stack of an unbounded unpacker */
        deep = deep_set(200000, &deep_size);
        tap_check_int(pb_registry_add_set(r, deep, deep_size), -EBADMSG);
        pb_registry_free(r);
}

static void test_hostile_references(void) {
        DescField b = desc_field("b", 1, TYPE(MESSAGE), ".nowhere.B"),
                  x = desc_field("x", 2, TYPE(INT32), NULL),
                  c = desc_field("c", 3, TYPE(ENUM), "Nowhere"),
                  w = desc_field("w", 4, TYPE(ENUM), ".hostile.A");
        DescField *fields[] = { &b, &x, &c, &w };
        DescMessage a = desc_message("A", fields, ELEMENTSOF(fields)), *messages[] = { &a };
        const char *const names[] = { "hostile.A", NULL };
        _cleanup_free_ char *got = NULL, *error = NULL, *text = NULL;
        _cleanup_free_ uint8_t *data = NULL;
        _cleanup_(json_object_putp) json_object *described = NULL;
        size_t size;
        FILE *f;
        PbRegistry *r;

        /* pointing nowhere, or at a type of the wrong kind, is not fatal:
         * those fields read as unknown */
        tap_check_int(pb_registry_new(&r), 0);
        tap_check_int(add_messages(r, "hostile", messages, 1), 1);
        got = decode_text(r, "hostile.A",
                          (const uint8_t *) "\x0a\x03"
                                            "abc\x10\x05\x18\x01\x20\x02",
                          11, PB_DECODE_DEFAULTS, NULL);
        tap_check(got && streq(got, "{\"x\":5,\"@unknown\":{\"1\":\"YWJj\",\"3\":1,\"4\":2}}"));
        tap_check_int(encode_text(r, "hostile.A", "{\"b\":{}}", &data, &size, &error), -EINVAL);
        tap_check(error && strstr(error, "field \"b\": its type .nowhere.B is not known"));
        tap_check_int(encode_text(r, "hostile.A", "{\"x\":5}", &data, &size, NULL), 0);
        tap_check(size == 2 && memcmp(data, "\x10\x05", 2) == 0);

        f = open_memstream(&text, &size);
        tap_check_int(pb_registry_describe_text(r, NULL, names, f), 0);
        fclose(f);
        tap_check(strstr(
                text,
                "  nowhere.B b = 1;\n  int32 x = 2;\n  Nowhere c = 3;\n  hostile.A w = 4;\n"));
        tap_check_int(pb_registry_describe_json(r, NULL, NULL, &described), 0);
        pb_registry_free(r);
}

static void test_hostile_cycles(void) {
        /* C { C self = 1; D d = 2; }  D { C c = 1; }
         * E { map<string, E.Entry> e = 1; message Entry { key = 1; Entry value = 2; } } */
        DescField self = desc_field("self", 1, TYPE(MESSAGE), ".hostile.C"),
                  d = desc_field("d", 2, TYPE(MESSAGE), "D"),
                  c = desc_field("c", 1, TYPE(MESSAGE), "C"),
                  e = desc_field("e", 1, TYPE(MESSAGE), "E.Entry"),
                  key = desc_field("key", 1, TYPE(STRING), NULL),
                  value = desc_field("value", 2, TYPE(MESSAGE), "Entry");
        DescField *c_fields[] = { &self, &d }, *d_fields[] = { &c }, *e_fields[] = { &e },
                  *entry_fields[] = { &key, &value };
        DescMessage cm = desc_message("C", c_fields, 2), dm = desc_message("D", d_fields, 1),
                    em = desc_message("E", e_fields, 1),
                    entry = desc_message("Entry", entry_fields, 2);
        DescMessage *messages[] = { &cm, &dm, &em }, *nested[] = { &entry };
        Google__Protobuf__MessageOptions options = GOOGLE__PROTOBUF__MESSAGE_OPTIONS__INIT;
        const char *const names[] = { "hostile.C", "hostile.E", NULL };
        _cleanup_(json_object_putp) json_object *described = NULL, *j = NULL;
        _cleanup_free_ uint8_t *chain = NULL, *ok = NULL, *entries = NULL;
        _cleanup_free_ char *text = NULL;
        size_t size;
        FILE *f;
        PbRegistry *r;

        e.label = LABEL(REPEATED);
        options.has_map_entry = true;
        options.map_entry = true;
        entry.options = &options;
        em.nested_type = nested;
        em.n_nested_type = 1;

        tap_check_int(pb_registry_new(&r), 0);
        tap_check_int(add_messages(r, "hostile", messages, ELEMENTSOF(messages)), 4);

        f = open_memstream(&text, &size);
        tap_check_int(pb_registry_describe_text(r, NULL, names, f), 0);
        fclose(f);
        tap_check(strstr(text, "  hostile.C self = 1;\n  hostile.D d = 2;\n"));
        tap_check(strstr(text, "  map<string, hostile.E.Entry> e = 1;\n"));
        tap_check_int(pb_registry_describe_json(r, NULL, names, &described), 0);

        /* C inside C (field 1), past the depth limit and just within */
        chain = deep_message(PB_MAX_DEPTH + 2, 0x0a, 0x0a, &size);
        tap_check_int(pb_decode_json(r, "hostile.C", chain, size, 0, &j), -EBADMSG);
        ok = deep_message(PB_MAX_DEPTH + 1, 0x0a, 0x0a, &size);
        tap_check_int(pb_decode_json(r, "hostile.C", ok, size, PB_DECODE_DEFAULTS, &j), 0);
        json_object_put(j);
        j = NULL;

        /* a map whose values are its own entries (e, then value), nested past the limit */
        entries = deep_message(PB_MAX_DEPTH + 10, 0x0a, 0x12, &size);
        tap_check_int(pb_decode_json(r, "hostile.E", entries, size, 0, &j), -EBADMSG);
        tap_check_int(pb_decode_json(r, "hostile.E", entries, size, PB_DECODE_DEFAULTS, &j),
                      -EBADMSG);
        pb_registry_free(r);
}

static void test_registry_later_sets(void) {
        DescField b = desc_field("b", 1, TYPE(MESSAGE), ".late.B"),
                  y = desc_field("y", 1, TYPE(INT32), NULL),
                  other = desc_field("other", 1, TYPE(STRING), NULL);
        DescField *a_fields[] = { &b }, *b_fields[] = { &y }, *r_fields[] = { &other };
        DescMessage a = desc_message("A", a_fields, 1), bm = desc_message("B", b_fields, 1),
                    recursive = desc_message("Recursive", r_fields, 1);
        DescMessage *first[] = { &a }, *second[] = { &bm, &a }, *clash[] = { &recursive };
        _cleanup_free_ char *before = NULL, *after = NULL, *path = desc_path("types.desc");
        PbRegistry *r;

        /* a type another set brings later resolves then */
        tap_check_int(pb_registry_new(&r), 0);
        tap_check_int(add_messages(r, "late", first, 1), 1);
        before = decode_text(r, "late.A", (const uint8_t *) "\x0a\x02\x08\x03", 4, 0, NULL);
        tap_check(before && streq(before, "{\"@unknown\":{\"1\":\"CAM=\"}}"));
        tap_check_int(add_messages(r, "late", second, 2), 1); /* A is known already */
        after = decode_text(r, "late.A", (const uint8_t *) "\x0a\x02\x08\x03", 4, 0, NULL);
        tap_check(after && streq(after, "{\"b\":{\"y\":3}}"));

        /* a known type keeps its first definition */
        tap_check_int(pb_registry_add_file(r, path), 8);
        tap_check_int(add_messages(r, "pbtest", clash, 1), 0);
        free(after);
        after = decode_text(r, RECURSIVE, (const uint8_t *) "\x08\x07", 2, 0, NULL);
        tap_check(after && streq(after, "{\"depth\":7}"));
        pb_registry_free(r);
}

static void test_proto2(void) {
        Google__Protobuf__FileDescriptorSet set = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_SET__INIT;
        Google__Protobuf__FileDescriptorProto file = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_PROTO__INIT;
        Google__Protobuf__FileDescriptorProto *files[] = { &file };
        Google__Protobuf__EnumDescriptorProto e = GOOGLE__PROTOBUF__ENUM_DESCRIPTOR_PROTO__INIT,
                                              *enums[] = { &e };
        Google__Protobuf__EnumValueDescriptorProto
                one = GOOGLE__PROTOBUF__ENUM_VALUE_DESCRIPTOR_PROTO__INIT,
                two = GOOGLE__PROTOBUF__ENUM_VALUE_DESCRIPTOR_PROTO__INIT,
                uno = GOOGLE__PROTOBUF__ENUM_VALUE_DESCRIPTOR_PROTO__INIT,
                *values[] = { &one, &two, &uno };
        Google__Protobuf__FieldOptions packed = GOOGLE__PROTOBUF__FIELD_OPTIONS__INIT;
        DescField a = desc_field("a", 1, TYPE(INT32), NULL),
                  str = desc_field("s", 2, TYPE(STRING), NULL),
                  e1 = desc_field("e", 3, TYPE(ENUM), ".two.E"),
                  e2 = desc_field("e2", 4, TYPE(ENUM), "E"),
                  b = desc_field("b", 5, TYPE(BOOL), NULL),
                  d = desc_field("d", 6, TYPE(DOUBLE), NULL),
                  r = desc_field("r", 7, TYPE(INT32), NULL),
                  u = desc_field("u", 8, TYPE(INT32), NULL),
                  big = desc_field("big", 9, TYPE(UINT64), NULL);
        DescField *fields[] = { &a, &str, &e1, &e2, &b, &d, &r, &u, &big };
        DescMessage m = desc_message("P", fields, ELEMENTSOF(fields)), *messages[] = { &m };
        const char *const names[] = { "two.P", NULL };
        _cleanup_free_ uint8_t *data = NULL, *bytes = NULL;
        _cleanup_free_ char *got = NULL, *text = NULL;
        size_t size;
        FILE *f;
        PbRegistry *reg;

        /* proto2: no syntax; defaults from the descriptor; packed only when asked */
        a.default_value = "-5";
        str.default_value = "hi";
        e2.default_value = "E_TWO";
        b.label = LABEL(REQUIRED);
        d.default_value = "inf";
        big.default_value = "18446744073709551615";
        packed.has_packed = true;
        packed.packed = true;
        r.label = u.label = LABEL(REPEATED);
        r.options = &packed;
        one.name = "E_ONE";
        one.has_number = two.has_number = true;
        one.number = 1;
        two.name = "E_TWO";
        two.number = 2;
        uno.name = "E_UNO"; /* an alias: numbers show as the first name */
        uno.has_number = true;
        uno.number = 1;
        e.name = "E";
        e.value = values;
        e.n_value = 3;
        file.package = "two";
        file.message_type = messages;
        file.n_message_type = 1;
        file.enum_type = enums;
        file.n_enum_type = 1;
        set.file = files;
        set.n_file = 1;
        data = pack(&set.base, &size);

        tap_check_int(pb_registry_new(&reg), 0);
        tap_check_int(pb_registry_add_set(reg, data, size), 2);
        got = decode_text(reg, "two.P", NULL, 0, PB_DECODE_DEFAULTS, NULL);
        tap_check(got &&
                  streq(got,
                        "{\"a\":-5,\"s\":\"hi\",\"e\":\"E_ONE\",\"e2\":\"E_TWO\",\"b\":false,"
                        "\"d\":\"Infinity\",\"r\":[],\"u\":[],\"big\":\"18446744073709551615\"}"));
        tap_check_int(
                encode_text(reg, "two.P", "{\"r\":[1,2],\"u\":[3],\"a\":0}", &bytes, &size, NULL),
                0);
        tap_check(size == 8 && memcmp(bytes, "\x08\x00\x3a\x02\x01\x02\x40\x03", 8) == 0);
        free(bytes);
        bytes = NULL;
        tap_check_int(encode_text(reg, "two.P", "{\"e\":\"E_UNO\"}", &bytes, &size, NULL), 0);
        tap_check(size == 2 && memcmp(bytes, "\x18\x01", 2) == 0);
        free(got);
        got = decode_text(reg, "two.P", bytes, size, 0, NULL);
        tap_check(got && streq(got, "{\"e\":\"E_ONE\"}"));

        f = open_memstream(&text, &size);
        tap_check_int(pb_registry_describe_text(reg, NULL, names, f), 0);
        fclose(f);
        tap_check(strstr(text, "message P {\n  optional int32 a = 1;\n"));
        tap_check(strstr(text, "  optional two.E e2 = 4;\n  required bool b = 5;\n"));
        tap_check(strstr(text, "  repeated int32 r = 7 [packed = true];\n  repeated int32 u = 8;\n"));
        pb_registry_free(reg);
}

/* Sizes a peer could send to make quadratic code hang. */
static void test_hostile_sizes(void) {
        enum { N_FIELDS = 20000, N_MESSAGES = 5000 };
        DescField *fields = calloc(N_FIELDS, sizeof(DescField)),
                  **field_ptrs = calloc(N_FIELDS, sizeof(void *));
        DescMessage *messages = calloc(N_MESSAGES, sizeof(DescMessage)),
                    **message_ptrs = calloc(N_MESSAGES, sizeof(void *));
        Google__Protobuf__OneofDescriptorProto *oneofs = calloc(N_FIELDS / 2, sizeof(*oneofs)),
                                               **oneof_ptrs = calloc(N_FIELDS / 2, sizeof(void *));
        char (*names)[16] = calloc(N_FIELDS + N_MESSAGES, 16);
        _cleanup_(json_object_putp) json_object *o = json_object_new_object(), *described = NULL;
        _cleanup_free_ uint8_t *bytes = NULL;
        _cleanup_free_ char *error = NULL;
        FILE *null = fopen("/dev/null", "we");
        size_t size;
        PbRegistry *r;

        assert(fields && field_ptrs && messages && message_ptrs && oneofs && oneof_ptrs && names &&
               o);
        for (size_t i = 0; i < N_FIELDS; i++) {
                snprintf(names[i], 16, "f%zu", i);
                fields[i] = desc_field(names[i], (int32_t) i + 1, TYPE(INT32), NULL);
                fields[i].has_oneof_index = true;
                fields[i].oneof_index = (int32_t) (i % (N_FIELDS / 2));
                field_ptrs[i] = &fields[i];
                json_object_object_add(o, names[i], json_object_new_int((int32_t) i));
        }
        for (size_t i = 0; i < N_FIELDS / 2; i++) {
                google__protobuf__oneof_descriptor_proto__init(&oneofs[i]);
                oneofs[i].name = "o";
                oneof_ptrs[i] = &oneofs[i];
        }
        for (size_t i = 0; i < N_MESSAGES; i++) {
                snprintf(names[N_FIELDS + i], 16, "M%zu", i);
                messages[i] = desc_message(names[N_FIELDS + i], NULL, 0);
                message_ptrs[i] = &messages[i];
        }
        messages[0].field = field_ptrs;
        messages[0].n_field = N_FIELDS;
        messages[0].oneof_decl = oneof_ptrs;
        messages[0].n_oneof_decl = N_FIELDS / 2;

        tap_check_int(pb_registry_new(&r), 0);
        tap_check_int(add_messages(r, "big", message_ptrs, N_MESSAGES), N_MESSAGES);
        tap_check_int(pb_registry_describe_text(r, NULL, NULL, null), 0);
        tap_check_int(pb_registry_describe_json(r, NULL, NULL, &described), 0);
        /* every oneof given twice */
        tap_check_int(pb_encode_json(r, "big.M0", o, &bytes, &size, &error), -EINVAL);
        tap_check(error && strstr(error, "are both set"));
        pb_registry_free(r);

        fclose(null);
        free(fields);
        free(field_ptrs);
        free(messages);
        free(message_ptrs);
        free(oneofs);
        free(oneof_ptrs);
        free(names);
}

/* ---- fuzzing */

static uint64_t fuzz_state;

static uint64_t fuzz_random(void) {
        /* xorshift64*: reproducible from the seed the test prints */
        fuzz_state ^= fuzz_state >> 12;
        fuzz_state ^= fuzz_state << 25;
        fuzz_state ^= fuzz_state >> 27;
        return fuzz_state * UINT64_C(2685821657736338717);
}

/* Flips, overwrites, inserts, cuts or repeats a few bytes of buf. */
static size_t fuzz_mutate(uint8_t *buf, size_t size, size_t allocated) {
        for (unsigned n = 1 + fuzz_random() % 4; n > 0; n--) {
                size_t at = size > 0 ? fuzz_random() % size : 0, len;

                switch (fuzz_random() % 6) {
                case 0:
                        if (size > 0)
                                buf[at] ^= (uint8_t) (1u << (fuzz_random() % 8));
                        break;
                case 1:
                        if (size > 0)
                                buf[at] = (uint8_t) fuzz_random();
                        break;
                case 2:
                        if (size < allocated) {
                                memmove(buf + at + 1, buf + at, size - at);
                                buf[at] = (uint8_t) fuzz_random();
                                size++;
                        }
                        break;
                case 3:
                        size = size > 0 ? fuzz_random() % size : 0;
                        break;
                case 4:
                        len = MIN(size - at, allocated - size);
                        len = len > 0 ? fuzz_random() % (len + 1) : 0;
                        memcpy(buf + size, buf + at, len);
                        size += len;
                        break;
                default:
                        if (size > 0)
                                buf[at] = (uint8_t[]){
                                        0x00, 0x7f, 0x80, 0xff, 0x0a, 0x12
                                }[fuzz_random() % 6];
                }
        }
        return size;
}

static void json_strip_unknown(json_object *o) {
        if (json_object_is_type(o, json_type_array))
                for (size_t i = 0; i < json_object_array_length(o); i++)
                        json_strip_unknown(json_object_array_get_idx(o, i));
        if (!json_object_is_type(o, json_type_object))
                return;
        json_object_object_del(o, "@unknown");
        json_object_object_foreach(o, key, value) {
                (void) key;
                json_strip_unknown(value);
        }
}

static unsigned fuzz_failures;
static unsigned long fuzz_decoded, fuzz_sets_accepted; /* to see that the fuzz reaches in */

/* What decodes must encode again, and decode to the same (unknown fields
 * aside, which are not encoded). */
static void fuzz_check_round_trip(const char *type, const uint8_t *data, size_t size) {
        _cleanup_(json_object_putp) json_object *first = NULL, *second = NULL;
        _cleanup_free_ uint8_t *bytes = NULL;
        _cleanup_free_ char *error = NULL, *text = NULL;
        size_t bytes_size;
        int r;

        if (pb_decode_json(types, type, data, size, PB_DECODE_DEFAULTS, &first) < 0)
                return;
        fuzz_decoded++;
        json_strip_unknown(first);
        text = strdup(json_text(first));
        r = pb_encode_json(types, type, first, &bytes, &bytes_size, &error);
        if (r >= 0)
                r = pb_decode_json(types, type, bytes, bytes_size, PB_DECODE_DEFAULTS, &second);
        if (r >= 0)
                json_strip_unknown(second);
        if ((r < 0 || !streq(text, json_text(second))) && fuzz_failures++ < 3)
                tap_fail_at(__FILE__, __LINE__, "decoded JSON encodes back to the same", "%s -> %s",
                            text, r < 0 ? error ?: strerror(-r) : json_text(second));
}

static void fuzz_payload(const uint8_t *data, size_t size) {
        json_object *o = NULL;

        if (pb_decode_json(types, EVERYTHING, data, size, 0, &o) >= 0)
                json_object_put(o);
        fuzz_check_round_trip(EVERYTHING, data, size);
        fuzz_check_round_trip(RECURSIVE, data, size);
        if (pb_decode_raw_json(data, size, &o) >= 0)
                json_object_put(o);
}

/* A registry from mutated descriptor bytes: whatever it accepted must work. */
static void fuzz_descriptors(const uint8_t *desc, size_t desc_size, const uint8_t *payload,
                             size_t payload_size, FILE *null) {
        _cleanup_(json_object_putp) json_object *all = NULL;
        json_object *messages;
        PbRegistry *r;

        assert(pb_registry_new(&r) >= 0);
        if (pb_registry_add_set(r, desc, desc_size) > 0 && ++fuzz_sets_accepted &&
            pb_registry_describe_json(r, NULL, NULL, &all) >= 0 &&
            json_object_object_get_ex(all, "messages", &messages)) {
                for (size_t i = 0; i < MIN(json_object_array_length(messages), (size_t) 4); i++) {
                        json_object *name, *o = NULL;
                        _cleanup_free_ uint8_t *bytes = NULL;
                        size_t size;

                        json_object_object_get_ex(json_object_array_get_idx(messages, i), "name",
                                                  &name);
                        if (pb_decode_json(r, json_object_get_string(name), payload, payload_size,
                                           PB_DECODE_DEFAULTS, &o) >= 0) {
                                (void) pb_encode_json(r, json_object_get_string(name), o, &bytes,
                                                      &size, NULL);
                                json_object_put(o);
                        }
                }
                pb_registry_describe_text(r, NULL, NULL, null);
        }
        pb_registry_free(r);
}

static uint8_t *read_desc(const char *name, size_t *size) {
        _cleanup_free_ char *path = desc_path(name);
        FILE *f = fopen(path, "re");
        uint8_t *data = malloc(1 << 16);

        assert(f && data);
        *size = fread(data, 1, 1 << 16, f);
        fclose(f);
        return data;
}

static void test_fuzz(void) {
        const char *env = getenv("PBJSON_FUZZ_ITERATIONS");
        unsigned long iterations = env ? strtoul(env, NULL, 10) : 100000;
        _cleanup_free_ uint8_t *full = NULL, *chain = NULL, *types_desc = NULL, *calc_desc = NULL;
        size_t full_size, chain_size, types_size, calc_size;
        const uint8_t *seeds[4];
        size_t seed_sizes[4];
        uint8_t buf[4096], desc[1 << 16];
        FILE *null = fopen("/dev/null", "we");
        Full x;

        env = getenv("PBJSON_FUZZ_SEED");
        fuzz_state = env ? strtoull(env, NULL, 0) : UINT64_C(0x5eed5eed5eed5eed);
        tap_diag("fuzz seed 0x%" PRIx64 ", %lu iterations", fuzz_state, iterations);

        full_init(&x);
        full = pack(&x.m.base, &full_size);
        chain = recursive_chain(20, &chain_size);
        types_desc = read_desc("types.desc", &types_size);
        calc_desc = read_desc("calc.desc", &calc_size);
        seeds[0] = full;
        seed_sizes[0] = full_size;
        seeds[1] = chain;
        seed_sizes[1] = chain_size;
        seeds[2] = (const uint8_t
                            *) "\xdb\x3e\x08\x07\xdc\x3e\x92\x03\x02\x08\x01\xb2\x04\x03\x0a\x01k";
        seed_sizes[2] = 17;
        seeds[3] = (const uint8_t *) "";
        seed_sizes[3] = 0;

        for (unsigned long i = 0; i < iterations; i++) {
                size_t size, desc_size;

                if (i % 4 == 0) {
                        /* plain noise, short */
                        size = fuzz_random() % 48;
                        for (size_t k = 0; k < size; k++)
                                buf[k] = (uint8_t) fuzz_random();
                } else {
                        unsigned s = fuzz_random() % ELEMENTSOF(seeds);

                        assert(seed_sizes[s] <= sizeof(buf));
                        memcpy(buf, seeds[s], seed_sizes[s]);
                        size = fuzz_mutate(buf, seed_sizes[s], sizeof(buf));
                }
                fuzz_payload(buf, size);

                if (i % 4 == 0) {
                        desc_size = fuzz_random() % 64;
                        for (size_t k = 0; k < desc_size; k++)
                                desc[k] = (uint8_t) fuzz_random();
                } else {
                        bool use_types = fuzz_random() % 2;

                        desc_size = use_types ? types_size : calc_size;
                        memcpy(desc, use_types ? types_desc : calc_desc, desc_size);
                        desc_size = fuzz_mutate(desc, desc_size, sizeof(desc));
                }
                fuzz_descriptors(desc, desc_size, buf, size, null);
        }
        fclose(null);
        tap_diag("%lu payloads decoded, %lu descriptor sets accepted", fuzz_decoded,
                 fuzz_sets_accepted);
        tap_check_int(fuzz_failures, 0);
        tap_check(iterations < 1000 ||
                  (fuzz_decoded > iterations / 10 && fuzz_sets_accepted > iterations / 100));
}

int main(void) {
        _cleanup_free_ char *types_path = NULL, *calc_path = NULL;

        tap_init();
        if (!getenv("BUSD_BUILDDIR"))
                tap_skip_all("BUSD_BUILDDIR is not set");
        types_path = desc_path("types.desc");
        calc_path = desc_path("calc.desc");
        if (pb_registry_new(&types) < 0 || pb_registry_new(&calc) < 0 ||
            pb_registry_add_file(types, types_path) <= 0 ||
            pb_registry_add_file(calc, calc_path) <= 0) {
                printf("Bail out! cannot load %s and %s\n", types_path, calc_path);
                return 1;
        }

        TAP_RUN(test_registry_load);
        TAP_RUN(test_describe_text);
        TAP_RUN(test_describe_json);
        TAP_RUN(test_decode_scalars);
        TAP_RUN(test_decode_negative_int32);
        TAP_RUN(test_decode_special_floats);
        TAP_RUN(test_decode_repeated);
        TAP_RUN(test_decode_packed_and_unpacked);
        TAP_RUN(test_decode_nested);
        TAP_RUN(test_depth_limit);
        TAP_RUN(test_decode_maps);
        TAP_RUN(test_encode_maps);
        TAP_RUN(test_oneof);
        TAP_RUN(test_merge);
        TAP_RUN(test_defaults);
        TAP_RUN(test_unknown_fields);
        TAP_RUN(test_utf8);
        TAP_RUN(test_enums);
        TAP_RUN(test_json_names);
        TAP_RUN(test_round_trip);
        TAP_RUN(test_encode_errors);
        TAP_RUN(test_encode_edges);
        TAP_RUN(test_decode_errors);
        TAP_RUN(test_decode_raw);
        TAP_RUN(test_base64);
        TAP_RUN(test_hostile_fields);
        TAP_RUN(test_hostile_enums_services);
        TAP_RUN(test_hostile_nesting);
        TAP_RUN(test_hostile_references);
        TAP_RUN(test_hostile_cycles);
        TAP_RUN(test_registry_later_sets);
        TAP_RUN(test_proto2);
        TAP_RUN(test_hostile_sizes);
        TAP_RUN(test_fuzz);

        pb_registry_free(types);
        pb_registry_free(calc);
        return tap_done();
}
