//! BPF_PROG_TEST_RUN tests of the overlay programs on crafted frames, for
//! both hooks. Each test builds a throwaway network namespace with an
//! "underlay" veth (198.18.0.1/24, the remote VTEP 198.18.0.2 as a permanent
//! neighbour) and an endpoint's host-side veth, loads the object with its
//! maps pinned under a throwaway bpffs directory, and runs the programs
//! there (the kernel resolves ifindexes and FIB lookups in the caller's
//! namespace). Needs root.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use shoal_ebpf::{prog, Config, DropReason, EpValue, IfaceValue, EP_F_LOCAL, EP_F_REMOTE};

use super::{Accel, Hook, Maps, Overlay};
use crate::netlink::{Mac, Netlink};
use crate::netns::NetNs;

pub(super) const VNI: u32 = 4097;
pub(super) const LOCAL_VTEP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub(super) const REMOTE_VTEP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub(super) const REMOTE_VTEP_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
pub(super) const EP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2); // local, behind "epa"
pub(super) const EP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 3); // local, behind "epb"
pub(super) const EP_R: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 9); // remote, behind REMOTE_VTEP
pub(super) const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
pub(super) const MAC_A: Mac = [0x02, 0x42, 10, 0, 1, 2];
pub(super) const MAC_B: Mac = [0x02, 0x42, 10, 0, 1, 3];
pub(super) const MAC_R: Mac = [0x02, 0x42, 10, 0, 1, 9];

pub(super) const TC_ACT_OK: u32 = 0;
pub(super) const TC_ACT_SHOT: u32 = 2;
pub(super) const TC_ACT_REDIRECT: u32 = 7;
pub(super) const XDP_DROP: u32 = 1;
pub(super) const XDP_PASS: u32 = 2;
pub(super) const XDP_REDIRECT: u32 = 4;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A namespace + pin dir that disappear when dropped, also on panic.
struct Fixture {
    ns: String,
    pins: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = NetNs::delete(&self.ns);
        let _ = super::remove_pins(&self.pins);
    }
}

pub(super) struct Env {
    pub(super) overlay: Overlay,
    pub(super) maps: Maps,
    pub(super) pins: PathBuf,
    pub(super) ul_ifindex: u32,
    pub(super) ul_mac: Mac,
    pub(super) epa_ifindex: u32,
    pub(super) epb_ifindex: u32,
    pub(super) epa_host_mac: Mac,
}

