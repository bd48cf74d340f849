//! `shoal endpoint create|rm|ls`: the daemon's endpoint API.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::api::client::Client;
use crate::api::socket_path;
use crate::output::{print_json, print_table, Format};
use crate::wire::{Endpoint, EndpointCreate};

#[derive(Args, Debug)]
pub struct EndpointArgs {
    /// The daemon's API socket (default: $SHOAL_SOCKET or /run/shoal/shoal.sock).
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: EndpointCmd,
}

#[derive(Subcommand, Debug)]
pub enum EndpointCmd {
    /// Attach a network namespace to an overlay network.
    Create {
        #[arg(long)]
        network: String,
        /// Address with the network's prefix, e.g. 10.0.1.5/24.
        #[arg(long)]
        ip: String,
        #[arg(long)]
        mac: Option<String>,
        /// An existing namespace (e.g. /run/netns/X, /proc/PID/ns/net).
        #[arg(long, conflicts_with = "name")]
        netns: Option<String>,
        /// Create a namespace of this name (also the endpoint's name).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Detach and remove an endpoint.
    Rm { name: String },
    /// List this node's endpoints.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

pub fn run(a: EndpointArgs) -> anyhow::Result<()> {
    let client = Client::new(&socket_path(a.socket.as_deref()));
    super::runtime()?.block_on(async move {
        match a.cmd {
            EndpointCmd::Create {
                network,
                ip,
                mac,
                netns,
                name,
                format,
            } => {
                let ep: Endpoint = client
                    .post(
                        "/v1/endpoints",
                        &EndpointCreate {
                            network,
                            ip,
                            mac,
                            netns,
                            name,
                            ifname: None,
                            svc: None,
                            default_route: None,
                            ..Default::default()
                        },
                    )
                    .await?;
                match format {
                    Format::Json => print_json(&ep),
                    Format::Table => {
                        println!("{}", ep.name);
                        Ok(())
                    }
                }
            }
            EndpointCmd::Rm { name } => {
                let ep: Endpoint = client.delete(&format!("/v1/endpoints/{name}")).await?;
                println!("{}", ep.name);
                Ok(())
            }
            EndpointCmd::Ls { format } => {
                let eps: Vec<Endpoint> = client.get("/v1/endpoints").await?;
                match format {
                    Format::Json => print_json(&eps),
                    Format::Table => {
                        let rows: Vec<Vec<String>> = eps
                            .iter()
                            .map(|e| {
                                vec![
                                    e.name.clone(),
                                    format!("{} (vni {})", e.network, e.vni),
                                    format!("{}/{}", e.ip, e.prefix_len),
                                    e.mac.clone(),
                                    e.host_if.clone(),
                                    e.netns.clone(),
                                ]
                            })
                            .collect();
                        print_table(&["NAME", "NETWORK", "IP", "MAC", "HOST IF", "NETNS"], &rows);
                        Ok(())
                    }
                }
            }
        }
    })
}
