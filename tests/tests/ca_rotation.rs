//! `shoal swarm ca --rotate` on a 3-manager, 3-worker lab under a curl loop
//! on a published port and a write loop through a follower manager:
//! nothing is lost, every node ends up trusting only the new root with a
//! certificate of it, no node's certificate is refused on the way, the old
//! join token is refused and the new one joins.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use shoal_tests::services::{create_whoami, running};
use shoal_tests::{join_token, ok, shoal, wait, Lab};

fn file(lab: &Lab, n: &str, f: &str) -> String {
    let p = PathBuf::from(format!("/run/shoal/lab/{}/nodes/{n}/{f}", lab.name));
    std::fs::read_to_string(p).unwrap()
}

/// The issuer of a node's certificate, as openssl reads it.
fn issuer(lab: &Lab, n: &str) -> String {
    let p = format!("/run/shoal/lab/{}/nodes/{n}/node.crt", lab.name);
    let o = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-issuer", "-in", &p])
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Runs `f` until `stop`, counting (done, failed) and keeping the failures.
fn looping(
    stop: Arc<AtomicBool>,
    mut f: impl FnMut(u64) -> Result<(), String> + Send + 'static,
) -> std::thread::JoinHandle<(u64, Vec<String>)> {
    std::thread::spawn(move || {
        let (mut done, mut failed) = (0, vec![]);
        while !stop.load(Ordering::Relaxed) {
            match f(done) {
                Ok(()) => done += 1,
                Err(e) => failed.push(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        (done, failed)
    })
}

#[test]
fn a_ca_rotation_under_load_loses_nothing_and_changes_the_tokens() {
    let lab = Lab::up_with(6, 0, "tc", &["--managers", "3"]);
    let old_root = file(&lab, "n1", "ca.crt");
    let old_token = join_token(&lab, "n1", "worker");
    // n6 leaves: it comes back after the rotation.
    ok(lab.shoal_on("n6", &["swarm", "leave"]));
    wait("n6 down", 30, || {
        ok(lab.shoal_on("n1", &["node", "ls"]))
            .lines()
            .any(|l| l.contains("n6") && l.contains("Down"))
    });

    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    create_whoami(&lab, "web", &["--replicas", "3", "-p", "8080:80"]);
    wait("3 web tasks", 60, || running(&lab, "n1", "web").len() == 3);
    let outside = lab.outside();
    let n4 = lab.info().nodes[3].underlay_ip.to_string();
    let url = format!("http://{n4}:8080/");
    wait("the published port", 60, || {
        let o = lab.run(&outside, &["curl", "-s", "-m", "5", &url]);
        String::from_utf8_lossy(&o.stdout).contains("Hostname:")
    });

    let stop = Arc::new(AtomicBool::new(false));
    let name = lab.name.clone();
    let curls = looping(stop.clone(), move |_| {
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", &outside, "curl", "-s", "-m", "5", &url])
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&o.stdout);
        body.contains("Hostname:")
            .then_some(())
            .ok_or_else(|| format!("curl: {body:?} {}", String::from_utf8_lossy(&o.stderr)))
    });
    // Writes through n2, a follower (forwarded to the leader).
    let writes = looping(stop.clone(), move |i| {
        let net = format!("rot{}", i % 4);
        let verb = if (i / 4) % 2 == 0 { "create" } else { "rm" };
        let bin = shoal_tests::shoal_bin().to_string_lossy().into_owned();
        let o = shoal(&[
            "lab", "exec", "--name", &name, "n2", "--", &bin, "network", verb, &net,
        ]);
        o.status.success().then_some(()).ok_or_else(|| {
            format!(
                "network {verb} {net}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )
        })
    });
    std::thread::sleep(std::time::Duration::from_secs(2));

    let t0 = std::time::Instant::now();
    let out = ok(lab.shoal_on("n1", &["swarm", "ca", "--rotate"]));
    let took = t0.elapsed();
    std::thread::sleep(std::time::Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (curled, curl_failed) = curls.join().unwrap();
    let (written, write_failed) = writes.join().unwrap();
    eprintln!("{out}\nrotation took {took:?}; {curled} requests, {written} writes");
    assert!(out.contains("rotated TLS certificates: 5/5 nodes"), "{out}");
    assert!(out.contains("rotated CA certificates"), "{out}");
    let new_root = &out[out.find("-----BEGIN").expect("the new root")..];
    assert_ne!(new_root, old_root);
    assert!(curl_failed.is_empty(), "{curl_failed:?}");
    assert!(write_failed.is_empty(), "{write_failed:?}");
    assert!(curled > 10 && written > 10, "{curled} {written}");

    // Every node in the swarm trusts the new root alone, with a
    // certificate of it; none had its certificate refused on the way.
    let nodes = ["n1", "n2", "n3", "n4", "n5"];
    for n in nodes {
        wait(&format!("{n} trusts the new root alone"), 15, || {
            file(&lab, n, "ca.crt") == new_root
        });
        assert!(
            issuer(&lab, n).contains("swarm-ca-"),
            "{n}: {}",
            issuer(&lab, n)
        );
        let log = lab.node_log(n);
        // Neither a session nor a Raft RPC was refused its certificate.
        for refused in [
            "refuse this node's certificate",
            "refused this node's certificate",
        ] {
            let hit = log.lines().find(|l| l.contains(refused));
            assert!(hit.is_none(), "{n}: {hit:?}");
        }
        assert!(
            log.contains("renewing this node's certificate from the new root"),
            "{n}"
        );
    }
    let ls = ok(lab.shoal_on("n2", &["node", "ls"]));
    for n in nodes {
        assert!(
            ls.lines().any(|l| l.contains(n) && l.contains("Ready")),
            "{ls}"
        );
    }
    assert!(!ok(lab.shoal_on("n1", &["swarm", "ca"])).contains("rotated"));

    // The old token pins the dropped root: refused in the handshake. The
    // new one joins.
    let refused = lab.shoal_on(
        "n6",
        &["swarm", "join", "--token", &old_token, "198.18.0.1:2377"],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("does not hold the CA"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let new_token = join_token(&lab, "n1", "worker");
    assert_ne!(new_token, old_token);
    assert!(ok(lab.shoal_on(
        "n6",
        &["swarm", "join", "--token", &new_token, "198.18.0.1:2377"]
    ))
    .contains("as a worker"));
    assert_eq!(file(&lab, "n6", "ca.crt"), new_root);
}
