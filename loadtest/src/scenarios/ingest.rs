//! Revocations per second into the authority, single and bulk.

use super::common::*;
use crate::procs::AuthorityProc;
use crate::util::{summarize, Summary};
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// Durable ingest at a given client concurrency.
#[derive(Debug, Serialize)]
pub struct Ingest {
    /// Concurrent HTTP clients.
    pub clients: usize,
    /// Revocations per request (an array when more than 1).
    pub batch: usize,
    /// Connected agents acking everything.
    pub agents: usize,
    /// Revocations answered 201 per second.
    pub per_sec: f64,
    /// Latency of one revocation call.
    pub latency: Summary,
    /// Store commits (fsyncs) per revocation.
    pub fsyncs_per_revocation: f64,
    /// Largest agent lag (entries) seen at the end.
    pub lag_at_end: u64,
    /// Seconds from the end of the load until every agent was at the head (capped at 120).
    pub caught_up_secs: f64,
}

/// Maximum durable revocations/s with `clients` concurrent callers while `agents` agents ack.
pub async fn ingest(
    dir: &Path,
    clients: usize,
    batch: usize,
    agents: usize,
    dur: Duration,
) -> anyhow::Result<Ingest> {
    let auth =
        AuthorityProc::start(&dir.join(format!("ingest-{clients}-{batch}-{agents}")), "127.0.0.1:0", &[])?;
    let fleet = Fleet::start(agents, &auth.ws, "i")?;
    wait_connected(&auth, agents).await?;
    let before =
        call(&auth, "GET", "/metrics".into(), String::new()).await?.1.as_str().unwrap_or("").to_owned();
    let lat = post_load_batched(std::slice::from_ref(&auth), clients, batch, dur).await?;
    let elapsed = dur.as_secs_f64();
    let after =
        call(&auth, "GET", "/metrics".into(), String::new()).await?.1.as_str().unwrap_or("").to_owned();
    let revs = metric(&after, "revmesh_authority_revocations_total")
        - metric(&before, "revmesh_authority_revocations_total");
    let commits = metric(&after, "revmesh_authority_store_commits_total")
        - metric(&before, "revmesh_authority_store_commits_total");
    let (_, status) = call(&auth, "GET", "/v1/status".into(), String::new()).await?;
    let lag = status["max_lag"].as_u64().unwrap_or(0);
    let ended = Instant::now();
    loop {
        let (_, status) = call(&auth, "GET", "/v1/status".into(), String::new()).await?;
        if status["max_lag"].as_u64() == Some(0) || ended.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let caught_up_secs = ended.elapsed().as_secs_f64();
    fleet.stop().await;
    Ok(Ingest {
        caught_up_secs,
        clients,
        batch,
        agents,
        per_sec: (lat.len() * batch) as f64 / elapsed,
        latency: summarize(lat),
        fsyncs_per_revocation: commits / revs.max(1.0),
        lag_at_end: lag,
    })
}
