/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * busd-bench: measures busd and libbus against baselines measured in the same
 * run, and reports ratios (see busd-bench(1)).
 *
 *   busd-bench [SCENARIO...] [--json] [--pin CPU|--no-pin] [--duration S]
 *              [--count N] [--max-size SIZE] [--address ADDR] [--busd PATH]
 *
 * This file is the frame: options, pinning, the busd the bench starts for
 * itself, and the output (a human table, or one JSON object keyed by
 * scenario). Each scenario lives in its own tools/bench-<name>.c and is
 * listed in bench_scenarios[]; what they share is in tools/bench.h. The
 * tool uses only <libbus/bus.h>, never libbus's internal headers.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libbus/bus.h>

#include "tools/bench.h"

#ifndef BUSD_VERSION /* the Makefile defines it */
#ifdef PACKAGE_VERSION
#define BUSD_VERSION PACKAGE_VERSION
#else
#define BUSD_VERSION "unknown"
#endif
#endif

#define DEFAULT_DURATION 0.2 /* seconds per measurement, at least */
#define DEFAULT_COUNT 3      /* messages per measurement, at least */
#define DEFAULT_MAX_SIZE ((uint64_t) 64 << 20)
#define MIN_MAX_SIZE ((uint64_t) 4 << 10) /* bulk's smallest size */
#define PIN_DEFAULT (-2) /* CPU 0, or the first one we may use */

static const BenchScenario *const bench_scenarios[] = {
        &bench_scenario_rtt,
        &bench_scenario_pubsub,
        &bench_scenario_fanout,
        &bench_scenario_bulk,
        &bench_scenario_conns,
        &bench_scenario_cpu,
};
#define N_SCENARIOS (sizeof(bench_scenarios) / sizeof(bench_scenarios[0]))

/* The bench's busd: large enough limits that every scenario's traffic fits,
 * nothing is dropped, and 64 MiB goes inline too. */
static const char *const busd_args[] = {
        "--max-payload-bytes", "128M", "--max-queue-bytes", "1G", "--log-level", "warning", NULL,
};

typedef struct Options {
        const BenchScenario *run[N_SCENARIOS];
        size_t n_run;
        bool json;
        int pin_cpu;
        double duration;
        unsigned count;
        uint64_t max_size;
        const char *address;
        const char *busd;
} Options;

static BenchBusd busd = { .pid = -1, .pidfd = -1, .notify_fd = -1 };

static void help(void) {
        printf("Usage: busd-bench [SCENARIO...] [OPTIONS]\n\n"
               "Measures busd and libbus against baselines taken in the same run.\n\n"
               "Scenarios (default: all):\n");
        for (size_t i = 0; i < N_SCENARIOS; i++)
                printf("  %-8s %s\n", bench_scenarios[i]->name, bench_scenarios[i]->summary);
        printf("\nOptions:\n"
               "  -h --help             Show this help\n"
               "     --version          Show the version\n"
               "     --json             Print one JSON object keyed by scenario\n"
               "     --pin CPU          Pin busd, the bench and its helpers to CPU (default 0,\n"
               "                        or the first CPU allowed)\n"
               "     --no-pin           Do not pin\n"
               "     --duration S       Seconds per measurement, at least (default %.1f)\n"
               "     --count N          Messages per measurement, at least (default %d)\n"
               "     --max-size SIZE    Largest payload to measure, e.g. 1M (default 64M)\n"
               "     --address ADDR     Use a running bus instead of starting busd\n"
               "     --busd PATH        The busd to start (default: $BUSD_BINARY, the build\n"
               "                        tree's, or busd in $PATH)\n",
               DEFAULT_DURATION, DEFAULT_COUNT);
}

static int parse_size(const char *s, uint64_t *ret) {
        unsigned long long v, unit = 1;
        char *end;

        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno != 0 || end == s || s[0] == '-')
                return -EINVAL;
        if (*end == 'K' || *end == 'k')
                unit = 1ull << 10, end++;
        else if (*end == 'M')
                unit = 1ull << 20, end++;
        else if (*end == 'G')
                unit = 1ull << 30, end++;
        if (unit > 1 && strcmp(end, "iB") == 0)
                end += 2;
        if (*end || v > UINT64_MAX / unit)
                return -EINVAL;
        *ret = v * unit;
        return 0;
}

