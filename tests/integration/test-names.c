/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Integration test: well-known names through a real busd, with D-Bus
 * ownership semantics. Each contender is an "agent": a child process with its
 * own libbus connection that requests and releases names on command from the
 * test (over a socket pair) and answers WhoAmI with its unique id, so the test
 * sees where requests to a name go. A watcher connection in the test process
 * collects bus.NameOwnerChanged events, lists names and asks for owners.
 *
 * Covered: every RequestName and ReleaseName result, replacement and the
 * queue, an owner that dies, the owner-change events (exactly one per primary
 * owner change, in order, none for queue changes), requests following the
 * owner, refused names, and ListPeers.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libbus/bus.h>

#include "proto/bus.pb-c.h"
#include "tests/lib/tap.h"
#include "tests/lib/util-busd.h"

#define CHILD_TIMEOUT_MS 20000
#define AGENT_TIMEOUT_MS 10000  /* for an agent to carry out a command */
#define EVENT_TIMEOUT_MS 10000  /* for an event the broker sends on its own */
#define CALL_TIMEOUT (10 * BUS_USEC_PER_SEC)
#define ID_MAX 32

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

static TestBusd busd;

static uint64_t mono_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * BUS_USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

static bool streq_null(const char *a, const char *b) {
        return a && b && strcmp(a, b) == 0;
}

/* ---- Agents: child processes that own names on command. */

enum { AGENT_REQUEST = 1, AGENT_RELEASE, AGENT_QUIT };

typedef struct AgentCmd {
        int op;
        uint64_t flags;
        char name[300];
} AgentCmd;

typedef struct AgentRes {
        int r;
        char text[ID_MAX];
} AgentRes;

typedef struct AgentArgs {
        const char *address;
        const char *description;
        int fd[2]; /* [0] the test's end, [1] the agent's */
} AgentArgs;

typedef struct Agent {
        char label;
        pid_t pid;
        int fd;
        char unique_id[ID_MAX];
} Agent;

/* WhoAmI: answers with the agent's unique id. */
static int agent_whoami(bus_message *m, void *userdata) {
        bus_client *c = userdata;
        const char *id;
        int r;

        r = bus_client_get_unique_id(c, &id);
        if (r < 0)
                return r;
        return bus_client_reply(c, m, id, strlen(id));
}

static void agent_send(int fd, const AgentRes *res) {
        (void) send(fd, res, sizeof(*res), MSG_NOSIGNAL);
}

static int agent_main(void *arg) {
        AgentArgs *a = arg;
        int fd = a->fd[1], r;
        bus_client *c = NULL;
        AgentRes res = {};
        const char *id;
        bool quit = false;

        close(a->fd[0]);
        r = bus_client_new(&c);
        if (r >= 0)
                r = bus_client_set_description(c, a->description);
        if (r >= 0)
                r = bus_client_connect(c, a->address);
        if (r >= 0)
                r = bus_client_add_method(c, NULL, NULL, "WhoAmI", agent_whoami, c);
        if (r >= 0)
                r = bus_client_get_unique_id(c, &id);
        res.r = r;
        if (r >= 0)
                snprintf(res.text, sizeof(res.text), "%s", id);
        agent_send(fd, &res);

        while (r >= 0 && !quit) {
                struct pollfd p[2] = { { .fd = fd, .events = POLLIN } };
                uint64_t until, now;
                int timeout_ms = -1;
                AgentCmd cmd;
                ssize_t n;

                while ((r = bus_client_process(c)) > 0)
                        ;
                if (r < 0) {
                        printf("# agent %s: %s\n", a->description, strerror(-r));
                        break;
                }
                (void) bus_client_get_timeout(c, &until);
                now = mono_usec();
                if (until != UINT64_MAX)
                        timeout_ms = until <= now ? 0 : (int) ((until - now + 999) / 1000);
                p[1].fd = bus_client_get_fd(c);
                p[1].events = (short) bus_client_get_events(c);
                if (poll(p, 2, timeout_ms) < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        break;
                }
                if (!p[0].revents)
                        continue;
                n = recv(fd, &cmd, sizeof(cmd), 0);
                if (n != (ssize_t) sizeof(cmd)) {
                        r = -EPIPE; /* the test has gone */
                        break;
                }
                cmd.name[sizeof(cmd.name) - 1] = '\0';
                res = (AgentRes){};
                switch (cmd.op) {
                case AGENT_REQUEST:
                        res.r = bus_client_request_name(c, cmd.name, cmd.flags);
                        break;
                case AGENT_RELEASE:
                        res.r = bus_client_release_name(c, cmd.name);
                        break;
                case AGENT_QUIT:
                        quit = true;
                        break;
                default:
                        res.r = -EINVAL;
                        break;
                }
                agent_send(fd, &res);
        }
        bus_client_unref(c);
        close(fd);
        return quit ? 0 : 1;
}

