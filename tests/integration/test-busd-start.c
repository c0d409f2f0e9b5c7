/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Integration test: busd's life cycle as a process. It starts, tells the
 * service manager it is ready (READY=1 on $NOTIFY_SOCKET), accepts
 * connections, stops cleanly on SIGTERM (exit 0, STOPPING=1, socket file
 * removed), serves connections (a garbage frame gets an answer and a
 * disconnect), refuses bad addresses and a second broker on a busy address
 * with a clear message, runs under socket activation (serving the connection
 * that started it and later ones, and leaving the socket file, which it did
 * not create), and handles its command line. Mostly raw sockets; one libbus
 * round trip shows clients work through a socket-activated broker.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libbus/bus.h>

#include "libbus/macro.h"
#include "tests/lib/tap.h"
#include "tests/lib/util-busd.h"

/* Checks cond; on failure shows busd's log, which usually says why. */
#define check_or_dump(b, cond)                                  \
        do {                                                    \
                if (!tap_check(cond))                           \
                        test_busd_dump_log(b);                  \
        } while (0)

static bool is_socket(const char *path) {
        struct stat st;

        return stat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

static bool can_connect(const char *address) {
        int fd = test_connect_raw(address);

        if (fd < 0)
                return false;
        safe_close(fd);
        return true;
}

/* Sends 16 bytes that are no frame preamble: a broker whose event loop serves
 * the connection answers with an error frame and closes it. True once the
 * connection is closed, false if that takes more than 5 s per read. */
static bool broker_rejects_garbage(int fd) {
        static const uint8_t garbage[16] = { 0xde, 0xad, 0xbe, 0xef };
        char buf[4096];

        if (send(fd, garbage, sizeof(garbage), MSG_NOSIGNAL) != (ssize_t) sizeof(garbage))
                return false;
        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                ssize_t n;

                if (poll(&p, 1, 5000) <= 0)
                        return false;
                n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
                if (n == 0)
                        return true;
                if (n < 0 && errno != EAGAIN && errno != EINTR)
                        return errno == ECONNRESET;
        }
}

/* Runs busd with args (no --address added) and waits for it to exit: its
 * exit status, or a negative errno. b stays set up for looking at the log;
 * the caller calls test_busd_stop(). */
static int run_busd(TestBusd *b, const char *const *args) {
        const char *argv[16] = { test_busd_binary() };
        size_t n = 1;
        int r;

        r = test_busd_init(b);
        if (r < 0)
                return r;
        for (size_t i = 0; args[i] && n + 1 < ELEMENTSOF(argv); i++)
                argv[n++] = args[i];
        r = test_busd_exec(b, argv);
        if (r < 0)
                return r;
        return test_busd_wait_exit(b, TEST_BUSD_TIMEOUT_MS);
}

static void test_start_stop(void) {
        TestBusd b;
        int fd;

        check_or_dump(&b, test_busd_start(&b, NULL) == 0);
        tap_check(b.ready);
        tap_check(is_socket(b.address));
        tap_check(strcmp(getenv("BUSD_ADDRESS") ?: "", b.address) == 0);
        check_or_dump(&b, test_busd_log_contains(&b, "listening on"));

        /* A connection that leaves without a word must not hurt the broker. */
        fd = test_connect_raw(b.address);
        tap_check(fd >= 0);
        safe_close(fd);
        fd = test_connect_raw(b.address);
        tap_check(fd >= 0);
        check_or_dump(&b, broker_rejects_garbage(fd));
        safe_close(fd);
        tap_check(test_busd_alive(&b));
        tap_check(test_count_fds(b.pid) > 0);

        tap_check_int(test_busd_stop(&b), 0);
        tap_check(!b.killed);
        tap_check(b.stopping);
        /* busd removes the socket file it created. */
        tap_check(!b.socket_remained);
        tap_check(!getenv("BUSD_ADDRESS"));
}

