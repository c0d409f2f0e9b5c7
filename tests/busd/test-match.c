/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of busd/match.c: wildcard semantics, per-subscription calls,
 * queue groups and their round-robin, removal and pruning of the trie, long
 * topics, and a randomised cross-check of the index against
 * topic_pattern_matches().
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "busd/match.h"
#include "libbus/macro.h"
#include "libbus/topic.h"
#include "tests/lib/tap.h"

#define RECORD_MAX 64

/* What one match_index_match() call delivered. */
typedef struct Record {
        MatchSub *subs[RECORD_MAX];
        unsigned n;
        unsigned total; /* including calls past RECORD_MAX */
} Record;

static void record_fn(MatchSub *s, void *userdata) {
        Record *r = userdata;

        if (r->n < RECORD_MAX)
                r->subs[r->n++] = s;
        r->total++;
}

static unsigned record_count(const Record *r, const MatchSub *s) {
        unsigned c = 0;

        for (unsigned i = 0; i < r->n; i++)
                if (r->subs[i] == s)
                        c++;
        return c;
}

/* Matches a NUL-terminated topic, checks that the return value agrees with the
 * number of callbacks, and returns the record. */
static Record match(MatchIndex *idx, const char *topic) {
        Record r = {};
        unsigned ret;

        ret = match_index_match(idx, topic, strlen(topic), record_fn, &r);
        tap_check_int(ret, r.total);
        return r;
}

static MatchSub *add(MatchIndex *idx, const char *pattern, const char *group, void *owner,
                     uint64_t id) {
        MatchSub *s = NULL;
        int r;

        r = match_index_add(idx, pattern, group, owner, id, &s);
        if (!tap_check_int(r, 0))
                tap_diag("adding \"%s\" failed", pattern);
        return s;
}

/* Whether the pattern gets exactly one call for the topic (a fresh index). */
static bool single_match(const char *pattern, const char *topic) {
        _cleanup_(match_index_freep) MatchIndex *idx = NULL;
        MatchSub *s;
        Record r;

        assert(match_index_new(&idx) >= 0);
        s = add(idx, pattern, NULL, NULL, 1);
        r = match(idx, topic);
        tap_check(r.total <= 1);
        return r.total == 1 && r.subs[0] == s;
}

static void test_new_free(void) {
        MatchIndex *idx = NULL;

        tap_check_int(match_index_new(&idx), 0);
        tap_check(idx);
        tap_check_int(match_index_count(idx), 0);
        tap_check_int(match_index_count_nodes(idx), 0);
        tap_check(!match_index_free(idx));
        tap_check(!match_index_free(NULL));
        tap_check(!match_sub_free(NULL));
}

static void test_invalid_patterns(void) {
        static const char *const bad[] = {
                "", ".", "a.", ".a", "a..b", "a*", ">b", "a.>.b", ">.>", "a b", "caf\xc3\xa9",
        };
        _cleanup_(match_index_freep) MatchIndex *idx = NULL;
        char long_pattern[TOPIC_MAX + 2];
        MatchSub *s = (MatchSub *) 0x1;

        assert(match_index_new(&idx) >= 0);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                if (!tap_check_int(match_index_add(idx, bad[i], NULL, NULL, 0, &s), -EINVAL))
                        tap_diag("pattern \"%s\"", bad[i]);
        }
        tap_check_int(match_index_add(idx, NULL, NULL, NULL, 0, &s), -EINVAL);

        memset(long_pattern, 'a', TOPIC_MAX + 1);
        long_pattern[TOPIC_MAX + 1] = '\0';
        tap_check_int(match_index_add(idx, long_pattern, NULL, NULL, 0, &s), -EINVAL);
        tap_check_int(match_index_add(idx, long_pattern, "g", NULL, 0, &s), -EINVAL);

        /* failures leave *ret and the index alone */
        tap_check(s == (MatchSub *) 0x1);
        tap_check_int(match_index_count(idx), 0);
        tap_check_int(match_index_count_nodes(idx), 0);

        long_pattern[TOPIC_MAX] = '\0';
        s = add(idx, long_pattern, NULL, NULL, 0);
        tap_check_int(match_index_count(idx), 1);
        tap_check_int(match_index_count_nodes(idx), 1);
        match_sub_free(s);
        tap_check_int(match_index_count_nodes(idx), 0);
}

