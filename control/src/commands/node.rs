//! `shoal node ls|inspect|update|rm|promote|demote`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::api::client::Client;
use crate::api::socket_path;
use crate::output::{print_table, Format};
use crate::wire::Availability;
use crate::wire::{NodeUpdate, NodeView};

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

pub fn run(a: NodeArgs) -> anyhow::Result<()> {
    let client = Client::new(&socket_path(a.socket.as_deref()));
    let rt = super::runtime()?;
    match &a.cmd {
        NodeCmd::Inspect { nodes } => {
            let mut out = vec![];
            for n in nodes {
                let v: serde_json::Value = rt.block_on(client.get(&format!("/v1/nodes/{n}")))?;
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
    match a.cmd {
        NodeCmd::Ls {
            format: Format::Json,
        } => {
            // One JSON object per line, as `docker node ls --format json`.
            for n in &nodes {
                println!("{}", serde_json::to_string(n)?);
            }
        }
        NodeCmd::Ls {
            format: Format::Table,
        } => {
            let rows: Vec<Vec<String>> = nodes
                .iter()
                .map(|n| {
                    vec![
                        format!("{}{}", n.id, if n.is_self { " *" } else { "" }),
                        n.hostname.clone(),
                        n.status.clone(),
                        n.availability.clone(),
                        n.manager_status.clone(),
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
