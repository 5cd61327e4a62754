//! Small shared pieces: socket clients, token minting, percentiles, waiting.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// One request on an agent's line socket.
pub fn ask_line(socket: &Path, line: &str) -> anyhow::Result<String> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("{line}\n").as_bytes())?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer)?;
    Ok(answer.trim_end().to_owned())
}

/// An HS256 token.
pub fn mint(secret: &str, jti: &str, sub: &str, exp: u64) -> anyhow::Result<String> {
    let claims = serde_json::json!({"jti": jti, "sub": sub, "exp": exp, "iat": revmesh_runtime::Clock::system().unix_secs() - 5});
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())?;
    Ok(jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key)?)
}

/// Polls `cond` until it holds or `limit` passes.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !cond() {
        anyhow::ensure!(Instant::now() < deadline, "condition not met within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Latency summary in microseconds.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Summary {
    /// Samples.
    pub n: usize,
    /// Median, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// Maximum, µs.
    pub max_us: f64,
}

/// Summarises durations.
pub fn summarize(mut v: Vec<Duration>) -> Summary {
    v.sort();
    let pick = |q: f64| {
        if v.is_empty() {
            0.0
        } else {
            v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6
        }
    };
    Summary { n: v.len(), p50_us: pick(0.5), p99_us: pick(0.99), max_us: pick(1.0) }
}

/// A RESP2 command (Redis's wire format) from its arguments.
pub fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut s = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        s.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        s.extend_from_slice(a);
        s.extend_from_slice(b"\r\n");
    }
    s
}

/// A TCP port free on 127.0.0.1 at the time of asking.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// What this host charges for a little work done once per `gap` rather than back to back: the
/// mean time of one 64-byte `pwrite` to a file in `dir` (page cache, no fsync), 2,000 in a row,
/// then once after each of `n` sleeps of `gap`. Returns both, in microseconds.
///
/// Every per-message CPU figure of a run at a low rate starts from the second: between two
/// messages the caches and TLBs go cold (on a shared VM the core may also be lent out), so even
/// the anchors' subscribers, which only read a few bytes per message, pay it.
pub async fn cold_cost(dir: &Path, gap: Duration, n: usize) -> anyhow::Result<(f64, f64)> {
    use std::os::unix::fs::FileExt;
    let path = dir.join("cold-cost.bin");
    let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
    let rec = [b'x'; 64];
    let one = |i: usize| -> std::io::Result<Duration> {
        let t0 = Instant::now();
        f.write_all_at(&rec, (i % 4096) as u64 * 64)?;
        Ok(t0.elapsed())
    };
    const HOT: usize = 2_000;
    let mut hot = Duration::ZERO;
    for i in 0..HOT {
        hot += one(i)?;
    }
    let mut cold = Duration::ZERO;
    for i in 0..n {
        tokio::time::sleep(gap).await;
        cold += one(i)?;
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    let mean_us = |d: Duration, k: usize| d.as_secs_f64() * 1e6 / k.max(1) as f64;
    Ok((mean_us(hot, HOT), mean_us(cold, n)))
}
