//! Integration tests of revmesh-authority against the real binary, real sockets and real agents.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests time real processes from outside; the one-clock rule (clippy.toml) is the binaries'.
#![allow(clippy::disallowed_methods)]

mod admin;
mod disk;
mod feed;
mod links;
mod oauth;
mod oidc;
mod operators;
mod postgres;
mod relay;
mod slow;
mod ssf;
mod tls;
mod util;
