// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The overlay's four entry points, one per attach point:
 *
 *   shoal_ep_tc   tc ingress of an endpoint's host-side veth (frames the
 *                 endpoint sends): ARP answers, same-node delivery, encap.
 *   shoal_ul_tc   tc ingress of the underlay device: decap and delivery.
 *   shoal_ep_xdp  the same as shoal_ep_tc, for the XDP hook.
 *   shoal_ul_xdp  the same as shoal_ul_tc, for the XDP hook.
 *   shoal_vx_tc   tc ingress of an encrypted network's vxlan device:
 *                 what IPsec decrypted, to its endpoint.
 *
 * With XDP the tc programs stay attached behind it: XDP finishes the simple
 * cases and passes what needs NAT state to tc (include/xdp_fast.h).
 *
 * The packet logic lives in include/overlay.h; this file only maps its
 * decisions onto each hook's helpers.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "include/shoal.h"
#include "include/maps.h"
#include "include/overlay.h"
#include "include/lb.h"
#include "include/mesh.h"
#include "include/xdp_fast.h"
#include "include/events.h"
#include "include/btf_anchor.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* Debian 12's uapi headers predate the decap flags (kernel 6.3); the running
 * kernel's BTF has them. */
#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV4
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#endif

/* Encap keeps gso_size: the endpoint MTU already leaves room for the outer
 * headers, so segments of the inner MSS fit the underlay. */
#define ENCAP_FLAGS                                                                          \
	(BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP | \
	 BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN))

/* Note: the kernel answers FWD_DISABLED unless forwarding is on for the
 * underlay device, even for BPF_FIB_LOOKUP_OUTPUT; the agent turns it on. */
static __always_inline int fib_to_vtep(void *ctx, const struct shoal_config *cfg, __be32 vtep,
				       __u32 tot_len, struct bpf_fib_lookup *p)
{
	__builtin_memset(p, 0, sizeof(*p));
	p->family = AF_INET;
	p->ipv4_src = cfg->vtep_ip;
	p->ipv4_dst = vtep;
	p->tot_len = tot_len;
	p->ifindex = cfg->underlay_ifindex;
	return bpf_fib_lookup(ctx, p, sizeof(*p), BPF_FIB_LOOKUP_OUTPUT);
}

/* ---- tc ---------------------------------------------------------------- */

/* Every tc drop site has its packet in `skb`: counted, and reported to a
 * listening monitor (events.h). */
#define tc_drop(reason) tc_drop_ev(skb, reason)
#define tc_trace(point)                            \
	do {                                       \
		if (ev_tracing())                  \
			ev_tc(skb, EV_TRACE, point); \
	} while (0)

static __always_inline int tc_drop_ev(struct __sk_buff *skb, __u32 reason)
{
	count_drop(reason);
	ev_tc(skb, EV_DROP, reason);
	return TC_ACT_SHOT;
}

/* The FIB's answer per underlay destination, kept for a short while: the
 * kernel's vxlan keeps its route the same way (dst_cache) rather than
 * looking it up for every packet. A changed neighbour is seen within
 * NEXTHOP_TTL_NS. Kept per CPU in a direct-mapped array, not a hash
 * table: the verifier inlines an array lookup into a few instructions,
 * where a hash lookup walked a bucket on every packet; two destinations
 * sharing a slot only cost each other a FIB lookup. The coarse clock
 * (the last tick) is plenty for a 1-s lifetime and reads no hardware
 * clock. */
#define NEXTHOP_TTL_NS 1000000000ULL
#define NEXTHOP_SLOTS 1024

struct nexthop {
	__u64 stamp;
	__be32 dst;
	__u32 ifindex;
	__u8 smac[6];
	__u8 dmac[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NEXTHOP_SLOTS);
	__type(key, __u32);
	__type(value, struct nexthop);
} shoal_nexthops SEC(".maps");

