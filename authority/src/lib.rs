//! revmesh-authority: the durable revocation log, the agent links that push it, and the
//! admin API that feeds it. `main.rs` parses the command line; everything else lives here
//! so that tests can run an authority in-process on port 0.

pub(crate) mod api;
pub(crate) mod auth;
pub mod cli;
pub mod config;
pub(crate) mod doors;
pub(crate) mod links;
pub(crate) mod log;
pub(crate) mod metrics;
pub mod operators;
mod router;
pub mod store;
pub(crate) mod tls;

/// The parsers the fuzz targets (`authority/fuzz`) drive: request bodies and feed cursors.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::api::feed::start_cursor;
    pub use crate::api::{parse_revocation, parse_revocations, Bulk};
    pub use crate::doors::ssf::set::{judge as judge_set, Rules as SetRules};
}

use anyhow::Context;
use config::Config;
use revmesh_protocol::authority::AuthorityConfig;
use revmesh_protocol::LogId;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for links and requests before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "authority".into())
}

/// Publishes this replica's agent cursors to the shared store: changes every 50 ms, every
/// connected agent every 3 s (rows older than 10 s count as disconnected).
async fn share_cursors(
    hub: Arc<links::hub::Hub>,
    cursors: Arc<dyn store::CursorStore>,
    shutdown: CancellationToken,
) {
    let mut tick = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = shutdown.cancelled() => return,
        }
        tick += 1;
        let rows = hub.take_rows(tick.is_multiple_of(60));
        if rows.is_empty() {
            continue;
        }
        if let Err(e) = cursors.clone().publish_agents(rows).await {
            tracing::warn!(error = %e, "publishing agent cursors failed");
        }
    }
}

/// SIGHUP re-reads certificates, agent tokens and operators; established links and admin
/// connections are not touched.
async fn reload_on_sighup(
    (operators, metrics): (Arc<operators::Operators>, metrics::Metrics),
    agent_tls: Option<tls::ServerTls>,
    admin_tls: Option<tls::ServerTls>,
    tokens: Arc<links::AgentTokens>,
    token_file: Option<PathBuf>,
    verification: Verification,
    shutdown: CancellationToken,
) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
    loop {
        tokio::select! {
            _ = hup.recv() => {}
            _ = shutdown.cancelled() => return,
        }
        for t in agent_tls.iter().chain(admin_tls.iter()) {
            match t.reload() {
                Ok(()) => tracing::info!("TLS certificates reloaded"),
                Err(e) => tracing::error!(error = %e, "TLS reload failed; keeping the previous certificates"),
            }
        }
        match operators.reload() {
            Ok(n) => {
                metrics.reloads_total.with_label_values(&["operators", "ok"]).inc();
                tracing::info!(operators = n, "operators reloaded")
            }
            Err(e) => {
                metrics.reloads_total.with_label_values(&["operators", "error"]).inc();
                tracing::error!(error = %e, "operators reload failed; keeping the previous operators")
            }
        }
        if let Some(p) = &token_file {
            match tokens.reload(p) {
                Ok(()) => tracing::info!("agent tokens reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "agent token reload failed; keeping the previous tokens")
                }
            }
        }
        if let Some(k) = &verification.0 {
            match k.reload().await {
                Ok(()) => tracing::info!("token verification keys reloaded"),
                Err(e) => tracing::error!(error = %e, "token key reload failed; keeping the previous keys"),
            }
        }
        if let Some(o) = &verification.1 {
            match o.reload_files().await {
                Ok(()) => tracing::info!("OIDC provider key files reloaded"),
                Err(e) => tracing::error!(error = %e, "OIDC key reload failed; keeping the previous keys"),
            }
        }
        if let Some(o) = &verification.2 {
            match o.reload_files().await {
                Ok(()) => tracing::info!("SSF push tokens and transmitter key files reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "SSF reload failed; keeping the previous tokens and keys")
                }
            }
        }
    }
}

/// What SIGHUP re-reads besides certificates and tokens: the keys of RFC 7009, the OIDC
/// providers', the Shared Signals transmitters' and push tokens.
type Verification =
    (Option<Arc<doors::oauth::TokenKeys>>, Option<Arc<doors::oidc::Oidc>>, Option<Arc<doors::ssf::Ssf>>);

/// Addresses an authority actually bound (ports may have been 0).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// Agent WebSocket endpoint.
    pub agent: SocketAddr,
    /// Admin API.
    pub admin: SocketAddr,
}

/// Binds both listeners, reporting every address that cannot be bound as a configuration error.
async fn bind_listeners(cfg: &Config) -> anyhow::Result<(TcpListener, TcpListener)> {
    let (agent, admin) =
        (TcpListener::bind(cfg.agent_listen).await, TcpListener::bind(cfg.admin_listen).await);
    match (agent, admin) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => {
            let mut errs = Vec::new();
            for (field, addr, r) in
                [("agent-listen", cfg.agent_listen, a.err()), ("admin-listen", cfg.admin_listen, b.err())]
            {
                if let Some(e) = r {
                    errs.push(config::ConfigError { field, message: format!("cannot bind {addr}: {e}") });
                }
            }
            Err(config::ConfigErrors(errs).into())
        }
    }
}

