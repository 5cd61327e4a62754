//! Start-up and shutdown glue: logging, the open-file limit, and the signals that stop a
//! process gracefully.

/// `completions SHELL`: the shell completion script for `C`, on stdout.
pub fn print_completions<C: clap::CommandFactory>(
    shell: clap_complete::Shell,
    binary: &str,
) -> std::process::ExitCode {
    clap_complete::generate(shell, &mut C::command(), binary, &mut std::io::stdout());
    std::process::ExitCode::SUCCESS
}

/// `man`: the man page for `C` (roff), on stdout.
pub fn print_man<C: clap::CommandFactory>(binary: &str) -> std::process::ExitCode {
    match clap_mangen::Man::new(C::command()).render(&mut std::io::stdout()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{binary} man: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Sends logs to stderr: text (coloured on a terminal) or one JSON object per line.
pub fn init_tracing(filter: &str, json: bool) {
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

/// Raises the open-file limit to the hard limit: every agent link or socket client is a descriptor.
pub fn raise_fd_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "could not raise the open-file limit");
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C). SIGHUP is not a stop signal: each binary handles it
/// as a reload.
pub async fn stop_signal() {
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
