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
