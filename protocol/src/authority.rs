//! The authority side of one agent link: cursor, in-flight window, acks, resends, snapshots.
//!
//! A driver (the tokio task in `revmesh-authority`, or a simulation) owns one
//! [`AuthoritySession`] per connected agent and loops:
//! feed received frames to [`AuthoritySession::handle_frame`], tell it about log growth with
//! [`AuthoritySession::update_log`], call [`AuthoritySession::handle_timeout`] when
//! [`AuthoritySession::poll_timeout`] is due, and send whatever
//! [`AuthoritySession::poll_transmit`] yields. The session never touches the log itself: it
//! asks for ranges ([`Transmit::Entries`]) so the driver can share one encoded frame among
//! every agent that needs the same range.

use crate::frame::{
    Ack, ErrorCode, ErrorFrame, Frame, GoAway, Heartbeat, Hello, Limits, Resume, Welcome,
    MAX_ENTRIES_PER_FRAME, MAX_VERSION, PROTOCOL_VERSION,
};
use crate::model::LogId;
use crate::time::{backoff, Jitter, Now};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Tunables of the authority side.
#[derive(Clone, Debug)]
pub struct AuthorityConfig {
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// First ack timeout; doubles (jittered) on each resend without progress.
    pub ack_timeout: Duration,
    /// Cap of the ack timeout backoff.
    pub max_ack_timeout: Duration,
    /// Most entries sent but not yet acknowledged.
    pub window: u64,
    /// A link from which nothing arrived for this long is closed.
    pub idle_timeout: Duration,
    /// The authority's `--max-token-ttl`, sent in a `Limits` frame on version-3 links.
    pub max_token_ttl: Duration,
}

impl Default for AuthorityConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(2),
            max_ack_timeout: Duration::from_secs(30),
            window: 16 * MAX_ENTRIES_PER_FRAME as u64,
            idle_timeout: Duration::from_secs(20),
            max_token_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// What the session knows about the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogView {
    /// The log's id.
    pub log_id: LogId,
    /// Entries with `seq <= floor` may have been compacted away; entries above it are all present
    /// unless expired. An agent whose cursor is below the floor gets a snapshot.
    pub floor: u64,
    /// Highest seq in the log.
    pub head: u64,
}

/// Something the driver must send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// A control frame, ready to encode.
    Frame(Frame),
    /// One `Batch` frame with every live entry in `from..=to` (at most
    /// [`MAX_ENTRIES_PER_FRAME`] seqs, aligned to blocks of that size so agents share frames).
    Entries {
        /// First seq.
        from: u64,
        /// Last seq.
        to: u64,
    },
    /// A snapshot of every live entry with `seq <= upto`, as `SnapshotChunk` frames with this id.
    Snapshot {
        /// Transfer id, to put in every chunk.
        snapshot_id: u64,
        /// The seq the snapshot represents.
        upto: u64,
    },
}

/// Something the driver may want to record (metrics, receipts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthorityEvent {
    /// The agent's cumulative ack advanced.
    Acked {
        /// New cursor.
        applied_seq: u64,
        /// Time from sending the newest acknowledged range to this ack, when known.
        latency: Option<Duration>,
    },
    /// The agent reported entries applied in memory (an `Applied` frame), ahead of its
    /// durable ack: receipts at the applied level may count it.
    Applied {
        /// Everything up to here is applied in memory.
        applied_seq: u64,
    },
    /// The ack timed out; sending restarts at `from`.
    Resend {
        /// First seq to be sent again.
        from: u64,
    },
}

/// Why a link is being closed by the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Close {
    /// The agent broke the protocol; send this error frame, then close.
    Violation(ErrorFrame),
    /// The agent sent an `Error` frame.
    PeerError(ErrorFrame),
    /// Nothing arrived for the idle timeout.
    Idle,
}

/// Rejection of a `Hello`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("hello rejected: {}", .0.message)]
pub struct HelloRejected(pub ErrorFrame);

