//! The PostgreSQL store: one log shared by several authority replicas.
//!
//! Appends serialise on the `revmesh_meta` row (`SELECT … FOR UPDATE` inside the appending
//! transaction), so seqs are gap-free and commit in seq order: a replica tailing the log can
//! never see seq n+1 before seq n. Each commit sends `NOTIFY revmesh_log`; replicas wake on it
//! and also poll, so a missed notification only delays, never loses. Agent cursors are shared
//! in `revmesh_agents` so receipts and `GET /v1/agents` cover every replica.

use crate::store::{
    record, unrecord, AgentRow, CursorStore, Forgotten, Loaded, LogStore, NewEntry, SharedLog, StoreError,
    Tail,
};
use postgres::{Client, NoTls};
use revmesh_protocol::{Entry, LogId};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Rows newer than this count as reported by a live replica.
pub const AGENT_ROW_TTL_SECS: u64 = 10;
/// Idle connections kept.
const POOL: usize = 8;
/// Operations still waiting on an unresponsive server at most; beyond, new ones fail at once
/// instead of adding threads stuck on a partition.
const MAX_HANGING: usize = 16;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS revmesh_meta (
    id int PRIMARY KEY CHECK (id = 1),
    log_id bytea NOT NULL,
    head bigint NOT NULL,
    floor bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS revmesh_entries (
    seq bigint PRIMARY KEY,
    record bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS revmesh_agents (
    id text PRIMARY KEY,
    replica text NOT NULL,
    applied_seq bigint NOT NULL,
    connected boolean NOT NULL,
    remote text NOT NULL,
    version text NOT NULL,
    last_ack_at bigint,
    seen_at timestamptz NOT NULL DEFAULT now()
);
";

fn db(e: postgres::Error) -> StoreError {
    StoreError::Postgres(e)
}

/// A PostgreSQL error as operators read it: the SQLSTATE and the server's message when the
/// server answered, the client's description otherwise.
pub(crate) fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.code().code(), d.message()),
        None => e.to_string(),
    }
}

/// A small pool of synchronous connections to one database.
///
/// Every operation is bounded by the store timeout: it runs on a thread of its own while the
/// caller waits at most that long. A server that stops answering (a partition: the connection
/// stays open, nothing comes back) fails the operation in time instead of hanging it; the
/// abandoned thread ends when the connection does (TCP user timeout, keepalives, or the server
/// ending the idle transaction), and its connection is never reused.
pub struct PgStore {
    config: postgres::Config,
    timeout: Duration,
    replica: String,
    new_log_id: LogId,
    pool: Arc<Mutex<Vec<Client>>>,
    hanging: Arc<AtomicUsize>,
    listener: Mutex<Option<Client>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("replica", &self.replica).finish()
    }
}

impl PgStore {
    /// A store for `url`; `replica` names this authority in `revmesh_agents`; every operation
    /// (connect, statement, network round trip) is bounded by `timeout`.
    pub fn new(url: &str, replica: String, new_log_id: LogId, timeout: Duration) -> Result<Self, StoreError> {
        let mut config: postgres::Config = url.parse().map_err(db)?;
        let ms = timeout.as_millis().max(1);
        config
            .connect_timeout(timeout)
            .application_name("revmesh-authority")
            // The server cancels a statement stalled on a lock held by a partitioned replica,
            // and ends a transaction whose client went silent, releasing its locks.
            .options(&format!("-c statement_timeout={ms} -c idle_in_transaction_session_timeout={}", ms * 2))
            // The kernel ends connections whose peer vanished.
            .tcp_user_timeout(timeout * 2)
            .keepalives(true)
            .keepalives_idle(timeout)
            .keepalives_interval(Duration::from_secs(1))
            .keepalives_retries(3);
        Ok(Self {
            config,
            timeout,
            replica,
            new_log_id,
            pool: Arc::new(Mutex::new(Vec::new())),
            hanging: Arc::new(AtomicUsize::new(0)),
            listener: Mutex::new(None),
        })
    }

    fn connect(&self) -> Result<Client, StoreError> {
        self.config.connect(NoTls).map_err(db)
    }

