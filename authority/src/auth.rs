//! Who may use the authority: the admin token operators present on `/v1/*` (read from a file,
//! or generated into the data dir), and constant-time comparison for every secret check
//! (admin token, agent tokens).

use anyhow::Context;
use std::path::{Path, PathBuf};

/// Compares secrets in time independent of where they differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the admin token, or creates a random one (mode 0600) in the data dir.
pub fn admin_token(configured: Option<&Path>, data_dir: &Path) -> anyhow::Result<(String, PathBuf)> {
    if let Some(path) = configured {
        let t = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let t = t.trim().to_owned();
        anyhow::ensure!(t.len() >= 16, "admin token in {} is shorter than 16 characters", path.display());
        return Ok((t, path.to_owned()));
    }
    let path = data_dir.join("admin.token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok((t.trim().to_owned(), path));
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    write_private(&path, token.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated admin token");
    Ok((token, path))
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(data)?;
    f.sync_all()
}
