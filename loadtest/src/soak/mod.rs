//! The soak: real processes — a throwaway PostgreSQL cluster, two authority replicas on it,
//! agent processes with data dirs — a writer revoking continuously, checkers probing every
//! agent, and faults from a schedule drawn from a printed seed (the same seed, the same
//! schedule): freezes (SIGSTOP/SIGCONT) of an agent, a replica or the whole PostgreSQL
//! cluster, kill -9 with restart of an agent or a replica, and black holes (`net.rs`: every
//! agent and PostgreSQL in network namespaces of their own, a link taken down) between an
//! agent and every replica or between a replica and PostgreSQL, several at once.
//!
//! Invariants, checked as it runs; any violation is printed with its time and the faults active
//! then, and fails the run:
//! - never a false OK: once a receipt names an agent as having the revocation durably, that
//!   agent never answers OK for the token again, across its own restarts;
//! - nothing lost: after the final heal every agent reaches the head within [`CONVERGE`], every
//!   201 is in the log once at its seq, and every agent refuses every accepted token and every
//!   session an OIDC back-channel logout (the writer sends one now and then) ended;
//! - fresh means complete: an agent that answers OK for a token (rather than STALE) has every
//!   revocation accepted more than `--max-staleness` + 1 s before, wherever it was committed;
//! - staleness honoured: with every replica frozen, down or cut from PostgreSQL, or PostgreSQL
//!   frozen, for `--max-staleness` + 1 s, no agent answers OK for a token nobody revoked (it
//!   says STALE), nor does an agent black-holed from every replica for that long;
//!   [`FRESH_AGAIN`] after the last replica fault healed,
//!   every agent answers OK again for a token nobody revoked (an agent that was itself stopped
//!   or killed within that time is stale until it has reconnected, rightly, and is not judged);
//! - one frozen or killed agent never holds up the others: with the replicas and PostgreSQL left
//!   alone, a receipt (`?wait=all`, answered within its 2 s) names as pending only agents under
//!   a fault of their own;
//! - a running replica answers a revocation within [`ANSWER_BOUND`] whatever else is wrong
//!   (PostgreSQL frozen, the replica cut from it), never leaving it hanging, and its `/readyz`
//!   says 503 once its store has been out of reach for [`READY_BY`], 200 again
//!   [`READY_AGAIN`] after it is back;
//! - resources: RSS and open fds of every process sampled each second; the report gives the
//!   slope of a least-squares fit over the second half, and the maxima.
//!
//! Output: a JSON report and an SVG timeline (faults as bands; head and each agent's position;
//! receipt latency; RSS), drawn with plotters.

mod net;
mod plot;
mod relay;

use crate::procs::{AgentProc, AuthorityProc, BENCH_SECRET};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// After the final heal, the bound within which every agent reaches the head: a heartbeat to
/// notice a dead link, a reconnect with backoff, and a catch-up.
pub const CONVERGE: Duration = Duration::from_secs(30);
/// Authority replicas.
const REPLICAS: usize = 2;
/// Longest a replica that is itself running may take to answer a revocation while PostgreSQL
/// is frozen: `--store-timeout` (2 s) for the commit, the receipt wait (2 s), the receipt's own
/// read (2 s), and a second of slack.
const ANSWER_BOUND: Duration = Duration::from_secs(7);
/// How long the replicas and PostgreSQL must have been left alone before a receipt's pending
/// agents are judged: agents that failed over or reconnected have settled by then.
const QUIET: Duration = Duration::from_secs(10);
/// Agents that reach the replicas through relays the soak can slow down.
const SLOW_AGENTS: usize = 2;
/// The agent whose data dir is a small volume of its own, which the soak can fill.
const DISK_AGENT: usize = 2;
/// Its size.
const DISK_MIB: u64 = 32;
/// In a soak of at least [`LONG_FREEZE_FROM`], the agent frozen for its middle third (while
/// the authority keeps revoking: what it holds for that link must stay bounded).
const LONG_FROZEN_AGENT: usize = 3;
/// The shortest soak with the long freeze.
const LONG_FREEZE_FROM: u64 = 600;
/// A running replica whose store has been out of reach this long says so: `/readyz` 503
/// (`--store-timeout`, the readiness probe's second, and a second of slack).
const READY_BY: Duration = Duration::from_secs(5);
/// ... and says it is ready again this long after the store is back.
const READY_AGAIN: Duration = Duration::from_secs(10);
/// The identity provider whose back-channel logouts the writer sends now and then.
const IDP: &str = "https://idp.soak.example";
/// Its client id (the logout tokens' audience).
const IDP_CLIENT: &str = "soak-client";
/// Agents' `--max-staleness`.
const MAX_STALENESS: &str = "5s";
/// The same, as a duration, plus the second the invariant allows.
const STALE_BY: Duration = Duration::from_secs(6);
/// After the last replica fault healed, agents are fresh again within this: a heartbeat, a
/// failover or reconnect with backoff, and a catch-up.
pub const FRESH_AGAIN: Duration = Duration::from_secs(15);

/// What may go wrong, and to what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// SIGSTOP an agent process, SIGCONT at the heal.
    FreezeAgent(usize),
    /// SIGSTOP an authority replica.
    FreezeReplica(usize),
    /// SIGSTOP every process of the PostgreSQL cluster.
    FreezePostgres,
    /// SIGSTOP every replica at once (agents then have no authority to hear from).
    FreezeAllReplicas,
    /// kill -9 an agent; restarted (same data dir) at the heal.
    KillAgent(usize),
    /// kill -9 a replica; restarted (same data dir, same agent port) at the heal.
    KillReplica(usize),
    /// A black hole between an agent and every replica: its network link taken down (packets
    /// vanish, no RST), brought up at the heal. The agent keeps running and answering.
    CutAgent(usize),
    /// A black hole between a replica and PostgreSQL: the replica keeps running.
    CutReplicaFromStore(usize),
    /// A slow path between an agent (one of the first [`SLOW_AGENTS`], which reach the
    /// replicas through relays) and every replica: 250 ms each way, 64 KiB/s.
    SlowAgent(usize),
    /// The volume under an agent's data dir ([`DISK_AGENT`]'s, a small tmpfs) filled up; freed
    /// at the heal.
    FillAgentDisk(usize),
}

impl Fault {
    fn describe(&self) -> String {
        match self {
            Fault::FreezeAgent(i) => format!("freeze agent soak-{i}"),
            Fault::FreezeReplica(r) => format!("freeze replica {r}"),
            Fault::FreezePostgres => "freeze postgres".into(),
            Fault::FreezeAllReplicas => "freeze every replica".into(),
            Fault::KillAgent(i) => format!("kill -9 agent soak-{i}"),
            Fault::KillReplica(r) => format!("kill -9 replica {r}"),
            Fault::CutAgent(i) => format!("black-hole agent soak-{i}"),
            Fault::CutReplicaFromStore(r) => format!("black-hole replica {r} from postgres"),
            Fault::SlowAgent(i) => format!("slow link to agent soak-{i}"),
            Fault::FillAgentDisk(i) => format!("full disk under agent soak-{i}"),
        }
    }
    /// What it makes unreachable, so two faults never fight over one process.
    fn targets(&self) -> Vec<String> {
        match self {
            Fault::FreezeAgent(i)
            | Fault::KillAgent(i)
            | Fault::CutAgent(i)
            | Fault::SlowAgent(i)
            | Fault::FillAgentDisk(i) => vec![format!("agent-{i}")],
            Fault::FreezeReplica(r) | Fault::KillReplica(r) => vec![format!("replica-{r}")],
            Fault::CutReplicaFromStore(r) => vec![format!("store-link-{r}")],
            Fault::FreezeAllReplicas => (0..REPLICAS).map(|r| format!("replica-{r}")).collect(),
            Fault::FreezePostgres => vec!["postgres".into()],
        }
    }
    /// The replicas it leaves unable to vouch for the log to agents: stopped, or unable to
    /// read the store (a replica that cannot read it sends its agents away).
    fn replicas(&self) -> Vec<usize> {
        match self {
            Fault::FreezeReplica(r) | Fault::KillReplica(r) | Fault::CutReplicaFromStore(r) => vec![*r],
            Fault::FreezeAllReplicas | Fault::FreezePostgres => (0..REPLICAS).collect(),
            _ => Vec::new(),
        }
    }
    /// The agent it leaves unable to answer (stopped or killed; a black-holed one answers).
    fn silences(&self) -> Option<usize> {
        match self {
            Fault::FreezeAgent(i) | Fault::KillAgent(i) => Some(*i),
            _ => None,
        }
    }
}

/// One fault, as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct FaultSpan {
    /// What.
    pub fault: Fault,
    /// Its description.
    pub what: String,
    /// Seconds since the start.
    pub from_s: f64,
    /// Healed at (seconds since the start).
    pub to_s: f64,
}

