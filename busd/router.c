/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Routing of frames between peers; see router.h.
 *
 * A publish is matched against the subscription trie once; the hits are
 * grouped per receiving peer (a peer with several matching subscriptions gets
 * one copy naming all of them) using a generation counter stamped on each
 * peer, so grouping needs neither sorting nor allocation.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "busd/driver.h"
#include "busd/envelope.h"
#include "busd/hashmap.h"
#include "busd/log.h"
#include "busd/match.h"
#include "busd/monitor.h"
#include "busd/name.h"
#include "busd/payload.h"
#include "busd/peer.h"
#include "busd/pending.h"
#include "busd/retained.h"
#include "busd/router.h"
#include "libbus/topic.h"
#include "proto/bus.pb-c.h"

#define FIELD_FLAGS 8
#define FIELD_SUBSCRIPTIONS 20
#define METHOD_MAX 255
#define ERROR_NAME_MAX 255

static uint64_t broker_serial;

/* ---- Frames the broker builds itself. */

static void envelope_stamp_broker(Bus__Envelope *env) {
        env->sender = (char *) "bus";
        env->sender_uid = (uint32_t) getuid();
        env->sender_gid = (uint32_t) getgid();
        env->sender_pid = (uint32_t) getpid();
        env->serial = ++broker_serial;
}

static EnvelopeString envelope_string_of(const char *s) {
        return (EnvelopeString){ .s = s, .len = s ? strlen(s) : 0 };
}

/* Copies a frame the broker built (sent to one peer, or published when to
 * is NULL: the routing scratch then holds its recipients) to the monitors. */
static void monitor_built(Manager *m, const Bus__Envelope *env, const OutFrame *o, Peer *to,
                          unsigned receivers) {
        MonitorMessage msg = {
                .frame = o,
                .kind = env->kind,
                .flags = env->flags,
                .topic = envelope_string_of(env->topic),
                .destination = envelope_string_of(env->destination),
                .receiver = to,
                .receivers = receivers,
        };

        if (!to) {
                msg.recipients = m->recipients;
                msg.n_recipients = m->n_recipients;
        }
        monitor_copy(m, &msg);
}

/* Copies a frame from p to the monitors: receiver is the peer a request or
 * an answer went to; for a publish, the routing scratch holds its
 * recipients. */
static void monitor_routed(Peer *p, const EnvelopeView *env, const OutFrame *o, Peer *receiver,
                           bool to_broker, unsigned receivers) {
        Manager *m = p->manager;
        MonitorMessage msg = {
                .frame = o,
                .kind = env->kind,
                .flags = env->flags,
                .topic = env->topic,
                .destination = env->destination,
                .memfd_payload_size = env->memfd_payload_size,
                .sender = p,
                .receiver = receiver,
                .to_broker = to_broker,
                .receivers = receivers,
        };

        if (env->kind == BUS__KIND__KIND_PUBLISH) {
                msg.recipients = m->recipients;
                msg.n_recipients = m->n_recipients;
        }
        monitor_copy(m, &msg);
}

/* Packs envelope and payload into one chunk. */
static int frame_build(const Bus__Envelope *env, const ProtobufCMessage *payload,
                       OutFrame *ret) {
        size_t elen = bus__envelope__get_packed_size(env);
        size_t plen = payload ? protobuf_c_message_get_packed_size(payload) : 0;
        WireChunk *c = wire_chunk_new(elen + plen);

        if (!c)
                return -ENOMEM;
        bus__envelope__pack(env, c->data);
        if (payload)
                protobuf_c_message_pack(payload, c->data + elen);
        c->used = elen + plen;
        *ret = (OutFrame){
                .chunk = c,
                .envelope = c->data,
                .envelope_len = elen,
                .payload = c->data + elen,
                .payload_len = plen,
        };
        return 0;
}

