//! Encrypted overlay networks on this node: the IPsec SAs and policies it
//! keeps with every live peer while it is on an encrypted network, made
//! from the swarm's gossip key ring (so they rotate with it, and at once
//! when a node is removed), and what `debug ipsec` shows of them.
//!
//! Keys: each direction between two nodes has its own AES key and salt,
//! HKDF-SHA256 of a ring key with the two VTEPs and the key id, so no two
//! SAs share a key. The SPI names the key and the sender: `(id % 255 + 1)
//! << 24 | the sender VTEP's low 24 bits`, unique per receiver while the
//! nodes' addresses differ in their low 24 bits (one /8). A node sends
//! with the key the managers say every live node holds (the gossip send
//! key) and accepts every key of the ring, so a rotation never cuts
//! traffic. Like Docker's, the keys are the swarm's: any member could
//! derive any pair's (docs/encryption.md).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use ring::hkdf;
use shoal_dataplane::ipsec::{self, Sa, KEY_LEN};
use tracing::{info, warn};

use crate::gossip::keys::SwarmKeys;
use crate::wire::{IpsecPeerView, IpsecView};

const SALT: &[u8] = b"shoal ipsec v1";

/// The SPI of the SA from `src` under key `key_id`.
pub fn spi(key_id: u32, src: Ipv4Addr) -> u32 {
    ((key_id % 255 + 1) << 24) | (u32::from(src) & 0x00ff_ffff)
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// The AES-256 key and RFC 4106 salt of the SA `src` -> `dst` under a
/// ring key.
pub fn sa_key(secret: &[u8; 32], key_id: u32, src: Ipv4Addr, dst: Ipv4Addr) -> [u8; KEY_LEN] {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(secret);
    let (s, d, id) = (src.octets(), dst.octets(), key_id.to_be_bytes());
    let info = [&s[..], &d[..], &id[..]];
    let mut out = [0u8; KEY_LEN];
    prk.expand(&info, Len(KEY_LEN))
        .and_then(|okm| okm.fill(&mut out))
        .expect("HKDF output of 36 bytes");
    out
}

/// Every SA this node should have with `peers` (one outbound policy per
/// peer goes with them, `sync_ipsec`).
pub fn desired(me: Ipv4Addr, peers: &BTreeSet<Ipv4Addr>, keys: &SwarmKeys) -> Vec<Sa> {
    let send = keys
        .keys
        .iter()
        .find(|k| Some(k.id) == keys.send)
        .or(keys.keys.first());
    let mut out = vec![];
    for &peer in peers.iter().filter(|p| **p != me) {
        if let Some(k) = send {
            out.push(Sa {
                src: me,
                dst: peer,
                spi: spi(k.id, me),
                key: sa_key(&k.key.0, k.id, me, peer),
                outbound: true,
            });
        }
        for k in &keys.keys {
            out.push(Sa {
                src: peer,
                dst: me,
                spi: spi(k.id, peer),
                key: sa_key(&k.key.0, k.id, peer, me),
                outbound: false,
            });
        }
    }
    out
}

type SaId = (Ipv4Addr, Ipv4Addr, u32);

/// Runs `ip` (a child process, slow under load) off the runtime's two
/// worker threads, which DNS answers and sessions share.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("IPsec helper thread")
}

/// What is programmed, as the kernel last listed it.
#[derive(Default)]
pub struct Programmed {
    /// The node is on an encrypted network: SAs and policies are kept.
    up: bool,
    /// Per encrypted network (VNI) here, its vxlan device.
    devices: BTreeMap<u32, Device>,
    sas: BTreeSet<SaId>,
    policies: BTreeSet<Ipv4Addr>,
    /// The ring key ids the SAs were made from (for `debug ipsec`).
    ring: Vec<u32>,
    sending: Option<u32>,
    /// Per peer, what its SAs counted before they were replaced (a
    /// rotation makes new ones, a peer's departure removes them): the views
    /// and metrics keep counting.
    retired: BTreeMap<Ipv4Addr, Counted>,
}

