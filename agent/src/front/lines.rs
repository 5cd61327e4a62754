//! The Unix-socket line protocol v1 (PROTOCOL.md §7): framing, parsing and rendering, with
//! no decision of its own.
//!
//! [`frame`] finds one complete line in a buffer, [`parse`] turns it into a [`Request`],
//! [`render`] turns a [`Verdict`] into the answer line, and [`Connection`] (a buffer over a
//! stream, in the mini-redis style) strings them together; the decision is
//! [`Checker::decide`]'s.

use crate::decide::{Checker, Request, Verdict};
use bytes::{Buf, BytesMut};
use revmesh_protocol::TokenRef;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

/// Why a line is not a request: the words of `ERR reason=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    /// First word unknown (or empty line).
    UnknownCommand,
    /// Line longer than the limit.
    LineTooLong,
    /// A field is malformed, unknown, repeated or missing.
    BadField,
}

impl LineError {
    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            LineError::UnknownCommand => "unknown_command",
            LineError::LineTooLong => "line_too_long",
            LineError::BadField => "bad_field",
        }
    }
}

/// Parses one line (without `\n`; a trailing `\r` is tolerated).
pub fn parse(line: &[u8]) -> Result<Request<'_>, LineError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = std::str::from_utf8(line).map_err(|_| LineError::BadField)?;
    let (cmd, rest) = split_once(line, b' ').unwrap_or((line, ""));
    match cmd {
        "PING" if rest.is_empty() => Ok(Request::Ping),
        "PING" => Err(LineError::BadField),
        "CHECK" if !rest.is_empty() && !rest.contains(' ') => Ok(Request::Check(Some(rest))),
        "CHECK" => Err(LineError::BadField),
        "STATUS" => parse_status(rest).map(Request::Status),
        _ => Err(LineError::UnknownCommand),
    }
}

/// `s` split around the first `b` (an ASCII byte, so both sides stay UTF-8). A byte scan: for
/// the few bytes of a request word it is several times cheaper than `str::split_once`'s
/// searcher.
fn split_once(s: &str, b: u8) -> Option<(&str, &str)> {
    let i = s.bytes().position(|c| c == b)?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

fn parse_status(rest: &str) -> Result<TokenRef<'_>, LineError> {
    let mut t = TokenRef::default();
    let mut any = false;
    let mut words = Some(rest);
    while let Some(left) = words {
        let (word, more) = split_once(left, b' ').map_or((left, None), |(w, more)| (w, Some(more)));
        words = more;
        let (k, v) = split_once(word, b'=').ok_or(LineError::BadField)?;
        if v.is_empty() {
            return Err(LineError::BadField);
        }
        let slot = match k {
            "jti" => &mut t.jti,
            "iss" => &mut t.iss,
            "sub" => &mut t.sub,
            "kid" => &mut t.kid,
            "sid" => &mut t.sid,
            "iat" => {
                if t.iat.is_some() {
                    return Err(LineError::BadField);
                }
                t.iat = Some(v.parse().map_err(|_| LineError::BadField)?);
                any = true;
                continue;
            }
            _ => return Err(LineError::BadField),
        };
        if slot.is_some() {
            return Err(LineError::BadField);
        }
        *slot = Some(v);
        any = true;
    }
    if any {
        Ok(t)
    } else {
        Err(LineError::BadField)
    }
}

