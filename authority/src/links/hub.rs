//! Which agents exist, which are connected, and how far each has applied the log: the data
//! behind receipts (`?wait=all`), `GET /v1/agents` and the lag metrics.

use crate::links::signal::{Signal, REPLACED};
use crate::log::Log;
use crate::metrics::Metrics;
use crate::store::AgentRow;
use revmesh_runtime::Clock;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Disconnected agents remembered at most (oldest forgotten first).
const MAX_REMEMBERED: usize = 100_000;

/// One agent linked (or once linked) to this authority.
#[derive(Debug, Clone)]
struct AgentInfo {
    id: String,
    connected: bool,
    /// Peer address of the last link.
    remote: String,
    /// Highest seq of this log the agent acknowledged (applied and durable).
    applied_seq: u64,
    /// Highest seq the agent applied in memory: its ack, or a later `Applied` report.
    seen_seq: u64,
    /// Last ack, unix milliseconds.
    last_ack_at: Option<u64>,
    version: String,
    link: u64,
    /// The link's signal: raised [`REPLACED`] when a newer link takes the id.
    signal: Arc<Signal>,
    disconnected_at: u64,
}

impl AgentInfo {
    fn row(&self) -> AgentRow {
        AgentRow {
            id: self.id.clone(),
            replica: String::new(),
            applied_seq: self.applied_seq,
            connected: self.connected,
            remote: self.remote.clone(),
            version: self.version.clone(),
            last_ack_at: self.last_ack_at,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    agents: HashMap<String, AgentInfo>,
    /// Multiset of connected agents' cursors, for O(log n) minimum.
    cursors: BTreeMap<u64, usize>,
    /// The same for what connected agents applied in memory (`seen_seq`): receipts at the
    /// applied level.
    seen: BTreeMap<u64, usize>,
    /// Highest seq acked by every connected agent that the latency histogram has seen.
    all_acked: u64,
    next_link: u64,
    /// Agents whose row changed since the last publication to a shared store (tracked only
    /// when the store is shared: nothing else drains it).
    dirty: std::collections::HashSet<String>,
    shared: bool,
    /// Agents that presented a position this log never held, since this authority started.
    ahead: std::collections::BTreeSet<String>,
}

impl State {
    /// Connected agents: every one has exactly one cursor in the multiset, and the multiset has
    /// few distinct values (agents sit at the head), so this is cheap even with 10,000 agents.
    fn connected(&self) -> usize {
        self.cursors.values().sum()
    }

    fn mark_dirty(&mut self, id: &str) {
        if self.shared {
            self.dirty.insert(id.to_owned());
        }
    }

    fn cursor_remove(&mut self, seq: u64) {
        multiset_remove(&mut self.cursors, seq);
    }
    fn cursor_add(&mut self, seq: u64) {
        *self.cursors.entry(seq).or_default() += 1;
    }

    /// Moves a connected agent's in-memory cursor from `old` to `new`.
    fn seen_move(&mut self, old: u64, new: u64) {
        multiset_remove(&mut self.seen, old);
        *self.seen.entry(new).or_default() += 1;
    }

    /// The lowest cursor of connected agents at `level`.
    fn min(&self, level: Level) -> Option<u64> {
        let set = match level {
            Level::Durable => &self.cursors,
            Level::Applied => &self.seen,
        };
        set.first_key_value().map(|(k, _)| *k)
    }
}

fn multiset_remove(set: &mut BTreeMap<u64, usize>, seq: u64) {
    if let Some(n) = set.get_mut(&seq) {
        *n -= 1;
        if *n == 0 {
            set.remove(&seq);
        }
    }
}

/// What a receipt waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Applied and on the agent's disk (the default): survives the agent's crash.
    Durable,
    /// Applied in the agent's memory: refused from then on, but an agent killed before its
    /// next fsync forgets it until the authority sends it again.
    Applied,
}

impl Level {
    /// The name used by `?wait=` and in responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Durable => "durable",
            Level::Applied => "applied",
        }
    }
}

/// Registry of agents and their acknowledgements.
#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    metrics: Metrics,
    clock: Clock,
}

/// Receipt for one seq: every known agent, by whether it has applied the entry. A receipt never
/// hides an agent that is still without the revocation.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Receipt {
    /// Agents at or past the seq.
    pub acked: Vec<String>,
    /// Connected agents not there yet.
    pub pending: Vec<String>,
    /// Known agents (not forgotten) that are not connected and have not applied it.
    pub disconnected: Vec<String>,
}

/// Where one agent stands for a seq: `acked`, `pending` or `disconnected`.
pub fn ack_state(seq: u64, connected: bool, applied_seq: u64) -> &'static str {
    match (applied_seq >= seq, connected) {
        (true, _) => "acked",
        (false, true) => "pending",
        (false, false) => "disconnected",
    }
}