/// Sets up the namespace and runs `f` inside it.
pub(super) fn with_env(f: impl FnOnce(&mut Env) + Send + 'static) {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let fx = Fixture {
        ns: format!("shoal-ut-{}-{n}", std::process::id()),
        pins: PathBuf::from(format!("/sys/fs/bpf/shoal-ut-{}-{n}", std::process::id())),
    };
    let ns = NetNs::create(&fx.ns).expect("create test netns");
    let pins = fx.pins.clone();
    ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut env = rt.block_on(async move {
            let nl = Netlink::connect().unwrap();
            nl.add_veth("ul0", "ul0p", None, None, None).await.unwrap();
            nl.add_veth("epa", "epap", None, None, None).await.unwrap();
            nl.add_veth("epb", "epbp", None, None, None).await.unwrap();
            for l in ["ul0", "ul0p", "epa", "epap", "epb", "epbp"] {
                let i = nl.require_index(l).await.unwrap();
                nl.set_up(i).await.unwrap();
            }
            let ul = nl.require_index("ul0").await.unwrap();
            nl.add_addr(ul, LOCAL_VTEP.into(), 24).await.unwrap();
            nl.add_neigh(ul, REMOTE_VTEP, REMOTE_VTEP_MAC)
                .await
                .unwrap();
            crate::netlink::sysctl("net.ipv4.conf.ul0.forwarding", "1").unwrap();
            let epa = nl.require_index("epa").await.unwrap();
            let epb = nl.require_index("epb").await.unwrap();
            let overlay = Overlay::load(&pins, Accel::Tc.hooks(true)).unwrap();
            let mut maps = overlay.maps().unwrap();
            maps.set_config(Config {
                underlay_ifindex: ul,
                vtep_ip: super::ip_key(LOCAL_VTEP),
                vxlan_port: 4789u16.to_be(),
                ..Default::default()
            })
            .unwrap();
            maps.add_vni(VNI).unwrap();
            let epa_host_mac = nl.link_mac("epa").await.unwrap();
            let iface = |ip: Ipv4Addr, mac: Mac| IfaceValue {
                vni: VNI,
                ip: super::ip_key(ip),
                gateway: super::ip_key(GW),
                prefix_len: 24,
                mac,
                host_mac: epa_host_mac,
            };
            maps.set_iface(epa, iface(EP_A, MAC_A)).unwrap();
            maps.set_iface(epb, iface(EP_B, MAC_B)).unwrap();
            let local = |ifindex, mac| EpValue {
                ifindex,
                vtep: 0,
                mac,
                flags: EP_F_LOCAL,
            };
            maps.upsert_endpoint(VNI, EP_A, local(epa, MAC_A)).unwrap();
            maps.upsert_endpoint(VNI, EP_B, local(epb, MAC_B)).unwrap();
            maps.upsert_endpoint(
                VNI,
                EP_R,
                EpValue {
                    ifindex: 0,
                    vtep: super::ip_key(REMOTE_VTEP),
                    mac: MAC_R,
                    flags: EP_F_REMOTE,
                },
            )
            .unwrap();
            let ul_mac = nl.link_mac("ul0").await.unwrap();
            Env {
                overlay,
                maps,
                pins: pins.clone(),
                ul_ifindex: ul,
                ul_mac,
                epa_ifindex: epa,
                epb_ifindex: epb,
                epa_host_mac,
            }
        });
        f(&mut env);
    })
    .expect("run in test netns");
    drop(fx);
}

pub(super) const HOOKS: [Hook; 2] = [Hook::Tc, Hook::Xdp];

/// Runs an endpoint-side (`ep`) or underlay-side (`ul`) program once.
pub(super) fn run(
    env: &mut Env,
    hook: Hook,
    ul: bool,
    ifindex: u32,
    frame: &[u8],
) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let ebpf = env.overlay.ebpf_mut();
    let res = match hook {
        Hook::Tc => {
            let p: &mut SchedClassifier = ebpf
                .program_mut(if ul { prog::UL_TC } else { prog::EP_TC })
                .unwrap()
                .try_into()
                .unwrap();
            // struct __sk_buff: ifindex at offset 40, 192 bytes in all.
            let mut ctx = [0u8; 192];
            ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
            let mut opts = TestRunOptions::new();
            opts.data_in = Some(frame);
            opts.data_out = Some(&mut out);
            opts.ctx_in = Some(&ctx);
            p.test_run(opts).unwrap_or_else(|e| {
                panic!(
                    "tc test_run of {}-byte frame {:02x?}: {e}",
                    frame.len(),
                    &frame[..frame.len().min(20)]
                )
            })
        }
        Hook::Xdp => {
            let p: &mut Xdp = ebpf
                .program_mut(if ul { prog::UL_XDP } else { prog::EP_XDP })
                .unwrap()
                .try_into()
                .unwrap();
            // struct xdp_md: data, data_end, data_meta, ingress_ifindex, ...
            let mut ctx = [0u8; 24];
            ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
            ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
            let mut opts = TestRunOptions::new();
            opts.data_in = Some(frame);
            opts.data_out = Some(&mut out);
            opts.ctx_in = Some(&ctx);
            p.test_run(opts).expect("xdp test_run")
        }
    };
    out.truncate(res.data_size_out as usize);
    (res.return_value, out)
}

pub(super) fn verdict_redirect(h: Hook) -> u32 {
    if h == Hook::Tc {
        TC_ACT_REDIRECT
    } else {
        XDP_REDIRECT
    }
}
pub(super) fn verdict_pass(h: Hook) -> u32 {
    if h == Hook::Tc {
        TC_ACT_OK
    } else {
        XDP_PASS
    }
}
pub(super) fn verdict_drop(h: Hook) -> u32 {
    if h == Hook::Tc {
        TC_ACT_SHOT
    } else {
        XDP_DROP
    }
}