static const BenchScenario *find_scenario(const char *name) {
        for (size_t i = 0; i < N_SCENARIOS; i++)
                if (strcmp(bench_scenarios[i]->name, name) == 0)
                        return bench_scenarios[i];
        return NULL;
}

/* 1: run, 0: exit 0 (help, version), negative: usage error. */
static int parse_argv(int argc, char *argv[], Options *o) {
        enum {
                ARG_VERSION = 0x100,
                ARG_JSON,
                ARG_PIN,
                ARG_NO_PIN,
                ARG_DURATION,
                ARG_COUNT,
                ARG_MAX_SIZE,
                ARG_ADDRESS,
                ARG_BUSD,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "json", no_argument, NULL, ARG_JSON },
                { "pin", required_argument, NULL, ARG_PIN },
                { "no-pin", no_argument, NULL, ARG_NO_PIN },
                { "duration", required_argument, NULL, ARG_DURATION },
                { "count", required_argument, NULL, ARG_COUNT },
                { "max-size", required_argument, NULL, ARG_MAX_SIZE },
                { "address", required_argument, NULL, ARG_ADDRESS },
                { "busd", required_argument, NULL, ARG_BUSD },
                {}
        };
        bool duration_set = false, count_set = false;
        unsigned long v;
        char *end;
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("busd-bench %s\n", BUSD_VERSION);
                        return 0;
                case ARG_JSON:
                        o->json = true;
                        break;
                case ARG_PIN:
                        errno = 0;
                        v = strtoul(optarg, &end, 10);
                        if (errno || end == optarg || *end || optarg[0] == '-' ||
                            v >= CPU_SETSIZE) {
                                fprintf(stderr, "busd-bench: invalid --pin: %s\n", optarg);
                                return -EINVAL;
                        }
                        o->pin_cpu = (int) v;
                        break;
                case ARG_NO_PIN:
                        o->pin_cpu = -1;
                        break;
                case ARG_DURATION:
                        errno = 0;
                        o->duration = strtod(optarg, &end);
                        if (errno || end == optarg || *end || !(o->duration >= 0) ||
                            o->duration > 3600) {
                                fprintf(stderr, "busd-bench: invalid --duration: %s (seconds)\n",
                                        optarg);
                                return -EINVAL;
                        }
                        duration_set = true;
                        break;
                case ARG_COUNT:
                        errno = 0;
                        v = strtoul(optarg, &end, 10);
                        if (errno || end == optarg || *end || optarg[0] == '-' || v == 0 ||
                            v > 100000000) {
                                fprintf(stderr, "busd-bench: invalid --count: %s\n", optarg);
                                return -EINVAL;
                        }
                        o->count = (unsigned) v;
                        count_set = true;
                        break;
                case ARG_MAX_SIZE:
                        if (parse_size(optarg, &o->max_size) < 0 || o->max_size < MIN_MAX_SIZE) {
                                fprintf(stderr, "busd-bench: invalid --max-size: %s (at least 4K)\n",
                                        optarg);
                                return -EINVAL;
                        }
                        break;
                case ARG_ADDRESS:
                        o->address = optarg;
                        break;
                case ARG_BUSD:
                        o->busd = optarg;
                        break;
                default:
                        return -EINVAL;
                }
        }
        if (o->address && o->busd) {
                fprintf(stderr, "busd-bench: --address and --busd exclude each other\n");
                return -EINVAL;
        }
        /* --count alone means exactly that many; --duration alone keeps the
         * minimum count; neither gives both defaults. */
        if (!duration_set)
                o->duration = count_set ? 0 : DEFAULT_DURATION;
        if (!count_set)
                o->count = DEFAULT_COUNT;

        for (int i = optind; i < argc; i++) {
                const BenchScenario *s = find_scenario(argv[i]);
                bool dup = false;

                if (!s) {
                        fprintf(stderr, "busd-bench: unknown scenario '%s' (available:", argv[i]);
                        for (size_t j = 0; j < N_SCENARIOS; j++)
                                fprintf(stderr, " %s", bench_scenarios[j]->name);
                        fprintf(stderr, ")\n");
                        return -EINVAL;
                }
                for (size_t j = 0; j < o->n_run; j++)
                        dup = dup || o->run[j] == s;
                if (!dup)
                        o->run[o->n_run++] = s;
        }
        if (o->n_run == 0)
                for (size_t j = 0; j < N_SCENARIOS; j++)
                        o->run[o->n_run++] = bench_scenarios[j];
        return 1;
}

