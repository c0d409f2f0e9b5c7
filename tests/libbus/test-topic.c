/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of libbus/topic.c: topic and pattern syntax, pattern matching,
 * reserved topics, and well-known, unique and destination names. Strings are
 * passed with explicit lengths, and some are deliberately not NUL-terminated
 * at that length, as the broker sees them inside received buffers.
 */
#include <string.h>

#include "libbus/macro.h"
#include "libbus/topic.h"
#include "tests/lib/tap.h"

#define TOPIC(s) topic_is_valid((s), strlen(s))
#define PATTERN(s) topic_pattern_is_valid((s), strlen(s))
#define MATCHES(p, t) topic_pattern_matches((p), strlen(p), (t), strlen(t))
#define RESERVED(s) topic_is_reserved((s), strlen(s))

/* Fills buf with n bytes of "a.a.a..." or "aaaa..." and NUL-terminates it. */
static void fill(char *buf, size_t n, bool dotted) {
        for (size_t i = 0; i < n; i++)
                buf[i] = dotted && i % 2 == 1 ? '.' : 'a';
        buf[n] = '\0';
}

static void test_topic_empty(void) {
        tap_check(!topic_is_valid("", 0));
        tap_check(!topic_is_valid(NULL, 0));
        tap_check(!topic_is_valid(NULL, 5));
        tap_check(!topic_pattern_is_valid("", 0));
        tap_check(!topic_pattern_is_valid(NULL, 3));
        /* a non-empty buffer with length 0 is still empty */
        tap_check(!topic_is_valid("abc", 0));
}

static void test_topic_simple(void) {
        tap_check(TOPIC("a"));
        tap_check(TOPIC("sensors"));
        tap_check(TOPIC("sensors.kitchen.temp"));
        tap_check(TOPIC("a.b.c.d.e.f.g"));
        tap_check(TOPIC("Mixed-Case_and.digits0123.!#$%&'()+,-/:;<=?@[]^_`{|}~"));
        tap_check(TOPIC("\"quoted\""));
        tap_check(TOPIC("~"));
        tap_check(TOPIC("!"));
        /* a valid topic is also a valid pattern */
        tap_check(PATTERN("sensors.kitchen.temp"));
        tap_check(PATTERN("a"));
}

static void test_topic_dots(void) {
        static const char *const bad[] = {
                ".", "..", "...", ".a", "a.", ".a.", "a..b", "a.b.", ".a.b", "a.b..c", "a...b",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                if (!tap_check(!TOPIC(bad[i])))
                        tap_diag("topic \"%s\" accepted", bad[i]);
                if (!tap_check(!PATTERN(bad[i])))
                        tap_diag("pattern \"%s\" accepted", bad[i]);
        }
        tap_check(!PATTERN("*."));
        tap_check(!PATTERN(".*"));
        tap_check(!PATTERN("*..*"));
        tap_check(!PATTERN(".>"));
        tap_check(!PATTERN("a..>"));
}

