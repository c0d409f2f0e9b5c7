/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Methods of the "bus" service; see driver.h. A table maps each method to the
 * descriptor of its request message and a handler, so unpacking, the
 * InvalidArgs answer to a payload that does not decode, and freeing are
 * written once.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "busd/driver.h"
#include "proto/bus.pb-c.h"
#include "busd/hashmap.h"
#include "busd/log.h"
#include "busd/match.h"
#include "busd/monitor.h"
#include "busd/name.h"
#include "busd/peer.h"
#include "busd/pending.h"
#include "busd/retained.h"
#include "busd/router.h"
#include "libbus/descriptor-set.h"
#include "libbus/topic.h"

#define DESCRIPTION_MAX 128
#define QUEUE_GROUP_MAX 255

static Peer *peer_of(NameClient *c) {
        return c ? container_of(c, Peer, names) : NULL;
}

/* A caller that asked for no reply gets none, not even an error. */
static bool wants_reply(const EnvelopeView *env) {
        return !(env->flags & BUS__ENVELOPE_FLAG__ENVELOPE_FLAG_NO_REPLY);
}

static void reply(Peer *p, const EnvelopeView *env, const ProtobufCMessage *msg) {
        if (wants_reply(env))
                router_send_reply(p->manager, p, env->serial, msg);
}

static void _printf_(4, 5) reply_error(Peer *p, const EnvelopeView *env, const char *name,
                                       const char *format, ...) {
        char message[512];
        va_list ap;

        if (!wants_reply(env))
                return;
        va_start(ap, format);
        vsnprintf(message, sizeof(message), format, ap);
        va_end(ap);
        router_send_error(p->manager, p, env->serial, name, "%s", message);
}

/* Keeps printable ASCII of a client-chosen description, for logs and lists. */
static char *description_sanitize(const char *s) {
        size_t n = MIN(strlen(s), (size_t) DESCRIPTION_MAX);
        char *d = strndup(s, n);

        for (char *c = d; c && *c; c++)
                if (*c < 0x20 || *c > 0x7e)
                        *c = '?';
        return d;
}

void driver_hello(Peer *p, const EnvelopeView *env, const WireFrame *f) {
        Bus__HelloReply hr = BUS__HELLO_REPLY__INIT;
        Bus__HelloRequest *req;

        req = bus__hello_request__unpack(NULL, f->preamble.payload_len, f->payload);
        if (!req) {
                peer_protocol_error(p, "Hello payload does not decode");
                return;
        }
        free(p->description);
        p->description = description_sanitize(req->client_name);
        bus__hello_request__free_unpacked(req, NULL);

        p->greeted = true;
        p->state = PEER_STATE_ACTIVE;
        hr.unique_id = p->unique_id;
        hr.broker_version = (char *) BUSD_VERSION;
        hr.max_envelope_bytes = p->manager->config.max_envelope;
        hr.max_payload_bytes = p->manager->config.max_payload;
        hr.max_fds = p->manager->config.max_fds;
        reply(p, env, &hr.base);
        log_debug("peer %s greeted as \"%s\"", p->unique_id, p->description ? p->description : "");
        router_peer_greeted(p);
}

/* ---- Names. */

static void method_request_name(Peer *p, const EnvelopeView *env, const ProtobufCMessage *msg) {
        const Bus__RequestNameRequest *req = (const Bus__RequestNameRequest *) msg;
        Bus__RequestNameReply rep = BUS__REQUEST_NAME_REPLY__INIT;
        int r;

        if (!name_is_valid_wellknown(req->name)) {
                reply_error(p, env, "bus.Error.InvalidArgs", "invalid well-known name");
                return;
        }
        if (strncmp(req->name, "bus.", 4) == 0) {
                reply_error(p, env, "bus.Error.AccessDenied", "names under bus. are reserved");
                return;
        }
        r = name_registry_request(p->manager->names, &p->names, req->name,
                                  req->flags & (NAME_FLAG_ALLOW_REPLACEMENT |
                                                NAME_FLAG_REPLACE_EXISTING | NAME_FLAG_DO_NOT_QUEUE),
                                  router_name_changed, p->manager);
        if (r < 0) {
                reply_error(p, env, "bus.Error.LimitsExceeded", "out of memory");
                return;
        }
        rep.result = (Bus__RequestNameResult) r;
        reply(p, env, &rep.base);
}

