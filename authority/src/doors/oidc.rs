//! OpenID Connect Back-Channel Logout 1.0 receiver: `POST /v1/oidc/backchannel-logout`.
//!
//! An identity provider (Keycloak, Auth0, Ory Hydra, …) posts a logout token when a user's
//! session ends. No bearer token: the logout token's signature by a configured provider is the
//! authentication. Every validation step of the spec's section 2.6 is applied; a valid token
//! becomes a `session` revocation (with `sid`) or a `subject` revocation (`sub` only, covering
//! tokens issued up to the logout token's `iat`), answered 200 once durable.

use crate::api::{store_revocations, AdminState, ApiError};
use crate::store::NewEntry;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use revmesh_jwt::remote::{Location, RemoteKeys};
use revmesh_jwt::{Invalid, Signed};
use revmesh_protocol::model::validate_id;
use revmesh_protocol::Revocation;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The event a logout token must carry (spec §2.4).
pub const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// Largest logout token accepted.
pub const MAX_TOKEN_BYTES: usize = 16 << 10;
/// Most logout `jti`s remembered for replay detection within `--oidc-max-age`.
pub const MAX_SEEN: usize = 100_000;

/// Settings of the receiver.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// Trusted providers: issuer and where its JWKS lives.
    pub providers: Vec<(String, Location)>,
    /// Accepted audiences (client ids); the token's `aud` must contain one.
    pub audiences: Vec<String>,
    /// Scheduled JWKS refresh.
    pub jwks_refresh: Duration,
    /// Least time between two fetches of one JWKS.
    pub jwks_min_refresh: Duration,
    /// CA bundle for https JWKS URLs (default: the system's).
    pub jwks_ca_file: Option<std::path::PathBuf>,
    /// Oldest `iat` accepted, and how long a `jti` is remembered.
    pub max_age: Duration,
    /// Clock skew allowed on `iat` and `exp`.
    pub leeway: Duration,
    /// Providers whose logouts revoke by subject (`--oidc-logout-by ISSUER=subject`): their
    /// access tokens carry no `sid`, so a session revocation would match nothing.
    pub logout_by_subject: Vec<String>,
}

/// The receiver: providers' keys and the replay cache.
#[derive(Debug)]
pub struct Oidc {
    providers: HashMap<String, Arc<RemoteKeys>>,
    /// Issuers whose logouts revoke the subject's tokens issued up to the logout.
    by_subject: std::collections::HashSet<String>,
    audiences: Vec<String>,
    max_age: u64,
    leeway: u64,
    /// `iss` + `jti` → when it may be forgotten (unix seconds).
    seen: Mutex<HashMap<(String, String), u64>>,
}

/// Why a logout token is refused (all answered 400 `invalid_request`, nothing stored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoutError {
    /// No `logout_token` form parameter.
    #[error("form parameter `logout_token` is required")]
    Missing,
    /// The issuer is not a configured provider.
    #[error("unknown issuer")]
    Issuer,
    /// Form, signature, algorithm or key.
    #[error("logout token rejected: {}", .0.as_str())]
    Token(Invalid),
    /// `typ` is neither absent, `logout+jwt` nor `JWT`.
    #[error("`typ` must be logout+jwt")]
    Type,
    /// `aud` names none of `--oidc-audience`.
    #[error("audience not accepted")]
    Audience,
    /// `iat` missing, in the future, or older than `--oidc-max-age`.
    #[error("`iat` missing, in the future or too old")]
    IssuedAt,
    /// Past `exp`.
    #[error("expired")]
    Expired,
    /// No back-channel logout event.
    #[error("`events` lacks the back-channel logout event")]
    Events,
    /// A `nonce` (logout tokens must not carry one).
    #[error("`nonce` is not allowed in a logout token")]
    Nonce,
    /// Neither `sid` nor `sub`.
    #[error("neither `sid` nor `sub`")]
    Subject,
    /// No `jti`.
    #[error("`jti` is required")]
    Jti,
    /// This `jti` was seen within `--oidc-max-age`.
    #[error("replayed logout token")]
    Replay,
    /// A claim of the wrong type or an identifier revmesh cannot store.
    #[error("bad claim: {0}")]
    Claim(String),
}

impl LogoutError {
    /// The `result` label of `revmesh_authority_oidc_logouts_total`.
    pub fn label(&self) -> &'static str {
        match self {
            LogoutError::Replay => "replay",
            _ => "invalid",
        }
    }
}

