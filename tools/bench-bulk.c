/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * busd-bench scenario "bulk": large payloads from one publisher to 1 and to
 * 8 subscribers, through busd inline (BUS_SHM_NEVER), through busd in shared
 * memory (BUS_SHM_ALWAYS, produced in place with
 * bus_message_reserve_payload()) and with the default (BUS_SHM_AUTO), against
 * baselines without a broker: the bytes copied through socket pairs, and a
 * sealed memfd handed over socket pairs (bench-link.c has the transports).
 *
 * A measurement is one (transport, receivers, size): a warm-up message, then
 * messages until it has ctx->count of them and ctx->duration seconds. Each
 * message is stop-and-wait: the publisher fills the payload, sends it, and
 * waits until every receiver has read all of it, summed its 8-byte words and
 * acked the sum. The time of a message runs from before the fill to the last
 * ack, so producing and consuming are measured, and shared memory is not
 * counted as free. A measurement's figure is the median of its messages.
 *
 * Each (transport, receivers) pair gets fresh receiver processes that serve
 * every size in turn; busd's RSS is read before and after the largest size.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <libbus/bus.h>

#include "tools/bench.h"

static const uint64_t bulk_sizes[] = {
        4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20,
};
#define BULK_N_SIZES (sizeof(bulk_sizes) / sizeof(bulk_sizes[0]))

static const unsigned bulk_receivers[] = { 1, 8 };
#define BULK_N_RECEIVERS (sizeof(bulk_receivers) / sizeof(bulk_receivers[0]))

/* In figure names: "inline_4KiB_1subs", "busd_64MiB_8subs". */
static const char *const bulk_names[BENCH_N_TRANSPORTS] = {
        [BENCH_TRANSPORT_SOCKET] = "socket",
        [BENCH_TRANSPORT_MEMFD] = "memfd",
        [BENCH_TRANSPORT_BUS_INLINE] = "inline",
        [BENCH_TRANSPORT_BUS_SHM] = "shm",
        [BENCH_TRANSPORT_BUS_AUTO] = "busd",
};

/* Table columns, left to right. */
static const BenchTransport bulk_columns[BENCH_N_TRANSPORTS] = {
        BENCH_TRANSPORT_BUS_INLINE, BENCH_TRANSPORT_BUS_SHM, BENCH_TRANSPORT_BUS_AUTO,
        BENCH_TRANSPORT_SOCKET,     BENCH_TRANSPORT_MEMFD,
};

typedef struct BulkResult {
        double seconds; /* median per message */
        bool failed;
        unsigned messages; /* 0: not measured */
        unsigned shm;      /* of them, delivered through shared memory to all */
} BulkResult;

typedef struct BulkMemory {
        bool valid;
        int64_t growth; /* busd's VmRSS after - before the largest size */
        int64_t peak;   /* VmHWM after - VmRSS before (the peak is reset before) */
} BulkMemory;

typedef struct Bulk {
        BenchContext *ctx;
        size_t n_sizes;
        BulkResult res[BENCH_N_TRANSPORTS][BULK_N_RECEIVERS][BULK_N_SIZES];
        BulkMemory mem[BENCH_N_TRANSPORTS];
        uint64_t seq;
        uint64_t lost, corrupt, wrong_transport;
} Bulk;

static bool is_bus(BenchTransport t) {
        return t >= BENCH_TRANSPORT_BUS_INLINE;
}

/* ---- Measuring. */

/* Sends one message and collects every receiver's ack: the time in
 * *ret_seconds, whether every receiver got it through shared memory in
 * *ret_shm. A lost, corrupt or wrongly transported delivery is counted and
 * fails the message (-EIO). */
