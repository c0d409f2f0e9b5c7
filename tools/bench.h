/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * busd-bench: what its scenarios share.
 *
 * Files: busd-bench.c (options, output, the list of scenarios),
 * bench-util.c (figures, timing, payload patterns, helper processes),
 * bench-link.c (the transports: socket pairs, sealed memfds, busd),
 * bench-busd.c (pinning, the busd the bench starts), and one
 * bench-<scenario>.c per scenario (bench-bulk.c).
 *
 * BenchContext is the run's settings (which bus, pinning, how long to
 * measure) and its results: a flat list of figures, each named
 * "<scenario>.<what>_<unit>", which --json prints, and a text buffer where a
 * scenario writes its human table, printed at the end otherwise.
 *
 * Processes: busd-bench pins itself (bench_pin()) before it starts busd or
 * any helper, so every process it starts inherits the same CPU. Helpers are
 * forked into a BenchGroup: they share one control pipe, whose write end only
 * the bench holds (a helper exits when it reads EOF there), and one ack pipe
 * on which each helper writes a fixed-size BenchAck per message (writes of at
 * most PIPE_BUF bytes are atomic, so acks of several helpers never mix).
 * A helper never uses a bus_client it did not open itself after the fork.
 *
 * Payloads are filled with bench_fill() and verified with bench_sum(): the sum
 * of the payload's 8-byte words, so every receiver reads every byte.
 *
 * Functions return 0 or a positive value on success and a negative errno on
 * failure, as in libbus.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <libbus/bus.h>

#define BENCH_MAX_RECEIVERS 64
#define BENCH_ACK_TIMEOUT_MS 30000 /* per message; a lost message ends its measurement */

typedef struct BenchFigure {
        char *name;
        double value;
        bool valid;   /* false: printed as null (not measured, or no such value) */
        bool integer; /* printed without a fraction */
} BenchFigure;

typedef struct BenchContext {
        /* settings */
        const char *address; /* the bus in use */
        pid_t busd_pid;      /* the busd we started, or -1 for --address */
        int pin_cpu;         /* -1: not pinned */
        double duration;     /* seconds per measurement, at least (0: by count only) */
        unsigned count;      /* messages per measurement, at least (0: by duration only) */
        uint64_t max_size;   /* largest payload to try */
        bool progress;       /* stderr is a terminal */

        /* results */
        BenchFigure *figures;
        size_t n_figures;
        FILE *human; /* the human-readable report */
        char *human_buf;
        size_t human_size;
        unsigned failures; /* measurements that failed (lost, corrupt, error) */
} BenchContext;

/* A scenario: run() measures, adds figures and writes its table to
 * ctx->human. It returns a negative errno only when it could not run at all;
 * failed measurements are counted in ctx->failures. */
typedef struct BenchScenario {
        const char *name;
        const char *summary;
        int (*run)(BenchContext *ctx);
} BenchScenario;

extern const BenchScenario bench_scenario_rtt;
extern const BenchScenario bench_scenario_pubsub;
extern const BenchScenario bench_scenario_fanout;
extern const BenchScenario bench_scenario_bulk;
extern const BenchScenario bench_scenario_conns;
extern const BenchScenario bench_scenario_cpu;

/* ---- Figures and output (bench-util.c). */

/* Adds a figure; name is a printf format. valid false records a null. */
void bench_figure(BenchContext *ctx, double value, bool valid, bool integer, const char *format,
                  ...) __attribute__((format(printf, 5, 6)));
/* The value of a figure added earlier, or NAN. */
double bench_figure_get(BenchContext *ctx, const char *name);
/* A progress line on stderr (overwritten by the next), only on a terminal;
 * format NULL clears it. */
void bench_progress(BenchContext *ctx, const char *format, ...)
        __attribute__((format(printf, 2, 3)));
/* "4KiB", "64MiB": the size as used in figure names. */
const char *bench_size_name(uint64_t size, char buf[static 32]);
/* "12.3 µs", "45.6 ms", "1.23 s". */
const char *bench_time_text(double seconds, char buf[static 32]);

/* ---- Time, payloads. */

/* CLOCK_MONOTONIC in seconds. */
double bench_now(void);
/* Fills size bytes (a multiple of 8) with words derived from seed and
 * returns their sum. */
uint64_t bench_fill(void *p, size_t size, uint64_t seed);
/* The sum of the 8-byte words of p; reads every byte. */
uint64_t bench_sum(const void *p, size_t size);
/* Median of n values (reorders them); NAN for n == 0. */
double bench_median(double *v, size_t n);

/* Collects per-message times of one measurement and says when it is long
 * enough: at least ctx->count messages and ctx->duration seconds. */
typedef struct BenchSamples {
        double *t;
        size_t n, allocated;
        double started;
} BenchSamples;

