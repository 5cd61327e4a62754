//! Shared Signals: SETs minted by PyJWT as SSF transmitters send them (CAEP and RISC events,
//! every subject format), pushed per RFC 8935 to the real authority; hostile SETs store nothing;
//! a store that cannot commit answers 503 and the retried SET is stored once.

use crate::util::{wait_for, Agent, Authority};
use revmesh_agent::state::Decision;
use revmesh_protocol::TokenRef;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::Command;

const ISSUER: &str = "https://idp.example/";
const ALIAS: &str = "https://idp.example/oauth2/default";
const AUDIENCE: &str = "https://revmesh.example/ssf";
const PUSH_TOKEN: &str = "push-token-0123456789abcdef";
const SET_MEDIA: &str = "application/secevent+jwt";

fn mint(jwks: &std::path::Path, now: u64) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mint_set.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(jwks)
        .args([ISSUER, AUDIENCE])
        .arg(now.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "minting with PyJWT failed (`pip install 'pyjwt[crypto]'`, scripts/test installs it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One RFC 8935 push, as a transmitter's HTTP client sends it.
pub fn push(addr: &str, token: Option<&str>, media: &str, body: &[u8]) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "POST /v1/ssf/events HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: {media}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading all of a large body.
    let _ = s.write_all(body);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    let status = reply.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())))
}

fn start(dir: &std::path::Path, jwks: &std::path::Path, extra: &[&str]) -> Authority {
    let tokens = dir.join("push.tokens");
    std::fs::write(&tokens, format!("# the transmitter's\n{PUSH_TOKEN}\n")).unwrap();
    let transmitter = format!("{ISSUER}={}", jwks.display());
    let alias = format!("{ISSUER}={ALIAS}");
    let mut args = vec![
        "--ssf-transmitter",
        &transmitter,
        "--ssf-audience",
        AUDIENCE,
        "--ssf-alias",
        &alias,
        "--ssf-push-token-file",
        tokens.to_str().unwrap(),
        "--jwks-min-refresh",
        "1s",
    ];
    args.extend_from_slice(extra);
    Authority::start(&dir.join("a"), &args)
}

