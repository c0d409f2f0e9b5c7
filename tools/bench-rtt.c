/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * busd-bench scenario "rtt": the round trip of a request and its reply,
 * 64 bytes each way, one call at a time, as percentiles over many calls.
 *
 * Paths, each to its own server process:
 *
 *   busd        bus_client_call() through busd to a method of a server
 *               process (its own bus_client, a well-known name,
 *               bus_client_add_method(), bus_client_reply() echoing the
 *               payload): what an application does;
 *   busd_async  the same with bus_client_call_async(), then
 *               bus_client_process() and bus_client_wait() until the reply
 *               has been dispatched: the event-loop path, depth 1;
 *   relay2      raw frames through the raw relay (bench-relay.c): client ->
 *               relay -> echo server -> relay -> client, the two hops each
 *               way of any broker, with nothing but the forwarding;
 *   direct1     raw frames over one socket pair to the echo server: one
 *               hop each way, no broker at all.
 *
 * A call's time runs from building the request (the payload is ready) to
 * having read and checked the reply and, for the bus, dropped it. The paths take turns in blocks of RTT_BLOCK calls, so that what
 * else the machine does falls on all of them alike; each first makes
 * RTT_WARMUP untimed calls.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libbus/bus.h>

#include "tools/bench.h"

#define RTT_PAYLOAD 64
#define RTT_FRAME (BENCH_FRAME_PREAMBLE + BENCH_RAW_ENVELOPE + RTT_PAYLOAD)
#define RTT_MIN_CALLS 100000u /* per path, unless --count says otherwise */
#define RTT_WARMUP 1000u
#define RTT_BLOCK 1000u
#define RTT_METHOD "Echo"

enum { RTT_BUSD, RTT_BUSD_ASYNC, RTT_RELAY2, RTT_DIRECT1, RTT_N_PATHS };

static const char *const rtt_names[RTT_N_PATHS] = { "busd", "busd_async", "relay2", "direct1" };

enum { RTT_P50, RTT_P99, RTT_P999, RTT_N_QUANTILES };
static const double rtt_quantiles[RTT_N_QUANTILES] = { 0.50, 0.99, 0.999 };
static const char *const rtt_quantile_names[RTT_N_QUANTILES] = { "p50", "p99", "p999" };

typedef struct RttPath {
        BenchSamples s;
        bool failed;
        int fd;                          /* raw paths: the client's socket */
        unsigned char in[2 * RTT_FRAME]; /* raw paths: what was read */
        size_t in_len;
        double q[RTT_N_QUANTILES]; /* seconds */
} RttPath;

typedef struct Rtt {
        BenchContext *ctx;
        BenchGroup group;
        bus_client *client;
        char name[64]; /* the bus server's well-known name */
        BenchEchoServer echo; /* the bus server (a helper process) */
        unsigned char frame[RTT_FRAME];
        unsigned char payload[RTT_PAYLOAD];
        uint64_t seq;
        unsigned corrupt;
        RttPath path[RTT_N_PATHS];
} Rtt;

/* ---- One call per path: its time in *ret, -EIO for a wrong reply. */

static int rtt_check(Rtt *t, const void *data, size_t size, uint64_t sum) {
        if (size != RTT_PAYLOAD || bench_sum(data, size) != sum) {
                t->corrupt++;
                return -EIO;
        }
        return 0;
}

static int rtt_bus_reply(Rtt *t, bus_message *reply, uint64_t sum) {
        const void *data;
        size_t size;

        if (bus_message_get_kind(reply) != BUS_KIND_REPLY ||
            bus_message_get_payload(reply, &data, &size) < 0)
                return -EPROTO;
        return rtt_check(t, data, size, sum);
}

static int rtt_call_busd(Rtt *t, uint64_t sum, double *ret) {
        bus_error error = BUS_ERROR_NULL;
        bus_message *m = NULL, *reply = NULL;
        double t0 = bench_now();
        int r;

        r = bus_message_new_request(&m, t->name, RTT_METHOD);
        if (r >= 0)
                r = bus_message_set_payload(m, t->payload, RTT_PAYLOAD);
        if (r >= 0)
                r = bus_client_call(t->client, m, 0, &error, &reply);
        bus_message_unref(m);
        if (r >= 0)
                r = rtt_bus_reply(t, reply, sum);
        bus_message_unref(reply);
        *ret = bench_now() - t0;
        if (error.name)
                fprintf(stderr, "busd-bench: rtt: %s: %s\n", error.name,
                        error.message ? error.message : "");
        bus_error_free(&error);
        return r;
}

static int rtt_on_reply(bus_message *m, void *userdata) {
        bus_message **reply = userdata;

        *reply = bus_message_ref(m);
        return 0;
}

