//! BPF_PROG_TEST_RUN tests of encrypted networks (`VNI_F_ENCRYPTED`): their
//! frames leave only through the network's vxlan device, addressed to the
//! MAC that stands for the peer node, and are taken only from that device
//! as IPsec decrypted them; the harness is in `tests.rs`. End to end
//! (ESP on the wire) in the VM: `tests/encrypted.rs`.

use shoal_ebpf::{
    prog, DropReason, IfaceValue, Stat, DECRYPT_MARK, EP_F_CLEAR, IFACE_F_CLEAR, VNI_F_ENCRYPTED,
};

use super::tests::*;
use super::Hook;

const PORT: u16 = 4790;

/// VNI encrypted, its device `dev` (0: none yet), which is then also
/// known to the vx program (as the agent registers it).
fn encrypt(env: &mut Env, dev: u32) {
    env.maps.add_vni(VNI, VNI_F_ENCRYPTED).unwrap();
    // The agent never marks an encrypted network's endpoints clear.
    for (ifindex, mut v) in env.maps.ifaces() {
        v.flags &= !IFACE_F_CLEAR;
        env.maps.set_iface(ifindex, v).unwrap();
    }
    for ip in [EP_A, EP_B] {
        let mut v = env.maps.endpoint(VNI, ip).unwrap();
        v.flags &= !EP_F_CLEAR;
        env.maps.upsert_endpoint(VNI, ip, v).unwrap();
    }
    env.maps.set_vni_device(VNI, dev).unwrap();
    let mut cfg = env.maps.config().unwrap();
    cfg.crypt_port = if dev == 0 { 0 } else { PORT.to_be() };
    env.maps.set_config(cfg).unwrap();
    if dev != 0 {
        let v = IfaceValue {
            vni: VNI,
            ..Default::default()
        };
        env.maps.set_iface(dev, v).unwrap();
    }
}

/// The MAC standing for `vtep`.
fn vmac(vtep: std::net::Ipv4Addr) -> [u8; 6] {
    let o = vtep.octets();
    [0x02, 0x5e, o[0], o[1], o[2], o[3]]
}

#[test]
fn an_encrypted_network_s_frames_leave_only_through_ipsec() {
    with_env(|env| {
        let inner = ep_frame(EP_A, MAC_A, EP_R, MAC_R, 100);
        // No vxlan device: dropped, never sent in clear.
        encrypt(env, 0);
        let before = drops(env, DropReason::CannotEncrypt);
        let (rc, _) = run(env, Hook::Tc, false, env.epa_ifindex, &inner);
        assert_eq!(rc, TC_ACT_SHOT);
        assert_eq!(drops(env, DropReason::CannotEncrypt), before + 1);
        // XDP leaves it to tc (only tc can hand it to IPsec), untouched.
        let (rc, out) = run(env, Hook::Xdp, false, env.epa_ifindex, &inner);
        assert_eq!((rc, &out), (XDP_PASS, &inner));

        // With the network's device (ul0 stands in for it): the frame
        // goes to it whole (the kernel's vxlan adds the headers),
        // addressed to the peer's MAC (the device's forwarding entry for
        // it) from this node's; unmarked, so the device's route cache
        // holds.
        let dev = env.ul_ifindex;
        encrypt(env, dev);
        let encaps = env.maps.counters().stat(Stat::Encap);
        let (rc, out, mark) = run_tc(env, prog::EP_TC, env.epa_ifindex, 0x10000, &inner);
        assert_eq!((rc, mark), (TC_ACT_REDIRECT, 0));
        assert_eq!(&out[0..6], &vmac(REMOTE_VTEP));
        assert_eq!(&out[6..12], &vmac(LOCAL_VTEP));
        assert_eq!(&out[12..], &inner[12..], "not encapsulated by the program");
        assert_eq!(env.maps.counters().stat(Stat::Encap), encaps + 1);
        // Joining the network again (another endpoint) keeps the device.
        env.maps.add_vni(VNI, VNI_F_ENCRYPTED).unwrap();
        let (rc, _, _) = run_tc(env, prog::EP_TC, env.epa_ifindex, 0, &inner);
        assert_eq!(rc, TC_ACT_REDIRECT);

        // Same-node traffic stays as fast as on a plain network.
        let local = ep_frame(EP_A, MAC_A, EP_B, MAC_B, 100);
        for h in HOOKS {
            assert_eq!(
                run(env, h, false, env.epa_ifindex, &local).0,
                verdict_redirect(h),
                "{h:?}"
            );
        }
    });
}

