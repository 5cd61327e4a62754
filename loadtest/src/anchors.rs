//! Anchors for the receipt: the same fan-out through NATS JetStream (a durable stream, one
//! durable consumer per subscriber process, acks confirmed by the server) and through Redis
//! pub/sub (no acks, no durability), each subscriber its own process, as revmesh's agents are.
//! Each subscriber reports on a `done` subject/channel once it has what revmesh's receipt
//! promises (JetStream: the server confirmed its ack; Redis: it received the message), and the
//! driver times publish → last report.
//!
//! A third anchor, Redis pub/sub with a journal, is the floor of the durable receipt: each
//! subscriber appends every message to a journal of its own through the agent's persistence
//! layer (`revmesh_agent::persist`, the same record and the same direct, synchronous write an
//! agent makes before its ack) and only then reports. What a process pays for that, against
//! what an agent process pays per durable revocation, separates the cost of durability on the
//! host from the cost of revmesh's link.
//!
//! The clients are minimal and blocking (one process, one subscription): NATS's text protocol
//! (<https://docs.nats.io/reference/reference-protocols/nats-protocol>) and RESP2.

use crate::procs::{cpu_ticks, ticks_to_us, total_cpu_ticks, Proc};
use crate::util::{free_port, resp, summarize, Summary};
use anyhow::{bail, Context};
use serde::Serialize;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

const STREAM: &str = "REVMESH_BENCH";
const SUBJECT: &str = "revmesh.bench";
const DONE: &str = "revmesh.bench.done";
/// Largest message either client reads (the benchmark's are a few bytes; API answers < 4 KiB).
const MAX_PAYLOAD: usize = 1 << 20;

/// One anchor at one fan-out.
#[derive(Debug, Serialize)]
pub struct Anchor {
    /// `jetstream` or `redis`.
    pub system: String,
    /// Subscriber processes.
    pub subscribers: usize,
    /// Publish → last subscriber done.
    pub receipt: Summary,
    /// Server CPU per message, microseconds.
    pub server_cpu_us: f64,
    /// Mean CPU per message of one subscriber process, microseconds.
    pub subscriber_cpu_us: f64,
}

/// A NATS connection: blocking, one reader.
struct Nats {
    r: BufReader<TcpStream>,
    w: TcpStream,
    line: String,
}

/// A message: subject, reply-to, payload.
type Msg = (String, Option<String>, Vec<u8>);

impl Nats {
    fn connect(addr: &str) -> anyhow::Result<Nats> {
        let s = TcpStream::connect(addr).with_context(|| format!("connecting to NATS at {addr}"))?;
        s.set_nodelay(true)?;
        let mut n = Nats { r: BufReader::new(s.try_clone()?), w: s, line: String::new() };
        n.read_line()?; // INFO
        n.w.write_all(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":false,\"protocol\":1}\r\nPING\r\n",
        )?;
        loop {
            n.read_line()?;
            match n.line.trim_end() {
                "PONG" => return Ok(n),
                l if l.starts_with("-ERR") => bail!("NATS refused the connection: {l}"),
                _ => {}
            }
        }
    }

    fn read_line(&mut self) -> anyhow::Result<()> {
        self.line.clear();
        if self.r.read_line(&mut self.line)? == 0 {
            bail!("NATS closed the connection");
        }
        Ok(())
    }

    fn sub(&mut self, subject: &str, sid: u32) -> anyhow::Result<()> {
        Ok(self.w.write_all(format!("SUB {subject} {sid}\r\n").as_bytes())?)
    }

    fn publish(&mut self, subject: &str, reply: Option<&str>, payload: &[u8]) -> anyhow::Result<()> {
        let mut b = match reply {
            Some(r) => format!("PUB {subject} {r} {}\r\n", payload.len()).into_bytes(),
            None => format!("PUB {subject} {}\r\n", payload.len()).into_bytes(),
        };
        b.extend_from_slice(payload);
        b.extend_from_slice(b"\r\n");
        Ok(self.w.write_all(&b)?)
    }

