//! The eBPF overlay: loading the programs, attaching them (as pinned links,
//! so they outlive the agent), and reading/writing the pinned maps.
//!
//! Layout under a daemon's bpffs directory:
//!
//! ```text
//! DIR/shoal_endpoints, shoal_ifaces, ...   maps (pinned by name from C)
//! DIR/links/ul_tc_eth0, ep_tc_veth1234     one pinned link per attachment
//! ```

#[cfg(test)]
mod accel_tests;
#[cfg(test)]
mod decap_tests;
#[cfg(test)]
mod encap_tests;
#[cfg(test)]
mod events_tests;
pub mod filter;
#[cfg(test)]
mod filter_tests;
#[cfg(test)]
mod flows_tests;
#[cfg(test)]
mod ipsec_tests;
#[cfg(test)]
mod lb_tests;
mod maps;
#[cfg(test)]
mod mesh_tests;
#[cfg(test)]
mod mss_tests;
pub mod pins;
#[cfg(test)]
mod resolver_tests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::xdp::XdpLink;
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use serde::{Deserialize, Serialize};
use shoal_ebpf::{prog, OVERLAY_OBJ};

pub use maps::{ip_key, key_ip, Counters, Maps};

use crate::Error;

/// A program hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Tc,
    Xdp,
}

/// The operator's choice (`--accel auto|tc|xdp`).
///
/// Any XDP program on a veth turns GSO off for traffic into it (measured
/// here: ~15 -> ~4 Gbit/s), so `auto` keeps tc wherever the device is
/// virtual and uses XDP only for decap on a physical underlay NIC; encap
/// always runs on tc at the endpoint veths. `xdp` forces XDP on both sides
/// (correctness tests and small-packet rate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Auto,
    Tc,
    Xdp,
}

/// Which hook each side of the overlay uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hooks {
    pub underlay: Hook,
    pub endpoint: Hook,
}

impl Accel {
    pub fn hooks(self, underlay_is_virtual: bool) -> Hooks {
        match self {
            Accel::Tc => Hooks {
                underlay: Hook::Tc,
                endpoint: Hook::Tc,
            },
            Accel::Xdp => Hooks {
                underlay: Hook::Xdp,
                endpoint: Hook::Xdp,
            },
            Accel::Auto if underlay_is_virtual => Hooks {
                underlay: Hook::Tc,
                endpoint: Hook::Tc,
            },
            Accel::Auto => Hooks {
                underlay: Hook::Xdp,
                endpoint: Hook::Tc,
            },
        }
    }
}

impl std::str::FromStr for Accel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "auto" => Ok(Accel::Auto),
            "tc" => Ok(Accel::Tc),
            "xdp" => Ok(Accel::Xdp),
            other => Err(Error::Invalid(format!(
                "unknown accel {other:?} (want auto, tc or xdp)"
            ))),
        }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Hook::Tc => "tc",
            Hook::Xdp => "xdp",
        })
    }
}

/// Where a program is attached, as recorded by its pinned link.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attachment {
    /// `ul` (underlay ingress), `ep` (endpoint host-side veth ingress) or
    /// `vx` (the encrypted networks' vxlan device).
    pub role: String,
    /// `tc` or `xdp`.
    pub hook: String,
    pub interface: String,
    /// The program's id in the kernel, when the link could be queried.
    pub prog_id: Option<u32>,
}

/// The loaded overlay object of one node agent.
pub struct Overlay {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    hooks: Hooks,
}

impl Overlay {
    /// Loads the programs; maps are created in (or reused from) `pin_dir`.
    pub fn load(pin_dir: &Path, hooks: Hooks) -> Result<Self, Error> {
        crate::ensure_bpffs()?;
        std::fs::create_dir_all(pin_dir.join("links"))
            .map_err(|e| Error::io(format!("mkdir {}", pin_dir.display()), e))?;
        for r in pins::replace_changed(pin_dir, OVERLAY_OBJ)? {
            tracing::warn!(
                map = %r.name,
                was = %r.was,
                now = %r.now,
                "a pinned map changed shape with this version: replaced (refilled from the agent's state)"
            );
        }
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(OVERLAY_OBJ)
            .map_err(|e| Error::program("load overlay object", e))?;
        for name in [prog::EP_TC, prog::UL_TC, prog::VX_TC] {
            let p: &mut SchedClassifier = prog_mut(&mut ebpf, name)?;
            p.load()
                .map_err(|e| Error::program(format!("load {name}"), verifier(e)))?;
        }
        for name in [prog::EP_XDP, prog::UL_XDP] {
            let p: &mut Xdp = prog_mut(&mut ebpf, name)?;
            p.load()
                .map_err(|e| Error::program(format!("load {name}"), verifier(e)))?;
        }
        Ok(Self {
            ebpf,
            pin_dir: pin_dir.to_path_buf(),
            hooks,
        })
    }

