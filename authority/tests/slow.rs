//! The admin API under slow-client attacks by a real attack tool (`slowhttptest`, Debian's
//! package): slowloris, slow body and slow read, all at once and with more connections than
//! the limit, while the security team revokes every second. Every revocation must get its 201.

use crate::util::Authority;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn slowhttptest() -> &'static str {
    let present = Command::new("slowhttptest").arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        present.is_ok(),
        "slowhttptest is not installed: `apt-get install slowhttptest` (scripts/test installs it)"
    );
    "slowhttptest"
}

fn attack(mode: &str, url: &str, verb: &str, secs: u64) -> Child {
    let mut cmd = Command::new(slowhttptest());
    cmd.args([mode, "-c", "300", "-r", "150", "-i", "1", "-x", "16", "-p", "3", "-l", &secs.to_string()]);
    cmd.args(["-t", verb, "-u", url]);
    if mode == "-X" {
        // Slow read: a tiny receive window, a few bytes per read.
        cmd.args(["-k", "3", "-n", "1", "-w", "1", "-y", "32", "-z", "4"]);
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

#[test]
fn revocations_get_through_while_slow_clients_attack_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::start(
        dir.path(),
        &[
            "--max-admin-connections",
            "64",
            "--admin-header-timeout",
            "3s",
            "--admin-body-timeout",
            "3s",
            "--admin-idle-timeout",
            "3s",
        ],
    );
    let base = format!("http://{}", a.admin);
    let secs = 12;
    let mut attackers = vec![
        attack("-H", &format!("{base}/v1/revocations"), "POST", secs),
        attack("-B", &format!("{base}/v1/revocations"), "POST", secs),
        attack("-X", &format!("{base}/metrics"), "GET", secs),
    ];
    let pid = a.child.id();
    let rss_before = rss_kib(pid);
    let mut rss_peak = rss_before;
    // Let the attack fill the slots first.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        rss_peak = rss_peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut waits = Vec::new();
    for i in 0..8 {
        let sent = Instant::now();
        let body = format!(r#"{{"kind":"jti","jti":"under-attack-{i}","expires_at":4000000000}}"#);
        // Like an operator's client: retry a refused or reset connection until it is answered.
        let status = loop {
            match revmesh_authority::cli::http_request(
                &a.admin.to_string(),
                "POST",
                "/v1/revocations",
                Some(&a.token),
                body.as_bytes(),
                Duration::from_secs(15),
            ) {
                Ok((status, _)) => break status,
                Err(_) if sent.elapsed() < Duration::from_secs(15) => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("revocation {i} got no answer within 15 s: {e}"),
            }
        };
        let waited = sent.elapsed();
        assert_eq!(status, 201, "revocation {i}");
        assert!(waited < Duration::from_secs(15), "revocation {i} took {waited:?}");
        waits.push(waited);
        rss_peak = rss_peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_secs(1).saturating_sub(waited));
    }
    let shed = a.metric("revmesh_authority_admin_connections_shed_total");
    for mut t in attackers.drain(..) {
        let _ = t.kill();
        let _ = t.wait();
    }
    eprintln!(
        "under attack: revocation waits {waits:?}; RSS {rss_before} KiB before, peak {rss_peak} KiB; {shed} connections shed"
    );
    assert!(shed > 0.0, "the attack was not even noticed");
    assert!(rss_peak < 256 * 1024, "RSS grew to {rss_peak} KiB under attack");
}

/// Each limit on its own, with raw sockets: a trickled body gets 408, a half-sent head is closed
/// at the header timeout, and at the connection limit an idle connection makes room.
#[test]
fn slow_heads_and_bodies_are_cut_and_idle_connections_make_room() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::start(
        dir.path(),
        &["--max-admin-connections", "4", "--admin-header-timeout", "1s", "--admin-body-timeout", "1s"],
    );
    let connect = || {
        let s = std::net::TcpStream::connect(a.admin.as_str()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    };
    // A body trickled far slower than the body timeout allows.
    let mut s = connect();
    let head = format!(
        "POST /v1/revocations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\n\r\n{{",
        a.token
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(a.metric("revmesh_authority_admin_connections_shed_total{reason=\"body_timeout\"}"), 1.0);

    // A request head that never ends.
    let mut s = connect();
    s.write_all(b"POST /v1/revocations HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut buf = [0u8; 64];
    assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)), "a half-sent head must be closed");
    assert_eq!(a.metric("revmesh_authority_admin_connections_shed_total{reason=\"header_timeout\"}"), 1.0);

    // Every slot held by a silent connection: a revocation still gets in.
    let held: Vec<_> = (0..4).map(|_| connect()).collect();
    let seq = a.revoke_jti("room-was-made");
    assert!(seq > 0);
    assert!(a.metric("revmesh_authority_admin_connections_shed_total{reason=\"limit\"}") >= 1.0);
    drop(held);
}
