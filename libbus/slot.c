/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bus_slot: one registration on a client, a tagged union of a subscription, a
 * method handler or an async call in flight.
 *
 * A slot the application asked for (ret_slot non-NULL) holds no reference on
 * the client and is only linked into the client's tables; its last unref
 * unlinks it, which unsubscribes, removes the handler or cancels the call. A
 * floating slot (ret_slot NULL) belongs to the client, which drops it when the
 * call completes or when the client goes away. When the client goes away
 * first, every slot is unlinked and keeps only its userdata.
 */
#include <errno.h>
#include <stdlib.h>

#include <libbus/bus.h>

#include "libbus/bus-internal.h"
#include "libbus/macro.h"

int slot_new(bus_client *c, SlotType type, bus_message_handler_t callback, void *userdata,
             bool floating, bus_slot **ret) {
        bus_slot *s = calloc(1, sizeof(*s));

        if (!s)
                return -ENOMEM;
        s->n_ref = 1;
        s->type = type;
        s->floating = floating;
        s->client = c;
        s->callback = callback;
        s->userdata = userdata;
        if (type == SLOT_CALL) {
                s->call.heap_idx = SIZE_MAX;
                s->call.slot = s;
        }
        *ret = s;
        return 0;
}

void slot_unlink(bus_slot *s) {
        bus_client *c = s->client;

        if (!c)
                return;
        switch (s->type) {
        case SLOT_SUBSCRIPTION:
                client_unsubscribe(c, s);
                break;
        case SLOT_METHOD:
                client_methods_unlink(c, s);
                break;
        case SLOT_CALL:
                client_pending_remove(c, &s->call);
                break;
        }
        s->client = NULL;
}

void slot_disconnect(bus_slot *s) {
        slot_unlink(s);
        if (s->floating) {
                s->floating = false;
                bus_slot_unref(s);
        }
}

static void slot_free(bus_slot *s) {
        slot_unlink(s);
        if (s->destroy)
                s->destroy(s->userdata);
        if (s->type == SLOT_METHOD) {
                free(s->method.name);
                free(s->method.method);
        }
        free(s);
}

_public_ bus_slot *bus_slot_ref(bus_slot *s) {
        if (s)
                s->n_ref++;
        return s;
}

_public_ bus_slot *bus_slot_unref(bus_slot *s) {
        if (s && --s->n_ref == 0)
                slot_free(s);
        return NULL;
}

_public_ void *bus_slot_get_userdata(bus_slot *s) {
        return s ? s->userdata : NULL;
}
