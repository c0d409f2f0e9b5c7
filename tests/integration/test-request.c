/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Integration test: method calls between separate processes through a real
 * busd. A service child owns a well-known name and serves a handful of
 * methods; the test (or a caller child) calls them with libbus. Covered:
 * byte-exact round trips of payloads up to 1 MiB, every error the broker
 * generates (and where it comes from), 10,000 sync and 10,000 concurrent
 * async calls, FIFO order per sender, sender credentials, messages arriving
 * while a synchronous call waits, and errors raised by handlers.
 *
 * Every wait has a deadline and waits on a condition (a reply, a barrier, a
 * process exit), never on time alone.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libbus/bus.h>

#include "proto/bus.pb-c.h"
#include "tests/lib/tap.h"
#include "tests/lib/util-busd.h"

#define CHILD_TIMEOUT_MS 30000   /* for a child to finish its part */
#define SIGNAL_TIMEOUT_MS 10000  /* for a barrier */
#define CALL_TIMEOUT (10 * BUS_USEC_PER_SEC)

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

static TestBusd busd;

static uint64_t mono_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * BUS_USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

/* Deterministic pseudo-random bytes (xorshift64), so a failure reproduces. */
static void fill_random(uint8_t *buf, size_t size, uint64_t seed) {
        uint64_t x = seed | 1;

        for (size_t i = 0; i < size; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf[i] = (uint8_t) (x >> 24);
        }
}

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

/* ---- The service: a child process that owns a name and serves methods. */

typedef struct Service {
        char name[64];
        char address[128];
        pid_t pid;
        TestSignal ready; /* the child posts 'R' once it owns the name and serves ('F': failed) */
        TestSignal held;  /* the child posts 'H' for each request Hold keeps */
} Service;

typedef struct ServiceState {
        bus_client *c;
        Service *svc;
        bus_message *held[16];
        unsigned n_held;
        uint32_t n_seq;
        char seq_error[160];
} ServiceState;

typedef struct CredsPayload {
        int32_t pid;
        uint32_t uid;
        uint32_t gid;
} CredsPayload;

/* Echo: the payload and its type back, byte for byte. */
static int svc_echo(bus_message *m, void *userdata) {
        ServiceState *st = userdata;
        bus_message *reply = NULL;
        const void *data;
        size_t size;
        int r;

        r = bus_message_get_payload(m, &data, &size);
        if (r < 0)
                return r;
        r = bus_message_new_reply(m, &reply);
        if (r >= 0)
                r = bus_message_set_payload(reply, data, size);
        if (r >= 0)
                r = bus_message_set_payload_type(reply, bus_message_get_payload_type(m));
        if (r >= 0)
                r = bus_client_send(st->c, reply, NULL);
        bus_message_unref(reply);
        return r;
}

/* Hold: keeps the request and never answers it. */
static int svc_hold(bus_message *m, void *userdata) {
        ServiceState *st = userdata;

        if (st->n_held == N_ELEMENTS(st->held))
                return -ENOSPC;
        st->held[st->n_held++] = bus_message_ref(m);
        test_signal_post(&st->svc->held, 'H');
        return 0;
}

/* Fail: the handler fails with an errno; libbus answers for it. */
static int svc_fail(bus_message *m, void *userdata) {
        return -EDOM;
}

/* Divide: an application-defined error. */
static int svc_divide(bus_message *m, void *userdata) {
        ServiceState *st = userdata;

        return bus_client_reply_error(st->c, m, "org.example.Error.DivByZero", "division by zero");
}

/* Seq: no-reply requests numbered 0, 1, 2, ...; they must arrive in order. */
static int svc_seq(bus_message *m, void *userdata) {
        ServiceState *st = userdata;
        const void *data;
        size_t size;
        uint32_t seq;

        (void) bus_message_get_payload(m, &data, &size);
        if (size != sizeof(seq)) {
                if (!st->seq_error[0])
                        snprintf(st->seq_error, sizeof(st->seq_error), "payload of %zu bytes",
                                 size);
                return 0;
        }
        memcpy(&seq, data, sizeof(seq));
        if (seq != st->n_seq && !st->seq_error[0])
                snprintf(st->seq_error, sizeof(st->seq_error),
                         "request %u arrived as number %u", seq, st->n_seq);
        st->n_seq++;
        return 0;
}

/* SeqCheck: how many Seq requests came, all in order? Resets the count. */
static int svc_seq_check(bus_message *m, void *userdata) {
        ServiceState *st = userdata;
        const void *data;
        size_t size;
        uint32_t expected = 0;
        int r;

        (void) bus_message_get_payload(m, &data, &size);
        if (size == sizeof(expected))
                memcpy(&expected, data, sizeof(expected));
        if (!st->seq_error[0] && st->n_seq != expected)
                snprintf(st->seq_error, sizeof(st->seq_error), "%u requests arrived, %u were sent",
                         st->n_seq, expected);
        if (st->seq_error[0])
                r = bus_client_reply_error(st->c, m, "org.example.Error.Order", "%s",
                                           st->seq_error);
        else
                r = bus_client_reply(st->c, m, NULL, 0);
        st->n_seq = 0;
        st->seq_error[0] = '\0';
        return r;
}

/* Creds: the broker's stamp on the request must match what the caller says
 * about itself; the reply carries the service's pid. */
