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