static void method_release_name(Peer *p, const EnvelopeView *env, const ProtobufCMessage *msg) {
        const Bus__ReleaseNameRequest *req = (const Bus__ReleaseNameRequest *) msg;
        Bus__ReleaseNameReply rep = BUS__RELEASE_NAME_REPLY__INIT;

        if (!name_is_valid_wellknown(req->name)) {
                reply_error(p, env, "bus.Error.InvalidArgs", "invalid well-known name");
                return;
        }
        rep.result = (Bus__ReleaseNameResult) name_registry_release(
                p->manager->names, &p->names, req->name, router_name_changed, p->manager);
        reply(p, env, &rep.base);
}

typedef struct NameList {
        Bus__NameInfo *infos;
        Bus__NameInfo **ptrs;
        char **queued;        /* all queue entries, sliced per name */
        size_t n;
        size_t n_queued;
        size_t size_queued;
        bool failed;
} NameList;

static void name_list_add(const char *name, NameClient *primary, NameClient *const *queued,
                          unsigned n_queued, void *userdata) {
        NameList *l = userdata;
        Bus__NameInfo *info = &l->infos[l->n];

        if (l->failed)
                return;
        if (l->n_queued + n_queued > l->size_queued) {
                size_t size = MAX(l->size_queued * 2, l->n_queued + n_queued);
                char **q = realloc(l->queued, size * sizeof(*q));
                if (!q) {
                        l->failed = true;
                        return;
                }
                /* Earlier infos point into the old array: rebase them. */
                for (size_t i = 0; i < l->n; i++)
                        if (l->infos[i].queued)
                                l->infos[i].queued = q + (l->infos[i].queued - l->queued);
                l->queued = q;
                l->size_queued = size;
        }
        bus__name_info__init(info);
        /* Strings are borrowed from the registry for the duration of the
         * reply: nothing changes it before the reply is packed. */
        info->name = (char *) name;
        info->owner = primary ? peer_of(primary)->unique_id : (char *) "";
        info->n_queued = n_queued;
        info->queued = n_queued ? l->queued + l->n_queued : NULL;
        for (unsigned i = 0; i < n_queued; i++)
                l->queued[l->n_queued++] = peer_of(queued[i])->unique_id;
        l->ptrs[l->n] = info;
        l->n++;
}

static void method_list_names(Peer *p, const EnvelopeView *env, const ProtobufCMessage *msg) {
        Bus__ListNamesReply rep = BUS__LIST_NAMES_REPLY__INIT;
        unsigned count = name_registry_count(p->manager->names);
        NameList l = {
                .infos = calloc(count + 1, sizeof(Bus__NameInfo)),
                .ptrs = calloc(count + 1, sizeof(Bus__NameInfo *)),
        };

        if (!l.infos || !l.ptrs)
                l.failed = true;
        else
                name_registry_foreach(p->manager->names, name_list_add, &l);
        if (l.failed)
                reply_error(p, env, "bus.Error.LimitsExceeded", "out of memory");
        else {
                rep.n_names = l.n;
                rep.names = l.ptrs;
                reply(p, env, &rep.base);
        }
        free(l.infos);
        free(l.ptrs);
        free(l.queued);
}

/* A well-known name's owner, a connected unique id, or "bus" itself. */
static Peer *resolve(Manager *m, const char *name, bool *is_bus) {
        *is_bus = strcmp(name, "bus") == 0;
        if (*is_bus)
                return NULL;
        if (name[0] == ':')
                return manager_find_peer(m, name);
        return peer_of(name_registry_get_owner(m->names, name));
}

