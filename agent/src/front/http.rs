//! HTTP/1.1 on the agent's sockets: the check endpoint proxies call (nginx `auth_request`,
//! Envoy and Caddy forward auth), introspection, `/healthz`, and `/metrics` on the TCP listener.
//!
//! hyper reads and frames every request, so the agent reads a request the way the proxy in
//! front of it does: whatever RFC 9112 says a server MUST refuse (whitespace before a colon,
//! obs-fold, an unknown HTTP version, bytes a field may not hold, conflicting `Content-Length`s)
//! hyper answers 400 before a handler sees it. What hyper accepts but a proxy and the
//! application behind it could still read two ways, [`presented`] refuses (see [`Refusal`]): a
//! revocation check must be about the token the application will act on. [`render`] maps a
//! [`Verdict`] to a status, headers and body; the decision is [`Checker::decide`]'s.

use crate::decide::{presented_token, Checker, Request, TwoTokens, Verdict};
use crate::state::AgentState;
use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH,
    CONTENT_TYPE, COOKIE, TRANSFER_ENCODING, WWW_AUTHENTICATE,
};
use http::StatusCode;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use revmesh_runtime::form::form_value;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest HTTP request head accepted (hyper answers 431 beyond it).
pub const MAX_HEAD: usize = 16 << 10;
/// Largest HTTP request body accepted (an introspection form; checks need none).
pub const MAX_BODY: usize = 16 << 10;
/// Most header fields in one request (hyper answers 431 beyond it).
const MAX_HEADERS: usize = 64;

/// Why a request that hyper accepted is refused with 400: each is a message that the proxy in
/// front of the agent and the application behind it could read two ways, so that the agent
/// would check one token while the application acts on another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Two `Authorization` fields: frameworks differ on which one counts.
    #[error("more than one Authorization header")]
    DuplicateAuthorization,
    /// Two `Content-Length` fields, even equal ones: the body's end must have one reading.
    #[error("more than one Content-Length header")]
    DuplicateContentLength,
    /// A body framed by `Transfer-Encoding`: checks need no body, and introspection forms are
    /// small; one framing rule leaves nothing to disagree on.
    #[error("Transfer-Encoding is not accepted; frame the body with Content-Length")]
    TransferEncoding,
    /// The token itself has two readings (see [`presented_token`]).
    #[error(transparent)]
    Token(#[from] TwoTokens),
    /// An `Authorization` or `Cookie` field that is not visible ASCII.
    #[error("Authorization or Cookie holds bytes that are not visible ASCII")]
    NotText,
}

/// The token a request presents, by the rules of [`presented_token`], once the request is
/// known to have one reading: `Err` for every case of [`Refusal`].
pub fn presented<'h>(headers: &'h HeaderMap, cookie_name: Option<&str>) -> Result<Option<&'h str>, Refusal> {
    let mut auth = headers.get_all(AUTHORIZATION).iter();
    let authorization = auth.next().map(|v| v.to_str().map_err(|_| Refusal::NotText)).transpose()?;
    if auth.next().is_some() {
        return Err(Refusal::DuplicateAuthorization);
    }
    if headers.get_all(CONTENT_LENGTH).iter().nth(1).is_some() {
        return Err(Refusal::DuplicateContentLength);
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        return Err(Refusal::TransferEncoding);
    }
    let cookies = headers
        .get_all(COOKIE)
        .iter()
        .map(|field| field.to_str().map_err(|_| Refusal::NotText))
        .collect::<Result<Vec<&str>, Refusal>>()?;
    Ok(presented_token(authorization, cookies, cookie_name)?)
}

/// A response as hyper sends it.
pub type Response = hyper::Response<Full<Bytes>>;

