//! Durable storage behind three traits, each implemented only by the backends that have it:
//! [`LogStore`] (the sequenced log: every backend), [`SharedLog`] (a log other replicas append
//! to as well, which must be tailed) and [`CursorStore`] (agent cursors shared between
//! replicas). The embedded [redb](https://docs.rs/redb) store is a `LogStore` only; the
//! PostgreSQL store (`pg.rs`) is all three.
//!
//! Store operations are futures that own what they need (`self: Arc<Self>`, owned arguments),
//! so a trait object can run them: redb's blocking calls go to tokio's blocking pool inside its
//! implementation, PostgreSQL's are asynchronous on a pooled connection. Appending is one write
//! transaction whose commit is the fsync, so a group of concurrent requests shares it. Every record
//! carries a checksum that is verified when the log is loaded; a store that fails it refuses
//! to start rather than serve a different history under the same seqs.

use redb::{Database, ReadableTable, TableDefinition};
use revmesh_protocol::codec::{decode_entry, encode_entry};
use revmesh_protocol::{Entry, LogId, Revocation};
use std::path::Path;
use std::sync::Arc;

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// An entry to append; the store assigns its seq.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// What it revokes.
    pub revocation: Revocation,
    /// Unix seconds after which it can be forgotten.
    pub expires_at: u64,
    /// Free text.
    pub reason: Option<String>,
    /// Acceptance time, unix milliseconds.
    pub created_at_ms: u64,
}

impl NewEntry {
    /// The entry this becomes at `seq`.
    pub fn sequenced(&self, seq: u64) -> Entry {
        Entry {
            seq,
            created_at_ms: self.created_at_ms,
            expires_at: self.expires_at,
            reason: self.reason.clone(),
            revocation: self.revocation.clone(),
        }
    }
}

/// The log as found at start.
#[derive(Debug)]
pub struct Loaded {
    /// The log's id.
    pub log_id: LogId,
    /// Highest seq ever assigned.
    pub head: u64,
    /// Compaction floor.
    pub floor: u64,
    /// Every stored entry, ascending.
    pub entries: Vec<Entry>,
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded database failed to open, read or write.
    #[error("store: {0}")]
    Redb(#[source] Box<redb::Error>),
    /// The data directory could not be created.
    #[error("{}: {source}", path.display())]
    Dir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// PostgreSQL refused or failed an operation.
    #[error("postgres: {}", crate::pg::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The store did not answer within the store timeout.
    #[error("store did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// No pooled connection could be had or made (PostgreSQL unreachable, or every connection
    /// busy past the store timeout).
    #[error("postgres pool: {0}")]
    Pool(String),
    /// The failure of a read moments ago, shared by every caller that asked within one tick
    /// instead of each asking again.
    #[error("{0}")]
    Shared(Arc<StoreError>),
    /// The store refuses work until it recovers (closed after an I/O error, or earlier
    /// operations still hang).
    #[error("store unavailable: {0}")]
    Unavailable(&'static str),
    /// The blocking task running a store operation failed.
    #[error("store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// An entry could not be encoded for storage.
    #[error("encoding an entry: {0}")]
    Encode(#[from] revmesh_protocol::codec::EncodeError),
    /// A record failed its checksum or did not decode: the store is damaged.
    #[error("store corrupt at seq {seq}: {why}")]
    Corrupt {
        /// The damaged record.
        seq: u64,
        /// What was wrong.
        why: String,
    },
    /// Metadata is missing or inconsistent.
    #[error("store metadata: {0}")]
    Meta(String),
    /// On reopening, the file at the store's path is not the log this process loaded (missing,
    /// as when its volume is not mounted, or another log).
    #[error("{}: {why}; the store stays closed until its own log is back", path.display())]
    NotOurs {
        /// The log file.
        path: std::path::PathBuf,
        /// What was found instead.
        why: String,
    },
}

fn io(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Redb(Box::new(e.into()))
}

/// What a shared log holds after a seq, read in one consistent snapshot.
#[derive(Debug, Default)]
pub struct Tail {
    /// Entries with a greater seq, ascending. Seqs missing at or below `floor` were compacted.
    pub entries: Vec<Entry>,
    /// The log's head.
    pub head: u64,
    /// The log's compaction floor.
    pub floor: u64,
}

/// One agent's cursor as shared between authority replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRow {
    /// Agent id.
    pub id: String,
    /// The replica holding (or last holding) its link.
    pub replica: String,
    /// Highest acknowledged seq.
    pub applied_seq: u64,
    /// Link up, as last reported by a live replica.
    pub connected: bool,
    /// Peer address.
    pub remote: String,
    /// Agent version.
    pub version: String,
    /// Last ack, unix ms.
    pub last_ack_at: Option<u64>,
}

/// What forgetting an agent found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgotten {
    /// It was known and disconnected, and is gone now.
    Removed,
    /// It is connected: an agent that is still there cannot be forgotten.
    Connected,
    /// No such agent.
    Unknown,
}

/// A store operation: a future that owns everything it uses, so it can be awaited, raced
/// against a timeout or dropped without borrowing the store.
pub type StoreFuture<T> = futures::future::BoxFuture<'static, Result<T, StoreError>>;

/// A durable, sequenced revocation log: what every backend implements.
pub trait LogStore: Send + Sync + 'static {
    /// Reads the whole log (creating an empty one with a fresh id if there is none).
    fn load(self: Arc<Self>) -> StoreFuture<Loaded>;
    /// Durably appends `batch` in one commit; returns the sequenced entries. A single-writer
    /// store checks that its head is still `head`; a shared store appends after its own head.
    fn append(self: Arc<Self>, head: u64, batch: Vec<NewEntry>) -> StoreFuture<Vec<Entry>>;
    /// Removes `seqs` (expired entries at or below `floor`) and records the new floor.
    fn compact(self: Arc<Self>, floor: u64, seqs: Vec<u64>) -> StoreFuture<()>;
    /// Checks that the store can currently commit (cheap; called every second).
    fn probe(self: Arc<Self>) -> StoreFuture<()>;
    /// Entries after `after`, with head and floor, in one consistent read (after a commit
    /// whose outcome is unknown, and for tailing a shared log).
    fn read_after(self: Arc<Self>, after: u64) -> StoreFuture<Tail>;
}

