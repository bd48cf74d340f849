/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The switch of what the datapath reports, and the flow log behind
 * `shoal debug flows`: one record per new service flow (a task's
 * connection to a VIP, a client's to a published port) and per drop, into
 * their own ring buffer, which the agent drains into a bounded per-node log.
 *
 * Records are written when a flow is first balanced (its conntrack entry is
 * made), never per packet: the fast path of an established flow pays
 * nothing. The monitor (events.h) has its own ring, so the two listeners
 * never split each other's records.
 */
#ifndef SHOAL_FLOWS_H
#define SHOAL_FLOWS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "shoal.h"

/* monitor_cfg.flags */
enum monitor_flags {
	MON_DROPS = 1,
	MON_TRACES = 2,
	MON_FLOWS = 4,
};

struct monitor_cfg {
	__u32 flags;       /* MON_DROPS | MON_TRACES | MON_FLOWS */
	__u32 trace_every; /* sample 1 trace in N (0, 1: all) */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct monitor_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_monitor SEC(".maps");

enum shoal_flow_kind {
	FL_VIP = 1,   /* a task's new flow to a VIP, balanced to `backend` */
	FL_MESH = 2,  /* a client's new flow to a published port, entering here */
	FL_DROP = 3,  /* a dropped packet (reason), inner flow for VXLAN */
};

/* Addresses and ports in network order. */
struct shoal_flow {
	__u64 ts_ns;       /* bpf_ktime_get_ns */
	__u32 ifindex;     /* where it was seen (an endpoint's host veth, the underlay) */
	__u32 vni;
	__u16 kind;
	__u16 reason;      /* FL_DROP: enum shoal_drop */
	__be32 saddr;      /* the client */
	__be32 daddr;      /* the service's address: VIP, or this node's for the mesh */
	__be32 backend;    /* the task picked (0 for a drop) */
	__be16 sport;
	__be16 dport;
	__be16 bport;      /* the task's port */
	__u8 proto;
	__u8 hook;         /* 0 tc, 1 xdp */
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 18);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_flows SEC(".maps");

/* Called (not inlined) once per new flow, from both hooks. */
static __attribute__((noinline)) void flow_new(struct shoal_flow *f)
{
	struct monitor_cfg *m;
	__u32 zero = 0;

	m = bpf_map_lookup_elem(&shoal_monitor, &zero);
	if (!f || !m || !(m->flags & MON_FLOWS))
		return;
	f->ts_ns = bpf_ktime_get_ns();
	bpf_ringbuf_output(&shoal_flows, f, sizeof(*f), 0);
}

#endif
