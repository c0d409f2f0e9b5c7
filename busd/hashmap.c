/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Robin Hood hash table; see hashmap.h for the contract.
 *
 * Invariants:
 *  - n_slots is 0 (nothing allocated yet) or a power of two, and at most 3/4
 *    of the slots are used, so there is always an empty slot and every probe
 *    loop ends.
 *  - A slot is empty iff its value is NULL (values are never NULL).
 *  - Every entry sits at home + d, where home = hash & mask and d is its probe
 *    distance, and none of the slots from home to home + d is empty (linear
 *    probing). Robin Hood insertion also keeps the distances along a run
 *    ordered enough that a lookup can stop at the first entry that is closer
 *    to its own home than the key would be at that point.
 *  - Deletion shifts the following entries of the run back by one slot
 *    instead of leaving a tombstone, so lookups never slow down with churn.
 *
 * Iteration starts just after an empty slot and walks once round the table.
 * Because no run crosses an empty slot and deletion only moves entries back
 * within their run, removing the entry just returned can only move entries
 * not yet visited into its slot; the iterator notices the removal through the
 * generation counter and looks at that slot again.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "busd/hashmap.h"

#define HASHMAP_MIN_SLOTS 16u

typedef struct HashmapSlot {
        uint64_t hash;
        void *value;
        union {
                const char *string;
                uint64_t u64;
                HashmapU64Pair pair;
        } key;
} HashmapSlot;

struct Hashmap {
        HashmapSlot *slots;
        size_t n_slots;
        size_t size;
        uint64_t generation;    /* bumped by every put and remove */
        uint64_t k0, k1;        /* per-map hash seed */
        HashmapKeyType type;
};

static inline uint64_t rotl64(uint64_t x, unsigned b) {
        return (x << b) | (x >> (64 - b));
}

#define SIPROUND(v0, v1, v2, v3)                                        \
        do {                                                            \
                v0 += v1; v1 = rotl64(v1, 13); v1 ^= v0; v0 = rotl64(v0, 32); \
                v2 += v3; v3 = rotl64(v3, 16); v3 ^= v2;                \
                v0 += v3; v3 = rotl64(v3, 21); v3 ^= v0;                \
                v2 += v1; v1 = rotl64(v1, 17); v1 ^= v2; v2 = rotl64(v2, 32); \
        } while (0)

static inline uint64_t load_le64(const unsigned char *p) {
        uint64_t v = 0;

        for (unsigned i = 0; i < 8; i++)
                v |= (uint64_t) p[i] << (8 * i);
        return v;
}

/* SipHash-1-3 (one compression round, three finalization rounds): the
 * variant CPython and Rust use for their hash tables. It is much faster than
 * SipHash-2-4 and still keeps a client from predicting collisions. */
static uint64_t siphash13(const void *data, size_t len, uint64_t k0, uint64_t k1) {
        const unsigned char *p = data, *end = p + (len & ~(size_t) 7);
        uint64_t v0 = UINT64_C(0x736f6d6570736575) ^ k0;
        uint64_t v1 = UINT64_C(0x646f72616e646f6d) ^ k1;
        uint64_t v2 = UINT64_C(0x6c7967656e657261) ^ k0;
        uint64_t v3 = UINT64_C(0x7465646279746573) ^ k1;
        uint64_t m, b = (uint64_t) len << 56;

        for (; p < end; p += 8) {
                m = load_le64(p);
                v3 ^= m;
                SIPROUND(v0, v1, v2, v3);
                v0 ^= m;
        }
        for (unsigned i = 0; i < (len & 7); i++)
                b |= (uint64_t) p[i] << (8 * i);
        v3 ^= b;
        SIPROUND(v0, v1, v2, v3);
        v0 ^= b;
        v2 ^= 0xff;
        SIPROUND(v0, v1, v2, v3);
        SIPROUND(v0, v1, v2, v3);
        SIPROUND(v0, v1, v2, v3);
        return v0 ^ v1 ^ v2 ^ v3;
}

/* The splitmix64 finalizer: a bijection whose every output bit depends on
 * every input bit. Integer keys are often sequential ids, and the table uses
 * the low bits of the hash, so they must be mixed; a full SipHash would cost
 * several times more on the per-reply lookup. */