static void test_getters(void) {
        _cleanup_(match_index_freep) MatchIndex *idx = NULL;
        int owner1, owner2, owner3;
        MatchSub *a, *b, *c;

        assert(match_index_new(&idx) >= 0);
        a = add(idx, "sensors.*.temp", NULL, &owner1, 7);
        b = add(idx, "sensors.*.temp", "", &owner2, UINT64_MAX);
        c = add(idx, "sensors.>", "workers", &owner3, 0);

        tap_check(match_sub_get_owner(a) == &owner1);
        tap_check(match_sub_get_owner(b) == &owner2);
        tap_check(match_sub_get_owner(c) == &owner3);
        tap_check(match_sub_get_id(a) == 7);
        tap_check(match_sub_get_id(b) == UINT64_MAX);
        tap_check(match_sub_get_id(c) == 0);
        tap_check(strcmp(match_sub_get_pattern(a), "sensors.*.temp") == 0);
        tap_check(strcmp(match_sub_get_pattern(b), "sensors.*.temp") == 0);
        tap_check(strcmp(match_sub_get_pattern(c), "sensors.>") == 0);
        tap_check(!match_sub_get_queue_group(a));
        tap_check(!match_sub_get_queue_group(b)); /* "" is a plain subscription */
        tap_check(strcmp(match_sub_get_queue_group(c), "workers") == 0);
        tap_check_int(match_index_count(idx), 3);

        /* the pattern outlives the other subscriptions on it */
        match_sub_free(a);
        tap_check(strcmp(match_sub_get_pattern(b), "sensors.*.temp") == 0);
        tap_check_int(match_index_count(idx), 2);
        match_sub_free(b);
        match_sub_free(c);
        tap_check_int(match_index_count(idx), 0);
        tap_check_int(match_index_count_nodes(idx), 0);
}

static void test_exact(void) {
        _cleanup_(match_index_freep) MatchIndex *idx = NULL;
        MatchSub *abc, *ab, *a, *other;
        Record r;

        assert(match_index_new(&idx) >= 0);
        abc = add(idx, "a.b.c", NULL, NULL, 1);
        ab = add(idx, "a.b", NULL, NULL, 2);
        a = add(idx, "a", NULL, NULL, 3);
        other = add(idx, "x.b.c", NULL, NULL, 4);

        r = match(idx, "a.b.c");
        tap_check_int(r.total, 1);
        tap_check_int(record_count(&r, abc), 1);
        r = match(idx, "a.b");
        tap_check_int(r.total, 1);
        tap_check_int(record_count(&r, ab), 1);
        r = match(idx, "a");
        tap_check_int(r.total, 1);
        tap_check_int(record_count(&r, a), 1);
        r = match(idx, "x.b.c");
        tap_check_int(r.total, 1);
        tap_check_int(record_count(&r, other), 1);

        tap_check_int(match(idx, "a.b.c.d").total, 0);
        tap_check_int(match(idx, "a.b.d").total, 0);
        tap_check_int(match(idx, "b").total, 0);
        tap_check_int(match(idx, "ab").total, 0);
        tap_check_int(match(idx, "a.bc").total, 0);
        tap_check_int(match(idx, "x.b").total, 0);
        /* tokens of the same length, different bytes */
        tap_check_int(match(idx, "a.b.x").total, 0);
}

static void test_star_positions(void) {
        /* every subset of positions of a 4-token topic replaced by '*' */
        static const char *const tokens[] = { "t0", "t1", "t2", "t3" };

        for (unsigned mask = 0; mask < 16; mask++) {
                char pattern[64] = "", miss[64] = "";

                for (unsigned i = 0; i < 4; i++) {
                        strcat(pattern, i ? "." : "");
                        strcat(pattern, mask & (1u << i) ? "*" : tokens[i]);
                }
                if (!tap_check(single_match(pattern, "t0.t1.t2.t3")))
                        tap_diag("\"%s\" does not match t0.t1.t2.t3", pattern);
                tap_check(!single_match(pattern, "t0.t1.t2"));
                tap_check(!single_match(pattern, "t0.t1.t2.t3.t4"));

                /* changing a non-wildcard token makes it miss */
                for (unsigned i = 0; i < 4; i++) {
                        if (mask & (1u << i))
                                continue;
                        miss[0] = '\0';
                        for (unsigned j = 0; j < 4; j++) {
                                strcat(miss, j ? "." : "");
                                strcat(miss, i == j ? "zz" : tokens[j]);
                        }
                        if (!tap_check(!single_match(pattern, miss)))
                                tap_diag("\"%s\" matches \"%s\"", pattern, miss);
                }
        }

        tap_check(single_match("*", "a"));
        tap_check(!single_match("*", "a.b"));
        tap_check(single_match("*.*", "a.b"));
        tap_check(!single_match("*.*", "a"));
}

