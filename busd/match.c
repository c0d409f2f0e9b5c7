/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Subscription index: a token trie.
 *
 * Each MatchNode stands for one pattern prefix. Its literal children are kept
 * in an array sorted by token (length first, then bytes) and found by binary
 * search; "*" and ">" children have their own pointers, so a match looks them
 * up without searching. Why a sorted array rather than a per-node hash table:
 *   - the worst case is guaranteed: clients choose the tokens, and with an
 *     unkeyed hash they could pile thousands of tokens into one bucket chain
 *     and make every publish under that node slow; binary search over 10,000
 *     children is 14 comparisons whatever the tokens are;
 *   - it costs one pointer per child and no empty slots beyond the doubling
 *     slack, and nodes with one child (most of a trie) use an array of one;
 *   - inserting or removing a child moves the tail of the array (O(children)
 *     pointer moves, about 40 KiB at 10,000 children). Subscribing is far rarer
 *     than publishing, so that is the right side to pay on.
 * A node's token is stored inline after the node, so each comparison of the
 * search touches one cache line.
 *
 * Subscriptions hang off the node where their pattern ends: plain ones in a
 * NULL-terminated list, queue groups (one MatchGroup per pattern and group
 * name) in a list of groups. A group's members form a ring and the group's
 * cursor is the member that gets the next message; a new member joins just
 * before the cursor, i.e. at the end of the current rotation, and removing
 * the cursor moves it to the next member, so rotation stays fair under churn.
 *
 * The full pattern string is stored once per terminal node, not per
 * subscription, so a subscription costs a fixed-size MatchSub whatever its
 * pattern, and a popular pattern is stored once. Invariant: node->pattern is
 * set exactly when node->subs or node->groups is non-empty. A node with no
 * subscriptions and no children is freed at once, so nodes only exist on the
 * path to some subscription.
 *
 * Matching walks the topic token by token from the root. At each node the
 * ">" child (if any) matches the rest of the topic, the "*" child and the
 * literal child matching the token are both followed. The literal branch is
 * followed in a loop and only "*" branches recurse, so the recursion depth is
 * bounded by the number of tokens (at most TOPIC_MAX / 2 + 1) and is usually
 * small. No memory is allocated while matching.
 */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "busd/match.h"
#include "libbus/macro.h"
#include "libbus/topic.h"

typedef struct MatchNode MatchNode;
typedef struct MatchGroup MatchGroup;

struct MatchSub {
        MatchIndex *index;
        MatchNode *node;        /* where the pattern ends */
        MatchGroup *group;      /* NULL for a plain subscription */
        MatchSub *prev, *next;  /* in node->subs (NULL-terminated) or the group's ring */
        void *owner;
        uint64_t id;
};

struct MatchGroup {
        MatchNode *node;
        MatchGroup *prev, *next; /* in node->groups */
        MatchSub *cursor;        /* the member that gets the next message; never NULL */
        char name[];
};

struct MatchNode {
        MatchNode *parent;      /* NULL for the root */
        MatchNode **children;   /* literal children, sorted by node_cmp() */
        uint32_t n_children;
        uint32_t n_children_max;
        MatchNode *star;        /* the "*" child */
        MatchNode *tail;        /* the ">" child; it never has children */
        MatchSub *subs;         /* plain subscriptions ending here */
        MatchGroup *groups;     /* queue groups ending here */
        char *pattern;          /* full pattern while subs or groups is non-empty */
        uint16_t token_len;
        char token[];           /* token_len bytes and a NUL */
};

struct MatchIndex {
        MatchNode *root;
        unsigned n_subs;
        unsigned n_nodes;       /* not counting the root */
};

static MatchNode *node_new(MatchNode *parent, const char *token, size_t len) {
        MatchNode *n;

        assert(len <= TOPIC_MAX);
        /* never less than sizeof(MatchNode): the compiler may access the padding */
        n = calloc(1, MAX(sizeof(MatchNode), offsetof(MatchNode, token) + len + 1));
        if (!n)
                return NULL;
        n->parent = parent;
        n->token_len = (uint16_t) len;
        memcpy(n->token, token, len);
        n->token[len] = '\0';
        return n;
}

