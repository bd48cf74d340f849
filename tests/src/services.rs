//! Helpers for tests of services on lab clusters: tasks as `service ps`
//! shows them, whoami services, curl from a namespace.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{ok, shoal_bin, Lab};

/// A task of a service: `service ps` names it, `shoal inspect` (Docker's
/// task object) says the rest.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub node: String,
    /// Docker's task states, lower case (`running`, `shutdown`).
    pub desired: String,
    pub state: String,
    pub err: String,
    pub ip: String,
    pub command: Vec<String>,
    /// When the leader made it (ms since the epoch).
    pub created_ms: u64,
}

/// The ids of a service's tasks, from `service ps --no-trunc --format
/// json` (one row a line, as Docker's `--format '{{json .}}'`).
pub fn task_ids(lab: &Lab, on: &str, service: &str) -> Vec<String> {
    let out = ok(lab.shoal_on(
        on,
        &["service", "ps", service, "--no-trunc", "--format", "json"],
    ));
    out.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["ID"].as_str().unwrap().to_string()
        })
        .collect()
}

pub fn tasks(lab: &Lab, on: &str, service: &str) -> Vec<Task> {
    // A task may be forgotten (history kept short) between the two calls:
    // then ask again.
    for _ in 0..5 {
        let ids = task_ids(lab, on, service);
        if ids.is_empty() {
            return vec![];
        }
        let mut args = vec!["inspect"];
        args.extend(ids.iter().map(String::as_str));
        let o = lab.shoal_on(on, &args);
        if !o.status.success() {
            std::thread::sleep(std::time::Duration::from_millis(100));
            continue;
        }
        let all: Vec<Value> = serde_json::from_str(&ok(o)).unwrap();
        return all.iter().map(task).collect();
    }
    panic!("no stable task list of {service} on {on}");
}

/// A task from its `shoal inspect` object.
fn task(v: &Value) -> Task {
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

/// A service's VIP on its first network (`service inspect`, without the
/// prefix length).
pub fn service_vip(lab: &Lab, name: &str) -> String {
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(lab.shoal_on("n1", &["service", "inspect", name]))).unwrap();
    inspect[0]["Endpoint"]["VirtualIPs"][0]["Addr"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}