/// A log that other processes append to as well: the authority must tail it.
pub trait SharedLog: LogStore {
    /// Resolves when another writer may have appended, or after `timeout`.
    fn wait_for_change(self: Arc<Self>, timeout: std::time::Duration) -> StoreFuture<()>;
}

/// Agent cursors shared between replicas (each replica publishes the agents linked to it).
pub trait CursorStore: Send + Sync + 'static {
    /// Publishes agent cursors of this replica.
    fn publish_agents(self: Arc<Self>, rows: Vec<AgentRow>) -> StoreFuture<()>;
    /// Every agent of every replica, with `connected` meaning "reported by a live replica".
    fn agents(self: Arc<Self>) -> StoreFuture<Vec<AgentRow>>;
    /// Removes a disconnected agent's shared cursor.
    fn forget_agent(self: Arc<Self>, id: String) -> StoreFuture<Forgotten>;
}

/// The backend a configuration chose: the log, and for a shared backend its tail and cursors.
#[derive(Clone)]
pub struct Backend {
    /// The log.
    pub log: std::sync::Arc<dyn LogStore>,
    /// Set when other replicas share the log and the agent cursors.
    pub shared: Option<Shared>,
}

/// The parts of a backend that only a shared store has.
#[derive(Clone)]
pub struct Shared {
    /// The log, to tail.
    pub log: std::sync::Arc<dyn SharedLog>,
    /// Agent cursors of every replica.
    pub cursors: std::sync::Arc<dyn CursorStore>,
}

impl Backend {
    /// A log only this process writes (agent cursors stay in memory).
    pub fn embedded(log: std::sync::Arc<dyn LogStore>) -> Self {
        Self { log, shared: None }
    }

    /// A log and agent cursors shared with other replicas.
    pub fn shared<S: SharedLog + CursorStore>(store: std::sync::Arc<S>) -> Self {
        Self { log: store.clone(), shared: Some(Shared { log: store.clone(), cursors: store }) }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("shared", &self.shared.is_some()).finish()
    }
}

/// The embedded store: one redb file under the data directory.
///
/// After an I/O error (a full disk, EIO, a read-only remount) redb refuses every later
/// transaction until the database is closed and opened again; the store then fails fast and
/// [`Store::probe`] reopens it, so the authority recovers once the cause is gone, without a
/// restart.
#[derive(Debug)]
pub struct RedbStore {
    path: std::path::PathBuf,
    db: std::sync::RwLock<Option<Database>>,
    broken: std::sync::atomic::AtomicBool,
    new_log_id: LogId,
    /// The log id found (or written) by [`LogStore::load`]; a reopened file must carry it.
    loaded: std::sync::OnceLock<LogId>,
}

pub(crate) fn record(entry: &Entry) -> Result<Vec<u8>, StoreError> {
    let body = encode_entry(entry)?;
    let mut out = xxhash_rust::xxh3::xxh3_64(&body).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    Ok(out)
}

