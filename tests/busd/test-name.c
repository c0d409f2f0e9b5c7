/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for busd/name.c: the D-Bus name ownership state machine, rule by
 * rule, with every owner-change callback checked (name, old owner, new owner,
 * order), and the queue order and counts checked through the listing API.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "busd/name.h"
#include "proto/bus.pb-c.h"
#include "tests/lib/tap.h"

/* The C constants must match the wire values. */
#define ASSERT_SAME(a, b) _Static_assert((int) (a) == (int) (b), #a " != " #b)
ASSERT_SAME(NAME_FLAG_ALLOW_REPLACEMENT, BUS__NAME_FLAG__NAME_FLAG_ALLOW_REPLACEMENT);
ASSERT_SAME(NAME_FLAG_REPLACE_EXISTING, BUS__NAME_FLAG__NAME_FLAG_REPLACE_EXISTING);
ASSERT_SAME(NAME_FLAG_DO_NOT_QUEUE, BUS__NAME_FLAG__NAME_FLAG_DO_NOT_QUEUE);
ASSERT_SAME(NAME_REQUEST_PRIMARY_OWNER, BUS__REQUEST_NAME_RESULT__REQUEST_NAME_PRIMARY_OWNER);
ASSERT_SAME(NAME_REQUEST_IN_QUEUE, BUS__REQUEST_NAME_RESULT__REQUEST_NAME_IN_QUEUE);
ASSERT_SAME(NAME_REQUEST_EXISTS, BUS__REQUEST_NAME_RESULT__REQUEST_NAME_EXISTS);
ASSERT_SAME(NAME_REQUEST_ALREADY_OWNER, BUS__REQUEST_NAME_RESULT__REQUEST_NAME_ALREADY_OWNER);
ASSERT_SAME(NAME_RELEASE_RELEASED, BUS__RELEASE_NAME_RESULT__RELEASE_NAME_RELEASED);
ASSERT_SAME(NAME_RELEASE_NON_EXISTENT, BUS__RELEASE_NAME_RESULT__RELEASE_NAME_NON_EXISTENT);
ASSERT_SAME(NAME_RELEASE_NOT_OWNER, BUS__RELEASE_NAME_RESULT__RELEASE_NAME_NOT_OWNER);

#define ALLOW NAME_FLAG_ALLOW_REPLACEMENT
#define REPLACE NAME_FLAG_REPLACE_EXISTING
#define DNQ NAME_FLAG_DO_NOT_QUEUE

#define container_of(ptr, type, member) ((type *) ((char *) (ptr) - offsetof(type, member)))

/* Stands in for the broker's Peer, which embeds a NameClient. */
typedef struct TestPeer {
        const char *id;
        NameClient names;
} TestPeer;

typedef struct Event {
        char name[64];
        NameClient *old_owner;
        NameClient *new_owner;
        bool consistent;        /* the registry already showed the change */
} Event;

/* Records every change callback. */
typedef struct Recorder {
        NameRegistry *registry;
        Event events[32];
        unsigned n_events;
} Recorder;

static void record(const NameChange *change, void *userdata) {
        Recorder *rec = userdata;
        Event *e;

        assert(rec->n_events < ELEMENTSOF(rec->events));
        e = &rec->events[rec->n_events++];
        snprintf(e->name, sizeof(e->name), "%s", change->name);
        e->old_owner = change->old_owner;
        e->new_owner = change->new_owner;
        e->consistent = name_registry_get_owner(rec->registry, change->name) == change->new_owner;
}

/* True if event i is exactly (name, old, new) and was reported after the
 * registry had been updated. Consumes nothing: check n_events separately. */
static bool event_is(const Recorder *rec, unsigned i, const char *name, NameClient *old_owner,
                     NameClient *new_owner) {
        const Event *e;

        if (i >= rec->n_events) {
                tap_diag("event %u missing (%u recorded)", i, rec->n_events);
                return false;
        }
        e = &rec->events[i];
        if (strcmp(e->name, name) != 0 || e->old_owner != old_owner ||
            e->new_owner != new_owner || !e->consistent) {
                tap_diag("event %u is (%s, %p, %p, consistent=%d), expected (%s, %p, %p)", i,
                         e->name, (void *) e->old_owner, (void *) e->new_owner, e->consistent,
                         name, (void *) old_owner, (void *) new_owner);
                return false;
        }
        return true;
}

