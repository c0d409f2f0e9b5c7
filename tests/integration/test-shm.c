/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Integration test: shared-memory payloads through a real busd, between
 * separate processes. Payloads of 1, 16 and 64 MiB in sealed memfds (filled
 * in place with bus_message_reserve_payload(), or copied by
 * bus_message_set_payload() above the connection's threshold) arrive byte for
 * byte at one and at eight subscribers, next to inline ones for comparison;
 * a shared-memory payload on a request and on its reply; the memfd counting
 * against the broker's descriptor limit; a retained shared-memory message
 * that outlives its publisher; the broker refusing memfds that are not
 * sealed, not the announced size, not memfds at all, or too large; the
 * per-sender quota of shared memory held in the broker; and the broker's
 * memory staying flat while it forwards 64 MiB to eight subscribers.
 *
 * Payloads are compared by a 64-bit FNV-1a over 64-bit words, computed by the
 * sender as it produces the bytes and by each receiver on what it maps. Raw
 * frames (built with protobuf-c) send what libbus never would. Every wait has
 * a deadline and waits on a condition, never on time alone.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libbus/bus.h>

#include "libbus/wire.h"
#include "proto/bus.pb-c.h"
#include "tests/lib/raw-frame.h"
#include "tests/lib/tap.h"
#include "tests/lib/util-busd.h"

/* Deadline of any one wait. Generous: 64 MiB read by eight processes on a
 * loaded machine under a sanitizer takes seconds; this only bounds how long
 * a broken run takes to fail. */
#define WAIT_MS 20000
#define WAIT_USEC ((uint64_t) WAIT_MS * 1000)

#define KiB ((size_t) 1024)
#define MiB ((size_t) 1024 * 1024)
#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

static TestBusd busd;

/* In a child, where tap_check() would only mark the child's own copy of the
 * case: print a diagnostic and count the failure. */
#define child_check(failures, expr)                                                     \
        do {                                                                            \
                if (!(expr)) {                                                          \
                        printf("# child %d: %s:%d: check failed: %s\n", (int) getpid(), \
                               __FILE__, __LINE__, #expr);                              \
                        (failures)++;                                                   \
                }                                                                       \
        } while (0)

/* ---- Payload bytes and their checksum. */

/* Deterministic pseudo-random bytes (xorshift64), a word at a time. */
static void fill(void *buf, size_t size, uint64_t seed) {
        uint8_t *p = buf;
        uint64_t x = seed * 0x9e3779b97f4a7c15ULL | 1;
        size_t i = 0;

        for (; i + 8 <= size; i += 8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                memcpy(p + i, &x, 8);
        }
        for (; i < size; i++)
                p[i] = (uint8_t) (x >> (8 * (i % 8)));
}

/* FNV-1a over 64-bit words (then the tail bytes), seeded with the size:
 * order-sensitive, and cheap enough for 64 MiB in eight processes. */
static uint64_t checksum(const void *data, size_t size) {
        const uint8_t *p = data;
        uint64_t h = 0xcbf29ce484222325ULL ^ size;
        size_t i = 0;

        for (; i + 8 <= size; i += 8) {
                uint64_t w;

                memcpy(&w, p + i, 8);
                h = (h ^ w) * 0x100000001b3ULL;
        }
        for (; i < size; i++)
                h = (h ^ p[i]) * 0x100000001b3ULL;
        return h;
}

/* The checksum of size bytes from fill(seed). */
static uint64_t expected_checksum(size_t size, uint64_t seed) {
        uint8_t *buf = malloc(size ?: 1);
        uint64_t sum;

        assert(buf);
        fill(buf, size, seed);
        sum = checksum(buf, size);
        free(buf);
        return sum;
}

/* ---- Plain descriptor I/O with deadlines. */



/* Memfds a process holds: entries of /proc/PID/fd that link to one. */
static int count_memfds(pid_t pid) {
        char dir[64], path[sizeof(dir) + 256 + 2], link[256];
        struct dirent *de;
        DIR *d;
        int n = 0;

        snprintf(dir, sizeof(dir), "/proc/%d/fd", (int) pid);
        d = opendir(dir);
        if (!d)
                return -errno;
        while ((de = readdir(d))) {
                ssize_t len;

                if (de->d_name[0] == '.')
                        continue;
                snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
                len = readlink(path, link, sizeof(link) - 1);
                if (len <= 0)
                        continue;
                link[len] = '\0';
                if (strncmp(link, "/memfd:", 7) == 0)
                        n++;
        }
        closedir(d);
        return n;
}

/* VmRSS of a process in KiB, or -1. */
static long vm_rss_kib(pid_t pid) {
        char path[64], line[256];
        long kib = -1;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
                        break;
        fclose(f);
        return kib;
}

/* A sealed (or not) memfd of size bytes; filled from seed unless seed is 0,
 * which leaves it sparse: its size is all the broker looks at, and a sparse
 * one costs no memory. */
static int make_memfd(size_t size, unsigned seals, uint64_t seed) {
        int fd = memfd_create("test-payload", MFD_CLOEXEC | MFD_ALLOW_SEALING);

        assert(fd >= 0);
        assert(ftruncate(fd, (off_t) size) == 0);
        if (seed) {
                uint8_t *p = malloc(size);

                assert(p);
                fill(p, size, seed);
                assert(pwrite(fd, p, size, 0) == (ssize_t) size);
                free(p);
        }
        if (seals)
                assert(fcntl(fd, F_ADD_SEALS, seals) == 0);
        return fd;
}

#define ALL_SEALS (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

/* ---- libbus helpers. */

/* Processes c until *done, the deadline, or the connection's end. */
/* Waits for the broker to announce that the connection of process pid is
 * gone: by then it has released everything that connection held. */
typedef struct GoneWatch {
        pid_t pid;
        bool done;
} GoneWatch;

static int gone_cb(bus_message *m, void *userdata) {
        GoneWatch *w = userdata;
        Bus__PeerEvent *ev = NULL;

        if (bus_message_read_protobuf(m, &bus__peer_event__descriptor,
                                      (ProtobufCMessage **) &ev) < 0)
                return 0;
        if ((pid_t) ev->pid == w->pid)
                w->done = true;
        bus__peer_event__free_unpacked(ev, NULL);
        return 0;
}

/* A payload to send: how big, how, and where it must travel. */
typedef struct Blob {
        size_t size;
        int mode;        /* BUS_SHM_* */
        bool reserve;    /* produced in place with bus_message_reserve_payload() */
        bool shm;        /* expected to travel in shared memory */
        const char *what;
} Blob;

/* Builds a message (a publish on topic, or a request if method is set) with
 * the blob's payload from fill(seed), and its checksum. */
static bus_message *blob_message(const char *topic, const char *destination, const char *method,
                                 const Blob *b, uint64_t seed, uint64_t *ret_sum) {
        bus_message *m = NULL;
        void *p = NULL;

        if (method)
                assert(bus_message_new_request(&m, destination, method) >= 0);
        else
                assert(bus_message_new_publish(&m, topic) >= 0);
        assert(bus_message_set_payload_type(m, "test.Blob") >= 0);
        if (!tap_check_int(bus_message_set_shm(m, b->mode), 0))
                goto fail;
        if (b->reserve) {
                if (!tap_check_int(bus_message_reserve_payload(m, b->size, &p), 0) ||
                    !tap_check(p != NULL))
                        goto fail;
                fill(p, b->size, seed);
                *ret_sum = checksum(p, b->size);
                /* A payload in place can no longer change its mode. */
                tap_check_int(bus_message_set_shm(m, BUS_SHM_NEVER), -EBUSY);
        } else {
                p = malloc(b->size);
                assert(p);
                fill(p, b->size, seed);
                *ret_sum = checksum(p, b->size);
                if (!tap_check_int(bus_message_set_payload(m, p, b->size), 0)) {
                        free(p);
                        goto fail;
                }
                free(p);
        }
        if (b->mode == BUS_SHM_ALWAYS)
                tap_check_int(bus_message_is_shm(m), 1);
        if (b->mode == BUS_SHM_NEVER)
                tap_check_int(bus_message_is_shm(m), 0);
        return m;
fail:
        tap_diag("cannot build %s", b->what);
        bus_message_unref(m);
        return NULL;
}

/* After sending: the payload went where expected, and the sender still
 * reads its own bytes. */
static void check_sent(bus_message *m, const Blob *b, uint64_t sum) {
        const void *data;
        size_t size;

        if (!tap_check_int(bus_message_is_shm(m), b->shm))
                tap_diag("%s: sent %s", b->what, b->shm ? "inline" : "in shared memory");
        if (tap_check_int(bus_message_get_payload(m, &data, &size), 0) &&
            tap_check_int(size, b->size))
                tap_check(checksum(data, size) == sum);
}

/* ---- Child processes. */

typedef struct Child {
        pid_t pid;
        TestSignal up;   /* child -> parent: 'R' ready, 'M' one message handled */
        TestSignal down; /* parent -> child */
        TestSignal out;  /* child -> parent: records, read to EOF */
        const char *address;
        int index;
        const void *spec;
} Child;

static void child_close(Child *ch) {
        test_signal_close(&ch->up);
        test_signal_close(&ch->down);
        test_signal_close(&ch->out);
}

static bool child_start(Child *ch, int (*fn)(void *), const char *address, int index,
                        const void *spec) {
        *ch = (Child){ .pid = -1, .up = { { -1, -1 } }, .down = { { -1, -1 } },
                       .out = { { -1, -1 } }, .address = address, .index = index, .spec = spec };
        if (test_signal_init(&ch->up) < 0 || test_signal_init(&ch->down) < 0 ||
            test_signal_init(&ch->out) < 0) {
                child_close(ch);
                return false;
        }
        ch->pid = test_child_start(fn, ch);
        if (ch->pid < 0) {
                child_close(ch);
                return false;
        }
        /* Only the child writes up and out: its death shows as EOF. */
        test_signal_close_write(&ch->up);
        test_signal_close_write(&ch->out);
        return true;
}

/* Waits for the child's next post: the byte, or 0 on failure. */
static char child_wait_up(Child *ch) {
        char c = 0;
        int r;

        if (ch->pid <= 0)
                return 0;
        r = test_signal_wait(&ch->up, WAIT_MS, &c);
        if (r < 0) {
                tap_diag("child %d did not report: %s", (int) ch->pid, strerror(-r));
                return 0;
        }
        return c;
}

static int child_finish(Child *ch) {
        int r = ch->pid > 0 ? test_child_wait(ch->pid, WAIT_MS) : -ESRCH;

        child_close(ch);
        ch->pid = -1;
        return r;
}

/* What a receiver saw of one message. */
typedef struct Record {
        uint32_t seq;
        int32_t kind;
        int32_t is_shm;
        int32_t is_retained;
        int32_t n_fds;
        int32_t fd0;        /* bus_message_get_fd(m, 0): -ENXIO without descriptors */
        uint64_t size;
        uint64_t sum;
} Record;

static void record_message(Record *rec, bus_message *m, uint32_t seq) {
        const void *data = NULL;
        size_t size = 0;

        *rec = (Record){ .seq = seq };
        rec->kind = bus_message_get_kind(m);
        rec->is_retained = bus_message_is_retained(m);
        rec->n_fds = bus_message_get_n_fds(m);
        rec->fd0 = bus_message_get_fd(m, 0);
        if (bus_message_get_payload(m, &data, &size) >= 0) {
                rec->size = size;
                rec->sum = checksum(data, size);
        } else
                rec->size = UINT64_MAX;
        /* After the mapping: whether it was shared memory. */
        rec->is_shm = bus_message_is_shm(m);
}

/* Child side: sends a record to the parent. */
static int child_report(Child *ch, const Record *rec) {
        ssize_t n = send(ch->out.fd[1], rec, sizeof(*rec), MSG_NOSIGNAL);

        return n == (ssize_t) sizeof(*rec) ? 0 : -EIO;
}

/* Parent side: the child's records, up to EOF (the child has exited). */
static ssize_t child_records(Child *ch, Record *recs, size_t max) {
        ssize_t n = test_read_to_eof(ch->out.fd[0], recs, max * sizeof(Record), WAIT_MS);

        if (n < 0)
                return n;
        if (n % (ssize_t) sizeof(Record) != 0)
                return -EBADMSG;
        return n / (ssize_t) sizeof(Record);
}

/* The sequence number is the topic's last token. */
static uint32_t topic_seq(bus_message *m) {
        const char *t = bus_message_get_topic(m), *dot = t ? strrchr(t, '.') : NULL;

        return dot ? (uint32_t) strtoul(dot + 1, NULL, 10) : UINT32_MAX;
}

/* ---- Fan-out to subscriber children. */

typedef struct FanSpec {
        const char *prefix; /* messages come on "<prefix>.<seq>" */
        unsigned n_messages;
} FanSpec;

typedef struct FanRx {
        Child *ch;
        unsigned received;
        int failures;
        bool done;
} FanRx;

static int fan_rx_cb(bus_message *m, void *userdata) {
        FanRx *rx = userdata;
        const FanSpec *spec = rx->ch->spec;
        Record rec;

        record_message(&rec, m, topic_seq(m));
        child_check(rx->failures, child_report(rx->ch, &rec) == 0);
        /* Handled, and its mapping goes with the message after this. */
        test_signal_post(&rx->ch->up, 'M');
        if (++rx->received == spec->n_messages)
                rx->done = true;
        return 0;
}

static int fan_subscriber_main(void *arg) {
        Child *ch = arg;
        const FanSpec *spec = ch->spec;
        FanRx rx = { .ch = ch };
        bus_client *c = NULL;
        char pattern[64];
        int r;

        snprintf(pattern, sizeof(pattern), "%s.>", spec->prefix);
        r = bus_client_open(&c, ch->address);
        if (r >= 0)
                r = bus_client_subscribe(c, NULL, pattern, NULL, 0, fan_rx_cb, &rx);
        if (r < 0) {
                printf("# subscriber %d: %s\n", ch->index, strerror(-r));
                bus_client_unref(c);
                return 1;
        }
        test_signal_post(&ch->up, 'R');
        r = test_run_until(c, &rx.done, 3 * WAIT_MS);
        child_check(rx.failures, r == 0);
        if (r < 0)
                printf("# subscriber %d: after %u messages: %s\n", ch->index, rx.received,
                       strerror(-r));
        bus_client_unref(c);
        return rx.failures ? 1 : 0;
}

#define MAX_SUBSCRIBERS 8

/* Sends each blob to n subscriber children and checks what each received.
 * rss_growth_kib, if not NULL, gets how much busd's VmRSS grew over the
 * sending of the blobs. */
static void fan_out(const char *prefix, unsigned n, const Blob *blobs, unsigned n_blobs,
                    long *rss_growth_kib) {
        FanSpec spec = { .prefix = prefix, .n_messages = n_blobs };
        Child ch[MAX_SUBSCRIBERS];
        bus_client *c = NULL;
        uint64_t sums[16];
        long rss0 = -1, rss1 = -1;
        bool broken = false;

        assert(n <= MAX_SUBSCRIBERS && n_blobs <= N_ELEMENTS(sums));
        for (unsigned i = 0; i < n; i++)
                tap_check(child_start(&ch[i], fan_subscriber_main, busd.address, (int) i, &spec));
        for (unsigned i = 0; i < n; i++)
                tap_check(child_wait_up(&ch[i]) == 'R');
        tap_check(bus_client_open(&c, busd.address) >= 0);
        if (!c)
                goto finish;
        /* AUTO goes through shared memory from 512 KiB on. */
        tap_check_int(bus_client_set_shm_threshold(c, 512 * KiB), 0);
        tap_check(test_ping(c, WAIT_USEC));
        rss0 = vm_rss_kib(busd.pid);

        for (unsigned k = 0; k < n_blobs && !broken; k++) {
                char topic[64];
                bus_message *m;

                snprintf(topic, sizeof(topic), "%s.%u", prefix, k);
                m = blob_message(topic, NULL, NULL, &blobs[k], 1000 + k, &sums[k]);
                if (!m || !tap_check_int(bus_client_send(c, m, NULL), 0)) {
                        bus_message_unref(m);
                        broken = true;
                        break;
                }
                tap_check_int(bus_client_flush(c), 0);
                check_sent(m, &blobs[k], sums[k]);
                bus_message_unref(m);
                /* One at a time: at most one big payload alive. A
                 * subscriber that missed one would miss the rest too: stop
                 * waiting for them. */
                for (unsigned i = 0; i < n; i++)
                        if (!tap_check(child_wait_up(&ch[i]) == 'M')) {
                                tap_diag("subscriber %u did not get %s", i, blobs[k].what);
                                broken = true;
                        }
        }
        tap_check(test_ping(c, WAIT_USEC));
        rss1 = vm_rss_kib(busd.pid);
        if (rss_growth_kib)
                *rss_growth_kib = rss0 >= 0 && rss1 >= 0 ? rss1 - rss0 : LONG_MAX;
        if (rss_growth_kib)
                tap_diag("busd VmRSS: %ld KiB before, %ld KiB after", rss0, rss1);
finish:
        if (broken || !c)
                for (unsigned i = 0; i < n; i++)
                        if (ch[i].pid > 0)
                                (void) kill(ch[i].pid, SIGKILL);
        for (unsigned i = 0; i < n; i++) {
                Record recs[16];
                ssize_t got = child_records(&ch[i], recs, N_ELEMENTS(recs));

                tap_check_int(child_finish(&ch[i]), 0);
                if (!tap_check_int(got, n_blobs))
                        continue;
                for (unsigned k = 0; k < n_blobs; k++) {
                        const Record *r = &recs[k];
                        const Blob *b = &blobs[k];

                        tap_check_int(r->seq, k);
                        tap_check_int(r->kind, BUS_KIND_PUBLISH);
                        if (!tap_check_int(r->size, b->size) || !tap_check(r->sum == sums[k]))
                                tap_diag("subscriber %u: %s arrived different", i, b->what);
                        if (!tap_check_int(r->is_shm, b->shm))
                                tap_diag("subscriber %u: %s arrived %s", i, b->what,
                                         r->is_shm ? "in shared memory" : "inline");
                        /* The memfd is the payload, not a descriptor. */
                        tap_check_int(r->n_fds, 0);
                        tap_check_int(r->fd0, -ENXIO);
                }
        }
        bus_client_unref(c);
}

static void test_shm_one_subscriber(void) {
        static const Blob blobs[] = {
                { 1 * MiB, BUS_SHM_ALWAYS, true, true, "1 MiB reserved (ALWAYS)" },
                { 16 * MiB, BUS_SHM_ALWAYS, true, true, "16 MiB reserved (ALWAYS)" },
                { 64 * MiB, BUS_SHM_ALWAYS, true, true, "64 MiB reserved (ALWAYS)" },
                { 1 * MiB, BUS_SHM_AUTO, false, true, "1 MiB copied (AUTO)" },
                { 16 * MiB, BUS_SHM_AUTO, false, true, "16 MiB copied (AUTO)" },
                { 64 * MiB, BUS_SHM_AUTO, false, true, "64 MiB copied (AUTO)" },
                /* Below the connection's 512 KiB, above the default 256 KiB:
                 * the guessed memfd moves inline when sent. */
                { 300 * KiB, BUS_SHM_AUTO, false, false, "300 KiB copied (AUTO)" },
                { 1 * MiB, BUS_SHM_NEVER, false, false, "1 MiB inline (NEVER)" },
        };

        fan_out("shm.one", 1, blobs, N_ELEMENTS(blobs), NULL);
}

/* 64 MiB reserved in place goes to eight in test_broker_rss(). */
static void test_shm_eight_subscribers(void) {
        static const Blob blobs[] = {
                { 1 * MiB, BUS_SHM_ALWAYS, true, true, "1 MiB reserved (ALWAYS)" },
                { 16 * MiB, BUS_SHM_ALWAYS, true, true, "16 MiB reserved (ALWAYS)" },
                { 1 * MiB, BUS_SHM_AUTO, false, true, "1 MiB copied (AUTO)" },
                { 16 * MiB, BUS_SHM_AUTO, false, true, "16 MiB copied (AUTO)" },
                { 64 * MiB, BUS_SHM_AUTO, false, true, "64 MiB copied (AUTO)" },
                { 1 * MiB, BUS_SHM_NEVER, false, false, "1 MiB inline (NEVER)" },
        };

        fan_out("shm.eight", 8, blobs, N_ELEMENTS(blobs), NULL);
}

/* The broker forwards the descriptor, never the bytes: its memory does not
 * grow with the payload (a generous bound, not a measurement). */
static void test_broker_rss(void) {
        static const Blob blobs[] = {
                { 64 * MiB, BUS_SHM_ALWAYS, true, true, "64 MiB reserved (ALWAYS)" },
        };
        long growth = LONG_MAX;

        fan_out("shm.rss", 8, blobs, N_ELEMENTS(blobs), &growth);
        tap_diag("busd VmRSS grew by %ld KiB forwarding 64 MiB to 8 subscribers", growth);
        tap_check(growth < 4 * 1024);
}

/* ---- A service child: shared memory on requests and replies. */

#define SERVICE_NAME "org.example.Shm"

typedef struct Service {
        Child ch; /* first: the child gets &ch, which is the Service */
        bus_client *c;
} Service;

/* Echo: the payload back, copied into a reply (AUTO: shared memory from
 * 256 KiB on); the reply's type says how the request's payload came. */
static int svc_echo(bus_message *m, void *userdata) {
        Service *svc = userdata;
        bus_message *reply = NULL;
        const void *data;
        size_t size;
        int r;

        r = bus_message_get_payload(m, &data, &size);
        if (r >= 0)
                r = bus_message_new_reply(m, &reply);
        if (r >= 0)
                r = bus_message_set_payload(reply, data, size);
        if (r >= 0)
                r = bus_message_set_payload_type(reply, bus_message_is_shm(m) == 1 ? "echo.shm"
                                                                                  : "echo.inline");
        if (r >= 0)
                r = bus_client_send(svc->c, reply, NULL);
        bus_message_unref(reply);
        return r;
}

/* Describe: what the request looked like, as a Record. */
static int svc_describe(bus_message *m, void *userdata) {
        Service *svc = userdata;
        Record rec;

        record_message(&rec, m, 0);
        return bus_client_reply(svc->c, m, &rec, sizeof(rec));
}

static int svc_quit(bus_message *m, void *userdata) {
        Service *svc = userdata;
        int r = bus_client_reply(svc->c, m, NULL, 0);

        (void) bus_client_exit(svc->c, 0);
        return r;
}

static int service_main(void *arg) {
        Service *svc = arg;
        int r;

        r = bus_client_open(&svc->c, svc->ch.address);
        if (r >= 0)
                r = bus_client_request_name(svc->c, SERVICE_NAME, 0) == BUS_NAME_PRIMARY_OWNER
                            ? 0
                            : -EADDRINUSE;
        if (r >= 0)
                r = bus_client_add_method(svc->c, NULL, NULL, "Echo", svc_echo, svc);
        if (r >= 0)
                r = bus_client_add_method(svc->c, NULL, NULL, "Describe", svc_describe, svc);
        if (r >= 0)
                r = bus_client_add_method(svc->c, NULL, NULL, "Quit", svc_quit, svc);
        if (r < 0) {
                printf("# service: cannot start: %s\n", strerror(-r));
                bus_client_unref(svc->c);
                return 1;
        }
        test_signal_post(&svc->ch.up, 'R');
        r = bus_client_run(svc->c);
        if (r >= 0)
                (void) bus_client_flush(svc->c);
        else
                printf("# service: bus_client_run: %s\n", strerror(-r));
        bus_client_unref(svc->c);
        return r < 0 ? 1 : 0;
}

static bool service_start(Service *svc, const char *address) {
        *svc = (Service){};
        if (!child_start(&svc->ch, service_main, address, 0, NULL))
                return false;
        return child_wait_up(&svc->ch) == 'R';
}

static bool service_stop(Service *svc, bus_client *c) {
        int r = -ENOTCONN;

        if (svc->ch.pid <= 0)
                return false;
        if (c)
                r = bus_client_call_method(c, SERVICE_NAME, "Quit", NULL, 0, WAIT_USEC, NULL, NULL);
        if (r < 0)
                (void) kill(svc->ch.pid, SIGKILL);
        return child_finish(&svc->ch) == 0 && r >= 0;
}

static void test_shm_request_and_reply(void) {
        static const Blob blob = { 16 * MiB, BUS_SHM_ALWAYS, true, true, "16 MiB request" };
        Service svc;
        bus_client *c = NULL;
        bus_message *m = NULL, *reply = NULL;
        bus_error e = BUS_ERROR_NULL;
        const void *data;
        size_t size;
        uint64_t sum = 0;
        int r;

        if (!tap_check(service_start(&svc, busd.address)))
                goto finish;
        tap_check(bus_client_open(&c, busd.address) >= 0);
        if (!c)
                goto finish;
        m = blob_message(NULL, SERVICE_NAME, "Echo", &blob, 77, &sum);
        if (!m)
                goto finish;
        r = bus_client_call(c, m, WAIT_USEC, &e, &reply);
        if (!tap_check_int(r, 0))
                tap_diag("Echo: %s: %s", e.name ?: "", e.message ?: "");
        check_sent(m, &blob, sum);
        if (reply) {
                tap_check_int(bus_message_get_kind(reply), BUS_KIND_REPLY);
                /* The service got the request through shared memory ... */
                tap_check(bus_message_get_payload_type(reply) &&
                          strcmp(bus_message_get_payload_type(reply), "echo.shm") == 0);
                /* ... and the reply came back the same way, byte for byte. */
                if (tap_check_int(bus_message_get_payload(reply, &data, &size), 0) &&
                    tap_check_int(size, blob.size))
                        tap_check(checksum(data, size) == sum);
                tap_check_int(bus_message_is_shm(reply), 1);
                tap_check_int(bus_message_get_n_fds(reply), 0);
                tap_check_int(bus_message_get_fd(reply, 0), -ENXIO);
        }
finish:
        bus_error_free(&e);
        bus_message_unref(reply);
        bus_message_unref(m);
        tap_check(service_stop(&svc, c));
        bus_client_unref(c);
}

/* Sends a Describe request with n_fds copies of fd and the blob; the
 * service's Record of it, or false. */
static bool describe(bus_client *c, int fd, unsigned n_fds, const Blob *b, uint64_t *sum,
                     Record *rec) {
        bus_message *m = blob_message(NULL, SERVICE_NAME, "Describe", b, 5, sum), *reply = NULL;
        bus_error e = BUS_ERROR_NULL;
        const void *data;
        size_t size;
        bool ok = false;
        int r;

        if (!m)
                return false;
        for (unsigned i = 0; i < n_fds; i++)
                tap_check_int(bus_message_append_fd(m, fd), i);
        r = bus_client_call(c, m, WAIT_USEC, &e, &reply);
        if (!tap_check_int(r, 0))
                tap_diag("Describe with %u descriptors and %s: %s: %s", n_fds, b->what,
                         e.name ?: strerror(-r), e.message ?: "");
        else if (tap_check(bus_message_get_payload(reply, &data, &size) >= 0 &&
                           size == sizeof(*rec))) {
                memcpy(rec, data, sizeof(*rec));
                ok = true;
        }
        bus_error_free(&e);
        bus_message_unref(reply);
        bus_message_unref(m);
        return ok;
}

/* The memfd is one of the frame's descriptors: with the broker's default
 * of 16 per frame, 15 more fit next to a shared-memory payload. */
static void test_memfd_counts_against_fd_limit(void) {
        static const Blob shm = { 1 * MiB, BUS_SHM_ALWAYS, true, true, "1 MiB in shared memory" };
        static const Blob inl = { 1 * MiB, BUS_SHM_NEVER, false, false, "1 MiB inline" };
        Service svc;
        bus_client *c = NULL;
        bus_message *m = NULL;
        Record rec;
        uint64_t sum = 0;
        int p[2] = { -1, -1 };
        char buf[8];

        if (!tap_check(service_start(&svc, busd.address)))
                goto finish;
        tap_check(pipe2(p, O_CLOEXEC) == 0);
        tap_check(bus_client_open(&c, busd.address) >= 0);
        if (!c)
                goto finish;

        if (describe(c, p[1], 15, &shm, &sum, &rec)) {
                tap_check_int(rec.n_fds, 15);
                tap_check_int(rec.is_shm, 1);
                tap_check_int(rec.size, shm.size);
                tap_check(rec.sum == sum);
        }
        if (describe(c, p[1], 16, &inl, &sum, &rec)) {
                tap_check_int(rec.n_fds, 16);
                tap_check_int(rec.is_shm, 0);
                tap_check_int(rec.size, inl.size);
                tap_check(rec.sum == sum);
        }
        /* 16 and the memfd: one too many, refused before it is sent. */
        m = blob_message(NULL, SERVICE_NAME, "Describe", &shm, 6, &sum);
        if (m) {
                for (unsigned i = 0; i < 16; i++)
                        tap_check_int(bus_message_append_fd(m, p[1]), i);
                tap_check_int(bus_client_send(c, m, NULL), -ETOOMANYREFS);
                bus_message_unref(m);
        }
        tap_check(test_ping(c, WAIT_USEC));
        tap_check(bus_client_is_connected(c) == 1);
finish:
        tap_check(service_stop(&svc, c));
        bus_client_unref(c);
        /* Every copy of the pipe was released, wherever it went. */
        if (p[1] >= 0)
                close(p[1]);
        if (p[0] >= 0)
                tap_check_int(test_read_to_eof(p[0], buf, sizeof(buf), WAIT_MS), 0);
        if (p[0] >= 0)
                close(p[0]);
}

/* ---- A retained shared-memory message outlives its publisher. */

#define RETAINED_TOPIC "shm.retained.blob"
#define RETAINED_SIZE (16 * MiB)
#define RETAINED_SEED 4242

static int retained_publisher_main(void *arg) {
        Child *ch = arg;
        bus_client *c = NULL;
        bus_message *m = NULL;
        void *p = NULL;
        int failures = 0, r;

        r = bus_client_open(&c, ch->address);
        child_check(failures, r >= 0);
        if (r >= 0) {
                child_check(failures, bus_message_new_publish(&m, RETAINED_TOPIC) >= 0);
                child_check(failures, bus_message_set_retain(m, 1) >= 0);
                child_check(failures, bus_message_set_shm(m, BUS_SHM_ALWAYS) >= 0);
                child_check(failures, bus_message_reserve_payload(m, RETAINED_SIZE, &p) >= 0);
                if (p)
                        fill(p, RETAINED_SIZE, RETAINED_SEED);
                child_check(failures, bus_client_send(c, m, NULL) >= 0);
                child_check(failures, bus_message_is_shm(m) == 1);
                /* A round trip after the publish: the broker has stored it
                 * before we go. */
                child_check(failures, bus_client_call_method(c, "bus", "Ping", NULL, 0, WAIT_USEC,
                                                             NULL, NULL) >= 0);
        }
        bus_message_unref(m);
        bus_client_unref(c);
        return failures ? 1 : 0;
}

static int retained_rx_cb(bus_message *m, void *userdata) {
        FanRx *rx = userdata;
        Record rec;

        record_message(&rec, m, 0);
        child_check(rx->failures, child_report(rx->ch, &rec) == 0);
        rx->done = true;
        return 0;
}

static int retained_subscriber_main(void *arg) {
        Child *ch = arg;
        FanRx rx = { .ch = ch };
        bus_client *c = NULL;
        int r;

        r = bus_client_open(&c, ch->address);
        if (r >= 0)
                r = bus_client_subscribe(c, NULL, "shm.retained.>", NULL, 0, retained_rx_cb, &rx);
        if (r >= 0)
                r = test_run_until(c, &rx.done, WAIT_MS);
        child_check(rx.failures, r >= 0);
        bus_client_unref(c);
        return rx.failures ? 1 : 0;
}

static void test_shm_retained(void) {
        Child ch;
        bus_client *c = NULL;
        Record rec;
        int memfds0 = count_memfds(busd.pid);

        tap_check(memfds0 >= 0);
        /* The publisher sends, waits for the broker to have it, exits. */
        if (tap_check(child_start(&ch, retained_publisher_main, busd.address, 0, NULL)))
                tap_check_int(child_finish(&ch), 0);
        /* Its memfd lives on in the broker alone. */
        tap_check_int(count_memfds(busd.pid), memfds0 + 1);

        if (tap_check(child_start(&ch, retained_subscriber_main, busd.address, 0, NULL))) {
                ssize_t n = child_records(&ch, &rec, 1);

                tap_check_int(child_finish(&ch), 0);
                if (tap_check_int(n, 1)) {
                        tap_check_int(rec.is_retained, 1);
                        tap_check_int(rec.is_shm, 1);
                        tap_check_int(rec.n_fds, 0);
                        tap_check_int(rec.size, RETAINED_SIZE);
                        tap_check(rec.sum == expected_checksum(RETAINED_SIZE, RETAINED_SEED));
                }
        }
        /* Delivered, and still retained. */
        tap_check_int(count_memfds(busd.pid), memfds0 + 1);

        /* Replaced: the broker lets go of the memfd. */
        tap_check(bus_client_open(&c, busd.address) >= 0);
        if (c) {
                tap_check(bus_client_publish(c, RETAINED_TOPIC, "replaced", 8,
                                             BUS_PUBLISH_RETAIN) >= 0);
                tap_check(test_ping(c, WAIT_USEC));
                tap_check_int(count_memfds(busd.pid), memfds0);
                /* And gone. */
                tap_check(bus_client_publish(c, RETAINED_TOPIC, NULL, 0, BUS_PUBLISH_RETAIN) >= 0);
                tap_check(test_ping(c, WAIT_USEC));
        }
        bus_client_unref(c);
}

/* ---- Raw frames: what libbus would not send. */


/* A raw connection and what is expected of the broker on it. */
typedef struct Raw {
        int fd;
        uint64_t serial;
        pid_t busd_pid;
        int base_fds; /* the broker's descriptors while it holds nothing of ours */
} Raw;

static bool raw_ping(Raw *raw, Bus__Envelope **ret_other);

/* Sends a frame (a publish, or a request if method is set) announcing a
 * memfd payload of memfd_size, with the given inline bytes and descriptors,
 * then a Ping. Expects an ERROR called error_name answering the frame, or
 * with error_name NULL no answer at all, before the Ping's reply; then the
 * broker holding no more descriptors than before. */
static void expect_answer(Raw *raw, const char *what, const char *method, uint64_t memfd_size,
                          const void *inline_data, size_t inline_len, const int *fds,
                          unsigned n_fds, const char *error_name) {
        Bus__Envelope env = BUS__ENVELOPE__INIT, *answer = NULL;
        uint64_t serial = ++raw->serial;

        if (method) {
                env.kind = BUS__KIND__KIND_REQUEST;
                env.destination = (char *) "bus";
                env.method = (char *) method;
        } else {
                env.kind = BUS__KIND__KIND_PUBLISH;
                env.topic = (char *) "shm.refused";
        }
        env.serial = serial;
        env.memfd_payload_size = memfd_size;
        if (!tap_check(test_raw_send(raw->fd, &env, inline_data, inline_len, fds, n_fds)))
                return;
        /* The connection stays usable: the Ping is answered. */
        if (!tap_check(raw_ping(raw, &answer)))
                tap_diag("%s: no answer to the Ping that followed", what);
        if (error_name) {
                if (!tap_check(answer != NULL)) {
                        tap_diag("%s: not refused", what);
                } else {
                        tap_diag("%s: %s: %s", what, answer->error_name, answer->error_message);
                        tap_check_int(answer->kind, BUS__KIND__KIND_ERROR);
                        tap_check_int(answer->reply_serial, serial);
                        tap_check(strcmp(answer->error_name, error_name) == 0);
                        tap_check(answer->error_message && answer->error_message[0]);
                }
        } else if (!tap_check(answer == NULL))
                tap_diag("%s: refused: %s: %s", what, answer->error_name, answer->error_message);
        bus__envelope__free_unpacked(answer, NULL);
        /* The refused (or delivered to nobody) descriptors are closed. */
        tap_check_int(test_count_fds(raw->busd_pid), raw->base_fds);
}

/* A Ping round trip. An ERROR (or anything else) that comes first goes to
 * *ret_other (the first one only). */
static bool raw_ping(Raw *raw, Bus__Envelope **ret_other) {
        Bus__Envelope env = BUS__ENVELOPE__INIT;
        uint64_t serial = ++raw->serial;

        env.kind = BUS__KIND__KIND_REQUEST;
        env.serial = serial;
        env.destination = (char *) "bus";
        env.method = (char *) "Ping";
        if (!test_raw_send(raw->fd, &env, NULL, 0, NULL, 0))
                return false;
        for (int i = 0; i < 16; i++) {
                Bus__Envelope *e = test_raw_read_envelope(raw->fd, WAIT_MS);

                if (!e)
                        return false;
                if (e->kind == BUS__KIND__KIND_REPLY && e->reply_serial == serial) {
                        bus__envelope__free_unpacked(e, NULL);
                        return true;
                }
                if (ret_other && !*ret_other)
                        *ret_other = e;
                else
                        bus__envelope__free_unpacked(e, NULL);
        }
        return false;
}

/* The broker's peer count, asked over a raw connection; -1 on failure.
 * Frames other than the answer (none are expected here) are skipped. */
static int raw_peer_count(Raw *raw) {
        Bus__Envelope env = BUS__ENVELOPE__INIT;
        uint64_t serial = ++raw->serial;

        env.kind = BUS__KIND__KIND_REQUEST;
        env.serial = serial;
        env.destination = (char *) "bus";
        env.method = (char *) "GetStats";
        if (!test_raw_send(raw->fd, &env, NULL, 0, NULL, 0))
                return -1;
        for (int i = 0; i < 16; i++) {
                uint8_t pre[WIRE_PREAMBLE_SIZE], *buf;
                Bus__GetStatsReply *stats = NULL;
                Bus__Envelope *e = NULL;
                WirePreamble p;
                int peers = -1;

                if (test_read_exact(raw->fd, pre, sizeof(pre), WAIT_MS) < 0 ||
                    wire_preamble_decode(pre, &p, WIRE_ENVELOPE_MAX, WIRE_PAYLOAD_MAX, 0) < 0)
                        return -1;
                buf = malloc((size_t) p.envelope_len + p.payload_len + 1);
                assert(buf);
                if (test_read_exact(raw->fd, buf, (size_t) p.envelope_len + p.payload_len, WAIT_MS) == 0)
                        e = bus__envelope__unpack(NULL, p.envelope_len, buf);
                if (e && e->kind == BUS__KIND__KIND_REPLY && e->reply_serial == serial)
                        stats = bus__get_stats_reply__unpack(NULL, p.payload_len,
                                                             buf + p.envelope_len);
                if (stats)
                        peers = (int) stats->peers;
                bus__get_stats_reply__free_unpacked(stats, NULL);
                bus__envelope__free_unpacked(e, NULL);
                free(buf);
                if (peers >= 0)
                        return peers;
        }
        return -1;
}

/* Connects, and takes the broker's fd baseline once it has torn down every
 * connection but the n_peers expected (this one included): clients of
 * earlier cases may still be closing, and their descriptors would make the
 * baseline wrong. Each GetStats is a round trip through the broker's loop,
 * which runs its deferred teardown. */
static bool raw_start(Raw *raw, TestBusd *b, int n_peers) {
        int peers = -1;

        *raw = (Raw){ .fd = test_raw_open(b->address, WAIT_MS), .serial = 1, .busd_pid = b->pid };
        if (raw->fd < 0)
                return false;
        for (int i = 0; i < 1000 && peers != n_peers; i++) {
                peers = raw_peer_count(raw);
                if (peers < 0)
                        return false;
        }
        if (peers != n_peers)
                return false;
        raw->base_fds = test_count_fds(b->pid);
        return raw->base_fds > 0;
}

static void test_refused_payloads(void) {
        static const char *const args[] = { "--max-memfd-bytes", "64K", NULL };
        const size_t size = 64 * KiB;
        TestBusd small = { .pid = -1 };
        Raw raw = { .fd = -1 };
        int good = make_memfd(size, ALL_SEALS, 1), unsealed = make_memfd(size, 0, 2),
            no_seal_seal = make_memfd(size, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW, 3),
            p[2] = { -1, -1 }, file = -1, big = -1, fds[2];
        char tmp[] = "/tmp/test-shm-XXXXXX";
        uint8_t *bytes = malloc(size);

        assert(bytes);
        fill(bytes, size, 4);
        tap_check(pipe2(p, O_CLOEXEC) == 0);
        /* A regular file, not a memfd: no seals possible. */
        file = mkostemp(tmp, O_CLOEXEC);
        if (tap_check(file >= 0)) {
                tap_check(unlink(tmp) == 0);
                tap_check(write(file, bytes, size) == (ssize_t) size);
        }
        if (!tap_check(raw_start(&raw, &busd, 1)))
                goto finish;

        /* Controls: good frames are accepted. */
        expect_answer(&raw, "a sealed memfd of the announced size", NULL, size, NULL, 0, &good, 1,
                      NULL);
        fds[0] = p[0];
        fds[1] = good;
        expect_answer(&raw, "a sealed memfd last, after a pipe", NULL, size, NULL, 0, fds, 2, NULL);

        expect_answer(&raw, "an unsealed memfd", NULL, size, NULL, 0, &unsealed, 1,
                      BUS_ERROR_INVALID_ARGS);
        expect_answer(&raw, "a sealed memfd announced 4 KiB smaller", NULL, size - 4 * KiB, NULL, 0,
                      &good, 1, BUS_ERROR_INVALID_ARGS);
        expect_answer(&raw, "a sealed memfd announced 4 KiB larger", NULL, size + 4 * KiB, NULL, 0,
                      &good, 1, BUS_ERROR_INVALID_ARGS);
        expect_answer(&raw, "a memfd without F_SEAL_SEAL", NULL, size, NULL, 0, &no_seal_seal, 1,
                      BUS_ERROR_INVALID_ARGS);
        expect_answer(&raw, "a pipe as the payload", NULL, size, NULL, 0, &p[0], 1,
                      BUS_ERROR_INVALID_ARGS);
        if (file >= 0)
                expect_answer(&raw, "a regular file on /tmp as the payload", NULL, size, NULL, 0,
                              &file, 1, BUS_ERROR_INVALID_ARGS);
        expect_answer(&raw, "a memfd size with inline bytes too", NULL, size, "junk", 4, &good, 1,
                      BUS_ERROR_INVALID_ARGS);
        expect_answer(&raw, "a memfd size without descriptors", NULL, size, NULL, 0, NULL, 0,
                      BUS_ERROR_INVALID_ARGS);
        fds[0] = good;
        fds[1] = p[0];
        expect_answer(&raw, "a sealed memfd, but not the last descriptor", NULL, size, NULL, 0, fds,
                      2, BUS_ERROR_INVALID_ARGS);
        expect_answer(&raw, "a request with an unsealed memfd", "Ping", size, NULL, 0, &unsealed, 1,
                      BUS_ERROR_INVALID_ARGS);
        close(raw.fd);
        raw.fd = -1;

        /* Over the broker's per-message limit. */
        if (!tap_check(test_busd_start(&small, args) >= 0) || !tap_check(raw_start(&raw, &small, 1)))
                goto finish;
        big = make_memfd(size + 4 * KiB, ALL_SEALS, 0);
        expect_answer(&raw, "a memfd over --max-memfd-bytes", NULL, size + 4 * KiB, NULL, 0, &big,
                      1, BUS_ERROR_LIMITS_EXCEEDED);
        expect_answer(&raw, "a memfd of exactly --max-memfd-bytes", NULL, size, NULL, 0, &good, 1,
                      NULL);
finish:
        if (raw.fd >= 0)
                close(raw.fd);
        if (small.pid > 0 || small.dir[0])
                tap_check_int(test_busd_stop(&small), 0);
        free(bytes);
        close(good);
        close(unsealed);
        close(no_seal_seal);
        if (big >= 0)
                close(big);
        if (file >= 0)
                close(file);
        if (p[0] >= 0)
                close(p[0]);
        if (p[1] >= 0)
                close(p[1]);
}

/* ---- The per-sender quota of shared memory held in the broker. */

#define QUOTA_MAX_FRAMES 20000

static int ignore_cb(bus_message *m, void *userdata) {
        return 0;
}

/* Subscribes and then never reads, until told to go. */
static int stuck_subscriber_main(void *arg) {
        Child *ch = arg;
        bus_client *c = NULL;
        int r;

        r = bus_client_open(&c, ch->address);
        if (r >= 0)
                r = bus_client_subscribe(c, NULL, "quota.>", NULL, 0, ignore_cb, NULL);
        if (r < 0) {
                printf("# stuck subscriber: %s\n", strerror(-r));
                bus_client_unref(c);
                return 1;
        }
        test_signal_post(&ch->up, 'R');
        r = test_signal_wait(&ch->down, 3 * WAIT_MS, NULL);
        bus_client_unref(c);
        return r < 0 ? 2 : 0;
}

static int quota_rx_cb(bus_message *m, void *userdata) {
        FanRx *rx = userdata;
        Record rec;

        record_message(&rec, m, 0);
        child_check(rx->failures, child_report(rx->ch, &rec) == 0);
        rx->done = true;
        return 0;
}

static int quota_receiver_main(void *arg) {
        Child *ch = arg;
        FanRx rx = { .ch = ch };
        bus_client *c = NULL;
        int r;

        r = bus_client_open(&c, ch->address);
        if (r >= 0)
                r = bus_client_subscribe(c, NULL, "quota.>", NULL, 0, quota_rx_cb, &rx);
        if (r < 0) {
                printf("# receiver: %s\n", strerror(-r));
                bus_client_unref(c);
                return 1;
        }
        test_signal_post(&ch->up, 'R');
        r = test_run_until(c, &rx.done, WAIT_MS);
        child_check(rx.failures, r >= 0);
        bus_client_unref(c);
        return rx.failures ? 1 : 0;
}

/* Publishes a sealed memfd of size on quota.data; the broker's answer to
 * it (NULL: accepted), learnt from a Ping round trip after it. */
static Bus__Envelope *quota_publish(Raw *raw, size_t size, uint64_t seed, bool *ok) {
        Bus__Envelope env = BUS__ENVELOPE__INIT, *answer = NULL;
        int fd = make_memfd(size, ALL_SEALS, seed);

        env.kind = BUS__KIND__KIND_PUBLISH;
        env.serial = ++raw->serial;
        env.topic = (char *) "quota.data";
        env.memfd_payload_size = size;
        *ok = test_raw_send(raw->fd, &env, NULL, 0, &fd, 1) && raw_ping(raw, &answer);
        close(fd);
        if (answer && answer->reply_serial != env.serial) {
                tap_diag("unexpected frame: %s", answer->error_name);
                *ok = false;
        }
        return answer;
}

static void test_sender_quota(void) {
        static const char *const args[] = { "--max-memfd-queued-bytes", "8M", NULL };
        TestBusd b = { .pid = -1 };
        Child stuck = { .pid = -1 }, rx = { .pid = -1 };
        Raw raw = { .fd = -1 }, other = { .fd = -1 };
        bus_client *mon = NULL;
        bus_slot *slot = NULL;
        GoneWatch gone = {};
        Bus__Envelope *answer = NULL;
        Record rec;
        unsigned accepted = 0;
        int held = -1;
        bool ok = true;

        if (!tap_check(test_busd_start(&b, args) >= 0))
                goto finish;
        if (!tap_check(child_start(&stuck, stuck_subscriber_main, b.address, 0, NULL)))
                goto finish;
        tap_check(child_wait_up(&stuck) == 'R');
        gone.pid = stuck.pid;
        tap_check(bus_client_open(&mon, b.address) >= 0);
        if (!mon || !tap_check(bus_client_subscribe(mon, &slot, "bus.peer.disconnected", NULL, 0,
                                                    gone_cb, &gone) >= 0))
                goto finish;
        /* Peers: the stuck subscriber, mon, and the raw connections. */
        if (!tap_check(raw_start(&raw, &b, 3)) || !tap_check(raw_start(&other, &b, 4)))
                goto finish;

        /* 1 MiB memfds (sparse: their size is what counts) to a subscriber
         * that does not read. The socket buffer takes the first frames,
         * and memfds that left the broker no longer count; then the
         * broker's queue for it holds them, until 8 MiB are held. */
        while (accepted < QUOTA_MAX_FRAMES) {
                answer = quota_publish(&raw, 1 * MiB, 0, &ok);
                if (!ok || answer)
                        break;
                accepted++;
        }
        held = count_memfds(b.pid);
        tap_diag("%u publishes of 1 MiB accepted before the first refusal; the broker holds %d "
                 "memfds", accepted, held);
        if (tap_check(ok) && tap_check(answer != NULL)) {
                tap_diag("refused: %s: %s", answer->error_name, answer->error_message);
                tap_check(strcmp(answer->error_name, BUS_ERROR_LIMITS_EXCEEDED) == 0);
                tap_check(answer->error_message && answer->error_message[0]);
        }
        bus__envelope__free_unpacked(answer, NULL);
        answer = NULL;
        tap_check(held >= 1 && held <= 8);

        /* Still held: still refused. */
        answer = quota_publish(&raw, 1 * MiB, 0, &ok);
        tap_check(ok && answer && strcmp(answer->error_name, BUS_ERROR_LIMITS_EXCEEDED) == 0);
        bus__envelope__free_unpacked(answer, NULL);
        /* The quota is per sender: another one may still publish. */
        answer = quota_publish(&other, 1 * MiB, 0, &ok);
        if (!tap_check(ok && !answer))
                tap_diag("another sender refused: %s", answer ? answer->error_name : "(no answer)");
        bus__envelope__free_unpacked(answer, NULL);

        /* The subscriber goes: the broker drops its queue, and with it the
         * sender's share. */
        test_signal_post(&stuck.down, 'q');
        tap_check_int(child_finish(&stuck), 0);
        tap_check_int(test_run_until(mon, &gone.done, WAIT_MS), 0);
        tap_check_int(count_memfds(b.pid), 0);

        /* A new 1 MiB publish is accepted, and arrives intact. */
        if (!tap_check(child_start(&rx, quota_receiver_main, b.address, 0, NULL)))
                goto finish;
        tap_check(child_wait_up(&rx) == 'R');
        answer = quota_publish(&raw, 1 * MiB, 99, &ok);
        if (!tap_check(ok && !answer))
                tap_diag("still refused: %s", answer ? answer->error_name : "(no answer)");
        bus__envelope__free_unpacked(answer, NULL);
        answer = NULL;
        if (tap_check_int(child_records(&rx, &rec, 1), 1)) {
                tap_check_int(rec.is_shm, 1);
                tap_check_int(rec.size, 1 * MiB);
                tap_check(rec.sum == expected_checksum(1 * MiB, 99));
        }
        tap_check_int(child_finish(&rx), 0);
finish:
        if (stuck.pid > 0) {
                test_signal_post(&stuck.down, 'q');
                (void) child_finish(&stuck);
        }
        if (rx.pid > 0)
                (void) child_finish(&rx);
        if (raw.fd >= 0)
                close(raw.fd);
        if (other.fd >= 0)
                close(other.fd);
        bus_slot_unref(slot);
        bus_client_unref(mon);
        tap_check_int(test_busd_stop(&b), 0);
}

static void test_broker_exits_cleanly(void) {
        test_busd_check_clean_exit(&busd);
}

int main(void) {
        tap_init();
        signal(SIGPIPE, SIG_IGN);
        test_busd_start_or_bail(&busd, NULL);
        TAP_RUN(test_shm_one_subscriber);
        TAP_RUN(test_shm_eight_subscribers);
        TAP_RUN(test_broker_rss);
        TAP_RUN(test_shm_request_and_reply);
        TAP_RUN(test_memfd_counts_against_fd_limit);
        TAP_RUN(test_shm_retained);
        TAP_RUN(test_refused_payloads);
        TAP_RUN(test_sender_quota);
        TAP_RUN(test_broker_exits_cleanly);
        return tap_done();
}
