//! OIDC Back-Channel Logout: logout tokens minted by PyJWT as Keycloak, Auth0 and Ory Hydra
//! shape them, and hostile ones; a logout with `sid` reaches the agents.

use crate::util::{Agent, Authority};
use revmesh_protocol::TokenRef;
use serde_json::Value;
use std::collections::HashMap;
use std::process::Command;

const ISSUER: &str = "https://idp.example/realms/shop";
const AUDIENCE: &str = "shop-backend";

fn mint(jwks: &std::path::Path, now: u64) -> HashMap<String, String> {
    serde_json::from_value(crate::util::pyjwt_script("mint_logout.py", jwks, ISSUER, AUDIENCE, now)).unwrap()
}

fn logout(a: &Authority, body: &str) -> (u16, Value) {
    let (status, text) = revmesh_authority::cli::http_request(
        &a.admin,
        "POST",
        "/v1/oidc/backchannel-logout",
        None,
        body.as_bytes(),
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_tokens_as_providers_send_them_revoke_and_hostile_ones_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let tokens = mint(&jwks, now);
    let provider = format!("{ISSUER}={}", jwks.display());
    let a =
        Authority::start(&dir.path().join("a"), &["--oidc-provider", &provider, "--oidc-audience", AUDIENCE]);
    let agent = Agent::start(vec![a.ws_url()], "oidc-agent");

    // Hostile tokens first: each is 400 invalid_request and stores nothing.
    let hostile = [
        "wrong_issuer",
        "wrong_audience",
        "nonce",
        "no_events",
        "wrong_event",
        "other_key",
        "unknown_kid",
        "expired",
        "too_old",
        "future",
        "no_jti",
        "no_subject",
        "access_token_type",
        "alg_none",
        "hmac_with_public_key",
    ];
    for name in hostile {
        let (status, v) = logout(&a, &format!("logout_token={}", tokens[name]));
        assert_eq!(status, 400, "{name}: {v}");
        assert_eq!(v["error"], "invalid_request", "{name}: {v}");
    }
    let (status, v) = logout(&a, "state=1");
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_request")), "no logout_token");
    let big = format!("logout_token={}", "a".repeat(1 << 20));
    assert_eq!(logout(&a, &big).0, 413, "a 1 MB body");
    let (_, list) = a.get("/v1/revocations?after=0");
    assert_eq!(list["head"], 0, "nothing stored: {list}");

    // As providers send them: 200, empty, once durable.
    for name in ["keycloak", "keycloak_2023", "auth0", "hydra", "sub_only"] {
        let (status, v) = logout(&a, &format!("logout_token={}&state=ignored", tokens[name]));
        assert_eq!(status, 200, "{name}: {v}");
    }
    let (_, list) = a.get("/v1/revocations?after=0");
    let entries = list["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 5, "{list}");
    // Scoped to the provider: its logout never refuses another provider's session or user.
    assert!(entries.iter().all(|e| e["iss"] == ISSUER), "{list}");
    agent.wait_applied(5).await;
    let decide = |sid: Option<&'static str>, sub: Option<&'static str>, iss: &'static str| {
        matches!(
            agent.state.decide(&revmesh_protocol::TokenRef {
                sid,
                sub,
                iss: Some(iss),
                iat: Some(1),
                ..Default::default()
            }),
            revmesh_agent::state::Decision::Revoked { .. }
        )
    };
    assert!(decide(Some("kc-session-1"), None, ISSUER));
    assert!(!decide(Some("kc-session-1"), None, "https://another-idp.example"), "another provider's session");
    assert!(decide(None, Some("user-3"), ISSUER));
    assert!(!decide(None, Some("user-3"), "https://another-idp.example"), "another provider's user");
    // Attributed to the provider, and recorded in the audit trail with it.
    let by = format!("oidc:{ISSUER}");
    assert!(entries.iter().all(|e| e["by"] == by.as_str()), "{list}");
    let (_, trail) = a.get("/v1/audit");
    let records = trail["records"].as_array().unwrap();
    assert_eq!(records.len(), 5, "{trail}");
    assert!(records.iter().all(|r| r["operator"] == by.as_str() && r["action"] == "oidc_logout"), "{trail}");
    assert_eq!(
        (entries[0]["kind"].as_str(), entries[0]["sid"].as_str()),
        (Some("session"), Some("kc-session-1"))
    );
    assert_eq!(entries[4]["kind"], "subject");
    assert_eq!(entries[4]["sub"], "user-3");
    assert_eq!(
        entries[4]["issued_before"].as_u64(),
        Some(now),
        "sub only: tokens issued up to the logout's iat"
    );
    // A replay of an accepted token is refused and stores nothing more.
    let (status, v) = logout(&a, &format!("logout_token={}", tokens["keycloak"]));
    assert_eq!(status, 400, "replay: {v}");
    assert_eq!(a.get("/v1/revocations?after=0").1["head"], 5);

    // The agents refuse that session's tokens, and only that session's.
    agent.wait_applied(5).await;
    fn session(sid: &str) -> TokenRef<'_> {
        TokenRef { sid: Some(sid), iss: Some(ISSUER), sub: Some("user-9"), ..Default::default() }
    }
    assert!(matches!(
        agent.state.decide(&session("kc-session-1")),
        revmesh_agent::state::Decision::Revoked { .. }
    ));
    assert!(matches!(
        agent.state.decide(&session("another-session")),
        revmesh_agent::state::Decision::Ok { .. }
    ));
    let metrics = a.metrics();
    for (result, n) in [("ok", 5), ("invalid", 16), ("replay", 1)] {
        let line = format!("revmesh_authority_oidc_logouts_total{{result=\"{result}\"}} {n}");
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    agent.stop().await;
}

/// Keys of one JWKS document.
fn keys_of(jwks: &std::path::Path) -> Vec<Value> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(jwks).unwrap()).unwrap();
    v["keys"].as_array().unwrap().clone()
}

