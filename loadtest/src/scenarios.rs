//! The measured scenarios. Every figure comes with a baseline measured in the same run.

use crate::procs::AuthorityProc;
use crate::util::{free_port, mint, resp, summarize, wait_until, Summary};
use anyhow::Context;
use revmesh_agent::link::{self, LinkSettings};
use revmesh_agent::state::AgentState;
use revmesh_protocol::{RevocationSet, TokenRef};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

/// A throwaway P-256 key pair for ES256 measurements (test material, not a secret).
const ES256_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgwK8lIZnXkMEXzuON
noaHHKDxtB2u8YHHgf8a9Nt6TqehRANCAARkRPXlQMoYoeNtZPN2HVjrdIqLzPy0
4Tr1BkIFxPpsz7N1S+XC1WkljXIqMPNvL89kQG/32O6jexo4yTpvz3w3
-----END PRIVATE KEY-----
";
const ES256_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEZET15UDKGKHjbWTzdh1Y63SKi8z8
tOE69QZCBcT6bM+zdUvlwtVpJY1yKjDzby/PZEBv99juo3saOMk6b898Nw==
-----END PUBLIC KEY-----
";

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

async fn call(
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

async fn connected(auth: &AuthorityProc) -> u64 {
    call(auth, "GET", "/v1/status".into(), String::new())
        .await
        .ok()
        .and_then(|(_, v)| v["agents_connected"].as_u64())
        .unwrap_or(0)
}

/// Waits until `n` agents are connected to `auth` (at most two minutes).
async fn wait_connected(auth: &AuthorityProc, n: usize) -> anyhow::Result<()> {
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
async fn receipts_at_rate(
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

/// Propagation result at one fleet size.
#[derive(Debug, Serialize)]
pub struct Propagation {
    /// Agents.
    pub agents: usize,
    /// Revocations measured.
    pub revocations: usize,
    /// Admin call → receipt with every agent acked.
    pub revoke_to_all_acked: Summary,
    /// Receipts that timed out with agents pending.
    pub incomplete: usize,
    /// Authority RSS divided by agents.
    pub authority_rss_per_agent_bytes: u64,
    /// Authority CPU per revocation divided by agents, microseconds (from /proc).
    pub authority_cpu_per_link_us: f64,
    /// This process's CPU per revocation divided by agents, microseconds: the in-process
    /// agents (decode, apply, ack) and the admin client.
    pub fleet_cpu_per_agent_us: f64,
}

/// Revocations at a steady rate; each one's time from the admin call to the last agent's ack.
pub async fn propagation(dir: &Path, agents: usize, count: usize, rate: f64) -> anyhow::Result<Propagation> {
    let max = (agents + 64).to_string();
    let auth = AuthorityProc::start(
        &dir.join(format!("prop-{agents}")),
        "127.0.0.1:0",
        &["--max-agents", &max, "--max-catchups", &max],
    )?;
    let fleet = Fleet::start(agents, &auth.ws, "p")?;
    wait_connected(&auth, agents).await?;
    let rss_idle = auth.proc.rss().unwrap_or(0);
    use crate::procs::{cpu_ticks, ticks_to_us};
    let (auth_pid, me) = (auth.proc.child.id(), std::process::id());
    let (auth0, me0) = (cpu_ticks(auth_pid)?, cpu_ticks(me)?);
    let (lat, incomplete) = receipts_at_rate(&auth, "prop", count, rate, "all").await?;
    let per = |ticks: u64| ticks_to_us(ticks) / count.max(1) as f64 / agents.max(1) as f64;
    let (auth_us, fleet_us) = (per(cpu_ticks(auth_pid)? - auth0), per(cpu_ticks(me)? - me0));
    fleet.stop().await;
    Ok(Propagation {
        agents,
        revocations: count,
        revoke_to_all_acked: summarize(lat),
        incomplete,
        authority_rss_per_agent_bytes: rss_idle / agents.max(1) as u64,
        authority_cpu_per_link_us: auth_us,
        fleet_cpu_per_agent_us: fleet_us,
    })
}

/// Latency and throughput of one kind of request.
#[derive(Debug, Serialize)]
pub struct Checks {
    /// What was asked.
    pub request: String,
    /// One connection, sequential.
    pub sequential: Summary,
    /// Requests per second over 32 connections.
    pub throughput_32: f64,
    /// CPU of the serving process per sequential request, microseconds (from /proc).
    pub server_cpu_us: Option<f64>,
}

/// `sequential`, with the CPU `pid` used per request.
async fn sequential_cpu(
    pid: Option<u32>,
    socket: &Path,
    line: &str,
    n: usize,
    expect: &str,
) -> anyhow::Result<(Summary, Option<f64>)> {
    use crate::procs::{cpu_ticks, ticks_to_us};
    let before = pid.map(cpu_ticks).transpose()?;
    let seq = sequential(socket, line, n, expect).await?;
    let cpu = match (pid, before) {
        (Some(p), Some(b)) => Some(ticks_to_us(cpu_ticks(p)? - b) / (n + n / 10) as f64),
        _ => None,
    };
    Ok((seq, cpu))
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

async fn throughput(socket: &Path, line: &str, conns: usize, dur: Duration) -> anyhow::Result<f64> {
    let stop = Instant::now() + dur;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let socket = socket.to_owned();
        let req = format!("{line}\n");
        tasks.push(tokio::spawn(async move {
            let s = UnixStream::connect(&socket).await?;
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            let mut answer = String::new();
            let mut n = 0u64;
            while Instant::now() < stop {
                w.write_all(req.as_bytes()).await?;
                answer.clear();
                r.read_line(&mut answer).await?;
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

/// Connections the echo floor serves at once (the checks scenario opens 33).
const ECHO_MAX_CONNS: usize = 256;

/// A bare Unix-socket line echo server, the floor any socket protocol pays: one thread, an
/// epoll loop, and per request the three system calls Redis and the agent make (`epoll_wait`,
/// one `read`, one `write`), with no runtime and no decision. It runs as its own process
/// (`revmesh-loadtest echo-server`), so its CPU per request is read from /proc like the
/// agent's and Redis's. Prints `ready` once it listens.
pub fn echo_server(path: &Path) -> anyhow::Result<()> {
    use mio::net::UnixListener;
    use mio::{Events, Interest, Poll, Token};
    use std::collections::HashMap;
    use std::io::ErrorKind;
    const LISTENER: Token = Token(usize::MAX);
    let mut poll = Poll::new()?;
    let mut listener = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("ready");
    let mut conns: HashMap<Token, EchoConn> = HashMap::new();
    let mut next = 0usize;
    let mut events = Events::with_capacity(256);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        for ev in &events {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) if conns.len() < ECHO_MAX_CONNS => {
                            let t = Token(next);
                            next += 1;
                            poll.registry().register(&mut stream, t, Interest::READABLE)?;
                            conns.insert(t, EchoConn { stream, buf: [0; 4096], have: 0 });
                        }
                        Ok(_) => {}      // over the cap: dropped, closed at once
                        Err(_) => break, // WouldBlock: none left
                    }
                }
            } else if let Some(c) = conns.get_mut(&ev.token()) {
                if !c.echo() {
                    conns.remove(&ev.token());
                }
            }
        }
    }
}

/// One echo connection: bytes read that do not yet end a line.
struct EchoConn {
    stream: mio::net::UnixStream,
    buf: [u8; 4096],
    have: usize,
}

impl EchoConn {
    /// Reads what is there and writes back every complete line, a burst of them in one write;
    /// false when the connection is done (closed, failed, or a line longer than the buffer).
    /// A read that fills less than the buffer took everything the socket held, so (as tokio
    /// does) it ends the turn without a second read that would only say `EAGAIN`; bytes that
    /// arrive later raise a new edge.
    fn echo(&mut self) -> bool {
        use std::io::{ErrorKind, Read, Write};
        loop {
            let room = self.buf.len() - self.have;
            let n = match self.stream.read(&mut self.buf[self.have..]) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            };
            self.have += n;
            if let Some(end) = self.buf[..self.have].iter().rposition(|b| *b == b'\n') {
                // The client waits for each answer, so a short write means it has gone.
                if self.stream.write_all(&self.buf[..=end]).is_err() {
                    return false;
                }
                self.buf.copy_within(end + 1..self.have, 0);
                self.have -= end + 1;
            } else if self.have == self.buf.len() {
                return false;
            }
            if n < room {
                return true;
            }
        }
    }
}

/// Measures STATUS and CHECK (HS256, ES256) against a real agent process, next to an echo floor.
pub async fn checks(dir: &Path, n: usize, dur: Duration) -> anyhow::Result<Vec<Checks>> {
    let pubkey = dir.join("es256.pem");
    std::fs::write(&pubkey, ES256_PUBLIC)?;
    let (auth, agent) =
        crate::procs::bench_pair(dir, "checks", &["--public-key-file", &pubkey.display().to_string()])
            .await?;
    let secret_text = crate::procs::BENCH_SECRET;
    // A set with content: 10,000 revoked jtis.
    post_backlog(&auth, 10_000).await?;
    let exp = revmesh_runtime::Clock::system().unix_secs() + 3600;
    let sock = agent.socket.clone();
    wait_until(Duration::from_secs(60), || {
        crate::util::ask_line(&sock, "PING").is_ok_and(|l| l.starts_with("PONG seq=10000 "))
    })
    .await
    .context("agent did not catch up")?;
    let hs = mint(secret_text, "fresh-1", "alice", exp)?;
    let es = {
        let claims = serde_json::json!({"jti": "fresh-2", "sub": "alice", "exp": exp});
        let key = jsonwebtoken::EncodingKey::from_ec_pem(ES256_PRIVATE.as_bytes())?;
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256), &claims, &key)?
    };
    let echo_path = dir.join("echo.sock");
    let me = std::env::current_exe()?;
    let echo =
        crate::procs::Proc::spawn(&me, &["echo-server".into(), echo_path.display().to_string()], false)?;
    let pid = Some(agent.proc.child.id());
    let cases = [
        ("echo (floor)", Some(echo.child.id()), echo_path.as_path(), "STATUS jti=echo".to_owned(), "STATUS"),
        ("STATUS", pid, agent.socket.as_path(), "STATUS jti=not-revoked iss=x".to_owned(), "OK"),
        ("CHECK HS256", pid, agent.socket.as_path(), format!("CHECK {hs}"), "OK"),
        ("CHECK ES256", pid, agent.socket.as_path(), format!("CHECK {es}"), "OK"),
    ];
    let mut out = Vec::new();
    for (name, pid, sock, line, expect) in cases {
        let (seq, cpu) = sequential_cpu(pid, sock, &line, n, expect).await?;
        let tp = throughput(sock, &line, 32, dur).await?;
        out.push(Checks { request: name.into(), sequential: seq, throughput_32: tp, server_cpu_us: cpu });
    }
    drop(echo);
    Ok(out)
}

/// Redis as a yardstick, when `redis-server` is installed.
#[derive(Debug, Serialize)]
pub struct RedisCompare {
    /// `GET` over a Unix socket.
    pub get: Checks,
    /// `PUBLISH` → last of N subscribers received it.
    pub pubsub_fanout: Vec<(usize, Summary)>,
}

/// Starts a private redis-server on a Unix socket and a TCP port; `None` if not installed.
pub async fn redis(
    dir: &Path,
    fanouts: &[usize],
    n: usize,
    dur: Duration,
) -> anyhow::Result<Option<RedisCompare>> {
    let Ok(bin) = which("redis-server") else { return Ok(None) };
    let sock = dir.join("redis.sock");
    let port = free_port()?;
    let args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--unixsocket",
        &sock.display().to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
        "--maxclients",
        "20000",
        "--daemonize",
        "no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut child = std::process::Command::new(bin)
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let redis_pid = child.id();
    let guard = ChildGuard(&mut child);
    wait_until(Duration::from_secs(10), || std::os::unix::net::UnixStream::connect(&sock).is_ok()).await?;
    // GET over the Unix socket, same client loop shape as the agent's.
    let get_req = resp(&[b"GET", b"revoked:not-revoked"]);
    let cpu0 = crate::procs::cpu_ticks(redis_pid)?;
    let seq = redis_sequential(&sock, &get_req, n).await?;
    let cpu = crate::procs::ticks_to_us(crate::procs::cpu_ticks(redis_pid)? - cpu0) / (n + n / 10) as f64;
    let tp = redis_throughput(&sock, &get_req, 32, dur).await?;
    let mut fan = Vec::new();
    for &subs in fanouts {
        fan.push((subs, pubsub(port, subs, 100).await?));
    }
    drop(guard);
    Ok(Some(RedisCompare {
        get: Checks {
            request: "redis GET".into(),
            sequential: seq,
            throughput_32: tp,
            server_cpu_us: Some(cpu),
        },
        pubsub_fanout: fan,
    }))
}

struct ChildGuard<'a>(&'a mut std::process::Child);
impl Drop for ChildGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn which(name: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|c| c.is_file()))
        .context("not on PATH")
}

