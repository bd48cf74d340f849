//! overlay-bench's path (e), the bound: Shoal's topology (an endpoint
//! namespace behind a veth on each host, the hosts on the tc lab's
//! underlay bridge) carrying the least eBPF VXLAN overlay there is,
//! `bench/bpf/bound.bpf.c`: encap and decap with every address compiled
//! in, no lookups. Measured in the same rounds as Shoal, it splits what
//! Shoal costs against the underlay into its own logic (Shoal against the
//! bound) and what the topology and encap/decap cost any such overlay (the
//! bound against the underlay).

use anyhow::{bail, Context, Result};

use super::sh;

const SOURCE: &str = include_str!("../bpf/bound.bpf.c");

/// The bound's client and server namespaces and the server's address.
pub(crate) const CLIENT_NS: &str = "b1e";
pub(crate) const SERVER_NS: &str = "b2e";
pub(crate) const SERVER_IP: &str = "10.5.0.3";

/// Builds hosts `{lab}-b1`/`-b2` (underlay 198.18.0.111/.112) on the lab's
/// bridge, each with an endpoint namespace (`{lab}-b1e`, 10.5.0.2/.3, MTU
/// 1450 as Shoal's), and attaches the bound's programs, compiled for their
/// addresses. Named after the lab, so `shoal lab down` removes them.
pub(crate) fn setup(lab: &str) -> Result<()> {
    if sh("command -v clang-19").is_err() {
        bail!("clang-19 is missing: the bound is compiled for its addresses (scripts/install-deps.sh installs it)");
    }
    let (ul, br) = (format!("{lab}-ul"), format!("{lab}-br"));
    for i in 1..=2 {
        let (h, e) = (format!("{lab}-b{i}"), format!("{lab}-b{i}e"));
        sh(&format!(
            "set -e
             ip netns add {h}; ip netns add {e}
             ip -n {h} link set lo up; ip -n {e} link set lo up
             ip -n {ul} link add {lab}-b{i}p type veth peer name eth0 netns {h}
             ip -n {ul} link set {lab}-b{i}p master {br} up
             ip netns exec {ul} ethtool -K {lab}-b{i}p gro on
             ip -n {h} link set eth0 address 02:42:c6:12:00:{mac:02x} up
             ip -n {h} addr add 198.18.0.{ip}/24 dev eth0
             ip -n {h} link add ep mtu 1450 type veth peer name eth0 netns {e}
             ip -n {h} link set ep up
             ip -n {e} link set eth0 mtu 1450 address 02:42:0a:05:00:0{ei} up
             ip -n {e} addr add 10.5.0.{ei}/24 dev eth0",
            mac = 110 + i,
            ip = 110 + i,
            ei = 1 + i,
        ))?;
    }
    let dir = format!("/tmp/shoal-overlay-bound-{}", std::process::id());
    std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {dir}"))?;
    let attached = attach(lab, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    attached
}

/// Compiles the bound in `dir` for each host's addresses and attaches it.
fn attach(lab: &str, dir: &str) -> Result<()> {
    let src = format!("{dir}/bound.bpf.c");
    std::fs::write(&src, SOURCE).with_context(|| format!("write {src}"))?;
    for i in 1..=2u32 {
        let j = 3 - i;
        let h = format!("{lab}-b{i}");
        let ifindex = |dev: &str| -> Result<u32> {
            sh(&format!(
                "ip netns exec {h} cat /sys/class/net/{dev}/ifindex"
            ))?
            .trim()
            .parse()
            .with_context(|| format!("ifindex of {dev} in {h}"))
        };
        let (ul_if, ep_if) = (ifindex("eth0")?, ifindex("ep")?);
        let cc = |defs: String, out: &str| {
            sh(&format!(
                "clang-19 -O2 -g -target bpf -I/usr/include/$(uname -m)-linux-gnu {defs} -c {src} -o {out}"
            ))
        };
        let (enc, dec) = (format!("{dir}/enc{i}.o"), format!("{dir}/dec{i}.o"));
        cc(
            format!(
                "-DENC -DDMAC=0x0242c61200{:02x} -DSMAC=0x0242c61200{:02x} -DSIP=0xC61200{:02x} -DDIP=0xC61200{:02x} -DUL_IF={ul_if}",
                110 + j,
                110 + i,
                110 + i,
                110 + j
            ),
            &enc,
        )?;
        cc(
            format!("-DDEC -DEMAC=0x02420a05000{} -DEP_IF={ep_if}", 1 + i),
            &dec,
        )?;
        sh(&format!(
            "set -e
             ip netns exec {h} tc qdisc add dev ep clsact
             ip netns exec {h} tc filter add dev ep ingress bpf da obj {enc} sec tc
             ip netns exec {h} tc qdisc add dev eth0 clsact
             ip netns exec {h} tc filter add dev eth0 ingress bpf da obj {dec} sec tc
             ip -n {lab}-b{i}e neigh add 10.5.0.{} lladdr 02:42:0a:05:00:0{} dev eth0 nud permanent",
            1 + j,
            1 + j
        ))?;
    }
    Ok(())
}
