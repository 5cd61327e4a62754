//! The journal's record format (PROTOCOL.md §6): length, checksum, an encoded batch.

use super::error::PersistError;
use revmesh_protocol::codec::{decode, encode_batch_view};
use revmesh_protocol::frame::{Batch, BatchView, Frame};

/// Largest journal record accepted when reading.
pub(super) const MAX_RECORD: u32 = 2 << 20;

/// One applied batch, encoded as the body of a journal record (PROTOCOL.md §6), with what the
/// link needs to know of it.
#[derive(Debug, Clone)]
pub struct JournalBatch {
    /// Its last seq.
    pub to_seq: u64,
    /// How many entries it holds.
    pub entries: usize,
    body: Vec<u8>,
}

impl JournalBatch {
    /// Encodes a batch, typically borrowed from the frame it arrived in.
    pub fn encode(batch: &BatchView<'_>) -> Result<Self, PersistError> {
        let body = encode_batch_view(batch).map_err(|e| PersistError::Encode(e.to_string()))?;
        Ok(Self { to_seq: batch.to_seq, entries: batch.entries.len(), body })
    }

    /// Bytes its journal record takes.
    pub(super) fn record_len(&self) -> usize {
        self.body.len() + 12
    }
}

/// Appends one journal record: length, checksum, encoded batch (PROTOCOL.md §6).
pub(super) fn push_record(buf: &mut Vec<u8>, batch: &JournalBatch) {
    buf.extend_from_slice(&(batch.body.len() as u32).to_le_bytes());
    buf.extend_from_slice(&checksum(&batch.body).to_le_bytes());
    buf.extend_from_slice(&batch.body);
}

pub(super) fn checksum(b: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(b)
}

/// The record at `pos` and where the next one starts; `None` for a torn or damaged record.
pub(super) fn read_record(bytes: &[u8], pos: usize) -> Option<(Batch, usize)> {
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
