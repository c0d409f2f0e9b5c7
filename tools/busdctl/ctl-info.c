/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The commands that look at the bus: status, list, names, subscriptions,
 * stats, wait, and the completion helper. Each asks the broker's "bus"
 * service and prints a table or JSON.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libbus/topic.h"
#include "tools/busdctl/busdctl.h"

#define BROKER_CALL(ctl, method, type, ret)                                                     \
        ({                                                                                      \
                Bus__##type##Request _req;                                                      \
                bus__##method##_request__init(&_req);                                           \
                ctl_call_broker(ctl, #type, &_req.base, &bus__##method##_reply__descriptor,     \
                                (ProtobufCMessage **) (ret));                                   \
        })

static int get_stats(Ctl *ctl, Bus__GetStatsReply **ret) {
        return BROKER_CALL(ctl, get_stats, GetStats, ret);
}

static char *u64_string(uint64_t v) {
        char *s = NULL;
        (void) asprintf(&s, "%" PRIu64, v);
        return s;
}

int cmd_status(Ctl *ctl, int argc, char **argv) {
        _cleanup_(protobuf_c_message_free_unpackedp) ProtobufCMessage *pb = NULL;
        const char *self = NULL;
        bus_client *bus;
        int r;

        r = get_stats(ctl, (Bus__GetStatsReply **) &pb);
        if (r < 0)
                return EXIT_FAILED;
        const Bus__GetStatsReply *s = (const Bus__GetStatsReply *) pb;
        (void) ctl_bus(ctl, &bus);
        (void) bus_client_get_unique_id(bus, &self);

        if (ctl->json) {
                _cleanup_(json_object_putp) json_object *o = json_object_new_object();
                if (!o)
                        return ctl_error(-ENOMEM, "status");
                json_object_object_add(o, "broker_version", json_object_new_string(s->broker_version));
                json_object_object_add(o, "uptime_usec", json_object_new_uint64(s->uptime_usec));
                json_object_object_add(o, "peers", json_object_new_uint64(s->peers));
                json_object_object_add(o, "peers_total", json_object_new_uint64(s->peers_total));
                json_object_object_add(o, "retained", json_object_new_uint64(s->retained));
                json_object_object_add(o, "deliveries", json_object_new_uint64(s->deliveries));
                json_object_object_add(o, "names", json_object_new_uint64(s->names));
                json_object_object_add(o, "subscriptions", json_object_new_uint64(s->subscriptions));
                json_object_object_add(o, "messages_routed", json_object_new_uint64(s->messages_routed));
                json_object_object_add(o, "dropped", json_object_new_uint64(s->dropped));
                json_object_object_add(o, "monitors", json_object_new_uint64(s->monitors));
                if (self)
                        json_object_object_add(o, "unique_id", json_object_new_string(self));
                json_print(ctl, o, false);
                return 0;
        }

        _cleanup_free_ char *uptime = format_duration(s->uptime_usec);
        printf("Broker:          busd %s\n", s->broker_version);
        printf("Uptime:          %s\n", uptime ? uptime : "-");
        printf("Peers:           %" PRIu32 " (%" PRIu64 " since start)\n", s->peers, s->peers_total);
        printf("Names:           %" PRIu32 "\n", s->names);
        printf("Subscriptions:   %" PRIu32 " (%" PRIu32 " retained messages)\n", s->subscriptions,
               s->retained);
        printf("Messages routed: %" PRIu64 " (%" PRIu64 " deliveries)\n", s->messages_routed,
               s->deliveries);
        printf("Dropped:         %" PRIu64 "%s\n", s->dropped,
               s->dropped ? " (receivers that fell behind)" : "");
        if (s->monitors)
                printf("Monitors:        %" PRIu32 "\n", s->monitors);
        if (self)
                printf("This connection: %s\n", self);
        return 0;
}

