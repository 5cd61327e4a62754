//! The revocation model (PROTOCOL.md §8): what a log entry says and which tokens it matches.
//!
//! Everything here is plain data plus validation, so that the authority, the agent and the
//! codec all agree on one definition of "a well-formed entry".

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest accepted identifier (`jti`, `iss`, `sub`, `kid`, `sid`), in bytes.
///
/// Bounding every string keeps a single entry, and therefore a batch frame, small and
/// predictable (PROTOCOL.md §4).
pub const MAX_ID_BYTES: usize = 512;
/// Longest accepted free-text `reason`, in bytes.
pub const MAX_REASON_BYTES: usize = 512;

/// Identity of one revocation log: random 128 bits fixed when the log is created.
///
/// Sequence numbers only mean something together with the log they belong to; an agent
/// that presents another `log_id` is resynchronised from a snapshot (PROTOCOL.md §9.5).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LogId(pub [u8; 16]);

impl LogId {
    /// Builds a log id from 16 random bytes supplied by the caller (this crate reads no RNG).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// Parses the 32-hex-digit form produced by `Display`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.as_bytes();
        if text.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in text.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0])?;
            let lo = hex_val(pair[1])?;
            out[i] = (hi << 4) | lo;
        }
        Some(Self(out))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogId({self})")
    }
}

/// What one entry revokes (PROTOCOL.md §8 table).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Revocation {
    /// One token, by `jti` and, when given, `iss`.
    Jti {
        /// The token's `jti` claim.
        jti: String,
        /// The token's `iss` claim; `None` matches any issuer.
        iss: Option<String>,
    },
    /// Every token of a subject issued before a moment.
    Subject {
        /// The `sub` claim.
        sub: String,
        /// Unix seconds; tokens with `iat` strictly before it (or without `iat`) are revoked.
        issued_before: u64,
    },
    /// Every token signed with a key, by header `kid`.
    Key {
        /// The header `kid`.
        kid: String,
    },
    /// Every token of a session, by `sid` claim.
    Session {
        /// The `sid` claim.
        sid: String,
    },
    /// Lifts an earlier revocation (link version 3, PROTOCOL.md §8.1): the entry `seq` of this
    /// log and, by its identifier, every revocation of the same `kind` and identifier an agent
    /// holds, including one carried forward from an earlier log. Revokes nothing itself.
    /// (Boxed: withdrawals are rare, and inline their fields would make every entry larger;
    /// the encoding is that of the fields in order, as for the other kinds.)
    Withdrawal(Box<Withdrawn>),
    /// A `subject` revocation scoped to one issuer (link version 4, PROTOCOL.md §8.2): only
    /// tokens whose `iss` equals it. Older links get it as `Subject`: wider, never dropped.
    ScopedSubject(Box<Scoped>),
    /// A `session` revocation scoped to one issuer (link version 4); `issued_before` is unused.
    ScopedSession(Box<Scoped>),
}

/// An issuer-scoped `subject` or `session` revocation. (Boxed for the same reason as
/// [`Withdrawn`].)
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scoped {
    /// The `sub` or `sid`.
    pub id: String,
    /// The issuer whose tokens it matches.
    pub iss: String,
    /// For a subject: tokens with `iat` at or before it (or without `iat`) are revoked.
    pub issued_before: u64,
}

/// What a withdrawal names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Withdrawn {
    /// The withdrawn entry's seq.
    pub seq: u64,
    /// The withdrawn entry's kind (never `Withdrawal`).
    pub kind: Kind,
    /// Its identifier: the `jti`, `sub`, `kid` or `sid`.
    pub id: String,
    /// Its `iss`, for a revocation that names one (`jti`; `subject` and `session` from link
    /// version 4).
    pub iss: Option<String>,
}

/// The kinds, as named on the wire words and in metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// `jti`
    Jti,
    /// `subject`
    Subject,
    /// `key`
    Key,
    /// `session`
    Session,
    /// `withdrawal`: an entry that lifts another; it revokes nothing.
    Withdrawal,
}

impl Kind {
    /// The four kinds that revoke, in a stable order (for metric label initialisation).
    pub const ALL: [Kind; 4] = [Kind::Jti, Kind::Subject, Kind::Key, Kind::Session];

