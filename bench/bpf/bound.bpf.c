// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * overlay-bench's bound, path (e): the least an eBPF VXLAN overlay on
 * Shoal's topology can do. On the endpoint's host-side veth, encap with
 * bpf_skb_adjust_room and headers whose every address is compiled in,
 * then bpf_redirect to the underlay; on the underlay, decap and
 * bpf_redirect_peer into the endpoint. No maps, no lookups, no counters,
 * no ARP, no checks beyond "is it VXLAN". Not part of Shoal: what Shoal
 * adds to it is the price of its logic, what it takes from the underlay
 * the price of the topology (one more veth per side) and of encap/decap.
 *
 * Built by the bench for its namespaces' addresses with clang-19:
 *   -DENC -DDMAC= -DSMAC= -DSIP= -DDIP= -DUL_IF=   (the host's encap)
 *   -DDEC -DEMAC= -DEP_IF=                          (the host's decap)
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ENCAP_LEN 50 /* outer IPv4 + UDP + VXLAN + inner Ethernet */
#define IPV4_DF 0x4000
#define PROTO_UDP 17 /* netinet/in.h does not mix with the kernel's headers here */
#define ADJ_DECAP_L3_IPV4 (1ULL << 7) /* BPF_F_ADJ_ROOM_DECAP_L3_IPV4, kernel 6.3 */

struct vxlan_hdr {
	__be32 flags;
	__be32 vni;
};

static __always_inline void set_mac(__u8 *d, __u64 m)
{
	for (int i = 0; i < 6; i++)
		d[i] = m >> (8 * (5 - i));
}

#ifdef ENC
SEC("tc")
int bound_encap(struct __sk_buff *skb)
{
	__u32 inner_len = skb->len;
	__be16 sport = bpf_htons(49152 + (skb->hash & 0x3fff));
	struct ethhdr *eth;
	struct iphdr *ip;
	struct udphdr *udp;
	struct vxlan_hdr *vx;
	void *data, *end;
	__u32 sum = 0;
	__u16 *w;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if (bpf_skb_adjust_room(skb, ENCAP_LEN, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 |
					BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
					BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN)))
		return TC_ACT_SHOT;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	if (data + ENCAP_LEN + ETH_HLEN > end)
		return TC_ACT_SHOT;
	/* The original Ethernet header, still at 0, becomes the inner one. */
	__builtin_memcpy(data + ENCAP_LEN, data, ETH_HLEN);
	eth = data;
	ip = (void *)(eth + 1);
	udp = (void *)(ip + 1);
	vx = (void *)(udp + 1);
	set_mac(eth->h_dest, DMAC);
	set_mac(eth->h_source, SMAC);
	eth->h_proto = bpf_htons(ETH_P_IP);
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = 0;
	ip->tot_len = bpf_htons(inner_len + ENCAP_LEN - ETH_HLEN);
	ip->id = 0;
	ip->frag_off = bpf_htons(IPV4_DF);
	ip->ttl = 64;
	ip->protocol = PROTO_UDP;
	ip->check = 0;
	ip->saddr = bpf_htonl(SIP);
	ip->daddr = bpf_htonl(DIP);
	w = (void *)ip;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	ip->check = ~sum;
	udp->source = sport;
	udp->dest = bpf_htons(4789);
	udp->len = bpf_htons(inner_len + ENCAP_LEN - ETH_HLEN - sizeof(*ip));
	udp->check = 0;
	vx->flags = bpf_htonl(0x08000000);
	vx->vni = bpf_htonl(42 << 8);
	return bpf_redirect(UL_IF, 0);
}
#endif

#ifdef DEC
SEC("tc")
int bound_decap(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);

	if ((void *)(udp + 1) > end)
		return TC_ACT_OK;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != PROTO_UDP ||
	    udp->dest != bpf_htons(4789))
		return TC_ACT_OK;
	if (bpf_skb_adjust_room(skb, -ENCAP_LEN, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO | ADJ_DECAP_L3_IPV4))
		return TC_ACT_SHOT;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return TC_ACT_SHOT;
	set_mac(eth->h_dest, EMAC);
	return bpf_redirect_peer(EP_IF, 0);
}
#endif

char LICENSE[] SEC("license") = "Dual BSD/GPL";
