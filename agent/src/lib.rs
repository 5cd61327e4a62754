//! revmesh-agent: the sidecar that answers "is this token still good?" over a Unix socket from
//! local memory, kept current by a link to the authorities and persisted for warm restarts.

pub mod config;
pub mod decide;
pub mod front;
pub mod jwt;
pub(crate) mod keyring;
pub mod link;
pub mod metrics;
pub mod persist;
pub(crate) mod server;
pub mod state;

use anyhow::Context;
use config::{Config, OnStale};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Addresses bound by a running agent.
#[derive(Debug, Clone)]
pub struct Bound {
    /// Metrics endpoint.
    pub metrics: std::net::SocketAddr,
    /// HTTP check endpoint over TCP (`--http-listen`).
    pub http: Option<std::net::SocketAddr>,
    /// ext_authz gRPC over TCP (`--grpc-listen`).
    pub grpc: Option<std::net::SocketAddr>,
}

/// The file keys plus every `--jwks-url` set, fetched once now (a failure is logged; the agent
/// answers `unknown_key` until a fetch works) and kept fresh in the background.
async fn key_ring(
    cfg: &config::Config,
    files: Arc<jwt::Keys>,
    metrics: &metrics::Metrics,
    clock: &revmesh_runtime::Clock,
    tracker: &tokio_util::task::TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<keyring::KeyRing>> {
    use revmesh_jwt::remote::{Location, RemoteKeys};
    let needs_tls = cfg.jwks_urls.iter().any(|l| matches!(l, Location::Url { tls: true, .. }));
    let tls = if needs_tls {
        Some(revmesh_jwt::remote::client_tls(cfg.jwks_ca_file.as_deref()).map_err(|e| {
            config::ConfigErrors(vec![config::ConfigError { field: "jwks-ca-file", message: e }])
        })?)
    } else {
        None
    };
    let mut remotes = Vec::new();
    for l in &cfg.jwks_urls {
        let m = metrics.clone();
        let remote = RemoteKeys::new(l.clone(), tls.clone(), cfg.jwks_min_refresh, clock.clone())
            .with_observer(move |ok| {
                m.jwks_fetches_total.inc();
                if !ok {
                    m.jwks_fetch_errors_total.inc();
                }
            });
        let remote = Arc::new(remote);
        match remote.refresh().await {
            Ok(n) => tracing::info!(jwks = ?l, keys = n, "JWKS loaded"),
            Err(e) => {
                tracing::error!(jwks = ?l, error = %e, "JWKS not loaded; tokens it signs are INVALID until a fetch works")
            }
        }
        remotes.push(remote);
    }
    let ring = keyring::KeyRing::with_metrics(files, remotes, Some(metrics.clone()));
    for r in ring.remotes() {
        let (r, on_change, stop) = (r.clone(), ring.clone(), shutdown.clone());
        let every = cfg.jwks_refresh;
        tracker
            .spawn(async move { r.run(every, stop.cancelled_owned(), move || on_change.recompose()).await });
    }
    Ok(ring)
}

/// Binds an optional TCP listener; a taken address is a configuration error.
async fn bind_tcp(
    field: &'static str,
    addr: Option<std::net::SocketAddr>,
) -> Result<Option<tokio::net::TcpListener>, config::ConfigErrors> {
    let Some(addr) = addr else { return Ok(None) };
    tokio::net::TcpListener::bind(addr).await.map(Some).map_err(|e| {
        config::ConfigErrors(vec![config::ConfigError { field, message: format!("cannot bind {addr}: {e}") }])
    })
}

/// Runs an agent until `shutdown`.
pub async fn run(
    cfg: Config,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(Bound),
) -> anyhow::Result<()> {
    // SIGHUP (operators, logrotate, config management) reloads; it must never terminate the
    // agent, so it is caught before anything is served.
    let hangups =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("catching SIGHUP")?;
    // Bind the TCP listener first: a port that is taken is a configuration error, reported
    // before the data dir is touched.
    let metrics_listener = tokio::net::TcpListener::bind(cfg.metrics_listen).await.map_err(|e| {
        config::ConfigErrors(vec![config::ConfigError {
            field: "metrics-listen",
            message: format!("cannot bind {}: {e}", cfg.metrics_listen),
        }])
    })?;
    let http_tcp = bind_tcp("http-listen", cfg.http_listen).await?;
    let grpc_tcp = bind_tcp("grpc-listen", cfg.grpc_listen).await?;
    let keys = cfg.verification.clone();
    if cfg.authorities.is_empty() {
        tracing::warn!("no --authority: this agent will never learn of a revocation and answers as stale");
    }
    if keys.is_empty() && cfg.jwks_urls.is_empty() {
        tracing::warn!("no verification keys (--hs256-secret-file, --public-key-file, --jwks-file): every CHECK answers INVALID reason=unknown_key; only STATUS works");
    }
    let clock = revmesh_runtime::Clock::system();
    let loading = clock.mono();
    let (persist, recovered) = persist::Persist::open(&cfg.data_dir, &clock)
        .with_context(|| format!("opening the data dir {}", cfg.data_dir.display()))?;
    for w in &recovered.warnings {
        tracing::warn!("{w}");
    }
    let metrics = metrics::Metrics::new().context("registering metrics")?;
    let (applied, log_id) = (recovered.applied_seq, recovered.log_id);
    let state = Arc::new(
        state::AgentState::new(
            recovered.set,
            log_id,
            applied,
            recovered.heard_ms,
            cfg.max_staleness,
            cfg.on_stale == OnStale::Open,
            metrics,
        )
        .with_clock(clock)
        .with_max_token_ttl(cfg.max_token_ttl),
    );
    tracing::info!(applied, log_id = ?log_id, ms = state.clock().mono().saturating_duration_since(loading).as_millis() as u64, "state loaded");
    let line_listener = server::bind_socket(&cfg.socket, cfg.socket_access)?;
    let http_listener = match &cfg.http_socket {
        Some(p) => Some(server::bind_socket(p, cfg.socket_access)?),
        None => None,
    };
    let grpc_listener = match &cfg.grpc_socket {
        Some(p) => Some(server::bind_socket(p, cfg.socket_access)?),
        None => None,
    };
    let local = |l: &Option<tokio::net::TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
    let bound =
        Bound { metrics: metrics_listener.local_addr()?, http: local(&http_tcp), grpc: local(&grpc_tcp) };

    let tracker = tokio_util::task::TaskTracker::new();
    let ring = key_ring(&cfg, keys, &state.metrics, state.clock(), &tracker, &shutdown).await?;
    let server = Arc::new(server::Server {
        checker: decide::Checker::with_ring(state.clone(), ring.clone(), cfg.rules.clone()),
        token_cookie: cfg.token_cookie.clone(),
        allow_uid: cfg.allow_uid.clone(),
        clients: Arc::new(tokio::sync::Semaphore::new(cfg.max_clients)),
        idle: cfg.client_idle_timeout,
        shutdown: shutdown.clone(),
        tracker: tokio_util::task::TaskTracker::new(),
    });
    tracker.spawn(front::serve_unix(server.clone(), line_listener, front::Front::Line));
    if let Some(l) = http_listener {
        tracker.spawn(front::serve_unix(server.clone(), l, front::Front::Http));
    }
    if let Some(l) = http_tcp {
        tracker.spawn(front::serve_tcp(server.clone(), l));
    }
    if let Some(l) = grpc_listener {
        tracker.spawn(front::grpc::serve_unix(server.clone(), l));
    }
    if let Some(l) = grpc_tcp {
        tracker.spawn(front::grpc::serve_tcp(server.clone(), l));
    }
    tracker.spawn(front::http::serve_metrics(metrics_listener, state.clone(), shutdown.clone()));
    let mut settings = link::LinkSettings::new(cfg.authorities.clone(), cfg.id.clone());
    settings.persist_inline = true;
    settings.applied_fsync_delay = cfg.applied_fsync_delay;
    let creds = Arc::new(arc_swap::ArcSwap::from_pointee(link::Credentials {
        token: cfg.token.clone(),
        tls: cfg.tls.clone(),
    }));
    let persist = Some(Arc::new(Mutex::new(persist)));
    // The link runs on a thread of its own and writes its journal there: a batch is read,
    // applied, fsynced and acknowledged without handing it between threads, and checks on the
    // other threads never wait behind an fsync.
    let link = link::run_with(settings, creds.clone(), state.clone(), persist, shutdown.clone());
    let link_thread = LinkThread::spawn(link, shutdown.clone())?;
    let link_died = Arc::new(Mutex::new(None));
    let died = link_died.clone();
    tracker.spawn(async move {
        if let Err(why) = link_thread.watch().await {
            *died.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        }
    });
    tracker.spawn(reload_on_sighup(cfg.clone(), server.clone(), creds, hangups, shutdown.clone()));
    let gc_state = state.clone();
    let gc_shutdown = shutdown.clone();
    tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(30)) => { gc_state.gc(); }
                _ = gc_shutdown.cancelled() => return,
            }
        }
    });
    tracker.close();
    tracing::info!(socket = %cfg.socket.display(), metrics = %bound.metrics, id = %cfg.id, "agent ready");
    on_ready(bound);
    shutdown.cancelled().await;
    server.tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        tracker.wait().await;
        server.tracker.wait().await;
    })
    .await;
    for p in std::iter::once(&cfg.socket).chain(&cfg.http_socket).chain(&cfg.grpc_socket) {
        let _ = std::fs::remove_file(p);
    }
    let died = link_died.lock().unwrap_or_else(|p| p.into_inner()).take();
    match died {
        // A supervisor restarts the agent; warm restart from the data dir makes that cheap.
        Some(why) => Err(anyhow::anyhow!("{why}; exiting so that the agent is restarted")),
        None => Ok(()),
    }
}

