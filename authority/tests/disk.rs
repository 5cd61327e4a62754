//! Real filesystem faults under the authority's store: its data dir on a small tmpfs that the
//! test fills and frees (root only; the test unmounts what it mounted). No acknowledged revocation may be lost, refused ones take no seq,
//! `/readyz` follows, and the store recovers without a restart.

use crate::util::{http, wait_for, Authority};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on a temp dir, unmounted on drop.
pub struct Tmpfs {
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "these tests mount a small tmpfs and need root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with one file; returns its path.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        // Whatever is left in smaller pieces too.
        while f.write_all(&[0u8; 512]).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_first_and_recovers_without_a_restart() {
    let fs = Tmpfs::mount("4m");
    let data = fs.path().join("authority");
    let mut a = Authority::start(&data, &["--store-timeout", "2s"]);
    let ready = |a: &Authority| http(&a.admin, "GET", "/readyz", None, b"").0;
    let mut accepted = vec![a.revoke_jti("before")];
    let filler = fs.fill();
    // Revoke until the store refuses: everything answered 201 must be durable.
    let mut refused = false;
    for i in 0..5_000 {
        let body = format!(r#"{{"kind":"jti","jti":"full-{i}","expires_at":4000000000}}"#);
        match a.post("/v1/revocations", &body) {
            (201, v) => accepted.push(v["seq"].as_u64().unwrap()),
            (503, _) => {
                refused = true;
                break;
            }
            (s, v) => panic!("unexpected {s} on a full disk: {v}"),
        }
    }
    assert!(refused, "the store never noticed the full disk");
    wait_for(|| ready(&a) == 503, "/readyz to report the full disk").await;
    std::fs::remove_file(&filler).unwrap();
    let freed = std::time::Instant::now();
    wait_for(|| ready(&a) == 200, "/readyz to recover once space is free").await;
    eprintln!("authority ready again {:?} after space was freed", freed.elapsed());
    let seq = a.revoke_jti("after-full");
    assert_eq!(seq, accepted.last().unwrap() + 1, "a refused revocation took a seq");
    accepted.push(seq);

    // Nothing acknowledged is lost across kill -9.
    a.kill9();
    let b = Authority::start(&data, &[]);
    for s in &accepted {
        assert_eq!(b.get(&format!("/v1/revocations/{s}")).0, 200, "acknowledged seq {s} lost");
    }
    assert_eq!(b.get("/v1/status").1["head"], *accepted.last().unwrap());
}

/// An agent whose disk is full: revocation beats durability. It applies what it receives (and
/// refuses those tokens), keeps its link, acknowledges nothing it could not persist (the receipt
/// shows it pending), says so, and acknowledges everything once space is back, without a
/// restart. A restart afterwards finds everything it acknowledged on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_a_full_disk_enforces_in_memory_and_acks_once_space_is_back() {
    use revmesh_agent::persist::Persist;
    use std::sync::{Arc, Mutex};
    let adir = tempfile::tempdir().unwrap();
    let a = Authority::start(adir.path(), &["--ack-timeout", "200ms"]);
    let fs = Tmpfs::mount("2m");
    let data = fs.path().join("agent");
    let (persist, recovered) = Persist::open(&data, &revmesh_runtime::Clock::system()).unwrap();
    let state = Arc::new(revmesh_agent::state::AgentState::new(
        recovered.set,
        recovered.log_id,
        recovered.applied_seq,
        recovered.heard_ms,
        std::time::Duration::from_secs(30),
        false,
        revmesh_agent::metrics::Metrics::new().unwrap(),
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    let settings = revmesh_agent::link::LinkSettings::new(vec![a.ws_url()], "full-disk".into());
    let task = tokio::spawn(revmesh_agent::link::run(
        settings,
        state.clone(),
        Some(Arc::new(Mutex::new(persist))),
        stop.clone(),
    ));
    let revoked = |jti: &str| {
        matches!(
            state.decide(&revmesh_protocol::TokenRef { jti: Some(jti), ..Default::default() }),
            revmesh_agent::state::Decision::Revoked { .. }
        )
    };
    let first = a.revoke_jti("before-full");
    wait_for(|| state.applied() >= first, "the agent to apply the first revocation").await;

    let filler = fs.fill();
    let resends_before = a.metric("revmesh_authority_resends_total");
    let full_since = std::time::Instant::now();
    // The journal's last page may still take a few records; revoke until one cannot be written.
    let (mut seq, mut jti) = (0, String::new());
    for i in 0..500 {
        jti = format!("during-full-{i}");
        let (status, receipt) = a.post(
            "/v1/revocations?wait=all&timeout_ms=1000",
            &format!(r#"{{"kind":"jti","jti":"{jti}","expires_at":4000000000}}"#),
        );
        assert_eq!(status, 201);
        seq = receipt["seq"].as_u64().unwrap();
        if receipt["pending"] == serde_json::json!(["full-disk"]) {
            break;
        }
        assert_eq!(receipt["acked"], serde_json::json!(["full-disk"]), "{receipt}");
    }
    assert!(!state.persist_ok(), "the agent never found its disk full");
    wait_for(|| revoked(&jti), "the agent to enforce the revocation in memory").await;
    assert!(state.metrics.persist_errors_total.get() >= 1);
    assert!(state.is_connected(), "the link must stay up");
    assert!(a.get("/v1/agents").1[0]["applied_seq"].as_u64() < Some(seq), "acked beyond what is durable");

    std::fs::remove_file(&filler).unwrap();
    let freed = std::time::Instant::now();
    wait_for(|| a.get("/v1/agents").1[0]["applied_seq"] == seq, "the ack once space is back").await;
    let resends = a.metric("revmesh_authority_resends_total") - resends_before;
    eprintln!(
        "agent acked {:?} after space was freed; {resends} resends in {:?} of full disk",
        freed.elapsed(),
        full_since.elapsed()
    );
    assert!(state.persist_ok());
    stop.cancel();
    let _ = task.await;
    // What was acknowledged is on disk.
    let (_, again) = Persist::open(&data, &revmesh_runtime::Clock::system()).unwrap();
    assert!(again.applied_seq >= seq, "restart found {} < acknowledged {seq}", again.applied_seq);
}
