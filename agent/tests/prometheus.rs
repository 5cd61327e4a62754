//! The operators' kit against real Prometheus (Debian's `prometheus` package): it scrapes a
//! running mesh (an authority and two agents), loads the alert rules of
//! `deploy/prometheus/revmesh-alerts.yml`, and every expression of the Grafana dashboard
//! (`deploy/grafana/revmesh.json`) and of the rules is evaluated through its HTTP API.

use crate::util::{ask, free_port, token, wait_for, AgentProc, Authority};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A throwaway Prometheus on a free port, with its TSDB in a temp dir; killed on drop.
struct Prometheus {
    child: Child,
    addr: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(dir: &Path, authority: &str, agents: &[&str]) -> Prometheus {
        let rules = repo().join("deploy/prometheus/revmesh-alerts.yml");
        let agents: Vec<String> = agents.iter().map(|a| format!("'{a}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['{}']\nscrape_configs:\n  - job_name: revmesh-authority\n    static_configs: [{{targets: ['{authority}']}}]\n  - job_name: revmesh-agent\n    static_configs: [{{targets: [{}]}}]\n",
            rules.display(),
            agents.join(", ")
        );
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("prometheus is not installed ({e}): `apt-get install prometheus` (scripts/test installs it)")
            });
        Prometheus { child, addr }
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        revmesh_authority::cli::http_request(&self.addr, "GET", path, None, b"", Duration::from_secs(10)).ok()
    }

    /// An instant query: `Ok(result array)` or `Err(Prometheus's error)`.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let (_, body) = self.get(&format!("/api/v1/query?query={}", encode(expr))).ok_or("no answer")?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every panel's expressions, with whether the panel is a core one (must show data).
fn dashboard_exprs() -> Vec<(String, String, bool)> {
    let text = std::fs::read_to_string(repo().join("deploy/grafana/revmesh.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        let core = p["description"].as_str().unwrap_or("").contains("(core panel)");
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((p["title"].as_str().unwrap().to_owned(), t["expr"].as_str().unwrap().to_owned(), core));
        }
    }
    out
}

fn alert_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("deploy/prometheus/revmesh-alerts.yml")).unwrap();
    let mut out = Vec::new();
    let mut name = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(n) = line.strip_prefix("- alert: ") {
            name = n.to_owned();
        } else if let Some(e) = line.strip_prefix("expr: ") {
            out.push((name.clone(), e.to_owned()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_scrapes_the_mesh_and_every_panel_and_alert_evaluates() {
    let adir = tempfile::tempdir().unwrap();
    let auth = Authority::start(adir.path(), 0, &[]).await;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a1 = AgentProc::start(d1.path(), &auth.url(), &[]);
    let a2 = AgentProc::start(d2.path(), &auth.url(), &[]);
    for a in [&a1, &a2] {
        wait_for(|| !a.ask("PING").ends_with("log_id=none"), "agent in sync").await;
    }
    let pdir = tempfile::tempdir().unwrap();
    let prom = Prometheus::start(pdir.path(), &auth.admin.to_string(), &[&a1.metrics, &a2.metrics]);
    let log = pdir.path().join("prometheus.log");
    let ready = || prom.get("/-/ready").is_some_and(|(s, _)| s == 200);
    wait_for(ready, "prometheus ready").await;
    // Both jobs are scraped.
    wait_for(|| prom.query("sum(up) == 3").is_ok_and(|r| !r.is_empty()), "every target up").await;

    // Traffic for the panels: revocations of several kinds (with receipts) and checks.
    let good = token("good", "alice", serde_json::json!({}));
    for i in 0..6 {
        let exp = crate::util::now() + 3600;
        auth.revoke(serde_json::json!({"kind": "jti", "jti": format!("j{i}"), "expires_at": exp})).await;
        auth.revoke(serde_json::json!({"kind": "subject", "sub": format!("s{i}")})).await;
        let revoked = token(&format!("j{i}"), "bob", serde_json::json!({}));
        ask(&a1.socket, &[&format!("CHECK {good}"), &format!("CHECK {revoked}"), "CHECK x.y.z", "PING"]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Every dashboard expression evaluates; the core panels show data.
    let panels = dashboard_exprs();
    assert!(panels.len() >= 25, "dashboard has {} expressions", panels.len());
    for (title, expr, core) in &panels {
        if *core {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                match prom.query(expr) {
                    Ok(r) if !r.is_empty() => break,
                    Ok(_) => {}
                    Err(e) => panic!("panel `{title}`: `{expr}` fails: {e}"),
                }
                assert!(std::time::Instant::now() < deadline, "core panel `{title}`: `{expr}` shows no data");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        } else if let Err(e) = prom.query(expr) {
            panic!("panel `{title}`: `{expr}` fails: {e}");
        }
    }
    // The rule file loaded, every alert expression evaluates, and every rule is healthy.
    let alerts = alert_exprs();
    assert!(alerts.len() >= 13, "{} alerts", alerts.len());
    for (name, expr) in &alerts {
        if let Err(e) = prom.query(expr) {
            panic!("alert {name}: `{expr}` fails: {e}");
        }
    }
    wait_for(
        || {
            let Some((_, body)) = prom.get("/api/v1/rules") else { return false };
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            let rules: Vec<&Value> = v["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            let bad: Vec<&Value> = rules.iter().copied().filter(|r| r["health"] == "err").collect();
            assert!(bad.is_empty(), "rules failing in Prometheus: {bad:?}");
            rules.len() == alerts.len() && rules.iter().all(|r| r["health"] == "ok")
        },
        "every rule evaluated healthy",
    )
    .await;
    // No alert fires on a healthy mesh, except that nothing is pending or firing about it.
    let firing = prom.query("ALERTS{alertstate=\"firing\"}").unwrap();
    assert!(
        firing.is_empty(),
        "alerts firing on a healthy mesh: {firing:?}\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    drop(prom);
    drop((a1, a2));
    auth.stop().await;
}
