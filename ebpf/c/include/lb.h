/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * VIP load balancing on the endpoint's tc hook, with first-class maps:
 *
 *   shoal_services  (VNI, VIP)          -> backend count, Maglev size
 *   shoal_maglev    (VNI, VIP)          -> Maglev table: slot -> backend IP
 *   shoal_backends  (VNI, VIP, backend) -> present (a live backend)
 *   shoal_ct        flow to the VIP     -> its backend      (LRU)
 *   shoal_rct       flow from a backend -> the VIP it hides (LRU)
 *
 * Every TCP and UDP port of a VIP goes to the same port of the backend (as
 * in Docker: services do not declare ports). A flow keeps its backend while
 * that backend lives; if it went away, the flow is sent to the backend the
 * table gives now, whose kernel resets a TCP flow it does not know at once
 * (no hanging connection) and simply carries a UDP one on.
 */
#ifndef SHOAL_LB_H
#define SHOAL_LB_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "shoal.h"
#include "maps.h"
#include "overlay.h"
#include "flows.h"
#include "pkt.h"
#include "l4.h"

#define SHOAL_MAX_SERVICES 4096
/* Every task behind a VIP is a backend: Swarm2000 ran 96,287. */
#define SHOAL_MAX_BACKENDS 131072
#define SHOAL_CT_MAX 262144

/* shoal_services is declared in overlay.h (the ARP responder needs it). */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SHOAL_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct svc_key);
	__type(value, struct maglev_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SHOAL_MAX_BACKENDS);
	__type(key, struct backend_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SHOAL_CT_MAX);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SHOAL_CT_MAX);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_rct SEC(".maps");

/* From linux/icmp.h, which drags in glibc's socket headers. */
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11

/* The first 8 bytes of any ICMP message (echo, or an error whose quoted
 * packet follows). */
struct icmp_echo_hdr {
	__u8 type;
	__u8 code;
	__u16 checksum;
	__u32 rest;
};

#define ICMP_CSUM offsetof(struct icmp_echo_hdr, checksum)

enum lb_verdict {
	LB_NOT_VIP = 0, /* not for a VIP: untouched */
	LB_CONTINUE,    /* for a VIP, rewritten (or left): classify it again */
	LB_ECHO_REPLY,  /* an echo request to a VIP, turned into the reply */
	LB_DROP,        /* drop, with a reason */
};

/* Per service and backend: packets and bytes sent there (`debug lb`). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, SHOAL_MAX_BACKENDS);
	__type(key, struct backend_key);
	__type(value, struct lb_stat_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_lb_stats SEC(".maps");

static __always_inline void count_backend(__u32 vni, __be32 vip, __be32 backend, __u32 len)
{
	struct backend_key k = { .vni = vni, .vip = vip, .ip = backend };
	struct lb_stat_value *v = bpf_map_lookup_elem(&shoal_lb_stats, &k);

	if (!v) {
		struct lb_stat_value zero = {};

		bpf_map_update_elem(&shoal_lb_stats, &k, &zero, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&shoal_lb_stats, &k);
		if (!v)
			return;
	}
	v->packets += 1;
	v->bytes += len;
}

/* The flow's hash: the same on every node (no per-boot seed), so every
 * node's identical Maglev table sends a flow to the same backend. */
