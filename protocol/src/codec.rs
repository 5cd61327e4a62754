//! The one place that knows the byte layout of a frame (PROTOCOL.md §2).
//!
//! A frame on the wire is `[version: u8] ++ bincode-2.0.1(Frame)` using bincode's standard
//! configuration (little-endian, variable-length integers) with a hard size limit. All use of
//! bincode in the workspace stays inside this module, so that another bincode-compatible
//! codec can replace it without touching any caller.
//!
//! Decoding is strict: a frame must be exactly one canonical encoding. Trailing bytes,
//! non-minimal integers or anything else that would re-encode differently are rejected, so
//! two different byte strings never mean the same frame.

mod batch_reader;

use crate::frame::{Batch, BatchView, Frame, MAX_VERSION, PROTOCOL_VERSION};
use crate::model::{Entry, EntryView, ValidationError};

/// Largest encoded frame accepted or produced, in bytes (version byte included).
pub const MAX_FRAME_BYTES: usize = 1 << 20;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_FRAME_BYTES>,
>;

fn config() -> Config {
    bincode::config::standard().with_limit::<MAX_FRAME_BYTES>()
}

/// Why bytes could not be turned into a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty frame")]
    Empty,
    /// The first byte names a link version this build does not speak.
    #[error("unsupported protocol version {0} (this side speaks {PROTOCOL_VERSION} to {MAX_VERSION})")]
    UnsupportedVersion(u8),
    /// The frame is larger than [`MAX_FRAME_BYTES`].
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size received.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not a valid encoding of a frame (unknown tag, truncated, bad UTF-8…).
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A valid frame was followed by extra bytes.
    #[error("{0} trailing bytes after the frame")]
    TrailingBytes(usize),
    /// The bytes decode, but are not the canonical encoding of what they decode to.
    #[error("non-canonical encoding")]
    NonCanonical,
    /// The frame decoded but its contents break a rule of PROTOCOL.md §3.
    #[error("invalid frame contents: {0}")]
    Invalid(#[from] FrameRuleError),
}

impl DecodeError {
    /// Stable short label for `frames_rejected_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Empty | DecodeError::Malformed(_) => "malformed",
            DecodeError::UnsupportedVersion(_) => "version",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::TrailingBytes(_) | DecodeError::NonCanonical => "non_canonical",
            DecodeError::Invalid(_) => "invalid",
        }
    }

    /// The code of the error frame a receiver closes the link with.
    pub fn error_code(&self) -> crate::frame::ErrorCode {
        match self {
            DecodeError::UnsupportedVersion(_) => crate::frame::ErrorCode::UnsupportedVersion,
            _ => crate::frame::ErrorCode::Malformed,
        }
    }
}

/// A rule of PROTOCOL.md §3 that a decoded frame breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameRuleError {
    /// An entry is not well-formed.
    #[error("entry: {0}")]
    Entry(#[from] ValidationError),
    /// More entries than [`crate::frame::MAX_ENTRIES_PER_FRAME`].
    #[error("too many entries in one frame")]
    TooManyEntries,
    /// Batch range is empty, or its entries are not ascending within it.
    #[error("batch range is empty or its entries are out of order or out of range")]
    BadRange,
    /// A snapshot entry is newer than the snapshot.
    #[error("snapshot entry beyond snapshot_seq")]
    SnapshotEntryBeyondSeq,
    /// A text field (agent id, version, message) is too long or empty where required.
    #[error("field `{0}` is empty or too long")]
    BadText(&'static str),
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoding would exceed [`MAX_FRAME_BYTES`].
    #[error("frame would exceed {MAX_FRAME_BYTES} bytes")]
    TooLarge,
    /// bincode refused the value (it should not for any `Frame`).
    #[error("encoding failed: {0}")]
    Other(String),
}

/// Encodes a frame: version byte (the version that defines the frame) followed by its bincode body.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, EncodeError> {
    encode_as(frame, frame.version())
}

