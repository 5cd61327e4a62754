//! Deterministic simulation of one authority and many agents over faulty links.
//!
//! Everything runs on a fake clock from a seed: links drop, duplicate, delay and reorder
//! frames; links are cut; agents and the authority restart; the log is compacted; once in a
//! while the authority loses its log and starts a new one (store wiped) or goes back to an
//! earlier point of it (store restored from a backup); revocations are withdrawn. After every
//! event the invariants are checked, and after a quiet period every agent must have converged
//! to the log:
//!
//! - an agent applies entries strictly in seq order and never the same seq twice in one log
//!   (a log rolled back replays seqs it lost, as new entries);
//! - every applied entry is exactly the log's entry with that seq;
//! - authority-side cursors only move forward within a link;
//! - an `Applied` report never names a seq the agent has not applied;
//! - never OK for an applied, unexpired, unwithdrawn entry: once an agent applied an entry, its
//!   set refuses the entry's tokens until the entry expires or a withdrawal made after the
//!   entry lifts it, whatever happened to the log (checked every few steps and at the end);
//! - at the end every agent is at the head and its set holds exactly the log's live,
//!   unwithdrawn entries plus what it carried forward and still must enforce.
//!
//! Set `REVMESH_SIM_SEEDS=N` to run more seeds, `REVMESH_SIM_SEED=S` to replay one.

use revmesh_protocol::agent::{AgentConfig, AgentEvent, AgentSession};
use revmesh_protocol::authority::{AuthorityConfig, AuthorityEvent, AuthoritySession, LogView, Transmit};
use revmesh_protocol::frame::{snapshot_chunks, Batch, Frame, MAX_ENTRIES_PER_FRAME, MAX_VERSION};
use revmesh_protocol::time::{Jitter, Now};
use revmesh_protocol::{Entry, LogId, Revocation, RevocationSet, TokenRef};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

struct Rng(Jitter);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.0.next_u64() as f64 / u64::MAX as f64) < p
    }
}

#[derive(Clone, Copy)]
struct Faults {
    drop: f64,
    dup: f64,
    reorder: f64,
    cut: f64,
    agent_restart: f64,
    authority_restart: f64,
    compact: f64,
    revoke: f64,
    withdraw: f64,
    /// The authority comes back with its log rolled back to an earlier point (a restored backup).
    rollback: f64,
}

const QUIET: Faults = Faults {
    drop: 0.0,
    dup: 0.0,
    reorder: 0.0,
    cut: 0.0,
    agent_restart: 0.0,
    authority_restart: 0.0,
    compact: 0.0,
    revoke: 0.0,
    withdraw: 0.0,
    rollback: 0.0,
};

/// One direction of one link: frames with their delivery time; FIFO order is the tiebreak.
#[derive(Default)]
struct Wire {
    frames: Vec<(Instant, u64, Frame)>,
    /// Handshake frames are never overtaken (TCP would not let a batch pass the welcome).
    barrier: Option<Instant>,
}

struct Log {
    log_id: LogId,
    entries: BTreeMap<u64, Entry>,
    head: u64,
    floor: u64,
}

impl Log {
    fn view(&self) -> LogView {
        LogView { log_id: self.log_id, floor: self.floor, head: self.head }
    }

    /// The seqs withdrawn by entries up to `upto`.
    fn withdrawn(&self, upto: u64) -> std::collections::HashSet<u64> {
        let named = |e: &Entry| match &e.revocation {
            Revocation::Withdrawal(w) => Some(w.seq),
            _ => None,
        };
        self.entries.range(..=upto).filter_map(|(_, e)| named(e)).collect()
    }
}

struct Agent {
    session: AgentSession,
    set: RevocationSet,
    /// What survives a crash (persistence is synchronous with application in this model).
    persisted: (Option<LogId>, u64, RevocationSet),
    link: Option<u64>,
    reconnect_at: Option<Instant>,
    to_agent: Wire,
    to_auth: Wire,
    /// Highest seq applied per log (exactly-once, in-order check).
    applied: HashMap<LogId, u64>,
    applies: u64,
    /// Every entry this agent applied that it must still enforce, by target: until it expires
    /// or the agent applies a withdrawal of its target made at or after it.
    owed: HashMap<Revocation, Entry>,
}

