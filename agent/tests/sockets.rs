//! The socket front ends under good and hostile clients.

use crate::util::{ask, http_get, token, AgentProc};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn agent(dir: &std::path::Path, extra: &[&str]) -> AgentProc {
    // No authority is reachable here: the agent serves from its (empty) state, under --on-stale open.
    let mut args = vec!["--on-stale", "open"];
    args.extend_from_slice(extra);
    AgentProc::start(dir, "ws://127.0.0.1:9", &args)
}

#[test]
fn pipelined_requests_are_answered_in_order_and_errors_keep_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), &[]);
    let t = token("j1", "alice", serde_json::json!({}));
    let check = format!("CHECK {t}");
    let answers = ask(
        &a.socket,
        &["PING", "NOPE", "STATUS jti=x", "STATUS", &check, "CHECK not-a-jwt", "STATUS jti=x iat=zz", "PING"],
    );
    assert!(answers[0].starts_with("PONG seq=0 lag_ms="), "{answers:?}");
    assert!(answers[0].ends_with("log_id=none"), "{answers:?}");
    assert_eq!(answers[1], "ERR reason=unknown_command");
    assert!(answers[2].starts_with("OK seq=0 lag_ms=") && answers[2].ends_with("stale=1"), "{answers:?}");
    assert_eq!(answers[3], "ERR reason=bad_field");
    assert!(answers[4].starts_with("OK ") && answers[4].contains(" sub=alice exp="), "{answers:?}");
    assert_eq!(answers[5], "INVALID reason=malformed");
    assert_eq!(answers[6], "ERR reason=bad_field");
    assert!(answers[7].starts_with("PONG "));
    let mode = std::fs::metadata(&a.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
}

#[test]
fn overlong_lines_garbage_half_lines_and_idle_crowds_do_not_starve_a_good_client() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), &["--max-token-bytes", "1024"]);
    // 1,000 idle connections (this test process needs more than the usual 1,024 descriptors too).
    rlimit::increase_nofile_limit(4096).unwrap();
    let idle: Vec<UnixStream> = (0..1000).map(|_| UnixStream::connect(&a.socket).unwrap()).collect();
    // Half a line, never finished.
    let mut half = UnixStream::connect(&a.socket).unwrap();
    half.write_all(b"STATUS jti=half").unwrap();
    // Binary garbage with newlines: each line gets an ERR, the connection stays.
    let mut garbage = UnixStream::connect(&a.socket).unwrap();
    garbage.write_all(b"\x00\xff\xfe\n\x01\x02\n").unwrap();
    garbage.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 256];
    let n = garbage.read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("ERR reason="), "{text}");
    // An overlong line: ERR line_too_long, then the agent closes that connection.
    let mut long = UnixStream::connect(&a.socket).unwrap();
    long.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = long.write_all(&vec![b'A'; 64 * 1024]);
    let mut out = String::new();
    let _ = long.read_to_string(&mut out);
    assert_eq!(out, "ERR reason=line_too_long\n");
    // The well-behaved client is still served.
    for _ in 0..100 {
        assert!(ask(&a.socket, &["PING"])[0].starts_with("PONG "));
    }
    drop(idle);
}