/// An encrypted network's vxlan device.
struct Device {
    name: String,
    ifindex: u32,
    /// The peers it has forwarding entries for.
    peers: BTreeSet<Ipv4Addr>,
}

/// Packets out, in, and refused.
#[derive(Clone, Copy, Default)]
struct Counted {
    out: u64,
    inb: u64,
    errors: u64,
}

/// IPsec on this node.
pub struct Ipsec {
    /// What the kernel can do, found out at start.
    pub support: crate::wire::Ipsec,
    pub state: tokio::sync::Mutex<Programmed>,
}

impl Ipsec {
    pub fn probe() -> Self {
        let support = match ipsec::probe() {
            Ok(()) => crate::wire::Ipsec::Ready,
            Err(missing) => crate::wire::Ipsec::Missing(missing),
        };
        info!(?support, "IPsec for encrypted networks");
        Self {
            support,
            state: Default::default(),
        }
    }
}

impl super::Agent {
    /// Whether this node can be on an encrypted network now (Err says why).
    pub fn can_encrypt(&self) -> Result<(), crate::wire::WireError> {
        if let Some(why) = self.ipsec.support.why_not() {
            crate::fail!(Invalid, "this node cannot carry encrypted networks: {why}");
        }
        if self.gossip.keys.swarm().is_none() {
            crate::fail!(
                Invalid,
                "encrypted networks need a swarm (their keys come from its managers)"
            );
        }
        Ok(())
    }

    /// Makes the SAs and policies match the live `peers` and the key ring
    /// while this node is on an encrypted network; takes them all down
    /// when it no longer is.
    pub async fn sync_ipsec(&self, peers: BTreeSet<Ipv4Addr>) -> Result<()> {
        // Only while a device holds UDP 4790: the policies take what is
        // sent from that port, which no other process can then use.
        let on_encrypted = {
            let inner = self.inner.lock().await;
            !inner.maps.encrypted_vnis().is_empty()
        };
        let mut p = self.ipsec.state.lock().await;
        if !on_encrypted {
            if p.up {
                self.ipsec_down(&mut p).await;
            }
            return Ok(());
        }
        if self.ipsec.support.why_not().is_some() {
            return Ok(());
        }
        let Some(keys) = self.gossip.keys.swarm() else {
            return Ok(());
        };
        if !p.up {
            // What an earlier version left would sit beside the new SAs.
            match blocking(ipsec::remove_legacy).await {
                Ok(0) => {}
                Ok(n) => info!(
                    removed = n,
                    "IPsec: an earlier version's tunnel-mode SAs, policies and xfrm interface removed"
                ),
                Err(e) => warn!("IPsec: removing an earlier version's state: {e}"),
            }
            self.relist(&mut p).await?;
            p.up = true;
            info!("IPsec up: on an encrypted network");
        }
        let me = self.info.vtep;
        let want = desired(me, &peers, &keys);
        let want_ids: BTreeSet<SaId> = want.iter().map(|s| (s.src, s.dst, s.spi)).collect();
        let want_pol: BTreeSet<Ipv4Addr> = peers.iter().copied().filter(|p| *p != me).collect();
        // A device forwards only to peers with a policy (else it would
        // send in clear): departing peers' entries go before their
        // policies, new peers' come after theirs.
        let keep: BTreeSet<Ipv4Addr> = want_pol.intersection(&p.policies).copied().collect();
        self.sync_devices(&mut p, &keep).await?;
        // New SAs first (inbound before outbound, so a peer switching to a
        // new key finds it here), then the policies, then what went.
        let mut add: Vec<&Sa> = want
            .iter()
            .filter(|s| !p.sas.contains(&(s.src, s.dst, s.spi)))
            .collect();
        add.sort_by_key(|s| s.outbound);
        let mut lines: Vec<String> = add.iter().map(|s| s.add_line()).collect();
        lines.extend(
            want_pol
                .difference(&p.policies)
                .map(|peer| ipsec::add_policy_line(me, *peer)),
        );
        let mut gone: Vec<String> = p
            .sas
            .difference(&want_ids)
            .map(|(s, d, spi)| ipsec::delete_sa_line(*s, *d, *spi))
            .collect();
        gone.extend(
            p.policies
                .difference(&want_pol)
                .map(|peer| ipsec::delete_policy_line(me, *peer)),
        );
        if lines.is_empty() && gone.is_empty() {
            return Ok(());
        }
        // An outbound policy goes only once no device forwards to its peer.
        let departing: BTreeSet<Ipv4Addr> = p.policies.difference(&want_pol).copied().collect();
        if p.devices.values().any(|d| !d.peers.is_disjoint(&departing)) {
            anyhow::bail!("a device still forwards to a departing peer");
        }
        // What the SAs about to go counted stays counted.
        if !gone.is_empty() {
            let going: BTreeSet<SaId> = p.sas.difference(&want_ids).copied().collect();
            for s in blocking(ipsec::states).await.unwrap_or_default() {
                if going.contains(&(s.src, s.dst, s.spi)) {
                    let peer = if s.src == me { s.dst } else { s.src };
                    let c = p.retired.entry(peer).or_default();
                    match s.outbound {
                        true => c.out += s.packets,
                        false => c.inb += s.packets,
                    }
                    c.errors += s.errors;
                }
            }
        }
        // Forced: one line failing (a peer's SPI taken) must not keep the
        // others out; what the kernel holds is listed again after.
        let removed = gone.len();
        blocking(move || {
            ipsec::batch(None, &lines, true)?;
            ipsec::batch(None, &gone, true)
        })
        .await?;
        self.relist(&mut p).await?;
        let keep: BTreeSet<Ipv4Addr> = want_pol.intersection(&p.policies).copied().collect();
        self.sync_devices(&mut p, &keep).await?;
        // A departed peer's counts stay: a peer that flaps Down and back
        // (a liveness blip) keeps counting from where it was, as a metric
        // must. One small entry per node ever peered with.
        p.ring = keys.keys.iter().map(|k| k.id).collect();
        p.sending = keys.send;
        let missing = want_ids.difference(&p.sas).count();
        if missing > 0 {
            warn!(missing, "IPsec: the kernel refused some SAs");
        }
        info!(
            peers = want_pol.len(),
            sas = p.sas.len(),
            added = add.len(),
            removed,
            ring = ?p.ring,
            sending = ?p.sending,
            "IPsec SAs programmed"
        );
        Ok(())
    }

