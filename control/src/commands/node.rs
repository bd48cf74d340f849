//! `shoal node ls` (issue 4, in progress: inspect, promote, demote,
//! update and rm come next).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::api::client::Client;
use crate::api::{socket_path, NodeView};
use crate::output::{print_table, Format};

#[derive(Args, Debug)]
pub struct NodeArgs {
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: NodeCmd,
}

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// List the swarm's nodes (from a manager).
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

pub fn run(a: NodeArgs) -> anyhow::Result<()> {
    let client = Client::new(&socket_path(a.socket.as_deref()));
    let nodes: Vec<NodeView> = super::runtime()?.block_on(client.get("/v1/nodes"))?;
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
    }
    Ok(())
}