static void send_built(Manager *m, Peer *to, const Bus__Envelope *env,
                       const ProtobufCMessage *payload) {
        OutFrame o;
        int r;

        r = frame_build(env, payload, &o);
        if (r < 0) {
                log_error("no memory for a frame to %s", to->unique_id);
                return;
        }
        r = peer_deliver(to, &o, NULL, 0, false);
        if (r < 0)
                log_error("no memory to queue a frame to %s", to->unique_id);
        if (_unlikely_(m->n_monitors > 0))
                monitor_built(m, env, &o, to, 0);
        wire_chunk_unref(o.chunk);
}

void router_send_error(Manager *m, Peer *to, uint64_t reply_serial, const char *name,
                       const char *format, ...) {
        Bus__Envelope env = BUS__ENVELOPE__INIT;
        char message[512];
        va_list ap;

        va_start(ap, format);
        vsnprintf(message, sizeof(message), format, ap);
        va_end(ap);
        envelope_stamp_broker(&env);
        env.kind = BUS__KIND__KIND_ERROR;
        env.reply_serial = reply_serial;
        env.destination = to->unique_id;
        env.error_name = (char *) name;
        env.error_message = message;
        send_built(m, to, &env, NULL);
}

void router_send_reply(Manager *m, Peer *to, uint64_t reply_serial,
                       const ProtobufCMessage *payload) {
        Bus__Envelope env = BUS__ENVELOPE__INIT;

        envelope_stamp_broker(&env);
        env.kind = BUS__KIND__KIND_REPLY;
        env.reply_serial = reply_serial;
        env.destination = to->unique_id;
        if (payload)
                env.payload_type = (char *) payload->descriptor->name;
        send_built(m, to, &env, payload);
}

/* ---- Publish fan-out. */

static int route_grow(Manager *m) {
        if (m->n_hits == m->hits_size) {
                unsigned n = MAX(64u, m->hits_size * 2);
                struct RouteHit *h = realloc(m->hits, n * sizeof(*h));
                if (!h)
                        return -ENOMEM;
                m->hits = h;
                m->hits_size = n;
        }
        if (m->n_recipients == m->recipients_size) {
                unsigned n = MAX(64u, m->recipients_size * 2);
                Peer **r = realloc(m->recipients, n * sizeof(*r));
                if (!r)
                        return -ENOMEM;
                m->recipients = r;
                m->recipients_size = n;
        }
        return 0;
}

static void route_collect(MatchSub *s, void *userdata) {
        Manager *m = userdata;
        Peer *p = match_sub_get_owner(s);
        unsigned idx;

        if (peer_is_closing(p))
                return;
        if (route_grow(m) < 0) {
                log_error("no memory to route a message to %s", p->unique_id);
                return;
        }
        idx = m->n_hits++;
        m->hits[idx] = (struct RouteHit){ .peer = p, .sub_id = match_sub_get_id(s), .next = UINT_MAX };
        if (p->route_gen != m->route_gen) {
                p->route_gen = m->route_gen;
                p->route_first = p->route_last = idx;
                m->recipients[m->n_recipients++] = p;
        } else {
                m->hits[p->route_last].next = idx;
                p->route_last = idx;
        }
}

/* Writes the subscription ids of one recipient; returns the length. */
static size_t route_suffix(Manager *m, Peer *p, uint8_t *buf) {
        size_t n = 0;

        for (unsigned i = p->route_first; i != UINT_MAX; i = m->hits[i].next)
                n += wire_put_tag_varint(buf + n, FIELD_SUBSCRIPTIONS, m->hits[i].sub_id);
        return n;
}

static unsigned route_hits_of(Manager *m, Peer *p) {
        unsigned n = 0;

        for (unsigned i = p->route_first; i != UINT_MAX; i = m->hits[i].next)
                n++;
        return n;
}

/* Delivers o to every subscription matching topic. Returns the number of
 * subscriptions it was delivered to. */
