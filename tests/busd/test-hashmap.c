/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for busd/hashmap.c: put/get/remove for every key type, -EEXIST,
 * growth well past 100,000 entries, removal during iteration, and a random
 * workload checked against a plain array.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "busd/hashmap.h"
#include "tests/lib/tap.h"

#define U2P(u) ((void *) (uintptr_t) (u))
#define P2U(p) ((uintptr_t) (p))

static void test_string(void) {
        _cleanup_(hashmap_freep) Hashmap *h = NULL;
        char key[] = "org.example.Calc";
        char copy[] = "org.example.Calc";
        static int a, b, c;

        tap_check_int(hashmap_new(&h, HASHMAP_KEY_STRING), 0);
        tap_check_int(hashmap_size(h), 0);
        tap_check(!hashmap_get(h, "org.example.Calc"));

        tap_check_int(hashmap_put(h, key, &a), 0);
        tap_check_int(hashmap_put(h, "org.example.Other", &b), 0);
        tap_check_int(hashmap_put(h, "", &c), 0);
        tap_check_int(hashmap_size(h), 3);

        /* Lookups compare contents, not pointers. */
        tap_check(hashmap_get(h, copy) == &a);
        tap_check(hashmap_get(h, "org.example.Other") == &b);
        tap_check(hashmap_get(h, "") == &c);
        tap_check(!hashmap_get(h, "org.example"));
        tap_check(!hashmap_get(h, "org.example.Calc2"));

        tap_check_int(hashmap_put(h, copy, &b), -EEXIST);
        tap_check(hashmap_get(h, key) == &a);
        tap_check_int(hashmap_size(h), 3);

        tap_check(hashmap_remove(h, copy) == &a);
        tap_check(!hashmap_get(h, key));
        tap_check(!hashmap_remove(h, key));
        tap_check_int(hashmap_size(h), 2);
        tap_check_int(hashmap_put(h, copy, &c), 0);
        tap_check(hashmap_get(h, key) == &c);
        tap_check(hashmap_remove(h, "") == &c);
        tap_check(!hashmap_get(h, ""));
}

static void test_u64(void) {
        _cleanup_(hashmap_freep) Hashmap *h = NULL;
        uint64_t k;

        tap_check_int(hashmap_new(&h, HASHMAP_KEY_U64), 0);

        k = 0;
        tap_check_int(hashmap_put(h, &k, U2P(100)), 0);
        k = 1;
        tap_check_int(hashmap_put(h, &k, U2P(101)), 0);
        k = UINT64_MAX;
        tap_check_int(hashmap_put(h, &k, U2P(102)), 0);
        k = UINT64_C(1) << 32;
        tap_check_int(hashmap_put(h, &k, U2P(103)), 0);
        tap_check_int(hashmap_size(h), 4);

        /* The key is copied: changing the variable must not matter. */
        k = 1;
        tap_check_int(P2U(hashmap_get(h, &k)), 101);
        tap_check_int(hashmap_put(h, &k, U2P(999)), -EEXIST);
        tap_check_int(P2U(hashmap_get(h, &k)), 101);
        k = 0;
        tap_check_int(P2U(hashmap_get(h, &k)), 100);
        k = UINT64_MAX;
        tap_check_int(P2U(hashmap_get(h, &k)), 102);
        k = UINT64_C(1) << 32;
        tap_check_int(P2U(hashmap_get(h, &k)), 103);
        k = 2;
        tap_check(!hashmap_get(h, &k));
        tap_check(!hashmap_remove(h, &k));

        k = 0;
        tap_check_int(P2U(hashmap_remove(h, &k)), 100);
        tap_check(!hashmap_get(h, &k));
        tap_check(!hashmap_remove(h, &k));
        tap_check_int(hashmap_size(h), 3);
        k = UINT64_MAX;
        tap_check_int(P2U(hashmap_get(h, &k)), 102);
}

