//! Real processes: the workspace's `revmesh-authority` and `revmesh-agent` binaries, found next to
//! this binary (build the workspace first), each killed when its handle drops.

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Path of a sibling binary.
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let dir = exe.parent().context("executable has no directory")?;
    for candidate in [dir.join(name), dir.join("..").join(name)] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} not found next to {}; build the workspace first: cargo build --release --locked",
        exe.display()
    )
}

/// A child process killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct Proc {
    /// The child.
    pub child: Child,
    /// The first stdout line (the `ready` line).
    pub ready: String,
}

impl Proc {
    /// Spawns and waits for the first stdout line.
    pub fn spawn(bin: &Path, args: &[String], quiet: bool) -> anyhow::Result<Proc> {
        let mut child = Command::new(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(if quiet { Stdio::null() } else { Stdio::inherit() })
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut ready = String::new();
        let stdout = child.stdout.take().context("no stdout")?;
        BufReader::new(stdout).read_line(&mut ready).context("reading the ready line")?;
        if ready.is_empty() {
            let status = child.wait()?;
            bail!("{} exited before it was ready ({status})", bin.display());
        }
        Ok(Proc { child, ready: ready.trim().to_owned() })
    }

    /// A `key=value` word of the ready line.
    pub fn field(&self, key: &str) -> Option<String> {
        self.ready.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}="))).map(str::to_owned)
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Resident memory in bytes (Linux `/proc`).
    pub fn rss(&self) -> Option<u64> {
        rss_of(self.child.id())
    }
}

/// Samples a process's resident memory every 20 ms until `stop`; resolves to the peak.
pub fn sample_peak_rss(pid: u32, stop: tokio_util::sync::CancellationToken) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0;
        while !stop.is_cancelled() {
            peak = peak.max(rss_of(pid).unwrap_or(0));
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        peak
    })
}

/// Resident memory of a process in bytes.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 =
        status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU time (user + system, every thread, dead ones included) a process has used, in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split(' ').collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok(field(11) + field(12)) // utime + stime, in clock ticks
}

/// CPU time of several processes together, in clock ticks (a process already gone counts 0).
pub fn total_cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter().map(|p| cpu_ticks(*p).unwrap_or(0)).sum()
}

/// Clock ticks as microseconds.
pub fn ticks_to_us(ticks: u64) -> f64 {
    // Linux reports /proc times in USER_HZ, 100 on every architecture revmesh runs on.
    ticks as f64 * 10_000.0
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A running authority process.
#[derive(Debug)]
pub struct AuthorityProc {
    /// The process.
    pub proc: Proc,
    /// Agent endpoint, `ws://…`.
    pub ws: String,
    /// Admin address `host:port`.
    pub admin: String,
    /// Admin token.
    pub token: String,
    /// Admin token file.
    pub token_file: PathBuf,
}

impl AuthorityProc {
    /// Starts `revmesh-authority serve` on a data dir with ports from 0 (or the given agent address).
    pub fn start(data: &Path, agent_listen: &str, extra: &[&str]) -> anyhow::Result<AuthorityProc> {
        Self::start_bin(&sibling("revmesh-authority")?, data, agent_listen, extra)
    }

    /// [`AuthorityProc::start`] with the authority binary at `bin` (another build, say).
    pub fn start_bin(
        bin: &Path,
        data: &Path,
        agent_listen: &str,
        extra: &[&str],
    ) -> anyhow::Result<AuthorityProc> {
        let mut args: Vec<String> = ["serve", "--data-dir"].iter().map(|s| s.to_string()).collect();
        args.push(data.display().to_string());
        for a in ["--agent-listen", agent_listen, "--admin-listen", "127.0.0.1:0", "--log", "error"] {
            args.push(a.to_owned());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::spawn(bin, &args, false)?;
        let ws = format!("ws://{}", proc.field("agent").context("no agent address")?);
        let admin = proc.field("admin").context("no admin address")?;
        let token_file = extra
            .iter()
            .position(|a| *a == "--admin-token-file")
            .and_then(|i| extra.get(i + 1))
            .map_or_else(|| data.join("admin.token"), PathBuf::from);
        let token = std::fs::read_to_string(&token_file)?.trim().to_owned();
        Ok(AuthorityProc { proc, ws, admin, token, token_file })
    }

    /// One admin call; `(status, json)`.
    pub fn call(&self, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        let (status, text) = revmesh_authority::cli::http_request(
            &self.admin,
            method,
            path,
            Some(&self.token),
            body.as_bytes(),
            std::time::Duration::from_secs(60),
        )
        .map_err(anyhow::Error::msg)?;
        Ok((status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))))
    }
}

