//! The Unix-socket line protocol v1 (PROTOCOL.md §7): parsing separated from I/O.
//!
//! [`parse`] turns one complete line (without its `\n`) into a [`Request`]; [`answer`] turns a
//! request into the answer line. The connection loop in `server.rs` only frames lines.

use crate::jwt::{Invalid, Keys, Rules};
use crate::state::{now_secs, AgentState, Decision};
use revmesh_protocol::TokenRef;
use std::fmt::Write;

/// One request.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `CHECK <jwt>`
    Check(&'a str),
    /// `STATUS k=v …`
    Status(TokenRef<'a>),
    /// `PING`
    Ping,
}

/// Why a line is not a request: the words of `ERR reason=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    /// First word unknown (or empty line).
    UnknownCommand,
    /// Line longer than the limit.
    LineTooLong,
    /// A field is malformed, unknown, repeated or missing.
    BadField,
}

impl LineError {
    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            LineError::UnknownCommand => "unknown_command",
            LineError::LineTooLong => "line_too_long",
            LineError::BadField => "bad_field",
        }
    }
}

/// Parses one line (without `\n`; a trailing `\r` is tolerated).
pub fn parse(line: &[u8]) -> Result<Request<'_>, LineError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = std::str::from_utf8(line).map_err(|_| LineError::BadField)?;
    let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
    match cmd {
        "PING" if rest.is_empty() => Ok(Request::Ping),
        "PING" => Err(LineError::BadField),
        "CHECK" if !rest.is_empty() && !rest.contains(' ') => Ok(Request::Check(rest)),
        "CHECK" => Err(LineError::BadField),
        "STATUS" => parse_status(rest).map(Request::Status),
        _ => Err(LineError::UnknownCommand),
    }
}

fn parse_status(rest: &str) -> Result<TokenRef<'_>, LineError> {
    let mut t = TokenRef::default();
    let mut any = false;
    for word in rest.split(' ') {
        let (k, v) = word.split_once('=').ok_or(LineError::BadField)?;
        if v.is_empty() {
            return Err(LineError::BadField);
        }
        let slot = match k {
            "jti" => &mut t.jti,
            "iss" => &mut t.iss,
            "sub" => &mut t.sub,
            "kid" => &mut t.kid,
            "sid" => &mut t.sid,
            "iat" => {
                if t.iat.is_some() {
                    return Err(LineError::BadField);
                }
                t.iat = Some(v.parse().map_err(|_| LineError::BadField)?);
                any = true;
                continue;
            }
            _ => return Err(LineError::BadField),
        };
        if slot.is_some() {
            return Err(LineError::BadField);
        }
        *slot = Some(v);
        any = true;
    }
    if any {
        Ok(t)
    } else {
        Err(LineError::BadField)
    }
}

/// Writes a value that came from a token so it stays one word: `%`, whitespace and control
/// characters are percent-encoded.
fn word(out: &mut String, v: &str) {
    for c in v.chars() {
        if c == '%' || c.is_whitespace() || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
}

/// The verdict of one request, for metrics.
pub fn verdict_label(line: &str) -> &'static str {
    match line.split(' ').next().unwrap_or("") {
        "OK" => "ok",
        "REVOKED" => "revoked",
        "INVALID" => "invalid",
        "STALE" => "stale",
        "PONG" => "pong",
        _ => "err",
    }
}

/// Everything needed to answer.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// Agent state.
    pub state: &'a AgentState,
    /// Verification keys.
    pub keys: &'a Keys,
    /// Claim rules.
    pub rules: &'a Rules,
}

/// The outcome of a `CHECK`, shared by the line and HTTP front ends.
#[derive(Debug)]
pub enum CheckOutcome {
    /// Verification failed.
    Invalid(Invalid),
    /// Verified; the revocation decision and the claims shown in answers.
    Decided(Decision, Option<String>, u64),
}

