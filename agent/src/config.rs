//! Agent configuration: raw flags / `REVMESH_*` env / TOML, then a validated [`Config`] built
//! before any socket is bound, with every bad field reported at once.

use clap::{Args, Parser, Subcommand};
use revmesh_protocol::time::parse_duration;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `revmesh-agent`: answers "is this token still good?" from local memory.
#[derive(Debug, Parser)]
#[command(name = "revmesh-agent", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent.
    Run(Box<RunArgs>),
    /// Ask a running agent about one token; exit 0 only for OK.
    Check(CheckArgs),
    /// Print an HS256 token signed with a secret file, for trying things out.
    Token(TokenArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `revmesh-agent man > revmesh-agent.1`.
    Man,
}

/// `token` arguments.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The HMAC secret (at least 32 bytes), as the agent's --hs256-secret-file.
    #[arg(long)]
    pub hs256_secret_file: PathBuf,
    /// `sub` claim.
    #[arg(long)]
    pub sub: String,
    /// Lifetime (`exp` = now + ttl).
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// `jti` claim [default: random].
    #[arg(long)]
    pub jti: Option<String>,
    /// `sid` claim.
    #[arg(long)]
    pub sid: Option<String>,
    /// `iss` claim.
    #[arg(long)]
    pub iss: Option<String>,
    /// `aud` claim.
    #[arg(long)]
    pub aud: Option<String>,
}

/// `check` arguments.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The agent's socket.
    #[arg(long, env = "REVMESH_SOCKET", default_value = "./revmesh-data/agent.sock")]
    pub socket: PathBuf,
    /// The JWT.
    pub jwt: String,
}

