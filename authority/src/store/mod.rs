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

mod embedded;
pub(crate) mod pg;

pub use embedded::{restore as restore_embedded, RedbStore};
pub use pg::PgStore;

use revmesh_protocol::codec::{decode_entry, encode_entry};
use revmesh_protocol::{Entry, LogId, Revocation};
use std::sync::Arc;

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

/// Storage failures, the same for every backend: callers tell "unreachable", "too slow" and
/// "damaged" apart, never which database said it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed an operation: the embedded database's I/O, or an error PostgreSQL
    /// answered or its connection gave. `backend` names it in what operators read.
    #[error("{backend}: {message}")]
    Backend {
        /// `store` (embedded) or `postgres`.
        backend: &'static str,
        /// What happened, as operators read it (for PostgreSQL: the SQLSTATE and its message).
        message: String,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The data directory could not be created.
    #[error("{}: {source}", path.display())]
    Dir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
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
    /// Writes a consistent copy of the log to `path` while serving (`revmesh-authority
    /// backup`); `None` for a backend backed up with its own tools (PostgreSQL: `pg_dump`).
    fn backup(self: Arc<Self>, path: std::path::PathBuf) -> StoreFuture<Option<BackupInfo>> {
        let _ = path;
        Box::pin(async { Ok(None) })
    }
}

/// What a backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupInfo {
    /// The log's id.
    pub log_id: LogId,
    /// Its head.
    pub head: u64,
    /// Entries copied.
    pub entries: u64,
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

#[cfg(test)]
mod tests {
    use super::*;

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
