//! IPsec ESP between nodes, for encrypted overlay networks: per encrypted
//! network on the node a kernel vxlan device on its own UDP port
//! ([`PORT`], from and to), which the tc encap program hands that
//! network's frames to, addressed to a MAC that stands for the peer node
//! (the device's forwarding entry sends it to the peer's VTEP); per peer
//! node an outbound policy that takes that port's packets into the peer's
//! SA (transport mode, `rfc4106(gcm(aes))`); and inbound SAs (one per key
//! of the ring) that mark what they decrypt.
//!
//! Why this shape (docs/encryption.md has the whole of it): it is the path
//! Docker's encrypted overlay takes through the kernel, without its bridge.
//! The kernel's vxlan keeps each peer's route and IPsec bundle cached and
//! hands a GSO super-packet whole to ESP, which segments while it
//! encrypts; on receive, the decrypted VXLAN reaches the device's UDP
//! tunnel socket, which aggregates it (GRO) before the device's tc program
//! (`shoal_vx_tc`) delivers it. An xfrm interface fed with VXLAN the
//! program built (the first design) had neither: the kernel segmented
//! before it and every segment paid a lookup, and nothing aggregated
//! after. One device per network, with forwarding entries, rather than
//! one in external mode: a tunnel key set from BPF disables the route
//! cache, so every packet would build a new IPsec bundle.
//!
//! The port is apart from the plain networks' 4789 (whose VXLAN the eBPF
//! programs take before any socket, and whose GRO this socket would
//! change), the underlay program drops it in clear (it is only ever
//! inside ESP), and the policies match it as source and destination port:
//! the devices' socket holds it, so no other process on the host can send
//! from it into Shoal's SAs.
//!
//! Programmed with iproute2's `ip xfrm`, `ip link` and `bridge fdb`, fed
//! on stdin (`-batch -`) so keys never appear in a command line: the
//! rust-netlink crates have xfrm packet types but no request layer, and
//! writing the xfrm netlink protocol by hand is what they exist to avoid.
//! iproute2 is a dependency already.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::netns::NetNs;
use crate::Error;

mod device;
mod legacy;
mod listing;
#[cfg(test)]
mod tests;

pub use device::{
    add_fdb_line, delete_device, delete_fdb_line, device, devices, ensure_device, fdb_peers,
    vtep_mac, DEV_PREFIX,
};
pub use legacy::{remove_legacy, OLD_IFNAME};
pub use listing::{parse_policies, parse_states};

/// The UDP port of the encrypted networks' VXLAN: never on the wire in
/// clear (ESP carries it), and apart from the plain networks' 4789.
pub const PORT: u16 = 4790;
/// The reqid of every Shoal SA and policy (how they are told apart from
/// anything else on the host).
pub const REQID: u32 = 0x5e0a;
/// AES-GCM with a 128-bit ICV, as Docker's encrypted overlay uses.
pub const ALGO: &str = "rfc4106(gcm(aes))";
/// An AES-256 key and the 4-byte salt of RFC 4106.
pub const KEY_LEN: usize = 36;
/// What ESP in transport mode adds to a VXLAN packet: ESP header (8), IV
/// (8), padding (at most 3), trailer (2), ICV (16), rounded up. An
/// encrypted network's endpoints get this much less MTU.
pub const OVERHEAD: u32 = 40;

/// The mark inbound SAs put on what they decrypted (`shoal_vx_tc`
/// delivers nothing without it).
pub const DECRYPT_MARK: u32 = shoal_ebpf::DECRYPT_MARK;
pub const DECRYPT_MASK: u32 = shoal_ebpf::DECRYPT_MASK;

/// One SA as Shoal programs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Sa {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub spi: u32,
    pub key: [u8; KEY_LEN],
    /// From this node, or to it (marking what it decrypts).
    pub outbound: bool,
}

impl std::fmt::Debug for Sa {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sa({} -> {} spi {:#x}{})",
            self.src,
            self.dst,
            self.spi,
            if self.outbound { " out" } else { " in" }
        )
    }
}

impl Sa {
    pub fn add_line(&self) -> String {
        let key: String = self.key.iter().map(|b| format!("{b:02x}")).collect();
        let tail = if self.outbound {
            String::new()
        } else {
            format!(" output-mark {DECRYPT_MARK:#x} mask {DECRYPT_MASK:#x}")
        };
        format!(
            "xfrm state add src {} dst {} proto esp spi {:#x} reqid {REQID} mode transport aead {ALGO} 0x{key} 128{tail}",
            self.src, self.dst, self.spi
        )
    }
}

/// The line deleting SA `(src, dst, spi)`.
pub fn delete_sa_line(src: Ipv4Addr, dst: Ipv4Addr, spi: u32) -> String {
    format!("xfrm state delete src {src} dst {dst} proto esp spi {spi:#x}")
}

/// The selector of the outbound policy from `me` to `peer`: the vxlan
/// devices' packets to that VTEP, from and to their port.
fn policy_selector(me: Ipv4Addr, peer: Ipv4Addr) -> String {
    format!("src {me}/32 dst {peer}/32 proto udp sport {PORT} dport {PORT} dir out")
}

/// The outbound policy from `me` to `peer`: through the peer's SA.
pub fn add_policy_line(me: Ipv4Addr, peer: Ipv4Addr) -> String {
    format!(
        "xfrm policy add {} tmpl src {me} dst {peer} proto esp reqid {REQID} mode transport",
        policy_selector(me, peer)
    )
}

