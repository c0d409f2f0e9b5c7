/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The broker's top-level state and event loop; see manager.h. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "busd/hashmap.h"
#include "busd/listener.h"
#include "busd/log.h"
#include "busd/match.h"
#include "busd/name.h"
#include "busd/peer.h"
#include "busd/pending.h"
#include "busd/retained.h"
#include "busd/router.h"
#include "libbus/topic.h"
#include "proto/bus.pb-c.h"

void manager_config_init(ManagerConfig *c) {
        *c = (ManagerConfig){
                .max_envelope = MANAGER_DEFAULT_MAX_ENVELOPE,
                .max_payload = WIRE_PAYLOAD_DEFAULT_MAX,
                .max_fds = MANAGER_DEFAULT_MAX_FDS,
                .max_queue_bytes = MANAGER_DEFAULT_MAX_QUEUE,
                .max_subscriptions = MANAGER_DEFAULT_MAX_SUBSCRIPTIONS,
                .max_queued_fds = MANAGER_DEFAULT_MAX_QUEUED_FDS,
                .max_memfd_payload = MANAGER_DEFAULT_MAX_MEMFD_PAYLOAD,
                .max_memfd_queued = MANAGER_DEFAULT_MAX_MEMFD_QUEUED,
                .default_timeout_usec = MANAGER_DEFAULT_TIMEOUT_USEC,
                .max_timeout_usec = MANAGER_MAX_TIMEOUT_USEC,
        };
}

uint64_t manager_now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

void manager_mark_dirty(Manager *m, Peer *p) {
        if (!list_is_linked(&p->dirty_link))
                list_append(&m->dirty, &p->dirty_link);
}

void manager_mark_lagging(Manager *m, Peer *p) {
        if (!list_is_linked(&p->lagging_link))
                list_append(&m->lagging, &p->lagging_link);
}

void manager_mark_readable(Manager *m, Peer *p) {
        if (!list_is_linked(&p->readable_link))
                list_append(&m->readable, &p->readable_link);
        sd_event_source_set_enabled(m->defer_read, SD_EVENT_ONESHOT);
}

/* Reads on for the peers that had more input than one read takes. Each is
 * taken off the list first: peer_read() puts it back if it still has more. */
static int manager_read_peers(sd_event_source *s, void *userdata) {
        Manager *m = userdata;
        List batch;

        list_init(&batch);
        /* Move the list aside, so peers marked again go to the next turn. */
        if (!list_is_empty(&m->readable)) {
                batch.next = m->readable.next;
                batch.prev = m->readable.prev;
                batch.next->prev = &batch;
                batch.prev->next = &batch;
                list_init(&m->readable);
        }
        while (!list_is_empty(&batch)) {
                Peer *p = list_first_entry(&batch, Peer, readable_link);

                list_remove(&p->readable_link);
                if (!peer_is_closing(p) && !p->reading_paused)
                        peer_read(p);
        }
        manager_flush(m);
        return 0;
}

void manager_schedule_close(Manager *m, Peer *p) {
        if (!list_is_linked(&p->closing_link))
                list_append(&m->closing, &p->closing_link);
        sd_event_source_set_enabled(m->defer_close, SD_EVENT_ONESHOT);
}

Peer *manager_find_peer(Manager *m, const char *unique_id) {
        unsigned long long id;
        char *end;

        if (!name_is_valid_unique(unique_id))
                return NULL;
        errno = 0;
        id = strtoull(unique_id + 3, &end, 10);
        if (errno != 0 || *end)
                return NULL;
        return hashmap_get(m->peers_by_id, &(uint64_t){ id });
}

/* Announces peers that started dropping since the last round. Done here, not
 * where the drop happens, because that is in the middle of a fan-out. */
static void manager_announce_lagging(Manager *m) {
        while (!list_is_empty(&m->lagging)) {
                Peer *p = list_first_entry(&m->lagging, Peer, lagging_link);
                Bus__PeerLagging ev = BUS__PEER_LAGGING__INIT;

                list_remove(&p->lagging_link);
                if (peer_is_closing(p))
                        continue;
                log_warning("peer %s (pid %d) is not reading: %llu deliveries dropped so far",
                            p->unique_id, (int) p->ucred.pid, (unsigned long long) p->dropped);
                ev.unique_id = p->unique_id;
                ev.dropped = p->dropped;
                ev.queued_bytes = p->writer.queued_bytes;
                router_publish_event(m, "bus.peer.lagging", &ev.base);
        }
}

