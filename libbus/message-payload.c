/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bus_message's payload and descriptors: where the payload lives (inline in a
 * WireChunk or in a memfd), the shared-memory policy, zero-copy produce, the
 * descriptor API, readying a built message's payload for the wire and
 * checking a received one's. See memfd.c for the page-level choices.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include <libbus/bus.h>

#include "libbus/bus-internal.h"
#include "libbus/macro.h"
#include "libbus/memfd.h"

/* ---- Descriptor storage.
 *
 * A built message keeps its descriptors in one WireFds allocated for the
 * protocol's maximum, so attaching one never reallocates and installing a
 * shared-memory payload cannot fail halfway; the memfd of such a payload is
 * always the last one, as the wire wants it. Until the message is sent the
 * set is the message's alone; the writer shares it from then on. */

static unsigned message_n_fds(const bus_message *m) {
        return m->fds ? m->fds->n : 0;
}

/* The application's descriptors: all but a shared-memory payload's. */
static unsigned message_n_user_fds(const bus_message *m) {
        return message_n_fds(m) - (m->shm && message_n_fds(m) > 0);
}

static int message_payload_fd(const bus_message *m) {
        assert(m->shm && message_n_fds(m) > 0);
        return m->fds->fds[m->fds->n - 1];
}

static int fds_reserve(bus_message *m) {
        if (m->fds)
                return 0;
        m->fds = wire_fds_new(WIRE_FDS_MAX);
        if (!m->fds)
                return -ENOMEM;
        m->fds->n = 0;
        return 0;
}

/* ---- Payload.
 *
 * A built message's payload is one of: none; heap bytes in a WireChunk; or a
 * memfd (shm), filled by copy (memfd_write()) or in place through the
 * writable mapping bus_message_reserve_payload() hands out.
 *
 * A BUS_SHM_NEVER payload stays inline, and a BUS_SHM_ALWAYS or reserved
 * memfd (its pointer was handed out) stays a memfd. Any other payload's
 * place is a guess, settled when the message is sent
 * (message_prepare_payload()) by the connection's threshold: a BUS_SHM_AUTO
 * payload of at least BUS_SHM_THRESHOLD_DEFAULT is copied straight into a
 * memfd, since with the default threshold that is where it goes and copying
 * it into the heap first would cost as much again (~30 ms for 64 MiB); a
 * guess the threshold proves wrong is copied over to the other side.
 *
 * Any payload may also have a read-only mapping, made when the application
 * first reads it. The pointers bus_message_get_payload() hands out stay valid
 * for the message's life, so a chunk or mapping that was lent out stays when
 * the payload moves. The writer sends inline bytes from the chunk, which it
 * pins, never from a mapping. */

/* Closes the payload's memfd, the last descriptor. */
static void payload_drop_fd(bus_message *m) {
        int fd = message_payload_fd(m);

        m->fds->fds[--m->fds->n] = -1;
        safe_close(fd);
        m->shm = m->shm_sealed = m->shm_final = false;
}

static void payload_clear(bus_message *m) {
        m->chunk = wire_chunk_unref(m->chunk);
        memfd_unmap(m->shm_wmap, m->payload_size);
        memfd_unmap(m->shm_rmap, m->payload_size);
        m->shm_wmap = NULL;
        m->shm_rmap = NULL;
        if (m->shm)
                payload_drop_fd(m);
        m->payload = NULL;
        m->payload_size = 0;
        m->payload_lent = false;
}

/* Takes over chunk (NULL for an empty payload). */
static void payload_install_chunk(bus_message *m, WireChunk *chunk) {
        payload_clear(m);
        m->chunk = chunk;
        m->payload = chunk ? chunk->data : NULL;
        m->payload_size = chunk ? chunk->used : 0;
        m->payload_fixed = true;
}

/* Takes over fd and wmap (may be NULL); the caller made room in fds. */
static void payload_install_memfd(bus_message *m, int fd, size_t size, void *wmap, bool final) {
        payload_clear(m);
        m->fds->fds[m->fds->n++] = fd;
        m->shm = true;
        m->shm_final = final;
        m->shm_wmap = wmap;
        m->payload_size = size;
        m->payload_fixed = true;
}

