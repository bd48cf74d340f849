//! BPF_PROG_TEST_RUN tests of VIP load balancing on the endpoint's tc hook
//! (`ebpf/c/include/lb.h`): DNAT to a Maglev-chosen backend with valid
//! checksums, conntrack keeping a flow's backend, reverse NAT of replies,
//! echo requests to a VIP answered, ARP for a VIP, a dead backend's flow
//! moved on, and the drops (no backend, fragments, other protocols).

use std::net::Ipv4Addr;

use shoal_ebpf::{DropReason, Stat};

use super::tests::*;
use super::Hook;
use crate::lb::LbMaps;
use crate::netlink::Mac;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 100);
const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 101);

pub(super) fn sum16(b: &[u8], mut s: u32) -> u32 {
    for c in b.chunks(2) {
        s += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    s
}

pub(super) fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The L4 checksum of a segment (checksum field included) over the IPv4
/// pseudo-header: 0 when it is right.
pub(super) fn l4_check(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, seg: &[u8]) -> u16 {
    let mut p = vec![];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    fold(sum16(seg, sum16(&p, 0)))
}

/// A TCP segment (SYN) with a correct checksum.
pub(super) fn tcp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&1u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    t.extend_from_slice(b"hello");
    let c = l4_check(src, dst, 6, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

pub(super) fn udp_ok(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut u = udp(sport, dport, b"ping");
    let c = l4_check(src, dst, 17, &u);
    u[6..8].copy_from_slice(&c.to_be_bytes());
    u
}

pub(super) fn frame(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8], dst_mac: Mac) -> Vec<u8> {
    let mut f = eth(dst_mac, MAC_A, 0x0800);
    f.extend(ipv4(src, dst, proto, 0, &[], l4));
    f
}

pub(super) fn addrs(f: &[u8]) -> (Ipv4Addr, Ipv4Addr) {
    let a = |o: usize| Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]);
    (a(26), a(30))
}

/// IP header checksum and L4 checksum of an Ethernet/IPv4 frame are right.
pub(super) fn checksums_ok(f: &[u8]) -> bool {
    let (src, dst) = addrs(f);
    fold(sum16(&f[14..34], 0)) == 0 && l4_check(src, dst, f[23], &f[34..]) == 0
}

