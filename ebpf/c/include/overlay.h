/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The overlay's packet logic, shared by the tc and XDP hooks: it only reads
 * and writes bytes between data and data_end and returns a decision; each
 * hook turns the decision into its own helpers (adjust_room vs adjust_head,
 * redirect_peer vs redirect). Keeping one copy is what makes "the XDP variant
 * passes the same tests" cheap.
 */
#ifndef SHOAL_OVERLAY_H
#define SHOAL_OVERLAY_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "shoal.h"
#include "maps.h"
#include "pkt.h"

/* From linux/if_arp.h, which drags in glibc's socket headers. */
#define ARPHRD_ETHER 1
#define ARPOP_REQUEST 1
#define ARPOP_REPLY 2

/* An ARP packet for IPv4 over Ethernet (RFC 826), the only kind we answer. */
struct arp_eth_ipv4 {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[ETH_ALEN];
	__be32 spa;
	__u8 tha[ETH_ALEN];
	__be32 tpa;
} __attribute__((packed));

/* The most of an underlay frame the tc hook makes linear: outer headers
 * (with options), VXLAN, inner Ethernet and an inner ARP body (longer than
 * an inner IPv4 header). */
#define UL_PULL_LEN (ETH_HLEN + 60 + 8 + 8 + ETH_HLEN + 28)

enum decision_kind {
	D_PASS = 0, /* hand the frame to the kernel untouched */
	D_DROP,     /* drop, counting d->reason */
	D_ARP_REPLY,/* the frame was turned into an ARP reply: send it back */
	D_LOCAL,    /* deliver to the local endpoint d->ep */
	D_REMOTE,   /* encapsulate towards d->ep.vtep */
	D_DECAP,    /* strip d->inner_off bytes and deliver to d->ep */
};

struct decision {
	__u32 kind;
	__u32 reason;
	__u32 vni;
	__u32 inner_off; /* decap: offset of the inner Ethernet header */
	__u16 inner_proto; /* ethertype of the (inner) frame, network order */
	__u8 tos;
	__u8 encrypted; /* from the underlay: its network is VNI_F_ENCRYPTED */
	struct ep_value ep;
};

static __always_inline int drop(struct decision *d, __u32 reason)
{
	d->kind = D_DROP;
	d->reason = reason;
	return D_DROP;
}

static __always_inline void mac_copy(__u8 *dst, const __u8 *src)
{
	__builtin_memcpy(dst, src, ETH_ALEN);
}

static __always_inline int in_subnet(__be32 a, __be32 b, __u32 prefix_len)
{
	__u32 mask;

	if (prefix_len == 0)
		return 1;
	if (prefix_len >= 32)
		return a == b;
	mask = bpf_htonl(~((1U << (32 - prefix_len)) - 1));
	return (a & mask) == (b & mask);
}

/* Kernel vxlan's rule (udp_flow_src_port): scale the flow hash into the
 * ephemeral range, so every flow keeps one source port (ECMP entropy). */
static __always_inline __u16 flow_sport(__u32 hash)
{
	const __u32 lo = 49152, hi = 65535;

	hash ^= hash << 16;
	return bpf_htons((__u16)((((__u64)hash * (hi - lo)) >> 32) + lo));
}

/* A hash of the inner flow for XDP, which has no skb hash: addresses,
 * protocol and (for TCP/UDP) ports, mixed by murmur3's finaliser. */
