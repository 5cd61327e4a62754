//! What several of this crate's test files share: starting a workspace binary and waiting for
//! its ready line.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A started process, killed (and reaped) on drop.
pub struct Started(pub Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bin` with `args` in `dir` and returns it with its ready line (its first line of output).
pub fn start_ready(bin: &Path, args: &[&str], dir: &Path) -> (Started, String) {
    let mut child = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains(" ready "), "{} did not start: {line:?}", bin.display());
    (Started(child), line)
}
