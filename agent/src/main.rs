//! `revmesh-agent`: command-line entry point. Exit codes: 0 success (and OK for `check`),
//! 1 runtime failure or a non-OK verdict, 64 bad configuration or usage.

use clap::Parser;
use revmesh_agent::config::{Cli, Command, Config};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 64 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("revmesh-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "revmesh-agent", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => {
            let man = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            match man.render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("revmesh-agent man: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check(a) => rt.block_on(async {
            match revmesh_agent::server::check_once(&a.socket, &a.jwt).await {
                Ok(line) => {
                    println!("{line}");
                    if line.starts_with("OK ") {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("revmesh-agent check: {e}");
                    ExitCode::from(2)
                }
            }
        }),
        Command::Token(t) => {
            let secret = match std::fs::read(&t.hs256_secret_file) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("revmesh-agent token: {}: {e}", t.hs256_secret_file.display());
                    return ExitCode::from(64);
                }
            };
            let ttl = match revmesh_protocol::time::parse_duration(&t.ttl) {
                Ok(d) => d.as_secs(),
                Err(e) => {
                    eprintln!("revmesh-agent token: --ttl: {e}");
                    return ExitCode::from(64);
                }
            };
            // Read as the agent reads --hs256-secret-file: one trailing newline is not part of it.
            let secret = secret.strip_suffix(b"\n").unwrap_or(&secret).to_vec();
            match revmesh_agent::jwt::mint_hs256(&secret, &t, ttl, revmesh_agent::state::now_secs()) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("revmesh-agent token: {e}");
                    ExitCode::from(64)
                }
            }
        }
        Command::Run(args) => {
            let json = args.log_format.as_deref() == Some("json");
            let cfg = match args.with_file().and_then(|raw| Config::build(&raw)) {
                Ok(c) => c,
                Err(errors) => {
                    config_errors(json, &errors);
                    return ExitCode::from(64);
                }
            };
            let json = cfg.log_json;
            init_tracing(&cfg.log, json);
            raise_fd_limit();
            let result = rt.block_on(async {
                let shutdown = CancellationToken::new();
                let s = shutdown.clone();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    s.cancel();
                });
                revmesh_agent::run(cfg, shutdown, |b| {
                    if json {
                        let line = serde_json::json!({"msg": "ready", "binary": "revmesh-agent",
                            "metrics": b.metrics.to_string()});
                        println!("{line}");
                    } else {
                        println!("revmesh-agent ready metrics={}", b.metrics);
                    }
                })
                .await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => match e.downcast_ref::<revmesh_agent::config::ConfigErrors>() {
                    Some(c) => {
                        config_errors(json, &c.0);
                        ExitCode::from(64)
                    }
                    None => {
                        if json {
                            eprintln!("{}", serde_json::json!({"level": "ERROR", "msg": format!("{e:#}")}));
                        } else {
                            eprintln!("revmesh-agent: {e:#}");
                        }
                        ExitCode::FAILURE
                    }
                },
            }
        }
    }
}

/// Raises the open-file limit to the hard limit: every agent link or socket client is a descriptor.
fn raise_fd_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "could not raise the open-file limit");
    }
}

fn init_tracing(filter: &str, json: bool) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        fmt.json().flatten_event(true).init();
    } else {
        fmt.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// Every bad setting, as text or as one JSON object per line (`--log-format json`).
fn config_errors(json: bool, errors: &[revmesh_agent::config::ConfigError]) {
    if !json {
        eprintln!("revmesh-agent: invalid configuration:");
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

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
