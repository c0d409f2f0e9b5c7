/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libbus: the client library of busd, a local message bus for Linux.
 *
 * A bus_client is one connection to the broker. Over it an application
 * publishes messages on topics and subscribes to topic patterns, calls
 * methods of services by name and serves methods itself. Messages carry an
 * opaque payload, usually a protobuf message (helpers for protobuf-c are
 * below), and the broker stamps every delivered message with the sender's
 * unique id and credentials.
 *
 * Threads: libbus keeps no global state and starts no threads. A given object
 * may be used by only one thread at a time; separate objects may be used from
 * separate threads at once. Reference counts are not atomic. Do not use a
 * bus_client in a forked child.
 *
 * Return values: functions that can fail return an int: 0 or a positive
 * value on success, a negative errno on failure. Every public function checks
 * its arguments and returns -EINVAL for bad ones; none asserts, aborts, exits
 * or prints. Each function lists its errno values below; -ENOMEM is possible
 * wherever memory is allocated and is not repeated.
 *
 * Ownership:
 *  1. A const char * you get back is borrowed: it stays valid until the object
 *     it came from changes or is unreffed.
 *  2. A function that keeps an object you pass in takes its own reference; the
 *     caller still drops its own (bus_client_send(c, m); then unref m).
 *  3. A message that failed halfway through being built is marked bad, and
 *     later calls on it return -ESTALE.
 *  4. Objects returned through a pointer argument belong to the caller, who
 *     drops them with the matching unref/free; on failure *ret is untouched.
 *
 * Event loop: libbus does no blocking I/O of its own except in the calls that
 * say they block (bus_client_connect(), bus_client_call() and the synchronous
 * helpers built on it, bus_client_flush(), bus_client_wait(), bus_client_run()).
 * Everything else queues and returns; bus_client_get_fd(),
 * bus_client_get_events(), bus_client_get_timeout() and bus_client_process()
 * drive a connection from any event loop, and bus_client_attach_event() does
 * that on an sd_event loop.
 */
#ifndef LIBBUS_BUS_H
#define LIBBUS_BUS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bus_client bus_client;
typedef struct bus_message bus_message;
typedef struct bus_slot bus_slot;
typedef struct sd_event sd_event;
typedef struct ProtobufCMessage ProtobufCMessage;
typedef struct ProtobufCMessageDescriptor ProtobufCMessageDescriptor;

#define BUS_TIMEOUT_DEFAULT ((uint64_t) 0)                 /* 25 s */
#define BUS_TIMEOUT_INFINITE UINT64_MAX                    /* for bus_client_wait() */
#define BUS_USEC_PER_SEC ((uint64_t) 1000000)

/* ---- Errors.
 *
 * A remote failure comes back as a bus_error: a dotted error name and a
 * human-readable message. The caller fills one in on the stack:
 *     bus_error error = BUS_ERROR_NULL;
 *     r = bus_client_call(c, m, 0, &error, &reply);
 *     if (r < 0) fprintf(stderr, "%s: %s\n", error.name, error.message);
 *     bus_error_free(&error);
 */
typedef struct bus_error {
        char *name;    /* NULL when no error is set */
        char *message; /* may be NULL */
} bus_error;

#define BUS_ERROR_NULL ((bus_error){ NULL, NULL })

/* Errors the broker and libbus generate. */
#define BUS_ERROR_FAILED "bus.Error.Failed"                 /* a handler failed */
#define BUS_ERROR_NO_OWNER "bus.Error.NoOwner"              /* no such name or peer */
#define BUS_ERROR_TIMEOUT "bus.Error.Timeout"               /* no reply in time */
#define BUS_ERROR_DISCONNECTED "bus.Error.Disconnected"     /* callee or connection gone */
#define BUS_ERROR_UNKNOWN_METHOD "bus.Error.UnknownMethod"  /* callee has no such method */
#define BUS_ERROR_INVALID_ARGS "bus.Error.InvalidArgs"      /* malformed request */
#define BUS_ERROR_ACCESS_DENIED "bus.Error.AccessDenied"    /* not allowed */
#define BUS_ERROR_LIMITS_EXCEEDED "bus.Error.LimitsExceeded" /* a quota or size limit */
#define BUS_ERROR_PROTOCOL "bus.Error.Protocol"             /* malformed frame or payload */

/* Frees the strings and resets *e to BUS_ERROR_NULL. Accepts NULL. */
void bus_error_free(bus_error *e);
/* Sets *e (freeing what it held). message is a printf format and may be NULL.
 * Returns the negative errno bus_error_to_errno() gives for the name, so a
 * handler can write return bus_error_set(...). e may be NULL: then only the
 * errno is returned. -EINVAL for a bad name. */