static void test_tail(void) {
        tap_check(single_match(">", "a"));
        tap_check(single_match(">", "a.b"));
        tap_check(single_match(">", "a.b.c.d.e.f.g.h"));
        tap_check(single_match("a.>", "a.b"));
        tap_check(single_match("a.>", "a.b.c"));
        tap_check(!single_match("a.>", "a"));
        tap_check(!single_match("a.>", "b.a"));
        tap_check(!single_match("a.>", "ab.c"));
        tap_check(single_match("a.b.>", "a.b.c"));
        tap_check(!single_match("a.b.>", "a.b"));
        tap_check(!single_match("a.b.>", "a.c.d"));
        tap_check(single_match("*.>", "x.y"));
        tap_check(!single_match("*.>", "x"));
        tap_check(single_match("*.b.>", "a.b.c"));
        tap_check(!single_match("*.b.>", "a.c.c"));
}

static void test_tail_and_exact_together(void) {
        _cleanup_(match_index_freep) MatchIndex *idx = NULL;
        MatchSub *all, *a, *a_tail, *a_star, *a_star_tail;
        Record r;

        assert(match_index_new(&idx) >= 0);
        all = add(idx, ">", NULL, NULL, 1);
        a = add(idx, "a", NULL, NULL, 2);
        a_tail = add(idx, "a.>", NULL, NULL, 3);
        a_star = add(idx, "a.*", NULL, NULL, 4);
        a_star_tail = add(idx, "a.*.>", NULL, NULL, 5);

        r = match(idx, "a");
        tap_check_int(r.total, 2);
        tap_check_int(record_count(&r, all), 1);
        tap_check_int(record_count(&r, a), 1);

        r = match(idx, "a.b");
        tap_check_int(r.total, 3);
        tap_check_int(record_count(&r, all), 1);
        tap_check_int(record_count(&r, a_tail), 1);
        tap_check_int(record_count(&r, a_star), 1);

        r = match(idx, "a.b.c");
        tap_check_int(r.total, 3);
        tap_check_int(record_count(&r, all), 1);
        tap_check_int(record_count(&r, a_tail), 1);
        tap_check_int(record_count(&r, a_star_tail), 1);

        r = match(idx, "b.c");
        tap_check_int(r.total, 1);
        tap_check_int(record_count(&r, all), 1);
}

static void test_same_owner_overlapping(void) {
        _cleanup_(match_index_freep) MatchIndex *idx = NULL;
        MatchSub *s[5];
        int owner;
        Record r;

        assert(match_index_new(&idx) >= 0);
        s[0] = add(idx, "a.b.c", NULL, &owner, 1);
        s[1] = add(idx, "a.*.c", NULL, &owner, 2);
        s[2] = add(idx, "a.>", NULL, &owner, 3);
        s[3] = add(idx, ">", NULL, &owner, 4);
        s[4] = add(idx, "a.b.c", NULL, &owner, 5); /* the same pattern twice */

        r = match(idx, "a.b.c");
        tap_check_int(r.total, 5);
        for (unsigned i = 0; i < ELEMENTSOF(s); i++) {
                tap_check_int(record_count(&r, s[i]), 1);
                tap_check(match_sub_get_owner(r.subs[i]) == &owner);
        }

        match_sub_free(s[0]);
        r = match(idx, "a.b.c");
        tap_check_int(r.total, 4);
        tap_check_int(record_count(&r, s[4]), 1);
        tap_check(strcmp(match_sub_get_pattern(s[4]), "a.b.c") == 0);
}

static void test_queue_group_round_robin(void) {
        _cleanup_(match_index_freep) MatchIndex *idx = NULL;
        unsigned counts[4] = {};
        MatchSub *m[4], *plain;

        assert(match_index_new(&idx) >= 0);
        for (unsigned i = 0; i < 4; i++)
                m[i] = add(idx, "jobs.*", "workers", NULL, i);
        plain = add(idx, "jobs.*", NULL, NULL, 100);

        for (unsigned k = 0; k < 1000; k++) {
                Record r = match(idx, "jobs.run");
                unsigned got = 0;

                tap_check_int(r.total, 2); /* the plain subscription and one worker */
                tap_check_int(record_count(&r, plain), 1);
                for (unsigned i = 0; i < 4; i++) {
                        unsigned c = record_count(&r, m[i]);

                        counts[i] += c;
                        got += c;
                }
                tap_check_int(got, 1);
        }
        for (unsigned i = 0; i < 4; i++)
                tap_check_int(counts[i], 250);

        /* strict rotation: 4 consecutive messages reach 4 different members */
        for (unsigned k = 0; k < 10; k++) {
                MatchSub *seen[4];

                for (unsigned i = 0; i < 4; i++) {
                        Record r = match(idx, "jobs.x");

                        seen[i] = r.subs[0] == plain ? r.subs[1] : r.subs[0];
                        for (unsigned j = 0; j < i; j++)
                                tap_check(seen[j] != seen[i]);
                }
        }

        /* not matching the pattern: nobody */
        tap_check_int(match(idx, "jobs").total, 0);
        tap_check_int(match(idx, "jobs.a.b").total, 0);
}

