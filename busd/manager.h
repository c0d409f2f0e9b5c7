/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The Manager owns the broker's state: the sd_event loop, the listening
 * sockets, every peer, and the registries (names, subscriptions, pending
 * requests, retained messages). Everything runs on its one thread.
 *
 * Deferred work: a peer is never freed inside a callback that might still
 * touch it. peer_close() only marks it and queues it; the manager's defer
 * source tears it down. New output is flushed at the end of the callback
 * that queued it (manager_flush()), so frames routed from one read leave in
 * as few sendmsg() calls as possible. (A post source would do the same at
 * the cost of a whole extra loop iteration per event.)
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "libbus/list.h"
#include "libbus/macro.h"
#include "libbus/sockio.h"
#include "libbus/wire.h"

typedef struct Hashmap Hashmap;
typedef struct MatchIndex MatchIndex;
typedef struct MatchSub MatchSub;
typedef struct NameRegistry NameRegistry;
typedef struct PendingTable PendingTable;
typedef struct RetainedStore RetainedStore;
typedef struct Peer Peer;

typedef struct ManagerConfig {
        uint32_t max_envelope;           /* bytes, in frames from clients */
        uint32_t max_payload;            /* bytes, inline payload */
        uint32_t max_fds;                /* per frame */
        uint64_t max_queue_bytes;        /* per peer, outgoing */
        unsigned max_subscriptions;      /* per peer */
        unsigned max_queued_fds;         /* per peer, outgoing */
        uint64_t max_memfd_payload;      /* bytes of one memfd payload */
        uint64_t max_memfd_queued;       /* bytes of a sender's memfds held by the broker */
        uint64_t default_timeout_usec;   /* requests */
        uint64_t max_timeout_usec;
        bool system_bus;
} ManagerConfig;

#define MANAGER_DEFAULT_MAX_ENVELOPE (16u * 1024u)
#define MANAGER_DEFAULT_MAX_QUEUE (32u * 1024u * 1024u)
#define MANAGER_DEFAULT_MAX_FDS 16u
#define MANAGER_DEFAULT_MAX_SUBSCRIPTIONS 4096u
#define MANAGER_DEFAULT_MAX_QUEUED_FDS 1024u
#define MANAGER_DEFAULT_MAX_MEMFD_PAYLOAD (UINT64_C(1) << 30)
#define MANAGER_DEFAULT_MAX_MEMFD_QUEUED (UINT64_C(1) << 30)
#define MANAGER_DEFAULT_TIMEOUT_USEC (25ull * 1000000ull)
#define MANAGER_MAX_TIMEOUT_USEC (3600ull * 1000000ull)

void manager_config_init(ManagerConfig *c);

typedef struct ManagerStats {
        uint64_t frames_received;
        uint64_t messages_routed;
        uint64_t deliveries;
        uint64_t dropped;
        uint64_t replies_unexpected;
        uint64_t protocol_errors;
        uint64_t peers_total;
        uint64_t monitor_copies;   /* not in deliveries */
        uint64_t monitor_dropped;  /* not in dropped */
} ManagerStats;

/* One frame to deliver, to one or many peers: envelope bytes (and payload)
 * pinned by chunk, followed on the wire by the sender's stamp and a
 * per-recipient suffix. */
typedef struct OutFrame {
        WireChunk *chunk;
        const uint8_t *envelope;
        size_t envelope_len;
        const uint8_t *payload;
        size_t payload_len;
        WireChunk *stamp;   /* NULL when the envelope carries the sender itself */
        WireFds *fds;
} OutFrame;

typedef struct Manager {
        sd_event *event;
        sd_event_source *defer_close;
        ManagerConfig config;
        ManagerStats stats;
        uint64_t start_usec;    /* CLOCK_MONOTONIC */
        bool shutting_down;     /* no more events are published */

        List listeners;
        List peers;
        List dirty;             /* peers with output not yet flushed */
        List closing;           /* peers waiting for teardown */
        List lagging;           /* peers whose lagging event is not yet published */
        List readable;          /* peers with input left after their last read */
        sd_event_source *defer_read;
        unsigned n_peers;
        Hashmap *peers_by_id;
        uint64_t next_peer_id;

        NameRegistry *names;
        MatchIndex *matches;
        PendingTable *pending;
        RetainedStore *retained;
        List monitors;          /* Monitor, see monitor.h */
        unsigned n_monitors;    /* the router makes copies only while non-zero */
        uint8_t *introspection; /* bus.Introspect's descriptor set, packed on first use */
        size_t introspection_size;
        WireChunk *stamp;       /* the broker's own identity, for its events */
        WireEntryPool entry_pool; /* queue entries shared by every peer's writer */

        /* Scratch space for routing one publish, reused so routing allocates
         * nothing once warm. */
        struct RouteHit {
                Peer *peer;
                uint64_t sub_id;
                unsigned next;  /* next hit of the same peer, or UINT_MAX */
        } *hits;
        unsigned n_hits;
        unsigned hits_size;
        Peer **recipients;
        unsigned n_recipients;
        unsigned recipients_size;
        uint64_t route_gen;
} Manager;

int manager_new(Manager **ret, const ManagerConfig *config);
Manager *manager_free(Manager *m);
DEFINE_CLEANUP(Manager, manager_free);

/* Takes ownership of a listening socket. unlink_path: socket file to remove
 * on shutdown (NULL for a socket we were handed). */
int manager_add_listener(Manager *m, int fd, const char *unlink_path);
/* Runs until SIGTERM/SIGINT. Sends READY=1 once listening. */
int manager_run(Manager *m);

void manager_schedule_close(Manager *m, Peer *p);
void manager_mark_dirty(Manager *m, Peer *p);
/* Sends what the current callback queued, to every peer it queued for, and
 * announces peers that started lagging. Each event callback that can queue
 * output ends with it: sd-event dispatches one source per loop iteration, so
 * this is as late, and as batched, as a flush can be. */
void manager_flush(Manager *m);
void manager_mark_lagging(Manager *m, Peer *p);
/* The peer has input its I/O source will not report again (edge-triggered):
 * read it on the next loop turn. */
void manager_mark_readable(Manager *m, Peer *p);
Peer *manager_find_peer(Manager *m, const char *unique_id);
uint64_t manager_now_usec(void);  /* CLOCK_MONOTONIC */
