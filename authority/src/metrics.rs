//! The authority's Prometheus metrics (names in docs/operations.md, "Metrics"). Names are contract; labels stay low-cardinality.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use revmesh_protocol::Kind;

/// Every `result` label value of `revmesh_authority_oidc_logouts_total` (exported at 0 from the
/// start).
pub const OIDC_RESULTS: &[&str] = &["ok", "invalid", "replay", "unavailable"];

/// Every authority metric, registered in one registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `revmesh_authority_agents_connected`
    pub agents_connected: IntGauge,
    /// `revmesh_authority_log_head_seq`
    pub log_head_seq: IntGauge,
    /// `revmesh_authority_revocations_total{kind}`
    pub revocations_total: IntCounterVec,
    /// `revmesh_authority_revoke_to_all_acked_seconds`
    pub revoke_to_all_acked: Histogram,
    /// `revmesh_authority_ack_latency_seconds`
    pub ack_latency: Histogram,
    /// `revmesh_authority_resends_total`
    pub resends_total: IntCounter,
    /// `revmesh_authority_snapshots_sent_total`
    pub snapshots_sent_total: IntCounter,
    /// `revmesh_authority_frames_rejected_total{reason}`
    pub frames_rejected_total: IntCounterVec,
    /// `revmesh_authority_agent_lag_max`
    pub agent_lag_max: IntGauge,
    /// `revmesh_authority_unacked_oldest_age_seconds`
    pub unacked_oldest_age: Gauge,
    /// `revmesh_authority_store_commits_total`: fsyncing commits, to compare with revocations.
    pub store_commits_total: IntCounter,
    /// `revmesh_authority_agents_rejected_total{reason}`: links refused before a session started.
    pub agents_rejected_total: IntCounterVec,
    /// Agents connected and waiting for a catch-up slot.
    pub catchups_waiting: IntGauge,
    /// `revmesh_authority_agents_ahead_of_log`: agents that presented a position this log never
    /// held (a seq beyond its head, or entries of another log) since this authority started.
    pub agents_ahead_of_log: IntGauge,
    /// `revmesh_authority_store_ready`: 1 while the store can commit (what `/readyz` says).
    pub store_ready: IntGauge,
    /// `revmesh_authority_store_errors_total`: failed or timed-out store operations.
    pub store_errors_total: IntCounter,
    /// `revmesh_authority_admin_connections_shed_total{reason}`: admin API connections closed
    /// by the server (timeouts, or room made at the connection limit).
    pub admin_shed_total: IntCounterVec,
    /// `revmesh_authority_admin_refused_total{reason}`: admin API requests refused for their
    /// credentials (`unauthorized`: missing or wrong; `forbidden`: an operator without the
    /// scope; `held`: a source slowed after repeated wrong credentials).
    pub admin_refused_total: IntCounterVec,
    /// `revmesh_authority_oidc_logouts_total{result}`: back-channel logouts by outcome.
    pub oidc_logouts_total: IntCounterVec,
    /// `revmesh_authority_ssf_events_total{event,result}`: Shared Signals SETs by event (a short
    /// name, `other` for the rest) and result (`accepted`, `ignored`, `refused`).
    pub ssf_events_total: IntCounterVec,
    /// `revmesh_authority_reloads_total{what,result}`: SIGHUP reloads of the operators file
    /// (`what="operators"`), `ok` or `error` (the previous operators stay in force).
    pub reloads_total: IntCounterVec,
}

/// Reasons of `agents_rejected_total`, exported at 0 from the start.
pub const AGENT_REJECT_REASONS: &[&str] = &[
    "too_many_connections",
    "tls",
    "handshake_timeout",
    "handshake",
    "unauthorized",
    "identity",
    "duplicate_id",
    "store_unreachable",
];

/// Reasons of `frames_rejected_total` besides the decoder's, exported at 0 from the start.
pub const FRAME_REJECT_REASONS: &[&str] =
    &["unexpected_frame", "not_binary", "hello_timeout", "violation", "websocket_protocol", "io"];

/// Reasons of `admin_connections_shed_total`, exported at 0 from the start.
pub const ADMIN_SHED_REASONS: &[&str] = &["header_timeout", "body_timeout", "idle", "limit", "refused"];

