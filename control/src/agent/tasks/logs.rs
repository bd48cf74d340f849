//! Local task logs: answering the leader's log asks (`service logs`) and
//! watching the files grow (timestamps for `-t`, rotation).

use tracing::info;

use super::logfile::{self, rotate, LOG_MAX_BYTES};
use super::Agent;
use crate::wire::{LogAsk, LogLines};

impl Agent {
    /// Reads the asked tails of local task logs for the next heartbeat.
    pub fn answer_log_asks(&self, asks: &[LogAsk]) {
        if asks.is_empty() {
            return;
        }
        let now = crate::clock::now_ms();
        let answers: Vec<LogLines> = asks
            .iter()
            .map(|a| {
                let log = self.data_dir.join("tasks").join(&a.task_id).join("log");
                logfile::answer(&log, a, now)
            })
            .collect();
        self.tasks
            .log_out
            .lock()
            .expect("logs lock")
            .extend(answers);
    }

    pub fn take_log_answers(&self) -> Vec<LogLines> {
        std::mem::take(&mut *self.tasks.log_out.lock().expect("logs lock"))
    }

    /// Notes the growth of every task log (the timestamps of `service
    /// logs -t`, see `logfile.rs`) and, every 25 passes (about 5 s),
    /// rotates the logs of running tasks that outgrew `LOG_MAX_BYTES`.
    pub(super) fn watch_logs(&self) {
        let n = self
            .tasks
            .passes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ids: Vec<(String, bool)> = self
            .tasks
            .tasks
            .lock()
            .expect("tasks lock")
            .values()
            .map(|l| (l.a.task.id.clone(), l.state.is_terminal()))
            .collect();
        let now = crate::clock::now_ms();
        let mut seen = self.tasks.log_seen.lock().expect("logs lock");
        seen.retain(|id, _| ids.iter().any(|(i, _)| i == id));
        for (id, ended) in ids {
            let log = self.data_dir.join("tasks").join(&id).join("log");
            let last = seen.get(&id).copied().unwrap_or(0);
            let mut len = logfile::observe(&log, last, now);
            if !ended && n.is_multiple_of(25) {
                if let Ok(true) = rotate(&log, LOG_MAX_BYTES) {
                    info!(task = %id, "task log rotated");
                    len = 0;
                }
            }
            seen.insert(id, len);
        }
    }
}
