/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Monitors: connections that asked (method BecomeMonitor of "bus") to watch
 * the bus's traffic instead of taking part in it.
 *
 * A Monitor belongs to its Peer (peer->monitor) and sits in the manager's
 * list of monitors while it lives; manager->n_monitors counts them. The
 * router calls monitor_copy() only while that counter is non-zero, so a bus
 * without monitors pays one test of it per routed message and nothing else.
 *
 * A copy is the frame as its receiver gets it (the sender's envelope bytes,
 * the sender's stamp, the payload by reference) followed by the monitor
 * stamps: flags with ENVELOPE_FLAG_MONITOR, timestamp_ns, monitor_receiver or
 * monitor_receivers, and monitor_fds. Descriptors are not forwarded, except a
 * memfd payload, which is duplicated into a descriptor set of the copies' own:
 * the sender's shared-memory quota is then released when its receivers are
 * done, however slowly monitors read. Copies are always droppable: a monitor
 * that falls behind loses copies (counted in the stats and told in-band
 * through missed), never slows anyone down, and is not announced on
 * bus.peer.lagging.
 *
 * A monitor never gets a copy of what it sends or what is sent to it.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "busd/envelope.h"
#include "busd/manager.h"
#include "proto/bus.pb-c.h"

#define MONITOR_FILTERS_MAX 256u   /* of each kind: topics, names */

typedef struct Monitor Monitor;

/* Expected outcomes of monitor_new(): which filter is malformed. */
enum {
        MONITOR_E_TOPIC = 1,
        MONITOR_E_NAME,
        MONITOR_E_KIND,
        MONITOR_E_TOO_MANY,
};

/* Checks the filters of req and builds a monitor for p, not attached yet.
 * Returns 0, a MONITOR_E_* outcome, or -ENOMEM. */
int monitor_new(Peer *p, const Bus__BecomeMonitorRequest *req, Monitor **ret);
/* Text for a MONITOR_E_* outcome, for the error sent to the peer. */
const char *monitor_strerror(int outcome);
/* Makes its peer a monitor: from now on it gets copies and may not send. */
void monitor_attach(Monitor *mon);
/* Detaches (if attached) and frees. Accepts NULL, returns NULL. */
Monitor *monitor_free(Monitor *mon);
DEFINE_CLEANUP(Monitor, monitor_free);

/* One message the router handled, as the filters and the stamps need it. */
typedef struct MonitorMessage {
        const OutFrame *frame;          /* as its receivers get it */
        uint32_t kind;                  /* BUS__KIND__* */
        uint32_t flags;                 /* the envelope's flags */
        EnvelopeString topic;           /* PUBLISH */
        EnvelopeString destination;     /* REQUEST: as the sender wrote it */
        uint64_t memfd_payload_size;    /* non-zero: the frame's last descriptor is the payload */
        Peer *sender;                   /* NULL: the broker */
        Peer *receiver;                 /* REQUEST/REPLY/ERROR: the peer it went to, or NULL */
        bool to_broker;                 /* a REQUEST to "bus" */
        unsigned receivers;             /* PUBLISH: subscriptions it was delivered to */
        Peer *const *recipients;        /* PUBLISH: the peers it was routed to */
        unsigned n_recipients;
} MonitorMessage;

/* Queues a copy of msg to every monitor whose filters match it. */
void monitor_copy(Manager *m, const MonitorMessage *msg);