#[test]
fn vip_flows_go_to_a_backend_and_replies_come_back_from_the_vip() {
    with_env(|env| {
        let mut lb = LbMaps::open(&env.pins).unwrap();
        lb.set_service(VNI, VIP, &[EP_B], 251).unwrap();
        let host = env.epa_host_mac;

        // TCP to the VIP: rewritten to the backend, delivered locally.
        let f = frame(EP_A, VIP, 6, &tcp(EP_A, VIP, 40000, 80), host);
        let (rc, out) = run(env, Hook::Tc, false, env.epa_ifindex, &f);
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(addrs(&out), (EP_A, EP_B));
        assert_eq!(&out[0..6], &MAC_B);
        assert!(checksums_ok(&out), "{out:02x?}");
        assert_eq!(lb.flows().len(), 1);
        assert_eq!(lb.flows()[0].backend, EP_B);
        // Counted for that service and backend.
        let c = lb.counters();
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].vip, c[0].backend, c[0].packets), (VIP, EP_B, 1));
        assert_eq!(c[0].bytes, f.len() as u64);

        // The backend's reply, delivered to the client: from the VIP.
        let mut r = eth(MAC_A, MAC_B, 0x0800);
        r.extend(ipv4(EP_B, EP_A, 6, 0, &[], &tcp(EP_B, EP_A, 80, 40000)));
        let (rc, out) = run(env, Hook::Tc, false, env.epb_ifindex, &r);
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(addrs(&out), (VIP, EP_A));
        assert!(checksums_ok(&out), "{out:02x?}");

        // The same ports, now straight to the backend (a new SYN): its
        // reply keeps the backend's address.
        let f = frame(EP_A, EP_B, 6, &tcp(EP_A, EP_B, 40000, 80), MAC_B);
        assert_eq!(
            run(env, Hook::Tc, false, env.epa_ifindex, &f).0,
            TC_ACT_REDIRECT
        );
        let (_, out) = run(env, Hook::Tc, false, env.epb_ifindex, &r);
        assert_eq!(addrs(&out), (EP_B, EP_A));

        // UDP, with its checksum.
        let f = frame(EP_A, VIP, 17, &udp_ok(EP_A, VIP, 5353, 53), host);
        let (rc, out) = run(env, Hook::Tc, false, env.epa_ifindex, &f);
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(addrs(&out), (EP_A, EP_B));
        assert!(checksums_ok(&out));

        // UDP from the same ports straight to the backend: the reverse
        // entry of the VIP flow goes, so the backend's reply keeps its own
        // address.
        let back = frame(EP_B, EP_A, 17, &udp_ok(EP_B, EP_A, 53, 5353), MAC_A);
        let (_, out) = run(env, Hook::Tc, false, env.epb_ifindex, &back);
        assert_eq!(addrs(&out), (VIP, EP_A), "while the VIP flow is current");
        let f = frame(EP_A, EP_B, 17, &udp_ok(EP_A, EP_B, 5353, 53), MAC_B);
        assert_eq!(
            run(env, Hook::Tc, false, env.epa_ifindex, &f).0,
            TC_ACT_REDIRECT
        );
        let (_, out) = run(env, Hook::Tc, false, env.epb_ifindex, &back);
        assert_eq!(addrs(&out), (EP_B, EP_A), "after a direct datagram");
        // And through the VIP again: from the VIP again.
        let f = frame(EP_A, VIP, 17, &udp_ok(EP_A, VIP, 5353, 53), host);
        run(env, Hook::Tc, false, env.epa_ifindex, &f);

        // The backend has nothing on that UDP port: its port unreachable
        // reaches the client about the VIP (quoted header and source).
        let quoted = ipv4(EP_A, EP_B, 17, 0, &[], &udp_ok(EP_A, EP_B, 5353, 53))[..28].to_vec();
        let mut icmp = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&quoted);
        let c = fold(sum16(&icmp, 0));
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut e = eth(MAC_A, MAC_B, 0x0800);
        e.extend(ipv4(EP_B, EP_A, 1, 0, &[], &icmp));
        let (rc, out) = run(env, Hook::Tc, false, env.epb_ifindex, &e);
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(addrs(&out), (VIP, EP_A), "the error comes from the VIP");
        let q = &out[42..];
        assert_eq!(&q[16..20], &VIP.octets(), "quoted destination");
        assert_eq!(fold(sum16(&q[..20], 0)), 0, "quoted header checksum");
        assert_eq!(fold(sum16(&out[34..], 0)), 0, "icmp checksum");
        assert_eq!(fold(sum16(&out[14..34], 0)), 0, "ip checksum");

        // ping VIP: answered at once, from the VIP.
        let mut icmp = vec![8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
        icmp.extend_from_slice(b"abcdefgh");
        let c = fold(sum16(&icmp, 0));
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let f = frame(EP_A, VIP, 1, &icmp, host);
        let (rc, out) = run(env, Hook::Tc, false, env.epa_ifindex, &f);
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(addrs(&out), (VIP, EP_A));
        assert_eq!(out[34], 0, "echo reply");
        assert_eq!(fold(sum16(&out[34..], 0)), 0, "icmp checksum");
        assert_eq!(&out[0..6], &MAC_A);

        // ARP for the VIP: the host side answers.
        let mut a = eth([0xff; 6], MAC_A, 0x0806);
        a.extend(arp(1, MAC_A, EP_A, [0; 6], VIP));
        let (rc, out) = run(env, Hook::Tc, false, env.epa_ifindex, &a);
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(&out[22..28], &host);

        // The backend goes, another comes (remote): the flow moves on to
        // it (encapsulated), where a TCP stack that does not know it resets
        // it at once.
        lb.set_service(VNI, VIP, &[EP_R], 251).unwrap();
        let f = frame(EP_A, VIP, 6, &tcp(EP_A, VIP, 40000, 80), host);
        let (rc, out) = run(env, Hook::Tc, false, env.epa_ifindex, &f);
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(out.len(), f.len() + 50, "encapsulated");
        assert_eq!(addrs(&out[50..]), (EP_A, EP_R));

        let before = env.maps.counters();
        // No live backend; a fragment; another protocol: dropped, counted.
        lb.set_service(VNI, EMPTY_VIP, &[], 251).unwrap();
        let f = frame(EP_A, EMPTY_VIP, 6, &tcp(EP_A, EMPTY_VIP, 1, 80), host);
        assert_eq!(
            run(env, Hook::Tc, false, env.epa_ifindex, &f).0,
            TC_ACT_SHOT
        );
        let mut fr = eth(host, MAC_A, 0x0800);
        fr.extend(ipv4(EP_A, VIP, 17, 0x2000, &[], &udp(1, 2, b"frag")));
        assert_eq!(
            run(env, Hook::Tc, false, env.epa_ifindex, &fr).0,
            TC_ACT_SHOT
        );
        let gre = frame(EP_A, VIP, 47, &[0u8; 8], host);
        assert_eq!(
            run(env, Hook::Tc, false, env.epa_ifindex, &gre).0,
            TC_ACT_SHOT
        );
        let after = env.maps.counters();
        for r in [
            DropReason::NoBackend,
            DropReason::VipFragment,
            DropReason::VipProto,
        ] {
            assert_eq!(after.drop_count(r), before.drop_count(r) + 1, "{r:?}");
        }
        assert!(after.stat(Stat::LbDnat) >= 3 && after.stat(Stat::LbRevnat) >= 1);
        assert!(after.stat(Stat::LbEcho) >= 1);

        // Shares of the table, as `shoal debug lb` shows them.
        lb.set_service(VNI, VIP, &[EP_B, EP_R], 251).unwrap();
        let svc = lb.services().into_iter().find(|s| s.vip == VIP).unwrap();
        assert_eq!(svc.backends.iter().map(|b| b.1).sum::<u32>(), 251);
        assert_eq!(lb.backends_of(VNI, VIP), vec![EP_B, EP_R]);
        // A restarted agent's maps (read from the pinned map, not from
        // what this one wrote): a backend gone since is removed.
        let mut next = LbMaps::open(&env.pins).unwrap();
        next.set_service(VNI, VIP, &[EP_R], 251).unwrap();
        assert_eq!(lb.backends_of(VNI, VIP), vec![EP_R]);
        next.remove_service(VNI, VIP);
        assert!(lb.services().iter().all(|s| s.vip != VIP));
        assert!(lb.backends_of(VNI, VIP).is_empty());
    });
}