#[test]
fn the_socket_path_is_handled_safely() {
    let dir = tempfile::tempdir().unwrap();
    // A symlink at the socket path: refuse.
    let target = dir.path().join("elsewhere");
    std::fs::write(&target, "x").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("agent.sock")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_revmesh-agent"))
        .args(["run", "--authority", "ws://127.0.0.1:9", "--metrics-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--socket")
        .arg(dir.path().join("agent.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("symlink"));
    std::fs::remove_file(dir.path().join("agent.sock")).unwrap();
    // A stale socket file (nobody listening) is replaced; a live one is refused.
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("agent.sock")).unwrap());
    let live = agent(dir.path(), &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_revmesh-agent"))
        .args(["run", "--authority", "ws://127.0.0.1:9", "--metrics-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data2"))
        .arg("--socket")
        .arg(&live.socket)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("live"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ask(&live.socket, &["PING"])[0].starts_with("PONG "), "the live agent must keep its socket");
}

#[test]
fn http_check_answers_like_nginx_auth_request_expects() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), &[]);
    let ok = http_get(&a.http_socket, "/v1/check", Some(&token("j1", "bob", serde_json::json!({}))));
    assert!(ok.starts_with("HTTP/1.0 200"), "{ok}");
    assert!(ok.contains("x-revmesh-sub: bob") && ok.contains("x-revmesh-seq: 0"), "{ok}");
    assert!(http_get(&a.http_socket, "/v1/check", None).starts_with("HTTP/1.0 401"));
    assert!(http_get(&a.http_socket, "/v1/check", Some("x.y.z")).starts_with("HTTP/1.0 401"));
    assert!(http_get(&a.http_socket, "/other", None).starts_with("HTTP/1.0 404"));
}

#[test]
fn bad_configuration_exits_64_and_names_every_field() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_revmesh-agent"))
        .args([
            "run",
            "--authority",
            "http://x",
            "--on-stale",
            "maybe",
            "--leeway",
            "forever",
            "--allow-uid",
            "root",
            "--applied-fsync-delay",
            "5s",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for f in ["authority", "on-stale", "leeway", "allow-uid", "applied-fsync-delay"] {
        assert!(err.contains(f), "{f} missing in {err}");
    }
}

#[test]
fn peers_outside_the_uid_allow_list_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // This test runs as some uid; allow only another one.
    let me = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap();
    let other = (me + 1).to_string();
    let a = agent(dir.path(), &["--allow-uid", &other]);
    let mut s = UnixStream::connect(&a.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"PING\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert_eq!(out, "", "a refused peer gets no answer");
    let dir2 = tempfile::tempdir().unwrap();
    let allowed = agent(dir2.path(), &["--allow-uid", &me.to_string()]);
    assert!(ask(&allowed.socket, &["PING"])[0].starts_with("PONG "));
}

#[test]
fn the_check_command_prints_the_verdict_and_exits_0_only_for_ok() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), &[]);
    let run = |jwt: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_revmesh-agent"))
            .args(["check", "--socket"])
            .arg(&a.socket)
            .arg(jwt)
            .output()
            .unwrap()
    };
    let ok = run(&token("j", "carol", serde_json::json!({})));
    assert_eq!(ok.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("OK seq=0"));
    let bad = run("a.b.c");
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&bad.stdout).trim(), "INVALID reason=malformed");
}

