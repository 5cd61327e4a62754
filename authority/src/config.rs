//! Configuration in two phases: raw values from flags, `REVMESH_*` env and a TOML file, then a
//! validated [`Config`] built before anything is bound, with every bad field reported at once.

use clap::{Args, Parser, Subcommand};
use revmesh_protocol::time::parse_duration;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `revmesh-authority`: the durable revocation log and its agent links.
#[derive(Debug, Parser)]
#[command(name = "revmesh-authority", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the authority.
    Serve(Box<ServeArgs>),
    /// Revoke a token, a subject's tokens, a signing key or a session.
    Revoke(RevokeArgs),
    /// List agents and how far each has applied the log; `agents forget ID` removes a departed one.
    Agents(AgentsArgs),
    /// Show the log head and agent summary.
    Status(ClientArgs),
    /// Import revocations from JSON lines (a file, or `-` for stdin) in bulk commits; rerun
    /// after an interruption to resume where it stopped.
    Import(ImportArgs),
    /// Withdraw a revocation: the one way to lift it before it expires. Agents lift its
    /// identifier, also where they carry it from an earlier log.
    Withdraw(WithdrawArgs),
    /// Save a consistent copy of the embedded store, taken while the authority serves.
    Backup(BackupArgs),
    /// Install a backup (or, with --store, give a PostgreSQL log restored with pg_restore) a
    /// new log id, so agents adopt it and keep what they enforce. The authority must be stopped.
    Restore(RestoreArgs),
    /// One revocation: what it revokes, who stored it (`by`) and why, and which agents have it.
    Show(ShowArgs),
    /// The audit trail: who changed what, from where, oldest first.
    Audit(AuditArgs),
    /// Operators: `operators new NAME --scopes revoke,read` prints a fresh token (once) and the
    /// stanza to add to the operators file.
    Operators(OperatorsArgs),
    /// Shared Signals: `ssf register` creates a stream at a transmitter for the events revmesh
    /// acts on and asks it for a verification event.
    Ssf(SsfArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `revmesh-authority man > revmesh-authority.1`.
    Man,
}