static __always_inline __u32 lb_hash(__u32 a, __u32 b, __u32 c)
{
	__u32 h = a * 0x9e3779b1u;

	h ^= b + 0x7f4a7c15u + (h << 6) + (h >> 2);
	h ^= c + 0x94d049bbu + (h << 6) + (h >> 2);
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

/* The backend service `sk`'s Maglev table gives a flow (the VIPs' and the
 * routing mesh's); 0 if it has none. */
static __always_inline __be32 maglev_backend(const struct svc_value *svc, const struct svc_key *sk,
					     const struct iphdr *ip, const __be16 *ports)
{
	struct maglev_value *mg = bpf_map_lookup_elem(&shoal_maglev, sk);
	__u32 slot;

	if (!mg || !svc || !svc->count || !svc->m)
		return 0;
	slot = lb_hash(ip->saddr, ((__u32)ports[0] << 16) | ports[1], ip->protocol ^ ip->daddr) %
	       svc->m;
	/* Never so (the agent writes m <= SHOAL_MAGLEV_MAX); the verifier
	 * needs the bound. */
	if (slot >= SHOAL_MAGLEV_MAX)
		return 0;
	return mg->slots[slot];
}

/* An echo request to a VIP: answered here (Docker's VIPs stay silent). */
static __always_inline int lb_echo_reply(struct __sk_buff *skb, struct iphdr *ip, int l4)
{
	struct icmp_echo_hdr icmp;
	struct ethhdr eth;
	__be32 a = ip->saddr, b = ip->daddr;
	__u8 reply = ICMP_ECHOREPLY;

	if (bpf_skb_load_bytes(skb, l4, &icmp, sizeof(icmp)) || icmp.type != ICMP_ECHO ||
	    icmp.code != 0)
		return LB_CONTINUE;
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)))
		return LB_CONTINUE;
	{
		__u8 tmp[ETH_ALEN];

		__builtin_memcpy(tmp, eth.h_dest, ETH_ALEN);
		__builtin_memcpy(eth.h_dest, eth.h_source, ETH_ALEN);
		__builtin_memcpy(eth.h_source, tmp, ETH_ALEN);
	}
	if (bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0))
		return LB_CONTINUE;
	/* Swapping the addresses leaves the IP checksum as it was. */
	if (bpf_skb_store_bytes(skb, ETH_HLEN + IPV4_SRC, &b, sizeof(b), 0) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + IPV4_DST, &a, sizeof(a), 0))
		return LB_CONTINUE;
	if (bpf_l4_csum_replace(skb, l4 + ICMP_CSUM, bpf_htons(ICMP_ECHO << 8),
				bpf_htons(ICMP_ECHOREPLY << 8), 2))
		return LB_CONTINUE;
	if (bpf_skb_store_bytes(skb, l4 + offsetof(struct icmp_echo_hdr, type), &reply,
				sizeof(reply), 0))
		return LB_CONTINUE;
	count_stat(STAT_LB_ECHO);
	return LB_ECHO_REPLY;
}

static __always_inline void ct_key_set(struct ct_key *k, __u32 vni, __be32 saddr, __be32 daddr,
				       __be16 sport, __be16 dport, __u8 proto)
{
	k->vni = vni;
	k->saddr = saddr;
	k->daddr = daddr;
	k->sport = sport;
	k->dport = dport;
	k->proto = proto;
}

/* The reply's view of a flow to a VIP that `backend` takes: from the
 * backend to the client, or for a hairpin (the client is its own
 * backend) to the VIP. */
static __always_inline void lb_reply_key(struct ct_key *rk, __u32 vni, __be32 backend,
					 const struct iphdr *ip, const __be16 *ports)
{
	ct_key_set(rk, vni, backend, backend == ip->saddr ? ip->daddr : ip->saddr, ports[1],
		   ports[0], ip->protocol);
}

/*
 * A TCP SYN or a UDP datagram straight to an address (not a VIP) starts a
 * direct flow: a reverse entry left by an earlier flow through a VIP on the
 * same ports would give its replies the VIP's address, and the client
 * would drop them. So it goes. (A client sending from one UDP port to both
 * the VIP and that backend at once is ambiguous by nature: replies follow
 * whichever of the two sent last.)
 */
