/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Hostile and broken clients against a real busd: garbage, a wrong magic,
 * lengths over the limit, truncated frames, envelopes that do not decode,
 * unknown kinds, a first frame that is not Hello, forged sender fields,
 * undeclared descriptors, and a client that stops reading. Each must get a
 * clear error or a disconnect, and after each the broker must still serve a
 * well-behaved libbus client.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <libbus/bus.h>

#include "libbus/address.h"
#include "libbus/wire.h"
#include "proto/bus.pb-c.h"
#include "tests/lib/tap.h"
#include "tests/lib/util-busd.h"

static TestBusd busd;

static int raw_connect(void) {
        BusAddress a;
        int fd;

        assert(address_parse(&a, busd.address) == 0);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert(fd >= 0);
        if (connect(fd, (struct sockaddr *) &a.sun, a.len) < 0) {
                close(fd);
                return -errno;
        }
        return fd;
}

static void raw_write(int fd, const void *data, size_t len) {
        const uint8_t *p = data;

        while (len > 0) {
                ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
                if (n < 0)
                        return; /* the broker may already have hung up */
                p += n;
                len -= (size_t) n;
        }
}

/* Sends one frame: preamble, the given envelope, payload. */
static void raw_send_frame(int fd, const Bus__Envelope *env, const void *payload, size_t plen) {
        size_t elen = bus__envelope__get_packed_size(env);
        uint8_t *buf = malloc(WIRE_PREAMBLE_SIZE + elen + plen);

        wire_preamble_encode(buf, &(WirePreamble){ (uint32_t) elen, (uint32_t) plen, 0, 0 });
        bus__envelope__pack(env, buf + WIRE_PREAMBLE_SIZE);
        if (plen)
                memcpy(buf + WIRE_PREAMBLE_SIZE + elen, payload, plen);
        raw_write(fd, buf, WIRE_PREAMBLE_SIZE + elen + plen);
        free(buf);
}

static void raw_hello(int fd) {
        Bus__Envelope env = BUS__ENVELOPE__INIT;
        Bus__HelloRequest hello = BUS__HELLO_REQUEST__INIT;
        uint8_t payload[64];
        size_t plen;

        hello.client_name = (char *) "raw";
        plen = bus__hello_request__pack(&hello, payload);
        env.kind = BUS__KIND__KIND_REQUEST;
        env.serial = 1;
        env.destination = (char *) "bus";
        env.method = (char *) "Hello";
        raw_send_frame(fd, &env, payload, plen);
}

/* Reads frames until one with an envelope arrives or the connection ends;
 * returns the envelope (caller frees) or NULL on EOF/timeout. *eof is set
 * when the broker closed the connection afterwards or instead. */
static Bus__Envelope *raw_read_envelope(int fd, int timeout_ms) {
        uint8_t pre[WIRE_PREAMBLE_SIZE];
        WirePreamble p;
        size_t got = 0, need;
        uint8_t *buf = NULL;
        Bus__Envelope *env;

        for (;;) {
                struct pollfd pfd = { .fd = fd, .events = POLLIN };
                ssize_t n;

                if (poll(&pfd, 1, timeout_ms) <= 0)
                        break;
                if (!buf) {
                        n = recv(fd, pre + got, sizeof(pre) - got, 0);
                        if (n <= 0)
                                break;
                        got += (size_t) n;
                        if (got < sizeof(pre))
                                continue;
                        if (wire_preamble_decode(pre, &p, WIRE_ENVELOPE_MAX, WIRE_PAYLOAD_MAX, 0) < 0)
                                break;
                        need = (size_t) p.envelope_len + p.payload_len;
                        buf = malloc(need + 1);
                        got = 0;
                        continue;
                }
                n = recv(fd, buf + got, need - got, 0);
                if (n <= 0)
                        break;
                got += (size_t) n;
                if (got == need) {
                        env = bus__envelope__unpack(NULL, p.envelope_len, buf);
                        free(buf);
                        return env;
                }
        }
        free(buf);
        return NULL;
}

/* Waits for the broker to close fd. */
static bool raw_closed_by_broker(int fd) {
        char c[4096];

        for (;;) {
                struct pollfd pfd = { .fd = fd, .events = POLLIN };
                ssize_t n;

                if (poll(&pfd, 1, 5000) <= 0)
                        return false;
                n = recv(fd, c, sizeof(c), 0);
                if (n == 0 || (n < 0 && errno == ECONNRESET))
                        return true;
                if (n < 0)
                        return false;
        }
}

