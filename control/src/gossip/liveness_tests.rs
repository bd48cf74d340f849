//! Who a draining task waits for: a peer SWIM declared down a
//! moment ago is still waited for (liveness is one node's view, and the
//! convicted peer may still balance to it); one that said goodbye is not.
//! And right after this node stalled, such a peer keeps its entries.

use std::time::{Duration, Instant};

use crate::gossip::keys::GossipKeys;
use crate::gossip::sealed::tests::{next_addr, node, sees, start};
use crate::gossip::Gossip;

async fn names(g: &Gossip) -> (Vec<String>, Vec<String>) {
    let live = g.peers().await.into_iter().map(|p| p.node).collect();
    let waited = g.acks().await.into_iter().map(|p| p.node).collect();
    (live, waited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_waits_for_a_peer_convicted_a_moment_ago_not_for_one_that_left() {
    let keys = || GossipKeys::new(false, Some([3; 32]), None);
    let (a, a_addr) = node("a", None, keys(), 1).await;
    let (b, _) = node("b", Some(a_addr), keys(), 1).await;
    let (c, _) = node("c", Some(a_addr), keys(), 1).await;
    let t0 = Instant::now();
    while names(&a).await.0.len() < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{:?}",
            names(&a).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // b falls silent (as if starved or cut off); c says goodbye.
    b.silence();
    let silent = Instant::now();
    c.leave().await;
    // c is gone at once; b, convicted, keeps its entries for the hold.
    let t0 = Instant::now();
    while names(&a).await.0 != ["b"] {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{:?}",
            names(&a).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t0 = Instant::now();
    while !names(&a).await.0.is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{:?}",
            names(&a).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held = silent.elapsed();
    let hold = crate::gossip::HOLD;
    assert!(held >= hold - Duration::from_millis(300), "{held:?}");
    let (live, waited) = names(&a).await;
    assert!(live.is_empty(), "{live:?}");
    assert_eq!(waited, ["b"], "convicted, not live, but heard of recently");
    // Had a itself just stalled, b's conviction would not be trusted yet:
    // its entries stay (c said goodbye: gone either way).
    a.note_stall();
    assert_eq!(names(&a).await.0, ["b"]);
}

/// Every peer silent in the same instant: this node's trouble likelier
/// than theirs, so their entries stay for `stall::GRACE` after they were
/// last heard, then go (two peers really dead are dropped, only later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_hears_from_no_peer_keeps_their_entries_for_the_grace() {
    let keys = || GossipKeys::new(false, Some([4; 32]), None);
    let (a, a_addr) = node("a", None, keys(), 1).await;
    let (b, _) = node("b", Some(a_addr), keys(), 1).await;
    let (c, _) = node("c", Some(a_addr), keys(), 1).await;
    let within = |what: &'static str, secs: u64| {
        let t0 = Instant::now();
        move || assert!(t0.elapsed() < Duration::from_secs(secs), "{what}")
    };
    let check = within("both peers live", 20);
    while names(&a).await.0.len() < 2 {
        check();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.silence();
    c.silence();
    let silent = Instant::now();
    let check = within("the failure detector convicts both", 20);
    while !a.live_names().is_empty() {
        check();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(silent.elapsed() < crate::gossip::stall::GRACE);
    assert_eq!(names(&a).await.0, ["b", "c"], "convicted, yet kept");
    let check = within("the entries go after the grace", 20);
    while !names(&a).await.0.is_empty() {
        check();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = silent.elapsed();
    assert!(
        after >= crate::gossip::stall::GRACE - Duration::from_millis(500),
        "{after:?}"
    );
}

/// A peer whose daemon restarts (`Gossip::pause`) keeps its entries for
/// `RESTART_HOLD` of silence, where one that just went silent keeps them
/// for `HOLD`; a restarting peer that never comes back goes after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarting_peer_keeps_its_entries_for_the_restart_hold() {
    use crate::gossip::{HOLD, RESTART_HOLD};
    let keys = || GossipKeys::new(false, Some([5; 32]), None);
    let (a, a_addr) = node("a", None, keys(), 1).await;
    let (b, _) = node("b", Some(a_addr), keys(), 1).await;
    let (c, _) = node("c", Some(a_addr), keys(), 1).await;
    // d stays: a is not cut off, so silence means what it says.
    let (_d, _) = node("d", Some(a_addr), keys(), 1).await;
    let t0 = Instant::now();
    while names(&a).await.0.len() < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{:?}",
            names(&a).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let silent = Instant::now();
    c.silence();
    b.pause().await;
    tokio::time::sleep((HOLD + Duration::from_millis(2500)).saturating_sub(silent.elapsed())).await;
    assert_eq!(
        names(&a).await.0,
        ["b", "d"],
        "c gone after the hold, b kept"
    );
    while names(&a).await.0 != ["d"] {
        assert!(
            silent.elapsed() < RESTART_HOLD + Duration::from_secs(5),
            "{:?}",
            names(&a).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        silent.elapsed() >= RESTART_HOLD - Duration::from_millis(500),
        "{:?}",
        silent.elapsed()
    );
}

/// A restart slower than the failure detector, with no seed (a swarm's
/// only manager, installed without `--join`): its peers convicted the old
/// process, and SWIM addresses a member by process, so they would never
/// ask the new one in (CI saw a VM's manager cut off for good). The new
/// process asks the members it remembers (`remembered.rs`) and is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_without_a_seed_asks_the_members_it_remembers() {
    let keys = || GossipKeys::new(false, Some([6; 32]), None);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gossip-peers.json");
    let a_addr = next_addr();
    let a = start("a", a_addr, 1, None, keys(), 1, Some(file.clone()))
        .await
        .unwrap();
    let (b, _) = node("b", Some(a_addr), keys(), 1).await;
    let (c, _) = node("c", Some(a_addr), keys(), 1).await;
    let t0 = Instant::now();
    while names(&a).await.0.len() < 2 || !file.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{:?}",
            names(&a).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.pause().await;
    drop(a);
    // Both convict it: from then on they send it nothing.
    let t0 = Instant::now();
    while b.live_names().contains("a") || c.live_names().contains("a") {
        assert!(t0.elapsed() < Duration::from_secs(10), "a never convicted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The same address, a new process (its socket frees as the old
    // tasks wind down).
    let t0 = Instant::now();
    let a = loop {
        match start("a", a_addr, 2, None, keys(), 1, Some(file.clone())).await {
            Ok(g) => break g,
            Err(e) => assert!(t0.elapsed() < Duration::from_secs(5), "{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let back = Instant::now();
    while !(sees(&b, "a", 1).await && sees(&c, "a", 1).await && sees(&a, "b", 1).await) {
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "the new process is not back in: b sees {:?}, it sees {:?}",
            b.members().await,
            a.members().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
