//! Doors: where revocations come from besides the admin API's own body forms. Each door
//! validates what its standard sends, turns it into entries, and stores them through
//! [`crate::api::store_revocations`]; it routes itself (`routes()`), with a state of its own on
//! top of the admin API's core, and the admin API never imports a door.
//!
//! - `oidc`: OpenID Connect Back-Channel Logout 1.0 receiver.
//! - `oauth`: OAuth 2.0 Token Revocation (RFC 7009).
//! - `ssf`: OpenID Shared Signals receiver (SETs pushed per RFC 8935; CAEP and RISC events).

pub(crate) mod oauth;

/// Longest a request naming an unknown `kid` waits for the next allowed JWKS fetch: a
/// provider signs with a key moments after publishing it, and does not retry a 400.
pub(crate) const UNKNOWN_KID_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
pub(crate) mod oidc;
pub mod ssf;