    /// The stable lower-case name used in the line protocol, the admin API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Jti => "jti",
            Kind::Subject => "subject",
            Kind::Key => "key",
            Kind::Session => "session",
            Kind::Withdrawal => "withdrawal",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Revocation {
    /// The kind of this revocation.
    pub fn kind(&self) -> Kind {
        match self {
            Revocation::Jti { .. } => Kind::Jti,
            Revocation::Subject { .. } => Kind::Subject,
            Revocation::Key { .. } => Kind::Key,
            Revocation::Session { .. } => Kind::Session,
            Revocation::Withdrawal(_) => Kind::Withdrawal,
            Revocation::ScopedSubject(_) => Kind::Subject,
            Revocation::ScopedSession(_) => Kind::Session,
        }
    }

    /// A `subject` revocation, scoped to `iss` when given.
    pub fn subject(sub: String, issued_before: u64, iss: Option<String>) -> Revocation {
        match iss {
            None => Revocation::Subject { sub, issued_before },
            Some(iss) => Revocation::ScopedSubject(Box::new(Scoped { id: sub, iss, issued_before })),
        }
    }

    /// A `session` revocation, scoped to `iss` when given.
    pub fn session(sid: String, iss: Option<String>) -> Revocation {
        match iss {
            None => Revocation::Session { sid },
            Some(iss) => Revocation::ScopedSession(Box::new(Scoped { id: sid, iss, issued_before: 0 })),
        }
    }

    /// The issuer this revocation is scoped to, if any.
    pub fn issuer(&self) -> Option<&str> {
        match self {
            Revocation::Jti { iss, .. } => iss.as_deref(),
            Revocation::ScopedSubject(s) | Revocation::ScopedSession(s) => Some(&s.iss),
            Revocation::Withdrawal(w) => w.iss.as_deref(),
            _ => None,
        }
    }

    /// True when only link version 4 carries this entry as it is: an issuer-scoped `subject`
    /// or `session`, or the withdrawal of one.
    pub fn needs_scopes(&self) -> bool {
        self.view().link_version() >= 4
    }

    /// This revocation for a link of `version` (PROTOCOL.md §5): as it is, or — below version
    /// 4 — an issuer-scoped one unscoped (wider, never dropped); `None` for what the link
    /// cannot carry at all (a withdrawal below version 3, a scoped withdrawal below 4: such an
    /// agent keeps enforcing, wider, what it lifts).
    pub fn for_link(&self, version: u8) -> Option<std::borrow::Cow<'_, Revocation>> {
        use std::borrow::Cow;
        match self {
            Revocation::Withdrawal(_) if version < 3 => None,
            Revocation::Withdrawal(_) if version < 4 && self.needs_scopes() => None,
            Revocation::ScopedSubject(s) if version < 4 => {
                Some(Cow::Owned(Revocation::Subject { sub: s.id.clone(), issued_before: s.issued_before }))
            }
            Revocation::ScopedSession(s) if version < 4 => {
                Some(Cow::Owned(Revocation::Session { sid: s.id.clone() }))
            }
            _ => Some(Cow::Borrowed(self)),
        }
    }

    /// True for a withdrawal entry, which only link version 3 carries.
    pub fn is_withdrawal(&self) -> bool {
        matches!(self, Revocation::Withdrawal(_))
    }

    /// The withdrawal of this revocation, stored at `seq`; `None` for a withdrawal.
    pub fn withdrawal(&self, seq: u64) -> Option<Revocation> {
        let (kind, id, iss) = match self {
            Revocation::Jti { jti, iss } => (Kind::Jti, jti, iss.clone()),
            Revocation::Subject { sub, .. } => (Kind::Subject, sub, None),
            Revocation::Key { kid } => (Kind::Key, kid, None),
            Revocation::Session { sid } => (Kind::Session, sid, None),
            Revocation::ScopedSubject(s) => (Kind::Subject, &s.id, Some(s.iss.clone())),
            Revocation::ScopedSession(s) => (Kind::Session, &s.id, Some(s.iss.clone())),
            Revocation::Withdrawal(_) => return None,
        };
        Some(Revocation::Withdrawal(Box::new(Withdrawn { seq, kind, id: id.clone(), iss })))
    }

    /// True when `other` revokes the same identifier (kind, identifier and issuer scope):
    /// what one withdrawal lifts at an agent.
    pub fn same_target(&self, other: &Revocation) -> bool {
        match (self.withdrawal(0), other.withdrawal(0)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }
}

/// One sequenced entry of the revocation log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Global sequence number in its log: starts at 1, no gaps.
    pub seq: u64,
    /// When the authority accepted it, unix milliseconds.
    pub created_at_ms: u64,
    /// Unix seconds after which no token this entry matches can still be unexpired.
    pub expires_at: u64,
    /// Free text for humans.
    pub reason: Option<String>,
    /// What it revokes.
    pub revocation: Revocation,
}