static inline uint64_t mix64(uint64_t x) {
        x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
        return x ^ (x >> 31);
}

static uint64_t hashmap_hash(const Hashmap *h, const void *key) {
        const HashmapU64Pair *pair;

        switch (h->type) {
        case HASHMAP_KEY_STRING:
                return siphash13(key, strlen(key), h->k0, h->k1);
        case HASHMAP_KEY_U64:
                return mix64(*(const uint64_t *) key ^ h->k0);
        case HASHMAP_KEY_U64_PAIR:
                pair = key;
                return mix64(mix64(pair->a ^ h->k0) ^ pair->b ^ h->k1);
        }
        assert(!"bad key type");
        return 0;
}

static bool hashmap_key_equal(const Hashmap *h, const HashmapSlot *s, const void *key) {
        const HashmapU64Pair *pair;

        switch (h->type) {
        case HASHMAP_KEY_STRING:
                return strcmp(s->key.string, key) == 0;
        case HASHMAP_KEY_U64:
                return s->key.u64 == *(const uint64_t *) key;
        case HASHMAP_KEY_U64_PAIR:
                pair = key;
                return s->key.pair.a == pair->a && s->key.pair.b == pair->b;
        }
        return false;
}

static inline size_t hashmap_distance(const Hashmap *h, const HashmapSlot *s, size_t i) {
        return (i - (size_t) s->hash) & (h->n_slots - 1);
}

/* Index of key's slot, or SIZE_MAX. */
static size_t hashmap_find(const Hashmap *h, const void *key, uint64_t hash) {
        size_t mask, i, d;

        if (h->size == 0)
                return SIZE_MAX;

        mask = h->n_slots - 1;
        for (i = hash & mask, d = 0;; i = (i + 1) & mask, d++) {
                const HashmapSlot *s = &h->slots[i];

                /* An entry closer to its home than we would be cannot be
                 * followed by ours: Robin Hood insertion would have put ours
                 * in its place. */
                if (!s->value || hashmap_distance(h, s, i) < d)
                        return SIZE_MAX;
                if (s->hash == hash && hashmap_key_equal(h, s, key))
                        return i;
        }
}

/* Places an entry known to be absent; the caller made room. */
static void hashmap_insert_slot(HashmapSlot *slots, size_t n_slots, HashmapSlot cur) {
        size_t mask = n_slots - 1, i, d, sd;

        for (i = cur.hash & mask, d = 0;; i = (i + 1) & mask, d++) {
                HashmapSlot *s = &slots[i], tmp;

                if (!s->value) {
                        *s = cur;
                        return;
                }
                /* Take the slot from an entry that is closer to its home and
                 * carry that one on: this evens out the probe lengths. */
                sd = (i - (size_t) s->hash) & mask;
                if (sd < d) {
                        tmp = *s;
                        *s = cur;
                        cur = tmp;
                        d = sd;
                }
        }
}

static int hashmap_resize(Hashmap *h, size_t n_slots) {
        HashmapSlot *slots;

        slots = calloc(n_slots, sizeof(HashmapSlot));
        if (!slots)
                return -ENOMEM;
        for (size_t i = 0; i < h->n_slots; i++)
                if (h->slots[i].value)
                        hashmap_insert_slot(slots, n_slots, h->slots[i]);
        free(h->slots);
        h->slots = slots;
        h->n_slots = n_slots;
        return 0;
}

static void hashmap_seed(Hashmap *h) {
        uint64_t seed[2];
        ssize_t n;

        /* GRND_INSECURE never blocks, even before the kernel's pool is
         * initialized early at boot; older kernels reject it. The seed only
         * needs to be unknown to clients, not cryptographically strong. */
        n = getrandom(seed, sizeof(seed), GRND_INSECURE);
        if (n != (ssize_t) sizeof(seed))
                n = getrandom(seed, sizeof(seed), GRND_NONBLOCK);
        if (n != (ssize_t) sizeof(seed)) {
                struct timespec ts = {};

                (void) clock_gettime(CLOCK_MONOTONIC, &ts);
                seed[0] = mix64((uint64_t) ts.tv_nsec ^ (uint64_t) (uintptr_t) h);
                seed[1] = mix64((uint64_t) ts.tv_sec ^ seed[0]);
        }
        h->k0 = seed[0];
        h->k1 = seed[1];
}

