/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * capture, show and replay: the capture file (tools/busdctl/capture.proto,
 * docs/capture.md) is "BUSDCAP1" followed by length-prefixed CaptureRecords.
 * Descriptor sets are written before the first message that needs them, so
 * show decodes a file without the bus that made it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include "libbus/topic.h"
#include "tools/busdctl/busdctl.h"

#define CAPTURE_MAGIC "BUSDCAP1"
#define CAPTURE_MAGIC_LEN 8
#define CAPTURE_VERSION 1
#define RECORD_MAX ((uint64_t) 256 * 1024 * 1024)

typedef struct Capture {
        FILE *f;
        uint64_t messages;
        int error; /* first write error */
} Capture;

static void write_varint(FILE *f, uint64_t v) {
        do {
                uint8_t b = v & 0x7F;
                v >>= 7;
                fputc(b | (v ? 0x80 : 0), f);
        } while (v);
}

static int write_record(Capture *cap, const Busdctl__CaptureRecord *record) {
        size_t size = busdctl__capture_record__get_packed_size(record);
        _cleanup_free_ uint8_t *buf = malloc(size ? size : 1);

        if (!buf)
                return -ENOMEM;
        busdctl__capture_record__pack(record, buf);
        write_varint(cap->f, size);
        if (fwrite(buf, 1, size, cap->f) != size || ferror(cap->f))
                return cap->error ? cap->error : (cap->error = -EIO);
        return 0;
}

static void write_descriptor_set(const uint8_t *data, size_t size, void *userdata) {
        Busdctl__CaptureRecord record = BUSDCTL__CAPTURE_RECORD__INIT;

        record.record_case = BUSDCTL__CAPTURE_RECORD__RECORD_DESCRIPTOR_SET;
        record.descriptor_set.data = (uint8_t *) data;
        record.descriptor_set.len = size;
        (void) write_record(userdata, &record);
}

static int capture_sink(Ctl *ctl, const Busdctl__CapturedMessage *m, void *userdata) {
        Busdctl__CaptureRecord record = BUSDCTL__CAPTURE_RECORD__INIT;
        Capture *cap = userdata;

        record.record_case = BUSDCTL__CAPTURE_RECORD__RECORD_MESSAGE;
        record.message = (Busdctl__CapturedMessage *) m;
        int r = write_record(cap, &record);
        if (r < 0)
                return r;
        cap->messages++;
        /* A capture may be stopped by any signal: keep the file whole
         * at every message. */
        return fflush(cap->f) == 0 ? 0 : -errno;
}

static uint64_t realtime_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * 1000000000 + (uint64_t) ts.tv_nsec;
}

static int write_header(Ctl *ctl, Capture *cap) {
        _cleanup_(protobuf_c_message_free_unpackedp) ProtobufCMessage *pb = NULL;
        Busdctl__CaptureRecord record = BUSDCTL__CAPTURE_RECORD__INIT;
        Busdctl__CaptureHeader header = BUSDCTL__CAPTURE_HEADER__INIT;
        Bus__GetStatsRequest request = BUS__GET_STATS_REQUEST__INIT;
        Bus__Kind kinds[ELEMENTSOF(ctl->kinds)];
        int r;

        r = ctl_call_broker(ctl, "GetStats", &request.base, &bus__get_stats_reply__descriptor, &pb);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ctl->n_kinds; i++)
                kinds[i] = (Bus__Kind) ctl->kinds[i];
        header.version = CAPTURE_VERSION;
        header.broker_version = ((Bus__GetStatsReply *) pb)->broker_version;
        header.address = (char *) (ctl->address ? ctl->address
                                   : getenv("BUSD_ADDRESS") ? getenv("BUSD_ADDRESS") : "");
        header.started_ns = realtime_ns();
        header.n_topics = ctl->n_topics;
        header.topics = ctl->topics;
        header.n_names = ctl->n_names;
        header.names = ctl->names;
        header.n_kinds = ctl->n_kinds;
        header.kinds = kinds;
        record.record_case = BUSDCTL__CAPTURE_RECORD__RECORD_HEADER;
        record.header = &header;
        if (fwrite(CAPTURE_MAGIC, 1, CAPTURE_MAGIC_LEN, cap->f) != CAPTURE_MAGIC_LEN)
                return -EIO;
        return write_record(cap, &record);
}

