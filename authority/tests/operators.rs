//! Operators, scopes and the audit trail, against the real binary: the full scope matrix,
//! SIGHUP adding and removing operators, operators named by client certificates, attribution
//! (`by`) and audit records, audit atomicity under kill -9, and the start-up refusals.

use crate::util::{http, wait_for, Agent, Authority};
use revmesh_authority::operators::new_operator;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A fresh operator with `scopes`: (token, stanza).
fn operator(name: &str, scopes: &str) -> (String, String) {
    new_operator(name, &[scopes.to_owned()]).unwrap()
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn call(a: &Authority, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    http(&a.admin, method, path, token, body.as_bytes())
}

/// The status line of a request whose answer may never end (the change feed).
fn status_only(addr: &str, path: &str, token: Option<&str>) -> u16 {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "connection closed before the status line");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Every admin endpoint × no credential, a wrong one and an operator holding each single
/// scope: 401 without a valid credential, 403 naming the needed scope without it, and with it
/// whatever the endpoint answers (never 401 or 403).
#[test]
fn every_endpoint_answers_each_scope_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let scopes = ["revoke", "read", "forget", "withdraw", "audit"];
    let ops: Vec<(&str, (String, String))> =
        scopes.iter().map(|s| (*s, operator(&format!("only-{s}"), s))).collect();
    let file = dir.path().join("operators.toml");
    write_private(&file, &ops.iter().map(|(_, (_, stanza))| stanza.as_str()).collect::<Vec<_>>().join("\n"));
    let admin_token = dir.path().join("admin.token.file");
    write_private(&admin_token, "admin-token-for-the-matrix-0123456789");
    let a = Authority::start(
        &dir.path().join("data"),
        &["--operators", file.to_str().unwrap(), "--admin-token-file", admin_token.to_str().unwrap()],
    );
    // Something to read and withdraw.
    let seq = a.revoke_jti("matrix");
    let endpoints: [(&str, String, &str, &str); 13] = [
        ("POST", "/v1/revocations".into(), r#"{"kind":"session","sid":"m"}"#, "revoke"),
        ("POST", "/v1/revocations".into(), r#"[{"kind":"session","sid":"m2"}]"#, "revoke"),
        ("POST", "/v1/oauth2/revoke".into(), "token=x", "revoke"),
        ("GET", "/v1/revocations".into(), "", "read"),
        ("GET", format!("/v1/revocations/{seq}"), "", "read"),
        ("GET", "/v1/revocations/stream".into(), "", "read"),
        ("GET", "/v1/agents".into(), "", "read"),
        ("GET", "/v1/status".into(), "", "read"),
        ("GET", "/v1/ssf/status".into(), "", "read"),
        ("DELETE", format!("/v1/revocations/{seq}"), "", "withdraw"),
        ("DELETE", "/v1/agents/nobody".into(), "", "forget"),
        ("GET", "/v1/audit".into(), "", "audit"),
        ("GET", "/v1/backup".into(), "", "audit"),
    ];
    for (i, (method, path, body, needed)) in endpoints.iter().enumerate() {
        let ask = |token: Option<&str>| -> (u16, Value) {
            if path.ends_with("/stream") {
                (status_only(&a.admin, path, token), Value::Null)
            } else {
                call(&a, method, path, token, body)
            }
        };
        assert_eq!(ask(None).0, 401, "{method} {path} without a credential");
        // A wrong token, each from an address of its own: ten from one address hold it (429).
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method, "--interface"])
            .arg(format!("127.0.0.{}", 10 + i))
            .args(["-H", "Authorization: Bearer rvm_not-a-real-token", "--data-binary", body])
            .arg(format!("http://{}{path}", a.admin))
            .output()
            .expect("curl must be installed (scripts/test installs it: apt-get install curl)");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "401", "{method} {path} with a wrong token");
        for (scope, (token, _)) in &ops {
            let (status, v) = ask(Some(token));
            if scope == needed {
                assert!(status != 401 && status != 403, "{method} {path} with `{scope}`: {status} {v}");
            } else {
                assert_eq!(status, 403, "{method} {path} with `{scope}`: {v}");
                if !path.ends_with("/stream") {
                    assert_eq!(v["error"], "forbidden", "{v}");
                    assert_eq!(v["scope"], *needed, "{v}");
                }
            }
        }
        let (status, _) = ask(Some(&a.token));
        assert!(status != 401 && status != 403, "{method} {path} as admin: {status}");
    }
    // Refusals are counted by reason.
    assert!(a.metric("revmesh_authority_admin_refused_total") >= 48.0);
    assert!(a.metrics().contains("revmesh_authority_admin_refused_total{reason=\"forbidden\"}"));
}

