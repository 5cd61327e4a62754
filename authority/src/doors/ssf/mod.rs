//! OpenID Shared Signals Framework 1.0 receiver (CAEP 1.0, RISC 1.0): Security Event Tokens
//! (RFC 8417) pushed to `POST /v1/ssf/events` (RFC 8935), and `GET /v1/ssf/status`.
//!
//! A push is authenticated by a push token (`--ssf-push-token-file`), the SET by its
//! transmitter's signature; a valid SET becomes entries scoped to the transmitter's issuer
//! ([`set::judge`]), answered 202 once durable. A replay (a `jti` already accepted within
//! `--ssf-max-age`) is answered 202 and stores nothing.

pub mod poll;
pub mod set;

use crate::api::{store_revocations, AdminState, ApiError, Caller};

use crate::store::NewEntry;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use revmesh_jwt::remote::{Location, RemoteKeys};
use revmesh_jwt::Invalid;
use serde_json::{json, Value};
use set::{Effect, ErrCode, Event, Judged, Refused, Rules};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Largest push body (a SET) accepted.
pub const MAX_SET_BYTES: usize = 64 << 10;
/// Most SET `jti`s remembered for replay detection within `--ssf-max-age`.
pub const MAX_SEEN: usize = 100_000;
/// The audit trail's action for a stored SET; its target is `set EVENT JTI`.
pub const AUDIT_ACTION: &str = "ssf_event";
/// Most push tokens in `--ssf-push-token-file`.
pub const MAX_PUSH_TOKENS: usize = 1024;

/// One trusted transmitter, as configured.
#[derive(Debug, Clone)]
pub struct TransmitterSettings {
    /// Its issuer (the SETs' `iss`).
    pub issuer: String,
    /// Where its JWKS lives.
    pub jwks: Location,
    /// Audiences accepted from it beyond `--ssf-audience`.
    pub audiences: Vec<String>,
    /// Other issuers whose tokens it speaks for.
    pub aliases: Vec<String>,
    /// Its session-revoked events name the session as a simple `opaque` subject.
    pub opaque_is_session: bool,
}

/// Settings of the receiver.
#[derive(Debug, Clone)]
pub struct SsfSettings {
    /// Trusted transmitters.
    pub transmitters: Vec<TransmitterSettings>,
    /// Audiences a SET's `aud` must contain one of (with each transmitter's own).
    pub audiences: Vec<String>,
    /// Bearer tokens a push must present (`--ssf-push-token-file`); `None`: push is refused.
    pub push_token_file: Option<PathBuf>,
    /// Oldest `iat` accepted, and how long a `jti` is remembered.
    pub max_age: Duration,
    /// Clock skew allowed.
    pub leeway: Duration,
    /// Event type URIs that revoke.
    pub revoke_on: Vec<String>,
    /// Scheduled JWKS refresh.
    pub jwks_refresh: Duration,
    /// Least time between two fetches of one JWKS.
    pub jwks_min_refresh: Duration,
    /// CA bundle for https JWKS URLs (and an https poll endpoint).
    pub jwks_ca_file: Option<PathBuf>,
    /// Poll delivery (`--ssf-poll`).
    pub poll: Option<poll::PollSettings>,
}

/// What the receiver has seen of one transmitter (this replica's view), for `/v1/ssf/status`.
#[derive(Debug, Default, Clone)]
struct Seen {
    last_event: Option<(u64, Event, String)>,
    verification: Option<(u64, Option<String>)>,
    stream: Option<(u64, String, Option<String>)>,
    accepted: u64,
    ignored: u64,
    refused: u64,
}

#[derive(Debug)]
struct Transmitter {
    keys: Arc<RemoteKeys>,
    rules: Rules,
    seen: Mutex<Seen>,
}

/// The receiver: transmitters' keys and rules, push tokens, the replay cache.
#[derive(Debug)]
pub struct Ssf {
    transmitters: HashMap<String, Transmitter>,
    push_tokens: Mutex<Vec<[u8; 32]>>,
    push_token_file: Option<PathBuf>,
    max_age: u64,
    /// `iss` + `jti` → when it may be forgotten (unix seconds).
    replays: Mutex<HashMap<(String, String), u64>>,
    /// The poller's state, when `--ssf-poll` is set.
    pub(crate) poll: Option<Arc<Mutex<poll::PollState>>>,
}

