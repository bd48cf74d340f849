//! Asks that ride the node sessions: a manager files asks for some nodes
//! with the leader, each node gets its asks in its next heartbeat reply and
//! sends the answers with the heartbeat after, and the manager collects
//! them by the ask's id. `service logs` and `debug flows` use it; workers
//! need no listener. In memory on the leader only: a lost ask is simply
//! asked again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// An ask or an answer, by the id of the ask it belongs to.
pub trait Numbered {
    fn set_id(&mut self, id: u64);
    fn id(&self) -> u64 {
        0
    }
}

pub struct Desk<A, L> {
    next: AtomicU64,
    pending: Mutex<HashMap<String, Vec<A>>>,
    answers: Mutex<HashMap<u64, Vec<L>>>,
}

impl<A, L> Default for Desk<A, L> {
    fn default() -> Self {
        Self {
            next: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
            answers: Mutex::new(HashMap::new()),
        }
    }
}

impl<A: Numbered, L: Numbered> Desk<A, L> {
    /// Files (node, ask) pairs under one new id; returns the id.
    pub fn ask(&self, asks: Vec<(String, A)>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut p = self.pending.lock().expect("desk lock");
        for (node, mut ask) in asks {
            ask.set_id(id);
            p.entry(node).or_default().push(ask);
        }
        id
    }

    /// The asks for `node`, handed out once.
    pub fn take_for(&self, node: &str) -> Vec<A> {
        self.pending
            .lock()
            .expect("desk lock")
            .remove(node)
            .unwrap_or_default()
    }

    pub fn answer(&self, answers: Vec<L>) {
        let mut a = self.answers.lock().expect("desk lock");
        for l in answers {
            a.entry(l.id()).or_default().push(l);
        }
    }

    /// What has arrived for ask `id` so far (taken).
    pub fn collect(&self, id: u64) -> Vec<L> {
        self.answers
            .lock()
            .expect("desk lock")
            .remove(&id)
            .unwrap_or_default()
    }
}

use crate::wire::{FlowAnswer, FlowAsk, LogAsk, LogLines};

impl Numbered for FlowAsk {
    fn set_id(&mut self, id: u64) {
        self.id = id;
    }
}

impl Numbered for FlowAnswer {
    fn set_id(&mut self, id: u64) {
        self.id = id;
    }
    fn id(&self) -> u64 {
        self.id
    }
}

/// The flow asks waiting for their nodes, and the answers.
pub type FlowDesk = Desk<FlowAsk, FlowAnswer>;

impl Numbered for LogAsk {
    fn set_id(&mut self, id: u64) {
        self.id = id;
    }
}

impl Numbered for LogLines {
    fn set_id(&mut self, id: u64) {
        self.id = id;
    }
    fn id(&self) -> u64 {
        self.id
    }
}

/// Log asks waiting for their nodes, and the lines that came back.
pub type LogDesk = Desk<LogAsk, LogLines>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::LogCursor;

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
