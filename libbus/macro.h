/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Small helpers shared by libbus and busd: cleanup attributes, ownership
 * transfer, descriptor closing and branch hints. Header-only on purpose: every
 * helper here is a few lines that the compiler should inline.
 */
#pragma once

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#define _public_ __attribute__((visibility("default")))
#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _warn_unused_result_ __attribute__((warn_unused_result))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define ALIGN_TO(x, a) (((x) + ((a) - 1)) & ~((a) - 1))

/* Returns the pointer and leaves NULL behind: how a success path hands over
 * ownership of something a cleanup attribute would otherwise free. */
#define TAKE_PTR(p)                             \
        ({                                      \
                __typeof__(p) *_pp_ = &(p);     \
                __typeof__(p) _p_ = *_pp_;      \
                *_pp_ = NULL;                   \
                _p_;                            \
        })

#define TAKE_FD(fd)                             \
        ({                                      \
                int *_fdp_ = &(fd);             \
                int _fd_ = *_fdp_;              \
                *_fdp_ = -1;                    \
                _fd_;                           \
        })

/* Generates fnp(Type **p), suitable for _cleanup_(fnp). */
#define DEFINE_CLEANUP(Type, fn)                \
        static inline void fn##p(Type **p) {    \
                if (*p)                         \
                        fn(*p);                 \
        }

/* close() that keeps errno and accepts -1; returns -1 so callers write
 * fd = safe_close(fd). EINTR on close must not be retried on Linux. */
static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                (void) close(fd);
                errno = saved;
        }
        return -1;
}

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void closep(int *fd) {
        safe_close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

/* -errno, never 0, for the -1 returns of libc: a caller can always return it. */
static inline int negative_errno(void) {
        return errno > 0 ? -errno : -EIO;
}