static __always_inline __u32 inner_flow_hash(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__u32 h = 0x9e3779b9;

	if ((void *)(eth + 1) > data_end)
		return h;
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return h ^ eth->h_source[5];
	h ^= ip->saddr;
	h = h * 0xcc9e2d51;
	h ^= ip->daddr;
	h = h * 0x1b873593;
	h ^= ip->protocol;
	if ((ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) && ip->ihl == 5) {
		__u32 *ports = (void *)(ip + 1);
		if ((void *)(ports + 1) <= data_end)
			h ^= *ports;
	}
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

static __always_inline __u16 ipv4_csum(struct iphdr *ip)
{
	__u16 *p = (__u16 *)ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += p[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

static __always_inline int arp_is_eth_ipv4(const struct arp_eth_ipv4 *arp)
{
	return arp->htype == bpf_htons(ARPHRD_ETHER) && arp->ptype == bpf_htons(ETH_P_IP) &&
	       arp->hlen == ETH_ALEN && arp->plen == 4;
}

/* Turn an ARP request in place into the reply "tpa is at mac". */
static __always_inline void arp_make_reply(struct ethhdr *eth, struct arp_eth_ipv4 *arp,
					   const __u8 *mac)
{
	__be32 tpa = arp->tpa;

	mac_copy(eth->h_dest, eth->h_source);
	mac_copy(eth->h_source, mac);
	arp->op = bpf_htons(ARPOP_REPLY);
	mac_copy(arp->tha, arp->sha);
	arp->tpa = arp->spa;
	mac_copy(arp->sha, mac);
	arp->spa = tpa;
}

/* The services map is declared here (not in lb.h) because the ARP
 * responder, shared by both hooks, answers for VIPs. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct svc_key);
	__type(value, struct svc_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_services SEC(".maps");

static __always_inline int vip_exists(__u32 vni, __be32 ip)
{
	struct svc_key k = { .vni = vni, .vip = ip };

	return bpf_map_lookup_elem(&shoal_services, &k) != NULL;
}

/* Network `vni` is encrypted between nodes (VNI_F_ENCRYPTED). */
static __always_inline int vni_encrypted(__u32 vni)
{
	struct vni_value *v = bpf_map_lookup_elem(&shoal_vnis, &vni);

	return v && (v->flags & VNI_F_ENCRYPTED);
}

/* Frames of network `vni` sent by the endpoint `from` (or by none) must go
 * through IPsec. The endpoint's entry answers when the agent marked its
 * network clear; otherwise the network's entry does (fail closed). */
static __always_inline int sender_vni_encrypted(const struct iface_value *from, __u32 vni)
{
	if (from && from->vni == vni && (from->flags & IFACE_F_CLEAR))
		return 0;
	return vni_encrypted(vni);
}

static __always_inline int lookup_ep(struct decision *d, __u32 vni, __be32 ip)
{
	struct ep_key key = { .vni = vni, .ip = ip };
	struct ep_value *ep = bpf_map_lookup_elem(&shoal_endpoints, &key);

	if (!ep)
		return 0;
	d->ep = *ep;
	d->vni = vni;
	return 1;
}

static __always_inline int forward_to(struct decision *d)
{
	if (d->ep.flags & EP_F_LOCAL) {
		d->kind = D_LOCAL;
		return D_LOCAL;
	}
	d->kind = D_REMOTE;
	return D_REMOTE;
}

/*
 * A frame sent by a local endpoint (seen on its host-side veth): answer ARP,
 * deliver on this node, send to a remote VTEP, or hand off-subnet traffic to
 * the kernel.
 */
static __always_inline int classify_from_endpoint(void *data, void *data_end,
						  const struct iface_value *ifc,
						  struct decision *d)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return drop(d, DROP_TRUNCATED);
	d->inner_proto = eth->h_proto;

	if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
		struct arp_eth_ipv4 *arp = (void *)(eth + 1);

		if ((void *)(arp + 1) > data_end)
			return drop(d, DROP_TRUNCATED);
		if (!arp_is_eth_ipv4(arp))
			return drop(d, DROP_UNSUPPORTED);
		if (arp->op == bpf_htons(ARPOP_REQUEST)) {
			if (lookup_ep(d, ifc->vni, arp->tpa)) {
				arp_make_reply(eth, arp, d->ep.mac);
			} else if ((arp->tpa == ifc->gateway && ifc->gateway) ||
				   vip_exists(ifc->vni, arp->tpa)) {
				/* The gateway and the VIPs: the host side. */
				arp_make_reply(eth, arp, ifc->host_mac);
			} else {
				return drop(d, DROP_ARP_UNKNOWN);
			}
			d->kind = D_ARP_REPLY;
			return D_ARP_REPLY;
		}
		/* A reply (to a peer's request that reached us decapsulated)
		 * goes where its target is. */
		if (arp->op == bpf_htons(ARPOP_REPLY) && lookup_ep(d, ifc->vni, arp->tpa))
			return forward_to(d);
		return drop(d, DROP_ARP_UNKNOWN);
	}

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return drop(d, DROP_TRUNCATED);
		if (ip->version != 4 || ip->ihl < 5)
			return drop(d, DROP_INNER_MALFORMED);
		d->tos = ip->tos;
		/* Endpoints live inside the subnet: off it (the outside world,
		 * a mesh client) there is nothing to look up. */
		if (!in_subnet(ip->daddr, ifc->ip, ifc->prefix_len)) {
			d->kind = D_PASS;
			return D_PASS;
		}
		if (lookup_ep(d, ifc->vni, ip->daddr))
			return forward_to(d);
		if (ip->daddr != ifc->gateway)
			return drop(d, DROP_UNKNOWN_ENDPOINT);
		d->kind = D_PASS;
		return D_PASS;
	}

	return drop(d, DROP_UNSUPPORTED);
}

