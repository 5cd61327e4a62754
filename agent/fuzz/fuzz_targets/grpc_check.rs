//! Any bytes as an ext_authz `CheckRequest` (protobuf): decoding, the token mapping and the
//! decision never panic, and every answer is an allow with status OK or a denial with an HTTP
//! status for the client.
#![no_main]

use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use revmesh_agent::decide::{Checker, Request};
use revmesh_agent::front::grpc::{request_token, response};
use revmesh_agent::jwt::{Keys, Rules};
use revmesh_agent::state::AgentState;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn checker() -> &'static Checker {
    static C: OnceLock<Checker> = OnceLock::new();
    C.get_or_init(|| {
        let metrics = revmesh_agent::metrics::Metrics::new().unwrap_or_else(|_| std::process::abort());
        let state = AgentState::new(revmesh_protocol::RevocationSet::new(), None, 1, None, Duration::from_secs(30), true, metrics);
        Checker::new(
            Arc::new(state),
            Arc::new(Keys::hmac(b"fuzzing-secret-0123456789abcdef0123").unwrap_or_else(|_| std::process::abort())),
            Rules { issuer: None, audience: None, leeway_secs: 30, max_token_bytes: 8192 },
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = CheckRequest::decode(data) else { return };
    let Ok(token) = request_token(&req, Some("session")) else { return };
    let r = response(&checker().decide(Request::Check(token)));
    let code = r.status.as_ref().map_or(0, |s| s.code);
    match r.http_response {
        Some(HttpResponse::OkResponse(_)) => assert_eq!(code, 0),
        Some(HttpResponse::DeniedResponse(d)) => assert!(code != 0 && d.status.is_some()),
        _ => panic!("no HTTP response"),
    }
});