    /// The next message; answers the server's PINGs on the way.
    fn next(&mut self) -> anyhow::Result<Msg> {
        loop {
            self.read_line()?;
            let l = self.line.trim_end().to_owned();
            if l == "PING" {
                self.w.write_all(b"PONG\r\n")?;
                continue;
            }
            if l.starts_with("-ERR") {
                bail!("NATS: {l}");
            }
            let Some(rest) = l.strip_prefix("MSG ") else { continue };
            let f: Vec<&str> = rest.split_whitespace().collect();
            let (subject, reply, len) = match f.as_slice() {
                [s, _sid, len] => (s.to_string(), None, len.parse::<usize>()?),
                [s, _sid, r, len] => (s.to_string(), Some(r.to_string()), len.parse::<usize>()?),
                _ => bail!("NATS: malformed MSG line {l:?}"),
            };
            anyhow::ensure!(len <= MAX_PAYLOAD, "NATS: a {len}-byte message");
            let mut payload = vec![0u8; len + 2];
            self.r.read_exact(&mut payload)?;
            payload.truncate(len);
            return Ok((subject, reply, payload));
        }
    }

    /// A JetStream API request; the JSON answer.
    fn request(&mut self, subject: &str, body: &str, inbox: &str) -> anyhow::Result<serde_json::Value> {
        self.publish(subject, Some(inbox), body.as_bytes())?;
        loop {
            let (s, _, p) = self.next()?;
            if s == inbox {
                let v: serde_json::Value = serde_json::from_slice(&p)?;
                if v.get("error").is_some() {
                    bail!("JetStream refused {subject}: {v}");
                }
                return Ok(v);
            }
        }
    }
}

/// Internal subcommand: one durable JetStream consumer. Prints `ready` once subscribed; for
/// every message, acks it, waits for the server to confirm the ack, then reports on `done`.
pub fn nats_consumer(addr: &str, id: usize) -> anyhow::Result<()> {
    let mut n = Nats::connect(addr)?;
    let (deliver, inbox) = (format!("deliver.c{id}"), format!("_INBOX.c{id}"));
    n.sub(&deliver, 1)?;
    n.sub(&inbox, 2)?;
    let cfg = serde_json::json!({
        "stream_name": STREAM,
        "config": {
            "durable_name": format!("c{id}"),
            "deliver_subject": deliver,
            "ack_policy": "explicit",
            "deliver_policy": "new",
            "max_ack_pending": 1000,
        }
    });
    n.request(&format!("$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.c{id}"), &cfg.to_string(), &inbox)?;
    println!("ready");
    loop {
        // Deliveries keep the subject they were published on; their reply subject is the ack's.
        let (_, reply, payload) = n.next()?;
        let Some(reply) = reply.filter(|r| r.starts_with("$JS.ACK.")) else { continue };
        n.publish(&reply, Some(&inbox), b"+ACK")?;
        loop {
            let (s, _, _) = n.next()?;
            if s == inbox {
                break;
            }
        }
        n.publish(DONE, None, &payload)?;
    }
}

/// Reads one RESP2 value as its flat list of bulk strings (enough for pub/sub pushes and
/// integer replies; an array nested in an array is refused).
fn resp_read(r: &mut BufReader<TcpStream>) -> anyhow::Result<Vec<Vec<u8>>> {
    let line = resp_line(r)?;
    let Some(n) = line.strip_prefix('*') else { return resp_scalar(r, &line) };
    let n: usize = n.parse()?;
    // Pub/sub pushes and replies have at most 3 elements.
    anyhow::ensure!(n <= 16, "redis: an array of {n} elements");
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let line = resp_line(r)?;
        anyhow::ensure!(!line.starts_with('*'), "redis: a nested array");
        out.extend(resp_scalar(r, &line)?);
    }
    Ok(out)
}

fn resp_line(r: &mut BufReader<TcpStream>) -> anyhow::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        bail!("redis closed the connection");
    }
    Ok(line.trim_end().to_owned())
}

