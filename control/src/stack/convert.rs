//! A compose file as Shoal's specs, named as `docker stack deploy` names
//! them: `STACK_web`, `STACK_default`, every object labelled
//! `com.docker.stack.namespace=STACK`, and each service aliased by its short
//! name on each of its networks (so `web` resolves inside the stack).

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

use super::compose::{ComposeFile, External, KeyValues, Port, UpdateConfig, Words};
use crate::wire::NetworkSpec;
use crate::wire::{
    EndpointMode, HealthSpec, Mode, NetAttach, PortSpec, Protocol, PublishMode, RestartCondition,
    RestartPolicy, ServiceSpec,
};
use crate::wire::{FailureAction, UpdateOrder, UpdatePolicy};

pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

/// A network the stack uses: made by the stack, or external (must exist).
#[derive(Clone, Debug, PartialEq)]
pub enum StackNetwork {
    Own(NetworkSpec),
    External(String),
}

#[derive(Clone, Debug)]
pub struct Stack {
    pub networks: Vec<StackNetwork>,
    pub services: Vec<ServiceSpec>,
}

fn duration_ms(path: &str, s: &str) -> Result<u64, String> {
    humantime::parse_duration(s)
        .map(|d| d.as_millis() as u64)
        .map_err(|e| format!("{path}: bad duration {s:?}: {e}"))
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn words(path: &str, w: &Words) -> Result<Vec<String>, String> {
    match w {
        Words::Many(v) => Ok(v.clone()),
        Words::One(s) => shlex::split(s).ok_or_else(|| format!("{path}: unbalanced quotes")),
    }
}

/// `K=V` pairs; a mapping's null value takes the deploying shell's
/// variable, as Compose does.
fn key_values(kv: &KeyValues) -> Vec<(String, String)> {
    match kv {
        KeyValues::List(l) => l
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), std::env::var(e).unwrap_or_default()),
            })
            .collect(),
        KeyValues::Map(m) => m
            .iter()
            .map(|(k, v)| {
                let v = scalar(v).unwrap_or_else(|| std::env::var(k).unwrap_or_default());
                (k.clone(), v)
            })
            .collect(),
    }
}

fn port(path: &str, p: &Port) -> Result<PortSpec, String> {
    let proto = |s: &str| match s {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        o => Err(format!("{path}: protocol {o:?} (tcp or udp)")),
    };
    let num = |s: &str| {
        s.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{path}: bad port {s:?}"))
    };
    match p {
        Port::Short(v) => {
            let s = scalar(v).ok_or_else(|| format!("{path}: want \"PUBLISHED:TARGET[/udp]\""))?;
            let (ports, pr) = s.split_once('/').unwrap_or((&s, "tcp"));
            let parts: Vec<&str> = ports.split(':').collect();
            let (published, target) = match parts.as_slice() {
                [t] => (num(t)?, num(t)?),
                [p, t] => (num(p)?, num(t)?),
                _ => {
                    return Err(format!(
                        "{path}: {s:?}: a host address or port range is not supported (PUBLISHED:TARGET)"
                    ))
                }
            };
            Ok(PortSpec {
                published,
                target,
                protocol: proto(pr)?,
                mode: PublishMode::Ingress,
            })
        }
        Port::Long(l) => Ok(PortSpec {
            target: l.target,
            published: match &l.published {
                Some(v) => num(&scalar(v).unwrap_or_default())?,
                None => l.target,
            },
            protocol: proto(l.protocol.as_deref().unwrap_or("tcp"))?,
            mode: match l.mode.as_deref() {
                None | Some("ingress") => PublishMode::Ingress,
                Some("host") => PublishMode::Host,
                Some(o) => return Err(format!("{path}: mode {o:?} (ingress or host)")),
            },
        }),
    }
}

