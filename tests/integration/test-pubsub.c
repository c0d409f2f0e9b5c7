/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Integration test: publish/subscribe through a real busd, between separate
 * processes. Fan-out to several subscribers (byte-exact, in order), wildcard
 * patterns, queue groups, retained messages, the acknowledged subscribe (no
 * slow joiner), several subscriptions on one connection and unsubscribing,
 * the sender's identity stamped by the broker, the broker's peer events, and
 * topics a client may not publish on.
 *
 * Every subscriber is a child process with its own bus_client. A child that
 * records deliveries sends them back over a socket pair as fixed-size
 * records, which the parent compares with what it expects; a child that
 * checks by itself exits non-zero on failure. Each subscriber also subscribes
 * to an "end" topic, published after everything else by the same sender, so
 * it knows that nothing more of the test can arrive (frames from one sender
 * to one receiver keep their order) and nothing waits on time alone.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libbus/bus.h>

#include "proto/bus.pb-c.h"
#include "tests/lib/tap.h"
#include "tests/lib/util-busd.h"

/* Deadline of any one wait. Normal runs take milliseconds; this only bounds
 * how long a broken run takes to fail. */
#define WAIT_MS 10000
#define WAIT_USEC ((uint64_t) WAIT_MS * 1000)

static TestBusd busd;

/* A check inside a child: reports on stdout (a TAP comment) and evaluates to
 * the condition, so the child can fold it into its exit code. */
