//! A daemon back in gossip after a restart slower than the failure
//! detector, on a lab whose daemons run with no `--join` seed (as a .deb
//! install runs them). Its peers convicted the old process, and SWIM
//! addresses a member by process, so none of them asks the new one in;
//! the swarm's only manager has only itself to ask. CI saw a VM's manager
//! cut off from gossip for good this way. The new process asks the
//! members it remembers (`gossip-peers.json`), and, remembering none, the
//! nodes its session names (`raft/gossip_hint.rs`).

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_tests::Lab;

/// Each node's endpoint is in every other node's dataplane.
fn meshed(lab: &Lab, nodes: &[&str], ips: &[(String, String)]) -> bool {
    nodes.iter().all(|n| {
        let have: BTreeSet<String> = lab.remote_ips(n).into_iter().collect();
        ips.iter()
            .filter(|(on, _)| on != n)
            .all(|(_, ip)| have.contains(ip))
    })
}

#[test]
fn the_only_manager_restarted_late_and_without_seeds_is_back_in_gossip() {
    let lab = Lab::up_with(3, 1, "tc", &["--no-join"]);
    let info = lab.info();
    let ips: Vec<(String, String)> = info
        .endpoints
        .iter()
        .map(|e| (e.node.clone(), e.ip.clone()))
        .collect();
    let n1_ip = ips.iter().find(|(n, _)| n == "n1").unwrap().1.clone();
    let nodes = ["n1", "n2", "n3"];
    assert!(
        lab.wait_for(Duration::from_secs(10), || meshed(&lab, &nodes, &ips))
            .is_some(),
        "a lab without seeds never meshed"
    );
    let data_dir = &info.nodes.iter().find(|n| n.name == "n1").unwrap().data_dir;
    let remembered = data_dir.join("gossip-peers.json");
    let peers = |path: &std::path::Path| -> BTreeSet<String> {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_default())
                .unwrap_or_default();
        v["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect()
    };
    let others: BTreeSet<String> = info
        .nodes
        .iter()
        .filter(|n| n.name != "n1")
        .map(|n| n.underlay_ip.clone())
        .collect();
    assert!(
        lab.wait_for(Duration::from_secs(10), || peers(&remembered) == others)
            .is_some(),
        "n1 remembers {:?}, not {others:?}",
        peers(&remembered)
    );

    // Twice: remembering nothing (a first start on a version that did not
    // keep the file), then remembering its peers.
    for forget in [true, false] {
        shoal_tests::shoal_ok(&["lab", "kill", "--name", &lab.name, "n1"]);
        let gone = |n: &str| !lab.remote_ips(n).contains(&n1_ip);
        let t = lab.wait_for(Duration::from_secs(15), || gone("n2") && gone("n3"));
        assert!(t.is_some(), "n1's endpoint never left n2 and n3");
        // A moment longer: its peers forget the old process in SWIM too.
        std::thread::sleep(Duration::from_secs(2));
        if forget {
            std::fs::remove_file(&remembered).unwrap();
        }
        shoal_tests::shoal_ok(&["lab", "start", "--name", &lab.name, "n1"]);
        let back = lab.wait_for(Duration::from_secs(15), || meshed(&lab, &nodes, &ips));
        eprintln!(
            "n1 killed, convicted by its peers, started again {} remembered peers: every endpoint everywhere after {back:?}",
            if forget { "without" } else { "with" }
        );
        assert!(
            back.is_some(),
            "n1 is not back in gossip: n1 has {:?}, n2 has {:?}",
            lab.remote_ips("n1"),
            lab.remote_ips("n2")
        );
        assert!(
            lab.wait_for(Duration::from_secs(10), || peers(&remembered) == others)
                .is_some(),
            "n1 remembers {:?}",
            peers(&remembered)
        );
    }
}
