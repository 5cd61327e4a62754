//! Who may do what on the admin API: named operators, each with scopes and a credential (the
//! SHA-256 of a bearer token and/or the DNS name of a client certificate), read from the
//! operators file (README, "Operators and the audit trail") and replaced whole on SIGHUP. The
//! admin token (`--admin-token-file`, or the one generated in the data dir) is the operator
//! `admin` with every scope.
//!
//! The file holds hashes, never tokens, and nothing here repeats a token or a line of the
//! file in an error: a mistake in the file must not put a secret into a log.

use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// What an operator may do; each admin endpoint needs exactly one (docs/api.md lists which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Revoke: `POST /v1/revocations` (single, bulk, import), `POST /v1/oauth2/revoke`.
    Revoke,
    /// Read the log, the stream, agents and status.
    Read,
    /// Forget a departed agent (`DELETE /v1/agents/{id}`): it leaves the receipts.
    Forget,
    /// Withdraw a revocation (`DELETE /v1/revocations/{seq}`).
    Withdraw,
    /// Read the audit trail, and take a backup (which holds it).
    Audit,
}

impl Scope {
    /// Every scope, in the order they are documented.
    pub const ALL: [Scope; 5] = [Scope::Revoke, Scope::Read, Scope::Forget, Scope::Withdraw, Scope::Audit];

    /// Its name in the operators file and in 403 answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Revoke => "revoke",
            Scope::Read => "read",
            Scope::Forget => "forget",
            Scope::Withdraw => "withdraw",
            Scope::Audit => "audit",
        }
    }

    /// The scope named `s`.
    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// Every scope.
    pub fn all() -> Self {
        Scope::ALL.into_iter().collect()
    }
    /// True when `s` is in the set.
    pub fn has(self, s: Scope) -> bool {
        self.0 & s.bit() != 0
    }
    /// The names, in documented order.
    pub fn names(self) -> Vec<&'static str> {
        Scope::ALL.into_iter().filter(|s| self.has(*s)).map(Scope::as_str).collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Scopes(iter.into_iter().fold(0, |acc, s| acc | s.bit()))
    }
}

/// An authenticated operator, as handlers see it (in the request's extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The operator's name: what `by` and the audit trail record.
    pub name: Arc<str>,
    /// What it may do.
    pub scopes: Scopes,
}

#[derive(Debug, Clone)]
struct Operator {
    name: Arc<str>,
    scopes: Scopes,
    token_sha256: Option<[u8; 32]>,
    cert_subject: Option<String>,
}

/// Why the operators file cannot be used. Messages name the operator and the field, never a
/// token or a line of the file.
#[derive(Debug, thiserror::Error)]
pub enum OperatorsError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not what it must be.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
}

/// The SHA-256 of a bearer token, as the operators file holds it.
pub fn token_sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The operators in force, replaced whole by [`Operators::reload`].
#[derive(Debug)]
pub struct Operators {
    file: Option<PathBuf>,
    admin: Option<Operator>,
    current: RwLock<Arc<Vec<Operator>>>,
}

/// Longest operator name.
pub const MAX_NAME: usize = 64;

impl Operators {
    /// The admin token's operator (when there is one) and the file's operators. `warnings`
    /// receives what an operator should fix but that does not stop the authority (a file
    /// others can read).
    pub fn load(
        file: Option<&Path>,
        admin_token: Option<&str>,
        warnings: &mut Vec<String>,
    ) -> Result<Self, OperatorsError> {
        let admin = admin_token.map(|t| Operator {
            name: Arc::from("admin"),
            scopes: Scopes::all(),
            token_sha256: Some(token_sha256(t)),
            cert_subject: None,
        });
        let list = match file {
            Some(p) => read_file(p, admin.is_some(), warnings)?,
            None => Vec::new(),
        };
        Ok(Self { file: file.map(Path::to_owned), admin, current: RwLock::new(Arc::new(list)) })
    }

    /// Re-reads the file; on error the operators in force stay. Returns how many there are now.
    pub fn reload(&self) -> Result<usize, OperatorsError> {
        let Some(p) = &self.file else { return Ok(self.count()) };
        let mut warnings = Vec::new();
        let list = read_file(p, self.admin.is_some(), &mut warnings)?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(list);
        Ok(self.count())
    }

    /// How many operators (the admin token's included).
    pub fn count(&self) -> usize {
        self.snapshot().len() + usize::from(self.admin.is_some())
    }

