//! The state file (`state.bin`): reading either version (PROTOCOL.md §6).

use super::record::checksum;
use revmesh_protocol::codec::{decode_state, PersistedState, StateImageDecoder};
use revmesh_protocol::RevocationSet;
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// State file with the set as a bincode snapshot (read only; written by earlier versions).
pub(super) const MAGIC_V1: &[u8; 8] = b"RVMSTAT1";
/// State file with the `jti` table as laid out in memory, without issuer-scoped subjects and
/// sessions (read only; written by earlier versions).
pub(super) const MAGIC_V2: &[u8; 8] = b"RVMSTAT2";
/// The same layout, whose subjects and sessions may be issuer-scoped (`iss`, a space, the
/// identifier; PROTOCOL.md §6). A new magic so that an earlier version, which would take such
/// a key for an identifier no token has, sets the file aside instead of misreading it.
pub(super) const MAGIC: &[u8; 8] = b"RVMSTAT3";

/// A state file that fails its checksum, does not decode, or holds a table that breaks its
/// invariant.
pub(super) struct Damaged;

/// Reads a state file of either version: the set and where it stands; `Ok(None)` when there
/// is none. A version 2 file is parsed into its table as it is read (one pass, no second copy
/// of the file), its checksum computed on the way and checked before anything is used.
pub(super) fn read_state(
    path: &Path,
) -> std::io::Result<Result<Option<(RevocationSet, PersistedState)>, Damaged>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ok(None)),
        Err(e) => return Err(e),
    };
    let len = usize::try_from(f.metadata()?.len()).unwrap_or(usize::MAX);
    let mut head = [0u8; 16];
    if len < 16 || f.read_exact(&mut head).is_err() {
        return Ok(Err(Damaged));
    }
    let (magic, sum) = head.split_at(8);
    if magic == MAGIC_V1 {
        let mut body = Vec::new();
        f.read_to_end(&mut body)?;
        if sum != checksum(&body).to_le_bytes() {
            return Ok(Err(Damaged));
        }
        let Ok(mut state) = decode_state(&body) else { return Ok(Err(Damaged)) };
        return Ok(Ok(Some((RevocationSet::restore(std::mem::take(&mut state.set)), state))));
    }
    if magic != MAGIC && magic != MAGIC_V2 {
        return Ok(Err(Damaged));
    }
    let mut decoder = StateImageDecoder::new(len - 16);
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if decoder.feed(&buf[..n]).is_err() {
            return Ok(Err(Damaged));
        }
    }
    if sum != hasher.digest().to_le_bytes() {
        return Ok(Err(Damaged));
    }
    let Ok((mut state, table)) = decoder.finish() else { return Ok(Err(Damaged)) };
    match RevocationSet::from_image(std::mem::take(&mut state.set), table) {
        Ok(set) => Ok(Ok(Some((set, state)))),
        Err(_) => Ok(Err(Damaged)),
    }
}
