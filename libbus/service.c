/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Serving a protoc-c generated service (ProtobufCService) on a bus name.
 *
 * A binding is one method handler for (name, any method) whose userdata is
 * a ServiceBinding; the slot frees it when it goes. The binding points to
 * its client without a reference, like the slot: the handler only ever runs
 * from that client's dispatch.
 *
 * Each request served becomes a ServiceCall, the closure_data that invoke()
 * receives. It holds a reference on the request and one on the client,
 * because the implementation may complete it after invoke() returned, even
 * after the application dropped its own references; completing it (the
 * closure or bus_service_return_error()) answers the request and frees it.
 * A call the implementation never completes keeps the client alive.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include <protobuf-c/protobuf-c.h>

#include <libbus/bus.h>

#include "libbus/bus-internal.h"
#include "libbus/macro.h"
#include "libbus/topic.h"

/* Tells our closure_data from anything else handed to the public
 * functions that take one. */
#define SERVICE_CALL_MAGIC UINT64_C(0x6c69626275732d63) /* "libbus-c" */

typedef struct ServiceBinding {
        bus_client *client; /* no reference: the slot lives inside the client */
        ProtobufCService *service;
} ServiceBinding;

typedef struct ServiceCall {
        uint64_t magic;
        bus_client *client;    /* reference */
        bus_message *request;  /* reference */
        const ProtobufCMethodDescriptor *method;
} ServiceCall;

static ServiceCall *service_call_from(void *closure_data) {
        ServiceCall *call = closure_data;

        return call && call->magic == SERVICE_CALL_MAGIC ? call : NULL;
}

static void service_call_free(ServiceCall *call) {
        /* A second completion then finds no magic instead of a live call. */
        call->magic = 0;
        bus_message_unref(call->request);
        bus_client_unref(call->client);
        free(call);
}

static void service_closure(const ProtobufCMessage *output, void *closure_data) {
        ServiceCall *call = service_call_from(closure_data);
        const ProtobufCMessageDescriptor *want;
        int r = 0;

        if (!call)
                return;
        want = call->method->output;
        if (message_is_no_reply(call->request))
                ;
        else if (!output)
                r = bus_client_reply_error(call->client, call->request, BUS_ERROR_FAILED,
                                           "The method failed");
        else if (output->descriptor != want &&
                 (!output->descriptor || !streq(output->descriptor->name, want->name)))
                r = bus_client_reply_error(call->client, call->request, BUS_ERROR_FAILED,
                                           "%s returned a %s, not a %s", call->method->name,
                                           output->descriptor ? output->descriptor->name : "?",
                                           want->name);
        else
                r = bus_client_reply_protobuf(call->client, call->request, output);
        if (r < 0)
                client_log(call->client, LOG_DEBUG, "cannot answer %s from %s: %s",
                           call->method->name, call->request->env->sender, strerror(-r));
        service_call_free(call);
}

_public_ bus_message *bus_service_get_request(void *closure_data) {
        ServiceCall *call = service_call_from(closure_data);

        return call ? call->request : NULL;
}

_public_ int bus_service_return_error(void *closure_data, const char *name, const char *format,
                                      ...) {
        _cleanup_(bus_message_unrefp) bus_message *m = NULL;
        ServiceCall *call = service_call_from(closure_data);
        va_list ap;
        int r = 0;

        /* Refused before anything happens: the call is still pending. */
        if (!call || !name || !name_is_valid_wellknown(name))
                return -EINVAL;
        if (!message_is_no_reply(call->request)) {
                va_start(ap, format);
                r = message_new_error_va(call->request, &m, name, format, ap);
                va_end(ap);
                if (r >= 0)
                        r = bus_client_send(call->client, m, NULL);
        }
        service_call_free(call);
        return r < 0 ? r : 0;
}

static int service_dispatch(bus_message *m, void *userdata) {
        ServiceBinding *b = userdata;
        const ProtobufCServiceDescriptor *desc = b->service->descriptor;
        const ProtobufCMethodDescriptor *method = NULL;
        const char *name = bus_message_get_method(m);
        ProtobufCMessage *input = NULL;
        ServiceCall *call;
        int r;

        if (name)
                method = protobuf_c_service_descriptor_get_method_by_name(desc, name);
        if (!method) {
                if (message_is_no_reply(m))
                        return 0;
                return bus_client_reply_error(b->client, m, BUS_ERROR_UNKNOWN_METHOD,
                                              "%s has no method %s", desc->name, name ?: "");
        }
        r = bus_message_read_protobuf(m, method->input, &input);
        if (r == -EBADMSG) {
                if (message_is_no_reply(m))
                        return 0;
                return bus_client_reply_error(b->client, m, BUS_ERROR_INVALID_ARGS,
                                              "The request of %s is not a valid %s", name,
                                              method->input->name);
        }
        if (r < 0)
                return r;
        call = calloc(1, sizeof(*call));
        if (!call) {
                protobuf_c_message_free_unpacked(input, NULL);
                return -ENOMEM;
        }
        *call = (ServiceCall){
                .magic = SERVICE_CALL_MAGIC,
                .client = bus_client_ref(b->client),
                .request = bus_message_ref(m),
                .method = method,
        };
        b->service->invoke(b->service, (unsigned) (method - desc->methods), input,
                           service_closure, call);
        protobuf_c_message_free_unpacked(input, NULL);
        return 0;
}

const ProtobufCServiceDescriptor *service_slot_descriptor(bus_slot *s) {
        if (s->type != SLOT_METHOD || s->callback != service_dispatch)
                return NULL;
        return ((ServiceBinding *) s->userdata)->service->descriptor;
}

static bool service_is_bound(bus_client *c, const char *name) {
        for (bus_slot *s = c->methods_first; s; s = s->method.next)
                if (s->callback == service_dispatch &&
                    (name ? streq(s->method.name, name) : !s->method.name))
                        return true;
        return false;
}

static void binding_free(void *userdata) {
        free(userdata);
}

_public_ int bus_client_bind_service(bus_client *c, bus_slot **ret_slot, const char *name,
                                     ProtobufCService *service) {
        ServiceBinding *b;
        bus_slot *s = NULL;
        int r;

        if (!c || !service || !service->invoke || !service->descriptor ||
            service->descriptor->magic != PROTOBUF_C__SERVICE_DESCRIPTOR_MAGIC)
                return -EINVAL;
        if (name && !name_is_valid_wellknown(name) && !name_is_valid_unique(name))
                return -EINVAL;
        if (service_is_bound(c, name))
                return -EEXIST;
        r = client_introspect_add_service(c, service->descriptor);
        if (r < 0)
                return r;
        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->client = c;
        b->service = service;
        /* Always asked for, so the binding can be attached to it; when the
         * caller wants no slot, the client takes it over as floating. */
        r = bus_client_add_method(c, &s, name, NULL, service_dispatch, b);
        if (r < 0) {
                free(b);
                return r;
        }
        s->destroy = binding_free;
        if (ret_slot)
                *ret_slot = s;
        else
                s->floating = true;
        return 0;
}
