/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Frame reader and writer over a non-blocking AF_UNIX stream socket. See
 * sockio.h for the invariants about descriptors.
 *
 * Reading: bytes land in a refcounted chunk and frames are cut out of it in
 * place. Only the unparsed tail of a partial frame is ever copied, into a
 * fresh chunk when the old one is full or still referenced by frames in
 * flight; a frame too large for a normal chunk gets a chunk of its exact size,
 * so a big payload is read straight to its final place.
 *
 * Writing: queued entries are gathered into one iovec array per sendmsg().
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>

#include "libbus/macro.h"
#include "libbus/sockio.h"

/* Read no less than this at once, or a new chunk is started. */
#define READ_MIN 4096u
/* Entries a writer's own pool keeps for reuse. */
#define FREE_ENTRIES_MAX 256u
/* Bound on one sendmsg(): iovecs and bytes. */
#define BATCH_IOV_MAX 1024u
#define BATCH_BYTES_MAX (4u * 1024u * 1024u)

void wire_frame_release(WireFrame *f) {
        f->chunk = wire_chunk_unref(f->chunk);
        f->fds = wire_fds_unref(f->fds);
}

int wire_reader_init(WireReader *r, size_t chunk_size, uint32_t max_envelope,
                     uint32_t max_payload, uint32_t max_fds) {
        *r = (WireReader){
                .chunk_size = MAX(chunk_size, (size_t) READ_MIN * 2),
                .max_envelope = max_envelope,
                .max_payload = max_payload,
                .max_fds = MIN(max_fds, WIRE_FDS_MAX),
        };
        return 0;
}

void wire_reader_deinit(WireReader *r) {
        r->chunk = wire_chunk_unref(r->chunk);
        for (unsigned i = 0; i < r->n_fd_queue; i++)
                safe_close(r->fd_queue[i]);
        free(r->fd_queue);
        r->fd_queue = NULL;
        r->n_fd_queue = r->fd_queue_size = 0;
}

/* Size the partial frame at the tail will need in all, once its preamble is
 * in; otherwise 0. A bad preamble is reported later by wire_reader_next(). */
static size_t partial_frame_size(const WireReader *r) {
        WirePreamble p;

        if (wire_reader_pending(r) < WIRE_PREAMBLE_SIZE)
                return 0;
        if (wire_preamble_decode(r->chunk->data + r->parsed, &p, r->max_envelope,
                                 r->max_payload, r->max_fds) < 0)
                return 0;
        return WIRE_PREAMBLE_SIZE + (size_t) p.envelope_len + p.payload_len;
}

/* Makes room for the next read: keeps the current chunk when it has space,
 * otherwise moves the partial tail to a chunk big enough for it. */
static int reader_make_room(WireReader *r) {
        size_t tail = wire_reader_pending(r), need = partial_frame_size(r), size;
        WireChunk *c;

        if (!r->chunk) {
                r->chunk = wire_chunk_new(r->chunk_size);
                return r->chunk ? 0 : -ENOMEM;
        }
        /* Everything parsed and nobody else holds the chunk: start over,
         * in a normal-sized chunk if this one was grown for a big frame, so
         * one large message does not pin its size for the connection's life. */
        if (tail == 0 && r->chunk->refs == 1) {
                if (r->chunk->size > r->chunk_size) {
                        r->chunk = wire_chunk_unref(r->chunk);
                        r->chunk = wire_chunk_new(r->chunk_size);
                        r->parsed = 0;
                        return r->chunk ? 0 : -ENOMEM;
                }
                r->chunk->used = r->parsed = 0;
                return 0;
        }
        if (r->chunk->size - r->chunk->used >= READ_MIN &&
            (need == 0 || r->parsed + need <= r->chunk->size))
                return 0;
        if (need > 0 && r->parsed + need <= r->chunk->size)
                return 0; /* the rest of this frame fits: read it, however little */

        size = MAX(r->chunk_size, need);
        if (r->chunk->refs == 1 && r->chunk->size >= size) {
                memmove(r->chunk->data, r->chunk->data + r->parsed, tail);
                r->chunk->used = tail;
                r->parsed = 0;
                return 0;
        }
        c = wire_chunk_new(size);
        if (!c)
                return -ENOMEM;
        memcpy(c->data, r->chunk->data + r->parsed, tail);
        c->used = tail;
        wire_chunk_unref(r->chunk);
        r->chunk = c;
        r->parsed = 0;
        return 0;
}

