/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * busd-bench: pinning, and the busd the bench runs for itself.
 *
 * The bench's busd listens on "bus" in a private directory made with
 * mkdtemp() (under $TMPDIR if a socket path fits there, else /tmp), writes
 * its output to "busd.log" there, and tells the bench it is ready with
 * READY=1 on the datagram socket "notify" (NOTIFY_SOCKET, sd_notify(3)).
 * Its exit is watched on a pidfd, so a busd that fails to start is noticed at
 * once, not after the timeout. It dies with the bench (PR_SET_PDEATHSIG).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tools/bench.h"

#define BUSD_READY_TIMEOUT_MS 10000
#define BUSD_STOP_TIMEOUT_MS 5000

int bench_pin(int cpu) {
        cpu_set_t set;

        if (cpu < 0 || cpu >= CPU_SETSIZE)
                return -EINVAL;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (sched_setaffinity(0, sizeof(set), &set) < 0)
                return -errno;
        return 0;
}

int bench_first_cpu(void) {
        cpu_set_t set;

        if (sched_getaffinity(0, sizeof(set), &set) < 0)
                return -errno;
        for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
                if (CPU_ISSET(cpu, &set))
                        return cpu;
        return -ENXIO;
}

int bench_affinity_text(pid_t pid, char *ret, size_t size) {
        cpu_set_t set;
        size_t len = 0;

        if (sched_getaffinity(pid, sizeof(set), &set) < 0)
                return -errno;
        ret[0] = '\0';
        for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
                int last = cpu;

                if (!CPU_ISSET(cpu, &set))
                        continue;
                while (last + 1 < CPU_SETSIZE && CPU_ISSET(last + 1, &set))
                        last++;
                if (last == cpu)
                        len += snprintf(ret + len, len < size ? size - len : 0, "%s%d",
                                        len ? "," : "", cpu);
                else
                        len += snprintf(ret + len, len < size ? size - len : 0, "%s%d-%d",
                                        len ? "," : "", cpu, last);
                cpu = last;
        }
        return len < size ? 0 : -ENOBUFS;
}

static bool is_executable(const char *path) {
        struct stat st;

        return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

const char *bench_busd_binary(const char *explicit_path, char *buf, size_t size) {
        char exe[PATH_MAX], *slash;
        const char *env;
        ssize_t n;

        if (explicit_path)
                return explicit_path;
        env = getenv("BUSD_BINARY");
        if (env && *env)
                return env;
        n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n > 0) {
                char candidate[PATH_MAX + 16];
                size_t len;

                exe[n] = '\0';
                slash = strrchr(exe, '/');
                *slash = '\0';
                /* libtool runs an uninstalled program from tools/.libs/ */
                len = strlen(exe);
                if (len >= 6 && strcmp(exe + len - 6, "/.libs") == 0)
                        exe[len - 6] = '\0';
                snprintf(candidate, sizeof(candidate), "%s/../busd/busd", exe);
                if (!is_executable(candidate))
                        snprintf(candidate, sizeof(candidate), "%s/busd", exe);
                if (size >= PATH_MAX && is_executable(candidate) && realpath(candidate, buf))
                        return buf;
        }
        return "busd";
}

static void dump_log(const BenchBusd *b) {
        char line[512];
        FILE *f;

        f = fopen(b->log_path, "re");
        if (!f)
                return;
        while (fgets(line, sizeof(line), f))
                fprintf(stderr, "busd: %s", line);
        fclose(f);
}

static int make_dir(BenchBusd *b) {
        const char *tmp = getenv("TMPDIR");
        size_t max = sizeof(b->dir) - 1;

        /* A socket path must fit in sun_path. */
        if (!tmp || !*tmp || strlen(tmp) + strlen("/busd-bench.XXXXXX") > max)
                tmp = "/tmp";
        snprintf(b->dir, sizeof(b->dir), "%s/busd-bench.XXXXXX", tmp);
        if (!mkdtemp(b->dir))
                return -errno;
        snprintf(b->address, sizeof(b->address), "%s/bus", b->dir);
        snprintf(b->notify_path, sizeof(b->notify_path), "%s/notify", b->dir);
        snprintf(b->log_path, sizeof(b->log_path), "%s/busd.log", b->dir);
        return 0;
}

