//! The node's task runner: it runs what the leader assigns (each session
//! heartbeat brings the assignments), reports what happened (each heartbeat
//! carries the reports), and cleans up after its tasks.
//!
//! A task: its network namespace (`PREFIX` + 12 id characters) with one
//! endpoint per network (eth0, eth1, ...; the agent's endpoint machinery,
//! so gossip spreads them and the dataplane programs them), its process
//! (`process.rs`), its directory `DATA_DIR/tasks/ID/` (hosts, resolv.conf,
//! log). A node joins a network (defines it locally) when its first task on
//! it starts and leaves it when the last one is gone (lazy join).
//! States move assigned -> accepted -> preparing -> running -> complete |
//! failed | shutdown | rejected; a stop is SIGTERM to the process group,
//! SIGKILL after the service's stop grace period.

mod drain;
mod health;
pub mod logfile;
mod logs;
pub mod process;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use shoal_dataplane::netns::NetNs;
use tracing::{info, warn};

use super::Agent;
use crate::wire::LocalTask;
use crate::wire::LogLines;
use crate::wire::SvcRecord;
use crate::wire::{Assignment, DesiredState, TaskReport, TaskState};
use crate::wire::{EndpointCreate, NetworkCreate};
use drain::begin_stop;
use health::Health;

/// How often the runner looks at its processes.
const POLL: Duration = Duration::from_millis(200);

struct Local {
    a: Assignment,
    state: TaskState,
    err: Option<String>,
    exit_code: Option<i32>,
    child: Option<std::process::Child>,
    /// A process adopted from an earlier run of the agent (not our child).
    adopted: Option<u32>,
    /// A start or a cleanup is running for it.
    busy: bool,
    stop_deadline: Option<Instant>,
    /// Until SIGTERM goes out (`drain.rs`).
    drain: Option<drain::Drain>,
    /// "stopping" was gossiped.
    stop_announced: bool,
    cleaned: bool,
    health: Health,
}

