/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Monitors and their copies of the traffic; see monitor.h.
 *
 * The stamps of one message are the same for every monitor, so they are
 * encoded once, on the first monitor that wants the message, and so is the
 * duplicate of a memfd payload; only missed differs per monitor, and
 * peer_deliver() adds that.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "busd/log.h"
#include "busd/monitor.h"
#include "busd/name.h"
#include "busd/peer.h"
#include "libbus/list.h"
#include "libbus/topic.h"
#include "libbus/wire.h"

/* Envelope fields of the stamps (see proto/bus.proto). */
#define FIELD_FLAGS 8
#define FIELD_TIMESTAMP_NS 22
#define FIELD_MONITOR_RECEIVER 23
#define FIELD_MONITOR_RECEIVERS 24
#define FIELD_MONITOR_FDS 25

/* flags, timestamp_ns, monitor_receiver (a unique id), monitor_receivers,
 * monitor_fds: tags and varints at their longest. */
#define STAMPS_MAX (2 * 6 + 3 * 12 + 3 + sizeof(((Peer *) 0)->unique_id))

typedef struct MonitorFilter {
        char *s;
        size_t len;
} MonitorFilter;

struct Monitor {
        Peer *peer;
        List link;              /* manager->monitors, while attached */
        MonitorFilter *topics;  /* patterns */
        size_t n_topics;
        MonitorFilter *names;   /* unique ids, well-known names, "bus" */
        size_t n_names;
        uint32_t kinds;         /* bit (1 << kind) per kind copied; 0: every kind */
};

static void filters_free(MonitorFilter *f, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(f[i].s);
        free(f);
}

Monitor *monitor_free(Monitor *mon) {
        if (!mon)
                return NULL;
        if (list_is_linked(&mon->link)) {
                list_remove(&mon->link);
                mon->peer->manager->n_monitors--;
                mon->peer->monitor = NULL;
        }
        filters_free(mon->topics, mon->n_topics);
        filters_free(mon->names, mon->n_names);
        free(mon);
        return NULL;
}

static bool monitor_name_is_valid(const char *s) {
        return name_is_valid_unique(s) || name_is_valid_wellknown(s) || strcmp(s, "bus") == 0;
}

static bool topic_filter_is_valid(const char *s) {
        return topic_pattern_is_valid(s, strlen(s));
}

/* Copies n strings that all pass valid(). */
static int filters_copy(char *const *in, size_t n, bool (*valid)(const char *), int invalid,
                        MonitorFilter **ret) {
        MonitorFilter *f;

        if (n > MONITOR_FILTERS_MAX)
                return MONITOR_E_TOO_MANY;
        for (size_t i = 0; i < n; i++)
                if (!valid(in[i]))
                        return invalid;
        if (n == 0)
                return 0;
        f = calloc(n, sizeof(*f));
        if (!f)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                f[i].len = strlen(in[i]);
                f[i].s = strndup(in[i], f[i].len);
                if (!f[i].s) {
                        filters_free(f, i);
                        return -ENOMEM;
                }
        }
        *ret = f;
        return 0;
}

int monitor_new(Peer *p, const Bus__BecomeMonitorRequest *req, Monitor **ret) {
        _cleanup_(monitor_freep) Monitor *mon = NULL;
        int r;

        mon = calloc(1, sizeof(*mon));
        if (!mon)
                return -ENOMEM;
        mon->peer = p;
        list_init(&mon->link);
        for (size_t i = 0; i < req->n_kinds; i++) {
                if (req->kinds[i] < BUS__KIND__KIND_PUBLISH ||
                    req->kinds[i] > BUS__KIND__KIND_ERROR)
                        return MONITOR_E_KIND;
                mon->kinds |= 1u << req->kinds[i];
        }
        r = filters_copy(req->topics, req->n_topics, topic_filter_is_valid, MONITOR_E_TOPIC,
                         &mon->topics);
        if (r != 0)
                return r;
        mon->n_topics = req->n_topics;
        r = filters_copy(req->names, req->n_names, monitor_name_is_valid, MONITOR_E_NAME,
                         &mon->names);
        if (r != 0)
                return r;
        mon->n_names = req->n_names;
        *ret = TAKE_PTR(mon);
        return 0;
}

const char *monitor_strerror(int outcome) {
        switch (outcome) {
        case MONITOR_E_TOPIC:
                return "invalid topic pattern in the monitor's filters";
        case MONITOR_E_NAME:
                return "invalid name in the monitor's filters: "
                       "expected a unique id, a well-known name or bus";
        case MONITOR_E_KIND:
                return "invalid message kind in the monitor's filters";
        case MONITOR_E_TOO_MANY:
                return "too many filters: at most 256 topics and 256 names";
        default:
                return "invalid filters";
        }
}

void monitor_attach(Monitor *mon) {
        Peer *p = mon->peer;
        Manager *m = p->manager;

        assert(!p->monitor);
        p->monitor = mon;
        p->state = PEER_STATE_MONITOR;
        list_append(&m->monitors, &mon->link);
        m->n_monitors++;
}

/* ---- Filters. */

static bool peer_has_id(const Peer *p, const MonitorFilter *f) {
        return p && strcmp(p->unique_id, f->s) == 0;
}

static bool recipients_contain(const MonitorMessage *msg, const Peer *p) {
        for (unsigned i = 0; i < msg->n_recipients; i++)
                if (msg->recipients[i] == p)
                        return true;
        return false;
}

