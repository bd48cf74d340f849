// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The embedded DNS server's port, moved out of a task's way.
 *
 * Tasks ask 127.0.0.11:53 (their resolv.conf says so), but the node's DNS
 * server listens on 127.0.0.11:SHOAL_RESOLVER_PORT inside the task's
 * namespace, so a task can bind port 53 itself (a DNS server run as a
 * service: CoreDNS, Pi-hole, BIND). This program sits on the egress of the
 * task's loopback, which every packet between the two passes: a query's
 * destination port 53 becomes the server's, an answer's source port
 * becomes 53 again. Docker does the same with DNAT and SNAT rules in every
 * container; here it is stateless, so the task's namespace needs no
 * conntrack. Loaded and attached by the agent per task
 * (dataplane/src/resolver.rs).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "include/l4.h"

/* Mirrored by shoal_ebpf::RESOLVER_PORT. */
#define SHOAL_RESOLVER_PORT 53053
#define SHOAL_RESOLVER_IP 0x7f00000b /* 127.0.0.11 */

SEC("classifier")
int shoal_dns_lo(struct __sk_buff *skb)
{
	struct iphdr ip;
	__be16 ports[2];
	int l4;

	if (skb->protocol != bpf_htons(ETH_P_IP) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) || ip.ihl < 5 ||
	    (ip.protocol != IPPROTO_UDP && ip.protocol != IPPROTO_TCP) ||
	    (ip.frag_off & bpf_htons(IP_OFFSET)))
		return TC_ACT_OK;
	l4 = ETH_HLEN + ip.ihl * 4;
	if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)))
		return TC_ACT_OK;
	if (ip.daddr == bpf_htonl(SHOAL_RESOLVER_IP) && ports[1] == bpf_htons(53))
		rewrite_port(skb, l4, ip.protocol, L4_DPORT, ports[1],
			     bpf_htons(SHOAL_RESOLVER_PORT));
	else if (ip.saddr == bpf_htonl(SHOAL_RESOLVER_IP) &&
		 ports[0] == bpf_htons(SHOAL_RESOLVER_PORT))
		rewrite_port(skb, l4, ip.protocol, L4_SPORT, ports[0], bpf_htons(53));
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
