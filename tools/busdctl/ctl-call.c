/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * call and introspect: a method called with a JSON request encoded by the
 * service's own descriptors (bus.Introspect), its reply printed as JSON.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/busdctl/busdctl.h"

int parse_json_arg(const char *text, json_object **ret) {
        json_tokener *tok = json_tokener_new();
        json_object *j;
        enum json_tokener_error e;
        size_t len = strlen(text);

        if (!tok)
                return ctl_error(-ENOMEM, "JSON");
        /* What a shell leaves around an argument is not an error. */
        while (len > 0 && strchr(" \t\r\n", text[len - 1]))
                len--;
        j = json_tokener_parse_ex(tok, text, (int) len);
        e = json_tokener_get_error(tok);
        if (!j || e != json_tokener_success || json_tokener_get_parse_end(tok) != len) {
                if (e == json_tokener_success)
                        e = json_tokener_continue;
                ctl_usage_error("bad JSON at byte %zu: %s",
                                json_tokener_get_parse_end(tok),
                                e == json_tokener_continue ? "unexpected end"
                                                           : json_tokener_error_desc(e));
                json_object_put(j);
                json_tokener_free(tok);
                return -EINVAL;
        }
        json_tokener_free(tok);
        if (!json_object_is_type(j, json_type_object)) {
                json_object_put(j);
                ctl_usage_error("the payload must be a JSON object, like '{\"a\": 1}'");
                return -EINVAL;
        }
        *ret = j;
        return 0;
}

int encode_json_payload(Ctl *ctl, const char *type, const char *text, uint8_t **ret,
                        size_t *ret_size) {
        _cleanup_(json_object_putp) json_object *j = NULL;
        _cleanup_free_ char *error = NULL;
        int r;

        r = parse_json_arg(text, &j);
        if (r < 0)
                return r;
        r = pb_encode_json(types_registry(ctl->types), type, j, ret, ret_size, &error);
        if (r == -ENOENT)
                ctl_usage_error("unknown protobuf type %s (give --descriptors FILE?)", type);
        else if (r < 0)
                ctl_usage_error("cannot encode %s: %s", type, error ? error : strerror(-r));
        return r;
}

/* The payload given with --raw DATA or --file FILE. */
int raw_payload(Ctl *ctl, uint8_t **ret, size_t *ret_size) {
        if (ctl->file) {
                int r = ctl_read_file(ctl->file, ret, ret_size);
                if (r < 0)
                        ctl_error(r, "reading %s", ctl->file);
                return r;
        }
        size_t n = strlen(ctl->raw);
        *ret = malloc(n ? n : 1);
        if (!*ret)
                return -ENOMEM;
        memcpy(*ret, ctl->raw, n);
        *ret_size = n;
        return 0;
}

typedef struct MethodTypes {
        const char *input, *output;
} MethodTypes;

/* Finds the method's request and reply types among the services the
 * destination describes; without an answer, among the --descriptors
 * files' services. 0 found, -ENOENT not. */
static int method_types(Ctl *ctl, bus_client *bus, const char *destination, const char *method,
                        MethodTypes *ret) {
        const Bus__IntrospectReply *ir = NULL;
        PbRegistry *reg = types_registry(ctl->types);
        int r;

        r = types_introspect(ctl, bus, destination, &ir);
        if (r == -ECONNRESET)
                return r;
        if (ir) {
                for (size_t i = 0; i < ir->n_services; i++)
                        if (pb_registry_find_method(reg, ir->services[i], method, &ret->input,
                                                    &ret->output, NULL) >= 0)
                                return 0;
                return -ENOENT;
        }
        if (ctl->n_descriptor_files > 0 &&
            pb_registry_find_method(reg, NULL, method, &ret->input, &ret->output, NULL) >= 0)
                return 0;
        return -ENOENT;
}

static int build_request(Ctl *ctl, bus_client *bus, const char *destination, const char *method,
                         const char *json, MethodTypes *types, bus_message **ret) {
        _cleanup_(bus_message_unrefp) bus_message *m = NULL;
        _cleanup_free_ uint8_t *payload = NULL;
        size_t size = 0;
        const char *type = ctl->type;
        int r;

        r = bus_message_new_request(&m, destination, method);
        if (r < 0)
                return ctl_usage_error("bad destination or method: %s %s", destination, method),
                       -EINVAL;

        bool raw = ctl->raw || ctl->file;
        if (raw && json)
                return ctl_usage_error("give the payload as JSON, --raw or --file, not two"),
                       -EINVAL;

        r = method_types(ctl, bus, destination, method, types);
        if (r == -ECONNRESET)
                return ctl_error(r, "calling %s", destination), r;
        /* --raw and --file bytes are the user's: typed only by --type */
        if (!type && r >= 0 && !raw)
                type = types->input;

        if (raw) {
                r = raw_payload(ctl, &payload, &size);
                if (r < 0)
                        return r;
        } else if (type) {
                r = encode_json_payload(ctl, type, json ? json : "{}", &payload, &size);
                if (r < 0)
                        return r;
        } else if (json)
                return ctl_usage_error("cannot encode the request: %s does not describe a "
                                       "method %s (bus.Introspect); give --type TYPE and "
                                       "--descriptors FILE, or --raw",
                                       destination, method),
                       -EINVAL;

        r = bus_message_set_payload(m, payload, size);
        if (r >= 0 && type)
                r = bus_message_set_payload_type(m, type);
        if (r >= 0 && ctl->timeout_set)
                r = bus_message_set_timeout(m, ctl->timeout_usec);
        if (r < 0)
                return ctl_error(r, "building the request"), r;
        *ret = TAKE_PTR(m);
        return 0;
}