// Header names and values built once: a name parsed from a string is an allocation per
// response, and the check endpoint answers every request of every proxied call.
const X_VERDICT: HeaderName = HeaderName::from_static("x-revmesh-verdict");
const X_SEQ: HeaderName = HeaderName::from_static("x-revmesh-seq");
const X_SUB: HeaderName = HeaderName::from_static("x-revmesh-sub");
const X_STALE: HeaderName = HeaderName::from_static("x-revmesh-stale");
const X_REASON: HeaderName = HeaderName::from_static("x-revmesh-reason");
const TEXT: HeaderValue = HeaderValue::from_static("text/plain");
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const BEARER: HeaderValue = HeaderValue::from_static("Bearer");
const INVALID_TOKEN: HeaderValue = HeaderValue::from_static("Bearer error=\"invalid_token\"");

/// A `text/plain` response with `status` and `body`.
fn text(status: StatusCode, body: impl Into<Bytes>) -> Response {
    let mut r = hyper::Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, TEXT);
    r
}

/// The check verdict as HTTP, in codes every auth proxy passes through: 200 allow, 401
/// invalid or revoked (with `WWW-Authenticate`), 403 stale under `--on-stale closed` (nginx
/// `auth_request` turns any other code into 500). Every answer names its verdict in
/// `X-Revmesh-Verdict`.
pub fn render(v: &Verdict) -> Response {
    let (mut r, verdict) = match v {
        Verdict::NoToken => {
            let mut r = text(StatusCode::UNAUTHORIZED, Bytes::from_static(b"missing bearer token\n"));
            r.headers_mut().insert(WWW_AUTHENTICATE, BEARER);
            (r, "invalid")
        }
        Verdict::Invalid(e) => {
            let mut r = text(StatusCode::UNAUTHORIZED, format!("invalid: {}\n", e.as_str()));
            r.headers_mut().insert(WWW_AUTHENTICATE, INVALID_TOKEN);
            r.headers_mut().insert(X_REASON, HeaderValue::from_static(e.as_str()));
            (r, "invalid")
        }
        Verdict::Revoked { kind, seq } => {
            let mut r = text(StatusCode::UNAUTHORIZED, format!("revoked: {kind}\n"));
            r.headers_mut().insert(WWW_AUTHENTICATE, INVALID_TOKEN);
            r.headers_mut().insert(X_SEQ, HeaderValue::from(*seq));
            (r, "revoked")
        }
        Verdict::Stale { lag_ms } => (
            text(StatusCode::FORBIDDEN, format!("stale: {lag_ms} ms since the authority was heard\n")),
            "stale",
        ),
        Verdict::Ok { seq, stale, token, .. } => {
            let mut r = text(StatusCode::OK, Bytes::from_static(b"ok\n"));
            let h = r.headers_mut();
            h.insert(X_SEQ, HeaderValue::from(*seq));
            // A `sub` that is not a plain header value is left out, never sent mangled.
            let sub = token.as_ref().and_then(|t| t.sub.as_deref());
            if let Some(sub) = sub.filter(|s| s.chars().all(|c| c.is_ascii_graphic() || c == ' ')) {
                if let Ok(v) = HeaderValue::from_str(sub) {
                    h.insert(X_SUB, v);
                }
            }
            if *stale {
                h.insert(X_STALE, HeaderValue::from_static("1"));
            }
            (r, "ok")
        }
        // Not produced by a check; answered as a server error should one ever reach here.
        Verdict::Pong { .. } | Verdict::Error(_) => {
            return text(StatusCode::INTERNAL_SERVER_ERROR, Bytes::from_static(b"unexpected verdict\n"))
        }
    };
    r.headers_mut().insert(X_VERDICT, HeaderValue::from_static(verdict));
    r
}

