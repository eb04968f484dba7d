//! Integrations (docs/api.md#integrations; docs/decisions.md#webhook-targets, #precall-endpoints, #outbound-url-safety): the two post-call webhook slots of a
//! number, and the pre-call gate of an agent or a number.

use axum::Json;
use axum::extract::{Path, State};
use nixflex_core::error::ErrorCode;
use nixflex_core::ids::{AgentId, E164};
use nixflex_core::validate::{ValidationError, as_str, check_len, outbound_url};
use nixflex_store::NumberUrlSlot;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Checked};
use crate::openapi::ErrorEnvelope;
use crate::routes::numbers::{owned_number, path_number};
use crate::state::AppState;

/// `{"url": "https://…"}`: a webhook or pre-call gate target.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Read by serde (type checking) and utoipa; the handlers validate the URL.
pub(crate) struct UrlInput {
    /// A public https URL (no credentials, no private or loopback host).
    #[schema(value_type = String, required = true, min_length = 1, max_length = 2048, format = "uri")]
    url: Option<String>,
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(put_webhook, get_webhook, delete_webhook))
        .routes(routes!(test_webhook))
        .routes(routes!(put_webhook2, get_webhook2, delete_webhook2))
        .routes(routes!(put_agent_precall, get_agent_precall, delete_agent_precall))
        .routes(routes!(put_number_precall, get_number_precall, delete_number_precall))
}

fn target_url(state: &AppState, body: &Map<String, Value>) -> ApiResult<String> {
    let raw = match body.get("url") {
        None | Some(Value::Null) => return Err(ValidationError::missing("url").into()),
        Some(value) => as_str("url", value)?.trim(),
    };
    if raw.is_empty() {
        return Err(ValidationError::missing("url").into());
    }
    check_len("url", raw, 2048, ErrorCode::InvalidRequest)?;
    outbound_url("url", raw, state.config().allow_private_targets)?;
    Ok(raw.to_owned())
}

fn slot_url(number: &nixflex_core::number::PhoneNumber, slot: NumberUrlSlot) -> Option<String> {
    match slot {
        NumberUrlSlot::Webhook => number.webhook_url.clone(),
        NumberUrlSlot::Webhook2 => number.webhook2_url.clone(),
        NumberUrlSlot::Precall => number.precall_url.clone(),
    }
}

fn webhook_view(phone_number: &str, url: Option<String>) -> Value {
    json!({"phone_number": phone_number, "webhook_url": url, "url": url, "is_set": url.is_some()})
}

async fn set_slot(
    state: &AppState,
    caller: &Caller,
    raw: &str,
    slot: NumberUrlSlot,
    url: Option<&str>,
) -> ApiResult<String> {
    let phone_number = path_number(raw)?;
    if !state
        .store()
        .set_number_url(&caller.account.account_id, &E164::from(phone_number.as_str()), slot, url)
        .await?
    {
        return Err(ApiError::new(
            ErrorCode::NumberNotFound,
            format!("No number {phone_number} in this account."),
        ));
    }
    Ok(phone_number)
}

async fn put_webhook_slot(
    state: &AppState,
    caller: &Caller,
    raw: &str,
    slot: NumberUrlSlot,
    body: &Map<String, Value>,
) -> ApiResult<Json<Value>> {
    let url = target_url(state, body)?;
    let phone_number = set_slot(state, caller, raw, slot, Some(&url)).await?;
    let mut view = webhook_view(&phone_number, Some(url));
    view["ok"] = json!(true);
    Ok(Json(view))
}

async fn get_webhook_slot(
    state: &AppState,
    caller: &Caller,
    raw: &str,
    slot: NumberUrlSlot,
) -> ApiResult<Json<Value>> {
    let phone_number = path_number(raw)?;
    let (number, _) = owned_number(state, caller, &phone_number).await?;
    Ok(Json(webhook_view(&phone_number, slot_url(&number, slot))))
}

async fn delete_webhook_slot(
    state: &AppState,
    caller: &Caller,
    raw: &str,
    slot: NumberUrlSlot,
) -> ApiResult<Json<Value>> {
    let phone_number = set_slot(state, caller, raw, slot, None).await?;
    Ok(Json(json!({"ok": true, "phone_number": phone_number, "is_set": false, "deleted": true})))
}

