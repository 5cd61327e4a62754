//! The packaging in `deploy/`: the systemd units pass `systemd-analyze verify` with no warning
//! and keep their sandbox, and every command line in the units and in the Kubernetes example
//! is one the binaries accept (every flag exists).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests time real processes from outside; the one-clock rule (clippy.toml) is the binaries'.
#![allow(clippy::disallowed_methods)]

mod common;

use common::start_ready;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A workspace binary, built next to this crate's.
fn binary(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_revmesh-loadtest")).parent().unwrap().to_owned();
    let p = dir.join(name);
    assert!(p.is_file(), "{} missing: build the workspace (cargo build --workspace --locked)", p.display());
    p
}

/// Runs `name args… --help`: clap refuses an unknown flag before it prints the help, so exit 0
/// means every flag on the command line exists.
fn flags_exist(name: &str, args: &[String], what: &str) {
    let out = Command::new(binary(name)).args(args).arg("--help").output().unwrap();
    assert!(
        out.status.success(),
        "{what}: `{name} {}` is refused:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_units_verify_cleanly_keep_their_sandbox_and_use_real_flags() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["revmesh-authority", "revmesh-agent"] {
        let text = std::fs::read_to_string(repo().join(format!("deploy/systemd/{name}.service"))).unwrap();
        for directive in [
            "DynamicUser=yes",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "CapabilityBoundingSet=\n",
            &format!("StateDirectory={name}"),
            "RestartPreventExitStatus=64",
        ] {
            assert!(text.contains(directive), "{name}.service lacks `{}`", directive.trim());
        }
        if name == "revmesh-agent" {
            assert!(text.contains("RuntimeDirectory=revmesh") && text.contains("--socket-group"));
        }
        let exec = text.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
        let args: Vec<String> = exec.split_whitespace().skip(1).map(str::to_owned).collect();
        flags_exist(name, &args, &format!("{name}.service"));
        // The unit as installed, with the binary where this build put it.
        let unit = dir.path().join(format!("{name}.service"));
        let installed = format!("/usr/local/bin/{name}");
        std::fs::write(&unit, text.replace(&installed, &binary(name).display().to_string())).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&unit)
            .output()
            .unwrap_or_else(|e| panic!("systemd-analyze is not installed ({e}): `apt-get install systemd` (scripts/test installs it)"));
        let said =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{name}.service: systemd-analyze verify:\n{said}"
        );
    }
}

/// The manifests' documents, parsed by PyYAML.
fn manifest(path: &Path) -> Vec<serde_json::Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "parsing {} failed (PyYAML missing? `pip install pyyaml`, scripts/test installs it):\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Checks every revmesh container's flags against the binaries; returns how many were checked.
fn containers_use_real_flags(docs: &[serde_json::Value]) -> usize {
    let mut checked = 0;
    for d in docs {
        let pod = &d["spec"]["template"]["spec"];
        let containers = pod["containers"].as_array().cloned().unwrap_or_default();
        for c in containers {
            let args: Vec<String> = c["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            let name = match (c["command"][0].as_str(), args.first().map(String::as_str)) {
                (Some("revmesh-agent"), _) => "revmesh-agent",
                (None, Some("serve")) => "revmesh-authority",
                _ => continue,
            };
            flags_exist(name, &args, &format!("container {}", c["name"]));
            checked += 1;
        }
    }
    checked
}

/// The manifests pass a real validator against the Kubernetes API schemas (PyPI
/// `kubernetes-validate`, strict: unknown fields are errors). The prometheus-operator kinds have
/// no schema there and are only parsed.
#[test]
fn the_kubernetes_manifests_validate_against_the_kubernetes_schemas() {
    for name in ["revmesh.yaml", "revmesh-daemonset.yaml"] {
        let path = repo().join("deploy/kubernetes").join(name);
        let out = Command::new("kubernetes-validate").arg("--strict").arg(&path).output().unwrap_or_else(|e| {
            panic!("kubernetes-validate is not installed ({e}): `pip install kubernetes-validate` (scripts/test installs it)")
        });
        let report =
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name} does not validate:\n{report}");
        let validated = report.lines().filter(|l| l.contains(" passed for resource ")).count();
        assert!(validated >= 2, "{name}: {validated} resources validated:\n{report}");
        assert!(!report.contains("ERROR"), "{report}");
    }
}

#[test]
fn the_kubernetes_example_parses_and_its_containers_use_real_flags() {
    let path = repo().join("deploy/kubernetes/revmesh.yaml");
    let docs = manifest(&path);
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in ["StatefulSet", "Deployment", "Service", "ServiceMonitor", "PodMonitor"] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    assert_eq!(containers_use_real_flags(&docs), 2, "the authority and the agent sidecar");
    // The sidecar shares its sockets with the app through one emptyDir.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("--socket=/run/revmesh/agent.sock")
            && text.matches("name: revmesh-sockets").count() >= 3
    );
}

