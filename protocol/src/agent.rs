//! The agent side of the link: applies entries exactly once and in order, acknowledges only
//! what the driver reports durable, tracks how fresh its view of the log is.
//!
//! One [`AgentSession`] lives as long as the agent process and spans many connections:
//! [`AgentSession::connect`] starts a link (queues the `Hello`), [`AgentSession::disconnected`]
//! ends it. The driver applies [`AgentEvent`]s to its revocation set, persists them, and then
//! calls [`AgentSession::mark_durable`]; only then is an ack sent (PROTOCOL.md §9.3).

use crate::codec::DecodeError;
use crate::frame::{
    Ack, BatchView, ErrorCode, ErrorFrame, Frame, Heartbeat, Hello, Limits, Resume, SnapshotChunk, Welcome,
    MAX_ENTRIES_PER_FRAME, MAX_VERSION, PROTOCOL_VERSION,
};
use crate::model::{Entry, EntryView, LogId, RevocationView};
use crate::time::Now;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Tunables of the agent side.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// How long to wait for more entries before acknowledging, so acks are cumulative.
    pub ack_delay: Duration,
    /// A link on which nothing arrives for this long is considered dead.
    pub idle_timeout: Duration,
    /// Most entries accepted in one snapshot transfer.
    pub max_snapshot_entries: usize,
    /// Highest link version offered in the `Hello` (tests of mixed versions offer an older
    /// one, and the session then refuses frames of later versions as an older agent would).
    pub max_version: u8,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            ack_delay: Duration::ZERO,
            idle_timeout: Duration::from_secs(20),
            max_snapshot_entries: 50_000_000,
            max_version: MAX_VERSION,
        }
    }
}

/// Longest silence an authority's heartbeat interval can stretch a link's idle timeout to.
pub const MAX_HEARTBEAT_IDLE: Duration = Duration::from_secs(3_600);

/// What the driver must do with its revocation set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentEvent {
    /// Apply these entries in order; afterwards the agent is at `to_seq` of `log_id`.
    Apply {
        /// The log.
        log_id: LogId,
        /// Entries with seqs in `(previous applied, to_seq]`, ascending.
        entries: ReceivedEntries,
        /// The new applied seq.
        to_seq: u64,
        /// Someone awaits these entries at the applied level (a `WaitedBatch`): once they are
        /// applied in memory, call [`AgentSession::mark_applied`] and send what it queues
        /// before writing them to disk.
        waited: bool,
    },
    /// Adopt a snapshot: apply these entries on top of the set in seq order, keeping what it
    /// holds (nothing enforced is dropped, PROTOCOL.md §9.9; see
    /// [`crate::set::RevocationSet::adopt`]); afterwards the agent is at `snapshot_seq` of `log_id`.
    Adopt {
        /// The log (may differ from the previous one: a resync).
        log_id: LogId,
        /// The seq the snapshot represents.
        snapshot_seq: u64,
        /// Every live entry.
        entries: Vec<Entry>,
        /// Withdrawals at or below this seq were applied before (same log): skip them.
        withdrawals_applied_upto: u64,
    },
    /// The authority's token bounds (link version 3), to enforce with the agent's own.
    Limits(Limits),
    /// The link should be closed; reconnect after `retry_after` when given.
    Disconnect {
        /// Hint from a go-away.
        retry_after: Option<Duration>,
        /// A newer link with this agent's id replaced this one: another live agent uses the
        /// same id (an operator error to report loudly).
        duplicate_id: bool,
        /// Why, for logs.
        reason: String,
    },
}

/// The entries of a batch the session accepted, with their texts copied into one string and
/// each field's place in it: one allocation per batch instead of one per identifier, no second
/// decoding and no second UTF-8 check (lending a text out checks only that its span falls on
/// character boundaries). [`ReceivedEntries::view`] lends them out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedEntries {
    texts: String,
    entries: Vec<EntrySpans>,
}

/// Where the text of one identifier lies in `texts`: start and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span(u32, u32);

/// An [`EntryView`] with its texts as spans of `texts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EntrySpans {
    seq: u64,
    created_at_ms: u64,
    expires_at: u64,
    reason: Option<Span>,
    revocation: RevocationSpans,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RevocationSpans {
    Jti { jti: Span, iss: Option<Span> },
    Subject { sub: Span, issued_before: u64 },
    Key { kid: Span },
    Session { sid: Span },
    Withdrawal { seq: u64, kind: crate::model::Kind, id: Span, iss: Option<Span> },
    ScopedSubject { id: Span, iss: Span, issued_before: u64 },
    ScopedSession { id: Span, iss: Span, issued_before: u64 },
}

