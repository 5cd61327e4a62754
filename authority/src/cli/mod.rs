//! Operator subcommands (`revoke`, `agents`, `status`): small HTTP/1.1 calls to the admin API
//! with human-readable output, or the raw JSON with `--json`.

pub mod import;
pub mod ssf;

use crate::config::{
    AgentsAction, AgentsArgs, BackupArgs, ClientArgs, RestoreArgs, RevokeArgs, RevokeWhat, WithdrawArgs,
};
use revmesh_protocol::time::parse_duration;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Largest admin API answer read.
const MAX_RESPONSE: usize = 16 << 20;

/// Parses unix seconds or an RFC 3339 time (`2026-11-29T12:00:00Z`, offsets allowed).
pub fn parse_time(text: &str) -> Result<u64, String> {
    if let Ok(n) = text.parse::<u64>() {
        return Ok(n);
    }
    let bad = || format!("`{text}` is neither unix seconds nor an RFC 3339 time like 2026-11-29T12:00:00Z");
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| text.get(r).and_then(|s| s.parse::<i64>().ok()).ok_or_else(bad);
    let (y, mo, d, h, mi, s) =
        (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return Err(bad());
    }
    // Slices by byte position only through `get`: the input may hold multi-byte characters.
    let mut rest = text.get(19..).ok_or_else(bad)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.find(|c: char| !c.is_ascii_digit()).unwrap_or(frac.len());
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        r if r.len() == 6 && (r.starts_with('+') || r.starts_with('-')) && r.get(3..4) == Some(":") => {
            let oh: i64 = r.get(1..3).and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            let om: i64 = r.get(4..6).and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            let sign = if r.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return Err(bad()),
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset;
    u64::try_from(secs).map_err(|_| bad())
}

/// An admin API answer.
pub(crate) struct Answer {
    /// HTTP status.
    pub(crate) status: u16,
    /// Body text.
    pub(crate) body: String,
}

fn token(args: &ClientArgs) -> Result<String, String> {
    let path =
        args.token_file.clone().unwrap_or_else(|| PathBuf::from("./revmesh-data/authority/admin.token"));
    std::fs::read_to_string(&path)
        .map(|t| t.trim().to_owned())
        .map_err(|e| format!("cannot read the admin token from {}: {e} (use --token-file)", path.display()))
}

pub(crate) fn call(
    args: &ClientArgs,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Answer, String> {
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let (status, body) = call_bytes(args, method, path, payload.as_bytes(), timeout, MAX_RESPONSE)?;
    Ok(Answer { status, body: String::from_utf8_lossy(&body).into_owned() })
}

/// One admin API call with `args`' URL, trust roots and token; the answer is at most
/// `max_response` bytes.
fn call_bytes(
    args: &ClientArgs,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
    max_response: usize,
) -> Result<(u16, bytes::Bytes), String> {
    let base = args.admin.trim_end_matches('/');
    let tls = match base.split_once("://") {
        // --ca-file, or else the platform's trust store.
        Some(("https", _)) => Some(match (&args.cert_file, &args.key_file) {
            (Some(cert), Some(key)) => {
                revmesh_runtime::http_client::tls_config_with_identity(args.ca_file.as_deref(), cert, key)?
            }
            _ => revmesh_runtime::http_client::tls_config(args.ca_file.as_deref())?,
        }),
        Some(("http", _)) if args.cert_file.is_some() => {
            return Err("--cert-file needs an https:// --admin URL".into())
        }
        Some(("http", _)) => None,
        _ => return Err(format!("--admin `{}` must start with http:// or https://", args.admin)),
    };
    // An operator named by its certificate sends no token, unless one is given explicitly.
    let token = if args.cert_file.is_some() && args.token_file.is_none() { None } else { Some(token(args)?) };
    request(tls, &format!("{base}{path}"), method, token.as_deref(), body, timeout, max_response)
}

/// A TLS client trusting the CA certificates in `ca` (PEM).
pub fn client_config(ca: &std::path::Path) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    revmesh_runtime::http_client::tls_config(Some(ca))
}

/// One HTTP/1.1 request to `hostport`; returns the status and the body. Used by the operator
/// commands and by tests. `timeout` bounds connecting and, separately, the whole exchange; the
/// answer is bounded to 16 MiB.
pub fn http_request(
    hostport: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, String), String> {
    text_request(None, &format!("http://{hostport}{path}"), method, token, body, timeout)
}

/// The same over TLS, verifying the server against `tls`'s roots.
pub fn https_request(
    hostport: &str,
    tls: std::sync::Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, String), String> {
    text_request(Some(tls), &format!("https://{hostport}{path}"), method, token, body, timeout)
}

/// [`request`] with an answer of at most 16 MiB, read as text.
fn text_request(
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    url: &str,
    method: &str,
    token: Option<&str>,
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, String), String> {
    request(tls, url, method, token, body, timeout, MAX_RESPONSE)
        .map(|(s, b)| (s, String::from_utf8_lossy(&b).into_owned()))
}

fn request(
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    url: &str,
    method: &str,
    token: Option<&str>,
    body: &[u8],
    timeout: Duration,
    max_response: usize,
) -> Result<(u16, bytes::Bytes), String> {
    let method = http::Method::from_bytes(method.as_bytes()).map_err(|_| format!("bad method `{method}`"))?;
    let client = revmesh_runtime::http_client::Client::new(tls, timeout, timeout, max_response);
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let answer = client
        .send_blocking(method, url, &headers, bytes::Bytes::copy_from_slice(body))
        .map_err(|e| e.to_string())?;
    Ok((answer.status, answer.body))
}

fn finish(args: &ClientArgs, answer: Result<Answer, String>, human: impl FnOnce(&Value)) -> ExitCode {
    let a = match answer {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let v: Value = serde_json::from_str(&a.body).unwrap_or(Value::String(a.body.clone()));
    if !(200..300).contains(&a.status) {
        // A 403 says which scope is missing, in words.
        let msg = v.get("message").or(v.get("error")).and_then(Value::as_str).unwrap_or(&a.body);
        match v.get("field").and_then(Value::as_str) {
            Some(f) => eprintln!("error ({}): {msg} [field: {f}]", a.status),
            None => eprintln!("error ({}): {msg}", a.status),
        }
        return ExitCode::FAILURE;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        human(&v);
    }
    ExitCode::SUCCESS
}

/// `revmesh-authority revoke …`
pub fn revoke(a: &RevokeArgs) -> ExitCode {
    let body = match revoke_body(a) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(64);
        }
    };
    let wait = match timeout_flag(&a.timeout) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let path = if a.wait {
        let level = if a.applied { "applied" } else { "all" };
        format!("/v1/revocations?wait={level}&timeout_ms={}", wait.as_millis())
    } else {
        "/v1/revocations".into()
    };
    let answer = call(&a.client, "POST", &path, Some(&body), wait + Duration::from_secs(10));
    finish(&a.client, answer, |v| {
        println!("revoked: seq {} in log {}", v["seq"], v["log_id"].as_str().unwrap_or("?"));
        print_receipt(v);
    })
}