static void test_queue_group_fair_after_join(void) {
        _cleanup_(match_index_freep) MatchIndex *idx = NULL;
        unsigned counts[3] = {};
        MatchSub *m[3];

        assert(match_index_new(&idx) >= 0);
        m[0] = add(idx, "q", "g", NULL, 0);
        m[1] = add(idx, "q", "g", NULL, 1);
        (void) match(idx, "q");
        m[2] = add(idx, "q", "g", NULL, 2);

        for (unsigned k = 0; k < 300; k++) {
                Record r = match(idx, "q");

                tap_check_int(r.total, 1);
                for (unsigned i = 0; i < 3; i++)
                        counts[i] += record_count(&r, m[i]);
        }
        for (unsigned i = 0; i < 3; i++)
                tap_check_int(counts[i], 100);
}

static void test_two_groups_same_pattern(void) {
        _cleanup_(match_index_freep) MatchIndex *idx = NULL;
        MatchSub *a[2], *b[3];
        unsigned ca[2] = {}, cb[3] = {};

        assert(match_index_new(&idx) >= 0);
        for (unsigned i = 0; i < 2; i++)
                a[i] = add(idx, "orders.>", "billing", NULL, i);
        for (unsigned i = 0; i < 3; i++)
                b[i] = add(idx, "orders.>", "shipping", NULL, 10 + i);

        for (unsigned k = 0; k < 60; k++) {
                Record r = match(idx, "orders.new.42");
                unsigned na = 0, nb = 0;

                tap_check_int(r.total, 2);
                for (unsigned i = 0; i < 2; i++) {
                        na += record_count(&r, a[i]);
                        ca[i] += record_count(&r, a[i]);
                }
                for (unsigned i = 0; i < 3; i++) {
                        nb += record_count(&r, b[i]);
                        cb[i] += record_count(&r, b[i]);
                }
                tap_check_int(na, 1);
                tap_check_int(nb, 1);
        }
        for (unsigned i = 0; i < 2; i++)
                tap_check_int(ca[i], 30);
        for (unsigned i = 0; i < 3; i++)
                tap_check_int(cb[i], 20);
}

static void test_same_group_name_different_patterns(void) {
        _cleanup_(match_index_freep) MatchIndex *idx = NULL;
        MatchSub *x, *y, *z;
        Record r;

        assert(match_index_new(&idx) >= 0);
        x = add(idx, "a.*", "g", NULL, 1);
        y = add(idx, "a.b", "g", NULL, 2);
        z = add(idx, "a.>", "g", NULL, 3);

        /* three patterns, three groups: one call each */
        for (unsigned k = 0; k < 5; k++) {
                r = match(idx, "a.b");
                tap_check_int(r.total, 3);
                tap_check_int(record_count(&r, x), 1);
                tap_check_int(record_count(&r, y), 1);
                tap_check_int(record_count(&r, z), 1);
        }
        r = match(idx, "a.c");
        tap_check_int(r.total, 2);
        tap_check_int(record_count(&r, y), 0);
        tap_check(strcmp(match_sub_get_queue_group(x), "g") == 0);
        tap_check(strcmp(match_sub_get_queue_group(y), "g") == 0);
}

