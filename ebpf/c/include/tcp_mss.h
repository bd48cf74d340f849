/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The TCP MSS clamp of a routing-mesh client's SYN whose flow gets
 * encapsulated: its MSS option is lowered so that full-size segments still
 * fit the underlay after the 50 bytes of VXLAN (the client knows nothing
 * of the overlay, and an ICMP "too big" from the middle of it would not
 * reach it). One option walk for both hooks; each writes with its own
 * helpers (tc must keep the skb's checksum state right, XDP has no skb).
 */
#ifndef SHOAL_TCP_MSS_H
#define SHOAL_TCP_MSS_H

#include <linux/bpf.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "pkt.h"
#include "l4.h"

/* TCP option kinds and the MSS option's length (the kernel's net/tcp.h,
 * which is not uapi). */
#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_MSS 2
#define TCPOLEN_MSS 4

/*
 * The MSS option of the SYN (not SYN-ACK) whose TCP header is at `l4`, if
 * it asks for more than `mss`: the offset of its value in the packet, and
 * the value in *cur. 0 when there is nothing to lower.
 */
static __always_inline __u32 tcp_mss_to_clamp(void *ctx, int xdp, __u32 l4, __u32 mss,
					      __be16 *cur)
{
	struct tcphdr tcp;
	__u32 off, end;
	int i;

	/* The header up to its flags (what the walk needs). */
	if (!mss || pkt_load(ctx, xdp, l4, &tcp, offsetof(struct tcphdr, window)))
		return 0;
	if (!tcp.syn || tcp.ack)
		return 0;
	end = l4 + tcp.doff * 4;
	off = l4 + sizeof(tcp);
	/* Options are at most 40 bytes: 10 steps cover any sane layout. */
	for (i = 0; i < 10 && off + 1 < end; i++) {
		__u8 opt[2]; /* kind, length */

		if (pkt_load(ctx, xdp, off, opt, sizeof(opt)))
			return 0;
		if (opt[0] == TCPOPT_EOL)
			return 0;
		if (opt[0] == TCPOPT_NOP) {
			off += 1;
			continue;
		}
		if (opt[1] < 2)
			return 0;
		if (opt[0] == TCPOPT_MSS && opt[1] == TCPOLEN_MSS && off + TCPOLEN_MSS <= end) {
			/* The value follows kind and length. */
			if (pkt_load(ctx, xdp, off + sizeof(opt), cur, sizeof(*cur)) ||
			    bpf_ntohs(*cur) <= mss)
				return 0;
			return off + sizeof(opt);
		}
		off += opt[1];
	}
	return 0;
}

/* tc: the checksum through the kernel, which knows the skb's offload state. */
static __always_inline void tc_clamp_mss(struct __sk_buff *skb, __u32 l4, __u32 mss)
{
	__be16 cur, want = bpf_htons(mss);
	__u32 at = tcp_mss_to_clamp(skb, 0, l4, mss, &cur);

	if (!at || bpf_l4_csum_replace(skb, l4 + offsetof(struct tcphdr, check), cur, want,
				       sizeof(want)))
		return;
	bpf_skb_store_bytes(skb, at, &want, sizeof(want), 0);
}

/* XDP: the checksum by RFC 1624 (a frame, no offload state). */
static __always_inline void xdp_clamp_mss(struct xdp_md *ctx, __u32 l4, __u32 mss)
{
	__be16 cur, want = bpf_htons(mss);
	__u32 at = tcp_mss_to_clamp(ctx, 1, l4, mss, &cur);
	__u32 check_at = l4 + offsetof(struct tcphdr, check);
	__u16 check;

	if (!at || bpf_xdp_load_bytes(ctx, check_at, &check, sizeof(check)))
		return;
	check = csum_replace2(check, cur, want);
	if (bpf_xdp_store_bytes(ctx, check_at, &check, sizeof(check)))
		return;
	bpf_xdp_store_bytes(ctx, at, &want, sizeof(want));
}

#endif
