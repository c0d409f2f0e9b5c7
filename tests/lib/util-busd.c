/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * See util-busd.h. Process exits are waited for on a pidfd (poll() says when
 * the process has exited; waitpid() then reaps it). Kernels without
 * pidfd_open() (before 5.3) fall back to checking waitpid(WNOHANG) every few
 * milliseconds until the same deadline.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libbus/bus.h>

#include "libbus/macro.h"
#include "proto/bus.pb-c.h"
#include "tests/lib/tap.h"
#include "tests/lib/util-busd.h"

/* How often to look again when there is no pidfd to wait on. */
#define FALLBACK_POLL_MS 5

int64_t test_now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int ms_left(int64_t deadline) {
        int64_t left = deadline - test_now_ms();

        return left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int) left;
}

static int pidfd_open_or_fail(pid_t pid) {
#ifdef SYS_pidfd_open
        /* Asked once: valgrind, for one, does not know the call and would
         * complain every time. */
        static bool unsupported;
        int fd;

        if (unsupported)
                return -1;
        fd = (int) syscall(SYS_pidfd_open, pid, 0);
        if (fd < 0 && errno == ENOSYS)
                unsupported = true;
        return fd < 0 ? -1 : fd;
#else
        return -1;
#endif
}

/* Exit code, or 128 + signal as the shell reports it. */
static int exit_status(int wstatus) {
        if (WIFEXITED(wstatus))
                return WEXITSTATUS(wstatus);
        if (WIFSIGNALED(wstatus))
                return 128 + WTERMSIG(wstatus);
        return 255;
}

/* Waits up to timeout_ms for fd to become readable; without a descriptor,
 * only up to FALLBACK_POLL_MS, for the caller to look again. Returns 1
 * readable, 0 not (yet), or -errno. */
static int poll_one(int fd, int timeout_ms) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int r;

        if (fd < 0)
                timeout_ms = MIN(timeout_ms, FALLBACK_POLL_MS);
        r = poll(&p, fd < 0 ? 0 : 1, timeout_ms);
        if (r < 0 && errno != EINTR)
                return negative_errno();
        return r < 0 ? 0 : r;
}

/* Reaps pid if it has exited. 1 and *ret_wstatus if reaped, 0 if it runs, -errno. */
static int reap(pid_t pid, int *ret_wstatus) {
        pid_t r;

        do
                r = waitpid(pid, ret_wstatus, WNOHANG);
        while (r < 0 && errno == EINTR);
        if (r < 0)
                return negative_errno();
        return r == pid;
}

/* Waits until pid exits and reaps it: 0 and *ret_wstatus, -ETIMEDOUT, -errno.
 * pidfd may be -1: one is opened here if the kernel can. */
static int wait_pid(pid_t pid, int pidfd, int timeout_ms, int *ret_wstatus) {
        _cleanup_close_ int own = -1;
        int64_t deadline = test_now_ms() + timeout_ms;
        int r;

        if (pidfd < 0)
                pidfd = own = pidfd_open_or_fail(pid);
        for (;;) {
                r = reap(pid, ret_wstatus);
                if (r < 0)
                        return r;
                if (r > 0)
                        return 0;
                if (ms_left(deadline) == 0)
                        return -ETIMEDOUT;
                r = poll_one(pidfd, ms_left(deadline));
                if (r < 0)
                        return r;
        }
}

const char *test_busd_binary(void) {
        const char *e = getenv("BUSD_BINARY");

        return e && *e ? e : "busd/busd";
}

/* ---- notifications */

