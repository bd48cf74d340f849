//! Who a draining task waits for: a peer the failure detector convicted a
//! moment ago is still waited for (liveness is one node's view, and the
//! convicted peer may still balance to it); one that said goodbye is not.
//! And right after this node stalled, such a peer keeps its entries.

use std::time::{Duration, Instant};

use crate::gossip::keys::GossipKeys;
use crate::gossip::sealed::tests::node;
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
    b.handle.initiate_shutdown().unwrap();
    c.leave().await;
    let t0 = Instant::now();
    while !names(&a).await.0.is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{:?}",
            names(&a).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (live, waited) = names(&a).await;
    assert!(live.is_empty(), "{live:?}");
    assert_eq!(waited, ["b"], "convicted, not live, but heard of recently");
    // Had a itself just stalled, b's conviction would not be trusted yet:
    // its entries stay (c said goodbye: gone either way).
    a.note_stall();
    assert_eq!(names(&a).await.0, ["b"]);
}
