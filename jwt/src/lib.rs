//! JWT verification for revmesh: strict parsing, key selection by `kid`, algorithm fixed by the
//! key (never `none`, never HMAC with a public key), then claims with leeway. The agent checks
//! access tokens with it (`CHECK`); the authority checks logout tokens (OIDC Back-Channel
//! Logout) and tokens presented for revocation (RFC 7009) with [`Keys::verify_signed`] and its
//! own claim rules.
//!
//! Parsing is done here rather than by `jsonwebtoken::decode` so that every hostile shape has a
//! precise answer: duplicate JSON keys, padded or standard-alphabet base64, claims of the wrong
//! JSON type and unknown `crit` extensions are all refused. Signatures are checked by
//! `jsonwebtoken::crypto::verify` (aws-lc-rs).

pub mod remote;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Why a token is not valid; the words of `INVALID reason=…` (PROTOCOL.md §7, docs/integrations.md "Asking the agent").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not three base64url segments of JSON objects, duplicate keys, unknown `crit`.
    Malformed,
    /// No key verified the signature.
    Signature,
    /// `alg` is `none`, unknown, or not the algorithm of any key that could sign it.
    Algorithm,
    /// Past `exp` (plus leeway).
    Expired,
    /// Before `nbf`, or `iat` in the future (beyond leeway).
    NotYetValid,
    /// `iss` differs from `--issuer`.
    Issuer,
    /// `aud` lacks `--audience`.
    Audience,
    /// `kid` names no known key.
    UnknownKey,
    /// Longer than `--max-token-bytes`.
    TooLarge,
    /// A claim has the wrong type or range, or `exp` is missing.
    Claims,
    /// Lives longer than the agent's token lifetime limit (`--max-token-ttl`): it could outlive
    /// the revocations of its subject or session.
    Lifetime,
}

impl Invalid {
    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            Invalid::Malformed => "malformed",
            Invalid::Signature => "signature",
            Invalid::Algorithm => "algorithm",
            Invalid::Expired => "expired",
            Invalid::NotYetValid => "not_yet_valid",
            Invalid::Issuer => "issuer",
            Invalid::Audience => "audience",
            Invalid::UnknownKey => "unknown_key",
            Invalid::TooLarge => "too_large",
            Invalid::Claims => "claims",
            Invalid::Lifetime => "lifetime",
        }
    }
}

/// Claim rules.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required audience.
    pub audience: Option<String>,
    /// Allowed clock skew, seconds.
    pub leeway_secs: u64,
    /// Longest token.
    pub max_token_bytes: usize,
}

/// Key material locations.
#[derive(Debug, Clone, Default)]
pub struct KeyFiles {
    /// HMAC secret.
    pub hmac_secret: Option<PathBuf>,
    /// PEM public keys.
    pub public_keys: Vec<PathBuf>,
    /// JWKS.
    pub jwks: Option<PathBuf>,
}

/// A key-loading problem, attributed to a flag.
#[derive(Debug, Clone)]
pub struct KeyError {
    /// The flag.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

#[derive(Clone)]
struct Key {
    kid: Option<String>,
    algs: &'static [Algorithm],
    key: DecodingKey,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key").field("kid", &self.kid).field("algs", &self.algs).finish()
    }
}

const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const ES256: &[Algorithm] = &[Algorithm::ES256];
const ES384: &[Algorithm] = &[Algorithm::ES384];
const EDDSA: &[Algorithm] = &[Algorithm::EdDSA];

/// Smallest HMAC secret accepted, bytes (RFC 7518 §3.2 for HS256).
pub const MIN_HMAC_SECRET: usize = 32;

/// The loaded verification keys.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    keys: Vec<Key>,
}

const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect::<Vec<_>>().concat();
    base64::engine::general_purpose::STANDARD.decode(body.trim()).ok()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn pem_key(path: &Path) -> Result<Key, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&pem);
    if text.contains("PRIVATE KEY") {
        return Err(format!("{} holds a private key; give the public key", path.display()));
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok(Key { kid: None, algs: RSA, key });
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        let der = pem_der(&text).unwrap_or_default();
        let algs = if contains(&der, P384_OID) {
            ES384
        } else if contains(&der, P256_OID) {
            ES256
        } else {
            return Err(format!("{}: only P-256 and P-384 EC keys are supported", path.display()));
        };
        return Ok(Key { kid: None, algs, key });
    }
    if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        return Ok(Key { kid: None, algs: EDDSA, key });
    }
    Err(format!("{}: not an RSA, EC or Ed25519 public key in PEM", path.display()))
}