/* Sends a frame whose IP headers are final out of device `oif` towards
 * `dst` (a VTEP, or a mesh client). Out of the underlay the FIB gives the
 * next hop's MACs (tot_len 0: a GSO super-packet is larger than the MTU
 * by design; the kernel then checks the skb itself, is_skb_forwardable
 * knows GSO). Out of another interface of the node (a mesh client that
 * came in there) the kernel routes and resolves it: a FIB lookup from BPF
 * would need forwarding turned on for that interface. */
static __always_inline int tc_route_out(struct __sk_buff *skb, const struct shoal_config *cfg,
					__be32 dst, __u32 oif)
{
	__u32 slot = (dst * 0x9E3779B1u) >> 22; /* Fibonacci hashing: 10 bits */
	struct nexthop *nh = bpf_map_lookup_elem(&shoal_nexthops, &slot);
	__u64 now = bpf_ktime_get_coarse_ns();
	void *data, *data_end;
	struct ethhdr *eth;

	if (oif != cfg->underlay_ifindex)
		return bpf_redirect_neigh(oif, NULL, 0, 0);
	if (!nh)
		return tc_drop(DROP_FIB_FAILED);
	if (nh->dst != dst || now - nh->stamp >= NEXTHOP_TTL_NS) {
		struct bpf_fib_lookup p;
		int rc = fib_to_vtep(skb, cfg, dst, 0, &p);

		if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
			/* Let the neighbour subsystem resolve the next hop and
			 * queue the packet meanwhile, as a routed packet would
			 * be (not kept: the neighbour is not known yet). */
			struct bpf_redir_neigh rn = { .nh_family = AF_INET, .ipv4_nh = p.ipv4_dst };

			return bpf_redirect_neigh(p.ifindex, &rn, sizeof(rn), 0);
		}
		if (rc != BPF_FIB_LKUP_RET_SUCCESS)
			return tc_drop(rc == BPF_FIB_LKUP_RET_FRAG_NEEDED ? DROP_FRAG_NEEDED :
									     DROP_FIB_FAILED);
		nh->stamp = now;
		nh->dst = dst;
		nh->ifindex = p.ifindex;
		mac_copy(nh->smac, p.smac);
		mac_copy(nh->dmac, p.dmac);
	}
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return tc_drop(DROP_TRUNCATED);
	mac_copy(eth->h_dest, nh->dmac);
	mac_copy(eth->h_source, nh->smac);
	return bpf_redirect(nh->ifindex, 0);
}

/* 02:5e and a VTEP: the MAC that stands for a node on an encrypted
 * network's vxlan device (SHOAL_VTEP_MAC_*). */
static __always_inline void vtep_mac(__u8 *mac, __be32 vtep)
{
	mac[0] = SHOAL_VTEP_MAC_0;
	mac[1] = SHOAL_VTEP_MAC_1;
	__builtin_memcpy(mac + 2, &vtep, 4);
}

/*
 * An encrypted network's frame for a remote endpoint leaves whole through
 * the network's kernel vxlan device, addressed to the MAC that stands for
 * the peer's VTEP (the device's forwarding entry for it) and from this
 * node's. The device adds the VXLAN headers on cfg->crypt_port; the peer's
 * outbound policy takes them into its SA (transport-mode ESP), and the
 * device keeps the route and bundle of each peer cached (so the mark must
 * be 0), as Docker's encrypted overlay does. A GSO super-packet is
 * encrypted whole, segmented as it is.
 */
static __always_inline int tc_encrypt(struct __sk_buff *skb, const struct shoal_config *cfg,
				      const struct decision *d)
{
	struct vni_value *vv = bpf_map_lookup_elem(&shoal_vnis, &d->vni);
	void *data, *data_end;
	struct ethhdr *eth;

	/* Never in clear: no device, no sending. */
	if (!vv || !vv->crypt_ifindex)
		return tc_drop(DROP_CANNOT_ENCRYPT);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return tc_drop(DROP_TRUNCATED);
	vtep_mac(eth->h_dest, d->ep.vtep);
	vtep_mac(eth->h_source, cfg->vtep_ip);
	skb->mark = 0;
	count_stat(STAT_ENCAP);
	tc_trace(TR_ENCAP);
	return bpf_redirect(vv->crypt_ifindex, 0);
}

