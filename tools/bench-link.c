/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * busd-bench: links, the transports the scenarios measure (see bench.h).
 *
 * A BenchLink is this process as the one sender and a BenchGroup of receiver
 * processes. Over every transport a receiver reads the whole payload, sums
 * its 8-byte words and acks the sum, the size and whether the bytes came
 * through shared memory:
 *
 *   socket     a SOCK_STREAM pair per receiver; the sender writes an 8-byte
 *              size and the payload, round-robin over the receivers that can
 *              take more, as a broker does; the receiver reads it into one
 *              buffer (reused: the best case).
 *   memfd      a SOCK_SEQPACKET pair per receiver; the sender fills a fresh
 *              memfd, unmaps it, seals it and sends the descriptor to each;
 *              the receiver checks seals and size, maps it read-only, sums,
 *              unmaps and closes it.
 *   bus_*      busd: each receiver opens its own bus_client after the fork
 *              and subscribes to BENCH_TOPIC; the sender connects once they
 *              all have, and publishes with bus_message_set_shm() (NEVER,
 *              ALWAYS or AUTO) and bus_message_reserve_payload(), so the
 *              payload is produced in place.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <unistd.h>

#include <libbus/bus.h>

#include "tools/bench.h"

#define BENCH_TOPIC "bench.data"
#define LINK_READY_TIMEOUT_MS 10000
#define LINK_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL)

/* ---- Receivers (helper processes). */

static int ack_payload(BenchGroup *g, unsigned index, const void *p, size_t size, uint32_t flags,
                       uint64_t missed) {
        BenchAck a = {
                .receiver = index,
                .flags = flags,
                .size = size,
                .sum = p ? bench_sum(p, size) : 0,
                .missed = missed,
        };

        return bench_ack_send(g, &a);
}

typedef struct Subscriber {
        BenchGroup *group;
        unsigned index;
} Subscriber;

static int on_message(bus_message *m, void *userdata) {
        Subscriber *s = userdata;
        const void *data = NULL;
        uint32_t flags = 0;
        size_t size = 0;

        if (bus_message_get_payload(m, &data, &size) < 0)
                flags |= BENCH_ACK_ERROR, data = NULL;
        if (bus_message_is_shm(m) > 0)
                flags |= BENCH_ACK_SHM;
        /* the mapping of a shared-memory payload goes with m, after this */
        return ack_payload(s->group, s->index, data, size, flags, bus_message_get_missed(m));
}

static int ack_ready(BenchGroup *g, unsigned index) {
        BenchAck a = { .receiver = index, .flags = BENCH_ACK_READY };

        return bench_ack_send(g, &a);
}

static int bus_receiver(BenchGroup *g, unsigned index, void *userdata) {
        BenchLink *l = userdata;
        Subscriber s = { .group = g, .index = index };
        bus_client *c = NULL;
        int r;

        r = bus_client_open(&c, l->address);
        if (r < 0) {
                fprintf(stderr, "busd-bench: subscriber cannot connect to %s: %s\n",
                        l->address, strerror(-r));
                return 1;
        }
        r = bus_client_subscribe(c, NULL, BENCH_TOPIC, NULL, 0, on_message, &s);
        if (r < 0) {
                fprintf(stderr, "busd-bench: cannot subscribe: %s\n", strerror(-r));
                bus_client_unref(c);
                return 1;
        }
        (void) ack_ready(g, index);
        for (;;) {
                struct pollfd p[2];

                while ((r = bus_client_process(c)) > 0)
                        ;
                if (r < 0)
                        break;
                p[0] = (struct pollfd){ .fd = bus_client_get_fd(c),
                                        .events = (short) bus_client_get_events(c) };
                p[1] = (struct pollfd){ .fd = g->ctl[0], .events = POLLIN };
                if (poll(p, 2, -1) < 0 && errno != EINTR) {
                        r = -errno;
                        break;
                }
                if (p[1].revents) { /* EOF: the bench is done with us */
                        r = 0;
                        break;
                }
        }
        bus_client_unref(c);
        return r < 0 ? 1 : 0;
}