#define child_check(cond)                                                            \
        ((cond) ? true                                                               \
                : (tap_diag("child %d: %s:%d: check failed: %s", (int) getpid(),     \
                            __FILE__, __LINE__, #cond),                               \
                   false))

/* ---- Child processes. */

typedef struct Child {
        pid_t pid;
        TestSignal up;   /* child -> parent: barriers */
        TestSignal down; /* parent -> child: "go" */
        TestSignal out;  /* child -> parent: the child's report, read to EOF */
        const void *spec;
} Child;

static void child_close(Child *ch) {
        test_signal_close(&ch->up);
        test_signal_close(&ch->down);
        test_signal_close(&ch->out);
}

/* Forks fn(ch). The parent keeps only the read ends of up and out, so it
 * sees EOF (-EPIPE) once the child has gone. */
static bool child_start(Child *ch, int (*fn)(void *), const void *spec) {
        *ch = (Child){ .pid = -1, .up = { { -1, -1 } }, .down = { { -1, -1 } },
                       .out = { { -1, -1 } }, .spec = spec };
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
        test_signal_close_write(&ch->up);
        test_signal_close_write(&ch->out);
        return true;
}

/* Waits for the child's next barrier. */
static bool child_wait_up(Child *ch) {
        return ch->pid > 0 && test_signal_wait(&ch->up, WAIT_MS, NULL) == 0;
}

/* Waits for the child to exit and closes its descriptors: its exit status. */
static int child_finish(Child *ch) {
        int r = ch->pid > 0 ? test_child_wait(ch->pid, WAIT_MS) : -ESRCH;

        child_close(ch);
        ch->pid = -1;
        return r;
}

/* Child side: writes the report. */
static int child_report(Child *ch, const void *data, size_t len) {
        const uint8_t *p = data;

        while (len > 0) {
                ssize_t n = send(ch->out.fd[1], p, len, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += n;
                len -= (size_t) n;
        }
        return 0;
}

/* Parent side: reads exactly len bytes of the child's report. */
static int child_read(Child *ch, void *buf, size_t len) {
        int64_t deadline = test_now_ms() + WAIT_MS;
        size_t got = 0;

        if (ch->out.fd[0] < 0)
                return -EBADF;
        while (got < len) {
                struct pollfd p = { .fd = ch->out.fd[0], .events = POLLIN };
                int64_t left = deadline - test_now_ms();
                ssize_t n;

                if (left <= 0)
                        return -ETIMEDOUT;
                if (poll(&p, 1, (int) left) < 0 && errno != EINTR)
                        return -errno;
                n = recv(ch->out.fd[0], (uint8_t *) buf + got, len - got, MSG_DONTWAIT);
                if (n == 0)
                        return -EPIPE;
                if (n < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                continue;
                        return -errno;
                }
                got += (size_t) n;
        }
        return 0;
}

/* Parent side: reads the rest of the report, up to EOF. *ret is malloc'd
 * (NULL if empty). Returns the size or a negative errno. */
static ssize_t child_read_all(Child *ch, uint8_t **ret) {
        int64_t deadline = test_now_ms() + WAIT_MS;
        uint8_t *buf = NULL;
        size_t size = 0, got = 0;

        *ret = NULL;
        if (ch->out.fd[0] < 0)
                return -EBADF;
        for (;;) {
                struct pollfd p = { .fd = ch->out.fd[0], .events = POLLIN };
                int64_t left = deadline - test_now_ms();
                ssize_t n;

                if (left <= 0) {
                        free(buf);
                        return -ETIMEDOUT;
                }
                if (got == size) {
                        uint8_t *b = realloc(buf, size ? size * 2 : 4096);
                        assert(b);
                        buf = b;
                        size = size ? size * 2 : 4096;
                }
                if (poll(&p, 1, (int) left) < 0 && errno != EINTR) {
                        free(buf);
                        return -errno;
                }
                n = recv(ch->out.fd[0], buf + got, size - got, MSG_DONTWAIT);
                if (n == 0)
                        break;
                if (n < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                continue;
                        free(buf);
                        return -errno;
                }
                got += (size_t) n;
        }
        if (got == 0) {
                free(buf);
                return 0;
        }
        *ret = buf;
        return (ssize_t) got;
}

/* ---- libbus helpers. */

typedef struct CountTarget {
        const unsigned *count;
        unsigned want;
} CountTarget;

static bool count_reached(void *userdata) {
        const CountTarget *t = userdata;
        return *t->count >= t->want;
}

/* Dispatches messages until *count reaches want: false on the deadline or
 * a lost connection. */
static bool pump_until(bus_client *c, const unsigned *count, unsigned want) {
        CountTarget t = { count, want };
        return test_process_until(c, count_reached, &t, WAIT_MS) == 0;
}

/* A round trip to the broker: it has handled everything sent before. */
typedef struct Pub {
        const char *topic;
        const char *payload;
        uint64_t flags;
} Pub;

/* Publishes from a short-lived connection of the parent and returns once the
 * broker has handled the messages. The parent holds no connection while it
 * forks. */
static bool parent_publish(const Pub *pubs, size_t n) {
        bus_client *c = NULL;
        bool ok = true;
        int r;

        r = bus_client_open(&c, busd.address);
        if (r < 0) {
                tap_diag("cannot connect: %s", strerror(-r));
                return false;
        }
        for (size_t i = 0; i < n; i++) {
                r = bus_client_publish(c, pubs[i].topic, pubs[i].payload, strlen(pubs[i].payload),
                                       pubs[i].flags);
                if (r < 0) {
                        tap_diag("publish on %s: %s", pubs[i].topic, strerror(-r));
                        ok = false;
                }
        }
        ok = test_ping(c, WAIT_USEC) && ok;
        bus_client_unref(c);
        return ok;
}

/* ---- The recorder: a child that subscribes and records what it gets. */

#define REC_SUBS_MAX 3

typedef struct SubSpec {
        const char *pattern; /* NULL: unused */
        const char *group;
        uint64_t flags;
} SubSpec;

typedef struct RecSpec {
        SubSpec subs[REC_SUBS_MAX];
        const char *end_topic; /* its delivery ends the recording */
} RecSpec;

/* One delivery to one subscription callback. */
typedef struct Rec {
        uint32_t sub; /* index in RecSpec.subs */
        int32_t retained;
        uint32_t uid, gid;
        int32_t pid;
        int32_t creds_result;
        uint32_t payload_len; /* whole length; payload has the first bytes */
        char topic[48];
        char sender[24];
        uint8_t payload[32];
} Rec;

typedef struct RecHeader {
        char unique_id[24];
        int32_t error; /* the recorder failed: a negative errno */
        uint32_t n;    /* Recs that follow */
} RecHeader;

typedef struct Recorder {
        Rec *recs;
        size_t n, size;
        unsigned ended;
        struct RecSub {
                struct Recorder *rec;
                uint32_t idx;
        } subs[REC_SUBS_MAX];
} Recorder;

static int rec_cb(bus_message *m, void *userdata) {
        struct RecSub *s = userdata;
        Recorder *rec = s->rec;
        const void *data;
        size_t size;
        Rec *r;

        if (rec->n == rec->size) {
                Rec *p = realloc(rec->recs, (rec->size ? rec->size * 2 : 64) * sizeof(Rec));
                if (!p)
                        return -ENOMEM;
                rec->recs = p;
                rec->size = rec->size ? rec->size * 2 : 64;
        }
        r = &rec->recs[rec->n++];
        memset(r, 0, sizeof(*r));
        r->sub = s->idx;
        r->retained = bus_message_is_retained(m);
        r->creds_result = bus_message_get_sender_creds(m, &r->uid, &r->gid, &r->pid);
        snprintf(r->topic, sizeof(r->topic), "%s", bus_message_get_topic(m) ?: "");
        snprintf(r->sender, sizeof(r->sender), "%s", bus_message_get_sender(m) ?: "");
        if (bus_message_get_payload(m, &data, &size) >= 0) {
                r->payload_len = (uint32_t) size;
                memcpy(r->payload, data, size < sizeof(r->payload) ? size : sizeof(r->payload));
        }
        return 0;
}

static int count_cb(bus_message *m, void *userdata) {
        (*(unsigned *) userdata)++;
        return 0;
}

static int recorder_main(void *arg) {
        Child *ch = arg;
        const RecSpec *spec = ch->spec;
        Recorder rec = {};
        RecHeader h = {};
        bus_client *c = NULL;
        const char *id;
        int r;

        r = bus_client_open(&c, busd.address);
        if (r < 0)
                goto finish;
        for (uint32_t i = 0; i < REC_SUBS_MAX && spec->subs[i].pattern; i++) {
                rec.subs[i] = (struct RecSub){ &rec, i };
                r = bus_client_subscribe(c, NULL, spec->subs[i].pattern, spec->subs[i].group,
                                         spec->subs[i].flags, rec_cb, &rec.subs[i]);
                if (r < 0)
                        goto finish;
        }
        r = bus_client_subscribe(c, NULL, spec->end_topic, NULL, BUS_SUBSCRIBE_NO_RETAINED,
                                 count_cb, &rec.ended);
        if (r < 0)
                goto finish;
        r = bus_client_get_unique_id(c, &id);
        if (r < 0)
                goto finish;
        snprintf(h.unique_id, sizeof(h.unique_id), "%s", id);
        test_signal_post(&ch->up, 'R');
        r = pump_until(c, &rec.ended, 1) ? 0 : -ETIMEDOUT;
finish:
        if (r < 0)
                tap_diag("recorder %d: %s", (int) getpid(), strerror(-r));
        h.error = r;
        h.n = (uint32_t) rec.n;
        if (child_report(ch, &h, sizeof(h)) < 0 ||
            child_report(ch, rec.recs, rec.n * sizeof(Rec)) < 0)
                r = -EPIPE;
        free(rec.recs);
        bus_client_unref(c);
        return r < 0 ? 1 : 0;
}

static bool recorder_start(Child *ch, const RecSpec *spec) {
        return child_start(ch, recorder_main, spec) && child_wait_up(ch);
}

/* Reads a recorder's report and reaps it. *recs is malloc'd. */
static bool recorder_collect(Child *ch, RecHeader *h, Rec **recs) {
        uint8_t *buf = NULL;
        ssize_t n = child_read_all(ch, &buf);
        bool ok = true;

        *recs = NULL;
        memset(h, 0, sizeof(*h));
        if (!tap_check(n >= (ssize_t) sizeof(RecHeader)))
                ok = false;
        else {
                memcpy(h, buf, sizeof(*h));
                if (!tap_check_int(n, sizeof(RecHeader) + (size_t) h->n * sizeof(Rec)) ||
                    !tap_check_int(h->error, 0))
                        ok = false;
                else if (h->n > 0) {
                        *recs = malloc((size_t) h->n * sizeof(Rec));
                        assert(*recs);
                        memcpy(*recs, buf + sizeof(RecHeader), (size_t) h->n * sizeof(Rec));
                }
        }
        if (!ok)
                h->n = 0;
        free(buf);
        if (!tap_check_int(child_finish(ch), 0))
                ok = false;
        return ok;
}

static bool rec_payload_is(const Rec *r, const char *s) {
        size_t len = strlen(s);

        assert(len <= sizeof(r->payload));
        return r->payload_len == len && memcmp(r->payload, s, len) == 0;
}

static void rec_dump(const char *who, const Rec *recs, size_t n) {
        for (size_t i = 0; i < n; i++)
                tap_diag("%s[%zu]: sub %u topic %s retained %d payload %.*s", who, i,
                         recs[i].sub, recs[i].topic, recs[i].retained,
                         (int) (recs[i].payload_len < sizeof(recs[i].payload) ?
                                        recs[i].payload_len : sizeof(recs[i].payload)),
                         (const char *) recs[i].payload);
}

/* ---- Fan-out. */

#define FANOUT_N 100

/* Message i: 4 to 203 bytes, starting with i, then a pattern with zeros. */
static size_t fanout_payload(unsigned i, uint8_t *buf) {
        size_t len = 4 + (i * 53) % 200;

        memcpy(buf, &i, 4);
        for (size_t j = 4; j < len; j++)
                buf[j] = (uint8_t) (i * 7 + j * 13);
        return len;
}

typedef struct FanoutSub {
        unsigned n;
        unsigned first_bad; /* FANOUT_N + 1: none */
        unsigned ended;
} FanoutSub;

static int fanout_cb(bus_message *m, void *userdata) {
        FanoutSub *f = userdata;
        uint8_t expect[256];
        size_t len = fanout_payload(f->n, expect), size;
        const void *data;

        if ((bus_message_get_payload(m, &data, &size) < 0 || size != len ||
             memcmp(data, expect, len) != 0) && f->first_bad > FANOUT_N)
                f->first_bad = f->n;
        f->n++;
        return 0;
}

static int fanout_sub_main(void *arg) {
        Child *ch = arg;
        FanoutSub f = { .first_bad = FANOUT_N + 1 };
        bus_client *c = NULL;
        bool ok;

        ok = child_check(bus_client_open(&c, busd.address) >= 0) &&
             child_check(bus_client_subscribe(c, NULL, "sensors.kitchen.temp", NULL, 0,
                                              fanout_cb, &f) >= 0) &&
             child_check(bus_client_subscribe(c, NULL, "sensors.kitchen.end", NULL, 0, count_cb,
                                              &f.ended) >= 0);
        if (ok) {
                test_signal_post(&ch->up, 'R');
                ok = child_check(pump_until(c, &f.ended, 1));
                ok = child_check(f.n == FANOUT_N) && ok;
                ok = child_check(f.first_bad > FANOUT_N) && ok;
                if (f.first_bad <= FANOUT_N)
                        tap_diag("child %d: message %u differs", (int) getpid(), f.first_bad);
        }
        bus_client_unref(c);
        return ok ? 0 : 1;
}

static int fanout_pub_main(void *arg) {
        bus_client *c = NULL;
        uint8_t buf[256];
        bool ok;

        ok = child_check(bus_client_open(&c, busd.address) >= 0);
        for (unsigned i = 0; ok && i < FANOUT_N; i++)
                ok = child_check(bus_client_publish(c, "sensors.kitchen.temp", buf,
                                                    fanout_payload(i, buf), 0) >= 0);
        ok = ok && child_check(bus_client_publish(c, "sensors.kitchen.end", "", 0, 0) >= 0) &&
             child_check(test_ping(c, WAIT_USEC));
        bus_client_unref(c);
        return ok ? 0 : 1;
}

static void test_fanout(void) {
        Child subs[3], pub;

        for (size_t i = 0; i < 3; i++)
                tap_check(child_start(&subs[i], fanout_sub_main, NULL));
        for (size_t i = 0; i < 3; i++)
                tap_check(child_wait_up(&subs[i]));
        tap_check(child_start(&pub, fanout_pub_main, NULL));
        tap_check_int(child_finish(&pub), 0);
        for (size_t i = 0; i < 3; i++)
                tap_check_int(child_finish(&subs[i]), 0);
}

/* ---- Wildcards. */

static const char *const wild_topics[] = { "a.b.c", "a.x.c", "a.b", "a", "x.b.y", "a.b.c.d" };
#define N_WILD_TOPICS (sizeof(wild_topics) / sizeof(wild_topics[0]))

/* The expected subsets, worked out by hand from the rules: "*" is exactly one
 * token, ">" one or more trailing tokens. */
static const struct {
        const char *pattern;
        bool match[N_WILD_TOPICS]; /* in the order of wild_topics */
} wild_cases[] = {
        /*             a.b.c  a.x.c  a.b    a      x.b.y  a.b.c.d */
        { "a.*.c", { true, true, false, false, false, false } },
        { "a.>", { true, true, true, false, false, true } },
        { ">", { true, true, true, true, true, true } },
        { "*.b.*", { true, false, false, false, true, false } },
        { "a.b", { false, false, true, false, false, false } },
};
#define N_WILD_CASES (sizeof(wild_cases) / sizeof(wild_cases[0]))

static void test_wildcards(void) {
        RecSpec specs[N_WILD_CASES];
        Child subs[N_WILD_CASES];
        Pub pubs[N_WILD_TOPICS + 1];

        for (size_t i = 0; i < N_WILD_CASES; i++) {
                specs[i] = (RecSpec){ .subs = { { wild_cases[i].pattern } },
                                      .end_topic = "wild-end" };
                tap_check(recorder_start(&subs[i], &specs[i]));
        }
        for (size_t i = 0; i < N_WILD_TOPICS; i++)
                pubs[i] = (Pub){ wild_topics[i], wild_topics[i], 0 };
        pubs[N_WILD_TOPICS] = (Pub){ "wild-end", "", 0 };
        tap_check(parent_publish(pubs, N_WILD_TOPICS + 1));

        for (size_t i = 0; i < N_WILD_CASES; i++) {
                unsigned got[N_WILD_TOPICS] = {}, other = 0, matched = 0;
                RecHeader h;
                Rec *recs;

                recorder_collect(&subs[i], &h, &recs);
                for (size_t k = 0; k < h.n; k++) {
                        size_t t;

                        /* ">" matches the broker's events and our end marker too. */
                        if (strncmp(recs[k].topic, "bus.", 4) == 0 ||
                            strcmp(recs[k].topic, "wild-end") == 0)
                                continue;
                        for (t = 0; t < N_WILD_TOPICS; t++)
                                if (strcmp(recs[k].topic, wild_topics[t]) == 0)
                                        break;
                        if (t == N_WILD_TOPICS) {
                                tap_diag("%s: unexpected topic %s", wild_cases[i].pattern,
                                         recs[k].topic);
                                other++;
                                continue;
                        }
                        tap_check(rec_payload_is(&recs[k], wild_topics[t]));
                        got[t]++;
                }
                for (size_t t = 0; t < N_WILD_TOPICS; t++) {
                        if (!tap_check_int(got[t], wild_cases[i].match[t]))
                                tap_diag("pattern %s, topic %s", wild_cases[i].pattern,
                                         wild_topics[t]);
                        matched += wild_cases[i].match[t];
                }
                tap_check_int(other, 0);
                tap_diag("%-6s got %u of %zu topics", wild_cases[i].pattern, matched,
                         N_WILD_TOPICS);
                free(recs);
        }
}

/* ---- Queue groups. */

#define QUEUE_N 300
#define N_WORKERS 3
#define N_AUDITORS 2

static uint32_t rec_seq(const Rec *r) {
        uint32_t seq = UINT32_MAX;

        if (r->payload_len == sizeof(seq))
                memcpy(&seq, r->payload, sizeof(seq));
        return seq;
}

/* Checks that a group's members shared the messages: each exactly once. */
static void check_group(const char *name, Child *members, size_t n_members) {
        unsigned seen[QUEUE_N] = {}, total = 0;

        for (size_t i = 0; i < n_members; i++) {
                RecHeader h;
                Rec *recs;
                unsigned mine = 0;

                recorder_collect(&members[i], &h, &recs);
                for (size_t k = 0; k < h.n; k++) {
                        uint32_t seq = rec_seq(&recs[k]);

                        if (!tap_check(seq < QUEUE_N))
                                continue;
                        seen[seq]++;
                        mine++;
                }
                tap_diag("%s member %zu got %u messages", name, i, mine);
                /* Members take turns: a fair share is about QUEUE_N / n_members. */
                tap_check(mine >= 50);
                total += mine;
                free(recs);
        }
        tap_check_int(total, QUEUE_N);
        for (unsigned seq = 0; seq < QUEUE_N; seq++)
                if (!tap_check_int(seen[seq], 1))
                        tap_diag("%s: message %u delivered %u times", name, seq, seen[seq]);
}

static void test_queue_groups(void) {
        static const RecSpec worker = { .subs = { { "jobs.>", "workers" } },
                                        .end_topic = "jobs-end" };
        static const RecSpec auditor = { .subs = { { "jobs.>", "auditors" } },
                                         .end_topic = "jobs-end" };
        static const RecSpec plain = { .subs = { { "jobs.>" } }, .end_topic = "jobs-end" };
        Child workers[N_WORKERS], auditors[N_AUDITORS], watcher;
        bus_client *c = NULL;
        RecHeader h;
        Rec *recs;
        bool ordered = true;

        for (size_t i = 0; i < N_WORKERS; i++)
                tap_check(recorder_start(&workers[i], &worker));
        for (size_t i = 0; i < N_AUDITORS; i++)
                tap_check(recorder_start(&auditors[i], &auditor));
        tap_check(recorder_start(&watcher, &plain));

        tap_check(bus_client_open(&c, busd.address) >= 0);
        for (uint32_t seq = 0; c && seq < QUEUE_N; seq++)
                tap_check(bus_client_publish(c, seq % 2 ? "jobs.build" : "jobs.test.unit", &seq,
                                             sizeof(seq), 0) >= 0);
        tap_check(bus_client_publish(c, "jobs-end", "", 0, 0) >= 0);
        tap_check(test_ping(c, WAIT_USEC));
        bus_client_unref(c);

        check_group("workers", workers, N_WORKERS);
        check_group("auditors", auditors, N_AUDITORS);

        /* The plain subscriber gets everything, in order. */
        recorder_collect(&watcher, &h, &recs);
        tap_check_int(h.n, QUEUE_N);
        for (uint32_t k = 0; k < h.n; k++)
                if (rec_seq(&recs[k]) != k)
                        ordered = false;
        tap_check(ordered);
        free(recs);
}

/* ---- Retained messages. */

#define FLOOD_MAX 20000

/* Publishes live messages on config.mode until told to stop (so a subscriber
 * joins while they flow), then one last live message and the end marker. */
static int flooder_main(void *arg) {
        Child *ch = arg;
        bus_client *c = NULL;
        char buf[32];
        bool ok, told = false;

        ok = child_check(bus_client_open(&c, busd.address) >= 0);
        for (unsigned i = 0; ok && i < FLOOD_MAX && !told; i++) {
                snprintf(buf, sizeof(buf), "live-%u", i);
                ok = child_check(bus_client_publish(c, "config.mode", buf, strlen(buf), 0) >= 0);
                if (ok && i % 16 == 15) {
                        ok = child_check(bus_client_flush(c) >= 0);
                        if (i == 15)
                                test_signal_post(&ch->up, 'F');
                        told = test_signal_wait(&ch->down, 0, NULL) == 0;
                }
        }
        ok = ok && (told || child_check(test_signal_wait(&ch->down, WAIT_MS, NULL) == 0)) &&
             child_check(bus_client_publish(c, "config.mode", "live-final", 10, 0) >= 0) &&
             child_check(bus_client_publish(c, "retained-end", "", 0, 0) >= 0) &&
             child_check(test_ping(c, WAIT_USEC));
        bus_client_unref(c);
        return ok ? 0 : 1;
}

static void test_retained(void) {
        static const RecSpec one = { .subs = { { "config.mode" } }, .end_topic = "retained-end" };
        static const RecSpec two = { .subs = { { "config.mode" }, { "config.>" } },
                                     .end_topic = "retained-end" };
        static const RecSpec skip = { .subs = { { "config.mode", NULL, BUS_SUBSCRIBE_NO_RETAINED },
                                                { "config.*" } },
                                      .end_topic = "retained-end" };
        static const Pub end = { "retained-end", "", 0 };
        Child sub, sub2, flooder;
        RecHeader h;
        Rec *recs;

        /* A subscriber that joins while live messages flow gets the retained
         * one first, flagged, then only live ones. */
        tap_check(parent_publish(&(Pub){ "config.mode", "mode-1", BUS_PUBLISH_RETAIN }, 1));
        tap_check(child_start(&flooder, flooder_main, NULL));
        tap_check(child_wait_up(&flooder));
        tap_check(recorder_start(&sub, &one));
        test_signal_post(&flooder.down, 'G');
        recorder_collect(&sub, &h, &recs);
        tap_check_int(child_finish(&flooder), 0);
        if (tap_check(h.n >= 2)) {
                int first = -1, last = -1;

                tap_check(rec_payload_is(&recs[0], "mode-1"));
                tap_check_int(recs[0].retained, 1);
                for (size_t k = 1; k < h.n; k++) {
                        int i = -1;

                        tap_check_int(recs[k].retained, 0);
                        if (k + 1 == h.n) {
                                tap_check(rec_payload_is(&recs[k], "live-final"));
                                break;
                        }
                        /* Live messages: all of them from where it joined, in order. */
                        recs[k].payload[sizeof(recs[k].payload) - 1] = 0;
                        if (!tap_check(sscanf((char *) recs[k].payload, "live-%d", &i) == 1 &&
                                       (last < 0 || i == last + 1)))
                                tap_diag("live-%d after live-%d", i, last);
                        if (first < 0)
                                first = i;
                        last = i;
                }
                tap_diag("joined at live-%d, got %u live messages", first, h.n - 2);
        } else
                rec_dump("sub", recs, h.n);
        free(recs);

        /* A retained publish is delivered live (not flagged) to current
         * subscribers, and replaces the retained message for later ones. */
        tap_check(recorder_start(&sub, &one));
        tap_check(parent_publish((const Pub[]){ { "config.mode", "mode-2", BUS_PUBLISH_RETAIN },
                                                end },
                                 2));
        tap_check(recorder_start(&sub2, &one));
        tap_check(parent_publish(&end, 1));
        recorder_collect(&sub, &h, &recs);
        if (!tap_check_int(h.n, 2) ||
            !tap_check(rec_payload_is(&recs[0], "mode-1") && recs[0].retained == 1) ||
            !tap_check(rec_payload_is(&recs[1], "mode-2") && recs[1].retained == 0))
                rec_dump("current", recs, h.n);
        free(recs);
        recorder_collect(&sub2, &h, &recs);
        if (!tap_check_int(h.n, 1) ||
            !tap_check(rec_payload_is(&recs[0], "mode-2") && recs[0].retained == 1))
                rec_dump("later", recs, h.n);
        free(recs);

        /* A retained publish with an empty payload deletes it. */
        tap_check(parent_publish(&(Pub){ "config.mode", "", BUS_PUBLISH_RETAIN }, 1));
        tap_check(recorder_start(&sub, &two));
        tap_check(parent_publish(&end, 1));
        recorder_collect(&sub, &h, &recs);
        if (!tap_check_int(h.n, 0))
                rec_dump("after delete", recs, h.n);
        free(recs);

        /* BUS_SUBSCRIBE_NO_RETAINED skips it; a second subscription of the
         * same connection without the flag gets it. */
        tap_check(parent_publish(&(Pub){ "config.mode", "mode-3", BUS_PUBLISH_RETAIN }, 1));
        tap_check(recorder_start(&sub, &skip));
        tap_check(parent_publish((const Pub[]){ { "config.mode", "live-5", 0 }, end }, 2));
        recorder_collect(&sub, &h, &recs);
        if (!tap_check_int(h.n, 3) ||
            !tap_check(recs[0].sub == 1 && recs[0].retained == 1 &&
                       rec_payload_is(&recs[0], "mode-3")) ||
            !tap_check(recs[1].sub != recs[2].sub && recs[1].retained == 0 &&
                       recs[2].retained == 0 && rec_payload_is(&recs[1], "live-5") &&
                       rec_payload_is(&recs[2], "live-5")))
                rec_dump("no-retained", recs, h.n);
        free(recs);

        /* Leave no retained message behind for the other cases. */
        tap_check(parent_publish(&(Pub){ "config.mode", "", BUS_PUBLISH_RETAIN }, 1));
}

/* ---- Acknowledged subscribe: no slow joiner. */

#define ACK_ROUNDS 20

typedef struct AckState {
        unsigned got;
        char topic[32];
        bool wrong;
} AckState;

static int ack_cb(bus_message *m, void *userdata) {
        AckState *s = userdata;

        if (strcmp(bus_message_get_topic(m) ?: "", s->topic) != 0)
                s->wrong = true;
        s->got++;
        return 0;
}

static int ack_main(void *arg) {
        Child *ch = arg;
        AckState s = {};
        bus_client *c = NULL;
        bool ok;

        ok = child_check(bus_client_open(&c, busd.address) >= 0);
        for (unsigned i = 0; ok && i < ACK_ROUNDS; i++) {
                bus_slot *slot = NULL;

                snprintf(s.topic, sizeof(s.topic), "ack.round%u", i);
                ok = child_check(bus_client_subscribe(c, &slot, s.topic, NULL, 0, ack_cb, &s) >= 0);
                if (!ok)
                        break;
                /* Right after the acknowledgement: the publisher goes now. */
                test_signal_post(&ch->up, 'S');
                ok = child_check(pump_until(c, &s.got, i + 1));
                if (!ok)
                        tap_diag("child %d: round %u: publish after subscribe lost",
                                 (int) getpid(), i);
                bus_slot_unref(slot);
        }
        ok = child_check(!s.wrong) && ok;
        bus_client_unref(c);
        return ok ? 0 : 1;
}

static void test_acknowledged_subscribe(void) {
        bus_client *c = NULL;
        Child sub;
        char topic[32];

        tap_check(child_start(&sub, ack_main, NULL));
        tap_check(bus_client_open(&c, busd.address) >= 0);
        for (unsigned i = 0; c && i < ACK_ROUNDS; i++) {
                if (!tap_check(child_wait_up(&sub)))
                        break;
                snprintf(topic, sizeof(topic), "ack.round%u", i);
                tap_check(bus_client_publish(c, topic, "now", 3, 0) >= 0);
        }
        tap_check(test_ping(c, WAIT_USEC));
        tap_check_int(child_finish(&sub), 0);
        bus_client_unref(c);
}

/* ---- Two matching subscriptions on one connection; unsubscribing. */

typedef struct DupState {
        unsigned a, b, total, ended;
} DupState;

static int dup_a_cb(bus_message *m, void *userdata) {
        DupState *s = userdata;

        s->a++;
        s->total++;
        return 0;
}

static int dup_b_cb(bus_message *m, void *userdata) {
        DupState *s = userdata;

        s->b++;
        s->total++;
        return 0;
}

/* The connection's subscriptions as the broker lists them: a bitmask of
 * 1 "dup.topic", 2 "dup.*", 4 "dupend", 8 anything else; -1 on error. */
static int dup_listed(bus_client *c) {
        Bus__ListSubscriptionsRequest req = BUS__LIST_SUBSCRIPTIONS_REQUEST__INIT;
        Bus__ListSubscriptionsReply *reply = NULL;
        bus_error e = BUS_ERROR_NULL;
        const char *id;
        int mask = 0;

        if (bus_client_get_unique_id(c, &id) < 0 ||
            bus_client_call_protobuf(c, "bus", "ListSubscriptions", &req.base,
                                     &bus__list_subscriptions_reply__descriptor, WAIT_USEC, &e,
                                     (ProtobufCMessage **) &reply) < 0) {
                bus_error_free(&e);
                return -1;
        }
        for (size_t i = 0; i < reply->n_subscriptions; i++) {
                const char *p = reply->subscriptions[i]->pattern;

                if (strcmp(reply->subscriptions[i]->peer, id) != 0)
                        continue;
                mask |= strcmp(p, "dup.topic") == 0 ? 1 : strcmp(p, "dup.*") == 0 ? 2 :
                        strcmp(p, "dupend") == 0   ? 4 : 8;
        }
        bus__list_subscriptions_reply__free_unpacked(reply, NULL);
        return mask;
}

static int dup_main(void *arg) {
        Child *ch = arg;
        DupState s = {};
        bus_client *c = NULL;
        bus_slot *slot_a = NULL;
        bool ok;

        ok = child_check(bus_client_open(&c, busd.address) >= 0) &&
             child_check(bus_client_subscribe(c, &slot_a, "dup.topic", NULL, 0, dup_a_cb,
                                              &s) >= 0) &&
             child_check(bus_client_subscribe(c, NULL, "dup.*", NULL, 0, dup_b_cb, &s) >= 0) &&
             child_check(bus_client_subscribe(c, NULL, "dupend", NULL, 0, count_cb,
                                              &s.ended) >= 0) &&
             child_check(dup_listed(c) == (1 | 2 | 4));
        if (ok) {
                test_signal_post(&ch->up, 'R');
                /* The first message: both callbacks, once each. */
                ok = child_check(pump_until(c, &s.total, 2)) && child_check(s.a == 1) &&
                     child_check(s.b == 1);
        }
        if (ok) {
                slot_a = bus_slot_unref(slot_a);
                /* The broker has dropped it too. */
                ok = child_check(dup_listed(c) == (2 | 4));
                test_signal_post(&ch->up, 'U');
                ok = child_check(pump_until(c, &s.ended, 1)) && ok;
                ok = child_check(s.a == 1) && child_check(s.b == 2) && ok;
                if (!ok)
                        tap_diag("child %d: a %u b %u end %u", (int) getpid(), s.a, s.b, s.ended);
        }
        bus_slot_unref(slot_a);
        bus_client_unref(c);
        return ok ? 0 : 1;
}

static void test_two_subscriptions(void) {
        bus_client *c = NULL;
        Child sub;

        tap_check(child_start(&sub, dup_main, NULL));
        tap_check(bus_client_open(&c, busd.address) >= 0);
        if (tap_check(child_wait_up(&sub)))
                tap_check(bus_client_publish(c, "dup.topic", "m1", 2, 0) >= 0);
        if (tap_check(child_wait_up(&sub))) {
                tap_check(bus_client_publish(c, "dup.topic", "m2", 2, 0) >= 0);
                tap_check(bus_client_publish(c, "dupend", "", 0, 0) >= 0);
        }
        tap_check(test_ping(c, WAIT_USEC));
        tap_check_int(child_finish(&sub), 0);
        bus_client_unref(c);
}

/* ---- The sender's identity. */

#define IDENT_N 10

static int ident_pub_main(void *arg) {
        Child *ch = arg;
        bus_client *c = NULL;
        char id[24] = {};
        const char *s;
        bool ok;

        ok = child_check(bus_client_open(&c, busd.address) >= 0) &&
             child_check(bus_client_get_unique_id(c, &s) >= 0);
        if (ok)
                snprintf(id, sizeof(id), "%s", s);
        ok = child_check(child_report(ch, id, sizeof(id)) >= 0) && ok;
        ok = ok && child_check(test_signal_wait(&ch->down, WAIT_MS, NULL) == 0);
        for (unsigned i = 0; ok && i < IDENT_N; i++)
                ok = child_check(bus_client_publish(c, "ident.reading", &i, sizeof(i), 0) >= 0);
        ok = ok && child_check(bus_client_publish(c, "ident-end", "", 0, 0) >= 0) &&
             child_check(test_ping(c, WAIT_USEC));
        bus_client_unref(c);
        return ok ? 0 : 1;
}

static void test_sender_identity(void) {
        static const RecSpec spec = { .subs = { { "ident.>" } }, .end_topic = "ident-end" };
        Child sub, pub;
        char id[24] = {};
        RecHeader h;
        Rec *recs;
        pid_t pub_pid;

        tap_check(recorder_start(&sub, &spec));
        tap_check(child_start(&pub, ident_pub_main, NULL));
        pub_pid = pub.pid;
        tap_check(child_read(&pub, id, sizeof(id)) == 0);
        id[sizeof(id) - 1] = 0;
        tap_check(strncmp(id, ":1.", 3) == 0);
        test_signal_post(&pub.down, 'G');
        recorder_collect(&sub, &h, &recs);
        tap_check_int(child_finish(&pub), 0);

        /* Not the subscriber's own id: the check below can tell them apart. */
        tap_check(strcmp(id, h.unique_id) != 0);
        tap_check_int(h.n, IDENT_N);
        for (size_t k = 0; k < h.n; k++) {
                if (!tap_check(strcmp(recs[k].sender, id) == 0))
                        tap_diag("delivery %zu: sender %s, publisher %s", k, recs[k].sender, id);
                tap_check_int(recs[k].creds_result, 0);
                tap_check_int(recs[k].pid, pub_pid);
                tap_check_int(recs[k].uid, getuid());
                tap_check_int(recs[k].gid, getgid());
        }
        free(recs);
}

/* ---- Broker events. */

typedef struct EvRec {
        char topic[32];
        char sender[24];
        char unique_id[24];
        uint32_t uid, gid, pid;
        int32_t decoded; /* bus_message_read_protobuf()'s result */
} EvRec;

typedef struct EvState {
        pid_t watch_pid; /* stop once this pid's disconnection is seen */
        EvRec recs[64];
        unsigned n, done;
} EvState;

static int ev_cb(bus_message *m, void *userdata) {
        EvState *s = userdata;
        Bus__PeerEvent *ev = NULL;
        EvRec *r;

        if (s->n == sizeof(s->recs) / sizeof(s->recs[0]))
                return -ENOBUFS;
        r = &s->recs[s->n++];
        memset(r, 0, sizeof(*r));
        snprintf(r->topic, sizeof(r->topic), "%s", bus_message_get_topic(m) ?: "");
        snprintf(r->sender, sizeof(r->sender), "%s", bus_message_get_sender(m) ?: "");
        r->decoded = bus_message_read_protobuf(m, &bus__peer_event__descriptor,
                                               (ProtobufCMessage **) &ev);
        if (r->decoded < 0)
                return 0;
        snprintf(r->unique_id, sizeof(r->unique_id), "%s", ev->unique_id);
        r->uid = ev->uid;
        r->gid = ev->gid;
        r->pid = ev->pid;
        if (strcmp(r->topic, "bus.peer.disconnected") == 0 && (pid_t) ev->pid == s->watch_pid)
                s->done = 1;
        bus__peer_event__free_unpacked(ev, NULL);
        return 0;
}

static int events_watch_main(void *arg) {
        Child *ch = arg;
        EvState *s = calloc(1, sizeof(*s));
        bus_client *c = NULL;
        bool ok;

        assert(s);
        s->watch_pid = *(const pid_t *) ch->spec;
        ok = child_check(bus_client_open(&c, busd.address) >= 0) &&
             child_check(bus_client_subscribe(c, NULL, "bus.peer.>", NULL, 0, ev_cb, s) >= 0);
        if (ok) {
                test_signal_post(&ch->up, 'R');
                ok = child_check(pump_until(c, &s->done, 1));
        }
        ok = child_check(child_report(ch, s->recs, s->n * sizeof(EvRec)) >= 0) && ok;
        bus_client_unref(c);
        free(s);
        return ok ? 0 : 1;
}

/* Connects when told to, says its unique id, and leaves. */
static int events_peer_main(void *arg) {
        Child *ch = arg;
        bus_client *c = NULL;
        char id[24] = {};
        const char *s;
        bool ok;

        ok = child_check(test_signal_wait(&ch->down, WAIT_MS, NULL) == 0) &&
             child_check(bus_client_open(&c, busd.address) >= 0) &&
             child_check(bus_client_get_unique_id(c, &s) >= 0);
        if (ok)
                snprintf(id, sizeof(id), "%s", s);
        ok = child_check(child_report(ch, id, sizeof(id)) >= 0) && ok;
        bus_client_unref(c);
        return ok ? 0 : 1;
}

static void test_broker_events(void) {
        Child peer, watcher;
        char id[24] = {};
        uint8_t *buf = NULL;
        ssize_t n;
        int connected = -1, disconnected = -1;
        pid_t peer_pid;

        tap_check(child_start(&peer, events_peer_main, NULL));
        peer_pid = peer.pid;
        tap_check(child_start(&watcher, events_watch_main, &peer.pid));
        tap_check(child_wait_up(&watcher));
        test_signal_post(&peer.down, 'G');
        tap_check(child_read(&peer, id, sizeof(id)) == 0);
        id[sizeof(id) - 1] = 0;
        tap_check(strncmp(id, ":1.", 3) == 0);
        tap_check_int(child_finish(&peer), 0);

        n = child_read_all(&watcher, &buf);
        tap_check_int(child_finish(&watcher), 0);
        tap_check(n >= 0 && n % (ssize_t) sizeof(EvRec) == 0);
        for (ssize_t k = 0; n > 0 && k < n / (ssize_t) sizeof(EvRec); k++) {
                EvRec r;

                memcpy(&r, buf + k * sizeof(EvRec), sizeof(r));
                tap_check_int(r.decoded, 0);
                tap_check(strcmp(r.sender, "bus") == 0);
                if (strcmp(r.unique_id, id) != 0)
                        continue; /* another connection (the watcher's own is not seen) */
                tap_check_int(r.pid, peer_pid);
                tap_check_int(r.uid, getuid());
                tap_check_int(r.gid, getgid());
                if (strcmp(r.topic, "bus.peer.connected") == 0) {
                        tap_check_int(connected, -1);
                        connected = (int) k;
                } else if (strcmp(r.topic, "bus.peer.disconnected") == 0) {
                        tap_check_int(disconnected, -1);
                        disconnected = (int) k;
                } else if (!tap_check(strcmp(r.topic, "bus.peer.lagging") == 0))
                        tap_diag("unexpected event %s", r.topic);
        }
        tap_check(connected >= 0);
        tap_check(disconnected > connected);
        free(buf);
}

/* ---- Topics a client may not publish on. */

static void test_reserved_topic(void) {
        static const char *const bad[] = {
                "bus", "bus.x", "bus.peer.connected", "bus.name.org.example.Foo", /* reserved */
                "", ".", "a..b", ".a", "a.", "*", ">", "a.*", "a.>", "a.*.b", "a>", "a*b",
                "a b", "a\tb", "caf\xc3\xa9", "a\x7f",
        };
        bus_message *before = NULL, *after = NULL, *m = NULL;
        uint64_t s1 = 0, s2 = 0;
        bus_client *c = NULL;
        char long_topic[1026];

        tap_check(bus_client_open(&c, busd.address) >= 0);
        tap_check(bus_message_new_publish(&before, "reserved.before") >= 0);
        tap_check(bus_client_send(c, before, &s1) >= 0);

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                if (!tap_check_int(bus_client_publish(c, bad[i], "x", 1, 0), -EINVAL) ||
                    !tap_check_int(bus_client_publish(c, bad[i], "x", 1, BUS_PUBLISH_RETAIN),
                                   -EINVAL) ||
                    !tap_check_int(bus_message_new_publish(&m, bad[i]), -EINVAL))
                        tap_diag("topic \"%s\"", bad[i]);
                tap_check(m == NULL);
        }
        tap_check_int(bus_client_publish(c, NULL, "x", 1, 0), -EINVAL);
        memset(long_topic, 'a', 1025);
        long_topic[1025] = 0;
        tap_check_int(bus_client_publish(c, long_topic, "x", 1, 0), -EINVAL);

        /* Nothing was sent in between: the serials are consecutive. */
        tap_check(bus_message_new_publish(&after, "reserved.after") >= 0);
        tap_check(bus_client_send(c, after, &s2) >= 0);
        tap_check(s1 > 0);
        tap_check_int(s2, s1 + 1);

        /* The rules are not stricter than they should be. */
        long_topic[1024] = 0;
        tap_check(bus_client_publish(c, long_topic, "x", 1, 0) >= 0);
        tap_check(bus_client_publish(c, "busx.y", "x", 1, 0) >= 0);
        tap_check(bus_client_publish(c, "a.bus", "x", 1, 0) >= 0);
        tap_check(bus_client_publish(c, "x-y_z:1!~", "x", 1, 0) >= 0);
        tap_check(test_ping(c, WAIT_USEC));
        tap_check_int(bus_client_is_connected(c), 1);

        bus_message_unref(before);
        bus_message_unref(after);
        bus_client_unref(c);
}

/* ---- Batching: publishes wait for the loop, in order, and none is lost. */

#define BATCH_MESSAGES 2000u  /* 64 B each: past the 64 KiB a batch holds */

typedef struct BatchReader {
        bus_client *client;
        unsigned next;
        bool out_of_order;
} BatchReader;

static int batch_count(bus_message *m, void *userdata) {
        BatchReader *b = userdata;
        const void *data;
        size_t size;
        unsigned seq;

        if (bus_message_get_payload(m, &data, &size) < 0 || size != 64)
                b->out_of_order = true;
        else {
                memcpy(&seq, data, sizeof(seq));
                if (seq != b->next)
                        b->out_of_order = true;
        }
        if (++b->next == BATCH_MESSAGES)
                bus_client_exit(b->client, 0);
        return 0;
}

static int batch_reader(void *arg) {
        TestSignal *ready = arg;
        BatchReader b = {};
        int r;

        if (bus_client_open(&b.client, NULL) < 0 ||
            bus_client_subscribe(b.client, NULL, "batch.>", NULL, 0, batch_count, &b) < 0)
                return 1;
        test_signal_post(ready, 'r');
        r = bus_client_run(b.client);
        bus_client_unref(b.client);
        return r == 0 && !b.out_of_order ? 0 : 2;
}

static void test_batching(void) {
        bus_client *c = NULL;
        TestSignal ready;
        uint8_t payload[64] = {};
        pid_t reader;

        tap_check(test_signal_init(&ready) == 0);
        reader = test_child_start(batch_reader, &ready);
        tap_check(test_signal_wait(&ready, WAIT_MS, NULL) == 0);
        tap_check(bus_client_open(&c, NULL) >= 0);
        tap_check(bus_client_set_batching(c, 1) == 0);
        /* A few publishes only queue: the client asks to be written. */
        for (unsigned i = 0; i < 10; i++) {
                memcpy(payload, &i, sizeof(i));
                tap_check(bus_client_publish(c, "batch.x", payload, sizeof(payload), 0) >= 0);
        }
        tap_check(bus_client_get_events(c) & POLLOUT);
        /* Past 64 KiB they go out by themselves; the rest with the flush. */
        for (unsigned i = 10; i < BATCH_MESSAGES; i++) {
                memcpy(payload, &i, sizeof(i));
                tap_check(bus_client_publish(c, "batch.x", payload, sizeof(payload), 0) >= 0);
        }
        tap_check(bus_client_flush(c) >= 0);
        tap_check(!(bus_client_get_events(c) & POLLOUT));
        tap_check_int(test_child_wait(reader, WAIT_MS), 0);
        bus_client_unref(c);
        test_signal_close(&ready);
}

static void test_broker_exits_cleanly(void) {
        test_busd_check_clean_exit(&busd);
}

int main(void) {
        tap_init();
        signal(SIGPIPE, SIG_IGN);
        test_busd_start_or_bail(&busd, NULL);
        TAP_RUN(test_fanout);
        TAP_RUN(test_wildcards);
        TAP_RUN(test_queue_groups);
        TAP_RUN(test_retained);
        TAP_RUN(test_acknowledged_subscribe);
        TAP_RUN(test_two_subscriptions);
        TAP_RUN(test_sender_identity);
        TAP_RUN(test_broker_events);
        TAP_RUN(test_reserved_topic);
        TAP_RUN(test_batching);
        TAP_RUN(test_broker_exits_cleanly);
        return tap_done();
}
