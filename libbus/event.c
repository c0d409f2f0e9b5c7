/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Driving a bus_client from an sd_event loop, on top of the public
 * get_fd/get_events/get_timeout/process calls: an I/O source on the socket
 * and a CLOCK_MONOTONIC timer for call timeouts and queued work.
 *
 * The I/O source's prepare callback sets both from the client's state right
 * before the loop sleeps, so output queued or messages read anywhere (a
 * synchronous call made outside the loop, a send from another source's
 * callback) are always accounted for. Each wake-up processes a bounded batch
 * and leaves the rest to the timer (get_timeout() is then "now"), so a busy
 * bus does not starve the loop's other sources.
 *
 * When the connection is lost the sources go away and the loop goes on; the
 * client keeps its reference on the loop until it is detached or freed.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <syslog.h>
#include <time.h>

#include <systemd/sd-event.h>

#include <libbus/bus.h>

#include "libbus/bus-internal.h"
#include "libbus/macro.h"

#define EVENT_BATCH 64
#define EVENT_ACCURACY_USEC 1000

static void event_update(bus_client *c) {
        uint32_t events = EPOLLIN;
        uint64_t t;
        int r;

        if (!c->io_source)
                return;
        r = bus_client_get_events(c);
        if (r > 0 && (r & POLLOUT))
                events |= EPOLLOUT;
        r = sd_event_source_set_io_events(c->io_source, events);
        if (r < 0)
                client_log(c, LOG_ERR, "cannot update I/O events: %s", strerror(-r));

        (void) bus_client_get_timeout(c, &t);
        if (t == UINT64_MAX) {
                r = sd_event_source_set_enabled(c->time_source, SD_EVENT_OFF);
        } else {
                r = sd_event_source_set_time(c->time_source, t);
                if (r >= 0)
                        r = sd_event_source_set_enabled(c->time_source, SD_EVENT_ONESHOT);
        }
        if (r < 0)
                client_log(c, LOG_ERR, "cannot arm timer: %s", strerror(-r));
}

static void event_process(bus_client *c) {
        int r = 0;

        bus_client_ref(c);
        for (unsigned i = 0; i < EVENT_BATCH; i++) {
                r = bus_client_process(c);
                if (r <= 0)
                        break;
        }
        if (r < 0 && r != -ECONNRESET && r != -ENOTCONN)
                client_log(c, LOG_ERR, "processing failed: %s", strerror(-r));
        /* After a loss the sources are gone already (client_event_closed()). */
        event_update(c);
        bus_client_unref(c);
}

static int io_callback(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        event_process(userdata);
        return 0;
}

static int time_callback(sd_event_source *s, uint64_t usec, void *userdata) {
        event_process(userdata);
        return 0;
}

static int prepare_callback(sd_event_source *s, void *userdata) {
        event_update(userdata);
        return 0;
}

void client_event_closed(bus_client *c) {
        c->io_source = sd_event_source_disable_unref(c->io_source);
        c->time_source = sd_event_source_disable_unref(c->time_source);
}

_public_ int bus_client_attach_event(bus_client *c, sd_event *e, int64_t priority) {
        int r;

        if (!c)
                return -EINVAL;
        if (c->event)
                return -EBUSY;
        if (c->state != CLIENT_RUNNING)
                return c->state == CLIENT_UNCONNECTED ? -ENOTCONN : -ECONNRESET;

        if (e)
                c->event = sd_event_ref(e);
        else {
                r = sd_event_default(&c->event);
                if (r < 0)
                        return r;
        }
        c->event_priority = priority;

        r = sd_event_add_io(c->event, &c->io_source, c->fd, EPOLLIN, io_callback, c);
        if (r < 0)
                goto fail;
        r = sd_event_source_set_priority(c->io_source, priority);
        if (r < 0)
                goto fail;
        r = sd_event_source_set_prepare(c->io_source, prepare_callback);
        if (r < 0)
                goto fail;
        (void) sd_event_source_set_description(c->io_source, "libbus-io");

        r = sd_event_add_time(c->event, &c->time_source, CLOCK_MONOTONIC, UINT64_MAX,
                              EVENT_ACCURACY_USEC, time_callback, c);
        if (r < 0)
                goto fail;
        r = sd_event_source_set_priority(c->time_source, priority);
        if (r < 0)
                goto fail;
        (void) sd_event_source_set_description(c->time_source, "libbus-timeout");

        event_update(c);
        return 0;

fail:
        bus_client_detach_event(c);
        return r;
}

_public_ int bus_client_detach_event(bus_client *c) {
        if (!c)
                return -EINVAL;
        client_event_closed(c);
        c->event = sd_event_unref(c->event);
        return 0;
}
