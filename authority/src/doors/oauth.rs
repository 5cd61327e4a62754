//! OAuth 2.0 Token Revocation (RFC 7009): `POST /v1/oauth2/revoke` with the form body
//! `token=<JWT>` (and an optional `token_type_hint`, advisory only, RFC 7009 §2.1).
//!
//! The token is verified with the authority's `--token-*` keys; a valid one has its `jti`
//! (scoped to its `iss`) revoked until its `exp`. As RFC 7009 §2.2 says, an invalid, expired or
//! unknown token is answered 200 as well, with nothing stored.

use crate::api::{store_revocations, AdminState, ApiError};
use crate::store::NewEntry;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use revmesh_jwt::remote::RemoteKeys;
use revmesh_jwt::{Invalid, Keys};
use revmesh_protocol::model::validate_id;
use revmesh_protocol::Revocation;
use std::sync::Arc;

/// Largest token accepted.
pub const MAX_TOKEN_BYTES: usize = 16 << 10;

/// The keys tokens presented for revocation are verified with.
#[derive(Debug)]
pub struct TokenKeys {
    /// `--token-hs256-secret-file` and `--token-public-key-file`, re-read on SIGHUP.
    pub files: std::sync::RwLock<Keys>,
    /// Where they come from.
    pub file_sources: revmesh_jwt::KeyFiles,
    /// `--token-jwks` (a file or an https URL), kept fresh.
    pub jwks: Option<Arc<RemoteKeys>>,
}

impl TokenKeys {
    fn keys(&self) -> Keys {
        let files = self.files.read().unwrap_or_else(|p| p.into_inner()).clone();
        match &self.jwks {
            Some(j) => files.merged(&j.keys()),
            None => files,
        }
    }

    /// SIGHUP: re-reads the key files and a JWKS file; a file that fails keeps the previous keys.
    pub async fn reload(&self) -> Result<(), String> {
        let files = self.file_sources.load().map_err(|e| format!("--token-{}: {}", e.field, e.message))?;
        *self.files.write().unwrap_or_else(|p| p.into_inner()) = files;
        if let Some(j) =
            self.jwks.as_ref().filter(|j| matches!(j.location(), revmesh_jwt::remote::Location::File(_)))
        {
            j.refresh_now().await.map_err(|e| format!("--token-jwks: {e}"))?;
        }
        Ok(())
    }

    /// The revocation a presented token asks for at `now`, or `None` when nothing is to be
    /// stored (invalid, expired, without `jti`).
    pub async fn revocation(&self, token: &str, now: u64) -> Option<(Revocation, u64)> {
        let signed = match self.keys().verify_signed(token, MAX_TOKEN_BYTES) {
            Err(Invalid::UnknownKey) => {
                let jwks = self.jwks.as_ref()?;
                let kid = revmesh_jwt::unverified_kid(token).unwrap_or_default();
                jwks.refresh_for_unknown(&kid, crate::doors::UNKNOWN_KID_WAIT).await;
                self.keys().verify_signed(token, MAX_TOKEN_BYTES)
            }
            r => r,
        };
        let signed = signed
            .map_err(|e| tracing::info!(reason = e.as_str(), "token for revocation is invalid"))
            .ok()?;
        let exp = signed.time_claim("exp").ok().flatten()?;
        if exp <= now {
            return None; // Expired: nothing left to revoke.
        }
        let jti = signed.str_claim("jti").ok().flatten()?;
        let iss = signed.str_claim("iss").ok().flatten();
        validate_id("jti", &jti).ok()?;
        if let Some(i) = &iss {
            validate_id("iss", i).ok()?;
        }
        Some((Revocation::Jti { jti, iss }, exp))
    }
}

fn no_store(status: StatusCode, body: String) -> Response {
    let ct = if body.is_empty() { "text/plain" } else { "application/json" };
    (status, [(header::CACHE_CONTROL, "no-store"), (header::CONTENT_TYPE, ct)], body).into_response()
}

/// The door's state: the admin API's core, and the verification keys (`None`: not configured).
#[derive(Clone)]
pub(crate) struct OAuthDoor {
    api: AdminState,
    keys: Option<Arc<TokenKeys>>,
}

/// `POST /v1/oauth2/revoke`, behind the admin token like every admin endpoint.
pub(crate) fn routes(api: AdminState, keys: Option<Arc<TokenKeys>>) -> axum::Router {
    let auth = axum::middleware::from_fn_with_state(api.clone(), crate::api::auth);
    axum::Router::new()
        .route("/v1/oauth2/revoke", axum::routing::post(revoke))
        .route_layer(auth)
        .with_state(OAuthDoor { api, keys })
}

/// `POST /v1/oauth2/revoke`.
async fn revoke(
    State(door): State<OAuthDoor>,
    caller: crate::api::Caller,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let OAuthDoor { api: s, keys } = door;
    let Some(keys) = keys else {
        return Err(ApiError::status(
            StatusCode::NOT_FOUND,
            "token revocation needs --token-hs256-secret-file, --token-public-key-file or --token-jwks",
        ));
    };
    let body = crate::api::body_bytes(&s, body, crate::api::MAX_BODY).await?;
    let token = match revmesh_runtime::form::form_value(&body, "token") {
        Ok(Some(token)) => token,
        missing_or_repeated => {
            let why = match missing_or_repeated {
                Err(e) => e.to_string(),
                Ok(_) => "form parameter `token` is required".to_owned(),
            };
            let e = serde_json::json!({"error": "invalid_request", "error_description": why});
            return Ok(no_store(StatusCode::BAD_REQUEST, e.to_string()));
        }
    };
    let now_ms = s.log.clock().unix_ms();
    let Some((revocation, exp)) = keys.revocation(&token, now_ms / 1000).await else {
        return Ok(no_store(StatusCode::OK, String::new()));
    };
    let entry = NewEntry {
        revocation,
        expires_at: exp,
        reason: Some("RFC 7009 revocation".into()),
        created_at_ms: now_ms,
        by: None,
    };
    let act = crate::api::Act {
        by: format!("rfc7009:{}", caller.name).into(),
        ..crate::api::Act::by(&caller, "rfc7009_revoke", StatusCode::OK)
    };
    let stored =
        store_revocations(&s, vec![entry], false, act).await.map_err(|e| e.response("the revocation"))?;
    tracing::info!(seq = stored.first().map_or(0, |e| e.seq), "token revoked (RFC 7009)");
    Ok(no_store(StatusCode::OK, String::new()))
}
