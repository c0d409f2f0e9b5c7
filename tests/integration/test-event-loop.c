/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Integration test: driving a bus_client from an event loop against a real
 * busd. The test's own poll() loop on get_fd/get_events/get_timeout/process
 * with async calls in flight, an sd_event loop (bus_client_attach_event),
 * bus_client_run/bus_client_exit, an async call that times out (the timeout
 * wakes the loop with no I/O), and a broker that goes away under pending
 * calls.
 *
 * The callee is a service in a child process with its own connection; it
 * tells the parent its unique id over a socket pair and serves Echo, Never
 * (keeps the request and never answers), Trigger (publishes loop.ping, then
 * replies), Quit, and answers loop.pong with loop.done.
 *
 * To have output that cannot be written at once (and so POLLOUT), busd is
 * held with SIGSTOP while a 4 MiB request is queued, then let go: a
 * condition, not a race with a fast reader.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-event.h>

#include <libbus/bus.h>

#include "tests/lib/tap.h"
#include "tests/lib/util-busd.h"

/* Deadline of any one wait. Normal runs take milliseconds; this only bounds
 * how long a broken run takes to fail. */
#define WAIT_MS 10000
#define WAIT_USEC ((uint64_t) WAIT_MS * 1000)
#define ID_SIZE 24
#define MIN(a, b) ((a) < (b) ? (a) : (b))

static TestBusd busd;

/* CLOCK_MONOTONIC in microseconds, as bus_client_get_timeout() reports. */
static uint64_t mono_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * BUS_USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

