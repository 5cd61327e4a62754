//! The ext_authz gRPC door against the line protocol, on one agent process in one run: the same
//! token checked over `--grpc-socket` (Envoy's `Authorization/Check`, HTTP/2) and over the line
//! socket (`CHECK`), one request at a time, with the agent's CPU per request from /proc.

use crate::procs::{bench_pair, cpu_ticks, ticks_to_us, BENCH_SECRET};
use crate::util::{summarize, Summary};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{attribute_context, AttributeContext};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// One door's figures.
#[derive(Debug, Serialize)]
pub struct Door {
    /// Which.
    pub door: String,
    /// Sequential latency.
    pub latency: Summary,
    /// Agent CPU per request, microseconds.
    pub agent_cpu_us: f64,
}

/// `n` sequential checks of `token` through each door.
pub async fn compare(dir: &Path, n: usize) -> anyhow::Result<Vec<Door>> {
    let grpc_sock = dir.join("grpc-sock.sock");
    let (auth, agent) = bench_pair(dir, "grpc", &["--grpc-socket", &grpc_sock.display().to_string()]).await?;
    let secret_text = BENCH_SECRET;
    let pid = agent.proc.child.id();
    let exp = revmesh_runtime::Clock::system().unix_secs() + 3600;
    let token = crate::util::mint(secret_text, "grpc-1", "alice", exp)?;

    // Line protocol.
    let cpu0 = cpu_ticks(pid)?;
    let line = crate::scenarios::sequential(&agent.socket, &format!("CHECK {token}"), n, "OK ").await?;
    let line_cpu = ticks_to_us(cpu_ticks(pid)? - cpu0) / (n + n / 10) as f64;

    // gRPC over the Unix socket.
    let path = grpc_sock.clone();
    let channel = tonic::transport::Endpoint::try_from("http://agent.local")?
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move { tokio::net::UnixStream::connect(path).await.map(hyper_util::rt::TokioIo::new) }
        }))
        .await?;
    let mut client = AuthorizationClient::new(channel);
    let http = attribute_context::HttpRequest {
        method: "GET".into(),
        path: "/orders/17".into(),
        headers: [("authorization".to_owned(), format!("Bearer {token}"))].into_iter().collect(),
        ..Default::default()
    };
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request { http: Some(http), ..Default::default() }),
            ..Default::default()
        }),
    };
    let mut grpc_lat = Vec::with_capacity(n);
    let cpu0 = cpu_ticks(pid)?;
    for i in 0..n + n / 10 {
        let t0 = Instant::now();
        let r = client.check(request.clone()).await?.into_inner();
        if i >= n / 10 {
            grpc_lat.push(t0.elapsed());
        }
        anyhow::ensure!(r.status.as_ref().is_some_and(|s| s.code == 0), "{:?}", r.status);
    }
    let grpc_cpu = ticks_to_us(cpu_ticks(pid)? - cpu0) / (n + n / 10) as f64;
    drop(agent);
    drop(auth);
    Ok(vec![
        Door { door: "line CHECK".into(), latency: line, agent_cpu_us: line_cpu },
        Door { door: "gRPC ext_authz Check".into(), latency: summarize(grpc_lat), agent_cpu_us: grpc_cpu },
    ])
}
