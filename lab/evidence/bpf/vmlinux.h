/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The few kernel types kfree_skb.bpf.c reads, instead of a 130 000-line bpftool dump
 * tied to one kernel. preserve_access_index makes every field access a CO-RE
 * relocation: libbpf finds the field by name in the running kernel's BTF (through
 * anonymous unions and structs), so offsets here are irrelevant and only names matter.
 */
#ifndef FAULTLAB_VMLINUX_H
#define FAULTLAB_VMLINUX_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
	/* Absent on old kernels: the program checks bpf_core_field_exists(). */
	__u64 net_cookie;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	possible_net_t nd_net;
};

struct sock_common {
	possible_net_t skc_net;
};

struct sock {
	struct sock_common __sk_common;
};

struct sk_buff {
	struct net_device *dev;
	struct sock *sk;
};

#pragma clang attribute pop

#endif