fn jwks_doc(keys: &[Value]) -> String {
    serde_json::json!({ "keys": keys }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_keys_over_https_rotate_the_way_an_idp_rotates_them_without_flooding_it() {
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mint_logout.py");
    let mint_kid = |name: &str, kid: &str| -> (HashMap<String, String>, Vec<Value>) {
        let path = dir.path().join(name);
        let out = Command::new("python3")
            .arg(script)
            .arg(&path)
            .args([ISSUER, AUDIENCE, &now.to_string(), kid])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (serde_json::from_slice(&out.stdout).unwrap(), keys_of(&path))
    };
    let (old_tokens, old_keys) = mint_kid("old.json", "2026-10");
    let (new_tokens, new_keys) = mint_kid("new.json", "2026-11");
    let idp = revmesh_testkit::JwksServer::start(jwks_doc(&old_keys));
    let provider = format!("{ISSUER}={}", idp.url());
    let ca = idp.ca_file.display().to_string();
    let a = Authority::start(
        &dir.path().join("a"),
        &[
            "--oidc-provider",
            &provider,
            "--oidc-audience",
            AUDIENCE,
            "--jwks-ca-file",
            &ca,
            "--jwks-min-refresh",
            "1s",
        ],
    );
    assert_eq!(idp.fetches(), 1, "fetched once at start");
    assert_eq!(
        logout(&a, &format!("logout_token={}", old_tokens["hydra"])).0,
        200,
        "signed with the current key"
    );

    // 1. The provider publishes its next key beside the current one; 2. signs with it.
    idp.publish(&jwks_doc(&[old_keys.clone(), new_keys.clone()].concat()));
    // The unknown kid is fetched for, waiting for the next allowed fetch when the last one was
    // less than the minimum interval ago: the first attempt succeeds, since providers do not
    // retry a 400 (before, this logout was refused and lost).
    assert_eq!(
        logout(&a, &format!("logout_token={}", new_tokens["keycloak"])).0,
        200,
        "signed with a key published moments ago"
    );
    assert_eq!(idp.fetches(), 2, "one fetch for the new key");
    // A flood of tokens naming a key nobody published: the first waits for one fetch, the rest
    // fail at once (a fetch has looked for that kid), and fetches stay one per interval:
    // revmesh is no amplifier against the IdP.
    let flood = std::time::Instant::now();
    for _ in 0..200 {
        assert_eq!(logout(&a, &format!("logout_token={}", new_tokens["unknown_kid"])).0, 400);
    }
    let intervals = flood.elapsed().as_secs() + 1;
    assert!(
        idp.fetches() <= 2 + intervals,
        "{} fetches in all after 200 unknown kids in {intervals} intervals",
        idp.fetches()
    );
    // 3. The provider retires the old key: until the next refresh the authority keeps the last
    // good set, and a retired key's token only fails after a refresh drops it.
    idp.publish(&jwks_doc(&new_keys));
    assert_eq!(logout(&a, &format!("logout_token={}", new_tokens["auth0"])).0, 200);
    assert_eq!(a.get("/v1/revocations?after=0").1["head"], 3);
}

/// A provider whose access tokens carry no `sid` (`--oidc-logout-by ISSUER=subject`): its
/// logout with `sid` and `sub` revokes the user's tokens issued up to the logout, scoped to the
/// provider, instead of a session revocation that would refuse none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_without_sid_in_its_tokens_logs_out_by_subject() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let tokens = mint(&jwks, now);
    let provider = format!("{ISSUER}={}", jwks.display());
    let policy = format!("{ISSUER}=subject");
    let a = Authority::start(
        &dir.path().join("a"),
        &["--oidc-provider", &provider, "--oidc-audience", AUDIENCE, "--oidc-logout-by", &policy],
    );
    let agent = Agent::start(vec![a.ws_url()], "by-subject");
    assert_eq!(logout(&a, &format!("logout_token={}", tokens["keycloak"])).0, 200);
    let (_, list) = a.get("/v1/revocations?after=0");
    let e = &list["entries"][0];
    assert_eq!(
        (e["kind"].as_str(), e["sub"].as_str(), e["iss"].as_str(), e["issued_before"].as_u64()),
        (Some("subject"), Some("user-1"), Some(ISSUER), Some(now)),
        "{list}"
    );
    agent.wait_applied(1).await;
    // An access token of that user without `sid`, issued before the logout: refused.
    let refused = |iss: &'static str, iat: u64| {
        matches!(
            agent.state.decide(&revmesh_protocol::TokenRef {
                sub: Some("user-1"),
                iss: Some(iss),
                iat: Some(iat),
                ..Default::default()
            }),
            revmesh_agent::state::Decision::Revoked { .. }
        )
    };
    assert!(refused(ISSUER, now - 60));
    assert!(!refused(ISSUER, now + 60), "a token issued after the logout");
    assert!(!refused("https://another-idp.example", now - 60), "another provider's user-1");
    // A policy for an issuer that is not a provider is a configuration error.
    let out = Command::new(env!("CARGO_BIN_EXE_revmesh-authority"))
        .args(["serve", "--data-dir", dir.path().join("b").to_str().unwrap()])
        .args(["--oidc-provider", &provider, "--oidc-audience", AUDIENCE])
        .args(["--oidc-logout-by", "https://nobody.example=subject"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stderr));
    agent.stop().await;
}
