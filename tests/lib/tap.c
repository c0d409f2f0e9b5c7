/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* See tap.h. Output goes to stdout, which tap-driver.sh reads. */
#include <dirent.h>
#include <stdarg.h>
#include <stdlib.h>

#include "tests/lib/tap.h"

static unsigned tap_count;
static unsigned tap_failed_count;
static bool tap_case_failed;
static unsigned tap_initial_fds;

unsigned tap_open_fds(void) {
        DIR *d = opendir("/proc/self/fd");
        struct dirent *de;
        unsigned n = 0;

        if (!d)
                return 0;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        n++;
        closedir(d);
        return n;
}

void tap_init(void) {
        setvbuf(stdout, NULL, _IOLBF, 0);
        tap_initial_fds = tap_open_fds();
}

void tap_diag(const char *fmt, ...) {
        va_list ap;

        fputs("# ", stdout);
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        fputc('\n', stdout);
}

void tap_fail_at(const char *file, int line, const char *expr, const char *fmt, ...) {
        va_list ap;

        tap_case_failed = true;
        printf("# %s:%d: check failed: %s", file, line, expr);
        if (fmt) {
                fputs(": ", stdout);
                va_start(ap, fmt);
                vprintf(fmt, ap);
                va_end(ap);
        }
        fputc('\n', stdout);
}

void tap_run(const char *name, void (*fn)(void)) {
        tap_case_failed = false;
        fn();
        tap_count++;
        if (tap_case_failed)
                tap_failed_count++;
        printf("%sok %u - %s\n", tap_case_failed ? "not " : "", tap_count, name);
}

void tap_skip(const char *name, const char *reason) {
        tap_count++;
        printf("ok %u - %s # SKIP %s\n", tap_count, name, reason);
}

void tap_skip_all(const char *reason) {
        printf("1..0 # SKIP %s\n", reason);
        exit(0);
}

int tap_done(void) {
        unsigned fds = tap_open_fds();

        tap_count++;
        if (fds != tap_initial_fds) {
                tap_failed_count++;
                printf("not ok %u - no descriptor leaked # %u open at start, %u at end\n",
                       tap_count, tap_initial_fds, fds);
        } else
                printf("ok %u - no descriptor leaked\n", tap_count);
        printf("1..%u\n", tap_count);
        return tap_failed_count > 0 ? 1 : 0;
}
