//! `--scenario restart`: large revocation sets across restarts and snapshots, each figure next
//! to its floor measured in the same run.
//!
//! * warm restart: an agent process with N jti revocations in its data dir is started with no
//!   authority reachable; time from spawn to its first correct answer (REVOKED for a revoked
//!   jti). Floor: reading and checksumming its state file.
//! * authority restart: an authority process whose store holds N entries; time from spawn to its
//!   ready line. Floor: reading the store's file.
//! * snapshot install: a fresh agent process joining that authority after compaction (so it is
//!   sent a snapshot of N entries); time from spawn until it has applied the head. Floor: the
//!   warm restart of the same set (the agent must at least build and persist it).
//! * storm: K fresh in-process agents joining at once, each sent the snapshot; time until all
//!   have applied the head, and the authority's RSS before and at its peak.
//!
//! The agent state and the authority store are written directly (not through N admin calls) so
//! the scenario runs in minutes.

use crate::procs::{AgentProc, AuthorityProc};
use crate::scenarios::Fleet;
use crate::util::ask_line;
use revmesh_protocol::codec::PersistedState;
use revmesh_protocol::{Entry, LogId, Revocation, RevocationSet};
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// Figures for one set size.
#[derive(Debug, Serialize)]
pub struct Restart {
    /// Revocations.
    pub entries: u64,
    /// Agent state file size, bytes.
    pub state_bytes: u64,
    /// Snapshot frames the authority sends for the set, bytes (jtis of 8-9 characters).
    pub snapshot_bytes: u64,
    /// Warm restart to the first correct answer, seconds.
    pub warm_restart_s: f64,
    /// Reading and checksumming the state file, seconds.
    pub warm_floor_s: f64,
    /// Authority store file size, bytes.
    pub store_bytes: u64,
    /// Authority spawn to ready, seconds.
    pub authority_restart_s: f64,
    /// Reading the authority's store file, seconds.
    pub authority_floor_s: f64,
    /// Fresh agent process: spawn to caught up through a snapshot, seconds.
    pub snapshot_install_s: f64,
    /// Agents in the storm.
    pub storm_agents: usize,
    /// Storm: all caught up, seconds.
    pub storm_s: f64,
    /// Authority RSS before the storm, bytes.
    pub storm_rss_before: u64,
    /// Authority RSS at the storm's peak, bytes.
    pub storm_rss_peak: u64,
}

fn entry(seq: u64, exp: u64) -> Entry {
    Entry {
        seq,
        created_at_ms: 0,
        expires_at: exp,
        reason: None,
        revocation: Revocation::Jti { jti: format!("r-{seq}"), iss: None },
    }
}

fn read_and_checksum(path: &Path) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let bytes = std::fs::read(path)?;
    std::hint::black_box(xxhash_rust::xxh3::xxh3_64(&bytes));
    Ok(t.elapsed())
}

async fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    crate::util::wait_until(limit, &mut cond).await
}