static unsigned route_publish(Manager *m, const char *topic, size_t topic_len,
                              const OutFrame *o) {
        unsigned delivered = 0;
        uint8_t small[256];

        m->route_gen++;
        m->n_hits = m->n_recipients = 0;
        match_index_match(m->matches, topic, topic_len, route_collect, m);

        for (unsigned i = 0; i < m->n_recipients; i++) {
                Peer *p = m->recipients[i];
                unsigned hits = route_hits_of(m, p);
                size_t need = (size_t) hits * 11;
                uint8_t *buf = need <= sizeof(small) ? small : malloc(need);

                if (!buf) {
                        log_error("no memory to route a message to %s", p->unique_id);
                        continue;
                }
                if (peer_deliver(p, o, buf, route_suffix(m, p, buf), true) == 0)
                        delivered += hits;
                if (buf != small)
                        free(buf);
        }
        return delivered;
}

void router_publish_event(Manager *m, const char *topic, const ProtobufCMessage *payload) {
        Bus__Envelope env = BUS__ENVELOPE__INIT;
        unsigned receivers;
        OutFrame o;

        /* Cheap when nobody listens: most buses have no event subscribers. */
        if (m->shutting_down || (match_index_count(m->matches) == 0 && m->n_monitors == 0))
                return;
        envelope_stamp_broker(&env);
        env.kind = BUS__KIND__KIND_PUBLISH;
        env.topic = (char *) topic;
        env.payload_type = (char *) payload->descriptor->name;
        if (frame_build(&env, payload, &o) < 0) {
                log_error("no memory for event %s", topic);
                return;
        }
        receivers = route_publish(m, topic, strlen(topic), &o);
        if (_unlikely_(m->n_monitors > 0))
                monitor_built(m, &env, &o, NULL, receivers);
        wire_chunk_unref(o.chunk);
}

int router_deliver_retained(Peer *to, uint64_t sub_id, const OutFrame *o) {
        uint8_t suffix[32];
        size_t n = wire_put_tag_varint(suffix, FIELD_SUBSCRIPTIONS, sub_id);
        int r;

        n += wire_put_tag_varint(suffix + n, FIELD_FLAGS,
                                 BUS__ENVELOPE_FLAG__ENVELOPE_FLAG_RETAIN |
                                         BUS__ENVELOPE_FLAG__ENVELOPE_FLAG_RETAINED);
        r = peer_deliver(to, o, suffix, n, true);
        return r < 0 ? r : 0;
}

/* ---- Frames from clients. */

static void handle_publish(Peer *p, const EnvelopeView *env, const OutFrame *o) {
        Manager *m = p->manager;
        const char *topic = env->topic.s;
        size_t len = env->topic.len;
        unsigned receivers;
        int r;

        if (!topic || !topic_is_valid(topic, len)) {
                router_send_error(m, p, env->serial, "bus.Error.InvalidArgs",
                                  "invalid topic \"%.*s\"", (int) MIN(len, (size_t) 64),
                                  topic ? topic : "");
                return;
        }
        if (topic_is_reserved(topic, len)) {
                router_send_error(m, p, env->serial, "bus.Error.AccessDenied",
                                  "topic \"%.*s\" is reserved for the broker",
                                  (int) MIN(len, (size_t) 64), topic);
                return;
        }
        if (env->flags & BUS__ENVELOPE_FLAG__ENVELOPE_FLAG_RETAIN) {
                char key[TOPIC_MAX + 1];

                /* Valid topics hold no NUL and fit: the copy cannot fail. */
                (void) envelope_string_copy(env->topic, key, sizeof(key));
                r = retained_set(m->retained, key, o,
                                 o->payload_len > 0 || env->memfd_payload_size > 0);
                if (r < 0) {
                        router_send_error(m, p, env->serial, "bus.Error.LimitsExceeded",
                                          "cannot retain message: %s", strerror(-r));
                        return;
                }
        }
        m->stats.messages_routed++;
        receivers = route_publish(m, topic, len, o);
        if (_unlikely_(m->n_monitors > 0))
                monitor_routed(p, env, o, NULL, false, receivers);
}

/* The peer a destination names, or NULL. */
static Peer *lookup_destination(Manager *m, const char *destination) {
        NameClient *owner;

        if (destination[0] == ':')
                return manager_find_peer(m, destination);
        owner = name_registry_get_owner(m->names, destination);
        return owner ? container_of(owner, Peer, names) : NULL;
}