static void test_u64_pair(void) {
        _cleanup_(hashmap_freep) Hashmap *h = NULL;
        HashmapU64Pair p;

        tap_check_int(hashmap_new(&h, HASHMAP_KEY_U64_PAIR), 0);

        p = (HashmapU64Pair) { 1, 2 };
        tap_check_int(hashmap_put(h, &p, U2P(12)), 0);
        p = (HashmapU64Pair) { 2, 1 };
        tap_check_int(hashmap_put(h, &p, U2P(21)), 0);
        p = (HashmapU64Pair) { 1, 3 };
        tap_check_int(hashmap_put(h, &p, U2P(13)), 0);
        p = (HashmapU64Pair) { 0, 0 };
        tap_check_int(hashmap_put(h, &p, U2P(1)), 0);
        tap_check_int(hashmap_size(h), 4);

        p = (HashmapU64Pair) { 1, 2 };
        tap_check_int(P2U(hashmap_get(h, &p)), 12);
        tap_check_int(hashmap_put(h, &p, U2P(5)), -EEXIST);
        p = (HashmapU64Pair) { 2, 1 };
        tap_check_int(P2U(hashmap_get(h, &p)), 21);
        p = (HashmapU64Pair) { 1, 3 };
        tap_check_int(P2U(hashmap_get(h, &p)), 13);
        p = (HashmapU64Pair) { 0, 0 };
        tap_check_int(P2U(hashmap_get(h, &p)), 1);
        p = (HashmapU64Pair) { 2, 2 };
        tap_check(!hashmap_get(h, &p));
        tap_check(!hashmap_remove(h, &p));

        p = (HashmapU64Pair) { 1, 2 };
        tap_check_int(P2U(hashmap_remove(h, &p)), 12);
        tap_check(!hashmap_get(h, &p));
        p = (HashmapU64Pair) { 2, 1 };
        tap_check_int(P2U(hashmap_get(h, &p)), 21);
        tap_check_int(hashmap_size(h), 3);
}

static void test_remove_absent(void) {
        _cleanup_(hashmap_freep) Hashmap *s = NULL, *u = NULL;
        uint64_t k = 7;

        /* On a map that has never allocated its slots. */
        tap_check_int(hashmap_new(&s, HASHMAP_KEY_STRING), 0);
        tap_check_int(hashmap_new(&u, HASHMAP_KEY_U64), 0);
        tap_check(!hashmap_remove(s, "x"));
        tap_check(!hashmap_remove(u, &k));
        tap_check(!hashmap_get(s, "x"));
        tap_check(!hashmap_get(u, &k));

        /* On a map that had entries and is empty again. */
        tap_check_int(hashmap_put(u, &k, U2P(1)), 0);
        tap_check_int(P2U(hashmap_remove(u, &k)), 1);
        tap_check(!hashmap_remove(u, &k));
        tap_check_int(hashmap_size(u), 0);

        /* On a populated map. */
        for (uint64_t i = 0; i < 1000; i++)
                tap_check_int(hashmap_put(u, &i, U2P(i + 1)), 0);
        for (uint64_t i = 1000; i < 3000; i++)
                tap_check(!hashmap_remove(u, &i));
        tap_check_int(hashmap_size(u), 1000);

        tap_check(hashmap_free(NULL) == NULL);
}

static void test_growth_u64(void) {
        _cleanup_(hashmap_freep) Hashmap *h = NULL;
        const uint64_t n = 250000;
        unsigned bad = 0;

        tap_check_int(hashmap_new(&h, HASHMAP_KEY_U64), 0);
        for (uint64_t i = 0; i < n; i++) {
                /* Sparse keys whose low bits are all equal. */
                uint64_t k = i << 20;

                if (hashmap_put(h, &k, U2P(i + 1)) != 0)
                        bad++;
        }
        tap_check_int(bad, 0);
        tap_check_int(hashmap_size(h), n);

        for (uint64_t i = 0; i < n; i++) {
                uint64_t k = i << 20;

                if (P2U(hashmap_get(h, &k)) != i + 1)
                        bad++;
        }
        tap_check_int(bad, 0);

        /* Remove the odd ones; the even ones must all survive the shifts. */
        for (uint64_t i = 1; i < n; i += 2) {
                uint64_t k = i << 20;

                if (P2U(hashmap_remove(h, &k)) != i + 1)
                        bad++;
        }
        tap_check_int(bad, 0);
        tap_check_int(hashmap_size(h), n / 2);
        for (uint64_t i = 0; i < n; i++) {
                uint64_t k = i << 20;

                if (P2U(hashmap_get(h, &k)) != (i % 2 == 0 ? i + 1 : 0))
                        bad++;
        }
        tap_check_int(bad, 0);
}

