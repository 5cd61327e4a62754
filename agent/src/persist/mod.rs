//! Crash-safe persistence of the agent's state under `--data-dir`: a compacted snapshot
//! (`state.bin`, replaced atomically) plus an append-only journal of applied batches
//! (`journal.bin`, durable before the ack). See PROTOCOL.md §6 for the layout.
//!
//! The journal is written with `O_DIRECT | O_DSYNC` in whole 4 KiB blocks where the file
//! system takes it: one system call per group, which returns once the blocks and anything
//! needed to read them back are on stable storage, without dirtying the page cache and writing
//! it back. That costs about two thirds of the CPU of `pwrite` + `fdatasync` (docs/benchmarks-history.md,
//! "Checks"). A file system that refuses direct writes gets `pwrite` + `fdatasync`.
//!
//! A torn or corrupt journal tail is cut off at the last good record; a corrupt snapshot is
//! moved aside and the agent starts empty (and so answers STALE until it has resynced).

mod error;
mod record;
mod state_file;
mod write;

pub use error::PersistError;
pub use record::JournalBatch;
use record::{checksum, push_record, read_record};
use state_file::{read_state, Damaged, MAGIC};
pub use write::JournalMode;
use write::{align_down, align_up, open_journal, write_direct, write_synced, Scratch};

use revmesh_protocol::codec::{encode_state_image, PersistedState};
use revmesh_protocol::frame::BatchView;
use revmesh_protocol::set::TableImage;
use revmesh_protocol::{Entry, LogId};
use revmesh_runtime::Clock;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Journal size that triggers a new snapshot.
const JOURNAL_LIMIT: u64 = 8 << 20;
/// Zeros written ahead of the journal's records whenever it must grow. An fdatasync after a
/// write inside the file's length flushes only the data; one that grows the file also commits
/// file system metadata, at about twice the CPU and latency. The journal grows in these steps,
/// so most acks cost the cheap kind.
const JOURNAL_STEP: usize = 256 << 10;
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io { path: path.to_owned(), source }
}

/// Persistence under one data dir.
#[derive(Debug)]
pub struct Persist {
    dir: PathBuf,
    /// `None` after an I/O error other than a full disk. A file system that the kernel turned
    /// read-only after an error (`errors=remount-ro`) is released, so that it can be checked
    /// and mounted again, only once its last file is closed; no write through the old files
    /// can succeed after that. [`Persist::snapshot`] opens them again.
    files: Option<Files>,
    /// Bytes of records; the file beyond them, up to `journal_file_len`, is zeros.
    journal_len: u64,
    journal_file_len: u64,
    /// The journal's bytes from the block `journal_len` falls in up to `journal_len`: a direct
    /// write starts at that block and writes them again, unchanged, ahead of the new records.
    tail: Vec<u8>,
    mode: JournalMode,
    scratch: Scratch,
}

#[derive(Debug)]
struct Files {
    /// `<data-dir>/lock`, held exclusively: two agents on one data dir would interleave their
    /// journals.
    _lock: File,
    journal: File,
    /// True when `journal` was opened `O_DIRECT | O_DSYNC`: every write is durable when it
    /// returns and must be aligned to [`ALIGN`].
    direct: bool,
    /// `<data-dir>/heard`, rewritten in place (see [`Persist::heard`]).
    heard: File,
}

/// Opens `<data-dir>/heard` for rewriting in place.
fn open_heard(dir: &Path) -> std::io::Result<File> {
    OpenOptions::new().write(true).create(true).truncate(false).open(dir.join("heard"))
}

/// Opens and locks `dir/lock`; `create` only when the data dir is opened at start (a reopened
/// data dir without its lock file is not ours: its volume is not mounted, say).
fn lock(dir: &Path, create: bool) -> Result<File, PersistError> {
    let lock_path = dir.join("lock");
    let lock = OpenOptions::new()
        .create(create)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    if let Err(e) = lock.try_lock() {
        let source = match e {
            std::fs::TryLockError::WouldBlock => std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "locked by another running agent: each agent needs its own --data-dir",
            ),
            std::fs::TryLockError::Error(e) => e,
        };
        return Err(PersistError::Io { path: lock_path, source });
    }
    Ok(lock)
}

/// A write error that the same files can outlive: the disk is full (space may come back).
fn space(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
}