int hashmap_new(Hashmap **ret, HashmapKeyType type) {
        Hashmap *h;

        assert(ret);
        assert(type == HASHMAP_KEY_STRING || type == HASHMAP_KEY_U64 ||
               type == HASHMAP_KEY_U64_PAIR);

        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->type = type;
        hashmap_seed(h);
        *ret = h;
        return 0;
}

Hashmap *hashmap_free(Hashmap *h) {
        if (!h)
                return NULL;
        free(h->slots);
        free(h);
        return NULL;
}

int hashmap_put(Hashmap *h, const void *key, void *value) {
        HashmapSlot slot = {};
        int r;

        assert(h);
        assert(key);
        assert(value);

        slot.hash = hashmap_hash(h, key);
        if (hashmap_find(h, key, slot.hash) != SIZE_MAX)
                return -EEXIST;

        /* Grow at a load factor of 3/4. */
        if ((h->size + 1) * 4 > h->n_slots * 3) {
                if (h->n_slots > SIZE_MAX / 2 / sizeof(HashmapSlot))
                        return -ENOMEM;
                r = hashmap_resize(h, h->n_slots ? h->n_slots * 2 : HASHMAP_MIN_SLOTS);
                if (r < 0)
                        return r;
        }

        slot.value = value;
        switch (h->type) {
        case HASHMAP_KEY_STRING:
                slot.key.string = key;
                break;
        case HASHMAP_KEY_U64:
                slot.key.u64 = *(const uint64_t *) key;
                break;
        case HASHMAP_KEY_U64_PAIR:
                slot.key.pair = *(const HashmapU64Pair *) key;
                break;
        }
        hashmap_insert_slot(h->slots, h->n_slots, slot);
        h->size++;
        h->generation++;
        return 0;
}

void *hashmap_get(const Hashmap *h, const void *key) {
        size_t i;

        assert(h);
        assert(key);

        if (h->size == 0)
                return NULL;
        i = hashmap_find(h, key, hashmap_hash(h, key));
        return i == SIZE_MAX ? NULL : h->slots[i].value;
}

void *hashmap_remove(Hashmap *h, const void *key) {
        size_t mask, i, j;
        void *value;

        assert(h);
        assert(key);

        if (h->size == 0)
                return NULL;
        i = hashmap_find(h, key, hashmap_hash(h, key));
        if (i == SIZE_MAX)
                return NULL;

        /* key may point into slot i (a key from hashmap_iterate()): it is
         * not read again from here on. */
        value = h->slots[i].value;
        mask = h->n_slots - 1;
        for (;;) {
                j = (i + 1) & mask;
                if (!h->slots[j].value || hashmap_distance(h, &h->slots[j], j) == 0)
                        break;
                h->slots[i] = h->slots[j];
                i = j;
        }
        h->slots[i] = (HashmapSlot) {};
        h->size--;
        h->generation++;
        return value;
}

size_t hashmap_size(const Hashmap *h) {
        assert(h);
        return h->size;
}

bool hashmap_iterate(Hashmap *h, HashmapIter *it, void **ret_value, const void **ret_key) {
        assert(h);
        assert(it);

        if (it->done)
                goto finished;

        if (!it->started) {
                it->started = true;
                if (h->size == 0)
                        goto finished;
                for (it->start = 0; h->slots[it->start].value; it->start++)
                        ;
                it->offset = 1;
        } else if (it->generation != h->generation && it->offset > 1)
                /* The entry just returned was removed, and the next one of
                 * its run (not visited yet) may have moved into its slot. */
                it->offset--;

        while (it->offset < h->n_slots) {
                HashmapSlot *s = &h->slots[(it->start + it->offset) & (h->n_slots - 1)];

                it->offset++;
                if (!s->value)
                        continue;

                it->generation = h->generation;
                if (ret_value)
                        *ret_value = s->value;
                if (ret_key)
                        *ret_key = h->type == HASHMAP_KEY_STRING ? (const void *) s->key.string
                                 : h->type == HASHMAP_KEY_U64    ? (const void *) &s->key.u64
                                                                 : (const void *) &s->key.pair;
                return true;
        }

finished:
        it->done = true;
        if (ret_value)
                *ret_value = NULL;
        if (ret_key)
                *ret_key = NULL;
        return false;
}