static int svc_creds(bus_message *m, void *userdata) {
        ServiceState *st = userdata;
        CredsPayload want;
        const void *data;
        size_t size;
        uid_t uid;
        gid_t gid;
        pid_t pid;
        int32_t self = (int32_t) getpid();
        int r;

        (void) bus_message_get_payload(m, &data, &size);
        if (size != sizeof(want))
                return bus_client_reply_error(st->c, m, "org.example.Error.Creds",
                                              "payload of %zu bytes", size);
        memcpy(&want, data, sizeof(want));
        r = bus_message_get_sender_creds(m, &uid, &gid, &pid);
        if (r < 0)
                return bus_client_reply_error(st->c, m, "org.example.Error.Creds",
                                              "no credentials: %s", strerror(-r));
        if (pid != (pid_t) want.pid || uid != (uid_t) want.uid || gid != (gid_t) want.gid)
                return bus_client_reply_error(
                        st->c, m, "org.example.Error.Creds",
                        "stamped pid %d uid %u gid %u, but the caller is pid %d uid %u gid %u",
                        (int) pid, (unsigned) uid, (unsigned) gid, (int) want.pid, want.uid,
                        want.gid);
        return bus_client_reply(st->c, m, &self, sizeof(self));
}

/* PublishThenReply: a publish, then the reply, so the publish reaches the
 * caller while it waits for the reply. */
static int svc_publish_then_reply(bus_message *m, void *userdata) {
        ServiceState *st = userdata;
        int r;

        r = bus_client_publish(st->c, "test.interleave.event", "event", 5, 0);
        if (r < 0)
                return r;
        return bus_client_reply(st->c, m, "reply", 5);
}

/* Quit: gives the name back (so the next test can take it at once), answers
 * and leaves bus_client_run(). */
static int svc_quit(bus_message *m, void *userdata) {
        ServiceState *st = userdata;
        int r;

        r = bus_client_release_name(st->c, st->svc->name);
        if (r != BUS_NAME_RELEASED)
                return r < 0 ? r : -EADDRNOTAVAIL;
        r = bus_client_reply(st->c, m, NULL, 0);
        (void) bus_client_exit(st->c, 0);
        return r;
}

static int service_main(void *arg) {
        static const struct {
                const char *method;
                bus_message_handler_t fn;
        } methods[] = {
                { "Echo", svc_echo },
                { "Hold", svc_hold },
                { "Fail", svc_fail },
                { "Divide", svc_divide },
                { "Seq", svc_seq },
                { "SeqCheck", svc_seq_check },
                { "Creds", svc_creds },
                { "PublishThenReply", svc_publish_then_reply },
                { "Quit", svc_quit },
        };
        Service *svc = arg;
        ServiceState st = { .svc = svc };
        int r;

        r = bus_client_open(&st.c, svc->address);
        if (r >= 0) {
                r = bus_client_request_name(st.c, svc->name, 0);
                if (r >= 0 && r != BUS_NAME_PRIMARY_OWNER)
                        r = -EADDRINUSE;
        }
        for (size_t i = 0; r >= 0 && i < N_ELEMENTS(methods); i++)
                r = bus_client_add_method(st.c, NULL, NULL, methods[i].method, methods[i].fn, &st);
        if (r < 0) {
                printf("# service %s: cannot start: %s\n", svc->name, strerror(-r));
                test_signal_post(&svc->ready, 'F');
                bus_client_unref(st.c);
                return r;
        }
        test_signal_post(&svc->ready, 'R');
        r = bus_client_run(st.c);
        if (r >= 0)
                (void) bus_client_flush(st.c);
        else
                printf("# service %s: bus_client_run: %s\n", svc->name, strerror(-r));
        for (unsigned i = 0; i < st.n_held; i++)
                bus_message_unref(st.held[i]);
        bus_client_unref(st.c);
        return r < 0 ? r : 0;
}

/* Starts a service child owning name on the bus at address, and waits until
 * it serves. */
static bool service_start(Service *svc, const char *address, const char *name) {
        char c = 0;
        int r;

        *svc = (Service){ .pid = -1, .ready = { { -1, -1 } }, .held = { { -1, -1 } } };
        snprintf(svc->name, sizeof(svc->name), "%s", name);
        snprintf(svc->address, sizeof(svc->address), "%s", address);
        if (test_signal_init(&svc->ready) < 0 || test_signal_init(&svc->held) < 0)
                return false;
        svc->pid = test_child_start(service_main, svc);
        /* Only the child posts: its death then shows as -EPIPE. */
        test_signal_close_write(&svc->ready);
        test_signal_close_write(&svc->held);
        if (svc->pid < 0)
                return false;
        r = test_signal_wait(&svc->ready, SIGNAL_TIMEOUT_MS, &c);
        if (r < 0 || c != 'R') {
                tap_diag("service %s did not start: %s", name, r < 0 ? strerror(-r) : "failed");
                return false;
        }
        return true;
}

/* Asks the service to quit (through c, if given) and reaps it. A service that
 * cannot be asked is killed. Returns whether it exited cleanly. */
static bool service_stop(Service *svc, bus_client *c) {
        bool ok = true;

        if (svc->pid > 0) {
                bus_error e = BUS_ERROR_NULL;
                int r = -ENOTCONN, status;

                if (c)
                        r = bus_client_call_method(c, svc->name, "Quit", NULL, 0, CALL_TIMEOUT, &e,
                                                   NULL);
                if (r < 0) {
                        tap_diag("cannot ask %s to quit: %s: %s", svc->name, e.name ?: strerror(-r),
                                 e.message ?: "");
                        (void) kill(svc->pid, SIGKILL);
                        ok = false;
                }
                bus_error_free(&e);
                status = test_child_wait(svc->pid, CHILD_TIMEOUT_MS);
                if (ok && status != 0) {
                        tap_diag("service %s exited with status %d", svc->name, status);
                        ok = false;
                }
                svc->pid = -1;
        }
        test_signal_close(&svc->ready);
        test_signal_close(&svc->held);
        return ok;
}

/* ---- Calls. */

typedef struct Answer {
        bus_message *m;
        bool done;
} Answer;

static int answer_cb(bus_message *m, void *userdata) {
        Answer *a = userdata;

        a->m = bus_message_ref(m);
        a->done = true;
        return 0;
}

