//! Nothing an agent enforces is withdrawn by accident: not by an authority whose store was
//! wiped or restored from an older backup, not by a lapse while a token still verifies.
//! Withdrawing is an explicit act, receipted like any revocation. Real agent processes, a real
//! authority on one port that is stopped and started again as an operator would.

use crate::util::{now, scrape, token, wait_for, AgentProc, Authority};
use serde_json::{json, Value};
use std::time::Duration;

fn metric(text: &str, name: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(-1.0)
}

/// The log id an agent's `PING` reports.
fn log_of(a: &AgentProc) -> String {
    a.ask("PING").rsplit("log_id=").next().unwrap_or_default().to_owned()
}

async fn admin(auth: &Authority, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (addr, token, method, path) =
        (auth.admin.to_string(), auth.token.clone(), method.to_owned(), path.to_owned());
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    tokio::task::spawn_blocking(move || {
        let (status, text) = revmesh_authority::cli::http_request(
            &addr,
            &method,
            &path,
            Some(&token),
            body.as_bytes(),
            Duration::from_secs(30),
        )
        .unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    })
    .await
    .unwrap()
}

fn client(auth: &Authority, dir: &std::path::Path) -> revmesh_authority::config::ClientArgs {
    revmesh_authority::config::ClientArgs {
        admin: format!("http://{}", auth.admin),
        token_file: Some(dir.join("admin.token")),
        ca_file: None,
        cert_file: None,
        key_file: None,
        json: false,
    }
}

/// The authority's data dir is lost: a fresh authority on the same address has a new log.
/// Both agents adopt it, keep refusing what they enforced (a token and a subject, revoked with
/// receipts naming both), also after a kill -9 right after carrying them forward, and the
/// authority says loudly that agents hold what its log never had. A withdrawal in the new log
/// lifts a carried-forward revocation by its identifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_store_lifts_nothing_and_the_authority_says_so() {
    let port = crate::util::free_port();
    let (first, wiped) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let auth = Authority::start(first.path(), port, &[]).await;
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut agents: Vec<AgentProc> =
        dirs.iter().map(|d| AgentProc::start(d.path(), &auth.url(), &[])).collect();
    for a in &agents {
        wait_for(|| !a.ask("PING").ends_with("log_id=none"), "agent in sync").await;
    }
    let leaked = token("leaked-1", "alice", json!({}));
    let user = token("t-2", "mallory", json!({}));
    for body in [json!({"kind": "jti", "jti": "leaked-1"}), json!({"kind": "subject", "sub": "mallory"})] {
        let receipt = auth.revoke(body).await;
        assert_eq!(receipt["acked"].as_array().unwrap().len(), 2, "{receipt}");
    }
    let old_log = log_of(&agents[0]);
    auth.stop().await;

    // The same address, an empty data dir.
    let auth = Authority::start(wiped.path(), port, &[]).await;
    for a in &agents {
        wait_for(|| log_of(a) != old_log && !a.ask("PING").contains("lag_ms=0 stale"), "the new log adopted")
            .await;
    }
    for a in &agents {
        assert!(a.ask(&format!("CHECK {leaked}")).starts_with("REVOKED kind=jti"), "jti kept");
        assert!(a.ask(&format!("CHECK {user}")).starts_with("REVOKED kind=subject"), "subject kept");
    }
    let (_, m) = admin(&auth, "GET", "/metrics", None).await;
    assert_eq!(metric(m.as_str().unwrap(), "revmesh_authority_agents_ahead_of_log "), 2.0);

    // kill -9 right after the carry-forward, restart: still refused, and in the new log.
    let new_log = log_of(&agents[0]);
    agents[0].kill9();
    agents[0] = AgentProc::start(dirs[0].path(), &auth.url(), &[]);
    assert!(agents[0].ask(&format!("CHECK {leaked}")).starts_with("REVOKED kind=jti"));
    assert!(agents[0].ask(&format!("CHECK {user}")).starts_with("REVOKED kind=subject"));
    wait_for(|| log_of(&agents[0]) == new_log, "the new log kept across the restart").await;

    // Lifting a carried-forward revocation: revoke it again in the new log, withdraw that.
    let again = auth.revoke(json!({"kind": "jti", "jti": "leaked-1"})).await;
    let seq = again["seq"].as_u64().unwrap();
    let (status, w) =
        admin(&auth, "DELETE", &format!("/v1/revocations/{seq}?wait=all&timeout_ms=20000"), None).await;
    assert_eq!(status, 201, "{w}");
    assert_eq!(w["acked"].as_array().unwrap().len(), 2, "{w}");
    for a in &agents {
        assert!(a.ask(&format!("CHECK {leaked}")).starts_with("OK "), "withdrawn everywhere");
        assert!(a.ask(&format!("CHECK {user}")).starts_with("REVOKED kind=subject"), "the rest stays");
    }
    auth.stop().await;
}

