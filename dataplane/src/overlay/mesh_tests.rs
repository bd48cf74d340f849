//! BPF_PROG_TEST_RUN tests of the routing mesh (`ebpf/c/include/mesh.h`,
//! `xdp_fast.h`): entry to a local and to a remote backend with the
//! client's address untouched, on both hooks (XDP leaves the return path,
//! which needs NAT state, to tc behind it), the backend's node learning the entry
//! node and sending replies back there, the entry node restoring the
//! published address (for its own backend and for one coming back
//! encapsulated), a packet too big to encapsulate answered with ICMP
//! "fragmentation needed", and what is refused: fragments, a published
//! port without backend, ports that are not published.

use std::net::Ipv4Addr;

use shoal_ebpf::{DropReason, Stat};

use super::lb_tests::{addrs, checksums_ok, frame, tcp, udp_ok};
use super::tests::*;
use super::Hook;
use crate::lb::{LbMaps, MeshMaps, MeshPort};
use crate::netlink::Mac;

pub(super) const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 100);
pub(super) const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 200);
pub(super) const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0, 0xc8];

fn ports(f: &[u8], l3: usize) -> (u16, u16) {
    let l4 = l3 + 20;
    (
        u16::from_be_bytes([f[l4], f[l4 + 1]]),
        u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]),
    )
}

/// A client's TCP SYN from outside to the node's address.
pub(super) fn from_client(env: &Env, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = eth(env.ul_mac, CLIENT_MAC, 0x0800);
    f.extend(ipv4(
        CLIENT,
        LOCAL_VTEP,
        6,
        0,
        &[],
        &tcp(CLIENT, LOCAL_VTEP, sport, dport),
    ));
    f
}

pub(super) fn setup(env: &mut Env, backends: &[Ipv4Addr]) -> (LbMaps, MeshMaps) {
    let mut cfg = env.maps.config().unwrap();
    cfg.ingress_vni = VNI;
    cfg.ingress_net = super::ip_key(Ipv4Addr::new(10, 0, 1, 0));
    cfg.ingress_prefix = 24;
    cfg.mesh_mss = 1410;
    env.maps.set_config(cfg).unwrap();
    let mut lb = LbMaps::open(&env.pins).unwrap();
    lb.set_service(VNI, VIP, backends, 251).unwrap();
    let mut mesh = MeshMaps::open(&env.pins).unwrap();
    for (proto, published, target) in [(6, 8080, 80), (17, 5353, 53)] {
        mesh.set_port(&MeshPort {
            proto,
            published,
            addr: VIP,
            target,
            host: false,
            vni: 0,
        })
        .unwrap();
    }
    (lb, mesh)
}

