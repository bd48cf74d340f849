//! `shoal-cni`: the CNI plugin (spec 0.3.0 to 1.1.0), which is the `shoal`
//! binary called by that name. The spec's side (environment, stdin, result
//! layouts per version, error objects) is the `rscni-plugin` crate's; this
//! module turns each command into a call to the local daemon's
//! `/v1/attachments` (`agent/attachments.rs`), which does the work.
//!
//! Configuration keys besides the spec's: `network` (the Shoal network,
//! default: the configuration's `name`) and `socket` (the daemon's API
//! socket, default `$SHOAL_SOCKET`, else `/run/shoal/shoal.sock`). A wanted
//! address comes from `runtimeConfig.ips` (capability `ips`) or
//! `CNI_ARGS=IP=...`; the container's name, which the embedded DNS answers,
//! from `CNI_ARGS` `K8S_POD_NAME` (podman's) or `NAME`, else
//! `runtimeConfig.aliases` (capability `aliases`), else the container id
//! when it is short (ctr's).
//!
//! Error codes: 3 unknown container (CHECK), 4 missing environment, 6
//! undecodable input, 7 a configuration naming an unknown or non-attachable
//! network or a bad address, 11 the daemon or the managers unreachable (try
//! again), 50/51 from STATUS, 100 the daemon's own failure, 101 an address
//! or interface already taken, 102 CHECK found the interface changed.

mod check;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use rscni_plugin::cni::{Cni, Plugin};
use rscni_plugin::error::Error;
use rscni_plugin::types::{Args, CNIResult, Dns, Interface, IpConfig, NetConf, Route};
use serde_json::Value;

use crate::api::client::Client;
use crate::wire::{AttachCreate, AttachView, ErrorKind, WireError};

/// The name runtimes call the plugin by (a link to `shoal`).
pub const PLUGIN_NAME: &str = "shoal-cni";

/// The resolver every attached container has (the embedded DNS).
const RESOLVER: &str = "127.0.0.11";

/// Runs the plugin: reads the environment and stdin, answers on stdout.
pub fn main() -> ! {
    let plugin =
        Plugin::default().msg("shoal-cni: containers on Shoal's attachable swarm networks");
    let code = match plugin.run(&ShoalCni) {
        Ok(()) => 0,
        Err(_) => 1,
    };
    std::process::exit(code)
}

struct ShoalCni;

/// The configuration's Shoal keys.
struct Conf {
    network: String,
    client: Client,
}

fn custom_str<'a>(c: &'a NetConf, key: &str) -> Result<Option<&'a str>, Error> {
    match c.custom.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(other) => Err(Error::InvalidNetworkConfig(format!(
            "`{key}` must be a non-empty string, not {other}"
        ))),
    }
}

fn conf(c: &NetConf) -> Result<Conf, Error> {
    let network = match custom_str(c, "network")? {
        Some(n) => n.to_string(),
        None if !c.name.is_empty() => c.name.clone(),
        None => {
            return Err(Error::InvalidNetworkConfig(
                "no network: set the configuration's `network` key or its `name`".into(),
            ))
        }
    };
    let socket = match custom_str(c, "socket")? {
        Some(s) => PathBuf::from(s),
        None => crate::api::socket_path(None),
    };
    Ok(Conf {
        network,
        client: Client::new(&socket),
    })
}

/// One daemon call on a small runtime of its own (a plugin process lives
/// for one command).
fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> Result<T, Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::IOFailure(format!("runtime: {e}")))?;
    rt.block_on(f).map_err(daemon_error)
}

/// The daemon's answer as a CNI error: its kind decides the code.
fn daemon_error(e: anyhow::Error) -> Error {
    let msg = format!("{e:#}");
    match WireError::kind_of(e.as_ref()) {
        ErrorKind::Unavailable | ErrorKind::Gone => Error::TryAgainLater(msg),
        ErrorKind::Invalid | ErrorKind::NotFound => Error::InvalidNetworkConfig(msg),
        ErrorKind::Conflict => Error::Custom(101, "already taken".into(), msg),
        _ => Error::Custom(100, "the shoal daemon failed".into(), msg),
    }
}

/// `KEY=VALUE;...` of `CNI_ARGS`.
fn cni_arg<'a>(args: &'a Args, key: &str) -> Option<&'a str> {
    args.args()?
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

fn runtime_custom<'a>(c: &'a NetConf, key: &str) -> Option<&'a Value> {
    c.runtime_config.as_ref()?.custom.get(key)
}

/// The wanted address, if any: `runtimeConfig.ips` (CIDR or bare), else
/// `CNI_ARGS IP=`.
fn wanted_ip(args: &Args) -> Result<Option<Ipv4Addr>, Error> {
    let from_rt = runtime_custom(args.config(), "ips")
        .and_then(Value::as_array)
        .and_then(|v| v.iter().filter_map(Value::as_str).next());
    let Some(s) = from_rt.or_else(|| cni_arg(args, "IP")) else {
        return Ok(None);
    };
    let bare = s.split('/').next().unwrap_or(s);
    bare.parse()
        .map(Some)
        .map_err(|_| Error::InvalidNetworkConfig(format!("bad IPv4 address {s:?}")))
}

