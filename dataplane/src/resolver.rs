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
    // Dropped in this order: the attachment, then the object.
    _link: SchedClassifierLink,
    _ebpf: Ebpf,
}

/// Loads the program and attaches it to the egress of `lo` in the calling
/// thread's network namespace (run it inside the task's: `NetNs::run`).
pub fn attach_here() -> Result<PortMove, Error> {
    let mut ebpf =
        Ebpf::load(RESOLVER_OBJ).map_err(|e| Error::program("load resolver object", e))?;
    let p: &mut SchedClassifier = prog_mut(&mut ebpf, prog::DNS_LO)?;
    p.load()
        .map_err(|e| Error::program(format!("load {}", prog::DNS_LO), verifier(e)))?;
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
    Ok(PortMove {
        _link: link,
        _ebpf: ebpf,
    })
}