impl ReceivedEntries {
    /// The entries of `batch` with a seq above `after`. (The session builds these; public for
    /// benchmarks of the agent's path.)
    pub fn new(batch: &BatchView<'_>, after: u64) -> Result<Self, DecodeError> {
        let kept = || batch.entries.iter().filter(|e| e.seq > after);
        let room = kept()
            .map(|e| {
                let id = match e.revocation {
                    RevocationView::Jti { jti, iss } => jti.len() + iss.map_or(0, str::len),
                    RevocationView::Subject { sub, .. } => sub.len(),
                    RevocationView::Key { kid } => kid.len(),
                    RevocationView::Session { sid } => sid.len(),
                    RevocationView::Withdrawal { id, iss, .. } => id.len() + iss.map_or(0, str::len),
                    RevocationView::ScopedSubject { id, iss, .. }
                    | RevocationView::ScopedSession { id, iss, .. } => id.len() + iss.len(),
                };
                id + e.reason.map_or(0, str::len)
            })
            .sum();
        let mut texts = String::with_capacity(room);
        let mut span = |s: &str| -> Result<Span, DecodeError> {
            let at = texts.len();
            texts.push_str(s);
            match (u32::try_from(at), u32::try_from(s.len())) {
                (Ok(a), Ok(n)) => Ok(Span(a, n)),
                _ => Err(DecodeError::Malformed("a batch's texts exceed 4 GiB".into())),
            }
        };
        let mut entries = Vec::with_capacity(batch.entries.len());
        for e in kept() {
            let revocation = match e.revocation {
                RevocationView::Jti { jti, iss } => {
                    RevocationSpans::Jti { jti: span(jti)?, iss: iss.map(&mut span).transpose()? }
                }
                RevocationView::Subject { sub, issued_before } => {
                    RevocationSpans::Subject { sub: span(sub)?, issued_before }
                }
                RevocationView::Key { kid } => RevocationSpans::Key { kid: span(kid)? },
                RevocationView::Session { sid } => RevocationSpans::Session { sid: span(sid)? },
                RevocationView::Withdrawal { seq, kind, id, iss } => RevocationSpans::Withdrawal {
                    seq,
                    kind,
                    id: span(id)?,
                    iss: iss.map(&mut span).transpose()?,
                },
                RevocationView::ScopedSubject { id, iss, issued_before } => {
                    RevocationSpans::ScopedSubject { id: span(id)?, iss: span(iss)?, issued_before }
                }
                RevocationView::ScopedSession { id, iss, issued_before } => {
                    RevocationSpans::ScopedSession { id: span(id)?, iss: span(iss)?, issued_before }
                }
            };
            entries.push(EntrySpans {
                seq: e.seq,
                created_at_ms: e.created_at_ms,
                expires_at: e.expires_at,
                reason: e.reason.map(&mut span).transpose()?,
                revocation,
            });
        }
        Ok(Self { texts, entries })
    }

    /// The entries, ascending. Every span was cut where a text began and ended, so this fails
    /// only if memory is corrupt; should it fail, hand the entries back with
    /// [`AgentSession::rewind`].
    pub fn view(&self) -> Result<Vec<EntryView<'_>>, DecodeError> {
        let text = |Span(a, n): Span| {
            let (a, n) = (a as usize, n as usize);
            self.texts.get(a..a + n).ok_or_else(|| DecodeError::Malformed("received entries changed".into()))
        };
        let mut out = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let revocation = match e.revocation {
                RevocationSpans::Jti { jti, iss } => {
                    RevocationView::Jti { jti: text(jti)?, iss: iss.map(text).transpose()? }
                }
                RevocationSpans::Subject { sub, issued_before } => {
                    RevocationView::Subject { sub: text(sub)?, issued_before }
                }
                RevocationSpans::Key { kid } => RevocationView::Key { kid: text(kid)? },
                RevocationSpans::Session { sid } => RevocationView::Session { sid: text(sid)? },
                RevocationSpans::Withdrawal { seq, kind, id, iss } => {
                    RevocationView::Withdrawal { seq, kind, id: text(id)?, iss: iss.map(text).transpose()? }
                }
                RevocationSpans::ScopedSubject { id, iss, issued_before } => {
                    RevocationView::ScopedSubject { id: text(id)?, iss: text(iss)?, issued_before }
                }
                RevocationSpans::ScopedSession { id, iss, issued_before } => {
                    RevocationView::ScopedSession { id: text(id)?, iss: text(iss)?, issued_before }
                }
            };
            out.push(EntryView {
                seq: e.seq,
                created_at_ms: e.created_at_ms,
                expires_at: e.expires_at,
                reason: e.reason.map(text).transpose()?,
                revocation,
            });
        }
        Ok(out)
    }
}

/// Rejection of a frame by the agent: send the error frame and close the link.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("protocol violation by authority: {}", .0.message)]
pub struct AgentViolation(pub ErrorFrame);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Disconnected,
    AwaitWelcome,
    AwaitSnapshot(LogId),
    Ready(LogId),
}

#[derive(Debug)]
struct Staging {
    snapshot_id: u64,
    next_index: u32,
    entries: Vec<Entry>,
}

/// Per-agent delivery state machine, agent side.
#[derive(Debug)]
pub struct AgentSession {
    cfg: AgentConfig,
    agent_id: String,
    agent_version: String,
    phase: Phase,
    /// The log `received` and `durable` refer to.
    log_id: Option<LogId>,
    /// Highest seq handed to the driver for application.
    received: u64,
    /// Highest seq the driver reported applied and persisted.
    durable: u64,
    ack_due: Option<Instant>,
    staging: Option<Staging>,
    /// When the authority was last known alive: a welcome (the answer to our hello) or a
    /// heartbeat, credited at the time it was sent as far as this agent can tell (see
    /// [`Self::credit_heartbeat`]), never at the time a frame that waited in a buffer was read.
    last_heard: Option<Instant>,
    /// This link's recent heartbeat offsets (our wall clock at receipt minus the authority's at
    /// sending, ms): their minimum is the clock offset plus the network's least delay.
    offsets: VecDeque<i64>,
    /// When this link's hello was sent.
    hello_at: Option<Instant>,
    /// This link's anchor: when its hello was sent, and the `unix_ms` of its first heartbeat
    /// (which the authority sends right after the welcome, so after the hello arrived); moved
    /// to the last credit when the authority's clock steps back.
    anchor: Option<(Instant, u64)>,
    /// The link's last heartbeat: its `unix_ms`, and when it was credited.
    last_beat: Option<(u64, Instant)>,
    last_frame: Option<Instant>,
    head_seq: u64,
    /// The head this agent knows it must reach before it may present itself as fresh: the head
    /// announced in the welcome, raised by heartbeats that announce more than one batch beyond
    /// what was received. Kept across link losses: a link lost while catching up leaves the
    /// agent behind.
    catch_up_to: u64,
    out: VecDeque<Frame>,
    events: VecDeque<AgentEvent>,
    /// Silence after which this link is given up: the configured limit, or 4 of the
    /// authority's heartbeats when that is longer (PROTOCOL.md §4, "Idle").
    idle_timeout: Duration,
    /// The version the current link's `Welcome` agreed.
    link_version: u8,
}

