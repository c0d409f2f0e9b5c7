/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * busdctl: the command-line tool of busd. One file per group of commands
 * (ctl-info.c: status, list, names, subscriptions, stats, wait; ctl-call.c:
 * call, introspect; ctl-pubsub.c: pub, sub; ctl-monitor.c: monitor;
 * ctl-capture.c: capture, show, replay), plus ctl-output.c (tables, JSON,
 * the one-line form of a message) and ctl-types.c (where protobuf types come
 * from: built in for the broker, --descriptors files, and bus.Introspect).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>
#include <libbus/bus.h>
#include <protobuf-c/protobuf-c.h>

#include "libbus/macro.h"
#include "tools/busdctl/capture.pb-c.h"
#include "tools/busdctl/pb-json.h"

/* Exit codes. */
#define EXIT_FAILED 1 /* the operation failed (an error reply, no broker, ...) */
#define EXIT_USAGE 2  /* bad command line or bad input (JSON, a --descriptors file) */

#include "proto/bus.pb-c.h"

DEFINE_CLEANUP(bus_client, bus_client_unref)
DEFINE_CLEANUP(bus_message, bus_message_unref)
DEFINE_CLEANUP(bus_slot, bus_slot_unref)

static inline bool streq_ptr(const char *a, const char *b) {
        return a && b && strcmp(a, b) == 0;
}

static inline void protobuf_c_message_free_unpackedp(ProtobufCMessage **p) {
        if (*p)
                protobuf_c_message_free_unpacked(*p, NULL);
}

typedef struct TypeCache TypeCache;

typedef struct Ctl {
        /* global options */
        const char *address;
        bool json;             /* --json */
        bool json_pretty;      /* pretty JSON: --json on a terminal */
        bool legend;           /* table headers and footers */
        bool color;
        uint64_t timeout_usec; /* --timeout; 0: the command's default */
        bool timeout_set;
        char **descriptor_files;
        size_t n_descriptor_files;

        /* command options */
        const char *type;      /* --type */
        const char *file;      /* --file */
        const char *raw;       /* --raw DATA */
        bool raw_output;       /* call --raw: reply payload to stdout as is */
        bool retain;
        const char *queue_group;
        uint64_t count;        /* --count; 0: no limit */
        double duration;       /* --duration seconds; 0: no limit */
        bool realtime;         /* replay --realtime */
        bool quiet;
        char **topics, **names; /* monitor filters, NULL-terminated */
        size_t n_topics, n_names;
        int kinds[5];          /* 0-terminated */
        size_t n_kinds;

        /* state */
        bus_client *bus;       /* opened on first use */
        TypeCache *types;
} Ctl;

/* busdctl.c */
int ctl_bus(Ctl *ctl, bus_client **ret);
/* Opens a second connection (for a monitor's introspection lookups). */
int ctl_open_extra(Ctl *ctl, bus_client **ret);
int ctl_error(int r, const char *format, ...) _printf_(2, 3);
int ctl_usage_error(const char *format, ...) _printf_(1, 2);
/* Calls a method of the broker: protobuf in and out. */
int ctl_call_broker(Ctl *ctl, const char *method, const ProtobufCMessage *request,
                    const ProtobufCMessageDescriptor *reply_type, ProtobufCMessage **ret);
int ctl_kind_from_string(const char *s);
const char *ctl_kind_to_string(int kind);
/* Reads a whole file ("-": stdin). */
int ctl_read_file(const char *path, uint8_t **ret, size_t *ret_size);

/* protobuf-c keeps repeated strings as a counted array; the registry wants
 * them NULL-terminated: a malloc'd array of the borrowed strings. */
const char **strv_of(char *const *strings, size_t n);

/* ctl-call.c: request payloads, shared with pub. Errors are reported;
 * -EINVAL means the user's input was bad. */
int parse_json_arg(const char *text, json_object **ret);
int encode_json_payload(Ctl *ctl, const char *type, const char *text, uint8_t **ret,
                        size_t *ret_size);
int raw_payload(Ctl *ctl, uint8_t **ret, size_t *ret_size);

/* ctl-monitor.c: becomes a monitor with ctl's filters and hands each copy,
 * its type resolved, to sink, until --count or --duration is reached, a
 * signal arrives (0) or the connection is lost. A sink returning < 0 stops
 * it with that error. */
typedef int (*monitor_sink_fn)(Ctl *ctl, const Busdctl__CapturedMessage *m, void *userdata);
int monitor_run(Ctl *ctl, monitor_sink_fn sink, void *userdata);
/* Whether a message passes ctl's --topic/--name/--kind filters, as the
 * broker applies them (offline: a well-known name matches only where it
 * is written in the message). */
