//! The admin HTTP API (docs/api.md): revocations with receipts, agents, metrics and
//! health; and the core every door that arrives over HTTP builds on: [`AdminState`],
//! [`ApiError`], body limits, the admin-token check and [`store_revocations`], the one way any
//! door stores revocations.
//!
//! Handlers parse request bodies themselves so that every bad input becomes a 400 with the
//! offending field; internals (store errors) are logged, never shown to clients. This module
//! knows no door: `router.rs` puts the doors' routes beside these.

pub(crate) mod feed;
pub(crate) mod holds;
pub(crate) mod server;

use crate::links::hub::{Hub, Level};
use crate::links::registry::Registry;
use crate::log::{AppendError, Log};
use crate::metrics::Metrics;
use crate::operators::{Identity, Scope};
use crate::store::StoreError;
use crate::store::{AuditRecord, NewEntry};
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use revmesh_protocol::model::{validate_id, MAX_REASON_BYTES, NEVER};
use revmesh_protocol::{Entry, Kind, Revocation};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How far ahead of the authority's clock a provider's clock may run for a `subject`
/// revocation without `issued_before` to still cover the tokens minted just before it.
pub const SUBJECT_SKEW_SECS: u64 = 5;

/// Largest accepted request body holding one object.
pub const MAX_BODY: usize = 64 << 10;
/// Largest accepted body holding an array of revocations.
pub const MAX_BULK_BODY: usize = 2 << 20;
/// Most revocations in one array (one commit).
pub const MAX_BULK: usize = 10_000;
/// Longest `?wait=all` wait.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Shared state of the admin API.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The live log.
    pub log: Arc<Log>,
    /// This authority's links (for its lag metrics).
    pub hub: Arc<Hub>,
    /// Which agents exist and where their cursors are (this replica's, or every replica's).
    pub registry: Registry,
    /// Metrics.
    pub metrics: Metrics,
    /// Who may do what on /v1/* (the admin token's operator among them).
    pub operators: Arc<crate::operators::Operators>,
    /// Addresses that presented too many wrong tokens.
    pub holds: Arc<holds::Holds>,
    /// Default horizon for non-jti expiry.
    pub max_token_ttl: Duration,
    /// Limit on reading a request body.
    pub body_timeout: Duration,
    /// False once shutdown began.
    pub ready: Arc<AtomicBool>,
    /// Ends long-lived responses (the change feed) at shutdown.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Interval of the change feed's heartbeat comments.
    pub heartbeat: Duration,
    /// Where a backup is staged before it is sent (the data dir).
    pub backup_dir: std::path::PathBuf,
}

/// Why revocations were not stored: nothing of them is; the caller may retry.
#[derive(Debug)]
pub(crate) struct Unstored(Arc<AppendError>);

impl Unstored {
    /// The 503 a door answers (its own words for what was not stored).
    pub(crate) fn response(&self, what: &str) -> ApiError {
        let why = match &*self.0 {
            AppendError::Closed => "authority is shutting down".to_owned(),
            AppendError::Timeout(_) => {
                format!("the store did not answer in time; {what} was not stored; retry")
            }
            AppendError::Store(_) => format!("{what} could not be stored durably; retry"),
        };
        ApiError::status(StatusCode::SERVICE_UNAVAILABLE, why)
    }
}

/// Who is asking, from where: what attribution (`by`) and the audit trail record. Extracted
/// from the request (the operator [`auth`] found, the peer address); never fails.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The operator's name (`-` when unauthenticated, as on the OIDC logout door).
    pub name: Arc<str>,
    /// The peer address.
    pub remote: String,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let name = parts.extensions.get::<Identity>().map_or_else(|| Arc::from("-"), |i| i.name.clone());
        let remote = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or_else(String::new, |c| c.0.to_string());
        Ok(Caller { name, remote })
    }
}

/// What a request that stores revocations is, for the audit trail: the action, what else it
/// names beyond its entries' seqs, the status answered once stored, and who the entries are by.
#[derive(Debug, Clone)]
pub(crate) struct Act {
    /// `by` of each entry: the operator, `oidc:<issuer>`, `rfc7009:<operator>`.
    pub by: Arc<str>,
    /// The caller's address.
    pub remote: String,
    /// `revoke`, `revoke_bulk`, `withdraw`, `rfc7009_revoke`, `oidc_logout`.
    pub action: &'static str,
    /// Beyond the entries' seqs (e.g. the withdrawn seq).
    pub target: String,
    /// The status answered once stored.
    pub status: u16,
}

impl Act {
    /// An act of `caller` under its own name.
    pub(crate) fn by(caller: &Caller, action: &'static str, status: StatusCode) -> Self {
        Act {
            by: caller.name.clone(),
            remote: caller.remote.clone(),
            action,
            target: String::new(),
            status: status.as_u16(),
        }
    }
}