static void test_queue_group_removal(void) {
        _cleanup_(match_index_freep) MatchIndex *idx = NULL;
        MatchSub *m[3], *order[3], *next, *rest[2], *got, *other;
        unsigned counts[2] = {};
        Record r;

        assert(match_index_new(&idx) >= 0);
        for (unsigned i = 0; i < 3; i++)
                m[i] = add(idx, "svc.>", "pool", NULL, i);

        /* learn the rotation order; afterwards order[0] is the current member */
        for (unsigned i = 0; i < 3; i++) {
                r = match(idx, "svc.call");
                tap_check_int(r.total, 1);
                order[i] = r.subs[0];
        }
        tap_check(order[0] != order[1] && order[1] != order[2] && order[0] != order[2]);

        /* remove the member that would get the next message */
        match_sub_free(order[0]);
        tap_check_int(match_index_count(idx), 2);
        r = match(idx, "svc.call");
        tap_check_int(r.total, 1);
        next = r.subs[0];
        tap_check(next == order[1]);

        rest[0] = order[1];
        rest[1] = order[2];
        for (unsigned k = 0; k < 100; k++) {
                r = match(idx, "svc.call");
                tap_check_int(r.total, 1);
                for (unsigned i = 0; i < 2; i++)
                        counts[i] += record_count(&r, rest[i]);
        }
        tap_check_int(counts[0], 50);
        tap_check_int(counts[1], 50);

        /* remove the member that just got a message, i.e. not the current one */
        r = match(idx, "svc.call");
        tap_check_int(r.total, 1);
        got = r.subs[0];
        other = got == rest[0] ? rest[1] : rest[0];
        match_sub_free(got);
        for (unsigned k = 0; k < 3; k++) {
                r = match(idx, "svc.call");
                tap_check_int(r.total, 1);
                tap_check(r.subs[0] == other);
        }

        /* a new member joins the remaining one */
        m[0] = add(idx, "svc.>", "pool", NULL, 9);
        counts[0] = counts[1] = 0;
        for (unsigned k = 0; k < 10; k++) {
                r = match(idx, "svc.x.y");
                tap_check_int(r.total, 1);
                counts[0] += record_count(&r, other);
                counts[1] += record_count(&r, m[0]);
        }
        tap_check_int(counts[0], 5);
        tap_check_int(counts[1], 5);

        /* the last members go, and the group with them */
        match_sub_free(other);
        match_sub_free(m[0]);
        tap_check_int(match(idx, "svc.call").total, 0);
        tap_check_int(match_index_count(idx), 0);
        tap_check_int(match_index_count_nodes(idx), 0);

        /* the same group name can be used again */
        m[0] = add(idx, "svc.>", "pool", NULL, 1);
        r = match(idx, "svc.call");
        tap_check_int(r.total, 1);
        tap_check(r.subs[0] == m[0]);
}

static void test_no_subscriber(void) {
        _cleanup_(match_index_freep) MatchIndex *idx = NULL;
        Record r = {};

        assert(match_index_new(&idx) >= 0);
        tap_check_int(match_index_match(idx, "a.b", 3, record_fn, &r), 0);
        tap_check_int(r.total, 0);

        add(idx, "a.b.c", NULL, NULL, 1);
        add(idx, "x.*", "g", NULL, 2);
        add(idx, "y.>", NULL, NULL, 3);
        tap_check_int(match(idx, "a.b").total, 0);
        tap_check_int(match(idx, "a.b.c.d").total, 0);
        tap_check_int(match(idx, "x").total, 0);
        tap_check_int(match(idx, "x.y.z").total, 0);
        tap_check_int(match(idx, "y").total, 0);
        tap_check_int(match(idx, "z.z.z").total, 0);
        /* the index is untouched by misses */
        tap_check_int(match_index_count(idx), 3);
}

static void test_not_nul_terminated(void) {
        _cleanup_(match_index_freep) MatchIndex *idx = NULL;
        const char buf[] = { 'a', '.', 'b', '.', 'c' };
        MatchSub *ab;
        Record r = {};

        assert(match_index_new(&idx) >= 0);
        ab = add(idx, "a.b", NULL, NULL, 1);
        tap_check_int(match_index_match(idx, buf, 3, record_fn, &r), 1);
        tap_check(r.subs[0] == ab);
        r = (Record) {};
        tap_check_int(match_index_match(idx, buf, 1, record_fn, &r), 0);
        tap_check_int(match_index_match(idx, buf, sizeof(buf), record_fn, &r), 0);
        tap_check_int(match_index_match(idx, buf, 0, record_fn, &r), 0);
}