static void print_payload(Ctl *ctl, bus_message *reply, const char *fallback_type) {
        const char *type = bus_message_get_payload_type(reply);
        _cleanup_(json_object_putp) json_object *j = NULL;
        const void *data;
        size_t size;

        if (bus_message_get_payload(reply, &data, &size) < 0) {
                ctl_error(-EIO, "reading the reply's payload");
                return;
        }
        if (ctl->raw_output) {
                fwrite(data, 1, size, stdout);
                return;
        }
        if (!type)
                type = fallback_type;
        if (type && !pb_registry_has_message(types_registry(ctl->types), type))
                (void) types_resolve(ctl, ctl->bus, type, bus_message_get_sender(reply), NULL);
        j = types_decode(ctl, type, data, size);
        if (j)
                json_print(ctl, j, false);
}

int cmd_call(Ctl *ctl, int argc, char **argv) {
        _cleanup_(bus_message_unrefp) bus_message *request = NULL, *reply = NULL;
        const char *destination = argv[1], *method = argv[2], *json = argc > 3 ? argv[3] : NULL;
        MethodTypes types = {};
        bus_error error = BUS_ERROR_NULL;
        bus_client *bus;
        int r;

        r = ctl_bus(ctl, &bus);
        if (r < 0)
                return EXIT_FAILED;
        r = build_request(ctl, bus, destination, method, json, &types, &request);
        if (r < 0)
                return r == -EINVAL || r == -ENOENT ? EXIT_USAGE : EXIT_FAILED;

        r = bus_client_call(bus, request, 0, &error, &reply);
        if (r < 0) {
                if (bus_error_is_set(&error))
                        fprintf(stderr, "busdctl: %s: %s\n", error.name,
                                error.message ? error.message : "");
                else
                        ctl_error(r, "calling %s %s", destination, method);
                bus_error_free(&error);
                return EXIT_FAILED;
        }
        print_payload(ctl, reply, types.output);
        return 0;
}

int cmd_introspect(Ctl *ctl, int argc, char **argv) {
        _cleanup_(bus_message_unrefp) bus_message *reply = NULL;
        _cleanup_(json_object_putp) json_object *j = NULL;
        _cleanup_free_ const char **services = NULL, **types = NULL;
        const Bus__IntrospectReply *ir = NULL;
        const char *destination = argv[1];
        PbRegistry *reg = types_registry(ctl->types);
        bus_client *bus;
        int r;

        r = ctl_bus(ctl, &bus);
        if (r < 0)
                return EXIT_FAILED;
        r = types_introspect(ctl, bus, destination, &ir);
        if (r < 0)
                return ctl_error(0, "%s does not answer %s (is it connected, and does it "
                                    "use libbus?)", destination, BUS_METHOD_INTROSPECT);

        services = strv_of(ir->services, ir->n_services);
        types = calloc(ir->n_topic_types + 1, sizeof(char *));
        if (!services || !types)
                return ctl_error(-ENOMEM, "introspect");
        for (size_t i = 0; i < ir->n_topic_types; i++)
                types[i] = ir->topic_types[i]->type;

        if (ctl->json) {
                r = pb_registry_describe_json(reg, services, types, &j);
                if (r < 0)
                        return ctl_error(r, "describing %s", destination);
                json_object *topics = json_object_new_array();
                for (size_t i = 0; i < ir->n_topic_types; i++) {
                        json_object *o = json_object_new_object();
                        json_object_object_add(o, "pattern",
                                               json_object_new_string(ir->topic_types[i]->pattern));
                        json_object_object_add(o, "type",
                                               json_object_new_string(ir->topic_types[i]->type));
                        json_object_array_add(topics, o);
                }
                json_object_object_add(j, "topics", topics);
                json_object_object_add(j, "name", json_object_new_string(destination));
                json_print(ctl, j, false);
                return 0;
        }

        if (ir->n_topic_types > 0) {
                int width = 1;
                for (size_t i = 0; i < ir->n_topic_types; i++)
                        width = MAX(width, (int) strlen(ir->topic_types[i]->pattern));
                printf("// Published by %s:\n", destination);
                for (size_t i = 0; i < ir->n_topic_types; i++)
                        printf("//   %-*s  %s\n", width,
                               *ir->topic_types[i]->pattern ? ir->topic_types[i]->pattern : "*",
                               ir->topic_types[i]->type);
                printf("\n");
        }
        if (ir->n_services == 0 && ir->n_topic_types == 0) {
                printf("// %s describes no services and no types.\n", destination);
                return 0;
        }
        r = pb_registry_describe_text(reg, services, types, stdout);
        if (r < 0)
                return ctl_error(r, "describing %s", destination);
        return 0;
}