static int agent_read(Agent *a, AgentRes *res) {
        struct pollfd p = { .fd = a->fd, .events = POLLIN };
        ssize_t n;
        int r;

        do
                r = poll(&p, 1, AGENT_TIMEOUT_MS);
        while (r < 0 && errno == EINTR);
        if (r == 0)
                return -ETIMEDOUT;
        if (r < 0)
                return -errno;
        n = recv(a->fd, res, sizeof(*res), 0);
        if (n == 0)
                return -EPIPE;
        if (n < 0)
                return -errno;
        return n == (ssize_t) sizeof(*res) ? 0 : -EBADMSG;
}

static bool agent_start(Agent *a, char label, const char *address) {
        char description[32];
        AgentArgs args = { .address = address, .description = description };
        AgentRes res;
        int r;

        *a = (Agent){ .label = label, .pid = -1, .fd = -1 };
        snprintf(description, sizeof(description), "agent-%c", label);
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, args.fd) < 0)
                return false;
        a->pid = test_child_start(agent_main, &args);
        close(args.fd[1]);
        a->fd = args.fd[0];
        if (a->pid < 0)
                return false;
        r = agent_read(a, &res);
        if (r < 0 || res.r < 0) {
                tap_diag("agent %c did not start: %s", label, strerror(-(r < 0 ? r : res.r)));
                return false;
        }
        snprintf(a->unique_id, sizeof(a->unique_id), "%s", res.text);
        return true;
}

/* Has the agent carry out op: its result (or a negative errno of our own). */
static int agent_cmd(Agent *a, int op, const char *name, uint64_t flags) {
        AgentCmd cmd = { .op = op, .flags = flags };
        AgentRes res;
        int r;

        if (a->fd < 0)
                return -ENOTCONN;
        if (name)
                snprintf(cmd.name, sizeof(cmd.name), "%s", name);
        if (send(a->fd, &cmd, sizeof(cmd), MSG_NOSIGNAL) != (ssize_t) sizeof(cmd))
                return -errno;
        r = agent_read(a, &res);
        return r < 0 ? r : res.r;
}

static int agent_request(Agent *a, const char *name, uint64_t flags) {
        return agent_cmd(a, AGENT_REQUEST, name, flags);
}

static int agent_release(Agent *a, const char *name) {
        return agent_cmd(a, AGENT_RELEASE, name, 0);
}

/* Ends the agent: cleanly (disconnecting) or with SIGKILL. Its exit status. */
static int agent_stop(Agent *a, bool kill_it) {
        int status = -ESRCH;

        if (a->pid > 0) {
                if (kill_it || agent_cmd(a, AGENT_QUIT, NULL, 0) < 0)
                        (void) kill(a->pid, SIGKILL);
                status = test_child_wait(a->pid, CHILD_TIMEOUT_MS);
                a->pid = -1;
        }
        if (a->fd >= 0)
                close(a->fd);
        a->fd = -1;
        return status;
}

/* ---- The watcher: events, listings and calls from the test process. */

typedef struct OwnerChange {
        char name[256];
        char old_owner[ID_MAX];
        char new_owner[ID_MAX];
} OwnerChange;

typedef struct Watcher {
        bus_client *c;
        bus_slot *sub;
        OwnerChange events[32];
        unsigned n;
        unsigned bad;
} Watcher;

static int watcher_cb(bus_message *m, void *userdata) {
        Watcher *w = userdata;
        Bus__NameOwnerChanged *ev = NULL;
        char topic[300];

        if (bus_message_read_protobuf(m, &bus__name_owner_changed__descriptor,
                                      (ProtobufCMessage **) &ev) < 0) {
                tap_diag("event on %s does not decode", bus_message_get_topic(m) ?: "?");
                w->bad++;
                return 0;
        }
        snprintf(topic, sizeof(topic), "bus.name.%s", ev->name);
        if (!streq_null(bus_message_get_topic(m), topic) ||
            !streq_null(bus_message_get_sender(m), "bus")) {
                tap_diag("event for %s on topic %s from %s", ev->name,
                         bus_message_get_topic(m) ?: "?", bus_message_get_sender(m) ?: "?");
                w->bad++;
        }
        if (w->n < N_ELEMENTS(w->events)) {
                OwnerChange *e = &w->events[w->n];

                snprintf(e->name, sizeof(e->name), "%s", ev->name);
                snprintf(e->old_owner, sizeof(e->old_owner), "%s", ev->old_owner);
                snprintf(e->new_owner, sizeof(e->new_owner), "%s", ev->new_owner);
        }
        w->n++;
        bus__name_owner_changed__free_unpacked(ev, NULL);
        return 0;
}

static bool watcher_open(Watcher *w, const char *pattern) {
        *w = (Watcher){};
        return bus_client_open(&w->c, busd.address) >= 0 &&
               bus_client_subscribe(w->c, &w->sub, pattern, NULL, 0, watcher_cb, w) >= 0;
}

static void watcher_close(Watcher *w) {
        bus_slot_unref(w->sub);
        bus_client_unref(w->c);
        *w = (Watcher){};
}

/* Dispatches every event the broker sent before it answered a Ping: each
 * event caused by something that finished before now. */
