/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Client stubs: a ProtobufCService whose invoke() turns each rpc into a
 * REQUEST to one destination, so protoc-c's generated client functions
 * (example__calc__add(stub, ...)) call a service over the bus.
 *
 * A stub holds a reference on its client. A synchronous stub completes each
 * call inside invoke(). An asynchronous one keeps a StubCall per call in
 * flight, linked into the stub, with the call's slot; the reply callback
 * unlinks and frees it after running the closure. Destroying the stub
 * cancels the calls still in flight and runs their closures with NULL, so
 * that whatever a closure_data holds can always be released.
 *
 * The stub records the error of the last call that completed, before its
 * closure runs, so the closure may ask bus_service_stub_get_error().
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include <libbus/bus.h>

#include "libbus/bus-internal.h"
#include "libbus/macro.h"
#include "libbus/topic.h"

typedef struct StubCall StubCall;

typedef struct ServiceStub {
        ProtobufCService base; /* first: the stub is handed out as a ProtobufCService */
        bus_client *client;    /* reference */
        char *destination;
        uint64_t flags;
        bool destroying;
        int error_errno;       /* of the most recent call; 0 if it succeeded */
        bus_error error;
        StubCall *calls;       /* asynchronous calls in flight */
} ServiceStub;

struct StubCall {
        ServiceStub *stub;
        StubCall *prev, *next;
        bus_slot *slot;
        const ProtobufCMethodDescriptor *method;
        ProtobufCClosure closure;
        void *closure_data;
};

static void stub_invoke(ProtobufCService *service, unsigned method_index,
                        const ProtobufCMessage *input, ProtobufCClosure closure,
                        void *closure_data);

static ServiceStub *stub_from(ProtobufCService *service) {
        /* Our invoke tells our stubs from other services. */
        if (!service || service->invoke != stub_invoke)
                return NULL;
        return container_of(service, ServiceStub, base);
}

/* Records how a call ended: r < 0 and *error (taken over, or made up from
 * r if empty) for a failure, r >= 0 for success. */
static void stub_set_result(ServiceStub *stub, int r, bus_error *error) {
        bus_error_free(&stub->error);
        stub->error_errno = r < 0 ? r : 0;
        if (r >= 0) {
                bus_error_free(error);
                return;
        }
        if (!error->name)
                (void) bus_error_set(error, BUS_ERROR_FAILED, "%s", strerror(-r));
        stub->error = *error;
        *error = BUS_ERROR_NULL;
}

/* Completes a call: unpacks reply (NULL when r < 0), records the result
 * and runs the closure. The closure may destroy the stub, so the stub is
 * not touched after it. */
static void stub_complete(ServiceStub *stub, const ProtobufCMethodDescriptor *method,
                          bus_message *reply, int r, bus_error *error, ProtobufCClosure closure,
                          void *closure_data) {
        ProtobufCMessage *output = NULL;

        if (r >= 0) {
                r = bus_message_read_protobuf(reply, method->output, &output);
                if (r < 0)
                        (void) bus_error_set(error, BUS_ERROR_FAILED, "The reply is not a valid %s",
                                             method->output->name);
        }
        stub_set_result(stub, r, error);
        if (closure)
                closure(output, closure_data);
        if (output)
                protobuf_c_message_free_unpacked(output, NULL);
}

static void stub_fail(ServiceStub *stub, int r, const char *name, const char *text,
                      ProtobufCClosure closure, void *closure_data) {
        bus_error error = BUS_ERROR_NULL;

        (void) bus_error_set(&error, name, "%s", text);
        stub_set_result(stub, r, &error);
        if (closure)
                closure(NULL, closure_data);
}

static void stub_call_unlink(StubCall *call) {
        ServiceStub *stub = call->stub;

        if (call->prev)
                call->prev->next = call->next;
        else
                stub->calls = call->next;
        if (call->next)
                call->next->prev = call->prev;
        call->prev = call->next = NULL;
}

static int stub_reply(bus_message *m, void *userdata) {
        StubCall *call = userdata;
        bus_error error = BUS_ERROR_NULL;
        int r = 0;

        stub_call_unlink(call);
        if (bus_message_get_kind(m) == BUS_KIND_ERROR) {
                r = bus_message_get_error(m, &error);
                if (r >= 0)
                        r = -EREMOTEIO;
        }
        stub_complete(call->stub, call->method, r < 0 ? NULL : m, r, &error, call->closure,
                      call->closure_data);
        /* Our own slot: the dispatcher holds a reference across this call. */
        bus_slot_unref(call->slot);
        free(call);
        return 0;
}