/* `from`: the local endpoint that sent the frame, if one did. */
static __always_inline int tc_encap(struct __sk_buff *skb, struct decision *d,
				    const struct iface_value *from)
{
	struct shoal_config *cfg = get_config();
	__u32 inner_len = skb->len, reason;
	__be16 sport;
	void *data, *data_end;
	int rc;

	if (!cfg)
		return tc_drop(DROP_NOT_CONFIGURED);
	/* An encrypted network's frames leave only through IPsec. */
	if (sender_vni_encrypted(from, d->vni))
		return tc_encrypt(skb, cfg, d);
	/* The flow's hash for the outer source port: the one the sending
	 * socket already set (as the kernel's vxlan uses it), else computed
	 * (recalc runs the flow dissector, a cost on every packet). */
	sport = flow_sport(skb->hash ? skb->hash : bpf_get_hash_recalc(skb));
	if (d->inner_proto == bpf_htons(ETH_P_IP)) {
		/* adjust_room keeps GSO/checksum offload state right for the
		 * tunnel, but only takes IP packets. */
		if (bpf_skb_adjust_room(skb, SHOAL_ENCAP_LEN, BPF_ADJ_ROOM_MAC, ENCAP_FLAGS))
			return tc_drop(DROP_ENCAP_FAILED);
	} else {
		/* ARP replies: small, never offloaded; push room in front so
		 * the original frame becomes the inner frame at offset 50. */
		if (bpf_skb_change_head(skb, SHOAL_ENCAP_LEN, 0))
			return tc_drop(DROP_ENCAP_FAILED);
	}

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + SHOAL_ENCAP_LEN + ETH_HLEN > data_end) {
		if (bpf_skb_pull_data(skb, SHOAL_ENCAP_LEN + ETH_HLEN))
			return tc_drop(DROP_ENCAP_FAILED);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		if (data + SHOAL_ENCAP_LEN + ETH_HLEN > data_end)
			return tc_drop(DROP_ENCAP_FAILED);
	}
	/* adjust_room left the original Ethernet header at 0: it becomes the
	 * inner one. */
	if (d->inner_proto == bpf_htons(ETH_P_IP))
		__builtin_memcpy(data + SHOAL_ENCAP_LEN, data, ETH_HLEN);
	reason = write_vxlan_headers(data, data_end, cfg, d->ep.vtep, d->vni, sport, inner_len,
				     d->tos);
	if (reason)
		return tc_drop(reason);

	rc = tc_route_out(skb, cfg, d->ep.vtep, cfg->underlay_ifindex);
	if (rc != TC_ACT_SHOT) {
		count_stat(STAT_ENCAP);
		tc_trace(TR_ENCAP);
	}
	return rc;
}

/* A mesh reply restored to come from the published address `from`: routed
 * to the client out of the interface that holds `from` (the underlay, or
 * another interface of the node, shoal_mesh_addrs). */
static __always_inline int tc_mesh_out(struct __sk_buff *skb, __be32 client, __be32 from)
{
	struct shoal_config *cfg = get_config();

	if (!cfg)
		return tc_drop(DROP_NOT_CONFIGURED);
	tc_trace(TR_MESH_REPLY);
	return tc_route_out(skb, cfg, client, mesh_oif(cfg, from));
}

