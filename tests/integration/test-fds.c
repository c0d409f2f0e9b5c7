/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Integration test: file descriptors carried by messages through a real
 * busd, between separate processes. A pipe end on a publish, on a request
 * and on a reply; a connected socket used both ways; several descriptors on
 * one message (order, counting, get/take semantics); fan-out to plain
 * subscribers and a queue group; a retained message's descriptor, kept alive
 * by the broker until the message is replaced; the per-frame descriptor
 * limit (libbus refuses to send past the limit the broker announced, and a
 * raw frame past it is a protocol error); the per-connection limit on queued
 * descriptors (drops, and a bounded broker); and 10,000 descriptors through
 * the bus with every process's descriptor count back at its baseline
 * afterwards.
 *
 * What a receiver does with a descriptor is checked where it shows: at the
 * other end of the pipe or socket. Reading a pipe to end-of-file proves
 * that every copy of its write end (the sender's, the message's, the
 * broker's and every receiver's) has been closed; so pipes are made after
 * the children that must not inherit them are forked. Every wait has a
 * deadline and waits on a condition, never on time alone.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <libbus/bus.h>

#include "libbus/wire.h"
#include "proto/bus.pb-c.h"
#include "tests/lib/raw-frame.h"
#include "tests/lib/tap.h"
#include "tests/lib/util-busd.h"

/* Deadline of any one wait: normal runs take milliseconds; this only bounds
 * how long a broken run takes to fail. */
#define WAIT_MS 10000
#define WAIT_USEC ((uint64_t) WAIT_MS * 1000)

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

static TestBusd busd;

/* In a child, where tap_check() would only mark the child's own copy of the
 * case: print a diagnostic and count the failure. */