pub(crate) fn unrecord(seq: u64, bytes: &[u8]) -> Result<Entry, StoreError> {
    let corrupt = |why: String| StoreError::Corrupt { seq, why };
    if bytes.len() < 8 {
        return Err(corrupt("record shorter than its checksum".into()));
    }
    let (sum, body) = bytes.split_at(8);
    if sum != xxhash_rust::xxh3::xxh3_64(body).to_le_bytes() {
        return Err(corrupt("checksum mismatch".into()));
    }
    let entry = decode_entry(body).map_err(|e| corrupt(e.to_string()))?;
    if entry.seq != seq {
        return Err(corrupt(format!("record holds seq {}", entry.seq)));
    }
    Ok(entry)
}

fn u64_meta(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    bytes.try_into().map(u64::from_le_bytes).map_err(|_| StoreError::Meta(format!("`{what}` is not 8 bytes")))
}

/// A `u64` metadata value, 0 when absent.
fn meta_u64(meta: &impl ReadableTable<&'static str, &'static [u8]>, key: &str) -> Result<u64, StoreError> {
    match meta.get(key).map_err(io)? {
        Some(v) => u64_meta(v.value(), key),
        None => Ok(0),
    }
}

/// Checked entries from a range of the entries table.
fn records<'a>(
    range: impl Iterator<
        Item = Result<(redb::AccessGuard<'a, u64>, redb::AccessGuard<'a, &'static [u8]>), redb::StorageError>,
    >,
) -> Result<Vec<Entry>, StoreError> {
    range
        .map(|item| {
            let (k, v) = item.map_err(io)?;
            unrecord(k.value(), v.value())
        })
        .collect()
}

impl RedbStore {
    /// Opens (or creates) `dir/log.redb`. `new_log_id` is used only when the log is new.
    pub fn open(dir: &Path, new_log_id: LogId) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir { path: dir.to_owned(), source })?;
        let path = dir.join("log.redb");
        let db = Database::create(&path).map_err(io)?;
        Ok(Self {
            path,
            db: std::sync::RwLock::new(Some(db)),
            broken: std::sync::atomic::AtomicBool::new(false),
            new_log_id,
            loaded: std::sync::OnceLock::new(),
        })
    }

    /// Runs `f` on the open database; an I/O error marks the database for reopening.
    fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
        let db = guard.as_ref().ok_or(StoreError::Unavailable("closed after an I/O error; reopening"))?;
        let r = f(db);
        if let Err(StoreError::Redb(e)) = &r {
            if !self.broken.swap(true, std::sync::atomic::Ordering::AcqRel) {
                tracing::error!(error = %e, "store I/O error; it will be reopened once it works again");
            }
        }
        r
    }

    /// Closes and reopens the database file (after an I/O error). Only the log this process
    /// loaded is reopened: never created (the data dir's volume may not be mounted yet), never
    /// another log put in its place.
    fn reopen(&self) -> Result<(), StoreError> {
        let mut guard = self.db.write().unwrap_or_else(|p| p.into_inner());
        // redb holds a lock on the file, and a file system shut down after an error is released
        // only when its last file closes: the old handle goes before anything else.
        drop(guard.take());
        let not_ours = |why: String| StoreError::NotOurs { path: self.path.clone(), why };
        if !self.path.try_exists().map_err(|e| not_ours(e.to_string()))? {
            return Err(not_ours("the log file is missing".into()));
        }
        let db = Database::open(&self.path).map_err(io)?;
        if let Some(want) = self.loaded.get() {
            let found = {
                let txn = db.begin_read().map_err(io)?;
                let meta = txn.open_table(META).map_err(io)?;
                let v = meta.get("log_id").map_err(io)?;
                v.map(|v| v.value().to_vec())
            };
            if found.as_deref() != Some(&want.0[..]) {
                return Err(not_ours(format!("it holds another log (log_id {found:02x?})")));
            }
        }
        *guard = Some(db);
        self.broken.store(false, std::sync::atomic::Ordering::Release);
        tracing::info!(path = %self.path.display(), "store reopened");
        Ok(())
    }
}

/// redb's calls block (the commit is an fsync): each runs on tokio's blocking pool.
impl LogStore for RedbStore {
    fn load(self: Arc<Self>) -> StoreFuture<Loaded> {
        blocking(move || RedbStore::load(&self))
    }

    fn append(self: Arc<Self>, head: u64, batch: Vec<NewEntry>) -> StoreFuture<Vec<Entry>> {
        blocking(move || RedbStore::append(&self, head, &batch))
    }