SEC("classifier")
int shoal_ep_tc(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct iface_value *ifc = bpf_map_lookup_elem(&shoal_ifaces, &ifindex);
	struct decision d = {};
	void *data, *data_end;
	int kind;

	if (!ifc)
		return tc_drop(DROP_NOT_CONFIGURED);
	count_ep(ifc->slot, skb->len, 0);
	/* Headers up to an ARP body or an IPv4 header must be linear. */
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + ETH_HLEN + sizeof(struct arp_eth_ipv4) > data_end) {
		count_stat(STAT_HEAD_PULL);
		bpf_skb_pull_data(skb, ETH_HLEN + sizeof(struct arp_eth_ipv4));
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}

	kind = classify_from_endpoint(data, data_end, ifc, &d);
	if (kind == D_DROP && d.reason == DROP_UNKNOWN_ENDPOINT) {
		/* No endpoint has the address: a VIP? Pick the backend, rewrite
		 * the destination, and the frame goes where the backend is,
		 * like any other. */
		__u32 reason = 0;

		switch (lb_from_endpoint(skb, ifc, &reason)) {
		case LB_ECHO_REPLY:
			return bpf_redirect(ifindex, 0);
		case LB_DROP:
			return tc_drop(reason);
		case LB_CONTINUE:
			data = (void *)(long)skb->data;
			data_end = (void *)(long)skb->data_end;
			__builtin_memset(&d, 0, sizeof(d));
			kind = classify_from_endpoint(data, data_end, ifc, &d);
			break;
		default:
			break;
		}
	} else if ((kind == D_LOCAL || kind == D_REMOTE) && d.inner_proto == bpf_htons(ETH_P_IP)) {
		/* Straight to an endpoint's address, never a VIP's (they come
		 * from the same pool): only a stale reverse entry on its ports
		 * may have to go. classify_from_endpoint checked the header. */
		struct iphdr *ip = data + ETH_HLEN;

		if ((void *)(ip + 1) <= data_end)
			forget_stale_reverse(skb, ifc->vni, ip, ETH_HLEN + ip->ihl * 4);
	}

	switch (kind) {
	case D_ARP_REPLY:
		count_stat(STAT_ARP_REPLY);
		return bpf_redirect(ifindex, 0);
	case D_LOCAL: {
		struct ethhdr *eth = data;

		if ((void *)(eth + 1) > data_end)
			return tc_drop(DROP_TRUNCATED);
		mac_copy(eth->h_dest, d.ep.mac);
		count_stat(STAT_LOCAL);
		tc_trace(TR_LOCAL);
		if (d.ep.flags & EP_F_VIP_CLIENT)
			lb_reverse(skb, d.vni);
		count_ep(d.ep.slot, skb->len, 1);
		return bpf_redirect_peer(d.ep.ifindex, 0);
	}
	case D_REMOTE:
		return tc_encap(skb, &d, ifc);
	case D_PASS: {
		/* Off the subnet: a backend's reply to a mesh client? */
		struct shoal_config *cfg = get_config();
		__u32 reason = 0;
		__be32 client = 0, from = 0;

		if (cfg) {
			switch (mesh_reply(skb, cfg, ifc->vni, &d, &client, &from, &reason)) {
			case MESH_OUT:
				return tc_mesh_out(skb, client, from);
			case MESH_REMOTE:
				return tc_encap(skb, &d, NULL);
			case MESH_DROP:
				return tc_drop(reason);
			default:
				break;
			}
		}
		count_stat(STAT_PASS_ENDPOINT);
		return TC_ACT_OK;
	}
	default:
		return tc_drop(d.reason);
	}
}

/* A frame from another node that no local endpoint takes: a mesh reply
 * back at the node its flow entered by goes on to its client (the decrypt
 * mark, if any, left behind); anything else is dropped with its reason. */
static __always_inline int tc_not_local(struct __sk_buff *skb, const struct shoal_config *cfg,
					struct decision *d)
{
	if (d->reason == DROP_UNKNOWN_INNER_DST) {
		__be32 client = 0, from = 0;

		switch (mesh_reply_in(skb, cfg, d, &client, &from)) {
		case MESH_OUT:
			skb->mark = 0;
			return tc_mesh_out(skb, client, from);
		case MESH_DROP:
			return tc_drop(DROP_DECAP_FAILED);
		default:
			break;
		}
	}
	return tc_drop(d->reason);
}

/* A decapsulated frame (its Ethernet header at 0, addressed to d->ep)
 * handed to its endpoint; `outer_src` is the VTEP it came from. */