static void parse_notification(TestBusd *b, char *msg) {
        char *save = NULL;

        for (char *line = strtok_r(msg, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                if (strcmp(line, "READY=1") == 0)
                        b->ready = true;
                else if (strcmp(line, "STOPPING=1") == 0)
                        b->stopping = true;
                else if (strncmp(line, "STATUS=", 7) == 0)
                        snprintf(b->status_text, sizeof(b->status_text), "%s", line + 7);
        }
}

/* Reads every datagram waiting on the notify socket. */
static void drain_notifications(TestBusd *b) {
        char buf[4096];
        ssize_t n;

        if (b->notify_fd < 0)
                return;
        /* recv() without a control buffer: descriptors someone might attach
         * are discarded (closed) by the kernel. */
        while ((n = recv(b->notify_fd, buf, sizeof(buf) - 1, MSG_DONTWAIT)) >= 0 ||
               errno == EINTR) {
                if (n < 0)
                        continue;
                buf[n] = '\0';
                parse_notification(b, buf);
        }
}

/* ---- the broker process */

static void record_exit(TestBusd *b, int wstatus) {
        b->exited = true;
        b->status = exit_status(wstatus);
        b->pidfd = safe_close(b->pidfd);
}

/* dir/name into buf; -ENAMETOOLONG if it does not fit. */
static int path_join(char *buf, size_t size, const char *dir, const char *name) {
        int n = snprintf(buf, size, "%s/%s", dir, name);

        return n < 0 || (size_t) n >= size ? -ENAMETOOLONG : 0;
}

int test_busd_init(TestBusd *b) {
        const char *tmp = getenv("TMPDIR");
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        char dir[sizeof(b->dir)];
        int fd, r;

        *b = (TestBusd){ .pid = -1, .log_fd = -1, .notify_fd = -1, .pidfd = -1 };
        /* Socket paths must fit sun_path: a long $TMPDIR is not usable. */
        if (!tmp || tmp[0] != '/' ||
            strlen(tmp) + sizeof("/busd-test-XXXXXX/notify") > sizeof(b->address))
                tmp = "/tmp";
        r = path_join(dir, sizeof(dir), tmp, "busd-test-XXXXXX");
        if (r < 0)
                return r;
        if (!mkdtemp(dir))
                return negative_errno();
        memcpy(b->dir, dir, sizeof(dir));
        if (path_join(b->address, sizeof(b->address), dir, "bus") < 0 ||
            path_join(b->notify_path, sizeof(b->notify_path), dir, "notify") < 0 ||
            path_join(b->log_path, sizeof(b->log_path), dir, "busd.log") < 0) {
                errno = ENAMETOOLONG;
                goto fail;
        }

        fd = open(b->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0)
                goto fail;
        b->log_fd = fd;

        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                goto fail;
        b->notify_fd = fd;
        memcpy(sa.sun_path, b->notify_path, strlen(b->notify_path) + 1);
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                goto fail;
        return 0;

fail:
        r = negative_errno();
        (void) test_busd_stop(b);
        return r;
}

int test_busd_exec(TestBusd *b, const char *const *argv) {
        pid_t parent = getpid(), pid;

        if (!b->dir[0] || b->pid > 0 || !argv || !argv[0])
                return -EINVAL;
        /* Anything buffered would otherwise be written twice. */
        fflush(NULL);
        pid = fork();
        if (pid < 0)
                return negative_errno();
        if (pid == 0) {
                sigset_t none;
                int null;

                /* busd must not outlive a test that crashes. */
                (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
                if (getppid() != parent)
                        _exit(EXIT_FAILURE);
                sigemptyset(&none);
                (void) sigprocmask(SIG_SETMASK, &none, NULL);
                null = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (null < 0 || dup2(null, STDIN_FILENO) < 0 ||
                    dup2(b->log_fd, STDOUT_FILENO) < 0 || dup2(b->log_fd, STDERR_FILENO) < 0)
                        _exit(EXIT_FAILURE);
                if (setenv("NOTIFY_SOCKET", b->notify_path, 1) < 0)
                        _exit(EXIT_FAILURE);
                (void) unsetenv("LISTEN_FDS");
                (void) unsetenv("LISTEN_PID");
                (void) unsetenv("LISTEN_FDNAMES");
                execv(argv[0], (char *const *) argv);
                dprintf(STDERR_FILENO, "test harness: cannot execute %s: %m\n", argv[0]);
                _exit(127);
        }
        b->pid = pid;
        b->pidfd = pidfd_open_or_fail(pid);
        return 0;
}

int test_busd_wait_ready(TestBusd *b, int timeout_ms) {
        int64_t deadline = test_now_ms() + timeout_ms;
        int wstatus, r;

        if (b->pid <= 0)
                return -EINVAL;
        for (;;) {
                struct pollfd p[2] = {
                        { .fd = b->notify_fd, .events = POLLIN },
                        { .fd = b->pidfd, .events = POLLIN },
                };
                int left;

                drain_notifications(b);
                if (b->ready)
                        return 0;
                if (b->exited)
                        return -ESRCH;
                r = reap(b->pid, &wstatus);
                if (r < 0)
                        return r;
                if (r > 0) {
                        record_exit(b, wstatus);
                        /* It may have sent READY=1 just before exiting. */
                        continue;
                }
                left = ms_left(deadline);
                if (left == 0)
                        return -ETIMEDOUT;
                if (b->pidfd < 0)
                        left = MIN(left, FALLBACK_POLL_MS);
                if (poll(p, b->pidfd < 0 ? 1 : 2, left) < 0 && errno != EINTR)
                        return negative_errno();
        }
}

int test_busd_start(TestBusd *b, const char *const *extra_args) {
        const char *argv[64];
        size_t n = 0;
        int r;

        r = test_busd_init(b);
        if (r < 0)
                return r;
        argv[n++] = test_busd_binary();
        argv[n++] = "--address";
        argv[n++] = b->address;
        for (size_t i = 0; extra_args && extra_args[i]; i++) {
                if (n + 1 >= ELEMENTSOF(argv))
                        return -E2BIG;
                argv[n++] = extra_args[i];
        }
        argv[n] = NULL;
        r = test_busd_exec(b, argv);
        if (r < 0)
                return r;
        r = test_busd_wait_ready(b, TEST_BUSD_TIMEOUT_MS);
        if (r < 0)
                return r;
        if (setenv("BUSD_ADDRESS", b->address, 1) < 0)
                return negative_errno();
        return 0;
}

bool test_busd_alive(TestBusd *b) {
        int wstatus;

        if (b->pid <= 0 || b->exited)
                return false;
        if (reap(b->pid, &wstatus) == 0)
                return true;
        record_exit(b, wstatus);
        return false;
}

int test_busd_wait_exit(TestBusd *b, int timeout_ms) {
        int wstatus, r;

        if (b->pid <= 0)
                return -ESRCH;
        if (!b->exited) {
                r = wait_pid(b->pid, b->pidfd, timeout_ms, &wstatus);
                if (r < 0)
                        return r;
                record_exit(b, wstatus);
        }
        return b->status;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        (void) remove(path);
        return 0;
}

int test_busd_stop(TestBusd *b) {
        const char *e;
        int r = -ESRCH, wstatus;

        if (!b->dir[0])
                return -ESRCH;
        if (b->pid > 0 && !b->exited) {
                (void) kill(b->pid, SIGTERM);
                r = wait_pid(b->pid, b->pidfd, TEST_BUSD_STOP_TIMEOUT_MS, &wstatus);
                if (r == -ETIMEDOUT) {
                        /* Always a bug; the log is about to be removed. */
                        tap_diag("busd (pid %d) did not exit within %d ms of SIGTERM; killing it",
                                 (int) b->pid, TEST_BUSD_STOP_TIMEOUT_MS);
                        test_busd_dump_log(b);
                        b->killed = true;
                        (void) kill(b->pid, SIGKILL);
                        r = wait_pid(b->pid, b->pidfd, TEST_BUSD_STOP_TIMEOUT_MS, &wstatus);
                }
                if (r == 0)
                        record_exit(b, wstatus);
                /* A broker that fails to stop cleanly is a bug, and its log
                 * is about to go: show it now. */
                if (r == 0 && b->status != 0 && !b->killed) {
                        tap_diag("busd (pid %d) exited with status %d after SIGTERM",
                                 (int) b->pid, b->status);
                        test_busd_dump_log(b);
                }
        }
        if (b->exited) {
                r = b->status;
                b->socket_remained = access(b->address, F_OK) == 0;
        }
        drain_notifications(b);

        b->pidfd = safe_close(b->pidfd);
        b->log_fd = safe_close(b->log_fd);
        b->notify_fd = safe_close(b->notify_fd);
        (void) nftw(b->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        e = getenv("BUSD_ADDRESS");
        if (e && strcmp(e, b->address) == 0)
                (void) unsetenv("BUSD_ADDRESS");
        b->dir[0] = '\0';
        return r;
}

/* ---- the log */

const char *test_busd_log(TestBusd *b) {
        return b->log_path;
}

/* The whole log as a string (it is small), or NULL. */
static char *read_log(TestBusd *b) {
        _cleanup_free_ char *buf = NULL;
        FILE *f;
        size_t n;

        f = fopen(b->log_path, "re");
        if (!f)
                return NULL;
        buf = malloc(1024 * 1024);
        if (buf) {
                n = fread(buf, 1, 1024 * 1024 - 1, f);
                buf[n] = '\0';
        }
        fclose(f);
        return TAKE_PTR(buf);
}

bool test_busd_log_contains(TestBusd *b, const char *needle) {
        _cleanup_free_ char *log = read_log(b);

        return log && strstr(log, needle);
}

void test_busd_dump_log(TestBusd *b) {
        _cleanup_free_ char *log = read_log(b);
        char *save = NULL;

        if (!log) {
                tap_diag("busd: (no log at %s; test_busd_stop() removes it)", b->log_path);
                return;
        }
        for (char *line = strtok_r(log, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
                tap_diag("busd: %s", line);
}

/* ---- sockets and files */

int test_connect_raw(const char *address) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        size_t len = strlen(address);
        socklen_t salen;
        int fd;

        if (len == 0 || len >= sizeof(sa.sun_path))
                return -EINVAL;
        if (address[0] == '@') {
                /* Abstract: a leading NUL, and the length says where it ends. */
                memcpy(sa.sun_path + 1, address + 1, len - 1);
                salen = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + len);
        } else {
                memcpy(sa.sun_path, address, len + 1);
                salen = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + len + 1);
        }
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return negative_errno();
        if (connect(fd, (struct sockaddr *) &sa, salen) < 0) {
                int r = negative_errno();
                safe_close(fd);
                return r;
        }
        return fd;
}

int test_wait_for_path(const char *path, int timeout_ms) {
        int64_t deadline = test_now_ms() + timeout_ms;
        _cleanup_close_ int fd = -1;
        char dir[PATH_MAX], *slash;
        int r;

        snprintf(dir, sizeof(dir), "%s", path);
        slash = strrchr(dir, '/');
        if (!slash)
                snprintf(dir, sizeof(dir), ".");
        else if (slash == dir)
                dir[1] = '\0';
        else
                *slash = '\0';
        fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        if (fd < 0)
                return negative_errno();
        /* Watch first, then look: a file made in between is not missed. */
        if (inotify_add_watch(fd, dir, IN_CREATE | IN_MOVED_TO) < 0)
                return negative_errno();
        for (;;) {
                char buf[4096];

                if (access(path, F_OK) == 0)
                        return 0;
                if (ms_left(deadline) == 0)
                        return -ETIMEDOUT;
                r = poll_one(fd, ms_left(deadline));
                if (r < 0)
                        return r;
                while (read(fd, buf, sizeof(buf)) > 0)
                        ;
        }
}

/* ---- child processes */

pid_t test_child_start(int (*fn)(void *arg), void *arg) {
        pid_t parent = getpid(), pid;

        fflush(NULL);
        pid = fork();
        if (pid < 0)
                return negative_errno();
        if (pid == 0) {
                int r;

                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(EXIT_FAILURE);
                r = fn(arg);
                /* What the child printed itself; the parent's buffers were
                 * flushed before fork(). */
                fflush(NULL);
                _exit(r == 0 ? 0 : r < 0 ? MIN(-r, 255) : MIN(r, 255));
        }
        return pid;
}

int test_child_wait(pid_t pid, int timeout_ms) {
        int wstatus, r;

        r = wait_pid(pid, -1, timeout_ms, &wstatus);
        if (r == -ETIMEDOUT) {
                (void) kill(pid, SIGKILL);
                (void) wait_pid(pid, -1, TEST_BUSD_STOP_TIMEOUT_MS, &wstatus);
                return -ETIMEDOUT;
        }
        if (r < 0)
                return r;
        return exit_status(wstatus);
}

/* ---- signals between processes */

int test_signal_init(TestSignal *s) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s->fd) < 0) {
                s->fd[0] = s->fd[1] = -1;
                return negative_errno();
        }
        return 0;
}

