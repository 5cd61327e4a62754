//! The link to the authorities: connect (with failover and jittered backoff), drive the
//! protocol crate's [`AgentSession`], apply what it hands over, persist, then let it ack.
//!
//! The same code runs inside the `revmesh-agent` process and inside `revmesh-loadtest`'s
//! in-process agents (without a data dir).

mod durability;

use crate::persist::{JournalBatch, Persist};
use crate::state::AgentState;
use bytes::Bytes;
use durability::{Group, Held};
use futures::{FutureExt, SinkExt, StreamExt};
use revmesh_protocol::agent::{AgentConfig, AgentEvent, AgentSession, AgentViolation};
use revmesh_protocol::codec::{decode_view, encode, Decoded};
use revmesh_protocol::frame::{BatchView, Frame, Resume};
use revmesh_protocol::time::{backoff, Jitter};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Link settings.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// Authority URLs (`ws://host:port`, path `/v1/agents` added when missing), in failover order.
    pub authorities: Vec<String>,
    /// Bearer token.
    pub token: Option<String>,
    /// Agent id.
    pub id: String,
    /// Software version sent in the hello.
    pub version: String,
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// A link silent this long is dropped.
    pub idle_timeout: Duration,
    /// TLS for wss:// URLs.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Write and fsync the journal on the link's own task instead of handing every write to
    /// tokio's blocking pool. For a link that runs on a thread of its own (the agent binary's
    /// does): it saves the two thread handoffs of each write.
    pub persist_inline: bool,
    /// Longest wait of the journal write (and its fsync) for entries that were awaited only at
    /// the applied level (`WaitedBatch`), so that several share one fsync. Any other batch is
    /// written at once, with whatever waits.
    pub applied_fsync_delay: Duration,
    /// Highest link version offered in the hello (tests of mixed versions offer an older one).
    pub max_version: u8,
}

impl LinkSettings {
    /// The token and TLS material these settings start with.
    pub fn credentials(&self) -> Credentials {
        Credentials { token: self.token.clone(), tls: self.tls.clone() }
    }

    /// Defaults for an agent with these authorities and id.
    pub fn new(authorities: Vec<String>, id: String) -> Self {
        Self {
            authorities,
            token: None,
            id,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(20),
            tls: None,
            persist_inline: false,
            applied_fsync_delay: Duration::ZERO,
            max_version: revmesh_protocol::frame::MAX_VERSION,
        }
    }
}

