//! `revmesh-authority import FILE|-`: revocations from JSON lines, submitted as bulk arrays
//! (one commit each), with progress on stderr.
//!
//! Resuming is safe: before each batch the importer records in `FILE.import-progress` which
//! lines it is about to send; after the commit, how many lines are done. Rerun after an
//! interruption, it skips what is done, and for a batch whose answer never came it compares
//! the log's newest entries with the batch's content: if they are the batch, it was committed
//! and is not sent again.

use crate::cli::{call, Answer};
use crate::config::ImportArgs;
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Progress of one file, kept beside it.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// Lines (revocations) committed.
    pub done: usize,
    /// The batch sent and not yet confirmed: first line index and its revocations.
    pub pending: Option<(usize, Vec<Value>)>,
}

fn progress_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".import-progress");
    PathBuf::from(p)
}

fn save(path: &Path, p: &Progress) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(p).unwrap_or_default())?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(tmp, path)
}

/// True when `entry` (as the list endpoint shows it) is the revocation `want` asks for.
pub fn same_revocation(want: &Value, entry: &Value) -> bool {
    let fields = ["kind", "jti", "iss", "sub", "kid", "sid", "issued_before", "expires_at", "reason"];
    fields.iter().all(|f| match want.get(*f) {
        None | Some(Value::Null) => true,
        Some(v) => entry.get(*f) == Some(v),
    })
}

/// Whether the log's newest `batch.len()` entries are `batch`, in order.
fn committed(args: &ImportArgs, batch: &[Value]) -> Result<bool, String> {
    let head = get(args, "/v1/status")?["head"].as_u64().unwrap_or(0);
    let n = batch.len() as u64;
    if head < n {
        return Ok(false);
    }
    let list = get(args, &format!("/v1/revocations?after={}&limit={n}", head - n))?;
    let entries = list["entries"].as_array().cloned().unwrap_or_default();
    Ok(entries.len() == batch.len() && batch.iter().zip(&entries).all(|(w, e)| same_revocation(w, e)))
}

