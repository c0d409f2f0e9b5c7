/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Socket I/O of frames, shared by libbus and busd: a WireReader that receives
 * bytes and descriptors and cuts them into frames in place, and a WireWriter
 * that queues outgoing frames and sends many of them with one sendmsg().
 *
 * Reader invariants: every frame returned references the chunk it was parsed
 * from and owns the descriptors it declared; received descriptors wait in a
 * FIFO until a frame claims them. Descriptors ride with a frame's first byte,
 * so when every buffered byte has been parsed into frames no descriptor may be
 * left over: a leftover, a frame declaring more descriptors than arrived, or
 * MSG_CTRUNC is a protocol error.
 *
 * Writer invariants: a frame carrying descriptors always starts a new
 * sendmsg(), so its SCM_RIGHTS travels with its first byte, as the protocol
 * requires; frames without descriptors are batched freely behind it.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "libbus/wire.h"

typedef struct WireFrame {
        WirePreamble preamble;
        WireChunk *chunk;        /* reference; holds envelope and payload bytes */
        const uint8_t *envelope; /* preamble.envelope_len bytes */
        const uint8_t *payload;  /* preamble.payload_len bytes */
        WireFds *fds;            /* reference, or NULL when the frame has none */
} WireFrame;

void wire_frame_release(WireFrame *f);

typedef struct WireReader {
        WireChunk *chunk;   /* receive buffer, NULL until the first read */
        size_t parsed;      /* bytes of chunk already handed out as frames */
        size_t chunk_size;  /* normal size of a receive buffer */
        uint32_t max_envelope;
        uint32_t max_payload;
        uint32_t max_fds;   /* per frame */
        int *fd_queue;      /* received descriptors not yet claimed by a frame */
        unsigned n_fd_queue;
        unsigned fd_queue_size;
} WireReader;

int wire_reader_init(WireReader *r, size_t chunk_size, uint32_t max_envelope,
                     uint32_t max_payload, uint32_t max_fds);
void wire_reader_deinit(WireReader *r);

/* One recvmsg() into the buffer. Returns the number of bytes read (> 0), or
 *   -EAGAIN       nothing to read now
 *   -ECONNRESET   the peer closed the connection (also for end of file)
 *   -ENOBUFS      descriptors were truncated (MSG_CTRUNC): protocol error
 *   -ETOOMANYREFS more unclaimed descriptors than frames could carry
 *   -ENOMEM, or another -errno from recvmsg() */
int wire_reader_recv(WireReader *r, int fd);

/* Cuts the next complete frame out of the buffer. Returns 1 and fills *ret (the
 * caller must wire_frame_release() it), 0 when more bytes are needed, or a
 * protocol error from wire_preamble_decode(), or -EPROTO for descriptors that
 * do not match the frames' counts. */
int wire_reader_next(WireReader *r, WireFrame *ret);

/* Bytes buffered but not yet parsed into frames. */
static inline size_t wire_reader_pending(const WireReader *r) {
        return r->chunk ? r->chunk->used - r->parsed : 0;
}

#define WIRE_ENTRY_IOV 5
#define WIRE_ENTRY_HEAD 64

/* One queued outgoing frame: up to WIRE_ENTRY_IOV pieces, a small inline head
 * (preamble and per-recipient bytes) and references that keep the other pieces
 * alive until the frame is sent. */
typedef struct WireEntry {
        struct WireEntry *next;
        struct iovec iov[WIRE_ENTRY_IOV];
        unsigned n_iov;
        size_t size;        /* total bytes of the frame */
        size_t sent;        /* bytes already written */
        WireChunk *pins[3];
        WireFds *fds;
        uint8_t head[WIRE_ENTRY_HEAD];
} WireEntry;

/* Recycled entries, so queueing a frame does not malloc. A writer has its
 * own small pool; the broker gives all its writers one shared pool instead,
 * sized for bursts, so idle connections hold no spare entries. */
typedef struct WireEntryPool {
        WireEntry *free_list;
        unsigned n_free;
        unsigned max;
} WireEntryPool;

void wire_entry_pool_init(WireEntryPool *pool, unsigned max);
void wire_entry_pool_clear(WireEntryPool *pool); /* frees the spare entries */

typedef struct WireWriter {
        WireEntry *first;
        WireEntry **last_next;
        size_t queued_bytes;
        unsigned queued_frames;
        unsigned queued_fds;
        WireEntryPool *pool;   /* &own_pool, or a shared one */
        WireEntryPool own_pool;
} WireWriter;

void wire_writer_init(WireWriter *w);
/* Makes the writer take and return entries from pool (which must outlive
 * it) instead of its own. Call right after wire_writer_init(). */
void wire_writer_set_pool(WireWriter *w, WireEntryPool *pool);
void wire_writer_deinit(WireWriter *w);  /* drops every queued frame */

/* A cleared entry, from the free list when possible. NULL on ENOMEM. */
WireEntry *wire_writer_entry_new(WireWriter *w);
/* Appends an iovec piece; at most WIRE_ENTRY_IOV per entry. */
void wire_entry_add(WireEntry *e, const void *data, size_t len);
/* Returns an entry that was never queued (its pins and fds are released). */
void wire_writer_entry_discard(WireWriter *w, WireEntry *e);
void wire_writer_push(WireWriter *w, WireEntry *e);

static inline bool wire_writer_is_empty(const WireWriter *w) {
        return !w->first;
}

/* Sends as much as the socket takes. Returns 1 when the queue is empty, 0 when
 * the socket is full (-EAGAIN was hit), or a negative errno (-EPIPE,
 * -ECONNRESET, ...) when the connection is broken. */
int wire_writer_flush(WireWriter *w, int fd);
