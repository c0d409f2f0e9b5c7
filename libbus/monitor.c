/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Monitor mode of a bus_client: asking the broker to make the connection a
 * monitor, dispatching the copies it receives from then on, and reading the
 * broker's monitor stamps off a copy.
 *
 * A monitor sends nothing: client_check_sending() answers -EPERM, which every
 * send path asks first. Every frame it receives is dispatched here instead
 * of by client_dispatch(): a copy (flag ENVELOPE_FLAG_MONITOR) was addressed
 * to somebody else, so it goes to the monitor handler and never to a
 * subscription, a method handler or a call, whatever its kind, topic or
 * serials say. Other frames are answers (the local errors that fail the calls
 * that were pending when the connection switched, the broker's error before
 * it closes a monitor that sent something), which end their call or are
 * logged, and deliveries queued before the switch, which are dropped.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include <libbus/bus.h>

#include "libbus/bus-internal.h"
#include "libbus/macro.h"
#include "libbus/topic.h"

static bool filter_name_is_valid(const char *s) {
        return name_is_valid_unique(s) || name_is_valid_wellknown(s) || streq(s, BROKER_NAME);
}

/* Length of a NULL-terminated filter array whose strings all pass valid();
 * -EINVAL if one does not. */
static ssize_t filters_count(const char *const *v, bool (*valid)(const char *)) {
        ssize_t n = 0;

        for (; v && v[n]; n++)
                if (!valid(v[n]))
                        return -EINVAL;
        return n;
}

static bool topic_filter_is_valid(const char *s) {
        return topic_pattern_is_valid(s, strlen(s));
}

/* The broker dropped the subscriptions: unlink them without the Unsubscribe
 * a monitor could not send anyway. */
static void monitor_forget_subscriptions(bus_client *c) {
        MapNode *node;

        for (size_t i = 0; i < c->subs.n_buckets; i++)
                while ((node = c->subs.buckets[i])) {
                        bus_slot *s = container_of(node, bus_slot, sub.node);

                        s->sub.acked = false;
                        slot_disconnect(s);
                }
}

/* Fails the async calls still waiting. Their errors are queued, not
 * dispatched here, so no callback runs inside bus_client_become_monitor();
 * they come ahead of any late answer, which then finds no call. */
static void monitor_fail_calls(bus_client *c) {
        for (size_t i = 0; i < c->heap_n; i++) {
                bus_message *e = NULL;
                uint64_t serial = c->heap[i]->node.key;

                if (message_new_local_error(&e, serial, BUS_ERROR_DISCONNECTED,
                                            "The connection became a monitor") < 0) {
                        client_log(c, LOG_ERR, "cannot fail call %" PRIu64 ": out of memory",
                                   serial);
                        continue;
                }
                client_enqueue(c, e);
        }
}

_public_ int bus_client_become_monitor(bus_client *c, const char *const *topics,
                                       const char *const *names, const int *kinds,
                                       bus_message_handler_t handler, void *userdata) {
        Bus__BecomeMonitorRequest req = BUS__BECOME_MONITOR_REQUEST__INIT;
        _cleanup_free_ Bus__Kind *k = NULL;
        bus_error error = BUS_ERROR_NULL;
        ssize_t n_topics, n_names;
        size_t n_kinds = 0;
        int r;

        if (!c || !handler)
                return -EINVAL;
        n_topics = filters_count(topics, topic_filter_is_valid);
        n_names = filters_count(names, filter_name_is_valid);
        if (n_topics < 0 || n_names < 0)
                return -EINVAL;
        for (; kinds && kinds[n_kinds]; n_kinds++)
                if (kinds[n_kinds] < BUS_KIND_PUBLISH || kinds[n_kinds] > BUS_KIND_ERROR)
                        return -EINVAL;
        if (c->monitor)
                return -EBUSY;
        r = client_check_sending(c);
        if (r < 0)
                return r;
        if (n_kinds > 0) {
                k = calloc(n_kinds, sizeof(*k));
                if (!k)
                        return -ENOMEM;
                for (size_t i = 0; i < n_kinds; i++)
                        k[i] = (Bus__Kind) kinds[i];
        }
        req.topics = (char **) topics;
        req.n_topics = (size_t) n_topics;
        req.names = (char **) names;
        req.n_names = (size_t) n_names;
        req.kinds = k;
        req.n_kinds = n_kinds;
        r = client_call_broker(c, "BecomeMonitor", &req.base,
                               &bus__become_monitor_reply__descriptor, 0, &error, NULL);
        if (r < 0) {
                if (error.name)
                        client_log(c, LOG_ERR, "BecomeMonitor failed: %s: %s", error.name,
                                   error.message ?: "");
                bus_error_free(&error);
                return r;
        }
        c->monitor = true;
        c->monitor_handler = handler;
        c->monitor_userdata = userdata;
        monitor_forget_subscriptions(c);
        monitor_fail_calls(c);
        client_log(c, LOG_DEBUG, "%s is now a monitor", c->unique_id);
        return 0;
}

static bool message_is_copy(const bus_message *m) {
        return m->received && (m->env->flags & BUS__ENVELOPE_FLAG__ENVELOPE_FLAG_MONITOR);
}

void client_monitor_dispatch(bus_client *c, bus_message *m) {
        int r;

        if (message_is_copy(m)) {
                r = c->monitor_handler(m, c->monitor_userdata);
                if (r < 0)
                        client_log(c, LOG_DEBUG, "monitor handler failed: %s", strerror(-r));
                return;
        }
        if (m->kind == BUS_KIND_REPLY || m->kind == BUS_KIND_ERROR) {
                client_dispatch_answer(c, m);
                return;
        }
        client_log(c, LOG_DEBUG, "monitor: dropping a frame of kind %d from %s, queued before "
                   "the connection became a monitor", m->kind, m->env->sender);
}

/* ---- The stamps of a copy. */

_public_ int bus_message_is_monitor_copy(bus_message *m) {
        if (!m)
                return -EINVAL;
        return message_is_copy(m);
}

_public_ uint64_t bus_message_get_timestamp(bus_message *m) {
        return m && message_is_copy(m) ? m->env->timestamp_ns : 0;
}

_public_ const char *bus_message_get_monitor_receiver(bus_message *m) {
        return m && message_is_copy(m) ? str_or_null(m->env->monitor_receiver) : NULL;
}

_public_ unsigned bus_message_get_monitor_receivers(bus_message *m) {
        return m && message_is_copy(m) ? m->env->monitor_receivers : 0;
}

_public_ unsigned bus_message_get_monitor_n_fds(bus_message *m) {
        return m && message_is_copy(m) ? m->env->monitor_fds : 0;
}