static bool watcher_sync(Watcher *w) {
        bus_error e = BUS_ERROR_NULL;
        int r;

        r = bus_client_call_method(w->c, "bus", "Ping", NULL, 0, CALL_TIMEOUT, &e, NULL);
        if (r < 0)
                tap_diag("Ping: %s: %s", e.name ?: strerror(-r), e.message ?: "");
        bus_error_free(&e);
        while (bus_client_process(w->c) > 0)
                ;
        return r >= 0;
}

/* Waits until n events arrived in all. */
static bool watcher_wait(Watcher *w, unsigned n) {
        uint64_t deadline = mono_usec() + EVENT_TIMEOUT_MS * 1000ULL;

        while (w->n < n) {
                uint64_t now = mono_usec();
                int r = bus_client_process(w->c);

                if (r < 0)
                        return false;
                if (r > 0)
                        continue;
                if (now >= deadline)
                        return false;
                if (bus_client_wait(w->c, deadline - now) < 0)
                        return false;
        }
        return true;
}

/* The events so far must be exactly expected[0..n). */
static bool events_are(Watcher *w, const OwnerChange *expected, unsigned n, const char *step) {
        bool ok = watcher_sync(w) && w->n == n && w->bad == 0;

        for (unsigned i = 0; i < w->n && i < N_ELEMENTS(w->events); i++) {
                const OwnerChange *g = &w->events[i];
                bool same = i < n && strcmp(g->name, expected[i].name) == 0 &&
                            strcmp(g->old_owner, expected[i].old_owner) == 0 &&
                            strcmp(g->new_owner, expected[i].new_owner) == 0;

                if (!same) {
                        tap_diag("%s: event %u: %s: \"%s\" -> \"%s\", expected %s", step, i,
                                 g->name, g->old_owner, g->new_owner,
                                 i < n ? "another" : "none");
                        ok = false;
                }
        }
        if (w->n != n)
                tap_diag("%s: %u events, expected %u", step, w->n, n);
        return ok;
}

/* ListNames: whether name is listed with this owner and queue (owner NULL:
 * not listed at all). */
static bool listed_as(bus_client *c, const char *name, const char *owner,
                      const char *const *queued, size_t n_queued, const char *step) {
        Bus__ListNamesRequest req = BUS__LIST_NAMES_REQUEST__INIT;
        Bus__ListNamesReply *reply = NULL;
        const Bus__NameInfo *info = NULL;
        bool ok = true;
        int r;

        r = bus_client_call_protobuf(c, "bus", "ListNames", &req.base,
                                     &bus__list_names_reply__descriptor, CALL_TIMEOUT, NULL,
                                     (ProtobufCMessage **) &reply);
        if (r < 0) {
                tap_diag("%s: ListNames: %s", step, strerror(-r));
                return false;
        }
        for (size_t i = 0; i < reply->n_names; i++)
                if (strcmp(reply->names[i]->name, name) == 0) {
                        if (info) {
                                tap_diag("%s: %s listed twice", step, name);
                                ok = false;
                        }
                        info = reply->names[i];
                }
        if (!owner) {
                if (info) {
                        tap_diag("%s: %s listed (owner %s), expected no owner", step, name,
                                 info->owner);
                        ok = false;
                }
        } else if (!info) {
                tap_diag("%s: %s not listed, expected owner %s", step, name, owner);
                ok = false;
        } else {
                if (strcmp(info->owner, owner) != 0) {
                        tap_diag("%s: %s owned by %s, expected %s", step, name, info->owner, owner);
                        ok = false;
                }
                if (info->n_queued != n_queued) {
                        tap_diag("%s: %s has %zu queued, expected %zu", step, name,
                                 info->n_queued, n_queued);
                        ok = false;
                }
                for (size_t i = 0; i < info->n_queued && i < n_queued; i++)
                        if (strcmp(info->queued[i], queued[i]) != 0) {
                                tap_diag("%s: %s queue[%zu] is %s, expected %s", step, name, i,
                                         info->queued[i], queued[i]);
                                ok = false;
                        }
        }
        bus__list_names_reply__free_unpacked(reply, NULL);
        return ok;
}

/* GetNameOwner, and where a request to the name goes, must agree with owner
 * (NULL: no owner, so both fail with NoOwner). */