typedef struct QueueQuery {
        const char *name;
        unsigned found;
        NameClient *primary;
        NameClient *queued[16];
        unsigned n_queued;
} QueueQuery;

static void query_one(const char *name, NameClient *primary, NameClient *const *queued,
                      unsigned n_queued, void *userdata) {
        QueueQuery *q = userdata;

        assert(queued);
        if (strcmp(name, q->name) != 0)
                return;
        q->found++;
        q->primary = primary;
        q->n_queued = n_queued;
        for (unsigned i = 0; i < n_queued && i < ELEMENTSOF(q->queued); i++)
                q->queued[i] = queued[i];
}

/* True if name (seen through name_registry_foreach()) has this primary owner
 * and exactly this queue, head first. */
static bool owners_are(NameRegistry *r, const char *name, NameClient *primary, unsigned n,
                       NameClient *const *queue) {
        QueueQuery q = { .name = name };

        name_registry_foreach(r, query_one, &q);
        if (!primary)
                return q.found == 0 && !name_registry_get_owner(r, name);
        if (q.found != 1 || q.primary != primary || q.n_queued != n ||
            name_registry_get_owner(r, name) != primary) {
                tap_diag("%s: found=%u primary=%p n_queued=%u", name, q.found, (void *) q.primary,
                         q.n_queued);
                return false;
        }
        for (unsigned i = 0; i < n; i++)
                if (q.queued[i] != queue[i]) {
                        tap_diag("%s: queue[%u] is %p, expected %p", name, i,
                                 (void *) q.queued[i], (void *) queue[i]);
                        return false;
                }
        return true;
}

