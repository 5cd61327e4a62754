//! HTTP/1.1 on the agent's sockets: the check endpoint proxies call (nginx `auth_request`,
//! Envoy and Caddy forward auth), `/healthz`, and `/metrics` on the TCP listener.
//!
//! [`parse_head`] is pure (bytes in, request out); [`read_request`] only feeds it; [`render`]
//! maps a [`Verdict`] to a status, headers and body. The decision is [`Checker::decide`]'s.

use crate::decide::{presented_token, Checker, Request, Verdict};
use crate::server::Reader;
use crate::state::AgentState;
use bytes::{Buf, BytesMut};
use revmesh_runtime::form::form_value;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Largest HTTP request head accepted.
pub const MAX_HEAD: usize = 16 << 10;
/// Largest HTTP request body accepted (an introspection form; checks need none).
pub const MAX_BODY: usize = 16 << 10;

/// A parsed HTTP request head.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HttpRequest {
    /// Method.
    pub method: String,
    /// Path (query stripped).
    pub path: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `Cookie` header.
    pub cookie: Option<String>,
    /// Keep the connection open after answering.
    pub keep_alive: bool,
    /// `Content-Length` (at most [`MAX_BODY`]).
    pub content_length: usize,
    /// The body, once read.
    pub body: Vec<u8>,
}

/// Why a request head is refused (the connection is closed without an answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not UTF-8, no request line, or a header without a colon.
    #[error("malformed request head")]
    Malformed,
    /// A body over [`MAX_BODY`], or one framed other than by `Content-Length`.
    #[error("request body too large or not framed by Content-Length")]
    Body,
    /// Longer than [`MAX_HEAD`].
    #[error("request head too large")]
    TooLarge,
}

/// Parses the first request head in `buf`: `Ok(Some((request, consumed)))`, or `Ok(None)` when
/// the head is not complete yet.
pub fn parse_head(buf: &[u8]) -> Result<Option<(HttpRequest, usize)>, HeadError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD { Err(HeadError::TooLarge) } else { Ok(None) };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| HeadError::Malformed)?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().ok_or(HeadError::Malformed)?.split(' ');
    let (Some(method), Some(target), Some(version)) = (first.next(), first.next(), first.next()) else {
        return Err(HeadError::Malformed);
    };
    let mut req = HttpRequest {
        method: method.to_owned(),
        path: target.split('?').next().unwrap_or("").to_owned(),
        authorization: None,
        cookie: None,
        keep_alive: version == "HTTP/1.1",
        content_length: 0,
        body: Vec::new(),
    };
    for l in lines {
        let (k, v) = l.split_once(':').ok_or(HeadError::Malformed)?;
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "authorization" => req.authorization = Some(v.to_owned()),
            "cookie" => req.cookie = Some(v.to_owned()),
            "connection" if v.eq_ignore_ascii_case("close") => req.keep_alive = false,
            "connection" if v.eq_ignore_ascii_case("keep-alive") => req.keep_alive = true,
            // Small bodies framed by Content-Length only: chunked framing is refused.
            "content-length" => {
                req.content_length = v.parse().ok().filter(|n| *n <= MAX_BODY).ok_or(HeadError::Body)?;
            }
            "transfer-encoding" => return Err(HeadError::Body),
            _ => {}
        }
    }
    Ok(Some((req, end + 4)))
}

/// Reads one request (head and body). `None` on EOF, idle timeout, shutdown or a refused head.
pub async fn read_request<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    reader: &mut Reader,
) -> Option<HttpRequest> {
    loop {
        if let Some((mut req, used)) = parse_head(buf).ok()? {
            buf.advance(used);
            while buf.len() < req.content_length {
                buf.reserve(req.content_length - buf.len());
                reader.read(s, buf).await?;
            }
            req.body = buf.split_to(req.content_length).to_vec();
            return Some(req);
        }
        buf.reserve(2048);
        reader.read(s, buf).await?;
    }
}

/// A response: status, headers, body.
pub type Response = (u16, Vec<(String, String)>, String);

/// Writes one response.
pub async fn write_response<S: AsyncWrite + Unpin>(
    s: &mut S,
    (status, headers, body): &Response,
    keep_alive: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut out = format!("HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n", body.len());
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
        out.push_str("Content-Type: text/plain\r\n");
    }
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(if keep_alive { "Connection: keep-alive\r\n\r\n" } else { "Connection: close\r\n\r\n" });
    out.push_str(body);
    s.write_all(out.as_bytes()).await
}