static bool owner_is(bus_client *c, const char *name, const char *owner, const char *step) {
        Bus__GetNameOwnerRequest req = BUS__GET_NAME_OWNER_REQUEST__INIT;
        Bus__GetNameOwnerReply *reply = NULL;
        bus_message *who = NULL;
        bus_error e = BUS_ERROR_NULL;
        const void *data;
        size_t size;
        bool ok = true;
        int r;

        req.name = (char *) name;
        r = bus_client_call_protobuf(c, "bus", "GetNameOwner", &req.base,
                                     &bus__get_name_owner_reply__descriptor, CALL_TIMEOUT, &e,
                                     (ProtobufCMessage **) &reply);
        if (owner) {
                if (r < 0 || strcmp(reply->owner, owner) != 0) {
                        tap_diag("%s: GetNameOwner(%s): %s, expected %s", step, name,
                                 r < 0 ? (e.name ?: strerror(-r)) : reply->owner, owner);
                        ok = false;
                }
        } else if (r != -ENXIO || !bus_error_has_name(&e, BUS_ERROR_NO_OWNER) || !e.message ||
                   !e.message[0]) {
                tap_diag("%s: GetNameOwner(%s): %d %s, expected NoOwner", step, name, r,
                         e.name ?: (reply ? reply->owner : ""));
                ok = false;
        }
        if (reply)
                bus__get_name_owner_reply__free_unpacked(reply, NULL);
        bus_error_free(&e);

        r = bus_client_call_method(c, name, "WhoAmI", NULL, 0, CALL_TIMEOUT, &e, &who);
        if (owner) {
                if (r < 0 || bus_message_get_payload(who, &data, &size) < 0 ||
                    size != strlen(owner) || memcmp(data, owner, size) != 0 ||
                    !streq_null(bus_message_get_sender(who), owner)) {
                        tap_diag("%s: a request to %s did not reach %s: %s", step, name, owner,
                                 r < 0 ? (e.name ?: strerror(-r)) : "another answered");
                        ok = false;
                }
        } else if (r != -ENXIO || !bus_error_has_name(&e, BUS_ERROR_NO_OWNER)) {
                tap_diag("%s: a request to %s: %d %s, expected NoOwner", step, name, r,
                         e.name ?: "(reply)");
                ok = false;
        }
        bus_message_unref(who);
        bus_error_free(&e);
        return ok;
}

static void expect_change(OwnerChange *list, unsigned *n, const char *name, const char *old_owner,
                          const char *new_owner) {
        OwnerChange *e = &list[(*n)++];

        snprintf(e->name, sizeof(e->name), "%s", name);
        snprintf(e->old_owner, sizeof(e->old_owner), "%s", old_owner);
        snprintf(e->new_owner, sizeof(e->new_owner), "%s", new_owner);
}

/* ---- Departures: bus.peer.disconnected events. */

typedef struct Departures {
        char ids[64][ID_MAX];
        unsigned n;
} Departures;

static int departure_cb(bus_message *m, void *userdata) {
        Departures *d = userdata;
        Bus__PeerEvent *ev = NULL;

        if (bus_message_read_protobuf(m, &bus__peer_event__descriptor,
                                      (ProtobufCMessage **) &ev) < 0)
                return 0;
        if (d->n < N_ELEMENTS(d->ids))
                snprintf(d->ids[d->n++], ID_MAX, "%s", ev->unique_id);
        bus__peer_event__free_unpacked(ev, NULL);
        return 0;
}

static bool departed(const Departures *d, const char *id) {
        for (unsigned i = 0; i < d->n; i++)
                if (strcmp(d->ids[i], id) == 0)
                        return true;
        return false;
}

/* Processes c until the broker announced that id disconnected. */
static bool wait_departure(bus_client *c, const Departures *d, const char *id) {
        uint64_t deadline = mono_usec() + EVENT_TIMEOUT_MS * 1000ULL;

        while (!departed(d, id)) {
                uint64_t now = mono_usec();
                int r = bus_client_process(c);

                if (r < 0)
                        return false;
                if (r > 0)
                        continue;
                if (now >= deadline)
                        return false;
                if (bus_client_wait(c, deadline - now) < 0)
                        return false;
        }
        return true;
}

/* ---- Cases. */

#define NAME "org.example.Names.Contested"