static void test_many_children(void) {
        _cleanup_(match_index_freep) MatchIndex *idx = NULL;
        MatchSub **subs;
        char buf[64];
        Record r;

        subs = calloc(10000, sizeof(*subs));
        assert(subs);
        assert(match_index_new(&idx) >= 0);

        /* 10,000 distinct tokens under one node, inserted in a scrambled order */
        for (unsigned k = 0; k < 10000; k++) {
                unsigned i = (k * 7919u) % 10000u;

                snprintf(buf, sizeof(buf), "dev.%u.temp", i);
                subs[i] = add(idx, buf, NULL, NULL, i);
        }
        tap_check_int(match_index_count(idx), 10000);
        tap_check_int(match_index_count_nodes(idx), 1 + 10000 * 2);

        for (unsigned i = 0; i < 10000; i += 37) {
                snprintf(buf, sizeof(buf), "dev.%u.temp", i);
                r = match(idx, buf);
                if (!tap_check_int(r.total, 1) || !tap_check(r.subs[0] == subs[i]))
                        tap_diag("topic %s", buf);
                snprintf(buf, sizeof(buf), "dev.%u.hum", i);
                tap_check_int(match(idx, buf).total, 0);
        }
        tap_check_int(match(idx, "dev.10000.temp").total, 0);
        tap_check_int(match(idx, "dev.0010.temp").total, 0);

        /* remove every other one; the rest still match */
        for (unsigned i = 0; i < 10000; i += 2)
                subs[i] = match_sub_free(subs[i]);
        tap_check_int(match_index_count(idx), 5000);
        tap_check_int(match_index_count_nodes(idx), 1 + 5000 * 2);
        for (unsigned i = 0; i < 10000; i += 101) {
                snprintf(buf, sizeof(buf), "dev.%u.temp", i);
                r = match(idx, buf);
                tap_check_int(r.total, i % 2);
                if (i % 2)
                        tap_check(r.subs[0] == subs[i]);
        }
        for (unsigned i = 1; i < 10000; i += 2)
                subs[i] = match_sub_free(subs[i]);
        tap_check_int(match_index_count(idx), 0);
        tap_check_int(match_index_count_nodes(idx), 0);
        free(subs);
}

static void test_prune_10000_patterns(void) {
        _cleanup_(match_index_freep) MatchIndex *idx = NULL;
        MatchSub **subs;
        char buf[128];

        subs = calloc(10000, sizeof(*subs));
        assert(subs);
        assert(match_index_new(&idx) >= 0);

        for (unsigned i = 0; i < 10000; i++) {
                /* distinct patterns of various shapes sharing prefixes */
                switch (i % 5) {
                case 0:
                        snprintf(buf, sizeof(buf), "p.%u", i);
                        break;
                case 1:
                        snprintf(buf, sizeof(buf), "p.%u.*.x", i);
                        break;
                case 2:
                        snprintf(buf, sizeof(buf), "*.%u.>", i);
                        break;
                case 3:
                        snprintf(buf, sizeof(buf), "q.%u.%u.%u.>", i % 7, i % 13, i);
                        break;
                default:
                        snprintf(buf, sizeof(buf), "r.*.%u", i);
                        break;
                }
                subs[i] = add(idx, buf, i % 3 == 0 ? "grp" : NULL, NULL, i);
        }
        tap_check_int(match_index_count(idx), 10000);
        tap_check(match_index_count_nodes(idx) > 10000);

        /* a few spot checks while full */
        tap_check_int(match(idx, "p.5").total, 1);                   /* p.5 */
        tap_check_int(match(idx, "p.6.z.x").total, 1);               /* p.6.*.x */
        tap_check_int(match(idx, "anything.7.x").total, 1);          /* *.7.> */
        tap_check_int(match(idx, "r.t.9999").total, 1);              /* r.*.9999 */
        tap_check_int(match(idx, "q.1.8.8.z").total, 1);             /* q.1.8.8.> */

        /* remove in an order unrelated to insertion */
        for (unsigned k = 0; k < 10000; k++) {
                unsigned i = (k * 6133u) % 10000u;

                tap_check(subs[i]);
                subs[i] = match_sub_free(subs[i]);
        }
        tap_check_int(match_index_count(idx), 0);
        tap_check_int(match_index_count_nodes(idx), 0);
        tap_check_int(match(idx, "p.5").total, 0);
        free(subs);
}

