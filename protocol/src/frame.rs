//! Frames of the authority–agent link (PROTOCOL.md §3).
//!
//! Frames are flat: no frame type contains itself, so decoding depth is bounded by the type
//! definitions rather than by the input.

use crate::model::{Entry, EntryView, LogId};
use serde::{Deserialize, Serialize};

/// The first link protocol version: the version byte of every frame it defines, in every
/// later version too (PROTOCOL.md §5).
pub const PROTOCOL_VERSION: u8 = 1;

/// The highest link protocol version this crate speaks. Version 2 adds [`Frame::WaitedBatch`]
/// and [`Frame::Applied`] (receipts at the applied level), carried with version byte 2 and
/// sent only on links whose `Welcome` says 2. Version 3 adds [`Frame::Limits`] and withdrawal
/// entries: a batch or snapshot chunk holding one is a version-3 frame (PROTOCOL.md §5).
/// Version 4 adds issuer-scoped `subject` and `session` entries (and their withdrawals): a
/// frame holding one is a version-4 frame.
pub const MAX_VERSION: u8 = 4;

/// Most entries the authority puts in one `Batch` or `SnapshotChunk`.
pub const MAX_ENTRIES_PER_FRAME: usize = 256;

/// Longest agent id accepted in a `Hello`.
pub const MAX_AGENT_ID_BYTES: usize = 128;

/// Longest free text (versions, reasons, error messages) carried by control frames.
pub const MAX_TEXT_BYTES: usize = 256;

/// One message on the link, either direction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// Agent → authority, first frame on a link.
    Hello(Hello),
    /// Authority → agent, answer to `Hello`.
    Welcome(Welcome),
    /// Authority → agent: consecutive entries.
    Batch(Batch),
    /// Agent → authority: cumulative acknowledgement.
    Ack(Ack),
    /// Authority → agent: liveness and the log head. The agent answers each one with its own
    /// `Heartbeat` (its applied seq in `head_seq`), so both sides see the link alive.
    Heartbeat(Heartbeat),
    /// Authority → agent: one part of a full-state snapshot.
    SnapshotChunk(SnapshotChunk),
    /// Authority → agent: please disconnect and come back later.
    GoAway(GoAway),
    /// Either direction: the sender is closing the link because of this error.
    Error(ErrorFrame),
    /// Authority → agent (version 2): a `Batch` holding an entry someone awaits at the applied
    /// level. The agent answers `Applied` as soon as the batch is applied in memory, ahead of
    /// its durable `Ack`.
    WaitedBatch(Batch),
    /// Agent → authority (version 2): cumulative, everything up to `applied_seq` is applied in
    /// memory and refuses its tokens, but may not be on disk yet. Only in answer to a
    /// `WaitedBatch`; the durable `Ack` still follows.
    Applied(Ack),
    /// Authority → agent (version 3), right after the `Welcome`: bounds the agent enforces on
    /// tokens so that no revocation lapses while a token it covers still verifies.
    Limits(Limits),
}

impl Frame {
    /// Short stable name of the frame type, for logs and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "hello",
            Frame::Welcome(_) => "welcome",
            Frame::Batch(_) => "batch",
            Frame::Ack(_) => "ack",
            Frame::Heartbeat(_) => "heartbeat",
            Frame::SnapshotChunk(_) => "snapshot_chunk",
            Frame::GoAway(_) => "go_away",
            Frame::Error(_) => "error",
            Frame::WaitedBatch(_) => "waited_batch",
            Frame::Applied(_) => "applied",
            Frame::Limits(_) => "limits",
        }
    }

    /// The link version that defines this frame, which is also its version byte on the wire.
    pub fn version(&self) -> u8 {
        let needed = |entries: &[Entry]| entries_version(entries.iter().map(|e| e.revocation.view()));
        match self {
            Frame::Batch(b) => needed(&b.entries),
            Frame::WaitedBatch(b) => needed(&b.entries).max(2),
            Frame::SnapshotChunk(c) => needed(&c.entries),
            Frame::Limits(_) => 3,
            Frame::Applied(_) => 2,
            _ => PROTOCOL_VERSION,
        }
    }
}

