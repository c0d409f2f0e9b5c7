/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * busd-bench scenario "conns": many idle connections. Helper processes open
 * N libbus connections to busd (bus_client_open(): connect and Hello) and
 * hold them open. The figures are the rate at which they were opened and
 * busd's resident memory per connection, (VmRSS after - VmRSS before) / N.
 * The baseline opens as many plain AF_UNIX connections to a trivial accept
 * loop in another helper, with no protocol at all.
 *
 * Descriptors: the bench raises its RLIMIT_NOFILE to the hard limit for the
 * scenario (its helpers inherit it; busd raises its own at start), and
 * spreads the connections over enough helpers that each stays under it, at
 * least CONNS_MIN_HELPERS. N is capped up front by busd's own limit when the
 * bench started busd. A helper that fails to connect stops there, and the
 * figures are for the connections actually reached.
 *
 * A measurement: every helper sets up and acks READY; the bench starts the
 * clock and writes one byte per connecting helper on the control pipe (each
 * reads exactly one); each helper opens its share, one connection after the
 * other, and acks how many it opened (BenchAck.size; the errno that stopped
 * it in .sum). The clock stops at the last ack; for the baseline, at the
 * acceptor's ack that it has accepted them all. Helpers hold their
 * connections until the bench closes the control pipe (POLLHUP: they never
 * read it again, so no helper can take another's start byte).
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <libbus/bus.h>

#include "tools/bench.h"

#define CONNS_DEFAULT 10000
#define CONNS_MIN_HELPERS 4
#define CONNS_FD_RESERVE 64          /* descriptors a process keeps for everything else */
#define CONNS_ACK_TIMEOUT_MS 120000  /* per ack: a Hello alone may take 25 s to time out */
#define CONNS_TARGET_RSS_BYTES 8192 /* busd's memory per idle connection, at most */
#define CONNS_CLOSE_TIMEOUT_S 120    /* for busd to close them all */
#define CONNS_CLOSE_POLL_MS 10

typedef struct Conns {
        BenchContext *ctx;
        unsigned requested;
        unsigned want;         /* per measurement, after the descriptor limits */
        unsigned n_helpers;    /* connecting helpers */
        unsigned first_helper; /* group index of the first connecting helper */
        unsigned per_process;  /* descriptors a helper (or the acceptor) may hold */
        const char *limited;   /* what capped want, or NULL */
        const char *address;   /* where the connecting helpers connect */
        int listen_fd;         /* the baseline's listening socket */
        struct sockaddr_un raw_sa;
        char raw_dir[100];     /* the private directory of raw_sa */
} Conns;

typedef struct ConnsResult {
        bool valid;
        unsigned reached;
        double seconds;
        int error;            /* the errno that stopped a helper, or 0 */
        double close_seconds; /* until busd had closed them all (NAN: not measured) */
} ConnsResult;

/* ---- Helpers. */

static unsigned conns_share(const Conns *c, unsigned index) {
        unsigned k = index - c->first_helper;

        return c->want / c->n_helpers + (k < c->want % c->n_helpers);
}

static int ack_ready(BenchGroup *g, unsigned index) {
        BenchAck a = { .receiver = index, .flags = BENCH_ACK_READY };

        return bench_ack_send(g, &a);
}

static int ack_done(BenchGroup *g, unsigned index, unsigned n, int r) {
        BenchAck a = { .receiver = index, .size = n, .sum = r < 0 ? (uint64_t) -r : 0 };

        if (r < 0)
                a.flags |= BENCH_ACK_ERROR;
        return bench_ack_send(g, &a);
}

/* The start byte: 1, or 0 on EOF (the bench gave up). */
static int wait_start(BenchGroup *g) {
        ssize_t n;
        char b;

        do
                n = read(g->ctl[0], &b, 1);
        while (n < 0 && errno == EINTR);
        return n == 1;
}

/* Until the bench closes the control pipe. */
static void wait_end(BenchGroup *g) {
        struct pollfd p = { .fd = g->ctl[0], .events = 0 };

        while (!(p.revents & (POLLHUP | POLLERR | POLLNVAL)))
                if (poll(&p, 1, -1) < 0 && errno != EINTR)
                        return;
}

static int conns_bus_helper(BenchGroup *g, unsigned index, void *userdata) {
        Conns *c = userdata;
        unsigned share = conns_share(c, index), n = 0;
        bus_client **clients;
        int r = 0;

        clients = calloc(share + 1, sizeof(*clients));
        if (!clients || ack_ready(g, index) < 0)
                return 1;
        if (wait_start(g) <= 0) {
                free(clients);
                return 0;
        }
        for (; n < share; n++) {
                r = bus_client_open(&clients[n], c->address);
                if (r < 0)
                        break;
        }
        (void) ack_done(g, index, n, r);
        wait_end(g);
        for (unsigned i = 0; i < n; i++)
                bus_client_unref(clients[i]);
        free(clients);
        return 0;
}

static int conns_raw_helper(BenchGroup *g, unsigned index, void *userdata) {
        Conns *c = userdata;
        unsigned share = conns_share(c, index), n = 0;
        int *fds, r = 0;

        fds = calloc(share + 1, sizeof(*fds));
        if (!fds || ack_ready(g, index) < 0)
                return 1;
        if (wait_start(g) <= 0) {
                free(fds);
                return 0;
        }
        for (; n < share; n++) {
                int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

                if (fd < 0) {
                        r = -errno;
                        break;
                }
                if (connect(fd, (struct sockaddr *) &c->raw_sa, sizeof(c->raw_sa)) < 0) {
                        r = -errno;
                        close(fd);
                        break;
                }
                fds[n] = fd;
        }
        (void) ack_done(g, index, n, r);
        wait_end(g);
        for (unsigned i = 0; i < n; i++)
                close(fds[i]);
        free(fds);
        return 0;
}

/* The baseline's server: accepts until it has them all, and holds as many
 * as its descriptors allow (the rest it closes: still accepted). */
static int conns_acceptor(BenchGroup *g, unsigned index, void *userdata) {
        Conns *c = userdata;
        unsigned accepted = 0, held = 0;
        int *fds, r = 0;

        fds = calloc(c->per_process + 1, sizeof(*fds));
        if (!fds || ack_ready(g, index) < 0)
                return 1;
        while (accepted < c->want && r == 0) {
                struct pollfd p[2] = {
                        { .fd = c->listen_fd, .events = POLLIN },
                        { .fd = g->ctl[0], .events = 0 },
                };

                if (poll(p, 2, -1) < 0) {
                        if (errno != EINTR)
                                r = -errno;
                        continue;
                }
                if (p[1].revents) /* the bench gave up */
                        break;
                while (accepted < c->want) {
                        int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

                        if (fd < 0) {
                                if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                        r = -errno;
                                break;
                        }
                        accepted++;
                        if (held < c->per_process)
                                fds[held++] = fd;
                        else
                                close(fd);
                }
        }
        (void) ack_done(g, index, accepted, r);
        wait_end(g);
        for (unsigned i = 0; i < held; i++)
                close(fds[i]);
        free(fds);
        return 0;
}

/* ---- Measuring. */

static int raw_listen(Conns *c) {
        const char *tmp = getenv("TMPDIR");

        if (!tmp || !*tmp || strlen(tmp) + strlen("/busd-bench-conns.XXXXXX") >= sizeof(c->raw_dir))
                tmp = "/tmp";
        snprintf(c->raw_dir, sizeof(c->raw_dir), "%s/busd-bench-conns.XXXXXX", tmp);
        if (!mkdtemp(c->raw_dir)) {
                c->raw_dir[0] = '\0';
                return -errno;
        }
        c->raw_sa = (struct sockaddr_un){ .sun_family = AF_UNIX };
        snprintf(c->raw_sa.sun_path, sizeof(c->raw_sa.sun_path), "%s/sock", c->raw_dir);
        c->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (c->listen_fd < 0)
                return -errno;
        if (bind(c->listen_fd, (struct sockaddr *) &c->raw_sa, sizeof(c->raw_sa)) < 0 ||
            listen(c->listen_fd, SOMAXCONN) < 0)
                return -errno;
        return 0;
}

static void raw_cleanup(Conns *c) {
        if (c->listen_fd >= 0)
                close(c->listen_fd);
        c->listen_fd = -1;
        if (c->raw_dir[0]) {
                unlink(c->raw_sa.sun_path);
                rmdir(c->raw_dir);
                c->raw_dir[0] = '\0';
        }
}

/* Errors that mean a limit was reached, not that something broke. */
static bool is_limit(int error) {
        return error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM ||
               error == EAGAIN || error == ETIMEDOUT;
}

/* The number of descriptors a process has open, or -errno. */
static int proc_fd_count(pid_t pid) {
        char path[64];
        struct dirent *de;
        struct stat st;
        int n = 0;
        DIR *d;

        snprintf(path, sizeof(path), "/proc/%d/fd", (int) pid);
        /* Linux 6.2 and later give the count as the size: no need to list
         * ten thousand entries while busd is busy on the same CPU */
        if (stat(path, &st) < 0)
                return -errno;
        if (st.st_size > 0)
                return (int) st.st_size;
        d = opendir(path);
        if (!d)
                return -errno;
        while ((de = readdir(d)))
                n += de->d_name[0] != '.';
        closedir(d);
        return n;
}

/* After the helpers closed their connections: waits until busd has closed
 * its ends too (its descriptors are back to before), so that the next
 * scenario finds it idle; the seconds that took, or NAN. This watches
 * /proc: busd says nothing when it closes a connection. */
static double wait_busd_closed(pid_t pid, int before, double since) {
        double deadline = since + CONNS_CLOSE_TIMEOUT_S;
        int n;

        while ((n = proc_fd_count(pid)) > before) {
                if (bench_now() > deadline)
                        return NAN;
                (void) poll(NULL, 0, CONNS_CLOSE_POLL_MS);
        }
        return n < 0 ? NAN : bench_now() - since;
}

/* One measurement: through busd (raw false) or the baseline. For busd,
 * its VmRSS before and after in rss[0] and rss[1] (0: not read). */
static int conns_measure(Conns *c, bool raw, ConnsResult *res, uint64_t rss[2]) {
        BenchContext *ctx = c->ctx;
        unsigned helpers_acked = 0;
        char start[BENCH_MAX_RECEIVERS];
        bool acceptor_done = false;
        int fds_before = -1, r;
        double t0, closed;
        BenchGroup g;

        *res = (ConnsResult){ .close_seconds = NAN };
        r = bench_group_init(&g);
        if (r >= 0 && raw)
                r = raw_listen(c);
        if (r >= 0 && raw) {
                r = bench_group_spawn(&g, conns_acceptor, c);
                /* the connecting helpers need not hold the listening socket */
                close(c->listen_fd);
                c->listen_fd = -1;
        }
        c->first_helper = g.n;
        for (unsigned i = 0; i < c->n_helpers && r >= 0; i++)
                r = bench_group_spawn(&g, raw ? conns_raw_helper : conns_bus_helper, c);
        for (unsigned i = 0; i < g.n && r >= 0; i++) {
                BenchAck a;

                r = bench_ack_read(&g, &a, CONNS_ACK_TIMEOUT_MS, -1, 0, NULL, NULL);
                if (r >= 0 && !(a.flags & BENCH_ACK_READY))
                        r = -EPROTO;
        }
        if (r < 0)
                goto finish;

        if (!raw && ctx->busd_pid > 0) {
                if (bench_proc_memory(ctx->busd_pid, "VmRSS", &rss[0]) < 0)
                        rss[0] = 0;
                fds_before = proc_fd_count(ctx->busd_pid);
        }
        memset(start, 'S', c->n_helpers);
        t0 = bench_now();
        if (write(g.ctl[1], start, c->n_helpers) != (ssize_t) c->n_helpers) {
                r = -errno;
                goto finish;
        }
        /* the connecting helpers' acks and, for the baseline, the acceptor's:
         * it acks once it has accepted them all, which it cannot if the
         * helpers stopped short */
        while (helpers_acked < c->n_helpers ||
               (raw && !acceptor_done && res->reached == c->want)) {
                BenchAck a;

                r = bench_ack_read(&g, &a, CONNS_ACK_TIMEOUT_MS, -1, 0, NULL, NULL);
                if (r < 0)
                        goto finish;
                if (raw && a.receiver == 0) {
                        acceptor_done = true;
                        if (a.flags & BENCH_ACK_ERROR)
                                res->error = (int) a.sum;
                        continue;
                }
                helpers_acked++;
                res->reached += (unsigned) a.size;
                if ((a.flags & BENCH_ACK_ERROR) && !res->error)
                        res->error = (int) a.sum;
        }
        res->seconds = bench_now() - t0;
        res->valid = res->reached > 0 && (!raw || acceptor_done || res->reached < c->want);
        if (!raw && ctx->busd_pid > 0 && bench_proc_memory(ctx->busd_pid, "VmRSS", &rss[1]) < 0)
                rss[1] = 0;
finish:
        closed = bench_now(); /* the helpers close their connections as they exit */
        if (bench_group_finish(&g) > 0 && r >= 0)
                r = -ECHILD;
        if (fds_before >= 0)
                res->close_seconds = wait_busd_closed(ctx->busd_pid, fds_before, closed);
        raw_cleanup(c);
        return r;
}

/* ---- Limits. */

/* The soft limit of a process's descriptors (/proc/PID/limits), or 0. */
static unsigned long proc_fd_limit(pid_t pid) {
        char path[64], line[256];
        unsigned long v = 0;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/limits", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return 0;
        while (fgets(line, sizeof(line), f))
                if (strncmp(line, "Max open files", 14) == 0) {
                        v = strtoul(line + 14, NULL, 10); /* "unlimited" gives 0 */
                        break;
                }
        fclose(f);
        return v;
}

/* Raises the bench's descriptor limit to the hard limit and sizes the
 * helpers: enough that each stays under it, capping want if even the most
 * helpers cannot hold it, and capping it by busd's limit if known. */
static void conns_plan(Conns *c) {
        struct rlimit rl;
        unsigned long lim, busd_lim, per, max_helpers = BENCH_MAX_RECEIVERS - 1;

        if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
                if (rl.rlim_cur < rl.rlim_max) {
                        rl.rlim_cur = rl.rlim_max;
                        (void) setrlimit(RLIMIT_NOFILE, &rl);
                }
                (void) getrlimit(RLIMIT_NOFILE, &rl);
        } else
                rl.rlim_cur = 1024;
        lim = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 1u << 30 ? 1u << 30
                                                                     : (unsigned long) rl.rlim_cur;
        per = lim > 2 * CONNS_FD_RESERVE ? lim - CONNS_FD_RESERVE : lim / 2;
        c->per_process = (unsigned) per;
        c->want = c->requested;

        if (c->ctx->busd_pid > 0) {
                busd_lim = proc_fd_limit(c->ctx->busd_pid);
                if (busd_lim > CONNS_FD_RESERVE && c->want > busd_lim - CONNS_FD_RESERVE) {
                        c->want = (unsigned) (busd_lim - CONNS_FD_RESERVE);
                        c->limited = "busd's descriptor limit (RLIMIT_NOFILE)";
                }
        }
        if ((unsigned long) c->want > per * max_helpers) {
                c->want = (unsigned) (per * max_helpers);
                c->limited = "the bench's descriptor limit (RLIMIT_NOFILE)";
        }
        c->n_helpers = (unsigned) ((c->want + per - 1) / per);
        if (c->n_helpers < CONNS_MIN_HELPERS)
                c->n_helpers = CONNS_MIN_HELPERS;
        if (c->n_helpers > c->want)
                c->n_helpers = c->want > 0 ? c->want : 1;
}