/// One raw HTTP/1.0 request over TCP; the whole answer.
fn tcp_http(addr: &str, head: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(s, "{head}\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_over_tcp_reads_the_token_cookie_when_there_is_no_bearer_header() {
    let adir = tempfile::tempdir().unwrap();
    let auth = crate::util::Authority::start(adir.path(), 0, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = crate::util::AgentProc::start(
        dir.path(),
        &auth.url(),
        &["--http-listen", "127.0.0.1:0", "--token-cookie", "session"],
    );
    let addr = agent.ready_field("http").expect("ready line names the HTTP address");
    crate::util::wait_for(|| !agent.ask("PING").ends_with("log_id=none"), "agent in sync").await;
    let exp = crate::util::now() + 3600;
    auth.revoke(serde_json::json!({"kind": "jti", "jti": "gone", "expires_at": exp})).await;
    let good = crate::util::token("fine", "alice", serde_json::json!({}));
    let gone = crate::util::token("gone", "bob", serde_json::json!({}));
    let ask = |cookie: &str| {
        tcp_http(&addr, &format!("GET /v1/check/orders/1 HTTP/1.0\r\nCookie: a=b; {cookie}\r\n"))
    };
    let ok = ask(&format!("session={good}"));
    assert!(ok.starts_with("HTTP/1.0 200") && ok.contains("x-revmesh-sub: alice"), "{ok}");
    let revoked = ask(&format!("session={gone}"));
    assert!(
        revoked.starts_with("HTTP/1.0 401") && revoked.contains("x-revmesh-verdict: revoked"),
        "{revoked}"
    );
    let other = ask(&format!("sess={good}"));
    assert!(
        other.starts_with("HTTP/1.0 401") && other.contains("missing bearer token"),
        "only the named cookie: {other}"
    );
    // A bearer token and a token cookie that differ: which one the application acts on is not
    // the agent's to guess, so the request is refused.
    let both = tcp_http(
        &addr,
        &format!("POST /v1/check HTTP/1.0\r\nAuthorization: Bearer {gone}\r\nCookie: session={good}\r\n"),
    );
    assert!(both.starts_with("HTTP/1.0 400"), "{both}");
    // The bypass a hand-written parser let through: a revoked token first and a valid one last,
    // the agent reading the last while the application reads the first. Refused, as is a
    // revoked token cookie sent beside a valid one.
    let two = tcp_http(
        &addr,
        &format!("GET /v1/check HTTP/1.1\r\nHost: a\r\nConnection: close\r\nAuthorization: Bearer {gone}\r\nAuthorization: Bearer {good}\r\n"),
    );
    assert!(two.starts_with("HTTP/1.1 400") && two.contains("more than one Authorization"), "{two}");
    let two_cookies = ask(&format!("session={gone}; session={good}"));
    assert!(two_cookies.starts_with("HTTP/1.0 400"), "{two_cookies}");
    drop(agent);
    auth.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_is_active_only_for_a_token_the_agent_would_accept() {
    let adir = tempfile::tempdir().unwrap();
    let auth = crate::util::Authority::start(adir.path(), 0, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = crate::util::AgentProc::start(dir.path(), &auth.url(), &["--http-listen", "127.0.0.1:0"]);
    let addr = agent.ready_field("http").unwrap();
    crate::util::wait_for(|| !agent.ask("PING").ends_with("log_id=none"), "agent in sync").await;
    let exp = crate::util::now() + 3600;
    auth.revoke(serde_json::json!({"kind": "jti", "jti": "gone", "expires_at": exp})).await;
    let post = |body: &str| {
        let ans = tcp_http(
            &addr,
            format!(
                "POST /v1/introspect HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .trim_end_matches("\r\n"),
        );
        let (head, json) = ans.split_once("\r\n\r\n").unwrap();
        (head.to_owned(), serde_json::from_str::<serde_json::Value>(json).unwrap())
    };
    let good = crate::util::token(
        "fine",
        "alice",
        serde_json::json!({"iss": "https://idp", "aud": ["api", "web"], "scope": "read write", "client_id": "shop"}),
    );
    let (head, v) = post(&format!("token={good}&token_type_hint=access_token"));
    assert!(head.starts_with("HTTP/1.0 200") && head.contains("cache-control: no-store"), "{head}");
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(
        (v["sub"].as_str(), v["jti"].as_str(), v["iss"].as_str()),
        (Some("alice"), Some("fine"), Some("https://idp"))
    );
    assert_eq!(v["aud"], serde_json::json!(["api", "web"]));
    assert_eq!((v["scope"].as_str(), v["client_id"].as_str()), (Some("read write"), Some("shop")));
    assert!(v["exp"].as_u64().is_some() && v["iat"].as_u64().is_some(), "{v}");
    let gone = crate::util::token("gone", "bob", serde_json::json!({}));
    for (body, why) in [(format!("token={gone}"), "revoked"), ("token=not.a.jwt".to_owned(), "invalid")] {
        let (_, v) = post(&body);
        assert_eq!(v, serde_json::json!({"active": false}), "{why}");
    }
    let (head, v) = post("token_type_hint=access_token");
    assert!(head.starts_with("HTTP/1.0 400"), "{head}");
    assert_eq!(v["error"], "invalid_request");
    let too_big = tcp_http(&addr, "POST /v1/introspect HTTP/1.0\r\nContent-Length: 999999\r\n");
    assert!(too_big.starts_with("HTTP/1.0 413"), "an oversized body is refused: {too_big}");
    drop(agent);
    auth.stop().await;
}
