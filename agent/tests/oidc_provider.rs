//! A real, certified OpenID Provider (`oidc-provider` from npm, OpenID Certified) in front of
//! revmesh: users log in through the authorization-code flow over HTTP, the provider's
//! RP-initiated logout sends its back-channel logout to the authority, and real agent
//! processes, verifying the provider's own access tokens with its JWKS, refuse that session's
//! tokens while another session's stay good. RFC 7009 revocation by a real OAuth client
//! library (authlib) revokes one token.

use crate::util::{AgentProc, Authority};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const RESOURCE: &str = "https://api.shop.example";

struct Provider {
    child: Child,
    issuer: String,
    jwks_url: String,
    lines: mpsc::Receiver<Value>,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Provider {
    /// Starts the provider (keys written to `jwks`); it answers once given the logout URI.
    fn start(jwks: &Path, sid_in_access_tokens: bool) -> Provider {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc-provider");
        assert!(
            Path::new(dir).join("node_modules/oidc-provider").is_dir(),
            "oidc-provider is not installed: `npm ci --prefix agent/tests/oidc-provider` (scripts/test does it)"
        );
        let mut child = Command::new("node")
            .arg(format!("{dir}/provider.js"))
            .arg(jwks)
            .arg(if sid_in_access_tokens { "sid" } else { "none" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node must be installed (Node.js 20)");
        let (tx, lines) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            // The provider's notices are text; its own lines are JSON.
            for line in out.lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let first = lines.recv_timeout(Duration::from_secs(30)).expect("the provider did not start");
        let issuer = first["issuer"].as_str().unwrap().to_owned();
        let jwks_url = first["jwks"].as_str().unwrap().to_owned();
        Provider { child, issuer, jwks_url, lines }
    }

    fn serve(&mut self, logout_uri: &str) {
        let mut stdin = self.child.stdin.take().unwrap();
        writeln!(stdin, "{logout_uri}").unwrap();
        let v = self.lines.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(v["started"], true, "{v}");
    }

    /// The next event line the provider emits.
    fn event(&self) -> Value {
        self.lines.recv_timeout(Duration::from_secs(30)).expect("no back-channel outcome from the provider")
    }

    /// `oidc_login.py`: a browser's part.
    fn browser(&self, args: &[&str]) -> Value {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc_login.py");
        let out = Command::new("python3")
            .arg(script)
            .arg(&self.issuer)
            .args(args)
            .current_dir("/")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "oidc_login.py {args:?} failed (`pip install requests`, scripts/test installs it):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// The claims of a JWT, unverified (the test's own look at what the provider issued).
fn claims(jwt: &str) -> Value {
    use base64::Engine;
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certified_provider_logs_a_session_out_and_every_agent_refuses_its_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("op-jwks.json");
    let mut op = Provider::start(&jwks, true);
    let provider = format!("{}={}", op.issuer, jwks.display());
    let a = Authority::start(
        &dir.path().join("authority"),
        0,
        &["--oidc-provider", &provider, "--oidc-audience", "shop", "--token-jwks", jwks.to_str().unwrap()],
    )
    .await;
    op.serve(&format!("http://{}/v1/oidc/backchannel-logout", a.admin));
    let agent_flags = ["--jwks-url", &op.jwks_url, "--issuer", &op.issuer, "--audience", RESOURCE];
    let agents: Vec<AgentProc> = (0..2)
        .map(|i| {
            let d = dir.path().join(format!("web-{i}"));
            std::fs::create_dir_all(&d).unwrap();
            AgentProc::start(&d, &a.url(), &agent_flags)
        })
        .collect();

    // Two sessions of one user, each in a browser of its own.
    let jar = |n: &str| dir.path().join(n).display().to_string();
    let first = op.browser(&["login", "alice", &jar("a.jar")]);
    let second = op.browser(&["login", "alice", &jar("b.jar")]);
    let (at_a, at_b) = (first["access_token"].as_str().unwrap(), second["access_token"].as_str().unwrap());
    let sid_a = claims(first["id_token"].as_str().unwrap())["sid"].as_str().unwrap().to_owned();
    assert_eq!(claims(at_a)["sid"], sid_a.as_str(), "the access token carries the session");
    assert_ne!(claims(at_b)["sid"], sid_a.as_str(), "two sessions");
    for agent in &agents {
        for t in [at_a, at_b] {
            let answer = agent.ask(&format!("CHECK {t}"));
            assert!(answer.starts_with("OK "), "{answer}");
        }
    }

    // RP-initiated logout of the first session: the provider posts its back-channel logout.
    let ended = op.browser(&["logout", &jar("a.jar"), first["id_token"].as_str().unwrap()]);
    assert_eq!(ended["ended"], true);
    let logged_out = Instant::now();
    let event = op.event();
    assert_eq!(event["event"], "backchannel.success", "the provider's own outcome: {event}");
    assert_eq!(event["sid"], sid_a.as_str());
    let deadline = logged_out + Duration::from_secs(2);
    for agent in &agents {
        loop {
            let answer = agent.ask(&format!("CHECK {at_a}"));
            if answer.starts_with("REVOKED ") {
                assert!(answer.contains("kind=session"), "{answer}");
                break;
            }
            assert!(Instant::now() < deadline, "not refused within 2 s of the logout: {answer}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let answer = agent.ask(&format!("CHECK {at_b}"));
        assert!(answer.starts_with("OK "), "the other session stays good: {answer}");
    }
    let (status, text) = revmesh_authority::cli::http_request(
        &a.admin.to_string(),
        "GET",
        "/v1/revocations?after=0",
        Some(&a.token),
        b"",
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(status, 200, "{text}");
    let list: Value = serde_json::from_str(&text).unwrap();
    let entry = &list["entries"][0];
    assert_eq!(
        (entry["kind"].as_str(), entry["sid"].as_str()),
        (Some("session"), Some(sid_a.as_str())),
        "{list}"
    );
    assert_eq!(entry["iss"], op.issuer.as_str(), "scoped to the provider: {list}");

    // RFC 7009 by a real OAuth client library: the second session's access token.
    let script = r#"
import sys
from authlib.integrations.requests_client import OAuth2Session
class Bearer:
    def __init__(self, t): self.t = t
    def __call__(self, r):
        r.headers["Authorization"] = "Bearer " + self.t
        return r
s = OAuth2Session("shop", "shop-secret-0123456789abcdef")
r = s.revoke_token(sys.argv[1], token=sys.argv[2], token_type_hint="access_token", auth=Bearer(sys.argv[3]))
print(r.status_code)
"#;
    let url = format!("http://{}/v1/oauth2/revoke", a.admin);
    let out =
        Command::new("python3").args(["-c", script, &url, at_b, &a.token]).current_dir("/").output().unwrap();
    assert!(
        out.status.success(),
        "authlib failed (`pip install authlib`, scripts/test installs it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200");
    for agent in &agents {
        let revoked = || agent.ask(&format!("CHECK {at_b}")).starts_with("REVOKED kind=jti");
        crate::util::wait_for(revoked, "the token revoked through RFC 7009 to be refused").await;
    }
}

/// oidc-provider's default JWT access tokens carry no `sid`: a session logout would match none
/// of them. With `--oidc-logout-by ISSUER=subject` the logout revokes the user's tokens issued
/// up to it, and another user's stay good; agents count the tokens without `sid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_whose_access_tokens_carry_no_sid_logs_out_by_subject() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("op-jwks.json");
    let mut op = Provider::start(&jwks, false);
    let provider = format!("{}={}", op.issuer, jwks.display());
    let by = format!("{}=subject", op.issuer);
    let a = Authority::start(
        &dir.path().join("authority"),
        0,
        &["--oidc-provider", &provider, "--oidc-audience", "shop", "--oidc-logout-by", &by],
    )
    .await;
    op.serve(&format!("http://{}/v1/oidc/backchannel-logout", a.admin));
    let d = dir.path().join("web-0");
    std::fs::create_dir_all(&d).unwrap();
    let agent = AgentProc::start(
        &d,
        &a.url(),
        &["--jwks-url", &op.jwks_url, "--issuer", &op.issuer, "--audience", RESOURCE],
    );
    let jar = |n: &str| dir.path().join(n).display().to_string();
    let alice = op.browser(&["login", "alice", &jar("a.jar")]);
    let bob = op.browser(&["login", "bob", &jar("b.jar")]);
    let (at_alice, at_bob) = (alice["access_token"].as_str().unwrap(), bob["access_token"].as_str().unwrap());
    assert!(claims(at_alice).get("sid").is_none(), "the provider's default access tokens carry no sid");
    for t in [at_alice, at_bob] {
        assert!(agent.ask(&format!("CHECK {t}")).starts_with("OK "));
    }
    let metrics = crate::util::scrape(&agent.metrics);
    assert!(metrics.contains("revmesh_agent_verified_tokens_total{sid=\"no\"} 2"), "{metrics}");

    op.browser(&["logout", &jar("a.jar"), alice["id_token"].as_str().unwrap()]);
    assert_eq!(op.event()["event"], "backchannel.success");
    let refused = || agent.ask(&format!("CHECK {at_alice}")).starts_with("REVOKED kind=subject");
    crate::util::wait_for(refused, "alice's token refused after her logout").await;
    assert!(agent.ask(&format!("CHECK {at_bob}")).starts_with("OK "), "another user's token stays good");
}
