//! The agent endpoint: WebSocket accept with bearer auth, then one task per agent driving the
//! protocol crate's [`AuthoritySession`].
//!
//! Architecture invariant: a link task only ever blocks on its own socket. Log growth reaches
//! it through its [`Signal`] (one fan-out task raises every link's) and batches come from the
//! shared encoded-frame cache, so a slow or dead agent delays nobody else.

pub(crate) mod hub;
pub(crate) mod registry;
pub(crate) mod signal;
mod ws_write;

use crate::links::hub::Hub;
use crate::links::signal::{Signal, Signals, LOG_GREW, REPLACED, SHUTDOWN};
use crate::links::ws_write::write_frames;
use crate::log::Log;
use crate::metrics::Metrics;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use prometheus::IntGauge;
use revmesh_protocol::authority::{AuthorityConfig, AuthorityEvent, AuthoritySession, Close, Transmit};
use revmesh_protocol::codec::{decode, encode};
use revmesh_protocol::frame::{ErrorCode, ErrorFrame, Frame};
use revmesh_protocol::Now;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the authority asks an agent to leave.
#[derive(Clone, Copy, Debug)]
enum Leave {
    /// The authority is shutting down.
    Shutdown,
    /// A newer link with the same agent id replaced this one.
    Replaced,
    /// This replica has not read its shared store for `--store-timeout` + 1 s.
    StoreUnreachable,
}

/// A link's claim on a catch-up slot.
enum Catchup {
    /// Needs none (or is done).
    None,
    /// Waiting in line, data held; counted in `revmesh_authority_catchups_waiting` while the
    /// guard lives.
    Waiting { _counted: WaitingGuard },
    /// Holds one until it is at the head; dropping the permit frees the slot.
    Slot { _permit: OwnedSemaphorePermit },
}

/// One count in the waiting gauge, for as long as it lives.
struct WaitingGuard(IntGauge);

impl WaitingGuard {
    fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Path of the agent endpoint.
pub const AGENT_PATH: &str = "/v1/agents";

/// Settings of the agent endpoint.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Delivery tunables.
    pub session: AuthorityConfig,
    /// Most connections at once.
    pub max_agents: usize,
    /// Most agents catching up at once.
    pub max_catchups: usize,
    /// Limit on the WebSocket upgrade and the `Hello`.
    pub handshake_timeout: Duration,
    /// How long an agent's socket may take nothing of a write before the link is dropped.
    pub write_timeout: Duration,
}

/// Agent credentials: each the SHA-256 of a token and the agent ids (a pattern) it may be used
/// with (several at once, for rotation). `None`: agent authentication is off.
#[derive(Debug, Default)]
pub struct AgentTokens(pub RwLock<Option<Vec<AgentCredential>>>);

/// One line of the agent token file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCredential {
    /// `web-1`, `web-*` (a prefix) or `*` (any id).
    pub pattern: String,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
}

impl AgentCredential {
    /// True when an agent presenting this credential may use `id`.
    pub fn admits(&self, id: &str) -> bool {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => id.starts_with(prefix),
            None => self.pattern == id,
        }
    }
}

