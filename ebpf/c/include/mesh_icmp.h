/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The routing mesh's ICMP, as a router and a NAT would answer: a client's
 * packet too big to encapsulate gets "fragmentation needed" from the entry
 * node (mesh_too_big), and an ICMP error a task sends about a mesh flow is
 * made to come from the published address (mesh_icmp_flow finds the flow,
 * mesh_icmp_restore rewrites it). Included by mesh.h after its maps.
 */
#ifndef SHOAL_MESH_ICMP_H
#define SHOAL_MESH_ICMP_H

/* The largest client packet an encapsulated mesh flow carries: the
 * underlay MTU (mesh_mss + 90) less the 50 bytes of VXLAN; 0: no limit. */
static __always_inline __u32 mesh_max_packet(const struct shoal_config *cfg)
{
	return cfg->mesh_mss ? cfg->mesh_mss + 40 : 0;
}

/* From linux/icmp.h (see lb.h for the others). */
#define ICMP_FRAG_NEEDED 4

/*
 * A client's packet too big for the underlay once encapsulated, with DF
 * set: turned, in place, into the ICMP "fragmentation needed" a router
 * would send, from the published address to the client, with the MTU the
 * mesh can carry (RFC 792/1191: the original IP header and 8 bytes of its
 * data). The client's path MTU then shrinks instead of its packets
 * vanishing (the kernel's vxlan answers the same way). *client is where
 * the answer goes; non-zero if the packet could not be rewritten.
 */
static __always_inline int mesh_too_big(struct __sk_buff *skb, __u32 mtu, __be32 *client)
{
	struct {
		struct iphdr ip;
		__u8 type;
		__u8 code;
		__u16 check;
		__u16 unused;
		__u16 mtu;
	} h = {};
	/* the client's IPv4 header (no options) + 8 bytes of its data */
	__u32 orig[(sizeof(struct iphdr) + 8) / sizeof(__u32)];
	__s64 sum;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, orig, sizeof(orig)))
		return -1;
	h.ip.version = 4;
	h.ip.ihl = 5;
	h.ip.ttl = 64;
	h.ip.protocol = IPPROTO_ICMP;
	h.ip.tot_len = bpf_htons(sizeof(h) + sizeof(orig));
	h.ip.saddr = ((struct iphdr *)orig)->daddr;
	h.ip.daddr = ((struct iphdr *)orig)->saddr;
	h.ip.check = ipv4_csum(&h.ip);
	h.type = ICMP_DEST_UNREACH;
	h.code = ICMP_FRAG_NEEDED;
	h.mtu = bpf_htons(mtu);
	sum = bpf_csum_diff(0, 0, (__be32 *)&h.type, sizeof(h) - sizeof(h.ip), 0);
	if (sum < 0)
		return -1;
	sum = bpf_csum_diff(0, 0, orig, sizeof(orig), sum);
	if (sum < 0)
		return -1;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	h.check = ~sum;
	/* Keep Ethernet + the quoted 28 bytes, then open room for the new
	 * IPv4 and ICMP headers in front of them. */
	if (bpf_skb_change_tail(skb, ETH_HLEN + sizeof(orig), 0) ||
	    bpf_skb_adjust_room(skb, sizeof(h), BPF_ADJ_ROOM_MAC, 0) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &h, sizeof(h), 0))
		return -1;
	*client = h.ip.daddr;
	return 0;
}

/*
 * An ICMP error (unreachable, time exceeded) whose IPv4 header sits at
 * `l3` and quotes a packet of a mesh flow as its task saw it (client ->
 * task:target): that flow's reverse entry, the quoted header and ports
 * filled in; NULL for anything else.
 */
static __always_inline struct mesh_rev_value *mesh_icmp_flow(struct __sk_buff *skb, int l3,
							     __u32 vni, struct iphdr *ip,
							     struct iphdr *in, __be16 *inports)
{
	struct icmp_echo_hdr ic;
	struct ct_key rk = {};
	int l4 = l3 + sizeof(*ip);

	if (bpf_skb_load_bytes(skb, l3, ip, sizeof(*ip)) || ip->version != 4 || ip->ihl != 5 ||
	    ip->protocol != IPPROTO_ICMP || (ip->frag_off & bpf_htons(IP_OFFSET)))
		return NULL;
	if (bpf_skb_load_bytes(skb, l4, &ic, sizeof(ic)) ||
	    (ic.type != ICMP_DEST_UNREACH && ic.type != ICMP_TIME_EXCEEDED))
		return NULL;
	if (bpf_skb_load_bytes(skb, l4 + sizeof(ic), in, sizeof(*in)) || in->version != 4 ||
	    in->ihl != 5 ||
	    (in->protocol != IPPROTO_TCP && in->protocol != IPPROTO_UDP))
		return NULL;
	if (bpf_skb_load_bytes(skb, l4 + sizeof(ic) + sizeof(*in), inports, 2 * sizeof(__be16)))
		return NULL;
	ct_key_set(&rk, vni, in->daddr, in->saddr, inports[1], inports[0], in->protocol);
	return bpf_map_lookup_elem(&shoal_mesh_rev, &rk);
}

/*
 * The ICMP error of mesh_icmp_flow made to come from the published
 * address, about the packet the client sent to it: the outer source, the
 * quoted destination address and port become the node's address and the
 * published port (IPv4 and ICMP checksums follow; the quoted L4 checksum,
 * which no receiver checks, is left). As a NAT translates related ICMP.
 * DROP_NONE, or DROP_LB_REWRITE if the kernel refused.
 */
static __always_inline __u32 mesh_icmp_restore(struct __sk_buff *skb, int l3,
					     const struct iphdr *ip, const struct iphdr *in,
					     const __be16 *inports,
					     const struct mesh_rev_value *rv)
{
	int l4 = l3 + sizeof(*ip), q = l4 + sizeof(struct icmp_echo_hdr);
	__be32 to = rv->node_ip;
	__u16 qcheck = csum_replace4(in->check, in->daddr, to);
	__be16 port = rv->port;

	if (bpf_l3_csum_replace(skb, l3 + IPV4_CSUM, ip->saddr, to, sizeof(to)) ||
	    bpf_skb_store_bytes(skb, l3 + IPV4_SRC, &to, sizeof(to), 0))
		return DROP_LB_REWRITE;
	if (bpf_l4_csum_replace(skb, l4 + ICMP_CSUM, in->daddr, to, sizeof(to)) ||
	    bpf_skb_store_bytes(skb, q + IPV4_DST, &to, sizeof(to), 0) ||
	    bpf_l4_csum_replace(skb, l4 + ICMP_CSUM, in->check, qcheck, sizeof(qcheck)) ||
	    bpf_skb_store_bytes(skb, q + IPV4_CSUM, &qcheck, sizeof(qcheck), 0) ||
	    bpf_l4_csum_replace(skb, l4 + ICMP_CSUM, inports[1], port, sizeof(port)) ||
	    bpf_skb_store_bytes(skb, q + sizeof(*in) + L4_DPORT, &port, sizeof(port), 0))
		return DROP_LB_REWRITE;
	count_stat(STAT_MESH_REPLY);
	return DROP_NONE;
}

#endif