fn revoke_body(a: &RevokeArgs) -> Result<Value, String> {
    let mut body = match &a.what {
        RevokeWhat::Jti { jti, expires_at, iss } => {
            let exp = expires_at.as_deref().map(parse_time).transpose()?;
            json!({"kind": "jti", "jti": jti, "iss": iss, "expires_at": exp})
        }
        RevokeWhat::Subject { sub, issued_before, iss } => {
            let ib = issued_before.as_deref().map(parse_time).transpose()?;
            json!({"kind": "subject", "sub": sub, "issued_before": ib, "iss": iss})
        }
        RevokeWhat::Key { kid } => json!({"kind": "key", "kid": kid}),
        RevokeWhat::Session { sid, iss } => json!({"kind": "session", "sid": sid, "iss": iss}),
    };
    if let (Some(r), Value::Object(m)) = (&a.reason, &mut body) {
        m.insert("reason".into(), json!(r));
    }
    Ok(body)
}

/// `--timeout`, or the usage error (exit code 64) that names it.
fn timeout_flag(text: &str) -> Result<Duration, ExitCode> {
    parse_duration(text).map_err(|e| {
        eprintln!("error: --timeout: {e}");
        ExitCode::from(64)
    })
}

/// `revmesh-authority withdraw SEQ`
pub fn withdraw(a: &WithdrawArgs) -> ExitCode {
    let wait = match timeout_flag(&a.timeout) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let path = if a.wait {
        format!("/v1/revocations/{}?wait=all&timeout_ms={}", a.seq, wait.as_millis())
    } else {
        format!("/v1/revocations/{}", a.seq)
    };
    let body = a.reason.as_ref().map(|r| json!({ "reason": r }));
    let answer = call(&a.client, "DELETE", &path, body.as_ref(), wait + Duration::from_secs(10));
    finish(&a.client, answer, |v| {
        if v["already_withdrawn"] == true {
            println!("seq {} was already withdrawn by seq {}", v["withdraws"], v["seq"]);
        } else {
            println!(
                "withdrawn: seq {} by seq {} in log {}",
                v["withdraws"],
                v["seq"],
                v["log_id"].as_str().unwrap_or("?")
            );
        }
        let lifts: Vec<String> =
            v["also_lifts"].as_array().into_iter().flatten().map(Value::to_string).collect();
        if !lifts.is_empty() {
            println!("also lifted (same identifier): seq {}", lifts.join(", "));
        }
        print_receipt(v);
    })
}