/* Expects a bus.Error.Protocol frame, then the connection closing. */
static bool expect_protocol_error(int fd) {
        Bus__Envelope *env = raw_read_envelope(fd, 5000);
        bool ok = env && env->kind == BUS__KIND__KIND_ERROR &&
                  strcmp(env->error_name, "bus.Error.Protocol") == 0 && env->error_message[0];

        if (env)
                tap_diag("broker said: %s: %s", env->error_name, env->error_message);
        else
                tap_diag("no error frame received");
        bus__envelope__free_unpacked(env, NULL);
        return ok && raw_closed_by_broker(fd);
}

/* The broker still works for a normal client. */
static bool broker_serves(void) {
        bus_client *c = NULL;
        bus_message *m = NULL, *reply = NULL;
        bus_error e = BUS_ERROR_NULL;
        bool ok;

        if (!test_busd_alive(&busd) || bus_client_open(&c, busd.address) < 0)
                return false;
        ok = bus_message_new_request(&m, "bus", "Ping") >= 0 &&
             bus_client_call(c, m, 5 * BUS_USEC_PER_SEC, &e, &reply) >= 0;
        bus_error_free(&e);
        bus_message_unref(m);
        bus_message_unref(reply);
        bus_client_unref(c);
        return ok;
}

static void test_garbage(void) {
        uint8_t junk[4096];
        int fd = raw_connect();

        srand(42);
        for (size_t i = 0; i < sizeof(junk); i++)
                junk[i] = (uint8_t) rand();
        raw_write(fd, junk, sizeof(junk));
        tap_check(expect_protocol_error(fd));
        close(fd);
        tap_check(broker_serves());
}

static void test_wrong_magic(void) {
        uint8_t pre[WIRE_PREAMBLE_SIZE];
        int fd = raw_connect();

        wire_preamble_encode(pre, &(WirePreamble){ 4, 0, 0, 0 });
        pre[2] ^= 0xff;
        raw_write(fd, pre, sizeof(pre));
        tap_check(expect_protocol_error(fd));
        close(fd);
        tap_check(broker_serves());
}

static void test_lengths_over_limit(void) {
        uint8_t pre[WIRE_PREAMBLE_SIZE];
        int fd = raw_connect();

        /* Nothing of the announced 4 GiB is allocated or waited for. */
        wire_preamble_encode(pre, &(WirePreamble){ 8, UINT32_MAX, 0, 0 });
        raw_write(fd, pre, sizeof(pre));
        tap_check(expect_protocol_error(fd));
        close(fd);

        fd = raw_connect();
        wire_preamble_encode(pre, &(WirePreamble){ 1u << 20, 0, 0, 0 });
        raw_write(fd, pre, sizeof(pre));
        tap_check(expect_protocol_error(fd));
        close(fd);
        tap_check(broker_serves());
}

static void test_truncated_frame(void) {
        uint8_t pre[WIRE_PREAMBLE_SIZE + 3];
        int fd = raw_connect();

        /* Half a frame, then the client goes away: the broker just drops it. */
        wire_preamble_encode(pre, &(WirePreamble){ 40, 100, 0, 0 });
        memset(pre + WIRE_PREAMBLE_SIZE, 0, 3);
        raw_write(fd, pre, sizeof(pre));
        close(fd);
        tap_check(broker_serves());
}

static void test_envelope_does_not_decode(void) {
        uint8_t frame[WIRE_PREAMBLE_SIZE + 8];
        int fd = raw_connect();

        wire_preamble_encode(frame, &(WirePreamble){ 8, 0, 0, 0 });
        memset(frame + WIRE_PREAMBLE_SIZE, 0xff, 8);
        raw_write(fd, frame, sizeof(frame));
        tap_check(expect_protocol_error(fd));
        close(fd);
        tap_check(broker_serves());
}

static void test_first_frame_not_hello(void) {
        Bus__Envelope env = BUS__ENVELOPE__INIT;
        int fd = raw_connect();

        env.kind = BUS__KIND__KIND_PUBLISH;
        env.serial = 1;
        env.topic = (char *) "a.b";
        raw_send_frame(fd, &env, "x", 1);
        tap_check(expect_protocol_error(fd));
        close(fd);
        tap_check(broker_serves());
}

static Bus__Envelope *greeted_exchange(int fd, const Bus__Envelope *env) {
        Bus__Envelope *hello_reply;

        raw_hello(fd);
        hello_reply = raw_read_envelope(fd, 5000);
        assert(hello_reply && hello_reply->kind == BUS__KIND__KIND_REPLY);
        bus__envelope__free_unpacked(hello_reply, NULL);
        raw_send_frame(fd, env, NULL, 0);
        return raw_read_envelope(fd, 5000);
}

