/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * monitor: the connection becomes a monitor (bus.BecomeMonitor) with the
 * --topic, --name and --kind filters, and prints every copy decoded. A
 * monitor may send nothing, so the types of the messages it sees are looked
 * up over a second connection, whose own traffic is left out of the output.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libbus/topic.h"
#include "tools/busdctl/busdctl.h"

static volatile sig_atomic_t caught_signal;

static void on_signal(int sig) {
        caught_signal = sig;
}

void signals_catch(void) {
        /* No SA_RESTART: a blocked poll() returns EINTR and the loop ends. */
        struct sigaction sa = { .sa_handler = on_signal };
        sigemptyset(&sa.sa_mask);
        (void) sigaction(SIGINT, &sa, NULL);
        (void) sigaction(SIGTERM, &sa, NULL);
}

bool signals_caught(void) {
        return caught_signal != 0;
}

bool filters_match(const Ctl *ctl, const Busdctl__CapturedMessage *m) {
        if (ctl->n_kinds > 0) {
                bool found = false;
                for (size_t i = 0; i < ctl->n_kinds; i++)
                        found = found || ctl->kinds[i] == (int) m->kind;
                if (!found)
                        return false;
        }
        if (ctl->n_topics == 0 && ctl->n_names == 0)
                return true;
        for (size_t i = 0; m->kind == BUS__KIND__KIND_PUBLISH && i < ctl->n_topics; i++)
                if (topic_pattern_matches(ctl->topics[i], strlen(ctl->topics[i]), m->topic,
                                          strlen(m->topic)))
                        return true;
        for (size_t i = 0; i < ctl->n_names; i++)
                if (streq_ptr(ctl->names[i], m->sender) || streq_ptr(ctl->names[i], m->receiver) ||
                    streq_ptr(ctl->names[i], m->destination))
                        return true;
        return false;
}

typedef struct Monitor {
        Ctl *ctl;
        monitor_sink_fn sink;
        void *userdata;
        bus_client *lookup;
        const char *lookup_id; /* its traffic is ours, not the bus's */
        uint64_t seen;
        bool done;
        int error;
} Monitor;

static bool is_lookup_traffic(const Monitor *mon, const Busdctl__CapturedMessage *m) {
        return streq_ptr(m->sender, mon->lookup_id) || streq_ptr(m->receiver, mon->lookup_id) ||
               streq_ptr(m->destination, mon->lookup_id);
}

static int monitor_copy(bus_message *message, void *userdata) {
        Monitor *mon = userdata;
        Busdctl__CapturedMessage m;
        int r;

        if (mon->done)
                return 0;
        r = message_capture(message, &m);
        if (r < 0 || is_lookup_traffic(mon, &m))
                return 0;

        /* Who knows the type: for a request its receiver (the service), for
         * anything else its sender; then the other one. */
        bool request = m.kind == BUS__KIND__KIND_REQUEST;
        r = types_resolve(mon->ctl, mon->lookup, m.payload_type,
                          request ? m.receiver : m.sender, request ? m.sender : m.receiver);
        if (r < 0 && r != -ECONNRESET) {
                mon->error = r;
                mon->done = true;
                return 0;
        }
        r = mon->sink(mon->ctl, &m, mon->userdata);
        if (r < 0) {
                mon->error = r;
                mon->done = true;
        }
        mon->seen++;
        if (mon->ctl->count && mon->seen >= mon->ctl->count)
                mon->done = true;
        return 0;
}

int monitor_run(Ctl *ctl, monitor_sink_fn sink, void *userdata) {
        Monitor mon = { .ctl = ctl, .sink = sink, .userdata = userdata };
        bus_client *bus;
        int r;

        for (size_t i = 0; i < ctl->n_topics; i++)
                if (!topic_pattern_is_valid(ctl->topics[i], strlen(ctl->topics[i])))
                        return ctl_usage_error("bad --topic pattern: %s", ctl->topics[i]);
        for (size_t i = 0; i < ctl->n_names; i++)
                if (!name_is_valid_destination(ctl->names[i]))
                        return ctl_usage_error("bad --name: %s", ctl->names[i]);

        r = ctl_bus(ctl, &bus);
        if (r < 0)
                return EXIT_FAILED;
        r = ctl_open_extra(ctl, &mon.lookup);
        if (r < 0)
                return EXIT_FAILED;
        (void) bus_client_get_unique_id(mon.lookup, &mon.lookup_id);

        signals_catch();
        r = bus_client_become_monitor(bus, (const char *const *) ctl->topics,
                                      (const char *const *) ctl->names,
                                      ctl->n_kinds ? ctl->kinds : NULL, monitor_copy, &mon);
        if (r < 0) {
                if (r == -EACCES)
                        r = ctl_error(0, "not allowed to monitor this bus (only root and the "
                                         "broker's own user may)");
                else
                        r = ctl_error(r, "becoming a monitor");
                goto finish;
        }
        if (!ctl->quiet)
                fprintf(stderr, "busdctl: monitoring the bus\n");

        r = run_until(bus, mon.lookup, ctl->duration, &mon.done);
        if (r < 0)
                r = ctl_error(r, "the connection to the bus was lost");
        else if (mon.error)
                r = ctl_error(mon.error, "writing");
finish:
        bus_client_unref(mon.lookup);
        return r;
}

static int print_sink(Ctl *ctl, const Busdctl__CapturedMessage *m, void *userdata) {
        return message_output(ctl, m);
}

int cmd_monitor(Ctl *ctl, int argc, char **argv) {
        return monitor_run(ctl, print_sink, NULL);
}
