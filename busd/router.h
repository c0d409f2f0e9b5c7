/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The router decides where each frame goes: publishes to the subscriptions
 * that match (one member per queue group), requests to the owner of their
 * destination or to the broker's own service, replies back to the caller of a
 * pending request. It also builds the frames the broker sends itself: errors,
 * replies of the "bus" service and events on "bus." topics. While monitors
 * exist, each of those messages is also handed to monitor_copy().
 *
 * Payloads are never copied: a delivery references the sender's receive
 * chunk, and the sender's envelope bytes go out unchanged with the sender's
 * stamp and a per-recipient suffix appended.
 */
#pragma once

#include <stdint.h>

#include "busd/manager.h"
#include "busd/name.h"
#include "libbus/sockio.h"

typedef struct ProtobufCMessage ProtobufCMessage;

void router_handle_frame(Peer *p, const WireFrame *f);
/* Undoes everything a closing peer had: names, subscriptions, pending calls;
 * announces its departure. Safe on a half-built peer. */
void router_peer_gone(Peer *p);
/* Drops the peer's names (announcing owner changes) and subscriptions. */
void router_peer_drop_registrations(Peer *p);

/* Frames from the broker itself. Failures (no memory, peer going away) are
 * logged; the callers have nothing better to do with them. */
void router_send_error(Manager *m, Peer *to, uint64_t reply_serial, const char *name,
                       const char *format, ...) _printf_(5, 6);
void router_send_reply(Manager *m, Peer *to, uint64_t reply_serial,
                       const ProtobufCMessage *payload);
void router_publish_event(Manager *m, const char *topic, const ProtobufCMessage *payload);

/* Publishes bus.name.<name> for a change of primary owner (a name_change_fn;
 * userdata is the Manager). */
void router_name_changed(const NameChange *change, void *userdata);
/* Publishes bus.peer.connected once a peer has said Hello. */
void router_peer_greeted(Peer *p);

/* Delivers one publish frame (already stamped) to a single subscription, as
 * a retained copy. Used when a subscription is added. */
int router_deliver_retained(Peer *to, uint64_t sub_id, const OutFrame *o);
