/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A Peer is one client connection: its socket and I/O source, the frame
 * reader and outgoing queue, the credentials taken at accept, its unique id,
 * and its links into the registries (names, subscriptions, pending calls).
 *
 * Lifetime: peer_new() at accept; peer_close() marks it closing and hands it
 * to the manager, which calls peer_free() from a deferred source. A closing
 * peer receives nothing more and its input is ignored.
 *
 * Flow control: while the outgoing queue holds more than the configured
 * limit, droppable deliveries (publishes) are dropped and counted, requests
 * are refused, and the peer's own input is not read until the queue has
 * drained to half the limit.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>

#include "busd/manager.h"
#include "busd/name.h"
#include "libbus/list.h"
#include "libbus/macro.h"
#include "libbus/sockio.h"

typedef enum PeerState {
        PEER_STATE_NEW,     /* connected, no Hello yet */
        PEER_STATE_ACTIVE,  /* greeted */
        PEER_STATE_MONITOR, /* greeted, then became a monitor: receives copies only */
        PEER_STATE_CLOSING, /* waiting for teardown */
} PeerState;

/* Expected outcomes of peer_deliver(). */
enum {
        PEER_E_FULL = 1,    /* queue over its limit: dropped or refused */
        PEER_E_CLOSING,     /* the peer is going away */
};

struct Peer {
        Manager *manager;
        uint64_t id;
        char unique_id[32];
        int fd;
        sd_event_source *io;
        uint32_t io_events;   /* currently requested epoll events */
        PeerState state;
        bool greeted;         /* said Hello: its departure is announced */

        WireReader reader;
        WireWriter writer;

        struct ucred ucred;
        char *security_label; /* SO_PEERSEC, NULL when unavailable */
        char *description;    /* from Hello */
        uint64_t connected_realtime_usec;
        WireChunk *stamp;     /* encoded sender fields appended to its frames */
        struct PayloadAccount *payload_account; /* its memfd bytes held by the broker */
        struct Monitor *monitor; /* set while it is a monitor, see monitor.h */

        NameClient names;
        Hashmap *subscriptions; /* subscription id -> MatchSub */
        List calls_in;          /* Pending where this peer is the callee */
        List calls_out;         /* Pending where this peer is the caller */

        uint64_t missed;        /* dropped since the last delivery */
        uint64_t dropped;       /* dropped in all */
        bool lagging;           /* dropping now; announced once per episode */
        bool reading_paused;

        List link;              /* manager->peers */
        List dirty_link;        /* manager->dirty */
        List closing_link;      /* manager->closing */
        List lagging_link;      /* manager->lagging */
        List readable_link;     /* manager->readable */

        /* Routing scratch, see router.c. */
        uint64_t route_gen;
        unsigned route_first;
        unsigned route_last;
};

/* Takes ownership of a connected socket. */
int peer_new(Manager *m, int fd, Peer **ret);
Peer *peer_free(Peer *p);
DEFINE_CLEANUP(Peer, peer_free);

/* Marks the peer closing and schedules its teardown. reason is logged. */
void peer_close(Peer *p, const char *reason);
/* Sends a bus.Error.Protocol frame explaining error, logs, closes. */
void peer_protocol_error(Peer *p, const char *reason);

/* Queues a frame for the peer. suffix is appended to the envelope (after the
 * sender stamp). Droppable frames are dropped while the peer is full; others
 * are refused with PEER_E_FULL only if refuse_when_full is set, and queued
 * otherwise. Returns 0, PEER_E_FULL, PEER_E_CLOSING, or -ENOMEM. */
int peer_deliver(Peer *p, const OutFrame *o, const uint8_t *suffix, size_t suffix_len,
                 bool droppable);
bool peer_is_full(const Peer *p);
/* Counts a delivery dropped for p: missed (told on its next delivery), the
 * stats, and for a receiver that is not a monitor, bus.peer.lagging once
 * per episode. peer_deliver() calls it for droppable frames. */
void peer_drop(Peer *p);

/* Reads and routes what the peer sent, a bounded amount per call. */
void peer_read(Peer *p);

/* Writes queued output; closes the peer on a broken connection. */
void peer_flush(Peer *p);

static inline bool peer_is_closing(const Peer *p) {
        return p->state == PEER_STATE_CLOSING;
}
