/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The overlay's maps. All are pinned by name under the daemon's bpffs
 * directory, so a restarted agent finds the same tables and traffic keeps
 * flowing while it is away.
 */
#ifndef SHOAL_MAPS_H
#define SHOAL_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "shoal.h"

/* Swarm2000 ran 96,287 containers: a node on one network spanning all of
 * them holds each as a remote endpoint. */
#define SHOAL_MAX_ENDPOINTS 131072
#define SHOAL_MAX_IFACES 4096
#define SHOAL_MAX_VNIS 4096

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SHOAL_MAX_ENDPOINTS);
	__type(key, struct ep_key);
	__type(value, struct ep_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SHOAL_MAX_IFACES);
	__type(key, __u32);
	__type(value, struct iface_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SHOAL_MAX_VNIS);
	__type(key, __u32);
	__type(value, struct vni_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_vnis SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct shoal_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_stats SEC(".maps");

/* What one local endpoint sent and what was delivered to it, for
 * metrics, in the slot the agent gave it (ep_value.slot, iface_value.slot).
 * An array, not a hash keyed by ifindex: the verifier inlines an array
 * lookup, where a hash lookup hashed and walked a bucket twice a packet. */
struct ep_traffic {
	__u64 tx_packets;
	__u64 tx_bytes;
	__u64 rx_packets;
	__u64 rx_bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SHOAL_MAX_IFACES);
	__type(key, __u32);
	__type(value, struct ep_traffic);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_ep_traffic SEC(".maps");

/* rx: delivered to the endpoint counted in `slot`; else sent by it. Slot 0
 * counts nothing (a remote endpoint, a VIP the host side holds). */
static __always_inline void count_ep(__u32 slot, __u32 len, int rx)
{
	struct ep_traffic *t;

	if (!slot)
		return;
	t = bpf_map_lookup_elem(&shoal_ep_traffic, &slot);
	if (!t)
		return;
	if (rx) {
		t->rx_packets++;
		t->rx_bytes += len;
	} else {
		t->tx_packets++;
		t->tx_bytes += len;
	}
}

static __always_inline void count_drop(__u32 reason)
{
	__u64 *c = bpf_map_lookup_elem(&shoal_drops, &reason);
	if (c)
		*c += 1;
}

static __always_inline void count_stat(__u32 stat)
{
	__u64 *c = bpf_map_lookup_elem(&shoal_stats, &stat);
	if (c)
		*c += 1;
}

static __always_inline struct shoal_config *get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&shoal_config, &zero);
}

#endif
