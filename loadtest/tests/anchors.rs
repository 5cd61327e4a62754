//! The "Redis + journal" anchor of the receipt benchmark is only a floor if its subscriber
//! really writes each message to an agent journal before it reports it. This drives the real
//! `revmesh-loadtest redis-subscriber --journal` process against a private `redis-server` and
//! then reads the journal back the way an agent does after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests time real processes from outside; the one-clock rule (clippy.toml) is the binaries'.
#![allow(clippy::disallowed_methods)]

use revmesh_protocol::TokenRef;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

const SUBJECT: &str = "revmesh.bench";
const DONE: &str = "revmesh.bench.done";

/// Killed (and reaped) on drop, so a failing assertion leaves no process behind.
struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn command(parts: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for p in parts {
        out.extend_from_slice(format!("${}\r\n{p}\r\n", p.len()).as_bytes());
    }
    out
}

/// One RESP reply: an array's bulk strings, or a single line.
fn reply(r: &mut BufReader<TcpStream>) -> Vec<String> {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let line = line.trim_end();
    let Some(n) = line.strip_prefix('*') else { return vec![line.to_owned()] };
    (0..n.parse::<usize>().unwrap())
        .map(|_| {
            let mut head = String::new();
            r.read_line(&mut head).unwrap();
            match head.trim_end().strip_prefix('$') {
                Some(len) => {
                    let mut b = vec![0; len.parse::<usize>().unwrap() + 2];
                    r.read_exact(&mut b).unwrap();
                    b.truncate(b.len() - 2);
                    String::from_utf8(b).unwrap()
                }
                None => head.trim_end().to_owned(),
            }
        })
        .collect()
}

fn connect(addr: &str) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("redis-server at {addr}: {e}"));
    (s.try_clone().unwrap(), BufReader::new(s))
}

#[test]
fn the_journal_subscriber_makes_every_message_an_agent_revocation_before_reporting_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::piped())
        .spawn()
        .map(Kill)
        .unwrap_or_else(|e| panic!("redis-server: {e}; install it with: apt-get install redis-server"));
    // Its log goes to stdout; it listens once it says so. The reader stays open (and the pipe
    // with it) until the server is killed.
    let mut log = BufReader::new(server.0.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("Ready to accept connections") {
        line.clear();
        assert!(log.read_line(&mut line).unwrap() > 0, "redis-server exited before it was ready");
    }
    let addr = format!("127.0.0.1:{port}");
    let (mut done_w, mut done_r) = connect(&addr);
    done_w.write_all(&command(&["SUBSCRIBE", DONE])).unwrap();
    reply(&mut done_r);

    let journal = dir.path().join("subscriber-0");
    let mut sub = Command::new(env!("CARGO_BIN_EXE_revmesh-loadtest"))
        .args(["redis-subscriber", "--addr", &addr, "--journal"])
        .arg(&journal)
        .stdout(Stdio::piped())
        .spawn()
        .map(Kill)
        .unwrap();
    let mut ready = String::new();
    BufReader::new(sub.0.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");

    let (mut pub_w, mut pub_r) = connect(&addr);
    let messages = ["m-1", "m-2", "m-3"];
    for m in messages {
        pub_w.write_all(&command(&["PUBLISH", SUBJECT, m])).unwrap();
        assert_eq!(reply(&mut pub_r), [":1"], "one subscriber received {m}");
        // Reported only once durable: the report is the subscriber's acknowledgement.
        assert_eq!(reply(&mut done_r), ["message", DONE, m]);
    }
    // As a kill -9 would: nothing after the last report is flushed on the way out.
    drop(sub);
    drop(server);

    let clock = revmesh_runtime::Clock::system();
    let (_persist, recovered) = revmesh_agent::persist::Persist::open(&journal, &clock).unwrap();
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
    assert_eq!(recovered.applied_seq, messages.len() as u64);
    for m in messages {
        let token = TokenRef { jti: Some(m), ..TokenRef::default() };
        assert!(recovered.set.check(&token).is_some(), "{m} is revoked in the journal");
    }
}