static int bulk_one(Bulk *b, BenchLink *l, uint64_t size, double *ret_seconds, bool *ret_shm) {
        uint64_t seed = ++b->seq * UINT64_C(0xD1B54A32D192ED03) + size, sum = 0;
        unsigned acked = 0, shm = 0;
        bool bad = false;
        double t0;
        int r;

        t0 = bench_now();
        r = bench_link_send(l, size, seed, &sum);
        if (r < 0)
                return r;
        while (acked < l->n) {
                BenchAck a;

                r = bench_link_ack(l, &a, BENCH_ACK_TIMEOUT_MS);
                if (r < 0) {
                        b->lost += l->n - acked;
                        return r;
                }
                acked++;
                b->lost += a.missed;
                if (a.missed > 0)
                        bad = true;
                if ((a.flags & BENCH_ACK_ERROR) || a.size != size || a.sum != sum) {
                        b->corrupt++;
                        bad = true;
                }
                if (a.flags & BENCH_ACK_SHM)
                        shm++;
                if ((l->transport == BENCH_TRANSPORT_BUS_SHM && !(a.flags & BENCH_ACK_SHM)) ||
                    (l->transport == BENCH_TRANSPORT_BUS_INLINE && (a.flags & BENCH_ACK_SHM))) {
                        b->wrong_transport++;
                        bad = true;
                }
        }
        *ret_seconds = bench_now() - t0;
        *ret_shm = shm == l->n;
        return bad ? -EIO : 0;
}

/* busd's memory: before (after false) stores VmRSS in *before and resets
 * the peak; after records the growth. Skipped for a busd we did not start. */
static void bulk_memory(Bulk *b, BenchTransport t, bool after, uint64_t *before) {
        BulkMemory *mem = &b->mem[t];
        pid_t pid = b->ctx->busd_pid;
        uint64_t now, hwm;

        if (pid <= 0)
                return;
        if (!after) {
                if (bench_proc_memory(pid, "VmRSS", before) < 0)
                        *before = 0;
                (void) bench_proc_reset_peak(pid);
                return;
        }
        if (*before == 0 || bench_proc_memory(pid, "VmRSS", &now) < 0 ||
            bench_proc_memory(pid, "VmHWM", &hwm) < 0)
                return;
        if (!mem->valid || (int64_t) (now - *before) > mem->growth)
                mem->growth = (int64_t) (now - *before);
        if (!mem->valid || (int64_t) (hwm - *before) > mem->peak)
                mem->peak = (int64_t) (hwm - *before);
        mem->valid = true;
}

static int bulk_measure(Bulk *b, BenchLink *l, size_t k, BulkResult *res) {
        BenchContext *ctx = b->ctx;
        uint64_t size = bulk_sizes[k], rss_before = 0;
        BenchSamples s = {};
        char sz[32];
        double t;
        bool shm;
        int r;

        bench_progress(ctx, "bulk: %s, %u receiver%s, %s", bulk_names[l->transport], l->n,
                       l->n == 1 ? "" : "s", bench_size_name(size, sz));
        if (is_bus(l->transport) && k == b->n_sizes - 1)
                bulk_memory(b, l->transport, false, &rss_before);

        r = bulk_one(b, l, size, &t, &shm); /* warm-up */
        bench_samples_start(&s);
        while (r >= 0 && !bench_samples_enough(ctx, &s)) {
                r = bulk_one(b, l, size, &t, &shm);
                if (r >= 0) {
                        res->shm += shm;
                        r = bench_samples_add(&s, t);
                }
        }
        if (r >= 0) {
                res->messages = (unsigned) s.n;
                res->seconds = bench_median(s.t, s.n);
                if (rss_before > 0)
                        bulk_memory(b, l->transport, true, &rss_before);
        }
        bench_samples_free(&s);
        return r;
}

/* One transport and number of receivers, every size. A failure ends the
 * group: its remaining sizes are marked failed. */
