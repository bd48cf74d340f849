//! BPF_PROG_TEST_RUN tests of the encapsulation side (an endpoint's frame
//! in, VXLAN out), both hooks; the harness is in `tests.rs`.

use std::net::Ipv4Addr;

use shoal_ebpf::DropReason;

use super::tests::*;
use super::Hook;

#[test]
pub(super) fn encap_produces_exact_rfc7348_frame() {
    with_env(|env| {
        for h in HOOKS {
            let inner = ep_frame(EP_A, MAC_A, EP_R, MAC_R, 100);
            let (rc, out) = run(env, h, false, env.epa_ifindex, &inner);
            assert_eq!(rc, verdict_redirect(h), "{h:?}");
            assert_eq!(out.len(), inner.len() + 50, "{h:?}");
            // Outer Ethernet from the FIB/neighbour table.
            assert_eq!(&out[0..6], &REMOTE_VTEP_MAC, "{h:?} outer dst MAC");
            assert_eq!(&out[6..12], &env.ul_mac, "{h:?} outer src MAC");
            assert_eq!(&out[12..14], &[0x08, 0x00]);
            // Outer IPv4.
            let ip = &out[14..34];
            assert_eq!(ip[0], 0x45);
            assert_eq!(
                u16::from_be_bytes([ip[2], ip[3]]) as usize,
                inner.len() + 36
            );
            assert_eq!(&ip[4..8], &[0, 0, 0x40, 0], "id 0, DF");
            assert_eq!(ip[8], 64);
            assert_eq!(ip[9], 17);
            assert_eq!(csum(ip), 0, "{h:?} outer IPv4 checksum");
            assert_eq!(&ip[12..16], &LOCAL_VTEP.octets());
            assert_eq!(&ip[16..20], &REMOTE_VTEP.octets());
            // UDP: ephemeral source port, 4789, length, checksum 0.
            let u = &out[34..42];
            let sport = u16::from_be_bytes([u[0], u[1]]);
            assert!(sport >= 49152, "{h:?} sport {sport}");
            assert_eq!(u16::from_be_bytes([u[2], u[3]]), 4789);
            assert_eq!(u16::from_be_bytes([u[4], u[5]]) as usize, inner.len() + 16);
            assert_eq!(&u[6..8], &[0, 0]);
            // VXLAN: I flag, reserved zero, VNI.
            assert_eq!(&out[42..50], &[0x08, 0, 0, 0, 0x00, 0x10, 0x01, 0x00]);
            // The inner frame, untouched.
            assert_eq!(&out[50..], &inner[..], "{h:?} inner frame");

            // Same flow, same source port; another flow may differ but
            // stays in range.
            let (_, again) = run(env, h, false, env.epa_ifindex, &inner);
            assert_eq!(&again[34..36], &out[34..36], "{h:?} sport stable per flow");
        }
    });
}

/// The tc hook keeps the FIB's answer per VTEP for a second (as vxlan's
/// dst_cache keeps a route): a neighbour whose MAC changes is followed
/// within that second, on both hooks.
#[test]
pub(super) fn a_changed_underlay_neighbour_is_followed_within_a_second() {
    with_env(|env| {
        let inner = ep_frame(EP_A, MAC_A, EP_R, MAC_R, 100);
        for h in HOOKS {
            let (_, out) = run(env, h, false, env.epa_ifindex, &inner);
            assert_eq!(&out[0..6], &REMOTE_VTEP_MAC, "{h:?} before");
        }
        let status = std::process::Command::new("ip")
            .args(["neigh", "replace", &REMOTE_VTEP.to_string()])
            .args([
                "lladdr",
                "02:00:00:00:00:22",
                "dev",
                "ul0",
                "nud",
                "permanent",
            ])
            .status()
            .unwrap();
        assert!(status.success());
        std::thread::sleep(std::time::Duration::from_millis(1100));
        for h in HOOKS {
            let (rc, out) = run(env, h, false, env.epa_ifindex, &inner);
            assert_eq!(rc, verdict_redirect(h), "{h:?}");
            assert_eq!(&out[0..6], &[2, 0, 0, 0, 0, 0x22], "{h:?} after");
            assert_eq!(&out[6..12], &env.ul_mac, "{h:?} source MAC");
        }
    });
}

