/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Base64 (RFC 4648) for bytes fields in JSON. We write the standard alphabet
 * with padding, as the proto3 JSON mapping does; we read both the standard
 * and the URL-safe alphabet, padded or not, because other protobuf JSON
 * writers emit either. Nothing is skipped on input (no whitespace, no line
 * breaks): a payload typed on a command line has none, and silently dropping
 * characters would hide a mistyped value.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tools/busdctl/pb-json.h"

static const char base64_alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *pb_base64_encode(const uint8_t *data, size_t size) {
        char *text, *t;
        size_t i;

        if (!data && size > 0)
                return NULL;
        if (size > (SIZE_MAX - 1) / 4 * 3)
                return NULL;

        text = malloc((size + 2) / 3 * 4 + 1);
        if (!text)
                return NULL;

        t = text;
        for (i = 0; i + 3 <= size; i += 3) {
                uint32_t v = (uint32_t) data[i] << 16 | (uint32_t) data[i + 1] << 8 | data[i + 2];

                *t++ = base64_alphabet[v >> 18];
                *t++ = base64_alphabet[v >> 12 & 63];
                *t++ = base64_alphabet[v >> 6 & 63];
                *t++ = base64_alphabet[v & 63];
        }
        if (size - i == 1) {
                *t++ = base64_alphabet[data[i] >> 2];
                *t++ = base64_alphabet[(data[i] & 3) << 4];
                *t++ = '=';
                *t++ = '=';
        } else if (size - i == 2) {
                *t++ = base64_alphabet[data[i] >> 2];
                *t++ = base64_alphabet[(data[i] & 3) << 4 | data[i + 1] >> 4];
                *t++ = base64_alphabet[(data[i + 1] & 15) << 2];
                *t++ = '=';
        }
        *t = '\0';
        return text;
}

/* The 6-bit value of c in either alphabet, or -1. */
static int base64_value(char c) {
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '+' || c == '-')
                return 62;
        if (c == '/' || c == '_')
                return 63;
        return -1;
}

int pb_base64_decode(const char *text, size_t len, uint8_t **ret, size_t *ret_size) {
        uint8_t *data;
        uint32_t acc = 0;
        size_t n = 0, bits = 0;

        if ((!text && len > 0) || !ret || !ret_size)
                return -EINVAL;

        /* Padding only ever completes the last group of four. */
        if (len % 4 == 0 && len > 0 && text[len - 1] == '=') {
                len--;
                if (text[len - 1] == '=')
                        len--;
        }
        if (len % 4 == 1)
                return -EINVAL; /* six bits cannot make a byte */

        data = malloc(len / 4 * 3 + 3);
        if (!data)
                return -ENOMEM;

        for (size_t i = 0; i < len; i++) {
                int v = base64_value(text[i]);

                if (v < 0) {
                        free(data);
                        return -EINVAL;
                }
                acc = acc << 6 | (uint32_t) v;
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        data[n++] = (uint8_t) (acc >> bits);
                        acc &= (1u << bits) - 1;
                }
        }

        *ret = data;
        *ret_size = n;
        return 0;
}