/// Raw `run` settings; all optional until [`Config::build`].
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RunArgs {
    /// TOML file with any of these settings as keys (flags and env win).
    #[arg(long, env = "REVMESH_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Authority WebSocket URL, e.g. ws://127.0.0.1:7400 (repeatable: failover list).
    #[arg(long, env = "REVMESH_AUTHORITY", value_delimiter = ',')]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::list")]
    pub authority: Vec<String>,
    /// Agent id [default: hostname plus a hash of the socket path].
    #[arg(long, env = "REVMESH_ID")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub id: Option<String>,
    /// CA bundle (PEM) the authority's certificate must chain to; needed for wss:// URLs.
    #[arg(long, env = "REVMESH_CA_FILE")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub ca_file: Option<String>,
    /// Client certificate (PEM) for authorities that require mutual TLS; must name --id.
    #[arg(long, env = "REVMESH_TLS_CERT")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub tls_cert: Option<String>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, env = "REVMESH_TLS_KEY")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub tls_key: Option<String>,
    /// File with the bearer token presented to the authority.
    #[arg(long, env = "REVMESH_TOKEN_FILE")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub token_file: Option<String>,
    /// Persistent state directory [default: ./revmesh-data/agent].
    #[arg(long, env = "REVMESH_DATA_DIR")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub data_dir: Option<String>,
    /// Line-protocol Unix socket [default: ./revmesh-data/agent.sock].
    #[arg(long, env = "REVMESH_SOCKET")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub socket: Option<String>,
    /// HTTP/1.1 Unix socket for `GET /v1/check` (nginx auth_request).
    #[arg(long, env = "REVMESH_HTTP_SOCKET")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub http_socket: Option<String>,
    /// HTTP/1.1 check endpoint over TCP, e.g. 127.0.0.1:7403, for proxies that cannot use a
    /// Unix socket [default: off].
    #[arg(long, env = "REVMESH_HTTP_LISTEN")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub http_listen: Option<String>,
    /// Cookie read for the token when a check request has no `Authorization: Bearer`
    /// [default: none].
    #[arg(long, env = "REVMESH_TOKEN_COOKIE")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub token_cookie: Option<String>,
    /// Envoy/Istio ext_authz gRPC (`envoy.service.auth.v3.Authorization`) on a Unix socket.
    #[arg(long, env = "REVMESH_GRPC_SOCKET")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub grpc_socket: Option<String>,
    /// Envoy/Istio ext_authz gRPC over TCP, e.g. 127.0.0.1:9191 [default: off].
    #[arg(long, env = "REVMESH_GRPC_LISTEN")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub grpc_listen: Option<String>,
    /// Group (name or gid) given to every Unix socket the agent creates, so a proxy running as
    /// another user (nginx's www-data, Envoy's uid) can connect [default: the agent's group].
    #[arg(long, env = "REVMESH_SOCKET_GROUP")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub socket_group: Option<String>,
    /// Mode (octal) of every Unix socket the agent creates [default: 0660].
    #[arg(long, env = "REVMESH_SOCKET_MODE")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub socket_mode: Option<String>,
    /// Prometheus endpoint [default: 127.0.0.1:7402].
    #[arg(long, env = "REVMESH_METRICS_LISTEN")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub metrics_listen: Option<String>,
    /// JWKS URL (https://, or http:// to 127.0.0.1 only; repeatable): fetched at start, on
    /// schedule and at once on an unknown `kid`.
    #[arg(long, env = "REVMESH_JWKS_URL", value_delimiter = ',')]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::list")]
    pub jwks_url: Vec<String>,
    /// CA bundle for `--jwks-url` [default: the system's].
    #[arg(long, env = "REVMESH_JWKS_CA_FILE")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub jwks_ca_file: Option<String>,
    /// Scheduled refresh of `--jwks-url` (a shorter `Cache-Control: max-age` wins) [default: 5m].
    #[arg(long, env = "REVMESH_JWKS_REFRESH")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub jwks_refresh: Option<String>,
    /// Least time between two fetches of one `--jwks-url` [default: 10s].
    #[arg(long, env = "REVMESH_JWKS_MIN_REFRESH")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub jwks_min_refresh: Option<String>,
    /// HMAC secret file (HS256/384/512; at least 32 bytes).
    #[arg(long, env = "REVMESH_HS256_SECRET_FILE")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub hs256_secret_file: Option<String>,
    /// Public key PEM (RSA, EC P-256/P-384 or Ed25519; repeatable).
    #[arg(long, env = "REVMESH_PUBLIC_KEY_FILE", value_delimiter = ',')]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::list")]
    pub public_key_file: Vec<String>,
    /// JWKS file (keys selected by `kid`).
    #[arg(long, env = "REVMESH_JWKS_FILE")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub jwks_file: Option<String>,
    /// Required `iss`.
    #[arg(long, env = "REVMESH_ISSUER")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub issuer: Option<String>,
    /// Required audience.
    #[arg(long, env = "REVMESH_AUDIENCE")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub audience: Option<String>,
    /// Clock skew allowed on exp/nbf/iat [default: 30s].
    #[arg(long, env = "REVMESH_LEEWAY")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub leeway: Option<String>,
    /// Longest token accepted [default: 8192].
    #[arg(long, env = "REVMESH_MAX_TOKEN_BYTES")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub max_token_bytes: Option<String>,
    /// Longest token lifetime accepted (exp − iat, or exp − now without iat); a longer one is
    /// `INVALID reason=lifetime`. The authority's own, learned on connect, applies when shorter
    /// [default: 24h].
    #[arg(long, env = "REVMESH_MAX_TOKEN_TTL")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub max_token_ttl: Option<String>,
    /// Time without hearing from an authority before answers become stale [default: 30s].
    #[arg(long, env = "REVMESH_MAX_STALENESS")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub max_staleness: Option<String>,
    /// `closed` (answer STALE) or `open` (answer from the last set, marked stale=1) [default: closed].
    #[arg(long, env = "REVMESH_ON_STALE")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub on_stale: Option<String>,
    /// Peer uids allowed on the sockets (repeatable) [default: any].
    #[arg(long, env = "REVMESH_ALLOW_UID", value_delimiter = ',')]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::list")]
    pub allow_uid: Vec<String>,
    /// Most socket clients at once [default: 4096].
    #[arg(long, env = "REVMESH_MAX_CLIENTS")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub max_clients: Option<String>,
    /// Socket clients idle this long are closed [default: 5m].
    #[arg(long, env = "REVMESH_CLIENT_IDLE_TIMEOUT")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub client_idle_timeout: Option<String>,
    /// A revocation awaited only at the applied level (`?wait=applied`) is reported applied at
    /// once; its fsync may wait this long to be shared with later ones (0: at once; at most
    /// 1s) [default: 100ms].
    #[arg(long, env = "REVMESH_APPLIED_FSYNC_DELAY")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub applied_fsync_delay: Option<String>,
    /// Log filter [default: info].
    #[arg(long, env = "REVMESH_LOG")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub log: Option<String>,
    /// `text` or `json` (one JSON object per line, the ready line included) [default: text].
    #[arg(long, env = "REVMESH_LOG_FORMAT")]
    #[serde(default, deserialize_with = "revmesh_protocol::conf::opt_scalar")]
    pub log_format: Option<String>,
}

