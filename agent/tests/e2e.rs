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
    // Same second: a token minted in the very second of the subject revocation is revoked
    // (one-second resolution, fail closed).
    let minted = crate::util::now();
    let same = token("t-same", "frank", json!({"iat": minted}));
    assert!(agents[0].ask(&format!("CHECK {same}")).starts_with("OK "));
    let receipt = auth.revoke(json!({"kind": "subject", "sub": "frank", "issued_before": minted})).await;
    let seq = receipt["seq"].as_u64().unwrap();
    for a in &agents {
        assert_eq!(a.ask(&format!("CHECK {same}")), format!("REVOKED kind=subject seq={seq}"));
    }
    // A token of the same subject issued after the subject revocation is fine (beyond the 5 s
    // a revocation without `issued_before` allows for providers' clocks running ahead).
    let later = token("t-later", "u-sub", json!({"iat": crate::util::now() + 10}));
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
    // Both linked first: a receipt waits for the agents that are connected.
    for a in [&closed, &open] {
        wait_for(|| !a.ask("PING").ends_with("log_id=none"), "agent in sync").await;
    }
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
    let metrics = revmesh_authority::cli::http_request(
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

/// Heartbeats read late (the agent was stopped while its authority spoke, and the authority
/// then went silent) prove only when they were sent, on disk as in memory: the last contact the
/// agent persists for a warm restart is when they were sent, not when it read them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_read_late_are_persisted_as_of_when_they_were_sent() {
    let adir = tempfile::tempdir().unwrap();
    let auth = Authority::start(adir.path(), 0, &[]).await;
    let relay = crate::relay::Relay::start(auth.agent).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProc::start(dir.path(), &format!("ws://{}", relay.addr), &[]);
    let good = token("fine", "alice", json!({}));
    wait_for(|| agent.ask(&format!("CHECK {good}")).starts_with("OK "), "agent fresh").await;
    let heard_file = dir.path().join("data").join("heard");
    let heard = || -> u64 {
        std::fs::read_to_string(&heard_file).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
    };
    let signal = |sig: &str| {
        let pid = agent.child.id().to_string();
        assert!(std::process::Command::new("kill").args([sig, &pid]).status().unwrap().success());
    };
    // Stopped while its authority sends heartbeats (every 200 ms) into its socket; then the
    // network goes silent with the link open (nothing more arrives, not even a close).
    signal("-STOP");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    relay.black_hole();
    let silent_at = crate::util::now_ms();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let before = heard();
    signal("-CONT");
    wait_for(|| heard() != before, "the agent to read the waiting heartbeats and record its last contact")
        .await;
    let recorded = heard();
    assert!(
        recorded <= silent_at + 100,
        "recorded its last contact {} ms after the network went silent (when it read it)",
        recorded.saturating_sub(silent_at)
    );
    auth.stop().await;
}

/// A receipt at the applied level comes from memory, and the agent holds that fsync to share
/// it (here up to 1 s). Held writes are grouped, never dropped: a durable receipt that follows
/// covers what was held, across a kill -9 and a restart with no authority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_fsyncs_are_grouped_with_the_next_durable_write_and_survive_kill9() {
    let adir = tempfile::tempdir().unwrap();
    let auth = Authority::start(adir.path(), 0, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = AgentProc::start(dir.path(), &auth.url(), &["--applied-fsync-delay", "1s"]);
    wait_for(|| !agent.ask("PING").ends_with("log_id=none"), "agent in sync").await;
    let jti = |j: &str| json!({"kind": "jti", "jti": j, "expires_at": crate::util::now() + 3600});
    let mut jtis = Vec::new();
    for i in 0..3 {
        let j = format!("held-{i}");
        let r = auth.revoke_waiting(jti(&j), "applied").await;
        assert_eq!(
            (r["level"].as_str(), r["acked"].as_array().map(Vec::len)),
            (Some("applied"), Some(1)),
            "{r}"
        );
        assert!(agent.ask(&format!("CHECK {}", token(&j, "u", json!({})))).starts_with("REVOKED"));
        jtis.push(j);
    }
    let r = auth.revoke(jti("durable")).await;
    assert_eq!((r["level"].as_str(), r["acked"].as_array().map(Vec::len)), (Some("durable"), Some(1)), "{r}");
    jtis.push("durable".into());

    agent.kill9();
    let url = auth.url();
    auth.stop().await;
    let agent = AgentProc::start(dir.path(), &url, &[]);
    for j in &jtis {
        let ans = agent.ask(&format!("CHECK {}", token(j, "u", json!({}))));
        assert!(ans.starts_with("REVOKED kind=jti"), "{j} after kill -9: {ans}");
    }
}

