/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Introspection: what a connection tells others about the protobuf types it
 * speaks, and the built-in answer to BUS_METHOD_INTROSPECT.
 *
 * A client's Introspection is made on the first type added and owns:
 *  - a DescriptorSet of every type added: by binding a service, by
 *    bus_client_add_type(), and by sending a message that
 *    bus_message_set_protobuf() filled;
 *  - the (topic pattern, type) pairs, in a hash, so the send path finds a
 *    pair it has seen with one hash and one comparison;
 *  - a hash of the descriptor pointers already in the set, for the same
 *    reason: sending is the hot path, and almost every send repeats a type
 *    seen before;
 *  - the packed FileDescriptorSet, made on the first request after the set
 *    changed, since packing walks every type.
 * The services in an answer are not stored here: they are the services
 * bound right now (see service.c), found in the client's method handlers.
 *
 * Publishes record their topic, not a pattern, so a publisher of many
 * topics would grow the pairs without end: past INTROSPECT_TOPICS_MAX of
 * them, a publish on a new topic adds only its type.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include <protobuf-c/protobuf-c.h>

#include <libbus/bus.h>

#include "libbus/bus-internal.h"
#include "libbus/descriptor-set.h"
#include "libbus/macro.h"
#include "libbus/topic.h"

#define INTROSPECT_TOPICS_MAX 256u

typedef struct TopicType {
        uint64_t hash;
        char *pattern; /* NULL: no particular topic */
        const ProtobufCMessageDescriptor *desc; /* NULL: an empty bucket */
        bool from_send; /* counted against INTROSPECT_TOPICS_MAX */
} TopicType;

struct Introspection {
        DescriptorSet *types;
        const void **descs;       /* open addressing: descriptors in types */
        size_t n_descs, descs_size;
        TopicType *topics;        /* open addressing */
        size_t n_topics, topics_size;
        size_t n_sent_topics;
        uint8_t *packed;          /* FileDescriptorSet of types, or NULL if stale */
        size_t packed_size;
};

/* ---- Hashes (linear probing, power-of-two sizes, at most half full). */

static uint64_t hash_ptr(const void *p) {
        return (uint64_t) (uintptr_t) p * UINT64_C(0x9E3779B97F4A7C15);
}

static uint64_t hash_topic(const char *pattern, const ProtobufCMessageDescriptor *desc) {
        uint64_t h = UINT64_C(0xcbf29ce484222325); /* FNV-1a */

        for (const char *p = pattern ?: ""; *p; p++) {
                h ^= (uint8_t) *p;
                h *= UINT64_C(0x100000001b3);
        }
        return h ^ hash_ptr(desc);
}

static bool descs_contains(const Introspection *in, const void *desc) {
        if (in->descs_size == 0)
                return false;
        for (size_t i = hash_ptr(desc) >> 32;; i++) {
                const void *d = in->descs[i & (in->descs_size - 1)];

                if (!d)
                        return false;
                if (d == desc)
                        return true;
        }
}

static void descs_put(const void **table, size_t size, const void *desc) {
        size_t i = hash_ptr(desc) >> 32;

        while (table[i & (size - 1)])
                i++;
        table[i & (size - 1)] = desc;
}

static int descs_add(Introspection *in, const void *desc) {
        if (descs_contains(in, desc))
                return 0;
        if (2 * (in->n_descs + 1) > in->descs_size) {
                size_t size = in->descs_size ? 2 * in->descs_size : 16;
                const void **table = calloc(size, sizeof(*table));

                if (!table)
                        return -ENOMEM;
                for (size_t i = 0; i < in->descs_size; i++)
                        if (in->descs[i])
                                descs_put(table, size, in->descs[i]);
                free(in->descs);
                in->descs = table;
                in->descs_size = size;
        }
        descs_put(in->descs, in->descs_size, desc);
        in->n_descs++;
        return 0;
}

static TopicType *topics_find(const Introspection *in, const char *pattern,
                              const ProtobufCMessageDescriptor *desc, uint64_t hash) {
        if (in->topics_size == 0)
                return NULL;
        for (size_t i = hash;; i++) {
                TopicType *t = &in->topics[i & (in->topics_size - 1)];

                if (!t->desc)
                        return NULL;
                if (t->hash == hash && t->desc == desc &&
                    (pattern ? t->pattern && strcmp(t->pattern, pattern) == 0 : !t->pattern))
                        return t;
        }
}

