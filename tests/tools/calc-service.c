/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * calc-service: serves example.Calc (tests/tools/calc.proto) on a bus name
 * through bus_client_bind_service(), as a real typed service for the tests
 * (test-service, test-busdctl.sh).
 *
 *   calc-service [--address ADDR] [--name NAME]
 *
 * Add answers a + b (wrapping like two's complement), Divide fails with
 * example.Calc.Error.DivByZero for a zero divisor, and Stats tells how many
 * calls it served, per method, and the last example.Reading published on
 * "example.readings.>", which it subscribes to and announces as that
 * topic's type. It runs until SIGTERM or SIGINT, then exits 0; it prints
 * only errors, to stderr.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <libbus/bus.h>

#include "tests/tools/calc.pb-c.h"

#define READINGS_PATTERN "example.readings.>"

typedef struct Calc {
        Example__Calc_Service service; /* first: invoke() hands us &service.base */
        uint64_t calls;
        uint64_t by_method[3];         /* by method index */
        Example__Reading *last_reading;
} Calc;

static void count_call(Calc *calc, unsigned method_index) {
        calc->calls++;
        if (method_index < sizeof(calc->by_method) / sizeof(calc->by_method[0]))
                calc->by_method[method_index]++;
}

static void calc_add(Example__Calc_Service *service, const Example__AddRequest *input,
                     Example__AddReply_Closure closure, void *closure_data) {
        Example__AddReply reply = EXAMPLE__ADD_REPLY__INIT;

        count_call((Calc *) service, 0);
        reply.sum = (int32_t) ((uint32_t) input->a + (uint32_t) input->b);
        closure(&reply, closure_data);
}

static void calc_divide(Example__Calc_Service *service, const Example__DivideRequest *input,
                        Example__DivideReply_Closure closure, void *closure_data) {
        Example__DivideReply reply = EXAMPLE__DIVIDE_REPLY__INIT;

        count_call((Calc *) service, 1);
        if (input->divisor == 0) {
                if (bus_service_return_error(closure_data, "example.Calc.Error.DivByZero",
                                             "division by zero") == -EINVAL)
                        closure(NULL, closure_data);
                return;
        }
        reply.quotient = input->dividend / input->divisor;
        closure(&reply, closure_data);
}

static void calc_stats(Example__Calc_Service *service, const Example__StatsRequest *input,
                       Example__StatsReply_Closure closure, void *closure_data) {
        Calc *calc = (Calc *) service;
        Example__StatsReply reply = EXAMPLE__STATS_REPLY__INIT;
        Example__StatsReply__ByMethodEntry entries[3], *list[3];
        const ProtobufCServiceDescriptor *desc = &example__calc__descriptor;

        count_call(calc, 2);
        reply.calls = calc->calls;
        /* In method name order, which protoc-c keeps an index of. */
        for (unsigned i = 0; i < desc->n_methods && i < 3; i++) {
                unsigned m = desc->method_indices_by_name[i];

                if (m >= 3 || calc->by_method[m] == 0)
                        continue;
                example__stats_reply__by_method_entry__init(&entries[reply.n_by_method]);
                entries[reply.n_by_method].key = (char *) desc->methods[m].name;
                entries[reply.n_by_method].value = calc->by_method[m];
                list[reply.n_by_method] = &entries[reply.n_by_method];
                reply.n_by_method++;
        }
        reply.by_method = list;
        reply.last_reading = calc->last_reading;
        closure(&reply, closure_data);
}

static int on_reading(bus_message *m, void *userdata) {
        Calc *calc = userdata;
        ProtobufCMessage *pb = NULL;
        int r;

        r = bus_message_read_protobuf(m, &example__reading__descriptor, &pb);
        if (r < 0) {
                fprintf(stderr, "calc-service: dropping a reading on %s: %s\n",
                        bus_message_get_topic(m), strerror(-r));
                return 0;
        }
        if (calc->last_reading)
                example__reading__free_unpacked(calc->last_reading, NULL);
        calc->last_reading = (Example__Reading *) pb;
        return 0;
}

static int usage(FILE *f, int status) {
        fprintf(f, "Usage: calc-service [--address ADDR] [--name NAME]\n"
                   "Serves example.Calc on NAME (default org.example.Calc) until SIGTERM.\n");
        return status;
}

static int poll_timeout_ms(bus_client *c) {
        struct timespec ts;
        uint64_t deadline, now, ms;

        if (bus_client_get_timeout(c, &deadline) < 0 || deadline == UINT64_MAX)
                return -1;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        now = (uint64_t) ts.tv_sec * BUS_USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
        if (deadline <= now)
                return 0;
        ms = (deadline - now + 999) / 1000;
        return ms > 60000 ? 60000 : (int) ms;
}

/* Serves until a signal arrives on sfd (returns 0) or the connection fails. */
static int serve(bus_client *c, int sfd) {
        for (;;) {
                struct pollfd p[2];
                int r;

                r = bus_client_process(c);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;
                p[0] = (struct pollfd){ .fd = bus_client_get_fd(c),
                                        .events = (short) bus_client_get_events(c) };
                p[1] = (struct pollfd){ .fd = sfd, .events = POLLIN };
                if (p[0].fd < 0)
                        return p[0].fd;
                r = poll(p, 2, poll_timeout_ms(c));
                if (r < 0 && errno != EINTR)
                        return -errno;
                if (r > 0 && (p[1].revents & POLLIN))
                        return 0;
        }
}

static int run(const char *address, const char *name, int sfd) {
        Calc calc = { .service = EXAMPLE__CALC__INIT(calc_) };
        bus_client *c = NULL;
        const char *step;
        int r;

        step = "connecting";
        r = bus_client_open(&c, address);
        if (r >= 0) {
                /* Before taking the name, so a caller that found the name
                 * also finds the subscription. */
                step = "subscribing to " READINGS_PATTERN;
                r = bus_client_subscribe(c, NULL, READINGS_PATTERN, NULL, 0, on_reading, &calc);
        }
        if (r >= 0) {
                step = "announcing the readings' type";
                r = bus_client_add_type(c, READINGS_PATTERN, &example__reading__descriptor);
        }
        if (r >= 0) {
                step = "binding example.Calc";
                r = bus_client_bind_service(c, NULL, name, &calc.service.base);
        }
        if (r >= 0) {
                step = "requesting the name";
                r = bus_client_request_name(c, name, 0);
                if (r == BUS_NAME_EXISTS)
                        r = -EADDRINUSE;
        }
        if (r >= 0) {
                step = "serving";
                r = serve(c, sfd);
        }
        if (r < 0)
                fprintf(stderr, "calc-service: %s %s: %s\n", step, name, strerror(-r));
        bus_client_unref(c);
        if (calc.last_reading)
                example__reading__free_unpacked(calc.last_reading, NULL);
        return r < 0 ? 1 : 0;
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                { "address", required_argument, NULL, 'a' },
                { "name", required_argument, NULL, 'n' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        const char *address = NULL, *name = "org.example.Calc";
        sigset_t mask;
        int opt, sfd, r;

        while ((opt = getopt_long(argc, argv, "a:n:h", options, NULL)) >= 0)
                switch (opt) {
                case 'a':
                        address = optarg;
                        break;
                case 'n':
                        name = optarg;
                        break;
                case 'h':
                        return usage(stdout, 0);
                default:
                        return usage(stderr, 2);
                }
        if (optind < argc)
                return usage(stderr, 2);

        /* Signals arrive as input on a descriptor, polled with the bus. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0) {
                fprintf(stderr, "calc-service: sigprocmask: %m\n");
                return 1;
        }
        sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (sfd < 0) {
                fprintf(stderr, "calc-service: signalfd: %m\n");
                return 1;
        }
        r = run(address, name, sfd);
        close(sfd);
        return r;
}