/// An invariant that did not hold.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// Seconds since the start.
    pub at_s: f64,
    /// What.
    pub what: String,
    /// The faults active then.
    pub faults: Vec<String>,
}

/// One process's resources over the soak.
#[derive(Debug, Clone, Serialize)]
pub struct Resources {
    /// The process.
    pub name: String,
    /// Largest RSS, MiB.
    pub rss_max_mib: f64,
    /// Slope of RSS over the second half, KiB per minute.
    pub rss_slope_kib_per_min: f64,
    /// Most open fds.
    pub fds_max: u64,
    /// Slope of open fds over the second half, per minute.
    pub fds_slope_per_min: f64,
}

/// Memory around the long freeze of one agent.
#[derive(Debug, Clone, Serialize)]
pub struct LongFreeze {
    /// The agent.
    pub agent: String,
    /// Seconds since the start.
    pub from_s: f64,
    /// Healed at.
    pub to_s: f64,
    /// Each replica's largest RSS in the minute before the freeze, MiB.
    pub replica_rss_before_mib: Vec<f64>,
    /// Each replica's largest RSS during the freeze, MiB.
    pub replica_rss_during_mib: Vec<f64>,
    /// Revocations accepted while it was frozen.
    pub accepted_meanwhile: u64,
}

/// The report.
#[derive(Debug, Default, Serialize)]
pub struct SoakReport {
    /// The seed of the fault schedule.
    pub seed: u64,
    /// Seconds of faults.
    pub seconds: u64,
    /// Agent processes.
    pub agents: usize,
    /// Authority replicas.
    pub replicas: usize,
    /// Revocations answered 201.
    pub accepted: u64,
    /// Revocations refused (503, timeouts, a replica down): never acknowledged, so not lost.
    pub refused: u64,
    /// OIDC back-channel logouts answered 200 (each revokes a session).
    pub logouts: u64,
    /// CHECKs of tokens whose revocation a receipt named the agent for.
    pub probes: u64,
    /// CHECKs of a never-revoked token while every replica had been away for longer than
    /// `--max-staleness` + 1 s (each must not be OK).
    pub stale_probes: u64,
    /// Every fault.
    pub faults: Vec<FaultSpan>,
    /// Every violation.
    pub violations: Vec<Violation>,
    /// From the final heal until every agent was at the head, seconds.
    pub converge_secs: f64,
    /// Receipt latency of accepted revocations (`?wait=all`).
    pub receipt: crate::util::Summary,
    /// Per process.
    pub resources: Vec<Resources>,
    /// The long freeze of one agent (soaks of 10 minutes and more): each replica's largest RSS
    /// in the minute before it and during it, MiB, and the frozen agent's lag at its end.
    pub long_freeze: Option<LongFreeze>,
    /// The picture.
    pub svg: String,
}

impl SoakReport {
    /// Every invariant held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// A sample of positions: time, the log head (None: no replica answered), each agent's
/// applied seq (None: no answer).
pub type Position = (f64, Option<u64>, Vec<Option<u64>>);
/// An accepted revocation: seq, jti, the agents its receipt named as durable, when.
type Accepted = (u64, String, Vec<String>, f64);
/// A resource sample: time, process name, pid, RSS bytes, open fds.
pub type Usage = (f64, String, u32, u64, u64);

/// Everything the threads share.
struct Shared {
    started: Instant,
    stop: AtomicBool,
    /// Replica admin addresses (they change when a replica restarts) and the shared token.
    admins: Mutex<Vec<String>>,
    token: String,
    /// Accepted revocations: seq, jti, the agents a receipt named as durable, when.
    accepted: Mutex<Vec<Accepted>>,
    /// The identity provider's signing key, and the sessions its logouts ended (sid, when).
    idp_key: jsonwebtoken::EncodingKey,
    logouts: Mutex<Vec<(String, f64)>>,
    refused: Mutex<u64>,
    /// Receipt latencies with their times.
    receipts: Mutex<Vec<(f64, Duration)>>,
    /// Active faults.
    active: Mutex<Vec<Fault>>,
    /// When each process (`agent-3`, `replica-1`, `postgres`) was last under a fault.
    touched: Mutex<HashMap<String, Instant>>,
    /// Since when every replica has been frozen or down (None: one is up).
    all_replicas_down: Mutex<Option<Instant>>,
    /// Since when no replica has been frozen or down (None: one is).
    replicas_clear: Mutex<Option<Instant>>,
    /// Agents black-holed now, and since when.
    cut_at: Mutex<HashMap<usize, Instant>>,
    /// For each replica, since when its store has been out of its reach (PostgreSQL frozen, or
    /// the replica cut from it); None while it is not.
    store_away: Mutex<Vec<Option<Instant>>>,
    violations: Mutex<Vec<Violation>>,
    probes: Mutex<u64>,
    stale_probes: Mutex<u64>,
    /// Process name → pid, for the sampler.
    pids: Mutex<Vec<(String, u32)>>,
    /// Samples: time, head (None: no replica answered), each agent's applied seq (None: no answer).
    positions: Mutex<Vec<Position>>,
    /// Samples: time, process name, pid, RSS bytes, fds.
    usage: Mutex<Vec<Usage>>,
}

impl Shared {
    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
    fn violate(&self, what: String) {
        let faults = lock(&self.active).iter().map(Fault::describe).collect();
        let v = Violation { at_s: self.now(), what, faults };
        eprintln!("VIOLATION at {:.1}s: {} (faults: {:?})", v.at_s, v.what, v.faults);
        lock(&self.violations).push(v);
    }
    /// Whether `agent` is stopped or killed now (it cannot answer).
    fn affected(&self, agent: usize) -> bool {
        lock(&self.active).iter().any(|f| f.silences() == Some(agent))
    }
    /// Marks the processes `f` acts on as under a fault now.
    fn touch(&self, f: Fault) {
        let mut t = lock(&self.touched);
        for target in f.targets() {
            t.insert(target, Instant::now());
        }
    }
    /// Whether `target` was under a fault at any time since `since`.
    fn touched_since(&self, target: &str, since: Instant) -> bool {
        lock(&self.touched).get(target).is_some_and(|t| *t >= since)
            || lock(&self.active).iter().any(|f| f.targets().iter().any(|x| x == target))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// Sends `lines` on one connection and reads one answer per line (`None`: no answer in time).
fn ask(socket: &Path, lines: &[String], timeout: Duration) -> Option<Vec<String>> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    let mut req = String::new();
    for l in lines {
        req.push_str(l);
        req.push('\n');
    }
    s.write_all(req.as_bytes()).ok()?;
    let mut r = BufReader::new(s);
    let mut out = Vec::with_capacity(lines.len());
    for _ in lines {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        out.push(line.trim_end().to_owned());
    }
    Some(out)
}

/// The identity provider's key: an ES256 key pair made for this run, and its JWKS.
fn idp_key() -> anyhow::Result<(jsonwebtoken::EncodingKey, String)> {
    use base64::Engine as _;
    let pair = rcgen::KeyPair::generate()?;
    let key = jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes())?;
    // An uncompressed P-256 point: 0x04, x, y.
    let raw = pair.public_key_raw();
    anyhow::ensure!(raw.len() == 65, "unexpected public key of {} bytes", raw.len());
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "soak",
        "x": b64(&raw[1..33]), "y": b64(&raw[33..]),
    }]});
    Ok((key, jwks.to_string()))
}