static void test_long_topics(void) {
        _cleanup_(match_index_freep) MatchIndex *idx = NULL;
        char topic[TOPIC_MAX + 1], pattern[TOPIC_MAX + 1];
        MatchSub *exact, *all, *stars;
        Record r;

        assert(match_index_new(&idx) >= 0);

        /* one token of 1024 bytes */
        memset(topic, 'x', TOPIC_MAX);
        topic[TOPIC_MAX] = '\0';
        exact = add(idx, topic, NULL, NULL, 1);
        all = add(idx, ">", NULL, NULL, 2);
        stars = add(idx, "*", NULL, NULL, 3);
        r = match(idx, topic);
        tap_check_int(r.total, 3);
        tap_check_int(record_count(&r, exact), 1);
        tap_check_int(record_count(&r, all), 1);
        tap_check_int(record_count(&r, stars), 1);
        topic[TOPIC_MAX - 1] = 'y';
        tap_check_int(match(idx, topic).total, 2);
        match_sub_free(exact);
        match_sub_free(stars);

        /* 512 tokens, 1023 bytes */
        for (size_t i = 0; i < TOPIC_MAX - 1; i++)
                topic[i] = i % 2 ? '.' : 'a' + (char) (i / 2 % 26);
        topic[TOPIC_MAX - 1] = '\0';
        tap_check(topic_is_valid(topic, strlen(topic)));
        exact = add(idx, topic, "g", NULL, 4);
        memcpy(pattern, topic, sizeof(pattern));
        for (size_t i = 0; i < TOPIC_MAX - 1; i += 4)
                pattern[i] = '*';
        stars = add(idx, pattern, NULL, NULL, 5);
        r = match(idx, topic);
        tap_check_int(r.total, 3);
        tap_check_int(record_count(&r, exact), 1);
        tap_check_int(record_count(&r, all), 1);
        tap_check_int(record_count(&r, stars), 1);

        /* the same topic one token shorter only reaches '>' */
        topic[TOPIC_MAX - 3] = '\0';
        tap_check(topic_is_valid(topic, strlen(topic)));
        r = match(idx, topic);
        tap_check_int(r.total, 1);
        tap_check_int(record_count(&r, all), 1);
}

static void test_500_tokens(void) {
        _cleanup_(match_index_freep) MatchIndex *idx = NULL;
        char topic[1000];
        MatchSub *all, *two_stars, *a_tail, *b_tail;
        Record r;

        for (size_t i = 0; i < 999; i++)
                topic[i] = i % 2 ? '.' : 'a';
        topic[999] = '\0'; /* "a.a. ... .a", 500 tokens */

        assert(match_index_new(&idx) >= 0);
        all = add(idx, ">", NULL, NULL, 1);
        two_stars = add(idx, "*.*.>", NULL, NULL, 2);
        a_tail = add(idx, "a.a.a.>", NULL, NULL, 3);
        b_tail = add(idx, "a.b.>", NULL, NULL, 4);
        add(idx, "*.*", NULL, NULL, 5);
        add(idx, "a.*.a", NULL, NULL, 6);

        r = match(idx, topic);
        tap_check_int(r.total, 3);
        tap_check_int(record_count(&r, all), 1);
        tap_check_int(record_count(&r, two_stars), 1);
        tap_check_int(record_count(&r, a_tail), 1);
        tap_check_int(record_count(&r, b_tail), 0);

        /* a trie with a '*' at every level: recursion on every token */
        {
                _cleanup_(match_index_freep) MatchIndex *deep = NULL;
                char pattern[1000];
                MatchSub *s;

                memcpy(pattern, topic, sizeof(pattern));
                for (size_t i = 0; i < 999; i += 2)
                        pattern[i] = '*';
                assert(match_index_new(&deep) >= 0);
                s = add(deep, pattern, NULL, NULL, 1);
                r = match(deep, topic);
                tap_check_int(r.total, 1);
                tap_check(r.subs[0] == s);
                tap_check_int(match_index_count_nodes(deep), 500);
        }
}

typedef struct ForeachState {
        unsigned n;
        unsigned id_sum;
} ForeachState;

static void foreach_fn(MatchSub *s, void *userdata) {
        ForeachState *st = userdata;

        st->n++;
        st->id_sum += (unsigned) match_sub_get_id(s);
}

static void test_foreach(void) {
        _cleanup_(match_index_freep) MatchIndex *idx = NULL;
        ForeachState st = {};

        assert(match_index_new(&idx) >= 0);
        match_index_foreach(idx, foreach_fn, &st);
        tap_check_int(st.n, 0);

        add(idx, "a", NULL, NULL, 1);
        add(idx, "a.b", NULL, NULL, 2);
        add(idx, "a.*", "g", NULL, 4);
        add(idx, "a.*", "g", NULL, 8);
        add(idx, "a.*", "g", NULL, 16);
        add(idx, "a.*", "h", NULL, 32);
        add(idx, ">", NULL, NULL, 64);
        add(idx, "*.>", NULL, NULL, 128);

        match_index_foreach(idx, foreach_fn, &st);
        tap_check_int(st.n, 8);
        tap_check_int(st.id_sum, 255);
}