impl Oidc {
    /// Loads every provider's keys once (a provider whose keys cannot be fetched yet is logged
    /// and retried; its logouts are refused until then) and keeps them fresh until `stop`.
    pub async fn start(
        s: &OidcSettings,
        clock: &revmesh_runtime::Clock,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<Arc<Oidc>, String> {
        let providers = crate::doors::issuer_keys(
            s.providers.iter().map(|(i, l)| (i, l)),
            "OIDC provider",
            (s.jwks_refresh, s.jwks_min_refresh),
            s.jwks_ca_file.as_deref(),
            clock,
            stop,
        )
        .await?;
        Ok(Arc::new(Oidc {
            providers,
            by_subject: s.logout_by_subject.iter().cloned().collect(),
            audiences: s.audiences.clone(),
            max_age: s.max_age.as_secs(),
            leeway: s.leeway.as_secs(),
            seen: Mutex::new(HashMap::new()),
        }))
    }

    /// Validates a logout token at `now` (spec §2.6) and returns the revocation it asks for,
    /// with the `jti` reserved against replays (release it with [`Self::forget`] if the
    /// revocation could not be stored).
    pub async fn validate(
        &self,
        token: &str,
        now: u64,
    ) -> Result<(Revocation, (String, String)), LogoutError> {
        let issuer = revmesh_jwt::unverified_issuer(token).ok_or(LogoutError::Issuer)?;
        let keys = self.providers.get(&issuer).ok_or(LogoutError::Issuer)?;
        let signed = match keys.keys().verify_signed(token, MAX_TOKEN_BYTES) {
            // A key the provider may have just published: fetch (rate-limited, waiting for the
            // next allowed fetch when the last was moments ago) and try again.
            Err(Invalid::UnknownKey) => {
                let kid = revmesh_jwt::unverified_kid(token).unwrap_or_default();
                keys.refresh_for_unknown(&kid, crate::doors::UNKNOWN_KID_WAIT).await;
                keys.keys().verify_signed(token, MAX_TOKEN_BYTES)
            }
            r => r,
        }
        .map_err(LogoutError::Token)?;
        let jti = self.check_claims(&signed, &issuer, now)?;
        let by_subject = self.by_subject.contains(&issuer);
        let revocation = match (signed.str_claim("sid"), signed.str_claim("sub")) {
            // A provider whose access tokens carry no `sid`: the session's user, up to now.
            (Ok(Some(_)), Ok(Some(sub))) if by_subject => {
                let iat = signed.time_claim("iat").ok().flatten().unwrap_or(now);
                Revocation::Subject { sub, issued_before: iat }
            }
            (Ok(Some(sid)), _) => Revocation::Session { sid },
            (Ok(None), Ok(Some(sub))) => {
                let iat = signed.time_claim("iat").ok().flatten().unwrap_or(now);
                Revocation::Subject { sub, issued_before: iat }
            }
            (Err(_), _) | (_, Err(_)) => {
                return Err(LogoutError::Claim("`sid`/`sub` must be strings".into()))
            }
            (Ok(None), Ok(None)) => return Err(LogoutError::Subject),
        };
        let id = match &revocation {
            Revocation::Session { sid } => ("sid", sid),
            Revocation::Subject { sub, .. } => ("sub", sub),
            _ => ("jti", &jti),
        };
        validate_id(id.0, id.1).map_err(|e| LogoutError::Claim(e.to_string()))?;
        validate_id("iss", &issuer).map_err(|e| LogoutError::Claim(e.to_string()))?;
        // Scoped to the provider: its logout never refuses another provider's user or session
        // that happens to share the `sub` or `sid`.
        let revocation = match revocation {
            Revocation::Session { sid } => Revocation::session(sid, Some(issuer.clone())),
            Revocation::Subject { sub, issued_before } => {
                Revocation::subject(sub, issued_before, Some(issuer.clone()))
            }
            other => other,
        };
        let key = (issuer, jti);
        self.reserve(&key, now)?;
        Ok((revocation, key))
    }

    fn check_claims(&self, t: &Signed, issuer: &str, now: u64) -> Result<String, LogoutError> {
        match t.header.get("typ") {
            None => {}
            Some(Value::String(typ))
                if typ.eq_ignore_ascii_case("logout+jwt")
                    || typ.eq_ignore_ascii_case("application/logout+jwt")
                    || typ.eq_ignore_ascii_case("JWT") => {}
            Some(_) => return Err(LogoutError::Type),
        }
        let claim = |e: Invalid| LogoutError::Claim(e.as_str().to_owned());
        if t.str_claim("iss").map_err(claim)?.as_deref() != Some(issuer) {
            return Err(LogoutError::Issuer);
        }
        let aud = t.audiences().map_err(claim)?;
        if !aud.iter().any(|a| self.audiences.contains(a)) {
            return Err(LogoutError::Audience);
        }
        let iat = t.time_claim("iat").map_err(|_| LogoutError::IssuedAt)?.ok_or(LogoutError::IssuedAt)?;
        if iat > now + self.leeway || iat + self.max_age < now {
            return Err(LogoutError::IssuedAt);
        }
        if let Some(exp) = t.time_claim("exp").map_err(claim)? {
            if exp + self.leeway <= now {
                return Err(LogoutError::Expired);
            }
        }
        match t.claims.get("events") {
            Some(Value::Object(events)) if matches!(events.get(LOGOUT_EVENT), Some(Value::Object(_))) => {}
            _ => return Err(LogoutError::Events),
        }
        if t.claims.contains_key("nonce") {
            return Err(LogoutError::Nonce);
        }
        t.str_claim("jti").map_err(claim)?.filter(|j| !j.is_empty()).ok_or(LogoutError::Jti)
    }

    fn reserve(&self, key: &(String, String), now: u64) -> Result<(), LogoutError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.get(key).is_some_and(|until| *until > now) {
            return Err(LogoutError::Replay);
        }
        if seen.len() >= MAX_SEEN {
            seen.retain(|_, until| *until > now);
        }
        if seen.len() >= MAX_SEEN {
            // Every remembered jti is still fresh: refusing is safer than forgetting one.
            return Err(LogoutError::Claim("too many logouts within --oidc-max-age; retry later".into()));
        }
        seen.insert(key.clone(), now + self.max_age + self.leeway);
        Ok(())
    }

