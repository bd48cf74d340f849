/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Datapath events for `shoal debug monitor`: drops (with their reason) and
 * traces of forwarded packets (encap, decap, local delivery, the mesh's
 * entry and reply), through a ring buffer.
 *
 * Off unless someone listens: every drop and trace point first reads one
 * word of `shoal_monitor` (set by the monitor while it runs; a trace point
 * inline, before any call), so the fast path pays one array lookup.
 * Traces can be sampled (1 in trace_every).
 * Drops also go to the flow log (flows.h) while the agent keeps one.
 */
#ifndef SHOAL_EVENTS_H
#define SHOAL_EVENTS_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "shoal.h"
#include "maps.h"
#include "flows.h"
#include "pkt.h"

enum shoal_event_kind {
	EV_DROP = 1,
	EV_TRACE = 2,
};

enum shoal_trace_point {
	TR_ENCAP = 1,      /* sent to a remote VTEP (the packet as encapsulated) */
	TR_DECAP,          /* arrived from a VTEP for a local endpoint (before decap) */
	TR_LOCAL,          /* endpoint to endpoint on this node */
	TR_MESH_ENTRY,     /* a client's packet to a published port, sent to its backend */
	TR_MESH_REPLY,     /* a backend's reply leaving for the client */
};

/* One event; the 5-tuple is the inner one for VXLAN (vni, vtep set). */
struct shoal_event {
	__u64 ts_ns;       /* bpf_ktime_get_ns */
	__u32 ifindex;
	__u16 kind;
	__u16 code;        /* drop reason or trace point */
	__u32 len;
	__u32 vni;
	__be32 vtep;       /* outer source of a VXLAN packet */
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 hook;         /* 0 tc, 1 xdp */
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_events SEC(".maps");

/* The IPv4 header at `off` and its ports into e; its header length, or 0. */
static __always_inline __u32 ev_ip(void *ctx, int xdp, __u32 off, struct shoal_event *e)
{
	struct iphdr ip;
	__be16 ports[2];
	__u32 ihl;

	if (pkt_load(ctx, xdp, off, &ip, sizeof(ip)) || ip.version != 4 || ip.ihl < 5)
		return 0;
	e->saddr = ip.saddr;
	e->daddr = ip.daddr;
	e->proto = ip.protocol;
	e->sport = 0;
	e->dport = 0;
	ihl = ip.ihl * 4;
	if ((ip.protocol == IPPROTO_TCP || ip.protocol == IPPROTO_UDP) &&
	    !(ip.frag_off & bpf_htons(IP_OFFSET)) &&
	    !pkt_load(ctx, xdp, off + ihl, ports, sizeof(ports))) {
		e->sport = ports[0];
		e->dport = ports[1];
	}
	return ihl;
}

static __always_inline void ev_emit(void *ctx, int xdp, __u16 kind, __u16 code, __u32 ifindex,
				    __u32 len)
{
	struct shoal_config *cfg = get_config();
	struct monitor_cfg *m;
	struct shoal_event e = {};
	__be16 proto;
	__u32 zero = 0, ihl;

	int mon, flow;

	m = bpf_map_lookup_elem(&shoal_monitor, &zero);
	if (!m)
		return;
	mon = m->flags & (kind == EV_DROP ? MON_DROPS : MON_TRACES);
	flow = kind == EV_DROP && (m->flags & MON_FLOWS);
	if (!mon && !flow)
		return;
	if (kind == EV_TRACE && m->trace_every > 1 && bpf_get_prandom_u32() % m->trace_every)
		return;
	e.ts_ns = bpf_ktime_get_ns();
	e.ifindex = ifindex;
	e.kind = kind;
	e.code = code;
	e.len = len;
	e.hook = xdp;
	if (!pkt_load(ctx, xdp, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)) &&
	    proto == bpf_htons(ETH_P_IP)) {
		ihl = ev_ip(ctx, xdp, ETH_HLEN, &e);
		/* VXLAN: the network and the inner flow are what matter. */
		if (ihl && cfg && e.proto == IPPROTO_UDP && e.dport == cfg->vxlan_port) {
			struct vxlanhdr vx;
			__u32 vx_off = ETH_HLEN + ihl + sizeof(struct udphdr);
			__u32 inner = vx_off + sizeof(vx);

			if (!pkt_load(ctx, xdp, vx_off, &vx, sizeof(vx))) {
				e.vni = bpf_ntohl(vx.vni_reserved) >> 8;
				e.vtep = e.saddr;
				if (!pkt_load(ctx, xdp, inner + offsetof(struct ethhdr, h_proto), &proto,
					      sizeof(proto)) &&
				    proto == bpf_htons(ETH_P_IP))
					ev_ip(ctx, xdp, inner + sizeof(struct ethhdr), &e);
			}
		}
	}
	if (mon)
		bpf_ringbuf_output(&shoal_events, &e, sizeof(e), 0);
	if (flow) {
		struct shoal_flow f = {
			.ts_ns = e.ts_ns,
			.ifindex = ifindex,
			.vni = e.vni,
			.kind = FL_DROP,
			.reason = code,
			.saddr = e.saddr,
			.daddr = e.daddr,
			.sport = e.sport,
			.dport = e.dport,
			.proto = e.proto,
			.hook = xdp,
		};

		bpf_ringbuf_output(&shoal_flows, &f, sizeof(f), 0);
	}
}

/* Whether anyone listens for traces: read inline at every trace point
 * (an array lookup the verifier inlines), so a forwarded packet makes no
 * call into the event code while no monitor runs. */
static __always_inline int ev_tracing(void)
{
	__u32 zero = 0;
	struct monitor_cfg *m = bpf_map_lookup_elem(&shoal_monitor, &zero);

	return m && (m->flags & MON_TRACES);
}

/* One copy of the event code per hook, called (not inlined) from every
 * drop and trace site: keeps the programs small for the verifier. */
static __attribute__((noinline)) void ev_tc(struct __sk_buff *skb, __u16 kind, __u16 code)
{
	if (!skb)
		return;
	ev_emit(skb, 0, kind, code, skb->ifindex, skb->len);
}

static __attribute__((noinline)) void ev_xdp(struct xdp_md *ctx, __u16 kind, __u16 code)
{
	if (!ctx)
		return;
	ev_emit(ctx, 1, kind, code, ctx->ingress_ifindex, ctx->data_end - ctx->data);
}

#endif
