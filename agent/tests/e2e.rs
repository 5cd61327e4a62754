//! End to end: a real authority, real agent processes, real sockets.

use crate::util::{token, wait_for, AgentProc, Authority};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_is_refused_by_every_agent_once_the_receipt_says_so() {
    let adir = tempfile::tempdir().unwrap();
    let auth = Authority::start(adir.path(), 0, &[]).await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let agents: Vec<AgentProc> = dirs.iter().map(|d| AgentProc::start(d.path(), &auth.url(), &[])).collect();
    let tokens = [
        (
            "jti",
            token("t-jti", "u1", json!({})),
            json!({"kind": "jti", "jti": "t-jti", "expires_at": crate::util::now() + 3600}),
        ),
        ("subject", token("t-sub", "u-sub", json!({})), json!({"kind": "subject", "sub": "u-sub"})),
        ("key", token("t-key", "u3", json!({"kid": "k-1"})), json!({"kind": "key", "kid": "k-1"})),
        ("session", token("t-sid", "u4", json!({"sid": "s-1"})), json!({"kind": "session", "sid": "s-1"})),
    ];
    // Before: every agent accepts every token (once it is in sync).
    for a in &agents {
        wait_for(
            || a.ask("PING").contains("log_id=") && !a.ask("PING").ends_with("log_id=none"),
            "agent in sync",
        )
        .await;
        for (_, t, _) in &tokens {
            let ans = a.ask(&format!("CHECK {t}"));
            assert!(ans.starts_with("OK "), "{ans}");
        }
    }
    for (kind, t, body) in &tokens {
        let receipt = auth.revoke(body.clone()).await;
        assert_eq!(receipt["acked"].as_array().unwrap().len(), 3, "{receipt}");
        assert!(receipt["pending"].as_array().unwrap().is_empty());
        let seq = receipt["seq"].as_u64().unwrap();
        for a in &agents {
            assert_eq!(a.ask(&format!("CHECK {t}")), format!("REVOKED kind={kind} seq={seq}"));
        }
    }
    // A token of the same subject issued after the subject revocation is fine.
    let later = token("t-later", "u-sub", json!({"iat": crate::util::now() + 5}));
    assert!(agents[0].ask(&format!("CHECK {later}")).starts_with("OK "));
    auth.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_restarted_without_authority_still_refuses_and_staleness_follows_the_policy() {
    let adir = tempfile::tempdir().unwrap();
    let auth = Authority::start(adir.path(), 0, &[]).await;
    let port = auth.agent.port();
    let url = auth.url();
    let (d_closed, d_open) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let stale_args = ["--max-staleness", "1s"];
    let mut closed = AgentProc::start(d_closed.path(), &url, &stale_args);
    let open = AgentProc::start(d_open.path(), &url, &[&stale_args[..], &["--on-stale", "open"]].concat());
    let bad = token("leaked", "mallory", json!({}));
    let good = token("fine", "alice", json!({}));
    let receipt =
        auth.revoke(json!({"kind": "jti", "jti": "leaked", "expires_at": crate::util::now() + 3600})).await;
    assert_eq!(receipt["acked"].as_array().unwrap().len(), 2, "{receipt}");

    // kill -9, authority gone, restart: the persisted set answers at once.
    closed.kill9();
    auth.stop().await;
    let closed = AgentProc::start(d_closed.path(), &url, &stale_args);
    assert!(closed.ask(&format!("CHECK {bad}")).starts_with("REVOKED kind=jti"));

    // Past --max-staleness: closed says STALE, open says OK with stale=1; revoked stays revoked.
    wait_for(
        || closed.ask(&format!("CHECK {good}")).starts_with("STALE lag_ms="),
        "closed agent to go stale",
    )
    .await;
    wait_for(|| open.ask(&format!("CHECK {good}")).ends_with("stale=1"), "open agent to go stale").await;
    assert!(open.ask(&format!("CHECK {good}")).starts_with("OK "));
    assert!(open.ask(&format!("CHECK {bad}")).starts_with("REVOKED"));
    assert!(closed.ask(&format!("CHECK {bad}")).starts_with("REVOKED"));

    // The authority comes back on the same address: both are fresh again.
    let auth = Authority::start(adir.path(), port, &[]).await;
    wait_for(
        || {
            let a = closed.ask(&format!("CHECK {good}"));
            a.starts_with("OK ") && !a.contains("stale=1")
        },
        "closed agent fresh again",
    )
    .await;
    wait_for(|| !open.ask(&format!("CHECK {good}")).contains("stale=1"), "open agent fresh again").await;
    let metrics = revmesh_authority::client::http_request(
        &closed.metrics,
        "GET",
        "/metrics",
        None,
        b"",
        std::time::Duration::from_secs(5),
    )
    .unwrap()
    .1;
    for name in [
        "revmesh_agent_checks_total{verdict=\"revoked\"}",
        "revmesh_agent_connected 1",
        "revmesh_agent_applied_seq 1",
    ] {
        assert!(metrics.contains(name), "{name} missing in\n{metrics}");
    }
    auth.stop().await;
}
