//! The change feed (`GET /v1/revocations/stream`, Server-Sent Events) read by a plain HTTP
//! client that disconnects mid-stream and resumes with `Last-Event-ID`.

use crate::util::Authority;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// An open stream: the status line, then events as `(event, id, data)`.
struct Feed {
    lines: BufReader<TcpStream>,
}

impl Feed {
    fn open(a: &Authority, path: &str, last_event_id: Option<u64>) -> (u16, Feed) {
        let mut s = TcpStream::connect(&a.admin).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let resume = last_event_id.map(|i| format!("Last-Event-ID: {i}\r\n")).unwrap_or_default();
        // HTTP/1.0: the body is the raw event stream (no chunked framing).
        write!(s, "GET {path} HTTP/1.0\r\nAuthorization: Bearer {}\r\n{resume}\r\n", a.token).unwrap();
        let mut lines = BufReader::new(s);
        let mut status = String::new();
        lines.read_line(&mut status).unwrap();
        let code = status.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        loop {
            let mut h = String::new();
            lines.read_line(&mut h).unwrap();
            if h.trim().is_empty() {
                break;
            }
        }
        (code, Feed { lines })
    }

    /// The next event (heartbeat comments skipped); `None` when the server ended the stream.
    fn next(&mut self) -> Option<(String, Option<u64>, String)> {
        let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
        loop {
            let mut l = String::new();
            if self.lines.read_line(&mut l).unwrap() == 0 {
                return None;
            }
            let l = l.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if !data.is_empty() || id.is_some() {
                    return Some((event, id, data));
                }
                continue;
            }
            if let Some(v) = l.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = l.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = l.strip_prefix("data:") {
                data.push_str(v.trim());
            }
        }
    }
}

fn revoke_many(a: &Authority, from: u64, to: u64) {
    for i in from..=to {
        a.revoke_jti(&format!("feed-{i}"));
    }
}

#[test]
fn a_consumer_that_disconnects_and_resumes_sees_every_seq_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::start(dir.path(), &[]);
    revoke_many(&a, 1, 50);
    let mut seen = Vec::new();
    // From the start of the log; stop reading at seq 20 and hang up.
    let (status, mut feed) = Feed::open(&a, "/v1/revocations/stream?after=0", None);
    assert_eq!(status, 200);
    while let Some((event, id, data)) = feed.next() {
        assert_eq!(event, "revocation");
        let id = id.unwrap();
        let entry: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(
            (entry["seq"].as_u64(), entry["jti"].as_str()),
            (Some(id), Some(format!("feed-{id}").as_str()))
        );
        seen.push(id);
        if id == 20 {
            break;
        }
    }
    drop(feed);
    // Written while the consumer is away, then live while it is back.
    revoke_many(&a, 51, 80);
    let (status, mut feed) = Feed::open(&a, "/v1/revocations/stream", Some(20));
    assert_eq!(status, 200);
    let mut live_written = false;
    while let Some((_, id, _)) = feed.next() {
        let id = id.unwrap();
        seen.push(id);
        if id == 80 && !live_written {
            revoke_many(&a, 81, 85);
            live_written = true;
        }
        if id == 85 {
            break;
        }
    }
    assert_eq!(seen, (1..=85).collect::<Vec<u64>>(), "every seq exactly once, in order");

    // Without a cursor a stream starts after the head: only new entries arrive.
    let (_, mut fresh) = Feed::open(&a, "/v1/revocations/stream", None);
    let seq = a.revoke_jti("after-open");
    let (_, id, data) = fresh.next().unwrap();
    assert_eq!(id, Some(seq), "{data}");
    // A cursor that is not a seq, or no admin token, is refused.
    let (status, _) = Feed::open(&a, "/v1/revocations/stream?after=x", None);
    assert_eq!(status, 400);
    let mut s = TcpStream::connect(&a.admin).unwrap();
    write!(s, "GET /v1/revocations/stream HTTP/1.0\r\nLast-Event-ID: 3\r\n\r\n").unwrap();
    let mut status = String::new();
    BufReader::new(s).read_line(&mut status).unwrap();
    assert!(status.contains(" 401 "), "{status}");
}
