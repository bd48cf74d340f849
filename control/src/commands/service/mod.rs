//! `shoal service create|update|rollback|ls|ps|inspect|scale|logs|rm`,
//! with Docker's flags: `spec.rs` makes specs from flags, `update.rs` edits
//! them, `progress.rs` follows a service until it converges.

mod policy;
mod progress;
mod spec;
mod update;
pub mod views;

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::api::client::Client;
use crate::api::socket_path;
use crate::output::Format;
use crate::wire::{DesiredState, ModeView, ServiceInspect, ServiceRow, TaskInspect};
use spec::CreateArgs;
use update::UpdateArgs;

#[derive(Args, Debug)]
pub struct ServiceArgs {
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: ServiceCmd,
}

#[derive(Subcommand, Debug)]
pub enum ServiceCmd {
    /// Create a service: CMD runs as a task in its own namespaces.
    Create(Box<CreateArgs>),
    /// Change a service; its tasks are replaced by the update policy.
    Update(Box<UpdateArgs>),
    /// Return a service to its previous spec.
    Rollback {
        service: String,
        #[arg(short, long)]
        detach: bool,
    },
    /// List services.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List a service's tasks.
    Ps {
        service: String,
        #[arg(long)]
        no_trunc: bool,
        /// desired-state=running|shutdown|accepted
        #[arg(short, long)]
        filter: Vec<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show services in detail (Docker's JSON).
    Inspect {
        #[arg(required = true)]
        services: Vec<String>,
        #[arg(long)]
        pretty: bool,
    },
    /// Set replica counts: NAME=N ...
    Scale {
        #[arg(required = true)]
        scales: Vec<String>,
        #[arg(short, long)]
        detach: bool,
    },
    /// Show the output of a service's tasks (fetched from their nodes).
    Logs {
        service: String,
        /// Only the last N lines of each task ("all" or a number).
        #[arg(short = 'n', long, default_value = "all")]
        tail: String,
        /// Keep printing new lines (also of tasks that start later).
        #[arg(short, long)]
        follow: bool,
        /// Prefix each line with the time its node saw it.
        #[arg(short, long)]
        timestamps: bool,
    },
    /// Remove services.
    Rm {
        #[arg(required = true)]
        services: Vec<String>,
    },
}

pub fn run(a: ServiceArgs) -> anyhow::Result<()> {
    let client = Client::new(&socket_path(a.socket.as_deref()));
    let rt = super::runtime()?;
    match a.cmd {
        ServiceCmd::Create(c) => {
            let spec = spec::spec(&c)?;
            let v: ServiceInspect = rt.block_on(client.post("/v1/services", &spec))?;
            println!("{}", v.id);
            if !c.detach {
                progress::converge(&rt, &client, &c.name)?;
            }
        }
        ServiceCmd::Update(u) => {
            let at: crate::wire::SpecAt =
                rt.block_on(client.get(&format!("/v1/services/{}/spec", u.service)))?;
            let req = if u.rollback {
                crate::wire::SpecAt {
                    version: at.version,
                    spec: None,
                    rollback: true,
                }
            } else {
                let old = at.spec.context("the manager sent no spec")?;
                crate::wire::SpecAt {
                    version: at.version,
                    spec: Some(update::edit(&old, &u)?),
                    rollback: false,
                }
            };
            send_update(&rt, &client, &u.service, &req, at.version, u.detach)?;
        }
        ServiceCmd::Rollback { service, detach } => {
            let req = crate::wire::SpecAt {
                version: 0,
                spec: None,
                rollback: true,
            };
            send_update(&rt, &client, &service, &req, u64::MAX, detach)?;
        }
        ServiceCmd::Ls { format } => {
            let rows: Vec<ServiceRow> = rt.block_on(client.get("/v1/services"))?;
            views::print_services(&rows, format)?;
        }
        ServiceCmd::Ps {
            service,
            no_trunc,
            filter,
            format,
        } => {
            let mut desired = None;
            for f in &filter {
                // Docker's `accepted` is a desired state Shoal's tasks
                // skip: it lists them as running.
                desired = match f.split_once('=') {
                    Some(("desired-state", "running" | "accepted")) => Some(DesiredState::Running),
                    Some(("desired-state", "shutdown")) => Some(DesiredState::Shutdown),
                    _ => bail!("bad --filter {f:?} (desired-state=running|shutdown|accepted)"),
                }
            }
            let mut tasks: Vec<TaskInspect> =
                rt.block_on(client.get(&format!("/v1/tasks?service={service}")))?;
            tasks.retain(|t| desired.is_none_or(|d| t.desired_state == d));
            let s: ServiceInspect = rt.block_on(client.get(&format!("/v1/services/{service}")))?;
            let ports = [(s.id.clone(), views::host_ports(&s))].into();
            views::print_tasks(&tasks, &ports, no_trunc, format)?;
        }
        ServiceCmd::Inspect { services, pretty } => {
            let mut out = vec![];
            for s in services {
                let v: ServiceInspect = rt.block_on(client.get(&format!("/v1/services/{s}")))?;
                out.push(v);
            }
            if pretty {
                for v in &out {
                    let s = &v.spec;
                    println!("ID:\t\t{}", v.id);
                    println!("Name:\t\t{}", s.name);
                    match s.mode {
                        ModeView::Replicated { replicas } => {
                            println!("Service Mode:\tReplicated\n Replicas:\t{replicas}")
                        }
                        ModeView::Global {} => println!("Service Mode:\tGlobal"),
                    }
                    println!(
                        "Command:\t{}",
                        serde_json::to_string(&s.task_template.container_spec.command)?
                    );
                    for vip in &v.endpoint.virtual_ips {
                        println!("Virtual IP:\t{} ({})", vip.addr, vip.network_id);
                    }
                    println!("Endpoint Mode:\t{}", s.endpoint_spec.mode.as_str());
                }
            } else {
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
        }
        ServiceCmd::Scale { scales, detach } => {
            let mut parsed = vec![];
            for s in &scales {
                let (name, n) = s
                    .split_once('=')
                    .with_context(|| format!("bad scale {s:?} (want SERVICE=REPLICAS)"))?;
                let n: u64 = n.parse().map_err(|_| {
                    anyhow::anyhow!("invalid replicas value {n:?} for {name}: want a number >= 0")
                })?;
                parsed.push((name.to_string(), n));
            }
            for (name, n) in &parsed {
                let _: String = rt.block_on(client.post(
                    &format!("/v1/services/{name}/scale"),
                    &serde_json::json!({"replicas": n}),
                ))?;
                println!("{name} scaled to {n}");
            }
            if !detach {
                for (name, n) in &parsed {
                    if *n > 0 {
                        progress::converge(&rt, &client, name)?;
                    }
                }
            }
        }
        ServiceCmd::Logs {
            service,
            tail,
            follow,
            timestamps,
        } => {
            let tail: u64 = match tail.as_str() {
                "all" => 0,
                t => t
                    .parse()
                    .map_err(|_| anyhow::anyhow!("bad --tail {t:?} (a number or all)"))?,
            };
            progress::logs(&rt, &client, &service, tail, follow, timestamps)?;
        }
        ServiceCmd::Rm { services } => {
            for s in services {
                let name: String = rt.block_on(client.delete(&format!("/v1/services/{s}")))?;
                println!("{name}");
            }
        }
    }
    Ok(())
}

/// Sends an update and, unless detached, follows it to its end.
fn send_update(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    service: &str,
    req: &crate::wire::SpecAt,
    read_version: u64,
    detach: bool,
) -> anyhow::Result<()> {
    let v: ServiceInspect =
        rt.block_on(client.post(&format!("/v1/services/{service}/update"), req))?;
    let name = v.spec.name;
    println!("{name}");
    if v.version.index == read_version {
        // Unchanged: nothing to roll out.
        return Ok(());
    }
    if detach {
        return Ok(());
    }
    progress::follow_update(rt, client, &name, req.rollback)
}