impl Receipt {
    /// The receipt for `seq` over agents given as `(id, connected, applied_seq)`.
    pub fn of(seq: u64, agents: impl IntoIterator<Item = (String, bool, u64)>) -> Receipt {
        let mut r = Receipt::default();
        for (id, connected, applied) in agents {
            match ack_state(seq, connected, applied) {
                "acked" => r.acked.push(id),
                "pending" => r.pending.push(id),
                _ => r.disconnected.push(id),
            }
        }
        r.acked.sort();
        r.pending.sort();
        r.disconnected.sort();
        r
    }
}

impl Hub {
    /// An empty registry; `shared` when agent rows are published to a shared store.
    pub fn new(metrics: Metrics, shared: bool, clock: Clock) -> Self {
        let state = State { shared, ..State::default() };
        Self { state: Mutex::new(state), changed: watch::channel(0).0, metrics, clock }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The agent `id` presented a position this log never held (its hello named a seq beyond
    /// the head, or entries of another log): the store was lost or restored from an older copy.
    /// Counted in `revmesh_authority_agents_ahead_of_log` until the agent is forgotten or the
    /// authority restarts; returns how many are counted.
    pub fn ahead_of_log(&self, id: &str) -> usize {
        let mut s = self.lock();
        s.ahead.insert(id.to_owned());
        self.metrics.agents_ahead_of_log.set(s.ahead.len() as i64);
        s.ahead.len()
    }

    /// A link for `id` is up at cursor `applied_seq`; returns the link's number. A still
    /// connected older link of the same id has its signal raised [`REPLACED`], and so will this
    /// one's `signal` when a newer link takes the id.
    pub fn connect(
        &self,
        id: &str,
        remote: String,
        version: String,
        applied_seq: u64,
        signal: Arc<Signal>,
    ) -> u64 {
        let mut s = self.lock();
        s.next_link += 1;
        let link = s.next_link;
        let previous = s.agents.get(id).map(|a| (a.connected, a.applied_seq, a.seen_seq, a.signal.clone()));
        if let Some((connected, seq, seen, old)) = previous {
            if connected {
                old.raise(REPLACED);
                s.cursor_remove(seq);
                multiset_remove(&mut s.seen, seen);
            }
        }
        s.cursor_add(applied_seq);
        *s.seen.entry(applied_seq).or_default() += 1;
        let info = AgentInfo {
            id: id.to_owned(),
            connected: true,
            remote,
            applied_seq,
            seen_seq: applied_seq,
            last_ack_at: None,
            version,
            link,
            signal,
            disconnected_at: 0,
        };
        s.agents.insert(id.to_owned(), info);
        s.mark_dirty(id);
        if s.agents.len() > MAX_REMEMBERED {
            let oldest = s
                .agents
                .values()
                .filter(|a| !a.connected)
                .min_by_key(|a| a.disconnected_at)
                .map(|a| a.id.clone());
            if let Some(o) = oldest {
                s.agents.remove(&o);
            }
        }
        self.metrics.agents_connected.set(s.connected() as i64);
        drop(s);
        self.changed.send_modify(|v| *v += 1);
        link
    }

    /// The agent's cursor moved (ack, or a resync reset to 0).
    ///
    /// Under the hub's lock an ack touches only its own agent and the cursor multiset
    /// (O(log n)); the receipt-latency histogram is fed after the lock is released.
    pub fn ack(&self, id: &str, link: u64, applied_seq: u64, log: &Log) {
        let now = self.clock.unix_ms();
        let mut s = self.lock();
        let Some(a) = s.agents.get_mut(id) else { return };
        if a.link != link || !a.connected {
            return;
        }
        let old = a.applied_seq;
        let old_seen = a.seen_seq;
        a.applied_seq = applied_seq;
        a.seen_seq = old_seen.max(applied_seq);
        let seen = a.seen_seq;
        a.last_ack_at = Some(now);
        s.mark_dirty(id);
        let min_before = (s.min(Level::Durable), s.min(Level::Applied));
        s.cursor_remove(old);
        s.cursor_add(applied_seq);
        if seen != old_seen {
            s.seen_move(old_seen, seen);
        }
        let min_after = (s.min(Level::Durable), s.min(Level::Applied));
        let all_acked = Self::newly_all_acked(&mut s);
        drop(s);
        if let Some((from, to)) = all_acked {
            for created in log.created_at_ms(from, to) {
                self.metrics.revoke_to_all_acked.observe(now.saturating_sub(created) as f64 / 1000.0);
            }
        }
        // Receipt waiters only care about the slowest agent: wake them when it moves, not on
        // every one of N acks.
        if min_after != min_before {
            self.changed.send_modify(|v| *v += 1);
        }
    }

    /// The agent reported entries up to `seq` applied in memory (ahead of its durable ack).
    pub fn applied(&self, id: &str, link: u64, seq: u64) {
        let mut s = self.lock();
        let Some(a) = s.agents.get_mut(id) else { return };
        if a.link != link || !a.connected || seq <= a.seen_seq {
            return;
        }
        let old = a.seen_seq;
        a.seen_seq = seq;
        let min_before = s.min(Level::Applied);
        s.seen_move(old, seq);
        let moved = s.min(Level::Applied) != min_before;
        drop(s);
        if moved {
            self.changed.send_modify(|v| *v += 1);
        }
    }

    /// The seqs every connected agent has now applied for the first time (at most the last
    /// 4,096 of them: the rest is skipped), and records that they were seen.
    fn newly_all_acked(s: &mut State) -> Option<(u64, u64)> {
        let (&min, _) = s.cursors.first_key_value()?;
        if min <= s.all_acked {
            // A newly connected agent behind the others: entries are observed once, when the
            // slowest connected agent passes them for the first time.
            return None;
        }
        let from = (s.all_acked + 1).max(min.saturating_sub(4_096) + 1);
        s.all_acked = min;
        Some((from, min))
    }

    /// The link ended.
    pub fn disconnect(&self, id: &str, link: u64) {
        let mut s = self.lock();
        let (seq, seen) = match s.agents.get_mut(id) {
            Some(a) if a.link == link && a.connected => {
                a.connected = false;
                a.disconnected_at = self.clock.unix_ms();
                (a.applied_seq, a.seen_seq)
            }
            _ => return,
        };
        s.mark_dirty(id);
        s.cursor_remove(seq);
        multiset_remove(&mut s.seen, seen);
        self.metrics.agents_connected.set(s.connected() as i64);
        drop(s);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Forgets a disconnected agent.
    /// What [`Self::forget`] would find now, changing nothing.
    pub fn peek_forget(&self, id: &str) -> crate::store::Forgotten {
        use crate::store::Forgotten;
        match self.lock().agents.get(id).map(|a| a.connected) {
            Some(true) => Forgotten::Connected,
            Some(false) => Forgotten::Removed,
            None => Forgotten::Unknown,
        }
    }

    pub fn forget(&self, id: &str) -> crate::store::Forgotten {
        use crate::store::Forgotten;
        let mut s = self.lock();
        match s.agents.get(id).map(|a| a.connected) {
            Some(true) => Forgotten::Connected,
            Some(false) => {
                s.agents.remove(id);
                s.dirty.remove(id);
                if s.ahead.remove(id) {
                    self.metrics.agents_ahead_of_log.set(s.ahead.len() as i64);
                }
                Forgotten::Removed
            }
            None => Forgotten::Unknown,
        }
    }

    /// Every agent known, by id.
    pub fn rows(&self) -> Vec<AgentRow> {
        let s = self.lock();
        let mut v: Vec<AgentRow> = s.agents.values().map(AgentInfo::row).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Which known agents have applied `seq` at `level`.
    pub fn receipt(&self, seq: u64, level: Level) -> Receipt {
        let s = self.lock();
        Receipt::of(
            seq,
            s.agents.values().map(|a| {
                let cursor = match level {
                    Level::Durable => a.applied_seq,
                    Level::Applied => a.seen_seq,
                };
                (a.id.clone(), a.connected, cursor)
            }),
        )
    }

    fn min_connected_cursor(&self) -> Option<u64> {
        self.lock().min(Level::Durable)
    }

    /// Waits until every connected agent has applied `seq` at `level`, or the timeout.
    pub async fn wait_all(&self, seq: u64, timeout: Duration, level: Level) -> Receipt {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.lock().min(level).is_none_or(|m| m >= seq) {
                break;
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { break },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.receipt(seq, level)
    }

    /// Rows to publish to a shared store: changed agents, plus every connected one when
    /// `refresh` (so their rows stay fresh for other replicas).
    pub fn take_rows(&self, refresh: bool) -> Vec<AgentRow> {
        let mut s = self.lock();
        let dirty = std::mem::take(&mut s.dirty);
        s.agents
            .values()
            .filter(|a| dirty.contains(&a.id) || (refresh && a.connected))
            .map(AgentInfo::row)
            .collect()
    }

    /// Refreshes the lag gauges (called before each scrape).
    pub fn refresh_metrics(&self, log: &Log) {
        let head = log.view().head;
        let min = self.min_connected_cursor();
        let lag = min.map_or(0, |m| head.saturating_sub(m));
        self.metrics.agent_lag_max.set(lag as i64);
        let age = match min {
            Some(m) if m < head => {
                let oldest = log.list(m, 1).first().map(|e| e.created_at_ms);
                oldest.map_or(0.0, |c| self.clock.unix_ms().saturating_sub(c) as f64 / 1000.0)
            }
            _ => 0.0,
        };
        self.metrics.unacked_oldest_age.set(age);
    }
}
