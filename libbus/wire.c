/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Frame preamble codec, refcounted chunks and descriptor sets, and the varint
 * helpers that let the broker append stamped fields to an envelope in place.
 * See wire.h for the frame layout.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "libbus/macro.h"
#include "libbus/wire.h"

static void put_le32(uint8_t *p, uint32_t v) {
        p[0] = v;
        p[1] = v >> 8;
        p[2] = v >> 16;
        p[3] = v >> 24;
}

static void put_le16(uint8_t *p, uint16_t v) {
        p[0] = v;
        p[1] = v >> 8;
}

static uint32_t get_le32(const uint8_t *p) {
        return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 |
               (uint32_t) p[3] << 24;
}

static uint16_t get_le16(const uint8_t *p) {
        return (uint16_t) (p[0] | p[1] << 8);
}

void wire_preamble_encode(uint8_t out[WIRE_PREAMBLE_SIZE], const WirePreamble *p) {
        put_le32(out, WIRE_MAGIC | WIRE_VERSION);
        put_le32(out + 4, p->envelope_len);
        put_le32(out + 8, p->payload_len);
        put_le16(out + 12, p->n_fds);
        put_le16(out + 14, p->flags);
}

int wire_preamble_decode(const uint8_t in[WIRE_PREAMBLE_SIZE], WirePreamble *ret,
                         uint32_t max_envelope, uint32_t max_payload, uint32_t max_fds) {
        uint32_t magic = get_le32(in);
        WirePreamble p = {
                .envelope_len = get_le32(in + 4),
                .payload_len = get_le32(in + 8),
                .n_fds = get_le16(in + 12),
                .flags = get_le16(in + 14),
        };

        if ((magic & WIRE_MAGIC_MASK) != WIRE_MAGIC)
                return -EBADMSG;
        if ((magic & ~WIRE_MAGIC_MASK) != WIRE_VERSION)
                return -EPROTONOSUPPORT;
        if (p.flags != 0)
                return -EBADMSG;
        /* An envelope is mandatory: it carries at least the kind. */
        if (p.envelope_len == 0)
                return -EBADMSG;
        if (p.envelope_len > max_envelope || p.payload_len > max_payload)
                return -EMSGSIZE;
        if (p.n_fds > max_fds)
                return -ETOOMANYREFS;
        *ret = p;
        return 0;
}

const char *wire_strerror(int error) {
        switch (error) {
        case -EBADMSG:
                return "malformed frame (bad magic, flags or envelope)";
        case -EPROTONOSUPPORT:
                return "unsupported protocol version";
        case -EMSGSIZE:
                return "frame larger than the broker's limit";
        case -ETOOMANYREFS:
                return "too many file descriptors in one frame";
        case -EPROTO:
                return "file descriptors do not match the frame's count";
        case -ENOBUFS:
                return "file descriptors truncated (MSG_CTRUNC)";
        default:
                return "protocol error";
        }
}

WireChunk *wire_chunk_new(size_t size) {
        WireChunk *c = malloc(sizeof(*c) + size);

        if (!c)
                return NULL;
        c->refs = 1;
        c->size = size;
        c->used = 0;
        return c;
}

WireChunk *wire_chunk_ref(WireChunk *c) {
        assert(c->refs > 0);
        c->refs++;
        return c;
}

WireChunk *wire_chunk_unref(WireChunk *c) {
        if (!c)
                return NULL;
        assert(c->refs > 0);
        if (--c->refs == 0)
                free(c);
        return NULL;
}

WireFds *wire_fds_new(unsigned n) {
        WireFds *f = malloc(sizeof(*f) + n * sizeof(int));

        if (!f)
                return NULL;
        f->refs = 1;
        f->n = n;
        f->on_free = NULL;
        f->on_free_userdata = NULL;
        for (unsigned i = 0; i < n; i++)
                f->fds[i] = -1;
        return f;
}

WireFds *wire_fds_ref(WireFds *f) {
        assert(f->refs > 0);
        f->refs++;
        return f;
}

WireFds *wire_fds_unref(WireFds *f) {
        if (!f)
                return NULL;
        assert(f->refs > 0);
        if (--f->refs == 0) {
                if (f->on_free)
                        f->on_free(f, f->on_free_userdata);
                for (unsigned i = 0; i < f->n; i++)
                        safe_close(f->fds[i]);
                free(f);
        }
        return NULL;
}

size_t wire_put_varint(uint8_t *out, uint64_t v) {
        size_t n = 0;

        while (v >= 0x80) {
                out[n++] = (uint8_t) (v | 0x80);
                v >>= 7;
        }
        out[n++] = (uint8_t) v;
        return n;
}

size_t wire_put_tag_varint(uint8_t *out, uint32_t field, uint64_t v) {
        size_t n = wire_put_varint(out, (uint64_t) field << 3 | 0);

        return n + wire_put_varint(out + n, v);
}

size_t wire_put_tag_bytes(uint8_t *out, uint32_t field, const void *data, size_t len) {
        size_t n = wire_put_varint(out, (uint64_t) field << 3 | 2);

        n += wire_put_varint(out + n, len);
        memcpy(out + n, data, len);
        return n + len;
}