/// One test delivery.
#[derive(Debug, serde::Serialize, ToSchema)]
pub(crate) struct TestDelivery {
    /// Where it was sent.
    url: String,
    /// Whether the receiver answered 2xx.
    delivered: bool,
    /// The receiver's HTTP status, when it answered.
    status_code: Option<u16>,
    /// Time to the answer or failure, in ms.
    latency_ms: f64,
    /// What went wrong, when it did.
    error: Option<String>,
}

/// The result of a webhook test.
#[derive(Debug, serde::Serialize, ToSchema)]
pub(crate) struct WebhookTestResult {
    /// Whether every configured URL accepted the event.
    ok: bool,
    /// `webhook.test`.
    event: &'static str,
    /// The event id sent in `X-Nixflex-Event-Id` (and in the body).
    event_id: String,
    /// One entry per distinct configured URL (slot 1, then slot 2).
    deliveries: Vec<TestDelivery>,
}

/// Send a signed `webhook.test` event to the number's webhook slots now, and report how each
/// receiver answered (extension). Not retried: it is a check of the receiver.
#[utoipa::path(post, path = "/v1/integrations/webhook/number/{phone_number}/test", tag = "integrations",
    params(("phone_number" = String, Path, description = "E.164, with + sent as %2B")),
    responses((status = 200, description = "How each receiver answered", body = WebhookTestResult),
        (status = 400, description = "`invalid_request` (no webhook configured on the number), `invalid_phone_format`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`number_not_found`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope)))]
async fn test_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<WebhookTestResult>> {
    let phone_number = path_number(&raw)?;
    let (number, _) = owned_number(&state, &caller, &phone_number).await?;
    let urls = nixflex_engine::webhook::targets([
        number.webhook_url.as_deref(),
        number.webhook2_url.as_deref(),
    ]);
    if urls.is_empty() {
        return Err(ApiError::invalid(format!(
            "No webhook is configured on {phone_number}; set one with PUT /v1/integrations/webhook/number/{{phone_number}}."
        ))
        .detail("field", "url"));
    }
    let sent_at = nixflex_store::now();
    let event_id = nixflex_engine::webhook::event_id(
        nixflex_engine::webhook::Event::Test,
        &format!("{phone_number}:{}", sent_at.timestamp_micros()),
    );
    let payload = json!({
        "event": "webhook.test",
        "event_id": event_id,
        "phone_number": phone_number,
        "sent_at": sent_at,
        "message": "A test event from Nixflex: your endpoint is reachable and can verify our signature.",
    });
    let keys = state.store().active_keys(&caller.account.account_id).await?;
    let secrets: Vec<String> =
        keys.iter().filter_map(|k| state.secrets().open(&k.secret_sealed).ok()).collect();
    let mut deliveries = Vec::with_capacity(urls.len());
    for url in urls {
        let started = std::time::Instant::now();
        let sent = state
            .customer()
            .post_signed_with(
                &url,
                &payload,
                &secrets,
                std::time::Duration::from_secs(10),
                &[(nixflex_engine::webhook::EVENT_ID_HEADER, event_id.as_str())],
            )
            .await;
        let latency_ms = (started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
        deliveries.push(match sent {
            Ok(response) => {
                let status = response.status();
                TestDelivery {
                    url,
                    delivered: status.is_success(),
                    status_code: Some(status.as_u16()),
                    latency_ms,
                    error: (!status.is_success()).then(|| format!("HTTP {}", status.as_u16())),
                }
            }
            Err(error) => TestDelivery {
                url,
                delivered: false,
                status_code: None,
                latency_ms,
                error: Some(error.to_string()),
            },
        });
    }
    Ok(Json(WebhookTestResult {
        ok: deliveries.iter().all(|d| d.delivered),
        event: "webhook.test",
        event_id,
        deliveries,
    }))
}

const WEBHOOK_ERRORS: &str = "`missing_field`, `invalid_request` (not https, or a private address), `invalid_phone_format`, `invalid_json`, `unknown_field`";

/// Set the number's primary post-call webhook (https; every call on the number is delivered).
#[utoipa::path(put, path = "/v1/integrations/webhook/number/{phone_number}", tag = "integrations",
    params(("phone_number" = String, Path, description = "E.164, with + sent as %2B")),
    request_body(content = UrlInput, description = "`{\"url\": \"https://…\"}`", content_type = "application/json"),
    responses((status = 200, description = "`{ok, phone_number, webhook_url, url, is_set}`"),
        (status = 400, description = WEBHOOK_ERRORS, body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`number_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope)))]
async fn put_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    Checked { fields: body, .. }: Checked<UrlInput>,
) -> ApiResult<Json<Value>> {
    put_webhook_slot(&state, &caller, &raw, NumberUrlSlot::Webhook, &body).await
}

/// Get the number's primary post-call webhook.
#[utoipa::path(get, path = "/v1/integrations/webhook/number/{phone_number}", tag = "integrations",
    params(("phone_number" = String, Path, description = "E.164, with + sent as %2B")),
    responses((status = 200, description = "`{phone_number, webhook_url, url, is_set}`"),
        (status = 400, description = "`invalid_phone_format`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`number_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope)))]
async fn get_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    get_webhook_slot(&state, &caller, &raw, NumberUrlSlot::Webhook).await
}