static bool method_is_valid(EnvelopeString method) {
        return method.len > 0 && method.len <= METHOD_MAX && !memchr(method.s, '\0', method.len);
}

static void handle_request(Peer *p, const EnvelopeView *env, const WireFrame *f,
                           const OutFrame *o) {
        Manager *m = p->manager;
        bool want_reply = !(env->flags & BUS__ENVELOPE_FLAG__ENVELOPE_FLAG_NO_REPLY);
        char destination[NAME_MAX_LEN + 1];
        uint64_t timeout;
        Peer *callee;
        int r;

        if (!envelope_string_copy(env->destination, destination, sizeof(destination)) ||
            !name_is_valid_destination(destination) || !method_is_valid(env->method)) {
                router_send_error(m, p, env->serial, "bus.Error.InvalidArgs",
                                  "invalid destination or method");
                return;
        }
        if (strcmp(destination, "bus") == 0) {
                m->stats.messages_routed++;
                if (_unlikely_(m->n_monitors > 0))
                        monitor_routed(p, env, o, NULL, true, 0);
                driver_handle(p, env, f);
                return;
        }
        /* Only greeted peers take requests: not those still saying Hello,
         * closing, or monitoring. */
        callee = lookup_destination(m, destination);
        if (callee && callee->state != PEER_STATE_ACTIVE)
                callee = NULL;
        /* Copied before it is answered, so that monitors see a request ahead
         * of the broker's error about it. */
        if (_unlikely_(m->n_monitors > 0))
                monitor_routed(p, env, o, callee, false, 0);
        if (!callee) {
                if (want_reply)
                        router_send_error(m, p, env->serial, "bus.Error.NoOwner",
                                          "no owner for \"%s\"", destination);
                return;
        }
        if (peer_is_full(callee)) {
                if (want_reply)
                        router_send_error(m, p, env->serial, "bus.Error.LimitsExceeded",
                                          "%s (%s) is not reading its messages", destination,
                                          callee->unique_id);
                return;
        }
        if (want_reply) {
                timeout = env->timeout_ms ? (uint64_t) env->timeout_ms * 1000u
                                          : m->config.default_timeout_usec;
                timeout = MIN(timeout, m->config.max_timeout_usec);
                r = pending_add(m->pending, p, env->serial, callee, timeout);
                if (r == -EEXIST) {
                        router_send_error(m, p, env->serial, "bus.Error.InvalidArgs",
                                          "serial %llu is already waiting for a reply",
                                          (unsigned long long) env->serial);
                        return;
                }
                if (r < 0) {
                        router_send_error(m, p, env->serial, "bus.Error.LimitsExceeded",
                                          "cannot track request: %s", strerror(-r));
                        return;
                }
        }
        m->stats.messages_routed++;
        r = peer_deliver(callee, o, NULL, 0, false);
        if (r != 0 && want_reply) {
                pending_free(m->pending, pending_find(m->pending, p->id, env->serial));
                router_send_error(m, p, env->serial, "bus.Error.LimitsExceeded",
                                  "cannot queue request for %s", callee->unique_id);
        }
}

/* ":1.N" to N, without a copy: the destination is not NUL-terminated. */
static bool parse_unique_id(EnvelopeString s, uint64_t *ret) {
        uint64_t v = 0;

        if (s.len < 4 || s.len > 3 + 20 || memcmp(s.s, ":1.", 3) != 0 || s.s[3] == '0')
                return false;
        for (size_t i = 3; i < s.len; i++) {
                unsigned d = (unsigned) (s.s[i] - '0');
                if (d > 9 || v > (UINT64_MAX - d) / 10)
                        return false;
                v = v * 10 + d;
        }
        *ret = v;
        return true;
}