    /// Runs `f` on a pooled connection within the store timeout; a connection that failed is
    /// dropped, not returned.
    fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Client) -> Result<T, postgres::Error> + Send + 'static,
    {
        self.within(self.timeout, f)
    }

    /// As [`Self::with`], with a limit of its own (loading the whole log at start).
    fn within<T, F>(&self, limit: Duration, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Client) -> Result<T, postgres::Error> + Send + 'static,
    {
        if self.hanging.load(Ordering::Acquire) >= MAX_HANGING {
            return Err(StoreError::Unavailable("postgres unreachable (earlier operations still hang)"));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (pool, hanging, config) = (self.pool.clone(), self.hanging.clone(), self.config.clone());
        hanging.fetch_add(1, Ordering::AcqRel);
        let spawned = std::thread::Builder::new().name("revmesh-pg".into()).spawn(move || {
            let pooled = pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let result = match pooled {
                Some(c) if !c.is_closed() => Ok(c),
                _ => config.connect(NoTls).map_err(db),
            }
            .and_then(|mut client| {
                let r = f(&mut client);
                if r.is_ok() {
                    let mut pool = pool.lock().unwrap_or_else(|p| p.into_inner());
                    if pool.len() < POOL {
                        pool.push(client);
                    }
                }
                r.map_err(db)
            });
            hanging.fetch_sub(1, Ordering::AcqRel);
            let _ = tx.send(result);
        });
        if let Err(e) = spawned {
            self.hanging.fetch_sub(1, Ordering::AcqRel);
            return Err(StoreError::Worker(e));
        }
        match rx.recv_timeout(limit) {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(limit)),
        }
    }
}

fn rows_to_entries(rows: &[postgres::Row]) -> Result<Vec<Entry>, StoreError> {
    rows.iter()
        .map(|r| {
            let seq: i64 = r.get(0);
            let bytes: Vec<u8> = r.get(1);
            unrecord(seq as u64, &bytes)
        })
        .collect()
}

impl LogStore for PgStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        let new_id = self.new_log_id.0.to_vec();
        // Reading a large log at start may take longer than one revocation's commit may.
        let limit = (self.timeout * 12).max(Duration::from_secs(60));
        let (log_id, head, floor, rows) = self.within(limit, move |c| {
            // Replicas starting together must not race on CREATE TABLE: one at a time.
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock(7415000001)", &[])?;
            tx.batch_execute(SCHEMA)?;
            tx.execute(
                "INSERT INTO revmesh_meta (id, log_id, head, floor) VALUES (1, $1, 0, 0) ON CONFLICT (id) DO NOTHING",
                &[&new_id],
            )?;
            tx.commit()?;
            let mut tx = c.build_transaction().isolation_level(postgres::IsolationLevel::RepeatableRead).start()?;
            tx.batch_execute(&format!("SET LOCAL statement_timeout = {}", limit.as_millis()))?;
            let m = tx.query_one("SELECT log_id, head, floor FROM revmesh_meta WHERE id = 1", &[])?;
            let rows = tx.query("SELECT seq, record FROM revmesh_entries ORDER BY seq", &[])?;
            tx.commit()?;
            Ok((m.get::<_, Vec<u8>>(0), m.get::<_, i64>(1), m.get::<_, i64>(2), rows))
        })?;
        let log_id =
            LogId(log_id.try_into().map_err(|_| StoreError::Meta("`log_id` is not 16 bytes".into()))?);
        Ok(Loaded { log_id, head: head as u64, floor: floor as u64, entries: rows_to_entries(&rows)? })
    }

    /// A write that is rolled back: a server that can read but not write is not ready.
    fn probe(&self) -> Result<(), StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute("UPDATE revmesh_meta SET floor = floor WHERE id = 1", &[])?;
            tx.rollback()
        })
    }

    fn append(&self, _head: u64, batch: &[NewEntry]) -> Result<Vec<Entry>, StoreError> {
        let batch = batch.to_vec();
        self.with(move |c| {
            let mut tx = c.transaction()?;
            // The row lock serialises appenders across replicas: seqs commit in order.
            let head: i64 =
                tx.query_one("SELECT head FROM revmesh_meta WHERE id = 1 FOR UPDATE", &[])?.get(0);
            let head = head as u64;
            let mut out = Vec::with_capacity(batch.len());
            let mut seqs = Vec::with_capacity(batch.len());
            let mut records = Vec::with_capacity(batch.len());
            for (i, n) in batch.iter().enumerate() {
                let entry = n.sequenced(head + 1 + i as u64);
                match record(&entry) {
                    Ok(r) => records.push(r),
                    // Dropping the transaction rolls it back: nothing is stored.
                    Err(e) => return Ok(Err(e)),
                }
                seqs.push(entry.seq as i64);
                out.push(entry);
            }
            tx.execute(
                "INSERT INTO revmesh_entries (seq, record) SELECT * FROM UNNEST($1::bigint[], $2::bytea[])",
                &[&seqs, &records],
            )?;
            let new_head = (head + batch.len() as u64) as i64;
            tx.execute("UPDATE revmesh_meta SET head = $1 WHERE id = 1", &[&new_head])?;
            tx.execute("SELECT pg_notify('revmesh_log', $1)", &[&new_head.to_string()])?;
            tx.commit()?;
            Ok(Ok(out))
        })?
    }

    fn compact(&self, floor: u64, seqs: &[u64]) -> Result<(), StoreError> {
        let seqs: Vec<i64> = seqs.iter().map(|s| *s as i64).collect();
        self.with(move |c| {
            let mut tx = c.transaction()?;
            tx.execute("DELETE FROM revmesh_entries WHERE seq = ANY($1)", &[&seqs])?;
            tx.execute(
                "UPDATE revmesh_meta SET floor = GREATEST(floor, $1) WHERE id = 1",
                &[&(floor as i64)],
            )?;
            tx.commit()
        })
    }

    fn read_after(&self, after: u64) -> Result<Tail, StoreError> {
        let (head, floor, rows) = self.with(move |c| {
            let mut tx =
                c.build_transaction().isolation_level(postgres::IsolationLevel::RepeatableRead).start()?;
            let m = tx.query_one("SELECT head, floor FROM revmesh_meta WHERE id = 1", &[])?;
            let rows = tx.query(
                "SELECT seq, record FROM revmesh_entries WHERE seq > $1 ORDER BY seq LIMIT 100000",
                &[&(after as i64)],
            )?;
            tx.commit()?;
            Ok((m.get::<_, i64>(0), m.get::<_, i64>(1), rows))
        })?;
        let entries = rows_to_entries(&rows)?;
        // A capped read stops short of the head; the next read continues from there.
        let head = if entries.len() == 100_000 {
            entries.last().map_or(head as u64, |e| e.seq)
        } else {
            head as u64
        };
        Ok(Tail { entries, head, floor: floor as u64 })
    }
}

