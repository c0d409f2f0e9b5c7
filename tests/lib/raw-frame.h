/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Raw frames for tests that must send what libbus never would (unsealed
 * memfds, undeclared descriptors, forged fields) and read the broker's
 * answers without libbus. Blocking I/O with deadlines; no sleeps.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "proto/bus.pb-c.h"

/* Reads exactly len bytes: 0, -EPIPE (end of file first), -ETIMEDOUT, or
 * another -errno. */
int test_read_exact(int fd, void *buf, size_t len, int timeout_ms);

/* Reads up to cap bytes until end of file: the bytes read, or -ETIMEDOUT
 * (no end of file in time), -ENOBUFS (more than cap), another -errno. */
ssize_t test_read_to_eof(int fd, void *buf, size_t cap, int timeout_ms);

/* Sends one frame (preamble, env, payload), with n_fds descriptors as
 * SCM_RIGHTS on its first byte. The preamble declares n_fds. */
bool test_raw_send(int fd, const Bus__Envelope *env, const void *payload, size_t plen,
                   const int *fds, unsigned n_fds);

/* The next frame's envelope (free with bus__envelope__free_unpacked()), or
 * NULL on end of file, error or timeout. The payload is read and dropped. */
Bus__Envelope *test_raw_read_envelope(int fd, int timeout_ms);

/* Connects to address and says Hello: the descriptor, or -1. */
int test_raw_open(const char *address, int timeout_ms);
