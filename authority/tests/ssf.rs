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
    crate::util::pyjwt_script("mint_set.py", jwks, ISSUER, AUDIENCE, now)
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
    let flags = [
        "--ssf-transmitter",
        &transmitter,
        "--ssf-audience",
        AUDIENCE,
        "--ssf-push-token-file",
        tokens.to_str().unwrap(),
        "--store-timeout",
        "2s",
    ];
    let a = Authority::start(fs.path(), &flags);
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

    // After a restart the authority still knows it (from the audit trail): a transmitter that
    // missed our 202 and delivers it again gets 202, and nothing is stored twice.
    let mut a = a;
    a.kill9();
    let a = Authority::start(fs.path(), &flags);
    assert_eq!(push(&a.admin, Some(PUSH_TOKEN), SET_MEDIA, set).0, 202);
    let (_, list) = a.get("/v1/revocations?after=0&limit=1000");
    let n = list["entries"].as_array().unwrap().iter().filter(|e| e["sub"] == "user-6").count();
    assert_eq!(n, 1, "stored once across the restart: {list}");
}

/// The transmitter of `ssf_transmitter.py`, written from the SSF specs; killed on drop.
pub struct Transmitter {
    child: std::process::Child,
    pub issuer: String,
    pub jwks: std::path::PathBuf,
    pub mgmt_token: std::path::PathBuf,
}

impl Drop for Transmitter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Transmitter {
    pub fn start(dir: &std::path::Path) -> Transmitter {
        use std::io::BufRead;
        let jwks = dir.join("transmitter-jwks.json");
        let mgmt_token = dir.join("transmitter.token");
        std::fs::write(&mgmt_token, "mgmt-token-0123456789abcdef\n").unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ssf_transmitter.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(&jwks)
            .args(["mgmt-token-0123456789abcdef", AUDIENCE])
            .current_dir("/")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            panic!("the transmitter did not start (`pip install 'pyjwt[crypto]'`, scripts/test installs it): {line:?}")
        });
        Transmitter { child, issuer: v["issuer"].as_str().unwrap().to_owned(), jwks, mgmt_token }
    }

    fn addr(&self) -> &str {
        self.issuer.trim_start_matches("http://")
    }

    /// Signs and queues an event on every stream; returns the SETs' `jti`s.
    pub fn emit(&self, event: &str, payload: Value, sub_id: Value) -> Vec<String> {
        let body = serde_json::json!({"event": event, "payload": payload, "sub_id": sub_id});
        let (status, v) =
            crate::util::http(self.addr(), "POST", "/control/emit", None, body.to_string().as_bytes());
        assert_eq!(status, 200, "{v}");
        serde_json::from_value(v["jtis"].clone()).unwrap()
    }

    pub fn log(&self) -> Value {
        crate::util::http(self.addr(), "GET", "/control/log", None, b"").1
    }

    pub fn config_url(&self) -> String {
        format!("{}/.well-known/ssf-configuration", self.issuer)
    }

    /// The authority's flags to trust it.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--ssf-transmitter".into(),
            format!("{}={}", self.issuer, self.jwks.display()),
            "--ssf-audience".into(),
            AUDIENCE.into(),
        ]
    }

    /// `revmesh-authority ssf register …`: its stdout, asserting success.
    pub fn register(&self, delivery: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_revmesh-authority"))
            .args(["ssf", "register", "--config-url", &self.config_url(), "--token-file"])
            .arg(&self.mgmt_token)
            .args(delivery)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "ssf register: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout
    }
}

const CAEP_SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const RISC_ACCOUNT_DISABLED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-disabled";

fn start_with(dir: &std::path::Path, t: &Transmitter, extra: &[&str]) -> Authority {
    let mut args = t.flags();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Authority::start(dir, &args)
}

/// The transmitter's whole push conversation: `ssf register` creates the stream with our push
/// URL and token, the verification event arrives and shows in the status, and a session
/// revoked at the transmitter is refused by the agents; a SET we cannot act on is answered
/// with an RFC 8935 error the transmitter records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_push_stream_verifies_and_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let t = Transmitter::start(dir.path());
    let push_tokens = dir.path().join("push.tokens");
    std::fs::write(&push_tokens, format!("{PUSH_TOKEN}\n")).unwrap();
    let a = start_with(&dir.path().join("a"), &t, &["--ssf-push-token-file", push_tokens.to_str().unwrap()]);
    let agent = Agent::start(vec![a.ws_url()], "push-agent");
    let push_url = format!("http://{}/v1/ssf/events", a.admin);
    let out = t.register(&["--push-url", &push_url, "--push-token-file", push_tokens.to_str().unwrap()]);
    assert!(out.contains("status enabled"), "{out}");
    assert!(out.contains(CAEP_SESSION_REVOKED), "the session-revoked event is delivered: {out}");
    let state = out.split("state ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap().to_owned();
    wait_for(
        || a.get("/v1/ssf/status").1["transmitters"][0]["verification"]["state"] == state.as_str(),
        "the verification event with our state",
    )
    .await;

    let sub_id = serde_json::json!({"format": "complex", "session": {"format": "opaque", "id": "s-77"},
        "user": {"format": "iss_sub", "iss": t.issuer, "sub": "u-77"}});
    let jti = t.emit(CAEP_SESSION_REVOKED, serde_json::json!({}), sub_id).remove(0);
    let issuer: &'static str = Box::leak(t.issuer.clone().into_boxed_str());
    let session = TokenRef { sid: Some("s-77"), iss: Some(issuer), ..Default::default() };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    wait_for(|| revoked(&agent, session), "the agent to refuse the revoked session").await;
    assert!(std::time::Instant::now() < deadline, "within 2 s");
    assert!(t.log()["acked"].as_array().unwrap().iter().any(|j| j == jti.as_str()));

    let bad = t.emit(
        RISC_ACCOUNT_DISABLED,
        serde_json::json!({}),
        serde_json::json!({"format": "email", "email": "u@x"}),
    );
    wait_for(|| t.log()["set_errs"].get(&bad[0]).is_some(), "the transmitter to record our refusal").await;
    assert_eq!(t.log()["set_errs"][&bad[0]]["err"], "invalid_request");
    agent.stop().await;
}