static void handle_reply(Peer *p, const EnvelopeView *env, const OutFrame *o) {
        Manager *m = p->manager;
        uint64_t caller_id;
        Pending *pd = NULL;
        Peer *caller;

        if (env->kind == BUS__KIND__KIND_ERROR &&
            (env->error_name.len == 0 || env->error_name.len > ERROR_NAME_MAX)) {
                router_send_error(m, p, env->serial, "bus.Error.InvalidArgs",
                                  "error frame without a valid error name");
                return;
        }
        if (env->reply_serial != 0 && parse_unique_id(env->destination, &caller_id))
                pd = pending_find(m->pending, caller_id, env->reply_serial);
        if (!pd || pd->callee != p) {
                /* A late answer after a timeout, or one nobody asked this peer
                 * for: not accepted, so nothing is lost; counted for stats. */
                m->stats.replies_unexpected++;
                log_debug("unexpected reply from %s to %.*s (serial %llu) dropped", p->unique_id,
                          (int) MIN(env->destination.len, (size_t) NAME_MAX_LEN),
                          env->destination.s ? env->destination.s : "",
                          (unsigned long long) env->reply_serial);
                return;
        }
        caller = pd->caller;
        pending_free(m->pending, pd);
        m->stats.messages_routed++;
        (void) peer_deliver(caller, o, NULL, 0, false);
        if (_unlikely_(m->n_monitors > 0))
                monitor_routed(p, env, o, caller, false, 0);
}

/* Refuses a memfd payload that is not what its envelope says; true if the
 * frame may go on. */
static bool check_memfd_payload(Peer *p, const EnvelopeView *env, const WireFrame *f) {
        Manager *m = p->manager;
        const char *why;
        bool quota;
        int r;

        r = payload_check(&m->config, p->payload_account, f, env->memfd_payload_size);
        if (r == 0)
                return true;
        why = r < 0 ? strerror(-r) : payload_strerror(r);
        quota = r == PAYLOAD_E_QUOTA || r == PAYLOAD_E_TOO_LARGE;
        log_debug("frame from %s refused: %s", p->unique_id, why);
        router_send_error(m, p, env->serial,
                          quota ? "bus.Error.LimitsExceeded" : "bus.Error.InvalidArgs", "%s", why);
        return false;
}

/* A frame from a peer that has not said Hello yet, or from a monitor. */
static void handle_inactive(Peer *p, const EnvelopeView *env, const WireFrame *f,
                            const OutFrame *o) {
        Manager *m = p->manager;
        EnvelopeView hello;

        switch (p->state) {
        case PEER_STATE_NEW:
                if (env->kind != BUS__KIND__KIND_REQUEST ||
                    !ENVELOPE_STRING_IS(env->destination, "bus") ||
                    !ENVELOPE_STRING_IS(env->method, "Hello")) {
                        peer_protocol_error(p, "the first frame must be a Hello request to bus");
                        return;
                }
                if (_unlikely_(m->n_monitors > 0)) {
                        /* Hello's descriptors are not checked: none goes
                         * to monitors as a payload. */
                        hello = *env;
                        hello.memfd_payload_size = 0;
                        monitor_routed(p, &hello, o, NULL, true, 0);
                }
                driver_hello(p, env, f);
                return;
        case PEER_STATE_MONITOR:
                /* Monitors only watch: whatever one sends, it goes. */
                log_warning("monitor %s (pid %d, uid %u) sent a frame: disconnecting it",
                            p->unique_id, (int) p->ucred.pid, (unsigned) p->ucred.uid);
                m->stats.protocol_errors++;
                router_send_error(m, p, 0, "bus.Error.AccessDenied", "a monitor may not send");
                peer_close(p, "monitor sent a frame");
                return;
        default:
                return; /* closing: its input is ignored */
        }
}