static void topics_put(TopicType *table, size_t size, TopicType t) {
        size_t i = t.hash;

        while (table[i & (size - 1)].desc)
                i++;
        table[i & (size - 1)] = t;
}

/* 1 if added, 0 if there. */
static int topics_add(Introspection *in, const char *pattern,
                      const ProtobufCMessageDescriptor *desc, bool from_send) {
        uint64_t hash = hash_topic(pattern, desc);
        char *p = NULL;

        if (topics_find(in, pattern, desc, hash))
                return 0;
        if (2 * (in->n_topics + 1) > in->topics_size) {
                size_t size = in->topics_size ? 2 * in->topics_size : 16;
                TopicType *table = calloc(size, sizeof(*table));

                if (!table)
                        return -ENOMEM;
                for (size_t i = 0; i < in->topics_size; i++)
                        if (in->topics[i].desc)
                                topics_put(table, size, in->topics[i]);
                free(in->topics);
                in->topics = table;
                in->topics_size = size;
        }
        if (pattern) {
                p = strdup(pattern);
                if (!p)
                        return -ENOMEM;
        }
        topics_put(in->topics, in->topics_size,
                   (TopicType){ .hash = hash, .pattern = p, .desc = desc, .from_send = from_send });
        in->n_topics++;
        if (from_send)
                in->n_sent_topics++;
        return 1;
}

/* ---- The per-client data. */

static int introspection_get(bus_client *c, Introspection **ret) {
        Introspection *in = c->introspection;
        int r;

        if (!in) {
                in = calloc(1, sizeof(*in));
                if (!in)
                        return -ENOMEM;
                r = descriptor_set_new(&in->types);
                if (r < 0) {
                        free(in);
                        return r;
                }
                c->introspection = in;
        }
        *ret = in;
        return 0;
}

void client_introspect_free(bus_client *c) {
        Introspection *in = c->introspection;

        if (!in)
                return;
        for (size_t i = 0; i < in->topics_size; i++)
                free(in->topics[i].pattern);
        free(in->topics);
        free(in->descs);
        free(in->packed);
        descriptor_set_free(in->types);
        free(in);
        c->introspection = NULL;
}

static void introspection_changed(Introspection *in) {
        free(in->packed);
        in->packed = NULL;
        in->packed_size = 0;
}

static int add_message(Introspection *in, const ProtobufCMessageDescriptor *desc) {
        int r;

        if (descs_contains(in, desc))
                return 0;
        r = descriptor_set_add_message(in->types, desc);
        if (r < 0)
                return r;
        if (r > 0)
                introspection_changed(in);
        return descs_add(in, desc);
}

int client_introspect_add_service(bus_client *c, const ProtobufCServiceDescriptor *desc) {
        Introspection *in;
        int r;

        r = introspection_get(c, &in);
        if (r < 0)
                return r;
        r = descriptor_set_add_service(in->types, desc);
        if (r > 0)
                introspection_changed(in);
        return r < 0 ? r : 0;
}

_public_ int bus_client_add_type(bus_client *c, const char *pattern,
                                 const ProtobufCMessageDescriptor *desc) {
        Introspection *in;
        int r;

        if (!c || !desc || desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC ||
            (pattern && !topic_pattern_is_valid(pattern, strlen(pattern))))
                return -EINVAL;
        r = introspection_get(c, &in);
        if (r < 0)
                return r;
        r = add_message(in, desc);
        if (r < 0)
                return r;
        r = topics_add(in, pattern, desc, false);
        return r < 0 ? r : 0;
}

void client_introspect_sent(bus_client *c, bus_message *m) {
        const ProtobufCMessageDescriptor *desc = m->payload_desc;
        const char *topic = m->kind == BUS_KIND_PUBLISH ? m->env->topic : NULL;
        Introspection *in = c->introspection;
        int r;

        if (in && descs_contains(in, desc) &&
            (!topic || topics_find(in, topic, desc, hash_topic(topic, desc))))
                return;
        /* Something new. The payload may have been replaced since it was
         * packed: the type it names now is the one to trust. */
        if (!streq(m->env->payload_type, desc->name))
                return;
        r = introspection_get(c, &in);
        if (r >= 0)
                r = add_message(in, desc);
        if (r >= 0 && topic && in->n_sent_topics < INTROSPECT_TOPICS_MAX)
                r = topics_add(in, topic, desc, true);
        if (r < 0)
                client_log(c, LOG_DEBUG, "cannot record type %s: %s", desc->name, strerror(-r));
}