#[test]
pub(super) fn encap_handles_tiny_max_options_and_fragments() {
    with_env(|env| {
        for h in HOOKS {
            // Smallest: Ethernet + bare IPv4 header.
            let mut tiny = eth(MAC_R, MAC_A, 0x0800);
            tiny.extend(ipv4(EP_A, EP_R, 253, 0, &[], &[]));
            let (rc, out) = run(env, h, false, env.epa_ifindex, &tiny);
            assert_eq!(
                (rc, out.len()),
                (verdict_redirect(h), tiny.len() + 50),
                "{h:?} tiny {:?}",
                env.maps.counters()
            );
            // Largest at the endpoint MTU (1500 - 50): 1450-byte IP packet.
            let max = ep_frame(EP_A, MAC_A, EP_R, MAC_R, 1450 - 28);
            assert_eq!(max.len(), 1464);
            let (rc, out) = run(env, h, false, env.epa_ifindex, &max);
            assert_eq!((rc, out.len()), (verdict_redirect(h), 1514), "{h:?} max");
            assert_eq!(&out[50..], &max[..]);
            // Inner IP options and inner fragments travel opaquely.
            let mut opt = eth(MAC_R, MAC_A, 0x0800);
            opt.extend(ipv4(
                EP_A,
                EP_R,
                17,
                0x2000,
                &[1, 1, 1, 0],
                &udp(1, 2, b"frag"),
            ));
            let (rc, out) = run(env, h, false, env.epa_ifindex, &opt);
            assert_eq!(rc, verdict_redirect(h), "{h:?} options+MF");
            assert_eq!(&out[50..], &opt[..]);
            // An ARP reply to a remote peer's request is encapsulated too
            // (tc cannot use adjust_room for non-IP frames).
            let mut rep = eth(MAC_R, MAC_A, 0x0806);
            rep.extend(arp(2, MAC_A, EP_A, MAC_R, EP_R));
            let (rc, out) = run(env, h, false, env.epa_ifindex, &rep);
            assert_eq!(rc, verdict_redirect(h), "{h:?} ARP reply");
            assert_eq!(&out[0..6], &REMOTE_VTEP_MAC);
            assert_eq!(&out[12..14], &[0x08, 0x00]);
            assert_eq!(csum(&out[14..34]), 0);
            assert_eq!(&out[42..50], &[0x08, 0, 0, 0, 0x00, 0x10, 0x01, 0x00]);
            assert_eq!(&out[50..], &rep[..], "{h:?} ARP reply is the inner frame");
        }
    });
}

#[test]
pub(super) fn same_node_traffic_goes_endpoint_to_endpoint() {
    with_env(|env| {
        for h in HOOKS {
            let f = ep_frame(EP_A, MAC_A, EP_B, [0xee; 6], 64);
            let (rc, out) = run(env, h, false, env.epa_ifindex, &f);
            assert_eq!(rc, verdict_redirect(h), "{h:?}");
            assert_eq!(out.len(), f.len(), "{h:?}: not encapsulated");
            assert_eq!(&out[0..6], &MAC_B, "{h:?}: dst MAC is the endpoint's");
            assert_eq!(&out[6..], &f[6..]);
        }
    });
}

/// Each local endpoint's packets and bytes land in its own slot: what it
/// sent, what was delivered to it; a slot taken over or freed and handed
/// out again comes back zeroed.
#[test]
pub(super) fn each_endpoint_s_traffic_is_counted_in_its_slot() {
    with_env(|env| {
        let (a, b) = (env.epa_ifindex, env.epb_ifindex);
        let local = ep_frame(EP_A, MAC_A, EP_B, [0xee; 6], 64);
        let remote = ep_frame(EP_A, MAC_A, EP_R, [0xee; 6], 100);
        for h in HOOKS {
            assert_eq!(run(env, h, false, a, &local).0, verdict_redirect(h));
            assert_eq!(run(env, h, false, a, &remote).0, verdict_redirect(h));
        }
        let t = env.maps.endpoint_traffic();
        let n = HOOKS.len() as u64;
        let (ta, tb) = (t[&a], t[&b]);
        assert_eq!((ta.tx_packets, ta.rx_packets), (2 * n, 0), "{ta:?}");
        assert_eq!(ta.tx_bytes, n * (local.len() + remote.len()) as u64);
        assert_eq!((tb.tx_packets, tb.rx_packets), (0, n), "{tb:?}");
        assert_eq!(tb.rx_bytes, n * local.len() as u64);

        // An endpoint that holds a slot keeps it, counts and all (a
        // restarted agent); a new endpoint on a gone one's ifindex takes
        // its slot, zeroed.
        let (slot_a, slot_b) = (
            env.maps.iface(a).unwrap().slot,
            env.maps.iface(b).unwrap().slot,
        );
        assert_ne!(slot_a, slot_b);
        assert_eq!(env.maps.traffic_slot(b, false).unwrap(), slot_b);
        assert_eq!(env.maps.endpoint_traffic()[&b], tb);
        assert_eq!(env.maps.traffic_slot(a, true).unwrap(), slot_a);
        assert_eq!(
            env.maps.endpoint_traffic()[&a],
            shoal_ebpf::EpTraffic::default()
        );
        // B's slot, once B is gone, goes to the next endpoint with nothing
        // counted in it.
        env.maps.remove_iface(b).unwrap();
        let next = env.maps.traffic_slot(4242, true).unwrap();
        assert_eq!(next, slot_b, "the lowest free slot");
        let v = shoal_ebpf::IfaceValue {
            slot: next,
            ..Default::default()
        };
        env.maps.set_iface(4242, v).unwrap();
        let t = env.maps.endpoint_traffic();
        assert_eq!(t[&4242], shoal_ebpf::EpTraffic::default());
        assert_ne!(env.maps.traffic_slot(4243, true).unwrap(), next);
    });
}