/// The version byte of a batch frame holding `entries`: 4 when one is issuer-scoped (a scoped
/// `subject` or `session`, or the withdrawal of one), 3 when one is a withdrawal (only version
/// 3 defines them), else 2 for a `WaitedBatch` and 1 for a `Batch`.
pub fn batch_version(waited: bool, entries: &[EntryView<'_>]) -> u8 {
    let needed = entries_version(entries.iter().map(|e| e.revocation));
    if waited {
        needed.max(2)
    } else {
        needed
    }
}

/// The highest [`crate::model::RevocationView::link_version`] of `revocations`, at least
/// [`PROTOCOL_VERSION`]: the version byte of a frame holding them.
pub fn entries_version<'a>(revocations: impl Iterator<Item = crate::model::RevocationView<'a>>) -> u8 {
    revocations.map(|r| r.link_version()).fold(PROTOCOL_VERSION, u8::max)
}

/// Authority → agent (version 3): the token bounds of this authority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The authority's `--max-token-ttl`, seconds: `subject` and `session` revocations lapse
    /// that long after they were made, so the agent refuses (`INVALID reason=lifetime`) a token
    /// meant to live longer, with its own limit if that is shorter.
    pub max_token_ttl_secs: u64,
}

/// Agent → authority: who I am and where I am in which log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Highest link protocol version the agent speaks.
    pub max_version: u8,
    /// Agent id (unique per agent; shown in receipts).
    pub agent_id: String,
    /// Software version, for `GET /v1/agents`.
    pub agent_version: String,
    /// The log the agent's state comes from, `None` for an empty agent.
    pub log_id: Option<LogId>,
    /// Highest seq the agent has applied from that log and made durable (0 for none): the
    /// authority resumes after it and counts it as acknowledged.
    pub applied_seq: u64,
}

/// How the authority will bring the agent up to date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resume {
    /// Batches follow from `applied_seq + 1`.
    Incremental,
    /// A snapshot follows and replaces the agent's whole set (cursor behind the compacted log,
    /// another `log_id`, or an agent ahead of the log).
    Snapshot,
}

/// Authority → agent: accepted; this is the log and how catch-up will happen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Version the link will speak.
    pub version: u8,
    /// The authority's log.
    pub log_id: LogId,
    /// Head of the log when the link was accepted.
    pub head_seq: u64,
    /// Interval at which heartbeats will arrive, milliseconds.
    pub heartbeat_ms: u64,
    /// Catch-up mode.
    pub resume: Resume,
}

/// Authority → agent: every live entry with a seq in `from_seq..=to_seq`.
///
/// Seqs in the range without an entry were expired and compacted away (PROTOCOL.md §9.2 allows
/// skipping them); after applying the batch the agent is at `to_seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The log these entries belong to.
    pub log_id: LogId,
    /// First seq covered.
    pub from_seq: u64,
    /// Last seq covered.
    pub to_seq: u64,
    /// Entries in strictly ascending seq order, each within `from_seq..=to_seq`.
    pub entries: Vec<Entry>,
}

/// A [`Batch`] borrowed from the bytes of a received frame (see
/// [`crate::codec::decode_view`]): the same fields and encoding, no allocation per entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // The fields are those of `Batch`.
pub struct BatchView<'a> {
    pub log_id: LogId,
    pub from_seq: u64,
    pub to_seq: u64,
    #[serde(borrow)]
    pub entries: Vec<EntryView<'a>>,
}

/// Agent → authority: every entry up to `applied_seq` is applied (and persisted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The log acknowledged.
    pub log_id: LogId,
    /// Cumulative: everything `<=` this is applied.
    pub applied_seq: u64,
}

