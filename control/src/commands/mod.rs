//! The CLI: one file per verb.

pub mod daemon;
pub mod debug;
pub mod endpoint;
pub mod lab;
pub mod node;
pub mod swarm;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "shoal",
    version,
    about = "Docker Swarm mode networking on an eBPF dataplane"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the node agent (owns this node's dataplane).
    Daemon(daemon::DaemonArgs),
    /// Attach network namespaces to overlay networks (the endpoint API).
    Endpoint(endpoint::EndpointArgs),
    /// Swarm membership (issue 4, in progress: init and join-token).
    Swarm(swarm::SwarmArgs),
    /// Swarm nodes (from a manager).
    Node(node::NodeArgs),
    /// A whole cluster of network namespaces on this machine.
    #[command(subcommand)]
    Lab(lab::LabCmd),
    /// Look into (and poke) a node's dataplane.
    Debug(debug::DebugArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Daemon(a) => daemon::run(a),
        Cmd::Endpoint(a) => endpoint::run(a),
        Cmd::Lab(c) => lab::run(c),
        Cmd::Swarm(a) => swarm::run(a),
        Cmd::Node(a) => node::run(a),
        Cmd::Debug(a) => debug::run(a),
    }
}

/// A runtime for the commands that talk netlink.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}