#[derive(Default)]
pub struct Runner {
    tasks: Mutex<BTreeMap<String, Local>>,
    /// Log lines to send with the next heartbeat.
    log_out: Mutex<Vec<LogLines>>,
    /// Each task log's length when last looked at.
    log_seen: Mutex<std::collections::HashMap<String, u64>>,
    /// Passes of the tasks loop (log rotation runs every 25th).
    passes: std::sync::atomic::AtomicU64,
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl Agent {
    fn task_netns(&self, id: &str) -> String {
        format!("{}{}", self.task_netns_prefix, short(id))
    }

    /// This node's tasks, for `shoal exec` and `shoal ps`-like views.
    pub fn local_tasks(&self) -> Vec<LocalTask> {
        let tasks = self.tasks.tasks.lock().expect("tasks lock");
        tasks
            .values()
            .map(|l| LocalTask {
                id: l.a.task.id.clone(),
                name: l.a.task.name(),
                short_name: l.a.task.short_name(),
                state: l.state,
                pid: l.child.as_ref().map(|c| c.id()).or(l.adopted),
                netns: self.task_netns(&l.a.task.id),
            })
            .collect()
    }

    /// What the runner reports with the next heartbeat.
    pub fn task_reports(&self) -> Vec<TaskReport> {
        let tasks = self.tasks.tasks.lock().expect("tasks lock");
        tasks
            .values()
            .map(|l| TaskReport {
                id: l.a.task.id.clone(),
                state: l.state,
                err: l.err.clone(),
                exit_code: l.exit_code,
            })
            .collect()
    }

    /// The networks of the tasks this node runs or is starting, with the
    /// node's balancer address on each (IPVS balancing).
    /// The balancing endpoints (IPVS) this node needs: on the networks of
    /// its tasks, and of its attached containers (`attached`).
    pub fn lb_wanted(&self, attached: &[crate::wire::Endpoint]) -> crate::agent::lb::ipvs::Wanted {
        let tasks = self.tasks.tasks.lock().expect("tasks lock");
        tasks
            .values()
            .filter(|l| !l.cleaned)
            .flat_map(|l| l.a.networks.iter())
            .filter_map(|n| Some((n.name.clone(), (n.lb_addr?, n.subnet.prefix_len()))))
            .chain(attached.iter().filter_map(|e| {
                let lb = e.container.as_ref()?.lb_addr?;
                Some((e.network.clone(), (lb, e.prefix_len)))
            }))
            .collect()
    }

    /// Ports published in host mode by the tasks running here: each
    /// straight to its task's address on the network its default route
    /// uses (the ingress network if it is on it, else its first): a UDP
    /// socket bound to 0.0.0.0 answers from that address.
    pub fn host_published(
        &self,
        ingress: Option<&str>,
    ) -> std::collections::BTreeSet<shoal_dataplane::lb::MeshPort> {
        let tasks = self.tasks.tasks.lock().expect("tasks lock");
        tasks
            .values()
            .filter(|l| l.state == TaskState::Running && !l.cleaned)
            .filter_map(|l| {
                let by_ingress =
                    l.a.networks
                        .iter()
                        .find(|n| Some(n.name.as_str()) == ingress);
                Some((l, by_ingress.or(l.a.networks.first())?))
            })
            .flat_map(|(l, n)| {
                l.a.host_ports
                    .iter()
                    .map(|p| shoal_dataplane::lb::MeshPort {
                        proto: crate::agent::mesh::proto(p.protocol),
                        published: p.published,
                        addr: n.addr,
                        target: p.target,
                        host: true,
                        vni: n.vni,
                    })
            })
            .collect()
    }

    /// Brings local tasks in line with the leader's assignments.
    pub fn reconcile_tasks(self: &Arc<Self>, assignments: Vec<Assignment>) {
        let mut tasks = self.tasks.tasks.lock().expect("tasks lock");
        let assigned: std::collections::BTreeSet<String> =
            assignments.iter().map(|a| a.task.id.clone()).collect();
        for a in assignments {
            let id = a.task.id.clone();
            // A task still running from before an agent restart: adopt it.
            if !tasks.contains_key(&id) {
                if let Some(pid) = self.task_pid(&id) {
                    let mut l = Local {
                        a: a.clone(),
                        state: TaskState::Running,
                        err: None,
                        exit_code: None,
                        child: None,
                        adopted: Some(pid),
                        busy: false,
                        stop_deadline: None,
                        drain: None,
                        stop_announced: false,
                        cleaned: false,
                        health: Health::default(),
                    };
                    if a.task.desired == DesiredState::Shutdown {
                        begin_stop(&mut l);
                    }
                    info!(task = %a.task.name(), pid, "task adopted");
                    let ns = NetNs::path_of(&self.task_netns(&id));
                    if let Err(e) = self.dns.attach(&id, &ns) {
                        warn!(task = %a.task.name(), "resolver not restored: {e:#}");
                    }
                    tasks.insert(id.clone(), l);
                    continue;
                }
            }
            match tasks.get_mut(&id) {
                None if a.task.desired == DesiredState::Running && !a.task.state.is_terminal() => {
                    tasks.insert(
                        id.clone(),
                        Local {
                            a: a.clone(),
                            state: TaskState::Accepted,
                            err: None,
                            exit_code: None,
                            child: None,
                            adopted: None,
                            busy: true,
                            stop_deadline: None,
                            drain: None,
                            stop_announced: false,
                            cleaned: false,
                            health: Health::default(),
                        },
                    );
                    let agent = self.clone();
                    tokio::spawn(async move { agent.start_task(a).await });
                }
                None => {
                    // Asked to stop a task this node does not run (any
                    // more): clean up whatever an earlier run left.
                    tasks.insert(
                        id,
                        Local {
                            a,
                            state: TaskState::Shutdown,
                            err: None,
                            exit_code: None,
                            child: None,
                            adopted: None,
                            busy: false,
                            stop_deadline: None,
                            drain: None,
                            stop_announced: false,
                            cleaned: false,
                            health: Health::default(),
                        },
                    );
                }
                Some(l) => {
                    l.a.task.desired = a.task.desired;
                    if a.task.desired == DesiredState::Shutdown {
                        begin_stop(l);
                    }
                }
            }
        }
        // Tasks the leader no longer mentions: stop them; forget the
        // finished ones.
        tasks.retain(|id, l| {
            if assigned.contains(id) {
                return true;
            }
            begin_stop(l);
            !(l.state.is_terminal() && l.cleaned)
        });
    }

    /// Watches processes: exits, stop deadlines, cleanups.
    pub async fn tasks_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(POLL).await;
            let mut cleanups = vec![];
            let mut stopping = vec![];
            let draining = {
                let tasks = self.tasks.tasks.lock().expect("tasks lock");
                tasks.values().any(|l| l.drain.is_some())
            };
            let peers = match draining {
                true => self.gossip.acks().await,
                false => vec![],
            };
            {
                let mut tasks = self.tasks.tasks.lock().expect("tasks lock");
                for l in tasks.values_mut() {
                    drain::signal_term(l, Instant::now(), &peers);
                    if l.stop_deadline.is_some() && !l.stop_announced {
                        l.stop_announced = true;
                        stopping.push(l.a.task.id.clone());
                    }
                    if let Some(child) = l.child.as_mut() {
                        match child.try_wait() {
                            Ok(Some(status)) => {
                                let code = status.code();
                                l.exit_code = code.or(status.signal().map(|s| 128 + s));
                                l.state = if l.health.unhealthy {
                                    l.err = Some(format!(
                                        "task: unhealthy ({} failed health checks)",
                                        l.health.failures
                                    ));
                                    TaskState::Failed
                                } else if l.stop_deadline.is_some() {
                                    TaskState::Shutdown
                                } else if code == Some(0) {
                                    TaskState::Complete
                                } else {
                                    l.err = Some(match code {
                                        Some(c) => format!("task: non-zero exit ({c})"),
                                        None => format!(
                                            "task: killed by signal {}",
                                            status.signal().unwrap_or(0)
                                        ),
                                    });
                                    TaskState::Failed
                                };
                                l.child = None;
                                info!(task = %l.a.task.name(), state = ?l.state, "task ended");
                            }
                            Ok(None) => {
                                if l.stop_deadline.is_some_and(|d| Instant::now() > d) {
                                    process::signal(child.id(), Signal::SIGKILL);
                                }
                            }
                            Err(e) => warn!("task wait: {e}"),
                        }
                    }
                    if let Some(pid) = l.adopted {
                        if !alive(pid) {
                            l.adopted = None;
                            l.state = if l.stop_deadline.is_some() {
                                TaskState::Shutdown
                            } else {
                                l.err = Some(
                                    "task ended while the agent was away (exit status unknown)"
                                        .into(),
                                );
                                TaskState::Failed
                            };
                        } else if l.stop_deadline.is_some_and(|d| Instant::now() > d) {
                            process::signal(pid, Signal::SIGKILL);
                        }
                    }
                    if l.state.is_terminal() && !l.cleaned && !l.busy {
                        l.busy = true;
                        cleanups.push(l.a.clone());
                    }
                }
            }
            for id in stopping {
                let agent = self.clone();
                tokio::spawn(async move {
                    let v = agent
                        .set_task_health(&id, crate::wire::TaskHealth::Stopping)
                        .await;
                    agent.set_task(&id, |l| {
                        if let Some(d) = l.drain.as_mut() {
                            d.version = Some(v.unwrap_or_default());
                        }
                    });
                });
            }
            self.watch_logs();
            let due = self.due_health_checks();
            for (id, pid, spec) in due {
                let agent = self.clone();
                tokio::spawn(async move { agent.health_check(id, pid, spec).await });
            }
            for a in cleanups {
                let agent = self.clone();
                tokio::spawn(async move { agent.cleanup_task(&a).await });
            }
        }
    }

    fn set_task(&self, id: &str, f: impl FnOnce(&mut Local)) {
        if let Some(l) = self.tasks.tasks.lock().expect("tasks lock").get_mut(id) {
            f(l);
        }
    }

    /// The pid an earlier run recorded for a task, if that process lives.
    fn task_pid(&self, id: &str) -> Option<u32> {
        let p = self.data_dir.join("tasks").join(id).join("pid");
        let pid: u32 = std::fs::read_to_string(p).ok()?.trim().parse().ok()?;
        alive(pid).then_some(pid)
    }

    async fn start_task(self: Arc<Self>, a: Assignment) {
        let id = a.task.id.clone();
        self.set_task(&id, |l| l.state = TaskState::Preparing);
        match self.prepare_and_spawn(&a).await {
            Ok(child) => {
                info!(task = %a.task.name(), pid = child.id(), "task running");
                let stop = self
                    .tasks
                    .tasks
                    .lock()
                    .expect("tasks lock")
                    .get(&id)
                    .is_some_and(|l| l.a.task.desired == DesiredState::Shutdown);
                let checked = a.health.clone();
                self.set_task(&id, |l| {
                    l.child = Some(child);
                    // With a health check, a task is only running once a
                    // check passed (it never counts as running before).
                    l.state = match &checked {
                        Some(h) => {
                            let now = Instant::now();
                            l.health.started = Some(now);
                            l.health.next =
                                Some(now + Duration::from_millis(h.interval_ms.max(100)));
                            TaskState::Starting
                        }
                        None => TaskState::Running,
                    };
                    l.busy = false;
                    if stop {
                        begin_stop(l);
                    }
                });
            }
            Err(e) => {
                warn!(task = %a.task.name(), "task rejected: {e:#}");
                self.set_task(&id, |l| {
                    l.state = TaskState::Rejected;
                    l.err = Some(format!("{e:#}"));
                    l.busy = false;
                });
            }
        }
    }

    async fn prepare_and_spawn(&self, a: &Assignment) -> Result<std::process::Child> {
        let t = &a.task;
        // Lazy join: define the task's networks on this node.
        for n in &a.networks {
            self.join_network(NetworkCreate {
                name: n.name.clone(),
                vni: n.vni,
                subnet: n.subnet.to_string(),
                gateway: Some(n.gateway),
                encrypted: n.encrypted,
            })
            .await
            .with_context(|| format!("joining network {}", n.name))?;
        }
        let ns_name = self.task_netns(&t.id);
        // Leftovers of an earlier start (an agent restart) go first.
        self.remove_task_endpoints(a).await;
        if NetNs::exists(&ns_name) {
            let _ = NetNs::delete(&ns_name);
        }
        NetNs::create(&ns_name)?;
        let ns_path = NetNs::path_of(&ns_name);
        // A task on the ingress network (a service with published ports)
        // routes by it: the routing mesh brings clients from outside every
        // subnet, and replies (UDP ones from sockets bound to 0.0.0.0 too)
        // must leave by it.
        let ingress = self.ingress_name().await;
        let by_ingress = a.networks.iter().any(|n| Some(&n.name) == ingress.as_ref());
        for (i, n) in a.networks.iter().enumerate() {
            let default_route = if by_ingress {
                Some(&n.name) == ingress.as_ref()
            } else {
                i == 0
            };
            self.create_endpoint(EndpointCreate {
                default_route: Some(default_route),
                network: n.name.clone(),
                ip: format!("{}/{}", n.addr, n.subnet.prefix_len()),
                mac: None,
                netns: Some(ns_path.to_string_lossy().into_owned()),
                name: Some(format!("t{}-{i}", short(&t.id))),
                ifname: Some(format!("eth{i}")),
                svc: Some(SvcRecord {
                    service_id: t.service_id.clone(),
                    service: t.service_name.clone(),
                    task_id: t.id.clone(),
                    task: t.name(),
                    slot: t.slot,
                    network: n.name.clone(),
                    vip: n.vip,
                    aliases: n.aliases.clone(),
                    health: if a.health.is_some() {
                        crate::wire::TaskHealth::Starting
                    } else {
                        crate::wire::TaskHealth::None
                    },
                }),
                ..Default::default()
            })
            .await
            .with_context(|| format!("endpoint on {}", n.name))?;
        }
        // The resolver answers before the task's first query.
        self.dns
            .attach(&t.id, &ns_path)
            .context("the task's resolver at 127.0.0.11")?;
        let dir = self.data_dir.join("tasks").join(&t.id);
        let hostname = short(&t.id).to_string();
        let addrs: Vec<_> = a.networks.iter().map(|n| n.addr).collect();
        process::write_files(&dir, &hostname, &addrs)?;
        let mut env: Vec<(String, String)> = vec![
            ("SHOAL_TASK_ID".into(), t.id.clone()),
            ("SHOAL_TASK_NAME".into(), t.name()),
            ("SHOAL_TASK_SLOT".into(), t.slot.to_string()),
            ("SHOAL_SERVICE_NAME".into(), t.service_name.clone()),
            ("SHOAL_NODE".into(), self.info.node.clone()),
        ];
        for kv in &a.env {
            if let Some((k, v)) = kv.split_once('=') {
                env.push((k.into(), v.into()));
            }
        }
        let child = tokio::task::block_in_place(|| {
            process::spawn(&process::Launch {
                argv: a.command.clone(),
                env,
                workdir: a.workdir.clone(),
                netns: ns_path.clone(),
                hostname,
                dir: dir.clone(),
            })
        })?;
        std::fs::write(dir.join("pid"), child.id().to_string())?;
        Ok(child)
    }

    async fn remove_task_endpoints(&self, a: &Assignment) {
        for i in 0..a.networks.len().max(1) {
            let _ = self
                .remove_endpoint(&format!("t{}-{i}", short(&a.task.id)))
                .await;
        }
    }

    /// Endpoints, namespace; networks no endpoint uses any more.
    async fn cleanup_task(self: Arc<Self>, a: &Assignment) {
        self.dns.detach(&a.task.id);
        self.remove_task_endpoints(a).await;
        let ns = self.task_netns(&a.task.id);
        if NetNs::exists(&ns) {
            if let Err(e) = NetNs::delete(&ns) {
                warn!("task namespace {ns}: {e}");
            }
        }
        let nets: Vec<String> = a.networks.iter().map(|n| n.name.clone()).collect();
        self.leave_unused_networks(&nets).await;
        let _ = std::fs::remove_file(self.data_dir.join("tasks").join(&a.task.id).join("pid"));
        self.set_task(&a.task.id, |l| {
            l.cleaned = true;
            l.busy = false;
        });
    }
}

fn alive(pid: u32) -> bool {
    // A zombie would count as alive; ours are reaped by try_wait, adopted
    // ones by init.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}