/// Builds the TLS client configuration: trust `ca_file`, present `cert`+`key` when given.
pub fn client_tls(
    ca_file: Option<&std::path::Path>,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    use revmesh_runtime::pem;
    let Some(ca) = ca_file else {
        return if cert.is_some() || key.is_some() {
            Err("--tls-cert/--tls-key need --ca-file".into())
        } else {
            Ok(None)
        };
    };
    let builder =
        rustls::ClientConfig::builder().with_root_certificates(pem::roots(ca).map_err(|e| e.to_string())?);
    let cfg = match (cert, key) {
        (Some(c), Some(k)) => {
            let chain = pem::certs(c).map_err(|e| e.to_string())?;
            let key = pem::private_key(k).map_err(|e| e.to_string())?;
            builder.with_client_auth_cert(chain, key).map_err(|e| pem::PemError::refused(c, e).to_string())?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    Ok(Some(Arc::new(cfg)))
}

fn endpoint(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    let after_scheme = trimmed.split_once("://").map_or(trimmed, |(_, r)| r);
    if after_scheme.contains('/') {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/v1/agents")
    }
}

enum Ended {
    /// Reconnect after this long (go-away hint).
    RetryAfter(Duration),
    /// Link failed or closed; back off.
    Failed(String),
    /// Shutdown requested.
    Shutdown,
}

/// What the agent presents to authorities; replaced on SIGHUP without dropping the link
/// (the next connection uses the new material).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Bearer token.
    pub token: Option<String>,
    /// TLS for wss:// URLs (CA, client certificate).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Runs the link until `shutdown`; never returns early.
pub async fn run(
    settings: LinkSettings,
    state: Arc<AgentState>,
    persist: Option<Arc<Mutex<Persist>>>,
    shutdown: CancellationToken,
) {
    let creds = Arc::new(arc_swap::ArcSwap::from_pointee(settings.credentials()));
    run_with(settings, creds, state, persist, shutdown).await
}

/// [`run`], with credentials that may be replaced while it runs.
pub async fn run_with(
    settings: LinkSettings,
    creds: Arc<arc_swap::ArcSwap<Credentials>>,
    state: Arc<AgentState>,
    persist: Option<Arc<Mutex<Persist>>>,
    shutdown: CancellationToken,
) {
    let mut session = AgentSession::new(
        settings.id.clone(),
        settings.version.clone(),
        state.log_id(),
        state.applied(),
        AgentConfig {
            idle_timeout: settings.idle_timeout,
            max_version: settings.max_version,
            ..AgentConfig::default()
        },
    );
    let journal = persist.map(|p| Journal { p, inline: settings.persist_inline });
    let mut jitter = Jitter::new(rand::random());
    let mut unpersisted = Unpersisted::default();
    let mut held = Held { delay: settings.applied_fsync_delay, ..Held::default() };
    let mut attempt: u32 = 0;
    let mut index = 0usize;
    let mut links = 0u64;
    while !shutdown.is_cancelled() && !settings.authorities.is_empty() {
        let url = endpoint(&settings.authorities[index % settings.authorities.len()]);
        let started = state.clock().mono();
        let ended = match connect(&url, &creds.load()).await {
            Ok(ws) => {
                links += 1;
                if links > 1 {
                    state.metrics.reconnects_total.inc();
                }
                state.set_connected(true);
                tracing::info!(%url, "connected to authority");
                let mut w = Writes { journal: journal.as_ref(), pending: &mut unpersisted, held: &mut held };
                let e = drive(ws, &mut session, &state, &mut w, &shutdown).await;
                // Nothing applied waits for a link that is gone: written now, acknowledged on
                // the next link (the hello presents it).
                w.write_held(&mut session, &state).await;
                state.set_connected(false);
                session.disconnected();
                e
            }
            Err(e) => Ended::Failed(e.to_string()),
        };
        let delay = match ended {
            Ended::Shutdown => break,
            Ended::RetryAfter(d) => {
                tracing::info!(%url, retry_ms = d.as_millis() as u64, "authority asked us to come back later");
                index += 1;
                d
            }
            Ended::Failed(why) => {
                // A link that lived a while was healthy: start the backoff over.
                if state.clock().mono().saturating_duration_since(started) > Duration::from_secs(10) {
                    attempt = 0;
                }
                tracing::warn!(%url, reason = %why, "link to authority lost");
                attempt = attempt.saturating_add(1);
                index += 1;
                jitter.jitter(backoff(
                    settings.reconnect_min,
                    attempt.saturating_sub(1),
                    settings.reconnect_max,
                ))
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => break,
        }
    }
}

/// Why a link to an authority could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The authority URL is not a WebSocket URL.
    #[error("bad authority URL {url}: {source}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: tokio_tungstenite::tungstenite::Error,
    },
    /// The token cannot be sent as an HTTP header.
    #[error("agent token is not a valid header value")]
    TokenHeader,
    /// The TCP connection failed.
    #[error("connect: {0}")]
    Tcp(#[source] std::io::Error),
    /// A wss:// URL without TLS settings.
    #[error("wss:// needs --ca-file")]
    NoTls,
    /// The host cannot be checked against a certificate.
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
    /// The TLS handshake failed (untrusted or expired certificate, no client certificate…).
    #[error("TLS handshake with {host}: {source}")]
    Tls {
        /// The authority host.
        host: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The WebSocket upgrade failed; an HTTP refusal (401 for a bad token) is in the source.
    #[error("connect: {0}")]
    Upgrade(#[source] tokio_tungstenite::tungstenite::Error),
    /// No answer within the connect timeout.
    #[error("connect timed out")]
    Timeout,
}

impl LinkError {
    /// The HTTP status the authority refused the upgrade with, if it did.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            LinkError::Upgrade(tokio_tungstenite::tungstenite::Error::Http(r)) => Some(r.status().as_u16()),
            _ => None,
        }
    }
}

/// One connection attempt to `url` (WebSocket upgrade, TLS for wss://), closed at once: lets
/// operators and tests check reachability, certificates and tokens.
pub async fn probe(url: &str, settings: &LinkSettings) -> Result<(), LinkError> {
    let mut ws = connect(&endpoint(url), &settings.credentials()).await?;
    let _ = ws.close(None).await;
    Ok(())
}

/// A plain or TLS stream to the authority.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

type Ws = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

/// Bytes the link offers the socket per read. tungstenite zero-fills what it offers before
/// every read, so this is also the memset each read costs; most frames are far smaller, and a
/// large batch or snapshot chunk takes several reads.
const READ_CHUNK: usize = 16 << 10;

fn ws_config() -> WebSocketConfig {
    let mut cfg = WebSocketConfig::default();
    cfg.read_buffer_size = READ_CHUNK;
    cfg.max_message_size = Some(revmesh_protocol::codec::MAX_FRAME_BYTES + 1024);
    cfg.max_frame_size = Some(revmesh_protocol::codec::MAX_FRAME_BYTES + 1024);
    cfg.max_write_buffer_size = 1 << 20;
    cfg
}

async fn connect(url: &str, settings: &Credentials) -> Result<Ws, LinkError> {
    let mut req =
        url.into_client_request().map_err(|source| LinkError::Url { url: url.to_owned(), source })?;
    if let Some(t) = &settings.token {
        let value = format!("Bearer {t}").parse().map_err(|_| LinkError::TokenHeader)?;
        req.headers_mut().insert("authorization", value);
    }
    let cfg = ws_config();
    let host = req.uri().host().unwrap_or_default().trim_matches(['[', ']']).to_owned();
    let tls = req.uri().scheme_str() == Some("wss");
    let port = req.uri().port_u16().unwrap_or(if tls { 443 } else { 80 });
    let fut = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(LinkError::Tcp)?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if tls {
            let tls_cfg = settings.tls.clone().ok_or(LinkError::NoTls)?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|_| LinkError::ServerName(host.clone()))?;
            let stream = tokio_rustls::TlsConnector::from(tls_cfg)
                .connect(name, tcp)
                .await
                .map_err(|source| LinkError::Tls { host: host.clone(), source })?;
            Box::new(stream)
        } else {
            Box::new(tcp)
        };
        tokio_tungstenite::client_async_with_config(req, io, Some(cfg)).await.map_err(LinkError::Upgrade)
    };
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(LinkError::Timeout),
    }
}