/// Stores `entries` durably in one commit, all or none, with the audit record of `act` in the
/// same commit: the one path by which every door (the admin API, OIDC logout, RFC 7009)
/// stores revocations. Resolves with their seqs once the commit is on stable storage; a
/// failure is logged here, once, and nothing is stored (neither entries nor record).
/// `waited`: the caller will wait for an applied-level receipt.
pub(crate) async fn store_revocations(
    s: &AdminState,
    mut entries: Vec<NewEntry>,
    waited: bool,
    act: Act,
) -> Result<Vec<Entry>, Unstored> {
    for e in &mut entries {
        e.by = Some(act.by.clone());
    }
    let record = AuditRecord {
        id: 0,
        at_ms: s.log.clock().unix_ms(),
        operator: act.by.to_string(),
        remote: act.remote,
        action: act.action.to_owned(),
        target: act.target,
        status: act.status,
    };
    let audit = crate::store::AuditDraft { record, entries: None };
    s.log.append_all(entries, waited, Some(audit)).await.map_err(|e| {
        match &*e {
            AppendError::Closed => {}
            AppendError::Timeout(t) => tracing::error!(timeout = ?t, "revocations not stored in time"),
            AppendError::Store(err) => tracing::error!(error = %err, "revocations not stored"),
        }
        Unstored(e)
    })
}

/// An API error: status, message and the field at fault.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    field: Option<std::borrow::Cow<'static, str>>,
}

impl ApiError {
    /// A 400 naming `field`.
    pub fn bad(field: &'static str, error: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, error: error.into(), field: Some(field.into()) }
    }
    /// The same error about element `index` of a bulk array (`[17].expires_at`).
    fn in_element(mut self, index: usize) -> Self {
        let inner = self.field.take().filter(|f| f != "body");
        self.field = Some(match inner {
            Some(f) => format!("[{index}].{f}").into(),
            None => format!("[{index}]").into(),
        });
        self.error = format!("element {index}: {}", self.error);
        self
    }
    /// An error with a status and no field.
    pub fn status(status: StatusCode, error: impl Into<String>) -> Self {
        Self { status, error: error.into(), field: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.field {
            Some(f) => json!({"error": self.error, "field": f}),
            None => json!({"error": self.error}),
        };
        (self.status, Json(body)).into_response()
    }
}

/// The admin API's routes (the doors' are added by `router.rs`); testable without a socket.
pub(crate) fn routes(state: AdminState) -> Router {
    let v1 = Router::new()
        .route("/v1/revocations", post(create).get(list))
        .route("/v1/revocations/{seq}", get(one).delete(withdraw))
        .route("/v1/agents", get(agents))
        .route("/v1/backup", get(backup))
        .route("/v1/agents/{id}", axum::routing::delete(forget))
        .route("/v1/status", get(status))
        .route("/v1/audit", get(audit))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .merge(v1)
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// The scope `method` on the route `path` (as the router matched it) needs: the one table of
/// who may do what (docs/api.md, "Scopes"). `None`: no such admin endpoint.
pub(crate) fn scope_for(method: &axum::http::Method, path: &str) -> Option<Scope> {
    use axum::http::Method;
    Some(match (method, path) {
        (&Method::POST, "/v1/revocations" | "/v1/oauth2/revoke") => Scope::Revoke,
        (
            &Method::GET,
            "/v1/revocations"
            | "/v1/revocations/{seq}"
            | "/v1/revocations/stream"
            | "/v1/agents"
            | "/v1/status"
            | "/v1/ssf/status",
        ) => Scope::Read,
        (&Method::DELETE, "/v1/revocations/{seq}") => Scope::Withdraw,
        (&Method::DELETE, "/v1/agents/{id}") => Scope::Forget,
        // A backup holds the audit trail.
        (&Method::GET, "/v1/audit" | "/v1/backup") => Scope::Audit,
        _ => return None,
    })
}

/// The client certificate an admin connection presented (mutual TLS with
/// `--admin-client-ca`), put in each request's extensions by the server.
#[derive(Debug, Clone)]
pub(crate) struct PeerCert(pub Arc<rustls::pki_types::CertificateDer<'static>>);

/// Authenticates the operator (bearer token, else client certificate) and checks that it has
/// the scope the route needs: 401 without a valid credential, 403 naming the scope without
/// it. The operator's [`Identity`] goes into the request's extensions for the handler
/// (attribution, audit). `route_layer` it on any router of admin endpoints.
pub(crate) async fn auth(State(s): State<AdminState>, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let peer = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0);
    let path = req.uri().path().to_owned();
    let now = s.log.clock().mono();
    if let (Some(_), Some(p)) = (presented, peer) {
        if let Some(wait) = s.holds.held(p.ip(), now) {
            // Too many wrong tokens from this address: this one is not even looked at.
            s.metrics.admin_refused_total.with_label_values(&["held"]).inc();
            log_refusal(
                s.log.clock().unix_ms(),
                peer,
                None,
                &path,
                "too many wrong tokens from this address",
            );
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut r = ApiError::status(
                StatusCode::TOO_MANY_REQUESTS,
                "too many wrong tokens from this address; retry after the time in Retry-After",
            )
            .into_response();
            r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs.max(1)));
            return r;
        }
    }
    let identity = match presented {
        Some(p) => {
            let found = s.operators.by_token(p);
            if let (None, Some(peer)) = (&found, peer) {
                s.holds.wrong(peer.ip(), now);
            }
            found
        }
        None => req.extensions().get::<PeerCert>().and_then(|c| s.operators.by_cert(&c.0)),
    };
    let Some(identity) = identity else {
        s.metrics.admin_refused_total.with_label_values(&["unauthorized"]).inc();
        log_refusal(s.log.clock().unix_ms(), peer, None, &path, "missing or invalid credentials");
        return ApiError::status(StatusCode::UNAUTHORIZED, "missing or invalid admin token").into_response();
    };
    let matched = req.extensions().get::<axum::extract::MatchedPath>().map(|m| m.as_str().to_owned());
    let needed = matched.as_deref().and_then(|m| scope_for(req.method(), m));
    match needed {
        Some(scope) if identity.scopes.has(scope) => {
            req.extensions_mut().insert(identity);
            next.run(req).await
        }
        _ => {
            let scope = needed.map_or("unknown", Scope::as_str);
            s.metrics.admin_refused_total.with_label_values(&["forbidden"]).inc();
            log_refusal(
                s.log.clock().unix_ms(),
                peer,
                Some(&identity.name),
                &path,
                "operator lacks the scope",
            );
            let body = json!({"error": "forbidden", "scope": scope,
                "message": format!("operator `{}` does not have the `{scope}` scope", identity.name)});
            (StatusCode::FORBIDDEN, Json(body)).into_response()
        }
    }
}

