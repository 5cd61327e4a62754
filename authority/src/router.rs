//! The admin listener's whole router: the admin API's routes and every door's, with the limits
//! and fallbacks they share. The one place that knows them all.

use crate::api::{self, AdminState, ApiError, MAX_BULK_BODY};
use crate::doors::{oauth, oidc, ssf};
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::Router;
use std::sync::Arc;

/// The router for `state`, with the doors that are configured; testable without a socket.
pub(crate) fn app(
    state: AdminState,
    oidc: Option<Arc<oidc::Oidc>>,
    token_keys: Option<Arc<oauth::TokenKeys>>,
    ssf: Option<Arc<ssf::Ssf>>,
) -> Router {
    api::routes(state.clone())
        .merge(api::feed::routes(state.clone()))
        .merge(oidc::routes(state.clone(), oidc))
        .merge(oauth::routes(state.clone(), token_keys))
        .merge(ssf::routes(state, ssf))
        .fallback(|| async { ApiError::status(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::status(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint")
        })
        .layer(DefaultBodyLimit::max(MAX_BULK_BODY))
}