static void test_growth_string(void) {
        _cleanup_(hashmap_freep) Hashmap *h = NULL;
        const unsigned n = 120000;
        char **keys;
        unsigned bad = 0;

        keys = calloc(n, sizeof(char *));
        tap_check(keys);
        if (!keys)
                return;

        tap_check_int(hashmap_new(&h, HASHMAP_KEY_STRING), 0);
        for (unsigned i = 0; i < n; i++) {
                if (asprintf(&keys[i], "org.example.Service%u", i) < 0)
                        abort();
                if (hashmap_put(h, keys[i], U2P(i + 1)) != 0)
                        bad++;
        }
        tap_check_int(bad, 0);
        tap_check_int(hashmap_size(h), n);

        for (unsigned i = 0; i < n; i++) {
                char buf[64];

                snprintf(buf, sizeof(buf), "org.example.Service%u", i);
                if (P2U(hashmap_get(h, buf)) != i + 1)
                        bad++;
                if (hashmap_put(h, buf, U2P(1)) != -EEXIST)
                        bad++;
        }
        tap_check_int(bad, 0);
        tap_check(!hashmap_get(h, "org.example.Service"));

        for (unsigned i = 0; i < n; i++)
                if (P2U(hashmap_remove(h, keys[i])) != i + 1)
                        bad++;
        tap_check_int(bad, 0);
        tap_check_int(hashmap_size(h), 0);

        for (unsigned i = 0; i < n; i++)
                free(keys[i]);
        free(keys);
}

static void test_growth_pair(void) {
        _cleanup_(hashmap_freep) Hashmap *h = NULL;
        unsigned bad = 0;

        /* 400 peers with 300 pending requests each. */
        tap_check_int(hashmap_new(&h, HASHMAP_KEY_U64_PAIR), 0);
        for (uint64_t a = 0; a < 400; a++)
                for (uint64_t b = 0; b < 300; b++) {
                        HashmapU64Pair p = { a, b };

                        if (hashmap_put(h, &p, U2P(a * 1000 + b + 1)) != 0)
                                bad++;
                }
        tap_check_int(bad, 0);
        tap_check_int(hashmap_size(h), 120000);
        for (uint64_t a = 0; a < 400; a++)
                for (uint64_t b = 0; b < 300; b++) {
                        HashmapU64Pair p = { a, b }, q = { b, a };

                        if (P2U(hashmap_get(h, &p)) != a * 1000 + b + 1)
                                bad++;
                        /* Swapped pairs are different keys. */
                        if (b >= 400 && hashmap_get(h, &q))
                                bad++;
                }
        tap_check_int(bad, 0);
}

/* Fills a u64 map with n keys, then iterates, optionally removing each entry
 * (or every other one) right after it is returned. Each key must come back
 * exactly once. */
static void check_iterate(uint64_t n, unsigned remove_every) {
        _cleanup_(hashmap_freep) Hashmap *h = NULL;
        HashmapIter it = HASHMAP_ITER_INIT;
        unsigned char *seen;
        uint64_t visits = 0, removed = 0, bad = 0;
        const void *key;
        void *value;

        seen = calloc(n + 1, 1);
        tap_check(seen);
        if (!seen)
                return;

        tap_check_int(hashmap_new(&h, HASHMAP_KEY_U64), 0);
        for (uint64_t i = 0; i < n; i++)
                tap_check_int(hashmap_put(h, &i, U2P(i + 1)), 0);

        while (hashmap_iterate(h, &it, &value, &key)) {
                uint64_t k = *(const uint64_t *) key;

                if (k >= n || P2U(value) != k + 1 || seen[k]++)
                        bad++;
                if (remove_every && visits % remove_every == 0) {
                        /* Passing the key pointer from the iterator itself. */
                        if (hashmap_remove(h, key) != value)
                                bad++;
                        removed++;
                }
                visits++;
        }
        tap_check_int(bad, 0);
        tap_check_int(visits, n);
        tap_check(!value);
        tap_check(!key);
        tap_check_int(hashmap_size(h), n - removed);
        for (uint64_t i = 0; i < n; i++)
                if (!seen[i])
                        bad++;
        tap_check_int(bad, 0);

        /* A finished iterator stays finished. */
        tap_check(!hashmap_iterate(h, &it, NULL, NULL));
        free(seen);
}

