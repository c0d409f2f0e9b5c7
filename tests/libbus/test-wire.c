/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Frame codec, reader and writer over real socketpairs: round trips, frames
 * split at every byte, large frames, batching, descriptors riding with their
 * frame, and every kind of malformed input the reader must refuse.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "libbus/macro.h"
#include "libbus/sockio.h"
#include "libbus/wire.h"
#include "tests/lib/tap.h"

#define MAX_ENV 1024u
#define MAX_PAYLOAD (1u << 20)

static void socket_pair(int sv[2]) {
        assert(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == 0);
}

/* A frame as raw bytes: preamble, envelope of env_len 'E's, payload of
 * payload_len bytes counting up. */
static size_t frame_bytes(uint8_t *buf, uint32_t env_len, uint32_t payload_len, uint16_t n_fds) {
        wire_preamble_encode(buf, &(WirePreamble){ env_len, payload_len, n_fds, 0 });
        memset(buf + WIRE_PREAMBLE_SIZE, 'E', env_len);
        for (uint32_t i = 0; i < payload_len; i++)
                buf[WIRE_PREAMBLE_SIZE + env_len + i] = (uint8_t) i;
        return WIRE_PREAMBLE_SIZE + env_len + payload_len;
}

static bool frame_is(const WireFrame *f, uint32_t env_len, uint32_t payload_len) {
        if (f->preamble.envelope_len != env_len || f->preamble.payload_len != payload_len)
                return false;
        for (uint32_t i = 0; i < env_len; i++)
                if (f->envelope[i] != 'E')
                        return false;
        for (uint32_t i = 0; i < payload_len; i++)
                if (f->payload[i] != (uint8_t) i)
                        return false;
        return true;
}

/* Reads until one frame or an error; returns wire_reader_next()'s result or
 * the reader error. */
static int read_frame(WireReader *r, int fd, WireFrame *f) {
        for (int i = 0; i < 10000; i++) {
                int k = wire_reader_next(r, f);
                if (k != 0)
                        return k;
                k = wire_reader_recv(r, fd);
                if (k < 0 && k != -EAGAIN)
                        return k;
        }
        return 0;
}