/// A batch by reference, serialised as the owned `Frame::Batch` (variant index 2) or
/// `Frame::WaitedBatch` (index 8) is (PROTOCOL.md §3).
struct BatchFrame<'a, B>(u32, &'a B);

/// `Frame::Batch`'s variant index.
const BATCH_VARIANT: u32 = 2;
/// `Frame::WaitedBatch`'s variant index.
const WAITED_BATCH_VARIANT: u32 = 8;

impl<B: serde::Serialize> serde::Serialize for BatchFrame<'_, B> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let name = if self.0 == WAITED_BATCH_VARIANT { "WaitedBatch" } else { "Batch" };
        s.serialize_newtype_variant("Frame", self.0, name, self.1)
    }
}

/// The bytes of [`encode`]`(&Frame::Batch(batch))`, without copying the batch's entries into
/// a frame first (the agent's journal writes one such record per batch it applies).
pub fn encode_batch(batch: &Batch) -> Result<Vec<u8>, EncodeError> {
    let version = crate::frame::entries_version(batch.entries.iter().map(|e| e.revocation.view()));
    encode_as(&BatchFrame(BATCH_VARIANT, batch), version)
}

/// [`encode_batch`] for a borrowed batch: the same bytes.
pub fn encode_batch_view(batch: &BatchView<'_>) -> Result<Vec<u8>, EncodeError> {
    encode_as(&BatchFrame(BATCH_VARIANT, batch), crate::frame::batch_version(false, &batch.entries))
}

/// A frame decoded by [`decode_view`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A `Batch` (`waited: false`) or `WaitedBatch`, borrowed from the bytes.
    Batch {
        /// The batch.
        batch: BatchView<'a>,
        /// It was a `WaitedBatch`.
        waited: bool,
    },
    /// Any other frame, owned.
    Frame(Frame),
}

/// [`decode`], with the same checks, except that batches are borrowed from `bytes`: an agent
/// receives nearly every entry in a batch, and an owned one costs a string allocation (and its
/// free) per identifier.
pub fn decode_view(bytes: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let Some((variant, waited)) = batch_variant(bytes) else {
        return decode(bytes).map(Decoded::Frame);
    };
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    check_envelope(version, bytes.len())?;

    // The direct reader accepts only canonical bodies; whatever it declines goes through bincode
    // and the re-encoding check, which name the error (and accept what the reader was too
    // cautious to).
    let batch = match bytes.get(2..).and_then(batch_reader::read_batch) {
        Some(batch) => batch,
        None => {
            let batch = batch_view(bytes)?;
            let mut cmp = Compare { rest: body };
            let canonical =
                bincode::serde::encode_into_writer(BatchFrame(variant, &batch), &mut cmp, config()).is_ok()
                    && cmp.rest.is_empty();
            if !canonical {
                return Err(DecodeError::NonCanonical);
            }
            batch
        }
    };
    if version != crate::frame::batch_version(waited, &batch.entries) {
        return Err(DecodeError::NonCanonical);
    }
    check_batch(batch.from_seq, batch.to_seq, batch.entries.len(), batch.entries.iter().copied())?;
    Ok(Decoded::Batch { batch, waited })
}

/// The variant index of a batch frame and whether it is the waited kind; `None` for any other
/// frame. A variant index below 251 is one byte in bincode's varint encoding.
fn batch_variant(bytes: &[u8]) -> Option<(u32, bool)> {
    match bytes.get(1).map(|&b| u32::from(b)) {
        Some(BATCH_VARIANT) => Some((BATCH_VARIANT, false)),
        Some(WAITED_BATCH_VARIANT) => Some((WAITED_BATCH_VARIANT, true)),
        _ => None,
    }
}

/// The batch in the bytes of a batch frame, borrowed, through bincode, with only the
/// structural checks (no canonical-form or content rules): [`decode_view`]'s fallback, which
/// adds them, and owned batches re-read as bytes.
pub(crate) fn batch_view(bytes: &[u8]) -> Result<BatchView<'_>, DecodeError> {
    let body = bytes.get(2..).ok_or(DecodeError::Empty)?;
    if batch_variant(bytes).is_none() {
        return Err(DecodeError::Malformed("not a batch frame".into()));
    }
    let (batch, used): (BatchView<'_>, usize) = bincode::serde::borrow_decode_from_slice(body, config())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(DecodeError::TrailingBytes(body.len() - used));
    }
    Ok(batch)
}

