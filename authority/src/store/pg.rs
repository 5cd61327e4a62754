//! The PostgreSQL store: one log shared by several authority replicas.
//!
//! Appends serialise on the `revmesh_meta` row (`SELECT … FOR UPDATE` inside the appending
//! transaction), so seqs are gap-free and commit in seq order: a replica tailing the log can
//! never see seq n+1 before seq n. Each commit sends `NOTIFY revmesh_log`; replicas wake on it
//! and also poll, so a missed notification only delays, never loses. Agent cursors are shared
//! in `revmesh_agents` so receipts and `GET /v1/agents` cover every replica.
//!
//! Operations run on tokio-postgres connections from a deadpool pool of at most [`POOL`]:
//! concurrency is bounded by the pool, not by threads. Every operation — waiting for a
//! connection, connecting, and the statements — must finish within the store timeout; a
//! connection whose operation timed out is taken out of the pool, never reused (after a
//! partition it may never answer again). Readiness probes and the `LISTEN` for other
//! replicas' appends each keep a connection of their own, so a busy pool never makes a healthy
//! database look down.

use super::{
    record, unrecord, AgentRow, AuditDraft, AuditRecord, CursorStore, Forgotten, Loaded, LogStore, Logged,
    Names, NewEntry, SharedLog, StoreError, StoreFuture, Tail,
};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use futures::future::BoxFuture;
use revmesh_protocol::LogId;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// Rows newer than this count as reported by a live replica.
pub const AGENT_ROW_TTL_SECS: u64 = 10;
/// Connections in the pool at most.
pub const POOL: usize = 16;

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
CREATE TABLE IF NOT EXISTS revmesh_audit (
    id bigserial PRIMARY KEY,
    at_ms bigint NOT NULL,
    operator text NOT NULL,
    remote text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    status int NOT NULL
);
CREATE INDEX IF NOT EXISTS revmesh_audit_at ON revmesh_audit (at_ms);
CREATE TABLE IF NOT EXISTS revmesh_leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    until timestamptz NOT NULL
);
";

/// Inserts audit records (one statement for any number) in the caller's transaction.
const INSERT_AUDIT: &str = "INSERT INTO revmesh_audit (at_ms, operator, remote, action, target, status)
    SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[])";

/// The columns of [`INSERT_AUDIT`] for `drafts`, whose entries start at `first_seq`.
type AuditColumns = (Vec<i64>, Vec<String>, Vec<String>, Vec<String>, Vec<String>, Vec<i32>);

fn audit_columns(drafts: &[AuditDraft], first_seq: u64) -> AuditColumns {
    let mut cols = AuditColumns::default();
    for d in drafts {
        let r = d.finish(0, first_seq);
        cols.0.push(r.at_ms as i64);
        cols.1.push(r.operator);
        cols.2.push(r.remote);
        cols.3.push(r.action);
        cols.4.push(r.target);
        cols.5.push(i32::from(r.status));
    }
    cols
}

fn db(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend { backend: "postgres", message: describe(&e), source: Box::new(e) }
}

/// A PostgreSQL error as operators read it: the SQLSTATE and the server's message when the
/// server answered, the client's description otherwise.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.code().code(), d.message()),
        None => e.to_string(),
    }
}

/// A pooled client for one database, shared by every task of this replica.
pub struct PgStore {
    config: tokio_postgres::Config,
    pool: Pool,
    timeout: Duration,
    replica: String,
    new_log_id: LogId,
    /// The readiness probe's own connection.
    probe: tokio::sync::Mutex<Option<Client>>,
    /// The `LISTEN revmesh_log` connection and the signal its driver raises per notification.
    listener: tokio::sync::Mutex<Option<Listener>>,
}

struct Listener {
    client: Client,
    notified: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("replica", &self.replica).finish()
    }
}

/// A statement sequence run on one pooled connection.
type Op<'c, T> = BoxFuture<'c, Result<T, tokio_postgres::Error>>;

