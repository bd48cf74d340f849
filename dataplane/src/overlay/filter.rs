//! Programs attached as clsact filters (cls_bpf, direct action) in a slot
//! of Shoal's own: those on a container's start path, the endpoint's veth
//! and the resolver on a namespace's loopback; and the underlay's on
//! kernels without TCX (before 6.6, e.g. Debian 12's 6.1).
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
    Ok(attach_in_slot(p, ifname, at)?.0)
}

/// As `attach`, for a program that earlier versions attached as a filter
/// at the default priority (the underlay's on kernels before 6.6): when
/// the slot was empty (the first attach since boot, or since such an
/// upgrade), every filter of that program's name goes first, the earlier
/// version's included, then the program takes the slot. Later restarts
/// swap it in place, never leaving the interface without it.
pub fn attach_alone(
    p: &mut SchedClassifier,
    name: &str,
    ifname: &str,
    at: TcAttachType,
) -> Result<SchedClassifierLinkId, Error> {
    let (id, fresh) = attach_in_slot(p, ifname, at)?;
    if !fresh {
        return Ok(id);
    }
    // The new filter goes too (the program knows it as attached), then
    // every other of that name (none is the usual answer), then the
    // program takes the slot again.
    drop(
        p.take_link(id)
            .map_err(|e| Error::program(format!("take the link on {ifname}"), e))?,
    );
    let _ = tc::qdisc_detach_program(ifname, at, name);
    Ok(attach_in_slot(p, ifname, at)?.0)
}

/// The filter's id, and whether it is new (the slot was empty).
fn attach_in_slot(
    p: &mut SchedClassifier,
    ifname: &str,
    at: TcAttachType,
) -> Result<(SchedClassifierLinkId, bool), Error> {
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
        Ok(id) => Ok((id, true)),
        Err(e) if exists(&e) => {
            let link = SchedClassifierLink::attached(ifname, at, PRIO, HANDLE, None)
                .map_err(|e| Error::io(format!("filter on {ifname}"), e))?;
            let id = p
                .attach_to_link(link)
                .map_err(|e| Error::program(format!("replace the program on {ifname}"), e))?;
            Ok((id, false))
        }
        Err(e) => Err(Error::program(format!("attach to {ifname}"), e)),
    }
}