static void test_empty_address(void) {
        static const char *const args[] = { "--address", "", NULL };
        TestBusd b;

        tap_check_int(test_busd_start(&b, args), -ESRCH);
        tap_check(!b.ready);
        check_or_dump(&b, test_busd_log_contains(&b, "invalid address"));
        tap_check_int(test_busd_stop(&b), EXIT_FAILURE);
}

static void test_address_under_file(void) {
        char file[PATH_MAX], address[PATH_MAX];
        TestBusd b;
        int fd;

        tap_check_int(test_busd_init(&b), 0);
        /* Fails even for root, unlike a read-only directory. */
        tap_check(snprintf(file, sizeof(file), "%s/file", b.dir) < (int) sizeof(file));
        tap_check(snprintf(address, sizeof(address), "%s/bus", file) < (int) sizeof(address));
        fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        tap_check(fd >= 0);
        safe_close(fd);

        tap_check_int(test_busd_exec(&b, (const char *const[]){ test_busd_binary(), "--address",
                                                                address, NULL }), 0);
        tap_check_int(test_busd_wait_ready(&b, TEST_BUSD_TIMEOUT_MS), -ESRCH);
        check_or_dump(&b, test_busd_log_contains(&b, "cannot listen on"));
        check_or_dump(&b, test_busd_log_contains(&b, address));
        tap_check_int(test_busd_stop(&b), EXIT_FAILURE);
}

static void test_second_broker_refused(void) {
        TestBusd a, b;

        check_or_dump(&a, test_busd_start(&a, NULL) == 0);
        tap_check_int(test_busd_start(&b, (const char *const[]){ "--address", a.address, NULL }),
                      -ESRCH);
        check_or_dump(&b, test_busd_log_contains(&b, "already listening"));
        tap_check_int(test_busd_stop(&b), EXIT_FAILURE);

        /* The first broker neither noticed nor lost its socket. */
        tap_check(test_busd_alive(&a));
        tap_check(is_socket(a.address));
        tap_check(can_connect(a.address));
        tap_check_int(test_busd_stop(&a), 0);
        tap_check(!a.socket_remained);
}

static int count_message(bus_message *m, void *userdata) {
        (*(unsigned *) userdata)++;
        return 0;
}

/* A subscriber and a publisher, each with its own connection, and a call to
 * the broker: true if the publish arrived and the call was answered. */
static bool libbus_round_trip(const char *address) {
        bus_client *sub = NULL, *pub = NULL;
        bus_message *reply = NULL;
        unsigned received = 0;
        bool ok = false;

        if (bus_client_open(&sub, address) < 0 || bus_client_open(&pub, address) < 0 ||
            bus_client_subscribe(sub, NULL, "activation.>", NULL, 0, count_message, &received) < 0 ||
            bus_client_publish(pub, "activation.test", "x", 1, 0) < 0 ||
            bus_client_call_method(pub, "bus", "Ping", NULL, 0, 5 * BUS_USEC_PER_SEC, NULL,
                                   &reply) < 0)
                goto finish;
        /* The publish left before the Ping, so it reached the broker first. */
        while (received == 0 && bus_client_wait(sub, 5 * BUS_USEC_PER_SEC) > 0)
                while (bus_client_process(sub) > 0)
                        ;
        ok = received == 1;
finish:
        bus_message_unref(reply);
        bus_client_unref(sub);
        bus_client_unref(pub);
        return ok;
}

