//! Revocation to every agent: in-process fleets, agent processes (receipts, with `--agent-b`), and the commit alone.

use super::common::*;
use crate::procs::AuthorityProc;
use crate::util::{summarize, Summary};
use serde::Serialize;
use std::path::Path;

/// Propagation result at one fleet size.
#[derive(Debug, Serialize)]
pub struct Propagation {
    /// Agents.
    pub agents: usize,
    /// Revocations measured.
    pub revocations: usize,
    /// Admin call → receipt with every agent acked.
    pub revoke_to_all_acked: Summary,
    /// Receipts that timed out with agents pending.
    pub incomplete: usize,
    /// Authority RSS divided by agents.
    pub authority_rss_per_agent_bytes: u64,
    /// Authority CPU per revocation divided by agents, microseconds (from /proc).
    pub authority_cpu_per_link_us: f64,
    /// This process's CPU per revocation divided by agents, microseconds: the in-process
    /// agents (decode, apply, ack) and the admin client.
    pub fleet_cpu_per_agent_us: f64,
}

/// Revocations at a steady rate; each one's time from the admin call to the last agent's ack.
pub async fn propagation(dir: &Path, agents: usize, count: usize, rate: f64) -> anyhow::Result<Propagation> {
    let max = (agents + 64).to_string();
    let auth = AuthorityProc::start(
        &dir.join(format!("prop-{agents}")),
        "127.0.0.1:0",
        &["--max-agents", &max, "--max-catchups", &max],
    )?;
    let fleet = Fleet::start(agents, &auth.ws, "p")?;
    wait_connected(&auth, agents).await?;
    let rss_idle = auth.proc.rss().unwrap_or(0);
    use crate::procs::{cpu_ticks, ticks_to_us};
    let (auth_pid, me) = (auth.proc.child.id(), std::process::id());
    let (auth0, me0) = (cpu_ticks(auth_pid)?, cpu_ticks(me)?);
    let (lat, incomplete) = receipts_at_rate(&auth, "prop", count, rate, "all").await?;
    let per = |ticks: u64| ticks_to_us(ticks) / count.max(1) as f64 / agents.max(1) as f64;
    let (auth_us, fleet_us) = (per(cpu_ticks(auth_pid)? - auth0), per(cpu_ticks(me)? - me0));
    fleet.stop().await;
    Ok(Propagation {
        agents,
        revocations: count,
        revoke_to_all_acked: summarize(lat),
        incomplete,
        authority_rss_per_agent_bytes: rss_idle / agents.max(1) as u64,
        authority_cpu_per_link_us: auth_us,
        fleet_cpu_per_agent_us: fleet_us,
    })
}

/// The authority's own part of every receipt: the same revocations at the same rate to an
/// authority with no agents, so each `?wait=all` answers once its commit is durable.
pub async fn commit_alone(dir: &Path, count: usize, rate: f64) -> anyhow::Result<Summary> {
    let auth = AuthorityProc::start(&dir.join("commit-alone"), "127.0.0.1:0", &[])?;
    let (lat, _) = receipts_at_rate(&auth, "commit-alone", count, rate, "all").await?;
    Ok(summarize(lat))
}

/// Propagation to a fleet of real agent processes, with CPU per revocation per component.
#[derive(Debug, Serialize)]
pub struct ProcPropagation {
    /// Agent processes, each with its own data dir (journal fsynced before every ack).
    pub agent_procs: usize,
    /// The receipt level waited for: `all` (durable) or `applied`.
    pub wait: &'static str,
    /// Revocations measured.
    pub revocations: usize,
    /// Admin call → receipt with every agent acked (durably applied).
    pub receipt: Summary,
    /// Receipts that timed out with agents pending.
    pub incomplete: usize,
    /// Authority CPU per revocation, microseconds (user + system, from /proc).
    pub authority_cpu_us: f64,
    /// The same divided by the agent links.
    pub authority_cpu_per_link_us: f64,
    /// Mean CPU per revocation of one agent process, microseconds.
    pub agent_cpu_us: f64,
    /// With `--agent-b`: the same for each half of the fleet.
    pub split: Option<FleetSplit>,
}

/// CPU per revocation of one agent process in each half of a mixed fleet (`--agent-b`).
#[derive(Debug, Serialize)]
pub struct FleetSplit {
    /// The even-numbered agents: this build's `revmesh-agent`.
    pub a_cpu_us: f64,
    /// The odd-numbered agents: the binary given with `--agent-b`.
    pub b_cpu_us: f64,
    /// That binary.
    pub b_bin: String,
}

