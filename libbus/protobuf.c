/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * protobuf-c helpers: payloads packed straight into the buffer the writer
 * will send, a WireChunk or a memfd (one copy, no intermediate buffer; see
 * bus_message_reserve_payload()), payloads unpacked with a
 * descriptor after checking the type the sender named, and the typed calls,
 * publishes and replies built on them. Calls to the broker's own service go
 * through client_call_broker().
 */
#include <errno.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include <libbus/bus.h>

#include "libbus/bus-internal.h"
#include "libbus/macro.h"

static bool protobuf_is_valid(const ProtobufCMessage *pb) {
        return pb && pb->descriptor &&
               pb->descriptor->magic == PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC &&
               protobuf_c_message_check(pb);
}

_public_ int bus_message_set_protobuf(bus_message *m, const ProtobufCMessage *pb) {
        size_t size;
        void *p;
        int r;

        if (!m || !protobuf_is_valid(pb))
                return -EINVAL;
        size = protobuf_c_message_get_packed_size(pb);
        /* Packed straight into the payload's final place: a memfd when it
         * is large, so producing it is the only copy. */
        r = bus_message_reserve_payload(m, size, &p);
        if (r < 0)
                return r;
        if (size > 0)
                (void) protobuf_c_message_pack(pb, p);
        r = bus_message_set_payload_type(m, pb->descriptor->name);
        if (r < 0)
                return r;
        /* Sending it adds the type to what the connection introspects as. */
        m->payload_desc = pb->descriptor;
        return 0;
}

_public_ int bus_message_read_protobuf(bus_message *m, const ProtobufCMessageDescriptor *desc,
                                       ProtobufCMessage **ret) {
        const char *type;
        ProtobufCMessage *pb;
        const void *data;
        size_t size;
        int r;

        if (!m || !desc || desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC || !ret)
                return -EINVAL;
        if (m->bad)
                return -ESTALE;
        type = str_or_null(m->env->payload_type);
        if (type && !streq(type, desc->name))
                return -EBADMSG;
        r = message_get_payload(m, &data, &size);
        if (r < 0)
                return r;
        pb = protobuf_c_message_unpack(desc, NULL, size, data);
        if (!pb)
                return -EBADMSG;
        *ret = pb;
        return 0;
}

_public_ int bus_client_publish_protobuf(bus_client *c, const char *topic,
                                         const ProtobufCMessage *pb, uint64_t flags) {
        _cleanup_(bus_message_unrefp) bus_message *m = NULL;
        int r;

        if (!c || (flags & ~BUS_PUBLISH_RETAIN))
                return -EINVAL;
        r = bus_message_new_publish(&m, topic);
        if (r < 0)
                return r;
        r = bus_message_set_protobuf(m, pb);
        if (r < 0)
                return r;
        r = bus_message_set_retain(m, !!(flags & BUS_PUBLISH_RETAIN));
        if (r < 0)
                return r;
        return bus_client_send(c, m, NULL);
}

_public_ int bus_client_call_protobuf(bus_client *c, const char *destination, const char *method,
                                      const ProtobufCMessage *request,
                                      const ProtobufCMessageDescriptor *reply_type,
                                      uint64_t timeout_usec, bus_error *ret_error,
                                      ProtobufCMessage **ret_reply) {
        _cleanup_(bus_message_unrefp) bus_message *m = NULL, *reply = NULL;
        int r;

        if (!c || (ret_reply && !reply_type))
                return -EINVAL;
        r = bus_message_new_request(&m, destination, method);
        if (r < 0)
                return r;
        r = bus_message_set_protobuf(m, request);
        if (r < 0)
                return r;
        r = bus_client_call(c, m, timeout_usec, ret_error, &reply);
        if (r < 0 || !ret_reply)
                return r;
        r = bus_message_read_protobuf(reply, reply_type, ret_reply);
        if (r < 0)
                (void) bus_error_set(ret_error, BUS_ERROR_FAILED, "Reply is not a valid %s",
                                     reply_type->name);
        return r;
}

_public_ int bus_client_reply_protobuf(bus_client *c, bus_message *request,
                                       const ProtobufCMessage *pb) {
        _cleanup_(bus_message_unrefp) bus_message *m = NULL;
        int r;

        if (!c)
                return -EINVAL;
        if (request && request->received && request->replied)
                return -EALREADY;
        r = bus_message_new_reply(request, &m);
        if (r < 0)
                return r;
        r = bus_message_set_protobuf(m, pb);
        if (r < 0)
                return r;
        return bus_client_send(c, m, NULL);
}

int client_call_broker(bus_client *c, const char *method, const ProtobufCMessage *request,
                       const ProtobufCMessageDescriptor *reply_type, uint64_t timeout_usec,
                       bus_error *error, ProtobufCMessage **ret) {
        _cleanup_(bus_message_unrefp) bus_message *m = NULL, *reply = NULL;
        int r;

        r = bus_message_new_request(&m, BROKER_NAME, method);
        if (r < 0)
                return r;
        r = bus_message_set_protobuf(m, request);
        if (r < 0)
                return r;
        r = client_call(c, m, timeout_usec, error, &reply);
        if (r < 0)
                return r;
        if (!ret)
                return 0;
        return bus_message_read_protobuf(reply, reply_type, ret);
}