void test_signal_post(TestSignal *s, char c) {
        ssize_t n;

        do
                n = send(s->fd[1], &c, 1, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
}

int test_signal_wait(TestSignal *s, int timeout_ms, char *ret_c) {
        int64_t deadline = test_now_ms() + timeout_ms;
        ssize_t n;
        char c;
        int r;

        for (;;) {
                r = poll_one(s->fd[0], ms_left(deadline));
                if (r < 0)
                        return r;
                if (r == 0) {
                        if (ms_left(deadline) == 0)
                                return -ETIMEDOUT;
                        continue;
                }
                n = recv(s->fd[0], &c, 1, MSG_DONTWAIT);
                if (n == 1) {
                        if (ret_c)
                                *ret_c = c;
                        return 0;
                }
                if (n == 0)
                        return -EPIPE;
                if (errno != EAGAIN && errno != EINTR)
                        return negative_errno();
        }
}

void test_signal_close_write(TestSignal *s) {
        s->fd[1] = safe_close(s->fd[1]);
}

void test_signal_close(TestSignal *s) {
        s->fd[0] = safe_close(s->fd[0]);
        s->fd[1] = safe_close(s->fd[1]);
}

int test_count_fds(pid_t pid) {
        char path[64];
        struct dirent *de;
        DIR *d;
        int n = 0;

        if (pid == 0)
                snprintf(path, sizeof(path), "/proc/self/fd");
        else
                snprintf(path, sizeof(path), "/proc/%d/fd", (int) pid);
        d = opendir(path);
        if (!d)
                return negative_errno();
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        n++;
        closedir(d);
        return n;
}

void test_busd_start_or_bail(TestBusd *b, const char *const *extra_args) {
        if (test_busd_start(b, extra_args) >= 0)
                return;
        test_busd_dump_log(b);
        (void) test_busd_stop(b);
        printf("Bail out! cannot start busd\n");
        exit(1);
}

void test_busd_check_clean_exit(TestBusd *b) {
        tap_check_int(test_busd_stop(b), 0);
}

/* ---- Driving a libbus client. */

int test_process_until(bus_client *c, bool (*done)(void *userdata), void *userdata,
                       int timeout_ms) {
        int64_t deadline = test_now_ms() + timeout_ms;

        while (!done(userdata)) {
                int64_t left;
                int r = bus_client_process(c);

                if (r < 0)
                        return r;
                if (r > 0)
                        continue;
                left = deadline - test_now_ms();
                if (left <= 0)
                        return -ETIMEDOUT;
                r = bus_client_wait(c, (uint64_t) left * 1000);
                if (r < 0 && r != -EINTR)
                        return r;
        }
        return 0;
}

static bool flag_is_set(void *userdata) {
        return *(const bool *) userdata;
}

int test_run_until(bus_client *c, const bool *done, int timeout_ms) {
        return test_process_until(c, flag_is_set, (void *) done, timeout_ms);
}

bool test_ping(bus_client *c, uint64_t timeout_usec) {
        bus_error e = BUS_ERROR_NULL;
        int r = bus_client_call_method(c, "bus", "Ping", NULL, 0, timeout_usec, &e, NULL);

        if (r < 0)
                tap_diag("Ping: %s: %s", e.name ?: strerror(-r), e.message ?: "");
        bus_error_free(&e);
        return r >= 0;
}

Bus__GetStatsReply *test_get_stats(bus_client *c, uint64_t timeout_usec) {
        Bus__GetStatsRequest req = BUS__GET_STATS_REQUEST__INIT;
        ProtobufCMessage *rep = NULL;

        if (bus_client_call_protobuf(c, "bus", "GetStats", &req.base,
                                     &bus__get_stats_reply__descriptor, timeout_usec, NULL,
                                     &rep) < 0)
                return NULL;
        return (Bus__GetStatsReply *) rep;
}
