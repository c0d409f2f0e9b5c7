/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bus_error: a dotted error name and a human-readable message, filled in on
 * the caller's stack, and the mapping from the well-known names to errno so
 * C code can branch on a remote failure without comparing strings.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libbus/bus.h>

#include "libbus/bus-internal.h"
#include "libbus/macro.h"
#include "libbus/topic.h"

static const struct {
        const char *name;
        int error;
} error_map[] = {
        { BUS_ERROR_NO_OWNER, -ENXIO },
        { BUS_ERROR_TIMEOUT, -ETIMEDOUT },
        { BUS_ERROR_DISCONNECTED, -ECONNRESET },
        { BUS_ERROR_UNKNOWN_METHOD, -EBADRQC },
        { BUS_ERROR_INVALID_ARGS, -EINVAL },
        { BUS_ERROR_ACCESS_DENIED, -EACCES },
        { BUS_ERROR_LIMITS_EXCEEDED, -ENOBUFS },
        { BUS_ERROR_PROTOCOL, -EPROTO },
};

int error_name_to_errno(const char *name) {
        if (name)
                for (size_t i = 0; i < ELEMENTSOF(error_map); i++)
                        if (strcmp(name, error_map[i].name) == 0)
                                return error_map[i].error;
        return -EREMOTEIO;
}

_public_ void bus_error_free(bus_error *e) {
        if (!e)
                return;
        free(e->name);
        free(e->message);
        *e = BUS_ERROR_NULL;
}

int error_set_strings(bus_error *e, const char *name, const char *message) {
        char *n, *t = NULL;

        n = strdup(name);
        if (!n)
                return -ENOMEM;
        if (message) {
                t = strdup(message);
                if (!t) {
                        free(n);
                        return -ENOMEM;
                }
        }
        bus_error_free(e);
        e->name = n;
        e->message = t;
        return 0;
}

_public_ int bus_error_set(bus_error *e, const char *name, const char *format, ...) {
        _cleanup_free_ char *text = NULL;
        va_list ap;
        int r;

        if (!name || !name_is_valid_wellknown(name))
                return -EINVAL;
        if (e) {
                if (format) {
                        va_start(ap, format);
                        r = vasprintf(&text, format, ap);
                        va_end(ap);
                        if (r < 0)
                                return -ENOMEM;
                }
                r = error_set_strings(e, name, text);
                if (r < 0)
                        return r;
        }
        return error_name_to_errno(name);
}

_public_ int bus_error_has_name(const bus_error *e, const char *name) {
        return e && e->name && name && strcmp(e->name, name) == 0;
}

_public_ int bus_error_is_set(const bus_error *e) {
        return e && e->name;
}

_public_ int bus_error_to_errno(const bus_error *e) {
        if (!e || !e->name)
                return 0;
        return error_name_to_errno(e->name);
}
