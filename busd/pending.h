/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Requests waiting for their reply. Each Pending is keyed by (caller id,
 * caller's serial), linked into its caller's and its callee's lists (so a
 * departing peer finds its calls at once), and sits in a min-heap of
 * deadlines behind a single sd-event timer: one timer for all requests instead
 * of one event source each. On expiry the caller gets bus.Error.Timeout.
 */
#pragma once

#include <stdint.h>

#include "busd/hashmap.h"
#include "busd/manager.h"
#include "libbus/list.h"

typedef struct Pending {
        HashmapU64Pair key;   /* caller id, serial */
        uint64_t serial;
        Peer *caller;
        Peer *callee;
        uint64_t deadline;    /* CLOCK_MONOTONIC usec */
        unsigned heap_index;
        List caller_link;     /* caller->calls_out */
        List callee_link;     /* callee->calls_in */
} Pending;

int pending_table_new(PendingTable **ret, Manager *m);
PendingTable *pending_table_free(PendingTable *t);

/* Starts tracking a request. -EEXIST if the caller already waits on serial. */
int pending_add(PendingTable *t, Peer *caller, uint64_t serial, Peer *callee,
                uint64_t timeout_usec);
Pending *pending_find(PendingTable *t, uint64_t caller_id, uint64_t serial);
/* Forgets a request (accepts NULL). */
void pending_free(PendingTable *t, Pending *pd);
unsigned pending_count(const PendingTable *t);