/* Every counter, as the broker names them. */
int cmd_stats(Ctl *ctl, int argc, char **argv) {
        _cleanup_(protobuf_c_message_free_unpackedp) ProtobufCMessage *pb = NULL;
        _cleanup_(json_object_putp) json_object *j = NULL;
        int r;

        r = get_stats(ctl, (Bus__GetStatsReply **) &pb);
        if (r < 0)
                return EXIT_FAILED;
        /* The reply's own descriptor lists the fields: print them all, so a
         * counter added to the broker shows up here without a change. */
        const ProtobufCMessageDescriptor *d = pb->descriptor;
        j = json_object_new_object();
        if (!j)
                return ctl_error(-ENOMEM, "stats");
        for (unsigned i = 0; i < d->n_fields; i++) {
                const ProtobufCFieldDescriptor *f = &d->fields[i];
                const void *v = (const char *) pb + f->offset;
                json_object *value;
                switch (f->type) {
                case PROTOBUF_C_TYPE_STRING:
                        value = json_object_new_string(*(char *const *) v);
                        break;
                case PROTOBUF_C_TYPE_UINT32:
                        value = json_object_new_uint64(*(const uint32_t *) v);
                        break;
                case PROTOBUF_C_TYPE_UINT64:
                        value = json_object_new_uint64(*(const uint64_t *) v);
                        break;
                default:
                        continue;
                }
                json_object_object_add(j, f->name, value);
        }
        if (ctl->json) {
                json_print(ctl, j, false);
                return 0;
        }
        json_object_object_foreach(j, key, val) {
                printf("%-18s %s\n", key, json_object_get_string(val));
        }
        return 0;
}

static char *join(char *const *strings, size_t n, const char *sep) {
        size_t len = 1;
        for (size_t i = 0; i < n; i++)
                len += strlen(strings[i]) + strlen(sep);
        char *s = malloc(len), *p = s;
        if (!s)
                return NULL;
        *s = '\0';
        for (size_t i = 0; i < n; i++)
                p = stpcpy(stpcpy(p, i ? sep : ""), strings[i]);
        return s;
}

static json_object *json_strings(char *const *strings, size_t n) {
        json_object *a = json_object_new_array();
        for (size_t i = 0; a && i < n; i++)
                json_object_array_add(a, json_object_new_string(strings[i]));
        return a;
}

int cmd_list(Ctl *ctl, int argc, char **argv) {
        _cleanup_(protobuf_c_message_free_unpackedp) ProtobufCMessage *pb = NULL;
        _cleanup_(table_freep) Table *t = NULL;
        int r;

        r = BROKER_CALL(ctl, list_peers, ListPeers, &pb);
        if (r < 0)
                return EXIT_FAILED;
        const Bus__ListPeersReply *reply = (const Bus__ListPeersReply *) pb;

        if (ctl->json) {
                _cleanup_(json_object_putp) json_object *a = json_object_new_array();
                for (size_t i = 0; a && i < reply->n_peers; i++) {
                        const Bus__PeerInfo *p = reply->peers[i];
                        _cleanup_free_ char *cmdline = proc_cmdline(p->pid);
                        json_object *o = json_object_new_object();
                        json_object_object_add(o, "unique_id", json_object_new_string(p->unique_id));
                        json_object_object_add(o, "names", json_strings(p->names, p->n_names));
                        json_object_object_add(o, "uid", json_object_new_uint64(p->uid));
                        json_object_object_add(o, "gid", json_object_new_uint64(p->gid));
                        json_object_object_add(o, "pid", json_object_new_uint64(p->pid));
                        json_object_object_add(o, "description", json_object_new_string(p->client_name));
                        json_object_object_add(o, "subscriptions", json_object_new_uint64(p->subscriptions));
                        json_object_object_add(o, "connected_usec", json_object_new_uint64(p->connected_usec));
                        json_object_object_add(o, "monitor", json_object_new_boolean(p->monitor));
                        json_object_object_add(o, "command_line",
                                               cmdline ? json_object_new_string(cmdline) : NULL);
                        json_object_array_add(a, o);
                }
                if (!a)
                        return ctl_error(-ENOMEM, "list");
                json_print(ctl, a, false);
                return 0;
        }

        r = table_new(&t, 7, "UNIQUE ID", "PID", "UID", "NAMES", "SUBS", "DESCRIPTION",
                      "COMMAND");
        for (size_t i = 0; r >= 0 && i < reply->n_peers; i++) {
                const Bus__PeerInfo *p = reply->peers[i];
                _cleanup_free_ char *pid = u64_string(p->pid), *uid = u64_string(p->uid),
                                    *subs = u64_string(p->subscriptions),
                                    *names = join(p->names, p->n_names, ","),
                                    *cmdline = proc_cmdline(p->pid), *desc = NULL;
                if (p->monitor)
                        (void) asprintf(&desc, "%s (monitor)", p->client_name);
                r = table_add(t, p->unique_id, pid, uid, names, subs, desc ? desc : p->client_name,
                              cmdline);
        }
        if (r < 0)
                return ctl_error(r, "list");
        table_print(t, ctl, stdout);
        return 0;
}

