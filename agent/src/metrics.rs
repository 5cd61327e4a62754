//! The agent's Prometheus metrics (names in docs/operations.md, "Metrics").

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use revmesh_protocol::Kind;

/// Every agent metric.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `revmesh_agent_checks_total{verdict}`
    pub checks_total: IntCounterVec,
    /// The counters of [`VERDICTS`], resolved once: a check must not hash label values.
    verdicts: Vec<IntCounter>,
    /// `revmesh_agent_verified_tokens_total{sid}`: tokens that verified, by whether they carry
    /// `sid` (`yes`, `no`): a session revocation can refuse only those that do.
    pub verified_tokens_total: IntCounterVec,
    /// Its two counters, resolved once: `[without sid, with sid]`.
    verified_sid: [IntCounter; 2],
    /// `revmesh_agent_check_duration_seconds`
    pub check_duration: Histogram,
    /// `revmesh_agent_applied_seq`
    pub applied_seq: IntGauge,
    /// `revmesh_agent_revocations{kind}`
    pub revocations: IntGaugeVec,
    /// `revmesh_agent_staleness_seconds`
    pub staleness: Gauge,
    /// `revmesh_agent_connected`
    pub connected: IntGauge,
    /// `revmesh_agent_reconnects_total`
    pub reconnects_total: IntCounter,
    /// `revmesh_agent_apply_lag_seconds`
    pub apply_lag: Histogram,
    /// `revmesh_agent_frames_rejected_total{reason}`
    pub frames_rejected_total: IntCounterVec,
    /// `revmesh_agent_persist_errors_total`: failed journal or state writes (a full disk).
    pub persist_errors_total: IntCounter,
    /// `revmesh_agent_persist_ok`: 0 while applied entries wait to be persisted (not acked).
    pub persist_ok: IntGauge,
    /// `revmesh_agent_reloads_total{what,result}`: SIGHUP reloads of keys and credentials.
    pub reloads_total: IntCounterVec,
    /// `revmesh_agent_keys{source}`: verification keys in use, from files and from JWKS URLs.
    pub keys: IntGaugeVec,
    /// `revmesh_agent_jwks_fetches_total`: JWKS URL fetches attempted.
    pub jwks_fetches_total: IntCounter,
    /// `revmesh_agent_jwks_fetch_errors_total`: JWKS URL fetches that failed (last good keys kept).
    pub jwks_fetch_errors_total: IntCounter,
    /// `revmesh_agent_revoked_keys_configured`: keys the agent verifies with whose `kid` a
    /// `key` revocation names: remove them from the key sets (refreshed on scrape).
    pub revoked_keys_configured: IntGauge,
    /// The `kid`s of the keys in use, as the key ring last composed them.
    kids: std::sync::Arc<std::sync::RwLock<std::sync::Arc<Vec<String>>>>,
}

/// Verdict labels, pre-created so dashboards see zeros.
pub const VERDICTS: [&str; 6] = ["ok", "revoked", "invalid", "stale", "err", "pong"];

impl Metrics {
    /// Records the `kid`s of the keys in use (the key ring, on every recomposition).
    pub fn set_configured_kids(&self, kids: Vec<String>) {
        *self.kids.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(kids);
    }