/* Processes c until *done or the deadline (absolute, CLOCK_MONOTONIC). */
static bool process_until(bus_client *c, const bool *done, uint64_t deadline) {
        while (!*done) {
                uint64_t now = mono_usec();
                int r = bus_client_process(c);

                if (r < 0)
                        return false;
                if (r > 0)
                        continue;
                if (now >= deadline)
                        return false;
                r = bus_client_wait(c, deadline - now);
                if (r < 0)
                        return false;
        }
        return true;
}

/* Calls asynchronously and returns the answer (REPLY or ERROR) as a message,
 * so its sender can be looked at; NULL when none came in time. */
static bus_message *call_for_message(bus_client *c, bus_message *request, uint64_t timeout) {
        Answer a = {};
        bus_slot *slot = NULL;

        if (bus_client_call_async(c, &slot, request, answer_cb, &a, timeout) < 0)
                return NULL;
        (void) process_until(c, &a.done, mono_usec() + timeout + 5 * BUS_USEC_PER_SEC);
        bus_slot_unref(slot);
        return a.m;
}

/* Checks that m is an ERROR called name, with a message, whose errno is
 * expected_errno, sent by sender (NULL: sent by anyone but the broker). */
static void check_error_message(bus_message *m, const char *name, int expected_errno,
                                const char *sender) {
        bus_error e = BUS_ERROR_NULL;
        const char *s;

        if (!tap_check(m))
                return;
        tap_check_int(bus_message_get_kind(m), BUS_KIND_ERROR);
        tap_check_int(bus_message_get_error(m, &e), expected_errno);
        if (!tap_check(bus_error_has_name(&e, name)))
                tap_diag("got %s: %s, expected %s", e.name ?: "(none)", e.message ?: "", name);
        tap_check(e.message && e.message[0]);
        s = bus_message_get_sender(m);
        if (sender) {
                if (!tap_check(s && strcmp(s, sender) == 0))
                        tap_diag("error sent by %s, expected %s", s ?: "(nobody)", sender);
        } else
                tap_check(s && s[0] == ':');
        bus_error_free(&e);
}

/* A synchronous call that must fail with name and expected_errno. */
static void check_sync_error(bus_client *c, const char *destination, const char *method,
                             const void *data, size_t size, uint64_t timeout, const char *name,
                             int expected_errno) {
        bus_error e = BUS_ERROR_NULL;
        bus_message *reply = NULL;
        int r;

        r = bus_client_call_method(c, destination, method, data, size, timeout, &e, &reply);
        tap_check_int(r, expected_errno);
        if (!tap_check(bus_error_has_name(&e, name)))
                tap_diag("%s.%s: got %s: %s, expected %s", destination, method,
                         e.name ?: "(none)", e.message ?: "", name);
        tap_check(e.message && e.message[0]);
        tap_check(!reply);
        bus_message_unref(reply);
        bus_error_free(&e);
}

static bus_message *new_request(const char *destination, const char *method, const void *data,
                                size_t size) {
        bus_message *m = NULL;

        assert(bus_message_new_request(&m, destination, method) >= 0);
        assert(bus_message_set_payload(m, data, size) >= 0);
        return m;
}

/* ---- Round trips. */

static void test_round_trip_byte_exact(void) {
        static const size_t sizes[] = { 0, 1, 100, 4096, 65536, 1024 * 1024 };
        Service svc;
        bus_client *c = NULL;

        tap_check(service_start(&svc, busd.address, "org.example.Echo"));
        tap_check(bus_client_open(&c, busd.address) >= 0);
        for (size_t i = 0; c && i < N_ELEMENTS(sizes); i++) {
                size_t size = sizes[i];
                uint8_t *buf = malloc(size ?: 1);
                bus_message *m = NULL, *reply = NULL;
                bus_error e = BUS_ERROR_NULL;
                const void *data = NULL;
                size_t got = SIZE_MAX;
                char type[64];
                int r;

                assert(buf);
                fill_random(buf, size, 0x9e3779b97f4a7c15ULL + size);
                snprintf(type, sizeof(type), "example.Blob%zu", size);
                m = new_request("org.example.Echo", "Echo", buf, size);
                tap_check(bus_message_set_payload_type(m, type) >= 0);
                r = bus_client_call(c, m, CALL_TIMEOUT, &e, &reply);
                if (!tap_check_int(r, 0))
                        tap_diag("echo of %zu bytes: %s: %s", size, e.name ?: "", e.message ?: "");
                if (reply) {
                        tap_check_int(bus_message_get_kind(reply), BUS_KIND_REPLY);
                        tap_check(bus_message_get_payload(reply, &data, &got) >= 0);
                        tap_check(data != NULL);
                        if (tap_check_int(got, size) && size > 0 &&
                            !tap_check(memcmp(data, buf, size) == 0))
                                tap_diag("payload of %zu bytes came back different", size);
                        /* The service saw the type the caller set: it sent it back. */
                        tap_check(bus_message_get_payload_type(reply) &&
                                  strcmp(bus_message_get_payload_type(reply), type) == 0);
                        tap_check(bus_message_get_reply_serial(reply) == bus_message_get_serial(m));
                }
                bus_message_unref(reply);
                bus_message_unref(m);
                bus_error_free(&e);
                free(buf);
        }
        tap_check(service_stop(&svc, c));
        bus_client_unref(c);
}

/* ---- Errors the broker generates. */

