/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Integration test: typed services, client stubs and introspection through
 * a real busd.
 *
 * tests/tools/calc-service runs as a separate process serving example.Calc
 * on org.example.Calc; the test calls it through synchronous and
 * asynchronous stubs (protoc-c's generated example__calc__*() functions),
 * with raw requests that are not what the service expects, and asks it for
 * its introspection data. Services bound inside this process cover what
 * calc-service cannot show: implementations that complete later, fail, or
 * answer with the wrong type; requests without reply; binding twice and
 * unbinding. Finally plain clients answer introspection with what they
 * published, or with nothing.
 *
 * Every wait has a deadline and waits on a condition (a reply, an event,
 * a process exit), never on time alone.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <protobuf-c/protobuf-c.h>

#include <libbus/bus.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "proto/bus.pb-c.h"
#include "tests/lib/tap.h"
#include "tests/lib/util-busd.h"
#include "tests/tools/calc.pb-c.h"

#define CALC_NAME "org.example.Calc"
#define CHILD_TIMEOUT_MS 10000
#define CALL_TIMEOUT (10 * BUS_USEC_PER_SEC)
#define PUMP_TIMEOUT (15 * BUS_USEC_PER_SEC)

static TestBusd busd;
static pid_t calc_pid = -1;

static uint64_t mono_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * BUS_USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

/* Processes the clients until *done, or fails at the deadline: the way to
 * let a caller and a service in this one process talk. */
static bool pump(bus_client *const *clients, size_t n, const bool *done) {
        uint64_t deadline = mono_usec() + PUMP_TIMEOUT;

        while (!*done) {
                struct pollfd p[4];
                uint64_t wake = deadline, now;
                bool busy = false;
                int timeout_ms;

                assert(n <= 4);
                for (size_t i = 0; i < n; i++) {
                        int r = bus_client_process(clients[i]);

                        if (r < 0) {
                                tap_diag("bus_client_process: %s", strerror(-r));
                                return false;
                        }
                        busy |= r > 0;
                }
                if (*done)
                        break;
                if (busy)
                        continue;
                now = mono_usec();
                if (now >= deadline) {
                        tap_diag("timed out waiting");
                        return false;
                }
                for (size_t i = 0; i < n; i++) {
                        uint64_t t;

                        p[i] = (struct pollfd){
                                .fd = bus_client_get_fd(clients[i]),
                                .events = (short) bus_client_get_events(clients[i]),
                        };
                        if (bus_client_get_timeout(clients[i], &t) >= 0 && t < wake)
                                wake = t;
                }
                timeout_ms = wake > now ? (int) ((wake - now + 999) / 1000) : 0;
                (void) poll(p, n, timeout_ms);
        }
        return true;
}

/* ---- Answers to raw calls. */

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

/* Sends request from clients[0] and pumps all clients until the answer. */
static bus_message *call_pumping(bus_client *const *clients, size_t n, bus_message *request) {
        Answer a = {};

        if (!tap_check_int(bus_client_call_async(clients[0], NULL, request, answer_cb, &a,
                                                 CALL_TIMEOUT),
                           0))
                return NULL;
        tap_check(pump(clients, n, &a.done));
        return a.m;
}

static bus_message *new_request(const char *destination, const char *method,
                                const ProtobufCMessage *pb) {
        bus_message *m = NULL;

        assert(bus_message_new_request(&m, destination, method) >= 0);
        if (pb)
                assert(bus_message_set_protobuf(m, pb) >= 0);
        return m;
}

/* Checks that m is an ERROR of this name and errno. */
static void check_error(bus_message *m, const char *name, int expected_errno) {
        bus_error e = BUS_ERROR_NULL;

        if (!tap_check(m))
                return;
        tap_check_int(bus_message_get_error(m, &e), expected_errno);
        if (!tap_check(bus_error_has_name(&e, name)))
                tap_diag("got %s: %s, expected %s", e.name ?: "(none)", e.message ?: "", name);
        bus_error_free(&e);
}

/* ---- Closures of stub calls. */

typedef struct Result {
        unsigned calls;
        bool done;                  /* calls > 0, for pump() */
        bool got_null;
        int32_t sum;
        double quotient;
        Example__StatsReply *stats; /* a copy */
        int error_errno;            /* what bus_service_stub_get_error() said in the closure */
        char error_name[128];
        ProtobufCService *stub;
} Result;

static void result_error(Result *res) {
        bus_error e = BUS_ERROR_NULL;

        res->done = true;
        res->error_errno = bus_service_stub_get_error(res->stub, &e);
        snprintf(res->error_name, sizeof(res->error_name), "%s", e.name ?: "");
        bus_error_free(&e);
}

static void add_done(const Example__AddReply *reply, void *data) {
        Result *res = data;

        res->calls++;
        res->got_null = !reply;
        if (reply)
                res->sum = reply->sum;
        result_error(res);
}

static void divide_done(const Example__DivideReply *reply, void *data) {
        Result *res = data;

        res->calls++;
        res->got_null = !reply;
        if (reply)
                res->quotient = reply->quotient;
        result_error(res);
}

static void stats_done(const Example__StatsReply *reply, void *data) {
        Result *res = data;
        uint8_t buf[4096];
        size_t size;

        res->calls++;
        res->got_null = !reply;
        if (reply) {
                /* The reply is gone after the closure: keep a copy. */
                size = example__stats_reply__get_packed_size(reply);
                if (size <= sizeof(buf)) {
                        example__stats_reply__pack(reply, buf);
                        res->stats = example__stats_reply__unpack(NULL, size, buf);
                }
        }
        result_error(res);
}

/* ---- calc-service. */

static int calc_exec(void *arg) {
        const char *dir = getenv("BUSD_BUILDDIR");
        char path[4096];

        snprintf(path, sizeof(path), "%s/tests/tools/calc-service", dir ?: ".");
        execl(path, path, "--address", busd.address, "--name", CALC_NAME, (char *) NULL);
        printf("# cannot run %s: %m\n", path);
        return 127;
}

static int owner_changed(bus_message *m, void *userdata) {
        *(bool *) userdata = true;
        return 0;
}

static void test_calc_service_starts(void) {
        bus_client *c = NULL;
        bus_slot *sub = NULL;
        bool changed = false;

        tap_check_int(bus_client_open(&c, busd.address), 0);
        if (!c)
                return;
        /* Subscribed first, so the name's announcement cannot be missed. */
        tap_check_int(bus_client_subscribe(c, &sub, "bus.name." CALC_NAME, NULL, 0, owner_changed,
                                           &changed),
                      0);
        calc_pid = test_child_start(calc_exec, NULL);
        tap_check(calc_pid > 0);
        if (calc_pid > 0)
                tap_check(pump(&c, 1, &changed));
        bus_slot_unref(sub);
        bus_client_unref(c);
}

static void test_sync_stub(void) {
        Example__AddRequest add = EXAMPLE__ADD_REQUEST__INIT;
        Example__DivideRequest div = EXAMPLE__DIVIDE_REQUEST__INIT;
        ProtobufCService *stub = NULL;
        bus_client *c = NULL;
        Result res = {};

        tap_check_int(bus_client_open(&c, busd.address), 0);
        if (!c)
                return;
        tap_check_int(bus_client_new_service_stub(c, CALC_NAME, &example__calc__descriptor, 0,
                                                  &stub),
                      0);
        if (!stub)
                goto finish;
        res.stub = stub;
        add.a = 2;
        add.b = 40;
        example__calc__add(stub, &add, add_done, &res);
        /* Synchronous: done before the call returned. */
        tap_check_int(res.calls, 1);
        tap_check(!res.got_null);
        tap_check_int(res.sum, 42);
        tap_check_int(res.error_errno, 0);
        tap_check_int(bus_service_stub_get_error(stub, NULL), 0);

        add.a = INT32_MAX;
        add.b = 1;
        example__calc__add(stub, &add, add_done, &res);
        tap_check_int(res.calls, 2);
        tap_check_int(res.sum, INT32_MIN);

        div.dividend = 1;
        div.divisor = 4;
        example__calc__divide(stub, &div, divide_done, &res);
        tap_check_int(res.calls, 3);
        tap_check(!res.got_null && res.quotient == 0.25);
finish:
        if (stub)
                protobuf_c_service_destroy(stub);
        bus_client_unref(c);
}

static void test_divide_by_zero(void) {
        Example__DivideRequest div = EXAMPLE__DIVIDE_REQUEST__INIT;
        Example__AddRequest add = EXAMPLE__ADD_REQUEST__INIT;
        ProtobufCService *stub = NULL;
        bus_client *c = NULL;
        bus_error e = BUS_ERROR_NULL;
        Result res = {};

        tap_check_int(bus_client_open(&c, busd.address), 0);
        if (!c)
                return;
        tap_check_int(bus_client_new_service_stub(c, CALC_NAME, &example__calc__descriptor, 0,
                                                  &stub),
                      0);
        if (!stub)
                goto finish;
        res.stub = stub;
        div.dividend = 1;
        example__calc__divide(stub, &div, divide_done, &res);
        tap_check_int(res.calls, 1);
        tap_check(res.got_null);
        /* Known in the closure already, and afterwards. */
        tap_check_int(res.error_errno, -EREMOTEIO);
        tap_check(strcmp(res.error_name, "example.Calc.Error.DivByZero") == 0);
        tap_check_int(bus_service_stub_get_error(stub, &e), -EREMOTEIO);
        tap_check(bus_error_has_name(&e, "example.Calc.Error.DivByZero"));
        tap_check(e.message && strcmp(e.message, "division by zero") == 0);
        bus_error_free(&e);

        /* The next call that succeeds clears it. */
        add.a = 1;
        example__calc__add(stub, &add, add_done, &res);
        tap_check_int(res.calls, 2);
        tap_check_int(bus_service_stub_get_error(stub, &e), 0);
        tap_check(!bus_error_is_set(&e));
finish:
        if (stub)
                protobuf_c_service_destroy(stub);
        bus_client_unref(c);
}

static void test_async_stub(void) {
        Example__AddRequest add = EXAMPLE__ADD_REQUEST__INIT;
        ProtobufCService *stub = NULL;
        bus_client *c = NULL;
        Result res = {}, cancelled = {};

        tap_check_int(bus_client_open(&c, busd.address), 0);
        if (!c)
                return;
        tap_check_int(bus_client_new_service_stub(c, CALC_NAME, &example__calc__descriptor,
                                                  BUS_STUB_ASYNC, &stub),
                      0);
        if (!stub)
                goto finish;
        res.stub = cancelled.stub = stub;
        add.a = 20;
        add.b = 22;
        example__calc__add(stub, &add, add_done, &res);
        tap_check_int(res.calls, 0);
        /* Completes from bus_client_process(). */
        tap_check(pump(&c, 1, &res.done));
        tap_check_int(res.calls, 1);
        tap_check(!res.got_null);
        tap_check_int(res.sum, 42);
        tap_check_int(res.error_errno, 0);

        /* Destroying the stub completes what is in flight, with NULL. */
        example__calc__add(stub, &add, add_done, &cancelled);
        tap_check_int(cancelled.calls, 0);
        protobuf_c_service_destroy(stub);
        stub = NULL;
        tap_check_int(cancelled.calls, 1);
        tap_check(cancelled.got_null);
        tap_check_int(cancelled.error_errno, -ECANCELED);
        /* The service answers it all the same: once a call sent after it
         * is answered, so is it (FIFO), and its reply finds nothing to run. */
        tap_check_int(bus_client_call_method(c, CALC_NAME, "Multiply", NULL, 0, CALL_TIMEOUT,
                                             NULL, NULL),
                      -EBADRQC);
        while (bus_client_process(c) > 0)
                ;
        tap_check_int(cancelled.calls, 1);
finish:
        if (stub)
                protobuf_c_service_destroy(stub);
        bus_client_unref(c);
}

static void test_stub_arguments(void) {
        const ProtobufCServiceDescriptor *not_a_service =
                (const void *) &example__add_request__descriptor;
        ProtobufCService *stub = NULL;
        bus_client *c = NULL;

        tap_check_int(bus_client_new(&c), 0);
        tap_check_int(bus_client_new_service_stub(NULL, CALC_NAME, &example__calc__descriptor, 0,
                                                  &stub),
                      -EINVAL);
        tap_check_int(bus_client_new_service_stub(c, "no name", &example__calc__descriptor, 0,
                                                  &stub),
                      -EINVAL);
        tap_check_int(bus_client_new_service_stub(c, CALC_NAME, not_a_service, 0, &stub),
                      -EINVAL);
        tap_check_int(bus_client_new_service_stub(c, CALC_NAME, &example__calc__descriptor,
                                                  UINT64_C(1) << 40, &stub),
                      -EINVAL);
        tap_check(!stub);
        tap_check_int(bus_service_stub_get_error(NULL, NULL), -EINVAL);

        /* An unconnected client: the call fails at once, with NULL. */
        tap_check_int(bus_client_new_service_stub(c, CALC_NAME, &example__calc__descriptor, 0,
                                                  &stub),
                      0);
        if (stub) {
                Example__AddRequest add = EXAMPLE__ADD_REQUEST__INIT;
                Result res = { .stub = stub };

                example__calc__add(stub, &add, add_done, &res);
                tap_check_int(res.calls, 1);
                tap_check(res.got_null);
                tap_check(res.error_errno < 0);
                tap_check(strcmp(res.error_name, BUS_ERROR_DISCONNECTED) == 0);
                protobuf_c_service_destroy(stub);
        }
        bus_client_unref(c);
}

static void test_unknown_method(void) {
        bus_client *c = NULL;
        bus_error e = BUS_ERROR_NULL;

        tap_check_int(bus_client_open(&c, busd.address), 0);
        if (!c)
                return;
        tap_check_int(bus_client_call_method(c, CALC_NAME, "Multiply", NULL, 0, CALL_TIMEOUT, &e,
                                             NULL),
                      -EBADRQC);
        tap_check(bus_error_has_name(&e, BUS_ERROR_UNKNOWN_METHOD));
        bus_error_free(&e);
        bus_client_unref(c);
}

static void test_invalid_args(void) {
        static const uint8_t garbage[] = { 0x08, 0xff }; /* a varint cut short */
        Example__DivideRequest div = EXAMPLE__DIVIDE_REQUEST__INIT;
        bus_client *c = NULL;
        bus_error e = BUS_ERROR_NULL;
        bus_message *m;

        tap_check_int(bus_client_open(&c, busd.address), 0);
        if (!c)
                return;
        tap_check_int(bus_client_call_method(c, CALC_NAME, "Add", garbage, sizeof(garbage),
                                             CALL_TIMEOUT, &e, NULL),
                      -EINVAL);
        tap_check(bus_error_has_name(&e, BUS_ERROR_INVALID_ARGS));
        bus_error_free(&e);

        /* Well formed, but named as another type than Add's. */
        m = new_request(CALC_NAME, "Add", &div.base);
        tap_check_int(bus_client_call(c, m, CALL_TIMEOUT, &e, NULL), -EINVAL);
        tap_check(bus_error_has_name(&e, BUS_ERROR_INVALID_ARGS));
        bus_error_free(&e);
        bus_message_unref(m);
        bus_client_unref(c);
}

static void test_stats(void) {
        Example__Reading reading = EXAMPLE__READING__INIT;
        Example__StatsRequest req = EXAMPLE__STATS_REQUEST__INIT;
        char *tags[] = { (char *) "indoor" };
        ProtobufCService *stub = NULL;
        bus_client *c = NULL;
        Result res = {};

        tap_check_int(bus_client_open(&c, busd.address), 0);
        if (!c)
                return;
        reading.sensor = (char *) "kitchen";
        reading.value = 21.5;
        reading.unit = EXAMPLE__UNIT__UNIT_CELSIUS;
        reading.n_tags = 1;
        reading.tags = tags;
        /* Delivered before the call that follows: FIFO per sender. */
        tap_check_int(bus_client_publish_protobuf(c, "example.readings.kitchen", &reading.base, 0),
                      0);
        tap_check_int(bus_client_new_service_stub(c, CALC_NAME, &example__calc__descriptor, 0,
                                                  &stub),
                      0);
        if (!stub)
                goto finish;
        res.stub = stub;
        example__calc__stats(stub, &req, stats_done, &res);
        tap_check_int(res.calls, 1);
        if (tap_check(res.stats)) {
                Example__StatsReply *s = res.stats;
                uint64_t total = 0, stats = 0, add = 0, divide = 0;

                for (size_t i = 0; i < s->n_by_method; i++) {
                        total += s->by_method[i]->value;
                        if (strcmp(s->by_method[i]->key, "Stats") == 0)
                                stats = s->by_method[i]->value;
                        if (strcmp(s->by_method[i]->key, "Add") == 0)
                                add = s->by_method[i]->value;
                        if (strcmp(s->by_method[i]->key, "Divide") == 0)
                                divide = s->by_method[i]->value;
                }
                /* What the tests above called (requests that did not
                 * decode never reached the service), and this one. */
                tap_check_int(s->calls, 8);
                tap_check_int(total, s->calls);
                tap_check_int(add, 5);
                tap_check_int(divide, 2);
                tap_check_int(stats, 1);
                if (tap_check(s->last_reading)) {
                        tap_check(strcmp(s->last_reading->sensor, "kitchen") == 0);
                        tap_check(s->last_reading->value == 21.5);
                        tap_check_int(s->last_reading->unit, EXAMPLE__UNIT__UNIT_CELSIUS);
                        tap_check(s->last_reading->n_tags == 1 &&
                                  strcmp(s->last_reading->tags[0], "indoor") == 0);
                }
                example__stats_reply__free_unpacked(s, NULL);
        }
finish:
        if (stub)
                protobuf_c_service_destroy(stub);
        bus_client_unref(c);
}

/* ---- Introspection. */

static Bus__IntrospectReply *introspect_reply(bus_message *m) {
        ProtobufCMessage *pb = NULL;

        if (!tap_check(m) || !tap_check_int(bus_message_get_kind(m), BUS_KIND_REPLY))
                return NULL;
        tap_check(strcmp(bus_message_get_payload_type(m) ?: "", "bus.IntrospectReply") == 0);
        tap_check_int(bus_message_read_protobuf(m, &bus__introspect_reply__descriptor, &pb), 0);
        return (Bus__IntrospectReply *) pb;
}

static bus_message *introspect_pumping(bus_client *const *clients, size_t n,
                                       const char *destination) {
        Bus__IntrospectRequest req = BUS__INTROSPECT_REQUEST__INIT;
        bus_message *m = new_request(destination, BUS_METHOD_INTROSPECT, &req.base);
        bus_message *answer = call_pumping(clients, n, m);

        bus_message_unref(m);
        return answer;
}

static bool has_topic_type(const Bus__IntrospectReply *r, const char *pattern, const char *type) {
        for (size_t i = 0; i < r->n_topic_types; i++)
                if (strcmp(r->topic_types[i]->pattern, pattern) == 0 &&
                    strcmp(r->topic_types[i]->type, type) == 0)
                        return true;
        return false;
}

typedef Google__Protobuf__FileDescriptorSet FileSet;

static const Google__Protobuf__FileDescriptorProto *fds_file(const FileSet *fs,
                                                            const char *package) {
        for (size_t i = 0; fs && i < fs->n_file; i++)
                if (fs->file[i]->package && strcmp(fs->file[i]->package, package) == 0)
                        return fs->file[i];
        return NULL;
}

static const Google__Protobuf__DescriptorProto *fds_message(
        const Google__Protobuf__FileDescriptorProto *f, const char *name) {
        for (size_t i = 0; f && i < f->n_message_type; i++)
                if (strcmp(f->message_type[i]->name, name) == 0)
                        return f->message_type[i];
        return NULL;
}

static void test_introspect_calc(void) {
        Bus__IntrospectRequest req = BUS__INTROSPECT_REQUEST__INIT;
        Bus__IntrospectReply *reply = NULL;
        bus_client *c = NULL;
        bus_error e = BUS_ERROR_NULL;
        FileSet *fs = NULL;
        const Google__Protobuf__FileDescriptorProto *f;
        const Google__Protobuf__DescriptorProto *stats;
        int r;

        tap_check_int(bus_client_open(&c, busd.address), 0);
        if (!c)
                return;
        r = bus_client_call_protobuf(c, CALC_NAME, BUS_METHOD_INTROSPECT, &req.base,
                                     &bus__introspect_reply__descriptor, CALL_TIMEOUT, &e,
                                     (ProtobufCMessage **) &reply);
        if (!tap_check_int(r, 0)) {
                tap_diag("%s: %s", e.name ?: "", e.message ?: "");
                goto finish;
        }
        tap_check(reply->n_services == 1 && strcmp(reply->services[0], "example.Calc") == 0);
        tap_check(has_topic_type(reply, "example.readings.>", "example.Reading"));
        fs = google__protobuf__file_descriptor_set__unpack(NULL, reply->file_descriptor_set.len,
                                                           reply->file_descriptor_set.data);
        if (!tap_check(fs))
                goto finish;
        f = fds_file(fs, "example");
        if (!tap_check(f))
                goto finish;
        tap_check(fds_message(f, "AddRequest"));
        tap_check(fds_message(f, "AddReply"));
        tap_check(fds_message(f, "DivideRequest"));
        tap_check(fds_message(f, "Reading"));
        stats = fds_message(f, "StatsReply");
        tap_check(stats && stats->n_nested_type == 1 && stats->nested_type[0]->options &&
                  stats->nested_type[0]->options->map_entry);
        tap_check(f->n_enum_type == 1 && strcmp(f->enum_type[0]->name, "Unit") == 0);
        tap_check(f->n_service == 1 && strcmp(f->service[0]->name, "Calc") == 0 &&
                  f->service[0]->n_method == 3);
finish:
        if (fs)
                google__protobuf__file_descriptor_set__free_unpacked(fs, NULL);
        if (reply)
                bus__introspect_reply__free_unpacked(reply, NULL);
        bus_error_free(&e);
        bus_client_unref(c);
}

static void test_introspect_publisher(void) {
        Example__Reading reading = EXAMPLE__READING__INIT;
        bus_client *clients[2] = {};
        Bus__IntrospectReply *reply = NULL;
        bus_message *answer;
        const char *id = NULL;
        FileSet *fs = NULL;
        const Google__Protobuf__FileDescriptorProto *f;

        tap_check_int(bus_client_open(&clients[0], busd.address), 0);
        tap_check_int(bus_client_open(&clients[1], busd.address), 0);
        if (!clients[0] || !clients[1])
                goto finish;
        tap_check_int(bus_client_get_unique_id(clients[1], &id), 0);
        reading.sensor = (char *) "x";
        tap_check_int(bus_client_publish_protobuf(clients[1], "example.readings.x", &reading.base,
                                                  0),
                      0);
        tap_check_int(bus_client_publish_protobuf(clients[1], "example.readings.x", &reading.base,
                                                  0),
                      0);
        tap_check_int(bus_client_publish_protobuf(clients[1], "example.readings.a", &reading.base,
                                                  0),
                      0);
        /* Asked twice: the first answer must not show up in the second. */
        answer = introspect_pumping(clients, 2, id);
        bus_message_unref(answer);
        answer = introspect_pumping(clients, 2, id);
        reply = introspect_reply(answer);
        bus_message_unref(answer);
        if (!reply)
                goto finish;
        tap_check_int(reply->n_services, 0);
        /* Each topic once, in order. */
        if (tap_check_int(reply->n_topic_types, 2)) {
                tap_check(strcmp(reply->topic_types[0]->pattern, "example.readings.a") == 0);
                tap_check(strcmp(reply->topic_types[1]->pattern, "example.readings.x") == 0);
        }
        tap_check(has_topic_type(reply, "example.readings.x", "example.Reading"));
        fs = google__protobuf__file_descriptor_set__unpack(NULL, reply->file_descriptor_set.len,
                                                           reply->file_descriptor_set.data);
        f = fds_file(fs, "example");
        if (tap_check(f)) {
                tap_check(fds_message(f, "Reading"));
                tap_check(f->n_enum_type == 1);
                tap_check(!fds_message(f, "AddRequest"));
                tap_check_int(f->n_service, 0);
        }
        /* bus.IntrospectReply is not among the types spoken. */
        if (fs)
                tap_check_int(fs->n_file, 1);
finish:
        if (fs)
                google__protobuf__file_descriptor_set__free_unpacked(fs, NULL);
        if (reply)
                bus__introspect_reply__free_unpacked(reply, NULL);
        bus_client_unref(clients[0]);
        bus_client_unref(clients[1]);
}

/* A caller speaks the types of the typed requests it sends to services,
 * not those of libbus's own calls to the broker. */
static void test_introspect_caller(void) {
        Example__AddRequest add = EXAMPLE__ADD_REQUEST__INIT;
        bus_client *clients[2] = {};
        Bus__IntrospectReply *reply = NULL;
        ProtobufCMessage *sum = NULL;
        bus_message *answer;
        const char *id = NULL;
        FileSet *fs = NULL;
        const Google__Protobuf__FileDescriptorProto *f;

        tap_check_int(bus_client_open(&clients[0], busd.address), 0);
        tap_check_int(bus_client_open(&clients[1], busd.address), 0);
        if (!clients[0] || !clients[1])
                goto finish;
        tap_check_int(bus_client_get_unique_id(clients[1], &id), 0);
        add.a = 1;
        add.b = 2;
        tap_check_int(bus_client_call_protobuf(clients[1], CALC_NAME, "Add", &add.base,
                                               &example__add_reply__descriptor, 0, NULL, &sum),
                      0);
        tap_check(sum && ((Example__AddReply *) sum)->sum == 3);
        answer = introspect_pumping(clients, 2, id);
        reply = introspect_reply(answer);
        bus_message_unref(answer);
        if (!reply)
                goto finish;
        tap_check_int(reply->n_topic_types, 0); /* a request has no topic */
        fs = google__protobuf__file_descriptor_set__unpack(NULL, reply->file_descriptor_set.len,
                                                           reply->file_descriptor_set.data);
        f = fds_file(fs, "example");
        tap_check(f && fds_message(f, "AddRequest") && !fds_message(f, "AddReply"));
        tap_check(!fds_file(fs, "bus")); /* Hello, Subscribe, ... to the broker */
finish:
        if (fs)
                google__protobuf__file_descriptor_set__free_unpacked(fs, NULL);
        if (reply)
                bus__introspect_reply__free_unpacked(reply, NULL);
        if (sum)
                protobuf_c_message_free_unpacked(sum, NULL);
        bus_client_unref(clients[0]);
        bus_client_unref(clients[1]);
}

static int custom_introspect(bus_message *m, void *userdata) {
        return bus_client_reply(userdata, m, "custom", 6);
}

static int catch_all(bus_message *m, void *userdata) {
        return bus_client_reply(userdata, m, "any", 3);
}

static void test_introspect_fresh(void) {
        bus_client *clients[2] = {};
        Bus__IntrospectReply *reply = NULL;
        bus_message *answer;
        const char *id = NULL;
        const void *data;
        size_t size;

        tap_check_int(bus_client_open(&clients[0], busd.address), 0);
        tap_check_int(bus_client_open(&clients[1], busd.address), 0);
        if (!clients[0] || !clients[1])
                goto finish;
        tap_check_int(bus_client_get_unique_id(clients[1], &id), 0);
        answer = introspect_pumping(clients, 2, id);
        reply = introspect_reply(answer);
        bus_message_unref(answer);
        if (reply) {
                tap_check_int(reply->n_services, 0);
                tap_check_int(reply->n_topic_types, 0);
                tap_check_int(reply->file_descriptor_set.len, 0);
                bus__introspect_reply__free_unpacked(reply, NULL);
        }

        /* A handler for any method does not take it over... */
        tap_check_int(bus_client_add_method(clients[1], NULL, NULL, NULL, catch_all, clients[1]),
                      0);
        answer = introspect_pumping(clients, 2, id);
        reply = introspect_reply(answer);
        bus_message_unref(answer);
        if (reply)
                bus__introspect_reply__free_unpacked(reply, NULL);

        /* ... one for this very method does. */
        tap_check_int(bus_client_add_method(clients[1], NULL, NULL, BUS_METHOD_INTROSPECT,
                                            custom_introspect, clients[1]),
                      0);
        answer = introspect_pumping(clients, 2, id);
        tap_check(answer && bus_message_get_kind(answer) == BUS_KIND_REPLY &&
                  bus_message_get_payload(answer, &data, &size) >= 0 && size == 6 &&
                  memcmp(data, "custom", 6) == 0);
        bus_message_unref(answer);
finish:
        bus_client_unref(clients[0]);
        bus_client_unref(clients[1]);
}

static void test_add_type(void) {
        bus_client *c = NULL;

        tap_check_int(bus_client_new(&c), 0);
        tap_check_int(bus_client_add_type(NULL, NULL, &example__reading__descriptor), -EINVAL);
        tap_check_int(bus_client_add_type(c, NULL, NULL), -EINVAL);
        tap_check_int(bus_client_add_type(c, "a..b", &example__reading__descriptor), -EINVAL);
        tap_check_int(bus_client_add_type(c, "a.>.b", &example__reading__descriptor), -EINVAL);
        tap_check_int(bus_client_add_type(c, NULL, (const void *) &example__calc__descriptor),
                      -EINVAL);
        tap_check_int(bus_client_add_type(c, NULL, &example__reading__descriptor), 0);
        tap_check_int(bus_client_add_type(c, NULL, &example__reading__descriptor), 0);
        tap_check_int(bus_client_add_type(c, "a.*.c", &example__reading__descriptor), 0);
        tap_check_int(bus_client_add_type(c, "a.*.c", &example__reading__descriptor), 0);
        bus_client_unref(c);
}

/* ---- A service bound in this process. */

typedef struct Local {
        Example__Calc_Service service; /* first: invoke() hands us &service.base */
        unsigned invoked;
        bool defer;                    /* Add completes on a later turn */
        bool got_call;                 /* invoked > 0, for pump() */
        Example__AddReply_Closure pending;
        void *pending_data;
        int32_t pending_sum;
        bool request_ok;               /* bus_service_get_request() gave the request */
        int bad_name_result, null_data_result;
        const char *expect_sender;
} Local;

static void local_add(Example__Calc_Service *service, const Example__AddRequest *input,
                      Example__AddReply_Closure closure, void *closure_data) {
        Local *l = (Local *) service;
        Example__AddReply reply = EXAMPLE__ADD_REPLY__INIT;
        bus_message *m = bus_service_get_request(closure_data);

        l->invoked++;
        l->got_call = true;
        l->request_ok = m && strcmp(bus_message_get_method(m) ?: "", "Add") == 0 &&
                        (!l->expect_sender ||
                         strcmp(bus_message_get_sender(m) ?: "", l->expect_sender) == 0);
        if (l->defer) {
                l->pending = closure;
                l->pending_data = closure_data;
                l->pending_sum = input->a + input->b;
                return;
        }
        reply.sum = input->a + input->b;
        closure(&reply, closure_data);
}

/* Divide: 0 fails with NULL, a negative divisor answers the wrong type. */
static void local_divide(Example__Calc_Service *service, const Example__DivideRequest *input,
                         Example__DivideReply_Closure closure, void *closure_data) {
        Local *l = (Local *) service;
        Example__AddReply wrong = EXAMPLE__ADD_REPLY__INIT;
        Example__DivideReply reply = EXAMPLE__DIVIDE_REPLY__INIT;

        l->invoked++;
        if (input->divisor == 0)
                closure(NULL, closure_data);
        else if (input->divisor < 0)
                closure((const Example__DivideReply *) &wrong, closure_data);
        else {
                reply.quotient = input->dividend / input->divisor;
                closure(&reply, closure_data);
        }
}

/* Stats: an error of our own, after two that are refused. */
static void local_stats(Example__Calc_Service *service, const Example__StatsRequest *input,
                        Example__StatsReply_Closure closure, void *closure_data) {
        Local *l = (Local *) service;
        char not_ours[64] = {};

        l->invoked++;
        l->bad_name_result = bus_service_return_error(closure_data, "no..name", "x");
        l->null_data_result = bus_service_return_error(not_ours, "org.example.Local.Error.X",
                                                       "x");
        if (bus_service_get_request(not_ours) || bus_service_get_request(NULL))
                l->null_data_result = 1;
        (void) bus_service_return_error(closure_data, "org.example.Local.Error.Nope", "nope %d",
                                        7);
}

static void local_init(Local *l) {
        *l = (Local){ .service = EXAMPLE__CALC__INIT(local_) };
}

/* Calls method of the local service with pb, from clients[0], and pumps. */
static bus_message *local_call(bus_client *const *clients, const char *destination,
                               const char *method, const ProtobufCMessage *pb) {
        bus_message *m = new_request(destination, method, pb), *answer;

        answer = call_pumping(clients, 2, m);
        bus_message_unref(m);
        return answer;
}

static int32_t answer_sum(bus_message *m) {
        ProtobufCMessage *pb = NULL;
        int32_t sum;

        if (!tap_check(m) || !tap_check_int(bus_message_get_kind(m), BUS_KIND_REPLY) ||
            !tap_check_int(bus_message_read_protobuf(m, &example__add_reply__descriptor, &pb), 0))
                return INT32_MIN;
        sum = ((Example__AddReply *) pb)->sum;
        protobuf_c_message_free_unpacked(pb, NULL);
        return sum;
}

static void test_bind(void) {
        Example__AddRequest add = EXAMPLE__ADD_REQUEST__INIT;
        ProtobufCService not_a_service = {
                .descriptor = (const void *) &example__add_request__descriptor,
        };
        bus_client *clients[2] = {};
        bus_slot *slot = NULL, *named = NULL;
        const char *id = NULL;
        bus_message *answer;
        Local l, other;

        local_init(&l);
        local_init(&other);
        not_a_service.invoke = l.service.base.invoke;
        tap_check_int(bus_client_open(&clients[0], busd.address), 0);
        tap_check_int(bus_client_open(&clients[1], busd.address), 0);
        if (!clients[0] || !clients[1])
                goto finish;
        tap_check_int(bus_client_get_unique_id(clients[1], &id), 0);

        tap_check_int(bus_client_bind_service(NULL, NULL, NULL, &l.service.base), -EINVAL);
        tap_check_int(bus_client_bind_service(clients[1], NULL, NULL, NULL), -EINVAL);
        tap_check_int(bus_client_bind_service(clients[1], NULL, "bad name", &l.service.base),
                      -EINVAL);
        tap_check_int(bus_client_bind_service(clients[1], NULL, NULL, &not_a_service), -EINVAL);
        tap_check_int(bus_client_bind_service(clients[1], &slot, NULL, &l.service.base), 0);
        /* One service per name; NULL is a name of its own. */
        tap_check_int(bus_client_bind_service(clients[1], NULL, NULL, &other.service.base),
                      -EEXIST);
        tap_check_int(bus_client_bind_service(clients[1], &named, "org.example.Local",
                                              &other.service.base),
                      0);
        tap_check_int(bus_client_bind_service(clients[1], NULL, "org.example.Local",
                                              &l.service.base),
                      -EEXIST);

        add.a = 5;
        add.b = 6;
        l.expect_sender = NULL;
        answer = local_call(clients, id, "Add", &add.base);
        tap_check_int(answer_sum(answer), 11);
        bus_message_unref(answer);
        tap_check_int(l.invoked, 1);
        tap_check(l.request_ok);

        /* Unbound: an unknown method again; the service sees nothing. */
        slot = bus_slot_unref(slot);
        answer = local_call(clients, id, "Add", &add.base);
        check_error(answer, BUS_ERROR_UNKNOWN_METHOD, -EBADRQC);
        bus_message_unref(answer);
        tap_check_int(l.invoked, 1);
        tap_check_int(other.invoked, 0);
        /* And the name is free for a binding again. */
        tap_check_int(bus_client_bind_service(clients[1], &slot, NULL, &l.service.base), 0);
finish:
        bus_slot_unref(slot);
        bus_slot_unref(named);
        bus_client_unref(clients[0]);
        bus_client_unref(clients[1]);
}

static void test_local_failures(void) {
        Example__DivideRequest div = EXAMPLE__DIVIDE_REQUEST__INIT;
        Example__StatsRequest stats = EXAMPLE__STATS_REQUEST__INIT;
        bus_client *clients[2] = {};
        const char *id = NULL;
        bus_message *answer;
        bus_error e = BUS_ERROR_NULL;
        Local l;

        local_init(&l);
        tap_check_int(bus_client_open(&clients[0], busd.address), 0);
        tap_check_int(bus_client_open(&clients[1], busd.address), 0);
        if (!clients[0] || !clients[1])
                goto finish;
        tap_check_int(bus_client_get_unique_id(clients[1], &id), 0);
        /* Floating: lives as long as the connection. */
        tap_check_int(bus_client_bind_service(clients[1], NULL, NULL, &l.service.base), 0);

        div.dividend = 1;
        answer = local_call(clients, id, "Divide", &div.base);
        check_error(answer, BUS_ERROR_FAILED, -EREMOTEIO);
        if (answer && bus_message_get_error(answer, &e) < 0)
                tap_check(e.message && strcmp(e.message, "The method failed") == 0);
        bus_error_free(&e);
        bus_message_unref(answer);

        div.divisor = -1;
        answer = local_call(clients, id, "Divide", &div.base);
        check_error(answer, BUS_ERROR_FAILED, -EREMOTEIO);
        bus_message_unref(answer);

        div.divisor = 2;
        answer = local_call(clients, id, "Divide", &div.base);
        tap_check(answer && bus_message_get_kind(answer) == BUS_KIND_REPLY);
        bus_message_unref(answer);

        answer = local_call(clients, id, "Stats", &stats.base);
        check_error(answer, "org.example.Local.Error.Nope", -EREMOTEIO);
        if (answer && bus_message_get_error(answer, &e) < 0)
                tap_check(e.message && strcmp(e.message, "nope 7") == 0);
        bus_error_free(&e);
        bus_message_unref(answer);
        tap_check_int(l.bad_name_result, -EINVAL);
        tap_check_int(l.null_data_result, -EINVAL);
        tap_check_int(l.invoked, 4);
finish:
        bus_client_unref(clients[0]);
        bus_client_unref(clients[1]);
}

static void test_complete_later(void) {
        Example__AddRequest add = EXAMPLE__ADD_REQUEST__INIT;
        Example__AddReply reply = EXAMPLE__ADD_REPLY__INIT;
        ProtobufCService *stub = NULL;
        bus_client *clients[2] = {};
        const char *id = NULL, *caller = NULL;
        Result res = {};
        Local l;

        local_init(&l);
        l.defer = true;
        tap_check_int(bus_client_open(&clients[0], busd.address), 0);
        tap_check_int(bus_client_open(&clients[1], busd.address), 0);
        if (!clients[0] || !clients[1])
                goto finish;
        tap_check_int(bus_client_get_unique_id(clients[1], &id), 0);
        tap_check_int(bus_client_get_unique_id(clients[0], &caller), 0);
        l.expect_sender = caller;
        tap_check_int(bus_client_bind_service(clients[1], NULL, NULL, &l.service.base), 0);
        tap_check_int(bus_client_new_service_stub(clients[0], id, &example__calc__descriptor,
                                                  BUS_STUB_ASYNC, &stub),
                      0);
        if (!stub)
                goto finish;
        res.stub = stub;
        add.a = 40;
        add.b = 2;
        example__calc__add(stub, &add, add_done, &res);

        /* Invoked, but not answered: invoke() returned without completing. */
        tap_check(pump(clients, 2, &l.got_call));
        if (!tap_check_int(l.invoked, 1) || !tap_check(l.pending))
                goto finish;
        tap_check(l.request_ok);
        tap_check(bus_service_get_request(l.pending_data) != NULL);
        while (bus_client_process(clients[0]) > 0 || bus_client_process(clients[1]) > 0)
                ;
        tap_check_int(res.calls, 0);

        /* A later turn completes it; the caller is then answered. */
        reply.sum = l.pending_sum;
        l.pending(&reply, l.pending_data);
        l.pending = NULL;
        tap_check(pump(clients, 2, &res.done));
        tap_check_int(res.calls, 1);
        tap_check_int(res.sum, 42);
finish:
        if (stub)
                protobuf_c_service_destroy(stub);
        bus_client_unref(clients[0]);
        bus_client_unref(clients[1]);
}

static void test_no_reply(void) {
        Example__AddRequest add = EXAMPLE__ADD_REQUEST__INIT;
        bus_client *clients[2] = {};
        const char *id = NULL;
        bus_message *m, *answer;
        Local l;

        local_init(&l);
        tap_check_int(bus_client_open(&clients[0], busd.address), 0);
        tap_check_int(bus_client_open(&clients[1], busd.address), 0);
        if (!clients[0] || !clients[1])
                goto finish;
        tap_check_int(bus_client_get_unique_id(clients[1], &id), 0);
        tap_check_int(bus_client_bind_service(clients[1], NULL, NULL, &l.service.base), 0);
        /* Served, answered by nothing; the call after it still works. */
        add.a = 1;
        m = new_request(id, "Add", &add.base);
        tap_check_int(bus_message_set_no_reply(m, 1), 0);
        tap_check_int(bus_client_send(clients[0], m, NULL), 0);
        bus_message_unref(m);
        m = new_request(id, "Multiply", &add.base);
        tap_check_int(bus_message_set_no_reply(m, 1), 0);
        tap_check_int(bus_client_send(clients[0], m, NULL), 0);
        bus_message_unref(m);
        answer = local_call(clients, id, "Add", &add.base);
        tap_check_int(answer_sum(answer), 1);
        bus_message_unref(answer);
        tap_check_int(l.invoked, 2);
finish:
        bus_client_unref(clients[0]);
        bus_client_unref(clients[1]);
}

static void test_introspect_local(void) {
        bus_client *clients[2] = {};
        Bus__IntrospectReply *reply = NULL;
        bus_slot *slot = NULL;
        bus_message *answer;
        const char *id = NULL;
        Local l;

        local_init(&l);
        tap_check_int(bus_client_open(&clients[0], busd.address), 0);
        tap_check_int(bus_client_open(&clients[1], busd.address), 0);
        if (!clients[0] || !clients[1])
                goto finish;
        tap_check_int(bus_client_get_unique_id(clients[1], &id), 0);
        /* Bound on a name only: not listed for the unique id. */
        tap_check_int(bus_client_bind_service(clients[1], &slot, "org.example.Local",
                                              &l.service.base),
                      0);
        answer = introspect_pumping(clients, 2, id);
        reply = introspect_reply(answer);
        bus_message_unref(answer);
        if (reply) {
                tap_check_int(reply->n_services, 0);
                /* Its types are there all the same. */
                tap_check(reply->file_descriptor_set.len > 0);
                bus__introspect_reply__free_unpacked(reply, NULL);
        }
        slot = bus_slot_unref(slot);
        tap_check_int(bus_client_bind_service(clients[1], &slot, NULL, &l.service.base), 0);
        answer = introspect_pumping(clients, 2, id);
        reply = introspect_reply(answer);
        bus_message_unref(answer);
        if (reply) {
                tap_check(reply->n_services == 1 &&
                          strcmp(reply->services[0], "example.Calc") == 0);
                bus__introspect_reply__free_unpacked(reply, NULL);
        }
finish:
        bus_slot_unref(slot);
        bus_client_unref(clients[0]);
        bus_client_unref(clients[1]);
}

static void test_calc_service_stops(void) {
        if (!tap_check(calc_pid > 0))
                return;
        tap_check_int(kill(calc_pid, SIGTERM), 0);
        tap_check_int(test_child_wait(calc_pid, CHILD_TIMEOUT_MS), 0);
        calc_pid = -1;
}

static void test_broker_exits_cleanly(void) {
        test_busd_check_clean_exit(&busd);
}

int main(void) {
        tap_init();
        signal(SIGPIPE, SIG_IGN);
        test_busd_start_or_bail(&busd, NULL);
        TAP_RUN(test_calc_service_starts);
        TAP_RUN(test_sync_stub);
        TAP_RUN(test_divide_by_zero);
        TAP_RUN(test_async_stub);
        TAP_RUN(test_stub_arguments);
        TAP_RUN(test_unknown_method);
        TAP_RUN(test_invalid_args);
        TAP_RUN(test_stats);
        TAP_RUN(test_introspect_calc);
        TAP_RUN(test_introspect_publisher);
        TAP_RUN(test_introspect_fresh);
        TAP_RUN(test_introspect_caller);
        TAP_RUN(test_add_type);
        TAP_RUN(test_bind);
        TAP_RUN(test_local_failures);
        TAP_RUN(test_complete_later);
        TAP_RUN(test_no_reply);
        TAP_RUN(test_introspect_local);
        TAP_RUN(test_calc_service_stops);
        TAP_RUN(test_broker_exits_cleanly);
        return tap_done();
}
