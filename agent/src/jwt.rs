//! Token verification (the `revmesh-jwt` crate, shared with the authority) and minting
//! test tokens for `revmesh-agent token`.

use jsonwebtoken::Algorithm;
pub use revmesh_jwt::*;

/// The claims of a development token.
#[derive(Debug, Clone, Copy, Default)]
pub struct DevClaims<'a> {
    /// `sub`.
    pub sub: &'a str,
    /// `jti` (random when `None`).
    pub jti: Option<&'a str>,
    /// `sid`.
    pub sid: Option<&'a str>,
    /// `iss`.
    pub iss: Option<&'a str>,
    /// `aud`.
    pub aud: Option<&'a str>,
}

/// Mints an HS256 token for trying things out (`revmesh-agent token`): `sub`, `iat` = now,
/// `exp` = now + `ttl_secs`, a `jti` (random when not given), and `sid`, `iss`, `aud` when given.
pub fn mint_hs256(secret: &[u8], claims: DevClaims<'_>, ttl_secs: u64, now: u64) -> Result<String, String> {
    if secret.len() < MIN_HMAC_SECRET {
        return Err(format!("the secret must be at least {MIN_HMAC_SECRET} bytes, as the agent requires"));
    }
    let jti = claims.jti.map_or_else(|| hex::encode(rand::random::<[u8; 16]>()), str::to_owned);
    let mut body = serde_json::json!({"sub": claims.sub, "jti": jti, "iat": now, "exp": now + ttl_secs});
    for (k, v) in [("sid", &claims.sid), ("iss", &claims.iss), ("aud", &claims.aud)] {
        if let (Some(v), Some(m)) = (v, body.as_object_mut()) {
            m.insert(k.into(), serde_json::json!(v));
        }
    }
    let key = jsonwebtoken::EncodingKey::from_secret(secret).map_err(|e| e.to_string())?;
    jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), &body, &key).map_err(|e| e.to_string())
}
