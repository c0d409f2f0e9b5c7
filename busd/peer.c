/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Peer connections: accept-time setup, reading frames and handing them to
 * the router, queueing deliveries with flow control, flushing, and closing.
 * See peer.h for the lifetime and flow-control rules.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

#include "busd/hashmap.h"
#include "busd/log.h"
#include "busd/monitor.h"
#include "busd/payload.h"
#include "busd/peer.h"
#include "busd/router.h"
#include "libbus/macro.h"

/* Receive buffer size: large enough that a burst of small frames is read with
 * one recvmsg(). */
#define PEER_READ_CHUNK (64u * 1024u)
/* recvmsg() calls per wake-up before giving other peers a turn. */
#define PEER_READ_ROUNDS 4
/* Envelope fields the broker stamps (see proto/bus.proto). */
#define FIELD_SENDER 16
#define FIELD_SENDER_UID 17
#define FIELD_SENDER_GID 18
#define FIELD_SENDER_PID 19
#define FIELD_MISSED 21

static int peer_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);
static bool peer_route_buffered(Peer *p);

/* The stamp is encoded once per connection and appended to every frame it
 * sends; all four fields are always present so a zero uid is explicit. */
static int peer_build_stamp(Peer *p) {
        size_t len = strlen(p->unique_id);
        WireChunk *c = wire_chunk_new(len + 48);

        if (!c)
                return -ENOMEM;
        c->used = wire_put_tag_bytes(c->data, FIELD_SENDER, p->unique_id, len);
        c->used += wire_put_tag_varint(c->data + c->used, FIELD_SENDER_UID, p->ucred.uid);
        c->used += wire_put_tag_varint(c->data + c->used, FIELD_SENDER_GID, p->ucred.gid);
        c->used += wire_put_tag_varint(c->data + c->used, FIELD_SENDER_PID, (uint32_t) p->ucred.pid);
        p->stamp = c;
        return 0;
}

static void peer_read_security_label(Peer *p) {
        char label[256];
        socklen_t len = sizeof(label) - 1;

        /* Absent without an LSM (ENOPROTOOPT): that is not an error. */
        if (getsockopt(p->fd, SOL_SOCKET, SO_PEERSEC, label, &len) < 0 || len == 0)
                return;
        label[MIN((size_t) len, sizeof(label) - 1)] = '\0';
        p->security_label = strdup(label);
}

int peer_new(Manager *m, int fd, Peer **ret) {
        _cleanup_(peer_freep) Peer *p = NULL;
        socklen_t len = sizeof(struct ucred);
        struct timespec ts;
        int r;

        p = calloc(1, sizeof(*p));
        if (!p) {
                safe_close(fd);
                return -ENOMEM;
        }
        p->manager = m;
        p->fd = fd;
        p->state = PEER_STATE_NEW;
        list_init(&p->link);
        list_init(&p->dirty_link);
        list_init(&p->closing_link);
        list_init(&p->lagging_link);
        list_init(&p->readable_link);
        list_init(&p->calls_in);
        list_init(&p->calls_out);
        name_client_init(&p->names);
        wire_writer_init(&p->writer);
        wire_writer_set_pool(&p->writer, &m->entry_pool);
        wire_reader_init(&p->reader, PEER_READ_CHUNK, m->config.max_envelope,
                         m->config.max_payload, m->config.max_fds);

        /* Credentials are taken once, now: a pid that exits later stays the
         * pid this connection was opened by. */
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &p->ucred, &len) < 0)
                return negative_errno();
        peer_read_security_label(p);

        p->id = ++m->next_peer_id;
        snprintf(p->unique_id, sizeof(p->unique_id), ":1.%llu", (unsigned long long) p->id);
        r = peer_build_stamp(p);
        if (r < 0)
                return r;
        p->payload_account = payload_account_new();
        if (!p->payload_account)
                return -ENOMEM;
        r = hashmap_new(&p->subscriptions, HASHMAP_KEY_U64);
        if (r < 0)
                return r;
        r = hashmap_put(m->peers_by_id, &p->id, p);
        if (r < 0)
                return r;
        /* Edge-triggered: level-triggered, every turn's epoll_wait would
         * report every readable peer again, and closing 10,000 at once would
         * take 10,000 turns of 10,000 events. A peer not read to EAGAIN is
         * put on the manager's readable list instead (manager_mark_readable). */
        r = sd_event_add_io(m->event, &p->io, fd, EPOLLIN | EPOLLET, peer_io, p);
        if (r < 0)
                return r;
        p->io_events = EPOLLIN;
        clock_gettime(CLOCK_REALTIME, &ts);
        p->connected_realtime_usec = (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;

        list_append(&m->peers, &p->link);
        m->n_peers++;
        m->stats.peers_total++;
        log_debug("peer %s connected (pid %d, uid %u)", p->unique_id, (int) p->ucred.pid,
                  (unsigned) p->ucred.uid);
        *ret = TAKE_PTR(p);
        return 0;
}

