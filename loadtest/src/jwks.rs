//! Keys that rotate, measured: CHECK latency while a JWKS fetch hangs against an idle
//! provider (checks must never wait on a fetch), and how many fetches a flood of random
//! `kid`s causes.

use crate::procs::{bench_pair, BENCH_SECRET};
use crate::util::Summary;
use revmesh_testkit::{JwksServer, Mode};
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// The figures.
#[derive(Debug, Serialize)]
pub struct Jwks {
    /// CHECK latency with the provider answering and no fetch running.
    pub idle: Summary,
    /// CHECK latency while fetches hang (the provider never answers).
    pub during_fetch: Summary,
    /// Random-kid CHECKs sent in the flood.
    pub flood_checks: u64,
    /// Seconds the flood lasted.
    pub flood_secs: f64,
    /// Fetches the flood caused.
    pub flood_fetches: u64,
}

/// Runs the measurement: `n` checks with the provider idle, a flood of random-kid checks for
/// `flood` (with `--jwks-min-refresh 1s`), then `n` checks while fetches hang.
pub async fn measure(dir: &Path, n: usize, flood: Duration) -> anyhow::Result<Jwks> {
    let idp = JwksServer::start(r#"{"keys":[]}"#.to_owned());
    let (url, ca) = (idp.url(), idp.ca_file.display().to_string());
    let extra = ["--jwks-url", &url, "--jwks-ca-file", &ca, "--jwks-min-refresh", "1s"];
    let (_auth, agent) = bench_pair(dir, "jwks", &extra).await?;
    let secret_text = BENCH_SECRET;
    let exp = revmesh_runtime::Clock::system().unix_secs() + 3600;
    let token = crate::util::mint(secret_text, "jwks-1", "alice", exp)?;
    let line = format!("CHECK {token}");
    // A token naming a kid nobody publishes: every one may start a (rate-limited) fetch.
    let unknown = {
        let header = jsonwebtoken::Header { kid: Some("unpublished".into()), ..Default::default() };
        let claims = serde_json::json!({"sub": "x", "exp": exp});
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"other-secret-0123456789abcdef0123")?,
        )?
    };
    let unknown_line = format!("CHECK {unknown}");

    let idle = crate::scenarios::sequential(&agent.socket, &line, n, "OK ").await?;
    // The flood: random-kid checks as fast as one connection goes.
    let before = idp.fetches();
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < flood {
        let answer = crate::util::ask_line(&agent.socket, &unknown_line)?;
        anyhow::ensure!(answer.starts_with("INVALID"), "{answer}");
        sent += 1;
    }
    let flood_secs = started.elapsed().as_secs_f64();
    let flood_fetches = idp.fetches() - before;
    // The provider hangs; every 1,000 checks a random-kid check starts a fetch if one is due.
    idp.set_mode(Mode::Hang);
    let sock = agent.socket.clone();
    let during_fetch = crate::scenarios::sequential_with(&agent.socket, &line, n, "OK ", |i| {
        if i % 1000 == 0 {
            let _ = crate::util::ask_line(&sock, &unknown_line);
        }
    })
    .await?;

    Ok(Jwks { idle, during_fetch, flood_checks: sent, flood_secs, flood_fetches })
}