fn policy(path: &str, u: Option<&UpdateConfig>) -> Result<UpdatePolicy, String> {
    let mut p = UpdatePolicy::default();
    let Some(u) = u else { return Ok(p) };
    if let Some(n) = u.parallelism {
        p.parallelism = n;
    }
    if let Some(d) = &u.delay {
        p.delay_ms = duration_ms(&format!("{path}.delay"), d)?;
    }
    if let Some(d) = &u.monitor {
        p.monitor_ms = duration_ms(&format!("{path}.monitor"), d)?;
    }
    if let Some(a) = &u.failure_action {
        p.failure_action = match a.as_str() {
            "pause" => FailureAction::Pause,
            "continue" => FailureAction::Continue,
            "rollback" => FailureAction::Rollback,
            o => {
                return Err(format!(
                    "{path}.failure_action: {o:?} (pause, continue or rollback)"
                ))
            }
        };
    }
    if let Some(r) = u.max_failure_ratio {
        p.max_failure_ratio = r;
    }
    if let Some(o) = &u.order {
        p.order = match o.as_str() {
            "stop-first" => UpdateOrder::StopFirst,
            "start-first" => UpdateOrder::StartFirst,
            o => return Err(format!("{path}.order: {o:?} (stop-first or start-first)")),
        };
    }
    p.check(path)?;
    Ok(p)
}

/// The specs of stack `name`. Errors name the service and the key.
pub fn convert(name: &str, f: &ComposeFile) -> Result<Stack, String> {
    let (networks, net_names) = networks(name, f)?;
    let services = f
        .services
        .iter()
        .map(|(key, s)| service(name, key, s, &net_names))
        .collect::<Result<Vec<_>, _>>()?;
    check_ports(&services)?;
    Ok(Stack { networks, services })
}

fn stack_label(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(NAMESPACE_LABEL.to_string(), name.to_string())])
}

/// The stack's networks (its own, and external ones that must exist), and
/// each compose network's name in the cluster.
fn networks(
    name: &str,
    f: &ComposeFile,
) -> Result<(Vec<StackNetwork>, BTreeMap<String, String>), String> {
    let label = || stack_label(name);
    let scoped = |n: &str| format!("{name}_{n}");
    // Compose name -> cluster name.
    let mut net_names: BTreeMap<String, String> = BTreeMap::new();
    let mut networks = vec![];
    let mut uses_default = false;
    for svc in f.services.values() {
        uses_default |= svc.networks.is_none();
    }
    let mut declared: Vec<(String, super::compose::Network)> = f
        .networks
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
        .collect();
    if uses_default && !f.networks.contains_key("default") {
        declared.push(("default".into(), Default::default()));
    }
    for (key, n) in declared {
        let path = format!("networks.{key}");
        let external = match &n.external {
            Some(External::Flag(true)) => Some(n.name.clone().unwrap_or_else(|| key.clone())),
            Some(External::Named { name }) => Some(name.clone()),
            _ => None,
        };
        if let Some(ext) = external {
            net_names.insert(key, ext.clone());
            networks.push(StackNetwork::External(ext));
            continue;
        }
        if let Some(d) = n.driver.as_deref().filter(|d| *d != "overlay") {
            return Err(format!(
                "{path}.driver: {d:?}: Shoal networks are overlay networks"
            ));
        }
        let subnet = match n.ipam.as_ref().map(|i| i.config.as_slice()) {
            None | Some([]) => None,
            Some([c]) => match &c.subnet {
                Some(s) => Some(
                    s.parse()
                        .map_err(|_| format!("{path}.ipam.config.subnet: bad subnet {s:?}"))?,
                ),
                None => None,
            },
            Some(_) => return Err(format!("{path}.ipam.config: one subnet per network")),
        };
        let encrypted = encrypted_opt(&path, n.driver_opts.as_ref())?;
        let cluster_name = n.name.clone().unwrap_or_else(|| scoped(&key));
        let mut labels = label();
        if let Some(kv) = &n.labels {
            labels.extend(key_values(kv));
        }
        net_names.insert(key, cluster_name.clone());
        networks.push(StackNetwork::Own(NetworkSpec {
            name: cluster_name,
            subnet,
            gateway: None,
            attachable: n.attachable,
            internal: n.internal,
            ingress: false,
            encrypted,
            labels,
        }));
    }
    Ok((networks, net_names))
}

