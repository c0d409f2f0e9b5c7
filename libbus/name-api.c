/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Serving: owning well-known names (requests to the broker), method handlers
 * and the reply shorthands.
 *
 * Method handlers live in a list in registration order; a request goes to the
 * most specific match (name and method, method only, name only, catch-all),
 * the earliest registered among equals. Services have a handful of handlers,
 * so a walk of the list beats any index.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <libbus/bus.h>

#include "libbus/bus-internal.h"
#include "libbus/macro.h"
#include "libbus/topic.h"

#define METHOD_MAX 255u

_public_ int bus_client_request_name(bus_client *c, const char *name, uint64_t flags) {
        Bus__RequestNameRequest req = BUS__REQUEST_NAME_REQUEST__INIT;
        Bus__RequestNameReply *reply = NULL;
        int r;

        if (!c || !name || !name_is_valid_wellknown(name) ||
            (flags & ~(BUS_NAME_ALLOW_REPLACEMENT | BUS_NAME_REPLACE_EXISTING |
                       BUS_NAME_DO_NOT_QUEUE)))
                return -EINVAL;
        r = client_check_sending(c);
        if (r < 0)
                return r;
        req.name = (char *) name;
        if (flags & BUS_NAME_ALLOW_REPLACEMENT)
                req.flags |= BUS__NAME_FLAG__NAME_FLAG_ALLOW_REPLACEMENT;
        if (flags & BUS_NAME_REPLACE_EXISTING)
                req.flags |= BUS__NAME_FLAG__NAME_FLAG_REPLACE_EXISTING;
        if (flags & BUS_NAME_DO_NOT_QUEUE)
                req.flags |= BUS__NAME_FLAG__NAME_FLAG_DO_NOT_QUEUE;
        r = client_call_broker(c, "RequestName", &req.base, &bus__request_name_reply__descriptor,
                               0, NULL, (ProtobufCMessage **) &reply);
        if (r < 0)
                return r;
        switch (reply->result) {
        case BUS__REQUEST_NAME_RESULT__REQUEST_NAME_PRIMARY_OWNER:
                r = BUS_NAME_PRIMARY_OWNER;
                break;
        case BUS__REQUEST_NAME_RESULT__REQUEST_NAME_IN_QUEUE:
                r = BUS_NAME_IN_QUEUE;
                break;
        case BUS__REQUEST_NAME_RESULT__REQUEST_NAME_EXISTS:
                r = BUS_NAME_EXISTS;
                break;
        case BUS__REQUEST_NAME_RESULT__REQUEST_NAME_ALREADY_OWNER:
                r = BUS_NAME_ALREADY_OWNER;
                break;
        default:
                r = -EPROTO;
                break;
        }
        protobuf_c_message_free_unpacked(&reply->base, NULL);
        return r;
}

_public_ int bus_client_release_name(bus_client *c, const char *name) {
        Bus__ReleaseNameRequest req = BUS__RELEASE_NAME_REQUEST__INIT;
        Bus__ReleaseNameReply *reply = NULL;
        int r;

        if (!c || !name || !name_is_valid_wellknown(name))
                return -EINVAL;
        r = client_check_sending(c);
        if (r < 0)
                return r;
        req.name = (char *) name;
        r = client_call_broker(c, "ReleaseName", &req.base, &bus__release_name_reply__descriptor,
                               0, NULL, (ProtobufCMessage **) &reply);
        if (r < 0)
                return r;
        switch (reply->result) {
        case BUS__RELEASE_NAME_RESULT__RELEASE_NAME_RELEASED:
                r = BUS_NAME_RELEASED;
                break;
        case BUS__RELEASE_NAME_RESULT__RELEASE_NAME_NON_EXISTENT:
                r = BUS_NAME_NON_EXISTENT;
                break;
        case BUS__RELEASE_NAME_RESULT__RELEASE_NAME_NOT_OWNER:
                r = BUS_NAME_NOT_OWNER;
                break;
        default:
                r = -EPROTO;
                break;
        }
        protobuf_c_message_free_unpacked(&reply->base, NULL);
        return r;
}

/* ---- Method handlers. */

_public_ int bus_client_add_method(bus_client *c, bus_slot **ret_slot, const char *name,
                                   const char *method, bus_message_handler_t handler,
                                   void *userdata) {
        _cleanup_(bus_slot_unrefp) bus_slot *s = NULL;
        int r;

        if (!c || !handler || c->freeing)
                return -EINVAL;
        if (name && !name_is_valid_wellknown(name) && !name_is_valid_unique(name))
                return -EINVAL;
        if (method && (!*method || strlen(method) > METHOD_MAX))
                return -EINVAL;
        r = slot_new(c, SLOT_METHOD, handler, userdata, !ret_slot, &s);
        if (r < 0)
                return r;
        s->client = NULL; /* not linked yet: a failure below must not unlink */
        if (name) {
                s->method.name = strdup(name);
                if (!s->method.name)
                        return -ENOMEM;
        }
        if (method) {
                s->method.method = strdup(method);
                if (!s->method.method)
                        return -ENOMEM;
        }
        s->client = c;
        s->method.prev = c->methods_last;
        if (c->methods_last)
                c->methods_last->method.next = s;
        else
                c->methods_first = s;
        c->methods_last = s;
        if (ret_slot)
                *ret_slot = s;
        TAKE_PTR(s);
        return 0;
}

void client_methods_unlink(bus_client *c, bus_slot *s) {
        if (s->method.prev)
                s->method.prev->method.next = s->method.next;
        else
                c->methods_first = s->method.next;
        if (s->method.next)
                s->method.next->method.prev = s->method.prev;
        else
                c->methods_last = s->method.prev;
        s->method.prev = s->method.next = NULL;
}

bus_slot *client_find_method(bus_client *c, const char *destination, const char *method) {
        bus_slot *best = NULL;
        int best_score = -1;

        for (bus_slot *s = c->methods_first; s; s = s->method.next) {
                int score = 0;

                if (s->method.name) {
                        if (!streq(s->method.name, destination))
                                continue;
                        score += 1;
                }
                if (s->method.method) {
                        if (!streq(s->method.method, method))
                                continue;
                        score += 2;
                }
                if (score > best_score) {
                        best = s;
                        best_score = score;
                        if (score == 3)
                                break;
                }
        }
        return best;
}

/* ---- Replies. */

static int reply_check(bus_client *c, bus_message *request) {
        if (!c || !request || !request->received || request->kind != BUS_KIND_REQUEST)
                return -EINVAL;
        if (message_is_no_reply(request))
                return -EPERM;
        if (request->replied)
                return -EALREADY;
        return 0;
}

_public_ int bus_client_reply(bus_client *c, bus_message *request, const void *data,
                              size_t size) {
        _cleanup_(bus_message_unrefp) bus_message *m = NULL;
        int r;

        r = reply_check(c, request);
        if (r < 0)
                return r;
        r = bus_message_new_reply(request, &m);
        if (r < 0)
                return r;
        r = bus_message_set_payload(m, data, size);
        if (r < 0)
                return r;
        return bus_client_send(c, m, NULL);
}

_public_ int bus_client_reply_error(bus_client *c, bus_message *request, const char *name,
                                    const char *format, ...) {
        _cleanup_(bus_message_unrefp) bus_message *m = NULL;
        va_list ap;
        int r;

        r = reply_check(c, request);
        if (r < 0)
                return r;
        va_start(ap, format);
        r = message_new_error_va(request, &m, name, format, ap);
        va_end(ap);
        if (r < 0)
                return r;
        return bus_client_send(c, m, NULL);
}
