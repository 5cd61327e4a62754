//! The admin API's connections: TLS, a connection limit, and the timeouts that keep slow or
//! idle clients from holding the slots the security team needs to revoke.
//!
//! Every connection is watched by its own task. A request head must arrive within the header
//! timeout from its first byte; a connection with no request in progress is closed after the
//! idle timeout (which also bounds how long a response may take to be read); request bodies are
//! bounded by the body timeout in the handlers ([`read_body`]). At the connection limit the
//! oldest connection that has no request in progress (idle, or still sending its request head)
//! is shed to make room, so an operator's new connection gets through while an attacker holds
//! half-open ones. Everything shed is counted in
//! `revmesh_authority_admin_connections_shed_total{reason}`.

use crate::metrics::Metrics;
use axum::body::Body;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Limits of the admin API's connections.
#[derive(Debug, Clone, Copy)]
pub struct AdminLimits {
    /// Connections at once.
    pub max_connections: usize,
    /// From the first byte of a request head to its end (and for the TLS handshake).
    pub header_timeout: Duration,
    /// A connection without a request in progress is closed after this long.
    pub idle_timeout: Duration,
}

/// What a connection is doing, shared by its I/O, its requests and its watcher.
#[derive(Debug)]
struct Activity {
    clock: revmesh_runtime::Clock,
    epoch: Instant,
    /// Requests handed to the router and not yet answered.
    active: AtomicUsize,
    /// Milliseconds since `epoch` (plus one) when the connection last became idle.
    idle_since: AtomicU64,
    /// Milliseconds since `epoch` (plus one) of the first byte read while idle; 0: none yet.
    head_started: AtomicU64,
}

