/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * busd-example: the README's quick start, written against <libbus/bus.h> only.
 *
 *   busd-example sub PATTERN [COUNT]        print messages on matching topics
 *   busd-example pub TOPIC TEXT [--retain]  publish TEXT on TOPIC
 *   busd-example serve NAME                 own NAME, answer Echo, Upper and Fail
 *   busd-example call NAME METHOD TEXT      call a method and print the reply
 *
 * It connects to $BUSD_ADDRESS or the per-user bus.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libbus/bus.h>

struct sub {
        bus_client *client;
        unsigned long left; /* 0: forever */
};

static int on_message(bus_message *m, void *userdata) {
        struct sub *sub = userdata;
        const void *data;
        size_t size;
        uid_t uid = 0;
        pid_t pid = 0;

        bus_message_get_payload(m, &data, &size);
        bus_message_get_sender_creds(m, &uid, NULL, &pid);
        printf("%s: %.*s (from %s uid %u pid %d%s)\n", bus_message_get_topic(m), (int) size,
               (const char *) data, bus_message_get_sender(m), (unsigned) uid, (int) pid,
               bus_message_is_retained(m) > 0 ? ", retained" : "");
        fflush(stdout);
        if (sub->left > 0 && --sub->left == 0)
                bus_client_exit(sub->client, 0);
        return 0;
}

static int sub(bus_client *c, const char *pattern, unsigned long count) {
        struct sub s = { .client = c, .left = count };
        int r;

        r = bus_client_subscribe(c, NULL, pattern, NULL, 0, on_message, &s);
        if (r < 0) {
                fprintf(stderr, "cannot subscribe to %s: %s\n", pattern, strerror(-r));
                return 1;
        }
        r = bus_client_run(c);
        if (r < 0) {
                fprintf(stderr, "connection lost: %s\n", strerror(-r));
                return 1;
        }
        return 0;
}

static int pub(bus_client *c, const char *topic, const char *text, uint64_t flags) {
        int r;

        r = bus_client_publish(c, topic, text, strlen(text), flags);
        if (r >= 0)
                r = bus_client_flush(c); /* unref drops what is not sent yet */
        if (r < 0) {
                fprintf(stderr, "cannot publish on %s: %s\n", topic, strerror(-r));
                return 1;
        }
        return 0;
}

static int on_echo(bus_message *m, void *userdata) {
        const void *data;
        size_t size;

        bus_message_get_payload(m, &data, &size);
        return bus_client_reply(userdata, m, data, size);
}

static int on_upper(bus_message *m, void *userdata) {
        const void *data;
        size_t size;
        char *upper;
        int r;

        bus_message_get_payload(m, &data, &size);
        upper = malloc(size + 1);
        if (!upper)
                return -ENOMEM; /* libbus answers bus.Error.Failed for us */
        for (size_t i = 0; i < size; i++)
                upper[i] = (char) toupper(((const unsigned char *) data)[i]);
        r = bus_client_reply(userdata, m, upper, size);
        free(upper);
        return r;
}

static int on_fail(bus_message *m, void *userdata) {
        return bus_client_reply_error(userdata, m, "org.example.Error.Failed",
                                      "%s failed, as asked", bus_message_get_method(m));
}

static int serve(bus_client *c, const char *name) {
        const char *id = NULL;
        int r;

        /* Handlers first, so no request finds the name without them. */
        if (bus_client_add_method(c, NULL, name, "Echo", on_echo, c) < 0 ||
            bus_client_add_method(c, NULL, name, "Upper", on_upper, c) < 0 ||
            bus_client_add_method(c, NULL, name, "Fail", on_fail, c) < 0) {
                fprintf(stderr, "cannot add methods: %s\n", strerror(ENOMEM));
                return 1;
        }
        r = bus_client_request_name(c, name, 0);
        if (r < 0) {
                fprintf(stderr, "cannot own %s: %s\n", name, strerror(-r));
                return 1;
        }
        bus_client_get_unique_id(c, &id);
        printf("%s %s as %s\n", r == BUS_NAME_IN_QUEUE ? "queued for" : "serving", name, id);
        fflush(stdout);
        r = bus_client_run(c);
        if (r < 0) {
                fprintf(stderr, "connection lost: %s\n", strerror(-r));
                return 1;
        }
        return 0;
}

static int call(bus_client *c, const char *name, const char *method, const char *text) {
        bus_error error = BUS_ERROR_NULL;
        bus_message *reply = NULL;
        const void *data;
        size_t size;
        int r;

        r = bus_client_call_method(c, name, method, text, strlen(text), 0, &error, &reply);
        if (r < 0) {
                if (bus_error_is_set(&error))
                        fprintf(stderr, "%s: %s\n", error.name, error.message ?: "");
                else
                        fprintf(stderr, "cannot call %s.%s: %s\n", name, method, strerror(-r));
                bus_error_free(&error);
                return 1;
        }
        bus_message_get_payload(reply, &data, &size);
        printf("%.*s\n", (int) size, (const char *) data);
        bus_message_unref(reply);
        return 0;
}

int main(int argc, char *argv[]) {
        const char *cmd = argc > 1 ? argv[1] : "";
        bus_client *c = NULL;
        int r, ret;

        if (!((strcmp(cmd, "sub") == 0 && (argc == 3 || argc == 4)) ||
              (strcmp(cmd, "pub") == 0 && (argc == 4 ||
                                           (argc == 5 && strcmp(argv[4], "--retain") == 0))) ||
              (strcmp(cmd, "serve") == 0 && argc == 3) ||
              (strcmp(cmd, "call") == 0 && argc == 5))) {
                fprintf(stderr, "usage: %s sub PATTERN [COUNT]\n"
                                "       %s pub TOPIC TEXT [--retain]\n"
                                "       %s serve NAME\n"
                                "       %s call NAME METHOD TEXT\n",
                        argv[0], argv[0], argv[0], argv[0]);
                return 2;
        }

        r = bus_client_open(&c, NULL);
        if (r < 0) {
                fprintf(stderr, "cannot connect to the bus: %s\n", strerror(-r));
                return 1;
        }
        if (strcmp(cmd, "sub") == 0)
                ret = sub(c, argv[2], argc == 4 ? strtoul(argv[3], NULL, 10) : 0);
        else if (strcmp(cmd, "pub") == 0)
                ret = pub(c, argv[2], argv[3], argc == 5 ? BUS_PUBLISH_RETAIN : 0);
        else if (strcmp(cmd, "serve") == 0)
                ret = serve(c, argv[2]);
        else
                ret = call(c, argv[2], argv[3], argv[4]);
        bus_client_unref(c);
        return ret;
}