/// A back-channel logout token for session `sid`.
fn logout_token(key: &jsonwebtoken::EncodingKey, sid: &str) -> String {
    let now = revmesh_runtime::Clock::system().unix_secs();
    let claims = serde_json::json!({
        "iss": IDP, "aud": IDP_CLIENT, "iat": now, "jti": format!("logout-{sid}"), "sid": sid,
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("soak".into());
    header.typ = Some("logout+jwt".into());
    jsonwebtoken::encode(&header, &claims, key).unwrap_or_default()
}

/// An access token of session `sid` at the identity provider (signed with the agents' key).
fn session_token(sid: &str) -> String {
    let now = revmesh_runtime::Clock::system().unix_secs();
    let claims = serde_json::json!({
        "jti": format!("access-{sid}"), "sub": "soak", "iss": IDP, "sid": sid, "iat": now - 5, "exp": now + 3600,
    });
    jsonwebtoken::EncodingKey::from_secret(BENCH_SECRET.as_bytes())
        .ok()
        .and_then(|k| {
            jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &k).ok()
        })
        .unwrap_or_default()
}

fn check_token(jti: &str) -> String {
    let exp = revmesh_runtime::Clock::system().unix_secs() + 3600;
    crate::util::mint(BENCH_SECRET, jti, "soak", exp).unwrap_or_default()
}

/// The mesh: the processes the faults act on.
struct Mesh {
    dir: PathBuf,
    pg: revmesh_testkit::pg::Cluster,
    replicas: Vec<Option<AuthorityProc>>,
    agent_ports: Vec<String>,
    agents: Vec<Option<AgentProc>>,
    /// Replicas to (re)start, and when to try next.
    pending: Restarts,
    /// Replicas a freeze covers: one killed before its freeze is not started until the freeze
    /// heals (a stopped replica would be), so "every replica frozen" holds.
    frozen: Vec<bool>,
    secret: PathBuf,
    token_file: PathBuf,
    /// The identity provider's JWKS file.
    idp_jwks: PathBuf,
    /// Each agent's network namespace.
    agent_ns: Vec<String>,
    /// The address at which each replica reaches PostgreSQL (through its own link).
    store_addrs: Vec<String>,
    /// The relays of the first [`SLOW_AGENTS`] agents: `[agent][replica]`.
    relays: Vec<Vec<relay::Relay>>,
    /// The volume under [`DISK_AGENT`]'s data dir (unmounted after the agents are gone).
    disk: Option<Volume>,
    /// Dropped last: the namespaces go once every process in them has.
    net: net::Net,
}

/// A tmpfs mounted for the soak, unmounted on drop.
#[derive(Debug)]
struct Volume {
    path: PathBuf,
}

impl Volume {
    fn mount(path: &Path, mib: u64) -> anyhow::Result<Volume> {
        std::fs::create_dir_all(path)?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "soak-disk"])
            .arg(path)
            .status()?;
        anyhow::ensure!(status.success(), "mount -t tmpfs at {} (the soak needs root)", path.display());
        Ok(Volume { path: path.to_owned() })
    }

    fn filler(&self) -> PathBuf {
        self.path.join("filler")
    }

    /// Fills the volume (until the write fails), or frees what the filling took.
    fn fill(&self, full: bool) -> anyhow::Result<()> {
        if !full {
            return Ok(std::fs::remove_file(self.filler())?);
        }
        let mut f = std::fs::File::create(self.filler())?;
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        Ok(())
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

impl Mesh {
    fn replica_args(&self, r: usize) -> Vec<String> {
        let url = format!("postgres://postgres@{}:{}/postgres", self.store_addrs[r], self.pg.port);
        [
            "--store",
            url.as_str(),
            "--admin-token-file",
            &self.token_file.display().to_string(),
            // The agents reach the replicas over the soak's own network, not loopback: they
            // present a token (their ids `soak-*`).
            "--agent-token-file",
            &self.dir.join("agent.tokens").display().to_string(),
            "--heartbeat",
            "500ms",
            "--ack-timeout",
            "500ms",
            "--store-timeout",
            "2s",
            "--max-agents",
            "1000",
            "--oidc-provider",
            &format!("{IDP}={}", self.idp_jwks.display()),
            "--oidc-audience",
            IDP_CLIENT,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// One attempt to start replica `r` (its first start, or a restart on the same agent port).
    fn start_replica(&mut self, r: usize) -> anyhow::Result<()> {
        let args = self.replica_args(r);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let data = self.dir.join(format!("replica-{r}"));
        self.replicas[r] = Some(AuthorityProc::start(&data, &self.agent_ports[r], &args)?);
        Ok(())
    }

    /// What a service manager does for a replica that is down (see [`Restarts`]).
    fn restart_pending(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        let frozen = self.frozen.clone();
        // A replica that runs already is not started twice (the second could only fail on its
        // port, and leave the first judged as away).
        pending.run(&frozen, |r| if self.replicas[r].is_some() { Ok(()) } else { self.start_replica(r) });
        self.pending = pending;
    }

    fn start_agent(&mut self, i: usize) -> anyhow::Result<()> {
        let urls: Vec<String> = match self.relays.get(i) {
            Some(relays) => relays.iter().map(|r| format!("ws://{}", r.addr)).collect(),
            None => self.agent_ports.iter().map(|p| format!("ws://{p}")).collect(),
        };
        let tokens = self.dir.join("agent.token").display().to_string();
        let extra = ["--authority", &urls[1], "--max-staleness", MAX_STALENESS, "--token-file", &tokens];
        let dir = self.dir.join(format!("agent-{i}"));
        let bin = crate::procs::sibling("revmesh-agent")?;
        let ns = Some(self.agent_ns[i].as_str());
        self.agents[i] =
            Some(AgentProc::start_in(ns, &bin, &dir, &format!("soak-{i}"), &urls[0], &self.secret, &extra)?);
        Ok(())
    }

    fn pids(&self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for (r, p) in self.replicas.iter().enumerate() {
            if let Some(p) = p {
                out.push((format!("replica-{r}"), p.proc.child.id()));
            }
        }
        for (i, a) in self.agents.iter().enumerate() {
            if let Some(a) = a {
                out.push((format!("agent-{i}"), a.proc.child.id()));
            }
        }
        if let Some(master) = self.pg.pids().first() {
            out.push(("postgres".into(), *master));
        }
        out
    }

    fn admins(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.as_ref().map_or_else(String::new, |p| p.admin.clone())).collect()
    }

    /// Stops (`stop`) or continues the processes a freeze names; `false` for other faults.
    fn freeze(&mut self, f: Fault, stop: bool) -> bool {
        let sig = if stop { "-STOP" } else { "-CONT" };
        let pids: Vec<u32> = match f {
            Fault::FreezeAgent(i) => self.agents[i].iter().map(|a| a.proc.child.id()).collect(),
            Fault::FreezeReplica(r) => {
                self.frozen[r] = stop;
                self.replicas[r].iter().map(|p| p.proc.child.id()).collect()
            }
            Fault::FreezeAllReplicas => {
                self.frozen.fill(stop);
                self.replicas.iter().flatten().map(|p| p.proc.child.id()).collect()
            }
            Fault::FreezePostgres if stop => {
                // The postmaster first, so no backend is forked after the children are listed.
                for pid in self.pg.pids().into_iter().take(1) {
                    signal(pid, sig);
                }
                self.pg.pids()
            }
            Fault::FreezePostgres => self.pg.pids(),
            Fault::KillAgent(_)
            | Fault::KillReplica(_)
            | Fault::CutAgent(_)
            | Fault::CutReplicaFromStore(_)
            | Fault::SlowAgent(_)
            | Fault::FillAgentDisk(_) => return false,
        };
        for pid in pids {
            signal(pid, sig);
        }
        true
    }

    fn apply(&mut self, f: Fault) -> anyhow::Result<()> {
        if self.freeze(f, true) {
            return Ok(());
        }
        match f {
            Fault::CutAgent(i) => self.net.cut_agent(i, true)?,
            Fault::CutReplicaFromStore(r) => self.net.cut_store(r, true)?,
            Fault::SlowAgent(i) => self.relays[i].iter().for_each(|r| r.set_slow(true)),
            Fault::FillAgentDisk(_) => self.disk.as_ref().map_or(Ok(()), |d| d.fill(true))?,
            Fault::KillAgent(i) => {
                if let Some(mut a) = self.agents[i].take() {
                    a.proc.kill9();
                }
            }
            Fault::KillReplica(r) => {
                if let Some(mut p) = self.replicas[r].take() {
                    p.proc.kill9();
                }
                self.pending.killed(r);
            }
            _ => {}
        }
        Ok(())
    }

    fn heal(&mut self, f: Fault) -> anyhow::Result<()> {
        if self.freeze(f, false) {
            return Ok(());
        }
        match f {
            Fault::CutAgent(i) => self.net.cut_agent(i, false)?,
            Fault::CutReplicaFromStore(r) => self.net.cut_store(r, false)?,
            Fault::SlowAgent(i) => self.relays[i].iter().for_each(|r| r.set_slow(false)),
            Fault::FillAgentDisk(_) => self.disk.as_ref().map_or(Ok(()), |d| d.fill(false))?,
            Fault::KillAgent(i) => self.start_agent(i)?,
            Fault::KillReplica(r) => {
                self.pending.healed(r, self.replicas[r].is_some());
                self.restart_pending();
            }
            _ => {}
        }
        Ok(())
    }
}

/// The writer: single revocations with `?wait=all` (and every tenth a bulk array of ten),
/// alternating between the replicas, about twenty a second.
fn writer(s: Arc<Shared>) {
    let mut i = 0u64;
    let exp = revmesh_runtime::Clock::system().unix_secs() + 3600;
    while !s.stop.load(Ordering::Acquire) {
        i += 1;
        let admins = lock(&s.admins).clone();
        let admin = admins[(i as usize) % admins.len()].clone();
        if admin.is_empty() {
            *lock(&s.refused) += 1;
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        if i % 25 == 5 {
            // Now and then a session ends at the identity provider, which tells the replicas.
            let sid = format!("soak-sid-{i}");
            let body = format!("logout_token={}", logout_token(&s.idp_key, &sid));
            let answer = revmesh_authority::cli::http_request(
                &admin,
                "POST",
                "/v1/oidc/backchannel-logout",
                None,
                body.as_bytes(),
                Duration::from_secs(15),
            );
            match answer {
                Ok((200, _)) => lock(&s.logouts).push((sid, s.now())),
                Ok((400, text)) => s.violate(format!("a logout refused as invalid: {text}")),
                _ => *lock(&s.refused) += 1,
            }
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let bulk = i.is_multiple_of(10);
        let jtis: Vec<String> =
            if bulk { (0..10).map(|k| format!("soak-{i}-{k}")).collect() } else { vec![format!("soak-{i}")] };
        let bodies: Vec<String> =
            jtis.iter().map(|j| format!(r#"{{"kind":"jti","jti":"{j}","expires_at":{exp}}}"#)).collect();
        let body = if bulk { format!("[{}]", bodies.join(",")) } else { bodies[0].clone() };
        let started = Instant::now();
        let answer = revmesh_authority::cli::http_request(
            &admin,
            "POST",
            "/v1/revocations?wait=all&timeout_ms=2000",
            Some(&s.token),
            body.as_bytes(),
            Duration::from_secs(15),
        );
        // A running replica answers (503, or 201 with what the receipt could say) within the
        // store timeout, the receipt wait and the receipt's own store read, never left hanging,
        // whatever else is wrong: PostgreSQL frozen, the replica cut from it, agents stopped.
        // Judged only when no replica was stopped or killed while the request ran (a frozen
        // replica holds its requests for as long as it is stopped).
        let took = started.elapsed();
        let running = !(0..REPLICAS).any(|r| s.touched_since(&format!("replica-{r}"), started));
        if running && took > ANSWER_BOUND {
            s.violate(format!("a revocation took {took:?} to be answered by a running replica"));
        }
        match answer {
            Ok((201, text)) => {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                let first = v["seq"].as_u64().or_else(|| v["first_seq"].as_u64()).unwrap_or(0);
                let acked: Vec<String> = v["acked"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                // One frozen or killed agent never holds up the others: with the replicas and
                // PostgreSQL left alone for QUIET before the request and during it, every agent
                // the receipt names as pending must have been under a fault of its own.
                let since = started.checked_sub(QUIET).unwrap_or(s.started);
                let calm = since > s.started
                    && !(0..REPLICAS).any(|r| {
                        s.touched_since(&format!("replica-{r}"), since)
                            || s.touched_since(&format!("store-link-{r}"), since)
                    })
                    && !s.touched_since("postgres", since);
                if calm {
                    for id in v["pending"].as_array().into_iter().flatten().filter_map(|x| x.as_str()) {
                        let process = id.replace("soak-", "agent-");
                        if !s.touched_since(&process, since) {
                            s.violate(format!(
                                "{id} pending after {:?} in a receipt while only other agents were faulted",
                                started.elapsed()
                            ));
                        }
                    }
                }
                let at = s.now();
                let mut accepted = lock(&s.accepted);
                for (k, jti) in jtis.into_iter().enumerate() {
                    accepted.push((first + k as u64, jti, acked.clone(), at));
                }
                drop(accepted);
                lock(&s.receipts).push((at, started.elapsed()));
            }
            _ => *lock(&s.refused) += 1,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The checker: every agent is asked about tokens whose revocation a receipt named it for (the
/// newest and a sample of older ones); OK is a violation. Agents under a fault of their own are
/// skipped (a frozen one cannot answer; a killed one is restarting).
fn checker(s: Arc<Shared>, agents: usize, sockets: Vec<PathBuf>, seed: u64) {
    let mut rng = revmesh_protocol::time::Jitter::new(seed ^ 0x5eed);
    while !s.stop.load(Ordering::Acquire) {
        let accepted = lock(&s.accepted).clone();
        for (i, socket) in sockets.iter().enumerate().take(agents) {
            if s.affected(i) {
                continue;
            }
            let id = format!("soak-{i}");
            // The canary: a token nobody revokes.
            let down = *lock(&s.all_replicas_down);
            let clear = *lock(&s.replicas_clear);
            let cut = lock(&s.cut_at).get(&i).copied();
            if let Some(answer) = ask(
                socket,
                &[format!("CHECK {}", check_token(&format!("canary-{i}")))],
                Duration::from_millis(500),
            )
            .and_then(|a| a.into_iter().next())
            {
                if s.affected(i) {
                    // Its own fault began meanwhile: nothing to judge.
                } else if cut.is_some_and(|t| t.elapsed() > STALE_BY)
                    && lock(&s.cut_at).get(&i) == cut.as_ref()
                {
                    // Black-holed from every replica (and still, now that the answer is in).
                    *lock(&s.stale_probes) += 1;
                    if answer.starts_with("OK") {
                        s.violate(format!(
                            "agent {id} answered OK black-holed from every replica for {:?}",
                            cut.map(|t| t.elapsed())
                        ));
                    }
                } else if down.is_some_and(|t| t.elapsed() > STALE_BY) && *lock(&s.all_replicas_down) == down
                {
                    // (Judged only if every replica is still away now that the answer is in.)
                    *lock(&s.stale_probes) += 1;
                    if answer.starts_with("OK") {
                        s.violate(format!(
                            "agent {id} answered OK with no replica reachable for {:?}",
                            down.map(|t| t.elapsed())
                        ));
                    }
                } else if clear.is_some_and(|t| t.elapsed() > FRESH_AGAIN)
                    && !s.touched_since(
                        &format!("agent-{i}"),
                        Instant::now().checked_sub(FRESH_AGAIN).unwrap_or(s.started),
                    )
                    && answer.starts_with("STALE")
                {
                    s.violate(format!(
                        "agent {id} still STALE {:?} after the last replica fault healed",
                        clear.map(|t| t.elapsed())
                    ));
                }
            }
            // Freshness is a promise about the whole log: an agent that answers OK (not STALE)
            // has everything committed more than --max-staleness (+1 s) ago, whoever
            // committed it and whatever the receipts said. The newest such revocations and a
            // sample of older ones.
            let now = s.now();
            let old: Vec<&Accepted> =
                accepted.iter().filter(|(_, _, _, at)| *at < now - STALE_BY.as_secs_f64()).collect();
            if !old.is_empty() {
                let mut pick: Vec<&Accepted> = old.iter().rev().take(5).copied().collect();
                for _ in 0..5 {
                    pick.push(old[(rng.next_u64() % old.len() as u64) as usize]);
                }
                let lines: Vec<String> =
                    pick.iter().map(|e| format!("CHECK {}", check_token(&e.1))).collect();
                if let Some(answers) = ask(socket, &lines, Duration::from_millis(500)) {
                    *lock(&s.probes) += answers.len() as u64;
                    for ((_, jti, _, at), answer) in pick.iter().zip(&answers) {
                        if answer.starts_with("OK") && !s.affected(i) {
                            s.violate(format!(
                                "agent {id} answered OK (fresh) for {jti}, accepted {:.1} s before",
                                s.now() - at
                            ));
                        }
                    }
                }
            }
            // The same for sessions ended by a logout.
            let ended: Vec<(String, f64)> = lock(&s.logouts)
                .iter()
                .filter(|(_, at)| *at < now - STALE_BY.as_secs_f64())
                .rev()
                .take(2)
                .cloned()
                .collect();
            if !ended.is_empty() {
                let lines: Vec<String> =
                    ended.iter().map(|(sid, _)| format!("CHECK {}", session_token(sid))).collect();
                if let Some(answers) = ask(socket, &lines, Duration::from_millis(500)) {
                    *lock(&s.probes) += answers.len() as u64;
                    for ((sid, at), answer) in ended.iter().zip(&answers) {
                        if answer.starts_with("OK") && !s.affected(i) {
                            s.violate(format!(
                                "agent {id} answered OK (fresh) for session {sid}, logged out {:.1} s before",
                                s.now() - at
                            ));
                        }
                    }
                }
            }
            let mine: Vec<&Accepted> =
                accepted.iter().filter(|(_, _, acked, _)| acked.contains(&id)).collect();
            if mine.is_empty() {
                continue;
            }
            let mut pick: Vec<&String> = mine.iter().rev().take(10).map(|e| &e.1).collect();
            for _ in 0..10 {
                pick.push(&mine[(rng.next_u64() % mine.len() as u64) as usize].1);
            }
            let lines: Vec<String> = pick.iter().map(|j| format!("CHECK {}", check_token(j))).collect();
            let Some(answers) = ask(socket, &lines, Duration::from_millis(500)) else { continue };
            *lock(&s.probes) += answers.len() as u64;
            for (jti, answer) in pick.iter().zip(&answers) {
                // Only an answer given while no fault of its own was active counts.
                if answer.starts_with("OK") && !s.affected(i) {
                    s.violate(format!("agent {id} answered OK for {jti}, whose receipt named it"));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The sampler: each second, every process's RSS and open fds, the log head and every agent's
/// position.
fn sampler(s: Arc<Shared>, sockets: Vec<PathBuf>) {
    while !s.stop.load(Ordering::Acquire) {
        let t = s.now();
        for (name, pid) in lock(&s.pids).clone() {
            let rss = crate::procs::rss_of(pid).unwrap_or(0);
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0);
            lock(&s.usage).push((t, name, pid, rss, fds));
        }
        let head = lock(&s.admins)
            .clone()
            .iter()
            .filter(|a| !a.is_empty())
            .filter_map(|a| {
                let (status, text) = revmesh_authority::cli::http_request(
                    a,
                    "GET",
                    "/v1/status",
                    Some(&s.token),
                    b"",
                    Duration::from_millis(500),
                )
                .ok()?;
                (status == 200)
                    .then(|| serde_json::from_str::<serde_json::Value>(&text).ok()?["head"].as_u64())?
            })
            .max();
        readiness(&s);
        let positions = sockets
            .iter()
            .map(|sock| {
                let a = ask(sock, &["PING".to_owned()], Duration::from_millis(200))?;
                a.first()?.split_whitespace().find_map(|w| w.strip_prefix("seq="))?.parse().ok()
            })
            .collect();
        lock(&s.positions).push((t, head, positions));
        let spent = s.now() - t;
        std::thread::sleep(Duration::from_secs_f64((1.0 - spent).max(0.05)));
    }
}

/// `/readyz` of every running replica: 503 once its store has been out of reach for
/// [`READY_BY`], 200 again [`READY_AGAIN`] after it is back (replicas stopped or killed
/// meanwhile are not judged).
fn readiness(s: &Shared) {
    let admins = lock(&s.admins).clone();
    for (r, admin) in admins.iter().enumerate().filter(|(_, a)| !a.is_empty()) {
        let replica = format!("replica-{r}");
        let away = lock(&s.store_away)[r];
        let asked = Instant::now();
        let Ok((code, _)) = revmesh_authority::cli::http_request(
            admin,
            "GET",
            "/readyz",
            Some(&s.token),
            b"",
            Duration::from_millis(1000),
        ) else {
            continue;
        };
        match away {
            Some(t0) => {
                let judged = asked.duration_since(t0) > READY_BY
                    && !s.touched_since(&replica, t0)
                    && lock(&s.store_away)[r] == Some(t0);
                if judged && code == 200 {
                    s.violate(format!(
                        "replica {r} /readyz 200 with its store out of reach for {:?}",
                        asked.duration_since(t0)
                    ));
                }
            }
            None => {
                let since = asked.checked_sub(READY_AGAIN).unwrap_or(s.started);
                let settled = since > s.started
                    && !s.touched_since(&replica, since)
                    && !s.touched_since("postgres", since)
                    && !s.touched_since(&format!("store-link-{r}"), since)
                    && lock(&s.store_away)[r].is_none();
                if settled && code != 200 {
                    s.violate(format!(
                        "replica {r} /readyz {code} {READY_AGAIN:?} after its store came back"
                    ));
                }
            }
        }
    }
}

/// One fault of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    /// When, from the start.
    pub at: Duration,
    /// What.
    pub fault: Fault,
    /// For how long.
    pub lasts: Duration,
}

/// The fault schedule of `seed`, the same for every run: a new fault every 1–4 s, lasting
/// 2–8 s (every replica frozen at once, or an agent black-holed: 8–14 s, past
/// `--max-staleness`), at most three at
/// once, never two on one process or link (a drawn fault whose process is busy is skipped); whatever is
/// active at `secs` heals then.
pub fn schedule(seed: u64, secs: u64, agents: usize) -> Vec<Planned> {
    let mut rng = revmesh_protocol::time::Jitter::new(seed);
    let mut plan: Vec<Planned> = Vec::new();
    if secs >= LONG_FREEZE_FROM && LONG_FROZEN_AGENT < agents {
        let third = Duration::from_secs(secs / 3);
        plan.push(Planned { at: third, fault: Fault::FreezeAgent(LONG_FROZEN_AGENT), lasts: third });
    }
    let mut t = Duration::from_millis(1000 + rng.next_u64() % 3000);
    while t < Duration::from_secs(secs) {
        // Active then, or due to start before the new fault would end (the long freeze).
        let active: Vec<&Planned> =
            plan.iter().filter(|p| p.at + p.lasts > t && p.at < t + Duration::from_secs(14)).collect();
        if active.len() < 3 {
            let fault = match rng.next_u64() % 16 {
                0..=2 => Fault::FreezeAgent((rng.next_u64() % agents.max(1) as u64) as usize),
                3..=4 => Fault::KillAgent((rng.next_u64() % agents.max(1) as u64) as usize),
                5..=6 => Fault::FreezeReplica((rng.next_u64() % REPLICAS as u64) as usize),
                7..=8 => Fault::KillReplica((rng.next_u64() % REPLICAS as u64) as usize),
                9 => Fault::FreezePostgres,
                10 => Fault::FreezeAllReplicas,
                11..=12 => Fault::CutAgent((rng.next_u64() % agents.max(1) as u64) as usize),
                13 => Fault::CutReplicaFromStore((rng.next_u64() % REPLICAS as u64) as usize),
                14 => Fault::SlowAgent((rng.next_u64() % SLOW_AGENTS as u64) as usize),
                _ => Fault::FillAgentDisk(DISK_AGENT),
            };
            let mut lasts = Duration::from_millis(2000 + rng.next_u64() % 6000);
            if matches!(fault, Fault::FreezeAllReplicas | Fault::CutAgent(_)) {
                lasts += Duration::from_secs(6);
            }
            let busy = |p: &&Planned| p.fault.targets().iter().any(|t| fault.targets().contains(t));
            let present = match fault {
                Fault::SlowAgent(i) | Fault::FillAgentDisk(i) => i < agents,
                _ => true,
            };
            if present && !active.iter().any(busy) {
                plan.push(Planned { at: t, fault, lasts });
            }
        }
        t += Duration::from_millis(1000 + rng.next_u64() % 3000);
    }
    plan.sort_by_key(|p| p.at);
    plan
}

/// Replicas waiting to be started again, and when each is tried next: what a service manager
/// does for a replica that is down. A kill's heal queues its replica; a start that fails (its
/// store unreachable at start, say) is tried again a second later, one attempt per call. A new
/// kill takes its replica out of the queue: a replica whose earlier start was still failing
/// stays down for the whole of the new kill, instead of being started under it and then, at the
/// heal, a second time on its own port (the hour-long run of seed 1207 did that, and judged the
/// replica that was serving as away for the rest of the run).
#[derive(Debug, Default)]
struct Restarts {
    next: [Option<Instant>; REPLICAS],
}

impl Restarts {
    /// A kill took replica `r` down: it is started at this kill's heal.
    fn killed(&mut self, r: usize) {
        self.next[r] = None;
    }

    /// A kill of `r` healed: start it again, unless it `running` already.
    fn healed(&mut self, r: usize, running: bool) {
        self.next[r] = if running { None } else { Some(Instant::now()) };
    }

    /// Replicas waiting for a start.
    fn waiting(&self) -> impl Iterator<Item = usize> + '_ {
        self.next.iter().enumerate().filter(|(_, n)| n.is_some()).map(|(r, _)| r)
    }

    /// One `start` of every replica that is due and not `frozen`.
    fn run(&mut self, frozen: &[bool], mut start: impl FnMut(usize) -> anyhow::Result<()>) {
        let now = Instant::now();
        for (r, (next, frozen)) in self.next.iter_mut().zip(frozen).enumerate() {
            if !frozen && next.is_some_and(|at| at <= now) {
                match start(r) {
                    Ok(()) => *next = None,
                    Err(e) => {
                        eprintln!("soak: replica {r} did not start ({e}); again in a second");
                        *next = Some(Instant::now() + Duration::from_secs(1));
                    }
                }
            }
        }
    }
}

/// Faults healed at once, replica restarts last: a replica's start waits for its store, and
/// must find it as the schedule left it (the hour-long run of seed 1207 healed a kill of
/// replica 1 ahead of a PostgreSQL freeze due in the same tick: the start waited two seconds
/// on the frozen database while the checkers took the freeze for ended, and judged replica 0's
/// rightful `/readyz` 503 a violation).
fn heal_order(healing: &mut [(Fault, Instant, usize)]) {
    healing.sort_by_key(|(f, _, _)| matches!(f, Fault::KillReplica(_)));
}

/// Records whether every replica is frozen or down, and since when none is.
fn track_replicas(s: &Shared, active: &[(Fault, Instant, usize)], pending: &Restarts) {
    // A replica waiting to be started again (its kill healed, its start failing) is away too.
    let waiting = pending.waiting();
    let hit: HashSet<usize> = active.iter().flat_map(|(f, _, _)| f.replicas()).chain(waiting).collect();
    for (r, away) in lock(&s.store_away).iter_mut().enumerate() {
        let cut =
            active.iter().any(|(f, _, _)| *f == Fault::FreezePostgres || *f == Fault::CutReplicaFromStore(r));
        if cut {
            away.get_or_insert_with(Instant::now);
        } else {
            *away = None;
        }
    }
    let mut down = lock(&s.all_replicas_down);
    if hit.len() == REPLICAS {
        down.get_or_insert_with(Instant::now);
    } else {
        *down = None;
    }
    let mut clear = lock(&s.replicas_clear);
    if hit.is_empty() {
        clear.get_or_insert_with(Instant::now);
    } else {
        *clear = None;
    }
}

/// A free port on `addr` below the kernel's ephemeral range (`ip_local_port_range`), so that no
/// outgoing connection is ever given it.
fn reserved_port(addr: &str) -> anyhow::Result<u16> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let start = 10_000u16.min(low.saturating_sub(1));
    let span = low.saturating_sub(start).max(1);
    let offset = (std::process::id() as u16).wrapping_mul(7919) % span;
    for k in 0..span {
        let port = start + (offset + k) % span;
        if std::net::TcpListener::bind((addr, port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port on {addr} below {low}")
}

/// Least-squares slope of `(x, y)`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in points {
        num += (x - mx) * (y - my);
        den += (x - mx) * (x - mx);
    }
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// Runs the soak for `secs` seconds of faults with `agents` agent processes; writes the report
/// and the picture into `out`.
pub fn run(dir: &Path, out: &Path, secs: u64, agents: usize, seed: u64) -> anyhow::Result<SoakReport> {
    std::fs::create_dir_all(out)?;
    let mut net = net::Net::new()?;
    let hub = net.hub()?;
    let (pg_ns, store_addrs) = net.store(REPLICAS)?;
    let agent_ns = (0..agents).map(|i| net.agent(i)).collect::<anyhow::Result<Vec<_>>>()?;
    let pg_dir = dir.join("pg");
    std::fs::create_dir_all(&pg_dir)?;
    let pg = revmesh_testkit::pg::Cluster::start_in(&pg_dir, Some(&pg_ns)).map_err(anyhow::Error::msg)?;
    let token_file = dir.join("admin.token");
    std::fs::write(&token_file, "soak-admin-token-0123456789abcdef")?;
    let secret = dir.join("hs.secret");
    std::fs::write(&secret, BENCH_SECRET)?;
    let (idp_key, jwks) = idp_key()?;
    let idp_jwks = dir.join("idp.jwks.json");
    std::fs::write(&idp_jwks, jwks)?;
    let agent_token = "soak-agent-token-0123456789abcdef";
    std::fs::write(dir.join("agent.token"), agent_token)?;
    let digest: String =
        revmesh_authority::operators::token_sha256(agent_token).iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(dir.join("agent.tokens"), format!("soak-* {digest}\n"))?;
    let mut mesh = Mesh {
        dir: dir.to_owned(),
        pg,
        replicas: (0..REPLICAS).map(|_| None).collect(),
        agent_ports: Vec::new(),
        agents: (0..agents).map(|_| None).collect(),
        pending: Restarts::default(),
        frozen: vec![false; REPLICAS],
        secret,
        token_file,
        idp_jwks,
        agent_ns,
        store_addrs,
        relays: Vec::new(),
        disk: None,
        net,
    };
    // Replicas first, on the hub, on ports from 0; their ports are kept for restarts.
    // Ports outside the ephemeral range, kept across restarts: an outgoing connection from the
    // hub address (a relay's, to the other replica) can never take one while its replica is
    // down (the hour-long run lost both replicas to that at its end).
    // (Each chosen once the replica before it listens, so no two get the same.)
    mesh.agent_ports = vec![String::new(); REPLICAS];
    for r in 0..REPLICAS {
        mesh.agent_ports[r] = format!("{hub}:{}", reserved_port(&hub)?);
        mesh.start_replica(r)?;
        let ws = mesh.replicas[r].as_ref().map(|p| p.ws.clone()).unwrap_or_default();
        mesh.agent_ports[r] = ws.trim_start_matches("ws://").to_owned();
    }
    for _ in 0..agents.min(SLOW_AGENTS) {
        let relays = (0..REPLICAS)
            .map(|r| relay::Relay::start(&format!("{hub}:0"), mesh.agent_ports[r].clone()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        mesh.relays.push(relays);
    }
    if DISK_AGENT < agents {
        mesh.disk = Some(Volume::mount(&dir.join(format!("agent-{DISK_AGENT}")).join("data"), DISK_MIB)?);
    }
    for i in 0..agents {
        mesh.start_agent(i)?;
    }
    let sockets: Vec<PathBuf> =
        (0..agents).map(|i| dir.join(format!("agent-{i}")).join("agent.sock")).collect();
    let admin_token = std::fs::read_to_string(&mesh.token_file)?.trim().to_owned();
    let shared = Arc::new(Shared {
        started: Instant::now(),
        stop: AtomicBool::new(false),
        admins: Mutex::new(mesh.admins()),
        token: admin_token,
        accepted: Mutex::default(),
        idp_key,
        logouts: Mutex::default(),
        refused: Mutex::default(),
        receipts: Mutex::default(),
        active: Mutex::default(),
        touched: Mutex::default(),
        all_replicas_down: Mutex::default(),
        replicas_clear: Mutex::new(Some(Instant::now())),
        cut_at: Mutex::default(),
        store_away: Mutex::new(vec![None; REPLICAS]),
        violations: Mutex::default(),
        probes: Mutex::default(),
        stale_probes: Mutex::default(),
        pids: Mutex::new(mesh.pids()),
        positions: Mutex::default(),
        usage: Mutex::default(),
    });
    // Every agent linked before the faults begin.
    let linked = Instant::now();
    while sockets.iter().any(|s| {
        ask(s, &["PING".to_owned()], Duration::from_secs(1)).is_none_or(|a| a[0].ends_with("log_id=none"))
    }) {
        anyhow::ensure!(linked.elapsed() < Duration::from_secs(60), "agents did not link within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("soak: seed {seed}, {secs} s of faults, {agents} agents, {REPLICAS} replicas on a throwaway PostgreSQL");

    let threads = vec![
        std::thread::spawn({
            let s = shared.clone();
            move || writer(s)
        }),
        std::thread::spawn({
            let (s, sockets) = (shared.clone(), sockets.clone());
            move || checker(s, agents, sockets, seed)
        }),
        std::thread::spawn({
            let (s, sockets) = (shared.clone(), sockets.clone());
            move || sampler(s, sockets)
        }),
    ];

    let plan = schedule(seed, secs, agents);
    let mut spans: Vec<FaultSpan> = Vec::new();
    let mut active: Vec<(Fault, Instant, usize)> = Vec::new();
    let end = shared.started + Duration::from_secs(secs);
    let mut upcoming = plan.iter().peekable();
    while Instant::now() < end {
        let now = Instant::now();
        let due: Vec<usize> = (0..active.len()).filter(|&k| active[k].1 <= now).collect();
        let mut healing = Vec::new();
        for k in due.into_iter().rev() {
            healing.push(active.remove(k));
        }
        // What the checkers judge by changes before the heal takes effect: an answer given
        // just after a thaw is never judged as one given while the fault lasted. And between
        // the heals and the new faults: a freeze of every replica healed and another applied in
        // the same tick leave the replicas running for that moment, and "every replica away"
        // starts again from the new freeze.
        // Every healing fault is marked touched before any heal: a heal can take a while (a
        // replica's start waits up to a store timeout), and a checker must not take the faults
        // healed after it for settled long ago.
        heal_order(&mut healing);
        for (f, _, _) in &healing {
            if let Fault::CutAgent(i) = f {
                lock(&shared.cut_at).remove(i);
            }
            lock(&shared.active).retain(|a| a != f);
            shared.touch(*f);
        }
        track_replicas(&shared, &active, &mesh.pending);
        for (f, _, span) in healing {
            mesh.heal(f)?;
            spans[span].to_s = shared.now();
            shared.touch(f);
        }
        while let Some(p) = upcoming.next_if(|p| shared.started + p.at <= now) {
            shared.touch(p.fault);
            lock(&shared.active).push(p.fault);
            mesh.apply(p.fault)?;
            if let Fault::CutAgent(i) = p.fault {
                lock(&shared.cut_at).insert(i, Instant::now());
            }
            println!("  {:6.1}s {} for {:.1}s", shared.now(), p.fault.describe(), p.lasts.as_secs_f64());
            spans.push(FaultSpan {
                fault: p.fault,
                what: p.fault.describe(),
                from_s: shared.now(),
                to_s: f64::NAN,
            });
            active.push((p.fault, shared.started + p.at + p.lasts, spans.len() - 1));
        }
        // Recorded before a restart is tried: one may take a store timeout to fail.
        track_replicas(&shared, &active, &mesh.pending);
        mesh.restart_pending();
        for r in mesh.pending.waiting() {
            shared.touch(Fault::KillReplica(r));
        }
        *lock(&shared.admins) = mesh.admins();
        *lock(&shared.pids) = mesh.pids();
        track_replicas(&shared, &active, &mesh.pending);
        std::thread::sleep(Duration::from_millis(50));
    }
    // The final heal.
    lock(&shared.cut_at).clear();
    lock(&shared.active).clear();
    track_replicas(&shared, &[], &mesh.pending);
    heal_order(&mut active);
    for (f, _, span) in active.drain(..) {
        shared.touch(f);
        mesh.heal(f)?;
        spans[span].to_s = shared.now();
        shared.touch(f);
    }
    let healed = Instant::now();
    while mesh.pending.waiting().next().is_some() && healed.elapsed() < CONVERGE {
        mesh.restart_pending();
        std::thread::sleep(Duration::from_millis(100));
    }
    if mesh.pending.waiting().next().is_some() {
        shared.violate(format!("a replica did not start again within {CONVERGE:?} of the heal"));
    }
    *lock(&shared.admins) = mesh.admins();
    *lock(&shared.pids) = mesh.pids();
    shared.stop.store(true, Ordering::Release);
    for t in threads {
        let _ = t.join();
    }
    let mut report = SoakReport { seed, seconds: secs, agents, replicas: REPLICAS, ..Default::default() };

    // Nothing lost: every agent at the head within the bound.
    let admins = mesh.admins();
    let status = |a: &str| -> Option<u64> {
        let (code, text) = revmesh_authority::cli::http_request(
            a,
            "GET",
            "/v1/status",
            Some(&shared.token),
            b"",
            Duration::from_secs(5),
        )
        .ok()?;
        (code == 200).then(|| serde_json::from_str::<serde_json::Value>(&text).ok()?["head"].as_u64())?
    };
    let head = admins.iter().filter_map(|a| status(a)).max().unwrap_or(0);
    let behind = |sock: &PathBuf| {
        let seq = ask(sock, &["PING".to_owned()], Duration::from_secs(1)).and_then(|a| {
            a.first()?.split_whitespace().find_map(|w| w.strip_prefix("seq="))?.parse::<u64>().ok()
        });
        seq.is_none_or(|s| s < head)
    };
    while sockets.iter().any(behind) && healed.elapsed() < CONVERGE {
        std::thread::sleep(Duration::from_millis(100));
    }
    report.converge_secs = healed.elapsed().as_secs_f64();
    for (i, sock) in sockets.iter().enumerate() {
        if behind(sock) {
            shared.violate(format!("agent soak-{i} not at the head {head} within {CONVERGE:?} of the heal"));
        }
    }
    // Every 201 in the log once, at its seq.
    let accepted = lock(&shared.accepted).clone();
    let mut log: HashMap<u64, String> = HashMap::new();
    let mut after = 0u64;
    loop {
        let path = format!("/v1/revocations?after={after}&limit=1000");
        let (code, text) = revmesh_authority::cli::http_request(
            &admins[0],
            "GET",
            &path,
            Some(&shared.token),
            b"",
            Duration::from_secs(10),
        )
        .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(code == 200, "listing the log: {code} {text}");
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let entries = v["entries"].as_array().cloned().unwrap_or_default();
        let Some(last) = entries.last().and_then(|e| e["seq"].as_u64()) else { break };
        for e in &entries {
            if let (Some(seq), Some(jti)) = (e["seq"].as_u64(), e["jti"].as_str()) {
                log.insert(seq, jti.to_owned());
            }
        }
        after = last;
    }
    let mut jtis_seen: HashMap<&str, u64> = HashMap::new();
    for jti in log.values() {
        *jtis_seen.entry(jti).or_default() += 1;
    }
    for (seq, jti, _, _) in &accepted {
        if log.get(seq) != Some(jti) {
            shared.violate(format!("201 for {jti} at seq {seq}, which the log holds as {:?}", log.get(seq)));
        }
        if jtis_seen.get(jti.as_str()).copied().unwrap_or(0) != 1 {
            shared.violate(format!(
                "{jti} is in the log {} times",
                jtis_seen.get(jti.as_str()).copied().unwrap_or(0)
            ));
        }
    }
    // Every agent refuses every accepted token.
    for (i, sock) in sockets.iter().enumerate() {
        for chunk in accepted.chunks(200) {
            let lines: Vec<String> =
                chunk.iter().map(|(_, j, _, _)| format!("CHECK {}", check_token(j))).collect();
            match ask(sock, &lines, Duration::from_secs(10)) {
                Some(answers) => {
                    for ((_, jti, _, _), a) in chunk.iter().zip(answers) {
                        if !a.starts_with("REVOKED") {
                            shared.violate(format!("agent soak-{i} answers {a:?} for {jti} after the heal"));
                        }
                    }
                }
                None => shared.violate(format!("agent soak-{i} does not answer after the heal")),
            }
        }
    }

    // Every agent refuses every session a logout ended.
    let logouts = lock(&shared.logouts).clone();
    for (i, sock) in sockets.iter().enumerate() {
        for chunk in logouts.chunks(200) {
            let lines: Vec<String> =
                chunk.iter().map(|(sid, _)| format!("CHECK {}", session_token(sid))).collect();
            match ask(sock, &lines, Duration::from_secs(10)) {
                Some(answers) => {
                    for ((sid, _), a) in chunk.iter().zip(answers) {
                        if !a.starts_with("REVOKED") {
                            shared.violate(format!(
                                "agent soak-{i} answers {a:?} for session {sid} after the heal"
                            ));
                        }
                    }
                }
                None => shared.violate(format!("agent soak-{i} does not answer after the heal")),
            }
        }
    }
    report.logouts = logouts.len() as u64;
    report.accepted = accepted.len() as u64;
    report.refused = *lock(&shared.refused);
    report.probes = *lock(&shared.probes);
    report.stale_probes = *lock(&shared.stale_probes);
    report.faults = spans;
    report.receipt = crate::util::summarize(lock(&shared.receipts).iter().map(|r| r.1).collect());
    // Resources: maxima, and slopes over the second half.
    let usage = lock(&shared.usage).clone();
    let half = secs as f64 / 2.0;
    let mut names: Vec<String> = usage.iter().map(|u| u.1.clone()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let mine: Vec<&Usage> = usage.iter().filter(|u| u.1 == name && u.3 > 0).collect();
        // Slopes per incarnation (a restarted process starts small again), over the second
        // half; the steepest of those with at least ten samples.
        let mut pids: Vec<u32> = mine.iter().map(|u| u.2).collect();
        pids.dedup();
        let (mut rss_slope, mut fds_slope) = (0f64, 0f64);
        for pid in pids {
            let late: Vec<&&Usage> = mine.iter().filter(|u| u.2 == pid && u.0 >= half).collect();
            // Incarnations of at least a quarter of the run (five minutes at most) have a
            // trend to speak of; a replica restarted shortly before the end has none.
            if late.len() < ((secs / 4).min(300) as usize).max(10) {
                continue;
            }
            let rss: Vec<(f64, f64)> = late.iter().map(|u| (u.0 / 60.0, u.3 as f64 / 1024.0)).collect();
            let fds: Vec<(f64, f64)> = late.iter().map(|u| (u.0 / 60.0, u.4 as f64)).collect();
            rss_slope = rss_slope.max(slope(&rss));
            fds_slope = fds_slope.max(slope(&fds));
        }
        report.resources.push(Resources {
            name,
            rss_max_mib: mine.iter().map(|u| u.3).max().unwrap_or(0) as f64 / (1 << 20) as f64,
            rss_slope_kib_per_min: rss_slope,
            fds_max: mine.iter().map(|u| u.4).max().unwrap_or(0),
            fds_slope_per_min: fds_slope,
        });
    }
    // The long freeze: what the replicas held meanwhile.
    report.long_freeze = report.faults.iter().find(|f| f.to_s - f.from_s > 60.0).map(|f| {
        let rss = |r: usize, from: f64, to: f64| {
            let name = format!("replica-{r}");
            usage.iter().filter(|u| u.1 == name && u.0 >= from && u.0 <= to).map(|u| u.3).max().unwrap_or(0)
                as f64
                / (1 << 20) as f64
        };
        LongFreeze {
            agent: f.what.clone(),
            from_s: f.from_s,
            to_s: f.to_s,
            replica_rss_before_mib: (0..REPLICAS).map(|r| rss(r, f.from_s - 60.0, f.from_s)).collect(),
            replica_rss_during_mib: (0..REPLICAS).map(|r| rss(r, f.from_s, f.to_s)).collect(),
            accepted_meanwhile: accepted.iter().filter(|a| a.3 >= f.from_s && a.3 <= f.to_s).count() as u64,
        }
    });
    report.violations = lock(&shared.violations).clone();
    let svg = out.join(format!("soak-{seed}.svg"));
    plot::draw(&svg, &report, &lock(&shared.positions), &lock(&shared.receipts), &usage)?;
    report.svg = svg.display().to_string();
    std::fs::write(out.join(format!("soak-{seed}.json")), serde_json::to_string_pretty(&report)?)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_ports_are_outside_the_ephemeral_range() {
        let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse().ok())
            .unwrap_or(32768);
        let port = reserved_port("127.0.0.1").unwrap();
        assert!(port < low, "{port} is in the ephemeral range from {low}");
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "and free");
    }

    #[test]
    fn slopes_are_least_squares() {
        assert_eq!(slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]), 2.0);
        assert_eq!(slope(&[(0.0, 4.0), (1.0, 4.0)]), 0.0);
        assert_eq!(slope(&[(1.0, 4.0)]), 0.0, "one point has no trend");
        assert_eq!(slope(&[(1.0, 4.0), (1.0, 9.0)]), 0.0, "no spread in time");
    }

    /// Longest time within `secs` during which every replica is frozen or down.
    fn all_down(plan: &[Planned], secs: u64) -> Duration {
        let mut longest = Duration::ZERO;
        let mut t = Duration::ZERO;
        let mut since: Option<Duration> = None;
        while t < Duration::from_secs(secs) {
            let hit: HashSet<usize> = plan
                .iter()
                .filter(|p| p.at <= t && t < p.at + p.lasts)
                .flat_map(|p| p.fault.replicas())
                .collect();
            match (hit.len() == REPLICAS, since) {
                (true, None) => since = Some(t),
                (true, Some(s)) => longest = longest.max(t - s),
                (false, _) => since = None,
            }
            t += Duration::from_millis(50);
        }
        longest
    }

    #[test]
    fn a_seed_replays_its_schedule_and_the_ci_seed_takes_every_replica_away() {
        assert_eq!(schedule(41, 60, 20), schedule(41, 60, 20));
        assert_ne!(schedule(41, 60, 20), schedule(42, 60, 20));
        for p in schedule(7, 600, 20).iter().filter(|p| p.lasts < Duration::from_secs(60)) {
            assert!(p.lasts >= Duration::from_secs(2) && p.lasts < Duration::from_secs(14));
        }
        // The 60 s CI soak (seed 41) must try the staleness invariant: every replica away for
        // longer than --max-staleness + 1 s.
        let plan = schedule(41, 60, 20);
        assert!(
            all_down(&plan, 60) > STALE_BY,
            "seed 41 never takes every replica away long enough: {plan:?}"
        );
        // ... and black-holes an agent past --max-staleness, and a replica from PostgreSQL.
        assert!(
            plan.iter().any(|p| matches!(p.fault, Fault::CutAgent(_)) && p.lasts > STALE_BY),
            "seed 41 never black-holes an agent long enough: {plan:?}"
        );
        assert!(
            plan.iter().any(|p| matches!(p.fault, Fault::CutReplicaFromStore(_))),
            "seed 41 never cuts a replica from PostgreSQL: {plan:?}"
        );
    }

    #[test]
    fn an_hour_long_soak_freezes_one_agent_for_its_middle_third_and_nothing_else_touches_it() {
        let plan = schedule(1207, 3600, 20);
        let long: Vec<&Planned> = plan.iter().filter(|p| p.lasts > Duration::from_secs(60)).collect();
        assert_eq!(long.len(), 1);
        assert_eq!(long[0].fault, Fault::FreezeAgent(LONG_FROZEN_AGENT));
        assert_eq!((long[0].at, long[0].lasts), (Duration::from_secs(1200), Duration::from_secs(1200)));
        let other = |p: &&Planned| {
            p.fault.targets() == long[0].fault.targets()
                && p.at + p.lasts > long[0].at
                && p.at < long[0].at + long[0].lasts
                && p.lasts < Duration::from_secs(60)
        };
        assert!(!plan.iter().any(|p| other(&p)), "another fault on the long-frozen agent");
        assert!(plan.windows(2).all(|w| w[0].at <= w[1].at), "in time order");
        assert!(
            schedule(41, 60, 20).iter().all(|p| p.lasts < Duration::from_secs(14)),
            "none in a short soak"
        );
    }

    #[test]
    fn two_faults_never_share_a_process() {
        assert_eq!(Fault::FreezeAgent(3).targets(), Fault::KillAgent(3).targets());
        assert_ne!(Fault::FreezeAgent(3).targets(), Fault::FreezeAgent(4).targets());
        assert_eq!(Fault::FreezeReplica(1).targets(), Fault::KillReplica(1).targets());
        assert!(Fault::FreezeAllReplicas.targets().contains(&Fault::KillReplica(1).targets()[0]));
        assert_eq!(Fault::CutAgent(3).targets(), Fault::FreezeAgent(3).targets());
        assert_ne!(Fault::CutReplicaFromStore(1).targets(), Fault::FreezeReplica(1).targets());
        assert_eq!(Fault::KillAgent(2).silences(), Some(2));
        assert_eq!(Fault::CutAgent(2).silences(), None, "a black-holed agent still answers");
        assert_eq!(Fault::FreezePostgres.silences(), None);
    }

    #[test]
    fn replica_restarts_are_healed_after_everything_else_due_with_them() {
        let t = Instant::now();
        let mut healing = vec![
            (Fault::KillReplica(1), t, 0),
            (Fault::FreezePostgres, t, 1),
            (Fault::CutReplicaFromStore(0), t, 2),
        ];
        heal_order(&mut healing);
        let order: Vec<Fault> = healing.iter().map(|(f, _, _)| *f).collect();
        assert_eq!(order, [Fault::FreezePostgres, Fault::CutReplicaFromStore(0), Fault::KillReplica(1)]);
    }

    /// A replica's port, as the restarts meet it: a start fails while the store is out of reach
    /// or while a replica already holds the port.
    #[derive(Default)]
    struct Ports {
        running: [bool; REPLICAS],
        store_away: bool,
        started: usize,
    }

    impl Ports {
        fn start(&mut self, r: usize) -> anyhow::Result<()> {
            anyhow::ensure!(!self.store_away, "loading the log: store unreachable");
            anyhow::ensure!(!self.running[r], "cannot bind: address already in use");
            self.running[r] = true;
            self.started += 1;
            Ok(())
        }
    }

    fn due_now(restarts: &mut Restarts) {
        for next in restarts.next.iter_mut().flatten() {
            *next = Instant::now();
        }
    }

    /// Seed 1207's hour: replica 0 killed, its start failing during a PostgreSQL freeze, killed
    /// again; the old loop started it under the second kill, and again at that kill's heal,
    /// which could only fail (its port taken), so it waited "to be started" for the rest of the
    /// run while it served.
    #[test]
    fn a_replica_killed_while_its_restart_fails_is_started_once_at_the_last_heal() {
        let (mut ports, mut restarts, frozen) =
            (Ports { store_away: true, ..Ports::default() }, Restarts::default(), [false; REPLICAS]);
        restarts.killed(0);
        restarts.healed(0, ports.running[0]);
        restarts.run(&frozen, |r| ports.start(r));
        assert_eq!(restarts.waiting().collect::<Vec<_>>(), [0], "its start failed: tried again");
        restarts.killed(0);
        ports.store_away = false;
        due_now(&mut restarts);
        restarts.run(&frozen, |r| ports.start(r));
        assert!(!ports.running[0], "not started while the second kill lasts");
        restarts.healed(0, ports.running[0]);
        restarts.run(&frozen, |r| ports.start(r));
        assert!(ports.running[0] && ports.started == 1);
        assert_eq!(restarts.waiting().count(), 0, "nothing left waiting once it runs");
        restarts.healed(0, ports.running[0]);
        assert_eq!(restarts.waiting().count(), 0, "a heal finding it running starts nothing");
    }

    #[test]
    fn a_frozen_replica_is_not_started_until_its_freeze_heals() {
        let (mut ports, mut restarts) = (Ports::default(), Restarts::default());
        restarts.healed(1, false);
        restarts.run(&[false, true], |r| ports.start(r));
        assert!(!ports.running[1]);
        restarts.run(&[false, false], |r| ports.start(r));
        assert!(ports.running[1]);
    }
}
