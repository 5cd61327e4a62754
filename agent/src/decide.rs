//! The one decision every front end asks for: a [`Request`] in, a [`Verdict`] out, counted in
//! the metrics exactly once. Front ends (the line protocol in `lines.rs`, HTTP in `http.rs`)
//! only frame requests and render verdicts; a new front end (gRPC ext_authz, say) calls
//! [`Checker::decide`] and renders what it gets.

use crate::jwt::{Invalid, Keys, Rules, Verified};
use crate::keyring::KeyRing;
use crate::state::{AgentState, Decision};
use revmesh_protocol::{Kind, LogId, TokenRef};
use std::sync::Arc;

/// What a client asks.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// Verify the token and decide on it; `None` when the client presented no token.
    Check(Option<&'a str>),
    /// Decide on claims given directly (no verification).
    Status(TokenRef<'a>),
    /// Freshness.
    Ping,
    /// Something the front end could not parse; the words say why.
    Bad(&'static str),
}

/// The token a proxied request presents: `Authorization: Bearer …` (scheme matched without
/// regard to case, RFC 7235), or else the cookie `cookie_name` from the `Cookie` fields. Every
/// front end that reads proxied headers (HTTP, gRPC ext_authz) asks this one rule, so a request
/// has one reading of its token on every door: the token cookie once at most, across all
/// `Cookie` fields, and a bearer token and a token cookie only when they are the same token.
/// Otherwise the agent would check one token while the application acts on the other.
pub fn presented_token<'a>(
    authorization: Option<&'a str>,
    cookie_fields: impl IntoIterator<Item = &'a str>,
    cookie_name: Option<&str>,
) -> Result<Option<&'a str>, TwoTokens> {
    let bearer = authorization.and_then(|v| {
        let v = v.trim();
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
    });
    let Some(name) = cookie_name else { return Ok(bearer) };
    let mut cookie = None;
    for field in cookie_fields {
        for pair in field.split(';') {
            let Some((k, v)) = pair.trim().split_once('=') else { continue };
            if k == name && cookie.replace(v).is_some() {
                return Err(TwoTokens::DuplicateCookie);
            }
        }
    }
    let cookie = cookie.map(|v| v.trim_matches('"')).filter(|v| !v.is_empty());
    match (bearer, cookie) {
        (Some(b), Some(c)) if b != c => Err(TwoTokens::Conflicting),
        (Some(b), _) => Ok(Some(b)),
        (None, c) => Ok(c),
    }
}

/// Why a request's token has more than one reading (the request is refused, never checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TwoTokens {
    /// The token cookie appears more than once (in one `Cookie` field or across several).
    #[error("the token cookie appears more than once")]
    DuplicateCookie,
    /// A bearer token and the token cookie that differ.
    #[error("the bearer token and the token cookie differ")]
    Conflicting,
}

/// The answer to a [`Request`], before a front end renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not revoked.
    Ok {
        /// Applied seq.
        seq: u64,
        /// Milliseconds since an authority was heard.
        lag_ms: u64,
        /// Past the staleness bound under `--on-stale open`.
        stale: bool,
        /// The verified token's claims (CHECK only; STATUS has no token).
        token: Option<Box<Verified>>,
    },
    /// Revoked by entry `seq` of `kind`.
    Revoked {
        /// Kind of the entry.
        kind: Kind,
        /// Its seq.
        seq: u64,
    },
    /// Past the staleness bound under `--on-stale closed`.
    Stale {
        /// Milliseconds since an authority was heard.
        lag_ms: u64,
    },
    /// The token failed verification.
    Invalid(Invalid),
    /// No token was presented.
    NoToken,
    /// Answer to `Ping`.
    Pong {
        /// Applied seq.
        seq: u64,
        /// Milliseconds since an authority was heard.
        lag_ms: u64,
        /// The log the state belongs to.
        log_id: Option<LogId>,
        /// False while applied entries wait to be persisted (refused, not yet acknowledged).
        persist_ok: bool,
    },
    /// The request was not understood.
    Error(&'static str),
}

impl Verdict {
    /// The `verdict` label of `revmesh_agent_checks_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Ok { .. } => "ok",
            Verdict::Revoked { .. } => "revoked",
            Verdict::Stale { .. } => "stale",
            Verdict::Invalid(_) | Verdict::NoToken => "invalid",
            Verdict::Pong { .. } => "pong",
            Verdict::Error(_) => "err",
        }
    }

    fn from_decision(d: Decision, token: Option<Box<Verified>>) -> Self {
        match d {
            Decision::Ok { seq, lag_ms, stale } => Verdict::Ok { seq, lag_ms, stale, token },
            Decision::Revoked { kind, seq } => Verdict::Revoked { kind, seq },
            Decision::Stale { lag_ms } => Verdict::Stale { lag_ms },
        }
    }
}

/// Everything a decision needs: the state, the keys (files replaced whole on SIGHUP, URL sets
/// on refresh; checks load them without a lock) and the claim rules.
#[derive(Debug)]
pub struct Checker {
    /// Agent state.
    pub state: Arc<AgentState>,
    /// Verification keys.
    pub keys: Arc<KeyRing>,
    /// Claim rules.
    pub rules: Rules,
}

impl Checker {
    /// A checker over `state` with file `keys` only and `rules`.
    pub fn new(state: Arc<AgentState>, keys: Arc<Keys>, rules: Rules) -> Self {
        Self::with_ring(state, KeyRing::new(keys, Vec::new()), rules)
    }

