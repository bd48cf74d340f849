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

/// The last `tail` lines of a log file (0: all of it).
pub fn tail_lines(path: &std::path::Path, tail: u64) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return vec![];
    };
    let lines: Vec<String> = text.lines().map(String::from).collect();
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