impl PgStore {
    /// A store for `url`; `replica` names this authority in `revmesh_agents`; every operation
    /// (waiting for a connection, connecting, statements) is bounded by `timeout`.
    pub fn new(url: &str, replica: String, new_log_id: LogId, timeout: Duration) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(db)?;
        let ms = timeout.as_millis().max(1);
        config
            .connect_timeout(timeout)
            .application_name("revmesh-authority")
            // The server cancels a statement stalled on a lock held by a partitioned replica,
            // and ends a transaction whose client went silent, releasing its locks.
            .options(format!("-c statement_timeout={ms} -c idle_in_transaction_session_timeout={}", ms * 2))
            // The kernel ends connections whose peer vanished.
            .tcp_user_timeout(timeout * 2)
            .keepalives(true)
            .keepalives_idle(timeout)
            .keepalives_interval(Duration::from_secs(1))
            .keepalives_retries(3);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        Ok(Self {
            config,
            pool,
            timeout,
            replica,
            new_log_id,
            probe: tokio::sync::Mutex::new(None),
            listener: tokio::sync::Mutex::new(None),
        })
    }

    /// Gives the log a new id, keeping its entries (`revmesh-authority restore --store …`
    /// after `pg_restore`): agents adopt it with a snapshot and keep what they enforce
    /// (PROTOCOL.md §9.9). Returns the old id and the head. Every replica must be stopped.
    pub async fn rotate_log_id(&self) -> Result<(LogId, u64), StoreError> {
        let client = self.connect(None).await?;
        let row = client
            .query_one(
                "WITH old AS (SELECT log_id, head FROM revmesh_meta WHERE id = 1 FOR UPDATE) \
                 UPDATE revmesh_meta m SET log_id = $1 FROM old WHERE m.id = 1 RETURNING old.log_id, old.head",
                &[&self.new_log_id.0.to_vec()],
            )
            .await
            .map_err(db)?;
        let old: Vec<u8> = row.get(0);
        let head: i64 = row.get(1);
        let old = LogId(old.try_into().map_err(|_| StoreError::Meta("`log_id` is not 16 bytes".into()))?);
        Ok((old, u64::try_from(head).unwrap_or(0)))
    }

    /// A connection of its own (not pooled), its connection driven until the client drops;
    /// `notified` is raised for every notification it receives.
    async fn connect(&self, notified: Option<Arc<tokio::sync::Notify>>) -> Result<Client, StoreError> {
        let (client, mut conn) = tokio::time::timeout(self.timeout, self.config.connect(NoTls))
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
            .map_err(db)?;
        // The driver ends with the connection: when the client is dropped, or the server or
        // the network ends it.
        tokio::spawn(async move {
            while let Some(msg) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                match msg {
                    Ok(AsyncMessage::Notification(_)) => {
                        if let Some(n) = &notified {
                            n.notify_one();
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            if let Some(n) = &notified {
                n.notify_one();
            }
        });
        Ok(client)
    }

    /// Runs `op` on a pooled connection within `limit` (the wait for the connection included).
    /// A connection whose operation failed at the connection level or timed out is taken out
    /// of the pool.
    async fn run<T>(
        &self,
        limit: Duration,
        op: impl for<'c> FnOnce(&'c mut Object) -> Op<'c, T>,
    ) -> Result<T, StoreError> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut client = match tokio::time::timeout_at(deadline, self.pool.get()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(pool_error(e)),
            Err(_) => return Err(StoreError::Timeout(limit)),
        };
        let outcome = tokio::time::timeout_at(deadline, op(&mut client)).await;
        match outcome {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_closed() || e.as_db_error().is_none() {
                    let _ = Object::take(client);
                }
                Err(db(e))
            }
            Err(_) => {
                let _ = Object::take(client);
                Err(StoreError::Timeout(limit))
            }
        }
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db(e),
        other => StoreError::Pool(other.to_string()),
    }
}

fn rows_to_entries(rows: &[tokio_postgres::Row]) -> Result<Vec<Logged>, StoreError> {
    let mut names = Names::default();
    rows.iter()
        .map(|r| {
            let seq: i64 = r.get(0);
            let bytes: Vec<u8> = r.get(1);
            unrecord(seq as u64, &bytes, &mut names)
        })
        .collect()
}