static int bind_notify(BenchBusd *b) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        b->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (b->notify_fd < 0)
                return -errno;
        strcpy(sa.sun_path, b->notify_path);
        if (bind(b->notify_fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return -errno;
        return 0;
}

static pid_t spawn(BenchBusd *b, const char *const *argv) {
        pid_t parent = getpid(), pid;
        int fd;

        fflush(NULL);
        pid = fork();
        if (pid != 0)
                return pid < 0 ? -errno : pid;

        (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
                _exit(127);
        signal(SIGPIPE, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd >= 0)
                dup2(fd, STDIN_FILENO);
        fd = open(b->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd >= 0) {
                dup2(fd, STDOUT_FILENO);
                dup2(fd, STDERR_FILENO);
        }
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDNAMES");
        setenv("NOTIFY_SOCKET", b->notify_path, 1);
        execvp(argv[0], (char *const *) argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
}

/* 1 on READY=1, 0 if it has not come yet, negative errno. */
static int read_notify(BenchBusd *b) {
        char buf[4096];
        ssize_t n;

        while ((n = recv(b->notify_fd, buf, sizeof(buf) - 1, 0)) >= 0) {
                buf[n] = '\0';
                for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
                        if (strcmp(line, "READY=1") == 0)
                                return 1;
        }
        return errno == EAGAIN ? 0 : -errno;
}

static int wait_ready(BenchBusd *b) {
        double deadline = bench_now() + BUSD_READY_TIMEOUT_MS / 1000.0;
        int r;

        for (;;) {
                struct pollfd p[2] = {
                        { .fd = b->notify_fd, .events = POLLIN },
                        { .fd = b->pidfd, .events = POLLIN },
                };
                double left = deadline - bench_now();

                if (left <= 0)
                        return -ETIMEDOUT;
                r = poll(p, b->pidfd >= 0 ? 2 : 1, (int) (left * 1000) + 1);
                if (r < 0 && errno != EINTR)
                        return -errno;
                r = read_notify(b);
                if (r != 0)
                        return r < 0 ? r : 0;
                if (b->pidfd >= 0 && p[1].revents)
                        return -ESRCH;
        }
}

int bench_busd_prepare(BenchBusd *b, const char *binary) {
        int r;

        *b = (BenchBusd){ .pid = -1, .pidfd = -1, .notify_fd = -1, .binary = binary };
        r = make_dir(b);
        if (r < 0) {
                fprintf(stderr, "busd-bench: cannot create a temporary directory: %s\n",
                        strerror(-r));
                b->dir[0] = '\0';
                return r;
        }
        r = bind_notify(b);
        if (r < 0) {
                fprintf(stderr, "busd-bench: cannot bind %s: %s\n", b->notify_path, strerror(-r));
                bench_busd_stop(b);
                return r;
        }
        return 0;
}

int bench_busd_exec(BenchBusd *b, const char *const *argv) {
        int r;

        b->pid = spawn(b, argv);
        if (b->pid < 0) {
                r = b->pid;
                fprintf(stderr, "busd-bench: cannot fork: %s\n", strerror(-r));
                bench_busd_stop(b);
                return r;
        }
#ifdef SYS_pidfd_open
        b->pidfd = (int) syscall(SYS_pidfd_open, b->pid, 0);
#endif
        r = wait_ready(b);
        if (r < 0) {
                fprintf(stderr, "busd-bench: %s did not become ready: %s\n", b->binary,
                        r == -ESRCH ? "it exited" : strerror(-r));
                bench_busd_stop(b); /* shows busd's log */
                return r;
        }
        return 0;
}

int bench_busd_start(BenchBusd *b, const char *binary, const char *const *extra_args) {
        const char *argv[32];
        size_t n = 0;
        int r;

        r = bench_busd_prepare(b, binary);
        if (r < 0)
                return r;
        argv[n++] = binary;
        argv[n++] = "--address";
        argv[n++] = b->address;
        for (size_t i = 0; extra_args && extra_args[i] && n < 31; i++)
                argv[n++] = extra_args[i];
        argv[n] = NULL;
        return bench_busd_exec(b, argv);
}

void bench_busd_stop(BenchBusd *b) {
        int status = 0;

        if (b->pid > 0) {
                kill(b->pid, SIGTERM);
                if (b->pidfd >= 0) {
                        struct pollfd p = { .fd = b->pidfd, .events = POLLIN };

                        if (poll(&p, 1, b->stop_timeout_ms > 0 ? b->stop_timeout_ms
                                                                : BUSD_STOP_TIMEOUT_MS) <= 0)
                                kill(b->pid, SIGKILL);
                }
                if (waitpid(b->pid, &status, 0) == b->pid &&
                    !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
                        fprintf(stderr, "busd-bench: busd ended with status %d:\n",
                                WIFEXITED(status) ? WEXITSTATUS(status)
                                                  : 128 + WTERMSIG(status));
                        dump_log(b);
                }
                b->pid = -1;
        }
        if (b->pidfd >= 0)
                close(b->pidfd);
        if (b->notify_fd >= 0)
                close(b->notify_fd);
        b->pidfd = b->notify_fd = -1;
        if (b->dir[0]) {
                /* The socket, the log, and whatever a wrapper wrote there. */
                DIR *d = opendir(b->dir);
                struct dirent *de;

                while (d && (de = readdir(d)))
                        if (de->d_name[0] != '.')
                                (void) unlinkat(dirfd(d), de->d_name, 0);
                if (d)
                        closedir(d);
                rmdir(b->dir);
                b->dir[0] = '\0';
        }
}

int bench_proc_memory(pid_t pid, const char *field, uint64_t *ret) {
        char path[64], line[256];
        size_t len = strlen(field);
        int r = -ENODATA;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return -errno;
        while (fgets(line, sizeof(line), f))
                if (strncmp(line, field, len) == 0 && line[len] == ':') {
                        *ret = strtoull(line + len + 1, NULL, 10) * 1024; /* "kB" */
                        r = 0;
                        break;
                }
        fclose(f);
        return r;
}

int bench_proc_reset_peak(pid_t pid) {
        char path[64];
        int fd, r = 0;

        snprintf(path, sizeof(path), "/proc/%d/clear_refs", (int) pid);
        fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (write(fd, "5", 1) != 1)
                r = -errno;
        close(fd);
        return r;
}
