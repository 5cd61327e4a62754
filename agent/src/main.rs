//! `revmesh-agent`: command-line entry point. Exit codes: 0 success (and OK for `check`),
//! 1 runtime failure or a non-OK verdict, 64 bad configuration or usage.

use clap::Parser;
use revmesh_agent::config::{Cli, Command, Config};
use revmesh_runtime::{config, process};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { config::EXIT_CONFIG } else { 0 };
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
        Command::Completions { shell } => process::print_completions::<Cli>(shell, "revmesh-agent"),
        Command::Man => process::print_man::<Cli>("revmesh-agent"),
        Command::Check(a) => rt.block_on(async {
            match revmesh_agent::front::lines::check_once(&a.socket, &a.jwt).await {
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
                    return ExitCode::from(config::EXIT_CONFIG);
                }
            };
            let ttl = match revmesh_protocol::time::parse_duration(&t.ttl) {
                Ok(d) => d.as_secs(),
                Err(e) => {
                    eprintln!("revmesh-agent token: --ttl: {e}");
                    return ExitCode::from(config::EXIT_CONFIG);
                }
            };
            // Read as the agent reads --hs256-secret-file: one trailing newline is not part of it.
            let secret = secret.strip_suffix(b"\n").unwrap_or(&secret).to_vec();
            let claims = revmesh_agent::jwt::DevClaims {
                sub: &t.sub,
                jti: t.jti.as_deref(),
                sid: t.sid.as_deref(),
                iss: t.iss.as_deref(),
                aud: t.aud.as_deref(),
            };
            match revmesh_agent::jwt::mint_hs256(
                &secret,
                claims,
                ttl,
                revmesh_runtime::Clock::system().unix_secs(),
            ) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("revmesh-agent token: {e}");
                    ExitCode::from(config::EXIT_CONFIG)
                }
            }
        }
        Command::Run(args) => {
            let json = args.log_format.as_deref() == Some("json");
            let cfg = match args.with_file().and_then(|raw| Config::build(&raw)) {
                Ok(c) => c,
                Err(errors) => {
                    config::print_errors("revmesh-agent", json, &errors);
                    return ExitCode::from(config::EXIT_CONFIG);
                }
            };
            let json = cfg.log_json;
            process::init_tracing(&cfg.log, json);
            process::raise_fd_limit();
            let result = rt.block_on(async {
                let shutdown = CancellationToken::new();
                let s = shutdown.clone();
                tokio::spawn(async move {
                    process::stop_signal().await;
                    s.cancel();
                });
                revmesh_agent::run(cfg, shutdown, |b| {
                    if json {
                        let mut line = serde_json::json!({"msg": "ready", "binary": "revmesh-agent",
                            "metrics": b.metrics.to_string()});
                        for (k, v) in [("http", b.http), ("grpc", b.grpc)] {
                            if let (Some(v), Some(m)) = (v, line.as_object_mut()) {
                                m.insert(k.into(), v.to_string().into());
                            }
                        }
                        println!("{line}");
                    } else {
                        // Extra listeners first: `metrics=` stays the last field.
                        let mut extra = String::new();
                        for (k, v) in [("http", b.http), ("grpc", b.grpc)] {
                            if let Some(v) = v {
                                extra.push_str(&format!("{k}={v} "));
                            }
                        }
                        println!("revmesh-agent ready {extra}metrics={}", b.metrics);
                    }
                })
                .await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => ExitCode::from(config::report_failure("revmesh-agent", json, &e)),
            }
        }
    }
}
