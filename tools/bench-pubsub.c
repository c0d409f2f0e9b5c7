/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * busd-bench: streams of small messages (see bench.h), and the scenario
 * "pubsub": one publisher to one subscriber, 64-byte payloads, messages per
 * second received, through busd and through the raw relay.
 *
 * A stream is this process publishing and n subscriber processes:
 *
 *   bus    each subscriber opens its own bus_client after the fork and
 *          subscribes to the stream's own topic; the publisher calls
 *          bus_client_publish(), which is what an application does;
 *   relay  raw frames (bench-relay.c): the publisher writes them 64 KiB at
 *          a time to the raw relay, which forwards them frame by frame to
 *          the subscriber, who reads them 64 KiB at a time. The two ends
 *          cost as little as they can, so the relay is what limits the
 *          rate: the floor for any broker. Unbatched, the publisher writes
 *          each frame with its own write(), as libbus sends each publish.
 *
 * Every payload is filled with bench_fill() from its sequence number; the
 * subscriber sums each payload's words and acks, once per round, how many it
 * got, their sum and what the broker said it missed. The publisher compares
 * with what it sent: a shortfall is lost, a wrong sum corrupt.
 *
 * pubsub runs a bus stream and two relay streams (batched and unbatched)
 * side by side and alternates rounds between them; the figure of each is the median rate of its rounds.
 * busd's GetStats "dropped" is read before and after.
 */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <libbus/bus.h>

#include "tools/bench.h"

#define STREAM_FRAME (BENCH_FRAME_PREAMBLE + BENCH_RAW_ENVELOPE + BENCH_STREAM_PAYLOAD)
#define STREAM_READY_TIMEOUT_MS 10000
#define STREAM_BATCH (BENCH_RAW_READ / STREAM_FRAME) /* frames per raw write() */

#define PUBSUB_ROUND 100000u           /* messages: about 20 MB queued at worst */
#define PUBSUB_MIN_MESSAGES 1000000u /* per path, unless --count says otherwise */

/* ---- Subscribers (helper processes). */

typedef struct StreamSub {
        BenchGroup *group;
        unsigned index;
        uint64_t round;
        uint64_t count, sum, missed;
        uint32_t flags;
} StreamSub;

static int stream_count(StreamSub *s, const void *data, size_t size, uint64_t missed) {
        BenchAck a;
        int r;

        if (size == BENCH_STREAM_PAYLOAD)
                s->sum += bench_sum(data, size);
        else
                s->flags |= BENCH_ACK_ERROR;
        s->count++;
        s->missed += missed;
        if (s->count + s->missed < s->round)
                return 0;
        a = (BenchAck){ .receiver = s->index, .flags = s->flags, .size = s->count,
                        .sum = s->sum, .missed = s->missed };
        r = bench_ack_send(s->group, &a);
        s->count = s->sum = s->missed = 0;
        s->flags = 0;
        return r;
}

static int stream_on_message(bus_message *m, void *userdata) {
        StreamSub *s = userdata;
        const void *data = NULL;
        size_t size = 0;

        if (bus_message_get_payload(m, &data, &size) < 0)
                size = 0;
        return stream_count(s, data, size, bus_message_get_missed(m));
}

static int stream_bus_sub(BenchGroup *g, unsigned index, void *userdata) {
        BenchStream *st = userdata;
        StreamSub s = { .group = g, .index = index, .round = st->round };
        BenchAck a = { .receiver = index, .flags = BENCH_ACK_READY };
        bus_client *c = NULL;
        int r;

        r = bus_client_open(&c, st->address);
        if (r >= 0)
                r = bus_client_subscribe(c, NULL, st->topic, NULL, 0, stream_on_message, &s);
        if (r >= 0)
                r = bench_ack_send(g, &a);
        if (r >= 0)
                r = bench_bus_loop(g, c);
        if (r < 0)
                fprintf(stderr, "busd-bench: subscriber: %s\n", strerror(-r));
        bus_client_unref(c);
        return r < 0 ? 1 : 0;
}