#define child_check(failures, expr)                                                     \
        do {                                                                            \
                if (!(expr)) {                                                          \
                        printf("# child %d: %s:%d: check failed: %s\n", (int) getpid(), \
                               __FILE__, __LINE__, #expr);                              \
                        (failures)++;                                                   \
                }                                                                       \
        } while (0)

static void close_pair(int p[2]) {
        if (p[0] >= 0)
                close(p[0]);
        if (p[1] >= 0)
                close(p[1]);
        p[0] = p[1] = -1;
}

/* ---- Plain descriptor I/O with deadlines. */

static bool write_all(int fd, const void *data, size_t len) {
        const uint8_t *p = data;

        while (len > 0) {
                ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

                if (n < 0 && errno == ENOTSOCK)
                        n = write(fd, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return false;
                }
                p += n;
                len -= (size_t) n;
        }
        return true;
}



/* Whether a pipe's read end has neither data nor EOF right now: someone
 * still holds a write end. */
static bool pipe_idle(int fd) {
        struct pollfd p = { .fd = fd, .events = POLLIN };

        return poll(&p, 1, 0) == 0;
}

static bool is_fifo(int fd) {
        struct stat st;

        return fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
}

static bool same_file(int a, int b) {
        struct stat sa, sb;

        return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
               sa.st_ino == sb.st_ino;
}

/* ---- libbus helpers. */

/* Processes c until *done, the deadline, or the connection's end. */
/* A publish carrying a copy of each of fds (libbus duplicates them). */
static int publish_fds(bus_client *c, const char *topic, const void *data, size_t size,
                       const int *fds, unsigned n_fds, bool retain) {
        bus_message *m = NULL;
        int r;

        r = bus_message_new_publish(&m, topic);
        if (r >= 0)
                r = bus_message_set_payload(m, data, size);
        for (unsigned i = 0; r >= 0 && i < n_fds; i++)
                r = bus_message_append_fd(m, fds[i]);
        if (r >= 0 && retain)
                r = bus_message_set_retain(m, 1);
        if (r >= 0)
                r = bus_client_send(c, m, NULL);
        bus_message_unref(m);
        return r;
}

/* Waits for the broker to announce that the connection of process pid is
 * gone: after that it has released everything the connection held. */
typedef struct GoneWatch {
        pid_t pid;
        bool done;
} GoneWatch;

static int gone_cb(bus_message *m, void *userdata) {
        GoneWatch *w = userdata;
        Bus__PeerEvent *ev = NULL;

        if (bus_message_read_protobuf(m, &bus__peer_event__descriptor,
                                      (ProtobufCMessage **) &ev) < 0)
                return 0;
        if ((pid_t) ev->pid == w->pid)
                w->done = true;
        bus__peer_event__free_unpacked(ev, NULL);
        return 0;
}

/* ---- Child processes. */

typedef struct Child {
        pid_t pid;
        TestSignal up;   /* child -> parent: 'R' ready, then what the child says */
        TestSignal down; /* parent -> child */
        const char *address;
        int index;
        const void *spec;
} Child;

static void child_close(Child *ch) {
        test_signal_close(&ch->up);
        test_signal_close(&ch->down);
}

static bool child_start(Child *ch, int (*fn)(void *), const char *address, int index,
                        const void *spec) {
        *ch = (Child){ .pid = -1, .up = { { -1, -1 } }, .down = { { -1, -1 } },
                       .address = address, .index = index, .spec = spec };
        if (test_signal_init(&ch->up) < 0 || test_signal_init(&ch->down) < 0) {
                child_close(ch);
                return false;
        }
        ch->pid = test_child_start(fn, ch);
        if (ch->pid < 0) {
                child_close(ch);
                return false;
        }
        /* Only the child posts on up: its death shows as -EPIPE. */
        test_signal_close_write(&ch->up);
        return true;
}

/* Waits for the child's next post; returns the byte, or 0 on failure. */
static char child_wait_up(Child *ch) {
        char c = 0;
        int r;

        if (ch->pid <= 0)
                return 0;
        r = test_signal_wait(&ch->up, WAIT_MS, &c);
        if (r < 0) {
                tap_diag("child %d did not report: %s", (int) ch->pid, strerror(-r));
                return 0;
        }
        return c;
}

/* Reaps the child and closes its barriers: its exit status. */
static int child_finish(Child *ch) {
        int r = ch->pid > 0 ? test_child_wait(ch->pid, WAIT_MS) : -ESRCH;

        child_close(ch);
        ch->pid = -1;
        return r;
}

/* A receiving child's state. */
typedef struct Rx {
        Child *ch;
        bus_client *c;
        int failures;
        unsigned received;
        unsigned expected;
        bool done;
} Rx;

/* Connects, subscribes pattern (in queue_group if not NULL) and, if
 * end_topic is set, end_topic, whose message ends rx_run(). */
static int rx_setup(Rx *rx, Child *ch, const char *pattern, const char *queue_group,
                    bus_message_handler_t cb, const char *end_topic, bus_message_handler_t end_cb) {
        int r;

        *rx = (Rx){ .ch = ch };
        r = bus_client_open(&rx->c, ch->address);
        if (r >= 0)
                r = bus_client_subscribe(rx->c, NULL, pattern, queue_group, 0, cb, rx);
        if (r >= 0 && end_topic)
                r = bus_client_subscribe(rx->c, NULL, end_topic, NULL, 0, end_cb, rx);
        if (r < 0) {
                printf("# child %d: cannot subscribe %s: %s\n", (int) getpid(), pattern,
                       strerror(-r));
                bus_client_unref(rx->c);
                rx->c = NULL;
                return r;
        }
        return 0;
}

static int rx_end_cb(bus_message *m, void *userdata) {
        Rx *rx = userdata;

        rx->done = true;
        return 0;
}

/* Dispatches until done; returns the child's exit code. */
static int rx_run(Rx *rx) {
        int r = test_run_until(rx->c, &rx->done, WAIT_MS);

        child_check(rx->failures, r == 0);
        if (r < 0)
                printf("# child %d: waiting for messages: %s\n", (int) getpid(), strerror(-r));
        bus_client_unref(rx->c);
        rx->c = NULL;
        return rx->failures ? 1 : 0;
}

/* ---- A pipe's write end on a publish, between two children. */

#define PIPE_TOPIC "fds.pipe.hello"

static void hello_text(char *buf, size_t size, pid_t pid) {
        snprintf(buf, size, "hello through a pipe from process %d", (int) pid);
}

static int pipe_rx_cb(bus_message *m, void *userdata) {
        Rx *rx = userdata;
        char text[128];
        int fd;

        rx->received++;
        child_check(rx->failures, bus_message_get_n_fds(m) == 1);
        fd = bus_message_get_fd(m, 0);
        child_check(rx->failures, fd >= 3);
        if (fd >= 0) {
                child_check(rx->failures, is_fifo(fd));
                /* Close-on-exec, as documented. */
                child_check(rx->failures, fcntl(fd, F_GETFD) == FD_CLOEXEC);
                hello_text(text, sizeof(text), getpid());
                child_check(rx->failures, write_all(fd, text, strlen(text)));
        }
        rx->done = true;
        return 0;
}

static int pipe_subscriber_main(void *arg) {
        Child *ch = arg;
        Rx rx;

        if (rx_setup(&rx, ch, PIPE_TOPIC, NULL, pipe_rx_cb, NULL, NULL) < 0)
                return 1;
        test_signal_post(&ch->up, 'R');
        return rx_run(&rx);
}

/* The publisher: sends the write end, then reads what the subscriber wrote,
 * up to EOF (all copies of the write end closed). spec: the subscriber's
 * pid. */
static int pipe_publisher_main(void *arg) {
        Child *ch = arg;
        pid_t subscriber = *(const pid_t *) ch->spec;
        bus_client *c = NULL;
        char expected[128], got[256];
        int p[2] = { -1, -1 }, failures = 0, r;
        ssize_t n;

        hello_text(expected, sizeof(expected), subscriber);
        r = bus_client_open(&c, ch->address);
        child_check(failures, r >= 0);
        child_check(failures, pipe2(p, O_CLOEXEC) == 0);
        if (failures)
                goto finish;
        child_check(failures, publish_fds(c, PIPE_TOPIC, "p", 1, &p[1], 1, false) >= 0);
        child_check(failures, bus_client_flush(c) >= 0);
        close(p[1]);
        p[1] = -1;
        n = test_read_to_eof(p[0], got, sizeof(got) - 1, WAIT_MS);
        child_check(failures, n == (ssize_t) strlen(expected));
        if (n >= 0) {
                got[n] = '\0';
                child_check(failures, strcmp(got, expected) == 0);
                if (strcmp(got, expected) != 0)
                        printf("# publisher read \"%s\", expected \"%s\"\n", got, expected);
        } else
                printf("# publisher: reading the pipe: %s\n", strerror((int) -n));
finish:
        close_pair(p);
        bus_client_unref(c);
        return failures ? 1 : 0;
}

static void test_pipe_on_publish(void) {
        Child sub, pub;

        if (!tap_check(child_start(&sub, pipe_subscriber_main, busd.address, 0, NULL)))
                return;
        tap_check(child_wait_up(&sub) == 'R');
        tap_check(child_start(&pub, pipe_publisher_main, busd.address, 0, &sub.pid));
        tap_check_int(child_finish(&pub), 0);
        tap_check_int(child_finish(&sub), 0);
}

/* ---- A service child: descriptors on requests and replies. */

#define SERVICE_NAME "org.example.Fds"
#define WRITE_INTO_TEXT "written by the service into the caller's pipe"
#define GIVE_PIPE_TEXT "sent by the service through its own pipe"

typedef struct Service {
        Child ch; /* first: the child gets &ch, which is the Service */
        bus_client *c;
} Service;

/* WriteInto: writes into the request's one descriptor. */
static int svc_write_into(bus_message *m, void *userdata) {
        Service *svc = userdata;
        int fd;

        if (bus_message_get_n_fds(m) != 1)
                return bus_client_reply_error(svc->c, m, "org.example.Error.Fds",
                                              "%d descriptors, expected 1",
                                              bus_message_get_n_fds(m));
        fd = bus_message_get_fd(m, 0);
        if (fd < 0 || !is_fifo(fd) || !write_all(fd, WRITE_INTO_TEXT, strlen(WRITE_INTO_TEXT)))
                return bus_client_reply_error(svc->c, m, "org.example.Error.Fds",
                                              "cannot write into descriptor %d", fd);
        return bus_client_reply(svc->c, m, NULL, 0);
}

/* GivePipe: answers with the read end of a pipe of its own that holds a
 * text; the service closes its ends right away. */
static int svc_give_pipe(bus_message *m, void *userdata) {
        Service *svc = userdata;
        bus_message *reply = NULL;
        int p[2], r;

        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        if (!write_all(p[1], GIVE_PIPE_TEXT, strlen(GIVE_PIPE_TEXT))) {
                close_pair(p);
                return -EIO;
        }
        r = bus_message_new_reply(m, &reply);
        if (r >= 0)
                r = bus_message_append_fd(reply, p[0]);
        close_pair(p);
        if (r >= 0)
                r = bus_client_send(svc->c, reply, NULL);
        bus_message_unref(reply);
        return r;
}

/* CountFds: how many descriptors came, and how many of them are open,
 * distinct and close-on-exec. */
static int svc_count_fds(bus_message *m, void *userdata) {
        Service *svc = userdata;
        uint32_t answer[2] = { 0, 0 };
        int n = bus_message_get_n_fds(m);

        answer[0] = n < 0 ? 0 : (uint32_t) n;
        for (int i = 0; i < n; i++) {
                int fd = bus_message_get_fd(m, (unsigned) i);
                bool distinct = true;

                for (int j = 0; j < i; j++)
                        distinct = distinct && bus_message_get_fd(m, (unsigned) j) != fd;
                if (fd >= 3 && distinct && fcntl(fd, F_GETFD) == FD_CLOEXEC)
                        answer[1]++;
        }
        return bus_client_reply(svc->c, m, answer, sizeof(answer));
}

static int svc_quit(bus_message *m, void *userdata) {
        Service *svc = userdata;
        int r = bus_client_reply(svc->c, m, NULL, 0);

        (void) bus_client_exit(svc->c, 0);
        return r;
}

static int service_main(void *arg) {
        static const struct {
                const char *method;
                bus_message_handler_t fn;
        } methods[] = {
                { "WriteInto", svc_write_into },
                { "GivePipe", svc_give_pipe },
                { "CountFds", svc_count_fds },
                { "Quit", svc_quit },
        };
        Service *svc = arg;
        int r;

        r = bus_client_open(&svc->c, svc->ch.address);
        if (r >= 0) {
                r = bus_client_request_name(svc->c, SERVICE_NAME, 0);
                if (r >= 0 && r != BUS_NAME_PRIMARY_OWNER)
                        r = -EADDRINUSE;
        }
        for (size_t i = 0; r >= 0 && i < N_ELEMENTS(methods); i++)
                r = bus_client_add_method(svc->c, NULL, NULL, methods[i].method, methods[i].fn,
                                          svc);
        if (r < 0) {
                printf("# service: cannot start: %s\n", strerror(-r));
                bus_client_unref(svc->c);
                return 1;
        }
        test_signal_post(&svc->ch.up, 'R');
        r = bus_client_run(svc->c);
        if (r >= 0)
                (void) bus_client_flush(svc->c);
        else
                printf("# service: bus_client_run: %s\n", strerror(-r));
        bus_client_unref(svc->c);
        return r < 0 ? 1 : 0;
}

static bool service_start(Service *svc, const char *address) {
        *svc = (Service){};
        if (!child_start(&svc->ch, service_main, address, 0, NULL))
                return false;
        if (child_wait_up(&svc->ch) != 'R') {
                tap_diag("the service did not start");
                return false;
        }
        return true;
}

/* Asks the service to quit through c (killed if that fails); whether it
 * exited cleanly. */
static bool service_stop(Service *svc, bus_client *c) {
        bus_error e = BUS_ERROR_NULL;
        int r = -ENOTCONN;

        if (svc->ch.pid <= 0)
                return false;
        if (c)
                r = bus_client_call_method(c, SERVICE_NAME, "Quit", NULL, 0, WAIT_USEC, &e, NULL);
        if (r < 0) {
                tap_diag("cannot ask the service to quit: %s: %s", e.name ?: strerror(-r),
                         e.message ?: "");
                (void) kill(svc->ch.pid, SIGKILL);
        }
        bus_error_free(&e);
        return child_finish(&svc->ch) == 0 && r >= 0;
}

static void test_fd_on_request_and_reply(void) {
        Service svc;
        bus_client *c = NULL;
        bus_message *m = NULL, *reply = NULL;
        bus_error e = BUS_ERROR_NULL;
        int p[2] = { -1, -1 }, fd, r;
        char buf[256];
        ssize_t n;

        if (!tap_check(service_start(&svc, busd.address)))
                goto finish;
        tap_check(bus_client_open(&c, busd.address) >= 0);
        if (!c)
                goto finish;

        /* On a request: the caller's pipe, which the service writes into. */
        tap_check(pipe2(p, O_CLOEXEC) == 0);
        tap_check(bus_message_new_request(&m, SERVICE_NAME, "WriteInto") >= 0);
        tap_check_int(bus_message_append_fd(m, p[1]), 0);
        close(p[1]);
        p[1] = -1;
        r = bus_client_call(c, m, WAIT_USEC, &e, &reply);
        if (!tap_check_int(r, 0))
                tap_diag("WriteInto: %s: %s", e.name ?: "", e.message ?: "");
        bus_error_free(&e);
        bus_message_unref(reply);
        reply = NULL;
        bus_message_unref(m);
        m = NULL;
        n = test_read_to_eof(p[0], buf, sizeof(buf), WAIT_MS);
        if (tap_check_int(n, strlen(WRITE_INTO_TEXT)))
                tap_check(memcmp(buf, WRITE_INTO_TEXT, (size_t) n) == 0);
        close_pair(p);

        /* On a reply: the read end of the service's own pipe. */
        r = bus_client_call_method(c, SERVICE_NAME, "GivePipe", NULL, 0, WAIT_USEC, &e, &reply);
        if (!tap_check_int(r, 0))
                tap_diag("GivePipe: %s: %s", e.name ?: "", e.message ?: "");
        bus_error_free(&e);
        if (reply) {
                tap_check_int(bus_message_get_n_fds(reply), 1);
                fd = bus_message_take_fd(reply, 0);
                tap_check(fd >= 3);
                tap_check_int(bus_message_get_fd(reply, 0), -ENXIO);
                /* Taken: it outlives the reply. */
                bus_message_unref(reply);
                reply = NULL;
                if (fd >= 0) {
                        tap_check(is_fifo(fd));
                        n = test_read_to_eof(fd, buf, sizeof(buf), WAIT_MS);
                        if (tap_check_int(n, strlen(GIVE_PIPE_TEXT)))
                                tap_check(memcmp(buf, GIVE_PIPE_TEXT, (size_t) n) == 0);
                        close(fd);
                }
        }
finish:
        tap_check(service_stop(&svc, c));
        bus_client_unref(c);
}

/* ---- A connected socket, used both ways. */

#define SOCKET_TOPIC "fds.socket.end"
#define PONG_TEXT "pong from the parent"

static void ping_text(char *buf, size_t size, pid_t pid) {
        snprintf(buf, size, "ping from process %d", (int) pid);
}

static int socket_rx_cb(bus_message *m, void *userdata) {
        Rx *rx = userdata;
        struct ucred cred = {};
        socklen_t len = sizeof(cred);
        int fd, type = 0;
        char text[128], pong[sizeof(PONG_TEXT) - 1];

        rx->done = true;
        child_check(rx->failures, bus_message_get_n_fds(m) == 1);
        fd = bus_message_take_fd(m, 0);
        child_check(rx->failures, fd >= 3);
        if (fd < 0)
                return 0;
        child_check(rx->failures, bus_message_get_fd(m, 0) == -ENXIO);
        child_check(rx->failures, bus_message_take_fd(m, 0) == -ENXIO);
        len = sizeof(type);
        child_check(rx->failures, getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 &&
                                          type == SOCK_STREAM);
        /* The pair was made by the parent: the peer is the parent. */
        len = sizeof(cred);
        child_check(rx->failures, getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
                                          cred.pid == getppid());
        ping_text(text, sizeof(text), getpid());
        child_check(rx->failures, write_all(fd, text, strlen(text)));
        child_check(rx->failures, test_read_exact(fd, pong, sizeof(pong), WAIT_MS) == 0 &&
                                          memcmp(pong, PONG_TEXT, sizeof(pong)) == 0);
        close(fd);
        return 0;
}

static int socket_subscriber_main(void *arg) {
        Child *ch = arg;
        Rx rx;

        if (rx_setup(&rx, ch, SOCKET_TOPIC, NULL, socket_rx_cb, NULL, NULL) < 0)
                return 1;
        test_signal_post(&ch->up, 'R');
        return rx_run(&rx);
}

static void test_socket_both_ways(void) {
        Child sub;
        bus_client *c = NULL;
        int sv[2] = { -1, -1 };
        char expected[128], got[128];
        ssize_t n;

        if (!tap_check(child_start(&sub, socket_subscriber_main, busd.address, 0, NULL)))
                return;
        tap_check(child_wait_up(&sub) == 'R');
        tap_check(bus_client_open(&c, busd.address) >= 0);
        tap_check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        if (c && sv[0] >= 0) {
                tap_check(publish_fds(c, SOCKET_TOPIC, NULL, 0, &sv[1], 1, false) >= 0);
                tap_check(bus_client_flush(c) >= 0);
                close(sv[1]);
                sv[1] = -1;

                ping_text(expected, sizeof(expected), sub.pid);
                memset(got, 0, sizeof(got));
                if (!tap_check_int(test_read_exact(sv[0], got, strlen(expected), WAIT_MS), 0) ||
                    !tap_check(memcmp(got, expected, strlen(expected)) == 0))
                        tap_diag("read \"%s\", expected \"%s\"", got, expected);
                tap_check(write_all(sv[0], PONG_TEXT, strlen(PONG_TEXT)));
                /* End of file once the child closed its end, and nobody
                 * else (libbus, the broker) still holds one. */
                n = test_read_to_eof(sv[0], got, sizeof(got), WAIT_MS);
                tap_check_int(n, 0);
        }
        tap_check_int(child_finish(&sub), 0);
        close_pair(sv);
        bus_client_unref(c);
}

/* ---- Several descriptors on one message. */

#define SEVERAL_TOPIC "fds.several.five"
#define SEVERAL_N 5
#define SEVERAL_TAKEN 2

static void several_text(char *buf, size_t size, unsigned index) {
        snprintf(buf, size, "descriptor #%u", index);
}

static int several_rx_cb(bus_message *m, void *userdata) {
        Rx *rx = userdata;
        int taken, fd;
        char text[64];

        rx->done = true;
        child_check(rx->failures, bus_message_get_n_fds(m) == SEVERAL_N);
        child_check(rx->failures, bus_message_is_shm(m) == 0);
        /* get_fd lends: the same descriptor each time. */
        child_check(rx->failures, bus_message_get_fd(m, 0) >= 3 &&
                                          bus_message_get_fd(m, 0) == bus_message_get_fd(m, 0));
        child_check(rx->failures, bus_message_get_fd(m, SEVERAL_N) == -ENXIO);
        child_check(rx->failures, bus_message_take_fd(m, SEVERAL_N) == -ENXIO);

        /* take_fd hands one over, once. */
        taken = bus_message_take_fd(m, SEVERAL_TAKEN);
        child_check(rx->failures, taken >= 3);
        child_check(rx->failures, bus_message_get_fd(m, SEVERAL_TAKEN) == -ENXIO);
        child_check(rx->failures, bus_message_take_fd(m, SEVERAL_TAKEN) == -ENXIO);
        /* The others are unaffected. */
        child_check(rx->failures, bus_message_get_n_fds(m) == SEVERAL_N);

        for (unsigned i = 0; i < SEVERAL_N; i++) {
                fd = i == SEVERAL_TAKEN ? taken : bus_message_get_fd(m, i);
                child_check(rx->failures, fd >= 3 && is_fifo(fd));
                several_text(text, sizeof(text), i);
                if (fd >= 0)
                        child_check(rx->failures, write_all(fd, text, strlen(text)));
        }
        if (taken >= 0)
                close(taken);
        return 0;
}

static int several_subscriber_main(void *arg) {
        Child *ch = arg;
        Rx rx;

        if (rx_setup(&rx, ch, SEVERAL_TOPIC, NULL, several_rx_cb, NULL, NULL) < 0)
                return 1;
        test_signal_post(&ch->up, 'R');
        return rx_run(&rx);
}

static void test_several_fds(void) {
        Child sub;
        bus_client *c = NULL;
        bus_message *m = NULL;
        int p[SEVERAL_N][2], dup_fd;
        char expected[64], got[64];
        ssize_t n;

        for (unsigned i = 0; i < SEVERAL_N; i++)
                p[i][0] = p[i][1] = -1;
        if (!tap_check(child_start(&sub, several_subscriber_main, busd.address, 0, NULL)))
                goto finish;
        tap_check(child_wait_up(&sub) == 'R');
        /* After the fork: the child must hold only what it receives. */
        for (unsigned i = 0; i < SEVERAL_N; i++)
                assert(pipe2(p[i], O_CLOEXEC) == 0);
        tap_check(bus_client_open(&c, busd.address) >= 0);
        if (!c)
                goto finish;

        assert(bus_message_new_publish(&m, SEVERAL_TOPIC) >= 0);
        tap_check_int(bus_message_get_n_fds(m), 0);
        tap_check_int(bus_message_get_fd(m, 0), -ENXIO);
        for (unsigned i = 0; i < SEVERAL_N; i++)
                tap_check_int(bus_message_append_fd(m, p[i][1]), i);
        tap_check_int(bus_message_append_fd(m, -1), -EBADF);
        tap_check_int(bus_message_get_n_fds(m), SEVERAL_N);
        for (unsigned i = 0; i < SEVERAL_N; i++) {
                int fd = bus_message_get_fd(m, i);

                /* A duplicate, close-on-exec, above the standard streams;
                 * the caller's own descriptor stays open. */
                tap_check(fd >= 3 && fd != p[i][1]);
                tap_check(same_file(fd, p[i][1]));
                tap_check(fcntl(fd, F_GETFD) == FD_CLOEXEC);
                tap_check(fcntl(p[i][1], F_GETFD) >= 0);
        }
        tap_check_int(bus_message_get_fd(m, SEVERAL_N), -ENXIO);
        /* Nothing can be taken out of a message being built. */
        tap_check_int(bus_message_take_fd(m, 0), -EPERM);
        tap_check_int(bus_message_get_n_fds(m), SEVERAL_N);

        tap_check(bus_client_send(c, m, NULL) >= 0);
        tap_check_int(bus_message_append_fd(m, p[0][1]), -EPERM);
        /* From a sent message: the caller gets a descriptor of its own for
         * the same pipe, once. */
        dup_fd = bus_message_take_fd(m, 0);
        tap_check(dup_fd >= 3 && same_file(dup_fd, p[0][1]));
        tap_check_int(bus_message_get_fd(m, 0), -ENXIO);
        tap_check_int(bus_message_take_fd(m, 0), -ENXIO);
        if (dup_fd >= 0)
                close(dup_fd);
        tap_check(bus_client_flush(c) >= 0);
        bus_message_unref(m);
        m = NULL;

        /* The caller's descriptors are still its own. */
        for (unsigned i = 0; i < SEVERAL_N; i++) {
                tap_check(fcntl(p[i][1], F_GETFD) >= 0);
                close(p[i][1]);
                p[i][1] = -1;
        }
        for (unsigned i = 0; i < SEVERAL_N; i++) {
                several_text(expected, sizeof(expected), i);
                n = test_read_to_eof(p[i][0], got, sizeof(got), WAIT_MS);
                if (!tap_check_int(n, strlen(expected)) ||
                    !tap_check(memcmp(got, expected, (size_t) n) == 0))
                        tap_diag("pipe %u: read %.*s, expected %s", i, (int) (n > 0 ? n : 0), got,
                                 expected);
        }
finish:
        if (sub.pid > 0)
                tap_check_int(child_finish(&sub), 0);
        bus_message_unref(m);
        bus_client_unref(c);
        for (unsigned i = 0; i < SEVERAL_N; i++)
                close_pair(p[i]);
}

/* ---- Fan-out: plain subscribers and a queue group. */

#define FAN_DATA "fds.fan.data"
#define FAN_END "fds.fan.end"
#define FAN_PLAIN 3
#define FAN_GROUP 2
#define FAN_CHILDREN (FAN_PLAIN + FAN_GROUP)
#define FAN_MESSAGES 4

typedef struct FanRecord {
        uint8_t child;
        uint8_t is_group;
        uint16_t seq;
} FanRecord;

static int fan_rx_cb(bus_message *m, void *userdata) {
        Rx *rx = userdata;
        FanRecord rec = { .child = (uint8_t) rx->ch->index, .is_group = rx->ch->spec != NULL };
        const void *data;
        size_t size;
        uint32_t seq = UINT32_MAX;
        int fd;

        if (bus_message_get_payload(m, &data, &size) >= 0 && size == sizeof(seq))
                memcpy(&seq, data, sizeof(seq));
        child_check(rx->failures, seq < FAN_MESSAGES);
        rec.seq = (uint16_t) seq;
        child_check(rx->failures, bus_message_get_n_fds(m) == 1);
        fd = bus_message_get_fd(m, 0);
        child_check(rx->failures, fd >= 3 && is_fifo(fd));
        if (fd >= 0)
                /* Less than PIPE_BUF: one atomic write. */
                child_check(rx->failures, write_all(fd, &rec, sizeof(rec)));
        return 0;
}

static int fan_subscriber_main(void *arg) {
        Child *ch = arg;
        Rx rx;

        if (rx_setup(&rx, ch, FAN_DATA, ch->spec, fan_rx_cb, FAN_END, rx_end_cb) < 0)
                return 1;
        test_signal_post(&ch->up, 'R');
        return rx_run(&rx);
}

static void test_fan_out(void) {
        Child ch[FAN_CHILDREN];
        bus_client *c = NULL;
        int p[FAN_MESSAGES][2];
        unsigned group_got[FAN_CHILDREN] = {};

        for (int i = 0; i < FAN_CHILDREN; i++) {
                tap_check(child_start(&ch[i], fan_subscriber_main, busd.address, i,
                                      i < FAN_PLAIN ? NULL : "fan-group"));
                tap_check(child_wait_up(&ch[i]) == 'R');
        }
        for (unsigned k = 0; k < FAN_MESSAGES; k++)
                assert(pipe2(p[k], O_CLOEXEC) == 0);
        tap_check(bus_client_open(&c, busd.address) >= 0);
        for (uint32_t k = 0; c && k < FAN_MESSAGES; k++)
                tap_check(publish_fds(c, FAN_DATA, &k, sizeof(k), &p[k][1], 1, false) >= 0);
        if (c) {
                /* After the data from the same sender: nothing follows it. */
                tap_check(bus_client_publish(c, FAN_END, NULL, 0, 0) >= 0);
                tap_check(bus_client_flush(c) >= 0);
        }
        for (int i = 0; i < FAN_CHILDREN; i++)
                tap_check_int(child_finish(&ch[i]), 0);

        for (unsigned k = 0; k < FAN_MESSAGES; k++) {
                FanRecord rec[16];
                unsigned plain_got[FAN_PLAIN] = {}, n_group = 0;
                ssize_t n;

                close(p[k][1]);
                p[k][1] = -1;
                /* EOF: every copy of the write end is closed. */
                n = test_read_to_eof(p[k][0], rec, sizeof(rec), WAIT_MS);
                if (!tap_check(n >= 0 && n % (ssize_t) sizeof(FanRecord) == 0)) {
                        tap_diag("message %u: reading its pipe: %zd", k, n);
                        continue;
                }
                for (size_t j = 0; j < (size_t) n / sizeof(FanRecord); j++) {
                        tap_check_int(rec[j].seq, k);
                        if (!tap_check(rec[j].child < FAN_CHILDREN))
                                continue;
                        tap_check_int(rec[j].is_group, rec[j].child >= FAN_PLAIN);
                        if (rec[j].child < FAN_PLAIN)
                                plain_got[rec[j].child]++;
                        else {
                                n_group++;
                                group_got[rec[j].child]++;
                        }
                }
                for (unsigned i = 0; i < FAN_PLAIN; i++)
                        tap_check_int(plain_got[i], 1);
                /* One member of the group, not both, not none. */
                tap_check_int(n_group, 1);
        }
        /* Members take turns. */
        for (unsigned i = FAN_PLAIN; i < FAN_CHILDREN; i++)
                tap_check_int(group_got[i], FAN_MESSAGES / FAN_GROUP);
        bus_client_unref(c);
        for (unsigned k = 0; k < FAN_MESSAGES; k++)
                close_pair(p[k]);
}

/* ---- A retained message's descriptor. */

#define RETAINED_TOPIC "fds.retained.pipe"

static void retained_text(char *buf, size_t size, pid_t pid) {
        snprintf(buf, size, "the retained descriptor reached process %d", (int) pid);
}

static int retained_rx_cb(bus_message *m, void *userdata) {
        Rx *rx = userdata;
        char text[128];
        int fd;

        rx->done = true;
        child_check(rx->failures, bus_message_is_retained(m) == 1);
        child_check(rx->failures, bus_message_get_n_fds(m) == 1);
        fd = bus_message_get_fd(m, 0);
        child_check(rx->failures, fd >= 3 && is_fifo(fd));
        retained_text(text, sizeof(text), getpid());
        if (fd >= 0)
                child_check(rx->failures, write_all(fd, text, strlen(text)));
        return 0;
}

static int retained_subscriber_main(void *arg) {
        Child *ch = arg;
        Rx rx;

        /* Subscribes only now: the message was published before. */
        if (rx_setup(&rx, ch, "fds.retained.>", NULL, retained_rx_cb, NULL, NULL) < 0)
                return 1;
        return rx_run(&rx);
}

static void test_retained_fd(void) {
        Child late;
        bus_client *c = NULL;
        int p[2] = { -1, -1 };
        char expected[128], got[128];

        tap_check(pipe2(p, O_CLOEXEC) == 0);
        tap_check(bus_client_open(&c, busd.address) >= 0);
        if (!c)
                goto finish;
        tap_check(publish_fds(c, RETAINED_TOPIC, "r", 1, &p[1], 1, true) >= 0);
        /* A round trip after the publish: the broker has stored it. */
        tap_check(test_ping(c, WAIT_USEC));
        close(p[1]);
        p[1] = -1;
        /* Only the broker holds the write end now. */
        tap_check(pipe_idle(p[0]));

        if (!tap_check(child_start(&late, retained_subscriber_main, busd.address, 0, NULL)))
                goto finish;
        retained_text(expected, sizeof(expected), late.pid);
        tap_check_int(child_finish(&late), 0);
        memset(got, 0, sizeof(got));
        if (!tap_check_int(test_read_exact(p[0], got, strlen(expected), WAIT_MS), 0))
                tap_diag("read \"%s\", expected \"%s\"", got, expected);
        tap_check(memcmp(got, expected, strlen(expected)) == 0);
        /* The subscriber has gone; the broker still keeps the descriptor. */
        tap_check(pipe_idle(p[0]));

        /* An empty retained publish deletes it: the broker lets go. */
        tap_check(bus_client_publish(c, RETAINED_TOPIC, NULL, 0, BUS_PUBLISH_RETAIN) >= 0);
        tap_check(test_ping(c, WAIT_USEC));
        tap_check_int(test_read_to_eof(p[0], got, sizeof(got), WAIT_MS), 0);
finish:
        bus_client_unref(c);
        close_pair(p);
}

/* ---- Raw frames: what libbus would not send. */


/* Whether the broker closed the connection (EOF), reading what comes first. */
static bool raw_closed_by_broker(int fd) {
        char buf[4096];
        ssize_t n = test_read_to_eof(fd, buf, sizeof(buf), WAIT_MS);

        return n >= 0 || n == -ECONNRESET;
}

/* ---- The per-frame limit (busd --max-fds, 16 by default). */

static void capture_log(int priority, const char *message, void *userdata) {
        char *buf = userdata;

        if (priority <= LOG_WARNING && !buf[0])
                snprintf(buf, 512, "%s", message);
}

static void test_too_many_fds(void) {
        Service svc;
        bus_client *c = NULL, *bad = NULL;
        bus_message *m = NULL, *reply = NULL;
        Bus__GetStatsReply *before = NULL, *after = NULL;
        Bus__Envelope env = BUS__ENVELOPE__INIT, *answer;
        bus_error e = BUS_ERROR_NULL;
        int p[2] = { -1, -1 }, fds[17], raw, base = -1, r;
        char log_text[512] = "", buf[64];
        const void *data;
        size_t size;

        /* The service first: a child forked later would inherit the pipe. */
        if (!tap_check(service_start(&svc, busd.address)))
                goto finish;
        tap_check(pipe2(p, O_CLOEXEC) == 0);
        for (unsigned i = 0; i < N_ELEMENTS(fds); i++)
                fds[i] = p[1];
        tap_check(bus_client_open(&c, busd.address) >= 0);
        if (!c)
                goto finish;
        before = test_get_stats(c, WAIT_USEC);
        tap_check(before != NULL);
        tap_check(test_ping(c, WAIT_USEC));
        base = test_count_fds(busd.pid);

        /* 16 is allowed: all of them arrive, open and distinct. */
        assert(bus_message_new_request(&m, SERVICE_NAME, "CountFds") >= 0);
        for (unsigned i = 0; i < 16; i++)
                tap_check_int(bus_message_append_fd(m, p[1]), i);
        r = bus_client_call(c, m, WAIT_USEC, &e, &reply);
        if (!tap_check_int(r, 0))
                tap_diag("CountFds: %s: %s", e.name ?: "", e.message ?: "");
        if (reply && tap_check(bus_message_get_payload(reply, &data, &size) >= 0 &&
                               size == 2 * sizeof(uint32_t))) {
                uint32_t counts[2];

                memcpy(counts, data, sizeof(counts));
                tap_check_int(counts[0], 16);
                tap_check_int(counts[1], 16);
        }
        bus_error_free(&e);
        bus_message_unref(reply);
        bus_message_unref(m);
        m = reply = NULL;

        /* 17 through libbus, which knows the broker's limit from its
         * greeting (HelloReply.max_fds): bus_client_send() refuses the
         * message, and the connection goes on working. */
        tap_check(bus_client_open(&bad, busd.address) >= 0);
        if (bad) {
                tap_check(bus_client_set_log(bad, capture_log, log_text) >= 0);
                tap_check_int(publish_fds(bad, "fds.toomany", "x", 1, fds, 17, false),
                              -ETOOMANYREFS);
                tap_check_int(bus_client_is_connected(bad), 1);
                tap_check(test_ping(bad, WAIT_USEC));
                if (log_text[0])
                        tap_diag("libbus logged: %s", log_text);
                bus_client_unref(bad);
        }

        /* The same on a raw connection, where the error frame shows. */
        raw = test_raw_open(busd.address, WAIT_MS);
        if (tap_check(raw >= 0)) {
                env.kind = BUS__KIND__KIND_PUBLISH;
                env.serial = 2;
                env.topic = (char *) "fds.toomany";
                tap_check(test_raw_send(raw, &env, "x", 1, fds, 17));
                answer = test_raw_read_envelope(raw, WAIT_MS);
                if (tap_check(answer != NULL)) {
                        tap_diag("broker said: %s: %s", answer->error_name, answer->error_message);
                        tap_check_int(answer->kind, BUS__KIND__KIND_ERROR);
                        tap_check(strcmp(answer->error_name, BUS_ERROR_PROTOCOL) == 0);
                        tap_check(answer->error_message[0] != '\0');
                        tap_check_int(answer->reply_serial, 0);
                }
                bus__envelope__free_unpacked(answer, NULL);
                tap_check(raw_closed_by_broker(raw));
                close(raw);
        }

        /* The broker goes on serving, counted the error, and kept none of
         * the descriptors. */
        tap_check(test_busd_alive(&busd));
        tap_check(test_ping(c, WAIT_USEC));
        after = test_get_stats(c, WAIT_USEC);
        if (tap_check(before && after))
                tap_check_int(after->protocol_errors, before->protocol_errors + 1);
        tap_check_int(test_count_fds(busd.pid), base);
        close(p[1]);
        p[1] = -1;
        tap_check_int(test_read_to_eof(p[0], buf, sizeof(buf), WAIT_MS), 0);
finish:
        if (before)
                bus__get_stats_reply__free_unpacked(before, NULL);
        if (after)
                bus__get_stats_reply__free_unpacked(after, NULL);
        tap_check(service_stop(&svc, c));
        bus_client_unref(c);
        close_pair(p);
}

/* ---- The per-connection limit on queued descriptors. */

#define STUCK_TOPIC "fds.flood.data"
#define FLOOD_BATCH 50
#define FLOOD_MAX 20000
#define QUEUED_FDS_LIMIT 8

/* Subscribes and then never reads, until told to go. */
static int stuck_subscriber_main(void *arg) {
        Child *ch = arg;
        bus_client *c = NULL;
        int r;

        r = bus_client_open(&c, ch->address);
        if (r >= 0)
                r = bus_client_subscribe(c, NULL, "fds.flood.>", NULL, 0, rx_end_cb, NULL);
        if (r < 0) {
                printf("# stuck subscriber: %s\n", strerror(-r));
                bus_client_unref(c);
                return 1;
        }
        test_signal_post(&ch->up, 'R');
        r = test_signal_wait(&ch->down, 3 * WAIT_MS, NULL);
        bus_client_unref(c);
        return r < 0 ? 2 : 0;
}

static void test_queued_fd_limit(void) {
        static const char *const args[] = { "--max-queued-fds", "8", NULL };
        TestBusd b2 = { .pid = -1 };
        Child stuck = { .pid = -1 };
        bus_client *pub = NULL, *mon = NULL;
        bus_slot *gone_slot = NULL;
        Bus__GetStatsReply *stats;
        GoneWatch gone = {};
        uint64_t dropped0 = 0, dropped = 0;
        int p[2] = { -1, -1 }, base, max_fds = 0, sent = 0;
        char buf[16];

        if (!tap_check(test_busd_start(&b2, args) >= 0))
                goto finish;
        /* The child first, so that it inherits neither the pipe nor our
         * connections. */
        if (!tap_check(child_start(&stuck, stuck_subscriber_main, b2.address, 0, NULL)))
                goto finish;
        tap_check(child_wait_up(&stuck) == 'R');
        gone.pid = stuck.pid;
        tap_check(pipe2(p, O_CLOEXEC) == 0);
        tap_check(bus_client_open(&pub, b2.address) >= 0);
        tap_check(bus_client_open(&mon, b2.address) >= 0);
        if (!pub || !mon)
                goto finish;
        tap_check(bus_client_subscribe(mon, &gone_slot, "bus.peer.disconnected", NULL, 0, gone_cb,
                                       &gone) >= 0);

        stats = test_get_stats(pub, WAIT_USEC);
        if (tap_check(stats)) {
                dropped0 = stats->dropped;
                bus__get_stats_reply__free_unpacked(stats, NULL);
        }
        base = test_count_fds(b2.pid);
        tap_check(base > 0);

        /* Until deliveries to it are being dropped: first the socket buffer
         * fills, then the broker's queue for it (8 descriptors). After each
         * batch, a round trip lets the broker finish the batch before its
         * descriptors are counted. */
        while (sent < FLOOD_MAX && dropped < dropped0 + FLOOD_BATCH) {
                int n;

                for (int i = 0; i < FLOOD_BATCH; i++, sent++)
                        if (!tap_check(publish_fds(pub, STUCK_TOPIC, &sent, sizeof(sent), &p[1], 1,
                                                   false) >= 0))
                                goto flood_done;
                if (!tap_check(test_ping(pub, WAIT_USEC)))
                        break;
                n = test_count_fds(b2.pid);
                if (n > max_fds)
                        max_fds = n;
                stats = test_get_stats(pub, WAIT_USEC);
                if (!tap_check(stats))
                        break;
                dropped = stats->dropped;
                bus__get_stats_reply__free_unpacked(stats, NULL);
        }
flood_done:
        tap_diag("%d publishes with a descriptor; %llu dropped; broker descriptors: %d at start, "
                 "at most %d", sent, (unsigned long long) (dropped - dropped0), base, max_fds);
        tap_check(dropped >= dropped0 + FLOOD_BATCH);
        tap_check(max_fds <= base + QUEUED_FDS_LIMIT);
        tap_check(bus_client_is_connected(pub) == 1);
        tap_check(test_busd_alive(&b2));

        /* Once the subscriber has gone, the broker holds none of them. */
        test_signal_post(&stuck.down, 'q');
        tap_check_int(child_finish(&stuck), 0);
        tap_check_int(test_run_until(mon, &gone.done, WAIT_MS), 0);
        tap_check(test_ping(pub, WAIT_USEC));
        tap_check_int(test_count_fds(b2.pid), base - 1);
        close(p[1]);
        p[1] = -1;
        tap_check_int(test_read_to_eof(p[0], buf, sizeof(buf), WAIT_MS), 0);
finish:
        if (stuck.pid > 0) {
                test_signal_post(&stuck.down, 'q');
                (void) child_finish(&stuck);
        }
        bus_slot_unref(gone_slot);
        bus_client_unref(mon);
        bus_client_unref(pub);
        tap_check_int(test_busd_stop(&b2), 0);
        close_pair(p);
}

/* ---- No descriptor leaks after 10,000 messages carrying one. */

#define LEAK_TOPIC "fds.leak.data"
#define LEAK_NAME "org.example.FdSink"
#define LEAK_WARMUP 250
#define LEAK_MESSAGES 10000
#define LEAK_WINDOW 250

typedef struct Sink {
        bus_client *c;
        uint32_t counts[2]; /* received, bad */
} Sink;

static int sink_data_cb(bus_message *m, void *userdata) {
        Sink *s = userdata;
        int fd = bus_message_get_fd(m, 0);

        s->counts[0]++;
        if (bus_message_get_n_fds(m) != 1 || fd < 3 || !is_fifo(fd))
                s->counts[1]++;
        return 0;
}

static int sink_count_cb(bus_message *m, void *userdata) {
        Sink *s = userdata;

        return bus_client_reply(s->c, m, s->counts, sizeof(s->counts));
}

static int sink_quit_cb(bus_message *m, void *userdata) {
        Sink *s = userdata;
        int r = bus_client_reply(s->c, m, NULL, 0);

        (void) bus_client_exit(s->c, 0);
        return r;
}

static int sink_main(void *arg) {
        Child *ch = arg;
        Sink s = {};
        int r;

        r = bus_client_open(&s.c, ch->address);
        if (r >= 0)
                r = bus_client_subscribe(s.c, NULL, LEAK_TOPIC, NULL, 0, sink_data_cb, &s);
        if (r >= 0)
                r = bus_client_request_name(s.c, LEAK_NAME, 0) == BUS_NAME_PRIMARY_OWNER ? 0
                                                                                         : -EEXIST;
        if (r >= 0)
                r = bus_client_add_method(s.c, NULL, NULL, "Count", sink_count_cb, &s);
        if (r >= 0)
                r = bus_client_add_method(s.c, NULL, NULL, "Quit", sink_quit_cb, &s);
        if (r < 0) {
                printf("# sink: %s\n", strerror(-r));
                bus_client_unref(s.c);
                return 1;
        }
        test_signal_post(&ch->up, 'R');
        r = bus_client_run(s.c);
        if (r >= 0)
                (void) bus_client_flush(s.c);
        bus_client_unref(s.c);
        return r < 0 ? 2 : 0;
}

/* The sink's counts. A call goes behind the caller's earlier publishes, so
 * the answer covers all of them. */
static bool sink_counts(bus_client *c, uint32_t counts[2]) {
        bus_message *reply = NULL;
        const void *data;
        size_t size;
        bool ok;

        ok = bus_client_call_method(c, LEAK_NAME, "Count", NULL, 0, WAIT_USEC, NULL, &reply) >= 0 &&
             bus_message_get_payload(reply, &data, &size) >= 0 && size == 2 * sizeof(uint32_t);
        if (ok)
                memcpy(counts, data, 2 * sizeof(uint32_t));
        bus_message_unref(reply);
        return ok;
}

/* Publishes n messages with a copy of fd, in windows that the broker's
 * queue for the sink can hold, so that nothing is dropped. */
static bool publish_window(bus_client *c, int fd, unsigned n, uint32_t *total) {
        uint32_t counts[2];

        for (unsigned i = 0; i < n; i++) {
                if (publish_fds(c, LEAK_TOPIC, &i, sizeof(i), &fd, 1, false) < 0)
                        return false;
                *total += 1;
                if ((i + 1) % LEAK_WINDOW == 0 && !sink_counts(c, counts))
                        return false;
        }
        return true;
}

static void test_no_fd_leak(void) {
        Child sink = { .pid = -1 };
        bus_client *c = NULL;
        int p[2] = { -1, -1 }, broker0, sink0, self0;
        uint32_t counts[2] = { 0, 0 }, total = 0;
        char buf[16];

        if (!tap_check(child_start(&sink, sink_main, busd.address, 0, NULL)))
                goto finish;
        tap_check(child_wait_up(&sink) == 'R');
        tap_check(pipe2(p, O_CLOEXEC) == 0);
        tap_check(bus_client_open(&c, busd.address) >= 0);
        if (!c)
                goto finish;

        /* Baselines after a warm-up: allocations and caches are made. */
        tap_check(publish_window(c, p[1], LEAK_WARMUP, &total));
        tap_check(sink_counts(c, counts));
        broker0 = test_count_fds(busd.pid);
        sink0 = test_count_fds(sink.pid);
        self0 = test_count_fds(0);

        tap_check(publish_window(c, p[1], LEAK_MESSAGES, &total));
        /* The final round trip: the sink has handled (and released) every
         * message, and the broker every frame before the answer. */
        tap_check(sink_counts(c, counts));
        tap_check_int(counts[0], total);
        tap_check_int(counts[1], 0);
        tap_check_int(total, LEAK_WARMUP + LEAK_MESSAGES);
        tap_check_int(test_count_fds(busd.pid), broker0);
        tap_check_int(test_count_fds(sink.pid), sink0);
        tap_check_int(test_count_fds(0), self0);
        tap_diag("descriptors: broker %d, sink %d, publisher %d", broker0, sink0, self0);

        tap_check(bus_client_call_method(c, LEAK_NAME, "Quit", NULL, 0, WAIT_USEC, NULL, NULL) >=
                  0);
        tap_check_int(child_finish(&sink), 0);
        bus_client_unref(c);
        c = NULL;
        close(p[1]);
        p[1] = -1;
        /* Not one of the 10,250 copies is open anywhere. */
        tap_check_int(test_read_to_eof(p[0], buf, sizeof(buf), WAIT_MS), 0);
finish:
        if (sink.pid > 0) {
                (void) kill(sink.pid, SIGKILL);
                (void) child_finish(&sink);
        }
        bus_client_unref(c);
        close_pair(p);
}

static void test_broker_exits_cleanly(void) {
        test_busd_check_clean_exit(&busd);
}

int main(void) {
        tap_init();
        signal(SIGPIPE, SIG_IGN);
        test_busd_start_or_bail(&busd, NULL);
        TAP_RUN(test_pipe_on_publish);
        TAP_RUN(test_fd_on_request_and_reply);
        TAP_RUN(test_socket_both_ways);
        TAP_RUN(test_several_fds);
        TAP_RUN(test_fan_out);
        TAP_RUN(test_retained_fd);
        TAP_RUN(test_too_many_fds);
        TAP_RUN(test_queued_fd_limit);
        TAP_RUN(test_no_fd_leak);
        TAP_RUN(test_broker_exits_cleanly);
        return tap_done();
}
