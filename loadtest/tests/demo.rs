//! The demo a new user runs first: whatever way it is stopped (Ctrl-C, SIGTERM from a process
//! manager, SIGHUP from a closed terminal) it leaves no process and no secret behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests time real processes from outside; the one-clock rule (clippy.toml) is the binaries'.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Children of `pid`, from /proc.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        // Fields after the command name, which is in parentheses and may hold spaces.
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else { continue };
        if rest.split(' ').nth(1).and_then(|pp| pp.parse::<u32>().ok()) == Some(pid) {
            out.push(p);
        }
    }
    out
}

fn stop_demo_with(signal: &str) {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_revmesh-loadtest"))
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(demo.stdout.take().unwrap());
    let (mut dir, mut transcript) = (None, String::new());
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "demo ended early:\n{transcript}");
        transcript.push_str(&line);
        if let Some(d) = line.split("everything lives in ").nth(1) {
            dir = Some(std::path::PathBuf::from(d.trim()));
        }
        if line.contains("The mesh runs until") {
            break;
        }
    }
    assert!(transcript.contains("REVOKED kind=jti"), "{transcript}");
    // The printed commands return on their own (no `nc -U` that waits forever).
    assert!(!transcript.contains("nc -U"), "{transcript}");
    let dir = dir.expect("the demo names its temp dir");
    assert!(dir.join("hs256.secret").is_file());
    let kids = children(demo.id());
    assert_eq!(kids.len(), 4, "an authority and three agents: {kids:?}");

    let sent = Command::new("kill").args([signal, &demo.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while demo.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the demo did not stop on {signal}");
        std::thread::sleep(Duration::from_millis(20));
    }
    for k in kids {
        assert!(
            !std::path::Path::new(&format!("/proc/{k}")).exists(),
            "process {k} outlived the demo ({signal})"
        );
    }
    assert!(!dir.exists(), "{} (secret and admin token) outlived the demo ({signal})", dir.display());
}

#[test]
fn the_demo_cleans_up_on_sigterm() {
    stop_demo_with("-TERM");
}

#[test]
fn the_demo_cleans_up_on_sighup() {
    stop_demo_with("-HUP");
}
