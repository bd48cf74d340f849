//! `shoal network create|ls|inspect|rm`: swarm-scoped overlay networks.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};

use crate::api::client::Client;
use crate::api::socket_path;
use crate::output::{print_rows, print_table, Format};
use crate::wire::{NetworkInspect, NetworkRow, NetworkSpec};

#[derive(Args, Debug)]
pub struct NetworkArgs {
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: NetworkCmd,
}

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create an overlay network (subnet from the swarm's pool unless given).
    Create {
        /// Only `overlay`.
        #[arg(short, long, default_value = "overlay")]
        driver: String,
        #[arg(long)]
        subnet: Option<ipnet::Ipv4Net>,
        #[arg(long)]
        gateway: Option<Ipv4Addr>,
        #[arg(long)]
        attachable: bool,
        #[arg(long)]
        internal: bool,
        /// The swarm's routing-mesh network, in place of one removed with
        /// `network rm ingress` (e.g. with `--opt encrypted`).
        #[arg(long)]
        ingress: bool,
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Driver options, as Docker's: `encrypted` (IPsec between nodes).
        #[arg(short = 'o', long = "opt")]
        opts: Vec<String>,
        name: String,
    },
    /// List networks.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show networks in detail (Docker's JSON).
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove networks (refused while a service uses one).
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
}

/// `k=v` labels (a bare `k` is `k=`).
pub fn parse_labels(labels: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for l in labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        if k.is_empty() {
            bail!("bad label {l:?} (want key=value)");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Whether `--opt`s ask for encryption: `encrypted` (Docker's way), or
/// `encrypted=true|false`; any other option is refused.
pub fn encrypted_opt(opts: &[String]) -> anyhow::Result<bool> {
    let mut encrypted = false;
    for o in opts {
        let (k, v) = o.split_once('=').unwrap_or((o.as_str(), ""));
        match (k, v) {
            ("encrypted", "" | "true") => encrypted = true,
            ("encrypted", "false") => encrypted = false,
            ("encrypted", v) => bail!("--opt encrypted={v}: want true or false"),
            _ => bail!("--opt {o}: unknown option (Shoal's overlay knows `encrypted`)"),
        }
    }
    Ok(encrypted)
}

/// A `network ls` row as Docker prints it (short id, booleans and labels
/// as strings, Go's time format).
pub fn network_row(n: &NetworkInspect) -> NetworkRow {
    NetworkRow {
        id: super::service::views::short_id(&n.id),
        name: n.name.clone(),
        driver: n.driver.clone(),
        scope: n.scope.clone(),
        internal: n.internal.to_string(),
        ipv6: n.enable_ipv6.to_string(),
        labels: n
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        created_at: go_time(&n.created),
    }
}

/// `2026-11-26T10:00:00.120Z` (the API's RFC 3339, UTC) as Go's
/// `Time.String()` prints it, which Docker's `network ls` shows:
/// `2026-11-26 10:00:00.12 +0000 UTC` (trailing zeros of the fraction
/// dropped). Anything else is left as it is.
pub fn go_time(rfc3339: &str) -> String {
    let Some(t) = rfc3339.strip_suffix('Z') else {
        return rfc3339.to_string();
    };
    let Some((date, time)) = t.split_once('T') else {
        return rfc3339.to_string();
    };
    let time = match time.split_once('.') {
        Some((hms, frac)) => match frac.trim_end_matches('0') {
            "" => hms.to_string(),
            f => format!("{hms}.{f}"),
        },
        None => time.to_string(),
    };
    format!("{date} {time} +0000 UTC")
}

pub fn run(a: NetworkArgs) -> anyhow::Result<()> {
    let client = Client::new(&socket_path(a.socket.as_deref()));
    let rt = super::runtime()?;
    match a.cmd {
        NetworkCmd::Create {
            driver,
            subnet,
            gateway,
            attachable,
            internal,
            ingress,
            labels,
            opts,
            name,
        } => {
            if driver != "overlay" {
                bail!("driver {driver:?} is not supported (only overlay)");
            }
            let encrypted = encrypted_opt(&opts)?;
            let spec = NetworkSpec {
                name,
                subnet,
                gateway,
                attachable,
                internal,
                ingress,
                encrypted,
                labels: parse_labels(&labels)?,
            };
            let v: NetworkInspect = rt.block_on(client.post("/v1/networks", &spec))?;
            println!("{}", v.id);
        }
        NetworkCmd::Ls { format } => {
            let nets: Vec<NetworkInspect> = rt.block_on(client.get("/v1/networks"))?;
            let rows: Vec<NetworkRow> = nets.iter().map(network_row).collect();
            match format {
                Format::Json => print_rows(&rows)?,
                Format::Table => {
                    let rows: Vec<Vec<String>> = rows
                        .into_iter()
                        .map(|r| vec![r.id, r.name, r.driver, r.scope])
                        .collect();
                    print_table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows);
                }
            }
        }
        NetworkCmd::Inspect { networks } => {
            let mut out = vec![];
            for n in networks {
                let v: NetworkInspect = rt.block_on(client.get(&format!("/v1/networks/{n}")))?;
                out.push(v);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        NetworkCmd::Rm { networks } => {
            for n in networks {
                let name: String = rt.block_on(client.delete(&format!("/v1/networks/{n}")))?;
                println!("{name}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_becomes_dockers_row() {
        let n: NetworkInspect = serde_json::from_value(serde_json::json!({
            "Name": "appnet", "Id": "abcdefghijklmnopqrstuvwxy",
            "Created": "2026-11-26T10:00:00.120Z", "Scope": "swarm", "Driver": "overlay",
            "EnableIPv6": false,
            "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.10.0.0/24", "Gateway": "10.10.0.1"}]},
            "Internal": true, "Attachable": false, "Ingress": false,
            "Options": {}, "Labels": {"a": "1", "b": ""},
        }))
        .unwrap();
        let r = network_row(&n);
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({
                "ID": "abcdefghijkl", "Name": "appnet", "Driver": "overlay", "Scope": "swarm",
                "Internal": "true", "IPv6": "false", "Labels": "a=1,b=",
                "CreatedAt": "2026-11-26 10:00:00.12 +0000 UTC",
            })
        );
        assert_eq!(
            go_time("2026-11-26T10:00:00.000Z"),
            "2026-11-26 10:00:00 +0000 UTC"
        );
        assert_eq!(go_time("yesterday"), "yesterday");
    }
}