#define child_check(cond)                                                            \
        ((cond) ? true                                                               \
                : (tap_diag("child %d: %s:%d: check failed: %s", (int) getpid(),     \
                            __FILE__, __LINE__, #cond),                               \
                   false))

/* ---- The service child. */

typedef struct ServiceSpec {
        const char *address;
        bool expect_loss; /* its broker will go away: bus_client_run() ends with -ECONNRESET */
} ServiceSpec;

typedef struct Child {
        pid_t pid;
        TestSignal up;  /* child -> parent: ready */
        TestSignal out; /* child -> parent: the service's unique id, a report */
        const void *arg;
} Child;

typedef struct Service {
        bus_client *c;
        bus_message *kept[16];
        unsigned n_kept;
} Service;

static int svc_echo(bus_message *m, void *userdata) {
        Service *s = userdata;
        const void *data;
        size_t size;
        int r;

        r = bus_message_get_payload(m, &data, &size);
        if (r < 0)
                return r;
        return bus_client_reply(s->c, m, data, size);
}

/* Keeps the request and never answers. */
static int svc_never(bus_message *m, void *userdata) {
        Service *s = userdata;

        if (s->n_kept < sizeof(s->kept) / sizeof(s->kept[0]))
                s->kept[s->n_kept++] = bus_message_ref(m);
        return 0;
}

static int svc_trigger(bus_message *m, void *userdata) {
        Service *s = userdata;
        int r;

        r = bus_client_publish(s->c, "loop.ping", "ping", 4, 0);
        if (r < 0)
                return r;
        return bus_client_reply(s->c, m, "triggered", 9);
}

static int svc_quit(bus_message *m, void *userdata) {
        Service *s = userdata;
        int r;

        r = bus_client_reply(s->c, m, NULL, 0);
        bus_client_exit(s->c, 0);
        return r;
}

static int svc_pong(bus_message *m, void *userdata) {
        Service *s = userdata;
        const void *data;
        size_t size;
        int r;

        r = bus_message_get_payload(m, &data, &size);
        if (r < 0)
                return r;
        return bus_client_publish(s->c, "loop.done", data, size, 0);
}

static int service_main(void *arg) {
        Child *ch = arg;
        const ServiceSpec *spec = ch->arg;
        Service s = {};
        char id[ID_SIZE] = {};
        const char *p;
        bool ok;
        int r = -1;

        ok = child_check(bus_client_open(&s.c, spec->address) >= 0) &&
             child_check(bus_client_add_method(s.c, NULL, NULL, "Echo", svc_echo, &s) >= 0) &&
             child_check(bus_client_add_method(s.c, NULL, NULL, "Never", svc_never, &s) >= 0) &&
             child_check(bus_client_add_method(s.c, NULL, NULL, "Trigger", svc_trigger, &s) >= 0) &&
             child_check(bus_client_add_method(s.c, NULL, NULL, "Quit", svc_quit, &s) >= 0) &&
             child_check(bus_client_subscribe(s.c, NULL, "loop.pong", NULL, 0, svc_pong, &s) >= 0) &&
             child_check(bus_client_get_unique_id(s.c, &p) >= 0);
        if (ok)
                snprintf(id, sizeof(id), "%s", p);
        if (send(ch->out.fd[1], id, sizeof(id), MSG_NOSIGNAL) != (ssize_t) sizeof(id))
                ok = false;
        if (ok) {
                test_signal_post(&ch->up, 'R');
                r = bus_client_run(s.c);
                if (spec->expect_loss)
                        ok = child_check(r == -ECONNRESET) &&
                             child_check(bus_client_is_connected(s.c) == 0);
                else
                        ok = child_check(r == 0) && child_check(bus_client_flush(s.c) >= 0);
                if (!ok)
                        tap_diag("child %d: bus_client_run() returned %d", (int) getpid(), r);
        }
        for (unsigned i = 0; i < s.n_kept; i++)
                bus_message_unref(s.kept[i]);
        bus_client_unref(s.c);
        return ok ? 0 : 1;
}

/* Reads exactly len bytes from fd. */
static int recv_exact(int fd, void *buf, size_t len) {
        int64_t deadline = test_now_ms() + WAIT_MS;
        size_t got = 0;

        while (got < len) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                int64_t left = deadline - test_now_ms();
                ssize_t n;

                if (left <= 0)
                        return -ETIMEDOUT;
                if (poll(&p, 1, (int) left) < 0 && errno != EINTR)
                        return -errno;
                n = recv(fd, (uint8_t *) buf + got, len - got, MSG_DONTWAIT);
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

static void child_close(Child *ch) {
        test_signal_close(&ch->up);
        test_signal_close(&ch->out);
}

/* Forks fn(ch); the parent keeps the read ends. */
static bool child_start(Child *ch, int (*fn)(void *), const void *arg) {
        *ch = (Child){ .pid = -1, .up = { { -1, -1 } }, .out = { { -1, -1 } }, .arg = arg };
        if (test_signal_init(&ch->up) < 0 || test_signal_init(&ch->out) < 0) {
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

/* Reaps a child: its exit status. */
static int child_finish(Child *ch) {
        int r = ch->pid > 0 ? test_child_wait(ch->pid, WAIT_MS) : -ESRCH;

        child_close(ch);
        ch->pid = -1;
        return r;
}

/* Starts the service and waits until it serves; its unique id in id. */
static bool service_start(Child *ch, const ServiceSpec *spec, char id[ID_SIZE]) {
        memset(id, 0, ID_SIZE);
        if (!child_start(ch, service_main, spec) ||
            recv_exact(ch->out.fd[0], id, ID_SIZE) < 0 ||
            test_signal_wait(&ch->up, WAIT_MS, NULL) < 0)
                return false;
        id[ID_SIZE - 1] = 0;
        return strncmp(id, ":1.", 3) == 0;
}

/* Asks the service to quit (c may be NULL: then from a connection of its
 * own) and reaps it. */
static void service_stop(bus_client *c, Child *ch, const char *id) {
        bus_client *own = NULL;
        bus_error e = BUS_ERROR_NULL;

        if (!c && tap_check(bus_client_open(&own, busd.address) >= 0))
                c = own;
        if (c &&
            !tap_check(bus_client_call_method(c, id, "Quit", NULL, 0, WAIT_USEC, &e, NULL) >= 0))
                tap_diag("Quit: %s: %s", e.name ?: "?", e.message ?: "");
        bus_error_free(&e);
        bus_client_unref(own);
        tap_check_int(child_finish(ch), 0);
}

/* ---- The test's own poll() loop. */

/* Drives c with poll() on get_fd/get_events/get_timeout until *count
 * reaches want: 1, 0 at the deadline, or bus_client_process()'s error. */
static int poll_loop(bus_client *c, const unsigned *count, unsigned want, int timeout_ms) {
        int64_t deadline = test_now_ms() + timeout_ms;

        for (;;) {
                struct pollfd p = {};
                uint64_t t, now;
                int64_t left;
                int r, wait_ms;

                while ((r = bus_client_process(c)) > 0)
                        if (*count >= want)
                                return 1;
                if (r < 0)
                        return r;
                if (*count >= want)
                        return 1;
                left = deadline - test_now_ms();
                if (left <= 0)
                        return 0;
                p.fd = bus_client_get_fd(c);
                r = bus_client_get_events(c);
                if (p.fd < 0 || r < 0)
                        return p.fd < 0 ? p.fd : r;
                p.events = (short) r;
                r = bus_client_get_timeout(c, &t);
                if (r < 0)
                        return r;
                wait_ms = (int) left;
                now = mono_usec();
                if (t != UINT64_MAX)
                        wait_ms = t <= now ? 0 : (int) MIN((uint64_t) left, (t - now + 999) / 1000);
                if (poll(&p, 1, wait_ms) < 0 && errno != EINTR)
                        return -errno;
        }
}

/* Processes what is ready without waiting. */
static void drain(bus_client *c) {
        while (bus_client_process(c) > 0)
                ;
}

/* ---- poll() loop with async calls. */

#define POLL_CALLS 50
#define BIG_SIZE ((size_t) 4 * 1024 * 1024) /* many times a socket buffer */

typedef struct CallCtx {
        unsigned idx;
        unsigned calls; /* callback invocations */
        bool ok;
        unsigned *replies;
} CallCtx;

static size_t call_payload(unsigned idx, uint8_t *buf) {
        if (idx == POLL_CALLS) {
                for (size_t j = 0; j < BIG_SIZE; j++)
                        buf[j] = (uint8_t) (j * 31 + j / 4096);
                return BIG_SIZE;
        }
        return (size_t) snprintf((char *) buf, 64, "call-%u", idx);
}

static int echo_reply_cb(bus_message *m, void *userdata) {
        static uint8_t expect[BIG_SIZE];
        CallCtx *x = userdata;
        size_t len = call_payload(x->idx, expect), size;
        const void *data;

        x->calls++;
        (*x->replies)++;
        x->ok = bus_message_get_kind(m) == BUS_KIND_REPLY &&
                bus_message_get_payload(m, &data, &size) >= 0 && size == len &&
                memcmp(data, expect, len) == 0;
        if (!x->ok)
                tap_diag("call %u: kind %d error %s", x->idx, bus_message_get_kind(m),
                         bus_message_get_error_name(m) ?: "-");
        return 0;
}

/* Stops busd (SIGSTOP) and waits until it is stopped, so that it reads
 * nothing until SIGCONT. */
static bool busd_stop_signal(TestBusd *b) {
        siginfo_t si = {};

        if (kill(b->pid, SIGSTOP) < 0)
                return false;
        if (waitid(P_PID, (id_t) b->pid, &si, WSTOPPED | WEXITED | WNOWAIT) < 0)
                return false;
        return si.si_code == CLD_STOPPED;
}

static uint8_t big_buf[BIG_SIZE];

/* Sends an Echo call whose payload cannot all be written at once (busd is
 * stopped meanwhile), so output stays queued. Inline: through shared memory
 * it would be one small frame. */
static bool call_big_echo(bus_client *c, const char *id, bus_message_handler_t cb, void *userdata) {
        bus_message *m = NULL;
        bool stopped, ok;

        ok = tap_check(bus_message_new_request(&m, id, "Echo") >= 0) &&
             tap_check(bus_message_set_shm(m, BUS_SHM_NEVER) >= 0) &&
             tap_check(bus_message_set_payload(m, big_buf, call_payload(POLL_CALLS, big_buf)) >= 0);
        stopped = busd_stop_signal(&busd);
        ok = ok && tap_check(bus_client_call_async(c, NULL, m, cb, userdata, WAIT_USEC) >= 0);
        ok = tap_check_int(bus_client_get_events(c), POLLIN | POLLOUT) && ok;
        ok = tap_check(stopped) && ok;
        ok = tap_check(kill(busd.pid, SIGCONT) == 0) && ok;
        bus_message_unref(m);
        return ok;
}

static void test_poll_loop(void) {
        static const ServiceSpec spec = { .address = busd.address };
        uint8_t buf[64];
        CallCtx ctx[POLL_CALLS + 1];
        unsigned replies = 0, all_ok = 0, once = 0;
        char id[ID_SIZE];
        bus_client *c = NULL;
        Child svc;
        uint64_t t;

        tap_check(service_start(&svc, &spec, id));
        tap_check(bus_client_open(&c, busd.address) >= 0);
        drain(c);
        tap_check(bus_client_get_fd(c) >= 0);
        tap_check_int(bus_client_get_events(c), POLLIN);
        tap_check(bus_client_get_timeout(c, &t) >= 0);
        tap_check(t == UINT64_MAX);

        for (unsigned i = 0; i < POLL_CALLS; i++) {
                bus_message *m = NULL;

                ctx[i] = (CallCtx){ .idx = i, .replies = &replies };
                tap_check(bus_message_new_request(&m, id, "Echo") >= 0);
                tap_check(bus_message_set_payload(m, buf, call_payload(i, buf)) >= 0);
                tap_check(bus_client_call_async(c, NULL, m, echo_reply_cb, &ctx[i], WAIT_USEC) >= 0);
                bus_message_unref(m);
        }
        ctx[POLL_CALLS] = (CallCtx){ .idx = POLL_CALLS, .replies = &replies };
        tap_check(call_big_echo(c, id, echo_reply_cb, &ctx[POLL_CALLS]));
        /* Pending calls set a deadline, and nothing is due yet. */
        tap_check(bus_client_get_timeout(c, &t) >= 0);
        tap_check(t > mono_usec() && t <= mono_usec() + WAIT_USEC);

        tap_check_int(poll_loop(c, &replies, POLL_CALLS + 1, WAIT_MS), 1);
        for (unsigned i = 0; i <= POLL_CALLS; i++) {
                all_ok += ctx[i].ok;
                once += ctx[i].calls == 1;
        }
        tap_check_int(all_ok, POLL_CALLS + 1);
        tap_check_int(once, POLL_CALLS + 1);
        /* Everything was written: no POLLOUT, and no call is pending. */
        drain(c);
        tap_check_int(bus_client_get_events(c), POLLIN);
        tap_check(bus_client_get_timeout(c, &t) >= 0);
        tap_check(t == UINT64_MAX);

        service_stop(c, &svc, id);
        bus_client_unref(c);
}

/* ---- sd_event. */

typedef struct LoopState {
        sd_event *e;
        bus_client *c;
        bool got_reply, got_ping, pong_sent, timed_out;
        unsigned done, never; /* loop.done deliveries; answers to Never */
        char never_error[64];
        uint64_t never_sent, never_at;
        unsigned big_replies;
        CallCtx big;
} LoopState;


/* Nothing arrives for this call: only the loop's timer can end it. */
static int loop_never_cb(bus_message *m, void *userdata) {
        LoopState *st = userdata;

        st->never++;
        st->never_at = mono_usec();
        snprintf(st->never_error, sizeof(st->never_error), "%s",
                 bus_message_get_error_name(m) ?: "");
        return 0;
}

static int loop_big_cb(bus_message *m, void *userdata) {
        LoopState *st = userdata;

        return echo_reply_cb(m, &st->big);
}

static int loop_trigger_cb(bus_message *m, void *userdata) {
        LoopState *st = userdata;
        const void *data;
        size_t size;

        st->got_reply = bus_message_get_kind(m) == BUS_KIND_REPLY &&
                        bus_message_get_payload(m, &data, &size) >= 0 && size == 9 &&
                        memcmp(data, "triggered", 9) == 0;
        return 0;
}

static int loop_ping_cb(bus_message *m, void *userdata) {
        LoopState *st = userdata;

        st->got_ping = true;
        /* Published from a callback: the loop must send it. */
        st->pong_sent = bus_client_publish(st->c, "loop.pong", "pong-data", 9, 0) >= 0;
        return 0;
}

static int loop_done_cb(bus_message *m, void *userdata) {
        LoopState *st = userdata;
        const void *data;
        size_t size;
        bool ok;

        st->done++;
        ok = bus_message_get_payload(m, &data, &size) >= 0 && size == 9 &&
             memcmp(data, "pong-data", 9) == 0;
        /* The service replied before it published loop.done. */
        return sd_event_exit(st->e, ok && st->got_reply && st->got_ping ? 42 : 43);
}

static int loop_guard_cb(sd_event_source *s, uint64_t usec, void *userdata) {
        LoopState *st = userdata;

        st->timed_out = true;
        return sd_event_exit(st->e, 99);
}

/* Runs iterations of the sd_event loop until *count is non-zero. */
static bool sd_run_until(sd_event *e, const unsigned *count) {
        int64_t deadline = test_now_ms() + WAIT_MS;

        while (*count == 0) {
                int64_t left = deadline - test_now_ms();

                if (left <= 0 || sd_event_run(e, (uint64_t) left * 1000) < 0)
                        return false;
        }
        return true;
}

static void test_sd_event(void) {
        static const ServiceSpec spec = { .address = busd.address };
        LoopState st = {};
        sd_event_source *guard = NULL;
        bus_message *m = NULL;
        char id[ID_SIZE];
        Child svc;
        int r;

        tap_check(service_start(&svc, &spec, id));
        tap_check(sd_event_new(&st.e) >= 0);
        tap_check(bus_client_open(&st.c, busd.address) >= 0);
        tap_check_int(bus_client_attach_event(st.c, st.e, 0), 0);
        tap_check_int(bus_client_attach_event(st.c, st.e, 0), -EBUSY);

        /* Output only the loop can finish writing: with nothing else to do
         * (drained) and nothing coming in before the whole request is out,
         * only EPOLLOUT wakes it. */
        drain(st.c);
        st.big = (CallCtx){ .idx = POLL_CALLS, .replies = &st.big_replies };
        tap_check(call_big_echo(st.c, id, loop_big_cb, &st));
        tap_check(sd_run_until(st.e, &st.big_replies));
        tap_check_int(st.big.calls, 1);
        tap_check(st.big.ok);

        /* A call made outside the loop that nothing answers: the loop must
         * arm its timer for it (the broker waits 30 s, so the error after
         * 100 ms can only come from libbus's own timeout). */
        tap_check(bus_message_new_request(&m, id, "Never") >= 0);
        tap_check(bus_message_set_timeout(m, 30 * BUS_USEC_PER_SEC) >= 0);
        st.never_sent = mono_usec();
        tap_check(bus_client_call_async(st.c, NULL, m, loop_never_cb, &st, 100 * 1000) >= 0);
        bus_message_unref(m);
        m = NULL;
        tap_check(sd_run_until(st.e, &st.never));
        tap_check_int(st.never, 1);
        tap_check(strcmp(st.never_error, BUS_ERROR_TIMEOUT) == 0);
        /* On time: not early, and not seconds late. */
        tap_check(st.never_at >= st.never_sent + 100 * 1000);
        tap_check(st.never_at < st.never_sent + 3 * BUS_USEC_PER_SEC);

        /* Subscribe, call, publish from a callback, and leave the loop from
         * another: Trigger makes the service publish loop.ping and reply; on
         * loop.ping we publish loop.pong, which it answers with loop.done.
         * The subscriptions are synchronous calls outside the loop: what
         * they read meanwhile is the loop's to dispatch. */
        tap_check(bus_client_subscribe(st.c, NULL, "loop.ping", NULL, 0, loop_ping_cb, &st) >= 0);
        tap_check(bus_client_subscribe(st.c, NULL, "loop.done", NULL, 0, loop_done_cb, &st) >= 0);
        tap_check(bus_message_new_request(&m, id, "Trigger") >= 0);
        tap_check(bus_client_call_async(st.c, NULL, m, loop_trigger_cb, &st, WAIT_USEC) >= 0);
        bus_message_unref(m);
        tap_check(sd_event_add_time_relative(st.e, &guard, CLOCK_MONOTONIC, WAIT_USEC, 0,
                                             loop_guard_cb, &st) >= 0);

        r = sd_event_loop(st.e);
        tap_check_int(r, 42);
        tap_check(!st.timed_out);
        tap_check(st.got_reply);
        tap_check(st.got_ping);
        tap_check(st.pong_sent);
        tap_check_int(st.done, 1);
        tap_check_int(bus_client_is_connected(st.c), 1);

        tap_check_int(bus_client_detach_event(st.c), 0);
        service_stop(st.c, &svc, id);
        sd_event_source_unref(guard);
        bus_client_unref(st.c);
        sd_event_unref(st.e);
}

/* ---- bus_client_run() and bus_client_exit(). */

typedef struct RunState {
        bus_client *c;
        int code;     /* to exit with on success */
        unsigned calls;
} RunState;

/* What the child saw, for each code. */
typedef struct RunReport {
        int32_t exit_negative;  /* bus_client_exit(c, -1) */
        int32_t run[2];         /* bus_client_run() */
        uint32_t calls[2];      /* reply callbacks */
        int32_t connected[2];   /* bus_client_is_connected() afterwards */
} RunReport;

static const int run_codes[2] = { 7, 0 };

static int run_reply_cb(bus_message *m, void *userdata) {
        RunState *st = userdata;
        const void *data;
        size_t size;
        bool ok;

        st->calls++;
        ok = bus_message_get_kind(m) == BUS_KIND_REPLY &&
             bus_message_get_payload(m, &data, &size) >= 0 && size == 3 &&
             memcmp(data, "run", 3) == 0;
        /* A failed or timed-out call ends the run too, with another code. */
        return bus_client_exit(st->c, ok ? st->code : 100);
}

/* bus_client_run() blocks with no deadline of its own: it runs in a child,
 * which the parent kills if it does not return. */
static int run_exit_main(void *arg) {
        Child *ch = arg;
        const char *id = ch->arg;
        RunReport rep = { .run = { -1, -1 } };
        RunState st = {};
        bool ok;

        ok = child_check(bus_client_open(&st.c, busd.address) >= 0);
        rep.exit_negative = bus_client_exit(st.c, -1);
        for (size_t i = 0; ok && i < 2; i++) {
                bus_message *m = NULL;

                st.code = run_codes[i];
                st.calls = 0;
                ok = child_check(bus_message_new_request(&m, id, "Echo") >= 0) &&
                     child_check(bus_message_set_payload(m, "run", 3) >= 0) &&
                     child_check(bus_client_call_async(st.c, NULL, m, run_reply_cb, &st,
                                                       5 * BUS_USEC_PER_SEC) >= 0);
                bus_message_unref(m);
                if (!ok)
                        break;
                rep.run[i] = bus_client_run(st.c);
                rep.calls[i] = st.calls;
                rep.connected[i] = bus_client_is_connected(st.c);
        }
        ok = child_check(send(ch->out.fd[1], &rep, sizeof(rep), MSG_NOSIGNAL) ==
                         (ssize_t) sizeof(rep)) && ok;
        bus_client_unref(st.c);
        return ok ? 0 : 1;
}

static void test_run_exit(void) {
        static const ServiceSpec spec = { .address = busd.address };
        RunReport rep = { .run = { -1, -1 } };
        char id[ID_SIZE];
        Child svc, runner;

        tap_check(service_start(&svc, &spec, id));
        tap_check(child_start(&runner, run_exit_main, id));
        tap_check(recv_exact(runner.out.fd[0], &rep, sizeof(rep)) == 0);
        tap_check_int(child_finish(&runner), 0);

        tap_check_int(rep.exit_negative, -EINVAL);
        for (size_t i = 0; i < 2; i++) {
                tap_check_int(rep.run[i], run_codes[i]);
                tap_check_int(rep.calls[i], 1);
                tap_check_int(rep.connected[i], 1);
        }
        service_stop(NULL, &svc, id);
}

/* ---- An async call that times out. */

typedef struct TimeoutState {
        unsigned calls;
        int kind;
        int error;
        char name[64];
        uint64_t when;
        char late[64];   /* the log line to wait for */
        unsigned late_seen;
} TimeoutState;

static int timeout_cb(bus_message *m, void *userdata) {
        TimeoutState *st = userdata;
        bus_error e = BUS_ERROR_NULL;

        st->calls++;
        st->when = mono_usec();
        st->kind = bus_message_get_kind(m);
        st->error = bus_message_get_error(m, &e);
        snprintf(st->name, sizeof(st->name), "%s", e.name ?: "");
        bus_error_free(&e);
        return 0;
}

static void timeout_log(int priority, const char *message, void *userdata) {
        TimeoutState *st = userdata;

        if (st->late[0] && strstr(message, st->late))
                st->late_seen++;
}

static void test_call_timeout(void) {
        static const ServiceSpec spec = { .address = busd.address };
        TimeoutState st = {};
        const uint64_t timeout = 200 * 1000;
        uint64_t t0, t1, t = 0;
        bus_message *m = NULL;
        bus_client *c = NULL;
        char id[ID_SIZE];
        Child svc;

        tap_check(service_start(&svc, &spec, id));
        tap_check(bus_client_open(&c, busd.address) >= 0);
        tap_check(bus_client_set_log(c, timeout_log, &st) >= 0);
        drain(c);

        tap_check(bus_message_new_request(&m, id, "Never") >= 0);
        t0 = mono_usec();
        tap_check(bus_client_call_async(c, NULL, m, timeout_cb, &st, timeout) >= 0);
        t1 = mono_usec();
        tap_check(bus_client_get_timeout(c, &t) >= 0);
        if (!tap_check(t >= t0 + timeout && t <= t1 + timeout))
                tap_diag("deadline %+lld us from the call", (long long) (t - t0));
        /* The broker gives up at the same time and answers with its own
         * bus.Error.Timeout, which comes after ours and must be dropped:
         * libbus says so in its debug log ("dropping late or unknown answer
         * to SERIAL from bus"). */
        snprintf(st.late, sizeof(st.late), "answer to %llu from bus",
                 (unsigned long long) bus_message_get_serial(m));
        bus_message_unref(m);

        /* Nothing comes in: only the timeout wakes the loop. */
        tap_check_int(poll_loop(c, &st.calls, 1, WAIT_MS), 1);
        tap_check_int(st.calls, 1);
        tap_check_int(st.kind, BUS_KIND_ERROR);
        tap_check(strcmp(st.name, BUS_ERROR_TIMEOUT) == 0);
        tap_check_int(st.error, -ETIMEDOUT);
        tap_check(st.when >= t0 + timeout);
        tap_diag("timed out after %llu ms", (unsigned long long) (st.when - t0) / 1000);
        drain(c);
        tap_check(bus_client_get_timeout(c, &t) >= 0);
        tap_check(t == UINT64_MAX);

        tap_check_int(poll_loop(c, &st.late_seen, 1, WAIT_MS), 1);
        tap_check_int(st.calls, 1);
        tap_check_int(bus_client_is_connected(c), 1);

        service_stop(c, &svc, id);
        bus_client_unref(c);
}

/* ---- The broker goes away under pending calls. */

typedef struct LossCall {
        unsigned calls;
        int error;
        char name[64];
} LossCall;

static int loss_cb(bus_message *m, void *userdata) {
        LossCall *x = userdata;
        bus_error e = BUS_ERROR_NULL;

        x->calls++;
        x->error = bus_message_get_error(m, &e);
        snprintf(x->name, sizeof(x->name), "%s", e.name ?: "");
        bus_error_free(&e);
        return 0;
}

/* crash: busd dies from SIGKILL and cannot fail anything itself; else it
 * stops on SIGTERM, cleanly. */
static void connection_loss(bool crash) {
        TestBusd b2 = {};
        ServiceSpec spec = {};
        LossCall held = {}, floating = {};
        bus_slot *slot = NULL;
        bus_message *m = NULL;
        bus_client *c = NULL;
        bus_error e = BUS_ERROR_NULL;
        char id[ID_SIZE];
        unsigned never = 0;
        Child svc = { .pid = -1, .up = { { -1, -1 } }, .out = { { -1, -1 } } };
        int r;

        /* A broker of its own, so the other cases keep theirs. */
        r = test_busd_start(&b2, NULL);
        tap_check(setenv("BUSD_ADDRESS", busd.address, 1) == 0);
        if (!tap_check_int(r, 0)) {
                test_busd_stop(&b2);
                return;
        }
        spec = (ServiceSpec){ .address = b2.address, .expect_loss = true };
        tap_check(service_start(&svc, &spec, id));
        tap_check(bus_client_open(&c, b2.address) >= 0);

        tap_check(bus_message_new_request(&m, id, "Never") >= 0);
        tap_check(bus_client_call_async(c, &slot, m, loss_cb, &held, 30 * BUS_USEC_PER_SEC) >= 0);
        bus_message_unref(m);
        m = NULL;
        tap_check(bus_message_new_request(&m, id, "Never") >= 0);
        tap_check(bus_client_call_async(c, NULL, m, loss_cb, &floating, 30 * BUS_USEC_PER_SEC) >= 0);
        bus_message_unref(m);
        /* The service has both requests: it answers this one after them. */
        tap_check(bus_client_call_method(c, id, "Echo", "x", 1, WAIT_USEC, &e, NULL) >= 0);
        bus_error_free(&e);
        drain(c);
        tap_check_int(held.calls + floating.calls, 0);
        tap_check_int(bus_client_is_connected(c), 1);

        if (crash) {
                tap_check(kill(b2.pid, SIGKILL) == 0);
                tap_check_int(test_busd_wait_exit(&b2, WAIT_MS), 128 + SIGKILL);
                tap_check_int(test_busd_stop(&b2), 128 + SIGKILL);
        } else
                tap_check_int(test_busd_stop(&b2), 0);

        r = poll_loop(c, &never, 1, WAIT_MS);
        tap_check_int(r, -ECONNRESET);
        tap_check_int(held.calls, 1);
        tap_check_int(floating.calls, 1);
        tap_check(strcmp(held.name, BUS_ERROR_DISCONNECTED) == 0);
        tap_check(strcmp(floating.name, BUS_ERROR_DISCONNECTED) == 0);
        tap_check_int(held.error, -ECONNRESET);
        tap_check_int(floating.error, -ECONNRESET);
        tap_check_int(bus_client_is_connected(c), 0);

        /* Stays lost, and nothing is called again. */
        tap_check_int(bus_client_process(c), -ECONNRESET);
        tap_check_int(bus_client_get_fd(c), -ENOTCONN);
        tap_check_int(bus_client_publish(c, "after.loss", "x", 1, 0), -ECONNRESET);
        tap_check(bus_message_new_request(&m, id, "Echo") >= 0);
        tap_check_int(bus_client_call_async(c, NULL, m, loss_cb, &held, WAIT_USEC), -ECONNRESET);
        bus_message_unref(m);
        slot = bus_slot_unref(slot);
        tap_check_int(held.calls, 1);
        tap_check_int(floating.calls, 1);

        tap_check_int(child_finish(&svc), 0);
        bus_client_unref(c);
}

static void test_connection_loss(void) {
        connection_loss(false);
}

static void test_connection_loss_crash(void) {
        connection_loss(true);
}

static void test_broker_exits_cleanly(void) {
        test_busd_check_clean_exit(&busd);
}

int main(void) {
        tap_init();
        signal(SIGPIPE, SIG_IGN);
        test_busd_start_or_bail(&busd, NULL);
        TAP_RUN(test_poll_loop);
        TAP_RUN(test_sd_event);
        TAP_RUN(test_run_exit);
        TAP_RUN(test_call_timeout);
        TAP_RUN(test_connection_loss);
        TAP_RUN(test_connection_loss_crash);
        TAP_RUN(test_broker_exits_cleanly);
        return tap_done();
}
