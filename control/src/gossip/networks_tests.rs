//! Endpoint gossip scoped per network, on real gossip over the
//! sealed transport: a node holds only the tables of networks it is on,
//! gets one when it joins, drops it when it leaves, and a node's entries
//! leave every network when it leaves one or dies.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::gossip::keys::GossipKeys;
use crate::gossip::sealed::tests::node;
use crate::gossip::Gossip;
use crate::wire::EpRecord;

fn rec() -> EpRecord {
    EpRecord {
        mac: "02:42:0a:00:01:09".into(),
        net: "other".into(),
        since: 1,
        svc: None,
        container: None,
    }
}

/// (peer, `ep:` key) of every entry `g` would program from.
async fn entries(g: &Gossip) -> BTreeSet<(String, String)> {
    g.peers()
        .await
        .into_iter()
        .flat_map(|p| {
            p.kv.into_iter()
                .filter(|(k, _)| k.starts_with("ep:"))
                .map(move |(k, _)| (p.node.clone(), k))
        })
        .collect()
}

async fn until<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while !f().await {
        assert!(t0.elapsed() < Duration::from_secs(secs), "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_s_table_stays_among_the_nodes_on_it() {
    let keys = || GossipKeys::new(false, Some([6; 32]), None);
    // a, b and c each have one endpoint on network 4000 (`node`'s keys).
    let (a, a_addr) = node("a", None, keys(), 1).await;
    let (b, _) = node("b", Some(a_addr), keys(), 1).await;
    let (c, _) = node("c", Some(a_addr), keys(), 1).await;
    until("a holds b's and c's entries on 4000", 20, || async {
        entries(&a).await.len() == 2
    })
    .await;
    // b puts an endpoint on 4001, where nobody else is.
    b.publish(4001, "10.0.9.9".parse().unwrap(), &rec()).await;
    // c joins 4001 (its first endpoint there would): it pulls b's table.
    c.set_networks(&[4000, 4001].into()).await;
    let b_9 = ("b".to_string(), "ep:4001:10.0.9.9".to_string());
    let t0 = Instant::now();
    until("c gets 4001's table after joining", 10, || async {
        entries(&c).await.contains(&b_9)
    })
    .await;
    eprintln!("c had 4001's table {:?} after joining", t0.elapsed());
    // a, not on 4001, holds nothing of it (not even in its instances).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!entries(&a).await.contains(&b_9));
    assert_eq!(
        a.networks().await.iter().map(|n| n.vni).collect::<Vec<_>>(),
        [4000]
    );
    assert_eq!(on(&c, 4001).await, Some(vec!["b".into(), "c".into()]));
    // c leaves 4001: b's entries there are gone from c at once.
    c.set_networks(&[4000].into()).await;
    assert!(!entries(&c).await.contains(&b_9));
    assert_eq!(on(&c, 4001).await, None);
    // b withdraws its endpoint and leaves 4001: c, back on it, never sees
    // the old entry again (b's instance there is a new generation).
    b.withdraw(4001, "10.0.9.9".parse().unwrap()).await;
    b.set_networks(&[4000].into()).await;
    c.set_networks(&[4000, 4001].into()).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!entries(&c).await.contains(&b_9));
    // b dies: its entries leave every network everywhere.
    b.leave().await;
    until("b's entries gone from a and c", 5, || async {
        !entries(&a).await.iter().any(|(n, _)| n == "b")
            && !entries(&c).await.iter().any(|(n, _)| n == "b")
    })
    .await;
}

async fn on(g: &Gossip, vni: u32) -> Option<Vec<String>> {
    g.networks()
        .await
        .into_iter()
        .find(|n| n.vni == vni)
        .map(|n| n.members)
}