int bus_error_set(bus_error *e, const char *name, const char *format, ...)
        __attribute__((format(printf, 3, 4)));
/* 1 if e holds an error with this name, 0 if not. */
int bus_error_has_name(const bus_error *e, const char *name);
/* Whether e holds an error at all. */
int bus_error_is_set(const bus_error *e);
/* The negative errno that best describes an error name: NoOwner -ENXIO,
 * Timeout -ETIMEDOUT, Disconnected -ECONNRESET, UnknownMethod -EBADRQC,
 * InvalidArgs -EINVAL, AccessDenied -EACCES, LimitsExceeded -ENOBUFS,
 * Protocol -EPROTO, anything else -EREMOTEIO. */
int bus_error_to_errno(const bus_error *e);

/* ---- Connections. */

/* Creates an unconnected client. Returns 0. */
int bus_client_new(bus_client **ret);
bus_client *bus_client_ref(bus_client *c);
/* Drops a reference; the last one closes the connection (queued output that
 * cannot be sent at once is dropped: call bus_client_flush() first) and fails
 * pending calls. Accepts NULL, returns NULL. */
bus_client *bus_client_unref(bus_client *c);

/* Name sent to the broker in the greeting, shown in peer listings (default:
 * the program's short name). Before connecting only: -EBUSY after. */
int bus_client_set_description(bus_client *c, const char *description);

/* Connects and greets the broker; blocks until the broker has answered or
 * 25 s passed. address is a socket path, "@name" for an abstract socket, or
 * NULL for $BUSD_ADDRESS, then $XDG_RUNTIME_DIR/busd/bus, then
 * /tmp/busd-$UID/bus. Errors: -EISCONN already connected (a client connects
 * once; after a failed attempt it may try again), -ENOENT or -ECONNREFUSED no
 * broker there, -ETIMEDOUT no greeting, -EPROTO the broker answered nonsense,
 * the errno of the broker's error if it refused the greeting (-EACCES, ...),
 * other connect() errors. */
int bus_client_connect(bus_client *c, const char *address);
/* bus_client_new() and bus_client_connect() in one. */
int bus_client_open(bus_client **ret, const char *address);

/* This connection's unique id (":1.N"). -ENOTCONN before connecting. */
int bus_client_get_unique_id(bus_client *c, const char **ret);
/* 1 while connected, 0 once the connection is closed or was never opened. */
int bus_client_is_connected(bus_client *c);

/* Installs a callback that receives libbus's diagnostics (priority as in
 * syslog: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG). libbus prints nothing
 * by itself. fn NULL removes it. */
typedef void (*bus_log_fn)(int priority, const char *message, void *userdata);
int bus_client_set_log(bus_client *c, bus_log_fn fn, void *userdata);

/* ---- Event loop integration. */

/* The connection's socket, to poll. -ENOTCONN. */
int bus_client_get_fd(bus_client *c);
/* poll() events to wait for: POLLIN, plus POLLOUT while output is queued.
 * -ENOTCONN. */
int bus_client_get_events(bus_client *c);
/* When bus_client_process() must next run even without I/O (a call's
 * timeout): absolute CLOCK_MONOTONIC time in microseconds in *ret, or
 * UINT64_MAX for never. Returns 0. */
int bus_client_get_timeout(bus_client *c, uint64_t *ret);
/* Sends queued output, reads input, fires expired timeouts and dispatches the
 * messages that are ready to their callbacks. Never blocks. Returns 1 if it
 * did something (call it again before sleeping), 0 if there was nothing to
 * do, -ECONNRESET once the connection is lost (pending calls have then been
 * failed with bus.Error.Disconnected), -EBUSY when called from one of this
 * client's own callbacks, or another negative errno. A callback
 * that returns a negative errno does not stop processing: it is logged, and
 * for a method call an error reply is sent. */
int bus_client_process(bus_client *c);
/* Blocks until there is something to process or timeout_usec (relative;
 * BUS_TIMEOUT_INFINITE for no limit) passes. Returns 1 if woken by I/O or a
 * due timeout, 0 on time-out, -EINTR, -ENOTCONN. */