    /// One vxlan device per encrypted network this node is on, each
    /// forwarding to exactly the peers in `peers`.
    async fn sync_devices(&self, p: &mut Programmed, peers: &BTreeSet<Ipv4Addr>) -> Result<()> {
        let vnis: BTreeSet<u32> = {
            let inner = self.inner.lock().await;
            inner.maps.encrypted_vnis().into_iter().collect()
        };
        let (me, mtu) = (self.info.vtep, self.mtu);
        let new: Vec<u32> = vnis
            .iter()
            .filter(|v| !p.devices.contains_key(v))
            .copied()
            .collect();
        for vni in new {
            let name = blocking(move || ipsec::ensure_device(vni, me, mtu)).await?;
            let ifindex = self.nl.require_index(&name).await?;
            let mut inner = self.inner.lock().await;
            inner.overlay.attach_crypt(&name)?;
            let iface = shoal_dataplane::ebpf::IfaceValue {
                vni,
                ..Default::default()
            };
            inner.maps.set_iface(ifindex, iface)?;
            drop(inner);
            // After a restart the device keeps its entries.
            let n = name.clone();
            let have = blocking(move || ipsec::fdb_peers(&n)).await;
            info!(vni, device = %name, ifindex, "IPsec: encrypted network's vxlan device up");
            let peers = have.into_iter().collect();
            p.devices.insert(
                vni,
                Device {
                    name,
                    ifindex,
                    peers,
                },
            );
        }
        let gone: Vec<u32> = p
            .devices
            .keys()
            .filter(|v| !vnis.contains(v))
            .copied()
            .collect();
        for vni in gone {
            let d = p.devices.remove(&vni).expect("listed");
            self.remove_device(&d).await;
        }
        let mut lines = vec![];
        for d in p.devices.values() {
            lines.extend(
                d.peers
                    .difference(peers)
                    .map(|peer| ipsec::delete_fdb_line(&d.name, *peer)),
            );
            lines.extend(
                peers
                    .difference(&d.peers)
                    .map(|peer| ipsec::add_fdb_line(&d.name, *peer)),
            );
        }
        if !lines.is_empty() {
            blocking(move || ipsec::bridge_batch(&lines, true)).await?;
            for d in p.devices.values_mut() {
                let n = d.name.clone();
                d.peers = blocking(move || ipsec::fdb_peers(&n))
                    .await
                    .into_iter()
                    .collect();
            }
        }
        // The devices send only once they forward; set every pass (a
        // network's entry is rewritten when it is joined again).
        let mut inner = self.inner.lock().await;
        for (vni, d) in &p.devices {
            inner.maps.set_vni_device(*vni, d.ifindex)?;
        }
        let mut cfg = inner.maps.config()?;
        let port = match p.devices.is_empty() {
            true => 0,
            false => ipsec::PORT.to_be(),
        };
        if cfg.crypt_port != port {
            cfg.crypt_port = port;
            inner.maps.set_config(cfg)?;
        }
        Ok(())
    }