/// Why an entry (or a request to create one) is not well-formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A required identifier is empty.
    #[error("field `{0}` must not be empty")]
    Empty(&'static str),
    /// An identifier or the reason is longer than allowed.
    #[error("field `{field}` is longer than {max} bytes")]
    TooLong {
        /// The offending field.
        field: &'static str,
        /// Its limit.
        max: usize,
    },
    /// An identifier contains a character the line protocol cannot carry (whitespace or control).
    #[error("field `{0}` contains whitespace or control characters")]
    BadChars(&'static str),
    /// `seq` 0 is reserved for "nothing applied".
    #[error("field `seq` must be at least 1")]
    ZeroSeq,
    /// A withdrawal names another withdrawal, or a seq not below its own.
    #[error("a withdrawal must name an earlier revocation")]
    BadWithdrawal,
}

impl ValidationError {
    /// The name of the field at fault, for `{"error","field"}` answers.
    pub fn field(&self) -> &'static str {
        match self {
            ValidationError::Empty(f) | ValidationError::BadChars(f) => f,
            ValidationError::TooLong { field, .. } => field,
            ValidationError::ZeroSeq => "seq",
            ValidationError::BadWithdrawal => "withdraws",
        }
    }
}

/// Checks one identifier: non-empty, bounded, and free of whitespace/control characters,
/// because identifiers travel as `key=value` words in the line protocol (PROTOCOL.md §7).
pub fn validate_id(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::Empty(field));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(ValidationError::TooLong { field, max: MAX_ID_BYTES });
    }
    if has_bad_chars(value) {
        return Err(ValidationError::BadChars(field));
    }
    Ok(())
}

/// True when `value` holds whitespace or a control character. Identifiers are nearly always
/// ASCII, where that is one byte comparison (every ASCII whitespace or control character is at
/// or below the space, or DEL); this check ran on every entry of every frame an agent decodes.
fn has_bad_chars(value: &str) -> bool {
    // Printable ASCII only (0x21..=0x7e): nothing to refuse. Anything else (a space, a
    // control byte, DEL or a multi-byte character) is decided by the character rule. The fold
    // has no early exit, so it compiles to vector instructions.
    let printable = value.bytes().fold(true, |ok, b| ok & (b.wrapping_sub(0x21) < 0x5e));
    !printable && value.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl Revocation {
    /// Validates every identifier of this revocation.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.view().validate()
    }

    /// This revocation, borrowed.
    pub fn view(&self) -> RevocationView<'_> {
        match self {
            Revocation::Jti { jti, iss } => RevocationView::Jti { jti, iss: iss.as_deref() },
            Revocation::Subject { sub, issued_before } => {
                RevocationView::Subject { sub, issued_before: *issued_before }
            }
            Revocation::Key { kid } => RevocationView::Key { kid },
            Revocation::Session { sid } => RevocationView::Session { sid },
            Revocation::Withdrawal(w) => {
                RevocationView::Withdrawal { seq: w.seq, kind: w.kind, id: &w.id, iss: w.iss.as_deref() }
            }
            Revocation::ScopedSubject(s) => {
                RevocationView::ScopedSubject { id: &s.id, iss: &s.iss, issued_before: s.issued_before }
            }
            Revocation::ScopedSession(s) => {
                RevocationView::ScopedSession { id: &s.id, iss: &s.iss, issued_before: s.issued_before }
            }
        }
    }
}

impl Entry {
    /// Validates an entry received from the wire or read from disk.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.view().validate()
    }

    /// True once no token this entry can match is still accepted anywhere: `expires_at` plus
    /// [`EXPIRY_GRACE_SECS`] has passed.
    pub fn is_expired(&self, now_unix_secs: u64) -> bool {
        self.view().is_expired(now_unix_secs)
    }

    /// This entry, borrowed.
    pub fn view(&self) -> EntryView<'_> {
        EntryView {
            seq: self.seq,
            created_at_ms: self.created_at_ms,
            expires_at: self.expires_at,
            reason: self.reason.as_deref(),
            revocation: self.revocation.view(),
        }
    }
}

