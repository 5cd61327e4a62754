//! Several replicas on PostgreSQL: throughput and failover.

use super::common::*;
use crate::procs::AuthorityProc;
use crate::util::wait_until;
use revmesh_protocol::RevocationSet;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// Several replicas on PostgreSQL: throughput through one and three replicas, and failover.
#[derive(Debug, Serialize)]
pub struct Ha {
    /// Replicas receiving revocations.
    pub replicas: usize,
    /// Durable revocations per second, 64 clients spread over the replicas.
    pub per_sec: f64,
    /// Commits per revocation.
    pub fsyncs_per_revocation: f64,
}

/// Creates a fresh database on `server` (a `postgres://` URL without database) and returns its URL.
fn create_db(server: &str) -> anyhow::Result<(String, String)> {
    let name = format!("revmesh_lt_{}", std::process::id());
    let admin = format!("{server}/postgres");
    let (drop, create) =
        (format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), format!("CREATE DATABASE {name}"));
    std::thread::spawn(move || -> anyhow::Result<()> {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls)?;
        c.batch_execute(&drop)?;
        c.batch_execute(&create)?;
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("database setup panicked"))??;
    Ok((format!("{server}/{name}"), name))
}

fn drop_db(server: &str, name: &str) {
    let admin = format!("{server}/postgres");
    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    let _ = std::thread::spawn(move || {
        if let Ok(mut c) = postgres::Client::connect(&admin, postgres::NoTls) {
            let _ = c.batch_execute(&sql);
        }
    })
    .join();
}

/// Revocations/s through one and three replicas, then failover of 30 agents off a killed replica.
pub async fn ha(dir: &Path, server: &str, dur: Duration) -> anyhow::Result<(Vec<Ha>, f64)> {
    let (url, name) = create_db(server)?;
    let token = dir.join("ha.token");
    std::fs::write(&token, "loadtest-shared-admin-token-0123456789")?;
    let args = ["--store", url.as_str(), "--admin-token-file", token.to_str().unwrap_or_default()];
    let result = async {
        let mut reps = Vec::new();
        for i in 0..3 {
            reps.push(AuthorityProc::start(&dir.join(format!("ha-{i}")), "127.0.0.1:0", &args)?);
        }
        let mut rows = Vec::new();
        for n in [1, 3] {
            let before = total_commits(&reps).await;
            let count = post_load(&reps[..n], 64, dur).await?.len();
            let per_sec = count as f64 / dur.as_secs_f64();
            let commits = total_commits(&reps).await - before;
            rows.push(Ha { replicas: n, per_sec, fsyncs_per_revocation: commits / count.max(1) as f64 });
        }
        // Failover: 30 agents homed on replica 0, with replicas 1 and 2 as alternatives.
        let urls = vec![reps[0].ws.clone(), reps[1].ws.clone(), reps[2].ws.clone()];
        let mut fleet = Vec::new();
        for i in 0..30 {
            fleet.push(Fleet::spawn(
                urls.clone(),
                &format!("fo-{i}"),
                (RevocationSet::new(), None, 0),
                None,
            )?);
        }
        let (_, status) = call(&reps[0], "GET", "/v1/status".into(), String::new()).await?;
        let head = status["head"].as_u64().unwrap_or(0);
        wait_until(Duration::from_secs(60), || {
            fleet.iter().all(|(s, _, _)| s.applied() >= head && s.is_connected())
        })
        .await?;
        let mut first = reps.remove(0);
        first.proc.kill9();
        let t0 = Instant::now();
        let exp = revmesh_runtime::Clock::system().unix_secs() + 3600;
        let (st, v) = call(
            &reps[0],
            "POST",
            "/v1/revocations".into(),
            format!(r#"{{"kind":"jti","jti":"failover","expires_at":{exp}}}"#),
        )
        .await?;
        anyhow::ensure!(st == 201, "{v}");
        let seq = v["seq"].as_u64().unwrap_or(u64::MAX);
        wait_until(Duration::from_secs(60), || fleet.iter().all(|(s, _, _)| s.applied() >= seq)).await?;
        let failover = t0.elapsed().as_secs_f64();
        for (_, s, t) in fleet {
            s.cancel();
            let _ = t.await;
        }
        anyhow::Ok((rows, failover))
    }
    .await;
    drop_db(server, &name);
    result
}

async fn total_commits(reps: &[AuthorityProc]) -> f64 {
    let mut total = 0.0;
    for r in reps {
        if let Ok((_, v)) = call(r, "GET", "/metrics".into(), String::new()).await {
            total += metric(v.as_str().unwrap_or(""), "revmesh_authority_store_commits_total");
        }
    }
    total
}