impl AgentTokens {
    /// Reads `ID-PATTERN SHA256-HEX` lines; blank lines and `#` comments are skipped. A line
    /// with one field is a plaintext token from before ids were bound, admitted for any id
    /// (`*`), with a warning. Errors name the line, never its content.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut out = Vec::new();
        let mut plain = 0;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields[..] {
                [token] => {
                    plain += 1;
                    out.push(AgentCredential {
                        pattern: "*".into(),
                        sha256: crate::operators::token_sha256(token),
                    });
                }
                [pattern, hash] => {
                    let mut sha256 = [0u8; 32];
                    hex::decode_to_slice(hash, &mut sha256).map_err(|_| {
                        format!(
                            "{} line {}: the second field must be a SHA-256 in 64 hex characters",
                            path.display(),
                            i + 1
                        )
                    })?;
                    // `*`, or an id or id prefix with at most one `*`, at the end.
                    let prefix = pattern.strip_suffix('*').unwrap_or(pattern);
                    let valid = pattern == "*"
                        || (!prefix.contains('*')
                            && revmesh_protocol::model::validate_id("agent id", prefix).is_ok());
                    if !valid {
                        return Err(format!(
                            "{} line {}: the first field must be an agent id, a prefix ending in `*`, or `*`",
                            path.display(),
                            i + 1
                        ));
                    }
                    out.push(AgentCredential { pattern: pattern.to_owned(), sha256 });
                }
                _ => {
                    return Err(format!(
                        "{} line {}: expected `ID-PATTERN SHA256-HEX`",
                        path.display(),
                        i + 1
                    ))
                }
            }
        }
        if plain > 0 {
            tracing::warn!(
                path = %path.display(),
                lines = plain,
                "agent token lines without an id pattern admit any agent id: whoever holds one can pose as any agent; write `ID-PATTERN SHA256-HEX` lines"
            );
        }
        Ok(Self(RwLock::new(Some(out))))
    }

    /// Replaces the credentials with the file's current content.
    pub fn reload(&self, path: &std::path::Path) -> Result<(), String> {
        let fresh = Self::load(path)?;
        let tokens = fresh.0.into_inner().unwrap_or_else(|p| p.into_inner());
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = tokens;
        Ok(())
    }

    /// What the presented token admits: `Some(patterns)` (empty: nothing, a wrong or missing
    /// token) when authentication is on, `None` when it is off. Every hash is compared.
    fn admits(&self, presented: Option<&str>) -> Option<Vec<AgentCredential>> {
        let guard = self.0.read().unwrap_or_else(|p| p.into_inner());
        let creds = guard.as_ref()?;
        let Some(p) = presented else { return Some(Vec::new()) };
        let digest = crate::operators::token_sha256(p);
        Some(creds.iter().filter(|c| crate::auth::ct_eq(&c.sha256, &digest)).cloned().collect())
    }
}

/// Everything a link task needs.
#[derive(Debug)]
pub struct Links {
    /// The live log.
    pub log: Arc<Log>,
    /// Agent registry.
    pub hub: Arc<Hub>,
    /// Metrics.
    pub metrics: Metrics,
    /// Settings.
    pub cfg: LinkConfig,
    /// Agent tokens.
    pub tokens: Arc<AgentTokens>,
    /// Set on shutdown.
    pub shutdown: CancellationToken,
    /// Tracks link tasks, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// TLS for the endpoint, when configured.
    pub tls: Option<crate::tls::ServerTls>,
    catchups: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    signals: Arc<Signals>,
}

fn ws_config() -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    // tungstenite zero-fills the free capacity of its read buffer on every read: with the
    // 128 KiB default that memset dominated CPU with thousands of agents. Agents only send
    // small frames (a hello is at most ~600 bytes; acks and heartbeats are a few dozen), and a
    // larger one grows the buffer as it needs: 1 KiB instead of 4 saved 3 KiB per link and a
    // few percent of each link's CPU at 10,000 agents.
    c.read_buffer_size = 1 << 10;
    c.max_message_size = Some(64 << 10);
    c.max_frame_size = Some(64 << 10);
    // Protocol frames bypass tungstenite's write buffer (ws_write.rs); it only ever holds the
    // small frames tungstenite writes itself (pong, close, an error frame before a close), and a
    // `Vec` keeps its capacity for the link's life, so no 128 KiB staging either.
    c.write_buffer_size = 0;
    c.max_write_buffer_size = 8 << 20;
    c
}

impl Links {
    /// Builds the endpoint state.
    pub fn new(
        log: Arc<Log>,
        hub: Arc<Hub>,
        metrics: Metrics,
        cfg: LinkConfig,
        tokens: Arc<AgentTokens>,
        shutdown: CancellationToken,
        tls: Option<crate::tls::ServerTls>,
    ) -> Self {
        Self {
            tls,
            catchups: Arc::new(Semaphore::new(cfg.max_catchups)),
            connections: Arc::new(Semaphore::new(cfg.max_agents)),
            signals: Arc::default(),
            log,
            hub,
            metrics,
            cfg,
            tokens,
            shutdown,
            tracker: TaskTracker::new(),
        }
    }

