/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * busdctl: inspect, drive, monitor and capture a busd bus. This file parses
 * the command line, opens the connection and runs one command.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <protobuf-c/protobuf-c.h>

#include "proto/bus.pb-c.h"
#include "tools/busdctl/busdctl.h"

#define FILE_MAX ((size_t) 256 * 1024 * 1024)

int ctl_error(int r, const char *format, ...) {
        va_list ap;

        fputs("busdctl: ", stderr);
        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        if (r < 0)
                fprintf(stderr, ": %s", strerror(-r));
        fputc('\n', stderr);
        return EXIT_FAILED;
}

int ctl_usage_error(const char *format, ...) {
        va_list ap;

        fputs("busdctl: ", stderr);
        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fputs(" (try busdctl --help)\n", stderr);
        return EXIT_USAGE;
}

static int connect_client(Ctl *ctl, bus_client **ret) {
        _cleanup_(bus_client_unrefp) bus_client *c = NULL;
        int r;

        r = bus_client_new(&c);
        if (r < 0)
                return r;
        (void) bus_client_set_description(c, "busdctl");
        r = bus_client_connect(c, ctl->address);
        if (r < 0) {
                const char *a = ctl->address ? ctl->address : getenv("BUSD_ADDRESS");
                if (a)
                        return ctl_error(r, "cannot connect to the bus at %s", a), r;
                return ctl_error(r, "cannot connect to the bus (no --address or "
                                    "$BUSD_ADDRESS: tried the per-user bus)"), r;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

int ctl_bus(Ctl *ctl, bus_client **ret) {
        if (!ctl->bus) {
                int r = connect_client(ctl, &ctl->bus);
                if (r < 0)
                        return r;
        }
        *ret = ctl->bus;
        return 0;
}

int ctl_open_extra(Ctl *ctl, bus_client **ret) {
        return connect_client(ctl, ret);
}

int ctl_call_broker(Ctl *ctl, const char *method, const ProtobufCMessage *request,
                    const ProtobufCMessageDescriptor *reply_type, ProtobufCMessage **ret) {
        bus_error error = BUS_ERROR_NULL;
        bus_client *c;
        int r;

        r = ctl_bus(ctl, &c);
        if (r < 0)
                return r;
        r = bus_client_call_protobuf(c, "bus", method, request, reply_type, ctl->timeout_usec,
                                     &error, ret);
        if (r < 0) {
                if (bus_error_is_set(&error))
                        ctl_error(0, "%s: %s: %s", method, error.name,
                                  error.message ? error.message : "");
                else
                        ctl_error(r, "%s", method);
        }
        bus_error_free(&error);
        return r;
}

const char **strv_of(char *const *strings, size_t n) {
        const char **v = calloc(n + 1, sizeof(char *));
        for (size_t i = 0; v && i < n; i++)
                v[i] = strings[i];
        return v;
}

static const char *const kind_names[] = {
        [BUS_KIND_PUBLISH] = "PUBLISH",
        [BUS_KIND_REQUEST] = "REQUEST",
        [BUS_KIND_REPLY] = "REPLY",
        [BUS_KIND_ERROR] = "ERROR",
};

int ctl_kind_from_string(const char *s) {
        for (size_t i = 1; i < ELEMENTSOF(kind_names); i++)
                if (strcasecmp(s, kind_names[i]) == 0)
                        return (int) i;
        /* "pub", "req", ... */
        static const char *const short_names[] = { NULL, "pub", "req", "rep", "err" };
        for (size_t i = 1; i < ELEMENTSOF(short_names); i++)
                if (strcasecmp(s, short_names[i]) == 0)
                        return (int) i;
        return -EINVAL;
}

const char *ctl_kind_to_string(int kind) {
        if (kind > 0 && (size_t) kind < ELEMENTSOF(kind_names))
                return kind_names[kind];
        return "INVALID";
}

int ctl_read_file(const char *path, uint8_t **ret, size_t *ret_size) {
        _cleanup_close_ int fd = -1;
        _cleanup_free_ uint8_t *buf = NULL;
        size_t size = 0, allocated = 0;

        if (strcmp(path, "-") == 0)
                fd = dup(STDIN_FILENO);
        else
                fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;

        for (;;) {
                if (size == allocated) {
                        if (allocated >= FILE_MAX)
                                return -EFBIG;
                        size_t n = allocated ? allocated * 2 : 64 * 1024;
                        uint8_t *p = realloc(buf, n);
                        if (!p)
                                return -ENOMEM;
                        buf = p;
                        allocated = n;
                }
                ssize_t k = read(fd, buf + size, allocated - size);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                size += (size_t) k;
        }
        *ret = TAKE_PTR(buf);
        *ret_size = size;
        return 0;
}

static void help(void) {
        printf("busdctl [OPTIONS...] COMMAND [ARGS...]\n"
               "\n"
               "Inspect, drive, monitor and capture a busd bus.\n"
               "\n"
               "Commands:\n"
               "  status                      Broker version, uptime and counters\n"
               "  list                        Connected peers\n"
               "  names                       Well-known names and their owners\n"
               "  subscriptions               Subscriptions of every peer\n"
               "  stats                       Every counter of the broker\n"
               "  call NAME METHOD [JSON]     Call a method, print the reply\n"
               "  introspect NAME             Methods and types of a service\n"
               "  pub TOPIC [JSON]            Publish a message\n"
               "  sub PATTERN                 Print messages published on matching topics\n"
               "  monitor                     Print the bus's traffic as it passes\n"
               "  capture FILE                Write the bus's traffic to a file\n"
               "  show FILE                   Print a capture file\n"
               "  replay FILE                 Publish again what a capture file holds\n"
               "  wait NAME                   Wait until a name has an owner\n"
               "\n"
               "Options:\n"
               "  -h --help                   Show this help\n"
               "     --version                Show the version\n"
               "  -A --address=ADDR           The bus's socket (else $BUSD_ADDRESS, then\n"
               "                              the per-user bus)\n"
               "  -j --json                   Print JSON\n"
               "     --no-legend              Leave out table headers\n"
               "  -t --timeout=SEC            Time limit of calls and broker queries (25 s)\n"
               "                              and of wait (none)\n"
               "  -D --descriptors=FILE       Protobuf types from a FileDescriptorSet file\n"
               "  -T --type=TYPE              pub/call: the payload's protobuf type\n"
               "     --raw[=DATA]             call/pub: untyped payload DATA; call: print\n"
               "                              the reply's payload as it is\n"
               "  -f --file=FILE              call/pub: the payload from FILE (- for stdin)\n"
               "     --retain                 pub: keep as the topic's retained message\n"
               "  -q --queue=GROUP            sub: join a queue group\n"
               "  -n --count=N                sub/monitor/capture: stop after N messages\n"
               "     --duration=SEC           sub/monitor/capture: stop after SEC seconds\n"
               "     --topic=PATTERN          monitor/capture/show/replay: filter by topic\n"
               "     --name=NAME              monitor/capture/show/replay: filter by peer\n"
               "     --kind=KIND              monitor/capture/show/replay: publish, request,\n"
               "                              reply or error\n"
               "     --realtime               replay: keep the original spacing\n"
               "     --quiet                  wait, replay: print nothing; sub, monitor,\n"
               "                              capture: no progress lines on stderr\n"
               "\n"
               "See busdctl(1).\n");
}

enum {
        ARG_VERSION = 0x100,
        ARG_NO_LEGEND,
        ARG_RAW,
        ARG_RETAIN,
        ARG_DURATION,
        ARG_TOPIC,
        ARG_NAME,
        ARG_KIND,
        ARG_REALTIME,
        ARG_QUIET,
};

static int push_string(char ***array, size_t *n, const char *s) {
        char **a = realloc(*array, (*n + 2) * sizeof(char *));
        if (!a)
                return -ENOMEM;
        a[(*n)++] = (char *) s;
        a[*n] = NULL;
        *array = a;
        return 0;
}

static int parse_seconds(const char *s, double *ret) {
        char *end;
        errno = 0;
        double d = strtod(s, &end);
        if (errno || end == s || *end || !isfinite(d) || d < 0 || d > 1e9)
                return -EINVAL;
        *ret = d;
        return 0;
}

static int parse_argv(Ctl *ctl, int argc, char **argv) {
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "address", required_argument, NULL, 'A' },
                { "json", no_argument, NULL, 'j' },
                { "no-legend", no_argument, NULL, ARG_NO_LEGEND },
                { "timeout", required_argument, NULL, 't' },
                { "descriptors", required_argument, NULL, 'D' },
                { "type", required_argument, NULL, 'T' },
                { "raw", optional_argument, NULL, ARG_RAW },
                { "file", required_argument, NULL, 'f' },
                { "retain", no_argument, NULL, ARG_RETAIN },
                { "queue", required_argument, NULL, 'q' },
                { "count", required_argument, NULL, 'n' },
                { "duration", required_argument, NULL, ARG_DURATION },
                { "topic", required_argument, NULL, ARG_TOPIC },
                { "name", required_argument, NULL, ARG_NAME },
                { "kind", required_argument, NULL, ARG_KIND },
                { "realtime", no_argument, NULL, ARG_REALTIME },
                { "quiet", no_argument, NULL, ARG_QUIET },
                {}
        };
        int c, r;

        while ((c = getopt_long(argc, argv, "hA:jt:D:T:f:q:n:", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("busdctl %s\n", BUSD_VERSION);
                        return 0;
                case 'A':
                        ctl->address = optarg;
                        break;
                case 'j':
                        ctl->json = true;
                        break;
                case ARG_NO_LEGEND:
                        ctl->legend = false;
                        break;
                case 't': {
                        double d;
                        if (parse_seconds(optarg, &d) < 0 || d == 0)
                                return ctl_usage_error("bad --timeout: %s", optarg);
                        ctl->timeout_usec = (uint64_t) (d * 1e6);
                        if (ctl->timeout_usec == 0)
                                ctl->timeout_usec = 1;
                        ctl->timeout_set = true;
                        break;
                }
                case 'D':
                        r = push_string(&ctl->descriptor_files, &ctl->n_descriptor_files, optarg);
                        if (r < 0)
                                return ctl_error(r, "options");
                        break;
                case 'T':
                        ctl->type = optarg;
                        break;
                case ARG_RAW:
                        if (optarg)
                                ctl->raw = optarg;
                        ctl->raw_output = true;
                        break;
                case 'f':
                        ctl->file = optarg;
                        break;
                case ARG_RETAIN:
                        ctl->retain = true;
                        break;
                case 'q':
                        ctl->queue_group = optarg;
                        break;
                case 'n': {
                        char *end;
                        errno = 0;
                        unsigned long long n = strtoull(optarg, &end, 10);
                        if (errno || end == optarg || *end || n == 0 || optarg[0] == '-')
                                return ctl_usage_error("bad --count: %s", optarg);
                        ctl->count = n;
                        break;
                }
                case ARG_DURATION:
                        if (parse_seconds(optarg, &ctl->duration) < 0 || ctl->duration == 0)
                                return ctl_usage_error("bad --duration: %s", optarg);
                        break;
                case ARG_TOPIC:
                        r = push_string(&ctl->topics, &ctl->n_topics, optarg);
                        if (r < 0)
                                return ctl_error(r, "options");
                        break;
                case ARG_NAME:
                        r = push_string(&ctl->names, &ctl->n_names, optarg);
                        if (r < 0)
                                return ctl_error(r, "options");
                        break;
                case ARG_KIND: {
                        int k = ctl_kind_from_string(optarg);
                        if (k < 0)
                                return ctl_usage_error("bad --kind: %s (publish, request, "
                                                       "reply or error)", optarg);
                        if (ctl->n_kinds < ELEMENTSOF(ctl->kinds) - 1)
                                ctl->kinds[ctl->n_kinds++] = k;
                        break;
                }
                case ARG_REALTIME:
                        ctl->realtime = true;
                        break;
                case ARG_QUIET:
                        ctl->quiet = true;
                        break;
                default:
                        return EXIT_USAGE;
                }
        }
        return -1; /* go on */
}

typedef struct Command {
        const char *name;
        int min_args, max_args; /* after the command's name */
        int (*run)(Ctl *ctl, int argc, char **argv);
        bool needs_types;
} Command;

static const Command commands[] = {
        { "status", 0, 0, cmd_status, false },
        { "list", 0, 0, cmd_list, false },
        { "names", 0, 0, cmd_names, false },
        { "subscriptions", 0, 0, cmd_subscriptions, false },
        { "stats", 0, 0, cmd_stats, false },
        { "wait", 1, 1, cmd_wait, false },
        { "call", 2, 3, cmd_call, true },
        { "introspect", 1, 1, cmd_introspect, true },
        { "pub", 1, 2, cmd_pub, true },
        { "sub", 1, 1, cmd_sub, true },
        { "monitor", 0, 0, cmd_monitor, true },
        { "capture", 1, 1, cmd_capture, true },
        { "show", 1, 1, cmd_show, true },
        { "replay", 1, 1, cmd_replay, true },
        { "__complete", 1, 2, cmd_complete, false },
};

static const Command *command_find(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (strcmp(commands[i].name, name) == 0)
                        return &commands[i];
        return NULL;
}

static void ctl_done(Ctl *ctl) {
        bus_client_unref(ctl->bus);
        types_free(ctl->types);
        free(ctl->descriptor_files);
        free(ctl->topics);
        free(ctl->names);
}

int main(int argc, char **argv) {
        Ctl ctl = { .legend = true };
        int r;

        r = parse_argv(&ctl, argc, argv);
        if (r >= 0)
                goto finish;

        if (optind >= argc) {
                r = ctl_usage_error("no command given");
                goto finish;
        }
        const Command *cmd = command_find(argv[optind]);
        if (!cmd) {
                r = ctl_usage_error("unknown command: %s", argv[optind]);
                goto finish;
        }
        int n_args = argc - optind - 1;
        if (n_args < cmd->min_args || n_args > cmd->max_args) {
                r = ctl_usage_error("%s takes %s%d argument%s, not %d", cmd->name,
                                    cmd->min_args != cmd->max_args ? "up to " : "",
                                    cmd->max_args, cmd->max_args == 1 ? "" : "s", n_args);
                goto finish;
        }

        bool tty = isatty(STDOUT_FILENO);
        ctl.json_pretty = tty; /* JSON is indented for people, one line for programs */
        const char *no_color = getenv("NO_COLOR");
        ctl.color = tty && !(no_color && *no_color);
        if (cmd->needs_types) {
                r = types_new(&ctl.types);
                if (r < 0) {
                        r = ctl_error(r, "protobuf types");
                        goto finish;
                }
                r = types_load_files(&ctl);
                if (r != 0)
                        goto finish;
        }
        r = cmd->run(&ctl, argc - optind, argv + optind);

finish:
        ctl_done(&ctl);
        if (fflush(stdout) != 0 && r == 0)
                r = EXIT_FAILED;
        return r;
}
