//! The embedded store: the log in one redb file under the data directory, checksummed
//! records, every commit an fsync.

use super::{
    record, unrecord, AuditDraft, AuditRecord, Loaded, LogStore, Logged, Names, NewEntry, StoreError,
    StoreFuture, Tail,
};
use redb::{Database, ReadableTable, TableDefinition};
use revmesh_protocol::LogId;
use std::path::Path;
use std::sync::Arc;

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The audit trail: id → the record as JSON (README, "Operators and the audit trail").
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// Writes `drafts` into the audit table of `txn` with the next ids; `first_seq` is the seq of
/// the first entry the same transaction appends.
fn write_audit(
    txn: &redb::WriteTransaction,
    drafts: &[AuditDraft],
    first_seq: u64,
) -> Result<(), StoreError> {
    if drafts.is_empty() {
        return Ok(());
    }
    let mut meta = txn.open_table(META).map_err(io)?;
    let mut next = meta_u64(&meta, "audit_next")?.max(1);
    let mut table = txn.open_table(AUDIT).map_err(io)?;
    for d in drafts {
        let r = d.finish(next, first_seq);
        let bytes =
            serde_json::to_vec(&r).map_err(|e| StoreError::Meta(format!("encoding an audit record: {e}")))?;
        table.insert(next, bytes.as_slice()).map_err(io)?;
        next += 1;
    }
    meta.insert("audit_next", &next.to_le_bytes()[..]).map_err(io)?;
    Ok(())
}