/// Poll delivery: 250 SETs (more than one poll's worth, so `moreAvailable` is followed), each
/// acknowledged once stored and stored once; a SET we cannot act on comes back in `setErrs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_sets_are_acknowledged_once_stored_and_refusals_reported() {
    let dir = tempfile::tempdir().unwrap();
    let t = Transmitter::start(dir.path());
    let out = t.register(&["--poll"]);
    let url =
        out.split("poll endpoint ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap().to_owned();
    for i in 0..250 {
        t.emit(
            RISC_ACCOUNT_DISABLED,
            serde_json::json!({}),
            serde_json::json!({"format": "opaque", "id": format!("p-{i}")}),
        );
    }
    let bad = t.emit(
        RISC_ACCOUNT_DISABLED,
        serde_json::json!({}),
        serde_json::json!({"format": "phone_number", "phone_number": "+1"}),
    );
    let token = t.mgmt_token.to_str().unwrap().to_owned();
    let a = start_with(&dir.path().join("a"), &t, &["--ssf-poll", &url, "--ssf-poll-token-file", &token]);
    wait_for(|| t.log()["acked"].as_array().unwrap().len() >= 251, "every SET acknowledged").await;
    let log = t.log();
    assert_eq!(log["set_errs"][&bad[0]]["err"], "invalid_request", "{log}");
    let (_, list) = a.get("/v1/revocations?after=0&limit=1000");
    let subs: std::collections::HashSet<&str> =
        list["entries"].as_array().unwrap().iter().filter_map(|e| e["sub"].as_str()).collect();
    assert_eq!(list["entries"].as_array().unwrap().len(), 250, "stored once each");
    assert_eq!(subs.len(), 250);
    assert!(log["polls"].as_u64().unwrap() >= 3, "more than one poll: {log}");
    let st = a.get("/v1/ssf/status").1;
    assert_eq!(st["poll"]["polling"], true, "{st}");
    assert!(st["poll"]["received"].as_u64().unwrap() >= 251, "{st}");
}

/// Kill -9 between a poll and its commit (the store cannot commit: its disk is full): the SET
/// was received and not acknowledged, so the transmitter delivers it again to the restarted
/// authority, which stores it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polled_set_received_but_not_committed_before_kill9_is_delivered_again_and_stored_once() {
    let fs = crate::disk::Tmpfs::mount("24m");
    let dir = tempfile::tempdir().unwrap();
    let t = Transmitter::start(dir.path());
    let out = t.register(&["--poll"]);
    let url =
        out.split("poll endpoint ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap().to_owned();
    let token = t.mgmt_token.to_str().unwrap().to_owned();
    let flags =
        ["--ssf-poll", url.as_str(), "--ssf-poll-token-file", token.as_str(), "--store-timeout", "2s"];
    let mut a = start_with(fs.path(), &t, &flags);
    let filler = fs.fill();
    for i in 0.. {
        let body = format!(r#"{{"kind":"jti","jti":"fill-{i}","expires_at":4000000000}}"#);
        if a.post("/v1/revocations", &body).0 == 503 {
            break;
        }
    }
    let jti = t
        .emit(
            RISC_ACCOUNT_DISABLED,
            serde_json::json!({}),
            serde_json::json!({"format": "opaque", "id": "k9"}),
        )
        .remove(0);
    wait_for(|| t.log()["delivered"][&jti].as_u64().is_some(), "the SET to be polled").await;
    assert!(!t.log()["acked"].as_array().unwrap().iter().any(|j| j == jti.as_str()), "not acknowledged");
    a.kill9();
    std::fs::remove_file(filler).unwrap();
    let a = start_with(fs.path(), &t, &flags);
    wait_for(
        || t.log()["acked"].as_array().unwrap().iter().any(|j| j == jti.as_str()),
        "acknowledged after the restart",
    )
    .await;
    assert!(t.log()["delivered"][&jti].as_u64().unwrap() >= 2, "delivered again");
    let (_, list) = a.get("/v1/revocations?after=0&limit=1000");
    let n = list["entries"].as_array().unwrap().iter().filter(|e| e["sub"] == "k9").count();
    assert_eq!(n, 1, "stored once");
}
