//! `--jwks-url`: keys fetched over HTTPS from a provider the test controls (its own CA), rotated
//! the way an IdP rotates them, never fetched more than once per `--jwks-min-refresh` whatever
//! the tokens say, and kept when the provider misbehaves.

use crate::util::{ask, scrape, wait_for, AgentProc, Authority};
use revmesh_testkit::{JwksServer, Mode};
use serde_json::{json, Value};
use std::process::Command;

fn mint(kid: &str) -> Value {
    let now = crate::util::now();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mint_rsa.py");
    let out = Command::new("python3").arg(script).arg(kid).arg(now.to_string()).output().unwrap();
    assert!(
        out.status.success(),
        "PyJWT failed (`pip install 'pyjwt[crypto]'`, scripts/test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_over_https_without_flooding_the_provider_and_survive_a_misbehaving_one() {
    let (old, new) = (mint("2026-10"), mint("2026-11"));
    let idp = JwksServer::start(json!({"keys": [old["jwk"]]}).to_string());
    let adir = tempfile::tempdir().unwrap();
    let auth = Authority::start(adir.path(), 0, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let (url, ca) = (idp.url(), idp.ca_file.display().to_string());
    let agent = AgentProc::start(
        dir.path(),
        &auth.url(),
        &["--jwks-url", &url, "--jwks-ca-file", &ca, "--jwks-min-refresh", "1s"],
    );
    wait_for(|| !agent.ask("PING").ends_with("log_id=none"), "agent in sync").await;
    let check = |t: &Value| agent.ask(&format!("CHECK {}", t.as_str().unwrap()));
    assert!(check(&old["token"]).starts_with("OK "), "signed with the published key");
    assert_eq!(idp.fetches(), 1, "fetched once at start");
    // A token with a key not published yet is refused: the agent never trusts a key it has not
    // fetched from the provider.
    // (`algorithm` here: the agent's kid-less HMAC secret is tried for an unknown kid.)
    assert!(check(&new["token"]).starts_with("INVALID reason="));

    // 1. The provider publishes its next key; 2. signs with it: the agent fetches on the unknown
    // kid (in the background: the check that triggered it answered at once) and accepts it.
    idp.publish(&json!({"keys": [old["jwk"], new["jwk"]]}).to_string());
    let published = std::time::Instant::now();
    wait_for(|| check(&new["token"]).starts_with("OK "), "the new key accepted").await;
    let to_ok = published.elapsed();
    eprintln!("new key: first token to OK in {to_ok:?} (minimum refresh 1 s since the start fetch)");
    let after_rotation = idp.fetches();
    assert!(after_rotation <= 3, "{after_rotation} fetches");

    // 2,000 checks naming random kids: at most a handful of fetches.
    let random: Vec<String> = new["random_kids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("CHECK {}", t.as_str().unwrap()))
        .collect();
    let flood_started = std::time::Instant::now();
    for _ in 0..100 {
        let lines: Vec<&str> = random.iter().map(String::as_str).collect();
        for answer in ask(&agent.socket, &lines) {
            assert!(answer.starts_with("INVALID"), "{answer}");
        }
    }
    let flood_secs = flood_started.elapsed().as_secs_f64();
    let flood_fetches = idp.fetches() - after_rotation;
    eprintln!("2,000 random kids in {flood_secs:.2}s: {flood_fetches} fetches");
    assert!(flood_fetches as f64 <= flood_secs.ceil() + 1.0, "{flood_fetches} fetches in {flood_secs:.2}s");

    // Key revocation wins over a JWKS that still publishes the key.
    auth.revoke(json!({"kind": "key", "kid": "2026-11"})).await;
    assert!(check(&new["token"]).starts_with("REVOKED kind=key"), "{}", check(&new["token"]));

    // A provider that is down, hangs, answers 10 MB or garbage: the last good keys stay in
    // force, checks keep answering, and the failures are counted.
    for mode in [Mode::Down, Mode::Hang, Mode::Huge, Mode::Garbage] {
        idp.set_mode(mode);
        let errors = metric(&scrape(&agent.metrics), "revmesh_agent_jwks_fetch_errors_total");
        let trigger = &random[0];
        wait_for(
            || {
                // Each unknown kid may start a refresh (once per second at most).
                assert!(agent.ask(trigger).starts_with("INVALID"));
                assert!(check(&old["token"]).starts_with("OK "), "{mode:?}: the last good keys stay");
                mode == Mode::Hang
                    || metric(&scrape(&agent.metrics), "revmesh_agent_jwks_fetch_errors_total") > errors
            },
            "the failed fetch counted",
        )
        .await;
    }
    let m = scrape(&agent.metrics);
    assert_eq!(metric(&m, "revmesh_agent_keys{source=\"url\"}"), 2.0, "{m}");
    assert!(metric(&m, "revmesh_agent_jwks_fetches_total") >= 3.0, "{m}");
    drop(agent);
    auth.stop().await;
}
