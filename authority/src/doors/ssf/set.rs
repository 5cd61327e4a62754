//! What a Security Event Token (RFC 8417) asks for, once its signature has been checked: the
//! claim rules of OpenID Shared Signals Framework 1.0 and the event → revocation table
//! (README "Shared Signals"). Pure functions over the claims, so they can be tested and fuzzed
//! without keys or sockets.

use revmesh_protocol::model::validate_id;
use revmesh_protocol::Revocation;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The event types revmesh knows, by URI; every other is `Other` (counted, nothing stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// CAEP 1.0 session revoked.
    SessionRevoked,
    /// CAEP 1.0 credential change.
    CredentialChange,
    /// RISC 1.0 account disabled.
    AccountDisabled,
    /// RISC 1.0 account purged.
    AccountPurged,
    /// RISC 1.0 credential compromise.
    CredentialCompromise,
    /// RISC 1.0 sessions revoked (superseded by CAEP's, still sent).
    SessionsRevoked,
    /// SSF 1.0 verification: nothing stored, its `state` recorded.
    Verification,
    /// SSF 1.0 stream updated: nothing stored, the stream's status recorded.
    StreamUpdated,
    /// Anything else (`token-claims-change`, `assurance-level-change`, …).
    Other,
}

/// Every event with a URI, in the order of the README's table.
pub const KNOWN: [(Event, &str); 8] = [
    (Event::SessionRevoked, "https://schemas.openid.net/secevent/caep/event-type/session-revoked"),
    (Event::CredentialChange, "https://schemas.openid.net/secevent/caep/event-type/credential-change"),
    (Event::AccountDisabled, "https://schemas.openid.net/secevent/risc/event-type/account-disabled"),
    (Event::AccountPurged, "https://schemas.openid.net/secevent/risc/event-type/account-purged"),
    (
        Event::CredentialCompromise,
        "https://schemas.openid.net/secevent/risc/event-type/credential-compromise",
    ),
    (Event::SessionsRevoked, "https://schemas.openid.net/secevent/risc/event-type/sessions-revoked"),
    (Event::Verification, "https://schemas.openid.net/secevent/ssf/event-type/verification"),
    (Event::StreamUpdated, "https://schemas.openid.net/secevent/ssf/event-type/stream-updated"),
];

/// Every `event` label value of `revmesh_authority_ssf_events_total`.
pub const LABELS: [&str; 9] = [
    "session_revoked",
    "credential_change",
    "account_disabled",
    "account_purged",
    "credential_compromise",
    "sessions_revoked",
    "verification",
    "stream_updated",
    "other",
];

impl Event {
    /// The event a URI names.
    pub fn of(uri: &str) -> Event {
        KNOWN.iter().find(|(_, u)| *u == uri).map_or(Event::Other, |(e, _)| *e)
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Event::SessionRevoked => "session_revoked",
            Event::CredentialChange => "credential_change",
            Event::AccountDisabled => "account_disabled",
            Event::AccountPurged => "account_purged",
            Event::CredentialCompromise => "credential_compromise",
            Event::SessionsRevoked => "sessions_revoked",
            Event::Verification => "verification",
            Event::StreamUpdated => "stream_updated",
            Event::Other => "other",
        }
    }

    /// The event types that revoke by default: the CAEP and RISC events above.
    pub fn revokes_by_default(uri: &str) -> bool {
        !matches!(Event::of(uri), Event::Verification | Event::StreamUpdated | Event::Other)
    }
}

/// The `err` codes of RFC 8935 §2.3 / RFC 8936 §2.4.4 a refusal carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrCode {
    /// `invalid_issuer`: the issuer is not a configured transmitter.
    Issuer,
    /// `invalid_audience`: `aud` names none of the accepted audiences.
    Audience,
    /// `invalid_key`: unknown `kid`, or a signature the issuer's keys do not verify (`none`, HMAC included).
    Key,
    /// `invalid_request`: anything else; the description names what.
    Request,
}

impl ErrCode {
    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrCode::Issuer => "invalid_issuer",
            ErrCode::Audience => "invalid_audience",
            ErrCode::Key => "invalid_key",
            ErrCode::Request => "invalid_request",
        }
    }
}

