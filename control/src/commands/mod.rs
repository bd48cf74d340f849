//! The CLI: one file per verb.

pub mod cleanup;
pub mod daemon;
pub mod debug;
pub mod debug_daemon;
pub mod debug_dns;
pub mod debug_flows;
pub mod debug_ipsec;
pub mod debug_lb;
pub mod debug_monitor;
pub mod endpoint;
pub mod lab;
pub mod network;
pub mod node;
pub mod service;
pub mod stack;
pub mod swarm;
pub mod task;
pub mod whoami;

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
    Daemon(Box<daemon::DaemonArgs>),
    /// Attach network namespaces to overlay networks (the endpoint API).
    Endpoint(endpoint::EndpointArgs),
    /// Swarm membership: init, join, join-token, leave.
    Swarm(swarm::SwarmArgs),
    /// Swarm nodes (from a manager).
    Node(node::NodeArgs),
    /// Overlay networks of the swarm.
    Network(network::NetworkArgs),
    /// Services: tasks the swarm keeps running.
    Service(service::ServiceArgs),
    /// Stacks: networks and services from Compose files.
    Stack(stack::StackArgs),
    /// A demo workload (like the whoami image): answers with its hostname,
    /// task, IPs and the client's address.
    Whoami(whoami::WhoamiArgs),
    /// Run a command inside a task's namespaces (on the node running it).
    Exec(task::ExecArgs),
    /// Show tasks in detail (Docker's JSON field names).
    Inspect(task::InspectArgs),
    /// A whole cluster of network namespaces on this machine.
    #[command(subcommand)]
    Lab(lab::LabCmd),
    /// Look into (and poke) a node's dataplane.
    Debug(debug::DebugArgs),
    /// Remove what a stopped daemon left on this host (tasks, namespaces,
    /// programs, xfrm state; --purge: its data too).
    Cleanup(cleanup::CleanupArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell) for `shoal`.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) of `shoal`, or with --dir write one page
    /// per subcommand there (shoal.1, shoal-service.1, ...).
    #[command(hide = true)]
    Man {
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
}

/// `shoal completions SHELL`.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    use clap::CommandFactory;
    clap_complete::generate(shell, &mut Cli::command(), "shoal", &mut std::io::stdout());
    Ok(())
}

/// `shoal man`: generated from the CLI definition, so it never drifts.
fn man(dir: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    match dir {
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
        Some(d) => {
            std::fs::create_dir_all(&d)?;
            clap_mangen::generate_to(cmd, &d)?;
        }
    }
    Ok(())
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Daemon(a) => daemon::run(*a),
        Cmd::Completions { shell } => completions(shell),
        Cmd::Man { dir } => man(dir),
        Cmd::Endpoint(a) => endpoint::run(a),
        Cmd::Lab(c) => lab::run(c),
        Cmd::Swarm(a) => swarm::run(a),
        Cmd::Node(a) => node::run(a),
        Cmd::Network(a) => network::run(a),
        Cmd::Service(a) => service::run(a),
        Cmd::Stack(a) => stack::run(a),
        Cmd::Whoami(a) => whoami::run(a),
        Cmd::Exec(a) => task::exec(a),
        Cmd::Inspect(a) => task::inspect(a),
        Cmd::Debug(a) => debug::run(a),
        Cmd::Cleanup(a) => cleanup::run(a),
    }
}

/// A runtime for the commands that talk netlink.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// A pinned dataplane object opened by a debug command: when nothing is
/// pinned there, say what that means here; any other failure as it is.
pub fn pinned<T>(
    r: Result<T, shoal_dataplane::Error>,
    pins: &std::path::Path,
) -> anyhow::Result<T> {
    r.map_err(|e| match e {
        shoal_dataplane::Error::NotPinned(_) => anyhow::anyhow!(
            "no Shoal dataplane pinned at {} (is the daemon running there?)",
            pins.display()
        ),
        e => e.into(),
    })
}
