//! Who may use the authority: the admin token operators present on `/v1/*` (read from a file,
//! or generated into the data dir), and constant-time comparison for every secret check
//! (admin token, agent tokens).

use anyhow::Context;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// Shortest admin token accepted, generated or configured.
pub const MIN_TOKEN_LEN: usize = 16;

/// Compares secrets in time independent of where they differ (`subtle`; the length is not
/// secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Reads the admin token, or creates a random one (mode 0600) in the data dir. Either file must
/// hold a token of at least [`MIN_TOKEN_LEN`] characters: a short or empty one (a generated
/// file cut short by a crash, say) is refused, never used.
pub fn admin_token(configured: Option<&Path>, data_dir: &Path) -> anyhow::Result<(String, PathBuf)> {
    if let Some(path) = configured {
        let t = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok((checked(&t, path)?, path.to_owned()));
    }
    let path = data_dir.join("admin.token");
    match std::fs::read_to_string(&path) {
        Ok(t) => return Ok((checked(&t, &path)?, path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    write_private(&path, token.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated admin token");
    Ok((token, path))
}

fn checked(raw: &str, path: &Path) -> anyhow::Result<String> {
    let t = raw.trim();
    anyhow::ensure!(
        t.len() >= MIN_TOKEN_LEN,
        "admin token in {} is shorter than {MIN_TOKEN_LEN} characters (remove the file to have a new one generated)",
        path.display()
    );
    Ok(t.to_owned())
}

/// Writes `data` to `path` whole or not at all: a temp file (mode 0600) in the same directory,
/// fsynced, renamed over `path`, and the directory fsynced, so a crash leaves either no file
/// or the complete token.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".admin.token.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_generated_token_is_written_whole_with_mode_0600_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (t, path) = admin_token(None, dir.path()).expect("generated");
        assert_eq!(t.len(), 64);
        assert_eq!(std::fs::metadata(&path).expect("file").permissions().mode() & 0o777, 0o600);
        assert_eq!(admin_token(None, dir.path()).expect("read back").0, t);
        let leftovers: Vec<_> =
            std::fs::read_dir(dir.path()).expect("dir").flatten().map(|e| e.file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("admin.token")], "no temp file left");
    }

    // Before, an empty admin.token (a crash between create and write) was loaded as the token,
    // and `Authorization: Bearer ` matched it: the admin API open to anyone.
    #[test]
    fn an_empty_or_short_token_file_is_refused_not_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in ["", "\n", "short"] {
            std::fs::write(dir.path().join("admin.token"), bad).expect("write");
            let e = admin_token(None, dir.path()).expect_err("refused");
            assert!(e.to_string().contains("shorter than 16"), "{e}");
            let configured = dir.path().join("configured");
            std::fs::write(&configured, bad).expect("write");
            assert!(admin_token(Some(&configured), dir.path()).is_err());
        }
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }
}
