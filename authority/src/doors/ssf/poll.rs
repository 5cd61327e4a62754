//! Poll delivery (RFC 8936): the authority long-polls a transmitter's endpoint, stores what each
//! SET asks for through the same path as a push ([`Ssf::ingest`]), and acknowledges a SET's
//! `jti` in its next request only once the SET's entries are durable; refused SETs are reported
//! in `setErrs`. A crash between receipt and commit leaves the SET unacknowledged, so the
//! transmitter delivers it again: never lost. With replicas on PostgreSQL one replica polls at a
//! time, holding a lease in the database; another takes over when the holder stops renewing.

use super::{Ingested, Ssf};
use crate::api::AdminState;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Most SETs asked for in one poll (`maxEvents`).
pub const MAX_EVENTS: usize = 100;
/// Largest poll answer read: `MAX_EVENTS` SETs of at most 64 KiB each, and their framing.
pub const MAX_ANSWER: usize = MAX_EVENTS * (super::MAX_SET_BYTES + 1024);
/// Longest one poll request may take (the transmitter holds a long poll open until it has SETs).
pub const POLL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a lease lasts without renewal: a replica that dies is replaced within this.
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// Longest wait between failed polls.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The lease's name in the database.
pub const LEASE: &str = "ssf-poll";

/// `--ssf-poll URL` and its token.
#[derive(Debug, Clone)]
pub struct PollSettings {
    /// The transmitter's poll endpoint.
    pub url: String,
    /// File whose first line is the bearer token the poll presents.
    pub token_file: Option<PathBuf>,
    /// CA bundle for an https endpoint.
    pub ca_file: Option<PathBuf>,
}

/// What `/v1/ssf/status` says about polling.
#[derive(Debug, Default, Clone)]
pub struct PollState {
    /// This replica holds the lease (always, on the embedded store).
    pub polling: bool,
    /// Last successful poll, unix ms.
    pub last_ok_ms: Option<u64>,
    /// Last failure, unix ms, and what it was.
    pub last_error: Option<(u64, String)>,
    /// SETs received by polling.
    pub received: u64,
}

/// Reads the bearer token (the file's first non-empty line).
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let token = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'));
    match token {
        Some(t) if t.chars().all(|c| c.is_ascii_graphic()) => Ok(t.to_owned()),
        _ => Err(format!("{}: no token (one line of printable characters)", path.display())),
    }
}

/// The poller: runs until `stop`.
pub struct Poller {
    /// Settings.
    pub settings: PollSettings,
    /// The receiver.
    pub ssf: Arc<Ssf>,
    /// The admin API's core (store, metrics, clock).
    pub api: AdminState,
    /// The lease, when replicas share the store.
    pub lease: Option<Arc<dyn crate::store::CursorStore>>,
    /// What status reports.
    pub state: Arc<Mutex<PollState>>,
}

