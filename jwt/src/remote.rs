//! Key sets that change: a JWKS from a file or an `https://` URL, refreshed on a schedule
//! (a shorter `Cache-Control: max-age` wins) and at once when a token names an unknown `kid`,
//! but never more often than `min_refresh`, so tokens with random `kid`s cannot turn revmesh
//! into a flood against the identity provider. A failed fetch keeps the last good set.

use crate::Keys;
use bytes::Bytes;
use revmesh_runtime::http_client::{Client, ClientError};
use revmesh_runtime::Clock;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 1 << 20;
/// Limit on one fetch (connect, TLS, request and the whole answer).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a key set lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A JWKS file.
    File(PathBuf),
    /// A JWKS URL: `https://`, or `http://` to a loopback address only.
    Url {
        /// The URL as given.
        url: String,
        /// Host (no brackets).
        host: String,
        /// Port.
        port: u16,
        /// Path and query.
        path: String,
        /// TLS.
        tls: bool,
    },
}

impl Location {
    /// Parses a file path or a URL.
    pub fn parse(s: &str) -> Result<Location, String> {
        let tls = if s.starts_with("https://") {
            true
        } else if s.starts_with("http://") {
            false
        } else if s.contains("://") {
            return Err(format!("`{s}`: only https:// URLs (or a file path)"));
        } else {
            return Ok(Location::File(PathBuf::from(s)));
        };
        let uri: http::Uri = s.parse().map_err(|_| format!("`{s}`: not a URL"))?;
        let authority = uri.authority().ok_or_else(|| format!("`{s}`: no host"))?;
        let host = authority.host().trim_matches(['[', ']']);
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let host = host.to_owned();
        if host.is_empty() {
            return Err(format!("`{s}`: no host"));
        }
        if !tls && !matches!(host.as_str(), "127.0.0.1" | "::1" | "localhost") {
            return Err(format!("`{s}`: plain http:// only to 127.0.0.1; use https://"));
        }
        Ok(Location::Url { url: s.to_owned(), host, port, path, tls })
    }

    fn describe(&self) -> String {
        match self {
            Location::File(p) => p.display().to_string(),
            Location::Url { url, .. } => url.clone(),
        }
    }
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Reading the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The HTTP exchange failed (connect, TLS, timeout, a malformed or cut-short answer).
    #[error("{0}")]
    Http(#[from] ClientError),
    /// No TLS configuration for an https:// URL.
    #[error("no TLS trust roots for https (give a CA file)")]
    NoTls,
    /// The host is not a valid TLS name.
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
    /// Not within [`FETCH_TIMEOUT`].
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Larger than [`MAX_JWKS_BYTES`].
    #[error("answer larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// An HTTP status other than 200.
    #[error("HTTP {0}")]
    Status(String),
    /// The document is not a JWKS we can use.
    #[error("not a usable JWKS: {0}")]
    Jwks(String),
    /// Refreshed too recently to fetch again.
    #[error("refreshed less than the minimum interval ago")]
    TooSoon,
}

/// A key set kept fresh from its [`Location`].
pub struct RemoteKeys {
    location: Location,
    tls: Option<Arc<rustls::ClientConfig>>,
    keys: RwLock<Arc<Keys>>,
    min_refresh: Duration,
    clock: Clock,
    /// When the last fetch started (successful or not).
    last_attempt: Mutex<Option<Instant>>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    /// `Cache-Control: max-age` of the last good answer.
    max_age: Mutex<Option<Duration>>,
    fetches: AtomicU64,
    errors: AtomicU64,
    /// Told the outcome of every fetch (for metrics).
    observer: Option<Box<dyn Fn(bool) + Send + Sync>>,
    /// Unknown `kid`s and when a token first named each (bounded): a `kid` a fetch has looked
    /// for since is not waited for again.
    unknown: Mutex<std::collections::HashMap<String, Instant>>,
    /// Callers waiting for the next allowed fetch because of an unknown `kid`.
    waiters: tokio::sync::Semaphore,
}

/// Most callers waiting at once for the next allowed fetch (per key set); more are refused at
/// once, so tokens naming made-up `kid`s cannot hold many requests open.
pub const MAX_UNKNOWN_KID_WAITERS: usize = 16;
/// Most unknown `kid`s remembered.
const MAX_UNKNOWN_KIDS: usize = 1024;

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys").field("location", &self.location).finish()
    }
}