async fn drive(
    mut ws: Ws,
    session: &mut AgentSession,
    state: &AgentState,
    w: &mut Writes<'_>,
    shutdown: &CancellationToken,
) -> Ended {
    let clock = state.clock().clone();
    session.connect(clock.now());
    let mut last_heard_write: Option<Instant> = None;
    // One timer and one cancellation future for the link's life, reset rather than re-created.
    let never = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let timer = tokio::time::sleep_until(never);
    tokio::pin!(timer);
    let held_timer = tokio::time::sleep_until(never);
    tokio::pin!(held_timer);
    let stopping = shutdown.cancelled();
    tokio::pin!(stopping);
    loop {
        if let Err(end) = send_queued(&mut ws, session, state).await {
            return end;
        }
        let deadline = session.poll_timeout().map_or(never, tokio::time::Instant::from_std);
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        let held_deadline = w.held.deadline().map_or(never, tokio::time::Instant::from_std);
        if held_timer.deadline() != held_deadline {
            held_timer.as_mut().reset(held_deadline);
        }
        tokio::select! {
            msg = ws.next() => {
                if let Err(end) = on_message(msg, &mut ws, session, state).await {
                    return end;
                }
                // Frames already received are handled before anything is written, so one
                // journal write (one fsync) and one ack cover all of them.
                for _ in 0..MAX_FRAMES_PER_WRITE {
                    let Some(msg) = ws.next().now_or_never() else { break };
                    if let Err(end) = on_message(msg, &mut ws, session, state).await {
                        // What earlier frames handed over comes first: written, and a go-away's
                        // retry hint wins over the close that followed it.
                        return apply_events(session, state, w, None).await.unwrap_or(end);
                    }
                }
                if let Some(h) = session.last_heard() {
                    state.heard(h);
                    let mono = clock.mono();
                    let due = last_heard_write.is_none_or(|t| mono.saturating_duration_since(t) > Duration::from_secs(1));
                    if let (Some(j), true) = (w.journal, due) {
                        last_heard_write = Some(mono);
                        // As of when it was credited (a heartbeat read late counts from its
                        // sending), in the wall clock a restart reads it with.
                        let now = clock.now();
                        let ago = now.mono.saturating_duration_since(h).as_millis() as u64;
                        if let Ok(p) = j.p.lock() {
                            p.heard(now.unix_ms.saturating_sub(ago));
                        }
                    }
                }
            }
            _ = &mut timer => session.handle_timeout(clock.now()),
            _ = sleep_until_due(w.pending.retry_at) => {
                retry_unpersisted(session, state, w.journal, w.pending).await;
            }
            _ = &mut held_timer, if w.held.since.is_some() => w.write_held(session, state).await,
            _ = &mut stopping => {
                let _ = ws.close(None).await;
                return Ended::Shutdown;
            }
        }
        if let Some(end) = apply_events(session, state, w, Some(&mut ws)).await {
            let _ = ws.close(None).await;
            return end;
        }
    }
}

