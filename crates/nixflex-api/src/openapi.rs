//! The OpenAPI 3.1 document, generated from the handlers' annotations, plus the routes that are
//! documented but not built yet (answering 501) and the error-code reference.

use std::collections::HashMap;
use std::sync::OnceLock;

use nixflex_core::error::{ErrorCode, doc_url};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};

use crate::routes::pending::{PENDING, PendingRoute};

/// The error envelope (docs/api.md#errors). Documentation only: `ApiError` renders it.
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

/// The generated document with the pending routes and metadata merged in, and every operation
/// completed with what the shared layers add: path parameters and their patterns, query
/// parameters' bounds, and the statuses of authentication, rate limits, idempotency and input
/// checks.
pub(crate) fn document(mut generated: utoipa::openapi::OpenApi) -> Value {
    let components = generated.components.get_or_insert_with(Default::default);
    for route in PENDING {
        if let Some(body) = &route.body {
            let mut schemas = vec![((body.name)().into_owned(), (body.schema)())];
            (body.nested)(&mut schemas);
            for (name, schema) in schemas {
                components.schemas.entry(name).or_insert(schema);
            }
        }
    }
    let mut doc = serde_json::to_value(generated).unwrap_or_else(|_| json!({}));
    doc["openapi"] = json!("3.1.0");
    doc["info"] = json!({
        "title": "Nixflex API",
        "version": "1",
        "description": "Self-hosted voice-AI agents on your own Twilio numbers. Authenticate with `Authorization: Bearer <key_id>:<key_secret>`. Every error uses the envelope `{\"error\": {type, code, message, doc_url, details}}`. Lists take `limit` (default 25; values above 100 are clamped to 100) and `offset` and return `count`. Mutating requests accept `Idempotency-Key` (24 h). Responses carry `X-Request-Id` and `X-RateLimit-*`. Request bodies are checked strictly: unknown fields (`unknown_field`, with a suggestion), duplicate keys and NUL characters are refused; camelCase spellings of field names are accepted. Query parameters must be documented ones, each given once.",
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
                item.insert(route.method.to_ascii_lowercase(), pending_operation(route));
            }
        }
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else { continue };
            for (method, operation) in item.iter_mut() {
                complete_operation(path, method, operation);
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

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
    })
}

fn pending_operation(route: &PendingRoute) -> Value {
    let mut responses = Map::new();
    responses.insert(
        "501".to_owned(),
        error_response("`not_implemented`: not built yet on this server"),
    );
    let mut operation = json!({
        "tags": [route.tag],
        "summary": route.what,
        "operationId": format!("pending_{}_{}", route.method.to_ascii_lowercase(), route.path.trim_start_matches("/v1/").replace(['/', '-'], "_").replace(['{', '}'], "")),
        "description": format!("{}. Documented in the API reference but not available on this server yet: it answers 501 `not_implemented` (after checking the key and, when there is one, the request body).", route.what),
        "responses": responses,
    });
    if !route.query.is_empty() {
        operation["parameters"] = route
            .query
            .iter()
            .map(|name| json!({"name": name, "in": "query", "required": false, "schema": {"type": "string"}}))
            .collect();
    }
    if let Some(body) = &route.body {
        operation["requestBody"] = json!({
            "description": body.description,
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", (body.name)())}}},
            "required": true,
        });
    }
    operation
}

/// The schema and description of a path parameter, by name and route.
fn path_parameter(path: &str, name: &str) -> (Value, &'static str) {
    const E164: &str = r"^\+[1-9][0-9]{6,14}$";
    match name {
        "phone_number" => (
            json!({"type": "string", "pattern": E164}),
            "One of your numbers, E.164; in a path the + is sent as %2B",
        ),
        "caller_number" => (
            json!({"type": "string", "pattern": E164}),
            "The caller, E.164; in a path the + is sent as %2B",
        ),
        "agent_id" => {
            (json!({"type": "string", "pattern": "^agent_[0-9a-f]{16}$"}), "The agent id")
        }
        "key_id" => (json!({"type": "string", "pattern": "^nxf_[0-9a-f]{32}$"}), "The key id"),
        "call_id" => (
            json!({"type": "string", "pattern": "^(call_[0-9a-f]{24}|CA[0-9a-f]{32})$"}),
            "The call id (`call_…`) or Twilio's call SID (`CA…`)",
        ),
        "campaign_id" if path.starts_with("/v1/sms") => {
            (json!({"type": "string", "pattern": "^smsc_[0-9a-f]{16}$"}), "The SMS campaign id")
        }
        "campaign_id" => {
            (json!({"type": "string", "pattern": "^camp_[0-9a-f]{16}$"}), "The campaign id")
        }
        "message_id" => {
            (json!({"type": "string", "pattern": "^sms_[0-9a-f]{24}$"}), "The message id")
        }
        _ => (json!({"type": "string", "minLength": 1}), "Identifier"),
    }
}