fn encode_as(body: &impl serde::Serialize, version: u8) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(64);
    out.push(version);
    bincode::serde::encode_into_std_write(body, &mut out, config())
        .map_err(|e| EncodeError::Other(e.to_string()))?;
    if out.len() > MAX_FRAME_BYTES {
        return Err(EncodeError::TooLarge);
    }
    Ok(out)
}

/// Decodes exactly one frame from `bytes` and checks the rules of PROTOCOL.md §3.
pub fn decode(bytes: &[u8]) -> Result<Frame, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    check_envelope(version, bytes.len())?;
    let (frame, used): (Frame, usize) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(DecodeError::TrailingBytes(body.len() - used));
    }
    // Canonical form: re-encoding must give back the same bytes. This rejects non-minimal
    // varints and any other alternative spelling of the same frame. The encoding is compared
    // as it is produced, without building it.
    if frame.version() != version || !encodes_to(&frame, body) {
        return Err(DecodeError::NonCanonical);
    }
    validate(&frame)?;
    Ok(frame)
}

/// The version byte and the size, checked before anything else: a frame of another version is
/// never misread. A frame under the wrong one of our versions fails the canonical check.
fn check_envelope(version: u8, len: usize) -> Result<(), DecodeError> {
    if !(PROTOCOL_VERSION..=MAX_VERSION).contains(&version) {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    if len > MAX_FRAME_BYTES {
        return Err(DecodeError::TooLarge { len, max: MAX_FRAME_BYTES });
    }
    Ok(())
}

/// A bincode writer that checks each written piece against the expected bytes.
struct Compare<'a> {
    rest: &'a [u8],
}

impl bincode::enc::write::Writer for Compare<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        match self.rest.strip_prefix(bytes) {
            Some(rest) => {
                self.rest = rest;
                Ok(())
            }
            // Any error stops the encoder: the bytes differ, which is all the caller asks.
            None => Err(bincode::error::EncodeError::UnexpectedEnd),
        }
    }
}

/// True when `frame`'s body encodes to exactly `body`.
fn encodes_to(frame: &Frame, body: &[u8]) -> bool {
    let mut cmp = Compare { rest: body };
    bincode::serde::encode_into_writer(frame, &mut cmp, config()).is_ok() && cmp.rest.is_empty()
}

/// Encodes one log entry for storage (the authority's store, the agent's journal).
pub fn encode_entry(entry: &Entry) -> Result<Vec<u8>, EncodeError> {
    bincode::serde::encode_to_vec(entry, config()).map_err(|e| EncodeError::Other(e.to_string()))
}

/// Decodes one stored entry, with the same strictness as frames.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, DecodeError> {
    let (entry, used): (Entry, usize) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - used));
    }
    entry.validate().map_err(|e| DecodeError::Invalid(FrameRuleError::Entry(e)))?;
    Ok(entry)
}

/// Decodes one stored entry at the start of `bytes` and says how many bytes it used: a store
/// may keep fields of its own after it (the authority keeps who stored the entry).
pub fn decode_entry_prefix(bytes: &[u8]) -> Result<(Entry, usize), DecodeError> {
    let (entry, used): (Entry, usize) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    entry.validate().map_err(|e| DecodeError::Invalid(FrameRuleError::Entry(e)))?;
    Ok((entry, used))
}

/// Every value [`DecodeError::reason`] gives, for metrics exported at 0 from the start.
pub const DECODE_REASONS: &[&str] = &["malformed", "version", "too_large", "non_canonical", "invalid"];

/// Largest encoded revocation-set snapshot accepted from disk.
pub const MAX_SNAPSHOT_BYTES: usize = 1 << 32;

type SnapshotConfig = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_SNAPSHOT_BYTES>,
>;

