//! BPF_PROG_TEST_RUN tests of the decapsulation side (VXLAN in, the inner
//! frame to its endpoint), both hooks; the harness is in `tests.rs`.

use std::net::Ipv4Addr;

use shoal_ebpf::DropReason;

use super::tests::*;

#[test]
pub(super) fn decap_delivers_inner_frame_to_the_right_endpoint() {
    with_env(|env| {
        for h in HOOKS {
            let inner = ep_frame(EP_R, MAC_R, EP_A, [0x11; 6], 200);
            let f = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &inner);
            let (rc, out) = run(env, h, true, env.ul_ifindex, &f);
            assert_eq!(rc, verdict_redirect(h), "{h:?}");
            let mut want = inner.clone();
            want[0..6].copy_from_slice(&MAC_A);
            assert_eq!(out, want, "{h:?}: inner frame with the endpoint's MAC");

            // Reserved VXLAN bits are ignored on receipt (RFC 7348).
            let f = vxlan_frame(0x0c, VNI, LOCAL_VTEP, 4789, 0, &inner);
            assert_eq!(run(env, h, true, env.ul_ifindex, &f).0, verdict_redirect(h));

            // Largest frame: inner at the endpoint MTU.
            let big = ep_frame(EP_R, MAC_R, EP_A, MAC_A, 1450 - 28);
            let f = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &big);
            assert_eq!(f.len(), 1514);
            let (rc, out) = run(env, h, true, env.ul_ifindex, &f);
            assert_eq!(
                (rc, out.len()),
                (verdict_redirect(h), big.len()),
                "{h:?} max"
            );

            // Inner ARP request for a local endpoint reaches it.
            let mut a = eth([0xff; 6], MAC_R, 0x0806);
            a.extend(arp(1, MAC_R, EP_R, [0; 6], EP_A));
            let f = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &a);
            let (rc, out) = run(env, h, true, env.ul_ifindex, &f);
            assert_eq!(rc, verdict_redirect(h), "{h:?} ARP");
            assert_eq!(&out[14..], &a[14..]);
        }
    });
}

#[test]
pub(super) fn decap_handles_outer_ip_options() {
    with_env(|env| {
        for h in HOOKS {
            let inner = ep_frame(EP_R, MAC_R, EP_A, MAC_A, 50);
            let mut vx = vec![0x08, 0, 0, 0];
            vx.extend_from_slice(&(VNI << 8).to_be_bytes());
            vx.extend_from_slice(&inner);
            let mut f = eth([0xaa; 6], REMOTE_VTEP_MAC, 0x0800);
            f.extend(ipv4(
                REMOTE_VTEP,
                LOCAL_VTEP,
                17,
                0,
                &[1, 1, 1, 0],
                &udp(51000, 4789, &vx),
            ));
            let (rc, out) = run(env, h, true, env.ul_ifindex, &f);
            assert_eq!(rc, verdict_redirect(h), "{h:?}");
            assert_eq!(out, inner, "{h:?}");
        }
    });
}

#[test]
pub(super) fn underlay_passes_what_is_not_ours() {
    with_env(|env| {
        for h in HOOKS {
            let inner = ep_frame(EP_R, MAC_R, EP_A, MAC_A, 20);
            let ul = env.ul_ifindex;
            let cases: Vec<(&str, Vec<u8>)> = vec![
                (
                    "other VTEP",
                    vxlan_frame(0x08, VNI, Ipv4Addr::new(198, 18, 0, 7), 4789, 0, &inner),
                ),
                (
                    "other port",
                    vxlan_frame(0x08, VNI, LOCAL_VTEP, 4790, 0, &inner),
                ),
                (
                    "later fragment",
                    vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0x0010, &inner),
                ),
                ("IPv6", {
                    let mut f = eth([0xaa; 6], REMOTE_VTEP_MAC, 0x86dd);
                    f.extend_from_slice(&[0x60; 60]);
                    f
                }),
                ("VLAN", {
                    let mut f = eth([0xaa; 6], REMOTE_VTEP_MAC, 0x8100);
                    f.extend_from_slice(&[0, 5, 0x08, 0x00]);
                    f.extend_from_slice(&vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &inner)[14..]);
                    f
                }),
                ("TCP", {
                    let mut f = eth([0xaa; 6], REMOTE_VTEP_MAC, 0x0800);
                    f.extend(ipv4(REMOTE_VTEP, LOCAL_VTEP, 6, 0, &[], &[0; 20]));
                    f
                }),
                ("ARP", {
                    let mut f = eth([0xff; 6], REMOTE_VTEP_MAC, 0x0806);
                    f.extend(arp(1, REMOTE_VTEP_MAC, REMOTE_VTEP, [0; 6], LOCAL_VTEP));
                    f
                }),
            ];
            for (what, f) in cases {
                let (rc, out) = run(env, h, true, ul, &f);
                assert_eq!(rc, verdict_pass(h), "{h:?} {what}");
                assert_eq!(out, f, "{h:?} {what}: untouched");
            }
        }
    });
}