/// Sends every frame the session has queued, with one flush.
async fn send_queued(ws: &mut Ws, session: &mut AgentSession, state: &AgentState) -> Result<(), Ended> {
    let t = state.clock().now();
    let mut wrote = false;
    while let Some(f) = session.poll_transmit(t) {
        let Ok(bytes) = encode(&f) else { return Err(Ended::Failed("encode failed".into())) };
        if ws.feed(Message::Binary(Bytes::from(bytes))).await.is_err() {
            return Err(Ended::Failed("write failed".into()));
        }
        wrote = true;
    }
    if wrote && ws.flush().await.is_err() {
        return Err(Ended::Failed("write failed".into()));
    }
    Ok(())
}

/// Frames handled before one journal write; bounds the work between two acks.
const MAX_FRAMES_PER_WRITE: usize = 64;

/// Hands one message from the authority to the session.
async fn on_message(
    msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ws: &mut Ws,
    session: &mut AgentSession,
    state: &AgentState,
) -> Result<(), Ended> {
    let t = state.clock().now();
    let frame = match msg {
        Some(Ok(Message::Binary(b))) => match decode_view(&b) {
            Ok(Decoded::Batch { batch, waited }) => {
                let handled = session.handle_batch(&batch, waited, t);
                return after_frame(handled, None, ws, session, state).await;
            }
            Ok(Decoded::Frame(f)) => f,
            Err(e) => {
                state.metrics.frames_rejected_total.with_label_values(&[e.reason()]).inc();
                let _ = ws.close(None).await;
                return Err(Ended::Failed(format!("bad frame from authority: {e}")));
            }
        },
        Some(Ok(Message::Close(c))) => return Err(Ended::Failed(format!("closed by authority: {c:?}"))),
        None => return Err(Ended::Failed("connection closed".into())),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Ok(()),
        Some(Ok(_)) => {
            state.metrics.frames_rejected_total.with_label_values(&["not_binary"]).inc();
            return Err(Ended::Failed("non-binary frame from authority".into()));
        }
        Some(Err(e)) => return Err(Ended::Failed(format!("link error: {e}"))),
    };
    // An incremental welcome says how far behind the agent is: size the set for what is coming.
    let catch_up = match &frame {
        Frame::Welcome(w) if w.resume == Resume::Incremental => Some(w.head_seq),
        _ => None,
    };
    let handled = session.handle_frame(frame, t);
    after_frame(handled, catch_up, ws, session, state).await
}

/// What follows the session's handling of a frame: a violation closes the link; otherwise the
/// agent's state learns what the frame taught the session.
async fn after_frame(
    handled: Result<(), AgentViolation>,
    catch_up: Option<u64>,
    ws: &mut Ws,
    session: &mut AgentSession,
    state: &AgentState,
) -> Result<(), Ended> {
    if let Err(v) = handled {
        state.metrics.frames_rejected_total.with_label_values(&["violation"]).inc();
        if let Ok(b) = encode(&Frame::Error(v.0.clone())) {
            let _ = ws.send(Message::Binary(Bytes::from(b))).await;
        }
        let _ = ws.close(None).await;
        return Err(Ended::Failed(v.to_string()));
    }
    if let Some(head) = catch_up {
        state.reserve_for_catch_up(head.saturating_sub(state.applied()));
    }
    // The head announced in a welcome (or far ahead in a heartbeat) must be applied before the
    // agent answers as fresh again.
    state.set_catch_up_to(session.catch_up_to());
    // An incremental welcome from a fresh agent ties it to the authority's log before any entry
    // arrives (an empty log is still a log to be in sync with).
    if let Some(l) = session.log_id() {
        if state.log_id().is_none() && session.applied_seq() == state.applied() {
            state.adopt_log(l);
        }
    }
    Ok(())
}

