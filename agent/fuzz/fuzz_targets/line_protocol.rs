//! Any bytes as one socket line: parsing and answering (including the CHECK path) must never
//! panic, and every answer is exactly one line starting with a verdict word of PROTOCOL.md §7.
#![no_main]

use libfuzzer_sys::fuzz_target;
use revmesh_agent::decide::Checker;
use revmesh_agent::jwt::{Keys, Rules};
use revmesh_agent::front::lines::answer;
use revmesh_agent::state::AgentState;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn fixture() -> &'static Checker {
    static F: OnceLock<Checker> = OnceLock::new();
    F.get_or_init(|| {
        let metrics = revmesh_agent::metrics::Metrics::new().unwrap_or_else(|_| std::process::abort());
        let mut set = revmesh_protocol::RevocationSet::new();
        let e = revmesh_protocol::Entry {
            seq: 1,
            created_at_ms: 0,
            expires_at: u64::from(u32::MAX),
            reason: None,
            revocation: revmesh_protocol::Revocation::Jti { jti: "j".into(), iss: None },
        };
        set.insert(&e, 0);
        Checker::new(
            Arc::new(AgentState::new(set, None, 1, None, Duration::from_secs(30), true, metrics)),
            Arc::new(Keys::hmac(b"fuzzing-secret-0123456789abcdef0123").unwrap_or_else(|_| std::process::abort())),
            Rules { issuer: None, audience: None, leeway_secs: 30, max_token_bytes: 8192 },
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let mut out = String::new();
    answer(fixture(), data, &mut out);
    assert!(out.ends_with('\n') && out.matches('\n').count() == 1, "{out:?}");
    let word = out.split(' ').next().unwrap_or("").trim_end();
    assert!(["OK", "REVOKED", "INVALID", "STALE", "PONG", "ERR"].contains(&word), "{out:?}");
});