/// The receipt lines of an answer: who applied the entry, who has not yet.
fn print_receipt(v: &Value) {
    let list = |k: &str| -> String {
        let items: Vec<&str> = v
            .get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if items.is_empty() {
            "-".into()
        } else {
            items.join(", ")
        }
    };
    let level = if v["level"] == "applied" { "in memory" } else { "and on disk" };
    println!("applied {level} by: {}", list("acked"));
    println!("pending:    {}", list("pending"));
    println!("not connected, without it: {}", list("disconnected"));
}

/// Largest backup `backup` accepts: 64 GiB.
const MAX_BACKUP: usize = 64 << 30;

/// `revmesh-authority backup FILE`
pub fn backup(a: &BackupArgs) -> ExitCode {
    let fail = |e: String| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    };
    let answer = call_bytes(&a.client, "GET", "/v1/backup", b"", Duration::from_secs(600), MAX_BACKUP);
    let (status, body) = match answer {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if status != 200 {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let text = String::from_utf8_lossy(&body).into_owned();
        return fail(format!("({status}) {}", v.get("error").and_then(Value::as_str).unwrap_or(&text)));
    }
    let partial = a.file.with_extension("partial");
    let written = std::fs::File::create(&partial).and_then(|mut f| {
        use std::io::Write;
        f.write_all(&body)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&partial, &a.file)) {
        let _ = std::fs::remove_file(&partial);
        return fail(format!("{}: {e}", a.file.display()));
    }
    println!("backup written to {} ({} bytes)", a.file.display(), body.len());
    ExitCode::SUCCESS
}