static void test_ownership_events_and_routing(void) {
        Agent A, B, C, D;
        Watcher w = {};
        OwnerChange expected[16];
        unsigned n_expected = 0;
        bool started;

        started = agent_start(&A, 'A', busd.address) & agent_start(&B, 'B', busd.address) &
                  agent_start(&C, 'C', busd.address) & agent_start(&D, 'D', busd.address);
        if (!tap_check(started))
                goto finish;
        tap_check(watcher_open(&w, "bus.name.>"));
        if (!w.c)
                goto finish;
        tap_check(owner_is(w.c, NAME, NULL, "before"));
        tap_check(listed_as(w.c, NAME, NULL, NULL, 0, "before"));

        /* A takes the free name. */
        tap_check_int(agent_request(&A, NAME, 0), BUS_NAME_PRIMARY_OWNER);
        expect_change(expected, &n_expected, NAME, "", A.unique_id);
        tap_check(events_are(&w, expected, n_expected, "A requests"));
        tap_check(listed_as(w.c, NAME, A.unique_id, NULL, 0, "A requests"));
        tap_check(owner_is(w.c, NAME, A.unique_id, "A requests"));

        /* B queues; C does not want to; A asks again. No owner change. */
        tap_check_int(agent_request(&B, NAME, 0), BUS_NAME_IN_QUEUE);
        tap_check(listed_as(w.c, NAME, A.unique_id, (const char *[]){ B.unique_id }, 1,
                            "B queues"));
        tap_check_int(agent_request(&C, NAME, BUS_NAME_DO_NOT_QUEUE), BUS_NAME_EXISTS);
        tap_check_int(agent_request(&A, NAME, 0), BUS_NAME_ALREADY_OWNER);
        tap_check(events_are(&w, expected, n_expected, "B, C and A request"));
        tap_check(listed_as(w.c, NAME, A.unique_id, (const char *[]){ B.unique_id }, 1,
                            "C refused"));
        tap_check(owner_is(w.c, NAME, A.unique_id, "B, C and A request"));

        /* B tries to take over, but A did not allow it: B stays queued. */
        tap_check_int(agent_request(&B, NAME, BUS_NAME_REPLACE_EXISTING), BUS_NAME_IN_QUEUE);
        tap_check(events_are(&w, expected, n_expected, "B replaces without permission"));
        tap_check(listed_as(w.c, NAME, A.unique_id, (const char *[]){ B.unique_id }, 1,
                            "B replaces without permission"));
        tap_check(owner_is(w.c, NAME, A.unique_id, "B replaces without permission"));

        /* A allows replacement; D takes over, A goes to the head of the queue. */
        tap_check_int(agent_request(&A, NAME, BUS_NAME_ALLOW_REPLACEMENT), BUS_NAME_ALREADY_OWNER);
        tap_check(events_are(&w, expected, n_expected, "A allows replacement"));
        tap_check_int(agent_request(&D, NAME, BUS_NAME_REPLACE_EXISTING), BUS_NAME_PRIMARY_OWNER);
        expect_change(expected, &n_expected, NAME, A.unique_id, D.unique_id);
        tap_check(events_are(&w, expected, n_expected, "D replaces A"));
        tap_check(listed_as(w.c, NAME, D.unique_id, (const char *[]){ A.unique_id, B.unique_id },
                            2, "D replaces A"));
        tap_check(owner_is(w.c, NAME, D.unique_id, "D replaces A"));

        /* D releases: the head of the queue, A, owns it again. */
        tap_check_int(agent_release(&D, NAME), BUS_NAME_RELEASED);
        expect_change(expected, &n_expected, NAME, D.unique_id, A.unique_id);
        tap_check(events_are(&w, expected, n_expected, "D releases"));
        tap_check(listed_as(w.c, NAME, A.unique_id, (const char *[]){ B.unique_id }, 1,
                            "D releases"));
        tap_check(owner_is(w.c, NAME, A.unique_id, "D releases"));
        tap_check_int(agent_release(&D, NAME), BUS_NAME_NOT_OWNER);
        tap_check_int(agent_release(&C, NAME), BUS_NAME_NOT_OWNER);

        /* C joins the queue and leaves it again: the queue changes, the owner
         * does not, so no event. */
        tap_check_int(agent_request(&C, NAME, 0), BUS_NAME_IN_QUEUE);
        tap_check(listed_as(w.c, NAME, A.unique_id, (const char *[]){ B.unique_id, C.unique_id },
                            2, "C queues"));
        tap_check_int(agent_release(&C, NAME), BUS_NAME_RELEASED);
        tap_check(events_are(&w, expected, n_expected, "C leaves the queue"));
        tap_check(listed_as(w.c, NAME, A.unique_id, (const char *[]){ B.unique_id }, 1,
                            "C leaves the queue"));
        tap_check_int(agent_release(&C, NAME), BUS_NAME_NOT_OWNER);
        tap_check_int(agent_release(&C, "org.example.Names.Nobody"), BUS_NAME_NON_EXISTENT);

        /* A's process dies: B, next in the queue, becomes the owner. */
        tap_check_int(agent_stop(&A, true), 128 + SIGKILL);
        expect_change(expected, &n_expected, NAME, A.unique_id, B.unique_id);
        tap_check(watcher_wait(&w, n_expected));
        tap_check(events_are(&w, expected, n_expected, "A dies"));
        tap_check(listed_as(w.c, NAME, B.unique_id, NULL, 0, "A dies"));
        tap_check(owner_is(w.c, NAME, B.unique_id, "A dies"));

        /* B leaves too: nobody owns the name, and it is gone. */
        tap_check_int(agent_stop(&B, false), 0);
        expect_change(expected, &n_expected, NAME, B.unique_id, "");
        tap_check(watcher_wait(&w, n_expected));
        tap_check(events_are(&w, expected, n_expected, "B leaves"));
        tap_check(listed_as(w.c, NAME, NULL, NULL, 0, "B leaves"));
        tap_check(owner_is(w.c, NAME, NULL, "B leaves"));

        /* C and D never owned it: their leaving changes nothing. */
        tap_check_int(agent_stop(&C, false), 0);
        tap_check_int(agent_stop(&D, false), 0);
        tap_check(events_are(&w, expected, n_expected, "C and D leave"));

finish:
        if (!started)
                tap_diag("not every agent started");
        (void) agent_stop(&A, true);
        (void) agent_stop(&B, true);
        (void) agent_stop(&C, true);
        (void) agent_stop(&D, true);
        watcher_close(&w);
}

#define NAME2 "org.example.Names.Replaceable"

/* An owner that allowed replacement but asked never to be queued loses the
 * name when replaced; DO_NOT_QUEUE takes a waiting client out of the queue;
 * a waiting client that dies leaves the queue without any event. */