/// Raw `serve` settings. Every field is optional here; defaults and validation come in [`Config::build`].
#[derive(Debug, Default, Clone, Args, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML file with any of these settings as keys (flags and env win over it).
    #[arg(long, env = "REVMESH_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Directory of the embedded store [default: ./revmesh-data/authority].
    #[arg(long, env = "REVMESH_DATA_DIR")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub data_dir: Option<String>,
    /// `embedded` or `postgres://…` (a log shared by several replicas) [default: embedded].
    #[arg(long, env = "REVMESH_STORE")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub store: Option<String>,
    /// A store operation not finished in this time fails: the revocation gets 503, never 201,
    /// and /readyz answers 503 while the store stays unreachable [default: 5s].
    #[arg(long, env = "REVMESH_STORE_TIMEOUT")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub store_timeout: Option<String>,
    /// WebSocket endpoint for agents, path /v1/agents [default: 127.0.0.1:7400].
    #[arg(long, env = "REVMESH_AGENT_LISTEN")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub agent_listen: Option<String>,
    /// Admin HTTP API, /metrics, /healthz, /readyz [default: 127.0.0.1:7401].
    #[arg(long, env = "REVMESH_ADMIN_LISTEN")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub admin_listen: Option<String>,
    /// File holding the admin bearer token [default: generated in the data dir].
    #[arg(long, env = "REVMESH_ADMIN_TOKEN_FILE")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub admin_token_file: Option<String>,
    /// Operators file (TOML): named operators with scopes and a token hash or a client
    /// certificate name; reloaded on SIGHUP. With it and no --admin-token-file, no admin token
    /// is generated: the file names everyone.
    #[arg(long, env = "REVMESH_OPERATORS")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub operators: Option<String>,
    /// CA bundle for operators' client certificates on the admin port (mutual TLS there;
    /// needs --tls-cert). Operators without a certificate still use tokens.
    #[arg(long, env = "REVMESH_ADMIN_CLIENT_CA")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub admin_client_ca: Option<String>,
    /// How long audit records are kept [default: 90d].
    #[arg(long, env = "REVMESH_AUDIT_RETENTION")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub audit_retention: Option<String>,
    /// Lets agents connect without a token or client certificate on a non-loopback
    /// --agent-listen (refused otherwise: anyone reaching the port could join as any agent).
    #[arg(long, env = "REVMESH_ALLOW_UNAUTHENTICATED_AGENTS", num_args = 0..=1, default_missing_value = "true")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub allow_unauthenticated_agents: Option<String>,
    /// File with agent credentials, one `ID-PATTERN SHA256-HEX` per line [default: no agent auth].
    #[arg(long, env = "REVMESH_AGENT_TOKEN_FILE")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub agent_token_file: Option<String>,
    /// Longest token lifetime issued; default expiry of non-jti revocations [default: 24h].
    #[arg(long, env = "REVMESH_MAX_TOKEN_TTL")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub max_token_ttl: Option<String>,
    /// First resend timeout for unacknowledged entries [default: 2s].
    #[arg(long, env = "REVMESH_ACK_TIMEOUT")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub ack_timeout: Option<String>,
    /// Heartbeat interval on agent links [default: 5s].
    #[arg(long, env = "REVMESH_HEARTBEAT")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub heartbeat: Option<String>,
    /// Most agent connections at once [default: 20000].
    #[arg(long, env = "REVMESH_MAX_AGENTS")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub max_agents: Option<String>,
    /// Most admin API connections at once [default: 1024].
    #[arg(long, env = "REVMESH_MAX_ADMIN_CONNECTIONS")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub max_admin_connections: Option<String>,
    /// Time allowed for an admin request head, from its first byte (and for the admin TLS
    /// handshake) [default: 10s].
    #[arg(long, env = "REVMESH_ADMIN_HEADER_TIMEOUT")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub admin_header_timeout: Option<String>,
    /// Time allowed for a whole admin request body; slower bodies get 408 [default: 10s].
    #[arg(long, env = "REVMESH_ADMIN_BODY_TIMEOUT")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub admin_body_timeout: Option<String>,
    /// An admin connection with no request in progress is closed after this long (keep-alive
    /// idle, and the time a client may take to read a response) [default: 60s].
    #[arg(long, env = "REVMESH_ADMIN_IDLE_TIMEOUT")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub admin_idle_timeout: Option<String>,
    /// Time allowed for an agent's TLS + WebSocket handshake and its hello [default: 10s].
    #[arg(long, env = "REVMESH_HANDSHAKE_TIMEOUT")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub handshake_timeout: Option<String>,
    /// Most entries sent to one agent and not yet acknowledged [default: 4096].
    #[arg(long, env = "REVMESH_MAX_PENDING_PER_AGENT")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub max_pending_per_agent: Option<String>,
    /// Most agents catching up at once; others get a go-away [default: 256].
    #[arg(long, env = "REVMESH_MAX_CATCHUPS")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub max_catchups: Option<String>,
    /// Entries kept uncompacted behind the head so reconnecting agents resume without a snapshot [default: 100000].
    #[arg(long, env = "REVMESH_RETAIN_ENTRIES")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub retain_entries: Option<String>,
    /// How often expired entries are compacted away [default: 60s].
    #[arg(long, env = "REVMESH_COMPACT_INTERVAL")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub compact_interval: Option<String>,
    /// A trusted OIDC provider for back-channel logout, `ISSUER=JWKS` where JWKS is a file or
    /// an https:// URL (repeatable).
    #[arg(long, env = "REVMESH_OIDC_PROVIDER")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::list")]
    pub oidc_provider: Vec<String>,
    /// `ISSUER=sid` (default) or `ISSUER=subject` (repeatable): how a provider's logout with a
    /// `sid` revokes. `subject` revokes the user's tokens issued up to the logout, for providers
    /// whose access tokens carry no `sid` (a session revocation would match none of them).
    #[arg(long, env = "REVMESH_OIDC_LOGOUT_BY")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::list")]
    pub oidc_logout_by: Vec<String>,
    /// Client id a logout token's `aud` must contain one of (repeatable).
    #[arg(long, env = "REVMESH_OIDC_AUDIENCE", value_delimiter = ',')]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::list")]
    pub oidc_audience: Vec<String>,
    /// How often provider JWKS are refreshed [default: 1h].
    #[arg(long, env = "REVMESH_OIDC_JWKS_REFRESH")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub oidc_jwks_refresh: Option<String>,
    /// Oldest logout token `iat` accepted, and how long a logout `jti` is remembered [default: 5m].
    #[arg(long, env = "REVMESH_OIDC_MAX_AGE")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub oidc_max_age: Option<String>,
    /// A trusted Shared Signals transmitter, `ISSUER=JWKS` where JWKS is a file or an https://
    /// URL (repeatable). Its SETs are pushed to `POST /v1/ssf/events`.
    #[arg(long, env = "REVMESH_SSF_TRANSMITTER")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::list")]
    pub ssf_transmitter: Vec<String>,
    /// An audience a SET's `aud` must contain one of (repeatable).
    #[arg(long, env = "REVMESH_SSF_AUDIENCE", value_delimiter = ',')]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::list")]
    pub ssf_audience: Vec<String>,
    /// File of bearer tokens (one per line) a push to `/v1/ssf/events` must present.
    #[arg(long, env = "REVMESH_SSF_PUSH_TOKEN_FILE")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub ssf_push_token_file: Option<String>,
    /// Oldest SET `iat` accepted, and how long a SET `jti` is remembered [default: 1h].
    #[arg(long, env = "REVMESH_SSF_MAX_AGE")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub ssf_max_age: Option<String>,
    /// Event type URIs that revoke (repeatable) [default: CAEP session-revoked and
    /// credential-change, RISC account-disabled, account-purged, credential-compromise and
    /// sessions-revoked].
    #[arg(long, env = "REVMESH_SSF_REVOKE_ON", value_delimiter = ',')]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::list")]
    pub ssf_revoke_on: Vec<String>,
    /// `ISSUER=ALIAS` (repeatable): another issuer whose tokens a transmitter speaks for (its
    /// `iss_sub` subjects may name it; its `opaque` users are revoked under each).
    #[arg(long, env = "REVMESH_SSF_ALIAS")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::list")]
    pub ssf_alias: Vec<String>,
    /// `ISSUER=user` (default) or `ISSUER=session` (repeatable): what a simple `opaque` subject
    /// of a transmitter's session-revoked event names.
    #[arg(long, env = "REVMESH_SSF_OPAQUE_SUBJECT")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::list")]
    pub ssf_opaque_subject: Vec<String>,
    /// A transmitter's RFC 8936 poll endpoint: the authority long-polls it and acknowledges
    /// each SET once durable (with PostgreSQL replicas, one polls at a time).
    #[arg(long, env = "REVMESH_SSF_POLL")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub ssf_poll: Option<String>,
    /// File whose first line is the bearer token a poll presents.
    #[arg(long, env = "REVMESH_SSF_POLL_TOKEN_FILE")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub ssf_poll_token_file: Option<String>,
    /// Transmitters from the config file: `[[ssf]] issuer, jwks, audiences, aliases,
    /// opaque_subject` (TOML only).
    #[arg(skip)]
    #[serde(default)]
    pub ssf: Vec<SsfTable>,
    /// Clock skew allowed on logout tokens' `iat` and `exp` [default: 30s].
    #[arg(long, env = "REVMESH_LEEWAY")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub leeway: Option<String>,
    /// Least time between two fetches of one JWKS URL [default: 10s].
    #[arg(long, env = "REVMESH_JWKS_MIN_REFRESH")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub jwks_min_refresh: Option<String>,
    /// CA bundle for https JWKS URLs [default: the system's].
    #[arg(long, env = "REVMESH_JWKS_CA_FILE")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub jwks_ca_file: Option<String>,
    /// HMAC secret (at least 32 bytes) that tokens presented to `/v1/oauth2/revoke` may be
    /// signed with.
    #[arg(long, env = "REVMESH_TOKEN_HS256_SECRET_FILE")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub token_hs256_secret_file: Option<String>,
    /// Public key (PEM) for tokens presented to `/v1/oauth2/revoke` (repeatable).
    #[arg(long, env = "REVMESH_TOKEN_PUBLIC_KEY_FILE", value_delimiter = ',')]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::list")]
    pub token_public_key_file: Vec<String>,
    /// JWKS (a file or an https:// URL) for tokens presented to `/v1/oauth2/revoke`.
    #[arg(long, env = "REVMESH_TOKEN_JWKS")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub token_jwks: Option<String>,
    /// TLS certificate (PEM).
    #[arg(long, env = "REVMESH_TLS_CERT")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub tls_cert: Option<String>,
    /// TLS private key (PEM).
    #[arg(long, env = "REVMESH_TLS_KEY")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub tls_key: Option<String>,
    /// CA bundle for client certificates (mutual TLS).
    #[arg(long, env = "REVMESH_CLIENT_CA")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub client_ca: Option<String>,
    /// Log filter, e.g. `info` or `revmesh_authority=debug` [default: info].
    #[arg(long, env = "REVMESH_LOG")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub log: Option<String>,
    /// `text` or `json` (one JSON object per line, the ready line included) [default: text].
    #[arg(long, env = "REVMESH_LOG_FORMAT")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub log_format: Option<String>,
}

