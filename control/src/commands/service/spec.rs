//! `service create`'s flags and the spec they make (also used by
//! `service update` for the flags both share).

use anyhow::bail;
use clap::{Args, ValueEnum};

use super::super::network::parse_labels;
use super::policy::duration_ms;
use crate::wire::{
    EndpointMode, HealthSpec, Mode, NetAttach, PortSpec, Protocol, PublishMode, RestartCondition,
    RestartPolicy, ServiceSpec,
};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub enum ModeArg {
    Replicated,
    Global,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[arg(long)]
    pub name: String,
    #[arg(long, allow_hyphen_values = true, value_parser = parse_replicas)]
    replicas: Option<u64>,
    #[arg(long, value_enum, default_value = "replicated")]
    mode: ModeArg,
    /// NET, or name=NET,alias=A[,alias=B]
    #[arg(long = "network")]
    networks: Vec<String>,
    #[arg(long, default_value = "vip")]
    endpoint_mode: String,
    /// published=P,target=T[,protocol=tcp|udp][,mode=ingress|host], or P:T[/udp]
    #[arg(short, long = "publish")]
    publish: Vec<String>,
    #[arg(short, long = "env")]
    env: Vec<String>,
    #[arg(long)]
    workdir: Option<String>,
    #[arg(long = "constraint")]
    constraints: Vec<String>,
    #[arg(long = "placement-pref")]
    placement_prefs: Vec<String>,
    #[arg(long, default_value_t = 0)]
    replicas_max_per_node: u64,
    #[arg(long, value_enum, default_value = "any")]
    restart_condition: RestartArg,
    #[arg(long, default_value = "5s")]
    restart_delay: String,
    #[arg(long, default_value_t = 0)]
    restart_max_attempts: u64,
    #[arg(long)]
    health_cmd: Option<String>,
    #[arg(long, default_value = "30s")]
    health_interval: String,
    #[arg(long, default_value = "30s")]
    health_timeout: String,
    #[arg(long, default_value_t = 3)]
    health_retries: u64,
    #[arg(long, default_value = "0s")]
    health_start_period: String,
    #[arg(long, default_value = "10s")]
    stop_grace_period: String,
    #[arg(long = "label")]
    labels: Vec<String>,
    #[command(flatten)]
    policy: super::policy::PolicyArgs,
    /// Return at once instead of waiting for the tasks to run.
    #[arg(short, long)]
    pub detach: bool,
    /// The task's command (after --).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RestartArg {
    None,
    OnFailure,
    Any,
}

pub(super) fn parse_replicas(s: &str) -> Result<u64, String> {
    s.parse()
        .map_err(|_| format!("invalid replicas value {s:?}: want a number >= 0"))
}

pub(super) fn parse_network(s: &str) -> anyhow::Result<NetAttach> {
    if !s.contains('=') {
        return Ok(NetAttach {
            target: s.to_string(),
            aliases: vec![],
        });
    }
    let mut a = NetAttach {
        target: String::new(),
        aliases: vec![],
    };
    for kv in s.split(',') {
        match kv.split_once('=') {
            Some(("name", v)) | Some(("target", v)) => a.target = v.to_string(),
            Some(("alias", v)) => a.aliases.push(v.to_string()),
            _ => bail!("bad --network {s:?} (want NET or name=NET,alias=A)"),
        }
    }
    if a.target.is_empty() {
        bail!("bad --network {s:?}: no name=");
    }
    Ok(a)
}

