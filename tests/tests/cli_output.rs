//! The CLI as a Swarm user's scripts and eyes read it, on a real lab:
//! `--format json` of the list commands prints one row a line with
//! Docker's keys and values (`service ps`, `node ls`, `service ls`,
//! `network ls`), and `service create` shows why a task cannot start while
//! it waits, within 2 s, once per slot.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::services::create_whoami;
use shoal_tests::{ok, shoal_bin, Lab};

/// `--format json` output: one object a line.
fn rows(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

/// Kills the `service create` it holds, also when the test fails.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn list_rows_are_dockers_and_a_task_that_cannot_start_says_why() {
    let lab = Lab::up(2, 0, "tc");
    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    create_whoami(&lab, "web", &["--replicas", "2"]);

    // service ps: Docker's columns and values.
    let ps = rows(&ok(
        lab.shoal_on("n1", &["service", "ps", "web", "--format", "json"])
    ));
    assert_eq!(ps.len(), 2, "{ps:?}");
    for r in &ps {
        assert_eq!(
            keys(r),
            [
                "CurrentState",
                "DesiredState",
                "Error",
                "ID",
                "Image",
                "Name",
                "Node",
                "Ports"
            ]
        );
        assert_eq!(r["DesiredState"], "Running", "{r}");
        let current = r["CurrentState"].as_str().unwrap();
        assert!(
            current.starts_with("Running ") && current.ends_with(" ago"),
            "{r}"
        );
        assert_eq!(r["Error"], "", "{r}");
        assert_eq!(r["Image"], "shoal", "{r}");
        assert_eq!(r["ID"].as_str().unwrap().len(), 12, "{r}");
        assert!(["n1", "n2"].contains(&r["Node"].as_str().unwrap()), "{r}");
    }
    let names: BTreeSet<&str> = ps.iter().map(|r| r["Name"].as_str().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["web.1", "web.2"]));

    // node ls.
    let nodes = rows(&ok(lab.shoal_on("n1", &["node", "ls", "--format", "json"])));
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    for n in &nodes {
        assert_eq!(
            keys(n),
            [
                "Availability",
                "EngineVersion",
                "Hostname",
                "ID",
                "ManagerStatus",
                "Self",
                "Status",
                "TLSStatus"
            ]
        );
        assert_eq!(n["Status"], "Ready", "{n}");
        assert_eq!(n["Availability"], "Active", "{n}");
        assert_eq!(n["TLSStatus"], "Ready", "{n}");
        let leader = n["Hostname"] == "n1";
        assert_eq!(
            n["ManagerStatus"],
            if leader { "Leader" } else { "" },
            "{n}"
        );
        assert_eq!(n["Self"], leader, "{n}");
    }

    // service ls and network ls.
    let ls = rows(&ok(
        lab.shoal_on("n1", &["service", "ls", "--format", "json"])
    ));
    assert_eq!(ls.len(), 1, "{ls:?}");
    assert_eq!(
        keys(&ls[0]),
        ["ID", "Image", "Mode", "Name", "Ports", "Replicas"]
    );
    assert_eq!(
        (&ls[0]["Name"], &ls[0]["Mode"], &ls[0]["Replicas"]),
        (&"web".into(), &"replicated".into(), &"2/2".into())
    );
    let nets = rows(&ok(
        lab.shoal_on("n1", &["network", "ls", "--format", "json"])
    ));
    let app = nets
        .iter()
        .find(|n| n["Name"] == "appnet")
        .unwrap_or_else(|| panic!("{nets:?}"));
    assert_eq!(
        keys(app),
        [
            "CreatedAt",
            "Driver",
            "ID",
            "IPv6",
            "Internal",
            "Labels",
            "Name",
            "Scope"
        ]
    );
    assert_eq!(
        (&app["Driver"], &app["Scope"]),
        (&"overlay".into(), &"swarm".into())
    );
    assert_eq!(
        (&app["Internal"], &app["IPv6"]),
        (&"false".into(), &"false".into())
    );
    assert!(
        app["CreatedAt"].as_str().unwrap().ends_with(" +0000 UTC"),
        "{app}"
    );

    // A program that does not exist: `service create` (not detached) shows
    // each slot's start error while it waits.
    let bin = shoal_bin().to_string_lossy().into_owned();
    let child = Command::new(shoal_bin())
        .args(["lab", "exec", "--name", &lab.name, "n1", "--", &bin])
        .args(["service", "create", "--name", "nope", "--replicas", "2"])
        .args(["--network", "appnet", "--restart-delay", "1s"])
        .args(["--", "no-such-program-xyz"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut create = Killed(child);
    let (tx, rx) = mpsc::channel();
    let stdout = create.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send((Instant::now(), l));
        }
    });
    let (created, id) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(id.len(), 25, "the service's id first: {id}");
    let mut seen = vec![];
    let first_err = loop {
        let left = Duration::from_secs(2).saturating_sub(created.elapsed());
        let Ok((at, l)) = rx.recv_timeout(left) else {
            panic!("no start error within 2 s of the create: {seen:?}");
        };
        if l.contains("cannot start") {
            break (at - created, l);
        }
        seen.push(l);
    };
    eprintln!("start error shown {:?} after the create", first_err.0);
    assert!(
        seen.iter()
            .any(|l| l == "overall progress: 0 out of 2 tasks"),
        "{seen:?}"
    );
    let (slot, err) = first_err.1.split_once(": ").unwrap();
    assert!(["1/2", "2/2"].contains(&slot), "{}", first_err.1);
    assert!(
        err.starts_with(r#"cannot start "no-such-program-xyz": No such file or directory"#),
        "{}",
        first_err.1
    );
    // The tasks are tried again (1 s delay) and fail the same way: each
    // slot's error is shown once.
    let mut lines = vec![first_err.1.clone()];
    let until = Instant::now() + Duration::from_secs(4);
    while let Ok((_, l)) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
        lines.push(l);
    }
    let mut per_slot: BTreeMap<&str, usize> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.contains("cannot start")) {
        *per_slot.entry(l.split(':').next().unwrap()).or_default() += 1;
    }
    assert_eq!(
        per_slot,
        BTreeMap::from([("1/2", 1), ("2/2", 1)]),
        "{lines:?}"
    );
    drop(create);

    // Its rows: rejected with the error; a retried slot's older tasks keep
    // their plain name in JSON (the table indents them, as Docker's).
    let ps = rows(&ok(lab.shoal_on(
        "n1",
        &["service", "ps", "nope", "--no-trunc", "--format", "json"],
    )));
    assert!(
        ps.iter().any(
            |r| r["CurrentState"].as_str().unwrap().starts_with("Rejected ")
                && r["Error"]
                    .as_str()
                    .unwrap()
                    .starts_with(r#"cannot start "no-such-program-xyz""#)
        ),
        "{ps:?}"
    );
    assert!(ps.len() > 2, "retried: {ps:?}");
    assert!(ps
        .iter()
        .all(|r| !r["Name"].as_str().unwrap().contains('\\')));
    let table = ok(lab.shoal_on("n1", &["service", "ps", "nope"]));
    assert!(table.contains(r" \_ nope."), "{table}");
    ok(lab.shoal_on("n1", &["service", "rm", "nope", "web"]));
}
