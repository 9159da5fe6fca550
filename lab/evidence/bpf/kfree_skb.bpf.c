// SPDX-License-Identifier: GPL-2.0
/*
 * Counts skb drops per (network namespace, reason, location) on the skb:kfree_skb
 * tracepoint, for the namespaces userspace put in `lab_netns` only. Userspace reads
 * the `drops` map when the cell ends: no per-packet event leaves the kernel.
 *
 * The namespace of a drop is that of skb->dev (receive and forward paths), else of
 * skb->sk (output path: ip_output() and the routing code free skbs that have no
 * device yet, only the sending socket), else of the tracepoint's rx_sk (6.12+:
 * sk_skb_reason_drop() passes the receiving socket of skbs whose dev/sk fields are
 * reused, as UDP's dev_scratch reuses skb->dev).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

struct drop_key {
	__u64 netns;
	__u64 location;
	__u32 reason;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct drop_key);
	__type(value, __u64);
} drops SEC(".maps");

/* Namespace ids (cookies, or inode numbers) of the lab's nodes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} lab_netns SEC(".maps");

/* [0]: drops whose namespace could not be read (machine-wide); [1]: drops in the
 * lab not counted because `drops` was full. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} misses SEC(".maps");

/* Set by userspace before load: identify namespaces by net->net_cookie (what
 * SO_NETNS_COOKIE returns) rather than by ns.inum. */
const volatile bool use_cookie = true;
/* Set by userspace: the tracepoint has a 4th argument, rx_sk (6.12+). */
const volatile bool has_rx_sk = false;

static __always_inline __u64 net_id(struct net *net)
{
	if (!net)
		return 0;
	if (use_cookie && bpf_core_field_exists(net->net_cookie))
		return BPF_CORE_READ(net, net_cookie);
	return BPF_CORE_READ(net, ns.inum);
}

static __always_inline void miss(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&misses, &which);
	if (n)
		__sync_fetch_and_add(n, 1);
}

SEC("tp_btf/kfree_skb")
int count_drop(unsigned long long *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	struct drop_key key = {};
	struct net_device *dev;
	struct sock *sk;
	__u64 one = 1, *n;

	dev = BPF_CORE_READ(skb, dev);
	if (dev)
		key.netns = net_id(BPF_CORE_READ(dev, nd_net.net));
	if (!key.netns) {
		sk = BPF_CORE_READ(skb, sk);
		if (sk)
			key.netns = net_id(BPF_CORE_READ(sk, __sk_common.skc_net.net));
	}
	if (!key.netns && has_rx_sk) {
		sk = (struct sock *)ctx[3];
		if (sk)
			key.netns = net_id(BPF_CORE_READ(sk, __sk_common.skc_net.net));
	}
	if (!key.netns) {
		miss(0);
		return 0;
	}
	if (!bpf_map_lookup_elem(&lab_netns, &key.netns))
		return 0;
	key.location = ctx[1];
	key.reason = (__u32)ctx[2];
	n = bpf_map_lookup_elem(&drops, &key);
	if (n) {
		__sync_fetch_and_add(n, 1);
		return 0;
	}
	if (bpf_map_update_elem(&drops, &key, &one, BPF_NOEXIST)) {
		/* Another CPU inserted it first (EEXIST), or the map is full. */
		n = bpf_map_lookup_elem(&drops, &key);
		if (n)
			__sync_fetch_and_add(n, 1);
		else
			miss(1);
	}
	return 0;
}
