/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Raw frames for tests; see raw-frame.h. */
#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "libbus/wire.h"
#include "tests/lib/raw-frame.h"
#include "tests/lib/util-busd.h"

static int64_t mono_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads exactly len bytes. 0, -EPIPE (EOF first), -ETIMEDOUT, -errno. */
int test_read_exact(int fd, void *buf, size_t len, int timeout_ms) {
        int64_t deadline = mono_ms() + timeout_ms;
        size_t got = 0;

        while (got < len) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                int64_t left = deadline - mono_ms();
                ssize_t n;

                if (left <= 0)
                        return -ETIMEDOUT;
                if (poll(&p, 1, (int) left) < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (p.revents == 0)
                        continue;
                n = read(fd, (uint8_t *) buf + got, len - got);
                if (n == 0)
                        return -EPIPE;
                if (n < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        return -errno;
                }
                got += (size_t) n;
        }
        return 0;
}

/* Reads up to cap bytes until end-of-file. Returns the bytes read, or
 * -ETIMEDOUT (no EOF in time), -ENOBUFS (more than cap), -errno. */
ssize_t test_read_to_eof(int fd, void *buf, size_t cap, int timeout_ms) {
        int64_t deadline = mono_ms() + timeout_ms;
        size_t got = 0;

        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                int64_t left = deadline - mono_ms();
                uint8_t scratch[1];
                ssize_t n;

                if (left <= 0)
                        return -ETIMEDOUT;
                if (poll(&p, 1, (int) left) < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (p.revents == 0)
                        continue;
                if (got < cap)
                        n = read(fd, (uint8_t *) buf + got, cap - got);
                else
                        n = read(fd, scratch, sizeof(scratch));
                if (n == 0)
                        return (ssize_t) got;
                if (n < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        return -errno;
                }
                if (got >= cap)
                        return -ENOBUFS;
                got += (size_t) n;
        }
}

/* Sends one frame whose first byte carries fds as SCM_RIGHTS. */
bool test_raw_send(int fd, const Bus__Envelope *env, const void *payload, size_t plen,
                     const int *fds, unsigned n_fds) {
        size_t elen = bus__envelope__get_packed_size(env), len = WIRE_PREAMBLE_SIZE + elen + plen;
        uint8_t *buf = malloc(len);
        union {
                struct cmsghdr align;
                uint8_t buf[CMSG_SPACE(sizeof(int) * WIRE_FDS_MAX)];
        } control;
        struct iovec iov = { buf, len };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        size_t sent = 0;
        ssize_t n;

        assert(buf && n_fds <= WIRE_FDS_MAX);
        wire_preamble_encode(buf, &(WirePreamble){ (uint32_t) elen, (uint32_t) plen,
                                                   (uint16_t) n_fds, 0 });
        bus__envelope__pack(env, buf + WIRE_PREAMBLE_SIZE);
        if (plen)
                memcpy(buf + WIRE_PREAMBLE_SIZE + elen, payload, plen);
        if (n_fds > 0) {
                struct cmsghdr *c;

                memset(&control, 0, sizeof(control));
                mh.msg_control = &control;
                mh.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
                c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
                memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
        }
        n = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (n > 0)
                sent = (size_t) n;
        while (n > 0 && sent < len) {
                n = send(fd, buf + sent, len - sent, MSG_NOSIGNAL);
                if (n > 0)
                        sent += (size_t) n;
        }
        free(buf);
        return sent == len;
}

/* Reads the next frame's envelope (the caller frees it); NULL on EOF, error
 * or timeout. */
Bus__Envelope *test_raw_read_envelope(int fd, int timeout_ms) {
        uint8_t pre[WIRE_PREAMBLE_SIZE], *buf;
        WirePreamble p;
        Bus__Envelope *env = NULL;

        if (test_read_exact(fd, pre, sizeof(pre), timeout_ms) < 0 ||
            wire_preamble_decode(pre, &p, WIRE_ENVELOPE_MAX, WIRE_PAYLOAD_MAX, 0) < 0)
                return NULL;
        buf = malloc((size_t) p.envelope_len + p.payload_len + 1);
        assert(buf);
        if (test_read_exact(fd, buf, (size_t) p.envelope_len + p.payload_len, timeout_ms) == 0)
                env = bus__envelope__unpack(NULL, p.envelope_len, buf);
        free(buf);
        return env;
}

/* Connects and says Hello. The descriptor, or -1. */
int test_raw_open(const char *address, int timeout_ms) {
        Bus__Envelope env = BUS__ENVELOPE__INIT, *reply;
        Bus__HelloRequest hello = BUS__HELLO_REQUEST__INIT;
        uint8_t payload[64];
        size_t plen;
        int fd = test_connect_raw(address);

        if (fd < 0)
                return -1;
        hello.client_name = (char *) "raw";
        plen = bus__hello_request__pack(&hello, payload);
        env.kind = BUS__KIND__KIND_REQUEST;
        env.serial = 1;
        env.destination = (char *) "bus";
        env.method = (char *) "Hello";
        reply = test_raw_send(fd, &env, payload, plen, NULL, 0) ? test_raw_read_envelope(fd, timeout_ms) : NULL;
        if (!reply || reply->kind != BUS__KIND__KIND_REPLY) {
                bus__envelope__free_unpacked(reply, NULL);
                close(fd);
                return -1;
        }
        bus__envelope__free_unpacked(reply, NULL);
        return fd;
}

