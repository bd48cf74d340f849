//! `shoal debug network|gossip|raft`: what the node's daemon answers
//! through its API (its locally defined networks, its gossip view, its
//! Raft state), as opposed to the pinned maps `debug.rs` reads.

use anyhow::Result;

use super::debug::{NetworkCmd, Target};
use crate::output::{print_json, print_table, Format};

pub(super) fn network(t: &Target, cmd: &NetworkCmd, format: Format) -> Result<()> {
    use crate::wire::{Network, NetworkCreate};
    let client = crate::api::client::Client::new(&t.socket);
    super::runtime()?.block_on(async move {
        match cmd {
            NetworkCmd::Add {
                name,
                vni,
                subnet,
                gateway,
            } => {
                let req = NetworkCreate {
                    name: name.clone(),
                    vni: *vni,
                    subnet: subnet.clone(),
                    gateway: *gateway,
                    encrypted: false,
                };
                let n: Network = client.post("/v1/local/networks", &req).await?;
                println!("{}", n.name);
                Ok(())
            }
            NetworkCmd::Rm { name } => {
                let n: Network = client.delete(&format!("/v1/local/networks/{name}")).await?;
                println!("{}", n.name);
                Ok(())
            }
            NetworkCmd::Ls => {
                let nets: Vec<Network> = client.get("/v1/local/networks").await?;
                match format {
                    Format::Json => print_json(&nets),
                    Format::Table => {
                        let rows: Vec<Vec<String>> = nets
                            .iter()
                            .map(|n| {
                                vec![
                                    n.name.clone(),
                                    n.vni.to_string(),
                                    n.subnet.to_string(),
                                    n.gateway.to_string(),
                                    if n.encrypted { "ipsec" } else { "-" }.to_string(),
                                ]
                            })
                            .collect();
                        print_table(&["NAME", "VNI", "SUBNET", "GATEWAY", "ENCRYPTED"], &rows);
                        Ok(())
                    }
                }
            }
        }
    })
}

pub(super) fn raft(t: &Target, format: Format) -> Result<()> {
    let client = crate::api::client::Client::new(&t.socket);
    let r: crate::wire::RaftDebug = super::runtime()?.block_on(client.get("/v1/debug/raft"))?;
    if format == Format::Json {
        return print_json(&r);
    }
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let ids = |v: &[u64]| serde_json::to_string(v).unwrap_or_default();
    for (k, v) in [
        ("id", r.id.to_string()),
        ("state", r.state.clone()),
        ("term", r.term.to_string()),
        ("leader", opt(r.leader)),
        ("voters", ids(&r.voters)),
        ("learners", ids(&r.learners)),
        ("last_log_index", opt(r.last_log_index)),
        ("committed", opt(r.committed)),
        ("applied", opt(r.applied)),
        ("snapshot", opt(r.snapshot)),
        ("purged", opt(r.purged)),
        ("log_entries", opt(r.log_entries)),
    ] {
        println!("{k:<16}{v}");
    }
    for (id, addr) in &r.nodes {
        println!("{:<16}{id} {addr}", "member");
    }
    Ok(())
}

pub(super) fn gossip(t: &Target, format: Format) -> Result<()> {
    let client = crate::api::client::Client::new(&t.socket);
    let view: crate::wire::GossipView = super::runtime()?.block_on(client.get("/v1/gossip"))?;
    if format == Format::Json {
        return print_json(&view);
    }
    let rows: Vec<Vec<String>> = view
        .members
        .iter()
        .map(|m| {
            vec![
                format!("{}{}", m.node, if m.is_self { " (self)" } else { "" }),
                m.generation.to_string(),
                m.gossip_addr.to_string(),
                if m.live { "live".into() } else { "dead".into() },
                m.heard_ms_ago
                    .map(|a| format!("{a} ms"))
                    .unwrap_or_else(|| "-".into()),
                m.endpoints.to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "NODE",
            "GENERATION",
            "GOSSIP ADDR",
            "STATE",
            "LAST HEARD",
            "ENDPOINTS",
        ],
        &rows,
    );
    println!();
    // The networks whose endpoint gossip this node takes part in.
    let rows: Vec<Vec<String>> = view
        .networks
        .iter()
        .map(|n| {
            vec![
                n.vni.to_string(),
                n.generation.to_string(),
                n.members.join(","),
                n.endpoints.to_string(),
            ]
        })
        .collect();
    print_table(&["VNI", "GENERATION", "MEMBERS", "ENDPOINTS"], &rows);
    println!();
    let rows: Vec<Vec<String>> = view
        .table
        .iter()
        .map(|e| {
            vec![
                e.vni.to_string(),
                e.ip.to_string(),
                e.mac.clone(),
                e.node.clone(),
                e.vtep.to_string(),
                match (&e.refused, e.programmed) {
                    (Some(r), _) => format!("refused: {r}"),
                    (None, true) => "programmed".into(),
                    (None, false) => "not joined".into(),
                },
                e.svc
                    .as_ref()
                    .map(|s| {
                        let vip = s.vip.map(|v| format!(" vip {v}")).unwrap_or_default();
                        format!("{} ({}){vip}", s.task, s.network)
                    })
                    .unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &["VNI", "IP", "MAC", "NODE", "VTEP", "STATE", "TASK"],
        &rows,
    );
    println!();
    let rows: Vec<Vec<String>> = view
        .refused
        .iter()
        .map(|(k, v)| vec![k.clone(), v.to_string()])
        .collect();
    print_table(&["REFUSED", "COUNT"], &rows);
    println!();
    let k = &view.keys;
    let ids = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
    print_table(
        &["KEYS FROM", "RING (NEWEST FIRST)", "SEALING WITH"],
        &[vec![
            k.source.clone(),
            if k.ring.is_empty() {
                "-".into()
            } else {
                ids(&k.ring)
            },
            k.sealing.map_or("-".into(), |s| s.to_string()),
        ]],
    );
    let t = &view.traffic;
    println!(
        "\nsent {} datagrams ({} bytes), received {} ({} bytes)",
        t.sent_datagrams, t.sent_bytes, t.received_datagrams, t.received_bytes
    );
    Ok(())
}
