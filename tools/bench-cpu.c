/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * busd-bench scenario "cpu": the instructions busd executes per routed
 * message, counted by valgrind's callgrind tool, which gives the same count
 * on a busy machine as on an idle one. Two workloads: a 64-byte publish from
 * one publisher to one subscriber, and a call with a 64-byte request and a
 * 64-byte reply (both halves together: the pair is what a caller pays for).
 *
 * The valgrind driving lives in the script tools/busd-cpu-count (see there;
 * it is meant to be run by hand too): "start" runs a busd of our own under
 * callgrind with instrumentation off, "on" zeroes its counters and turns
 * instrumentation on, "off" dumps and prints the instructions since "on".
 * The bench's own busd is not used: it does not run under valgrind.
 *
 * Method: messages go one at a time (stop-and-wait), so every message costs
 * busd one full turn of its event loop, the same turn every time, and the
 * count does not depend on how many messages a read happens to batch. After
 * a warm-up with instrumentation off, two bursts are counted, of n and n/4
 * messages: the difference of the counts over the difference of the sizes
 * is the cost of one message, without what each count adds once (vgdb
 * interrupting busd, the burst's first wake-up). Below CPU_MIN_DIFF
 * messages, one burst of n is counted and divided by n.
 *
 * Without valgrind (or the script) the figures are null and the table says
 * why; that is not a failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libbus/bus.h>

#include "tools/bench.h"

#define CPU_DEFAULT_COUNT 20000
#define CPU_WARMUP_MAX 1000
#define CPU_MIN_DIFF 64 /* fewer messages: one burst, divided */
#define CPU_PAYLOAD 64
#define CPU_NAME "org.busd.BenchCpu"
#define CPU_METHOD "Echo"
#define CPU_READY_TIMEOUT_MS 60000  /* busd under valgrind starts slowly */
#define CPU_SCRIPT_TIMEOUT_MS 60000 /* one step of the script */
#define CPU_STOP_TIMEOUT_MS 30000
#define CPU_TARGET_PUBLISH 2000
#define CPU_TARGET_CALL 4000


typedef struct Cpu {
        BenchContext *ctx;
        unsigned count;
        const char *script;
        BenchBusd busd;
        char out_path[128]; /* callgrind's dumps: out_path.1, .2, ... */
        char why[512]; /* why nothing was measured */
} Cpu;

/* One workload: sends n messages (or calls) one at a time. */
typedef int (*CpuBurstFn)(Cpu *cpu, void *workload, unsigned n);

/* ---- Finding things. */

static bool is_executable(const char *path) {
        struct stat st;

        return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* The script: $BUSD_CPU_COUNT, beside the executable (the build tree's
 * tools/, or installed), the source tree's tools/ if the build says where,
 * or busd-cpu-count from $PATH. buf: at least PATH_MAX bytes. */
static const char *cpu_script(char *buf, size_t size) {
        const char *env = getenv("BUSD_CPU_COUNT");
        char exe[PATH_MAX], *slash;
        ssize_t n;

        if (env && *env)
                return env;
        n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n > 0) {
                size_t len;

                exe[n] = '\0';
                slash = strrchr(exe, '/');
                *slash = '\0';
                len = strlen(exe);
                if (len >= 6 && strcmp(exe + len - 6, "/.libs") == 0)
                        exe[len - 6] = '\0';
                snprintf(buf, size, "%s/busd-cpu-count", exe);
                if (is_executable(buf))
                        return buf;
        }
#ifdef BENCH_SRCDIR
        snprintf(buf, size, "%s/tools/busd-cpu-count", BENCH_SRCDIR);
        if (is_executable(buf))
                return buf;
#endif
        return "busd-cpu-count";
}

/* The busd to count: the bench's own binary (what its busd runs), else
 * the one busd-bench would start. buf: at least PATH_MAX bytes. */
static const char *cpu_busd_binary(const BenchContext *ctx, char *buf, size_t size) {
        char path[64];
        ssize_t n = -1;

        if (ctx->busd_pid > 0) {
                snprintf(path, sizeof(path), "/proc/%d/exe", (int) ctx->busd_pid);
                n = readlink(path, buf, size - 1);
        }
        if (n > 0) {
                buf[n] = '\0';
                if (!strstr(buf, " (deleted)")) /* rebuilt since it started */
                        return buf;
        }
        return bench_busd_binary(NULL, buf, size);
}

/* ---- Running the script. */

/* Forks and runs argv in its own process group (so that a timeout takes its
 * callgrind_control and vgdb too); stdout to out_fd, or stdout and stderr
 * to log_fd (-1: ours); NOTIFY_SOCKET set to notify if not NULL. */
static pid_t spawn_script(const char *const *argv, int out_fd, int log_fd, const char *notify) {
        pid_t parent = getpid(), pid;
        int fd;

        fflush(NULL);
        pid = fork();
        if (pid != 0)
                return pid < 0 ? -errno : pid;
        (void) setpgid(0, 0);
        (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
                _exit(127);
        signal(SIGPIPE, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (fd >= 0)
                dup2(fd, STDIN_FILENO);
        if (out_fd >= 0)
                dup2(out_fd, STDOUT_FILENO);
        if (log_fd >= 0) {
                dup2(log_fd, STDOUT_FILENO);
                dup2(log_fd, STDERR_FILENO);
        }
        if (notify) {
                unsetenv("LISTEN_FDS");
                unsetenv("LISTEN_PID");
                unsetenv("LISTEN_FDNAMES");
                setenv("NOTIFY_SOCKET", notify, 1);
        }
        execvp(argv[0], (char *const *) argv);
        fprintf(stderr, "busd-bench: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
}

/* Runs the script with args (NULL-terminated, after the script) and
 * collects its standard output in out; its standard error goes to ours.
 * Returns its exit status, -ETIMEDOUT (it was killed), or -errno. */
static int run_script(Cpu *cpu, const char *const *args, char *out, size_t size) {
        const char *argv[8] = { cpu->script };
        double deadline = bench_now() + CPU_SCRIPT_TIMEOUT_MS / 1000.0;
        size_t used = 0, n = 1;
        int p[2], status, r = 0;
        pid_t pid;

        for (size_t i = 0; args[i] && n < 7; i++)
                argv[n++] = args[i];
        argv[n] = NULL;
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        pid = spawn_script(argv, p[1], -1, NULL);
        close(p[1]);
        if (pid < 0) {
                close(p[0]);
                return pid;
        }
        for (;;) {
                struct pollfd pf = { .fd = p[0], .events = POLLIN };
                double left = deadline - bench_now();
                ssize_t k;

                if (left <= 0) {
                        kill(-pid, SIGKILL);
                        r = -ETIMEDOUT;
                        break;
                }
                if (poll(&pf, 1, (int) (left * 1000) + 1) < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        kill(-pid, SIGKILL);
                        break;
                }
                if (!pf.revents)
                        continue;
                k = read(p[0], out + used, size - 1 - used);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                used += (size_t) k;
                if (used == size - 1) /* more than we want: drop the rest */
                        used = 0;
        }
        out[used] = '\0';
        close(p[0]);
        if (waitpid(pid, &status, 0) < 0)
                return r < 0 ? r : -errno;
        if (r < 0)
                return r;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---- busd under callgrind. */

static int cpu_busd_start(Cpu *cpu, const char *busd) {
        BenchBusd *b = &cpu->busd;
        const char *argv[] = {
                cpu->script, "start",   "-o",          cpu->out_path, busd,
                "--address", b->address, "--log-level", "warning",     NULL,
        };
        int r;

        r = bench_busd_prepare(b, busd);
        if (r < 0)
                return r;
        /* callgrind's own pace: stopping it writes its last dump. */
        b->stop_timeout_ms = CPU_STOP_TIMEOUT_MS;
        snprintf(cpu->out_path, sizeof(cpu->out_path), "%s/callgrind.out", b->dir);
        return bench_busd_exec(b, argv);
}

/* ---- Workloads. */

/* A publish: 64 bytes through busd to the one subscriber of a BenchLink,
 * which acks the sum of what it got. */
static int publish_burst(Cpu *cpu, void *workload, unsigned n) {
        static uint64_t seq;
        BenchLink *l = workload;
        int r;

        for (unsigned i = 0; i < n; i++) {
                uint64_t sum = 0;
                BenchAck a;

                r = bench_link_send(l, CPU_PAYLOAD, ++seq * UINT64_C(0x9E3779B97F4A7C15), &sum);
                if (r < 0)
                        return r;
                r = bench_link_ack(l, &a, BENCH_ACK_TIMEOUT_MS);
                if (r < 0)
                        return r;
                if (a.size != CPU_PAYLOAD || a.sum != sum || a.missed ||
                    (a.flags & BENCH_ACK_ERROR))
                        return -EIO;
        }
        return 0;
}

typedef struct CpuCall {
        BenchEchoServer echo; /* owns CPU_NAME and echoes every request */
        BenchGroup group; /* the server */
        bus_client *client;
} CpuCall;

static int call_burst(Cpu *cpu, void *workload, unsigned n) {
        static uint64_t seq;
        CpuCall *w = workload;
        uint64_t buf[CPU_PAYLOAD / 8];
        int r;

        for (unsigned i = 0; i < n; i++) {
                bus_error error = BUS_ERROR_NULL;
                bus_message *reply = NULL;
                const void *data;
                size_t size;

                bench_fill(buf, sizeof(buf), ++seq);
                r = bus_client_call_method(w->client, CPU_NAME, CPU_METHOD, buf, sizeof(buf), 0,
                                           &error, &reply);
                if (r < 0 && error.name)
                        fprintf(stderr, "busd-bench: cpu: call failed: %s: %s\n", error.name,
                                error.message ?: "");
                bus_error_free(&error);
                if (r >= 0)
                        r = bus_message_get_payload(reply, &data, &size);
                if (r >= 0 && (size != sizeof(buf) || memcmp(data, buf, size) != 0))
                        r = -EIO;
                bus_message_unref(reply);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int call_open(CpuCall *w, const char *address) {
        BenchAck a;
        int r;

        *w = (CpuCall){ .echo = { .address = address, .name = CPU_NAME, .method = CPU_METHOD,
                                  .label = "cpu" } };
        r = bench_group_init(&w->group);
        if (r >= 0)
                r = bench_group_spawn(&w->group, bench_echo_server, &w->echo);
        if (r >= 0)
                r = bench_ack_read(&w->group, &a, BENCH_ACK_TIMEOUT_MS, -1, 0, NULL, NULL);
        if (r >= 0 && !(a.flags & BENCH_ACK_READY))
                r = -EPROTO;
        if (r >= 0)
                r = bus_client_open(&w->client, address);
        return r;
}

static int call_close(CpuCall *w) {
        w->client = bus_client_unref(w->client);
        return bench_group_finish(&w->group);
}

/* ---- Counting. */

/* busd's instructions over a burst of n, in *ret. */
static int cpu_count(Cpu *cpu, CpuBurstFn burst, void *workload, unsigned n, const char *what,
                     uint64_t *ret) {
        char pid[16], desc[64], out[PATH_MAX + 64];
        const char *on[] = { "on", pid, NULL };
        const char *off[] = { "off", pid, desc, NULL };
        unsigned long long ir;
        int r, s;

        snprintf(pid, sizeof(pid), "%d", (int) cpu->busd.pid);
        snprintf(desc, sizeof(desc), "%s-%u", what, n);
        s = run_script(cpu, on, out, sizeof(out));
        if (s != 0) {
                snprintf(cpu->why, sizeof(cpu->why), "busd-cpu-count on: %s",
                         s < 0 ? strerror(-s) : "failed");
                return -EIO;
        }
        r = burst(cpu, workload, n);
        /* off also after a failed burst: busd must not stay instrumented */
        s = run_script(cpu, off, out, sizeof(out));
        if (r < 0)
                return r;
        if (s != 0 || sscanf(out, "%llu", &ir) != 1) {
                snprintf(cpu->why, sizeof(cpu->why), "busd-cpu-count off: %s",
                         s < 0 ? strerror(-s) : "failed");
                return -EIO;
        }
        *ret = ir;
        return 0;
}

/* Instructions per message of a workload (see the top of the file). */
static int cpu_measure(Cpu *cpu, CpuBurstFn burst, void *workload, const char *what,
                       double *ret) {
        unsigned n = cpu->count, small = n / 4;
        uint64_t ir_small = 0, ir;
        int r;

        bench_progress(cpu->ctx, "cpu: %s, warming up", what);
        r = burst(cpu, workload, n < CPU_WARMUP_MAX ? n : CPU_WARMUP_MAX);
        if (r >= 0 && n >= CPU_MIN_DIFF) {
                bench_progress(cpu->ctx, "cpu: %s, %u messages under callgrind", what, small);
                r = cpu_count(cpu, burst, workload, small, what, &ir_small);
        } else
                small = 0;
        if (r >= 0) {
                bench_progress(cpu->ctx, "cpu: %s, %u messages under callgrind", what, n);
                r = cpu_count(cpu, burst, workload, n, what, &ir);
        }
        if (r < 0)
                return r;
        if (ir <= ir_small)
                return -ERANGE;
        *ret = (double) (ir - ir_small) / (n - small);
        return 0;
}

/* ---- Figures and the table. */

static void cpu_row(FILE *f, const char *what, double v, unsigned target) {
        if (isfinite(v))
                fprintf(f, "%-32s %12.0f %8u  %s\n", what, v, target,
                        v <= target ? "met" : "missed");
        else
                fprintf(f, "%-32s %12s %8u\n", what, "-", target);
}

static void cpu_report(Cpu *cpu, double publish, double call) {
        BenchContext *ctx = cpu->ctx;
        FILE *f = ctx->human;
        unsigned n = cpu->count;

        bench_figure(ctx, publish, true, false, "cpu.instr_per_publish");
        bench_figure(ctx, call, true, false, "cpu.instr_per_call");
        bench_figure(ctx, n, isfinite(publish) || isfinite(call), true, "cpu.count");

        if (!isfinite(publish) && !isfinite(call)) {
                fprintf(f, "cpu: instructions busd executes per routed message: not measured: %s\n",
                        cpu->why[0] ? cpu->why : "see above");
                return;
        }
        fprintf(f, "cpu: instructions busd executes per routed message (valgrind "
                   "--tool=callgrind),\none message at a time, after a warm-up; ");
        if (n >= CPU_MIN_DIFF)
                fprintf(f, "(count of %u - count of %u) / %u\n", n, n / 4, n - n / 4);
        else
                fprintf(f, "count of %u / %u\n", n, n);
        fprintf(f, "%-32s %12s %8s\n", "", "instructions", "target");
        cpu_row(f, "publish 64 B, 1 subscriber", publish, CPU_TARGET_PUBLISH);
        cpu_row(f, "call 64 B + reply 64 B", call, CPU_TARGET_CALL);
        if (cpu->why[0])
                fprintf(f, "not measured: %s\n", cpu->why);
}

/* The text of the script's check: its first line, without the newline. */
static void first_line(char *s) {
        s[strcspn(s, "\n")] = '\0';
}

static int cpu_run(BenchContext *ctx) {
        Cpu cpu = { .ctx = ctx, .busd = { .pid = -1, .pidfd = -1, .notify_fd = -1 } };
        char script[PATH_MAX], busd[PATH_MAX], out[512];
        const char *check[] = { "check", NULL };
        double publish = NAN, call = NAN;
        BenchLink link;
        CpuCall w;
        int r, s;

        cpu.count = bench_count_or(ctx, CPU_DEFAULT_COUNT);
        cpu.script = cpu_script(script, sizeof(script));
        s = run_script(&cpu, check, out, sizeof(out));
        if (s != 0) {
                first_line(out);
                snprintf(cpu.why, sizeof(cpu.why), "%s",
                         s == 127  ? "the script busd-cpu-count was not found (set $BUSD_CPU_COUNT)"
                         : out[0] ? out
                                  : "busd-cpu-count check failed");
                fprintf(stderr, "busd-bench: cpu: not measured: %s\n", cpu.why);
                cpu_report(&cpu, NAN, NAN);
                return 0; /* not a failure: an optional tool is missing */
        }

        bench_progress(ctx, "cpu: starting busd under callgrind");
        r = cpu_busd_start(&cpu, cpu_busd_binary(ctx, busd, sizeof(busd)));
        if (r < 0) {
                snprintf(cpu.why, sizeof(cpu.why), "busd did not start under callgrind: %s",
                         strerror(-r));
                ctx->failures++;
                goto finish;
        }

        r = bench_link_open(&link, BENCH_TRANSPORT_BUS_INLINE, 1, cpu.busd.address, CPU_PAYLOAD);
        if (r >= 0)
                r = cpu_measure(&cpu, publish_burst, &link, "publish", &publish);
        if (r < 0)
                fprintf(stderr, "busd-bench: cpu: publish: %s\n",
                        cpu.why[0] ? cpu.why : bench_link_strerror(&link, r));
        if (bench_link_close(&link) > 0 && r >= 0)
                r = -ECHILD;
        if (r < 0) {
                publish = NAN;
                ctx->failures++;
                if (cpu.why[0]) /* the script failed: it would again */
                        goto finish;
        }

        r = call_open(&w, cpu.busd.address);
        if (r >= 0)
                r = cpu_measure(&cpu, call_burst, &w, "call", &call);
        if (r < 0)
                fprintf(stderr, "busd-bench: cpu: call: %s\n",
                        cpu.why[0] ? cpu.why : strerror(-r));
        if (call_close(&w) > 0 && r >= 0)
                r = -ECHILD;
        if (r < 0) {
                call = NAN;
                ctx->failures++;
        }
finish:
        bench_progress(ctx, NULL);
        bench_busd_stop(&cpu.busd);
        cpu_report(&cpu, publish, call);
        return 0;
}

const BenchScenario bench_scenario_cpu = {
        .name = "cpu",
        .summary = "instructions busd executes per routed message (callgrind)",
        .run = cpu_run,
};
