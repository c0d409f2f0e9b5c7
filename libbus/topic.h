/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Syntax of topics, subscription patterns and bus names, shared by the broker
 * and the client library so both reject the same strings.
 *
 * Topics are dot-separated tokens ("sensors.kitchen.temp"): 1..TOPIC_MAX bytes,
 * no empty token (so no leading, trailing or double dot), token bytes printable
 * ASCII 0x21..0x7E other than '.', '*' and '>'. A pattern may in addition use
 * the tokens "*" (exactly one token) and ">" (one or more trailing tokens, last
 * token only); a wildcard must be a whole token ("a*" and ">b" are invalid).
 * Topics starting with "bus." (and "bus" itself) are reserved for broker
 * events: clients may subscribe to them but not publish on them.
 *
 * Topic functions take a length and do not need a NUL terminator, because the
 * broker validates topics in place inside received buffers; an embedded NUL is
 * simply an invalid byte. Name functions take NUL-terminated strings.
 *
 * Names follow the D-Bus rules: a well-known name ("org.example.Calc") is
 * 1..NAME_MAX_LEN bytes of at least two non-empty elements of [A-Za-z0-9_-],
 * no element starting with a digit. A unique id is ":1." followed by a decimal
 * number without leading zeros (1..20 digits). The broker itself is "bus",
 * which is a valid destination but not a name anyone can own.
 *
 * All functions are pure: no allocation, no global state, NULL is invalid.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define TOPIC_MAX 1024
#define NAME_MAX_LEN 255

bool topic_is_valid(const char *topic, size_t len);
bool topic_pattern_is_valid(const char *pattern, size_t len);

/* Whether pattern matches the concrete topic. Both must be valid; for invalid
 * input the answer is unspecified, but no byte past either length is read. */
bool topic_pattern_matches(const char *pattern, size_t plen, const char *topic, size_t tlen);

/* True for "bus" and anything starting with "bus.". */
bool topic_is_reserved(const char *topic, size_t len);

bool name_is_valid_wellknown(const char *name);
bool name_is_valid_unique(const char *name);
/* A well-known name, a unique id, or exactly "bus". */
bool name_is_valid_destination(const char *name);