/// Verifies a token and decides on it.
pub fn check(ctx: &Ctx<'_>, jwt: &str) -> CheckOutcome {
    if ctx.keys.is_empty() {
        // Without keys nothing can be verified; refuse rather than pretend.
        return CheckOutcome::Invalid(Invalid::UnknownKey);
    }
    match ctx.keys.verify(jwt, ctx.rules, now_secs()) {
        Err(e) => CheckOutcome::Invalid(e),
        Ok(v) => {
            let t = TokenRef {
                jti: v.jti.as_deref(),
                iss: v.iss.as_deref(),
                sub: v.sub.as_deref(),
                iat: v.iat,
                kid: v.kid.as_deref(),
                sid: v.sid.as_deref(),
            };
            let d = ctx.state.decide(&t);
            CheckOutcome::Decided(d, v.sub, v.exp)
        }
    }
}

fn decision(out: &mut String, d: Decision, sub: Option<&str>, exp: Option<u64>) {
    match d {
        Decision::Ok { seq, lag_ms, stale } => {
            let _ = write!(out, "OK seq={seq} lag_ms={lag_ms}");
            if let Some(s) = sub {
                out.push_str(" sub=");
                word(out, s);
            }
            if let Some(e) = exp {
                let _ = write!(out, " exp={e}");
            }
            if stale {
                out.push_str(" stale=1");
            }
        }
        Decision::Revoked { kind, seq } => {
            let _ = write!(out, "REVOKED kind={kind} seq={seq}");
        }
        Decision::Stale { lag_ms } => {
            let _ = write!(out, "STALE lag_ms={lag_ms}");
        }
    }
}

/// Appends the answer line (with `\n`) for one raw line to `out`.
pub fn answer(ctx: &Ctx<'_>, line: &[u8], out: &mut String) {
    let start = out.len();
    match parse(line) {
        Err(e) => {
            let _ = write!(out, "ERR reason={}", e.as_str());
        }
        Ok(Request::Ping) => {
            let (seq, lag_ms, log_id) = ctx.state.ping();
            let log_id = log_id.map_or_else(|| "none".to_owned(), |l| l.to_string());
            let _ = write!(out, "PONG seq={seq} lag_ms={lag_ms} log_id={log_id}");
            if !ctx.state.persist_ok() {
                // Applied but not yet persisted (a full disk): refused, not yet acknowledged.
                out.push_str(" persist=failing");
            }
        }
        Ok(Request::Status(t)) => decision(out, ctx.state.decide(&t), None, None),
        Ok(Request::Check(jwt)) => match check(ctx, jwt) {
            CheckOutcome::Invalid(e) => {
                let _ = write!(out, "INVALID reason={}", e.as_str());
            }
            CheckOutcome::Decided(d, sub, exp) => decision(out, d, sub.as_deref(), Some(exp)),
        },
    }
    let label = verdict_label(&out[start..]);
    ctx.state.metrics.count_check(label);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        let ok = |l: &str, r: Request<'static>| assert_eq!(parse(l.as_bytes()), Ok(r), "{l}");
        let err = |l: &str, e: LineError| assert_eq!(parse(l.as_bytes()), Err(e), "{l}");
        ok("PING", Request::Ping);
        ok("PING\r", Request::Ping);
        ok("CHECK a.b.c", Request::Check("a.b.c"));
        ok("STATUS jti=x", Request::Status(TokenRef { jti: Some("x"), ..Default::default() }));
        ok(
            "STATUS jti=x iss=i sub=s iat=5 kid=k sid=q",
            Request::Status(TokenRef {
                jti: Some("x"),
                iss: Some("i"),
                sub: Some("s"),
                iat: Some(5),
                kid: Some("k"),
                sid: Some("q"),
            }),
        );
        err("", LineError::UnknownCommand);
        err("ping", LineError::UnknownCommand);
        err("HELLO", LineError::UnknownCommand);
        err("CHECK", LineError::BadField);
        err("CHECK a b", LineError::BadField);
        err("PING x", LineError::BadField);
        err("STATUS", LineError::BadField);
        err("STATUS jti", LineError::BadField);
        err("STATUS jti=", LineError::BadField);
        err("STATUS jti=a jti=b", LineError::BadField);
        err("STATUS iat=x", LineError::BadField);
        err("STATUS foo=1", LineError::BadField);
        err("STATUS  jti=a", LineError::BadField);
        assert_eq!(parse(b"STATUS jti=\xff"), Err(LineError::BadField));
    }

    #[test]
    fn token_values_stay_one_word() {
        let mut s = String::new();
        word(&mut s, "a b%c\n");
        assert_eq!(s, "a%20b%25c%0A");
    }
}