/* ---- Figures and the table. */

static const char *bytes_text(double v, char buf[static 32]) {
        if (!isfinite(v))
                snprintf(buf, 32, "-");
        else if (fabs(v) >= 10 << 20)
                snprintf(buf, 32, "%.1f MiB", v / 1048576.0);
        else
                snprintf(buf, 32, "%.1f KiB", v / 1024.0);
        return buf;
}

static void conns_report(Conns *c, const ConnsResult *bus, const ConnsResult *raw,
                         const uint64_t rss[2]) {
        BenchContext *ctx = c->ctx;
        FILE *f = ctx->human;
        /* a helper that waited for a Hello in vain makes the time meaningless */
        bool timed = bus->valid && bus->error != ETIMEDOUT;
        double rate = timed ? bus->reached / bus->seconds : NAN;
        double raw_rate = raw->valid ? raw->reached / raw->seconds : NAN;
        bool mem = bus->valid && rss[0] > 0 && rss[1] > 0;
        double per = mem ? ((double) rss[1] - (double) rss[0]) / bus->reached : NAN;
        char a[32], b[32], p[32], t[32];

        bench_figure(ctx, c->requested, true, true, "conns.requested");
        bench_figure(ctx, bus->reached, bus->valid, true, "conns.count");
        bench_figure(ctx, rate, timed, false, "conns.connect_per_s");
        bench_figure(ctx, raw_rate, raw->valid, false, "conns.raw_connect_per_s");
        /* time per connection through busd over the baseline's */
        bench_figure(ctx, raw_rate / rate, timed && raw->valid, false,
                     "conns.connect_vs_raw_ratio");
        bench_figure(ctx, bus->reached / bus->close_seconds, bus->valid, false,
                     "conns.disconnect_per_s");
        bench_figure(ctx, per, mem, false, "conns.rss_per_conn_bytes");
        bench_figure(ctx, (double) rss[0], mem, true, "conns.busd_rss_before_bytes");
        bench_figure(ctx, (double) rss[1], mem, true, "conns.busd_rss_after_bytes");

        fprintf(f, "conns: idle connections opened one after the other by %u helper processes\n"
                   "and held open: through busd (bus_client_open(): connect + Hello) and raw\n"
                   "(AF_UNIX connect to a trivial accept loop, no protocol)\n",
                c->n_helpers);
        if (c->limited)
                fprintf(f, "count: %u requested, %u allowed by %s\n", c->requested, c->want,
                        c->limited);
        fprintf(f, "%-8s %12s %12s %12s\n", "", "connections", "per second", "each");
        if (timed)
                fprintf(f, "%-8s %12u %12.0f %12s\n", "busd", bus->reached, rate,
                        bench_time_text(bus->seconds / bus->reached, a));
        else if (bus->valid)
                fprintf(f, "%-8s %12u %12s %12s\n", "busd", bus->reached, "-", "-");
        else
                fprintf(f, "%-8s %12s\n", "busd", "failed");
        if (raw->valid)
                fprintf(f, "%-8s %12u %12.0f %12s\n", "raw", raw->reached, raw_rate,
                        bench_time_text(raw->seconds / raw->reached, a));
        else
                fprintf(f, "%-8s %12s\n", "raw", "failed");
        if (timed && raw->valid)
                fprintf(f, "busd/raw (time per connection): %.2f\n", raw_rate / rate);
        if (bus->valid && isfinite(bus->close_seconds))
                fprintf(f, "busd closed them all %s after the clients did (%.0f per second)\n",
                        bench_time_text(bus->close_seconds, a),
                        bus->reached / bus->close_seconds);
        if (bus->valid && bus->reached < c->want)
                fprintf(f, "busd: stopped at %u of %u connections: %s%s\n", bus->reached, c->want,
                        strerror(bus->error), timed ? "" : " (so the rate is not measured)");
        if (ctx->busd_pid <= 0) {
                fprintf(f, "busd RSS: not measured (busd not started by busd-bench)\n");
                return;
        }
        if (!mem) {
                fprintf(f, "busd RSS: not measured\n");
                return;
        }
        fprintf(f, "busd RSS: %s before, %s after: %s per connection (target <= %s: %s)\n",
                bytes_text((double) rss[0], a), bytes_text((double) rss[1], b),
                bytes_text(per, p), bytes_text(CONNS_TARGET_RSS_BYTES, t),
                per <= CONNS_TARGET_RSS_BYTES ? "met" : "missed");
}

