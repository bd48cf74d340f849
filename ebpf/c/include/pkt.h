/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Where header fields sit, named by the kernel's own structs (offsetof),
 * and reading packet bytes from either hook. No maps and no writes: the
 * resolver's object shares it with the overlay.
 */
#ifndef SHOAL_PKT_H
#define SHOAL_PKT_H

#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>

/* iphdr.frag_off bits (the kernel's net/ip.h is not uapi). */
#ifndef IP_MF
#define IP_MF 0x2000
#endif
#ifndef IP_DF
#define IP_DF 0x4000
#endif
#ifndef IP_OFFSET
#define IP_OFFSET 0x1fff
#endif

/* An IPv4 header's fields, from its start. */
#define IPV4_CSUM offsetof(struct iphdr, check)
#define IPV4_SRC offsetof(struct iphdr, saddr)
#define IPV4_DST offsetof(struct iphdr, daddr)

/* TCP and UDP keep their ports at the same place, so one offset serves
 * both (checked below); their checksums differ, see l4_csum_off. */
#define L4_SPORT offsetof(struct udphdr, source)
#define L4_DPORT offsetof(struct udphdr, dest)
_Static_assert(offsetof(struct tcphdr, source) == L4_SPORT &&
		       offsetof(struct tcphdr, dest) == L4_DPORT,
	       "TCP and UDP ports share their offsets");

/* The checksum of a TCP or UDP header, from its start. */
static __always_inline int l4_csum_off(__u8 proto)
{
	return proto == IPPROTO_TCP ? offsetof(struct tcphdr, check) :
				      offsetof(struct udphdr, check);
}

#define VXLAN_FLAG_I 0x08

struct vxlanhdr {
	__u8 flags;
	__u8 reserved1[3];
	__be32 vni_reserved; /* VNI in the upper 24 bits */
};

/* `len` bytes at `off` of either hook's packet. Readers shared by both
 * hooks pass `xdp` as a constant, which inlining folds away. */
static __always_inline int pkt_load(void *ctx, int xdp, __u32 off, void *to, __u32 len)
{
	if (xdp)
		return bpf_xdp_load_bytes(ctx, off, to, len);
	return bpf_skb_load_bytes(ctx, off, to, len);
}

/* Past this offset skb_copy leaves the reading to the helper (a bound the
 * verifier needs for a variable offset into the packet). */
#define SKB_COPY_MAX_OFF 256

/* `len` bytes at `off` of a tc packet: copied straight from its head when
 * the head holds them (a frame's headers, always, once encap or decap
 * has seen it), else through bpf_skb_load_bytes. The helper call is what
 * a hot path saves. `len` must be a constant. */
static __always_inline int skb_copy(struct __sk_buff *skb, __u32 off, void *to, const __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (off <= SKB_COPY_MAX_OFF && data + off + len <= data_end) {
		__builtin_memcpy(to, data + off, len);
		return 0;
	}
	return bpf_skb_load_bytes(skb, off, to, len);
}

#endif