/// Entries applied in memory but not yet persisted (a full disk). Revocation beats durability:
/// they are applied at once and refuse their tokens, but nothing beyond what is persisted is
/// acknowledged (an ack promises durability). Writes are retried in order with backoff, across
/// links; once they succeed everything is acknowledged, without a restart. The queue is bounded
/// by the authority's window: without acks it sends nothing new.
#[derive(Debug, Default)]
struct Unpersisted {
    batches: VecDeque<JournalBatch>,
    /// The whole state must be written (a snapshot was installed); it covers every batch.
    snapshot: bool,
    attempt: u32,
    retry_at: Option<Instant>,
}

impl Unpersisted {
    fn is_empty(&self) -> bool {
        self.batches.is_empty() && !self.snapshot
    }

    /// Puts batches whose write failed back at the front, in order; none back (the write task
    /// failed and took them) leaves a snapshot to write, which covers everything applied.
    fn requeue(&mut self, batches: Vec<JournalBatch>) {
        if batches.is_empty() {
            self.snapshot = true;
        }
        for b in batches.into_iter().rev() {
            self.batches.push_front(b);
        }
    }

    fn failed(&mut self, state: &AgentState, error: &str) {
        state.metrics.persist_errors_total.inc();
        if state.persist_ok() {
            tracing::error!(%error, "cannot persist applied revocations; they stay applied, unacknowledged, and writes are retried");
        }
        state.set_persist_ok(false);
        self.attempt = self.attempt.saturating_add(1);
        let delay = backoff(Duration::from_millis(100), self.attempt - 1, Duration::from_secs(5));
        self.retry_at = Some(state.clock().mono() + delay);
    }

    fn recovered(&mut self, state: &AgentState) {
        if !state.persist_ok() {
            tracing::info!("persisting again; everything applied is acknowledged");
        }
        state.set_persist_ok(true);
        self.attempt = 0;
        self.retry_at = None;
    }
}

async fn sleep_until_due(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

/// The journal as the link uses it: written on the link's own task (`inline`) or on tokio's
/// blocking pool.
#[derive(Debug, Clone)]
struct Journal {
    p: Arc<Mutex<Persist>>,
    inline: bool,
}

impl Journal {
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Persist) -> T + Send + 'static,
    ) -> Result<T, String> {
        if self.inline {
            return Ok(f(&mut self.p.lock().unwrap_or_else(|e| e.into_inner())));
        }
        let p = self.p.clone();
        tokio::task::spawn_blocking(move || f(&mut p.lock().unwrap_or_else(|e| e.into_inner())))
            .await
            .map_err(|e| format!("persist task failed: {e}"))
    }

    async fn is_open(&self) -> bool {
        self.with(|p| p.is_open()).await.unwrap_or(false)
    }
}

/// Appends batches to the journal with one fsync, writing a snapshot when the journal is due
/// for compaction. On failure the batches come back for the retry queue (none when the write
/// task itself failed: then only a snapshot can cover them).
async fn append(
    state: &AgentState,
    j: &Journal,
    batches: Vec<JournalBatch>,
) -> Result<(), (String, Vec<JournalBatch>)> {
    let compact = match j.with(move |p| (p.append_all(&batches), batches)).await {
        Ok((Ok(compact), _)) => compact,
        Ok((Err(e), batches)) => return Err((e.to_string(), batches)),
        Err(e) => return Err((e, Vec::new())),
    };
    if compact {
        if let Err(e) = write_snapshot(state, Some(j)).await {
            tracing::warn!(error = %e, "snapshot failed; journal keeps growing");
        }
    }
    Ok(())
}

/// Tries the queued writes again, in order, as one group.
async fn retry_unpersisted(
    session: &mut AgentSession,
    state: &AgentState,
    journal: Option<&Journal>,
    pending: &mut Unpersisted,
) {
    let Some(j) = journal else { return };
    // Files closed after an I/O error open again only through a snapshot, which covers
    // every queued batch.
    if !j.is_open().await {
        pending.snapshot = true;
    }
    if pending.snapshot {
        match write_snapshot(state, journal).await {
            Ok(seq) => {
                pending.snapshot = false;
                pending.batches.clear();
                session.mark_durable(seq, state.clock().now());
            }
            Err(e) => return pending.failed(state, &e),
        }
    }
    let mut group: Vec<JournalBatch> = pending.batches.drain(..).collect();
    write_group(session, state, j, pending, &mut group).await;
    // A failed write put its batches back (or left a snapshot to write).
    if pending.is_empty() {
        pending.recovered(state);
    }
}

