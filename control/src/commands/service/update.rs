//! `service update`: Docker's flags as edits of the stored spec.

use anyhow::{bail, Context};
use clap::Args;

use super::policy::duration_ms;
use super::policy::PolicyArgs;
use super::spec::{parse_network, parse_publish, parse_replicas, RestartArg};
use crate::commands::network::parse_labels;
use crate::wire::{HealthSpec, Mode, RestartCondition, ServiceSpec};

#[derive(Args, Debug, Default, Clone)]
pub struct UpdateArgs {
    pub service: String,
    #[arg(long, allow_hyphen_values = true, value_parser = parse_replicas)]
    replicas: Option<u64>,
    /// The command's arguments (everything after the program), shell-quoted:
    /// `--args "whoami --port 81"`.
    #[arg(long, allow_hyphen_values = true)]
    args: Option<String>,
    #[arg(long)]
    env_add: Vec<String>,
    /// KEY to remove.
    #[arg(long)]
    env_rm: Vec<String>,
    #[arg(long)]
    publish_add: Vec<String>,
    /// The published port to remove (P or P/udp).
    #[arg(long)]
    publish_rm: Vec<String>,
    #[arg(long)]
    network_add: Vec<String>,
    #[arg(long)]
    network_rm: Vec<String>,
    #[arg(long)]
    constraint_add: Vec<String>,
    #[arg(long)]
    constraint_rm: Vec<String>,
    #[arg(long)]
    label_add: Vec<String>,
    #[arg(long)]
    label_rm: Vec<String>,
    #[arg(long)]
    workdir: Option<String>,
    #[arg(long)]
    health_cmd: Option<String>,
    #[arg(long)]
    health_interval: Option<String>,
    #[arg(long)]
    health_timeout: Option<String>,
    #[arg(long)]
    health_retries: Option<u64>,
    #[arg(long)]
    health_start_period: Option<String>,
    /// Drop the health check.
    #[arg(long)]
    no_healthcheck: bool,
    #[arg(long, value_enum)]
    restart_condition: Option<RestartArg>,
    #[arg(long)]
    restart_delay: Option<String>,
    #[arg(long)]
    restart_max_attempts: Option<u64>,
    #[arg(long)]
    stop_grace_period: Option<String>,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Replace every task even if nothing changed.
    #[arg(long)]
    pub force: bool,
    /// Return to the previous spec (as `service rollback`).
    #[arg(long)]
    pub rollback: bool,
    /// Return at once instead of following the update.
    #[arg(short, long)]
    pub detach: bool,
}

