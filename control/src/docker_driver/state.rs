//! What the Docker driver remembers across restarts (Docker does not
//! replay CreateNetwork or CreateEndpoint to a restarted plugin): its
//! networks, endpoints and address allocations, in one JSON file in the
//! daemon's data dir, written whole on every change.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// A Docker network mapped onto a Shoal network.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DockerNet {
    pub shoal: String,
    pub subnet: ipnet::Ipv4Net,
    pub gateway: Ipv4Addr,
}

/// A Docker endpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DockerEp {
    /// The Docker network's id.
    pub network: String,
    pub addr: Ipv4Addr,
    pub mac: String,
    /// The local endpoint while joined (Join to Leave).
    #[serde(default)]
    pub joined: Option<String>,
}

/// An address Shoal's IPAM gave Docker: the managers hold it as the
/// attachment `id` of this node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lease {
    pub id: String,
    pub pool: String,
    #[serde(default)]
    pub lb_addr: Option<Ipv4Addr>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DriverState {
    /// The Shoal networks Docker asked pools of, by name.
    #[serde(default)]
    pub pools: BTreeMap<String, DockerNet>,
    /// Docker networks by Docker's id.
    pub networks: BTreeMap<String, DockerNet>,
    pub endpoints: BTreeMap<String, DockerEp>,
    /// Leased addresses by address.
    pub leases: BTreeMap<Ipv4Addr, Lease>,
}

pub struct Store {
    path: PathBuf,
}

impl Store {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("docker-driver.json"),
        }
    }

    /// The state a previous run kept (none: empty).
    pub fn load(&self) -> Result<DriverState> {
        match std::fs::read(&self.path) {
            Ok(b) => Ok(serde_json::from_slice(&b)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DriverState::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// Written to a temporary file and renamed: a crash leaves the old
    /// state or the new, never half of one.
    pub fn save(&self, st: &DriverState) -> Result<()> {
        crate::files::write_atomic(&self.path, &serde_json::to_vec_pretty(st)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert_eq!(store.load().unwrap(), DriverState::default());
        let mut st = DriverState::default();
        st.networks.insert(
            "n1".into(),
            DockerNet {
                shoal: "appnet".into(),
                subnet: "10.10.0.0/24".parse().unwrap(),
                gateway: "10.10.0.1".parse().unwrap(),
            },
        );
        st.leases.insert(
            "10.10.0.5".parse().unwrap(),
            Lease {
                id: "d0123".into(),
                pool: "appnet".into(),
                lb_addr: None,
            },
        );
        store.save(&st).unwrap();
        assert_eq!(Store::new(dir.path()).load().unwrap(), st);
    }
}