static void test_error_no_owner(void) {
        bus_client *c = NULL;
        bus_message *m, *answer;

        tap_check(bus_client_open(&c, busd.address) >= 0);
        if (!c)
                return;
        check_sync_error(c, "org.example.Nobody", "Echo", "x", 1, CALL_TIMEOUT, BUS_ERROR_NO_OWNER,
                         -ENXIO);
        check_sync_error(c, ":1.99999", "Echo", "x", 1, CALL_TIMEOUT, BUS_ERROR_NO_OWNER, -ENXIO);

        m = new_request("org.example.Nobody", "Echo", NULL, 0);
        answer = call_for_message(c, m, CALL_TIMEOUT);
        check_error_message(answer, BUS_ERROR_NO_OWNER, -ENXIO, "bus");
        bus_message_unref(answer);
        bus_message_unref(m);

        m = new_request(":1.99999", "Echo", NULL, 0);
        answer = call_for_message(c, m, CALL_TIMEOUT);
        check_error_message(answer, BUS_ERROR_NO_OWNER, -ENXIO, "bus");
        bus_message_unref(answer);
        bus_message_unref(m);
        bus_client_unref(c);
}

static void test_error_timeout(void) {
        Service svc;
        bus_client *c = NULL;
        bus_message *m, *answer;
        uint64_t t0, elapsed;

        tap_check(service_start(&svc, busd.address, "org.example.Slow"));
        tap_check(bus_client_open(&c, busd.address) >= 0);
        if (!c)
                goto finish;

        /* A synchronous call with a 300 ms limit: whichever side notices
         * first, the caller gets Timeout after about 300 ms. */
        t0 = mono_usec();
        check_sync_error(c, "org.example.Slow", "Hold", NULL, 0, 300 * 1000, BUS_ERROR_TIMEOUT,
                         -ETIMEDOUT);
        elapsed = mono_usec() - t0;
        tap_diag("sync call timed out after %llu ms", (unsigned long long) (elapsed / 1000));
        tap_check(elapsed >= 290 * 1000);
        tap_check(elapsed < 5 * BUS_USEC_PER_SEC);

        /* The request says 300 ms, the client waits 10 s: the broker's
         * timer must answer. */
        m = new_request("org.example.Slow", "Hold", NULL, 0);
        tap_check(bus_message_set_timeout(m, 300 * 1000) >= 0);
        t0 = mono_usec();
        answer = call_for_message(c, m, CALL_TIMEOUT);
        elapsed = mono_usec() - t0;
        tap_diag("broker timed the call out after %llu ms", (unsigned long long) (elapsed / 1000));
        check_error_message(answer, BUS_ERROR_TIMEOUT, -ETIMEDOUT, "bus");
        tap_check(elapsed >= 290 * 1000);
        tap_check(elapsed < 5 * BUS_USEC_PER_SEC);
        bus_message_unref(answer);
        bus_message_unref(m);

        /* The service still holds both requests; a reply it sent now would
         * be dropped. The connection goes on working. */
        check_sync_error(c, "org.example.Slow", "Divide", NULL, 0, CALL_TIMEOUT,
                         "org.example.Error.DivByZero", -EREMOTEIO);
finish:
        tap_check(service_stop(&svc, c));
        bus_client_unref(c);
}

/* A caller child: one synchronous call that must end in Disconnected. */
static int disconnected_caller_main(void *arg) {
        const char *address = arg;
        bus_client *c = NULL;
        bus_error e = BUS_ERROR_NULL;
        int failures = 0, r;

        r = bus_client_open(&c, address);
        child_check(failures, r >= 0);
        if (r < 0)
                return 1;
        r = bus_client_call_method(c, "org.example.Doomed", "Hold", NULL, 0, 20 * BUS_USEC_PER_SEC,
                                   &e, NULL);
        child_check(failures, r == -ECONNRESET);
        child_check(failures, bus_error_has_name(&e, BUS_ERROR_DISCONNECTED));
        child_check(failures, e.message && e.message[0]);
        if (failures)
                printf("# child: call returned %d (%s: %s)\n", r, e.name ?: "", e.message ?: "");
        bus_error_free(&e);
        bus_client_unref(c);
        return failures ? 1 : 0;
}

static void test_error_disconnected(void) {
        Service svc;
        bus_client *c = NULL;
        bus_message *m = NULL;
        bus_slot *slot = NULL;
        Answer a = {};
        pid_t caller = -1;
        uint64_t t_kill = 0;

        if (!tap_check(service_start(&svc, busd.address, "org.example.Doomed")))
                goto finish;
        caller = test_child_start(disconnected_caller_main, busd.address);
        tap_check(caller > 0);
        tap_check(bus_client_open(&c, busd.address) >= 0);
        if (!c)
                goto finish;

        m = new_request("org.example.Doomed", "Hold", NULL, 0);
        tap_check(bus_client_call_async(c, &slot, m, answer_cb, &a, 20 * BUS_USEC_PER_SEC) >= 0);
        /* Both requests are in the service's hands: then it dies. */
        for (int i = 0; i < 2; i++)
                tap_check_int(test_signal_wait(&svc.held, SIGNAL_TIMEOUT_MS, NULL), 0);
        t_kill = mono_usec();
        tap_check(kill(svc.pid, SIGKILL) == 0);
        tap_check_int(test_child_wait(svc.pid, CHILD_TIMEOUT_MS), 128 + SIGKILL);
        svc.pid = -1;

        tap_check(process_until(c, &a.done, mono_usec() + 10 * BUS_USEC_PER_SEC));
        tap_diag("Disconnected after %llu ms",
                 (unsigned long long) ((mono_usec() - t_kill) / 1000));
        tap_check(mono_usec() - t_kill < 5 * BUS_USEC_PER_SEC);
        check_error_message(a.m, BUS_ERROR_DISCONNECTED, -ECONNRESET, "bus");
finish:
        if (caller > 0)
                tap_check_int(test_child_wait(caller, CHILD_TIMEOUT_MS), 0);
        bus_slot_unref(slot);
        bus_message_unref(a.m);
        bus_message_unref(m);
        (void) service_stop(&svc, NULL);
        bus_client_unref(c);
}