void bench_samples_start(BenchSamples *s);
int bench_samples_add(BenchSamples *s, double seconds);
bool bench_samples_enough(const BenchContext *ctx, const BenchSamples *s);
void bench_samples_free(BenchSamples *s);

/* ---- Helper processes (bench-util.c). */

enum {
        BENCH_ACK_READY = 1 << 0, /* the helper is set up; no payload */
        BENCH_ACK_SHM = 1 << 1,   /* the payload came through shared memory */
        BENCH_ACK_ERROR = 1 << 2, /* the helper could not read the payload */
};

typedef struct BenchAck {
        uint32_t receiver;
        uint32_t flags;
        uint64_t size;
        uint64_t sum;
        uint64_t missed; /* messages the broker dropped before this one */
} BenchAck;

typedef struct BenchGroup {
        pid_t pids[BENCH_MAX_RECEIVERS];
        int pidfds[BENCH_MAX_RECEIVERS]; /* -1 where the kernel has no pidfd_open() */
        unsigned n;
        int ctl[2]; /* helpers read ctl[0]; the bench holds ctl[1] */
        int ack[2]; /* helpers write ack[1]; the bench reads ack[0] */
        /* descriptors the helpers must not keep (the bench's ends of
         * per-helper sockets); closed in every helper after fork() */
        int parent_fds[BENCH_MAX_RECEIVERS];
} BenchGroup;

/* A helper: runs in the child with its index; returns its exit code. */
typedef int (*BenchHelperFn)(BenchGroup *g, unsigned index, void *userdata);

int bench_group_init(BenchGroup *g);
/* Forks a helper running fn; it dies with the bench (PR_SET_PDEATHSIG). */
int bench_group_spawn(BenchGroup *g, BenchHelperFn fn, void *userdata);
/* Sends an ack from a helper. */
int bench_ack_send(BenchGroup *g, const BenchAck *a);
/* Reads one ack, waiting up to timeout_ms; while waiting, also polls
 * extra_fd (-1: none) for extra_events and calls pump(userdata) when it is
 * ready (pump returns < 0 to give up, its errno is returned). -ETIMEDOUT,
 * -ECHILD when a helper exited. */
int bench_ack_read(BenchGroup *g, BenchAck *ret, int timeout_ms, int extra_fd, short extra_events,
                   int (*pump)(void *userdata), void *userdata);
/* Closes the control pipe (helpers exit), reaps them (SIGKILL after 5 s)
 * and closes every descriptor. Returns the number of helpers that
 * did not exit 0. Safe on a zeroed or half-built group. */
int bench_group_finish(BenchGroup *g);

/* ---- Links (bench-link.c): this process sends, n receiver processes read
 * every byte and ack the sum of its 8-byte words. */

typedef enum BenchTransport {
        BENCH_TRANSPORT_SOCKET,     /* socket pairs: the bytes are copied */
        BENCH_TRANSPORT_MEMFD,      /* socket pairs carry a sealed memfd */
        BENCH_TRANSPORT_BUS_INLINE, /* through busd, BUS_SHM_NEVER */
        BENCH_TRANSPORT_BUS_SHM,    /* through busd, BUS_SHM_ALWAYS */
        BENCH_TRANSPORT_BUS_AUTO,   /* through busd, BUS_SHM_AUTO */
        BENCH_N_TRANSPORTS,
} BenchTransport;

typedef struct BenchLink {
        BenchTransport transport;
        unsigned n;
        const char *address;
        BenchGroup group;
        int child_fds[BENCH_MAX_RECEIVERS]; /* receivers' socket ends, during spawning */
        void *buf;                          /* the socket sender's payload */
        bus_client *client;                 /* the bus sender */
        char error[256];                    /* the first error libbus logged */
} BenchLink;

/* Starts n receivers on a transport and waits until each is ready (for the
 * bus, subscribed); then connects the sender to the bus at address. max_size
 * is the largest payload that will be sent. Call bench_link_close() after,
 * also on failure. */
int bench_link_open(BenchLink *l, BenchTransport transport, unsigned n, const char *address,
                    size_t max_size);
/* Produces a payload of size bytes (a multiple of 8) with bench_fill(seed),
 * in place where the transport allows (the memfd, libbus's buffer), and sends
 * it to every receiver; its sum in *ret_sum. For the bus, returns once libbus
 * has written it all. */
int bench_link_send(BenchLink *l, uint64_t size, uint64_t seed, uint64_t *ret_sum);
/* The next receiver's ack (bench_ack_read()); meanwhile processes the bus
 * sender's input: -EREMOTEIO when libbus logged an error (a refused publish). */
