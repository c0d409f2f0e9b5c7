/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Retained messages by topic; see retained.h. A new subscription scans every
 * retained topic against its pattern: subscribing is rare next to publishing,
 * and the scan keeps publishing free of any retained-message work except for
 * retained publishes themselves.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "busd/hashmap.h"
#include "busd/retained.h"
#include "libbus/topic.h"

typedef struct Retained {
        char *topic;
        OutFrame frame;   /* frame.chunk holds envelope and payload */
} Retained;

struct RetainedStore {
        Hashmap *by_topic;
};

static Retained *retained_free(Retained *r) {
        if (!r)
                return NULL;
        wire_chunk_unref(r->frame.chunk);
        wire_chunk_unref(r->frame.stamp);
        wire_fds_unref(r->frame.fds);
        free(r->topic);
        free(r);
        return NULL;
}

int retained_store_new(RetainedStore **ret) {
        RetainedStore *s = calloc(1, sizeof(*s));
        int r;

        if (!s)
                return -ENOMEM;
        r = hashmap_new(&s->by_topic, HASHMAP_KEY_STRING);
        if (r < 0) {
                free(s);
                return r;
        }
        *ret = s;
        return 0;
}

RetainedStore *retained_store_free(RetainedStore *s) {
        HashmapIter it = HASHMAP_ITER_INIT;
        void *value;

        if (!s)
                return NULL;
        while (hashmap_iterate(s->by_topic, &it, &value, NULL)) {
                hashmap_remove(s->by_topic, ((Retained *) value)->topic);
                retained_free(value);
        }
        hashmap_free(s->by_topic);
        free(s);
        return NULL;
}

static Retained *retained_new(const char *topic, const OutFrame *o) {
        Retained *r = calloc(1, sizeof(*r));
        WireChunk *c;

        if (!r)
                return NULL;
        r->topic = strdup(topic);
        c = wire_chunk_new(o->envelope_len + o->payload_len);
        if (!r->topic || !c) {
                wire_chunk_unref(c);
                return retained_free(r);
        }
        memcpy(c->data, o->envelope, o->envelope_len);
        memcpy(c->data + o->envelope_len, o->payload, o->payload_len);
        c->used = o->envelope_len + o->payload_len;
        r->frame = (OutFrame){
                .chunk = c,
                .envelope = c->data,
                .envelope_len = o->envelope_len,
                .payload = c->data + o->envelope_len,
                .payload_len = o->payload_len,
                .stamp = o->stamp ? wire_chunk_ref(o->stamp) : NULL,
                .fds = o->fds ? wire_fds_ref(o->fds) : NULL,
        };
        return r;
}

int retained_set(RetainedStore *s, const char *topic, const OutFrame *o, bool has_payload) {
        Retained *old = hashmap_remove(s->by_topic, topic), *r;
        int e;

        retained_free(old);
        if (!has_payload)
                return 0;
        r = retained_new(topic, o);
        if (!r)
                return -ENOMEM;
        e = hashmap_put(s->by_topic, r->topic, r);
        if (e < 0) {
                retained_free(r);
                return e;
        }
        return 0;
}

unsigned retained_foreach_matching(RetainedStore *s, const char *pattern, retained_fn fn,
                                   void *userdata) {
        size_t plen = strlen(pattern);
        HashmapIter it = HASHMAP_ITER_INIT;
        unsigned n = 0;
        void *value;

        while (hashmap_iterate(s->by_topic, &it, &value, NULL)) {
                Retained *r = value;

                if (!topic_pattern_matches(pattern, plen, r->topic, strlen(r->topic)))
                        continue;
                fn(r->topic, &r->frame, userdata);
                n++;
        }
        return n;
}

unsigned retained_count(const RetainedStore *s) {
        return (unsigned) hashmap_size(s->by_topic);
}
