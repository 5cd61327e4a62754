//! The agent answering its socket: `STATUS` and `CHECK` against an out-of-process echo floor.

use super::common::*;
use crate::util::{mint, wait_until, Summary};
use anyhow::Context;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

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