#[test]
fn a_local_backend_gets_the_client_and_answers_from_the_published_port() {
    with_env(|env| {
        let (_lb, mesh) = setup(env, &[EP_B]);
        for (i, h) in HOOKS.into_iter().enumerate() {
            let sport = 40000 + 10 * i as u16;
            // Entry: to the local backend, the client's address untouched.
            let f = from_client(env, sport, 8080);
            let (rc, out) = run(env, h, true, env.ul_ifindex, &f);
            assert_eq!(rc, verdict_redirect(h), "{h:?}");
            assert_eq!(addrs(&out), (CLIENT, EP_B), "{h:?}");
            assert_eq!(ports(&out, 14), (sport, 80));
            assert_eq!(&out[0..6], &MAC_B);
            assert!(checksums_ok(&out), "{h:?} {out:02x?}");
            assert!(mesh
                .flows()
                .iter()
                .any(|f| (f.backend, f.published, f.client_port) == (EP_B, 8080, sport)));

            // The reply leaves for the client from the node's address:8080
            // (XDP leaves it to tc).
            let mut r = eth(env.epa_host_mac, MAC_B, 0x0800);
            r.extend(ipv4(EP_B, CLIENT, 6, 0, &[], &tcp(EP_B, CLIENT, 80, sport)));
            let (rc, out) = run(env, h, false, env.epb_ifindex, &r);
            if h == Hook::Xdp {
                assert_eq!(rc, verdict_pass(h));
                assert_eq!(out, r, "untouched for tc");
            } else {
                assert_eq!(rc, TC_ACT_REDIRECT);
                assert_eq!(addrs(&out), (LOCAL_VTEP, CLIENT));
                assert_eq!(ports(&out, 14), (8080, sport));
                assert!(checksums_ok(&out), "{out:02x?}");
            }

            // UDP (with its checksum) the same way.
            let mut u = eth(env.ul_mac, CLIENT_MAC, 0x0800);
            u.extend(ipv4(
                CLIENT,
                LOCAL_VTEP,
                17,
                0,
                &[],
                &udp_ok(CLIENT, LOCAL_VTEP, sport + 1, 5353),
            ));
            let (rc, out) = run(env, h, true, env.ul_ifindex, &u);
            assert_eq!(rc, verdict_redirect(h), "{h:?} udp");
            assert_eq!(addrs(&out), (CLIENT, EP_B));
            assert_eq!(ports(&out, 14), (sport + 1, 53));
            assert!(checksums_ok(&out), "{h:?} udp {out:02x?}");
        }
        let c = env.maps.counters();
        assert!(c.stat(Stat::MeshEntry) >= 4 && c.stat(Stat::MeshReply) >= 1);
        assert!(c.stat(Stat::XdpToTc) >= 1);
    });
}

#[test]
fn a_remote_backend_gets_the_client_packet_and_replies_come_back_through_the_entry() {
    with_env(|env| {
        let (_lb, _mesh) = setup(env, &[EP_R]);
        for (i, h) in HOOKS.into_iter().enumerate() {
            let sport = 40002 + 10 * i as u16;
            // Entry: encapsulated to the backend's node, the client's
            // address still the source inside.
            let f = from_client(env, sport, 8080);
            let (rc, out) = run(env, h, true, env.ul_ifindex, &f);
            assert_eq!(rc, verdict_redirect(h), "{h:?}");
            assert_eq!(out.len(), f.len() + 50, "{h:?} encapsulated");
            assert_eq!(addrs(&out).1, REMOTE_VTEP, "outer destination");
            let inner = &out[50..];
            assert_eq!(addrs(inner), (CLIENT, EP_R));
            assert_eq!(ports(inner, 14), (sport, 80));
            assert!(checksums_ok(inner), "{h:?}");

            // The backend's reply comes back encapsulated from its node:
            // the entry node decapsulates it, restores the published
            // address and sends it to the client (tc; XDP passes it there).
            let mut reply = eth(MAC_A, MAC_R, 0x0800);
            reply.extend(ipv4(EP_R, CLIENT, 6, 0, &[], &tcp(EP_R, CLIENT, 80, sport)));
            let vx = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &reply);
            let (rc, out) = run(env, h, true, env.ul_ifindex, &vx);
            if h == Hook::Xdp {
                assert_eq!((rc, &out), (verdict_pass(h), &vx));
                continue;
            }
            assert_eq!(rc, TC_ACT_REDIRECT);
            assert_eq!(out.len(), reply.len(), "decapsulated");
            assert_eq!(addrs(&out), (LOCAL_VTEP, CLIENT));
            assert_eq!(ports(&out, 14), (8080, sport));
            assert!(checksums_ok(&out), "{out:02x?}");
        }

        // A stray reply for no flow of this node: not forwarded.
        let mut stray = eth(MAC_A, MAC_R, 0x0800);
        stray.extend(ipv4(EP_R, CLIENT, 6, 0, &[], &tcp(EP_R, CLIENT, 80, 999)));
        let vx = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &stray);
        let (rc, _) = run(env, Hook::Tc, true, env.ul_ifindex, &vx);
        assert_eq!(rc, TC_ACT_SHOT);
    });
}