bool filters_match(const Ctl *ctl, const Busdctl__CapturedMessage *m);
/* ctl-pubsub.c: processes bus (and extra, if not NULL) until *done,
 * duration seconds (0: no limit) or a signal; -ECONNRESET when bus's
 * connection is lost. */
int run_until(bus_client *bus, bus_client *extra, double duration, const bool *done);
/* SIGINT and SIGTERM set a flag (and interrupt waits) instead of killing. */
void signals_catch(void);
bool signals_caught(void);

/* ctl-output.c */
typedef struct Table Table;
int table_new(Table **ret, size_t n_columns, ...);
int table_add(Table *t, ...); /* n_columns strings (NULL prints "-") */
void table_print(Table *t, const Ctl *ctl, FILE *f);
Table *table_free(Table *t);
DEFINE_CLEANUP(Table, table_free)
DEFINE_CLEANUP(json_object, json_object_put)
void json_print(const Ctl *ctl, json_object *j, bool one_line);
char *format_duration(uint64_t usec);
char *format_size(uint64_t bytes);
char *format_timestamp(uint64_t ns); /* local time, microseconds */
char *proc_cmdline(uint32_t pid);    /* NULL if gone */
/* The one-line and the JSON forms of a monitored, received or captured
 * message (payload decoded with ctl->types). */
void message_print(Ctl *ctl, const Busdctl__CapturedMessage *m, FILE *f);
json_object *message_to_json(Ctl *ctl, const Busdctl__CapturedMessage *m);
/* One message to stdout in the form --json asks for, flushed. */
int message_output(Ctl *ctl, const Busdctl__CapturedMessage *m);
/* Fills a CapturedMessage from a received bus_message; strings and payload
 * are borrowed from m. */
int message_capture(bus_message *m, Busdctl__CapturedMessage *ret);

/* ctl-types.c */
int types_new(TypeCache **ret);
TypeCache *types_free(TypeCache *t);
PbRegistry *types_registry(TypeCache *t);
/* Loads the --descriptors files. */
int types_load_files(Ctl *ctl);
/* Asks destination for its types (bus.Introspect) once; later calls return
 * the cached answer. *ret (borrowed, may be NULL) is its reply. Lookups go
 * over bus (which must not be a monitor). */
int types_introspect(Ctl *ctl, bus_client *bus, const char *destination,
                     const Bus__IntrospectReply **ret);
/* Makes sure type is known: asks the peers first and second (either may be
 * NULL), then every peer on the bus. 1 known, 0 not found. */
int types_resolve(Ctl *ctl, bus_client *bus, const char *type, const char *first,
                  const char *second);
/* The type peers announce for topic (bus.Introspect topic_types), or NULL. */
const char *types_for_topic(Ctl *ctl, bus_client *bus, const char *topic);
/* Called with each descriptor set added to the registry (a capture writes
 * them to its file). Sets added before are replayed to fn at once. */
typedef void (*types_set_fn)(const uint8_t *data, size_t size, void *userdata);
void types_watch(TypeCache *t, types_set_fn fn, void *userdata);
/* Decodes a payload as JSON: by its type when known, else raw wire format,
 * else base64 ({"@type":..., "@base64": ...}). Never fails but for -ENOMEM. */
json_object *types_decode(Ctl *ctl, const char *type, const uint8_t *data, size_t size);
/* Adds a serialized FileDescriptorSet from a capture file. */
int types_add_set(TypeCache *t, const uint8_t *data, size_t size);

/* Commands: argv[0] is the command name. Each returns an exit code. */
int cmd_status(Ctl *ctl, int argc, char **argv);
int cmd_list(Ctl *ctl, int argc, char **argv);
int cmd_names(Ctl *ctl, int argc, char **argv);
int cmd_subscriptions(Ctl *ctl, int argc, char **argv);
int cmd_stats(Ctl *ctl, int argc, char **argv);
int cmd_wait(Ctl *ctl, int argc, char **argv);
int cmd_call(Ctl *ctl, int argc, char **argv);
int cmd_introspect(Ctl *ctl, int argc, char **argv);
int cmd_pub(Ctl *ctl, int argc, char **argv);
int cmd_sub(Ctl *ctl, int argc, char **argv);
int cmd_monitor(Ctl *ctl, int argc, char **argv);
int cmd_capture(Ctl *ctl, int argc, char **argv);
int cmd_show(Ctl *ctl, int argc, char **argv);
int cmd_replay(Ctl *ctl, int argc, char **argv);
int cmd_complete(Ctl *ctl, int argc, char **argv);
