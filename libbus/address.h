/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Bus addresses, shared by busd (where to listen) and libbus (where to
 * connect). An address is a filesystem path of an AF_UNIX socket, or "@name"
 * for a socket in the abstract namespace. Defaults:
 *   per-user bus: $XDG_RUNTIME_DIR/busd/bus, else /tmp/busd-$UID/bus
 *   system bus:   /run/busd/bus
 * Clients take $BUSD_ADDRESS first.
 */
#pragma once

#include <stdbool.h>
#include <sys/socket.h>
#include <sys/un.h>

#define BUS_SYSTEM_ADDRESS "/run/busd/bus"

typedef struct BusAddress {
        struct sockaddr_un sun;
        socklen_t len;      /* for bind()/connect() */
        bool abstract;
        char path[sizeof(((struct sockaddr_un *) 0)->sun_path) + 1]; /* printable, "@name" for abstract */
} BusAddress;

/* Parses an explicit address. -EINVAL when empty or too long for sun_path. */
int address_parse(BusAddress *ret, const char *address);

/* The per-user default (not looking at $BUSD_ADDRESS). Writes the path into
 * buf. -ENAMETOOLONG, -EINVAL. */
int address_default_user(char *buf, size_t size);

/* What a client connects to when given no address: $BUSD_ADDRESS if set, else
 * the per-user default. */
int address_resolve(BusAddress *ret, const char *address);