static int stub_call_async(ServiceStub *stub, bus_message *m,
                           const ProtobufCMethodDescriptor *method, ProtobufCClosure closure,
                           void *closure_data) {
        StubCall *call;
        int r;

        call = calloc(1, sizeof(*call));
        if (!call)
                return -ENOMEM;
        *call = (StubCall){
                .stub = stub,
                .method = method,
                .closure = closure,
                .closure_data = closure_data,
        };
        r = bus_client_call_async(stub->client, &call->slot, m, stub_reply, call, 0);
        if (r < 0) {
                free(call);
                return r;
        }
        call->next = stub->calls;
        if (stub->calls)
                stub->calls->prev = call;
        stub->calls = call;
        return 0;
}

static void stub_invoke(ProtobufCService *service, unsigned method_index,
                        const ProtobufCMessage *input, ProtobufCClosure closure,
                        void *closure_data) {
        ServiceStub *stub = stub_from(service);
        _cleanup_(bus_message_unrefp) bus_message *m = NULL, *reply = NULL;
        const ProtobufCMethodDescriptor *method;
        bus_error error = BUS_ERROR_NULL;
        int r;

        if (!stub)
                return;
        if (stub->destroying) {
                stub_fail(stub, -ECANCELED, BUS_ERROR_FAILED, "The stub is being destroyed",
                          closure, closure_data);
                return;
        }
        if (method_index >= service->descriptor->n_methods) {
                stub_fail(stub, -EINVAL, BUS_ERROR_FAILED, "No such method", closure,
                          closure_data);
                return;
        }
        method = &service->descriptor->methods[method_index];
        if (!input || input->descriptor != method->input) {
                stub_fail(stub, -EINVAL, BUS_ERROR_INVALID_ARGS, "The input is of the wrong type",
                          closure, closure_data);
                return;
        }
        r = bus_message_new_request(&m, stub->destination, method->name);
        if (r >= 0)
                r = bus_message_set_protobuf(m, input);
        if (r < 0) {
                stub_fail(stub, r, BUS_ERROR_FAILED, strerror(-r), closure, closure_data);
                return;
        }
        if (stub->flags & BUS_STUB_ASYNC) {
                r = stub_call_async(stub, m, method, closure, closure_data);
                if (r < 0)
                        stub_fail(stub, r, r == -ENOTCONN || r == -ECONNRESET ?
                                                   BUS_ERROR_DISCONNECTED : BUS_ERROR_FAILED,
                                  strerror(-r), closure, closure_data);
                return;
        }
        r = bus_client_call(stub->client, m, 0, &error, &reply);
        stub_complete(stub, method, reply, r, &error, closure, closure_data);
}

static void stub_destroy(ProtobufCService *service) {
        ServiceStub *stub = stub_from(service);
        StubCall *call;

        if (!stub)
                return;
        stub->destroying = true;
        while ((call = stub->calls)) {
                stub_call_unlink(call);
                /* Cancels the call: its reply callback never runs. */
                call->slot = bus_slot_unref(call->slot);
                stub_fail(stub, -ECANCELED, BUS_ERROR_FAILED, "The stub was destroyed",
                          call->closure, call->closure_data);
                free(call);
        }
        bus_error_free(&stub->error);
        bus_client_unref(stub->client);
        free(stub->destination);
        free(stub);
}

_public_ int bus_client_new_service_stub(bus_client *c, const char *destination,
                                         const ProtobufCServiceDescriptor *descriptor,
                                         uint64_t flags, ProtobufCService **ret) {
        ServiceStub *stub;

        if (!c || !destination || !name_is_valid_destination(destination) || !descriptor ||
            descriptor->magic != PROTOBUF_C__SERVICE_DESCRIPTOR_MAGIC ||
            (flags & ~BUS_STUB_ASYNC) || !ret)
                return -EINVAL;
        stub = calloc(1, sizeof(*stub));
        if (!stub)
                return -ENOMEM;
        stub->destination = strdup(destination);
        if (!stub->destination) {
                free(stub);
                return -ENOMEM;
        }
        stub->base.descriptor = descriptor;
        stub->base.invoke = stub_invoke;
        stub->base.destroy = stub_destroy;
        stub->client = bus_client_ref(c);
        stub->flags = flags;
        *ret = &stub->base;
        return 0;
}

_public_ int bus_service_stub_get_error(ProtobufCService *service, bus_error *ret) {
        ServiceStub *stub = stub_from(service);
        int r;

        if (!stub)
                return -EINVAL;
        if (stub->error_errno == 0)
                return 0;
        if (ret) {
                r = error_set_strings(ret, stub->error.name, stub->error.message);
                if (r < 0)
                        return r;
        }
        return stub->error_errno;
}