/// SIGHUP swaps the operators: an added one is admitted, a removed one refused on its next
/// request; a file that no longer loads keeps the operators in force.
#[test]
fn sighup_adds_and_removes_operators_and_a_broken_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, alice_stanza) = operator("alice", "read");
    let (bob, bob_stanza) = operator("bob", "read");
    let file = dir.path().join("operators.toml");
    write_private(&file, &alice_stanza);
    let admin_token = dir.path().join("admin.token.file");
    write_private(&admin_token, "admin-token-for-sighup-0123456789");
    let a = Authority::start(
        &dir.path().join("data"),
        &["--operators", file.to_str().unwrap(), "--admin-token-file", admin_token.to_str().unwrap()],
    );
    let status = |t: &str| call(&a, "GET", "/v1/status", Some(t), "").0;
    assert_eq!((status(&alice), status(&bob)), (200, 401));
    // A keep-alive connection opened before the reload, used again after it.
    let mut kept = std::net::TcpStream::connect(&a.admin).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut ask_kept = |token: &str| -> u16 {
        write!(kept, "GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n").unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(kept.read(&mut byte).unwrap(), 1, "the kept connection was closed");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        let mut body = vec![0u8; len];
        kept.read_exact(&mut body).unwrap();
        head.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert_eq!(ask_kept(&alice), 200);
    let hup = || {
        let pid = a.child.id().to_string();
        assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    };
    write_private(&file, &bob_stanza);
    hup();
    let reloads = |result: &str| {
        a.metric(&format!("revmesh_authority_reloads_total{{result=\"{result}\",what=\"operators\"}}"))
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(wait_for(|| reloads("ok") == 1.0, "the operators to be reloaded"));
    assert_eq!(status(&bob), 200, "an added operator is admitted");
    assert_eq!(status(&alice), 401, "a removed operator is refused on its next request");
    assert_eq!(ask_kept(&bob), 200, "the connection from before the reload still serves");
    assert_eq!(ask_kept(&alice), 401, "and refuses the removed operator on it too");
    // A broken file: refused, and the operators in force stay (bob keeps working).
    write_private(&file, "[[operator]]\nname = \"eve\"\nscopes = [\"root\"]\ntoken_sha256 = \"00\"\n");
    hup();
    rt.block_on(wait_for(|| reloads("error") == 1.0, "the broken file to be refused"));
    assert_eq!(status(&bob), 200, "the operators in force stay");
    assert_eq!(status(&alice), 401);
}

/// Operators named by a client certificate (mutual TLS on the admin port): admitted with
/// their scopes and no token; a certificate from another CA never completes the handshake; a
/// certificate of the right CA for a name no operator has is 401; token operators still work.
#[test]
fn client_certificates_name_operators_on_the_admin_port() {
    use revmesh_testkit::{ca, leaf};
    let dir = tempfile::tempdir().unwrap();
    let main = ca("revmesh admin CA");
    let other = ca("some other CA");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, main.cert.pem()).unwrap();
    let server = leaf(dir.path(), &main, "server", "localhost", false, false);
    let carol_cert = leaf(dir.path(), &main, "carol", "carol.ops.example", true, false);
    let stranger = leaf(dir.path(), &main, "stranger", "stranger.ops.example", true, false);
    let forged = leaf(dir.path(), &other, "forged", "carol.ops.example", true, false);
    let (dave, dave_stanza) = operator("dave", "read");
    let file = dir.path().join("operators.toml");
    write_private(
        &file,
        &format!("[[operator]]\nname = \"carol\"\nscopes = [\"revoke\", \"read\"]\ncert_subject = \"carol.ops.example\"\n\n{dave_stanza}"),
    );
    let a = Authority::start(
        &dir.path().join("data"),
        &[
            "--operators",
            file.to_str().unwrap(),
            "--tls-cert",
            server.0.to_str().unwrap(),
            "--tls-key",
            server.1.to_str().unwrap(),
            "--admin-client-ca",
            ca_file.to_str().unwrap(),
        ],
    );
    let https =
        |cert: Option<&(PathBuf, PathBuf)>, token: Option<&str>, method: &str, path: &str, body: &str| {
            let tls = revmesh_agent::link::client_tls(
                Some(&ca_file),
                cert.map(|c| c.0.as_path()),
                cert.map(|c| c.1.as_path()),
            )
            .unwrap()
            .unwrap();
            revmesh_authority::cli::https_request(
                &a.admin,
                tls,
                method,
                path,
                token,
                body.as_bytes(),
                Duration::from_secs(10),
            )
            .map(|(s, b)| (s, serde_json::from_str::<Value>(&b).unwrap_or(Value::String(b))))
        };
    let (status, v) =
        https(Some(&carol_cert), None, "POST", "/v1/revocations", r#"{"kind":"session","sid":"c"}"#).unwrap();
    assert_eq!(status, 201, "{v}");
    let seq = v["seq"].as_u64().unwrap();
    let (_, entry) = https(Some(&carol_cert), None, "GET", &format!("/v1/revocations/{seq}"), "").unwrap();
    assert_eq!(entry["by"], "carol", "{entry}");
    // Carol has no `audit` scope.
    assert_eq!(https(Some(&carol_cert), None, "GET", "/v1/audit", "").unwrap().0, 403);
    // The right CA, a name no operator has: authenticated by TLS, unknown to revmesh.
    assert_eq!(https(Some(&stranger), None, "GET", "/v1/status", "").unwrap().0, 401);
    // Another CA: the handshake fails (no answer at all).
    assert!(
        https(Some(&forged), None, "GET", "/v1/status", "").is_err(),
        "a forged certificate got an answer"
    );
    // No certificate, a token: still fine.
    assert_eq!(https(None, Some(&dave), "GET", "/v1/status", "").unwrap().0, 200);
    assert_eq!(https(None, None, "GET", "/v1/status", "").unwrap().0, 401);
    // The operator commands present the certificate (and no token).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_revmesh-authority"))
        .args(["revoke", "session", "by-cli", "--admin", &format!("https://{}", a.admin)])
        .args(["--ca-file", ca_file.to_str().unwrap()])
        .args(["--cert-file", carol_cert.0.to_str().unwrap(), "--key-file", carol_cert.1.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, list) = https(None, Some(&dave), "GET", "/v1/revocations", "").unwrap();
    let last = list["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["sid"].as_str(), last["by"].as_str()), (Some("by-cli"), Some("carol")), "{list}");
}

/// `by` and the audit trail for each state-changing admin request: who, from where, what, on
/// which seqs, with which status; the CLI shows both.
#[test]
fn entries_say_who_stored_them_and_the_audit_trail_says_who_did_what() {
    let dir = tempfile::tempdir().unwrap();
    let (ann, ann_stanza) = operator("ann", "revoke,withdraw,forget,read");
    let (aud, aud_stanza) = operator("auditor", "audit,read");
    let file = dir.path().join("operators.toml");
    write_private(&file, &format!("{ann_stanza}\n{aud_stanza}"));
    let a = Authority::start(&dir.path().join("data"), &["--operators", file.to_str().unwrap()]);
    assert!(a.token.is_empty(), "with an operators file and no --admin-token-file no admin token is made");
    let (s, v) =
        call(&a, "POST", "/v1/revocations", Some(&ann), r#"{"kind":"jti","jti":"t1","reason":"leak"}"#);
    assert_eq!(s, 201, "{v}");
    let one = v["seq"].as_u64().unwrap();
    let (s, v) = call(&a, "POST", "/v1/revocations", Some(&ann), r#"[{"kind":"sid","sid":"x"}]"#);
    assert_eq!(s, 400, "a refused request changes nothing and is not an effect: {v}");
    let (s, v) = call(
        &a,
        "POST",
        "/v1/revocations",
        Some(&ann),
        r#"[{"kind":"session","sid":"a"},{"kind":"session","sid":"b"}]"#,
    );
    assert_eq!(s, 201, "{v}");
    let (first, last) = (v["first_seq"].as_u64().unwrap(), v["last_seq"].as_u64().unwrap());
    let (s, v) =
        call(&a, "DELETE", &format!("/v1/revocations/{one}"), Some(&ann), r#"{"reason":"false alarm"}"#);
    assert_eq!(s, 201, "{v}");
    let w = v["seq"].as_u64().unwrap();
    let (_, list) = call(&a, "GET", "/v1/revocations", Some(&aud), "");
    let entries = list["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{list}");
    assert!(entries.iter().all(|e| e["by"] == "ann"), "{list}");

    let (s, trail) = call(&a, "GET", "/v1/audit", Some(&aud), "");
    assert_eq!(s, 200, "{trail}");
    let records = trail["records"].as_array().unwrap();
    let summary: Vec<(String, String, String, u64)> = records
        .iter()
        .map(|r| {
            (
                r["operator"].as_str().unwrap().to_owned(),
                r["action"].as_str().unwrap().to_owned(),
                r["target"].as_str().unwrap().to_owned(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("ann".into(), "revoke".into(), format!("seq {one}"), 201),
            ("ann".into(), "revoke_bulk".into(), format!("seq {first}-{last}"), 201),
            ("ann".into(), "withdraw".into(), format!("withdraws seq {one}; seq {w}"), 201),
        ]
    );
    assert!(records.iter().all(|r| r["remote"].as_str().unwrap().starts_with("127.0.0.1:")), "{trail}");
    assert!(records.windows(2).all(|p| p[0]["id"].as_u64() < p[1]["id"].as_u64()));
    assert_eq!(trail["next"], records.last().unwrap()["id"]);
    let (_, rest) = call(&a, "GET", &format!("/v1/audit?after={}", trail["next"]), Some(&aud), "");
    assert_eq!(rest["records"].as_array().unwrap().len(), 0, "{rest}");

    // Forgetting a departed agent is recorded too.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let agent = Agent::start(vec![a.ws_url()], "leaving");
        agent.wait_applied(w).await;
        agent.stop().await;
    });
    rt.block_on(wait_for(
        || call(&a, "GET", "/v1/agents", Some(&ann), "").1[0]["connected"] == false,
        "the agent to be gone",
    ));
    assert_eq!(call(&a, "DELETE", "/v1/agents/leaving", Some(&ann), "").0, 204);
    let (_, trail) = call(&a, "GET", "/v1/audit", Some(&aud), "");
    let last_record = trail["records"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last_record["action"].as_str(), last_record["target"].as_str()),
        (Some("forget"), Some("agent leaving"))
    );

    // The CLI: `show` names who and why, `audit` lists the trail, a 403 is said plainly.
    let cli = |token: &str, args: &[&str]| {
        let tf = dir.path().join(format!("cli-{}.token", rand_suffix()));
        write_private(&tf, token);
        std::process::Command::new(env!("CARGO_BIN_EXE_revmesh-authority"))
            .args(args)
            .args(["--admin", &format!("http://{}", a.admin), "--token-file", tf.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = cli(&aud, &["show", &one.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("by ann") && text.contains("reason leak"), "{text}");
    let out = cli(&aud, &["audit"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("revoke_bulk") && text.contains("forget"), "{text}");
    let out = cli(&ann, &["audit"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("403") && err.contains("`audit` scope"), "{err}");
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Writers revoke (single and bulk) from several threads while the authority is killed with
/// SIGKILL at staggered moments and restarted: after each restart every stored seq is covered
/// by exactly one audit record, and every record names only stored seqs.
pub fn audit_and_entries_survive_kill9_together(data: &Path, extra: &[&str]) {
    let mut checked_head = 0;
    for round in 0..3u64 {
        let a = Authority::start(data, extra);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (addr, token, stop) = (a.admin.clone(), a.token.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let body = if i.is_multiple_of(3) {
                            format!(r#"[{{"kind":"session","sid":"r{round}-w{w}-{i}a"}},{{"kind":"session","sid":"r{round}-w{w}-{i}b"}}]"#)
                        } else {
                            format!(r#"{{"kind":"session","sid":"r{round}-w{w}-{i}"}}"#)
                        };
                        // The process dies under some of these: any answer, or none, is fine.
                        let _ = revmesh_authority::cli::http_request(
                            &addr,
                            "POST",
                            "/v1/revocations",
                            Some(&token),
                            body.as_bytes(),
                            Duration::from_secs(5),
                        );
                        i += 1;
                    }
                })
            })
            .collect();
        // Let the writers commit a while (a count, not a clock: at least some commits).
        let rt = tokio::runtime::Runtime::new().unwrap();
        let target = checked_head + 30 + round * 17;
        rt.block_on(wait_for(
            || a.get("/v1/status").1["head"].as_u64().unwrap_or(0) >= target,
            "writers to commit",
        ));
        let mut a = a;
        a.kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        let a = Authority::start(data, extra);
        let (_, status) = a.get("/v1/status");
        let head = status["head"].as_u64().unwrap();
        let mut covered = vec![0u32; head as usize + 1];
        let mut after = 0;
        loop {
            let (s, page) = a.get(&format!("/v1/audit?after={after}&limit=1000"));
            assert_eq!(s, 200, "{page}");
            let records = page["records"].as_array().unwrap();
            if records.is_empty() {
                break;
            }
            for r in records {
                let target = r["target"].as_str().unwrap();
                let seqs = target.rsplit("seq ").next().unwrap();
                let (x, y) = seqs.split_once('-').unwrap_or((seqs, seqs));
                let (x, y): (u64, u64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!(y <= head, "record {r} names seqs beyond the head {head}");
                for s in x..=y {
                    covered[s as usize] += 1;
                }
            }
            after = page["next"].as_u64().unwrap();
        }
        let wrong: Vec<(usize, u32)> =
            covered.iter().copied().enumerate().skip(1).filter(|(_, n)| *n != 1).collect();
        assert!(wrong.is_empty(), "round {round}: seqs not covered by exactly one record: {wrong:?}");
        assert!(head > checked_head, "round {round}: nothing was committed");
        checked_head = head;
    }
}

#[test]
fn audit_records_and_entries_commit_together_under_kill9_embedded() {
    let dir = tempfile::tempdir().unwrap();
    audit_and_entries_survive_kill9_together(&dir.path().join("data"), &[]);
}

/// A bad operators file, a plaintext token, an unknown scope, and an agent port beyond loopback
/// without agent authentication: the authority refuses to start (exit 64) and says why
/// without repeating a secret.
#[test]
fn bad_operator_files_and_open_agent_ports_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_revmesh-authority");
    let file = dir.path().join("operators.toml");
    for (text, want) in [
        ("[[operator]]\nname = \"x\"\nscopes = [\"read\"]\ntoken = \"SECRET-VALUE\"\n", "plaintext"),
        ("[[operator]]\nname = \"x\"\nscopes = [\"superuser\"]\ntoken_sha256 = \"00\"\n", "unknown scope"),
        ("[[operator\nSECRET-VALUE", "line"),
    ] {
        write_private(&file, text);
        let out = std::process::Command::new(bin)
            .args([
                "serve",
                "--data-dir",
                dir.path().join("d").to_str().unwrap(),
                "--operators",
                file.to_str().unwrap(),
            ])
            .args(["--agent-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{text}: {err}");
        assert!(err.contains(want) && !err.contains("SECRET-VALUE"), "{text}: {err}");
    }
    let open = |extra: &[&str]| {
        std::process::Command::new(bin)
            .args(["serve", "--data-dir", dir.path().join("d").to_str().unwrap()])
            .args(["--agent-listen", "0.0.0.0:0", "--admin-listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = open(&[]).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-unauthenticated-agents"));
    // Said explicitly, it starts.
    let mut child = open(&["--allow-unauthenticated-agents"]);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line)
        .unwrap();
    assert!(line.starts_with("revmesh-authority ready"), "{line}");
    let _ = child.kill();
    let _ = child.wait();
}

/// An agent token bound to ids: used with another agent's id it is refused and counted, and the
/// agent that owns the id keeps its link and its receipts stay true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_token_cannot_pose_as_another_agent() {
    use revmesh_agent::link::LinkSettings;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("agent.tokens");
    let sha = |t: &str| hex_sha256(t);
    write_private(
        &tokens,
        &format!(
            "# web fleet\nweb-1 {}\ndb-* {}\n",
            sha("token-of-web-1-0123456789"),
            sha("token-of-dbs-0123456789")
        ),
    );
    let a = Authority::start(dir.path(), &["--agent-token-file", tokens.to_str().unwrap()]);
    let with = |id: &str, token: &str| {
        let mut s = LinkSettings::new(vec![a.ws_url()], id.to_owned());
        s.token = Some(token.to_owned());
        s.reconnect_min = Duration::from_millis(50);
        s.reconnect_max = Duration::from_millis(300);
        s
    };
    let real = Agent::start_with(with("web-1", "token-of-web-1-0123456789"));
    let seq = a.revoke_jti("before");
    real.wait_applied(seq).await;
    let (_, agents) = a.get("/v1/agents");
    let remote = agents[0]["remote"].clone();
    // The db token, used with web-1's id (and the web-1 token with another id): refused.
    let impostor = Agent::start_with(with("web-1", "token-of-dbs-0123456789"));
    let stray = Agent::start_with(with("web-2", "token-of-web-1-0123456789"));
    wait_for(
        || {
            a.metrics().lines().any(|l| {
                l.starts_with("revmesh_authority_agents_rejected_total{reason=\"identity\"}")
                    && !l.ends_with(" 0")
                    && !l.ends_with(" 1")
            })
        },
        "both impostors to be refused",
    )
    .await;
    let (_, v) = a.post(
        "/v1/revocations?wait=all&timeout_ms=10000",
        r#"{"kind":"jti","jti":"after","expires_at":4000000000}"#,
    );
    assert_eq!(v["acked"], serde_json::json!(["web-1"]), "{v}");
    assert!(real.revoked("after"), "the real web-1 applied what its receipt says");
    assert_eq!(impostor.state.applied(), 0);
    assert_eq!(stray.state.applied(), 0);
    let (_, agents) = a.get("/v1/agents");
    assert_eq!(agents.as_array().unwrap().len(), 1, "{agents}");
    assert_eq!(agents[0]["remote"], remote, "the real link was never displaced: {agents}");
    // A db agent under a db id is fine.
    let db = Agent::start_with(with("db-7", "token-of-dbs-0123456789"));
    let seq = a.revoke_jti("for-db");
    db.wait_applied(seq).await;
    for ag in [real, impostor, stray, db] {
        ag.stop().await;
    }
}

fn hex_sha256(t: &str) -> String {
    revmesh_authority::operators::token_sha256(t).iter().map(|b| format!("{b:02x}")).collect()
}
