/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The types userspace mirrors that no map names (ring buffer records,
 * enums): clang writes BTF only for the types of maps, globals and emitted
 * functions' parameters, so this never-called function's parameter brings
 * them into the object's BTF, where ebpf/src/btf_check.rs compares them
 * with their Rust mirrors. Programs never call it: the kernel never sees
 * its code.
 */
#ifndef SHOAL_BTF_ANCHOR_H
#define SHOAL_BTF_ANCHOR_H

#include "shoal.h"
#include "flows.h"
#include "events.h"

struct shoal_btf_types {
	struct shoal_event event;
	struct shoal_flow flow;
	enum shoal_drop drop;
	enum shoal_stat stat;
	enum shoal_event_kind event_kind;
	enum shoal_trace_point trace_point;
	enum shoal_flow_kind flow_kind;
	enum monitor_flags monitor_flags;
	enum ep_flags ep_flags;
	enum mesh_port_flags mesh_port_flags;
	enum shoal_sizes sizes;
	enum vni_flags vni_flags;
	enum iface_flags iface_flags;
	enum shoal_ipsec ipsec;
};

__attribute__((used)) static void shoal_btf_anchor(struct shoal_btf_types *t)
{
}

#endif