#[test]
pub(super) fn arp_is_answered_without_a_bridge() {
    with_env(|env| {
        for h in HOOKS {
            let tx = verdict_redirect(h);
            for (target, mac) in [(EP_R, MAC_R), (EP_B, MAC_B), (GW, env.epa_host_mac)] {
                let mut req = eth([0xff; 6], MAC_A, 0x0806);
                req.extend(arp(1, MAC_A, EP_A, [0; 6], target));
                let (rc, out) = run(env, h, false, env.epa_ifindex, &req);
                assert_eq!(rc, tx, "{h:?} ARP {target}");
                let mut want = eth(MAC_A, mac, 0x0806);
                want.extend(arp(2, mac, target, MAC_A, EP_A));
                assert_eq!(out, want, "{h:?} ARP reply for {target}");
            }
            let mut req = eth([0xff; 6], MAC_A, 0x0806);
            req.extend(arp(1, MAC_A, EP_A, [0; 6], Ipv4Addr::new(10, 0, 1, 200)));
            expect_drop(env, h, false, env.epa_ifindex, &req, DropReason::ArpUnknown);
        }
    });
}

#[test]
pub(super) fn endpoint_side_refuses_what_it_cannot_place() {
    with_env(|env| {
        for h in HOOKS {
            let ifx = env.epa_ifindex;
            // Unknown address inside the subnet.
            let f = ep_frame(EP_A, MAC_A, Ipv4Addr::new(10, 0, 1, 77), MAC_R, 10);
            expect_drop(env, h, false, ifx, &f, DropReason::UnknownEndpoint);
            // Off-subnet goes to the kernel.
            let f = ep_frame(EP_A, MAC_A, Ipv4Addr::new(198, 19, 9, 9), MAC_R, 10);
            assert_eq!(
                run(env, h, false, ifx, &f).0,
                verdict_pass(h),
                "{h:?} off-subnet"
            );
            // IPv6 and VLAN-tagged frames are not carried.
            let mut v6 = eth(MAC_R, MAC_A, 0x86dd);
            v6.extend_from_slice(&[0x60; 40]);
            expect_drop(env, h, false, ifx, &v6, DropReason::Unsupported);
            let mut vlan = eth(MAC_R, MAC_A, 0x8100);
            vlan.extend_from_slice(&[0, 5, 0x08, 0x00]);
            vlan.extend(ipv4(EP_A, EP_R, 17, 0, &[], &[0; 8]));
            expect_drop(env, h, false, ifx, &vlan, DropReason::Unsupported);
            // Truncated ARP and IPv4 headers (the kernel's tc test_run
            // refuses an IPv4 frame shorter than its header by itself).
            let mut short = eth([0xff; 6], MAC_A, 0x0806);
            short.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
            expect_drop(env, h, false, ifx, &short, DropReason::Truncated);
            if h == Hook::Xdp {
                let mut short = eth(MAC_R, MAC_A, 0x0800);
                short.extend_from_slice(&[0x45, 0, 0, 20]);
                expect_drop(env, h, false, ifx, &short, DropReason::Truncated);
            }
            let mut bad = ep_frame(EP_A, MAC_A, EP_R, MAC_R, 10);
            bad[14] = 0x43; // ihl 3
            expect_drop(env, h, false, ifx, &bad, DropReason::InnerMalformed);
            // An interface the agent never configured.
            let f = ep_frame(EP_A, MAC_A, EP_R, MAC_R, 10);
            expect_drop(env, h, false, env.ul_ifindex, &f, DropReason::NotConfigured);
        }
    });
}
