//! What several scenarios share: the in-process fleet, admin calls, paced revocations, and the line-protocol request loops.

use crate::procs::AuthorityProc;
use crate::util::{summarize, Summary};
use futures::future::BoxFuture;
use revmesh_agent::link::{self, LinkSettings};
use revmesh_agent::state::AgentState;
use revmesh_protocol::RevocationSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

/// One in-process agent: its state, its stop switch and its link task.
pub type Member = (Arc<AgentState>, CancellationToken, tokio::task::JoinHandle<()>);

/// In-process agents on the real agent library.
pub struct Fleet {
    /// Their states.
    pub agents: Vec<Member>,
}

impl Fleet {
    /// Starts `n` agents against `url`.
    pub fn start(n: usize, url: &str, prefix: &str) -> anyhow::Result<Fleet> {
        let mut agents = Vec::with_capacity(n);
        for i in 0..n {
            agents.push(Self::one(url, &format!("{prefix}-{i}"), RevocationSet::new(), None, 0)?);
        }
        Ok(Fleet { agents })
    }

    /// One agent: `urls` in failover order, starting from `from` (set, log id, applied seq),
    /// TLS when `tls` is given.
    pub fn spawn(
        urls: Vec<String>,
        id: &str,
        from: (RevocationSet, Option<revmesh_protocol::LogId>, u64),
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> anyhow::Result<Member> {
        let metrics = revmesh_agent::metrics::Metrics::new()?;
        let (set, log_id, applied) = from;
        let state =
            Arc::new(AgentState::new(set, log_id, applied, None, Duration::from_secs(3600), false, metrics));
        let stop = CancellationToken::new();
        let mut s = LinkSettings::new(urls, id.to_owned());
        s.tls = tls;
        s.reconnect_min = Duration::from_millis(50);
        s.reconnect_max = Duration::from_secs(2);
        let task = tokio::spawn(link::run(s, state.clone(), None, stop.clone()));
        Ok((state, stop, task))
    }

    fn one(
        url: &str,
        id: &str,
        set: RevocationSet,
        log_id: Option<revmesh_protocol::LogId>,
        applied: u64,
    ) -> anyhow::Result<Member> {
        Self::spawn(vec![url.to_owned()], id, (set, log_id, applied), None)
    }

    /// Restarts agent `i` from its current in-memory state (a link cut followed by reconnect).
    pub async fn bounce(&mut self, i: usize, url: &str, id: &str) -> anyhow::Result<()> {
        let (state, stop, task) = &mut self.agents[i];
        stop.cancel();
        let _ = task.await;
        let p = state.persisted();
        self.agents[i] = Self::one(url, id, RevocationSet::restore(p.set), p.log_id, p.applied_seq)?;
        Ok(())
    }

    /// Stops every agent.
    pub async fn stop(self) {
        for (_, s, _) in &self.agents {
            s.cancel();
        }
        for (_, _, t) in self.agents {
            let _ = t.await;
        }
    }
}

pub(crate) async fn call(
    auth: &AuthorityProc,
    method: &'static str,
    path: String,
    body: String,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let (admin, token) = (auth.admin.clone(), auth.token.clone());
    tokio::task::spawn_blocking(move || {
        let (s, t) = revmesh_authority::cli::http_request(
            &admin,
            method,
            &path,
            Some(&token),
            body.as_bytes(),
            Duration::from_secs(60),
        )
        .map_err(anyhow::Error::msg)?;
        Ok((s, serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t))))
    })
    .await?
}

pub(crate) async fn connected(auth: &AuthorityProc) -> u64 {
    call(auth, "GET", "/v1/status".into(), String::new())
        .await
        .ok()
        .and_then(|(_, v)| v["agents_connected"].as_u64())
        .unwrap_or(0)
}

