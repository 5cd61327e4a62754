//! Both binaries' `/metrics` as Prometheus's own linter sees it (`promtool check metrics`, from
//! Debian's `prometheus` package), and the operator basics every scrape must carry.

use crate::util::{scrape, wait_for, AgentProc, Authority};
use std::io::Write;
use std::process::{Command, Stdio};

fn promtool_check(text: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is not installed ({e}): `apt-get install prometheus` (scripts/test installs it)")
        });
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_binaries_metrics_pass_promtool_and_carry_build_process_and_zeroed_labels() {
    let adir = tempfile::tempdir().unwrap();
    let auth = Authority::start(adir.path(), 0, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProc::start(dir.path(), &auth.url(), &[]);
    wait_for(|| !agent.ask("PING").ends_with("log_id=none"), "agent in sync").await;
    // A line too long is counted as a check outcome.
    let long = format!("STATUS jti={}", "x".repeat(9_000));
    assert_eq!(agent.ask(&long), "ERR reason=line_too_long");
    let agent_text = scrape(&agent.metrics);
    let auth_text = scrape(&auth.admin.to_string());
    for (name, text) in [("agent", &agent_text), ("authority", &auth_text)] {
        let lint = promtool_check(text);
        assert!(lint.trim().is_empty(), "{name}: promtool found problems:\n{lint}");
        assert!(text.contains("revmesh_build_info{commit="), "{name}: no build info");
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{name}: no process metrics");
    }
    assert!(agent_text.contains("revmesh_agent_checks_total{verdict=\"err\"} 1"), "{agent_text}");
    for reason in ["duplicate_id", "unauthorized", "identity"] {
        let line = format!("revmesh_authority_agents_rejected_total{{reason=\"{reason}\"}} 0");
        assert!(auth_text.contains(&line), "{line} must be exported from the start");
    }
    drop(agent);
    auth.stop().await;
}

/// `revmesh-agent token` mints what the docs' walkthroughs need, without Python.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_command_mints_tokens_the_agent_accepts_and_revokes() {
    let adir = tempfile::tempdir().unwrap();
    let auth = Authority::start(adir.path(), 0, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProc::start(dir.path(), &auth.url(), &[]);
    wait_for(|| !agent.ask("PING").ends_with("log_id=none"), "agent in sync").await;
    let out = Command::new(env!("CARGO_BIN_EXE_revmesh-agent"))
        .args(["token", "--sub", "bob", "--sid", "s-42", "--ttl", "10m", "--hs256-secret-file"])
        .arg(dir.path().join("secret"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let answer = agent.ask(&format!("CHECK {token}"));
    assert!(answer.starts_with("OK ") && answer.contains(" sub=bob"), "{answer}");
    auth.revoke(serde_json::json!({"kind": "session", "sid": "s-42"})).await;
    assert!(agent.ask(&format!("CHECK {token}")).starts_with("REVOKED kind=session"));
    drop(agent);
    auth.stop().await;
}

/// The alert rules shipped in deploy/prometheus are valid and their unit tests pass
/// (`promtool check rules`, `promtool test rules`), and every metric they use is one the
/// binaries export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_rules_pass_promtool_and_use_exported_metrics() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus"));
    for args in [["check", "rules", "revmesh-alerts.yml"], ["test", "rules", "revmesh-alerts.test.yml"]] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("promtool is not installed ({e}): `apt-get install prometheus`"));
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let adir = tempfile::tempdir().unwrap();
    let auth = Authority::start(adir.path(), 0, &[]).await;
    let agent_dir = tempfile::tempdir().unwrap();
    let agent = AgentProc::start(agent_dir.path(), &auth.url(), &[]);
    let exported = format!("{}{}", scrape(&agent.metrics), scrape(&auth.admin.to_string()));
    let rules = std::fs::read_to_string(dir.join("revmesh-alerts.yml")).unwrap();
    let used: std::collections::BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("revmesh_"))
        .map(|w| w.trim_end_matches("_bucket"))
        .collect();
    for m in used {
        assert!(exported.contains(&format!("# TYPE {m} ")), "the rules use {m}, which no binary exports");
    }
    drop(agent);
    auth.stop().await;
}

/// `--log-format json` on the agent: the ready line and every log line are JSON objects.
#[test]
fn the_agent_logs_json_when_asked() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_revmesh-agent"))
        .args(["run", "--authority", "ws://127.0.0.1:9", "--log-format", "json", "--log", "info"])
        .args(["--metrics-listen", "127.0.0.1:0", "--socket"])
        .arg(dir.path().join("a.sock"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    let v: serde_json::Value = serde_json::from_str(&ready).unwrap_or_else(|e| panic!("{e}: {ready}"));
    assert_eq!(v["msg"], "ready");
    assert!(v["metrics"].is_string());
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Without keys the agent warns; that line too is JSON.
    assert!(stderr.contains("verification keys"), "{stderr}");
    for line in stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
}

/// Shell completions and the man page come from the same definitions as the flags.
#[test]
fn agent_completions_and_man_page_are_generated_from_the_flags() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_revmesh-agent")).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(run(&["completions", "bash"]).contains("--socket-group"));
    assert!(run(&["man"]).contains(".TH revmesh-agent 1"));
}