/// `driver_opts: {encrypted: ""}` (or "true"; any value but "false" asks
/// for it, as Docker reads the option's presence); any other option is
/// refused by name, as `network create --opt` does.
fn encrypted_opt(path: &str, opts: Option<&BTreeMap<String, Value>>) -> Result<bool, String> {
    let mut encrypted = false;
    for (k, v) in opts.into_iter().flatten() {
        let v = match v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            other => format!("{other:?}"),
        };
        match (k.as_str(), v.as_str()) {
            ("encrypted", "false") => encrypted = false,
            ("encrypted", "" | "true") => encrypted = true,
            ("encrypted", v) => {
                return Err(format!(
                    "{path}.driver_opts.encrypted: {v:?}: want \"\", true or false"
                ))
            }
            (k, _) => {
                return Err(format!(
                    "{path}.driver_opts.{k}: unknown option (Shoal's overlay knows `encrypted`)"
                ))
            }
        }
    }
    Ok(encrypted)
}

/// One compose service as a service spec named `STACK_KEY`.
fn service(
    name: &str,
    key: &str,
    s: &super::compose::Service,
    net_names: &BTreeMap<String, String>,
) -> Result<ServiceSpec, String> {
    let path = format!("services.{key}");
    let command = command(&path, s)?;
    let nets = attachments(&path, key, s, net_names)?;
    let d = s.deploy.clone().unwrap_or_default();
    let mode = mode(&path, &d)?;
    let endpoint_mode = match d.endpoint_mode.as_deref() {
        None | Some("vip") => EndpointMode::Vip,
        Some("dnsrr") => EndpointMode::Dnsrr,
        Some(o) => return Err(format!("{path}.deploy.endpoint_mode: {o:?} (vip or dnsrr)")),
    };
    let placement = d.placement.clone().unwrap_or_default();
    let restart = restart(&path, &d)?;
    let health = health(&path, s)?;
    let mut labels = stack_label(name);
    if let Some(kv) = &d.labels {
        labels.extend(key_values(kv));
    }
    Ok(ServiceSpec {
        name: format!("{name}_{key}"),
        mode,
        command,
        env: s
            .environment
            .as_ref()
            .map(|e| {
                key_values(e)
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect()
            })
            .unwrap_or_default(),
        workdir: s.working_dir.clone(),
        networks: nets,
        endpoint_mode,
        ports: s
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| port(&format!("{path}.ports[{i}]"), p))
            .collect::<Result<_, _>>()?,
        constraints: placement.constraints.clone(),
        placement_prefs: placement
            .preferences
            .iter()
            .map(|p| format!("spread={}", p.spread))
            .collect(),
        max_per_node: placement.max_replicas_per_node.unwrap_or(0),
        restart,
        health,
        stop_grace_ms: match &s.stop_grace_period {
            Some(x) => duration_ms(&format!("{path}.stop_grace_period"), x)?,
            None => 10_000,
        },
        labels,
        update: policy(
            &format!("{path}.deploy.update_config"),
            d.update_config.as_ref(),
        )?,
        rollback: policy(
            &format!("{path}.deploy.rollback_config"),
            d.rollback_config.as_ref(),
        )?,
        force_update: 0,
    })
}

/// The task's argv: entrypoint then command.
fn command(path: &str, s: &super::compose::Service) -> Result<Vec<String>, String> {
    let mut command = match &s.entrypoint {
        Some(e) => words(&format!("{path}.entrypoint"), e)?,
        None => vec![],
    };
    if let Some(c) = &s.command {
        command.extend(words(&format!("{path}.command"), c)?);
    }
    if command.is_empty() {
        return Err(format!(
            "{path}: no command: Shoal runs processes, not images; give it a `command` (or `entrypoint`)"
        ));
    }
    Ok(command)
}

/// The service's networks, each with the service's short name as an alias.
fn attachments(
    path: &str,
    key: &str,
    s: &super::compose::Service,
    net_names: &BTreeMap<String, String>,
) -> Result<Vec<NetAttach>, String> {
    let attach: Vec<(String, Vec<String>)> = match &s.networks {
        None => vec![("default".into(), vec![])],
        Some(super::compose::ServiceNetworks::List(l)) => {
            l.iter().map(|n| (n.clone(), vec![])).collect()
        }
        Some(super::compose::ServiceNetworks::Map(m)) => m
            .iter()
            .map(|(n, v)| (n.clone(), v.clone().unwrap_or_default().aliases))
            .collect(),
    };
    let mut nets = vec![];
    for (n, mut aliases) in attach {
        let Some(cluster) = net_names.get(&n) else {
            return Err(format!(
                "{path}.networks: network {n:?} is not declared under the top-level networks"
            ));
        };
        if !aliases.iter().any(|a| a == key) {
            aliases.insert(0, key.to_string());
        }
        nets.push(NetAttach {
            target: cluster.clone(),
            aliases,
        });
    }
    Ok(nets)
}