fn snapshot_config() -> SnapshotConfig {
    bincode::config::standard().with_limit::<MAX_SNAPSHOT_BYTES>()
}

/// Encodes an agent's persisted state: log id, applied seq and set.
pub fn encode_state(state: &PersistedState) -> Result<Vec<u8>, EncodeError> {
    bincode::serde::encode_to_vec(state, snapshot_config()).map_err(|e| EncodeError::Other(e.to_string()))
}

/// Decodes an agent's persisted state.
pub fn decode_state(bytes: &[u8]) -> Result<PersistedState, DecodeError> {
    let (state, used): (PersistedState, usize) = bincode::serde::decode_from_slice(bytes, snapshot_config())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - used));
    }
    Ok(state)
}

/// Encodes an agent's state with its `jti` table as laid out (PROTOCOL.md §6, state file v2):
/// `capacity:u64 LE ++ mult:u64 LE ++ capacity × (hi:u64 LE, seq:u64 LE, lo:u32 LE,
/// expires_at:u32 LE) ++ bincode(PersistedState without jti digests)`.
pub fn encode_state_image(
    state: &PersistedState,
    table: &crate::set::TableImage,
) -> Result<Vec<u8>, EncodeError> {
    let rest = encode_state(state)?;
    let mut out = Vec::with_capacity(16 + table.slots.len() * SLOT_BYTES + rest.len());
    out.extend_from_slice(&(table.slots.len() as u64).to_le_bytes());
    out.extend_from_slice(&table.mult.to_le_bytes());
    for s in &table.slots {
        out.extend_from_slice(&s.hi.to_le_bytes());
        out.extend_from_slice(&s.seq.to_le_bytes());
        out.extend_from_slice(&s.lo.to_le_bytes());
        out.extend_from_slice(&s.expires_at.to_le_bytes());
    }
    out.extend_from_slice(&rest);
    Ok(out)
}

const SLOT_BYTES: usize = 24;

/// Decodes [`encode_state_image`]'s layout (the table is checked when it is adopted).
pub fn decode_state_image(bytes: &[u8]) -> Result<(PersistedState, crate::set::TableImage), DecodeError> {
    let mut d = StateImageDecoder::new(bytes.len());
    d.feed(bytes)?;
    d.finish()
}

/// [`decode_state_image`] fed in pieces (sans-IO: the caller reads), so a large state file is
/// parsed straight into its table while it is read, without a second copy of the whole file.
#[derive(Debug)]
pub struct StateImageDecoder {
    body_len: usize,
    header: Vec<u8>,
    capacity: Option<usize>,
    mult: u64,
    slots: Vec<crate::set::JtiSlot>,
    partial: Vec<u8>,
    rest: Vec<u8>,
}

fn slot_from(c: &[u8]) -> crate::set::JtiSlot {
    let mut b8 = [0u8; 8];
    let mut b4 = [0u8; 4];
    b8.copy_from_slice(&c[0..8]);
    let hi = u64::from_le_bytes(b8);
    b8.copy_from_slice(&c[8..16]);
    let seq = u64::from_le_bytes(b8);
    b4.copy_from_slice(&c[16..20]);
    let lo = u32::from_le_bytes(b4);
    b4.copy_from_slice(&c[20..24]);
    crate::set::JtiSlot { hi, seq, lo, expires_at: u32::from_le_bytes(b4) }
}

impl StateImageDecoder {
    /// A decoder for a body of `body_len` bytes (the file size bounds every allocation).
    pub fn new(body_len: usize) -> Self {
        Self {
            body_len,
            header: Vec::with_capacity(16),
            capacity: None,
            mult: 0,
            slots: Vec::new(),
            partial: Vec::with_capacity(SLOT_BYTES),
            rest: Vec::new(),
        }
    }

