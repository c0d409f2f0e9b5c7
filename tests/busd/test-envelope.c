/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The broker's allocation-free envelope parser against protobuf-c: for
 * envelopes packed by protobuf-c, hand-made wire encodings (repeated fields,
 * packed and unpacked subscriptions, unknown fields of every wire type) and
 * random bytes, both must agree on whether the bytes are an Envelope and, if
 * they are, on every field the broker reads.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "busd/envelope.h"
#include "libbus/wire.h"
#include "proto/bus.pb-c.h"
#include "tests/lib/tap.h"

/* protobuf-c hands out C strings, cut at an embedded NUL; the view keeps
 * the bytes (and the broker refuses names and topics holding a NUL), so
 * compare up to the first NUL. */
static bool string_matches(EnvelopeString s, const char *c) {
        size_t n = s.s ? strnlen(s.s, s.len) : 0;

        return n == strlen(c) && (n == 0 || memcmp(s.s, c, n) == 0);
}

/* Parses with both; true when they agree. */
static bool agree(const uint8_t *data, size_t len) {
        Bus__Envelope *e = bus__envelope__unpack(NULL, len, data);
        EnvelopeView v;
        int r = envelope_view_parse(&v, data, len);
        bool ok;

        if (!e)
                return r == -EBADMSG;
        ok = r == 0 && v.kind == (uint32_t) e->kind && v.serial == e->serial &&
             v.reply_serial == e->reply_serial && string_matches(v.destination, e->destination) &&
             string_matches(v.topic, e->topic) && string_matches(v.method, e->method) &&
             v.timeout_ms == e->timeout_ms && v.flags == e->flags &&
             string_matches(v.error_name, e->error_name) &&
             v.memfd_payload_size == e->memfd_payload_size &&
             v.has_broker_fields == (e->sender[0] || e->sender_uid || e->sender_gid ||
                                     e->sender_pid || e->n_subscriptions || e->missed ||
                                     e->timestamp_ns || e->monitor_receiver[0] ||
                                     e->monitor_receivers || e->monitor_fds ||
                                     (e->flags & BUS__ENVELOPE_FLAG__ENVELOPE_FLAG_MONITOR));
        bus__envelope__free_unpacked(e, NULL);
        return ok;
}

static size_t pack(const Bus__Envelope *e, uint8_t *buf) {
        return bus__envelope__pack(e, buf);
}

static void test_packed_by_protobuf_c(void) {
        Bus__Envelope e = BUS__ENVELOPE__INIT;
        uint64_t subs[] = { 1, 300, UINT64_MAX };
        uint8_t buf[1024];
        EnvelopeView v;
        size_t n;

        e.kind = BUS__KIND__KIND_REQUEST;
        e.serial = 12345678901ull;
        e.reply_serial = 7;
        e.destination = (char *) "org.example.Calc";
        e.topic = (char *) "a.b.c";
        e.method = (char *) "Add";
        e.timeout_ms = 250;
        e.flags = 6;
        e.payload_type = (char *) "example.Point";
        e.error_name = (char *) "org.example.Error.Bad";
        e.error_message = (char *) "bad";
        e.memfd_payload_size = 1u << 26;
        n = pack(&e, buf);
        tap_check(agree(buf, n));
        tap_check_int(envelope_view_parse(&v, buf, n), 0);
        tap_check(ENVELOPE_STRING_IS(v.method, "Add"));
        tap_check(!v.has_broker_fields);

        e.sender = (char *) ":1.1";
        n = pack(&e, buf);
        tap_check(agree(buf, n));
        e.sender = (char *) "";
        e.subscriptions = subs;
        e.n_subscriptions = 3;
        n = pack(&e, buf);
        tap_check(agree(buf, n));
        tap_check_int(envelope_view_parse(&v, buf, n), 0);
        tap_check(v.has_broker_fields);
        e.n_subscriptions = 0;
        e.sender_uid = 5;
        n = pack(&e, buf);
        tap_check(agree(buf, n));
        /* The monitor stamps and flag are the broker's too. */
        e.sender_uid = 0;
        e.monitor_receiver = (char *) "bus";
        n = pack(&e, buf);
        tap_check(agree(buf, n));
        e.monitor_receiver = (char *) "";
        e.monitor_fds = 2;
        n = pack(&e, buf);
        tap_check(agree(buf, n));
        e.monitor_fds = 0;
        e.flags |= BUS__ENVELOPE_FLAG__ENVELOPE_FLAG_MONITOR;
        n = pack(&e, buf);
        tap_check(agree(buf, n));
        tap_check_int(envelope_view_parse(&v, buf, n), 0);
        tap_check(v.has_broker_fields);
        /* The empty envelope is valid. */
        tap_check(agree(buf, 0));
}