fn mode(path: &str, d: &super::compose::Deploy) -> Result<Mode, String> {
    Ok(match (d.mode.as_deref(), d.replicas) {
        (Some("global"), Some(_)) => {
            return Err(format!("{path}.deploy: replicas with mode global"))
        }
        (Some("global"), None) => Mode::Global,
        (None | Some("replicated"), r) => Mode::Replicated {
            replicas: r.unwrap_or(1),
        },
        (Some(o), _) => return Err(format!("{path}.deploy.mode: {o:?} (replicated or global)")),
    })
}

fn restart(path: &str, d: &super::compose::Deploy) -> Result<RestartPolicy, String> {
    Ok(match &d.restart_policy {
        None => RestartPolicy::default(),
        Some(r) => RestartPolicy {
            condition: match r.condition.as_deref() {
                None | Some("any") => RestartCondition::Any,
                Some("on-failure") => RestartCondition::OnFailure,
                Some("none") => RestartCondition::None,
                Some(o) => {
                    return Err(format!(
                        "{path}.deploy.restart_policy.condition: {o:?} (none, on-failure or any)"
                    ))
                }
            },
            delay_ms: match &r.delay {
                Some(x) => duration_ms(&format!("{path}.deploy.restart_policy.delay"), x)?,
                None => RestartPolicy::default().delay_ms,
            },
            max_attempts: r.max_attempts.unwrap_or(0),
        },
    })
}

fn health(path: &str, s: &super::compose::Service) -> Result<Option<HealthSpec>, String> {
    Ok(match &s.healthcheck {
        None => None,
        Some(h) if h.disable => None,
        Some(h) => {
            let hp = format!("{path}.healthcheck");
            let cmd = match &h.test {
                None => return Err(format!("{hp}.test: missing")),
                Some(Words::One(s)) => Some(s.clone()),
                Some(Words::Many(v)) => match v.split_first() {
                    Some((k, rest)) if k == "CMD" => Some(
                        shlex::try_join(rest.iter().map(String::as_str))
                            .map_err(|e| format!("{hp}.test: {e}"))?,
                    ),
                    Some((k, rest)) if k == "CMD-SHELL" => Some(rest.join(" ")),
                    Some((k, _)) if k == "NONE" => None,
                    _ => {
                        return Err(format!(
                        "{hp}.test: want [\"CMD\", ...], [\"CMD-SHELL\", \"...\"] or [\"NONE\"]"
                    ))
                    }
                },
            };
            let dur = |v: &Option<String>, what: &str, default: u64| match v {
                Some(x) => duration_ms(&format!("{hp}.{what}"), x),
                None => Ok(default),
            };
            match cmd {
                None => None,
                Some(cmd) => Some(HealthSpec {
                    cmd,
                    interval_ms: dur(&h.interval, "interval", 30_000)?,
                    timeout_ms: dur(&h.timeout, "timeout", 30_000)?,
                    retries: h.retries.unwrap_or(3),
                    start_period_ms: dur(&h.start_period, "start_period", 0)?,
                }),
            }
        }
    })
}

/// Two services of the file publishing one port: refused before anything
/// is made (the managers would refuse the second one anyway).
fn check_ports(services: &[ServiceSpec]) -> Result<(), String> {
    let mut seen: BTreeMap<(u16, Protocol), &str> = BTreeMap::new();
    for s in services {
        for p in s.ports.iter().filter(|p| p.mode == PublishMode::Ingress) {
            if let Some(other) = seen.insert((p.published, p.protocol), &s.name) {
                return Err(format!(
                    "port {}/{:?} is published by both {other} and {}",
                    p.published, p.protocol, s.name
                )
                .to_lowercase());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