static void test_unknown_kind(void) {
        Bus__Envelope env = BUS__ENVELOPE__INIT, *reply;
        int fd = raw_connect();

        env.kind = 99;
        env.serial = 7;
        reply = greeted_exchange(fd, &env);
        tap_check(reply && reply->kind == BUS__KIND__KIND_ERROR && reply->reply_serial == 7 &&
                  strcmp(reply->error_name, "bus.Error.InvalidArgs") == 0);
        bus__envelope__free_unpacked(reply, NULL);
        close(fd);
        tap_check(broker_serves());
}

static void test_forged_sender(void) {
        Bus__Envelope env = BUS__ENVELOPE__INIT, *reply;
        int fd = raw_connect();

        env.kind = BUS__KIND__KIND_PUBLISH;
        env.serial = 9;
        env.topic = (char *) "forged.topic";
        env.sender = (char *) ":1.1";
        env.sender_uid = 0;
        env.sender_pid = 1;
        reply = greeted_exchange(fd, &env);
        tap_check(reply && reply->kind == BUS__KIND__KIND_ERROR && reply->reply_serial == 9 &&
                  strcmp(reply->error_name, "bus.Error.InvalidArgs") == 0);
        bus__envelope__free_unpacked(reply, NULL);
        close(fd);
}

static void test_reserved_and_invalid_topics(void) {
        Bus__Envelope env = BUS__ENVELOPE__INIT, *reply;
        int fd = raw_connect();

        env.kind = BUS__KIND__KIND_PUBLISH;
        env.serial = 3;
        env.topic = (char *) "bus.peer.connected";
        reply = greeted_exchange(fd, &env);
        tap_check(reply && reply->kind == BUS__KIND__KIND_ERROR &&
                  strcmp(reply->error_name, "bus.Error.AccessDenied") == 0);
        bus__envelope__free_unpacked(reply, NULL);

        env.serial = 4;
        env.topic = (char *) "a..b";
        raw_send_frame(fd, &env, NULL, 0);
        reply = raw_read_envelope(fd, 5000);
        tap_check(reply && reply->kind == BUS__KIND__KIND_ERROR && reply->reply_serial == 4 &&
                  strcmp(reply->error_name, "bus.Error.InvalidArgs") == 0);
        bus__envelope__free_unpacked(reply, NULL);
        close(fd);
}

static void test_undeclared_fds(void) {
        Bus__Envelope env = BUS__ENVELOPE__INIT;
        Bus__HelloRequest hello = BUS__HELLO_REQUEST__INIT;
        uint8_t frame[256];
        size_t elen, plen;
        int fd = raw_connect(), p[2];
        union {
                struct cmsghdr align;
                uint8_t buf[CMSG_SPACE(sizeof(int) * 2)];
        } control = {};
        struct iovec iov;
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control,
                             .msg_controllen = CMSG_SPACE(sizeof(int) * 2) };
        struct cmsghdr *c;

        assert(pipe2(p, O_CLOEXEC) == 0);
        env.kind = BUS__KIND__KIND_REQUEST;
        env.serial = 1;
        env.destination = (char *) "bus";
        env.method = (char *) "Hello";
        elen = bus__envelope__pack(&env, frame + WIRE_PREAMBLE_SIZE);
        plen = bus__hello_request__pack(&hello, frame + WIRE_PREAMBLE_SIZE + elen);
        wire_preamble_encode(frame, &(WirePreamble){ (uint32_t) elen, (uint32_t) plen, 0, 0 });
        iov = (struct iovec){ frame, WIRE_PREAMBLE_SIZE + elen + plen };
        c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * 2);
        memcpy(CMSG_DATA(c), p, sizeof(int) * 2);
        tap_check(sendmsg(fd, &mh, MSG_NOSIGNAL) > 0);
        close(p[0]);
        close(p[1]);
        /* The Hello may be answered first; the error must follow. */
        for (int i = 0; i < 2; i++) {
                Bus__Envelope *e = raw_read_envelope(fd, 5000);
                bool is_protocol_error = e && e->kind == BUS__KIND__KIND_ERROR &&
                                         strcmp(e->error_name, "bus.Error.Protocol") == 0;
                bus__envelope__free_unpacked(e, NULL);
                if (is_protocol_error)
                        break;
                tap_check(i == 0);
        }
        tap_check(raw_closed_by_broker(fd));
        close(fd);
        tap_check(broker_serves());
}

/* A subscriber that never reads must not hold up the publisher or the bus:
 * deliveries to it are dropped (counted), the others get everything. */
#define FLOOD_MESSAGES 2000u

typedef struct GoodReader {
        bus_client *client;
        unsigned received;
} GoodReader;

static int good_count(bus_message *m, void *userdata) {
        GoodReader *g = userdata;

        g->received++;
        return 0;
}

/* Answers with how many it received: a call from the publisher is queued
 * behind the publisher's earlier deliveries, so the answer is a barrier. */
