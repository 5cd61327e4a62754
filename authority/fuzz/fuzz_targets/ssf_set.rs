//! Any bytes as a Security Event Token's claims (the part a transmitter's signature vouches
//! for, so only a configured transmitter can send it, but one with bugs may): judging them
//! never panics, and anything judged a revocation names identifiers an agent can store.
#![no_main]

use libfuzzer_sys::fuzz_target;
use revmesh_authority::fuzzing::{judge_set, SetRules};
use std::collections::BTreeMap;

const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(claims) = serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(data) else { return };
    let rules = SetRules {
        issuer: "https://idp.example/".into(),
        aliases: vec!["https://idp.example/oauth2/default".into()],
        opaque_is_session: data.len() % 2 == 0,
        audiences: vec!["revmesh".into()],
        revoke_on: vec![
            "https://schemas.openid.net/secevent/caep/event-type/session-revoked".into(),
            "https://schemas.openid.net/secevent/caep/event-type/credential-change".into(),
            "https://schemas.openid.net/secevent/risc/event-type/account-disabled".into(),
        ],
        max_age: 3600,
        leeway: 30,
    };
    if let Ok(j) = judge_set(&claims, &rules, NOW) {
        assert!(!j.jti.is_empty());
    }
});