fn get(args: &ImportArgs, path: &str) -> Result<Value, String> {
    let Answer { status, body } = call(&args.client, "GET", path, None, Duration::from_secs(30))?;
    if status != 200 {
        return Err(format!("GET {path}: HTTP {status}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}"))
}

/// The file's revocation records, one per non-blank line, read as they are needed: memory
/// stays bounded by one batch whatever the file's size. A line longer than one revocation may
/// be ([`crate::api::MAX_BODY`]) is an error naming it.
struct Records {
    reader: Box<dyn BufRead>,
    line: usize,
    buf: String,
}

impl Records {
    fn open(file: &Path) -> Result<Records, String> {
        let reader: Box<dyn BufRead> = if file == Path::new("-") {
            Box::new(std::io::BufReader::new(std::io::stdin()))
        } else {
            let f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
            Box::new(std::io::BufReader::new(f))
        };
        Ok(Records { reader, line: 0, buf: String::new() })
    }

    /// The next non-blank line, raw (`None` at the end).
    fn next_raw(&mut self) -> Result<Option<&str>, String> {
        use std::io::Read;
        loop {
            self.buf.clear();
            self.line += 1;
            let limit = crate::api::MAX_BODY as u64 + 1;
            let n = self
                .reader
                .by_ref()
                .take(limit)
                .read_line(&mut self.buf)
                .map_err(|e| format!("line {}: {e}", self.line))?;
            if n == 0 {
                return Ok(None);
            }
            if n as u64 == limit && !self.buf.ends_with('\n') {
                return Err(format!("line {}: longer than {} bytes", self.line, crate::api::MAX_BODY));
            }
            if !self.buf.trim().is_empty() {
                return Ok(Some(self.buf.trim()));
            }
        }
    }

    /// The next record, parsed.
    fn next_record(&mut self) -> Result<Option<Value>, String> {
        let line = self.line + 1;
        let Some(raw) = self.next_raw()? else { return Ok(None) };
        let v: Value = serde_json::from_str(raw).map_err(|e| format!("line {line}: {e}"))?;
        if !v.is_object() {
            return Err(format!("line {line}: not a JSON object"));
        }
        Ok(Some(v))
    }
}

/// `revmesh-authority import`.
pub fn run(args: &ImportArgs) -> ExitCode {
    match import(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn import(args: &ImportArgs) -> Result<(), String> {
    if !(1..=1000).contains(&args.batch) {
        return Err("--batch must be between 1 and 1000".into());
    }
    let mut records = Records::open(&args.file)?;
    let stdin = args.file == Path::new("-");
    let ppath = progress_path(&args.file);
    let mut progress: Progress = if stdin {
        Progress::default()
    } else {
        std::fs::read(&ppath).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    };
    if let Some((first, batch)) = progress.pending.take() {
        // The answer to this batch never came: committed or not, by content.
        if committed(args, &batch)? {
            progress.done = first + batch.len();
            eprintln!(
                "resuming: the interrupted batch (lines {}..{}) was committed",
                first + 1,
                progress.done
            );
        } else {
            progress.done = first;
            eprintln!(
                "resuming: the interrupted batch (lines {}..) was not committed; sending it again",
                first + 1
            );
        }
    } else if progress.done > 0 {
        eprintln!("resuming after {} lines already imported", progress.done);
    }
    // Skip what is done without parsing it.
    for skipped in 0..progress.done {
        if records.next_raw()?.is_none() {
            return Err(format!(
                "{} holds {skipped} records, fewer than the {} already imported; remove {} to start over",
                args.file.display(),
                progress.done,
                ppath.display()
            ));
        }
    }
    let clock = revmesh_runtime::Clock::system();
    let started = clock.mono();
    let (mut first_seq, mut last_seq) = (None, None);
    let mut this_run = 0usize;
    loop {
        let from = progress.done;
        let mut batch = Vec::with_capacity(args.batch);
        while batch.len() < args.batch {
            match records.next_record()? {
                Some(v) => batch.push(v),
                None => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        if !stdin {
            progress.pending = Some((from, batch.clone()));
            save(&ppath, &progress).map_err(|e| format!("{}: {e}", ppath.display()))?;
        }
        let n = batch.len();
        let body = Value::Array(batch);
        let Answer { status, body: text } =
            call(&args.client, "POST", "/v1/revocations", Some(&body), Duration::from_secs(60))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(json!({"error": text}));
        if status != 201 {
            let field = v["field"].as_str().unwrap_or("");
            // `[17].expires_at` names element 17 of this batch: report the file's line.
            let line = field
                .strip_prefix('[')
                .and_then(|f| f.split(']').next())
                .and_then(|i| i.parse::<usize>().ok())
                .map(|i| format!(" (record {})", from + i + 1))
                .unwrap_or_default();
            let msg = v["error"].as_str().unwrap_or(&text);
            return Err(format!("HTTP {status}{line}: {msg}; {from} records imported before it"));
        }
        progress.done = from + n;
        this_run += n;
        progress.pending = None;
        if !stdin {
            save(&ppath, &progress).map_err(|e| format!("{}: {e}", ppath.display()))?;
        }
        first_seq = first_seq.or(v["first_seq"].as_u64());
        last_seq = v["last_seq"].as_u64().or(last_seq);
        let rate = this_run as f64 / clock.mono().saturating_duration_since(started).as_secs_f64().max(1e-3);
        eprint!("\rimported {} records ({rate:.0}/s)", progress.done);
        let _ = std::io::stderr().flush();
    }
    eprintln!();
    match (first_seq, last_seq) {
        (Some(a), Some(b)) => {
            println!("imported {} revocations; this run stored seq {a}..{b}", progress.done)
        }
        _ => println!("nothing to import: all {} revocations were already imported", progress.done),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_match_their_entries_by_content() {
        let want = json!({"kind": "jti", "jti": "a", "expires_at": 5});
        let entry =
            json!({"seq": 9, "kind": "jti", "jti": "a", "expires_at": 5, "log_id": "x", "created_at_ms": 1});
        assert!(same_revocation(&want, &entry));
        assert!(!same_revocation(&json!({"kind": "jti", "jti": "b", "expires_at": 5}), &entry));
        assert!(!same_revocation(&json!({"kind": "session", "sid": "a"}), &entry));
    }
}