/// The spec `u` makes of `old`.
pub fn edit(old: &ServiceSpec, u: &UpdateArgs) -> anyhow::Result<ServiceSpec> {
    let mut s = old.clone();
    if let Some(r) = u.replicas {
        match s.mode {
            Mode::Global => bail!("--replicas can only be used with replicated mode"),
            Mode::Replicated { .. } => s.mode = Mode::Replicated { replicas: r },
        }
    }
    if let Some(a) = &u.args {
        let words =
            shlex::split(a).with_context(|| format!("bad --args {a:?}: unbalanced quotes"))?;
        let program = s.command.first().cloned().unwrap_or_default();
        s.command = std::iter::once(program).chain(words).collect();
    }
    for k in &u.env_rm {
        s.env.retain(|e| e.split('=').next() != Some(k.as_str()));
    }
    for e in &u.env_add {
        let Some((k, _)) = e.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            bail!("bad --env-add {e:?} (want KEY=VALUE)");
        };
        s.env.retain(|x| x.split('=').next() != Some(k));
        s.env.push(e.clone());
    }
    for p in &u.publish_rm {
        let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
        let port: u16 = port
            .parse()
            .map_err(|_| anyhow::anyhow!("bad --publish-rm {p:?} (want PORT[/udp])"))?;
        let before = s.ports.len();
        s.ports.retain(|x| {
            !(x.published == port && format!("{:?}", x.protocol).eq_ignore_ascii_case(proto))
        });
        if s.ports.len() == before {
            bail!("--publish-rm {p}: the service does not publish it");
        }
    }
    for p in &u.publish_add {
        let p = parse_publish(p)?;
        s.ports
            .retain(|x| !(x.published == p.published && x.protocol == p.protocol));
        s.ports.push(p);
    }
    for n in &u.network_rm {
        let before = s.networks.len();
        s.networks.retain(|a| &a.target != n);
        if s.networks.len() == before {
            bail!("--network-rm {n}: the service is not on it (name it as it was attached)");
        }
    }
    for n in &u.network_add {
        let a = parse_network(n)?;
        if s.networks.iter().any(|x| x.target == a.target) {
            bail!("--network-add {}: the service is already on it", a.target);
        }
        s.networks.push(a);
    }
    for c in &u.constraint_rm {
        s.constraints.retain(|x| x != c);
    }
    for c in &u.constraint_add {
        if !s.constraints.contains(c) {
            s.constraints.push(c.clone());
        }
    }
    for k in &u.label_rm {
        s.labels.remove(k);
    }
    s.labels.extend(parse_labels(&u.label_add)?);
    if let Some(w) = &u.workdir {
        s.workdir = Some(w.clone()).filter(|w| !w.is_empty());
    }
    if u.no_healthcheck {
        s.health = None;
    }
    let touches_health = u.health_interval.is_some()
        || u.health_timeout.is_some()
        || u.health_retries.is_some()
        || u.health_start_period.is_some();
    if u.health_cmd.is_some() || touches_health {
        let mut h = s.health.clone().unwrap_or(HealthSpec {
            cmd: String::new(),
            interval_ms: 30_000,
            timeout_ms: 30_000,
            retries: 3,
            start_period_ms: 0,
        });
        if let Some(c) = &u.health_cmd {
            h.cmd = c.clone();
        }
        if h.cmd.is_empty() {
            bail!("--health-* without a health check: give --health-cmd too");
        }
        if let Some(d) = &u.health_interval {
            h.interval_ms = duration_ms("--health-interval", d)?;
        }
        if let Some(d) = &u.health_timeout {
            h.timeout_ms = duration_ms("--health-timeout", d)?;
        }
        if let Some(r) = u.health_retries {
            h.retries = r;
        }
        if let Some(d) = &u.health_start_period {
            h.start_period_ms = duration_ms("--health-start-period", d)?;
        }
        s.health = Some(h);
    }
    if let Some(c) = u.restart_condition {
        s.restart.condition = match c {
            RestartArg::None => RestartCondition::None,
            RestartArg::OnFailure => RestartCondition::OnFailure,
            RestartArg::Any => RestartCondition::Any,
        };
    }
    if let Some(d) = &u.restart_delay {
        s.restart.delay_ms = duration_ms("--restart-delay", d)?;
    }
    if let Some(n) = u.restart_max_attempts {
        s.restart.max_attempts = n;
    }
    if let Some(d) = &u.stop_grace_period {
        s.stop_grace_ms = duration_ms("--stop-grace-period", d)?;
    }
    u.policy.apply(&mut s)?;
    if u.force {
        s.force_update += 1;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{FailureAction, UpdateOrder, UpdatePolicy};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        u: UpdateArgs,
    }

    fn upd(args: &[&str]) -> UpdateArgs {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .unwrap()
            .u
    }

    fn base() -> ServiceSpec {
        serde_json::from_value(serde_json::json!({
            "name": "web", "mode": {"replicated": {"replicas": 2}},
            "command": ["shoal", "whoami", "--port", "80"],
            "env": ["A=1", "B=2"], "stop_grace_ms": 10000,
            "networks": [{"target": "appnet"}],
            "ports": [{"published": 8080, "target": 80}],
        }))
        .unwrap()
    }

    #[test]
    fn flags_edit_the_spec() {
        let s = edit(
            &base(),
            &upd(&[
                "web",
                "--args",
                "whoami --port '81'",
                "--env-add",
                "A=9",
                "--env-rm",
                "B",
                "--publish-rm",
                "8080",
                "--publish-add",
                "9090:81",
                "--network-add",
                "name=other,alias=w",
                "--network-rm",
                "appnet",
                "--replicas",
                "4",
                "--update-parallelism",
                "2",
                "--update-order",
                "start-first",
                "--update-failure-action",
                "rollback",
            ]),
        )
        .unwrap();
        assert_eq!(s.command, ["shoal", "whoami", "--port", "81"]);
        assert_eq!(s.env, ["A=9"]);
        assert_eq!(s.ports.len(), 1);
        assert_eq!(s.ports[0].published, 9090);
        assert_eq!(s.networks[0].target, "other");
        assert_eq!(s.networks[0].aliases, ["w"]);
        assert_eq!(s.mode, Mode::Replicated { replicas: 4 });
        assert_eq!(s.update.parallelism, 2);
        assert_eq!(s.update.order, UpdateOrder::StartFirst);
        assert_eq!(s.update.failure_action, FailureAction::Rollback);
        // The rest stays.
        assert_eq!(s.rollback, UpdatePolicy::default());
        assert_eq!(s.stop_grace_ms, 10_000);
    }

    #[test]
    fn nothing_given_changes_nothing_but_force_does() {
        assert_eq!(edit(&base(), &upd(&["web"])).unwrap(), base());
        assert_eq!(
            edit(&base(), &upd(&["web", "--force"]))
                .unwrap()
                .force_update,
            1
        );
    }

    #[test]
    fn bad_edits_are_refused() {
        for (args, needle) in [
            (&["web", "--publish-rm", "1234"][..], "does not publish"),
            (&["web", "--network-rm", "nope"], "not on it"),
            (&["web", "--network-add", "appnet"], "already on it"),
            (&["web", "--env-add", "novalue"], "KEY=VALUE"),
            (&["web", "--args", "'open"], "unbalanced"),
            (&["web", "--update-max-failure-ratio", "2"], "0 to 1"),
            (&["web", "--health-retries", "2"], "--health-cmd"),
        ] {
            let e = edit(&base(), &upd(args)).unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }
}
