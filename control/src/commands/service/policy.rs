//! `--update-*` and `--rollback-*`: the update and rollback policies that
//! `service create` and `service update` share.

use anyhow::bail;
use clap::{Args, ValueEnum};

use crate::wire::ServiceSpec;
use crate::wire::{FailureAction, UpdateOrder, UpdatePolicy};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FailureArg {
    Pause,
    Continue,
    Rollback,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OrderArg {
    StopFirst,
    StartFirst,
}

/// `--update-*` and `--rollback-*`: only what is given changes.
#[derive(Args, Debug, Default, Clone)]
pub struct PolicyArgs {
    /// Tasks updated at once (0: all).
    #[arg(long)]
    update_parallelism: Option<u64>,
    /// Wait between batches (e.g. 10s).
    #[arg(long)]
    update_delay: Option<String>,
    /// How long a new task must run to count as updated (default 5s).
    #[arg(long)]
    update_monitor: Option<String>,
    #[arg(long, value_enum)]
    update_failure_action: Option<FailureArg>,
    /// Share of tasks allowed to fail (0 to 1).
    #[arg(long)]
    update_max_failure_ratio: Option<f64>,
    #[arg(long, value_enum)]
    update_order: Option<OrderArg>,
    #[arg(long)]
    rollback_parallelism: Option<u64>,
    #[arg(long)]
    rollback_delay: Option<String>,
    #[arg(long)]
    rollback_monitor: Option<String>,
    #[arg(long, value_enum)]
    rollback_failure_action: Option<FailureArg>,
    #[arg(long)]
    rollback_max_failure_ratio: Option<f64>,
    #[arg(long, value_enum)]
    rollback_order: Option<OrderArg>,
}

impl PolicyArgs {
    pub fn apply(&self, spec: &mut ServiceSpec) -> anyhow::Result<()> {
        set_policy(
            &mut spec.update,
            "update",
            (
                self.update_parallelism,
                &self.update_delay,
                &self.update_monitor,
                self.update_failure_action,
                self.update_max_failure_ratio,
                self.update_order,
            ),
        )?;
        if matches!(self.rollback_failure_action, Some(FailureArg::Rollback)) {
            bail!("--rollback-failure-action: pause or continue (a rollback cannot roll back)");
        }
        set_policy(
            &mut spec.rollback,
            "rollback",
            (
                self.rollback_parallelism,
                &self.rollback_delay,
                &self.rollback_monitor,
                self.rollback_failure_action,
                self.rollback_max_failure_ratio,
                self.rollback_order,
            ),
        )
    }
}

type PolicyFlags<'a> = (
    Option<u64>,
    &'a Option<String>,
    &'a Option<String>,
    Option<FailureArg>,
    Option<f64>,
    Option<OrderArg>,
);

fn set_policy(p: &mut UpdatePolicy, what: &str, f: PolicyFlags) -> anyhow::Result<()> {
    let (parallelism, delay, monitor, action, ratio, order) = f;
    if let Some(n) = parallelism {
        p.parallelism = n;
    }
    if let Some(d) = delay {
        p.delay_ms = duration_ms(&format!("--{what}-delay"), d)?;
    }
    if let Some(d) = monitor {
        p.monitor_ms = duration_ms(&format!("--{what}-monitor"), d)?;
    }
    if let Some(a) = action {
        p.failure_action = match a {
            FailureArg::Pause => FailureAction::Pause,
            FailureArg::Continue => FailureAction::Continue,
            FailureArg::Rollback => FailureAction::Rollback,
        };
    }
    if let Some(r) = ratio {
        if !(0.0..=1.0).contains(&r) {
            bail!("--{what}-max-failure-ratio {r}: want a number from 0 to 1");
        }
        p.max_failure_ratio = r;
    }
    if let Some(o) = order {
        p.order = match o {
            OrderArg::StopFirst => UpdateOrder::StopFirst,
            OrderArg::StartFirst => UpdateOrder::StartFirst,
        };
    }
    Ok(())
}

/// A duration flag (`10s`, `1m30s`) in milliseconds.
pub(super) fn duration_ms(what: &str, s: &str) -> anyhow::Result<u64> {
    let d = humantime::parse_duration(s).map_err(|e| anyhow::anyhow!("bad {what} {s:?}: {e}"))?;
    Ok(d.as_millis() as u64)
}