fn jwk_algs(jwk: &jsonwebtoken::jwk::Jwk) -> Option<&'static [Algorithm]> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
    let family: &'static [Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => ES256,
            EllipticCurve::P384 => ES384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(_) => EDDSA,
        // Symmetric (and unknown) keys in a JWKS are refused: HMAC only from --hs256-secret-file.
        _ => return None,
    };
    // A JWK's `alg`, when present, narrows the family to exactly that algorithm.
    match jwk.common.key_algorithm.and_then(|a| Algorithm::from_str(&a.to_string()).ok()) {
        Some(alg) => family.iter().position(|a| *a == alg).map(|i| &family[i..=i]),
        None => Some(family),
    }
}

impl KeyFiles {
    /// Loads and checks every configured key.
    pub fn load(&self) -> Result<Keys, KeyError> {
        let mut keys = Vec::new();
        if let Some(p) = &self.hmac_secret {
            let secret = std::fs::read(p).map_err(|e| KeyError {
                field: "hs256-secret-file",
                message: format!("{}: {e}", p.display()),
            })?;
            // One trailing newline is not part of the secret (docs/operations.md: `--hs256-secret-file`).
            let secret = secret.strip_suffix(b"\n").unwrap_or(&secret);
            if secret.len() < MIN_HMAC_SECRET {
                return Err(KeyError {
                    field: "hs256-secret-file",
                    message: format!(
                        "secret is {} bytes; at least {MIN_HMAC_SECRET} are required",
                        secret.len()
                    ),
                });
            }
            let key = DecodingKey::from_secret(secret)
                .map_err(|e| KeyError { field: "hs256-secret-file", message: e.to_string() })?;
            keys.push(Key { kid: None, algs: HMAC, key });
        }
        for p in &self.public_keys {
            keys.push(pem_key(p).map_err(|message| KeyError { field: "public-key-file", message })?);
        }
        if let Some(p) = &self.jwks {
            let err = |message: String| KeyError { field: "jwks-file", message };
            let text = std::fs::read(p).map_err(|e| err(format!("{}: {e}", p.display())))?;
            let set = Keys::from_jwks(&text).map_err(|e| err(format!("{}: {e}", p.display())))?;
            keys.extend(set.keys);
        }
        Ok(Keys { keys })
    }
}

/// The `iss` claim of a token whose signature has not been checked yet: only to pick the
/// issuer whose keys must then verify it.
pub fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let claims = object(&segment(payload).ok()?).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

/// The header's `kid` of a token whose signature has not been checked yet.
pub fn unverified_kid(token: &str) -> Option<String> {
    let header = object(&segment(token.split('.').next()?).ok()?).ok()?;
    header.get("kid")?.as_str().map(str::to_owned)
}

/// A token whose signature verified: its header and claims, not yet judged.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The JOSE header.
    pub header: BTreeMap<String, Value>,
    /// The claims.
    pub claims: BTreeMap<String, Value>,
    /// The header's `kid`.
    pub kid: Option<String>,
}

impl Signed {
    /// A string claim (`Err` when present with another type).
    pub fn str_claim(&self, k: &str) -> Result<Option<String>, Invalid> {
        opt_str(&self.claims, k)
    }

    /// A NumericDate claim (`Err` when present and not a plausible one).
    pub fn time_claim(&self, k: &str) -> Result<Option<u64>, Invalid> {
        opt_time(&self.claims, k)
    }

    /// `aud` as a list (one string or an array of strings).
    pub fn audiences(&self) -> Result<Vec<String>, Invalid> {
        audiences(&self.claims)
    }
}