int bus_client_wait(bus_client *c, uint64_t timeout_usec);
/* Blocks until all queued output is written. -ENOTCONN, -ECONNRESET. */
int bus_client_flush(bus_client *c);
/* Batching (off by default): when on, bus_client_send() and the publish
 * shorthands only queue, and queued messages are written together by the
 * next bus_client_process(), bus_client_wait(), bus_client_run(),
 * bus_client_flush() or call, or as soon as 64 KiB are queued. One write for
 * many messages is how a fast publisher reaches full speed; the price is
 * that a message waits for the event loop's next turn. Calls and replies to
 * them are written at once either way. Returns 0. */
int bus_client_set_batching(bus_client *c, int batching);
/* Processes and waits until bus_client_exit() is called from a callback (then
 * returns its code) or the connection is lost (-ECONNRESET). */
int bus_client_run(bus_client *c);
/* Makes bus_client_run() return code (>= 0) once the current callback ends. */
int bus_client_exit(bus_client *c, int code);

/* Drives the connection from an sd_event loop: adds an I/O source and a timer
 * at the given priority. e NULL means the thread's default loop
 * (sd_event_default()). The client takes a reference on the loop. Call it
 * after connecting: -ENOTCONN before. -EBUSY if already attached. When the
 * connection is lost the sources are disabled and the loop goes on. */
int bus_client_attach_event(bus_client *c, sd_event *e, int64_t priority);
int bus_client_detach_event(bus_client *c);

/* ---- Messages. */

enum {
        BUS_KIND_PUBLISH = 1,
        BUS_KIND_REQUEST = 2,
        BUS_KIND_REPLY = 3,
        BUS_KIND_ERROR = 4,
};

/* A message handler. Returning a negative errno from a method handler that
 * has not replied makes libbus send an error reply (bus.Error.Failed with the
 * errno's text); a handler that wants to answer later keeps a reference to
 * the request and replies when it is ready. */
typedef int (*bus_message_handler_t)(bus_message *m, void *userdata);

/* New PUBLISH on a topic: dot-separated tokens of ASCII 0x21-0x7E except
 * '.', '*' and '>', at most 1024 bytes in all. -EINVAL for a bad topic, and
 * for the reserved ones ("bus" and "bus.*"), where only the broker publishes. */
int bus_message_new_publish(bus_message **ret, const char *topic);
/* New REQUEST to destination (a well-known name, a unique id or "bus") for a
 * method. -EINVAL for a bad destination or empty method. */
int bus_message_new_request(bus_message **ret, const char *destination, const char *method);
/* New REPLY or ERROR answering a received REQUEST. -EINVAL if request is not
 * a received request; -EPERM if the caller asked for no reply. */
int bus_message_new_reply(bus_message *request, bus_message **ret);
int bus_message_new_error(bus_message *request, bus_message **ret, const char *name,
                          const char *format, ...) __attribute__((format(printf, 4, 5)));

bus_message *bus_message_ref(bus_message *m);
bus_message *bus_message_unref(bus_message *m);

/* Copies size bytes as the payload, replacing any. -EPERM on a message that
 * was sent or received (they are read-only), -EMSGSIZE over the protocol's
 * maximum (128 MiB; the broker may allow less), -ESTALE on a bad message.
 * The copy goes where the payload will most likely travel (see "Shared-memory
 * payloads"): into a memfd for BUS_SHM_ALWAYS, and for BUS_SHM_AUTO from
 * BUS_SHM_THRESHOLD_DEFAULT bytes on; -ETOOMANYREFS for BUS_SHM_ALWAYS when
 * 253 descriptors leave no room for the memfd's; errors of memfd_create()
 * (-EMFILE, ...). */
int bus_message_set_payload(bus_message *m, const void *data, size_t size);
/* Names the payload's type, normally the fully qualified protobuf name
 * ("example.Point"), so tools can decode it. type NULL clears it. */
int bus_message_set_payload_type(bus_message *m, const char *type);
/* Packs a protobuf-c message as the payload and names its type. It is packed
 * straight into bus_message_reserve_payload()'s buffer, so a large one is
 * produced in shared memory without a copy. Errors as for that function. */
int bus_message_set_protobuf(bus_message *m, const ProtobufCMessage *pb);
/* For a REQUEST: how long the broker and libbus wait for the reply
 * (0: 25 s; capped at 1 hour). */
int bus_message_set_timeout(bus_message *m, uint64_t usec);
/* For a PUBLISH: keep it as the topic's retained message, handed to every
 * later subscriber first. A retained publish with an empty payload removes the
 * topic's retained message. */
int bus_message_set_retain(bus_message *m, int retain);
/* For a REQUEST: the caller wants no reply (send and forget). */
int bus_message_set_no_reply(bus_message *m, int no_reply);
/* The two flags above, on any message (received ones and monitor copies
 * carry the sender's): 1 or 0. A retained hand-out to a new subscriber has
 * the retain flag too; bus_message_is_retained() tells it from a live
 * publish. */
