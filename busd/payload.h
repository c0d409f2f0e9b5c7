/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Shared-memory payloads in the broker: checking that a frame's memfd
 * payload is what its envelope says (a memfd sealed against any change, of
 * exactly the announced size), and charging its bytes to the sender's quota
 * for as long as the broker holds the descriptor (queued to receivers or
 * retained). The bytes are never read or mapped: the broker only forwards
 * the descriptor.
 */
#pragma once

#include <stdint.h>

#include "busd/manager.h"
#include "libbus/sockio.h"

/* Bytes of shared memory a sender has in the broker; outlives the peer while
 * its memfds are still queued. */
typedef struct PayloadAccount {
        unsigned refs;
        uint64_t bytes;
} PayloadAccount;

PayloadAccount *payload_account_new(void);
PayloadAccount *payload_account_unref(PayloadAccount *a);

/* Expected outcomes of payload_check(). */
enum {
        PAYLOAD_E_MALFORMED = 1,  /* inline bytes with a memfd size, or no descriptor */
        PAYLOAD_E_NOT_SEALED,     /* not a memfd, or seals missing */
        PAYLOAD_E_SIZE,           /* size differs from the envelope's */
        PAYLOAD_E_TOO_LARGE,      /* over the per-message limit */
        PAYLOAD_E_QUOTA,          /* the sender has too much in the broker already */
};

/* Checks the memfd payload of frame f (memfd_size from its envelope) and,
 * if it is good, charges it to account until f's descriptors are released.
 * Returns 0, a PAYLOAD_E_* outcome, or a negative errno. */
int payload_check(const ManagerConfig *config, PayloadAccount *account, const WireFrame *f,
                  uint64_t memfd_size);

/* Text for a PAYLOAD_E_* outcome, for the error sent to the peer. */
const char *payload_strerror(int outcome);