/// What was found on disk.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The revocation set after replaying the journal, built once.
    pub set: revmesh_protocol::RevocationSet,
    /// The log it belongs to.
    pub log_id: Option<LogId>,
    /// Highest seq it holds.
    pub applied_seq: u64,
    /// Last contact with an authority, unix ms.
    pub heard_ms: Option<u64>,
    /// Problems found (and repaired) while loading, for the log.
    pub warnings: Vec<String>,
}

impl Persist {
    /// Opens the directory, recovering the state it holds (entries expired by `clock` are
    /// dropped on the way).
    pub fn open(dir: &Path, clock: &Clock) -> Result<(Self, Recovered), PersistError> {
        Self::open_with(dir, clock, JournalMode::Direct)
    }

    /// [`Persist::open`], with the journal written as `mode` says.
    pub fn open_with(
        dir: &Path,
        clock: &Clock,
        mode: JournalMode,
    ) -> Result<(Self, Recovered), PersistError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock = lock(dir, true)?;
        let mut rec = Recovered::default();
        let state_path = dir.join("state.bin");
        match read_state(&state_path) {
            Ok(found) => match found {
                Ok(Some((set, state))) => {
                    rec.set = set;
                    (rec.log_id, rec.applied_seq) = (state.log_id, state.applied_seq);
                }
                Ok(None) => {}
                Err(Damaged) => {
                    let aside = dir.join("state.bin.corrupt");
                    let _ = std::fs::rename(&state_path, &aside);
                    rec.warnings.push(format!(
                        "{} is corrupt; moved to {}; starting empty",
                        state_path.display(),
                        aside.display()
                    ));
                }
            },
            Err(e) => return Err(io(&state_path)(e)),
        }
        let journal_path = dir.join("journal.bin");
        let mut journal = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&journal_path)
            .map_err(io(&journal_path))?;
        let mut bytes = Vec::new();
        journal.read_to_end(&mut bytes).map_err(io(&journal_path))?;
        let now = clock.unix_secs();
        let mut good = 0usize;
        let mut pos = 0usize;
        while let Some((batch, next)) = read_record(&bytes, pos) {
            if rec.log_id.is_some_and(|l| l != batch.log_id) {
                // A record of another log cannot follow this snapshot: treat it as corruption.
                break;
            }
            if batch.to_seq > rec.applied_seq {
                if batch.from_seq > rec.applied_seq + 1 {
                    break;
                }
                for e in batch.entries.iter().filter(|e| e.seq > rec.applied_seq) {
                    rec.set.insert(e, now);
                }
                rec.applied_seq = batch.to_seq;
                rec.log_id = Some(batch.log_id);
            }
            pos = next;
            good = next;
        }
        // Zeros after the records are the journal's room to grow; anything else is a torn or
        // corrupt tail.
        let mut file_len = bytes.len() as u64;
        if bytes[good..].iter().any(|b| *b != 0) {
            rec.warnings.push(format!("journal: cut {} bytes of torn or corrupt tail", bytes.len() - good));
            journal.set_len(good as u64).map_err(io(&journal_path))?;
            journal.sync_all().map_err(io(&journal_path))?;
            file_len = good as u64;
        }
        rec.heard_ms = std::fs::read_to_string(dir.join("heard")).ok().and_then(|s| s.trim().parse().ok());
        drop(journal);
        let (journal, direct) = open_journal(&journal_path, mode).map_err(io(&journal_path))?;
        if mode == JournalMode::Direct && !direct {
            tracing::info!(path = %journal_path.display(), "the file system does not take direct I/O; the journal is written through the page cache and fdatasync");
        }
        let tail = bytes[align_down(good as u64) as usize..good].to_vec();
        let heard = open_heard(dir).map_err(io(&dir.join("heard")))?;
        let files = Some(Files { _lock: lock, journal, direct, heard });
        let journal_len = good as u64;
        let scratch = Scratch::default();
        Ok((
            Self { dir: dir.to_owned(), files, journal_len, journal_file_len: file_len, tail, mode, scratch },
            rec,
        ))
    }

    /// Appends one applied batch and fsyncs it. Returns true when the journal should be compacted.
    pub fn append(
        &mut self,
        log_id: LogId,
        from_seq: u64,
        to_seq: u64,
        entries: &[Entry],
    ) -> Result<bool, PersistError> {
        let entries = entries.iter().map(Entry::view).collect();
        self.append_all(&[JournalBatch::encode(&BatchView { log_id, from_seq, to_seq, entries })?])
    }

    /// Appends several applied batches, in order, with one fsync for all of them (a group
    /// commit: batches that arrived while the previous write was running). Returns true when
    /// the journal should be compacted.
    pub fn append_all(&mut self, batches: &[JournalBatch]) -> Result<bool, PersistError> {
        let mut buf = Vec::with_capacity(batches.iter().map(JournalBatch::record_len).sum());
        for b in batches {
            push_record(&mut buf, b);
        }
        self.write_records(&buf)
    }

    fn write_records(&mut self, records: &[u8]) -> Result<bool, PersistError> {
        let Some(files) = self.files.as_mut() else {
            return Err(PersistError::Closed { dir: self.dir.clone() });
        };
        let at = self.journal_len;
        let end = at + records.len() as u64;
        let mut written = if files.direct {
            Self::write_direct_records(
                files,
                &mut self.scratch,
                &self.tail,
                records,
                at,
                self.journal_file_len,
            )
        } else {
            Self::write_buffered_records(files, records, at, self.journal_file_len)
        };
        if files.direct && matches!(&written, Err(e) if e.raw_os_error() == Some(libc::EINVAL)) {
            // The file system opened the file for direct I/O but refuses these writes (an
            // alignment it needs beyond ALIGN): nothing was written; go through the page cache.
            let path = self.dir.join("journal.bin");
            tracing::warn!(path = %path.display(), "the file system refuses direct writes; the journal is written through the page cache and fdatasync");
            match open_journal(&path, JournalMode::Buffered) {
                Ok((journal, _)) => {
                    (files.journal, files.direct) = (journal, false);
                    self.mode = JournalMode::Buffered;
                    written = Self::write_buffered_records(files, records, at, self.journal_file_len);
                }
                Err(e) => written = Err(e),
            }
        }
        let file_len = match written {
            Ok(file_len) => file_len,
            Err(e) => {
                // A write that failed may have left part of a record: cut it off, so the next
                // records do not land behind a torn one (which a restart would cut, with all
                // after).
                if let Some(files) = self.files.as_mut() {
                    let _ = files.journal.set_len(self.journal_len);
                }
                self.journal_file_len = self.journal_len;
                if !space(&e) {
                    self.files = None;
                }
                return Err(io(&self.dir.join("journal.bin"))(e));
            }
        };
        self.journal_file_len = file_len;
        // The new tail: the records' bytes from the last block they reach into.
        let block = align_down(end);
        let keep = (end - block) as usize;
        if block > at {
            self.tail.clear();
            self.tail.extend_from_slice(&records[records.len() - keep..]);
        } else {
            self.tail.extend_from_slice(records);
        }
        self.journal_len = end;
        Ok(self.journal_len > JOURNAL_LIMIT)
    }

    /// Writes `records` at `at` with `pwrite` + `fdatasync`, growing the file by a step of zeros
    /// when they pass its end (`file_len`). Returns the file's new length.
    fn write_buffered_records(files: &Files, records: &[u8], at: u64, file_len: u64) -> std::io::Result<u64> {
        let end = at + records.len() as u64;
        if end <= file_len {
            return write_synced(&files.journal, records, at).map(|()| file_len);
        }
        // Grow by a step of zeros along with the records: one metadata commit per step.
        let mut grown = Vec::with_capacity(records.len() + JOURNAL_STEP);
        grown.extend_from_slice(records);
        grown.resize(records.len() + JOURNAL_STEP, 0);
        match write_synced(&files.journal, &grown, at) {
            Ok(()) => Ok(at + grown.len() as u64),
            // No room for the step: the records alone may still fit.
            Err(e) if space(&e) => {
                let _ = files.journal.set_len(at);
                write_synced(&files.journal, records, at).map(|()| end)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes `tail` (the file's bytes from the block `at` falls in) and `records` as whole
    /// blocks at that block, with one direct, synchronous write; zeros fill the last block, or
    /// a step of them when the records pass the file's end. Returns the file's new length.
    fn write_direct_records(
        files: &Files,
        scratch: &mut Scratch,
        tail: &[u8],
        records: &[u8],
        at: u64,
        file_len: u64,
    ) -> std::io::Result<u64> {
        let start = align_down(at);
        let end = at + records.len() as u64;
        let mut write = |to: u64| -> std::io::Result<u64> {
            let Some(buf) = scratch.assemble((to - start) as usize, &[tail, records]) else {
                return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
            };
            let written = write_direct(&files.journal, buf, start);
            scratch.trim();
            written.map(|()| to.max(file_len))
        };
        if end <= file_len {
            return write(align_up(end));
        }
        match write(align_up(end + JOURNAL_STEP as u64)) {
            Ok(len) => Ok(len),
            Err(e) if space(&e) => {
                let _ = files.journal.set_len(at);
                write(align_up(end))
            }
            Err(e) => Err(e),
        }
    }

    /// Writes a full snapshot atomically, then empties the journal. `state.set` holds what the
    /// table image does not: the other kinds (its `jti` digests are ignored).
    ///
    /// Closed files (after an I/O error) are opened again first: the lock without creating it,
    /// so a data dir whose volume is not mounted is never written; the journal emptied, as the
    /// snapshot covers everything.
    pub fn snapshot(&mut self, state: &PersistedState, table: &TableImage) -> Result<(), PersistError> {
        let reopened = match self.files.take() {
            Some(files) => files,
            None => {
                let lock = lock(&self.dir, false)?;
                let jp = self.dir.join("journal.bin");
                let (journal, direct) = open_journal(&jp, self.mode).map_err(io(&jp))?;
                let heard = open_heard(&self.dir).map_err(io(&self.dir.join("heard")))?;
                Files { _lock: lock, journal, direct, heard }
            }
        };
        let r = self.snapshot_with(&reopened.journal, state, table);
        match &r {
            Err(PersistError::Io { source, .. }) if !space(source) => {}
            _ => self.files = Some(reopened),
        }
        r
    }

    fn snapshot_with(
        &mut self,
        journal: &File,
        state: &PersistedState,
        table: &TableImage,
    ) -> Result<(), PersistError> {
        let body = encode_state_image(state, table).map_err(|e| PersistError::Encode(e.to_string()))?;
        let tmp = self.dir.join("state.bin.tmp");
        let dst = self.dir.join("state.bin");
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(MAGIC)?;
            f.write_all(&checksum(&body).to_le_bytes())?;
            f.write_all(&body)?;
            f.sync_all()
        });
        if let Err(e) = written {
            // Give the space back (a full disk); the previous state.bin is untouched.
            let _ = std::fs::remove_file(&tmp);
            return Err(io(&tmp)(e));
        }
        std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
        let jp = self.dir.join("journal.bin");
        journal.set_len(0).map_err(io(&jp))?;
        journal.sync_all().map_err(io(&jp))?;
        self.journal_len = 0;
        self.journal_file_len = 0;
        self.tail.clear();
        Ok(())
    }

    /// Records the time of the last contact with an authority (best effort, not fsynced).
    ///
    /// The number is written over the file's start at a fixed width: one system call, and no
    /// block freed and allocated again as truncating and rewriting the file would cost. The
    /// width holds any u64, so no digit of an earlier, longer number is left behind.
    pub fn heard(&self, unix_ms: u64) {
        use std::os::unix::fs::FileExt;
        if let Some(files) = &self.files {
            let _ = files.heard.write_all_at(format!("{unix_ms:020}\n").as_bytes(), 0);
        }
    }

    /// False after an I/O error closed the files, until a snapshot opens them again.
    pub fn is_open(&self) -> bool {
        self.files.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::state_file::MAGIC_V1;
    use super::write::ALIGN;
    use super::*;
    use revmesh_protocol::{Revocation, RevocationSet, TokenRef};

    fn entry(seq: u64) -> Entry {
        Entry {
            seq,
            created_at_ms: 0,
            expires_at: u64::from(u32::MAX),
            reason: None,
            revocation: Revocation::Jti { jti: format!("j{seq}"), iss: None },
        }
    }

    /// The batch `from..=to` with an entry for every seq, as the link journals it.
    fn journal_batch(log_id: LogId, from_seq: u64, to_seq: u64) -> JournalBatch {
        let entries: Vec<Entry> = (from_seq..=to_seq).map(entry).collect();
        let view = BatchView { log_id, from_seq, to_seq, entries: entries.iter().map(Entry::view).collect() };
        JournalBatch::encode(&view).unwrap()
    }

    fn has(rec: &Recovered, seq: u64) -> bool {
        let j = format!("j{seq}");
        rec.set.check(&TokenRef { jti: Some(&j), ..Default::default() }).is_some()
    }

    /// The last contact is read back after a restart, also when a smaller number replaced a
    /// longer one in place, and from a file an earlier version wrote (no padding).
    #[test]
    fn the_last_contact_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("heard"), "1733000000000").unwrap();
        let (p, rec) = open(dir.path(), JournalMode::Direct);
        assert_eq!(rec.heard_ms, Some(1_733_000_000_000));
        p.heard(u64::MAX);
        p.heard(42);
        drop(p);
        let (p, rec) = open(dir.path(), JournalMode::Direct);
        assert_eq!(rec.heard_ms, Some(42));
        p.heard(1_733_000_000_123);
        drop(p);
        assert_eq!(open(dir.path(), JournalMode::Direct).1.heard_ms, Some(1_733_000_000_123));
    }

    /// Two agents on one data dir would interleave their journals: the second is refused
    /// while the first runs, and the dir is free again once it has stopped.
    #[test]
    fn a_data_dir_serves_one_agent_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = Persist::open(dir.path(), &Clock::system()).unwrap();
        let err = Persist::open(dir.path(), &Clock::system()).unwrap_err().to_string();
        assert!(err.contains("another running agent"), "{err}");
        drop(first);
        Persist::open(dir.path(), &Clock::system()).unwrap();
    }

    const MODES: [JournalMode; 2] = [JournalMode::Direct, JournalMode::Buffered];

    fn open(dir: &Path, mode: JournalMode) -> (Persist, Recovered) {
        Persist::open_with(dir, &Clock::system(), mode).unwrap()
    }

    #[test]
    fn journal_and_snapshot_survive_reopen_and_a_torn_tail_is_cut() {
        for mode in MODES {
            let dir = tempfile::tempdir().unwrap();
            let log = LogId([3; 16]);
            let end = {
                let (mut p, rec) = open(dir.path(), mode);
                assert_eq!(rec.applied_seq, 0);
                p.append(log, 1, 2, &[entry(1), entry(2)]).unwrap();
                let mut set = RevocationSet::new();
                set.insert(&entry(1), 0);
                set.insert(&entry(2), 0);
                let (rest, table) = set.image();
                p.snapshot(&PersistedState { log_id: Some(log), applied_seq: 2, set: rest }, &table).unwrap();
                p.append(log, 3, 3, &[entry(3)]).unwrap();
                p.append(log, 4, 4, &[entry(4)]).unwrap();
                p.journal_len
            };
            // Tear the last record, as a crash mid-write would: its end never reached the disk.
            let jp = dir.path().join("journal.bin");
            use std::os::unix::fs::FileExt;
            OpenOptions::new().write(true).open(&jp).unwrap().write_all_at(&[0; 5], end - 5).unwrap();
            let (mut p, rec) = open(dir.path(), mode);
            assert_eq!(rec.applied_seq, 3, "{mode:?}");
            assert_eq!(rec.log_id, Some(log));
            assert!(has(&rec, 1) && has(&rec, 3));
            assert!(!has(&rec, 4));
            assert_eq!(rec.warnings.len(), 1);
            // The cut leaves the file ending inside a block; the next record continues there.
            assert_ne!(std::fs::metadata(&jp).unwrap().len() % ALIGN as u64, 0);
            p.append(log, 4, 5, &[entry(4), entry(5)]).unwrap();
            drop(p);
            let (_, rec) = open(dir.path(), mode);
            assert!(rec.warnings.is_empty(), "{mode:?}: {:?}", rec.warnings);
            assert_eq!(rec.applied_seq, 5);
            assert!(has(&rec, 4) && has(&rec, 5));
        }
    }

    /// The journal grows in steps of zeros: they are room, not a torn tail, and records written
    /// after a restart continue right after the last one (group writes included).
    #[test]
    fn the_preallocated_journal_reads_back_and_continues_after_a_restart() {
        for mode in MODES {
            let dir = tempfile::tempdir().unwrap();
            let log = LogId([4; 16]);
            let jp = dir.path().join("journal.bin");
            {
                let (mut p, _) = open(dir.path(), mode);
                p.append(log, 1, 1, &[entry(1)]).unwrap();
                assert!(std::fs::metadata(&jp).unwrap().len() >= JOURNAL_STEP as u64, "grown by a step");
            }
            {
                let (mut p, rec) = open(dir.path(), mode);
                assert!(rec.warnings.is_empty(), "{:?}", rec.warnings);
                assert_eq!(rec.applied_seq, 1);
                let batch = |seq| journal_batch(log, seq, seq);
                p.append_all(&[batch(2), batch(3)]).unwrap();
            }
            let (_, rec) = open(dir.path(), mode);
            assert!(rec.warnings.is_empty(), "{:?}", rec.warnings);
            assert_eq!(rec.applied_seq, 3);
            assert!(has(&rec, 1) && has(&rec, 2) && has(&rec, 3));
            // A record that crosses the end of the zeros grows the file again.
            let (mut p, _) = open(dir.path(), mode);
            let mut next = 4u64;
            while p.journal_len <= JOURNAL_STEP as u64 {
                let batches: Vec<JournalBatch> = (0..8)
                    .map(|i| {
                        let from = next + i * 256;
                        journal_batch(log, from, from + 255)
                    })
                    .collect();
                p.append_all(&batches).unwrap();
                next += 8 * 256;
            }
            drop(p);
            let (_, rec) = open(dir.path(), mode);
            assert!(rec.warnings.is_empty(), "{mode:?}: {:?}", rec.warnings);
            assert_eq!(rec.applied_seq, next - 1);
        }
    }

    /// Direct writes rewrite the block the journal ends in: after every group, of every size
    /// from one small record to several blocks, the file holds exactly the records written so
    /// far, then zeros, the same bytes as the page-cache path writes.
    #[test]
    fn direct_writes_leave_the_same_bytes_as_buffered_ones() {
        let log = LogId([5; 16]);
        let dirs = MODES.map(|_| tempfile::tempdir().unwrap());
        let mut ps: Vec<Persist> = MODES.iter().zip(&dirs).map(|(m, d)| open(d.path(), *m).0).collect();
        let mut expected = Vec::new();
        let mut next = 1u64;
        // Group sizes in entries: small records that stay inside a block, and groups that
        // cross one or more block boundaries.
        for (round, size) in
            [1u64, 1, 3, 40, 1, 7, 120, 2, 1, 300, 1, 64].into_iter().cycle().take(60).enumerate()
        {
            let group: Vec<JournalBatch> =
                (0..size).map(|i| journal_batch(log, next + i, next + i)).collect();
            next += size;
            for b in &group {
                push_record(&mut expected, b);
            }
            for (p, d) in ps.iter_mut().zip(&dirs) {
                p.append_all(&group).unwrap();
                let bytes = std::fs::read(d.path().join("journal.bin")).unwrap();
                assert_eq!(p.journal_len, expected.len() as u64);
                assert!(
                    bytes[..expected.len()] == expected[..],
                    "{:?}, group {round}: records differ",
                    p.mode
                );
                assert!(
                    bytes[expected.len()..].iter().all(|b| *b == 0),
                    "{:?}, group {round}: not zeros after",
                    p.mode
                );
            }
        }
        drop(ps);
        for (m, d) in MODES.iter().zip(&dirs) {
            let (_, rec) = open(d.path(), *m);
            assert!(rec.warnings.is_empty(), "{:?}", rec.warnings);
            assert_eq!(rec.applied_seq, next - 1);
        }
    }

    /// Where the file system takes direct I/O, the journal is open `O_DIRECT | O_DSYNC`: a
    /// write returns once it is on stable storage, which the ack relies on. Without `O_DSYNC`
    /// the journal would not be durable at the ack; this fails then.
    #[test]
    fn the_journal_is_direct_and_synchronous_where_the_file_system_takes_it() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().unwrap();
        let probe = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(dir.path().join("probe"));
        let takes_direct = match probe {
            Ok(_) => true,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => false,
            Err(e) => panic!("probe: {e}"),
        };
        let flags = |p: &Persist| {
            let fd = p.files.as_ref().unwrap().journal.as_raw_fd();
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
            let octal = info.lines().find_map(|l| l.strip_prefix("flags:")).unwrap().trim();
            i32::from_str_radix(octal, 8).unwrap()
        };
        let (direct, _) = open(dir.path(), JournalMode::Direct);
        assert_eq!(direct.files.as_ref().unwrap().direct, takes_direct);
        if takes_direct {
            let f = flags(&direct);
            assert_eq!(f & libc::O_DIRECT, libc::O_DIRECT, "flags {f:o}");
            assert_eq!(f & libc::O_DSYNC, libc::O_DSYNC, "flags {f:o}");
        }
        drop(direct);
        let (buffered, _) = open(dir.path(), JournalMode::Buffered);
        assert!(!buffered.files.as_ref().unwrap().direct);
        assert_eq!(flags(&buffered) & libc::O_DIRECT, 0);
    }

    /// A state file written by an earlier version (a bincode snapshot) is still read.
    #[test]
    fn a_version_1_state_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = RevocationSet::new();
        set.insert(&entry(1), 0);
        let state = PersistedState { log_id: Some(LogId([4; 16])), applied_seq: 1, set: set.snapshot() };
        let body = revmesh_protocol::codec::encode_state(&state).unwrap();
        let mut file = MAGIC_V1.to_vec();
        file.extend_from_slice(&checksum(&body).to_le_bytes());
        file.extend_from_slice(&body);
        std::fs::write(dir.path().join("state.bin"), file).unwrap();
        let (_, rec) = Persist::open(dir.path(), &Clock::system()).unwrap();
        assert_eq!((rec.applied_seq, rec.log_id), (1, Some(LogId([4; 16]))));
        assert!(has(&rec, 1));
    }

    /// Issuer-scoped subjects and sessions survive a restart with their scope (an `RVMSTAT3`
    /// file), and a file of the previous layout (`RVMSTAT2`) is still read.
    #[test]
    fn issuer_scoped_entries_survive_a_restart_and_version_2_files_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = RevocationSet::new();
        set.insert(&entry(1), 0);
        let scoped = Entry {
            seq: 2,
            revocation: Revocation::session("s".into(), Some("https://a".into())),
            ..entry(2)
        };
        set.insert(&scoped, 0);
        let (rest, table) = set.image();
        let state = PersistedState { log_id: Some(LogId([4; 16])), applied_seq: 2, set: rest };
        {
            let (mut p, _) = Persist::open(dir.path(), &Clock::system()).unwrap();
            p.snapshot(&state, &table).unwrap();
        }
        let bytes = std::fs::read(dir.path().join("state.bin")).unwrap();
        assert_eq!(&bytes[..8], b"RVMSTAT3");
        let session = |iss: &'static str| TokenRef { sid: Some("s"), iss: Some(iss), ..Default::default() };
        let (_, rec) = Persist::open(dir.path(), &Clock::system()).unwrap();
        assert!(has(&rec, 1) && rec.set.check(&session("https://a")).is_some());
        assert!(rec.set.check(&session("https://b")).is_none(), "the scope survives the restart");
        drop(rec);
        // The same layout under the previous magic (written before scopes existed) reads.
        let mut old = bytes.clone();
        old[..8].copy_from_slice(b"RVMSTAT2");
        std::fs::write(dir.path().join("state.bin"), old).unwrap();
        let (_, rec) = Persist::open(dir.path(), &Clock::system()).unwrap();
        assert_eq!(rec.applied_seq, 2);
        assert!(has(&rec, 1));
    }

    /// A table image whose slots cannot be found from their homes is refused even when its
    /// checksum matches (a bug, not a disk, wrote it): the agent starts empty and stale rather
    /// than answer OK for a revoked token it cannot find.
    #[test]
    fn a_table_image_that_breaks_its_invariant_is_refused() {
        let mut set = RevocationSet::new();
        for seq in 1..=100 {
            set.insert(&entry(seq), 0);
        }
        let (rest, mut table) = set.image();
        assert!(RevocationSet::from_image(rest.clone(), table.clone()).is_ok());
        // Move one digest far from its home, behind an empty slot.
        let full = table.slots.iter().position(|s| s.seq != 0).unwrap();
        let empty = (full..table.slots.len()).chain(0..full).find(|i| table.slots[*i].seq == 0).unwrap();
        let hole = (empty + 1..table.slots.len()).find(|i| table.slots[*i].seq == 0).unwrap();
        table.slots[hole] = table.slots[full];
        table.slots[full] = revmesh_protocol::set::JtiSlot::default();
        assert!(RevocationSet::from_image(rest, table).is_err());
    }

    #[test]
    fn a_corrupt_snapshot_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.bin"), b"RVMSTAT1garbagegarbage").unwrap();
        let (_, rec) = Persist::open(dir.path(), &Clock::system()).unwrap();
        assert_eq!(rec.log_id, None);
        assert!(dir.path().join("state.bin.corrupt").exists());
    }
}
