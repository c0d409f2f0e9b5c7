/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Well-known name registry; see name.h for the rules it implements.
 *
 * Ownership: the registry owns its Names (through the hashmap, keyed by the
 * string stored inside each Name), a Name owns its NameOwners, and each
 * NameOwner is also linked into its client's list, which only borrows it.
 *
 * A Name keeps its owners in an array, primary first and then the queue in
 * FIFO order, plus a parallel array of their clients: that second array is
 * what name_registry_foreach() hands out, so listing needs no allocation.
 * Queues are short (usually empty), so finding a client in one is a scan of a
 * few pointers, and queue insertions and removals are small memmoves.
 *
 * Every operation first allocates whatever it may need, then changes the
 * name's array, then calls name_settle(), which does the bookkeeping common
 * to all of them: primary-owner counts, dropping an empty name from the map,
 * the change callback, and only then freeing the name.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "busd/hashmap.h"
#include "busd/name.h"

#define NAME_NOT_FOUND UINT_MAX

typedef struct Name {
        NameOwner **owners;     /* [0] is the primary owner, then the queue */
        NameClient **clients;   /* clients[i] == owners[i]->client */
        unsigned n_owners;
        unsigned n_allocated;
        char name[];            /* the hashmap's key */
} Name;

struct NameOwner {
        Name *name;
        NameClient *client;
        uint32_t flags;         /* of the client's latest request for this name */
        NameOwner *client_prev, *client_next;
};

struct NameRegistry {
        Hashmap *names;         /* name string -> Name */
};

void name_client_init(NameClient *c) {
        assert(c);
        *c = (NameClient) {};
}

void name_client_deinit(NameClient *c) {
        assert(c);
        assert(!c->owners_first);
        assert(!c->owners_last);
        assert(c->n_primary == 0);
}

unsigned name_client_count(const NameClient *c) {
        assert(c);
        return c->n_primary;
}

/* Allocates a claim of c and appends it to c's list; the caller puts it into
 * the name's array right away. */
static NameOwner *name_owner_new(Name *n, NameClient *c, uint32_t flags) {
        NameOwner *o;

        o = calloc(1, sizeof(*o));
        if (!o)
                return NULL;
        o->name = n;
        o->client = c;
        o->flags = flags;
        o->client_prev = c->owners_last;
        if (c->owners_last)
                c->owners_last->client_next = o;
        else
                c->owners_first = o;
        c->owners_last = o;
        return o;
}

/* Unlinks o from its client; the caller has taken it out of the name's array. */
static void name_owner_free(NameOwner *o) {
        NameClient *c = o->client;

        if (o->client_prev)
                o->client_prev->client_next = o->client_next;
        else
                c->owners_first = o->client_next;
        if (o->client_next)
                o->client_next->client_prev = o->client_prev;
        else
                c->owners_last = o->client_prev;
        free(o);
}

static Name *name_new(const char *name) {
        size_t len = strlen(name);
        Name *n;

        n = calloc(1, sizeof(*n) + len + 1);
        if (!n)
                return NULL;
        memcpy(n->name, name, len + 1);
        n->owners = malloc(sizeof(*n->owners));
        n->clients = malloc(sizeof(*n->clients));
        if (!n->owners || !n->clients) {
                free(n->owners);
                free(n->clients);
                free(n);
                return NULL;
        }
        n->n_allocated = 1;
        return n;
}

/* Frees an empty name that is no longer in the map. */
static void name_free(Name *n) {
        assert(n->n_owners == 0);
        free(n->owners);
        free(n->clients);
        free(n);
}

/* Makes room for one more owner. */
static int name_reserve(Name *n) {
        NameOwner **owners;
        NameClient **clients;
        unsigned want;

        if (n->n_owners < n->n_allocated)
                return 0;
        if (n->n_allocated > UINT_MAX / 2)
                return -ENOMEM;
        want = n->n_allocated * 2;

        owners = reallocarray(n->owners, want, sizeof(*owners));
        if (!owners)
                return -ENOMEM;
        n->owners = owners;
        clients = reallocarray(n->clients, want, sizeof(*clients));
        if (!clients)
                return -ENOMEM;
        n->clients = clients;
        n->n_allocated = want;
        return 0;
}

