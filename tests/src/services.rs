//! Helpers for tests of services on lab clusters: tasks as `service ps`
//! shows them, whoami services, curl from a namespace.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{ok, shoal_bin, Lab};

/// A task as `service ps --format json` shows it.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub node: String,
    pub desired: String,
    pub state: String,
    pub err: String,
    pub ip: String,
    pub command: Vec<String>,
    /// When the leader made it (ms since the epoch).
    pub created_ms: u64,
}

pub fn tasks(lab: &Lab, on: &str, service: &str) -> Vec<Task> {
    let out = ok(lab.shoal_on(on, &["service", "ps", service, "--format", "json"]));
    out.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            Task {
                id: s(&v["ID"]),
                node: s(&v["Node"]),
                desired: s(&v["DesiredState"]),
                state: s(&v["Status"]["State"]),
                err: s(&v["Status"]["Err"]),
                ip: v["NetworksAttachments"][0]["Addresses"][0]
                    .as_str()
                    .unwrap_or_default()
                    .split('/')
                    .next()
                    .unwrap()
                    .to_string(),
                command: v["Spec"]["ContainerSpec"]["Command"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(s)
                    .collect(),
                created_ms: humantime::parse_rfc3339(v["CreatedAt"].as_str().unwrap_or_default())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as u64),
            }
        })
        .collect()
}

pub fn running(lab: &Lab, on: &str, service: &str) -> Vec<Task> {
    tasks(lab, on, service)
        .into_iter()
        .filter(|t| t.desired == "running" && t.state == "running")
        .collect()
}

pub fn per_node(ts: &[Task]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for t in ts {
        *m.entry(t.node.clone()).or_default() += 1;
    }
    m
}

/// The namespace of a task (the lab names them LAB-NODE-t<12 id chars>).
pub fn task_ns(lab: &Lab, t: &Task) -> String {
    format!("{}-{}-t{}", lab.name, t.node, &t.id[..12])
}

pub fn lab_task_namespaces(lab: &Lab) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{}-", lab.name)) && n.contains("-t"))
        .map(String::from)
        .collect()
}

pub fn curl(lab: &Lab, from_ns: &str, ip: &str) -> String {
    let o = lab.run(
        from_ns,
        &["curl", "-s", "-m", "5", &format!("http://{ip}/")],
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `service create -d` of a whoami service (no waiting for it to run).
pub fn detached(lab: &Lab, name: &str, extra: &[&str]) -> String {
    let mut a = vec!["-d"];
    a.extend_from_slice(extra);
    create_whoami(lab, name, &a)
}

/// `service create` on n1: a whoami service on appnet with `extra` flags.
pub fn create_whoami(lab: &Lab, name: &str, extra: &[&str]) -> String {
    let bin = shoal_bin().to_string_lossy().into_owned();
    let mut a = vec!["service", "create", "--name", name, "--network", "appnet"];
    a.extend_from_slice(extra);
    a.extend_from_slice(&["--", &bin, "whoami", "--port", "80"]);
    ok(lab.shoal_on("n1", &a))
}