    pub fn hooks(&self) -> Hooks {
        self.hooks
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    pub fn maps(&self) -> Result<Maps, Error> {
        Maps::open(&self.pin_dir)
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Attaches decap to the underlay device's ingress.
    pub fn attach_underlay(&mut self, ifname: &str) -> Result<(), Error> {
        match self.hooks.underlay {
            Hook::Tc => {
                self.attach_tc(prog::UL_TC, "ul", ifname)?;
                // An earlier run with XDP (`--accel` changed across a
                // restart): its pinned link is the only thing holding it.
                self.drop_stale_xdp("ul", ifname);
                Ok(())
            }
            // tc behind XDP finishes what XDP passes (xdp_fast.h).
            Hook::Xdp => {
                self.attach_tc(prog::UL_TC, "ul", ifname)?;
                self.attach_xdp(prog::UL_XDP, "ul", ifname)
            }
        }
    }

    /// Attaches the underlay's tc program to another interface of the
    /// node that holds an address published ports answer on: it enters
    /// the mesh there and passes everything else on. tc only (the XDP
    /// entry is the underlay's fast path).
    pub fn attach_mesh_entry(&mut self, ifname: &str) -> Result<(), Error> {
        self.attach_tc(prog::UL_TC, "ul", ifname)
    }

    /// Attaches the delivery of what IPsec decrypted to the encrypted
    /// networks' vxlan device (`crate::ipsec`). tc only: the device is
    /// not a NIC, and its GRO is the point of it.
    pub fn attach_crypt(&mut self, ifname: &str) -> Result<(), Error> {
        self.attach_tc(prog::VX_TC, "vx", ifname)
    }

    /// Attaches ARP/local delivery/encap to an endpoint's host-side veth.
    pub fn attach_endpoint(&mut self, ifname: &str) -> Result<(), Error> {
        self.attach_endpoint_tc(ifname)?;
        match self.hooks.endpoint {
            Hook::Tc => {
                self.drop_stale_xdp("ep", ifname);
                Ok(())
            }
            Hook::Xdp => self.attach_xdp(prog::EP_XDP, "ep", ifname),
        }
    }

    /// An endpoint's tc program sits in a filter (`filter.rs` says why),
    /// but one that an earlier version attached as a pinned TCX link keeps
    /// its link: the program is swapped in it.
    fn attach_endpoint_tc(&mut self, ifname: &str) -> Result<(), Error> {
        if tcx_supported() && self.link_pin("ep", "tc", ifname).exists() {
            return self.attach_tc(prog::EP_TC, "ep", ifname);
        }
        let p: &mut SchedClassifier = prog_mut(&mut self.ebpf, prog::EP_TC)?;
        let id = filter::attach(p, ifname, TcAttachType::Ingress)?;
        // Detached when the interface goes, not when the agent exits.
        std::mem::forget(p.take_link(id));
        Ok(())
    }

    fn link_pin(&self, role: &str, hook: &str, ifname: &str) -> PathBuf {
        link_pin(&self.pin_dir, role, hook, ifname)
    }

    /// Unpins an XDP link this run's hooks do not want: with no process
    /// holding it, the kernel detaches it.
    fn drop_stale_xdp(&self, role: &str, ifname: &str) {
        let pin = self.link_pin(role, "xdp", ifname);
        if pin.exists() {
            match std::fs::remove_file(&pin) {
                Ok(()) => tracing::info!(%ifname, role, "XDP from an earlier run detached"),
                Err(e) => tracing::warn!(%ifname, role, "cannot unpin an earlier run's XDP: {e}"),
            }
        }
    }

    /// Attaches `name` on tc ingress of `ifname` through a pinned TCX link.
    /// An existing pin is reused and its program swapped atomically, so an
    /// agent restart never leaves the interface without a program.
    fn attach_tc(&mut self, name: &str, role: &str, ifname: &str) -> Result<(), Error> {
        if !tcx_supported() {
            return self.attach_tc_netlink(name, ifname);
        }
        let pin = self.link_pin(role, "tc", ifname);
        let p: &mut SchedClassifier = prog_mut(&mut self.ebpf, name)?;
        if pin.exists() {
            let reused = PinnedLink::from_pin(&pin)
                .ok()
                .map(FdLink::from)
                .and_then(|l| SchedClassifierLink::try_from(l).ok())
                .and_then(|l| p.attach_to_link(l).ok());
            if let Some(id) = reused {
                // The link stays attached through its pin; drop our fd.
                drop(p.take_link(id));
                return Ok(());
            }
            let _ = std::fs::remove_file(&pin);
        }
        let id = p
            .attach_with_options(
                ifname,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|e| Error::program(format!("attach {name} to {ifname}"), e))?;
        let link = p
            .take_link(id)
            .map_err(|e| Error::program("take link", e))?;
        let fd: FdLink = link
            .try_into()
            .map_err(|e| Error::program("tc link is not a bpf_link (kernel < 6.6?)", e))?;
        fd.pin(&pin)
            .map_err(|e| Error::program(format!("pin {}", pin.display()), e))?;
        Ok(())
    }

    /// Kernels before 6.6 (no TCX, e.g. Debian 12's 6.1): a clsact filter
    /// in Shoal's slot. Filters outlive the agent on their own, so there
    /// is no pin; a restart swaps the program in place.
    fn attach_tc_netlink(&mut self, name: &str, ifname: &str) -> Result<(), Error> {
        let p: &mut SchedClassifier = prog_mut(&mut self.ebpf, name)?;
        let id = filter::attach_alone(p, name, ifname, TcAttachType::Ingress)?;
        // Detached when the interface goes, not when the agent exits.
        std::mem::forget(p.take_link(id));
        Ok(())
    }

    fn attach_xdp(&mut self, name: &str, role: &str, ifname: &str) -> Result<(), Error> {
        let pin = self.link_pin(role, "xdp", ifname);
        let p: &mut Xdp = prog_mut(&mut self.ebpf, name)?;
        if pin.exists() {
            let reused = PinnedLink::from_pin(&pin)
                .ok()
                .map(FdLink::from)
                .and_then(|l| XdpLink::try_from(l).ok())
                .and_then(|l| p.attach_to_link(l).ok());
            if let Some(id) = reused {
                drop(p.take_link(id));
                return Ok(());
            }
            let _ = std::fs::remove_file(&pin);
        }
        let id = p
            .attach(ifname, XdpMode::Driver)
            .map_err(|e| Error::program(format!("attach {name} (native XDP) to {ifname}"), e))?;
        let link = p
            .take_link(id)
            .map_err(|e| Error::program("take link", e))?;
        let fd: FdLink = link
            .try_into()
            .map_err(|e| Error::program("xdp link is not a bpf_link", e))?;
        fd.pin(&pin)
            .map_err(|e| Error::program(format!("pin {}", pin.display()), e))?;
        Ok(())
    }
}

fn link_pin(pin_dir: &Path, role: &str, hook: &str, ifname: &str) -> PathBuf {
    pin_dir
        .join("links")
        .join(format!("{role}_{hook}_{ifname}"))
}

/// Detaches whatever Shoal attached to `ifname` (both hooks).
pub fn detach(pin_dir: &Path, ifname: &str) {
    for role in ["ul", "ep", "vx"] {
        for hook in ["tc", "xdp"] {
            let _ = std::fs::remove_file(link_pin(pin_dir, role, hook, ifname));
        }
    }
}

/// The attachments recorded under `pin_dir`, with their kernel program ids.
pub fn attachments(pin_dir: &Path) -> Vec<Attachment> {
    let Ok(dir) = std::fs::read_dir(pin_dir.join("links")) else {
        return vec![];
    };
    let mut out: Vec<Attachment> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let mut parts = name.splitn(3, '_');
            let (role, hook, interface) = (parts.next()?, parts.next()?, parts.next()?);
            let prog_id = PinnedLink::from_pin(e.path())
                .ok()
                .and_then(|l| FdLink::from(l).info().ok())
                .map(|i| i.program_id());
            Some(Attachment {
                role: role.into(),
                hook: hook.into(),
                interface: interface.into(),
                prog_id,
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.role, &a.interface).cmp(&(&b.role, &b.interface)));
    out
}

/// Removes every pin of a daemon (maps and links): the programs detach and
/// the maps are freed once nothing else holds them.
pub fn remove_pins(pin_dir: &Path) -> Result<(), Error> {
    if pin_dir.exists() {
        std::fs::remove_dir_all(pin_dir)
            .map_err(|e| Error::io(format!("remove {}", pin_dir.display()), e))?;
    }
    Ok(())
}

/// Removes the underlay's tc filters (kernels before 6.6 keep them
/// without a pin) from every interface of the calling thread's namespace
/// that has one: the interfaces cleaned.
pub fn remove_underlay_filters(ifnames: &[String]) -> Vec<String> {
    ifnames
        .iter()
        .filter(|i| {
            aya::programs::tc::qdisc_detach_program(i, TcAttachType::Ingress, prog::UL_TC).is_ok()
        })
        .cloned()
        .collect()
}

pub(crate) fn prog_mut<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, Error>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program>,
{
    let p = ebpf
        .program_mut(name)
        .ok_or_else(|| Error::NotFound(format!("program {name}")))?;
    p.try_into()
        .map_err(|_| Error::program(name, "has an unexpected type"))
}

/// Keeps the verifier's log when a load fails: it is the only useful part.
pub(crate) fn verifier(e: aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            format!("{io_error}\n{verifier_log}")
        }
        other => other.to_string(),
    }
}

/// TCX links (kernel >= 6.6) keep a pinned link through restarts.
pub(crate) fn tcx_supported() -> bool {
    aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0))
}