/// Per-agent delivery state machine, authority side.
#[derive(Debug)]
pub struct AuthoritySession {
    cfg: AuthorityConfig,
    agent_id: String,
    /// The link version agreed in the `Welcome`.
    version: u8,
    log: LogView,
    /// Cumulative ack: everything `<= acked` is applied by the agent.
    acked: u64,
    /// Highest seq the agent reported applied in memory (`Applied`), possibly beyond `acked`.
    reported: u64,
    /// Next seq to send is `sent + 1`.
    sent: u64,
    /// Highest seq ever sent on this link (acks beyond it are violations).
    max_sent: u64,
    /// The agent's state is not a prefix of this log: a snapshot must replace it.
    resync: bool,
    snapshot_in_flight: bool,
    /// Data (batches, snapshots) waits: the driver has not granted this link a catch-up slot
    /// yet. The welcome and heartbeats still go out, so the agent knows how far behind it is
    /// and the link stays alive.
    held: bool,
    next_snapshot_id: u64,
    ack_deadline: Option<Instant>,
    attempts: u32,
    last_heard: Instant,
    next_heartbeat: Instant,
    /// `(last seq of a transmit, when it was sent)`, oldest first; bounded by the window.
    in_flight: VecDeque<(u64, Instant)>,
    out: VecDeque<Transmit>,
    events: VecDeque<AuthorityEvent>,
    closed: Option<Close>,
    rng: Jitter,
    /// The hello named a position this log never held (see [`Self::ahead_of_log`]).
    ahead: bool,
    /// Unix ms as of which the driver knows its view holds the whole log (see [`Self::vouch`]).
    vouched_ms: u64,
    /// The link's first heartbeat is still to go, right behind the welcome and ahead of any
    /// data: it anchors the agent's reading of later heartbeats' times (PROTOCOL.md §9 item 6).
    first_beat: bool,
}

