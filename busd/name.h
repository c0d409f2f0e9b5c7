/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The registry of well-known names, with D-Bus ownership semantics.
 *
 * Objects:
 *   NameRegistry  all names, looked up through a string Hashmap.
 *   Name          one well-known name: a primary owner and a FIFO queue of
 *                 waiting owners. A Name exists exactly while it has a primary
 *                 owner; when the last owner leaves, it is freed.
 *   NameOwner     one client's claim on one name (primary or queued), with the
 *                 flags of its latest request.
 *   NameClient    embedded by the broker in its Peer (get the Peer back with
 *                 container_of()): the list of that client's NameOwner entries,
 *                 so a disconnect drops them all at once. The registry never
 *                 knows the Peer type.
 *
 * Rules (the D-Bus specification's RequestName/ReleaseName):
 *   request:  no owner -> PRIMARY_OWNER. Already primary -> ALREADY_OWNER and
 *             the flags are updated. Owned by another: if the request has
 *             REPLACE_EXISTING and the primary owner's flags have
 *             ALLOW_REPLACEMENT, the requester becomes primary (PRIMARY_OWNER;
 *             leaving the queue if it was in it) and the old primary goes to
 *             the head of the queue, or loses the name if its own flags had
 *             DO_NOT_QUEUE. Otherwise, with DO_NOT_QUEUE -> EXISTS (and any
 *             queue place of the requester is dropped); without it ->
 *             IN_QUEUE (appended, or kept in place with the flags updated).
 *   release:  unknown name -> NON_EXISTENT; neither primary nor queued ->
 *             NOT_OWNER; primary -> RELEASED, the head of the queue (if any)
 *             becomes primary; queued -> RELEASED, it leaves the queue.
 *   release_all: the client loses every name and queue place, as if it had
 *             released them one by one in the order it first requested them.
 *
 * The registry takes names as given: validating them (syntax, policy,
 * quotas) is the caller's job. Flags other than the three NAME_FLAG_* bits
 * are stored but otherwise ignored.
 *
 * Change callbacks: every call that changes a name's primary owner reports it
 * through an optional name_change_fn, once per change and in order, after the
 * registry reflects that change (name_registry_get_owner() returns the new
 * owner). A queue-only change is not reported. NameChange.name stays valid
 * for the duration of the callback even when the Name is being freed. The
 * callback may look at the registry; it must not change it.
 */
#pragma once

#include <stdint.h>

#include "libbus/macro.h"

/* Request flags, as proto/bus.proto's NameFlag. */
#define NAME_FLAG_ALLOW_REPLACEMENT 0x1u
#define NAME_FLAG_REPLACE_EXISTING 0x2u
#define NAME_FLAG_DO_NOT_QUEUE 0x4u

/* Results of name_registry_request(), as proto/bus.proto's RequestNameResult. */
enum {
        NAME_REQUEST_PRIMARY_OWNER = 1,
        NAME_REQUEST_IN_QUEUE = 2,
        NAME_REQUEST_EXISTS = 3,
        NAME_REQUEST_ALREADY_OWNER = 4,
};

/* Results of name_registry_release(), as proto/bus.proto's ReleaseNameResult. */
enum {
        NAME_RELEASE_RELEASED = 1,
        NAME_RELEASE_NON_EXISTENT = 2,
        NAME_RELEASE_NOT_OWNER = 3,
};

typedef struct NameRegistry NameRegistry;
typedef struct NameOwner NameOwner;

/* Embedded in the broker's Peer. The fields are private to name.c. */
typedef struct NameClient {
        NameOwner *owners_first;        /* this client's claims, oldest first */
        NameOwner *owners_last;
        unsigned n_primary;             /* how many of them are primary */
} NameClient;

void name_client_init(NameClient *c);
/* Asserts that the client holds nothing: call name_registry_release_all() first. */
void name_client_deinit(NameClient *c);

/* Number of names this client is the primary owner of. */
unsigned name_client_count(const NameClient *c);

/* Calls fn for each name c is the primary owner of (not those it waits for),
 * oldest claim first. fn must not change the registry. */
typedef void (*name_owned_fn)(const char *name, void *userdata);
void name_client_foreach_owned(NameClient *c, name_owned_fn fn, void *userdata);

/* A name's primary owner changed; old_owner is NULL for a new name and
 * new_owner is NULL for a name that is gone. */
typedef struct NameChange {
        const char *name;
        NameClient *old_owner;
        NameClient *new_owner;
} NameChange;

typedef void (*name_change_fn)(const NameChange *change, void *userdata);

/* -ENOMEM. */
int name_registry_new(NameRegistry **ret);

/* Frees the registry. Names still owned are dropped silently (no callbacks)
 * and their clients are left empty, so they can be deinitialized later.
 * Accepts NULL, returns NULL. */
NameRegistry *name_registry_free(NameRegistry *r);
DEFINE_CLEANUP(NameRegistry, name_registry_free)

/* Asks for name on behalf of c. flags are NAME_FLAG_* bits. Returns a
 * NAME_REQUEST_* result (> 0) or -ENOMEM; on -ENOMEM nothing changed and fn
 * was not called. fn (may be NULL) sees at most one change. */
int name_registry_request(NameRegistry *r, NameClient *c, const char *name, uint32_t flags,
                          name_change_fn fn, void *userdata);

/* Gives up c's ownership of, or queue place for, name. Returns a
 * NAME_RELEASE_* result (> 0); it cannot fail. fn (may be NULL) sees at most
 * one change: only releasing the primary ownership changes an owner. */
int name_registry_release(NameRegistry *r, NameClient *c, const char *name,
                          name_change_fn fn, void *userdata);

/* Drops all of c's names and queue places, for a disconnect; calls fn for
 * each name whose primary owner thereby changes, in the order c first asked
 * for them. Each callback sees the registry with that change (and the ones
 * before it) done, and c's later claims not yet dropped. */
void name_registry_release_all(NameRegistry *r, NameClient *c, name_change_fn fn,
                               void *userdata);

/* The primary owner of name, or NULL. */
NameClient *name_registry_get_owner(NameRegistry *r, const char *name);

/* Number of names that have an owner. */
unsigned name_registry_count(const NameRegistry *r);

/* Calls fn once per name, in unspecified order, with its primary owner and
 * its queue (n_queued clients in queue order, head first; queued is not NULL
 * even when empty). The strings and arrays are only valid during the call. fn
 * must not change the registry. */
typedef void (*name_foreach_fn)(const char *name, NameClient *primary, NameClient *const *queued,
                                unsigned n_queued, void *userdata);
void name_registry_foreach(NameRegistry *r, name_foreach_fn fn, void *userdata);