    /// The next bytes of the body.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), DecodeError> {
        if self.capacity.is_none() {
            let take = (16 - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.header.len() < 16 {
                return Ok(());
            }
            let mut b8 = [0u8; 8];
            b8.copy_from_slice(&self.header[0..8]);
            let capacity = u64::from_le_bytes(b8);
            b8.copy_from_slice(&self.header[8..16]);
            self.mult = u64::from_le_bytes(b8);
            let capacity = usize::try_from(capacity)
                .ok()
                .filter(|c| c.checked_mul(SLOT_BYTES).is_some_and(|n| n <= self.body_len.saturating_sub(16)))
                .ok_or_else(|| DecodeError::Malformed(format!("state image: {capacity} slots do not fit")))?;
            self.slots.reserve_exact(capacity);
            self.capacity = Some(capacity);
        }
        let capacity = self.capacity.unwrap_or(0);
        if self.slots.len() < capacity && !self.partial.is_empty() {
            let take = (SLOT_BYTES - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() == SLOT_BYTES {
                self.slots.push(slot_from(&self.partial));
                self.partial.clear();
            }
        }
        if self.slots.len() < capacity {
            let whole =
                ((capacity - self.slots.len()) * SLOT_BYTES).min(data.len() / SLOT_BYTES * SLOT_BYTES);
            self.slots.extend(data[..whole].chunks_exact(SLOT_BYTES).map(slot_from));
            data = &data[whole..];
            if self.slots.len() < capacity {
                self.partial.extend_from_slice(data);
                return Ok(());
            }
        }
        if self.rest.len() + data.len() > self.body_len {
            return Err(DecodeError::TrailingBytes(data.len()));
        }
        self.rest.extend_from_slice(data);
        Ok(())
    }

    /// The state and its table, once the whole body was fed.
    pub fn finish(self) -> Result<(PersistedState, crate::set::TableImage), DecodeError> {
        if self.capacity.is_none_or(|c| self.slots.len() < c) {
            return Err(DecodeError::Malformed("state image cut short".into()));
        }
        let state = decode_state(&self.rest)?;
        Ok((state, crate::set::TableImage { mult: self.mult, slots: self.slots }))
    }
}

/// What an agent keeps on disk between runs (PROTOCOL.md §6).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PersistedState {
    /// The log the state belongs to.
    pub log_id: Option<crate::model::LogId>,
    /// Highest applied seq.
    pub applied_seq: u64,
    /// The revocation set.
    pub set: crate::set::SetSnapshot,
}

fn check_text(field: &'static str, s: &str, max: usize, allow_empty: bool) -> Result<(), FrameRuleError> {
    if s.len() > max || (!allow_empty && s.is_empty()) {
        return Err(FrameRuleError::BadText(field));
    }
    Ok(())
}

/// The rules of a batch (PROTOCOL.md §3), owned or borrowed: a bounded number of valid
/// entries, ascending within a non-empty range.
fn check_batch<'a>(
    from_seq: u64,
    to_seq: u64,
    len: usize,
    entries: impl Iterator<Item = EntryView<'a>>,
) -> Result<(), FrameRuleError> {
    if len > crate::frame::MAX_ENTRIES_PER_FRAME {
        return Err(FrameRuleError::TooManyEntries);
    }
    if from_seq == 0 || from_seq > to_seq {
        return Err(FrameRuleError::BadRange);
    }
    let mut prev = from_seq - 1;
    for e in entries {
        e.validate()?;
        if e.seq <= prev || e.seq > to_seq {
            return Err(FrameRuleError::BadRange);
        }
        prev = e.seq;
    }
    Ok(())
}

