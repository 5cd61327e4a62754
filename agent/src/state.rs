//! The agent's in-memory state: the revocation set, where it stands in which log, and how
//! fresh that is. Checks read it; only the link task writes it.
//!
//! Architecture invariant: an answer comes from this state alone — no request ever waits on
//! the network.

use crate::metrics::Metrics;
use revmesh_protocol::{Entry, EntryView, Kind, LogId, RevocationSet, TokenRef};
use revmesh_runtime::Clock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// Most `jti` slots reserved ahead of a catch-up: 262,144 entries, about 7 MiB of table. An
/// over-estimate is given back when expiry sweeps find the table mostly empty.
pub const MAX_CATCH_UP_RESERVE: u64 = 1 << 18;

/// `--max-token-ttl`'s default, seconds (the authority's default too).
pub const DEFAULT_MAX_TOKEN_TTL: u64 = 86_400;

/// Revocation verdict plus freshness, before it is rendered as a line or an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not revoked.
    Ok {
        /// Applied seq.
        seq: u64,
        /// Milliseconds since an authority was heard.
        lag_ms: u64,
        /// Past the staleness bound under `--on-stale open`.
        stale: bool,
    },
    /// Revoked by the entry `seq` of `kind`.
    Revoked {
        /// Kind of the entry.
        kind: Kind,
        /// Its seq.
        seq: u64,
    },
    /// Past the staleness bound under `--on-stale closed`.
    Stale {
        /// Milliseconds since an authority was heard.
        lag_ms: u64,
    },
}

/// Shared agent state.
#[derive(Debug)]
pub struct AgentState {
    set: RwLock<RevocationSet>,
    log_id: RwLock<Option<LogId>>,
    applied: AtomicU64,
    /// A head the authority announced: until `applied` reaches it the agent knows it is behind
    /// and answers as a stale agent does (a fresh agent catching up never answers OK for an
    /// entry it has not applied yet).
    catch_up_to: AtomicU64,
    /// Entries handed to `apply` at or below the applied seq: must stay 0 (exactly once).
    duplicates: AtomicU64,
    connected: AtomicBool,
    /// When an authority was last heard, as milliseconds since `started` plus one (0: never).
    /// An atomic, because every check reads it.
    heard_ms: AtomicU64,
    /// Last contact before this process started (wall clock ms), from the data dir.
    heard_before_start: Option<u64>,
    started: Instant,
    max_staleness: Duration,
    fail_open: bool,
    clock: Clock,
    /// `--max-token-ttl`, seconds.
    own_max_token_ttl: u64,
    /// The longest token lifetime accepted: the agent's own limit, or the authority's when
    /// shorter (learned on connect). Revocations of subjects and sessions lapse that long
    /// after they were made, so a token living longer could outlive its revocation.
    max_token_ttl: AtomicU64,
    /// Metrics.
    pub metrics: Metrics,
}

impl AgentState {
    /// State from what was persisted (or empty).
    pub fn new(
        set: RevocationSet,
        log_id: Option<LogId>,
        applied: u64,
        heard_before_start: Option<u64>,
        max_staleness: Duration,
        fail_open: bool,
        metrics: Metrics,
    ) -> Self {
        let s = Self {
            set: RwLock::new(set),
            log_id: RwLock::new(log_id),
            applied: AtomicU64::new(applied),
            catch_up_to: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            heard_ms: AtomicU64::new(0),
            heard_before_start,
            started: Clock::system().mono(),
            max_staleness,
            fail_open,
            clock: Clock::system(),
            own_max_token_ttl: DEFAULT_MAX_TOKEN_TTL,
            max_token_ttl: AtomicU64::new(DEFAULT_MAX_TOKEN_TTL),
            metrics,
        };
        s.refresh_gauges();
        s
    }

    /// The same state reading time from `clock` (tests hold wall time still with a manual one).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The same state with its own `--max-token-ttl`.
    pub fn with_max_token_ttl(mut self, ttl: Duration) -> Self {
        self.own_max_token_ttl = ttl.as_secs().max(1);
        self.max_token_ttl = AtomicU64::new(self.own_max_token_ttl);
        self
    }

    /// The authority's `--max-token-ttl` (a `Limits` frame): the shorter of it and the agent's
    /// own applies from now on.
    pub fn learn_max_token_ttl(&self, secs: u64) {
        let limit = self.own_max_token_ttl.min(secs.max(1));
        if self.max_token_ttl.swap(limit, Ordering::Relaxed) != limit {
            tracing::info!(
                secs = limit,
                own = self.own_max_token_ttl,
                authority = secs,
                "token lifetime limit"
            );
        }
    }

