//! Any string as a JWT: verification must never panic and never accept what our key did not sign.
#![no_main]

use libfuzzer_sys::fuzz_target;
use revmesh_agent::jwt::{Keys, Rules};
use std::sync::OnceLock;

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| Keys::hmac(b"fuzzing-secret-0123456789abcdef0123").unwrap_or_else(|_| std::process::abort()))
}

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    let rules = Rules { issuer: None, audience: None, leeway_secs: 30, max_token_bytes: 8192 };
    // A random input signed with our secret is astronomically unlikely: acceptance means a bug.
    assert!(keys().verify(&token, &rules, 1_800_000_000).is_err(), "accepted {token:?}");
});