/// A refused SET: nothing of it is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub struct Refused {
    /// The `err` code.
    pub code: ErrCode,
    /// What was wrong, for the transmitter's operator.
    pub description: String,
}

impl Refused {
    pub(crate) fn new(code: ErrCode, description: impl Into<String>) -> Self {
        Refused { code, description: description.into() }
    }
    fn request(description: impl Into<String>) -> Self {
        Self::new(ErrCode::Request, description)
    }
}

/// How one transmitter's SETs are read: who it is, and what its subjects mean.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// The transmitter's issuer (the SET's `iss`).
    pub issuer: String,
    /// Other issuers whose tokens this transmitter speaks for (an `iss_sub` subject may name
    /// them; an `opaque` user is revoked under each).
    pub aliases: Vec<String>,
    /// A simple `opaque` subject of a session-revoked event is a session id, not a user.
    pub opaque_is_session: bool,
    /// Audiences a SET's `aud` must contain one of.
    pub audiences: Vec<String>,
    /// The event type URIs that revoke.
    pub revoke_on: Vec<String>,
    /// Oldest `iat` accepted, seconds.
    pub max_age: u64,
    /// Clock skew allowed on `iat` and `event_timestamp`, seconds.
    pub leeway: u64,
}

impl Rules {
    /// The issuers a token of this transmitter may carry.
    fn issuers(&self) -> Vec<String> {
        std::iter::once(&self.issuer).chain(&self.aliases).cloned().collect()
    }
    fn speaks_for(&self, iss: &str) -> bool {
        self.issuer == iss || self.aliases.iter().any(|a| a == iss)
    }
}

/// What a valid SET asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Revocations to store, all or none, scoped to the transmitter's issuers.
    Revoke(Vec<Revocation>),
    /// A verification event's `state`.
    Verification(Option<String>),
    /// A stream-updated event's `status` and `reason`.
    StreamUpdated(String, Option<String>),
    /// Nothing to do (an event type that does not revoke, or a `create` credential change).
    Ignored,
}

/// A SET's claims, judged: its `jti`, its one event and what it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    /// The SET's `jti`.
    pub jti: String,
    /// The event.
    pub event: Event,
    /// What it asks for.
    pub effect: Effect,
}

fn string<'a>(v: &'a Value, what: &str) -> Result<&'a str, Refused> {
    match v.as_str() {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(Refused::request(format!("`{what}` must be a non-empty string"))),
    }
}

fn time(v: &Value, what: &str) -> Result<u64, Refused> {
    // NumericDate: seconds, possibly fractional; at most year 9999.
    match v.as_f64() {
        Some(t) if (0.0..253_402_300_800.0).contains(&t) => Ok(t as u64),
        _ => Err(Refused::request(format!("`{what}` must be a NumericDate (seconds)"))),
    }
}

