//! The OpenAPI 3.1 document, generated from the handlers' annotations, plus the routes that are
//! documented but not built yet (answering 501) and the error-code reference.

use std::sync::OnceLock;

use nixflex_core::error::{ErrorCode, doc_url};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};

use crate::routes::pending::PENDING;

/// The error envelope (API.md §1.5). Documentation only: `ApiError` renders it.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub(crate) struct ErrorEnvelope {
    /// The error.
    pub(crate) error: ErrorBody,
}

/// The body of an error.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub(crate) struct ErrorBody {
    /// Broad class: authentication_error, permission_error, invalid_request, payment_required,
    /// not_found, conflict, rate_limit_error, provider_error, server_error.
    #[schema(rename = "type")]
    pub(crate) kind: String,
    /// Machine-readable reason to branch on.
    #[schema(schema_with = error_code_schema)]
    pub(crate) code: String,
    /// Human-readable text, safe to show; may change.
    pub(crate) message: String,
    /// Link to the error's documentation.
    pub(crate) doc_url: String,
    /// Structured extras: `field`, `retry_after`, `twilio_error`, …; `{}` when there are none.
    #[schema(value_type = Object)]
    pub(crate) details: Value,
}

fn error_code_schema() -> impl Into<RefOr<Schema>> {
    let table = ErrorCode::ALL
        .iter()
        .map(|code| {
            format!("- `{}` ({} {})", code.as_str(), code.http_status(), code.error_type().as_str())
        })
        .collect::<Vec<_>>()
        .join("\n");
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
        .description(Some(format!("Every error code this API returns:\n{table}")))
        .build()
}

/// The generated document with the pending routes and metadata merged in.
pub(crate) fn document(generated: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(generated).unwrap_or_else(|_| json!({}));
    doc["openapi"] = json!("3.1.0");
    doc["info"] = json!({
        "title": "Nixflex API",
        "version": "1",
        "description": "Self-hosted voice-AI agents on your own Twilio numbers. Authenticate with `Authorization: Bearer <key_id>:<key_secret>`. Every error uses the envelope `{\"error\": {type, code, message, doc_url, details}}`. Lists take `limit` (default 25, max 100) and `offset` and return `count`. Mutating requests accept `Idempotency-Key` (24 h). Responses carry `X-Request-Id` and `X-RateLimit-*`.",
        "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}
    });
    doc["security"] = json!([{"api_key": []}]);
    let components =
        doc.as_object_mut().map(|d| d.entry("components").or_insert_with(|| json!({})));
    if let Some(components) = components {
        components["securitySchemes"] = json!({
            "api_key": {"type": "http", "scheme": "bearer", "description": "`key_id:key_secret`"}
        });
    }
    let paths = doc
        .as_object_mut()
        .and_then(|d| d.entry("paths").or_insert_with(|| json!({})).as_object_mut());
    if let Some(paths) = paths {
        for route in PENDING {
            let item = paths.entry(route.path).or_insert_with(|| json!({}));
            if let Value::Object(item) = item {
                item.insert(
                    route.method.to_ascii_lowercase(),
                    pending_operation(route.what, route.tag),
                );
            }
        }
    }
    doc["x-error-codes"] = Value::Array(
        ErrorCode::ALL
            .iter()
            .map(|code| {
                json!({
                    "code": code.as_str(),
                    "type": code.error_type().as_str(),
                    "status": code.http_status(),
                    "doc_url": doc_url(*code),
                })
            })
            .collect(),
    );
    doc
}

fn pending_operation(what: &str, tag: &str) -> Value {
    let mut responses = Map::new();
    responses.insert(
        "501".to_owned(),
        json!({
            "description": "`not_implemented`: not built yet on this server",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
        }),
    );
    json!({
        "tags": [tag],
        "summary": what,
        "description": format!("{what}. Documented in the API reference but not available on this server yet: it answers 501 `not_implemented`."),
        "responses": responses,
    })
}

static DOC: OnceLock<Value> = OnceLock::new();

/// Stores the document once the router is built.
pub(crate) fn set_document(doc: Value) {
    let _ = DOC.set(doc);
}

/// The document served at `GET /v1/openapi.json`.
pub(crate) fn cached() -> &'static Value {
    static EMPTY: OnceLock<Value> = OnceLock::new();
    DOC.get().unwrap_or_else(|| EMPTY.get_or_init(|| json!({})))
}
