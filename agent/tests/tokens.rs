//! Tokens minted by PyJWT (`mint_tokens.py`): valid ones verify, each hostile one is refused
//! with its documented reason.

use revmesh_agent::jwt::{KeyFiles, Rules};
use std::path::PathBuf;

#[test]
fn tokens_from_an_independent_implementation_get_the_right_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mint_tokens.py");
    let out = std::process::Command::new("python3").arg(&script).arg(dir.path()).output().expect("python3");
    assert!(
        out.status.success(),
        "minting failed (is PyJWT installed? scripts/test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = |n: &str| dir.path().join(n);
    let all = KeyFiles {
        hmac_secret: Some(f("hs.secret")),
        public_keys: vec![f("rsa.pem"), f("ec.pem"), f("ec384.pem"), f("ed.pem")],
        jwks: Some(f("jwks.json")),
    }
    .load()
    .unwrap();
    let rsa_only = KeyFiles { public_keys: vec![f("rsa.pem")], ..Default::default() }.load().unwrap();
    let jwks_only = KeyFiles { jwks: Some(f("jwks.json")), ..Default::default() }.load().unwrap();
    let rules = Rules {
        issuer: Some("https://issuer".into()),
        audience: Some("svc".into()),
        leeway_secs: 30,
        max_token_bytes: 8192,
    };
    let now = revmesh_runtime::Clock::system().unix_secs();
    let cases: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(f("tokens.json")).unwrap()).unwrap();
    assert!(cases.len() > 30);
    let mut failures = Vec::new();
    for c in &cases {
        let keys = match c["keys"].as_str().unwrap() {
            "rsa_only" => &rsa_only,
            "jwks_only" => &jwks_only,
            _ => &all,
        };
        let got = match keys.verify(c["token"].as_str().unwrap(), &rules, now) {
            Ok(v) => {
                assert_eq!(v.sub.as_deref(), Some("alice"));
                "ok"
            }
            Err(e) => e.as_str(),
        };
        if got != c["expect"].as_str().unwrap() {
            failures.push(format!("{}: expected {}, got {got}", c["name"], c["expect"]));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn short_hmac_secrets_and_private_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "too-short").unwrap();
    let e = KeyFiles { hmac_secret: Some(short), ..Default::default() }.load().unwrap_err();
    assert_eq!(e.field, "hs256-secret-file");
    let private = dir.path().join("k.pem");
    std::fs::write(&private, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
    let e = KeyFiles { public_keys: vec![private], ..Default::default() }.load().unwrap_err();
    assert!(e.message.contains("private key"), "{}", e.message);
}
