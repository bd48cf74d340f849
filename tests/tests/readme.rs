//! The README's first command is the product's promise: run it as written
//! (on its own lab name) and check that it keeps it. Its tour, too, is run
//! line by line from the README, so neither rots.

use std::process::Command;

use shoal_tests::{shoal, unique_name};

fn first_command() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let mut lines = readme.lines().skip_while(|l| !l.starts_with("```sh"));
    lines.next();
    lines
        .next()
        .expect("a command in the README's first ```sh block")
        .trim()
        .to_string()
}

#[test]
fn readme_first_command_builds_a_reachable_lab() {
    let cmd = first_command();
    assert!(
        cmd.contains("quickstart"),
        "README starts with the quickstart: {cmd}"
    );
    let lab = unique_name();
    let _down = shoal_tests::LabDown(lab.clone());
    let out = Command::new("bash")
        .args(["-c", &cmd])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env("SHOAL_LAB", &lab)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "`{cmd}` failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What it promises: 3 nodes x 2 endpoints, every pair reachable, a
    // service on another node reached, the lab left running.
    assert!(stdout.contains("30 of 30 paths reachable"), "{stdout}");
    assert!(stdout.contains("across nodes"), "{stdout}");
    // The service: the task on n3 answered the task on n1 over the overlay.
    let after = stdout
        .split("web task on n3")
        .nth(1)
        .unwrap_or_else(|| panic!("no service section: {stdout}"));
    assert!(after.contains("Task: web."), "{stdout}");
    assert!(after.contains("RemoteAddr: 10.10.0."), "{stdout}");
    // The swarm: n1 leads, n2 and n3 are workers, all ready.
    let swarm: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" Ready ") && l.contains(" Active"))
        .collect();
    assert_eq!(swarm.len(), 3, "{stdout}");
    assert!(
        swarm[0].contains(" * ") && swarm[0].contains("n1") && swarm[0].contains("Leader"),
        "{stdout}"
    );
    let svc = stdout
        .lines()
        .find(|l| l.starts_with("service on n3-e2"))
        .expect("service line");
    assert!(svc.contains("bits/sec"), "{svc}");
    let ls = shoal(&["lab", "ls", "--name", &lab, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert!(
        nodes.iter().all(|n| n["pid"].is_number()),
        "agents running: {v}"
    );
    assert_eq!(v["endpoints"].as_array().unwrap().len(), 6);
}

/// The command lines of the README's tour: the ```sh block under
/// "## A tour", backslash continuations joined.
fn tour_lines() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let block: Vec<&str> = readme
        .lines()
        .skip_while(|l| l.trim() != "## A tour")
        .skip_while(|l| !l.starts_with("```sh"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect();
    let mut lines = vec![];
    let mut cur = String::new();
    for l in block {
        match l.trim_end().strip_suffix('\\') {
            Some(head) => cur.push_str(head),
            None => {
                cur.push_str(l);
                if !cur.trim().is_empty() {
                    lines.push(cur.trim().to_string());
                }
                cur.clear();
            }
        }
    }
    lines
}

/// The tour, adapted only as a test must be (each adaptation below says
/// why):
/// 1. `S=target/release/shoal` becomes the binary under test (the target
///    dir may be elsewhere).
/// 2. The lab is named per run (`--name` on every `$S lab VERB`, `--lab`
///    and the `lab-` names follow), so runs cannot collide.
/// 3. `lab exec NODE -- $S exec TASK` and `... debug dns --task TASK` run
///    on the node TASK landed on (asked with `shoal inspect`): exec is
///    local to the task's node, as docker exec is, and the scheduler
///    picks the node.
/// 4. A line that fails (or misses what it shows) is tried again for up to
///    30 s: the tour's comments promise things within seconds (a new
///    leader, a restarted node back, a moved task), which a reader waits
///    for; a line still failing then fails the test.
#[test]
fn readme_tour_runs_as_written_on_a_lab() {
    let lines = tour_lines();
    assert!(
        lines.len() > 20 && lines[0] == "S=target/release/shoal",
        "the tour starts by naming the binary: {lines:?}"
    );
    let lab = unique_name();
    let _down = shoal_tests::LabDown(lab.clone());
    let bin = shoal_tests::shoal_bin();
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    // What a line shows, beyond succeeding: (the line's words, a text its
    // output holds, how many times at least).
    let shows: &[(&str, &str, usize)] = &[
        ("lab check", "30 of 30 paths reachable", 1),
        ("iperf3 -c", "receiver", 1),
        ("debug drops", "encap", 1),
        ("ping -c1 10.0.1.50", "1 received", 1),
        // Killing the leader next needs the promoted managers in Raft.
        ("n2 and n3 Reachable", "Reachable", 2),
        ("dig +short tasks.web", "10.10.", 3),
        ("curl -s http://web/", "Task: web.", 1),
        ("stack deploy", "Creating service app_api", 1),
        ("curl -s http://api:5000/", "Task: app_api.", 1),
        // The routing mesh keeps the outside client's own address.
        ("lab exec client -- curl", "RemoteAddr: 198.18.0.200:", 1),
    ];
    let adapt = |line: &str| -> String {
        let mut l = line.replace("--lab lab ", &format!("--lab {lab} "));
        l = l.replace("--name lab-", &format!("--name {lab}-"));
        for verb in [
            "up", "ls", "check", "exec", "kill", "start", "stop", "restart", "down",
        ] {
            l = l.replace(
                &format!("$S lab {verb}"),
                &format!("$S lab {verb} --name {lab}"),
            );
        }
        l
    };
    let node_of = |on: &str, task: &str| -> String {
        let o = shoal(&[
            "lab",
            "exec",
            "--name",
            &lab,
            on,
            "--",
            &bin.to_string_lossy(),
            "inspect",
            task,
        ]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v[0]["Node"].as_str().unwrap_or(on).to_string()
    };
    for line in &lines[1..] {
        let t0 = std::time::Instant::now();
        loop {
            let mut l = adapt(line);
            // Adaptation 3: the task's node for exec and debug dns --task.
            let words: Vec<&str> = line.split_whitespace().collect();
            if let ["$S", "lab", "exec", node, "--", "$S", rest @ ..] = words.as_slice() {
                let task = match rest {
                    ["exec", task, ..] => Some(*task),
                    ["debug", "dns", "--task", task, ..] => Some(*task),
                    _ => None,
                };
                if let Some(task) = task {
                    let on = node_of(node, task);
                    l = l.replacen(
                        &format!("--name {lab} {node} --"),
                        &format!("--name {lab} {on} --"),
                        1,
                    );
                }
            }
            let out = Command::new("timeout")
                .args(["120", "bash", "-c", &l])
                .current_dir(repo)
                .env("S", &bin)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            eprintln!("$ {l}\n{text}");
            let want = shows
                .iter()
                .filter(|(what, _, _)| line.contains(what))
                .find(|(_, shown, times)| text.matches(shown).count() < *times)
                .map(|(_, shown, _)| *shown);
            if out.status.success() && want.is_none() {
                break;
            }
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(30),
                "the tour's line `{line}` (run as `{l}`) failed for 30 s ({}{}):\n{text}",
                out.status,
                want.map(|w| format!(", without {w:?}")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    assert!(
        !std::path::Path::new("/run/shoal/lab").join(&lab).exists(),
        "the tour's last line removes the lab"
    );
}