static bool node_is_empty(const MatchNode *n) {
        return n->n_children == 0 && !n->star && !n->tail && !n->subs && !n->groups;
}

/* Orders tokens by length, then bytes: cheaper than lexicographic order, since
 * most comparisons of different tokens stop at the length. */
static int node_cmp(const MatchNode *n, const char *token, size_t len) {
        if (n->token_len != len)
                return n->token_len < len ? -1 : 1;
        return memcmp(n->token, token, len);
}

/* Returns the literal child with this token or NULL; *ret_pos (if given) is
 * where it is, or where it would be inserted. */
static MatchNode *node_find_child(const MatchNode *n, const char *token, size_t len,
                                  uint32_t *ret_pos) {
        uint32_t lo = 0, hi = n->n_children;

        while (lo < hi) {
                uint32_t mid = lo + (hi - lo) / 2;
                int c = node_cmp(n->children[mid], token, len);

                if (c == 0) {
                        if (ret_pos)
                                *ret_pos = mid;
                        return n->children[mid];
                }
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        if (ret_pos)
                *ret_pos = lo;
        return NULL;
}

static bool token_is(const char *token, size_t len, char wildcard) {
        return len == 1 && token[0] == wildcard;
}

/* Returns the child for token, creating it if needed; NULL on ENOMEM. */
static MatchNode *node_get_child(MatchIndex *idx, MatchNode *n, const char *token, size_t len) {
        MatchNode **slot, *child;
        uint32_t pos;

        if (token_is(token, len, '*'))
                slot = &n->star;
        else if (token_is(token, len, '>'))
                slot = &n->tail;
        else {
                child = node_find_child(n, token, len, &pos);
                if (child)
                        return child;

                if (n->n_children == n->n_children_max) {
                        uint32_t max = n->n_children_max ? n->n_children_max * 2 : 1;
                        MatchNode **a;

                        if (max < n->n_children_max)
                                return NULL;
                        a = reallocarray(n->children, max, sizeof(*a));
                        if (!a)
                                return NULL;
                        n->children = a;
                        n->n_children_max = max;
                }
                child = node_new(n, token, len);
                if (!child)
                        return NULL;
                memmove(n->children + pos + 1, n->children + pos,
                        (n->n_children - pos) * sizeof(*n->children));
                n->children[pos] = child;
                n->n_children++;
                idx->n_nodes++;
                return child;
        }

        if (!*slot) {
                *slot = node_new(n, token, len);
                if (!*slot)
                        return NULL;
                idx->n_nodes++;
        }
        return *slot;
}

/* Takes an empty node out of its parent and frees it. */
static void node_unlink_and_free(MatchIndex *idx, MatchNode *n) {
        MatchNode *p = n->parent;

        assert(p);
        assert(node_is_empty(n));
        assert(!n->pattern);

        if (p->star == n)
                p->star = NULL;
        else if (p->tail == n)
                p->tail = NULL;
        else {
                uint32_t pos;
                MatchNode *found = node_find_child(p, n->token, n->token_len, &pos);

                assert(found == n);
                (void) found;
                p->n_children--;
                memmove(p->children + pos, p->children + pos + 1,
                        (p->n_children - pos) * sizeof(*p->children));

                /* give memory back after mass unsubscribes; failing to shrink is harmless */
                if (p->n_children == 0) {
                        free(p->children);
                        p->children = NULL;
                        p->n_children_max = 0;
                } else if (p->n_children <= p->n_children_max / 4) {
                        MatchNode **a = reallocarray(p->children, p->n_children_max / 2,
                                                     sizeof(*a));
                        if (a) {
                                p->children = a;
                                p->n_children_max /= 2;
                        }
                }
        }

        free(n->children);
        free(n);
        idx->n_nodes--;
}

/* Restores the invariants after subscriptions left n (or an add failed
 * half-way): drops the pattern if nothing ends at n any more, then frees n and
 * every ancestor that became empty. */
static void node_release(MatchIndex *idx, MatchNode *n) {
        if (!n->subs && !n->groups) {
                free(n->pattern);
                n->pattern = NULL;
        }

        while (n->parent && node_is_empty(n)) {
                MatchNode *parent = n->parent;

                node_unlink_and_free(idx, n);
                n = parent;
        }
}

/* Frees n and everything below it, subscriptions included. */
static void node_free_all(MatchNode *n) {
        if (!n)
                return;

        for (uint32_t i = 0; i < n->n_children; i++)
                node_free_all(n->children[i]);
        node_free_all(n->star);
        node_free_all(n->tail);

        while (n->subs) {
                MatchSub *s = n->subs;

                n->subs = s->next;
                free(s);
        }
        while (n->groups) {
                MatchGroup *g = n->groups;
                MatchSub *s = g->cursor;

                n->groups = g->next;
                s->prev->next = NULL; /* break the ring */
                while (s) {
                        MatchSub *next = s->next;

                        free(s);
                        s = next;
                }
                free(g);
        }

        free(n->pattern);
        free(n->children);
        free(n);
}

int match_index_new(MatchIndex **ret) {
        _cleanup_free_ MatchIndex *idx = NULL;

        assert(ret);

        idx = calloc(1, sizeof(*idx));
        if (!idx)
                return -ENOMEM;
        idx->root = node_new(NULL, "", 0);
        if (!idx->root)
                return -ENOMEM;

        *ret = TAKE_PTR(idx);
        return 0;
}

MatchIndex *match_index_free(MatchIndex *idx) {
        if (!idx)
                return NULL;

        node_free_all(idx->root);
        free(idx);
        return NULL;
}

static MatchGroup *node_find_group(MatchNode *n, const char *name) {
        for (MatchGroup *g = n->groups; g; g = g->next)
                if (strcmp(g->name, name) == 0)
                        return g;
        return NULL;
}

int match_index_add(MatchIndex *idx, const char *pattern, const char *queue_group, void *owner,
                    uint64_t id, MatchSub **ret) {
        _cleanup_free_ MatchSub *s = NULL;
        const char *p, *end;
        MatchNode *n;
        MatchGroup *g = NULL;
        size_t plen;

        assert(idx);
        assert(ret);

        if (!pattern)
                return -EINVAL;
        plen = strnlen(pattern, TOPIC_MAX + 1);
        if (!topic_pattern_is_valid(pattern, plen))
                return -EINVAL;
        if (queue_group && queue_group[0] == '\0')
                queue_group = NULL;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;

        n = idx->root;
        p = pattern;
        end = pattern + plen;
        while (p < end) {
                const char *dot = memchr(p, '.', (size_t) (end - p));
                size_t len = (size_t) ((dot ?: end) - p);
                MatchNode *child = node_get_child(idx, n, p, len);

                if (!child) {
                        node_release(idx, n);
                        return -ENOMEM;
                }
                n = child;
                p += len + (dot ? 1 : 0);
        }

        if (!n->pattern) {
                n->pattern = strndup(pattern, plen);
                if (!n->pattern) {
                        node_release(idx, n);
                        return -ENOMEM;
                }
        }

        if (queue_group) {
                g = node_find_group(n, queue_group);
                if (!g) {
                        size_t glen = strlen(queue_group);

                        g = calloc(1, sizeof(*g) + glen + 1);
                        if (!g) {
                                node_release(idx, n);
                                return -ENOMEM;
                        }
                        memcpy(g->name, queue_group, glen + 1);
                        g->node = n;
                        g->next = n->groups;
                        if (n->groups)
                                n->groups->prev = g;
                        n->groups = g;
                }
        }

        s->index = idx;
        s->node = n;
        s->group = g;
        s->owner = owner;
        s->id = id;

        if (g) {
                if (g->cursor) {
                        /* just before the cursor: last in the current rotation */
                        s->next = g->cursor;
                        s->prev = g->cursor->prev;
                        s->prev->next = s;
                        s->next->prev = s;
                } else {
                        s->next = s->prev = s;
                        g->cursor = s;
                }
        } else {
                s->next = n->subs;
                if (n->subs)
                        n->subs->prev = s;
                n->subs = s;
        }

        idx->n_subs++;
        *ret = TAKE_PTR(s);
        return 0;
}

MatchSub *match_sub_free(MatchSub *s) {
        MatchIndex *idx;
        MatchNode *n;
        MatchGroup *g;

        if (!s)
                return NULL;

        idx = s->index;
        n = s->node;
        g = s->group;

        if (g) {
                if (s->next == s)
                        g->cursor = NULL;
                else {
                        s->prev->next = s->next;
                        s->next->prev = s->prev;
                        if (g->cursor == s)
                                g->cursor = s->next;
                }

                if (!g->cursor) {
                        if (g->prev)
                                g->prev->next = g->next;
                        else
                                n->groups = g->next;
                        if (g->next)
                                g->next->prev = g->prev;
                        free(g);
                }
        } else {
                if (s->prev)
                        s->prev->next = s->next;
                else
                        n->subs = s->next;
                if (s->next)
                        s->next->prev = s->prev;
        }

        assert(idx->n_subs > 0);
        idx->n_subs--;
        node_release(idx, n);
        free(s);
        return NULL;
}

void *match_sub_get_owner(const MatchSub *s) {
        assert(s);
        return s->owner;
}

uint64_t match_sub_get_id(const MatchSub *s) {
        assert(s);
        return s->id;
}

const char *match_sub_get_pattern(const MatchSub *s) {
        assert(s);
        return s->node->pattern;
}

const char *match_sub_get_queue_group(const MatchSub *s) {
        assert(s);
        return s->group ? s->group->name : NULL;
}

/* Delivers to what ends at n: every plain subscription, one member per group. */
static unsigned node_deliver(MatchNode *n, match_fn fn, void *userdata) {
        unsigned count = 0;

        for (MatchSub *s = n->subs, *next; s; s = next) {
                next = s->next;
                fn(s, userdata);
                count++;
        }
        for (MatchGroup *g = n->groups; g; g = g->next) {
                MatchSub *s = g->cursor;

                g->cursor = s->next;
                fn(s, userdata);
                count++;
        }
        return count;
}

/* t..end are the tokens of the topic still to match at n (t == end: none). */
static unsigned node_match(MatchNode *n, const char *t, const char *end, match_fn fn,
                           void *userdata) {
        unsigned count = 0;

        for (;;) {
                const char *dot, *next;
                size_t len;

                if (t == end)
                        return count + node_deliver(n, fn, userdata);

                /* ">" takes the one or more tokens that are left */
                if (n->tail)
                        count += node_deliver(n->tail, fn, userdata);

                dot = memchr(t, '.', (size_t) (end - t));
                len = (size_t) ((dot ?: end) - t);
                next = dot ? dot + 1 : end;

                if (n->star)
                        count += node_match(n->star, next, end, fn, userdata);

                n = node_find_child(n, t, len, NULL);
                if (!n)
                        return count;
                t = next;
        }
}

unsigned match_index_match(MatchIndex *idx, const char *topic, size_t len, match_fn fn,
                           void *userdata) {
        assert(idx);
        assert(fn);
        assert(topic || len == 0);

        /* An empty topic is invalid; don't let it match as "zero tokens" at the root. */
        if (len == 0)
                return 0;
        return node_match(idx->root, topic, topic + len, fn, userdata);
}

unsigned match_index_count(const MatchIndex *idx) {
        assert(idx);
        return idx->n_subs;
}

unsigned match_index_count_nodes(const MatchIndex *idx) {
        assert(idx);
        return idx->n_nodes;
}

static void node_foreach(MatchNode *n, match_fn fn, void *userdata) {
        if (!n)
                return;

        for (MatchSub *s = n->subs; s; s = s->next)
                fn(s, userdata);
        for (MatchGroup *g = n->groups; g; g = g->next) {
                MatchSub *s = g->cursor;

                do {
                        fn(s, userdata);
                        s = s->next;
                } while (s != g->cursor);
        }

        for (uint32_t i = 0; i < n->n_children; i++)
                node_foreach(n->children[i], fn, userdata);
        node_foreach(n->star, fn, userdata);
        node_foreach(n->tail, fn, userdata);
}

void match_index_foreach(MatchIndex *idx, match_fn fn, void *userdata) {
        assert(idx);
        assert(fn);

        node_foreach(idx->root, fn, userdata);
}
