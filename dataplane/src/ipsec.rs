//! IPsec ESP between nodes, for encrypted overlay networks: one xfrm
//! interface per node that the tc encap program redirects an encrypted
//! network's VXLAN packets to, and per peer node an outbound SA and policy
//! (tunnel mode, `rfc4106(gcm(aes))`, bound to the interface by its if_id)
//! and inbound SAs (one per key of the ring) that mark what they decrypt.
//!
//! Why this shape (docs/encryption.md has the whole of it): tunnel mode
//! puts the decrypted VXLAN packet back through the underlay device's tc
//! ingress, where the decap program accepts an encrypted network's frames
//! only with the inbound SA's mark; transport mode would hand it straight
//! to a UDP socket. The interface lets a tc program reach the xfrm output
//! path, which `bpf_redirect` to the underlay device bypasses.
//!
//! Programmed with iproute2's `ip xfrm` and `ip link`, fed on stdin
//! (`ip -batch -`) so keys never appear in a command line: the rust-netlink
//! crates have xfrm packet types but no request layer, and writing the
//! xfrm netlink protocol by hand is what they exist to avoid. iproute2 is a
//! dependency already.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::netns::NetNs;
use crate::Error;

/// The node's xfrm interface.
pub const IFNAME: &str = "shoal-ipsec";
/// Its if_id: only its lookups see the outbound policies and SAs.
pub const IF_ID: u32 = 0x5e0a;
/// The reqid of every Shoal SA and policy (how they are told apart from
/// anything else on the host).
pub const REQID: u32 = 0x5e0a;
/// AES-GCM with a 128-bit ICV, as Docker's encrypted overlay uses.
pub const ALGO: &str = "rfc4106(gcm(aes))";
/// An AES-256 key and the 4-byte salt of RFC 4106.
pub const KEY_LEN: usize = 36;
/// What ESP in tunnel mode adds to a VXLAN packet: outer IPv4 (20), ESP
/// header (8), IV (8), padding (at most 3), trailer (2), ICV (16), rounded
/// up. An encrypted network's endpoints get this much less MTU.
pub const OVERHEAD: u32 = 60;

/// The mark and mask inbound SAs put on what they decrypted (the decap
/// program's `SHOAL_DECRYPT_MARK`).
pub const DECRYPT_MARK: u32 = shoal_ebpf::DECRYPT_MARK;
pub const DECRYPT_MASK: u32 = shoal_ebpf::DECRYPT_MASK;

/// One SA as Shoal programs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Sa {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub spi: u32,
    pub key: [u8; KEY_LEN],
    /// From this node (bound to the interface), or to it (marking).
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
            format!("if_id {IF_ID:#x}")
        } else {
            format!("output-mark {DECRYPT_MARK:#x} mask {DECRYPT_MASK:#x}")
        };
        format!(
            "xfrm state add src {} dst {} proto esp spi {:#x} reqid {REQID} mode tunnel aead {ALGO} 0x{key} 128 {tail}",
            self.src, self.dst, self.spi
        )
    }
}

/// The line deleting SA `(src, dst, spi)`.
pub fn delete_sa_line(src: Ipv4Addr, dst: Ipv4Addr, spi: u32) -> String {
    format!("xfrm state delete src {src} dst {dst} proto esp spi {spi:#x}")
}

/// The outbound policy from `me` to `peer`: the interface's VXLAN packets
/// to that VTEP go through the peer's SA.
pub fn add_policy_line(me: Ipv4Addr, peer: Ipv4Addr) -> String {
    format!(
        "xfrm policy add src {me}/32 dst {peer}/32 dir out if_id {IF_ID:#x} tmpl src {me} dst {peer} proto esp reqid {REQID} mode tunnel"
    )
}

pub fn delete_policy_line(me: Ipv4Addr, peer: Ipv4Addr) -> String {
    format!("xfrm policy delete src {me}/32 dst {peer}/32 dir out if_id {IF_ID:#x}")
}

/// Runs `ip [-n NETNS] [-force] -batch -` with `lines` on stdin. With
/// `force`, a line that fails (a delete of what is gone) does not stop the
/// others, and the run is not an error.
pub fn batch(netns: Option<&str>, lines: &[String], force: bool) -> Result<(), Error> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("ip");
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
            "ip xfrm: {}",
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
    ip(
        Some(ns),
        &["link", "add", "probe", "type", "xfrm", "if_id", "1"],
    )
    .map_err(|_| "xfrm_interface (xfrm interfaces)".to_string())?;
    let sa = Sa {
        src: Ipv4Addr::new(192, 0, 2, 1),
        dst: Ipv4Addr::new(192, 0, 2, 2),
        spi: 0x1000,
        key: [0; KEY_LEN],
        outbound: false,
    };
    batch(Some(ns), &[sa.add_line()], false).map_err(|e| {
        let e = e.to_string();
        if e.contains("Protocol not supported") {
            "esp4 (IPsec ESP)".to_string()
        } else {
            format!("the {ALGO} cipher (gcm, ghash, seqiv): {e}")
        }
    })
}