/// The check verdict as HTTP, in codes every auth proxy passes through: 200 allow, 401
/// invalid or revoked (with `WWW-Authenticate`), 403 stale under `--on-stale closed` (nginx
/// `auth_request` turns any other code into 500). Every answer names its verdict in
/// `X-Revmesh-Verdict`.
pub fn render(v: &Verdict) -> Response {
    let verdict = |v: &str| ("X-Revmesh-Verdict".to_owned(), v.to_owned());
    let challenge = |error: bool| {
        let v = if error { "Bearer error=\"invalid_token\"" } else { "Bearer" };
        ("WWW-Authenticate".to_owned(), v.to_owned())
    };
    match v {
        Verdict::NoToken => {
            (401, vec![verdict("invalid"), challenge(false)], "missing bearer token\n".into())
        }
        Verdict::Invalid(e) => (
            401,
            vec![verdict("invalid"), challenge(true), ("X-Revmesh-Reason".into(), e.as_str().into())],
            format!("invalid: {}\n", e.as_str()),
        ),
        Verdict::Revoked { kind, seq } => (
            401,
            vec![verdict("revoked"), challenge(true), ("X-Revmesh-Seq".into(), seq.to_string())],
            format!("revoked: {kind}\n"),
        ),
        Verdict::Stale { lag_ms } => {
            (403, vec![verdict("stale")], format!("stale: {lag_ms} ms since the authority was heard\n"))
        }
        Verdict::Ok { seq, stale, token, .. } => {
            let sub = token.as_ref().and_then(|t| t.sub.as_deref());
            let mut h = vec![verdict("ok"), ("X-Revmesh-Seq".into(), seq.to_string())];
            if let Some(sub) = sub.filter(|s| s.chars().all(|c| c.is_ascii_graphic() || c == ' ')) {
                h.push(("X-Revmesh-Sub".into(), sub.to_owned()));
            }
            if *stale {
                h.push(("X-Revmesh-Stale".into(), "1".into()));
            }
            (200, h, "ok\n".into())
        }
        // Not produced by a check; answered as a server error should one ever reach here.
        Verdict::Pong { .. } | Verdict::Error(_) => (500, Vec::new(), "unexpected verdict\n".into()),
    }
}

/// `POST /v1/introspect` (RFC 7662): form `token=<JWT>`; `{"active":true,…claims}` only for a
/// token the agent would answer OK for, `{"active":false}` otherwise (revoked, invalid, expired,
/// or stale under `--on-stale closed`).
pub fn introspect(checker: &Checker, body: &[u8]) -> Response {
    let json = |status: u16, v: serde_json::Value| {
        let headers = vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("Cache-Control".to_owned(), "no-store".to_owned()),
        ];
        (status, headers, v.to_string())
    };
    let Some(token) = form_value(body, "token") else {
        checker.refuse();
        return json(
            400,
            serde_json::json!({"error": "invalid_request", "error_description": "form parameter `token` is required"}),
        );
    };
    match checker.decide(Request::Check(Some(&token))) {
        Verdict::Ok { token: Some(t), .. } => {
            let mut v = serde_json::json!({"active": true, "exp": t.exp, "token_type": "Bearer"});
            if let Some(m) = v.as_object_mut() {
                let strings = [
                    ("sub", &t.sub),
                    ("iss", &t.iss),
                    ("jti", &t.jti),
                    ("scope", &t.scope),
                    ("client_id", &t.client_id),
                ];
                for (k, val) in strings {
                    if let Some(val) = val {
                        m.insert(k.into(), val.clone().into());
                    }
                }
                if let Some(iat) = t.iat {
                    m.insert("iat".into(), iat.into());
                }
                match t.aud.as_slice() {
                    [] => {}
                    [one] => {
                        m.insert("aud".into(), one.clone().into());
                    }
                    many => {
                        m.insert("aud".into(), many.to_vec().into());
                    }
                }
            }
            json(200, v)
        }
        _ => json(200, serde_json::json!({"active": false})),
    }
}

/// `/healthz`: the process answers; says so when applied entries wait to be persisted.
pub fn health(state: &AgentState) -> String {
    if state.persist_ok() {
        "ok\n".into()
    } else {
        "ok\npersist: failing (applied revocations are enforced but not yet durable or acknowledged)\n".into()
    }
}