static bool name_matches(Manager *m, const MonitorFilter *f, const MonitorMessage *msg) {
        NameClient *owner;
        Peer *p;

        /* A request counts as going to the name it was sent to, whether or
         * not anybody had it. */
        if (msg->kind == BUS__KIND__KIND_REQUEST &&
            envelope_string_eq(msg->destination, f->s, f->len))
                return true;
        if (f->s[0] == ':') {
                if (peer_has_id(msg->sender, f) || peer_has_id(msg->receiver, f))
                        return true;
                for (unsigned i = 0; i < msg->n_recipients; i++)
                        if (peer_has_id(msg->recipients[i], f))
                                return true;
                return false;
        }
        if (strcmp(f->s, "bus") == 0)
                return !msg->sender || msg->to_broker;
        owner = name_registry_get_owner(m->names, f->s);
        if (!owner)
                return false;
        p = container_of(owner, Peer, names);
        return p == msg->sender || p == msg->receiver || recipients_contain(msg, p);
}

static bool monitor_wants(Manager *m, const Monitor *mon, const MonitorMessage *msg) {
        if (mon->kinds && !(mon->kinds & (1u << msg->kind)))
                return false;
        if (mon->n_topics == 0 && mon->n_names == 0)
                return true;
        if (msg->kind == BUS__KIND__KIND_PUBLISH && msg->topic.s)
                for (size_t i = 0; i < mon->n_topics; i++)
                        if (topic_pattern_matches(mon->topics[i].s, mon->topics[i].len,
                                                  msg->topic.s, msg->topic.len))
                                return true;
        for (size_t i = 0; i < mon->n_names; i++)
                if (name_matches(m, &mon->names[i], msg))
                        return true;
        return false;
}

/* ---- Copies. */

static uint64_t realtime_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

/* Descriptors of the original, a memfd payload not counted. */
static unsigned original_n_fds(const MonitorMessage *msg) {
        unsigned n = msg->frame->fds ? msg->frame->fds->n : 0;

        return msg->memfd_payload_size > 0 && n > 0 ? n - 1 : n;
}

static size_t stamps_encode(const MonitorMessage *msg, uint8_t *buf) {
        const char *receiver = msg->to_broker ? "bus" :
                               msg->receiver  ? msg->receiver->unique_id :
                                                NULL;
        unsigned n_fds = original_n_fds(msg);
        size_t n;

        /* flags is a scalar: the appended value replaces the sender's, so
         * it carries the sender's bits too. */
        n = wire_put_tag_varint(buf, FIELD_FLAGS,
                                msg->flags | BUS__ENVELOPE_FLAG__ENVELOPE_FLAG_MONITOR);
        n += wire_put_tag_varint(buf + n, FIELD_TIMESTAMP_NS, realtime_ns());
        if (msg->kind == BUS__KIND__KIND_PUBLISH)
                n += wire_put_tag_varint(buf + n, FIELD_MONITOR_RECEIVERS, msg->receivers);
        else if (receiver)
                n += wire_put_tag_bytes(buf + n, FIELD_MONITOR_RECEIVER, receiver,
                                        strlen(receiver));
        if (n_fds > 0)
                n += wire_put_tag_varint(buf + n, FIELD_MONITOR_FDS, n_fds);
        return n;
}

/* The copies' descriptors: only the memfd payload, duplicated, so that the
 * sender's quota (charged on the original set) does not wait for monitors. */
static int memfd_payload_dup(const MonitorMessage *msg, WireFds **ret) {
        const WireFds *orig = msg->frame->fds;
        WireFds *fds;

        *ret = NULL;
        if (msg->memfd_payload_size == 0 || !orig || orig->n == 0)
                return 0;
        fds = wire_fds_new(1);
        if (!fds)
                return -ENOMEM;
        fds->fds[0] = fcntl(orig->fds[orig->n - 1], F_DUPFD_CLOEXEC, 3);
        if (fds->fds[0] < 0) {
                int r = negative_errno();
                wire_fds_unref(fds);
                return r;
        }
        *ret = fds;
        return 0;
}

void monitor_copy(Manager *m, const MonitorMessage *msg) {
        uint8_t stamps[STAMPS_MAX];
        size_t stamps_len = 0;
        OutFrame copy = *msg->frame;
        bool prepared = false;
        int failed = 0;
        Monitor *mon;
        int r;

        copy.fds = NULL;
        list_for_each(mon, &m->monitors, link) {
                Peer *p = mon->peer;

                if (peer_is_closing(p) || p == msg->sender || p == msg->receiver ||
                    !monitor_wants(m, mon, msg))
                        continue;
                if (!prepared) {
                        prepared = true;
                        stamps_len = stamps_encode(msg, stamps);
                        failed = memfd_payload_dup(msg, &copy.fds);
                        if (failed < 0)
                                log_error("cannot duplicate a payload descriptor for monitors: %s",
                                          strerror(-failed));
                }
                if (failed < 0) {
                        /* Without its memfd the copy would be unreadable. */
                        peer_drop(p);
                        continue;
                }
                r = peer_deliver(p, &copy, stamps, stamps_len, true);
                if (r == 0) {
                        /* Counted apart from deliveries to receivers. */
                        m->stats.deliveries--;
                        m->stats.monitor_copies++;
                } else if (r < 0)
                        log_error("no memory to queue a copy to monitor %s", p->unique_id);
        }
        wire_fds_unref(copy.fds);
}