struct Sim {
    rng: Rng,
    seed: u64,
    now: Now,
    log: Log,
    /// Every entry ever appended, per log, to check what agents apply.
    history: HashMap<(LogId, u64), Entry>,
    sessions: HashMap<usize, (u64, AuthoritySession, u64)>,
    /// Links whose data is held (waiting for a catch-up slot) until this instant.
    held: HashMap<usize, Instant>,
    /// Links held longer than the idle timeouts.
    long_holds: u64,
    agents: Vec<Agent>,
    authority_up_at: Option<Instant>,
    next_link: u64,
    order: u64,
    next_id: u64,
    resends: u64,
    /// `Applied` reports the authority received.
    reports: u64,
    snapshots: u64,
    logs_created: u64,
    rollbacks: u64,
    withdrawals: u64,
}

fn auth_cfg() -> AuthorityConfig {
    AuthorityConfig {
        heartbeat: Duration::from_millis(500),
        ack_timeout: Duration::from_millis(150),
        max_ack_timeout: Duration::from_secs(2),
        window: 4 * MAX_ENTRIES_PER_FRAME as u64,
        idle_timeout: Duration::from_secs(3),
        max_token_ttl: Duration::from_secs(3_600),
    }
}

/// Every fifth agent speaks link version 2, as agents not yet upgraded do: it is sent no
/// withdrawal (it keeps enforcing what they lift, wider) and no frame of version 3.
fn agent_cfg_for(i: usize) -> AgentConfig {
    // Agents not yet upgraded: every fifth on version 2 (no withdrawals), the next on version 3
    // (no issuer scope); the rest on the current version.
    let max_version = match i % 5 {
        0 => 2,
        1 => 3,
        _ => MAX_VERSION,
    };
    AgentConfig { max_version, ..agent_cfg() }
}

fn agent_cfg() -> AgentConfig {
    AgentConfig {
        ack_delay: Duration::from_millis(2),
        idle_timeout: Duration::from_secs(3),
        max_snapshot_entries: 1 << 20,
        max_version: MAX_VERSION,
    }
}

