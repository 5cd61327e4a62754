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

use revmesh_protocol::codec::{decode_entry_prefix, encode_entry};
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
    /// Who stored it: an operator's name, `oidc:<issuer>`, `rfc7009:<operator>`.
    pub by: Option<Arc<str>>,
}

/// An entry as the authority keeps it: the entry agents get, and who stored it (kept in the
/// store beside the entry, never sent to agents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The entry.
    pub entry: Entry,
    /// Who stored it; `None` for entries stored before attribution existed.
    pub by: Option<Arc<str>>,
}

impl std::ops::Deref for Logged {
    type Target = Entry;
    fn deref(&self) -> &Entry {
        &self.entry
    }
}

impl From<Entry> for Logged {
    fn from(entry: Entry) -> Self {
        Self { entry, by: None }
    }
}

/// A state-changing admin request to record in the audit trail, committed in the same
/// transaction as its effect: the record, less the id and the seqs the store assigns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditDraft {
    /// The record (`id` 0; `target` names what it acts on beyond its entries, if anything).
    pub record: AuditRecord,
    /// Which entries of the append it belongs to (indexes into the batch); the store writes
    /// their seqs into `target`.
    pub entries: Option<std::ops::Range<usize>>,
}

impl AuditDraft {
    /// The record with its id, and the seqs of its entries when `first_seq` is the seq the
    /// batch's first entry got.
    pub fn finish(&self, id: u64, first_seq: u64) -> AuditRecord {
        let mut r = AuditRecord { id, ..self.record.clone() };
        if let Some(e) = self.entries.clone().filter(|e| !e.is_empty()) {
            let (a, b) = (first_seq + e.start as u64, first_seq + e.end as u64 - 1);
            let seqs = if a == b { format!("seq {a}") } else { format!("seq {a}-{b}") };
            r.target = if r.target.is_empty() { seqs } else { format!("{}; {seqs}", r.target) };
        }
        r
    }
}

/// One record of the audit trail (`GET /v1/audit`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    /// Ascending id.
    pub id: u64,
    /// When, unix milliseconds.
    pub at_ms: u64,
    /// Who: an operator's name, `oidc:<issuer>`, `rfc7009:<operator>`.
    pub operator: String,
    /// From where.
    pub remote: String,
    /// What: `revoke`, `revoke_bulk`, `withdraw`, `forget`, `rfc7009_revoke`, `oidc_logout`.
    pub action: String,
    /// On what: seqs (`seq 7`, `seq 7-12`), an agent id.
    pub target: String,
    /// The HTTP status answered.
    pub status: u16,
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
    pub entries: Vec<Logged>,
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
    pub entries: Vec<Logged>,
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
    /// Durably appends `batch` and the `audit` records of the requests that stored it in one
    /// commit; returns the sequenced entries. A single-writer store checks that its head is
    /// still `head`; a shared store appends after its own head.
    fn append(
        self: Arc<Self>,
        head: u64,
        batch: Vec<NewEntry>,
        audit: Vec<AuditDraft>,
    ) -> StoreFuture<Vec<Logged>>;
    /// Durably records `audit` on its own (an effect outside the log, recorded before it).
    fn record_audit(self: Arc<Self>, audit: Vec<AuditDraft>) -> StoreFuture<()>;
    /// Up to `limit` audit records with an id above `after`, ascending.
    fn audit_after(self: Arc<Self>, after: u64, limit: usize) -> StoreFuture<Vec<AuditRecord>>;
    /// Removes audit records older than `before_ms`; returns how many.
    fn expire_audit(self: Arc<Self>, before_ms: u64) -> StoreFuture<u64>;
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
    /// Removes a disconnected agent's shared cursor, recording `audit` (with the outcome's
    /// status) in the same transaction when it is removed.
    fn forget_agent(self: Arc<Self>, id: String, audit: AuditDraft) -> StoreFuture<Forgotten>;
    /// Takes the lease `name` for this replica, or keeps it, for `ttl`: `true` while this
    /// replica holds it (one replica at a time does what it guards, e.g. the SSF poll).
    fn lease(self: Arc<Self>, name: String, ttl: std::time::Duration) -> StoreFuture<bool>;
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

/// Tag of the attribution field after an entry in a record.
const BY_TAG: u8 = 1;

/// A stored record: checksum (xxh3, little endian), the entry as agents get it, then — when
/// known — [`BY_TAG`] and who stored it (UTF-8, to the end). Records written before
/// attribution existed end after the entry and still read.
pub(crate) fn record(entry: &Entry, by: Option<&str>) -> Result<Vec<u8>, StoreError> {
    let mut body = encode_entry(entry)?;
    if let Some(by) = by {
        body.push(BY_TAG);
        body.extend_from_slice(by.as_bytes());
    }
    let mut out = xxhash_rust::xxh3::xxh3_64(&body).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Who stored entries, shared: a million entries from a handful of operators hold a handful of
/// strings.
#[derive(Debug, Default)]
pub(crate) struct Names(std::collections::HashMap<String, Arc<str>>);

impl Names {
    pub(crate) fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.0.get(name) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(name);
        if self.0.len() < 10_000 {
            self.0.insert(name.to_owned(), n.clone());
        }
        n
    }
}

pub(crate) fn unrecord(seq: u64, bytes: &[u8], names: &mut Names) -> Result<Logged, StoreError> {
    let corrupt = |why: String| StoreError::Corrupt { seq, why };
    if bytes.len() < 8 {
        return Err(corrupt("record shorter than its checksum".into()));
    }
    let (sum, body) = bytes.split_at(8);
    if sum != xxhash_rust::xxh3::xxh3_64(body).to_le_bytes() {
        return Err(corrupt("checksum mismatch".into()));
    }
    let (entry, used) = decode_entry_prefix(body).map_err(|e| corrupt(e.to_string()))?;
    if entry.seq != seq {
        return Err(corrupt(format!("record holds seq {}", entry.seq)));
    }
    let by = match body.get(used..).unwrap_or_default() {
        [] => None,
        [BY_TAG, rest @ ..] => Some(
            names.get(std::str::from_utf8(rest).map_err(|_| corrupt("attribution is not UTF-8".into()))?),
        ),
        _ => return Err(corrupt("unknown bytes after the entry".into())),
    };
    Ok(Logged { entry, by })
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
        let n = &mut Names::default();
        let mut r = record(&entry, None).unwrap();
        assert_eq!(unrecord(3, &r, n).unwrap(), Logged::from(entry.clone()));
        assert!(matches!(unrecord(4, &r, n), Err(StoreError::Corrupt { .. })));
        let last = r.len() - 1;
        r[last] ^= 1;
        assert!(matches!(unrecord(3, &r, n), Err(StoreError::Corrupt { .. })));
        assert!(matches!(unrecord(3, &r[..4], n), Err(StoreError::Corrupt { .. })));
        let r = record(&entry, Some("alice")).unwrap();
        assert_eq!(unrecord(3, &r, n).unwrap().by.as_deref(), Some("alice"));
        // A record from before attribution is the checksummed entry alone: still read.
        let body = encode_entry(&entry).unwrap();
        let mut old = xxhash_rust::xxh3::xxh3_64(&body).to_le_bytes().to_vec();
        old.extend_from_slice(&body);
        assert_eq!(unrecord(3, &old, n).unwrap().by, None);
    }
}
