//! Any bytes as a `POST /v1/revocations` body: parsing must never panic, and anything accepted
//! is a valid entry whose expiry lies in the future.
#![no_main]

use libfuzzer_sys::fuzz_target;
use revmesh_authority::admin::parse_revocation;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let now = 1_800_000_000;
    if let Ok(e) = parse_revocation(data, Duration::from_secs(86_400), now) {
        assert!(e.expires_at > now);
        assert!(e.revocation.validate().is_ok());
    }
});
