/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * busd-bench: figures, timing, payload patterns and helper processes shared
 * by the scenarios (see bench.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tools/bench.h"

/* ---- Figures and output. */

void bench_figure(BenchContext *ctx, double value, bool valid, bool integer, const char *format,
                  ...) {
        BenchFigure *f;
        va_list ap;
        char *name;
        int r;

        va_start(ap, format);
        r = vasprintf(&name, format, ap);
        va_end(ap);
        if (r < 0)
                return;
        f = realloc(ctx->figures, (ctx->n_figures + 1) * sizeof(*f));
        if (!f) {
                free(name);
                return;
        }
        ctx->figures = f;
        ctx->figures[ctx->n_figures++] = (BenchFigure){
                .name = name,
                .value = value,
                .valid = valid && isfinite(value),
                .integer = integer,
        };
}

double bench_figure_get(BenchContext *ctx, const char *name) {
        for (size_t i = 0; i < ctx->n_figures; i++)
                if (strcmp(ctx->figures[i].name, name) == 0)
                        return ctx->figures[i].valid ? ctx->figures[i].value : NAN;
        return NAN;
}

void bench_progress(BenchContext *ctx, const char *format, ...) {
        va_list ap;

        if (!ctx->progress)
                return;
        fputs("\r\033[K", stderr);
        if (format) {
                va_start(ap, format);
                vfprintf(stderr, format, ap);
                va_end(ap);
        }
        fflush(stderr);
}

const char *bench_size_name(uint64_t size, char buf[static 32]) {
        if (size >= (1u << 30) && size % (1u << 30) == 0)
                snprintf(buf, 32, "%lluGiB", (unsigned long long) (size >> 30));
        else if (size >= (1u << 20) && size % (1u << 20) == 0)
                snprintf(buf, 32, "%lluMiB", (unsigned long long) (size >> 20));
        else if (size >= (1u << 10) && size % (1u << 10) == 0)
                snprintf(buf, 32, "%lluKiB", (unsigned long long) (size >> 10));
        else
                snprintf(buf, 32, "%lluB", (unsigned long long) size);
        return buf;
}

const char *bench_time_text(double seconds, char buf[static 32]) {
        if (!isfinite(seconds))
                snprintf(buf, 32, "-");
        else if (seconds < 1e-3)
                snprintf(buf, 32, "%.1f µs", seconds * 1e6);
        else if (seconds < 1)
                snprintf(buf, 32, "%.2f ms", seconds * 1e3);
        else
                snprintf(buf, 32, "%.2f s", seconds);
        return buf;
}

/* ---- Time, payloads. */

double bench_now(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

/* Payloads need not be 8-byte aligned (libbus hands out an inline payload
 * where it sits in the frame, right after the envelope): words are moved
 * with memcpy(), which compiles to plain, vectorizable loads and stores. */
uint64_t bench_fill(void *p, size_t size, uint64_t seed) {
        unsigned char *bytes = p;
        uint64_t sum = 0;

        /* Independent words, so the compiler can vectorize: the fill costs
         * what writing the memory costs, not what computing it does. */
        for (size_t i = 0; i < size / 8; i++) {
                uint64_t w = seed ^ (i * UINT64_C(0x9E3779B97F4A7C15));

                memcpy(bytes + i * 8, &w, sizeof(w));
                sum += w;
        }
        return sum;
}

uint64_t bench_sum(const void *p, size_t size) {
        const unsigned char *bytes = p;
        uint64_t sum = 0;

        for (size_t i = 0; i < size / 8; i++) {
                uint64_t w;

                memcpy(&w, bytes + i * 8, sizeof(w));
                sum += w;
        }
        return sum;
}

static int compare_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;

        return (x > y) - (x < y);
}

double bench_median(double *v, size_t n) {
        if (n == 0)
                return NAN;
        qsort(v, n, sizeof(*v), compare_double);
        return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void bench_samples_start(BenchSamples *s) {
        s->n = 0;
        s->started = bench_now();
}

int bench_samples_add(BenchSamples *s, double seconds) {
        if (s->n == s->allocated) {
                size_t a = s->allocated ? s->allocated * 2 : 256;
                double *t = realloc(s->t, a * sizeof(*t));
                if (!t)
                        return -ENOMEM;
                s->t = t;
                s->allocated = a;
        }
        s->t[s->n++] = seconds;
        return 0;
}

bool bench_samples_enough(const BenchContext *ctx, const BenchSamples *s) {
        if (s->n < (ctx->count > 0 ? ctx->count : 1))
                return false;
        return bench_now() - s->started >= ctx->duration;
}

void bench_samples_free(BenchSamples *s) {
        free(s->t);
        *s = (BenchSamples){};
}

/* ---- Helper processes. */

static void close_fd(int *fd) {
        if (*fd >= 0)
                close(*fd);
        *fd = -1;
}

int bench_group_init(BenchGroup *g) {
        *g = (BenchGroup){ .ctl = { -1, -1 }, .ack = { -1, -1 } };
        for (unsigned i = 0; i < BENCH_MAX_RECEIVERS; i++)
                g->parent_fds[i] = g->pidfds[i] = -1;
        if (pipe2(g->ctl, O_CLOEXEC) < 0 || pipe2(g->ack, O_CLOEXEC) < 0)
                return -errno;
        return 0;
}

static int pidfd_open_or_not(pid_t pid) {
#ifdef SYS_pidfd_open
        return (int) syscall(SYS_pidfd_open, pid, 0);
#else
        return -1;
#endif
}

int bench_group_spawn(BenchGroup *g, BenchHelperFn fn, void *userdata) {
        unsigned index = g->n;
        pid_t parent = getpid(), pid;

        if (g->n >= BENCH_MAX_RECEIVERS)
                return -E2BIG;
        fflush(NULL);
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(1);
                signal(SIGPIPE, SIG_DFL);
                signal(SIGINT, SIG_DFL);
                signal(SIGTERM, SIG_DFL);
                close(g->ctl[1]);
                close(g->ack[0]);
                for (unsigned i = 0; i < BENCH_MAX_RECEIVERS; i++) {
                        if (g->parent_fds[i] >= 0)
                                close(g->parent_fds[i]);
                        if (g->pidfds[i] >= 0)
                                close(g->pidfds[i]);
                }
                _exit(fn(g, index, userdata));
        }
        g->pids[g->n] = pid;
        g->pidfds[g->n] = pidfd_open_or_not(pid);
        g->n++;
        return 0;
}

int bench_ack_send(BenchGroup *g, const BenchAck *a) {
        ssize_t n;

        do
                n = write(g->ack[1], a, sizeof(*a));
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        return n == sizeof(*a) ? 0 : -EIO;
}

int bench_ack_read(BenchGroup *g, BenchAck *ret, int timeout_ms, int extra_fd, short extra_events,
                   int (*pump)(void *userdata), void *userdata) {
        double deadline = bench_now() + timeout_ms / 1000.0;
        struct pollfd p[2 + BENCH_MAX_RECEIVERS];
        int r;

        /* The helpers' exits are watched too: the bench holds a write end
         * of the ack pipe, so a helper's death would never show as EOF. */
        p[0] = (struct pollfd){ .fd = g->ack[0], .events = POLLIN };
        p[1] = (struct pollfd){ .fd = extra_fd, .events = extra_events };
        for (unsigned i = 0; i < g->n; i++)
                p[2 + i] = (struct pollfd){ .fd = g->pidfds[i], .events = POLLIN };
        for (;;) {
                double left = deadline - bench_now();
                ssize_t n;

                if (left <= 0)
                        return -ETIMEDOUT;
                r = poll(p, 2 + g->n, (int) (left * 1000) + 1);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0)
                        return -errno;
                if (p[0].revents & POLLIN) {
                        n = read(g->ack[0], ret, sizeof(*ret));
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n < 0)
                                return -errno;
                        /* writes of a BenchAck are atomic: never a part */
                        return n == sizeof(*ret) ? 0 : -EIO;
                }
                if (extra_fd >= 0 && p[1].revents) {
                        r = pump(userdata);
                        if (r < 0)
                                return r;
                }
                for (unsigned i = 0; i < g->n; i++)
                        if (p[2 + i].revents)
                                return -ECHILD;
        }
}

