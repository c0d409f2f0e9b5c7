/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The broker's own service, "bus": Hello, names, subscriptions, listings,
 * stats, monitoring (BecomeMonitor) and its own introspection
 * (bus.Introspect). Each method unpacks its <Method>Request payload, acts,
 * and replies with <Method>Reply (proto/bus.proto) or an error,
 * synchronously.
 */
#pragma once

#include "busd/envelope.h"
#include "busd/manager.h"
#include "libbus/sockio.h"

/* The first frame of a connection. */
void driver_hello(Peer *p, const EnvelopeView *env, const WireFrame *f);
/* Any later request addressed to "bus". */
void driver_handle(Peer *p, const EnvelopeView *env, const WireFrame *f);
