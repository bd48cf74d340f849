//! `shoal stack deploy|ls|services|ps|rm`: Compose files as networks and
//! services, as `docker stack` does it: the CLI makes the specs
//! (`crate::stack`) and creates or updates each object through the
//! manager's API; a changed service goes through the rolling updater, an
//! unchanged one is left alone.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::service::views::{host_ports, print_services, print_tasks};
use crate::api::client::Client;
use crate::api::socket_path;
use crate::output::{print_rows, print_table, Format};
use crate::stack::compose::parse;
use crate::stack::convert::{convert, StackNetwork, NAMESPACE_LABEL};
use crate::wire::TaskInspect;
use crate::wire::{NetworkInspect, ServiceInspect, ServiceRow, ServiceSpec, SpecAt, StackRow};

#[derive(Args, Debug)]
pub struct StackArgs {
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: StackCmd,
}

#[derive(Subcommand, Debug)]
pub enum StackCmd {
    /// Deploy a new stack or update one from Compose files.
    Deploy {
        /// A Compose file (several merge, the later ones win).
        #[arg(short = 'c', long = "compose-file", required = true)]
        files: Vec<PathBuf>,
        /// Remove the stack's services that the files no longer have.
        #[arg(long)]
        prune: bool,
        name: String,
    },
    /// List stacks.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List a stack's services.
    Services {
        name: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List a stack's tasks.
    Ps {
        name: String,
        #[arg(long)]
        no_trunc: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Remove stacks: their services, then their networks.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Whether labels put an object in the stack (Docker's namespace label).
fn in_stack(labels: &BTreeMap<String, String>, stack: &str) -> bool {
    labels.get(NAMESPACE_LABEL).is_some_and(|n| n == stack)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("invalid stack name {name:?} (letters, digits, - and _)");
    }
    Ok(())
}

pub fn run(a: StackArgs) -> anyhow::Result<()> {
    let client = Client::new(&socket_path(a.socket.as_deref()));
    let rt = super::runtime()?;
    let services = |rt: &tokio::runtime::Runtime| -> anyhow::Result<Vec<ServiceRow>> {
        rt.block_on(client.get("/v1/services"))
    };
    match a.cmd {
        StackCmd::Deploy { files, prune, name } => {
            check_name(&name)?;
            let mut texts = vec![];
            for f in &files {
                let t = std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?;
                texts.push((f.display().to_string(), t));
            }
            let parsed = parse(&texts).map_err(|e| anyhow::anyhow!("{e}"))?;
            for w in &parsed.warnings {
                eprintln!("warning: {w}");
            }
            let stack = convert(&name, &parsed.file).map_err(|e| anyhow::anyhow!("{e}"))?;
            deploy(&rt, &client, &name, &stack, prune)?;
        }
        StackCmd::Ls { format } => {
            let mut count: BTreeMap<String, usize> = BTreeMap::new();
            for s in services(&rt)? {
                if let Some(n) = s.labels.get(NAMESPACE_LABEL) {
                    *count.entry(n.clone()).or_default() += 1;
                }
            }
            let rows: Vec<StackRow> = count
                .into_iter()
                .map(|(name, c)| StackRow {
                    name,
                    services: c.to_string(),
                    orchestrator: "Swarm".into(),
                })
                .collect();
            match format {
                Format::Json => print_rows(&rows)?,
                Format::Table => {
                    let rows: Vec<Vec<String>> =
                        rows.into_iter().map(|r| vec![r.name, r.services]).collect();
                    print_table(&["NAME", "SERVICES"], &rows);
                }
            }
        }
        StackCmd::Services { name, format } => {
            let rows: Vec<ServiceRow> = services(&rt)?
                .into_iter()
                .filter(|s| in_stack(&s.labels, &name))
                .collect();
            if rows.is_empty() {
                bail!("nothing found in stack: {name}");
            }
            print_services(&rows, format)?;
        }
        StackCmd::Ps {
            name,
            no_trunc,
            format,
        } => {
            let mut all = vec![];
            let mut ports = BTreeMap::new();
            for s in services(&rt)?.iter().filter(|s| in_stack(&s.labels, &name)) {
                let tasks: Vec<TaskInspect> =
                    rt.block_on(client.get(&format!("/v1/tasks?service={}", s.row.id)))?;
                all.extend(tasks);
                let inspect: ServiceInspect =
                    rt.block_on(client.get(&format!("/v1/services/{}", s.row.id)))?;
                ports.insert(s.row.id.clone(), host_ports(&inspect));
            }
            if all.is_empty() {
                bail!("nothing found in stack: {name}");
            }
            print_tasks(&all, &ports, no_trunc, format)?;
        }
        StackCmd::Rm { names } => {
            for name in names {
                remove(&rt, &client, &name)?;
            }
        }
    }
    Ok(())
}

fn deploy(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    name: &str,
    stack: &crate::stack::convert::Stack,
    prune: bool,
) -> anyhow::Result<()> {
    let nets: Vec<NetworkInspect> = rt.block_on(client.get("/v1/networks"))?;
    for n in &stack.networks {
        match n {
            StackNetwork::External(ext) => {
                if !nets.iter().any(|x| &x.name == ext) {
                    bail!("network {ext:?} is declared as external, but could not be found");
                }
            }
            StackNetwork::Own(spec) => match nets.iter().find(|x| x.name == spec.name) {
                Some(x) if in_stack(&x.labels, name) => {}
                Some(_) => bail!(
                    "network {} exists and is not part of stack {name}",
                    spec.name
                ),
                None => {
                    println!("Creating network {}", spec.name);
                    let _: NetworkInspect = rt.block_on(client.post("/v1/networks", spec))?;
                }
            },
        }
    }
    let existing: Vec<ServiceRow> = rt.block_on(client.get("/v1/services"))?;
    for spec in &stack.services {
        let Some(cur) = existing.iter().find(|s| s.row.name == spec.name) else {
            println!("Creating service {}", spec.name);
            let _: ServiceInspect = rt.block_on(client.post("/v1/services", spec))?;
            continue;
        };
        if !in_stack(&cur.labels, name) {
            bail!(
                "service {} exists and is not part of stack {name}",
                spec.name
            );
        }
        let at: SpecAt = rt.block_on(client.get(&format!("/v1/services/{}/spec", spec.name)))?;
        let old: ServiceSpec = at.spec.context("the manager sent no spec")?;
        let mut new = spec.clone();
        // `--force` counts are the cluster's, not the file's.
        new.force_update = old.force_update;
        if new == old {
            println!("Unchanged service {}", spec.name);
            continue;
        }
        println!("Updating service {}", spec.name);
        let _: ServiceInspect = rt.block_on(client.post(
            &format!("/v1/services/{}/update", spec.name),
            &SpecAt {
                version: at.version,
                spec: Some(new),
                rollback: false,
            },
        ))?;
    }
    if prune {
        for s in existing.iter().filter(|s| in_stack(&s.labels, name)) {
            let sname = &s.row.name;
            if !stack.services.iter().any(|x| &x.name == sname) {
                println!("Removing service {sname}");
                let _: String = rt.block_on(client.delete(&format!("/v1/services/{sname}")))?;
            }
        }
    }
    Ok(())
}

/// Services first; networks once their tasks are gone (the managers refuse
/// to remove a network tasks still use), for up to 30 s.
fn remove(rt: &tokio::runtime::Runtime, client: &Client, name: &str) -> anyhow::Result<()> {
    let services: Vec<ServiceRow> = rt.block_on(client.get("/v1/services"))?;
    let nets: Vec<NetworkInspect> = rt.block_on(client.get("/v1/networks"))?;
    let mine: Vec<&ServiceRow> = services
        .iter()
        .filter(|s| in_stack(&s.labels, name))
        .collect();
    let my_nets: Vec<&NetworkInspect> = nets.iter().filter(|n| in_stack(&n.labels, name)).collect();
    if mine.is_empty() && my_nets.is_empty() {
        bail!("nothing found in stack: {name}");
    }
    for s in mine {
        let sname = &s.row.name;
        println!("Removing service {sname}");
        let _: String = rt.block_on(client.delete(&format!("/v1/services/{sname}")))?;
    }
    for n in my_nets {
        let nname = &n.name;
        println!("Removing network {nname}");
        let t0 = Instant::now();
        loop {
            match rt.block_on(client.delete::<String>(&format!("/v1/networks/{nname}"))) {
                Ok(_) => break,
                // The stack's services are gone, but their tasks may still
                // be stopping and hold the network (a conflict): wait.
                Err(e)
                    if t0.elapsed() < Duration::from_secs(30)
                        && crate::wire::WireError::kind_of(e.as_ref())
                            == crate::wire::ErrorKind::Conflict =>
                {
                    std::thread::sleep(Duration::from_millis(300));
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
