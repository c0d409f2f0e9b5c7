/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Sealed memfds; see memfd.h.
 *
 * What a large payload costs is mostly the kernel allocating, zeroing and
 * mapping its pages, not copying its bytes, so the choices below are about
 * pages. Measured with 64 MiB, medians, Linux 6.18 on x86-64:
 *  - With 4 KiB pages, filling a memfd with pwrite() takes half the time of
 *    memcpy() through a fresh mapping (~25 ms against ~48 ms): the write path
 *    allocates pages without zeroing them first and without a page fault
 *    each. fallocate() beforehand gains nothing (~26 ms).
 *  - When the system gives shmem transparent huge pages to mappings that ask
 *    for them (shmem_enabled=advise), memcpy() through a mapping marked
 *    MADV_HUGEPAGE takes ~6 ms, and pwrite() (no mapping to ask for them)
 *    still ~27 ms. Whether huge pages are granted is found out by faulting
 *    in one page and looking at how much the file grew, which costs a few
 *    microseconds: no sysfs parsing, and it follows any policy.
 *  - Filling a writable mapping in place with 4 KiB pages takes ~45 ms when
 *    the pages are populated in one MADV_POPULATE_WRITE call, ~54 ms one
 *    fault at a time; with huge pages (~4.5 ms) populating only adds work,
 *    so it is done when the probe found small pages. MAP_POPULATE would
 *    populate before MADV_HUGEPAGE can ask for huge pages (~46 ms either
 *    way).
 *  - Readers map read-only without MAP_POPULATE: the kernel's fault-around
 *    already maps 16 pages per fault, so populating gains nothing for a
 *    reader of everything (~23 ms either way, most of it freeing the pages
 *    at the last close) and costs a reader of a few bytes the whole mapping
 *    (~16 ms against ~10 ms).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "libbus/macro.h"
#include "libbus/memfd.h"

#define MEMFD_NAME "busd-payload"
#define MEMFD_SEALS (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

/* Linux 6.3; Debian 12's kernel headers predate it. */
#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Below one PMD huge page the probe cannot find anything worth it. */
#define LARGE_PAGES_MIN ((size_t) 2 * 1024 * 1024)

int memfd_new(size_t size, int *ret_fd) {
        _cleanup_close_ int fd = -1;

        if (size > (size_t) INT64_MAX)
                return -EFBIG;
        /* A payload is data: never executable (MFD_NOEXEC_SEAL also keeps
         * us working under vm.memfd_noexec=2). Older kernels reject the
         * flag with EINVAL. */
        fd = memfd_create(MEMFD_NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL);
        if (fd < 0 && errno == EINVAL)
                fd = memfd_create(MEMFD_NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
                return negative_errno();
        if (ftruncate(fd, (off_t) size) < 0)
                return negative_errno();
        *ret_fd = TAKE_FD(fd);
        return 0;
}

static int map_writable(int fd, size_t size, void **ret) {
        void *p;

        if (size == 0)
                return -EINVAL;
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED)
                return negative_errno();
        *ret = p;
        return 0;
}

/* Faults in the first page of a fresh writable mapping of a new memfd and
 * tells whether the kernel backed it with more than one base page (a
 * transparent huge page or another large folio): st_blocks counts what the
 * file has allocated. The byte written is 0, which it already was. */
static bool probe_large_pages(int fd, void *p) {
        struct stat st;

        *(volatile uint8_t *) p = 0;
        if (fstat(fd, &st) < 0)
                return false;
        return (uint64_t) st.st_blocks * 512 > (uint64_t) sysconf(_SC_PAGESIZE);
}

static int pwrite_all(int fd, const uint8_t *data, size_t size) {
        size_t done = 0;

        while (done < size) {
                ssize_t n = pwrite(fd, data + done, size - done, (off_t) done);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        return -EIO;
                done += (size_t) n;
        }
        return 0;
}

int memfd_write(int fd, const void *data, size_t size) {
        void *p;

        if (size >= LARGE_PAGES_MIN && map_writable(fd, size, &p) >= 0) {
                (void) madvise(p, size, MADV_HUGEPAGE);
                if (probe_large_pages(fd, p)) {
                        memcpy(p, data, size);
                        memfd_unmap(p, size);
                        return 0;
                }
                memfd_unmap(p, size);
        }
        return pwrite_all(fd, data, size);
}

int memfd_new_copy(const void *data, size_t size, int *ret_fd) {
        _cleanup_close_ int fd = -1;
        int r;

        r = memfd_new(size, &fd);
        if (r < 0)
                return r;
        r = memfd_write(fd, data, size);
        if (r < 0)
                return r;
        *ret_fd = TAKE_FD(fd);
        return 0;
}

int memfd_read(int fd, void *buf, size_t size) {
        size_t done = 0;

        while (done < size) {
                ssize_t n = pread(fd, (uint8_t *) buf + done, size - done, (off_t) done);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        return -EIO;
                done += (size_t) n;
        }
        return 0;
}

int memfd_map_writable(int fd, size_t size, void **ret) {
        void *p;
        int r;

        r = map_writable(fd, size, &p);
        if (r < 0)
                return r;
        /* Failures are harmless: the pages are then faulted in one by one
         * as the caller writes (before Linux 5.14 there is no
         * MADV_POPULATE_WRITE). */
        (void) madvise(p, size, MADV_HUGEPAGE);
        if (!probe_large_pages(fd, p))
                (void) madvise(p, size, MADV_POPULATE_WRITE);
        *ret = p;
        return 0;
}

int memfd_map_readonly(int fd, size_t size, bool sealed, const void **ret) {
        void *p;

        if (size == 0)
                return -EINVAL;
        p = mmap(NULL, size, PROT_READ, sealed ? MAP_SHARED : MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED)
                return negative_errno();
        *ret = p;
        return 0;
}

void memfd_unmap(const void *p, size_t size) {
        if (p)
                (void) munmap((void *) p, size);
}

int memfd_seal(int fd) {
        if (fcntl(fd, F_ADD_SEALS, MEMFD_SEALS) < 0)
                return negative_errno();
        return 0;
}

int memfd_check_sealed(int fd, uint64_t size) {
        struct stat st;
        int seals;

        /* Only shmem files can carry seals (F_GET_SEALS fails with EINVAL
         * on anything else), and without all four the sender could still
         * rewrite the bytes or truncate them under our mapping. */
        seals = fcntl(fd, F_GET_SEALS);
        if (seals < 0 || (seals & MEMFD_SEALS) != MEMFD_SEALS)
                return -EPERM;
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode) || st.st_size < 0 || (uint64_t) st.st_size != size)
                return -EBADMSG;
        return 0;
}
