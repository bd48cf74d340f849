//! The node DNS server's port, moved out of a task's way
//! (`ebpf/c/resolver.bpf.c`): the server listens on 127.0.0.11:
//! [`RESOLVER_PORT`] inside the task's namespace and a small program on the
//! task's loopback turns port 53 into that port and back, so the task may
//! bind port 53 itself (Docker does it with NAT rules per container).

use aya::programs::tc::{self, SchedClassifierLink, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use aya::Ebpf;
pub use shoal_ebpf::RESOLVER_PORT;
use shoal_ebpf::{prog, RESOLVER_OBJ};

use crate::overlay::{prog_mut, tcx_supported, verifier};
use crate::Error;

/// The program on one namespace's loopback: dropping this detaches it.
pub struct PortMove {
    _link: SchedClassifierLink,
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
    let id = if tcx_supported() {
        p.attach_with_options(
            "lo",
            TcAttachType::Egress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
    } else {
        // Kernels before 6.6: a clsact filter (the qdisc may be there).
        let _ = tc::qdisc_add_clsact("lo");
        p.attach("lo", TcAttachType::Egress)
    }
    .map_err(|e| Error::program("attach the resolver program to lo", e))?;
    let link = p
        .take_link(id)
        .map_err(|e| Error::program("take the resolver link", e))?;
    Ok(PortMove { _link: link })
}
