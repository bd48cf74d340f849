//! Swarm lifecycle on a lab cluster, typed by hand as an operator would
//! (labs without a pre-formed swarm): `swarm init` and its tokens, joins
//! as manager or worker with the CA pinned by the token, `node ls` on
//! every manager, update/inspect/rm, a manager resumed from disk.

use shoal_tests::{join_token, ok, refused, Lab};

#[test]
fn swarm_init_join_tokens_node_ls_and_restart() {
    let lab = Lab::up_with(2, 1, "tc", &["--managers", "0"]);
    let init = ok(lab.shoal_on("n1", &["swarm", "init", "--advertise-addr", "198.18.0.1"]));
    assert!(
        init.starts_with("Swarm initialized: current node ("),
        "{init}"
    );
    assert!(init.contains("is now a manager."), "{init}");
    let join_line = init
        .lines()
        .find(|l| l.contains("shoal swarm join --token"))
        .expect("join command");
    assert!(
        join_line.trim_end().ends_with("198.18.0.1:2377"),
        "{join_line}"
    );

    let worker = join_token(&lab, "n1", "worker");
    let manager = join_token(&lab, "n1", "manager");
    assert!(join_line.contains(&worker));
    // SWMTKN-1-<CA digest>-<secret>: same CA digest, different secrets.
    let parts = |t: &str| t.split('-').map(String::from).collect::<Vec<_>>();
    let (w, m) = (parts(&worker), parts(&manager));
    assert_eq!(
        (
            w.len(),
            w[0].as_str(),
            w[1].as_str(),
            w[2].len(),
            w[3].len()
        ),
        (4, "SWMTKN", "1", 50, 25)
    );
    assert_eq!(w[2], m[2]);
    assert_ne!(w[3], m[3]);
    let rotated = ok(lab.shoal_on("n1", &["swarm", "join-token", "--rotate", "-q", "worker"]))
        .trim()
        .to_string();
    assert_ne!(rotated, worker);
    assert_eq!(parts(&rotated)[2], w[2], "rotation keeps the CA");
    assert_eq!(
        ok(lab.shoal_on("n1", &["swarm", "join-token", "-q", "worker"])).trim(),
        rotated
    );

    let ls = ok(lab.shoal_on("n1", &["node", "ls", "--format", "json"]));
    let rows: Vec<serde_json::Value> = ls
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{ls}");
    assert_eq!(rows[0]["Hostname"], "n1");
    assert_eq!(rows[0]["Status"], "Ready");
    assert_eq!(rows[0]["Availability"], "Active");
    assert_eq!(rows[0]["ManagerStatus"], "Leader");
    assert_eq!(rows[0]["Self"], true);
    let table = ok(lab.shoal_on("n1", &["node", "ls"]));
    assert!(table.lines().nth(1).unwrap().contains(" * "), "{table}");

    // Refusals: init twice; swarm commands on a node outside the swarm.
    let again = lab.shoal_on("n1", &["swarm", "init"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already part of a swarm"));
    let n2 = lab.shoal_on("n2", &["node", "ls"]);
    assert!(String::from_utf8_lossy(&n2.stderr).contains("not a swarm manager"));

    // The manager restarts from its disk: same node, leader again, same token.
    shoal_tests::shoal_ok(&["lab", "restart", "--name", &lab.name, "n1"]);
    let t0 = std::time::Instant::now();
    let after = loop {
        let o = lab.shoal_on("n1", &["node", "ls", "--format", "json"]);
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        if o.status.success() && s.contains("\"Leader\"") {
            break s;
        }
        assert!(
            t0.elapsed().as_secs() < 15,
            "no leader after restart: {s} {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(after.contains(rows[0]["ID"].as_str().unwrap()));
    assert_eq!(
        ok(lab.shoal_on("n1", &["swarm", "join-token", "-q", "worker"])).trim(),
        rotated
    );
}

#[test]
fn nodes_join_as_manager_or_worker_by_token_and_the_ca_is_pinned() {
    let lab = Lab::up_with(4, 1, "tc", &["--managers", "0"]);
    ok(lab.shoal_on("n1", &["swarm", "init"]));
    let worker = join_token(&lab, "n1", "worker");
    let manager = join_token(&lab, "n1", "manager");

    // A token that pins another CA, and one with a wrong secret: refused.
    let mut other_ca = worker.clone();
    other_ca.replace_range(9..10, if &worker[9..10] == "a" { "b" } else { "a" });
    refused(
        &lab,
        "n4",
        &["swarm", "join", "--token", &other_ca, "198.18.0.1:2377"],
        "does not hold the CA",
    );
    let bad_secret = format!(
        "{}{}",
        &worker[..worker.len() - 25],
        "0000000000000000000000000"
    );
    refused(
        &lab,
        "n4",
        &["swarm", "join", "--token", &bad_secret, "198.18.0.1:2377"],
        "invalid join token",
    );
    let e = lab.shoal_on(
        "n4",
        &[
            "swarm",
            "join",
            "--token",
            "SWMTKN-1-nope",
            "198.18.0.1:2377",
        ],
    );
    assert!(String::from_utf8_lossy(&e.stderr).contains("invalid join token"));

    assert!(ok(lab.shoal_on(
        "n2",
        &["swarm", "join", "--token", &manager, "198.18.0.1:2377"]
    ))
    .contains("as a manager"));
    assert!(ok(lab.shoal_on(
        "n3",
        &["swarm", "join", "--token", &worker, "198.18.0.1:2377"]
    ))
    .contains("as a worker"));
    let again = lab.shoal_on(
        "n3",
        &["swarm", "join", "--token", &worker, "198.18.0.1:2377"],
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("already part of a swarm"));

    let rows = |node: &str| -> Vec<serde_json::Value> {
        ok(lab.shoal_on(node, &["node", "ls", "--format", "json"]))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let on_n1 = rows("n1");
    let status: Vec<(String, String)> = on_n1
        .iter()
        .map(|r| {
            (
                r["Hostname"].as_str().unwrap().to_string(),
                r["ManagerStatus"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        status,
        vec![
            ("n1".into(), "Leader".into()),
            ("n2".into(), "Reachable".into()),
            ("n3".into(), String::new())
        ]
    );
    // The second manager holds the same replicated state.
    let t0 = std::time::Instant::now();
    while rows("n2").len() != 3 {
        assert!(t0.elapsed().as_secs() < 10, "n2 did not catch up");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // A worker is not a manager.
    let w = lab.shoal_on("n3", &["node", "ls"]);
    assert!(String::from_utf8_lossy(&w.stderr).contains("not a swarm manager"));

    // Update, inspect and remove through the leader.
    ok(lab.shoal_on(
        "n1",
        &[
            "node",
            "update",
            "--availability",
            "drain",
            "--label-add",
            "zone=b",
            "n3",
        ],
    ));
    let v: serde_json::Value =
        serde_json::from_str(&ok(lab.shoal_on("n1", &["node", "inspect", "n3"]))).unwrap();
    assert_eq!(v[0]["Spec"]["Availability"], "drain");
    assert_eq!(v[0]["Spec"]["Labels"]["zone"], "b");
    assert_eq!(v[0]["Spec"]["Role"], "worker");
    let e = lab.shoal_on("n1", &["node", "rm", "n2"]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("is a manager"));
    refused(&lab, "n1", &["node", "rm", "n3"], "is not down");
    ok(lab.shoal_on("n1", &["node", "rm", "--force", "n3"]));
    assert_eq!(rows("n1").len(), 2);
    // The removed worker learns it at its next heartbeat and leaves.
    let t0 = std::time::Instant::now();
    loop {
        let o = lab.shoal_on("n3", &["node", "ls"]);
        if String::from_utf8_lossy(&o.stderr).contains("shoal swarm join") {
            break;
        }
        assert!(t0.elapsed().as_secs() < 10, "n3 did not leave");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The private key of a node's certificate is made on the node and never
/// leaves it (it sends a CSR): after joins and a promotion no byte of a
/// joined node's key is anywhere in the manager's data dir (certificates,
/// the Raft log and snapshots), while the node holds it (0600) and its
/// certificate certifies it.
#[test]
fn a_joined_node_s_private_key_never_leaves_it() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::up(3, 0, "tc");
    let dir = |n: &str| std::path::PathBuf::from(format!("/run/shoal/lab/{}/nodes/{n}", lab.name));
    // The key's base64 body lines (the PEM armour is the same everywhere).
    let key_lines = |n: &str| -> Vec<String> {
        let p = dir(n).join("node.key");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
        std::fs::read_to_string(&p)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 32)
            .map(String::from)
            .collect()
    };
    let nowhere_on_n1 = |lines: &[String]| {
        assert!(!lines.is_empty());
        let mut stack = vec![dir("n1")];
        let mut files = 0;
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(bytes) = std::fs::read(&p) {
                    files += 1;
                    for l in lines {
                        assert!(
                            !bytes.windows(l.len()).any(|w| w == l.as_bytes()),
                            "a joined node's key is in {}",
                            p.display()
                        );
                    }
                }
            }
        }
        assert!(files > 3, "looked at {files} files of n1");
    };
    // A join whose certificate request does not verify is refused (the
    // manager makes no key for anyone): straight to the control port,
    // the CA pinned.
    let token = join_token(&lab, "n1", "worker");
    let ls: serde_json::Value = serde_json::from_str(&ok(shoal_tests::shoal(&[
        "lab", "ls", "--name", &lab.name, "--format", "json",
    ])))
    .unwrap();
    let outside = ls["clients"][0]["netns"].as_str().unwrap().to_string();
    let body = serde_json::json!({
        "token": token, "hostname": "x", "addr": "198.18.0.77", "raft_id": 7,
        "control_addr": "198.18.0.77:2377", "csr_pem": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    })
    .to_string();
    let ca = dir("n1").join("ca.crt").to_string_lossy().into_owned();
    let o = lab.run(
        &outside,
        &[
            "curl",
            "-s",
            "--cacert",
            &ca,
            "-H",
            "content-type: application/json",
            "-d",
            &body,
            "https://198.18.0.1:2377/swarm/join",
        ],
    );
    let reply = String::from_utf8_lossy(&o.stdout);
    assert!(
        reply.contains("the certificate request is invalid"),
        "{reply}"
    );
    assert!(!ok(lab.shoal_on("n1", &["node", "ls"])).contains(" x "));
    let (k2, k3) = (key_lines("n2"), key_lines("n3"));
    nowhere_on_n1(&k2);
    nowhere_on_n1(&k3);
    // A promotion gives n2 a manager certificate for a new key of its own.
    let role_in_cert = |ou: &'static [u8]| {
        move || {
            std::fs::read_to_string(dir("n2").join("node.crt")).is_ok_and(|c| {
                use rustls_pki_types::pem::PemObject;
                let der = rustls_pki_types::CertificateDer::from_pem_slice(c.as_bytes())
                    .map(|d| d.to_vec())
                    .unwrap_or_default();
                der.windows(ou.len()).any(|w| w == ou)
            })
        }
    };
    ok(lab.shoal_on("n1", &["node", "promote", "n2"]));
    shoal_tests::wait(
        "n2's manager certificate",
        30,
        role_in_cert(b"swarm-manager"),
    );
    let k2b = key_lines("n2");
    assert_ne!(k2, k2b, "a new key for the new certificate");
    nowhere_on_n1(&k2b);
    // n2 works as a manager with it (its Raft log now has the state).
    ok(lab.shoal_on("n2", &["node", "ls"]));
    // A demotion gives it a worker certificate, again for a new key.
    ok(lab.shoal_on("n1", &["node", "demote", "n2"]));
    shoal_tests::wait("n2's worker certificate", 30, role_in_cert(b"swarm-worker"));
    let k2c = key_lines("n2");
    assert_ne!(k2b, k2c, "a new key for the worker certificate");
    nowhere_on_n1(&k2c);
}