static void test_free_with_subscriptions(void) {
        MatchIndex *idx = NULL;

        /* ASan/valgrind check that everything is released */
        assert(match_index_new(&idx) >= 0);
        add(idx, "a.b.c", NULL, NULL, 1);
        add(idx, "a.*.c", "g", NULL, 2);
        add(idx, "a.*.c", "g", NULL, 3);
        add(idx, "a.*.c", "h", NULL, 4);
        add(idx, "a.>", NULL, NULL, 5);
        add(idx, ">", "g", NULL, 6);
        tap_check_int(match_index_count(idx), 6);
        tap_check(!match_index_free(idx));
}

/* xorshift32: reproducible pseudo-random numbers */
static uint32_t rnd_state = 2463534242u;
static uint32_t rnd(void) {
        rnd_state ^= rnd_state << 13;
        rnd_state ^= rnd_state >> 17;
        rnd_state ^= rnd_state << 5;
        return rnd_state;
}

static void random_topic(char *buf, bool pattern) {
        static const char *const tokens[] = { "a", "b", "cc" };
        unsigned n = 1 + rnd() % 5;

        buf[0] = '\0';
        for (unsigned i = 0; i < n; i++) {
                unsigned k = rnd() % (pattern ? 5 : 3);

                if (i > 0)
                        strcat(buf, ".");
                if (k < 3)
                        strcat(buf, tokens[k]);
                else if (k == 3 || i + 1 < n)
                        strcat(buf, "*");
                else
                        strcat(buf, ">");
        }
}

typedef struct CrossCheck {
        unsigned hits[256];
} CrossCheck;

static void cross_fn(MatchSub *s, void *userdata) {
        CrossCheck *c = userdata;

        c->hits[match_sub_get_id(s)]++;
}

static void test_random_cross_check(void) {
        _cleanup_(match_index_freep) MatchIndex *idx = NULL;
        char patterns[256][32];
        MatchSub *subs[256];

        assert(match_index_new(&idx) >= 0);
        for (unsigned i = 0; i < 256; i++) {
                random_topic(patterns[i], true);
                subs[i] = add(idx, patterns[i], NULL, NULL, i);
        }

        for (unsigned round = 0; round < 2; round++) {
                for (unsigned k = 0; k < 2000; k++) {
                        char topic[32];
                        CrossCheck c = {};
                        unsigned n, expected = 0;

                        random_topic(topic, false);
                        n = match_index_match(idx, topic, strlen(topic), cross_fn, &c);
                        for (unsigned i = 0; i < 256; i++) {
                                bool want = subs[i] && topic_pattern_matches(
                                        patterns[i], strlen(patterns[i]), topic, strlen(topic));

                                expected += want;
                                if (!tap_check_int(c.hits[i], want))
                                        tap_diag("pattern \"%s\" topic \"%s\"", patterns[i],
                                                 topic);
                        }
                        tap_check_int(n, expected);
                }

                /* and again with half of the subscriptions removed */
                for (unsigned i = 0; i < 256; i += 2)
                        subs[i] = match_sub_free(subs[i]);
        }
        for (unsigned i = 1; i < 256; i += 2)
                subs[i] = match_sub_free(subs[i]);
        tap_check_int(match_index_count(idx), 0);
        tap_check_int(match_index_count_nodes(idx), 0);
}

int main(void) {
        tap_init();
        TAP_RUN(test_new_free);
        TAP_RUN(test_invalid_patterns);
        TAP_RUN(test_getters);
        TAP_RUN(test_exact);
        TAP_RUN(test_star_positions);
        TAP_RUN(test_tail);
        TAP_RUN(test_tail_and_exact_together);
        TAP_RUN(test_same_owner_overlapping);
        TAP_RUN(test_queue_group_round_robin);
        TAP_RUN(test_queue_group_fair_after_join);
        TAP_RUN(test_two_groups_same_pattern);
        TAP_RUN(test_same_group_name_different_patterns);
        TAP_RUN(test_queue_group_removal);
        TAP_RUN(test_no_subscriber);
        TAP_RUN(test_not_nul_terminated);
        TAP_RUN(test_many_children);
        TAP_RUN(test_prune_10000_patterns);
        TAP_RUN(test_long_topics);
        TAP_RUN(test_500_tokens);
        TAP_RUN(test_foreach);
        TAP_RUN(test_free_with_subscriptions);
        TAP_RUN(test_random_cross_check);
        return tap_done();
}
