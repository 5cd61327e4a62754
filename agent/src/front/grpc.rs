//! Envoy / Istio external authorization over gRPC: `envoy.service.auth.v3.Authorization/Check`
//! exactly as Envoy's `ext_authz` filter calls it (types generated from Envoy's published
//! data-plane-api protos, by the `envoy-types` crate), and `grpc.health.v1`.
//!
//! This front end only maps: the checked request's `authorization` header (or the
//! `--token-cookie`) becomes a [`Request::Check`], the [`Verdict`] becomes an allow (with
//! `x-revmesh-sub` set upstream) or a denial with the HTTP status the client should see.

use crate::decide::{presented_token, Request, Verdict};
use crate::server::Server;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HeaderAppendAction, HttpStatusCode,
};
use envoy_types::ext_authz::v3::{
    CheckRequestExt, CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Response, Status};

/// Largest `CheckRequest` accepted (Envoy sends headers, not bodies, unless configured to).
pub const MAX_REQUEST_BYTES: usize = 64 << 10;

/// The `Authorization` service over the agent's [`Server`].
#[derive(Debug, Clone)]
pub struct ExtAuthz {
    server: Arc<Server>,
}

/// The `CheckResponse` for a verdict.
pub fn response(v: &Verdict) -> CheckResponse {
    let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
    let denied = |http: HttpStatusCode, status: Status, challenge: Option<&str>, reason: &str| {
        let mut d = DeniedHttpResponseBuilder::new();
        d.set_http_status(http);
        d.add_header("x-revmesh-verdict", v.label(), overwrite, false);
        if let Some(c) = challenge {
            d.add_header("www-authenticate", c, overwrite, false);
        }
        d.set_body(reason);
        let mut r = CheckResponse::with_status(status);
        r.set_http_response(d);
        r
    };
    let invalid_token = Some("Bearer error=\"invalid_token\"");
    match v {
        Verdict::Ok { seq, token, .. } => {
            let sub = token.as_ref().and_then(|t| t.sub.as_deref());
            let mut ok = OkHttpResponseBuilder::new();
            // Set by the agent or not at all: a client's own x-revmesh-sub never reaches upstream.
            let printable = |s: &&str| !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic() || c == ' ');
            match sub.filter(printable) {
                Some(sub) => ok.add_header("x-revmesh-sub", sub, overwrite, false),
                None => ok.remove_header("x-revmesh-sub"),
            };
            ok.add_header("x-revmesh-seq", seq.to_string(), overwrite, false);
            let mut r = CheckResponse::with_status(Status::ok("ok"));
            r.set_http_response(ok);
            r
        }
        Verdict::Revoked { kind, .. } => denied(
            HttpStatusCode::Unauthorized,
            Status::unauthenticated(format!("revoked: {kind}")),
            invalid_token,
            "revoked\n",
        ),
        Verdict::Invalid(e) => denied(
            HttpStatusCode::Unauthorized,
            Status::unauthenticated(format!("invalid: {}", e.as_str())),
            invalid_token,
            "invalid token\n",
        ),
        Verdict::NoToken => denied(
            HttpStatusCode::Unauthorized,
            Status::unauthenticated("missing bearer token"),
            Some("Bearer"),
            "missing bearer token\n",
        ),
        Verdict::Stale { lag_ms } => denied(
            HttpStatusCode::ServiceUnavailable,
            Status::unavailable(format!("stale: {lag_ms} ms since the authority was heard")),
            None,
            "revocation state is stale\n",
        ),
        Verdict::Pong { .. } | Verdict::Error(_) => denied(
            HttpStatusCode::InternalServerError,
            Status::internal("unexpected verdict"),
            None,
            "internal error\n",
        ),
    }
}

/// The token of a checked request (`Ok(None)`: it presents none), or `Err` for a request
/// Envoy never sends (no HTTP attributes) and for one whose token has two readings (see
/// [`presented_token`]): an error status, which Envoy answers with a denial.
pub fn request_token<'a>(
    request: &'a CheckRequest,
    token_cookie: Option<&str>,
) -> Result<Option<&'a str>, Status> {
    let headers = request
        .get_client_headers()
        .ok_or_else(|| Status::invalid_argument("attributes.request.http is missing"))?;
    presented_token(
        headers.get("authorization").map(String::as_str),
        headers.get("cookie").map(String::as_str),
        token_cookie,
    )
    .map_err(|e| Status::invalid_argument(e.to_string()))
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(&self, request: tonic::Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let request = request.into_inner();
        let token = request_token(&request, self.server.token_cookie.as_deref()).inspect_err(|_| {
            self.server.checker.refuse();
        })?;
        let verdict = self.server.checker.decide(Request::Check(token));
        Ok(Response::new(response(&verdict)))
    }
}

/// Serves ext_authz and health on a Unix socket (`--grpc-socket`) until shutdown.
pub async fn serve_unix(server: Arc<Server>, listener: tokio::net::UnixListener) {
    let incoming = futures::stream::unfold((server.clone(), listener), |(s, l)| async move {
        let slot = s.next_unix(&l).await?;
        Some((Ok::<_, std::io::Error>(slot), (s, l)))
    });
    run(server, incoming).await;
}

/// Serves ext_authz and health over TCP (`--grpc-listen`) until shutdown.
pub async fn serve_tcp(server: Arc<Server>, listener: tokio::net::TcpListener) {
    let incoming = futures::stream::unfold((server.clone(), listener), |(s, l)| async move {
        let slot = s.next_tcp(&l).await?;
        Some((Ok::<_, std::io::Error>(slot), (s, l)))
    });
    run(server, incoming).await;
}

async fn run<IO>(
    server: Arc<Server>,
    incoming: impl futures::Stream<Item = Result<IO, std::io::Error>> + Send + 'static,
) where
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
{
    // Staleness is a verdict, not ill health: the service is SERVING while the process answers.
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<AuthorizationServer<ExtAuthz>>().await;
    let authz = AuthorizationServer::new(ExtAuthz { server: server.clone() })
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    let shutdown = server.shutdown.clone();
    let served = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(256))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health)
        .add_service(authz)
        .serve_with_incoming_shutdown(Box::pin(incoming), shutdown.cancelled_owned())
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "ext_authz gRPC server failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::auth::v3::{attribute_context, AttributeContext};

    fn check(headers: &[(&str, &str)]) -> CheckRequest {
        let http = attribute_context::HttpRequest {
            headers: headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            ..Default::default()
        };
        let request = attribute_context::Request { http: Some(http), ..Default::default() };
        CheckRequest { attributes: Some(AttributeContext { request: Some(request), ..Default::default() }) }
    }

    // The gRPC door took the bearer over a different token cookie, and the first of two token
    // cookies (Envoy joins several `Cookie` headers with "; "): the same two readings the HTTP
    // door refuses.
    #[test]
    fn a_token_with_two_readings_is_refused_on_the_grpc_door_too() {
        let cookie = Some("session");
        let one = check(&[("cookie", "theme=dark; session=a.b.c")]);
        assert_eq!(request_token(&one, cookie).ok().flatten(), Some("a.b.c"));
        for headers in [
            vec![("cookie", "session=x.y.z; session=a.b.c")],
            vec![("authorization", "Bearer x.y.z"), ("cookie", "session=a.b.c")],
        ] {
            let e = request_token(&check(&headers), cookie).expect_err("refused");
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{headers:?}");
        }
        let same = check(&[("authorization", "Bearer a.b.c"), ("cookie", "session=a.b.c")]);
        assert_eq!(request_token(&same, cookie).ok().flatten(), Some("a.b.c"));
    }
}
