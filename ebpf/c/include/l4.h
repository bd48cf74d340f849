/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Rewriting an IPv4 packet's addresses and TCP/UDP ports with incremental
 * checksum fixes. No maps: the resolver's loopback program (its own
 * object, loaded in every task's namespace) shares it with the overlay.
 */
#ifndef SHOAL_L4_H
#define SHOAL_L4_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

static __always_inline int l4_csum_off(__u8 proto)
{
	return proto == IPPROTO_TCP ? 16 : 6;
}

/* Rewrites the IPv4 address at `addr_off` (12: source, 16: destination)
 * and fixes the IP and L4 checksums incrementally. */
static __always_inline int rewrite_addr(struct __sk_buff *skb, int l4, __u8 proto, int addr_off,
					__be32 from, __be32 to)
{
	__u64 flags = BPF_F_PSEUDO_HDR | sizeof(to);

	if (proto == IPPROTO_UDP)
		flags |= BPF_F_MARK_MANGLED_0; /* a zero UDP checksum stays zero */
	if (bpf_l4_csum_replace(skb, l4 + l4_csum_off(proto), from, to, flags))
		return -1;
	if (bpf_l3_csum_replace(skb, ETH_HLEN + 10, from, to, sizeof(to)))
		return -1;
	return bpf_skb_store_bytes(skb, ETH_HLEN + addr_off, &to, sizeof(to), 0);
}

/* Rewrites the 16-bit port at `off` in the L4 header, fixing its checksum. */
static __always_inline int rewrite_port(struct __sk_buff *skb, int l4, __u8 proto, int off,
					__be16 from, __be16 to)
{
	__u64 flags = sizeof(to);

	if (from == to)
		return 0;
	if (proto == IPPROTO_UDP)
		flags |= BPF_F_MARK_MANGLED_0;
	if (bpf_l4_csum_replace(skb, l4 + l4_csum_off(proto), from, to, flags))
		return -1;
	return bpf_skb_store_bytes(skb, l4 + off, &to, sizeof(to), 0);
}

#endif