/* ^C: take our busd and its directory down too (helpers die with us through
 * PR_SET_PDEATHSIG). Only async-signal-safe calls. */
static void on_signal(int sig) {
        if (busd.pid > 0)
                kill(busd.pid, SIGTERM);
        if (busd.dir[0]) {
                unlink(busd.address);
                unlink(busd.notify_path);
                unlink(busd.log_path);
                rmdir(busd.dir);
        }
        _exit(128 + sig);
}

static void json_string(FILE *f, const char *s) {
        fputc('"', f);
        for (; s && *s; s++) {
                unsigned char ch = (unsigned char) *s;

                if (ch == '"' || ch == '\\')
                        fprintf(f, "\\%c", ch);
                else if (ch < 0x20)
                        fprintf(f, "\\u%04x", ch);
                else
                        fputc(ch, f);
        }
        fputc('"', f);
}

static void json_number(FILE *f, const BenchFigure *fig) {
        if (!fig->valid)
                fputs("null", f);
        else if (fig->integer)
                fprintf(f, "%.0f", fig->value);
        else
                fprintf(f, "%.6g", fig->value);
}

static void print_json(const Options *o, BenchContext *ctx, const char *busd_path,
                       const char *affinity, const size_t *first) {
        FILE *f = stdout;

        fprintf(f, "{\n  \"settings\": {\n    \"version\": ");
        json_string(f, BUSD_VERSION);
        fprintf(f, ",\n    \"address\": ");
        json_string(f, ctx->address);
        fprintf(f, ",\n    \"busd\": ");
        if (busd_path)
                json_string(f, busd_path);
        else
                fputs("null", f);
        fprintf(f, ",\n    \"busd_started\": %s,\n    \"pin_cpu\": ",
                ctx->busd_pid > 0 ? "true" : "false");
        if (o->pin_cpu >= 0)
                fprintf(f, "%d", o->pin_cpu);
        else
                fputs("null", f);
        fprintf(f, ",\n    \"busd_cpus\": ");
        if (affinity[0])
                json_string(f, affinity);
        else
                fputs("null", f);
        fprintf(f, ",\n    \"duration_s\": %g", ctx->duration);
        fprintf(f, ",\n    \"count_min\": %u", ctx->count);
        fprintf(f, ",\n    \"max_size_bytes\": %llu\n  }", (unsigned long long) ctx->max_size);
        for (size_t i = 0; i < o->n_run; i++) {
                fprintf(f, ",\n  ");
                json_string(f, o->run[i]->name);
                fprintf(f, ": {");
                for (size_t k = first[i]; k < first[i + 1]; k++) {
                        fprintf(f, "%s\n    ", k == first[i] ? "" : ",");
                        json_string(f, ctx->figures[k].name);
                        fprintf(f, ": ");
                        json_number(f, &ctx->figures[k]);
                }
                fprintf(f, "\n  }");
        }
        fprintf(f, "\n}\n");
}