/// The thread the link runs on (a current-thread runtime of its own). The link is what keeps
/// the set current: an agent whose link died must not go on answering as if it were connected,
/// so the link ending before shutdown — a panic included — stops the whole agent with an error.
#[derive(Debug)]
pub(crate) struct LinkThread {
    handle: std::thread::JoinHandle<()>,
    shutdown: CancellationToken,
}

impl LinkThread {
    /// Starts `link` on a thread named `revmesh-link`.
    pub fn spawn(
        link: impl std::future::Future<Output = ()> + Send + 'static,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let handle = std::thread::Builder::new().name("revmesh-link".into()).spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build() {
                Ok(rt) => rt.block_on(link),
                // Returning without a shutdown is what `watch` reports as a failure.
                Err(e) => tracing::error!(error = %e, "cannot start the link's runtime"),
            }
        })?;
        Ok(Self { handle, shutdown })
    }

    /// Waits for the thread to end. `Err` (and shutdown cancelled) when it ended other than
    /// by shutdown: a panic, or a link that returned on its own.
    pub async fn watch(self) -> Result<(), String> {
        let Self { handle, shutdown } = self;
        let joined = tokio::task::spawn_blocking(move || handle.join()).await;
        let why = match joined {
            Ok(Ok(())) if shutdown.is_cancelled() => return Ok(()),
            Ok(Ok(())) => "the link to the authority ended unexpectedly".to_owned(),
            Ok(Err(panic)) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_owned());
                format!("the link to the authority panicked: {msg}")
            }
            Err(e) => format!("the link thread could not be joined: {e}"),
        };
        tracing::error!(error = %why, "link failed; stopping the agent");
        shutdown.cancel();
        Err(why)
    }
}

