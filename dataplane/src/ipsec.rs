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

/// The prefix of an encrypted network's vxlan device: `shoal-x` and the
/// VNI in 6 hex digits.
pub const DEV_PREFIX: &str = "shoal-x";
/// The xfrm interface an earlier version used instead, and the if_id its
/// policies were bound to (`remove_legacy`).
pub const OLD_IFNAME: &str = "shoal-ipsec";
const OLD_IF_ID: u32 = 0x5e0a;
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
    create_device(Some(ns), "probe", 1, Ipv4Addr::new(192, 0, 2, 1), 1450)
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

/// `ip link add NAME type vxlan id VNI ...`: an encrypted network's
/// device, from `local` and from and to [`PORT`], inheriting the inner
/// DSCP.
fn create_device(
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
/// exists; an earlier version's xfrm interface and its SAs go) and brings
/// it up. `mtu`: the underlay's less the VXLAN headers.
pub fn ensure_device(vni: u32, local: Ipv4Addr, mtu: u32) -> Result<String, Error> {
    let old = remove_legacy()?;
    if old > 0 {
        tracing::info!(
            removed = old,
            "IPsec: an earlier version's tunnel-mode SAs, policies and xfrm interface removed"
        );
    }
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

fn parse_devices(text: &str) -> Vec<(u32, String)> {
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

fn parse_fdb(text: &str) -> Vec<Ipv4Addr> {
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

/// Removes what an earlier version (tunnel mode through an xfrm
/// interface) left: its policies, its SAs and the interface, which the
/// new ones would otherwise sit beside (same SPIs, same peers). How many
/// things it removed.
pub fn remove_legacy() -> Result<usize, Error> {
    // Without xfrm in the kernel there is nothing to remove.
    let policies = ip(None, &["xfrm", "policy", "list", "dir", "out"]).unwrap_or_default();
    let states = ip(
        None,
        &["xfrm", "state", "list", "reqid", &REQID.to_string()],
    )
    .unwrap_or_default();
    let lines = legacy_lines(&policies, &states);
    batch(None, &lines, true)?;
    let mut n = lines.len();
    if ip(None, &["link", "show", OLD_IFNAME]).is_ok() {
        ip(None, &["link", "del", OLD_IFNAME])
            .map_err(|e| Error::Other(format!("removing {OLD_IFNAME}: {e}")))?;
        n += 1;
    }
    Ok(n)
}

/// The lines deleting an earlier version's policies (bound to its
/// interface's if_id) and tunnel-mode SAs, from `ip xfrm` listings.
fn legacy_lines(policies: &str, states: &str) -> Vec<String> {
    let mut out: Vec<String> = blocks(policies)
        .into_iter()
        .filter(|b| is_legacy_policy(b))
        .filter_map(|b| src_dst(b[0]))
        .map(|(me, peer)| {
            format!("xfrm policy delete src {me}/32 dst {peer}/32 dir out if_id {OLD_IF_ID:#x}")
        })
        .collect();
    for b in blocks(states) {
        let ours = b.iter().any(|l| {
            after(l, "reqid").and_then(num) == Some(REQID as u64)
                && after(l, "mode") == Some("tunnel")
        });
        let spi = b.iter().find_map(|l| after(l, "spi").and_then(num));
        if let (true, Some((src, dst)), Some(spi)) = (ours, src_dst(b[0]), spi) {
            out.push(delete_sa_line(src, dst, spi as u32));
        }
    }
    out
}

fn is_legacy_policy(b: &[&str]) -> bool {
    b.iter()
        .any(|l| after(l, "if_id").and_then(num) == Some(OLD_IF_ID as u64))
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

/// A number as `ip -s` prints it: `0x00001001(4097)`, `7(0x00000007)`.
fn num(tok: &str) -> Option<u64> {
    let t = tok.split('(').next()?;
    match t.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => t.parse().ok(),
    }
}

/// Blocks of `ip xfrm` output, each starting at a `src A dst B` line.
fn blocks(text: &str) -> Vec<Vec<&str>> {
    let mut out: Vec<Vec<&str>> = vec![];
    for l in text.lines() {
        if l.starts_with("src ") {
            out.push(vec![l]);
        } else if let Some(b) = out.last_mut() {
            b.push(l.trim());
        }
    }
    out
}

fn src_dst(head: &str) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let t: Vec<&str> = head.split_whitespace().collect();
    let addr = |s: &str| s.split('/').next()?.parse::<Ipv4Addr>().ok();
    match t.as_slice() {
        ["src", s, "dst", d, ..] => Some((addr(s)?, addr(d)?)),
        _ => None,
    }
}

fn after<'a>(line: &'a str, word: &str) -> Option<&'a str> {
    let mut it = line.split_whitespace();
    it.by_ref().find(|t| *t == word)?;
    it.next()
}

pub fn parse_states(text: &str) -> Vec<SaStat> {
    let mut out = vec![];
    for b in blocks(text) {
        let Some((src, dst)) = src_dst(b[0]) else {
            continue;
        };
        let mut s = SaStat {
            src,
            dst,
            spi: 0,
            outbound: false,
            packets: 0,
            bytes: 0,
            errors: 0,
        };
        // Only inbound SAs mark what they decrypt.
        let mut inbound = false;
        let mut next_is = "";
        for l in &b[1..] {
            match next_is {
                "current" => {
                    // `N(bytes), M(packets)`
                    let mut it = l.split(',').map(str::trim);
                    s.bytes = it.next().and_then(num).unwrap_or(0);
                    s.packets = it.next().and_then(num).unwrap_or(0);
                }
                "stats" => {
                    s.errors = ["replay", "failed"]
                        .iter()
                        .filter_map(|w| after(l, w).and_then(num))
                        .sum();
                }
                _ => {}
            }
            next_is = match *l {
                "lifetime current:" => "current",
                "stats:" => "stats",
                _ => "",
            };
            if let Some(spi) = after(l, "spi").and_then(num) {
                s.spi = spi as u32;
            }
            if l.starts_with("output-mark") {
                inbound = true;
            }
        }
        s.outbound = !inbound;
        out.push(s);
    }
    out
}

pub fn parse_policies(text: &str) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    blocks(text)
        .into_iter()
        .filter(|b| {
            b.iter()
                .any(|l| after(l, "reqid").and_then(num) == Some(REQID as u64))
                && !is_legacy_policy(b)
        })
        .filter_map(|b| src_dst(b[0]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: &str = "src 198.18.0.1 dst 198.18.0.2
\tproto esp spi 0x01000001(16777217) reqid 24074(0x00005e0a) mode transport
\treplay-window 0 seq 0x00000000 flag  (0x00000000)
\taead rfc4106(gcm(aes)) 0x00112233 (288 bits) 128
\tanti-replay context: seq 0x0, oseq 0x2a, bitmap 0x00000000
\tlifetime config:
\t  limit: soft (INF)(bytes), hard (INF)(bytes)
\tlifetime current:
\t  5040(bytes), 42(packets)
\t  add 2026-12-05 10:00:00 use 2026-12-05 10:00:01
\tstats:
\t  replay-window 0 replay 0 failed 0
src 198.18.0.2 dst 198.18.0.1
\tproto esp spi 0x01000002(16777218) reqid 24074(0x00005e0a) mode transport
\treplay-window 0 seq 0x00000000 flag  (0x00000000)
\toutput-mark 0xe00/0xf00
\taead rfc4106(gcm(aes)) 0x00112233 (288 bits) 128
\tlifetime current:
\t  120(bytes), 1(packets)
\tstats:
\t  replay-window 0 replay 2 failed 3
";

    #[test]
    fn states_parse_without_their_keys() {
        let s = parse_states(STATES);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0],
            SaStat {
                src: Ipv4Addr::new(198, 18, 0, 1),
                dst: Ipv4Addr::new(198, 18, 0, 2),
                spi: 0x0100_0001,
                outbound: true,
                packets: 42,
                bytes: 5040,
                errors: 0,
            }
        );
        assert!(!s[1].outbound);
        assert_eq!((s[1].packets, s[1].errors), (1, 5));
        assert!(parse_states("").is_empty());
    }

    #[test]
    fn only_policies_with_shoal_s_reqid_are_shoal_s() {
        let text = "src 198.18.0.1/32 dst 198.18.0.2/32 proto udp sport 4790 dport 4790 \n\tdir out priority 0 \n\ttmpl src 198.18.0.1 dst 198.18.0.2\n\t\tproto esp reqid 24074 mode transport\nsrc 10.1.0.0/16 dst 10.2.0.0/16 \n\tdir out priority 0 \n\ttmpl src 1.1.1.1 dst 2.2.2.2\n\t\tproto esp reqid 7 mode tunnel\n";
        assert_eq!(
            parse_policies(text),
            vec![(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2))]
        );
    }

    #[test]
    fn devices_and_their_peers_are_read_back() {
        assert_eq!(device(0x100a), "shoal-x00100a");
        let links = "7: shoal-x00100a: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue\n8: vxlan0@eth0: <BROADCAST> mtu 1450\n9: shoal-xzz: <BROADCAST> mtu 1450\n";
        assert_eq!(
            parse_devices(links),
            vec![(0x100a, "shoal-x00100a".to_string())]
        );
        assert_eq!(
            add_fdb_line("shoal-x00100a", Ipv4Addr::new(198, 18, 0, 2)),
            "fdb replace 02:5e:c6:12:00:02 dev shoal-x00100a dst 198.18.0.2 self permanent"
        );
        let fdb = "02:5e:c6:12:00:02 dst 198.18.0.2 self permanent\n02:5e:c6:12:00:03 dst 198.18.0.3 self permanent\n33:33:00:00:00:01 self permanent\n";
        assert_eq!(
            parse_fdb(fdb),
            vec![Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 3)]
        );
    }

    #[test]
    fn an_earlier_version_s_tunnel_mode_sas_and_interface_policies_are_found() {
        let policies = "src 198.18.0.1/32 dst 198.18.0.2/32 \n\tdir out priority 0 \n\tif_id 0x5e0a\n\ttmpl src 198.18.0.1 dst 198.18.0.2\n\t\tproto esp reqid 24074 mode tunnel\nsrc 198.18.0.1/32 dst 198.18.0.3/32 proto udp sport 4790 dport 4790 \n\tdir out priority 0 \n\ttmpl src 198.18.0.1 dst 198.18.0.3\n\t\tproto esp reqid 24074 mode transport\n";
        let tunnel = STATES.replacen("mode transport", "mode tunnel", 1);
        assert_eq!(
            legacy_lines(policies, &tunnel),
            vec![
                "xfrm policy delete src 198.18.0.1/32 dst 198.18.0.2/32 dir out if_id 0x5e0a"
                    .to_string(),
                "xfrm state delete src 198.18.0.1 dst 198.18.0.2 proto esp spi 0x1000001"
                    .to_string(),
            ]
        );
        // The current version's are not, and are the only ones listed.
        assert!(legacy_lines("", STATES).is_empty());
        assert_eq!(
            parse_policies(policies),
            vec![(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 3))]
        );
    }

    #[test]
    fn sa_lines_are_transport_mode_inbound_ones_mark_and_debug_hides_the_key() {
        let mut sa = Sa {
            src: Ipv4Addr::new(198, 18, 0, 1),
            dst: Ipv4Addr::new(198, 18, 0, 2),
            spi: 0x0100_0001,
            key: [0xab; KEY_LEN],
            outbound: true,
        };
        let l = sa.add_line();
        assert!(
            l.contains("spi 0x1000001 reqid 24074 mode transport aead rfc4106(gcm(aes)) 0xabab")
        );
        assert!(l.ends_with(" 128"), "{l}");
        assert_eq!(
            add_policy_line(sa.src, sa.dst),
            "xfrm policy add src 198.18.0.1/32 dst 198.18.0.2/32 proto udp sport 4790 dport 4790 dir out tmpl src 198.18.0.1 dst 198.18.0.2 proto esp reqid 24074 mode transport"
        );
        sa.outbound = false;
        assert!(sa.add_line().ends_with("128 output-mark 0xe00 mask 0xf00"));
        assert!(!format!("{sa:?}").contains("abab"));
    }
}
