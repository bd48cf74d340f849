//! `shoal network create|ls|inspect|rm`: swarm-scoped overlay networks.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::api::client::Client;
use crate::api::socket_path;
use crate::output::{print_table, Format};
use crate::wire::NetworkSpec;

#[derive(Args, Debug)]
pub struct NetworkArgs {
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: NetworkCmd,
}

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create an overlay network (subnet from the swarm's pool unless given).
    Create {
        /// Only `overlay`.
        #[arg(short, long, default_value = "overlay")]
        driver: String,
        #[arg(long)]
        subnet: Option<ipnet::Ipv4Net>,
        #[arg(long)]
        gateway: Option<Ipv4Addr>,
        #[arg(long)]
        attachable: bool,
        #[arg(long)]
        internal: bool,
        #[arg(long = "label")]
        labels: Vec<String>,
        name: String,
    },
    /// List networks.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show networks in detail (Docker's JSON).
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove networks (refused while a service uses one).
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
}

/// `k=v` labels (a bare `k` is `k=`).
pub fn parse_labels(labels: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for l in labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        if k.is_empty() {
            bail!("bad label {l:?} (want key=value)");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

pub fn run(a: NetworkArgs) -> anyhow::Result<()> {
    let client = Client::new(&socket_path(a.socket.as_deref()));
    let rt = super::runtime()?;
    match a.cmd {
        NetworkCmd::Create {
            driver,
            subnet,
            gateway,
            attachable,
            internal,
            labels,
            name,
        } => {
            if driver != "overlay" {
                bail!("driver {driver:?} is not supported (only overlay)");
            }
            let spec = NetworkSpec {
                name,
                subnet,
                gateway,
                attachable,
                internal,
                ingress: false,
                labels: parse_labels(&labels)?,
            };
            let v: Value = rt.block_on(client.post("/v1/networks", &spec))?;
            println!("{}", v["Id"].as_str().unwrap_or_default());
        }
        NetworkCmd::Ls { format } => {
            let nets: Vec<Value> = rt.block_on(client.get("/v1/networks"))?;
            match format {
                Format::Json => {
                    for n in &nets {
                        let row = serde_json::json!({"ID": n["Id"], "Name": n["Name"], "Driver": n["Driver"], "Scope": n["Scope"], "Subnet": n["IPAM"]["Config"][0]["Subnet"]});
                        println!("{}", serde_json::to_string(&row)?);
                    }
                }
                Format::Table => {
                    let rows: Vec<Vec<String>> = nets
                        .iter()
                        .map(|n| {
                            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
                            vec![
                                s(&n["Id"]).chars().take(12).collect(),
                                s(&n["Name"]),
                                s(&n["Driver"]),
                                s(&n["Scope"]),
                            ]
                        })
                        .collect();
                    print_table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows);
                }
            }
        }
        NetworkCmd::Inspect { networks } => {
            let mut out = vec![];
            for n in networks {
                let v: Value = rt.block_on(client.get(&format!("/v1/networks/{n}")))?;
                out.push(v);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        NetworkCmd::Rm { networks } => {
            for n in networks {
                let name: String = rt.block_on(client.delete(&format!("/v1/networks/{n}")))?;
                println!("{name}");
            }
        }
    }
    Ok(())
}