/// Authority → agent: I am alive; the log head is here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Current head of the log.
    pub head_seq: u64,
    /// Authority wall clock, unix milliseconds. Agents never trust its absolute value (not for
    /// expiry, not for freshness); they compare heartbeats' offsets with each other to tell one
    /// that arrived late (PROTOCOL.md §9, item 6).
    pub unix_ms: u64,
}

/// Authority → agent: a part of a snapshot. Chunks of one snapshot share `snapshot_id`
/// and arrive with `index` 0, 1, 2, …; the one with `last` set completes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The log the snapshot is of.
    pub log_id: LogId,
    /// Distinguishes one snapshot transfer from a retried one.
    pub snapshot_id: u64,
    /// The seq the snapshot represents: after applying it the agent is at this seq.
    pub snapshot_seq: u64,
    /// Position of this chunk in the transfer.
    pub index: u32,
    /// True on the final chunk.
    pub last: bool,
    /// Live entries (any seq order is allowed, every seq `<= snapshot_seq`).
    pub entries: Vec<Entry>,
}

/// First word of a go-away's reason when a newer link with the same agent id replaced this one.
/// The agent logs an error naming its id and waits at least [`DUPLICATE_ID_MIN_RETRY_MS`]:
/// two live agents with one id then alternate every few seconds instead of in a tight loop.
pub const GOAWAY_DUPLICATE_ID: &str = "duplicate_id";
/// Least wait after a `duplicate_id` go-away, whatever the authority suggested.
pub const DUPLICATE_ID_MIN_RETRY_MS: u64 = 5_000;

/// Authority → agent: disconnect and reconnect after `retry_after_ms` (to this or another authority).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoAway {
    /// Suggested wait before reconnecting, milliseconds (already jittered by the authority).
    pub retry_after_ms: u64,
    /// Human-readable reason; its first word is machine-readable (e.g. [`GOAWAY_DUPLICATE_ID`]).
    pub reason: String,
}

impl GoAway {
    /// True when a newer link with the same agent id replaced this one.
    pub fn is_duplicate_id(&self) -> bool {
        self.reason.split([' ', ':']).next() == Some(GOAWAY_DUPLICATE_ID)
    }
}

/// Machine-readable error codes carried by `Error` frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The peer speaks a link version this side does not.
    UnsupportedVersion,
    /// A frame arrived that is not allowed in the current state.
    UnexpectedFrame,
    /// A frame could not be decoded.
    Malformed,
    /// A frame decoded but broke a rule (non-consecutive batch, ack beyond what was sent…).
    Violation,
    /// Credentials were missing or wrong.
    Unauthorized,
    /// Anything else.
    Internal,
}

/// Either direction: why the sender closes the link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// What went wrong.
    pub code: ErrorCode,
    /// Lowest and highest version the sender speaks (useful after `UnsupportedVersion`).
    pub supported: (u8, u8),
    /// Human-readable details.
    pub message: String,
}

impl ErrorFrame {
    /// An error frame carrying this crate's supported version range.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        truncate_utf8(&mut message, MAX_TEXT_BYTES);
        Self { code, supported: (PROTOCOL_VERSION, MAX_VERSION), message }
    }
}

/// Shortens `s` to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// Splits a snapshot of `entries` (every live entry up to `snapshot_seq`) into `SnapshotChunk`
/// frames of at most [`MAX_ENTRIES_PER_FRAME`] entries; an empty snapshot is one empty last chunk.
pub fn snapshot_chunks(log_id: LogId, snapshot_id: u64, snapshot_seq: u64, entries: &[Entry]) -> Vec<Frame> {
    let chunks: Vec<&[Entry]> =
        if entries.is_empty() { vec![&[]] } else { entries.chunks(MAX_ENTRIES_PER_FRAME).collect() };
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            Frame::SnapshotChunk(SnapshotChunk {
                log_id,
                snapshot_id,
                snapshot_seq,
                index: i as u32,
                last: i + 1 == n,
                entries: c.to_vec(),
            })
        })
        .collect()
}