/// Arguments of the operator subcommands that talk to the admin API.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Admin API base URL.
    #[arg(long, env = "REVMESH_ADMIN", default_value = "http://127.0.0.1:7401", global = true)]
    pub admin: String,
    /// File holding the admin token [default: ./revmesh-data/authority/admin.token].
    #[arg(long, env = "REVMESH_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// CA bundle (PEM) to verify an https:// admin URL.
    #[arg(long, env = "REVMESH_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) of an operator named by certificate (mutual TLS on an https://
    /// admin URL); without --token-file no token is sent.
    #[arg(long, env = "REVMESH_CERT_FILE", global = true, requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "REVMESH_KEY_FILE", global = true, requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// Print the raw JSON answer.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `import` arguments.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// JSON lines, one revocation object per line (as `POST /v1/revocations` takes), or `-`.
    pub file: PathBuf,
    /// Revocations per bulk request (one commit each), 1 to 1000.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Admin API and token.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `withdraw` arguments.
#[derive(Debug, Clone, Args)]
pub struct WithdrawArgs {
    /// The seq of the revocation to withdraw.
    pub seq: u64,
    /// Why (stored with the withdrawal).
    #[arg(long)]
    pub reason: Option<String>,
    /// Wait until every connected agent has applied the withdrawal, and print the receipt.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits.
    #[arg(long, default_value = "10s")]
    pub timeout: String,
    /// Admin API connection.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `show` arguments.
#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// The seq of the revocation.
    pub seq: u64,
    /// Admin API connection.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `audit` arguments.
#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// Only records after this id.
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// At most this many records.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Admin API connection.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `operators` arguments.
#[derive(Debug, Clone, Args)]
pub struct OperatorsArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: OperatorsAction,
}

/// `operators` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum OperatorsAction {
    /// Print a fresh bearer token (once: only its hash is kept) and the `[[operator]]` stanza
    /// that admits it; add the stanza to the operators file and send SIGHUP.
    New {
        /// The operator's name, as `by` and the audit trail will show it.
        name: String,
        /// Comma-separated: revoke, read, forget, withdraw, audit.
        #[arg(long, required = true, value_delimiter = ',')]
        scopes: Vec<String>,
    },
}

/// `ssf` arguments.
#[derive(Debug, Clone, Args)]
pub struct SsfArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: SsfAction,
}

/// `ssf` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum SsfAction {
    /// Reads the transmitter's metadata, creates a stream for the events revmesh acts on
    /// (push to `--push-url`, or `--poll`), requests a verification event, and prints the
    /// stream's id and status.
    Register {
        /// The transmitter's metadata, e.g. https://idp.example/.well-known/ssf-configuration.
        #[arg(long)]
        config_url: String,
        /// File whose first line is the bearer token of the transmitter's stream management API.
        #[arg(long)]
        token_file: PathBuf,
        /// Push delivery (RFC 8935) to this URL: the authority's `/v1/ssf/events`.
        #[arg(long, conflicts_with = "poll", required_unless_present = "poll")]
        push_url: Option<String>,
        /// The push token the transmitter is to present (first line of the authority's
        /// `--ssf-push-token-file`).
        #[arg(long, requires = "push_url")]
        push_token_file: Option<PathBuf>,
        /// Poll delivery (RFC 8936): prints the endpoint to give `--ssf-poll`.
        #[arg(long)]
        poll: bool,
        /// Event type URIs to request [default: those that revoke, and stream-updated].
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        /// CA bundle for an https transmitter [default: the system's].
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
}

/// `backup` arguments.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// Where to write the backup (written whole, then renamed into place).
    pub file: PathBuf,
    /// Admin API connection.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `restore` arguments.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// A file written by `backup` (embedded store); not with --store.
    #[arg(required_unless_present = "store")]
    pub file: Option<PathBuf>,
    /// The authority's data directory to restore into (its current log is kept beside, renamed).
    #[arg(long, env = "REVMESH_DATA_DIR", default_value = "./revmesh-data/authority")]
    pub data_dir: PathBuf,
    /// `postgres://…`: the database was restored with pg_restore; give its log a new id.
    #[arg(long, conflicts_with = "file")]
    pub store: Option<String>,
}

/// `agents` arguments.
#[derive(Debug, Clone, Args)]
pub struct AgentsArgs {
    /// What to do (default: list).
    #[command(subcommand)]
    pub action: Option<AgentsAction>,
    /// Admin API connection.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `agents` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum AgentsAction {
    /// Forget a departed (disconnected) agent: it leaves `agents`, `status` and receipts. A
    /// connected agent cannot be forgotten.
    Forget {
        /// The agent id.
        id: String,
    },
}

/// `revoke` arguments.
#[derive(Debug, Clone, Args)]
pub struct RevokeArgs {
    /// What to revoke.
    #[command(subcommand)]
    pub what: RevokeWhat,
    /// Admin API connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Free-text reason stored with the entry.
    #[arg(long, global = true)]
    pub reason: Option<String>,
    /// Wait until every connected agent has applied it and written it to disk, and print the receipt.
    #[arg(long, global = true)]
    pub wait: bool,
    /// With `--wait`: wait only until every connected agent has applied it in memory (the
    /// applied level: sooner, but an agent killed before its next fsync must get it again).
    #[arg(long, global = true, requires = "wait")]
    pub applied: bool,
    /// How long `--wait` waits.
    #[arg(long, global = true, default_value = "10s")]
    pub timeout: String,
}

/// The four revocation kinds.
#[derive(Debug, Clone, Subcommand)]
pub enum RevokeWhat {
    /// One token by its `jti`.
    Jti {
        /// The `jti` claim.
        jti: String,
        /// The token's `exp` (unix seconds or RFC 3339) [default: now + the authority's
        /// --max-token-ttl, which agents bound every token's lifetime by].
        #[arg(long)]
        expires_at: Option<String>,
        /// Only tokens of this issuer.
        #[arg(long)]
        iss: Option<String>,
    },
    /// Every token of a subject issued before a moment.
    Subject {
        /// The `sub` claim.
        sub: String,
        /// Unix seconds or RFC 3339 [default: now, plus 5 s for providers' clocks that run ahead].
        #[arg(long)]
        issued_before: Option<String>,
        /// Only tokens of this issuer (another provider's user with the same `sub` is not).
        #[arg(long)]
        iss: Option<String>,
    },
    /// Every token signed by a key.
    Key {
        /// The header `kid`.
        kid: String,
    },
    /// Every token of a session.
    Session {
        /// The `sid` claim.
        sid: String,
        /// Only tokens of this issuer (another provider's session with the same `sid` is not).
        #[arg(long)]
        iss: Option<String>,
    },
}