/// On SIGHUP: re-reads the verification keys, the authority token and the TLS material. A file
/// that fails to load leaves what is in force (logged, counted); links and sockets stay up, and
/// the next connection to an authority uses the new credentials.
async fn reload_on_sighup(
    cfg: Config,
    server: Arc<server::Server>,
    creds: Arc<arc_swap::ArcSwap<link::Credentials>>,
    mut hangups: tokio::signal::unix::Signal,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            s = hangups.recv() => if s.is_none() { return },
            _ = shutdown.cancelled() => return,
        }
        let metrics = &server.checker.state.metrics;
        match cfg.keys.load() {
            Ok(keys) => {
                server.checker.keys.set_files(Arc::new(keys));
                metrics.reloads_total.with_label_values(&["keys", "ok"]).inc();
                tracing::info!("verification keys reloaded");
            }
            Err(e) => {
                metrics.reloads_total.with_label_values(&["keys", "error"]).inc();
                tracing::error!(field = e.field, error = %e.message, "key reload failed; the previous keys stay in force");
            }
        }
        match cfg.credential_files.load() {
            Ok(c) => {
                creds.store(Arc::new(c));
                metrics.reloads_total.with_label_values(&["credentials", "ok"]).inc();
                tracing::info!("authority token and TLS material reloaded");
            }
            Err(e) => {
                metrics.reloads_total.with_label_values(&["credentials", "error"]).inc();
                tracing::error!(error = %e, "credential reload failed; the previous ones stay in force");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Before, a panic on the link thread was swallowed: the agent went on answering from a set
    // nothing kept current, `connected` still true, until staleness caught up with it.
    #[tokio::test]
    async fn a_panicking_link_stops_the_agent_with_an_error() {
        let shutdown = CancellationToken::new();
        let link = async { panic!("boom in the link") };
        let thread = LinkThread::spawn(link, shutdown.clone()).expect("thread");
        let why = thread.watch().await.expect_err("a panic is a failure");
        assert!(why.contains("panicked: boom in the link"), "{why}");
        assert!(shutdown.is_cancelled(), "the agent is told to stop");
    }

    #[tokio::test]
    async fn a_link_that_ends_at_shutdown_is_no_failure() {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let thread =
            LinkThread::spawn(async move { stop.cancelled().await }, shutdown.clone()).expect("thread");
        shutdown.cancel();
        assert_eq!(thread.watch().await, Ok(()));
    }

    #[tokio::test]
    async fn a_link_that_returns_on_its_own_stops_the_agent() {
        let shutdown = CancellationToken::new();
        let thread = LinkThread::spawn(async {}, shutdown.clone()).expect("thread");
        assert!(thread.watch().await.is_err());
        assert!(shutdown.is_cancelled());
    }
}