static void test_iterate(void) {
        static const uint64_t sizes[] = { 0, 1, 2, 11, 12, 13, 100, 1000, 100000 };

        for (size_t i = 0; i < ELEMENTSOF(sizes); i++)
                check_iterate(sizes[i], 0);
}

static void test_iterate_remove_all(void) {
        static const uint64_t sizes[] = { 1, 2, 11, 12, 13, 100, 1000, 150000 };

        for (size_t i = 0; i < ELEMENTSOF(sizes); i++)
                check_iterate(sizes[i], 1);
}

static void test_iterate_remove_some(void) {
        static const uint64_t sizes[] = { 5, 12, 100, 1000, 100000 };

        for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
                check_iterate(sizes[i], 2);
                check_iterate(sizes[i], 3);
        }
}

static void test_iterate_strings(void) {
        _cleanup_(hashmap_freep) Hashmap *h = NULL;
        HashmapIter it = HASHMAP_ITER_INIT;
        static const char *const names[] = { "a", "b.c", "org.example.Calc", "x.y.z", "" };
        unsigned seen = 0, n = 0;
        const void *key;
        void *value;

        tap_check_int(hashmap_new(&h, HASHMAP_KEY_STRING), 0);
        for (unsigned i = 0; i < ELEMENTSOF(names); i++)
                tap_check_int(hashmap_put(h, names[i], U2P(i + 1)), 0);
        while (hashmap_iterate(h, &it, &value, &key)) {
                unsigned i = P2U(value) - 1;

                tap_check(i < ELEMENTSOF(names));
                if (i >= ELEMENTSOF(names))
                        break;
                /* String keys come back as the pointer that was put. */
                tap_check(key == names[i]);
                seen |= 1u << i;
                n++;
                tap_check(hashmap_remove(h, key) == value);
        }
        tap_check_int(n, ELEMENTSOF(names));
        tap_check_int(seen, (1u << ELEMENTSOF(names)) - 1);
        tap_check_int(hashmap_size(h), 0);
}

/* Random puts and removes over a small key space, checked against an array:
 * exercises Robin Hood displacement and backward shifts in long runs. */
static void test_random_ops(void) {
        _cleanup_(hashmap_freep) Hashmap *h = NULL;
        enum { N_KEYS = 2048, N_OPS = 400000 };
        static uintptr_t model[N_KEYS];
        uint64_t state = 0x12345678, bad = 0;
        size_t count = 0;

        tap_check_int(hashmap_new(&h, HASHMAP_KEY_U64), 0);
        for (unsigned op = 0; op < N_OPS; op++) {
                uint64_t k;
                int r;

                /* xorshift64: deterministic, no libc state */
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                k = state % N_KEYS;

                switch ((state >> 32) % 3) {
                case 0:
                        r = hashmap_put(h, &k, U2P(op + 1));
                        if (model[k]) {
                                if (r != -EEXIST)
                                        bad++;
                        } else {
                                if (r != 0)
                                        bad++;
                                model[k] = op + 1;
                                count++;
                        }
                        break;
                case 1:
                        if (P2U(hashmap_remove(h, &k)) != model[k])
                                bad++;
                        if (model[k])
                                count--;
                        model[k] = 0;
                        break;
                default:
                        if (P2U(hashmap_get(h, &k)) != model[k])
                                bad++;
                        break;
                }
                if (hashmap_size(h) != count)
                        bad++;
        }
        tap_check_int(bad, 0);
        for (uint64_t k = 0; k < N_KEYS; k++)
                if (P2U(hashmap_get(h, &k)) != model[k])
                        bad++;
        tap_check_int(bad, 0);
}

int main(void) {
        tap_init();
        TAP_RUN(test_string);
        TAP_RUN(test_u64);
        TAP_RUN(test_u64_pair);
        TAP_RUN(test_remove_absent);
        TAP_RUN(test_growth_u64);
        TAP_RUN(test_growth_string);
        TAP_RUN(test_growth_pair);
        TAP_RUN(test_iterate);
        TAP_RUN(test_iterate_remove_all);
        TAP_RUN(test_iterate_remove_some);
        TAP_RUN(test_iterate_strings);
        TAP_RUN(test_random_ops);
        return tap_done();
}