static int stream_raw_sub(BenchGroup *g, unsigned index, int fd, void *userdata) {
        BenchStream *st = userdata;
        StreamSub s = { .group = g, .index = index, .round = st->round };
        BenchAck a = { .receiver = index, .flags = BENCH_ACK_READY };
        size_t size = 2 * BENCH_RAW_READ, len = 0;
        unsigned char *buf = malloc(size);
        int r;

        r = buf ? bench_ack_send(g, &a) : -ENOMEM;
        while (r >= 0) {
                size_t off = 0;
                ssize_t n, f;

                n = read(fd, buf + len, size - len < BENCH_RAW_READ ? size - len : BENCH_RAW_READ);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        r = n < 0 ? -errno : len > 0 ? -EPIPE : 0;
                        break;
                }
                len += (size_t) n;
                while (r >= 0 && (f = bench_frame_size(buf + off, len - off)) > 0) {
                        r = stream_count(&s, buf + off + (size_t) f - BENCH_STREAM_PAYLOAD,
                                         (size_t) f - BENCH_FRAME_PREAMBLE - BENCH_RAW_ENVELOPE,
                                         0);
                        off += (size_t) f;
                }
                if (r >= 0 && f < 0)
                        r = (int) f;
                bench_raw_consume(buf, &len, off);
        }
        free(buf);
        if (r < 0)
                fprintf(stderr, "busd-bench: raw subscriber: %s\n", strerror(-r));
        return r < 0 ? 1 : 0;
}

/* ---- The publisher. */

static void stream_on_log(int priority, const char *message, void *userdata) {
        BenchStream *s = userdata;

        if (priority <= LOG_WARNING && !s->error[0])
                snprintf(s->error, sizeof(s->error), "%s", message);
}

static bool stream_is_bus(BenchStreamKind kind) {
        return kind == BENCH_STREAM_BUS || kind == BENCH_STREAM_BUS_BATCHED;
}

int bench_stream_open(BenchStream *s, BenchStreamKind kind, unsigned n, uint64_t round,
                      const char *address) {
        static unsigned streams;
        int r;

        *s = (BenchStream){ .kind = kind, .n = n, .round = round, .address = address, .fd = -1 };
        snprintf(s->topic, sizeof(s->topic), "bench.stream.p%d.s%u", (int) getpid(), ++streams);
        r = bench_group_init(&s->group);
        if (r < 0)
                return r;
        if (n == 0 || n > BENCH_MAX_RECEIVERS || round == 0 ||
            (!stream_is_bus(kind) && n != 1))
                return -EINVAL;
        if (!stream_is_bus(kind))
                r = bench_raw_open(&s->group, true, stream_raw_sub, s, &s->fd);
        else
                for (unsigned i = 0; i < n && r >= 0; i++)
                        r = bench_group_spawn(&s->group, stream_bus_sub, s);
        for (unsigned i = 0; i < n && r >= 0; i++) {
                BenchAck a;

                r = bench_ack_read(&s->group, &a, STREAM_READY_TIMEOUT_MS, -1, 0, NULL, NULL);
                if (r >= 0 && !(a.flags & BENCH_ACK_READY))
                        r = -EPROTO;
        }
        if (r >= 0 && stream_is_bus(kind)) {
                r = bus_client_open(&s->client, address);
                if (r >= 0)
                        bus_client_set_log(s->client, stream_on_log, s);
                if (r >= 0 && kind == BENCH_STREAM_BUS_BATCHED)
                        r = bus_client_set_batching(s->client, 1);
        }
        return r;
}

/* The raw publisher: frames go out STREAM_BATCH at a time, one write()
 * each, which is what a client library does when it queues messages faster
 * than the socket drains; the relay is then what limits the rate. Unbatched,
 * each frame has its write(), as libbus sends each publish at once. */
static int stream_publish_raw(BenchStream *s, uint64_t *sum) {
        static unsigned char batch[STREAM_BATCH * STREAM_FRAME];
        size_t n = 0, max = s->kind == BENCH_STREAM_RELAY ? STREAM_BATCH : 1;
        int r;

        if (batch[0] == 0)
                for (size_t i = 0; i < STREAM_BATCH; i++) {
                        bench_frame_init(batch + i * STREAM_FRAME, BENCH_RAW_ENVELOPE,
                                         BENCH_STREAM_PAYLOAD);
                        memset(batch + i * STREAM_FRAME + BENCH_FRAME_PREAMBLE, 0x2a,
                               BENCH_RAW_ENVELOPE);
                }
        for (uint64_t i = 0; i < s->round; i++) {
                unsigned char *payload = batch + (n + 1) * STREAM_FRAME - BENCH_STREAM_PAYLOAD;

                *sum += bench_fill(payload, BENCH_STREAM_PAYLOAD, ++s->seq * 0x9E3779B97F4A7C15u);
                if (++n == max || i + 1 == s->round) {
                        r = bench_write_all(s->fd, batch, n * STREAM_FRAME);
                        if (r < 0)
                                return r;
                        n = 0;
                }
        }
        return 0;
}