/// Writes the batches applied since the last write (one fsync), then marks them durable; what
/// cannot be written stays applied and waits in `pending`.
async fn write_group(
    session: &mut AgentSession,
    state: &AgentState,
    j: &Journal,
    pending: &mut Unpersisted,
    group: &mut Vec<JournalBatch>,
) {
    let Some(to_seq) = group.last().map(|b| b.to_seq) else { return };
    match append(state, j, std::mem::take(group)).await {
        Ok(()) => session.mark_durable(to_seq, state.clock().now()),
        Err((e, back)) => {
            pending.requeue(back);
            pending.failed(state, &e);
        }
    }
}

/// Where applied batches go on their way to disk: the journal (none for an agent without a
/// data dir), the retry queue after a failed write, and the held group.
struct Writes<'a> {
    journal: Option<&'a Journal>,
    pending: &'a mut Unpersisted,
    held: &'a mut Held,
}

impl Writes<'_> {
    /// Writes the held group now.
    async fn write_held(&mut self, session: &mut AgentSession, state: &AgentState) {
        self.held.since = None;
        let mut group = std::mem::take(&mut self.held.batches);
        if let Some(j) = self.journal {
            write_group(session, state, j, self.pending, &mut group).await;
        }
    }
}

/// Applies what the session handed over, persists it, and only then marks it durable
/// (PROTOCOL.md §9.3). Batches are applied one by one as they come and written together.
///
/// Waited batches are reported `Applied` on `ws` before the write. When every batch of the
/// group was waited on, the write is held (see [`Held`]); any other batch, a snapshot, the
/// end of the link or a missing `ws` writes the whole group at once.
async fn apply_events(
    session: &mut AgentSession,
    state: &AgentState,
    w: &mut Writes<'_>,
    ws: Option<&mut Ws>,
) -> Option<Ended> {
    let mut group = std::mem::take(&mut w.held.batches);
    let mut durable_awaited = false;
    let mut reported = false;
    let mut end = None;
    while let Some(ev) = session.poll_event() {
        match ev {
            AgentEvent::Apply { log_id, entries, to_seq, waited } => {
                let from_seq = (state.applied() + 1).min(to_seq);
                let entries = match entries.view() {
                    Ok(v) => v,
                    Err(e) => {
                        // Texts the decoder accepted read back the same, so this does not
                        // happen; if it did, the entries are taken again on the next link.
                        session.rewind(state.applied());
                        end =
                            Some(Ended::Failed(format!("cannot read the entries of an accepted batch: {e}")));
                        break;
                    }
                };
                state.apply(log_id, &entries, to_seq);
                if w.journal.is_none() {
                    session.mark_durable(to_seq, state.clock().now());
                    continue;
                }
                if waited {
                    session.mark_applied(to_seq);
                    reported = true;
                }
                let batch = match JournalBatch::encode(&BatchView { log_id, from_seq, to_seq, entries }) {
                    Ok(b) => b,
                    Err(e) => {
                        // A record larger than a frame (it cannot be: it holds a frame's
                        // entries): a snapshot covers it instead.
                        w.pending.snapshot = true;
                        w.pending.failed(state, &e.to_string());
                        continue;
                    }
                };
                if !w.pending.is_empty() {
                    // Behind earlier writes that failed: keep the journal in order.
                    if !w.pending.snapshot {
                        w.pending.batches.push_back(batch);
                    }
                    continue;
                }
                durable_awaited |= !waited;
                group.push(batch);
            }
            AgentEvent::Limits(l) => state.learn_max_token_ttl(l.max_token_ttl_secs),
            AgentEvent::Adopt { log_id, snapshot_seq, mut entries, withdrawals_applied_upto } => {
                if let Some(j) = w.journal {
                    write_group(session, state, j, w.pending, &mut group).await;
                }
                let before = state.log_id();
                let carried = state.adopt(log_id, &mut entries, snapshot_seq, withdrawals_applied_upto);
                if before.is_some_and(|b| b != log_id) && carried > 0 {
                    tracing::warn!(
                        previous_log = %before.map(|b| b.to_string()).unwrap_or_default(),
                        log = %log_id,
                        carried,
                        "the authority serves another log (a lost or restored store?): \
                         the revocations held from before stay in force until they expire or are withdrawn"
                    );
                }
                tracing::info!(seq = snapshot_seq, entries = entries.len(), carried, "applied snapshot");
                if w.journal.is_none() {
                    session.mark_durable(snapshot_seq, state.clock().now());
                    continue;
                }
                // The new state replaces whatever was waiting to be written.
                w.pending.batches.clear();
                match write_snapshot(state, w.journal).await {
                    Ok(seq) => {
                        w.pending.snapshot = false;
                        w.pending.recovered(state);
                        session.mark_durable(seq, state.clock().now());
                    }
                    Err(e) => {
                        w.pending.snapshot = true;
                        w.pending.failed(state, &e);
                    }
                }
            }
            AgentEvent::Disconnect { retry_after, duplicate_id, reason } => {
                if duplicate_id {
                    tracing::error!(
                        retry_ms = retry_after.map_or(0, |d| d.as_millis() as u64),
                        "another live agent uses the id `{}`: a newer link replaced ours; give each agent its own --id",
                        session.agent_id()
                    );
                }
                end = Some(match retry_after {
                    Some(d) => Ended::RetryAfter(d),
                    None => Ended::Failed(reason),
                });
                break;
            }
        }
    }
    let Some(j) = w.journal else { return end };
    // The report goes out ahead of the fsync: that is what the applied level is for. A failed
    // send shows as a failed link on the next read.
    let linked = match ws {
        Some(ws) if end.is_none() => {
            if reported {
                let _ = send_queued(ws, session, state).await;
            }
            true
        }
        _ => false,
    };
    let held_entries: usize = group.iter().map(|b| b.entries).sum();
    let now = state.clock().mono();
    let group_is = Group { linked, durable_awaited, entries: held_entries, batches: group.len() };
    if w.held.holds(group_is, now) {
        w.held.since.get_or_insert(now);
        w.held.batches = group;
        return None;
    }
    w.held.since = None;
    write_group(session, state, j, w.pending, &mut group).await;
    end
}

