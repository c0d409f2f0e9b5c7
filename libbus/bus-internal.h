/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Struct definitions shared by the files of libbus (client.c, client-call.c,
 * client-io.c, message.c, message-payload.c, slot.c, error.c, event.c,
 * name-api.c, protobuf.c, service.c, service-stub.c, introspect.c, monitor.c)
 * and nothing else: tools and applications see only the opaque handles of
 * <libbus/bus.h>.
 *
 * Who owns what:
 *  - A bus_client owns its socket, its frame reader and writer, the queue of
 *    received messages not yet dispatched, and its registrations: the pending
 *    calls (a hash by serial plus a min-heap of deadlines), the subscriptions
 *    (a hash by subscription id) and the method handlers (a list). It holds a
 *    reference only on floating slots; a slot the application holds is merely
 *    linked, and unlinks itself on its last unref.
 *  - A slot points back to its client without a reference. When the client
 *    goes away first, every slot is unlinked and its client pointer cleared.
 *  - A received bus_message owns its unpacked envelope, a reference on the
 *    WireChunk its frame was read into (the payload points into it: zero copy)
 *    and the frame's descriptors. A built message owns its envelope strings,
 *    a chunk with its payload, which the writer pins while sending, and
 *    duplicates of the descriptors attached to it. A shared-memory payload is
 *    the last of the message's descriptors, plus the mappings of it that the
 *    message made; the writer holds a reference on the descriptors until
 *    they are sent.
 *  - Messages never reference a client, so there are no reference cycles.
 */
#pragma once

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <libbus/bus.h>

#include "libbus/macro.h"
#include "libbus/sockio.h"
#include "libbus/wire.h"
#include "proto/bus.pb-c.h"

#define container_of(ptr, type, member) \
        ((type *) ((char *) (ptr) - offsetof(type, member)))

#define CLIENT_TIMEOUT_DEFAULT_USEC (25 * BUS_USEC_PER_SEC)
#define CLIENT_TIMEOUT_MAX_USEC (3600 * BUS_USEC_PER_SEC)
#define CLIENT_QUEUE_MAX_BYTES ((size_t) 64 * 1024 * 1024)
#define CLIENT_BATCH_BYTES ((size_t) 64 * 1024)  /* batching: write once this much is queued */
#define CLIENT_READ_BATCH 64u        /* frames read per bus_client_process() */
#define CLIENT_READ_CHUNK (64u * 1024u)
#define BROKER_NAME "bus"

/* ---- An intrusive hash of nodes keyed by uint64_t (call serials,
 * subscription ids). Chained, power-of-two buckets, grows at load 1. */

typedef struct MapNode {
        struct MapNode *next;
        uint64_t key;
} MapNode;

typedef struct U64Map {
        MapNode **buckets;
        size_t n_buckets; /* 0 or a power of two */
        size_t n;
} U64Map;

int u64map_reserve(U64Map *m, size_t n); /* room for n entries in all */
int u64map_put(U64Map *m, MapNode *node); /* key must not be present */
MapNode *u64map_get(const U64Map *m, uint64_t key);
MapNode *u64map_remove(U64Map *m, uint64_t key);
void u64map_done(U64Map *m); /* frees the buckets, not the nodes */

/* ---- Errors (error.c). */

/* Sets *e to copies of name and message (which may be NULL). */
int error_set_strings(bus_error *e, const char *name, const char *message);
/* The errno of an error name; -EREMOTEIO for NULL or an unknown name. */
int error_name_to_errno(const char *name);

/* ---- Pending calls. */

typedef struct PendingCall {
        MapNode node;       /* key: the request's serial */
        uint64_t deadline;  /* CLOCK_MONOTONIC, usec */
        size_t heap_idx;    /* position in the deadline heap; SIZE_MAX if not in it */
        bus_slot *slot;     /* async call: its slot; NULL for a synchronous call */
        bus_message *reply; /* synchronous call: the answer, once it arrived */
        bool linked;        /* in the client's pending map */
} PendingCall;

/* ---- Messages. */