static int stream_publish(BenchStream *s, uint64_t *sum) {
        unsigned char payload[BENCH_STREAM_PAYLOAD];
        int r;

        if (!stream_is_bus(s->kind))
                return stream_publish_raw(s, sum);
        for (uint64_t i = 0; i < s->round; i++) {
                *sum += bench_fill(payload, BENCH_STREAM_PAYLOAD, ++s->seq * 0x9E3779B97F4A7C15u);
                /* libbus queues what the socket does not take at once; past
                 * its own limit, wait until it has written that */
                while ((r = bus_client_publish(s->client, s->topic, payload,
                                               BENCH_STREAM_PAYLOAD, 0)) == -ENOBUFS) {
                        r = bus_client_flush(s->client);
                        if (r < 0)
                                return r;
                }
                if (r < 0)
                        return r;
        }
        return bus_client_flush(s->client);
}

/* While waiting for acks: read what busd sends the publisher (a refused
 * publish is answered with an error, which the log callback records). */
static int stream_pump(void *userdata) {
        BenchStream *s = userdata;
        int r;

        while ((r = bus_client_process(s->client)) > 0)
                ;
        if (r < 0)
                return r;
        return s->error[0] ? -EREMOTEIO : 0;
}

int bench_stream_round(BenchStream *s, double *ret_seconds) {
        double t0 = bench_now();
        uint64_t sum = 0;
        bool bad = false;
        int r;

        r = stream_publish(s, &sum);
        s->sent += s->round * s->n;
        for (unsigned acked = 0; r >= 0 && acked < s->n; acked++) {
                BenchAck a;

                if (s->client)
                        r = bench_ack_read(&s->group, &a, BENCH_ACK_TIMEOUT_MS,
                                           bus_client_get_fd(s->client),
                                           (short) bus_client_get_events(s->client), stream_pump,
                                           s);
                else
                        r = bench_ack_read(&s->group, &a, BENCH_ACK_TIMEOUT_MS, -1, 0, NULL, NULL);
                if (r < 0) {
                        s->lost += (s->n - acked) * s->round;
                        break;
                }
                s->received += a.size;
                if (a.size < s->round)
                        s->lost += s->round - a.size, bad = true;
                if ((a.flags & BENCH_ACK_ERROR) || a.size > s->round ||
                    (a.size == s->round && a.sum != sum))
                        s->corrupt++, bad = true;
        }
        *ret_seconds = bench_now() - t0;
        return r < 0 ? r : bad ? -EIO : 0;
}

const char *bench_stream_strerror(BenchStream *s, int r) {
        if (r == -EREMOTEIO && s->error[0])
                return s->error;
        if (r == -ECHILD)
                return "a subscriber exited";
        if (r == -EIO)
                return "lost or corrupt messages";
        return strerror(-r);
}

int bench_stream_close(BenchStream *s) {
        if (s->client) {
                (void) bus_client_flush(s->client);
                s->client = bus_client_unref(s->client);
        }
        return bench_group_finish(&s->group);
}

/* ---- busd's count of drops. */

static int pb_varint(const unsigned char **p, const unsigned char *end, uint64_t *ret) {
        uint64_t v = 0;

        for (int shift = 0; shift < 64 && *p < end; shift += 7) {
                unsigned char b = *(*p)++;

                v |= (uint64_t) (b & 0x7f) << shift;
                if (!(b & 0x80)) {
                        *ret = v;
                        return 0;
                }
        }
        return -EBADMSG;
}

/* GetStatsReply is decoded by hand: the tool sees only <libbus/bus.h>, not
 * the generated protobuf code. Field 11 is "dropped"; absent means 0. */
