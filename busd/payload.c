/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Checks and quota of memfd payloads; see payload.h. */
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "busd/payload.h"
#include "libbus/macro.h"
#include "libbus/memfd.h"

PayloadAccount *payload_account_new(void) {
        PayloadAccount *a = calloc(1, sizeof(*a));

        if (a)
                a->refs = 1;
        return a;
}

PayloadAccount *payload_account_unref(PayloadAccount *a) {
        if (a && --a->refs == 0)
                free(a);
        return NULL;
}

static void payload_release(WireFds *f, void *userdata) {
        PayloadAccount *a = userdata;
        struct stat st;

        /* The descriptor was checked and sealed: its size cannot have
         * changed since it was charged. */
        if (fstat(f->fds[f->n - 1], &st) == 0)
                a->bytes -= MIN(a->bytes, (uint64_t) st.st_size);
        payload_account_unref(a);
}

int payload_check(const ManagerConfig *config, PayloadAccount *account, const WireFrame *f,
                  uint64_t memfd_size) {
        int r;

        if (f->preamble.payload_len != 0 || !f->fds || f->fds->n == 0)
                return PAYLOAD_E_MALFORMED;
        if (memfd_size > config->max_memfd_payload)
                return PAYLOAD_E_TOO_LARGE;
        /* Anything but a memfd sealed four ways would let its sender rewrite
         * or truncate what receivers map. */
        r = memfd_check_sealed(f->fds->fds[f->fds->n - 1], memfd_size);
        if (r == -EPERM)
                return PAYLOAD_E_NOT_SEALED;
        if (r == -EBADMSG)
                return PAYLOAD_E_SIZE;
        if (r < 0)
                return r;
        if (account->bytes + memfd_size > config->max_memfd_queued)
                return PAYLOAD_E_QUOTA;
        if (f->fds->on_free)
                return PAYLOAD_E_MALFORMED; /* charged already: cannot happen */

        account->bytes += memfd_size;
        account->refs++;
        f->fds->on_free = payload_release;
        f->fds->on_free_userdata = account;
        return 0;
}

const char *payload_strerror(int outcome) {
        switch (outcome) {
        case PAYLOAD_E_MALFORMED:
                return "a memfd payload needs an empty inline payload and a descriptor";
        case PAYLOAD_E_NOT_SEALED:
                return "the payload descriptor is not a memfd sealed against write, shrink, grow and seal";
        case PAYLOAD_E_SIZE:
                return "the payload memfd's size differs from the envelope's";
        case PAYLOAD_E_TOO_LARGE:
                return "the payload memfd is larger than the broker allows";
        case PAYLOAD_E_QUOTA:
                return "too much of the sender's shared memory is queued in the broker";
        default:
                return "bad payload";
        }
}