/// Where the log lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// redb under `--data-dir`.
    Embedded,
    /// A PostgreSQL database shared by several replicas.
    Postgres(String),
}

/// The validated configuration of `serve`.
#[derive(Debug, Clone)]
pub struct Config {
    /// TLS for both listeners (client certificates on the agent endpoint when `client_ca`).
    pub tls: Option<crate::tls::ListenerTls>,
    /// The log store.
    pub store: StoreKind,
    /// Limit on one store operation.
    pub store_timeout: Duration,
    /// Embedded store directory.
    pub data_dir: PathBuf,
    /// Agent WebSocket listen address.
    pub agent_listen: SocketAddr,
    /// Admin HTTP listen address.
    pub admin_listen: SocketAddr,
    /// Admin token file (created when absent and not configured).
    pub admin_token_file: Option<PathBuf>,
    /// Agent tokens file.
    pub agent_token_file: Option<PathBuf>,
    /// Operators file.
    pub operators: Option<PathBuf>,
    /// How long audit records are kept.
    pub audit_retention: Duration,
    /// Default expiry horizon for non-jti revocations.
    pub max_token_ttl: Duration,
    /// Ack timeout.
    pub ack_timeout: Duration,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Connection cap on the agent listener.
    pub max_agents: usize,
    /// Admin connection cap.
    pub max_admin_connections: usize,
    /// Admin request head limit.
    pub admin_header_timeout: Duration,
    /// Admin request body limit.
    pub admin_body_timeout: Duration,
    /// Admin keep-alive idle limit.
    pub admin_idle_timeout: Duration,
    /// Agent handshake limit.
    pub handshake_timeout: Duration,
    /// In-flight window per agent.
    pub max_pending_per_agent: u64,
    /// Concurrent catch-ups.
    pub max_catchups: usize,
    /// Uncompacted tail length.
    pub retain_entries: u64,
    /// Compaction period.
    pub compact_interval: Duration,
    /// Log filter.
    pub log: String,
    /// JSON log lines.
    pub log_json: bool,
    /// The OIDC back-channel logout receiver (none without `--oidc-provider`).
    pub oidc: Option<crate::doors::oidc::OidcSettings>,
    /// The Shared Signals receiver (none without a transmitter).
    pub ssf: Option<crate::doors::ssf::SsfSettings>,
    /// Keys for RFC 7009 revocation requests (none without `--token-*`).
    pub token_keys: Option<TokenKeySettings>,
}

/// `--token-hs256-secret-file`, `--token-public-key-file`, `--token-jwks`, validated.
#[derive(Debug, Clone)]
pub struct TokenKeySettings {
    /// The file keys, loaded.
    pub files: std::sync::Arc<revmesh_jwt::Keys>,
    /// Where they come from (re-read on SIGHUP).
    pub file_sources: revmesh_jwt::KeyFiles,
    /// The JWKS location.
    pub jwks: Option<revmesh_jwt::remote::Location>,
    /// Least time between fetches.
    pub min_refresh: Duration,
    /// Scheduled refresh.
    pub refresh: Duration,
    /// CA bundle for an https JWKS.
    pub ca_file: Option<PathBuf>,
}

impl TokenKeySettings {
    /// The keys, with the JWKS fetched once and kept fresh until `stop`.
    pub async fn start(
        &self,
        clock: &revmesh_runtime::Clock,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<crate::doors::oauth::TokenKeys, String> {
        use revmesh_jwt::remote::{Location, RemoteKeys};
        let jwks = match &self.jwks {
            None => None,
            Some(l) => {
                let tls = match l {
                    Location::Url { tls: true, .. } => {
                        Some(revmesh_jwt::remote::client_tls(self.ca_file.as_deref())?)
                    }
                    _ => None,
                };
                let keys =
                    std::sync::Arc::new(RemoteKeys::new(l.clone(), tls, self.min_refresh, clock.clone()));
                if let Err(e) = keys.refresh().await {
                    if matches!(l, Location::File(_)) {
                        return Err(e.to_string());
                    }
                    tracing::error!(error = %e, "--token-jwks not loaded yet; retrying");
                }
                let run = keys.clone();
                let every = self.refresh;
                tokio::spawn(async move { run.run(every, stop.cancelled_owned(), || {}).await });
                Some(keys)
            }
        };
        Ok(crate::doors::oauth::TokenKeys {
            files: std::sync::RwLock::new((*self.files).clone()),
            file_sources: self.file_sources.clone(),
            jwks,
        })
    }
}

pub use revmesh_runtime::config::{ConfigError, ConfigErrors};

impl ServeArgs {
    /// Flags and env (already merged by clap) over the TOML file, if any.
    pub fn with_file(self) -> Result<ServeArgs, Vec<ConfigError>> {
        let Some(path) = self.config.clone() else { return Ok(self) };
        let err = |message: String| vec![ConfigError { field: "config", message }];
        let text = std::fs::read_to_string(&path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let file: ServeArgs = toml::from_str(&text).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let mut merged = overlay(&self, file).map_err(|e| err(format!("{}: {e}", path.display())))?;
        merged.config = Some(path);
        Ok(merged)
    }
}

/// `given` (flags and environment) over `file`: a setting given a value (a scalar, or a list
/// with at least one element) replaces the file's; every other comes from the file. One rule
/// for every field, applied through their serde forms, so a new flag needs no edit here.
fn overlay(given: &ServeArgs, file: ServeArgs) -> Result<ServeArgs, String> {
    use serde_json::Value;
    let fields = |a: &ServeArgs| match serde_json::to_value(a) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("settings are not a table".to_owned()),
        Err(e) => Err(e.to_string()),
    };
    let mut merged = fields(&file)?;
    for (name, value) in fields(given)? {
        let set = match &value {
            Value::Null => false,
            Value::Array(items) => !items.is_empty(),
            _ => true,
        };
        if set {
            merged.insert(name, value);
        }
    }
    // Unset is absent in the file's form (TOML has no null).
    merged.retain(|_, v| !v.is_null());
    serde_json::from_value(Value::Object(merged)).map_err(|e| e.to_string())
}

/// One `[[ssf]]` table of the config file.
#[derive(Debug, Default, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SsfTable {
    /// The transmitter's issuer.
    pub issuer: String,
    /// Its JWKS: a file or an https:// URL.
    pub jwks: String,
    /// Audiences accepted from it (beyond `ssf-audience`).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Other issuers whose tokens it speaks for.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `user` (default) or `session`.
    #[serde(default)]
    pub opaque_subject: Option<String>,
}