int bench_bus_dropped(bus_client *c, uint64_t *ret) {
        const unsigned char *p, *end;
        bus_message *reply = NULL;
        const void *data = NULL;
        uint64_t dropped = 0;
        size_t size = 0;
        int r;

        r = bus_client_call_method(c, "bus", "GetStats", NULL, 0, 0, NULL, &reply);
        if (r >= 0)
                r = bus_message_get_payload(reply, &data, &size);
        p = end = data;
        if (r >= 0)
                end += size;
        while (r >= 0 && p < end) {
                uint64_t key, v = 0, skip = 0;

                r = pb_varint(&p, end, &key);
                if (r < 0)
                        break;
                switch (key & 7) {
                case 0: /* varint */
                        r = pb_varint(&p, end, &v);
                        break;
                case 2: /* length-delimited */
                        r = pb_varint(&p, end, &skip);
                        break;
                case 1:
                        skip = 8;
                        break;
                case 5:
                        skip = 4;
                        break;
                default:
                        r = -EBADMSG;
                }
                if (r >= 0 && skip > (uint64_t) (end - p))
                        r = -EBADMSG;
                if (r < 0)
                        break;
                p += skip;
                if (key == (11 << 3 | 0))
                        dropped = v;
        }
        bus_message_unref(reply);
        if (r >= 0)
                *ret = dropped;
        return r;
}

/* ---- The scenario. */

enum { PUBSUB_BUSD, PUBSUB_BUSD_BATCHED, PUBSUB_RELAY, PUBSUB_RELAY_UNBATCHED, PUBSUB_N_PATHS };
static const char *const pubsub_names[PUBSUB_N_PATHS] = { "busd", "busd_batched", "relay",
                                                          "relay_unbatched" };
static const BenchStreamKind pubsub_kinds[PUBSUB_N_PATHS] = {
        BENCH_STREAM_BUS, BENCH_STREAM_BUS_BATCHED, BENCH_STREAM_RELAY, BENCH_STREAM_RELAY_UNBATCHED,
};

typedef struct PubsubPath {
        BenchStream stream;
        BenchSamples rates; /* messages per second, per round */
        bool failed;
        double rate;
} PubsubPath;

static void pubsub_fail(BenchContext *ctx, PubsubPath *p, int k, const char *what, int r) {
        bench_progress(ctx, NULL);
        fprintf(stderr, "busd-bench: pubsub %s: %s: %s\n", pubsub_names[k], what,
                bench_stream_strerror(&p->stream, r));
        p->failed = true;
        ctx->failures++;
}

static void pubsub_measure(BenchContext *ctx, PubsubPath *path, uint64_t total) {
        bool more = true;

        while (more) {
                more = false;
                for (int k = 0; k < PUBSUB_N_PATHS; k++) {
                        PubsubPath *p = &path[k];
                        double t;
                        int r;

                        if (p->failed || (p->rates.n * p->stream.round >= total &&
                                          bench_now() - p->rates.started >= ctx->duration))
                                continue;
                        r = bench_stream_round(&p->stream, &t);
                        if (r >= 0)
                                r = bench_samples_add(&p->rates, (double) p->stream.round / t);
                        if (r < 0)
                                pubsub_fail(ctx, p, k, "round", r);
                        more = true;
                }
                bench_progress(ctx, "pubsub: %zu of %llu messages", path[0].rates.n *
                               path[0].stream.round, (unsigned long long) total);
        }
}

