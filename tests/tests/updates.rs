//! Rolling updates on lab clusters: batches by parallelism, delay and
//! monitor (the tasks' creation times prove the order), rollback,
//! start-first never running fewer tasks than asked, a failing update
//! paused or rolled back by itself, and an update that survives the
//! leader's death.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::Value;
use shoal_tests::services::{create_whoami, curl, running, task_ns, tasks, Task};
use shoal_tests::{ok, shoal_bin, wait, Lab};

fn port_of(t: &Task) -> &str {
    t.command.last().map(String::as_str).unwrap_or_default()
}

fn update_state(lab: &Lab, on: &str, service: &str) -> (String, String) {
    let v: Value =
        serde_json::from_str(&ok(lab.shoal_on(on, &["service", "inspect", service]))).unwrap();
    let u = &v[0]["UpdateStatus"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (s(&u["State"]), s(&u["Message"]))
}

#[test]
fn batches_follow_the_policy_rollback_restores_and_start_first_keeps_n() {
    let lab = Lab::up_with(3, 0, "tc", &[]);
    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    create_whoami(&lab, "web", &["--replicas", "4"]);

    let out = ok(lab.shoal_on(
        "n1",
        &[
            "service",
            "update",
            "--update-parallelism",
            "2",
            "--update-delay",
            "1s",
            "--update-monitor",
            "2s",
            "--args",
            "whoami --port 81",
            "web",
        ],
    ));
    assert!(out.contains("verify: Service web converged"), "{out}");
    let live = running(&lab, "n1", "web");
    assert_eq!(live.len(), 4);
    assert!(live.iter().all(|t| port_of(t) == "81"), "{live:?}");
    // Two batches of two: the second made after the first ran for the
    // monitor period (2 s) plus the delay (1 s).
    let mut made: Vec<u64> = live.iter().map(|t| t.created_ms).collect();
    made.sort();
    assert!(made[1] - made[0] < 1000, "{made:?}");
    assert!(made[3] - made[2] < 1000, "{made:?}");
    assert!(made[2] - made[1] >= 3000, "{made:?}");
    // The replaced tasks stay listed, desired shutdown.
    let old: Vec<Task> = tasks(&lab, "n1", "web")
        .into_iter()
        .filter(|t| port_of(t) == "80")
        .collect();
    assert_eq!(old.len(), 4, "{old:?}");
    assert!(old.iter().all(|t| t.desired == "shutdown"), "{old:?}");
    // The new tasks answer on the new port.
    // From one task's namespace to every task, across nodes.
    let peer = task_ns(&lab, &live[0]);
    for t in &live {
        assert!(
            curl(&lab, &peer, &format!("{}:81", t.ip)).contains("Hostname:"),
            "{t:?}"
        );
    }
    assert_eq!(update_state(&lab, "n1", "web").0, "completed");
    // Unchanged: nothing replaced.
    ok(lab.shoal_on("n1", &["service", "update", "web"]));
    assert_eq!(running(&lab, "n1", "web").len(), 4);
    let all = tasks(&lab, "n1", "web");
    assert_eq!(all.len(), 8, "{all:?}");

    let out = ok(lab.shoal_on("n1", &["service", "rollback", "web"]));
    assert!(out.contains("rollback completed"), "{out}");
    let live = running(&lab, "n1", "web");
    assert_eq!(live.len(), 4);
    assert!(live.iter().all(|t| port_of(t) == "80"), "{live:?}");
    assert_eq!(update_state(&lab, "n1", "web").0, "rollback_completed");

    // start-first: a watcher counts running tasks while the update runs.
    let done = Arc::new(AtomicBool::new(false));
    let fewest = Arc::new(AtomicUsize::new(usize::MAX));
    let watcher = {
        let (done, fewest) = (done.clone(), fewest.clone());
        let name = lab.name.clone();
        std::thread::spawn(move || {
            let bin = shoal_bin().to_string_lossy().into_owned();
            while !done.load(Ordering::Relaxed) {
                let o = shoal_tests::shoal(&[
                    "lab", "exec", "--name", &name, "n1", "--", &bin, "service", "ps", "web",
                    "--format", "json",
                ]);
                let n = String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| l.contains(r#""CurrentState":"Running "#))
                    .count();
                fewest.fetch_min(n, Ordering::Relaxed);
            }
        })
    };
    let out = ok(lab.shoal_on(
        "n1",
        &[
            "service",
            "update",
            "--update-order",
            "start-first",
            "--update-monitor",
            "1s",
            "--args",
            "whoami --port 82",
            "web",
        ],
    ));
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert!(out.contains("converged"), "{out}");
    assert!(running(&lab, "n1", "web")
        .iter()
        .all(|t| port_of(t) == "82"));
    let fewest = fewest.load(Ordering::Relaxed);
    assert!(
        fewest >= 4,
        "start-first ran only {fewest} tasks at one point"
    );
}

#[test]
fn a_failing_update_pauses_or_rolls_back_by_itself() {
    let lab = Lab::up_with(2, 0, "tc", &[]);
    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    create_whoami(&lab, "web", &["--replicas", "3"]);
    create_whoami(&lab, "api", &["--replicas", "3"]);

    // A command that exits at once: the first batch fails, the update
    // pauses, the other tasks keep running the old command.
    let o = lab.shoal_on(
        "n1",
        &[
            "service",
            "update",
            "--update-monitor",
            "2s",
            "--args",
            "no-such-command",
            "web",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("update paused due to failure"), "{err}");
    let (state, msg) = update_state(&lab, "n1", "web");
    assert_eq!(state, "paused", "{msg}");
    let old = running(&lab, "n1", "web")
        .into_iter()
        .filter(|t| port_of(t) == "80")
        .count();
    assert_eq!(old, 2, "only the first batch was touched");

    // The same with failure action rollback: back to the old command.
    let o = lab.shoal_on(
        "n1",
        &[
            "service",
            "update",
            "--update-failure-action",
            "rollback",
            "--update-monitor",
            "2s",
            "--args",
            "no-such-command",
            "api",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("rolled back"), "{err}");
    wait("api back on its old command", 30, || {
        let r = running(&lab, "n1", "api");
        r.len() == 3 && r.iter().all(|t| port_of(t) == "80")
    });
    assert_eq!(update_state(&lab, "n1", "api").0, "rollback_completed");

    // Bad input: one-line errors, and nothing changes.
    let before = tasks(&lab, "n1", "api").len();
    for (args, needle) in [
        (
            &["service", "update", "nosuch"][..],
            "service nosuch not found",
        ),
        (
            &["service", "update", "--replicas", "-1", "api"],
            "invalid replicas",
        ),
        (
            &[
                "service",
                "update",
                "--update-failure-action",
                "explode",
                "api",
            ],
            "explode",
        ),
        (
            &[
                "service",
                "update",
                "--update-max-failure-ratio",
                "7",
                "api",
            ],
            "0 to 1",
        ),
        (
            &["service", "update", "--network-add", "nonet", "api"],
            "network nonet not found",
        ),
    ] {
        let o = lab.shoal_on("n1", args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
    }
    create_whoami(&lab, "fresh", &["--replicas", "1"]);
    let o = lab.shoal_on("n1", &["service", "rollback", "fresh"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("does not have a previous spec"), "{err}");
    // Malformed bodies straight at the API: 400, the service untouched.
    for (path, body) in [
        ("/v1/services/api/update", "{not json"),
        ("/v1/services/api/update", r#"{"version": "x"}"#),
        ("/v1/services/api/logs", "[1,2"),
    ] {
        let cmd = format!(
            "curl -s -o /dev/null -w '%{{http_code}}' --unix-socket \"$SHOAL_SOCKET\" -X POST -H 'content-type: application/json' -d '{body}' http://x{path}"
        );
        let o = shoal_tests::shoal(&[
            "lab", "exec", "--name", &lab.name, "n1", "--", "sh", "-c", &cmd,
        ]);
        let code = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(code, "400", "{path} {body}");
    }
    assert_eq!(tasks(&lab, "n1", "api").len(), before);
    assert_eq!(update_state(&lab, "n1", "api").0, "rollback_completed");
}

#[test]
fn an_update_completes_across_a_leader_kill() {
    let lab = Lab::up_with(4, 0, "tc", &["--managers", "3"]);
    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    create_whoami(
        &lab,
        "web",
        &["--replicas", "4", "--constraint", "node.hostname!=n1"],
    );
    ok(lab.shoal_on(
        "n2",
        &[
            "service",
            "update",
            "-d",
            "--update-monitor",
            "1s",
            "--args",
            "whoami --port 81",
            "web",
        ],
    ));
    wait("the first batch", 20, || {
        running(&lab, "n2", "web")
            .iter()
            .any(|t| port_of(t) == "81")
    });
    shoal_tests::shoal_ok(&["lab", "kill", "--name", &lab.name, "n1"]);
    wait("the update completed by the new leader", 60, || {
        let r = running(&lab, "n2", "web");
        r.len() == 4
            && r.iter().all(|t| port_of(t) == "81")
            && update_state(&lab, "n2", "web").0 == "completed"
    });
}