static void test_last_value_wins(void) {
        uint8_t buf[64];
        size_t n = 0;
        EnvelopeView v;

        n += wire_put_tag_varint(buf + n, 2, 1);       /* serial 1 */
        n += wire_put_tag_bytes(buf + n, 5, "x.y", 3);  /* topic */
        n += wire_put_tag_varint(buf + n, 2, 99);      /* serial 99 */
        n += wire_put_tag_bytes(buf + n, 5, "z", 1);    /* topic again */
        n += wire_put_tag_varint(buf + n, 17, 4);      /* sender_uid 4 */
        n += wire_put_tag_varint(buf + n, 17, 0);      /* and back to 0 */
        tap_check(agree(buf, n));
        tap_check_int(envelope_view_parse(&v, buf, n), 0);
        tap_check(v.serial == 99 && ENVELOPE_STRING_IS(v.topic, "z"));
        tap_check(!v.has_broker_fields);
}

static void test_unknown_fields_skipped(void) {
        uint8_t buf[64];
        size_t n = 0;

        n += wire_put_tag_varint(buf + n, 2, 5);
        n += wire_put_tag_varint(buf + n, 100, 1);           /* unknown varint */
        n += wire_put_tag_bytes(buf + n, 101, "abc", 3);      /* unknown bytes */
        n += wire_put_varint(buf + n, (102u << 3) | 1);       /* unknown fixed64 */
        memset(buf + n, 0, 8);
        n += 8;
        n += wire_put_varint(buf + n, (103u << 3) | 5);       /* unknown fixed32 */
        memset(buf + n, 0, 4);
        n += 4;
        n += wire_put_tag_varint(buf + n, 1, 1);
        tap_check(agree(buf, n));
}

static void test_malformed(void) {
        uint8_t buf[64];
        size_t n;

        /* Truncated length. */
        n = wire_put_tag_bytes(buf, 5, "abcdef", 6);
        tap_check(agree(buf, n - 2));
        /* A known field with the wrong wire type. */
        n = wire_put_tag_varint(buf, 5, 3);
        tap_check(agree(buf, n));
        n = wire_put_tag_bytes(buf, 2, "ab", 2);
        tap_check(agree(buf, n));
        /* A varint that never ends. */
        memset(buf, 0xff, 12);
        tap_check(agree(buf, 12));
        /* Field number 0, and a group. */
        buf[0] = 0x00;
        buf[1] = 0x01;
        tap_check(agree(buf, 2));
        n = wire_put_varint(buf, (7u << 3) | 3);
        tap_check(agree(buf, n));
}

static void test_random_bytes(void) {
        uint8_t buf[48];
        unsigned disagreements = 0;

        srand(7);
        for (int i = 0; i < 200000; i++) {
                size_t n = (size_t) (rand() % (int) sizeof(buf));

                for (size_t j = 0; j < n; j++)
                        buf[j] = (uint8_t) rand();
                /* Bias towards plausible keys so parsing goes deep. */
                if (n > 0 && i % 2)
                        buf[0] = (uint8_t) ((rand() % 23) << 3 | (rand() % 3));
                if (!agree(buf, n) && disagreements++ < 3) {
                        char hex[3 * sizeof(buf) + 1] = "";
                        for (size_t j = 0; j < n; j++)
                                sprintf(hex + 3 * j, " %02x", buf[j]);
                        tap_diag("disagree on%s", hex);
                }
        }
        tap_check_int(disagreements, 0);
}

int main(void) {
        tap_init();
        TAP_RUN(test_packed_by_protobuf_c);
        TAP_RUN(test_last_value_wins);
        TAP_RUN(test_unknown_fields_skipped);
        TAP_RUN(test_malformed);
        TAP_RUN(test_random_bytes);
        return tap_done();
}
