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
#include "shoal.h"
#include "pkt.h"

/* Rewrites the address at `addr_off` (IPV4_SRC or IPV4_DST) of the IPv4
 * header behind Ethernet and fixes the IP and L4 checksums incrementally.
 * DROP_NONE, or DROP_LB_REWRITE if the kernel refused. */
static __always_inline __u32 rewrite_addr(struct __sk_buff *skb, int l4, __u8 proto, int addr_off,
					  __be32 from, __be32 to)
{
	__u64 flags = BPF_F_PSEUDO_HDR | sizeof(to);

	if (proto == IPPROTO_UDP)
		flags |= BPF_F_MARK_MANGLED_0; /* a zero UDP checksum stays zero */
	if (bpf_l4_csum_replace(skb, l4 + l4_csum_off(proto), from, to, flags) ||
	    bpf_l3_csum_replace(skb, ETH_HLEN + IPV4_CSUM, from, to, sizeof(to)) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + addr_off, &to, sizeof(to), 0))
		return DROP_LB_REWRITE;
	return DROP_NONE;
}

/* Rewrites the port at `off` (L4_SPORT or L4_DPORT) of the L4 header,
 * fixing its checksum. DROP_NONE, or DROP_LB_REWRITE if refused. */
static __always_inline __u32 rewrite_port(struct __sk_buff *skb, int l4, __u8 proto, int off,
					  __be16 from, __be16 to)
{
	__u64 flags = sizeof(to);

	if (from == to)
		return DROP_NONE;
	if (proto == IPPROTO_UDP)
		flags |= BPF_F_MARK_MANGLED_0;
	if (bpf_l4_csum_replace(skb, l4 + l4_csum_off(proto), from, to, flags) ||
	    bpf_skb_store_bytes(skb, l4 + off, &to, sizeof(to), 0))
		return DROP_LB_REWRITE;
	return DROP_NONE;
}

/* RFC 1624: a 16-bit one's complement checksum after a 32-bit field of the
 * data it covers changed from `from` to `to` (any byte order, as long as
 * all three are in the same one). For headers the helpers cannot reach:
 * quoted inside ICMP errors, or XDP's, which has no skb. */
static __always_inline __u16 csum_replace4(__u16 csum, __u32 from, __u32 to)
{
	__u32 s = (__u16)~csum;

	s += (~from >> 16) & 0xffff;
	s += ~from & 0xffff;
	s += to >> 16;
	s += to & 0xffff;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return ~s;
}

/* The same for a 16-bit field. */
static __always_inline __u16 csum_replace2(__u16 csum, __u16 from, __u16 to)
{
	__u32 s = (__u16)~csum;

	s += (__u16)~from;
	s += to;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return ~s;
}

#endif
