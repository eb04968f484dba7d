//! The HTTP layer: `/v1` routes, authentication, rate limits, idempotency, the error envelope,
//! and the OpenAPI document.
//!
//! Handlers are thin: they validate input into domain values (`nixflex-core`), call the store
//! (traits only; no SQL here) and map to response DTOs.

pub mod agent_json;
pub mod carrier;
pub mod error;
pub mod extract;
pub mod key_cache;
pub mod middleware;
mod openapi;
pub mod outbound;
pub mod rate_limiter;
pub mod routes;
pub mod state;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa_axum::router::OpenApiRouter;

pub use crate::state::{ApiConfig, AppState};

/// The complete application router (tests can drive it directly; `serve` adds the listener).
pub fn app(state: AppState) -> Router {
    app_with(state, Router::new())
}

/// The complete router with `extra` routes behind the same middleware (the binary adds
/// `GET /metrics` this way when `metrics_token` is set; docs/operations.md#metrics).
pub fn app_with(state: AppState, extra: Router<AppState>) -> Router {
    let (api_router, generated) = OpenApiRouter::new()
        .merge(routes::health::router())
        .merge(routes::keys::router())
        .merge(routes::agents::router())
        .merge(routes::catalog::router())
        .merge(routes::numbers::router())
        .merge(routes::callers::router())
        .merge(routes::integrations::router())
        .merge(routes::calls::router())
        .merge(routes::outbound::router())
        .merge(routes::campaigns::router())
        .merge(routes::usage::router())
        .merge(routes::recordings::router())
        .merge(routes::sms::router())
        .merge(routes::account_providers::router())
        .merge(routes::sms_campaigns::router())
        .split_for_parts();
    openapi::set_document(openapi::document(generated));

    let max_body = state.config().max_body_bytes;
    api_router
        .merge(routes::pending::router())
        .merge(routes::recordings::public_router())
        .merge(carrier::router(state.clone()))
        .merge(extra)
        .fallback(|| async { axum::http::StatusCode::NOT_FOUND })
        .layer(axum::middleware::from_fn(extract::check_uri))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::idempotency))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::guard))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::timeout))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn(middleware::limit_uri))
        .layer(axum::middleware::from_fn(middleware::normalize_errors))
        .layer(axum::middleware::from_fn(middleware::log_requests))
        .layer(axum::middleware::from_fn(middleware::request_id))
        .with_state(state)
}

/// The OpenAPI document as served at `/v1/openapi.json` (built by [`app`]).
pub fn openapi_document() -> &'static serde_json::Value {
    openapi::cached()
}