int bench_link_ack(BenchLink *l, BenchAck *ret, int timeout_ms);
/* Text for an error of the functions above. */
const char *bench_link_strerror(BenchLink *l, int r);
/* Disconnects, stops the receivers; the number of them that failed. */
int bench_link_close(BenchLink *l);

/* ---- Pinning and the broker (bench-busd.c). */

/* Pins this process (and so everything it starts later) to cpu. */
int bench_pin(int cpu);
/* The lowest CPU this process may run on (0 unless a cpuset excludes it). */
int bench_first_cpu(void);
/* The CPUs a process may run on, as "0" or "0-1" (ret of at least 64 bytes). */
int bench_affinity_text(pid_t pid, char *ret, size_t size);

typedef struct BenchBusd {
        pid_t pid;
        int pidfd;
        int notify_fd;
        char dir[100]; /* leaves room for "/notify" in sun_path */
        char address[108];
        char notify_path[108];
        char log_path[128];
        const char *binary;
        int stop_timeout_ms; /* before SIGKILL; 0 for the default 5 s */
} BenchBusd;

/* Finds busd: explicit (--busd), $BUSD_BINARY, ../busd/busd from the
 * executable's directory (the build tree), busd beside the executable, or
 * "busd" for a PATH search. buf: at least PATH_MAX bytes. */
const char *bench_busd_binary(const char *explicit_path, char *buf, size_t size);
/* Starts busd with extra_args (NULL-terminated) on a socket in a private
 * temporary directory and waits for READY=1. On failure prints why (with
 * busd's log) and cleans up. */
int bench_busd_start(BenchBusd *b, const char *binary, const char *const *extra_args);
/* The steps of bench_busd_start(), for a busd run under a wrapper (the cpu
 * scenario's callgrind): prepare() makes the directory (b->address,
 * b->notify_path, b->log_path) and the notify socket; exec() runs argv with
 * the log as output and NOTIFY_SOCKET set, and waits for READY=1. Both print
 * why on failure and clean up; binary names busd in messages. */
int bench_busd_prepare(BenchBusd *b, const char *binary);
int bench_busd_exec(BenchBusd *b, const char *const *argv);
/* SIGTERM, reap (SIGKILL after 5 s), remove the directory. Safe to repeat. */
void bench_busd_stop(BenchBusd *b);
/* VmRSS or VmHWM ("VmRSS", "VmHWM") of a process, in bytes. */
int bench_proc_memory(pid_t pid, const char *field, uint64_t *ret);
/* Resets the process's peak RSS (VmHWM) to its current RSS
 * (/proc/PID/clear_refs). */
int bench_proc_reset_peak(pid_t pid);

/* ---- Latency figures (bench-util.c). */

/* Sorts the n values of v and stores their q[i]-quantiles (0 < q <= 1,
 * nearest rank: the smallest value with at least q * n values at or below
 * it) in ret[i], for i < k; NAN for n == 0. */
void bench_percentiles(double *v, size_t n, const double *q, double *ret, size_t k);

/* ---- Raw frames and the raw relay (bench-relay.c).
 *
 * The baselines without a broker send frames in the bus's format
 * (docs/protocol.md): the 16-byte preamble, then BENCH_RAW_ENVELOPE opaque
 * bytes standing for the protobuf envelope (about the size of a delivered
 * envelope), then the payload. Nothing decodes the envelope.
 *
 * bench_raw_open() starts the far end of a raw path as a helper process of a
 * group, on one end of a SOCK_STREAM socket pair, and with relay a relay
 * process in between (bench -> relay -> far end and back: two hops each way).
 * The relay is an epoll loop that reads what arrives into a buffer (64 KiB a
 * read, as busd reads), cuts it into frames by their preamble, and forwards
 * all complete frames with one writev(), an iovec per frame; while the other
 * side cannot take more, it stops reading (the broker's flow control). It is
 * the floor for any broker: no routing, no envelope, nothing queued per
 * receiver. The bench's end is blocking and kept in the group's parent_fds,
 * so bench_group_finish() closes it; each process exits on EOF from the one
 * before it.
 *
 * Groups opened one after another must be finished in reverse order: a later
 * group's helpers hold copies of an earlier group's pipes and socket ends
 * until they exit. */

#define BENCH_FRAME_PREAMBLE 16
#define BENCH_FRAME_MAGIC UINT32_C(0xB05D0001)
#define BENCH_RAW_ENVELOPE 48
#define BENCH_RAW_READ (64u << 10) /* bytes per read(), as busd and libbus */
#define BENCH_RAW_FRAME_MAX BENCH_RAW_READ

/* Writes a preamble for an envelope and an inline payload of these sizes. */
void bench_frame_init(void *p, uint32_t envelope_len, uint32_t payload_len);
/* The size of the frame at the start of the n bytes at p: 0 while it is not
 * complete, -EBADMSG for a bad preamble or one over BENCH_RAW_FRAME_MAX. */