static int read_full(int fd, void *p, size_t size) {
        size_t done = 0;

        while (done < size) {
                ssize_t n = read(fd, (char *) p + done, size - done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        return done == 0 ? 0 : -EPIPE;
                done += n;
        }
        return 1;
}

static int socket_receiver(BenchGroup *g, unsigned index, void *userdata) {
        BenchLink *l = userdata;
        int fd = l->child_fds[index];
        size_t allocated = 0;
        void *buf = NULL;
        uint64_t size;
        int r;

        (void) ack_ready(g, index);
        /* The whole message lands in one buffer, as a message API delivers
         * it; the buffer is reused, the best case for the baseline. */
        while ((r = read_full(fd, &size, sizeof(size))) > 0) {
                if (size > allocated) {
                        free(buf);
                        buf = malloc(size);
                        if (!buf)
                                return 1;
                        allocated = size;
                }
                r = read_full(fd, buf, size);
                if (r <= 0)
                        break;
                if (ack_payload(g, index, buf, size, 0, 0) < 0)
                        break;
        }
        free(buf);
        return r < 0 ? 1 : 0;
}

/* Receives a size and a memfd: 1, 0 on EOF, negative errno. */
static int recv_memfd(int fd, uint64_t *ret_size, int *ret_fd) {
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int))];
        } control;
        struct iovec iov = { .iov_base = ret_size, .iov_len = sizeof(*ret_size) };
        struct msghdr mh = {
                .msg_iov = &iov,
                .msg_iovlen = 1,
                .msg_control = &control,
                .msg_controllen = sizeof(control),
        };
        struct cmsghdr *cmsg;
        ssize_t n;

        do
                n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        if (n == 0)
                return 0;
        cmsg = CMSG_FIRSTHDR(&mh);
        if (n != sizeof(*ret_size) || !cmsg || cmsg->cmsg_type != SCM_RIGHTS ||
            cmsg->cmsg_len != CMSG_LEN(sizeof(int)))
                return -EBADMSG;
        memcpy(ret_fd, CMSG_DATA(cmsg), sizeof(int));
        return 1;
}

static int memfd_receiver(BenchGroup *g, unsigned index, void *userdata) {
        BenchLink *l = userdata;
        int fd = l->child_fds[index], mfd = -1, r;
        uint64_t size;

        (void) ack_ready(g, index);
        while ((r = recv_memfd(fd, &size, &mfd)) > 0) {
                int seals = fcntl(mfd, F_GET_SEALS);
                uint32_t flags = BENCH_ACK_SHM;
                struct stat st;
                void *p = NULL;

                /* What a receiver must check before it trusts the bytes:
                 * the sender can no longer change them, and the size. */
                if (seals < 0 || (seals & LINK_SEALS) != LINK_SEALS || fstat(mfd, &st) < 0 ||
                    (uint64_t) st.st_size != size)
                        flags |= BENCH_ACK_ERROR;
                else {
                        p = mmap(NULL, size, PROT_READ, MAP_SHARED, mfd, 0);
                        if (p == MAP_FAILED)
                                flags |= BENCH_ACK_ERROR, p = NULL;
                }
                r = ack_payload(g, index, p, size, flags, 0);
                if (p)
                        munmap(p, size);
                close(mfd);
                if (r < 0)
                        break;
        }
        return r < 0 ? 1 : 0;
}

/* ---- The sender's side. */

static int send_socket(BenchLink *l, uint64_t size, uint64_t seed, uint64_t *ret_sum) {
        size_t done[BENCH_MAX_RECEIVERS] = {};
        unsigned left = l->n;

        *ret_sum = bench_fill(l->buf, size, seed);
        /* Round-robin over every receiver that can take more, as a broker
         * does, so the receivers read while the publisher writes. */
        while (left > 0) {
                struct pollfd p[BENCH_MAX_RECEIVERS];
                unsigned idx[BENCH_MAX_RECEIVERS], np = 0;
                int r;

                for (unsigned i = 0; i < l->n; i++)
                        if (done[i] < sizeof(size) + size) {
                                p[np] = (struct pollfd){ .fd = l->group.parent_fds[i],
                                                         .events = POLLOUT };
                                idx[np++] = i;
                        }
                r = poll(p, np, BENCH_ACK_TIMEOUT_MS);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0)
                        return -errno;
                if (r == 0)
                        return -ETIMEDOUT;
                for (unsigned k = 0; k < np; k++) {
                        unsigned i = idx[k];
                        struct iovec iov[2];
                        struct msghdr mh = { .msg_iov = iov };
                        ssize_t n;

                        if (!p[k].revents)
                                continue;
                        if (done[i] < sizeof(size)) {
                                iov[0] = (struct iovec){ (char *) &size + done[i],
                                                         sizeof(size) - done[i] };
                                iov[1] = (struct iovec){ l->buf, size };
                                mh.msg_iovlen = 2;
                        } else {
                                iov[0] = (struct iovec){ (char *) l->buf + done[i] -
                                                                 sizeof(size),
                                                         sizeof(size) + size - done[i] };
                                mh.msg_iovlen = 1;
                        }
                        n = sendmsg(p[k].fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
                        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                                continue;
                        if (n < 0)
                                return -errno;
                        done[i] += n;
                        if (done[i] == sizeof(size) + size)
                                left--;
                }
        }
        return 0;
}