static int conns_run(BenchContext *ctx) {
        Conns c = { .ctx = ctx, .listen_fd = -1, .address = ctx->address };
        ConnsResult bus = {}, raw = {};
        uint64_t rss[2] = {}, dummy[2];
        struct rlimit saved;
        bool have_saved;
        int r;

        c.requested = bench_count_or(ctx, CONNS_DEFAULT);
        have_saved = getrlimit(RLIMIT_NOFILE, &saved) == 0;
        conns_plan(&c);

        /* the baseline first, then busd, as in the other scenarios */
        bench_progress(ctx, "conns: raw, %u connections", c.want);
        r = conns_measure(&c, true, &raw, dummy);
        if (r < 0 || !raw.valid || (raw.error && !is_limit(raw.error))) {
                bench_progress(ctx, NULL);
                fprintf(stderr, "busd-bench: conns, raw: %s\n",
                        strerror(r < 0 ? -r : raw.error ? raw.error : EIO));
                ctx->failures++;
                raw.valid = false;
        }
        bench_progress(ctx, "conns: busd, %u connections", c.want);
        r = conns_measure(&c, false, &bus, rss);
        bench_progress(ctx, NULL);
        if (r < 0 || !bus.valid || (bus.error && !is_limit(bus.error))) {
                fprintf(stderr, "busd-bench: conns, busd: %s\n",
                        strerror(r < 0 ? -r : bus.error ? bus.error : EIO));
                ctx->failures++;
                bus.valid = bus.valid && r >= 0;
        } else if (bus.reached < c.want)
                fprintf(stderr, "busd-bench: conns: busd stopped at %u of %u connections: %s\n",
                        bus.reached, c.want, strerror(bus.error));

        if (have_saved)
                (void) setrlimit(RLIMIT_NOFILE, &saved);
        conns_report(&c, &bus, &raw, rss);
        return 0;
}

const BenchScenario bench_scenario_conns = {
        .name = "conns",
        .summary = "10,000 idle connections: connect rate and busd's memory per connection",
        .run = conns_run,
};