/// Runs an authority until `shutdown` is cancelled; `on_ready` is told the bound addresses.
pub async fn serve(
    cfg: Config,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(Bound, LogId),
) -> anyhow::Result<()> {
    // Bind first: a port that is taken is a configuration error, reported before anything
    // (store, admin token) is created.
    let (agent_listener, admin_listener) = bind_listeners(&cfg).await?;
    let bound = Bound { agent: agent_listener.local_addr()?, admin: admin_listener.local_addr()? };
    if cfg.agent_token_file.is_none() {
        tracing::warn!(
            agent_listen = %bound.agent,
            "agent authentication is OFF: anything that reaches the agent port can join as any agent id and read every revocation; set --agent-token-file"
        );
    }
    let metrics = metrics::Metrics::new().context("registering metrics")?;
    let clock = revmesh_runtime::Clock::system();
    let backend = match &cfg.store {
        config::StoreKind::Embedded => store::Backend::embedded(Arc::new(
            store::RedbStore::open(&cfg.data_dir, LogId(rand::random()))
                .with_context(|| format!("opening the store in {}", cfg.data_dir.display()))?,
        )),
        config::StoreKind::Postgres(url) => {
            std::fs::create_dir_all(&cfg.data_dir)
                .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
            let replica = format!("{}-{}", hostname(), std::process::id());
            store::Backend::shared(Arc::new(
                store::PgStore::new(url, replica, LogId(rand::random()), cfg.store_timeout)
                    .context("configuring the PostgreSQL store")?,
            ))
        }
    };
    let (log, writer) = {
        let (store, metrics, clock) = (backend.log.clone(), metrics.clone(), clock.clone());
        let timeout = cfg.store_timeout;
        log::Log::open_loaded(store, timeout, metrics, clock).await.context("loading the log")?
    };
    let writer = log::Log::start(&log, writer);
    // The admin token is the operator `admin`; with an operators file and no admin token file
    // there is none (nothing all-powerful is generated behind the file's back).
    let admin_token = if cfg.operators.is_none() || cfg.admin_token_file.is_some() {
        Some(auth::admin_token(cfg.admin_token_file.as_deref(), &cfg.data_dir)?)
    } else {
        None
    };
    let mut warnings = Vec::new();
    let operators = Arc::new(
        operators::Operators::load(
            cfg.operators.as_deref(),
            admin_token.as_ref().map(|t| t.0.as_str()),
            &mut warnings,
        )
        .map_err(|e| {
            config::ConfigErrors(vec![config::ConfigError { field: "operators", message: e.to_string() }])
        })?,
    );
    for w in warnings {
        tracing::warn!("{w}");
    }
    let token_path =
        admin_token.map_or_else(|| "none (operators file)".to_owned(), |t| t.1.display().to_string());
    let tokens = Arc::new(match &cfg.agent_token_file {
        Some(p) => links::AgentTokens::load(p).map_err(|message| {
            config::ConfigErrors(vec![config::ConfigError { field: "agent-token-file", message }])
        })?,
        None => links::AgentTokens::default(),
    });
    // The agent endpoint may require client certificates; the admin API never does (operators
    // authenticate with the admin token).
    let agent_tls = cfg.tls.as_ref().map(|t| t.agent.clone());
    let admin_tls = cfg.tls.as_ref().map(|t| t.admin.clone());

    let oidc = match &cfg.oidc {
        Some(o) => Some(doors::oidc::Oidc::start(o, &clock, shutdown.clone()).await.map_err(|e| {
            config::ConfigErrors(vec![config::ConfigError { field: "oidc-provider", message: e }])
        })?),
        None => None,
    };
    let token_keys = match &cfg.token_keys {
        Some(t) => Some(Arc::new(t.start(&clock, shutdown.clone()).await.map_err(|e| {
            config::ConfigErrors(vec![config::ConfigError { field: "token-jwks", message: e }])
        })?)),
        None => None,
    };
    let ssf = match &cfg.ssf {
        Some(o) => Some(doors::ssf::Ssf::start(o, &clock, shutdown.clone()).await.map_err(|e| {
            config::ConfigErrors(vec![config::ConfigError { field: "ssf-transmitter", message: e }])
        })?),
        None => None,
    };
    let reloadable = (token_keys.clone(), oidc.clone(), ssf.clone());
    let ssf_poll = cfg.ssf.as_ref().and_then(|c| c.poll.clone()).zip(ssf.clone());
    let hub = Arc::new(links::hub::Hub::new(metrics.clone(), backend.shared.is_some(), clock.clone()));
    let registry = match &backend.shared {
        None => links::registry::Registry::Embedded(hub.clone()),
        Some(shared) => links::registry::Registry::shared(hub.clone(), shared.cursors.clone()),
    };
    let link_cfg = links::LinkConfig {
        session: AuthorityConfig {
            heartbeat: cfg.heartbeat,
            ack_timeout: cfg.ack_timeout,
            max_ack_timeout: cfg.ack_timeout * 16,
            idle_timeout: cfg.heartbeat * 4,
            window: cfg.max_pending_per_agent,
            max_token_ttl: cfg.max_token_ttl,
        },
        max_agents: cfg.max_agents,
        max_catchups: cfg.max_catchups,
        handshake_timeout: cfg.handshake_timeout,
        write_timeout: Duration::from_secs(10),
    };
    let links = Arc::new(links::Links::new(
        log.clone(),
        hub.clone(),
        metrics.clone(),
        link_cfg,
        tokens.clone(),
        shutdown.clone(),
        agent_tls.clone(),
    ));
    let ready = Arc::new(AtomicBool::new(true));
    let state = api::AdminState {
        log: log.clone(),
        hub: hub.clone(),
        registry,
        metrics: metrics.clone(),
        operators: operators.clone(),
        holds: Arc::default(),
        max_token_ttl: cfg.max_token_ttl,
        body_timeout: cfg.admin_body_timeout,
        ready: ready.clone(),
        shutdown: shutdown.clone(),
        heartbeat: cfg.heartbeat,
        backup_dir: cfg.data_dir.clone(),
    };
    if let Some(ssf) = &ssf {
        // SETs stored before a restart are not stored again when their transmitter, which
        // missed our answer, delivers them again.
        match ssf.remember_stored(&state).await {
            Ok(n) => tracing::info!(remembered = n, "SSF receiver ready"),
            Err(e) => {
                tracing::warn!(error = %e, "SSF: the audit trail could not be read; replays from before this start may be stored again")
            }
        }
    }
    if let Some((settings, ssf)) = ssf_poll {
        let poller = doors::ssf::poll::Poller {
            settings,
            state: ssf.poll.clone().unwrap_or_default(),
            ssf,
            api: state.clone(),
            lease: backend.shared.as_ref().map(|s| s.cursors.clone()),
        };
        tokio::spawn(poller.run(shutdown.clone()));
    }
    let view = log.view();
    tracing::info!(
        agent = %bound.agent, admin = %bound.admin, log_id = %view.log_id, head = view.head,
        admin_token = %token_path, operators = operators.count(), "authority ready"
    );
    on_ready(bound, view.log_id);

    let tracker = tokio_util::task::TaskTracker::new();
    tracker.spawn(links.clone().serve(agent_listener));
    let admin_shutdown = shutdown.clone();
    let limits = api::server::AdminLimits {
        max_connections: cfg.max_admin_connections,
        header_timeout: cfg.admin_header_timeout,
        idle_timeout: cfg.admin_idle_timeout,
    };
    let admin_server = {
        let tls = admin_tls.clone();
        let app = router::app(state, oidc, token_keys, ssf);
        tracker.spawn(api::server::serve(
            admin_listener,
            app,
            tls,
            admin_shutdown,
            limits,
            metrics.clone(),
            clock.clone(),
        ))
    };
    tracker.spawn(reload_on_sighup(
        (operators, metrics.clone()),
        agent_tls,
        admin_tls,
        tokens,
        cfg.agent_token_file.clone(),
        reloadable,
        shutdown.clone(),
    ));
    let compactor_log = log.clone();
    let compact_shutdown = shutdown.clone();
    let (interval, retain, audit_retention) = (cfg.compact_interval, cfg.retain_entries, cfg.audit_retention);
    tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = compact_shutdown.cancelled() => return,
            }
            let now = compactor_log.clock().unix_secs();
            match compactor_log.compact(retain, now).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "compacted expired entries"),
                Err(e) => tracing::warn!(error = %e, "compaction failed; will retry"),
            }
            // Audit records past --audit-retention go the same way.
            let before = compactor_log.clock().unix_ms().saturating_sub(audit_retention.as_millis() as u64);
            match compactor_log.expire_audit(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "expired audit records"),
                Err(e) => tracing::warn!(error = %e, "expiring audit records failed; will retry"),
            }
        }
    });
    tracker.spawn(log.clone().watch_store(shutdown.clone()));
    if let Some(shared) = backend.shared {
        tracker.spawn(log.clone().tail(shared.log, shutdown.clone()));
        tracker.spawn(share_cursors(hub.clone(), shared.cursors, shutdown.clone()));
    }
    tracker.close();

    shutdown.cancelled().await;
    ready.store(false, Ordering::Relaxed);
    tracing::info!("shutting down: go-away to agents, finishing in-flight requests");
    links.tracker.close();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        links.tracker.wait().await;
        tracker.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("grace period over; exiting with work in flight");
    }
    let _ = admin_server.await;
    drop(links);
    drop(log);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    Ok(())
}