static int send_fd(int fd, uint64_t size, int mfd) {
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int))];
        } control = {};
        struct iovec iov = { .iov_base = &size, .iov_len = sizeof(size) };
        struct msghdr mh = {
                .msg_iov = &iov,
                .msg_iovlen = 1,
                .msg_control = &control,
                .msg_controllen = sizeof(control),
        };
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&mh);

        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cmsg), &mfd, sizeof(int));
        if (sendmsg(fd, &mh, MSG_NOSIGNAL) < 0)
                return -errno;
        return 0;
}

static int send_memfd(BenchLink *l, uint64_t size, uint64_t seed, uint64_t *ret_sum) {
        int mfd, r = 0;
        void *p;

        mfd = memfd_create("busd-bench", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (mfd < 0)
                return -errno;
        if (ftruncate(mfd, (off_t) size) < 0) {
                r = -errno;
                goto finish;
        }
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
        if (p == MAP_FAILED) {
                r = -errno;
                goto finish;
        }
        *ret_sum = bench_fill(p, size, seed);
        munmap(p, size); /* F_SEAL_WRITE needs no writable mapping left */
        if (fcntl(mfd, F_ADD_SEALS, LINK_SEALS) < 0) {
                r = -errno;
                goto finish;
        }
        for (unsigned i = 0; i < l->n && r >= 0; i++)
                r = send_fd(l->group.parent_fds[i], size, mfd);
finish:
        close(mfd);
        return r;
}

static int send_bus(BenchLink *l, uint64_t size, uint64_t seed, uint64_t *ret_sum) {
        static const int shm_mode[BENCH_N_TRANSPORTS] = {
                [BENCH_TRANSPORT_BUS_INLINE] = BUS_SHM_NEVER,
                [BENCH_TRANSPORT_BUS_SHM] = BUS_SHM_ALWAYS,
                [BENCH_TRANSPORT_BUS_AUTO] = BUS_SHM_AUTO,
        };
        bus_message *m = NULL;
        void *p;
        int r;

        r = bus_message_new_publish(&m, BENCH_TOPIC);
        if (r >= 0)
                r = bus_message_set_shm(m, shm_mode[l->transport]);
        if (r >= 0)
                r = bus_message_reserve_payload(m, size, &p);
        if (r >= 0) {
                *ret_sum = bench_fill(p, size, seed);
                r = bus_client_send(l->client, m, NULL);
        }
        bus_message_unref(m);
        if (r >= 0)
                r = bus_client_flush(l->client);
        return r;
}

/* While waiting for acks: read what the broker sends the publisher (an
 * error for a refused publish shows up in the log callback). */
static int pump(void *userdata) {
        BenchLink *l = userdata;
        int r;

        while ((r = bus_client_process(l->client)) > 0)
                ;
        if (r < 0)
                return r;
        return l->error[0] ? -EREMOTEIO : 0;
}

static void on_log(int priority, const char *message, void *userdata) {
        BenchLink *l = userdata;

        if (priority <= LOG_WARNING && !l->error[0])
                snprintf(l->error, sizeof(l->error), "%s", message);
}

static int spawn_socket_receivers(BenchLink *l) {
        int type = l->transport == BENCH_TRANSPORT_SOCKET ? SOCK_STREAM : SOCK_SEQPACKET;
        BenchHelperFn fn =
                l->transport == BENCH_TRANSPORT_SOCKET ? socket_receiver : memfd_receiver;
        int r;

        /* Each pair is made just before its receiver is forked, and the
         * receiver's end closed in the bench right after: so no receiver
         * holds another's end, and each sees EOF when the bench closes its. */
        for (unsigned i = 0; i < l->n; i++) {
                int sv[2];

                if (socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) < 0)
                        return -errno;
                if (l->transport == BENCH_TRANSPORT_SOCKET)
                        (void) fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
                l->group.parent_fds[i] = sv[0];
                l->child_fds[i] = sv[1];
                r = bench_group_spawn(&l->group, fn, l);
                close(sv[1]);
                l->child_fds[i] = -1;
                if (r < 0)
                        return r;
        }
        return 0;
}

static int wait_ready(BenchLink *l) {
        for (unsigned i = 0; i < l->n; i++) {
                BenchAck a;
                int r;

                r = bench_ack_read(&l->group, &a, LINK_READY_TIMEOUT_MS, -1, 0, NULL, NULL);
                if (r < 0)
                        return r;
                if (!(a.flags & BENCH_ACK_READY))
                        return -EPROTO;
        }
        return 0;
}

static bool is_bus(BenchTransport t) {
        return t >= BENCH_TRANSPORT_BUS_INLINE;
}