static int reader_queue_fds(WireReader *r, const int *fds, unsigned n) {
        /* Two frames' worth can legitimately wait (one being parsed and the
         * next one's first bytes); more is a peer flooding us. */
        unsigned limit = 2 * WIRE_FDS_MAX;

        if (r->n_fd_queue + n > limit)
                return -ETOOMANYREFS;
        if (r->n_fd_queue + n > r->fd_queue_size) {
                int *q = realloc(r->fd_queue, limit * sizeof(int));
                if (!q)
                        return -ENOMEM;
                r->fd_queue = q;
                r->fd_queue_size = limit;
        }
        memcpy(r->fd_queue + r->n_fd_queue, fds, n * sizeof(int));
        r->n_fd_queue += n;
        return 0;
}

static void close_cmsg_fds(struct msghdr *mh) {
        for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                unsigned n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                int *fds = (int *) CMSG_DATA(c);
                for (unsigned i = 0; i < n; i++)
                        safe_close(fds[i]);
        }
}

int wire_reader_recv(WireReader *r, int fd) {
        union {
                struct cmsghdr align;
                uint8_t buf[CMSG_SPACE(sizeof(int) * WIRE_FDS_MAX)];
        } control;
        struct iovec iov;
        struct msghdr mh = {
                .msg_iov = &iov,
                .msg_iovlen = 1,
                .msg_control = &control,
                .msg_controllen = sizeof(control),
        };
        ssize_t n;
        int r_;

        r_ = reader_make_room(r);
        if (r_ < 0)
                return r_;
        iov.iov_base = r->chunk->data + r->chunk->used;
        iov.iov_len = r->chunk->size - r->chunk->used;

        n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (n < 0)
                return errno == EINTR ? -EAGAIN : negative_errno();

        if (mh.msg_flags & MSG_CTRUNC) {
                /* Some descriptors were lost: we can no longer tell which frame
                 * owns which, so the stream is unusable. */
                close_cmsg_fds(&mh);
                return -ENOBUFS;
        }
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                r_ = reader_queue_fds(r, (int *) CMSG_DATA(c),
                                      (c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                if (r_ < 0) {
                        close_cmsg_fds(&mh);
                        return r_;
                }
        }
        if (n == 0)
                return -ECONNRESET;
        r->chunk->used += (size_t) n;
        return (int) MIN(n, (ssize_t) INT_MAX);
}

int wire_reader_next(WireReader *r, WireFrame *ret) {
        size_t avail = wire_reader_pending(r), total;
        const uint8_t *p;
        WirePreamble pre;
        WireFds *fds = NULL;
        int e;

        if (avail == 0)
                /* Every byte is parsed, so descriptors still queued came with
                 * a frame that did not declare them. */
                return r->n_fd_queue > 0 ? -EPROTO : 0;
        if (avail < WIRE_PREAMBLE_SIZE)
                return 0;

        p = r->chunk->data + r->parsed;
        e = wire_preamble_decode(p, &pre, r->max_envelope, r->max_payload, r->max_fds);
        if (e < 0)
                return e;
        total = WIRE_PREAMBLE_SIZE + (size_t) pre.envelope_len + pre.payload_len;
        if (avail < total)
                return 0;

        if (pre.n_fds > 0) {
                if (pre.n_fds > r->n_fd_queue)
                        return -EPROTO;
                fds = wire_fds_new(pre.n_fds);
                if (!fds)
                        return -ENOMEM;
                memcpy(fds->fds, r->fd_queue, pre.n_fds * sizeof(int));
                r->n_fd_queue -= pre.n_fds;
                memmove(r->fd_queue, r->fd_queue + pre.n_fds, r->n_fd_queue * sizeof(int));
        }

        *ret = (WireFrame){
                .preamble = pre,
                .chunk = wire_chunk_ref(r->chunk),
                .envelope = p + WIRE_PREAMBLE_SIZE,
                .payload = p + WIRE_PREAMBLE_SIZE + pre.envelope_len,
                .fds = fds,
        };
        r->parsed += total;
        return 1;
}

void wire_writer_init(WireWriter *w) {
        *w = (WireWriter){ .last_next = &w->first };
        wire_entry_pool_init(&w->own_pool, FREE_ENTRIES_MAX);
        w->pool = &w->own_pool;
}

static void entry_clear(WireEntry *e) {
        for (unsigned i = 0; i < ELEMENTSOF(e->pins); i++)
                e->pins[i] = wire_chunk_unref(e->pins[i]);
        e->fds = wire_fds_unref(e->fds);
}

void wire_entry_pool_init(WireEntryPool *pool, unsigned max) {
        *pool = (WireEntryPool){ .max = max };
}

void wire_entry_pool_clear(WireEntryPool *pool) {
        WireEntry *e;

        while ((e = pool->free_list)) {
                pool->free_list = e->next;
                free(e);
        }
        pool->n_free = 0;
}

static void writer_recycle(WireWriter *w, WireEntry *e) {
        WireEntryPool *pool = w->pool;

        entry_clear(e);
        if (pool->n_free >= pool->max) {
                free(e);
                return;
        }
        e->next = pool->free_list;
        pool->free_list = e;
        pool->n_free++;
}

void wire_writer_set_pool(WireWriter *w, WireEntryPool *pool) {
        w->pool = pool;
}

void wire_writer_deinit(WireWriter *w) {
        WireEntry *e;

        while ((e = w->first)) {
                w->first = e->next;
                entry_clear(e);
                free(e);
        }
        wire_entry_pool_clear(&w->own_pool);
        wire_writer_init(w);
}

WireEntry *wire_writer_entry_new(WireWriter *w) {
        WireEntryPool *pool = w->pool;
        WireEntry *e = pool->free_list;

        if (e) {
                pool->free_list = e->next;
                pool->n_free--;
        } else {
                e = malloc(sizeof(*e));
                if (!e)
                        return NULL;
        }
        e->next = NULL;
        e->n_iov = 0;
        e->size = e->sent = 0;
        e->pins[0] = e->pins[1] = e->pins[2] = NULL;
        e->fds = NULL;
        return e;
}

void wire_entry_add(WireEntry *e, const void *data, size_t len) {
        assert(e->n_iov < WIRE_ENTRY_IOV);
        if (len == 0)
                return;
        e->iov[e->n_iov++] = (struct iovec){ .iov_base = (void *) data, .iov_len = len };
        e->size += len;
}

void wire_writer_entry_discard(WireWriter *w, WireEntry *e) {
        writer_recycle(w, e);
}

void wire_writer_push(WireWriter *w, WireEntry *e) {
        e->next = NULL;
        *w->last_next = e;
        w->last_next = &e->next;
        w->queued_bytes += e->size;
        w->queued_frames++;
        w->queued_fds += e->fds ? e->fds->n : 0;
}

/* Fills iov with the unsent parts of the queue, from the head, stopping before
 * any later entry with descriptors. Returns the number of iovecs. */
static unsigned writer_gather(WireWriter *w, struct iovec *iov, size_t *ret_bytes) {
        unsigned n = 0;
        size_t bytes = 0;

        for (WireEntry *e = w->first; e; e = e->next) {
                size_t skip = e->sent;

                if (e != w->first && e->fds)
                        break;
                if (n + e->n_iov > BATCH_IOV_MAX || (bytes > 0 && bytes >= BATCH_BYTES_MAX))
                        break;
                for (unsigned i = 0; i < e->n_iov; i++) {
                        if (skip >= e->iov[i].iov_len) {
                                skip -= e->iov[i].iov_len;
                                continue;
                        }
                        iov[n].iov_base = (uint8_t *) e->iov[i].iov_base + skip;
                        iov[n].iov_len = e->iov[i].iov_len - skip;
                        bytes += iov[n].iov_len;
                        n++;
                        skip = 0;
                }
        }
        *ret_bytes = bytes;
        return n;
}

/* Marks n bytes as sent and recycles the entries that are complete. */
static void writer_advance(WireWriter *w, size_t n) {
        WireEntry *e;

        while (n > 0 && (e = w->first)) {
                size_t left = e->size - e->sent;

                if (n < left) {
                        e->sent += n;
                        return;
                }
                n -= left;
                w->first = e->next;
                if (!w->first)
                        w->last_next = &w->first;
                w->queued_bytes -= e->size;
                w->queued_frames--;
                w->queued_fds -= e->fds ? e->fds->n : 0;
                writer_recycle(w, e);
        }
}

int wire_writer_flush(WireWriter *w, int fd) {
        struct iovec iov[BATCH_IOV_MAX];
        union {
                struct cmsghdr align;
                uint8_t buf[CMSG_SPACE(sizeof(int) * WIRE_FDS_MAX)];
        } control;

        while (w->first) {
                struct msghdr mh = { .msg_iov = iov };
                WireEntry *e = w->first;
                size_t bytes;
                ssize_t n;

                mh.msg_iovlen = writer_gather(w, iov, &bytes);
                if (e->fds && e->sent == 0) {
                        struct cmsghdr *c;

                        mh.msg_control = &control;
                        mh.msg_controllen = CMSG_SPACE(sizeof(int) * e->fds->n);
                        memset(&control, 0, mh.msg_controllen);
                        c = CMSG_FIRSTHDR(&mh);
                        c->cmsg_level = SOL_SOCKET;
                        c->cmsg_type = SCM_RIGHTS;
                        c->cmsg_len = CMSG_LEN(sizeof(int) * e->fds->n);
                        memcpy(CMSG_DATA(c), e->fds->fds, sizeof(int) * e->fds->n);
                }
                n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                return 0;
                        return negative_errno();
                }
                writer_advance(w, (size_t) n);
        }
        return 1;
}