int bus_message_get_retain(bus_message *m);
int bus_message_get_no_reply(bus_message *m);

/* The payload bytes; *data stays valid while m lives (for a message being
 * built: until its payload is replaced), also across sending. An empty
 * payload gives size 0 and a non-NULL pointer. A shared-memory payload is
 * mapped read-only on the first call, which is the only way this can fail:
 * -ENOMEM (or another mmap() errno). -ESTALE on a bad message. */
int bus_message_get_payload(bus_message *m, const void **data, size_t *size);
/* Unpacks the payload with a protoc-c descriptor. The result is freed with
 * protobuf_c_message_free_unpacked(*ret, NULL). -EBADMSG if the payload does
 * not decode or its named type differs from desc's. */
int bus_message_read_protobuf(bus_message *m, const ProtobufCMessageDescriptor *desc,
                              ProtobufCMessage **ret);

/* Accessors; strings are borrowed and NULL when not set. */
int bus_message_get_kind(bus_message *m);             /* BUS_KIND_*, or -EINVAL */
const char *bus_message_get_topic(bus_message *m);    /* PUBLISH */
const char *bus_message_get_destination(bus_message *m);
const char *bus_message_get_method(bus_message *m);   /* REQUEST */
const char *bus_message_get_payload_type(bus_message *m);
const char *bus_message_get_sender(bus_message *m);   /* received: ":1.N" or "bus" */
const char *bus_message_get_error_name(bus_message *m);    /* ERROR */
const char *bus_message_get_error_message(bus_message *m); /* ERROR */
uint64_t bus_message_get_serial(bus_message *m);      /* 0 until sent */
uint64_t bus_message_get_reply_serial(bus_message *m);
/* Credentials of the sending process, stamped by the broker (from
 * SO_PEERCRED when it connected). Any pointer may be NULL. -ENODATA for a
 * message that was not received. */
int bus_message_get_sender_creds(bus_message *m, uid_t *uid, gid_t *gid, pid_t *pid);
/* Messages dropped for this connection since the previous one it received,
 * because it did not read fast enough. */
uint64_t bus_message_get_missed(bus_message *m);
/* 1 for a retained copy handed to a new subscriber, 0 for a live publish. */
int bus_message_is_retained(bus_message *m);
/* If m is an ERROR, sets *e from it and returns the errno of its name;
 * otherwise returns 0 and leaves *e alone. */
int bus_message_get_error(bus_message *m, bus_error *e);

/* ---- File descriptors.
 *
 * Any message may carry descriptors (pipes, sockets, files, memfds): they
 * travel with it as SCM_RIGHTS and arrive as new descriptors (close-on-exec)
 * in the receiver. The broker allows 16 per message by default (busd
 * --max-fds), a shared-memory payload's memfd included. The broker tells
 * libbus its limit when connecting: bus_client_send() refuses a message over
 * it with -ETOOMANYREFS (a BUS_SHM_AUTO payload then travels inline if it
 * can), so the connection never breaks over it. Received descriptors are
 * closed with their message, also when nobody handles it. */

/* Attaches a duplicate of fd (F_DUPFD_CLOEXEC, numbered 3 or above) to a
 * message being built; the caller keeps its own fd. Returns the descriptor's
 * index (0, 1, ...). -EBADF for a bad fd, -ETOOMANYREFS past 253 (a
 * shared-memory payload's memfd counts), -EMFILE, -EPERM on a sent or
 * received message, -ESTALE. */
int bus_message_append_fd(bus_message *m, int fd);
/* Number of descriptors the message carries (a shared-memory payload's own
 * descriptor is not counted: it is part of the payload). */
int bus_message_get_n_fds(bus_message *m);
/* The descriptor at index, on any message (on one being built, the
 * duplicate it keeps). It belongs to the message and is closed with it: dup
 * it (or take it) to keep it. -ENXIO: no such index, or already taken. */
int bus_message_get_fd(bus_message *m, unsigned index);
/* Takes the descriptor at index out of a received or sent message: the
 * caller owns it and must close it. (On a sent message whose descriptors are
 * still queued for sending, that is a duplicate.) -ENXIO as above, -EPERM on
 * a message being built, -EMFILE. */
int bus_message_take_fd(bus_message *m, unsigned index);