// ---- frame builders -------------------------------------------------------

pub(super) fn eth(dst: Mac, src: Mac, proto: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(1600);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&proto.to_be_bytes());
    f
}

pub(super) fn csum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An IPv4 header (with `opts` option bytes) + payload.
pub(super) fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    frag: u16,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let ihl = 5 + opts.len() / 4;
    let mut h = vec![0u8; 20];
    h[0] = 0x40 | ihl as u8;
    let tot = (ihl * 4 + payload.len()) as u16;
    h[2..4].copy_from_slice(&tot.to_be_bytes());
    h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    h.extend_from_slice(opts);
    let c = csum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

pub(super) fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

pub(super) fn arp(op: u16, sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0x00, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa.octets());
    a
}

/// An endpoint's IPv4/UDP frame from `src` to `dst`.
pub(super) fn ep_frame(
    src: Ipv4Addr,
    src_mac: Mac,
    dst: Ipv4Addr,
    dst_mac: Mac,
    payload_len: usize,
) -> Vec<u8> {
    let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
    let mut f = eth(dst_mac, src_mac, 0x0800);
    f.extend(ipv4(src, dst, 17, 0, &[], &udp(40000, 5201, &payload)));
    f
}

/// The VXLAN frame a peer VTEP would send us.
pub(super) fn vxlan_frame(
    flags: u8,
    vni: u32,
    dst_vtep: Ipv4Addr,
    dport: u16,
    outer_frag: u16,
    inner: &[u8],
) -> Vec<u8> {
    let mut vx = vec![flags, 0, 0, 0];
    vx.extend_from_slice(&(vni << 8).to_be_bytes());
    vx.extend_from_slice(inner);
    let mut f = eth([0xaa; 6], REMOTE_VTEP_MAC, 0x0800);
    f.extend(ipv4(
        REMOTE_VTEP,
        dst_vtep,
        17,
        outer_frag,
        &[],
        &udp(51000, dport, &vx),
    ));
    f
}

pub(super) fn drops(env: &Env, r: DropReason) -> u64 {
    env.maps.counters().drop_count(r)
}

/// Runs `frame` and checks it was dropped for `reason` (counter +1).
pub(super) fn expect_drop(
    env: &mut Env,
    h: Hook,
    ul: bool,
    ifindex: u32,
    frame: &[u8],
    reason: DropReason,
) {
    let before = drops(env, reason);
    let (rc, _) = run(env, h, ul, ifindex, frame);
    assert_eq!(rc, verdict_drop(h), "{h:?}: expected drop ({reason:?})");
    assert_eq!(drops(env, reason), before + 1, "{h:?}: {reason:?} counter");
}

// ---- encap side -------------------------------------------------------------

#[test]
pub(super) fn encap_produces_exact_rfc7348_frame() {
    with_env(|env| {
        for h in HOOKS {
            let inner = ep_frame(EP_A, MAC_A, EP_R, MAC_R, 100);
            let (rc, out) = run(env, h, false, env.epa_ifindex, &inner);
            assert_eq!(rc, verdict_redirect(h), "{h:?}");
            assert_eq!(out.len(), inner.len() + 50, "{h:?}");
            // Outer Ethernet from the FIB/neighbour table.
            assert_eq!(&out[0..6], &REMOTE_VTEP_MAC, "{h:?} outer dst MAC");
            assert_eq!(&out[6..12], &env.ul_mac, "{h:?} outer src MAC");
            assert_eq!(&out[12..14], &[0x08, 0x00]);
            // Outer IPv4.
            let ip = &out[14..34];
            assert_eq!(ip[0], 0x45);
            assert_eq!(
                u16::from_be_bytes([ip[2], ip[3]]) as usize,
                inner.len() + 36
            );
            assert_eq!(&ip[4..8], &[0, 0, 0x40, 0], "id 0, DF");
            assert_eq!(ip[8], 64);
            assert_eq!(ip[9], 17);
            assert_eq!(csum(ip), 0, "{h:?} outer IPv4 checksum");
            assert_eq!(&ip[12..16], &LOCAL_VTEP.octets());
            assert_eq!(&ip[16..20], &REMOTE_VTEP.octets());
            // UDP: ephemeral source port, 4789, length, checksum 0.
            let u = &out[34..42];
            let sport = u16::from_be_bytes([u[0], u[1]]);
            assert!(sport >= 49152, "{h:?} sport {sport}");
            assert_eq!(u16::from_be_bytes([u[2], u[3]]), 4789);
            assert_eq!(u16::from_be_bytes([u[4], u[5]]) as usize, inner.len() + 16);
            assert_eq!(&u[6..8], &[0, 0]);
            // VXLAN: I flag, reserved zero, VNI.
            assert_eq!(&out[42..50], &[0x08, 0, 0, 0, 0x00, 0x10, 0x01, 0x00]);
            // The inner frame, untouched.
            assert_eq!(&out[50..], &inner[..], "{h:?} inner frame");

            // Same flow, same source port; another flow may differ but
            // stays in range.
            let (_, again) = run(env, h, false, env.epa_ifindex, &inner);
            assert_eq!(&again[34..36], &out[34..36], "{h:?} sport stable per flow");
        }
    });
}

