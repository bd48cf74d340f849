//! `shoal swarm init|join|join-token|leave|update|inspect|ca`.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use crate::api::client::Client;
use crate::api::socket_path;
use crate::wire::{
    CaView, JoinTokenReply, SwarmInit, SwarmInitReply, SwarmJoin, SwarmJoinReply, SwarmLeave,
    SwarmUpdate, SwarmView,
};

#[derive(Args, Debug)]
pub struct SwarmArgs {
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: SwarmCmd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RoleArg {
    Worker,
    Manager,
}

#[derive(Subcommand, Debug)]
pub enum SwarmCmd {
    /// Make this node the first manager of a new swarm.
    Init {
        #[arg(long)]
        advertise_addr: Option<Ipv4Addr>,
        /// Where overlay network subnets come from (default 10.0.0.0/8).
        #[arg(long)]
        default_addr_pool: Option<ipnet::Ipv4Net>,
        /// Size of each network's subnet from the pool (default 24).
        #[arg(long)]
        default_addr_pool_mask_length: Option<u8>,
        /// UDP port of the VXLAN data path (default 4789).
        #[arg(long)]
        data_path_port: Option<u16>,
        /// How often the leader makes a new gossip key (seconds or e.g.
        /// 12h; default: the daemon's --gossip-key-rotation).
        #[arg(long, value_parser = super::daemon::parse_rotation)]
        gossip_key_rotation: Option<std::time::Duration>,
        /// How long node certificates are valid (e.g. 2160h; default 90
        /// days, at least 1h); nodes renew in the last half.
        #[arg(long, value_parser = super::daemon::parse_rotation)]
        cert_expiry: Option<std::time::Duration>,
    },
    /// Change the swarm's settings.
    Update {
        /// How long node certificates are valid from now on (e.g. 720h).
        #[arg(long, value_parser = super::daemon::parse_rotation)]
        cert_expiry: Option<std::time::Duration>,
    },
    /// Show the swarm's settings (JSON).
    Inspect,
    /// Show the root CA certificate, or rotate it: a new root signs every
    /// node's certificate, then the old one is dropped and the join
    /// tokens change.
    Ca {
        #[arg(long)]
        rotate: bool,
        /// Start the rotation and return at once.
        #[arg(short, long)]
        detach: bool,
        /// Print no progress (the root certificate only).
        #[arg(short, long)]
        quiet: bool,
    },
    /// Join the swarm of the manager at ADDR:2377 (the token decides the role).
    Join {
        #[arg(long)]
        token: String,
        remote: String,
    },
    /// Leave the swarm (a manager only with --force; demote it first).
    Leave {
        #[arg(short, long)]
        force: bool,
    },
    /// Show (or rotate) the token to join as a worker or a manager.
    JoinToken {
        role: RoleArg,
        /// Only the token.
        #[arg(short, long)]
        quiet: bool,
        #[arg(long)]
        rotate: bool,
    },
}

pub fn run(a: SwarmArgs) -> anyhow::Result<()> {
    let client = Client::new(&socket_path(a.socket.as_deref()));
    super::runtime()?.block_on(async move {
        match a.cmd {
            SwarmCmd::Init { advertise_addr, default_addr_pool, default_addr_pool_mask_length, data_path_port, gossip_key_rotation, cert_expiry } => {
                let gossip_key_rotation_ms = gossip_key_rotation.map(|d| d.as_millis() as u64);
                let cert_expiry_ms = cert_expiry.map(|d| d.as_millis() as u64);
                let req = SwarmInit { advertise_addr, default_addr_pool, default_addr_pool_mask_length, data_path_port, gossip_key_rotation_ms, cert_expiry_ms };
                let r: SwarmInitReply = client.post("/v1/swarm/init", &req).await?;
                println!("Swarm initialized: current node ({}) is now a manager.\n", r.node_id);
                println!("To add a worker to this swarm, run the following command:\n");
                println!("    shoal swarm join --token {} {}\n", r.worker_token, r.control_addr);
                println!("To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.");
                Ok(())
            }
            SwarmCmd::Update { cert_expiry } => {
                let req = SwarmUpdate { cert_expiry_ms: cert_expiry.map(|d| d.as_millis() as u64) };
                let _: SwarmView = client.post("/v1/swarm/update", &req).await?;
                println!("Swarm updated.");
                Ok(())
            }
            SwarmCmd::Inspect => {
                let v: SwarmView = client.get("/v1/swarm").await?;
                println!("{}", serde_json::to_string_pretty(&[v])?);
                Ok(())
            }
            SwarmCmd::Ca { rotate, detach, quiet } => ca(&client, rotate, detach, quiet).await,
            SwarmCmd::Join { token, remote } => {
                let r: SwarmJoinReply = client.post("/v1/swarm/join", &SwarmJoin { token, remote }).await?;
                println!("This node joined a swarm as a {}.", r.role.as_str());
                Ok(())
            }
            SwarmCmd::Leave { force } => {
                let () = client.post("/v1/swarm/leave", &SwarmLeave { force }).await?;
                println!("Node left the swarm.");
                Ok(())
            }
            SwarmCmd::JoinToken { role, quiet, rotate } => {
                let r = match role {
                    RoleArg::Worker => "worker",
                    RoleArg::Manager => "manager",
                };
                let t: JoinTokenReply = if rotate {
                    client.post(&format!("/v1/swarm/join-token/{r}/rotate"), &()).await?
                } else {
                    client.get(&format!("/v1/swarm/join-token/{r}")).await?
                };
                if quiet {
                    println!("{}", t.token);
                } else {
                    if rotate {
                        println!("Successfully rotated {r} join token.\n");
                    }
                    println!("To add a {r} to this swarm, run the following command:\n");
                    println!("    shoal swarm join --token {} {}\n", t.token, t.control_addr);
                }
                Ok(())
            }
        }
    })
}

/// `swarm ca [--rotate]`: as Docker, progress lines while the nodes move to
/// the new root, then the root certificate.
async fn ca(client: &Client, rotate: bool, detach: bool, quiet: bool) -> anyhow::Result<()> {
    let mut v: CaView = if rotate {
        client.post("/v1/swarm/ca/rotate", &()).await?
    } else {
        client.get("/v1/swarm/ca").await?
    };
    let mut said = None;
    while let Some(p) = v.rotation.as_ref().filter(|_| !detach) {
        let now = (p.rotated, p.total, p.waiting.clone());
        if !quiet && said.as_ref() != Some(&now) {
            let waiting = match p.waiting.as_slice() {
                [] => String::new(),
                w => format!(" (waiting for {})", w.join(", ")),
            };
            println!(
                "rotated TLS certificates: {}/{} nodes{waiting}",
                p.rotated, p.total
            );
            said = Some(now);
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        v = client.get("/v1/swarm/ca").await?;
    }
    if rotate && !detach && !quiet {
        // The last nodes may have moved over between two looks.
        if let Some((_, total, _)) = said.filter(|(d, t, _)| d < t) {
            println!("rotated TLS certificates: {total}/{total} nodes");
        }
        println!("rotated CA certificates: the new root is the swarm's only root; the join tokens changed");
    }
    print!("{}", v.root_pem);
    Ok(())
}
