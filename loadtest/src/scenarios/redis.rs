//! Redis as a yardstick: `GET` over a Unix socket and pub/sub fan-out, on a private server.

use super::checks::Checks;
use super::common::throughput_with;
use crate::util::{free_port, resp, summarize, wait_until, Summary};
use anyhow::Context;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Redis as a yardstick, when `redis-server` is installed.
#[derive(Debug, Serialize)]
pub struct RedisCompare {
    /// `GET` over a Unix socket.
    pub get: Checks,
    /// `PUBLISH` → last of N subscribers received it.
    pub pubsub_fanout: Vec<Fanout>,
}

/// Redis pub/sub to N subscribers: one way, no acknowledgement, nothing kept.
#[derive(Debug, Serialize)]
pub struct Fanout {
    /// Subscribers (TCP connections in this process).
    pub subscribers: usize,
    /// `PUBLISH` → the last subscriber has it.
    pub receipt: Summary,
    /// redis-server's CPU per message divided by the subscribers, microseconds (from /proc).
    pub server_cpu_per_subscriber_us: f64,
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
        fan.push(pubsub(port, redis_pid, subs, 100).await?);
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
    fn reply<'a>(
        r: &'a mut BufReader<tokio::net::unix::OwnedReadHalf>,
        buf: &'a mut String,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(redis_line(r, buf))
    }
    throughput_with(sock, req, conns, dur, reply).await
}

/// PUBLISH to `subs` TCP subscribers; per message, time until the last subscriber has it, and
/// the server's CPU (process `pid`) for the messages, subscriptions excluded.
async fn pubsub(port: u16, pid: u32, subs: usize, messages: usize) -> anyhow::Result<Fanout> {
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
    let cpu0 = crate::procs::cpu_ticks(pid)?;
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
    let cpu = crate::procs::ticks_to_us(crate::procs::cpu_ticks(pid)? - cpu0);
    for t in tasks {
        t.abort();
    }
    Ok(Fanout {
        subscribers: subs,
        receipt: summarize(lat),
        server_cpu_per_subscriber_us: cpu / (messages.max(1) * subs.max(1)) as f64,
    })
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