static void test_error_unknown_method(void) {
        Service svc;
        bus_client *c = NULL;
        bus_message *m, *answer;
        bus_error e = BUS_ERROR_NULL;
        Bus__GetNameOwnerRequest req = BUS__GET_NAME_OWNER_REQUEST__INIT;
        Bus__GetNameOwnerReply *owner = NULL;

        tap_check(service_start(&svc, busd.address, "org.example.Partial"));
        tap_check(bus_client_open(&c, busd.address) >= 0);
        if (!c)
                goto finish;

        /* Answered by libbus in the service. */
        check_sync_error(c, "org.example.Partial", "NoSuchMethod", NULL, 0, CALL_TIMEOUT,
                         BUS_ERROR_UNKNOWN_METHOD, -EBADRQC);
        req.name = (char *) "org.example.Partial";
        tap_check(bus_client_call_protobuf(c, "bus", "GetNameOwner", &req.base,
                                           &bus__get_name_owner_reply__descriptor, CALL_TIMEOUT,
                                           &e, (ProtobufCMessage **) &owner) >= 0);
        m = new_request("org.example.Partial", "NoSuchMethod", NULL, 0);
        answer = call_for_message(c, m, CALL_TIMEOUT);
        check_error_message(answer, BUS_ERROR_UNKNOWN_METHOD, -EBADRQC,
                            owner ? owner->owner : NULL);
        bus_message_unref(answer);
        bus_message_unref(m);

        /* Answered by the broker. */
        check_sync_error(c, "bus", "NoSuchMethod", NULL, 0, CALL_TIMEOUT, BUS_ERROR_UNKNOWN_METHOD,
                         -EBADRQC);
        m = new_request("bus", "NoSuchMethod", NULL, 0);
        answer = call_for_message(c, m, CALL_TIMEOUT);
        check_error_message(answer, BUS_ERROR_UNKNOWN_METHOD, -EBADRQC, "bus");
        bus_message_unref(answer);
        bus_message_unref(m);
finish:
        if (owner)
                bus__get_name_owner_reply__free_unpacked(owner, NULL);
        bus_error_free(&e);
        tap_check(service_stop(&svc, c));
        bus_client_unref(c);
}

static void test_error_invalid_args(void) {
        /* An over-long varint: no protobuf message decodes from this. */
        static const uint8_t garbage[] = { 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                           0xff, 0xff, 0xff, 0xff, 0xff, 0x01 };
        bus_client *c = NULL;
        bus_message *m, *answer;

        tap_check(bus_client_open(&c, busd.address) >= 0);
        if (!c)
                return;
        check_sync_error(c, "bus", "RequestName", garbage, sizeof(garbage), CALL_TIMEOUT,
                         BUS_ERROR_INVALID_ARGS, -EINVAL);
        m = new_request("bus", "RequestName", garbage, sizeof(garbage));
        answer = call_for_message(c, m, CALL_TIMEOUT);
        check_error_message(answer, BUS_ERROR_INVALID_ARGS, -EINVAL, "bus");
        bus_message_unref(answer);
        bus_message_unref(m);

        /* The broker did not take garbage for a name: nothing was registered. */
        {
                Bus__ListNamesRequest req = BUS__LIST_NAMES_REQUEST__INIT;
                Bus__ListNamesReply *names = NULL;

                tap_check(bus_client_call_protobuf(c, "bus", "ListNames", &req.base,
                                                   &bus__list_names_reply__descriptor,
                                                   CALL_TIMEOUT, NULL,
                                                   (ProtobufCMessage **) &names) >= 0);
                if (names) {
                        tap_check_int(names->n_names, 0);
                        bus__list_names_reply__free_unpacked(names, NULL);
                }
        }
        bus_client_unref(c);
}

/* The callee of the LimitsExceeded case: owns a name, then never reads. */
typedef struct StuckArgs {
        const char *address;
        TestSignal ready;   /* child -> parent */
        TestSignal release; /* parent -> child */
} StuckArgs;

static int stuck_main(void *arg) {
        StuckArgs *a = arg;
        bus_client *c = NULL;
        int r;

        r = bus_client_open(&c, a->address);
        if (r >= 0)
                r = bus_client_request_name(c, "org.example.Stuck", 0);
        if (r != BUS_NAME_PRIMARY_OWNER) {
                printf("# stuck service cannot start: %d\n", r);
                bus_client_unref(c);
                return 1;
        }
        test_signal_post(&a->ready, 'R');
        r = test_signal_wait(&a->release, CHILD_TIMEOUT_MS, NULL);
        bus_client_unref(c);
        return r < 0 ? 2 : 0;
}