int cmd_names(Ctl *ctl, int argc, char **argv) {
        _cleanup_(protobuf_c_message_free_unpackedp) ProtobufCMessage *names_pb = NULL;
        _cleanup_(protobuf_c_message_free_unpackedp) ProtobufCMessage *peers_pb = NULL;
        _cleanup_(table_freep) Table *t = NULL;
        int r;

        r = BROKER_CALL(ctl, list_names, ListNames, &names_pb);
        if (r < 0)
                return EXIT_FAILED;
        r = BROKER_CALL(ctl, list_peers, ListPeers, &peers_pb);
        if (r < 0)
                return EXIT_FAILED;
        const Bus__ListNamesReply *reply = (const Bus__ListNamesReply *) names_pb;
        const Bus__ListPeersReply *peers = (const Bus__ListPeersReply *) peers_pb;

        if (ctl->json) {
                _cleanup_(json_object_putp) json_object *a = json_object_new_array();
                for (size_t i = 0; a && i < reply->n_names; i++) {
                        const Bus__NameInfo *n = reply->names[i];
                        json_object *o = json_object_new_object();
                        json_object_object_add(o, "name", json_object_new_string(n->name));
                        json_object_object_add(o, "owner", json_object_new_string(n->owner));
                        json_object_object_add(o, "queued", json_strings(n->queued, n->n_queued));
                        json_object_array_add(a, o);
                }
                if (!a)
                        return ctl_error(-ENOMEM, "names");
                json_print(ctl, a, false);
                return 0;
        }

        r = table_new(&t, 6, "NAME", "OWNER", "PID", "UID", "QUEUED", "DESCRIPTION");
        for (size_t i = 0; r >= 0 && i < reply->n_names; i++) {
                const Bus__NameInfo *n = reply->names[i];
                const Bus__PeerInfo *owner = NULL;
                for (size_t k = 0; k < peers->n_peers; k++)
                        if (strcmp(peers->peers[k]->unique_id, n->owner) == 0)
                                owner = peers->peers[k];
                _cleanup_free_ char *pid = owner ? u64_string(owner->pid) : NULL,
                                    *uid = owner ? u64_string(owner->uid) : NULL,
                                    *queued = join(n->queued, n->n_queued, ",");
                r = table_add(t, n->name, n->owner, pid, uid, queued,
                              owner ? owner->client_name : NULL);
        }
        if (r < 0)
                return ctl_error(r, "names");
        table_print(t, ctl, stdout);
        return 0;
}