/// `--ssf-transmitter ISSUER=JWKS …`, `[[ssf]]` and the flags that go with them.
fn ssf_settings(raw: &ServeArgs, e: &mut Errors) -> Option<crate::doors::ssf::SsfSettings> {
    use crate::doors::ssf::{set, TransmitterSettings};
    let max_age = e.duration("ssf-max-age", &raw.ssf_max_age, Duration::from_secs(3600));
    let mut tables = raw.ssf.clone();
    for t in &raw.ssf_transmitter {
        match t.split_once('=').filter(|(i, j)| !i.is_empty() && !j.is_empty()) {
            Some((issuer, jwks)) => {
                tables.push(SsfTable { issuer: issuer.into(), jwks: jwks.into(), ..SsfTable::default() })
            }
            None => e.push("ssf-transmitter", format!("`{t}` is not ISSUER=JWKS")),
        }
    }
    let issuers: Vec<String> = tables.iter().map(|t| t.issuer.clone()).collect();
    let by_issuer = |list: &[String], field: &'static str, e: &mut Errors| -> Vec<(String, String)> {
        let mut out = Vec::new();
        for p in list {
            // The issuer is whichever configured one the value starts with (URLs may hold `=`).
            let known =
                issuers.iter().find_map(|i| p.strip_prefix(i.as_str())?.strip_prefix('=').map(|v| (i, v)));
            match (known, p.split_once('=')) {
                (Some((i, v)), _) if !v.is_empty() => out.push((i.clone(), v.to_owned())),
                (_, Some((i, _))) => e.push(field, format!("`{i}` is not an --ssf-transmitter issuer")),
                _ => e.push(field, format!("`{p}` is not ISSUER=VALUE")),
            }
        }
        out
    };
    let aliases = by_issuer(&raw.ssf_alias, "ssf-alias", e);
    let opaque = by_issuer(&raw.ssf_opaque_subject, "ssf-opaque-subject", e);
    if tables.is_empty() {
        for (set, field) in [
            (!raw.ssf_audience.is_empty(), "ssf-audience"),
            (raw.ssf_push_token_file.is_some(), "ssf-push-token-file"),
            (!raw.ssf_revoke_on.is_empty(), "ssf-revoke-on"),
            (raw.ssf_poll.is_some(), "ssf-poll"),
        ] {
            if set {
                e.push(field, "needs --ssf-transmitter");
            }
        }
        return None;
    }
    let mut transmitters = Vec::new();
    for mut t in tables {
        t.aliases.extend(aliases.iter().filter(|(i, _)| *i == t.issuer).map(|(_, a)| a.clone()));
        let mode =
            opaque.iter().rev().find(|(i, _)| *i == t.issuer).map(|(_, m)| m.clone()).or(t.opaque_subject);
        let opaque_is_session = match mode.as_deref() {
            None | Some("user") => false,
            Some("session") => true,
            Some(other) => {
                e.push("ssf-opaque-subject", format!("`{other}` is neither `user` nor `session`"));
                false
            }
        };
        if transmitters.iter().any(|x: &TransmitterSettings| x.issuer == t.issuer) {
            e.push("ssf-transmitter", format!("`{}` is configured twice", t.issuer));
            continue;
        }
        if t.audiences.is_empty() && raw.ssf_audience.is_empty() {
            e.push("ssf-audience", format!("`{}` accepts no audience: give --ssf-audience", t.issuer));
        }
        match revmesh_jwt::remote::Location::parse(&t.jwks) {
            Ok(jwks) => transmitters.push(TransmitterSettings {
                issuer: t.issuer,
                jwks,
                audiences: t.audiences,
                aliases: t.aliases,
                opaque_is_session,
            }),
            Err(m) => e.push("ssf-transmitter", m),
        }
    }
    let revoke_on = if raw.ssf_revoke_on.is_empty() {
        set::KNOWN
            .iter()
            .map(|(_, u)| (*u).to_owned())
            .filter(|u| set::Event::revokes_by_default(u))
            .collect()
    } else {
        for u in &raw.ssf_revoke_on {
            if matches!(set::Event::of(u), set::Event::Verification | set::Event::StreamUpdated)
                || !(u.starts_with("https://") || u.starts_with("http://") || u.starts_with("urn:"))
            {
                e.push("ssf-revoke-on", format!("`{u}` is not an event type URI that can revoke"));
            }
        }
        raw.ssf_revoke_on.clone()
    };
    let push_token_file = raw.ssf_push_token_file.as_ref().map(PathBuf::from);
    if let Some(p) = &push_token_file {
        if let Err(m) = crate::doors::ssf::read_push_tokens(p) {
            e.push("ssf-push-token-file", m);
        }
    }
    let poll = raw.ssf_poll.as_ref().and_then(|url| {
        // The rule of key set URLs: https://, or plain http:// to this host only.
        match revmesh_jwt::remote::Location::parse(url) {
            Ok(revmesh_jwt::remote::Location::Url { .. }) => {}
            Ok(_) => {
                e.push("ssf-poll", format!("`{url}` is not an https:// URL"));
                return None;
            }
            Err(m) => {
                e.push("ssf-poll", m);
                return None;
            }
        }
        let token_file = raw.ssf_poll_token_file.as_ref().map(PathBuf::from);
        if let Some(Err(m)) = token_file.as_deref().map(crate::doors::ssf::poll::read_token) {
            e.push("ssf-poll-token-file", m);
        }
        Some(crate::doors::ssf::poll::PollSettings {
            url: url.clone(),
            token_file,
            ca_file: raw.jwks_ca_file.as_ref().map(PathBuf::from),
        })
    });
    if raw.ssf_poll.is_none() && raw.ssf_poll_token_file.is_some() {
        e.push("ssf-poll-token-file", "needs --ssf-poll");
    }
    if raw.ssf_poll.is_none() && raw.ssf_push_token_file.is_none() {
        e.push(
            "ssf-transmitter",
            "SETs arrive by push (--ssf-push-token-file) or poll (--ssf-poll): give one",
        );
    }
    Some(crate::doors::ssf::SsfSettings {
        poll,
        transmitters,
        audiences: raw.ssf_audience.clone(),
        push_token_file,
        max_age,
        leeway: e.duration("leeway", &raw.leeway, Duration::from_secs(30)),
        revoke_on,
        jwks_refresh: e.duration("oidc-jwks-refresh", &raw.oidc_jwks_refresh, Duration::from_secs(3600)),
        jwks_min_refresh: e.duration("jwks-min-refresh", &raw.jwks_min_refresh, Duration::from_secs(10)),
        jwks_ca_file: raw.jwks_ca_file.as_ref().map(PathBuf::from),
    })
}