static void test_replacement_and_queue_departures(void) {
        Agent E, F, G;
        Watcher w = {};
        Departures gone = {};
        bus_slot *gone_sub = NULL;
        OwnerChange expected[8];
        unsigned n_expected = 0;
        bool started;

        started = agent_start(&E, 'E', busd.address) & agent_start(&F, 'F', busd.address) &
                  agent_start(&G, 'G', busd.address);
        if (!tap_check(started))
                goto finish;
        tap_check(watcher_open(&w, "bus.name.>"));
        if (!w.c)
                goto finish;
        tap_check(bus_client_subscribe(w.c, &gone_sub, "bus.peer.disconnected", NULL, 0,
                                       departure_cb, &gone) >= 0);

        tap_check_int(agent_request(&E, NAME2, BUS_NAME_ALLOW_REPLACEMENT | BUS_NAME_DO_NOT_QUEUE),
                      BUS_NAME_PRIMARY_OWNER);
        expect_change(expected, &n_expected, NAME2, "", E.unique_id);
        tap_check_int(agent_request(&G, NAME2, 0), BUS_NAME_IN_QUEUE);
        tap_check(events_are(&w, expected, n_expected, "E owns, G queues"));
        tap_check(listed_as(w.c, NAME2, E.unique_id, (const char *[]){ G.unique_id }, 1,
                            "E owns, G queues"));

        /* F replaces E, which does not queue: E is out, G still waits. */
        tap_check_int(agent_request(&F, NAME2, BUS_NAME_REPLACE_EXISTING), BUS_NAME_PRIMARY_OWNER);
        expect_change(expected, &n_expected, NAME2, E.unique_id, F.unique_id);
        tap_check(events_are(&w, expected, n_expected, "F replaces E"));
        tap_check(listed_as(w.c, NAME2, F.unique_id, (const char *[]){ G.unique_id }, 1,
                            "F replaces E"));
        tap_check(owner_is(w.c, NAME2, F.unique_id, "F replaces E"));
        tap_check_int(agent_release(&E, NAME2), BUS_NAME_NOT_OWNER);

        /* G asks again, not wanting to queue: it leaves the queue. */
        tap_check_int(agent_request(&G, NAME2, BUS_NAME_DO_NOT_QUEUE), BUS_NAME_EXISTS);
        tap_check(listed_as(w.c, NAME2, F.unique_id, NULL, 0, "G gives up"));
        tap_check_int(agent_release(&G, NAME2), BUS_NAME_NOT_OWNER);

        /* G queues again and dies: the queue empties, the owner stays. */
        tap_check_int(agent_request(&G, NAME2, 0), BUS_NAME_IN_QUEUE);
        tap_check(listed_as(w.c, NAME2, F.unique_id, (const char *[]){ G.unique_id }, 1,
                            "G queues again"));
        tap_check_int(agent_stop(&G, true), 128 + SIGKILL);
        tap_check(wait_departure(w.c, &gone, G.unique_id));
        tap_check(events_are(&w, expected, n_expected, "G dies"));
        tap_check(listed_as(w.c, NAME2, F.unique_id, NULL, 0, "G dies"));
        tap_check(owner_is(w.c, NAME2, F.unique_id, "G dies"));

        /* E, which holds nothing now, leaves quietly; F's leaving frees the name. */
        tap_check_int(agent_stop(&E, false), 0);
        tap_check(wait_departure(w.c, &gone, E.unique_id));
        tap_check(events_are(&w, expected, n_expected, "E leaves"));
        tap_check_int(agent_stop(&F, false), 0);
        expect_change(expected, &n_expected, NAME2, F.unique_id, "");
        tap_check(watcher_wait(&w, n_expected));
        tap_check(events_are(&w, expected, n_expected, "F leaves"));
        tap_check(listed_as(w.c, NAME2, NULL, NULL, 0, "F leaves"));
        tap_check(owner_is(w.c, NAME2, NULL, "F leaves"));

finish:
        (void) agent_stop(&E, true);
        (void) agent_stop(&F, true);
        (void) agent_stop(&G, true);
        bus_slot_unref(gone_sub);
        watcher_close(&w);
}

/* RequestName through the broker directly, bypassing libbus's own checks. */
static int raw_request_name(bus_client *c, const char *name, bus_error *e) {
        Bus__RequestNameRequest req = BUS__REQUEST_NAME_REQUEST__INIT;
        Bus__RequestNameReply *reply = NULL;
        int r;

        req.name = (char *) name;
        r = bus_client_call_protobuf(c, "bus", "RequestName", &req.base,
                                     &bus__request_name_reply__descriptor, CALL_TIMEOUT, e,
                                     (ProtobufCMessage **) &reply);
        if (r >= 0) {
                r = reply->result;
                bus__request_name_reply__free_unpacked(reply, NULL);
        }
        return r;
}

static int raw_release_name(bus_client *c, const char *name, bus_error *e) {
        Bus__ReleaseNameRequest req = BUS__RELEASE_NAME_REQUEST__INIT;
        Bus__ReleaseNameReply *reply = NULL;
        int r;

        req.name = (char *) name;
        r = bus_client_call_protobuf(c, "bus", "ReleaseName", &req.base,
                                     &bus__release_name_reply__descriptor, CALL_TIMEOUT, e,
                                     (ProtobufCMessage **) &reply);
        if (r >= 0) {
                r = reply->result;
                bus__release_name_reply__free_unpacked(reply, NULL);
        }
        return r;
}