    fn snapshot(&self) -> Arc<Vec<Operator>> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The operator whose token this is. Every configured hash is compared, in constant time,
    /// whatever matches first.
    pub fn by_token(&self, presented: &str) -> Option<Identity> {
        let digest = token_sha256(presented);
        let list = self.snapshot();
        let mut found = None;
        for op in self.admin.iter().chain(list.iter()) {
            if let Some(h) = &op.token_sha256 {
                if crate::auth::ct_eq(h, &digest) && found.is_none() {
                    found = Some(Identity { name: op.name.clone(), scopes: op.scopes });
                }
            }
        }
        found
    }

    /// The operator a client certificate (already verified against `--admin-client-ca`) names.
    pub fn by_cert(&self, cert: &CertificateDer<'_>) -> Option<Identity> {
        let list = self.snapshot();
        list.iter()
            .find(|op| op.cert_subject.as_deref().is_some_and(|s| crate::tls::names_agent(cert, s)))
            .map(|op| Identity { name: op.name.clone(), scopes: op.scopes })
    }

    /// True when some operator authenticates with a client certificate.
    pub fn uses_certificates(&self) -> bool {
        self.snapshot().iter().any(|op| op.cert_subject.is_some())
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    operator: Vec<FileOperator>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOperator {
    name: String,
    scopes: Vec<String>,
    token_sha256: Option<String>,
    cert_subject: Option<String>,
    /// Never allowed: read only to refuse it with a clear message.
    token: Option<serde::de::IgnoredAny>,
}

fn read_file(
    path: &Path,
    has_admin: bool,
    warnings: &mut Vec<String>,
) -> Result<Vec<Operator>, OperatorsError> {
    let invalid = |message: String| OperatorsError::Invalid { path: path.to_owned(), message };
    let text = std::fs::read_to_string(path)
        .map_err(|source| OperatorsError::Read { path: path.to_owned(), source })?;
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o004 != 0 {
                warnings.push(format!(
                    "{} is readable by every user; it holds only hashes, but who may do what is nobody else's business (chmod o-r)",
                    path.display()
                ));
            }
        }
    }
    // toml's own rendering of an error quotes the offending line, which may hold a token: say
    // where, and what, but not the line.
    let doc: FileDoc = toml::from_str(&text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let at = line.map(|l| format!("line {l}: ")).unwrap_or_default();
        invalid(format!("{at}{}", e.message()))
    })?;
    let mut out: Vec<Operator> = Vec::new();
    for (i, op) in doc.operator.into_iter().enumerate() {
        let which = format!("operator {} (`{}`)", i + 1, op.name.chars().take(MAX_NAME).collect::<String>());
        if op.token.is_some() {
            return Err(invalid(format!(
                "{which}: a plaintext `token` is not allowed; give its SHA-256 as `token_sha256` (`revmesh-authority operators new` prints both)"
            )));
        }
        let name = op.name;
        if name.is_empty()
            || name.len() > MAX_NAME
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
        {
            return Err(invalid(format!(
                "{which}: `name` must be 1 to {MAX_NAME} characters of letters, digits, `.`, `_`, `-` or `@`"
            )));
        }
        if (has_admin && name == "admin") || out.iter().any(|o| *o.name == *name) {
            return Err(invalid(format!(
                "{which}: the name is already taken (`admin` is the admin token's)"
            )));
        }
        if op.scopes.is_empty() {
            return Err(invalid(format!("{which}: `scopes` is empty")));
        }
        let mut scopes = Vec::new();
        for s in &op.scopes {
            match Scope::parse(s) {
                Some(x) => scopes.push(x),
                None => {
                    let known: Vec<_> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                    return Err(invalid(format!(
                        "{which}: unknown scope `{}` (known: {})",
                        s.chars().take(32).collect::<String>(),
                        known.join(", ")
                    )));
                }
            }
        }
        let token_sha256 = match op.token_sha256.as_deref() {
            None => None,
            Some(h) => {
                let mut out = [0u8; 32];
                hex::decode_to_slice(h, &mut out).map_err(|_| {
                    invalid(format!("{which}: `token_sha256` must be 64 hexadecimal characters"))
                })?;
                Some(out)
            }
        };
        if let Some(s) = &op.cert_subject {
            if rustls::pki_types::ServerName::try_from(s.as_str()).is_err() {
                return Err(invalid(format!("{which}: `cert_subject` must be a DNS name")));
            }
        }
        if token_sha256.is_none() && op.cert_subject.is_none() {
            return Err(invalid(format!("{which}: give `token_sha256`, `cert_subject` or both")));
        }
        if token_sha256.is_some() && out.iter().any(|o| o.token_sha256 == token_sha256) {
            return Err(invalid(format!("{which}: its token is another operator's too")));
        }
        out.push(Operator {
            name: Arc::from(name),
            scopes: scopes.into_iter().collect(),
            token_sha256,
            cert_subject: op.cert_subject,
        });
    }
    Ok(out)
}

