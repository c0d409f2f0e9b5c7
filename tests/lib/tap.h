/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A minimal TAP producer for automake's tap-driver.sh.
 *
 * Each test case is a function that calls tap_check() for its conditions;
 * tap_run() calls it and prints one "ok N - name" or "not ok N - name" line.
 * A failed check prints a "# file:line: expression" diagnostic and marks the
 * running case failed; the case goes on, so one run shows every failure.
 * tap_done() prints the plan and checks that no descriptor leaked.
 */
#pragma once

#undef NDEBUG
#include <assert.h>
#include <stdbool.h>
#include <stdio.h>

void tap_init(void);                    /* remembers the open descriptors */
void tap_run(const char *name, void (*fn)(void));
void tap_skip(const char *name, const char *reason);
void tap_skip_all(const char *reason);  /* "1..0 # SKIP reason", exits 0 */
int tap_done(void);                     /* plan line; return value for main() */
void tap_fail_at(const char *file, int line, const char *expr, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
unsigned tap_open_fds(void);            /* entries in /proc/self/fd */

#define tap_check(expr)                                                          \
        ((expr) ? true : (tap_fail_at(__FILE__, __LINE__, #expr, NULL), false))

/* Checks an int expression against an expected value and shows both on failure. */
#define tap_check_int(actual, expected)                                          \
        ({                                                                       \
                long long _a_ = (long long) (actual), _e_ = (long long) (expected); \
                _a_ == _e_ ? true                                                \
                           : (tap_fail_at(__FILE__, __LINE__, #actual " == " #expected, \
                                          "got %lld, expected %lld", _a_, _e_),  \
                              false);                                            \
        })

#define TAP_RUN(fn) tap_run(#fn, fn)