    fn compact(self: Arc<Self>, floor: u64, seqs: Vec<u64>) -> StoreFuture<()> {
        blocking(move || RedbStore::compact(&self, floor, &seqs))
    }

    fn probe(self: Arc<Self>) -> StoreFuture<()> {
        blocking(move || RedbStore::probe(&self))
    }

    fn read_after(self: Arc<Self>, after: u64) -> StoreFuture<Tail> {
        blocking(move || RedbStore::read_after(&self, after))
    }
}

fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, StoreError> + Send + 'static) -> StoreFuture<T> {
    Box::pin(async move { tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(StoreError::Task(e))) })
}

/// The store's operations as blocking calls (what [`LogStore`] runs on the blocking pool, and
/// what tools and tests that own a `RedbStore` call directly).
impl RedbStore {
    /// A committed write, so a disk that can be read but not written is found out too.
    pub fn probe(&self) -> Result<(), StoreError> {
        if self.broken.load(std::sync::atomic::Ordering::Acquire) {
            self.reopen()?;
        }
        self.with_db(|db| {
            let txn = db.begin_write().map_err(io)?;
            {
                let mut meta = txn.open_table(META).map_err(io)?;
                meta.insert("probe", &[1u8][..]).map_err(io)?;
            }
            txn.commit().map_err(io)
        })
    }

    /// Reads the whole log (see [`LogStore::load`]).
    pub fn load(&self) -> Result<Loaded, StoreError> {
        self.with_db(|db| self.load_from(db))
    }

    /// Appends in one commit (see [`LogStore::append`]).
    pub fn append(&self, head: u64, batch: &[NewEntry]) -> Result<Vec<Entry>, StoreError> {
        self.with_db(|db| Self::append_to(db, head, batch))
    }

    /// Compacts (see [`LogStore::compact`]).
    pub fn compact(&self, floor: u64, seqs: &[u64]) -> Result<(), StoreError> {
        self.with_db(|db| Self::compact_in(db, floor, seqs))
    }

    /// Reads the tail (see [`LogStore::read_after`]).
    pub fn read_after(&self, after: u64) -> Result<Tail, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(io)?;
            let meta = txn.open_table(META).map_err(io)?;
            let (head, floor) = (meta_u64(&meta, "head")?, meta_u64(&meta, "floor")?);
            let table = txn.open_table(ENTRIES).map_err(io)?;
            let entries = records(table.range(after.saturating_add(1)..).map_err(io)?)?;
            Ok(Tail { entries, head, floor })
        })
    }
}

impl RedbStore {
    fn load_from(&self, db: &Database) -> Result<Loaded, StoreError> {
        let txn = db.begin_write().map_err(io)?;
        let (log_id, head, floor, entries) = {
            let mut meta = txn.open_table(META).map_err(io)?;
            let stored: Option<Vec<u8>> = meta.get("log_id").map_err(io)?.map(|v| v.value().to_vec());
            let log_id = match stored {
                Some(v) => {
                    LogId(v.try_into().map_err(|_| StoreError::Meta("`log_id` is not 16 bytes".into()))?)
                }
                None => {
                    meta.insert("log_id", &self.new_log_id.0[..]).map_err(io)?;
                    self.new_log_id
                }
            };
            let (head, floor) = (meta_u64(&meta, "head")?, meta_u64(&meta, "floor")?);
            let table = txn.open_table(ENTRIES).map_err(io)?;
            let entries = records(table.iter().map_err(io)?)?;
            if let Some(last) = entries.last() {
                if last.seq > head {
                    return Err(StoreError::Meta(format!("entry {} beyond recorded head {head}", last.seq)));
                }
            }
            (log_id, head, floor, entries)
        };
        txn.commit().map_err(io)?;
        // A second load (none today) finds the same id: the first one stays.
        let _ = self.loaded.set(log_id);
        Ok(Loaded { log_id, head, floor, entries })
    }

    fn append_to(db: &Database, head: u64, batch: &[NewEntry]) -> Result<Vec<Entry>, StoreError> {
        let txn = db.begin_write().map_err(io)?;
        let mut out = Vec::with_capacity(batch.len());
        {
            let mut meta = txn.open_table(META).map_err(io)?;
            let stored_head = meta_u64(&meta, "head")?;
            if stored_head != head {
                return Err(StoreError::Meta(format!(
                    "head moved: expected {head}, store has {stored_head}"
                )));
            }
            let mut table = txn.open_table(ENTRIES).map_err(io)?;
            for (i, n) in batch.iter().enumerate() {
                let entry = n.sequenced(head + 1 + i as u64);
                table.insert(entry.seq, record(&entry)?.as_slice()).map_err(io)?;
                out.push(entry);
            }
            let new_head = head + batch.len() as u64;
            meta.insert("head", &new_head.to_le_bytes()[..]).map_err(io)?;
        }
        // redb's default durability is `Immediate`: commit returns after fsync.
        txn.commit().map_err(io)?;
        Ok(out)
    }