#define OWNERS_ARE(r, name, primary, ...)                                               \
        owners_are(r, name, primary, ELEMENTSOF(((NameClient *[]) { NULL, ##__VA_ARGS__ })) - 1, \
                   ((NameClient *[]) { NULL, ##__VA_ARGS__ }) + 1)

typedef struct Fixture {
        Recorder rec;
        TestPeer peers[4];
        NameClient *a, *b, *c, *d;
} Fixture;

static void fixture_init(Fixture *f) {
        static const char *const ids[] = { ":1.1", ":1.2", ":1.3", ":1.4" };

        *f = (Fixture) {};
        assert(name_registry_new(&f->rec.registry) == 0);
        for (unsigned i = 0; i < ELEMENTSOF(f->peers); i++) {
                f->peers[i].id = ids[i];
                name_client_init(&f->peers[i].names);
        }
        f->a = &f->peers[0].names;
        f->b = &f->peers[1].names;
        f->c = &f->peers[2].names;
        f->d = &f->peers[3].names;
}

static void fixture_done(Fixture *f) {
        for (unsigned i = 0; i < ELEMENTSOF(f->peers); i++) {
                name_registry_release_all(f->rec.registry, &f->peers[i].names, NULL, NULL);
                name_client_deinit(&f->peers[i].names);
        }
        tap_check_int(name_registry_count(f->rec.registry), 0);
        f->rec.registry = name_registry_free(f->rec.registry);
}

static int request(Fixture *f, NameClient *c, const char *name, uint32_t flags) {
        return name_registry_request(f->rec.registry, c, name, flags, record, &f->rec);
}

static int release(Fixture *f, NameClient *c, const char *name) {
        return name_registry_release(f->rec.registry, c, name, record, &f->rec);
}

static void test_new_name(void) {
        Fixture f;

        fixture_init(&f);
        tap_check(!name_registry_get_owner(f.rec.registry, "org.example.A"));
        tap_check_int(request(&f, f.a, "org.example.A", 0), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(f.rec.n_events, 1);
        tap_check(event_is(&f.rec, 0, "org.example.A", NULL, f.a));
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.a));
        tap_check_int(name_registry_count(f.rec.registry), 1);
        tap_check_int(name_client_count(f.a), 1);
        tap_check_int(name_client_count(f.b), 0);

        /* The broker gets its Peer back from the owner. */
        tap_check(container_of(name_registry_get_owner(f.rec.registry, "org.example.A"),
                               TestPeer, names) == &f.peers[0]);

        /* A second name is independent. */
        tap_check_int(request(&f, f.b, "org.example.B", DNQ), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(f.rec.n_events, 2);
        tap_check(event_is(&f.rec, 1, "org.example.B", NULL, f.b));
        tap_check_int(name_registry_count(f.rec.registry), 2);
        fixture_done(&f);
}

static void test_already_owner(void) {
        Fixture f;

        fixture_init(&f);
        tap_check_int(request(&f, f.a, "org.example.A", 0), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(request(&f, f.a, "org.example.A", 0), NAME_REQUEST_ALREADY_OWNER);
        tap_check_int(request(&f, f.a, "org.example.A", REPLACE | DNQ),
                      NAME_REQUEST_ALREADY_OWNER);
        tap_check_int(f.rec.n_events, 1);
        tap_check_int(name_client_count(f.a), 1);
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.a));

        /* ALREADY_OWNER updates the flags: now a allows replacement... */
        tap_check_int(request(&f, f.a, "org.example.A", ALLOW), NAME_REQUEST_ALREADY_OWNER);
        tap_check_int(request(&f, f.b, "org.example.A", REPLACE), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(f.rec.n_events, 2);
        tap_check(event_is(&f.rec, 1, "org.example.A", f.a, f.b));
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.b, f.a));

        /* ...and b, which allowed nothing, takes that back by asking again. */
        tap_check_int(request(&f, f.b, "org.example.A", ALLOW), NAME_REQUEST_ALREADY_OWNER);
        tap_check_int(request(&f, f.b, "org.example.A", 0), NAME_REQUEST_ALREADY_OWNER);
        tap_check_int(request(&f, f.c, "org.example.A", REPLACE), NAME_REQUEST_IN_QUEUE);
        tap_check_int(f.rec.n_events, 2);
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.b, f.a, f.c));
        fixture_done(&f);
}

static void test_queue_order(void) {
        Fixture f;

        fixture_init(&f);
        tap_check_int(request(&f, f.a, "org.example.A", 0), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(request(&f, f.b, "org.example.A", 0), NAME_REQUEST_IN_QUEUE);
        tap_check_int(request(&f, f.c, "org.example.A", ALLOW), NAME_REQUEST_IN_QUEUE);
        tap_check_int(request(&f, f.d, "org.example.A", 0), NAME_REQUEST_IN_QUEUE);
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.a, f.b, f.c, f.d));

        /* Asking again keeps the queue place. */
        tap_check_int(request(&f, f.b, "org.example.A", ALLOW), NAME_REQUEST_IN_QUEUE);
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.a, f.b, f.c, f.d));
        tap_check_int(f.rec.n_events, 1);
        tap_check_int(name_client_count(f.b), 0);
        tap_check_int(name_registry_count(f.rec.registry), 1);

        /* The primary owner leaves: the head of the queue takes over. */
        tap_check_int(release(&f, f.a, "org.example.A"), NAME_RELEASE_RELEASED);
        tap_check_int(f.rec.n_events, 2);
        tap_check(event_is(&f.rec, 1, "org.example.A", f.a, f.b));
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.b, f.c, f.d));
        tap_check_int(name_client_count(f.a), 0);
        tap_check_int(name_client_count(f.b), 1);

        /* A queued owner leaves: no owner change. */
        tap_check_int(release(&f, f.c, "org.example.A"), NAME_RELEASE_RELEASED);
        tap_check_int(f.rec.n_events, 2);
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.b, f.d));

        /* a queues again, behind d. */
        tap_check_int(request(&f, f.a, "org.example.A", 0), NAME_REQUEST_IN_QUEUE);
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.b, f.d, f.a));

        tap_check_int(release(&f, f.b, "org.example.A"), NAME_RELEASE_RELEASED);
        tap_check_int(release(&f, f.d, "org.example.A"), NAME_RELEASE_RELEASED);
        tap_check_int(release(&f, f.a, "org.example.A"), NAME_RELEASE_RELEASED);
        tap_check_int(f.rec.n_events, 5);
        tap_check(event_is(&f.rec, 2, "org.example.A", f.b, f.d));
        tap_check(event_is(&f.rec, 3, "org.example.A", f.d, f.a));
        tap_check(event_is(&f.rec, 4, "org.example.A", f.a, NULL));
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", NULL));
        tap_check_int(name_registry_count(f.rec.registry), 0);
        for (unsigned i = 0; i < 4; i++)
                tap_check_int(name_client_count(&f.peers[i].names), 0);

        /* The name is gone and can start over. */
        tap_check_int(release(&f, f.a, "org.example.A"), NAME_RELEASE_NON_EXISTENT);
        tap_check_int(request(&f, f.c, "org.example.A", 0), NAME_REQUEST_PRIMARY_OWNER);
        tap_check(event_is(&f.rec, 5, "org.example.A", NULL, f.c));
        fixture_done(&f);
}