impl Poller {
    /// Polls until `stop`: holds the lease (if any), polls, stores, acknowledges.
    pub async fn run(self, stop: CancellationToken) {
        let tls = if self.settings.url.starts_with("https://") {
            match revmesh_runtime::http_client::tls_config(self.settings.ca_file.as_deref()) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::error!(error = %e, "SSF poll: no TLS configuration; not polling");
                    return;
                }
            }
        } else {
            None
        };
        let client =
            revmesh_runtime::http_client::Client::new(tls, Duration::from_secs(5), POLL_TIMEOUT, MAX_ANSWER);
        let holding = Arc::new(AtomicBool::new(self.lease.is_none()));
        if let Some(lease) = self.lease.clone() {
            tokio::spawn(keep_lease(lease, holding.clone(), stop.clone()));
        }
        let mut acks: Vec<String> = Vec::new();
        let mut errs = Map::new();
        let mut backoff = Duration::from_secs(1);
        let mut was_holding = false;
        let mut more = false;
        loop {
            if stop.is_cancelled() {
                return;
            }
            let now_holding = holding.load(Ordering::Acquire);
            self.state.lock().unwrap_or_else(|p| p.into_inner()).polling = now_holding;
            if !now_holding {
                was_holding = false;
                tokio::select! {
                    _ = tokio::time::sleep(LEASE_TTL / 5) => continue,
                    _ = stop.cancelled() => return,
                }
            }
            if !was_holding {
                // Taking over (or starting): remember what was stored, so what the last
                // poller stored but could not acknowledge is not stored twice.
                match self.ssf.remember_stored(&self.api).await {
                    Ok(n) => tracing::info!(remembered = n, "SSF poll: polling"),
                    Err(e) => {
                        tracing::warn!(error = %e, "SSF poll: cannot read the audit trail yet");
                        self.failed(format!("reading the audit trail: {e}"));
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stop.cancelled() => return,
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
                was_holding = true;
            }
            let token = match self.settings.token_file.as_deref().map(read_token).transpose() {
                Ok(t) => t,
                Err(e) => {
                    self.failed(e);
                    tokio::select! {
                        _ = tokio::time::sleep(MAX_BACKOFF) => continue,
                        _ = stop.cancelled() => return,
                    }
                }
            };
            let body = json!({
                "ack": acks,
                "setErrs": errs,
                "returnImmediately": more,
                "maxEvents": MAX_EVENTS,
            });
            let auth = token.map(|t| format!("Bearer {t}"));
            let mut headers = vec![("content-type", "application/json"), ("accept", "application/json")];
            if let Some(a) = &auth {
                headers.push(("authorization", a));
            }
            let sent = tokio::select! {
                r = client.send(http::Method::POST, &self.settings.url, &headers, body.to_string().into()) => r,
                _ = stop.cancelled() => return,
            };
            let answer = match sent {
                Ok(a) if a.status == 200 => a,
                Ok(a) => {
                    let text: String = a.text().chars().take(200).collect();
                    self.failed(format!("answered {}: {text}", a.status));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
                Err(e) => {
                    self.failed(e.to_string());
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            // The transmitter has our acknowledgements and errors now.
            acks.clear();
            errs.clear();
            backoff = Duration::from_secs(1);
            let (sets, more_available) = match parse_answer(&answer.body) {
                Ok(v) => v,
                Err(e) => {
                    self.failed(e);
                    more = false;
                    continue;
                }
            };
            more = more_available;
            {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                st.last_ok_ms = Some(self.api.log.clock().unix_ms());
                st.received += sets.len() as u64;
            }
            let remote = self.settings.url.clone();
            let mut unstored = false;
            for (jti, set) in sets {
                match self.ssf.ingest(&self.api, set.trim(), &remote, Some(&jti)).await {
                    Ingested::Accepted => acks.push(jti),
                    Ingested::Refused(e) => {
                        errs.insert(jti, json!({"err": e.code.as_str(), "description": e.description}));
                    }
                    // Not acknowledged: the transmitter delivers it again.
                    Ingested::Unavailable(_) => unstored = true,
                }
            }
            if unstored {
                self.failed("the store could not commit; unacknowledged SETs come again".into());
                more = true;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            // With acknowledgements to send, ask again at once rather than wait out a long poll.
            if !acks.is_empty() || !errs.is_empty() {
                more = true;
            }
        }
    }

    fn failed(&self, e: String) {
        tracing::warn!(url = %self.settings.url, error = %e, "SSF poll failed");
        let at = self.api.log.clock().unix_ms();
        self.state.lock().unwrap_or_else(|p| p.into_inner()).last_error = Some((at, e));
    }
}

/// An RFC 8936 §2.5 answer: `sets` (`jti` → SET) and `moreAvailable`.
pub fn parse_answer(body: &[u8]) -> Result<(Vec<(String, String)>, bool), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("the poll answer is not JSON: {e}"))?;
    let sets = match v.get("sets") {
        Some(Value::Object(m)) => m,
        None => return Err("the poll answer has no `sets`".into()),
        Some(_) => return Err("the poll answer's `sets` is not an object".into()),
    };
    let mut out = Vec::with_capacity(sets.len());
    for (jti, set) in sets {
        match set.as_str() {
            Some(s) => out.push((jti.clone(), s.to_owned())),
            None => return Err(format!("the SET filed under `{jti}` is not a string")),
        }
    }
    let more = v.get("moreAvailable").and_then(Value::as_bool).unwrap_or(false);
    Ok((out, more))
}

/// Takes and renews the poll lease every third of its lifetime; `holding` says whether this
/// replica may poll. A renewal that fails (the database unreachable) gives the lease up at
/// once: another replica takes over once it expires.
async fn keep_lease(
    lease: Arc<dyn crate::store::CursorStore>,
    holding: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    loop {
        let held = tokio::time::timeout(LEASE_TTL / 3, lease.clone().lease(LEASE.into(), LEASE_TTL)).await;
        let now = matches!(held, Ok(Ok(true)));
        if now != holding.swap(now, Ordering::AcqRel) {
            tracing::info!(holding = now, "SSF poll lease");
        }
        tokio::select! {
            _ = tokio::time::sleep(LEASE_TTL / 3) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_answers() {
        let (sets, more) =
            parse_answer(br#"{"sets": {"a": "x.y.z", "b": "p.q.r"}, "moreAvailable": true}"#).unwrap();
        assert_eq!(sets.len(), 2);
        assert!(more);
        assert_eq!(parse_answer(br#"{"sets": {}}"#).unwrap(), (vec![], false));
        for bad in [&b"{}"[..], b"[]", b"{\"sets\": []}", b"{\"sets\": {\"a\": 1}}", b"garbage"] {
            assert!(parse_answer(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