int bench_group_finish(BenchGroup *g) {
        double deadline = bench_now() + 5;
        int failed = 0;

        close_fd(&g->ctl[1]);
        close_fd(&g->ctl[0]);
        for (unsigned i = 0; i < BENCH_MAX_RECEIVERS; i++)
                close_fd(&g->parent_fds[i]);
        for (unsigned i = 0; i < g->n; i++) {
                int status;

                if (g->pidfds[i] >= 0) {
                        struct pollfd p = { .fd = g->pidfds[i], .events = POLLIN };
                        double left = deadline - bench_now();

                        if (left <= 0 || poll(&p, 1, (int) (left * 1000) + 1) <= 0)
                                kill(g->pids[i], SIGKILL);
                        close_fd(&g->pidfds[i]);
                }
                /* Without a pidfd, helpers still exit on EOF on the control
                 * pipe; nothing else keeps them. */
                if (waitpid(g->pids[i], &status, 0) < 0 || !WIFEXITED(status) ||
                    WEXITSTATUS(status) != 0)
                        failed++;
        }
        close_fd(&g->ack[0]);
        close_fd(&g->ack[1]);
        g->n = 0;
        return failed;
}

/* ---- Latency figures. */

void bench_percentiles(double *v, size_t n, const double *q, double *ret, size_t k) {
        if (n > 0)
                qsort(v, n, sizeof(*v), compare_double);
        for (size_t i = 0; i < k; i++) {
                double rank = ceil(q[i] * (double) n);

                if (n == 0)
                        ret[i] = NAN;
                else
                        ret[i] = v[rank < 1 ? 0 : rank > (double) n ? n - 1 : (size_t) rank - 1];
        }
}

/* ---- Scenarios with a default count of their own. */

unsigned bench_count_or(const BenchContext *ctx, unsigned fallback) {
        if (ctx->count != 3 || ctx->duration == 0) /* busd-bench.c's DEFAULT_COUNT */
                return ctx->count;
        return fallback;
}

void bench_cell(FILE *f, const char *s, int width) {
        int columns = 0;

        for (const char *p = s; *p; p++)
                columns += ((unsigned char) *p & 0xC0) != 0x80;
        fprintf(f, " %*s%s", width > columns ? width - columns : 0, "", s);
}