/// The per-node variant: one agent per node, its sockets in a host directory that the node's
/// pods mount, with the sockets' group theirs.
#[test]
fn the_daemonset_example_serves_the_node_over_a_host_socket_with_real_flags() {
    let path = repo().join("deploy/kubernetes/revmesh-daemonset.yaml");
    let docs = manifest(&path);
    let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").expect("a DaemonSet");
    assert_eq!(containers_use_real_flags(&docs), 1, "the node agent");
    let agent_args = ds["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        agent_args.contains("--socket=/run/revmesh/agent.sock")
            && agent_args.contains("--socket-group=65532")
    );
    let host = |d: &serde_json::Value| {
        d["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["hostPath"]["path"] == "/run/revmesh")
    };
    assert!(host(ds), "the agent's sockets live on the host");
    let app = docs.iter().find(|d| d["kind"] == "Deployment").expect("an app");
    assert!(host(app), "the app mounts the node's socket directory");
    assert_eq!(app["spec"]["template"]["spec"]["securityContext"]["supplementalGroups"][0], 65532);
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// The agent's answer to `PING` on its line socket.
fn ping(socket: &Path) -> String {
    use std::io::{BufRead, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream.write_all(b"PING\n").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

/// `scripts/package` builds both Debian packages (from this debug build, to be quick); Debian's
/// own `lintian` finds no error in them; each holds its binary, man page, completions, systemd
/// unit (as the `revmesh` user) and its settings as a conffile; unpacked into a throwaway root,
/// each binary starts from its installed path with its packaged settings and the agent joins
/// the authority. As root (CI), a real `dpkg -i` also creates the `revmesh` system user, and a
/// purge removes what was installed.
#[test]
fn the_debian_packages_pass_lintian_and_run_from_their_installed_paths() {
    run(Command::new(repo().join("scripts/package"))
        .args(["--no-build", "--profile", "dev"])
        .current_dir(repo()));
    let deb =
        |name: &str| repo().join(format!("target/debian/{name}_{}-1_amd64.deb", env!("CARGO_PKG_VERSION")));
    let debs = [deb("revmesh-authority"), deb("revmesh-agent")];
    let lint = Command::new("lintian").args(&debs).output().unwrap_or_else(|e| {
        panic!("lintian is not installed ({e}): `apt-get install lintian` (scripts/test installs it)")
    });
    let report = String::from_utf8_lossy(&lint.stdout).into_owned();
    assert!(!report.lines().any(|l| l.starts_with("E:")), "lintian errors:\n{report}");
    let root = tempfile::tempdir().unwrap();
    for (deb, name, conf) in
        [(&debs[0], "revmesh-authority", "authority"), (&debs[1], "revmesh-agent", "agent")]
    {
        let files = run(Command::new("dpkg-deb").arg("-c").arg(deb));
        for path in [
            format!("./usr/bin/{name}"),
            format!("./usr/share/man/man1/{name}.1.gz"),
            format!("./usr/share/bash-completion/completions/{name}"),
            format!("./usr/share/zsh/vendor-completions/_{name}"),
            format!("./usr/share/fish/vendor_completions.d/{name}.fish"),
            format!("./lib/systemd/system/{name}.service"),
            format!("./etc/revmesh/{conf}.toml"),
        ] {
            assert!(files.contains(&path), "{name}: no {path} in\n{files}");
        }
        let conffiles = run(Command::new("dpkg-deb").arg("--info").arg(deb).arg("conffiles"));
        assert_eq!(conffiles.trim(), format!("/etc/revmesh/{conf}.toml"));
        let postinst = run(Command::new("dpkg-deb").arg("--info").arg(deb).arg("postinst"));
        assert!(postinst.contains("adduser --system --group") && postinst.contains("revmesh"), "{postinst}");
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root.path()));
        let unit =
            std::fs::read_to_string(root.path().join(format!("lib/systemd/system/{name}.service"))).unwrap();
        assert!(
            unit.contains(&format!("ExecStart=/usr/bin/{name} ")) && unit.contains("User=revmesh"),
            "{unit}"
        );
        assert!(!unit.contains("DynamicUser"), "{unit}");
    }
    let r = root.path();
    let state = tempfile::tempdir().unwrap();
    let s = |p: &str| state.path().join(p).display().to_string();
    let authority_conf = r.join("etc/revmesh/authority.toml").display().to_string();
    let (_authority, ready) = start_ready(
        &r.join("usr/bin/revmesh-authority"),
        &[
            "serve",
            "--config",
            &authority_conf,
            "--data-dir",
            &s("authority"),
            "--agent-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        state.path(),
    );
    let agent_addr = ready.split_whitespace().find_map(|w| w.strip_prefix("agent=")).unwrap().to_owned();
    let agent_conf = r.join("etc/revmesh/agent.toml").display().to_string();
    let (_agent, _) = start_ready(
        &r.join("usr/bin/revmesh-agent"),
        &[
            "run",
            "--config",
            &agent_conf,
            "--authority",
            &format!("ws://{agent_addr}"),
            "--data-dir",
            &s("agent"),
            "--socket",
            &s("agent.sock"),
            "--id",
            "packaged",
        ],
        state.path(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let pong = ping(Path::new(&s("agent.sock")));
        if pong.starts_with("PONG ") && !pong.contains("log_id=none") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the packaged agent never joined: {pong}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // As root, the real thing: install, the system user, purge.
    if run(Command::new("id").arg("-u")).trim() == "0" {
        let had_user = Command::new("getent").args(["passwd", "revmesh"]).status().unwrap().success();
        run(Command::new("dpkg").arg("-i").args(&debs));
        let installed = run(Command::new("/usr/bin/revmesh-authority").arg("--version"));
        assert!(installed.contains(env!("CARGO_PKG_VERSION")), "{installed}");
        assert!(
            Command::new("getent").args(["passwd", "revmesh"]).status().unwrap().success(),
            "no revmesh user"
        );
        run(Command::new("dpkg").args(["--purge", "revmesh-agent", "revmesh-authority"]));
        assert!(!Path::new("/usr/bin/revmesh-authority").exists(), "purge left the binary");
        if !had_user {
            run(Command::new("deluser").args(["--system", "--quiet", "revmesh"]));
        }
    }
}