static void method_get_name_owner(Peer *p, const EnvelopeView *env, const ProtobufCMessage *msg) {
        const Bus__GetNameOwnerRequest *req = (const Bus__GetNameOwnerRequest *) msg;
        Bus__GetNameOwnerReply rep = BUS__GET_NAME_OWNER_REPLY__INIT;
        bool is_bus;
        Peer *owner = resolve(p->manager, req->name, &is_bus);

        if (!is_bus && (!owner || peer_is_closing(owner) || !owner->greeted)) {
                reply_error(p, env, "bus.Error.NoOwner",
                                  "no owner for \"%.255s\"", req->name);
                return;
        }
        rep.owner = is_bus ? (char *) "bus" : owner->unique_id;
        reply(p, env, &rep.base);
}

static void method_get_peer_credentials(Peer *p, const EnvelopeView *env,
                                        const ProtobufCMessage *msg) {
        const Bus__GetPeerCredentialsRequest *req = (const Bus__GetPeerCredentialsRequest *) msg;
        Bus__GetPeerCredentialsReply rep = BUS__GET_PEER_CREDENTIALS_REPLY__INIT;
        bool is_bus;
        Peer *owner = resolve(p->manager, req->name, &is_bus);

        if (is_bus) {
                rep.unique_id = (char *) "bus";
                rep.uid = (uint32_t) getuid();
                rep.gid = (uint32_t) getgid();
                rep.pid = (uint32_t) getpid();
        } else if (!owner || peer_is_closing(owner) || !owner->greeted) {
                reply_error(p, env, "bus.Error.NoOwner",
                                  "no owner for \"%.255s\"", req->name);
                return;
        } else {
                rep.unique_id = owner->unique_id;
                rep.uid = owner->ucred.uid;
                rep.gid = owner->ucred.gid;
                rep.pid = (uint32_t) owner->ucred.pid;
                if (owner->security_label) {
                        rep.security_label.data = (uint8_t *) owner->security_label;
                        rep.security_label.len = strlen(owner->security_label);
                }
        }
        reply(p, env, &rep.base);
}

/* ---- Peers. */

typedef struct OwnedNames {
        char **names;
        size_t n;
} OwnedNames;

static void owned_name_add(const char *name, void *userdata) {
        OwnedNames *o = userdata;

        o->names[o->n++] = (char *) name;
}

static void method_list_peers(Peer *p, const EnvelopeView *env, const ProtobufCMessage *msg) {
        Manager *m = p->manager;
        Bus__ListPeersReply rep = BUS__LIST_PEERS_REPLY__INIT;
        Bus__PeerInfo *infos = calloc(m->n_peers + 1, sizeof(*infos));
        Bus__PeerInfo **ptrs = calloc(m->n_peers + 1, sizeof(*ptrs));
        char **names = calloc(name_registry_count(m->names) + 1, sizeof(char *));
        OwnedNames owned = { .names = names };
        size_t n = 0;
        Peer *q;

        if (!infos || !ptrs || !names) {
                reply_error(p, env, "bus.Error.LimitsExceeded", "out of memory");
                goto finish;
        }
        list_for_each(q, &m->peers, link) {
                Bus__PeerInfo *info = &infos[n];
                size_t first = owned.n;

                if (!q->greeted || peer_is_closing(q))
                        continue;
                bus__peer_info__init(info);
                info->unique_id = q->unique_id;
                info->uid = q->ucred.uid;
                info->gid = q->ucred.gid;
                info->pid = (uint32_t) q->ucred.pid;
                info->client_name = q->description ? q->description : (char *) "";
                info->subscriptions = (uint32_t) hashmap_size(q->subscriptions);
                info->connected_usec = q->connected_realtime_usec;
                info->monitor = q->monitor != NULL;
                name_client_foreach_owned(&q->names, owned_name_add, &owned);
                info->names = owned.names + first;
                info->n_names = owned.n - first;
                ptrs[n++] = info;
        }
        rep.peers = ptrs;
        rep.n_peers = n;
        reply(p, env, &rep.base);
finish:
        free(infos);
        free(ptrs);
        free(names);
}

/* ---- Subscriptions. */

typedef struct RetainedDelivery {
        Peer *peer;
        uint64_t sub_id;
        unsigned n;
} RetainedDelivery;

static void deliver_retained(const char *topic, const OutFrame *o, void *userdata) {
        RetainedDelivery *d = userdata;

        if (router_deliver_retained(d->peer, d->sub_id, o) == 0)
                d->n++;
}