/// The tc hook keeps the FIB's answer per VTEP for a second (as vxlan's
/// dst_cache keeps a route): a neighbour whose MAC changes is followed
/// within that second, on both hooks.
#[test]
pub(super) fn a_changed_underlay_neighbour_is_followed_within_a_second() {
    with_env(|env| {
        let inner = ep_frame(EP_A, MAC_A, EP_R, MAC_R, 100);
        for h in HOOKS {
            let (_, out) = run(env, h, false, env.epa_ifindex, &inner);
            assert_eq!(&out[0..6], &REMOTE_VTEP_MAC, "{h:?} before");
        }
        let status = std::process::Command::new("ip")
            .args(["neigh", "replace", &REMOTE_VTEP.to_string()])
            .args([
                "lladdr",
                "02:00:00:00:00:22",
                "dev",
                "ul0",
                "nud",
                "permanent",
            ])
            .status()
            .unwrap();
        assert!(status.success());
        std::thread::sleep(std::time::Duration::from_millis(1100));
        for h in HOOKS {
            let (rc, out) = run(env, h, false, env.epa_ifindex, &inner);
            assert_eq!(rc, verdict_redirect(h), "{h:?}");
            assert_eq!(&out[0..6], &[2, 0, 0, 0, 0, 0x22], "{h:?} after");
            assert_eq!(&out[6..12], &env.ul_mac, "{h:?} source MAC");
        }
    });
}

#[test]
pub(super) fn encap_handles_tiny_max_options_and_fragments() {
    with_env(|env| {
        for h in HOOKS {
            // Smallest: Ethernet + bare IPv4 header.
            let mut tiny = eth(MAC_R, MAC_A, 0x0800);
            tiny.extend(ipv4(EP_A, EP_R, 253, 0, &[], &[]));
            let (rc, out) = run(env, h, false, env.epa_ifindex, &tiny);
            assert_eq!(
                (rc, out.len()),
                (verdict_redirect(h), tiny.len() + 50),
                "{h:?} tiny {:?}",
                env.maps.counters()
            );
            // Largest at the endpoint MTU (1500 - 50): 1450-byte IP packet.
            let max = ep_frame(EP_A, MAC_A, EP_R, MAC_R, 1450 - 28);
            assert_eq!(max.len(), 1464);
            let (rc, out) = run(env, h, false, env.epa_ifindex, &max);
            assert_eq!((rc, out.len()), (verdict_redirect(h), 1514), "{h:?} max");
            assert_eq!(&out[50..], &max[..]);
            // Inner IP options and inner fragments travel opaquely.
            let mut opt = eth(MAC_R, MAC_A, 0x0800);
            opt.extend(ipv4(
                EP_A,
                EP_R,
                17,
                0x2000,
                &[1, 1, 1, 0],
                &udp(1, 2, b"frag"),
            ));
            let (rc, out) = run(env, h, false, env.epa_ifindex, &opt);
            assert_eq!(rc, verdict_redirect(h), "{h:?} options+MF");
            assert_eq!(&out[50..], &opt[..]);
            // An ARP reply to a remote peer's request is encapsulated too
            // (tc cannot use adjust_room for non-IP frames).
            let mut rep = eth(MAC_R, MAC_A, 0x0806);
            rep.extend(arp(2, MAC_A, EP_A, MAC_R, EP_R));
            let (rc, out) = run(env, h, false, env.epa_ifindex, &rep);
            assert_eq!(rc, verdict_redirect(h), "{h:?} ARP reply");
            assert_eq!(&out[0..6], &REMOTE_VTEP_MAC);
            assert_eq!(&out[12..14], &[0x08, 0x00]);
            assert_eq!(csum(&out[14..34]), 0);
            assert_eq!(&out[42..50], &[0x08, 0, 0, 0, 0x00, 0x10, 0x01, 0x00]);
            assert_eq!(&out[50..], &rep[..], "{h:?} ARP reply is the inner frame");
        }
    });
}

