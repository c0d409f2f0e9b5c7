/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Method calls of a bus_client: synchronous and async calls, the table of
 * pending calls, their timeouts, and handing each answer to its call.
 *
 * Pending calls are kept in a hash by request serial (U64Map, also used for
 * subscriptions), so an answer finds its call in O(1), and async ones also in
 * a min-heap of deadlines, so the next timeout is the heap's top and
 * bus_client_get_timeout() is O(1) with any number of calls in flight.
 *
 * A synchronous call registers a PendingCall on its own stack and pumps the
 * socket itself: every frame read goes through client_enqueue(), which hands
 * the call its answer and queues everything else, in order, for
 * bus_client_process(). It never runs a callback. Timeouts are tracked here
 * as well as by the broker, so a caller gets bus.Error.Timeout on time even
 * when the broker's answer is late; the late answer is then dropped.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include <libbus/bus.h>

#include "libbus/bus-internal.h"
#include "libbus/macro.h"

/* ---- The hash of PendingCalls and subscriptions. */

static size_t map_hash(uint64_t key, size_t n_buckets) {
        /* Fibonacci hashing: serials and ids are sequential, so spread them. */
        return (size_t) ((key * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & (n_buckets - 1);
}

int u64map_reserve(U64Map *m, size_t n) {
        size_t size = m->n_buckets ? m->n_buckets : 16;
        MapNode **b;

        if (n <= m->n_buckets)
                return 0;
        while (size < n)
                size *= 2;
        b = calloc(size, sizeof(*b));
        if (!b)
                return -ENOMEM;
        for (size_t i = 0; i < m->n_buckets; i++)
                while (m->buckets[i]) {
                        MapNode *node = m->buckets[i];
                        size_t j = map_hash(node->key, size);

                        m->buckets[i] = node->next;
                        node->next = b[j];
                        b[j] = node;
                }
        free(m->buckets);
        m->buckets = b;
        m->n_buckets = size;
        return 0;
}

int u64map_put(U64Map *m, MapNode *node) {
        size_t i;
        int r;

        r = u64map_reserve(m, m->n + 1);
        if (r < 0)
                return r;
        i = map_hash(node->key, m->n_buckets);
        node->next = m->buckets[i];
        m->buckets[i] = node;
        m->n++;
        return 0;
}

MapNode *u64map_get(const U64Map *m, uint64_t key) {
        if (m->n == 0)
                return NULL;
        for (MapNode *node = m->buckets[map_hash(key, m->n_buckets)]; node; node = node->next)
                if (node->key == key)
                        return node;
        return NULL;
}

MapNode *u64map_remove(U64Map *m, uint64_t key) {
        if (m->n == 0)
                return NULL;
        for (MapNode **p = &m->buckets[map_hash(key, m->n_buckets)]; *p; p = &(*p)->next)
                if ((*p)->key == key) {
                        MapNode *node = *p;

                        *p = node->next;
                        m->n--;
                        return node;
                }
        return NULL;
}

void u64map_done(U64Map *m) {
        free(m->buckets);
        *m = (U64Map){};
}

/* ---- The deadline heap of async calls. */

static void heap_set(bus_client *c, size_t i, PendingCall *p) {
        c->heap[i] = p;
        p->heap_idx = i;
}

static void heap_sift_up(bus_client *c, size_t i) {
        PendingCall *p = c->heap[i];

        while (i > 0 && c->heap[(i - 1) / 2]->deadline > p->deadline) {
                heap_set(c, i, c->heap[(i - 1) / 2]);
                i = (i - 1) / 2;
        }
        heap_set(c, i, p);
}

static void heap_sift_down(bus_client *c, size_t i) {
        PendingCall *p = c->heap[i];

        for (;;) {
                size_t child = 2 * i + 1;

                if (child >= c->heap_n)
                        break;
                if (child + 1 < c->heap_n &&
                    c->heap[child + 1]->deadline < c->heap[child]->deadline)
                        child++;
                if (c->heap[child]->deadline >= p->deadline)
                        break;
                heap_set(c, i, c->heap[child]);
                i = child;
        }
        heap_set(c, i, p);
}

static int heap_reserve(bus_client *c) {
        PendingCall **h;
        size_t size;

        if (c->heap_n < c->heap_size)
                return 0;
        size = c->heap_size ? c->heap_size * 2 : 64;
        h = realloc(c->heap, size * sizeof(*h));
        if (!h)
                return -ENOMEM;
        c->heap = h;
        c->heap_size = size;
        return 0;
}

static void heap_remove(bus_client *c, PendingCall *p) {
        size_t i = p->heap_idx;
        PendingCall *last = c->heap[--c->heap_n];

        p->heap_idx = SIZE_MAX;
        if (last == p)
                return;
        heap_set(c, i, last);
        heap_sift_up(c, i);
        heap_sift_down(c, last->heap_idx);
}

/* Links a call; the caller reserved room in the map and heap beforehand, so
 * this cannot fail after the request went out. */
static void client_pending_add(bus_client *c, PendingCall *p, uint64_t serial, uint64_t deadline) {
        p->node.key = serial;
        p->deadline = deadline;
        (void) u64map_put(&c->pending, &p->node);
        p->linked = true;
        if (p->slot) {
                c->heap[c->heap_n] = p;
                p->heap_idx = c->heap_n++;
                heap_sift_up(c, p->heap_idx);
        }
}

void client_pending_remove(bus_client *c, PendingCall *p) {
        if (p->linked) {
                u64map_remove(&c->pending, p->node.key);
                p->linked = false;
        }
        if (p->heap_idx != SIZE_MAX)
                heap_remove(c, p);
}

/* ---- Calls. */

/* Checks a request for a call and returns the client-side timeout. */
static int call_prepare(bus_client *c, bus_message *m, uint64_t timeout_usec,
                        uint64_t *ret_timeout) {
        if (!c || !m || m->kind != BUS_KIND_REQUEST)
                return -EINVAL;
        if (m->bad)
                return -ESTALE;
        if (m->sealed)
                return -EPERM;
        if (message_is_no_reply(m))
                return -EINVAL;
        if (timeout_usec == 0)
                timeout_usec = m->timeout_usec ?: CLIENT_TIMEOUT_DEFAULT_USEC;
        *ret_timeout = MIN(timeout_usec, CLIENT_TIMEOUT_MAX_USEC);
        return 0;
}

/* Sends a call's request. One without a timeout of its own tells the broker
 * the call's, so both sides give up at the same time. */
static int call_send(bus_client *c, bus_message *m, uint64_t timeout) {
        int r;

        if (m->timeout_usec == 0)
                m->local.timeout_ms = usec_to_timeout_ms(timeout);
        r = client_queue_message(c, m);
        if (r < 0 && m->timeout_usec == 0)
                m->local.timeout_ms = 0;
        /* A typed request tells what this program speaks, as a send does;
         * the broker's own types (libbus's calls to bus) do not count. */
        if (r >= 0 && m->payload_desc && !streq(m->env->destination, BROKER_NAME))
                client_introspect_sent(c, m);
        return r;
}

/* A call that failed on our side: say why in error, as a remote one would. */
static int call_fail(bus_message *m, bus_error *error, int r) {
        const char *name;

        switch (r) {
        case -ETIMEDOUT:
                return bus_error_set(error, BUS_ERROR_TIMEOUT, "Call to %s.%s timed out",
                                     m->env->destination, m->env->method);
        case -ECONNRESET:
        case -ENOTCONN:
                name = BUS_ERROR_DISCONNECTED;
                break;
        case -ENOBUFS:
        case -EMSGSIZE:
                name = BUS_ERROR_LIMITS_EXCEEDED;
                break;
        default:
                name = BUS_ERROR_FAILED;
                break;
        }
        (void) bus_error_set(error, name, "%s", strerror(-r));
        return r;
}

int client_call(bus_client *c, bus_message *m, uint64_t timeout_usec, bus_error *error,
                bus_message **ret_reply) {
        _cleanup_(bus_message_unrefp) bus_message *reply = NULL;
        PendingCall p = { .heap_idx = SIZE_MAX };
        uint64_t timeout, deadline;
        int r;

        r = call_prepare(c, m, timeout_usec, &timeout);
        if (r < 0)
                return r;
        if (c->state != CLIENT_HELLO) {
                r = client_check_sending(c);
                if (r < 0)
                        return call_fail(m, error, r);
        }
        r = u64map_reserve(&c->pending, c->pending.n + 1);
        if (r < 0)
                return r;
        r = call_send(c, m, timeout);
        if (r < 0)
                return call_fail(m, error, r);
        deadline = timeout_to_deadline(timeout);
        client_pending_add(c, &p, m->env->serial, deadline);

        for (;;) {
                if (p.reply)
                        break;
                if (c->state != CLIENT_HELLO && c->state != CLIENT_RUNNING) {
                        r = -ECONNRESET;
                        break;
                }
                (void) client_flush_nonblock(c);
                (void) client_read(c, 0, &p);
                if (p.reply || c->state == CLIENT_CLOSING)
                        continue;
                if (now_usec() >= deadline) {
                        r = -ETIMEDOUT;
                        break;
                }
                r = fd_poll(c->fd, POLLIN | (wire_writer_is_empty(&c->writer) ? 0 : POLLOUT),
                            deadline);
                if (r < 0 && r != -EINTR)
                        break;
        }
        client_pending_remove(c, &p);
        reply = TAKE_PTR(p.reply);
        if (!reply)
                return call_fail(m, error, r);
        if (reply->kind == BUS_KIND_ERROR) {
                r = bus_message_get_error(reply, error);
                return r < 0 ? r : -EREMOTEIO;
        }
        if (ret_reply)
                *ret_reply = TAKE_PTR(reply);
        return 0;
}

_public_ int bus_client_call(bus_client *c, bus_message *request, uint64_t timeout_usec,
                             bus_error *ret_error, bus_message **ret_reply) {
        if (!c || !request)
                return -EINVAL;
        if (c->state == CLIENT_HELLO)
                return -ENOTCONN;
        return client_call(c, request, timeout_usec, ret_error, ret_reply);
}

_public_ int bus_client_call_async(bus_client *c, bus_slot **ret_slot, bus_message *request,
                                   bus_message_handler_t callback, void *userdata,
                                   uint64_t timeout_usec) {
        bus_slot *s = NULL;
        uint64_t timeout;
        int r;

        r = call_prepare(c, request, timeout_usec, &timeout);
        if (r < 0)
                return r;
        r = client_check_sending(c);
        if (r < 0)
                return r;
        r = u64map_reserve(&c->pending, c->pending.n + 1);
        if (r < 0)
                return r;
        r = heap_reserve(c);
        if (r < 0)
                return r;
        r = slot_new(c, SLOT_CALL, callback, userdata, !ret_slot, &s);
        if (r < 0)
                return r;
        r = call_send(c, request, timeout);
        if (r < 0) {
                bus_slot_unref(s);
                return r;
        }
        client_pending_add(c, &s->call, request->env->serial, timeout_to_deadline(timeout));
        if (ret_slot)
                *ret_slot = s;
        return 0;
}

_public_ int bus_client_call_method(bus_client *c, const char *destination, const char *method,
                                    const void *data, size_t size, uint64_t timeout_usec,
                                    bus_error *ret_error, bus_message **ret_reply) {
        _cleanup_(bus_message_unrefp) bus_message *m = NULL;
        int r;

        if (!c)
                return -EINVAL;
        r = bus_message_new_request(&m, destination, method);
        if (r < 0)
                return r;
        r = bus_message_set_payload(m, data, size);
        if (r < 0)
                return r;
        return bus_client_call(c, m, timeout_usec, ret_error, ret_reply);
}

/* Hands an async call its answer. The call is unlinked already. */
static void call_complete(bus_client *c, bus_slot *s, bus_message *m) {
        int r;

        s->client = NULL;
        bus_slot_ref(s);
        if (s->callback) {
                r = s->callback(m, s->userdata);
                if (r < 0)
                        client_log(c, LOG_DEBUG, "reply callback failed: %s", strerror(-r));
        }
        if (s->floating) {
                s->floating = false;
                bus_slot_unref(s);
        }
        bus_slot_unref(s);
}

static void call_fail_locally(bus_client *c, PendingCall *p, const char *name, const char *text) {
        _cleanup_(bus_message_unrefp) bus_message *m = NULL;
        bus_slot *s = p->slot;
        int r;

        client_pending_remove(c, p);
        r = message_new_local_error(&m, p->node.key, name, "%s", text);
        if (r < 0) {
                client_log(c, LOG_ERR, "cannot fail call %" PRIu64 ": %s", p->node.key,
                           strerror(-r));
                s->client = NULL;
                if (s->floating) {
                        s->floating = false;
                        bus_slot_unref(s);
                }
                return;
        }
        call_complete(c, s, m);
}

int client_fire_timeout(bus_client *c, uint64_t now) {
        if (c->heap_n == 0 || c->heap[0]->deadline > now)
                return 0;
        call_fail_locally(c, c->heap[0], BUS_ERROR_TIMEOUT, "Method call timed out");
        return 1;
}

void client_fail_pending(bus_client *c) {
        while (c->heap_n > 0)
                call_fail_locally(c, c->heap[0], BUS_ERROR_DISCONNECTED,
                                  "Connection to the bus was lost");
}

/* ---- Answers. */

void client_enqueue(bus_client *c, bus_message *m) {
        if ((m->kind == BUS_KIND_REPLY || m->kind == BUS_KIND_ERROR) && m->env->reply_serial) {
                MapNode *node = u64map_get(&c->pending, m->env->reply_serial);
                PendingCall *p = node ? container_of(node, PendingCall, node) : NULL;

                if (p && !p->slot) {
                        /* A synchronous call is waiting for this one. */
                        client_pending_remove(c, p);
                        p->reply = m;
                        return;
                }
        }
        m->queue_next = NULL;
        if (c->rqueue_last)
                c->rqueue_last->queue_next = m;
        else
                c->rqueue_first = m;
        c->rqueue_last = m;
        c->rqueue_n++;
}

void client_dispatch_answer(bus_client *c, bus_message *m) {
        uint64_t serial = m->env->reply_serial;
        MapNode *node;
        PendingCall *p;

        if (serial == 0) {
                if (m->kind == BUS_KIND_ERROR && streq(m->env->sender, BROKER_NAME))
                        client_log(c, LOG_ERR, "broker: %s: %s", m->env->error_name,
                                   m->env->error_message);
                else
                        client_log(c, LOG_DEBUG, "dropping answer without reply serial from %s",
                                   m->env->sender);
                return;
        }
        node = u64map_get(&c->pending, serial);
        if (!node) {
                /* From the broker, this is usually a refused publish: the
                 * only way the application learns of it is the log. */
                if (m->kind == BUS_KIND_ERROR && streq(m->env->sender, BROKER_NAME))
                        client_log(c, LOG_WARNING,
                                   "dropping late or unknown answer to %" PRIu64 " from %s: %s: %s",
                                   serial, m->env->sender, m->env->error_name,
                                   m->env->error_message);
                else
                        client_log(c, LOG_DEBUG,
                                   "dropping late or unknown answer to %" PRIu64 " from %s", serial,
                                   m->env->sender);
                return;
        }
        p = container_of(node, PendingCall, node);
        client_pending_remove(c, p);
        if (!p->slot) {
                p->reply = bus_message_ref(m);
                return;
        }
        call_complete(c, p->slot, m);
}
