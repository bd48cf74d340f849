//! `shoal service create|ls|ps|inspect|scale|rm`, with Docker's flags.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use super::network::parse_labels;
use crate::api::client::Client;
use crate::api::socket_path;
use crate::output::{print_table, Format};
use crate::raft::services::{
    EndpointMode, HealthSpec, Mode, NetAttach, PortSpec, Protocol, PublishMode, RestartCondition,
    RestartPolicy, ServiceSpec,
};

#[derive(Args, Debug)]
pub struct ServiceArgs {
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: ServiceCmd,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub enum ModeArg {
    Replicated,
    Global,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[arg(long)]
    name: String,
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
    /// Return at once instead of waiting for the tasks to run.
    #[arg(short, long)]
    detach: bool,
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

#[derive(Subcommand, Debug)]
pub enum ServiceCmd {
    /// Create a service: CMD runs as a task in its own namespaces.
    Create(Box<CreateArgs>),
    /// List services.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List a service's tasks.
    Ps {
        service: String,
        #[arg(long)]
        no_trunc: bool,
        /// desired-state=running|shutdown|accepted
        #[arg(short, long)]
        filter: Vec<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show services in detail (Docker's JSON).
    Inspect {
        #[arg(required = true)]
        services: Vec<String>,
        #[arg(long)]
        pretty: bool,
    },
    /// Set replica counts: NAME=N ...
    Scale {
        #[arg(required = true)]
        scales: Vec<String>,
        #[arg(short, long)]
        detach: bool,
    },
    /// Show the output of a service's tasks (fetched from their nodes).
    Logs {
        service: String,
        /// Only the last N lines of each task ("all" or a number).
        #[arg(short = 'n', long, default_value = "all")]
        tail: String,
        /// Keep printing new lines (also of tasks that start later).
        #[arg(short, long)]
        follow: bool,
        /// Prefix each line with the time its node saw it.
        #[arg(short, long)]
        timestamps: bool,
    },
    /// Remove services.
    Rm {
        #[arg(required = true)]
        services: Vec<String>,
    },
}

fn parse_replicas(s: &str) -> Result<u64, String> {
    s.parse()
        .map_err(|_| format!("invalid replicas value {s:?}: want a number >= 0"))
}

fn duration_ms(what: &str, s: &str) -> anyhow::Result<u64> {
    let d = humantime::parse_duration(s).map_err(|e| anyhow::anyhow!("bad {what} {s:?}: {e}"))?;
    Ok(d.as_millis() as u64)
}

fn parse_network(s: &str) -> anyhow::Result<NetAttach> {
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
        let (p, t) = ports.split_once(':').ok_or_else(bad)?;
        return Ok(PortSpec {
            published: port(p)?,
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
        published: published.unwrap_or(target),
        target,
        protocol,
        mode,
    })
}

fn spec(c: &CreateArgs) -> anyhow::Result<ServiceSpec> {
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
    Ok(ServiceSpec {
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
    })
}

/// "5 seconds ago", as Docker words it.
fn ago(ms: u64) -> String {
    let s = crate::now_ms().saturating_sub(ms) / 1000;
    match s {
        0 => "Less than a second ago".into(),
        1 => "1 second ago".into(),
        2..=59 => format!("{s} seconds ago"),
        60..=119 => "About a minute ago".into(),
        120..=3599 => format!("{} minutes ago", s / 60),
        _ => format!("{} hours ago", s / 3600),
    }
}

/// `running` -> `Running`, as Docker shows states.
fn capitalized(w: &str) -> String {
    let mut c = w.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Waits until every task of the service runs (Docker's progress without
/// `--detach`).
fn converge(rt: &tokio::runtime::Runtime, client: &Client, name: &str) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut last = String::new();
    loop {
        let services: Vec<Value> = rt.block_on(client.get("/v1/services"))?;
        let Some(s) = services.iter().find(|s| s["Name"] == name) else {
            bail!("service {name} disappeared");
        };
        let r = s["Replicas"].as_str().unwrap_or("0/0").to_string();
        let (run, want) = r.split_once('/').unwrap_or(("0", "0"));
        let line = format!("overall progress: {run} out of {want} tasks");
        if line != last {
            println!("{line}");
            last = line;
        }
        if run == want && want != "0" {
            println!("verify: Service {name} converged");
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(120) {
            bail!("service {name} did not converge within 120 s (see `shoal service ps {name}`)");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn run(a: ServiceArgs) -> anyhow::Result<()> {
    let client = Client::new(&socket_path(a.socket.as_deref()));
    let rt = super::runtime()?;
    match a.cmd {
        ServiceCmd::Create(c) => {
            let spec = spec(&c)?;
            let v: Value = rt.block_on(client.post("/v1/services", &spec))?;
            println!("{}", v["ID"].as_str().unwrap_or_default());
            if !c.detach {
                converge(&rt, &client, &c.name)?;
            }
        }
        ServiceCmd::Ls { format } => {
            let rows: Vec<Value> = rt.block_on(client.get("/v1/services"))?;
            match format {
                Format::Json => {
                    for r in &rows {
                        println!("{}", serde_json::to_string(r)?);
                    }
                }
                Format::Table => {
                    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
                    let t: Vec<Vec<String>> = rows
                        .iter()
                        .map(|r| {
                            vec![
                                s(&r["ID"]).chars().take(12).collect(),
                                s(&r["Name"]),
                                s(&r["Mode"]),
                                s(&r["Replicas"]),
                                s(&r["Ports"]),
                            ]
                        })
                        .collect();
                    print_table(&["ID", "NAME", "MODE", "REPLICAS", "PORTS"], &t);
                }
            }
        }
        ServiceCmd::Ps {
            service,
            no_trunc,
            filter,
            format,
        } => {
            let mut desired = None;
            for f in &filter {
                match f.split_once('=') {
                    Some(("desired-state", v @ ("running" | "shutdown" | "accepted"))) => {
                        desired = Some(v.to_string())
                    }
                    _ => bail!("bad --filter {f:?} (desired-state=running|shutdown|accepted)"),
                }
            }
            let tasks: Vec<Value> =
                rt.block_on(client.get(&format!("/v1/tasks?service={service}")))?;
            let tasks: Vec<&Value> = tasks
                .iter()
                .filter(|t| match desired.as_deref() {
                    Some("accepted") | Some("running") => t["DesiredState"] == "running",
                    Some(d) => t["DesiredState"] == d,
                    None => true,
                })
                .collect();
            if format == Format::Json {
                for t in &tasks {
                    println!("{}", serde_json::to_string(t)?);
                }
                return Ok(());
            }
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            let mut rows = vec![];
            let mut seen = std::collections::BTreeSet::new();
            for t in tasks {
                let short = {
                    let slot = t["Slot"].as_u64().unwrap_or(0);
                    if slot == 0 {
                        format!("{}.{}", s(&t["ServiceName"]), s(&t["NodeID"]))
                    } else {
                        format!("{}.{}", s(&t["ServiceName"]), slot)
                    }
                };
                let name = if seen.insert(short.clone()) {
                    short
                } else {
                    format!(" \\_ {short}")
                };
                let id = s(&t["ID"]);
                let word = capitalized(&s(&t["Status"]["State"]));
                let since = t["Status"]["TimestampMs"]
                    .as_u64()
                    .map(ago)
                    .unwrap_or_default();
                let err = s(&t["Status"]["Err"]);
                rows.push(vec![
                    if no_trunc {
                        id
                    } else {
                        id.chars().take(12).collect()
                    },
                    name,
                    s(&t["Node"]),
                    capitalized(&s(&t["DesiredState"])),
                    format!("{word} {since}"),
                    // By characters: an error may hold multi-byte text.
                    if no_trunc || err.chars().count() <= 60 {
                        err
                    } else {
                        format!("\"{}…\"", err.chars().take(59).collect::<String>())
                    },
                ]);
            }
            print_table(
                &[
                    "ID",
                    "NAME",
                    "NODE",
                    "DESIRED STATE",
                    "CURRENT STATE",
                    "ERROR",
                ],
                &rows,
            );
        }
        ServiceCmd::Inspect { services, pretty } => {
            let mut out = vec![];
            for s in services {
                let v: Value = rt.block_on(client.get(&format!("/v1/services/{s}")))?;
                out.push(v);
            }
            if pretty {
                for v in &out {
                    let s = &v["Spec"];
                    println!("ID:\t\t{}", v["ID"].as_str().unwrap_or_default());
                    println!("Name:\t\t{}", s["Name"].as_str().unwrap_or_default());
                    match s["Mode"]["Replicated"]["Replicas"].as_u64() {
                        Some(r) => println!("Service Mode:\tReplicated\n Replicas:\t{r}"),
                        None => println!("Service Mode:\tGlobal"),
                    }
                    println!(
                        "Command:\t{}",
                        s["TaskTemplate"]["ContainerSpec"]["Command"]
                    );
                    for vip in v["Endpoint"]["VirtualIPs"].as_array().into_iter().flatten() {
                        println!(
                            "Virtual IP:\t{} ({})",
                            vip["Addr"].as_str().unwrap_or_default(),
                            vip["NetworkID"].as_str().unwrap_or_default()
                        );
                    }
                    println!(
                        "Endpoint Mode:\t{}",
                        s["EndpointSpec"]["Mode"].as_str().unwrap_or_default()
                    );
                }
            } else {
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
        }
        ServiceCmd::Scale { scales, detach } => {
            let mut parsed = vec![];
            for s in &scales {
                let (name, n) = s
                    .split_once('=')
                    .with_context(|| format!("bad scale {s:?} (want SERVICE=REPLICAS)"))?;
                let n: u64 = n.parse().map_err(|_| {
                    anyhow::anyhow!("invalid replicas value {n:?} for {name}: want a number >= 0")
                })?;
                parsed.push((name.to_string(), n));
            }
            for (name, n) in &parsed {
                let _: String = rt.block_on(client.post(
                    &format!("/v1/services/{name}/scale"),
                    &serde_json::json!({"replicas": n}),
                ))?;
                println!("{name} scaled to {n}");
            }
            if !detach {
                for (name, n) in &parsed {
                    if *n > 0 {
                        converge(&rt, &client, name)?;
                    }
                }
            }
        }
        ServiceCmd::Logs {
            service,
            tail,
            follow,
            timestamps,
        } => {
            let tail: u64 = match tail.as_str() {
                "all" => 0,
                t => t
                    .parse()
                    .map_err(|_| anyhow::anyhow!("bad --tail {t:?} (a number or all)"))?,
            };
            logs(&rt, &client, &service, tail, follow, timestamps)?;
        }
        ServiceCmd::Rm { services } => {
            for s in services {
                let name: String = rt.block_on(client.delete(&format!("/v1/services/{s}")))?;
                println!("{name}");
            }
        }
    }
    Ok(())
}

/// Pages through a service's logs; with `follow`, forever (a page returns
/// within about a second: the nodes answer with their next heartbeat).
fn logs(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    service: &str,
    tail: u64,
    follow: bool,
    timestamps: bool,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut q = crate::agent::LogsQuery {
        tail,
        timestamps,
        cursors: Default::default(),
    };
    let mut told = std::collections::BTreeSet::new();
    loop {
        let page: crate::agent::LogsPage =
            rt.block_on(client.post(&format!("/v1/services/{service}/logs"), &q))?;
        let mut out = std::io::stdout().lock();
        for l in &page.lines {
            writeln!(out, "{l}")?;
        }
        for s in page.silent {
            if told.insert(s.clone()) {
                eprintln!("no logs from {s}");
            }
        }
        out.flush()?;
        q.cursors = page.cursors;
        if !follow && !page.more {
            return Ok(());
        }
        if !page.more && page.lines.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }
}