/// Writes a value that came from a token so it stays one word: `%`, whitespace and control
/// characters are percent-encoded.
fn word(out: &mut String, v: &str) {
    for c in v.chars() {
        if c == '%' || c.is_whitespace() || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
}

/// Appends the answer line (with `\n`) for `v` to `out`.
pub fn render(v: &Verdict, out: &mut String) {
    match v {
        Verdict::Ok { seq, lag_ms, stale, token } => {
            let _ = write!(out, "OK seq={seq} lag_ms={lag_ms}");
            if let Some(t) = token {
                if let Some(s) = &t.sub {
                    out.push_str(" sub=");
                    word(out, s);
                }
                let _ = write!(out, " exp={}", t.exp);
            }
            if *stale {
                out.push_str(" stale=1");
            }
        }
        Verdict::Revoked { kind, seq } => {
            let _ = write!(out, "REVOKED kind={kind} seq={seq}");
        }
        Verdict::Stale { lag_ms } => {
            let _ = write!(out, "STALE lag_ms={lag_ms}");
        }
        Verdict::Invalid(e) => {
            let _ = write!(out, "INVALID reason={}", e.as_str());
        }
        // The line protocol has no token-less CHECK; kept total for completeness.
        Verdict::NoToken => out.push_str("INVALID reason=malformed"),
        Verdict::Pong { seq, lag_ms, log_id, persist_ok } => {
            let log_id = log_id.map_or_else(|| "none".to_owned(), |l| l.to_string());
            let _ = write!(out, "PONG seq={seq} lag_ms={lag_ms} log_id={log_id}");
            if !persist_ok {
                // Applied but not yet persisted (a full disk): refused, not yet acknowledged.
                out.push_str(" persist=failing");
            }
        }
        Verdict::Error(why) => {
            let _ = write!(out, "ERR reason={why}");
        }
    }
    out.push('\n');
}

/// Appends the answer line for one raw line (without its `\n`) to `out`.
pub fn answer(checker: &Checker, line: &[u8], out: &mut String) {
    let req = parse(line).unwrap_or_else(|e| Request::Bad(e.as_str()));
    render(&checker.decide(req), out);
}

/// Finds the first complete line in `buf`: `Ok(Some(n))` when `buf[..n]` is a line (its `\n`
/// at `n`), `Ok(None)` when more bytes are needed, `Err` when the line is longer than `max`.
/// `scanned` bytes at the front are known to hold no `\n` and are not read again, so a line
/// that arrives in many small reads costs one pass, not one pass per read.
pub fn frame(buf: &[u8], scanned: usize, max: usize) -> Result<Option<usize>, LineError> {
    let from = scanned.min(buf.len());
    match buf[from..].iter().position(|b| *b == b'\n').map(|i| from + i) {
        Some(n) if n > max => Err(LineError::LineTooLong),
        Some(n) => Ok(Some(n)),
        None if buf.len() > max => Err(LineError::LineTooLong),
        None => Ok(None),
    }
}

/// A line-protocol connection: a read buffer and the answers not yet written. Answers to
/// pipelined requests are written together, once no complete line is left in the buffer.
#[derive(Debug)]
pub struct Connection<S> {
    stream: S,
    buf: BytesMut,
    out: String,
    max_line: usize,
    /// How many bytes at the front of `buf` hold no `\n` (see [`frame`]).
    scanned: usize,
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The client closed it, went idle, or the agent is shutting down.
    Closed,
    /// A line was longer than the limit (answered with `ERR reason=line_too_long`).
    LineTooLong,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// A connection accepting lines of at most `max_line` bytes.
    pub fn new(stream: S, max_line: usize) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(1024),
            out: String::with_capacity(256),
            max_line,
            scanned: 0,
        }
    }

    /// Serves requests until the connection ends.
    pub async fn serve(mut self, checker: &Checker, idle: Duration, shutdown: &CancellationToken) -> Ended {
        let mut reader = crate::front::reader::Reader::new(idle, shutdown);
        loop {
            match frame(&self.buf, self.scanned, self.max_line) {
                Ok(Some(n)) => {
                    answer(checker, &self.buf[..n], &mut self.out);
                    self.buf.advance(n + 1);
                    self.scanned = 0;
                    continue;
                }
                Ok(None) => self.scanned = self.buf.len(),
                Err(e) => {
                    checker.refuse();
                    render(&Verdict::Error(e.as_str()), &mut self.out);
                    let _ = self.stream.write_all(self.out.as_bytes()).await;
                    return Ended::LineTooLong;
                }
            }
            if !self.out.is_empty() {
                if self.stream.write_all(self.out.as_bytes()).await.is_err() {
                    return Ended::Closed;
                }
                self.out.clear();
            }
            if self.buf.capacity() - self.buf.len() < 512 {
                self.buf.reserve(4096.min(self.max_line + 1));
            }
            if reader.read(&mut self.stream, &mut self.buf).await.is_none() {
                return Ended::Closed;
            }
        }
    }
}

