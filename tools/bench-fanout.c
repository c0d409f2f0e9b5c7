/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * busd-bench scenario "fanout": one publisher to N subscribers (N = 1, 8,
 * 64) through busd, 64-byte payloads: deliveries per second, and what one
 * delivery costs, time / (messages x N).
 *
 * Each N is a bus stream (bench-pubsub.c) on a topic of its own: the
 * publisher calls bus_client_publish() as fast as libbus takes it, each
 * subscriber process counts and checks every message and acks once per
 * round. A round is FANOUT_ROUND_DELIVERIES deliveries (fewer messages for
 * more subscribers), so what the broker may have queued stays the same for
 * every N. The three streams take turns round by round, so what else runs on
 * the machine falls on all of them alike; a figure is the median of its
 * rounds. Lost deliveries are counted from the subscribers' counts and from
 * busd's GetStats "dropped".
 *
 * The cost per delivery falls as N grows when the work per message (the
 * publisher's write, the broker reading, decoding and matching it) is shared
 * by its deliveries; what remains is the broker's write to each subscriber
 * and each subscriber's read.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include <libbus/bus.h>

#include "tools/bench.h"

#define FANOUT_ROUND_DELIVERIES 100000u
#define FANOUT_MIN_DELIVERIES 1000000u /* per N, unless --count (messages) says otherwise */

static const unsigned fanout_n[] = { 1, 8, 64 };
#define FANOUT_N (sizeof(fanout_n) / sizeof(fanout_n[0]))

typedef struct FanoutPath {
        BenchStream stream;
        BenchSamples cost; /* seconds per delivery, per round */
        uint64_t messages; /* at least, before it is done */
        bool failed;
        double per_delivery; /* seconds */
} FanoutPath;

static void fanout_fail(BenchContext *ctx, FanoutPath *p, const char *what, int r) {
        bench_progress(ctx, NULL);
        fprintf(stderr, "busd-bench: fanout to %u: %s: %s\n", p->stream.n, what,
                bench_stream_strerror(&p->stream, r));
        p->failed = true;
        ctx->failures++;
}

static void fanout_measure(BenchContext *ctx, FanoutPath *path) {
        bool more = true;

        while (more) {
                more = false;
                for (size_t i = 0; i < FANOUT_N; i++) {
                        FanoutPath *p = &path[i];
                        double t;
                        int r;

                        if (p->failed || (p->cost.n * p->stream.round >= p->messages &&
                                          bench_now() - p->cost.started >= ctx->duration))
                                continue;
                        bench_progress(ctx, "fanout: %u subscribers, %zu rounds", p->stream.n,
                                       p->cost.n);
                        r = bench_stream_round(&p->stream, &t);
                        if (r >= 0)
                                r = bench_samples_add(&p->cost,
                                                      t / (double) (p->stream.round * p->stream.n));
                        if (r < 0)
                                fanout_fail(ctx, p, "round", r);
                        more = true;
                }
        }
        bench_progress(ctx, NULL);
}

static void fanout_report(BenchContext *ctx, FanoutPath *path, uint64_t lost, uint64_t dropped,
                          bool dropped_valid) {
        double one = path[0].per_delivery, last = path[FANOUT_N - 1].per_delivery;
        uint64_t corrupt = 0;
        FILE *f = ctx->human;
        char c[32];

        for (size_t i = 0; i < FANOUT_N; i++)
                bench_figure(ctx, path[i].per_delivery * 1e9, true, false,
                             "fanout.per_delivery_ns_n%u", fanout_n[i]);
        for (size_t i = 0; i < FANOUT_N; i++)
                bench_figure(ctx, 1 / path[i].per_delivery, true, false,
                             "fanout.deliveries_per_s_n%u", fanout_n[i]);
        bench_figure(ctx, (double) lost, true, true, "fanout.lost");
        bench_figure(ctx, (double) dropped, dropped_valid, true, "fanout.busd_dropped");
        bench_figure(ctx, last / one, true, false, "fanout.n%u_vs_n1_per_delivery",
                     fanout_n[FANOUT_N - 1]);

        fprintf(f, "fanout: 1 publisher -> N subscribers through busd, %d B payloads, as fast\n"
                   "as busd takes them, in rounds of up to %u deliveries; the Ns take turns.\n\n",
                BENCH_STREAM_PAYLOAD, FANOUT_ROUND_DELIVERIES);
        fprintf(f, "%-4s", "N");
        bench_cell(f, "ns/delivery", 12);
        bench_cell(f, "deliveries/s", 13);
        bench_cell(f, "msgs/s", 10);
        bench_cell(f, "vs N=1", 7);
        bench_cell(f, "messages", 10);
        fputc('\n', f);
        for (size_t i = 0; i < FANOUT_N; i++) {
                FanoutPath *p = &path[i];
                double d = p->per_delivery;

                corrupt += p->stream.corrupt;
                fprintf(f, "%-4u", fanout_n[i]);
                if (!isfinite(d)) {
                        bench_cell(f, p->failed ? "failed" : "-", 12);
                        fputc('\n', f);
                        continue;
                }
                snprintf(c, sizeof(c), "%.0f", d * 1e9);
                bench_cell(f, c, 12);
                snprintf(c, sizeof(c), "%.0f", 1 / d);
                bench_cell(f, c, 13);
                snprintf(c, sizeof(c), "%.0f", 1 / (d * fanout_n[i]));
                bench_cell(f, c, 10);
                snprintf(c, sizeof(c), "%.2f", d / one);
                bench_cell(f, isfinite(d / one) ? c : "-", 7);
                snprintf(c, sizeof(c), "%llu", (unsigned long long) (p->stream.sent / fanout_n[i]));
                bench_cell(f, c, 10);
                fputc('\n', f);
        }
        fprintf(f, "\nlost: %llu, corrupt: %llu, busd dropped (GetStats): ",
                (unsigned long long) lost, (unsigned long long) corrupt);
        if (dropped_valid)
                fprintf(f, "%llu\n", (unsigned long long) dropped);
        else
                fprintf(f, "unknown\n");
}

static int fanout_run(BenchContext *ctx) {
        FanoutPath *path;
        uint64_t before = 0, after = 0, lost = 0, dropped = 0;
        bus_client *stats = NULL;
        bool dropped_valid;
        int r;

        path = calloc(FANOUT_N, sizeof(*path));
        if (!path)
                return -ENOMEM;

        for (size_t i = 0; i < FANOUT_N; i++) {
                FanoutPath *p = &path[i];
                uint64_t round = FANOUT_ROUND_DELIVERIES / fanout_n[i];

                p->messages = bench_count_or(ctx, FANOUT_MIN_DELIVERIES / fanout_n[i]);
                if (round > p->messages)
                        round = p->messages;
                bench_progress(ctx, "fanout: starting %u subscribers", fanout_n[i]);
                r = bench_stream_open(&p->stream, BENCH_STREAM_BUS, fanout_n[i], round,
                                      ctx->address);
                if (r < 0)
                        fanout_fail(ctx, p, "cannot set up", r);
                bench_samples_start(&p->cost);
        }
        /* GetStats on a connection of its own, made after every fork */
        dropped_valid = bus_client_open(&stats, ctx->address) >= 0 &&
                        bench_bus_dropped(stats, &before) >= 0;

        fanout_measure(ctx, path);

        dropped_valid = dropped_valid && bench_bus_dropped(stats, &after) >= 0;
        if (dropped_valid)
                dropped = after - before;
        stats = bus_client_unref(stats);
        /* in reverse: later subscribers hold copies of earlier streams' pipes */
        for (size_t i = FANOUT_N; i-- > 0;) {
                FanoutPath *p = &path[i];

                if (bench_stream_close(&p->stream) > 0 && !p->failed) {
                        fprintf(stderr, "busd-bench: fanout to %u: a subscriber failed\n",
                                fanout_n[i]);
                        ctx->failures++;
                }
                p->per_delivery = p->failed ? NAN : bench_median(p->cost.t, p->cost.n);
                lost += p->stream.lost;
        }
        /* a drop shows in the subscribers' counts too: the larger of the two */
        if (dropped > lost)
                lost = dropped;
        if (dropped > 0) {
                fprintf(stderr, "busd-bench: fanout: busd dropped %llu deliveries\n",
                        (unsigned long long) dropped);
                ctx->failures++;
        }

        fanout_report(ctx, path, lost, dropped, dropped_valid);
        for (size_t i = 0; i < FANOUT_N; i++)
                bench_samples_free(&path[i].cost);
        free(path);
        return 0;
}

const BenchScenario bench_scenario_fanout = {
        .name = "fanout",
        .summary = "1 publisher -> 1, 8, 64 subscribers, 64 B, cost per delivery",
        .run = fanout_run,
};