/* ---- Shared-memory payloads.
 *
 * Large payloads travel in a sealed memfd instead of through the socket: the
 * broker forwards the descriptor, never the bytes, so a payload costs it the
 * same whatever its size and however many subscribers get it. The receiver
 * maps it read-only on first access; bus_message_get_payload() works the
 * same for both, and the mapping goes away with the message.
 *
 * Which payloads go through shared memory: with BUS_SHM_AUTO (the default),
 * those of at least the connection's threshold (BUS_SHM_THRESHOLD_DEFAULT
 * unless set with bus_client_set_shm_threshold()), decided when the message
 * is sent; BUS_SHM_ALWAYS and BUS_SHM_NEVER force it per message, and a
 * buffer from bus_message_reserve_payload() in a memfd stays there. Empty
 * payloads never do. Sending moves a payload whose place was a guess (a
 * BUS_SHM_AUTO bus_message_set_payload(), see there) to the heap or into a
 * memfd as needed; it fails with that step's errno (-EMFILE, -ENOMEM, ...).
 * A shared-memory payload may be as large as the protocol allows (128 MiB
 * here; busd --max-memfd-bytes), whatever the broker's limit on inline
 * payloads.
 *
 * A received shared-memory payload is checked before anything maps it (a
 * memfd sealed against writing, shrinking, growing and sealing, of exactly
 * the announced size), so reading it can neither see it change nor fault.
 * A message whose payload fails the check is logged and dropped with its
 * descriptors; if it answered a pending call, the call fails with
 * bus.Error.Protocol (-EPROTO) at once. */

#define BUS_SHM_THRESHOLD_DEFAULT ((size_t) 256 * 1024)

enum {
        BUS_SHM_AUTO = 0,
        BUS_SHM_NEVER = 1,
        BUS_SHM_ALWAYS = 2,
};

/* Per message: BUS_SHM_AUTO, BUS_SHM_NEVER or BUS_SHM_ALWAYS. Before the
 * payload is set or reserved: -EBUSY after. -EINVAL for another mode, -EPERM,
 * -ESTALE. */
int bus_message_set_shm(bus_message *m, int mode);
/* Per connection: payloads of at least bytes go through shared memory
 * (SIZE_MAX: never). Returns 0. */
int bus_client_set_shm_threshold(bus_client *c, size_t bytes);
/* Zero-copy produce: makes the payload size bytes long (zero-filled) and
 * returns a writable pointer to it, valid until the message is sent, its
 * payload replaced, or it is freed. For a payload that will go through shared
 * memory (mode ALWAYS, or AUTO and size at least BUS_SHM_THRESHOLD_DEFAULT)
 * the buffer is the memfd itself, mapped writable; sending unmaps it and
 * seals the memfd, so the bytes are never copied (AUTO takes the heap
 * instead when 253 descriptors leave no room for the memfd). Size 0 gives an
 * empty payload and a non-NULL pointer to write nothing to. -EPERM on a sent
 * or received message, -EMSGSIZE, -ETOOMANYREFS (ALWAYS, as above), errors
 * of memfd_create() and mmap(), -ESTALE. */
int bus_message_reserve_payload(bus_message *m, size_t size, void **ret);
/* 1 if the payload is in shared memory now (for a message being built,
 * sending may still move it, see above) or, once sent or received, was sent
 * through it; else 0. */
int bus_message_is_shm(bus_message *m);

/* ---- Sending. */

/* Queues m for sending and assigns its serial (in *ret_serial if not NULL).
 * The message becomes read-only. Never blocks. -ENOTCONN, -ECONNRESET the
 * connection is lost, -EPERM the message was already sent, -ESTALE,
 * -ENOBUFS more than 64 MiB is queued already, -EMSGSIZE an inline payload is
 * over the broker's limit (from its greeting), -EALREADY m is a reply to a
 * request that was answered already, -ETOOMANYREFS more descriptors
 * (a shared-memory payload's included) than the broker accepts per message
 * (from its greeting; busd's default is 16), or the errno of moving the
 * payload into or out of shared memory (see above). */
int bus_client_send(bus_client *c, bus_message *m, uint64_t *ret_serial);

/* Publishes a payload on a topic; flags: BUS_PUBLISH_RETAIN. */
#define BUS_PUBLISH_RETAIN (UINT64_C(1) << 0)
int bus_client_publish(bus_client *c, const char *topic, const void *data, size_t size,
                       uint64_t flags);
int bus_client_publish_protobuf(bus_client *c, const char *topic, const ProtobufCMessage *pb,
                                uint64_t flags);

/* ---- Calling methods. */