/// Fills an authority with `n` jti revocations quickly (16 concurrent clients share commits).
async fn fill(auth: &Authority, prefix: &str, n: usize) {
    let admin = auth.admin.to_string();
    let token = auth.token.clone();
    let prefix = prefix.to_owned();
    tokio::task::spawn_blocking(move || {
        std::thread::scope(|s| {
            for w in 0..16 {
                let (admin, token, prefix) = (&admin, &token, &prefix);
                s.spawn(move || {
                    for i in (w..n).step_by(16) {
                        let body = format!(
                            r#"{{"kind":"jti","jti":"{prefix}-{i}","expires_at":{}}}"#,
                            crate::util::now() + 3600
                        );
                        let (status, text) = revmesh_authority::cli::http_request(
                            admin,
                            "POST",
                            "/v1/revocations",
                            Some(token),
                            body.as_bytes(),
                            std::time::Duration::from_secs(30),
                        )
                        .unwrap();
                        assert_eq!(status, 201, "{text}");
                    }
                });
            }
        });
    })
    .await
    .unwrap();
}

/// Hammers `socket` with `probes` (all of them revoked at the authority) from the moment it
/// exists until the agent refuses every one; returns the OK answers seen and the answer count.
fn hammer_until_revoked(socket: std::path::PathBuf, probes: Vec<String>) -> (Vec<String>, u64) {
    use std::io::{BufRead, Write};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (mut ok, mut answers) = (Vec::new(), 0u64);
    let req: String = probes.iter().map(|p| format!("{p}\n")).collect();
    loop {
        assert!(std::time::Instant::now() < deadline, "the agent never refused all probes");
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(&socket) else {
            std::thread::yield_now();
            continue;
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(10)));
        let mut r = std::io::BufReader::new(s.try_clone().unwrap());
        while s.write_all(req.as_bytes()).is_ok() {
            let mut all_revoked = true;
            for _ in &probes {
                let mut a = String::new();
                if r.read_line(&mut a).unwrap_or(0) == 0 {
                    all_revoked = false;
                    break;
                }
                answers += 1;
                if a.starts_with("OK") {
                    ok.push(a.trim_end().to_owned());
                }
                all_revoked &= a.starts_with("REVOKED");
            }
            if all_revoked {
                return (ok, answers);
            }
        }
    }
}

/// Fills the authority with `n` revocations, then starts an agent in `dir` while a client
/// hammers its socket (from the moment it exists) with the last ones until all are refused.
/// Returns the agent, the OK answers seen, and how many answers there were.
async fn fill_then_start_hammered(
    auth: &Authority,
    dir: &std::path::Path,
    prefix: &str,
    n: usize,
) -> (AgentProc, Vec<String>, u64) {
    fill(auth, prefix, n).await;
    // The 16 writers' last entries: whichever is the head, every one of them is revoked.
    let probes: Vec<String> = (n - 16..n).map(|i| format!("STATUS jti={prefix}-{i}")).collect();
    let socket = dir.join("agent.sock");
    let hammer = std::thread::spawn(move || hammer_until_revoked(socket, probes));
    let agent = AgentProc::start(dir, &auth.url(), &[]);
    let (ok, answers) = tokio::task::spawn_blocking(move || hammer.join().unwrap()).await.unwrap();
    (agent, ok, answers)
}