impl LogStore for PgStore {
    fn load(self: Arc<Self>) -> StoreFuture<Loaded> {
        Box::pin(async move {
            let new_id = self.new_log_id.0.to_vec();
            // Reading a large log at start may take longer than one revocation's commit may.
            let limit = (self.timeout * 12).max(Duration::from_secs(60));
            let (log_id, head, floor, rows) = self
                .run(limit, |c| {
                    Box::pin(async move {
                        // Replicas starting together must not race on CREATE TABLE: one at a time.
                        let tx = c.transaction().await?;
                        tx.execute("SELECT pg_advisory_xact_lock(7415000001)", &[]).await?;
                        tx.batch_execute(SCHEMA).await?;
                        tx.execute(
                            "INSERT INTO revmesh_meta (id, log_id, head, floor) VALUES (1, $1, 0, 0) ON CONFLICT (id) DO NOTHING",
                            &[&new_id],
                        )
                        .await?;
                        tx.commit().await?;
                        let tx = c
                            .build_transaction()
                            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                            .start()
                            .await?;
                        tx.batch_execute(&format!("SET LOCAL statement_timeout = {}", limit.as_millis())).await?;
                        let m = tx.query_one("SELECT log_id, head, floor FROM revmesh_meta WHERE id = 1", &[]).await?;
                        let rows = tx.query("SELECT seq, record FROM revmesh_entries ORDER BY seq", &[]).await?;
                        tx.commit().await?;
                        Ok((m.get::<_, Vec<u8>>(0), m.get::<_, i64>(1), m.get::<_, i64>(2), rows))
                    })
                })
                .await?;
            let log_id =
                LogId(log_id.try_into().map_err(|_| StoreError::Meta("`log_id` is not 16 bytes".into()))?);
            Ok(Loaded { log_id, head: head as u64, floor: floor as u64, entries: rows_to_entries(&rows)? })
        })
    }

