//! Shared Signals: a SET pushed to `/v1/ssf/events` (RFC 8935) until every agent refuses the
//! user's tokens, against the same revocation made through the admin API, interleaved in one
//! run on one fleet so both paths see the same machine.

use super::common::{wait_connected, Fleet};
use crate::procs::AuthorityProc;
use crate::util::{summarize, Summary};
use base64::Engine;
use revmesh_agent::state::Decision;
use revmesh_protocol::TokenRef;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ISSUER: &str = "https://idp.bench/";
const AUDIENCE: &str = "https://revmesh.bench/ssf";
const PUSH_TOKEN: &str = "bench-push-token-0123456789abcdef";
const EVENT: &str = "https://schemas.openid.net/secevent/risc/event-type/account-disabled";

/// The figures.
#[derive(Debug, Serialize)]
pub struct Ssf {
    /// In-process agents.
    pub agents: usize,
    /// Pushed SET (ES256) → every agent answers REVOKED for the user's token.
    pub set_to_all_revoked: Summary,
    /// The same subject revocation by `POST /v1/revocations` (no wait) → every agent REVOKED.
    pub admin_to_all_revoked: Summary,
    /// Mean time to sign one SET here (excluded from the figure above).
    pub sign_us: f64,
}

/// `count` SETs and `count` admin revocations, alternating, paced `1/rate` apart.
pub async fn ssf(dir: &Path, agents: usize, count: usize, rate: f64) -> anyhow::Result<Ssf> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let raw = key.public_key_raw();
    anyhow::ensure!(raw.len() == 65 && raw[0] == 4, "unexpected P-256 public key form");
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..]),
        "kid": "bench-1", "alg": "ES256", "use": "sig"});
    let base = dir.join("ssf");
    std::fs::create_dir_all(&base)?;
    let jwks = base.join("jwks.json");
    std::fs::write(&jwks, serde_json::json!({"keys": [jwk]}).to_string())?;
    let tokens = base.join("push.tokens");
    std::fs::write(&tokens, format!("{PUSH_TOKEN}\n"))?;
    let signing = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes())?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("bench-1".into());
    header.typ = Some("secevent+jwt".into());

    let max = (agents + 64).to_string();
    let transmitter = format!("{ISSUER}={}", jwks.display());
    let auth = AuthorityProc::start(
        &base.join("authority"),
        "127.0.0.1:0",
        &[
            "--max-agents",
            &max,
            "--max-catchups",
            &max,
            "--ssf-transmitter",
            &transmitter,
            "--ssf-audience",
            AUDIENCE,
            "--ssf-push-token-file",
            tokens.to_str().unwrap_or_default(),
        ],
    )?;
    let fleet = Fleet::start(agents, &auth.ws, "ssf")?;
    wait_connected(&auth, agents).await?;
    let states: Arc<Vec<_>> = Arc::new(fleet.agents.iter().map(|(s, _, _)| s.clone()).collect());
    let client = revmesh_runtime::http_client::Client::new(
        None,
        Duration::from_secs(5),
        Duration::from_secs(30),
        1 << 16,
    );
    let push_url = format!("http://{}/v1/ssf/events", auth.admin);
    let bearer = format!("Bearer {PUSH_TOKEN}");
    let gap = Duration::from_secs_f64(1.0 / rate);
    let (mut via_set, mut via_admin) = (Vec::with_capacity(count), Vec::with_capacity(count));
    let mut signing_time = Duration::ZERO;
    for i in 0..count {
        let now = revmesh_runtime::Clock::system().unix_secs();
        // The SET path: signed before the clock starts (the transmitter's work, not ours).
        let sub = format!("set-{i}");
        let claims = serde_json::json!({"iss": ISSUER, "aud": AUDIENCE, "iat": now, "jti": format!("bench-{i}"),
            "sub_id": {"format": "iss_sub", "iss": ISSUER, "sub": sub}, "events": {EVENT: {}}});
        let signed_at = Instant::now();
        let set = jsonwebtoken::encode(&header, &claims, &signing)?;
        signing_time += signed_at.elapsed();
        let started = Instant::now();
        let headers = [("authorization", bearer.as_str()), ("content-type", "application/secevent+jwt")];
        let answer = client.send(http::Method::POST, &push_url, &headers, set.into()).await?;
        anyhow::ensure!(answer.status == 202, "push answered {}: {}", answer.status, answer.text());
        via_set.push(all_revoked(states.clone(), sub, now, started).await?);
        tokio::time::sleep(gap).await;

        let sub = format!("adm-{i}");
        let body = serde_json::json!({"kind": "subject", "sub": sub, "iss": ISSUER, "issued_before": now})
            .to_string();
        let started = Instant::now();
        let (status, v) = super::common::call(&auth, "POST", "/v1/revocations".into(), body).await?;
        anyhow::ensure!(status == 201, "revoke answered {status}: {v}");
        via_admin.push(all_revoked(states.clone(), sub, now, started).await?);
        tokio::time::sleep(gap).await;
    }
    fleet.stop().await;
    Ok(Ssf {
        agents,
        set_to_all_revoked: summarize(via_set),
        admin_to_all_revoked: summarize(via_admin),
        sign_us: signing_time.as_secs_f64() * 1e6 / count.max(1) as f64,
    })
}

/// Time from `started` until every agent refuses a token of `sub` issued at `iat`, checked
/// every 100 µs on a thread of its own (the fleet's runtime is not disturbed by spinning).
async fn all_revoked(
    states: Arc<Vec<Arc<revmesh_agent::state::AgentState>>>,
    sub: String,
    iat: u64,
    started: Instant,
) -> anyhow::Result<Duration> {
    tokio::task::spawn_blocking(move || {
        let token = TokenRef { sub: Some(&sub), iss: Some(ISSUER), iat: Some(iat), ..Default::default() };
        loop {
            if states.iter().all(|s| matches!(s.decide(&token), Decision::Revoked { .. })) {
                return Ok(started.elapsed());
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "{sub}: not revoked everywhere within 30 s"
            );
            std::thread::sleep(Duration::from_micros(100));
        }
    })
    .await?
}
