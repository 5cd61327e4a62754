//! The `http-checks` scenario: `GET /v1/check` over an agent's HTTP socket, as nginx
//! `auth_request`, Caddy and Envoy send it, on keep-alive connections. With `--agent-b` a second
//! agent process running another build answers the same requests in the same run (A, B, A, B),
//! so the two builds' cost per request is compared without drift between runs.

use crate::procs::{cpu_ticks, ticks_to_us, AgentProc, AuthorityProc, BENCH_SECRET};
use crate::util::{mint, summarize, wait_until, Summary};
use anyhow::Context;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// One agent build's figures.
#[derive(Debug, Serialize)]
pub struct HttpChecks {
    /// `A` (this build) or `B` (`--agent-b`), and the round.
    pub build: String,
    /// One connection, one request at a time.
    pub sequential: Summary,
    /// Requests per second over 32 keep-alive connections.
    pub throughput_32: f64,
    /// The agent's CPU per sequential request, µs.
    pub agent_cpu_us: f64,
}

/// Runs the scenario: `n` sequential requests and `dur` of 32-connection load per agent, two
/// rounds each.
pub async fn http_checks(
    dir: &Path,
    n: usize,
    dur: Duration,
    agent_b: Option<&Path>,
) -> anyhow::Result<Vec<HttpChecks>> {
    let auth = AuthorityProc::start(&dir.join("http-authority"), "127.0.0.1:0", &[])?;
    let secret = dir.join("http-hs.secret");
    std::fs::write(&secret, BENCH_SECRET)?;
    // A set with content, as in the `checks` scenario.
    crate::scenarios::post_backlog(&auth, 10_000).await?;
    let mut agents = Vec::new();
    for (name, bin) in [("A", None), ("B", agent_b)] {
        let Some(bin) = bin.map(Path::to_path_buf).or_else(|| name.eq("A").then(PathBuf::new)) else {
            continue;
        };
        let adir = dir.join(format!("http-agent-{name}"));
        let http = adir.join("http.sock");
        let http_arg = http.display().to_string();
        let extra = ["--http-socket", http_arg.as_str()];
        let agent = if bin.as_os_str().is_empty() {
            AgentProc::start(&adir, &format!("http-{name}"), &auth.ws, &secret, &extra)?
        } else {
            AgentProc::start_bin(&bin, &adir, &format!("http-{name}"), &auth.ws, &secret, &extra)?
        };
        let sock = agent.socket.clone();
        wait_until(Duration::from_secs(60), || {
            crate::util::ask_line(&sock, "PING").is_ok_and(|l| l.starts_with("PONG seq=10000 "))
        })
        .await
        .with_context(|| format!("agent {name} did not catch up"))?;
        agents.push((name, agent, http));
    }
    let exp = revmesh_runtime::Clock::system().unix_secs() + 3600;
    let token = mint(BENCH_SECRET, "fresh-http", "alice", exp)?;
    let request =
        format!("GET /v1/check/orders/1 HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer {token}\r\n\r\n");
    let mut out = Vec::new();
    for round in 1..=2 {
        for (name, agent, http) in &agents {
            let pid = agent.proc.child.id();
            let before = cpu_ticks(pid)?;
            let sequential = sequential(http, &request, n).await?;
            let agent_cpu_us = ticks_to_us(cpu_ticks(pid)? - before) / (n + n / 10) as f64;
            fn one_response<'a>(
                r: &'a mut BufReader<tokio::net::unix::OwnedReadHalf>,
                buf: &'a mut String,
            ) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
                Box::pin(async move { response(r, buf).await.map(drop) })
            }
            let throughput_32 =
                crate::scenarios::throughput_with(http, request.as_bytes(), 32, dur, one_response).await?;
            out.push(HttpChecks { build: format!("{name}{round}"), sequential, throughput_32, agent_cpu_us });
        }
    }
    Ok(out)
}

/// Reads one response: the status line, headers, and a `Content-Length` body.
async fn response(
    r: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    line: &mut String,
) -> anyhow::Result<u16> {
    line.clear();
    r.read_line(line).await?;
    let status: u16 = line.split(' ').nth(1).and_then(|s| s.parse().ok()).context("no status line")?;
    let mut len = 0usize;
    loop {
        line.clear();
        anyhow::ensure!(r.read_line(line).await? > 0, "connection closed in a response head");
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse()?;
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(status)
}

async fn sequential(socket: &Path, request: &str, n: usize) -> anyhow::Result<Summary> {
    let (r, mut w) = UnixStream::connect(socket).await?.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let t0 = Instant::now();
        w.write_all(request.as_bytes()).await?;
        let status = response(&mut r, &mut line).await?;
        anyhow::ensure!(status == 200, "answered {status}");
        if i >= n / 10 {
            lat.push(t0.elapsed());
        }
    }
    Ok(summarize(lat))
}