/// Regression: a fresh agent joining an authority with thousands of entries answered
/// `OK seq=256 lag_ms=0` for a jti revoked at the head while it was still catching up. From the
/// welcome until it has applied the announced head it must answer as a stale agent does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_agent_catching_up_never_answers_ok_for_what_it_has_not_applied() {
    let adir = tempfile::tempdir().unwrap();
    let auth = Authority::start(adir.path(), 0, &[]).await;
    let n = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let (agent, ok, answers) = fill_then_start_hammered(&auth, dir.path(), "c", n).await;
    assert!(
        ok.is_empty(),
        "{} of {answers} answers were OK for revoked tokens: {:?}",
        ok.len(),
        &ok[..ok.len().min(5)]
    );
    drop(agent);
    auth.stop().await;
}

/// The same after a warm restart behind the log: the agent's persisted state is fresh enough by
/// the clock (it was in sync a moment ago), but the authority has moved on by thousands of
/// entries while it was down; from the welcome on it knows, and must not answer OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_behind_the_log_never_answers_ok_for_what_it_has_not_applied() {
    let adir = tempfile::tempdir().unwrap();
    let auth = Authority::start(adir.path(), 0, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = AgentProc::start(dir.path(), &auth.url(), &[]);
    wait_for(|| !agent.ask("PING").ends_with("log_id=none"), "agent in sync").await;
    auth.revoke(json!({"kind": "jti", "jti": "w-first", "expires_at": crate::util::now() + 3600})).await;
    wait_for(|| agent.ask("PING").starts_with("PONG seq=1 "), "the first entry applied").await;
    agent.kill9();
    let (agent, ok, answers) = fill_then_start_hammered(&auth, dir.path(), "w", 5_000).await;
    // Before its link is up the restarted agent cannot know it is behind (its state was in sync
    // a moment ago), so OKs at its persisted seq 1 are right then; an OK at any later seq comes
    // from the catch-up, after the welcome announced the head, and is wrong.
    let after_welcome: Vec<&String> = ok.iter().filter(|l| !l.starts_with("OK seq=1 ")).collect();
    assert!(
        after_welcome.is_empty(),
        "{} of {answers} answers were OK during the catch-up: {:?}",
        after_welcome.len(),
        &after_welcome[..after_welcome.len().min(5)]
    );
    drop(agent);
    auth.stop().await;
}

/// `kill -HUP` (what operators, logrotate and config management send) used to terminate the
/// agent. It now reloads the key files without dropping the link or the sockets; a file that
/// fails to load leaves the previous keys in force, and the failure is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_keys_and_never_terminates_the_agent() {
    let adir = tempfile::tempdir().unwrap();
    let auth = Authority::start(adir.path(), 0, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = AgentProc::start(dir.path(), &auth.url(), &[]);
    wait_for(|| !agent.ask("PING").ends_with("log_id=none"), "agent in sync").await;
    let hup = |a: &AgentProc| {
        assert!(std::process::Command::new("kill")
            .args(["-HUP", &a.child.id().to_string()])
            .status()
            .unwrap()
            .success());
    };
    let old = token("hup-old", "alice", json!({}));
    assert!(agent.ask(&format!("CHECK {old}")).starts_with("OK "));

    // The IdP rotates its secret: the new file, then SIGHUP.
    let new_secret = b"a-brand-new-secret-of-at-least-32-bytes!";
    std::fs::write(dir.path().join("secret"), new_secret).unwrap();
    hup(&agent);
    let new = crate::util::token_with(new_secret, "hup-new", "alice", json!({}));
    wait_for(|| agent.ask(&format!("CHECK {new}")).starts_with("OK "), "the new key in force").await;
    assert_eq!(agent.ask(&format!("CHECK {old}")), "INVALID reason=signature");

    // A broken file keeps the keys in force.
    std::fs::write(dir.path().join("secret"), b"short").unwrap();
    hup(&agent);
    let metric = |name: &str| {
        crate::util::scrape(&agent.metrics)
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(-1.0)
    };
    wait_for(
        || metric("revmesh_agent_reloads_total{result=\"error\",what=\"keys\"}") == 1.0,
        "the failed reload counted",
    )
    .await;
    assert!(agent.ask(&format!("CHECK {new}")).starts_with("OK "));
    assert!(agent.child.try_wait().unwrap().is_none(), "SIGHUP terminated the agent");
    assert_eq!(metric("revmesh_agent_reconnects_total"), 0.0, "the link was dropped");
    agent.kill9();
    auth.stop().await;
}