/// A fresh operator token and the stanza that admits it (`revmesh-authority operators new`).
pub fn new_operator(name: &str, scopes: &[String]) -> Result<(String, String), String> {
    let mut parsed = Vec::new();
    for s in scopes.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
        parsed.push(Scope::parse(s).ok_or_else(|| {
            let known: Vec<_> = Scope::ALL.iter().map(|s| s.as_str()).collect();
            format!("unknown scope `{s}` (known: {})", known.join(", "))
        })?);
    }
    if parsed.is_empty() {
        return Err("give at least one scope".into());
    }
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
    {
        return Err(format!("a name is 1 to {MAX_NAME} characters of letters, digits, `.`, `_`, `-` or `@`"));
    }
    let token = format!("rvm_{}", hex::encode(rand::random::<[u8; 32]>()));
    let names: Vec<String> =
        parsed.into_iter().collect::<Scopes>().names().iter().map(|s| format!("{s:?}")).collect();
    let stanza = format!(
        "[[operator]]\nname = {name:?}\nscopes = [{}]\ntoken_sha256 = \"{}\"\n",
        names.join(", "),
        hex::encode(token_sha256(&token))
    );
    Ok((token, stanza))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Operators, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("operators.toml");
        std::fs::write(&p, text).expect("write");
        Operators::load(Some(&p), Some("the-admin-token-0123456789"), &mut Vec::new())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_stanza_from_operators_new_admits_its_token_with_its_scopes() {
        let (token, stanza) = new_operator("alice", &["read,revoke".into()]).expect("new");
        let ops = load(&stanza).expect("loads");
        let id = ops.by_token(&token).expect("alice");
        assert_eq!(&*id.name, "alice");
        assert_eq!(id.scopes.names(), ["revoke", "read"]);
        assert!(ops.by_token("rvm_wrong").is_none());
        assert_eq!(&*ops.by_token("the-admin-token-0123456789").expect("admin").name, "admin");
        assert!(!stanza.contains(&token), "the stanza never holds the token");
    }

    /// Table: what a file may not say, and the words its error uses (never the token).
    #[test]
    fn bad_files_are_refused_without_repeating_a_secret() {
        let h = hex::encode(token_sha256("x"));
        let cases = [
            ("[[operator]]\nname = \"a\"\nscopes = [\"read\"]\ntoken = \"SECRET-TOKEN\"\n", "plaintext `token`"),
            (&*format!("[[operator]]\nname = \"a\"\nscopes = [\"sudo\"]\ntoken_sha256 = \"{h}\"\n"), "unknown scope `sudo`"),
            ("[[operator]]\nname = \"a\"\nscopes = [\"read\"]\n", "give `token_sha256`"),
            ("[[operator]]\nname = \"a\"\nscopes = [\"read\"]\ntoken_sha256 = \"SECRET-TOKEN\"\n", "64 hexadecimal"),
            (&*format!("[[operator]]\nname = \"admin\"\nscopes = [\"read\"]\ntoken_sha256 = \"{h}\"\n"), "already taken"),
            (&*format!("[[operator]]\nname = \"a\"\nscopes = []\ntoken_sha256 = \"{h}\"\n"), "`scopes` is empty"),
            ("[[operator]]\nname = \"a\"\nscopes = [\"read\"]\nsecret = \"SECRET-TOKEN\"\n", "unknown field"),
            ("[[operator]\nname = \"SECRET-TOKEN\n", "line"),
            (
                &*format!("[[operator]]\nname = \"a\"\nscopes = [\"read\"]\ntoken_sha256 = \"{h}\"\n[[operator]]\nname = \"b\"\nscopes = [\"read\"]\ntoken_sha256 = \"{h}\"\n"),
                "another operator's",
            ),
        ];
        for (text, want) in cases {
            let e = load(text).err().unwrap_or_else(|| panic!("accepted: {text}"));
            assert!(e.contains(want), "{text}: {e}");
            assert!(!e.contains("SECRET-TOKEN"), "the error repeats a secret: {e}");
        }
    }

    #[test]
    fn a_world_readable_file_is_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("operators.toml");
        std::fs::write(&p, "").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let mut warnings = Vec::new();
        Operators::load(Some(&p), None, &mut warnings).expect("loads");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let mut warnings = Vec::new();
        Operators::load(Some(&p), None, &mut warnings).expect("loads");
        assert!(warnings.is_empty());
    }
}
