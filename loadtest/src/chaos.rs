//! The chaos scenario: kill -9 and restart the authority, cut and restore agent links, while
//! revoking continuously; then prove nothing accepted was lost, nothing applied twice, and no
//! agent answered OK for a token after it had applied (and so acknowledged) its revocation.

use crate::procs::AuthorityProc;
use crate::scenarios::Fleet;
use revmesh_agent::state::Decision;
use revmesh_protocol::TokenRef;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// What the chaos run found.
#[derive(Debug, Default, Serialize)]
pub struct ChaosReport {
    /// Seconds of chaos.
    pub seconds: u64,
    /// Agents.
    pub agents: usize,
    /// Revocations answered 201.
    pub accepted: u64,
    /// Revocations refused while the authority was down (never acknowledged, so not lost).
    pub refused: u64,
    /// Authority kill -9 + restarts.
    pub authority_restarts: u64,
    /// Agent link cuts.
    pub link_cuts: u64,
    /// Probes of applied revocations.
    pub probes: u64,
    /// Accepted entries missing from the log or from an agent at the end.
    pub lost: u64,
    /// Entries applied twice.
    pub duplicates: u64,
    /// OK answers for a token whose revocation the agent had applied.
    pub false_ok: u64,
    /// Seconds from the end of chaos until every agent was at the head.
    pub converge_secs: f64,
}

impl ChaosReport {
    /// True when every invariant held.
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.false_ok == 0
    }
}

fn jti_token(jti: &str) -> TokenRef<'_> {
    TokenRef { jti: Some(jti), ..Default::default() }
}

/// Runs chaos for `secs` seconds with `n` in-process agents.
pub async fn run(dir: &Path, n: usize, secs: u64, seed: u64) -> anyhow::Result<ChaosReport> {
    let data = dir.join("chaos-authority");
    let args = [
        "--heartbeat",
        "500ms",
        "--ack-timeout",
        "300ms",
        "--retain-entries",
        "100",
        "--compact-interval",
        "1s",
    ];
    let mut auth = AuthorityProc::start(&data, "127.0.0.1:0", &args)?;
    let url = auth.ws.clone();
    let agent_addr = url.trim_start_matches("ws://").to_owned();
    let mut fleet = Fleet::start(n, &url, "chaos")?;
    let mut rng = revmesh_protocol::time::Jitter::new(seed);
    let mut report = ChaosReport { seconds: secs, agents: n, ..Default::default() };
    let mut accepted: Vec<(u64, String)> = Vec::new();
    let exp = revmesh_runtime::Clock::system().unix_secs() + 3600;
    let end = Instant::now() + Duration::from_secs(secs);
    let mut i = 0u64;
    while Instant::now() < end {
        i += 1;
        let jti = format!("chaos-{seed}-{i}");
        let body = format!(r#"{{"kind":"jti","jti":"{jti}","expires_at":{exp}}}"#);
        match auth.call("POST", "/v1/revocations", &body) {
            Ok((201, v)) => {
                report.accepted += 1;
                accepted.push((v["seq"].as_u64().unwrap_or(0), jti));
            }
            _ => report.refused += 1,
        }
        let roll = rng.next_u64() % 1000;
        if roll < 8 {
            // kill -9 the authority and bring it back on the same agent address.
            auth.proc.kill9();
            report.authority_restarts += 1;
            auth = AuthorityProc::start(&data, &agent_addr, &args)?;
        } else if roll < 60 {
            let k = (rng.next_u64() % n as u64) as usize;
            fleet.bounce(k, &url, &format!("chaos-{k}")).await?;
            report.link_cuts += 1;
        }
        // Probe: an agent that has applied an entry must refuse its token.
        if let Some((seq, jti)) = accepted.get((rng.next_u64() % accepted.len().max(1) as u64) as usize) {
            let k = (rng.next_u64() % n as u64) as usize;
            let st = &fleet.agents[k].0;
            if st.applied() >= *seq {
                report.probes += 1;
                if !matches!(st.decide(&jti_token(jti)), Decision::Revoked { .. }) {
                    report.false_ok += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Quiet: everyone must reach the head.
    let (_, status) = auth.call("GET", "/v1/status", "")?;
    let head = status["head"].as_u64().unwrap_or(0);
    let quiet = Instant::now();
    let deadline = quiet + Duration::from_secs(120);
    while fleet.agents.iter().any(|(s, _, _)| s.applied() < head) {
        anyhow::ensure!(Instant::now() < deadline, "agents did not converge to head {head} within 120 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    report.converge_secs = quiet.elapsed().as_secs_f64();
    // Every accepted entry is in the log with its seq, and every agent refuses its token.
    for (seq, jti) in &accepted {
        let (status, e) = auth.call("GET", &format!("/v1/revocations/{seq}"), "")?;
        if status != 200 || e["jti"].as_str() != Some(jti.as_str()) {
            report.lost += 1;
            continue;
        }
        for (st, _, _) in &fleet.agents {
            match st.decide(&jti_token(jti)) {
                Decision::Revoked { seq: s, .. } if s == *seq => {}
                _ => report.lost += 1,
            }
        }
    }
    report.duplicates = fleet.agents.iter().map(|(s, _, _)| s.duplicates()).sum();
    fleet.stop().await;
    Ok(report)
}