/// Judges the claims of a SET whose signature verified with `rules.issuer`'s keys, at `now`
/// (unix seconds). Every rule of the README's "Shared Signals" section: `iss`, `aud`, `iat`,
/// `jti`, exactly one event, the subject, and the event → revocation table.
pub fn judge(claims: &BTreeMap<String, Value>, rules: &Rules, now: u64) -> Result<Judged, Refused> {
    match claims.get("iss").and_then(Value::as_str) {
        Some(iss) if iss == rules.issuer => {}
        _ => return Err(Refused::new(ErrCode::Issuer, "`iss` is not the transmitter")),
    }
    let aud: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !aud.iter().any(|a| rules.audiences.iter().any(|ok| ok == a)) {
        return Err(Refused::new(ErrCode::Audience, "`aud` names no accepted audience"));
    }
    let iat = time(claims.get("iat").ok_or_else(|| Refused::request("`iat` is required"))?, "iat")?;
    if iat > now.saturating_add(rules.leeway) {
        return Err(Refused::request("`iat` is in the future"));
    }
    if iat.saturating_add(rules.max_age) < now {
        return Err(Refused::request("`iat` is older than --ssf-max-age"));
    }
    let jti = string(claims.get("jti").unwrap_or(&Value::Null), "jti")?.to_owned();
    if jti.len() > 256 {
        return Err(Refused::request("`jti` is longer than 256 bytes"));
    }
    let events = match claims.get("events") {
        Some(Value::Object(e)) => e,
        _ => return Err(Refused::request("`events` must be an object")),
    };
    let mut it = events.iter();
    let (uri, payload) = match (it.next(), it.next()) {
        (Some(one), None) => one,
        (None, _) => return Err(Refused::request("`events` is empty; exactly one event is required")),
        (Some(_), Some(_)) => return Err(Refused::request("`events` holds more than one event")),
    };
    let Value::Object(payload) = payload else {
        return Err(Refused::request("the event's value must be an object"));
    };
    let event = Event::of(uri);
    let effect = match event {
        Event::Verification => Effect::Verification(match payload.get("state") {
            None => None,
            Some(s) => Some(string(s, "state")?.chars().take(256).collect()),
        }),
        Event::StreamUpdated => {
            let status = string(payload.get("status").unwrap_or(&Value::Null), "status")?;
            if !matches!(status, "enabled" | "paused" | "disabled") {
                return Err(Refused::request("`status` must be enabled, paused or disabled"));
            }
            let reason = payload.get("reason").and_then(Value::as_str).map(|r| r.chars().take(256).collect());
            Effect::StreamUpdated(status.to_owned(), reason)
        }
        _ if !rules.revoke_on.iter().any(|u| u == uri) => Effect::Ignored,
        Event::CredentialChange if payload.get("change_type").and_then(Value::as_str) == Some("create") => {
            Effect::Ignored
        }
        _ => {
            if event == Event::CredentialChange {
                let change = string(payload.get("change_type").unwrap_or(&Value::Null), "change_type")?;
                if !matches!(change, "update" | "revoke" | "delete") {
                    return Err(Refused::request("`change_type` must be create, revoke, update or delete"));
                }
            }
            // Agents refuse tokens with `iat` at or before it (one-second resolution: a token
            // minted in the event's own second is refused too, PROTOCOL.md §8).
            let issued_before = match payload.get("event_timestamp") {
                None => iat,
                Some(t) => {
                    let t = time(t, "event_timestamp")?;
                    if t > now.saturating_add(rules.leeway) {
                        return Err(Refused::request("`event_timestamp` is in the future"));
                    }
                    t
                }
            };
            let subject = subject_of(claims, payload)?;
            let principal = principal(subject, rules, event == Event::SessionRevoked)?;
            Effect::Revoke(revocations(principal, rules, event, issued_before)?)
        }
    };
    Ok(Judged { jti, event, effect })
}

/// The subject: SSF 1.0's top-level `sub_id`, else (older transmitters) the event's `subject`.
fn subject_of<'a>(
    claims: &'a BTreeMap<String, Value>,
    payload: &'a Map<String, Value>,
) -> Result<&'a Value, Refused> {
    claims
        .get("sub_id")
        .or_else(|| payload.get("subject"))
        .ok_or_else(|| Refused::request("no subject: `sub_id` (or the event's `subject`) is required"))
}

/// Who a subject identifier names, as far as tokens can be matched.
#[derive(Debug, Default)]
struct Principal {
    /// A user: `sub`, and the issuers under which to revoke it.
    user: Option<(String, Vec<String>)>,
    /// A session id.
    session: Option<String>,
    /// One token: `jti` and its issuer.
    token: Option<(String, String)>,
}

/// Formats a token can never be matched against (RFC 9493 and SSF).
fn unmatchable(format: &str) -> Refused {
    Refused::request(format!(
        "subject format `{format}` cannot be matched against tokens; send iss_sub, opaque, jwt_id or complex"
    ))
}

/// Reads one subject identifier (RFC 9493 §3, SSF 1.0 §3). `session_opaque`: a simple opaque
/// subject names a session (session-revoked events of a transmitter configured so).
fn principal(id: &Value, rules: &Rules, session_opaque: bool) -> Result<Principal, Refused> {
    principal_at(id, rules, session_opaque && rules.opaque_is_session, 0)
}