/* Room for a payload memfd: one more descriptor. */
static int payload_reserve_fd(bus_message *m) {
        if (message_n_user_fds(m) >= WIRE_FDS_MAX)
                return -ETOOMANYREFS;
        return fds_reserve(m);
}

/* Whether a payload set or reserved now starts in a memfd. */
static bool payload_wants_shm(const bus_message *m, size_t size) {
        if (size == 0 || m->shm_mode == BUS_SHM_NEVER)
                return false;
        return m->shm_mode == BUS_SHM_ALWAYS || size >= BUS_SHM_THRESHOLD_DEFAULT;
}

/* A chunk with a copy of data, or zeroed for data NULL. */
static int payload_new_chunk(const void *data, size_t size, WireChunk **ret) {
        WireChunk *chunk;

        if (size == 0) {
                *ret = NULL;
                return 0;
        }
        chunk = wire_chunk_new(size);
        if (!chunk)
                return -ENOMEM;
        if (data)
                memcpy(chunk->data, data, size);
        else
                memset(chunk->data, 0, size);
        chunk->used = size;
        *ret = chunk;
        return 0;
}

static int payload_set_memfd(bus_message *m, const void *data, size_t size) {
        int fd, r;

        r = payload_reserve_fd(m);
        if (r < 0)
                return r;
        r = memfd_new_copy(data, size, &fd);
        if (r < 0)
                return r;
        payload_install_memfd(m, fd, size, NULL, m->shm_mode == BUS_SHM_ALWAYS);
        return 0;
}

static int payload_set(bus_message *m, const void *data, size_t size) {
        WireChunk *chunk;
        int r;

        if (payload_wants_shm(m, size)) {
                r = payload_set_memfd(m, data, size);
                /* AUTO was only a preference: the descriptors are full. */
                if (r != -ETOOMANYREFS || m->shm_mode == BUS_SHM_ALWAYS)
                        return r;
        }
        r = payload_new_chunk(data, size, &chunk);
        if (r < 0)
                return r;
        payload_install_chunk(m, chunk);
        return 0;
}

_public_ int bus_message_set_payload(bus_message *m, const void *data, size_t size) {
        int r;

        r = message_check_writable(m);
        if (r < 0)
                return r;
        if (!data && size > 0)
                return -EINVAL;
        if (size > WIRE_PAYLOAD_MAX)
                return -EMSGSIZE;
        r = payload_set(m, data, size);
        if (r < 0 && r != -ETOOMANYREFS)
                m->bad = true;
        return r;
}

static int payload_reserve_memfd(bus_message *m, size_t size, void **ret) {
        _cleanup_close_ int fd = -1;
        void *p;
        int r;

        r = payload_reserve_fd(m);
        if (r < 0)
                return r;
        r = memfd_new(size, &fd);
        if (r < 0)
                return r;
        r = memfd_map_writable(fd, size, &p);
        if (r < 0)
                return r;
        payload_install_memfd(m, TAKE_FD(fd), size, p, true);
        *ret = p;
        return 0;
}

static int payload_reserve(bus_message *m, size_t size, void **ret) {
        /* Something to write 0 bytes to. */
        static uint8_t empty[1];
        WireChunk *chunk;
        int r;

        if (payload_wants_shm(m, size)) {
                r = payload_reserve_memfd(m, size, ret);
                if (r != -ETOOMANYREFS || m->shm_mode == BUS_SHM_ALWAYS)
                        return r;
        }
        r = payload_new_chunk(NULL, size, &chunk);
        if (r < 0)
                return r;
        payload_install_chunk(m, chunk);
        *ret = chunk ? chunk->data : empty;
        return 0;
}

_public_ int bus_message_reserve_payload(bus_message *m, size_t size, void **ret) {
        int r;

        r = message_check_writable(m);
        if (r < 0)
                return r;
        if (!ret)
                return -EINVAL;
        if (size > WIRE_PAYLOAD_MAX)
                return -EMSGSIZE;
        r = payload_reserve(m, size, ret);
        if (r < 0 && r != -ETOOMANYREFS)
                m->bad = true;
        return r;
}