/// Logs a refused admin request with where it came from, at most once a second: a flood of
/// refusals is counted (`revmesh_authority_admin_refused_total`), not written line by line.
fn log_refusal(
    now_ms: u64,
    peer: Option<std::net::SocketAddr>,
    operator: Option<&str>,
    path: &str,
    why: &str,
) {
    static LAST_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static SUPPRESSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let last = LAST_MS.load(Ordering::Relaxed);
    if now_ms.saturating_sub(last) < 1_000
        || LAST_MS.compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed).is_err()
    {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let also = SUPPRESSED.swap(0, Ordering::Relaxed);
    let remote = peer.map(|p| p.to_string()).unwrap_or_default();
    let operator = operator.unwrap_or("-");
    tracing::warn!(%remote, operator, path, refused_since_last_line = also, "admin request refused: {why}");
}

async fn readyz(State(s): State<AdminState>) -> Response {
    if !s.ready.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else if !s.log.store_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "store unavailable: revocations cannot be stored\n").into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    s.hub.refresh_metrics(&s.log);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render()).into_response()
}

fn str_field<'a>(
    obj: &'a serde_json::Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad(field, format!("`{field}` must be a string"))),
    }
}

fn required_id(obj: &serde_json::Map<String, Value>, field: &'static str) -> Result<String, ApiError> {
    let v = str_field(obj, field)?.ok_or_else(|| ApiError::bad(field, format!("`{field}` is required")))?;
    validate_id(field, v).map_err(|e| ApiError::bad(field, e.to_string()))?;
    Ok(v.to_owned())
}

fn time_field(obj: &serde_json::Map<String, Value>, field: &'static str) -> Result<Option<u64>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().filter(|n| *n < 1 << 40).map(Some).ok_or_else(|| {
            ApiError::bad(field, format!("`{field}` must be unix seconds (a non-negative integer)"))
        }),
    }
}

const KNOWN: &[&str] = &["kind", "jti", "iss", "sub", "kid", "sid", "issued_before", "expires_at", "reason"];

/// Turns a request body into an entry to append (the body forms of docs/api.md).
pub fn parse_revocation(body: &[u8], max_token_ttl: Duration, now: u64) -> Result<NewEntry, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad("body", format!("body is not valid JSON: {e}")))?;
    revocation_from(value, max_token_ttl, now)
}

/// Revocations for `POST /v1/revocations`: one object, or an array of up to
/// [`MAX_BULK`] of them (all or nothing: the first bad element is named, `[17].expires_at`).
pub fn parse_revocations(body: &[u8], max_token_ttl: Duration, now: u64) -> Result<Bulk, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad("body", format!("body is not valid JSON: {e}")))?;
    let Value::Array(items) = value else {
        if body.len() > MAX_BODY {
            return Err(ApiError::status(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a single revocation is at most {MAX_BODY} bytes"),
            ));
        }
        return revocation_from(value, max_token_ttl, now).map(Bulk::One);
    };
    if items.is_empty() || items.len() > MAX_BULK {
        return Err(ApiError::bad("body", format!("an array holds 1 to {MAX_BULK} revocations")));
    }
    let entries = items
        .into_iter()
        .enumerate()
        .map(|(i, v)| revocation_from(v, max_token_ttl, now).map_err(|e| e.in_element(i)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Bulk::Many(entries))
}

/// What a revocation request body holds.
#[derive(Debug)]
pub enum Bulk {
    /// One object.
    One(NewEntry),
    /// An array (one commit).
    Many(Vec<NewEntry>),
}

