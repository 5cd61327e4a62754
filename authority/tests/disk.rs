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

/// An ext4 file system in an image file on a loop device, mounted `errors=remount-ro` as
/// distributions mount their disks, so an I/O error turns it read-only the way the kernel does.
/// Unmounted on drop.
pub struct Ext4 {
    dir: tempfile::TempDir,
}

impl Ext4 {
    pub fn mount() -> Ext4 {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        std::fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
        run("mkfs.ext4", &["-q", img.to_str().unwrap()], "apt-get install e2fsprogs");
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        let e = Ext4 { dir };
        e.attach();
        e
    }

    fn img(&self) -> PathBuf {
        self.dir.path().join("img")
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn attach(&self) {
        let (img, mnt) = (self.img(), self.path());
        let opts = ["-o", "loop,errors=remount-ro", img.to_str().unwrap(), mnt.to_str().unwrap()];
        run("mount", &opts, "run the tests as root (CI does): they mount an ext4 image on a loop device");
    }

    /// What the kernel does on an I/O error under `errors=remount-ro`: record the error and
    /// refuse every later write with EROFS (ext4's own error path, through its sysfs trigger).
    pub fn fail(&self) {
        // What was written before the error has reached its home on the disk, as on a volume
        // that served a while before failing. Without this, the error (which aborts ext4's
        // journal) can strike before freshly created files leave the journal, and e2fsck then
        // drops them: the data dir comes back empty, which no program can prevent.
        run("sync", &["-f", self.path().to_str().unwrap()], "apt-get install coreutils");
        let out = Command::new("findmnt").args(["-no", "SOURCE"]).arg(self.path()).output().unwrap();
        let dev = String::from_utf8_lossy(&out.stdout).trim().trim_start_matches("/dev/").to_string();
        assert!(dev.starts_with("loop"), "not mounted from a loop device: {dev:?}");
        std::fs::write(format!("/sys/fs/ext4/{dev}/trigger_fs_error"), "revmesh test: simulated I/O error")
            .unwrap();
    }

    /// Detaches the file system from its mount point (`umount -l`: the authority still holds it
    /// open). The kernel releases it, and the loop device, once its last file is closed.
    pub fn detach(&self) {
        run("umount", &["-l", self.path().to_str().unwrap()], "apt-get install mount");
    }

    /// True while a loop device still holds the image (a process still has a file open on it).
    pub fn held(&self) -> bool {
        let out = Command::new("losetup").arg("-j").arg(self.img()).output().unwrap();
        !out.stdout.is_empty()
    }

    /// What an operator does next: check the file system and mount it again.
    pub fn repair_and_remount(&self) {
        let out = Command::new("e2fsck").arg("-fy").arg(self.img()).output().unwrap();
        // 0: clean, 1: errors corrected.
        assert!(matches!(out.status.code(), Some(0 | 1)), "e2fsck: {}", String::from_utf8_lossy(&out.stdout));
        self.attach();
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

fn run(program: &str, args: &[&str], install: &str) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); {install}"));
    assert!(out.status.success(), "{program} {args:?}: {}; {install}", String::from_utf8_lossy(&out.stderr));
}

/// Revokes until the store refuses (503); returns the seqs answered 201, each of which must be
/// durable. `reason` pads each revocation (to fill a volume sooner).
fn revoke_until_refused(a: &Authority, reason: &str, what: &str) -> Vec<u64> {
    let mut accepted = Vec::new();
    for i in 0..20_000 {
        let body =
            format!(r#"{{"kind":"jti","jti":"full-{i}","expires_at":4000000000,"reason":"{reason}"}}"#);
        match a.post("/v1/revocations", &body) {
            (201, v) => accepted.push(v["seq"].as_u64().unwrap()),
            (503, _) => return accepted,
            (s, v) => panic!("unexpected {s} on {what}: {v}"),
        }
    }
    panic!("the store never noticed {what}");
}

/// Every seq in `accepted` is stored.
fn assert_all_stored(a: &Authority, accepted: &[u64]) {
    for s in accepted {
        assert_eq!(a.get(&format!("/v1/revocations/{s}")).0, 200, "acknowledged seq {s} lost");
    }
}

/// After a recovery: a new revocation takes the next seq (a refused one took none), and after a
/// kill -9 and a restart on `data` every accepted revocation is still there.
fn next_seq_and_nothing_lost_across_kill9(mut a: Authority, data: &Path, mut accepted: Vec<u64>) {
    let seq = a.revoke_jti("after-recovery");
    assert_eq!(seq, accepted.last().unwrap() + 1, "a refused revocation took a seq");
    accepted.push(seq);
    a.kill9();
    let b = Authority::start(data, &[]);
    assert_all_stored(&b, &accepted);
    assert_eq!(b.get("/v1/status").1["head"], seq);
}

/// The kernel turns the data dir's file system read-only after an I/O error (EROFS on every
/// write). The authority refuses, reports not ready, closes its file so the volume can be
/// released, never creates a new log while the volume is away, and takes revocations again
/// once the operator has checked and remounted it, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_remount_refuses_then_recovers_once_remounted() {
    let fs = Ext4::mount();
    // The data dir is the mount point itself, as a dedicated volume is mounted.
    let data = fs.path();
    let a = Authority::start(&data, &["--store-timeout", "2s"]);
    let ready = |a: &Authority| http(&a.admin, "GET", "/readyz", None, b"").0;
    let accepted = vec![a.revoke_jti("before"), a.revoke_jti("before-2")];
    fs.fail();
    let body = r#"{"kind":"jti","jti":"read-only","expires_at":4000000000}"#;
    let (status, v) = a.post("/v1/revocations", body);
    assert_eq!(status, 503, "a revocation on a read-only file system must be refused: {v}");
    wait_for(|| ready(&a) == 503, "/readyz to report the read-only store").await;

    fs.detach();
    wait_for(|| !fs.held(), "the authority to close its log so the file system is released").await;
    // Still not ready, and nothing was created on the bare mount point meanwhile.
    assert_eq!(ready(&a), 503);
    assert!(std::fs::read_dir(&data).unwrap().next().is_none(), "a log appeared on the unmounted path");

    fs.repair_and_remount();
    let remounted = std::time::Instant::now();
    wait_for(|| ready(&a) == 200, "/readyz to recover once the volume is back").await;
    eprintln!("authority ready again {:?} after the remount", remounted.elapsed());
    next_seq_and_nothing_lost_across_kill9(a, &data, accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_first_and_recovers_without_a_restart() {
    let fs = Tmpfs::mount("4m");
    let data = fs.path().join("authority");
    let a = Authority::start(&data, &["--store-timeout", "2s"]);
    let ready = |a: &Authority| http(&a.admin, "GET", "/readyz", None, b"").0;
    let mut accepted = vec![a.revoke_jti("before")];
    let filler = fs.fill();
    accepted.extend(revoke_until_refused(&a, "", "a full disk"));
    wait_for(|| ready(&a) == 503, "/readyz to report the full disk").await;
    std::fs::remove_file(&filler).unwrap();
    let freed = std::time::Instant::now();
    wait_for(|| ready(&a) == 200, "/readyz to recover once space is free").await;
    eprintln!("authority ready again {:?} after space was freed", freed.elapsed());
    next_seq_and_nothing_lost_across_kill9(a, &data, accepted);
}

/// An agent with its own data dir, linked to `a`, run in this process so the test can read its
/// state.
struct DiskAgent {
    state: std::sync::Arc<revmesh_agent::state::AgentState>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl DiskAgent {
    fn start(a: &Authority, data: &Path, id: &str) -> DiskAgent {
        use revmesh_agent::persist::Persist;
        use std::sync::{Arc, Mutex};
        let (persist, recovered) = Persist::open(data, &revmesh_runtime::Clock::system()).unwrap();
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
        let settings = revmesh_agent::link::LinkSettings::new(vec![a.ws_url()], id.into());
        let task = tokio::spawn(revmesh_agent::link::run(
            settings,
            state.clone(),
            Some(Arc::new(Mutex::new(persist))),
            stop.clone(),
        ));
        DiskAgent { state, stop, task }
    }

    /// An agent with its data dir on a fresh 2 MB tmpfs, once it has applied a first revocation.
    async fn in_sync_on_tmpfs(a: &Authority, id: &str) -> (Tmpfs, std::path::PathBuf, DiskAgent) {
        let fs = Tmpfs::mount("2m");
        let data = fs.path().join("agent");
        let agent = DiskAgent::start(a, &data, id);
        let first = a.revoke_jti("before-full");
        wait_for(|| agent.state.applied() >= first, "the agent to apply the first revocation").await;
        (fs, data, agent)
    }

    fn revoked(&self, jti: &str) -> bool {
        matches!(
            self.state.decide(&revmesh_protocol::TokenRef { jti: Some(jti), ..Default::default() }),
            revmesh_agent::state::Decision::Revoked { .. }
        )
    }

    /// Stops the agent and opens its data dir again: what a restart would find.
    async fn restart_finds(self, data: &Path) -> revmesh_agent::persist::Recovered {
        self.stop.cancel();
        let _ = self.task.await;
        reopen(data)
    }
}

/// Opens an agent's data dir that its last owner in this process has just closed: what a
/// restart would find. Another test's child process may still hold a copy of the lock's file
/// descriptor, taken when it forked and kept until it runs its program; that lock is released
/// within moments, so a lock held by someone else is waited for, up to 10 s.
fn reopen(data: &Path) -> revmesh_agent::persist::Recovered {
    use revmesh_agent::persist::{Persist, PersistError};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Persist::open(data, &revmesh_runtime::Clock::system()) {
            Ok((_, recovered)) => return recovered,
            Err(PersistError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::WouldBlock
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("{}: {e}", data.display()),
        }
    }
}

/// Revokes in arrays of 500 with a receipt until one shows `id` pending (its journal write
/// failed; the journal's preallocated room takes a few arrays first); returns that receipt's
/// last seq and jti. Every receipt before it must show `id` acknowledged.
fn revoke_until_pending(a: &Authority, id: &str) -> (u64, String) {
    for round in 0..100 {
        let jtis: Vec<String> = (0..500).map(|i| format!("during-fault-{round}-{i}")).collect();
        let body: Vec<serde_json::Value> = jtis
            .iter()
            .map(|j| serde_json::json!({"kind": "jti", "jti": j, "expires_at": 4000000000u64}))
            .collect();
        let (status, receipt) =
            a.post("/v1/revocations?wait=all&timeout_ms=1000", &serde_json::Value::from(body).to_string());
        assert_eq!(status, 201, "{receipt}");
        let seq = receipt["last_seq"].as_u64().unwrap();
        if receipt["pending"] == serde_json::json!([id]) {
            return (seq, jtis[499].clone());
        }
        assert_eq!(receipt["acked"], serde_json::json!([id]), "{receipt}");
    }
    panic!("the agent acknowledged 50,000 revocations it could not have written");
}

/// An agent whose disk is full: revocation beats durability. It applies what it receives (and
/// refuses those tokens), keeps its link, acknowledges nothing it could not persist (the receipt
/// shows it pending), says so, and acknowledges everything once space is back, without a
/// restart. A restart afterwards finds everything it acknowledged on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_a_full_disk_enforces_in_memory_and_acks_once_space_is_back() {
    let adir = tempfile::tempdir().unwrap();
    let a = Authority::start(adir.path(), &["--ack-timeout", "200ms"]);
    let (fs, data, agent) = DiskAgent::in_sync_on_tmpfs(&a, "full-disk").await;

    let filler = fs.fill();
    let resends_before = a.metric("revmesh_authority_resends_total");
    let full_since = std::time::Instant::now();
    // The journal's last page may still take a few records; revoke until one cannot be written.
    let (seq, jti) = revoke_until_pending(&a, "full-disk");
    assert!(!agent.state.persist_ok(), "the agent never found its disk full");
    wait_for(|| agent.revoked(&jti), "the agent to enforce the revocation in memory").await;
    assert!(agent.state.metrics.persist_errors_total.get() >= 1);
    assert!(agent.state.is_connected(), "the link must stay up");
    assert!(a.get("/v1/agents").1[0]["applied_seq"].as_u64() < Some(seq), "acked beyond what is durable");

    // A receipt at the applied level does not wait for the disk: the agent reports from memory,
    // while its durable cursor stays where it was.
    let body = serde_json::json!({"kind": "jti", "jti": "applied-while-full", "expires_at": 4000000000u64});
    let (status, r) = a.post("/v1/revocations?wait=applied&timeout_ms=5000", &body.to_string());
    assert_eq!(status, 201, "{r}");
    assert_eq!(
        (&r["level"], &r["acked"]),
        (&serde_json::json!("applied"), &serde_json::json!(["full-disk"])),
        "{r}"
    );
    let seq = r["seq"].as_u64().unwrap();
    assert!(agent.revoked("applied-while-full"));
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
    assert!(agent.state.persist_ok());
    let again = agent.restart_finds(&data).await;
    assert!(again.applied_seq >= seq, "restart found {} < acknowledged {seq}", again.applied_seq);
}

/// The hello of a reconnecting agent is an acknowledgement too: the authority resumes from it
/// and counts it in durable receipts. An agent holding revocations it could not write (a full
/// disk) must present only what is on its disk, so that no receipt says durable for what a
/// kill -9 would lose; it still refuses those tokens, and acknowledges them once written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_agent_claims_only_what_is_on_its_disk() {
    let adir = tempfile::tempdir().unwrap();
    let mut a = Authority::start(adir.path(), &["--ack-timeout", "200ms"]);
    let (fs, data, agent) = DiskAgent::in_sync_on_tmpfs(&a, "reconnecting").await;
    let filler = fs.fill();
    let (seq, jti) = revoke_until_pending(&a, "reconnecting");

    // The link drops (here: the authority restarts on the same addresses) and comes back.
    let (agent_addr, admin_addr) = (a.agent.clone(), a.admin.clone());
    a.kill9();
    let a = Authority::start_on(adir.path(), &agent_addr, &admin_addr, &["--ack-timeout", "200ms"]);
    wait_for(|| a.metric("revmesh_authority_agents_connected") == 1.0, "the agent to reconnect").await;
    assert!(agent.revoked(&jti), "the agent must still refuse what it could not write");
    let durable = a.get("/v1/agents").1[0]["applied_seq"].as_u64();
    assert!(
        durable < Some(seq),
        "after reconnecting the agent claimed {durable:?}, unwritten seq {seq} included"
    );

    std::fs::remove_file(&filler).unwrap();
    wait_for(|| a.get("/v1/agents").1[0]["applied_seq"] == seq, "the ack once space is back").await;
    let again = agent.restart_finds(&data).await;
    assert!(again.applied_seq >= seq, "restart found {} < acknowledged {seq}", again.applied_seq);
}

/// The agent's data dir turns read-only after an I/O error. It enforces in memory, acknowledges
/// nothing it could not write, closes its files so the volume can be checked and remounted,
/// writes nothing on the bare mount point meanwhile, and acknowledges everything once the
/// volume is back, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_a_read_only_remount_enforces_in_memory_and_acks_once_remounted() {
    let adir = tempfile::tempdir().unwrap();
    let a = Authority::start(adir.path(), &["--ack-timeout", "200ms"]);
    let fs = Ext4::mount();
    let data = fs.path();
    let agent = DiskAgent::start(&a, &data, "read-only");
    let first = a.revoke_jti("before-read-only");
    wait_for(|| agent.state.applied() >= first, "the agent to apply the first revocation").await;

    fs.fail();
    let (seq, jti) = revoke_until_pending(&a, "read-only");
    assert!(!agent.state.persist_ok(), "the agent never found its disk read-only");
    wait_for(|| agent.revoked(&jti), "the agent to enforce the revocation in memory").await;
    assert!(agent.state.is_connected(), "the link must stay up");

    fs.detach();
    wait_for(|| !fs.held(), "the agent to close its files so the file system is released").await;
    assert!(agent.revoked(&jti), "still enforced with no disk at all");
    assert!(std::fs::read_dir(&data).unwrap().next().is_none(), "the agent wrote on the unmounted path");
    assert!(a.get("/v1/agents").1[0]["applied_seq"].as_u64() < Some(seq), "acked beyond what is durable");

    fs.repair_and_remount();
    let remounted = std::time::Instant::now();
    wait_for(|| a.get("/v1/agents").1[0]["applied_seq"] == seq, "the ack once the volume is back").await;
    eprintln!("agent acked {:?} after the remount", remounted.elapsed());
    assert!(agent.state.persist_ok());
    let again = agent.restart_finds(&data).await;
    assert!(again.applied_seq >= seq, "restart found {} < acknowledged {seq}", again.applied_seq);
    assert!(again.set.len() >= 2, "the revocations are on disk");
}

/// A throwaway PostgreSQL cluster whose data directory is on its own small tmpfs; the machine's
/// own PostgreSQL is never touched.
struct PgCluster {
    pg: revmesh_testkit::pg::Cluster,
    fs: Tmpfs,
}

impl PgCluster {
    fn start(size: &str) -> PgCluster {
        let fs = Tmpfs::mount(size);
        let pg = revmesh_testkit::pg::Cluster::start(fs.path()).unwrap_or_else(|e| panic!("{e}"));
        PgCluster { pg, fs }
    }
}

/// PostgreSQL's volume fills up under the authority: revocations get 503 (never 201 for one
/// that is not durable), `/readyz` turns 503, and once space is back (and PostgreSQL is
/// running again, if it stopped itself) the authority takes revocations again by itself, with
/// every acknowledged revocation still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_postgres_volume_refuses_then_recovers() {
    let pg = tokio::task::spawn_blocking(|| PgCluster::start("160m")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::start(&dir.path().join("r"), &["--store", &pg.pg.url(), "--store-timeout", "2s"]);
    let ready = |a: &Authority| http(&a.admin, "GET", "/readyz", None, b"").0;
    let mut accepted = vec![a.revoke_jti("before")];
    let filler = pg.fs.fill();
    accepted.extend(revoke_until_refused(&a, &"x".repeat(400), "a full PostgreSQL volume"));
    wait_for(|| ready(&a) == 503, "/readyz to report the full volume").await;
    eprintln!("refused after {} accepted; PostgreSQL running: {}", accepted.len(), pg.pg.running());

    std::fs::remove_file(&filler).unwrap();
    let freed = std::time::Instant::now();
    if !pg.pg.running() {
        // What its service manager does: start it again (crash recovery replays the WAL).
        tokio::task::block_in_place(|| pg.pg.pg_ctl_start()).unwrap();
    }
    wait_for(|| ready(&a) == 200, "/readyz to recover once space is back").await;
    eprintln!("authority ready again {:?} after space was freed", freed.elapsed());
    let seq = a.revoke_jti("after-full");
    assert_eq!(seq, accepted.last().unwrap() + 1, "a refused revocation took a seq");
    accepted.push(seq);
    assert_all_stored(&a, &accepted);
}

/// A journal that cannot grow by its usual step on a nearly full disk still takes a record that
/// fits: the step of zeros is room, not a requirement.
#[test]
fn a_nearly_full_disk_still_takes_journal_records_that_fit() {
    use revmesh_agent::persist::Persist;
    use revmesh_protocol::{Entry, LogId, Revocation};
    let fs = Tmpfs::mount("1m");
    let data = fs.path().join("agent");
    let (mut p, _) = Persist::open(&data, &revmesh_runtime::Clock::system()).unwrap();
    let filler = fs.fill();
    // Leave 16 KiB: less than the journal's step, more than a record.
    let len = std::fs::metadata(&filler).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&filler).unwrap().set_len(len - (16 << 10)).unwrap();
    let entry = Entry {
        seq: 1,
        created_at_ms: 1,
        expires_at: 4_000_000_000,
        reason: None,
        revocation: Revocation::Jti { jti: "nearly-full".into(), iss: None },
    };
    p.append(LogId([9; 16]), 1, 1, &[entry]).expect("a record that fits must be written");
    drop(p);
    let rec = reopen(&data);
    assert_eq!(rec.applied_seq, 1);
    assert!(rec.warnings.is_empty(), "{:?}", rec.warnings);
}
