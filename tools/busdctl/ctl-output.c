/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * How busdctl prints: aligned tables (headers in bold on a terminal), JSON
 * (pretty on a terminal, one line otherwise), and the one-line form of a
 * message shared by sub, monitor and show.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tools/busdctl/busdctl.h"

#define ANSI_BOLD "\033[1m"
#define ANSI_DIM "\033[2m"
#define ANSI_RED "\033[31m"
#define ANSI_GREEN "\033[32m"
#define ANSI_YELLOW "\033[33m"
#define ANSI_BLUE "\033[34m"
#define ANSI_RESET "\033[0m"

#define TERMINAL_PAYLOAD_MAX ((size_t) 400)

struct Table {
        size_t n_columns;
        char **cells; /* rows * n_columns; the first row is the header */
        size_t n_cells;
};

Table *table_free(Table *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n_cells; i++)
                free(t->cells[i]);
        free(t->cells);
        free(t);
        return NULL;
}

static int table_add_va(Table *t, va_list ap) {
        char **cells = realloc(t->cells, (t->n_cells + t->n_columns) * sizeof(char *));
        if (!cells)
                return -ENOMEM;
        t->cells = cells;
        for (size_t i = 0; i < t->n_columns; i++) {
                const char *s = va_arg(ap, const char *);
                char *copy = strdup(s && *s ? s : "-");
                if (!copy) {
                        while (i-- > 0)
                                free(t->cells[t->n_cells + i]);
                        return -ENOMEM;
                }
                t->cells[t->n_cells + i] = copy;
        }
        t->n_cells += t->n_columns;
        return 0;
}

int table_new(Table **ret, size_t n_columns, ...) {
        Table *t = calloc(1, sizeof(*t));
        va_list ap;
        int r;

        if (!t)
                return -ENOMEM;
        t->n_columns = n_columns;
        va_start(ap, n_columns);
        r = table_add_va(t, ap);
        va_end(ap);
        if (r < 0)
                return table_free(t), r;
        *ret = t;
        return 0;
}

int table_add(Table *t, ...) {
        va_list ap;
        int r;

        va_start(ap, t);
        r = table_add_va(t, ap);
        va_end(ap);
        return r;
}

/* Display width of UTF-8 text: code points, which is right for what busd
 * lets into names and topics (printable ASCII). */
static size_t text_width(const char *s) {
        size_t n = 0;
        for (; *s; s++)
                if (((unsigned char) *s & 0xC0) != 0x80)
                        n++;
        return n;
}

void table_print(Table *t, const Ctl *ctl, FILE *f) {
        size_t n_rows = t->n_cells / t->n_columns;
        _cleanup_free_ size_t *width = calloc(t->n_columns, sizeof(size_t));

        if (!width)
                return;
        for (size_t r = ctl->legend ? 0 : 1; r < n_rows; r++)
                for (size_t c = 0; c < t->n_columns; c++)
                        width[c] = MAX(width[c], text_width(t->cells[r * t->n_columns + c]));

        for (size_t r = ctl->legend ? 0 : 1; r < n_rows; r++) {
                bool header = r == 0;
                if (header && ctl->color)
                        fputs(ANSI_BOLD, f);
                for (size_t c = 0; c < t->n_columns; c++) {
                        const char *cell = t->cells[r * t->n_columns + c];
                        bool last = c + 1 == t->n_columns;
                        fputs(cell, f);
                        if (!last)
                                fprintf(f, "%*s", (int) (width[c] - text_width(cell) + 2), "");
                }
                if (header && ctl->color)
                        fputs(ANSI_RESET, f);
                fputc('\n', f);
        }
        if (ctl->legend && n_rows > 1)
                fprintf(f, "\n%zu listed.\n", n_rows - 1);
}

void json_print(const Ctl *ctl, json_object *j, bool one_line) {
        int flags = JSON_C_TO_STRING_NOSLASHESCAPE;

        flags |= ctl->json_pretty && !one_line ? JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED
                                               : JSON_C_TO_STRING_PLAIN;
        puts(json_object_to_json_string_ext(j, flags));
}

char *format_duration(uint64_t usec) {
        uint64_t s = usec / 1000000;
        char *ret = NULL;

        if (s >= 86400)
                (void) asprintf(&ret, "%" PRIu64 " d %" PRIu64 " h %" PRIu64 " min", s / 86400,
                                s % 86400 / 3600, s % 3600 / 60);
        else if (s >= 3600)
                (void) asprintf(&ret, "%" PRIu64 " h %" PRIu64 " min", s / 3600, s % 3600 / 60);
        else if (s >= 60)
                (void) asprintf(&ret, "%" PRIu64 " min %" PRIu64 " s", s / 60, s % 60);
        else
                (void) asprintf(&ret, "%.3f s", (double) usec / 1e6);
        return ret;
}