static void test_error_limits_exceeded(void) {
        static const char *const args[] = { "--max-queue-bytes", "64K", NULL };
        const size_t chunk = 64 * 1024;
        TestBusd b2 = {};
        StuckArgs sa = { .ready = { { -1, -1 } }, .release = { { -1, -1 } } };
        pid_t stuck = -1;
        bus_client *c = NULL;
        uint8_t *blob = calloc(1, chunk);
        bool limited = false;
        int r;

        assert(blob);
        r = test_busd_start(&b2, args);
        if (!tap_check_int(r, 0)) {
                test_busd_dump_log(&b2);
                goto finish;
        }
        sa.address = b2.address;
        tap_check(test_signal_init(&sa.ready) >= 0);
        tap_check(test_signal_init(&sa.release) >= 0);
        stuck = test_child_start(stuck_main, &sa);
        tap_check(stuck > 0);
        test_signal_close_write(&sa.ready);
        if (!tap_check_int(test_signal_wait(&sa.ready, SIGNAL_TIMEOUT_MS, NULL), 0))
                goto finish;
        tap_check(bus_client_open(&c, b2.address) >= 0);
        if (!c)
                goto finish;

        /* Fill the callee's queue with no-reply requests (the broker's queue
         * holds 64 KiB, the kernel's socket buffers some hundred more), then
         * a normal request must be refused at once. The first round sends 4
         * MiB, which overflows any ordinary socket buffer; later rounds only
         * run if the kernel's buffers are unusually large. */
        for (unsigned round = 0; round < 6 && !limited; round++) {
                unsigned n = round == 0 ? 64 : 16;
                bus_message *m;
                bus_error e = BUS_ERROR_NULL;
                uint64_t t0, elapsed;

                for (unsigned i = 0; i < n; i++) {
                        m = new_request("org.example.Stuck", "Sink", blob, chunk);
                        tap_check(bus_message_set_no_reply(m, true) >= 0);
                        r = bus_client_send(c, m, NULL);
                        bus_message_unref(m);
                        if (!tap_check_int(r, 0))
                                break;
                }
                tap_check_int(bus_client_flush(c), 0);

                m = new_request("org.example.Stuck", "Sink", "x", 1);
                tap_check(bus_message_set_timeout(m, 2 * BUS_USEC_PER_SEC) >= 0);
                t0 = mono_usec();
                r = bus_client_call(c, m, 0, &e, NULL);
                elapsed = mono_usec() - t0;
                bus_message_unref(m);
                if (bus_error_has_name(&e, BUS_ERROR_LIMITS_EXCEEDED)) {
                        limited = true;
                        tap_diag("refused after round %u, in %llu ms: %s", round,
                                 (unsigned long long) (elapsed / 1000), e.message ?: "");
                        tap_check_int(r, -ENOBUFS);
                        tap_check(e.message && e.message[0]);
                        tap_check(elapsed < 1000 * 1000);
                } else {
                        tap_diag("round %u: %d %s: %s", round, r, e.name ?: "(reply)",
                                 e.message ?: "");
                        tap_check(bus_error_has_name(&e, BUS_ERROR_TIMEOUT));
                }
                bus_error_free(&e);
        }
        tap_check(limited);

        /* The error came from the broker. */
        if (limited) {
                bus_message *m = new_request("org.example.Stuck", "Sink", "y", 1);
                bus_message *answer = call_for_message(c, m, 5 * BUS_USEC_PER_SEC);

                check_error_message(answer, BUS_ERROR_LIMITS_EXCEEDED, -ENOBUFS, "bus");
                bus_message_unref(answer);
                bus_message_unref(m);
        }
        tap_check(test_busd_alive(&b2));

finish:
        if (stuck > 0) {
                test_signal_post(&sa.release, 'Q');
                tap_check_int(test_child_wait(stuck, CHILD_TIMEOUT_MS), 0);
        }
        bus_client_unref(c);
        test_signal_close(&sa.ready);
        test_signal_close(&sa.release);
        if (!tap_check_int(test_busd_stop(&b2), 0))
                test_busd_dump_log(&b2);
        free(blob);
}

/* ---- Many calls. */

#define N_CALLS 10000u

static void test_ten_thousand_sync(void) {
        Service svc;
        bus_client *c = NULL;
        unsigned ok = 0;

        tap_check(service_start(&svc, busd.address, "org.example.Counter"));
        tap_check(bus_client_open(&c, busd.address) >= 0);
        for (uint64_t i = 0; c && i < N_CALLS; i++) {
                bus_message *m = new_request("org.example.Counter", "Echo", &i, sizeof(i));
                bus_message *reply = NULL;
                bus_error e = BUS_ERROR_NULL;
                const void *data;
                size_t size;
                int r;

                r = bus_client_call(c, m, CALL_TIMEOUT, &e, &reply);
                if (r < 0)
                        tap_diag("call %llu: %s: %s", (unsigned long long) i, e.name ?: "",
                                 e.message ?: "");
                else if (bus_message_get_payload(reply, &data, &size) >= 0 &&
                           size == sizeof(i) && memcmp(data, &i, sizeof(i)) == 0 &&
                           bus_message_get_reply_serial(reply) == bus_message_get_serial(m))
                        ok++;
                else
                        tap_diag("call %llu: wrong reply", (unsigned long long) i);
                bus_message_unref(reply);
                bus_message_unref(m);
                bus_error_free(&e);
                if (r < 0)
                        break;
        }
        tap_check_int(ok, N_CALLS);
        tap_check(service_stop(&svc, c));
        bus_client_unref(c);
}

typedef struct AsyncTally {
        uint8_t seen[N_CALLS];
        unsigned done;
        unsigned wrong;
        unsigned duplicated;
} AsyncTally;

static AsyncTally tally;

static int async_reply_cb(bus_message *m, void *userdata) {
        uint64_t i = (uint64_t) (uintptr_t) userdata, got;
        const void *data;
        size_t size;

        tally.done++;
        if (i >= N_CALLS) {
                tally.wrong++;
                return 0;
        }
        if (tally.seen[i]++)
                tally.duplicated++;
        if (bus_message_get_kind(m) != BUS_KIND_REPLY ||
            bus_message_get_payload(m, &data, &size) < 0 || size != sizeof(got)) {
                tally.wrong++;
                return 0;
        }
        memcpy(&got, data, sizeof(got));
        if (got != i)
                tally.wrong++;
        return 0;
}

