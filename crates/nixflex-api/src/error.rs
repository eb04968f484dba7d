//! `ApiError`: every failure, rendered as the documented envelope (docs/api.md#errors).
//!
//! `into_response` is pure: 5xx bodies carry an opaque message, and the real cause rides in a
//! response extension that the logging middleware reports.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use nixflex_core::error::{ErrorCode, doc_url};
use nixflex_core::validate::ValidationError;
use nixflex_store::StoreError;
use serde_json::{Map, Value, json};

/// An API failure.
#[derive(Debug)]
pub struct ApiError {
    /// The code (decides type and status).
    pub code: ErrorCode,
    /// Human message, safe to show.
    pub message: String,
    /// `details` object (boxed: errors travel in `Result`s and should stay small).
    pub details: Box<Map<String, Value>>,
    /// The internal cause of a 5xx (logged, never sent).
    pub source: Option<anyhow::Error>,
    /// Extra response headers (e.g. `Retry-After`, `Allow`).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

/// The internal cause of a 5xx, attached to the response for the logging middleware.
#[derive(Debug, Clone)]
pub struct ErrorCause(pub Arc<anyhow::Error>);

impl ApiError {
    /// A new error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Box::default(),
            source: None,
            headers: Vec::new(),
        }
    }

    /// Adds a `details` entry.
    #[must_use]
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// Adds a response header.
    #[must_use]
    pub fn header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// `invalid_request` with a message.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// 500 with an internal cause.
    pub fn internal(source: anyhow::Error) -> Self {
        let mut error =
            Self::new(ErrorCode::InternalError, "An internal error occurred. Please retry later.");
        error.source = Some(source);
        error
    }

    /// 501 for a documented endpoint that is not built yet.
    pub fn not_implemented(what: &str) -> Self {
        Self::new(
            ErrorCode::NotImplemented,
            format!(
                "{what} is not available on this server yet. It is planned; see the project's issues."
            ),
        )
    }

    /// The envelope body.
    pub fn body(&self) -> Value {
        let mut error = Map::new();
        error.insert("type".to_owned(), json!(self.code.error_type().as_str()));
        error.insert("code".to_owned(), json!(self.code.as_str()));
        error.insert("message".to_owned(), json!(self.message));
        error.insert("doc_url".to_owned(), json!(doc_url(self.code)));
        // Always present (`{}` when there is nothing to add), so clients can read it unguarded.
        error.insert("details".to_owned(), Value::Object((*self.details).clone()));
        json!({ "error": error })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self.body())).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        if let Some(source) = self.source {
            response.extensions_mut().insert(ErrorCause(Arc::new(source)));
        }
        response
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        let mut api = ApiError::new(error.code, error.message);
        if let Some(field) = error.field {
            api.details.insert("field".to_owned(), Value::String(field));
        }
        api
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(reason) => {
                let mut api = ApiError::new(
                    ErrorCode::ServiceUnavailable,
                    "The database is unavailable. Please retry shortly.",
                )
                .header(header::RETRY_AFTER, HeaderValue::from_static("1"));
                api.source = Some(anyhow::anyhow!("database unavailable: {reason}"));
                api
            }
            other => ApiError::internal(anyhow::Error::new(other)),
        }
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;
