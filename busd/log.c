/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* See log.h. stderr is unbuffered, so each line leaves in one write(). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "busd/log.h"

static int log_max_level = LOG_INFO;

void log_set_max_level(int level) {
        log_max_level = level;
}

int log_get_max_level(void) {
        return log_max_level;
}

int log_level_from_string(const char *s) {
        static const char *const names[] = { "emerg", "alert", "crit", "err",
                                             "warning", "notice", "info", "debug" };
        char *end;
        long n;

        for (int i = 0; i < 8; i++)
                if (strcmp(s, names[i]) == 0)
                        return i;
        errno = 0;
        n = strtol(s, &end, 10);
        if (errno != 0 || end == s || *end || n < 0 || n > 7)
                return -EINVAL;
        return (int) n;
}

void log_full(int level, const char *format, ...) {
        char line[2048];
        va_list ap;
        int n;

        n = snprintf(line, sizeof(line), "<%d>", level);
        va_start(ap, format);
        vsnprintf(line + n, sizeof(line) - (size_t) n - 1, format, ap);
        va_end(ap);
        /* One line per event, whatever the message held. */
        for (char *p = line + n; *p; p++)
                if (*p == '\n' || *p == '\r')
                        *p = ' ';
        strcat(line, "\n");
        fputs(line, stderr);
}
