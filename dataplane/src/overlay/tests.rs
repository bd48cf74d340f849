//! The harness of the BPF_PROG_TEST_RUN tests of the overlay programs on
//! crafted frames, for both hooks (the tests: `*_tests.rs` beside this
//! file). Each test builds a throwaway network namespace with an
//! "underlay" veth (198.18.0.1/24, the remote VTEP 198.18.0.2 as a permanent
//! neighbour) and an endpoint's host-side veth, loads the object with its
//! maps pinned under a throwaway bpffs directory, and runs the programs
//! there (the kernel resolves ifindexes and FIB lookups in the caller's
//! namespace). Needs root.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use shoal_ebpf::{
    prog, Config, DropReason, EpValue, IfaceValue, EP_F_CLEAR, EP_F_LOCAL, EP_F_REMOTE,
    IFACE_F_CLEAR,
};

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
            maps.add_vni(VNI, 0).unwrap();
            let epa_host_mac = nl.link_mac("epa").await.unwrap();
            // Traffic slots handed out as the agent does.
            let (slot_a, slot_b) = (
                maps.traffic_slot(epa, true).unwrap(),
                maps.traffic_slot(epb, true).unwrap(),
            );
            let iface = |ip: Ipv4Addr, mac: Mac, slot| IfaceValue {
                vni: VNI,
                ip: super::ip_key(ip),
                gateway: super::ip_key(GW),
                prefix_len: 24,
                mac,
                host_mac: epa_host_mac,
                // A plain network, marked so as the agent marks it.
                flags: IFACE_F_CLEAR,
                slot,
            };
            maps.set_iface(epa, iface(EP_A, MAC_A, slot_a)).unwrap();
            maps.set_iface(epb, iface(EP_B, MAC_B, slot_b)).unwrap();
            let local = |ifindex, mac, slot| EpValue {
                ifindex,
                vtep: 0,
                mac,
                flags: EP_F_LOCAL | EP_F_CLEAR,
                slot,
            };
            maps.upsert_endpoint(VNI, EP_A, local(epa, MAC_A, slot_a))
                .unwrap();
            maps.upsert_endpoint(VNI, EP_B, local(epb, MAC_B, slot_b))
                .unwrap();
            maps.upsert_endpoint(
                VNI,
                EP_R,
                EpValue {
                    ifindex: 0,
                    vtep: super::ip_key(REMOTE_VTEP),
                    mac: MAC_R,
                    flags: EP_F_REMOTE,
                    slot: 0,
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
    run_marked(env, hook, ul, ifindex, 0, frame)
}

/// `run` with `skb->mark` set (tc only: XDP has no mark).
pub(super) fn run_marked(
    env: &mut Env,
    hook: Hook,
    ul: bool,
    ifindex: u32,
    mark: u32,
    frame: &[u8],
) -> (u32, Vec<u8>) {
    match hook {
        Hook::Tc => {
            let name = if ul { prog::UL_TC } else { prog::EP_TC };
            let (rc, out, _) = run_tc(env, name, ifindex, mark, frame);
            (rc, out)
        }
        Hook::Xdp => run_xdp(env, ul, ifindex, frame),
    }
}

/// tc program `name` on `frame` arriving at `ifindex` with `mark`: its
/// verdict, the frame it left, and the mark it left.
pub(super) fn run_tc(
    env: &mut Env,
    name: &str,
    ifindex: u32,
    mark: u32,
    frame: &[u8],
) -> (u32, Vec<u8>, u32) {
    let mut out = vec![0u8; frame.len() + 256];
    let p: &mut SchedClassifier = env
        .overlay
        .ebpf_mut()
        .program_mut(name)
        .unwrap()
        .try_into()
        .unwrap();
    // struct __sk_buff: mark at offset 8, ifindex at 40, 192 bytes in all.
    let mut ctx = [0u8; 192];
    ctx[8..12].copy_from_slice(&mark.to_ne_bytes());
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    let mut ctx_out = [0u8; 192];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    opts.ctx_in = Some(&ctx);
    opts.ctx_out = Some(&mut ctx_out);
    let res = p.test_run(opts).unwrap_or_else(|e| {
        panic!(
            "tc test_run of {}-byte frame {:02x?}: {e}",
            frame.len(),
            &frame[..frame.len().min(20)]
        )
    });
    out.truncate(res.data_size_out as usize);
    let mark_out = u32::from_ne_bytes(ctx_out[8..12].try_into().unwrap());
    (res.return_value, out, mark_out)
}

fn run_xdp(env: &mut Env, ul: bool, ifindex: u32, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let ebpf = env.overlay.ebpf_mut();
    let res = {
        {
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
