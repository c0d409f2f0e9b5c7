/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bus_client: the connection's lifecycle (connect and Hello, teardown),
 * sending, subscriptions, and the dispatch of received messages to callbacks.
 * Method calls and their pending-call table live in client-call.c, socket
 * pumping in client-io.c.
 *
 * Re-entrancy: callbacks may send, call, subscribe and unref any slot,
 * including their own, and drop the application's last reference on the
 * client. Whoever dispatches holds a reference on the client, the message and
 * the slot across each callback, and looks registrations up afresh for every
 * callback instead of iterating over a table a callback could change.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <syslog.h>

#include <libbus/bus.h>

#include "libbus/address.h"
#include "libbus/bus-internal.h"
#include "libbus/macro.h"
#include "libbus/topic.h"

#define QUEUE_GROUP_MAX 255u

/* ---- Lifecycle. */

_public_ int bus_client_new(bus_client **ret) {
        bus_client *c;

        if (!ret)
                return -EINVAL;
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->n_ref = 1;
        c->fd = -1;
        c->max_envelope = WIRE_ENVELOPE_MAX;
        c->max_payload = WIRE_PAYLOAD_DEFAULT_MAX;
        c->max_fds = WIRE_FDS_MAX;
        c->shm_threshold = BUS_SHM_THRESHOLD_DEFAULT;
        wire_writer_init(&c->writer);
        *ret = c;
        return 0;
}

_public_ bus_client *bus_client_ref(bus_client *c) {
        if (c)
                c->n_ref++;
        return c;
}

static void rqueue_flush(bus_client *c) {
        bus_message *m;

        while ((m = c->rqueue_first)) {
                c->rqueue_first = m->queue_next;
                bus_message_unref(m);
        }
        c->rqueue_last = NULL;
        c->rqueue_n = 0;
}

static void client_free(bus_client *c) {
        MapNode *node;

        /* Callbacks of the calls failed below may take and drop references:
         * they must not bring us back here. */
        c->freeing = true;
        if (c->state == CLIENT_RUNNING)
                (void) client_flush_nonblock(c);
        if (c->state != CLIENT_UNCONNECTED)
                c->state = CLIENT_CLOSED;
        client_fail_pending(c);
        bus_client_detach_event(c);
        for (size_t i = 0; i < c->subs.n_buckets; i++)
                while ((node = c->subs.buckets[i]))
                        slot_disconnect(container_of(node, bus_slot, sub.node));
        while (c->methods_first)
                slot_disconnect(c->methods_first);
        rqueue_flush(c);
        client_close(c);
        client_introspect_free(c);
        u64map_done(&c->pending);
        u64map_done(&c->subs);
        free(c->heap);
        free(c->description);
        free(c->unique_id);
        free(c);
}

_public_ bus_client *bus_client_unref(bus_client *c) {
        if (c && --c->n_ref == 0 && !c->freeing)
                client_free(c);
        return NULL;
}

_public_ int bus_client_set_description(bus_client *c, const char *description) {
        char *d = NULL;

        if (!c)
                return -EINVAL;
        if (c->state != CLIENT_UNCONNECTED)
                return -EBUSY;
        if (description) {
                d = strdup(description);
                if (!d)
                        return -ENOMEM;
        }
        free(c->description);
        c->description = d;
        return 0;
}

_public_ int bus_client_set_shm_threshold(bus_client *c, size_t bytes) {
        if (!c)
                return -EINVAL;
        c->shm_threshold = bytes;
        return 0;
}

_public_ int bus_client_set_batching(bus_client *c, int batching) {
        if (!c)
                return -EINVAL;
        c->batching = batching != 0;
        return 0;
}

_public_ int bus_client_set_log(bus_client *c, bus_log_fn fn, void *userdata) {
        if (!c)
                return -EINVAL;
        c->log_fn = fn;
        c->log_userdata = userdata;
        return 0;
}

void client_log(bus_client *c, int priority, const char *format, ...) {
        char buf[512];
        va_list ap;

        if (!c->log_fn)
                return;
        va_start(ap, format);
        (void) vsnprintf(buf, sizeof(buf), format, ap);
        va_end(ap);
        c->log_fn(priority, buf, c->log_userdata);
}

_public_ int bus_client_get_unique_id(bus_client *c, const char **ret) {
        if (!c || !ret)
                return -EINVAL;
        if (!c->unique_id)
                return -ENOTCONN;
        *ret = c->unique_id;
        return 0;
}