static __always_inline int tc_deliver(struct __sk_buff *skb, const struct shoal_config *cfg,
				      const struct decision *d, __be32 outer_src)
{
	/* The decrypt mark is the underlay's business, not the endpoint's. */
	skb->mark = 0;
	count_stat(STAT_DECAP);
	count_ep(d->ep.slot, skb->len, 1);
	if (d->inner_proto == bpf_htons(ETH_P_IP)) {
		if (!mesh_learn(skb, cfg, d->vni, outer_src) && (d->ep.flags & EP_F_VIP_CLIENT))
			lb_reverse(skb, d->vni);
		return bpf_redirect_peer(d->ep.ifindex, 0);
	}
	return bpf_redirect(d->ep.ifindex, 0);
}

/* How much of an underlay frame classify_from_underlay reads: up to the
 * inner IPv4 header or ARP body of a UDP datagram, the outer IPv4 header of
 * anything else (the mesh reads the rest with load_bytes). Not more: a GSO
 * packet's head holds only its headers, and pulling payload into it costs
 * a new head and a copy on every packet. */
static __always_inline __u32 ul_linear_need(void *data, void *data_end)
{
	struct iphdr *ip = data + ETH_HLEN;

	if ((void *)(ip + 1) > data_end)
		return UL_PULL_LEN;
	if (ip->protocol != IPPROTO_UDP)
		return ETH_HLEN + sizeof(*ip);
	return ETH_HLEN + ip->ihl * 4 + sizeof(struct udphdr) + sizeof(struct vxlanhdr) + ETH_HLEN +
	       sizeof(struct arp_eth_ipv4);
}

SEC("classifier")
int shoal_ul_tc(struct __sk_buff *skb)
{
	struct shoal_config *cfg = get_config();
	struct decision d = {};
	struct ethhdr inner;
	void *data, *data_end;
	__be32 outer_src = 0;
	__u64 flags;
	__u32 need;

	if (!cfg) {
		count_stat(STAT_PASS_UNDERLAY);
		return TC_ACT_OK;
	}
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	need = ul_linear_need(data, data_end);
	if (data + need > data_end) {
		count_stat(STAT_HEAD_PULL);
		bpf_skb_pull_data(skb, skb->len < need ? skb->len : need);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}

	classify_from_underlay(data, data_end, cfg, &d);
	/* An encrypted network's frames arrive only through IPsec, at its
	 * vxlan device (shoal_vx_tc): here they are in clear. */
	if (d.encrypted)
		return tc_drop(DROP_CLEAR_ON_ENCRYPTED);
	switch (d.kind) {
	case D_PASS: {
		/* Not VXLAN: a client of a published port (the mesh)? */
		__u32 reason = 0;

		switch (mesh_entry(skb, cfg, &d, &reason)) {
		case MESH_LOCAL: {
			__u8 mac[6];

			tc_trace(TR_MESH_ENTRY);
			mac_copy(mac, d.ep.mac);
			if (bpf_skb_store_bytes(skb, 0, mac, sizeof(mac), 0))
				return tc_drop(DROP_LB_REWRITE);
			count_ep(d.ep.slot, skb->len, 1);
			return bpf_redirect_peer(d.ep.ifindex, 0);
		}
		case MESH_REMOTE:
			tc_trace(TR_MESH_ENTRY);
			return tc_encap(skb, &d, NULL);
		case MESH_TOO_BIG: {
			__be32 client = 0;

			/* Counted and reported as the client sent it; answered. */
			tc_drop_ev(skb, reason);
			if (mesh_too_big(skb, mesh_max_packet(cfg), &client))
				return TC_ACT_SHOT;
			/* Back out of the interface it came in by. */
			tc_trace(TR_MESH_REPLY);
			return tc_route_out(skb, cfg, client, skb->ifindex);
		}
		case MESH_DROP:
			return tc_drop(reason);
		default:
			break;
		}
		count_stat(STAT_PASS_UNDERLAY);
		return TC_ACT_OK;
	}
	case D_DECAP:
		break;
	default:
		return tc_not_local(skb, cfg, &d);
	}
	tc_trace(TR_DECAP);
	/* The outer source and the inner Ethernet header, read in place
	 * (classification found both in the head) before the room goes. */
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + ETH_HLEN + sizeof(struct iphdr) > data_end || d.inner_off > UL_PULL_LEN ||
	    data + d.inner_off + sizeof(inner) > data_end)
		return tc_drop(DROP_TRUNCATED);
	outer_src = ((struct iphdr *)(data + ETH_HLEN))->saddr;
	__builtin_memcpy(&inner, data + d.inner_off, sizeof(inner));
	mac_copy(inner.h_dest, d.ep.mac);
	/* IPv4 inside: tell the kernel the tunnel is gone (clears the UDP
	 * tunnel GSO type and resets skb->protocol); ARP is re-parsed by the
	 * veth on its way in, below. */
	flags = BPF_F_ADJ_ROOM_FIXED_GSO;
	if (d.inner_proto == bpf_htons(ETH_P_IP))
		flags |= BPF_F_ADJ_ROOM_DECAP_L3_IPV4;
	/* Kernels before 6.3 know no decap flag and refuse it: shrink without
	 * it there (received VXLAN is not GSO on the virtual NICs we serve). */
	if (bpf_skb_adjust_room(skb, -(__s32)d.inner_off, BPF_ADJ_ROOM_MAC, flags) &&
	    bpf_skb_adjust_room(skb, -(__s32)d.inner_off, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO))
		return tc_drop(DROP_DECAP_FAILED);
	/* The outer Ethernet header stayed at 0: it becomes the inner one. */
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + sizeof(inner) > data_end)
		return tc_drop(DROP_DECAP_FAILED);
	__builtin_memcpy(data, &inner, sizeof(inner));
	return tc_deliver(skb, cfg, &d, outer_src);
}

