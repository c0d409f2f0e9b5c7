/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bus_message: one frame, built to be sent or received.
 *
 * Both kinds keep their routing fields in a Bus__Envelope: a built message in
 * its own (m->local, strings malloc'd, unset ones protobuf_c_empty_string), a
 * received one in the envelope protobuf-c unpacked from the frame. A built
 * message's payload sits in a WireChunk of its own that the writer pins, so
 * the bytes are copied once, when the application hands them over; a received
 * message's payload points into the chunk its frame was read into.
 *
 * Its payload and descriptors live in message-payload.c.
 *
 * A message is writable until it is sent (sealed); received and locally made
 * answers are sealed from the start. A setter that runs out of memory halfway
 * marks the message bad, and it can then only be unreffed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libbus/bus.h>

#include "libbus/bus-internal.h"
#include "libbus/macro.h"
#include "libbus/topic.h"

#define METHOD_MAX 255u
#define PAYLOAD_TYPE_MAX 255u

static void env_free_string(char **s) {
        if (*s != protobuf_c_empty_string)
                free(*s);
        *s = (char *) protobuf_c_empty_string;
}

static int env_set_string(char **field, const char *value) {
        char *copy;

        if (!value || !*value) {
                env_free_string(field);
                return 0;
        }
        copy = strdup(value);
        if (!copy)
                return -ENOMEM;
        env_free_string(field);
        *field = copy;
        return 0;
}

int message_new(bus_message **ret, int kind) {
        bus_message *m = calloc(1, sizeof(*m));

        if (!m)
                return -ENOMEM;
        m->n_ref = 1;
        m->kind = kind;
        m->local = (Bus__Envelope) BUS__ENVELOPE__INIT;
        m->local.kind = (Bus__Kind) kind;
        m->env = &m->local;
        *ret = m;
        return 0;
}

int message_new_from_frame(bus_message **ret, WireFrame *frame) {
        Bus__Envelope *env;
        bus_message *m;

        env = bus__envelope__unpack(NULL, frame->preamble.envelope_len, frame->envelope);
        if (!env)
                return -EBADMSG;
        m = calloc(1, sizeof(*m));
        if (!m) {
                bus__envelope__free_unpacked(env, NULL);
                return -ENOMEM;
        }
        m->n_ref = 1;
        m->kind = (int) env->kind;
        m->sealed = m->received = true;
        m->env = env;
        message_payload_from_frame(m, frame);
        *ret = m;
        return 0;
}

_public_ int bus_message_new_publish(bus_message **ret, const char *topic) {
        _cleanup_(bus_message_unrefp) bus_message *m = NULL;
        int r;

        if (!ret || !topic || !topic_is_valid(topic, strlen(topic)) ||
            topic_is_reserved(topic, strlen(topic)))
                return -EINVAL;
        r = message_new(&m, BUS_KIND_PUBLISH);
        if (r < 0)
                return r;
        r = env_set_string(&m->local.topic, topic);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

_public_ int bus_message_new_request(bus_message **ret, const char *destination,
                                     const char *method) {
        _cleanup_(bus_message_unrefp) bus_message *m = NULL;
        int r;

        if (!ret || !destination || !name_is_valid_destination(destination) || !method ||
            !*method || strlen(method) > METHOD_MAX)
                return -EINVAL;
        r = message_new(&m, BUS_KIND_REQUEST);
        if (r < 0)
                return r;
        r = env_set_string(&m->local.destination, destination);
        if (r < 0)
                return r;
        r = env_set_string(&m->local.method, method);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

static int message_new_answer(bus_message *request, bus_message **ret, int kind) {
        _cleanup_(bus_message_unrefp) bus_message *m = NULL;
        int r;

        if (!request || !ret || !request->received || request->kind != BUS_KIND_REQUEST)
                return -EINVAL;
        if (message_is_no_reply(request))
                return -EPERM;
        r = message_new(&m, kind);
        if (r < 0)
                return r;
        m->local.reply_serial = request->env->serial;
        r = env_set_string(&m->local.destination, request->env->sender);
        if (r < 0)
                return r;
        m->request = bus_message_ref(request);
        *ret = TAKE_PTR(m);
        return 0;
}

_public_ int bus_message_new_reply(bus_message *request, bus_message **ret) {
        return message_new_answer(request, ret, BUS_KIND_REPLY);
}

int message_new_error_va(bus_message *request, bus_message **ret, const char *name,
                         const char *format, va_list ap) {
        _cleanup_(bus_message_unrefp) bus_message *m = NULL;
        _cleanup_free_ char *text = NULL;
        int r;

        if (!name || !name_is_valid_wellknown(name))
                return -EINVAL;
        r = message_new_answer(request, &m, BUS_KIND_ERROR);
        if (r < 0)
                return r;
        r = env_set_string(&m->local.error_name, name);
        if (r < 0)
                return r;
        if (format) {
                if (vasprintf(&text, format, ap) < 0)
                        return -ENOMEM;
                r = env_set_string(&m->local.error_message, text);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(m);
        return 0;
}

_public_ int bus_message_new_error(bus_message *request, bus_message **ret, const char *name,
                                   const char *format, ...) {
        va_list ap;
        int r;

        va_start(ap, format);
        r = message_new_error_va(request, ret, name, format, ap);
        va_end(ap);
        return r;
}

int message_new_local_error(bus_message **ret, uint64_t reply_serial, const char *name,
                            const char *format, ...) {
        _cleanup_(bus_message_unrefp) bus_message *m = NULL;
        _cleanup_free_ char *text = NULL;
        va_list ap;
        int r, n;

        r = message_new(&m, BUS_KIND_ERROR);
        if (r < 0)
                return r;
        m->sealed = true;
        m->local.reply_serial = reply_serial;
        va_start(ap, format);
        n = vasprintf(&text, format, ap);
        va_end(ap);
        if (n < 0)
                return -ENOMEM;
        r = env_set_string(&m->local.error_name, name);
        if (r < 0)
                return r;
        r = env_set_string(&m->local.error_message, text);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

_public_ bus_message *bus_message_ref(bus_message *m) {
        if (m)
                m->n_ref++;
        return m;
}

static void message_free(bus_message *m) {
        if (m->received) {
                bus__envelope__free_unpacked(m->env, NULL);
        } else {
                env_free_string(&m->local.destination);
                env_free_string(&m->local.topic);
                env_free_string(&m->local.method);
                env_free_string(&m->local.payload_type);
                env_free_string(&m->local.error_name);
                env_free_string(&m->local.error_message);
        }
        message_payload_free(m);
        bus_message_unref(m->request);
        free(m);
}

_public_ bus_message *bus_message_unref(bus_message *m) {
        if (m && --m->n_ref == 0)
                message_free(m);
        return NULL;
}

int message_check_writable(bus_message *m) {
        if (!m)
                return -EINVAL;
        if (m->bad)
                return -ESTALE;
        if (m->sealed)
                return -EPERM;
        return 0;
}

_public_ int bus_message_set_payload_type(bus_message *m, const char *type) {
        int r;

        r = message_check_writable(m);
        if (r < 0)
                return r;
        if (type && strlen(type) > PAYLOAD_TYPE_MAX)
                return -EINVAL;
        r = env_set_string(&m->local.payload_type, type);
        if (r < 0)
                m->bad = true;
        return r;
}

_public_ int bus_message_set_timeout(bus_message *m, uint64_t usec) {
        int r;

        r = message_check_writable(m);
        if (r < 0)
                return r;
        if (m->kind != BUS_KIND_REQUEST)
                return -EINVAL;
        m->timeout_usec = MIN(usec, CLIENT_TIMEOUT_MAX_USEC);
        m->local.timeout_ms = usec_to_timeout_ms(m->timeout_usec);
        return 0;
}

static int message_set_flag(bus_message *m, int kind, uint32_t flag, int on) {
        int r;

        r = message_check_writable(m);
        if (r < 0)
                return r;
        if (m->kind != kind)
                return -EINVAL;
        if (on)
                m->local.flags |= flag;
        else
                m->local.flags &= ~flag;
        return 0;
}

_public_ int bus_message_set_retain(bus_message *m, int retain) {
        return message_set_flag(m, BUS_KIND_PUBLISH, BUS__ENVELOPE_FLAG__ENVELOPE_FLAG_RETAIN,
                                retain);
}

_public_ int bus_message_set_no_reply(bus_message *m, int no_reply) {
        return message_set_flag(m, BUS_KIND_REQUEST, BUS__ENVELOPE_FLAG__ENVELOPE_FLAG_NO_REPLY,
                                no_reply);
}

_public_ int bus_message_get_retain(bus_message *m) {
        if (!m)
                return -EINVAL;
        return m->kind == BUS_KIND_PUBLISH &&
               (m->env->flags & BUS__ENVELOPE_FLAG__ENVELOPE_FLAG_RETAIN);
}

_public_ int bus_message_get_no_reply(bus_message *m) {
        if (!m)
                return -EINVAL;
        return message_is_no_reply(m);
}

bool message_is_no_reply(const bus_message *m) {
        return m->kind == BUS_KIND_REQUEST &&
               (m->env->flags & BUS__ENVELOPE_FLAG__ENVELOPE_FLAG_NO_REPLY);
}

_public_ int bus_message_get_kind(bus_message *m) {
        return m ? m->kind : -EINVAL;
}

_public_ const char *bus_message_get_topic(bus_message *m) {
        return m ? str_or_null(m->env->topic) : NULL;
}

_public_ const char *bus_message_get_destination(bus_message *m) {
        return m ? str_or_null(m->env->destination) : NULL;
}

_public_ const char *bus_message_get_method(bus_message *m) {
        return m ? str_or_null(m->env->method) : NULL;
}

_public_ const char *bus_message_get_payload_type(bus_message *m) {
        return m ? str_or_null(m->env->payload_type) : NULL;
}

_public_ const char *bus_message_get_sender(bus_message *m) {
        return m ? str_or_null(m->env->sender) : NULL;
}

_public_ const char *bus_message_get_error_name(bus_message *m) {
        return m ? str_or_null(m->env->error_name) : NULL;
}

_public_ const char *bus_message_get_error_message(bus_message *m) {
        return m ? str_or_null(m->env->error_message) : NULL;
}

_public_ uint64_t bus_message_get_serial(bus_message *m) {
        return m ? m->env->serial : 0;
}

_public_ uint64_t bus_message_get_reply_serial(bus_message *m) {
        return m ? m->env->reply_serial : 0;
}

_public_ int bus_message_get_sender_creds(bus_message *m, uid_t *uid, gid_t *gid, pid_t *pid) {
        if (!m)
                return -EINVAL;
        if (!m->received)
                return -ENODATA;
        if (uid)
                *uid = (uid_t) m->env->sender_uid;
        if (gid)
                *gid = (gid_t) m->env->sender_gid;
        if (pid)
                *pid = (pid_t) m->env->sender_pid;
        return 0;
}

_public_ uint64_t bus_message_get_missed(bus_message *m) {
        return m ? m->env->missed : 0;
}

_public_ int bus_message_is_retained(bus_message *m) {
        if (!m)
                return -EINVAL;
        return m->received && (m->env->flags & BUS__ENVELOPE_FLAG__ENVELOPE_FLAG_RETAINED);
}

_public_ int bus_message_get_error(bus_message *m, bus_error *e) {
        int r;

        if (!m)
                return -EINVAL;
        if (m->kind != BUS_KIND_ERROR)
                return 0;
        if (e) {
                r = error_set_strings(e, str_or_null(m->env->error_name) ?: BUS_ERROR_FAILED,
                                      str_or_null(m->env->error_message));
                if (r < 0)
                        return r;
        }
        return error_name_to_errno(str_or_null(m->env->error_name));
}