int cmd_subscriptions(Ctl *ctl, int argc, char **argv) {
        _cleanup_(protobuf_c_message_free_unpackedp) ProtobufCMessage *pb = NULL;
        _cleanup_(table_freep) Table *t = NULL;
        int r;

        r = BROKER_CALL(ctl, list_subscriptions, ListSubscriptions, &pb);
        if (r < 0)
                return EXIT_FAILED;
        const Bus__ListSubscriptionsReply *reply = (const Bus__ListSubscriptionsReply *) pb;

        if (ctl->json) {
                _cleanup_(json_object_putp) json_object *a = json_object_new_array();
                for (size_t i = 0; a && i < reply->n_subscriptions; i++) {
                        const Bus__SubscriptionInfo *s = reply->subscriptions[i];
                        json_object *o = json_object_new_object();
                        json_object_object_add(o, "peer", json_object_new_string(s->peer));
                        json_object_object_add(o, "id", json_object_new_uint64(s->id));
                        json_object_object_add(o, "pattern", json_object_new_string(s->pattern));
                        if (*s->queue_group)
                                json_object_object_add(o, "queue_group",
                                                       json_object_new_string(s->queue_group));
                        json_object_array_add(a, o);
                }
                if (!a)
                        return ctl_error(-ENOMEM, "subscriptions");
                json_print(ctl, a, false);
                return 0;
        }

        r = table_new(&t, 4, "PEER", "ID", "PATTERN", "QUEUE GROUP");
        for (size_t i = 0; r >= 0 && i < reply->n_subscriptions; i++) {
                const Bus__SubscriptionInfo *s = reply->subscriptions[i];
                _cleanup_free_ char *id = u64_string(s->id);
                r = table_add(t, s->peer, id, s->pattern, s->queue_group);
        }
        if (r < 0)
                return ctl_error(r, "subscriptions");
        table_print(t, ctl, stdout);
        return 0;
}

typedef struct WaitState {
        const char *name;
        char *owner;
        bool found; /* owner is set (run_until()'s done) */
} WaitState;

static int wait_name_changed(bus_message *m, void *userdata) {
        _cleanup_(protobuf_c_message_free_unpackedp) ProtobufCMessage *pb = NULL;
        WaitState *w = userdata;

        if (bus_message_read_protobuf(m, &bus__name_owner_changed__descriptor, &pb) < 0)
                return 0;
        const Bus__NameOwnerChanged *change = (const Bus__NameOwnerChanged *) pb;
        if (strcmp(change->name, w->name) == 0 && *change->new_owner && !w->owner) {
                w->owner = strdup(change->new_owner);
                w->found = w->owner != NULL;
        }
        return 0;
}

static int wait_done(Ctl *ctl, const WaitState *w) {
        if (ctl->quiet)
                return 0;
        if (ctl->json) {
                _cleanup_(json_object_putp) json_object *o = json_object_new_object();
                json_object_object_add(o, "name", json_object_new_string(w->name));
                json_object_object_add(o, "owner", json_object_new_string(w->owner));
                json_print(ctl, o, false);
        } else
                printf("%s\n", w->owner);
        return 0;
}

/* Subscribes to the name's owner changes before asking who owns it, so an
 * owner that arrives in between is not missed. */
int cmd_wait(Ctl *ctl, int argc, char **argv) {
        _cleanup_(protobuf_c_message_free_unpackedp) ProtobufCMessage *pb = NULL;
        _cleanup_(bus_slot_unrefp) bus_slot *slot = NULL;
        _cleanup_free_ char *topic = NULL;
        Bus__GetNameOwnerRequest request = BUS__GET_NAME_OWNER_REQUEST__INIT;
        WaitState w = { .name = argv[1] };
        bus_error error = BUS_ERROR_NULL;
        bus_client *bus;
        int r;

        if (!name_is_valid_wellknown(w.name))
                return ctl_usage_error("not a well-known name: %s", w.name);
        r = ctl_bus(ctl, &bus);
        if (r < 0)
                return EXIT_FAILED;
        if (asprintf(&topic, "bus.name.%s", w.name) < 0)
                return ctl_error(-ENOMEM, "wait");
        r = bus_client_subscribe(bus, &slot, topic, NULL, BUS_SUBSCRIBE_NO_RETAINED,
                                 wait_name_changed, &w);
        if (r < 0)
                return ctl_error(r, "subscribing to %s", topic);

        request.name = (char *) w.name;
        r = bus_client_call_protobuf(bus, "bus", "GetNameOwner", &request.base,
                                     &bus__get_name_owner_reply__descriptor, 0, &error, &pb);
        if (r >= 0)
                w.owner = strdup(((const Bus__GetNameOwnerReply *) pb)->owner);
        else if (!bus_error_has_name(&error, BUS_ERROR_NO_OWNER)) {
                ctl_error(r, "GetNameOwner");
                bus_error_free(&error);
                return EXIT_FAILED;
        }
        bus_error_free(&error);

        if (!w.owner) {
                r = run_until(bus, NULL, ctl->timeout_set ? (double) ctl->timeout_usec / 1e6 : 0,
                              &w.found);
                if (r < 0)
                        return ctl_error(r, "waiting for %s", w.name);
                if (!w.owner)
                        return ctl_error(0, "timed out waiting for %s to have an owner", w.name);
        }
        r = wait_done(ctl, &w);
        free(w.owner);
        return r;
}

