/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Builds a google.protobuf.FileDescriptorSet from protoc-c's run-time
 * descriptors (ProtobufCServiceDescriptor, ProtobufCMessageDescriptor,
 * ProtobufCEnumDescriptor), so a program describes the types it speaks
 * without shipping .proto files: libbus answers bus.Introspect with it, the
 * broker describes its own service, and busdctl knows the broker's types.
 *
 * What protoc-c's descriptors keep is what the set holds: full names,
 * fields (name, number, label, type, type name, packed), nested types,
 * enums and their values, oneofs (under made-up names, "_oneof_<first
 * member>": protoc-c keeps no oneof names), services and their methods, and
 * which file imports which (a file per package). Map entries are marked
 * (options.map_entry) by protoc's own rule, which protoc-c's descriptors
 * still show: a nested message "<CamelCaseField>Entry" of exactly the fields
 * key = 1 and value = 2, used by a repeated field of its parent. It loses
 * json_name (readers derive it), proto3 "optional" (which protoc-c 1.4 does
 * not compile), default values, comments and other options. A file is
 * "proto3" if any of its fields has protoc-c's LABEL_NONE, else "proto2".
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct ProtobufCMessageDescriptor ProtobufCMessageDescriptor;
typedef struct ProtobufCEnumDescriptor ProtobufCEnumDescriptor;
typedef struct ProtobufCServiceDescriptor ProtobufCServiceDescriptor;

typedef struct DescriptorSet DescriptorSet;

int descriptor_set_new(DescriptorSet **ret);
DescriptorSet *descriptor_set_free(DescriptorSet *set);

/* Each adder adds the type and, recursively, every message and enum type its
 * fields (or a service's methods) use. Adding a type twice is a no-op.
 * Returns 1 if something was added, 0 if all of it was there, -EINVAL for a
 * descriptor without protoc-c's magic, -ENOMEM. */
int descriptor_set_add_service(DescriptorSet *set, const ProtobufCServiceDescriptor *desc);
int descriptor_set_add_message(DescriptorSet *set, const ProtobufCMessageDescriptor *desc);
int descriptor_set_add_enum(DescriptorSet *set, const ProtobufCEnumDescriptor *desc);

/* Number of services and of message and enum types added so far. */
size_t descriptor_set_size(const DescriptorSet *set);

/* The serialized FileDescriptorSet: one FileDescriptorProto per protobuf
 * package (named after it, "<package with / for .>.proto"), in a stable
 * order. *ret is malloc'd; the caller frees it. */
int descriptor_set_pack(const DescriptorSet *set, uint8_t **ret, size_t *ret_size);
