//! The encrypted networks' vxlan devices (one per network, on [`PORT`])
//! and their forwarding entries (one per peer node, for the MAC that
//! stands for it): what the tc program hands an encrypted network's
//! frames to. Why this shape: the module's doc.

use std::net::Ipv4Addr;
use std::process::Command;

use super::listing::after;
use super::{ip, PORT};
use crate::Error;

/// The prefix of an encrypted network's vxlan device: `shoal-x` and the
/// VNI in 6 hex digits.
pub const DEV_PREFIX: &str = "shoal-x";

/// The vxlan device of encrypted network `vni`.
pub fn device(vni: u32) -> String {
    format!("{DEV_PREFIX}{vni:06x}")
}

/// The MAC that stands for the node with `vtep` on the devices (the
/// eBPF programs' `vtep_mac`).
pub fn vtep_mac(vtep: Ipv4Addr) -> [u8; 6] {
    let o = vtep.octets();
    [
        shoal_ebpf::VTEP_MAC_0,
        shoal_ebpf::VTEP_MAC_1,
        o[0],
        o[1],
        o[2],
        o[3],
    ]
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The `bridge fdb` line that sends `dev`'s frames for the MAC standing
/// for `peer` to that VTEP.
pub fn add_fdb_line(dev: &str, peer: Ipv4Addr) -> String {
    format!(
        "fdb replace {} dev {dev} dst {peer} self permanent",
        mac_text(vtep_mac(peer))
    )
}

pub fn delete_fdb_line(dev: &str, peer: Ipv4Addr) -> String {
    format!("fdb del {} dev {dev} self", mac_text(vtep_mac(peer)))
}

/// `ip link add NAME type vxlan id VNI ...`: an encrypted network's
/// device, from `local` and from and to [`PORT`], inheriting the inner
/// DSCP.
pub(super) fn create_device(
    netns: Option<&str>,
    name: &str,
    vni: u32,
    local: Ipv4Addr,
    mtu: u32,
) -> Result<String, Error> {
    let (vni, port, local, mtu) = (
        vni.to_string(),
        PORT.to_string(),
        local.to_string(),
        mtu.to_string(),
    );
    let next = (PORT + 1).to_string();
    ip(
        netns,
        &[
            "link",
            "add",
            name,
            "mtu",
            &mtu,
            "type",
            "vxlan",
            "id",
            &vni,
            "local",
            &local,
            "dstport",
            &port,
            "srcport",
            &port,
            &next,
            "tos",
            "inherit",
            "nolearning",
        ],
    )
}

/// Creates the vxlan device of encrypted network `vni` (kept if it
/// exists) and brings it up. `mtu`: the underlay's less the VXLAN headers.
pub fn ensure_device(vni: u32, local: Ipv4Addr, mtu: u32) -> Result<String, Error> {
    let name = device(vni);
    if ip(None, &["link", "show", &name]).is_err() {
        create_device(None, &name, vni, local, mtu)
            .map_err(|e| Error::Other(format!("creating {name}: {e}")))?;
    }
    // Its own IPv6 router solicitations would be sent through it.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
    ip(None, &["link", "set", &name, "up"]).map_err(|e| Error::Other(format!("{name} up: {e}")))?;
    Ok(name)
}

/// The encrypted networks' devices on this node, by VNI.
pub fn devices() -> Vec<(u32, String)> {
    let text = ip(None, &["-o", "link", "show", "type", "vxlan"]).unwrap_or_default();
    parse_devices(&text)
}

pub(super) fn parse_devices(text: &str) -> Vec<(u32, String)> {
    text.lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?.split('@').next()?;
            let vni = u32::from_str_radix(name.strip_prefix(DEV_PREFIX)?, 16).ok()?;
            Some((vni, name.to_string()))
        })
        .collect()
}

/// The peers `dev` forwards to (its entries for the MACs that stand for
/// nodes).
pub fn fdb_peers(dev: &str) -> Vec<Ipv4Addr> {
    let text = Command::new("bridge")
        .args(["fdb", "show", "dev", dev])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    parse_fdb(&text)
}

pub(super) fn parse_fdb(text: &str) -> Vec<Ipv4Addr> {
    let prefix = format!(
        "{:02x}:{:02x}:",
        shoal_ebpf::VTEP_MAC_0,
        shoal_ebpf::VTEP_MAC_1
    );
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| after(l, "dst")?.parse().ok())
        .collect()
}

/// Removes a device (its forwarding entries and tc program go with it).
pub fn delete_device(name: &str) -> Result<(), Error> {
    ip(None, &["link", "del", name])
        .map(|_| ())
        .map_err(|e| Error::Other(format!("removing {name}: {e}")))
}