static int send_with_fds(int fd, const void *data, size_t len, const int *fds, unsigned n) {
        union {
                struct cmsghdr align;
                uint8_t buf[CMSG_SPACE(sizeof(int) * 8)];
        } control = {};
        struct iovec iov = { (void *) data, len };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

        if (n > 0) {
                mh.msg_control = &control;
                mh.msg_controllen = CMSG_SPACE(sizeof(int) * n);
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * n);
                memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
        }
        return sendmsg(fd, &mh, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

static void test_preamble_round_trip(void) {
        uint8_t buf[WIRE_PREAMBLE_SIZE];
        WirePreamble in = { 7, 1000, 3, 0 }, out;

        wire_preamble_encode(buf, &in);
        tap_check(buf[0] == 0x01 && buf[1] == 0x00 && buf[2] == 0x5D && buf[3] == 0xB0);
        tap_check_int(wire_preamble_decode(buf, &out, MAX_ENV, MAX_PAYLOAD, 16), 0);
        tap_check(out.envelope_len == 7 && out.payload_len == 1000 && out.n_fds == 3);
}

static void test_preamble_rejects(void) {
        uint8_t buf[WIRE_PREAMBLE_SIZE];
        WirePreamble out;

        wire_preamble_encode(buf, &(WirePreamble){ 1, 0, 0, 0 });
        buf[3] = 0xAA;
        tap_check_int(wire_preamble_decode(buf, &out, MAX_ENV, MAX_PAYLOAD, 16), -EBADMSG);
        wire_preamble_encode(buf, &(WirePreamble){ 1, 0, 0, 0 });
        buf[0] = 2;
        tap_check_int(wire_preamble_decode(buf, &out, MAX_ENV, MAX_PAYLOAD, 16), -EPROTONOSUPPORT);
        wire_preamble_encode(buf, &(WirePreamble){ 1, 0, 0, 1 });
        tap_check_int(wire_preamble_decode(buf, &out, MAX_ENV, MAX_PAYLOAD, 16), -EBADMSG);
        wire_preamble_encode(buf, &(WirePreamble){ 0, 5, 0, 0 });
        tap_check_int(wire_preamble_decode(buf, &out, MAX_ENV, MAX_PAYLOAD, 16), -EBADMSG);
        wire_preamble_encode(buf, &(WirePreamble){ MAX_ENV + 1, 0, 0, 0 });
        tap_check_int(wire_preamble_decode(buf, &out, MAX_ENV, MAX_PAYLOAD, 16), -EMSGSIZE);
        wire_preamble_encode(buf, &(WirePreamble){ 1, MAX_PAYLOAD + 1, 0, 0 });
        tap_check_int(wire_preamble_decode(buf, &out, MAX_ENV, MAX_PAYLOAD, 16), -EMSGSIZE);
        wire_preamble_encode(buf, &(WirePreamble){ 1, UINT32_MAX, 0, 0 });
        tap_check_int(wire_preamble_decode(buf, &out, MAX_ENV, MAX_PAYLOAD, 16), -EMSGSIZE);
        wire_preamble_encode(buf, &(WirePreamble){ 1, 0, 17, 0 });
        tap_check_int(wire_preamble_decode(buf, &out, MAX_ENV, MAX_PAYLOAD, 16), -ETOOMANYREFS);
        tap_check(strlen(wire_strerror(-EMSGSIZE)) > 0);
}

static void test_varints(void) {
        uint8_t buf[32];

        tap_check_int(wire_put_varint(buf, 0), 1);
        tap_check_int(wire_put_varint(buf, 127), 1);
        tap_check_int(wire_put_varint(buf, 128), 2);
        tap_check(buf[0] == 0x80 && buf[1] == 0x01);
        tap_check_int(wire_put_varint(buf, UINT64_MAX), 10);
        tap_check_int(wire_put_tag_varint(buf, 20, 5), 3); /* tag 160 takes two bytes */
        tap_check(buf[0] == 0xA0 && buf[1] == 0x01 && buf[2] == 5);
        tap_check_int(wire_put_tag_bytes(buf, 16, "abc", 3), 2 + 1 + 3);
}

static void test_reader_frames_split_at_every_byte(void) {
        uint8_t buf[512];
        size_t n = frame_bytes(buf, 10, 100, 0);
        int sv[2];

        n += frame_bytes(buf + n, 1, 0, 0);
        socket_pair(sv);
        for (size_t cut = 1; cut < n; cut++) {
                WireReader r;
                WireFrame f;

                wire_reader_init(&r, 0, MAX_ENV, MAX_PAYLOAD, 16);
                assert(write(sv[0], buf, cut) == (ssize_t) cut);
                (void) wire_reader_recv(&r, sv[1]);
                assert(write(sv[0], buf + cut, n - cut) == (ssize_t) (n - cut));
                tap_check_int(read_frame(&r, sv[1], &f), 1);
                tap_check(frame_is(&f, 10, 100));
                wire_frame_release(&f);
                tap_check_int(read_frame(&r, sv[1], &f), 1);
                tap_check(frame_is(&f, 1, 0));
                wire_frame_release(&f);
                tap_check_int(wire_reader_next(&r, &f), 0);
                wire_reader_deinit(&r);
        }
        close(sv[0]);
        close(sv[1]);
}

/* Frames outlive the reader's buffer: a held frame keeps its chunk. */
static void test_reader_frames_outlive_buffer(void) {
        static uint8_t buf[40000];
        WireFrame held[20];
        WireReader r;
        int sv[2];
        size_t n;

        socket_pair(sv);
        wire_reader_init(&r, 8192, MAX_ENV, MAX_PAYLOAD, 16);
        n = frame_bytes(buf, 50, 1500, 0);
        for (int i = 0; i < 20; i++) {
                assert(write(sv[0], buf, n) == (ssize_t) n);
                tap_check_int(read_frame(&r, sv[1], &held[i]), 1);
        }
        for (int i = 0; i < 20; i++) {
                tap_check(frame_is(&held[i], 50, 1500));
                wire_frame_release(&held[i]);
        }
        wire_reader_deinit(&r);
        close(sv[0]);
        close(sv[1]);
}

static void test_reader_large_frame(void) {
        uint32_t payload = 900000;
        uint8_t *buf = malloc(WIRE_PREAMBLE_SIZE + 8 + payload);
        size_t n = frame_bytes(buf, 8, payload, 0), off = 0;
        WireReader r;
        WireFrame f;
        int sv[2], k = 0;

        socket_pair(sv);
        wire_reader_init(&r, 0, MAX_ENV, MAX_PAYLOAD, 16);
        /* Write and read in turns: the socket buffer is smaller than the frame. */
        while (k == 0) {
                if (off < n) {
                        ssize_t w = write(sv[0], buf + off, n - off);
                        if (w > 0)
                                off += (size_t) w;
                }
                k = wire_reader_next(&r, &f);
                if (k == 0) {
                        int e = wire_reader_recv(&r, sv[1]);
                        assert(e > 0 || e == -EAGAIN);
                }
        }
        tap_check_int(k, 1);
        tap_check(frame_is(&f, 8, payload));
        /* A frame larger than the normal chunk got a chunk of its exact size. */
        tap_check(f.chunk->size >= n);
        wire_frame_release(&f);
        wire_reader_deinit(&r);
        free(buf);
        close(sv[0]);
        close(sv[1]);
}

static int reader_result_for(const void *data, size_t len) {
        WireReader r;
        WireFrame f;
        int sv[2], k;

        socket_pair(sv);
        wire_reader_init(&r, 0, MAX_ENV, MAX_PAYLOAD, 16);
        assert(write(sv[0], data, len) == (ssize_t) len);
        close(sv[0]);
        k = read_frame(&r, sv[1], &f);
        if (k > 0)
                wire_frame_release(&f);
        wire_reader_deinit(&r);
        close(sv[1]);
        return k;
}

static void test_reader_rejects_bad_input(void) {
        uint8_t buf[2048];
        size_t n;

        memset(buf, 0x5a, sizeof(buf));
        tap_check_int(reader_result_for(buf, sizeof(buf)), -EBADMSG);
        n = frame_bytes(buf, MAX_ENV + 1, 0, 0);
        tap_check_int(reader_result_for(buf, WIRE_PREAMBLE_SIZE), -EMSGSIZE);
        wire_preamble_encode(buf, &(WirePreamble){ 4, MAX_PAYLOAD + 1, 0, 0 });
        tap_check_int(reader_result_for(buf, WIRE_PREAMBLE_SIZE), -EMSGSIZE);
        /* Truncated: the peer closes in the middle of a frame. */
        n = frame_bytes(buf, 10, 100, 0);
        tap_check_int(reader_result_for(buf, n - 1), -ECONNRESET);
        tap_check_int(reader_result_for(buf, 3), -ECONNRESET);
        /* Declares descriptors that never came. */
        n = frame_bytes(buf, 10, 0, 2);
        tap_check_int(reader_result_for(buf, n), -EPROTO);
}

static void test_reader_fds(void) {
        uint8_t buf[256];
        int sv[2], p[2], fds[2];
        WireReader r;
        WireFrame f;
        size_t n;
        char c = 0;

        socket_pair(sv);
        assert(pipe2(p, O_CLOEXEC) == 0);
        wire_reader_init(&r, 0, MAX_ENV, MAX_PAYLOAD, 16);

        /* Two frames, the second one carrying both ends of a pipe. */
        n = frame_bytes(buf, 4, 4, 0);
        tap_check_int(send_with_fds(sv[0], buf, n, NULL, 0), 0);
        n = frame_bytes(buf, 4, 4, 2);
        fds[0] = p[0];
        fds[1] = p[1];
        tap_check_int(send_with_fds(sv[0], buf, n, fds, 2), 0);

        tap_check_int(read_frame(&r, sv[1], &f), 1);
        tap_check(f.fds == NULL);
        wire_frame_release(&f);
        tap_check_int(read_frame(&r, sv[1], &f), 1);
        tap_check(f.fds && f.fds->n == 2);
        if (f.fds) {
                tap_check(fcntl(f.fds->fds[0], F_GETFD) == FD_CLOEXEC);
                tap_check(write(f.fds->fds[1], "x", 1) == 1);
                tap_check(read(p[0], &c, 1) == 1 && c == 'x');
        }
        wire_frame_release(&f);

        /* Descriptors no frame declares are a protocol error, found as soon
         * as the frame they came with is parsed. */
        n = frame_bytes(buf, 4, 4, 0);
        tap_check_int(send_with_fds(sv[0], buf, n, fds, 1), 0);
        tap_check_int(read_frame(&r, sv[1], &f), 1);
        wire_frame_release(&f);
        tap_check_int(wire_reader_next(&r, &f), -EPROTO);

        wire_reader_deinit(&r);
        close(p[0]);
        close(p[1]);
        close(sv[0]);
        close(sv[1]);
}

static void test_writer_batches_and_carries_fds(void) {
        WireWriter w;
        WireReader r;
        WireFrame f;
        uint8_t env[4] = "EEEE", payload[64];
        int sv[2], p[2], k, got = 0, with_fds = 0;

        for (unsigned i = 0; i < sizeof(payload); i++)
                payload[i] = (uint8_t) i;
        socket_pair(sv);
        assert(pipe2(p, O_CLOEXEC) == 0);
        wire_writer_init(&w);
        wire_reader_init(&r, 0, MAX_ENV, MAX_PAYLOAD, 16);

        for (int i = 0; i < 100; i++) {
                WireEntry *e = wire_writer_entry_new(&w);
                unsigned n_fds = i % 10 == 5 ? 1 : 0;

                wire_preamble_encode(e->head, &(WirePreamble){ 4, 64, (uint16_t) n_fds, 0 });
                wire_entry_add(e, e->head, WIRE_PREAMBLE_SIZE);
                wire_entry_add(e, env, 4);
                wire_entry_add(e, payload, 64);
                if (n_fds) {
                        e->fds = wire_fds_new(1);
                        e->fds->fds[0] = fcntl(p[1], F_DUPFD_CLOEXEC, 3);
                }
                wire_writer_push(&w, e);
        }
        tap_check_int(w.queued_frames, 100);
        tap_check_int(w.queued_fds, 10);
        tap_check_int(wire_writer_flush(&w, sv[0]), 1);
        tap_check(wire_writer_is_empty(&w));
        tap_check_int(w.queued_bytes, 0);

        while ((k = read_frame(&r, sv[1], &f)) == 1) {
                tap_check(frame_is(&f, 4, 64));
                if (f.fds)
                        with_fds++;
                tap_check((got % 10 == 5) == (f.fds != NULL));
                wire_frame_release(&f);
                if (++got == 100)
                        break;
        }
        tap_check_int(got, 100);
        tap_check_int(with_fds, 10);

        wire_writer_deinit(&w);
        wire_reader_deinit(&r);
        close(p[0]);
        close(p[1]);
        close(sv[0]);
        close(sv[1]);
}

static void test_writer_partial_writes(void) {
        static uint8_t payload[300000];
        WireWriter w;
        WireReader r;
        WireFrame f;
        uint8_t env[4] = "EEEE";
        int sv[2], got = 0;

        for (unsigned i = 0; i < sizeof(payload); i++)
                payload[i] = (uint8_t) i;
        socket_pair(sv);
        wire_writer_init(&w);
        wire_reader_init(&r, 0, MAX_ENV, MAX_PAYLOAD, 16);
        for (int i = 0; i < 4; i++) {
                WireEntry *e = wire_writer_entry_new(&w);
                wire_preamble_encode(e->head, &(WirePreamble){ 4, sizeof(payload), 0, 0 });
                wire_entry_add(e, e->head, WIRE_PREAMBLE_SIZE);
                wire_entry_add(e, env, 4);
                wire_entry_add(e, payload, sizeof(payload));
                wire_writer_push(&w, e);
        }
        /* The socket takes less than a frame at a time: flush and read in
         * turns until everything went through. */
        while (got < 4) {
                int k = wire_writer_flush(&w, sv[0]);
                tap_check(k >= 0);
                while (wire_reader_recv(&r, sv[1]) > 0)
                        while (wire_reader_next(&r, &f) == 1) {
                                tap_check(frame_is(&f, 4, sizeof(payload)));
                                wire_frame_release(&f);
                                got++;
                        }
        }
        tap_check(wire_writer_is_empty(&w));
        wire_writer_deinit(&w);
        wire_reader_deinit(&r);
        close(sv[0]);
        close(sv[1]);
}

static void test_writer_broken_pipe(void) {
        WireWriter w;
        WireEntry *e;
        uint8_t env[4] = "EEEE";
        int sv[2];

        socket_pair(sv);
        close(sv[1]);
        wire_writer_init(&w);
        e = wire_writer_entry_new(&w);
        wire_preamble_encode(e->head, &(WirePreamble){ 4, 0, 0, 0 });
        wire_entry_add(e, e->head, WIRE_PREAMBLE_SIZE);
        wire_entry_add(e, env, 4);
        wire_writer_push(&w, e);
        tap_check_int(wire_writer_flush(&w, sv[0]), -EPIPE);
        wire_writer_deinit(&w);
        close(sv[0]);
}

int main(void) {
        tap_init();
        TAP_RUN(test_preamble_round_trip);
        TAP_RUN(test_preamble_rejects);
        TAP_RUN(test_varints);
        TAP_RUN(test_reader_frames_split_at_every_byte);
        TAP_RUN(test_reader_frames_outlive_buffer);
        TAP_RUN(test_reader_large_frame);
        TAP_RUN(test_reader_rejects_bad_input);
        TAP_RUN(test_reader_fds);
        TAP_RUN(test_writer_batches_and_carries_fds);
        TAP_RUN(test_writer_partial_writes);
        TAP_RUN(test_writer_broken_pipe);
        return tap_done();
}
