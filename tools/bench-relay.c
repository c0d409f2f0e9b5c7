/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * busd-bench: raw frames, the raw relay and the raw echo, the baselines
 * without a broker that rtt and pubsub measure against (see bench.h).
 *
 * The relay process owns two non-blocking sockets and one buffer per
 * direction. On input it reads once (up to BENCH_RAW_READ bytes), cuts the
 * buffer into complete frames by their preamble and writes them all to the
 * other side with one writev(), an iovec per frame; a partial frame stays
 * at the start of the buffer for the next read. While a direction has bytes
 * the other side would not take, the relay stops reading its source and
 * waits for EPOLLOUT on its destination, so it never queues without bound.
 * That is what any broker must do at least to pass frames on, and nothing
 * more: it does not route, decode envelopes, copy frames into per-receiver
 * queues or pass descriptors (read() and writev(), not recvmsg() and
 * sendmsg()).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tools/bench.h"

#define RELAY_BUFFER (BENCH_RAW_READ + BENCH_RAW_FRAME_MAX)
#define RELAY_IOV 1024 /* IOV_MAX on Linux */

/* ---- Frames. */

static void put_le32(unsigned char *p, uint32_t v) {
        p[0] = (unsigned char) v;
        p[1] = (unsigned char) (v >> 8);
        p[2] = (unsigned char) (v >> 16);
        p[3] = (unsigned char) (v >> 24);
}

static uint32_t get_le32(const unsigned char *p) {
        return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 |
               (uint32_t) p[3] << 24;
}

void bench_frame_init(void *p, uint32_t envelope_len, uint32_t payload_len) {
        unsigned char *b = p;

        put_le32(b, BENCH_FRAME_MAGIC);
        put_le32(b + 4, envelope_len);
        put_le32(b + 8, payload_len);
        memset(b + 12, 0, 4); /* n_fds, flags */
}

ssize_t bench_frame_size(const void *p, size_t n) {
        const unsigned char *b = p;
        uint64_t size;

        if (n < BENCH_FRAME_PREAMBLE)
                return 0;
        /* what a broker checks before it allocates anything for a frame */
        if (get_le32(b) != BENCH_FRAME_MAGIC || get_le32(b + 4) == 0 || b[12] || b[13] || b[14] ||
            b[15])
                return -EBADMSG;
        size = (uint64_t) BENCH_FRAME_PREAMBLE + get_le32(b + 4) + get_le32(b + 8);
        if (size > BENCH_RAW_FRAME_MAX)
                return -EBADMSG;
        return size <= n ? (ssize_t) size : 0;
}

int bench_write_all(int fd, const void *p, size_t size) {
        const char *c = p;

        while (size > 0) {
                ssize_t n = write(fd, c, size);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                c += n;
                size -= (size_t) n;
        }
        return 0;
}