fn revocation_from(value: Value, max_token_ttl: Duration, now: u64) -> Result<NewEntry, ApiError> {
    let Value::Object(obj) = value else {
        return Err(ApiError::bad("body", "body must be a JSON object"));
    };
    if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        let field: &'static str = "body";
        return Err(ApiError::bad(field, format!("unknown field `{k}`")));
    }
    let kind = str_field(&obj, "kind")?.ok_or_else(|| ApiError::bad("kind", "`kind` is required"))?;
    let ttl = max_token_ttl.as_secs();
    let expires_at = time_field(&obj, "expires_at")?;
    let iss = match str_field(&obj, "iss")? {
        Some(i) => {
            validate_id("iss", i).map_err(|e| ApiError::bad("iss", e.to_string()))?;
            Some(i.to_owned())
        }
        None => None,
    };
    if iss.is_some() && kind == "key" {
        return Err(ApiError::bad("iss", "a `key` revocation takes no `iss` (a `kid` names one key)"));
    }
    let (revocation, default_expiry) = match kind {
        "jti" => {
            let jti = required_id(&obj, "jti")?;
            // A token's lifetime is bounded by --max-token-ttl at every agent (a longer one is
            // refused, `INVALID reason=lifetime`), so the revoked token has expired by then.
            (Revocation::Jti { jti, iss }, now + ttl)
        }
        "subject" => {
            let sub = required_id(&obj, "sub")?;
            // `iat` comes from the provider's clock: by default tokens minted up to
            // SUBJECT_SKEW_SECS after this moment (by ours) are covered too, so a provider whose
            // clock runs a few seconds ahead cannot mint one that slips past (docs/api.md).
            let issued_before = time_field(&obj, "issued_before")?.unwrap_or(now + SUBJECT_SKEW_SECS);
            (Revocation::subject(sub, issued_before, iss), issued_before.max(now) + ttl)
        }
        // No default expiry: whoever holds a leaked key mints fresh tokens at will. Kept until
        // withdrawn (DELETE /v1/revocations/{seq}) or until an explicit `expires_at`.
        "key" => (Revocation::Key { kid: required_id(&obj, "kid")? }, NEVER),
        "session" => (Revocation::session(required_id(&obj, "sid")?, iss), now + ttl),
        other => {
            return Err(ApiError::bad(
                "kind",
                format!("unknown kind `{other}` (jti, subject, key or session)"),
            ));
        }
    };
    let expires_at = expires_at.unwrap_or(default_expiry);
    if expires_at <= now {
        return Err(ApiError::bad(
            "expires_at",
            "`expires_at` is in the past: such tokens are already expired",
        ));
    }
    let reason = str_field(&obj, "reason")?.map(str::to_owned);
    if reason.as_ref().is_some_and(|r| r.len() > MAX_REASON_BYTES) {
        return Err(ApiError::bad("reason", format!("`reason` is longer than {MAX_REASON_BYTES} bytes")));
    }
    Ok(NewEntry { revocation, expires_at, reason, created_at_ms: 0, by: None })
}

/// JSON form of an entry.
pub fn entry_json(e: &crate::store::Logged, log_id: &str) -> Value {
    let mut v = json!({
        "seq": e.seq,
        "log_id": log_id,
        "kind": e.revocation.kind().as_str(),
        "created_at_ms": e.created_at_ms,
        "expires_at": e.expires_at,
        "reason": e.reason,
        "by": e.by.as_deref(),
    });
    if let Value::Object(m) = &mut v {
        match &e.revocation {
            Revocation::Jti { jti, iss } => {
                m.insert("jti".into(), json!(jti));
                m.insert("iss".into(), json!(iss));
            }
            Revocation::Subject { sub, issued_before } => {
                m.insert("sub".into(), json!(sub));
                m.insert("issued_before".into(), json!(issued_before));
            }
            Revocation::Key { kid } => {
                m.insert("kid".into(), json!(kid));
            }
            Revocation::Session { sid } => {
                m.insert("sid".into(), json!(sid));
            }
            Revocation::ScopedSubject(x) => {
                m.insert("sub".into(), json!(x.id));
                m.insert("issued_before".into(), json!(x.issued_before));
                m.insert("iss".into(), json!(x.iss));
            }
            Revocation::ScopedSession(x) => {
                m.insert("sid".into(), json!(x.id));
                m.insert("iss".into(), json!(x.iss));
            }
            Revocation::Withdrawal(w) => {
                let revmesh_protocol::model::Withdrawn { seq, kind, id, iss } = &**w;
                m.insert("withdraws".into(), json!(seq));
                m.insert("withdrawn_kind".into(), json!(kind.as_str()));
                let field = match kind {
                    Kind::Jti => "jti",
                    Kind::Subject => "sub",
                    Kind::Key => "kid",
                    Kind::Session | Kind::Withdrawal => "sid",
                };
                m.insert(field.into(), json!(id));
                if iss.is_some() {
                    m.insert("iss".into(), json!(iss));
                }
            }
        }
    }
    v
}

#[derive(Debug, Deserialize)]
struct CreateQuery {
    wait: Option<String>,
    timeout_ms: Option<u64>,
}

impl CreateQuery {
    /// The receipt level `?wait=` asks for, if any.
    fn level(&self) -> Result<Option<Level>, ApiError> {
        match self.wait.as_deref() {
            None => Ok(None),
            Some("all") => Ok(Some(Level::Durable)),
            Some("applied") => Ok(Some(Level::Applied)),
            Some(_) => Err(ApiError::bad("wait", "`wait` must be `all` or `applied`")),
        }
    }
}

/// Reads a request body within the body limit and the body timeout.
pub(crate) async fn body_bytes(
    s: &AdminState,
    body: axum::body::Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    use crate::api::server::{read_body, BodyError};
    read_body(body, limit, s.body_timeout).await.map_err(|e| {
        let (status, error) = match e {
            BodyError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, format!("body larger than {limit} bytes")),
            BodyError::TimedOut => {
                s.metrics.admin_shed_total.with_label_values(&["body_timeout"]).inc();
                (StatusCode::REQUEST_TIMEOUT, format!("body not received within {:?}", s.body_timeout))
            }
            BodyError::Broken => (StatusCode::BAD_REQUEST, "body could not be read".to_owned()),
        };
        ApiError { status, error, field: Some("body".into()) }
    })
}

