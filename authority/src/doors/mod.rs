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

/// The keys of trusted issuers (identity providers, Shared Signals transmitters): each loaded
/// once (a key file that cannot be read stops the start; a URL that cannot be fetched yet is
/// logged and retried, its issuer's tokens refused until then) and kept fresh every `every`
/// until `stop`. `what` names them in the log.
pub(crate) async fn issuer_keys<'a>(
    issuers: impl Iterator<Item = (&'a String, &'a revmesh_jwt::remote::Location)> + Clone,
    what: &'static str,
    (every, min_refresh): (std::time::Duration, std::time::Duration),
    ca_file: Option<&std::path::Path>,
    clock: &revmesh_runtime::Clock,
    stop: tokio_util::sync::CancellationToken,
) -> Result<std::collections::HashMap<String, std::sync::Arc<revmesh_jwt::remote::RemoteKeys>>, String> {
    use revmesh_jwt::remote::{Location, RemoteKeys};
    let needs_tls = issuers.clone().any(|(_, l)| matches!(l, Location::Url { tls: true, .. }));
    let tls = if needs_tls { Some(revmesh_jwt::remote::client_tls(ca_file)?) } else { None };
    let mut out = std::collections::HashMap::new();
    for (issuer, location) in issuers {
        let keys =
            std::sync::Arc::new(RemoteKeys::new(location.clone(), tls.clone(), min_refresh, clock.clone()));
        match keys.refresh().await {
            Ok(n) => tracing::info!(%issuer, keys = n, "{what} keys loaded"),
            Err(e) if matches!(location, Location::File(_)) => return Err(format!("{issuer}: {e}")),
            Err(e) => tracing::error!(%issuer, error = %e, "{what} keys not loaded yet; retrying"),
        }
        let (run, stop) = (keys.clone(), stop.clone());
        tokio::spawn(async move { run.run(every, stop.cancelled_owned(), || {}).await });
        out.insert(issuer.clone(), keys);
    }
    Ok(out)
}
