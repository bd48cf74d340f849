//! `shoal debug dns [--task TASK]`: the node's embedded DNS as its daemon
//! sees it.

use std::path::Path;

use anyhow::Result;

use crate::output::{print_json, print_table, Format};
use crate::wire::DnsReport;

pub fn run(socket: &Path, task: Option<&str>, format: Format) -> Result<()> {
    let client = crate::api::client::Client::new(socket);
    let path = match task {
        Some(t) => format!("/v1/debug/dns?task={t}"),
        None => "/v1/debug/dns".into(),
    };
    let r: DnsReport = super::runtime()?.block_on(client.get(&path))?;
    if format == Format::Json {
        return print_json(&r);
    }
    println!(
        "resolver {} in {} task(s), TTL {} s",
        r.resolver,
        r.serving.len(),
        r.ttl
    );
    let counters = serde_json::to_value(&r.stats)?;
    let rows: Vec<Vec<String>> = counters
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| vec![k.clone(), v.to_string()])
        .collect();
    print_table(&["COUNTER", "VALUE"], &rows);
    let ups: Vec<Vec<String>> = r
        .upstreams
        .iter()
        .map(|u| {
            vec![
                u.addr.to_string(),
                u.answered.to_string(),
                u.failed.to_string(),
                u.last_error.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    println!();
    print_table(&["UPSTREAM", "ANSWERED", "FAILED", "LAST ERROR"], &ups);
    if task.is_some() {
        let names: Vec<Vec<String>> = r
            .names
            .iter()
            .map(|(n, ips)| {
                vec![
                    n.clone(),
                    ips.iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                ]
            })
            .collect();
        println!();
        print_table(&["NAME", "ADDRESSES"], &names);
    }
    Ok(())
}
