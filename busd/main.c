/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * busd: command line, listening sockets (handed over by systemd, or bound
 * here), and the run loop. Everything else lives in the manager.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include "busd/listener.h"
#include "busd/log.h"
#include "busd/manager.h"
#include "libbus/address.h"
#include "libbus/macro.h"

static void help(void) {
        printf("Usage: busd [OPTIONS]\n\n"
               "The busd message bus broker.\n\n"
               "  -h --help                   Show this help\n"
               "     --version                Show the version\n"
               "     --system                 Run the system bus on " BUS_SYSTEM_ADDRESS "\n"
               "  -a --address=ADDRESS        Listen on a socket path or @abstract name\n"
               "     --max-payload-bytes=N    Largest inline payload accepted (default 8 MiB)\n"
               "     --max-queue-bytes=N      Outgoing queue limit per connection (default 32 MiB)\n"
               "     --max-fds=N              File descriptors per message (default 16, max 253)\n"
               "     --max-queued-fds=N       File descriptors queued per connection (default 1024)\n"
               "     --max-memfd-bytes=N      Largest shared-memory payload (default 1 GiB)\n"
               "     --max-memfd-queued-bytes=N\n"
               "                              Shared memory one sender may have queued (default 1 GiB)\n"
               "     --log-level=LEVEL        err, warning, notice, info (default), debug\n\n"
               "Without --address or --system, busd serves the per-user bus on\n"
               "$XDG_RUNTIME_DIR/busd/bus (or /tmp/busd-$UID/bus). Sockets passed by\n"
               "systemd socket activation take precedence over both.\n");
}

/* A number with an optional K, M or G suffix (powers of 1024). */
static int parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *ret) {
        unsigned long long v, unit = 1;
        char *end;

        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno != 0 || end == s || s[0] == '-')
                return -EINVAL;
        if (*end == 'K' || *end == 'k')
                unit = 1024, end++;
        else if (*end == 'M')
                unit = 1024 * 1024, end++;
        else if (*end == 'G')
                unit = 1024 * 1024 * 1024, end++;
        if (*end || v > UINT64_MAX / unit)
                return -ERANGE;
        v *= unit;
        if (v < min || v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

typedef struct Options {
        ManagerConfig config;
        const char *address;
} Options;

static int parse_argv(int argc, char *argv[], Options *o) {
        enum {
                ARG_VERSION = 0x100,
                ARG_SYSTEM,
                ARG_MAX_PAYLOAD,
                ARG_MAX_QUEUE,
                ARG_MAX_FDS,
                ARG_MAX_QUEUED_FDS,
                ARG_MAX_MEMFD,
                ARG_MAX_MEMFD_QUEUED,
                ARG_LOG_LEVEL,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "system", no_argument, NULL, ARG_SYSTEM },
                { "address", required_argument, NULL, 'a' },
                { "max-payload-bytes", required_argument, NULL, ARG_MAX_PAYLOAD },
                { "max-queue-bytes", required_argument, NULL, ARG_MAX_QUEUE },
                { "max-fds", required_argument, NULL, ARG_MAX_FDS },
                { "max-queued-fds", required_argument, NULL, ARG_MAX_QUEUED_FDS },
                { "max-memfd-bytes", required_argument, NULL, ARG_MAX_MEMFD },
                { "max-memfd-queued-bytes", required_argument, NULL, ARG_MAX_MEMFD_QUEUED },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                {}
        };
        uint64_t v;
        int c, r;

        while ((c = getopt_long(argc, argv, "ha:", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("busd %s\n", BUSD_VERSION);
                        return 0;
                case ARG_SYSTEM:
                        o->config.system_bus = true;
                        break;
                case 'a':
                        o->address = optarg;
                        break;
                case ARG_MAX_PAYLOAD:
                        r = parse_size(optarg, 0, WIRE_PAYLOAD_MAX, &v);
                        if (r < 0)
                                return log_error_errno(r, "invalid --max-payload-bytes: %s (0..%u)",
                                                       optarg, WIRE_PAYLOAD_MAX);
                        o->config.max_payload = (uint32_t) v;
                        break;
                case ARG_MAX_QUEUE:
                        r = parse_size(optarg, 4096, UINT64_C(1) << 40, &v);
                        if (r < 0)
                                return log_error_errno(r, "invalid --max-queue-bytes: %s", optarg);
                        o->config.max_queue_bytes = v;
                        break;
                case ARG_MAX_FDS:
                        r = parse_size(optarg, 0, WIRE_FDS_MAX, &v);
                        if (r < 0)
                                return log_error_errno(r, "invalid --max-fds: %s (0..%u)", optarg,
                                                       WIRE_FDS_MAX);
                        o->config.max_fds = (uint32_t) v;
                        break;
                case ARG_MAX_QUEUED_FDS:
                        r = parse_size(optarg, 1, 1u << 20, &v);
                        if (r < 0)
                                return log_error_errno(r, "invalid --max-queued-fds: %s", optarg);
                        o->config.max_queued_fds = (unsigned) v;
                        break;
                case ARG_MAX_MEMFD:
                        r = parse_size(optarg, 1, UINT64_C(1) << 40, &v);
                        if (r < 0)
                                return log_error_errno(r, "invalid --max-memfd-bytes: %s", optarg);
                        o->config.max_memfd_payload = v;
                        break;
                case ARG_MAX_MEMFD_QUEUED:
                        r = parse_size(optarg, 1, UINT64_C(1) << 40, &v);
                        if (r < 0)
                                return log_error_errno(r, "invalid --max-memfd-queued-bytes: %s", optarg);
                        o->config.max_memfd_queued = v;
                        break;
                case ARG_LOG_LEVEL:
                        r = log_level_from_string(optarg);
                        if (r < 0)
                                return log_error_errno(r, "invalid --log-level: %s", optarg);
                        log_set_max_level(r);
                        break;
                default:
                        return -EINVAL;
                }
        }
        if (optind < argc)
                return log_error_errno(-EINVAL, "unexpected argument: %s", argv[optind]);
        return 1;
}

/* Thousands of connections need thousands of descriptors. */
static void raise_fd_limit(void) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
}

