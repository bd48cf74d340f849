//! `service logs` through the node sessions: each task's log stays on its
//! node (DATA_DIR/tasks/ID/log); a manager asks the leader, the leader hands
//! the ask to the node with its next heartbeat reply, the node sends the
//! lines with its next heartbeat, and the manager collects them. Workers
//! need no listener, and the path is the mutual-TLS session that already
//! exists. In memory on the leader only (`desk.rs`): a lost ask is simply
//! asked again.

use serde::{Deserialize, Serialize};

/// Where a reader of a task log stands: the log's rotation generation and
/// the byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCursor {
    pub gen: u64,
    pub offset: u64,
}

/// "Send task `task_id`'s lines from `from`, or its last `tail` lines
/// (0: all) without a cursor."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogAsk {
    #[serde(default)]
    pub id: u64,
    pub task_id: String,
    #[serde(default)]
    pub tail: u64,
    #[serde(default)]
    pub from: Option<LogCursor>,
    #[serde(default)]
    pub timestamps: bool,
}

/// A node's answer to one ask; `cursor` is where the next ask starts,
/// `more` says the answer was cut at its size limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLines {
    pub id: u64,
    pub task_id: String,
    pub lines: Vec<String>,
    #[serde(default)]
    pub cursor: LogCursor,
    #[serde(default)]
    pub more: bool,
}

impl super::desk::Numbered for LogAsk {
    fn set_id(&mut self, id: u64) {
        self.id = id;
    }
}

impl super::desk::Numbered for LogLines {
    fn set_id(&mut self, id: u64) {
        self.id = id;
    }
    fn id(&self) -> u64 {
        self.id
    }
}

/// Log asks waiting for their nodes, and the lines that came back.
pub type LogDesk = super::desk::Desk<LogAsk, LogLines>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_are_handed_out_once_and_answers_collected() {
        let d = LogDesk::default();
        let ask = |t: &str| LogAsk {
            id: 0,
            task_id: t.into(),
            tail: 5,
            from: None,
            timestamps: false,
        };
        let id = d.ask(vec![("n1".into(), ask("t1")), ("n2".into(), ask("t2"))]);
        assert_eq!(d.take_for("n1").len(), 1);
        assert!(d.take_for("n1").is_empty());
        d.answer(vec![LogLines {
            id,
            task_id: "t2".into(),
            lines: vec!["a".into()],
            cursor: LogCursor::default(),
            more: false,
        }]);
        assert_eq!(d.collect(id).len(), 1);
        assert!(d.collect(id).is_empty());
    }
}