pub fn delete_policy_line(me: Ipv4Addr, peer: Ipv4Addr) -> String {
    format!("xfrm policy delete {}", policy_selector(me, peer))
}

/// Runs `ip [-n NETNS] [-force] -batch -` with `lines` on stdin. With
/// `force`, a line that fails (a delete of what is gone) does not stop the
/// others, and the run is not an error.
pub fn batch(netns: Option<&str>, lines: &[String], force: bool) -> Result<(), Error> {
    tool_batch("ip", netns, lines, force)
}

/// [`batch`] for `bridge` (forwarding entries).
pub fn bridge_batch(lines: &[String], force: bool) -> Result<(), Error> {
    tool_batch("bridge", None, lines, force)
}

fn tool_batch(tool: &str, netns: Option<&str>, lines: &[String], force: bool) -> Result<(), Error> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new(tool);
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    if force {
        cmd.arg("-force");
    }
    cmd.args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io("running ip (is iproute2 installed?)".into(), e))?;
    let mut text = lines.join("\n");
    text.push('\n');
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .map_err(|e| Error::io("ip -batch".into(), e))?;
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io("ip -batch".into(), e))?;
    if !out.status.success() && !force {
        return Err(Error::Other(format!(
            "{tool} -batch: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn ip(netns: Option<&str>, args: &[&str]) -> Result<String, Error> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let out = cmd
        .args(args)
        .output()
        .map_err(|e| Error::io("running ip (is iproute2 installed?)".into(), e))?;
    if !out.status.success() {
        return Err(Error::Other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether this kernel can carry encrypted networks, found out in a
/// scratch namespace (the node's own stays untouched): Err names what it
/// lacks, as a module an operator can load.
pub fn probe() -> Result<(), String> {
    let name = format!("shoal-ipsec-probe-{}", std::process::id());
    NetNs::create(&name).map_err(|e| format!("a scratch namespace: {e}"))?;
    let r = probe_in(&name);
    let _ = NetNs::delete(&name);
    r
}

fn probe_in(ns: &str) -> Result<(), String> {
    device::create_device(Some(ns), "probe", 1, Ipv4Addr::new(192, 0, 2, 1), 1450)
        .map_err(|_| "vxlan (VXLAN)".to_string())?;
    // ESP itself first, with the null cipher: the kernel checks the
    // algorithm before the protocol, so a kernel with neither would
    // otherwise be said to lack only the cipher.
    let no_esp = |e: &str| e.contains("type not found") || e.contains("Protocol not supported");
    let null = "xfrm state add src 192.0.2.1 dst 192.0.2.3 proto esp spi 0x1001 mode transport enc cipher_null ''";
    if let Err(e) = batch(Some(ns), &[null.to_string()], false) {
        if no_esp(&e.to_string()) {
            return Err("esp4 (IPsec ESP)".to_string());
        }
    }
    let sa = Sa {
        src: Ipv4Addr::new(192, 0, 2, 1),
        dst: Ipv4Addr::new(192, 0, 2, 2),
        spi: 0x1000,
        key: [0; KEY_LEN],
        outbound: false,
    };
    batch(Some(ns), &[sa.add_line()], false).map_err(|e| {
        let e = e.to_string();
        if no_esp(&e) {
            "esp4 (IPsec ESP)".to_string()
        } else {
            format!("the {ALGO} cipher (gcm, ghash, seqiv): {e}")
        }
    })
}

/// Removes everything of Shoal's from this node's xfrm state (a host
/// being cleaned, its daemon stopped): the devices first (without a
/// policy they would send in clear), then the outbound policies and the
/// SAs. What it removed: (policies, SAs, devices).
pub fn remove_all() -> Result<(usize, usize, usize), Error> {
    let mut devices = 0;
    for (_, name) in self::devices() {
        delete_device(&name)?;
        devices += 1;
    }
    devices += remove_legacy()?.min(1);
    // Without xfrm in the kernel there is nothing more of ours to remove.
    let policies = policies().unwrap_or_default();
    let states = states().unwrap_or_default();
    let mut lines: Vec<String> = policies
        .iter()
        .map(|(me, peer)| delete_policy_line(*me, *peer))
        .collect();
    lines.extend(states.iter().map(|s| delete_sa_line(s.src, s.dst, s.spi)));
    batch(None, &lines, true)?;
    Ok((policies.len(), states.len(), devices))
}

/// One SA as the kernel reports it (never its key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaStat {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub spi: u32,
    pub outbound: bool,
    pub packets: u64,
    pub bytes: u64,
    /// Packets refused: replayed, or failing their integrity check.
    pub errors: u64,
}

/// Shoal's SAs on this node with their counters.
pub fn states() -> Result<Vec<SaStat>, Error> {
    let text = ip(
        None,
        &["-s", "xfrm", "state", "list", "reqid", &REQID.to_string()],
    )?;
    Ok(parse_states(&text))
}

/// Shoal's outbound policies on this node: (me, peer).
pub fn policies() -> Result<Vec<(Ipv4Addr, Ipv4Addr)>, Error> {
    Ok(parse_policies(&ip(
        None,
        &["xfrm", "policy", "list", "dir", "out"],
    )?))
}

/// The kernel's xfrm error counters that are not zero (`/proc/net/xfrm_stat`).
pub fn kernel_errors() -> Vec<(String, u64)> {
    std::fs::read_to_string("/proc/net/xfrm_stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (k, v) = (it.next()?, it.next()?.parse::<u64>().ok()?);
            (v > 0).then(|| (k.to_string(), v))
        })
        .collect()
}