    /// Accepts agents until shutdown.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        self.tracker.spawn(self.clone().fan_out());
        loop {
            let Some((stream, remote)) =
                revmesh_runtime::net::accept(|| listener.accept(), &self.shutdown, "agents").await
            else {
                break;
            };
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                self.metrics.agents_rejected_total.with_label_values(&["too_many_connections"]).inc();
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let me = self.clone();
            self.tracker.spawn(async move {
                me.handle(stream, remote).await;
                drop(permit);
            });
        }
    }

    /// Raises every link's signal when the log's view changes, and [`SHUTDOWN`] at shutdown
    /// (also when the log's channel closes, which cannot happen while `self` holds the log).
    async fn fan_out(self: Arc<Self>) {
        let mut view_rx = self.log.subscribe();
        loop {
            tokio::select! {
                r = view_rx.changed() => match r {
                    Ok(()) => self.signals.raise_all(LOG_GREW),
                    Err(_) => break,
                },
                _ = self.shutdown.cancelled() => break,
            }
        }
        self.signals.raise_all(SHUTDOWN);
    }

    fn reject(&self, reason: &'static str) {
        self.metrics.frames_rejected_total.with_label_values(&[reason]).inc();
    }

    async fn handle(&self, stream: TcpStream, remote: SocketAddr) {
        let Some(tls) = &self.tls else {
            return self.handle_ws(stream, remote, None).await;
        };
        match tokio::time::timeout(self.cfg.handshake_timeout, tls.acceptor().accept(stream)).await {
            Ok(Ok(s)) => {
                let cert =
                    s.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.clone().into_owned());
                self.handle_ws(s, remote, cert).await
            }
            Ok(Err(e)) => {
                self.metrics.agents_rejected_total.with_label_values(&["tls"]).inc();
                tracing::debug!(%remote, error = %e, "TLS handshake failed");
            }
            Err(_) => {
                self.metrics.agents_rejected_total.with_label_values(&["handshake_timeout"]).inc();
            }
        }
    }

    // The callback's error type is fixed by tungstenite.
    #[allow(clippy::result_large_err)]
    async fn handle_ws<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        remote: SocketAddr,
        client_cert: Option<rustls::pki_types::CertificateDer<'static>>,
    ) {
        let tokens = self.tokens.clone();
        // What the token admits, for the id check once the hello names the agent.
        let admitted: Arc<std::sync::Mutex<Option<Vec<AgentCredential>>>> = Arc::default();
        let admitted_in_upgrade = admitted.clone();
        let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
            let deny = |status: u16, msg: &str| {
                let mut r = ErrorResponse::new(Some(msg.to_owned()));
                *r.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::from_u16(status)
                    .unwrap_or(tokio_tungstenite::tungstenite::http::StatusCode::BAD_REQUEST);
                Err(r)
            };
            if req.uri().path() != AGENT_PATH {
                return deny(404, "no such endpoint; agents connect to /v1/agents");
            }
            let presented = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let creds = tokens.admits(presented);
            if creds.as_ref().is_some_and(Vec::is_empty) {
                return deny(401, "missing or invalid agent token");
            }
            *admitted_in_upgrade.lock().unwrap_or_else(|p| p.into_inner()) = creds;
            Ok(resp)
        };
        let upgrade = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config()));
        let mut ws = match tokio::time::timeout(self.cfg.handshake_timeout, upgrade).await {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                use tokio_tungstenite::tungstenite::{http::StatusCode, Error as WsError};
                let reason = match &e {
                    WsError::Http(r) if r.status() == StatusCode::UNAUTHORIZED => "unauthorized",
                    _ => "handshake",
                };
                self.metrics.agents_rejected_total.with_label_values(&[reason]).inc();
                tracing::debug!(%remote, error = %e, "agent handshake failed");
                return;
            }
            Err(_) => {
                self.metrics.agents_rejected_total.with_label_values(&["handshake_timeout"]).inc();
                return;
            }
        };
        let hello = match tokio::time::timeout(self.cfg.handshake_timeout, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => match decode(&b) {
                Ok(Frame::Hello(h)) => h,
                Ok(other) => {
                    self.reject("unexpected_frame");
                    let ef = ErrorFrame::new(
                        ErrorCode::UnexpectedFrame,
                        format!("expected hello, got {}", other.name()),
                    );
                    close_with(&mut ws, ef).await;
                    return;
                }
                Err(e) => {
                    self.reject(e.reason());
                    close_with(&mut ws, ErrorFrame::new(e.error_code(), e.to_string())).await;
                    return;
                }
            },
            Ok(Some(Ok(_))) => {
                self.reject("not_binary");
                close_with(&mut ws, ErrorFrame::new(ErrorCode::Malformed, "expected a binary hello frame"))
                    .await;
                return;
            }
            Ok(Some(Err(e))) => {
                self.reject(ws_error_reason(&e));
                return;
            }
            Ok(None) => return,
            Err(_) => {
                self.reject("hello_timeout");
                close_with(&mut ws, ErrorFrame::new(ErrorCode::Violation, "no hello in time")).await;
                return;
            }
        };
        if self.tls.as_ref().is_some_and(|t| t.mutual())
            && !client_cert.as_ref().is_some_and(|c| crate::tls::names_agent(c, &hello.agent_id))
        {
            // Under mutual TLS an agent is who its certificate says: no claiming another id.
            self.metrics.agents_rejected_total.with_label_values(&["identity"]).inc();
            let msg = format!("client certificate is not for agent id {}", hello.agent_id);
            close_with(&mut ws, ErrorFrame::new(ErrorCode::Unauthorized, msg)).await;
            return;
        }
        let creds = admitted.lock().unwrap_or_else(|p| p.into_inner()).take();
        if creds.is_some_and(|c| !c.iter().any(|c| c.admits(&hello.agent_id))) {
            // A valid token used with an id it was not issued for: refused before the link is
            // registered, so the agent that owns the id keeps its link and its receipts.
            self.metrics.agents_rejected_total.with_label_values(&["identity"]).inc();
            tracing::warn!(%remote, agent = %hello.agent_id, "agent token not valid for this agent id; refused");
            let msg = format!("this token is not valid for agent id {}", hello.agent_id);
            close_with(&mut ws, ErrorFrame::new(ErrorCode::Unauthorized, msg)).await;
            return;
        }
        let view = self.log.view();
        if hello.log_id == Some(view.log_id) && hello.applied_seq > view.head {
            // An agent past this replica's head may only have come from a replica that tailed a
            // shared log further: read the store before taking it for a lost or restored one.
            if let Err(e) = self.log.catch_up().await {
                tracing::warn!(error = %e, "reading the log beyond the head failed");
            }
        }
        let t = self.log.clock().now();
        let seed = rand::random::<u64>();
        let mut session =
            match AuthoritySession::accept(&hello, self.log.view(), self.cfg.session.clone(), t, seed) {
                Ok(s) => s,
                Err(rejected) => {
                    self.reject("version");
                    close_with(&mut ws, rejected.0).await;
                    return;
                }
            };
        // Admission: every agent is welcomed at once, so it learns how far behind it is (its
        // answers turn stale until it catches up). One that must catch up also needs a catch-up
        // slot; until one is free (first come, first served) its data is held and only
        // heartbeats flow, which keep the link alive however long the line. A go-away instead
        // would cost a reconnect and a handshake, and leave the agent unaware it is behind.
        let mut catchup = Catchup::None;
        if session.needs_catch_up() {
            catchup = match self.catchups.clone().try_acquire_owned() {
                Ok(p) => Catchup::Slot { _permit: p },
                Err(_) => {
                    session.hold_data(true);
                    Catchup::Waiting { _counted: WaitingGuard::new(&self.metrics.catchups_waiting) }
                }
            };
        }
        let id = hello.agent_id.clone();
        // Listed before `drive` reads the log's view: no growth after that read goes unseen.
        let registered = self.signals.register();
        let signal = &registered.signal;
        let link = self.hub.connect(
            &id,
            remote.to_string(),
            hello.agent_version.clone(),
            session.acked(),
            signal.clone(),
        );
        tracing::info!(agent = %id, %remote, applied = hello.applied_seq, "agent connected");
        if session.ahead_of_log() {
            let view = self.log.view();
            let agents_ahead = self.hub.ahead_of_log(&id);
            tracing::error!(
                agent = %id,
                agent_log = %hello.log_id.map(|l| l.to_string()).unwrap_or_default(),
                agent_seq = hello.applied_seq,
                log = %view.log_id,
                head = view.head,
                agents_ahead,
                "agent holds entries this log never had: the store was lost or restored from an older copy; \
                 the agents keep enforcing them (docs/operations.md: losing or restoring the authority's store)"
            );
        }
        let reason = self.drive(&mut ws, &mut session, &id, link, signal, &mut catchup).await;
        self.hub.disconnect(&id, link);
        tracing::info!(agent = %id, reason = %reason, "agent disconnected");
    }

    #[allow(clippy::too_many_arguments)]
    async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        ws: &mut WebSocketStream<S>,
        session: &mut AuthoritySession,
        id: &str,
        link: u64,
        signal: &Signal,
        catchup: &mut Catchup,
    ) -> String {
        // The welcome counts as heard from now: it goes out only on a current view of the log
        // (a replica that cannot read its shared store sends the agent elsewhere instead).
        if !self.log.fresh_view(self.log.clock().unix_ms()).await {
            return self.go_away(ws, session, id, Leave::StoreUnreachable).await;
        }
        session.update_log(self.log.view());
        // Long-lived futures, polled by reference: re-creating a timer on every loop turn cost
        // more than the frame handling itself at 1,000+ links.
        let never = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        let timer = tokio::time::sleep_until(never);
        tokio::pin!(timer);
        let slot = self.catchups.clone().acquire_owned();
        tokio::pin!(slot);
        // Read once per wake-up: each reading is two clock calls (wall and monotonic).
        let mut t = self.log.clock().now();
        loop {
            // A replica that cannot read its shared store sends its agents to one that can, and
            // until then its heartbeats vouch only for what it last read (ARCHITECTURE.md).
            if !self.log.vouches(t.unix_ms) {
                return self.go_away(ws, session, id, Leave::StoreUnreachable).await;
            }
            session.vouch(self.log.vouched_ms(t.unix_ms));
            // Send whatever the session wants sent, as the shared encoded bytes (ws_write.rs).
            while let Some(tx) = session.poll_transmit(t) {
                let frames = match self.materialise(tx, t, session.version()) {
                    Ok(f) => f,
                    Err(e) => return format!("encode failed: {e}"),
                };
                match write_frames(ws, &frames, self.cfg.write_timeout).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return "write timed out".into(),
                    Err(_) => return "write failed".into(),
                }
            }
            if matches!(catchup, Catchup::Slot { .. }) && session.lag() == 0 {
                *catchup = Catchup::None;
            }
            // The timer only ever moves earlier, or on from a deadline that has passed: every batch
            // sent sets an ack deadline and every ack clears it, and moving a tokio timer to a later
            // deadline twice per revocation cost more than the one early wake-up it saves (the
            // session finds nothing due, and the timer then moves on).
            let deadline = session.poll_timeout().map_or(never, tokio::time::Instant::from_std);
            if deadline < timer.deadline() || (timer.is_elapsed() && deadline != timer.deadline()) {
                timer.as_mut().reset(deadline);
            }
            tokio::select! {
                msg = ws.next() => {
                    t = self.log.clock().now();
                    let frame = match msg {
                        Some(Ok(Message::Binary(b))) => match decode(&b) {
                            Ok(f) => f,
                            Err(e) => {
                                self.reject(e.reason());
                                close_with(ws, ErrorFrame::new(e.error_code(), e.to_string())).await;
                                return format!("bad frame: {e}");
                            }
                        },
                        Some(Ok(Message::Close(_))) | None => return "closed by agent".into(),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(_)) => {
                            self.reject("not_binary");
                            close_with(ws, ErrorFrame::new(ErrorCode::Malformed, "only binary frames are accepted")).await;
                            return "text frame".into();
                        }
                        Some(Err(e)) => {
                            self.reject(ws_error_reason(&e));
                            return format!("link error: {e}");
                        }
                    };
                    if let Err(close) = session.handle_frame(frame, t) {
                        return self.closed(ws, close).await;
                    }
                    self.events(session, id, link);
                }
                p = &mut slot, if matches!(catchup, Catchup::Waiting { .. }) => {
                    t = self.log.clock().now();
                    // The semaphore is never closed; an error would only mean no slot.
                    *catchup = p.map_or(Catchup::None, |p| Catchup::Slot { _permit: p });
                    session.hold_data(false);
                }
                _ = &mut timer => {
                    t = self.log.clock().now();
                    session.handle_timeout(t);
                    self.events(session, id, link);
                    if let Some(close) = session.closed().cloned() {
                        return self.closed(ws, close).await;
                    }
                }
                raised = signal.raised() => {
                    t = self.log.clock().now();
                    if raised & SHUTDOWN != 0 {
                        return self.go_away(ws, session, id, Leave::Shutdown).await;
                    }
                    if raised & REPLACED != 0 {
                        return self.go_away(ws, session, id, Leave::Replaced).await;
                    }
                    session.update_log(self.log.view());
                }
            }
        }
    }

    /// Asks the agent to leave: the authority is shutting down, cannot read its shared store,
    /// or a newer link with the same agent id replaced this one.
    async fn go_away<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        ws: &mut WebSocketStream<S>,
        session: &mut AuthoritySession,
        id: &str,
        why: Leave,
    ) -> String {
        let (retry, reason, outcome) = match why {
            Leave::Shutdown => {
                let retry = Duration::from_millis(rand::random::<u64>() % 2_000);
                (retry, "authority shutting down".to_owned(), "shutdown")
            }
            Leave::StoreUnreachable => {
                // The agent tries its next authority first; this one again after a while. Counted,
                // not logged per link: a whole fleet retries every second or so, and the tail
                // already logs the store's failures.
                self.metrics.agents_rejected_total.with_label_values(&["store_unreachable"]).inc();
                tracing::debug!(agent = %id, "shared store unread for --store-timeout + 1 s: agent sent to another replica");
                let retry = Duration::from_millis(500 + rand::random::<u64>() % 1_000);
                (
                    retry,
                    "store unreachable: this replica cannot vouch for the log".to_owned(),
                    "store_unreachable",
                )
            }
            Leave::Replaced => {
                // Two live agents with one id: newest wins, and the replaced one waits 5-10 s so
                // the pair alternates slowly instead of replacing each other in a loop.
                self.metrics.agents_rejected_total.with_label_values(&["duplicate_id"]).inc();
                tracing::error!(agent = %id, "a newer link with the same agent id replaced this one; two agents share the id");
                let retry = Duration::from_millis(
                    revmesh_protocol::frame::DUPLICATE_ID_MIN_RETRY_MS + rand::random::<u64>() % 5_000,
                );
                let reason = format!(
                    "{}: replaced by a newer link with the same agent id",
                    revmesh_protocol::frame::GOAWAY_DUPLICATE_ID
                );
                (retry, reason, "replaced")
            }
        };
        let f = session.go_away(retry, &reason);
        send_frame(ws, &f).await;
        let _ = ws.close(None).await;
        outcome.into()
    }

    async fn closed<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        ws: &mut WebSocketStream<S>,
        close: Close,
    ) -> String {
        match close {
            Close::Violation(ef) => {
                self.reject("violation");
                let msg = ef.message.clone();
                close_with(ws, ef).await;
                format!("protocol violation: {msg}")
            }
            Close::PeerError(ef) => format!("agent error: {}", ef.message),
            Close::Idle => {
                let _ = ws.close(None).await;
                "idle".into()
            }
        }
    }

    fn events(&self, session: &mut AuthoritySession, id: &str, link: u64) {
        while let Some(ev) = session.poll_event() {
            match ev {
                AuthorityEvent::Acked { applied_seq, latency } => {
                    if let Some(l) = latency {
                        self.metrics.ack_latency.observe(l.as_secs_f64());
                    }
                    self.hub.ack(id, link, applied_seq, &self.log);
                }
                AuthorityEvent::Applied { applied_seq } => self.hub.applied(id, link, applied_seq),
                AuthorityEvent::Resend { .. } => self.metrics.resends_total.inc(),
            }
        }
    }

    fn materialise(
        &self,
        tx: Transmit,
        t: Now,
        version: u8,
    ) -> Result<Vec<Bytes>, revmesh_protocol::codec::EncodeError> {
        match tx {
            Transmit::Frame(f) => Ok(vec![Bytes::from(encode(&f)?)]),
            Transmit::Entries { from, to } => {
                // A range that may hold an entry awaited at the applied level asks the agent
                // to report it applied (agents of link version 2 and later).
                let waited = version >= 2 && from <= self.log.waited_through();
                Ok(vec![self.log.batch_frame(from, to, waited, version)?])
            }
            Transmit::Snapshot { snapshot_id, upto } => {
                self.metrics.snapshots_sent_total.inc();
                Ok(self.log.snapshot_frames(snapshot_id, upto, t.unix_secs(), version)?.as_ref().clone())
            }
        }
    }
}