#[test]
fn a_task_reaches_itself_through_its_vip() {
    with_env(|env| {
        let mut lb = LbMaps::open(&env.pins).unwrap();
        lb.set_service(VNI, VIP, &[EP_A], 251).unwrap();
        let host = env.epa_host_mac;
        // A to its own VIP: it arrives at A from the VIP.
        let f = frame(EP_A, VIP, 6, &tcp(EP_A, VIP, 41000, 80), host);
        let (rc, out) = run(env, Hook::Tc, false, env.epa_ifindex, &f);
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(addrs(&out), (VIP, EP_A));
        assert!(checksums_ok(&out));
        // A's answer to the VIP: back to A, from the VIP.
        let mut r = eth(host, MAC_A, 0x0800);
        r.extend(ipv4(EP_A, VIP, 6, 0, &[], &tcp(EP_A, VIP, 80, 41000)));
        let (rc, out) = run(env, Hook::Tc, false, env.epa_ifindex, &r);
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(addrs(&out), (VIP, EP_A));
        assert_eq!(u16::from_be_bytes([out[34], out[35]]), 80);
        assert_eq!(u16::from_be_bytes([out[36], out[37]]), 41000);
        assert!(checksums_ok(&out));
    });
}

/// Only an endpoint that opened a flow through a VIP (`EP_F_VIP_CLIENT`,
/// set by the balancer) has its deliveries looked up for a VIP's reply:
/// the others' frames go through untouched, even with a reverse entry
/// there, and a new VIP flow marks the client again.
#[test]
fn only_a_vip_s_client_has_its_deliveries_reverse_translated() {
    with_env(|env| {
        let mut lb = LbMaps::open(&env.pins).unwrap();
        lb.set_service(VNI, VIP, &[EP_B], 251).unwrap();
        let host = env.epa_host_mac;
        let marked = |env: &Env, ip| {
            env.maps.endpoint(VNI, ip).unwrap().flags & shoal_ebpf::EP_F_VIP_CLIENT != 0
        };
        assert!(!marked(env, EP_A) && !marked(env, EP_B));

        let f = frame(EP_A, VIP, 6, &tcp(EP_A, VIP, 40000, 80), host);
        assert_eq!(
            run(env, Hook::Tc, false, env.epa_ifindex, &f).0,
            TC_ACT_REDIRECT
        );
        assert!(marked(env, EP_A), "the client is marked");
        assert!(!marked(env, EP_B), "the backend is not");
        let mut r = eth(MAC_A, MAC_B, 0x0800);
        r.extend(ipv4(EP_B, EP_A, 6, 0, &[], &tcp(EP_B, EP_A, 80, 40000)));
        let (_, out) = run(env, Hook::Tc, false, env.epb_ifindex, &r);
        assert_eq!(addrs(&out), (VIP, EP_A));

        // The mark gone (an entry written without it): the reply is
        // delivered as sent, the reverse entry never asked.
        let mut v = env.maps.endpoint(VNI, EP_A).unwrap();
        v.flags &= !shoal_ebpf::EP_F_VIP_CLIENT;
        env.maps.upsert_endpoint(VNI, EP_A, v).unwrap();
        let (rc, out) = run(env, Hook::Tc, false, env.epb_ifindex, &r);
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(addrs(&out), (EP_B, EP_A));

        // A new flow through the VIP marks it again, and the first flow's
        // replies get the VIP back.
        let f = frame(EP_A, VIP, 6, &tcp(EP_A, VIP, 40001, 80), host);
        run(env, Hook::Tc, false, env.epa_ifindex, &f);
        assert!(marked(env, EP_A));
        let (_, out) = run(env, Hook::Tc, false, env.epb_ifindex, &r);
        assert_eq!(addrs(&out), (VIP, EP_A));
    });
}