/// The name the embedded DNS answers for the container.
fn container_name(args: &Args, network: &str, container_id: &str) -> String {
    let alias = runtime_custom(args.config(), "aliases")
        .and_then(|a| a.get(network).or_else(|| a.get(&args.config().name)))
        .and_then(Value::as_array)
        .and_then(|v| v.iter().filter_map(Value::as_str).next());
    // podman passes the name as K8S_POD_NAME and the short id as alias.
    let named = cni_arg(args, "K8S_POD_NAME")
        .or_else(|| cni_arg(args, "NAME"))
        .or(alias);
    match named {
        Some(n) => n.to_string(),
        // A runtime's generated id (64 hex digits) is no name to resolve.
        None if container_id.len() <= 32 => container_id.to_string(),
        None => String::new(),
    }
}

fn ids(args: &Args) -> Result<(String, String), Error> {
    let id = args
        .container_id()
        .ok_or_else(|| Error::InvalidEnvValue("CNI_CONTAINERID is not set".into()))?;
    let ifname = args
        .ifname()
        .ok_or_else(|| Error::InvalidEnvValue("CNI_IFNAME is not set".into()))?;
    Ok((id.to_string(), ifname.to_string()))
}

fn result(a: &AttachView) -> Result<CNIResult, Error> {
    let gw = std::net::IpAddr::V4(a.gateway);
    let address = ipnet::Ipv4Net::new(a.ip, a.prefix_len)
        .map_err(|e| Error::Custom(100, "bad address from the daemon".into(), e.to_string()))?;
    Ok(CNIResult {
        interfaces: vec![Interface {
            name: a.ifname.clone(),
            mac: a.mac.clone(),
            mtu: Some(a.mtu),
            sandbox: Some(a.netns.clone()),
            socket_path: None,
            pci_id: None,
        }],
        ips: vec![IpConfig {
            interface: Some(0),
            address: address.into(),
            gateway: Some(gw),
        }],
        routes: vec![Route {
            dst: "0.0.0.0/0".parse().expect("valid"),
            gw: Some(gw),
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }],
        dns: Some(Dns {
            nameservers: vec![RESOLVER.into()],
            ..Default::default()
        }),
    })
}

/// A container id or interface name goes into a URL path: only the
/// characters the spec allows (the daemon checks them again).
fn url_safe(what: &str, s: &str) -> Result<(), Error> {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        Ok(())
    } else {
        Err(Error::InvalidEnvValue(format!("invalid {what} {s:?}")))
    }
}

impl Cni for ShoalCni {
    fn add(&self, args: Args) -> Result<CNIResult, Error> {
        let c = conf(args.config())?;
        let (id, ifname) = ids(&args)?;
        let netns = args
            .netns()
            .ok_or_else(|| Error::InvalidEnvValue("CNI_NETNS is not set".into()))?;
        let req = AttachCreate {
            network: c.network.clone(),
            name: container_name(&args, &c.network, &id),
            container_id: id,
            ifname: Some(ifname),
            netns: netns.to_string_lossy().into_owned(),
            ip: wanted_ip(&args)?,
            default_route: None,
        };
        let view: AttachView = block_on(c.client.post("/v1/attachments", &req))?;
        result(&view)
    }

    fn del(&self, args: Args) -> Result<(), Error> {
        let c = conf(args.config())?;
        let (id, ifname) = ids(&args)?;
        url_safe("container id", &id)?;
        url_safe("interface name", &ifname)?;
        let path = format!("/v1/attachments/{id}?ifname={ifname}");
        let _gone: Vec<AttachView> = block_on(c.client.delete(&path))?;
        Ok(())
    }

    fn check(&self, args: Args) -> Result<(), Error> {
        let c = conf(args.config())?;
        let (id, ifname) = ids(&args)?;
        let netns = args
            .netns()
            .ok_or_else(|| Error::InvalidEnvValue("CNI_NETNS is not set".into()))?;
        let prev = args.config().prev_result.as_ref().ok_or_else(|| {
            Error::InvalidNetworkConfig("CHECK needs the ADD result (`prevResult`)".into())
        })?;
        let all: Vec<AttachView> = block_on(c.client.get("/v1/attachments"))?;
        let a = all
            .into_iter()
            .find(|a| a.container_id == id && a.ifname == ifname)
            .ok_or_else(|| {
                Error::NotExist(format!("container {id} has no {ifname} on a Shoal network"))
            })?;
        check::against(&a, prev, netns)
            .map_err(|why| Error::Custom(102, "the attachment changed".into(), why))
    }