#[test]
fn the_backend_node_sends_replies_back_to_the_entry_node() {
    with_env(|env| {
        let (_lb, _mesh) = setup(env, &[EP_A]);
        // A client packet that entered at REMOTE_VTEP, for local EP_A.
        let mut inner = eth(MAC_A, [0xee; 6], 0x0800);
        inner.extend(ipv4(CLIENT, EP_A, 6, 0, &[], &tcp(CLIENT, EP_A, 40003, 80)));
        let vx = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &inner);
        // XDP leaves it to tc, which learns the entry node.
        let (rc, out) = run(env, Hook::Xdp, true, env.ul_ifindex, &vx);
        assert_eq!((rc, &out), (verdict_pass(Hook::Xdp), &vx));
        let (rc, out) = run(env, Hook::Tc, true, env.ul_ifindex, &vx);
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(addrs(&out), (CLIENT, EP_A), "delivered as it came");
        // EP_A's reply goes back, encapsulated, to the entry node,
        // untouched inside (the entry node restores the address).
        let r = frame(
            EP_A,
            CLIENT,
            6,
            &tcp(EP_A, CLIENT, 80, 40003),
            env.epa_host_mac,
        );
        let (rc, out) = run(env, Hook::Tc, false, env.epa_ifindex, &r);
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(out.len(), r.len() + 50);
        assert_eq!(addrs(&out).1, REMOTE_VTEP);
        assert_eq!(addrs(&out[50..]), (EP_A, CLIENT));
        // Traffic to the outside that is no mesh reply is the kernel's.
        let other = frame(
            EP_A,
            CLIENT,
            6,
            &tcp(EP_A, CLIENT, 80, 41000),
            env.epa_host_mac,
        );
        let (rc, _) = run(env, Hook::Tc, false, env.epa_ifindex, &other);
        assert_eq!(rc, TC_ACT_OK);
    });
}

/// A client port first used for a flow that entered here (local backend),
/// then again for one that entered at another node: the replies of the new
/// flow go to the new entry node (the benchmark caught them leaving from
/// here, to a client that expected them from the other node).
#[test]
fn a_client_port_reused_through_another_entry_node_moves_the_replies() {
    with_env(|env| {
        let (_lb, _mesh) = setup(env, &[EP_A]);
        let f = from_client(env, 40004, 8080);
        assert_eq!(
            run(env, Hook::Tc, true, env.ul_ifindex, &f).0,
            TC_ACT_REDIRECT
        );
        let mut inner = eth(MAC_A, [0xee; 6], 0x0800);
        inner.extend(ipv4(CLIENT, EP_A, 6, 0, &[], &tcp(CLIENT, EP_A, 40004, 80)));
        let vx = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &inner);
        assert_eq!(
            run(env, Hook::Tc, true, env.ul_ifindex, &vx).0,
            TC_ACT_REDIRECT
        );
        let r = frame(
            EP_A,
            CLIENT,
            6,
            &tcp(EP_A, CLIENT, 80, 40004),
            env.epa_host_mac,
        );
        let (rc, out) = run(env, Hook::Tc, false, env.epa_ifindex, &r);
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(out.len(), r.len() + 50, "encapsulated, not answered here");
        assert_eq!(addrs(&out).1, REMOTE_VTEP);
        assert_eq!(addrs(&out[50..]), (EP_A, CLIENT));
    });
}

