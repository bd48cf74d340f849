//! The Raft log and state machine of a manager, in one redb database in the
//! daemon's data dir (openraft 0.9, storage-v2).
//!
//! Tables: `raft_log` (index -> entry JSON), `raft_meta` (vote, last purged
//! log id), `sm_meta` (last applied, membership, current snapshot) and
//! `sm_data` (the cluster state's records, one row per object). Every write
//! is one redb transaction, committed durably before openraft hears of it;
//! a write transaction never spans an `.await`.

// openraft's traits return its StorageError (224 bytes); our helpers follow.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::state::{Change, ClusterState};
use super::TypeConfig;
use crate::wire::{CommandResult, RaftId};

type Node = openraft::BasicNode;
type SE = StorageError<RaftId>;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
const SM_DATA: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_data");

fn rd(e: impl std::error::Error + 'static) -> SE {
    StorageIOError::read_logs(&e).into()
}
fn wr(e: impl std::error::Error + 'static) -> SE {
    StorageIOError::write_logs(&e).into()
}
fn vote_err(e: impl std::error::Error + 'static) -> SE {
    StorageIOError::write_vote(&e).into()
}
fn sm_rd(e: impl std::error::Error + 'static) -> SE {
    StorageIOError::read_state_machine(&e).into()
}
fn sm_wr(e: impl std::error::Error + 'static) -> SE {
    StorageIOError::write_state_machine(&e).into()
}

/// Opens (or creates) the database and every table, so read transactions
/// never meet a missing table.
pub fn open(path: &Path) -> Result<Arc<Database>, SE> {
    let db = Database::builder()
        .set_cache_size(32 << 20)
        .create(path)
        .map_err(|e| {
            SE::from(StorageIOError::write(AnyError::error(format!(
                "open raft store {}: {e}",
                path.display()
            ))))
        })?;
    let tx = db.begin_write().map_err(wr)?;
    {
        tx.open_table(LOG).map_err(wr)?;
        tx.open_table(META).map_err(wr)?;
        tx.open_table(SM_META).map_err(wr)?;
        tx.open_table(SM_DATA).map_err(wr)?;
    }
    tx.commit().map_err(wr)?;
    Ok(Arc::new(db))
}

fn get_json<T, K>(
    t: &impl ReadableTable<K, &'static [u8]>,
    key: K::SelfType<'_>,
) -> Result<Option<T>, SE>
where
    T: serde::de::DeserializeOwned,
    K: redb::Key + 'static,
{
    match t.get(key).map_err(rd)? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(rd)?)),
        None => Ok(None),
    }
}