static int rtt_call_busd_async(Rtt *t, uint64_t sum, double *ret) {
        bus_message *m = NULL, *reply = NULL;
        double t0 = bench_now();
        int r;

        r = bus_message_new_request(&m, t->name, RTT_METHOD);
        if (r >= 0)
                r = bus_message_set_payload(m, t->payload, RTT_PAYLOAD);
        if (r >= 0)
                r = bus_client_call_async(t->client, NULL, m, rtt_on_reply, &reply, 0);
        bus_message_unref(m);
        while (r >= 0 && !reply) {
                r = bus_client_process(t->client);
                if (r == 0)
                        r = bus_client_wait(t->client, BUS_TIMEOUT_INFINITE);
        }
        if (r >= 0)
                r = rtt_bus_reply(t, reply, sum);
        bus_message_unref(reply);
        *ret = bench_now() - t0;
        return r;
}

static int rtt_call_raw(Rtt *t, RttPath *p, uint64_t sum, double *ret) {
        double t0 = bench_now();
        ssize_t f;
        int r;

        memcpy(t->frame + RTT_FRAME - RTT_PAYLOAD, t->payload, RTT_PAYLOAD);
        r = bench_write_all(p->fd, t->frame, RTT_FRAME);
        if (r < 0)
                return r;
        f = bench_raw_read_frame(p->fd, p->in, sizeof(p->in), &p->in_len);
        if (f <= 0)
                return f == 0 ? -EPIPE : (int) f;
        r = f == RTT_FRAME ? rtt_check(t, p->in + RTT_FRAME - RTT_PAYLOAD, RTT_PAYLOAD, sum)
                           : -EIO;
        bench_raw_consume(p->in, &p->in_len, (size_t) f);
        *ret = bench_now() - t0;
        return r;
}

/* count calls on path k; timed ones are added to its samples. */
static int rtt_calls(Rtt *t, int k, unsigned count, bool timed) {
        RttPath *p = &t->path[k];

        for (unsigned i = 0; i < count; i++) {
                uint64_t sum = bench_fill(t->payload, RTT_PAYLOAD, ++t->seq * 0x9E3779B97F4A7C15u);
                double s = 0;
                int r;

                if (k == RTT_BUSD)
                        r = rtt_call_busd(t, sum, &s);
                else if (k == RTT_BUSD_ASYNC)
                        r = rtt_call_busd_async(t, sum, &s);
                else
                        r = rtt_call_raw(t, p, sum, &s);
                if (r >= 0 && timed)
                        r = bench_samples_add(&p->s, s);
                if (r < 0) {
                        bench_progress(t->ctx, NULL);
                        fprintf(stderr, "busd-bench: rtt %s: %s\n", rtt_names[k],
                                r == -EIO ? "wrong reply" : strerror(-r));
                        return r;
                }
        }
        return 0;
}

/* ---- Setting up, measuring. */

static int rtt_open(Rtt *t) {
        BenchAck a;
        int r;

        snprintf(t->name, sizeof(t->name), "org.busd.bench.Echo.p%d", (int) getpid());
        t->echo = (BenchEchoServer){ .address = t->ctx->address, .name = t->name,
                                     .method = RTT_METHOD, .label = "rtt" };
        bench_frame_init(t->frame, BENCH_RAW_ENVELOPE, RTT_PAYLOAD);
        memset(t->frame + BENCH_FRAME_PREAMBLE, 0x2a, BENCH_RAW_ENVELOPE);
        r = bench_group_init(&t->group);
        if (r >= 0)
                r = bench_raw_open(&t->group, false, bench_raw_echo, NULL,
                                   &t->path[RTT_DIRECT1].fd);
        if (r >= 0)
                r = bench_raw_open(&t->group, true, bench_raw_echo, NULL, &t->path[RTT_RELAY2].fd);
        if (r >= 0)
                r = bench_group_spawn(&t->group, bench_echo_server, &t->echo);
        if (r >= 0)
                r = bench_ack_read(&t->group, &a, BENCH_ACK_TIMEOUT_MS, -1, 0, NULL, NULL);
        if (r >= 0 && !(a.flags & BENCH_ACK_READY))
                r = -EPROTO;
        /* connected after every fork: no helper keeps the connection */
        if (r >= 0)
                r = bus_client_open(&t->client, t->ctx->address);
        return r;
}

static void rtt_measure(Rtt *t, unsigned n) {
        BenchContext *ctx = t->ctx;
        unsigned warmup = n < RTT_WARMUP ? n : RTT_WARMUP;
        bool more = true;

        for (int k = 0; k < RTT_N_PATHS; k++) {
                t->path[k].failed = rtt_calls(t, k, warmup, false) < 0;
                bench_samples_start(&t->path[k].s);
        }
        while (more) {
                more = false;
                for (int k = 0; k < RTT_N_PATHS; k++) {
                        RttPath *p = &t->path[k];
                        unsigned block = RTT_BLOCK;

                        if (p->failed || (p->s.n >= n &&
                                          bench_now() - p->s.started >= ctx->duration))
                                continue;
                        if (p->s.n < n && n - p->s.n < block)
                                block = n - (unsigned) p->s.n;
                        if (rtt_calls(t, k, block, true) < 0)
                                p->failed = true;
                        more = true;
                }
                bench_progress(ctx, "rtt: %zu calls per path of at least %u",
                               t->path[RTT_BUSD].s.n, n);
        }
        bench_progress(ctx, NULL);
        for (int k = 0; k < RTT_N_PATHS; k++) {
                RttPath *p = &t->path[k];

                if (p->failed)
                        ctx->failures++;
                else
                        bench_percentiles(p->s.t, p->s.n, rtt_quantiles, p->q, RTT_N_QUANTILES);
        }
}

