//! The admin API: durability across kill -9, receipts, and the documented 4xx answers.

use crate::util::{http, Agent, Authority};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_revocation_survives_kill_9_with_its_seq_and_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Authority::start(dir.path(), &[]);
    let seq = a.revoke_jti("survivor");
    let (_, before) = a.get(&format!("/v1/revocations/{seq}"));
    a.kill9();
    let b = Authority::start(dir.path(), &[]);
    let (status, after) = b.get(&format!("/v1/revocations/{seq}"));
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["jti"], "survivor");
    assert_eq!(after["seq"], before["seq"]);
    assert_eq!(after["log_id"], before["log_id"]);
    // The next revocation continues the sequence: no seq is reused.
    assert_eq!(b.revoke_jti("next"), seq + 1);
    let agent = Agent::start(vec![b.ws_url()], "after-restart");
    agent.wait_applied(seq + 1).await;
    assert!(agent.revoked("survivor") && agent.revoked("next"));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_all_answers_with_a_receipt_naming_every_agent() {
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::start(dir.path(), &[]);
    let agents: Vec<Agent> = (0..3).map(|i| Agent::start(vec![a.ws_url()], &format!("r{i}"))).collect();
    // Wait until all three links are registered.
    crate::util::wait_for(|| a.metric("revmesh_authority_agents_connected") == 3.0, "3 agents").await;
    let (status, v) = a.post(
        "/v1/revocations?wait=all&timeout_ms=10000",
        r#"{"kind":"session","sid":"s-1","reason":"laptop stolen"}"#,
    );
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["acked"], serde_json::json!(["r0", "r1", "r2"]));
    assert_eq!(v["pending"], serde_json::json!([]));
    // The receipt means applied: every agent refuses the session right now.
    let seq = v["seq"].as_u64().unwrap();
    for ag in &agents {
        assert!(ag.state.applied() >= seq);
    }
    let (_, one) = a.get(&format!("/v1/revocations/{seq}"));
    let states: Vec<&str> =
        one["agents"].as_array().unwrap().iter().map(|x| x["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["acked", "acked", "acked"]);
    let (_, list) = a.get("/v1/agents");
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert_eq!(list[0]["applied_seq"], seq);
    for ag in agents {
        ag.stop().await;
    }
}

/// (name, token, body, expected status, expected `field`)
type BadRequest<'a> = (&'a str, Option<&'a str>, String, u16, Option<&'a str>);