/* ---- The answer. */

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* The services bound on the name a request was sent to (or on any). */
static int reply_services(bus_client *c, const char *destination, Bus__IntrospectReply *reply) {
        size_t n = 0, k = 0;

        for (bus_slot *s = c->methods_first; s; s = s->method.next)
                n += service_slot_descriptor(s) != NULL;
        if (n == 0)
                return 0;
        reply->services = calloc(n, sizeof(char *));
        if (!reply->services)
                return -ENOMEM;
        for (bus_slot *s = c->methods_first; s; s = s->method.next) {
                const ProtobufCServiceDescriptor *d = service_slot_descriptor(s);

                if (d && (!s->method.name || streq(s->method.name, destination)))
                        reply->services[k++] = (char *) d->name;
        }
        qsort(reply->services, k, sizeof(char *), cmp_str);
        /* A service bound on several names is listed once. */
        n = 0;
        for (size_t i = 0; i < k; i++)
                if (n == 0 || strcmp(reply->services[n - 1], reply->services[i]) != 0)
                        reply->services[n++] = reply->services[i];
        reply->n_services = n;
        return 0;
}

static int cmp_topic_type(const void *a, const void *b) {
        const Bus__TopicType *x = *(Bus__TopicType *const *) a, *y = *(Bus__TopicType *const *) b;
        int r = strcmp(x->pattern, y->pattern);

        return r != 0 ? r : strcmp(x->type, y->type);
}

static int reply_topics(Introspection *in, Bus__TopicType *items, Bus__IntrospectReply *reply) {
        size_t n = 0;

        reply->topic_types = calloc(in->n_topics, sizeof(Bus__TopicType *));
        if (!reply->topic_types)
                return -ENOMEM;
        for (size_t i = 0; i < in->topics_size; i++) {
                const TopicType *t = &in->topics[i];

                if (!t->desc)
                        continue;
                bus__topic_type__init(&items[n]);
                items[n].pattern = t->pattern ?: (char *) "";
                items[n].type = (char *) t->desc->name;
                reply->topic_types[n] = &items[n];
                n++;
        }
        qsort(reply->topic_types, n, sizeof(Bus__TopicType *), cmp_topic_type);
        reply->n_topic_types = n;
        return 0;
}

static int introspect_send(bus_client *c, bus_message *request) {
        Bus__IntrospectReply reply = BUS__INTROSPECT_REPLY__INIT;
        _cleanup_(bus_message_unrefp) bus_message *m = NULL;
        _cleanup_free_ Bus__TopicType *items = NULL;
        Introspection *in = c->introspection;
        int r;

        r = reply_services(c, request->env->destination, &reply);
        if (r >= 0 && in && in->n_topics > 0) {
                items = calloc(in->n_topics, sizeof(*items));
                r = items ? reply_topics(in, items, &reply) : -ENOMEM;
        }
        if (r >= 0 && in && !in->packed)
                r = descriptor_set_pack(in->types, &in->packed, &in->packed_size);
        if (r >= 0 && in) {
                reply.file_descriptor_set.data = in->packed;
                reply.file_descriptor_set.len = in->packed_size;
        }
        if (r >= 0)
                r = bus_message_new_reply(request, &m);
        if (r >= 0)
                r = bus_message_set_protobuf(m, &reply.base);
        free(reply.services);
        free(reply.topic_types);
        if (r < 0)
                return r;
        /* The answer describes the types; it is not one of them. */
        m->payload_desc = NULL;
        return bus_client_send(c, m, NULL);
}

void client_introspect_reply(bus_client *c, bus_message *request) {
        int r;

        if (message_is_no_reply(request))
                return;
        r = introspect_send(c, request);
        if (r < 0) {
                client_log(c, LOG_DEBUG, "cannot answer %s from %s: %s", BUS_METHOD_INTROSPECT,
                           request->env->sender, strerror(-r));
                if (!request->replied)
                        (void) bus_client_reply_error(c, request, BUS_ERROR_FAILED, "%s",
                                                      strerror(-r));
        }
}
