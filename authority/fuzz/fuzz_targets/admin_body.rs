//! Any bytes as a `POST /v1/revocations` body (one object or a bulk array): parsing must never
//! panic, and anything accepted is valid entries whose expiry lies in the future.
#![no_main]

use libfuzzer_sys::fuzz_target;
use revmesh_authority::fuzzing::{parse_revocation, parse_revocations, Bulk};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let now = 1_800_000_000;
    if let Ok(e) = parse_revocation(data, Duration::from_secs(86_400), now) {
        assert!(e.expires_at > now);
        assert!(e.revocation.validate().is_ok());
    }
    if let Ok(bulk) = parse_revocations(data, Duration::from_secs(86_400), now) {
        let entries = match bulk {
            Bulk::One(e) => vec![e],
            Bulk::Many(v) => v,
        };
        assert!(!entries.is_empty() && entries.len() <= 10_000);
        for e in entries {
            assert!(e.expires_at > now && e.revocation.validate().is_ok());
        }
    }
});