fn revoked(agent: &Agent, t: TokenRef<'_>) -> bool {
    matches!(agent.state.decide(&TokenRef { iat: t.iat.or(Some(1)), ..t }), Decision::Revoked { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_as_transmitters_send_them_revoke_and_hostile_ones_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let sets = mint(&jwks, now);
    let a = start(dir.path(), &jwks, &[]);
    let agent = Agent::start(vec![a.ws_url()], "ssf-agent");
    let send = |set: &str| push(&a.admin, Some(PUSH_TOKEN), SET_MEDIA, set.as_bytes());

    // Hostile SETs first: each refused with its RFC 8935 `err`, nothing stored.
    let hostile: HashMap<String, String> = serde_json::from_value(sets["hostile"].clone()).unwrap();
    let expect = [
        ("alg_none", "invalid_key"),
        ("hmac_with_public_key", "invalid_key"),
        ("other_key", "invalid_key"),
        ("unknown_kid", "invalid_key"),
        ("wrong_typ", "invalid_request"),
        ("logout_typ", "invalid_request"),
        ("wrong_aud", "invalid_audience"),
        ("unknown_issuer", "invalid_issuer"),
        ("two_events", "invalid_request"),
        ("no_events", "invalid_request"),
        ("too_old", "invalid_request"),
        ("future", "invalid_request"),
        ("no_jti", "invalid_request"),
        ("email_subject", "invalid_request"),
        ("no_subject", "invalid_request"),
        ("foreign_iss_sub", "invalid_request"),
        ("garbage", "invalid_request"),
    ];
    assert_eq!(expect.len(), hostile.len(), "every hostile SET is tried");
    for (name, err) in expect {
        let (status, v) = send(&hostile[name]);
        assert_eq!((status, v["err"].as_str()), (400, Some(err)), "{name}: {v}");
        assert!(v["description"].as_str().is_some_and(|d| !d.is_empty()), "{name}: {v}");
    }
    let (_, v) = send(&hostile["email_subject"]);
    assert!(v["description"].as_str().unwrap().contains("`email`"), "the format is named: {v}");
    // The push itself: its token, its media type, its size.
    let good = sets["account_purged"].as_str().unwrap();
    assert_eq!(
        push(&a.admin, None, SET_MEDIA, good.as_bytes()),
        (401, serde_json::json!({"err": "authentication_failed"}))
    );
    assert_eq!(push(&a.admin, Some("wrong-token-0123456789"), SET_MEDIA, good.as_bytes()).0, 401);
    assert_eq!(
        push(&a.admin, Some(&a.token), SET_MEDIA, good.as_bytes()).0,
        401,
        "the admin token is not a push token"
    );
    let (status, v) = push(&a.admin, Some(PUSH_TOKEN), "application/json", good.as_bytes());
    assert_eq!((status, v["err"].as_str()), (400, Some("invalid_request")), "{v}");
    assert_eq!(push(&a.admin, Some(PUSH_TOKEN), SET_MEDIA, &vec![b'a'; 1 << 20]).0, 413, "a 1 MB body");
    assert_eq!(a.get("/v1/revocations?after=0").1["head"], 0, "nothing stored");

    // As transmitters send them: 202 once durable.
    let storing = [
        "session_revoked_complex",
        "session_revoked_user",
        "credential_change",
        "account_disabled_in_event",
        "account_purged",
        "credential_compromise",
        "sessions_revoked",
        "jwt_id",
        "aliases",
    ];
    for name in storing {
        let (status, v) = send(sets[name].as_str().unwrap());
        assert_eq!(status, 202, "{name}: {v}");
    }
    for name in ["credential_create", "verification", "stream_updated", "token_claims_change"] {
        let (status, v) = send(sets[name].as_str().unwrap());
        assert_eq!(status, 202, "{name}: {v}");
    }
    // A replay (the transmitter missed our 202): 202 again, stored once.
    assert_eq!(send(sets["credential_change"].as_str().unwrap()).0, 202);
    let (_, list) = a.get("/v1/revocations?after=0");
    let entries = list["entries"].as_array().unwrap().clone();
    // Opaque users are revoked under the issuer and its alias: two entries for user-5.
    assert_eq!(entries.len(), storing.len() + 1, "{list}");
    assert!(entries.iter().all(|e| e["by"] == format!("ssf:{ISSUER}").as_str()), "{list}");
    assert!(entries.iter().all(|e| e["iss"] == ISSUER || e["iss"] == ALIAS), "{list}");
    let head = list["head"].as_u64().unwrap();
    agent.wait_applied(head).await;

    let user = |sub: &'static str, iss: &'static str, iat: u64| TokenRef {
        sub: Some(sub),
        iss: Some(iss),
        iat: Some(iat),
        ..Default::default()
    };
    // session-revoked with a session: that session only, under the user's issuer.
    let session = |sid: &'static str, iss: &'static str| TokenRef {
        sid: Some(sid),
        sub: Some("user-1"),
        iss: Some(iss),
        ..Default::default()
    };
    assert!(revoked(&agent, session("sess-A", ISSUER)));
    assert!(!revoked(&agent, session("sess-B", ISSUER)), "another session of the user");
    assert!(
        !revoked(&agent, session("sess-A", "https://another-idp.example/")),
        "another provider's session"
    );
    // Users, up to the event's time, scoped.
    for (sub, iss, at) in [
        ("user-2", ISSUER, now - 1),
        ("user-3", ISSUER, now - 3),
        ("user-5", ISSUER, now),
        ("user-5", ALIAS, now),
        ("user-6", ISSUER, now),
        ("user-7", ALIAS, now),
        ("user-8", ISSUER, now),
        ("user-10", ISSUER, now),
    ] {
        assert!(revoked(&agent, user(sub, iss, at)), "{sub} at {iss}, issued at the event");
        assert!(!revoked(&agent, user(sub, iss, at + 1)), "{sub}: a token issued after the event's second");
        assert!(!revoked(&agent, user(sub, "https://another-idp.example/", 1)), "{sub} of another provider");
    }
    assert!(!revoked(&agent, user("user-7", ISSUER, 1)), "iss_sub names the alias only");
    assert!(!revoked(&agent, user("user-4", ISSUER, 1)), "a credential created revokes nothing");
    assert!(!revoked(&agent, user("user-11", ISSUER, 1)), "token-claims-change is not in the table");
    let tok = TokenRef { jti: Some("tok-9"), iss: Some(ISSUER), ..Default::default() };
    assert!(revoked(&agent, tok), "jwt_id: that token");

    // Status, the audit trail, the metrics.
    let (status, st) = a.get("/v1/ssf/status");
    assert_eq!(status, 200, "{st}");
    let t = &st["transmitters"][0];
    assert_eq!(t["issuer"], ISSUER, "{st}");
    assert_eq!(t["verification"]["state"], "c3RhdGUtMQ", "{st}");
    assert_eq!(t["stream"]["status"], "paused", "{st}");
    assert_eq!(t["counts"]["accepted"], storing.len() + 2, "{st}");
    assert_eq!(t["counts"]["ignored"], 3, "two not in the table, one replay: {st}");
    let (_, trail) = a.get("/v1/audit");
    let records: Vec<&Value> =
        trail["records"].as_array().unwrap().iter().filter(|r| r["action"] == "ssf_event").collect();
    assert_eq!(records.len(), storing.len(), "{trail}");
    assert!(
        records.iter().all(|r| r["status"] == 202 && r["target"].as_str().unwrap().starts_with("set ")),
        "{trail}"
    );
    let metrics = a.metrics();
    for line in [
        "revmesh_authority_ssf_events_total{event=\"session_revoked\",result=\"accepted\"} 3",
        "revmesh_authority_ssf_events_total{event=\"account_disabled\",result=\"accepted\"} 2",
        "revmesh_authority_ssf_events_total{event=\"credential_change\",result=\"ignored\"} 2",
        "revmesh_authority_ssf_events_total{event=\"verification\",result=\"accepted\"} 1",
        "revmesh_authority_ssf_events_total{event=\"other\",result=\"ignored\"} 1",
        "revmesh_authority_ssf_events_total{event=\"other\",result=\"refused\"} 19",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    agent.stop().await;
}

/// A store that cannot commit: the push gets 503 (the transmitter retries), and the retry, once
/// the disk has room again, is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_commit_answers_503_and_the_retry_is_stored_once() {
    let fs = crate::disk::Tmpfs::mount("24m");
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let sets = mint(&jwks, now);
    let tokens = dir.path().join("push.tokens");
    std::fs::write(&tokens, format!("{PUSH_TOKEN}\n")).unwrap();
    let transmitter = format!("{ISSUER}={}", jwks.display());
    let a = Authority::start(
        fs.path(),
        &[
            "--ssf-transmitter",
            &transmitter,
            "--ssf-audience",
            AUDIENCE,
            "--ssf-push-token-file",
            tokens.to_str().unwrap(),
            "--store-timeout",
            "2s",
        ],
    );
    let set = sets["account_purged"].as_str().unwrap().as_bytes();
    let filler = fs.fill();
    // The store's own slack first: revoke until the store refuses.
    for i in 0.. {
        let body = format!(r#"{{"kind":"jti","jti":"fill-{i}","expires_at":4000000000}}"#);
        if a.post("/v1/revocations", &body).0 == 503 {
            break;
        }
    }
    let (status, v) = push(&a.admin, Some(PUSH_TOKEN), SET_MEDIA, set);
    assert_eq!(status, 503, "{v}");
    std::fs::remove_file(filler).unwrap();
    let ready = || crate::util::http(&a.admin, "GET", "/readyz", None, b"").0 == 200;
    wait_for(ready, "/readyz once the disk has room").await;
    assert_eq!(push(&a.admin, Some(PUSH_TOKEN), SET_MEDIA, set).0, 202);
    assert_eq!(push(&a.admin, Some(PUSH_TOKEN), SET_MEDIA, set).0, 202, "and its replay");
    let (_, list) = a.get("/v1/revocations?after=0");
    let entries = list["entries"].as_array().unwrap();
    let from_ssf: Vec<&Value> = entries.iter().filter(|e| e["sub"] == "user-6").collect();
    assert_eq!(from_ssf.len(), 1, "stored once: {list}");
}