static void bulk_run_group(Bulk *b, BenchTransport t, unsigned ri) {
        BenchContext *ctx = b->ctx;
        unsigned n = bulk_receivers[ri];
        char what[64], sz[32];
        BenchLink l;
        size_t k = 0;
        int r;

        snprintf(what, sizeof(what), "bulk %s, %u receiver%s", bulk_names[t], n, n == 1 ? "" : "s");
        r = bench_link_open(&l, t, n, ctx->address, bulk_sizes[b->n_sizes - 1]);
        if (r < 0) {
                bench_progress(ctx, NULL);
                fprintf(stderr, "busd-bench: %s: cannot set up: %s\n", what,
                        bench_link_strerror(&l, r));
        }
        while (r >= 0 && k < b->n_sizes) {
                r = bulk_measure(b, &l, k, &b->res[t][ri][k]);
                if (r < 0) {
                        bench_progress(ctx, NULL);
                        fprintf(stderr, "busd-bench: %s, %s: %s\n", what,
                                bench_size_name(bulk_sizes[k], sz),
                                r == -EIO ? "lost, corrupt or wrongly transported payload"
                                          : bench_link_strerror(&l, r));
                        break;
                }
                k++;
        }
        if (r < 0) {
                ctx->failures++;
                for (; k < b->n_sizes; k++)
                        b->res[t][ri][k].failed = true;
        }
        if (bench_link_close(&l) > 0 && r >= 0) {
                fprintf(stderr, "busd-bench: %s: a receiver failed\n", what);
                ctx->failures++;
        }
}

/* ---- Figures and the table. */

static double bulk_seconds(const Bulk *b, BenchTransport t, unsigned ri, size_t k) {
        const BulkResult *res = &b->res[t][ri][k];

        return res->failed || res->messages == 0 ? NAN : res->seconds;
}

/* The name of a measurement in figures: "inline_4KiB_1subs",
 * "socket_copy_4KiB", "memfd_fanout_4KiB_8subs". */
static const char *bulk_stem(BenchTransport t, unsigned ri, size_t k, char *buf, size_t size) {
        unsigned n = bulk_receivers[ri];
        char sz[32];

        bench_size_name(bulk_sizes[k], sz);
        if (t == BENCH_TRANSPORT_SOCKET && n == 1)
                snprintf(buf, size, "socket_copy_%s", sz);
        else if (t == BENCH_TRANSPORT_MEMFD && n == 1)
                snprintf(buf, size, "memfd_handoff_%s", sz);
        else
                snprintf(buf, size, "%s_%s_%usubs",
                         t == BENCH_TRANSPORT_SOCKET  ? "socket_fanout"
                         : t == BENCH_TRANSPORT_MEMFD ? "memfd_fanout"
                                                      : bulk_names[t],
                         sz, n);
        return buf;
}

/* The smallest size from which shm beats inline at every larger size too
 * (its index), or -1. */
static ssize_t bulk_crossover(const Bulk *b, unsigned ri) {
        ssize_t from = -1;

        for (ssize_t k = (ssize_t) b->n_sizes - 1; k >= 0; k--) {
                double shm = bulk_seconds(b, BENCH_TRANSPORT_BUS_SHM, ri, k);
                double in = bulk_seconds(b, BENCH_TRANSPORT_BUS_INLINE, ri, k);

                if (!(shm < in))
                        break;
                from = k;
        }
        return from;
}

/* The smallest size from which BUS_SHM_AUTO sent every message through
 * shared memory (its index), or -1. */
static ssize_t bulk_auto_shm_from(const Bulk *b, unsigned ri) {
        ssize_t from = -1;

        for (ssize_t k = (ssize_t) b->n_sizes - 1; k >= 0; k--) {
                const BulkResult *res = &b->res[BENCH_TRANSPORT_BUS_AUTO][ri][k];

                if (res->messages == 0 || res->shm != res->messages)
                        break;
                from = k;
        }
        return from;
}

/* The ratios reported per size: each busd figure over its baseline, and
 * shm over inline (below 1 from the crossover on). */
enum { BULK_N_RATIOS = 4 };
static const char *const bulk_ratio_names[BULK_N_RATIOS] = {
        "inline_vs_socket", "shm_vs_memfd", "busd_vs_best", "shm_vs_inline",
};
static const char *const bulk_ratio_headers[BULK_N_RATIOS] = {
        "inl/sock", "shm/mfd", "busd/best", "shm/inl",
};

