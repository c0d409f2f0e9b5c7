/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * pub and sub. A JSON payload is encoded with the type given by --type or,
 * failing that, the type a peer announces for the topic (bus.Introspect
 * topic_types); received messages are decoded with their sender's types.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <systemd/sd-event.h>

#include "libbus/topic.h"
#include "tools/busdctl/busdctl.h"

int cmd_pub(Ctl *ctl, int argc, char **argv) {
        _cleanup_(bus_message_unrefp) bus_message *m = NULL;
        _cleanup_free_ uint8_t *payload = NULL;
        const char *topic = argv[1], *json = argc > 2 ? argv[2] : NULL;
        const char *type = ctl->type;
        size_t size = 0;
        bus_client *bus;
        int r;

        r = bus_message_new_publish(&m, topic);
        if (r < 0)
                return ctl_usage_error("bad topic: %s%s", topic,
                                       topic_is_reserved(topic, strlen(topic))
                                               ? " (bus.* is the broker's)"
                                               : "");
        bool raw = ctl->raw || ctl->file;
        if (raw && json)
                return ctl_usage_error("give the payload as JSON, --raw or --file, not two");

        r = ctl_bus(ctl, &bus);
        if (r < 0)
                return EXIT_FAILED;

        if (raw) {
                r = raw_payload(ctl, &payload, &size);
                if (r < 0)
                        return EXIT_FAILED;
        } else if (json) {
                if (!type)
                        type = types_for_topic(ctl, bus, topic);
                if (!type)
                        return ctl_usage_error("no peer announces a type for %s: give --type "
                                               "TYPE (and --descriptors FILE if no peer knows it)",
                                               topic);
                r = types_resolve(ctl, bus, type, NULL, NULL);
                if (r == 0)
                        return ctl_usage_error("unknown protobuf type %s: no peer describes it "
                                               "(give --descriptors FILE)", type);
                r = encode_json_payload(ctl, type, json, &payload, &size);
                if (r < 0)
                        return r == -EINVAL || r == -ENOENT ? EXIT_USAGE : EXIT_FAILED;
        }

        r = bus_message_set_payload(m, payload, size);
        if (r >= 0 && type)
                r = bus_message_set_payload_type(m, type);
        if (r >= 0 && ctl->retain)
                r = bus_message_set_retain(m, 1);
        if (r >= 0)
                r = bus_client_send(bus, m, NULL);
        if (r >= 0)
                r = bus_client_flush(bus);
        if (r < 0)
                return ctl_error(r, "publishing on %s", topic);
        return 0;
}

typedef struct Sub {
        Ctl *ctl;
        bus_client *lookup; /* for bus.Introspect */
        uint64_t received;
        bool done;
        int error;
} Sub;

static int sub_print(Sub *s, bus_message *m) {
        Busdctl__CapturedMessage cm;
        Ctl *ctl = s->ctl;
        int r;

        r = message_capture(m, &cm);
        if (r < 0)
                return r;
        r = types_resolve(ctl, s->lookup, cm.payload_type, cm.sender, NULL);
        if (r == -ECONNRESET)
                return r;
        return message_output(ctl, &cm);
}

static int sub_message(bus_message *m, void *userdata) {
        Sub *s = userdata;
        int r;

        if (s->done)
                return 0;
        s->received++;
        r = sub_print(s, m);
        if (r < 0) {
                s->error = r;
                s->done = true;
        }
        if (s->ctl->count && s->received >= s->ctl->count)
                s->done = true;
        return 0;
}

static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

int run_until(bus_client *bus, bus_client *extra, double duration, const bool *done) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(sd_event_source_unrefp) sd_event_source *timer = NULL;
        int r;

        /* One loop drives both connections, so the extra one answers the
         * requests other peers send it (bus.Introspect) while we wait. */
        r = sd_event_new(&e);
        if (r < 0)
                return r;
        r = bus_client_attach_event(bus, e, 0);
        if (r >= 0 && extra)
                r = bus_client_attach_event(extra, e, 0);
        if (r >= 0 && duration > 0) {
                uint64_t now;
                (void) sd_event_now(e, CLOCK_MONOTONIC, &now);
                r = sd_event_add_time(e, &timer, CLOCK_MONOTONIC, now + (uint64_t) (duration * 1e6),
                                      0, on_deadline, NULL);
        }
        if (r < 0)
                goto finish;

        while (!*done && !signals_caught() && bus_client_is_connected(bus) > 0) {
                r = sd_event_run(e, UINT64_MAX);
                if (r == -EINTR)
                        continue;
                if (r < 0)
                        goto finish;
                if (sd_event_get_state(e) == SD_EVENT_FINISHED)
                        break;
        }
        r = bus_client_is_connected(bus) > 0 ? 0 : -ECONNRESET;
finish:
        (void) bus_client_detach_event(bus);
        if (extra)
                (void) bus_client_detach_event(extra);
        return r;
}

int cmd_sub(Ctl *ctl, int argc, char **argv) {
        _cleanup_(bus_slot_unrefp) bus_slot *slot = NULL;
        const char *pattern = argv[1];
        Sub s = { .ctl = ctl };
        bus_client *bus;
        int r;

        if (!topic_pattern_is_valid(pattern, strlen(pattern)))
                return ctl_usage_error("bad topic pattern: %s", pattern);
        if (ctl->queue_group && !*ctl->queue_group)
                return ctl_usage_error("empty --queue");
        r = ctl_bus(ctl, &bus);
        if (r < 0)
                return EXIT_FAILED;
        /* Types are looked up on a connection of their own: this one is
         * busy dispatching when a message needs one. */
        r = ctl_open_extra(ctl, &s.lookup);
        if (r < 0)
                return EXIT_FAILED;
        signals_catch();
        r = bus_client_subscribe(bus, &slot, pattern, ctl->queue_group, 0, sub_message, &s);
        if (r < 0)
                r = ctl_error(r, "subscribing to %s", pattern);
        else {
                /* Tell a script waiting on our output that the subscription
                 * is in place (stderr: stdout carries only messages). */
                if (!ctl->quiet)
                        fprintf(stderr, "busdctl: subscribed to %s\n", pattern);
                r = run_until(bus, s.lookup, ctl->duration, &s.done);
                if (r < 0)
                        r = ctl_error(r, "the connection to the bus was lost");
                else if (s.error)
                        r = ctl_error(s.error, "printing a message");
        }
        bus_client_unref(s.lookup);
        return r;
}