char *format_size(uint64_t bytes) {
        char *ret = NULL;

        if (bytes >= 1024 * 1024)
                (void) asprintf(&ret, "%.1f MiB", (double) bytes / (1024.0 * 1024.0));
        else if (bytes >= 1024)
                (void) asprintf(&ret, "%.1f KiB", (double) bytes / 1024.0);
        else
                (void) asprintf(&ret, "%" PRIu64 " B", bytes);
        return ret;
}

char *format_timestamp(uint64_t ns) {
        time_t sec = (time_t) (ns / 1000000000);
        struct tm tm;
        char buf[32], *ret = NULL;

        if (!localtime_r(&sec, &tm) || strftime(buf, sizeof(buf), "%H:%M:%S", &tm) == 0)
                return strdup("-");
        (void) asprintf(&ret, "%s.%06u", buf, (unsigned) (ns % 1000000000 / 1000));
        return ret;
}

char *proc_cmdline(uint32_t pid) {
        char path[64], buf[4096];
        _cleanup_close_ int fd = -1;
        ssize_t n;

        if (pid == 0)
                return NULL;
        snprintf(path, sizeof(path), "/proc/%" PRIu32 "/cmdline", pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return NULL;
        n = read(fd, buf, sizeof(buf) - 1);
        if (n <= 0)
                return NULL;
        /* Arguments are NUL-separated; show them separated by spaces, and
         * nothing unprintable. */
        while (n > 0 && buf[n - 1] == '\0')
                n--;
        for (ssize_t i = 0; i < n; i++)
                if (buf[i] == '\0')
                        buf[i] = ' ';
                else if ((unsigned char) buf[i] < 0x20 || buf[i] == 0x7F)
                        buf[i] = '?';
        buf[n] = '\0';
        return strdup(buf);
}

int message_capture(bus_message *m, Busdctl__CapturedMessage *ret) {
        const void *data;
        size_t size;
        uid_t uid = 0;
        gid_t gid = 0;
        pid_t pid = 0;
        int r;

        busdctl__captured_message__init(ret);
        r = bus_message_get_payload(m, &data, &size);
        if (r < 0)
                return r;
        ret->timestamp_ns = bus_message_get_timestamp(m);
        ret->kind = (Bus__Kind) bus_message_get_kind(m);
        (void) bus_message_get_sender_creds(m, &uid, &gid, &pid);
        ret->sender_uid = (uint32_t) uid;
        ret->sender_gid = (uint32_t) gid;
        ret->sender_pid = (uint32_t) pid;

#define STR(field, value)                                       \
        do {                                                    \
                const char *_v = (value);                       \
                ret->field = (char *) (_v ? _v : "");           \
        } while (0)
        STR(sender, bus_message_get_sender(m));
        STR(destination, bus_message_get_destination(m));
        STR(receiver, bus_message_get_monitor_receiver(m));
        STR(topic, bus_message_get_topic(m));
        STR(method, bus_message_get_method(m));
        STR(payload_type, bus_message_get_payload_type(m));
        STR(error_name, bus_message_get_error_name(m));
        STR(error_message, bus_message_get_error_message(m));
#undef STR
        ret->receivers = bus_message_get_monitor_receivers(m);
        ret->serial = bus_message_get_serial(m);
        ret->reply_serial = bus_message_get_reply_serial(m);
        ret->n_fds = bus_message_is_monitor_copy(m) ? bus_message_get_monitor_n_fds(m)
                                                    : (unsigned) MAX(bus_message_get_n_fds(m), 0);
        ret->shm = bus_message_is_shm(m) > 0;
        ret->retain = bus_message_get_retain(m) > 0;
        ret->no_reply = bus_message_get_no_reply(m) > 0;
        ret->missed = bus_message_get_missed(m);
        ret->payload.data = (uint8_t *) data;
        ret->payload.len = size;
        return 0;
}

static const char *kind_color(int kind) {
        switch (kind) {
        case BUS_KIND_PUBLISH:
                return ANSI_BLUE;
        case BUS_KIND_REQUEST:
                return ANSI_YELLOW;
        case BUS_KIND_REPLY:
                return ANSI_GREEN;
        default:
                return ANSI_RED;
        }
}

static json_object *payload_json(Ctl *ctl, const Busdctl__CapturedMessage *m) {
        return types_decode(ctl, m->payload_type, m->payload.data, m->payload.len);
}

void message_print(Ctl *ctl, const Busdctl__CapturedMessage *m, FILE *f) {
        _cleanup_free_ char *ts = m->timestamp_ns ? format_timestamp(m->timestamp_ns) : NULL;
        _cleanup_free_ char *size = format_size(m->payload.len);
        _cleanup_(json_object_putp) json_object *payload = NULL;
        int kind = (int) m->kind;

        if (m->missed > 0)
                fprintf(f, "%s(%" PRIu64 " message%s missed)%s\n", ctl->color ? ANSI_RED : "",
                        m->missed, m->missed == 1 ? "" : "s", ctl->color ? ANSI_RESET : "");
        if (ts)
                fprintf(f, "%s%s%s ", ctl->color ? ANSI_DIM : "", ts, ctl->color ? ANSI_RESET : "");
        fprintf(f, "%s%-7s%s %s", ctl->color ? kind_color(kind) : "", ctl_kind_to_string(kind),
                ctl->color ? ANSI_RESET : "", *m->sender ? m->sender : "?");

        switch (kind) {
        case BUS_KIND_PUBLISH:
                fprintf(f, " → %s", m->topic);
                if (m->timestamp_ns)
                        fprintf(f, " (%" PRIu32 " receiver%s)", m->receivers,
                                m->receivers == 1 ? "" : "s");
                break;
        case BUS_KIND_REQUEST:
                fprintf(f, " → %s", m->destination);
                if (*m->receiver && strcmp(m->receiver, m->destination) != 0)
                        fprintf(f, " (%s)", m->receiver);
                fprintf(f, " %s #%" PRIu64, m->method, m->serial);
                break;
        default:
                fprintf(f, " → %s #%" PRIu64 " re #%" PRIu64, *m->receiver ? m->receiver
                                                                          : m->destination,
                        m->serial, m->reply_serial);
                break;
        }
        if (kind == BUS_KIND_ERROR)
                fprintf(f, " %s: %s", m->error_name, m->error_message);
        if (*m->payload_type)
                fprintf(f, " %s", m->payload_type);
        fprintf(f, " %s", size);
        if (m->retain)
                fputs(" retain", f);
        if (m->no_reply)
                fputs(" no-reply", f);
        if (m->shm)
                fputs(" shm", f);
        if (m->n_fds > 0)
                fprintf(f, " %" PRIu32 " fd%s", m->n_fds, m->n_fds == 1 ? "" : "s");
        if (m->payload.len > 0 || *m->payload_type) {
                payload = payload_json(ctl, m);
                const char *text = payload ? json_object_to_json_string_ext(
                                                     payload, JSON_C_TO_STRING_PLAIN |
                                                                      JSON_C_TO_STRING_NOSLASHESCAPE)
                                           : NULL;
                /* On a terminal a line stays readable: long payloads are
                 * cut (--json and pipes get them whole). */
                if (text && ctl->color && strlen(text) > TERMINAL_PAYLOAD_MAX)
                        fprintf(f, " %.*s…", (int) TERMINAL_PAYLOAD_MAX, text);
                else if (text)
                        fprintf(f, " %s", text);
        }
        fputc('\n', f);
}

int message_output(Ctl *ctl, const Busdctl__CapturedMessage *m) {
        if (ctl->json) {
                _cleanup_(json_object_putp) json_object *j = message_to_json(ctl, m);
                if (!j)
                        return -ENOMEM;
                json_print(ctl, j, true);
        } else
                message_print(ctl, m, stdout);
        /* a reader at the other end of a pipe sees each message at once */
        return fflush(stdout) == 0 ? 0 : -errno;
}

static void json_add_string(json_object *o, const char *key, const char *value) {
        if (value && *value)
                json_object_object_add(o, key, json_object_new_string(value));
}

static void json_add_u64(json_object *o, const char *key, uint64_t value) {
        json_object_object_add(o, key, json_object_new_uint64(value));
}

json_object *message_to_json(Ctl *ctl, const Busdctl__CapturedMessage *m) {
        json_object *o = json_object_new_object();
        if (!o)
                return NULL;

        if (m->timestamp_ns) {
                _cleanup_free_ char *ts = format_timestamp(m->timestamp_ns);
                json_add_string(o, "time", ts);
                json_add_u64(o, "timestamp_ns", m->timestamp_ns);
        }
        json_add_string(o, "kind", ctl_kind_to_string((int) m->kind));
        json_add_string(o, "sender", m->sender);
        json_add_u64(o, "uid", m->sender_uid);
        json_add_u64(o, "gid", m->sender_gid);
        json_add_u64(o, "pid", m->sender_pid);
        json_add_string(o, "destination", m->destination);
        json_add_string(o, "receiver", m->receiver);
        if (m->kind == BUS__KIND__KIND_PUBLISH && m->timestamp_ns)
                json_add_u64(o, "receivers", m->receivers);
        json_add_string(o, "topic", m->topic);
        json_add_string(o, "method", m->method);
        json_add_u64(o, "serial", m->serial);
        if (m->reply_serial)
                json_add_u64(o, "reply_serial", m->reply_serial);
        json_add_string(o, "error_name", m->error_name);
        json_add_string(o, "error_message", m->error_message);
        json_add_string(o, "payload_type", m->payload_type);
        json_add_u64(o, "size", m->payload.len);
        json_add_u64(o, "fds", m->n_fds);
        if (m->shm)
                json_object_object_add(o, "shm", json_object_new_boolean(1));
        if (m->retain)
                json_object_object_add(o, "retain", json_object_new_boolean(1));
        if (m->no_reply)
                json_object_object_add(o, "no_reply", json_object_new_boolean(1));
        if (m->missed)
                json_add_u64(o, "missed", m->missed);
        if (m->payload.len > 0 || *m->payload_type) {
                json_object *payload = payload_json(ctl, m);
                if (payload)
                        json_object_object_add(o, "payload", payload);
        }
        return o;
}
