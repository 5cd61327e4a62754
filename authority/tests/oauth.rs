//! OAuth 2.0 Token Revocation (RFC 7009) with tokens minted by PyJWT.

use crate::util::{Agent, Authority};
use std::process::Command;

const SECRET: &str = "rfc7009-test-secret-0123456789abcdef";

/// An HS256 token minted by PyJWT with `claims` (a JSON object) and `secret`.
fn pyjwt(claims: serde_json::Value, secret: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", "import jwt, json, sys; print(jwt.encode(json.loads(sys.argv[1]), sys.argv[2], algorithm='HS256'))"])
        .arg(claims.to_string())
        .arg(secret)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyJWT failed (`pip install 'pyjwt[crypto]'`, scripts/test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7009_revokes_a_valid_token_until_its_exp_and_answers_200_for_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hs256.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let mut a =
        Authority::start(&dir.path().join("a"), &["--token-hs256-secret-file", secret.to_str().unwrap()]);
    let agent = Agent::start(vec![a.ws_url()], "rfc7009-agent");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = |jti: &str, exp: u64| serde_json::json!({"jti": jti, "iss": "https://idp", "sub": "alice", "exp": exp});
    let revoke = |body: String, token: Option<&str>| {
        revmesh_authority::cli::http_request(
            &a.admin,
            "POST",
            "/v1/oauth2/revoke",
            token,
            body.as_bytes(),
            std::time::Duration::from_secs(10),
        )
        .unwrap()
    };
    let token = Some(a.token.as_str());
    // Invalid, expired, unknown: 200 and nothing stored (RFC 7009 §2.2).
    let forged = pyjwt(claims("forged", now + 3600), "some-other-secret-0123456789abcdef");
    let expired = pyjwt(claims("old", now - 60), SECRET);
    let no_jti = pyjwt(serde_json::json!({"sub": "alice", "exp": now + 3600}), SECRET);
    for (t, why) in [
        (forged.as_str(), "forged"),
        (expired.as_str(), "expired"),
        ("not-a-jwt", "garbage"),
        (no_jti.as_str(), "no jti"),
    ] {
        let (status, body) = revoke(format!("token={t}"), token);
        assert_eq!(status, 200, "{why}: {body}");
    }
    assert_eq!(a.get("/v1/revocations?after=0").1["head"], 0, "nothing stored");
    // A valid token: its jti, scoped to its issuer, until its exp; the hint changes nothing.
    let good = pyjwt(claims("tok-1", now + 1800), SECRET);
    let (status, _) = revoke(format!("token={good}&token_type_hint=refresh_token"), token);
    assert_eq!(status, 200);
    let (_, list) = a.get("/v1/revocations?after=0");
    let e = &list["entries"][0];
    assert_eq!(
        (e["kind"].as_str(), e["jti"].as_str(), e["iss"].as_str()),
        (Some("jti"), Some("tok-1"), Some("https://idp")),
        "{list}"
    );
    assert_eq!(e["expires_at"].as_u64(), Some(now + 1800));
    // Attributed to the door and the operator whose credential the client used.
    assert_eq!(e["by"], "rfc7009:admin", "{list}");
    let (_, trail) = a.get("/v1/audit");
    assert_eq!(trail["records"][0]["action"], "rfc7009_revoke", "{trail}");
    assert_eq!(trail["records"][0]["status"], 200, "{trail}");
    agent.wait_applied(1).await;
    assert!(matches!(
        agent.state.decide(&revmesh_protocol::TokenRef {
            jti: Some("tok-1"),
            iss: Some("https://idp"),
            ..Default::default()
        }),
        revmesh_agent::state::Decision::Revoked { .. }
    ));
    // No token: 400 invalid_request; no admin token: 401.
    let (status, body) = revoke("token_type_hint=access_token".into(), token);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_request"));
    assert_eq!(revoke(format!("token={good}"), None).0, 401);

    // SIGHUP re-reads the key files: a rotated secret is used without a restart.
    let rotated = "rfc7009-rotated-secret-0123456789abcdef";
    std::fs::write(&secret, rotated).unwrap();
    let newer = pyjwt(claims("tok-2", now + 1800), rotated);
    let pid = a.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    crate::util::wait_for(
        || {
            revoke(format!("token={newer}"), token);
            a.get("/v1/revocations?after=0").1["head"] == 2
        },
        "the rotated secret in force",
    )
    .await;
    assert!(a.child.try_wait().unwrap().is_none(), "SIGHUP never terminates the authority");
    agent.stop().await;
}
