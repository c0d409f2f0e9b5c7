/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Integration test: monitors through a real busd. A monitor sees requests,
 * replies, publishes, the broker's own errors and events, each with the
 * broker's stamps (kind, sender, receiver, timestamps, payload, descriptor
 * counts) and without the original's descriptors, except a shared-memory
 * payload, which it can read. Filters by topic, name and kind; who may
 * monitor; a monitor that sends is disconnected and libbus refuses to send
 * from one; a connection that becomes a monitor loses its names and
 * subscriptions, its waiting calls fail, and requests to it find nobody; a
 * monitor that never reads loses copies (counted) while the publisher and
 * the subscriber go on unharmed; a monitor never sees its own frames; two
 * monitors each get their copies; the counters of GetStats and ListPeers;
 * and the broker's answer to bus.Introspect.
 *
 * The monitors and a driving connection live in the test process; the
 * service being watched and the subscriber of the flood are child
 * processes. A case knows its traffic has all been copied once the copy of
 * its last message arrived: copies reach a monitor in the order the broker
 * routed the originals. Every wait has a deadline and waits on a condition,
 * never on time alone.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libbus/bus.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "proto/bus.pb-c.h"
#include "tests/lib/raw-frame.h"
#include "tests/lib/tap.h"
#include "tests/lib/util-busd.h"

#define WAIT_MS 20000
#define WAIT_USEC ((uint64_t) WAIT_MS * 1000)
#define SERVICE "org.example.Watched"
#define NOBODY "org.example.Nobody"
#define NOBODY_UID 65534
#define FLOOD_MESSAGES 16
#define FLOOD_SIZE ((size_t) 256 * 1024)

static TestBusd busd;
static bus_client *driver;      /* the test's own connection, never a monitor */
static const char *driver_id;
static char service_id[32];

static uint64_t realtime_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static bool streq_null(const char *a, const char *b) {
        return a && b && strcmp(a, b) == 0;
}

/* A check inside a child: reports as a TAP comment and evaluates to the
 * condition, so the child can fold it into its exit code. */