impl AuthoritySession {
    /// Accepts an agent's `Hello` and queues the `Welcome`.
    ///
    /// The catch-up mode follows PROTOCOL.md §9.5: incremental from the agent's cursor when it comes from
    /// this log and its cursor is within `[floor, head]`, a snapshot otherwise.
    pub fn accept(
        hello: &Hello,
        log: LogView,
        cfg: AuthorityConfig,
        now: Now,
        seed: u64,
    ) -> Result<Self, HelloRejected> {
        if hello.max_version < PROTOCOL_VERSION {
            return Err(HelloRejected(ErrorFrame::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "agent speaks up to version {}, authority needs {PROTOCOL_VERSION}",
                    hello.max_version
                ),
            )));
        }
        let incremental = match hello.log_id {
            Some(id) => id == log.log_id && hello.applied_seq >= log.floor && hello.applied_seq <= log.head,
            None => hello.applied_seq == 0 && log.floor == 0,
        };
        // A position this log never held: a seq beyond its head, or entries of another log.
        // The store was restored from an older copy or replaced; the agent keeps what it
        // enforces (PROTOCOL.md §9.9) and the driver says so loudly.
        let ahead = match hello.log_id {
            Some(id) if id == log.log_id => hello.applied_seq > log.head,
            Some(_) => hello.applied_seq > 0,
            None => false,
        };
        let cursor = if incremental { hello.applied_seq } else { 0 };
        let mut s = Self {
            agent_id: hello.agent_id.clone(),
            version: hello.max_version.min(MAX_VERSION),
            log,
            acked: cursor,
            reported: cursor,
            sent: cursor,
            max_sent: cursor,
            resync: !incremental,
            snapshot_in_flight: false,
            held: false,
            next_snapshot_id: 1,
            ack_deadline: None,
            attempts: 0,
            last_heard: now.mono,
            next_heartbeat: now.mono + cfg.heartbeat,
            in_flight: VecDeque::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            closed: None,
            vouched_ms: u64::MAX,
            first_beat: true,
            rng: Jitter::new(seed),
            ahead,
            cfg,
        };
        s.out.push_back(Transmit::Frame(Frame::Welcome(Welcome {
            version: s.version,
            log_id: log.log_id,
            head_seq: log.head,
            heartbeat_ms: s.cfg.heartbeat.as_millis().max(1) as u64,
            resume: if incremental { Resume::Incremental } else { Resume::Snapshot },
        })));
        if s.version >= 3 {
            let max_token_ttl_secs = s.cfg.max_token_ttl.as_secs().max(1);
            s.out.push_back(Transmit::Frame(Frame::Limits(Limits { max_token_ttl_secs })));
        }
        Ok(s)
    }

    /// The agent id from the `Hello`.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// True when the agent's hello named a position this log never held: a seq beyond the
    /// head of this log, or applied entries of another log. The agent carries those entries
    /// forward; the authority's store lost or never had them.
    pub fn ahead_of_log(&self) -> bool {
        self.ahead
    }

    /// The link version agreed with the agent: 2 and above may carry `WaitedBatch` frames.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The agent's acknowledged cursor in this log (0 while a resync is pending).
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Entries the agent still has to acknowledge.
    pub fn lag(&self) -> u64 {
        self.log.head.saturating_sub(self.acked)
    }

    /// True when the agent must catch up far enough to need one of the driver's catch-up slots:
    /// more than four batches behind, or a fresh agent joining a log that has entries.
    pub fn needs_catch_up(&self) -> bool {
        self.lag() > 4 * MAX_ENTRIES_PER_FRAME as u64 || (self.acked == 0 && self.log.head > 0)
    }

    /// Holds (`true`) or releases data: while held, only control frames and heartbeats are
    /// sent. A driver holds a link while it waits for a catch-up slot (PROTOCOL.md §9.5).
    pub fn hold_data(&mut self, held: bool) {
        self.held = held;
    }

    /// The time (unix ms) as of which the driver knows its view of the log is complete: on a
    /// store shared by several replicas, the start of its last successful read of the store.
    /// Heartbeats carry it instead of the current time once it is older (PROTOCOL.md §9 item
    /// 6), so an agent credits freshness only as of what the authority itself knew: a replica
    /// cut from its store never makes its agents look fresh past revocations committed
    /// elsewhere. Never called: the current time (a sole writer's view is the log).
    pub fn vouch(&mut self, unix_ms: u64) {
        self.vouched_ms = unix_ms;
    }

    /// Why the session closed, once it has.
    pub fn closed(&self) -> Option<&Close> {
        self.closed.as_ref()
    }

    /// The log grew or was compacted.
    pub fn update_log(&mut self, log: LogView) {
        debug_assert_eq!(log.log_id, self.log.log_id);
        self.log.head = self.log.head.max(log.head);
        self.log.floor = self.log.floor.max(log.floor);
    }

    /// Processes one frame from the agent. An error means: send the returned frame (if any) and close.
    pub fn handle_frame(&mut self, frame: Frame, now: Now) -> Result<(), Close> {
        if let Some(c) = &self.closed {
            return Err(c.clone());
        }
        self.last_heard = now.mono;
        match frame {
            Frame::Ack(ack) => self.on_ack(ack, now),
            Frame::Applied(a) if self.version >= 2 => self.on_applied(a),
            // The agent's answer to our heartbeat: proof of life, nothing else.
            Frame::Heartbeat(_) => Ok(()),
            Frame::Error(e) => self.close(Close::PeerError(e)),
            other => self.close(Close::Violation(ErrorFrame::new(
                ErrorCode::UnexpectedFrame,
                format!("unexpected {} frame from agent", other.name()),
            ))),
        }
    }

    fn close(&mut self, why: Close) -> Result<(), Close> {
        self.closed = Some(why.clone());
        self.out.clear();
        Err(why)
    }

    /// The rules every cursor from the agent (`what`: an ack or an applied report) must keep:
    /// this log, and nothing beyond what was sent.
    fn check_cursor(&mut self, what: &str, a: &Ack) -> Result<(), Close> {
        if a.log_id != self.log.log_id {
            let msg = format!("{what} for another log");
            return self.close(Close::Violation(ErrorFrame::new(ErrorCode::Violation, msg)));
        }
        if a.applied_seq > self.max_sent {
            let msg = format!("{what} {} beyond last sent seq {}", a.applied_seq, self.max_sent);
            return self.close(Close::Violation(ErrorFrame::new(ErrorCode::Violation, msg)));
        }
        Ok(())
    }

    fn on_ack(&mut self, ack: Ack, now: Now) -> Result<(), Close> {
        self.check_cursor("ack", &ack)?;
        if ack.applied_seq <= self.acked && !(self.resync && ack.applied_seq == self.max_sent) {
            // Duplicate or stale ack: nothing new.
            return Ok(());
        }
        if self.resync {
            // Acks mean something again only once the snapshot that replaces the agent's
            // state has been applied.
            if !self.snapshot_in_flight || ack.applied_seq != self.max_sent {
                return Ok(());
            }
            self.resync = false;
            self.snapshot_in_flight = false;
        }
        self.acked = ack.applied_seq;
        self.sent = self.sent.max(self.acked);
        if self.acked >= self.max_sent {
            self.snapshot_in_flight = false;
        }
        let mut latency = None;
        while let Some(&(to, at)) = self.in_flight.front() {
            if to > self.acked {
                break;
            }
            latency = Some(now.mono.saturating_duration_since(at));
            self.in_flight.pop_front();
        }
        self.attempts = 0;
        self.ack_deadline =
            (self.acked < self.max_sent).then(|| now.mono + self.rng.jitter(self.cfg.ack_timeout));
        self.events.push_back(AuthorityEvent::Acked { applied_seq: self.acked, latency });
        Ok(())
    }

    /// An `Applied` report: checked like an ack, but it moves nothing the delivery depends on
    /// (the cursor, the window and resends follow durable acks only).
    fn on_applied(&mut self, a: Ack) -> Result<(), Close> {
        self.check_cursor("applied", &a)?;
        // During a resync the agent's old cursor means nothing in this log.
        if self.resync || a.applied_seq <= self.reported.max(self.acked) {
            return Ok(());
        }
        self.reported = a.applied_seq;
        self.events.push_back(AuthorityEvent::Applied { applied_seq: a.applied_seq });
        Ok(())
    }

    /// Acts on expired timers: idle close, ack timeout (go back to the cursor and resend).
    pub fn handle_timeout(&mut self, now: Now) {
        if self.closed.is_some() {
            return;
        }
        if now.mono.saturating_duration_since(self.last_heard) >= self.cfg.idle_timeout {
            let _ = self.close(Close::Idle);
            return;
        }
        if let Some(deadline) = self.ack_deadline {
            if now.mono >= deadline {
                // Go-back-N: everything after the cursor is sent again, snapshot included.
                self.sent = self.acked;
                self.snapshot_in_flight = false;
                self.in_flight.clear();
                self.attempts = self.attempts.saturating_add(1);
                self.ack_deadline = None;
                self.events.push_back(AuthorityEvent::Resend { from: self.acked + 1 });
            }
        }
    }

    /// The next thing to send, if any. Call until `None`.
    pub fn poll_transmit(&mut self, now: Now) -> Option<Transmit> {
        if self.closed.is_some() {
            return None;
        }
        if let Some(t) = self.out.pop_front() {
            return Some(t);
        }
        if std::mem::take(&mut self.first_beat) {
            self.next_heartbeat = now.mono + self.cfg.heartbeat;
            return Some(Transmit::Frame(Frame::Heartbeat(Heartbeat {
                head_seq: self.log.head,
                unix_ms: now.unix_ms.min(self.vouched_ms),
            })));
        }
        // Data first: a heartbeat announcing the head goes out after the batches that reach it,
        // so an agent never mistakes entries already on their way for entries it lacks
        // (PROTOCOL.md §9.7). While the window is full the heartbeat still goes out, and then
        // rightly tells the agent it is behind.
        if let Some(t) = self.poll_data(now) {
            return Some(t);
        }
        if now.mono >= self.next_heartbeat {
            self.next_heartbeat = now.mono + self.cfg.heartbeat;
            return Some(Transmit::Frame(Frame::Heartbeat(Heartbeat {
                head_seq: self.log.head,
                unix_ms: now.unix_ms.min(self.vouched_ms),
            })));
        }
        None
    }

    /// The next batch or snapshot to send, if the window allows one.
    fn poll_data(&mut self, now: Now) -> Option<Transmit> {
        if self.held {
            return None;
        }
        let needs_snapshot = self.resync || self.acked < self.log.floor;
        if needs_snapshot {
            if self.snapshot_in_flight || self.sent > self.acked {
                return None;
            }
            let snapshot_id = self.next_snapshot_id;
            self.next_snapshot_id += 1;
            self.snapshot_in_flight = true;
            self.sent = self.log.head;
            self.max_sent = self.max_sent.max(self.sent);
            self.arm(now, self.sent);
            return Some(Transmit::Snapshot { snapshot_id, upto: self.log.head });
        }
        if self.sent >= self.log.head {
            return None;
        }
        let from = self.sent + 1;
        let block = MAX_ENTRIES_PER_FRAME as u64;
        let block_end = (from - 1) / block * block + block;
        let to = self.log.head.min(block_end);
        if to > self.acked.saturating_add(self.cfg.window) {
            return None;
        }
        self.sent = to;
        self.max_sent = self.max_sent.max(to);
        self.arm(now, to);
        Some(Transmit::Entries { from, to })
    }

    fn arm(&mut self, now: Now, to: u64) {
        self.in_flight.push_back((to, now.mono));
        if self.ack_deadline.is_none() {
            let timeout = backoff(self.cfg.ack_timeout, self.attempts, self.cfg.max_ack_timeout);
            self.ack_deadline = Some(now.mono + self.rng.jitter(timeout));
        }
    }

    /// The next event for the driver, if any.
    pub fn poll_event(&mut self) -> Option<AuthorityEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        let idle = self.last_heard + self.cfg.idle_timeout;
        let mut t = idle.min(self.next_heartbeat);
        if let Some(d) = self.ack_deadline {
            t = t.min(d);
        }
        Some(t)
    }

    /// Asks the agent to leave (shutdown, overload); queued ahead of everything else.
    pub fn go_away(&mut self, retry_after: Duration, reason: &str) -> Frame {
        let mut reason = reason.to_owned();
        crate::frame::truncate_utf8(&mut reason, crate::frame::MAX_TEXT_BYTES);
        Frame::GoAway(GoAway { retry_after_ms: retry_after.as_millis() as u64, reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The protocol reads no clock; its tests start the monotonic axis at the real present.
    #[allow(clippy::disallowed_methods)]
    fn now0() -> Now {
        Now { mono: Instant::now(), unix_ms: 1_700_000_000_000 }
    }

    fn hello(log_id: Option<LogId>, applied_seq: u64) -> Hello {
        Hello { max_version: 1, agent_id: "a".into(), agent_version: "t".into(), log_id, applied_seq }
    }

    const LOG: LogId = LogId([1; 16]);

    /// An empty agent welcomed on an empty log, the welcome and first heartbeat taken.
    fn welcomed_on_an_empty_log() -> (Now, AuthoritySession) {
        let now = now0();
        let mut s = AuthoritySession::accept(
            &hello(Some(LOG), 0),
            LogView { log_id: LOG, floor: 0, head: 0 },
            AuthorityConfig::default(),
            now,
            1,
        )
        .unwrap();
        welcome_resume(&mut s, now);
        (now, s)
    }

    /// Takes the welcome and the heartbeat right behind it (ahead of any data).
    fn welcome_resume(s: &mut AuthoritySession, now: Now) -> Resume {
        let resume = match s.poll_transmit(now) {
            Some(Transmit::Frame(Frame::Welcome(w))) => w.resume,
            other => panic!("expected welcome, got {other:?}"),
        };
        match s.poll_transmit(now) {
            Some(Transmit::Frame(Frame::Heartbeat(h))) => assert_eq!(h.unix_ms, now.unix_ms),
            other => panic!("expected the first heartbeat right behind the welcome, got {other:?}"),
        }
        resume
    }

    /// Table: (hello log id, applied, floor, head) → catch-up mode.
    #[test]
    fn catch_up_mode_follows_cursor_and_log_id() {
        let other = LogId([2; 16]);
        let cases = [
            (Some(LOG), 5, 0, 10, Resume::Incremental),
            (Some(LOG), 10, 0, 10, Resume::Incremental),
            (Some(LOG), 11, 0, 10, Resume::Snapshot),
            (Some(LOG), 3, 5, 10, Resume::Snapshot),
            (Some(other), 5, 0, 10, Resume::Snapshot),
            (None, 0, 0, 10, Resume::Incremental),
            (None, 0, 3, 10, Resume::Snapshot),
        ];
        for (log_id, applied, floor, head, want) in cases {
            let now = now0();
            let mut s = AuthoritySession::accept(
                &hello(log_id, applied),
                LogView { log_id: LOG, floor, head },
                AuthorityConfig::default(),
                now,
                1,
            )
            .unwrap();
            assert_eq!(welcome_resume(&mut s, now), want, "{log_id:?} {applied} {floor} {head}");
        }
    }

    #[test]
    fn unacked_entries_are_resent_after_the_timeout() {
        let now = now0();
        let cfg = AuthorityConfig::default();
        let mut s = AuthoritySession::accept(
            &hello(Some(LOG), 0),
            LogView { log_id: LOG, floor: 0, head: 3 },
            cfg,
            now,
            1,
        )
        .unwrap();
        welcome_resume(&mut s, now);
        assert_eq!(s.poll_transmit(now), Some(Transmit::Entries { from: 1, to: 3 }));
        assert_eq!(s.poll_transmit(now), None);
        let later = now.advance(Duration::from_secs(3));
        s.handle_timeout(later);
        assert_eq!(s.poll_event(), Some(AuthorityEvent::Resend { from: 1 }));
        let _ = s.poll_transmit(later); // heartbeat may be due first
        s.handle_frame(Frame::Ack(Ack { log_id: LOG, applied_seq: 3 }), later).unwrap();
        assert!(matches!(s.poll_event(), Some(AuthorityEvent::Acked { applied_seq: 3, .. })));
    }

    /// A heartbeat vouches for the head only as of what the driver knows: once its view is older
    /// than now (a replica cut from its shared store), the heartbeat carries the view's time.
    #[test]
    fn heartbeats_carry_the_time_the_view_was_vouched_for() {
        let (now, mut s) = welcomed_on_an_empty_log();
        let beat = |s: &mut AuthoritySession, at: Now| loop {
            match s.poll_transmit(at) {
                Some(Transmit::Frame(Frame::Heartbeat(h))) => return h.unix_ms,
                Some(_) => continue,
                None => panic!("no heartbeat due"),
            }
        };
        let later = now.advance(Duration::from_secs(60));
        assert_eq!(beat(&mut s, later), later.unix_ms, "a sole writer vouches for now");
        let vouched = later.unix_ms - 7_000;
        s.vouch(vouched);
        let after = later.advance(Duration::from_secs(60));
        assert_eq!(beat(&mut s, after), vouched, "a view read 7 s ago vouches for 7 s ago");
        s.vouch(u64::MAX);
        let last = after.advance(Duration::from_secs(60));
        assert_eq!(beat(&mut s, last), last.unix_ms, "never later than now");
    }

    /// A heartbeat announcing a head comes after the batches that reach it, so an agent never
    /// takes entries already on their way for entries it lacks.
    #[test]
    fn heartbeats_follow_the_batches_they_announce() {
        let (now, mut s) = welcomed_on_an_empty_log();
        let later = now.advance(Duration::from_secs(60));
        s.update_log(LogView { log_id: LOG, floor: 0, head: 600 });
        let mut sent = Vec::new();
        while let Some(t) = s.poll_transmit(later) {
            sent.push(t);
        }
        assert!(
            matches!(sent.last(), Some(Transmit::Frame(Frame::Heartbeat(h))) if h.head_seq == 600),
            "{sent:?}"
        );
        assert_eq!(sent[..sent.len() - 1].last(), Some(&Transmit::Entries { from: 513, to: 600 }));
    }

    #[test]
    fn ack_beyond_sent_is_a_violation() {
        let now = now0();
        let mut s = AuthoritySession::accept(
            &hello(Some(LOG), 0),
            LogView { log_id: LOG, floor: 0, head: 3 },
            AuthorityConfig::default(),
            now,
            1,
        )
        .unwrap();
        let r = s.handle_frame(Frame::Ack(Ack { log_id: LOG, applied_seq: 2 }), now);
        assert!(matches!(r, Err(Close::Violation(_))));
        assert_eq!(s.poll_transmit(now), None);
    }

    fn accept_v(max_version: u8, head: u64) -> AuthoritySession {
        let h = Hello { max_version, ..hello(Some(LOG), 0) };
        AuthoritySession::accept(
            &h,
            LogView { log_id: LOG, floor: 0, head },
            AuthorityConfig::default(),
            now0(),
            1,
        )
        .unwrap()
    }

    /// The link speaks the lower of the two versions: a version-1 agent never gets frames
    /// it cannot read, and an agent from a later version is answered in ours.
    #[test]
    fn the_welcome_states_the_lower_version() {
        for (agent, want) in [(1, 1), (2, 2), (9, MAX_VERSION)] {
            let mut s = accept_v(agent, 0);
            assert_eq!(s.version(), want);
            match s.poll_transmit(now0()) {
                Some(Transmit::Frame(Frame::Welcome(w))) => assert_eq!(w.version, want),
                other => panic!("expected welcome, got {other:?}"),
            }
        }
    }

    /// `Applied` reports feed receipts at the applied level and nothing else: the cursor, the
    /// window and the resend timer follow durable acks only.
    #[test]
    fn applied_reports_move_no_cursor_and_stop_no_resend() {
        let now = now0();
        let mut s = accept_v(2, 3);
        welcome_resume(&mut s, now);
        assert_eq!(s.poll_transmit(now), Some(Transmit::Entries { from: 1, to: 3 }));
        s.handle_frame(Frame::Applied(Ack { log_id: LOG, applied_seq: 3 }), now).unwrap();
        assert_eq!(s.poll_event(), Some(AuthorityEvent::Applied { applied_seq: 3 }));
        assert_eq!(s.acked(), 0);
        // Stale or repeated reports say nothing new.
        s.handle_frame(Frame::Applied(Ack { log_id: LOG, applied_seq: 2 }), now).unwrap();
        assert_eq!(s.poll_event(), None);
        let later = now.advance(Duration::from_secs(3));
        s.handle_timeout(later);
        assert_eq!(s.poll_event(), Some(AuthorityEvent::Resend { from: 1 }));
        // Beyond what was sent, or for another log: a violation, as for acks.
        let r = s.handle_frame(Frame::Applied(Ack { log_id: LOG, applied_seq: 9 }), later);
        assert!(matches!(r, Err(Close::Violation(_))));
        let mut s = accept_v(2, 3);
        let r = s.handle_frame(Frame::Applied(Ack { log_id: LogId([2; 16]), applied_seq: 1 }), now);
        assert!(matches!(r, Err(Close::Violation(_))));
    }

    /// A held link gets its welcome and heartbeats, never data; released, it resumes where it
    /// would have started.
    #[test]
    fn a_held_link_gets_heartbeats_and_no_data_until_released() {
        for (applied, floor, want) in [
            (0, 0, Transmit::Entries { from: 1, to: 256 }),
            (0, 5, Transmit::Snapshot { snapshot_id: 1, upto: 3_000 }),
        ] {
            let now = now0();
            let view = LogView { log_id: LOG, floor, head: 3_000 };
            let mut s = AuthoritySession::accept(
                &hello(Some(LOG), applied),
                view,
                AuthorityConfig::default(),
                now,
                1,
            )
            .unwrap();
            assert!(s.needs_catch_up());
            s.hold_data(true);
            assert!(
                matches!(s.poll_transmit(now), Some(Transmit::Frame(Frame::Welcome(w))) if w.head_seq == 3_000)
            );
            assert!(
                matches!(s.poll_transmit(now), Some(Transmit::Frame(Frame::Heartbeat(h))) if h.head_seq == 3_000),
                "the first heartbeat goes right behind the welcome, held or not"
            );
            assert_eq!(s.poll_transmit(now), None);
            let mut t = now;
            for _ in 0..5 {
                // On hold past the idle timeout (20 s): the agent's answers to the heartbeats
                // keep the link alive.
                t = t.advance(Duration::from_secs(5));
                s.handle_timeout(t);
                assert!(
                    matches!(s.poll_transmit(t), Some(Transmit::Frame(Frame::Heartbeat(h))) if h.head_seq == 3_000)
                );
                assert_eq!(s.poll_transmit(t), None);
                s.handle_frame(Frame::Heartbeat(Heartbeat { head_seq: applied, unix_ms: 0 }), t).unwrap();
            }
            assert!(s.closed().is_none());
            s.hold_data(false);
            assert_eq!(s.poll_transmit(t), Some(want));
        }
        let s = accept_v(2, 4 * MAX_ENTRIES_PER_FRAME as u64);
        assert!(s.needs_catch_up(), "a fresh agent joining a log with entries");
        let view = LogView { log_id: LOG, floor: 0, head: 1_100 };
        let s = AuthoritySession::accept(&hello(Some(LOG), 100), view, AuthorityConfig::default(), now0(), 1)
            .unwrap();
        assert!(!s.needs_catch_up(), "1,000 behind: four batches, no slot needed");
    }

    /// On a version-1 link an `Applied` frame does not exist.
    #[test]
    fn applied_on_a_version_1_link_is_unexpected() {
        let now = now0();
        let mut s = accept_v(1, 3);
        welcome_resume(&mut s, now);
        let _ = s.poll_transmit(now);
        let r = s.handle_frame(Frame::Applied(Ack { log_id: LOG, applied_seq: 1 }), now);
        assert!(matches!(r, Err(Close::Violation(e)) if e.code == ErrorCode::UnexpectedFrame));
    }
}