static bool queue_group_is_valid(const char *g) {
        size_t n = strlen(g);

        if (n > QUEUE_GROUP_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (g[i] < 0x21 || g[i] > 0x7e)
                        return false;
        return true;
}

static void method_subscribe(Peer *p, const EnvelopeView *env, const ProtobufCMessage *msg) {
        const Bus__SubscribeRequest *req = (const Bus__SubscribeRequest *) msg;
        Bus__SubscribeReply rep = BUS__SUBSCRIBE_REPLY__INIT;
        Manager *m = p->manager;
        RetainedDelivery d = { .peer = p, .sub_id = req->id };
        MatchSub *sub;
        int r;

        if (req->id == 0 || !topic_pattern_is_valid(req->pattern, strlen(req->pattern)) ||
            !queue_group_is_valid(req->queue_group)) {
                reply_error(p, env, "bus.Error.InvalidArgs",
                            "invalid subscription id, pattern or queue group");
                return;
        }
        if (hashmap_get(p->subscriptions, &req->id)) {
                reply_error(p, env, "bus.Error.InvalidArgs", "subscription id already in use");
                return;
        }
        if (hashmap_size(p->subscriptions) >= m->config.max_subscriptions) {
                reply_error(p, env, "bus.Error.LimitsExceeded", "too many subscriptions");
                return;
        }
        r = match_index_add(m->matches, req->pattern, req->queue_group, p, req->id, &sub);
        if (r >= 0) {
                r = hashmap_put(p->subscriptions, &req->id, sub);
                if (r < 0)
                        match_sub_free(sub);
        }
        if (r < 0) {
                reply_error(p, env, "bus.Error.LimitsExceeded", "out of memory");
                return;
        }
        /* Retained messages go out before the acknowledgement, so the
         * subscriber has them when Subscribe returns, ahead of live ones. */
        if (!(req->flags & BUS__SUBSCRIBE_FLAG__SUBSCRIBE_FLAG_NO_RETAINED))
                retained_foreach_matching(m->retained, req->pattern, deliver_retained, &d);
        rep.retained = d.n;
        reply(p, env, &rep.base);
}

static void method_unsubscribe(Peer *p, const EnvelopeView *env, const ProtobufCMessage *msg) {
        const Bus__UnsubscribeRequest *req = (const Bus__UnsubscribeRequest *) msg;
        Bus__UnsubscribeReply rep = BUS__UNSUBSCRIBE_REPLY__INIT;
        MatchSub *sub = hashmap_remove(p->subscriptions, &req->id);

        if (!sub) {
                reply_error(p, env, "bus.Error.InvalidArgs", "no such subscription");
                return;
        }
        match_sub_free(sub);
        reply(p, env, &rep.base);
}

typedef struct SubList {
        Bus__SubscriptionInfo *infos;
        Bus__SubscriptionInfo **ptrs;
        size_t n;
} SubList;

static void sub_list_add(MatchSub *s, void *userdata) {
        SubList *l = userdata;
        Bus__SubscriptionInfo *info = &l->infos[l->n];
        const char *group = match_sub_get_queue_group(s);

        bus__subscription_info__init(info);
        info->peer = ((Peer *) match_sub_get_owner(s))->unique_id;
        info->id = match_sub_get_id(s);
        info->pattern = (char *) match_sub_get_pattern(s);
        info->queue_group = group ? (char *) group : (char *) "";
        l->ptrs[l->n++] = info;
}

static void method_list_subscriptions(Peer *p, const EnvelopeView *env,
                                      const ProtobufCMessage *msg) {
        Bus__ListSubscriptionsReply rep = BUS__LIST_SUBSCRIPTIONS_REPLY__INIT;
        unsigned count = match_index_count(p->manager->matches);
        SubList l = {
                .infos = calloc(count + 1, sizeof(Bus__SubscriptionInfo)),
                .ptrs = calloc(count + 1, sizeof(Bus__SubscriptionInfo *)),
        };

        if (!l.infos || !l.ptrs)
                reply_error(p, env, "bus.Error.LimitsExceeded", "out of memory");
        else {
                match_index_foreach(p->manager->matches, sub_list_add, &l);
                rep.subscriptions = l.ptrs;
                rep.n_subscriptions = l.n;
                reply(p, env, &rep.base);
        }
        free(l.infos);
        free(l.ptrs);
}

/* ---- Misc. */

static void method_ping(Peer *p, const EnvelopeView *env, const ProtobufCMessage *msg) {
        Bus__PingReply rep = BUS__PING_REPLY__INIT;

        reply(p, env, &rep.base);
}

static void method_get_stats(Peer *p, const EnvelopeView *env, const ProtobufCMessage *msg) {
        Manager *m = p->manager;
        Bus__GetStatsReply rep = BUS__GET_STATS_REPLY__INIT;

        rep.broker_version = (char *) BUSD_VERSION;
        rep.uptime_usec = manager_now_usec() - m->start_usec;
        rep.peers = m->n_peers;
        rep.names = name_registry_count(m->names);
        rep.subscriptions = match_index_count(m->matches);
        rep.retained = retained_count(m->retained);
        rep.pending_requests = pending_count(m->pending);
        rep.frames_received = m->stats.frames_received;
        rep.messages_routed = m->stats.messages_routed;
        rep.deliveries = m->stats.deliveries;
        rep.dropped = m->stats.dropped;
        rep.protocol_errors = m->stats.protocol_errors;
        rep.peers_total = m->stats.peers_total;
        rep.monitors = m->n_monitors;
        rep.monitor_copies = m->stats.monitor_copies;
        rep.monitor_dropped = m->stats.monitor_dropped;
        reply(p, env, &rep.base);
}

/* ---- Monitoring. */

static bool may_monitor(const Peer *p) {
        return p->ucred.uid == 0 || p->ucred.uid == geteuid();
}

static void method_become_monitor(Peer *p, const EnvelopeView *env, const ProtobufCMessage *msg) {
        const Bus__BecomeMonitorRequest *req = (const Bus__BecomeMonitorRequest *) msg;
        Bus__BecomeMonitorReply rep = BUS__BECOME_MONITOR_REPLY__INIT;
        _cleanup_(monitor_freep) Monitor *mon = NULL;
        int r;

        if (!may_monitor(p)) {
                log_warning("peer %s (pid %d, uid %u) may not monitor the bus", p->unique_id,
                            (int) p->ucred.pid, (unsigned) p->ucred.uid);
                reply_error(p, env, "bus.Error.AccessDenied",
                            "only root and uid %u may monitor the bus", (unsigned) geteuid());
                return;
        }
        r = monitor_new(p, req, &mon);
        if (r < 0) {
                reply_error(p, env, "bus.Error.LimitsExceeded", "out of memory");
                return;
        }
        if (r > 0) {
                reply_error(p, env, "bus.Error.InvalidArgs", "%s", monitor_strerror(r));
                return;
        }
        /* As in D-Bus: a monitor takes no part in the traffic it watches. */
        router_peer_drop_registrations(p);
        /* The reply goes out before the peer is a monitor, so it is not
         * copied to itself, and every copy follows it. */
        reply(p, env, &rep.base);
        monitor_attach(TAKE_PTR(mon));
        log_info("peer %s (pid %d, uid %u, \"%s\") is now a monitor", p->unique_id,
                 (int) p->ucred.pid, (unsigned) p->ucred.uid, p->description ? p->description : "");
}

/* ---- Introspection. */

/* The events the broker publishes, and their payload types. */
static const struct {
        const char *pattern;
        const ProtobufCMessageDescriptor *type;
} event_types[] = {
        { "bus.peer.connected", &bus__peer_event__descriptor },
        { "bus.peer.disconnected", &bus__peer_event__descriptor },
        { "bus.peer.lagging", &bus__peer_lagging__descriptor },
        { "bus.name.>", &bus__name_owner_changed__descriptor },
};

/* The broker's types never change: their descriptor set is packed on the
 * first request and kept. */
static int introspection_pack(Manager *m) {
        DescriptorSet *set = NULL;
        int r;

        if (m->introspection)
                return 0;
        r = descriptor_set_new(&set);
        if (r < 0)
                return r;
        r = descriptor_set_add_service(set, &bus__bus__descriptor);
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(event_types); i++)
                r = descriptor_set_add_message(set, event_types[i].type);
        if (r >= 0)
                r = descriptor_set_pack(set, &m->introspection, &m->introspection_size);
        descriptor_set_free(set);
        return r < 0 ? r : 0;
}

