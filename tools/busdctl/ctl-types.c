/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Where busdctl's protobuf types come from, in the order they are tried:
 * the broker's own types (built in, from the generated descriptors of
 * proto/bus.proto), FileDescriptorSet files given with --descriptors, and
 * bus.Introspect answers of the peers involved: the service called, the
 * sender of a message, and, for a type nobody involved knows, every peer on
 * the bus (asked once, all at the same time).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "libbus/descriptor-set.h"
#include "libbus/topic.h"
#include "tools/busdctl/busdctl.h"

#define INTROSPECT_TIMEOUT_USEC (5 * BUS_USEC_PER_SEC)
#define DISCOVER_TIMEOUT_USEC (1 * BUS_USEC_PER_SEC)

typedef struct Peer {
        char *destination;
        Bus__IntrospectReply *reply; /* NULL: it did not answer */
} Peer;

typedef struct Set {
        uint8_t *data;
        size_t size;
} Set;

struct TypeCache {
        PbRegistry *registry;
        Peer *peers;
        size_t n_peers;
        Set *sets;             /* every set added, for types_watch() */
        size_t n_sets;
        bool discovered;       /* every peer was asked */
        size_t discovering;    /* answers still to come */
        types_set_fn watch;
        void *watch_userdata;
};

PbRegistry *types_registry(TypeCache *t) {
        return t->registry;
}

TypeCache *types_free(TypeCache *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n_peers; i++) {
                free(t->peers[i].destination);
                if (t->peers[i].reply)
                        protobuf_c_message_free_unpacked(&t->peers[i].reply->base, NULL);
        }
        free(t->peers);
        for (size_t i = 0; i < t->n_sets; i++)
                free(t->sets[i].data);
        free(t->sets);
        pb_registry_free(t->registry);
        free(t);
        return NULL;
}

int types_add_set(TypeCache *t, const uint8_t *data, size_t size) {
        int r;

        /* The same set often comes twice (the same program on two
         * connections, a capture file's copy): skip what is known. */
        for (size_t i = 0; i < t->n_sets; i++)
                if (t->sets[i].size == size && memcmp(t->sets[i].data, data, size) == 0)
                        return 0;

        r = pb_registry_add_set(t->registry, data, size);
        if (r < 0)
                return r;

        Set *sets = realloc(t->sets, (t->n_sets + 1) * sizeof(Set));
        if (!sets)
                return -ENOMEM;
        t->sets = sets;
        uint8_t *copy = malloc(size ? size : 1);
        if (!copy)
                return -ENOMEM;
        memcpy(copy, data, size);
        t->sets[t->n_sets++] = (Set){ copy, size };
        if (t->watch)
                t->watch(data, size, t->watch_userdata);
        return r;
}

void types_watch(TypeCache *t, types_set_fn fn, void *userdata) {
        t->watch = fn;
        t->watch_userdata = userdata;
        for (size_t i = 0; fn && i < t->n_sets; i++)
                fn(t->sets[i].data, t->sets[i].size, userdata);
}

/* The broker's types, from the descriptors compiled into this program. */
static int add_builtin(TypeCache *t) {
        static const ProtobufCMessageDescriptor *const events[] = {
                &bus__peer_event__descriptor,       &bus__name_owner_changed__descriptor,
                &bus__peer_lagging__descriptor,     &bus__introspect_request__descriptor,
                &bus__introspect_reply__descriptor, &bus__envelope__descriptor,
        };
        DescriptorSet *set = NULL;
        _cleanup_free_ uint8_t *data = NULL;
        size_t size;
        int r;

        r = descriptor_set_new(&set);
        if (r < 0)
                return r;
        r = descriptor_set_add_service(set, &bus__bus__descriptor);
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(events); i++)
                r = descriptor_set_add_message(set, events[i]);
        if (r >= 0)
                r = descriptor_set_pack(set, &data, &size);
        descriptor_set_free(set);
        if (r < 0)
                return r;
        r = types_add_set(t, data, size);
        return r < 0 ? r : 0;
}

int types_new(TypeCache **ret) {
        TypeCache *t = calloc(1, sizeof(*t));
        int r;

        if (!t)
                return -ENOMEM;
        r = pb_registry_new(&t->registry);
        if (r >= 0)
                r = add_builtin(t);
        if (r < 0)
                return types_free(t), r;
        *ret = t;
        return 0;
}