/* Sends a REQUEST and blocks until its reply arrives or timeout_usec passes
 * (0: the message's own timeout, else 25 s). Messages that arrive meanwhile
 * are queued and dispatched by the next bus_client_process(). On success
 * returns 0 and the REPLY in *ret_reply (may be NULL). When the callee or the
 * broker answers with an ERROR, or the call fails locally, ret_error (may be
 * NULL) is set and the error's errno is returned (see bus_error_to_errno();
 * -ETIMEDOUT for a timeout, -ECONNRESET for a lost connection). -EINVAL for a
 * request marked no-reply. */
int bus_client_call(bus_client *c, bus_message *request, uint64_t timeout_usec,
                    bus_error *ret_error, bus_message **ret_reply);
/* Sends a REQUEST; callback receives the REPLY or an ERROR (also a locally
 * made one for a timeout or a lost connection), exactly once, unless the slot
 * is unreffed first, which cancels the call. ret_slot may be NULL: the call
 * then lives until it completes. callback may be NULL. */
int bus_client_call_async(bus_client *c, bus_slot **ret_slot, bus_message *request,
                          bus_message_handler_t callback, void *userdata,
                          uint64_t timeout_usec);
/* Shorthands: a request with a raw payload, or protobuf in and out. */
int bus_client_call_method(bus_client *c, const char *destination, const char *method,
                           const void *data, size_t size, uint64_t timeout_usec,
                           bus_error *ret_error, bus_message **ret_reply);
int bus_client_call_protobuf(bus_client *c, const char *destination, const char *method,
                             const ProtobufCMessage *request,
                             const ProtobufCMessageDescriptor *reply_type,
                             uint64_t timeout_usec, bus_error *ret_error,
                             ProtobufCMessage **ret_reply);

/* ---- Subscribing. */

#define BUS_SUBSCRIBE_NO_RETAINED (UINT64_C(1) << 0) /* skip retained messages */

/* Subscribes to a topic pattern: tokens as for topics, plus "*" for exactly one
 * token and ">" (last) for one or more tokens. With a queue_group (non-NULL,
 * non-empty), each message goes to one member of the group (those subscribed
 * with the same pattern and group), rotating; plain subscribers all get every
 * message. Blocks until the broker acknowledges: from then on every matching
 * publish the broker receives is delivered. Retained messages of matching
 * topics are dispatched first, by bus_client_process(). Unreffing the slot
 * unsubscribes; with ret_slot NULL the subscription lasts as long as the
 * connection. -EINVAL bad pattern, -EACCES/-ENOBUFS refused by the broker,
 * -ETIMEDOUT, -ECONNRESET. */
int bus_client_subscribe(bus_client *c, bus_slot **ret_slot, const char *pattern,
                         const char *queue_group, uint64_t flags,
                         bus_message_handler_t callback, void *userdata);

/* ---- Names and serving methods. */

#define BUS_NAME_ALLOW_REPLACEMENT (UINT64_C(1) << 0)
#define BUS_NAME_REPLACE_EXISTING (UINT64_C(1) << 1)
#define BUS_NAME_DO_NOT_QUEUE (UINT64_C(1) << 2)

enum {
        BUS_NAME_PRIMARY_OWNER = 1, /* the name is ours */
        BUS_NAME_IN_QUEUE = 2,      /* we wait for it */
        BUS_NAME_EXISTS = 3,        /* someone else has it, we did not queue */
        BUS_NAME_ALREADY_OWNER = 4, /* it was ours already */
};

enum {
        BUS_NAME_RELEASED = 1,
        BUS_NAME_NON_EXISTENT = 2,
        BUS_NAME_NOT_OWNER = 3,
};

/* Asks the broker for a well-known name (D-Bus rules: reverse-DNS elements of
 * [A-Za-z0-9_-], at least two, none starting with a digit, at most 255 bytes).
 * Blocks for the answer. Returns BUS_NAME_PRIMARY_OWNER, _IN_QUEUE, _EXISTS or
 * _ALREADY_OWNER; -EINVAL bad name, -EACCES not allowed, -ETIMEDOUT,
 * -ECONNRESET. Owner changes are published on the topic "bus.name.<name>". */
int bus_client_request_name(bus_client *c, const char *name, uint64_t flags);
/* Gives a name up (or leaves its queue). Returns BUS_NAME_RELEASED,
 * _NON_EXISTENT or _NOT_OWNER. */
int bus_client_release_name(bus_client *c, const char *name);

/* Registers a handler for requests addressed to this connection. name: the
 * destination it must be addressed to (one of our well-known names, or NULL
 * for any); method: the method (NULL for any). The most specific handler wins:
 * name and method, then method only, then name only, then neither. A request
 * nobody handles is answered with bus.Error.UnknownMethod. Unreffing the slot
 * removes the handler. */