/// Creates the node's xfrm interface on `underlay` (kept if it exists)
/// and brings it up.
pub fn ensure_interface(underlay: &str) -> Result<(), Error> {
    if ip(None, &["link", "show", IFNAME]).is_err() {
        ip(
            None,
            &[
                "link",
                "add",
                IFNAME,
                "type",
                "xfrm",
                "dev",
                underlay,
                "if_id",
                &format!("{IF_ID:#x}"),
            ],
        )
        .map_err(|e| Error::Other(format!("creating {IFNAME}: {e}")))?;
    }
    // Its own IPv6 router solicitations would count as carrier errors.
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{IFNAME}/disable_ipv6"),
        "1",
    );
    ip(None, &["link", "set", IFNAME, "up"])
        .map_err(|e| Error::Other(format!("{IFNAME} up: {e}")))?;
    Ok(())
}

/// Removes everything of Shoal's from this node's xfrm state (a host
/// being cleaned, its daemon stopped): the outbound policies, the SAs and
/// the xfrm interface. What it removed: (policies, SAs, interface).
pub fn remove_all() -> Result<(usize, usize, bool), Error> {
    // Without xfrm in the kernel there is nothing of ours to remove.
    let policies = policies().unwrap_or_default();
    let states = states().unwrap_or_default();
    let mut lines: Vec<String> = policies
        .iter()
        .map(|(me, peer)| delete_policy_line(*me, *peer))
        .collect();
    lines.extend(states.iter().map(|s| delete_sa_line(s.src, s.dst, s.spi)));
    batch(None, &lines, true)?;
    let interface = ip(None, &["link", "show", IFNAME]).is_ok();
    if interface {
        ip(None, &["link", "del", IFNAME])
            .map_err(|e| Error::Other(format!("removing {IFNAME}: {e}")))?;
    }
    Ok((policies.len(), states.len(), interface))
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
            if l.starts_with("if_id") {
                s.outbound = true;
            }
        }
        out.push(s);
    }
    out
}

pub fn parse_policies(text: &str) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    blocks(text)
        .into_iter()
        .filter(|b| {
            b.iter()
                .any(|l| after(l, "if_id").and_then(num) == Some(IF_ID as u64))
        })
        .filter_map(|b| src_dst(b[0]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: &str = "src 198.18.0.1 dst 198.18.0.2
\tproto esp spi 0x01000001(16777217) reqid 24074(0x00005e0a) mode tunnel
\treplay-window 0 seq 0x00000000 flag  (0x00000000)
\taead rfc4106(gcm(aes)) 0x00112233 (288 bits) 128
\tanti-replay context: seq 0x0, oseq 0x2a, bitmap 0x00000000
\tif_id 0x5e0a
\tlifetime config:
\t  limit: soft (INF)(bytes), hard (INF)(bytes)
\tlifetime current:
\t  5040(bytes), 42(packets)
\t  add 2026-12-05 10:00:00 use 2026-12-05 10:00:01
\tstats:
\t  replay-window 0 replay 0 failed 0
src 198.18.0.2 dst 198.18.0.1
\tproto esp spi 0x01000002(16777218) reqid 24074(0x00005e0a) mode tunnel
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
    fn only_the_interface_s_policies_are_shoal_s() {
        let text = "src 198.18.0.1/32 dst 198.18.0.2/32 \n\tdir out priority 0 \n\tif_id 0x5e0a\n\ttmpl src 198.18.0.1 dst 198.18.0.2\n\t\tproto esp reqid 24074 mode tunnel\nsrc 10.1.0.0/16 dst 10.2.0.0/16 \n\tdir out priority 0 \n\ttmpl src 1.1.1.1 dst 2.2.2.2\n";
        assert_eq!(
            parse_policies(text),
            vec![(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2))]
        );
    }

    #[test]
    fn sa_lines_carry_the_interface_or_the_mark_and_debug_hides_the_key() {
        let mut sa = Sa {
            src: Ipv4Addr::new(198, 18, 0, 1),
            dst: Ipv4Addr::new(198, 18, 0, 2),
            spi: 0x0100_0001,
            key: [0xab; KEY_LEN],
            outbound: true,
        };
        let l = sa.add_line();
        assert!(l.contains("spi 0x1000001 reqid 24074 mode tunnel aead rfc4106(gcm(aes)) 0xabab"));
        assert!(l.ends_with("128 if_id 0x5e0a"), "{l}");
        sa.outbound = false;
        assert!(sa.add_line().ends_with("128 output-mark 0xe00 mask 0xf00"));
        assert!(!format!("{sa:?}").contains("abab"));
    }
}