/// `--accel xdp`: the endpoint's XDP program leaves everything that needs
/// the balancer's state to tc behind it, untouched (a VIP destination, a
/// reply that gets the VIP back, a direct flow on an old VIP flow's ports,
/// ICMP), and still forwards plain overlay traffic itself.
#[test]
fn xdp_leaves_vip_traffic_to_tc_and_forwards_the_rest() {
    with_env(|env| {
        let mut lb = LbMaps::open(&env.pins).unwrap();
        lb.set_service(VNI, VIP, &[EP_B], 251).unwrap();
        let host = env.epa_host_mac;
        let pass = verdict_pass(Hook::Xdp);
        let to_vip = frame(EP_A, VIP, 6, &tcp(EP_A, VIP, 41000, 80), host);
        let (rc, out) = run(env, Hook::Xdp, false, env.epa_ifindex, &to_vip);
        assert_eq!((rc, &out), (pass, &to_vip), "a VIP: tc balances");
        // tc picks the backend and records the flow; the backend's reply
        // then needs the VIP back, so XDP leaves it to tc as well.
        assert_eq!(
            run(env, Hook::Tc, false, env.epa_ifindex, &to_vip).0,
            TC_ACT_REDIRECT
        );
        let mut r = eth(MAC_A, MAC_B, 0x0800);
        r.extend(ipv4(EP_B, EP_A, 6, 0, &[], &tcp(EP_B, EP_A, 80, 41000)));
        assert_eq!(run(env, Hook::Xdp, false, env.epb_ifindex, &r).0, pass);
        // A new direct SYN on those ports: tc must drop the stale entry.
        let direct = frame(EP_A, EP_B, 6, &tcp(EP_A, EP_B, 41000, 80), MAC_B);
        assert_eq!(run(env, Hook::Xdp, false, env.epa_ifindex, &direct).0, pass);
        // ICMP may be an error about a VIP flow: tc.
        let ping = frame(EP_A, EP_B, 1, &[8, 0, 0xf7, 0xff, 0, 0, 0, 0], MAC_B);
        assert_eq!(run(env, Hook::Xdp, false, env.epa_ifindex, &ping).0, pass);
        // Plain traffic between tasks: XDP forwards it itself.
        let plain = frame(EP_A, EP_B, 6, &tcp(EP_A, EP_B, 42000, 80), MAC_B);
        assert_eq!(
            run(env, Hook::Xdp, false, env.epa_ifindex, &plain).0,
            verdict_redirect(Hook::Xdp)
        );
    });
}