#[test]
pub(super) fn same_node_traffic_goes_endpoint_to_endpoint() {
    with_env(|env| {
        for h in HOOKS {
            let f = ep_frame(EP_A, MAC_A, EP_B, [0xee; 6], 64);
            let (rc, out) = run(env, h, false, env.epa_ifindex, &f);
            assert_eq!(rc, verdict_redirect(h), "{h:?}");
            assert_eq!(out.len(), f.len(), "{h:?}: not encapsulated");
            assert_eq!(&out[0..6], &MAC_B, "{h:?}: dst MAC is the endpoint's");
            assert_eq!(&out[6..], &f[6..]);
        }
    });
}

#[test]
pub(super) fn arp_is_answered_without_a_bridge() {
    with_env(|env| {
        for h in HOOKS {
            let tx = verdict_redirect(h);
            for (target, mac) in [(EP_R, MAC_R), (EP_B, MAC_B), (GW, env.epa_host_mac)] {
                let mut req = eth([0xff; 6], MAC_A, 0x0806);
                req.extend(arp(1, MAC_A, EP_A, [0; 6], target));
                let (rc, out) = run(env, h, false, env.epa_ifindex, &req);
                assert_eq!(rc, tx, "{h:?} ARP {target}");
                let mut want = eth(MAC_A, mac, 0x0806);
                want.extend(arp(2, mac, target, MAC_A, EP_A));
                assert_eq!(out, want, "{h:?} ARP reply for {target}");
            }
            let mut req = eth([0xff; 6], MAC_A, 0x0806);
            req.extend(arp(1, MAC_A, EP_A, [0; 6], Ipv4Addr::new(10, 0, 1, 200)));
            expect_drop(env, h, false, env.epa_ifindex, &req, DropReason::ArpUnknown);
        }
    });
}

#[test]
pub(super) fn endpoint_side_refuses_what_it_cannot_place() {
    with_env(|env| {
        for h in HOOKS {
            let ifx = env.epa_ifindex;
            // Unknown address inside the subnet.
            let f = ep_frame(EP_A, MAC_A, Ipv4Addr::new(10, 0, 1, 77), MAC_R, 10);
            expect_drop(env, h, false, ifx, &f, DropReason::UnknownEndpoint);
            // Off-subnet goes to the kernel.
            let f = ep_frame(EP_A, MAC_A, Ipv4Addr::new(198, 19, 9, 9), MAC_R, 10);
            assert_eq!(
                run(env, h, false, ifx, &f).0,
                verdict_pass(h),
                "{h:?} off-subnet"
            );
            // IPv6 and VLAN-tagged frames are not carried.
            let mut v6 = eth(MAC_R, MAC_A, 0x86dd);
            v6.extend_from_slice(&[0x60; 40]);
            expect_drop(env, h, false, ifx, &v6, DropReason::Unsupported);
            let mut vlan = eth(MAC_R, MAC_A, 0x8100);
            vlan.extend_from_slice(&[0, 5, 0x08, 0x00]);
            vlan.extend(ipv4(EP_A, EP_R, 17, 0, &[], &[0; 8]));
            expect_drop(env, h, false, ifx, &vlan, DropReason::Unsupported);
            // Truncated ARP and IPv4 headers (the kernel's tc test_run
            // refuses an IPv4 frame shorter than its header by itself).
            let mut short = eth([0xff; 6], MAC_A, 0x0806);
            short.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
            expect_drop(env, h, false, ifx, &short, DropReason::Truncated);
            if h == Hook::Xdp {
                let mut short = eth(MAC_R, MAC_A, 0x0800);
                short.extend_from_slice(&[0x45, 0, 0, 20]);
                expect_drop(env, h, false, ifx, &short, DropReason::Truncated);
            }
            let mut bad = ep_frame(EP_A, MAC_A, EP_R, MAC_R, 10);
            bad[14] = 0x43; // ihl 3
            expect_drop(env, h, false, ifx, &bad, DropReason::InnerMalformed);
            // An interface the agent never configured.
            let f = ep_frame(EP_A, MAC_A, EP_R, MAC_R, 10);
            expect_drop(env, h, false, env.ul_ifindex, &f, DropReason::NotConfigured);
        }
    });
}