Peer *peer_free(Peer *p) {
        if (!p)
                return NULL;
        router_peer_gone(p);
        monitor_free(p->monitor);
        /* Best effort: a protocol error frame queued just before closing. */
        if (p->fd >= 0 && !wire_writer_is_empty(&p->writer))
                (void) wire_writer_flush(&p->writer, p->fd);
        if (p->manager && p->id)
                hashmap_remove(p->manager->peers_by_id, &p->id);
        if (list_is_linked(&p->link))
                p->manager->n_peers--;
        list_remove(&p->link);
        list_remove(&p->dirty_link);
        list_remove(&p->closing_link);
        list_remove(&p->lagging_link);
        list_remove(&p->readable_link);
        sd_event_source_disable_unref(p->io);
        wire_reader_deinit(&p->reader);
        wire_writer_deinit(&p->writer);
        name_client_deinit(&p->names);
        hashmap_free(p->subscriptions);
        wire_chunk_unref(p->stamp);
        payload_account_unref(p->payload_account);
        free(p->security_label);
        free(p->description);
        safe_close(p->fd);
        free(p);
        return NULL;
}

static void peer_update_io(Peer *p) {
        uint32_t events = 0;

        if (peer_is_closing(p))
                return;
        if (!p->reading_paused)
                events |= EPOLLIN;
        if (!wire_writer_is_empty(&p->writer))
                events |= EPOLLOUT;
        if (events == p->io_events)
                return;
        if (sd_event_source_set_io_events(p->io, events | EPOLLET) >= 0)
                p->io_events = events;
}

void peer_close(Peer *p, const char *reason) {
        if (peer_is_closing(p))
                return;
        log_at(p->state == PEER_STATE_ACTIVE ? LOG_DEBUG : LOG_INFO,
               "peer %s (pid %d, uid %u) closed: %s", p->unique_id, (int) p->ucred.pid,
               (unsigned) p->ucred.uid, reason);
        p->state = PEER_STATE_CLOSING;
        sd_event_source_set_enabled(p->io, SD_EVENT_OFF);
        list_remove(&p->dirty_link);
        manager_schedule_close(p->manager, p);
}

void peer_protocol_error(Peer *p, const char *reason) {
        if (peer_is_closing(p))
                return;
        log_warning("peer %s (pid %d, uid %u): protocol error: %s", p->unique_id,
                    (int) p->ucred.pid, (unsigned) p->ucred.uid, reason);
        p->manager->stats.protocol_errors++;
        router_send_error(p->manager, p, 0, "bus.Error.Protocol", "%s", reason);
        peer_close(p, "protocol error");
}

bool peer_is_full(const Peer *p) {
        return p->writer.queued_bytes >= p->manager->config.max_queue_bytes ||
               p->writer.queued_fds >= p->manager->config.max_queued_fds;
}

/* Appends the missed counter to a suffix; returns its new length. */
static size_t peer_add_missed(Peer *p, uint8_t *out) {
        size_t n;

        if (p->missed == 0)
                return 0;
        n = wire_put_tag_varint(out, FIELD_MISSED, p->missed);
        p->missed = 0;
        return n;
}

void peer_drop(Peer *p) {
        p->missed++;
        p->dropped++;
        if (p->monitor) {
                /* Monitors are not announced: nobody has to wait for them. */
                p->manager->stats.monitor_dropped++;
                if (!p->lagging) {
                        p->lagging = true;
                        log_warning("monitor %s (pid %d) is not reading: copies dropped",
                                    p->unique_id, (int) p->ucred.pid);
                }
                return;
        }
        p->manager->stats.dropped++;
        if (!p->lagging) {
                p->lagging = true;
                manager_mark_lagging(p->manager, p);
        }
}