_public_ int bus_message_set_shm(bus_message *m, int mode) {
        int r;

        r = message_check_writable(m);
        if (r < 0)
                return r;
        if (mode != BUS_SHM_AUTO && mode != BUS_SHM_NEVER && mode != BUS_SHM_ALWAYS)
                return -EINVAL;
        if (m->payload_fixed)
                return -EBUSY;
        m->shm_mode = mode;
        return 0;
}

_public_ int bus_message_is_shm(bus_message *m) {
        if (!m)
                return -EINVAL;
        return m->shm;
}

/* A heap payload goes to shared memory at sending when the mode or the
 * connection's threshold says so. An AUTO payload stays inline when the
 * message has as many descriptors as the broker takes (max_fds): the memfd
 * would not fit, inline it may. */
static bool send_wants_memfd(const bus_message *m, size_t threshold, unsigned max_fds) {
        if (m->shm || m->payload_size == 0 || m->shm_mode == BUS_SHM_NEVER)
                return false;
        if (m->shm_mode == BUS_SHM_ALWAYS)
                return message_n_fds(m) < WIRE_FDS_MAX;
        return m->payload_size >= threshold && message_n_fds(m) < max_fds;
}

/* A memfd payload that was only a guess goes inline when it is below the
 * connection's threshold, or when its descriptor would take the message
 * over the broker's limit. */
static bool send_wants_chunk(const bus_message *m, size_t threshold, unsigned max_fds) {
        return m->shm && !m->shm_final &&
               (m->payload_size < threshold || message_n_fds(m) > max_fds);
}

static int payload_move_to_memfd(bus_message *m) {
        int fd, r;

        r = fds_reserve(m);
        if (r < 0)
                return r;
        r = memfd_new_copy(m->chunk->data, m->payload_size, &fd);
        if (r < 0)
                return r;
        m->fds->fds[m->fds->n++] = fd;
        m->shm = true;
        if (!m->payload_lent) {
                m->chunk = wire_chunk_unref(m->chunk);
                m->payload = NULL;
        }
        return 0;
}

static int payload_move_to_chunk(bus_message *m) {
        WireChunk *chunk;
        int r;

        /* A chunk still here was lent out, and holds the same bytes. */
        if (!m->chunk) {
                r = payload_new_chunk(NULL, m->payload_size, &chunk);
                if (r < 0)
                        return r;
                r = memfd_read(message_payload_fd(m), chunk->data, m->payload_size);
                if (r < 0) {
                        wire_chunk_unref(chunk);
                        return r;
                }
                m->chunk = chunk;
        }
        payload_drop_fd(m);
        if (!m->payload)
                m->payload = m->chunk->data;
        return 0;
}

int message_prepare_payload(bus_message *m, size_t shm_threshold, size_t max_inline,
                            unsigned max_fds) {
        int r = 0;

        if (send_wants_chunk(m, shm_threshold, max_fds)) {
                if (m->payload_size > max_inline)
                        return -EMSGSIZE;
                r = payload_move_to_chunk(m);
        } else if (send_wants_memfd(m, shm_threshold, max_fds))
                r = payload_move_to_memfd(m);
        if (r < 0)
                return r;
        if (!m->shm)
                return m->payload_size > max_inline ? -EMSGSIZE : 0;
        if (m->shm_sealed)
                return 0;
        /* F_SEAL_WRITE fails while any writable shared mapping exists. */
        memfd_unmap(m->shm_wmap, m->payload_size);
        m->shm_wmap = NULL;
        r = memfd_seal(message_payload_fd(m));
        if (r < 0)
                return r;
        m->shm_sealed = true;
        return 0;
}

int message_verify_payload(bus_message *m) {
        if (!m->shm)
                return 0;
        if (m->payload_size == 0 || message_n_fds(m) == 0)
                return -EBADFD;
        if (memfd_check_sealed(message_payload_fd(m), m->payload_size) < 0)
                return -EBADFD;
        return 0;
}

