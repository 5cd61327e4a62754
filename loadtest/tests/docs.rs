//! The documentation holds together: every relative link in README.md, ARCHITECTURE.md,
//! PROTOCOL.md and docs/ resolves to a file of the repository, and a link to `#anchor` to a
//! heading of that file (GitHub's slugs). The README stays a front door (at most 300 lines)
//! from which every page can be reached. Every shell block marked `<!-- runnable -->` runs,
//! as written, against a fresh real mesh (an authority with its data dir and admin token where
//! the docs say, and an agent).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests time real processes from outside; the one-clock rule (clippy.toml) is the binaries'.
#![allow(clippy::disallowed_methods)]

mod common;

use common::start_ready;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn pages() -> Vec<PathBuf> {
    let root = repo();
    let mut pages: Vec<PathBuf> =
        ["README.md", "ARCHITECTURE.md", "PROTOCOL.md"].iter().map(|p| root.join(p)).collect();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The text outside fenced code blocks.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            code = !code;
            continue;
        }
        if !code {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped, spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    prose(text).lines().filter(|l| l.starts_with('#')).map(|l| slug(l.trim_start_matches('#'))).collect()
}

/// `(target, anchor)` of every markdown link `[text](target)` that is not a URL.
fn links(text: &str) -> Vec<(String, Option<String>)> {
    let prose = prose(text);
    let mut out = Vec::new();
    let mut rest = prose.as_str();
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = &rest[..end];
        rest = &rest[end..];
        if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((p, a)) => (p.to_owned(), Some(a.to_owned())),
            None => (target.to_owned(), None),
        };
        out.push((path, anchor));
    }
    out
}

#[test]
fn every_relative_link_resolves_to_a_file_and_a_heading() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for (path, anchor) in links(&text) {
            checked += 1;
            let target = if path.is_empty() { page.clone() } else { page.parent().unwrap().join(&path) };
            let name = format!(
                "{} → {path}{}",
                page.display(),
                anchor.as_deref().map(|a| format!("#{a}")).unwrap_or_default()
            );
            if !target.exists() {
                broken.push(format!("{name}: no such file"));
                continue;
            }
            if let Some(a) = anchor {
                let heads = anchors(&std::fs::read_to_string(&target).unwrap_or_default());
                if !heads.contains(&a) {
                    broken.push(format!("{name}: no such heading"));
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} links found: is the link reader broken?");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_is_a_front_door() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(lines <= 300, "README.md has {lines} lines; move detail to docs/");
    // Every page of docs/ is reached from the README by following links.
    let mut reached = vec![repo().join("README.md").canonicalize().unwrap()];
    let mut next = 0;
    while next < reached.len() {
        let page = reached[next].clone();
        next += 1;
        for (path, _) in links(&std::fs::read_to_string(&page).unwrap_or_default()) {
            let Ok(target) = page.parent().unwrap().join(&path).canonicalize() else { continue };
            if target.extension().is_some_and(|e| e == "md") && !reached.contains(&target) {
                reached.push(target);
            }
        }
    }
    for page in pages() {
        let page = page.canonicalize().unwrap();
        assert!(reached.contains(&page), "{} cannot be reached from README.md", page.display());
    }
}

#[test]
fn slugs_follow_github() {
    assert_eq!(slug(" Several authorities on PostgreSQL"), "several-authorities-on-postgresql");
    assert_eq!(
        slug("nginx `auth_request` (and other auth proxies)"),
        "nginx-auth_request-and-other-auth-proxies"
    );
    assert_eq!(
        slug("Envoy and Istio: external authorization over gRPC"),
        "envoy-and-istio-external-authorization-over-grpc"
    );
}

/// The directory of this build's binaries.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_revmesh-loadtest")).parent().unwrap().to_owned()
}

/// `(page, block)` of every shell block marked runnable.
fn runnable_blocks() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for part in text.split("<!-- runnable -->\n").skip(1) {
            let body = part
                .strip_prefix("```sh\n")
                .unwrap_or_else(|| panic!("{}: a runnable mark not before a sh block", page.display()));
            let block = body.split("\n```").next().unwrap().to_owned();
            out.push((page.file_name().unwrap().to_string_lossy().into_owned(), block));
        }
    }
    out
}

/// Each runnable block, on a fresh authority (data dir `revmesh-data/authority`, so its admin
/// token is where the docs read it) and one connected agent: every command must succeed, and
/// every `curl` must get a 2xx (`--fail-with-body`). Only the admin port differs from the
/// defaults the docs show: `REVMESH_ADMIN` for the CLI, the address replaced for `curl`.
#[test]
fn the_runnable_blocks_of_the_docs_run_against_a_real_mesh() {
    let blocks = runnable_blocks();
    assert!(blocks.len() >= 3, "{} runnable blocks", blocks.len());
    for (page, block) in blocks {
        let dir = tempfile::tempdir().unwrap();
        let (_authority, ready) = start_ready(
            &bin_dir().join("revmesh-authority"),
            &[
                "serve",
                "--data-dir",
                "revmesh-data/authority",
                "--agent-listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--log",
                "error",
            ],
            dir.path(),
        );
        let field = |k: &str| ready.split_whitespace().find_map(|w| w.strip_prefix(k)).unwrap().to_owned();
        let (agent_addr, admin) = (field("agent="), field("admin="));
        std::fs::write(dir.path().join("secret"), "docs-secret-0123456789abcdef0123456789").unwrap();
        let (_agent, _) = start_ready(
            &bin_dir().join("revmesh-agent"),
            &[
                "run",
                "--authority",
                &format!("ws://{agent_addr}"),
                "--id",
                "web-1",
                "--data-dir",
                "agent",
                "--socket",
                "agent.sock",
                "--hs256-secret-file",
                "secret",
                "--log",
                "error",
            ],
            dir.path(),
        );
        let script = format!(
            "curl() {{ command curl --fail-with-body --show-error --max-time 30 \"$@\"; }}\n{}",
            block.replace("http://127.0.0.1:7401", &format!("http://{admin}"))
        );
        let path = format!("{}:{}", bin_dir().display(), std::env::var("PATH").unwrap_or_default());
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(dir.path())
            .env("PATH", path)
            .env("REVMESH_ADMIN", format!("http://{admin}"))
            .output()
            .unwrap_or_else(|e| panic!("bash: {e}"));
        assert!(
            out.status.success(),
            "a runnable block of {page} failed ({}):\n{block}\n--- stdout\n{}\n--- stderr\n{}\n(curl missing? `apt-get install curl`, scripts/test installs it)",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The README's short nginx block says nothing the tested snippet (docs/integrations.md, run
/// through a real nginx by `agent/tests/nginx.rs`) does not: every directive of it is there.
#[test]
fn the_readme_proxy_block_is_taken_from_the_tested_snippet() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let tested = std::fs::read_to_string(repo().join("docs/integrations.md")).unwrap();
    let block = readme.split("```nginx\n").nth(1).expect("README has an nginx block");
    let block = block.split("```").next().unwrap();
    let mut directives = 0;
    for line in block.lines() {
        let directive = line.split('#').next().unwrap().trim();
        if directive.is_empty() || directive == "}" {
            continue;
        }
        directives += 1;
        assert!(
            tested.lines().any(|l| l.trim() == directive),
            "README's `{directive}` is not in the tested snippet"
        );
    }
    assert!(directives >= 6, "{directives} directives");
}