    /// A device goes, with its map entry and program pins.
    async fn remove_device(&self, d: &Device) {
        let mut inner = self.inner.lock().await;
        let _ = inner.maps.remove_iface(d.ifindex);
        shoal_dataplane::overlay::detach(inner.overlay.pin_dir(), &d.name);
        drop(inner);
        let n = d.name.clone();
        match blocking(move || ipsec::delete_device(&n)).await {
            Ok(()) => info!(device = %d.name, "IPsec: vxlan device removed"),
            Err(e) => warn!("IPsec: {e}"),
        }
    }

    async fn relist(&self, p: &mut Programmed) -> Result<()> {
        let (sas, policies) = blocking(|| (ipsec::states(), ipsec::policies())).await;
        p.sas = sas
            .context("listing IPsec SAs")?
            .into_iter()
            .map(|s| (s.src, s.dst, s.spi))
            .collect();
        let me = self.info.vtep;
        p.policies = policies
            .context("listing IPsec policies")?
            .into_iter()
            .filter(|(src, _)| *src == me)
            .map(|(_, peer)| peer)
            .collect();
        Ok(())
    }

    /// No encrypted network here any more: policies and SAs go, then the
    /// devices (nothing sends into them now: their networks left the
    /// maps; they hold UDP 4790 until the policies that match it are gone).
    async fn ipsec_down(&self, p: &mut Programmed) {
        let me = self.info.vtep;
        let mut lines: Vec<String> = p
            .policies
            .iter()
            .map(|peer| ipsec::delete_policy_line(me, *peer))
            .collect();
        lines.extend(
            p.sas
                .iter()
                .map(|(s, d, spi)| ipsec::delete_sa_line(*s, *d, *spi)),
        );
        if let Err(e) = blocking(move || ipsec::batch(None, &lines, true)).await {
            warn!("IPsec teardown: {e}");
        }
        for d in std::mem::take(&mut p.devices).into_values() {
            self.remove_device(&d).await;
        }
        let mut inner = self.inner.lock().await;
        if let Ok(mut cfg) = inner.maps.config() {
            cfg.crypt_port = 0;
            let _ = inner.maps.set_config(cfg);
        }
        drop(inner);
        *p = Programmed::default();
        info!("IPsec down: no encrypted network on this node");
    }

