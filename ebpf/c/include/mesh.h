/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The ingress routing mesh: a published port answers on every node and the
 * client's own address reaches the backend (no SNAT, no flat L2 needed).
 *
 *   shoal_mesh_addrs the node's addresses besides the advertise address
 *   shoal_mesh_ports (protocol, published port) -> the service's ingress VIP
 *                    (its Maglev table, shoal_maglev) and target port; or,
 *                    for a port published in host mode, the local task
 *   shoal_mesh_ct    (client, node address, ports) -> backend   (LRU, entry)
 *   shoal_mesh_rev   (backend, client, ports) -> the node the flow entered
 *                    by, and (on that node) the address and port the client
 *                    used                                     (LRU, both)
 *
 * Entry (underlay tc ingress, to this node's address): pick the backend by
 * the VIP's Maglev table (the same on every node), rewrite the destination
 * to backend:target, and deliver it to a local backend or encapsulate the
 * packet, the client's source untouched, over the ingress network to the
 * backend's node. That node learns from the outer source which node the
 * flow entered by (mesh_learn); the backend's replies are sent back there
 * (mesh_reply), where the published address is restored and the reply
 * leaves for the client (mesh_out).
 */
#ifndef SHOAL_MESH_H
#define SHOAL_MESH_H

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
#include "tcp_mss.h"

#define SHOAL_MESH_PORTS_MAX 4096
#define SHOAL_MESH_CT_MAX 262144

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SHOAL_MESH_PORTS_MAX);
	__type(key, struct mesh_port_key);
	__type(value, struct mesh_port_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_mesh_ports SEC(".maps");

/* The node's other addresses (the agent keeps them), each with the
 * ifindex of the interface that holds it: published ports answer there
 * too, as Docker's do on every address of a host, and replies leave by
 * that interface. The advertise address (cfg->vtep_ip) always answers. */
#define SHOAL_MESH_ADDRS_MAX 64

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SHOAL_MESH_ADDRS_MAX);
	__type(key, __be32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_mesh_addrs SEC(".maps");

/* The interface a reply from the node's address `from` leaves by: the
 * underlay, or the one that holds `from` (an ifindex above 1 in
 * shoal_mesh_addrs). */
static __always_inline __u32 mesh_oif(const struct shoal_config *cfg, __be32 from)
{
	__u32 *ifx;

	if (from == cfg->vtep_ip || !from)
		return cfg->underlay_ifindex;
	ifx = bpf_map_lookup_elem(&shoal_mesh_addrs, &from);
	return ifx && *ifx > 1 ? *ifx : cfg->underlay_ifindex;
}

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SHOAL_MESH_CT_MAX);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_mesh_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SHOAL_MESH_CT_MAX);
	__type(key, struct ct_key);
	__type(value, struct mesh_rev_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_mesh_rev SEC(".maps");

enum mesh_verdict {
	MESH_CONTINUE = 0, /* not the mesh's: the caller goes on */
	MESH_LOCAL,        /* to d->ep, a local endpoint */
	MESH_REMOTE,       /* encapsulate to d->ep.vtep on d->vni */
	MESH_OUT,          /* a reply ready for the client: route it out */
	MESH_DROP,         /* dropped, *reason says why */
	MESH_TOO_BIG,      /* too big to encapsulate, DF: answer mesh_too_big */
};

#include "mesh_icmp.h"

/* The IPv4 header at `off` and the ports after it; 0 if TCP or UDP and not
 * a later fragment. */
static __always_inline int load_flow(struct __sk_buff *skb, int off, struct iphdr *ip,
				     __be16 *ports)
{
	if (bpf_skb_load_bytes(skb, off, ip, sizeof(*ip)) || ip->version != 4 || ip->ihl < 5)
		return -1;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return -1;
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return -1;
	return bpf_skb_load_bytes(skb, off + ip->ihl * 4, ports, 2 * sizeof(__be16));
}

/* Where a published port's packet goes (mesh_pick), for either hook. */
struct mesh_pick {
	__be32 backend;
	__be16 target;
	__u32 vni;
	__be32 vip;
	int host;
};

/*
 * A packet from the underlay to this node's address (headers parsed by the
 * hook): a published port? Picks the backend (the flow's, else the VIP's
 * Maglev table, the same on every node; host mode: the local task), records
 * the flow and fills d->ep with where the backend is. Maps only, so the tc
 * and XDP entries share it; the caller rewrites the packet.
 */
static __always_inline int mesh_pick(const struct shoal_config *cfg, const struct iphdr *ip,
				     const __be16 *ports, struct decision *d,
				     struct mesh_pick *mp, __u32 *reason)
{
	struct mesh_port_key pk = {};
	struct mesh_port_value *pv;
	struct svc_key sk = {};
	struct ct_key ck = {};
	struct ct_value *ct, cv = {};
	__be32 backend = 0;
	int host;

	if (ip->daddr != cfg->vtep_ip && !bpf_map_lookup_elem(&shoal_mesh_addrs, &ip->daddr))
		return MESH_CONTINUE;
	pk.port = ports[1];
	pk.proto = ip->protocol;
	pv = bpf_map_lookup_elem(&shoal_mesh_ports, &pk);
	if (!pv)
		return MESH_CONTINUE;
	if (ip->frag_off & bpf_htons(IP_MF)) {
		*reason = DROP_MESH_FRAGMENT;
		return MESH_DROP;
	}
	host = pv->flags & MESH_F_HOST;
	/* Host mode: the one local task, on its own network. */
	sk.vni = host ? pv->vni : cfg->ingress_vni;
	sk.vip = pv->addr;

	ct_key_set(&ck, sk.vni, ip->saddr, ip->daddr, ports[0], ports[1], ip->protocol);
	ct = bpf_map_lookup_elem(&shoal_mesh_ct, &ck);
	if (host) {
		backend = pv->addr;
	} else if (ct) {
		struct backend_key bk = { .vni = sk.vni, .vip = sk.vip, .ip = ct->backend };

		if (bpf_map_lookup_elem(&shoal_backends, &bk))
			backend = ct->backend;
	}
	if (!backend || (host && !ct)) {
		struct mesh_rev_value rv = {};
		struct ct_key rk = {};

		if (!host) {
			backend = maglev_backend(bpf_map_lookup_elem(&shoal_services, &sk), &sk, ip,
						 ports);
			if (!backend) {
				*reason = DROP_NO_BACKEND;
				return MESH_DROP;
			}
		}
		cv.backend = backend;
		cv.vip = sk.vip;
		rv.entry_vtep = cfg->vtep_ip;
		rv.node_ip = ip->daddr;
		rv.port = ports[1];
		ct_key_set(&rk, sk.vni, backend, ip->saddr, pv->target, ports[0], ip->protocol);
		if (bpf_map_update_elem(&shoal_mesh_ct, &ck, &cv, BPF_ANY) ||
		    bpf_map_update_elem(&shoal_mesh_rev, &rk, &rv, BPF_ANY)) {
			*reason = DROP_MESH_CT;
			return MESH_DROP;
		}
		{
			struct shoal_flow f = {
				.ifindex = cfg->underlay_ifindex,
				.vni = sk.vni,
				.kind = FL_MESH,
				.saddr = ip->saddr,
				.daddr = ip->daddr,
				.backend = backend,
				.sport = ports[0],
				.dport = ports[1],
				.bport = pv->target,
				.proto = ip->protocol,
			};

			flow_new(&f);
		}
	}
	if (!lookup_ep(d, sk.vni, backend) || (host && !(d->ep.flags & EP_F_LOCAL))) {
		/* Gossip has not told this node where the backend is yet. */
		*reason = DROP_NO_BACKEND;
		return MESH_DROP;
	}
	mp->backend = backend;
	mp->target = pv->target;
	mp->vni = sk.vni;
	mp->vip = sk.vip;
	mp->host = host;
	d->inner_proto = bpf_htons(ETH_P_IP);
	d->tos = ip->tos;
	return (d->ep.flags & EP_F_LOCAL) ? MESH_LOCAL : MESH_REMOTE;
}

/* The tc entry: a packet from the underlay to this node's address. */
static __always_inline int mesh_entry(struct __sk_buff *skb, const struct shoal_config *cfg,
				      struct decision *d, __u32 *reason)
{
	struct mesh_pick mp = {};
	struct iphdr ip;
	__be16 ports[2];
	int l4, rc;

	if (load_flow(skb, ETH_HLEN, &ip, ports))
		return MESH_CONTINUE;
	rc = mesh_pick(cfg, &ip, ports, d, &mp, reason);
	if (rc != MESH_LOCAL && rc != MESH_REMOTE)
		return rc;
	if (rc == MESH_REMOTE && mesh_max_packet(cfg) && !skb->gso_size &&
	    bpf_ntohs(ip.tot_len) > mesh_max_packet(cfg)) {
		*reason = DROP_FRAG_NEEDED;
		/* Without DF a router would fragment; the mesh cannot. */
		if (!(ip.frag_off & bpf_htons(IP_DF)) || ip.ihl != 5)
			return MESH_DROP;
		return MESH_TOO_BIG;
	}
	l4 = ETH_HLEN + ip.ihl * 4;
	*reason = rewrite_addr(skb, l4, ip.protocol, IPV4_DST, ip.daddr, mp.backend);
	if (!*reason)
		*reason = rewrite_port(skb, l4, ip.protocol, L4_DPORT, ports[1], mp.target);
	if (*reason)
		return MESH_DROP;
	count_stat(STAT_MESH_ENTRY);
	if (!mp.host)
		count_backend(mp.vni, mp.vip, mp.backend, skb->len);
	if (rc == MESH_REMOTE && ip.protocol == IPPROTO_TCP)
		tc_clamp_mss(skb, l4, cfg->mesh_mss);
	return rc;
}

/* On the backend's node, a packet of the ingress network just decapsulated
 * (headers at 0 again), sent by entry node `entry_vtep`: if it comes from
 * outside the ingress subnet (a mesh client), remember where to send the
 * replies. 1 for a mesh client's packet: no VIP's reply then (those come
 * from tasks, inside the subnet), so the caller skips lb_reverse. */
static __always_inline int mesh_learn(struct __sk_buff *skb, const struct shoal_config *cfg,
				      __u32 vni, __be32 entry_vtep)
{
	struct mesh_rev_value rv = {}, *old;
	struct ct_key rk = {};
	struct iphdr ip;
	__be16 ports[2];

	if (!cfg->ingress_vni || vni != cfg->ingress_vni || load_flow(skb, ETH_HLEN, &ip, ports))
		return 0;
	if (in_subnet(ip.saddr, cfg->ingress_net, cfg->ingress_prefix))
		return 0;
	ct_key_set(&rk, vni, ip.daddr, ip.saddr, ports[1], ports[0], ip.protocol);
	/* Written once per flow, not per packet; but a client port reused
	 * through another entry node (or after a host-mode flow on the same
	 * ports) must move the replies there. */
	old = bpf_map_lookup_elem(&shoal_mesh_rev, &rk);
	if (old && old->entry_vtep == entry_vtep && !old->node_ip)
		return 1;
	rv.entry_vtep = entry_vtep;
	bpf_map_update_elem(&shoal_mesh_rev, &rk, &rv, BPF_ANY);
	return 1;
}

/* Restores the published address as the source of a reply whose headers
 * sit at 0, for a flow that entered by this node: DROP_NONE, or why not. */
static __always_inline __u32 mesh_restore(struct __sk_buff *skb, const struct iphdr *ip,
					  const __be16 *ports, const struct mesh_rev_value *rv)
{
	int l4 = ETH_HLEN + ip->ihl * 4;
	__u32 r = rewrite_addr(skb, l4, ip->protocol, IPV4_SRC, ip->saddr, rv->node_ip);

	if (r || (r = rewrite_port(skb, l4, ip->protocol, L4_SPORT, ports[0], rv->port)))
		return r;
	count_stat(STAT_MESH_REPLY);
	return DROP_NONE;
}

/* A frame from a local endpoint to an address outside its subnet: a reply
 * of a mesh flow? Restored here if it entered by this node, else sent back
 * to its entry node over the ingress network. */
static __always_inline int mesh_reply(struct __sk_buff *skb, const struct shoal_config *cfg,
				      __u32 vni, struct decision *d, __be32 *client, __be32 *from,
				      __u32 *reason)
{
	struct mesh_rev_value *rv;
	struct ct_key rk = {};
	struct iphdr ip, in;
	__be16 ports[2], inports[2];
	int icmp = 0;

	/* Any network: host-mode ports deliver on the task's own. An ICMP
	 * error about a mesh flow goes where its replies go. */
	if (load_flow(skb, ETH_HLEN, &ip, ports)) {
		rv = mesh_icmp_flow(skb, ETH_HLEN, vni, &ip, &in, inports);
		icmp = 1;
	} else {
		ct_key_set(&rk, vni, ip.saddr, ip.daddr, ports[0], ports[1], ip.protocol);
		rv = bpf_map_lookup_elem(&shoal_mesh_rev, &rk);
	}
	if (!rv)
		return MESH_CONTINUE;
	if (rv->entry_vtep == cfg->vtep_ip) {
		*reason = icmp ? mesh_icmp_restore(skb, ETH_HLEN, &ip, &in, inports, rv) :
				 mesh_restore(skb, &ip, ports, rv);
		if (*reason)
			return MESH_DROP;
		*client = ip.daddr;
		*from = rv->node_ip;
		return MESH_OUT;
	}
	d->ep.vtep = rv->entry_vtep;
	d->vni = vni;
	d->inner_proto = bpf_htons(ETH_P_IP);
	d->tos = ip.tos;
	return MESH_REMOTE;
}

/* At the entry node, a reply of one of its mesh flows that came back
 * encapsulated (classify_from_underlay found no local endpoint for it):
 * decapsulated and restored here. */
static __always_inline int mesh_reply_in(struct __sk_buff *skb, const struct shoal_config *cfg,
					 const struct decision *d, __be32 *client, __be32 *from)
{
	struct mesh_rev_value *rv;
	struct ct_key rk = {};
	struct iphdr ip, in;
	__be16 ports[2], inports[2];
	int icmp = 0;

	if (!cfg->ingress_vni || d->vni != cfg->ingress_vni || d->inner_off > UL_PULL_LEN)
		return MESH_CONTINUE;
	/* Or an ICMP error a backend sent about a flow that entered here. */
	if (load_flow(skb, d->inner_off + ETH_HLEN, &ip, ports)) {
		rv = mesh_icmp_flow(skb, d->inner_off + ETH_HLEN, d->vni, &ip, &in, inports);
		icmp = 1;
	} else {
		ct_key_set(&rk, d->vni, ip.saddr, ip.daddr, ports[0], ports[1], ip.protocol);
		rv = bpf_map_lookup_elem(&shoal_mesh_rev, &rk);
	}
	if (!rv || rv->entry_vtep != cfg->vtep_ip)
		return MESH_CONTINUE;
	/* inner_off 0: the encrypted networks' vxlan device took the outer
	 * headers off already. */
	if (d->inner_off && bpf_skb_adjust_room(skb, -(__s32)d->inner_off, BPF_ADJ_ROOM_MAC,
						BPF_F_ADJ_ROOM_FIXED_GSO))
		return MESH_DROP;
	if (icmp ? mesh_icmp_restore(skb, ETH_HLEN, &ip, &in, inports, rv) :
		   mesh_restore(skb, &ip, ports, rv))
		return MESH_DROP;
	*client = ip.daddr;
	*from = rv->node_ip;
	return MESH_OUT;
}

#endif