/// The store is restored from an older backup (`backup` while serving, `restore`): the log
/// lost a later revocation. Agents that applied it keep refusing, and the authority says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_restored_from_an_older_backup_keeps_refusing() {
    let port = crate::util::free_port();
    let adir = tempfile::tempdir().unwrap();
    let auth = Authority::start(adir.path(), port, &[]).await;
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let agents: Vec<AgentProc> = dirs.iter().map(|d| AgentProc::start(d.path(), &auth.url(), &[])).collect();
    for a in &agents {
        wait_for(|| !a.ask("PING").ends_with("log_id=none"), "agent in sync").await;
    }
    let before = token("before", "u1", json!({}));
    let after = token("after", "u2", json!({"sid": "s-after"}));
    auth.revoke(json!({"kind": "jti", "jti": "before"})).await;
    let file = adir.path().join("backup.redb");
    let args =
        revmesh_authority::config::BackupArgs { file: file.clone(), client: client(&auth, adir.path()) };
    let code = tokio::task::spawn_blocking(move || revmesh_authority::cli::backup(&args)).await.unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    let receipt = auth.revoke(json!({"kind": "session", "sid": "s-after"})).await;
    assert_eq!(receipt["acked"].as_array().unwrap().len(), 2, "{receipt}");
    let old_log = log_of(&agents[0]);
    auth.stop().await;

    let restore = revmesh_authority::config::RestoreArgs {
        file: Some(file),
        data_dir: adir.path().to_owned(),
        store: None,
    };
    assert_eq!(revmesh_authority::cli::restore(&restore), std::process::ExitCode::SUCCESS);
    let auth = Authority::start(adir.path(), port, &[]).await;
    let (_, status) = admin(&auth, "GET", "/v1/status", None).await;
    assert_eq!(status["head"], 1, "the backup holds one entry: {status}");
    assert_ne!(status["log_id"].as_str().unwrap(), old_log, "a restored log has a new id");
    for a in &agents {
        wait_for(|| log_of(a) == status["log_id"].as_str().unwrap(), "the restored log adopted").await;
        assert!(a.ask(&format!("CHECK {before}")).starts_with("REVOKED kind=jti"));
        assert!(
            a.ask(&format!("CHECK {after}")).starts_with("REVOKED kind=session"),
            "lost by the restore, kept"
        );
    }
    let (_, m) = admin(&auth, "GET", "/metrics", None).await;
    assert_eq!(metric(m.as_str().unwrap(), "revmesh_authority_agents_ahead_of_log "), 2.0);
    // The restored log goes on: a new revocation reaches both.
    let receipt = auth.revoke(json!({"kind": "jti", "jti": "next"})).await;
    assert_eq!(receipt["acked"].as_array().unwrap().len(), 2, "{receipt}");
    auth.stop().await;
}

