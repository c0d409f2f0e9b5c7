/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Validation of topics, patterns and bus names; see topic.h for the rules.
 *
 * Everything here walks its input once, token by token, and never reads past
 * the given length: topic strings are parsed in place out of protobuf buffers
 * and are not NUL-terminated.
 */
#include <string.h>

#include "libbus/topic.h"

#define BROKER_NAME "bus" /* the broker's own name and reserved topic prefix */
#define UNIQUE_PREFIX ":1."
#define UNIQUE_DIGITS_MAX 20 /* enough for any uint64_t */

/* A byte allowed in a literal topic token. '.', '*' and '>' are excluded so a
 * wildcard can never be confused with a literal, and 0x00 (an embedded NUL),
 * controls, space, DEL and non-ASCII bytes are all outside the range. */
static bool topic_char_is_valid(char c) {
        unsigned char u = (unsigned char) c;

        return u >= 0x21 && u <= 0x7E && u != '.' && u != '*' && u != '>';
}

/* Length of the token at p (up to the next dot or end). */
static size_t topic_token_len(const char *p, const char *end) {
        const char *dot = memchr(p, '.', (size_t) (end - p));

        return (size_t) ((dot ?: end) - p);
}

static bool topic_validate(const char *s, size_t len, bool pattern) {
        const char *p, *end;

        if (!s || len == 0 || len > TOPIC_MAX)
                return false;

        p = s;
        end = s + len;
        for (;;) {
                size_t n = topic_token_len(p, end);
                bool last = p + n == end;

                if (n == 0)
                        return false; /* leading, trailing or double dot */

                if (pattern && n == 1 && p[0] == '*') {
                        /* matches exactly one token: allowed anywhere */
                } else if (pattern && n == 1 && p[0] == '>') {
                        if (!last)
                                return false; /* '>' swallows the rest: must be last */
                } else {
                        for (size_t i = 0; i < n; i++)
                                if (!topic_char_is_valid(p[i]))
                                        return false;
                }

                if (last)
                        return true;
                p += n + 1;
        }
}

bool topic_is_valid(const char *topic, size_t len) {
        return topic_validate(topic, len, false);
}

bool topic_pattern_is_valid(const char *pattern, size_t len) {
        return topic_validate(pattern, len, true);
}

bool topic_pattern_matches(const char *pattern, size_t plen, const char *topic, size_t tlen) {
        const char *p = pattern, *pend = pattern + plen;
        const char *t = topic, *tend = topic + tlen;

        if (!pattern || !topic || plen == 0 || tlen == 0)
                return false;

        /* Tokens are never empty, so "no bytes left" means "no tokens left". */
        for (;;) {
                size_t pn = topic_token_len(p, pend);
                size_t tn;

                if (pn == 1 && p[0] == '>')
                        return t < tend; /* one or more remaining tokens */
                if (t >= tend)
                        return false; /* pattern is longer than the topic */

                tn = topic_token_len(t, tend);
                if (!(pn == 1 && p[0] == '*') && (pn != tn || memcmp(p, t, pn) != 0))
                        return false;

                p += pn;
                t += tn;
                if (p == pend)
                        return t == tend;
                /* skip the dots; a valid topic has a token after each one */
                p++;
                if (t < tend)
                        t++;
        }
}

bool topic_is_reserved(const char *topic, size_t len) {
        if (!topic || len < 3 || memcmp(topic, BROKER_NAME, 3) != 0)
                return false;
        return len == 3 || topic[3] == '.';
}

static bool name_char_is_valid(char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-';
}

bool name_is_valid_wellknown(const char *name) {
        unsigned elements = 0;
        size_t len;

        if (!name)
                return false;
        len = strnlen(name, NAME_MAX_LEN + 1);
        if (len == 0 || len > NAME_MAX_LEN)
                return false;

        for (const char *p = name;;) {
                const char *e = p;

                /* also rejects a leading ':' (unique ids) and any empty element */
                if (*e >= '0' && *e <= '9')
                        return false;
                while (name_char_is_valid(*e))
                        e++;
                if (e == p)
                        return false;
                elements++;

                if (*e == '\0')
                        return elements >= 2;
                if (*e != '.')
                        return false;
                p = e + 1;
        }
}

bool name_is_valid_unique(const char *name) {
        size_t n = 0;

        if (!name || strncmp(name, UNIQUE_PREFIX, strlen(UNIQUE_PREFIX)) != 0)
                return false;
        name += strlen(UNIQUE_PREFIX);

        if (name[0] == '0')
                return false; /* no leading zeros, and 0 is never assigned */
        while (name[n] >= '0' && name[n] <= '9') {
                n++;
                if (n > UNIQUE_DIGITS_MAX)
                        return false;
        }
        return n > 0 && name[n] == '\0';
}

bool name_is_valid_destination(const char *name) {
        if (!name)
                return false;
        return strcmp(name, BROKER_NAME) == 0 || name_is_valid_unique(name) ||
               name_is_valid_wellknown(name);
}
