//! Crash-safe persistence of the agent's state under `--data-dir`: a compacted snapshot
//! (`state.bin`, replaced atomically) plus an append-only journal of applied batches
//! (`journal.bin`, fsynced before the ack). See PROTOCOL.md §6 for the layout.
//!
//! A torn or corrupt journal tail is cut off at the last good record; a corrupt snapshot is
//! moved aside and the agent starts empty (and so answers STALE until it has resynced).

use revmesh_protocol::codec::{decode, decode_state, encode, encode_state, PersistedState};
use revmesh_protocol::frame::{Batch, Frame};
use revmesh_protocol::{Entry, LogId};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"RVMSTAT1";
/// Journal size that triggers a new snapshot.
const JOURNAL_LIMIT: u64 = 8 << 20;
/// Largest journal record accepted when reading.
const MAX_RECORD: u32 = 2 << 20;

/// The persistence layer's failures.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Encoding failed.
    #[error("encoding state: {0}")]
    Encode(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io { path: path.to_owned(), source }
}

/// Open persistence files.
#[derive(Debug)]
pub struct Persist {
    dir: PathBuf,
    /// `<data-dir>/lock`, held exclusively for the life of the process: two agents on one
    /// data dir would interleave their journals.
    _lock: File,
    journal: File,
    journal_len: u64,
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

fn checksum(b: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(b)
}

impl Persist {
    /// Opens the directory, recovering the state it holds.
    pub fn open(dir: &Path) -> Result<(Self, Recovered), PersistError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
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
        let mut rec = Recovered::default();
        let mut state = PersistedState::default();
        let state_path = dir.join("state.bin");
        match std::fs::read(&state_path) {
            Ok(bytes) => match parse_state(&bytes) {
                Some(s) => state = s,
                None => {
                    let aside = dir.join("state.bin.corrupt");
                    let _ = std::fs::rename(&state_path, &aside);
                    rec.warnings.push(format!(
                        "{} is corrupt; moved to {}; starting empty",
                        state_path.display(),
                        aside.display()
                    ));
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&state_path)(e)),
        }
        rec.set = revmesh_protocol::RevocationSet::restore(state.set);
        (rec.log_id, rec.applied_seq) = (state.log_id, state.applied_seq);
        let journal_path = dir.join("journal.bin");
        let mut journal = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&journal_path)
            .map_err(io(&journal_path))?;
        let mut bytes = Vec::new();
        journal.read_to_end(&mut bytes).map_err(io(&journal_path))?;
        let now = crate::state::now_secs();
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
        if good < bytes.len() {
            rec.warnings.push(format!("journal: cut {} bytes of torn or corrupt tail", bytes.len() - good));
            journal.set_len(good as u64).map_err(io(&journal_path))?;
            journal.sync_all().map_err(io(&journal_path))?;
        }
        rec.heard_ms = std::fs::read_to_string(dir.join("heard")).ok().and_then(|s| s.trim().parse().ok());
        Ok((Self { dir: dir.to_owned(), _lock: lock, journal, journal_len: good as u64 }, rec))
    }

    /// Appends one applied batch and fsyncs it. Returns true when the journal should be compacted.
    pub fn append(
        &mut self,
        log_id: LogId,
        from_seq: u64,
        to_seq: u64,
        entries: &[Entry],
    ) -> Result<bool, PersistError> {
        let path = self.dir.join("journal.bin");
        let frame = Frame::Batch(Batch { log_id, from_seq, to_seq, entries: entries.to_vec() });
        let body = encode(&frame).map_err(|e| PersistError::Encode(e.to_string()))?;
        let mut rec = Vec::with_capacity(body.len() + 12);
        rec.extend_from_slice(&(body.len() as u32).to_le_bytes());
        rec.extend_from_slice(&checksum(&body).to_le_bytes());
        rec.extend_from_slice(&body);
        let written = self.journal.write_all(&rec).and_then(|()| self.journal.sync_data());
        if let Err(e) = written {
            // A full disk may have taken part of the record: cut it off, so the next record
            // does not land behind a torn one (which a restart would cut, with all after it).
            let _ = self.journal.set_len(self.journal_len);
            return Err(io(&path)(e));
        }
        self.journal_len += rec.len() as u64;
        Ok(self.journal_len > JOURNAL_LIMIT)
    }

    /// Writes a full snapshot atomically, then empties the journal.
    pub fn snapshot(&mut self, state: &PersistedState) -> Result<(), PersistError> {
        let body = encode_state(state).map_err(|e| PersistError::Encode(e.to_string()))?;
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
        self.journal.set_len(0).map_err(io(&jp))?;
        self.journal.sync_all().map_err(io(&jp))?;
        self.journal_len = 0;
        Ok(())
    }

    /// Records the time of the last contact with an authority (best effort, not fsynced).
    pub fn heard(&self, unix_ms: u64) {
        let _ = std::fs::write(self.dir.join("heard"), unix_ms.to_string());
    }
}

