/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Shoal's map key/value layouts and constants. Every struct and enum here
 * has a Rust mirror in ebpf/src/types.rs; change both together (a unit test
 * compares them with this object's BTF). Constants userspace shares are
 * enums, not #defines, so that the BTF carries them.
 */
#ifndef SHOAL_H
#define SHOAL_H

#include <linux/types.h>

#define SHOAL_VXLAN_HLEN 8

enum shoal_sizes {
	/* outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) */
	SHOAL_ENCAP_LEN = 50,
	/* The largest Maglev table: Cilium's default M (a prime). */
	SHOAL_MAGLEV_MAX = 16381,
};

/* ep_value.flags */
enum ep_flags {
	EP_F_LOCAL = 1,  /* lives on this node, behind ifindex */
	EP_F_REMOTE = 2, /* lives behind the VTEP vtep */
	EP_F_STATIC = 4, /* a static peer (shoal debug peer add): gossip leaves it alone */
	/* Local, on a network the agent knows is not encrypted: decap needs
	 * no look at the network's entry. Without it (an entry written before
	 * the flag existed, or by anything else) the network's entry decides:
	 * the fast path fails closed. */
	EP_F_CLEAR = 8,
	/* Local, and has opened a flow through a VIP: set by the balancer
	 * (lb_new_flow), kept by the agent when it rewrites the entry. Only a
	 * frame delivered to such an endpoint can be a VIP's reply, so only
	 * those look for a reverse entry (lb_reverse). */
	EP_F_VIP_CLIENT = 16,
};

/* An endpoint as the dataplane sees it: (VNI, overlay IPv4) -> where it is. */
struct ep_key {
	__u32 vni;
	__u32 ip; /* network byte order */
};

struct ep_value {
	__u32 ifindex; /* host-side veth, for local endpoints */
	__u32 vtep;    /* remote VTEP IPv4, network byte order, for remote ones */
	__u8 mac[6];   /* the endpoint's own MAC */
	__u16 flags;   /* EP_F_* */
	__u32 slot;    /* a local endpoint's traffic counters (shoal_ep_traffic); 0: none */
};

/* A local endpoint, keyed by the ifindex of its host-side veth: what the
 * encap program needs to know about the frames it sees there. */
struct iface_value {
	__u32 vni;
	__u32 ip;       /* the endpoint's overlay IP, network byte order */
	__u32 gateway;  /* network's gateway IP, network byte order */
	__u32 prefix_len;
	__u8 mac[6];      /* the endpoint's MAC */
	__u8 host_mac[6]; /* the host-side veth's MAC (answers ARP for the gateway) */
	__u32 flags;      /* IFACE_F_* */
	__u32 slot;       /* its traffic counters, as in its ep_value */
};

enum iface_flags {
	/* The endpoint's network is known not to be encrypted: encap needs
	 * no look at the network's entry (the same fail-closed rule as
	 * EP_F_CLEAR). */
	IFACE_F_CLEAR = 1,
};

enum vni_flags {
	/* Encrypted between nodes (`--opt encrypted`): frames leave through
	 * the network's kernel vxlan device (vni_value.crypt_ifindex) on UDP
	 * cfg->crypt_port, which only the IPsec policies' transport-mode SAs
	 * carry (ESP), never the underlay in clear; they are taken only from
	 * that device, as IPsec decrypted them (SHOAL_DECRYPT_MARK). */
	VNI_F_ENCRYPTED = 1,
};

/* The mark the node's inbound IPsec SAs put on what they decrypted (their
 * output-mark): nothing on the wire can set it. And the prefix of the MACs
 * an encrypted network's frames carry between nodes: 02:5e and the VTEP,
 * the destination's (the vxlan device's forwarding entry for that node)
 * and the source's (the node it came from, for the receiver). */
enum shoal_ipsec {
	SHOAL_DECRYPT_MARK = 0xe00,
	SHOAL_DECRYPT_MASK = 0xf00,
	SHOAL_VTEP_MAC_0 = 0x02,
	SHOAL_VTEP_MAC_1 = 0x5e,
};

struct vni_value {
	__u32 flags;         /* VNI_F_* */
	__u32 crypt_ifindex; /* encrypted: the network's vxlan device; 0: none
			      * yet (its frames for other nodes are dropped) */
};

/* Node-wide settings, slot 0 of an array. */
struct shoal_config {
	__u32 underlay_ifindex;
	__u32 vtep_ip;    /* network byte order */
	__u16 vxlan_port; /* network byte order */
	__u16 flags;
	__u32 ingress_vni;    /* the routing mesh's network; 0: no mesh */
	__u32 ingress_net;    /* its subnet, network byte order */
	__u32 ingress_prefix; /* and prefix length */
	__u32 mesh_mss;       /* MSS a client's SYN is clamped to when its flow
			       * is encapsulated (underlay MTU - 90); 0: none */
	__u16 crypt_port;     /* the encrypted networks' VXLAN port, network
			       * byte order, while they have devices: only
			       * ever inside ESP, never taken in clear */
	__u16 pad;
};

/* ---- VIP load balancing (include/lb.h) ---- */

/* A service by network and VIP. */
struct svc_key {
	__u32 vni;
	__u32 vip; /* network byte order */
};

struct svc_value {
	__u32 count; /* live backends */
	__u32 m;     /* Maglev table size, a prime <= SHOAL_MAGLEV_MAX */
	__u32 flags;
	__u32 pad;
};

/* slot -> backend IPv4 (network byte order), 0 = none */
struct maglev_value {
	__u32 slots[SHOAL_MAGLEV_MAX];
};

/* A live backend of a service. */
struct backend_key {
	__u32 vni;
	__u32 vip;
	__u32 ip;
};

/* One direction of a flow through a VIP. */
struct ct_key {
	__u32 vni;
	__u32 saddr;
	__u32 daddr;
	__u16 sport; /* network byte order */
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct ct_value {
	__u32 backend;
	__u32 vip;
};

/* Traffic a service sent to one backend (per CPU), keyed by backend_key. */
struct lb_stat_value {
	__u64 packets;
	__u64 bytes;
};

/* ---- The ingress routing mesh (include/mesh.h) ---- */

/* A published port. */
struct mesh_port_key {
	__u16 port; /* network byte order */
	__u8 proto;
	__u8 pad;
};

/* mesh_port_value.flags */
enum mesh_port_flags {
	MESH_F_HOST = 1, /* host mode: straight to `addr`, a local task on `vni` */
};

struct mesh_port_value {
	__u32 addr;   /* ingress mode: the service's ingress VIP (its Maglev
		       * key); host mode: the local task's address */
	__u32 vni;    /* host mode: the task's network */
	__u16 target; /* the tasks' port, network byte order */
	__u16 flags;  /* MESH_F_* */
};

/* The reply direction of a mesh flow: where it entered the cluster. */
struct mesh_rev_value {
	__u32 entry_vtep; /* the entry node's VTEP */
	__u32 node_ip;    /* on the entry node: the address the client used */
	__u16 port;       /* and the published port, network byte order */
	__u16 flags;
};

/* Drop reasons: index into shoal_drops. Mirrored by DropReason in Rust. */
enum shoal_drop {
	DROP_NONE = 0,
	DROP_TRUNCATED,         /* outer/VXLAN/inner headers shorter than they claim */
	DROP_BAD_VXLAN_FLAGS,   /* VXLAN I flag not set */
	DROP_UNKNOWN_VNI,       /* no network with this VNI on this node */
	DROP_UNKNOWN_INNER_DST, /* inner destination is not a local endpoint */
	DROP_INNER_MALFORMED,   /* inner IPv4/ARP header is invalid */
	DROP_UNSUPPORTED,       /* inner or endpoint frame is not IPv4/ARP */
	DROP_OUTER_FRAGMENT,    /* fragmented VXLAN datagram */
	DROP_NO_NEIGH,          /* underlay next hop not resolved (XDP) */
	DROP_ENCAP_FAILED,      /* the kernel refused to grow the packet */
	DROP_DECAP_FAILED,      /* the kernel refused to shrink the packet */
	DROP_UNKNOWN_ENDPOINT,  /* endpoint sent to an unknown IP of its subnet */
	DROP_NOT_CONFIGURED,    /* frame on an interface the agent does not know */
	DROP_FIB_FAILED,        /* no route to the remote VTEP */
	DROP_ARP_UNKNOWN,       /* ARP request for an address nobody has */
	DROP_FRAG_NEEDED,       /* encapsulated frame exceeds the underlay MTU */
	DROP_VIP_PROTO,         /* to a VIP, neither TCP, UDP nor ICMP echo */
	DROP_VIP_FRAGMENT,      /* a fragment to a VIP (no ports to balance by) */
	DROP_NO_BACKEND,        /* a VIP whose service has no live backend */
	DROP_LB_REWRITE,        /* the kernel refused the address rewrite */
	DROP_MESH_FRAGMENT,     /* a fragment to a published port */
	DROP_MESH_CT,           /* the mesh conntrack refused an entry */
	DROP_CLEAR_ON_ENCRYPTED,/* an encrypted network's VXLAN that IPsec did not decrypt */
	DROP_CANNOT_ENCRYPT,    /* for an encrypted network, but no IPsec here */
	DROP_MAX,
};

/* Forwarding counters: index into shoal_stats. Mirrored by Stat in Rust. */
enum shoal_stat {
	STAT_ENCAP = 0,    /* frames encapsulated towards a remote VTEP */
	STAT_DECAP,        /* VXLAN frames delivered to a local endpoint */
	STAT_LOCAL,        /* endpoint to endpoint on the same node */
	STAT_ARP_REPLY,    /* ARP requests answered by the dataplane */
	STAT_PASS_UNDERLAY,/* underlay frames that were not ours */
	STAT_PASS_ENDPOINT,/* endpoint frames to off-subnet destinations */
	STAT_LB_DNAT,      /* frames to a VIP sent to a backend */
	STAT_LB_REVNAT,    /* replies given their VIP back */
	STAT_LB_ECHO,      /* echo requests to a VIP answered */
	STAT_MESH_ENTRY,   /* client packets to a published port sent to a backend */
	STAT_MESH_REPLY,   /* backend replies given the published address back */
	STAT_XDP_TO_TC,    /* frames XDP left to tc (NAT state needed, see xdp_fast.h) */
	STAT_HEAD_PULL,    /* tc frames whose headers had to be made linear (a copy,
			    * often a new head): should stay near 0 for bulk TCP */
	STAT_MAX,
};

#endif