    fn compact_in(db: &Database, floor: u64, seqs: &[u64]) -> Result<(), StoreError> {
        let txn = db.begin_write().map_err(io)?;
        {
            let mut table = txn.open_table(ENTRIES).map_err(io)?;
            for seq in seqs {
                table.remove(*seq).map_err(io)?;
            }
            let mut meta = txn.open_table(META).map_err(io)?;
            meta.insert("floor", &floor.to_le_bytes()[..]).map_err(io)?;
        }
        txn.commit().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(jti: &str) -> NewEntry {
        NewEntry {
            revocation: Revocation::Jti { jti: jti.into(), iss: None },
            expires_at: 100,
            reason: None,
            created_at_ms: 1,
        }
    }

    #[test]
    fn log_id_head_and_entries_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RedbStore::open(dir.path(), LogId([1; 16])).unwrap();
            let l = s.load().unwrap();
            assert_eq!((l.log_id, l.head), (LogId([1; 16]), 0));
            let e = s.append(0, &[new("a"), new("b")]).unwrap();
            assert_eq!(e.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
            s.compact(1, &[1]).unwrap();
        }
        let s = RedbStore::open(dir.path(), LogId([2; 16])).unwrap();
        let l = s.load().unwrap();
        assert_eq!((l.log_id, l.head, l.floor), (LogId([1; 16]), 2, 1));
        assert_eq!(l.entries.len(), 1);
        assert_eq!(l.entries[0].seq, 2);
        assert!(s.append(0, &[new("c")]).is_err(), "a stale head must not overwrite seqs");
    }

    /// Reopening after an I/O error must find the log it loaded: a data dir whose volume is not
    /// mounted (yet) must not get a new, empty log, and a file swapped for another log must not
    /// be written to. Either would hand agents a new history under a new log id after a restart.
    #[test]
    fn reopening_never_creates_or_adopts_another_log() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let s = RedbStore::open(&data, LogId([1; 16])).unwrap();
        s.load().unwrap();
        s.append(0, &[new("a")]).unwrap();
        let broken = || s.broken.store(true, std::sync::atomic::Ordering::Release);

        // The volume went away (unmounted): the file is gone from under the path.
        broken();
        let moved = dir.path().join("elsewhere");
        std::fs::rename(&data, &moved).unwrap();
        std::fs::create_dir(&data).unwrap();
        assert!(s.probe().is_err(), "a missing log must not be reopened");
        assert!(!data.join("log.redb").exists(), "reopening created a new log");

        // Another log in its place.
        {
            let other = RedbStore::open(&data, LogId([2; 16])).unwrap();
            other.load().unwrap();
        }
        assert!(matches!(s.probe(), Err(StoreError::NotOurs { .. })), "another log was adopted");

        // The volume is back: the store reopens and goes on from its head.
        std::fs::remove_dir_all(&data).unwrap();
        std::fs::rename(&moved, &data).unwrap();
        s.probe().unwrap();
        assert_eq!(s.append(1, &[new("b")]).unwrap()[0].seq, 2);
    }

    #[test]
    fn read_after_reads_only_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(dir.path(), LogId([1; 16])).unwrap();
        s.load().unwrap();
        s.append(0, &[new("a"), new("b"), new("c"), new("d")]).unwrap();
        s.compact(2, &[1]).unwrap();
        let t = s.read_after(2).unwrap();
        assert_eq!(t.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
        assert_eq!((t.head, t.floor), (4, 2));
        let t = s.read_after(0).unwrap();
        assert_eq!(t.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3, 4], "compacted 1 is gone");
        assert!(s.read_after(4).unwrap().entries.is_empty());
    }

    #[test]
    fn a_damaged_record_is_refused() {
        let entry = Entry {
            seq: 3,
            created_at_ms: 1,
            expires_at: 2,
            reason: None,
            revocation: Revocation::Key { kid: "k".into() },
        };
        let mut r = record(&entry).unwrap();
        assert_eq!(unrecord(3, &r).unwrap(), entry);
        assert!(matches!(unrecord(4, &r), Err(StoreError::Corrupt { .. })));
        let last = r.len() - 1;
        r[last] ^= 1;
        assert!(matches!(unrecord(3, &r), Err(StoreError::Corrupt { .. })));
        assert!(matches!(unrecord(3, &r[..4]), Err(StoreError::Corrupt { .. })));
    }
}