static void test_replace_allowed(void) {
        Fixture f;

        fixture_init(&f);
        tap_check_int(request(&f, f.a, "org.example.A", ALLOW), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(request(&f, f.c, "org.example.A", 0), NAME_REQUEST_IN_QUEUE);
        tap_check_int(request(&f, f.b, "org.example.A", REPLACE), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(f.rec.n_events, 2);
        tap_check(event_is(&f.rec, 1, "org.example.A", f.a, f.b));
        /* The old owner goes to the head of the queue, before c. */
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.b, f.a, f.c));
        tap_check_int(name_client_count(f.a), 0);
        tap_check_int(name_client_count(f.b), 1);

        /* b did not allow replacement. */
        tap_check_int(request(&f, f.d, "org.example.A", REPLACE), NAME_REQUEST_IN_QUEUE);
        tap_check_int(f.rec.n_events, 2);
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.b, f.a, f.c, f.d));

        /* When b leaves, a gets the name back, with its old flags (ALLOW). */
        tap_check_int(release(&f, f.b, "org.example.A"), NAME_RELEASE_RELEASED);
        tap_check(event_is(&f.rec, 2, "org.example.A", f.b, f.a));
        tap_check_int(request(&f, f.b, "org.example.A", REPLACE | DNQ),
                      NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(f.rec.n_events, 4);
        tap_check(event_is(&f.rec, 3, "org.example.A", f.a, f.b));
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.b, f.a, f.c, f.d));
        fixture_done(&f);
}

static void test_replace_not_allowed(void) {
        Fixture f;

        fixture_init(&f);
        tap_check_int(request(&f, f.a, "org.example.A", 0), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(request(&f, f.b, "org.example.A", REPLACE), NAME_REQUEST_IN_QUEUE);
        tap_check_int(request(&f, f.c, "org.example.A", REPLACE | DNQ), NAME_REQUEST_EXISTS);
        tap_check_int(request(&f, f.d, "org.example.A", REPLACE | ALLOW), NAME_REQUEST_IN_QUEUE);
        tap_check_int(f.rec.n_events, 1);
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.a, f.b, f.d));
        tap_check_int(name_client_count(f.a), 1);
        tap_check_int(name_client_count(f.c), 0);

        /* A queued owner may not jump over a primary owner that forbids it. */
        tap_check_int(request(&f, f.d, "org.example.A", REPLACE), NAME_REQUEST_IN_QUEUE);
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.a, f.b, f.d));
        tap_check_int(f.rec.n_events, 1);
        fixture_done(&f);
}

