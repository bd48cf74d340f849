//! `shoal lab up|down|ls|exec|check|kill|stop|start|restart|peers`.

use clap::{Args, Subcommand};

use crate::lab::{self, Lab, UpOptions};
use crate::output::{print_json, print_table, Format};

#[derive(Args, Debug, Clone)]
pub struct LabName {
    /// The lab's name: prefix of all its namespaces and links.
    #[arg(long, default_value = "lab")]
    pub name: String,
}

#[derive(Subcommand, Debug)]
pub enum LabCmd {
    /// Build a cluster: N hosts on an underlay bridge, an agent in each.
    Up {
        #[command(flatten)]
        lab: LabName,
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// Endpoints per node, all on one overlay network.
        #[arg(long, default_value_t = 2)]
        endpoints: u32,
        /// auto, tc or xdp (see `shoal daemon --help`).
        #[arg(long, default_value = "auto")]
        accel: String,
        /// Swarm managers: n1 runs `swarm init`, the next M-1 nodes join as
        /// managers, the others as workers. 0: no swarm.
        #[arg(long, default_value_t = 1)]
        managers: u32,
        /// An extra argument for every node's `shoal daemon` (repeatable),
        /// e.g. --daemon-arg=--raft-snapshot-interval=20.
        #[arg(long = "daemon-arg", allow_hyphen_values = true)]
        daemon_args: Vec<String>,
        /// Start the daemons with no `--join` seed, as a .deb install runs
        /// them: gossip finds its peers through the swarm's managers.
        #[arg(long)]
        no_join: bool,
    },
    /// Remove the lab: agents, pins, namespaces, state.
    Down {
        #[command(flatten)]
        lab: LabName,
    },
    /// List the lab's nodes and endpoints.
    Ls {
        #[command(flatten)]
        lab: LabName,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Run a command in a node's or an endpoint's namespace (`ul` for the underlay).
    Exec {
        #[command(flatten)]
        lab: LabName,
        /// n1, n1-e2, ul ...
        target: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Ping every endpoint from every other: the lab's connectivity matrix.
    Check {
        #[command(flatten)]
        lab: LabName,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// SIGKILL a node's agent (no goodbye: peers must detect it).
    Kill {
        #[command(flatten)]
        lab: LabName,
        node: String,
    },
    /// Stop a node's agent with SIGTERM: it leaves the cluster.
    Stop {
        #[command(flatten)]
        lab: LabName,
        node: String,
    },
    /// Start a node's agent that was killed or stopped.
    Start {
        #[command(flatten)]
        lab: LabName,
        node: String,
    },
    /// Restart a node's agent (the dataplane keeps forwarding meanwhile).
    Restart {
        #[command(flatten)]
        lab: LabName,
        node: String,
    },
    /// Simulated gossip peers publishing a big endpoint table (the
    /// daemon's own gossip code), to measure daemons at size; run inside a
    /// namespace on the lab's underlay holding their addresses.
    Peers(lab::peers::PeersArgs),
    /// Simulate the gossip at Swarm2000's size in one process, on
    /// simulated time (membership, per-network tables, a change, a killed
    /// node); `gossip-sim-bench` prints it beside its reference.
    Sim(lab::sim::SimArgs),
}

pub fn run(cmd: LabCmd) -> anyhow::Result<()> {
    match cmd {
        LabCmd::Up {
            lab,
            nodes,
            endpoints,
            accel,
            managers,
            daemon_args,
            no_join,
        } => {
            let opts = UpOptions {
                name: lab.name,
                nodes,
                endpoints,
                accel,
                managers,
                daemon_args,
                no_join,
            };
            let lab = super::runtime()?.block_on(lab::up(opts))?;
            print_summary(&lab);
            Ok(())
        }
        LabCmd::Down { lab } => lab::down(&lab.name),
        LabCmd::Peers(a) => lab::peers::run(a),
        LabCmd::Sim(a) => lab::sim::run(a),
        LabCmd::Ls { lab, format } => {
            let lab = Lab::load(&lab.name)?;
            match format {
                Format::Json => print_json(&lab),
                Format::Table => {
                    print_summary(&lab);
                    Ok(())
                }
            }
        }
        LabCmd::Exec { lab, target, cmd } => lab::exec(&Lab::load(&lab.name)?, &target, &cmd),
        LabCmd::Check { lab, format } => {
            let lab = Lab::load(&lab.name)?;
            let rows = lab::check(&lab)?;
            let failed = rows.iter().filter(|r| !r.ok).count();
            match format {
                Format::Json => print_json(&rows)?,
                Format::Table => {
                    let table: Vec<Vec<String>> = rows
                        .iter()
                        .map(|r| {
                            vec![
                                r.from.clone(),
                                r.to.clone(),
                                r.ip.to_string(),
                                if r.same_node {
                                    "same node"
                                } else {
                                    "across nodes"
                                }
                                .into(),
                                if r.ok { "ok".into() } else { "FAILED".into() },
                                r.rtt_ms.map(|t| format!("{t} ms")).unwrap_or_default(),
                            ]
                        })
                        .collect();
                    print_table(&["FROM", "TO", "IP", "PATH", "RESULT", "RTT"], &table);
                    println!(
                        "\n{} of {} paths reachable",
                        rows.len() - failed,
                        rows.len()
                    );
                }
            }
            if failed > 0 {
                anyhow::bail!("{failed} of {} paths failed", rows.len());
            }
            Ok(())
        }
        LabCmd::Kill { lab, node } => {
            let pid = lab::kill_node(&Lab::load(&lab.name)?, &node)?;
            println!("agent of {node} killed (pid {pid})");
            Ok(())
        }
        LabCmd::Stop { lab, node } => {
            lab::stop_node_by_name(&Lab::load(&lab.name)?, &node)?;
            println!("agent of {node} stopped");
            Ok(())
        }
        LabCmd::Start { lab, node } => {
            let pid = lab::start_node_by_name(&Lab::load(&lab.name)?, &node)?;
            println!("agent of {node} running (pid {pid})");
            Ok(())
        }
        LabCmd::Restart { lab, node } => {
            let lab = Lab::load(&lab.name)?;
            let pid = lab::restart_node(&lab, &node)?;
            println!("agent of {node} restarted (pid {pid})");
            Ok(())
        }
    }
}

fn print_summary(lab: &Lab) {
    let rows: Vec<Vec<String>> = lab
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            vec![
                n.name.clone(),
                n.netns.clone(),
                format!("{} ({})", n.underlay_ip, n.underlay_dev),
                match i {
                    _ if lab.managers == 0 => "-".into(),
                    0 => "manager (init)".into(),
                    _ if (i as u32) < lab.managers => "manager".into(),
                    _ => "worker".into(),
                },
                n.pid
                    .map(|p| format!("running (pid {p})"))
                    .unwrap_or_else(|| "stopped".into()),
            ]
        })
        .collect();
    print_table(&["NODE", "NETNS", "UNDERLAY", "SWARM ROLE", "AGENT"], &rows);
    println!();
    let rows: Vec<Vec<String>> = lab
        .endpoints
        .iter()
        .map(|e| {
            vec![
                e.name.clone(),
                e.netns.clone(),
                e.node.clone(),
                format!("{} (vni {})", e.network, e.vni),
                e.ip.to_string(),
                e.mac.clone(),
            ]
        })
        .collect();
    print_table(
        &["ENDPOINT", "NETNS", "NODE", "NETWORK", "IP", "MAC"],
        &rows,
    );
}