/// Remove the number's primary post-call webhook.
#[utoipa::path(delete, path = "/v1/integrations/webhook/number/{phone_number}", tag = "integrations",
    params(("phone_number" = String, Path, description = "E.164, with + sent as %2B")),
    responses((status = 200, description = "`{ok, phone_number, is_set: false, deleted: true}`"),
        (status = 400, description = "`invalid_phone_format`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`number_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope)))]
async fn delete_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    delete_webhook_slot(&state, &caller, &raw, NumberUrlSlot::Webhook).await
}

/// Set the number's secondary post-call webhook (independent of the primary; both receive every event).
#[utoipa::path(put, path = "/v1/integrations/webhook2/number/{phone_number}", tag = "integrations",
    params(("phone_number" = String, Path, description = "E.164, with + sent as %2B")),
    request_body(content = UrlInput, description = "`{\"url\": \"https://…\"}`", content_type = "application/json"),
    responses((status = 200, description = "`{ok, phone_number, webhook_url, url, is_set}`"),
        (status = 400, description = WEBHOOK_ERRORS, body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`number_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope)))]
async fn put_webhook2(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    Checked { fields: body, .. }: Checked<UrlInput>,
) -> ApiResult<Json<Value>> {
    put_webhook_slot(&state, &caller, &raw, NumberUrlSlot::Webhook2, &body).await
}

/// Get the number's secondary post-call webhook.
#[utoipa::path(get, path = "/v1/integrations/webhook2/number/{phone_number}", tag = "integrations",
    params(("phone_number" = String, Path, description = "E.164, with + sent as %2B")),
    responses((status = 200, description = "`{phone_number, webhook_url, url, is_set}`"),
        (status = 400, description = "`invalid_phone_format`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`number_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope)))]
async fn get_webhook2(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    get_webhook_slot(&state, &caller, &raw, NumberUrlSlot::Webhook2).await
}

/// Remove the number's secondary post-call webhook.
#[utoipa::path(delete, path = "/v1/integrations/webhook2/number/{phone_number}", tag = "integrations",
    params(("phone_number" = String, Path, description = "E.164, with + sent as %2B")),
    responses((status = 200, description = "`{ok, phone_number, is_set: false, deleted: true}`"),
        (status = 400, description = "`invalid_phone_format`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`number_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope)))]
async fn delete_webhook2(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    delete_webhook_slot(&state, &caller, &raw, NumberUrlSlot::Webhook2).await
}

fn agent_missing(agent_id: &str) -> ApiError {
    ApiError::new(ErrorCode::AgentNotFound, format!("No agent `{agent_id}` in this account."))
}

/// Gate every inbound call of the agent's numbers (present and future) through your server.
#[utoipa::path(put, path = "/v1/integrations/precall/agent/{agent_id}", tag = "integrations",
    params(("agent_id" = String, Path, description = "The agent")),
    request_body(content = UrlInput, description = "`{\"url\": \"https://…\"}`", content_type = "application/json"),
    responses((status = 200, description = "`{ok: true, agent_id, url}`"),
        (status = 400, description = WEBHOOK_ERRORS, body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`agent_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope)))]
async fn put_agent_precall(
    State(state): State<AppState>,
    caller: Caller,
    Path(agent_id): Path<String>,
    Checked { fields: body, .. }: Checked<UrlInput>,
) -> ApiResult<Json<Value>> {
    let url = target_url(&state, &body)?;
    if !state
        .store()
        .set_agent_precall(
            &caller.account.account_id,
            &AgentId::from(agent_id.as_str()),
            Some(&url),
        )
        .await?
    {
        return Err(agent_missing(&agent_id));
    }
    Ok(Json(json!({"ok": true, "agent_id": agent_id, "url": url})))
}

/// Get the agent's pre-call gate.
#[utoipa::path(get, path = "/v1/integrations/precall/agent/{agent_id}", tag = "integrations",
    params(("agent_id" = String, Path, description = "The agent")),
    responses((status = 200, description = "`{agent_id, url, is_set}`"),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`agent_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope)))]