    /// A write that is rolled back, on the probe's own connection: a server that can read but
    /// not write is not ready, and a pool busy with receipts does not make it look down.
    fn probe(self: Arc<Self>) -> StoreFuture<()> {
        Box::pin(async move {
            let mut guard = self.probe.lock().await;
            if guard.as_ref().is_none_or(|c| c.is_closed()) {
                *guard = Some(self.connect(None).await?);
            }
            let Some(c) = guard.as_mut() else { return Ok(()) };
            let probe = async {
                let tx = c.transaction().await?;
                tx.execute("UPDATE revmesh_meta SET floor = floor WHERE id = 1", &[]).await?;
                tx.rollback().await
            };
            match tokio::time::timeout(self.timeout, probe).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => {
                    *guard = None;
                    Err(db(e))
                }
                Err(_) => {
                    *guard = None;
                    Err(StoreError::Timeout(self.timeout))
                }
            }
        })
    }

    fn append(
        self: Arc<Self>,
        _head: u64,
        batch: Vec<NewEntry>,
        audit: Vec<AuditDraft>,
    ) -> StoreFuture<Vec<Logged>> {
        Box::pin(async move {
            let timeout = self.timeout;
            self.run(timeout, move |c| {
                Box::pin(async move {
                    let c: &Object = c;
                    let head_stmt = c.prepare_cached("SELECT head FROM revmesh_meta WHERE id = 1 FOR UPDATE").await?;
                    let insert = c
                        .prepare_cached(
                            "INSERT INTO revmesh_entries (seq, record) SELECT * FROM UNNEST($1::bigint[], $2::bytea[])",
                        )
                        .await?;
                    let set_head = c.prepare_cached("UPDATE revmesh_meta SET head = $1 WHERE id = 1").await?;
                    let notify = c.prepare_cached("SELECT pg_notify('revmesh_log', $1)").await?;
                    let insert_audit = c.prepare_cached(INSERT_AUDIT).await?;
                    let appended = async {
                        // One round trip: open the transaction and take the head's row lock,
                        // which serialises appenders across replicas (seqs commit in order).
                        let ((), row) = futures::try_join!(c.batch_execute("BEGIN"), c.query_one(&head_stmt, &[]))?;
                        let head = row.get::<_, i64>(0) as u64;
                        let mut out = Vec::with_capacity(batch.len());
                        let mut seqs = Vec::with_capacity(batch.len());
                        let mut records = Vec::with_capacity(batch.len());
                        for (i, n) in batch.iter().enumerate() {
                            let entry = n.sequenced(head + 1 + i as u64);
                            match record(&entry, n.by.as_deref()) {
                                Ok(r) => records.push(r),
                                Err(e) => return Ok(Err(e)),
                            }
                            seqs.push(entry.seq as i64);
                            out.push(Logged { entry, by: n.by.clone() });
                        }
                        // In the same transaction: no entry without the record of its request.
                        let a = audit_columns(&audit, head + 1);
                        let p4: [&(dyn ToSql + Sync); 6] = [&a.0, &a.1, &a.2, &a.3, &a.4, &a.5];
                        let new_head = (head + batch.len() as u64) as i64;
                        let new_head_text = new_head.to_string();
                        // One round trip: store, move the head, notify, commit. PostgreSQL runs
                        // them in order; if one fails the transaction is aborted, its COMMIT
                        // becomes a rollback, and the failure is what this returns.
                        let p1: [&(dyn ToSql + Sync); 2] = [&seqs, &records];
                        let p2: [&(dyn ToSql + Sync); 1] = [&new_head];
                        let p3: [&(dyn ToSql + Sync); 1] = [&new_head_text];
                        futures::try_join!(
                            c.execute(&insert, &p1),
                            c.execute(&set_head, &p2),
                            c.execute(&notify, &p3),
                            c.execute(&insert_audit, &p4),
                            c.batch_execute("COMMIT"),
                        )?;
                        Ok(Ok(out))
                    }
                    .await;
                    if !matches!(appended, Ok(Ok(_))) {
                        // The connection goes back to the pool: never inside a transaction.
                        let _ = c.batch_execute("ROLLBACK").await;
                    }
                    appended
                })
            })
            .await?
        })
    }

    fn compact(self: Arc<Self>, floor: u64, seqs: Vec<u64>) -> StoreFuture<()> {
        Box::pin(async move {
            let seqs: Vec<i64> = seqs.iter().map(|s| *s as i64).collect();
            let timeout = self.timeout;
            self.run(timeout, move |c| {
                Box::pin(async move {
                    let tx = c.transaction().await?;
                    tx.execute("DELETE FROM revmesh_entries WHERE seq = ANY($1)", &[&seqs]).await?;
                    tx.execute(
                        "UPDATE revmesh_meta SET floor = GREATEST(floor, $1) WHERE id = 1",
                        &[&(floor as i64)],
                    )
                    .await?;
                    tx.commit().await
                })
            })
            .await
        })
    }

    fn record_audit(self: Arc<Self>, audit: Vec<AuditDraft>) -> StoreFuture<()> {
        Box::pin(async move {
            let timeout = self.timeout;
            self.run(timeout, move |c| {
                Box::pin(async move {
                    // Under the head's row lock, as appends: ids become visible in order.
                    let tx = c.transaction().await?;
                    tx.execute("SELECT 1 FROM revmesh_meta WHERE id = 1 FOR UPDATE", &[]).await?;
                    let a = audit_columns(&audit, 0);
                    tx.execute(INSERT_AUDIT, &[&a.0, &a.1, &a.2, &a.3, &a.4, &a.5]).await?;
                    tx.commit().await
                })
            })
            .await
        })
    }

    fn audit_after(self: Arc<Self>, after: u64, limit: usize) -> StoreFuture<Vec<AuditRecord>> {
        Box::pin(async move {
            let timeout = self.timeout;
            let rows = self
                .run(timeout, move |c| {
                    Box::pin(async move {
                        c.query(
                            "SELECT id, at_ms, operator, remote, action, target, status FROM revmesh_audit
                             WHERE id > $1 ORDER BY id LIMIT $2",
                            &[&(after.min(i64::MAX as u64) as i64), &(limit as i64)],
                        )
                        .await
                    })
                })
                .await?;
            Ok(rows
                .iter()
                .map(|r| AuditRecord {
                    id: r.get::<_, i64>(0) as u64,
                    at_ms: r.get::<_, i64>(1) as u64,
                    operator: r.get(2),
                    remote: r.get(3),
                    action: r.get(4),
                    target: r.get(5),
                    status: u16::try_from(r.get::<_, i32>(6)).unwrap_or(0),
                })
                .collect())
        })
    }

    fn expire_audit(self: Arc<Self>, before_ms: u64) -> StoreFuture<u64> {
        Box::pin(async move {
            let timeout = self.timeout;
            self.run(timeout, move |c| {
                Box::pin(async move {
                    c.execute(
                        "DELETE FROM revmesh_audit WHERE at_ms < $1",
                        &[&(before_ms.min(i64::MAX as u64) as i64)],
                    )
                    .await
                })
            })
            .await
        })
    }

    fn read_after(self: Arc<Self>, after: u64) -> StoreFuture<Tail> {
        Box::pin(async move {
            let timeout = self.timeout;
            let (head, floor, rows) = self
                .run(timeout, move |c| {
                    Box::pin(async move {
                        let c: &Object = c;
                        let meta = c.prepare_cached("SELECT head, floor FROM revmesh_meta WHERE id = 1").await?;
                        let tail = c
                            .prepare_cached(
                                "SELECT seq, record FROM revmesh_entries WHERE seq > $1 ORDER BY seq LIMIT 100000",
                            )
                            .await?;
                        let after = after as i64;
                        let params: [&(dyn ToSql + Sync); 1] = [&after];
                        // One round trip: one consistent snapshot of the head and the tail.
                        let read = futures::try_join!(
                            c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
                            c.query_one(&meta, &[]),
                            c.query(&tail, &params),
                            c.batch_execute("COMMIT"),
                        );
                        match read {
                            Ok(((), m, rows, ())) => Ok((m.get::<_, i64>(0), m.get::<_, i64>(1), rows)),
                            Err(e) => {
                                let _ = c.batch_execute("ROLLBACK").await;
                                Err(e)
                            }
                        }
                    })
                })
                .await?;
            let entries = rows_to_entries(&rows)?;
            // A capped read stops short of the head; the next read continues from there.
            let head = if entries.len() == 100_000 {
                entries.last().map_or(head as u64, |e| e.seq)
            } else {
                head as u64
            };
            Ok(Tail { entries, head, floor: floor as u64 })
        })
    }
}

