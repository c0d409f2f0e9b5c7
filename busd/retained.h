/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Retained messages: the last publish with the RETAIN flag on each topic,
 * handed to every new subscription whose pattern matches it before the
 * subscription is acknowledged. A retained message keeps its own copy of
 * envelope and payload (not the sender's 64 KiB receive chunk), the sender's
 * stamp, and its descriptors, until it is replaced or deleted.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "busd/manager.h"

int retained_store_new(RetainedStore **ret);
RetainedStore *retained_store_free(RetainedStore *s);

/* Keeps o as the retained message of topic (NUL-terminated), replacing the
 * previous one; a message without payload (no inline bytes and no memfd,
 * has_payload false) deletes it instead. */
int retained_set(RetainedStore *s, const char *topic, const OutFrame *o, bool has_payload);

typedef void (*retained_fn)(const char *topic, const OutFrame *o, void *userdata);
/* Calls fn for each retained message whose topic the pattern matches. */
unsigned retained_foreach_matching(RetainedStore *s, const char *pattern, retained_fn fn,
                                   void *userdata);
unsigned retained_count(const RetainedStore *s);