static void test_socket_activation(void) {
        const char *activate = getenv("SYSTEMD_SOCKET_ACTIVATE");
        const char *argv[24];
        static const char *const pass_env[] = { "NOTIFY_SOCKET", "ASAN_OPTIONS", "UBSAN_OPTIONS",
                                                "LSAN_OPTIONS" };
        TestBusd b;
        size_t n = 0;
        int fd;

        tap_check_int(test_busd_init(&b), 0);
        argv[n++] = activate;
        argv[n++] = "--listen";
        argv[n++] = b.address;
        /* systemd-socket-activate passes on only what it is told to. */
        for (size_t i = 0; i < ELEMENTSOF(pass_env); i++) {
                if (i > 0 && !getenv(pass_env[i]))
                        continue;
                argv[n++] = "-E";
                argv[n++] = pass_env[i];
        }
        argv[n++] = test_busd_binary();
        argv[n] = NULL;
        tap_check_int(test_busd_exec(&b, argv), 0);

        /* systemd-socket-activate creates the socket and starts busd on the
         * first connection. */
        check_or_dump(&b, test_wait_for_path(b.address, TEST_BUSD_TIMEOUT_MS) == 0);
        fd = test_connect_raw(b.address);
        tap_check(fd >= 0);
        check_or_dump(&b, test_busd_wait_ready(&b, TEST_BUSD_TIMEOUT_MS) == 0);
        check_or_dump(&b, test_busd_log_contains(&b, "socket-activated"));
        /* The connection that started busd is served, and so is a later one. */
        check_or_dump(&b, broker_rejects_garbage(fd));
        safe_close(fd);
        fd = test_connect_raw(b.address);
        tap_check(fd >= 0);
        check_or_dump(&b, broker_rejects_garbage(fd));
        safe_close(fd);
        /* And libbus clients work through it like through a bound socket. */
        check_or_dump(&b, libbus_round_trip(b.address));
        check_or_dump(&b, test_busd_alive(&b));

        tap_check_int(test_busd_stop(&b), 0);
        tap_check(!b.killed);
        tap_check(b.stopping);
        /* The socket was handed over, not created by busd: it stays. */
        tap_check(b.socket_remained);
}

static void test_help(void) {
        TestBusd b;

        tap_check_int(run_busd(&b, (const char *const[]){ "--help", NULL }), 0);
        check_or_dump(&b, test_busd_log_contains(&b, "Usage: busd"));
        check_or_dump(&b, test_busd_log_contains(&b, "--max-fds"));
        tap_check(!b.ready);
        tap_check_int(test_busd_stop(&b), 0);
}

static void test_version(void) {
        TestBusd b;

        tap_check_int(run_busd(&b, (const char *const[]){ "--version", NULL }), 0);
        check_or_dump(&b, test_busd_log_contains(&b, "busd "));
        tap_check_int(test_busd_stop(&b), 0);
}

static void test_bogus_option(void) {
        TestBusd b;

        tap_check_int(run_busd(&b, (const char *const[]){ "--bogus", NULL }), EXIT_FAILURE);
        check_or_dump(&b, test_busd_log_contains(&b, "--bogus"));
        tap_check_int(test_busd_stop(&b), EXIT_FAILURE);
}

static void test_unexpected_argument(void) {
        TestBusd b;

        tap_check_int(run_busd(&b, (const char *const[]){ "extra", NULL }), EXIT_FAILURE);
        check_or_dump(&b, test_busd_log_contains(&b, "unexpected argument"));
        tap_check_int(test_busd_stop(&b), EXIT_FAILURE);
}

static void test_max_fds_out_of_range(void) {
        TestBusd b;

        tap_check_int(run_busd(&b, (const char *const[]){ "--max-fds", "999", NULL }), EXIT_FAILURE);
        check_or_dump(&b, test_busd_log_contains(&b, "invalid --max-fds"));
        tap_check_int(test_busd_stop(&b), EXIT_FAILURE);
}

int main(void) {
        const char *activate = getenv("SYSTEMD_SOCKET_ACTIVATE");

        tap_init();
        TAP_RUN(test_start_stop);
        TAP_RUN(test_empty_address);
        TAP_RUN(test_address_under_file);
        TAP_RUN(test_second_broker_refused);
        if (!activate || !*activate)
                tap_skip("test_socket_activation", "SYSTEMD_SOCKET_ACTIVATE not set "
                                                   "(configure found no systemd-socket-activate)");
        else if (access(activate, X_OK) < 0)
                tap_skip("test_socket_activation", "SYSTEMD_SOCKET_ACTIVATE is not executable");
        else
                TAP_RUN(test_socket_activation);
        TAP_RUN(test_help);
        TAP_RUN(test_version);
        TAP_RUN(test_bogus_option);
        TAP_RUN(test_unexpected_argument);
        TAP_RUN(test_max_fds_out_of_range);
        return tap_done();
}
