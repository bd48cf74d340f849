//! Node certificates over time on a 3-node lab (n1 the manager): a
//! lifetime shortened by `swarm update --cert-expiry` applies at once,
//! nodes renew by themselves in the last half of it with no session drop,
//! `node inspect` shows the expiry; an expired certificate is refused at
//! the handshake with one line in both logs; a removed node's certificate
//! is refused within a second; garbage on 2377 is counted.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use shoal_tests::{ok, refused, shoal_ok, wait, Lab};

fn dir(lab: &Lab, n: &str) -> PathBuf {
    PathBuf::from(format!("/run/shoal/lab/{}/nodes/{n}", lab.name))
}

/// The outside client's namespace (where curl runs).
fn outside(lab: &Lab) -> String {
    format!("{}-client", lab.name)
}

/// A manager's control-port refusals by reason, from its /metrics.
fn refusals(lab: &Lab, reason: &str) -> u64 {
    let m = lab.run_ok(
        &outside(lab),
        &["curl", "-s", "http://198.18.0.1:9323/metrics"],
    );
    let want = format!("reason=\"{reason}\"");
    m.lines()
        .find(|l| l.starts_with("shoal_control_handshakes_refused_total") && l.contains(&want))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {reason} refusals in:\n{m}"))
}

/// A session call to n1 with a copy of a node's certificate and key, from
/// outside: curl's exit code (0: the handshake and request went through).
fn session_with(lab: &Lab, cert: &str, key: &str) -> (i32, String) {
    let ca = dir(lab, "n1").join("ca.crt").to_string_lossy().into_owned();
    let o = lab.run(
        &outside(lab),
        &[
            "curl",
            "-s",
            "-S",
            "--cacert",
            &ca,
            "--cert",
            cert,
            "--key",
            key,
            "-H",
            "content-type: application/json",
            "-d",
            "{}",
            "https://198.18.0.1:2377/swarm/session",
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code().unwrap_or(-1), text)
}

/// Keeps a copy of a node's current certificate and key.
fn keep(lab: &Lab, n: &str, tag: &str) -> (String, String) {
    let tmp = std::env::temp_dir().join(format!("{}-{n}-{tag}", lab.name));
    std::fs::create_dir_all(&tmp).unwrap();
    let (c, k) = (tmp.join("node.crt"), tmp.join("node.key"));
    std::fs::copy(dir(lab, n).join("node.crt"), &c).unwrap();
    std::fs::copy(dir(lab, n).join("node.key"), &k).unwrap();
    (c.to_string_lossy().into(), k.to_string_lossy().into())
}

fn cert(lab: &Lab, n: &str) -> String {
    std::fs::read_to_string(dir(lab, n).join("node.crt")).unwrap()
}

fn node_ready(lab: &Lab, n: &str) -> bool {
    let ls = ok(lab.shoal_on("n1", &["node", "ls"]));
    ls.lines()
        .any(|l| l.split_whitespace().any(|w| w == n) && l.contains("Ready"))
}

#[test]
fn certificates_renew_expire_and_a_removed_node_s_is_refused_at_once() {
    let lab = Lab::up_with(3, 0, "tc", &["--daemon-arg=--min-cert-expiry=10s"]);
    // Bad lifetimes are refused with the range; garbage by the CLI.
    refused(
        &lab,
        "n1",
        &["swarm", "update", "--cert-expiry", "5s"],
        "between 10s and 10 years",
    );
    refused(
        &lab,
        "n1",
        &["swarm", "update", "--cert-expiry", "banana"],
        "banana",
    );
    let before = cert(&lab, "n3");
    ok(lab.shoal_on("n1", &["swarm", "update", "--cert-expiry", "20s"]));
    let inspect = ok(lab.shoal_on("n1", &["swarm", "inspect"]));
    assert!(inspect.contains("\"NodeCertExpiryMs\": 20000"), "{inspect}");

    // Renewals: the 90-day certificate goes at once, then a new one every
    // 10-18 s; n3 stays Ready throughout and is never refused.
    let old = keep(&lab, "n3", "old");
    let mut seen = vec![before];
    let t0 = Instant::now();
    while seen.len() < 4 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{} certificates in 60 s",
            seen.len()
        );
        assert!(
            node_ready(&lab, "n3"),
            "{}",
            ok(lab.shoal_on("n1", &["node", "ls"]))
        );
        let c = cert(&lab, "n3");
        if seen.last() != Some(&c) {
            seen.push(c);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let log3 = lab.node_log("n3");
    assert!(
        log3.matches("node certificate renewed").count() >= 3,
        "{log3}"
    );
    assert!(!log3.contains("the managers refuse"), "{log3}");
    // node inspect: the expiry n3's heartbeat reported, within 20 s.
    let ni: serde_json::Value =
        serde_json::from_str(&ok(lab.shoal_on("n1", &["node", "inspect", "n3"]))).unwrap();
    let until = ni[0]["Description"]["TLSInfo"]["CertNotAfter"]
        .as_str()
        .unwrap_or_else(|| panic!("{ni}"));
    let until = humantime::parse_rfc3339(until).unwrap_or_else(|e| panic!("{until}: {e}"));
    let left = until.duration_since(SystemTime::now()).unwrap_or_default();
    assert!(left <= Duration::from_secs(21), "{left:?}");

    // n3's first certificate is still within its 90 days but no longer its
    // own: a copy used from outside is still a member's (not revoked).
    let (code, text) = session_with(&lab, &old.0, &old.1);
    assert_eq!(code, 0, "{text}");

    // Expired: n2 stopped past its certificate's end, then started.
    let expired0 = refusals(&lab, "expired");
    shoal_ok(&["lab", "stop", "--name", &lab.name, "n2"]);
    std::thread::sleep(Duration::from_secs(21));
    shoal_ok(&["lab", "start", "--name", &lab.name, "n2"]);
    wait("n2 told its certificate expired", 20, || {
        lab.node_log("n2")
            .contains("the managers refuse this node's certificate (expired)")
    });
    assert!(refusals(&lab, "expired") > expired0);
    let log1 = lab.node_log("n1");
    assert!(
        log1.lines()
            .any(|l| l.contains("refused a certificate") && l.contains("expired")),
        "{log1}"
    );

    // Removed: n3's current certificate is refused within a second of
    // `node rm`, at the handshake; n3 leaves by itself.
    let cur = keep(&lab, "n3", "cur");
    assert_eq!(session_with(&lab, &cur.0, &cur.1).0, 0);
    let revoked0 = refusals(&lab, "revoked");
    let t = Instant::now();
    ok(lab.shoal_on("n1", &["node", "rm", "--force", "n3"]));
    let took = wait("n3's certificate refused", 5, || {
        session_with(&lab, &cur.0, &cur.1).0 != 0
    });
    eprintln!(
        "refused {took:?} after the removal ({:?} with the command)",
        t.elapsed()
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(refusals(&lab, "revoked") > revoked0);
    // Its older certificate too.
    assert_ne!(session_with(&lab, &old.0, &old.1).0, 0);
    wait("n3 left", 10, || {
        lab.node_log("n3").contains("leaving the swarm")
    });
    let inspect = ok(lab.shoal_on("n1", &["swarm", "inspect"]));
    assert!(inspect.contains("RevokedNodes"), "{inspect}");

    // Bytes that are not TLS are counted, and change nothing.
    let malformed0 = refusals(&lab, "malformed");
    let plain = "exec 3<>/dev/tcp/198.18.0.1/2377; printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3; timeout 3 cat <&3";
    lab.run(&outside(&lab), &["bash", "-c", plain]);
    wait("garbage counted", 5, || {
        refusals(&lab, "malformed") > malformed0
    });
    assert!(node_ready(&lab, "n1"));
}