void router_handle_frame(Peer *p, const WireFrame *f) {
        Manager *m = p->manager;
        EnvelopeView env;
        OutFrame o = {
                .chunk = f->chunk,
                .envelope = f->envelope,
                .envelope_len = f->preamble.envelope_len,
                .payload = f->payload,
                .payload_len = f->preamble.payload_len,
                .stamp = p->stamp,
                .fds = f->fds,
        };

        m->stats.frames_received++;
        if (envelope_view_parse(&env, f->envelope, f->preamble.envelope_len) < 0) {
                peer_protocol_error(p, "envelope does not decode");
                return;
        }
        if (env.serial == 0) {
                peer_protocol_error(p, "frame without a serial");
                return;
        }
        if (_unlikely_(p->state != PEER_STATE_ACTIVE)) {
                handle_inactive(p, &env, f, &o);
                return;
        }
        if (env.has_broker_fields) {
                router_send_error(m, p, env.serial, "bus.Error.InvalidArgs",
                                  "frame sets fields only the broker may set");
                return;
        }
        if (env.memfd_payload_size > 0 && !check_memfd_payload(p, &env, f))
                return;

        switch (env.kind) {
        case BUS__KIND__KIND_PUBLISH:
                handle_publish(p, &env, &o);
                break;
        case BUS__KIND__KIND_REQUEST:
                handle_request(p, &env, f, &o);
                break;
        case BUS__KIND__KIND_REPLY:
        case BUS__KIND__KIND_ERROR:
                handle_reply(p, &env, &o);
                break;
        default:
                router_send_error(m, p, env.serial, "bus.Error.InvalidArgs",
                                  "unknown message kind %u", env.kind);
                break;
        }
}

/* ---- Departure. */

void router_name_changed(const NameChange *change, void *userdata) {
        Manager *m = userdata;
        Bus__NameOwnerChanged ev = BUS__NAME_OWNER_CHANGED__INIT;
        char topic[16 + NAME_MAX_LEN];

        ev.name = (char *) change->name;
        ev.old_owner = change->old_owner ? container_of(change->old_owner, Peer, names)->unique_id
                                         : (char *) "";
        ev.new_owner = change->new_owner ? container_of(change->new_owner, Peer, names)->unique_id
                                         : (char *) "";
        log_debug("name %s: owner %s -> %s", ev.name, ev.old_owner[0] ? ev.old_owner : "(none)",
                  ev.new_owner[0] ? ev.new_owner : "(none)");
        snprintf(topic, sizeof(topic), "bus.name.%s", change->name);
        router_publish_event(m, topic, &ev.base);
}

static void peer_event(Manager *m, Peer *p, const char *topic) {
        Bus__PeerEvent ev = BUS__PEER_EVENT__INIT;

        ev.unique_id = p->unique_id;
        ev.uid = p->ucred.uid;
        ev.gid = p->ucred.gid;
        ev.pid = (uint32_t) p->ucred.pid;
        router_publish_event(m, topic, &ev.base);
}

void router_peer_greeted(Peer *p) {
        peer_event(p->manager, p, "bus.peer.connected");
}

void router_peer_drop_registrations(Peer *p) {
        Manager *m = p->manager;
        HashmapIter it = HASHMAP_ITER_INIT;
        void *value;

        if (m->names)
                name_registry_release_all(m->names, &p->names, router_name_changed, m);
        if (p->subscriptions)
                while (hashmap_iterate(p->subscriptions, &it, &value, NULL)) {
                        uint64_t id = match_sub_get_id(value);
                        hashmap_remove(p->subscriptions, &id);
                        match_sub_free(value);
                }
}

void router_peer_gone(Peer *p) {
        Manager *m = p->manager;
        Pending *pd, *tmp;

        if (!m)
                return;
        list_for_each_safe(pd, tmp, &p->calls_in, callee_link) {
                Peer *caller = pd->caller;
                uint64_t serial = pd->serial;

                pending_free(m->pending, pd);
                router_send_error(m, caller, serial, "bus.Error.Disconnected",
                                  "%s disconnected before replying", p->unique_id);
        }
        list_for_each_safe(pd, tmp, &p->calls_out, caller_link)
                pending_free(m->pending, pd);

        router_peer_drop_registrations(p);
        if (p->greeted) {
                p->greeted = false;
                peer_event(m, p, "bus.peer.disconnected");
        }
}
