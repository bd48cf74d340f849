//! `service logs` through the node sessions: each task's log stays on its
//! node (DATA_DIR/tasks/ID/log); a manager asks the leader, the leader hands
//! the ask to the node with its next heartbeat reply, the node sends the
//! lines with its next heartbeat, and the manager collects them. Workers
//! need no listener, and the path is the mutual-TLS session that already
//! exists. In memory on the leader only: a lost ask is simply asked again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// "Send the last `tail` lines of task `task_id`" (0: all).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogAsk {
    pub id: u64,
    pub task_id: String,
    pub tail: u64,
}

/// A node's answer to one ask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLines {
    pub id: u64,
    pub task_id: String,
    pub lines: Vec<String>,
}

#[derive(Default)]
pub struct LogDesk {
    next: AtomicU64,
    pending: Mutex<HashMap<String, Vec<LogAsk>>>,
    answers: Mutex<HashMap<u64, Vec<LogLines>>>,
}

impl LogDesk {
    /// Files one ask per (node, task); returns the ask's id.
    pub fn ask(&self, tasks: &[(String, String)], tail: u64) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut p = self.pending.lock().expect("logs lock");
        for (node, task) in tasks {
            p.entry(node.clone()).or_default().push(LogAsk {
                id,
                task_id: task.clone(),
                tail,
            });
        }
        id
    }

    /// The asks for `node`, handed out once.
    pub fn take_for(&self, node: &str) -> Vec<LogAsk> {
        self.pending
            .lock()
            .expect("logs lock")
            .remove(node)
            .unwrap_or_default()
    }

    pub fn answer(&self, lines: Vec<LogLines>) {
        let mut a = self.answers.lock().expect("logs lock");
        for l in lines {
            a.entry(l.id).or_default().push(l);
        }
    }

    /// What has arrived for ask `id` so far (taken).
    pub fn collect(&self, id: u64) -> Vec<LogLines> {
        self.answers
            .lock()
            .expect("logs lock")
            .remove(&id)
            .unwrap_or_default()
    }
}

/// A task log is rotated past this size: `log` is copied to `log.1` and
/// truncated in place (the task writes with O_APPEND, so it carries on at
/// the new end: logrotate's copytruncate). At most twice this on disk.
pub const LOG_MAX_BYTES: u64 = 10 << 20;

/// Rotates `log` if it outgrew `max` bytes; true if it did.
pub fn rotate(log: &std::path::Path, max: u64) -> std::io::Result<bool> {
    if std::fs::metadata(log)?.len() <= max {
        return Ok(false);
    }
    std::fs::copy(log, log.with_extension("1"))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(log)?
        .set_len(0)?;
    Ok(true)
}

/// The last `tail` lines of a task's log, its rotated part included
/// (0: all of it).
pub fn tail_lines(path: &std::path::Path, tail: u64) -> Vec<String> {
    let old = std::fs::read_to_string(path.with_extension("1")).unwrap_or_default();
    let Ok(new) = std::fs::read_to_string(path) else {
        return vec![];
    };
    let lines: Vec<String> = old.lines().chain(new.lines()).map(String::from).collect();
    let skip = if tail == 0 {
        0
    } else {
        lines.len().saturating_sub(tail as usize)
    };
    lines[skip..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_rotate_by_copytruncate_and_tails_span_both_parts() {
        let dir = std::env::temp_dir().join(format!("shoal-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        std::fs::write(&log, "a\nb\nc\n").unwrap();
        assert!(!rotate(&log, 100).unwrap());
        assert!(rotate(&log, 3).unwrap());
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        std::fs::write(&log, "d\n").unwrap();
        assert_eq!(tail_lines(&log, 2), vec!["c", "d"]);
        assert_eq!(tail_lines(&log, 0).len(), 4);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn asks_are_handed_out_once_and_answers_collected() {
        let d = LogDesk::default();
        let id = d.ask(&[("n1".into(), "t1".into()), ("n2".into(), "t2".into())], 5);
        assert_eq!(d.take_for("n1").len(), 1);
        assert!(d.take_for("n1").is_empty());
        d.answer(vec![LogLines {
            id,
            task_id: "t2".into(),
            lines: vec!["a".into()],
        }]);
        assert_eq!(d.collect(id).len(), 1);
        assert!(d.collect(id).is_empty());
    }
}