/* Completion candidates for the shell, one per line: "names" (well-known
 * names and unique ids, not our own), "topics" (subscribed patterns),
 * "methods NAME", "types NAME" (the types NAME's methods use). Errors print
 * nothing. */
int cmd_complete(Ctl *ctl, int argc, char **argv) {
        const char *what = argv[1];
        bus_client *bus;

        ctl->timeout_usec = 2 * BUS_USEC_PER_SEC;
        ctl->timeout_set = true;
        if (freopen("/dev/null", "w", stderr) == NULL)
                return EXIT_FAILED;
        if (strcmp(what, "names") == 0) {
                _cleanup_(protobuf_c_message_free_unpackedp) ProtobufCMessage *pb = NULL;
                if (BROKER_CALL(ctl, list_peers, ListPeers, &pb) < 0)
                        return EXIT_FAILED;
                const Bus__ListPeersReply *peers = (const Bus__ListPeersReply *) pb;
                const char *self = NULL;
                (void) bus_client_get_unique_id(ctl->bus, &self);
                for (size_t i = 0; i < peers->n_peers; i++) {
                        if (streq_ptr(peers->peers[i]->unique_id, self))
                                continue;
                        for (size_t k = 0; k < peers->peers[i]->n_names; k++)
                                printf("%s\n", peers->peers[i]->names[k]);
                        printf("%s\n", peers->peers[i]->unique_id);
                }
                printf("bus\n");
                return 0;
        }
        if (strcmp(what, "topics") == 0) {
                _cleanup_(protobuf_c_message_free_unpackedp) ProtobufCMessage *pb = NULL;
                if (BROKER_CALL(ctl, list_subscriptions, ListSubscriptions, &pb) < 0)
                        return EXIT_FAILED;
                const Bus__ListSubscriptionsReply *subs = (const Bus__ListSubscriptionsReply *) pb;
                for (size_t i = 0; i < subs->n_subscriptions; i++)
                        printf("%s\n", subs->subscriptions[i]->pattern);
                return 0;
        }
        if ((strcmp(what, "methods") == 0 || strcmp(what, "types") == 0) && argc == 3) {
                const Bus__IntrospectReply *ir;
                _cleanup_(json_object_putp) json_object *j = NULL;
                _cleanup_free_ const char **services = NULL;
                if (types_new(&ctl->types) < 0 || ctl_bus(ctl, &bus) < 0 ||
                    types_introspect(ctl, bus, argv[2], &ir) < 0)
                        return EXIT_FAILED;
                services = strv_of(ir->services, ir->n_services);
                if (!services ||
                    pb_registry_describe_json(types_registry(ctl->types), services, NULL, &j) < 0)
                        return EXIT_FAILED;
                bool methods = strcmp(what, "methods") == 0;
                json_object *list = json_object_object_get(j, methods ? "services" : "messages");
                for (size_t i = 0; i < json_object_array_length(list); i++) {
                        json_object *item = json_object_array_get_idx(list, i);
                        if (!methods) {
                                printf("%s\n", json_object_get_string(
                                                       json_object_object_get(item, "name")));
                                continue;
                        }
                        json_object *ms = json_object_object_get(item, "methods");
                        for (size_t k = 0; k < json_object_array_length(ms); k++)
                                printf("%s\n", json_object_get_string(json_object_object_get(
                                                       json_object_array_get_idx(ms, k), "name")));
                }
                return 0;
        }
        return EXIT_USAGE;
}