static __always_inline void forget_stale_reverse(struct __sk_buff *skb, __u32 vni,
						 const struct iphdr *ip, int l4)
{
	struct ct_key ck = {};
	__be16 ports[2];

	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr tcp;

		/* The header up to its flags. */
		if (skb_copy(skb, l4, &tcp, offsetof(struct tcphdr, window)) || !tcp.syn || tcp.ack)
			return; /* not a SYN, or a SYN-ACK */
	} else if (ip->protocol != IPPROTO_UDP) {
		return;
	}
	if (skb_copy(skb, l4, ports, sizeof(ports)))
		return;
	ct_key_set(&ck, vni, ip->daddr, ip->saddr, ports[1], ports[0], ip->protocol);
	/* UDP has no start of flow: every direct datagram looks (a lookup is
	 * cheaper than a delete of nothing). */
	if (ip->protocol == IPPROTO_UDP && !bpf_map_lookup_elem(&shoal_rct, &ck))
		return;
	bpf_map_delete_elem(&shoal_rct, &ck);
}

/* What a VIP balances: whole TCP and UDP datagrams (a fragment carries no
 * ports to balance by, a later one none at all). */
static __always_inline __u32 lb_vip_refuses(const struct iphdr *ip)
{
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return DROP_VIP_PROTO;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return DROP_VIP_FRAGMENT;
	return DROP_NONE;
}

/* Hairpin, the reply half: a task answering its own flow through its
 * service's VIP (it saw the VIP as the client, see lb_dnat). Back to
 * itself, from the VIP. */
static __always_inline __u32 lb_hairpin_reply(struct __sk_buff *skb, const struct iphdr *ip,
					      int l4)
{
	__u32 r = rewrite_addr(skb, l4, ip->protocol, IPV4_SRC, ip->saddr, ip->daddr);

	if (r || (r = rewrite_addr(skb, l4, ip->protocol, IPV4_DST, ip->daddr, ip->saddr)))
		return r;
	count_stat(STAT_LB_REVNAT);
	return DROP_NONE;
}

/* The backend conntrack holds for the flow `ck` if it is still live; 0
 * otherwise. */
static __always_inline __be32 lb_ct_backend(const struct ct_key *ck, const struct iphdr *ip,
					    const __be16 *ports)
{
	struct ct_value *ct = bpf_map_lookup_elem(&shoal_ct, ck);
	struct backend_key bk = { .vni = ck->vni, .vip = ip->daddr };
	struct ct_value cv;
	struct ct_key rk = {};

	if (!ct)
		return 0;
	bk.ip = ct->backend;
	if (!bpf_map_lookup_elem(&shoal_backends, &bk))
		return 0;
	cv = *ct;
	/* A direct datagram on the same ports may have taken the reverse
	 * entry (forget_stale_reverse): UDP puts it back. */
	if (ip->protocol == IPPROTO_UDP) {
		lb_reply_key(&rk, ck->vni, cv.backend, ip, ports);
		if (!bpf_map_lookup_elem(&shoal_rct, &rk))
			bpf_map_update_elem(&shoal_rct, &rk, &cv, BPF_NOEXIST);
	}
	return cv.backend;
}

/* The client's own entry marked: from now on its deliveries look for VIP
 * replies (EP_F_VIP_CLIENT). Written in place, and only once: an entry is
 * rewritten by the agent only when it plumbs the endpoint, which keeps
 * the mark. */
static __always_inline void lb_mark_client(__u32 vni, __be32 client)
{
	struct ep_key k = { .vni = vni, .ip = client };
	struct ep_value *ep = bpf_map_lookup_elem(&shoal_endpoints, &k);

	if (ep && !(ep->flags & EP_F_VIP_CLIENT))
		ep->flags |= EP_F_VIP_CLIENT;
}

/* A new flow to a VIP: its backend by the Maglev table into *backend, its
 * conntrack entries both ways, its client marked, and a record in the flow
 * log. */