/// Waits until `n` agents are connected to `auth` (at most two minutes).
pub(crate) async fn wait_connected(auth: &AuthorityProc, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let up = connected(auth).await;
        if up >= n as u64 {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "only {up} of {n} agents connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `count` revocations at `rate`, each waited for with `?wait={wait}` (`all` or `applied`):
/// each one's time from the admin call to its receipt, and how many receipts still named
/// agents without it.
pub(crate) async fn receipts_at_rate(
    auth: &AuthorityProc,
    prefix: &str,
    count: usize,
    rate: f64,
    wait: &str,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let mut lat = Vec::with_capacity(count);
    let mut incomplete = 0;
    let gap = Duration::from_secs_f64(1.0 / rate);
    let exp = revmesh_runtime::Clock::system().unix_secs() + 3600;
    for i in 0..count {
        let next = Instant::now() + gap;
        let body = format!(r#"{{"kind":"jti","jti":"{prefix}-{i}","expires_at":{exp}}}"#);
        let t0 = Instant::now();
        let (status, v) =
            call(auth, "POST", format!("/v1/revocations?wait={wait}&timeout_ms=30000"), body).await?;
        lat.push(t0.elapsed());
        anyhow::ensure!(status == 201, "revocation failed: {v}");
        let named = |k: &str| v[k].as_array().is_some_and(|a| !a.is_empty());
        if named("pending") || named("disconnected") {
            incomplete += 1;
        }
        tokio::time::sleep_until(next.into()).await;
    }
    Ok((lat, incomplete))
}

/// Writes `n` revocations in bulk requests of up to 1,000 (unexpiring for the run's length).
pub(crate) async fn post_backlog(auth: &AuthorityProc, n: usize) -> anyhow::Result<()> {
    let exp = revmesh_runtime::Clock::system().unix_secs() + 3600;
    for start in (0..n).step_by(1000) {
        let one = |i: usize| format!(r#"{{"kind":"jti","jti":"backlog-{i}","expires_at":{exp}}}"#);
        let body = format!("[{}]", (start..n.min(start + 1000)).map(one).collect::<Vec<_>>().join(","));
        let (st, v) = call(auth, "POST", "/v1/revocations".into(), body).await?;
        anyhow::ensure!(st == 201, "backlog: {v}");
    }
    Ok(())
}

pub(crate) fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

/// `clients` blocking HTTP clients spread over `reps`, revoking for `dur`; every call's latency.
pub(crate) async fn post_load(
    reps: &[AuthorityProc],
    clients: usize,
    dur: Duration,
) -> anyhow::Result<Vec<Duration>> {
    post_load_batched(reps, clients, 1, dur).await
}

/// As [`post_load`], each request carrying `batch` revocations (an array when `batch > 1`);
/// one latency per request.
pub(crate) async fn post_load_batched(
    reps: &[AuthorityProc],
    clients: usize,
    batch: usize,
    dur: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let stop = Instant::now() + dur;
    let exp = revmesh_runtime::Clock::system().unix_secs() + 3600;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let r = &reps[c % reps.len()];
        let (admin, token) = (r.admin.clone(), r.token.clone());
        tasks.push(tokio::task::spawn_blocking(move || {
            let mut lat = Vec::new();
            while Instant::now() < stop {
                let one = |i: usize| {
                    format!(r#"{{"kind":"jti","jti":"load-{c}-{}-{i}","expires_at":{exp}}}"#, lat.len())
                };
                let body = if batch == 1 {
                    one(0)
                } else {
                    format!("[{}]", (0..batch).map(one).collect::<Vec<_>>().join(","))
                };
                let t0 = Instant::now();
                let (status, _) = revmesh_authority::cli::http_request(
                    &admin,
                    "POST",
                    "/v1/revocations",
                    Some(&token),
                    body.as_bytes(),
                    Duration::from_secs(30),
                )
                .map_err(anyhow::Error::msg)?;
                anyhow::ensure!(status == 201, "status {status}");
                lat.push(t0.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    Ok(lat)
}

pub(crate) async fn sequential(socket: &Path, line: &str, n: usize, expect: &str) -> anyhow::Result<Summary> {
    sequential_with(socket, line, n, expect, |_| {}).await
}

/// `n` requests of `line` one at a time on one connection (after `n / 10` unmeasured), each
/// answer starting with `expect`; `before(i)` runs before request `i`.
pub(crate) async fn sequential_with(
    socket: &Path,
    line: &str,
    n: usize,
    expect: &str,
    mut before: impl FnMut(usize),
) -> anyhow::Result<Summary> {
    let s = UnixStream::connect(socket).await?;
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let mut answer = String::new();
    let req = format!("{line}\n");
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        before(i);
        let t0 = Instant::now();
        w.write_all(req.as_bytes()).await?;
        answer.clear();
        r.read_line(&mut answer).await?;
        if i >= n / 10 {
            lat.push(t0.elapsed());
        }
        anyhow::ensure!(answer.starts_with(expect), "unexpected answer {answer:?} to {line:.40}");
    }
    Ok(summarize(lat))
}

/// Reads one answer from a connection of [`throughput_with`] (`buf` is scratch space).
pub(crate) type ReadAnswer =
    for<'a> fn(&'a mut BufReader<OwnedReadHalf>, &'a mut String) -> BoxFuture<'a, anyhow::Result<()>>;

/// Requests per second over `conns` connections to `socket` for `dur`, each connection sending
/// `request` and reading its answer with `read`, one at a time.
pub(crate) async fn throughput_with(
    socket: &Path,
    request: &[u8],
    conns: usize,
    dur: Duration,
    read: ReadAnswer,
) -> anyhow::Result<f64> {
    let stop = Instant::now() + dur;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (socket, request) = (socket.to_owned(), request.to_owned());
        tasks.push(tokio::spawn(async move {
            let (r, mut w) = UnixStream::connect(&socket).await?.into_split();
            let mut r = BufReader::new(r);
            let mut buf = String::new();
            let mut n = 0u64;
            while Instant::now() < stop {
                w.write_all(&request).await?;
                read(&mut r, &mut buf).await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / dur.as_secs_f64())
}

/// [`throughput_with`] for the line protocol: `line` and its one-line answer.
pub(crate) async fn throughput(
    socket: &Path,
    line: &str,
    conns: usize,
    dur: Duration,
) -> anyhow::Result<f64> {
    fn one_line<'a>(
        r: &'a mut BufReader<OwnedReadHalf>,
        buf: &'a mut String,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            buf.clear();
            r.read_line(buf).await?;
            Ok(())
        })
    }
    throughput_with(socket, format!("{line}\n").as_bytes(), conns, dur, one_line).await
}