/// The content rules of PROTOCOL.md §3, applied to every decoded frame.
pub fn validate(frame: &Frame) -> Result<(), FrameRuleError> {
    use crate::frame::{MAX_AGENT_ID_BYTES, MAX_ENTRIES_PER_FRAME, MAX_TEXT_BYTES};
    match frame {
        Frame::Hello(h) => {
            check_text("agent_id", &h.agent_id, MAX_AGENT_ID_BYTES, false)?;
            if h.agent_id.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(FrameRuleError::BadText("agent_id"));
            }
            check_text("agent_version", &h.agent_version, MAX_TEXT_BYTES, true)
        }
        Frame::Batch(b) | Frame::WaitedBatch(b) => {
            check_batch(b.from_seq, b.to_seq, b.entries.len(), b.entries.iter().map(Entry::view))
        }
        Frame::SnapshotChunk(c) => {
            if c.entries.len() > MAX_ENTRIES_PER_FRAME {
                return Err(FrameRuleError::TooManyEntries);
            }
            for e in &c.entries {
                e.validate()?;
                if e.seq > c.snapshot_seq {
                    return Err(FrameRuleError::SnapshotEntryBeyondSeq);
                }
            }
            Ok(())
        }
        Frame::Welcome(w) => {
            if w.heartbeat_ms == 0 {
                return Err(FrameRuleError::BadText("heartbeat_ms"));
            }
            Ok(())
        }
        Frame::GoAway(g) => check_text("reason", &g.reason, MAX_TEXT_BYTES, true),
        Frame::Error(e) => check_text("message", &e.message, MAX_TEXT_BYTES, true),
        Frame::Ack(_) | Frame::Applied(_) | Frame::Heartbeat(_) | Frame::Limits(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::*;
    use crate::model::*;

    fn batch(n: u64) -> Frame {
        Frame::Batch(Batch {
            log_id: LogId([7; 16]),
            from_seq: 1,
            to_seq: n,
            entries: (1..=n)
                .map(|seq| Entry {
                    seq,
                    created_at_ms: 1_700_000_000_000,
                    expires_at: 1_800_000_000,
                    reason: None,
                    revocation: Revocation::Jti { jti: format!("j{seq}"), iss: None },
                })
                .collect(),
        })
    }

    fn ack_bytes() -> Vec<u8> {
        encode(&Frame::Ack(Ack { log_id: LogId([1; 16]), applied_seq: 5 })).unwrap_or_default()
    }

    /// Table of hostile inputs: each must give the named error, quickly, without a large allocation.
    #[test]
    fn malformed_inputs_give_typed_errors() {
        let ack = ack_bytes();
        let mut trailing = ack.clone();
        trailing.push(0);
        // Variant index 3 (Ack), log id, then seq 5 spelled as a 3-byte varint (251 = u16 follows).
        let mut non_canonical = vec![PROTOCOL_VERSION, 3];
        non_canonical.extend_from_slice(&[1; 16]);
        non_canonical.extend_from_slice(&[251, 5, 0]);
        // Hello whose agent_id claims a length of u64::MAX.
        let mut huge_len = vec![PROTOCOL_VERSION, 0, 1, 253];
        huge_len.extend_from_slice(&u64::MAX.to_le_bytes());
        // Batch whose entries vector claims 2^60 elements.
        let mut huge_vec = vec![PROTOCOL_VERSION, 2];
        huge_vec.extend_from_slice(&[7; 16]);
        huge_vec.extend_from_slice(&[1, 2]);
        huge_vec.push(253);
        huge_vec.extend_from_slice(&(1u64 << 60).to_le_bytes());
        // Hello with an agent id that is not UTF-8.
        let bad_utf8 = vec![PROTOCOL_VERSION, 0, 1, 2, 0xff, 0xfe];
        // An oversized frame.
        let oversized = {
            let mut v = vec![PROTOCOL_VERSION];
            v.resize(MAX_FRAME_BYTES + 1, 0);
            v
        };
        // Batch with an entry outside its range.
        let gap = {
            let mut f = batch(2);
            if let Frame::Batch(b) = &mut f {
                b.entries[1].seq = 9;
            }
            encode(&f).unwrap_or_default()
        };

        // A version-2 frame under version byte 1, and a version-1 frame under byte 2: each
        // frame has exactly one version byte, the version that defines it.
        let applied =
            encode(&Frame::Applied(Ack { log_id: LogId([1; 16]), applied_seq: 5 })).unwrap_or_default();
        let v2_as_v1 = [&[PROTOCOL_VERSION][..], &applied[1..]].concat();
        let v1_as_v2 = [&[MAX_VERSION][..], &ack[1..]].concat();
        // The same for batches, which the agent decodes borrowed.
        let one = encode(&batch(1)).unwrap_or_default();
        let batch_as_v2 = [&[MAX_VERSION][..], &one[1..]].concat();
        let waited = match batch(1) {
            Frame::Batch(b) => encode(&Frame::WaitedBatch(b)).unwrap_or_default(),
            _ => Vec::new(),
        };
        let waited_as_v1 = [&[PROTOCOL_VERSION][..], &waited[1..]].concat();
        // Batch 1..=1 with its to_seq spelled as a 3-byte varint.
        let batch_non_canonical = [&one[..19], &[251, 1, 0], &one[20..]].concat();
        let mut batch_trailing = one.clone();
        batch_trailing.push(0);

        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "malformed"),
            ("version-2 frame as version 1", v2_as_v1, "non_canonical"),
            ("version-1 frame as version 2", v1_as_v2, "non_canonical"),
            ("unknown version", vec![MAX_VERSION + 1, 0, 0], "version"),
            ("version zero", vec![0], "version"),
            ("unknown tag", vec![PROTOCOL_VERSION, 200], "malformed"),
            ("truncated", ack[..ack.len() - 1].to_vec(), "malformed"),
            ("only version", vec![PROTOCOL_VERSION], "malformed"),
            ("trailing bytes", trailing, "non_canonical"),
            ("non-canonical varint", non_canonical, "non_canonical"),
            ("huge string length", huge_len, "malformed"),
            ("huge vec length", huge_vec, "malformed"),
            ("bad utf-8", bad_utf8, "malformed"),
            ("oversized", oversized, "too_large"),
            ("gap in batch", gap, "invalid"),
            ("batch as version 2", batch_as_v2, "non_canonical"),
            ("waited batch as version 1", waited_as_v1, "non_canonical"),
            ("batch with a non-canonical varint", batch_non_canonical, "non_canonical"),
            ("batch with trailing bytes", batch_trailing, "non_canonical"),
        ];
        assert_eq!(decode(&one), Ok(batch(1)), "the base of the batch cases is valid");
        for (name, input, reason) in cases {
            match decode(&input) {
                Ok(f) => panic!("{name}: decoded to {f:?}"),
                Err(e) => assert_eq!(e.reason(), reason, "{name}: {e}"),
            }
            match decode_view(&input) {
                Ok(f) => panic!("{name}: decoded borrowed to {f:?}"),
                Err(e) => assert_eq!(e.reason(), reason, "{name}, borrowed: {e}"),
            }
        }
    }

    #[test]
    fn unsupported_version_is_reported_as_such() {
        assert_eq!(decode(&[9, 1, 2, 3]), Err(DecodeError::UnsupportedVersion(9)));
    }

    #[test]
    fn encode_refuses_oversized_frames() {
        let mut f = batch(1);
        if let Frame::Batch(b) = &mut f {
            b.entries[0].reason = Some("x".repeat(MAX_FRAME_BYTES));
        }
        assert_eq!(encode(&f), Err(EncodeError::TooLarge));
    }

    #[test]
    fn version_2_frames_carry_byte_2_and_round_trip() {
        let Frame::Batch(b) = batch(3) else { return };
        for f in [Frame::WaitedBatch(b), Frame::Applied(Ack { log_id: LogId([1; 16]), applied_seq: 3 })] {
            let bytes = encode(&f).unwrap_or_default();
            assert_eq!(bytes.first(), Some(&2), "{}", f.name());
            assert_eq!(decode(&bytes), Ok(f));
        }
    }

    #[test]
    fn a_batch_encoded_by_reference_is_the_frame_byte_for_byte() {
        let f = batch(100);
        let Frame::Batch(b) = &f else { return };
        assert_eq!(encode_batch(b), encode(&f));
    }

    #[test]
    fn batch_round_trips() {
        let f = batch(100);
        let bytes = encode(&f).unwrap_or_default();
        assert_eq!(decode(&bytes), Ok(f));
    }
}