/// A [`Revocation`] borrowed from the bytes of a received frame: the same fields in the same
/// order, so the same encoding, without an allocation per identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // The fields are those of `Revocation`.
pub enum RevocationView<'a> {
    Jti {
        jti: &'a str,
        #[serde(borrow)]
        iss: Option<&'a str>,
    },
    Subject {
        sub: &'a str,
        issued_before: u64,
    },
    Key {
        kid: &'a str,
    },
    Session {
        sid: &'a str,
    },
    Withdrawal {
        seq: u64,
        kind: Kind,
        id: &'a str,
        #[serde(borrow)]
        iss: Option<&'a str>,
    },
    ScopedSubject {
        id: &'a str,
        iss: &'a str,
        issued_before: u64,
    },
    ScopedSession {
        id: &'a str,
        iss: &'a str,
        issued_before: u64,
    },
}

impl RevocationView<'_> {
    /// The lowest link version that carries this revocation as it is (PROTOCOL.md §5): 4 for
    /// an issuer-scoped subject or session or the withdrawal of one, 3 for another withdrawal,
    /// 1 for the rest. A frame's version byte is the highest of its entries' (and its own).
    pub fn link_version(&self) -> u8 {
        match self {
            RevocationView::ScopedSubject { .. } | RevocationView::ScopedSession { .. } => 4,
            RevocationView::Withdrawal { kind, iss, .. } if iss.is_some() && *kind != Kind::Jti => 4,
            RevocationView::Withdrawal { .. } => 3,
            _ => 1,
        }
    }

    /// Validates every identifier of this revocation.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match *self {
            RevocationView::Jti { jti, iss } => {
                validate_id("jti", jti)?;
                if let Some(iss) = iss {
                    validate_id("iss", iss)?;
                }
                Ok(())
            }
            RevocationView::Subject { sub, .. } => validate_id("sub", sub),
            RevocationView::Key { kid } => validate_id("kid", kid),
            RevocationView::Session { sid } => validate_id("sid", sid),
            RevocationView::Withdrawal { seq, kind, id, iss } => {
                if seq == 0 {
                    return Err(ValidationError::ZeroSeq);
                }
                let field = match kind {
                    Kind::Jti => "jti",
                    Kind::Subject => "sub",
                    Kind::Key => "kid",
                    Kind::Session => "sid",
                    Kind::Withdrawal => return Err(ValidationError::BadWithdrawal),
                };
                validate_id(field, id)?;
                match iss {
                    Some(iss) if kind != Kind::Key => validate_id("iss", iss),
                    Some(_) => Err(ValidationError::BadWithdrawal),
                    None => Ok(()),
                }
            }
            RevocationView::ScopedSubject { id, iss, .. } => {
                validate_id("sub", id)?;
                validate_id("iss", iss)
            }
            RevocationView::ScopedSession { id, iss, .. } => {
                validate_id("sid", id)?;
                validate_id("iss", iss)
            }
        }
    }
}

/// An [`Entry`] borrowed from the bytes of a received frame (see
/// [`crate::codec::decode_view`]); it encodes exactly as the entry does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // The fields are those of `Entry`.
pub struct EntryView<'a> {
    pub seq: u64,
    pub created_at_ms: u64,
    pub expires_at: u64,
    #[serde(borrow)]
    pub reason: Option<&'a str>,
    #[serde(borrow)]
    pub revocation: RevocationView<'a>,
}