/* ---- Figures and the table. */

static double rtt_q(const Rtt *t, int k, int q) {
        return t->path[k].failed ? NAN : t->path[k].q[q];
}

static void rtt_figures(Rtt *t) {
        BenchContext *ctx = t->ctx;

        for (int k = 0; k < RTT_N_PATHS; k++)
                for (int q = 0; q < RTT_N_QUANTILES; q++)
                        bench_figure(ctx, rtt_q(t, k, q) * 1e6, true, false, "rtt.%s_%s_us",
                                     rtt_names[k], rtt_quantile_names[q]);
        bench_figure(ctx, rtt_q(t, RTT_BUSD, RTT_P50) / rtt_q(t, RTT_RELAY2, RTT_P50), true, false,
                     "rtt.busd_vs_relay2_p50");
        bench_figure(ctx, rtt_q(t, RTT_BUSD, RTT_P99) / rtt_q(t, RTT_RELAY2, RTT_P99), true, false,
                     "rtt.busd_vs_relay2_p99");
        bench_figure(ctx, rtt_q(t, RTT_BUSD_ASYNC, RTT_P50) / rtt_q(t, RTT_RELAY2, RTT_P50), true,
                     false, "rtt.busd_async_vs_relay2_p50");
        bench_figure(ctx, rtt_q(t, RTT_RELAY2, RTT_P50) / rtt_q(t, RTT_DIRECT1, RTT_P50), true,
                     false, "rtt.relay2_vs_direct1_p50");
        bench_figure(ctx, (double) t->path[RTT_BUSD].s.n, !t->path[RTT_BUSD].failed, true,
                     "rtt.calls");
        bench_figure(ctx, (double) t->corrupt, true, true, "rtt.corrupt");
}

static void rtt_table(Rtt *t, unsigned n, unsigned warmup) {
        static const char *const what[RTT_N_PATHS] = {
                "bus_client_call() through busd",
                "bus_client_call_async() + bus_client_process()",
                "raw frames, client -> relay -> server and back",
                "raw frames over one socket pair",
        };
        FILE *f = t->ctx->human;
        char c[32];

        fprintf(f, "rtt: request and reply of %d B payload, one call at a time; per path at least\n"
                   "%u timed calls after %u warm-up calls, the paths taking turns.\n",
                RTT_PAYLOAD, n, warmup);
        fprintf(f, "\n%-11s", "path");
        for (int q = 0; q < RTT_N_QUANTILES; q++)
                bench_cell(f, rtt_quantile_names[q], 9);
        bench_cell(f, "p50/relay2", 11);
        fprintf(f, "  what\n");
        for (int k = 0; k < RTT_N_PATHS; k++) {
                double ratio = rtt_q(t, k, RTT_P50) / rtt_q(t, RTT_RELAY2, RTT_P50);

                fprintf(f, "%-11s", rtt_names[k]);
                for (int q = 0; q < RTT_N_QUANTILES; q++)
                        bench_cell(f, t->path[k].failed ? "failed"
                                                        : bench_time_text(rtt_q(t, k, q), c),
                                   9);
                if (isfinite(ratio))
                        snprintf(c, sizeof(c), "%.2f", ratio);
                bench_cell(f, isfinite(ratio) ? c : "-", 11);
                fprintf(f, "  %s\n", what[k]);
        }
        fprintf(f, "\ntimed calls per path: %zu; wrong replies: %u\n", t->path[RTT_BUSD].s.n,
                t->corrupt);
}

static int rtt_run(BenchContext *ctx) {
        Rtt *t;
        unsigned n;
        int r;

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->ctx = ctx;
        for (int k = 0; k < RTT_N_PATHS; k++)
                t->path[k].fd = -1;
        /* percentiles need many calls */
        n = bench_count_or(ctx, RTT_MIN_CALLS);

        bench_progress(ctx, "rtt: starting");
        r = rtt_open(t);
        if (r < 0) {
                bench_progress(ctx, NULL);
                fprintf(stderr, "busd-bench: rtt: cannot set up: %s\n", strerror(-r));
                for (int k = 0; k < RTT_N_PATHS; k++)
                        t->path[k].failed = true;
                ctx->failures++;
        } else
                rtt_measure(t, n);
        if (t->client) {
                (void) bus_client_flush(t->client);
                t->client = bus_client_unref(t->client);
        }
        if (bench_group_finish(&t->group) > 0) {
                fprintf(stderr, "busd-bench: rtt: a helper process failed\n");
                ctx->failures++;
        }

        rtt_figures(t);
        rtt_table(t, n, n < RTT_WARMUP ? n : RTT_WARMUP);
        for (int k = 0; k < RTT_N_PATHS; k++)
                bench_samples_free(&t->path[k].s);
        free(t);
        return 0;
}

const BenchScenario bench_scenario_rtt = {
        .name = "rtt",
        .summary = "request/reply round trip, 64 B, against a raw relay and a socket pair",
        .run = rtt_run,
};
