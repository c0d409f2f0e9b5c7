/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Pending requests: hash table, deadline heap, timer; see pending.h. */
#include <errno.h>
#include <stdlib.h>

#include "busd/log.h"
#include "busd/peer.h"
#include "busd/pending.h"
#include "busd/router.h"

/* Recycled Pending objects: request/reply is the hot path. */
#define PENDING_FREE_MAX 1024u

struct PendingTable {
        Manager *manager;
        Hashmap *map;
        Pending **heap;
        unsigned n_heap;
        unsigned heap_size;
        sd_event_source *timer;
        uint64_t armed_for;     /* deadline the timer is set to, 0 when off */
        Pending *free_list;     /* linked through caller */
        unsigned n_free;
};

static int pending_timer(sd_event_source *s, uint64_t usec, void *userdata);

static bool heap_less(const Pending *a, const Pending *b) {
        return a->deadline < b->deadline;
}

static void heap_swap(PendingTable *t, unsigned i, unsigned j) {
        Pending *tmp = t->heap[i];

        t->heap[i] = t->heap[j];
        t->heap[j] = tmp;
        t->heap[i]->heap_index = i;
        t->heap[j]->heap_index = j;
}

static void heap_up(PendingTable *t, unsigned i) {
        while (i > 0 && heap_less(t->heap[i], t->heap[(i - 1) / 2])) {
                heap_swap(t, i, (i - 1) / 2);
                i = (i - 1) / 2;
        }
}

static void heap_down(PendingTable *t, unsigned i) {
        for (;;) {
                unsigned l = 2 * i + 1, r = l + 1, m = i;

                if (l < t->n_heap && heap_less(t->heap[l], t->heap[m]))
                        m = l;
                if (r < t->n_heap && heap_less(t->heap[r], t->heap[m]))
                        m = r;
                if (m == i)
                        return;
                heap_swap(t, i, m);
                i = m;
        }
}

static void heap_remove(PendingTable *t, Pending *pd) {
        unsigned i = pd->heap_index;

        t->n_heap--;
        if (i == t->n_heap)
                return;
        t->heap[i] = t->heap[t->n_heap];
        t->heap[i]->heap_index = i;
        heap_down(t, i);
        heap_up(t, i);
}

/* Points the timer at the earliest deadline. Re-arming only when the head
 * moved earlier (or the heap emptied) keeps sd-event calls off the common
 * path; a timer that fires early simply re-arms. */
static void timer_update(PendingTable *t) {
        uint64_t next = t->n_heap ? t->heap[0]->deadline : 0;

        /* With nothing left, an armed timer stays armed: it fires once,
         * finds nothing, and is not re-armed. Disarming here and arming again
         * on the next request would cost two sd-event calls per call. */
        if (next == 0)
                return;
        if (t->armed_for && t->armed_for <= next)
                return;
        sd_event_source_set_time(t->timer, next);
        sd_event_source_set_enabled(t->timer, SD_EVENT_ONESHOT);
        t->armed_for = next;
}

int pending_table_new(PendingTable **ret, Manager *m) {
        PendingTable *t = calloc(1, sizeof(*t));
        int r;

        if (!t)
                return -ENOMEM;
        t->manager = m;
        r = hashmap_new(&t->map, HASHMAP_KEY_U64_PAIR);
        if (r < 0)
                goto fail;
        /* Accuracy 1 ms: timeouts are coarse, and a wider window lets the
         * kernel batch wake-ups. */
        r = sd_event_add_time(m->event, &t->timer, CLOCK_MONOTONIC, UINT64_MAX, 1000,
                              pending_timer, t);
        if (r < 0)
                goto fail;
        sd_event_source_set_enabled(t->timer, SD_EVENT_OFF);
        *ret = t;
        return 0;
fail:
        pending_table_free(t);
        return r;
}

PendingTable *pending_table_free(PendingTable *t) {
        Pending *pd;

        if (!t)
                return NULL;
        while (t->n_heap > 0)
                pending_free(t, t->heap[0]);
        while ((pd = t->free_list)) {
                t->free_list = (Pending *) pd->caller;
                free(pd);
        }
        sd_event_source_disable_unref(t->timer);
        hashmap_free(t->map);
        free(t->heap);
        free(t);
        return NULL;
}

int pending_add(PendingTable *t, Peer *caller, uint64_t serial, Peer *callee,
                uint64_t timeout_usec) {
        HashmapU64Pair key = { caller->id, serial };
        Pending *pd;
        int r;

        if (hashmap_get(t->map, &key))
                return -EEXIST;
        if (t->n_heap == t->heap_size) {
                unsigned n = t->heap_size ? t->heap_size * 2 : 64;
                Pending **h = realloc(t->heap, n * sizeof(*h));
                if (!h)
                        return -ENOMEM;
                t->heap = h;
                t->heap_size = n;
        }
        if (t->free_list) {
                pd = t->free_list;
                t->free_list = (Pending *) pd->caller;
                t->n_free--;
        } else {
                pd = malloc(sizeof(*pd));
                if (!pd)
                        return -ENOMEM;
        }
        *pd = (Pending){
                .key = key,
                .serial = serial,
                .caller = caller,
                .callee = callee,
                .deadline = manager_now_usec() + timeout_usec,
        };
        r = hashmap_put(t->map, &pd->key, pd);
        if (r < 0) {
                free(pd);
                return r;
        }
        list_append(&caller->calls_out, &pd->caller_link);
        list_append(&callee->calls_in, &pd->callee_link);
        pd->heap_index = t->n_heap;
        t->heap[t->n_heap++] = pd;
        heap_up(t, pd->heap_index);
        timer_update(t);
        return 0;
}

Pending *pending_find(PendingTable *t, uint64_t caller_id, uint64_t serial) {
        HashmapU64Pair key = { caller_id, serial };

        return hashmap_get(t->map, &key);
}

void pending_free(PendingTable *t, Pending *pd) {
        if (!pd)
                return;
        hashmap_remove(t->map, &pd->key);
        list_remove(&pd->caller_link);
        list_remove(&pd->callee_link);
        heap_remove(t, pd);
        if (t->n_free < PENDING_FREE_MAX) {
                pd->caller = (Peer *) t->free_list;
                t->free_list = pd;
                t->n_free++;
        } else
                free(pd);
}

unsigned pending_count(const PendingTable *t) {
        return t->n_heap;
}

static int pending_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        PendingTable *t = userdata;
        uint64_t now = manager_now_usec();

        t->armed_for = 0;
        while (t->n_heap > 0 && t->heap[0]->deadline <= now) {
                Pending *pd = t->heap[0];
                Peer *caller = pd->caller, *callee = pd->callee;
                uint64_t serial = pd->serial;

                pending_free(t, pd);
                log_debug("request %llu from %s to %s timed out", (unsigned long long) serial,
                          caller->unique_id, callee->unique_id);
                router_send_error(t->manager, caller, serial, "bus.Error.Timeout",
                                  "%s did not reply in time", callee->unique_id);
        }
        timer_update(t);
        manager_flush(t->manager);
        return 0;
}