impl SharedLog for PgStore {
    fn wait_for_change(&self, timeout: Duration) -> Result<(), StoreError> {
        let mut guard = self.listener.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            let mut c = self.connect()?;
            c.batch_execute("LISTEN revmesh_log").map_err(db)?;
            *guard = Some(c);
        }
        let Some(c) = guard.as_mut() else { return Ok(()) };
        let result = {
            use fallible_iterator::FallibleIterator;
            let mut n = c.notifications();
            let mut it = n.timeout_iter(timeout);
            it.next().map(|_| ())
        };
        if result.is_err() {
            *guard = None;
        }
        result.map_err(db)
    }
}

impl CursorStore for PgStore {
    fn publish_agents(&self, rows: &[AgentRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let rows = rows.to_vec();
        let replica = self.replica.clone();
        self.with(move |c| {
            let mut tx = c.transaction()?;
            let stmt = tx.prepare(
                "INSERT INTO revmesh_agents (id, replica, applied_seq, connected, remote, version, last_ack_at, seen_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, now())
                 ON CONFLICT (id) DO UPDATE SET replica = EXCLUDED.replica, applied_seq = EXCLUDED.applied_seq,
                     connected = EXCLUDED.connected, remote = EXCLUDED.remote, version = EXCLUDED.version,
                     last_ack_at = EXCLUDED.last_ack_at, seen_at = now()
                 -- A replica may only mark an agent gone while it still owns the row: an agent that
                 -- failed over to another replica stays connected there.
                 WHERE EXCLUDED.connected OR revmesh_agents.replica = EXCLUDED.replica",
            )?;
            for r in &rows {
                let last = r.last_ack_at.map(|v| v as i64);
                tx.execute(
                    &stmt,
                    &[&r.id, &replica, &(r.applied_seq as i64), &r.connected, &r.remote, &r.version, &last],
                )?;
            }
            tx.commit()
        })
    }

    fn agents(&self) -> Result<Vec<AgentRow>, StoreError> {
        let rows = self.with(move |c| {
            c.query(
                "SELECT id, replica, applied_seq, connected AND seen_at > now() - make_interval(secs => $1),
                        remote, version, last_ack_at FROM revmesh_agents ORDER BY id",
                &[&(AGENT_ROW_TTL_SECS as f64)],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| AgentRow {
                id: r.get(0),
                replica: r.get(1),
                applied_seq: r.get::<_, i64>(2) as u64,
                connected: r.get(3),
                remote: r.get(4),
                version: r.get(5),
                last_ack_at: r.get::<_, Option<i64>>(6).map(|v| v as u64),
            })
            .collect())
    }

    fn forget_agent(&self, id: &str) -> Result<Forgotten, StoreError> {
        let id = id.to_owned();
        self.with(move |c| {
            let ttl = AGENT_ROW_TTL_SECS as f64;
            let removed = c.execute(
                "DELETE FROM revmesh_agents WHERE id = $1
                   AND NOT (connected AND seen_at > now() - make_interval(secs => $2))",
                &[&id, &ttl],
            )?;
            if removed > 0 {
                return Ok(Forgotten::Removed);
            }
            let exists = c.query_opt("SELECT 1 FROM revmesh_agents WHERE id = $1", &[&id])?.is_some();
            Ok(if exists { Forgotten::Connected } else { Forgotten::Unknown })
        })
    }
}
