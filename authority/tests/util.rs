//! Test helpers: a real `revmesh-authority` process, a tiny HTTP client, in-process agents.

use revmesh_agent::link::{self, LinkSettings};
use revmesh_agent::metrics::Metrics;
use revmesh_agent::state::AgentState;
use revmesh_protocol::{RevocationSet, TokenRef};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A running authority process; killed on drop.
pub struct Authority {
    /// TLS client for an https admin API.
    pub admin_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    pub child: Child,
    pub agent: String,
    pub admin: String,
    pub token: String,
}

impl Authority {
    pub fn start(dir: &Path, extra: &[&str]) -> Authority {
        Self::start_on(dir, "127.0.0.1:0", "127.0.0.1:0", extra)
    }

    pub fn start_on(dir: &Path, agent: &str, admin: &str, extra: &[&str]) -> Authority {
        // `REVMESH_TEST_AUTHORITY_BIN` runs another build (a release binary, or an older one for
        // a same-run comparison); by default, this crate's own.
        let bin = std::env::var_os("REVMESH_TEST_AUTHORITY_BIN")
            .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_revmesh-authority")), PathBuf::from);
        let mut child = Command::new(bin)
            .args(["serve", "--data-dir"])
            .arg(dir)
            .args(["--agent-listen", agent, "--admin-listen", admin, "--log", "warn"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn authority");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("revmesh-authority ready"), "unexpected first line: {line:?}");
        let field = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).unwrap().to_owned();
        let token_file = extra
            .iter()
            .position(|a| *a == "--admin-token-file")
            .map_or_else(|| dir.join("admin.token"), |i| std::path::PathBuf::from(extra[i + 1]));
        // None with an operators file and no --admin-token-file.
        let token = std::fs::read_to_string(token_file).map(|t| t.trim().to_owned()).unwrap_or_default();
        Authority { admin_tls: None, child, agent: field("agent="), admin: field("admin="), token }
    }

    /// Talk to the admin API over TLS, trusting `ca`.
    pub fn with_ca(mut self, ca: &Path) -> Self {
        self.admin_tls = Some(revmesh_authority::cli::client_config(ca).unwrap());
        self
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.agent)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn call(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
        match &self.admin_tls {
            None => http(&self.admin, method, path, token, body),
            Some(tls) => {
                let (status, b) = revmesh_authority::cli::https_request(
                    &self.admin,
                    tls.clone(),
                    method,
                    path,
                    token,
                    body,
                    Duration::from_secs(30),
                )
                .unwrap();
                (status, serde_json::from_str(&b).unwrap_or(Value::String(b)))
            }
        }
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        self.call("POST", path, Some(&self.token), body.as_bytes())
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, Some(&self.token), b"")
    }

    pub fn metrics(&self) -> String {
        let (_, v) = self.call("GET", "/metrics", None, b"");
        v.as_str().unwrap_or_default().to_owned()
    }

    /// A metric's value; summed over its label values when `name` names none.
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next())
            .filter_map(|v| v.parse::<f64>().ok())
            .sum()
    }

    pub fn revoke_jti(&self, jti: &str) -> u64 {
        let (status, v) = self
            .post("/v1/revocations", &format!(r#"{{"kind":"jti","jti":"{jti}","expires_at":4000000000}}"#));
        assert_eq!(status, 201, "{v}");
        v["seq"].as_u64().unwrap()
    }
}

impl Drop for Authority {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One HTTP/1.1 request; the body is parsed as JSON when it is JSON, else returned as a string.
pub fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
    let (status, b) =
        revmesh_authority::cli::http_request(addr, method, path, token, body, Duration::from_secs(30))
            .unwrap();
    (status, serde_json::from_str(&b).unwrap_or(Value::String(b)))
}

/// An in-process agent using the real agent library (link, session, set), no persistence.
pub struct Agent {
    pub state: Arc<AgentState>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    pub fn start(urls: Vec<String>, id: &str) -> Agent {
        Self::start_from(urls, id, RevocationSet::new(), None, 0)
    }

    pub fn start_from(
        urls: Vec<String>,
        id: &str,
        set: RevocationSet,
        log_id: Option<revmesh_protocol::LogId>,
        applied: u64,
    ) -> Agent {
        let mut settings = LinkSettings::new(urls, id.to_owned());
        settings.reconnect_min = Duration::from_millis(50);
        settings.reconnect_max = Duration::from_millis(500);
        Self::run(settings, set, log_id, applied)
    }

    /// An empty agent with these link settings (token, TLS…).
    pub fn start_with(settings: LinkSettings) -> Agent {
        Self::run(settings, RevocationSet::new(), None, 0)
    }

    fn run(
        settings: LinkSettings,
        set: RevocationSet,
        log_id: Option<revmesh_protocol::LogId>,
        applied: u64,
    ) -> Agent {
        let state = Arc::new(AgentState::new(
            set,
            log_id,
            applied,
            None,
            Duration::from_secs(30),
            false,
            Metrics::new().unwrap(),
        ));
        let stop = CancellationToken::new();
        let task = tokio::spawn(link::run(settings, state.clone(), None, stop.clone()));
        Agent { state, stop, task }
    }

    pub async fn stop(self) -> Arc<AgentState> {
        self.stop.cancel();
        let _ = self.task.await;
        self.state
    }

    pub fn revoked(&self, jti: &str) -> bool {
        matches!(
            self.state.decide(&TokenRef { jti: Some(jti), ..Default::default() }),
            revmesh_agent::state::Decision::Revoked { .. }
        )
    }

    /// Waits (bounded) until the agent has applied `seq`.
    pub async fn wait_applied(&self, seq: u64) {
        wait_for(|| self.state.applied() >= seq, &format!("agent to apply {seq}")).await;
    }
}

/// Polls a condition until it holds, failing after 30 s.
pub async fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs one of this crate's PyJWT scripts (`tests/NAME`: `mint_logout.py`, `mint_set.py`) with
/// the JWKS path to write, the issuer, the audience and now; its stdout as JSON.
pub fn pyjwt_script(name: &str, jwks: &Path, issuer: &str, audience: &str, now: u64) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(name);
    let out = Command::new("python3")
        .arg(script)
        .arg(jwks)
        .args([issuer, audience])
        .arg(now.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "minting with PyJWT failed (`pip install 'pyjwt[crypto]'`, scripts/test installs it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