fn io(e: impl Into<redb::Error>) -> StoreError {
    let e: redb::Error = e.into();
    StoreError::Backend { backend: "store", message: e.to_string(), source: Box::new(e) }
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
) -> Result<Vec<Logged>, StoreError> {
    let mut names = Names::default();
    range
        .map(|item| {
            let (k, v) = item.map_err(io)?;
            unrecord(k.value(), v.value(), &mut names)
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
        if let Err(e @ StoreError::Backend { .. }) = &r {
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

    fn append(
        self: Arc<Self>,
        head: u64,
        batch: Vec<NewEntry>,
        audit: Vec<AuditDraft>,
    ) -> StoreFuture<Vec<Logged>> {
        blocking(move || self.with_db(|db| Self::append_to(db, head, &batch, &audit)))
    }

    fn record_audit(self: Arc<Self>, audit: Vec<AuditDraft>) -> StoreFuture<()> {
        blocking(move || {
            self.with_db(|db| {
                let txn = db.begin_write().map_err(io)?;
                write_audit(&txn, &audit, 0)?;
                txn.commit().map_err(io)
            })
        })
    }

    fn audit_after(self: Arc<Self>, after: u64, limit: usize) -> StoreFuture<Vec<AuditRecord>> {
        blocking(move || RedbStore::audit_after(&self, after, limit))
    }

    fn expire_audit(self: Arc<Self>, before_ms: u64) -> StoreFuture<u64> {
        blocking(move || {
            self.with_db(|db| {
                let txn = db.begin_write().map_err(io)?;
                let mut removed = 0;
                {
                    let mut table = txn.open_table(AUDIT).map_err(io)?;
                    // Ids ascend with time (one writer): stop at the first record to keep.
                    loop {
                        let first = match table.first().map_err(io)? {
                            Some((k, v)) => {
                                let r: Option<AuditRecord> = serde_json::from_slice(v.value()).ok();
                                (k.value(), r.map_or(0, |r| r.at_ms))
                            }
                            None => break,
                        };
                        if first.1 >= before_ms || removed >= 100_000 {
                            break;
                        }
                        table.remove(first.0).map_err(io)?;
                        removed += 1;
                    }
                }
                txn.commit().map_err(io)?;
                Ok(removed)
            })
        })
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

    fn backup(self: Arc<Self>, path: std::path::PathBuf) -> StoreFuture<Option<super::BackupInfo>> {
        blocking(move || RedbStore::backup(&self, &path).map(Some))
    }
}

/// Installs a backup written by [`RedbStore::backup`] as the store of `dir` under a new log id
/// (`revmesh-authority restore`). A restored log has lost the entries written after the
/// backup, and would reuse their seqs for new ones; under its old id an agent that applied the
/// lost entries would take the new ones for entries it already has. Under a new id every agent
/// adopts it with a snapshot and keeps what it enforces (PROTOCOL.md §9.9). An existing log in
/// `dir` is kept beside it, renamed. Returns the backup's log id and head and the new id.
pub fn restore(backup: &Path, dir: &Path, new_log_id: LogId) -> Result<(LogId, u64, LogId), StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir { path: dir.to_owned(), source })?;
    let dir_err = |source| StoreError::Dir { path: dir.to_owned(), source };
    let staged = dir.join("log.redb.restoring");
    std::fs::copy(backup, &staged).map_err(|source| StoreError::Dir { path: backup.to_owned(), source })?;
    let (old, head) = {
        let db = Database::open(&staged).map_err(io)?;
        let txn = db.begin_write().map_err(io)?;
        let found = {
            let mut meta = txn.open_table(META).map_err(io)?;
            let old: Option<Vec<u8>> = meta.get("log_id").map_err(io)?.map(|v| v.value().to_vec());
            let old = old.and_then(|v| <[u8; 16]>::try_from(v).ok()).map(LogId).ok_or_else(|| {
                StoreError::Meta(format!("{} is not a revmesh backup (no log id)", backup.display()))
            })?;
            let head = meta_u64(&meta, "head")?;
            meta.insert("log_id", &new_log_id.0[..]).map_err(io)?;
            (old, head)
        };
        // Every entry must read back: a damaged backup is refused before it replaces anything.
        records(txn.open_table(ENTRIES).map_err(io)?.range(0..).map_err(io)?)?;
        txn.commit().map_err(io)?;
        found
    };
    let live = dir.join("log.redb");
    if live.try_exists().map_err(dir_err)? {
        let aside = dir.join(format!("log.redb.before-restore-{old}"));
        std::fs::rename(&live, &aside).map_err(dir_err)?;
    }
    std::fs::rename(&staged, &live).map_err(dir_err)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(dir_err)?;
    Ok((old, head, new_log_id))
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

    /// Appends in one commit, without audit records (see [`LogStore::append`]).
    pub fn append(&self, head: u64, batch: &[NewEntry]) -> Result<Vec<Logged>, StoreError> {
        self.with_db(|db| Self::append_to(db, head, batch, &[]))
    }

    /// Up to `limit` audit records after `after` (see [`LogStore::audit_after`]).
    pub fn audit_after(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(io)?;
            let table = match txn.open_table(AUDIT) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(io(e)),
            };
            let mut out = Vec::new();
            for item in table.range(after.saturating_add(1)..).map_err(io)?.take(limit) {
                let (k, v) = item.map_err(io)?;
                let r = serde_json::from_slice(v.value()).map_err(|e| {
                    StoreError::Meta(format!("audit record {} does not read: {e}", k.value()))
                })?;
                out.push(r);
            }
            Ok(out)
        })
    }

    /// Compacts (see [`LogStore::compact`]).
    pub fn compact(&self, floor: u64, seqs: &[u64]) -> Result<(), StoreError> {
        self.with_db(|db| Self::compact_in(db, floor, seqs))
    }

    /// Writes a consistent copy of the log, as one read transaction sees it, to a new store
    /// file at `path` (fsynced); the log keeps serving meanwhile.
    pub fn backup(&self, path: &Path) -> Result<super::BackupInfo, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(io)?;
            let meta = txn.open_table(META).map_err(io)?;
            let entries = txn.open_table(ENTRIES).map_err(io)?;
            let log_id = meta
                .get("log_id")
                .map_err(io)?
                .and_then(|v| <[u8; 16]>::try_from(v.value()).ok())
                .map(LogId)
                .ok_or_else(|| StoreError::Meta("the log has no id yet".into()))?;
            let head = meta_u64(&meta, "head")?;
            let out = Database::create(path).map_err(io)?;
            let w = out.begin_write().map_err(io)?;
            let mut copied = 0;
            {
                let mut m = w.open_table(META).map_err(io)?;
                for item in meta.iter().map_err(io)? {
                    let (k, v) = item.map_err(io)?;
                    m.insert(k.value(), v.value()).map_err(io)?;
                }
                let mut e = w.open_table(ENTRIES).map_err(io)?;
                for item in entries.iter().map_err(io)? {
                    let (k, v) = item.map_err(io)?;
                    e.insert(k.value(), v.value()).map_err(io)?;
                    copied += 1;
                }
                // The audit trail goes with the log it explains.
                let mut a = w.open_table(AUDIT).map_err(io)?;
                if let Ok(audit) = txn.open_table(AUDIT) {
                    for item in audit.iter().map_err(io)? {
                        let (k, v) = item.map_err(io)?;
                        a.insert(k.value(), v.value()).map_err(io)?;
                    }
                }
            }
            w.commit().map_err(io)?;
            Ok(super::BackupInfo { log_id, head, entries: copied })
        })
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

    fn append_to(
        db: &Database,
        head: u64,
        batch: &[NewEntry],
        audit: &[AuditDraft],
    ) -> Result<Vec<Logged>, StoreError> {
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
                table.insert(entry.seq, record(&entry, n.by.as_deref())?.as_slice()).map_err(io)?;
                out.push(Logged { entry, by: n.by.clone() });
            }
            let new_head = head + batch.len() as u64;
            meta.insert("head", &new_head.to_le_bytes()[..]).map_err(io)?;
        }
        // In the same transaction: no entry without the record of the request that stored it.
        write_audit(&txn, audit, head + 1)?;
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
    use revmesh_protocol::Revocation;

    fn new(jti: &str) -> NewEntry {
        NewEntry {
            revocation: Revocation::Jti { jti: jti.into(), iss: None },
            expires_at: 100,
            reason: None,
            created_at_ms: 1,
            by: None,
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

    /// Audit records commit with the entries they name (their seqs filled in by the store),
    /// read back in id order, and expire by age.
    #[test]
    fn audit_records_name_their_seqs_and_expire_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(dir.path(), LogId([1; 16])).unwrap();
        s.load().unwrap();
        let draft = |at_ms: u64, entries: Option<std::ops::Range<usize>>| AuditDraft {
            record: AuditRecord {
                id: 0,
                at_ms,
                operator: "ann".into(),
                remote: "127.0.0.1:1".into(),
                action: "revoke".into(),
                target: String::new(),
                status: 201,
            },
            entries,
        };
        s.with_db(|db| {
            RedbStore::append_to(
                db,
                0,
                &[new("a"), new("b"), new("c")],
                &[draft(1_000, Some(0..1)), draft(2_000, Some(1..3))],
            )
        })
        .unwrap();
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else { panic!("runtime") };
        let store = Arc::new(s);
        rt.block_on(store.clone().record_audit(vec![draft(3_000, None)])).unwrap();
        let all = RedbStore::audit_after(&store, 0, 10).unwrap();
        let targets: Vec<(u64, &str)> = all.iter().map(|r| (r.id, r.target.as_str())).collect();
        assert_eq!(targets, [(1, "seq 1"), (2, "seq 2-3"), (3, "")]);
        assert_eq!(RedbStore::audit_after(&store, 2, 10).unwrap().len(), 1);
        assert_eq!(rt.block_on(store.clone().expire_audit(2_500)).unwrap(), 2);
        assert_eq!(
            RedbStore::audit_after(&store, 0, 10).unwrap().iter().map(|r| r.id).collect::<Vec<_>>(),
            [3]
        );
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
}
