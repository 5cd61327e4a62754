//! Integration tests of revmesh-agent: token verification against an independent JWT
//! implementation, the socket front ends, and end to end with a real authority.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod caddy;
mod e2e;
mod grpc;
mod jwks;
mod metrics;
mod nginx;
mod prometheus;
mod sockets;
mod tokens;
mod util;