impl SharedLog for PgStore {
    fn wait_for_change(self: Arc<Self>, timeout: Duration) -> StoreFuture<()> {
        Box::pin(async move {
            let notified = {
                let mut guard = self.listener.lock().await;
                if guard.as_ref().is_none_or(|l| l.client.is_closed()) {
                    let notified = Arc::new(tokio::sync::Notify::new());
                    let client = self.connect(Some(notified.clone())).await?;
                    tokio::time::timeout(self.timeout, client.batch_execute("LISTEN revmesh_log"))
                        .await
                        .map_err(|_| StoreError::Timeout(self.timeout))?
                        .map_err(db)?;
                    *guard = Some(Listener { client, notified });
                }
                guard.as_ref().map(|l| l.notified.clone())
            };
            if let Some(n) = notified {
                // A notification that came while nobody waited left a permit: not lost.
                let _ = tokio::time::timeout(timeout, n.notified()).await;
            }
            Ok(())
        })
    }
}

impl CursorStore for PgStore {
    fn lease(self: Arc<Self>, name: String, ttl: Duration) -> StoreFuture<bool> {
        Box::pin(async move {
            let replica = self.replica.clone();
            let timeout = self.timeout;
            let row = self
                .run(timeout, move |c| {
                    Box::pin(async move {
                        // Taken when free or expired, renewed by its holder; the database's clock
                        // decides, so replicas' clocks need not agree.
                        c.query_opt(
                            "INSERT INTO revmesh_leases (name, holder, until)
                             VALUES ($1, $2, now() + make_interval(secs => $3))
                             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until
                             WHERE revmesh_leases.holder = EXCLUDED.holder OR revmesh_leases.until < now()
                             RETURNING holder",
                            &[&name, &replica, &ttl.as_secs_f64()],
                        )
                        .await
                    })
                })
                .await?;
            Ok(row.is_some())
        })
    }

