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

/// The machine's PostgreSQL server's address, for a relay in front of it.
fn server_addr() -> std::net::SocketAddr {
    let upstream: postgres::Config = server().parse().unwrap();
    let port = upstream.get_ports().first().copied().unwrap_or(5432);
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// A relay this test controls in front of the server, and the URL of `db` through it.
async fn relayed(db: &Db) -> (crate::relay::Relay, String) {
    let relay = crate::relay::Relay::start(server_addr()).await;
    let url = format!("postgres://postgres@{}/{}", relay.addr, db.name);
    (relay, url)
}

fn rand_u64() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    t ^ (u64::from(std::process::id()) << 32)
}

fn replicas(dir: &std::path::Path, db: &Db, n: usize) -> Vec<Authority> {
    replicas_at(dir, &db.url(), n)
}

/// The admin token every replica of these tests shares.
const SHARED_TOKEN: &str = "shared-admin-token-for-all-replicas";

/// `n` replicas on the database at `url` (directly, or through a relay).
fn replicas_at(dir: &std::path::Path, url: &str, n: usize) -> Vec<Authority> {
    let token = dir.join("admin.token.shared");
    std::fs::write(&token, SHARED_TOKEN).unwrap();
    (0..n)
        .map(|i| {
            let d = dir.join(format!("replica-{i}"));
            Authority::start(&d, &["--store", url, "--admin-token-file", token.to_str().unwrap()])
        })
        .collect()
}