#[test]
fn fragments_unpublished_ports_and_empty_services_are_refused_or_passed() {
    with_env(|env| {
        let (mut lb, _mesh) = setup(env, &[EP_B]);
        for (i, h) in HOOKS.into_iter().enumerate() {
            lb.set_service(VNI, VIP, &[EP_B], 251).unwrap();
            let before = env.maps.counters();
            // A fragment to a published port: dropped, counted.
            let mut fr = eth(env.ul_mac, CLIENT_MAC, 0x0800);
            fr.extend(ipv4(
                CLIENT,
                LOCAL_VTEP,
                17,
                0x2000,
                &[],
                &udp(1, 5353, b"frag"),
            ));
            let (rc, _) = run(env, h, true, env.ul_ifindex, &fr);
            assert_eq!(rc, verdict_drop(h), "{h:?} fragment");
            // A port nobody published: the host's own stack decides.
            let f = from_client(env, 40004, 22);
            assert_eq!(run(env, h, true, env.ul_ifindex, &f).0, verdict_pass(h));
            // A TCP header cut short: not parsed, the kernel's.
            let mut short = eth(env.ul_mac, CLIENT_MAC, 0x0800);
            short.extend(ipv4(CLIENT, LOCAL_VTEP, 6, 0, &[], &[0x9c, 0x40]));
            assert_eq!(
                run(env, h, true, env.ul_ifindex, &short).0,
                verdict_pass(h),
                "{h:?} short"
            );
            // No backend left: dropped, counted (no hanging on ARP).
            lb.set_service(VNI, VIP, &[], 251).unwrap();
            let f = from_client(env, 40005 + i as u16, 8080);
            assert_eq!(run(env, h, true, env.ul_ifindex, &f).0, verdict_drop(h));
            let after = env.maps.counters();
            for r in [DropReason::MeshFragment, DropReason::NoBackend] {
                assert_eq!(after.drop_count(r), before.drop_count(r) + 1, "{h:?} {r:?}");
            }
            assert_eq!(after.stat(Stat::MeshEntry), before.stat(Stat::MeshEntry));
        }
    });
}

/// A flood of new connections (more than the mesh's conntrack holds) fills
/// the LRU maps without harming an established flow that keeps talking:
/// its entry and its way back stay, the flood's oldest entries go, and
/// nothing is dropped for a full table (LRU evicts instead of refusing).
#[test]
fn a_connection_flood_fills_the_lru_but_established_flows_keep_working() {
    with_env(|env| {
        let (_lb, mesh) = setup(env, &[EP_B]);
        let established = |env: &mut Env| {
            let f = from_client(env, 45000, 8080);
            let (rc, out) = run(env, Hook::Xdp, true, env.ul_ifindex, &f);
            assert_eq!(
                (rc, addrs(&out)),
                (verdict_redirect(Hook::Xdp), (CLIENT, EP_B))
            );
            let mut r = eth(env.epa_host_mac, MAC_B, 0x0800);
            r.extend(ipv4(EP_B, CLIENT, 6, 0, &[], &tcp(EP_B, CLIENT, 80, 45000)));
            let (rc, out) = run(env, Hook::Tc, false, env.epb_ifindex, &r);
            assert_eq!(rc, TC_ACT_REDIRECT, "the reply still finds its way");
            assert_eq!(addrs(&out), (LOCAL_VTEP, CLIENT));
            assert_eq!(ports(&out, 14), (8080, 45000));
        };
        established(env);
        let before = env.maps.counters();
        let flood = 300_000u32; // SHOAL_MESH_CT_MAX is 262,144
        let t0 = std::time::Instant::now();
        for i in 0..flood {
            let src = Ipv4Addr::from(0x6440_0000 + (i >> 14)); // 100.64.x.y
            let sport = 1024 + (i & 0x3fff) as u16;
            let mut f = eth(env.ul_mac, CLIENT_MAC, 0x0800);
            f.extend(ipv4(
                src,
                LOCAL_VTEP,
                6,
                0,
                &[],
                &tcp(src, LOCAL_VTEP, sport, 8080),
            ));
            let (rc, _) = run(env, Hook::Xdp, true, env.ul_ifindex, &f);
            assert_eq!(rc, verdict_redirect(Hook::Xdp));
            if i % 4096 == 0 {
                established(env);
            }
        }
        eprintln!(
            "{flood} new connections through the entry in {:?}",
            t0.elapsed()
        );
        established(env);
        let after = env.maps.counters();
        assert_eq!(
            after.drop_count(DropReason::MeshCt),
            before.drop_count(DropReason::MeshCt),
            "a full LRU evicts, it does not drop"
        );
        assert!(after.stat(Stat::MeshEntry) >= before.stat(Stat::MeshEntry) + flood as u64);
        let flows = mesh.flows();
        assert!(
            flows.len() <= 262_144 && flows.len() > 200_000,
            "{}",
            flows.len()
        );
        assert!(flows
            .iter()
            .any(|f| (f.client, f.client_port, f.backend) == (CLIENT, 45000, EP_B)));
        assert!(
            !flows
                .iter()
                .any(|f| f.client == Ipv4Addr::new(100, 64, 0, 0) && f.client_port == 1024),
            "the flood's oldest entry was evicted"
        );
    });
}