static void test_invalid_names(void) {
        char too_long[257], longest[256], own[ID_MAX] = "";
        const char *invalid[] = {
                "org",          "bus",          "1org.example", "org.1example", "org..example",
                ".org.example", "org.example.", "org.ex ample", "org.ex/ample", "org.exämple",
                "org.example*", ":1.5",         ":1.99999",     too_long,       own,
        };
        static const char *const reserved[] = { "bus.something", "bus.name.Foo" };
        bus_client *c = NULL;
        const char *id = NULL;

        /* 256 bytes: one too many; 255 bytes: the longest allowed. */
        memset(too_long, 'a', sizeof(too_long) - 1);
        too_long[0] = 'o', too_long[1] = '.';
        too_long[sizeof(too_long) - 1] = '\0';
        memcpy(longest, too_long, sizeof(longest) - 1);
        longest[sizeof(longest) - 1] = '\0';

        tap_check(bus_client_open(&c, busd.address) >= 0);
        if (!c)
                return;
        tap_check(bus_client_get_unique_id(c, &id) >= 0);
        snprintf(own, sizeof(own), "%s", id ?: ":1.1");

        for (size_t i = 0; i < N_ELEMENTS(invalid); i++) {
                bus_error e = BUS_ERROR_NULL;
                int r;

                /* libbus refuses them itself... */
                r = bus_client_request_name(c, invalid[i], 0);
                if (!tap_check_int(r, -EINVAL))
                        tap_diag("request of \"%.40s\" (%zu bytes)", invalid[i],
                                 strlen(invalid[i]));
                tap_check_int(bus_client_release_name(c, invalid[i]), -EINVAL);
                /* ...and so does the broker. */
                r = raw_request_name(c, invalid[i], &e);
                if (!tap_check_int(r, -EINVAL) ||
                    !tap_check(bus_error_has_name(&e, BUS_ERROR_INVALID_ARGS)))
                        tap_diag("broker, request of \"%.40s\" (%zu bytes): %s: %s", invalid[i],
                                 strlen(invalid[i]), e.name ?: "(accepted)", e.message ?: "");
                tap_check(e.message && e.message[0]);
                bus_error_free(&e);
                r = raw_release_name(c, invalid[i], &e);
                tap_check_int(r, -EINVAL);
                tap_check(bus_error_has_name(&e, BUS_ERROR_INVALID_ARGS));
                bus_error_free(&e);
        }

        for (size_t i = 0; i < N_ELEMENTS(reserved); i++) {
                bus_error e = BUS_ERROR_NULL;

                tap_check_int(bus_client_request_name(c, reserved[i], 0), -EACCES);
                tap_check_int(raw_request_name(c, reserved[i], &e), -EACCES);
                tap_check(bus_error_has_name(&e, BUS_ERROR_ACCESS_DENIED));
                tap_check(e.message && e.message[0]);
                bus_error_free(&e);
        }

        /* None of them was registered; the longest valid name is fine. */
        tap_check_int(bus_client_request_name(c, longest, 0), BUS_NAME_PRIMARY_OWNER);
        {
                Bus__ListNamesRequest req = BUS__LIST_NAMES_REQUEST__INIT;
                Bus__ListNamesReply *reply = NULL;

                tap_check(bus_client_call_protobuf(c, "bus", "ListNames", &req.base,
                                                   &bus__list_names_reply__descriptor,
                                                   CALL_TIMEOUT, NULL,
                                                   (ProtobufCMessage **) &reply) >= 0);
                if (reply) {
                        if (!tap_check_int(reply->n_names, 1))
                                for (size_t i = 0; i < reply->n_names; i++)
                                        tap_diag("listed: %.60s", reply->names[i]->name);
                        tap_check(reply->n_names >= 1 &&
                                  strcmp(reply->names[0]->name, longest) == 0 &&
                                  strcmp(reply->names[0]->owner, own) == 0);
                        bus__list_names_reply__free_unpacked(reply, NULL);
                }
        }
        tap_check_int(bus_client_release_name(c, longest), BUS_NAME_RELEASED);
        tap_check_int(bus_client_release_name(c, longest), BUS_NAME_NON_EXISTENT);
        bus_client_unref(c);
}

/* ListPeers: every connection with its credentials, description and the
 * names it owns (not those it waits for). */

static const Bus__PeerInfo *find_peer(const Bus__ListPeersReply *reply, const char *id) {
        for (size_t i = 0; i < reply->n_peers; i++)
                if (strcmp(reply->peers[i]->unique_id, id) == 0)
                        return reply->peers[i];
        return NULL;
}

/* The peer id is listed with pid, our uid and gid, description and exactly
 * the given names (in any order). */