    /// `debug ipsec`: support, keys in use, and per peer its SAs' counters.
    pub async fn ipsec_view(&self) -> IpsecView {
        let p = self.ipsec.state.lock().await;
        let encrypted_vnis = self.inner.lock().await.maps.encrypted_vnis();
        let states = if p.up {
            blocking(ipsec::states).await.unwrap_or_default()
        } else {
            vec![]
        };
        let me = self.info.vtep;
        let mut peers: BTreeMap<Ipv4Addr, IpsecPeerView> = BTreeMap::new();
        for peer in &p.policies {
            peers.insert(*peer, IpsecPeerView::new(*peer));
        }
        for (peer, c) in &p.retired {
            if let Some(v) = peers.get_mut(peer) {
                v.out_packets += c.out;
                v.in_packets += c.inb;
                v.errors += c.errors;
            }
        }
        for s in states {
            let peer = if s.src == me { s.dst } else { s.src };
            let v = peers
                .entry(peer)
                .or_insert_with(|| IpsecPeerView::new(peer));
            v.add(&s, key_id_of(s.spi));
        }
        IpsecView {
            support: self.ipsec.support.clone(),
            devices: p.devices.values().map(|d| d.name.clone()).collect(),
            encrypted_vnis,
            ring: p.ring.clone(),
            sending: p.sending,
            peers: peers.into_values().collect(),
            kernel_errors: ipsec::kernel_errors(),
        }
    }
}

/// The ring key id an SPI names, modulo 255 (`spi`): the id's low bits as
/// the SPI carries them.
fn key_id_of(spi: u32) -> u32 {
    (spi >> 24).saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{GossipKey, KeyBytes};

    fn ring(ids: &[u32], send: u32) -> SwarmKeys {
        SwarmKeys {
            keys: ids
                .iter()
                .map(|id| GossipKey {
                    created_ms: 0,
                    id: *id,
                    key: KeyBytes([*id as u8; 32]),
                })
                .collect(),
            send: Some(send),
        }
    }

    #[test]
    fn each_direction_and_key_has_its_own_key_and_the_spi_names_key_and_sender() {
        let (a, b) = (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2));
        let k = [7u8; 32];
        assert_ne!(sa_key(&k, 1, a, b), sa_key(&k, 1, b, a));
        assert_ne!(sa_key(&k, 1, a, b), sa_key(&k, 2, a, b));
        assert_ne!(sa_key(&k, 1, a, b), sa_key(&[8u8; 32], 1, a, b));
        assert_eq!(sa_key(&k, 1, a, b), sa_key(&k, 1, a, b));
        assert_eq!(spi(1, a), 0x0212_0001);
        assert_ne!(spi(1, a), spi(2, a));
        assert_ne!(spi(1, a), spi(1, b));
        assert_eq!(key_id_of(spi(7, a)), 7);
        // Ids wrap at 255 and never make an SPI below 256.
        assert!(spi(255, Ipv4Addr::new(10, 0, 0, 1)) >= 0x100);
    }

    #[test]
    fn one_outbound_sa_with_the_send_key_and_one_inbound_per_ring_key() {
        let me = Ipv4Addr::new(198, 18, 0, 1);
        let peers = BTreeSet::from([
            me,
            Ipv4Addr::new(198, 18, 0, 2),
            Ipv4Addr::new(198, 18, 0, 3),
        ]);
        let sas = desired(me, &peers, &ring(&[3, 2, 1], 2));
        let out: Vec<&Sa> = sas.iter().filter(|s| s.outbound).collect();
        assert_eq!(out.len(), 2, "one per peer, none to itself");
        assert!(out.iter().all(|s| s.src == me && s.spi == spi(2, me)));
        let inb: Vec<&Sa> = sas.iter().filter(|s| !s.outbound).collect();
        assert_eq!(inb.len(), 6, "every ring key from every peer");
        assert!(inb.iter().all(|s| s.dst == me && s.src != me));
        // The peer's outbound SA is this node's inbound one, key and all.
        let peer = Ipv4Addr::new(198, 18, 0, 2);
        let theirs = desired(peer, &peers, &ring(&[3, 2, 1], 2));
        let sent = theirs.iter().find(|s| s.outbound && s.dst == me).unwrap();
        assert!(inb
            .iter()
            .any(|s| s.spi == sent.spi && s.key == sent.key && s.src == peer));
    }
}