/*
 * What IPsec decrypted for an encrypted network: the network's kernel
 * vxlan device (cfg->crypt_port) took the outer headers off and
 * aggregated it (GRO). Only a frame the inbound SA marked is delivered;
 * its source MAC names the node it came from (tc_encrypt).
 */
SEC("classifier")
int shoal_vx_tc(struct __sk_buff *skb)
{
	struct shoal_config *cfg = get_config();
	__u32 ifindex = skb->ifindex;
	struct iface_value *ifc = bpf_map_lookup_elem(&shoal_ifaces, &ifindex);
	struct decision d = {};
	struct ethhdr *eth;
	void *data, *data_end;
	__be32 from;
	__u32 vni;

	if (!cfg || !ifc)
		return tc_drop(DROP_NOT_CONFIGURED);
	if ((skb->mark & SHOAL_DECRYPT_MASK) != SHOAL_DECRYPT_MARK)
		return tc_drop(DROP_CLEAR_ON_ENCRYPTED);
	vni = ifc->vni;
	/* The device's network must still be an encrypted one here. */
	if (!vni_encrypted(vni))
		return tc_drop(DROP_UNKNOWN_VNI);
	d.vni = vni;
	d.encrypted = 1;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + ETH_HLEN + sizeof(struct arp_eth_ipv4) > data_end) {
		bpf_skb_pull_data(skb, ETH_HLEN + sizeof(struct arp_eth_ipv4));
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return tc_drop(DROP_TRUNCATED);
	if (eth->h_source[0] != SHOAL_VTEP_MAC_0 || eth->h_source[1] != SHOAL_VTEP_MAC_1)
		return tc_drop(DROP_INNER_MALFORMED);
	__builtin_memcpy(&from, eth->h_source + 2, 4);
	if (classify_inner(data, data_end, cfg, vni, &d) != D_DECAP)
		return tc_not_local(skb, cfg, &d);
	tc_trace(TR_DECAP);
	if (bpf_skb_store_bytes(skb, 0, d.ep.mac, ETH_ALEN, 0))
		return tc_drop(DROP_DECAP_FAILED);
	return tc_deliver(skb, cfg, &d, from);
}

