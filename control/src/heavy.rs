//! Work proportional to the whole table (a programming pass's merge,
//! DNS rebuild and map writes; reading the gossip tables for it) run
//! without starving the async runtime.

/// Runs `f` letting the runtime move this worker's other tasks elsewhere
/// meanwhile: at Swarm2000's size a programming pass is about a second, and
/// the gossip task queued behind it answered no SWIM probe, so its peers
/// declared this node down. (A current-thread runtime, as in unit tests,
/// just runs it.)
pub fn heavy<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