/// A client's packet too big for the underlay once encapsulated (the mesh
/// carries 1,450 bytes here: MTU 1500 less VXLAN) with DF set is answered
/// with ICMP "fragmentation needed", MTU 1450, from the published address,
/// quoting the client's header, so the client's path MTU shrinks instead of
/// its packets vanishing. XDP hands it to tc, which answers; without DF it
/// is dropped and counted; one that fits goes through on both hooks.
#[test]
fn a_packet_too_big_to_encapsulate_is_answered_with_fragmentation_needed() {
    with_env(|env| {
        let (_lb, _mesh) = setup(env, &[EP_R]);
        let datagram = |env: &Env, payload: usize, frag: u16| {
            let mut f = eth(env.ul_mac, CLIENT_MAC, 0x0800);
            let u = udp(40000, 5353, &vec![7u8; payload]);
            f.extend(ipv4(CLIENT, LOCAL_VTEP, 17, frag, &[], &u));
            f
        };
        const DF: u16 = 0x4000;
        let fits = datagram(env, 1450 - 28, DF);
        for h in HOOKS {
            let (rc, out) = run(env, h, true, env.ul_ifindex, &fits);
            assert_eq!(
                (rc, out.len()),
                (verdict_redirect(h), fits.len() + 50),
                "{h:?}"
            );
        }
        let big = datagram(env, 1450 - 27, DF);
        let (rc, _) = run(env, Hook::Xdp, true, env.ul_ifindex, &big);
        assert_eq!(rc, XDP_PASS, "XDP leaves it to tc");
        let before = drops(env, DropReason::FragNeeded);
        let (rc, out) = run(env, Hook::Tc, true, env.ul_ifindex, &big);
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(out.len(), 14 + 20 + 8 + 28, "{out:02x?}");
        let ip = &out[14..34];
        assert_eq!((ip[0], ip[9]), (0x45, 1), "IPv4, ICMP");
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 56);
        assert_eq!(csum(ip), 0, "IPv4 checksum");
        assert_eq!(
            addrs(&out),
            (LOCAL_VTEP, CLIENT),
            "from the published address"
        );
        let icmp = &out[34..];
        assert_eq!((icmp[0], icmp[1]), (3, 4), "fragmentation needed");
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1450, "next-hop MTU");
        assert_eq!(csum(icmp), 0, "ICMP checksum");
        assert_eq!(&icmp[8..], &big[14..42], "the client's header and 8 bytes");
        assert_eq!(drops(env, DropReason::FragNeeded), before + 1, "counted");
        // Without DF a router would fragment; the mesh drops it, counted.
        let (rc, _) = run(env, Hook::Tc, true, env.ul_ifindex, &datagram(env, 1472, 0));
        assert_eq!(rc, TC_ACT_SHOT);
        assert_eq!(drops(env, DropReason::FragNeeded), before + 2);
    });
}

