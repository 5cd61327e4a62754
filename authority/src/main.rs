//! `revmesh-authority`: command-line entry point. Exit codes: 0 success, 1 runtime failure,
//! 64 bad configuration or usage (as linkerd and sysexits do).

use clap::Parser;
use revmesh_authority::config::{Cli, Command, Config};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "revmesh-authority", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => {
            let man = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            match man.render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("revmesh-authority man: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => {
            let json = args.log_format.as_deref() == Some("json");
            let cfg = match args.with_file().and_then(|raw| Config::build(&raw)) {
                Ok(c) => c,
                Err(errors) => {
                    config_errors(json, &errors);
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            init_tracing(&cfg.log, cfg.log_json);
            raise_fd_limit();
            run_serve(cfg)
        }
        Command::Revoke(a) => revmesh_authority::client::revoke(&a),
        Command::Agents(a) => revmesh_authority::client::agents(&a),
        Command::Status(a) => revmesh_authority::client::status(&a),
    }
}

/// Raises the open-file limit to the hard limit: every agent link or socket client is a descriptor.
fn raise_fd_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "could not raise the open-file limit");
    }
}

fn init_tracing(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        fmt.json().flatten_event(true).init();
    } else {
        fmt.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// Every bad setting, as text or as one JSON object per line (`--log-format json`).
fn config_errors(json: bool, errors: &[revmesh_authority::config::ConfigError]) {
    if !json {
        eprintln!("revmesh-authority: invalid configuration:");
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

fn run_serve(cfg: Config) -> ExitCode {
    let json = cfg.log_json;
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("revmesh-authority: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            signals.cancel();
        });
        revmesh_authority::serve(cfg, shutdown, move |bound, log_id| {
            // One machine-readable line on stdout, for scripts and tests that bind port 0.
            if json {
                let line = serde_json::json!({"msg": "ready", "binary": "revmesh-authority",
                    "agent": bound.agent.to_string(), "admin": bound.admin.to_string(), "log_id": log_id.to_string()});
                println!("{line}");
            } else {
                println!("revmesh-authority ready agent={} admin={} log_id={log_id}", bound.agent, bound.admin);
            }
        })
        .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<revmesh_authority::config::ConfigErrors>() {
            Some(c) => {
                config_errors(json, &c.0);
                ExitCode::from(EXIT_CONFIG)
            }
            None => {
                if json {
                    eprintln!("{}", serde_json::json!({"level": "ERROR", "msg": format!("{e:#}")}));
                } else {
                    eprintln!("revmesh-authority: {e:#}");
                }
                ExitCode::FAILURE
            }
        },
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
