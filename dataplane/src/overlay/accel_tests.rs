//! `--accel` changed across a restart: the new run's hooks are the only
//! ones left on the underlay and on an endpoint, never the old run's XDP
//! beside the new run's tc (both would act on every packet).

use super::tests::with_env;
use super::{Accel, Overlay};

/// Whether `ifname` has an XDP program attached (`ip -d link show`).
fn has_xdp(ifname: &str) -> bool {
    let out = std::process::Command::new("ip")
        .args(["-d", "link", "show", ifname])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

#[test]
fn a_restart_with_another_accel_keeps_only_its_own_hooks() {
    with_env(|env| {
        let pins = env.pins.join("switch");
        // A run with XDP on both sides.
        let mut xdp = Overlay::load(&pins, Accel::Xdp.hooks(true)).unwrap();
        xdp.attach_underlay("ul0").unwrap();
        xdp.attach_endpoint("epb").unwrap();
        drop(xdp);
        assert!(
            has_xdp("ul0") && has_xdp("epb"),
            "pinned XDP outlives its run"
        );

        // Restarted with tc: the old XDP goes.
        let mut tc = Overlay::load(&pins, Accel::Tc.hooks(true)).unwrap();
        tc.attach_underlay("ul0").unwrap();
        tc.attach_endpoint("epb").unwrap();
        drop(tc);
        assert!(!has_xdp("ul0"), "underlay still has the earlier run's XDP");
        assert!(!has_xdp("epb"), "endpoint still has the earlier run's XDP");

        // And back to XDP.
        let mut again = Overlay::load(&pins, Accel::Xdp.hooks(true)).unwrap();
        again.attach_underlay("ul0").unwrap();
        assert!(has_xdp("ul0"));
    });
}