/* ---- XDP --------------------------------------------------------------- */

#define xdp_drop(reason) xdp_drop_ev(ctx, reason)
#define xdp_trace(point)                             \
	do {                                         \
		if (ev_tracing())                    \
			ev_xdp(ctx, EV_TRACE, point); \
	} while (0)

static __always_inline int xdp_drop_ev(struct xdp_md *ctx, __u32 reason)
{
	count_drop(reason);
	ev_xdp(ctx, EV_DROP, reason);
	return XDP_DROP;
}

static __always_inline int xdp_encap(struct xdp_md *ctx, struct decision *d)
{
	struct shoal_config *cfg = get_config();
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 inner_len = data_end - data, reason;
	struct bpf_fib_lookup p;
	__be16 sport;
	int rc;

	if (!cfg)
		return xdp_drop(DROP_NOT_CONFIGURED);
	sport = flow_sport(inner_flow_hash(data, data_end));
	if (bpf_xdp_adjust_head(ctx, -SHOAL_ENCAP_LEN))
		return xdp_drop(DROP_ENCAP_FAILED);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	/* The original frame now starts at offset 50: it is the inner frame. */
	reason = write_vxlan_headers(data, data_end, cfg, d->ep.vtep, d->vni, sport, inner_len,
				     d->tos);
	if (reason)
		return xdp_drop(reason);

	rc = fib_to_vtep(ctx, cfg, d->ep.vtep, inner_len + SHOAL_ENCAP_LEN - ETH_HLEN, &p);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		struct ethhdr *eth = data;

		if ((void *)(eth + 1) > data_end)
			return xdp_drop(DROP_ENCAP_FAILED);
		mac_copy(eth->h_dest, p.dmac);
		mac_copy(eth->h_source, p.smac);
		count_stat(STAT_ENCAP);
		xdp_trace(TR_ENCAP);
		return bpf_redirect(p.ifindex, 0);
	}
	/* XDP cannot queue a packet while ARP resolves; the agent keeps the
	 * VTEP neighbours resolved (managed entries), so this is rare. */
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return xdp_drop(DROP_NO_NEIGH);
	return xdp_drop(rc == BPF_FIB_LKUP_RET_FRAG_NEEDED ? DROP_FRAG_NEEDED : DROP_FIB_FAILED);
}

/* tc finishes it (see xdp_fast.h). */
static __always_inline int xdp_to_tc(void)
{
	count_stat(STAT_XDP_TO_TC);
	return XDP_PASS;
}

SEC("xdp")
int shoal_ep_xdp(struct xdp_md *ctx)
{
	__u32 ifindex = ctx->ingress_ifindex;
	struct iface_value *ifc = bpf_map_lookup_elem(&shoal_ifaces, &ifindex);
	struct shoal_config *cfg = get_config();
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct decision d = {};

	if (!ifc || !cfg)
		return xdp_drop(DROP_NOT_CONFIGURED);
	if ((void *)(eth + 1) <= data_end && eth->h_proto == bpf_htons(ETH_P_IP) &&
	    xdp_needs_tc(cfg, ifc->vni, (void *)(eth + 1), data_end, 1, 1))
		return xdp_to_tc();
	switch (classify_from_endpoint(data, data_end, ifc, &d)) {
	case D_ARP_REPLY:
		/* Not XDP_TX: a veth only kicks its peer's NAPI for XDP_TX when
		 * the peer runs XDP itself; a redirect flushes either way. */
		count_stat(STAT_ARP_REPLY);
		return bpf_redirect(ifindex, 0);
	case D_LOCAL: {
		if ((void *)(eth + 1) > data_end)
			return xdp_drop(DROP_TRUNCATED);
		mac_copy(eth->h_dest, d.ep.mac);
		count_stat(STAT_LOCAL);
		xdp_trace(TR_LOCAL);
		count_ep(ifc->slot, data_end - data, 0);
		count_ep(d.ep.slot, data_end - data, 1);
		return bpf_redirect(d.ep.ifindex, 0);
	}
	case D_REMOTE:
		/* Encrypted: only tc can hand it to IPsec. */
		if (sender_vni_encrypted(ifc, d.vni))
			return xdp_to_tc();
		count_ep(ifc->slot, data_end - data, 0);
		return xdp_encap(ctx, &d);
	case D_PASS:
		/* Off the subnet (a mesh reply, or the kernel's): tc decides. */
		return xdp_to_tc();
	default:
		return xdp_drop(d.reason);
	}
}

