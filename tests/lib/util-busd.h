/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The integration-test harness: runs a real busd on a socket in a private
 * temporary directory, forks helper processes, and synchronizes with them
 * without sleeping. Every wait has a deadline and waits on a condition
 * (a readiness datagram, a pidfd, a socket pair, an inotify event), never on time
 * alone.
 *
 * A TestBusd lives from test_busd_init() (or test_busd_start(), which
 * includes it) to test_busd_stop(), which must always be called, whatever
 * happened in between: it ends the process if it still runs, reaps it,
 * closes the harness's descriptors and removes the directory. Its directory
 * holds:
 *   bus        the listening socket (b->address)
 *   busd.log   busd's stdout and stderr (b->log_path)
 *   notify     the AF_UNIX datagram socket NOTIFY_SOCKET points to, on which
 *              busd sends READY=1, STATUS=... and STOPPING=1 (sd_notify(3))
 *
 * busd runs with PR_SET_PDEATHSIG, so it does not outlive a test that
 * crashes. The directory is under $TMPDIR (if short enough for a socket
 * path) or /tmp.
 *
 * Children started by test_child_start() are separate processes: each opens
 * its own libbus connection (libbus objects must not cross a fork()). They
 * end with _exit(), so they neither run the parent's atexit handlers nor
 * flush stdio buffers they inherited.
 *
 * All functions return 0 (or a documented non-negative value) on success and
 * a negative errno on failure.
 */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>

#define TEST_BUSD_TIMEOUT_MS 10000      /* to become ready */
#define TEST_BUSD_STOP_TIMEOUT_MS 5000  /* to exit after SIGTERM, before SIGKILL */

typedef struct TestBusd {
        pid_t pid;              /* > 0 while running or not yet reaped, else -1 */
        int status;             /* after it exited: see test_busd_stop() */
        bool exited;            /* reaped; status is valid */
        bool killed;            /* test_busd_stop() had to use SIGKILL */
        bool ready;             /* READY=1 received */
        bool stopping;          /* STOPPING=1 received */
        bool socket_remained;   /* set by test_busd_stop(): b->address existed after exit */
        char status_text[256];  /* last STATUS= received */
        char dir[sizeof(((struct sockaddr_un *) 0)->sun_path)];
        char address[sizeof(((struct sockaddr_un *) 0)->sun_path)];
        char log_path[PATH_MAX];
        char notify_path[sizeof(((struct sockaddr_un *) 0)->sun_path)];
        int log_fd;
        int notify_fd;
        int pidfd;              /* -1 if the kernel has no pidfd_open() */
} TestBusd;

/* The busd to test: $BUSD_BINARY (set by the Makefile), else "busd/busd"
 * relative to the current directory. */
const char *test_busd_binary(void);

/* Starts busd: test_busd_init(), then test_busd_exec() of
 * "$BUSD_BINARY --address <dir>/bus extra_args...", then
 * test_busd_wait_ready(). extra_args is NULL-terminated and may be NULL;
 * options in it override the harness's (a later --address wins). On success
 * BUSD_ADDRESS is set to b->address, so bus_client_connect(c, NULL) and
 * child processes find this broker. Returns 0 once busd sent READY=1;
 * -ESRCH if it exited first (its exit status is then in b->status, its
 * output in the log); -ETIMEDOUT; other errors from the steps. In every
 * case, call test_busd_stop() afterwards. */
int test_busd_start(TestBusd *b, const char *const *extra_args);

/* The steps of test_busd_start(), for tests that run busd differently (under
 * systemd-socket-activate, or to see it fail).
 * test_busd_init() creates the directory, the log file and the notify socket
 * and fills in the paths; it starts nothing.
 * test_busd_exec() runs argv (argv[0] a path) with stdin from /dev/null,
 * stdout and stderr to the log, NOTIFY_SOCKET set, and LISTEN_* removed from
 * its environment.
 * test_busd_wait_ready() waits for READY=1 or the process's exit: 0,
 * -ESRCH (exited, b->status set) or -ETIMEDOUT. */
int test_busd_init(TestBusd *b);
int test_busd_exec(TestBusd *b, const char *const *argv);
int test_busd_wait_ready(TestBusd *b, int timeout_ms);

/* Waits for busd to exit by itself (no signal sent). Returns its exit status
 * as for test_busd_stop(), or -ETIMEDOUT (it keeps running). */
int test_busd_wait_exit(TestBusd *b, int timeout_ms);