fn principal_at(id: &Value, rules: &Rules, opaque_session: bool, depth: u8) -> Result<Principal, Refused> {
    let Value::Object(id) = id else {
        return Err(Refused::request("a subject identifier must be an object"));
    };
    let field = |k: &str| string(id.get(k).unwrap_or(&Value::Null), k);
    let format = field("format")?;
    let mut p = Principal::default();
    match format {
        "iss_sub" => {
            let iss = field("iss")?;
            if !rules.speaks_for(iss) {
                return Err(Refused::request(
                    "an iss_sub subject's `iss` is neither the transmitter nor one of its aliases",
                ));
            }
            p.user = Some((field("sub")?.to_owned(), vec![iss.to_owned()]));
        }
        "opaque" if opaque_session => p.session = Some(field("id")?.to_owned()),
        "opaque" => p.user = Some((field("id")?.to_owned(), rules.issuers())),
        "jwt_id" => {
            let iss = field("iss")?;
            if !rules.speaks_for(iss) {
                return Err(Refused::request(
                    "a jwt_id subject's `iss` is neither the transmitter nor one of its aliases",
                ));
            }
            p.token = Some((field("jti")?.to_owned(), iss.to_owned()));
        }
        "complex" if depth == 0 => {
            if let Some(user) = id.get("user") {
                let u = principal_at(user, rules, false, depth + 1)?;
                p.user = u.user;
                if p.user.is_none() {
                    return Err(Refused::request(
                        "a complex subject's `user` must be iss_sub, opaque or aliases",
                    ));
                }
            }
            if let Some(session) = id.get("session") {
                p.session =
                    Some(principal_at(session, rules, true, depth + 1)?.session.ok_or_else(|| {
                        Refused::request("a complex subject's `session` must be of format opaque")
                    })?);
            }
            if p.user.is_none() && p.session.is_none() {
                return Err(Refused::request(
                    "a complex subject names neither a `user` nor a `session` revmesh can match",
                ));
            }
        }
        "aliases" if depth == 0 => {
            let Some(Value::Array(ids)) = id.get("identifiers") else {
                return Err(Refused::request("an aliases subject needs an `identifiers` array"));
            };
            let mut last = Refused::request("an aliases subject with no identifiers");
            for one in ids.iter().take(16) {
                match principal_at(one, rules, opaque_session, depth + 1) {
                    Ok(p) => return Ok(p),
                    Err(e) => last = e,
                }
            }
            return Err(last);
        }
        "complex" | "aliases" => {
            return Err(Refused::request(format!("a `{format}` subject cannot nest here")))
        }
        other => return Err(unmatchable(other)),
    }
    Ok(p)
}