/// What to do past the staleness bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStale {
    /// Deny: answer STALE.
    Closed,
    /// Decide from the last set and say `stale=1`.
    Open,
}

/// Validated agent settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// TLS for wss:// authorities.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Authority URLs, in failover order.
    pub authorities: Vec<String>,
    /// Agent id.
    pub id: String,
    /// Bearer token for the authority.
    pub token: Option<String>,
    /// Where the token and the TLS material come from (re-read on SIGHUP).
    pub credential_files: CredentialFiles,
    /// State directory.
    pub data_dir: PathBuf,
    /// Line socket.
    pub socket: PathBuf,
    /// HTTP socket.
    pub http_socket: Option<PathBuf>,
    /// HTTP over TCP.
    pub http_listen: Option<SocketAddr>,
    /// Cookie holding the token when there is no bearer header.
    pub token_cookie: Option<String>,
    /// ext_authz gRPC socket.
    pub grpc_socket: Option<PathBuf>,
    /// ext_authz gRPC over TCP.
    pub grpc_listen: Option<SocketAddr>,
    /// Ownership and mode of the sockets.
    pub socket_access: crate::server::SocketAccess,
    /// Metrics address.
    pub metrics_listen: SocketAddr,
    /// Where the verification keys come from (re-read on SIGHUP).
    pub keys: crate::jwt::KeyFiles,
    /// The keys as validation loaded them (start-up uses these; it does not read the files again).
    pub verification: std::sync::Arc<crate::jwt::Keys>,
    /// `--jwks-url` sets.
    pub jwks_urls: Vec<revmesh_jwt::remote::Location>,
    /// CA bundle for them.
    pub jwks_ca_file: Option<PathBuf>,
    /// Their scheduled refresh.
    pub jwks_refresh: Duration,
    /// Least time between two fetches of one of them.
    pub jwks_min_refresh: Duration,
    /// Verification rules.
    pub rules: crate::jwt::Rules,
    /// Staleness bound.
    pub max_staleness: Duration,
    /// `--max-token-ttl`: the longest token lifetime accepted (the authority's applies when shorter).
    pub max_token_ttl: Duration,
    /// Stale policy.
    pub on_stale: OnStale,
    /// Peer uid allow list (empty: any).
    pub allow_uid: Vec<u32>,
    /// Client cap.
    pub max_clients: usize,
    /// Client idle timeout.
    pub client_idle_timeout: Duration,
    /// Longest wait of an fsync for entries awaited only at the applied level.
    pub applied_fsync_delay: Duration,
    /// Log filter.
    pub log: String,
    /// JSON log lines.
    pub log_json: bool,
}

/// Files behind the agent's credentials, re-read on SIGHUP.
#[derive(Debug, Clone, Default)]
pub struct CredentialFiles {
    /// `--token-file`.
    pub token: Option<PathBuf>,
    /// `--ca-file`.
    pub ca: Option<PathBuf>,
    /// `--tls-cert`.
    pub cert: Option<PathBuf>,
    /// `--tls-key`.
    pub key: Option<PathBuf>,
}

impl CredentialFiles {
    /// Reads the token and builds the TLS configuration.
    pub fn load(&self) -> Result<crate::link::Credentials, String> {
        let token = match &self.token {
            Some(p) => Some(
                std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?.trim().to_owned(),
            ),
            None => None,
        };
        let tls = crate::link::client_tls(self.ca.as_deref(), self.cert.as_deref(), self.key.as_deref())?;
        Ok(crate::link::Credentials { token, tls })
    }
}

pub use revmesh_runtime::config::{ConfigError, ConfigErrors};