async fn redis_line(
    r: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    buf: &mut String,
) -> anyhow::Result<()> {
    buf.clear();
    r.read_line(buf).await?;
    if let Some(len) = buf.strip_prefix('$').and_then(|l| l.trim().parse::<i64>().ok()).filter(|l| *l >= 0) {
        let mut body = vec![0u8; len as usize + 2];
        r.read_exact(&mut body).await?;
    }
    Ok(())
}

async fn redis_sequential(sock: &Path, req: &[u8], n: usize) -> anyhow::Result<Summary> {
    let s = UnixStream::connect(sock).await?;
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let mut buf = String::new();
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let t0 = Instant::now();
        w.write_all(req).await?;
        redis_line(&mut r, &mut buf).await?;
        if i >= n / 10 {
            lat.push(t0.elapsed());
        }
    }
    Ok(summarize(lat))
}

async fn redis_throughput(sock: &Path, req: &[u8], conns: usize, dur: Duration) -> anyhow::Result<f64> {
    let stop = Instant::now() + dur;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (sock, req) = (sock.to_owned(), req.to_owned());
        tasks.push(tokio::spawn(async move {
            let s = UnixStream::connect(&sock).await?;
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            let mut buf = String::new();
            let mut n = 0u64;
            while Instant::now() < stop {
                w.write_all(&req).await?;
                redis_line(&mut r, &mut buf).await?;
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

/// PUBLISH to `subs` TCP subscribers; per message, time until the last subscriber has it.
async fn pubsub(port: u16, subs: usize, messages: usize) -> anyhow::Result<Summary> {
    use tokio::net::TcpStream;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let mut tasks = Vec::new();
    for _ in 0..subs {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(&resp(&[b"SUBSCRIBE", b"rev"])).await?;
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = BufReader::new(s);
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                // Payloads are "m<index>"; every message line is `$n` then the payload.
                if let Some(idx) = line.trim().strip_prefix('m').and_then(|x| x.parse::<usize>().ok()) {
                    let _ = tx.send((idx, Instant::now()));
                }
            }
        }));
    }
    drop(tx);
    // One control connection: wait until every subscription is active, then publish.
    let mut ctl = BufReader::new(TcpStream::connect(("127.0.0.1", port)).await?);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        ctl.get_mut().write_all(&resp(&[b"PUBSUB", b"NUMSUB", b"rev"])).await?;
        let n = read_int_reply(&mut ctl).await?;
        if n >= subs as i64 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "only {n} of {subs} subscribers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut lat = Vec::with_capacity(messages);
    for m in 0..messages {
        let t0 = Instant::now();
        ctl.get_mut().write_all(&resp(&[b"PUBLISH", b"rev", format!("m{m}").as_bytes()])).await?;
        let mut got = 0;
        let mut last = t0;
        while got < subs {
            let (idx, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await?
                .context("subscribers gone")?;
            if idx == m {
                got += 1;
                last = last.max(at);
            }
        }
        read_int_reply(&mut ctl).await?;
        lat.push(last - t0);
    }
    for t in tasks {
        t.abort();
    }
    Ok(summarize(lat))
}

/// Reads RESP lines until an integer reply (`:n`), returning it.
async fn read_int_reply(r: &mut BufReader<tokio::net::TcpStream>) -> anyhow::Result<i64> {
    let mut line = String::new();
    loop {
        line.clear();
        anyhow::ensure!(r.read_line(&mut line).await? > 0, "redis closed the connection");
        if let Some(v) = line.trim().strip_prefix(':') {
            return Ok(v.parse().unwrap_or(0));
        }
    }
}

/// Agent memory per revoked jti: a fresh child process builds a set of `n` jtis and reports
/// its RSS growth (a fresh process, so earlier scenarios' freed heap cannot hide the growth).
pub fn set_memory(counts: &[u64]) -> anyhow::Result<Vec<(u64, u64, u64)>> {
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for &n in counts {
        let out = std::process::Command::new(&exe).args(["memory-probe", &n.to_string()]).output()?;
        anyhow::ensure!(
            out.status.success(),
            "memory probe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mut nums = text.split_whitespace().filter_map(|w| w.parse::<u64>().ok());
        let (rss, table) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
        rows.push((n, rss, table));
    }
    Ok(rows)
}

/// The child side of [`set_memory`]: prints `rss_growth_bytes table_bytes`.
pub fn memory_probe(n: u64) {
    let me = std::process::id();
    let before = crate::procs::rss_of(me).unwrap_or(0);
    let mut set = RevocationSet::new();
    for seq in 1..=n {
        let e = revmesh_protocol::Entry {
            seq,
            created_at_ms: 0,
            expires_at: u64::from(u32::MAX),
            reason: None,
            revocation: revmesh_protocol::Revocation::Jti {
                jti: format!("3f9a1c2e-7d4b-4e8a-{seq:016}"),
                iss: None,
            },
        };
        set.insert(&e, 0);
    }
    let after = crate::procs::rss_of(me).unwrap_or(0);
    let probe = TokenRef { jti: Some("3f9a1c2e-7d4b-4e8a-0000000000000001"), ..Default::default() };
    let found = set.check(&probe).is_some();
    println!("{} {} {found}", after.saturating_sub(before), set.jti_memory_bytes());
}

/// Durable ingest at a given client concurrency.
#[derive(Debug, Serialize)]
pub struct Ingest {
    /// Concurrent HTTP clients.
    pub clients: usize,
    /// Revocations per request (an array when more than 1).
    pub batch: usize,
    /// Connected agents acking everything.
    pub agents: usize,
    /// Revocations answered 201 per second.
    pub per_sec: f64,
    /// Latency of one revocation call.
    pub latency: Summary,
    /// Store commits (fsyncs) per revocation.
    pub fsyncs_per_revocation: f64,
    /// Largest agent lag (entries) seen at the end.
    pub lag_at_end: u64,
    /// Seconds from the end of the load until every agent was at the head (capped at 120).
    pub caught_up_secs: f64,
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

/// Maximum durable revocations/s with `clients` concurrent callers while `agents` agents ack.
pub async fn ingest(
    dir: &Path,
    clients: usize,
    batch: usize,
    agents: usize,
    dur: Duration,
) -> anyhow::Result<Ingest> {
    let auth =
        AuthorityProc::start(&dir.join(format!("ingest-{clients}-{batch}-{agents}")), "127.0.0.1:0", &[])?;
    let fleet = Fleet::start(agents, &auth.ws, "i")?;
    wait_connected(&auth, agents).await?;
    let before =
        call(&auth, "GET", "/metrics".into(), String::new()).await?.1.as_str().unwrap_or("").to_owned();
    let lat = post_load_batched(std::slice::from_ref(&auth), clients, batch, dur).await?;
    let elapsed = dur.as_secs_f64();
    let after =
        call(&auth, "GET", "/metrics".into(), String::new()).await?.1.as_str().unwrap_or("").to_owned();
    let revs = metric(&after, "revmesh_authority_revocations_total")
        - metric(&before, "revmesh_authority_revocations_total");
    let commits = metric(&after, "revmesh_authority_store_commits_total")
        - metric(&before, "revmesh_authority_store_commits_total");
    let (_, status) = call(&auth, "GET", "/v1/status".into(), String::new()).await?;
    let lag = status["max_lag"].as_u64().unwrap_or(0);
    let ended = Instant::now();
    loop {
        let (_, status) = call(&auth, "GET", "/v1/status".into(), String::new()).await?;
        if status["max_lag"].as_u64() == Some(0) || ended.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let caught_up_secs = ended.elapsed().as_secs_f64();
    fleet.stop().await;
    Ok(Ingest {
        caught_up_secs,
        clients,
        batch,
        agents,
        per_sec: (lat.len() * batch) as f64 / elapsed,
        latency: summarize(lat),
        fsyncs_per_revocation: commits / revs.max(1.0),
        lag_at_end: lag,
    })
}

/// Reconnect storm after an authority restart.
#[derive(Debug, Serialize)]
pub struct Storm {
    /// Agents.
    pub agents: usize,
    /// Entries revoked while the authority was down for them (they restart behind by this many).
    pub behind: u64,
    /// Seconds from the restarted authority being ready to every agent at the head.
    pub caught_up_secs: f64,
    /// Highest authority RSS sampled during the storm.
    pub peak_rss_bytes: u64,
    /// Seconds from the restarted authority being ready until every agent knew it was behind
    /// (or had caught up): until then some agent still answered as fresh without the entries
    /// written while the authority was away.
    pub all_knew_secs: f64,
    /// CPU seconds the restarted authority used until every agent was at the head.
    pub authority_cpu_secs: f64,
    /// CPU seconds this process used meanwhile: the in-process agents receiving, decoding and
    /// applying their catch-ups (they share the machine's cores with the authority).
    pub fleet_cpu_secs: f64,
}

/// kill -9 the authority under `n` agents, revoke more, restart it: time until all caught up.
pub async fn reconnect_storm(dir: &Path, n: usize, behind: u64) -> anyhow::Result<Storm> {
    let data = dir.join(format!("storm-{n}"));
    let max = (n + 64).to_string();
    let args = ["--max-agents", max.as_str(), "--max-catchups", "64"];
    let auth = AuthorityProc::start(&data, "127.0.0.1:0", &args)?;
    let addr = auth.ws.trim_start_matches("ws://").to_owned();
    let fleet = Fleet::start(n, &auth.ws, "s")?;
    wait_connected(&auth, n).await?;
    drop(auth); // kill -9
                // Entries the agents miss: written by a second authority instance on the same store while
                // the agents' link address is down.
    let offline = AuthorityProc::start(&data, "127.0.0.1:0", &args)?;
    let exp = revmesh_runtime::Clock::system().unix_secs() + 3600;
    let mut head = 0;
    for i in 0..behind {
        let (st, v) = call(
            &offline,
            "POST",
            "/v1/revocations".into(),
            format!(r#"{{"kind":"jti","jti":"storm-{i}","expires_at":{exp}}}"#),
        )
        .await?;
        anyhow::ensure!(st == 201, "{v}");
        head = v["seq"].as_u64().unwrap_or(0);
    }
    drop(offline);
    let auth = AuthorityProc::start(&data, &addr, &args)?;
    let pid = auth.proc.child.id();
    use crate::procs::{cpu_ticks, ticks_to_us};
    let me = std::process::id();
    let (auth0, me0) = (cpu_ticks(pid)?, cpu_ticks(me)?);
    let t0 = Instant::now();
    let mut peak = 0;
    let mut all_knew: Option<f64> = None;
    let deadline = t0 + Duration::from_secs(300);
    while fleet.agents.iter().any(|(s, _, _)| s.applied() < head) {
        anyhow::ensure!(Instant::now() < deadline, "storm did not settle in 300 s");
        peak = peak.max(crate::procs::rss_of(pid).unwrap_or(0));
        if all_knew.is_none() && fleet.agents.iter().all(|(s, _, _)| s.is_behind() || s.applied() >= head) {
            all_knew = Some(t0.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let caught_up_secs = t0.elapsed().as_secs_f64();
    let all_knew_secs = all_knew.unwrap_or(caught_up_secs);
    let secs = |ticks: u64| ticks_to_us(ticks) / 1e6;
    let (authority_cpu_secs, fleet_cpu_secs) =
        (secs(cpu_ticks(pid)?.saturating_sub(auth0)), secs(cpu_ticks(me)?.saturating_sub(me0)));
    fleet.stop().await;
    Ok(Storm {
        agents: n,
        behind,
        caught_up_secs,
        peak_rss_bytes: peak,
        all_knew_secs,
        authority_cpu_secs,
        fleet_cpu_secs,
    })
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

/// Several replicas on PostgreSQL: throughput through one and three replicas, and failover.
#[derive(Debug, Serialize)]
pub struct Ha {
    /// Replicas receiving revocations.
    pub replicas: usize,
    /// Durable revocations per second, 64 clients spread over the replicas.
    pub per_sec: f64,
    /// Commits per revocation.
    pub fsyncs_per_revocation: f64,
}

/// Creates a fresh database on `server` (a `postgres://` URL without database) and returns its URL.
fn create_db(server: &str) -> anyhow::Result<(String, String)> {
    let name = format!("revmesh_lt_{}", std::process::id());
    let admin = format!("{server}/postgres");
    let (drop, create) =
        (format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), format!("CREATE DATABASE {name}"));
    std::thread::spawn(move || -> anyhow::Result<()> {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls)?;
        c.batch_execute(&drop)?;
        c.batch_execute(&create)?;
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("database setup panicked"))??;
    Ok((format!("{server}/{name}"), name))
}

fn drop_db(server: &str, name: &str) {
    let admin = format!("{server}/postgres");
    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    let _ = std::thread::spawn(move || {
        if let Ok(mut c) = postgres::Client::connect(&admin, postgres::NoTls) {
            let _ = c.batch_execute(&sql);
        }
    })
    .join();
}

/// `clients` blocking HTTP clients spread over `reps`, revoking for `dur`; every call's latency.
async fn post_load(reps: &[AuthorityProc], clients: usize, dur: Duration) -> anyhow::Result<Vec<Duration>> {
    post_load_batched(reps, clients, 1, dur).await
}

/// As [`post_load`], each request carrying `batch` revocations (an array when `batch > 1`);
/// one latency per request.
async fn post_load_batched(
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

/// Revocations/s through one and three replicas, then failover of 30 agents off a killed replica.
pub async fn ha(dir: &Path, server: &str, dur: Duration) -> anyhow::Result<(Vec<Ha>, f64)> {
    let (url, name) = create_db(server)?;
    let token = dir.join("ha.token");
    std::fs::write(&token, "loadtest-shared-admin-token-0123456789")?;
    let args = ["--store", url.as_str(), "--admin-token-file", token.to_str().unwrap_or_default()];
    let result = async {
        let mut reps = Vec::new();
        for i in 0..3 {
            reps.push(AuthorityProc::start(&dir.join(format!("ha-{i}")), "127.0.0.1:0", &args)?);
        }
        let mut rows = Vec::new();
        for n in [1, 3] {
            let before = total_commits(&reps).await;
            let count = post_load(&reps[..n], 64, dur).await?.len();
            let per_sec = count as f64 / dur.as_secs_f64();
            let commits = total_commits(&reps).await - before;
            rows.push(Ha { replicas: n, per_sec, fsyncs_per_revocation: commits / count.max(1) as f64 });
        }
        // Failover: 30 agents homed on replica 0, with replicas 1 and 2 as alternatives.
        let urls = vec![reps[0].ws.clone(), reps[1].ws.clone(), reps[2].ws.clone()];
        let mut fleet = Vec::new();
        for i in 0..30 {
            fleet.push(Fleet::spawn(
                urls.clone(),
                &format!("fo-{i}"),
                (RevocationSet::new(), None, 0),
                None,
            )?);
        }
        let (_, status) = call(&reps[0], "GET", "/v1/status".into(), String::new()).await?;
        let head = status["head"].as_u64().unwrap_or(0);
        wait_until(Duration::from_secs(60), || {
            fleet.iter().all(|(s, _, _)| s.applied() >= head && s.is_connected())
        })
        .await?;
        let mut first = reps.remove(0);
        first.proc.kill9();
        let t0 = Instant::now();
        let exp = revmesh_runtime::Clock::system().unix_secs() + 3600;
        let (st, v) = call(
            &reps[0],
            "POST",
            "/v1/revocations".into(),
            format!(r#"{{"kind":"jti","jti":"failover","expires_at":{exp}}}"#),
        )
        .await?;
        anyhow::ensure!(st == 201, "{v}");
        let seq = v["seq"].as_u64().unwrap_or(u64::MAX);
        wait_until(Duration::from_secs(60), || fleet.iter().all(|(s, _, _)| s.applied() >= seq)).await?;
        let failover = t0.elapsed().as_secs_f64();
        for (_, s, t) in fleet {
            s.cancel();
            let _ = t.await;
        }
        anyhow::Ok((rows, failover))
    }
    .await;
    drop_db(server, &name);
    result
}

async fn total_commits(reps: &[AuthorityProc]) -> f64 {
    let mut total = 0.0;
    for r in reps {
        if let Ok((_, v)) = call(r, "GET", "/metrics".into(), String::new()).await {
            total += metric(v.as_str().unwrap_or(""), "revmesh_authority_store_commits_total");
        }
    }
    total
}

/// The authority's own part of every receipt: the same revocations at the same rate to an
/// authority with no agents, so each `?wait=all` answers once its commit is durable.
pub async fn commit_alone(dir: &Path, count: usize, rate: f64) -> anyhow::Result<Summary> {
    let auth = AuthorityProc::start(&dir.join("commit-alone"), "127.0.0.1:0", &[])?;
    let (lat, _) = receipts_at_rate(&auth, "commit-alone", count, rate, "all").await?;
    Ok(summarize(lat))
}

/// Propagation to a fleet of real agent processes, with CPU per revocation per component.
#[derive(Debug, Serialize)]
pub struct ProcPropagation {
    /// Agent processes, each with its own data dir (journal fsynced before every ack).
    pub agent_procs: usize,
    /// The receipt level waited for: `all` (durable) or `applied`.
    pub wait: &'static str,
    /// Revocations measured.
    pub revocations: usize,
    /// Admin call → receipt with every agent acked (durably applied).
    pub receipt: Summary,
    /// Receipts that timed out with agents pending.
    pub incomplete: usize,
    /// Authority CPU per revocation, microseconds (user + system, from /proc).
    pub authority_cpu_us: f64,
    /// The same divided by the agent links.
    pub authority_cpu_per_link_us: f64,
    /// Mean CPU per revocation of one agent process, microseconds.
    pub agent_cpu_us: f64,
    /// With `--agent-b`: the same for each half of the fleet.
    pub split: Option<FleetSplit>,
}

/// CPU per revocation of one agent process in each half of a mixed fleet (`--agent-b`).
#[derive(Debug, Serialize)]
pub struct FleetSplit {
    /// The even-numbered agents: this build's `revmesh-agent`.
    pub a_cpu_us: f64,
    /// The odd-numbered agents: the binary given with `--agent-b`.
    pub b_cpu_us: f64,
    /// That binary.
    pub b_bin: String,
}

/// `count` revocations at `rate` to `n` agent processes, waited for with `?wait=all`, then
/// `count` more with `?wait=applied`, on the same fleet. CPU is read from /proc before and
/// after each level's revocations, so connection set-up and catch-up are not counted;
/// heartbeats during the run are.
///
/// With `agent_b`, every odd-numbered agent runs that binary instead, and each half's CPU is
/// reported too: two builds compared under the same load at the same moment.
pub async fn propagation_procs(
    dir: &Path,
    n: usize,
    count: usize,
    rate: f64,
    agent_b: Option<&Path>,
    backlog: usize,
) -> anyhow::Result<Vec<ProcPropagation>> {
    use crate::procs::{cpu_ticks, sibling, ticks_to_us, total_cpu_ticks, AgentProc, BENCH_SECRET};
    let base = dir.join(format!("procs-{n}"));
    let max = (n + 64).to_string();
    let auth = AuthorityProc::start(&base.join("authority"), "127.0.0.1:0", &["--max-agents", &max])?;
    post_backlog(&auth, backlog).await?;
    let secret = base.join("hs.secret");
    std::fs::write(&secret, BENCH_SECRET)?;
    let mut agents = Vec::with_capacity(n);
    let a_bin = sibling("revmesh-agent")?;
    for i in 0..n {
        let bin = match agent_b {
            Some(b) if i % 2 == 1 => b,
            _ => a_bin.as_path(),
        };
        agents.push(AgentProc::start_bin(
            bin,
            &base.join(format!("agent-{i}")),
            &format!("proc-{i}"),
            &auth.ws,
            &secret,
            &[],
        )?);
    }
    wait_connected(&auth, n).await?;
    // One revocation first, so every agent has a log and a journal (and has caught up on the
    // backlog: acknowledgements are cumulative) before measuring.
    receipts_at_rate(&auth, "procs-warm-up", 1, rate, "all").await?;
    let auth_pid = auth.proc.child.id();
    let pids: Vec<u32> = agents.iter().map(|a| a.proc.child.id()).collect();
    // Without a B binary every agent is in A.
    let in_b = |i: usize| agent_b.is_some() && i % 2 == 1;
    let a_pids: Vec<u32> = pids.iter().enumerate().filter(|(i, _)| !in_b(*i)).map(|(_, p)| *p).collect();
    let b_pids: Vec<u32> = pids.iter().enumerate().filter(|(i, _)| in_b(*i)).map(|(_, p)| *p).collect();
    let mut levels = Vec::new();
    for wait in ["all", "applied"] {
        let (auth0, a0, b0) = (cpu_ticks(auth_pid)?, total_cpu_ticks(&a_pids), total_cpu_ticks(&b_pids));
        let (lat, incomplete) = receipts_at_rate(&auth, &format!("procs-{wait}"), count, rate, wait).await?;
        let auth_us = ticks_to_us(cpu_ticks(auth_pid)? - auth0) / count as f64;
        let (a_us, b_us) =
            (ticks_to_us(total_cpu_ticks(&a_pids) - a0), ticks_to_us(total_cpu_ticks(&b_pids) - b0));
        let per = |us: f64, procs: usize| us / count as f64 / procs.max(1) as f64;
        let agent_us = per(a_us + b_us, n);
        let split = agent_b.map(|b| FleetSplit {
            a_cpu_us: per(a_us, a_pids.len()),
            b_cpu_us: per(b_us, b_pids.len()),
            b_bin: b.display().to_string(),
        });
        levels.push(ProcPropagation {
            agent_procs: n,
            wait,
            revocations: count,
            receipt: summarize(lat),
            incomplete,
            authority_cpu_us: auth_us,
            authority_cpu_per_link_us: auth_us / n.max(1) as f64,
            agent_cpu_us: agent_us,
            split,
        });
    }
    drop(agents);
    Ok(levels)
}
