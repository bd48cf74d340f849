//! What the debug commands read from a daemon: DNS, balancers, local relays, Raft.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use serde::{Deserialize, Serialize};

use shoal_dataplane::ipvs::IpvsService;
use shoal_dns::{Stats, UpstreamView};

use super::{Ipsec, RaftId};

/// `GET /v1/debug/raft`: a manager's Raft member as openraft's metrics
/// show it. Log positions are `null` before there are any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftDebug {
    pub id: RaftId,
    pub node_id: String,
    /// openraft's server state: `Leader`, `Follower`, `Candidate`, `Learner`.
    pub state: String,
    pub term: u64,
    pub leader: Option<RaftId>,
    pub voters: Vec<RaftId>,
    pub learners: Vec<RaftId>,
    /// Raft id -> control address of every member.
    pub nodes: BTreeMap<String, String>,
    pub last_log_index: Option<u64>,
    /// The highest index a majority holds (known on the leader only).
    pub committed: Option<u64>,
    pub applied: Option<u64>,
    pub snapshot: Option<u64>,
    pub purged: Option<u64>,
    /// Entries kept in the log (after compaction).
    pub log_entries: Option<u64>,
    pub millis_since_quorum_ack: Option<u64>,
    /// Node records in the applied state.
    pub records: usize,
}

/// `shoal debug dns`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DnsReport {
    pub resolver: String,
    pub ttl: u32,
    pub serving: Vec<String>,
    pub upstreams: Vec<UpstreamView>,
    pub stats: Stats,
    /// With `--task`: the names it sees.
    #[serde(default)]
    pub names: Vec<(String, Vec<Ipv4Addr>)>,
}
/// `shoal daemon --lb`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LbMode {
    /// eBPF (the kernel may lack IPVS; eBPF is always there).
    #[default]
    Auto,
    Ebpf,
    Ipvs,
}

/// `GET /v1/debug/lb`: which balancer, and IPVS's tables when it is IPVS
/// (the eBPF balancer's maps are read from their pins directly).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LbReport {
    pub mode: LbMode,
    #[serde(default)]
    pub ipvs: Vec<IpvsNsView>,
    /// Published ports relayed for the node's own processes.
    #[serde(default)]
    pub local: Vec<LocalPort>,
}
/// A balancing namespace in `debug lb`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IpvsNsView {
    pub vni: u32,
    pub endpoint: String,
    pub lb_addr: Ipv4Addr,
    pub services: Vec<IpvsService>,
}
/// One published port as a local relay serves it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LocalPort {
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    pub published: u16,
    /// Where the relay connects: the ingress VIP and the target port, or
    /// 127.0.0.1 and the target port inside a host-mode task.
    pub upstream: SocketAddrV4,
    /// The namespace (a path) the relay's upstream sockets are made in.
    pub netns: String,
}

/// `GET /v1/debug/ipsec`: encrypted networks on this node, the keys in
/// use, and per peer node its SAs (never a key).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IpsecView {
    pub support: Ipsec,
    /// The encrypted networks' vxlan devices on this node.
    pub devices: Vec<String>,
    pub encrypted_vnis: Vec<u32>,
    /// The ring key ids the SAs were last made from, and the one sent with.
    pub ring: Vec<u32>,
    pub sending: Option<u32>,
    pub peers: Vec<IpsecPeerView>,
    /// The kernel's xfrm error counters that are not zero.
    pub kernel_errors: Vec<(String, u64)>,
}

/// One peer node's SAs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IpsecPeerView {
    pub peer: Ipv4Addr,
    /// The key id the outbound SA uses (None: no outbound SA).
    pub out_key: Option<u32>,
    pub out_spi: Option<u32>,
    pub out_packets: u64,
    /// The inbound SAs' key ids (one per ring key).
    pub in_keys: Vec<u32>,
    pub in_packets: u64,
    /// Packets the SAs refused (replays, failed integrity checks).
    pub errors: u64,
}

impl IpsecPeerView {
    pub fn new(peer: Ipv4Addr) -> Self {
        Self {
            peer,
            out_key: None,
            out_spi: None,
            out_packets: 0,
            in_keys: vec![],
            in_packets: 0,
            errors: 0,
        }
    }

    /// Adds one of its SAs (`key_id`: the ring key it was made from).
    pub fn add(&mut self, s: &shoal_dataplane::ipsec::SaStat, key_id: u32) {
        if s.outbound {
            self.out_key = Some(key_id);
            self.out_spi = Some(s.spi);
            self.out_packets += s.packets;
        } else {
            self.in_keys.push(key_id);
            self.in_packets += s.packets;
        }
        self.errors += s.errors;
    }
}