macro_rules! merge {
    ($cli:expr, $file:expr; opt: $($o:ident),*; vec: $($v:ident),*) => {
        RunArgs {
            config: $cli.config.clone(),
            $($o: $cli.$o.clone().or($file.$o.clone()),)*
            $($v: if $cli.$v.is_empty() { $file.$v.clone() } else { $cli.$v.clone() },)*
        }
    };
}

impl RunArgs {
    /// Flags and env over the TOML file.
    pub fn with_file(self) -> Result<RunArgs, Vec<ConfigError>> {
        let Some(path) = &self.config else { return Ok(self) };
        let err =
            |e: String| vec![ConfigError { field: "config", message: format!("{}: {e}", path.display()) }];
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let file: RunArgs = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        Ok(merge!(self, file;
            opt: id, ca_file, tls_cert, tls_key, token_file, data_dir, socket, http_socket, http_listen, token_cookie,
                 grpc_socket, grpc_listen, jwks_ca_file, jwks_refresh, jwks_min_refresh, socket_group, socket_mode, metrics_listen, hs256_secret_file, jwks_file,
                 issuer, audience, leeway, max_token_bytes, max_token_ttl, max_staleness, on_stale, max_clients,
                 client_idle_timeout, applied_fsync_delay, log, log_format;
            vec: authority, public_key_file, allow_uid, jwks_url))
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "agent".into())
}

/// A group name or number as a gid, from `/etc/group` for names.
fn group_id(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group").map_err(|e| format!("/etc/group: {e}"))?;
    groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let (name, _, gid) = (f.next()?, f.next()?, f.next()?);
            (name == group).then(|| gid.parse().ok()).flatten()
        })
        .next()
        .ok_or_else(|| format!("no group named `{group}`"))
}

/// The default agent id: the hostname plus a short hash of the socket's absolute path, so two
/// agents on one host (two sidecars) get distinct ids and one agent keeps its id across restarts.
pub fn default_id(socket: &std::path::Path) -> String {
    let abs = std::path::absolute(socket).unwrap_or_else(|_| socket.to_path_buf());
    let hash = xxhash_rust::xxh3::xxh3_64(abs.as_os_str().as_encoded_bytes());
    format!("{}-{:08x}", hostname(), hash as u32)
}