/// A `key` revocation of the key in use, by mistake: no default expiry (a leaked key would be
/// trusted again a day later), the agent reports the revoked key it still verifies with, and a
/// withdrawal lifts it at every agent with a receipt. Withdrawing twice is idempotent; an
/// unknown seq is 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistaken_key_revocation_is_withdrawn_at_every_agent() {
    let minted = {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mint_rsa.py");
        let out = std::process::Command::new("python3")
            .arg(script)
            .arg("k-in-use")
            .arg(now().to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "PyJWT failed (scripts/test installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let adir = tempfile::tempdir().unwrap();
    let auth = Authority::start(adir.path(), 0, &[]).await;
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let agents: Vec<AgentProc> = dirs
        .iter()
        .map(|d| {
            let jwks = d.path().join("jwks.json");
            std::fs::write(&jwks, json!({"keys": [minted["jwk"]]}).to_string()).unwrap();
            AgentProc::start(d.path(), &auth.url(), &["--jwks-file", jwks.to_str().unwrap()])
        })
        .collect();
    let signed = minted["token"].as_str().unwrap().to_owned();
    for a in &agents {
        wait_for(|| !a.ask("PING").ends_with("log_id=none"), "agent in sync").await;
        assert!(a.ask(&format!("CHECK {signed}")).starts_with("OK "));
    }
    let receipt = auth.revoke(json!({"kind": "key", "kid": "k-in-use", "reason": "oops"})).await;
    let seq = receipt["seq"].as_u64().unwrap();
    let (_, entry) = admin(&auth, "GET", &format!("/v1/revocations/{seq}"), None).await;
    assert_eq!(entry["expires_at"], u64::MAX, "kept until withdrawn: {entry}");
    for a in &agents {
        assert_eq!(a.ask(&format!("CHECK {signed}")), format!("REVOKED kind=key seq={seq}"));
        assert_eq!(metric(&scrape(&a.metrics), "revmesh_agent_revoked_keys_configured "), 1.0);
    }
    let (status, w) = admin(
        &auth,
        "DELETE",
        &format!("/v1/revocations/{seq}?wait=all&timeout_ms=20000"),
        Some(json!({"reason": "revoked the key in use by mistake"})),
    )
    .await;
    assert_eq!(status, 201, "{w}");
    assert_eq!(w["withdraws"], seq);
    assert_eq!(w["acked"].as_array().unwrap().len(), 2, "{w}");
    for a in &agents {
        assert!(a.ask(&format!("CHECK {signed}")).starts_with("OK "), "the fleet answers OK again");
        assert_eq!(metric(&scrape(&a.metrics), "revmesh_agent_revoked_keys_configured "), 0.0);
    }
    let (_, listed) = admin(&auth, "GET", &format!("/v1/revocations/{}", w["seq"]), None).await;
    assert_eq!(listed["kind"], "withdrawal", "{listed}");
    assert_eq!(listed["kid"], "k-in-use");
    assert_eq!(listed["reason"], "revoked the key in use by mistake");
    let (status, again) = admin(&auth, "DELETE", &format!("/v1/revocations/{seq}"), None).await;
    assert_eq!(
        (status, &again["seq"], &again["already_withdrawn"]),
        (200, &w["seq"], &json!(true)),
        "{again}"
    );
    let (status, _) = admin(&auth, "DELETE", "/v1/revocations/999", None).await;
    assert_eq!(status, 404);
    let (status, _) = admin(&auth, "DELETE", &format!("/v1/revocations/{}", w["seq"]), None).await;
    assert_eq!(status, 400, "a withdrawal is not withdrawn");
    auth.stop().await;
}

/// No lapse while a token still verifies: the agent learns the authority's --max-token-ttl
/// (shorter than its own) and refuses a token meant to live longer, with or without `iat`, so
/// a subject revocation that lapses after that time lapses only once nothing it covers can
/// verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_living_longer_than_the_limit_are_refused() {
    let adir = tempfile::tempdir().unwrap();
    let auth = Authority::start(adir.path(), 0, &["--max-token-ttl", "2s"]).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProc::start(dir.path(), &auth.url(), &["--max-token-ttl", "1h"]);
    wait_for(|| !agent.ask("PING").ends_with("log_id=none"), "agent in sync").await;
    let t = now();
    let long = token("long", "u", json!({"iat": t, "exp": t + 3_600}));
    let short = token("short", "u", json!({"iat": t, "exp": t + 2}));
    let no_iat = token("no-iat", "u", json!({"iat": null, "exp": t + 600}));
    assert_eq!(agent.ask(&format!("CHECK {long}")), "INVALID reason=lifetime");
    assert_eq!(agent.ask(&format!("CHECK {no_iat}")), "INVALID reason=lifetime");
    assert!(agent.ask(&format!("CHECK {short}")).starts_with("OK "));
    // The subject revocation lapses at issued_before + 2 s (+ the grace), issued_before being
    // now + 5 s by default (providers' clocks running ahead): every token of the subject it
    // covers that the agent accepts has expired by then.
    let receipt = auth.revoke(json!({"kind": "subject", "sub": "u"})).await;
    let seq = receipt["seq"].as_u64().unwrap();
    let (_, entry) = admin(&auth, "GET", &format!("/v1/revocations/{seq}"), None).await;
    assert!(entry["expires_at"].as_u64().unwrap() <= now() + 5 + 2, "{entry}");
    assert!(agent.ask(&format!("CHECK {short}")).starts_with("REVOKED kind=subject"));
    auth.stop().await;

    // Without an authority the agent's own limit applies.
    let dir = tempfile::tempdir().unwrap();
    let alone =
        AgentProc::start(dir.path(), "ws://127.0.0.1:9", &["--max-token-ttl", "1h", "--on-stale", "open"]);
    let day = token("day", "v", json!({"iat": t, "exp": t + 86_000}));
    assert_eq!(alone.ask(&format!("CHECK {day}")), "INVALID reason=lifetime");
    assert!(alone.ask(&format!("CHECK {long}")).starts_with("OK "), "an hour is within an hour");
}