/// Six agents, two homed on each of three replicas with the others as failover, once replica 0
/// sees all six connected.
async fn six_agents(reps: &[Authority], prefix: &str) -> Vec<Agent> {
    let urls: Vec<String> = reps.iter().map(|r| r.ws_url()).collect();
    let agents: Vec<Agent> = (0..6)
        .map(|i| {
            let mut list = urls.clone();
            list.rotate_left(i % 3);
            Agent::start(list, &format!("{prefix}-{i}"))
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
    agents
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_log_and_agents_fail_over_without_resync() {
    let _guard = PG.lock().await;
    let db = Db::new();
    let dir = tempfile::tempdir().unwrap();
    let mut reps = replicas(dir.path(), &db, 3);
    let agents = six_agents(&reps, "ha").await;
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
    // Who stored each entry travels with it: replica 1 names the operator of replica 0's entry,
    // and every replica reads the one audit trail.
    let (_, e) = reps[1].get(&format!("/v1/revocations/{}", accepted[0].0));
    assert_eq!(e["by"], "admin", "{e}");
    let (_, trail) = reps[1].get("/v1/audit?limit=1000");
    assert_eq!(trail["records"].as_array().unwrap().len() as u64, head, "{trail}");
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
    // One record for the one forget (refused ones changed nothing), read from the other replica.
    let (_, trail) = reps[0].get("/v1/audit");
    let forgets: Vec<_> =
        trail["records"].as_array().unwrap().iter().filter(|r| r["action"] == "forget").collect();
    assert_eq!(forgets.len(), 1, "{trail}");
    assert_eq!(
        (forgets[0]["target"].as_str(), forgets[0]["status"].as_u64()),
        (Some("agent homed-on-0"), Some(204))
    );
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
    let (relay, url) = relayed(&db).await;
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

/// A replica cut from PostgreSQL (its connections open, nothing answers) while another replica
/// keeps committing: the agents homed on the cut one never claim to know more than it does.
/// Its heartbeats vouch for the log only as of its last successful read of the store, so an
/// agent's staleness stays honest (it never reads as fresh past a revocation it lacks), and once
/// the store has been unreachable for `--store-timeout` + 1 s the replica sends its agents away
/// (and refuses new links), so they fail over to a replica that can read the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_of_a_replica_cut_from_postgres_stay_honestly_stale_and_fail_over() {
    let _guard = PG.lock().await;
    let db = Db::new();
    let dir = tempfile::tempdir().unwrap();
    let (relay, cut_url) = relayed(&db).await;
    let token = dir.path().join("admin.token.shared");
    std::fs::write(&token, SHARED_TOKEN).unwrap();
    let token = token.to_str().unwrap();
    let common = ["--admin-token-file", token, "--heartbeat", "200ms", "--store-timeout", "1s"];
    let healthy = Authority::start(&dir.path().join("a"), &[&["--store", &db.url()][..], &common].concat());
    let cut = Authority::start(&dir.path().join("b"), &[&["--store", &cut_url][..], &common].concat());
    // Homed on the replica about to be cut, the healthy one as failover.
    let agent = Agent::start(vec![cut.ws_url(), healthy.ws_url()], "homed-on-cut");
    let first = healthy.revoke_jti("before-cut");
    agent.wait_applied(first).await;

    relay.black_hole();
    let revoked_at = std::time::Instant::now();
    let seq = healthy.revoke_jti("while-cut");
    assert!(seq > first);
    // Until the agent has the revocation, what it says it knows must end before the revocation:
    // unless it knows it is behind, now - staleness (the time as of which it claims the log) never passes `revoked_at` by more
    // than the tail's polling interval (500 ms) and a heartbeat.
    let slack = std::time::Duration::from_millis(900);
    let deadline = revoked_at + std::time::Duration::from_secs(30);
    while !agent.revoked("while-cut") {
        assert!(std::time::Instant::now() < deadline, "the agent never failed over to the healthy replica");
        // (An agent that knows it is behind, after a welcome from the healthy replica, answers
        // as stale whatever it last heard.)
        if let Some(stale) = agent.state.staleness().filter(|_| !agent.state.is_behind()) {
            let as_of = std::time::Instant::now() - stale;
            assert!(
                as_of <= revoked_at + slack,
                "the agent claims the log as of {:?} after a revocation it does not have",
                as_of - revoked_at
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // It failed over to the healthy replica and is fresh there.
    wait_for(
        || agent.state.staleness().is_some_and(|s| s < std::time::Duration::from_secs(1)),
        "fresh again",
    )
    .await;
    // The cut replica refuses links while it cannot read the store, and takes them after the heal.
    relay.heal();
    let back = healthy.revoke_jti("after-heal");
    agent.wait_applied(back).await;
    agent.stop().await;
}

/// An agent counts a welcome as heard from now, so a replica welcomes an agent only on a view
/// it has just read from the store: one cut from PostgreSQL welcomes nobody (not even in the
/// seconds before it gives up on the agents it has), and welcomes again once the store answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_from_postgres_welcomes_no_agent() {
    let _guard = PG.lock().await;
    let db = Db::new();
    let dir = tempfile::tempdir().unwrap();
    let (relay, url) = relayed(&db).await;
    let cut = Authority::start(&dir.path().join("b"), &["--store", &url, "--store-timeout", "2s"]);
    relay.black_hole();
    // Time passes, so that its last read is older than a welcome may be (500 ms) but it still
    // keeps links for another two seconds (--store-timeout + 1 s): the agent arrives then.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let agent = Agent::start(vec![cut.ws_url()], "joins-cut");
    // Through --store-timeout + 1 s and beyond, it is never welcomed, so never fresh.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(4);
    while std::time::Instant::now() < until {
        assert!(agent.state.staleness().is_none(), "welcomed by a replica that cannot read its store");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    relay.heal();
    wait_for(|| agent.state.staleness().is_some(), "a welcome once the store answers").await;
    agent.stop().await;
}

/// Concurrent receipts on three replicas with PostgreSQL 5 ms away (through a relay): 64
/// clients revoke with `?wait=all` for 10 s (`REVMESH_PG_LOAD_SECS` to change it). Every answer
/// is 201 with all six agents acked, `/readyz` never answers 503 on the healthy database, and
/// every accepted revocation is in the log once, at its seq. Before the pooled async store,
/// this load got 503s (most after their commit: "agent cursors unavailable; retry") and
/// `/readyz` flapped, as every waiting request re-read every cursor on a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_receipts_on_three_replicas_all_succeed() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let _guard = PG.lock().await;
    let db = Db::new();
    let dir = tempfile::tempdir().unwrap();
    let delay = std::time::Duration::from_millis(5);
    let relay = crate::relay::Relay::start_delayed(server_addr(), delay).await;
    let url = format!("postgres://postgres@{}/{}", relay.addr, db.name);
    let reps = replicas_at(dir.path(), &url, 3);
    let agents = six_agents(&reps, "load").await;

    let secs: u64 = std::env::var("REVMESH_PG_LOAD_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let admins: Vec<String> = reps.iter().map(|r| r.admin.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let not_ready = Arc::new(AtomicUsize::new(0));
    let readiness = {
        let (admins, stop, not_ready) = (admins.clone(), stop.clone(), not_ready.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                for a in &admins {
                    if crate::util::http(a, "GET", "/readyz", None, b"").0 != 200 {
                        not_ready.fetch_add(1, Ordering::AcqRel);
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        })
    };
    // (seq, jti, latency) of each 201; everything else as text.
    let accepted = Arc::new(Mutex::new(Vec::<(u64, String, std::time::Duration)>::new()));
    let refused = Arc::new(Mutex::new(Vec::<String>::new()));
    let started = std::time::Instant::now();
    let deadline = started + std::time::Duration::from_secs(secs);
    let clients: Vec<_> = (0..64)
        .map(|c| {
            let (admin, accepted, refused) = (admins[c % 3].clone(), accepted.clone(), refused.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while std::time::Instant::now() < deadline {
                    let jti = format!("load-{c}-{n}");
                    n += 1;
                    let body = format!(r#"{{"kind":"jti","jti":"{jti}","expires_at":4000000000}}"#);
                    let t0 = std::time::Instant::now();
                    let (status, v) = crate::util::http(
                        &admin,
                        "POST",
                        "/v1/revocations?wait=all&timeout_ms=10000",
                        Some(SHARED_TOKEN),
                        body.as_bytes(),
                    );
                    let took = t0.elapsed();
                    let acked = v["acked"].as_array().map_or(0, Vec::len);
                    match v["seq"].as_u64() {
                        Some(seq) if status == 201 && acked == 6 => {
                            accepted.lock().unwrap().push((seq, jti, took))
                        }
                        _ => refused.lock().unwrap().push(format!("{jti}: {status} {v}")),
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Release);
    readiness.join().unwrap();

    let refused = refused.lock().unwrap().clone();
    let mut accepted = accepted.lock().unwrap().clone();
    let mut lat: Vec<_> = accepted.iter().map(|(_, _, t)| *t).collect();
    lat.sort();
    let p = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "pg receipts: {} accepted in {:.1} s ({:.0}/s), receipt p50 {:?} p99 {:?}; {} refused; /readyz not 200 {} times",
        accepted.len(),
        elapsed.as_secs_f64(),
        accepted.len() as f64 / elapsed.as_secs_f64(),
        p(0.50),
        p(0.99),
        refused.len(),
        not_ready.load(Ordering::Acquire),
    );
    assert!(
        refused.is_empty(),
        "{} of {} refused or without all six acks, e.g. {:?}",
        refused.len(),
        refused.len() + accepted.len(),
        &refused[..refused.len().min(3)]
    );
    assert_eq!(not_ready.load(Ordering::Acquire), 0, "/readyz answered other than 200 on a healthy database");
    assert!(!accepted.is_empty());

    // Every accepted revocation is in the log once, at its seq.
    accepted.sort();
    let mut logged = std::collections::HashMap::new();
    let mut after = 0;
    loop {
        let (status, v) = reps[0].get(&format!("/v1/revocations?after={after}&limit=1000"));
        assert_eq!(status, 200, "{v}");
        let entries = v["entries"].as_array().unwrap();
        if entries.is_empty() {
            break;
        }
        for e in entries {
            let seq = e["seq"].as_u64().unwrap();
            let jti = e["jti"].as_str().unwrap_or_default().to_owned();
            assert!(logged.insert(jti, seq).is_none(), "a jti stored twice");
            after = seq;
        }
    }
    for (seq, jti, _) in &accepted {
        assert_eq!(logged.get(jti), Some(seq), "{jti} not in the log at its seq");
    }
    for a in agents {
        a.stop().await;
    }
}

/// A PostgreSQL log restored from an older `pg_dump` (the documented procedure: `pg_restore`
/// with the replicas stopped, then `revmesh-authority restore --store URL`): the restored log
/// has a new id, and an agent that applied a revocation the dump lacks keeps refusing it while
/// the authority counts it as ahead of the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restored_from_an_older_dump_gets_a_new_log_id_and_lifts_nothing() {
    let _one = PG.lock().await;
    let (db, restored) = (Db::new(), Db::new());
    let dir = tempfile::tempdir().unwrap();
    let mut rep = replicas(dir.path(), &db, 1).remove(0);
    let agent = Agent::start(vec![rep.ws_url()], "pg-agent");
    let kept = rep.revoke_jti("in-the-dump");
    agent.wait_applied(kept).await;
    let dump = dir.path().join("revmesh.dump");
    let run = |program: &str, args: &[&str]| {
        let out = std::process::Command::new(program).args(args).output().unwrap_or_else(|e| {
            panic!("{program} is not installed ({e}): `apt-get install postgresql-client` (scripts/test installs PostgreSQL)")
        });
        assert!(out.status.success(), "{program}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run("pg_dump", &["-Fc", "-f", dump.to_str().unwrap(), &db.url()]);
    let lost = rep.revoke_jti("after-the-dump");
    agent.wait_applied(lost).await;
    let (_, before) = rep.get("/v1/status");
    let agent_addr = rep.agent.clone();
    rep.kill9();

    run("pg_restore", &["--no-owner", "-d", &restored.url(), dump.to_str().unwrap()]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_revmesh-authority"))
        .args(["restore", "--store", &restored.url()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = dir.path().join("admin.token.shared");
    let rep = Authority::start_on(
        &dir.path().join("after-restore"),
        &agent_addr,
        "127.0.0.1:0",
        &["--store", &restored.url(), "--admin-token-file", token.to_str().unwrap()],
    );
    let (_, after) = rep.get("/v1/status");
    assert_eq!(after["head"], 1, "the dump holds one entry: {after}");
    assert_ne!(after["log_id"], before["log_id"], "a restored log has a new id");
    let log = after["log_id"].as_str().unwrap().to_owned();
    wait_for(|| agent.state.log_id().map(|l| l.to_string()) == Some(log.clone()), "the restored log adopted")
        .await;
    assert!(agent.revoked("in-the-dump") && agent.revoked("after-the-dump"), "nothing lifted");
    assert_eq!(rep.metric("revmesh_authority_agents_ahead_of_log"), 1.0);
    let next = rep.revoke_jti("next");
    agent.wait_applied(next).await;
    agent.stop().await;
}

/// Audit records commit with their entries on PostgreSQL too: kill -9 while writers revoke
/// leaves every seq covered by exactly one record (see `operators.rs`).
#[test]
fn audit_records_and_entries_commit_together_under_kill9_postgres() {
    let _one = PG.blocking_lock();
    let db = Db::new();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token.shared");
    std::fs::write(&token, SHARED_TOKEN).unwrap();
    let url = db.url();
    crate::operators::audit_and_entries_survive_kill9_together(
        &dir.path().join("replica"),
        &["--store", &url, "--admin-token-file", token.to_str().unwrap()],
    );
}

/// Shared Signals poll delivery on two replicas: one polls at a time (a lease in the
/// database); kill -9 that one and the other takes over, and every SET is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_polls_for_shared_signals_and_another_takes_over_when_it_dies() {
    let _one = PG.lock().await;
    let db = Db::new();
    let dir = tempfile::tempdir().unwrap();
    let t = crate::ssf::Transmitter::start(dir.path());
    let out = t.register(&["--poll"]);
    let url =
        out.split("poll endpoint ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap().to_owned();
    let token = dir.path().join("admin.token.shared");
    std::fs::write(&token, SHARED_TOKEN).unwrap();
    let mut reps: Vec<Authority> = (0..2)
        .map(|i| {
            let mut args = t.flags();
            let more =
                ["--store", &db.url(), "--admin-token-file", token.to_str().unwrap(), "--ssf-poll", &url];
            args.extend(more.iter().map(|s| s.to_string()));
            args.extend(["--ssf-poll-token-file".to_string(), t.mgmt_token.display().to_string()]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Authority::start(&dir.path().join(format!("replica-{i}")), &args)
        })
        .collect();
    let polling = |r: &Authority| r.get("/v1/ssf/status").1["poll"]["polling"] == true;
    wait_for(|| reps.iter().filter(|r| polling(r)).count() == 1, "one replica polling").await;
    let holder = reps.iter().position(polling).unwrap();
    let disabled = "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
    let acked = |t: &crate::ssf::Transmitter, jti: &str| {
        t.log()["acked"].as_array().unwrap().iter().any(|j| j == jti)
    };
    let first =
        t.emit(disabled, serde_json::json!({}), serde_json::json!({"format": "opaque", "id": "lease-1"}));
    wait_for(|| acked(&t, &first[0]), "the first SET acknowledged").await;
    assert_eq!(reps.iter().filter(|r| polling(r)).count(), 1, "still one poller");

    reps[holder].kill9();
    let other = 1 - holder;
    let died = std::time::Instant::now();
    wait_for(|| polling(&reps[other]), "the other replica to take over the poll").await;
    eprintln!("took over {:?} after the holder died", died.elapsed());
    let second =
        t.emit(disabled, serde_json::json!({}), serde_json::json!({"format": "opaque", "id": "lease-2"}));
    wait_for(|| acked(&t, &second[0]), "the second SET acknowledged by the new poller").await;
    let (_, list) = reps[other].get("/v1/revocations?after=0");
    let subs: Vec<&str> =
        list["entries"].as_array().unwrap().iter().filter_map(|e| e["sub"].as_str()).collect();
    assert_eq!(subs, ["lease-1", "lease-2"], "each stored once: {list}");
}
