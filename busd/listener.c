/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Listening sockets; see listener.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "busd/listener.h"
#include "busd/log.h"
#include "busd/peer.h"
#include "libbus/address.h"
#include "libbus/macro.h"

/* Connections accepted per wake-up before other work gets a turn. */
#define ACCEPT_BATCH 64

static int listener_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Listener *l = userdata;

        for (int i = 0; i < ACCEPT_BATCH; i++) {
                Peer *p;
                int cfd, r;

                cfd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (cfd < 0) {
                        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                                return 0;
                        /* Out of descriptors or memory: the connection stays
                         * in the backlog and the socket stays readable, so
                         * going on would spin. Stop accepting until a peer
                         * goes away (manager_close_peers() resumes). */
                        log_error("accept failed: %m; not accepting until a connection closes");
                        listener_pause(l);
                        return 0;
                }
                r = peer_new(l->manager, cfd, &p);
                if (r < 0)
                        log_error("cannot set up new connection: %s", strerror(-r));
        }
        return 0;
}

void listener_pause(Listener *l) {
        if (!l->paused && sd_event_source_set_enabled(l->io, SD_EVENT_OFF) >= 0)
                l->paused = true;
}

void listener_resume(Listener *l) {
        if (l->paused && sd_event_source_set_enabled(l->io, SD_EVENT_ON) >= 0) {
                l->paused = false;
                log_info("accepting connections again");
        }
}

int listener_new(Manager *m, int fd, const char *unlink_path, Listener **ret) {
        Listener *l = calloc(1, sizeof(*l));
        int r;

        if (!l)
                return -ENOMEM;
        l->manager = m;
        l->fd = fd;
        list_init(&l->link);
        if (unlink_path) {
                l->unlink_path = strdup(unlink_path);
                if (!l->unlink_path) {
                        listener_free(l);
                        return -ENOMEM;
                }
        }
        r = sd_event_add_io(m->event, &l->io, fd, EPOLLIN, listener_io, l);
        if (r < 0) {
                listener_free(l);
                return r;
        }
        list_append(&m->listeners, &l->link);
        *ret = l;
        return 0;
}

Listener *listener_free(Listener *l) {
        if (!l)
                return NULL;
        list_remove(&l->link);
        sd_event_source_disable_unref(l->io);
        safe_close(l->fd);
        if (l->unlink_path)
                (void) unlink(l->unlink_path);
        free(l->unlink_path);
        free(l);
        return NULL;
}

static int mkdir_parents(const char *path) {
        _cleanup_free_ char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        for (char *s = strchr(p + 1, '/'); s; s = strchr(s + 1, '/')) {
                *s = '\0';
                if (mkdir(p, 0755) < 0 && errno != EEXIST)
                        return negative_errno();
                *s = '/';
        }
        return 0;
}

/* A socket file nobody listens on is left over from a crash: remove it. */
static int remove_stale_socket(const BusAddress *a) {
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0)
                return negative_errno();
        if (connect(fd, (const struct sockaddr *) &a->sun, a->len) == 0)
                return -EADDRINUSE;
        if (errno != ECONNREFUSED)
                return -EADDRINUSE;
        if (unlink(a->path) < 0 && errno != ENOENT)
                return negative_errno();
        return 0;
}

int listener_bind(const char *address, int *ret_fd) {
        _cleanup_close_ int fd = -1;
        BusAddress a;
        int r;

        r = address_parse(&a, address);
        if (r < 0)
                return r;
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return negative_errno();
        if (!a.abstract) {
                r = mkdir_parents(a.path);
                if (r < 0)
                        return r;
        }
        if (bind(fd, (const struct sockaddr *) &a.sun, a.len) < 0) {
                if (errno != EADDRINUSE || a.abstract)
                        return negative_errno();
                r = remove_stale_socket(&a);
                if (r < 0)
                        return r;
                if (bind(fd, (const struct sockaddr *) &a.sun, a.len) < 0)
                        return negative_errno();
        }
        if (listen(fd, SOMAXCONN) < 0)
                return negative_errno();
        *ret_fd = TAKE_FD(fd);
        return 0;
}