static void name_insert_at(Name *n, unsigned i, NameOwner *o) {
        assert(n->n_owners < n->n_allocated);
        assert(i <= n->n_owners);

        memmove(n->owners + i + 1, n->owners + i, (n->n_owners - i) * sizeof(*n->owners));
        memmove(n->clients + i + 1, n->clients + i, (n->n_owners - i) * sizeof(*n->clients));
        n->owners[i] = o;
        n->clients[i] = o->client;
        n->n_owners++;
}

/* Takes the owner at i out of the array and returns it. */
static NameOwner *name_remove_at(Name *n, unsigned i) {
        NameOwner *o;

        assert(i < n->n_owners);

        o = n->owners[i];
        n->n_owners--;
        memmove(n->owners + i, n->owners + i + 1, (n->n_owners - i) * sizeof(*n->owners));
        memmove(n->clients + i, n->clients + i + 1, (n->n_owners - i) * sizeof(*n->clients));
        return o;
}

static unsigned name_find_client(const Name *n, const NameClient *c) {
        for (unsigned i = 0; i < n->n_owners; i++)
                if (n->clients[i] == c)
                        return i;
        return NAME_NOT_FOUND;
}

static NameClient *name_primary(const Name *n) {
        return n->n_owners > 0 ? n->clients[0] : NULL;
}

/* Finishes any change to n's array, given the primary owner before it:
 * updates the primary-owner counts, drops an empty name from the map, reports
 * an owner change, and last frees the empty name, so change.name is valid
 * during the callback. */
static void name_settle(NameRegistry *r, Name *n, NameClient *old, name_change_fn fn,
                        void *userdata) {
        NameClient *new = name_primary(n);

        if (!new) {
                Name *removed _unused_ = hashmap_remove(r->names, n->name);

                assert(removed == n);
        }
        if (old != new) {
                if (old)
                        old->n_primary--;
                if (new)
                        new->n_primary++;
                if (fn) {
                        NameChange change = { .name = n->name, .old_owner = old, .new_owner = new };

                        fn(&change, userdata);
                }
        }
        if (!new)
                name_free(n);
}

int name_registry_new(NameRegistry **ret) {
        NameRegistry *r;
        int k;

        assert(ret);

        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        k = hashmap_new(&r->names, HASHMAP_KEY_STRING);
        if (k < 0) {
                free(r);
                return k;
        }
        *ret = r;
        return 0;
}

NameRegistry *name_registry_free(NameRegistry *r) {
        HashmapIter it = HASHMAP_ITER_INIT;
        void *v;

        if (!r)
                return NULL;

        while (hashmap_iterate(r->names, &it, &v, NULL)) {
                Name *n = v;

                hashmap_remove(r->names, n->name);
                n->clients[0]->n_primary--;
                while (n->n_owners > 0)
                        name_owner_free(name_remove_at(n, n->n_owners - 1));
                name_free(n);
        }
        hashmap_free(r->names);
        free(r);
        return NULL;
}

/* A new name, with c as its primary owner. */
static int name_registry_add(NameRegistry *r, NameClient *c, const char *name, uint32_t flags,
                             name_change_fn fn, void *userdata) {
        NameOwner *o;
        Name *n;
        int k;

        n = name_new(name);
        if (!n)
                return -ENOMEM;
        k = hashmap_put(r->names, n->name, n);
        if (k < 0) {
                name_free(n);
                return k;
        }
        o = name_owner_new(n, c, flags);
        if (!o) {
                hashmap_remove(r->names, n->name);
                name_free(n);
                return -ENOMEM;
        }
        name_insert_at(n, 0, o);
        name_settle(r, n, NULL, fn, userdata);
        return NAME_REQUEST_PRIMARY_OWNER;
}