impl RemoteKeys {
    /// A set read from `location` (not fetched yet: call [`Self::refresh`]).
    pub fn new(
        location: Location,
        tls: Option<Arc<rustls::ClientConfig>>,
        min_refresh: Duration,
        clock: Clock,
    ) -> Self {
        Self {
            location,
            tls,
            keys: RwLock::new(Arc::new(Keys::default())),
            min_refresh,
            clock,
            last_attempt: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            max_age: Mutex::new(None),
            fetches: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            observer: None,
            unknown: Mutex::new(std::collections::HashMap::new()),
            waiters: tokio::sync::Semaphore::new(MAX_UNKNOWN_KID_WAITERS),
        }
    }

    /// The same, telling `observer` whether each fetch succeeded.
    pub fn with_observer(mut self, observer: impl Fn(bool) + Send + Sync + 'static) -> Self {
        self.observer = Some(Box::new(observer));
        self
    }

    /// True when a fetch now would not be refused as too soon (no fetch is running either).
    pub fn due(&self) -> bool {
        let last = *self.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.clock.mono();
        last.is_none_or(|t| now.saturating_duration_since(t) >= self.min_refresh)
            && self.fetching.try_lock().is_ok()
    }

    /// The keys in force (the last good set; empty before the first good fetch).
    pub fn keys(&self) -> Arc<Keys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Fetches (attempts, failed).
    pub fn counts(&self) -> (u64, u64) {
        (self.fetches.load(Ordering::Relaxed), self.errors.load(Ordering::Relaxed))
    }

    /// Where the keys come from.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Fetches now unless the last attempt was less than `min_refresh` ago (then `TooSoon`);
    /// on success the new set replaces the old one, on failure the old one stays.
    pub async fn refresh(&self) -> Result<usize, FetchError> {
        let _one = self.fetching.lock().await;
        {
            let mut last = self.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
            let now = self.clock.mono();
            if last.is_some_and(|t| now.saturating_duration_since(t) < self.min_refresh) {
                return Err(FetchError::TooSoon);
            }
            *last = Some(now);
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let result = match tokio::time::timeout(FETCH_TIMEOUT, self.fetch()).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout(FETCH_TIMEOUT)),
        };
        if let Some(o) = &self.observer {
            o(result.is_ok());
        }
        match result {
            Ok((keys, max_age)) => {
                let n = keys.len();
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
                *self.max_age.lock().unwrap_or_else(|p| p.into_inner()) = max_age;
                Ok(n)
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(jwks = %self.location.describe(), error = %e, "JWKS fetch failed; keeping the last good keys");
                Err(e)
            }
        }
    }

    /// Fetches now whatever the minimum interval (an operator's SIGHUP, not a token's doing).
    pub async fn refresh_now(&self) -> Result<usize, FetchError> {
        *self.last_attempt.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.refresh().await
    }

    /// A refresh because a token named `kid`, which no key in force has; true when the key
    /// set has it afterwards. A provider signs with a key moments after publishing it, maybe
    /// within the minimum interval of the last fetch: then this waits (at most `max_wait`) for
    /// the next allowed fetch instead of failing, for a `kid` no fetch has looked for yet. The
    /// flood bound stays: one fetch per minimum interval, at most
    /// [`MAX_UNKNOWN_KID_WAITERS`] callers waiting, and a `kid` that a fetch has looked for
    /// since it was first named fails at once.
    pub async fn refresh_for_unknown(&self, kid: &str, max_wait: Duration) -> bool {
        if self.keys().has_kid(kid) {
            return true;
        }
        let now = self.clock.mono();
        let first_named = {
            let mut unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
            if unknown.len() >= MAX_UNKNOWN_KIDS && !unknown.contains_key(kid) {
                unknown.clear();
            }
            *unknown.entry(kid.to_owned()).or_insert(now)
        };
        match self.refresh().await {
            Err(FetchError::TooSoon) => {}
            _ => return self.keys().has_kid(kid),
        }
        let last = *self.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t > first_named) {
            // A fetch after the first token naming it did not find it.
            return false;
        }
        let Ok(_waiting) = self.waiters.try_acquire() else { return false };
        let due = last.map_or(Duration::ZERO, |t| (t + self.min_refresh).saturating_duration_since(now));
        if due > max_wait {
            return false;
        }
        tokio::time::sleep(due).await;
        if self.keys().has_kid(kid) {
            return true;
        }
        // Another waiter may have fetched in the meantime (then this one is too soon: the set
        // it fetched is the one to look in).
        let _ = self.refresh().await;
        self.keys().has_kid(kid)
    }

    /// Refreshes every `every` (or the last answer's shorter `max-age`, but never more often
    /// than `min_refresh`) until `stop` resolves; `changed` runs after each new set.
    pub async fn run(
        self: Arc<Self>,
        every: Duration,
        stop: impl std::future::Future<Output = ()>,
        changed: impl Fn(),
    ) {
        tokio::pin!(stop);
        loop {
            let age = *self.max_age.lock().unwrap_or_else(|p| p.into_inner());
            let wait = age.map_or(every, |a| a.min(every)).max(self.min_refresh);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut stop => return,
            }
            if self.refresh().await.is_ok() {
                changed();
            }
        }
    }

    async fn fetch(&self) -> Result<(Keys, Option<Duration>), FetchError> {
        let (body, max_age) = match &self.location {
            Location::File(p) => (tokio::fs::read(p).await?, None),
            Location::Url { url, tls, .. } => {
                let tls_cfg = if *tls { Some(self.tls.clone().ok_or(FetchError::NoTls)?) } else { None };
                let client = Client::new(tls_cfg, FETCH_TIMEOUT, FETCH_TIMEOUT, MAX_JWKS_BYTES);
                let accept = "application/jwk-set+json, application/json";
                let answer = client
                    .send(
                        http::Method::GET,
                        url,
                        &[("accept", accept), ("user-agent", "revmesh")],
                        Bytes::new(),
                    )
                    .await?;
                if answer.status != 200 {
                    // Redirects are not followed: a key set's URL is configured exactly.
                    let mut why = format!("{} from {url}", answer.status);
                    if let Some(to) = answer.headers.get(http::header::LOCATION).and_then(|l| l.to_str().ok())
                    {
                        why.push_str(&format!(" (redirects are not followed; configure {to})"));
                    }
                    return Err(FetchError::Status(why));
                }
                (answer.body.to_vec(), max_age(&answer.headers))
            }
        };
        if body.len() > MAX_JWKS_BYTES {
            return Err(FetchError::TooLarge);
        }
        let keys = Keys::from_jwks(&body).map_err(FetchError::Jwks)?;
        Ok((keys, max_age))
    }
}

