//! Test helpers: real agent processes, an in-process real authority, socket clients, tokens.

use jsonwebtoken::{encode, EncodingKey, Header};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";

/// A running `revmesh-agent` process; killed on drop.
pub struct AgentProc {
    pub child: Child,
    pub socket: PathBuf,
    pub http_socket: PathBuf,
    pub metrics: String,
    /// The ready line.
    pub ready: String,
}

impl AgentProc {
    pub fn start(dir: &Path, authority: &str, extra: &[&str]) -> AgentProc {
        let secret = dir.join("secret");
        std::fs::write(&secret, SECRET).unwrap();
        let socket = dir.join("agent.sock");
        let http_socket = dir.join("http.sock");
        let mut child = Command::new(env!("CARGO_BIN_EXE_revmesh-agent"))
            .args(["run", "--authority", authority, "--id"])
            .arg(dir.file_name().unwrap())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--socket")
            .arg(&socket)
            .arg("--http-socket")
            .arg(&http_socket)
            .arg("--hs256-secret-file")
            .arg(&secret)
            .args(["--metrics-listen", "127.0.0.1:0", "--log", "error"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("revmesh-agent ready"), "agent did not start: {line:?}");
        let metrics = line.trim().rsplit('=').next().unwrap().to_owned();
        AgentProc { child, socket, http_socket, metrics, ready: line.trim().to_owned() }
    }

    /// A `key=value` field of the ready line.
    pub fn ready_field(&self, key: &str) -> Option<String> {
        self.ready.split(' ').find_map(|w| w.strip_prefix(&format!("{key}=")).map(str::to_owned))
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn ask(&self, line: &str) -> String {
        ask(&self.socket, &[line]).remove(0)
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sends lines (pipelined) and reads one answer per line.
pub fn ask(socket: &Path, lines: &[&str]) -> Vec<String> {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = String::new();
    for l in lines {
        req.push_str(l);
        req.push('\n');
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    (0..lines.len())
        .map(|_| {
            let mut a = String::new();
            r.read_line(&mut a).unwrap();
            a.trim_end().to_owned()
        })
        .collect()
}

/// A raw GET over a Unix socket; returns the whole answer text.
pub fn http_get(socket: &Path, path: &str, bearer: Option<&str>) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = bearer.map(|b| format!("Authorization: Bearer {b}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: agent\r\n{auth}\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The text of `/metrics` at `addr`.
pub fn scrape(addr: &str) -> String {
    revmesh_authority::cli::http_request(addr, "GET", "/metrics", None, b"", Duration::from_secs(5))
        .unwrap()
        .1
}

pub fn now() -> u64 {
    revmesh_runtime::Clock::system().unix_secs()
}

pub fn now_ms() -> u64 {
    revmesh_runtime::Clock::system().unix_ms()
}

/// An HS256 token for the test secret.
pub fn token(jti: &str, sub: &str, extra: serde_json::Value) -> String {
    token_with(SECRET, jti, sub, extra)
}

/// An HS256 token for `secret`.
pub fn token_with(secret: &[u8], jti: &str, sub: &str, extra: serde_json::Value) -> String {
    let mut claims = serde_json::json!({"jti": jti, "sub": sub, "iat": now() - 10, "exp": now() + 3600});
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            // `null` leaves the claim out.
            if v.is_null() {
                c.remove(k);
            } else {
                c.insert(k.clone(), v.clone());
            }
        }
    }
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = extra.get("kid").and_then(|k| k.as_str()).map(str::to_owned);
    encode(&header, &claims, &EncodingKey::from_secret(secret).unwrap()).unwrap()
}

/// A real authority (the library's `serve`, real sockets and store) in this process.
pub struct Authority {
    pub agent: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
    pub token: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Authority {
    pub async fn start(dir: &Path, agent_port: u16, extra: &[&str]) -> Authority {
        let mut args = vec![
            "revmesh-authority".to_owned(),
            "serve".to_owned(),
            "--data-dir".to_owned(),
            dir.display().to_string(),
            "--agent-listen".to_owned(),
            format!("127.0.0.1:{agent_port}"),
            "--admin-listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--heartbeat".to_owned(),
            "200ms".to_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        use clap::Parser;
        let cli = revmesh_authority::config::Cli::parse_from(args);
        let revmesh_authority::config::Command::Serve(raw) = cli.command else { unreachable!() };
        let cfg = revmesh_authority::config::Config::build(&raw).unwrap();
        let stop = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            revmesh_authority::serve(cfg, s, move |b, _| {
                let _ = tx.send(b);
            })
            .await
            .unwrap();
        });
        let bound = rx.await.unwrap();
        let token = std::fs::read_to_string(dir.join("admin.token")).unwrap().trim().to_owned();
        Authority { agent: bound.agent, admin: bound.admin, token, stop, task }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.agent)
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// POSTs a revocation with `?wait=all` and returns the receipt.
    pub async fn revoke(&self, body: serde_json::Value) -> serde_json::Value {
        self.revoke_waiting(body, "all").await
    }

    /// POSTs a revocation with `?wait={level}` (`all` or `applied`) and returns the receipt.
    pub async fn revoke_waiting(&self, body: serde_json::Value, level: &str) -> serde_json::Value {
        let admin = self.admin.to_string();
        let token = self.token.clone();
        let path = format!("/v1/revocations?wait={level}&timeout_ms=20000");
        let (status, text) = tokio::task::spawn_blocking(move || {
            revmesh_authority::cli::http_request(
                &admin,
                "POST",
                &path,
                Some(&token),
                body.to_string().as_bytes(),
                Duration::from_secs(30),
            )
            .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(status, 201, "{text}");
        serde_json::from_str(&text).unwrap()
    }
}

/// Polls a condition until it holds, failing after 30 s.
pub async fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free TCP port on 127.0.0.1 (for programs that cannot report the port they bound).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.0 `GET /orders` through a proxy on `port`: status, headers (lower-cased names),
/// body.
pub fn proxy_get(port: u16, bearer: Option<&str>) -> (u16, Vec<(String, String)>, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = bearer.map(|b| format!("Authorization: Bearer {b}\r\n")).unwrap_or_default();
    write!(s, "GET /orders HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// A header's value (name lower-cased).
pub fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A program the tests drive, from `PATH` or `/usr/sbin`; fails naming the Debian package.
pub fn program(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("{name} is not installed: `apt-get install {package}` (scripts/test installs it)")
    })
}

/// The code block in `lang` after `<!-- marker` in the documentation (docs/integrations.md),
/// as users copy it.
pub fn doc_block(marker: &str, lang: &str) -> String {
    let doc = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/integrations.md");
    let readme = std::fs::read_to_string(doc).unwrap();
    let after = readme.split(&format!("<!-- {marker}")).nth(1).expect("docs/integrations.md has the marker");
    let block = after.split(&format!("```{lang}\n")).nth(1).expect("a code block after the marker");
    block.split("```").next().unwrap().to_owned()
}