static void test_ten_thousand_async(void) {
        Service svc;
        bus_client *c = NULL;
        uint64_t deadline;
        unsigned sent = 0, missing = 0;
        bool all = false;

        memset(&tally, 0, sizeof(tally));
        tap_check(service_start(&svc, busd.address, "org.example.Counter2"));
        tap_check(bus_client_open(&c, busd.address) >= 0);
        if (!c)
                goto finish;
        for (uint64_t i = 0; i < N_CALLS; i++) {
                bus_message *m = new_request("org.example.Counter2", "Echo", &i, sizeof(i));
                int r = bus_client_call_async(c, NULL, m, async_reply_cb, (void *) (uintptr_t) i,
                                              30 * BUS_USEC_PER_SEC);

                bus_message_unref(m);
                if (!tap_check_int(r, 0))
                        break;
                sent++;
        }
        tap_check_int(sent, N_CALLS);
        /* Nothing is answered before we process. */
        tap_check_int(tally.done, 0);

        deadline = mono_usec() + 25 * BUS_USEC_PER_SEC;
        while (tally.done < sent) {
                uint64_t now = mono_usec();
                int r = bus_client_process(c);

                if (r < 0 || (r == 0 && now >= deadline))
                        break;
                if (r == 0)
                        (void) bus_client_wait(c, deadline - now);
        }
        all = tally.done == sent;
        tap_check(all);
        for (unsigned i = 0; i < sent; i++)
                if (tally.seen[i] != 1)
                        missing++;
        tap_check_int(tally.done, N_CALLS);
        tap_check_int(tally.wrong, 0);
        tap_check_int(tally.duplicated, 0);
        tap_check_int(missing, 0);
        /* No stray callback afterwards. */
        while (bus_client_process(c) > 0)
                ;
        tap_check_int(tally.done, N_CALLS);
finish:
        tap_check(service_stop(&svc, c));
        bus_client_unref(c);
}

static void test_fifo_per_sender(void) {
        const uint32_t n = 1000;
        Service svc;
        bus_client *c = NULL;
        bus_error e = BUS_ERROR_NULL;
        int r;

        tap_check(service_start(&svc, busd.address, "org.example.Fifo"));
        tap_check(bus_client_open(&c, busd.address) >= 0);
        if (!c)
                goto finish;
        for (uint32_t i = 0; i < n; i++) {
                bus_message *m = new_request("org.example.Fifo", "Seq", &i, sizeof(i));

                tap_check(bus_message_set_no_reply(m, true) >= 0);
                r = bus_client_send(c, m, NULL);
                bus_message_unref(m);
                if (!tap_check_int(r, 0))
                        break;
        }
        r = bus_client_call_method(c, "org.example.Fifo", "SeqCheck", &n, sizeof(n), CALL_TIMEOUT,
                                   &e, NULL);
        if (!tap_check_int(r, 0))
                tap_diag("%s: %s", e.name ?: "", e.message ?: "");
        bus_error_free(&e);
finish:
        tap_check(service_stop(&svc, c));
        bus_client_unref(c);
}

/* ---- Credentials. */

typedef struct CredsArgs {
        const char *address;
        const char *service;
        pid_t service_pid;
} CredsArgs;

static int creds_caller_main(void *arg) {
        const CredsArgs *a = arg;
        CredsPayload me = { (int32_t) getpid(), (uint32_t) getuid(), (uint32_t) getgid() };
        Bus__GetPeerCredentialsRequest req = BUS__GET_PEER_CREDENTIALS_REQUEST__INIT;
        Bus__GetPeerCredentialsReply *creds = NULL;
        bus_client *c = NULL;
        bus_message *reply = NULL;
        bus_error e = BUS_ERROR_NULL;
        int failures = 0, r;

        r = bus_client_open(&c, a->address);
        child_check(failures, r >= 0);
        if (r < 0)
                return 1;

        /* The service checks the request's stamp against what we say. */
        r = bus_client_call_method(c, a->service, "Creds", &me, sizeof(me), CALL_TIMEOUT, &e,
                                   &reply);
        child_check(failures, r == 0);
        if (r < 0)
                printf("# child: %s: %s\n", e.name ?: "", e.message ?: "");
        if (reply) {
                const void *data;
                size_t size;
                int32_t service_pid = 0;
                uid_t uid;
                gid_t gid;
                pid_t pid;

                /* And we check the reply's stamp against the service. */
                child_check(failures, bus_message_get_sender_creds(reply, &uid, &gid, &pid) == 0);
                child_check(failures, pid == a->service_pid);
                child_check(failures, uid == getuid());
                child_check(failures, gid == getgid());
                child_check(failures, bus_message_get_payload(reply, &data, &size) >= 0 &&
                                              size == sizeof(service_pid));
                if (size == sizeof(service_pid))
                        memcpy(&service_pid, data, sizeof(service_pid));
                child_check(failures, service_pid == a->service_pid);
        }
        bus_error_free(&e);

        req.name = (char *) a->service;
        r = bus_client_call_protobuf(c, "bus", "GetPeerCredentials", &req.base,
                                     &bus__get_peer_credentials_reply__descriptor, CALL_TIMEOUT,
                                     &e, (ProtobufCMessage **) &creds);
        child_check(failures, r == 0);
        if (creds) {
                child_check(failures, creds->pid == (uint32_t) a->service_pid);
                child_check(failures, creds->uid == (uint32_t) getuid());
                child_check(failures, creds->gid == (uint32_t) getgid());
                child_check(failures, creds->unique_id && creds->unique_id[0] == ':');
                child_check(failures, bus_message_get_sender(reply) &&
                                              strcmp(bus_message_get_sender(reply),
                                                     creds->unique_id) == 0);
                bus__get_peer_credentials_reply__free_unpacked(creds, NULL);
        }
        bus_error_free(&e);
        bus_message_unref(reply);
        bus_client_unref(c);
        return failures ? 1 : 0;
}

static void test_credentials(void) {
        Service svc;
        CredsArgs a = { busd.address, "org.example.Creds", -1 };
        pid_t caller;
        bus_client *c = NULL;

        if (!tap_check(service_start(&svc, busd.address, "org.example.Creds")))
                goto finish;
        a.service_pid = svc.pid;
        caller = test_child_start(creds_caller_main, &a);
        tap_check(caller > 0);
        if (caller > 0)
                tap_check_int(test_child_wait(caller, CHILD_TIMEOUT_MS), 0);
finish:
        tap_check(bus_client_open(&c, busd.address) >= 0);
        tap_check(service_stop(&svc, c));
        bus_client_unref(c);
}