/// Heartbeats whose offsets the agent keeps to judge how late the next one is.
pub const HEARTBEAT_WINDOW: usize = 32;

impl AgentSession {
    /// A session resuming from persisted state `(log_id, applied_seq)`.
    pub fn new(
        agent_id: String,
        agent_version: String,
        log_id: Option<LogId>,
        applied_seq: u64,
        cfg: AgentConfig,
    ) -> Self {
        Self {
            agent_id,
            agent_version,
            phase: Phase::Disconnected,
            log_id,
            received: applied_seq,
            durable: applied_seq,
            ack_due: None,
            staging: None,
            last_heard: None,
            offsets: VecDeque::with_capacity(HEARTBEAT_WINDOW),
            hello_at: None,
            anchor: None,
            last_beat: None,
            last_frame: None,
            head_seq: 0,
            catch_up_to: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
            idle_timeout: cfg.idle_timeout,
            link_version: PROTOCOL_VERSION,
            cfg,
        }
    }

    /// The id this agent presents.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// The log the agent's state belongs to.
    pub fn log_id(&self) -> Option<LogId> {
        self.log_id
    }

    /// Highest seq applied (handed to the driver).
    pub fn applied_seq(&self) -> u64 {
        self.received
    }

    /// Highest seq the driver confirmed durable.
    pub fn durable_seq(&self) -> u64 {
        self.durable
    }

    /// The log head from the latest heartbeat or welcome.
    pub fn head_seq(&self) -> u64 {
        self.head_seq
    }

    /// The seq the agent knows exists and must apply before it may answer as fresh.
    pub fn catch_up_to(&self) -> u64 {
        self.catch_up_to
    }

    /// True while the agent knows of entries it has not applied beyond the ordinary in-flight
    /// batch (PROTOCOL.md, "Freshness"): its answers must then be those of a stale agent.
    pub fn is_behind(&self) -> bool {
        self.received < self.catch_up_to
    }

    /// True once a `Welcome` was accepted on the current link.
    pub fn is_connected(&self) -> bool {
        matches!(self.phase, Phase::AwaitSnapshot(_) | Phase::Ready(_))
    }

    /// When an authority was last known alive (the welcome, or a heartbeat credited when it was
    /// sent), on any link.
    pub fn last_heard(&self) -> Option<Instant> {
        self.last_heard
    }

    /// Time since an authority was last heard from; `None` if never in this process.
    pub fn staleness(&self, now: Now) -> Option<Duration> {
        self.last_heard.map(|t| now.mono.saturating_duration_since(t))
    }

    /// A new link is up: queue the `Hello`.
    pub fn connect(&mut self, now: Now) {
        self.phase = Phase::AwaitWelcome;
        self.staging = None;
        self.out.clear();
        self.ack_due = None;
        self.last_frame = Some(now.mono);
        self.idle_timeout = self.cfg.idle_timeout;
        self.link_version = PROTOCOL_VERSION;
        // The hello is an acknowledgement too: the authority resumes from it and counts it in
        // durable receipts. So the cursor presented is what is durable; entries applied in
        // memory but not yet written (a full disk) come again and are ignored as duplicates,
        // and are acknowledged once written (PROTOCOL.md §9.3).
        self.hello_at = Some(now.mono);
        self.anchor = None;
        self.last_beat = None;
        self.out.push_back(Frame::Hello(Hello {
            max_version: self.cfg.max_version.clamp(PROTOCOL_VERSION, MAX_VERSION),
            agent_id: self.agent_id.clone(),
            agent_version: self.agent_version.clone(),
            log_id: self.log_id,
            applied_seq: self.durable,
        }));
    }

    /// The link is gone.
    pub fn disconnected(&mut self) {
        self.phase = Phase::Disconnected;
        self.staging = None;
        self.out.clear();
        self.ack_due = None;
    }

    fn violation(&mut self, message: String) -> Result<(), AgentViolation> {
        self.disconnected();
        Err(AgentViolation(ErrorFrame::new(ErrorCode::Violation, message)))
    }

    /// Processes a batch frame that [`crate::codec::decode_view`] decoded, borrowed, from the
    /// received bytes. The event it queues holds the new entries' texts in one string.
    pub fn handle_batch(
        &mut self,
        batch: &BatchView<'_>,
        waited: bool,
        now: Now,
    ) -> Result<(), AgentViolation> {
        if self.phase == Phase::Disconnected {
            return Ok(());
        }
        self.last_frame = Some(now.mono);
        let version = crate::frame::batch_version(waited, &batch.entries);
        if version > self.link_version {
            return self
                .violation(format!("a version-{version} batch on a version-{} link", self.link_version));
        }
        match self.phase {
            Phase::AwaitWelcome => self.violation("frame before welcome".into()),
            // No freshness credit: a batch does not say when it was sent, and one that waited in
            // a buffer while this process was stopped proves nothing about now. Heartbeats,
            // which go out whatever the data, do.
            Phase::Ready(log_id) => self.on_batch(batch, log_id, now, waited),
            // A batch sent before the snapshot that replaces our state: useless now.
            Phase::AwaitSnapshot(_) | Phase::Disconnected => Ok(()),
        }
    }

    /// An owned batch frame (simulations, tests) takes the path of a received one, through its
    /// bytes.
    fn handle_owned_batch(&mut self, frame: &Frame, now: Now) -> Result<(), AgentViolation> {
        let waited = matches!(frame, Frame::WaitedBatch(_));
        let bytes = match crate::codec::encode(frame) {
            Ok(b) => b,
            Err(e) => return self.violation(format!("batch: {e}")),
        };
        match crate::codec::batch_view(&bytes) {
            Ok(batch) => self.handle_batch(&batch, waited, now),
            Err(e) => self.violation(format!("batch: {e}")),
        }
    }