impl Activity {
    fn new(clock: revmesh_runtime::Clock) -> Self {
        Self {
            epoch: clock.mono(),
            clock,
            active: AtomicUsize::new(0),
            idle_since: AtomicU64::new(1),
            head_started: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.clock.mono().saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }

    fn read_some(&self) {
        if self.active.load(Ordering::Acquire) == 0 && self.head_started.load(Ordering::Acquire) == 0 {
            self.head_started.store(self.now(), Ordering::Release);
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.active.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    fn sheddable(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0
    }

    /// Why the watcher must close the connection now, if it must.
    fn overdue(&self, limits: &AdminLimits) -> Option<&'static str> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let now = self.now();
        let head = self.head_started.load(Ordering::Acquire);
        if head > 0 {
            (now.saturating_sub(head) > limits.header_timeout.as_millis() as u64).then_some("header_timeout")
        } else {
            let idle = self.idle_since.load(Ordering::Acquire);
            (now.saturating_sub(idle) > limits.idle_timeout.as_millis() as u64).then_some("idle")
        }
    }
}

/// A request in progress; the connection is idle again when the last one is dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.head_started.store(0, Ordering::Release);
        a.idle_since.store(a.now(), Ordering::Release);
        a.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection's stream, noting when bytes arrive.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.read_some();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Open connections, oldest first, for shedding at the limit.
type Registry = Mutex<BTreeMap<u64, (Arc<Activity>, CancellationToken)>>;

/// Serves the admin router until `shutdown`, over TLS when configured, within `limits`.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<crate::tls::ServerTls>,
    shutdown: CancellationToken,
    limits: AdminLimits,
    metrics: Metrics,
    clock: revmesh_runtime::Clock,
) {
    let conns = tokio_util::task::TaskTracker::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let registry: Arc<Registry> = Arc::new(Mutex::new(BTreeMap::new()));
    let shed = |reason: &str| metrics.admin_shed_total.with_label_values(&[reason]).inc();
    let mut next_id = 0u64;
    loop {
        let Some((stream, peer)) =
            revmesh_runtime::net::accept(|| listener.accept(), &shutdown, "admin").await
        else {
            break;
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Full: make room by closing the oldest connection with no request in progress.
                let victim = registry
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .find(|(a, stop)| a.sheddable() && !stop.is_cancelled())
                    .map(|(_, stop)| stop.clone());
                let Some(stop) = victim else {
                    shed("refused");
                    continue;
                };
                stop.cancel();
                shed("limit");
                match tokio::time::timeout(Duration::from_secs(1), slots.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let id = next_id;
        let activity = Arc::new(Activity::new(clock.clone()));
        let stop = shutdown.child_token();
        registry.lock().unwrap_or_else(|p| p.into_inner()).insert(id, (activity.clone(), stop.clone()));
        let (acceptor, app, registry, metrics) =
            (tls.as_ref().map(|t| t.acceptor()), app.clone(), registry.clone(), metrics.clone());
        conns.spawn(async move {
            let stream = Watched { inner: stream, activity: activity.clone() };
            match acceptor {
                None => connection(stream, peer, None, app, activity, stop, limits, &metrics).await,
                Some(a) => {
                    let handshake = tokio::time::timeout(limits.header_timeout, a.accept(stream));
                    tokio::select! {
                        r = handshake => match r {
                            Ok(Ok(s)) => {
                                let cert = s.get_ref().1.peer_certificates().and_then(|c| c.first())
                                    .map(|c| crate::api::PeerCert(Arc::new(c.clone().into_owned())));
                                connection(s, peer, cert, app, activity, stop, limits, &metrics).await
                            }
                            Ok(Err(_)) => {}
                            Err(_) => metrics.admin_shed_total.with_label_values(&["header_timeout"]).inc(),
                        },
                        _ = stop.cancelled() => {}
                    }
                }
            }
            registry.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            drop(permit);
        });
    }
    conns.close();
    let _ = tokio::time::timeout(crate::SHUTDOWN_GRACE, conns.wait()).await;
}

/// One connection: HTTP/1.1 (or HTTP/2) to the router, closed when overdue or told to stop.
#[allow(clippy::too_many_arguments)]
async fn connection<S>(
    stream: S,
    peer: std::net::SocketAddr,
    cert: Option<crate::api::PeerCert>,
    app: axum::Router,
    activity: Arc<Activity>,
    stop: CancellationToken,
    limits: AdminLimits,
    metrics: &Metrics,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let in_flight = requests.begin();
        let mut app = app.clone();
        let cert = cert.clone();
        async move {
            // Who is asking, for the admin API's refusals (logged, and throttled per source).
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            if let Some(c) = &cert {
                req.extensions_mut().insert(c.clone());
            }
            let response = tower_service::Service::call(&mut app, req).await;
            drop(in_flight);
            response
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(conn);
    // The watcher's resolution: a tenth of the shortest limit, at least 50 ms.
    let tick = (limits.header_timeout.min(limits.idle_timeout) / 10).max(Duration::from_millis(50));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = ticker.tick() => {
                if let Some(reason) = activity.overdue(&limits) {
                    metrics.admin_shed_total.with_label_values(&[reason]).inc();
                    return;
                }
            }
            _ = stop.cancelled() => {
                // Shed (nothing in progress): close now. Shutdown: let requests finish.
                if activity.sheddable() {
                    return;
                }
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(crate::SHUTDOWN_GRACE, conn.as_mut()).await;
                return;
            }
        }
    }
}

/// Why a request body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Longer than the limit (413).
    TooLarge,
    /// Not complete within the body timeout (408).
    TimedOut,
    /// The connection failed while reading (400).
    Broken,
}

/// Reads a whole request body of at most `limit` bytes within `timeout`.
pub async fn read_body(body: Body, limit: usize, timeout: Duration) -> Result<axum::body::Bytes, BodyError> {
    let read = async {
        let mut stream = body.into_data_stream();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| BodyError::Broken)?;
            if out.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge);
            }
            out.extend_from_slice(&chunk);
        }
        Ok(axum::body::Bytes::from(out))
    };
    tokio::time::timeout(timeout, read).await.unwrap_or(Err(BodyError::TimedOut))
}