#define child_check(cond)                                                            \
        ((cond) ? true                                                               \
                : (tap_diag("child %d: %s:%d: check failed: %s", (int) getpid(),     \
                            __FILE__, __LINE__, #cond),                               \
                   false))

/* ---- Monitors in the test process. */

typedef struct Watcher {
        bus_client *c;
        const char *id;
        bus_message **copies;   /* every copy received, in order, referenced */
        size_t n;
        size_t size;
} Watcher;

static int watcher_record(bus_message *m, void *userdata) {
        Watcher *w = userdata;

        if (w->n == w->size) {
                size_t size = w->size ? w->size * 2 : 64;
                bus_message **c = realloc(w->copies, size * sizeof(*c));

                assert(c);
                w->copies = c;
                w->size = size;
        }
        w->copies[w->n++] = bus_message_ref(m);
        return 0;
}

static bool watcher_open_at(Watcher *w, const char *address, const char *const *topics,
                            const char *const *names, const int *kinds) {
        int r;

        *w = (Watcher){};
        r = bus_client_open(&w->c, address);
        if (!tap_check_int(r, 0))
                return false;
        (void) bus_client_get_unique_id(w->c, &w->id);
        r = bus_client_become_monitor(w->c, topics, names, kinds, watcher_record, w);
        return tap_check_int(r, 0);
}

static bool watcher_open(Watcher *w, const char *const *topics, const char *const *names,
                         const int *kinds) {
        return watcher_open_at(w, busd.address, topics, names, kinds);
}

static void watcher_close(Watcher *w) {
        for (size_t i = 0; i < w->n; i++)
                bus_message_unref(w->copies[i]);
        free(w->copies);
        bus_client_unref(w->c);
        *w = (Watcher){};
}

/* What a copy must be; zero fields match anything. */
typedef struct Want {
        int kind;
        const char *sender;
        const char *topic;
        const char *method;
        const char *destination;
        uint64_t serial;
        uint64_t reply_serial;
} Want;

static bool want_matches(bus_message *m, const Want *w) {
        return (!w->kind || bus_message_get_kind(m) == w->kind) &&
               (!w->sender || streq_null(bus_message_get_sender(m), w->sender)) &&
               (!w->topic || streq_null(bus_message_get_topic(m), w->topic)) &&
               (!w->method || streq_null(bus_message_get_method(m), w->method)) &&
               (!w->destination || streq_null(bus_message_get_destination(m), w->destination)) &&
               (!w->serial || bus_message_get_serial(m) == w->serial) &&
               (!w->reply_serial || bus_message_get_reply_serial(m) == w->reply_serial);
}

/* Index of the first copy from index from on that matches, or -1. */
static ssize_t watcher_find(const Watcher *w, const Want *want, size_t from) {
        for (size_t i = from; i < w->n; i++)
                if (want_matches(w->copies[i], want))
                        return (ssize_t) i;
        return -1;
}

/* Processes the monitor until a copy from index from on matches: its
 * index, or -1 on the deadline or a lost connection. */
static ssize_t watcher_wait_from(Watcher *w, const Want *want, size_t from) {
        int64_t deadline = test_now_ms() + WAIT_MS;
        size_t checked = from;

        for (;;) {
                ssize_t i = watcher_find(w, want, checked);
                int64_t left;
                int r;

                if (i >= 0)
                        return i;
                checked = w->n;
                r = bus_client_process(w->c);
                if (r < 0)
                        return -1;
                if (r > 0)
                        continue;
                left = deadline - test_now_ms();
                if (left <= 0)
                        return -1;
                (void) bus_client_wait(w->c, (uint64_t) left * 1000);
        }
}

static ssize_t watcher_wait(Watcher *w, const Want *want) {
        return watcher_wait_from(w, want, 0);
}

typedef struct CopiesTarget {
        const Watcher *w;
        size_t n;
} CopiesTarget;

static bool copies_reached(void *userdata) {
        const CopiesTarget *t = userdata;
        return t->w->n >= t->n;
}

/* Processes the monitor until it holds n copies. */
static bool watcher_wait_count(Watcher *w, size_t n) {
        CopiesTarget t = { w, n };
        return test_process_until(w->c, copies_reached, &t, WAIT_MS) == 0;
}

static bus_message *watcher_get(const Watcher *w, ssize_t i) {
        return i >= 0 ? w->copies[i] : NULL;
}

static bool payload_is(bus_message *m, const void *data, size_t size) {
        const void *p;
        size_t n;

        return m && bus_message_get_payload(m, &p, &n) >= 0 && n == size &&
               (size == 0 || memcmp(p, data, size) == 0);
}

/* ---- The driving connection. */

static bus_message *request_new(const char *destination, const char *method, const char *payload) {
        bus_message *m = NULL;

        assert(bus_message_new_request(&m, destination, method) >= 0);
        assert(bus_message_set_payload(m, payload, strlen(payload)) >= 0);
        return m;
}

/* Calls and returns the request's serial; *ret_r gets the call's result. */
static uint64_t call(const char *destination, const char *method, const char *payload, int *ret_r) {
        bus_message *m = request_new(destination, method, payload);
        bus_error e = BUS_ERROR_NULL;
        uint64_t serial;

        *ret_r = bus_client_call(driver, m, WAIT_USEC, &e, NULL);
        serial = bus_message_get_serial(m);
        bus_error_free(&e);
        bus_message_unref(m);
        return serial;
}

static bool publish(const char *topic, const char *payload) {
        return tap_check_int(bus_client_publish(driver, topic, payload, strlen(payload), 0), 0);
}

/* Waits until the broker counts n monitors: closed ones go when it has
 * seen their end, which may be after it answered a call. */
static bool wait_monitors(unsigned n) {
        int64_t deadline = test_now_ms() + WAIT_MS;

        for (;;) {
                Bus__GetStatsReply *s = test_get_stats(driver, WAIT_USEC);
                unsigned now = s ? s->monitors : UINT32_MAX;

                if (s)
                        bus__get_stats_reply__free_unpacked(s, NULL);
                if (now == n)
                        return true;
                if (!s || test_now_ms() > deadline) {
                        tap_diag("the broker counts %u monitors, expected %u", now, n);
                        return false;
                }
        }
}

/* ---- The watched service: a child that owns SERVICE. */

typedef struct Service {
        pid_t pid;
        TestSignal ready;
} Service;

static Service service;

static int svc_echo(bus_message *m, void *userdata) {
        bus_client *c = userdata;
        const void *data;
        size_t size;
        int r;

        r = bus_message_get_payload(m, &data, &size);
        if (r < 0)
                return r;
        return bus_client_reply(c, m, data, size);
}

/* Hold: kept unanswered until the service quits. */
static bus_message *held[8];

static int svc_hold(bus_message *m, void *userdata) {
        for (size_t i = 0; i < sizeof(held) / sizeof(held[0]); i++)
                if (!held[i]) {
                        held[i] = bus_message_ref(m);
                        return 0;
                }
        return -ENOSPC;
}

static int svc_quit(bus_message *m, void *userdata) {
        bus_client *c = userdata;

        (void) bus_client_reply(c, m, NULL, 0);
        return bus_client_exit(c, 0);
}

static int service_main(void *arg) {
        Service *svc = arg;
        bus_client *c = NULL;
        int r;

        r = bus_client_open(&c, busd.address);
        if (r >= 0)
                r = bus_client_request_name(c, SERVICE, 0) == BUS_NAME_PRIMARY_OWNER ? 0 : -EEXIST;
        if (r >= 0)
                r = bus_client_add_method(c, NULL, NULL, "Echo", svc_echo, c);
        if (r >= 0)
                r = bus_client_add_method(c, NULL, NULL, "Hold", svc_hold, c);
        if (r >= 0)
                r = bus_client_add_method(c, NULL, NULL, "Quit", svc_quit, c);
        test_signal_post(&svc->ready, r >= 0 ? 'R' : 'F');
        if (r >= 0)
                r = bus_client_run(c);
        if (r >= 0)
                (void) bus_client_flush(c);
        for (size_t i = 0; i < sizeof(held) / sizeof(held[0]); i++)
                bus_message_unref(held[i]);
        bus_client_unref(c);
        return r < 0 ? r : 0;
}

static bool service_start(void) {
        char c = 0;

        if (test_signal_init(&service.ready) < 0)
                return false;
        service.pid = test_child_start(service_main, &service);
        if (service.pid < 0)
                return false;
        test_signal_close_write(&service.ready);
        return test_signal_wait(&service.ready, WAIT_MS, &c) == 0 && c == 'R';
}

static void service_stop(void) {
        int r;

        (void) call(SERVICE, "Quit", "", &r);
        tap_check_int(r, 0);
        tap_check_int(test_child_wait(service.pid, WAIT_MS), 0);
        test_signal_close(&service.ready);
}

static bool lookup_service_id(void) {
        Bus__GetNameOwnerRequest req = BUS__GET_NAME_OWNER_REQUEST__INIT;
        Bus__GetNameOwnerReply *rep = NULL;

        req.name = (char *) SERVICE;
        if (bus_client_call_protobuf(driver, "bus", "GetNameOwner", &req.base,
                                     &bus__get_name_owner_reply__descriptor, WAIT_USEC, NULL,
                                     (ProtobufCMessage **) &rep) < 0)
                return false;
        snprintf(service_id, sizeof(service_id), "%s", rep->owner);
        bus__get_name_owner_reply__free_unpacked(rep, NULL);
        return true;
}

static int ignore_cb(bus_message *m, void *userdata) {
        return 0;
}

/* ---- Cases. */

/* A request, its reply and a publish, each stamped. */
static void test_request_reply_publish(void) {
        static const char request_payload[] = "a request payload";
        static const char publish_payload[] = "a publish payload, longer than the request's";
        uint64_t t0 = realtime_ns(), t1, serial;
        bus_client *subscriber = NULL;
        bus_message *req, *rep, *pub;
        ssize_t iq, ir, ip;
        uid_t uid = 1;
        Watcher w;
        int r;

        if (!watcher_open(&w, NULL, NULL, NULL))
                return;
        /* Two matching subscriptions on one connection: two receivers. */
        tap_check_int(bus_client_open(&subscriber, busd.address), 0);
        tap_check_int(bus_client_subscribe(subscriber, NULL, "mon.basic.>", NULL, 0, ignore_cb,
                                           NULL), 0);
        tap_check_int(bus_client_subscribe(subscriber, NULL, "mon.basic.topic", NULL, 0, ignore_cb,
                                           NULL), 0);

        serial = call(SERVICE, "Echo", request_payload, &r);
        tap_check_int(r, 0);
        publish("mon.basic.topic", publish_payload);
        ip = watcher_wait(&w, &(Want){ .kind = BUS_KIND_PUBLISH, .topic = "mon.basic.topic" });
        t1 = realtime_ns();
        iq = watcher_find(&w, &(Want){ .kind = BUS_KIND_REQUEST, .sender = driver_id,
                                       .serial = serial }, 0);
        ir = watcher_find(&w, &(Want){ .kind = BUS_KIND_REPLY, .sender = service_id,
                                       .reply_serial = serial }, 0);
        req = watcher_get(&w, iq);
        rep = watcher_get(&w, ir);
        pub = watcher_get(&w, ip);
        if (!tap_check(req && rep && pub))
                goto finish;
        tap_check(iq < ir && ir < ip);

        tap_check_int(bus_message_is_monitor_copy(req), 1);
        tap_check(streq_null(bus_message_get_destination(req), SERVICE));
        tap_check(streq_null(bus_message_get_method(req), "Echo"));
        tap_check(streq_null(bus_message_get_monitor_receiver(req), service_id));
        tap_check(payload_is(req, request_payload, strlen(request_payload)));
        tap_check_int(bus_message_get_sender_creds(req, &uid, NULL, NULL), 0);
        tap_check_int(uid, getuid());

        tap_check_int(bus_message_is_monitor_copy(rep), 1);
        tap_check(streq_null(bus_message_get_destination(rep), driver_id));
        tap_check(streq_null(bus_message_get_monitor_receiver(rep), driver_id));
        tap_check(payload_is(rep, request_payload, strlen(request_payload)));

        tap_check_int(bus_message_is_monitor_copy(pub), 1);
        tap_check(streq_null(bus_message_get_sender(pub), driver_id));
        tap_check(!bus_message_get_monitor_receiver(pub));
        tap_check_int(bus_message_get_monitor_receivers(pub), 2);
        tap_check(payload_is(pub, publish_payload, strlen(publish_payload)));

        /* Taken when the broker routed each one: in order, within the case. */
        tap_check(bus_message_get_timestamp(req) >= t0);
        tap_check(bus_message_get_timestamp(req) <= bus_message_get_timestamp(rep));
        tap_check(bus_message_get_timestamp(rep) <= bus_message_get_timestamp(pub));
        tap_check(bus_message_get_timestamp(pub) <= t1);
finish:
        bus_client_unref(subscriber);
        watcher_close(&w);
}

/* Descriptors are counted, not forwarded. */
static void test_descriptors(void) {
        bus_message *m = request_new(SERVICE, "Echo", "two descriptors"), *copy;
        bus_error e = BUS_ERROR_NULL;
        unsigned fds_before;
        uint64_t serial;
        ssize_t i;
        Watcher w;
        int p[2];

        if (!watcher_open(&w, NULL, NULL, NULL) || !tap_check(pipe2(p, O_CLOEXEC) == 0)) {
                bus_message_unref(m);
                return;
        }
        tap_check_int(bus_message_append_fd(m, p[0]), 0);
        tap_check_int(bus_message_append_fd(m, p[1]), 1);
        tap_check_int(bus_client_call(driver, m, WAIT_USEC, &e, NULL), 0);
        serial = bus_message_get_serial(m);
        bus_error_free(&e);
        bus_message_unref(m);

        /* A publish with descriptors nobody subscribed to is still copied. */
        assert(bus_message_new_publish(&m, "mon.fds.topic") >= 0);
        tap_check_int(bus_message_append_fd(m, p[0]), 0);
        tap_check_int(bus_message_append_fd(m, p[1]), 1);
        tap_check_int(bus_client_send(driver, m, NULL), 0);
        bus_message_unref(m);

        fds_before = tap_open_fds();
        i = watcher_wait(&w, &(Want){ .kind = BUS_KIND_PUBLISH, .topic = "mon.fds.topic" });
        copy = watcher_get(&w, i);
        if (tap_check(copy)) {
                tap_check_int(bus_message_get_monitor_n_fds(copy), 2);
                tap_check_int(bus_message_get_n_fds(copy), 0);
                tap_check_int(bus_message_get_monitor_receivers(copy), 0);
        }
        copy = watcher_get(&w, watcher_find(&w, &(Want){ .kind = BUS_KIND_REQUEST,
                                                          .sender = driver_id,
                                                          .serial = serial }, 0));
        if (tap_check(copy)) {
                tap_check_int(bus_message_get_monitor_n_fds(copy), 2);
                tap_check_int(bus_message_get_n_fds(copy), 0);
                tap_check_int(bus_message_get_fd(copy, 0), -ENXIO);
        }
        /* The reply carried none. */
        copy = watcher_get(&w, watcher_find(&w, &(Want){ .kind = BUS_KIND_REPLY,
                                                          .reply_serial = serial }, 0));
        if (tap_check(copy))
                tap_check_int(bus_message_get_monitor_n_fds(copy), 0);
        /* Not one descriptor came with the copies. */
        tap_check_int(tap_open_fds(), fds_before);
        close(p[0]);
        close(p[1]);
        watcher_close(&w);
}

/* The broker's own error for a name nobody has, after the request. */
static void test_broker_error(void) {
        bus_message *req, *err;
        uint64_t serial;
        ssize_t iq, ie;
        Watcher w;
        int r;

        if (!watcher_open(&w, NULL, NULL, NULL))
                return;
        serial = call(NOBODY, "Anything", "", &r);
        tap_check_int(r, -ENXIO);
        ie = watcher_wait(&w, &(Want){ .kind = BUS_KIND_ERROR, .reply_serial = serial });
        iq = watcher_find(&w, &(Want){ .kind = BUS_KIND_REQUEST, .serial = serial,
                                       .sender = driver_id }, 0);
        err = watcher_get(&w, ie);
        req = watcher_get(&w, iq);
        if (tap_check(err && req)) {
                tap_check(iq < ie);
                tap_check(streq_null(bus_message_get_destination(req), NOBODY));
                tap_check(!bus_message_get_monitor_receiver(req));
                tap_check(streq_null(bus_message_get_sender(err), "bus"));
                tap_check(streq_null(bus_message_get_error_name(err), BUS_ERROR_NO_OWNER));
                tap_check(streq_null(bus_message_get_monitor_receiver(err), driver_id));
                tap_check(bus_message_get_timestamp(err) >= bus_message_get_timestamp(req));
        }
        watcher_close(&w);
}

static bool peer_event_is(bus_message *m, const char *unique_id) {
        Bus__PeerEvent *ev = NULL;
        bool ok;

        if (!m || bus_message_read_protobuf(m, &bus__peer_event__descriptor,
                                            (ProtobufCMessage **) &ev) < 0)
                return false;
        ok = streq_null(ev->unique_id, unique_id);
        bus__peer_event__free_unpacked(ev, NULL);
        return ok;
}

/* Waits for the event on topic about the connection id: connections of
 * earlier cases may still be coming and going. */
static bus_message *watcher_wait_peer_event(Watcher *w, const char *topic, const char *id) {
        ssize_t i = -1;

        do
                i = watcher_wait_from(w, &(Want){ .kind = BUS_KIND_PUBLISH, .topic = topic },
                                      (size_t) (i + 1));
        while (i >= 0 && !peer_event_is(w->copies[i], id));
        return watcher_get(w, i);
}

/* Broker events and the Hello exchange of a new connection. */
static void test_broker_events(void) {
        bus_client *c = NULL;
        const char *id = NULL;
        char id_copy[32] = "";
        bus_message *ev;
        Watcher w;

        if (!watcher_open(&w, NULL, NULL, NULL))
                return;
        tap_check_int(bus_client_open(&c, busd.address), 0);
        (void) bus_client_get_unique_id(c, &id);
        snprintf(id_copy, sizeof(id_copy), "%s", id ?: "");

        ev = watcher_wait_peer_event(&w, "bus.peer.connected", id_copy);
        if (tap_check(ev)) {
                tap_check(streq_null(bus_message_get_sender(ev), "bus"));
                tap_check(streq_null(bus_message_get_payload_type(ev), "bus.PeerEvent"));
                tap_check_int(bus_message_get_monitor_receivers(ev), 0);
        }
        ev = watcher_get(&w, watcher_find(&w, &(Want){ .kind = BUS_KIND_REQUEST, .method = "Hello",
                                                        .sender = id_copy }, 0));
        if (tap_check(ev))
                tap_check(streq_null(bus_message_get_monitor_receiver(ev), "bus"));
        ev = watcher_get(&w, watcher_find(&w, &(Want){ .kind = BUS_KIND_REPLY, .sender = "bus",
                                                        .destination = id_copy }, 0));
        if (tap_check(ev))
                tap_check(streq_null(bus_message_get_monitor_receiver(ev), id_copy));

        c = bus_client_unref(c);
        tap_check(watcher_wait_peer_event(&w, "bus.peer.disconnected", id_copy));
        watcher_close(&w);
}

/* A shared-memory payload reaches the monitor, readable. */
static void test_shared_memory(void) {
        bus_message *m = NULL, *copy;
        uint8_t *expected = malloc(FLOOD_SIZE);
        void *buf;
        ssize_t i;
        Watcher w;

        assert(expected);
        for (size_t k = 0; k < FLOOD_SIZE; k++)
                expected[k] = (uint8_t) (k * 7 + k / 251);
        if (!watcher_open(&w, NULL, NULL, NULL)) {
                free(expected);
                return;
        }
        assert(bus_message_new_publish(&m, "mon.shm.topic") >= 0);
        tap_check_int(bus_message_set_shm(m, BUS_SHM_ALWAYS), 0);
        tap_check_int(bus_message_reserve_payload(m, FLOOD_SIZE, &buf), 0);
        memcpy(buf, expected, FLOOD_SIZE);
        tap_check_int(bus_client_send(driver, m, NULL), 0);
        bus_message_unref(m);

        i = watcher_wait(&w, &(Want){ .kind = BUS_KIND_PUBLISH, .topic = "mon.shm.topic" });
        copy = watcher_get(&w, i);
        if (tap_check(copy)) {
                tap_check_int(bus_message_is_shm(copy), 1);
                tap_check(payload_is(copy, expected, FLOOD_SIZE));
                tap_check_int(bus_message_get_monitor_n_fds(copy), 0);
                tap_check_int(bus_message_get_n_fds(copy), 0);
        }
        watcher_close(&w);
        free(expected);
}

static void test_topic_filter(void) {
        static const char *const topics[] = { "mon.filter.a.>", NULL };
        Watcher w;
        int r;

        if (!watcher_open(&w, topics, NULL, NULL))
                return;
        publish("mon.filter.a.one", "1");
        publish("mon.filter.b.one", "2");
        (void) call(SERVICE, "Echo", "3", &r);
        publish("mon.filter.a.end", "4");
        tap_check(watcher_wait(&w, &(Want){ .topic = "mon.filter.a.end" }) >= 0);
        tap_check_int(w.n, 2);
        tap_check(watcher_find(&w, &(Want){ .topic = "mon.filter.a.one" }, 0) == 0);
        watcher_close(&w);
}

/* A well-known name matches requests to it and what its owner sends; a
 * unique id everything from and to that connection. */
static void test_name_filter(void) {
        static const char *const by_name[] = { SERVICE, NULL };
        const char *by_id[] = { driver_id, NULL };
        uint64_t first, last, nobody;
        Watcher wn, wi;
        int r;

        if (!watcher_open(&wn, NULL, by_name, NULL) || !watcher_open(&wi, NULL, by_id, NULL))
                return;
        publish("mon.name.topic", "not from or to the service");
        nobody = call(NOBODY, "Anything", "", &r);
        first = call(SERVICE, "Echo", "first", &r);
        tap_check_int(r, 0);
        last = call(SERVICE, "Echo", "last", &r);
        tap_check_int(r, 0);

        tap_check(watcher_wait(&wn, &(Want){ .kind = BUS_KIND_REPLY, .reply_serial = last }) >= 0);
        tap_check_int(wn.n, 4);
        tap_check(watcher_find(&wn, &(Want){ .kind = BUS_KIND_REQUEST, .serial = first }, 0) == 0);
        tap_check(watcher_find(&wn, &(Want){ .kind = BUS_KIND_REPLY, .sender = service_id,
                                             .reply_serial = first }, 0) == 1);
        tap_check(watcher_find(&wn, &(Want){ .kind = BUS_KIND_REQUEST, .serial = last }, 0) == 2);

        /* The publish, the request nobody had and the broker's answer, and
         * the two calls. */
        tap_check(watcher_wait(&wi, &(Want){ .kind = BUS_KIND_REPLY, .reply_serial = last }) >= 0);
        tap_check_int(wi.n, 7);
        tap_check(watcher_find(&wi, &(Want){ .kind = BUS_KIND_PUBLISH }, 0) == 0);
        tap_check(watcher_find(&wi, &(Want){ .kind = BUS_KIND_ERROR, .sender = "bus",
                                             .reply_serial = nobody }, 0) == 2);
        watcher_close(&wi);
        watcher_close(&wn);
}

static void test_kind_filter(void) {
        static const int kinds[] = { BUS_KIND_ERROR, 0 };
        uint64_t first, last;
        Watcher w;
        int r;

        if (!watcher_open(&w, NULL, NULL, kinds))
                return;
        (void) call(SERVICE, "Echo", "a reply is not an error", &r);
        publish("mon.kind.topic", "nor is a publish");
        first = call(NOBODY, "Anything", "", &r);
        last = call("org.example.Gone", "Anything", "", &r);
        tap_check(watcher_wait(&w, &(Want){ .reply_serial = last }) >= 0);
        tap_check_int(w.n, 2);
        tap_check(watcher_find(&w, &(Want){ .kind = BUS_KIND_ERROR, .reply_serial = first }, 0) ==
                  0);
        tap_check(watcher_find(&w, &(Want){ .kind = BUS_KIND_ERROR, .reply_serial = last }, 0) ==
                  1);
        watcher_close(&w);
}

/* ---- Who may monitor. */

static int unprivileged_main(void *arg) {
        static const gid_t nogroup = NOBODY_UID;
        bus_client *c = NULL;
        int r;

        if (setgroups(1, &nogroup) < 0 || setgid(NOBODY_UID) < 0 || setuid(NOBODY_UID) < 0)
                return 2;
        r = bus_client_open(&c, busd.address);
        if (!child_check(r == 0))
                return 3;
        r = bus_client_become_monitor(c, NULL, NULL, NULL, ignore_cb, NULL);
        child_check(r == -EACCES);
        /* Refused, it is still an ordinary connection. */
        child_check(bus_client_call_method(c, "bus", "Ping", NULL, 0, WAIT_USEC, NULL, NULL) == 0);
        bus_client_unref(c);
        return r == -EACCES ? 0 : 1;
}

static void test_unprivileged_refused(void) {
        pid_t pid;

        /* The child must reach the socket: the directory is private. */
        tap_check(chmod(busd.dir, 0711) == 0);
        tap_check(chmod(busd.address, 0666) == 0);
        pid = test_child_start(unprivileged_main, NULL);
        if (!tap_check(pid > 0))
                return;
        tap_check_int(test_child_wait(pid, WAIT_MS), 0);
        tap_check(test_busd_log_contains(&busd, "may not monitor the bus"));
        (void) chmod(busd.dir, 0700);
}

/* ---- A monitor may not send. */

static bool raw_become_monitor(int fd, const char *topic) {
        Bus__BecomeMonitorRequest req = BUS__BECOME_MONITOR_REQUEST__INIT;
        Bus__Envelope env = BUS__ENVELOPE__INIT, *rep;
        char *topics[] = { (char *) topic };
        uint8_t payload[256];
        size_t plen;
        bool ok;

        req.topics = topics;
        req.n_topics = 1;
        plen = bus__become_monitor_request__pack(&req, payload);
        env.kind = BUS__KIND__KIND_REQUEST;
        env.serial = 2;
        env.destination = (char *) "bus";
        env.method = (char *) "BecomeMonitor";
        if (!test_raw_send(fd, &env, payload, plen, NULL, 0))
                return false;
        rep = test_raw_read_envelope(fd, WAIT_MS);
        ok = rep && rep->kind == BUS__KIND__KIND_REPLY && rep->reply_serial == 2;
        bus__envelope__free_unpacked(rep, NULL);
        return ok;
}

/* The next frame is an error of this name, and then the connection ends. */
static bool raw_expect_error_and_close(int fd, const char *name) {
        Bus__Envelope *err = test_raw_read_envelope(fd, WAIT_MS);
        uint8_t rest[4096];
        bool ok;

        ok = err && err->kind == BUS__KIND__KIND_ERROR && streq_null(err->error_name, name);
        if (!ok)
                tap_diag("expected %s, got %s", name, err ? err->error_name : "nothing");
        bus__envelope__free_unpacked(err, NULL);
        return ok && test_read_to_eof(fd, rest, sizeof(rest), WAIT_MS) >= 0;
}

static void test_monitor_may_not_send(void) {
        static const char *const topics[] = { "mon.quiet.>", NULL };
        Bus__Envelope ping = BUS__ENVELOPE__INIT;
        static const uint8_t garbage[32] = { 0xde, 0xad, 0xbe, 0xef };
        Watcher w;
        int fd, r;

        if (!watcher_open(&w, topics, NULL, NULL))
                return;
        /* libbus refuses every way of sending. */
        tap_check_int(bus_client_publish(w.c, "mon.quiet.x", "x", 1, 0), -EPERM);
        tap_check_int(bus_client_call_method(w.c, "bus", "Ping", NULL, 0, WAIT_USEC, NULL, NULL),
                      -EPERM);
        tap_check_int(bus_client_subscribe(w.c, NULL, "mon.quiet.>", NULL, 0, ignore_cb, NULL),
                      -EPERM);
        tap_check_int(bus_client_request_name(w.c, "org.example.Monitor", 0), -EPERM);
        tap_check_int(bus_client_become_monitor(w.c, NULL, NULL, NULL, ignore_cb, NULL), -EBUSY);

        /* The broker closes a monitor that sends anyway. */
        fd = test_raw_open(busd.address, WAIT_MS);
        if (tap_check(fd >= 0) && tap_check(raw_become_monitor(fd, "mon.quiet.>"))) {
                ping.kind = BUS__KIND__KIND_REQUEST;
                ping.serial = 3;
                ping.destination = (char *) "bus";
                ping.method = (char *) "Ping";
                tap_check(test_raw_send(fd, &ping, NULL, 0, NULL, 0));
                tap_check(raw_expect_error_and_close(fd, BUS_ERROR_ACCESS_DENIED));
        }
        if (fd >= 0)
                close(fd);
        /* And one that sends garbage, as any connection. */
        fd = test_raw_open(busd.address, WAIT_MS);
        if (tap_check(fd >= 0) && tap_check(raw_become_monitor(fd, "mon.quiet.>"))) {
                tap_check(write(fd, garbage, sizeof(garbage)) == (ssize_t) sizeof(garbage));
                tap_check(raw_expect_error_and_close(fd, BUS_ERROR_PROTOCOL));
        }
        if (fd >= 0)
                close(fd);
        tap_check(test_busd_log_contains(&busd, "sent a frame: disconnecting it"));

        /* Nobody else noticed: the other monitor still gets its copies. */
        (void) call(SERVICE, "Echo", "still there", &r);
        tap_check_int(r, 0);
        publish("mon.quiet.end", "end");
        tap_check(watcher_wait(&w, &(Want){ .topic = "mon.quiet.end" }) >= 0);
        tap_check_int(w.n, 1);
        watcher_close(&w);
}

/* ---- A monitor that does not read. */

typedef struct Flood {
        const char *address;
        TestSignal ready;       /* subscriber -> test: subscribed */
        TestSignal got;         /* subscriber -> test: one message received */
} Flood;

typedef struct FloodState {
        Flood *flood;
        unsigned n;
        unsigned bad;
        bool end;
} FloodState;

static int flood_rx(bus_message *m, void *userdata) {
        FloodState *st = userdata;
        const uint8_t *data;
        size_t size;

        if (streq_null(bus_message_get_topic(m), "mon.flood.end")) {
                st->end = true;
                return 0;
        }
        if (bus_message_get_payload(m, (const void **) &data, &size) < 0 || size != FLOOD_SIZE ||
            data[0] != (uint8_t) st->n || bus_message_get_missed(m) != 0)
                st->bad++;
        st->n++;
        test_signal_post(&st->flood->got, 'M');
        return 0;
}

static int flood_subscriber_main(void *arg) {
        FloodState st = { .flood = arg };
        bus_client *c = NULL;
        int r;

        r = bus_client_open(&c, st.flood->address);
        if (r >= 0)
                r = bus_client_subscribe(c, NULL, "mon.flood.>", NULL, 0, flood_rx, &st);
        test_signal_post(&st.flood->ready, r >= 0 ? 'R' : 'F');
        while (r >= 0 && !st.end) {
                r = bus_client_process(c);
                if (r == 0)
                        r = bus_client_wait(c, WAIT_USEC);
        }
        child_check(st.n == FLOOD_MESSAGES);
        child_check(st.bad == 0);
        bus_client_unref(c);
        return r >= 0 && st.n == FLOOD_MESSAGES && st.bad == 0 ? 0 : 1;
}

static void test_monitor_not_reading(void) {
        static const char *const args[] = { "--max-queue-bytes", "1M", NULL };
        static const char *const topics[] = { "mon.flood.>", NULL };
        Flood flood = { .ready = { { -1, -1 } }, .got = { { -1, -1 } } };
        Bus__GetStatsReply *before = NULL, *after = NULL;
        uint8_t *payload = calloc(1, FLOOD_SIZE);
        bus_client *publisher = NULL;
        uint64_t copies = 0, dropped = 0, missed = 0;
        TestBusd small = {};
        unsigned n_data = 0;
        pid_t pid = -1;
        char c = 0;
        Watcher w = {};

        assert(payload);
        /* Its own broker, with a small queue, so the monitor fills it fast. */
        if (!tap_check_int(test_busd_start(&small, args), 0))
                goto finish;
        flood.address = small.address;
        if (!watcher_open_at(&w, small.address, topics, NULL, NULL) ||
            !tap_check_int(bus_client_open(&publisher, small.address), 0))
                goto finish;
        /* Inline: this is about the queue's bytes. */
        tap_check_int(bus_client_set_shm_threshold(publisher, SIZE_MAX), 0);
        before = test_get_stats(publisher, WAIT_USEC);
        if (!tap_check(before) || !tap_check(test_signal_init(&flood.ready) == 0) ||
            !tap_check(test_signal_init(&flood.got) == 0))
                goto finish;
        pid = test_child_start(flood_subscriber_main, &flood);
        test_signal_close_write(&flood.ready);
        test_signal_close_write(&flood.got);
        if (!tap_check(pid > 0) || !tap_check(test_signal_wait(&flood.ready, WAIT_MS, &c) == 0) ||
            !tap_check(c == 'R'))
                goto finish;

        /* One message at a time: the subscriber's queue never fills, only
         * the monitor's, which is not read at all meanwhile. */
        for (unsigned i = 0; i < FLOOD_MESSAGES; i++) {
                payload[0] = (uint8_t) i;
                if (!tap_check_int(bus_client_publish(publisher, "mon.flood.data", payload,
                                                      FLOOD_SIZE, 0), 0) ||
                    !tap_check_int(bus_client_flush(publisher), 0) ||
                    !tap_check_int(test_signal_wait(&flood.got, WAIT_MS, NULL), 0))
                        goto finish;
        }
        tap_check_int(bus_client_publish(publisher, "mon.flood.end", "", 0, 0), 0);
        tap_check_int(test_child_wait(pid, WAIT_MS), 0);
        pid = -1;

        /* The subscriber handled the end: the broker routed everything. */
        after = test_get_stats(publisher, WAIT_USEC);
        if (!tap_check(after))
                goto finish;
        copies = after->monitor_copies - before->monitor_copies;
        dropped = after->monitor_dropped - before->monitor_dropped;
        tap_check(dropped > 0);
        tap_check_int(copies + dropped, FLOOD_MESSAGES + 1);
        tap_check_int(after->dropped, before->dropped);
        tap_check_int(after->monitors, 1);

        /* Drained, the monitor hears how much it missed on its next copy. */
        if (!tap_check(watcher_wait_count(&w, copies)))
                goto finish;
        tap_check_int(bus_client_publish(publisher, "mon.flood.after", "", 0, 0), 0);
        tap_check(watcher_wait(&w, &(Want){ .topic = "mon.flood.after" }) >= 0);
        for (size_t i = 0; i < w.n; i++) {
                missed += bus_message_get_missed(w.copies[i]);
                if (streq_null(bus_message_get_topic(w.copies[i]), "mon.flood.data")) {
                        const uint8_t *data = NULL;
                        size_t size = 0;

                        /* The copies that made it are the first ones, whole. */
                        tap_check_int(bus_message_get_payload(w.copies[i], (const void **) &data,
                                                              &size), 0);
                        tap_check(size == FLOOD_SIZE && data[0] == n_data);
                        n_data++;
                }
        }
        tap_check_int(missed, dropped);
        tap_check(n_data < FLOOD_MESSAGES);
        tap_check(bus_client_is_connected(w.c) == 1);
finish:
        if (pid > 0)
                (void) test_child_wait(pid, WAIT_MS);
        if (before)
                bus__get_stats_reply__free_unpacked(before, NULL);
        if (after)
                bus__get_stats_reply__free_unpacked(after, NULL);
        test_signal_close(&flood.ready);
        test_signal_close(&flood.got);
        bus_client_unref(publisher);
        if (w.c)
                watcher_close(&w);
        tap_check_int(test_busd_stop(&small), 0);
        free(payload);
}

/* ---- What a connection gives up to become a monitor. */

static int held_answer(bus_message *m, void *userdata) {
        bus_error *e = userdata;

        assert(bus_message_get_error(m, e) < 0);
        return 0;
}

static bool peer_info(const char *id, Bus__PeerInfo *ret) {
        Bus__ListPeersRequest req = BUS__LIST_PEERS_REQUEST__INIT;
        Bus__ListPeersReply *rep = NULL;
        bool found = false;

        if (bus_client_call_protobuf(driver, "bus", "ListPeers", &req.base,
                                     &bus__list_peers_reply__descriptor, WAIT_USEC, NULL,
                                     (ProtobufCMessage **) &rep) < 0)
                return false;
        for (size_t i = 0; i < rep->n_peers; i++)
                if (streq_null(rep->peers[i]->unique_id, id)) {
                        /* Only the scalars: the strings go with rep. */
                        *ret = *rep->peers[i];
                        ret->names = NULL;
                        ret->unique_id = ret->client_name = NULL;
                        found = true;
                }
        bus__list_peers_reply__free_unpacked(rep, NULL);
        return found;
}

static void test_monitor_gives_up(void) {
        static const char *const topics[] = { "mon.gives.up.>", NULL };
        bus_message *m = request_new(SERVICE, "Hold", "never answered");
        bus_error held_error = BUS_ERROR_NULL;
        Bus__PeerInfo info;
        bus_slot *pending = NULL;
        Watcher w = {};
        int r;

        if (!tap_check_int(bus_client_open(&w.c, busd.address), 0))
                goto finish;
        (void) bus_client_get_unique_id(w.c, &w.id);
        tap_check_int(bus_client_request_name(w.c, "org.example.Former", 0),
                      BUS_NAME_PRIMARY_OWNER);
        tap_check_int(bus_client_subscribe(w.c, NULL, "mon.gives.up.>", NULL, 0, ignore_cb, NULL),
                      0);
        tap_check_int(bus_client_call_async(w.c, &pending, m, held_answer, &held_error,
                                            WAIT_USEC), 0);
        tap_check(peer_info(w.id, &info) && info.n_names == 1 && info.subscriptions == 1 &&
                  !info.monitor);

        r = bus_client_become_monitor(w.c, topics, NULL, NULL, watcher_record, &w);
        if (!tap_check_int(r, 0))
                goto finish;
        /* The call still waiting fails, from bus_client_process(). */
        tap_check(!held_error.name);
        publish("mon.gives.up.end", "end");
        tap_check(watcher_wait(&w, &(Want){ .topic = "mon.gives.up.end" }) >= 0);
        tap_check(streq_null(held_error.name, BUS_ERROR_DISCONNECTED));
        /* The end was a copy, not a delivery to the former subscription. */
        tap_check_int(w.n, 1);
        tap_check(peer_info(w.id, &info) && info.n_names == 0 && info.subscriptions == 0 &&
                  info.monitor);
        (void) call("org.example.Former", "Anything", "", &r);
        tap_check_int(r, -ENXIO);
        /* Requests to the monitor itself find nobody. */
        (void) call(w.id, "Anything", "", &r);
        tap_check_int(r, -ENXIO);
finish:
        bus_error_free(&held_error);
        bus_slot_unref(pending);
        bus_message_unref(m);
        if (w.c)
                watcher_close(&w);
}

/* ---- Several monitors. */

static bool copies_mention(const Watcher *w, const char *id) {
        for (size_t i = 0; i < w->n; i++) {
                bus_message *m = w->copies[i];

                if (streq_null(bus_message_get_sender(m), id) ||
                    streq_null(bus_message_get_destination(m), id) ||
                    streq_null(bus_message_get_monitor_receiver(m), id))
                        return true;
        }
        return false;
}

static bool list_peers_monitor(const char *id, bool *ret) {
        Bus__ListPeersRequest req = BUS__LIST_PEERS_REQUEST__INIT;
        Bus__ListPeersReply *rep = NULL;
        bool found = false;

        if (bus_client_call_protobuf(driver, "bus", "ListPeers", &req.base,
                                     &bus__list_peers_reply__descriptor, WAIT_USEC, NULL,
                                     (ProtobufCMessage **) &rep) < 0)
                return false;
        for (size_t i = 0; i < rep->n_peers; i++)
                if (streq_null(rep->peers[i]->unique_id, id)) {
                        *ret = rep->peers[i]->monitor;
                        found = true;
                }
        bus__list_peers_reply__free_unpacked(rep, NULL);
        return found;
}

static void test_two_monitors(void) {
        Bus__GetStatsReply *stats;
        bool is_monitor = false;
        Watcher a, b;
        char b_id[32];

        if (!wait_monitors(0) || !watcher_open(&a, NULL, NULL, NULL))
                return;
        if (!watcher_open(&b, NULL, NULL, NULL)) {
                watcher_close(&a);
                return;
        }
        snprintf(b_id, sizeof(b_id), "%s", b.id);
        publish("mon.two.end", "both");
        tap_check(watcher_wait(&a, &(Want){ .topic = "mon.two.end" }) >= 0);
        tap_check(watcher_wait(&b, &(Want){ .topic = "mon.two.end" }) >= 0);

        /* a saw b become a monitor; neither saw anything of its own. */
        tap_check(watcher_find(&a, &(Want){ .kind = BUS_KIND_REQUEST, .method = "BecomeMonitor",
                                            .sender = b_id }, 0) >= 0);
        tap_check(watcher_find(&a, &(Want){ .kind = BUS_KIND_REPLY, .sender = "bus",
                                            .destination = b_id }, 0) >= 0);
        tap_check(!copies_mention(&a, a.id));
        tap_check(!copies_mention(&b, b.id));
        tap_check(watcher_find(&b, &(Want){ .method = "BecomeMonitor" }, 0) < 0);

        stats = test_get_stats(driver, WAIT_USEC);
        if (tap_check(stats)) {
                tap_check_int(stats->monitors, 2);
                tap_check(stats->monitor_copies >= a.n + b.n);
                bus__get_stats_reply__free_unpacked(stats, NULL);
        }
        tap_check(list_peers_monitor(a.id, &is_monitor) && is_monitor);
        tap_check(list_peers_monitor(driver_id, &is_monitor) && !is_monitor);
        watcher_close(&b);
        watcher_close(&a);
        tap_check(wait_monitors(0));
}

/* ---- The broker's introspection. */

static bool file_set_has_message(const Google__Protobuf__FileDescriptorSet *set,
                                 const char *package, const char *name) {
        for (size_t i = 0; i < set->n_file; i++) {
                const Google__Protobuf__FileDescriptorProto *f = set->file[i];

                if (!streq_null(f->package, package))
                        continue;
                for (size_t j = 0; j < f->n_message_type; j++)
                        if (streq_null(f->message_type[j]->name, name))
                                return true;
        }
        return false;
}

static bool topic_type_is(const Bus__IntrospectReply *rep, const char *pattern, const char *type) {
        for (size_t i = 0; i < rep->n_topic_types; i++)
                if (streq_null(rep->topic_types[i]->pattern, pattern))
                        return streq_null(rep->topic_types[i]->type, type);
        return false;
}

static void test_introspect(void) {
        Bus__IntrospectRequest req = BUS__INTROSPECT_REQUEST__INIT;
        Google__Protobuf__FileDescriptorSet *set = NULL;
        Bus__IntrospectReply *rep = NULL;
        int r;

        r = bus_client_call_protobuf(driver, "bus", BUS_METHOD_INTROSPECT, &req.base,
                                     &bus__introspect_reply__descriptor, WAIT_USEC, NULL,
                                     (ProtobufCMessage **) &rep);
        if (!tap_check_int(r, 0))
                return;
        tap_check_int(rep->n_services, 1);
        tap_check(rep->n_services == 1 && streq_null(rep->services[0], "bus.Bus"));
        tap_check_int(rep->n_topic_types, 4);
        tap_check(topic_type_is(rep, "bus.peer.connected", "bus.PeerEvent"));
        tap_check(topic_type_is(rep, "bus.peer.disconnected", "bus.PeerEvent"));
        tap_check(topic_type_is(rep, "bus.peer.lagging", "bus.PeerLagging"));
        tap_check(topic_type_is(rep, "bus.name.>", "bus.NameOwnerChanged"));
        set = google__protobuf__file_descriptor_set__unpack(NULL, rep->file_descriptor_set.len,
                                                           rep->file_descriptor_set.data);
        if (tap_check(set)) {
                tap_check(file_set_has_message(set, "bus", "HelloRequest"));
                tap_check(file_set_has_message(set, "bus", "BecomeMonitorRequest"));
                tap_check(file_set_has_message(set, "bus", "NameOwnerChanged"));
                google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
        }
        bus__introspect_reply__free_unpacked(rep, NULL);

        /* The cached set is the same on the second call. */
        r = bus_client_call_protobuf(driver, "bus", BUS_METHOD_INTROSPECT, &req.base,
                                     &bus__introspect_reply__descriptor, WAIT_USEC, NULL,
                                     (ProtobufCMessage **) &rep);
        if (tap_check_int(r, 0)) {
                tap_check(rep->file_descriptor_set.len > 0);
                bus__introspect_reply__free_unpacked(rep, NULL);
        }
}

static void test_broker_exits_cleanly(void) {
        service_stop();
        driver = bus_client_unref(driver);
        test_busd_check_clean_exit(&busd);
}

int main(void) {
        tap_init();
        test_busd_start_or_bail(&busd, NULL);
        /* The service first: the test holds no connection while it forks it. */
        if (!service_start()) {
                printf("Bail out! the watched service did not start\n");
                test_busd_stop(&busd);
                return 1;
        }
        if (bus_client_open(&driver, busd.address) < 0 ||
            bus_client_get_unique_id(driver, &driver_id) < 0 || !lookup_service_id()) {
                printf("Bail out! cannot connect to the broker\n");
                test_busd_stop(&busd);
                return 1;
        }

        TAP_RUN(test_request_reply_publish);
        TAP_RUN(test_descriptors);
        TAP_RUN(test_broker_error);
        TAP_RUN(test_broker_events);
        TAP_RUN(test_shared_memory);
        TAP_RUN(test_topic_filter);
        TAP_RUN(test_name_filter);
        TAP_RUN(test_kind_filter);
        if (geteuid() == 0)
                TAP_RUN(test_unprivileged_refused);
        else
                tap_skip("test_unprivileged_refused", "needs root to switch to another uid");
        TAP_RUN(test_monitor_may_not_send);
        TAP_RUN(test_monitor_gives_up);
        TAP_RUN(test_monitor_not_reading);
        TAP_RUN(test_two_monitors);
        TAP_RUN(test_introspect);
        TAP_RUN(test_broker_exits_cleanly);
        return tap_done();
}