static void method_introspect(Peer *p, const EnvelopeView *env, const ProtobufCMessage *msg) {
        Bus__IntrospectReply rep = BUS__INTROSPECT_REPLY__INIT;
        Bus__TopicType types[ELEMENTSOF(event_types)];
        Bus__TopicType *type_ptrs[ELEMENTSOF(event_types)];
        char *services[] = { (char *) bus__bus__descriptor.name };
        Manager *m = p->manager;
        int r;

        r = introspection_pack(m);
        if (r < 0) {
                reply_error(p, env, "bus.Error.LimitsExceeded",
                            "cannot describe the broker's types: %s", strerror(-r));
                return;
        }
        for (size_t i = 0; i < ELEMENTSOF(event_types); i++) {
                bus__topic_type__init(&types[i]);
                types[i].pattern = (char *) event_types[i].pattern;
                types[i].type = (char *) event_types[i].type->name;
                type_ptrs[i] = &types[i];
        }
        rep.services = services;
        rep.n_services = ELEMENTSOF(services);
        rep.topic_types = type_ptrs;
        rep.n_topic_types = ELEMENTSOF(type_ptrs);
        rep.file_descriptor_set.data = m->introspection;
        rep.file_descriptor_set.len = m->introspection_size;
        reply(p, env, &rep.base);
}