int types_load_files(Ctl *ctl) {
        for (size_t i = 0; i < ctl->n_descriptor_files; i++) {
                _cleanup_free_ uint8_t *data = NULL;
                size_t size;
                int r;

                r = ctl_read_file(ctl->descriptor_files[i], &data, &size);
                if (r >= 0)
                        r = types_add_set(ctl->types, data, size);
                if (r < 0) {
                        ctl_error(r, "--descriptors %s", ctl->descriptor_files[i]);
                        return r == -EBADMSG ? EXIT_USAGE : EXIT_FAILED;
                }
        }
        return 0;
}

static Peer *peer_find(TypeCache *t, const char *destination) {
        for (size_t i = 0; i < t->n_peers; i++)
                if (strcmp(t->peers[i].destination, destination) == 0)
                        return &t->peers[i];
        return NULL;
}

/* Records a destination's answer (reply may be NULL: none) and learns its
 * types. */
static Peer *peer_add(TypeCache *t, const char *destination, bus_message *reply) {
        Bus__IntrospectReply *ir = NULL;
        Peer *peers;

        if (reply) {
                ProtobufCMessage *pb = NULL;
                if (bus_message_read_protobuf(reply, &bus__introspect_reply__descriptor, &pb) >= 0)
                        ir = (Bus__IntrospectReply *) pb;
        }
        if (ir && ir->file_descriptor_set.len > 0)
                /* A set that does not decode is as good as no answer for
                 * decoding; the services and topics it names still show. */
                (void) types_add_set(t, ir->file_descriptor_set.data, ir->file_descriptor_set.len);

        peers = realloc(t->peers, (t->n_peers + 1) * sizeof(Peer));
        if (!peers)
                goto fail;
        t->peers = peers;
        char *d = strdup(destination);
        if (!d)
                goto fail;
        t->peers[t->n_peers] = (Peer){ d, ir };
        return &t->peers[t->n_peers++];
fail:
        if (ir)
                protobuf_c_message_free_unpacked(&ir->base, NULL);
        return NULL;
}

static uint64_t lookup_timeout(const Ctl *ctl, uint64_t limit) {
        return ctl->timeout_set ? MIN(ctl->timeout_usec, limit) : limit;
}

int types_introspect(Ctl *ctl, bus_client *bus, const char *destination,
                     const Bus__IntrospectReply **ret) {
        TypeCache *t = ctl->types;
        Peer *p = peer_find(t, destination);

        if (!p) {
                _cleanup_(bus_message_unrefp) bus_message *reply = NULL;
                bus_error error = BUS_ERROR_NULL;
                int r;

                r = bus_client_call_method(bus, destination, BUS_METHOD_INTROSPECT, NULL, 0,
                                           lookup_timeout(ctl, INTROSPECT_TIMEOUT_USEC), &error,
                                           &reply);
                bus_error_free(&error);
                /* -ECONNRESET also means the peer left (bus.Error.Disconnected):
                 * only a lost connection of our own is an error here. */
                if (r < 0 && bus_client_is_connected(bus) <= 0)
                        return -ECONNRESET;
                p = peer_add(t, destination, r >= 0 ? reply : NULL);
                if (!p)
                        return -ENOMEM;
        }
        if (ret)
                *ret = p->reply;
        return p->reply ? 0 : -ENODATA;
}

/* The calls point to the TypeCache, not to the stack of types_discover():
 * one that is still out when it returns early completes (or fails) later,
 * at the latest when its connection is freed, before the TypeCache is. */
typedef struct DiscoveryCall {
        TypeCache *types;
        char *destination;
} DiscoveryCall;

static int discovery_answer(bus_message *m, void *userdata) {
        DiscoveryCall *call = userdata;

        if (!peer_find(call->types, call->destination))
                (void) peer_add(call->types, call->destination,
                                bus_message_get_kind(m) == BUS_KIND_REPLY ? m : NULL);
        call->types->discovering--;
        free(call->destination);
        free(call);
        return 0;
}

/* Asks every peer not asked yet, all at once, and waits for the answers
 * (a peer that does not process its requests, such as a program blocked in
 * a call, costs DISCOVER_TIMEOUT_USEC, once). */
