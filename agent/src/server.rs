//! Socket front ends: the line protocol and HTTP/1.1 over Unix sockets, and `/metrics` over TCP.
//!
//! Every connection is bounded: a connection cap, an idle timeout, a line/header size limit,
//! and output flushed per burst of pipelined requests.

use crate::lines::{self, check, CheckOutcome, Ctx};
use crate::state::{AgentState, Decision};
use bytes::{Buf, BytesMut};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest HTTP request head accepted.
const MAX_HTTP_HEAD: usize = 16 << 10;

/// What the socket servers share.
#[derive(Debug)]
pub struct Server {
    /// Agent state.
    pub state: Arc<AgentState>,
    /// Keys (replaced whole on SIGHUP; checks load them without a lock).
    pub keys: arc_swap::ArcSwap<crate::jwt::Keys>,
    /// Claim rules.
    pub rules: crate::jwt::Rules,
    /// Peer uid allow list (empty: anyone who can open the socket).
    pub allow_uid: Vec<u32>,
    /// Client cap across both sockets.
    pub clients: Arc<Semaphore>,
    /// Idle timeout.
    pub idle: Duration,
    /// Shutdown.
    pub shutdown: CancellationToken,
    /// Connection tasks.
    pub tracker: TaskTracker,
}

/// Who may connect to the agent's Unix sockets, beside `--allow-uid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketAccess {
    /// File mode (default 0660).
    pub mode: u32,
    /// Group to give the socket (default: the agent's own).
    pub gid: Option<u32>,
}

impl Default for SocketAccess {
    fn default() -> Self {
        Self { mode: 0o660, gid: None }
    }
}