typedef void (*method_fn)(Peer *p, const EnvelopeView *env, const ProtobufCMessage *msg);

static const struct {
        const char *name;
        const ProtobufCMessageDescriptor *request;
        method_fn fn;
} methods[] = {
        { "RequestName", &bus__request_name_request__descriptor, method_request_name },
        { "ReleaseName", &bus__release_name_request__descriptor, method_release_name },
        { "ListNames", &bus__list_names_request__descriptor, method_list_names },
        { "GetNameOwner", &bus__get_name_owner_request__descriptor, method_get_name_owner },
        { "ListPeers", &bus__list_peers_request__descriptor, method_list_peers },
        { "GetPeerCredentials", &bus__get_peer_credentials_request__descriptor,
          method_get_peer_credentials },
        { "Subscribe", &bus__subscribe_request__descriptor, method_subscribe },
        { "Unsubscribe", &bus__unsubscribe_request__descriptor, method_unsubscribe },
        { "ListSubscriptions", &bus__list_subscriptions_request__descriptor,
          method_list_subscriptions },
        { "Ping", &bus__ping_request__descriptor, method_ping },
        { "GetStats", &bus__get_stats_request__descriptor, method_get_stats },
        { "BecomeMonitor", &bus__become_monitor_request__descriptor, method_become_monitor },
        { "bus.Introspect", &bus__introspect_request__descriptor, method_introspect },
};

void driver_handle(Peer *p, const EnvelopeView *env, const WireFrame *f) {
        ProtobufCMessage *msg;

        if (ENVELOPE_STRING_IS(env->method, "Hello")) {
                reply_error(p, env, "bus.Error.InvalidArgs", "already greeted");
                return;
        }
        for (size_t i = 0; i < ELEMENTSOF(methods); i++) {
                if (!envelope_string_eq(env->method, methods[i].name, strlen(methods[i].name)))
                        continue;
                msg = protobuf_c_message_unpack(methods[i].request, NULL, f->preamble.payload_len,
                                                f->payload);
                if (!msg) {
                        reply_error(p, env, "bus.Error.InvalidArgs",
                                          "payload of %s does not decode as %s", methods[i].name,
                                          methods[i].request->name);
                        return;
                }
                methods[i].fn(p, env, msg);
                protobuf_c_message_free_unpacked(msg, NULL);
                return;
        }
        reply_error(p, env, "bus.Error.UnknownMethod", "bus has no method \"%.*s\"",
                    (int) MIN(env->method.len, (size_t) 64), env->method.s);
}
