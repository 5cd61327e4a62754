//! Configuration errors as both binaries report them: every bad setting at once, as text or as
//! JSON lines, with exit code 64 (`EX_USAGE`).

/// Exit code for a configuration the process refuses.
pub const EXIT_CONFIG: u8 = 64;

/// One bad setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// Flag name.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

/// Settings found bad only when used (an address already in use), reported like the others
/// and before anything is created: the process exits with code 64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {}", .0.iter().map(|e| format!("--{e}")).collect::<Vec<_>>().join("; "))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// Prints every bad setting to stderr, as text or as one JSON object per line
/// (`--log-format json`).
pub fn print_errors(binary: &str, json: bool, errors: &[ConfigError]) {
    if !json {
        eprintln!("{binary}: invalid configuration:");
    }
    for e in errors {
        if json {
            let line = serde_json::json!({"level": "ERROR", "msg": "invalid configuration", "field": e.field, "error": e.message});
            eprintln!("{line}");
        } else {
            eprintln!("  --{e}");
        }
    }
}

/// Prints the error a run ended with and picks the exit code: 64 for configuration errors
/// found at start (an address in use), 1 for anything else.
pub fn report_failure(binary: &str, json: bool, e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<ConfigErrors>() {
        Some(c) => {
            print_errors(binary, json, &c.0);
            EXIT_CONFIG
        }
        None => {
            if json {
                eprintln!("{}", serde_json::json!({"level": "ERROR", "msg": format!("{e:#}")}));
            } else {
                eprintln!("{binary}: {e:#}");
            }
            1
        }
    }
}