impl Sim {
    fn new(seed: u64, n_agents: usize) -> Self {
        let mut rng = Rng(Jitter::new(seed));
        let log_id = LogId(rng.0.next_u64().to_le_bytes().repeat(2).try_into().unwrap());
        // The fake clock's monotonic axis starts at the real present; it only moves by hand.
        #[allow(clippy::disallowed_methods)]
        let now = Now { mono: Instant::now(), unix_ms: 1_700_000_000_000 };
        let agents = (0..n_agents)
            .map(|i| Agent {
                session: AgentSession::new(format!("agent-{i}"), "sim".into(), None, 0, agent_cfg_for(i)),
                set: RevocationSet::new(),
                persisted: (None, 0, RevocationSet::new()),
                link: None,
                reconnect_at: Some(now.mono + Duration::from_millis(rng.below(200))),
                to_agent: Wire::default(),
                to_auth: Wire::default(),
                applied: HashMap::new(),
                applies: 0,
                owed: HashMap::new(),
            })
            .collect();
        Self {
            rng,
            seed,
            now,
            log: Log { log_id, entries: BTreeMap::new(), head: 0, floor: 0 },
            history: HashMap::new(),
            sessions: HashMap::new(),
            held: HashMap::new(),
            long_holds: 0,
            agents,
            authority_up_at: None,
            next_link: 1,
            order: 0,
            next_id: 0,
            resends: 0,
            reports: 0,
            snapshots: 0,
            logs_created: 1,
            rollbacks: 0,
            withdrawals: 0,
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!("simulation invariant broken (seed {}): {what}", self.seed)
    }

    fn send(&mut self, to_agent: bool, agent: usize, frame: Frame, f: &Faults) {
        // Handshake frames are not dropped, duplicated or overtaken: on a real stream their loss
        // is the loss of the link, which `cut` models.
        let handshake = matches!(frame, Frame::Hello(_) | Frame::Welcome(_));
        if !handshake && self.rng.chance(f.drop) {
            return;
        }
        let copies = if !handshake && self.rng.chance(f.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let mut delay = Duration::from_millis(1 + self.rng.below(20));
            let reordered = !handshake && self.rng.chance(f.reorder);
            if reordered {
                delay += Duration::from_millis(self.rng.below(100));
            }
            self.order += 1;
            let wire =
                if to_agent { &mut self.agents[agent].to_agent } else { &mut self.agents[agent].to_auth };
            let mut at = self.now.mono + delay;
            // Without a reorder fault a link is FIFO, like the TCP stream under a WebSocket.
            if let Some(b) = wire.barrier {
                at = at.max(b);
            }
            if handshake || !reordered {
                wire.barrier = Some(at);
            }
            wire.frames.push((at, self.order, frame.clone()));
        }
    }

    fn cut(&mut self, i: usize) {
        let a = &mut self.agents[i];
        a.session.disconnected();
        a.link = None;
        a.to_agent = Wire::default();
        a.to_auth = Wire::default();
        a.reconnect_at = Some(self.now.mono + Duration::from_millis(10 + self.rng.below(300)));
        self.sessions.remove(&i);
    }

    fn restart_agent(&mut self, i: usize) {
        self.cut(i);
        let a = &mut self.agents[i];
        let (log_id, seq, set) = &a.persisted;
        a.session = AgentSession::new(format!("agent-{i}"), "sim".into(), *log_id, *seq, agent_cfg_for(i));
        a.set = set.clone();
    }

    /// The authority comes back from a backup: its log as it was at an earlier head, restored
    /// as `revmesh-authority restore` does, under a new log id (PROTOCOL.md §9.9: a restored
    /// log reuses the seqs it lost, so it must not pass for the log agents followed).
    fn rollback(&mut self) {
        self.restart_authority(false);
        let back = self.rng.below(self.log.head.saturating_sub(self.log.floor) + 1);
        let head = self.log.head - back;
        self.log.entries.retain(|seq, _| *seq <= head);
        self.log.head = head;
        self.log.log_id = LogId(self.rng.0.next_u64().to_le_bytes().repeat(2).try_into().unwrap());
        for e in self.log.entries.values() {
            self.history.insert((self.log.log_id, e.seq), e.clone());
        }
        self.rollbacks += 1;
    }

    /// Withdraws one live entry of the log made before now (an operator undoing a revocation).
    fn withdraw(&mut self) {
        let now_ms = self.now.unix_ms;
        let withdrawn = self.log.withdrawn(u64::MAX);
        let candidates: Vec<&Entry> = self
            .log
            .entries
            .values()
            .filter(|e| {
                !e.revocation.is_withdrawal() && e.created_at_ms < now_ms && !withdrawn.contains(&e.seq)
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let target = candidates[self.rng.below(candidates.len() as u64) as usize].clone();
        self.log.head += 1;
        let Some(revocation) = target.revocation.withdrawal(target.seq) else { return };
        let e = Entry {
            seq: self.log.head,
            created_at_ms: now_ms,
            expires_at: target.expires_at,
            reason: Some("withdrawn".into()),
            revocation,
        };
        self.withdrawals += 1;
        self.history.insert((self.log.log_id, e.seq), e.clone());
        self.log.entries.insert(e.seq, e);
        self.push_log_view();
    }

    fn restart_authority(&mut self, new_log: bool) {
        for i in 0..self.agents.len() {
            self.cut(i);
        }
        self.authority_up_at = Some(self.now.mono + Duration::from_millis(50 + self.rng.below(500)));
        if new_log {
            // The authority lost its store: a new log with a new id; agents must resync.
            self.log.log_id = LogId(self.rng.0.next_u64().to_le_bytes().repeat(2).try_into().unwrap());
            self.log.entries.clear();
            self.log.head = 0;
            self.log.floor = 0;
            self.logs_created += 1;
        }
    }

    fn revoke(&mut self) {
        self.next_id += 1;
        let id = format!("x{}", self.next_id);
        let revocation = match self.rng.below(4) {
            0 | 1 => Revocation::Jti { jti: id, iss: self.rng.chance(0.5).then(|| "iss".to_string()) },
            2 => {
                let iss = self.rng.chance(0.5).then(|| "iss".to_string());
                Revocation::subject(id, self.now.unix_secs(), iss)
            }
            _ if self.rng.chance(0.5) => Revocation::Key { kid: id },
            _ => Revocation::session(id, self.rng.chance(0.5).then(|| "iss".to_string())),
        };
        let lifetime = if self.rng.chance(0.3) { 1 + self.rng.below(20) } else { 1_000_000 };
        self.log.head += 1;
        let e = Entry {
            seq: self.log.head,
            created_at_ms: self.now.unix_ms,
            expires_at: self.now.unix_secs() + lifetime,
            reason: None,
            revocation,
        };
        self.history.insert((self.log.log_id, e.seq), e.clone());
        self.log.entries.insert(e.seq, e);
        self.push_log_view();
    }

    fn compact(&mut self) {
        let keep = self.rng.below(300);
        let floor = self.log.head.saturating_sub(keep).max(self.log.floor);
        let now = self.now.unix_secs();
        self.log.entries.retain(|seq, e| *seq > floor || !e.is_expired(now));
        self.log.floor = floor;
        self.push_log_view();
    }

    fn push_log_view(&mut self) {
        let view = self.log.view();
        for (_, s, _) in self.sessions.values_mut() {
            s.update_log(view);
        }
    }

    fn step(&mut self, f: &Faults) {
        self.now = self.now.advance(Duration::from_millis(1 + self.rng.below(10)));
        let up = self.authority_up_at.is_none_or(|t| self.now.mono >= t);
        if up && self.rng.chance(f.revoke) {
            for _ in 0..1 + self.rng.below(3) {
                self.revoke();
            }
        }
        if up && self.rng.chance(f.withdraw) {
            self.withdraw();
        }
        if up && self.rng.chance(f.compact) {
            self.compact();
        }
        if self.rng.chance(f.rollback) {
            self.rollback();
        }
        if self.rng.chance(f.cut) {
            let i = self.rng.below(self.agents.len() as u64) as usize;
            self.cut(i);
        }
        if self.rng.chance(f.agent_restart) {
            let i = self.rng.below(self.agents.len() as u64) as usize;
            self.restart_agent(i);
        }
        if self.rng.chance(f.authority_restart) {
            // A quarter of the restarts lose the store (a new log): often enough that a few
            // seeds always try it, whatever else the random stream is spent on.
            let new_log = self.rng.chance(0.25);
            self.restart_authority(new_log);
        }
        for i in 0..self.agents.len() {
            self.step_agent(i, f, up);
        }
        if self.rng.chance(0.02) {
            self.check_owed();
        }
    }

    /// Never OK for an applied, unexpired, unwithdrawn entry.
    fn check_owed(&self) {
        let now = self.now.unix_secs();
        for (i, a) in self.agents.iter().enumerate() {
            for e in a.owed.values().filter(|e| !e.is_expired(now)) {
                if a.set.check(&token_for(&e.revocation)).is_none() {
                    self.fail(format!(
                        "agent {i} answers OK for entry {} ({:?}) it applied, unexpired and never withdrawn",
                        e.seq, e.revocation
                    ));
                }
            }
        }
    }

    fn step_agent(&mut self, i: usize, f: &Faults, up: bool) {
        let now = self.now;
        // Reconnect.
        if up && self.agents[i].link.is_none() && self.agents[i].reconnect_at.is_some_and(|t| now.mono >= t) {
            self.agents[i].reconnect_at = None;
            self.agents[i].link = Some(self.next_link);
            self.next_link += 1;
            self.agents[i].session.connect(now);
        }
        // Deliver due frames to the authority.
        for frame in due(&mut self.agents[i].to_auth, now.mono) {
            self.authority_receive(i, frame, now);
        }
        // Deliver due frames to the agent.
        for frame in due(&mut self.agents[i].to_agent, now.mono) {
            if self.agents[i].link.is_none() {
                break;
            }
            if let Err(v) = self.agents[i].session.handle_frame(frame, now) {
                self.fail(format!("agent {i} rejected an honest authority: {v}"));
            }
            self.agent_events(i);
        }
        // Timers.
        if self.agents[i].session.poll_timeout().is_some_and(|t| now.mono >= t) {
            self.agents[i].session.handle_timeout(now);
            self.agent_events(i);
        }
        if let Some((_, s, _)) = self.sessions.get_mut(&i) {
            if s.poll_timeout().is_some_and(|t| now.mono >= t) {
                s.handle_timeout(now);
            }
        }
        self.authority_events(i);
        // Transmit.
        while let Some(frame) = self.agents[i].session.poll_transmit(now) {
            self.send(false, i, frame, f);
        }
        let mut out = Vec::new();
        let mut version = 1;
        if let Some((_, s, _)) = self.sessions.get_mut(&i) {
            version = s.version();
            if self.held.get(&i).is_some_and(|&t| now.mono >= t) {
                self.held.remove(&i);
                s.hold_data(false);
            }
            while let Some(t) = s.poll_transmit(now) {
                out.push(t);
            }
            if s.closed().is_some() {
                self.cut(i);
                return;
            }
        }
        for t in out {
            for frame in self.materialise(t, version) {
                self.send(true, i, frame, f);
            }
        }
    }

    fn authority_receive(&mut self, i: usize, frame: Frame, now: Now) {
        let link = match self.agents[i].link {
            Some(l) => l,
            None => return,
        };
        if let Frame::Hello(h) = &frame {
            match AuthoritySession::accept(h, self.log.view(), auth_cfg(), now, self.rng.0.next_u64()) {
                Ok(mut s) => {
                    let acked = s.acked();
                    // A driver out of catch-up slots holds the link's data; some holds outlast
                    // both sides' idle timeouts, which the heartbeats must bridge.
                    self.held.remove(&i);
                    if (s.needs_catch_up() && self.rng.chance(0.5)) || self.rng.chance(0.1) {
                        let hold = Duration::from_millis(self.rng.below(6_000));
                        self.long_holds += u64::from(hold > auth_cfg().idle_timeout);
                        s.hold_data(true);
                        self.held.insert(i, now.mono + hold);
                    }
                    self.sessions.insert(i, (link, s, acked));
                }
                Err(e) => self.fail(format!("hello rejected: {e}")),
            }
            return;
        }
        let Some((l, s, _)) = self.sessions.get_mut(&i) else { return };
        if *l != link {
            return;
        }
        if let Err(close) = s.handle_frame(frame, now) {
            self.fail(format!("authority closed agent {i}'s link: {close:?}"));
        }
        self.authority_events(i);
    }

    fn authority_events(&mut self, i: usize) {
        let Some((_, s, last)) = self.sessions.get_mut(&i) else { return };
        while let Some(ev) = s.poll_event() {
            match ev {
                AuthorityEvent::Acked { applied_seq, .. } => {
                    if applied_seq < *last {
                        panic!("seed {}: cursor of agent {i} moved back {last} -> {applied_seq}", self.seed);
                    }
                    *last = applied_seq;
                }
                AuthorityEvent::Applied { applied_seq } => {
                    let applied = self.agents[i].applied.get(&self.log.log_id).copied().unwrap_or(0);
                    if applied_seq > applied {
                        panic!(
                            "seed {}: agent {i} reported {applied_seq} applied, it applied {applied}",
                            self.seed
                        );
                    }
                    self.reports += 1;
                }
                AuthorityEvent::Resend { .. } => self.resends += 1,
            }
        }
        if s.acked() > self.log.head {
            panic!("seed {}: cursor {} beyond head {}", self.seed, s.acked(), self.log.head);
        }
    }

    fn materialise(&mut self, t: Transmit, version: u8) -> Vec<Frame> {
        let log_id = self.log.log_id;
        // As the authority sends them: what the link cannot carry left out, scopes dropped
        // below version 4.
        let carried = |e: &Entry| -> Option<Entry> {
            let revocation = e.revocation.for_link(version)?.into_owned();
            Some(Entry { revocation, ..e.clone() })
        };
        match t {
            Transmit::Frame(f) => vec![f],
            Transmit::Entries { from, to } => {
                let entries = self.log.entries.range(from..=to).filter_map(|(_, e)| carried(e)).collect();
                let batch = Batch { log_id, from_seq: from, to_seq: to, entries };
                // Some ranges are awaited at the applied level.
                vec![if self.rng.chance(0.3) { Frame::WaitedBatch(batch) } else { Frame::Batch(batch) }]
            }
            Transmit::Snapshot { snapshot_id, upto } => {
                self.snapshots += 1;
                // As the authority does: a withdrawn entry is left out, its withdrawal goes in.
                let withdrawn = self.log.withdrawn(upto);
                let live: Vec<Entry> = self
                    .log
                    .entries
                    .range(..=upto)
                    .filter(|(seq, _)| !withdrawn.contains(seq))
                    .filter_map(|(_, e)| carried(e))
                    .collect();
                snapshot_chunks(log_id, snapshot_id, upto, &live)
            }
        }
    }

    fn agent_events(&mut self, i: usize) {
        let now = self.now;
        while let Some(ev) = self.agents[i].session.poll_event() {
            match ev {
                AgentEvent::Apply { log_id, entries, to_seq, waited } => {
                    let entries: Vec<Entry> = match entries.view() {
                        Ok(v) => v.iter().map(|e| e.to_entry()).collect(),
                        Err(e) => self.fail(format!("agent {i} cannot read entries it accepted: {e}")),
                    };
                    let a = &self.agents[i];
                    let prev = a.applied.get(&log_id).copied().unwrap_or(0);
                    if to_seq <= prev {
                        self.fail(format!("agent {i} asked to apply up to {to_seq} after {prev}"));
                    }
                    let mut last = prev;
                    for e in &entries {
                        if e.seq <= last {
                            self.fail(format!(
                                "agent {i} applies seq {} after {last} (duplicate or out of order)",
                                e.seq
                            ));
                        }
                        let version = agent_cfg_for(i).max_version;
                        let sent = self.history.get(&(log_id, e.seq)).and_then(|h| {
                            h.revocation
                                .for_link(version)
                                .map(|r| Entry { revocation: r.into_owned(), ..h.clone() })
                        });
                        if sent.as_ref() != Some(e) {
                            self.fail(format!(
                                "agent {i} applies an entry that is not the log's seq {}",
                                e.seq
                            ));
                        }
                        last = e.seq;
                    }
                    // Entries missing from the range must be expired (skipped by compaction).
                    for seq in prev + 1..=to_seq {
                        if !entries.iter().any(|e| e.seq == seq) {
                            let e = self
                                .history
                                .get(&(log_id, seq))
                                .unwrap_or_else(|| self.fail(format!("seq {seq} unknown")));
                            // An older agent is not sent what its link cannot carry.
                            let not_carried = e.revocation.for_link(agent_cfg_for(i).max_version).is_none();
                            if !e.is_expired(now.unix_secs()) && !not_carried {
                                self.fail(format!("agent {i} skipped live seq {seq}"));
                            }
                        }
                    }
                    let a = &mut self.agents[i];
                    for e in &entries {
                        a.set.insert(e, now.unix_secs());
                        owe(&mut a.owed, e, now.unix_secs());
                    }
                    a.applies += entries.len() as u64;
                    a.applied.insert(log_id, to_seq);
                    if waited {
                        a.session.mark_applied(to_seq);
                    }
                    a.persisted = (Some(log_id), to_seq, a.set.clone());
                    a.session.mark_durable(to_seq, now);
                }
                AgentEvent::Adopt { log_id, snapshot_seq, mut entries, withdrawals_applied_upto } => {
                    let a = &mut self.agents[i];
                    let prev = a.applied.get(&log_id).copied().unwrap_or(0);
                    if snapshot_seq < prev {
                        self.fail(format!("agent {i} snapshot {snapshot_seq} moves back from {prev}"));
                    }
                    a.set.adopt(&mut entries, withdrawals_applied_upto, now.unix_secs());
                    for e in &entries {
                        if !(e.revocation.is_withdrawal() && e.seq <= withdrawals_applied_upto) {
                            owe(&mut a.owed, e, now.unix_secs());
                        }
                    }
                    a.applied.insert(log_id, snapshot_seq);
                    a.persisted = (Some(log_id), snapshot_seq, a.set.clone());
                    a.session.mark_durable(snapshot_seq, now);
                }
                AgentEvent::Limits(_) => {}
                AgentEvent::Disconnect { retry_after, .. } => {
                    self.cut(i);
                    if let Some(d) = retry_after {
                        self.agents[i].reconnect_at = Some(now.mono + d);
                    }
                }
            }
        }
    }

    fn converged(&self) -> bool {
        self.agents.iter().all(|a| {
            a.session.log_id() == Some(self.log.log_id)
                && a.session.durable_seq() == self.log.head
                && self.sessions.values().any(|(_, s, _)| s.acked() == self.log.head)
        })
    }

    fn check_final(&mut self) {
        self.check_owed();
        let now = self.now.unix_secs();
        let withdrawn = self.log.withdrawn(u64::MAX);
        let live: Vec<&Entry> = self
            .log
            .entries
            .values()
            .filter(|e| !e.is_expired(now) && !e.revocation.is_withdrawal() && !withdrawn.contains(&e.seq))
            .collect();
        for (i, a) in self.agents.iter_mut().enumerate() {
            a.set.remove_expired(now);
            // What the agent must hold: the log's live entries and what it carries forward.
            // (In the agent's own terms: an older agent holds scoped entries unscoped.)
            let version = agent_cfg_for(i).max_version;
            let mut targets: std::collections::HashSet<Revocation> =
                live.iter().filter_map(|e| e.revocation.for_link(version)).map(|r| r.into_owned()).collect();
            targets.extend(a.owed.values().filter(|e| !e.is_expired(now)).map(|e| e.revocation.clone()));
            for e in &live {
                let t = token_for(&e.revocation);
                if a.set.check(&t).is_none() {
                    panic!("seed {}: agent {i} does not revoke live entry {}", self.seed, e.seq);
                }
            }
            if a.set.len() != targets.len() {
                panic!(
                    "seed {}: agent {i} holds {} revocations, it owes {} (the log's live ones: {})",
                    self.seed,
                    a.set.len(),
                    targets.len(),
                    live.len()
                );
            }
        }
    }
}

fn token_for(r: &Revocation) -> TokenRef<'_> {
    match r {
        Revocation::Jti { jti, iss } => {
            TokenRef { jti: Some(jti), iss: iss.as_deref(), ..Default::default() }
        }
        Revocation::Subject { sub, issued_before } => {
            TokenRef { sub: Some(sub), iat: Some(issued_before.saturating_sub(1)), ..Default::default() }
        }
        Revocation::Key { kid } => TokenRef { kid: Some(kid), ..Default::default() },
        Revocation::Session { sid } => TokenRef { sid: Some(sid), ..Default::default() },
        Revocation::ScopedSubject(x) => TokenRef {
            sub: Some(&x.id),
            iss: Some(&x.iss),
            iat: Some(x.issued_before.saturating_sub(1)),
            ..Default::default()
        },
        Revocation::ScopedSession(x) => {
            TokenRef { sid: Some(&x.id), iss: Some(&x.iss), ..Default::default() }
        }
        Revocation::Withdrawal(_) => TokenRef::default(),
    }
}

/// Records what applying `e` obliges an agent to enforce: a revocation is owed until it
/// expires; a withdrawal discharges a revocation of its target made at or before it.
fn owe(owed: &mut HashMap<Revocation, Entry>, e: &Entry, now: u64) {
    match &e.revocation {
        Revocation::Withdrawal(w) => {
            // By identifier, whatever the seq: it lifts copies carried from other logs too.
            let named = Revocation::Withdrawal(Box::new(revmesh_protocol::model::Withdrawn {
                seq: 0,
                ..(**w).clone()
            }));
            let target = owed.keys().find(|r| r.withdrawal(0).as_ref() == Some(&named)).cloned();
            if let Some(t) = target {
                if owed.get(&t).is_some_and(|o| o.created_at_ms <= e.created_at_ms) {
                    owed.remove(&t);
                }
            }
        }
        r if !e.is_expired(now) => {
            owed.insert(r.clone(), e.clone());
        }
        _ => {}
    }
}

fn due(wire: &mut Wire, now: Instant) -> Vec<Frame> {
    let mut ready: Vec<(Instant, u64, Frame)> = Vec::new();
    let mut i = 0;
    while i < wire.frames.len() {
        if wire.frames[i].0 <= now {
            ready.push(wire.frames.swap_remove(i));
        } else {
            i += 1;
        }
    }
    ready.sort_by_key(|(at, order, _)| (*at, *order));
    ready.into_iter().map(|(_, _, f)| f).collect()
}

struct Outcome {
    head: u64,
    revocations: u64,
    resends: u64,
    reports: u64,
    snapshots: u64,
    applies: u64,
    logs: u64,
    long_holds: u64,
    rollbacks: u64,
    withdrawals: u64,
}

fn run(seed: u64, n_agents: usize, steps: usize) -> Outcome {
    let faults = Faults {
        drop: 0.02,
        dup: 0.02,
        reorder: 0.05,
        cut: 0.01,
        agent_restart: 0.004,
        authority_restart: 0.0015,
        compact: 0.01,
        revoke: 0.5,
        withdraw: 0.05,
        rollback: 0.0005,
    };
    let mut sim = Sim::new(seed, n_agents);
    for _ in 0..steps {
        sim.step(&faults);
    }
    // Quiet period: no faults, no new entries; everyone must converge.
    let mut quiet_steps = 0;
    while !sim.converged() {
        sim.step(&QUIET);
        quiet_steps += 1;
        if quiet_steps > 20_000 {
            let behind: Vec<String> = sim
                .agents
                .iter()
                .enumerate()
                .filter(|(_, a)| {
                    a.session.durable_seq() != sim.log.head || a.session.log_id() != Some(sim.log.log_id)
                })
                .map(|(i, a)| {
                    format!(
                        "agent {i} at {} connected={} {:?}",
                        a.session.durable_seq(),
                        a.session.is_connected(),
                        a.session
                    )
                })
                .collect();
            let sessions: Vec<String> = sim
                .sessions
                .iter()
                .filter(|(_, (_, s, _))| s.acked() != sim.log.head)
                .map(|(i, (_, s, _))| format!("{i}: {s:?}"))
                .collect();
            panic!("seed {seed}: no convergence to head {}: {behind:?} {sessions:?}", sim.log.head);
        }
    }
    sim.check_final();
    Outcome {
        head: sim.log.head,
        revocations: sim.next_id,
        resends: sim.resends,
        reports: sim.reports,
        snapshots: sim.snapshots,
        applies: sim.agents.iter().map(|a| a.applies).sum(),
        logs: sim.logs_created,
        long_holds: sim.long_holds,
        rollbacks: sim.rollbacks,
        withdrawals: sim.withdrawals,
    }
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("REVMESH_SIM_SEED") {
        return vec![s.parse().expect("REVMESH_SIM_SEED must be a number")];
    }
    let n: u64 = std::env::var("REVMESH_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    (1..=n).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect()
}

#[test]
fn every_agent_applies_every_entry_once_in_order() {
    for seed in seeds() {
        let o = std::panic::catch_unwind(|| run(seed, 50, 3_000))
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        eprintln!(
            "seed {seed}: revocations {} head {} applies {} resends {} snapshots {} logs {} rollbacks {} withdrawals {}",
            o.revocations, o.head, o.applies, o.resends, o.snapshots, o.logs, o.rollbacks, o.withdrawals
        );
        assert!(
            o.revocations > 1000,
            "seed {seed}: too few revocations ({}) for a meaningful run",
            o.revocations
        );
    }
}

#[test]
fn faults_are_actually_exercised() {
    // Guards the simulation itself: across a few seeds the fault paths must really run.
    let outcomes: Vec<Outcome> = seeds().into_iter().take(4).map(|s| run(s, 20, 3_000)).collect();
    assert!(outcomes.iter().map(|o| o.resends).sum::<u64>() > 0, "no resend ever happened");
    assert!(outcomes.iter().map(|o| o.snapshots).sum::<u64>() > 0, "no snapshot ever happened");
    assert!(outcomes.iter().map(|o| o.reports).sum::<u64>() > 0, "no applied report ever arrived");
    assert!(outcomes.iter().map(|o| o.long_holds).sum::<u64>() > 0, "no link was held past the idle timeout");
    // Every run starts with one log; each wipe adds one.
    assert!(outcomes.iter().map(|o| o.logs - 1).sum::<u64>() > 0, "no store was ever wiped");
    assert!(outcomes.iter().map(|o| o.rollbacks).sum::<u64>() > 0, "no store was ever rolled back");
    assert!(outcomes.iter().map(|o| o.withdrawals).sum::<u64>() > 0, "nothing was ever withdrawn");
}