ssize_t bench_raw_read_frame(int fd, void *buf, size_t size, size_t *len) {
        for (;;) {
                ssize_t f = bench_frame_size(buf, *len), n;

                if (f != 0)
                        return f;
                if (*len == size)
                        return -ENOBUFS;
                n = read(fd, (char *) buf + *len, size - *len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        return *len == 0 ? 0 : -EPIPE;
                *len += (size_t) n;
        }
}

void bench_raw_consume(void *buf, size_t *len, size_t frame) {
        memmove(buf, (char *) buf + frame, *len - frame);
        *len -= frame;
}

/* ---- The echo. */

int bench_raw_echo(BenchGroup *g, unsigned index, int fd, void *userdata) {
        unsigned char *buf = malloc(RELAY_BUFFER);
        size_t len = 0;
        int r = 0;

        if (!buf)
                return 1;
        for (;;) {
                size_t framed = 0;
                ssize_t n, f;

                n = read(fd, buf + len, RELAY_BUFFER - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        r = n < 0 || len > 0 ? -EPIPE : 0;
                        break;
                }
                len += (size_t) n;
                while ((f = bench_frame_size(buf + framed, len - framed)) > 0)
                        framed += (size_t) f;
                if (f < 0 || (framed == 0 && len == RELAY_BUFFER)) {
                        r = -EBADMSG;
                        break;
                }
                r = bench_write_all(fd, buf, framed);
                if (r < 0)
                        break;
                bench_raw_consume(buf, &len, framed);
        }
        free(buf);
        return r < 0 ? 1 : 0;
}

/* ---- The relay. */

typedef struct RelayDir {
        int from, to;
        unsigned char *buf;
        size_t len;    /* bytes in buf */
        size_t framed; /* of them, complete frames being forwarded */
        size_t sent;   /* of those, written */
} RelayDir;

static bool relay_blocked(const RelayDir *d) {
        return d->sent < d->framed;
}

/* Writes what is left of the frames being forwarded: the first time, one
 * iovec per frame (as a broker writes frames it queued one by one); after a
 * partial write, the rest in one. */
static int relay_write(RelayDir *d, bool first) {
        struct iovec iov[RELAY_IOV];
        size_t niov = 0, off = d->sent;
        ssize_t n;

        while (first && off < d->framed && niov < RELAY_IOV - 1) {
                size_t f = (size_t) bench_frame_size(d->buf + off, d->framed - off);

                iov[niov++] = (struct iovec){ d->buf + off, f };
                off += f;
        }
        if (off < d->framed)
                iov[niov++] = (struct iovec){ d->buf + off, d->framed - off };
        do
                n = writev(d->to, iov, (int) niov);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return errno == EAGAIN ? 0 : -errno;
        d->sent += (size_t) n;
        if (!relay_blocked(d)) {
                bench_raw_consume(d->buf, &d->len, d->framed);
                d->framed = d->sent = 0;
        }
        return 0;
}

/* One read, then forward every complete frame. 0 on EOF. */
static int relay_read(RelayDir *d) {
        size_t want = RELAY_BUFFER - d->len;
        ssize_t n, f;

        if (want > BENCH_RAW_READ)
                want = BENCH_RAW_READ;
        do
                n = read(d->from, d->buf + d->len, want);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return errno == EAGAIN ? 1 : -errno;
        if (n == 0)
                return 0;
        d->len += (size_t) n;
        while ((f = bench_frame_size(d->buf + d->framed, d->len - d->framed)) > 0)
                d->framed += (size_t) f;
        if (f < 0)
                return -EBADMSG;
        if (d->framed > 0)
                return relay_write(d, true) < 0 ? -EPIPE : 1;
        return 1;
}

/* Each socket reads for one direction and writes for the other. */
static int relay_update(int ep, int fd, const RelayDir *in, const RelayDir *out, uint32_t *mask) {
        uint32_t want = (relay_blocked(in) ? 0 : EPOLLIN) | (relay_blocked(out) ? EPOLLOUT : 0);
        struct epoll_event ev = { .events = want, .data.fd = fd };

        if (want == *mask)
                return 0;
        *mask = want;
        return epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

static int relay_loop(int a, int b, int ctl) {
        RelayDir d[2] = { { .from = a, .to = b }, { .from = b, .to = a } };
        uint32_t mask[2] = { EPOLLIN, EPOLLIN };
        int ep, r = 0;

        ep = epoll_create1(EPOLL_CLOEXEC);
        if (ep < 0)
                return -errno;
        d[0].buf = malloc(RELAY_BUFFER);
        d[1].buf = malloc(RELAY_BUFFER);
        if (!d[0].buf || !d[1].buf)
                r = -ENOMEM;
        for (int i = 0; i < 3 && r >= 0; i++) {
                int fd = i == 0 ? a : i == 1 ? b : ctl;
                struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };

                if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
                        r = -errno;
        }
        while (r >= 0) {
                struct epoll_event ev[3];
                int n = epoll_wait(ep, ev, 3, -1);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        r = -errno;
                        break;
                }
                for (int i = 0; i < n && r >= 0; i++) {
                        int k = ev[i].data.fd == a ? 0 : 1;

                        if (ev[i].data.fd == ctl) {
                                r = -ECANCELED; /* EOF: the bench is done */
                                break;
                        }
                        /* k's socket: its input is d[k], its output d[1 - k] */
                        if ((ev[i].events & (EPOLLOUT | EPOLLERR)) && relay_blocked(&d[1 - k]))
                                r = relay_write(&d[1 - k], false);
                        if (r >= 0 && (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) &&
                            !relay_blocked(&d[k])) {
                                r = relay_read(&d[k]);
                                if (r == 0)
                                        r = -ECANCELED; /* EOF */
                        }
                }
                if (r >= 0)
                        r = relay_update(ep, a, &d[0], &d[1], &mask[0]);
                if (r >= 0)
                        r = relay_update(ep, b, &d[1], &d[0], &mask[1]);
        }
        free(d[0].buf);
        free(d[1].buf);
        close(ep);
        return r == -ECANCELED ? 0 : r;
}

/* ---- Starting a raw path. */

typedef struct RawEnd {
        BenchRawFn fn;
        void *userdata;
        int fd;       /* the helper's socket */
        int other_fd; /* the peer's end, which the helper must not keep */
        int relay_fd; /* the relay's second socket */
} RawEnd;

static int raw_end_helper(BenchGroup *g, unsigned index, void *userdata) {
        RawEnd *e = userdata;

        close(e->other_fd);
        return e->fn(g, index, e->fd, e->userdata);
}

static int raw_relay_helper(BenchGroup *g, unsigned index, void *userdata) {
        RawEnd *e = userdata;
        int r;

        if (fcntl(e->fd, F_SETFL, O_NONBLOCK) < 0 || fcntl(e->relay_fd, F_SETFL, O_NONBLOCK) < 0)
                return 1;
        r = relay_loop(e->fd, e->relay_fd, g->ctl[0]);
        if (r < 0)
                fprintf(stderr, "busd-bench: relay: %s\n", strerror(-r));
        return r < 0 ? 1 : 0;
}

static int parent_slot(BenchGroup *g) {
        for (int i = 0; i < BENCH_MAX_RECEIVERS; i++)
                if (g->parent_fds[i] < 0)
                        return i;
        return -EMFILE;
}

int bench_raw_open(BenchGroup *g, bool relay, BenchRawFn fn, void *userdata, int *ret_fd) {
        RawEnd e = { .fn = fn, .userdata = userdata };
        int far[2], near[2], slot, r;

        slot = parent_slot(g);
        if (slot < 0)
                return slot;
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, far) < 0)
                return -errno;
        e.fd = far[1];
        e.other_fd = far[0];
        r = bench_group_spawn(g, raw_end_helper, &e);
        close(far[1]);
        if (r < 0 || !relay) {
                if (r < 0)
                        close(far[0]);
                else
                        *ret_fd = g->parent_fds[slot] = far[0];
                return r;
        }

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, near) < 0) {
                r = -errno;
                close(far[0]);
                return r;
        }
        /* the relay closes the bench's end as one of the parent_fds */
        g->parent_fds[slot] = near[0];
        e.fd = near[1];
        e.relay_fd = far[0];
        r = bench_group_spawn(g, raw_relay_helper, &e);
        close(near[1]);
        close(far[0]);
        if (r >= 0)
                *ret_fd = near[0];
        return r;
}
