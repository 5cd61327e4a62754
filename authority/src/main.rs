//! `revmesh-authority`: command-line entry point. Exit codes: 0 success, 1 runtime failure,
//! 64 bad configuration or usage (as linkerd and sysexits do).

use clap::Parser;
use revmesh_authority::config::{Cli, Command, Config};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

use revmesh_runtime::config::{self, EXIT_CONFIG};
use revmesh_runtime::process;

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
        Command::Completions { shell } => process::print_completions::<Cli>(shell, "revmesh-authority"),
        Command::Man => process::print_man::<Cli>("revmesh-authority"),
        Command::Serve(args) => {
            let json = args.log_format.as_deref() == Some("json");
            let cfg = match args.with_file().and_then(|raw| Config::build(&raw)) {
                Ok(c) => c,
                Err(errors) => {
                    config::print_errors("revmesh-authority", json, &errors);
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            process::init_tracing(&cfg.log, cfg.log_json);
            process::raise_fd_limit();
            run_serve(cfg)
        }
        Command::Revoke(a) => revmesh_authority::cli::revoke(&a),
        Command::Agents(a) => revmesh_authority::cli::agents(&a),
        Command::Status(a) => revmesh_authority::cli::status(&a),
        Command::Import(a) => revmesh_authority::cli::import::run(&a),
        Command::Withdraw(a) => revmesh_authority::cli::withdraw(&a),
        Command::Backup(a) => revmesh_authority::cli::backup(&a),
        Command::Restore(a) => revmesh_authority::cli::restore(&a),
        Command::Show(a) => revmesh_authority::cli::show(&a),
        Command::Audit(a) => revmesh_authority::cli::audit(&a),
        Command::Operators(a) => revmesh_authority::cli::operators(&a),
        Command::Ssf(a) => revmesh_authority::cli::ssf::run(&a),
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
            process::stop_signal().await;
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
        Err(e) => ExitCode::from(config::report_failure("revmesh-authority", json, &e)),
    }
}