    /// The `kid`s of the keys in use.
    pub fn configured_kids(&self) -> std::sync::Arc<Vec<String>> {
        self.kids.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let checks_total = IntCounterVec::new(
            Opts::new("revmesh_agent_checks_total", "Socket requests answered, by verdict"),
            &["verdict"],
        )?;
        let verdicts = VERDICTS.iter().map(|v| checks_total.with_label_values(&[*v])).collect();
        let verified_tokens_total = IntCounterVec::new(
            Opts::new(
                "revmesh_agent_verified_tokens_total",
                "Tokens that verified, by whether they carry a sid claim (session revocations match only those)",
            ),
            &["sid"],
        )?;
        let verified_sid = [
            verified_tokens_total.with_label_values(&["no"]),
            verified_tokens_total.with_label_values(&["yes"]),
        ];
        let m = Self {
            checks_total,
            verdicts,
            verified_tokens_total,
            verified_sid,
            check_duration: Histogram::with_opts(
                HistogramOpts::new("revmesh_agent_check_duration_seconds", "Time to answer one request")
                    .buckets(vec![
                        0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005,
                        0.025,
                    ]),
            )?,
            applied_seq: IntGauge::new("revmesh_agent_applied_seq", "Highest seq applied")?,
            revocations: IntGaugeVec::new(
                Opts::new("revmesh_agent_revocations", "Live revocations held, by kind"),
                &["kind"],
            )?,
            staleness: Gauge::new(
                "revmesh_agent_staleness_seconds",
                "Time since an authority was last heard",
            )?,
            connected: IntGauge::new("revmesh_agent_connected", "1 while a link to an authority is up")?,
            reconnects_total: IntCounter::new(
                "revmesh_agent_reconnects_total",
                "Links established after the first",
            )?,
            apply_lag: Histogram::with_opts(
                HistogramOpts::new(
                    "revmesh_agent_apply_lag_seconds",
                    "From an entry's creation to its application",
                )
                .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0]),
            )?,
            frames_rejected_total: IntCounterVec::new(
                Opts::new("revmesh_agent_frames_rejected_total", "Frames from the authority rejected"),
                &["reason"],
            )?,
            persist_errors_total: IntCounter::new(
                "revmesh_agent_persist_errors_total",
                "Failed journal or state writes; the entries stay applied in memory, unacknowledged",
            )?,
            reloads_total: IntCounterVec::new(
                Opts::new("revmesh_agent_reloads_total", "SIGHUP reloads of keys and credentials, by outcome"),
                &["what", "result"],
            )?,
            keys: IntGaugeVec::new(
                Opts::new("revmesh_agent_keys", "Verification keys in use, by source (file, url)"),
                &["source"],
            )?,
            jwks_fetches_total: IntCounter::new("revmesh_agent_jwks_fetches_total", "JWKS URL fetches attempted")?,
            jwks_fetch_errors_total: IntCounter::new(
                "revmesh_agent_jwks_fetch_errors_total",
                "JWKS URL fetches that failed; the last good keys stay in force",
            )?,
            revoked_keys_configured: IntGauge::new(
                "revmesh_agent_revoked_keys_configured",
                "Verification keys in use whose kid a key revocation names (tokens they sign are refused; remove them)",
            )?,
            kids: Default::default(),
            persist_ok: IntGauge::new(
                "revmesh_agent_persist_ok",
                "1 when everything applied is persisted; 0 while writes fail (nothing beyond them is acknowledged)",
            )?,
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.checks_total.clone()))?;
        r.register(Box::new(m.verified_tokens_total.clone()))?;
        r.register(Box::new(m.check_duration.clone()))?;
        r.register(Box::new(m.applied_seq.clone()))?;
        r.register(Box::new(m.revocations.clone()))?;
        r.register(Box::new(m.staleness.clone()))?;
        r.register(Box::new(m.connected.clone()))?;
        r.register(Box::new(m.reconnects_total.clone()))?;
        r.register(Box::new(m.apply_lag.clone()))?;
        r.register(Box::new(m.frames_rejected_total.clone()))?;
        r.register(Box::new(m.persist_errors_total.clone()))?;
        r.register(Box::new(m.persist_ok.clone()))?;
        r.register(Box::new(m.reloads_total.clone()))?;
        r.register(Box::new(m.keys.clone()))?;
        r.register(Box::new(m.jwks_fetches_total.clone()))?;
        r.register(Box::new(m.jwks_fetch_errors_total.clone()))?;
        r.register(Box::new(m.revoked_keys_configured.clone()))?;
        for source in ["file", "url"] {
            m.keys.with_label_values(&[source]);
        }
        for reason in ["not_binary", "violation"].iter().chain(revmesh_protocol::codec::DECODE_REASONS) {
            m.frames_rejected_total.with_label_values(&[reason]);
        }
        for what in ["keys", "credentials"] {
            for result in ["ok", "error"] {
                m.reloads_total.with_label_values(&[what, result]);
            }
        }
        m.persist_ok.set(1);
        for k in Kind::ALL {
            m.revocations.with_label_values(&[k.as_str()]);
        }
        revmesh_runtime::metrics::register_process(r, env!("CARGO_PKG_VERSION"), env!("REVMESH_COMMIT"))?;
        Ok(m)
    }

    /// Counts a token that verified, with or without `sid`.
    pub fn count_verified(&self, has_sid: bool) {
        self.verified_sid[usize::from(has_sid)].inc();
    }

    /// Counts one answer with `verdict` (one of [`VERDICTS`]; anything else counts as `err`).
    pub fn count_check(&self, verdict: &str) {
        let i = VERDICTS.iter().position(|v| *v == verdict).unwrap_or(4);
        if let Some(c) = self.verdicts.get(i) {
            c.inc();
        }
    }

    /// Text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