async fn create(
    State(s): State<AdminState>,
    caller: Caller,
    query: Result<Query<CreateQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let body = body_bytes(&s, body, MAX_BULK_BODY).await?;
    let Query(q) = query.map_err(|e| ApiError::bad("query", e.body_text()))?;
    let wait = q.level()?;
    let now_ms = s.log.clock().unix_ms();
    let parsed = parse_revocations(&body, s.max_token_ttl, now_ms / 1000)?;
    let (bulk, mut entries) = match parsed {
        Bulk::One(e) => (false, vec![e]),
        Bulk::Many(v) => (true, v),
    };
    for e in &mut entries {
        e.created_at_ms = now_ms;
    }
    let action = if bulk { "revoke_bulk" } else { "revoke" };
    let act = Act::by(&caller, action, StatusCode::CREATED);
    let stored = store_revocations(&s, entries, wait == Some(Level::Applied), act)
        .await
        .map_err(|e| e.response("the revocation"))?;
    let (Some(first), Some(last)) = (stored.first(), stored.last()) else {
        return Err(ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, "nothing was stored"));
    };
    let mut body = receipt_body(&s, last.seq, wait, q.timeout_ms).await;
    if let Value::Object(m) = &mut body {
        if bulk {
            m.insert("first_seq".into(), first.seq.into());
            m.insert("last_seq".into(), last.seq.into());
        } else {
            m.insert("seq".into(), first.seq.into());
        }
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// The receipt part of an answer for entries stored up to `seq`: who applied them, waited for
/// up to the timeout when `wait` asks for a level.
async fn receipt_body(s: &AdminState, seq: u64, wait: Option<Level>, timeout_ms: Option<u64>) -> Value {
    let timeout = Duration::from_millis(timeout_ms.unwrap_or(10_000)).min(MAX_WAIT);
    let level = wait.unwrap_or(Level::Durable);
    let timeout = if wait.is_some() { timeout } else { Duration::ZERO };
    // The entries are durable from here on: whatever happens to the receipt, the answer is
    // 201 with their seqs. A 503 now would tell a caller that retries on 503 to store them twice.
    match s.registry.receipt(seq, timeout, level).await {
        Ok(receipt) => json!({
            "log_id": s.log.log_id().to_string(),
            "level": level.as_str(),
            "acked": receipt.acked,
            "pending": receipt.pending,
            "disconnected": receipt.disconnected,
        }),
        Err(e) => {
            tracing::warn!(error = %e, seq = seq, "stored, but the receipt could not be computed");
            json!({
                "log_id": s.log.log_id().to_string(),
                "level": level.as_str(),
                "receipt": "unavailable",
                "receipt_error": "agent cursors could not be read; the revocation is stored: \
                                  do not resubmit, follow it with GET /v1/revocations/{seq}",
            })
        }
    }
}

/// `DELETE /v1/revocations/{seq}`: withdraws a revocation, the one way to lift it before it
/// expires. Appends a `withdrawal` entry naming the seq and the revoked identifier, delivered
/// and receipted like any entry: at every agent it lifts that identifier, also where the agent
/// carries it from an earlier log. 404 for an unknown (or expired) seq; a second withdrawal of
/// the same seq answers 200 with the first one's seq.
async fn withdraw(
    State(s): State<AdminState>,
    caller: Caller,
    Path(seq): Path<String>,
    query: Result<Query<CreateQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let seq: u64 = seq.parse().map_err(|_| ApiError::bad("seq", "`seq` must be a number"))?;
    let Query(q) = query.map_err(|e| ApiError::bad("query", e.body_text()))?;
    let wait = q.level()?;
    let body = body_bytes(&s, body, MAX_BODY).await?;
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let v: Value =
            serde_json::from_slice(&body).map_err(|e| ApiError::bad("body", format!("invalid JSON: {e}")))?;
        let Value::Object(obj) = v else { return Err(ApiError::bad("body", "body must be a JSON object")) };
        if let Some(k) = obj.keys().find(|k| k.as_str() != "reason") {
            return Err(ApiError::bad("body", format!("unknown field `{k}` (only `reason`)")));
        }
        let reason = str_field(&obj, "reason")?.map(str::to_owned);
        if reason.as_ref().is_some_and(|r| r.len() > MAX_REASON_BYTES) {
            return Err(ApiError::bad("reason", format!("`reason` is longer than {MAX_REASON_BYTES} bytes")));
        }
        reason
    };
    let target = s.log.get(seq).ok_or_else(|| {
        ApiError::status(StatusCode::NOT_FOUND, "no such entry (never written, or expired and compacted)")
    })?;
    let log_id = s.log.log_id().to_string();
    if let Some(earlier) = s.log.withdrawn_by(seq) {
        let mut body = receipt_body(&s, earlier, wait, q.timeout_ms).await;
        if let Value::Object(m) = &mut body {
            m.insert("seq".into(), earlier.into());
            m.insert("withdraws".into(), seq.into());
            m.insert("already_withdrawn".into(), true.into());
        }
        return Ok((StatusCode::OK, Json(body)).into_response());
    }
    let Some(revocation) = target.revocation.withdrawal(seq) else {
        return Err(ApiError::bad("seq", "a withdrawal cannot be withdrawn; revoke again instead"));
    };
    let lifts = s.log.same_target(seq, &target.revocation);
    let entry = NewEntry {
        revocation,
        expires_at: target.expires_at,
        reason,
        created_at_ms: s.log.clock().unix_ms(),
        by: None,
    };
    let act =
        Act { target: format!("withdraws seq {seq}"), ..Act::by(&caller, "withdraw", StatusCode::CREATED) };
    let stored = store_revocations(&s, vec![entry], wait == Some(Level::Applied), act)
        .await
        .map_err(|e| e.response("the withdrawal"))?;
    let Some(w) = stored.first() else {
        return Err(ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, "nothing was stored"));
    };
    tracing::info!(seq = w.seq, withdraws = seq, also = ?lifts, log = %log_id, "revocation withdrawn");
    let mut body = receipt_body(&s, w.seq, wait, q.timeout_ms).await;
    if let Value::Object(m) = &mut body {
        m.insert("seq".into(), w.seq.into());
        m.insert("withdraws".into(), seq.into());
        // Earlier entries revoking the same identifier: agents lift the identifier, so these
        // are lifted with it.
        m.insert("also_lifts".into(), json!(lifts));
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /v1/backup`: a consistent copy of the embedded store, written while serving, as the
/// body (`revmesh-authority backup FILE` saves it; `restore` installs it). 501 on PostgreSQL,
/// which is backed up with `pg_dump`.
async fn backup(State(s): State<AdminState>) -> Result<Response, ApiError> {
    // One at a time: each holds a copy of the log on disk and in memory.
    static RUNNING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let Ok(_one) = RUNNING.try_lock() else {
        return Err(ApiError::status(
            StatusCode::CONFLICT,
            "a backup is already being taken; retry when it is done",
        ));
    };
    let staged = s.backup_dir.join(format!("backup-{:016x}.redb.partial", rand::random::<u64>()));
    let result = s.log.backup(staged.clone()).await;
    let read = match &result {
        Ok(Some(_)) => Some(tokio::fs::read(&staged).await),
        _ => None,
    };
    let _ = tokio::fs::remove_file(&staged).await;
    let info = match result {
        Ok(Some(info)) => info,
        Ok(None) => {
            return Err(ApiError::status(
                StatusCode::NOT_IMPLEMENTED,
                "this store is backed up with PostgreSQL's own tools (pg_dump); see docs/operations.md",
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "backup failed");
            return Err(ApiError::status(StatusCode::SERVICE_UNAVAILABLE, format!("backup failed: {e}")));
        }
    };
    let bytes = match read {
        Some(Ok(b)) => b,
        Some(Err(e)) => {
            return Err(ApiError::status(StatusCode::SERVICE_UNAVAILABLE, format!("backup failed: {e}")))
        }
        None => return Err(ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, "backup not written")),
    };
    tracing::info!(log = %info.log_id, head = info.head, entries = info.entries, bytes = bytes.len(), "backup taken");
    let mut r = (StatusCode::OK, bytes).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/octet-stream"));
    for (name, value) in
        [("x-revmesh-log-id", info.log_id.to_string()), ("x-revmesh-head", info.head.to_string())]
    {
        if let Ok(v) = header::HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    Ok(r)
}

/// The registry could not be read (a shared cursor store that is down): logged, and a 503.
fn cursors(e: StoreError) -> ApiError {
    tracing::warn!(error = %e, "reading agent cursors failed");
    ApiError::status(StatusCode::SERVICE_UNAVAILABLE, "agent cursors unavailable; retry")
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn list(
    State(s): State<AdminState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad("query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100).min(1000);
    let log_id = s.log.log_id().to_string();
    let entries: Vec<Value> =
        s.log.list(q.after.unwrap_or(0), limit).iter().map(|e| entry_json(e, &log_id)).collect();
    Ok(Json(json!({"log_id": log_id, "head": s.log.view().head, "entries": entries})))
}

async fn one(State(s): State<AdminState>, Path(seq): Path<String>) -> Result<Json<Value>, ApiError> {
    let seq: u64 = seq.parse().map_err(|_| ApiError::bad("seq", "`seq` must be a number"))?;
    let log_id = s.log.log_id().to_string();
    let e = s.log.get(seq).ok_or_else(|| {
        ApiError::status(StatusCode::NOT_FOUND, "no such entry (never written, or expired and compacted)")
    })?;
    let mut v = entry_json(&e, &log_id);
    let states = s.registry.agents().await.map_err(cursors)?.into_iter().map(|r| {
        let state = crate::links::hub::ack_state(seq, r.connected, r.applied_seq);
        (r.id, state)
    });
    let agents: Vec<Value> =
        states.into_iter().map(|(id, state)| json!({"id": id, "state": state})).collect();
    if let Value::Object(m) = &mut v {
        m.insert("agents".into(), Value::Array(agents));
    }
    Ok(Json(v))
}

async fn agents(State(s): State<AdminState>) -> Result<Json<Value>, ApiError> {
    let head = s.log.view().head;
    let rows: Vec<Value> = s
        .registry
        .agents()
        .await
        .map_err(cursors)?
        .into_iter()
        .map(|r| {
            let mut v = json!({"id": r.id, "connected": r.connected, "remote": r.remote,
                "applied_seq": r.applied_seq, "lag": head.saturating_sub(r.applied_seq),
                "last_ack_at": r.last_ack_at, "version": r.version});
            // Which replica holds the link, when replicas share the cursors.
            if let (Value::Object(m), false) = (&mut v, r.replica.is_empty()) {
                m.insert("replica".into(), Value::String(r.replica));
            }
            v
        })
        .collect();
    Ok(Json(Value::Array(rows)))
}

/// `DELETE /v1/agents/{id}`: forgets a departed agent (409 while it is connected). The record
/// in the audit trail is committed before (or, on a shared store, with) the forgetting.
async fn forget(
    State(s): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    use crate::store::Forgotten;
    let record = AuditRecord {
        id: 0,
        at_ms: s.log.clock().unix_ms(),
        operator: caller.name.to_string(),
        remote: caller.remote.clone(),
        action: "forget".into(),
        target: format!("agent {id}"),
        status: StatusCode::NO_CONTENT.as_u16(),
    };
    let audit = crate::store::AuditDraft { record, entries: None };
    let outcome = s.registry.forget(&id, &s.log, audit).await.map_err(cursors)?;
    match outcome {
        Forgotten::Removed => {
            tracing::info!(agent = %id, "agent forgotten");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Forgotten::Connected => Err(ApiError::status(
            StatusCode::CONFLICT,
            format!("agent `{id}` is connected; only a departed agent can be forgotten"),
        )),
        Forgotten::Unknown => Err(ApiError::status(StatusCode::NOT_FOUND, format!("no agent `{id}`"))),
    }
}

/// `GET /v1/audit?after=ID&limit=N`: the audit trail, oldest first; `next` continues it.
async fn audit(
    State(s): State<AdminState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad("query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let after = q.after.unwrap_or(0);
    let records = s.log.audit_after(after, limit).await.map_err(|e| {
        tracing::warn!(error = %e, "reading the audit trail failed");
        ApiError::status(StatusCode::SERVICE_UNAVAILABLE, "the audit trail cannot be read now; retry")
    })?;
    let next = records.last().map_or(after, |r| r.id);
    Ok(Json(json!({"records": records, "next": next})))
}

async fn status(State(s): State<AdminState>) -> Result<Json<Value>, ApiError> {
    let view = s.log.view();
    // (connected, lag) of every agent this authority knows, or every replica's on a shared store.
    let agents: Vec<(bool, u64)> = s
        .registry
        .agents()
        .await
        .map_err(cursors)?
        .iter()
        .map(|r| (r.connected, view.head.saturating_sub(r.applied_seq)))
        .collect();
    let connected = agents.iter().filter(|a| a.0).count();
    let max_lag = agents.iter().filter(|a| a.0).map(|a| a.1).max().unwrap_or(0);
    Ok(Json(json!({
        "log_id": view.log_id.to_string(),
        "head": view.head,
        "floor": view.floor,
        "agents_known": agents.len(),
        "agents_connected": connected,
        "max_lag": max_lag,
        "version": env!("CARGO_PKG_VERSION"),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shared cursor store whose every read fails (a database that went away between the
    /// commit and the receipt).
    struct CursorsDown;
    impl crate::store::CursorStore for CursorsDown {
        fn publish_agents(self: Arc<Self>, _: Vec<crate::store::AgentRow>) -> crate::store::StoreFuture<()> {
            Box::pin(async { Err(StoreError::Unavailable("cursors down")) })
        }
        fn agents(self: Arc<Self>) -> crate::store::StoreFuture<Vec<crate::store::AgentRow>> {
            Box::pin(async { Err(StoreError::Unavailable("cursors down")) })
        }
        fn forget_agent(
            self: Arc<Self>,
            _: String,
            _: crate::store::AuditDraft,
        ) -> crate::store::StoreFuture<crate::store::Forgotten> {
            Box::pin(async { Err(StoreError::Unavailable("cursors down")) })
        }
        fn lease(self: Arc<Self>, _: String, _: std::time::Duration) -> crate::store::StoreFuture<bool> {
            Box::pin(async { Err(StoreError::Unavailable("cursors down")) })
        }
    }

    /// Once a revocation is durable the answer is 201 with its seq, even when the receipt
    /// cannot be computed: a 503 there ("retry") made callers store it twice.
    #[tokio::test]
    async fn a_stored_revocation_is_201_when_its_receipt_is_unavailable() {
        use tower_service::Service;
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            crate::store::RedbStore::open(dir.path(), revmesh_protocol::LogId([7; 16])).expect("store");
        let metrics = Metrics::new().expect("metrics");
        let clock = revmesh_runtime::Clock::system();
        let (log, rx) =
            Log::open_loaded(Arc::new(store), Duration::from_secs(5), metrics.clone(), clock.clone())
                .await
                .expect("log");
        let _writer = Log::start(&log, rx);
        let hub = Arc::new(Hub::new(metrics.clone(), true, clock));
        let state = AdminState {
            log: log.clone(),
            hub: hub.clone(),
            registry: Registry::shared(hub, Arc::new(CursorsDown)),
            metrics,
            operators: Arc::new(
                crate::operators::Operators::load(None, Some(&"t".repeat(32)), &mut Vec::new())
                    .expect("operators"),
            ),
            holds: Arc::default(),
            max_token_ttl: Duration::from_secs(3600),
            body_timeout: Duration::from_secs(5),
            ready: Arc::new(AtomicBool::new(true)),
            shutdown: tokio_util::sync::CancellationToken::new(),
            heartbeat: Duration::from_secs(5),
            backup_dir: dir.path().to_owned(),
        };
        let mut app = routes(state);
        for (uri, body) in [
            ("/v1/revocations?wait=all&timeout_ms=100", r#"{"kind":"session","sid":"s1"}"#),
            ("/v1/revocations", r#"[{"kind":"session","sid":"s2"},{"kind":"key","kid":"k"}]"#),
        ] {
            let req = axum::http::Request::post(uri)
                .header(header::AUTHORIZATION, format!("Bearer {}", "t".repeat(32)))
                .body(axum::body::Body::from(body))
                .expect("request");
            let resp = app.call(req).await.expect("infallible");
            assert_eq!(resp.status(), StatusCode::CREATED, "{uri}");
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16).await.expect("body");
            let v: Value = serde_json::from_slice(&bytes).expect("json");
            assert_eq!(v["receipt"], "unavailable", "{v}");
            assert!(v.get("seq").or(v.get("last_seq")).is_some_and(|s| s.as_u64().is_some()), "{v}");
        }
        assert_eq!(log.view().head, 3, "each revocation stored once");
    }

    fn parse(body: &str) -> Result<NewEntry, (String, String)> {
        parse_revocation(body.as_bytes(), Duration::from_secs(86_400), 1_000)
            .map_err(|e| (e.field.map_or_else(|| "-".to_owned(), |f| f.into_owned()), e.error))
    }

    /// Table of bodies and the field a 400 names.
    #[test]
    fn bad_bodies_name_the_field() {
        let cases = [
            ("not json", "body"),
            ("[1]", "body"),
            (r#"{"jti":"a","expires_at":5000}"#, "kind"),
            (r#"{"kind":"nope"}"#, "kind"),
            (r#"{"kind":"jti","jti":"a","expires_at":10}"#, "expires_at"),
            (r#"{"kind":"jti","jti":"a","expires_at":"soon"}"#, "expires_at"),
            (r#"{"kind":"jti","jti":"","expires_at":5000}"#, "jti"),
            (r#"{"kind":"jti","jti":"a b","expires_at":5000}"#, "jti"),
            (r#"{"kind":"jti","jti":7,"expires_at":5000}"#, "jti"),
            (r#"{"kind":"jti","jti":"a","iss":"","expires_at":5000}"#, "iss"),
            (r#"{"kind":"subject"}"#, "sub"),
            (r#"{"kind":"subject","sub":"u","issued_before":-1}"#, "issued_before"),
            (r#"{"kind":"key"}"#, "kid"),
            (r#"{"kind":"session","sid":"s","extra":1}"#, "body"),
            (r#"{"kind":"session","sid":"s","iss":"has space"}"#, "iss"),
            (r#"{"kind":"key","kid":"k","iss":"https://a"}"#, "iss"),
        ];
        for (body, field) in cases {
            match parse(body) {
                Ok(e) => panic!("{body}: accepted as {e:?}"),
                Err((f, msg)) => assert_eq!(f, field, "{body}: {msg}"),
            }
        }
    }

    #[test]
    fn defaults_follow_the_spec() {
        // By default tokens minted up to SUBJECT_SKEW_SECS later by our clock are covered: a
        // provider whose clock runs ahead stamps its last tokens with a later `iat`.
        let e = parse(r#"{"kind":"subject","sub":"u"}"#).unwrap();
        assert_eq!(
            e.revocation,
            Revocation::Subject { sub: "u".into(), issued_before: 1_000 + SUBJECT_SKEW_SECS }
        );
        assert_eq!(e.expires_at, 1_000 + SUBJECT_SKEW_SECS + 86_400);
        let e = parse(r#"{"kind":"subject","sub":"u","issued_before":900,"iss":"https://a"}"#).unwrap();
        assert_eq!(e.revocation, Revocation::subject("u".into(), 900, Some("https://a".into())));
        let e = parse(r#"{"kind":"session","sid":"s","iss":"https://a"}"#).unwrap();
        assert_eq!(e.revocation, Revocation::session("s".into(), Some("https://a".into())));
        let e = parse(r#"{"kind":"jti","jti":"a","iss":"i","expires_at":5000,"reason":"leak"}"#).unwrap();
        assert_eq!(e.expires_at, 5000);
        assert_eq!(e.reason.as_deref(), Some("leak"));
        // Agents bound token lifetimes by --max-token-ttl, so a leaked token's `exp` need not
        // be known: it has expired by then.
        let e = parse(r#"{"kind":"jti","jti":"a"}"#).unwrap();
        assert_eq!(e.expires_at, 1_000 + 86_400);
        // A leaked key lets its holder mint fresh tokens: no moment makes it safe to forget.
        let e = parse(r#"{"kind":"key","kid":"k"}"#).unwrap();
        assert_eq!(e.expires_at, revmesh_protocol::model::NEVER);
        let e = parse(r#"{"kind":"key","kid":"k","expires_at":9000}"#).unwrap();
        assert_eq!(e.expires_at, 9000);
    }
}
