//! The Envoy / Istio ext_authz gRPC door, driven by a client generated independently from
//! Envoy's published protos (Python `grpcio` + `xds-protos`), over the Unix socket and TCP.

use crate::util::{token, wait_for, AgentProc, Authority};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};

/// Runs the Python client against `target` with `cases`; one result per case.
fn client(target: &str, cases: Value) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ext_authz_client.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(target)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(cases.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ext_authz client failed (grpcio, xds-protos, grpcio-health-checking missing? \
         `pip install grpcio xds-protos grpcio-health-checking`, scripts/test installs them):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn by_name<'a>(results: &'a [Value], name: &str) -> &'a Value {
    results.iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("no result {name}"))
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_ext_authz_allows_refuses_and_reports_health_over_unix_and_tcp() {
    let adir = tempfile::tempdir().unwrap();
    let auth = Authority::start(adir.path(), 0, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let grpc_socket = dir.path().join("grpc.sock");
    let agent = AgentProc::start(
        dir.path(),
        &auth.url(),
        &[
            "--grpc-socket",
            grpc_socket.to_str().unwrap(),
            "--grpc-listen",
            "127.0.0.1:0",
            "--token-cookie",
            "session",
        ],
    );
    let grpc_tcp = agent.ready_field("grpc").expect("ready line names the gRPC address");
    wait_for(|| !agent.ask("PING").ends_with("log_id=none"), "agent in sync").await;
    let exp = crate::util::now() + 3600;
    auth.revoke(json!({"kind": "jti", "jti": "stolen", "expires_at": exp})).await;
    let good = token("good", "alice", json!({}));
    let stolen = token("stolen", "bob", json!({}));
    // A token with an empty `sub`: the agent must not let a client-supplied x-revmesh-sub through.
    let no_sub = token("nosub", "", json!({}));
    let cases = json!([
        {"name": "allow", "headers": {"authorization": bearer(&good), "x-revmesh-sub": "mallory"}},
        {"name": "revoked", "headers": {"authorization": bearer(&stolen)}},
        {"name": "invalid", "headers": {"authorization": "Bearer not.a.jwt"}},
        {"name": "no token", "headers": {"x-other": "1"}},
        {"name": "cookie", "headers": {"cookie": format!("theme=dark; session={good}")}},
        {"name": "no sub", "headers": {"authorization": bearer(&no_sub), "x-revmesh-sub": "mallory"}},
        {"name": "malformed", "empty": true},
        {"name": "oversized", "headers": {"authorization": bearer(&good), "x-pad": "a".repeat(100_000)}},
        {"name": "health", "health": true},
        {"name": "health authz", "health": true, "service": "envoy.service.auth.v3.Authorization"},
    ]);
    for target in [format!("unix:{}", grpc_socket.display()), grpc_tcp] {
        let r = client(&target, cases.clone());
        let allow = by_name(&r, "allow");
        assert_eq!(
            (allow["code"].as_i64(), allow["allowed"].as_bool()),
            (Some(0), Some(true)),
            "{target}: {allow}"
        );
        assert_eq!(allow["upstream_headers"]["x-revmesh-sub"], "alice", "{allow}");
        for name in ["revoked", "invalid", "no token"] {
            let d = by_name(&r, name);
            assert_eq!(d["code"].as_i64(), Some(16), "{name} is UNAUTHENTICATED: {d}");
            assert_eq!(d["http_status"].as_i64(), Some(401), "{name}: {d}");
            assert!(
                d["headers"]["www-authenticate"].as_str().unwrap_or("").starts_with("Bearer"),
                "{name}: {d}"
            );
        }
        assert_eq!(by_name(&r, "revoked")["headers"]["x-revmesh-verdict"], "revoked");
        assert_eq!(
            by_name(&r, "cookie")["allowed"],
            true,
            "the token cookie is read: {}",
            by_name(&r, "cookie")
        );
        let no_sub = by_name(&r, "no sub");
        assert_eq!(no_sub["allowed"], true, "{no_sub}");
        assert!(
            no_sub["removed_headers"].as_array().unwrap().iter().any(|h| h == "x-revmesh-sub"),
            "a client's own x-revmesh-sub is removed: {no_sub}"
        );
        assert_eq!(by_name(&r, "malformed")["grpc_error"], "INVALID_ARGUMENT");
        // tonic refuses a message over the decoding limit with OUT_OF_RANGE, before any decision.
        assert_eq!(by_name(&r, "oversized")["grpc_error"], "OUT_OF_RANGE");
        assert_eq!(by_name(&r, "health")["health"], "SERVING");
        assert_eq!(by_name(&r, "health authz")["health"], "SERVING");
    }
    // Every decision was counted once, by verdict (2 targets × allow, cookie, no sub = 6 ok).
    let metrics = crate::util::scrape(&agent.metrics);
    assert!(metrics.contains("revmesh_agent_checks_total{verdict=\"ok\"} 6"), "{metrics}");
    assert!(metrics.contains("revmesh_agent_checks_total{verdict=\"revoked\"} 2"), "{metrics}");
    drop(agent);
    auth.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_agent_answers_ext_authz_unavailable_503_under_on_stale_closed() {
    let dir = tempfile::tempdir().unwrap();
    let grpc_socket = dir.path().join("grpc.sock");
    // No authority answers on port 9: the agent never hears one and turns stale after 1 s.
    let agent = AgentProc::start(
        dir.path(),
        "ws://127.0.0.1:9",
        &["--grpc-socket", grpc_socket.to_str().unwrap(), "--max-staleness", "1s"],
    );
    let good = token("good", "alice", json!({}));
    wait_for(|| agent.ask(&format!("CHECK {good}")).starts_with("STALE"), "agent stale").await;
    let r = client(
        &format!("unix:{}", grpc_socket.display()),
        json!([{"name": "stale", "headers": {"authorization": bearer(&good)}}, {"name": "health", "health": true}]),
    );
    let stale = by_name(&r, "stale");
    assert_eq!(stale["code"].as_i64(), Some(14), "UNAVAILABLE: {stale}");
    assert_eq!(stale["http_status"].as_i64(), Some(503), "{stale}");
    assert_eq!(stale["headers"]["x-revmesh-verdict"], "stale");
    assert_eq!(by_name(&r, "health")["health"], "SERVING", "staleness is a verdict, not ill health");
}
