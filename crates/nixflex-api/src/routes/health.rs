//! Liveness, readiness and the API reference.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::openapi::ErrorEnvelope;
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi_json))
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "`{\"status\": \"ok\"}`")))]
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, description = "Ready"),
              (status = 503, description = "`service_unavailable`", body = ErrorEnvelope)))]
async fn readyz(State(state): State<AppState>) -> Result<(StatusCode, Json<Value>), ApiError> {
    state.store().ping().await.map_err(|error| {
        let mut api = ApiError::new(
            nixflex_core::error::ErrorCode::ServiceUnavailable,
            "The database does not answer.",
        );
        api.source = Some(anyhow::Error::new(error));
        api
    })?;
    Ok((StatusCode::OK, Json(json!({"status": "ready", "database": state.store().backend()}))))
}

/// This document (OpenAPI 3.1). No key needed.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "The OpenAPI document")))]
async fn openapi_json() -> Json<Value> {
    Json(crate::openapi::cached().clone())
}
