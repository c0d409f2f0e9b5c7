/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The broker's log: one line per event on stderr, prefixed with the
 * sd-daemon priority ("<3>" for errors ...), so journald files each line at
 * the right level when busd runs under systemd. Messages above the configured
 * level are not formatted at all.
 */
#pragma once

#include <stdarg.h>
#include <syslog.h>

#include "libbus/macro.h"

void log_set_max_level(int level);
int log_get_max_level(void);
/* Parses "err", "warning", "notice", "info", "debug" or a number 0-7. */
int log_level_from_string(const char *s);

void log_full(int level, const char *format, ...) _printf_(2, 3);

#define log_is_enabled(level) ((level) <= log_get_max_level())
#define log_at(level, ...)                                      \
        do {                                                    \
                if (log_is_enabled(level))                      \
                        log_full(level, __VA_ARGS__);           \
        } while (0)

#define log_error(...) log_at(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_at(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) log_at(LOG_NOTICE, __VA_ARGS__)
#define log_info(...) log_at(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_at(LOG_DEBUG, __VA_ARGS__)

/* Logs at LOG_ERR and returns error (a negative errno), for "return log_...". */
#define log_error_errno(error, ...) ({ log_error(__VA_ARGS__); (error); })