/// `revmesh-authority restore FILE` or `restore --store postgres://…`
pub fn restore(a: &RestoreArgs) -> ExitCode {
    let new_id = revmesh_protocol::LogId(rand::random());
    let done = |old: revmesh_protocol::LogId, head: u64| {
        println!("restored log {old} at head {head} as log {new_id}");
        println!("agents adopt it when the authority starts, and keep what they enforce beyond it;");
        println!(
            "revmesh_authority_agents_ahead_of_log counts them: re-revoke what the backup lacks (docs/operations.md)."
        );
        ExitCode::SUCCESS
    };
    if let Some(url) = &a.store {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let rotated = rt.block_on(async {
            let store = crate::store::PgStore::new(url, "restore".into(), new_id, Duration::from_secs(10))?;
            store.rotate_log_id().await
        });
        return match rotated {
            Ok((old, head)) => done(old, head),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let Some(file) = &a.file else {
        eprintln!("error: name a backup file, or --store postgres://…");
        return ExitCode::from(64);
    };
    match crate::store::restore_embedded(file, &a.data_dir, new_id) {
        Ok((old, head, _)) => done(old, head),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `revmesh-authority agents [forget ID]`
pub fn agents(a: &AgentsArgs) -> ExitCode {
    if let Some(AgentsAction::Forget { id }) = &a.action {
        let path = format!("/v1/agents/{}", percent_encode(id));
        let answer = call(&a.client, "DELETE", &path, None, Duration::from_secs(10));
        return finish(&a.client, answer, |_| println!("forgot agent {id}"));
    }
    let answer = call(&a.client, "GET", "/v1/agents", None, Duration::from_secs(10));
    finish(&a.client, answer, |v| print!("{}", agents_table(v)))
}

/// The `agents` table: columns as wide as their widest cell.
fn agents_table(v: &Value) -> String {
    let text = |x: &Value| match x {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut rows = vec![["AGENT", "STATE", "APPLIED", "LAG", "REMOTE", "VERSION"].map(String::from)];
    for ag in v.as_array().into_iter().flatten() {
        let state = if ag["connected"].as_bool().unwrap_or(false) { "connected" } else { "gone" };
        rows.push([
            text(&ag["id"]),
            state.into(),
            text(&ag["applied_seq"]),
            text(&ag["lag"]),
            text(&ag["remote"]),
            text(&ag["version"]),
        ]);
    }
    let mut width = [0usize; 6];
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:<w4$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3],
            w4 = width[4]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Percent-encodes a path segment (agent ids may hold any non-space character).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `revmesh-authority show SEQ`
pub fn show(a: &crate::config::ShowArgs) -> ExitCode {
    let answer = call(&a.client, "GET", &format!("/v1/revocations/{}", a.seq), None, Duration::from_secs(10));
    finish(&a.client, answer, |v| {
        let text = |x: &Value| match x {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        };
        let what = ["jti", "sub", "kid", "sid"]
            .iter()
            .filter(|k| !v[**k].is_null())
            .map(|k| format!("{k}={}", text(&v[*k])))
            .collect::<Vec<_>>()
            .join(" ");
        println!("seq {}  {} {}", v["seq"], text(&v["kind"]), what);
        println!("by {}  reason {}", text(&v["by"]), text(&v["reason"]));
        println!("created_at_ms {}  expires_at {}", v["created_at_ms"], text(&v["expires_at"]));
        for ag in v["agents"].as_array().into_iter().flatten() {
            println!("  {}  {}", text(&ag["id"]), text(&ag["state"]));
        }
    })
}

/// `revmesh-authority audit`
pub fn audit(a: &crate::config::AuditArgs) -> ExitCode {
    let path = format!("/v1/audit?after={}&limit={}", a.after, a.limit.clamp(1, 1000));
    let answer = call(&a.client, "GET", &path, None, Duration::from_secs(10));
    finish(&a.client, answer, |v| {
        let text = |x: &Value| match x {
            Value::String(s) if !s.is_empty() => s.clone(),
            Value::String(_) | Value::Null => "-".into(),
            other => other.to_string(),
        };
        for r in v["records"].as_array().into_iter().flatten() {
            println!(
                "{}  {}  {}  {}  {}  {}  {}",
                r["id"],
                r["at_ms"],
                text(&r["operator"]),
                text(&r["remote"]),
                text(&r["action"]),
                text(&r["target"]),
                r["status"]
            );
        }
    })
}

/// `revmesh-authority operators new NAME --scopes …`
pub fn operators(a: &crate::config::OperatorsArgs) -> ExitCode {
    let crate::config::OperatorsAction::New { name, scopes } = &a.action;
    match crate::operators::new_operator(name, scopes) {
        Ok((token, stanza)) => {
            eprintln!("# The token, shown once; give it to {name} (only its hash is kept):");
            println!("{token}");
            eprintln!("# Add to the operators file (--operators), then send SIGHUP to the authority:");
            println!("{stanza}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(64)
        }
    }
}

/// `revmesh-authority status`
pub fn status(a: &ClientArgs) -> ExitCode {
    let answer = call(a, "GET", "/v1/status", None, Duration::from_secs(10));
    finish(a, answer, |v| {
        println!("log {}  head {}  floor {}", v["log_id"].as_str().unwrap_or("?"), v["head"], v["floor"]);
        println!(
            "agents: {} connected of {} known, max lag {}",
            v["agents_connected"], v["agents_known"], v["max_lag"]
        );
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_table_is_aligned() {
        let v = json!([
            {"id": "web-1", "connected": true, "applied_seq": 42, "lag": 0, "remote": "127.0.0.1:5000", "version": "0.1.0"},
            {"id": "a-much-longer-agent-id", "connected": false, "applied_seq": 7, "lag": 35, "remote": "[::1]:61000", "version": "0.1.0"},
        ]);
        let table = agents_table(&v);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        let col = |l: &str, w: &str| l.find(w).unwrap();
        // Every column starts where its header does (numbers end where theirs do).
        assert_eq!(col(lines[1], "connected"), col(lines[0], "STATE"));
        assert_eq!(col(lines[2], "gone"), col(lines[0], "STATE"));
        assert_eq!(col(lines[1], "127.0.0.1"), col(lines[0], "REMOTE"));
        assert_eq!(col(lines[2], "[::1]"), col(lines[0], "REMOTE"));
        assert_eq!(col(lines[1], "42") + 2, col(lines[0], "APPLIED") + "APPLIED".len());
        assert!(!table.contains('"'), "raw JSON values in the table: {table}");
    }

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2026-11-29T12:00:00Z"), Ok(1_795_953_600));
        assert_eq!(parse_time("2026-11-29T13:00:00+01:00"), Ok(1_795_953_600));
        assert_eq!(parse_time("2026-11-29T12:00:00.250Z"), Ok(1_795_953_600));
        for bad in [
            "",
            "soon",
            "2026-13-01T00:00:00Z",
            "2026-11-29T12:00:00",
            "1969-12-31T23:59:59Z",
            // Multi-byte characters where offsets are sliced: an error, never a panic.
            "2026-11-29T12:00:00+0é00",
            "2026-11-29T12:00:00+01é0",
            "2026-11-29T12:00:00é",
            "2026-11-29T12:00:0éZ",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