static __always_inline __u32 lb_new_flow(struct __sk_buff *skb, const struct svc_value *svc,
					 const struct svc_key *sk, const struct ct_key *ck,
					 const struct iphdr *ip, const __be16 *ports,
					 __be32 *backend)
{
	struct ct_value cv = { .vip = ip->daddr };
	struct ct_key rk = {};

	cv.backend = maglev_backend(svc, sk, ip, ports);
	if (!cv.backend)
		return DROP_NO_BACKEND;
	bpf_map_update_elem(&shoal_ct, ck, &cv, BPF_ANY);
	lb_reply_key(&rk, ck->vni, cv.backend, ip, ports);
	bpf_map_update_elem(&shoal_rct, &rk, &cv, BPF_ANY);
	lb_mark_client(ck->vni, ip->saddr);
	{
		struct shoal_flow f = {
			.ifindex = skb->ifindex,
			.vni = ck->vni,
			.kind = FL_VIP,
			.saddr = ip->saddr,
			.daddr = ip->daddr,
			.backend = cv.backend,
			.sport = ports[0],
			.dport = ports[1],
			.bport = ports[1],
			.proto = ip->protocol,
		};

		flow_new(&f);
	}
	*backend = cv.backend;
	return DROP_NONE;
}

/* The flow to `backend`: its destination rewritten, and counted. */
static __always_inline __u32 lb_dnat(struct __sk_buff *skb, __u32 vni, const struct iphdr *ip,
				     int l4, __be32 backend)
{
	__u32 r;

	/* Hairpin: the task would answer itself on its own address, which
	 * its socket (connected to the VIP) refuses. So it sees the VIP as
	 * the client, and its reply comes back through lb_hairpin_reply. */
	if (backend == ip->saddr &&
	    (r = rewrite_addr(skb, l4, ip->protocol, IPV4_SRC, ip->saddr, ip->daddr)))
		return r;
	r = rewrite_addr(skb, l4, ip->protocol, IPV4_DST, ip->daddr, backend);
	if (r)
		return r;
	count_stat(STAT_LB_DNAT);
	count_backend(vni, ip->daddr, backend, skb->len);
	return DROP_NONE;
}

/*
 * A frame from a local endpoint on network `vni` to an address of its
 * subnet that no endpoint has: if it is a VIP, pick the backend (conntrack,
 * else Maglev) and rewrite the destination. LB_DROP with *reason set when
 * it cannot.
 */
static __always_inline int lb_from_endpoint(struct __sk_buff *skb, const struct iface_value *ifc,
					    __u32 *reason)
{
	struct svc_key sk = { .vni = ifc->vni };
	struct svc_value *svc;
	struct iphdr ip;
	struct ct_key ck = {};
	__be16 ports[2];
	__be32 backend;
	int l4;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) || ip.version != 4 || ip.ihl < 5)
		return LB_NOT_VIP;
	/* VIPs are addresses of the subnet. */
	if (!in_subnet(ip.daddr, ifc->ip, ifc->prefix_len))
		return LB_NOT_VIP;
	sk.vip = ip.daddr;
	svc = bpf_map_lookup_elem(&shoal_services, &sk);
	if (!svc)
		return LB_NOT_VIP;
	l4 = ETH_HLEN + ip.ihl * 4;
	if (ip.protocol == IPPROTO_ICMP)
		return lb_echo_reply(skb, &ip, l4);
	*reason = lb_vip_refuses(&ip);
	if (*reason)
		return LB_DROP;
	if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)))
		return LB_CONTINUE;

	ct_key_set(&ck, sk.vni, ip.saddr, ip.daddr, ports[0], ports[1], ip.protocol);
	if (bpf_map_lookup_elem(&shoal_rct, &ck)) {
		*reason = lb_hairpin_reply(skb, &ip, l4);
		return *reason ? LB_DROP : LB_CONTINUE;
	}
	backend = lb_ct_backend(&ck, &ip, ports);
	if (!backend)
		*reason = lb_new_flow(skb, svc, &sk, &ck, &ip, ports, &backend);
	if (!*reason)
		*reason = lb_dnat(skb, sk.vni, &ip, l4, backend);
	return *reason ? LB_DROP : LB_CONTINUE;
}