int bench_link_open(BenchLink *l, BenchTransport transport, unsigned n, const char *address,
                    size_t max_size) {
        int r;

        *l = (BenchLink){ .transport = transport, .n = n, .address = address };
        for (unsigned i = 0; i < BENCH_MAX_RECEIVERS; i++)
                l->child_fds[i] = -1;
        r = bench_group_init(&l->group);
        if (r < 0)
                return r;
        if (n == 0 || n > BENCH_MAX_RECEIVERS)
                return -EINVAL;
        if (is_bus(transport)) {
                for (unsigned i = 0; i < n && r >= 0; i++)
                        r = bench_group_spawn(&l->group, bus_receiver, l);
        } else
                r = spawn_socket_receivers(l);
        if (r >= 0)
                r = wait_ready(l);
        if (r < 0)
                return r;
        if (transport == BENCH_TRANSPORT_SOCKET) {
                l->buf = malloc(max_size > 0 ? max_size : 1);
                if (!l->buf)
                        return -ENOMEM;
        }
        if (is_bus(transport)) {
                r = bus_client_open(&l->client, address);
                if (r < 0)
                        return r;
                bus_client_set_log(l->client, on_log, l);
        }
        return 0;
}

int bench_link_send(BenchLink *l, uint64_t size, uint64_t seed, uint64_t *ret_sum) {
        if (size % 8 != 0)
                return -EINVAL;
        switch (l->transport) {
        case BENCH_TRANSPORT_SOCKET:
                return send_socket(l, size, seed, ret_sum);
        case BENCH_TRANSPORT_MEMFD:
                return send_memfd(l, size, seed, ret_sum);
        default:
                return send_bus(l, size, seed, ret_sum);
        }
}

int bench_link_ack(BenchLink *l, BenchAck *ret, int timeout_ms) {
        if (l->client)
                return bench_ack_read(&l->group, ret, timeout_ms, bus_client_get_fd(l->client),
                                      (short) bus_client_get_events(l->client), pump, l);
        return bench_ack_read(&l->group, ret, timeout_ms, -1, 0, NULL, NULL);
}

const char *bench_link_strerror(BenchLink *l, int r) {
        if (r == -EREMOTEIO && l->error[0])
                return l->error;
        if (r == -ECHILD)
                return "a receiver exited";
        return strerror(-r);
}

int bench_link_close(BenchLink *l) {
        int failed;

        if (l->client) {
                (void) bus_client_flush(l->client);
                l->client = bus_client_unref(l->client);
        }
        failed = bench_group_finish(&l->group);
        free(l->buf);
        l->buf = NULL;
        return failed;
}

/* ---- Helpers with a bus_client of their own. */

static int echo_payload(bus_message *m, void *userdata) {
        bus_client *c = userdata;
        const void *data;
        size_t size;
        int r;

        r = bus_message_get_payload(m, &data, &size);
        if (r < 0)
                return r;
        return bus_client_reply(c, m, data, size);
}

int bench_echo_server(BenchGroup *g, unsigned index, void *userdata) {
        const BenchEchoServer *e = userdata;
        BenchAck ready = { .receiver = index, .flags = BENCH_ACK_READY };
        bus_client *c = NULL;
        int r;

        r = bus_client_open(&c, e->address);
        if (r >= 0) {
                r = bus_client_request_name(c, e->name, BUS_NAME_DO_NOT_QUEUE);
                if (r >= 0 && r != BUS_NAME_PRIMARY_OWNER)
                        r = -EADDRINUSE;
        }
        if (r >= 0)
                r = bus_client_add_method(c, NULL, e->name, e->method, echo_payload, c);
        if (r >= 0)
                r = bench_ack_send(g, &ready);
        if (r >= 0)
                r = bench_bus_loop(g, c);
        if (r < 0)
                fprintf(stderr, "busd-bench: %s: the echo server failed: %s\n", e->label,
                        strerror(-r));
        bus_client_unref(c);
        return r < 0 ? 1 : 0;
}

int bench_bus_loop(BenchGroup *g, bus_client *c) {
        int r;

        for (;;) {
                struct pollfd p[2];

                while ((r = bus_client_process(c)) > 0)
                        ;
                if (r < 0)
                        return r;
                p[0] = (struct pollfd){ .fd = bus_client_get_fd(c),
                                        .events = (short) bus_client_get_events(c) };
                p[1] = (struct pollfd){ .fd = g->ctl[0], .events = POLLIN };
                if (poll(p, 2, -1) < 0 && errno != EINTR)
                        return -errno;
                if (p[1].revents) /* EOF: the bench is done with us */
                        return 0;
        }
}