int bus_client_add_method(bus_client *c, bus_slot **ret_slot, const char *name,
                          const char *method, bus_message_handler_t handler, void *userdata);

/* Reply shorthands. Each answers a received request at most once: -EALREADY
 * after a reply was sent, -EPERM if the caller asked for none. */
int bus_client_reply(bus_client *c, bus_message *request, const void *data, size_t size);
int bus_client_reply_protobuf(bus_client *c, bus_message *request, const ProtobufCMessage *pb);
int bus_client_reply_error(bus_client *c, bus_message *request, const char *name,
                           const char *format, ...) __attribute__((format(printf, 4, 5)));

/* ---- Typed services (protobuf-c).
 *
 * A protoc-c generated service (ProtobufCService, from a .proto "service"
 * block) can be served on a bus name and called through a stub; each rpc is a
 * method whose name is the rpc's ("Add"), whose request payload is the rpc's
 * input message and whose reply is its output message. */

typedef struct ProtobufCService ProtobufCService;
typedef struct ProtobufCServiceDescriptor ProtobufCServiceDescriptor;

/* Serves service on name (one of this connection's well-known names, or NULL
 * for requests to any of them and to the unique id): a request for one of its
 * methods is unpacked with the rpc's input type and passed to
 * service->invoke(); the output message given to the closure is packed as
 * the reply. The closure may be called later, after invoke() returned, but
 * must be called exactly once, or bus_service_return_error() instead:
 * calling it with NULL answers bus.Error.Failed. The input message lives
 * until invoke() returns. A request whose payload does not decode is answered
 * with bus.Error.InvalidArgs, and an unknown method with
 * bus.Error.UnknownMethod, without calling the service. The binding is a
 * method handler for (name, any method), so a handler added with
 * bus_client_add_method() for one method wins over it. Until a call is
 * completed it holds a reference on c: a call never completed keeps the
 * client alive. A request sent with no-reply is served all the same, and
 * completing it sends nothing. The service's types are added to what the
 * connection answers to introspection (see bus_client_add_type()).
 * Unreffing the slot unbinds it (calls in progress still complete); the
 * service must outlive the binding. -EINVAL bad name or not a service
 * descriptor, -EEXIST a service is already bound on this name (NULL
 * counting as a name of its own). */
int bus_client_bind_service(bus_client *c, bus_slot **ret_slot, const char *name,
                            ProtobufCService *service);
/* From a service method's implementation, given the closure_data that
 * invoke() received: the request being served (borrowed; for the sender's
 * identity and descriptors), or NULL if closure_data is not libbus's. */
bus_message *bus_service_get_request(void *closure_data);
/* Instead of calling the closure: answers the request with an error
 * (a dotted name, e.g. "org.example.Calc.Error.DivByZero", and a printf
 * message). Completes the call like the closure does, and returns what
 * sending the answer returned. -EINVAL for a bad name or a closure_data that
 * is not libbus's: the call then stays pending. */
int bus_service_return_error(void *closure_data, const char *name, const char *format, ...)
        __attribute__((format(printf, 3, 4)));

#define BUS_STUB_ASYNC (UINT64_C(1) << 0)

/* A client stub: a ProtobufCService whose methods call destination's methods
 * over the bus, for protoc-c's generated client functions
 * (example__calc__add(stub, &request, closure, closure_data)). By default a
 * call blocks until the answer and runs the closure before returning; with
 * BUS_STUB_ASYNC the closure runs later, from bus_client_process() (or at
 * once, with NULL, when the request cannot be sent). The closure gets the
 * reply message (valid only during the closure), or NULL when the call
 * failed: bus_service_stub_get_error() then tells why. The stub holds a
 * reference on c. Free it with protobuf_c_service_destroy(stub), also from
 * a closure; asynchronous calls still in flight are then cancelled and
 * their closures run at once with NULL (error -ECANCELED), so each closure
 * still runs exactly once. -EINVAL bad destination, descriptor or flags. */
int bus_client_new_service_stub(bus_client *c, const char *destination,
                                const ProtobufCServiceDescriptor *descriptor, uint64_t flags,
                                ProtobufCService **ret);
/* How the stub's most recently completed call ended: 0 if it succeeded
 * (*ret untouched); else its errno (as bus_error_to_errno() gives for the
 * error's name, -EREMOTEIO for an application's own; -EBADMSG for a reply
 * that does not decode; -ECANCELED when destroying the stub cancelled it)
 * and, if ret is not NULL, a copy of the error in *ret. -EINVAL if stub is
 * not one of libbus's. */
