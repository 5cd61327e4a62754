//! Integration tests of revmesh-agent: token verification against an independent JWT
//! implementation, the socket front ends, and end to end with a real authority.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests time real processes from outside; the one-clock rule (clippy.toml) is the binaries'.
#![allow(clippy::disallowed_methods)]

mod caddy;
mod e2e;
mod grpc;
mod jwks;
mod metrics;
mod monotonic;
mod nginx;
mod oidc_provider;
mod prometheus;
// The authority tests' relay: a partition that holds what is in flight.
#[path = "../../authority/tests/relay.rs"]
#[allow(dead_code)]
mod relay;
mod sockets;
mod tokens;
mod util;