/// The ICMP "port unreachable" a task sends about the datagram in `got`
/// (its IPv4 header onward, as the task received it).
fn port_unreachable(from: Ipv4Addr, got: &[u8]) -> Vec<u8> {
    let mut i = vec![3, 3, 0, 0, 0, 0, 0, 0];
    i.extend_from_slice(&got[..28]);
    let c = csum(&i);
    i[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = eth([0xee; 6], MAC_A, 0x0800);
    f.extend(ipv4(from, CLIENT, 1, 0, &[], &i));
    f
}

/// An ICMP error as the client must get it: from the published address,
/// about the datagram it sent there, every checksum right.
fn assert_icmp_from_published(out: &[u8], sport: u16) {
    assert_eq!(addrs(out), (LOCAL_VTEP, CLIENT), "{out:02x?}");
    assert_eq!(csum(&out[14..34]), 0, "IPv4 checksum");
    assert_eq!(csum(&out[34..]), 0, "ICMP checksum");
    let quoted = &out[42..];
    assert_eq!(addrs(&out[28..]), (CLIENT, LOCAL_VTEP), "quoted addresses");
    assert_eq!(csum(&quoted[..20]), 0, "quoted IPv4 checksum");
    assert_eq!(ports(quoted, 0), (sport, 5353), "quoted ports");
}

/// An ICMP error a task sends about a mesh flow (port unreachable for a
/// datagram) reaches the client as from the published address, as a NAT
/// translates related ICMP: restored on the backend's node when the flow
/// entered there, and otherwise sent back to the entry node, which
/// restores it.
#[test]
fn a_tasks_icmp_error_about_a_mesh_flow_comes_from_the_published_address() {
    with_env(|env| {
        let (mut lb, _mesh) = setup(env, &[EP_B]);
        let datagram = |env: &Env, sport: u16| {
            let mut u = eth(env.ul_mac, CLIENT_MAC, 0x0800);
            let d = udp_ok(CLIENT, LOCAL_VTEP, sport, 5353);
            u.extend(ipv4(CLIENT, LOCAL_VTEP, 17, 0, &[], &d));
            u
        };
        // Entered here, local backend: answered from here.
        let (rc, got) = run(env, Hook::Tc, true, env.ul_ifindex, &datagram(env, 40100));
        assert_eq!((rc, addrs(&got)), (TC_ACT_REDIRECT, (CLIENT, EP_B)));
        let err = port_unreachable(EP_B, &got[14..]);
        let (rc, out) = run(env, Hook::Tc, false, env.epb_ifindex, &err);
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_icmp_from_published(&out, 40100);

        // Entered here, remote backend: the error comes back encapsulated
        // from the backend's node and is restored here.
        lb.set_service(VNI, VIP, &[EP_R], 251).unwrap();
        let (rc, out) = run(env, Hook::Tc, true, env.ul_ifindex, &datagram(env, 40101));
        assert_eq!(rc, TC_ACT_REDIRECT);
        let got = out[50..].to_vec();
        assert_eq!(addrs(&got), (CLIENT, EP_R));
        let err = port_unreachable(EP_R, &got[14..]);
        let vx = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &err);
        let (rc, out) = run(env, Hook::Tc, true, env.ul_ifindex, &vx);
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(out.len(), err.len(), "decapsulated");
        assert_icmp_from_published(&out, 40101);

        // Entered elsewhere, backend here: sent back to the entry node,
        // untouched inside.
        let mut inner = eth(MAC_A, [0xee; 6], 0x0800);
        let d = udp_ok(CLIENT, EP_A, 40102, 53);
        inner.extend(ipv4(CLIENT, EP_A, 17, 0, &[], &d));
        let vx = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &inner);
        let (rc, got) = run(env, Hook::Tc, true, env.ul_ifindex, &vx);
        assert_eq!((rc, addrs(&got)), (TC_ACT_REDIRECT, (CLIENT, EP_A)));
        let mut err = port_unreachable(EP_A, &got[14..]);
        err[0..6].copy_from_slice(&env.epa_host_mac);
        let (rc, out) = run(env, Hook::Tc, false, env.epa_ifindex, &err);
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(out.len(), err.len() + 50, "encapsulated");
        assert_eq!(addrs(&out).1, REMOTE_VTEP);
        assert_eq!(&out[64..], &err[14..], "untouched inside");

        // An ICMP error about no mesh flow is the kernel's.
        let mut stray = got[14..].to_vec();
        stray[22..24].copy_from_slice(&999u16.to_be_bytes());
        let mut err = port_unreachable(EP_A, &stray);
        err[0..6].copy_from_slice(&env.epa_host_mac);
        let (rc, _) = run(env, Hook::Tc, false, env.epa_ifindex, &err);
        assert_eq!(rc, TC_ACT_OK);
    });
}