static bool peer_listed(const Bus__ListPeersReply *reply, const char *id, pid_t pid,
                        const char *description, const char *const *names, size_t n_names) {
        const Bus__PeerInfo *p = find_peer(reply, id);
        bool ok = true;

        if (!p) {
                tap_diag("%s not listed", id);
                return false;
        }
        if (p->pid != (uint32_t) pid || p->uid != (uint32_t) getuid() ||
            p->gid != (uint32_t) getgid()) {
                tap_diag("%s: pid %u uid %u gid %u, expected %d %u %u", id, p->pid, p->uid, p->gid,
                         (int) pid, (unsigned) getuid(), (unsigned) getgid());
                ok = false;
        }
        if (description && strcmp(p->client_name, description) != 0) {
                tap_diag("%s: described as \"%s\", expected \"%s\"", id, p->client_name,
                         description);
                ok = false;
        }
        if (p->n_names != n_names) {
                tap_diag("%s: owns %zu names, expected %zu", id, p->n_names, n_names);
                ok = false;
        }
        for (size_t i = 0; i < n_names; i++) {
                bool found = false;

                for (size_t j = 0; j < p->n_names; j++)
                        found = found || strcmp(p->names[j], names[i]) == 0;
                if (!found) {
                        tap_diag("%s: %s not among its names", id, names[i]);
                        ok = false;
                }
        }
        return ok;
}

static Bus__ListPeersReply *list_peers(bus_client *c) {
        Bus__ListPeersRequest req = BUS__LIST_PEERS_REQUEST__INIT;
        Bus__ListPeersReply *reply = NULL;

        if (bus_client_call_protobuf(c, "bus", "ListPeers", &req.base,
                                     &bus__list_peers_reply__descriptor, CALL_TIMEOUT, NULL,
                                     (ProtobufCMessage **) &reply) < 0)
                return NULL;
        return reply;
}

static void test_list_peers(void) {
        Agent P, Q;
        bus_client *c = NULL;
        bus_slot *sub = NULL;
        Departures gone = {};
        Bus__ListPeersReply *reply = NULL;
        const char *self = NULL;
        bool started;

        started = agent_start(&P, 'P', busd.address) & agent_start(&Q, 'Q', busd.address);
        if (!tap_check(started))
                goto finish;
        tap_check_int(agent_request(&P, "org.example.Peers.One", 0), BUS_NAME_PRIMARY_OWNER);
        tap_check_int(agent_request(&P, "org.example.Peers.Three", 0), BUS_NAME_PRIMARY_OWNER);
        tap_check_int(agent_request(&Q, "org.example.Peers.Two", 0), BUS_NAME_PRIMARY_OWNER);
        tap_check_int(agent_request(&Q, "org.example.Peers.One", 0), BUS_NAME_IN_QUEUE);

        tap_check(bus_client_new(&c) >= 0);
        tap_check(bus_client_set_description(c, "test-names") >= 0);
        tap_check(bus_client_connect(c, busd.address) >= 0);
        tap_check(bus_client_get_unique_id(c, &self) >= 0);
        tap_check(bus_client_subscribe(c, &sub, "bus.peer.disconnected", NULL, 0, departure_cb,
                                       &gone) >= 0);

        reply = list_peers(c);
        if (tap_check(reply)) {
                tap_check(peer_listed(reply, P.unique_id, P.pid, "agent-P",
                                      (const char *[]){ "org.example.Peers.One",
                                                        "org.example.Peers.Three" },
                                      2));
                tap_check(peer_listed(reply, Q.unique_id, Q.pid, "agent-Q",
                                      (const char *[]){ "org.example.Peers.Two" }, 1));
                tap_check(self && peer_listed(reply, self, getpid(), "test-names", NULL, 0));
                tap_check(find_peer(reply, self) && find_peer(reply, self)->subscriptions == 1);
                bus__list_peers_reply__free_unpacked(reply, NULL);
        }

        /* P leaves: it is no longer listed, and Q got the name it waited for. */
        tap_check_int(agent_stop(&P, false), 0);
        tap_check(wait_departure(c, &gone, P.unique_id));
        reply = list_peers(c);
        if (tap_check(reply)) {
                tap_check(!find_peer(reply, P.unique_id));
                tap_check(peer_listed(reply, Q.unique_id, Q.pid, "agent-Q",
                                      (const char *[]){ "org.example.Peers.Two",
                                                        "org.example.Peers.One" },
                                      2));
                bus__list_peers_reply__free_unpacked(reply, NULL);
        }
        tap_check_int(agent_stop(&Q, false), 0);
finish:
        (void) agent_stop(&P, true);
        (void) agent_stop(&Q, true);
        bus_slot_unref(sub);
        bus_client_unref(c);
}

static void test_broker_exits_cleanly(void) {
        test_busd_check_clean_exit(&busd);
}

int main(void) {
        tap_init();
        signal(SIGPIPE, SIG_IGN);
        test_busd_start_or_bail(&busd, NULL);
        TAP_RUN(test_ownership_events_and_routing);
        TAP_RUN(test_replacement_and_queue_departures);
        TAP_RUN(test_invalid_names);
        TAP_RUN(test_list_peers);
        TAP_RUN(test_broker_exits_cleanly);
        return tap_done();
}