const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let hist = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()))
        };
        let m = Self {
            agents_connected: IntGauge::new("revmesh_authority_agents_connected", "Agents with a live link")?,
            log_head_seq: IntGauge::new("revmesh_authority_log_head_seq", "Highest seq in the log")?,
            revocations_total: IntCounterVec::new(
                Opts::new("revmesh_authority_revocations_total", "Revocations accepted durably"),
                &["kind"],
            )?,
            revoke_to_all_acked: hist(
                "revmesh_authority_revoke_to_all_acked_seconds",
                "From acceptance of an entry to its ack by every connected agent",
            )?,
            ack_latency: hist("revmesh_authority_ack_latency_seconds", "From push to ack, per agent")?,
            resends_total: IntCounter::new(
                "revmesh_authority_resends_total",
                "Ack timeouts that caused a resend",
            )?,
            snapshots_sent_total: IntCounter::new(
                "revmesh_authority_snapshots_sent_total",
                "Snapshots sent",
            )?,
            frames_rejected_total: IntCounterVec::new(
                Opts::new("revmesh_authority_frames_rejected_total", "Frames from agents rejected"),
                &["reason"],
            )?,
            agent_lag_max: IntGauge::new(
                "revmesh_authority_agent_lag_max",
                "Largest lag of a connected agent, in entries",
            )?,
            unacked_oldest_age: Gauge::new(
                "revmesh_authority_unacked_oldest_age_seconds",
                "Age of the oldest entry not yet acked by every connected agent",
            )?,
            store_commits_total: IntCounter::new(
                "revmesh_authority_store_commits_total",
                "Durable (fsynced) commits of appended entries",
            )?,
            agents_rejected_total: IntCounterVec::new(
                Opts::new("revmesh_authority_agents_rejected_total", "Agent connections refused"),
                &["reason"],
            )?,
            catchups_waiting: IntGauge::new(
                "revmesh_authority_catchups_waiting",
                "Agents connected and waiting for a catch-up slot (--max-catchups)",
            )?,
            agents_ahead_of_log: IntGauge::new(
                "revmesh_authority_agents_ahead_of_log",
                "Agents that presented a position this log never held (a lost or restored store); \
                 they keep enforcing what they carry",
            )?,
            store_ready: IntGauge::new(
                "revmesh_authority_store_ready",
                "1 while the store can commit; 0 while revocations get 503",
            )?,
            store_errors_total: IntCounter::new(
                "revmesh_authority_store_errors_total",
                "Store operations (appends, probes) that failed or timed out",
            )?,
            oidc_logouts_total: IntCounterVec::new(
                Opts::new(
                    "revmesh_authority_oidc_logouts_total",
                    "OIDC back-channel logouts received, by result (ok, invalid, replay, unavailable)",
                ),
                &["result"],
            )?,
            ssf_events_total: IntCounterVec::new(
                Opts::new(
                    "revmesh_authority_ssf_events_total",
                    "Shared Signals events (SETs) received, by event and result (accepted, ignored, refused)",
                ),
                &["event", "result"],
            )?,
            admin_shed_total: IntCounterVec::new(
                Opts::new(
                    "revmesh_authority_admin_connections_shed_total",
                    "Admin API connections closed by the server: request head or body too slow, idle, or shed at the connection limit",
                ),
                &["reason"],
            )?,
            admin_refused_total: IntCounterVec::new(
                Opts::new(
                    "revmesh_authority_admin_refused_total",
                    "Admin API requests refused for their credentials: missing or wrong (unauthorized), an operator without the scope (forbidden), a source slowed after repeated wrong credentials (held)",
                ),
                &["reason"],
            )?,
            reloads_total: IntCounterVec::new(
                Opts::new(
                    "revmesh_authority_reloads_total",
                    "SIGHUP reloads by what was reloaded and whether it worked (on error the previous configuration stays)",
                ),
                &["what", "result"],
            )?,
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.agents_connected.clone()))?;
        r.register(Box::new(m.log_head_seq.clone()))?;
        r.register(Box::new(m.revocations_total.clone()))?;
        r.register(Box::new(m.revoke_to_all_acked.clone()))?;
        r.register(Box::new(m.ack_latency.clone()))?;
        r.register(Box::new(m.resends_total.clone()))?;
        r.register(Box::new(m.snapshots_sent_total.clone()))?;
        r.register(Box::new(m.frames_rejected_total.clone()))?;
        r.register(Box::new(m.agent_lag_max.clone()))?;
        r.register(Box::new(m.unacked_oldest_age.clone()))?;
        r.register(Box::new(m.store_commits_total.clone()))?;
        r.register(Box::new(m.agents_rejected_total.clone()))?;
        r.register(Box::new(m.catchups_waiting.clone()))?;
        r.register(Box::new(m.agents_ahead_of_log.clone()))?;
        r.register(Box::new(m.admin_shed_total.clone()))?;
        r.register(Box::new(m.admin_refused_total.clone()))?;
        r.register(Box::new(m.reloads_total.clone()))?;
        for result in ["ok", "error"] {
            m.reloads_total.with_label_values(&["operators", result]);
        }
        m.admin_refused_total.with_label_values(&["unauthorized"]);
        m.admin_refused_total.with_label_values(&["forbidden"]);
        r.register(Box::new(m.oidc_logouts_total.clone()))?;
        for result in OIDC_RESULTS {
            m.oidc_logouts_total.with_label_values(&[result]);
        }
        r.register(Box::new(m.ssf_events_total.clone()))?;
        for event in crate::doors::ssf::set::LABELS {
            for result in ["accepted", "ignored", "refused"] {
                m.ssf_events_total.with_label_values(&[event, result]);
            }
        }
        r.register(Box::new(m.store_ready.clone()))?;
        r.register(Box::new(m.store_errors_total.clone()))?;
        m.store_ready.set(1);
        for k in Kind::ALL {
            m.revocations_total.with_label_values(&[k.as_str()]);
        }
        for reason in FRAME_REJECT_REASONS.iter().chain(revmesh_protocol::codec::DECODE_REASONS) {
            m.frames_rejected_total.with_label_values(&[reason]);
        }
        for reason in AGENT_REJECT_REASONS {
            m.agents_rejected_total.with_label_values(&[reason]);
        }
        for reason in ADMIN_SHED_REASONS {
            m.admin_shed_total.with_label_values(&[reason]);
        }
        revmesh_runtime::metrics::register_process(r, env!("CARGO_PKG_VERSION"), env!("REVMESH_COMMIT"))?;
        Ok(m)
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