/*
 * An ICMP error (unreachable, time exceeded) about a flow that went
 * through a VIP: the packet it quotes went to the backend, but the client
 * sent it to the VIP, and its socket only accepts errors about what it
 * sent. The quoted destination (and the error's source, if it is the
 * backend) become the VIP; the quoted IP header's checksum and the ICMP
 * checksum are fixed. (The quoted L4 checksum is left stale: receivers do
 * not check it.)
 */
static __always_inline void lb_reverse_icmp(struct __sk_buff *skb, __u32 vni,
					    const struct iphdr *ip, int l4)
{
	struct icmp_echo_hdr ic;
	struct iphdr in;
	struct ct_key ck = {};
	struct ct_value *cv;
	__be16 ports[2];
	__be32 backend, vip;
	__u16 in_csum;
	int in_l3 = l4 + sizeof(ic), in_l4;

	if (bpf_skb_load_bytes(skb, l4, &ic, sizeof(ic)) ||
	    (ic.type != ICMP_DEST_UNREACH && ic.type != ICMP_TIME_EXCEEDED))
		return;
	if (bpf_skb_load_bytes(skb, in_l3, &in, sizeof(in)) || in.version != 4 || in.ihl < 5)
		return;
	if (in.protocol != IPPROTO_TCP && in.protocol != IPPROTO_UDP)
		return;
	in_l4 = in_l3 + in.ihl * 4;
	if (bpf_skb_load_bytes(skb, in_l4, ports, sizeof(ports)))
		return;
	ct_key_set(&ck, vni, in.daddr, in.saddr, ports[1], ports[0], in.protocol);
	cv = bpf_map_lookup_elem(&shoal_rct, &ck);
	if (!cv)
		return;
	backend = in.daddr;
	vip = cv->vip;
	in_csum = csum_replace4(in.check, backend, vip);
	if (bpf_skb_store_bytes(skb, in_l3 + IPV4_DST, &vip, sizeof(vip), 0) ||
	    bpf_skb_store_bytes(skb, in_l3 + IPV4_CSUM, &in_csum, sizeof(in_csum), 0))
		return;
	if (bpf_l4_csum_replace(skb, l4 + ICMP_CSUM, backend, vip, sizeof(vip)) ||
	    bpf_l4_csum_replace(skb, l4 + ICMP_CSUM, in.check, in_csum, sizeof(in_csum)))
		return;
	if (ip->saddr == backend) {
		if (bpf_l3_csum_replace(skb, ETH_HLEN + IPV4_CSUM, backend, vip, sizeof(vip)) ||
		    bpf_skb_store_bytes(skb, ETH_HLEN + IPV4_SRC, &vip, sizeof(vip), 0))
			return;
	}
	count_stat(STAT_LB_REVNAT);
}

/* A frame about to be delivered to a local endpoint: if it answers a flow
 * that went through a VIP, it gets the VIP back as its source. */
static __always_inline void lb_reverse(struct __sk_buff *skb, __u32 vni)
{
	struct iphdr ip;
	struct ct_key ck = {};
	struct ct_value *cv;
	__be16 ports[2];
	int l4;

	if (skb_copy(skb, ETH_HLEN, &ip, sizeof(ip)) || ip.version != 4 || ip.ihl < 5)
		return;
	if (ip.frag_off & bpf_htons(IP_OFFSET))
		return;
	l4 = ETH_HLEN + ip.ihl * 4;
	if (ip.protocol == IPPROTO_ICMP) {
		lb_reverse_icmp(skb, vni, &ip, l4);
		return;
	}
	if (ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP)
		return;
	if (skb_copy(skb, l4, ports, sizeof(ports)))
		return;
	ct_key_set(&ck, vni, ip.saddr, ip.daddr, ports[0], ports[1], ip.protocol);
	cv = bpf_map_lookup_elem(&shoal_rct, &ck);
	if (!cv)
		return;
	if (!rewrite_addr(skb, l4, ip.protocol, IPV4_SRC, ip.saddr, cv->vip))
		count_stat(STAT_LB_REVNAT);
}

#endif