ssize_t bench_frame_size(const void *p, size_t n);

/* The far end of a raw path: runs in a helper with its (blocking) socket;
 * returns the helper's exit code. */
typedef int (*BenchRawFn)(BenchGroup *g, unsigned index, int fd, void *userdata);

int bench_raw_open(BenchGroup *g, bool relay, BenchRawFn fn, void *userdata, int *ret_fd);
/* A BenchRawFn: sends every complete frame back as it is, with one write()
 * per read(); exits 0 on EOF. */
int bench_raw_echo(BenchGroup *g, unsigned index, int fd, void *userdata);
/* Reads from a blocking fd until buf (of size bytes, holding *len already)
 * starts with a complete frame; its size, 0 on EOF, negative errno. The
 * caller drops the frame with bench_raw_consume(). */
ssize_t bench_raw_read_frame(int fd, void *buf, size_t size, size_t *len);
void bench_raw_consume(void *buf, size_t *len, size_t frame);
/* write() all of it to a blocking fd. */
int bench_write_all(int fd, const void *p, size_t size);

/* ---- Streams of small messages (bench-pubsub.c), for pubsub and fanout.
 *
 * This process publishes rounds of messages of BENCH_STREAM_PAYLOAD bytes as
 * fast as the path takes them; each of n subscriber processes counts them,
 * sums their payloads' 8-byte words, and acks once per round: the count, the
 * sum and what the broker reported missed. A round is small enough for the
 * broker's queue (--max-queue-bytes) even if the subscriber read nothing
 * meanwhile, so a fast publisher cannot make the broker drop: nothing may be
 * lost. The time of a round runs from its first publish to the last ack. */

#define BENCH_STREAM_PAYLOAD 64

typedef enum BenchStreamKind {
        BENCH_STREAM_BUS,   /* bus_client_publish() through busd */
        BENCH_STREAM_BUS_BATCHED, /* the same with bus_client_set_batching() */
        BENCH_STREAM_RELAY, /* raw frames, 64 KiB a write(), through the raw relay */
        BENCH_STREAM_RELAY_UNBATCHED, /* the same, one write() per frame */
} BenchStreamKind;

typedef struct BenchStream {
        BenchStreamKind kind;
        unsigned n;      /* subscribers */
        uint64_t round;  /* messages per round */
        const char *address;
        BenchGroup group;
        bus_client *client; /* the bus publisher */
        int fd;             /* the raw publisher's socket */
        char topic[64];
        uint64_t seq;
        uint64_t sent, received, lost; /* deliveries: messages x subscribers */
        uint64_t corrupt;              /* acks with a wrong sum or count */
        char error[256]; /* the first error libbus logged */
} BenchStream;

/* Starts n subscribers (n must be 1 for the relay), waits until each is
 * subscribed, then connects the publisher. Call bench_stream_close() after,
 * also on failure. */
int bench_stream_open(BenchStream *s, BenchStreamKind kind, unsigned n, uint64_t round,
                      const char *address);
/* One round; its time in *ret_seconds. -EIO if a message was lost or
 * corrupt (counted in lost and corrupt). */
int bench_stream_round(BenchStream *s, double *ret_seconds);
const char *bench_stream_strerror(BenchStream *s, int r);
/* Disconnects, stops the subscribers; the number that failed. */
int bench_stream_close(BenchStream *s);
/* GetStats of the broker: deliveries it dropped for full receivers so far. */
int bench_bus_dropped(bus_client *c, uint64_t *ret);

/* ---- Scenarios with a default count of their own (bench-util.c). */

/* --count if it was given, else the scenario's own default. busd-bench
 * keeps no flag for it: its defaults are 3 messages and 0.2 s, and --count
 * alone sets the duration to 0, so only "--count 3 --duration S" (S > 0)
 * reads as not given. */
unsigned bench_count_or(const BenchContext *ctx, unsigned fallback);

/* ---- Small shared pieces (bench-util.c, bench-link.c). */

/* Writes s right-aligned in width columns after a space ("µ" counts one). */
void bench_cell(FILE *f, const char *s, int width);
/* A helper's loop for its own bus_client: processes it and waits for it
 * until the bench closes the control pipe (0) or the connection fails
 * (negative errno). */
int bench_bus_loop(BenchGroup *g, bus_client *c);

/* The echo service of rtt and cpu, a BenchHelperFn whose userdata is a
 * BenchEchoServer: it takes name (alone: a name in use is an error),
 * answers method with the request's own payload, acknowledges READY and
 * runs bench_bus_loop(). label names the scenario in its error message. */
typedef struct BenchEchoServer {
        const char *address, *name, *method, *label;
} BenchEchoServer;
int bench_echo_server(BenchGroup *g, unsigned index, void *userdata);