static void bulk_ratios(const Bulk *b, unsigned ri, size_t k, double ret[BULK_N_RATIOS]) {
        double t[BENCH_N_TRANSPORTS];

        for (int m = 0; m < BENCH_N_TRANSPORTS; m++)
                t[m] = bulk_seconds(b, m, ri, k);
        ret[0] = t[BENCH_TRANSPORT_BUS_INLINE] / t[BENCH_TRANSPORT_SOCKET];
        ret[1] = t[BENCH_TRANSPORT_BUS_SHM] / t[BENCH_TRANSPORT_MEMFD];
        /* the default against the better of the two ways without a broker
         * (NAN if either is missing) */
        ret[2] = t[BENCH_TRANSPORT_BUS_AUTO] /
                 (t[BENCH_TRANSPORT_SOCKET] < t[BENCH_TRANSPORT_MEMFD] ? t[BENCH_TRANSPORT_SOCKET]
                                                                       : t[BENCH_TRANSPORT_MEMFD]);
        ret[3] = t[BENCH_TRANSPORT_BUS_SHM] / t[BENCH_TRANSPORT_BUS_INLINE];
}

static void bulk_figures(Bulk *b) {
        BenchContext *ctx = b->ctx;
        BulkMemory all = {};
        char stem[64], sz[32];

        for (unsigned ri = 0; ri < BULK_N_RECEIVERS; ri++) {
                unsigned n = bulk_receivers[ri];

                for (size_t k = 0; k < b->n_sizes; k++) {
                        double ratio[BULK_N_RATIOS];

                        for (int m = 0; m < BENCH_N_TRANSPORTS; m++) {
                                double t = bulk_seconds(b, m, ri, k);

                                bulk_stem(m, ri, k, stem, sizeof(stem));
                                bench_figure(ctx, t * 1e3, true, false, "bulk.%s_ms", stem);
                                bench_figure(ctx, (double) bulk_sizes[k] * n / t / 1e6, true,
                                             false, "bulk.%s_MBps", stem);
                        }
                        bench_size_name(bulk_sizes[k], sz);
                        bulk_ratios(b, ri, k, ratio);
                        for (int i = 0; i < BULK_N_RATIOS; i++)
                                bench_figure(ctx, ratio[i], true, false, "bulk.%s_%s_%usubs_ratio",
                                             bulk_ratio_names[i], sz, n);
                }
        }
        for (unsigned ri = 0; ri < BULK_N_RECEIVERS; ri++) {
                ssize_t k = bulk_crossover(b, ri);

                bench_figure(ctx, k >= 0 ? (double) bulk_sizes[k] : NAN, k >= 0, true,
                             "bulk.crossover_%usubs_bytes", bulk_receivers[ri]);
        }
        for (unsigned ri = 0; ri < BULK_N_RECEIVERS; ri++) {
                ssize_t k = bulk_auto_shm_from(b, ri);

                bench_figure(ctx, k >= 0 ? (double) bulk_sizes[k] : NAN, k >= 0, true,
                             "bulk.busd_shm_from_%usubs_bytes", bulk_receivers[ri]);
        }
        bench_figure(ctx, (double) b->lost, true, true, "bulk.lost");
        bench_figure(ctx, (double) b->corrupt, true, true, "bulk.corrupt");
        bench_figure(ctx, (double) b->wrong_transport, true, true, "bulk.wrong_transport");

        /* busd's memory over the largest size: the worst of all busd
         * transports, then inline and shm alone */
        for (int m = BENCH_TRANSPORT_BUS_INLINE; m < BENCH_N_TRANSPORTS; m++) {
                if (!b->mem[m].valid)
                        continue;
                if (!all.valid || b->mem[m].growth > all.growth)
                        all.growth = b->mem[m].growth;
                if (!all.valid || b->mem[m].peak > all.peak)
                        all.peak = b->mem[m].peak;
                all.valid = true;
        }
        bench_figure(ctx, (double) all.growth, all.valid, true, "bulk.busd_rss_growth_bytes");
        bench_figure(ctx, (double) all.peak, all.valid, true, "bulk.busd_rss_peak_growth_bytes");
        for (int m = BENCH_TRANSPORT_BUS_INLINE; m <= BENCH_TRANSPORT_BUS_SHM; m++) {
                bench_figure(ctx, (double) b->mem[m].growth, b->mem[m].valid, true,
                             "bulk.%s_rss_growth_bytes", bulk_names[m]);
                bench_figure(ctx, (double) b->mem[m].peak, b->mem[m].valid, true,
                             "bulk.%s_rss_peak_growth_bytes", bulk_names[m]);
        }
}