/// `POST /v1/introspect` (RFC 7662): form `token=<JWT>`; `{"active":true,…claims}` only for a
/// token the agent would answer OK for, `{"active":false}` otherwise (revoked, invalid, expired,
/// or stale under `--on-stale closed`).
pub fn introspect(checker: &Checker, body: &[u8]) -> Response {
    let json = |status: StatusCode, v: serde_json::Value| {
        let mut r = hyper::Response::new(Full::new(Bytes::from(v.to_string())));
        *r.status_mut() = status;
        r.headers_mut().insert(CONTENT_TYPE, JSON);
        r.headers_mut().insert(CACHE_CONTROL, NO_STORE);
        r
    };
    let token = match form_value(body, "token") {
        Ok(Some(token)) => token,
        missing_or_repeated => {
            checker.refuse();
            let why = match missing_or_repeated {
                Err(e) => e.to_string(),
                Ok(_) => "form parameter `token` is required".to_owned(),
            };
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "invalid_request", "error_description": why}),
            );
        }
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
                        m.insert(k.to_owned(), val.clone().into());
                    }
                }
                if let Some(iat) = t.iat {
                    m.insert("iat".to_owned(), iat.into());
                }
                match t.aud.as_slice() {
                    [] => {}
                    [one] => {
                        m.insert("aud".to_owned(), one.clone().into());
                    }
                    many => {
                        m.insert("aud".to_owned(), many.to_vec().into());
                    }
                }
            }
            json(StatusCode::OK, v)
        }
        _ => json(StatusCode::OK, serde_json::json!({"active": false})),
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

/// Serves one HTTP connection on a check socket until it closes; `token_cookie` names the
/// cookie read when there is no bearer token.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    checker: &Checker,
    token_cookie: Option<&str>,
    idle: Duration,
    shutdown: &CancellationToken,
) {
    serve_with(s, idle, shutdown, |req| answer(checker, token_cookie, idle, req)).await;
}

