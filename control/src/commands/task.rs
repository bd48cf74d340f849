//! `shoal exec TASK -- CMD` (a command inside a task's namespaces, on the
//! node that runs it, like `docker exec`) and `shoal inspect TASK` (the
//! task as JSON with Docker's field names, from a manager).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use crate::agent::tasks::process::{enter, TaskNs};
use crate::api::client::Client;
use crate::api::socket_path;
use crate::wire::{LocalTask, TaskInspect};

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Task id (or prefix), SERVICE.SLOT.ID or SERVICE.SLOT.
    task: String,
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[arg(long)]
    socket: Option<PathBuf>,
    #[arg(required = true)]
    tasks: Vec<String>,
}

fn find<'a>(tasks: &'a [LocalTask], key: &str) -> Option<&'a LocalTask> {
    tasks
        .iter()
        .find(|t| t.id == key || t.name == key)
        .or_else(|| {
            let live: Vec<_> = tasks
                .iter()
                .filter(|t| t.short_name == key && t.pid.is_some())
                .collect();
            (live.len() == 1).then(|| live[0])
        })
        .or_else(|| {
            let hits: Vec<_> = tasks.iter().filter(|t| t.id.starts_with(key)).collect();
            (hits.len() == 1 && !key.is_empty()).then(|| hits[0])
        })
}

pub fn exec(a: ExecArgs) -> anyhow::Result<()> {
    let client = Client::new(&socket_path(a.socket.as_deref()));
    let rt = super::runtime()?;
    let local: Vec<LocalTask> = rt.block_on(client.get("/v1/local/tasks"))?;
    let Some(t) = find(&local, &a.task) else {
        // Say where it runs, if this node can know (a manager).
        let v: anyhow::Result<TaskInspect> =
            rt.block_on(client.get(&format!("/v1/tasks/{}", a.task)));
        match v {
            Ok(v) => bail!(
                "task {} runs on node {}, not here: run `shoal exec` there",
                v.name,
                v.node.as_deref().unwrap_or("(none)")
            ),
            Err(_) => bail!("no task {} on this node", a.task),
        }
    };
    let pid = t
        .pid
        .with_context(|| format!("task {} is not running ({:?})", t.name, t.state))?;
    let ns = TaskNs::open(pid).with_context(|| format!("namespaces of task {}", t.name))?;
    let fds = ns.fds();
    let mut cmd = std::process::Command::new(&a.command[0]);
    cmd.args(&a.command[1..]);
    // SAFETY: only `enter` (raw setns) between fork and exec.
    unsafe {
        cmd.pre_exec(move || enter(&fds));
    }
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {:?}", a.command[0]))?;
    std::process::exit(status.code().unwrap_or(1));
}

pub fn inspect(a: InspectArgs) -> anyhow::Result<()> {
    let client = Client::new(&socket_path(a.socket.as_deref()));
    let rt = super::runtime()?;
    let mut out = vec![];
    for t in &a.tasks {
        let v: TaskInspect = rt.block_on(client.get(&format!("/v1/tasks/{t}")))?;
        out.push(v);
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