/*
 * The inner frame at `ieth` of network `vni` (d->vni and d->inner_off set
 * by the caller): D_DECAP to the local endpoint d->ep,
 * or D_DROP. Shared by the underlay's decap and the encrypted networks'
 * vxlan device, where the kernel took the outer headers off.
 */
static __always_inline int classify_inner(struct ethhdr *ieth, void *data_end,
					  const struct shoal_config *cfg, __u32 vni,
					  struct decision *d)
{
	if ((void *)(ieth + 1) > data_end)
		return drop(d, DROP_TRUNCATED);
	d->inner_proto = ieth->h_proto;
	if (ieth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iip = (void *)(ieth + 1);

		if ((void *)(iip + 1) > data_end)
			return drop(d, DROP_TRUNCATED);
		if (iip->version != 4 || iip->ihl < 5)
			return drop(d, DROP_INNER_MALFORMED);
		/* Off the ingress subnet: a mesh reply back at its entry node
		 * (the caller's), never an endpoint; spared the lookup. */
		if (vni == cfg->ingress_vni && cfg->ingress_vni &&
		    !in_subnet(iip->daddr, cfg->ingress_net, cfg->ingress_prefix))
			return drop(d, DROP_UNKNOWN_INNER_DST);
		if (!lookup_ep(d, vni, iip->daddr) || !(d->ep.flags & EP_F_LOCAL))
			return drop(d, DROP_UNKNOWN_INNER_DST);
	} else if (ieth->h_proto == bpf_htons(ETH_P_ARP)) {
		struct arp_eth_ipv4 *arp = (void *)(ieth + 1);

		if ((void *)(arp + 1) > data_end)
			return drop(d, DROP_TRUNCATED);
		if (!arp_is_eth_ipv4(arp))
			return drop(d, DROP_INNER_MALFORMED);
		if (!lookup_ep(d, vni, arp->tpa) || !(d->ep.flags & EP_F_LOCAL))
			return drop(d, DROP_UNKNOWN_INNER_DST);
	} else {
		return drop(d, DROP_UNSUPPORTED);
	}
	d->kind = D_DECAP;
	return D_DECAP;
}

/*
 * A frame arriving on the underlay: is it VXLAN for us, and for which local
 * endpoint? Anything that is not addressed to our VTEP's UDP port passes
 * untouched; what is addressed to it but cannot be delivered is dropped with
 * a reason.
 */
static __always_inline int classify_from_underlay(void *data, void *data_end,
						  const struct shoal_config *cfg,
						  struct decision *d)
{
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;
	struct vxlanhdr *vx;
	struct ethhdr *ieth;
	struct vni_value *vv;
	__u32 ihl, vni;

	d->kind = D_PASS;
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return D_PASS;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
		return D_PASS;
	if (ip->daddr != cfg->vtep_ip || ip->protocol != IPPROTO_UDP)
		return D_PASS;
	/* A later fragment carries no UDP header: the kernel owns it. */
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return D_PASS;
	ihl = ip->ihl * 4;
	udp = (void *)ip + ihl;
	if ((void *)(udp + 1) > data_end)
		return D_PASS;
	/* The encrypted networks' port is only ever inside ESP: in clear
	 * it is an attempt to skip IPsec. */
	if (cfg->crypt_port && udp->dest == cfg->crypt_port)
		return drop(d, DROP_CLEAR_ON_ENCRYPTED);
	if (udp->dest != cfg->vxlan_port)
		return D_PASS;

