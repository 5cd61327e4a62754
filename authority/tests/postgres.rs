//! Several authority replicas on one PostgreSQL log (issue: high availability). These tests need
//! a PostgreSQL server: `REVMESH_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`,
//! trust auth as on the CI machines; `.ci/run` starts one). Each test uses a fresh database.

use crate::util::{wait_for, Agent, Authority};
use std::collections::HashSet;

/// These tests run one at a time (each starts several replicas).
static PG: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs a synchronous PostgreSQL admin statement off the async runtime.
fn admin_sql(sql: String) -> Result<(), String> {
    std::thread::spawn(move || {
        let mut c =
            postgres::Client::connect(&format!("{}/postgres", server()), postgres::NoTls).map_err(|e| {
                format!("PostgreSQL must be reachable for these tests (REVMESH_TEST_POSTGRES): {e}")
            })?;
        c.batch_execute(&sql).map_err(|e| e.to_string())
    })
    .join()
    .unwrap_or_else(|_| Err("admin thread panicked".into()))
}

fn server() -> String {
    std::env::var("REVMESH_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A fresh database, dropped on drop.
struct Db {
    name: String,
}

impl Db {
    fn new() -> Db {
        let name = format!("revmesh_t_{:016x}", rand_u64());
        admin_sql(format!("CREATE DATABASE {name}")).unwrap();
        Db { name }
    }
    fn url(&self) -> String {
        format!("{}/{}", server(), self.name)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = admin_sql(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

fn rand_u64() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    t ^ (u64::from(std::process::id()) << 32)
}

fn replicas(dir: &std::path::Path, db: &Db, n: usize) -> Vec<Authority> {
    let token = dir.join("admin.token.shared");
    std::fs::write(&token, "shared-admin-token-for-all-replicas").unwrap();
    let url = db.url();
    (0..n)
        .map(|i| {
            let d = dir.join(format!("replica-{i}"));
            Authority::start(&d, &["--store", &url, "--admin-token-file", token.to_str().unwrap()])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_log_and_agents_fail_over_without_resync() {
    let _guard = PG.lock().await;
    let db = Db::new();
    let dir = tempfile::tempdir().unwrap();
    let mut reps = replicas(dir.path(), &db, 3);
    let urls: Vec<String> = reps.iter().map(|r| r.ws_url()).collect();
    // Six agents, two homed on each replica, each with the others as failover.
    let agents: Vec<Agent> = (0..6)
        .map(|i| {
            let mut list = urls.clone();
            list.rotate_left(i % 3);
            Agent::start(list, &format!("ha-{i}"))
        })
        .collect();
    wait_for(
        || {
            let (_, v) = reps[0].get("/v1/agents");
            v.as_array().is_some_and(|a| a.iter().filter(|x| x["connected"] == true).count() == 6)
        },
        "six agents visible from replica 0",
    )
    .await;
    let log_ids: HashSet<String> =
        reps.iter().map(|r| r.get("/v1/status").1["log_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(log_ids.len(), 1, "replicas must share one log id");

    // Concurrent revocations on all three replicas; replica 2 is killed midway.
    let mut accepted: Vec<(u64, String)> = Vec::new();
    for round in 0..60 {
        for (r, rep) in reps.iter().enumerate() {
            if r == 2 && round >= 30 {
                continue;
            }
            let jti = format!("ha-{r}-{round}");
            let (status, v) = rep.post(
                "/v1/revocations",
                &format!(r#"{{"kind":"jti","jti":"{jti}","expires_at":4000000000}}"#),
            );
            assert_eq!(status, 201, "{v}");
            accepted.push((v["seq"].as_u64().unwrap(), jti));
        }
        if round == 30 {
            reps[2].kill9();
        }
    }
    let seqs: HashSet<u64> = accepted.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs.len(), accepted.len(), "a seq was handed out twice");
    let head = accepted.len() as u64;
    assert_eq!(seqs, (1..=head).collect::<HashSet<u64>>(), "seqs must be gap-free");
    for a in &agents {
        a.wait_applied(head).await;
    }
    let log_id = log_ids.into_iter().next().unwrap();
    for (i, a) in agents.iter().enumerate() {
        assert_eq!(
            a.state.log_id().map(|l| l.to_string()).as_deref(),
            Some(log_id.as_str()),
            "agent {i} resynced"
        );
        for (seq, jti) in &accepted {
            assert!(
                matches!(
                    a.state.decide(&revmesh_protocol::TokenRef { jti: Some(jti), ..Default::default() }),
                    revmesh_agent::state::Decision::Revoked { seq: s, .. } if s == *seq
                ),
                "agent {i} lacks {jti} (seq {seq})"
            );
        }
        assert_eq!(a.state.duplicates(), 0);
    }
    // A receipt from one replica covers the agents of the others.
    let (status, receipt) = reps[1]
        .post("/v1/revocations?wait=all&timeout_ms=15000", r#"{"kind":"session","sid":"after-failover"}"#);
    assert_eq!(status, 201);
    assert_eq!(receipt["acked"].as_array().unwrap().len(), 6, "{receipt}");
    for a in agents {
        a.stop().await;
    }
}

/// `/v1/status` and forgetting departed agents cover every replica's agents, not only the
/// replica asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_forget_cover_every_replica() {
    let _guard = PG.lock().await;
    let db = Db::new();
    let dir = tempfile::tempdir().unwrap();
    let reps = replicas(dir.path(), &db, 2);
    let agent = Agent::start(vec![reps[0].ws_url()], "homed-on-0");
    agent.wait_applied(reps[0].revoke_jti("s")).await;
    wait_for(|| reps[1].get("/v1/status").1["agents_connected"] == 1, "replica 1 to count the agent").await;
    let delete =
        |r: &Authority| crate::util::http(&r.admin, "DELETE", "/v1/agents/homed-on-0", Some(&r.token), b"");
    assert_eq!(delete(&reps[1]).0, 409, "a connected agent cannot be forgotten");
    agent.stop().await;
    wait_for(
        || reps[1].get("/v1/agents").1.as_array().is_some_and(|a| a.iter().all(|x| x["connected"] == false)),
        "replica 1 to see the agent gone",
    )
    .await;
    assert_eq!(delete(&reps[1]).0, 204);
    assert_eq!(reps[1].get("/v1/agents").1, serde_json::json!([]));
    assert_eq!(reps[1].get("/v1/status").1["agents_known"], 0);
    assert_eq!(delete(&reps[1]).0, 404);
}

/// A partition between one replica and PostgreSQL (connections open, nothing answers): every
/// revocation gets 503 within `--store-timeout` and never 201, `/readyz` turns 503, and once the
/// partition heals the replica recovers by itself, with no seq taken by a refused revocation.
/// The partition is a relay this test controls; the machine's PostgreSQL is never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_from_postgres_refuses_revocations_in_time_and_recovers() {
    let _guard = PG.lock().await;
    let db = Db::new();
    let dir = tempfile::tempdir().unwrap();
    let upstream: postgres::Config = server().parse().unwrap();
    let port = upstream.get_ports().first().copied().unwrap_or(5432);
    let relay = crate::relay::Relay::start(std::net::SocketAddr::from(([127, 0, 0, 1], port))).await;
    let url = format!("postgres://postgres@{}/{}", relay.addr, db.name);
    let rep = Authority::start(&dir.path().join("r"), &["--store", &url, "--store-timeout", "1s"]);
    let agent = Agent::start(vec![rep.ws_url()], "partition");
    let first = rep.revoke_jti("before-partition");
    agent.wait_applied(first).await;
    let ready = || crate::util::http(&rep.admin, "GET", "/readyz", None, b"").0;
    assert_eq!(ready(), 200);

    relay.black_hole();
    for i in 0..4 {
        let body = format!(r#"{{"kind":"jti","jti":"during-{i}","expires_at":4000000000}}"#);
        let (status, v) = rep.post("/v1/revocations", &body);
        assert_eq!(status, 503, "a revocation during the partition must be refused, not {status}: {v}");
    }
    wait_for(|| ready() == 503, "/readyz to report the unreachable store").await;
    // The agent keeps answering from its set meanwhile.
    assert!(agent.revoked("before-partition"));

    relay.heal();
    wait_for(|| ready() == 200, "/readyz to recover once the partition heals").await;
    let (status, v) =
        rep.post("/v1/revocations", r#"{"kind":"jti","jti":"after-partition","expires_at":4000000000}"#);
    assert_eq!(status, 201, "{v}");
    let seq = v["seq"].as_u64().unwrap();
    assert_eq!(seq, first + 1, "refused revocations must not have taken seqs");
    agent.wait_applied(seq).await;
    assert!(agent.revoked("after-partition"));
    agent.stop().await;
}