int cmd_capture(Ctl *ctl, int argc, char **argv) {
        const char *path = argv[1];
        Capture cap = {};
        bus_client *bus;
        int r, fd;

        /* No file is left behind when there is no bus to capture. */
        r = ctl_bus(ctl, &bus);
        if (r < 0)
                return EXIT_FAILED;
        if (strcmp(path, "-") == 0) {
                if (isatty(STDOUT_FILENO))
                        return ctl_usage_error("not writing a capture to a terminal");
                cap.f = stdout;
                ctl->quiet = true; /* stdout is the file */
        } else {
                /* Traffic may be private: only the owner reads a capture. */
                fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                if (fd < 0)
                        return ctl_error(-errno, "creating %s", path);
                /* also when the file existed with a wider mode */
                if (fchmod(fd, 0600) < 0) {
                        r = ctl_error(-errno, "%s", path);
                        close(fd);
                        return r;
                }
                cap.f = fdopen(fd, "w");
                if (!cap.f) {
                        close(fd);
                        return ctl_error(-errno, "%s", path);
                }
        }

        r = write_header(ctl, &cap);
        if (r < 0) {
                r = ctl_error(r, "writing %s", path);
                goto finish;
        }
        types_watch(ctl->types, write_descriptor_set, &cap);
        r = monitor_run(ctl, capture_sink, &cap);
        types_watch(ctl->types, NULL, NULL);
        if (r == 0 && !ctl->quiet)
                fprintf(stderr, "busdctl: captured %" PRIu64 " message%s to %s\n", cap.messages,
                        cap.messages == 1 ? "" : "s", path);
finish:
        if (cap.f != stdout && fclose(cap.f) != 0 && r == 0)
                r = ctl_error(-errno, "writing %s", path);
        return r;
}

/* ---- Reading a capture: record by record, so a capture of any size is
 * read in the memory of its largest record. */

typedef struct Reader {
        const char *path;
        FILE *f;
        uint64_t offset;
        uint8_t *buf;
        size_t allocated;
} Reader;

/* 0 and *ret; 1 at a clean end of file (before the first byte); -EBADMSG. */
static int read_varint(Reader *rd, uint64_t *ret) {
        uint64_t v = 0;
        for (unsigned shift = 0; shift < 64; shift += 7) {
                int c = getc(rd->f);
                if (c == EOF)
                        return shift == 0 && !ferror(rd->f) ? 1 : -EBADMSG;
                rd->offset++;
                v |= (uint64_t) (c & 0x7F) << shift;
                if (!(c & 0x80)) {
                        *ret = v;
                        return 0;
                }
        }
        return -EBADMSG;
}

/* The next record: 1 and *ret, 0 at the end, -EBADMSG for a truncated or
 * corrupt record (what came before it stays good). */
static int reader_next(Reader *rd, Busdctl__CaptureRecord **ret) {
        uint64_t start = rd->offset, len;
        int r;

        r = read_varint(rd, &len);
        if (r == 1)
                return 0;
        if (r < 0 || len > RECORD_MAX) {
                ctl_error(0, "%s: record at byte %" PRIu64 " is truncated or corrupt", rd->path,
                          start);
                return -EBADMSG;
        }
        if (len > rd->allocated) {
                uint8_t *p = realloc(rd->buf, len);
                if (!p)
                        return ctl_error(-ENOMEM, "%s", rd->path), -ENOMEM;
                rd->buf = p;
                rd->allocated = len;
        }
        if (fread(rd->buf, 1, len, rd->f) != len) {
                ctl_error(0, "%s: record at byte %" PRIu64 " is truncated", rd->path, start);
                return -EBADMSG;
        }
        rd->offset += len;
        *ret = busdctl__capture_record__unpack(NULL, len, rd->buf);
        if (!*ret) {
                ctl_error(0, "%s: record at byte %" PRIu64 " does not decode", rd->path, start);
                return -EBADMSG;
        }
        return 1;
}

static int reader_open(Reader *rd, const char *path) {
        char magic[CAPTURE_MAGIC_LEN];

        rd->path = path;
        rd->f = strcmp(path, "-") == 0 ? stdin : fopen(path, "re");
        if (!rd->f)
                return ctl_error(-errno, "reading %s", path), -errno;
        if (fread(magic, 1, sizeof(magic), rd->f) != sizeof(magic) ||
            memcmp(magic, CAPTURE_MAGIC, CAPTURE_MAGIC_LEN) != 0) {
                ctl_error(0, "%s is not a busdctl capture file", path);
                return -EBADMSG;
        }
        rd->offset = CAPTURE_MAGIC_LEN;
        return 0;
}

static void reader_close(Reader *rd) {
        if (rd->f && rd->f != stdin)
                fclose(rd->f);
        free(rd->buf);
}

static void print_header(Ctl *ctl, const Busdctl__CaptureHeader *h) {
        _cleanup_free_ char *ts = format_timestamp(h->started_ns);

        if (ctl->json)
                return;
        printf("# capture of %s (busd %s), started %s\n", *h->address ? h->address : "the bus",
               h->broker_version, ts ? ts : "-");
}

/* Walks a capture: descriptor sets to the registry, messages passing the
 * filters to fn. Returns 0, EXIT_* after an error was reported. */