/// `count` revocations at `rate` to `n` agent processes, waited for with `?wait=all`, then
/// `count` more with `?wait=applied`, on the same fleet. CPU is read from /proc before and
/// after each level's revocations, so connection set-up and catch-up are not counted;
/// heartbeats during the run are.
///
/// With `agent_b`, every odd-numbered agent runs that binary instead, and each half's CPU is
/// reported too: two builds compared under the same load at the same moment. With `authority`,
/// that authority binary serves the fleet instead of this build's.
#[allow(clippy::too_many_arguments)]
pub async fn propagation_procs(
    dir: &Path,
    n: usize,
    count: usize,
    rate: f64,
    agent_b: Option<&Path>,
    backlog: usize,
    authority: Option<&Path>,
) -> anyhow::Result<Vec<ProcPropagation>> {
    use crate::procs::{cpu_ticks, sibling, ticks_to_us, total_cpu_ticks, AgentProc, BENCH_SECRET};
    let base = dir.join(format!("procs-{n}"));
    let _ = std::fs::remove_dir_all(&base);
    let max = (n + 64).to_string();
    let auth_bin = match authority {
        Some(b) => b.to_owned(),
        None => sibling("revmesh-authority")?,
    };
    let auth =
        AuthorityProc::start_bin(&auth_bin, &base.join("authority"), "127.0.0.1:0", &["--max-agents", &max])?;
    post_backlog(&auth, backlog).await?;
    let secret = base.join("hs.secret");
    std::fs::write(&secret, BENCH_SECRET)?;
    let mut agents = Vec::with_capacity(n);
    let a_bin = sibling("revmesh-agent")?;
    for i in 0..n {
        let bin = match agent_b {
            Some(b) if i % 2 == 1 => b,
            _ => a_bin.as_path(),
        };
        agents.push(AgentProc::start_bin(
            bin,
            &base.join(format!("agent-{i}")),
            &format!("proc-{i}"),
            &auth.ws,
            &secret,
            &[],
        )?);
    }
    wait_connected(&auth, n).await?;
    // One revocation first, so every agent has a log and a journal (and has caught up on the
    // backlog: acknowledgements are cumulative) before measuring.
    receipts_at_rate(&auth, "procs-warm-up", 1, rate, "all").await?;
    let auth_pid = auth.proc.child.id();
    let pids: Vec<u32> = agents.iter().map(|a| a.proc.child.id()).collect();
    // Without a B binary every agent is in A.
    let in_b = |i: usize| agent_b.is_some() && i % 2 == 1;
    let a_pids: Vec<u32> = pids.iter().enumerate().filter(|(i, _)| !in_b(*i)).map(|(_, p)| *p).collect();
    let b_pids: Vec<u32> = pids.iter().enumerate().filter(|(i, _)| in_b(*i)).map(|(_, p)| *p).collect();
    let mut levels = Vec::new();
    for wait in ["all", "applied"] {
        let (auth0, a0, b0) = (cpu_ticks(auth_pid)?, total_cpu_ticks(&a_pids), total_cpu_ticks(&b_pids));
        let (lat, incomplete) = receipts_at_rate(&auth, &format!("procs-{wait}"), count, rate, wait).await?;
        let auth_us = ticks_to_us(cpu_ticks(auth_pid)? - auth0) / count as f64;
        let (a_us, b_us) =
            (ticks_to_us(total_cpu_ticks(&a_pids) - a0), ticks_to_us(total_cpu_ticks(&b_pids) - b0));
        let per = |us: f64, procs: usize| us / count as f64 / procs.max(1) as f64;
        let agent_us = per(a_us + b_us, n);
        let split = agent_b.map(|b| FleetSplit {
            a_cpu_us: per(a_us, a_pids.len()),
            b_cpu_us: per(b_us, b_pids.len()),
            b_bin: b.display().to_string(),
        });
        levels.push(ProcPropagation {
            agent_procs: n,
            wait,
            revocations: count,
            receipt: summarize(lat),
            incomplete,
            authority_cpu_us: auth_us,
            authority_cpu_per_link_us: auth_us / n.max(1) as f64,
            agent_cpu_us: agent_us,
            split,
        });
    }
    drop(agents);
    Ok(levels)
}