/// `max-age` of the answer's `Cache-Control`, if any.
fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|d| d.trim().strip_prefix("max-age=")?.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// A TLS client configuration trusting `ca_file`, or the platform's trust store without one
/// (see [`revmesh_runtime::http_client::tls_config`]).
pub fn client_tls(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    revmesh_runtime::http_client::tls_config(ca_file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_plain_http_is_loopback_only() {
        assert_eq!(Location::parse("/etc/jwks.json"), Ok(Location::File("/etc/jwks.json".into())));
        let Ok(Location::Url { host, port, path, tls, .. }) =
            Location::parse("https://idp.example/realms/x/certs")
        else {
            panic!("not a URL");
        };
        assert_eq!((host.as_str(), port, path.as_str(), tls), ("idp.example", 443, "/realms/x/certs", true));
        let Ok(Location::Url { port, path, .. }) = Location::parse("http://127.0.0.1:8080") else { panic!() };
        assert_eq!((port, path.as_str()), (8080, "/"));
        assert!(Location::parse("http://idp.example/certs").is_err());
        assert!(Location::parse("ftp://x/y").is_err());
        assert!(Location::parse("https:///x").is_err());
        let Ok(Location::Url { host, port, .. }) = Location::parse("http://[::1]/certs") else { panic!() };
        assert_eq!((host.as_str(), port), ("::1", 80), "a bracketed IPv6 host without a port");
        let Ok(Location::Url { host, port, .. }) = Location::parse("https://[2001:db8::1]:8443/k") else {
            panic!()
        };
        assert_eq!((host.as_str(), port), ("2001:db8::1", 8443));
        assert!(Location::parse("https://[::1/k").is_err());
    }
}