static void pubsub_report(BenchContext *ctx, PubsubPath *path, uint64_t lost, uint64_t dropped,
                          bool dropped_valid) {
        double busd = path[PUBSUB_BUSD].rate, relay = path[PUBSUB_RELAY].rate;
        double unbatched = path[PUBSUB_RELAY_UNBATCHED].rate;
        uint64_t corrupt = 0;
        FILE *f = ctx->human;
        char c[32];

        for (int k = 0; k < PUBSUB_N_PATHS; k++)
                bench_figure(ctx, path[k].rate, true, false, "pubsub.%s_msgs_per_s",
                             pubsub_names[k]);
        bench_figure(ctx, (double) lost, true, true, "pubsub.lost");
        bench_figure(ctx, (double) dropped, dropped_valid, true, "pubsub.busd_dropped");
        bench_figure(ctx, busd / relay, true, false, "pubsub.busd_vs_relay");
        bench_figure(ctx, busd / unbatched, true, false, "pubsub.busd_vs_relay_unbatched");
        bench_figure(ctx, path[PUBSUB_BUSD_BATCHED].rate / relay, true, false,
                     "pubsub.busd_batched_vs_relay");

        fprintf(f, "pubsub: 1 publisher -> 1 subscriber, %d B payloads, as fast as the path\n"
                   "takes them, in rounds of %llu messages; the paths take turns.\n"
                   "  busd             bus_client_publish() -> busd -> subscriber's bus_client\n"
                   "  busd_batched     the same, the publisher with bus_client_set_batching()\n"
                   "  relay            raw frames, 64 KiB a write() -> raw relay -> raw subscriber\n"
                   "  relay_unbatched  the same, one write() per frame\n\n",
                BENCH_STREAM_PAYLOAD, (unsigned long long) path[0].stream.round);
        fprintf(f, "%-16s", "path");
        bench_cell(f, "msgs/s", 12);
        bench_cell(f, "ns/msg", 9);
        bench_cell(f, "busd/path", 10);
        bench_cell(f, "messages", 10);
        fputc('\n', f);
        for (int k = 0; k < PUBSUB_N_PATHS; k++) {
                PubsubPath *p = &path[k];

                corrupt += p->stream.corrupt;
                fprintf(f, "%-16s", pubsub_names[k]);
                if (p->failed || !isfinite(p->rate)) {
                        bench_cell(f, p->failed ? "failed" : "-", 12);
                        fputc('\n', f);
                        continue;
                }
                snprintf(c, sizeof(c), "%.0f", p->rate);
                bench_cell(f, c, 12);
                snprintf(c, sizeof(c), "%.0f", 1e9 / p->rate);
                bench_cell(f, c, 9);
                snprintf(c, sizeof(c), "%.3f", busd / p->rate);
                bench_cell(f, isfinite(busd / p->rate) ? c : "-", 10);
                snprintf(c, sizeof(c), "%llu", (unsigned long long) p->stream.sent);
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

static int pubsub_run(BenchContext *ctx) {
        PubsubPath *path;
        uint64_t total = bench_count_or(ctx, PUBSUB_MIN_MESSAGES);
        uint64_t before = 0, after = 0, lost = 0, dropped = 0;
        bool dropped_valid = false;
        int r;

        path = calloc(PUBSUB_N_PATHS, sizeof(*path));
        if (!path)
                return -ENOMEM;

        bench_progress(ctx, "pubsub: starting");
        /* busd last: the publisher's connection is made after every fork;
         * the streams are finished in reverse (see bench.h) */
        for (int k = PUBSUB_N_PATHS - 1; k >= 0; k--) {
                r = bench_stream_open(&path[k].stream, pubsub_kinds[k], 1,
                                      total < PUBSUB_ROUND ? total : PUBSUB_ROUND, ctx->address);
                if (r < 0)
                        pubsub_fail(ctx, &path[k], k, "cannot set up", r);
                bench_samples_start(&path[k].rates);
        }
        if (!path[PUBSUB_BUSD].failed)
                dropped_valid = bench_bus_dropped(path[PUBSUB_BUSD].stream.client, &before) >= 0;

        pubsub_measure(ctx, path, total);
        bench_progress(ctx, NULL);

        if (dropped_valid && !path[PUBSUB_BUSD].failed)
                dropped_valid = bench_bus_dropped(path[PUBSUB_BUSD].stream.client, &after) >= 0;
        else
                dropped_valid = false;
        if (dropped_valid)
                dropped = after - before;
        for (int k = 0; k < PUBSUB_N_PATHS; k++) {
                PubsubPath *p = &path[k];

                if (bench_stream_close(&p->stream) > 0 && !p->failed) {
                        fprintf(stderr, "busd-bench: pubsub %s: a subscriber failed\n",
                                pubsub_names[k]);
                        ctx->failures++;
                }
                p->rate = p->failed ? NAN : bench_median(p->rates.t, p->rates.n);
                lost += k == PUBSUB_BUSD && dropped > p->stream.lost ? dropped : p->stream.lost;
        }
        if (dropped > 0 && !path[PUBSUB_BUSD].failed) {
                fprintf(stderr, "busd-bench: pubsub: busd dropped %llu deliveries\n",
                        (unsigned long long) dropped);
                ctx->failures++;
        }

        pubsub_report(ctx, path, lost, dropped, dropped_valid);
        for (int k = 0; k < PUBSUB_N_PATHS; k++)
                bench_samples_free(&path[k].rates);
        free(path);
        return 0;
}

const BenchScenario bench_scenario_pubsub = {
        .name = "pubsub",
        .summary = "1 publisher -> 1 subscriber, 64 B, messages/s, against a raw relay",
        .run = pubsub_run,
};
