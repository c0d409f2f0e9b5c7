/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Socket pumping of a bus_client: framing messages into the writer, reading
 * frames into received messages, losing the connection, and the event-loop
 * entry points (get_fd/get_events/get_timeout/process/wait/flush/run/exit).
 *
 * Sending packs the envelope once into a chunk of its own; the frame is one
 * WireEntry of three pieces (preamble in the entry's head, the envelope chunk,
 * the message's payload chunk), both chunks pinned by the entry, so payload
 * bytes are never copied again after the application handed them over.
 *
 * Receiving cuts frames in place (see sockio.h) and turns each into a
 * bus_message that references the frame's chunk. At most CLIENT_READ_BATCH
 * frames are read per bus_client_process() and only when the receive queue is
 * empty, so a flooding peer cannot make one call run forever or grow the queue
 * without bound; read_more remembers that frames may still be buffered.
 *
 * Losing the connection only changes state (CLIENT_CLOSING) and never runs a
 * callback, so it is safe from anywhere; bus_client_process() then dispatches
 * what was read before the loss, fails the pending calls and closes.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include <libbus/bus.h>

#include "libbus/bus-internal.h"
#include "libbus/macro.h"

/* ---- Time. */

uint64_t now_usec(void) {
        struct timespec ts;

        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * BUS_USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

uint64_t timeout_to_deadline(uint64_t timeout_usec) {
        uint64_t now = now_usec();

        return timeout_usec > UINT64_MAX - now ? UINT64_MAX : now + timeout_usec;
}

uint32_t usec_to_timeout_ms(uint64_t usec) {
        usec = MIN(usec, CLIENT_TIMEOUT_MAX_USEC);
        return (uint32_t) ((usec + 999) / 1000);
}

int fd_poll(int fd, short events, uint64_t deadline) {
        struct pollfd p = { .fd = fd, .events = events };
        struct timespec ts, *tsp = NULL;
        int r;

        if (deadline != UINT64_MAX) {
                uint64_t now = now_usec(), left = deadline > now ? deadline - now : 0;

                ts.tv_sec = (time_t) (left / BUS_USEC_PER_SEC);
                ts.tv_nsec = (long) (left % BUS_USEC_PER_SEC) * 1000;
                tsp = &ts;
        }
        r = ppoll(&p, 1, tsp, NULL);
        if (r < 0)
                return negative_errno();
        return r > 0;
}

/* ---- Writing. */

int client_queue_message(bus_client *c, bus_message *m) {
        WirePreamble pre = {};
        WireChunk *env;
        WireEntry *e;
        size_t size;
        int r;

        if (c->writer.queued_bytes > CLIENT_QUEUE_MAX_BYTES)
                return -ENOBUFS;
        if (m->request && m->request->replied)
                return -EALREADY;
        r = message_prepare_payload(m, c->shm_threshold, c->max_payload, c->max_fds);
        if (r < 0)
                return r;
        pre.payload_len = (uint32_t) message_inline_size(m);
        pre.n_fds = m->fds ? (uint16_t) m->fds->n : 0;
        /* The broker would disconnect us for more: refuse the message instead. */
        if (pre.n_fds > c->max_fds)
                return -ETOOMANYREFS;
        m->local.memfd_payload_size = m->shm ? m->payload_size : 0;

        m->local.serial = c->serial + 1;
        size = bus__envelope__get_packed_size(&m->local);
        if (size > c->max_envelope) {
                m->local.serial = 0;
                return -EMSGSIZE;
        }
        env = wire_chunk_new(size);
        if (!env) {
                m->local.serial = 0;
                return -ENOMEM;
        }
        e = wire_writer_entry_new(&c->writer);
        if (!e) {
                wire_chunk_unref(env);
                m->local.serial = 0;
                return -ENOMEM;
        }
        env->used = bus__envelope__pack(&m->local, env->data);
        pre.envelope_len = (uint32_t) env->used;
        wire_preamble_encode(e->head, &pre);
        wire_entry_add(e, e->head, WIRE_PREAMBLE_SIZE);
        wire_entry_add(e, env->data, env->used);
        e->pins[0] = env;
        if (pre.payload_len > 0) {
                /* From the chunk the entry pins: m->payload may be a
                 * mapping, which goes with the message. */
                wire_entry_add(e, m->chunk->data, pre.payload_len);
                e->pins[1] = wire_chunk_ref(m->chunk);
        }
        if (pre.n_fds > 0)
                e->fds = wire_fds_ref(m->fds);
        wire_writer_push(&c->writer, e);

        c->serial++;
        m->sealed = true;
        if (m->request) {
                m->request->replied = true;
                m->request = bus_message_unref(m->request);
        }
        /* Batching holds back publishes only: a call or a reply is waited
         * for by someone. */
        if (!c->batching || m->kind != BUS_KIND_PUBLISH ||
            c->writer.queued_bytes >= CLIENT_BATCH_BYTES)
                (void) client_flush_nonblock(c);
        return 0;
}

int client_flush_nonblock(bus_client *c) {
        int r;

        if (c->state != CLIENT_HELLO && c->state != CLIENT_RUNNING)
                return -ECONNRESET;
        r = wire_writer_flush(&c->writer, c->fd);
        if (r < 0) {
                client_connection_lost(c, r, NULL);
                return -ECONNRESET;
        }
        return r;
}

/* ---- Reading. */

/* A message whose shared-memory payload must not be mapped (not a sealed
 * memfd of the announced size): only a broker that failed to check it could
 * pass it on, and the rest of the stream is still sound, so it is dropped,
 * descriptors and all, rather than the connection. A call it answered gets a
 * local error instead, so that its caller does not wait for the timeout. */
static void reject_message(bus_client *c, bus_message *m) {
        uint64_t serial = m->env->reply_serial;
        bus_message *error = NULL;

        client_log(c, LOG_ERR, "dropping message %" PRIu64 " from %s: %s", m->env->serial,
                   m->env->sender, "invalid shared-memory payload");
        if ((m->kind == BUS_KIND_REPLY || m->kind == BUS_KIND_ERROR) && serial > 0 &&
            u64map_get(&c->pending, serial) &&
            message_new_local_error(&error, serial, BUS_ERROR_PROTOCOL,
                                    "Answer from %s has an invalid shared-memory payload",
                                    m->env->sender) >= 0)
                client_enqueue(c, error);
        bus_message_unref(m);
}

static int read_frames(bus_client *c, unsigned max, PendingCall *stop) {
        unsigned n = 0;
        int r;

        for (;;) {
                bus_message *m;
                WireFrame f;

                if ((stop && stop->reply) || (max > 0 && n >= max)) {
                        c->read_more = true;
                        return (int) n;
                }
                r = wire_reader_next(&c->reader, &f);
                if (r < 0)
                        return r;
                if (r > 0) {
                        r = message_new_from_frame(&m, &f);
                        wire_frame_release(&f);
                        if (r < 0) {
                                client_connection_lost(c, r, r == -EBADMSG ?
                                                       "undecodable envelope" : strerror(-r));
                                return -ECONNRESET;
                        }
                        if (message_verify_payload(m) < 0)
                                reject_message(c, m);
                        else
                                client_enqueue(c, m);
                        n++;
                        continue;
                }
                r = wire_reader_recv(&c->reader, c->fd);
                if (r == -EAGAIN) {
                        c->read_more = false;
                        return (int) n;
                }
                if (r < 0)
                        return r;
        }
}

int client_read(bus_client *c, unsigned max, PendingCall *stop) {
        int r;

        if (c->state != CLIENT_HELLO && c->state != CLIENT_RUNNING)
                return -ECONNRESET;
        r = read_frames(c, max, stop);
        if (r < 0) {
                client_connection_lost(c, r, r == -ECONNRESET ? NULL : wire_strerror(r));
                return -ECONNRESET;
        }
        return r;
}

void client_connection_lost(bus_client *c, int error, const char *why) {
        if (c->state != CLIENT_HELLO && c->state != CLIENT_RUNNING)
                return;
        if (why)
                client_log(c, LOG_ERR, "protocol error, disconnecting: %s", why);
        else
                client_log(c, LOG_INFO, "connection to the bus lost: %s", strerror(-error));
        c->state = CLIENT_CLOSING;
        c->read_more = false;
        wire_writer_deinit(&c->writer);
        /* A broker that closes on us usually said why in a last frame:
         * read what is left, so the message is dispatched and logged. */
        if (!why)
                (void) read_frames(c, 0, NULL);
}

void client_close(bus_client *c) {
        client_event_closed(c);
        c->fd = safe_close(c->fd);
        wire_reader_deinit(&c->reader);
        wire_writer_deinit(&c->writer);
        c->read_more = false;
}

bool client_has_work(const bus_client *c) {
        return c->rqueue_first || c->read_more || c->state == CLIENT_CLOSING;
}

/* ---- Event-loop entry points. */

_public_ int bus_client_get_fd(bus_client *c) {
        if (!c)
                return -EINVAL;
        if (c->fd < 0 || c->state == CLIENT_CLOSED)
                return -ENOTCONN;
        return c->fd;
}

_public_ int bus_client_get_events(bus_client *c) {
        if (!c)
                return -EINVAL;
        if (c->fd < 0 || c->state == CLIENT_CLOSED)
                return -ENOTCONN;
        if (c->state == CLIENT_RUNNING && !wire_writer_is_empty(&c->writer))
                return POLLIN | POLLOUT;
        return POLLIN;
}

_public_ int bus_client_get_timeout(bus_client *c, uint64_t *ret) {
        if (!c || !ret)
                return -EINVAL;
        if (c->state == CLIENT_RUNNING || c->state == CLIENT_CLOSING) {
                if (client_has_work(c)) {
                        *ret = 0;
                        return 0;
                }
                if (c->heap_n > 0) {
                        *ret = c->heap[0]->deadline;
                        return 0;
                }
        }
        *ret = UINT64_MAX;
        return 0;
}

static bus_message *rqueue_pop(bus_client *c) {
        bus_message *m = c->rqueue_first;

        if (!m)
                return NULL;
        c->rqueue_first = m->queue_next;
        if (!c->rqueue_first)
                c->rqueue_last = NULL;
        c->rqueue_n--;
        m->queue_next = NULL;
        return m;
}

static int process_one(bus_client *c) {
        bus_message *m;
        int n = 0;

        if (c->state == CLIENT_RUNNING) {
                (void) client_flush_nonblock(c);
                if (!c->rqueue_first && c->state == CLIENT_RUNNING)
                        n = client_read(c, CLIENT_READ_BATCH, NULL);
        }
        if (client_fire_timeout(c, now_usec()))
                return 1;
        m = rqueue_pop(c);
        if (m) {
                client_dispatch(c, m);
                bus_message_unref(m);
                return 1;
        }
        if (c->state == CLIENT_CLOSING) {
                /* Closed before failing the calls, so their callbacks cannot
                 * start new ones. */
                c->state = CLIENT_CLOSED;
                client_fail_pending(c);
                client_close(c);
                return -ECONNRESET;
        }
        return n > 0;
}

_public_ int bus_client_process(bus_client *c) {
        int r;

        if (!c)
                return -EINVAL;
        if (c->state == CLIENT_UNCONNECTED || c->state == CLIENT_HELLO)
                return -ENOTCONN;
        if (c->state == CLIENT_CLOSED)
                return -ECONNRESET;
        if (c->processing)
                return -EBUSY;
        bus_client_ref(c);
        c->processing = true;
        r = process_one(c);
        c->processing = false;
        bus_client_unref(c);
        return r;
}

_public_ int bus_client_wait(bus_client *c, uint64_t timeout_usec) {
        uint64_t deadline, next;
        int r;

        if (!c)
                return -EINVAL;
        if (c->state != CLIENT_RUNNING && c->state != CLIENT_CLOSING)
                return -ENOTCONN;
        if (client_has_work(c))
                return 1;
        deadline = timeout_usec == BUS_TIMEOUT_INFINITE ? UINT64_MAX :
                                                           timeout_to_deadline(timeout_usec);
        next = c->heap_n > 0 ? c->heap[0]->deadline : UINT64_MAX;
        r = fd_poll(c->fd, (short) bus_client_get_events(c), MIN(deadline, next));
        if (r != 0)
                return r;
        return next <= now_usec();
}

_public_ int bus_client_flush(bus_client *c) {
        int r;

        if (!c)
                return -EINVAL;
        r = client_check_sending(c);
        if (r < 0)
                return r;
        for (;;) {
                r = client_flush_nonblock(c);
                if (r < 0)
                        return r;
                if (r > 0)
                        return 0;
                r = fd_poll(c->fd, POLLIN | POLLOUT, UINT64_MAX);
                if (r < 0 && r != -EINTR)
                        return r;
                /* Keep reading meanwhile: a broker whose queue to us is full
                 * stops reading from us until we drain it. */
                r = client_read(c, 0, NULL);
                if (r < 0)
                        return r;
        }
}

_public_ int bus_client_run(bus_client *c) {
        int r;

        if (!c)
                return -EINVAL;
        bus_client_ref(c);
        for (;;) {
                if (c->exit_requested) {
                        c->exit_requested = false;
                        r = c->exit_code;
                        break;
                }
                r = bus_client_process(c);
                if (r < 0)
                        break;
                if (r > 0)
                        continue;
                r = bus_client_wait(c, BUS_TIMEOUT_INFINITE);
                if (r < 0 && r != -EINTR)
                        break;
        }
        bus_client_unref(c);
        return r;
}

_public_ int bus_client_exit(bus_client *c, int code) {
        if (!c || code < 0)
                return -EINVAL;
        c->exit_requested = true;
        c->exit_code = code;
        return 0;
}