int peer_deliver(Peer *p, const OutFrame *o, const uint8_t *suffix, size_t suffix_len,
                 bool droppable) {
        size_t stamp_len = o->stamp ? o->stamp->used : 0, tail_len, env_len;
        uint8_t *tail;
        WireEntry *e;

        if (peer_is_closing(p))
                return PEER_E_CLOSING;
        if (droppable && peer_is_full(p)) {
                peer_drop(p);
                return PEER_E_FULL;
        }

        e = wire_writer_entry_new(&p->writer);
        if (!e)
                return -ENOMEM;

        /* The per-recipient bytes follow the preamble in the entry's inline
         * head when they fit, else in a chunk of their own. */
        if (WIRE_PREAMBLE_SIZE + suffix_len + 16 <= sizeof(e->head))
                tail = e->head + WIRE_PREAMBLE_SIZE;
        else {
                e->pins[2] = wire_chunk_new(suffix_len + 16);
                if (!e->pins[2]) {
                        wire_writer_entry_discard(&p->writer, e);
                        return -ENOMEM;
                }
                tail = e->pins[2]->data;
        }
        if (suffix_len > 0)
                memcpy(tail, suffix, suffix_len);
        tail_len = suffix_len + peer_add_missed(p, tail + suffix_len);

        env_len = o->envelope_len + stamp_len + tail_len;
        if (env_len > WIRE_ENVELOPE_MAX) {
                log_error("frame for %s dropped: envelope of %zu bytes", p->unique_id, env_len);
                wire_writer_entry_discard(&p->writer, e);
                peer_drop(p);
                return PEER_E_FULL;
        }
        wire_preamble_encode(e->head, &(WirePreamble){
                                              .envelope_len = (uint32_t) env_len,
                                              .payload_len = (uint32_t) o->payload_len,
                                              .n_fds = o->fds ? (uint16_t) o->fds->n : 0,
                                      });
        wire_entry_add(e, e->head, WIRE_PREAMBLE_SIZE);
        wire_entry_add(e, o->envelope, o->envelope_len);
        if (stamp_len > 0)
                wire_entry_add(e, o->stamp->data, stamp_len);
        wire_entry_add(e, tail, tail_len);
        wire_entry_add(e, o->payload, o->payload_len);
        e->pins[0] = wire_chunk_ref(o->chunk);
        e->pins[1] = o->stamp ? wire_chunk_ref(o->stamp) : NULL;
        e->fds = o->fds ? wire_fds_ref(o->fds) : NULL;
        wire_writer_push(&p->writer, e);

        p->manager->stats.deliveries++;
        manager_mark_dirty(p->manager, p);
        if (!p->reading_paused && peer_is_full(p)) {
                /* It does not read what it gets: stop taking more work from it. */
                p->reading_paused = true;
                peer_update_io(p);
        }
        return 0;
}

void peer_flush(Peer *p) {
        int r;

        list_remove(&p->dirty_link);
        if (peer_is_closing(p))
                return;
        r = wire_writer_flush(&p->writer, p->fd);
        if (r < 0) {
                char reason[64];
                snprintf(reason, sizeof(reason), "write failed: %s", strerror(-r));
                peer_close(p, reason);
                return;
        }
        if (p->writer.queued_bytes <= p->manager->config.max_queue_bytes / 2) {
                p->lagging = false;
                if (p->reading_paused) {
                        p->reading_paused = false;
                        /* Frames read before the pause, and bytes still in
                         * the socket, get no new edge: read on now. */
                        if (peer_route_buffered(p))
                                manager_mark_readable(p->manager, p);
                }
        }
        peer_update_io(p);
}

/* Routes the complete frames already buffered. Returns false when the peer
 * must not be read any further now (closing, or paused by flow control). */
static bool peer_route_buffered(Peer *p) {
        WireFrame frame;
        int r;

        while ((r = wire_reader_next(&p->reader, &frame)) > 0) {
                router_handle_frame(p, &frame);
                wire_frame_release(&frame);
                if (peer_is_closing(p) || p->reading_paused)
                        return false;
        }
        if (r < 0) {
                peer_protocol_error(p, wire_strerror(r));
                return false;
        }
        return true;
}

void peer_read(Peer *p) {
        int r;

        for (int round = 0; round < PEER_READ_ROUNDS; round++) {
                if (peer_is_closing(p) || p->reading_paused)
                        return;
                r = wire_reader_recv(&p->reader, p->fd);
                if (r == -EAGAIN)
                        return;
                if (r == -ECONNRESET || r == -EPIPE) {
                        peer_close(p, "disconnected");
                        return;
                }
                if (r == -ENOBUFS || r == -ETOOMANYREFS) {
                        peer_protocol_error(p, wire_strerror(r));
                        return;
                }
                if (r < 0) {
                        char reason[64];
                        snprintf(reason, sizeof(reason), "read failed: %s", strerror(-r));
                        peer_close(p, reason);
                        return;
                }
                if (!peer_route_buffered(p))
                        return;
        }
        /* Not read to EAGAIN: no new edge will come for what is left. */
        manager_mark_readable(p->manager, p);
}

static int peer_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Peer *p = userdata;

        /* Errors are handled here, never returned: sd-event would disable the
         * source, and one bad peer must not affect the loop. */
        if (revents & EPOLLOUT)
                peer_flush(p);
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                if (!p->reading_paused)
                        peer_read(p);
                else if (revents & (EPOLLHUP | EPOLLERR))
                        peer_close(p, "disconnected");
        }
        manager_flush(p->manager);
        return 0;
}
