//! Doors: where revocations come from besides the admin API's own body forms. Each door
//! validates what its standard sends, turns it into entries, and stores them through
//! [`crate::api::store_revocations`]; it routes itself (`routes()`), with a state of its own on
//! top of the admin API's core, and the admin API never imports a door.
//!
//! - `oidc`: OpenID Connect Back-Channel Logout 1.0 receiver.
//! - `oauth`: OAuth 2.0 Token Revocation (RFC 7009).

pub(crate) mod oauth;
pub(crate) mod oidc;