/// `revmesh-agent check`: one request on the line socket.
pub async fn check_once(socket: &Path, jwt: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(socket).await.map_err(|e| format!("{}: {e}", socket.display()))?;
    s.write_all(format!("CHECK {jwt}\n").as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while buf.len() < 4096 {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte)).await {
            Ok(Ok(1)) if byte[0] == b'\n' => break,
            Ok(Ok(1)) => buf.push(byte[0]),
            Ok(_) => break,
            Err(_) => return Err("no answer within 5s".into()),
        }
    }
    String::from_utf8(buf).map_err(|_| "answer is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn requests_parse() {
        let ok = |l: &str, r: Request<'static>| assert_eq!(parse(l.as_bytes()), Ok(r), "{l}");
        let err = |l: &str, e: LineError| assert_eq!(parse(l.as_bytes()), Err(e), "{l}");
        ok("PING", Request::Ping);
        ok("PING\r", Request::Ping);
        ok("CHECK a.b.c", Request::Check(Some("a.b.c")));
        ok("STATUS jti=x", Request::Status(TokenRef { jti: Some("x"), ..Default::default() }));
        ok(
            "STATUS jti=x iss=i sub=s iat=5 kid=k sid=q",
            Request::Status(TokenRef {
                jti: Some("x"),
                iss: Some("i"),
                sub: Some("s"),
                iat: Some(5),
                kid: Some("k"),
                sid: Some("q"),
            }),
        );
        err("", LineError::UnknownCommand);
        err("ping", LineError::UnknownCommand);
        err("HELLO", LineError::UnknownCommand);
        err("CHECK", LineError::BadField);
        err("CHECK a b", LineError::BadField);
        err("PING x", LineError::BadField);
        err("STATUS", LineError::BadField);
        err("STATUS jti", LineError::BadField);
        err("STATUS jti=", LineError::BadField);
        err("STATUS jti=a jti=b", LineError::BadField);
        err("STATUS iat=x", LineError::BadField);
        err("STATUS foo=1", LineError::BadField);
        err("STATUS  jti=a", LineError::BadField);
        assert_eq!(parse(b"STATUS jti=\xff"), Err(LineError::BadField));
    }

    #[test]
    fn framing_finds_lines_and_refuses_long_ones() {
        assert_eq!(frame(b"PING\nPI", 0, 10), Ok(Some(4)));
        assert_eq!(frame(b"PIN", 0, 10), Ok(None));
        assert_eq!(frame(b"0123456789A", 0, 10), Err(LineError::LineTooLong));
        assert_eq!(frame(b"0123456789A\n", 0, 10), Err(LineError::LineTooLong));
        assert_eq!(frame(b"0123456789\n", 0, 10), Ok(Some(10)));
        // The scanned prefix is not read again (the caller knows it holds no newline), and the
        // position found is still counted from the buffer's start.
        assert_eq!(frame(b"PI\nNG", 3, 10), Ok(None));
        assert_eq!(frame(b"PING\n", 3, 10), Ok(Some(4)));
        assert_eq!(frame(b"PI", 9, 10), Ok(None), "a stale count past the end is harmless");
    }

    #[test]
    fn verdicts_render_as_one_line() {
        let mut s = String::new();
        let token = crate::jwt::Verified { sub: Some("a b".into()), exp: 9, ..Default::default() };
        render(&Verdict::Ok { seq: 3, lag_ms: 4, stale: true, token: Some(Box::new(token)) }, &mut s);
        assert_eq!(s, "OK seq=3 lag_ms=4 sub=a%20b exp=9 stale=1\n");
        s.clear();
        render(&Verdict::Pong { seq: 1, lag_ms: 2, log_id: None, persist_ok: false }, &mut s);
        assert_eq!(s, "PONG seq=1 lag_ms=2 log_id=none persist=failing\n");
        s.clear();
        render(&Verdict::Error("bad_field"), &mut s);
        assert_eq!(s, "ERR reason=bad_field\n");
    }

    /// Sends PING and reads its answer line.
    async fn ping(c: &mut tokio::io::DuplexStream) {
        c.write_all(b"PING\n").await.expect("write");
        let mut got = Vec::new();
        while !got.ends_with(b"\n") {
            let mut b = [0u8; 256];
            let n = c.read(&mut b).await.expect("read");
            assert!(n > 0, "closed before the answer");
            got.extend_from_slice(&b[..n]);
        }
        assert!(got.starts_with(b"PONG "), "{}", String::from_utf8_lossy(&got));
    }

    // Virtual time: the runtime jumps the clock whenever every task waits on a timer.
    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_closes_after_the_idle_timeout_and_a_busy_one_does_not() {
        let idle = Duration::from_secs(60);
        let (checker, stop) = (Checker::for_tests(), CancellationToken::new());
        let (mut client, server) = tokio::io::duplex(4096);
        let t0 = tokio::time::Instant::now();
        let serve = Connection::new(server, 1024).serve(&checker, idle, &stop);
        let talk = async {
            // Requests at 0 s, 40 s and 80 s: the timer set at 0 s fires at 60 s with a read
            // 20 s old, so it must move on rather than close.
            for _ in 0..3 {
                ping(&mut client).await;
                tokio::time::sleep(Duration::from_secs(40)).await;
            }
            client
        };
        let (ended, mut client) = tokio::join!(serve, talk);
        assert_eq!(ended, Ended::Closed);
        // The last read was at 80 s; closed at 140 s, not at 120 s (twice the timeout) or later.
        assert_eq!(t0.elapsed(), Duration::from_secs(140));
        let mut b = [0u8; 8];
        assert_eq!(client.read(&mut b).await.expect("read"), 0, "closed");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_closes_a_connection_with_requests_pending() {
        let (checker, stop) = (Checker::for_tests(), CancellationToken::new());
        let (mut client, server) = tokio::io::duplex(1 << 16);
        // Pipelined requests waiting when the shutdown comes.
        let burst = b"PING\n".repeat(2000);
        client.write_all(&burst).await.expect("write");
        stop.cancel();
        let ended = Connection::new(server, 1024).serve(&checker, Duration::from_secs(60), &stop).await;
        assert_eq!(ended, Ended::Closed);
    }

    #[test]
    fn token_values_stay_one_word() {
        let mut s = String::new();
        word(&mut s, "a b%c\n");
        assert_eq!(s, "a%20b%25c%0A");
    }
}