static void print_header(const Options *o, BenchContext *ctx, const char *busd_path,
                         const char *affinity) {
        printf("busd-bench %s:", BUSD_VERSION);
        for (size_t i = 0; i < o->n_run; i++)
                printf(" %s", o->run[i]->name);
        printf("\n");
        if (ctx->busd_pid > 0)
                printf("busd: %s (pid %d, started by busd-bench with --max-payload-bytes 128M "
                       "--max-queue-bytes 1G)\n",
                       busd_path, (int) ctx->busd_pid);
        else
                printf("busd: running at %s (not started by busd-bench: not pinned, RSS not "
                       "measured)\n",
                       ctx->address);
        if (o->pin_cpu >= 0)
                printf("pinning: busd-bench, %s and every helper process on CPU %d%s%s%s\n",
                       ctx->busd_pid > 0 ? "busd" : "(not busd)", o->pin_cpu,
                       affinity[0] ? " (busd's affinity: " : "", affinity,
                       affinity[0] ? ")" : "");
        else
                printf("pinning: none (--no-pin): processes may wake each other across CPUs\n");
        printf("each figure: median over at least %u message%s", ctx->count,
               ctx->count == 1 ? "" : "s");
        if (ctx->duration > 0)
                printf(" and %.2g s", ctx->duration);
        printf(", after one warm-up message\n\n");
}

int main(int argc, char *argv[]) {
        Options o = { .pin_cpu = PIN_DEFAULT, .max_size = DEFAULT_MAX_SIZE };
        BenchContext ctx = { .busd_pid = -1 };
        size_t first[N_SCENARIOS + 1] = {};
        char busd_buf[PATH_MAX], affinity[128] = "";
        const char *busd_path = NULL;
        int r, ret = EXIT_SUCCESS;

        r = parse_argv(argc, argv, &o);
        if (r <= 0)
                return r < 0 ? 2 : EXIT_SUCCESS;

        signal(SIGPIPE, SIG_IGN);
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        signal(SIGHUP, on_signal);

        if (o.pin_cpu == PIN_DEFAULT) {
                o.pin_cpu = bench_first_cpu();
                if (o.pin_cpu < 0) {
                        fprintf(stderr, "busd-bench: cannot read this process's CPUs: %s\n",
                                strerror(-o.pin_cpu));
                        return EXIT_FAILURE;
                }
        }
        if (o.pin_cpu >= 0) {
                r = bench_pin(o.pin_cpu);
                if (r < 0) {
                        fprintf(stderr, "busd-bench: cannot pin to CPU %d: %s\n", o.pin_cpu,
                                strerror(-r));
                        return EXIT_FAILURE;
                }
        }

        ctx.pin_cpu = o.pin_cpu;
        ctx.duration = o.duration;
        ctx.count = o.count;
        ctx.max_size = o.max_size;
        ctx.progress = isatty(STDERR_FILENO);
        ctx.human = open_memstream(&ctx.human_buf, &ctx.human_size);
        if (!ctx.human)
                return EXIT_FAILURE;

        if (o.address)
                ctx.address = o.address;
        else {
                busd_path = bench_busd_binary(o.busd, busd_buf, sizeof(busd_buf));
                r = bench_busd_start(&busd, busd_path, busd_args);
                if (r < 0)
                        return EXIT_FAILURE;
                ctx.address = busd.address;
                ctx.busd_pid = busd.pid;
                (void) bench_affinity_text(busd.pid, affinity, sizeof(affinity));
        }

        for (size_t i = 0; i < o.n_run; i++) {
                first[i] = ctx.n_figures;
                if (i > 0)
                        fputc('\n', ctx.human);
                r = o.run[i]->run(&ctx);
                if (r < 0) {
                        fprintf(stderr, "busd-bench: %s: %s\n", o.run[i]->name, strerror(-r));
                        ret = EXIT_FAILURE;
                }
        }
        first[o.n_run] = ctx.n_figures;

        if (!o.address)
                bench_busd_stop(&busd);

        fclose(ctx.human);
        if (o.json)
                print_json(&o, &ctx, busd_path, affinity, first);
        else {
                print_header(&o, &ctx, busd_path, affinity);
                fputs(ctx.human_buf, stdout);
        }
        if (ctx.failures > 0) {
                fprintf(stderr, "busd-bench: %u measurement%s failed\n", ctx.failures,
                        ctx.failures == 1 ? "" : "s");
                ret = EXIT_FAILURE;
        }

        for (size_t i = 0; i < ctx.n_figures; i++)
                free(ctx.figures[i].name);
        free(ctx.figures);
        free(ctx.human_buf);
        return ret;
}
