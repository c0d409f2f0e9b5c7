/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The broker's subscription index: which subscriptions does a published topic
 * reach.
 *
 * A MatchIndex is a trie keyed by pattern tokens. Each node has its literal
 * children plus at most one "*" child and one ">" child, so matching a topic
 * visits only the nodes on paths that can match it (O(tokens) per matching
 * pattern shape), never the list of all subscriptions, and never allocates.
 *
 * A MatchSub is one subscription: a pattern, an optional queue group, an
 * opaque owner (the broker's Peer) and the client-chosen id. Plain
 * subscriptions receive every matching message. Subscriptions with the same
 * pattern and the same queue group name form a group that receives each
 * matching message once, rotating fairly among its members (as in NATS, the
 * same group name on another pattern is another group).
 *
 * Ownership: the index owns its subscriptions; whoever added one keeps the
 * MatchSub pointer and removes it with match_sub_free(). Removing the last
 * subscription under a trie node frees the node and its empty ancestors, so an
 * index whose subscriptions are all removed holds no nodes.
 *
 * Callbacks (match_fn) must not add or remove subscriptions: the broker defers
 * that, as it defers freeing peers.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "libbus/macro.h"

typedef struct MatchIndex MatchIndex;
typedef struct MatchSub MatchSub;

typedef void (*match_fn)(MatchSub *s, void *userdata);

/* Returns 0 and *ret, or -ENOMEM. */
int match_index_new(MatchIndex **ret);
/* Frees the index and any subscriptions still in it (their MatchSub pointers
 * become invalid). Accepts NULL, returns NULL. */
MatchIndex *match_index_free(MatchIndex *idx);
DEFINE_CLEANUP(MatchIndex, match_index_free)

/* Adds a subscription. pattern (NUL-terminated) must satisfy
 * topic_pattern_is_valid(). queue_group NULL or "" makes a plain
 * subscription. owner is opaque, id is the client-chosen subscription id.
 * Returns 0 and *ret, or:
 *   -EINVAL  invalid pattern
 *   -ENOMEM  out of memory (the index is unchanged) */
int match_index_add(MatchIndex *idx, const char *pattern, const char *queue_group, void *owner,
                    uint64_t id, MatchSub **ret);

/* Removes the subscription from its index and prunes trie nodes left empty.
 * Accepts NULL, returns NULL. */
MatchSub *match_sub_free(MatchSub *s);
DEFINE_CLEANUP(MatchSub, match_sub_free)

void *match_sub_get_owner(const MatchSub *s);
uint64_t match_sub_get_id(const MatchSub *s);
/* Borrowed; valid while the subscription exists. */
const char *match_sub_get_pattern(const MatchSub *s);
/* Borrowed; NULL for a plain subscription. */
const char *match_sub_get_queue_group(const MatchSub *s);

/* Calls fn for every plain subscription whose pattern matches topic, and for
 * exactly one member (round-robin) of each matching queue group. topic must be
 * valid (topic_is_valid()) and need not be NUL-terminated. If one owner has
 * several matching subscriptions, fn is called for each. Does not allocate.
 * Returns the number of calls. */
unsigned match_index_match(MatchIndex *idx, const char *topic, size_t len, match_fn fn,
                           void *userdata);

/* Number of subscriptions in the index. */
unsigned match_index_count(const MatchIndex *idx);

/* Calls fn for every subscription (for listing), in no particular order. fn
 * must not add or remove subscriptions. */
void match_index_foreach(MatchIndex *idx, match_fn fn, void *userdata);

/* Number of trie nodes besides the root; for tests and statistics. */
unsigned match_index_count_nodes(const MatchIndex *idx);