/// A value that is not an array, given its first line: a bulk string (read from `r`), an
/// error, or a simple value.
fn resp_scalar(r: &mut BufReader<TcpStream>, l: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    match l.as_bytes().first() {
        Some(b'$') => {
            let n: i64 = l[1..].parse()?;
            if n < 0 {
                return Ok(vec![]);
            }
            anyhow::ensure!(n as usize <= MAX_PAYLOAD, "redis: a {n}-byte value");
            let mut b = vec![0u8; n as usize + 2];
            r.read_exact(&mut b)?;
            b.truncate(n as usize);
            Ok(vec![b])
        }
        Some(b'-') => bail!("redis: {l}"),
        _ => Ok(vec![l.as_bytes().to_vec()]),
    }
}

/// A Redis connection: its write side and a buffered read side.
fn resp_conn(addr: &str) -> anyhow::Result<(TcpStream, BufReader<TcpStream>)> {
    let s = TcpStream::connect(addr).with_context(|| format!("connecting to redis at {addr}"))?;
    s.set_nodelay(true)?;
    Ok((s.try_clone()?, BufReader::new(s)))
}

/// Internal subcommand: one Redis subscriber. Prints `ready` once subscribed; reports every
/// message on the `done` channel from a second connection. With `journal`, every message is
/// first appended to an agent journal in that directory and made durable, as an agent does
/// with a revocation before it acknowledges it.
pub fn redis_subscriber(addr: &str, journal: Option<&Path>) -> anyhow::Result<()> {
    let mut journal = journal.map(Journal::open).transpose()?;
    let (mut w, mut r) = resp_conn(addr)?;
    let (mut out, mut out_r) = resp_conn(addr)?;
    w.write_all(&resp(&[b"SUBSCRIBE", SUBJECT.as_bytes()]))?;
    resp_read(&mut r)?;
    println!("ready");
    loop {
        let m = resp_read(&mut r)?;
        if let [kind, _, payload] = m.as_slice() {
            if kind == b"message" {
                if let Some(j) = journal.as_mut() {
                    j.append(payload)?;
                }
                out.write_all(&resp(&[b"PUBLISH", DONE.as_bytes(), payload]))?;
                resp_read(&mut out_r)?;
            }
        }
    }
}

/// An agent's journal, written by a subscriber: one record per message, each a batch of one
/// `jti` entry named by the message, durable when `append` returns.
struct Journal {
    persist: revmesh_agent::persist::Persist,
    log_id: revmesh_protocol::LogId,
    clock: revmesh_runtime::Clock,
    seq: u64,
}

impl Journal {
    fn open(dir: &Path) -> anyhow::Result<Journal> {
        let clock = revmesh_runtime::Clock::system();
        let (persist, recovered) = revmesh_agent::persist::Persist::open(dir, &clock)
            .with_context(|| format!("opening a journal in {}", dir.display()))?;
        let log_id = revmesh_protocol::LogId(*b"loadtest-journal");
        Ok(Journal { persist, log_id, clock, seq: recovered.applied_seq })
    }

    fn append(&mut self, message: &[u8]) -> anyhow::Result<()> {
        use revmesh_protocol::{Entry, Revocation};
        self.seq += 1;
        let now = self.clock.unix_secs();
        let entry = Entry {
            seq: self.seq,
            created_at_ms: now * 1000,
            expires_at: now + 3600,
            reason: None,
            revocation: Revocation::Jti { jti: String::from_utf8_lossy(message).into_owned(), iss: None },
        };
        self.persist.append(self.log_id, self.seq, self.seq, std::slice::from_ref(&entry))?;
        Ok(())
    }
}

/// Spawns `n` subscriber processes of this binary's hidden subcommand `args[0]`.
fn subscribers(n: usize, args: impl Fn(usize) -> Vec<String>) -> anyhow::Result<Vec<Proc>> {
    let me = std::env::current_exe()?;
    (0..n).map(|i| Proc::spawn(&me, &args(i), false)).collect()
}

async fn wait_port(addr: &str) -> anyhow::Result<()> {
    let a = addr.to_owned();
    crate::util::wait_until(Duration::from_secs(20), move || TcpStream::connect(&a).is_ok()).await
}