    /// The driver could not apply the entries handed over after `applied` (see
    /// [`ReceivedEntries::view`]): they are taken again when they come again, as entries
    /// applied but not yet durable are after a reconnect.
    pub fn rewind(&mut self, applied: u64) {
        self.received = self.received.min(applied.max(self.durable));
    }

    /// Processes one frame from the authority.
    pub fn handle_frame(&mut self, frame: Frame, now: Now) -> Result<(), AgentViolation> {
        if self.phase == Phase::Disconnected {
            return Ok(());
        }
        if matches!(frame, Frame::Batch(_) | Frame::WaitedBatch(_)) {
            return self.handle_owned_batch(&frame, now);
        }
        self.last_frame = Some(now.mono);
        if !matches!(frame, Frame::Welcome(_)) && frame.version() > self.link_version {
            return self.violation(format!(
                "a version-{} {} frame on a version-{} link",
                frame.version(),
                frame.name(),
                self.link_version
            ));
        }
        match (frame, self.phase.clone()) {
            (Frame::Welcome(w), Phase::AwaitWelcome) => self.on_welcome(w, now),
            (Frame::Welcome(_), _) => self.violation("second welcome".into()),
            (Frame::GoAway(g), _) => {
                let mut retry_ms = g.retry_after_ms;
                if g.is_duplicate_id() {
                    retry_ms = retry_ms.max(crate::frame::DUPLICATE_ID_MIN_RETRY_MS);
                }
                self.events.push_back(AgentEvent::Disconnect {
                    retry_after: Some(Duration::from_millis(retry_ms)),
                    duplicate_id: g.is_duplicate_id(),
                    reason: format!("go-away: {}", g.reason),
                });
                self.disconnected();
                Ok(())
            }
            (Frame::Error(e), _) => {
                self.events.push_back(AgentEvent::Disconnect {
                    retry_after: None,
                    duplicate_id: false,
                    reason: format!("authority error {:?}: {}", e.code, e.message),
                });
                self.disconnected();
                Ok(())
            }
            (_, Phase::AwaitWelcome) => self.violation("frame before welcome".into()),
            (Frame::Heartbeat(h), _) => {
                self.credit_heartbeat(h.unix_ms, now);
                self.head_seq = self.head_seq.max(h.head_seq);
                // Entries announced beyond one batch past what arrived are not merely in
                // flight: the agent is behind until it has them.
                if h.head_seq > self.received + MAX_ENTRIES_PER_FRAME as u64 {
                    self.catch_up_to = self.catch_up_to.max(h.head_seq);
                }
                // Answer with our own heartbeat so the authority knows the link is alive even
                // while nothing is acknowledged (a long snapshot transfer).
                self.out
                    .push_back(Frame::Heartbeat(Heartbeat { head_seq: self.received, unix_ms: h.unix_ms }));
                Ok(())
            }
            // Handled above.
            (Frame::Batch(_) | Frame::WaitedBatch(_), _) => Ok(()),
            (Frame::SnapshotChunk(c), _) => self.on_chunk(c, now),
            (Frame::Limits(l), _) if self.link_version >= 3 => {
                self.events.push_back(AgentEvent::Limits(l));
                Ok(())
            }
            (f @ (Frame::Hello(_) | Frame::Ack(_) | Frame::Applied(_) | Frame::Limits(_)), _) => {
                self.violation(format!("unexpected {} frame from authority", f.name()))
            }
        }
    }

    /// Credits a heartbeat sent at the authority's `sent_ms`: at the time it arrived if it took
    /// no longer than the quickest recent one, else that much earlier. A heartbeat read late —
    /// it waited in a socket buffer while this process was stopped (SIGSTOP, a paused VM, a
    /// long swap storm) — is thus credited near when it was sent, and an agent whose authority
    /// went silent meanwhile goes stale on time (`--max-staleness` from the authority's
    /// silence, not from the agent's thaw). Clock steps make heartbeats look late (staler,
    /// fail closed) until the window of [`HEARTBEAT_WINDOW`] has moved past them.
    fn credit_heartbeat(&mut self, sent_ms: u64, now: Now) {
        let offset = now.unix_ms as i64 - sent_ms as i64;
        if self.offsets.len() == HEARTBEAT_WINDOW {
            self.offsets.pop_front();
        }
        self.offsets.push_back(offset);
        let least = self.offsets.iter().copied().min().unwrap_or(offset);
        let late = Duration::from_millis(offset.saturating_sub(least).max(0) as u64);
        // The anchor bounds it too: the first heartbeat was sent after our hello arrived, so
        // this one was sent no later than the hello plus the authority's time between the two.
        // (It also catches heartbeats that all waited: a link whose every heartbeat was read
        // late has no on-time offset to compare with.)
        // A heartbeat older than the last by the authority's clock means that clock stepped
        // back: this one was still sent after the last one, so the anchor moves to that one's
        // credit (never a credit later than the truth, and no stale link for the step's size).
        let hello = self.hello_at.unwrap_or(now.mono);
        if let Some((last_ms, credited)) = self.last_beat {
            if sent_ms < last_ms {
                self.anchor = Some((credited, sent_ms));
            }
        }
        let (h, first) = *self.anchor.get_or_insert((hello, sent_ms));
        let anchored = h + Duration::from_millis(sent_ms.saturating_sub(first));
        // (Later than the start of this process's clock: nothing to credit.)
        let Some(at) = now.mono.checked_sub(late) else { return };
        let at = at.min(anchored);
        self.last_beat = Some((sent_ms, at));
        self.last_heard = Some(self.last_heard.map_or(at, |h| h.max(at)));
    }