static int capture_walk(Ctl *ctl, const char *path,
                        int (*fn)(Ctl *ctl, const Busdctl__CapturedMessage *m, void *userdata),
                        void (*header_fn)(Ctl *ctl, const Busdctl__CaptureHeader *h),
                        void *userdata) {
        Reader rd = {};
        int r;

        r = reader_open(&rd, path);
        if (r < 0)
                goto finish;
        for (;;) {
                Busdctl__CaptureRecord *record = NULL;
                r = reader_next(&rd, &record);
                if (r <= 0)
                        break;
                switch (record->record_case) {
                case BUSDCTL__CAPTURE_RECORD__RECORD_HEADER:
                        if (header_fn)
                                header_fn(ctl, record->header);
                        break;
                case BUSDCTL__CAPTURE_RECORD__RECORD_DESCRIPTOR_SET:
                        /* A set that does not decode leaves its messages
                         * undecoded, shown as raw: not a reason to stop. */
                        (void) types_add_set(ctl->types, record->descriptor_set.data,
                                             record->descriptor_set.len);
                        break;
                case BUSDCTL__CAPTURE_RECORD__RECORD_MESSAGE:
                        if (filters_match(ctl, record->message))
                                r = fn(ctl, record->message, userdata);
                        break;
                default:
                        break; /* a later version's record */
                }
                busdctl__capture_record__free_unpacked(record, NULL);
                if (r < 0)
                        break;
        }
finish:
        reader_close(&rd);
        if (r == -EINTR)
                return 0; /* a signal: stop quietly, like sub and monitor */
        return r < 0 ? EXIT_FAILED : 0;
}

static int show_message(Ctl *ctl, const Busdctl__CapturedMessage *m, void *userdata) {
        return message_output(ctl, m);
}

int cmd_show(Ctl *ctl, int argc, char **argv) {
        return capture_walk(ctl, argv[1], show_message, print_header, NULL);
}

typedef struct Replay {
        bus_client *bus;
        uint64_t sent, skipped;
        uint64_t last_ns;
} Replay;

static void replay_pace(Replay *rp, uint64_t ns) {
        if (rp->last_ns && ns > rp->last_ns) {
                uint64_t d = MIN(ns - rp->last_ns, (uint64_t) 60 * 1000000000);
                struct timespec ts = { (time_t) (d / 1000000000), (long) (d % 1000000000) };
                (void) bus_client_flush(rp->bus);
                while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !signals_caught())
                        ;
        }
        rp->last_ns = ns;
}

/* Publishes and requests are sent again (requests without asking for a
 * reply: it would go to their original caller); replies, errors and the
 * broker's events answer or describe traffic that is not repeated, and
 * calls to the broker and of the standard bus.* methods (introspection
 * lookups, most likely by busdctl itself) are the tools' own traffic. */
static int replay_message(Ctl *ctl, const Busdctl__CapturedMessage *m, void *userdata) {
        _cleanup_(bus_message_unrefp) bus_message *msg = NULL;
        Replay *rp = userdata;
        int r;

        if (signals_caught())
                return -EINTR;
        if (m->kind == BUS__KIND__KIND_PUBLISH && !topic_is_reserved(m->topic, strlen(m->topic)))
                r = bus_message_new_publish(&msg, m->topic);
        else if (m->kind == BUS__KIND__KIND_REQUEST && strcmp(m->destination, "bus") != 0 &&
                 strncmp(m->method, "bus.", 4) != 0) {
                r = bus_message_new_request(&msg, m->destination, m->method);
                if (r >= 0)
                        r = bus_message_set_no_reply(msg, 1);
        } else {
                rp->skipped++;
                return 0;
        }
        if (r >= 0)
                r = bus_message_set_payload(msg, m->payload.data, m->payload.len);
        if (r >= 0 && *m->payload_type)
                r = bus_message_set_payload_type(msg, m->payload_type);
        if (r >= 0 && m->retain)
                r = bus_message_set_retain(msg, 1);
        if (r < 0) {
                /* a record no client could have sent: skip it, loudly */
                ctl_error(r, "skipping a %s message that cannot be sent again",
                          ctl_kind_to_string((int) m->kind));
                rp->skipped++;
                return 0;
        }
        if (ctl->realtime)
                replay_pace(rp, m->timestamp_ns);
        r = bus_client_send(rp->bus, msg, NULL);
        if (r == -ENOBUFS) {
                r = bus_client_flush(rp->bus);
                if (r >= 0)
                        r = bus_client_send(rp->bus, msg, NULL);
        }
        if (r < 0)
                return ctl_error(r, "sending"), r;
        rp->sent++;
        return 0;
}

int cmd_replay(Ctl *ctl, int argc, char **argv) {
        Replay rp = {};
        int r;

        r = ctl_bus(ctl, &rp.bus);
        if (r < 0)
                return EXIT_FAILED;
        signals_catch();
        r = capture_walk(ctl, argv[1], replay_message, NULL, &rp);
        int k = bus_client_flush(rp.bus);
        if (k < 0 && r == 0)
                r = ctl_error(k, "sending");
        if (ctl->json) {
                _cleanup_(json_object_putp) json_object *o = json_object_new_object();
                json_object_object_add(o, "replayed", json_object_new_uint64(rp.sent));
                json_object_object_add(o, "skipped", json_object_new_uint64(rp.skipped));
                json_print(ctl, o, false);
        } else if (!ctl->quiet)
                printf("Replayed %" PRIu64 " message%s; skipped %" PRIu64
                       " (replies, errors, broker events and bus calls are not sent again).\n",
                       rp.sent, rp.sent == 1 ? "" : "s", rp.skipped);
        return r;
}
