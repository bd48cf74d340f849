//! BPF_PROG_TEST_RUN tests of the datapath's events (`events.h`): nothing
//! is reported while no monitor listens; a listening monitor gets each drop
//! with its reason and the inner flow of a VXLAN packet, on both hooks, and
//! traces when it asks for them.

use std::net::Ipv4Addr;

use shoal_ebpf::{DropReason, MON_DROPS, MON_TRACES};

use super::tests::*;
use crate::monitor::Monitor;

fn ip(k: u32) -> Ipv4Addr {
    Ipv4Addr::from(k.to_ne_bytes())
}

#[test]
fn drops_and_traces_reach_a_listening_monitor_only() {
    with_env(|env| {
        let mut mon = Monitor::open(&env.pins).unwrap();
        let mut ring = mon.take_ring().unwrap();
        Monitor::drain(&mut ring);
        let inner = ep_frame(EP_R, MAC_R, EP_A, MAC_A, 10);
        let unknown = vxlan_frame(0x08, 999, LOCAL_VTEP, 4789, 0, &inner);
        // Nobody listens: counted, not reported.
        for h in HOOKS {
            assert_eq!(
                run(env, h, true, env.ul_ifindex, &unknown).0,
                verdict_drop(h)
            );
        }
        assert!(Monitor::drain(&mut ring).is_empty());

        mon.start(MON_DROPS, 1).unwrap();
        for h in HOOKS {
            run(env, h, true, env.ul_ifindex, &unknown);
        }
        let ev = Monitor::drain(&mut ring);
        assert_eq!(ev.len(), 2, "{ev:?}");
        for (e, hook) in ev.iter().zip([0u8, 1]) {
            assert_eq!(e.kind, shoal_ebpf::EV_DROP);
            assert_eq!(e.code, DropReason::UnknownVni as u16);
            assert_eq!(e.hook, hook);
            assert_eq!(e.ifindex, env.ul_ifindex);
            assert_eq!(e.vni, 999);
            assert_eq!(ip(e.vtep), REMOTE_VTEP);
            assert_eq!((ip(e.saddr), ip(e.daddr)), (EP_R, EP_A), "the inner flow");
            assert_eq!(
                (u16::from_be(e.sport), u16::from_be(e.dport)),
                (40000, 5201)
            );
            assert_eq!(e.proto, 17);
        }
        // Drops only: a delivered packet is no event.
        let good = vxlan_frame(
            0x08,
            VNI,
            LOCAL_VTEP,
            4789,
            0,
            &ep_frame(EP_R, MAC_R, EP_A, MAC_A, 10),
        );
        run(env, super::Hook::Tc, true, env.ul_ifindex, &good);
        assert!(Monitor::drain(&mut ring).is_empty());
        // Traces too: the decap is reported.
        mon.start(MON_DROPS | MON_TRACES, 1).unwrap();
        run(env, super::Hook::Tc, true, env.ul_ifindex, &good);
        let ev = Monitor::drain(&mut ring);
        assert!(
            ev.iter()
                .any(|e| e.kind == shoal_ebpf::EV_TRACE && e.code == 2 && e.vni == VNI),
            "{ev:?}"
        );
        // The monitor gone, reporting stops.
        drop(mon);
        run(env, super::Hook::Tc, true, env.ul_ifindex, &unknown);
        assert!(Monitor::drain(&mut ring).is_empty());
    });
}