/// A private server process, killed on drop.
struct Server(std::process::Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(program: &str, args: &[String], install: &str) -> anyhow::Result<Server> {
    let child = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {program}; install it with: {install}"))?;
    Ok(Server(child))
}

/// Publishes `count` messages at `rate`, timing each from publish to the last of `n` reports
/// on `done`. `publish` sends message `i` (and waits for what makes it accepted); `done`
/// reads the next report's payload.
fn drive(
    n: usize,
    count: usize,
    rate: f64,
    mut publish: impl FnMut(&[u8]) -> anyhow::Result<()>,
    mut done: impl FnMut() -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<Vec<Duration>> {
    let gap = Duration::from_secs_f64(1.0 / rate);
    let mut lat = Vec::with_capacity(count);
    for i in 0..count + 1 {
        let next = Instant::now() + gap;
        let id = format!("m{i}").into_bytes();
        let t0 = Instant::now();
        publish(&id)?;
        let mut got = 0;
        while got < n {
            if done()? == id {
                got += 1;
            }
        }
        // The first message warms every path up (as revmesh's first revocation does).
        if i > 0 {
            lat.push(t0.elapsed());
        }
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok(lat)
}

fn cpu_per_msg(server: u64, subs: u64, count: usize, n: usize) -> (f64, f64) {
    (ticks_to_us(server) / count as f64, ticks_to_us(subs) / count as f64 / n.max(1) as f64)
}

/// JetStream: a private `nats-server -js` (file store in `dir`), or the server at `url`.
pub async fn jetstream(
    dir: &Path,
    url: Option<&str>,
    n: usize,
    count: usize,
    rate: f64,
) -> anyhow::Result<Anchor> {
    let (addr, server) = match url {
        Some(u) => (u.trim_start_matches("nats://").to_owned(), None),
        None => {
            let port = free_port()?;
            let store = dir.join(format!("jetstream-{n}"));
            let args =
                ["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd", &store.display().to_string()]
                    .map(String::from);
            let s = start("nats-server", &args, "apt-get install nats-server")?;
            (format!("127.0.0.1:{port}"), Some(s))
        }
    };
    wait_port(&addr).await?;
    let server_pid = server.as_ref().map(|s| s.0.id());
    let a = addr.clone();
    let lat_cpu = tokio::task::spawn_blocking(move || -> anyhow::Result<(Vec<Duration>, f64, f64)> {
        let mut c = Nats::connect(&a)?;
        c.sub("_INBOX.driver", 1)?;
        c.sub(DONE, 2)?;
        // A fresh stream each run (a shared server may hold one from an earlier run).
        let _ = c.request(&format!("$JS.API.STREAM.DELETE.{STREAM}"), "", "_INBOX.driver");
        let cfg = serde_json::json!({"name": STREAM, "subjects": [SUBJECT], "storage": "file", "max_msgs": 100_000});
        c.request(&format!("$JS.API.STREAM.CREATE.{STREAM}"), &cfg.to_string(), "_INBOX.driver")?;
        let subs =
            subscribers(n, |i| vec!["nats-consumer".into(), "--addr".into(), a.clone(), "--id".into(), i.to_string()])?;
        let pids: Vec<u32> = subs.iter().map(|p| p.child.id()).collect();
        let subs_cpu = || total_cpu_ticks(&pids);
        let server_cpu = || server_pid.map_or(0, |p| cpu_ticks(p).unwrap_or(0));
        let (s0, c0) = (server_cpu(), subs_cpu());
        let cell = std::cell::RefCell::new(c);
        let lat = drive(
            n,
            count,
            rate,
            |id| {
                let mut c = cell.borrow_mut();
                // Published with a reply subject, JetStream answers once the message is stored.
                c.publish(SUBJECT, Some("_INBOX.driver"), id)?;
                Ok(())
            },
            || loop {
                let (s, _, p) = cell.borrow_mut().next()?;
                if s == DONE {
                    return Ok(p);
                }
            },
        )?;
        let (s, c) = cpu_per_msg(server_cpu() - s0, subs_cpu() - c0, count, n);
        drop(subs);
        Ok((lat, s, c))
    })
    .await??;
    drop(server);
    Ok(Anchor {
        system: "jetstream".into(),
        subscribers: n,
        receipt: summarize(lat_cpu.0),
        server_cpu_us: lat_cpu.1,
        subscriber_cpu_us: lat_cpu.2,
    })
}

/// Redis pub/sub through a private `redis-server`; with `journals`, each subscriber makes every
/// message durable in an agent journal under that directory before it reports.
pub async fn redis_pubsub(
    journals: Option<&Path>,
    n: usize,
    count: usize,
    rate: f64,
) -> anyhow::Result<Anchor> {
    let port = free_port()?;
    let args = ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        .map(String::from);
    let server = start("redis-server", &args, "apt-get install redis-server")?;
    let addr = format!("127.0.0.1:{port}");
    wait_port(&addr).await?;
    let server_pid = server.0.id();
    let journals = journals.map(Path::to_path_buf);
    let system = if journals.is_some() { "redis + journal" } else { "redis pub/sub" };
    let (lat, s, c) = tokio::task::spawn_blocking(move || -> anyhow::Result<(Vec<Duration>, f64, f64)> {
        let subs = subscribers(n, |i| {
            let mut args = vec!["redis-subscriber".into(), "--addr".into(), addr.clone()];
            if let Some(d) = &journals {
                args.push("--journal".into());
                args.push(d.join(format!("subscriber-{i}")).display().to_string());
            }
            args
        })?;
        let pids: Vec<u32> = subs.iter().map(|p| p.child.id()).collect();
        let subs_cpu = || total_cpu_ticks(&pids);
        let (mut done_w, mut done_r) = resp_conn(&addr)?;
        done_w.write_all(&resp(&[b"SUBSCRIBE", DONE.as_bytes()]))?;
        resp_read(&mut done_r)?;
        let (mut pub_w, mut pub_r) = resp_conn(&addr)?;
        let (s0, c0) = (cpu_ticks(server_pid)?, subs_cpu());
        let lat = drive(
            n,
            count,
            rate,
            |id| {
                pub_w.write_all(&resp(&[b"PUBLISH", SUBJECT.as_bytes(), id]))?;
                resp_read(&mut pub_r)?;
                Ok(())
            },
            || loop {
                if let [kind, _, p] = resp_read(&mut done_r)?.as_slice() {
                    if kind == b"message" {
                        return Ok(p.clone());
                    }
                }
            },
        )?;
        let (s, c) = cpu_per_msg(cpu_ticks(server_pid)? - s0, subs_cpu() - c0, count, n);
        drop(subs);
        Ok((lat, s, c))
    })
    .await??;
    drop(server);
    Ok(Anchor {
        system: system.into(),
        subscribers: n,
        receipt: summarize(lat),
        server_cpu_us: s,
        subscriber_cpu_us: c,
    })
}

#[cfg(test)]
mod tests {
    use super::Journal;
    use revmesh_protocol::TokenRef;

    /// The journal anchor pays for the agent's real write: what it appends is what an agent
    /// recovers on restart, every message revoked, the seq carried on across reopenings.
    #[test]
    fn subscriber_journal_is_an_agent_journal() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut j = Journal::open(dir.path())?;
        for m in ["m-1", "m-2", "m-3"] {
            j.append(m.as_bytes())?;
        }
        drop(j);
        let mut j = Journal::open(dir.path())?;
        j.append(b"m-4")?;
        drop(j);
        let clock = revmesh_runtime::Clock::system();
        let (_persist, recovered) = revmesh_agent::persist::Persist::open(dir.path(), &clock)?;
        assert_eq!(recovered.applied_seq, 4);
        assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
        for (seq, m) in (1..).zip(["m-1", "m-2", "m-3", "m-4"]) {
            let v = recovered.set.check(&TokenRef { jti: Some(m), ..TokenRef::default() });
            assert_eq!(v.map(|v| v.seq), Some(seq), "{m}");
        }
        assert!(recovered.set.check(&TokenRef { jti: Some("m-5"), ..TokenRef::default() }).is_none());
        Ok(())
    }
}