    fn status(&self, args: Args) -> Result<(), Error> {
        let c = conf(args.config())?;
        url_safe("network", &c.network)?;
        // No daemon: existing containers keep their packets (the dataplane
        // is pinned) but lose their resolver and updates.
        if let Err(e) = block_on(c.client.get::<crate::wire::NodeInfo>("/v1/info")) {
            return Err(Error::PluginNotAvailableLimitedConnectivity(
                e.details().into(),
            ));
        }
        let path = format!("/v1/attachable/{}", c.network);
        block_on(c.client.get::<Value>(&path))
            .map(drop)
            .map_err(|e| {
                Error::PluginNotAvailable(format!("network {}: {}", c.network, e.details()))
            })
    }

    fn gc(&self, args: Args) -> Result<(), Error> {
        let c = conf(args.config())?;
        let valid = args.config().valid_attachments.clone().unwrap_or_default();
        let all: Vec<AttachView> = block_on(c.client.get("/v1/attachments"))?;
        for a in all.iter().filter(|a| a.network == c.network) {
            let keep = valid
                .iter()
                .any(|v| v.container_id == a.container_id && v.ifname == a.ifname);
            if !keep {
                let path = format!("/v1/attachments/{}?ifname={}", a.container_id, a.ifname);
                let _gone: Vec<AttachView> = block_on(c.client.delete(&path))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rscni_plugin::test_util::ArgsBuilder;

    fn args(conf: &str, cni_args: &str, id: &str) -> Args {
        ArgsBuilder::default()
            .container_id(id)
            .unwrap()
            .netns("/run/netns/x")
            .ifname("eth0")
            .unwrap()
            .args(cni_args)
            .config(conf)
            .unwrap()
            .build()
            .unwrap()
    }

    #[test]
    fn network_socket_name_and_address_come_from_config_args_or_defaults() {
        let a = args(
            r#"{"cniVersion":"1.1.0","name":"conf","type":"shoal-cni","network":"appnet","socket":"/run/x.sock",
                "runtimeConfig":{"ips":["10.0.5.7/24"],"aliases":{"appnet":["box1","b1"]}}}"#,
            "IgnoreUnknown=1;K8S_POD_NAME=pod",
            &"f".repeat(64),
        );
        let c = conf(a.config()).unwrap();
        assert_eq!(c.network, "appnet");
        assert_eq!(wanted_ip(&a).unwrap(), Some("10.0.5.7".parse().unwrap()));
        assert_eq!(container_name(&a, "appnet", &"f".repeat(64)), "pod");
        let a = args(
            r#"{"cniVersion":"1.1.0","name":"appnet","type":"shoal-cni",
                "runtimeConfig":{"aliases":{"appnet":["box1","b1"]}}}"#,
            "IgnoreUnknown=1",
            &"f".repeat(64),
        );
        assert_eq!(container_name(&a, "appnet", &"f".repeat(64)), "box1");

        // The name is the network; CNI_ARGS give the address and the name.
        let a = args(
            r#"{"cniVersion":"0.4.0","name":"appnet","type":"shoal-cni"}"#,
            "IgnoreUnknown=1;IP=10.0.5.9;K8S_POD_NAME=web-client",
            &"f".repeat(64),
        );
        assert_eq!(conf(a.config()).unwrap().network, "appnet");
        assert_eq!(wanted_ip(&a).unwrap(), Some("10.0.5.9".parse().unwrap()));
        assert_eq!(container_name(&a, "appnet", &"f".repeat(64)), "web-client");

        // No name anywhere: a short id (ctr's) is the name, a generated one is none.
        let a = args(
            r#"{"cniVersion":"1.0.0","name":"appnet","type":"shoal-cni"}"#,
            "",
            "c2",
        );
        assert_eq!(container_name(&a, "appnet", "c2"), "c2");
        assert_eq!(container_name(&a, "appnet", &"f".repeat(64)), "");
        assert_eq!(wanted_ip(&a).unwrap(), None);
    }

    #[test]
    fn bad_configuration_is_refused_with_its_code() {
        let code = |e: Error| u32::from(&e);
        let a = args(
            r#"{"cniVersion":"1.0.0","name":"n","type":"shoal-cni","network":42}"#,
            "",
            "c1",
        );
        assert_eq!(code(conf(a.config()).err().unwrap()), 7);
        let a = args(
            r#"{"cniVersion":"1.0.0","name":"n","type":"shoal-cni"}"#,
            "IP=10.0.5.300",
            "c1",
        );
        assert_eq!(code(wanted_ip(&a).unwrap_err()), 7);
        assert_eq!(code(url_safe("container id", "a/../b").unwrap_err()), 4);
        // The daemon's refusals keep their meaning.
        let down = anyhow::Error::new(WireError::unavailable("cannot reach the shoal daemon"));
        assert_eq!(code(daemon_error(down)), 11);
        let taken = anyhow::Error::new(WireError::conflict("10.0.5.7 is in use"));
        assert_eq!(code(daemon_error(taken)), 101);
        let plain = anyhow::Error::new(WireError::invalid("network x is not attachable"));
        assert_eq!(code(daemon_error(plain)), 7);
    }
}
