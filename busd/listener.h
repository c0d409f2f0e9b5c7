/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A listening socket: accepts connections and makes a Peer of each. A
 * listener we bound ourselves removes its socket file when freed; one handed
 * over by systemd (socket activation) leaves it alone.
 */
#pragma once

#include <stdbool.h>

#include "busd/manager.h"
#include "libbus/list.h"

typedef struct Listener {
        Manager *manager;
        int fd;
        char *unlink_path;
        sd_event_source *io;
        bool paused; /* accept() failed for lack of resources */
        List link;   /* manager->listeners */
} Listener;

int listener_new(Manager *m, int fd, const char *unlink_path, Listener **ret);
Listener *listener_free(Listener *l);
void listener_pause(Listener *l);
void listener_resume(Listener *l);

/* Creates, binds and listens on a socket for address (a path or "@name").
 * For a path, creates missing parent directories (mode 0755) and replaces a
 * stale socket file, but refuses to take over a live bus: -EADDRINUSE. */
int listener_bind(const char *address, int *ret_fd);