static void test_replace_old_do_not_queue(void) {
        Fixture f;

        fixture_init(&f);
        tap_check_int(request(&f, f.a, "org.example.A", ALLOW | DNQ), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(request(&f, f.c, "org.example.A", 0), NAME_REQUEST_IN_QUEUE);
        tap_check_int(request(&f, f.b, "org.example.A", REPLACE), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(f.rec.n_events, 2);
        tap_check(event_is(&f.rec, 1, "org.example.A", f.a, f.b));
        /* a asked never to be queued, so it lost the name entirely. */
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.b, f.c));
        tap_check_int(name_client_count(f.a), 0);
        tap_check_int(release(&f, f.a, "org.example.A"), NAME_RELEASE_NOT_OWNER);

        /* a holds nothing at all: deinit must not assert. */
        name_client_deinit(f.a);
        name_client_init(f.a);

        /* Also when the queue was empty. */
        tap_check_int(request(&f, f.d, "org.example.D", ALLOW | DNQ), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(request(&f, f.a, "org.example.D", REPLACE | DNQ),
                      NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(f.rec.n_events, 4);
        tap_check(event_is(&f.rec, 2, "org.example.D", NULL, f.d));
        tap_check(event_is(&f.rec, 3, "org.example.D", f.d, f.a));
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.D", f.a));
        tap_check_int(name_client_count(f.d), 0);
        fixture_done(&f);
}

static void test_replace_from_queue(void) {
        Fixture f;

        fixture_init(&f);
        tap_check_int(request(&f, f.a, "org.example.A", ALLOW), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(request(&f, f.b, "org.example.A", 0), NAME_REQUEST_IN_QUEUE);
        tap_check_int(request(&f, f.c, "org.example.A", ALLOW), NAME_REQUEST_IN_QUEUE);
        tap_check_int(request(&f, f.d, "org.example.A", 0), NAME_REQUEST_IN_QUEUE);

        /* c jumps from the middle of the queue to primary; a goes to the
         * head of the queue; b and d keep their order. */
        tap_check_int(request(&f, f.c, "org.example.A", REPLACE), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(f.rec.n_events, 2);
        tap_check(event_is(&f.rec, 1, "org.example.A", f.a, f.c));
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.c, f.a, f.b, f.d));
        tap_check_int(name_client_count(f.a), 0);
        tap_check_int(name_client_count(f.c), 1);

        /* c's flags are those of its last request: no more ALLOW. */
        tap_check_int(request(&f, f.d, "org.example.A", REPLACE), NAME_REQUEST_IN_QUEUE);
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.c, f.a, f.b, f.d));

        /* A queued owner asking again updates its flags in place: b now
         * allows replacement once it gets the name. */
        tap_check_int(request(&f, f.b, "org.example.A", ALLOW), NAME_REQUEST_IN_QUEUE);
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.c, f.a, f.b, f.d));
        tap_check_int(release(&f, f.c, "org.example.A"), NAME_RELEASE_RELEASED);
        tap_check_int(release(&f, f.a, "org.example.A"), NAME_RELEASE_RELEASED);
        tap_check_int(request(&f, f.d, "org.example.A", REPLACE), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(f.rec.n_events, 5);
        tap_check(event_is(&f.rec, 2, "org.example.A", f.c, f.a));
        tap_check(event_is(&f.rec, 3, "org.example.A", f.a, f.b));
        tap_check(event_is(&f.rec, 4, "org.example.A", f.b, f.d));
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.d, f.b));
        fixture_done(&f);
}

static void test_do_not_queue(void) {
        Fixture f;

        fixture_init(&f);
        tap_check_int(request(&f, f.a, "org.example.A", 0), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(request(&f, f.b, "org.example.A", DNQ), NAME_REQUEST_EXISTS);
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.a));
        tap_check_int(release(&f, f.b, "org.example.A"), NAME_RELEASE_NOT_OWNER);

        tap_check_int(request(&f, f.b, "org.example.A", 0), NAME_REQUEST_IN_QUEUE);
        tap_check_int(request(&f, f.c, "org.example.A", 0), NAME_REQUEST_IN_QUEUE);
        tap_check_int(request(&f, f.d, "org.example.A", 0), NAME_REQUEST_IN_QUEUE);
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.a, f.b, f.c, f.d));

        /* DO_NOT_QUEUE from a queued owner takes it out of the queue. */
        tap_check_int(request(&f, f.c, "org.example.A", DNQ), NAME_REQUEST_EXISTS);
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.a, f.b, f.d));
        tap_check_int(release(&f, f.c, "org.example.A"), NAME_RELEASE_NOT_OWNER);
        name_client_deinit(f.c);
        name_client_init(f.c);
        tap_check_int(request(&f, f.b, "org.example.A", DNQ | REPLACE), NAME_REQUEST_EXISTS);
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.a, f.d));
        tap_check_int(f.rec.n_events, 1);

        /* And release of the primary goes to the one left in the queue. */
        tap_check_int(release(&f, f.a, "org.example.A"), NAME_RELEASE_RELEASED);
        tap_check(event_is(&f.rec, 1, "org.example.A", f.a, f.d));
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.d));
        fixture_done(&f);
}

