//! BPF_PROG_TEST_RUN tests of encrypted networks (`VNI_F_ENCRYPTED`): their
//! frames leave only through the IPsec interface and are taken from the
//! underlay only as IPsec decrypted them; the harness is in `tests.rs`.

use shoal_ebpf::{DropReason, DECRYPT_MARK, VNI_F_ENCRYPTED};

use super::tests::*;
use super::Hook;

fn encrypt(env: &mut Env, xfrm_ifindex: u32) {
    env.maps.add_vni(VNI, VNI_F_ENCRYPTED).unwrap();
    let mut cfg = env.maps.config().unwrap();
    cfg.xfrm_ifindex = xfrm_ifindex;
    env.maps.set_config(cfg).unwrap();
}

#[test]
fn an_encrypted_network_s_frames_leave_only_through_ipsec() {
    with_env(|env| {
        let inner = ep_frame(EP_A, MAC_A, EP_R, MAC_R, 100);
        // No IPsec interface: dropped, never sent in clear.
        encrypt(env, 0);
        let before = env.maps.counters().drop_count(DropReason::CannotEncrypt);
        let (rc, _) = run(env, Hook::Tc, false, env.epa_ifindex, &inner);
        assert_eq!(rc, TC_ACT_SHOT);
        let after = env.maps.counters().drop_count(DropReason::CannotEncrypt);
        assert_eq!(after, before + 1);
        // XDP leaves it to tc (only tc can hand it to IPsec), untouched.
        let (rc, out) = run(env, Hook::Xdp, false, env.epa_ifindex, &inner);
        assert_eq!((rc, &out), (XDP_PASS, &inner));

        // With the interface: the same VXLAN frame as a plain network's,
        // redirected (to the interface, not the underlay: the nexthop
        // cache is not consulted, so the outer MACs stay unset).
        encrypt(env, env.epb_ifindex);
        let (rc, out) = run(env, Hook::Tc, false, env.epa_ifindex, &inner);
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(out.len(), inner.len() + 50);
        assert_eq!(&out[26..30], &LOCAL_VTEP.octets());
        assert_eq!(&out[30..34], &REMOTE_VTEP.octets());
        assert_eq!(&out[50..], &inner[..]);
        assert_ne!(
            &out[0..6],
            &REMOTE_VTEP_MAC,
            "not routed out of the underlay"
        );

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
fn clear_vxlan_of_an_encrypted_network_is_refused_and_decrypted_is_delivered() {
    with_env(|env| {
        encrypt(env, env.epb_ifindex);
        let inner = ep_frame(EP_R, MAC_R, EP_A, MAC_A, 200);
        let f = vxlan_frame(0x08, VNI, LOCAL_VTEP, 4789, 0, &inner);
        let clear = |env: &Env| env.maps.counters().drop_count(DropReason::ClearOnEncrypted);
        let before = clear(env);
        // In clear off the wire: XDP and tc drop it, counted.
        assert_eq!(run(env, Hook::Xdp, true, env.ul_ifindex, &f).0, XDP_DROP);
        assert_eq!(run(env, Hook::Tc, true, env.ul_ifindex, &f).0, TC_ACT_SHOT);
        // A mark that is not the decrypt mark is no better.
        let (rc, _) = run_marked(env, Hook::Tc, true, env.ul_ifindex, 0x100, &f);
        assert_eq!(rc, TC_ACT_SHOT);
        assert_eq!(clear(env), before + 3);
        // As the inbound SA marks what it decrypted: delivered.
        let (rc, out) = run_marked(env, Hook::Tc, true, env.ul_ifindex, DECRYPT_MARK, &f);
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(out, inner);
        // A plain network takes clear frames as before.
        env.maps.add_vni(VNI, 0).unwrap();
        for h in HOOKS {
            assert_eq!(
                run(env, h, true, env.ul_ifindex, &f).0,
                verdict_redirect(h),
                "{h:?}"
            );
        }
    });
}