impl EntryView<'_> {
    /// Validates an entry received from the wire or read from disk.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.seq == 0 {
            return Err(ValidationError::ZeroSeq);
        }
        if let Some(reason) = self.reason {
            if reason.len() > MAX_REASON_BYTES {
                return Err(ValidationError::TooLong { field: "reason", max: MAX_REASON_BYTES });
            }
        }
        if let RevocationView::Withdrawal { seq, .. } = self.revocation {
            if seq >= self.seq {
                return Err(ValidationError::BadWithdrawal);
            }
        }
        self.revocation.validate()
    }

    /// See [`Entry::is_expired`].
    pub fn is_expired(&self, now_unix_secs: u64) -> bool {
        self.expires_at <= expiry_horizon(now_unix_secs)
    }

    /// An owned copy.
    pub fn to_entry(&self) -> Entry {
        let revocation = match self.revocation {
            RevocationView::Jti { jti, iss } => Revocation::Jti { jti: jti.into(), iss: iss.map(Into::into) },
            RevocationView::Subject { sub, issued_before } => {
                Revocation::Subject { sub: sub.into(), issued_before }
            }
            RevocationView::Key { kid } => Revocation::Key { kid: kid.into() },
            RevocationView::Session { sid } => Revocation::Session { sid: sid.into() },
            RevocationView::Withdrawal { seq, kind, id, iss } => {
                Revocation::Withdrawal(Box::new(Withdrawn {
                    seq,
                    kind,
                    id: id.into(),
                    iss: iss.map(Into::into),
                }))
            }
            RevocationView::ScopedSubject { id, iss, issued_before } => {
                Revocation::ScopedSubject(Box::new(Scoped { id: id.into(), iss: iss.into(), issued_before }))
            }
            RevocationView::ScopedSession { id, iss, issued_before } => {
                Revocation::ScopedSession(Box::new(Scoped { id: id.into(), iss: iss.into(), issued_before }))
            }
        };
        Entry {
            seq: self.seq,
            created_at_ms: self.created_at_ms,
            expires_at: self.expires_at,
            reason: self.reason.map(Into::into),
            revocation,
        }
    }
}

/// How long an entry is kept past its `expires_at`. Verifiers accept a token for a clock-skew
/// leeway after its `exp` (the agent's `--leeway`, at most this long), so forgetting the entry
/// at `exp` would turn a revoked token back into a valid one for that leeway: fail closed.
pub const EXPIRY_GRACE_SECS: u64 = 300;

/// The `expires_at` of a revocation kept until it is withdrawn (a `key` revocation's default:
/// an attacker holding a leaked key mints fresh tokens at will, so no moment makes it safe).
pub const NEVER: u64 = u64::MAX;

/// Entries whose `expires_at` is at or below this may be forgotten at `now_unix_secs`.
pub fn expiry_horizon(now_unix_secs: u64) -> u64 {
    now_unix_secs.saturating_sub(EXPIRY_GRACE_SECS)
}

/// The claims of a token that revocation looks at (already verified, or asserted by a
/// service that verified the token itself, as in the `STATUS` request).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenRef<'a> {
    /// `jti` claim.
    pub jti: Option<&'a str>,
    /// `iss` claim.
    pub iss: Option<&'a str>,
    /// `sub` claim.
    pub sub: Option<&'a str>,
    /// `iat` claim, unix seconds.
    pub iat: Option<u64>,
    /// Header `kid`.
    pub kid: Option<&'a str>,
    /// `sid` claim.
    pub sid: Option<&'a str>,
}

/// Why a token is revoked: the matching entry's kind and seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Kind of the matching revocation.
    pub kind: Kind,
    /// Seq of the matching entry.
    pub seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ASCII fast path refuses exactly what the character rule refuses.
    #[test]
    fn the_ascii_fast_path_matches_the_character_rule() {
        let rule = |s: &str| s.chars().any(|c| c.is_whitespace() || c.is_control());
        for b in 0u8..0x80 {
            let s = format!("a{}b", b as char);
            assert_eq!(has_bad_chars(&s), rule(&s), "byte {b:#04x}");
        }
        for s in ["é", "a\u{85}b", "a\u{a0}b", "a\u{2028}b", "日本", "a\u{9f}"] {
            assert_eq!(has_bad_chars(s), rule(s), "{s:?}");
        }
    }

    /// A withdrawal (rare) does not make every entry larger: the log holds 10^6 of them in
    /// memory at the authority, and a snapshot as many at the agent.
    #[test]
    fn a_revocation_is_no_larger_than_a_scoped_jti() {
        assert_eq!(std::mem::size_of::<Revocation>(), 2 * std::mem::size_of::<String>());
    }

    #[test]
    fn log_id_round_trips_through_hex() {
        let id = LogId([0xab; 16]);
        assert_eq!(LogId::parse(&id.to_string()), Some(id));
        assert_eq!(LogId::parse("zz"), None);
        assert_eq!(LogId::parse(&"g".repeat(32)), None);
    }

    #[test]
    fn ids_are_validated() {
        let check = |v: &str, ok: bool| assert_eq!(validate_id("jti", v).is_ok(), ok, "{v:?}");
        check("abc-123", true);
        check("", false);
        check("a b", false);
        check("a\nb", false);
        check(&"x".repeat(MAX_ID_BYTES), true);
        check(&"x".repeat(MAX_ID_BYTES + 1), false);
    }
}