// ---- decap side ---------------------------------------------------------------

#[test]
pub(super) fn decap_delivers_inner_frame_to_the_right_endpoint() {
    with_env(|env| {
        for h in HOOKS {
            let inner = ep_frame(EP_R, MAC_R, EP_A, [0x11; 6], 200);
            let f = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &inner);
            let (rc, out) = run(env, h, true, env.ul_ifindex, &f);
            assert_eq!(rc, verdict_redirect(h), "{h:?}");
            let mut want = inner.clone();
            want[0..6].copy_from_slice(&MAC_A);
            assert_eq!(out, want, "{h:?}: inner frame with the endpoint's MAC");

            // Reserved VXLAN bits are ignored on receipt (RFC 7348).
            let f = vxlan_frame(0x0c, VNI, LOCAL_VTEP, 4789, 0, &inner);
            assert_eq!(run(env, h, true, env.ul_ifindex, &f).0, verdict_redirect(h));

            // Largest frame: inner at the endpoint MTU.
            let big = ep_frame(EP_R, MAC_R, EP_A, MAC_A, 1450 - 28);
            let f = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &big);
            assert_eq!(f.len(), 1514);
            let (rc, out) = run(env, h, true, env.ul_ifindex, &f);
            assert_eq!(
                (rc, out.len()),
                (verdict_redirect(h), big.len()),
                "{h:?} max"
            );

            // Inner ARP request for a local endpoint reaches it.
            let mut a = eth([0xff; 6], MAC_R, 0x0806);
            a.extend(arp(1, MAC_R, EP_R, [0; 6], EP_A));
            let f = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &a);
            let (rc, out) = run(env, h, true, env.ul_ifindex, &f);
            assert_eq!(rc, verdict_redirect(h), "{h:?} ARP");
            assert_eq!(&out[14..], &a[14..]);
        }
    });
}

#[test]
pub(super) fn decap_handles_outer_ip_options() {
    with_env(|env| {
        for h in HOOKS {
            let inner = ep_frame(EP_R, MAC_R, EP_A, MAC_A, 50);
            let mut vx = vec![0x08, 0, 0, 0];
            vx.extend_from_slice(&(VNI << 8).to_be_bytes());
            vx.extend_from_slice(&inner);
            let mut f = eth([0xaa; 6], REMOTE_VTEP_MAC, 0x0800);
            f.extend(ipv4(
                REMOTE_VTEP,
                LOCAL_VTEP,
                17,
                0,
                &[1, 1, 1, 0],
                &udp(51000, 4789, &vx),
            ));
            let (rc, out) = run(env, h, true, env.ul_ifindex, &f);
            assert_eq!(rc, verdict_redirect(h), "{h:?}");
            assert_eq!(out, inner, "{h:?}");
        }
    });
}