static const char *cell_time(const Bulk *b, BenchTransport t, unsigned ri, size_t k,
                             char buf[static 32]) {
        if (b->res[t][ri][k].failed)
                return "failed";
        return bench_time_text(bulk_seconds(b, t, ri, k), buf);
}

static const char *cell_ratio(double v, char buf[static 32]) {
        if (!isfinite(v))
                return "-";
        snprintf(buf, 32, "%.2f", v);
        return buf;
}

static const char *bytes_text(int64_t v, char buf[static 32]) {
        if (llabs(v) >= 1 << 20)
                snprintf(buf, 32, "%+.1f MiB", (double) v / 1048576.0);
        else
                snprintf(buf, 32, "%+.0f KiB", (double) v / 1024.0);
        return buf;
}

/* Right-aligns s in width columns ("µ" takes two bytes but one column). */
static void cell(FILE *f, const char *s, int width) {
        int columns = 0;

        for (const char *p = s; *p; p++)
                columns += ((unsigned char) *p & 0xC0) != 0x80;
        fprintf(f, " %*s%s", width > columns ? width - columns : 0, "", s);
}

static void bulk_table_times(const Bulk *b, FILE *f, unsigned ri) {
        unsigned n = bulk_receivers[ri];
        char c[32], sz[32], title[64];

        snprintf(title, sizeof(title), "%u subscriber%s: median time per message", n,
                 n == 1 ? "" : "s");
        fprintf(f, "\n%-*s%s\n", 8 + 10 * BENCH_N_TRANSPORTS + 2, title,
                "ratios (below 1: first is faster)");
        fprintf(f, "%-8s", "size");
        for (int i = 0; i < BENCH_N_TRANSPORTS; i++)
                cell(f, bulk_names[bulk_columns[i]], 9);
        fputc(' ', f);
        for (int i = 0; i < BULK_N_RATIOS; i++)
                cell(f, bulk_ratio_headers[i], 9);
        fputc('\n', f);
        for (size_t k = 0; k < b->n_sizes; k++) {
                double ratio[BULK_N_RATIOS];

                fprintf(f, "%-8s", bench_size_name(bulk_sizes[k], sz));
                for (int i = 0; i < BENCH_N_TRANSPORTS; i++)
                        cell(f, cell_time(b, bulk_columns[i], ri, k, c), 9);
                fputc(' ', f);
                bulk_ratios(b, ri, k, ratio);
                for (int i = 0; i < BULK_N_RATIOS; i++)
                        cell(f, cell_ratio(ratio[i], c), 9);
                fputc('\n', f);
        }
}

static void bulk_table_rates(const Bulk *b, FILE *f, unsigned ri) {
        unsigned n = bulk_receivers[ri];
        char c[32], sz[32];

        fprintf(f, "\n%u subscriber%s: MB/s (payload x receivers / time)\n", n,
                n == 1 ? "" : "s");
        fprintf(f, "%-8s", "size");
        for (int i = 0; i < BENCH_N_TRANSPORTS; i++)
                cell(f, bulk_names[bulk_columns[i]], 9);
        fputc('\n', f);
        for (size_t k = 0; k < b->n_sizes; k++) {
                fprintf(f, "%-8s", bench_size_name(bulk_sizes[k], sz));
                for (int i = 0; i < BENCH_N_TRANSPORTS; i++) {
                        BenchTransport m = bulk_columns[i];
                        double t = bulk_seconds(b, m, ri, k);

                        if (isfinite(t)) {
                                snprintf(c, sizeof(c), "%.0f", (double) bulk_sizes[k] * n / t / 1e6);
                                cell(f, c, 9);
                        } else
                                cell(f, b->res[m][ri][k].failed ? "failed" : "-", 9);
                }
                fputc('\n', f);
        }
}

