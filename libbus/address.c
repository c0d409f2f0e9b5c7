/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Parsing and defaults of bus addresses; see address.h. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libbus/address.h"

int address_parse(BusAddress *ret, const char *address) {
        size_t len;
        BusAddress a = { .sun.sun_family = AF_UNIX };

        if (!address || !*address)
                return -EINVAL;
        len = strlen(address);
        if (len >= sizeof(a.sun.sun_path) || len >= sizeof(a.path))
                return -EINVAL;
        memcpy(a.path, address, len + 1);
        if (address[0] == '@') {
                if (len < 2)
                        return -EINVAL;
                /* Abstract names are not NUL-terminated: the length says where
                 * they end, so the same name always maps to the same socket. */
                a.abstract = true;
                a.sun.sun_path[0] = '\0';
                memcpy(a.sun.sun_path + 1, address + 1, len - 1);
                a.len = offsetof(struct sockaddr_un, sun_path) + len;
        } else {
                memcpy(a.sun.sun_path, address, len + 1);
                a.len = offsetof(struct sockaddr_un, sun_path) + len + 1;
        }
        *ret = a;
        return 0;
}

int address_default_user(char *buf, size_t size) {
        const char *runtime = secure_getenv("XDG_RUNTIME_DIR");
        int n;

        if (runtime && runtime[0] == '/')
                n = snprintf(buf, size, "%s/busd/bus", runtime);
        else
                n = snprintf(buf, size, "/tmp/busd-%u/bus", (unsigned) getuid());
        if (n < 0)
                return -EINVAL;
        if ((size_t) n >= size)
                return -ENAMETOOLONG;
        return 0;
}

int address_resolve(BusAddress *ret, const char *address) {
        char buf[sizeof(((struct sockaddr_un *) 0)->sun_path)];
        int r;

        if (!address || !*address)
                address = secure_getenv("BUSD_ADDRESS");
        if (!address || !*address) {
                r = address_default_user(buf, sizeof(buf));
                if (r < 0)
                        return r;
                address = buf;
        }
        return address_parse(ret, address);
}