struct bus_message {
        unsigned n_ref;
        int kind;              /* BUS_KIND_* */
        bool sealed;           /* sent or received: read-only */
        bool received;
        bool bad;              /* building failed halfway: -ESTALE */
        bool replied;          /* received REQUEST: a reply was sent */
        Bus__Envelope *env;    /* &local, or the unpacked envelope of a received one */
        Bus__Envelope local;   /* built message: strings malloc'd or protobuf_c_empty_string */
        uint64_t timeout_usec; /* built REQUEST: 0 for the default */
        /* The payload is inline (in chunk) or, when shm, the content of
         * the memfd that is the last of fds. */
        WireChunk *chunk;      /* inline payload bytes (built or received), or NULL */
        const uint8_t *payload; /* into chunk, or shm_rmap; NULL until shm is mapped */
        size_t payload_size;
        int shm_mode;          /* built: BUS_SHM_* */
        bool payload_fixed;    /* built: a payload was set or reserved, shm_mode is final */
        bool payload_lent;     /* bus_message_get_payload() handed out a pointer into chunk */
        bool shm;              /* the payload is the memfd at fds->fds[fds->n - 1] */
        bool shm_sealed;       /* built: its memfd is sealed (sending was tried) */
        bool shm_final;        /* built: the memfd stays, whatever the connection's threshold */
        void *shm_wmap;        /* built: writable mapping from reserve, until sending */
        const void *shm_rmap;  /* read-only mapping, made on first access */
        WireFds *fds;          /* descriptors in wire order (the shm memfd last), or NULL */
        uint64_t fds_taken[(WIRE_FDS_MAX + 63) / 64]; /* taken while fds was shared */
        bus_message *request;  /* built REPLY/ERROR: the request it answers (ref) */
        const ProtobufCMessageDescriptor *payload_desc; /* built: packed by set_protobuf() */
        bus_message *queue_next; /* the client's receive queue */
};

int message_new(bus_message **ret, int kind);
int message_new_from_frame(bus_message **ret, WireFrame *frame);
/* A locally made ERROR answering the call with this serial, as if received. */
int message_new_local_error(bus_message **ret, uint64_t reply_serial, const char *name,
                            const char *format, ...) _printf_(4, 5);
int message_new_error_va(bus_message *request, bus_message **ret, const char *name,
                         const char *format, va_list ap) _printf_(4, 0);
/* Common checks of the setters: 0 if m may still be changed. */
int message_check_writable(bus_message *m);
bool message_is_no_reply(const bus_message *m);

/* message-payload.c */
/* Takes over a received frame's payload and descriptors. */
void message_payload_from_frame(bus_message *m, WireFrame *frame);
/* Releases the payload, its mappings and the descriptors. */
void message_payload_free(bus_message *m);
/* Checks a received message's shared-memory payload (seals, size, layout):
 * 0, or -EBADFD for one that must not be mapped. */
int message_verify_payload(bus_message *m);
/* The payload bytes, mapping a shared-memory payload on first use. */
int message_get_payload(bus_message *m, const void **ret_data, size_t *ret_size);
/* Readies a built message's payload for the wire: moves a BUS_SHM_AUTO
 * payload between heap and memfd as the connection's threshold says, drops
 * the writable mapping and seals the memfd. -EMSGSIZE (before any copy) if
 * it is to go inline and is larger than max_inline. Idempotent, so a failed
 * send can be retried. */
int message_prepare_payload(bus_message *m, size_t shm_threshold, size_t max_inline,
                            unsigned max_fds);
/* Inline payload bytes the frame carries (0 for shared memory). */
static inline size_t message_inline_size(const bus_message *m) {
        return m->shm ? 0 : m->payload_size;
}
DEFINE_CLEANUP(bus_message, bus_message_unref)

static inline bool streq(const char *a, const char *b) {
        return a && b && strcmp(a, b) == 0;
}

/* "" for protobuf's unset strings is NULL to the API. */
static inline const char *str_or_null(const char *s) {
        return s && *s ? s : NULL;
}

/* ---- Slots. */

typedef enum SlotType {
        SLOT_SUBSCRIPTION,
        SLOT_METHOD,
        SLOT_CALL,
} SlotType;

struct bus_slot {
        unsigned n_ref;
        SlotType type;
        bool floating;          /* the client owns the only reference */
        bus_client *client;     /* no reference; NULL once unlinked */
        bus_message_handler_t callback;
        void *userdata;
        void (*destroy)(void *userdata); /* called with userdata when the slot is freed */
        union {
                struct {
                        MapNode node; /* key: subscription id */
                        bool linked;  /* in the client's map */
                        bool acked;   /* the broker may have it: unsubscribe on unlink */
                } sub;
                struct {
                        bus_slot *prev, *next;
                        char *name;   /* NULL: any destination */
                        char *method; /* NULL: any method */
                } method;
                PendingCall call;
        };
};

int slot_new(bus_client *c, SlotType type, bus_message_handler_t callback, void *userdata,
             bool floating, bus_slot **ret);
/* Undoes the registration (without freeing the slot). */
void slot_unlink(bus_slot *s);
/* Drops the client's reference on a floating slot after unlinking it. */
void slot_disconnect(bus_slot *s);
DEFINE_CLEANUP(bus_slot, bus_slot_unref)

/* ---- The client. */

typedef enum ClientState {
        CLIENT_UNCONNECTED,
        CLIENT_HELLO,   /* socket connected, waiting for HelloReply */
        CLIENT_RUNNING,
        CLIENT_CLOSING, /* connection lost: dispatching what was read, then failing calls */
        CLIENT_CLOSED,
} ClientState;

typedef struct sd_event_source sd_event_source;
typedef struct Introspection Introspection;