static int good_report(bus_message *m, void *userdata) {
        GoodReader *g = userdata;
        int r = bus_client_reply(g->client, m, &g->received, sizeof(g->received));

        if (g->received == FLOOD_MESSAGES)
                bus_client_exit(g->client, 0);
        return r;
}

static int good_reader(void *arg) {
        TestSignal *ready = arg;
        GoodReader g = {};
        int r;

        if (bus_client_open(&g.client, NULL) < 0 ||
            bus_client_subscribe(g.client, NULL, "flood.>", NULL, 0, good_count, &g) < 0 ||
            bus_client_request_name(g.client, "org.example.Good", 0) != BUS_NAME_PRIMARY_OWNER ||
            bus_client_add_method(g.client, NULL, NULL, "Count", good_report, &g) < 0)
                return 1;
        test_signal_post(ready, 'r');
        r = bus_client_run(g.client);
        bus_client_flush(g.client);
        bus_client_unref(g.client);
        return r == 0 ? 0 : 2;
}

static unsigned good_received(bus_client *pub) {
        bus_message *reply = NULL;
        const void *data;
        size_t size;
        unsigned n = 0;

        if (bus_client_call_method(pub, "org.example.Good", "Count", NULL, 0,
                                   10 * BUS_USEC_PER_SEC, NULL, &reply) >= 0 &&
            bus_message_get_payload(reply, &data, &size) >= 0 && size == sizeof(n))
                memcpy(&n, data, sizeof(n));
        bus_message_unref(reply);
        return n;
}

static int ignore_cb(bus_message *m, void *userdata) {
        return 0;
}

static void test_client_stops_reading(void) {
        bus_client *stuck = NULL, *pub = NULL;
        Bus__GetStatsRequest stats_request = BUS__GET_STATS_REQUEST__INIT;
        Bus__GetStatsReply *stats = NULL;
        TestSignal ready;
        char payload[1024];
        unsigned received = 0;
        pid_t good;

        memset(payload, 'p', sizeof(payload));
        tap_check(test_signal_init(&ready) == 0);
        good = test_child_start(good_reader, &ready);
        tap_check(test_signal_wait(&ready, 10000, NULL) == 0);
        tap_check(bus_client_open(&stuck, NULL) >= 0);
        tap_check(bus_client_subscribe(stuck, NULL, "flood.>", NULL, 0, ignore_cb, NULL) >= 0);
        tap_check(bus_client_open(&pub, NULL) >= 0);

        /* 2 MB through a broker whose queues hold 256 KiB per peer (see
         * main), checking on the good reader every 64 KiB. */
        for (unsigned i = 1; i <= FLOOD_MESSAGES; i++) {
                tap_check(bus_client_publish(pub, "flood.x", payload, sizeof(payload), 0) >= 0);
                if (i % 64 == 0 || i == FLOOD_MESSAGES)
                        received = good_received(pub);
        }
        tap_check_int(received, FLOOD_MESSAGES);
        tap_check_int(test_child_wait(good, 10000), 0);

        tap_check(bus_client_call_protobuf(pub, "bus", "GetStats", &stats_request.base,
                                           &bus__get_stats_reply__descriptor, 5 * BUS_USEC_PER_SEC,
                                           NULL, (ProtobufCMessage **) &stats) >= 0);
        tap_check(stats && stats->dropped > 0);
        if (stats) {
                tap_diag("dropped for the stuck subscriber: %llu", (unsigned long long) stats->dropped);
                bus__get_stats_reply__free_unpacked(stats, NULL);
        }
        tap_check(test_busd_alive(&busd));
        bus_client_unref(stuck);
        bus_client_unref(pub);
        test_signal_close(&ready);
        tap_check(broker_serves());
}

static void test_broker_exits_cleanly(void) {
        test_busd_check_clean_exit(&busd);
}

int main(void) {
        static const char *const args[] = { "--max-queue-bytes", "256K", NULL };

        tap_init();
        signal(SIGPIPE, SIG_IGN);
        test_busd_start_or_bail(&busd, args);
        TAP_RUN(test_garbage);
        TAP_RUN(test_wrong_magic);
        TAP_RUN(test_lengths_over_limit);
        TAP_RUN(test_truncated_frame);
        TAP_RUN(test_envelope_does_not_decode);
        TAP_RUN(test_first_frame_not_hello);
        TAP_RUN(test_unknown_kind);
        TAP_RUN(test_forged_sender);
        TAP_RUN(test_reserved_and_invalid_topics);
        TAP_RUN(test_undeclared_fds);
        TAP_RUN(test_client_stops_reading);
        TAP_RUN(test_broker_exits_cleanly);
        return tap_done();
}