/* ---- A synchronous call does not run callbacks, nor lose what comes meanwhile. */

typedef struct Interleave {
        unsigned publishes;
        bool payload_ok;
        bool in_call;
        bool ran_in_call;
} Interleave;

static int interleave_publish_cb(bus_message *m, void *userdata) {
        Interleave *il = userdata;
        const void *data;
        size_t size;

        if (il->in_call)
                il->ran_in_call = true;
        il->publishes++;
        il->payload_ok = bus_message_get_payload(m, &data, &size) >= 0 && size == 5 &&
                         memcmp(data, "event", 5) == 0;
        return 0;
}

static void test_sync_call_defers_dispatch(void) {
        Service svc;
        bus_client *c = NULL;
        bus_message *echo = NULL, *reply = NULL;
        bus_slot *sub = NULL;
        bus_error e = BUS_ERROR_NULL;
        Interleave il = {};
        Answer async = {};
        const void *data;
        size_t size;
        int r;

        tap_check(service_start(&svc, busd.address, "org.example.Interleave"));
        tap_check(bus_client_open(&c, busd.address) >= 0);
        if (!c)
                goto finish;
        tap_check(bus_client_subscribe(c, &sub, "test.interleave.>", NULL, 0,
                                       interleave_publish_cb, &il) >= 0);

        /* An async call whose reply, and a publish, arrive while the
         * synchronous call waits: both are queued, in order, for process(). */
        echo = new_request("org.example.Interleave", "Echo", "async", 5);
        tap_check(bus_client_call_async(c, NULL, echo, answer_cb, &async, CALL_TIMEOUT) >= 0);
        il.in_call = true;
        r = bus_client_call_method(c, "org.example.Interleave", "PublishThenReply", NULL, 0,
                                   CALL_TIMEOUT, &e, &reply);
        il.in_call = false;
        tap_check_int(r, 0);
        tap_check(reply && bus_message_get_payload(reply, &data, &size) >= 0 && size == 5 &&
                  memcmp(data, "reply", 5) == 0);
        tap_check(!il.ran_in_call);
        tap_check_int(il.publishes, 0);
        tap_check(!async.done);

        /* The next process() calls dispatch them: the async reply first (it
         * arrived first), then the publish. */
        tap_check_int(bus_client_process(c), 1);
        tap_check(async.done);
        tap_check_int(il.publishes, 0);
        tap_check_int(bus_client_process(c), 1);
        tap_check_int(il.publishes, 1);
        tap_check(il.payload_ok);
        if (async.m)
                tap_check(bus_message_get_kind(async.m) == BUS_KIND_REPLY &&
                          bus_message_get_payload(async.m, &data, &size) >= 0 && size == 5 &&
                          memcmp(data, "async", 5) == 0);
        while (bus_client_process(c) > 0)
                ;
        tap_check_int(il.publishes, 1);
finish:
        bus_slot_unref(sub);
        bus_message_unref(echo);
        bus_message_unref(reply);
        bus_error_free(&e);
        tap_check(service_stop(&svc, c));
        /* Fails the async call if it is still pending, which fills in async. */
        bus_client_unref(c);
        bus_message_unref(async.m);
}

/* ---- Errors raised by handlers. */

static void test_handler_errors(void) {
        Service svc;
        bus_client *c = NULL;
        bus_error e = BUS_ERROR_NULL;
        int r;

        tap_check(service_start(&svc, busd.address, "org.example.Calc"));
        tap_check(bus_client_open(&c, busd.address) >= 0);
        if (!c)
                goto finish;

        r = bus_client_call_method(c, "org.example.Calc", "Fail", NULL, 0, CALL_TIMEOUT, &e, NULL);
        tap_check_int(r, -EREMOTEIO);
        tap_check(bus_error_has_name(&e, BUS_ERROR_FAILED));
        if (!tap_check(e.message && strcmp(e.message, strerror(EDOM)) == 0))
                tap_diag("message: %s", e.message ?: "(none)");
        bus_error_free(&e);

        r = bus_client_call_method(c, "org.example.Calc", "Divide", NULL, 0, CALL_TIMEOUT, &e,
                                   NULL);
        tap_check_int(r, -EREMOTEIO);
        tap_check(bus_error_has_name(&e, "org.example.Error.DivByZero"));
        tap_check(e.message && strcmp(e.message, "division by zero") == 0);
        tap_check_int(bus_error_to_errno(&e), -EREMOTEIO);
        bus_error_free(&e);
finish:
        tap_check(service_stop(&svc, c));
        bus_client_unref(c);
}

static void test_broker_exits_cleanly(void) {
        test_busd_check_clean_exit(&busd);
}

int main(void) {
        tap_init();
        signal(SIGPIPE, SIG_IGN);
        test_busd_start_or_bail(&busd, NULL);
        TAP_RUN(test_round_trip_byte_exact);
        TAP_RUN(test_error_no_owner);
        TAP_RUN(test_error_timeout);
        TAP_RUN(test_error_disconnected);
        TAP_RUN(test_error_unknown_method);
        TAP_RUN(test_error_invalid_args);
        TAP_RUN(test_error_limits_exceeded);
        TAP_RUN(test_ten_thousand_sync);
        TAP_RUN(test_ten_thousand_async);
        TAP_RUN(test_fifo_per_sender);
        TAP_RUN(test_credentials);
        TAP_RUN(test_sync_call_defers_dispatch);
        TAP_RUN(test_handler_errors);
        TAP_RUN(test_broker_exits_cleanly);
        return tap_done();
}