_public_ int bus_client_is_connected(bus_client *c) {
        if (!c)
                return -EINVAL;
        return c->state == CLIENT_RUNNING;
}

/* ---- Connecting. */

static int connect_socket(const BusAddress *a, uint64_t deadline, int *ret_fd) {
        _cleanup_close_ int fd = -1;
        int error = 0, r;
        socklen_t len = sizeof(error);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return negative_errno();
        for (;;) {
                if (connect(fd, (const struct sockaddr *) &a->sun, a->len) >= 0)
                        break;
                if (errno == EAGAIN) {
                        /* AF_UNIX: the listener's backlog is full and nothing
                         * is in progress, so try again shortly. */
                        if (now_usec() >= deadline)
                                return -ETIMEDOUT;
                        (void) poll(NULL, 0, 5);
                        continue;
                }
                if (errno != EINPROGRESS && errno != EINTR)
                        return negative_errno();
                r = fd_poll(fd, POLLOUT, deadline);
                if (r < 0 && r != -EINTR)
                        return r;
                if (r == 0)
                        return -ETIMEDOUT;
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
                        return negative_errno();
                if (error != 0)
                        return -error;
                break;
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* Back to CLIENT_UNCONNECTED after a failed connect, so it may be retried. */
static void client_reset(bus_client *c) {
        rqueue_flush(c);
        client_close(c);
        wire_writer_init(&c->writer);
        c->state = CLIENT_UNCONNECTED;
        c->serial = 0;
        c->read_more = false;
}

/* A broker that refuses the greeting explains itself in an ERROR with
 * reply_serial 0 before closing: report that rather than a bare reset. */
static int hello_failure(bus_client *c, int r) {
        for (bus_message *m = c->rqueue_first; m; m = m->queue_next)
                if (m->kind == BUS_KIND_ERROR && m->env->reply_serial == 0) {
                        client_log(c, LOG_ERR, "broker refused the connection: %s: %s",
                                   m->env->error_name, m->env->error_message);
                        return -EPROTO;
                }
        if (r == -EREMOTEIO || r == -EBADMSG || r == -EBADRQC)
                return -EPROTO;
        return r;
}

_public_ int bus_client_connect(bus_client *c, const char *address) {
        Bus__HelloRequest req = BUS__HELLO_REQUEST__INIT;
        Bus__HelloReply *reply = NULL;
        bus_error error = BUS_ERROR_NULL;
        uint64_t deadline = timeout_to_deadline(CLIENT_TIMEOUT_DEFAULT_USEC);
        BusAddress a;
        int r;

        if (!c)
                return -EINVAL;
        if (c->state != CLIENT_UNCONNECTED)
                return -EISCONN;
        r = address_resolve(&a, address);
        if (r < 0)
                return r;
        r = connect_socket(&a, deadline, &c->fd);
        if (r < 0)
                return r;
        r = wire_reader_init(&c->reader, CLIENT_READ_CHUNK, WIRE_ENVELOPE_MAX, WIRE_PAYLOAD_MAX,
                             WIRE_FDS_MAX);
        if (r < 0) {
                client_reset(c);
                return r;
        }
        c->state = CLIENT_HELLO;

        req.client_name = c->description ?: program_invocation_short_name;
        r = client_call_broker(c, "Hello", &req.base, &bus__hello_reply__descriptor,
                               CLIENT_TIMEOUT_DEFAULT_USEC, &error, (ProtobufCMessage **) &reply);
        if (r >= 0 && !name_is_valid_unique(reply->unique_id))
                r = -EPROTO;
        if (r >= 0) {
                c->unique_id = strdup(reply->unique_id);
                if (!c->unique_id)
                        r = -ENOMEM;
        }
        if (r < 0) {
                if (error.name)
                        client_log(c, LOG_ERR, "Hello failed: %s: %s", error.name,
                                   error.message ?: "");
                r = hello_failure(c, r);
                bus_error_free(&error);
                if (reply)
                        protobuf_c_message_free_unpacked(&reply->base, NULL);
                client_reset(c);
                return r;
        }
        if (reply->max_envelope_bytes > 0)
                c->max_envelope = MIN(reply->max_envelope_bytes, WIRE_ENVELOPE_MAX);
        if (reply->max_payload_bytes > 0)
                c->max_payload = MIN(reply->max_payload_bytes, WIRE_PAYLOAD_MAX);
        /* A broker that does not say allows the protocol's maximum. */
        if (reply->max_fds > 0)
                c->max_fds = MIN(reply->max_fds, WIRE_FDS_MAX);
        client_log(c, LOG_DEBUG, "connected to %s as %s (broker %s)", a.path, c->unique_id,
                   reply->broker_version);
        protobuf_c_message_free_unpacked(&reply->base, NULL);
        c->state = CLIENT_RUNNING;
        return 0;
}

_public_ int bus_client_open(bus_client **ret, const char *address) {
        bus_client *c = NULL;
        int r;

        if (!ret)
                return -EINVAL;
        r = bus_client_new(&c);
        if (r < 0)
                return r;
        r = bus_client_connect(c, address);
        if (r < 0) {
                bus_client_unref(c);
                return r;
        }
        *ret = c;
        return 0;
}

/* ---- Sending. */

int client_check_sending(bus_client *c) {
        switch (c->state) {
        case CLIENT_RUNNING:
                return c->monitor ? -EPERM : 0;
        case CLIENT_UNCONNECTED:
        case CLIENT_HELLO:
                return -ENOTCONN;
        default:
                return -ECONNRESET;
        }
}

_public_ int bus_client_send(bus_client *c, bus_message *m, uint64_t *ret_serial) {
        int r;

        if (!c || !m)
                return -EINVAL;
        r = client_check_sending(c);
        if (r < 0)
                return r;
        if (m->bad)
                return -ESTALE;
        if (m->sealed)
                return -EPERM;
        r = client_queue_message(c, m);
        if (r < 0)
                return r;
        if (m->payload_desc)
                client_introspect_sent(c, m);
        if (ret_serial)
                *ret_serial = m->env->serial;
        return 0;
}

_public_ int bus_client_publish(bus_client *c, const char *topic, const void *data, size_t size,
                                uint64_t flags) {
        _cleanup_(bus_message_unrefp) bus_message *m = NULL;
        int r;

        if (!c || (flags & ~BUS_PUBLISH_RETAIN))
                return -EINVAL;
        r = bus_message_new_publish(&m, topic);
        if (r < 0)
                return r;
        r = bus_message_set_payload(m, data, size);
        if (r < 0)
                return r;
        r = bus_message_set_retain(m, !!(flags & BUS_PUBLISH_RETAIN));
        if (r < 0)
                return r;
        return bus_client_send(c, m, NULL);
}

/* ---- Subscriptions. */

_public_ int bus_client_subscribe(bus_client *c, bus_slot **ret_slot, const char *pattern,
                                  const char *queue_group, uint64_t flags,
                                  bus_message_handler_t callback, void *userdata) {
        Bus__SubscribeRequest req = BUS__SUBSCRIBE_REQUEST__INIT;
        Bus__SubscribeReply *reply = NULL;
        bus_slot *s = NULL;
        int r;

        if (!c || !pattern || !topic_pattern_is_valid(pattern, strlen(pattern)) || !callback ||
            (flags & ~BUS_SUBSCRIBE_NO_RETAINED) ||
            (queue_group && strlen(queue_group) > QUEUE_GROUP_MAX))
                return -EINVAL;
        r = client_check_sending(c);
        if (r < 0)
                return r;
        r = slot_new(c, SLOT_SUBSCRIPTION, callback, userdata, !ret_slot, &s);
        if (r < 0)
                return r;
        /* Linked before asking, so the retained messages the broker sends
         * ahead of its reply find their subscription when dispatched. */
        s->sub.node.key = ++c->sub_id;
        r = u64map_put(&c->subs, &s->sub.node);
        if (r < 0) {
                s->client = NULL;
                bus_slot_unref(s);
                return r;
        }
        s->sub.linked = true;

        req.id = s->sub.node.key;
        req.pattern = (char *) pattern;
        req.queue_group = (char *) (queue_group ?: "");
        req.flags = (flags & BUS_SUBSCRIBE_NO_RETAINED) ?
                            BUS__SUBSCRIBE_FLAG__SUBSCRIBE_FLAG_NO_RETAINED : 0;
        r = client_call_broker(c, "Subscribe", &req.base, &bus__subscribe_reply__descriptor, 0,
                               NULL, (ProtobufCMessage **) &reply);
        if (r < 0) {
                /* Refused: nothing to undo at the broker. Timed out: it may
                 * have happened, so undo it. */
                s->sub.acked = r == -ETIMEDOUT;
                bus_slot_unref(s);
                return r;
        }
        s->sub.acked = true;
        client_log(c, LOG_DEBUG, "subscribed to %s (id %" PRIu64 ", %u retained)", pattern,
                   req.id, reply->retained);
        protobuf_c_message_free_unpacked(&reply->base, NULL);
        if (ret_slot)
                *ret_slot = s;
        return 0;
}

void client_unsubscribe(bus_client *c, bus_slot *s) {
        Bus__UnsubscribeRequest req = BUS__UNSUBSCRIBE_REQUEST__INIT;
        _cleanup_(bus_message_unrefp) bus_message *m = NULL;
        int r;

        if (!s->sub.linked)
                return;
        u64map_remove(&c->subs, s->sub.node.key);
        s->sub.linked = false;
        if (!s->sub.acked || c->state != CLIENT_RUNNING)
                return;
        /* Fire and forget: deliveries already on their way name an id we no
         * longer know, and are dropped. */
        req.id = s->sub.node.key;
        r = bus_message_new_request(&m, BROKER_NAME, "Unsubscribe");
        if (r >= 0)
                r = bus_message_set_no_reply(m, true);
        if (r >= 0)
                r = bus_message_set_protobuf(m, &req.base);
        if (r >= 0)
                r = client_queue_message(c, m);
        if (r < 0)
                client_log(c, LOG_WARNING, "cannot unsubscribe %" PRIu64 ": %s", req.id,
                           strerror(-r));
}

/* ---- Dispatch. */

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

        return x < y ? -1 : x > y;
}

static void dispatch_publish(bus_client *c, bus_message *m) {
        size_t n = m->env->n_subscriptions;
        uint64_t *ids = m->env->subscriptions;

        if (n == 0) {
                client_log(c, LOG_DEBUG, "dropping publish on %s without subscription",
                           m->env->topic);
                return;
        }
        /* Callbacks run in subscription order; the ids belong to the
         * message, which nobody else reads, so sort them in place. */
        if (n > 1)
                qsort(ids, n, sizeof(*ids), cmp_u64);
        for (size_t i = 0; i < n; i++) {
                MapNode *node;
                bus_slot *s;
                int r;

                if (i > 0 && ids[i] == ids[i - 1])
                        continue;
                node = u64map_get(&c->subs, ids[i]);
                if (!node) {
                        client_log(c, LOG_DEBUG, "dropping publish on %s for unknown subscription %"
                                   PRIu64, m->env->topic, ids[i]);
                        continue;
                }
                s = bus_slot_ref(container_of(node, bus_slot, sub.node));
                r = s->callback(m, s->userdata);
                if (r < 0)
                        client_log(c, LOG_DEBUG, "subscription callback for %s failed: %s",
                                   m->env->topic, strerror(-r));
                bus_slot_unref(s);
        }
}

static void dispatch_request(bus_client *c, bus_message *m) {
        bool no_reply = message_is_no_reply(m);
        bus_slot *s;
        int r;

        s = client_find_method(c, m->env->destination, m->env->method);
        /* Built in, unless a handler was registered for this very method. */
        if ((!s || !s->method.method) && streq(m->env->method, BUS_METHOD_INTROSPECT)) {
                client_introspect_reply(c, m);
                return;
        }
        if (!s) {
                client_log(c, LOG_DEBUG, "no handler for %s.%s from %s", m->env->destination,
                           m->env->method, m->env->sender);
                if (!no_reply)
                        (void) bus_client_reply_error(c, m, BUS_ERROR_UNKNOWN_METHOD,
                                                      "Unknown method %s", m->env->method);
                return;
        }
        bus_slot_ref(s);
        r = s->callback(m, s->userdata);
        bus_slot_unref(s);
        if (r >= 0)
                return;
        client_log(c, LOG_DEBUG, "handler of %s.%s failed: %s", m->env->destination,
                   m->env->method, strerror(-r));
        if (!m->replied && !no_reply)
                (void) bus_client_reply_error(c, m, BUS_ERROR_FAILED, "%s", strerror(-r));
}

void client_dispatch(bus_client *c, bus_message *m) {
        if (c->monitor) {
                client_monitor_dispatch(c, m);
                return;
        }
        switch (m->kind) {
        case BUS_KIND_REPLY:
        case BUS_KIND_ERROR:
                client_dispatch_answer(c, m);
                break;
        case BUS_KIND_PUBLISH:
                dispatch_publish(c, m);
                break;
        case BUS_KIND_REQUEST:
                dispatch_request(c, m);
                break;
        default:
                client_log(c, LOG_DEBUG, "dropping frame of unknown kind %d", m->kind);
                break;
        }
}