fn ws_error_reason(e: &tokio_tungstenite::tungstenite::Error) -> &'static str {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Capacity(_) => "too_large",
        Error::Protocol(_) => "websocket_protocol",
        Error::Utf8(_) => "malformed",
        _ => "io",
    }
}

async fn send_frame<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, f: &Frame) {
    if let Ok(bytes) = encode(f) {
        let _ =
            tokio::time::timeout(Duration::from_secs(2), ws.send(Message::Binary(Bytes::from(bytes)))).await;
    }
}

/// Sends an error frame, then a WebSocket close carrying the reason, with a time limit.
async fn close_with<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, ef: ErrorFrame) {
    let mut reason = ef.message.clone();
    // A close reason must fit a control frame (125 bytes with the code).
    revmesh_protocol::frame::truncate_utf8(&mut reason, 120);
    send_frame(ws, &Frame::Error(ef)).await;
    let close = CloseFrame { code: CloseCode::Policy, reason: reason.into() };
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(Some(close))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Table of agent token lines: what is read, what is refused by line number (never content).
    #[test]
    fn agent_token_lines_bind_ids_by_pattern() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.tokens");
        let h = hex::encode(crate::operators::token_sha256("t"));
        for (text, ok) in [
            (format!("web-1 {h}"), true),
            (format!("web-* {h}"), true),
            (format!("* {h}"), true),
            ("legacy-plaintext-token".to_owned(), true),
            (format!("w*b {h}"), false),
            (format!("web** {h}"), false),
            ("web-1 SECRET-not-a-hash".to_owned(), false),
            (format!("a b {h}"), false),
        ] {
            std::fs::write(&path, format!("# comment\n\n{text}\n")).expect("write");
            match AgentTokens::load(&path) {
                Ok(_) => assert!(ok, "{text}: accepted"),
                Err(e) => {
                    assert!(!ok, "{text}: {e}");
                    assert!(e.contains("line 3") && !e.contains("SECRET"), "{e}");
                }
            }
        }
        let c = AgentCredential { pattern: "web-*".into(), sha256: [0; 32] };
        assert!(c.admits("web-7") && !c.admits("db-1"));
        let exact = AgentCredential { pattern: "web-1".into(), sha256: [0; 32] };
        assert!(exact.admits("web-1") && !exact.admits("web-10"));
    }
}
