//! Through a real nginx: `auth_request` configured with the snippet in docs/integrations.md, verbatim but for
//! the socket path and the upstream address. Checks the status and headers a client of nginx
//! sees for every verdict, with nginx's workers running as another user than the agent (as
//! Debian runs them) when the test runs as root.

use crate::util::{doc_block, free_port, header, program, proxy_get, token, wait_for, AgentProc, Authority};
use serde_json::json;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

struct Nginx {
    child: Child,
    prefix: PathBuf,
    conf: PathBuf,
}

impl Nginx {
    fn start(dir: &Path, servers: &str) -> Nginx {
        let d = dir.display();
        // Workers run as www-data (as Debian's package runs them) when we may switch users.
        let user = if is_root() { "user www-data;" } else { "" };
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "{user}
daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
{servers}
}}
"
            ),
        )
        .unwrap();
        let child = Command::new(program("nginx", "nginx-light"))
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Nginx { child, prefix: dir.to_owned(), conf }
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Stop master and workers (killing the master alone would orphan the workers).
        let _ = Command::new(program("nginx", "nginx-light"))
            .arg("-p")
            .arg(&self.prefix)
            .arg("-c")
            .arg(&self.conf)
            .args(["-s", "stop"])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_with_the_documented_snippet_passes_every_verdict_through() {
    let bin = program("nginx", "nginx-light");
    let adir = tempfile::tempdir().unwrap();
    let auth = Authority::start(adir.path(), 0, &[]).await;
    let root = tempfile::tempdir().unwrap();
    // nginx's workers must reach the sockets: the directories are traversable, the sockets
    // themselves stay 0660 and belong to www-data's group.
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (fresh_dir, stale_dir) = (root.path().join("fresh"), root.path().join("stale"));
    for d in [&fresh_dir, &stale_dir] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let group: &[&str] = if is_root() { &["--socket-group", "www-data"] } else { &[] };
    let fresh = AgentProc::start(&fresh_dir, &auth.url(), group);
    // An agent whose authority is unreachable has never been in sync: stale.
    let stale = AgentProc::start(&stale_dir, "ws://127.0.0.1:9", group);
    if is_root() {
        let gid = std::fs::metadata(&fresh.http_socket).unwrap().gid();
        assert_eq!(gid, 33, "--socket-group www-data must give the socket to www-data's group");
    }
    assert_eq!(std::fs::metadata(&fresh.http_socket).unwrap().mode() & 0o777, 0o660);

    let (fresh_port, stale_port, backend) = (free_port(), free_port(), free_port());
    let snippet = doc_block("nginx-snippet", "nginx");
    let site = |socket: &Path| {
        snippet
            .replace("/run/revmesh/agent-http.sock", &socket.display().to_string())
            .replace("http://127.0.0.1:8080", &format!("http://127.0.0.1:{backend}"))
    };
    let servers = format!(
        "server {{ listen 127.0.0.1:{fresh_port};\n{}\n}}\n\
         server {{ listen 127.0.0.1:{stale_port};\n{}\n}}\n\
         server {{ listen 127.0.0.1:{backend}; location / {{ return 200 \"hello $http_x_revmesh_sub\\n\"; }} }}\n",
        site(&fresh.http_socket),
        site(&stale.http_socket),
    );
    let ngx = Nginx::start(root.path(), &servers);
    wait_for(
        || std::net::TcpStream::connect(("127.0.0.1", fresh_port)).is_ok(),
        &format!("{} to listen (error log: {})", bin.display(), ngx.error_log()),
    )
    .await;
    wait_for(|| !fresh.ask("PING").ends_with("log_id=none"), "agent in sync").await;

    let alice = token("n-alice", "alice", json!({}));
    let (status, h, body) = proxy_get(fresh_port, Some(&alice));
    assert_eq!((status, body.as_str()), (200, "hello alice\n"), "{h:?} {}", ngx.error_log());
    assert_eq!(header(&h, "x-revmesh-verdict"), Some("ok"));

    let leaked = token("n-leaked", "mallory", json!({}));
    assert_eq!(proxy_get(fresh_port, Some(&leaked)).0, 200);
    auth.revoke(json!({"kind": "jti", "jti": "n-leaked", "expires_at": crate::util::now() + 3600})).await;
    let (status, h, _) = proxy_get(fresh_port, Some(&leaked));
    assert_eq!(status, 401, "{h:?}");
    assert_eq!(header(&h, "x-revmesh-verdict"), Some("revoked"));
    assert_eq!(header(&h, "www-authenticate"), Some("Bearer error=\"invalid_token\""));

    let (status, h, _) = proxy_get(fresh_port, Some("not.a.token"));
    assert_eq!(status, 401, "{h:?}");
    assert_eq!(header(&h, "x-revmesh-verdict"), Some("invalid"));
    assert_eq!(header(&h, "www-authenticate"), Some("Bearer error=\"invalid_token\""));

    let (status, h, _) = proxy_get(fresh_port, None);
    assert_eq!(status, 401, "{h:?}");
    assert_eq!(header(&h, "x-revmesh-verdict"), Some("invalid"));
    assert_eq!(header(&h, "www-authenticate"), Some("Bearer"));

    let (status, h, _) = proxy_get(stale_port, Some(&alice));
    assert_eq!(status, 403, "stale must reach the client as 403, not 500: {h:?} {}", ngx.error_log());
    assert_eq!(header(&h, "x-revmesh-verdict"), Some("stale"));

    drop(ngx);
    drop((fresh, stale));
    auth.stop().await;
}
