//! The underlay's filter on kernels without TCX (`filter::attach_alone`),
//! on a veth of a test namespace: an earlier version's filter at the
//! default priority is replaced by one in Shoal's slot, and a restarted
//! daemon's program is swapped into that slot, never a second filter.

use aya::programs::tc::{NlOptions, TcAttachOptions};
use aya::programs::{SchedClassifier, TcAttachType};
use shoal_ebpf::prog;

use super::tests::with_env;
use super::{filter, prog_mut, Accel, Overlay};
use crate::netlink::Netlink;

/// `tc filter show dev ul0 ingress`: the priorities of its filters.
fn prios() -> Vec<u16> {
    let out = std::process::Command::new("tc")
        .args(["filter", "show", "dev", "ul0", "ingress"])
        .output()
        .expect("tc");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut p: Vec<u16> = text
        .lines()
        .filter(|l| l.contains(" bpf ") && l.contains(" handle "))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let i = w.iter().position(|x| *x == "pref")?;
            w.get(i + 1)?.parse().ok()
        })
        .collect();
    p.sort();
    p
}

fn slot_prog(ifindex: u32) -> Option<u32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        Netlink::connect()
            .unwrap()
            .ingress_bpf_prog(ifindex, filter::PRIO)
            .await
            .unwrap()
    })
}

#[test]
fn the_underlay_filter_takes_the_slot_and_a_restart_swaps_it_in_place() {
    with_env(|env| {
        // An earlier version's filter: the kernel's default priority.
        let _ = aya::programs::tc::qdisc_add_clsact("ul0");
        let p: &mut SchedClassifier = prog_mut(env.overlay.ebpf_mut(), prog::UL_TC).unwrap();
        let id = p
            .attach_with_options(
                "ul0",
                TcAttachType::Ingress,
                TcAttachOptions::Netlink(NlOptions::default()),
            )
            .unwrap();
        std::mem::forget(p.take_link(id).unwrap());
        assert_eq!(prios(), vec![49152]);

        let id = filter::attach_alone(p, prog::UL_TC, "ul0", TcAttachType::Ingress).unwrap();
        std::mem::forget(p.take_link(id).unwrap());
        assert_eq!(prios(), vec![filter::PRIO], "only Shoal's slot");
        let first = slot_prog(env.ul_ifindex).expect("a program in the slot");

        // A restarted daemon: its own load of the programs.
        let pins = env.pins.join("restarted");
        let mut again = Overlay::load(&pins, Accel::Tc.hooks(true)).unwrap();
        let p: &mut SchedClassifier = prog_mut(again.ebpf_mut(), prog::UL_TC).unwrap();
        let id = filter::attach_alone(p, prog::UL_TC, "ul0", TcAttachType::Ingress).unwrap();
        std::mem::forget(p.take_link(id).unwrap());
        assert_eq!(prios(), vec![filter::PRIO], "still one filter");
        let second = slot_prog(env.ul_ifindex).expect("a program in the slot");
        assert_ne!(first, second, "the new program swapped in");
    });
}