/* Ends busd and cleans up: SIGTERM if it still runs, waits up to
 * TEST_BUSD_STOP_TIMEOUT_MS, then SIGKILL (b->killed). Records whether the
 * socket file b->address still existed once busd had exited
 * (b->socket_remained): busd removes a socket it created itself, but must
 * leave one that was handed to it by socket activation. Reads the last
 * notifications (b->stopping), closes the descriptors, removes the directory
 * and unsets BUSD_ADDRESS if it pointed here. If busd was running and did not
 * exit with status 0 on SIGTERM, its log is printed first (as TAP
 * diagnostics), since it is about to go; look at the log of a busd that is
 * expected to fail before calling this. Returns the exit status: the
 * exit code, or 128 + signal number if busd died from a signal; a negative
 * errno if it was never started or could not be reaped. Safe to call on a
 * zeroed, failed or already stopped TestBusd. */
int test_busd_stop(TestBusd *b);

/* For a test program's main(): test_busd_start(), or on failure show why,
 * clean up, print "Bail out!" and exit 1 (TAP's way to abort a run). */
void test_busd_start_or_bail(TestBusd *b, const char *const *extra_args);
/* For a program's last case: stops busd and checks it exited 0 on SIGTERM
 * (test_busd_stop() shows the log when it did not). */
void test_busd_check_clean_exit(TestBusd *b);

/* Whether the process still runs (reaps it, setting b->status, if not). */
bool test_busd_alive(TestBusd *b);

/* Path of the log, for diagnostics. */
const char *test_busd_log(TestBusd *b);
/* Whether the log contains needle. */
bool test_busd_log_contains(TestBusd *b, const char *needle);
/* Prints the log as TAP diagnostics ("# busd: ..."). */
void test_busd_dump_log(TestBusd *b);

/* Opens a raw AF_UNIX stream connection to an address (a path or "@name"):
 * the descriptor (close-on-exec, blocking), or a negative errno. */
int test_connect_raw(const char *address);

/* Waits until path exists (inotify on its directory): 0, -ETIMEDOUT. */
int test_wait_for_path(const char *path, int timeout_ms);

/* Runs fn(arg) in a forked child process and returns its pid. The child
 * flushes stdio and calls _exit() with fn's return value: 0 for success; a
 * negative errno -E becomes exit status E (at most 255). */
pid_t test_child_start(int (*fn)(void *arg), void *arg);
/* Waits for a child: its exit status (exit code, or 128 + signal), or
 * -ETIMEDOUT, after which the child has been killed and reaped. */
int test_child_wait(pid_t pid, int timeout_ms);

/* A one-shot barrier for parent/child synchronization: one side posts a
 * byte, the other waits for it. It is a socket pair used like a pipe (fd[1]
 * to post, fd[0] to wait), so posting to a side that has gone never raises
 * SIGPIPE. Both ends are close-on-exec. Create it before fork(); a process
 * that will only wait may close its write end (test_signal_close_write()) so
 * that it sees -EPIPE when the other side exits without posting. */
typedef struct TestSignal {
        int fd[2];
} TestSignal;

int test_signal_init(TestSignal *s);
/* Posts c; never blocks (the socket buffer holds far more than one byte).
 * Each post wakes one wait. */
void test_signal_post(TestSignal *s, char c);
/* Waits for a posted byte: 0 (byte in *ret_c if not NULL), -ETIMEDOUT, or
 * -EPIPE when every write end is closed. */
int test_signal_wait(TestSignal *s, int timeout_ms, char *ret_c);
void test_signal_close_write(TestSignal *s);
void test_signal_close(TestSignal *s);

/* Number of open descriptors of a process (entries of /proc/PID/fd; 0 for
 * this process), or a negative errno. */
int test_count_fds(pid_t pid);

/* CLOCK_MONOTONIC in milliseconds. */
int64_t test_now_ms(void);

/* ---- Driving a libbus client. */

typedef struct bus_client bus_client;
typedef struct Bus__GetStatsReply Bus__GetStatsReply;

/* Processes c, waiting as needed, until done(userdata) is true: 0,
 * -ETIMEDOUT after timeout_ms, or the error of a lost connection. */
int test_process_until(bus_client *c, bool (*done)(void *userdata), void *userdata,
                       int timeout_ms);
/* The same until *done is set (by a callback). */
int test_run_until(bus_client *c, const bool *done, int timeout_ms);
/* A round trip to the broker (it has handled everything c sent before);
 * false, with a diagnostic, if it failed. */
bool test_ping(bus_client *c, uint64_t timeout_usec);
/* The broker's counters (free with bus__get_stats_reply__free_unpacked()),
 * or NULL. */
Bus__GetStatsReply *test_get_stats(bus_client *c, uint64_t timeout_usec);