static void test_release_results(void) {
        Fixture f;

        fixture_init(&f);
        tap_check_int(release(&f, f.a, "org.example.None"), NAME_RELEASE_NON_EXISTENT);
        tap_check_int(request(&f, f.a, "org.example.A", 0), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(request(&f, f.b, "org.example.A", 0), NAME_REQUEST_IN_QUEUE);
        tap_check_int(release(&f, f.c, "org.example.A"), NAME_RELEASE_NOT_OWNER);
        tap_check_int(release(&f, f.a, "org.example.None"), NAME_RELEASE_NON_EXISTENT);
        tap_check_int(f.rec.n_events, 1);

        /* Released by the queued owner: no owner change. */
        tap_check_int(release(&f, f.b, "org.example.A"), NAME_RELEASE_RELEASED);
        tap_check_int(f.rec.n_events, 1);
        tap_check_int(release(&f, f.b, "org.example.A"), NAME_RELEASE_NOT_OWNER);
        tap_check(OWNERS_ARE(f.rec.registry, "org.example.A", f.a));

        /* Released by the last owner: the name disappears. */
        tap_check_int(release(&f, f.a, "org.example.A"), NAME_RELEASE_RELEASED);
        tap_check_int(f.rec.n_events, 2);
        tap_check(event_is(&f.rec, 1, "org.example.A", f.a, NULL));
        tap_check_int(release(&f, f.a, "org.example.A"), NAME_RELEASE_NON_EXISTENT);
        tap_check_int(name_registry_count(f.rec.registry), 0);

        /* A NULL callback is fine everywhere. */
        tap_check_int(name_registry_request(f.rec.registry, f.a, "x.y", 0, NULL, NULL),
                      NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(name_registry_request(f.rec.registry, f.b, "x.y", 0, NULL, NULL),
                      NAME_REQUEST_IN_QUEUE);
        tap_check_int(name_registry_release(f.rec.registry, f.a, "x.y", NULL, NULL),
                      NAME_RELEASE_RELEASED);
        tap_check(name_registry_get_owner(f.rec.registry, "x.y") == f.b);
        tap_check_int(f.rec.n_events, 2);
        fixture_done(&f);
}

static void test_release_all(void) {
        Fixture f;

        fixture_init(&f);
        /* In the order a asks: */
        tap_check_int(request(&f, f.a, "org.one", 0), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(request(&f, f.b, "org.two", 0), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(request(&f, f.a, "org.two", 0), NAME_REQUEST_IN_QUEUE);
        tap_check_int(request(&f, f.a, "org.three", 0), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(request(&f, f.c, "org.four", ALLOW), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(request(&f, f.a, "org.four", 0), NAME_REQUEST_IN_QUEUE);
        tap_check_int(request(&f, f.a, "org.five", ALLOW), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(request(&f, f.d, "org.six", 0), NAME_REQUEST_PRIMARY_OWNER);
        /* Queues behind a, and a's queue place in front of others. */
        tap_check_int(request(&f, f.b, "org.one", 0), NAME_REQUEST_IN_QUEUE);
        tap_check_int(request(&f, f.c, "org.one", 0), NAME_REQUEST_IN_QUEUE);
        tap_check_int(request(&f, f.c, "org.two", 0), NAME_REQUEST_IN_QUEUE);
        tap_check_int(request(&f, f.d, "org.four", 0), NAME_REQUEST_IN_QUEUE);
        tap_check_int(request(&f, f.d, "org.five", 0), NAME_REQUEST_IN_QUEUE);
        /* a is displaced from org.five later: it keeps its place in its own
         * list (first asked before org.six) but is now queued. */
        tap_check_int(request(&f, f.b, "org.five", REPLACE), NAME_REQUEST_PRIMARY_OWNER);
        tap_check(OWNERS_ARE(f.rec.registry, "org.five", f.b, f.a, f.d));
        tap_check_int(request(&f, f.a, "org.six", 0), NAME_REQUEST_IN_QUEUE);
        tap_check_int(request(&f, f.a, "org.seven", DNQ), NAME_REQUEST_PRIMARY_OWNER);

        tap_check_int(name_client_count(f.a), 3);
        tap_check_int(name_registry_count(f.rec.registry), 7);
        tap_check_int(f.rec.n_events, 8);

        f.rec.n_events = 0;
        name_registry_release_all(f.rec.registry, f.a, record, &f.rec);

        /* Only the names a was primary owner of change hands, in the order a
         * first asked for them. */
        tap_check_int(f.rec.n_events, 3);
        tap_check(event_is(&f.rec, 0, "org.one", f.a, f.b));
        tap_check(event_is(&f.rec, 1, "org.three", f.a, NULL));
        tap_check(event_is(&f.rec, 2, "org.seven", f.a, NULL));

        tap_check(OWNERS_ARE(f.rec.registry, "org.one", f.b, f.c));
        tap_check(OWNERS_ARE(f.rec.registry, "org.two", f.b, f.c));
        tap_check(OWNERS_ARE(f.rec.registry, "org.three", NULL));
        tap_check(OWNERS_ARE(f.rec.registry, "org.four", f.c, f.d));
        tap_check(OWNERS_ARE(f.rec.registry, "org.five", f.b, f.d));
        tap_check(OWNERS_ARE(f.rec.registry, "org.six", f.d));
        tap_check(OWNERS_ARE(f.rec.registry, "org.seven", NULL));
        tap_check_int(name_registry_count(f.rec.registry), 5);
        tap_check_int(name_client_count(f.a), 0);
        tap_check_int(name_client_count(f.b), 3);
        tap_check_int(name_client_count(f.c), 1);
        tap_check_int(name_client_count(f.d), 1);
        name_client_deinit(f.a);
        name_client_init(f.a);

        /* Releasing everything of a client that holds nothing does nothing. */
        name_registry_release_all(f.rec.registry, f.a, record, &f.rec);
        tap_check_int(f.rec.n_events, 3);

        /* b disconnects: it owns org.one, org.two and org.five. */
        f.rec.n_events = 0;
        name_registry_release_all(f.rec.registry, f.b, record, &f.rec);
        tap_check_int(f.rec.n_events, 3);
        tap_check(event_is(&f.rec, 0, "org.two", f.b, f.c));
        tap_check(event_is(&f.rec, 1, "org.one", f.b, f.c));
        tap_check(event_is(&f.rec, 2, "org.five", f.b, f.d));
        tap_check_int(name_client_count(f.c), 3);
        tap_check_int(name_client_count(f.d), 2);
        fixture_done(&f);
}

static void collect_owned(const char *name, void *userdata) {
        char *buf = userdata;

        strcat(buf, name);
        strcat(buf, " ");
}

typedef struct Listing {
        unsigned n_names;
        unsigned n_queued;
        char seen[256];
} Listing;

static void list_all(const char *name, NameClient *primary, NameClient *const *queued,
                     unsigned n_queued, void *userdata) {
        Listing *l = userdata;

        l->n_names++;
        l->n_queued += n_queued;
        assert(primary);
        if (strlen(l->seen) + strlen(name) + 2 < sizeof(l->seen)) {
                strcat(l->seen, name);
                strcat(l->seen, " ");
        }
}

static void test_count_and_foreach(void) {
        Listing listing = {};
        char owned[256] = "";
        Fixture f;

        fixture_init(&f);
        name_client_foreach_owned(f.a, collect_owned, owned);
        tap_check(strcmp(owned, "") == 0);
        name_registry_foreach(f.rec.registry, list_all, &listing);
        tap_check_int(listing.n_names, 0);

        tap_check_int(request(&f, f.a, "n.1", 0), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(request(&f, f.b, "n.2", 0), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(request(&f, f.a, "n.2", 0), NAME_REQUEST_IN_QUEUE);
        tap_check_int(request(&f, f.a, "n.3", 0), NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(request(&f, f.c, "n.3", 0), NAME_REQUEST_IN_QUEUE);
        tap_check_int(request(&f, f.d, "n.3", 0), NAME_REQUEST_IN_QUEUE);
        tap_check_int(request(&f, f.a, "n.4", 0), NAME_REQUEST_PRIMARY_OWNER);

        tap_check_int(name_client_count(f.a), 3);
        tap_check_int(name_client_count(f.b), 1);
        tap_check_int(name_client_count(f.c), 0);
        tap_check_int(name_registry_count(f.rec.registry), 4);

        /* Only primary ownerships, oldest first. */
        name_client_foreach_owned(f.a, collect_owned, owned);
        tap_check(strcmp(owned, "n.1 n.3 n.4 ") == 0);
        owned[0] = 0;
        name_client_foreach_owned(f.c, collect_owned, owned);
        tap_check(strcmp(owned, "") == 0);

        name_registry_foreach(f.rec.registry, list_all, &listing);
        tap_check_int(listing.n_names, 4);
        tap_check_int(listing.n_queued, 3);
        tap_check(strstr(listing.seen, "n.1 "));
        tap_check(strstr(listing.seen, "n.2 "));
        tap_check(strstr(listing.seen, "n.3 "));
        tap_check(strstr(listing.seen, "n.4 "));
        tap_check(OWNERS_ARE(f.rec.registry, "n.3", f.a, f.c, f.d));

        /* After a hands over n.3 and loses n.1, the counts follow. */
        tap_check_int(release(&f, f.a, "n.3"), NAME_RELEASE_RELEASED);
        tap_check_int(release(&f, f.a, "n.1"), NAME_RELEASE_RELEASED);
        tap_check_int(name_client_count(f.a), 1);
        tap_check_int(name_client_count(f.c), 1);
        owned[0] = 0;
        name_client_foreach_owned(f.a, collect_owned, owned);
        tap_check(strcmp(owned, "n.4 ") == 0);
        owned[0] = 0;
        name_client_foreach_owned(f.c, collect_owned, owned);
        tap_check(strcmp(owned, "n.3 ") == 0);
        tap_check_int(name_registry_count(f.rec.registry), 3);
        fixture_done(&f);
}

/* Many queuers: the queue grows and drains in FIFO order. */
static void test_long_queue(void) {
        enum { N = 100 };
        static TestPeer peers[N];
        NameRegistry *r = NULL;
        Recorder rec = {};
        unsigned bad = 0;

        tap_check_int(name_registry_new(&r), 0);
        rec.registry = r;
        for (unsigned i = 0; i < N; i++) {
                name_client_init(&peers[i].names);
                if (name_registry_request(r, &peers[i].names, "org.example.Busy", 0, record,
                                          &rec) != (i == 0 ? NAME_REQUEST_PRIMARY_OWNER
                                                           : NAME_REQUEST_IN_QUEUE))
                        bad++;
        }
        tap_check_int(bad, 0);
        for (unsigned i = 0; i < N; i++) {
                rec.n_events = 0;
                if (name_registry_release(r, &peers[i].names, "org.example.Busy", record, &rec) !=
                    NAME_RELEASE_RELEASED)
                        bad++;
                if (rec.n_events != 1 || rec.events[0].old_owner != &peers[i].names ||
                    rec.events[0].new_owner != (i + 1 < N ? &peers[i + 1].names : NULL) ||
                    !rec.events[0].consistent)
                        bad++;
                name_client_deinit(&peers[i].names);
        }
        tap_check_int(bad, 0);
        tap_check_int(name_registry_count(r), 0);
        name_registry_free(r);
}

/* Freeing a registry that still has names leaves the clients empty. */
static void test_free_with_names(void) {
        _cleanup_(name_registry_freep) NameRegistry *r = NULL;
        NameClient a, b;

        name_client_init(&a);
        name_client_init(&b);
        tap_check_int(name_registry_new(&r), 0);
        tap_check_int(name_registry_request(r, &a, "org.x", 0, NULL, NULL),
                      NAME_REQUEST_PRIMARY_OWNER);
        tap_check_int(name_registry_request(r, &b, "org.x", 0, NULL, NULL),
                      NAME_REQUEST_IN_QUEUE);
        tap_check_int(name_registry_request(r, &b, "org.y", 0, NULL, NULL),
                      NAME_REQUEST_PRIMARY_OWNER);
        r = name_registry_free(r);
        tap_check(!r);
        tap_check_int(name_client_count(&a), 0);
        tap_check_int(name_client_count(&b), 0);
        name_client_deinit(&a);
        name_client_deinit(&b);
        tap_check(name_registry_free(NULL) == NULL);
}

int main(void) {
        tap_init();
        TAP_RUN(test_new_name);
        TAP_RUN(test_already_owner);
        TAP_RUN(test_queue_order);
        TAP_RUN(test_replace_allowed);
        TAP_RUN(test_replace_not_allowed);
        TAP_RUN(test_replace_old_do_not_queue);
        TAP_RUN(test_replace_from_queue);
        TAP_RUN(test_do_not_queue);
        TAP_RUN(test_release_results);
        TAP_RUN(test_release_all);
        TAP_RUN(test_count_and_foreach);
        TAP_RUN(test_long_queue);
        TAP_RUN(test_free_with_names);
        return tap_done();
}
