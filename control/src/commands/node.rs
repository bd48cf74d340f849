//! `shoal node ls|inspect|update|rm|promote|demote`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::api::client::Client;
use crate::api::socket_path;
use crate::output::{print_rows, print_table, Format};
use crate::wire::Availability;
use crate::wire::{NodeInspect, NodeRow, NodeUpdate, NodeView};

#[derive(Args, Debug)]
pub struct NodeArgs {
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: NodeCmd,
}

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// Show nodes in detail (Docker's JSON field names).
    Inspect {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Change a node's availability or labels.
    Update {
        #[arg(long, value_parser = parse_availability)]
        availability: Option<Availability>,
        #[arg(long = "label-add")]
        label_add: Vec<String>,
        #[arg(long = "label-rm")]
        label_rm: Vec<String>,
        node: String,
    },
    /// Remove a (worker) node from the swarm; one that is still up only
    /// with --force.
    Rm {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Make workers managers.
    Promote {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Make managers workers.
    Demote {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// List the swarm's nodes (from a manager).
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

fn parse_availability(s: &str) -> Result<Availability, String> {
    match s {
        "active" => Ok(Availability::Active),
        "pause" => Ok(Availability::Pause),
        "drain" => Ok(Availability::Drain),
        other => Err(format!(
            "unknown availability {other:?} (active, pause or drain)"
        )),
    }
}

/// A `node ls` row as Docker prints it. The engine version is left empty:
/// managers do not learn their nodes' versions (yet). Every node in the
/// state holds a certificate of the cluster's CA: TLS `Ready`.
pub fn node_row(n: &NodeView) -> NodeRow {
    NodeRow {
        id: n.id.clone(),
        hostname: n.hostname.clone(),
        status: n.status.clone(),
        availability: n.availability.clone(),
        manager_status: n.manager_status.clone(),
        engine_version: String::new(),
        is_self: n.is_self,
        tls_status: "Ready".into(),
    }
}

pub fn run(a: NodeArgs) -> anyhow::Result<()> {
    let client = Client::new(&socket_path(a.socket.as_deref()));
    let rt = super::runtime()?;
    match &a.cmd {
        NodeCmd::Inspect { nodes } => {
            let mut out = vec![];
            for n in nodes {
                let v: NodeInspect = rt.block_on(client.get(&format!("/v1/nodes/{n}")))?;
                out.push(v);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
        NodeCmd::Update {
            availability,
            label_add,
            label_rm,
            node,
        } => {
            let mut labels_add = std::collections::BTreeMap::new();
            for l in label_add {
                let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                if k.is_empty() {
                    anyhow::bail!("bad label {l:?} (want key=value)");
                }
                labels_add.insert(k.to_string(), v.to_string());
            }
            let u = NodeUpdate {
                availability: *availability,
                labels_add,
                labels_rm: label_rm.clone(),
            };
            let id: String = rt.block_on(client.post(&format!("/v1/nodes/{node}/update"), &u))?;
            println!("{id}");
            return Ok(());
        }
        NodeCmd::Rm { force, nodes } => {
            for n in nodes {
                let id: String =
                    rt.block_on(client.delete(&format!("/v1/nodes/{n}?force={force}")))?;
                println!("{id}");
            }
            return Ok(());
        }
        NodeCmd::Promote { nodes } => {
            for n in nodes {
                let h: String = rt.block_on(client.post(&format!("/v1/nodes/{n}/promote"), &()))?;
                println!("Node {h} promoted to a manager in the swarm.");
            }
            return Ok(());
        }
        NodeCmd::Demote { nodes } => {
            for n in nodes {
                let h: String = rt.block_on(client.post(&format!("/v1/nodes/{n}/demote"), &()))?;
                println!("Manager {h} demoted in the swarm.");
            }
            return Ok(());
        }
        NodeCmd::Ls { .. } => {}
    }
    let nodes: Vec<NodeView> = rt.block_on(client.get("/v1/nodes"))?;
    let rows: Vec<NodeRow> = nodes.iter().map(node_row).collect();
    match a.cmd {
        NodeCmd::Ls {
            format: Format::Json,
        } => print_rows(&rows)?,
        NodeCmd::Ls {
            format: Format::Table,
        } => {
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|n| {
                    vec![
                        format!("{}{}", n.id, if n.is_self { " *" } else { "" }),
                        n.hostname,
                        n.status,
                        n.availability,
                        n.manager_status,
                    ]
                })
                .collect();
            print_table(
                &["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS"],
                &rows,
            );
        }
        _ => unreachable!("handled above"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_becomes_dockers_row() {
        let v = NodeView {
            id: "abcdefghijklmnopqrstuvwxy".into(),
            hostname: "n1".into(),
            status: "Ready".into(),
            availability: "Active".into(),
            manager_status: "Leader".into(),
            is_self: true,
            addr: "198.18.0.1".parse().unwrap(),
        };
        assert_eq!(
            serde_json::to_value(node_row(&v)).unwrap(),
            serde_json::json!({
                "ID": "abcdefghijklmnopqrstuvwxy", "Hostname": "n1", "Status": "Ready",
                "Availability": "Active", "ManagerStatus": "Leader", "EngineVersion": "",
                "Self": true, "TLSStatus": "Ready",
            })
        );
    }
}