int name_registry_request(NameRegistry *r, NameClient *c, const char *name, uint32_t flags,
                          name_change_fn fn, void *userdata) {
        NameClient *old;
        NameOwner *o;
        unsigned i;
        Name *n;
        int k;

        assert(r);
        assert(c);
        assert(name);

        n = hashmap_get(r->names, name);
        if (!n)
                return name_registry_add(r, c, name, flags, fn, userdata);

        old = name_primary(n);
        if (old == c) {
                n->owners[0]->flags = flags;
                return NAME_REQUEST_ALREADY_OWNER;
        }

        i = name_find_client(n, c);
        if ((flags & NAME_FLAG_REPLACE_EXISTING) &&
            (n->owners[0]->flags & NAME_FLAG_ALLOW_REPLACEMENT)) {
                if (i == NAME_NOT_FOUND) {
                        k = name_reserve(n);
                        if (k < 0)
                                return k;
                        o = name_owner_new(n, c, flags);
                        if (!o)
                                return -ENOMEM;
                } else {
                        o = name_remove_at(n, i);
                        o->flags = flags;
                }

                /* The old primary owner stays at the head of the queue unless
                 * it asked never to be queued. */
                if (n->owners[0]->flags & NAME_FLAG_DO_NOT_QUEUE)
                        name_owner_free(name_remove_at(n, 0));
                name_insert_at(n, 0, o);
                name_settle(r, n, old, fn, userdata);
                return NAME_REQUEST_PRIMARY_OWNER;
        }

        if (flags & NAME_FLAG_DO_NOT_QUEUE) {
                if (i != NAME_NOT_FOUND)
                        name_owner_free(name_remove_at(n, i));
                return NAME_REQUEST_EXISTS;
        }

        if (i != NAME_NOT_FOUND) {
                /* Keeps its place in the queue. */
                n->owners[i]->flags = flags;
                return NAME_REQUEST_IN_QUEUE;
        }

        k = name_reserve(n);
        if (k < 0)
                return k;
        o = name_owner_new(n, c, flags);
        if (!o)
                return -ENOMEM;
        name_insert_at(n, n->n_owners, o);
        return NAME_REQUEST_IN_QUEUE;
}

int name_registry_release(NameRegistry *r, NameClient *c, const char *name,
                          name_change_fn fn, void *userdata) {
        NameClient *old;
        unsigned i;
        Name *n;

        assert(r);
        assert(c);
        assert(name);

        n = hashmap_get(r->names, name);
        if (!n)
                return NAME_RELEASE_NON_EXISTENT;
        i = name_find_client(n, c);
        if (i == NAME_NOT_FOUND)
                return NAME_RELEASE_NOT_OWNER;

        old = name_primary(n);
        name_owner_free(name_remove_at(n, i));
        name_settle(r, n, old, fn, userdata);
        return NAME_RELEASE_RELEASED;
}

void name_registry_release_all(NameRegistry *r, NameClient *c, name_change_fn fn,
                               void *userdata) {
        NameOwner *o;

        assert(r);
        assert(c);

        /* Always take the first remaining claim, so nothing a callback does
         * to c's list can leave us holding a freed one. */
        while ((o = c->owners_first)) {
                Name *n = o->name;
                NameClient *old = name_primary(n);
                unsigned i = name_find_client(n, c);

                assert(i != NAME_NOT_FOUND && n->owners[i] == o);
                name_owner_free(name_remove_at(n, i));
                name_settle(r, n, old, fn, userdata);
        }
        assert(c->n_primary == 0);
}

NameClient *name_registry_get_owner(NameRegistry *r, const char *name) {
        Name *n;

        assert(r);
        assert(name);

        n = hashmap_get(r->names, name);
        return n ? name_primary(n) : NULL;
}

unsigned name_registry_count(const NameRegistry *r) {
        assert(r);
        return (unsigned) hashmap_size(r->names);
}

void name_registry_foreach(NameRegistry *r, name_foreach_fn fn, void *userdata) {
        HashmapIter it = HASHMAP_ITER_INIT;
        void *v;

        assert(r);
        assert(fn);

        while (hashmap_iterate(r->names, &it, &v, NULL)) {
                Name *n = v;

                fn(n->name, n->clients[0], n->clients + 1, n->n_owners - 1, userdata);
        }
}

void name_client_foreach_owned(NameClient *c, name_owned_fn fn, void *userdata) {
        assert(c);
        assert(fn);

        for (NameOwner *o = c->owners_first; o; o = o->client_next)
                if (o->name->owners[0] == o)
                        fn(o->name->name, userdata);
}