fn audiences(claims: &BTreeMap<String, Value>) -> Result<Vec<String>, Invalid> {
    match claims.get("aud") {
        None => Ok(Vec::new()),
        Some(Value::String(a)) => Ok(vec![a.clone()]),
        Some(Value::Array(items)) => {
            items.iter().map(|v| v.as_str().map(str::to_owned).ok_or(Invalid::Claims)).collect()
        }
        Some(_) => Err(Invalid::Claims),
    }
}

/// The claims revocation and the answer need, from a verified token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// `jti`
    pub jti: Option<String>,
    /// `iss`
    pub iss: Option<String>,
    /// `sub`
    pub sub: Option<String>,
    /// `iat`
    pub iat: Option<u64>,
    /// header `kid`
    pub kid: Option<String>,
    /// `sid`
    pub sid: Option<String>,
    /// `exp`
    pub exp: u64,
    /// `aud` (one string or several).
    pub aud: Vec<String>,
    /// `scope`, when a string (RFC 8693 §4.2); shown by introspection only.
    pub scope: Option<String>,
    /// `client_id`, when a string; shown by introspection only.
    pub client_id: Option<String>,
}

/// A JSON object that refuses duplicate keys (RFC 7515 §5.2 allows refusing them; we must, or two
/// parsers could read different claims from one token).
struct StrictObject(BTreeMap<String, Value>);

impl<'de> serde::Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrictObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictObject, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(k) = map.next_key::<String>()? {
                    let v: Value = map.next_value()?;
                    if out.insert(k, v).is_some() {
                        return Err(serde::de::Error::custom("duplicate key"));
                    }
                }
                Ok(StrictObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn segment(s: &str) -> Result<Vec<u8>, Invalid> {
    // The URL-safe alphabet only, no padding, canonical trailing bits.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(Invalid::Malformed);
    }
    URL_SAFE_NO_PAD.decode(s).map_err(|_| Invalid::Malformed)
}

fn object(bytes: &[u8]) -> Result<BTreeMap<String, Value>, Invalid> {
    serde_json::from_slice::<StrictObject>(bytes).map(|o| o.0).map_err(|_| Invalid::Malformed)
}

fn opt_str(m: &BTreeMap<String, Value>, k: &str) -> Result<Option<String>, Invalid> {
    match m.get(k) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Invalid::Claims),
    }
}

/// Largest NumericDate accepted (year 36812): beyond that a value is a mistake or an attack.
const MAX_TIME: u64 = 1 << 40;

fn opt_time(m: &BTreeMap<String, Value>, k: &str) -> Result<Option<u64>, Invalid> {
    match m.get(k) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_u64().filter(|v| *v < MAX_TIME).map(Some).ok_or(Invalid::Claims),
        Some(_) => Err(Invalid::Claims),
    }
}

impl Keys {
    /// The keys of a JWKS document (RFC 7517). Symmetric keys are refused: a JWKS is public.
    pub fn from_jwks(json: &[u8]) -> Result<Keys, String> {
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        let mut keys = Vec::with_capacity(set.keys.len());
        for jwk in &set.keys {
            let algs = jwk_algs(jwk).ok_or_else(|| format!("unsupported key {:?}", jwk.common.key_id))?;
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {:?}: {e}", jwk.common.key_id))?;
            keys.push(Key { kid: jwk.common.key_id.clone(), algs, key });
        }
        Ok(Keys { keys })
    }

    /// These keys and `other`'s, as one set.
    pub fn merged(&self, other: &Keys) -> Keys {
        Keys { keys: self.keys.iter().chain(&other.keys).cloned().collect() }
    }