    /// A checker over `state` with a key ring and `rules`.
    pub fn with_ring(state: Arc<AgentState>, keys: Arc<KeyRing>, rules: Rules) -> Self {
        Self { state, keys, rules }
    }

    /// A checker over an empty set with an HMAC key, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        let metrics = crate::metrics::Metrics::new().expect("metrics");
        let state = AgentState::new(
            revmesh_protocol::RevocationSet::new(),
            None,
            1,
            None,
            std::time::Duration::from_secs(30),
            true,
            metrics,
        );
        let keys = crate::jwt::Keys::hmac(b"unit-test-secret-0123456789abcdef").expect("key");
        let rules = Rules { issuer: None, audience: None, leeway_secs: 30, max_token_bytes: 8192 };
        Self::new(Arc::new(state), Arc::new(keys), rules)
    }

    /// Decides, and counts the verdict and the time taken.
    pub fn decide(&self, req: Request<'_>) -> Verdict {
        let clock = self.state.clock();
        let started = clock.mono();
        let v = self.verdict(req);
        let m = &self.state.metrics;
        m.count_check(v.label());
        m.check_duration.observe(clock.mono().saturating_duration_since(started).as_secs_f64());
        v
    }

    /// Counts a request refused before it could be asked (too long, unknown path or method).
    pub fn refuse(&self) {
        self.state.metrics.count_check("err");
    }

    fn verdict(&self, req: Request<'_>) -> Verdict {
        match req {
            Request::Bad(why) => Verdict::Error(why),
            Request::Ping => {
                let (seq, lag_ms, log_id) = self.state.ping();
                Verdict::Pong { seq, lag_ms, log_id, persist_ok: self.state.persist_ok() }
            }
            Request::Status(t) => Verdict::from_decision(self.state.decide(&t), None),
            Request::Check(None) => Verdict::NoToken,
            Request::Check(Some(jwt)) => self.check(jwt),
        }
    }

    fn check(&self, jwt: &str) -> Verdict {
        let keys = self.keys.load();
        if keys.is_empty() {
            // Without keys nothing can be verified; refuse rather than pretend (and fetch the
            // URL sets again if they are due: the first fetch may have failed).
            self.keys.unknown_key();
            return Verdict::Invalid(Invalid::UnknownKey);
        }
        match keys.verify(jwt, &self.rules, self.state.clock().unix_secs()) {
            Err(e) => {
                // A `kid` no key has (whatever else failed: a kid-less key may have been tried
                // instead) may be a key the provider just published: refresh in the background.
                if !self.keys.remotes().is_empty()
                    && revmesh_jwt::unverified_kid(jwt).is_some_and(|kid| !keys.has_kid(&kid))
                {
                    self.keys.unknown_key();
                }
                Verdict::Invalid(e)
            }
            // Revocations of subjects and sessions lapse `--max-token-ttl` after they were made:
            // a token living longer could outlive its revocation.
            Ok(v) if self.state.outlives_revocations(v.iat, v.exp) => Verdict::Invalid(Invalid::Lifetime),
            Ok(v) => {
                self.state.metrics.count_verified(v.sid.is_some());
                let t = TokenRef {
                    jti: v.jti.as_deref(),
                    iss: v.iss.as_deref(),
                    sub: v.sub.as_deref(),
                    iat: v.iat,
                    kid: v.kid.as_deref(),
                    sid: v.sid.as_deref(),
                };
                let d = self.state.decide(&t);
                Verdict::from_decision(d, Some(Box::new(v)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{presented_token, TwoTokens};

    #[test]
    fn tokens_come_from_the_bearer_header_or_else_the_named_cookie() {
        let none: [&str; 0] = [];
        assert_eq!(presented_token(Some("Bearer a.b.c"), none, None), Ok(Some("a.b.c")));
        assert_eq!(presented_token(Some("bearer  a.b.c "), none, None), Ok(Some("a.b.c")));
        assert_eq!(presented_token(Some("Basic dXNlcg=="), none, None), Ok(None));
        let cookies = ["theme=dark; session=x.y.z; other=1"];
        assert_eq!(presented_token(None, cookies, Some("session")), Ok(Some("x.y.z")));
        assert_eq!(presented_token(Some("Bearer x.y.z"), cookies, Some("session")), Ok(Some("x.y.z")));
        assert_eq!(presented_token(None, cookies, None), Ok(None), "cookies only when configured");
        assert_eq!(presented_token(None, cookies, Some("sess")), Ok(None));
        assert_eq!(presented_token(None, ["session="], Some("session")), Ok(None));
    }

    /// One reading or none: the old rule took the bearer over a different cookie and the first
    /// of two token cookies, so the agent could check one token while the application used the
    /// other.
    #[test]
    fn a_token_with_two_readings_is_refused() {
        let two = ["session=x.y.z; session=a.b.c"];
        assert_eq!(presented_token(None, two, Some("session")), Err(TwoTokens::DuplicateCookie));
        let across = ["session=x.y.z", "session=a.b.c"];
        assert_eq!(presented_token(None, across, Some("session")), Err(TwoTokens::DuplicateCookie));
        let other = ["session=x.y.z"];
        assert_eq!(
            presented_token(Some("Bearer a.b.c"), other, Some("session")),
            Err(TwoTokens::Conflicting)
        );
    }
}