#[test]
fn clear_frames_of_an_encrypted_network_are_refused_everywhere() {
    with_env(|env| {
        let dev = env.ul_ifindex;
        encrypt(env, dev);
        let inner = ep_frame(EP_R, MAC_R, EP_A, MAC_A, 200);
        let clear = |env: &Env| drops(env, DropReason::ClearOnEncrypted);
        let before = clear(env);
        // Its VXLAN in clear on the plain networks' port: XDP and tc
        // drop it, counted, whatever its mark (decrypted frames never
        // come back to the underlay's programs).
        let f = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &inner);
        assert_eq!(run(env, Hook::Xdp, true, env.ul_ifindex, &f).0, XDP_DROP);
        assert_eq!(run(env, Hook::Tc, true, env.ul_ifindex, &f).0, TC_ACT_SHOT);
        let (rc, _) = run_marked(env, Hook::Tc, true, env.ul_ifindex, DECRYPT_MARK, &f);
        assert_eq!(rc, TC_ACT_SHOT);
        assert_eq!(clear(env), before + 3);
        // On the encrypted networks' port in clear (skipping IPsec to
        // reach the device's socket): dropped too, any VNI.
        env.maps.add_vni(VNI + 1, 0).unwrap();
        for vni in [VNI, VNI + 1] {
            let f = vxlan_frame(0x08, vni, LOCAL_VTEP, PORT, 0, &inner);
            for h in HOOKS {
                assert_eq!(
                    run(env, h, true, env.ul_ifindex, &f).0,
                    verdict_drop(h),
                    "{h:?}"
                );
            }
        }
        assert_eq!(clear(env), before + 7);

        // At the network's device: nothing without the inbound SA's
        // mark, nor what does not come from a node's MAC.
        let decrypted = |inner: &[u8]| {
            let mut f = inner.to_vec();
            f[6..12].copy_from_slice(&vmac(REMOTE_VTEP));
            f
        };
        let (rc, _, _) = run_tc(env, prog::VX_TC, dev, 0, &decrypted(&inner));
        assert_eq!(rc, TC_ACT_SHOT);
        assert_eq!(clear(env), before + 8);
        let malformed = drops(env, DropReason::InnerMalformed);
        let (rc, _, _) = run_tc(env, prog::VX_TC, dev, DECRYPT_MARK, &inner);
        assert_eq!(rc, TC_ACT_SHOT);
        assert_eq!(drops(env, DropReason::InnerMalformed), malformed + 1);
        // As the inbound SA marked it: delivered to the endpoint, its
        // MAC restored, unmarked.
        let (rc, out, mark) = run_tc(env, prog::VX_TC, dev, DECRYPT_MARK, &decrypted(&inner));
        assert_eq!((rc, mark), (TC_ACT_REDIRECT, 0));
        assert_eq!(&out[0..6], &MAC_A);
        assert_eq!(&out[12..], &inner[12..]);
        // A device whose network is no longer encrypted here delivers
        // nothing.
        env.maps.add_vni(VNI, 0).unwrap();
        let (rc, _, _) = run_tc(env, prog::VX_TC, dev, DECRYPT_MARK, &decrypted(&inner));
        assert_eq!(rc, TC_ACT_SHOT);

        // A plain network takes clear frames on 4789 as before.
        let f = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &inner);
        for h in HOOKS {
            assert_eq!(
                run(env, h, true, env.ul_ifindex, &f).0,
                verdict_redirect(h),
                "{h:?}"
            );
        }
    });
}

/// What the encap reads for an endpoint's network: its own entry's mark
/// when the agent set one (`IFACE_F_CLEAR`, only ever for plain networks:
/// `local_table::plumb`), else the network's entry. Unmarked entries of an
/// encrypted network never leave in clear.
#[test]
fn encap_reads_the_endpoint_s_clear_mark_before_the_network_s_entry() {
    with_env(|env| {
        let inner = ep_frame(EP_A, MAC_A, EP_R, MAC_R, 100);
        // Marked clear (as the env marks its plain network), the network's
        // entry is not read: VXLAN on the underlay.
        env.maps.add_vni(VNI, VNI_F_ENCRYPTED).unwrap();
        let (rc, out) = run(env, Hook::Tc, false, env.epa_ifindex, &inner);
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(out.len(), inner.len() + 50, "encapsulated");
        // Unmarked, the entry decides: encrypted, and no device yet.
        encrypt(env, 0);
        let before = drops(env, DropReason::CannotEncrypt);
        let (rc, _) = run(env, Hook::Tc, false, env.epa_ifindex, &inner);
        assert_eq!(rc, TC_ACT_SHOT);
        assert_eq!(drops(env, DropReason::CannotEncrypt), before + 1);
    });
}
