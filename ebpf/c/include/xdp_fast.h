/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What the XDP hooks (`--accel xdp`) do themselves, and what they leave to
 * the tc programs attached behind them on the same devices.
 *
 * XDP handles the hot, simple cases: plain overlay frames (encap, decap,
 * same-node delivery) and the routing mesh's entry (a client's packet to a
 * published port, rewritten to its backend and delivered or encapsulated
 * before the kernel allocates an skb). Everything that needs NAT state on
 * the way (a VIP's balancing, reverse NAT of replies, ICMP errors, the
 * mesh's replies and learning, IP options, fragments) goes on with
 * XDP_PASS to tc, which runs the same logic as without XDP. A packet is
 * never half handled: XDP either finishes it or leaves it untouched.
 */
#ifndef SHOAL_XDP_FAST_H
#define SHOAL_XDP_FAST_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "shoal.h"
#include "maps.h"
#include "overlay.h"
#include "pkt.h"
#include "l4.h"
#include "lb.h"
#include "mesh.h"
#include "tcp_mss.h"

/*
 * An IPv4 packet at `ip` (its L4 header within data_end or not) on network
 * `vni`: must tc see it? `ep`: sent by a local endpoint (a VIP may be its
 * destination, a direct flow may need a stale reverse entry dropped);
 * otherwise it is being delivered (reverse NAT, mesh learning).
 * `vip_client`: its destination may be a VIP's client (EP_F_VIP_CLIENT;
 * 1 when not known yet), so it may be a VIP's reply.
 */
static __always_inline int xdp_needs_tc(const struct shoal_config *cfg, __u32 vni,
					struct iphdr *ip, void *data_end, int ep, int vip_client)
{
	struct ct_key ck = {};
	__be16 *ports;
	__u32 ihl;

	/* Malformed: the caller's classification drops it, counted. */
	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
		return 0;
	if (ep && vip_exists(vni, ip->daddr))
		return 1;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return ip->protocol == IPPROTO_ICMP;
	/* A later fragment has no ports: nothing to translate, tc neither. */
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return 0;
	ihl = ip->ihl * 4;
	ports = (void *)ip + ihl;
	if ((void *)(ports + 2) > data_end)
		return 1;
	/* A reply of a flow through a VIP (lb_reverse). */
	ct_key_set(&ck, vni, ip->saddr, ip->daddr, ports[0], ports[1], ip->protocol);
	if (vip_client && bpf_map_lookup_elem(&shoal_rct, &ck))
		return 1;
	if (ep) {
		/* A direct flow on the ports of an old VIP flow
		 * (forget_stale_reverse). */
		ct_key_set(&ck, vni, ip->daddr, ip->saddr, ports[1], ports[0], ip->protocol);
		return bpf_map_lookup_elem(&shoal_rct, &ck) != NULL;
	}
	/* A mesh client's packet arriving at its backend's node (mesh_learn). */
	return cfg->ingress_vni && vni == cfg->ingress_vni &&
	       !in_subnet(ip->saddr, cfg->ingress_net, cfg->ingress_prefix);
}

/*
 * The XDP entry of the routing mesh (mesh_entry's twin): a client's packet
 * to a published port of this node, rewritten in place to its backend.
 * MESH_CONTINUE for anything it does not take (the caller passes it on).
 */
static __always_inline int xdp_mesh_entry(struct xdp_md *ctx, const struct shoal_config *cfg,
					  struct decision *d, __u32 *reason)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct mesh_pick mp = {};
	struct iphdr *ip, iph;
	__be16 *ports, p[2];
	__u16 *check;
	int rc;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return MESH_CONTINUE;
	ip = (void *)(eth + 1);
	/* IP options and later fragments: tc's (it handles them the same). */
	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl != 5)
		return MESH_CONTINUE;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return MESH_CONTINUE;
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return MESH_CONTINUE;
	ports = (void *)(ip + 1);
	/* The whole L4 header (its checksum is rewritten here). */
	if ((void *)ports +
		    (ip->protocol == IPPROTO_TCP ? sizeof(struct tcphdr) : sizeof(struct udphdr)) >
	    data_end)
		return MESH_CONTINUE;
	iph = *ip;
	p[0] = ports[0];
	p[1] = ports[1];
	rc = mesh_pick(cfg, &iph, p, d, &mp, reason);
	if (rc != MESH_LOCAL && rc != MESH_REMOTE)
		return rc;
	/* Too big to encapsulate: tc answers it (mesh_too_big). */
	if (rc == MESH_REMOTE && mesh_max_packet(cfg) &&
	    bpf_ntohs(ip->tot_len) > mesh_max_packet(cfg))
		return MESH_CONTINUE;
	check = (void *)ports + l4_csum_off(ip->protocol);
	if ((void *)(check + 1) > data_end) {
		*reason = DROP_LB_REWRITE;
		return MESH_DROP;
	}
	/* The pseudo-header's destination and the port; a UDP checksum of 0
	 * (none) stays 0, a computed 0 is sent as 0xffff. */
	if (ip->protocol == IPPROTO_TCP || *check) {
		__u16 c = csum_replace4(*check, ip->daddr, mp.backend);

		c = csum_replace2(c, ports[1], mp.target);
		if (ip->protocol == IPPROTO_UDP && !c)
			c = 0xffff;
		*check = c;
	}
	ip->check = csum_replace4(ip->check, ip->daddr, mp.backend);
	ip->daddr = mp.backend;
	ports[1] = mp.target;
	count_stat(STAT_MESH_ENTRY);
	if (!mp.host)
		count_backend(mp.vni, mp.vip, mp.backend, (__u32)(data_end - data));
	if (rc == MESH_REMOTE && ip->protocol == IPPROTO_TCP)
		xdp_clamp_mss(ctx, ETH_HLEN + sizeof(struct iphdr), cfg->mesh_mss);
	return rc;
}

#endif