    fn on_welcome(&mut self, w: Welcome, now: Now) -> Result<(), AgentViolation> {
        if !(PROTOCOL_VERSION..=self.cfg.max_version.min(MAX_VERSION)).contains(&w.version) {
            return self.violation(format!("welcome with version {}", w.version));
        }
        // The welcome answers our hello: the authority was alive after the hello was sent, and
        // that is all it proves (it may have waited in a buffer while this process was stopped).
        let hello = self.hello_at.unwrap_or(now.mono).min(now.mono);
        self.last_heard = Some(self.last_heard.map_or(hello, |h| h.max(hello)));
        self.offsets.clear();
        self.anchor = None;
        self.last_beat = None;
        self.link_version = w.version;
        let beats = Duration::from_millis(w.heartbeat_ms.saturating_mul(4)).min(MAX_HEARTBEAT_IDLE);
        self.idle_timeout = self.cfg.idle_timeout.max(beats);
        self.head_seq = w.head_seq;
        // Behind until the announced head is applied (it may be lower after a log replacement).
        self.catch_up_to = w.head_seq;
        match w.resume {
            Resume::Incremental => {
                let ours = self.log_id.map_or(self.received == 0, |id| id == w.log_id);
                if !ours || self.received > w.head_seq {
                    return self.violation("incremental resume offered for a state not in this log".into());
                }
                self.log_id = Some(w.log_id);
                self.phase = Phase::Ready(w.log_id);
            }
            Resume::Snapshot => self.phase = Phase::AwaitSnapshot(w.log_id),
        }
        Ok(())
    }

    fn on_batch(
        &mut self,
        b: &BatchView<'_>,
        log_id: LogId,
        now: Now,
        waited: bool,
    ) -> Result<(), AgentViolation> {
        if b.log_id != log_id {
            return self.violation("batch for another log".into());
        }
        if b.to_seq <= self.received {
            // Duplicate: our ack may have been lost, so acknowledge again; the same for an
            // `Applied` report of entries applied but not yet durable.
            self.schedule_ack(now);
            if waited {
                self.mark_applied(b.to_seq);
            }
            return Ok(());
        }
        if b.from_seq > self.received + 1 {
            // Gap (a lost or reordered frame): drop it; the authority resends from our cursor.
            self.schedule_ack(now);
            return Ok(());
        }
        let entries = match ReceivedEntries::new(b, self.received) {
            Ok(e) => e,
            Err(e) => return self.violation(format!("batch: {e}")),
        };
        self.received = b.to_seq;
        self.head_seq = self.head_seq.max(b.to_seq);
        self.events.push_back(AgentEvent::Apply { log_id, entries, to_seq: b.to_seq, waited });
        Ok(())
    }

    fn on_chunk(&mut self, c: SnapshotChunk, now: Now) -> Result<(), AgentViolation> {
        let current = self.log_id == Some(c.log_id);
        let expected = match &self.phase {
            Phase::AwaitSnapshot(id) => *id == c.log_id,
            Phase::Ready(id) => *id == c.log_id,
            _ => false,
        };
        if !expected {
            return self.violation("snapshot for another log".into());
        }
        if matches!(self.phase, Phase::Ready(_)) && current && c.snapshot_seq <= self.received {
            // A retransmitted snapshot we already applied: re-acknowledge.
            self.schedule_ack(now);
            return Ok(());
        }
        let staging = match self.staging.take() {
            Some(s) if s.snapshot_id == c.snapshot_id && s.next_index == c.index => s,
            _ if c.index == 0 => Staging { snapshot_id: c.snapshot_id, next_index: 0, entries: Vec::new() },
            // A chunk of a transfer we did not see start (lost frame): wait for the resend.
            _ => return Ok(()),
        };
        let mut staging = staging;
        if staging.entries.len() + c.entries.len() > self.cfg.max_snapshot_entries {
            return self.violation("snapshot larger than max_snapshot_entries".into());
        }
        staging.entries.extend(c.entries);
        staging.next_index += 1;
        if !c.last {
            self.staging = Some(staging);
            return Ok(());
        }
        let withdrawals_applied_upto = if current { self.received } else { 0 };
        self.log_id = Some(c.log_id);
        self.received = c.snapshot_seq;
        // A resync may move the cursor backwards (another log); `durable` follows the driver.
        self.durable = self.durable.min(c.snapshot_seq);
        if !current {
            self.durable = 0;
        }
        self.head_seq = self.head_seq.max(c.snapshot_seq);
        self.phase = Phase::Ready(c.log_id);
        self.events.push_back(AgentEvent::Adopt {
            log_id: c.log_id,
            snapshot_seq: c.snapshot_seq,
            entries: staging.entries,
            withdrawals_applied_upto,
        });
        Ok(())
    }

    fn schedule_ack(&mut self, now: Now) {
        if self.ack_due.is_none() {
            self.ack_due = Some(now.mono + self.cfg.ack_delay);
        }
    }

    /// The driver applied and persisted everything up to `seq` (of the current log).
    pub fn mark_durable(&mut self, seq: u64, now: Now) {
        self.durable = seq.min(self.received);
        self.schedule_ack(now);
    }

    /// The driver applied everything up to `seq` in memory, not yet on disk, for a batch that
    /// was waited on: queues an `Applied` report, sent ahead of the durable ack. Nothing is
    /// reported beyond what was received, or what the durable ack already covers.
    pub fn mark_applied(&mut self, seq: u64) {
        let seq = seq.min(self.received);
        if let Phase::Ready(log_id) = self.phase {
            if seq > self.durable {
                self.out.push_back(Frame::Applied(Ack { log_id, applied_seq: seq }));
            }
        }
    }

    /// Acts on expired timers: a silent link is reported for reconnection.
    pub fn handle_timeout(&mut self, now: Now) {
        if self.phase == Phase::Disconnected {
            return;
        }
        if let Some(t) = self.last_frame {
            if now.mono.saturating_duration_since(t) >= self.idle_timeout {
                self.events.push_back(AgentEvent::Disconnect {
                    retry_after: None,
                    duplicate_id: false,
                    reason: "authority silent past the idle timeout".into(),
                });
                self.disconnected();
            }
        }
    }