pub fn parse_publish(s: &str) -> anyhow::Result<PortSpec> {
    let bad = || {
        anyhow::anyhow!("bad --publish {s:?} (want published=P,target=T[,protocol=tcp|udp][,mode=ingress|host] or P:T[/udp])")
    };
    let port = |v: &str| v.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad);
    if !s.contains('=') {
        let (ports, proto) = s.split_once('/').unwrap_or((s, "tcp"));
        // `-p 80`: the tasks' port 80 on a port from the dynamic range.
        let (p, t) = ports.split_once(':').unwrap_or(("", ports));
        return Ok(PortSpec {
            published: if p.is_empty() { 0 } else { port(p)? },
            target: port(t)?,
            protocol: match proto {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => return Err(bad()),
            },
            mode: PublishMode::Ingress,
        });
    }
    let (mut published, mut target, mut protocol, mut mode) =
        (None, None, Protocol::Tcp, PublishMode::Ingress);
    for kv in s.split(',') {
        match kv.split_once('=').ok_or_else(bad)? {
            ("published", v) => published = Some(port(v)?),
            ("target", v) => target = Some(port(v)?),
            ("protocol", "tcp") => protocol = Protocol::Tcp,
            ("protocol", "udp") => protocol = Protocol::Udp,
            ("mode", "ingress") => mode = PublishMode::Ingress,
            ("mode", "host") => mode = PublishMode::Host,
            _ => return Err(bad()),
        }
    }
    let target = target.ok_or_else(bad)?;
    Ok(PortSpec {
        // 0: the leader picks one from 30000-32767, as Docker does.
        published: published.unwrap_or(0),
        target,
        protocol,
        mode,
    })
}

pub(super) fn spec(c: &CreateArgs) -> anyhow::Result<ServiceSpec> {
    let mode = match (c.mode, c.replicas) {
        (ModeArg::Global, Some(_)) => bail!("--replicas can only be used with replicated mode"),
        (ModeArg::Global, None) => Mode::Global,
        (ModeArg::Replicated, r) => Mode::Replicated {
            replicas: r.unwrap_or(1),
        },
    };
    for e in &c.env {
        if !e.contains('=') || e.starts_with('=') {
            bail!("bad --env {e:?} (want KEY=VALUE)");
        }
    }
    let endpoint_mode = match c.endpoint_mode.as_str() {
        "vip" => EndpointMode::Vip,
        "dnsrr" => EndpointMode::Dnsrr,
        other => bail!("bad --endpoint-mode {other:?} (vip or dnsrr)"),
    };
    let health = match &c.health_cmd {
        Some(cmd) => Some(HealthSpec {
            cmd: cmd.clone(),
            interval_ms: duration_ms("--health-interval", &c.health_interval)?,
            timeout_ms: duration_ms("--health-timeout", &c.health_timeout)?,
            retries: c.health_retries,
            start_period_ms: duration_ms("--health-start-period", &c.health_start_period)?,
        }),
        None => None,
    };
    let mut spec = ServiceSpec {
        name: c.name.clone(),
        mode,
        command: c.command.clone(),
        env: c.env.clone(),
        workdir: c.workdir.clone(),
        networks: c
            .networks
            .iter()
            .map(|n| parse_network(n))
            .collect::<anyhow::Result<_>>()?,
        endpoint_mode,
        ports: c
            .publish
            .iter()
            .map(|p| parse_publish(p))
            .collect::<anyhow::Result<_>>()?,
        constraints: c.constraints.clone(),
        placement_prefs: c.placement_prefs.clone(),
        max_per_node: c.replicas_max_per_node,
        restart: RestartPolicy {
            condition: match c.restart_condition {
                RestartArg::None => RestartCondition::None,
                RestartArg::OnFailure => RestartCondition::OnFailure,
                RestartArg::Any => RestartCondition::Any,
            },
            delay_ms: duration_ms("--restart-delay", &c.restart_delay)?,
            max_attempts: c.restart_max_attempts,
        },
        health,
        stop_grace_ms: duration_ms("--stop-grace-period", &c.stop_grace_period)?,
        labels: parse_labels(&c.labels)?,
        update: Default::default(),
        rollback: Default::default(),
        force_update: 0,
    };
    c.policy.apply(&mut spec)?;
    Ok(spec)
}