/* Sockets from systemd: every one must be a listening AF_UNIX stream. */
static int add_activated_listeners(Manager *m, int n) {
        for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + n; fd++) {
                int r = sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0);
                if (r <= 0)
                        return log_error_errno(r < 0 ? r : -EINVAL,
                                               "socket-activated fd %d is not a listening AF_UNIX stream socket",
                                               fd);
                /* The socket may come blocking; accepting until EAGAIN would
                 * then block the whole loop. */
                r = fcntl(fd, F_GETFL);
                if (r < 0 || fcntl(fd, F_SETFL, r | O_NONBLOCK) < 0)
                        return log_error_errno(-errno, "cannot make fd %d non-blocking: %m", fd);
                r = manager_add_listener(m, fd, NULL);
                if (r < 0)
                        return log_error_errno(r, "cannot watch fd %d: %s", fd, strerror(-r));
        }
        log_info("using %d socket-activated listener(s)", n);
        return 0;
}

static int add_bound_listener(Manager *m, const Options *o) {
        char path[PATH_MAX];
        const char *address = o->address;
        BusAddress a;
        int fd, r;

        if (!address && o->config.system_bus)
                address = BUS_SYSTEM_ADDRESS;
        if (!address) {
                r = address_default_user(path, sizeof(path));
                if (r < 0)
                        return log_error_errno(r, "cannot find the per-user bus address: %s", strerror(-r));
                address = path;
        }
        r = address_parse(&a, address);
        if (r < 0)
                return log_error_errno(r, "invalid address \"%s\"", address);
        r = listener_bind(address, &fd);
        if (r == -EADDRINUSE)
                return log_error_errno(r, "another bus is already listening on %s", address);
        if (r < 0)
                return log_error_errno(r, "cannot listen on %s: %s", address, strerror(-r));
        /* The system bus is for everyone; a per-user socket keeps the umask's
         * mode, so only its owner (and root) can connect. */
        if (o->config.system_bus && !a.abstract)
                (void) chmod(a.path, 0666);
        r = manager_add_listener(m, fd, a.abstract ? NULL : a.path);
        if (r < 0)
                return log_error_errno(r, "cannot watch the listening socket: %s", strerror(-r));
        log_info("listening on %s", address);
        return 0;
}

int main(int argc, char *argv[]) {
        _cleanup_(manager_freep) Manager *m = NULL;
        Options o = {};
        int n, r;

        manager_config_init(&o.config);
        r = parse_argv(argc, argv, &o);
        if (r <= 0)
                return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;

        signal(SIGPIPE, SIG_IGN);
        raise_fd_limit();

        r = manager_new(&m, &o.config);
        if (r < 0) {
                log_error("cannot set up the broker: %s", strerror(-r));
                return EXIT_FAILURE;
        }
        n = sd_listen_fds(true);
        if (n < 0) {
                log_error("cannot take socket-activated listeners: %s", strerror(-n));
                return EXIT_FAILURE;
        }
        r = n > 0 ? add_activated_listeners(m, n) : add_bound_listener(m, &o);
        if (r < 0)
                return EXIT_FAILURE;

        r = manager_run(m);
        if (r < 0) {
                log_error("event loop failed: %s", strerror(-r));
                return EXIT_FAILURE;
        }
        log_info("stopped");
        return EXIT_SUCCESS;
}
