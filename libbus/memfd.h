/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Sealed memfds: the shared memory that carries large payloads.
 *
 * A sender creates a memfd of the payload's exact size, fills it (by copy or
 * in place through a writable mapping), drops every writable mapping and seals
 * it against writing, shrinking, growing and further sealing. A receiver
 * checks those seals and the size before it maps the descriptor read-only:
 * once sealed, nobody (not even the sender) can change or truncate the
 * pages, so reading the mapping can neither see bytes change nor fault with
 * SIGBUS.
 *
 * These are plain functions on descriptors and addresses; who owns the
 * descriptor and the mappings is the caller's business (for libbus, the
 * bus_message). Every function returns 0 or a negative errno.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Creates an unsealed, close-on-exec memfd of exactly size bytes (all
 * zero). */
int memfd_new(size_t size, int *ret_fd);

/* Copies size bytes into the start of a memfd from memfd_new() that nothing
 * was written to yet, by whichever way is faster on this system (see
 * memfd.c). */
int memfd_write(int fd, const void *data, size_t size);

/* memfd_new() and memfd_write() in one. */
int memfd_new_copy(const void *data, size_t size, int *ret_fd);

/* Copies the first size bytes out of the memfd. */
int memfd_read(int fd, void *buf, size_t size);

/* Maps the first size bytes of the memfd writable and shared, prepared for
 * being filled in place. The mapping must be gone (memfd_unmap()) before
 * memfd_seal() can succeed. */
int memfd_map_writable(int fd, size_t size, void **ret);

/* Maps the first size bytes read-only. A sealed memfd is mapped shared; an
 * unsealed one privately, because a shared mapping of a writable descriptor
 * counts as writable even without PROT_WRITE and would keep memfd_seal()
 * from succeeding (the private mapping still shows every write made through
 * a shared one, as long as nobody writes to it). */
int memfd_map_readonly(int fd, size_t size, bool sealed, const void **ret);

/* munmap() that accepts NULL. */
void memfd_unmap(const void *p, size_t size);

/* Adds all four seals. -EBUSY while a writable mapping exists, -EPERM if the
 * memfd does not allow sealing or is sealed already. */
int memfd_seal(int fd);

/* Checks that fd is a memfd carrying all four seals and of exactly size
 * bytes: -EPERM if it is not one or lacks a seal, -EBADMSG for another
 * size. */
int memfd_check_sealed(int fd, uint64_t size);