static int types_discover(Ctl *ctl, bus_client *bus) {
        _cleanup_(protobuf_c_message_free_unpackedp) ProtobufCMessage *pb = NULL;
        Bus__ListPeersRequest request = BUS__LIST_PEERS_REQUEST__INIT;
        TypeCache *t = ctl->types;
        bus_error error = BUS_ERROR_NULL;
        const char *self = NULL, *main_id = NULL;
        int r;

        if (t->discovered)
                return 0;
        t->discovered = true;

        r = bus_client_call_protobuf(bus, "bus", "ListPeers", &request.base,
                                     &bus__list_peers_reply__descriptor,
                                     lookup_timeout(ctl, INTROSPECT_TIMEOUT_USEC), &error, &pb);
        bus_error_free(&error);
        if (r < 0)
                return r;
        (void) bus_client_get_unique_id(bus, &self);
        /* busdctl's own connections do not describe anything, and the main
         * one may be busy in the very callback that asks */
        if (ctl->bus && ctl->bus != bus)
                (void) bus_client_get_unique_id(ctl->bus, &main_id);

        const Bus__ListPeersReply *peers = (const Bus__ListPeersReply *) pb;
        for (size_t i = 0; i < peers->n_peers; i++) {
                const char *id = peers->peers[i]->unique_id;
                if (streq_ptr(id, self) || streq_ptr(id, main_id) || peers->peers[i]->monitor ||
                    peer_find(t, id))
                        continue;

                _cleanup_(bus_message_unrefp) bus_message *m = NULL;
                DiscoveryCall *call = calloc(1, sizeof(*call));
                if (!call || !(call->destination = strdup(id))) {
                        free(call);
                        return -ENOMEM;
                }
                call->types = t;
                r = bus_message_new_request(&m, id, BUS_METHOD_INTROSPECT);
                if (r >= 0)
                        r = bus_client_call_async(bus, NULL, m, discovery_answer, call,
                                                  lookup_timeout(ctl, DISCOVER_TIMEOUT_USEC));
                if (r < 0) {
                        free(call->destination);
                        free(call);
                        return r;
                }
                t->discovering++;
        }

        /* Every call ends, with an answer or a timeout, so this loop ends;
         * a lost connection fails them all at once. */
        while (t->discovering > 0) {
                r = bus_client_process(bus);
                if (r < 0)
                        return r;
                if (r == 0) {
                        r = bus_client_wait(bus, BUS_TIMEOUT_INFINITE);
                        if (r < 0 && r != -EINTR)
                                return r;
                }
        }
        return 0;
}

int types_resolve(Ctl *ctl, bus_client *bus, const char *type, const char *first,
                  const char *second) {
        PbRegistry *registry = ctl->types->registry;
        const char *const candidates[] = { first, second };
        int r;

        if (!type || !*type)
                return 0;
        if (pb_registry_has_message(registry, type))
                return 1;
        if (!bus)
                return 0;
        for (size_t i = 0; i < ELEMENTSOF(candidates); i++) {
                const char *peer = candidates[i];
                /* the broker's types are built in */
                if (!peer || !*peer || strcmp(peer, "bus") == 0)
                        continue;
                r = types_introspect(ctl, bus, peer, NULL);
                if (r == -ECONNRESET)
                        return r;
                if (pb_registry_has_message(registry, type))
                        return 1;
        }
        r = types_discover(ctl, bus);
        if (r == -ECONNRESET)
                return r;
        return pb_registry_has_message(registry, type);
}

const char *types_for_topic(Ctl *ctl, bus_client *bus, const char *topic) {
        TypeCache *t = ctl->types;

        if (types_discover(ctl, bus) < 0)
                return NULL;
        for (size_t i = 0; i < t->n_peers; i++) {
                const Bus__IntrospectReply *ir = t->peers[i].reply;
                for (size_t j = 0; ir && j < ir->n_topic_types; j++) {
                        const char *pattern = ir->topic_types[j]->pattern;
                        if (*pattern && topic_pattern_matches(pattern, strlen(pattern), topic,
                                                              strlen(topic)))
                                return ir->topic_types[j]->type;
                }
        }
        return NULL;
}

json_object *types_decode(Ctl *ctl, const char *type, const uint8_t *data, size_t size) {
        json_object *o = NULL, *raw = NULL;

        if (type && *type && pb_decode_json(ctl->types->registry, type, data, size,
                                            PB_DECODE_DEFAULTS, &o) >= 0)
                return o;

        o = json_object_new_object();
        if (!o)
                return NULL;
        if (type && *type) {
                json_object_object_add(o, "@type", json_object_new_string(type));
                if (pb_decode_raw_json(data, size, &raw) >= 0) {
                        json_object_object_add(o, "@raw", raw);
                        return o;
                }
        } else if (pb_text_is_printable(data, size)) {
                json_object_object_add(o, "@text", json_object_new_string_len((const char *) data,
                                                                              (int) size));
                return o;
        }
        _cleanup_free_ char *b64 = pb_base64_encode(data, size);
        if (b64)
                json_object_object_add(o, "@base64", json_object_new_string(b64));
        return o;
}
