//! Health checks of local tasks (`--health-cmd` and friends): when each is
//! due, and what a result does to the task (running, or stopped as
//! unhealthy for the orchestrator to replace).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;

use super::{begin_stop, process, Agent};
use crate::wire::TaskState;
use crate::wire::{HealthSpec, TaskHealth};

/// Health-check bookkeeping of one task.
#[derive(Default)]
pub(super) struct Health {
    pub(super) started: Option<Instant>,
    pub(super) next: Option<Instant>,
    pub(super) checking: bool,
    pub(super) failures: u64,
    pub(super) healthy: bool,
    /// Stopped for failing its checks: its exit is a failure.
    pub(super) unhealthy: bool,
}

impl Agent {
    /// Tasks whose next health check is due: (id, pid, check).
    pub(super) fn due_health_checks(&self) -> Vec<(String, u32, HealthSpec)> {
        let now = Instant::now();
        let mut tasks = self.tasks.tasks.lock().expect("tasks lock");
        let mut due = vec![];
        for l in tasks.values_mut() {
            let Some(h) = l.a.health.clone() else {
                continue;
            };
            let pid = l.child.as_ref().map(|c| c.id()).or(l.adopted);
            let live = matches!(l.state, TaskState::Starting | TaskState::Running);
            if let (Some(pid), true, None) = (pid, live, l.stop_deadline) {
                if !l.health.checking && l.health.next.is_some_and(|n| n <= now) {
                    l.health.checking = true;
                    due.push((l.a.task.id.clone(), pid, h));
                }
            }
        }
        due
    }

    /// Runs one health check (`sh -c CMD` in the task's namespaces, bounded
    /// by its timeout) and acts on the result: the first pass makes a
    /// starting task running; `retries` failures in a row (outside the start
    /// period) stop it as unhealthy, and the orchestrator replaces it.
    pub(super) async fn health_check(self: Arc<Self>, id: String, pid: u32, h: HealthSpec) {
        let ok =
            process::health_check(pid, &h.cmd, Duration::from_millis(h.timeout_ms.max(100))).await;
        let now = Instant::now();
        let mut gossip_health = None;
        self.set_task(&id, |l| {
            l.health.checking = false;
            l.health.next = Some(now + Duration::from_millis(h.interval_ms.max(100)));
            if ok {
                l.health.failures = 0;
                if !l.health.healthy {
                    gossip_health = Some(TaskHealth::Healthy);
                }
                l.health.healthy = true;
                if l.state == TaskState::Starting {
                    l.state = TaskState::Running;
                }
                return;
            }
            let in_start = !l.health.healthy
                && l.health.started.is_some_and(|s| now < s + Duration::from_millis(h.start_period_ms));
            if in_start {
                return;
            }
            l.health.failures += 1;
            if l.health.failures >= h.retries.max(1) {
                warn!(task = %l.a.task.name(), failures = l.health.failures, "task unhealthy; stopping it");
                l.health.unhealthy = true;
                gossip_health = Some(TaskHealth::Unhealthy);
                begin_stop(l);
            }
        });
        if let Some(h) = gossip_health {
            self.set_task_health(&id, h).await;
        }
    }
}

impl crate::agent::Agent {
    /// Sets the health in the service records of a task's endpoints and
    /// gossips it: DNS (and the load balancer) answer only healthy tasks.
    /// Returns the highest gossip version it published (None: nothing
    /// changed).
    pub async fn set_task_health(
        &self,
        task_id: &str,
        health: TaskHealth,
    ) -> Option<std::collections::BTreeMap<u32, u64>> {
        let mut inner = self.inner.lock().await;
        let mut changed = vec![];
        for ep in inner.state.endpoints.iter_mut() {
            if let Some(s) = ep.svc.as_mut().filter(|s| s.task_id == task_id) {
                if s.health != health {
                    s.health = health;
                    changed.push(ep.clone());
                }
            }
        }
        if changed.is_empty() {
            return None;
        }
        // Gossip carries the health now; the file only matters to a
        // restart, which re-runs the health check anyway.
        if let Err(e) = inner.store.save(&inner.state) {
            warn!(
                task = task_id,
                "cannot save the task's health locally: {e:#}"
            );
        }
        drop(inner);
        let mut versions = std::collections::BTreeMap::new();
        for ep in changed {
            let v = self
                .gossip
                .publish(ep.vni, ep.ip, &crate::agent::local_table::ep_record(&ep))
                .await;
            let e = versions.entry(ep.vni).or_insert(v);
            *e = (*e).max(v);
        }
        self.changed.notify_one();
        Some(versions)
    }
}