#[test]
pub(super) fn underlay_passes_what_is_not_ours() {
    with_env(|env| {
        for h in HOOKS {
            let inner = ep_frame(EP_R, MAC_R, EP_A, MAC_A, 20);
            let ul = env.ul_ifindex;
            let cases: Vec<(&str, Vec<u8>)> = vec![
                (
                    "other VTEP",
                    vxlan_frame(0x08, VNI, Ipv4Addr::new(198, 18, 0, 7), 4789, 0, &inner),
                ),
                (
                    "other port",
                    vxlan_frame(0x08, VNI, LOCAL_VTEP, 4790, 0, &inner),
                ),
                (
                    "later fragment",
                    vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0x0010, &inner),
                ),
                ("IPv6", {
                    let mut f = eth([0xaa; 6], REMOTE_VTEP_MAC, 0x86dd);
                    f.extend_from_slice(&[0x60; 60]);
                    f
                }),
                ("VLAN", {
                    let mut f = eth([0xaa; 6], REMOTE_VTEP_MAC, 0x8100);
                    f.extend_from_slice(&[0, 5, 0x08, 0x00]);
                    f.extend_from_slice(&vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &inner)[14..]);
                    f
                }),
                ("TCP", {
                    let mut f = eth([0xaa; 6], REMOTE_VTEP_MAC, 0x0800);
                    f.extend(ipv4(REMOTE_VTEP, LOCAL_VTEP, 6, 0, &[], &[0; 20]));
                    f
                }),
                ("ARP", {
                    let mut f = eth([0xff; 6], REMOTE_VTEP_MAC, 0x0806);
                    f.extend(arp(1, REMOTE_VTEP_MAC, REMOTE_VTEP, [0; 6], LOCAL_VTEP));
                    f
                }),
            ];
            for (what, f) in cases {
                let (rc, out) = run(env, h, true, ul, &f);
                assert_eq!(rc, verdict_pass(h), "{h:?} {what}");
                assert_eq!(out, f, "{h:?} {what}: untouched");
            }
        }
    });
}

#[test]
pub(super) fn decap_drops_and_counts_malformed_vxlan() {
    with_env(|env| {
        for h in HOOKS {
            let ul = env.ul_ifindex;
            let inner = ep_frame(EP_R, MAC_R, EP_A, MAC_A, 20);
            let f = vxlan_frame(0x00, VNI, LOCAL_VTEP, 4789, 0, &inner);
            expect_drop(env, h, true, ul, &f, DropReason::BadVxlanFlags);
            let f = vxlan_frame(0x08, 999, LOCAL_VTEP, 4789, 0, &inner);
            expect_drop(env, h, true, ul, &f, DropReason::UnknownVni);
            // Inner destination unknown, or remote: never delivered.
            for dst in [Ipv4Addr::new(10, 0, 1, 50), EP_R] {
                let i = ep_frame(EP_R, MAC_R, dst, MAC_A, 20);
                let f = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &i);
                expect_drop(env, h, true, ul, &f, DropReason::UnknownInnerDst);
            }
            // First fragment of a fragmented VXLAN datagram.
            let f = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0x2000, &inner);
            expect_drop(env, h, true, ul, &f, DropReason::OuterFragment);
            // Truncated: cut inside the VXLAN header, inside the inner
            // Ethernet header, inside the inner IPv4 header.
            let full = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &inner);
            for cut in [46, 56, 70] {
                expect_drop(env, h, true, ul, &full[..cut], DropReason::Truncated);
            }
            // UDP length that cannot hold VXLAN + Ethernet.
            let mut lie = full.clone();
            lie[38..40].copy_from_slice(&12u16.to_be_bytes());
            expect_drop(env, h, true, ul, &lie, DropReason::Truncated);
            // Inner IPv6 and a bogus inner IPv4 header.
            let mut v6 = eth(MAC_A, MAC_R, 0x86dd);
            v6.extend_from_slice(&[0x60; 40]);
            let f = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &v6);
            expect_drop(env, h, true, ul, &f, DropReason::Unsupported);
            let mut bad = inner.clone();
            bad[14] = 0x65;
            let f = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &bad);
            expect_drop(env, h, true, ul, &f, DropReason::InnerMalformed);
        }
    });
}