    /// The `kid`s of the keys that have one.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref())
    }

    /// True when a key is named `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the only keys are asymmetric (never an HMAC secret).
    pub fn all_asymmetric(&self) -> bool {
        self.keys.iter().all(|k| k.algs != HMAC)
    }

    /// Keys holding just one HMAC secret (for tests and fuzzing; the binary loads files).
    pub fn hmac(secret: &[u8]) -> Result<Keys, KeyError> {
        if secret.len() < MIN_HMAC_SECRET {
            return Err(KeyError { field: "hs256-secret-file", message: "secret too short".into() });
        }
        let key = DecodingKey::from_secret(secret)
            .map_err(|e| KeyError { field: "hs256-secret-file", message: e.to_string() })?;
        Ok(Keys { keys: vec![Key { kid: None, algs: HMAC, key }] })
    }

    /// True when no key is configured (then `CHECK` cannot verify anything).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies a compact JWS's form and signature only: the header and the claims, for a
    /// caller with its own claim rules (logout tokens, revocation requests).
    pub fn verify_signed(&self, token: &str, max_bytes: usize) -> Result<Signed, Invalid> {
        if token.len() > max_bytes {
            return Err(Invalid::TooLarge);
        }
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Invalid::Malformed);
        };
        let header = object(&segment(h64)?)?;
        let alg = match header.get("alg") {
            Some(Value::String(a)) => a.as_str(),
            _ => return Err(Invalid::Malformed),
        };
        // Checked before the signature segment, which an unsigned token leaves empty.
        if alg.eq_ignore_ascii_case("none") {
            return Err(Invalid::Algorithm);
        }
        let payload = segment(p64)?;
        segment(s64)?;
        let alg = Algorithm::from_str(alg).map_err(|_| Invalid::Algorithm)?;
        if header.contains_key("crit") {
            // We implement no JWS extensions, so any critical one must be refused (RFC 7515 §4.1.11).
            return Err(Invalid::Malformed);
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err(Invalid::Malformed),
        };
        // Key selection: the key named by `kid`; keys without a kid (PEM files, the HMAC secret) otherwise.
        let named: Vec<&Key> = match &kid {
            Some(k) => self.keys.iter().filter(|key| key.kid.as_deref() == Some(k)).collect(),
            None => Vec::new(),
        };
        let pool: Vec<&Key> =
            if named.is_empty() { self.keys.iter().filter(|k| k.kid.is_none()).collect() } else { named };
        if pool.is_empty() {
            return Err(Invalid::UnknownKey);
        }
        let usable: Vec<&Key> = pool.into_iter().filter(|k| k.algs.contains(&alg)).collect();
        if usable.is_empty() {
            return Err(Invalid::Algorithm);
        }
        let message = &token[..h64.len() + 1 + p64.len()];
        let ok = usable
            .iter()
            .any(|k| jsonwebtoken::crypto::verify(s64, message.as_bytes(), &k.key, alg).unwrap_or(false));
        if !ok {
            return Err(Invalid::Signature);
        }
        let claims = object(&payload)?;
        Ok(Signed { header, claims, kid })
    }

    /// Verifies a compact JWS and its claims at `now` (unix seconds).
    pub fn verify(&self, token: &str, rules: &Rules, now: u64) -> Result<Verified, Invalid> {
        let Signed { claims, kid, .. } = self.verify_signed(token, rules.max_token_bytes)?;
        let exp = opt_time(&claims, "exp")?.ok_or(Invalid::Claims)?;
        let nbf = opt_time(&claims, "nbf")?;
        let iat = opt_time(&claims, "iat")?;
        let iss = opt_str(&claims, "iss")?;
        let aud = audiences(&claims)?;
        // Shown by introspection only: a value of another type is left out, never fatal.
        let lenient = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_owned);
        let (scope, client_id) = (lenient("scope"), lenient("client_id"));
        let verified = Verified {
            scope,
            client_id,
            jti: opt_str(&claims, "jti")?,
            sub: opt_str(&claims, "sub")?,
            sid: opt_str(&claims, "sid")?,
            iss,
            iat,
            kid,
            exp,
            aud,
        };
        let leeway = rules.leeway_secs;
        if exp.saturating_add(leeway) <= now {
            return Err(Invalid::Expired);
        }
        if nbf.is_some_and(|n| n > now.saturating_add(leeway))
            || iat.is_some_and(|i| i > now.saturating_add(leeway))
        {
            return Err(Invalid::NotYetValid);
        }
        if let Some(want) = &rules.issuer {
            if verified.iss.as_ref() != Some(want) {
                return Err(Invalid::Issuer);
            }
        }
        if let Some(want) = &rules.audience {
            if !verified.aud.iter().any(|a| a == want) {
                return Err(Invalid::Audience);
            }
        }
        Ok(verified)
    }
}