int bus_service_stub_get_error(ProtobufCService *stub, bus_error *ret);

/* ---- Introspection.
 *
 * Every connection answers the method BUS_METHOD_INTROSPECT (on its unique id
 * and each of its names) with a bus.IntrospectReply (proto/bus.proto): the
 * protobuf services bound with bus_client_bind_service() on the name asked
 * (or on any), the payload types it publishes with their topics, and a
 * google.protobuf.FileDescriptorSet describing all of them, built from the
 * protoc-c descriptors, so tools such as busdctl can decode its messages and
 * call its methods. Types are added by binding a service, by
 * bus_client_add_type(), and by sending (bus_client_send(), the calls to
 * anyone but "bus", and the publish and reply shorthands) a message filled with
 * bus_message_set_protobuf(): a publish records its topic with the type,
 * for the first 256 topics. Types stay once added, also after unbinding. A
 * fresh connection answers with an empty reply. This answer is built in: a
 * handler added with bus_client_add_method() for exactly this method
 * replaces it, handlers for any method and bound services do not. The
 * broker answers it too, for "bus". */
#define BUS_METHOD_INTROSPECT "bus.Introspect"

/* Announces that messages of type desc are published on topics matching
 * pattern (NULL: no particular topic). Adding one twice is not an error.
 * -EINVAL bad pattern or not a message descriptor. */
int bus_client_add_type(bus_client *c, const char *pattern, const ProtobufCMessageDescriptor *desc);

/* ---- Monitoring.
 *
 * A monitor receives a copy of the bus's traffic: publishes, requests,
 * replies, errors and broker events, each with the broker's stamps. Only
 * root and the broker's own user may monitor. A monitor may send nothing
 * more: the broker drops its names and subscriptions (and libbus its
 * subscription slots), its pending calls fail with bus.Error.Disconnected
 * (dispatched by bus_client_process()), and every later send, call,
 * subscribe, name request, reply or bus_client_flush() fails with -EPERM.
 * Every message it receives goes to the monitor handler, never to
 * subscriptions, method handlers or calls; a copy carries the original's
 * envelope (sender, kind, topic, destination, serials...) and payload, but
 * none of its descriptors, except a shared-memory payload, which reads as
 * usual. */

/* Makes this connection a monitor; blocks for the broker's answer. Filters
 * (each a NULL-terminated array, or NULL for none): topics, topic patterns
 * a PUBLISH must match; names, unique ids, well-known names or "bus" (the
 * broker) that a message must come from or go to (a well-known name matches
 * a request sent to it and any message from or to the connection owning it
 * at the time; for a publish, "to" means any connection it was routed to);
 * kinds, a 0-terminated array of BUS_KIND_* to copy (NULL: all). With
 * neither topics nor names every message (of the kinds) is copied;
 * otherwise one that matches a topic or a name. Each copy goes to handler.
 * -EACCES not allowed, -EINVAL bad filter, -EBUSY already a monitor,
 * -ETIMEDOUT, -ECONNRESET. */
int bus_client_become_monitor(bus_client *c, const char *const *topics,
                              const char *const *names, const int *kinds,
                              bus_message_handler_t handler, void *userdata);
/* 1 for a monitor copy, 0 for anything else. -EINVAL for NULL. */
int bus_message_is_monitor_copy(bus_message *m);
/* Monitor copies: when the broker routed the original (CLOCK_REALTIME, ns);
 * 0 for other messages. */
uint64_t bus_message_get_timestamp(bus_message *m);
/* Monitor copies of a REQUEST, REPLY or ERROR: unique id of the connection it
 * went to ("bus" for the broker; NULL for a request nobody had the name
 * of), else NULL. */
const char *bus_message_get_monitor_receiver(bus_message *m);
/* Monitor copies of a PUBLISH: how many subscriptions it was delivered to. */
unsigned bus_message_get_monitor_receivers(bus_message *m);
/* Monitor copies: descriptors the original carried (they are not
 * forwarded; a shared-memory payload is, and is not counted). */
unsigned bus_message_get_monitor_n_fds(bus_message *m);

/* ---- Slots: registrations (subscriptions, method handlers, async calls). */

bus_slot *bus_slot_ref(bus_slot *s);
/* Drops a reference; the last one undoes the registration. */
bus_slot *bus_slot_unref(bus_slot *s);
void *bus_slot_get_userdata(bus_slot *s);

#ifdef __cplusplus
}
#endif

#endif /* LIBBUS_BUS_H */