// ---- log --------------------------------------------------------------------

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SE> {
        let rtx = self.db.begin_read().map_err(rd)?;
        let t = rtx.open_table(LOG).map_err(rd)?;
        let r: (Bound<u64>, Bound<u64>) =
            (range.start_bound().cloned(), range.end_bound().cloned());
        let mut out = Vec::new();
        for item in t.range(r).map_err(rd)? {
            let (_, v) = item.map_err(rd)?;
            out.push(serde_json::from_slice(v.value()).map_err(rd)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SE> {
        let rtx = self.db.begin_read().map_err(rd)?;
        let last_purged: Option<LogId<RaftId>> =
            get_json(&rtx.open_table(META).map_err(rd)?, "last_purged")?;
        let log = rtx.open_table(LOG).map_err(rd)?;
        let last = match log.last().map_err(rd)? {
            Some((_, v)) => Some(
                serde_json::from_slice::<Entry<TypeConfig>>(v.value())
                    .map_err(rd)?
                    .log_id,
            ),
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftId>) -> Result<(), SE> {
        let tx = self.db.begin_write().map_err(vote_err)?;
        {
            let mut t = tx.open_table(META).map_err(vote_err)?;
            t.insert(
                "vote",
                serde_json::to_vec(vote).map_err(vote_err)?.as_slice(),
            )
            .map_err(vote_err)?;
        }
        tx.commit().map_err(vote_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<RaftId>>, SE> {
        let rtx = self.db.begin_read().map_err(rd)?;
        get_json(&rtx.open_table(META).map_err(rd)?, "vote")
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SE>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let tx = self.db.begin_write().map_err(wr)?;
        {
            let mut t = tx.open_table(LOG).map_err(wr)?;
            for e in entries {
                t.insert(
                    e.log_id.index,
                    serde_json::to_vec(&e).map_err(wr)?.as_slice(),
                )
                .map_err(wr)?;
            }
        }
        // Durable (fsynced) once commit returns: only then tell openraft.
        tx.commit().map_err(wr)?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<RaftId>) -> Result<(), SE> {
        let tx = self.db.begin_write().map_err(wr)?;
        tx.open_table(LOG)
            .map_err(wr)?
            .retain_in(log_id.index.., |_, _| false)
            .map_err(wr)?;
        tx.commit().map_err(wr)
    }

    async fn purge(&mut self, log_id: LogId<RaftId>) -> Result<(), SE> {
        let tx = self.db.begin_write().map_err(wr)?;
        {
            let mut meta = tx.open_table(META).map_err(wr)?;
            meta.insert(
                "last_purged",
                serde_json::to_vec(&log_id).map_err(wr)?.as_slice(),
            )
            .map_err(wr)?;
            tx.open_table(LOG)
                .map_err(wr)?
                .retain_in(..=log_id.index, |_, _| false)
                .map_err(wr)?;
        }
        tx.commit().map_err(wr)
    }
}

// ---- state machine ------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<RaftId, Node>,
    /// Earlier versions kept the data here, as JSON numbers (about four
    /// bytes per byte); it now has a row of its own, `snapshot_data`.
    #[serde(default)]
    data: Vec<u8>,
}

/// Keeps a snapshot: its meta as JSON, its data as the bytes they are.
fn store_snapshot(
    m: &mut redb::Table<&str, &[u8]>,
    meta: &SnapshotMeta<RaftId, Node>,
    data: &[u8],
) -> Result<(), SE> {
    let snap = StoredSnapshot {
        meta: meta.clone(),
        data: vec![],
    };
    m.insert(
        "snapshot",
        serde_json::to_vec(&snap).map_err(sm_wr)?.as_slice(),
    )
    .map_err(sm_wr)?;
    m.insert("snapshot_data", data).map_err(sm_wr)?;
    Ok(())
}

/// A snapshot's data: every state row with its JSON value embedded as is,
/// `[["node/ID",{...}],...]`. Earlier versions wrote each value as an
/// array of byte numbers (`[123,34,...]`); such data is still read.
fn encode_rows(rows: &[(String, Vec<u8>)]) -> Result<Vec<u8>, serde_json::Error> {
    use serde::ser::Error;
    use serde_json::value::RawValue;
    let raw = rows
        .iter()
        .map(|(k, v)| {
            let text = std::str::from_utf8(v).map_err(serde_json::Error::custom)?;
            Ok((k.as_str(), RawValue::from_string(text.to_string())?))
        })
        .collect::<Result<Vec<_>, serde_json::Error>>()?;
    serde_json::to_vec(&raw)
}

fn decode_rows(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, serde_json::Error> {
    use serde_json::value::RawValue;
    // The old layout first: its values are arrays of small numbers, which
    // the new layout (every value a JSON object) never is, while an old
    // value would also parse as a raw value.
    if let Ok(old) = serde_json::from_slice::<Vec<(String, Vec<u8>)>>(data) {
        return Ok(old);
    }
    let rows: Vec<(String, Box<RawValue>)> = serde_json::from_slice(data)?;
    Ok(rows
        .into_iter()
        .map(|(k, v)| (k, v.get().as_bytes().to_vec()))
        .collect())
}

/// The applied cluster state: rows in redb, and a copy in memory for reads.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    state: Arc<RwLock<ClusterState>>,
}

impl StateMachine {
    pub fn open(db: Arc<Database>) -> Result<Self, SE> {
        let state = load_state(&db)?;
        Ok(Self {
            db,
            state: Arc::new(RwLock::new(state)),
        })
    }

    /// A read-only view of the applied state.
    pub fn state(&self) -> Arc<RwLock<ClusterState>> {
        self.state.clone()
    }
}

fn load_state(db: &Database) -> Result<ClusterState, SE> {
    let rtx = db.begin_read().map_err(sm_rd)?;
    let t = rtx.open_table(SM_DATA).map_err(sm_rd)?;
    let mut rows = vec![];
    for item in t.iter().map_err(sm_rd)? {
        let (k, v) = item.map_err(sm_rd)?;
        rows.push((k.value().to_string(), v.value().to_vec()));
    }
    ClusterState::from_rows(rows.iter().map(|(k, v)| (k.as_str(), v.as_slice()))).map_err(sm_rd)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<RaftId>>, StoredMembership<RaftId, Node>), SE> {
        let rtx = self.db.begin_read().map_err(sm_rd)?;
        let m = rtx.open_table(SM_META).map_err(sm_rd)?;
        Ok((
            get_json(&m, "applied")?,
            get_json(&m, "membership")?.unwrap_or_default(),
        ))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, SE>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        // Work on a copy: memory changes only once the transaction commits.
        let mut state = self.state.read().expect("state lock").clone();
        let tx = self.db.begin_write().map_err(sm_wr)?;
        {
            let mut meta = tx.open_table(SM_META).map_err(sm_wr)?;
            let mut data = tx.open_table(SM_DATA).map_err(sm_wr)?;
            let mut last = None;
            for ent in entries {
                last = Some(ent.log_id);
                match ent.payload {
                    EntryPayload::Blank => replies.push(CommandResult::Ok),
                    EntryPayload::Normal(cmd) => {
                        let (res, changes) = state.apply(ent.log_id.index, cmd);
                        for c in changes {
                            match c {
                                Change::Put(k, v) => {
                                    data.insert(k.as_str(), v.as_slice()).map_err(sm_wr)?;
                                }
                                Change::Delete(k) => {
                                    data.remove(k.as_str()).map_err(sm_wr)?;
                                }
                            }
                        }
                        replies.push(res);
                    }
                    EntryPayload::Membership(m) => {
                        let sm = StoredMembership::new(Some(ent.log_id), m);
                        meta.insert(
                            "membership",
                            serde_json::to_vec(&sm).map_err(sm_wr)?.as_slice(),
                        )
                        .map_err(sm_wr)?;
                        replies.push(CommandResult::Ok);
                    }
                }
            }
            if let Some(l) = last {
                meta.insert("applied", serde_json::to_vec(&l).map_err(sm_wr)?.as_slice())
                    .map_err(sm_wr)?;
            }
        }
        tx.commit().map_err(sm_wr)?;
        *self.state.write().expect("state lock") = state;
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SE> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<RaftId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SE> {
        let data = snapshot.into_inner();
        let rows = decode_rows(&data).map_err(sm_wr)?;
        let state = ClusterState::from_rows(rows.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(sm_wr)?;
        let tx = self.db.begin_write().map_err(sm_wr)?;
        {
            let mut t = tx.open_table(SM_DATA).map_err(sm_wr)?;
            t.retain(|_, _| false).map_err(sm_wr)?;
            for (k, v) in &rows {
                t.insert(k.as_str(), v.as_slice()).map_err(sm_wr)?;
            }
            let mut m = tx.open_table(SM_META).map_err(sm_wr)?;
            m.insert(
                "applied",
                serde_json::to_vec(&meta.last_log_id)
                    .map_err(sm_wr)?
                    .as_slice(),
            )
            .map_err(sm_wr)?;
            m.insert(
                "membership",
                serde_json::to_vec(&meta.last_membership)
                    .map_err(sm_wr)?
                    .as_slice(),
            )
            .map_err(sm_wr)?;
            store_snapshot(&mut m, meta, &data)?;
        }
        tx.commit().map_err(sm_wr)?;
        *self.state.write().expect("state lock") = state;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SE> {
        let rtx = self.db.begin_read().map_err(sm_rd)?;
        let m = rtx.open_table(SM_META).map_err(sm_rd)?;
        let s: Option<StoredSnapshot> = get_json(&m, "snapshot")?;
        let Some(s) = s else { return Ok(None) };
        let data = match m.get("snapshot_data").map_err(sm_rd)? {
            Some(d) => d.value().to_vec(),
            None => s.data,
        };
        Ok(Some(Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SE> {
        // One read transaction: a consistent view while apply() goes on.
        let (applied, membership, rows) = {
            let rtx = self.db.begin_read().map_err(sm_rd)?;
            let m = rtx.open_table(SM_META).map_err(sm_rd)?;
            let applied: Option<LogId<RaftId>> = get_json(&m, "applied")?;
            let membership: StoredMembership<RaftId, Node> =
                get_json(&m, "membership")?.unwrap_or_default();
            let t = rtx.open_table(SM_DATA).map_err(sm_rd)?;
            let mut rows: Vec<(String, Vec<u8>)> = vec![];
            for item in t.iter().map_err(sm_rd)? {
                let (k, v) = item.map_err(sm_rd)?;
                rows.push((k.value().to_string(), v.value().to_vec()));
            }
            (applied, membership, rows)
        };
        let data = encode_rows(&rows).map_err(sm_rd)?;
        let snapshot_id = format!(
            "{}-{}",
            applied.map(|l| l.index).unwrap_or(0),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id,
        };
        let tx = self.db.begin_write().map_err(sm_wr)?;
        {
            let mut m = tx.open_table(SM_META).map_err(sm_wr)?;
            store_snapshot(&mut m, &meta, &data)?;
        }
        tx.commit().map_err(sm_wr)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Builder;

    impl openraft::testing::StoreBuilder<TypeConfig, LogStore, StateMachine, tempdir::Dir> for Builder {
        async fn build(&self) -> Result<(tempdir::Dir, LogStore, StateMachine), SE> {
            let dir = tempdir::Dir::new();
            let db = open(&dir.0.join("raft.redb"))?;
            Ok((dir, LogStore::new(db.clone()), StateMachine::open(db)?))
        }
    }

    /// A directory removed when dropped (the suite builds many stores).
    mod tempdir {
        use std::path::PathBuf;
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        pub struct Dir(pub PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let p = std::env::temp_dir().join(format!(
                    "shoal-raft-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    /// openraft's own conformance suite for log stores and state machines.
    #[test]
    fn openraft_storage_suite() {
        openraft::testing::Suite::test_all(Builder).unwrap();
    }

    #[tokio::test]
    async fn state_survives_reopening() {
        use crate::wire::{Availability, Command, NodeRecord, NodeState, Role};
        let dir = tempdir::Dir::new();
        let path = dir.0.join("raft.redb");
        {
            let db = open(&path).unwrap();
            let mut sm = StateMachine::open(db).unwrap();
            let node = NodeRecord {
                ipsec: Default::default(),
                cert_not_after_ms: None,
                cert_issuer: None,
                id: "abc".into(),
                raft_id: Some(1),
                hostname: "n1".into(),
                addr: "198.18.0.1".parse().unwrap(),
                role: Role::Manager,
                availability: Availability::Active,
                labels: Default::default(),
                state: NodeState::Ready,
                version: 0,
            };
            let e = Entry::<TypeConfig> {
                log_id: openraft::testing::log_id(1, 1, 1),
                payload: EntryPayload::Normal(Command::NodeAdd { node }),
            };
            let r = sm.apply(vec![e]).await.unwrap();
            assert!(matches!(r[0], CommandResult::Node(_)));
            sm.build_snapshot().await.unwrap();
        }
        let db = open(&path).unwrap();
        let mut sm = StateMachine::open(db).unwrap();
        assert_eq!(sm.state().read().unwrap().nodes["abc"].hostname, "n1");
        assert_eq!(
            sm.applied_state().await.unwrap().0.map(|l| l.index),
            Some(1)
        );
        let snap = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(1));
    }

    #[test]
    fn snapshot_data_embeds_the_rows_json_and_reads_the_old_layout() {
        let rows: Vec<(String, Vec<u8>)> = (0..100)
            .map(|i| {
                let v = format!(r#"{{"id":"t{i}","name":"web.{i}","node":"n1"}}"#);
                (format!("task/t{i}"), v.into_bytes())
            })
            .collect();
        let raw: usize = rows.iter().map(|(k, v)| k.len() + v.len()).sum();
        let data = encode_rows(&rows).unwrap();
        assert!(
            data.len() < raw + raw / 5,
            "{} bytes of data for {raw} bytes of rows",
            data.len()
        );
        assert_eq!(decode_rows(&data).unwrap(), rows);
        // What earlier versions wrote (each value as byte numbers).
        let old = serde_json::to_vec(&rows).unwrap();
        assert!(old.len() > 3 * raw);
        assert_eq!(decode_rows(&old).unwrap(), rows);
    }
}