    /// SIGHUP: re-reads the providers' JWKS files (URLs follow their schedule); a file that
    /// fails keeps the previous keys.
    pub async fn reload_files(&self) -> Result<(), String> {
        for (issuer, keys) in &self.providers {
            if matches!(keys.location(), Location::File(_)) {
                keys.refresh_now().await.map_err(|e| format!("{issuer}: {e}"))?;
            }
        }
        Ok(())
    }

    /// Releases a reserved `jti` (its revocation was not stored; the provider will retry).
    pub fn forget(&self, key: &(String, String)) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

fn invalid_request(description: String) -> Response {
    let body = json!({"error": "invalid_request", "error_description": description});
    (StatusCode::BAD_REQUEST, [(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

/// The door's state: the admin API's core, and the receiver (`None`: no provider configured).
#[derive(Clone)]
pub(crate) struct OidcDoor {
    api: AdminState,
    oidc: Option<Arc<Oidc>>,
}

/// `POST /v1/oidc/backchannel-logout`: authenticated by the logout token's signature, not by
/// the admin token.
pub(crate) fn routes(api: AdminState, oidc: Option<Arc<Oidc>>) -> axum::Router {
    axum::Router::new()
        .route("/v1/oidc/backchannel-logout", axum::routing::post(backchannel_logout))
        .with_state(OidcDoor { api, oidc })
}

/// `POST /v1/oidc/backchannel-logout`.
async fn backchannel_logout(
    State(door): State<OidcDoor>,
    caller: crate::api::Caller,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let OidcDoor { api: s, oidc } = door;
    let Some(oidc) = oidc else {
        return Err(ApiError::status(
            StatusCode::NOT_FOUND,
            "no OIDC provider is configured (--oidc-provider)",
        ));
    };
    let body = crate::api::body_bytes(&s, body, crate::api::MAX_BODY).await?;
    let count = |result: &str| s.metrics.oidc_logouts_total.with_label_values(&[result]).inc();
    let token = match revmesh_runtime::form::form_value(&body, "logout_token") {
        Ok(Some(token)) => token,
        Ok(None) => {
            count("invalid");
            return Ok(invalid_request(LogoutError::Missing.to_string()));
        }
        Err(e) => {
            count("invalid");
            return Ok(invalid_request(e.to_string()));
        }
    };
    let now_ms = s.log.clock().unix_ms();
    let (revocation, key) = match oidc.validate(&token, now_ms / 1000).await {
        Ok(v) => v,
        Err(e) => {
            count(e.label());
            tracing::warn!(error = %e, "logout token refused");
            return Ok(invalid_request(e.to_string()));
        }
    };
    let entry = NewEntry {
        revocation,
        expires_at: now_ms / 1000 + s.max_token_ttl.as_secs(),
        reason: Some("OIDC back-channel logout".into()),
        created_at_ms: now_ms,
        by: None,
    };
    let act = crate::api::Act {
        by: format!("oidc:{}", key.0).into(),
        ..crate::api::Act::by(&caller, "oidc_logout", StatusCode::OK)
    };
    match store_revocations(&s, vec![entry], false, act).await {
        Ok(stored) => {
            count("ok");
            let seq = stored.first().map_or(0, |e| e.seq);
            tracing::info!(seq, issuer = %key.0, "back-channel logout stored");
            Ok((StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response())
        }
        Err(e) => {
            oidc.forget(&key);
            count("unavailable");
            Err(e.response("the logout"))
        }
    }
}