/// Serves one HTTP connection on the check socket until it closes; `token_cookie` names the
/// cookie read when there is no bearer token.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    checker: &Checker,
    token_cookie: Option<&str>,
    idle: Duration,
    shutdown: &CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(1024);
    let mut reader = Reader::new(idle, shutdown);
    loop {
        let Some(req) = read_request(&mut s, &mut buf, &mut reader).await else { return };
        // Any method on /v1/check and below it: proxies forward the original method and
        // path (Envoy's `path_prefix`), nginx `auth_request` sends the client's method.
        let response = if req.path == "/v1/introspect" && req.method == "POST" {
            introspect(checker, &req.body)
        } else if req.path == "/v1/introspect" {
            checker.refuse();
            (405, vec![("Allow".into(), "POST".into())], "method not allowed: use POST\n".to_owned())
        } else if req.path == "/v1/check" || req.path.starts_with("/v1/check/") {
            let token = presented_token(req.authorization.as_deref(), req.cookie.as_deref(), token_cookie);
            render(&checker.decide(Request::Check(token)))
        } else if req.path == "/healthz" && req.method == "GET" {
            (200, Vec::new(), health(&checker.state))
        } else if req.path == "/healthz" {
            checker.refuse();
            (405, vec![("Allow".into(), "GET".into())], "method not allowed: use GET\n".to_owned())
        } else {
            // Counted like a line the agent did not understand.
            checker.refuse();
            (404, Vec::new(), "not found\n".to_owned())
        };
        if write_response(&mut s, &response, req.keep_alive).await.is_err() || !req.keep_alive {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Sends a keep-alive `GET /healthz` and reads the whole response.
    async fn get(c: &mut tokio::io::DuplexStream) {
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n").await.expect("write");
        let mut got = Vec::new();
        loop {
            let mut b = [0u8; 1024];
            let n = c.read(&mut b).await.expect("read");
            assert!(n > 0, "closed before the response");
            got.extend_from_slice(&b[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.parse::<usize>().ok())
                    .expect("content length");
                if body.len() >= len {
                    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
                    return;
                }
            }
        }
    }

    // Virtual time: the runtime jumps the clock whenever every task waits on a timer.
    #[tokio::test(start_paused = true)]
    async fn a_keep_alive_connection_closes_the_idle_timeout_after_its_last_request() {
        let (checker, stop) = (Checker::for_tests(), CancellationToken::new());
        let (mut client, server) = tokio::io::duplex(4096);
        let t0 = tokio::time::Instant::now();
        let serve = serve(server, &checker, None, Duration::from_secs(60), &stop);
        let talk = async {
            for _ in 0..3 {
                get(&mut client).await;
                tokio::time::sleep(Duration::from_secs(40)).await;
            }
            client
        };
        let ((), mut client) = tokio::join!(serve, talk);
        // Requests at 0, 40 and 80 s: closed at 140 s.
        assert_eq!(t0.elapsed(), Duration::from_secs(140));
        let mut b = [0u8; 8];
        assert_eq!(client.read(&mut b).await.expect("read"), 0, "closed");
    }

    #[test]
    fn heads_parse_without_io() {
        let (req, used) =
            parse_head(b"GET /v1/check?x=1 HTTP/1.1\r\nAuthorization: Bearer a.b.c\r\n\r\nrest")
                .ok()
                .flatten()
                .unwrap_or_default();
        assert_eq!(used, 59);
        assert_eq!(req.path, "/v1/check");
        assert_eq!(req.authorization.as_deref(), Some("Bearer a.b.c"));
        assert!(req.keep_alive);
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\n"), Ok(None));
        assert_eq!(parse_head(b"GET / HTTP/1.0\r\nContent-Length: 99999\r\n\r\n"), Err(HeadError::Body));
        assert_eq!(
            parse_head(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HeadError::Body)
        );
        let (req, _) =
            parse_head(b"POST / HTTP/1.0\r\nContent-Length: 12\r\n\r\n").ok().flatten().unwrap_or_default();
        assert_eq!(req.content_length, 12);
        assert_eq!(parse_head(b"GET\r\n\r\n"), Err(HeadError::Malformed));
        assert_eq!(parse_head(&vec![b'a'; MAX_HEAD + 1]), Err(HeadError::TooLarge));
    }
}