/// Binds a Unix socket safely: refuses symlinks and non-sockets, refuses a live socket, removes a
/// stale one, then sets its group and mode.
pub fn bind_socket(path: &Path, access: SocketAccess) -> Result<UnixListener, String> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            let ft = meta.file_type();
            if ft.is_symlink() {
                return Err(format!("{} is a symlink; refusing to use it", path.display()));
            }
            if !ft.is_socket() {
                return Err(format!("{} exists and is not a socket; refusing to replace it", path.display()));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(format!("{} is live (another agent is running?)", path.display()));
            }
            std::fs::remove_file(path).map_err(|e| format!("removing stale {}: {e}", path.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let l = UnixListener::bind(path).map_err(|e| format!("binding {}: {e}", path.display()))?;
    if let Some(gid) = access.gid {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| format!("chgrp {gid} {}: {e}", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.mode))
        .map_err(|e| format!("chmod {:o} {}: {e}", access.mode, path.display()))?;
    Ok(l)
}

impl Server {
    fn ctx<'a>(&'a self, keys: &'a crate::jwt::Keys) -> Ctx<'a> {
        Ctx { state: &self.state, keys, rules: &self.rules }
    }

    fn peer_allowed(&self, s: &UnixStream) -> bool {
        if self.allow_uid.is_empty() {
            return true;
        }
        s.peer_cred().map(|c| self.allow_uid.contains(&c.uid())).unwrap_or(false)
    }

    /// Serves one Unix listener with `handler` until shutdown.
    pub async fn serve_unix(self: Arc<Self>, listener: UnixListener, http: bool) {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = self.shutdown.cancelled() => return,
            };
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let Ok(permit) = self.clients.clone().try_acquire_owned() else {
                // Over the cap: close at once rather than queue.
                drop(stream);
                continue;
            };
            if !self.peer_allowed(&stream) {
                drop(stream);
                continue;
            }
            let me = self.clone();
            self.tracker.spawn(async move {
                if http {
                    me.http_conn(stream).await;
                } else {
                    me.line_conn(stream).await;
                }
                drop(permit);
            });
        }
    }

    async fn line_conn(&self, mut s: UnixStream) {
        let max_line = self.rules.max_token_bytes + 64;
        let mut buf = BytesMut::with_capacity(1024);
        let mut out = String::with_capacity(256);
        loop {
            // Answer every complete line already buffered (pipelining), then flush once.
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                if pos > max_line {
                    out.push_str("ERR reason=line_too_long\n");
                    self.state.metrics.count_check("err");
                    let _ = s.write_all(out.as_bytes()).await;
                    return;
                }
                let started = Instant::now();
                let keys = self.keys.load();
                lines::answer(&self.ctx(&keys), &buf[..pos], &mut out);
                self.state.metrics.check_duration.observe(started.elapsed().as_secs_f64());
                buf.advance(pos + 1);
            }
            if buf.len() > max_line {
                out.push_str("ERR reason=line_too_long\n");
                self.state.metrics.count_check("err");
                let _ = s.write_all(out.as_bytes()).await;
                return;
            }
            if !out.is_empty() {
                if s.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
                out.clear();
            }
            if buf.capacity() - buf.len() < 512 {
                buf.reserve(4096.min(max_line + 1));
            }
            let read = tokio::select! {
                r = tokio::time::timeout(self.idle, s.read_buf(&mut buf)) => r,
                _ = self.shutdown.cancelled() => return,
            };
            match read {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn http_conn(&self, mut s: UnixStream) {
        let mut buf = BytesMut::with_capacity(1024);
        loop {
            let Some(req) = read_http(&mut s, &mut buf, self.idle, &self.shutdown).await else { return };
            // Any method on /v1/check and below it: proxies forward the original method and
            // path (Envoy's `path_prefix`), nginx `auth_request` sends the client's method.
            let (status, headers, body) = if req.path == "/v1/check" || req.path.starts_with("/v1/check/") {
                self.http_check(req.bearer.as_deref())
            } else if req.path == "/healthz" && req.method == "GET" {
                (200, Vec::new(), health(&self.state))
            } else if req.path == "/healthz" {
                self.state.metrics.count_check("err");
                (405, vec![("Allow".into(), "GET".into())], "method not allowed: use GET\n".to_owned())
            } else {
                // Counted like a line the agent did not understand.
                self.state.metrics.count_check("err");
                (404, Vec::new(), "not found\n".to_owned())
            };
            if write_http(&mut s, status, &headers, &body, req.keep_alive).await.is_err() || !req.keep_alive {
                return;
            }
        }
    }

    /// The check verdict as HTTP, in codes every auth proxy passes through: 200 allow, 401
    /// invalid or revoked (with `WWW-Authenticate`), 403 stale under `--on-stale closed` (nginx
    /// `auth_request` turns any other code into 500). Every answer names its verdict in
    /// `X-Revmesh-Verdict`.
    fn http_check(&self, bearer: Option<&str>) -> (u16, Vec<(String, String)>, String) {
        type H = Vec<(String, String)>;
        let verdict = |v: &str| ("X-Revmesh-Verdict".to_owned(), v.to_owned());
        let challenge = |error: bool| {
            let v = if error { "Bearer error=\"invalid_token\"" } else { "Bearer" };
            ("WWW-Authenticate".to_owned(), v.to_owned())
        };
        let started = Instant::now();
        let Some(jwt) = bearer else {
            self.state.metrics.count_check("invalid");
            let h: H = vec![verdict("invalid"), challenge(false)];
            return (401, h, "missing bearer token\n".into());
        };
        let keys = self.keys.load();
        let r = match check(&self.ctx(&keys), jwt) {
            CheckOutcome::Invalid(e) => {
                self.state.metrics.count_check("invalid");
                let h: H =
                    vec![verdict("invalid"), challenge(true), ("X-Revmesh-Reason".into(), e.as_str().into())];
                (401, h, format!("invalid: {}\n", e.as_str()))
            }
            CheckOutcome::Decided(Decision::Revoked { kind, seq }, _, _) => {
                self.state.metrics.count_check("revoked");
                let h: H =
                    vec![verdict("revoked"), challenge(true), ("X-Revmesh-Seq".into(), seq.to_string())];
                (401, h, format!("revoked: {kind}\n"))
            }
            CheckOutcome::Decided(Decision::Stale { lag_ms }, _, _) => {
                self.state.metrics.count_check("stale");
                (403, vec![verdict("stale")], format!("stale: {lag_ms} ms since the authority was heard\n"))
            }
            CheckOutcome::Decided(Decision::Ok { seq, stale, .. }, sub, _) => {
                self.state.metrics.count_check("ok");
                let mut h: H = vec![verdict("ok"), ("X-Revmesh-Seq".into(), seq.to_string())];
                if let Some(sub) = sub.filter(|s| s.chars().all(|c| c.is_ascii_graphic() || c == ' ')) {
                    h.push(("X-Revmesh-Sub".into(), sub));
                }
                if stale {
                    h.push(("X-Revmesh-Stale".into(), "1".into()));
                }
                (200, h, "ok\n".into())
            }
        };
        self.state.metrics.check_duration.observe(started.elapsed().as_secs_f64());
        r
    }
}

/// `/healthz`: the process answers; says so when applied entries wait to be persisted.
fn health(state: &AgentState) -> String {
    if state.persist_ok() {
        "ok\n".into()
    } else {
        "ok\npersist: failing (applied revocations are enforced but not yet durable or acknowledged)\n".into()
    }
}

/// A parsed HTTP request head.
#[derive(Debug, Default)]
pub struct HttpRequest {
    /// Method.
    pub method: String,
    /// Path (query stripped).
    pub path: String,
    /// Bearer token from `Authorization`.
    pub bearer: Option<String>,
    /// Keep the connection open after answering.
    pub keep_alive: bool,
}

/// Reads one request head (bodies are not accepted). `None` on EOF, timeout, oversize or garbage.
pub async fn read_http<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    idle: Duration,
    shutdown: &CancellationToken,
) -> Option<HttpRequest> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).ok()?.to_owned();
            buf.advance(end + 4);
            let mut lines = head.split("\r\n");
            let mut first = lines.next()?.split(' ');
            let (method, target, version) = (first.next()?, first.next()?, first.next()?);
            let mut req = HttpRequest {
                method: method.to_owned(),
                path: target.split('?').next().unwrap_or("").to_owned(),
                bearer: None,
                keep_alive: version == "HTTP/1.1",
            };
            for l in lines {
                let (k, v) = l.split_once(':')?;
                let v = v.trim();
                match k.trim().to_ascii_lowercase().as_str() {
                    "authorization" => req.bearer = v.strip_prefix("Bearer ").map(|t| t.trim().to_owned()),
                    "connection" if v.eq_ignore_ascii_case("close") => req.keep_alive = false,
                    "connection" if v.eq_ignore_ascii_case("keep-alive") => req.keep_alive = true,
                    // Bodies are never needed here; refusing them keeps framing simple and safe.
                    "content-length" if v != "0" => return None,
                    "transfer-encoding" => return None,
                    _ => {}
                }
            }
            return Some(req);
        }
        if buf.len() > MAX_HTTP_HEAD {
            return None;
        }
        buf.reserve(2048);
        let n = tokio::select! {
            r = tokio::time::timeout(idle, s.read_buf(buf)) => r.ok()?.ok()?,
            _ = shutdown.cancelled() => return None,
        };
        if n == 0 {
            return None;
        }
    }
}

/// Writes one response.
pub async fn write_http<S: AsyncWrite + Unpin>(
    s: &mut S,
    status: u16,
    headers: &[(String, String)],
    body: &str,
    keep_alive: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut out = format!("HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n", body.len());
    out.push_str("Content-Type: text/plain\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(if keep_alive { "Connection: keep-alive\r\n\r\n" } else { "Connection: close\r\n\r\n" });
    out.push_str(body);
    s.write_all(out.as_bytes()).await
}

/// Serves `GET /metrics` on a TCP listener.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    state: Arc<AgentState>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let conns = Arc::new(Semaphore::new(64));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let Ok((mut s, _)) = accepted else { continue };
        let Ok(permit) = conns.clone().try_acquire_owned() else { continue };
        let state = state.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let mut buf = BytesMut::new();
            if let Some(req) = read_http(&mut s, &mut buf, Duration::from_secs(10), &shutdown).await {
                let (status, body) = match req.path.as_str() {
                    "/metrics" => {
                        state.refresh_gauges();
                        (200, state.metrics.render())
                    }
                    "/healthz" => (200, health(&state)),
                    _ => (404, "not found\n".into()),
                };
                let _ = write_http(&mut s, status, &[], &body, false).await;
            }
            drop(permit);
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
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