/* The inner IPv4 header of a VXLAN frame that classify_from_underlay
 * accepted (its offsets re-derived so the verifier sees them bounded). */
static __always_inline struct iphdr *inner_ip(void *data, void *data_end)
{
	struct iphdr *ip = data + ETH_HLEN;
	__u32 ihl;

	if ((void *)(ip + 1) > data_end)
		return NULL;
	ihl = ip->ihl * 4;
	return data + ETH_HLEN + ihl + sizeof(struct udphdr) + sizeof(struct vxlanhdr) + ETH_HLEN;
}

SEC("xdp")
int shoal_ul_xdp(struct xdp_md *ctx)
{
	struct shoal_config *cfg = get_config();
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct decision d = {};
	struct ethhdr *eth;

	if (!cfg) {
		count_stat(STAT_PASS_UNDERLAY);
		return XDP_PASS;
	}
	classify_from_underlay(data, data_end, cfg, &d);
	/* XDP sees frames as they came off the wire: what IPsec decrypts
	 * comes back in at tc. */
	if (d.encrypted)
		return xdp_drop(DROP_CLEAR_ON_ENCRYPTED);
	switch (d.kind) {
	case D_PASS: {
		/* Not VXLAN: a client of a published port (the mesh)? */
		__u32 reason = 0;

		/* A mesh client's flow that would travel an encrypted ingress
		 * network: tc hands it to IPsec. */
		if (cfg->ingress_vni && vni_encrypted(cfg->ingress_vni))
			return xdp_to_tc();
		switch (xdp_mesh_entry(ctx, cfg, &d, &reason)) {
		case MESH_LOCAL:
			data = (void *)(long)ctx->data;
			data_end = (void *)(long)ctx->data_end;
			eth = data;
			if ((void *)(eth + 1) > data_end)
				return xdp_drop(DROP_TRUNCATED);
			mac_copy(eth->h_dest, d.ep.mac);
			count_ep(d.ep.slot, data_end - data, 1);
			xdp_trace(TR_MESH_ENTRY);
			return bpf_redirect(d.ep.ifindex, 0);
		case MESH_REMOTE:
			xdp_trace(TR_MESH_ENTRY);
			return xdp_encap(ctx, &d);
		case MESH_DROP:
			return xdp_drop(reason);
		default:
			break;
		}
		count_stat(STAT_PASS_UNDERLAY);
		return XDP_PASS;
	}
	case D_DECAP:
		break;
	default:
		/* A mesh reply back at the node its flow entered by: tc
		 * restores the published address (mesh_reply_in). */
		if (d.reason == DROP_UNKNOWN_INNER_DST && cfg->ingress_vni &&
		    d.vni == cfg->ingress_vni)
			return xdp_to_tc();
		return xdp_drop(d.reason);
	}
	if (d.inner_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iip = inner_ip(data, data_end);

		if (!iip || xdp_needs_tc(cfg, d.vni, iip, data_end, 0,
					 d.ep.flags & EP_F_VIP_CLIENT))
			return xdp_to_tc();
	}
	xdp_trace(TR_DECAP);
	if (bpf_xdp_adjust_head(ctx, d.inner_off))
		return xdp_drop(DROP_DECAP_FAILED);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return xdp_drop(DROP_TRUNCATED);
	mac_copy(eth->h_dest, d.ep.mac);
	count_stat(STAT_DECAP);
	count_ep(d.ep.slot, data_end - data, 1);
	return bpf_redirect(d.ep.ifindex, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