struct bus_client {
        unsigned n_ref;
        bool freeing;          /* in client_free(): references no longer count */
        bool processing;       /* in bus_client_process(): no nesting */
        ClientState state;
        int fd;
        char *description;
        char *unique_id;
        uint32_t max_envelope; /* the broker's limits, from HelloReply */
        uint32_t max_payload;
        uint32_t max_fds;      /* per frame, a memfd payload included */
        uint64_t serial;       /* last one used */
        uint64_t sub_id;       /* last subscription id used */
        size_t shm_threshold;  /* BUS_SHM_AUTO payloads of this size go to shared memory */
        bool batching;         /* sends only queue, up to CLIENT_BATCH_BYTES */

        WireReader reader;
        WireWriter writer;
        bool read_more;        /* stopped reading before -EAGAIN: frames may be buffered */

        bus_message *rqueue_first, *rqueue_last; /* received, not dispatched */
        size_t rqueue_n;

        U64Map pending;        /* PendingCall by serial, sync and async */
        PendingCall **heap;    /* async calls by deadline */
        size_t heap_n, heap_size;

        U64Map subs;           /* subscription slots by id */
        bus_slot *methods_first, *methods_last;

        bus_log_fn log_fn;
        void *log_userdata;

        bool exit_requested;
        int exit_code;

        bool monitor;          /* monitor.c: receives copies, sends nothing */
        bus_message_handler_t monitor_handler;
        void *monitor_userdata;

        sd_event *event;
        sd_event_source *io_source, *time_source;
        int64_t event_priority;

        Introspection *introspection; /* introspect.c; NULL until a type is added */
};

void client_log(bus_client *c, int priority, const char *format, ...) _printf_(3, 4);
uint64_t now_usec(void);
uint64_t timeout_to_deadline(uint64_t timeout_usec);
uint32_t usec_to_timeout_ms(uint64_t usec);

/* client.c */
int client_check_sending(bus_client *c);
void client_unsubscribe(bus_client *c, bus_slot *s);
void client_dispatch(bus_client *c, bus_message *m);

/* client-call.c */
int client_call(bus_client *c, bus_message *m, uint64_t timeout_usec, bus_error *error,
                bus_message **ret_reply);
void client_pending_remove(bus_client *c, PendingCall *p);
/* Received message: hands a synchronous call its answer, queues the rest. */
void client_enqueue(bus_client *c, bus_message *m);
/* A REPLY or ERROR from the receive queue: to its async call, or dropped. */
void client_dispatch_answer(bus_client *c, bus_message *m);
/* Fires the earliest call timeout if it is due. Returns 1 if it did. */
int client_fire_timeout(bus_client *c, uint64_t now);
/* Fails every pending async call with bus.Error.Disconnected. */
void client_fail_pending(bus_client *c);

/* client-io.c */
int client_queue_message(bus_client *c, bus_message *m);
/* Reads and queues up to max frames (0: until the socket is empty or, with
 * stop, until stop->reply is set). Returns the number of frames read, or
 * -ECONNRESET when the connection is lost. */
int client_read(bus_client *c, unsigned max, PendingCall *stop);
int client_flush_nonblock(bus_client *c);
/* why: NULL when the peer went away, else the protocol error we saw (then
 * nothing more is read from the stream). */
void client_connection_lost(bus_client *c, int error, const char *why);
void client_close(bus_client *c);
bool client_has_work(const bus_client *c);
/* poll() one descriptor until deadline (CLOCK_MONOTONIC usec, UINT64_MAX for
 * ever). 1 when ready, 0 at the deadline, -EINTR. */
int fd_poll(int fd, short events, uint64_t deadline);

/* event.c */
void client_event_closed(bus_client *c);

/* name-api.c */
bus_slot *client_find_method(bus_client *c, const char *destination, const char *method);
void client_methods_unlink(bus_client *c, bus_slot *s);

/* introspect.c */
void client_introspect_free(bus_client *c);
int client_introspect_add_service(bus_client *c, const ProtobufCServiceDescriptor *desc);
/* Adds the type of a message being sent that set_protobuf() filled. */
void client_introspect_sent(bus_client *c, bus_message *m);
/* Answers BUS_METHOD_INTROSPECT. */
void client_introspect_reply(bus_client *c, bus_message *request);

/* service.c: the service bound by a method slot, or NULL if it binds none. */
const ProtobufCServiceDescriptor *service_slot_descriptor(bus_slot *s);

/* monitor.c: dispatches every received message of a monitor. */
void client_monitor_dispatch(bus_client *c, bus_message *m);

/* protobuf.c */
int client_call_broker(bus_client *c, const char *method, const ProtobufCMessage *request,
                       const ProtobufCMessageDescriptor *reply_type, uint64_t timeout_usec,
                       bus_error *error, ProtobufCMessage **ret);