void manager_flush(Manager *m) {
        manager_announce_lagging(m);
        while (!list_is_empty(&m->dirty))
                peer_flush(list_first_entry(&m->dirty, Peer, dirty_link));
}

static int manager_close_peers(sd_event_source *s, void *userdata) {
        Manager *m = userdata;
        Listener *l;

        /* Tearing a peer down may close others (failed writes of the events
         * it causes); the loop picks those up too. */
        while (!list_is_empty(&m->closing))
                peer_free(list_first_entry(&m->closing, Peer, closing_link));
        /* Descriptors were freed: listeners that ran out may accept again. */
        list_for_each(l, &m->listeners, link)
                listener_resume(l);
        manager_flush(m);
        return 0;
}

int manager_new(Manager **ret, const ManagerConfig *config) {
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->config = *config;
        list_init(&m->listeners);
        list_init(&m->peers);
        list_init(&m->dirty);
        list_init(&m->closing);
        list_init(&m->lagging);
        list_init(&m->readable);
        list_init(&m->monitors);
        m->start_usec = manager_now_usec();
        /* Enough spare entries for a burst of fan-out; idle peers keep none. */
        wire_entry_pool_init(&m->entry_pool, 8192);

        r = sd_event_default(&m->event);
        if (r < 0)
                return r;
        r = sd_event_add_defer(m->event, &m->defer_read, manager_read_peers, m);
        if (r < 0)
                return r;
        sd_event_source_set_enabled(m->defer_read, SD_EVENT_OFF);
        r = sd_event_add_defer(m->event, &m->defer_close, manager_close_peers, m);
        if (r < 0)
                return r;
        /* Tear-down after I/O of the same round, so a protocol error frame
         * queued just before is flushed first. */
        sd_event_source_set_priority(m->defer_close, SD_EVENT_PRIORITY_IDLE);
        sd_event_source_set_enabled(m->defer_close, SD_EVENT_OFF);

        r = hashmap_new(&m->peers_by_id, HASHMAP_KEY_U64);
        if (r < 0)
                return r;
        r = name_registry_new(&m->names);
        if (r < 0)
                return r;
        r = match_index_new(&m->matches);
        if (r < 0)
                return r;
        r = pending_table_new(&m->pending, m);
        if (r < 0)
                return r;
        r = retained_store_new(&m->retained);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        while (!list_is_empty(&m->listeners))
                listener_free(list_first_entry(&m->listeners, Listener, link));
        /* Peers first: they unlink themselves from every registry. Nobody is
         * told about departures at shutdown. */
        m->shutting_down = true;
        while (!list_is_empty(&m->peers))
                peer_free(list_first_entry(&m->peers, Peer, link));
        pending_table_free(m->pending);
        retained_store_free(m->retained);
        match_index_free(m->matches);
        name_registry_free(m->names);
        hashmap_free(m->peers_by_id);
        wire_entry_pool_clear(&m->entry_pool);
        free(m->hits);
        free(m->recipients);
        free(m->introspection);
        sd_event_source_disable_unref(m->defer_read);
        sd_event_source_disable_unref(m->defer_close);
        sd_event_unref(m->event);
        free(m);
        return NULL;
}

int manager_add_listener(Manager *m, int fd, const char *unlink_path) {
        Listener *l;

        return listener_new(m, fd, unlink_path, &l);
}

static int manager_on_signal(sd_event_source *s, const struct signalfd_siginfo *si,
                             void *userdata) {
        Manager *m = userdata;

        log_info("received %s, shutting down", strsignal((int) si->ssi_signo));
        return sd_event_exit(m->event, 0);
}

int manager_run(Manager *m) {
        sigset_t mask;
        int r;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return negative_errno();
        r = sd_event_add_signal(m->event, NULL, SIGTERM, manager_on_signal, m);
        if (r < 0)
                return r;
        r = sd_event_add_signal(m->event, NULL, SIGINT, manager_on_signal, m);
        if (r < 0)
                return r;
        r = sd_event_set_watchdog(m->event, true);
        if (r < 0)
                log_warning("cannot enable the watchdog: %s", strerror(-r));

        (void) sd_notifyf(false, "READY=1\nSTATUS=Serving the bus (pid %d)", (int) getpid());
        r = sd_event_loop(m->event);
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Shutting down");
        return r;
}