/// Reads `--ssf-push-token-file`: one token per line (blank lines and `#` comments skipped),
/// kept as SHA-256 digests. Errors never quote the file.
pub fn read_push_tokens(path: &std::path::Path) -> Result<Vec<[u8; 32]>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.len() < 16 || line.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{} line {}: a push token is one word of at least 16 characters",
                path.display(),
                n + 1
            ));
        }
        out.push(crate::operators::token_sha256(line));
    }
    if out.is_empty() || out.len() > MAX_PUSH_TOKENS {
        return Err(format!("{}: holds 1 to {MAX_PUSH_TOKENS} push tokens", path.display()));
    }
    Ok(out)
}

impl Ssf {
    /// Loads every transmitter's keys once (one whose keys cannot be fetched yet is logged and
    /// retried; its SETs are refused until then) and keeps them fresh until `stop`.
    pub async fn start(
        s: &SsfSettings,
        clock: &revmesh_runtime::Clock,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<Arc<Ssf>, String> {
        let push_tokens = match &s.push_token_file {
            Some(p) => read_push_tokens(p)?,
            None => Vec::new(),
        };
        let mut keys = crate::doors::issuer_keys(
            s.transmitters.iter().map(|t| (&t.issuer, &t.jwks)),
            "SSF transmitter",
            (s.jwks_refresh, s.jwks_min_refresh),
            s.jwks_ca_file.as_deref(),
            clock,
            stop,
        )
        .await?;
        let mut transmitters = HashMap::new();
        for t in &s.transmitters {
            let Some(keys) = keys.remove(&t.issuer) else { continue };
            let rules = Rules {
                issuer: t.issuer.clone(),
                aliases: t.aliases.clone(),
                opaque_is_session: t.opaque_is_session,
                audiences: s.audiences.iter().chain(&t.audiences).cloned().collect(),
                revoke_on: s.revoke_on.clone(),
                max_age: s.max_age.as_secs(),
                leeway: s.leeway.as_secs(),
            };
            transmitters.insert(t.issuer.clone(), Transmitter { keys, rules, seen: Mutex::default() });
        }
        Ok(Arc::new(Ssf {
            transmitters,
            push_tokens: Mutex::new(push_tokens),
            push_token_file: s.push_token_file.clone(),
            max_age: s.max_age.as_secs() + s.leeway.as_secs(),
            replays: Mutex::new(HashMap::new()),
            poll: s.poll.as_ref().map(|_| Arc::default()),
        }))
    }

    /// SIGHUP: re-reads the push tokens and the transmitters' JWKS files; a file that fails
    /// keeps what was in force.
    pub async fn reload_files(&self) -> Result<(), String> {
        if let Some(p) = &self.push_token_file {
            let tokens = read_push_tokens(p)?;
            *self.push_tokens.lock().unwrap_or_else(|p| p.into_inner()) = tokens;
        }
        for (issuer, t) in &self.transmitters {
            if matches!(t.keys.location(), Location::File(_)) {
                t.keys.refresh_now().await.map_err(|e| format!("{issuer}: {e}"))?;
            }
        }
        Ok(())
    }

    /// Whether `presented` is one of the push tokens (every one compared, in constant time).
    fn push_token_ok(&self, presented: &str) -> bool {
        let digest = crate::operators::token_sha256(presented);
        let tokens = self.push_tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.iter().fold(false, |found, t| crate::auth::ct_eq(t, &digest) | found)
    }

    /// Verifies a SET's signature with its transmitter's keys and judges its claims at `now`.
    /// Returns the transmitter's issuer with the verdict (`None` when the issuer is unknown).
    pub async fn validate(&self, token: &str, now: u64) -> (Option<&str>, Result<Judged, Refused>) {
        if token.split('.').count() != 3 {
            let e = Refused::new(ErrCode::Request, "the body is not a compact JWS (RFC 7515)");
            return (None, Err(e));
        }
        let issuer = revmesh_jwt::unverified_issuer(token);
        let Some((issuer, t)) = issuer.as_deref().and_then(|i| self.transmitters.get_key_value(i)) else {
            return (None, Err(Refused::new(ErrCode::Issuer, "`iss` is not a configured transmitter")));
        };
        let verified = match t.keys.keys().verify_signed(token, MAX_SET_BYTES) {
            // A key the transmitter may have just published: wait (bounded) for the next
            // allowed fetch, then try again.
            Err(Invalid::UnknownKey) => {
                let kid = revmesh_jwt::unverified_kid(token).unwrap_or_default();
                t.keys.refresh_for_unknown(&kid, crate::doors::UNKNOWN_KID_WAIT).await;
                t.keys.keys().verify_signed(token, MAX_SET_BYTES)
            }
            r => r,
        };
        let signed = match verified {
            Ok(s) => s,
            Err(e @ (Invalid::UnknownKey | Invalid::Signature | Invalid::Algorithm)) => {
                let what = match e {
                    Invalid::UnknownKey => "`kid` names none of the transmitter's keys",
                    Invalid::Algorithm => {
                        "the algorithm is not one of the transmitter's keys' (never none or HMAC)"
                    }
                    _ => "the signature does not verify with the transmitter's keys",
                };
                return (Some(issuer), Err(Refused::new(ErrCode::Key, what)));
            }
            Err(e) => {
                let what = format!("the SET is not a valid JWS: {}", e.as_str());
                return (Some(issuer), Err(Refused::new(ErrCode::Request, what)));
            }
        };
        match signed.header.get("typ") {
            None => {}
            Some(Value::String(typ))
                if typ.eq_ignore_ascii_case("secevent+jwt")
                    || typ.eq_ignore_ascii_case("application/secevent+jwt") => {}
            Some(_) => {
                let e = Refused::new(ErrCode::Request, "header `typ` must be secevent+jwt");
                return (Some(issuer), Err(e));
            }
        }
        (Some(issuer), set::judge(&signed.claims, &t.rules, now))
    }

    /// Reserves `iss` + `jti` against replays: `false` when it was accepted within
    /// `--ssf-max-age` already.
    fn reserve(&self, key: &(String, String), now: u64) -> Result<bool, Refused> {
        let mut seen = self.replays.lock().unwrap_or_else(|p| p.into_inner());
        if seen.get(key).is_some_and(|until| *until > now) {
            return Ok(false);
        }
        if seen.len() >= MAX_SEEN {
            seen.retain(|_, until| *until > now);
        }
        if seen.len() >= MAX_SEEN {
            // Every remembered jti is still fresh: refusing (the transmitter retries) is safer
            // than forgetting one.
            return Err(Refused::new(ErrCode::Request, "too many SETs within --ssf-max-age; retry later"));
        }
        seen.insert(key.clone(), now + self.max_age);
        Ok(true)
    }

    /// Remembers the SETs stored within `--ssf-max-age`, from the audit trail (which commits
    /// with their entries), so a SET delivered again after a restart, or to the replica that
    /// took over polling, is acknowledged and not stored twice. Returns how many.
    pub(crate) async fn remember_stored(&self, s: &AdminState) -> Result<usize, crate::store::StoreError> {
        let now_ms = s.log.clock().unix_ms();
        // A minute of slack: records' times and ids are taken a moment apart.
        let since = now_ms.saturating_sub(self.max_age * 1000 + 60_000);
        // The first record at or after `since`: ids ascend with time, so bisect on them.
        let first_at =
            |after: u64| async move { s.log.audit_after(after, 1).await.map(|r| r.first().map(|r| r.at_ms)) };
        let (mut lo, mut hi) = (0u64, 1u64);
        while first_at(hi).await?.is_some_and(|at| at < since) {
            lo = hi;
            hi = hi.saturating_mul(2);
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if first_at(mid).await?.is_none_or(|at| at >= since) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let (mut after, mut n) = (lo, 0);
        loop {
            let page = s.log.audit_after(after, 1000).await?;
            let Some(last) = page.last() else { return Ok(n) };
            after = last.id;
            let mut seen = self.replays.lock().unwrap_or_else(|p| p.into_inner());
            for r in page.iter().filter(|r| r.action == AUDIT_ACTION) {
                let Some(issuer) = r.operator.strip_prefix("ssf:") else { continue };
                // `set EVENT JTI; seq A-B`
                let Some((_, rest)) = r.target.strip_prefix("set ").and_then(|t| t.split_once(' ')) else {
                    continue;
                };
                let jti = rest.rsplit_once("; seq ").map_or(rest, |(j, _)| j);
                if seen.len() < MAX_SEEN {
                    seen.insert((issuer.to_owned(), jti.to_owned()), r.at_ms / 1000 + self.max_age);
                    n += 1;
                }
            }
        }
    }

    /// Releases a reserved `jti` (its entries were not stored; the transmitter retries).
    fn release(&self, key: &(String, String)) {
        self.replays.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    fn note(&self, issuer: Option<&str>, f: impl FnOnce(&mut Seen)) {
        if let Some(t) = issuer.and_then(|i| self.transmitters.get(i)) {
            f(&mut t.seen.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    /// `GET /v1/ssf/status`'s body.
    fn status(&self) -> Value {
        let mut list: Vec<Value> = self
            .transmitters
            .iter()
            .map(|(issuer, t)| {
                let s = t.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
                json!({
                    "issuer": issuer,
                    "keys": t.keys.keys().len(),
                    "last_event": s.last_event.map(|(at, e, jti)| json!({"at_ms": at, "event": e.label(), "jti": jti})),
                    "verification": s.verification.map(|(at, state)| json!({"at_ms": at, "state": state})),
                    "stream": s.stream.map(|(at, status, reason)| json!({"at_ms": at, "status": status, "reason": reason})),
                    "counts": {"accepted": s.accepted, "ignored": s.ignored, "refused": s.refused},
                })
            })
            .collect();
        list.sort_by(|a, b| a["issuer"].as_str().cmp(&b["issuer"].as_str()));
        let poll = self.poll.as_ref().map(|p| {
            let p = p.lock().unwrap_or_else(|p| p.into_inner()).clone();
            json!({
                "polling": p.polling,
                "received": p.received,
                "last_ok_ms": p.last_ok_ms,
                "last_error": p.last_error.map(|(at, e)| json!({"at_ms": at, "error": e})),
            })
        });
        json!({ "transmitters": list, "poll": poll })
    }
}

/// RFC 8935 §2.3's error body.
fn refusal(status: StatusCode, err: &str, description: Option<&str>) -> Response {
    let body = match description {
        Some(d) => json!({"err": err, "description": d}),
        None => json!({"err": err}),
    };
    (status, [(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

/// The door's state: the admin API's core, and the receiver (`None`: no transmitter).
#[derive(Clone)]
pub(crate) struct SsfDoor {
    api: AdminState,
    ssf: Option<Arc<Ssf>>,
}

/// `POST /v1/ssf/events` (push token, not the admin token) and `GET /v1/ssf/status` (scope
/// `read`).
pub(crate) fn routes(api: AdminState, ssf: Option<Arc<Ssf>>) -> axum::Router {
    let auth = axum::middleware::from_fn_with_state(api.clone(), crate::api::auth);
    let door = SsfDoor { api, ssf };
    let status = axum::Router::new()
        .route("/v1/ssf/status", axum::routing::get(status))
        .route_layer(auth)
        .with_state(door.clone());
    axum::Router::new().route("/v1/ssf/events", axum::routing::post(push)).with_state(door).merge(status)
}

async fn status(State(door): State<SsfDoor>) -> Result<Response, ApiError> {
    match door.ssf {
        Some(ssf) => Ok(axum::Json(ssf.status()).into_response()),
        None => Ok(axum::Json(json!({"transmitters": []})).into_response()),
    }
}

/// `POST /v1/ssf/events` (RFC 8935).
async fn push(
    State(door): State<SsfDoor>,
    caller: Caller,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let SsfDoor { api: s, ssf } = door;
    let Some(ssf) = ssf else {
        return ApiError::status(
            StatusCode::NOT_FOUND,
            "no SSF transmitter is configured (--ssf-transmitter)",
        )
        .into_response();
    };
    let count =
        |e: Event, result: &str| s.metrics.ssf_events_total.with_label_values(&[e.label(), result]).inc();
    // The push token. Wrong ones count towards the same hold as the admin API's.
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ip = caller.remote.parse::<std::net::SocketAddr>().ok().map(|a| a.ip());
    let mono = s.log.clock().mono();
    if let (Some(_), Some(ip)) = (presented, ip) {
        if let Some(wait) = s.holds.held(ip, mono) {
            s.metrics.admin_refused_total.with_label_values(&["held"]).inc();
            let retry = wait.as_secs().max(1).to_string();
            return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, retry)]).into_response();
        }
    }
    if !presented.is_some_and(|p| ssf.push_token_ok(p)) {
        if let (Some(_), Some(ip)) = (presented, ip) {
            s.holds.wrong(ip, mono);
        }
        s.metrics.admin_refused_total.with_label_values(&["unauthorized"]).inc();
        let mut r = refusal(StatusCode::UNAUTHORIZED, "authentication_failed", None);
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return r;
    }
    let media = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = media.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/secevent+jwt") {
        count(Event::Other, "refused");
        let d = "Content-Type must be application/secevent+jwt (RFC 8935)";
        return refusal(StatusCode::BAD_REQUEST, "invalid_request", Some(d));
    }
    let body = match crate::api::body_bytes(&s, body, MAX_SET_BYTES).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let Ok(token) = std::str::from_utf8(&body) else {
        count(Event::Other, "refused");
        return refusal(StatusCode::BAD_REQUEST, "invalid_request", Some("the body is not UTF-8"));
    };
    match ssf.ingest(&s, token.trim(), &caller.remote, None).await {
        Ingested::Accepted => StatusCode::ACCEPTED.into_response(),
        Ingested::Refused(e) => refusal(StatusCode::BAD_REQUEST, e.code.as_str(), Some(&e.description)),
        Ingested::Unavailable(e) => e.into_response(),
    }
}

/// What became of one SET.
#[derive(Debug)]
pub(crate) enum Ingested {
    /// Stored durably, recorded (verification, stream status), ignored by the table, or a
    /// replay of one accepted before: acknowledge it.
    Accepted,
    /// Refused: nothing stored; tell the transmitter why.
    Refused(Refused),
    /// Valid, but the store could not commit it: do not acknowledge (the transmitter retries).
    Unavailable(ApiError),
}

impl Ssf {
    /// Validates one SET, stores what it asks for and records what it reports: the one path
    /// of pushed and polled SETs alike. `expected_jti`: the `jti` a poll answer filed it under.
    pub(crate) async fn ingest(
        &self,
        s: &AdminState,
        token: &str,
        remote: &str,
        expected_jti: Option<&str>,
    ) -> Ingested {
        let count =
            |e: Event, result: &str| s.metrics.ssf_events_total.with_label_values(&[e.label(), result]).inc();
        let now_ms = s.log.clock().unix_ms();
        let now = now_ms / 1000;
        let (issuer, verdict) = self.validate(token, now).await;
        let verdict = verdict.and_then(|j| match expected_jti {
            Some(jti) if jti != j.jti => {
                Err(Refused::new(ErrCode::Request, "the SET's `jti` is not the one it was delivered under"))
            }
            _ => Ok(j),
        });
        let judged = match verdict {
            Ok(j) => j,
            Err(e) => {
                count(Event::Other, "refused");
                self.note(issuer, |seen| seen.refused += 1);
                tracing::warn!(issuer = issuer.unwrap_or("-"), error = %e, %remote, "SET refused");
                return Ingested::Refused(e);
            }
        };
        let issuer = issuer.unwrap_or_default().to_owned();
        let key = (issuer.clone(), judged.jti.clone());
        match self.reserve(&key, now) {
            Ok(true) => {}
            Ok(false) => {
                // A replay (the transmitter did not see our acknowledgement): stored once.
                count(judged.event, "ignored");
                self.note(Some(&issuer), |seen| seen.ignored += 1);
                tracing::info!(%issuer, jti = %judged.jti, "SET replayed; already accepted");
                return Ingested::Accepted;
            }
            Err(e) => {
                return Ingested::Unavailable(ApiError::status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    e.description,
                ))
            }
        }
        let event = judged.event;
        let revocations = match judged.effect {
            Effect::Revoke(r) => r,
            other => {
                let reports = matches!(event, Event::Verification | Event::StreamUpdated);
                self.note(Some(&issuer), |seen| {
                    match other {
                        Effect::Verification(state) => seen.verification = Some((now_ms, state)),
                        Effect::StreamUpdated(status, reason) => seen.stream = Some((now_ms, status, reason)),
                        _ => {}
                    }
                    seen.last_event = Some((now_ms, event, judged.jti.clone()));
                    if reports {
                        seen.accepted += 1;
                    } else {
                        seen.ignored += 1;
                    }
                });
                count(event, if reports { "accepted" } else { "ignored" });
                return Ingested::Accepted;
            }
        };
        let entries = revocations
            .into_iter()
            .map(|revocation| NewEntry {
                revocation,
                expires_at: now + s.max_token_ttl.as_secs(),
                reason: Some(format!("Shared Signals {}", event.label())),
                created_at_ms: now_ms,
                by: None,
            })
            .collect();
        let act = crate::api::Act {
            by: format!("ssf:{issuer}").into(),
            remote: remote.to_owned(),
            action: AUDIT_ACTION,
            target: format!("set {} {}", event.label(), judged.jti),
            status: StatusCode::ACCEPTED.as_u16(),
        };
        match store_revocations(s, entries, false, act).await {
            Ok(stored) => {
                count(event, "accepted");
                self.note(Some(&issuer), |seen| {
                    seen.accepted += 1;
                    seen.last_event = Some((now_ms, event, judged.jti.clone()));
                });
                let seqs: Vec<u64> = stored.iter().map(|e| e.seq).collect();
                tracing::info!(?seqs, %issuer, event = event.label(), "SET stored");
                Ingested::Accepted
            }
            Err(e) => {
                self.release(&key);
                Ingested::Unavailable(e.response("the event"))
            }
        }
    }
}
