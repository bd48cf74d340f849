//! Counters by kind of query and outcome (lock-free: the hot path bumps
//! them), and their snapshot for `shoal debug dns` and metrics.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident: $doc:literal),* $(,)?) => {
        #[derive(Default)]
        pub(crate) struct Counters { $(pub(crate) $name: AtomicU64,)* }

        /// A snapshot of the server's counters.
        #[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub struct Stats { $(#[doc = $doc] pub $name: u64,)* }

        impl Counters {
            pub(crate) fn snapshot(&self) -> Stats {
                Stats { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    udp_queries: "Queries received over UDP.",
    tcp_queries: "Queries received over TCP.",
    local_answers: "Answered from the cluster's records (addresses or PTR).",
    nodata: "Names of the cluster asked for a type they do not have (NOERROR, no answer).",
    forwarded: "Sent to an upstream resolver.",
    forward_failed: "Every upstream failed: SERVFAIL.",
    no_upstream: "Nothing to forward to: SERVFAIL.",
    refused_overload: "Forwards refused because too many were in flight.",
    refused_class: "Classes other than IN: REFUSED.",
    formerr: "Malformed queries answered FORMERR.",
    notimp: "Opcodes other than QUERY answered NOTIMP.",
    dropped: "Datagrams too short to answer, or responses sent to us.",
    truncated: "Answers truncated (TC) to fit the client's UDP size.",
}

impl Counters {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Upper bounds of the answer-time buckets, seconds.
pub const LATENCY_BOUNDS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.0,
];

/// Answer times, bucketed without locks (the hot path observes them).
#[derive(Default)]
pub(crate) struct Latency {
    buckets: [AtomicU64; LATENCY_BOUNDS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Latency {
    pub(crate) fn observe(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = LATENCY_BOUNDS.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LatencyStats {
        LatencyStats {
            bounds: LATENCY_BOUNDS.to_vec(),
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// A snapshot of answer times: per bucket (not cumulative) the answers at
/// most that long; those slower than the last bound count only in `count`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencyStats {
    pub bounds: Vec<f64>,
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn latency_lands_in_its_bucket_and_the_slow_ones_only_in_the_count() {
        let l = Latency::default();
        l.observe(Duration::from_micros(30));
        l.observe(Duration::from_millis(3));
        l.observe(Duration::from_secs(5));
        let s = l.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[6], 1, "3 ms is in the 5 ms bucket");
        assert_eq!(s.buckets.iter().sum::<u64>(), 2);
        assert!((s.sum_seconds - 5.00303).abs() < 1e-6);
    }
}