    /// True when a token with these claims lives longer than the limit: from `iat` to `exp`,
    /// or from now to `exp` without `iat`.
    pub fn outlives_revocations(&self, iat: Option<u64>, exp: u64) -> bool {
        let from = iat.unwrap_or_else(|| self.clock.unix_secs());
        exp.saturating_sub(from) > self.max_token_ttl.load(Ordering::Relaxed)
    }

    /// The agent's one clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn since_start(&self) -> Duration {
        self.clock.mono().saturating_duration_since(self.started)
    }

    /// Applied seq.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// The log the state belongs to.
    pub fn log_id(&self) -> Option<LogId> {
        *self.log_id.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Ties a fresh (empty) agent to a log.
    pub fn adopt_log(&self, log_id: LogId) {
        let mut l = self.log_id.write().unwrap_or_else(|p| p.into_inner());
        if l.is_none() {
            *l = Some(log_id);
        }
    }

    /// The head this agent must reach before it answers as fresh (from the link session).
    pub fn set_catch_up_to(&self, seq: u64) {
        self.catch_up_to.store(seq, Ordering::Release);
    }

    /// Sizes the set for a catch-up of up to `entries` revocations before they arrive, counted
    /// as `jti` ones (by far the most common kind) and capped at [`MAX_CATCH_UP_RESERVE`]:
    /// the count is a span of seqs, some of which may be compacted away or of other kinds.
    pub fn reserve_for_catch_up(&self, entries: u64) {
        let n = entries.min(MAX_CATCH_UP_RESERVE) as usize;
        self.set.write().unwrap_or_else(|p| p.into_inner()).reserve_jti(n);
    }

    /// True while the agent knows of entries it has not applied.
    pub fn is_behind(&self) -> bool {
        self.behind_at(self.applied())
    }

    fn behind_at(&self, applied: u64) -> bool {
        applied < self.catch_up_to.load(Ordering::Acquire)
    }

    /// Entries that were offered for application twice (an exactly-once violation; always 0).
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Whether everything applied is also persisted (false while writes fail).
    pub fn set_persist_ok(&self, ok: bool) {
        self.metrics.persist_ok.set(i64::from(ok));
    }

    /// True unless applied entries are waiting to be persisted.
    pub fn persist_ok(&self) -> bool {
        self.metrics.persist_ok.get() == 1
    }

    /// Link up or down.
    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        self.metrics.connected.set(i64::from(up));
    }

    /// True while a link is up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// An authority was heard at `at`.
    pub fn heard(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.started).as_millis() as u64 + 1;
        self.heard_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Time since an authority was last heard; `None` when this agent has never been in sync.
    pub fn staleness(&self) -> Option<Duration> {
        let heard = self.heard_ms.load(Ordering::Relaxed);
        if heard > 0 {
            let since_start = self.since_start().as_millis() as u64;
            return Some(Duration::from_millis((since_start + 1).saturating_sub(heard)));
        }
        // Never in sync with any log: no freshness to speak of.
        self.log_id()?;
        match self.heard_before_start {
            Some(ms) => Some(Duration::from_millis(self.clock.unix_ms().saturating_sub(ms))),
            None => Some(self.since_start()),
        }
    }

    /// Milliseconds since an authority was heard, and whether answers must be those of a stale
    /// agent: past `--max-staleness`, never in sync, or known to be behind the log's head.
    /// `applied` is where the set stood when the caller looked into it.
    fn lag_ms(&self, applied: u64) -> (u64, bool) {
        match self.staleness() {
            Some(d) => (d.as_millis() as u64, d > self.max_staleness || self.behind_at(applied)),
            None => (self.since_start().as_millis() as u64, true),
        }
    }

    /// The revocation verdict for a token's claims. Revocation wins over staleness: a revoked
    /// token is refused even when the set may be old.
    pub fn decide(&self, token: &TokenRef<'_>) -> Decision {
        // Where the set stands is read before looking into it: every entry up to `applied` is
        // in the set by the time `applied` says so. Read after, a batch applied in between
        // could end the catch-up and turn this miss into an OK for an entry the lookup did not
        // see.
        let applied = self.applied();
        let hit = self.set.read().unwrap_or_else(|p| p.into_inner()).check(token);
        if let Some(v) = hit {
            return Decision::Revoked { kind: v.kind, seq: v.seq };
        }
        let (lag_ms, stale) = self.lag_ms(applied);
        if stale && !self.fail_open {
            return Decision::Stale { lag_ms };
        }
        Decision::Ok { seq: applied, lag_ms, stale }
    }

    /// Freshness for `PING`: `(applied, lag_ms, log_id)`.
    pub fn ping(&self) -> (u64, u64, Option<LogId>) {
        let applied = self.applied();
        (applied, self.lag_ms(applied).0, self.log_id())
    }

    /// Applies entries and moves to `to_seq`.
    pub fn apply(&self, log_id: LogId, entries: &[EntryView<'_>], to_seq: u64) {
        let now_ms = self.clock.unix_ms();
        let now = now_ms / 1000;
        {
            let mut set = self.set.write().unwrap_or_else(|p| p.into_inner());
            let before = self.applied();
            let dups = entries.iter().filter(|e| e.seq <= before).count() as u64;
            self.duplicates.fetch_add(dups, Ordering::Relaxed);
            for e in entries {
                set.insert_view(*e, now);
            }
            *self.log_id.write().unwrap_or_else(|p| p.into_inner()) = Some(log_id);
            self.applied.store(to_seq, Ordering::Release);
        }
        // Observed into a local copy and flushed once: a catch-up batch holds up to 256
        // entries, and a shared observe costs several atomic updates each.
        let lag = self.metrics.apply_lag.local();
        for e in entries {
            lag.observe(now_ms.saturating_sub(e.created_at_ms) as f64 / 1000.0);
        }
        lag.flush();
        // Cheap gauge here; the per-kind counts (which take the set's lock) are refreshed when
        // metrics are scraped.
        self.metrics.applied_seq.set(to_seq as i64);
    }

    /// Adopts a snapshot (a resync, a new log, a log compacted past the agent) without
    /// dropping anything already enforced (PROTOCOL.md §9.9): the snapshot's entries are
    /// applied on top of the set, and what the set held stays until it expires or a withdrawal
    /// lifts it. Returns how many revocations the set holds beyond those the snapshot names:
    /// what it carried forward.
    pub fn adopt(
        &self,
        log_id: LogId,
        entries: &mut [Entry],
        snapshot_seq: u64,
        withdrawals_applied_upto: u64,
    ) -> usize {
        let now = self.clock.unix_secs();
        // Built on a copy, outside the lock: checks go on reading the current set meanwhile (a
        // snapshot of 10^6 entries takes a good part of a second). Only the link writes the
        // set; an expiry sweep in between is undone, which only keeps entries longer.
        let mut next = self.set.read().unwrap_or_else(|p| p.into_inner()).clone();
        next.adopt(entries, withdrawals_applied_upto, now);
        let named = entries.iter().filter(|e| !e.revocation.is_withdrawal()).count();
        let carried = next.len().saturating_sub(named);
        {
            let mut set = self.set.write().unwrap_or_else(|p| p.into_inner());
            *set = next;
            *self.log_id.write().unwrap_or_else(|p| p.into_inner()) = Some(log_id);
            self.applied.store(snapshot_seq, Ordering::Release);
        }
        self.refresh_gauges();
        carried
    }

    /// Drops expired revocations.
    pub fn gc(&self) -> usize {
        let n = self.set.write().unwrap_or_else(|p| p.into_inner()).remove_expired(self.clock.unix_secs());
        self.refresh_gauges();
        n
    }

    /// The persisted form of the current state.
    pub fn persisted(&self) -> revmesh_protocol::codec::PersistedState {
        let set = self.set.read().unwrap_or_else(|p| p.into_inner());
        revmesh_protocol::codec::PersistedState {
            log_id: self.log_id(),
            applied_seq: self.applied(),
            set: set.snapshot(),
        }
    }

    /// What the state file holds: where the set stands, its other kinds, and its `jti` table as
    /// laid out (copied under the read lock; written without it).
    pub fn image(&self) -> (revmesh_protocol::codec::PersistedState, revmesh_protocol::set::TableImage) {
        let set = self.set.read().unwrap_or_else(|p| p.into_inner());
        let (rest, table) = set.image();
        let state = revmesh_protocol::codec::PersistedState {
            log_id: self.log_id(),
            applied_seq: self.applied(),
            set: rest,
        };
        (state, table)
    }

    /// Number of live revocations of a kind.
    pub fn count(&self, kind: Kind) -> usize {
        self.set.read().unwrap_or_else(|p| p.into_inner()).count(kind)
    }

    /// Bytes held by the `jti` table's slots.
    pub fn jti_table_bytes(&self) -> usize {
        self.set.read().unwrap_or_else(|p| p.into_inner()).jti_memory_bytes()
    }

    /// Updates gauges that mirror the state.
    pub fn refresh_gauges(&self) {
        self.metrics.applied_seq.set(self.applied() as i64);
        {
            let set = self.set.read().unwrap_or_else(|p| p.into_inner());
            let configured = self.metrics.configured_kids();
            let revoked = set.revoked_kids().filter(|k| configured.iter().any(|c| &**c == *k)).count();
            self.metrics.revoked_keys_configured.set(revoked as i64);
        }
        for k in Kind::ALL {
            self.metrics.revocations.with_label_values(&[k.as_str()]).set(self.count(k) as i64);
        }
        if let Some(s) = self.staleness() {
            self.metrics.staleness.set(s.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use revmesh_protocol::model::EXPIRY_GRACE_SECS;
    use revmesh_protocol::Revocation;

    fn jti_entry(seq: u64, jti: &str, created_at_ms: u64, expires_at: u64) -> Entry {
        Entry {
            seq,
            created_at_ms,
            expires_at,
            reason: None,
            revocation: Revocation::Jti { jti: jti.into(), iss: None },
        }
    }

    fn state(clock: &Clock) -> AgentState {
        let metrics = Metrics::new().unwrap();
        AgentState::new(RevocationSet::new(), None, 0, None, Duration::from_secs(30), true, metrics)
            .with_clock(clock.clone())
    }

    #[test]
    fn expiry_follows_the_injected_clock() {
        let clock = Clock::manual(1_000_000);
        let s = state(&clock);
        let entry = jti_entry(1, "j", 1_000_000, 1_060);
        s.apply(LogId([1; 16]), &[entry.view()], 1);
        let token = TokenRef { jti: Some("j"), ..Default::default() };
        let revoked = |s: &AgentState| matches!(s.decide(&token), Decision::Revoked { seq: 1, .. });
        assert!(revoked(&s));
        // Still kept through the grace after its expiry (a token within leeway stays refused)...
        clock.advance((60 + EXPIRY_GRACE_SECS - 1) * 1000);
        assert_eq!(s.gc(), 0);
        assert!(revoked(&s));
        // ...and forgotten once the clock passes it, with no real time spent.
        clock.advance(2_000);
        assert_eq!(s.gc(), 1);
        assert!(!revoked(&s));
    }

    #[test]
    fn every_applied_entry_is_observed_in_the_apply_lag_histogram() {
        let s = state(&Clock::manual(1_000_000));
        let entry = |seq: u64, created_at_ms: u64| jti_entry(seq, &format!("j{seq}"), created_at_ms, 2_000);
        // Lags of 2 ms, 20 ms and 2 s.
        let (e1, e2, e3) = (entry(1, 999_998), entry(2, 999_980), entry(3, 998_000));
        s.apply(LogId([1; 16]), &[e1.view(), e2.view()], 2);
        s.apply(LogId([1; 16]), &[e3.view()], 3);
        let h = &s.metrics.apply_lag;
        assert_eq!(h.get_sample_count(), 3);
        assert!((h.get_sample_sum() - 2.022).abs() < 1e-9, "{}", h.get_sample_sum());
    }

    #[test]
    fn a_catch_up_reserves_the_table_once_and_at_most_the_cap() {
        let s = state(&Clock::manual(0));
        s.reserve_for_catch_up(u64::MAX);
        let slot = std::mem::size_of::<revmesh_protocol::set::JtiSlot>();
        let capped = (MAX_CATCH_UP_RESERVE as usize * 20 / 17 + 1) * slot;
        assert_eq!(s.jti_table_bytes(), capped);
        // Applying what was reserved for does not grow the table again.
        let entries: Vec<Entry> = (1..=MAX_CATCH_UP_RESERVE)
            .map(|seq| jti_entry(seq, &seq.to_string(), 0, u64::from(u32::MAX)))
            .collect();
        for c in entries.chunks(256) {
            let views: Vec<EntryView<'_>> = c.iter().map(Entry::view).collect();
            s.apply(LogId([1; 16]), &views, c[c.len() - 1].seq);
        }
        assert_eq!(s.count(Kind::Jti), MAX_CATCH_UP_RESERVE as usize);
        assert_eq!(s.jti_table_bytes(), capped);
    }
}