#[test]
pub(super) fn decap_drops_and_counts_malformed_vxlan() {
    with_env(|env| {
        for h in HOOKS {
            let ul = env.ul_ifindex;
            let inner = ep_frame(EP_R, MAC_R, EP_A, MAC_A, 20);
            let f = vxlan_frame(0x00, VNI, LOCAL_VTEP, 4789, 0, &inner);
            expect_drop(env, h, true, ul, &f, DropReason::BadVxlanFlags);
            let f = vxlan_frame(0x08, 999, LOCAL_VTEP, 4789, 0, &inner);
            expect_drop(env, h, true, ul, &f, DropReason::UnknownVni);
            // Inner destination unknown, or remote: never delivered.
            for dst in [Ipv4Addr::new(10, 0, 1, 50), EP_R] {
                let i = ep_frame(EP_R, MAC_R, dst, MAC_A, 20);
                let f = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &i);
                expect_drop(env, h, true, ul, &f, DropReason::UnknownInnerDst);
            }
            // First fragment of a fragmented VXLAN datagram.
            let f = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0x2000, &inner);
            expect_drop(env, h, true, ul, &f, DropReason::OuterFragment);
            // Truncated: cut inside the VXLAN header, inside the inner
            // Ethernet header, inside the inner IPv4 header.
            let full = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &inner);
            for cut in [46, 56, 70] {
                expect_drop(env, h, true, ul, &full[..cut], DropReason::Truncated);
            }
            // UDP length that cannot hold VXLAN + Ethernet.
            let mut lie = full.clone();
            lie[38..40].copy_from_slice(&12u16.to_be_bytes());
            expect_drop(env, h, true, ul, &lie, DropReason::Truncated);
            // Inner IPv6 and a bogus inner IPv4 header.
            let mut v6 = eth(MAC_A, MAC_R, 0x86dd);
            v6.extend_from_slice(&[0x60; 40]);
            let f = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &v6);
            expect_drop(env, h, true, ul, &f, DropReason::Unsupported);
            let mut bad = inner.clone();
            bad[14] = 0x65;
            let f = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &bad);
            expect_drop(env, h, true, ul, &f, DropReason::InnerMalformed);
        }
    });
}

/// A local endpoint the agent marked clear (`EP_F_CLEAR`) takes its frames
/// without a look at the network's entry; an unmarked one answers to that
/// entry, so a network this node does not know refuses them (fail closed).
#[test]
pub(super) fn decap_skips_the_network_s_entry_only_for_endpoints_marked_clear() {
    with_env(|env| {
        let inner = ep_frame(EP_R, MAC_R, EP_A, MAC_A, 64);
        let f = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &inner);
        // The network's entry gone, the marked endpoint still takes it:
        // the entry was not read.
        assert!(env.maps.remove_vni(VNI).unwrap());
        for h in HOOKS {
            assert_eq!(
                run(env, h, true, env.ul_ifindex, &f).0,
                verdict_redirect(h),
                "{h:?}"
            );
        }
        // Unmarked, the missing entry decides: an unknown network.
        let mut v = env.maps.endpoint(VNI, EP_A).unwrap();
        v.flags &= !shoal_ebpf::EP_F_CLEAR;
        env.maps.upsert_endpoint(VNI, EP_A, v).unwrap();
        for h in HOOKS {
            let before = drops(env, DropReason::UnknownVni);
            assert_eq!(
                run(env, h, true, env.ul_ifindex, &f).0,
                verdict_drop(h),
                "{h:?}"
            );
            assert_eq!(drops(env, DropReason::UnknownVni), before + 1, "{h:?}");
        }
        // With the entry back (a plain network), unmarked is delivered too.
        env.maps.add_vni(VNI, 0).unwrap();
        for h in HOOKS {
            assert_eq!(
                run(env, h, true, env.ul_ifindex, &f).0,
                verdict_redirect(h),
                "{h:?}"
            );
        }
    });
}