fn parse_state(bytes: &[u8]) -> Option<PersistedState> {
    let rest = bytes.strip_prefix(MAGIC)?;
    if rest.len() < 8 {
        return None;
    }
    let (sum, body) = rest.split_at(8);
    if sum != checksum(body).to_le_bytes() {
        return None;
    }
    decode_state(body).ok()
}

fn read_record(bytes: &[u8], pos: usize) -> Option<(Batch, usize)> {
    let head = bytes.get(pos..pos + 12)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let sum = u64::from_le_bytes(head[4..12].try_into().ok()?);
    let body = bytes.get(pos + 12..pos + 12 + len as usize)?;
    if checksum(body) != sum {
        return None;
    }
    match decode(body) {
        Ok(Frame::Batch(b)) => Some((b, pos + 12 + len as usize)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
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

    fn has(rec: &Recovered, seq: u64) -> bool {
        let j = format!("j{seq}");
        rec.set.check(&TokenRef { jti: Some(&j), ..Default::default() }).is_some()
    }

    /// Two agents on one data dir would interleave their journals: the second is refused
    /// while the first runs, and the dir is free again once it has stopped.
    #[test]
    fn a_data_dir_serves_one_agent_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = Persist::open(dir.path()).unwrap();
        let err = Persist::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("another running agent"), "{err}");
        drop(first);
        Persist::open(dir.path()).unwrap();
    }

    #[test]
    fn journal_and_snapshot_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogId([3; 16]);
        {
            let (mut p, rec) = Persist::open(dir.path()).unwrap();
            assert_eq!(rec.applied_seq, 0);
            p.append(log, 1, 2, &[entry(1), entry(2)]).unwrap();
            let mut set = RevocationSet::new();
            set.insert(&entry(1), 0);
            set.insert(&entry(2), 0);
            p.snapshot(&PersistedState { log_id: Some(log), applied_seq: 2, set: set.snapshot() }).unwrap();
            p.append(log, 3, 3, &[entry(3)]).unwrap();
            p.append(log, 4, 4, &[entry(4)]).unwrap();
        }
        // Tear the last record in half, as a crash mid-write would.
        let jp = dir.path().join("journal.bin");
        let len = std::fs::metadata(&jp).unwrap().len();
        OpenOptions::new().write(true).open(&jp).unwrap().set_len(len - 5).unwrap();
        let (_, rec) = Persist::open(dir.path()).unwrap();
        assert_eq!(rec.applied_seq, 3);
        assert_eq!(rec.log_id, Some(log));
        assert!(has(&rec, 1) && has(&rec, 3));
        assert!(!has(&rec, 4));
        assert_eq!(rec.warnings.len(), 1);
    }

    #[test]
    fn a_corrupt_snapshot_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.bin"), b"RVMSTAT1garbagegarbage").unwrap();
        let (_, rec) = Persist::open(dir.path()).unwrap();
        assert_eq!(rec.log_id, None);
        assert!(dir.path().join("state.bin.corrupt").exists());
    }
}