/// Writes the whole state; returns the seq it covers.
async fn write_snapshot(state: &AgentState, journal: Option<&Journal>) -> Result<u64, String> {
    let (snap, table) = state.image();
    let seq = snap.applied_seq;
    let Some(j) = journal else { return Ok(seq) };
    j.with(move |p| p.snapshot(&snap, &table)).await?.map_err(|e| e.to_string())?;
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::task::{Context, Poll};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::WebSocketStream;

    /// A stream that records the largest read buffer offered to it once `watch` is set.
    struct Recording {
        inner: tokio::io::DuplexStream,
        watch: Arc<AtomicBool>,
        largest: Arc<AtomicUsize>,
    }

    impl AsyncRead for Recording {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if self.watch.load(Ordering::Relaxed) {
                self.largest.fetch_max(buf.remaining(), Ordering::Relaxed);
            }
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Recording {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write(cx, b)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    // Every read is preceded by a memset of what it offers, so a link whose offer grew to the
    // largest frame it ever received (a 1 MiB catch-up batch, say) paid that memset on every
    // later read: three per revocation.
    #[tokio::test]
    async fn after_a_large_frame_each_read_still_offers_only_the_read_chunk() {
        let (a, b) = tokio::io::duplex(64 << 10);
        let (watch, largest) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let io = Recording { inner: a, watch: watch.clone(), largest: largest.clone() };
        let mut agent = WebSocketStream::from_raw_socket(io, Role::Client, Some(ws_config())).await;
        let mut authority = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
        let big = vec![7u8; revmesh_protocol::codec::MAX_FRAME_BYTES];
        let send = async {
            assert!(authority.send(Message::Binary(big.into())).await.is_ok(), "send");
            authority
        };
        let (mut authority, got) = tokio::join!(send, agent.next());
        let got = got.and_then(Result::ok).map(Message::into_data).map(|b| b.len());
        assert_eq!(got, Some(revmesh_protocol::codec::MAX_FRAME_BYTES));
        watch.store(true, Ordering::Relaxed);
        for i in 0..10u8 {
            assert!(authority.send(Message::Binary(vec![i; 40].into())).await.is_ok(), "send");
            let got = agent.next().await.and_then(Result::ok).map(Message::into_data);
            assert_eq!(got.as_deref(), Some(&[i; 40][..]));
        }
        let offered = largest.load(Ordering::Relaxed);
        assert!(offered > 0 && offered <= READ_CHUNK, "a read offered {offered} bytes (chunk {READ_CHUNK})");
    }
}