/// Runs the scenario for one set size with `storm` fresh agents.
pub async fn restart(dir: &Path, n: u64, storm: usize) -> anyhow::Result<Restart> {
    let exp = revmesh_runtime::Clock::system().unix_secs() + 86_400;
    let secret = dir.join("restart.secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef-restart")?;
    let probe = format!("STATUS jti=r-{n}");

    // Warm restart: an agent data dir holding N revocations, written as the agent writes it.
    let agent_dir = dir.join(format!("warm-{n}"));
    let data = agent_dir.join("data");
    {
        let (mut p, _) = revmesh_agent::persist::Persist::open(&data, &revmesh_runtime::Clock::system())?;
        let mut set = RevocationSet::with_jti_capacity(n as usize);
        for seq in 1..=n {
            set.insert(&entry(seq, exp), 0);
        }
        let (rest, table) = set.image();
        let state = PersistedState { log_id: Some(LogId(rand::random())), applied_seq: n, set: rest };
        p.snapshot(&state, &table)?;
    }
    let snapshot_bytes = {
        let entries: Vec<Entry> = (1..=n).map(|seq| entry(seq, exp)).collect();
        let frames = revmesh_protocol::frame::snapshot_chunks(LogId([0; 16]), 1, n, &entries);
        frames.iter().map(|f| revmesh_protocol::codec::encode(f).map_or(0, |b| b.len() as u64)).sum()
    };
    let state_file = data.join("state.bin");
    let state_bytes = std::fs::metadata(&state_file)?.len();
    let warm_floor = read_and_checksum(&state_file)?;
    let started = Instant::now();
    let agent = AgentProc::start(&agent_dir, "warm", "ws://127.0.0.1:9", &secret, &[])?;
    until(Duration::from_secs(1800), || {
        ask_line(&agent.socket, &probe).is_ok_and(|l| l.starts_with("REVOKED"))
    })
    .await?;
    let warm_restart = started.elapsed();
    drop(agent);

    // An authority store holding N entries (plus a compacted first one, so that a fresh agent
    // is sent a snapshot rather than the log).
    let auth_dir = dir.join(format!("authority-{n}"));
    {
        let store = revmesh_authority::store::RedbStore::open(&auth_dir, LogId(rand::random()))?;
        use revmesh_authority::store::NewEntry;
        let new = |i: u64| NewEntry {
            revocation: Revocation::Jti { jti: format!("r-{i}"), iss: None },
            expires_at: exp,
            reason: None,
            created_at_ms: 0,
            by: None,
        };
        let mut head = store.load()?.head;
        let first: Vec<NewEntry> = vec![new(0)];
        head += store.append(head, &first)?.len() as u64;
        for chunk in (1..=n).collect::<Vec<_>>().chunks(20_000) {
            let batch: Vec<NewEntry> = chunk.iter().map(|i| new(*i)).collect();
            head += store.append(head, &batch)?.len() as u64;
        }
        store.compact(1, &[1])?;
    }
    let store_file = std::fs::read_dir(&auth_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "redb"))
        .ok_or_else(|| anyhow::anyhow!("no redb file in {}", auth_dir.display()))?;
    let store_bytes = std::fs::metadata(&store_file)?.len();
    let authority_floor = read_and_checksum(&store_file)?;
    let started = Instant::now();
    let auth = AuthorityProc::start(&auth_dir, "127.0.0.1:0", &[])?;
    let authority_restart = started.elapsed();
    let head = n + 1;

    // One fresh agent process, sent the snapshot, persisting it.
    let fresh_dir = dir.join(format!("fresh-{n}"));
    let started = Instant::now();
    let fresh = AgentProc::start(&fresh_dir, "fresh", &auth.ws, &secret, &[])?;
    let pong = format!("PONG seq={head} ");
    until(Duration::from_secs(1800), || ask_line(&fresh.socket, "PING").is_ok_and(|l| l.starts_with(&pong)))
        .await?;
    let snapshot_install = started.elapsed();
    drop(fresh);

    // The storm: K fresh agents at once.
    let storm_rss_before = auth.proc.rss().unwrap_or(0);
    let pid = auth.proc.child.id();
    let stop = tokio_util::sync::CancellationToken::new();
    let sampler = crate::procs::sample_peak_rss(pid, stop.clone());
    let started = Instant::now();
    let fleet = Fleet::start(storm, &auth.ws, &format!("storm-{n}"))?;
    until(Duration::from_secs(1800), || fleet.agents.iter().all(|(s, _, _)| s.applied() >= head)).await?;
    let storm_s = started.elapsed();
    stop.cancel();
    let storm_rss_peak = sampler.await.unwrap_or(0);
    fleet.stop().await;
    drop(auth);
    let _ = std::fs::remove_dir_all(&agent_dir);
    let _ = std::fs::remove_dir_all(&fresh_dir);
    let _ = std::fs::remove_dir_all(&auth_dir);
    Ok(Restart {
        entries: n,
        state_bytes,
        snapshot_bytes,
        warm_restart_s: warm_restart.as_secs_f64(),
        warm_floor_s: warm_floor.as_secs_f64(),
        store_bytes,
        authority_restart_s: authority_restart.as_secs_f64(),
        authority_floor_s: authority_floor.as_secs_f64(),
        snapshot_install_s: snapshot_install.as_secs_f64(),
        storm_agents: storm,
        storm_s: storm_s.as_secs_f64(),
        storm_rss_before,
        storm_rss_peak,
    })
}
