//! Compose files (version 3), the subset Shoal honours, as typed serde
//! structs read with serde_yaml_ng (the maintained serde_yaml fork).
//!
//! Several files merge as `docker stack deploy -c a -c b` does: mappings
//! merge key by key, the later file's other values win. Keys serde skips
//! are collected with serde_ignored: a Compose key Shoal does not support is
//! a warning (it is ignored, and said so), a key Compose does not know is
//! an error (most likely a typo that would otherwise go unnoticed).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml_ng::Value;

/// A string or a list of strings (`command`, `entrypoint`, `healthcheck.test`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Words {
    One(String),
    Many(Vec<String>),
}

/// A list of `K=V` or a mapping (`environment`, `labels`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum KeyValues {
    List(Vec<String>),
    Map(BTreeMap<String, Value>),
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ComposeFile {
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    #[serde(default)]
    pub networks: BTreeMap<String, Option<Network>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Service {
    pub command: Option<Words>,
    pub entrypoint: Option<Words>,
    pub environment: Option<KeyValues>,
    pub working_dir: Option<String>,
    #[serde(default)]
    pub ports: Vec<Port>,
    pub networks: Option<ServiceNetworks>,
    pub healthcheck: Option<Healthcheck>,
    pub stop_grace_period: Option<String>,
    pub deploy: Option<Deploy>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Port {
    Long(LongPort),
    /// "8080:80", "8080:80/udp", "80".
    Short(Value),
}

#[derive(Clone, Debug, Deserialize)]
pub struct LongPort {
    pub target: u16,
    pub published: Option<Value>,
    pub protocol: Option<String>,
    pub mode: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ServiceNetworks {
    List(Vec<String>),
    Map(BTreeMap<String, Option<ServiceNetwork>>),
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ServiceNetwork {
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Healthcheck {
    pub test: Option<Words>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<u64>,
    pub start_period: Option<String>,
    #[serde(default)]
    pub disable: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Deploy {
    pub mode: Option<String>,
    pub replicas: Option<u64>,
    pub endpoint_mode: Option<String>,
    pub placement: Option<Placement>,
    pub restart_policy: Option<RestartPolicy>,
    pub update_config: Option<UpdateConfig>,
    pub rollback_config: Option<UpdateConfig>,
    pub labels: Option<KeyValues>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Placement {
    #[serde(default)]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub preferences: Vec<Preference>,
    pub max_replicas_per_node: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Preference {
    pub spread: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RestartPolicy {
    pub condition: Option<String>,
    pub delay: Option<String>,
    pub max_attempts: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct UpdateConfig {
    pub parallelism: Option<u64>,
    pub delay: Option<String>,
    pub failure_action: Option<String>,
    pub monitor: Option<String>,
    pub max_failure_ratio: Option<f64>,
    pub order: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Network {
    pub driver: Option<String>,
    #[serde(default)]
    pub attachable: bool,
    #[serde(default)]
    pub internal: bool,
    pub ipam: Option<Ipam>,
    pub external: Option<External>,
    pub name: Option<String>,
    pub labels: Option<KeyValues>,
    /// Only `encrypted` (Docker's overlay option) is known.
    pub driver_opts: Option<BTreeMap<String, Value>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum External {
    Flag(bool),
    Named { name: String },
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Ipam {
    #[serde(default)]
    pub config: Vec<IpamConfig>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct IpamConfig {
    pub subnet: Option<String>,
}

/// Keys of the Compose specification that Shoal reads nowhere: reported
/// as ignored rather than unknown.
const COMPOSE_KEYS: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "build",
    "cap_add",
    "cap_drop",
    "cgroup",
    "cgroup_parent",
    "configs",
    "container_name",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpu_shares",
    "cpus",
    "cpuset",
    "credential_spec",
    "depends_on",
    "develop",
    "device_cgroup_rules",
    "devices",
    "dns",
    "dns_opt",
    "dns_search",
    "domainname",
    "env_file",
    "expose",
    "extends",
    "external_links",
    "extra_hosts",
    "group_add",
    "hostname",
    "image",
    "init",
    "ipc",
    "isolation",
    "labels",
    "links",
    "logging",
    "mac_address",
    "mem_limit",
    "mem_reservation",
    "mem_swappiness",
    "memswap_limit",
    "network_mode",
    "oom_kill_disable",
    "oom_score_adj",
    "pid",
    "pids_limit",
    "platform",
    "privileged",
    "profiles",
    "pull_policy",
    "read_only",
    "restart",
    "runtime",
    "scale",
    "secrets",
    "security_opt",
    "shm_size",
    "stdin_open",
    "stop_signal",
    "storage_opt",
    "sysctls",
    "tmpfs",
    "tty",
    "ulimits",
    "user",
    "userns_mode",
    "uts",
    "volumes",
    "volumes_from",
    "resources",
    "window",
    "start_interval",
    "driver_opts",
    "enable_ipv6",
    "ip_range",
    "gateway",
    "aux_addresses",
    "options",
    "host_ip",
    "name",
    "app_protocol",
    "ipv4_address",
    "ipv6_address",
    "link_local_ips",
    "priority",
    "driver",
    "ipam",
];

/// A parsed stack: the merged file, and what was ignored.
#[derive(Debug)]
pub struct Parsed {
    pub file: ComposeFile,
    /// One line per ignored key, with its path.
    pub warnings: Vec<String>,
}

/// Reads and merges compose files (as `(name, text)`); errors name the file
/// and the path.
pub fn parse(files: &[(String, String)]) -> Result<Parsed, String> {
    let mut merged = Value::Null;
    for (name, text) in files {
        let v: Value = serde_yaml_ng::from_str(text).map_err(|e| format!("{name}: {e}"))?;
        if !matches!(v, Value::Mapping(_)) {
            return Err(format!(
                "{name}: a compose file is a mapping (services:, networks:)"
            ));
        }
        merge(&mut merged, v);
    }
    let mut skipped = vec![];
    let file: ComposeFile = serde_ignored::deserialize(merged, |p| skipped.push(dotted(&p)))
        .map_err(|e| format!("compose file: {e}"))?;
    skipped.sort();
    let mut warnings = vec![];
    let mut errors = vec![];
    for p in skipped {
        let last = p.rsplit('.').next().unwrap_or(&p);
        let last = last.split('[').next().unwrap_or(last);
        if last.starts_with("x-") || p.starts_with("x-") || p == "version" {
            // Extension fields, and the version Compose itself no longer
            // reads.
            continue;
        }
        if last == "image" {
            warnings.push(format!("{p}: ignored: Shoal runs processes, not images"));
        } else if COMPOSE_KEYS.contains(&last) {
            warnings.push(format!("{p}: not supported by Shoal, ignored"));
        } else {
            errors.push(format!("{p}: unknown key"));
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    Ok(Parsed { file, warnings })
}

/// `services.web.ports[0]`: serde_ignored's path without its markers for
/// options and newtypes.
fn dotted(p: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match p {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", dotted(parent)),
        Path::Map { parent, key } => match dotted(parent) {
            s if s.is_empty() => key.clone(),
            s => format!("{s}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => dotted(parent),
    }
}

/// `b` over `a`: mappings merge key by key, anything else is replaced.
fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Mapping(a), Value::Mapping(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(old) => merge(old, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (a, b) => *a = b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<Parsed, String> {
        parse(&[("stack.yml".into(), text.into())])
    }

    #[test]
    fn reads_the_subset_and_reports_what_it_ignores() {
        let p = one(r#"
version: "3.8"
x-common: &c {a: 1}
services:
  web:
    image: traefik/whoami
    command: shoal whoami --port 80
    environment: {A: 1, B: "two"}
    ports: ["8080:80", {target: 53, published: 5353, protocol: udp}]
    networks:
      front: {aliases: [www]}
    healthcheck: {test: ["CMD", "curl", "-f", "http://127.0.0.1/"], interval: 2s}
    deploy:
      replicas: 2
      placement: {constraints: [node.role==worker], max_replicas_per_node: 1}
      update_config: {parallelism: 2, order: start-first}
      resources: {limits: {cpus: "0.5"}}
networks:
  front: {driver: overlay, attachable: true}
"#)
        .unwrap();
        let web = &p.file.services["web"];
        assert_eq!(
            web.command,
            Some(Words::One("shoal whoami --port 80".into()))
        );
        assert_eq!(web.ports.len(), 2);
        assert_eq!(
            web.deploy
                .as_ref()
                .unwrap()
                .update_config
                .as_ref()
                .unwrap()
                .parallelism,
            Some(2)
        );
        assert!(p.file.networks["front"].as_ref().unwrap().attachable);
        assert_eq!(
            p.warnings,
            vec![
                "services.web.deploy.resources: not supported by Shoal, ignored",
                "services.web.image: ignored: Shoal runs processes, not images",
            ],
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn later_files_override_and_typos_are_errors() {
        let p = parse(&[
            (
                "a.yml".into(),
                "services: {web: {command: [a], deploy: {replicas: 1}}}".into(),
            ),
            (
                "b.yml".into(),
                "services: {web: {deploy: {replicas: 3}}}".into(),
            ),
        ])
        .unwrap();
        let web = &p.file.services["web"];
        assert_eq!(web.deploy.as_ref().unwrap().replicas, Some(3));
        assert_eq!(web.command, Some(Words::Many(vec!["a".into()])));

        let e =
            one("services: {web: {command: [a], deploy: {replics: 3}, comand: x}}").unwrap_err();
        assert!(
            e.contains("services.web.deploy.replics: unknown key"),
            "{e}"
        );
        assert!(e.contains("services.web.comand: unknown key"), "{e}");
        let e = one("services: [web").unwrap_err();
        assert!(e.starts_with("stack.yml: "), "{e}");
        let e = one("services: {web: {deploy: {replicas: many}}}").unwrap_err();
        assert!(e.contains("replicas") || e.contains("invalid"), "{e}");
        assert!(one("just a string").unwrap_err().contains("mapping"));
    }
}
