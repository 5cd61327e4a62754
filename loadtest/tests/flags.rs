//! Flags the load generator cannot use are refused with a message, never a panic: a `--rate` of
//! 0 once panicked in `Duration::from_secs_f64(1.0 / rate)`.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests time real processes from outside; the one-clock rule (clippy.toml) is the binaries'.
#![allow(clippy::disallowed_methods)]

use std::process::Command;

#[test]
fn a_rate_that_is_not_positive_and_finite_is_refused_by_name() {
    for rate in ["0", "-1", "nan", "inf", "1e7", "fast"] {
        let out = Command::new(env!("CARGO_BIN_EXE_revmesh-loadtest"))
            .args(["run", "--scenario", "propagation", "--agents", "1", "--revocations", "1"])
            .arg(format!("--rate={rate}"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // A usage error (the binary's exit code for one is 64), not a panic (101).
        assert_eq!(out.status.code(), Some(64), "--rate {rate}: {stderr}");
        assert!(stderr.contains("--rate") && stderr.contains("not a rate"), "--rate {rate}: {stderr}");
        assert!(!stderr.contains("panicked"), "--rate {rate}: {stderr}");
    }
}

/// `--agent-b` names a binary to start half the fleet with: a path that is missing or not an
/// executable file is refused before any process starts, with the path in the message.
#[test]
fn an_agent_b_that_is_not_an_executable_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    let missing = dir.path().join("missing");
    for bad in [&plain, &missing, &dir.path().to_path_buf()] {
        let out = Command::new(env!("CARGO_BIN_EXE_revmesh-loadtest"))
            .args(["run", "--scenario", "receipt", "--agent-procs", "2", "--revocations", "1"])
            .arg("--agent-b")
            .arg(bad)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{}: {stderr}", bad.display());
        assert!(stderr.contains("--agent-b") && stderr.contains(&*bad.to_string_lossy()), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