#[test]
fn bad_requests_get_the_documented_4xx_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::start(dir.path(), &[]);
    let good = r#"{"kind":"jti","jti":"x","expires_at":4000000000}"#;
    let big =
        format!(r#"{{"kind":"jti","jti":"x","expires_at":4000000000,"reason":"{}"}}"#, "a".repeat(70_000));
    let cases: Vec<BadRequest> = vec![
        ("no token", None, good.into(), 401, None),
        ("wrong token", Some("wrong-token-wrong-token"), good.into(), 401, None),
        ("malformed json", Some(&a.token), "{\"kind\":".into(), 400, Some("body")),
        ("unknown kind", Some(&a.token), r#"{"kind":"user","sub":"u"}"#.into(), 400, Some("kind")),
        (
            "jti without expires_at",
            Some(&a.token),
            r#"{"kind":"jti","jti":"x","expires_at":"tomorrow"}"#.into(),
            400,
            Some("expires_at"),
        ),
        ("body over 64 KiB", Some(&a.token), big, 413, None),
    ];
    for (name, token, body, status, field) in cases {
        let (got, v) = http(&a.admin, "POST", "/v1/revocations", token, body.as_bytes());
        assert_eq!(got, status, "{name}: {v}");
        if let Some(f) = field {
            assert_eq!(v["field"], f, "{name}: {v}");
        }
    }
    let (_, status) = a.get("/v1/status");
    assert_eq!(status["head"], 0, "nothing may be stored");
    // The generated admin token is readable by its owner only.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("admin.token")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // /metrics and health need no token; /v1 does.
    assert_eq!(http(&a.admin, "GET", "/healthz", None, b"").0, 200);
    assert_eq!(http(&a.admin, "GET", "/readyz", None, b"").0, 200);
    assert_eq!(http(&a.admin, "GET", "/v1/agents", None, b"").0, 401);
    assert!(a.metrics().contains("revmesh_authority_log_head_seq 0"));
}

#[test]
fn bad_configuration_exits_64_and_names_every_field() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_revmesh-authority"))
        .args(["serve", "--agent-listen", "nowhere", "--heartbeat", "soon", "--max-agents", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for field in ["agent-listen", "heartbeat", "max-agents"] {
        assert!(err.contains(field), "{field} missing in: {err}");
    }
}

#[test]
fn operator_commands_revoke_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::start(dir.path(), &[]);
    let bin = env!("CARGO_BIN_EXE_revmesh-authority");
    let token_file = dir.path().join("admin.token");
    let admin = format!("http://{}", a.admin);
    let run = |args: &[&str]| {
        std::process::Command::new(bin)
            .args(args)
            .args(["--admin", &admin, "--token-file"])
            .arg(&token_file)
            .output()
            .unwrap()
    };
    let out = run(&["revoke", "jti", "tok-1", "--expires-at", "2100-01-01T00:00:00Z", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["seq"], 1);
    let out = run(&["revoke", "subject", "alice", "--wait", "--timeout", "1s"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked: seq 2"));
    let out = run(&["revoke", "jti", "tok-2", "--expires-at", "yesterday"]);
    assert_eq!(out.status.code(), Some(64));
    let out = run(&["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("head 2"));
    let (_, e) = a.get("/v1/revocations/1");
    assert_eq!(e["expires_at"], 4_102_444_800u64);
}

/// A port that is taken is a configuration error (exit 64) found before anything is created:
/// no store, no generated admin token is left behind.
#[test]
fn a_taken_port_is_reported_before_anything_is_created() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_revmesh-authority"))
        .args(["serve", "--agent-listen", "127.0.0.1:0", "--admin-listen", &addr, "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("--admin-listen"), "{stderr}");
    assert!(!data.join("admin.token").exists(), "an admin token was written before the bind failed");
    assert!(!data.exists() || std::fs::read_dir(&data).unwrap().next().is_none(), "the data dir was filled");
}

/// Starts the authority binary on ports from 0 with `extra` flags, reads its ready line, kills it;
/// returns the ready line and everything it wrote to stderr.
fn serve_until_ready(extra: &[&str]) -> (String, String) {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_revmesh-authority"))
        .args(["serve", "--agent-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(extra)
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (ready, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Starting with agent authentication off is allowed (the quick start does) but never silent.
#[test]
fn open_agent_authentication_is_warned_about() {
    let (ready, stderr) = serve_until_ready(&[]);
    assert!(ready.starts_with("revmesh-authority ready"), "{ready}");
    assert!(stderr.contains("WARN") && stderr.contains("agent authentication is OFF"), "{stderr}");
}

/// Departed agents can be forgotten (API and CLI); a connected one cannot. Small API edges:
/// `?limit=0` lists nothing, a wrong method gets a JSON error like every other error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn departed_agents_are_forgotten_and_api_edges_answer_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::start(dir.path(), &[]);
    let agent = Agent::start(vec![a.ws_url()], "leaving");
    let seq = a.revoke_jti("x");
    agent.wait_applied(seq).await;
    crate::util::wait_for(|| a.get("/v1/agents").1[0]["connected"] == true, "agent listed").await;
    let delete = |id: &str| http(&a.admin, "DELETE", &format!("/v1/agents/{id}"), Some(&a.token), b"");
    let (status, v) = delete("leaving");
    assert_eq!(status, 409, "{v}");
    agent.stop().await;
    crate::util::wait_for(|| a.get("/v1/agents").1[0]["connected"] == false, "agent gone").await;
    // A receipt names the departed agent that lacks the new revocation; it is not hidden.
    let (status, receipt) = a.post(
        "/v1/revocations?wait=all&timeout_ms=100",
        r#"{"kind":"jti","jti":"while-gone","expires_at":4000000000}"#,
    );
    assert_eq!(status, 201);
    assert_eq!(receipt["disconnected"], serde_json::json!(["leaving"]), "{receipt}");
    assert_eq!(receipt["pending"], serde_json::json!([]), "{receipt}");
    let one = a.get(&format!("/v1/revocations/{}", receipt["seq"])).1;
    assert_eq!(one["agents"], serde_json::json!([{"id": "leaving", "state": "disconnected"}]), "{one}");
    // The operator command, as a user runs it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_revmesh-authority"))
        .args(["agents", "forget", "leaving", "--admin", &format!("http://{}", a.admin), "--token-file"])
        .arg(dir.path().join("admin.token"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(a.get("/v1/agents").1, serde_json::json!([]));
    assert_eq!(a.get("/v1/status").1["agents_known"], 0);
    assert_eq!(delete("leaving").0, 404);
    let (_, receipt) = a.post("/v1/revocations", r#"{"kind":"session","sid":"after-forget"}"#);
    assert_eq!(
        receipt["disconnected"],
        serde_json::json!([]),
        "a forgotten agent leaves receipts: {receipt}"
    );

    let (status, v) = a.get("/v1/revocations?after=0&limit=0");
    assert_eq!(status, 200);
    assert_eq!(v["entries"], serde_json::json!([]), "{v}");
    let (status, v) = http(&a.admin, "PUT", "/v1/revocations", Some(&a.token), b"{}");
    assert_eq!(status, 405);
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "405 must carry a JSON error: {v}");
}

/// `--log-format json`: every line the authority writes is one JSON object, the ready line
/// included (same fields, `"msg":"ready"`), and so is a configuration error.
#[test]
fn json_logs_are_one_object_per_line_ready_line_included() {
    let (ready, stderr) = serve_until_ready(&["--log-format", "json", "--log", "info"]);
    let v: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(v["msg"], "ready", "{ready}");
    assert!(v["admin"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{ready}");
    assert!(stderr.lines().count() >= 2, "{stderr}");
    for line in stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_revmesh-authority"))
        .args(["serve", "--log-format", "json", "--heartbeat", "soon"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(64));
    let line = String::from_utf8_lossy(&bad.stderr);
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["field"], "heartbeat");
}

/// Shell completions and the man page come from the same definitions as the flags.
#[test]
fn completions_and_man_page_are_generated_from_the_flags() {
    let run = |args: &[&str]| {
        let out =
            std::process::Command::new(env!("CARGO_BIN_EXE_revmesh-authority")).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    for shell in ["bash", "zsh", "fish"] {
        assert!(run(&["completions", shell]).contains("store-timeout"), "{shell}");
    }
    let man = run(&["man"]);
    assert!(man.contains(".TH revmesh-authority 1"), "{man}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_array_is_one_all_or_nothing_commit_with_one_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::start(dir.path(), &[]);
    let agent = Agent::start(vec![a.ws_url()], "bulk-agent");
    crate::util::wait_for(|| a.metric("revmesh_authority_agents_connected") == 1.0, "agent").await;
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let body: Vec<serde_json::Value> = (0..500)
        .map(|i| serde_json::json!({"kind": "jti", "jti": format!("bulk-{i}"), "expires_at": exp}))
        .chain([serde_json::json!({"kind": "session", "sid": "s-bulk"})])
        .collect();
    let commits = a.metric("revmesh_authority_store_commits_total");
    let (status, v) =
        a.post("/v1/revocations?wait=all&timeout_ms=10000", &serde_json::Value::from(body).to_string());
    assert_eq!(status, 201, "{v}");
    assert_eq!((v["first_seq"].as_u64(), v["last_seq"].as_u64()), (Some(1), Some(501)), "{v}");
    assert_eq!(v["acked"], serde_json::json!(["bulk-agent"]), "one receipt for the whole array: {v}");
    assert_eq!(a.metric("revmesh_authority_store_commits_total") - commits, 1.0, "one commit (one fsync)");
    assert!(agent.revoked("bulk-0") && agent.revoked("bulk-499"));

    // One bad element: 400 naming it, and nothing of the array is stored.
    let bad = serde_json::json!([
        {"kind": "jti", "jti": "fine", "expires_at": exp},
        {"kind": "jti", "jti": "bad-expiry", "expires_at": -1},
    ]);
    let (status, v) = a.post("/v1/revocations", &bad.to_string());
    assert_eq!((status, v["field"].as_str()), (400, Some("[1].expires_at")), "{v}");
    let (_, list) = a.get("/v1/revocations?after=501");
    assert_eq!(list["head"], 501, "nothing stored: {list}");
    for (body, why) in [
        ("[]".to_owned(), "empty array"),
        (
            serde_json::Value::from(vec![serde_json::json!({"kind": "key", "kid": "k"}); 10_001]).to_string(),
            "over 10,000",
        ),
        ("[1]".to_owned(), "not an object"),
    ] {
        let (status, v) = a.post("/v1/revocations", &body);
        assert_eq!(status, 400, "{why}: {v}");
    }
    // One object stays limited to 64 KiB; an array to 2 MiB.
    let big_reason = serde_json::json!({"kind": "key", "kid": "k", "pad": "x".repeat(70_000)}).to_string();
    assert_eq!(a.post("/v1/revocations", &big_reason).0, 413);
    let huge = format!("[{}]", vec![r#"{"kind":"key","kid":"k"}"#; 100_000].join(","));
    assert_eq!(a.post("/v1/revocations", &huge).0, 413);
    let (_, list) = a.get("/v1/revocations?after=501");
    assert_eq!(list["head"], 501);
    agent.stop().await;
}

#[test]
fn import_submits_json_lines_in_bulk_and_resumes_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::start(&dir.path().join("a"), &[]);
    let token_file = dir.path().join("a").join("admin.token");
    let file = dir.path().join("revocations.jsonl");
    let lines: Vec<String> = (0..2500)
        .map(|i| format!(r#"{{"kind":"jti","jti":"imp-{i}","expires_at":4000000000,"reason":"breach"}}"#))
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n\n").unwrap();
    let import = |f: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_revmesh-authority"))
            .arg("import")
            .arg(f)
            .args(["--admin", &format!("http://{}", a.admin), "--token-file"])
            .arg(&token_file)
            .output()
            .unwrap()
    };
    let out = import(&file);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("seq 1..2500"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(a.get("/v1/status").1["head"], 2500);
    assert_eq!(a.metric("revmesh_authority_store_commits_total"), 3.0, "1,000 per commit");

    // Interrupted after the second batch was committed but before its answer was recorded:
    // the rerun finds it in the log by content and sends nothing twice.
    let progress = dir.path().join("revocations.jsonl.import-progress");
    let batch: Vec<serde_json::Value> =
        lines[1000..2000].iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let second_batch_only: Vec<serde_json::Value> = batch.clone();
    std::fs::write(&progress, serde_json::json!({"done": 1000, "pending": [1000, batch]}).to_string())
        .unwrap();
    // Make the committed batch the newest entries, as it would be at the interruption.
    let fresh = tempfile::tempdir().unwrap();
    let b = Authority::start(fresh.path(), &[]);
    let (status, _) = b.post(
        "/v1/revocations",
        &serde_json::Value::from(
            lines[..1000]
                .iter()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .collect::<Vec<_>>(),
        )
        .to_string(),
    );
    assert_eq!(status, 201);
    assert_eq!(b.post("/v1/revocations", &serde_json::Value::from(second_batch_only).to_string()).0, 201);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_revmesh-authority"))
        .arg("import")
        .arg(&file)
        .args(["--admin", &format!("http://{}", b.admin), "--token-file"])
        .arg(fresh.path().join("admin.token"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("was committed"), "{err}");
    assert_eq!(b.get("/v1/status").1["head"], 2500, "the committed batch was not sent again");
    // A second rerun has nothing left to do.
    let out = import(&file);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");

    // A bad record is named by its position in the file; nothing of its batch is stored.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        format!("{}\n{{\"kind\":\"jti\",\"jti\":\"bad-expiry\",\"expires_at\":-1}}\n", lines[0]),
    )
    .unwrap();
    let out = import(&bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("record 2"), "{err}");

    // A line longer than one revocation may be is refused by the reader, not buffered whole.
    let long = dir.path().join("long.jsonl");
    std::fs::write(&long, format!("{{\"kind\":\"key\",\"kid\":\"{}\"}}\n", "k".repeat(100_000))).unwrap();
    let out = import(&long);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("line 1: longer than"), "{err}");
}

/// Requests without credentials (health checkers, slow clients) are refused and counted but
/// hold nobody out: after 31 of them from the operator's own address the right token works.
#[test]
fn requests_without_credentials_are_counted_and_never_hold_the_operator_out() {
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::start(dir.path(), &[]);
    for _ in 0..31 {
        assert_eq!(http(&a.admin, "GET", "/v1/status", None, b"").0, 401);
    }
    assert_eq!(a.get("/v1/status").0, 200, "the operator is not held out");
    assert_eq!(a.metric("revmesh_authority_admin_refused_total"), 31.0);
}

/// An address that presents wrong tokens is slowed: after 10, its tokens are answered 429 with
/// Retry-After without being looked at, so guessing runs at one a second, not thousands. Other
/// addresses are unaffected, and the address gets another try as its allowance refills.
#[test]
fn wrong_tokens_from_one_address_are_slowed_and_other_addresses_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::start(dir.path(), &[]);
    for i in 0..10 {
        let token = format!("guess-{i:04}-guess-guess-guess");
        assert_eq!(http(&a.admin, "GET", "/v1/status", Some(&token), b"").0, 401, "guess {i}");
    }
    // Held: even the right token is not looked at from this address now.
    let (status, v) = http(&a.admin, "GET", "/v1/status", Some("guess-0010-guess-guess-guess"), b"");
    assert_eq!(status, 429, "{v}");
    assert!(a.metrics().contains("revmesh_authority_admin_refused_total{reason=\"held\"} 1"));
    // Another address (127.0.0.2 reaches the same loopback listener): unaffected.
    let curl = |from: &str, token: &str| -> String {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--interface", from])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .arg(format!("http://{}/v1/status", a.admin))
            .output()
            .expect("curl must be installed (scripts/test installs it: apt-get install curl)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl("127.0.0.2", &a.token), "200");
    assert_eq!(curl("127.0.0.1", &a.token), "429");
    // The allowance refills (one a second): the operator gets through again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while curl("127.0.0.1", &a.token) != "200" {
        assert!(std::time::Instant::now() < deadline, "the address was never let go");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