/// `--oidc-provider ISSUER=JWKS …` and the flags that go with it.
fn oidc_settings(raw: &ServeArgs, e: &mut Errors) -> Option<crate::doors::oidc::OidcSettings> {
    let refresh = e.duration("oidc-jwks-refresh", &raw.oidc_jwks_refresh, Duration::from_secs(3600));
    let max_age = e.duration("oidc-max-age", &raw.oidc_max_age, Duration::from_secs(300));
    let leeway = e.duration("leeway", &raw.leeway, Duration::from_secs(30));
    let min_refresh = e.duration("jwks-min-refresh", &raw.jwks_min_refresh, Duration::from_secs(10));
    if raw.oidc_provider.is_empty() {
        if !raw.oidc_audience.is_empty() {
            e.push("oidc-audience", "needs --oidc-provider");
        }
        if !raw.oidc_logout_by.is_empty() {
            e.push("oidc-logout-by", "needs --oidc-provider");
        }
        return None;
    }
    let mut providers = Vec::new();
    for p in &raw.oidc_provider {
        let Some((issuer, jwks)) = p.split_once('=').filter(|(i, j)| !i.is_empty() && !j.is_empty()) else {
            e.push("oidc-provider", format!("`{p}` is not ISSUER=JWKS"));
            continue;
        };
        match revmesh_jwt::remote::Location::parse(jwks) {
            Ok(l) => providers.push((issuer.to_owned(), l)),
            Err(m) => e.push("oidc-provider", m),
        }
    }
    if raw.oidc_audience.is_empty() {
        e.push("oidc-audience", "at least one client id is required with --oidc-provider");
    }
    let mut logout_by_subject = Vec::new();
    for p in &raw.oidc_logout_by {
        match p.rsplit_once('=') {
            Some((issuer, policy)) if providers.iter().any(|(i, _)| i == issuer) => match policy {
                "sid" => {}
                "subject" => logout_by_subject.push(issuer.to_owned()),
                other => e.push("oidc-logout-by", format!("`{other}` is neither `sid` nor `subject`")),
            },
            Some((issuer, _)) => {
                e.push("oidc-logout-by", format!("`{issuer}` is not an --oidc-provider issuer"))
            }
            None => e.push("oidc-logout-by", format!("`{p}` is not ISSUER=sid|subject")),
        }
    }
    let ca = raw.jwks_ca_file.as_ref().map(PathBuf::from);
    if let Some(c) = &ca {
        if !c.is_file() {
            e.push("jwks-ca-file", format!("{} is not a readable file", c.display()));
        }
    }
    Some(crate::doors::oidc::OidcSettings {
        providers,
        audiences: raw.oidc_audience.clone(),
        jwks_refresh: refresh,
        jwks_min_refresh: min_refresh,
        jwks_ca_file: ca,
        max_age,
        leeway,
        logout_by_subject,
    })
}

fn token_key_settings(raw: &ServeArgs, e: &mut Errors) -> Option<TokenKeySettings> {
    let min_refresh = e.duration("jwks-min-refresh", &raw.jwks_min_refresh, Duration::from_secs(10));
    if raw.token_hs256_secret_file.is_none()
        && raw.token_public_key_file.is_empty()
        && raw.token_jwks.is_none()
    {
        return None;
    }
    let files = revmesh_jwt::KeyFiles {
        hmac_secret: raw.token_hs256_secret_file.as_ref().map(PathBuf::from),
        public_keys: raw.token_public_key_file.iter().map(PathBuf::from).collect(),
        jwks: None,
    };
    let file_sources = files.clone();
    let files = match files.load() {
        Ok(k) => std::sync::Arc::new(k),
        Err(err) => {
            let field = if err.field == "hs256-secret-file" {
                "token-hs256-secret-file"
            } else {
                "token-public-key-file"
            };
            e.push(field, err.message);
            std::sync::Arc::default()
        }
    };
    let jwks = match raw.token_jwks.as_deref().map(revmesh_jwt::remote::Location::parse) {
        None => None,
        Some(Ok(l)) => Some(l),
        Some(Err(m)) => {
            e.push("token-jwks", m);
            None
        }
    };
    Some(TokenKeySettings {
        files,
        file_sources,
        jwks,
        min_refresh,
        refresh: Duration::from_secs(300),
        ca_file: raw.jwks_ca_file.as_ref().map(PathBuf::from),
    })
}

struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.push(ConfigError { field, message: message.into() });
    }

    fn duration(&mut self, field: &'static str, v: &Option<String>, default: Duration) -> Duration {
        match v.as_deref().map(parse_duration) {
            None => default,
            Some(Ok(d)) if !d.is_zero() => d,
            Some(Ok(_)) => {
                self.push(field, "must be greater than zero");
                default
            }
            Some(Err(e)) => {
                self.push(field, e);
                default
            }
        }
    }

    fn addr(&mut self, field: &'static str, v: &Option<String>, default: &str) -> SocketAddr {
        let text = v.as_deref().unwrap_or(default);
        text.parse().unwrap_or_else(|_| {
            self.push(field, format!("`{text}` is not an address like 127.0.0.1:7400"));
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    fn number(&mut self, field: &'static str, v: &Option<String>, default: u64, min: u64) -> u64 {
        match v.as_deref().map(str::parse::<u64>) {
            None => default,
            Some(Ok(n)) if n >= min => n,
            _ => {
                self.push(field, format!("must be a whole number of at least {min}"));
                default
            }
        }
    }
}

impl Config {
    /// Validates raw settings; every problem is reported, not just the first.
    pub fn build(raw: &ServeArgs) -> Result<Config, Vec<ConfigError>> {
        let mut e = Errors(Vec::new());
        let store = match raw.store.as_deref() {
            None | Some("embedded") => StoreKind::Embedded,
            Some(s) if s.starts_with("postgres://") || s.starts_with("postgresql://") => {
                if s.parse::<tokio_postgres::Config>().is_err() {
                    e.push("store", "not a valid PostgreSQL connection URL");
                }
                StoreKind::Postgres(s.to_owned())
            }
            Some(s) => {
                e.push("store", format!("`{s}` is neither `embedded` nor a postgres:// URL"));
                StoreKind::Embedded
            }
        };
        let tls = match (&raw.tls_cert, &raw.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
                client_ca: raw.client_ca.as_ref().map(PathBuf::from),
                optional_client_ca: raw.admin_client_ca.as_ref().map(PathBuf::from),
            }),
            (None, None) => {
                if raw.client_ca.is_some() {
                    e.push("client-ca", "needs --tls-cert and --tls-key");
                }
                if raw.admin_client_ca.is_some() {
                    e.push("admin-client-ca", "needs --tls-cert and --tls-key");
                }
                None
            }
            (Some(_), None) => {
                e.push("tls-key", "--tls-cert needs --tls-key");
                None
            }
            (None, Some(_)) => {
                e.push("tls-cert", "--tls-key needs --tls-cert");
                None
            }
        };
        let tls = tls.and_then(|files| {
            crate::tls::ListenerTls::load(files).map_err(|err| e.push("tls-cert", err.to_string())).ok()
        });
        let file = |field: &'static str, v: &Option<String>, e: &mut Errors| {
            v.as_ref().map(PathBuf::from).inspect(|p| {
                if !p.is_file() {
                    e.push(field, format!("{} is not a readable file", p.display()));
                }
            })
        };
        let oidc = oidc_settings(raw, &mut e);
        let ssf = ssf_settings(raw, &mut e);
        let token_keys = token_key_settings(raw, &mut e);
        let operators = file("operators", &raw.operators, &mut e);
        if let Some(p) = &operators {
            // Checked now so a bad file stops the start (exit 64); loaded for real by `serve`.
            let admin = (raw.admin_token_file.is_some()).then_some("x".repeat(32));
            match crate::operators::Operators::load(Some(p), admin.as_deref(), &mut Vec::new()) {
                Ok(ops) if ops.uses_certificates() && raw.admin_client_ca.is_none() => {
                    e.push("operators", "an operator has `cert_subject`, which needs --admin-client-ca")
                }
                Ok(_) => {}
                Err(err) => e.push("operators", err.to_string()),
            }
        }
        let agent_listen = e.addr("agent-listen", &raw.agent_listen, "127.0.0.1:7400");
        let allow_unauthenticated = match raw.allow_unauthenticated_agents.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                e.push("allow-unauthenticated-agents", format!("`{other}` is neither true nor false"));
                false
            }
        };
        if !agent_listen.ip().is_loopback()
            && raw.agent_token_file.is_none()
            && raw.client_ca.is_none()
            && !allow_unauthenticated
        {
            e.push(
                "agent-listen",
                format!(
                    "{agent_listen} is reachable beyond this host and agents need no credential: anyone reaching it could join as any agent id and ack what it never applied; give --agent-token-file or --client-ca (or --allow-unauthenticated-agents)"
                ),
            );
        }
        let cfg = Config {
            operators,
            audit_retention: e.duration(
                "audit-retention",
                &raw.audit_retention,
                Duration::from_secs(90 * 86_400),
            ),
            token_keys,
            oidc,
            ssf,
            tls,
            store,
            store_timeout: e.duration("store-timeout", &raw.store_timeout, Duration::from_secs(5)),
            data_dir: PathBuf::from(raw.data_dir.as_deref().unwrap_or("./revmesh-data/authority")),
            agent_listen,
            admin_listen: e.addr("admin-listen", &raw.admin_listen, "127.0.0.1:7401"),
            admin_token_file: file("admin-token-file", &raw.admin_token_file, &mut e).inspect(|p| {
                let len = std::fs::read_to_string(p).map(|t| t.trim().len()).unwrap_or(0);
                if p.is_file() && len < 16 {
                    e.push(
                        "admin-token-file",
                        format!("{}: the token must be at least 16 characters", p.display()),
                    );
                }
            }),
            agent_token_file: file("agent-token-file", &raw.agent_token_file, &mut e),
            max_token_ttl: e.duration("max-token-ttl", &raw.max_token_ttl, Duration::from_secs(86_400)),
            ack_timeout: e.duration("ack-timeout", &raw.ack_timeout, Duration::from_secs(2)),
            heartbeat: e.duration("heartbeat", &raw.heartbeat, Duration::from_secs(5)),
            max_agents: e.number("max-agents", &raw.max_agents, 20_000, 1) as usize,
            max_catchups: e.number("max-catchups", &raw.max_catchups, 256, 1) as usize,
            max_admin_connections: e.number("max-admin-connections", &raw.max_admin_connections, 1024, 1)
                as usize,
            admin_header_timeout: e.duration(
                "admin-header-timeout",
                &raw.admin_header_timeout,
                Duration::from_secs(10),
            ),
            admin_body_timeout: e.duration(
                "admin-body-timeout",
                &raw.admin_body_timeout,
                Duration::from_secs(10),
            ),
            admin_idle_timeout: e.duration(
                "admin-idle-timeout",
                &raw.admin_idle_timeout,
                Duration::from_secs(60),
            ),
            handshake_timeout: e.duration(
                "handshake-timeout",
                &raw.handshake_timeout,
                Duration::from_secs(10),
            ),
            max_pending_per_agent: e.number("max-pending-per-agent", &raw.max_pending_per_agent, 4096, 256),
            retain_entries: e.number("retain-entries", &raw.retain_entries, 100_000, 0),
            compact_interval: e.duration("compact-interval", &raw.compact_interval, Duration::from_secs(60)),
            log: raw.log.clone().unwrap_or_else(|| "info".into()),
            log_json: match raw.log_format.as_deref() {
                None | Some("text") => false,
                Some("json") => true,
                Some(other) => {
                    e.push("log-format", format!("`{other}` is neither `text` nor `json`"));
                    false
                }
            },
        };
        if e.0.is_empty() {
            Ok(cfg)
        } else {
            Err(e.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flags and environment win where they give a value; the file fills in the rest, lists
    /// included (a non-empty list on the command line replaces the file's).
    #[test]
    fn given_settings_replace_the_files_and_the_rest_come_from_it() {
        let file: ServeArgs = toml::from_str(
            r#"
            data-dir = "/from/file"
            max-agents = 10
            heartbeat = "9s"
            oidc-provider = ["https://a=/a.json"]
            oidc-audience = "aud-file"
            "#,
        )
        .unwrap();
        let given = ServeArgs {
            max_agents: Some("20".into()),
            oidc_audience: vec!["aud-flag".into()],
            ..Default::default()
        };
        let m = overlay(&given, file).unwrap();
        assert_eq!(m.data_dir.as_deref(), Some("/from/file"));
        assert_eq!(m.max_agents.as_deref(), Some("20"));
        assert_eq!(m.heartbeat.as_deref(), Some("9s"));
        assert_eq!(m.oidc_provider, vec!["https://a=/a.json".to_owned()]);
        assert_eq!(m.oidc_audience, vec!["aud-flag".to_owned()]);
    }

    /// Every setting takes part in the overlay: one given on the command line survives it,
    /// whatever its name (the old hand-kept list of fields could miss a new flag).
    #[test]
    fn every_setting_takes_part_in_the_overlay() {
        let serde_json::Value::Object(names) = serde_json::to_value(ServeArgs::default()).unwrap() else {
            panic!("settings are a table")
        };
        for (name, empty) in names {
            let value = match (name.as_str(), empty.is_array()) {
                ("ssf", _) => {
                    serde_json::json!([{"issuer": "i", "jwks": "j", "audiences": [], "aliases": [], "opaque_subject": null}])
                }
                (_, true) => serde_json::json!(["x"]),
                (_, false) => serde_json::json!("x"),
            };
            let given: ServeArgs = serde_json::from_value(serde_json::json!({ name.clone(): value.clone() }))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let merged = serde_json::to_value(overlay(&given, ServeArgs::default()).unwrap()).unwrap();
            assert_eq!(merged[&name], value, "{name}");
        }
    }

    #[test]
    fn every_bad_field_is_reported() {
        let raw = ServeArgs {
            agent_listen: Some("nope".into()),
            heartbeat: Some("5 parsecs".into()),
            max_agents: Some("0".into()),
            store: Some("mysql://x".into()),
            ..Default::default()
        };
        let errs = Config::build(&raw).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["store", "agent-listen", "heartbeat", "max-agents"]);
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::build(&ServeArgs::default()).unwrap();
        assert_eq!(c.agent_listen.to_string(), "127.0.0.1:7400");
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:7401");
        assert_eq!(c.max_token_ttl, Duration::from_secs(86_400));
    }

    /// What operators naturally write: numbers as numbers.
    #[test]
    fn toml_takes_numbers_as_numbers_and_strings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(&path, "max-agents = 100\nmax-catchups = \"7\"\nretain-entries = 0\n").unwrap();
        let raw = ServeArgs { config: Some(path), ..Default::default() };
        let c = Config::build(&raw.with_file().unwrap()).unwrap();
        assert_eq!((c.max_agents, c.max_catchups, c.retain_entries), (100, 7, 0));
    }

    #[test]
    fn a_missing_or_short_admin_token_file_is_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "abc").unwrap();
        for (file, want) in [(dir.path().join("absent"), "not a readable file"), (short, "at least 16")] {
            let raw = ServeArgs { admin_token_file: Some(file.display().to_string()), ..Default::default() };
            let errs = Config::build(&raw).unwrap_err();
            assert_eq!(errs[0].field, "admin-token-file");
            assert!(errs[0].message.contains(want), "{}", errs[0].message);
        }
    }

    #[test]
    fn toml_keys_fill_what_flags_leave_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(&path, "heartbeat = \"1s\"\nadmin-listen = \"127.0.0.1:9\"\n").unwrap();
        let raw = ServeArgs { config: Some(path), heartbeat: Some("2s".into()), ..Default::default() };
        let c = Config::build(&raw.with_file().unwrap()).unwrap();
        assert_eq!(c.heartbeat, Duration::from_secs(2));
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9");
    }

    #[test]
    fn shared_signals_transmitters_from_flags_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, r#"{"keys":[]}"#).unwrap();
        let tokens = dir.path().join("push.tokens");
        std::fs::write(&tokens, "push-token-0123456789\n").unwrap();
        let path = dir.path().join("a.toml");
        let toml = format!(
            "ssf-audience = [\"aud-a\"]\nssf-push-token-file = \"{t}\"\n[[ssf]]\nissuer = \"https://okta.example\"\njwks = \"{j}\"\naudiences = [\"aud-okta\"]\naliases = [\"https://okta.example/oauth2/default\"]\nopaque_subject = \"session\"\n",
            j = jwks.display(),
            t = tokens.display()
        );
        std::fs::write(&path, toml).unwrap();
        let flag = format!("https://entra.example={}", jwks.display());
        let raw = ServeArgs {
            config: Some(path),
            ssf_transmitter: vec![flag],
            ssf_alias: vec!["https://entra.example=https://sts.entra.example/".into()],
            ..Default::default()
        };
        let c = Config::build(&raw.with_file().unwrap()).unwrap();
        let s = c.ssf.unwrap();
        assert_eq!(s.max_age, Duration::from_secs(3600));
        assert_eq!(s.revoke_on.len(), 6, "the CAEP and RISC events of the table");
        let okta = &s.transmitters[0];
        assert_eq!((okta.issuer.as_str(), okta.opaque_is_session), ("https://okta.example", true));
        assert_eq!(okta.audiences, ["aud-okta"]);
        let entra = &s.transmitters[1];
        assert_eq!(entra.aliases, ["https://sts.entra.example/"]);
        assert_eq!(s.audiences, ["aud-a"]);

        let bad = ServeArgs {
            ssf_transmitter: vec!["no-equals".into(), format!("https://a={}", jwks.display())],
            ssf_alias: vec!["https://b=https://c".into()],
            ssf_opaque_subject: vec!["https://a=device".into()],
            ssf_revoke_on: vec!["https://schemas.openid.net/secevent/ssf/event-type/verification".into()],
            ssf_push_token_file: Some(dir.path().join("absent").display().to_string()),
            ..Default::default()
        };
        let errs = Config::build(&bad).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field).collect();
        for f in [
            "ssf-transmitter",
            "ssf-alias",
            "ssf-opaque-subject",
            "ssf-audience",
            "ssf-revoke-on",
            "ssf-push-token-file",
        ] {
            assert!(fields.contains(&f), "{f}: {errs:?}");
        }
        let lonely = ServeArgs { ssf_audience: vec!["x".into()], ..Default::default() };
        assert_eq!(Config::build(&lonely).unwrap_err()[0].field, "ssf-audience");
        let undelivered = ServeArgs {
            ssf_transmitter: vec![format!("https://a={}", jwks.display())],
            ssf_audience: vec!["x".into()],
            ..Default::default()
        };
        let errs = Config::build(&undelivered).unwrap_err();
        assert!(errs[0].message.contains("push") && errs[0].message.contains("poll"), "{errs:?}");
    }
}