/// A running agent process.
#[derive(Debug)]
pub struct AgentProc {
    /// The process, held so that it is killed when the handle drops.
    #[allow(dead_code)]
    pub proc: Proc,
    /// Line socket.
    pub socket: PathBuf,
    /// Metrics address.
    pub metrics: String,
}

impl AgentProc {
    /// Starts `revmesh-agent run` in `dir`.
    pub fn start(
        dir: &Path,
        id: &str,
        authority: &str,
        secret: &Path,
        extra: &[&str],
    ) -> anyhow::Result<AgentProc> {
        Self::start_bin(&sibling("revmesh-agent")?, dir, id, authority, secret, extra)
    }

    /// [`AgentProc::start`] with the agent binary at `bin` (another build, say).
    pub fn start_bin(
        bin: &Path,
        dir: &Path,
        id: &str,
        authority: &str,
        secret: &Path,
        extra: &[&str],
    ) -> anyhow::Result<AgentProc> {
        Self::start_in(None, bin, dir, id, authority, secret, extra)
    }

    /// [`AgentProc::start_bin`] in the network namespace `netns` (`ip netns exec`, which
    /// replaces itself with the agent: the pid is the agent's).
    pub fn start_in(
        netns: Option<&str>,
        bin: &Path,
        dir: &Path,
        id: &str,
        authority: &str,
        secret: &Path,
        extra: &[&str],
    ) -> anyhow::Result<AgentProc> {
        std::fs::create_dir_all(dir)?;
        let socket = dir.join("agent.sock");
        let mut args: Vec<String> = match netns {
            Some(ns) => vec!["netns".into(), "exec".into(), ns.into(), bin.display().to_string()],
            None => Vec::new(),
        };
        args.extend(["run".into(), "--authority".into(), authority.into(), "--id".into(), id.into()]);
        args.push("--data-dir".into());
        args.push(dir.join("data").display().to_string());
        args.push("--socket".into());
        args.push(socket.display().to_string());
        args.push("--hs256-secret-file".into());
        args.push(secret.display().to_string());
        for a in ["--metrics-listen", "127.0.0.1:0", "--log", "error"] {
            args.push(a.into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let program = if netns.is_some() { Path::new("ip") } else { bin };
        let proc = Proc::spawn(program, &args, false)?;
        let metrics = proc.field("metrics").context("no metrics address")?;
        Ok(AgentProc { proc, socket, metrics })
    }
}

/// The HMAC secret of the benchmark agents, and the tokens minted with it.
pub const BENCH_SECRET: &str = "loadtest-secret-0123456789abcdef0123456789";

/// An authority and one agent verifying HS256 with [`BENCH_SECRET`] (plus `extra` flags), the
/// agent in sync with the authority's log before this returns.
pub async fn bench_pair(
    dir: &Path,
    name: &str,
    extra: &[&str],
) -> anyhow::Result<(AuthorityProc, AgentProc)> {
    let auth = AuthorityProc::start(&dir.join(format!("{name}-authority")), "127.0.0.1:0", &[])?;
    let secret = dir.join(format!("{name}-hs.secret"));
    std::fs::write(&secret, BENCH_SECRET)?;
    let agent = AgentProc::start(&dir.join(format!("{name}-agent")), name, &auth.ws, &secret, extra)?;
    let sock = agent.socket.clone();
    crate::util::wait_until(std::time::Duration::from_secs(30), || {
        crate::util::ask_line(&sock, "PING").is_ok_and(|l| !l.ends_with("log_id=none"))
    })
    .await?;
    Ok((auth, agent))
}
