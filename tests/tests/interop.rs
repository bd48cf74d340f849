//! Wire compatibility with a plain Linux kernel vxlan device: a host on the
//! same underlay runs `ip link add ... type vxlan` with static FDB entries,
//! Shoal's nodes know it through `shoal debug peer add`, and traffic flows
//! both ways, ARP included (the kernel side resolves Shoal endpoints by ARP
//! across the tunnel; Shoal endpoints get the peer's MAC from the dataplane).

use shoal_tests::{iperf3, shoal, shoal_ok, Lab};

const KV_UL_IP: &str = "198.18.0.200";
const KV_OVERLAY_IP: &str = "10.0.1.200";

/// Builds the kernel-vxlan host `LAB-kv` on the lab's underlay bridge.
fn kernel_vxlan_host(lab: &Lab) -> (String, String) {
    let info = lab.info();
    let ns = format!("{}-kv", lab.name);
    let ul = &info.underlay_netns;
    let port = format!("{}-kvp", lab.name);
    let sh = |cmd: &str| {
        let out = std::process::Command::new("sh")
            .args(["-ec", cmd])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(&format!("ip netns add {ns}"));
    sh(&format!(
        "ip -n {ul} link add {port} type veth peer name eth0 netns {ns}"
    ));
    sh(&format!(
        "ip -n {ul} link set {port} master {} up",
        info.underlay_bridge
    ));
    sh(&format!("ip -n {ns} link set lo up; ip -n {ns} link set eth0 up; ip -n {ns} addr add {KV_UL_IP}/24 dev eth0"));
    sh(&format!(
        "ip -n {ns} link add vx0 type vxlan id {} dstport 4789 local {KV_UL_IP} dev eth0 nolearning",
        info.endpoints[0].vni
    ));
    sh(&format!(
        "ip -n {ns} link set vx0 mtu 1450 up; ip -n {ns} addr add {KV_OVERLAY_IP}/24 dev vx0"
    ));
    for ep in &info.endpoints {
        let node = info.nodes.iter().find(|n| n.name == ep.node).unwrap();
        sh(&format!(
            "bridge -n {ns} fdb append {} dev vx0 dst {}",
            ep.mac, node.underlay_ip
        ));
    }
    // Broadcast (ARP) goes to every Shoal node, as with a flood list.
    for n in &info.nodes {
        sh(&format!(
            "bridge -n {ns} fdb append 00:00:00:00:00:00 dev vx0 dst {}",
            n.underlay_ip
        ));
    }
    let mac = lab.run_ok(&ns, &["cat", "/sys/class/net/vx0/address"]);
    // `ip netns exec` remounts /sys for the namespace, so that is vx0's MAC.
    (ns, mac.trim().to_string())
}

#[test]
fn kernel_vxlan_peer_interoperates_both_ways() {
    let lab = Lab::up(2, 1, "tc");
    let (kv, kv_mac) = kernel_vxlan_host(&lab);
    let info = lab.info();
    for n in &info.nodes {
        shoal_ok(&[
            "debug",
            "--lab",
            &lab.name,
            "--node",
            &n.name,
            "peer",
            "add",
            "--vni",
            &info.endpoints[0].vni.to_string(),
            "--ip",
            KV_OVERLAY_IP,
            "--mac",
            &kv_mac,
            "--vtep",
            KV_UL_IP,
        ]);
    }
    let peers = lab.debug_json("n1", &["peer", "ls"]);
    assert_eq!(
        peers
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["ip"] == KV_OVERLAY_IP)
            .count(),
        1,
        "{peers}"
    );

    for ep in &info.endpoints {
        // Kernel vxlan -> Shoal (ARP over the tunnel, then ICMP).
        let out = lab.run(&kv, &["ping", "-c", "2", "-W", "2", &ep.ip]);
        assert!(
            out.status.success(),
            "kernel vxlan -> {}: {}",
            ep.name,
            String::from_utf8_lossy(&out.stdout)
        );
        // Shoal -> kernel vxlan.
        let out = lab.run(&ep.netns, &["ping", "-c", "2", "-W", "2", KV_OVERLAY_IP]);
        assert!(
            out.status.success(),
            "{} -> kernel vxlan: {}",
            ep.name,
            String::from_utf8_lossy(&out.stdout)
        );
        // TCP both ways.
        for (server, client, ip, dir) in [
            (&ep.netns, &kv, &ep.ip, "kernel -> shoal"),
            (
                &kv,
                &ep.netns,
                &KV_OVERLAY_IP.to_string(),
                "shoal -> kernel",
            ),
        ] {
            let r = iperf3(&lab, server, client, ip, &["-t", "1"]);
            let got = r["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
            assert!(
                got >= 1 << 20,
                "{dir} ({}): received only {got} bytes in 1 s: {}",
                ep.name,
                r["end"]
            );
        }
    }

    // Removing the peer stops Shoal from reaching it; removing it twice is
    // a clear error.
    let rm = || {
        shoal(&[
            "debug",
            "--lab",
            &lab.name,
            "--node",
            "n1",
            "peer",
            "rm",
            "--vni",
            "4000",
            "--ip",
            KV_OVERLAY_IP,
        ])
    };
    assert!(rm().status.success());
    let out = lab.run(
        &info.endpoints[0].netns,
        &["ping", "-c", "1", "-W", "1", KV_OVERLAY_IP],
    );
    assert!(!out.status.success(), "peer removed but still reachable");
    let out = rm();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no peer"));
}
