//! `revmesh-loadtest demo`: the first thing a new user runs. A local mesh with embedded
//! defaults (an authority and three agents in a temp dir), one token accepted everywhere,
//! revoked with a receipt, refused everywhere; then it stays up until Ctrl-C (or SIGTERM, or
//! SIGHUP when its terminal closes). On every way out it stops the processes it started and
//! removes its temp dir, which holds the HS256 secret and the admin token.

use crate::procs::{sibling, AgentProc, AuthorityProc};
use crate::util::{ask_line, mint, wait_until};
use anyhow::Context;
use std::time::Duration;

/// Runs the demo.
pub async fn run() -> anyhow::Result<()> {
    // Signals are caught before anything starts, so no signal can leave processes behind.
    let stop = until_signal()?;
    let dir = std::env::temp_dir().join(format!("revmesh-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = tokio::select! {
        r = demo(&dir) => r,
        signal = stop => {
            println!("\n{signal}: stopping; removing {}", dir.display());
            Ok(())
        }
    };
    // The demo future is gone by now, and with it every process handle (killed on drop).
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn demo(dir: &std::path::Path) -> anyhow::Result<()> {
    let secret = dir.join("hs256.secret");
    let secret_bytes: [u8; 32] = rand::random();
    std::fs::write(&secret, hex(&secret_bytes))?;
    println!("revmesh demo — everything lives in {}\n", dir.display());
    let auth = AuthorityProc::start(&dir.join("authority"), "127.0.0.1:0", &["--heartbeat", "1s"])?;
    println!("authority: agents at {}/v1/agents, admin API at http://{}", auth.ws, auth.admin);
    let mut agents = Vec::new();
    for i in 1..=3 {
        let a =
            AgentProc::start(&dir.join(format!("agent-{i}")), &format!("agent-{i}"), &auth.ws, &secret, &[])?;
        println!("agent-{i}:  socket {}  metrics http://{}/metrics", a.socket.display(), a.metrics);
        agents.push(a);
    }
    for a in &agents {
        wait_until(Duration::from_secs(15), || {
            ask_line(&a.socket, "PING").is_ok_and(|l| l.starts_with("PONG") && !l.ends_with("log_id=none"))
        })
        .await
        .context("agents did not reach the authority")?;
    }
    let jti = format!("demo-{:08x}", rand::random::<u32>());
    let exp = revmesh_runtime::Clock::system().unix_secs() + 3600;
    let token = mint(&hex(&secret_bytes), &jti, "alice", exp)?;
    println!("\nA token for sub=alice, jti={jti}:\n  {token}\n");
    for (i, a) in agents.iter().enumerate() {
        println!("agent-{} says: {}", i + 1, ask_line(&a.socket, &format!("CHECK {token}"))?);
    }
    let body =
        serde_json::json!({"kind": "jti", "jti": jti, "expires_at": exp, "reason": "demo"}).to_string();
    let (status, receipt) = auth.call("POST", "/v1/revocations?wait=all&timeout_ms=5000", &body)?;
    anyhow::ensure!(status == 201, "revocation failed: {receipt}");
    println!(
        "\nRevoked it. Receipt: seq {} applied by {} (pending: {})\n",
        receipt["seq"], receipt["acked"], receipt["pending"]
    );
    for (i, a) in agents.iter().enumerate() {
        println!("agent-{} says: {}", i + 1, ask_line(&a.socket, &format!("CHECK {token}"))?);
    }
    let bin = sibling("revmesh-agent")?;
    let abin = sibling("revmesh-authority")?;
    println!(
        "\nTry next (in another terminal):\n  \
         {} check --socket {} '{token}'\n  \
         {} revoke subject alice --admin http://{} --token-file {} --wait\n  \
         {} agents --admin http://{} --token-file {}\n  \
         printf 'PING\\nSTATUS jti={jti}\\n' | socat -t1 - UNIX-CONNECT:{}\n  \
         curl -s http://{}/metrics | grep revmesh_\n\n\
         HS256 secret: {}   admin token: {}\n\nThe mesh runs until Ctrl-C.",
        bin.display(),
        agents[0].socket.display(),
        abin.display(),
        auth.admin,
        auth.token_file.display(),
        abin.display(),
        auth.admin,
        auth.token_file.display(),
        agents[1].socket.display(),
        auth.admin,
        secret.display(),
        auth.token_file.display(),
    );
    // Runs until `run` sees a signal and drops this future (and the processes with it).
    std::future::pending::<()>().await;
    drop((agents, auth));
    Ok(())
}

/// Catches SIGINT, SIGTERM and SIGHUP from now on; the future resolves to the first one's name.
fn until_signal() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            _ = hup.recv() => "SIGHUP",
        }
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
