//! The node DNS server's port, moved out of a task's way
//! (`ebpf/c/resolver.bpf.c`): the server listens on 127.0.0.11:
//! [`RESOLVER_PORT`] inside the task's namespace and a small program on the
//! task's loopback turns port 53 into that port and back, so the task may
//! bind port 53 itself (Docker does it with NAT rules per container).

use aya::programs::tc::SchedClassifierLink;
use aya::programs::{SchedClassifier, TcAttachType};
use aya::Ebpf;
pub use shoal_ebpf::RESOLVER_PORT;
use shoal_ebpf::{prog, RESOLVER_OBJ};

use crate::overlay::{filter, prog_mut, verifier};
use crate::Error;

/// The program on one namespace's loopback, in Shoal's filter slot (a
/// TCX link would cost each task and container an RCU grace period:
/// `overlay::filter`): dropping this removes it.
pub struct PortMove {
    link: Option<SchedClassifierLink>,
    /// The filter is named by interface index, which means something only
    /// inside its namespace: it is removed from there.
    netns: Option<std::fs::File>,
}

impl Drop for PortMove {
    fn drop(&mut self) {
        let (Some(link), Some(ns)) = (self.link.take(), self.netns.take()) else {
            return;
        };
        let _ = std::thread::spawn(move || {
            use std::os::fd::AsFd;
            match nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET) {
                Ok(()) => drop(link),
                // Never remove the filter of another namespace's lo.
                Err(_) => std::mem::forget(link),
            }
        })
        .join();
    }
}

/// The program, loaded (and verified) once per process: every namespace
/// attaches the same one, so a new task or container pays only the attach.
static LOADED: std::sync::Mutex<Option<Ebpf>> = std::sync::Mutex::new(None);

/// Attaches the program to the egress of `lo` in the calling thread's
/// network namespace (run it inside the task's: `NetNs::run`).
pub fn attach_here() -> Result<PortMove, Error> {
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if loaded.is_none() {
        let mut ebpf =
            Ebpf::load(RESOLVER_OBJ).map_err(|e| Error::program("load resolver object", e))?;
        let p: &mut SchedClassifier = prog_mut(&mut ebpf, prog::DNS_LO)?;
        p.load()
            .map_err(|e| Error::program(format!("load {}", prog::DNS_LO), verifier(e)))?;
        *loaded = Some(ebpf);
    }
    let ebpf = loaded.as_mut().expect("loaded above");
    let p: &mut SchedClassifier = prog_mut(ebpf, prog::DNS_LO)?;
    let id = filter::attach(p, "lo", TcAttachType::Egress)?;
    let link = p
        .take_link(id)
        .map_err(|e| Error::program("take the resolver link", e))?;
    let netns = std::fs::File::open("/proc/thread-self/ns/net")
        .map_err(|e| Error::io("this thread's network namespace".into(), e))?;
    Ok(PortMove {
        link: Some(link),
        netns: Some(netns),
    })
}
