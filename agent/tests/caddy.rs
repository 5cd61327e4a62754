//! Through a real Caddy (Debian's package): `forward_auth` configured with docs/integrations.md's
//! Caddyfile block, verbatim but for the site address, the socket path and the upstream.

use crate::util::{doc_block, free_port, header, program, proxy_get, token, wait_for, AgentProc, Authority};
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};

struct Caddy(Child);

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, sites: &str) -> Caddy {
    let file = dir.join("Caddyfile");
    std::fs::write(&file, format!("{{\n\tadmin off\n\tauto_https off\n}}\n{sites}")).unwrap();
    let child = Command::new(program("caddy", "caddy"))
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&file)
        // Caddy keeps state under $HOME and the XDG directories: keep it in the temp dir.
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("caddy.log")).unwrap())
        .spawn()
        .unwrap();
    Caddy(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_with_the_doc_block_passes_every_verdict_through() {
    let adir = tempfile::tempdir().unwrap();
    let auth = Authority::start(adir.path(), 0, &[]).await;
    let (fresh_dir, stale_dir, cdir) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fresh = AgentProc::start(fresh_dir.path(), &auth.url(), &[]);
    let stale = AgentProc::start(stale_dir.path(), "ws://127.0.0.1:9", &[]);
    let (fresh_port, stale_port, backend) = (free_port(), free_port(), free_port());
    let snippet = doc_block("caddy-snippet", "caddy");
    let site = |port: u16, socket: &Path| {
        snippet
            .replace("shop.example.com", &format!("http://127.0.0.1:{port}"))
            .replace("/run/revmesh/agent-http.sock", &socket.display().to_string())
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{backend}"))
    };
    let sites = format!(
        "{}\n{}\nhttp://127.0.0.1:{backend} {{\n\trespond \"hello {{http.request.header.X-Revmesh-Sub}}\" 200\n}}\n",
        site(fresh_port, &fresh.http_socket),
        site(stale_port, &stale.http_socket),
    );
    let _caddy = start(cdir.path(), &sites);
    let log = cdir.path().join("caddy.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", fresh_port)).is_err() {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(std::time::Instant::now() < deadline, "caddy did not listen:\n{said}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    wait_for(|| !fresh.ask("PING").ends_with("log_id=none"), "agent in sync").await;

    let alice = token("c-alice", "alice", json!({}));
    let (status, h, body) = proxy_get(fresh_port, Some(&alice));
    assert_eq!((status, body.as_str()), (200, "hello alice"), "{h:?}");

    let leaked = token("c-leaked", "mallory", json!({}));
    assert_eq!(proxy_get(fresh_port, Some(&leaked)).0, 200);
    auth.revoke(json!({"kind": "jti", "jti": "c-leaked", "expires_at": crate::util::now() + 3600})).await;
    let (status, h, _) = proxy_get(fresh_port, Some(&leaked));
    assert_eq!(status, 401, "{h:?}");
    assert_eq!(header(&h, "x-revmesh-verdict"), Some("revoked"));
    assert_eq!(header(&h, "www-authenticate"), Some("Bearer error=\"invalid_token\""));

    let (status, h, _) = proxy_get(fresh_port, Some("not.a.token"));
    assert_eq!((status, header(&h, "x-revmesh-verdict")), (401, Some("invalid")), "{h:?}");
    let (status, h, _) = proxy_get(fresh_port, None);
    assert_eq!((status, header(&h, "x-revmesh-verdict")), (401, Some("invalid")), "{h:?}");
    assert_eq!(header(&h, "www-authenticate"), Some("Bearer"));

    let (status, h, _) = proxy_get(stale_port, Some(&alice));
    assert_eq!((status, header(&h, "x-revmesh-verdict")), (403, Some("stale")), "{h:?}");
    drop((fresh, stale));
    auth.stop().await;
}