    fn publish_agents(self: Arc<Self>, rows: Vec<AgentRow>) -> StoreFuture<()> {
        Box::pin(async move {
            if rows.is_empty() {
                return Ok(());
            }
            let replica = self.replica.clone();
            let timeout = self.timeout;
            self.run(timeout, move |c| {
                Box::pin(async move {
                    let tx = c.transaction().await?;
                    let stmt = tx
                        .prepare_cached(
                            "INSERT INTO revmesh_agents (id, replica, applied_seq, connected, remote, version, last_ack_at, seen_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, now())
                 ON CONFLICT (id) DO UPDATE SET replica = EXCLUDED.replica, applied_seq = EXCLUDED.applied_seq,
                     connected = EXCLUDED.connected, remote = EXCLUDED.remote, version = EXCLUDED.version,
                     last_ack_at = EXCLUDED.last_ack_at, seen_at = now()
                 -- A replica may only mark an agent gone while it still owns the row: an agent that
                 -- failed over to another replica stays connected there.
                 WHERE EXCLUDED.connected OR revmesh_agents.replica = EXCLUDED.replica",
                        )
                        .await?;
                    let lasts: Vec<Option<i64>> = rows.iter().map(|r| r.last_ack_at.map(|v| v as i64)).collect();
                    let applied: Vec<i64> = rows.iter().map(|r| r.applied_seq as i64).collect();
                    // The rows' upserts in one round trip.
                    let params: Vec<[&(dyn ToSql + Sync); 7]> = rows
                        .iter()
                        .zip(&lasts)
                        .zip(&applied)
                        .map(|((r, last), applied)| {
                            [
                                &r.id as &(dyn ToSql + Sync),
                                &replica,
                                applied,
                                &r.connected,
                                &r.remote,
                                &r.version,
                                last,
                            ]
                        })
                        .collect();
                    futures::future::try_join_all(params.iter().map(|p| tx.execute(&stmt, p))).await?;
                    tx.commit().await
                })
            })
            .await
        })
    }

    fn agents(self: Arc<Self>) -> StoreFuture<Vec<AgentRow>> {
        Box::pin(async move {
            let timeout = self.timeout;
            let rows = self
                .run(timeout, |c| {
                    Box::pin(async move {
                        let stmt = c
                            .prepare_cached(
                                "SELECT id, replica, applied_seq, connected AND seen_at > now() - make_interval(secs => $1),
                        remote, version, last_ack_at FROM revmesh_agents ORDER BY id",
                            )
                            .await?;
                        c.query(&stmt, &[&(AGENT_ROW_TTL_SECS as f64)]).await
                    })
                })
                .await?;
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
        })
    }

    fn forget_agent(self: Arc<Self>, id: String, audit: AuditDraft) -> StoreFuture<Forgotten> {
        Box::pin(async move {
            let timeout = self.timeout;
            self.run(timeout, move |c| {
                Box::pin(async move {
                    let ttl = AGENT_ROW_TTL_SECS as f64;
                    let tx = c.transaction().await?;
                    let removed = tx
                        .execute(
                            "DELETE FROM revmesh_agents WHERE id = $1
                   AND NOT (connected AND seen_at > now() - make_interval(secs => $2))",
                            &[&id, &ttl],
                        )
                        .await?;
                    if removed > 0 {
                        // The forget and its record commit together; the record's id is taken
                        // under the head's row lock, as appends take theirs, so ids become
                        // visible in order and `?after=` paging never skips one.
                        tx.execute("SELECT 1 FROM revmesh_meta WHERE id = 1 FOR UPDATE", &[]).await?;
                        let a = audit_columns(std::slice::from_ref(&audit), 0);
                        tx.execute(INSERT_AUDIT, &[&a.0, &a.1, &a.2, &a.3, &a.4, &a.5]).await?;
                        tx.commit().await?;
                        return Ok(Forgotten::Removed);
                    }
                    tx.rollback().await?;
                    let exists =
                        c.query_opt("SELECT 1 FROM revmesh_agents WHERE id = $1", &[&id]).await?.is_some();
                    Ok(if exists { Forgotten::Connected } else { Forgotten::Unknown })
                })
            })
            .await
        })
    }
}