int message_get_payload(bus_message *m, const void **ret_data, size_t *ret_size) {
        int r;

        if (m->payload_size > 0 && !m->payload) {
                r = memfd_map_readonly(message_payload_fd(m), m->payload_size,
                                       m->received || m->shm_sealed, &m->shm_rmap);
                if (r < 0)
                        return r;
                m->payload = m->shm_rmap;
        }
        if (ret_data) {
                *ret_data = m->payload_size > 0 ? m->payload : (const void *) "";
                if (m->chunk)
                        m->payload_lent = true;
        }
        if (ret_size)
                *ret_size = m->payload_size;
        return 0;
}

_public_ int bus_message_get_payload(bus_message *m, const void **data, size_t *size) {
        if (!m)
                return -EINVAL;
        if (m->bad)
                return -ESTALE;
        return message_get_payload(m, data, size);
}

void message_payload_from_frame(bus_message *m, WireFrame *frame) {
        uint64_t memfd_size = m->env->memfd_payload_size;

        m->fds = TAKE_PTR(frame->fds);
        if (memfd_size == 0) {
                m->chunk = TAKE_PTR(frame->chunk);
                m->payload = frame->payload;
                m->payload_size = frame->preamble.payload_len;
                return;
        }
        /* Mapped on first access, once message_verify_payload() has
         * checked it; inline bytes next to it, or a size we cannot map,
         * leave the size 0, which it rejects. */
        m->shm = true;
        if (frame->preamble.payload_len == 0 && memfd_size <= SIZE_MAX)
                m->payload_size = (size_t) memfd_size;
}

void message_payload_free(bus_message *m) {
        memfd_unmap(m->shm_wmap, m->payload_size);
        memfd_unmap(m->shm_rmap, m->payload_size);
        wire_chunk_unref(m->chunk);
        wire_fds_unref(m->fds);
}

/* ---- Descriptors. */

_public_ int bus_message_append_fd(bus_message *m, int fd) {
        unsigned index;
        int copy, r;

        r = message_check_writable(m);
        if (r < 0)
                return r;
        if (fd < 0)
                return -EBADF;
        if (message_n_fds(m) >= WIRE_FDS_MAX)
                return -ETOOMANYREFS;
        r = fds_reserve(m);
        if (r < 0) {
                m->bad = true;
                return r;
        }
        /* Above the standard streams, so a stray write to 0-2 cannot hit
         * it. */
        copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (copy < 0) {
                r = negative_errno();
                /* A bad fd is the caller's mistake; running out (EMFILE)
                 * leaves a message that lacks what it should carry. */
                if (r != -EBADF)
                        m->bad = true;
                return r;
        }
        /* Before a shared-memory payload's memfd, which stays last. */
        index = message_n_user_fds(m);
        if (m->shm)
                m->fds->fds[index + 1] = m->fds->fds[index];
        m->fds->fds[index] = copy;
        m->fds->n++;
        return (int) index;
}

_public_ int bus_message_get_n_fds(bus_message *m) {
        if (!m)
                return -EINVAL;
        return (int) message_n_user_fds(m);
}

/* Taken from a set the message shares, where it could not be cleared. */
static bool fd_is_taken(const bus_message *m, unsigned index) {
        return m->fds_taken[index / 64] & (UINT64_C(1) << (index % 64));
}

_public_ int bus_message_get_fd(bus_message *m, unsigned index) {
        if (!m)
                return -EINVAL;
        if (index >= message_n_user_fds(m) || m->fds->fds[index] < 0 || fd_is_taken(m, index))
                return -ENXIO;
        return m->fds->fds[index];
}

_public_ int bus_message_take_fd(bus_message *m, unsigned index) {
        int fd;

        fd = bus_message_get_fd(m, index);
        if (fd < 0)
                return fd;
        /* The set a message being built sends must stay complete. */
        if (!m->sealed)
                return -EPERM;
        if (m->fds->refs == 1) {
                m->fds->fds[index] = -1;
                return fd;
        }
        /* Sent, and the writer still holds the set to send it: the caller
         * gets a duplicate, and the message forgets the descriptor. */
        fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return negative_errno();
        m->fds_taken[index / 64] |= UINT64_C(1) << (index % 64);
        return fd;
}