/// The schema of a query parameter, by name: bounds, enums and patterns the handlers enforce.
fn query_schema(path: &str, name: &str) -> Option<(Value, Option<&'static str>)> {
    let schema = match name {
        "limit" => {
            return Some((
                json!({"type": "integer", "minimum": 1, "default": 25}),
                Some(
                    "Page size: default 25; a value above 100 is clamped to 100 (not an error); below 1 → 400",
                ),
            ));
        }
        "offset" => {
            return Some((
                json!({"type": "integer", "minimum": 0, "maximum": i64::MAX, "default": 0}),
                Some("Rows to skip, default 0"),
            ));
        }
        "is_active" | "call_successful" | "voicemail_detected" | "confirm" => {
            json!({"type": "boolean"})
        }
        "direction" => json!({"type": "string", "enum": ["inbound", "outbound"]}),
        "status" if path.starts_with("/v1/calls/batch") => json!({
            "type": "string",
            "enum": ["scheduled", "running", "paused", "completed", "cancelled", "failed"],
        }),
        "status" if path.starts_with("/v1/sms/campaigns") => {
            json!({"type": "string", "enum": ["draft", "scheduled", "running", "done", "failed"]})
        }
        "call_status" | "status" => {
            json!({"type": "string", "enum": nixflex_core::call::CallStatus::names()})
        }
        "period" => json!({
            "type": "string",
            "enum": ["today", "month_to_date", "last_30_days", "all_time"],
        }),
        "recipients_limit" => json!({"type": "integer", "minimum": 1}),
        "recipients_offset" => json!({"type": "integer", "minimum": 0}),
        "to" => json!({"type": "string", "pattern": r"^\+[1-9][0-9]{6,14}$"}),
        "caller_sentiment" => {
            json!({"type": "string", "enum": ["happy", "neutral", "frustrated"]})
        }
        "from_number" | "to_number" => {
            json!({"type": "string", "pattern": r"^\+[1-9][0-9]{6,14}$"})
        }
        "since" | "until" => json!({
            "type": "string",
            "anyOf": [{"format": "date-time"}, {"format": "date"}],
        }),
        "agent_id" => json!({"type": "string", "pattern": "^agent_[0-9a-f]{16}$"}),
        "campaign_id" => json!({"type": "string", "pattern": "^camp_[0-9a-f]{16}$"}),
        "language" => json!({"type": "string", "maxLength": 16}),
        _ => return None,
    };
    Some((schema, None))
}

/// Declares every path parameter, tightens query parameters and adds the shared statuses.
fn complete_operation(path: &str, method: &str, operation: &mut Value) {
    let Some(op) = operation.as_object_mut() else { return };
    let parameters = op.entry("parameters").or_insert_with(|| json!([]));
    if let Some(parameters) = parameters.as_array_mut() {
        let names: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        for name in names {
            let (schema, description) = path_parameter(path, name);
            let existing = parameters.iter_mut().find(|p| p["in"] == "path" && p["name"] == name);
            match existing {
                Some(param) => {
                    param["schema"] = schema;
                    param["required"] = json!(true);
                }
                None => parameters.push(json!({
                    "name": name, "in": "path", "required": true,
                    "description": description, "schema": schema,
                })),
            }
        }
        for param in parameters.iter_mut().filter(|p| p["in"] == "query") {
            let name = param["name"].as_str().unwrap_or("").to_owned();
            if let Some((schema, description)) = query_schema(path, &name) {
                param["schema"] = schema;
                if let Some(description) = description {
                    param["description"] = json!(description);
                }
            }
        }
        if parameters.is_empty() {
            op.remove("parameters");
        }
    }
    if !path.starts_with("/v1") {
        return;
    }
    let has_body = op.contains_key("requestBody");
    let keyed = match op.get("security") {
        None => true,
        Some(Value::Array(options)) => {
            options.iter().any(|o| o.as_object().is_some_and(|o| !o.is_empty()))
        }
        Some(_) => true,
    };
    let mutating = matches!(method, "post" | "put" | "patch" | "delete");
    let responses = op.entry("responses").or_insert_with(|| json!({}));
    let Some(responses) = responses.as_object_mut() else { return };
    let mut add = |status: &str, description: &str| {
        responses.entry(status).or_insert_with(|| error_response(description));
    };
    add(
        "400",
        "`invalid_request`: an undocumented or repeated query parameter, a NUL character in a path segment or parameter",
    );
    if keyed {
        add("401", "`invalid_api_key`, `key_secret_required`");
    }
    if mutating {
        add("409", "`idempotency_key_reused`, `idempotency_request_in_flight`");
    }
    if has_body {
        add("413", "`request_too_large`");
        add("415", "`unsupported_media_type`");
    }
    add("429", "`rate_limit_exceeded`");
}

/// The query parameters an operation declares (every other name is refused), from the served
/// document, so the server and the document cannot disagree.
pub(crate) fn query_parameters(method: &str, route: &str) -> &'static [String] {
    static INDEX: OnceLock<HashMap<(String, String), Vec<String>>> = OnceLock::new();
    let index = INDEX.get_or_init(|| {
        let mut index = HashMap::new();
        let Some(paths) = cached()["paths"].as_object() else { return index };
        for (path, item) in paths {
            let Some(item) = item.as_object() else { continue };
            for (verb, operation) in item {
                let names = operation["parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter(|p| p["in"] == "query")
                            .filter_map(|p| p["name"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                index.insert((verb.to_ascii_uppercase(), path.clone()), names);
            }
        }
        index
    });
    index.get(&(method.to_owned(), route.to_owned())).map_or(&[], Vec::as_slice)
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
