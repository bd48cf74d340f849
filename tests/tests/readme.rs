//! The README's first command is the product's promise: run it as written
//! (on its own lab name) and check that it keeps it.

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
    struct Down(String);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = shoal(&["lab", "down", "--name", &self.0]);
        }
    }
    let _down = Down(lab.clone());
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
