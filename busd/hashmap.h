/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A small hash table for the broker: well-known names, peers by id, pending
 * requests by (peer id, serial).
 *
 * A Hashmap maps keys of one type, fixed at creation, to non-NULL value
 * pointers. It never owns the values. Keys are:
 *
 *   HASHMAP_KEY_STRING    const char *, borrowed: the string must stay valid and
 *                         unchanged while the entry exists. Callers keep it inside
 *                         the value (a Name's own name, for example).
 *   HASHMAP_KEY_U64       const uint64_t *, copied into the table.
 *   HASHMAP_KEY_U64_PAIR  const HashmapU64Pair *, copied into the table.
 *
 * Implementation: open addressing with Robin Hood linear probing and
 * backward-shift deletion (no tombstones), in one flat array of 32-byte slots
 * that also caches each key's hash, so a lookup usually touches one cache line
 * and compares strings only on a full 64-bit hash match. The table doubles when
 * it would be more than 3/4 full and never shrinks: the broker's maps stay near
 * their high-water mark, and not shrinking is what keeps removal during
 * iteration simple.
 *
 * Keys can come from clients (names, request serials), so hashes are keyed with
 * a random per-map seed: strings use SipHash-1-3, integers a seeded 64-bit
 * finalizer mix. A client cannot choose keys that collide on purpose.
 *
 * Not thread-safe; the broker is single-threaded.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "libbus/macro.h"

typedef struct Hashmap Hashmap;

typedef enum HashmapKeyType {
        HASHMAP_KEY_STRING,
        HASHMAP_KEY_U64,
        HASHMAP_KEY_U64_PAIR,
} HashmapKeyType;

typedef struct HashmapU64Pair {
        uint64_t a, b;
} HashmapU64Pair;

/* Creates an empty map; allocates no slots until the first put. -ENOMEM. */
int hashmap_new(Hashmap **ret, HashmapKeyType type);

/* Frees the table, not the values. Accepts NULL, returns NULL. */
Hashmap *hashmap_free(Hashmap *h);
DEFINE_CLEANUP(Hashmap, hashmap_free)

/* Adds key -> value; value must not be NULL. Returns 0, -EEXIST if the key is
 * already present (the map is unchanged), or -ENOMEM. */
int hashmap_put(Hashmap *h, const void *key, void *value);

/* Returns the value stored for key, or NULL. */
void *hashmap_get(const Hashmap *h, const void *key);

/* Removes key and returns its value, or NULL if it was not present. */
void *hashmap_remove(Hashmap *h, const void *key);

size_t hashmap_size(const Hashmap *h);

/* Iteration state; the fields are private. Start with HASHMAP_ITER_INIT. */
typedef struct HashmapIter {
        size_t start;           /* an empty slot: no probe sequence crosses it */
        size_t offset;          /* next slot to look at, counted from start */
        uint64_t generation;    /* the map's generation when we last returned */
        bool started;
        bool done;
} HashmapIter;

#define HASHMAP_ITER_INIT ((HashmapIter) { .started = false })

/* Returns the next entry in unspecified order, setting *ret_value and *ret_key
 * (either may be NULL), or false when there are none left. *ret_key is what
 * hashmap_put() takes: the string itself for HASHMAP_KEY_STRING, otherwise a
 * pointer into the table that stays valid until the map is next changed.
 *
 * Removing the entry just returned (and only that one) before the next call
 * is allowed, and then every other entry is still returned exactly once. Any
 * other change during an iteration leaves it undefined which entries are
 * returned, though it stays memory-safe. */
bool hashmap_iterate(Hashmap *h, HashmapIter *it, void **ret_value, const void **ret_key);