/// The event → revocation table.
fn revocations(
    p: Principal,
    rules: &Rules,
    event: Event,
    issued_before: u64,
) -> Result<Vec<Revocation>, Refused> {
    let check =
        |field: &'static str, v: &str| validate_id(field, v).map_err(|e| Refused::request(e.to_string()));
    let mut out = Vec::new();
    if let Some((jti, iss)) = p.token {
        check("jti", &jti)?;
        check("iss", &iss)?;
        out.push(Revocation::Jti { jti, iss: Some(iss) });
        return Ok(out);
    }
    // A session revocation when the event revokes sessions and names one, or when nothing but
    // the session is named; a subject revocation otherwise.
    let session_event = matches!(event, Event::SessionRevoked);
    let issuers = p.user.as_ref().map_or_else(|| rules.issuers(), |(_, issuers)| issuers.clone());
    match (p.session, p.user) {
        (Some(sid), user) if session_event || user.is_none() => {
            check("sid", &sid)?;
            for iss in issuers {
                check("iss", &iss)?;
                out.push(Revocation::session(sid.clone(), Some(iss)));
            }
        }
        (_, Some((sub, _))) => {
            check("sub", &sub)?;
            for iss in issuers {
                check("iss", &iss)?;
                out.push(Revocation::subject(sub.clone(), issued_before, Some(iss)));
            }
        }
        (_, None) => return Err(Refused::request("the subject names no user, session or token")),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ISS: &str = "https://idp.example/";
    const NOW: u64 = 1_800_000_000;

    fn rules() -> Rules {
        Rules {
            issuer: ISS.into(),
            aliases: vec!["https://idp.example/oauth2/default".into()],
            opaque_is_session: false,
            audiences: vec!["revmesh".into()],
            revoke_on: KNOWN
                .iter()
                .map(|(_, u)| u.to_string())
                .filter(|u| Event::revokes_by_default(u))
                .collect(),
            max_age: 3600,
            leeway: 30,
        }
    }

    fn set(event: &str, payload: Value, sub_id: Value) -> BTreeMap<String, Value> {
        let v = json!({"iss": ISS, "aud": ["x", "revmesh"], "iat": NOW - 5, "jti": "j1",
            "sub_id": sub_id, "events": {event: payload}});
        serde_json::from_value(v).unwrap()
    }

    fn uri(e: Event) -> &'static str {
        KNOWN.iter().find(|(k, _)| *k == e).unwrap().1
    }

    #[test]
    fn each_revoking_event_revokes_the_user_scoped_to_the_issuer_up_to_its_timestamp() {
        let user = json!({"format": "iss_sub", "iss": ISS, "sub": "u1"});
        for e in [
            Event::CredentialChange,
            Event::AccountDisabled,
            Event::AccountPurged,
            Event::CredentialCompromise,
            Event::SessionsRevoked,
            Event::SessionRevoked,
        ] {
            let payload =
                json!({"event_timestamp": NOW - 100, "change_type": "revoke", "credential_type": "password"});
            let j = judge(&set(uri(e), payload, user.clone()), &rules(), NOW).unwrap();
            assert_eq!(j.event, e);
            assert_eq!(
                j.effect,
                Effect::Revoke(vec![Revocation::subject("u1".into(), NOW - 100, Some(ISS.into()))]),
                "{e:?}"
            );
        }
    }

    #[test]
    fn subject_formats() {
        let r = rules();
        let sess = uri(Event::SessionRevoked);
        let j = |sub: Value| judge(&set(sess, json!({}), sub), &r, NOW).map(|j| j.effect);
        // complex with a session: that session, under each of the transmitter's issuers.
        let complex = json!({"format": "complex", "session": {"format": "opaque", "id": "s1"},
            "user": {"format": "iss_sub", "iss": "https://idp.example/oauth2/default", "sub": "u1"},
            "tenant": {"format": "opaque", "id": "t"}});
        assert_eq!(
            j(complex),
            Ok(Effect::Revoke(vec![Revocation::session(
                "s1".into(),
                Some("https://idp.example/oauth2/default".into())
            )]))
        );
        // opaque: a user, under the issuer and every alias.
        let Ok(Effect::Revoke(v)) = j(json!({"format": "opaque", "id": "u2"})) else { panic!() };
        assert_eq!(v.len(), 2);
        // opaque as a session, where the transmitter is configured so.
        let s = Rules { opaque_is_session: true, ..rules() };
        let e = judge(&set(sess, json!({}), json!({"format": "opaque", "id": "s2"})), &s, NOW).unwrap();
        assert_eq!(
            e.effect,
            Effect::Revoke(vec![
                Revocation::session("s2".into(), Some(ISS.into())),
                Revocation::session("s2".into(), Some("https://idp.example/oauth2/default".into()))
            ])
        );
        // jwt_id: that token.
        assert_eq!(
            j(json!({"format": "jwt_id", "iss": ISS, "jti": "t-1"})),
            Ok(Effect::Revoke(vec![Revocation::Jti { jti: "t-1".into(), iss: Some(ISS.into()) }]))
        );
        // aliases: the first usable.
        let aliases = json!({"format": "aliases", "identifiers": [
            {"format": "email", "email": "a@b.c"}, {"format": "iss_sub", "iss": ISS, "sub": "u3"}]});
        assert_eq!(
            j(aliases),
            Ok(Effect::Revoke(vec![Revocation::subject("u3".into(), NOW - 5, Some(ISS.into()))]))
        );
        // Unmatchable and foreign.
        for bad in [
            json!({"format": "email", "email": "a@b.c"}),
            json!({"format": "phone_number", "phone_number": "+1"}),
            json!({"format": "iss_sub", "iss": "https://other.example/", "sub": "u"}),
            json!({"format": "complex", "device": {"format": "opaque", "id": "d"}}),
            json!({"format": "complex", "user": {"format": "complex", "user": {"format": "opaque", "id": "u"}}}),
            json!({"format": "opaque"}),
            json!("u1"),
        ] {
            let e = j(bad.clone()).unwrap_err();
            assert_eq!(e.code, ErrCode::Request, "{bad}");
        }
        let e = j(json!({"format": "email", "email": "a@b.c"})).unwrap_err();
        assert!(e.description.contains("`email`"), "{e}");
    }

    #[test]
    fn events_that_do_not_revoke() {
        let r = rules();
        let user = json!({"format": "opaque", "id": "u"});
        let j = |e: &str, p: Value| judge(&set(e, p, user.clone()), &r, NOW).map(|j| j.effect);
        assert_eq!(
            j(uri(Event::Verification), json!({"state": "abc"})),
            Ok(Effect::Verification(Some("abc".into())))
        );
        assert_eq!(j(uri(Event::Verification), json!({})), Ok(Effect::Verification(None)));
        assert_eq!(
            j(uri(Event::StreamUpdated), json!({"status": "paused", "reason": "maintenance"})),
            Ok(Effect::StreamUpdated("paused".into(), Some("maintenance".into())))
        );
        assert!(j(uri(Event::StreamUpdated), json!({"status": "gone"})).is_err());
        assert_eq!(j(uri(Event::CredentialChange), json!({"change_type": "create"})), Ok(Effect::Ignored));
        assert!(j(uri(Event::CredentialChange), json!({"change_type": "rename"})).is_err());
        assert!(j(uri(Event::CredentialChange), json!({})).is_err());
        let other = "https://schemas.openid.net/secevent/caep/event-type/token-claims-change";
        assert_eq!(j(other, json!({"claims": {}})), Ok(Effect::Ignored));
        // --ssf-revoke-on narrows and widens.
        let narrow = Rules { revoke_on: vec![uri(Event::AccountDisabled).into()], ..rules() };
        let e = judge(&set(uri(Event::AccountPurged), json!({}), user.clone()), &narrow, NOW).unwrap();
        assert_eq!(e.effect, Effect::Ignored);
        let wide = Rules { revoke_on: vec![other.into()], ..rules() };
        let e = judge(&set(other, json!({}), user.clone()), &wide, NOW).unwrap();
        assert!(matches!(e.effect, Effect::Revoke(_)));
    }

    #[test]
    fn claim_rules() {
        let r = rules();
        let user = json!({"format": "opaque", "id": "u"});
        let base = set(uri(Event::AccountDisabled), json!({}), user);
        let with = |k: &str, v: Value| {
            let mut c = base.clone();
            if v.is_null() {
                c.remove(k);
            } else {
                c.insert(k.into(), v);
            }
            judge(&c, &r, NOW).unwrap_err()
        };
        assert_eq!(with("iss", json!("https://evil/")).code, ErrCode::Issuer);
        assert_eq!(with("aud", json!("someone")).code, ErrCode::Audience);
        assert_eq!(with("aud", Value::Null).code, ErrCode::Audience);
        for (k, v) in [
            ("iat", Value::Null),
            ("iat", json!(NOW + 60)),
            ("iat", json!(NOW - 4000)),
            ("iat", json!("soon")),
            ("jti", Value::Null),
            ("jti", json!("")),
            ("events", Value::Null),
            ("events", json!({})),
            ("events", json!({"a": {}, "b": {}})),
            ("events", json!({uri(Event::AccountDisabled): "x"})),
            ("sub_id", Value::Null),
        ] {
            assert_eq!(with(k, v.clone()).code, ErrCode::Request, "{k}={v}");
        }
        // Older transmitters: the subject inside the event.
        let mut old = base.clone();
        old.remove("sub_id");
        old.insert(
            "events".into(),
            json!({uri(Event::AccountDisabled): {"subject": {"format": "opaque", "id": "u"}}}),
        );
        assert!(judge(&old, &r, NOW).is_ok());
        // An event timestamp in the future.
        let future = set(
            uri(Event::AccountDisabled),
            json!({"event_timestamp": NOW + 600}),
            json!({"format": "opaque", "id": "u"}),
        );
        assert!(judge(&future, &r, NOW).is_err());
    }
}