	/* From here on the datagram is ours. */
	if (ip->frag_off & bpf_htons(IP_MF))
		return drop(d, DROP_OUTER_FRAGMENT);
	vx = (void *)(udp + 1);
	ieth = (void *)(vx + 1);
	if ((void *)(ieth + 1) > data_end)
		return drop(d, DROP_TRUNCATED);
	if (bpf_ntohs(udp->len) < sizeof(*udp) + sizeof(*vx) + sizeof(*ieth))
		return drop(d, DROP_TRUNCATED);
	if (!(vx->flags & VXLAN_FLAG_I))
		return drop(d, DROP_BAD_VXLAN_FLAGS);
	vni = bpf_ntohl(vx->vni_reserved) >> 8;
	d->vni = vni;
	d->inner_off = sizeof(*eth) + ihl + sizeof(*udp) + sizeof(*vx);
	/* A frame for a local endpoint the agent marked clear: its network is
	 * known and not encrypted, nothing more to look up. */
	if (classify_inner(ieth, data_end, cfg, vni, d) == D_DECAP &&
	    (d->ep.flags & EP_F_CLEAR))
		return D_DECAP;
	/* Anything else answers to the network's entry: an unknown network
	 * outranks what classify_inner found, and an encrypted one's frames
	 * must not arrive here in clear (the caller drops them). */
	vv = bpf_map_lookup_elem(&shoal_vnis, &vni);
	if (!vv)
		return drop(d, DROP_UNKNOWN_VNI);
	d->encrypted = !!(vv->flags & VNI_F_ENCRYPTED);
	return d->kind;
}

/*
 * Write the outer IPv4/UDP/VXLAN headers at offset 14 of a frame whose inner
 * Ethernet frame (inner_len bytes) already sits at offset 50. The outer
 * Ethernet header is the caller's (it comes from the FIB). DROP_NONE, or
 * DROP_ENCAP_FAILED if the frame has no room for them.
 */
static __always_inline __u32 write_vxlan_headers(void *data, void *data_end,
					       const struct shoal_config *cfg, __be32 vtep,
					       __u32 vni, __be16 sport, __u32 inner_len, __u8 tos)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	struct vxlanhdr *vx = (void *)(udp + 1);

	if ((void *)(vx + 1) > data_end)
		return DROP_ENCAP_FAILED;
	eth->h_proto = bpf_htons(ETH_P_IP);

	ip->version = 4;
	ip->ihl = 5;
	/* Keep the inner DSCP, drop ECN bits (RFC 6040's simple mode). */
	ip->tos = tos & 0xfc;
	ip->tot_len = bpf_htons(inner_len + sizeof(*ip) + sizeof(*udp) + sizeof(*vx));
	/* DF: the endpoint MTU already leaves room for the 50 bytes, so the
	 * outer datagram never needs fragmenting and the ID may be 0 (RFC 6864). */
	ip->id = 0;
	ip->frag_off = bpf_htons(IP_DF);
	ip->ttl = 64;
	ip->protocol = IPPROTO_UDP;
	ip->check = 0;
	ip->saddr = cfg->vtep_ip;
	ip->daddr = vtep;
	ip->check = ipv4_csum(ip);

	udp->source = sport;
	udp->dest = cfg->vxlan_port;
	udp->len = bpf_htons(inner_len + sizeof(*udp) + sizeof(*vx));
	udp->check = 0; /* RFC 7348: SHOULD be 0 over IPv4 */

	vx->flags = VXLAN_FLAG_I;
	vx->reserved1[0] = 0;
	vx->reserved1[1] = 0;
	vx->reserved1[2] = 0;
	vx->vni_reserved = bpf_htonl(vni << 8);
	return DROP_NONE;
}

#endif
