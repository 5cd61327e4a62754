//! `revmesh-loadtest demo`: the first thing a new user runs. A local mesh with embedded
//! defaults (an authority and three agents in a temp dir), one token accepted everywhere,
//! revoked with a receipt, refused everywhere; then it stays up until Ctrl-C.

use crate::procs::{sibling, AgentProc, AuthorityProc};
use crate::util::{ask_line, mint, wait_until};
use anyhow::Context;
use std::time::Duration;

/// Runs the demo.
pub async fn run() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("revmesh-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = demo(&dir).await;
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
    let exp = revmesh_agent::state::now_secs() + 3600;
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
         printf 'PING\\nSTATUS jti={jti}\\n' | nc -U {}\n  \
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
    tokio::signal::ctrl_c().await?;
    println!("\nstopping; removing {}", dir.display());
    drop(agents);
    drop(auth);
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
