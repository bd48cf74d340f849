//! `shoal debug flows [--service NAME] [--since D] [--last N]`: who talked
//! to a service and what happened to it, across the cluster: every node's
//! flow log (new VIP and mesh flows, drops), gathered by a manager.

use std::time::SystemTime;

use anyhow::{anyhow, Result};
use clap::Args;

use crate::output::{print_json, print_table, Format};
use crate::wire::FlowsPage;
use crate::wire::{FlowQuery, FlowRecord};

#[derive(Args, Debug)]
pub struct FlowsArgs {
    /// Only flows of this service (by name).
    #[arg(long)]
    pub service: Option<String>,
    /// Only flows since then: a duration back from now (`30s`, `5m`, `1h`)
    /// or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many flows from each node (its newest).
    #[arg(long, default_value_t = 500)]
    pub last: usize,
}

/// `--since` as Unix ms.
fn since_ms(s: &str, now: SystemTime) -> Result<u64> {
    let at = match humantime::parse_duration(s) {
        Ok(d) => now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH),
        Err(_) => humantime::parse_rfc3339_weak(s).map_err(|_| {
            anyhow!("bad --since {s:?}: give a duration (30s, 5m, 1h) or an RFC 3339 time")
        })?,
    };
    Ok(at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64)
}

/// `web.2.<25-character id>` as Docker's listings print it: the id cut
/// to 12 characters.
fn short_task(name: &str) -> &str {
    let cut = name
        .rsplit_once('.')
        .map_or(name.len(), |(head, id)| head.len() + 1 + id.len().min(12));
    &name[..cut]
}

fn named(addr: &str, name: &Option<String>) -> String {
    match name {
        Some(n) => format!("{addr} ({})", short_task(n)),
        None => addr.to_string(),
    }
}

fn row(f: &FlowRecord) -> Vec<String> {
    vec![
        crate::clock::rfc3339(f.time_ms),
        f.node.clone(),
        format!("{} {}", f.kind, f.proto),
        named(&f.client, &f.client_task),
        match &f.service {
            Some(s) => format!("{} ({s})", f.address),
            None => f.address.clone(),
        },
        f.backend
            .as_ref()
            .map_or_else(|| "-".into(), |b| named(b, &f.backend_task)),
        match &f.reason {
            Some(r) => format!("{} ({r})", f.verdict),
            None => f.verdict.clone(),
        },
    ]
}

pub(super) fn run(socket: &std::path::Path, a: &FlowsArgs, format: Format) -> Result<()> {
    let q = FlowQuery {
        service: a.service.clone(),
        since_ms: a
            .since
            .as_deref()
            .map(|s| since_ms(s, SystemTime::now()))
            .transpose()?,
        limit: a.last,
    };
    let client = crate::api::client::Client::new(socket);
    let page: FlowsPage = super::runtime()?.block_on(client.post("/v1/flows", &q))?;
    match format {
        Format::Json => print_json(&page)?,
        Format::Table => {
            let rows: Vec<Vec<String>> = page.flows.iter().map(row).collect();
            print_table(
                &[
                    "TIME", "NODE", "KIND", "CLIENT", "SERVICE", "BACKEND", "VERDICT",
                ],
                &rows,
            );
        }
    }
    for s in &page.silent {
        eprintln!("no flows from {s}");
    }
    for n in &page.off {
        eprintln!("{n} keeps no flow log (--flow-log-size 0)");
    }
    for (n, e) in &page.evicted {
        if *e > 0 {
            eprintln!("{n}: {e} older flows were let go (its log keeps the newest)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_or_a_time() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        assert_eq!(since_ms("5m", now).unwrap(), (1_000_000 - 300) * 1000);
        assert_eq!(since_ms("1970-01-01T00:00:10Z", now).unwrap(), 10_000);
        assert!(since_ms("yesterday-ish", now).is_err());
    }

    #[test]
    fn task_ids_are_cut_like_dockers() {
        assert_eq!(
            short_task("web.2.7ne4ll59utvp63dcbyc86xts4"),
            "web.2.7ne4ll59utvp"
        );
        assert_eq!(short_task("web"), "web");
    }
}
