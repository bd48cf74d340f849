//! Programs attached as clsact filters (cls_bpf, direct action) in a slot
//! of Shoal's own: those on a container's start path, the endpoint's veth
//! and the resolver on a namespace's loopback.
//!
//! Why not TCX links, as the underlay has: a TCX attach waits for a normal
//! RCU grace period (the kernel's `tcx_entry_sync`), 5-30 ms on the
//! machines measured and most of a CNI ADD (docs/containers.md has the
//! experiment); a filter added over netlink does not wait. The fixed slot
//! lets a restarted daemon swap the program in place, never leaving the
//! interface without one, as a pinned TCX link does. The filter lives as
//! long as the interface.

use aya::programs::tc::{
    self, NlOptions, SchedClassifierLink, SchedClassifierLinkId, TcAttachOptions, TcHandle,
};
use aya::programs::{ProgramError, SchedClassifier, TcAttachType};

use crate::Error;

/// Shoal's slot: ahead of any filter someone else adds with the default
/// priority (49152).
pub const PRIO: u16 = 1;
pub const HANDLE: TcHandle = TcHandle::new(0, 1);

fn exists(e: &ProgramError) -> bool {
    matches!(e, ProgramError::TcError(tc::TcError::NetlinkError(n))
        if n.raw_os_error() == Some(libc::EEXIST))
}

/// Attaches `p` to `ifname` (in the calling thread's namespace) in Shoal's
/// slot: a new filter, or the program swapped into the one already there.
pub fn attach(
    p: &mut SchedClassifier,
    ifname: &str,
    at: TcAttachType,
) -> Result<SchedClassifierLinkId, Error> {
    if let Err(e) = tc::qdisc_add_clsact(ifname) {
        // EEXIST: the qdisc of an earlier run or of someone else, kept.
        if !matches!(&e, tc::TcError::NetlinkError(n) if n.raw_os_error() == Some(libc::EEXIST)) {
            return Err(Error::program(format!("clsact on {ifname}"), e));
        }
    }
    let slot = NlOptions {
        priority: PRIO,
        handle: HANDLE,
        ..Default::default()
    };
    let added = p.attach_with_options(ifname, at, TcAttachOptions::Netlink(slot));
    match added {
        Ok(id) => Ok(id),
        Err(e) if exists(&e) => {
            let link = SchedClassifierLink::attached(ifname, at, PRIO, HANDLE, None)
                .map_err(|e| Error::io(format!("filter on {ifname}"), e))?;
            p.attach_to_link(link)
                .map_err(|e| Error::program(format!("replace the program on {ifname}"), e))
        }
        Err(e) => Err(Error::program(format!("attach to {ifname}"), e)),
    }
}
