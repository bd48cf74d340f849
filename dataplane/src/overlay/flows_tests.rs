//! BPF_PROG_TEST_RUN tests of the flow log (`ebpf/c/include/flows.h`):
//! nothing while the agent's switch is off; once on, one record per new VIP
//! flow and per new mesh flow (both hooks), none for a flow's later packets,
//! and drops with their reason.

use std::net::Ipv4Addr;

use shoal_ebpf::{DropReason, Flow, FL_DROP, FL_MESH, FL_VIP};

use super::lb_tests::{frame, tcp};
use super::mesh_tests::{from_client, setup, CLIENT, VIP};
use super::tests::*;
use super::Hook;
use crate::flows::FlowRing;

fn ip(k: u32) -> Ipv4Addr {
    Ipv4Addr::from(k.to_ne_bytes())
}

fn ports(f: &Flow) -> (u16, u16, u16) {
    (
        u16::from_be(f.sport),
        u16::from_be(f.dport),
        u16::from_be(f.bport),
    )
}

#[test]
fn new_flows_and_drops_reach_the_flow_log_once_each() {
    with_env(|env| {
        let (_lb, _mesh) = setup(env, &[EP_B]);
        let mut ring = FlowRing::open(&env.pins).unwrap();
        let host = env.epa_host_mac;
        let to_vip = |sport| frame(EP_A, VIP, 6, &tcp(EP_A, VIP, sport, 80), host);

        // Off: balanced, not logged.
        run(env, Hook::Tc, false, env.epa_ifindex, &to_vip(41000));
        assert!(ring.drain().is_empty());

        ring.switch(true).unwrap();
        // A new VIP flow: one record; its next packet: none.
        for _ in 0..2 {
            run(env, Hook::Tc, false, env.epa_ifindex, &to_vip(41001));
        }
        let got = ring.drain();
        assert_eq!(got.len(), 1, "{got:?}");
        let f = got[0];
        assert_eq!(f.kind, FL_VIP);
        assert_eq!(f.vni, VNI);
        assert_eq!(f.ifindex, env.epa_ifindex);
        assert_eq!((ip(f.saddr), ip(f.daddr), ip(f.backend)), (EP_A, VIP, EP_B));
        assert_eq!(ports(&f), (41001, 80, 80));
        assert_eq!(f.proto, 6);
        assert_ne!(f.ts_ns, 0);

        // New mesh flows on both hooks: the client, the published port and
        // the task's port.
        for (i, h) in HOOKS.into_iter().enumerate() {
            let sport = 42000 + i as u16;
            for _ in 0..2 {
                run(env, h, true, env.ul_ifindex, &from_client(env, sport, 8080));
            }
            let got = ring.drain();
            assert_eq!(got.len(), 1, "{h:?} {got:?}");
            let f = got[0];
            assert_eq!(f.kind, FL_MESH, "{h:?}");
            assert_eq!((ip(f.saddr), ip(f.daddr)), (CLIENT, LOCAL_VTEP));
            assert_eq!(ip(f.backend), EP_B);
            assert_eq!(ports(&f), (sport, 8080, 80));
        }

        // A drop: a fragment to the VIP, with its reason.
        let mut frag = to_vip(41002);
        frag[14 + 6] = 0x20; // MF
        run(env, Hook::Tc, false, env.epa_ifindex, &frag);
        let got = ring.drain();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].kind, FL_DROP);
        assert_eq!(got[0].reason, DropReason::VipFragment as u16);
        assert_eq!((ip(got[0].saddr), ip(got[0].daddr)), (EP_A, VIP));

        // Off again: nothing.
        ring.switch(false).unwrap();
        run(env, Hook::Tc, false, env.epa_ifindex, &to_vip(41003));
        run(env, Hook::Tc, false, env.epa_ifindex, &frag);
        assert!(ring.drain().is_empty());
    });
}