/// Serves one HTTP/1.1 connection with hyper, answering each request with `handle`. `idle`
/// bounds the wait for each request head, from the connection's start or the previous answer
/// (hyper's header read timeout), so a quiet keep-alive connection closes `idle` after its last
/// answer. At `shutdown` the request in progress is answered and the connection closed.
pub async fn serve_with<S, F, Fut>(s: S, idle: Duration, shutdown: &CancellationToken, handle: F)
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn(hyper::Request<Incoming>) -> Fut,
    Fut: Future<Output = Response>,
{
    let service = hyper::service::service_fn(|req| {
        let answered = handle(req);
        async move { Ok::<_, Infallible>(answered.await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .max_header_size(MAX_HEAD)
        .max_headers(MAX_HEADERS);
    let conn = builder.serve_connection(TokioIo::new(s), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// A 4xx that refuses the request itself: says why, and closes the connection.
fn refused(status: StatusCode, why: &str) -> Response {
    let mut r = text(status, format!("{why}\n"));
    r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

/// One request on a check socket.
async fn answer(
    checker: &Checker,
    token_cookie: Option<&str>,
    idle: Duration,
    req: hyper::Request<Incoming>,
) -> Response {
    let token = match presented(req.headers(), token_cookie) {
        Ok(t) => t,
        Err(why) => {
            checker.refuse();
            return refused(StatusCode::BAD_REQUEST, &why.to_string());
        }
    };
    let path = req.uri().path();
    // Any method on /v1/check and below it: proxies forward the original method and path
    // (Envoy's `path_prefix`), nginx `auth_request` sends the client's method.
    if path == "/v1/check" || path.starts_with("/v1/check/") {
        return render(&checker.decide(Request::Check(token)));
    }
    let method = req.method().clone();
    match (path, method) {
        ("/v1/introspect", hyper::Method::POST) => match read_body(req.into_body(), idle).await {
            Ok(body) => introspect(checker, &body),
            Err(status) => {
                checker.refuse();
                refused(status, "request body too large, or not received in time")
            }
        },
        ("/healthz", hyper::Method::GET) => text(StatusCode::OK, health(&checker.state)),
        (path, _) if path == "/v1/introspect" || path == "/healthz" => {
            checker.refuse();
            let allow = if path == "/healthz" { "GET" } else { "POST" };
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, format!("method not allowed: use {allow}\n"));
            r.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
            r
        }
        _ => {
            // Counted like a line the agent did not understand.
            checker.refuse();
            text(StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n"))
        }
    }
}

/// Reads a body of at most [`MAX_BODY`] bytes within `idle`; the status to refuse it with
/// otherwise (413 too large, 408 too slow, 400 broken).
async fn read_body(body: Incoming, idle: Duration) -> Result<Bytes, StatusCode> {
    use hyper::body::Body;
    if body.size_hint().lower() > MAX_BODY as u64 {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    match tokio::time::timeout(idle, Limited::new(body, MAX_BODY).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(StatusCode::PAYLOAD_TOO_LARGE),
        Ok(Err(_)) => Err(StatusCode::BAD_REQUEST),
        Err(_) => Err(StatusCode::REQUEST_TIMEOUT),
    }
}

/// One request on the metrics port: `/metrics` and `/healthz`.
pub async fn metrics_answer(state: &AgentState, req: hyper::Request<Incoming>) -> Response {
    match req.uri().path() {
        "/metrics" => {
            state.refresh_gauges();
            let mut r = text(StatusCode::OK, state.metrics.render());
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            r
        }
        "/healthz" => text(StatusCode::OK, health(state)),
        _ => text(StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n")),
    }
}

/// Serves `GET /metrics` and `/healthz` on a TCP listener, at most 64 connections at a time.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    state: Arc<AgentState>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let conns = Arc::new(Semaphore::new(64));
    while let Some((s, _)) = revmesh_runtime::net::accept(|| listener.accept(), &shutdown, "metrics").await {
        let Ok(permit) = conns.clone().try_acquire_owned() else { continue };
        let (state, shutdown) = (state.clone(), shutdown.clone());
        tracker.spawn(async move {
            let idle = Duration::from_secs(10);
            serve_with(s, idle, &shutdown, |req| metrics_answer(&state, req)).await;
            drop(permit);
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
                    .find_map(|l| l.strip_prefix("content-length: "))
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

    /// A token the unit-test checker accepts: issued now, for an hour.
    fn valid_token() -> String {
        let now = revmesh_runtime::Clock::system().unix_secs();
        let claims = serde_json::json!({"sub": "alice", "jti": "j1", "exp": now + 3_600, "iat": now});
        let key = jsonwebtoken::EncodingKey::from_secret(b"unit-test-secret-0123456789abcdef").expect("key");
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("token")
    }

    /// Sends `raw` on one connection to the check door and returns everything it answers
    /// before closing.
    async fn exchange(raw: &[u8], cookie: Option<&str>) -> String {
        let (checker, stop) = (Checker::for_tests(), CancellationToken::new());
        let (mut client, server) = tokio::io::duplex(64 << 10);
        let serve = serve(server, &checker, cookie, Duration::from_secs(5), &stop);
        let talk = async {
            client.write_all(raw).await.expect("write");
            let mut got = Vec::new();
            let _ = client.read_to_end(&mut got).await;
            String::from_utf8_lossy(&got).into_owned()
        };
        tokio::join!(serve, talk).1
    }

    /// The status line's code, or 0 when the connection closed without an answer.
    fn status(answer: &str) -> u16 {
        answer.strip_prefix("HTTP/1.1 ").and_then(|r| r.get(..3)).and_then(|c| c.parse().ok()).unwrap_or(0)
    }

    /// Each request here is one that the proxy in front of the agent and the application
    /// behind it could read two ways, or one RFC 9112 says a server MUST refuse. The door's
    /// hand-written parser before hyper answered 200 to the first four and read the others
    /// its own way; each is now a 400 (or 431 for a head over the limit).
    #[tokio::test]
    async fn requests_with_two_readings_are_refused() {
        let t = valid_token();
        let ok = format!(
            "GET /v1/check HTTP/1.1\r\nHost: a\r\nConnection: close\r\nAuthorization: Bearer {t}\r\n\r\n"
        );
        assert_eq!(status(&exchange(ok.as_bytes(), None).await), 200, "the valid request is answered");
        let cases: Vec<(&str, String, u16)> = vec![
            (
                "two Authorization fields, a bad token first and a valid one last",
                format!("GET /v1/check HTTP/1.1\r\nHost: a\r\nConnection: close\r\nAuthorization: Bearer x.y.z\r\nAuthorization: Bearer {t}\r\n\r\n"),
                400,
            ),
            (
                "an HTTP version that does not exist",
                format!("GET /v1/check HTTP/7.1\r\nHost: a\r\nConnection: close\r\nAuthorization: Bearer {t}\r\n\r\n"),
                400,
            ),
            (
                "a NUL inside a header value",
                format!("GET /v1/check HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-A: a\0b\r\nAuthorization: Bearer {t}\r\n\r\n"),
                400,
            ),
            (
                "whitespace before the colon (RFC 9112 section 5.1)",
                format!("GET /v1/check HTTP/1.1\r\nHost: a\r\nConnection: close\r\nAuthorization : Bearer {t}\r\n\r\n"),
                400,
            ),
            (
                "obs-fold (RFC 9112 section 5.2)",
                format!("GET /v1/check HTTP/1.1\r\nHost: a\r\nConnection: close\r\nAuthorization: Bearer\r\n {t}\r\n\r\n"),
                400,
            ),
            (
                "two different Content-Lengths",
                "POST /v1/introspect HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nx=1&y".to_owned(),
                400,
            ),
            (
                "two equal Content-Lengths",
                "POST /v1/introspect HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nx=1".to_owned(),
                400,
            ),
            (
                "a chunked body",
                "POST /v1/introspect HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nx=1\r\n0\r\n\r\n".to_owned(),
                400,
            ),
            (
                "a head over the limit whose end arrives in the same read",
                format!("GET /v1/check HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\nAuthorization: Bearer {t}\r\n\r\n", "p".repeat(MAX_HEAD)),
                431,
            ),
        ];
        for (what, raw, want) in cases {
            let got = exchange(raw.as_bytes(), None).await;
            assert_eq!(status(&got), want, "{what}: {got}");
        }
    }

    #[tokio::test]
    async fn the_token_cookie_has_one_reading_or_the_request_is_refused() {
        let t = valid_token();
        let ask = |fields: String| async move {
            let raw = format!("GET /v1/check HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{fields}\r\n");
            status(&exchange(raw.as_bytes(), Some("session")).await)
        };
        assert_eq!(ask(format!("Cookie: a=b; session={t}\r\n")).await, 200);
        assert_eq!(
            ask(format!("Authorization: Bearer {t}\r\nCookie: session={t}\r\n")).await,
            200,
            "the same token twice"
        );
        assert_eq!(ask(format!("Cookie: session=x.y.z; session={t}\r\n")).await, 400, "twice in one field");
        assert_eq!(
            ask(format!("Cookie: session=x.y.z\r\nCookie: session={t}\r\n")).await,
            400,
            "across two fields"
        );
        assert_eq!(
            ask(format!("Authorization: Bearer x.y.z\r\nCookie: session={t}\r\n")).await,
            400,
            "bearer and cookie differ"
        );
        assert_eq!(ask(format!("Cookie: sess=x; session={t}\r\n")).await, 200, "other cookies do not count");
    }

    #[tokio::test]
    async fn introspection_bodies_are_bounded() {
        let big =
            format!("POST /v1/introspect HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        assert_eq!(status(&exchange(big.as_bytes(), None).await), 413);
        let t = valid_token();
        let body = format!("token={t}");
        let raw = format!(
            "POST /v1/introspect HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let got = exchange(raw.as_bytes(), None).await;
        assert!(got.starts_with("HTTP/1.1 200") && got.contains("\"active\":true"), "{got}");
    }
}
