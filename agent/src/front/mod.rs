//! Front ends: the protocols a service or a proxy asks the agent in. Each one frames requests
//! into a [`crate::decide::Request`], calls [`crate::decide::Checker::decide`], and renders the
//! verdict; none counts metrics or reads the state itself. This module hands each admitted
//! connection to its front end; `server.rs` admits connections and knows no front end.
//!
//! - `lines`: the line protocol (PROTOCOL.md §7) on `--socket`.
//! - `http`: HTTP/1.1 (hyper) on `--http-socket` / `--http-listen`, and the metrics port.
//! - `grpc`: Envoy/Istio ext_authz and gRPC health (tonic) on `--grpc-socket` / `--grpc-listen`.
//! - `reader`: the bounded read the line protocol uses (idle timeout, shutdown).

pub mod grpc;
pub(crate) mod http;
pub mod lines;
pub(crate) mod reader;

use crate::server::{Server, Slot};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

/// Which protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// The line protocol (PROTOCOL.md §7).
    Line,
    /// HTTP/1.1 (`/v1/check`, `/v1/introspect`, `/healthz`).
    Http,
}

/// Serves one Unix listener with the line protocol or HTTP until shutdown.
pub async fn serve_unix(server: Arc<Server>, listener: UnixListener, front: Front) {
    while let Some(slot) = server.next_unix(&listener).await {
        let me = server.clone();
        server.tracker.spawn(async move { serve_conn(&me, slot, front).await });
    }
}

/// Serves HTTP on a TCP listener (`--http-listen`) until shutdown.
pub async fn serve_tcp(server: Arc<Server>, listener: TcpListener) {
    while let Some(slot) = server.next_tcp(&listener).await {
        let me = server.clone();
        server.tracker.spawn(async move { serve_conn(&me, slot, Front::Http).await });
    }
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(server: &Server, slot: Slot<S>, front: Front) {
    match front {
        Front::Line => {
            let max_line = server.checker.rules.max_token_bytes + 64;
            let conn = lines::Connection::new(slot, max_line);
            conn.serve(&server.checker, server.idle, &server.shutdown).await;
        }
        Front::Http => {
            let cookie = server.token_cookie.as_deref();
            http::serve(slot, &server.checker, cookie, server.idle, &server.shutdown).await;
        }
    }
}