async fn get_agent_precall(
    State(state): State<AppState>,
    caller: Caller,
    Path(agent_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let url = state
        .store()
        .get_agent_precall(&caller.account.account_id, &AgentId::from(agent_id.as_str()))
        .await?
        .ok_or_else(|| agent_missing(&agent_id))?;
    Ok(Json(json!({"agent_id": agent_id, "url": url, "is_set": url.is_some()})))
}

/// Remove the agent's pre-call gate.
#[utoipa::path(delete, path = "/v1/integrations/precall/agent/{agent_id}", tag = "integrations",
    params(("agent_id" = String, Path, description = "The agent")),
    responses((status = 200, description = "`{ok: true, agent_id, is_set: false, deleted: true}`"),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`agent_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope)))]
async fn delete_agent_precall(
    State(state): State<AppState>,
    caller: Caller,
    Path(agent_id): Path<String>,
) -> ApiResult<Json<Value>> {
    if !state
        .store()
        .set_agent_precall(&caller.account.account_id, &AgentId::from(agent_id.as_str()), None)
        .await?
    {
        return Err(agent_missing(&agent_id));
    }
    Ok(Json(json!({"ok": true, "agent_id": agent_id, "is_set": false, "deleted": true})))
}

/// Gate the number's inbound calls through your server (overrides the agent's gate).
#[utoipa::path(put, path = "/v1/integrations/precall/number/{phone_number}", tag = "integrations",
    params(("phone_number" = String, Path, description = "E.164, with + sent as %2B")),
    request_body(content = UrlInput, description = "`{\"url\": \"https://…\"}`", content_type = "application/json"),
    responses((status = 200, description = "`{ok: true, phone_number, url}`"),
        (status = 400, description = WEBHOOK_ERRORS, body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`number_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope)))]
async fn put_number_precall(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    Checked { fields: body, .. }: Checked<UrlInput>,
) -> ApiResult<Json<Value>> {
    let url = target_url(&state, &body)?;
    let phone_number = set_slot(&state, &caller, &raw, NumberUrlSlot::Precall, Some(&url)).await?;
    Ok(Json(json!({"ok": true, "phone_number": phone_number, "url": url})))
}

/// Get the number's pre-call gate.
#[utoipa::path(get, path = "/v1/integrations/precall/number/{phone_number}", tag = "integrations",
    params(("phone_number" = String, Path, description = "E.164, with + sent as %2B")),
    responses((status = 200, description = "`{phone_number, url, is_set}`"),
        (status = 400, description = "`invalid_phone_format`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`number_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope)))]
async fn get_number_precall(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let phone_number = path_number(&raw)?;
    let (number, _) = owned_number(&state, &caller, &phone_number).await?;
    Ok(Json(
        json!({"phone_number": phone_number, "url": number.precall_url, "is_set": number.precall_url.is_some()}),
    ))
}

/// Remove the number's pre-call gate (the agent's gate, if any, applies again).
#[utoipa::path(delete, path = "/v1/integrations/precall/number/{phone_number}", tag = "integrations",
    params(("phone_number" = String, Path, description = "E.164, with + sent as %2B")),
    responses((status = 200, description = "`{ok: true, phone_number, is_set: false, deleted: true}`"),
        (status = 400, description = "`invalid_phone_format`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`number_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope)))]
async fn delete_number_precall(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let phone_number = set_slot(&state, &caller, &raw, NumberUrlSlot::Precall, None).await?;
    Ok(Json(json!({"ok": true, "phone_number": phone_number, "is_set": false, "deleted": true})))
}
