//! TLS on the agent endpoint and mutual TLS with agent identities (certificates made by rcgen).

use crate::util::{wait_for, Agent, Authority};
use revmesh_agent::link::{client_tls, probe, LinkSettings};
use revmesh_testkit::{ca, leaf};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

struct Pki {
    dir: tempfile::TempDir,
    ca_file: PathBuf,
    server: (PathBuf, PathBuf),
    agent_a: (PathBuf, PathBuf),
    other_ca_client: (PathBuf, PathBuf),
    expired_client: (PathBuf, PathBuf),
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let main = ca("revmesh test CA");
    let other = ca("some other CA");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, main.cert.pem()).unwrap();
    Pki {
        server: leaf(dir.path(), &main, "server", "localhost", false, false),
        agent_a: leaf(dir.path(), &main, "agent-a", "agent-a", true, false),
        other_ca_client: leaf(dir.path(), &other, "other", "agent-a", true, false),
        expired_client: leaf(dir.path(), &main, "expired", "agent-a", true, true),
        ca_file,
        dir,
    }
}

fn settings(url: &str, id: &str, tls: Option<Arc<rustls::ClientConfig>>) -> LinkSettings {
    let mut s = LinkSettings::new(vec![url.to_owned()], id.to_owned());
    s.tls = tls;
    s.reconnect_min = Duration::from_millis(50);
    s.reconnect_max = Duration::from_millis(300);
    s
}

fn tls_url(a: &Authority) -> String {
    a.ws_url().replacen("ws://", "wss://", 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_tls_do_not_mix_and_a_tls_agent_receives_revocations() {
    let p = pki();
    let data = p.dir.path().join("tls-authority");
    let a = Authority::start(
        &data,
        &["--tls-cert", p.server.0.to_str().unwrap(), "--tls-key", p.server.1.to_str().unwrap()],
    )
    .with_ca(&p.ca_file);
    let plain = Authority::start(&p.dir.path().join("plain-authority"), &[]);
    let tls = client_tls(Some(&p.ca_file), None, None).unwrap();
    // A plaintext agent against the TLS endpoint, and a TLS agent against a plaintext one: refused.
    assert!(probe(&a.ws_url(), &settings(&a.ws_url(), "x", None)).await.is_err());
    assert!(probe(&tls_url(&plain), &settings(&tls_url(&plain), "x", tls.clone())).await.is_err());
    wait_for(
        || a.metric("revmesh_authority_agents_rejected_total") >= 1.0,
        "the plaintext attempt to be counted",
    )
    .await;
    // A TLS agent verifying the authority against the CA works end to end.
    let agent = Agent::start_with(settings(&tls_url(&a), "tls-agent", tls));
    let state = agent.state.clone();
    let seq = a.revoke_jti("over-tls");
    wait_for(|| state.applied() >= seq, "the TLS agent to apply the revocation").await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_checks_the_ca_the_validity_and_the_agent_id() {
    let p = pki();
    let a = Authority::start(
        &p.dir.path().join("mtls-authority"),
        &[
            "--tls-cert",
            p.server.0.to_str().unwrap(),
            "--tls-key",
            p.server.1.to_str().unwrap(),
            "--client-ca",
            p.ca_file.to_str().unwrap(),
        ],
    )
    .with_ca(&p.ca_file);
    let url = tls_url(&a);
    let with =
        |cert: &(PathBuf, PathBuf)| client_tls(Some(&p.ca_file), Some(&cert.0), Some(&cert.1)).unwrap();
    // No client certificate, one from another CA, an expired one: the TLS handshake fails.
    for (name, tls) in [
        ("no client certificate", client_tls(Some(&p.ca_file), None, None).unwrap()),
        ("another CA", with(&p.other_ca_client)),
        ("expired", with(&p.expired_client)),
    ] {
        let r = probe(&url, &settings(&url, "agent-a", tls)).await;
        assert!(r.is_err(), "{name}: connected");
    }
    // The right certificate under its own id works; under another agent's id it is refused.
    let good = settings(&url, "agent-a", with(&p.agent_a));
    assert!(probe(&url, &good).await.is_ok());
    let agent = Agent::start_with(settings(&url, "agent-b", with(&p.agent_a)));
    let state = agent.state.clone();
    wait_for(
        || a.metrics().contains("revmesh_authority_agents_rejected_total{reason=\"identity\"}"),
        "the impostor to be refused",
    )
    .await;
    let (_, agents) = a.get("/v1/agents");
    assert!(agents.as_array().unwrap().iter().all(|x| x["id"] != "agent-b"), "{agents}");
    assert_eq!(state.applied(), 0);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_certificate_for_new_connections_and_keeps_old_links() {
    let p = pki();
    let cert = p.dir.path().join("live.pem");
    let key = p.dir.path().join("live.key");
    std::fs::copy(&p.server.0, &cert).unwrap();
    std::fs::copy(&p.server.1, &key).unwrap();
    let a = Authority::start(
        &p.dir.path().join("reload-authority"),
        &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
    )
    .with_ca(&p.ca_file);
    let url = tls_url(&a);
    // A link verified against the first CA.
    let old_ca = client_tls(Some(&p.ca_file), None, None).unwrap();
    let agent = Agent::start_with(settings(&url, "old-link", old_ca));
    let state = agent.state.clone();
    let s1 = a.revoke_jti("before-rotation");
    wait_for(|| state.applied() >= s1, "the first link").await;

    // Rotate to a certificate from a new CA and signal the authority.
    let new_ca = ca("rotated CA");
    let new_ca_file = p.dir.path().join("new-ca.pem");
    std::fs::write(&new_ca_file, new_ca.cert.pem()).unwrap();
    let (c, k) = leaf(p.dir.path(), &new_ca, "rotated", "localhost", false, false);
    std::fs::copy(&c, &cert).unwrap();
    std::fs::copy(&k, &key).unwrap();
    let trusting_new = settings(&url, "new-link", client_tls(Some(&new_ca_file), None, None).unwrap());
    assert!(probe(&url, &trusting_new).await.is_err(), "the new certificate is not served before SIGHUP");
    let out = std::process::Command::new("kill").args(["-HUP", &a.child.id().to_string()]).output().unwrap();
    assert!(out.status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while probe(&url, &trusting_new).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the rotated certificate was never served");
        tokio::task::yield_now().await;
    }
    // The admin API was rotated too. The link made before the rotation is still up and receiving.
    let a = a.with_ca(&new_ca_file);
    let s2 = a.revoke_jti("after-rotation");
    wait_for(|| state.applied() >= s2, "the old link to keep receiving").await;
    assert_eq!(state.metrics.reconnects_total.get(), 0);
    agent.stop().await;
}