static void bulk_table(const Bulk *b) {
        FILE *f = b->ctx->human;
        char sz[32], g[32], p[32];

        fprintf(f, "bulk: one publisher; every receiver reads and checks the whole payload.\n"
                   "Stop-and-wait: a message's time runs from filling it to the last ack.\n"
                   "  inline  busd, BUS_SHM_NEVER        socket  no broker: socket pair(s)\n"
                   "  shm     busd, BUS_SHM_ALWAYS       memfd   no broker: sealed memfd\n"
                   "  busd    busd, BUS_SHM_AUTO (default threshold %zu KiB)\n",
                BUS_SHM_THRESHOLD_DEFAULT >> 10);
        for (unsigned ri = 0; ri < BULK_N_RECEIVERS; ri++) {
                bulk_table_times(b, f, ri);
                bulk_table_rates(b, f, ri);
        }

        fputc('\n', f);
        for (unsigned ri = 0; ri < BULK_N_RECEIVERS; ri++) {
                ssize_t k = bulk_crossover(b, ri), a = bulk_auto_shm_from(b, ri);
                unsigned n = bulk_receivers[ri];

                fprintf(f, "crossover, %u subscriber%s: ", n, n == 1 ? "" : "s");
                if (k < 0)
                        fprintf(f, "shm is not faster than inline up to %s",
                                bench_size_name(bulk_sizes[b->n_sizes - 1], sz));
                else
                        fprintf(f, "shm faster than inline from %s on",
                                bench_size_name(bulk_sizes[k], sz));
                if (a >= 0)
                        fprintf(f, " (BUS_SHM_AUTO used shm from %s)",
                                bench_size_name(bulk_sizes[a], sz));
                fputc('\n', f);
        }
        fprintf(f, "lost: %llu, corrupt: %llu, wrong transport: %llu\n",
                (unsigned long long) b->lost, (unsigned long long) b->corrupt,
                (unsigned long long) b->wrong_transport);
        if (b->ctx->busd_pid <= 0) {
                fprintf(f, "busd RSS: not measured (busd not started by busd-bench)\n");
                return;
        }
        fprintf(f, "busd RSS growth over the %s runs:",
                bench_size_name(bulk_sizes[b->n_sizes - 1], sz));
        for (int m = BENCH_TRANSPORT_BUS_INLINE, first = 1; m < BENCH_N_TRANSPORTS; m++)
                if (b->mem[m].valid) {
                        fprintf(f, "%s %s %s (peak %s)", first ? "" : ",", bulk_names[m],
                                bytes_text(b->mem[m].growth, g), bytes_text(b->mem[m].peak, p));
                        first = 0;
                }
        fputc('\n', f);
}

static int bulk_run(BenchContext *ctx) {
        Bulk *b;

        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->ctx = ctx;
        while (b->n_sizes < BULK_N_SIZES && bulk_sizes[b->n_sizes] <= ctx->max_size)
                b->n_sizes++;
        if (b->n_sizes == 0) { /* busd-bench checks --max-size */
                free(b);
                return -EINVAL;
        }

        /* For each number of receivers: the baselines, then busd. */
        for (unsigned ri = 0; ri < BULK_N_RECEIVERS; ri++)
                for (int m = 0; m < BENCH_N_TRANSPORTS; m++)
                        bulk_run_group(b, m, ri);
        bench_progress(ctx, NULL);

        bulk_figures(b);
        bulk_table(b);
        free(b);
        return 0;
}

const BenchScenario bench_scenario_bulk = {
        .name = "bulk",
        .summary = "payloads of 4KiB-64MiB to 1 and 8 subscribers, inline and shm",
        .run = bulk_run,
};