impl Config {
    /// Validates raw settings, reporting every problem.
    pub fn build(raw: &RunArgs) -> Result<Config, Vec<ConfigError>> {
        let mut errs = Vec::new();
        let mut push = |field: &'static str, message: String| errs.push(ConfigError { field, message });
        let dur = |field: &'static str,
                   v: &Option<String>,
                   d: Duration,
                   push: &mut dyn FnMut(&'static str, String)| {
            match v.as_deref().map(parse_duration) {
                None => d,
                Some(Ok(x)) => x,
                Some(Err(e)) => {
                    push(field, e);
                    d
                }
            }
        };
        for a in &raw.authority {
            if !(a.starts_with("ws://") || a.starts_with("wss://")) {
                push("authority", format!("`{a}` must be a ws:// URL"));
            } else if a.starts_with("wss://") && raw.ca_file.is_none() {
                push("authority", format!("`{a}` is a wss:// URL: give --ca-file to verify the authority"));
            } else if a
                .trim_start_matches("ws://")
                .trim_start_matches("wss://")
                .split(['/', ':'])
                .next()
                .is_none_or(str::is_empty)
            {
                push("authority", format!("`{a}` has no host"));
            }
        }
        let socket = PathBuf::from(raw.socket.as_deref().unwrap_or("./revmesh-data/agent.sock"));
        let id = raw.id.clone().unwrap_or_else(|| default_id(&socket));
        if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            push("id", "must be 1-128 characters without spaces".into());
        }
        let token = match &raw.token_file {
            Some(p) => match std::fs::read_to_string(p) {
                Ok(t) => Some(t.trim().to_owned()),
                Err(e) => {
                    push("token-file", format!("{p}: {e}"));
                    None
                }
            },
            None => None,
        };
        let tls = match crate::link::client_tls(
            raw.ca_file.as_deref().map(std::path::Path::new),
            raw.tls_cert.as_deref().map(std::path::Path::new),
            raw.tls_key.as_deref().map(std::path::Path::new),
        ) {
            Ok(t) => t,
            Err(e) => {
                push("ca-file", e);
                None
            }
        };
        let mode =
            match raw.socket_mode.as_deref().map(|m| u32::from_str_radix(m.trim_start_matches("0o"), 8)) {
                None => 0o660,
                Some(Ok(m)) if m <= 0o777 => m,
                _ => {
                    push("socket-mode", "must be an octal mode such as 0660".into());
                    0o660
                }
            };
        let gid = match raw.socket_group.as_deref().map(group_id) {
            None => None,
            Some(Ok(g)) => Some(g),
            Some(Err(e)) => {
                push("socket-group", e);
                None
            }
        };
        let mut addr = |field: &'static str, v: &Option<String>| -> Option<SocketAddr> {
            let text = v.as_deref()?;
            text.parse()
                .map_err(|_| push(field, format!("`{text}` is not an address such as 127.0.0.1:7403")))
                .ok()
        };
        let http_listen = addr("http-listen", &raw.http_listen);
        let grpc_listen = addr("grpc-listen", &raw.grpc_listen);
        if let Some(c) = &raw.token_cookie {
            if c.is_empty()
                || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            {
                push("token-cookie", format!("`{c}` is not a cookie name"));
            }
        }
        let metrics_text = raw.metrics_listen.as_deref().unwrap_or("127.0.0.1:7402");
        let metrics_listen = metrics_text.parse().unwrap_or_else(|_| {
            push("metrics-listen", format!("`{metrics_text}` is not an address"));
            SocketAddr::from(([127, 0, 0, 1], 0))
        });
        let max_token_bytes = match raw.max_token_bytes.as_deref().map(str::parse::<usize>) {
            None => 8192,
            Some(Ok(n)) if (64..=1 << 20).contains(&n) => n,
            _ => {
                push("max-token-bytes", "must be a number between 64 and 1048576".into());
                8192
            }
        };
        let on_stale = match raw.on_stale.as_deref() {
            None | Some("closed") => OnStale::Closed,
            Some("open") => OnStale::Open,
            Some(o) => {
                push("on-stale", format!("`{o}` is neither `closed` nor `open`"));
                OnStale::Closed
            }
        };
        let mut allow_uid = Vec::new();
        for u in &raw.allow_uid {
            match u.parse() {
                Ok(n) => allow_uid.push(n),
                Err(_) => push("allow-uid", format!("`{u}` is not a uid")),
            }
        }
        let max_clients = match raw.max_clients.as_deref().map(str::parse::<usize>) {
            None => 4096,
            Some(Ok(n)) if n > 0 => n,
            _ => {
                push("max-clients", "must be a positive number".into());
                4096
            }
        };
        let leeway = dur("leeway", &raw.leeway, Duration::from_secs(30), &mut push);
        // Revocations are kept this long past their expiry; a longer leeway would accept a
        // revoked token after its entry was forgotten.
        if leeway.as_secs() > revmesh_protocol::model::EXPIRY_GRACE_SECS {
            push("leeway", format!("must be at most {}s", revmesh_protocol::model::EXPIRY_GRACE_SECS));
        }
        let max_staleness = dur("max-staleness", &raw.max_staleness, Duration::from_secs(30), &mut push);
        let max_token_ttl = dur("max-token-ttl", &raw.max_token_ttl, Duration::from_secs(86_400), &mut push);
        if max_token_ttl.is_zero() {
            push("max-token-ttl", "must be at least 1s".into());
        }
        let client_idle_timeout =
            dur("client-idle-timeout", &raw.client_idle_timeout, Duration::from_secs(300), &mut push);
        let applied_fsync_delay =
            dur("applied-fsync-delay", &raw.applied_fsync_delay, Duration::from_millis(100), &mut push);
        // Far below the authority's ack timeout (2s by default): a held fsync must not look
        // like a lost ack.
        if applied_fsync_delay > Duration::from_secs(1) {
            push("applied-fsync-delay", "must be at most 1s".into());
        }
        let keys = crate::jwt::KeyFiles {
            hmac_secret: raw.hs256_secret_file.as_ref().map(PathBuf::from),
            public_keys: raw.public_key_file.iter().map(PathBuf::from).collect(),
            jwks: raw.jwks_file.as_ref().map(PathBuf::from),
        };
        let verification = match keys.load() {
            Ok(k) => std::sync::Arc::new(k),
            Err(e) => {
                push(e.field, e.message);
                std::sync::Arc::default()
            }
        };
        let jwks_refresh = dur("jwks-refresh", &raw.jwks_refresh, Duration::from_secs(300), &mut push);
        let jwks_min_refresh =
            dur("jwks-min-refresh", &raw.jwks_min_refresh, Duration::from_secs(10), &mut push);
        let mut jwks_urls = Vec::new();
        for u in &raw.jwks_url {
            match revmesh_jwt::remote::Location::parse(u) {
                Ok(l @ revmesh_jwt::remote::Location::Url { .. }) => jwks_urls.push(l),
                Ok(_) => push("jwks-url", format!("`{u}` is not a URL (use --jwks-file for a file)")),
                Err(e) => push("jwks-url", e),
            }
        }
        let jwks_ca_file = raw.jwks_ca_file.as_ref().map(PathBuf::from);
        if let Some(c) = &jwks_ca_file {
            if let Err(e) = revmesh_runtime::pem::roots(c) {
                push("jwks-ca-file", e.to_string());
            }
        }
        let cfg = Config {
            jwks_urls,
            jwks_ca_file,
            jwks_refresh,
            jwks_min_refresh,
            verification,
            tls,
            credential_files: CredentialFiles {
                token: raw.token_file.as_ref().map(PathBuf::from),
                ca: raw.ca_file.as_ref().map(PathBuf::from),
                cert: raw.tls_cert.as_ref().map(PathBuf::from),
                key: raw.tls_key.as_ref().map(PathBuf::from),
            },
            authorities: raw.authority.clone(),
            id,
            token,
            data_dir: PathBuf::from(raw.data_dir.as_deref().unwrap_or("./revmesh-data/agent")),
            socket,
            http_socket: raw.http_socket.as_ref().map(PathBuf::from),
            http_listen,
            token_cookie: raw.token_cookie.clone(),
            grpc_socket: raw.grpc_socket.as_ref().map(PathBuf::from),
            grpc_listen,
            socket_access: crate::server::SocketAccess { mode, gid },
            metrics_listen,
            keys,
            rules: crate::jwt::Rules {
                issuer: raw.issuer.clone(),
                audience: raw.audience.clone(),
                leeway_secs: leeway.as_secs(),
                max_token_bytes,
            },
            max_staleness,
            max_token_ttl,
            on_stale,
            allow_uid,
            max_clients,
            client_idle_timeout,
            applied_fsync_delay,
            log: raw.log.clone().unwrap_or_else(|| "info".into()),
            log_json: match raw.log_format.as_deref() {
                None | Some("text") => false,
                Some("json") => true,
                Some(other) => {
                    push("log-format", format!("`{other}` is neither `text` nor `json`"));
                    false
                }
            },
        };
        if errs.is_empty() {
            Ok(cfg)
        } else {
            Err(errs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two sidecars on one host must not share the default id; one agent keeps its own.
    #[test]
    fn default_ids_differ_per_socket_and_are_stable() {
        let a = default_id(std::path::Path::new("/run/a/agent.sock"));
        let b = default_id(std::path::Path::new("/run/b/agent.sock"));
        assert_ne!(a, b);
        assert_eq!(a, default_id(std::path::Path::new("/run/a/agent.sock")));
        assert!(a.starts_with(&hostname()));
    }

    /// What operators naturally write: one authority as a string, numbers as numbers.
    #[test]
    fn toml_takes_natural_forms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(
            &path,
            "authority = \"ws://127.0.0.1:7400\"\nmax-clients = 5\nallow-uid = 1000\npublic-key-file = []\n",
        )
        .unwrap();
        let raw = RunArgs { config: Some(path), ..Default::default() };
        let c = Config::build(&raw.with_file().unwrap()).unwrap();
        assert_eq!(c.authorities, ["ws://127.0.0.1:7400"]);
        assert_eq!((c.max_clients, c.allow_uid.as_slice()), (5, &[1000][..]));
    }

    #[test]
    fn socket_groups_resolve_by_name_or_number() {
        assert_eq!(group_id("root"), Ok(0));
        assert_eq!(group_id("4242"), Ok(4242));
        assert!(group_id("no-such-group-here").is_err());
    }
}