    /// The next frame to send, if any.
    pub fn poll_transmit(&mut self, now: Now) -> Option<Frame> {
        if let Some(f) = self.out.pop_front() {
            return Some(f);
        }
        if let (Phase::Ready(log_id), Some(due)) = (&self.phase, self.ack_due) {
            if now.mono >= due {
                self.ack_due = None;
                return Some(Frame::Ack(Ack { log_id: *log_id, applied_seq: self.durable }));
            }
        }
        None
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<AgentEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] or [`Self::poll_transmit`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Disconnected {
            return None;
        }
        let idle = self.last_frame.map(|t| t + self.idle_timeout);
        match (idle, self.ack_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Batch;
    use crate::model::Revocation;

    // The protocol reads no clock; its tests start the monotonic axis at the real present.
    #[allow(clippy::disallowed_methods)]
    fn now() -> Now {
        Now { mono: Instant::now(), unix_ms: 0 }
    }

    fn welcome(head_seq: u64) -> Frame {
        Frame::Welcome(Welcome {
            version: PROTOCOL_VERSION,
            log_id: LogId([7; 16]),
            head_seq,
            heartbeat_ms: 1000,
            resume: Resume::Incremental,
        })
    }

    fn batch(from_seq: u64, to_seq: u64) -> Frame {
        Frame::Batch(Batch { log_id: LogId([7; 16]), from_seq, to_seq, entries: Vec::new() })
    }

    /// Received entries lend out exactly the texts of the entries above `after`, every kind and
    /// option, multi-byte UTF-8 and empty texts included.
    #[test]
    fn received_entries_lend_out_the_texts_they_were_given() {
        let entry = |seq: u64, reason: Option<&str>, revocation: Revocation| Entry {
            seq,
            created_at_ms: seq * 1_000,
            expires_at: u64::MAX - seq,
            reason: reason.map(str::to_owned),
            revocation,
        };
        let entries = vec![
            entry(1, Some("dropped"), Revocation::Jti { jti: "below-after".into(), iss: None }),
            entry(2, None, Revocation::Jti { jti: "ü€😀".into(), iss: Some("https://idp".into()) }),
            entry(3, Some("léak"), Revocation::Subject { sub: "alice".into(), issued_before: 99 }),
            entry(4, Some(""), Revocation::Key { kid: "k😀".into() }),
            entry(5, None, Revocation::Session { sid: "s-1".into() }),
            entry(6, None, Revocation::Jti { jti: "j".into(), iss: Some("€".into()) }),
        ];
        let bytes = crate::codec::encode(&Frame::Batch(Batch {
            log_id: LogId([7; 16]),
            from_seq: 1,
            to_seq: 6,
            entries: entries.clone(),
        }))
        .unwrap();
        let batch = crate::codec::batch_view(&bytes).unwrap();
        let received = ReceivedEntries::new(&batch, 1).unwrap();
        drop(bytes);
        let lent: Vec<Entry> = received.view().unwrap().iter().map(EntryView::to_entry).collect();
        assert_eq!(lent, entries[1..]);
    }

    /// A heartbeat read late — it waited in the socket buffer while the agent process was
    /// stopped — is credited near when the authority sent it, so an agent whose authority went
    /// silent meanwhile is stale on time; one read on time is credited at once. (Found by the
    /// soak, seed 1207: an agent thawed after its authorities froze answered OK for
    /// `--max-staleness` past its thaw, from heartbeats sent before the freeze.)
    #[test]
    fn a_heartbeat_read_late_is_credited_when_it_was_sent() {
        let t0 = now().mono;
        let at = |ms: u64, unix_ms: u64| Now { mono: t0 + Duration::from_millis(ms), unix_ms };
        let beat = |sent_ms: u64| Frame::Heartbeat(Heartbeat { head_seq: 0, unix_ms: sent_ms });
        // The authority's clock runs 40 s behind ours; the network takes 5 ms each way.
        let skew = 40_000;
        let mut s = AgentSession::new("a".into(), "v".into(), None, 0, AgentConfig::default());
        s.connect(at(0, 1_000_000));
        s.handle_frame(welcome(0), at(10, 1_000_010)).unwrap();
        assert_eq!(s.last_heard(), Some(t0), "a welcome proves the authority alive since the hello");
        // The first heartbeat comes right behind the welcome, then one a second.
        for k in 0..=3u64 {
            let sent = 1_000_005 - skew + k * 1000;
            s.handle_frame(beat(sent), at(k * 1000 + 10, sent + skew + 5)).unwrap();
            // Credited no later than the hello plus the authority's time since the first: 10 ms
            // on the safe side (the first heartbeat was sent 5 ms after the hello).
            assert_eq!(s.last_heard(), Some(t0 + Duration::from_millis(k * 1000)), "on time");
        }
        // Stopped from 3.1 s to 9 s; the heartbeat sent at 3.5 s is read at 9 s.
        let sent = 1_000_005 - skew + 3_500;
        s.handle_frame(beat(sent), at(9_000, 1_009_000)).unwrap();
        let heard = s.last_heard().unwrap();
        assert_eq!(heard, t0 + Duration::from_millis(3_500), "credited when it was sent, not when read");
        // A batch that waited as long proves nothing about now either.
        s.handle_frame(batch(1, 1), at(9_001, 1_009_001)).unwrap();
        assert_eq!(s.last_heard(), Some(heard));
        // The next heartbeat on time: fresh again.
        let sent = 1_000_005 - skew + 9_100;
        s.handle_frame(beat(sent), at(9_110, sent + skew + 5)).unwrap();
        assert_eq!(s.last_heard(), Some(t0 + Duration::from_millis(9_100)));
    }

    /// A link whose every heartbeat waited (the agent stopped right after its welcome, before
    /// reading any heartbeat on time) has no on-time offset to compare with; the anchor (the
    /// hello, and the first heartbeat's time) still credits each when it was sent. (Found by
    /// the soak, seed 1207, after the fix above: an agent stopped 0.4 s after a new link
    /// answered OK, fresh, for revocations accepted 6 s before, the moment it was thawed.)
    #[test]
    fn heartbeats_that_all_waited_are_credited_when_they_were_sent() {
        let t0 = now().mono;
        let at = |ms: u64, unix_ms: u64| Now { mono: t0 + Duration::from_millis(ms), unix_ms };
        let beat = |sent_ms: u64| Frame::Heartbeat(Heartbeat { head_seq: 0, unix_ms: sent_ms });
        let mut s = AgentSession::new("a".into(), "v".into(), None, 0, AgentConfig::default());
        s.connect(at(0, 1_000_000));
        s.handle_frame(welcome(0), at(10, 1_000_010)).unwrap();
        // Stopped from 0.1 s to 9 s: the first heartbeat (sent with the welcome) and those of
        // the next 2 s are all read at 9 s.
        for k in 0..=4u64 {
            s.handle_frame(beat(1_000_005 + k * 500), at(9_000 + k, 1_009_000 + k)).unwrap();
        }
        assert_eq!(
            s.last_heard(),
            Some(t0 + Duration::from_millis(2_000)),
            "credited as of the last one's sending, not at 9 s"
        );
        // Then on time, every 500 ms from 9 s, and at 12 s the authority's clock steps back a
        // minute: its heartbeats look late until newer ones fill the window, and then the link
        // is fresh again (the anchor moved with the step, by at most one interval).
        for k in 0..=46u64 {
            let real = 9_000 + k * 500;
            let sent = 1_000_005 + real - if real >= 12_000 { 60_000 } else { 0 };
            s.handle_frame(beat(sent), at(real + 10, 1_000_010 + real)).unwrap();
        }
        let last = t0 + Duration::from_millis(9_000 + 46 * 500 + 10);
        assert!(
            s.last_heard().is_some_and(|h| last.saturating_duration_since(h) < Duration::from_secs(1)),
            "fresh again after a clock step back: {:?} behind",
            s.last_heard().map(|h| last.saturating_duration_since(h))
        );
    }

    /// From the welcome until the announced head is applied, the agent knows it is behind.
    #[test]
    fn behind_from_the_welcome_until_the_announced_head() {
        let mut s = AgentSession::new("a".into(), "v".into(), None, 0, AgentConfig::default());
        assert!(!s.is_behind());
        s.connect(now());
        s.handle_frame(welcome(3_000), now()).unwrap();
        assert!(s.is_behind());
        s.handle_frame(batch(1, 256), now()).unwrap();
        assert!(s.is_behind(), "256 of 3,000 applied");
        s.handle_frame(batch(257, 3_000), now()).unwrap();
        assert!(!s.is_behind());
        // A heartbeat announcing the head while its batch is in flight is ordinary...
        s.handle_frame(Frame::Heartbeat(Heartbeat { head_seq: 3_010, unix_ms: 0 }), now()).unwrap();
        assert!(!s.is_behind());
        // ...one far beyond what arrived is not, and the link's loss does not end it.
        s.handle_frame(Frame::Heartbeat(Heartbeat { head_seq: 5_000, unix_ms: 0 }), now()).unwrap();
        assert!(s.is_behind());
        s.disconnected();
        assert!(s.is_behind());
    }

    /// Entries of every kind, with and without (empty or non-ASCII) optional texts.
    fn entry(seq: u64) -> Entry {
        let revocation = match seq % 4 {
            0 => Revocation::Jti { jti: format!("j{seq}"), iss: None },
            1 => Revocation::Jti { jti: format!("j{seq}"), iss: Some("https://idp.example/é".into()) },
            2 => Revocation::Subject { sub: format!("s{seq}"), issued_before: seq },
            _ if seq % 8 == 3 => Revocation::Key { kid: format!("k{seq}") },
            _ => Revocation::Session { sid: format!("sid-{seq}") },
        };
        let reason = [None, Some(String::new()), Some(format!("leaked ✓ {seq}"))][seq as usize % 3].clone();
        Entry { seq, created_at_ms: 1, expires_at: u64::MAX, reason, revocation }
    }

    fn full_batch(from_seq: u64, to_seq: u64) -> Frame {
        let entries = (from_seq..=to_seq).map(entry).collect();
        Frame::Batch(Batch { log_id: LogId([7; 16]), from_seq, to_seq, entries })
    }

    fn applied(s: &mut AgentSession) -> Vec<Entry> {
        match s.poll_event() {
            Some(AgentEvent::Apply { entries, .. }) => {
                entries.view().unwrap().iter().map(EntryView::to_entry).collect()
            }
            other => panic!("expected entries to apply, got {other:?}"),
        }
    }

    /// A received batch is handed over as its frame's bytes; its view holds exactly the entries
    /// not received before, also when a resent batch overlaps what arrived. Entries the driver
    /// could not apply are taken again once rewound.
    #[test]
    fn received_entries_are_those_past_what_arrived_before() {
        let mut s = AgentSession::new("a".into(), "v".into(), None, 0, AgentConfig::default());
        s.connect(now());
        s.handle_frame(welcome(8), now()).unwrap();
        s.handle_frame(full_batch(1, 5), now()).unwrap();
        assert_eq!(applied(&mut s), (1..=5).map(entry).collect::<Vec<_>>());
        s.handle_frame(full_batch(3, 8), now()).unwrap();
        assert_eq!(applied(&mut s), (6..=8).map(entry).collect::<Vec<_>>());
        s.handle_frame(full_batch(1, 8), now()).unwrap();
        assert_eq!(s.poll_event(), None, "a duplicate hands nothing over");
        s.mark_durable(5, now());
        s.rewind(6);
        s.handle_frame(full_batch(1, 8), now()).unwrap();
        assert_eq!(applied(&mut s), (7..=8).map(entry).collect::<Vec<_>>());
        // Never below what is durable: that is on disk.
        s.rewind(0);
        assert_eq!(s.applied_seq(), 5);
    }

    /// An authority with a long heartbeat (`--heartbeat 30s`) keeps its links: the agent waits
    /// 4 heartbeats of silence, as the authority does, when that is longer than its own limit.
    #[test]
    fn a_long_heartbeat_stretches_the_idle_timeout() {
        let t0 = now();
        let mut s = AgentSession::new("a".into(), "v".into(), None, 0, AgentConfig::default());
        s.connect(t0);
        let Frame::Welcome(w) = welcome(0) else { unreachable!() };
        s.handle_frame(Frame::Welcome(Welcome { heartbeat_ms: 30_000, ..w }), t0).unwrap();
        let quiet = t0.advance(Duration::from_secs(100));
        s.handle_timeout(quiet);
        assert_eq!(s.poll_event(), None, "closed between two heartbeats");
        assert!(s.poll_timeout().is_some_and(|t| t >= t0.mono + Duration::from_secs(120)));
        s.handle_timeout(t0.advance(Duration::from_secs(120)));
        assert!(matches!(s.poll_event(), Some(AgentEvent::Disconnect { .. })));
        // A heartbeat past any reason is bounded (an hour), never an overflow.
        s.connect(t0);
        s.handle_frame(Frame::Welcome(Welcome { heartbeat_ms: u64::MAX, ..w }), t0).unwrap();
        assert_eq!(s.poll_timeout(), Some(t0.mono + MAX_HEARTBEAT_IDLE));
        // A short heartbeat keeps the agent's own, longer limit; a new link starts from it.
        s.connect(t0);
        s.handle_frame(Frame::Welcome(Welcome { heartbeat_ms: 100, ..w }), t0).unwrap();
        s.handle_timeout(t0.advance(Duration::from_secs(19)));
        assert_eq!(s.poll_event(), None);
        s.handle_timeout(t0.advance(Duration::from_secs(20)));
        assert!(matches!(s.poll_event(), Some(AgentEvent::Disconnect { .. })));
    }

    fn drain(s: &mut AgentSession) -> Vec<Frame> {
        std::iter::from_fn(|| s.poll_transmit(now())).collect()
    }

    /// A waited batch is reported `Applied` once the driver applied it, ahead of the durable
    /// ack; an ordinary batch only ever gets the durable ack.
    #[test]
    fn waited_batches_are_reported_applied_before_the_durable_ack() {
        let log = LogId([7; 16]);
        let mut s = AgentSession::new("a".into(), "v".into(), None, 0, AgentConfig::default());
        s.connect(now());
        assert!(matches!(drain(&mut s).as_slice(), [Frame::Hello(h)] if h.max_version == MAX_VERSION));
        s.handle_frame(
            Frame::Welcome(Welcome {
                version: 2,
                ..match welcome(0) {
                    Frame::Welcome(w) => w,
                    _ => unreachable!(),
                }
            }),
            now(),
        )
        .unwrap();
        s.handle_frame(batch(1, 2), now()).unwrap();
        assert!(matches!(s.poll_event(), Some(AgentEvent::Apply { to_seq: 2, waited: false, .. })));
        s.handle_frame(
            Frame::WaitedBatch(Batch { log_id: log, from_seq: 3, to_seq: 3, entries: Vec::new() }),
            now(),
        )
        .unwrap();
        assert!(matches!(s.poll_event(), Some(AgentEvent::Apply { to_seq: 3, waited: true, .. })));
        s.mark_applied(3);
        assert_eq!(drain(&mut s), vec![Frame::Applied(Ack { log_id: log, applied_seq: 3 })]);
        s.mark_durable(3, now());
        assert_eq!(drain(&mut s), vec![Frame::Ack(Ack { log_id: log, applied_seq: 3 })]);
        // A resent waited batch already durable: the durable ack again, no report.
        s.handle_frame(
            Frame::WaitedBatch(Batch { log_id: log, from_seq: 3, to_seq: 3, entries: Vec::new() }),
            now(),
        )
        .unwrap();
        assert_eq!(drain(&mut s), vec![Frame::Ack(Ack { log_id: log, applied_seq: 3 })]);
        // Nothing is reported beyond what arrived.
        s.mark_applied(9);
        assert_eq!(drain(&mut s), vec![]);
    }

    /// Applied but not yet durable (a full disk): a new link presents only what is durable, so
    /// the authority neither skips nor counts the unwritten entries; when they come again they
    /// are duplicates, acknowledged at the durable cursor.
    #[test]
    fn a_new_link_presents_the_durable_cursor() {
        let mut s = AgentSession::new("a".into(), "v".into(), None, 0, AgentConfig::default());
        s.connect(now());
        drain(&mut s);
        s.handle_frame(welcome(0), now()).unwrap();
        s.handle_frame(batch(1, 2), now()).unwrap();
        s.mark_durable(2, now());
        s.handle_frame(batch(3, 5), now()).unwrap();
        assert!(matches!(s.poll_event(), Some(AgentEvent::Apply { to_seq: 2, .. })));
        assert!(matches!(s.poll_event(), Some(AgentEvent::Apply { to_seq: 5, .. })));
        s.disconnected();
        s.connect(now());
        assert!(matches!(drain(&mut s).as_slice(), [Frame::Hello(h)] if h.applied_seq == 2));
        s.handle_frame(welcome(5), now()).unwrap();
        s.handle_frame(batch(3, 5), now()).unwrap();
        assert_eq!(s.poll_event(), None, "entries applied before must not be applied again");
        assert_eq!(drain(&mut s), vec![Frame::Ack(Ack { log_id: LogId([7; 16]), applied_seq: 2 })]);
    }
}
