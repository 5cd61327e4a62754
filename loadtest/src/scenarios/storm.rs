//! Ten thousand agents reconnecting at once.

use super::common::*;
use crate::procs::AuthorityProc;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// Reconnect storm after an authority restart.
#[derive(Debug, Serialize)]
pub struct Storm {
    /// Agents.
    pub agents: usize,
    /// Entries revoked while the authority was down for them (they restart behind by this many).
    pub behind: u64,
    /// Seconds from the restarted authority being ready to every agent at the head.
    pub caught_up_secs: f64,
    /// Highest authority RSS sampled during the storm.
    pub peak_rss_bytes: u64,
    /// Seconds from the restarted authority being ready until every agent knew it was behind
    /// (or had caught up): until then some agent still answered as fresh without the entries
    /// written while the authority was away.
    pub all_knew_secs: f64,
    /// CPU seconds the restarted authority used until every agent was at the head.
    pub authority_cpu_secs: f64,
    /// CPU seconds this process used meanwhile: the in-process agents receiving, decoding and
    /// applying their catch-ups (they share the machine's cores with the authority).
    pub fleet_cpu_secs: f64,
}

/// kill -9 the authority under `n` agents, revoke more, restart it: time until all caught up.
pub async fn reconnect_storm(dir: &Path, n: usize, behind: u64) -> anyhow::Result<Storm> {
    let data = dir.join(format!("storm-{n}"));
    let max = (n + 64).to_string();
    let args = ["--max-agents", max.as_str(), "--max-catchups", "64"];
    let auth = AuthorityProc::start(&data, "127.0.0.1:0", &args)?;
    let addr = auth.ws.trim_start_matches("ws://").to_owned();
    let fleet = Fleet::start(n, &auth.ws, "s")?;
    wait_connected(&auth, n).await?;
    drop(auth); // kill -9
                // Entries the agents miss: written by a second authority instance on the same store while
                // the agents' link address is down.
    let offline = AuthorityProc::start(&data, "127.0.0.1:0", &args)?;
    let exp = revmesh_runtime::Clock::system().unix_secs() + 3600;
    let mut head = 0;
    for i in 0..behind {
        let (st, v) = call(
            &offline,
            "POST",
            "/v1/revocations".into(),
            format!(r#"{{"kind":"jti","jti":"storm-{i}","expires_at":{exp}}}"#),
        )
        .await?;
        anyhow::ensure!(st == 201, "{v}");
        head = v["seq"].as_u64().unwrap_or(0);
    }
    drop(offline);
    let auth = AuthorityProc::start(&data, &addr, &args)?;
    let pid = auth.proc.child.id();
    use crate::procs::{cpu_ticks, ticks_to_us};
    let me = std::process::id();
    let (auth0, me0) = (cpu_ticks(pid)?, cpu_ticks(me)?);
    let t0 = Instant::now();
    let mut peak = 0;
    let mut all_knew: Option<f64> = None;
    let deadline = t0 + Duration::from_secs(300);
    while fleet.agents.iter().any(|(s, _, _)| s.applied() < head) {
        anyhow::ensure!(Instant::now() < deadline, "storm did not settle in 300 s");
        peak = peak.max(crate::procs::rss_of(pid).unwrap_or(0));
        if all_knew.is_none() && fleet.agents.iter().all(|(s, _, _)| s.is_behind() || s.applied() >= head) {
            all_knew = Some(t0.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let caught_up_secs = t0.elapsed().as_secs_f64();
    let all_knew_secs = all_knew.unwrap_or(caught_up_secs);
    let secs = |ticks: u64| ticks_to_us(ticks) / 1e6;
    let (authority_cpu_secs, fleet_cpu_secs) =
        (secs(cpu_ticks(pid)?.saturating_sub(auth0)), secs(cpu_ticks(me)?.saturating_sub(me0)));
    fleet.stop().await;
    Ok(Storm {
        agents: n,
        behind,
        caught_up_secs,
        peak_rss_bytes: peak,
        all_knew_secs,
        authority_cpu_secs,
        fleet_cpu_secs,
    })
}
