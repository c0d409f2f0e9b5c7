/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The frame codec shared by libbus and busd.
 *
 * A frame is a 16-byte little-endian preamble, an Envelope (protobuf, routing
 * metadata) and an opaque payload:
 *
 *     u32 magic_version | u32 envelope_len | u32 payload_len | u16 n_fds | u16 flags
 *
 * magic_version is WIRE_MAGIC | WIRE_VERSION. Lengths are checked against the
 * receiver's limits before anything is allocated for the frame. File
 * descriptors ride as SCM_RIGHTS on the sendmsg() that carries the frame's
 * first byte; n_fds says how many belong to it.
 *
 * WireChunk is the unit of memory both sides hand around: a refcounted byte
 * buffer. Frames are parsed in place inside the chunk they were read into, and
 * a frame keeps its chunk alive, so a payload can be forwarded by reference.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WIRE_MAGIC 0xB05D0000u
#define WIRE_MAGIC_MASK 0xFFFF0000u
#define WIRE_VERSION 1u
#define WIRE_PREAMBLE_SIZE 16u

/* Hard limits of the protocol; a broker may configure lower ones. */
#define WIRE_ENVELOPE_MAX (64u * 1024u)
#define WIRE_PAYLOAD_MAX (128u * 1024u * 1024u)
#define WIRE_PAYLOAD_DEFAULT_MAX (8u * 1024u * 1024u)
#define WIRE_FDS_MAX 253u /* the kernel's SCM_MAX_FD */

typedef struct WirePreamble {
        uint32_t envelope_len;
        uint32_t payload_len;
        uint16_t n_fds;
        uint16_t flags; /* reserved, must be 0 */
} WirePreamble;

void wire_preamble_encode(uint8_t out[WIRE_PREAMBLE_SIZE], const WirePreamble *p);

/* Decodes and validates a preamble. Returns 0, or:
 *   -EBADMSG          bad magic or non-zero reserved flags
 *   -EPROTONOSUPPORT  unknown protocol version
 *   -EMSGSIZE         envelope or payload larger than the limits given
 *   -ETOOMANYREFS     more fds than max_fds */
int wire_preamble_decode(const uint8_t in[WIRE_PREAMBLE_SIZE], WirePreamble *ret,
                         uint32_t max_envelope, uint32_t max_payload, uint32_t max_fds);

/* Human-readable reason for a negative errno returned by the codec, for the
 * error frame sent before a protocol-error disconnect. */
const char *wire_strerror(int error);

/* ---- Refcounted byte buffers. */

typedef struct WireChunk {
        unsigned refs;
        size_t size; /* capacity of data[] */
        size_t used; /* bytes filled so far */
        uint8_t data[];
} WireChunk;

WireChunk *wire_chunk_new(size_t size);
WireChunk *wire_chunk_ref(WireChunk *c);
WireChunk *wire_chunk_unref(WireChunk *c);
static inline void wire_chunk_unrefp(WireChunk **c) {
        if (*c)
                wire_chunk_unref(*c);
}

/* A refcounted set of descriptors: one received frame's fds, shared by every
 * outgoing copy of that frame and closed when the last copy is released. */
typedef struct WireFds {
        unsigned refs;
        unsigned n;
        /* Called once when the last reference goes, before the descriptors
         * are closed: how the broker returns a memfd's bytes to its
         * sender's quota. NULL for none. */
        void (*on_free)(struct WireFds *f, void *userdata);
        void *on_free_userdata;
        int fds[];
} WireFds;

WireFds *wire_fds_new(unsigned n); /* fds[] set to -1 */
WireFds *wire_fds_ref(WireFds *f);
WireFds *wire_fds_unref(WireFds *f);

/* ---- Varint helpers used to append fields to an encoded Envelope without
 * re-encoding it (protobuf merges repeated encodings of a message: a later
 * scalar wins and repeated fields concatenate). */

size_t wire_put_varint(uint8_t *out, uint64_t v);          /* at most 10 bytes */
size_t wire_put_tag_varint(uint8_t *out, uint32_t field, uint64_t v);
size_t wire_put_tag_bytes(uint8_t *out, uint32_t field, const void *data, size_t len);