static void test_topic_wildcards_rejected(void) {
        static const char *const bad[] = {
                "*", ">", "a.*", "*.a", "a.*.b", "a.>", ">.a", "a*", "*a", "a>", ">a",
                "a.b*", "a.>b", "**", ">>", "*>", ">*",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                if (!tap_check(!TOPIC(bad[i])))
                        tap_diag("topic \"%s\" accepted", bad[i]);
}

static void test_pattern_star(void) {
        tap_check(PATTERN("*"));
        tap_check(PATTERN("*.b.c"));
        tap_check(PATTERN("a.*.c"));
        tap_check(PATTERN("a.b.*"));
        tap_check(PATTERN("*.*"));
        tap_check(PATTERN("*.*.*"));
        tap_check(PATTERN("*.b.*"));
        tap_check(PATTERN("*.>"));
        tap_check(PATTERN("*.*.>"));
        tap_check(PATTERN("a.*.>"));
}

static void test_pattern_tail(void) {
        tap_check(PATTERN(">"));
        tap_check(PATTERN("a.>"));
        tap_check(PATTERN("a.b.c.>"));
        tap_check(PATTERN("bus.>"));

        /* '>' only as the last token */
        tap_check(!PATTERN(">.a"));
        tap_check(!PATTERN(">.>"));
        tap_check(!PATTERN(">.*"));
        tap_check(!PATTERN("a.>.b"));
        tap_check(!PATTERN("a.>.*"));
        tap_check(!PATTERN("a.>.>"));
}

static void test_pattern_partial_wildcards(void) {
        static const char *const bad[] = {
                "a*", "*a", "a*b", "**", "a.b*", "a.*b.c", "*a.b", ">b", "b>", "a.>b", "a.b>",
                ">>", "*>", ">*", "a.**", "a.>>", "a.*>",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                if (!tap_check(!PATTERN(bad[i])))
                        tap_diag("pattern \"%s\" accepted", bad[i]);
}

static void test_topic_max_length(void) {
        char buf[TOPIC_MAX + 2];

        /* one long token */
        fill(buf, TOPIC_MAX, false);
        tap_check(topic_is_valid(buf, TOPIC_MAX));
        tap_check(topic_pattern_is_valid(buf, TOPIC_MAX));
        fill(buf, TOPIC_MAX + 1, false);
        tap_check(!topic_is_valid(buf, TOPIC_MAX + 1));
        tap_check(!topic_pattern_is_valid(buf, TOPIC_MAX + 1));

        /* the most tokens possible: "a.a. ... .a" with 1023 bytes (512 tokens) */
        fill(buf, TOPIC_MAX - 1, true);
        tap_check(topic_is_valid(buf, TOPIC_MAX - 1));
        /* 1024 bytes of "a.a...a." ends in a dot */
        fill(buf, TOPIC_MAX, true);
        tap_check(!topic_is_valid(buf, TOPIC_MAX));
        /* 1025 bytes ending in "a" is too long */
        fill(buf, TOPIC_MAX + 1, true);
        tap_check(!topic_is_valid(buf, TOPIC_MAX + 1));

        /* a pattern of exactly TOPIC_MAX bytes ending in '>' */
        fill(buf, TOPIC_MAX, false);
        buf[TOPIC_MAX - 2] = '.';
        buf[TOPIC_MAX - 1] = '>';
        tap_check(topic_pattern_is_valid(buf, TOPIC_MAX));
        tap_check(!topic_is_valid(buf, TOPIC_MAX));
        tap_check(topic_pattern_matches(buf, TOPIC_MAX, "x", 1) == false);
}

static void test_topic_bad_bytes(void) {
        static const unsigned char bad[] = {
                0x01, 0x09, 0x0a, 0x0d, 0x1b, 0x1f, 0x20, 0x7f, 0x80, 0xa0, 0xc3, 0xff,
        };
        char buf[16];

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                /* at the start, in the middle and at the end of a token */
                static const size_t positions[] = { 0, 1, 2, 4, 5, 6 };

                for (size_t j = 0; j < ELEMENTSOF(positions); j++) {
                        memcpy(buf, "abc.def", 8);
                        buf[positions[j]] = (char) bad[i];
                        if (!tap_check(!topic_is_valid(buf, 7)))
                                tap_diag("byte 0x%02x at %zu accepted", bad[i], positions[j]);
                        tap_check(!topic_pattern_is_valid(buf, 7));
                }
                /* as a token of its own */
                buf[0] = 'a';
                buf[1] = '.';
                buf[2] = (char) bad[i];
                tap_check(!topic_is_valid(buf, 3));
                tap_check(!topic_is_valid(buf + 2, 1));
        }
        /* UTF-8 "é" */
        tap_check(!TOPIC("caf\xc3\xa9"));
        tap_check(!TOPIC("a b"));
        tap_check(!PATTERN("a.* "));
        /* boundaries of the range are allowed */
        tap_check(topic_is_valid("\x21\x7e", 2));
}

static void test_topic_embedded_nul(void) {
        tap_check(!topic_is_valid("a\0b", 3));
        tap_check(!topic_is_valid("ab\0", 3));
        tap_check(!topic_is_valid("\0", 1));
        tap_check(!topic_is_valid("a.\0", 3));
        tap_check(!topic_is_valid("a.b\0.c", 6));
        tap_check(!topic_pattern_is_valid("a.*\0", 4));
        tap_check(!topic_pattern_is_valid("a.\0>", 4));
        tap_check(!topic_pattern_is_valid(">\0", 2));
        /* the prefix before the NUL is fine */
        tap_check(topic_is_valid("a\0b", 1));
}

static void test_topic_not_terminated(void) {
        /* only len bytes are looked at: the rest of the buffer is garbage */
        const char buf[] = { 'a', '.', 'b', '.', '.', 'x', '*' };

        tap_check(topic_is_valid(buf, 1));
        tap_check(topic_is_valid(buf, 3));
        tap_check(!topic_is_valid(buf, 2));
        tap_check(!topic_is_valid(buf, 4));
        tap_check(!topic_is_valid(buf, 5));
        tap_check(!topic_is_valid(buf, sizeof(buf)));
        tap_check(topic_pattern_matches("a.*XYZ", 3, buf, 3));
        tap_check(!topic_pattern_matches("a.*XYZ", 3, buf, 1));
        tap_check(topic_is_reserved("bus.", 3));
}

static void test_match_exact(void) {
        tap_check(MATCHES("a", "a"));
        tap_check(MATCHES("a.b.c", "a.b.c"));
        tap_check(!MATCHES("a", "b"));
        tap_check(!MATCHES("a", "aa"));
        tap_check(!MATCHES("aa", "a"));
        tap_check(!MATCHES("a.b", "a"));
        tap_check(!MATCHES("a", "a.b"));
        tap_check(!MATCHES("a.b.c", "a.b.d"));
        tap_check(!MATCHES("a.b.c", "a.bc"));
        tap_check(!MATCHES("ab.c", "a.bc"));
        tap_check(!MATCHES("a.b", "a.b.c"));
}

static void test_match_star(void) {
        tap_check(MATCHES("*", "a"));
        tap_check(MATCHES("*", "anything"));
        tap_check(!MATCHES("*", "a.b"));
        tap_check(MATCHES("*.b.c", "a.b.c"));
        tap_check(MATCHES("*.b.c", "x.b.c"));
        tap_check(!MATCHES("*.b.c", "a.x.c"));
        tap_check(!MATCHES("*.b.c", "b.c"));
        tap_check(MATCHES("a.*.c", "a.b.c"));
        tap_check(MATCHES("a.*.c", "a.zzz.c"));
        tap_check(!MATCHES("a.*.c", "a.c"));
        tap_check(!MATCHES("a.*.c", "a.b.b.c"));
        tap_check(MATCHES("a.b.*", "a.b.c"));
        tap_check(!MATCHES("a.b.*", "a.b"));
        tap_check(!MATCHES("a.b.*", "a.b.c.d"));
        tap_check(MATCHES("*.*.*", "x.y.z"));
        tap_check(!MATCHES("*.*.*", "x.y"));
        tap_check(!MATCHES("*.*.*", "w.x.y.z"));
}

static void test_match_tail(void) {
        tap_check(MATCHES(">", "a"));
        tap_check(MATCHES(">", "a.b.c.d"));
        tap_check(MATCHES("a.>", "a.b"));
        tap_check(MATCHES("a.>", "a.b.c.d"));
        tap_check(!MATCHES("a.>", "a"));
        tap_check(!MATCHES("a.>", "b.c"));
        tap_check(!MATCHES("a.>", "ab.c"));
        tap_check(MATCHES("*.>", "a.b"));
        tap_check(!MATCHES("*.>", "a"));
        tap_check(MATCHES("*.*.>", "a.b.c"));
        tap_check(!MATCHES("*.*.>", "a.b"));
        tap_check(MATCHES("a.*.>", "a.b.c.d.e"));
        tap_check(!MATCHES("a.*.>", "x.b.c"));
        tap_check(MATCHES("bus.>", "bus.peer.connected"));
        tap_check(!MATCHES("bus.>", "bus"));
}

static void test_match_many_tokens(void) {
        char topic[TOPIC_MAX];
        char pattern[TOPIC_MAX];

        fill(topic, TOPIC_MAX - 1, true); /* 512 tokens */
        tap_check(topic_pattern_matches(">", 1, topic, TOPIC_MAX - 1));
        tap_check(topic_pattern_matches("*.*.>", 5, topic, TOPIC_MAX - 1));
        tap_check(topic_pattern_matches(topic, TOPIC_MAX - 1, topic, TOPIC_MAX - 1));
        tap_check(!topic_pattern_matches(topic, TOPIC_MAX - 3, topic, TOPIC_MAX - 1));
        tap_check(!topic_pattern_matches(topic, TOPIC_MAX - 1, topic, TOPIC_MAX - 3));

        /* every token replaced by '*' */
        memcpy(pattern, topic, TOPIC_MAX);
        for (size_t i = 0; i < TOPIC_MAX - 1; i += 2)
                pattern[i] = '*';
        tap_check(topic_pattern_is_valid(pattern, TOPIC_MAX - 1));
        tap_check(topic_pattern_matches(pattern, TOPIC_MAX - 1, topic, TOPIC_MAX - 1));
        tap_check(!topic_pattern_matches(pattern, TOPIC_MAX - 3, topic, TOPIC_MAX - 1));
        pattern[TOPIC_MAX - 2] = '>';
        tap_check(topic_pattern_is_valid(pattern, TOPIC_MAX - 1));
        tap_check(topic_pattern_matches(pattern, TOPIC_MAX - 1, topic, TOPIC_MAX - 1));
        tap_check(!topic_pattern_matches(pattern, TOPIC_MAX - 1, topic, TOPIC_MAX - 3));
}

static void test_reserved(void) {
        tap_check(RESERVED("bus"));
        tap_check(RESERVED("bus.peer"));
        tap_check(RESERVED("bus.peer.connected"));
        tap_check(RESERVED("bus.>"));
        tap_check(!RESERVED("bu"));
        tap_check(!RESERVED("b"));
        tap_check(!RESERVED(""));
        tap_check(!RESERVED("busy"));
        tap_check(!RESERVED("bus_x"));
        tap_check(!RESERVED("buses.a"));
        tap_check(!RESERVED("a.bus"));
        tap_check(!RESERVED("Bus.peer"));
        tap_check(!RESERVED("BUS"));
        tap_check(!RESERVED("*"));
        tap_check(!RESERVED(">"));
        tap_check(!topic_is_reserved(NULL, 0));
}

static void test_name_wellknown(void) {
        char buf[NAME_MAX_LEN + 2];

        tap_check(name_is_valid_wellknown("org.example"));
        tap_check(name_is_valid_wellknown("org.example.Calc"));
        tap_check(name_is_valid_wellknown("a.b"));
        tap_check(name_is_valid_wellknown("_a.-b"));
        tap_check(name_is_valid_wellknown("org.example-1.Calc_2"));
        tap_check(name_is_valid_wellknown("A.B.C.D.E.F"));
        tap_check(name_is_valid_wellknown("a1.b2"));
        tap_check(name_is_valid_wellknown("-.-"));

        tap_check(!name_is_valid_wellknown(NULL));
        tap_check(!name_is_valid_wellknown(""));
        tap_check(!name_is_valid_wellknown("org"));   /* one element */
        tap_check(!name_is_valid_wellknown("bus"));   /* the broker: not ownable */
        tap_check(!name_is_valid_wellknown("."));
        tap_check(!name_is_valid_wellknown(".org.example"));
        tap_check(!name_is_valid_wellknown("org.example."));
        tap_check(!name_is_valid_wellknown("org..example"));
        tap_check(!name_is_valid_wellknown("1org.example"));   /* digit first */
        tap_check(!name_is_valid_wellknown("org.1example"));
        tap_check(!name_is_valid_wellknown("org.example.2"));
        tap_check(!name_is_valid_wellknown(":1.5"));
        tap_check(!name_is_valid_wellknown(":org.example"));
        tap_check(!name_is_valid_wellknown("org.exa mple"));
        tap_check(!name_is_valid_wellknown("org.exa*mple"));
        tap_check(!name_is_valid_wellknown("org.example.>"));
        tap_check(!name_is_valid_wellknown("org/example"));
        tap_check(!name_is_valid_wellknown("org.caf\xc3\xa9"));
        tap_check(!name_is_valid_wellknown("org.ex\tample"));

        /* 255 bytes is the limit, 256 is too long */
        memset(buf, 'a', sizeof(buf));
        buf[1] = '.';
        buf[NAME_MAX_LEN] = '\0';
        tap_check_int(strlen(buf), 255);
        tap_check(name_is_valid_wellknown(buf));
        buf[NAME_MAX_LEN] = 'a';
        buf[NAME_MAX_LEN + 1] = '\0';
        tap_check(!name_is_valid_wellknown(buf));
}

static void test_name_unique(void) {
        tap_check(name_is_valid_unique(":1.1"));
        tap_check(name_is_valid_unique(":1.9"));
        tap_check(name_is_valid_unique(":1.10"));
        tap_check(name_is_valid_unique(":1.1234567890"));
        tap_check(name_is_valid_unique(":1.18446744073709551615"));   /* 20 digits */
        tap_check(name_is_valid_unique(":1.99999999999999999999"));

        tap_check(!name_is_valid_unique(NULL));
        tap_check(!name_is_valid_unique(""));
        tap_check(!name_is_valid_unique(":"));
        tap_check(!name_is_valid_unique(":1"));
        tap_check(!name_is_valid_unique(":1."));
        tap_check(!name_is_valid_unique(":1.0"));
        tap_check(!name_is_valid_unique(":1.01"));
        tap_check(!name_is_valid_unique(":1.100000000000000000000"));   /* 21 digits */
        tap_check(!name_is_valid_unique(":1.-1"));
        tap_check(!name_is_valid_unique(":1.+1"));
        tap_check(!name_is_valid_unique(":1.1a"));
        tap_check(!name_is_valid_unique(":1.1."));
        tap_check(!name_is_valid_unique(":1.1.2"));
        tap_check(!name_is_valid_unique(":1.1 "));
        tap_check(!name_is_valid_unique(":2.1"));
        tap_check(!name_is_valid_unique(":0.1"));
        tap_check(!name_is_valid_unique("1.1"));
        tap_check(!name_is_valid_unique("::1.1"));
        tap_check(!name_is_valid_unique(":1.a"));
        tap_check(!name_is_valid_unique("org.example"));
        tap_check(!name_is_valid_unique("bus"));
}

static void test_name_destination(void) {
        tap_check(name_is_valid_destination("bus"));
        tap_check(name_is_valid_destination(":1.42"));
        tap_check(name_is_valid_destination("org.example.Calc"));

        tap_check(!name_is_valid_destination(NULL));
        tap_check(!name_is_valid_destination(""));
        tap_check(!name_is_valid_destination("bus."));
        tap_check(!name_is_valid_destination("bu"));
        tap_check(!name_is_valid_destination("busy"));
        tap_check(!name_is_valid_destination("Bus"));
        tap_check(!name_is_valid_destination("org"));
        tap_check(!name_is_valid_destination(":1.0"));
        tap_check(!name_is_valid_destination(":1."));
        tap_check(!name_is_valid_destination("1org.example"));
        tap_check(!name_is_valid_destination("org..example"));
}

int main(void) {
        tap_init();
        TAP_RUN(test_topic_empty);
        TAP_RUN(test_topic_simple);
        TAP_RUN(test_topic_dots);
        TAP_RUN(test_topic_wildcards_rejected);
        TAP_RUN(test_pattern_star);
        TAP_RUN(test_pattern_tail);
        TAP_RUN(test_pattern_partial_wildcards);
        TAP_RUN(test_topic_max_length);
        TAP_RUN(test_topic_bad_bytes);
        TAP_RUN(test_topic_embedded_nul);
        TAP_RUN(test_topic_not_terminated);
        TAP_RUN(test_match_exact);
        TAP_RUN(test_match_star);
        TAP_RUN(test_match_tail);
        TAP_RUN(test_match_many_tokens);
        TAP_RUN(test_reserved);
        TAP_RUN(test_name_wellknown);
        TAP_RUN(test_name_unique);
        TAP_RUN(test_name_destination);
        return tap_done();
}
