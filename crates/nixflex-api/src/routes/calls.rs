//! Calls (docs/api.md#calls; docs/decisions.md#call-object, #deletes, #transcript-shapes, #outbound-requests): history, details, deletion.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, NaiveDate, Utc};
use nixflex_core::call::{
    CallRecord, CallStatus, Direction, EndedReason, FunctionCallLog, ProviderEvent,
    TranscriptEntry, TurnLatency,
};
use nixflex_core::error::ErrorCode;
use nixflex_core::ids::{AccountId, CallId};
use nixflex_core::phone;
use nixflex_store::CallFilter;
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, QueryPairs};
use crate::openapi::ErrorEnvelope;
use crate::state::AppState;

/// A call as the API returns it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CallObject {
    /// `call_` + 24 hex.
    call_id: String,
    /// Twilio's `CA…` SID (`null` while queued).
    twilio_call_sid: Option<String>,
    /// The agent (kept after the agent is deleted).
    agent_id: Option<String>,
    /// `inbound` or `outbound`.
    direction: Direction,
    /// The SDK's name for `direction` (same value).
    call_direction: Direction,
    /// Always `phone_call` (the SDK's call kind; web calls are not built).
    #[schema(value_type = String, example = "phone_call")]
    call_type: &'static str,
    /// Caller ID.
    from_number: String,
    /// Number dialled.
    to_number: String,
    /// queued, initiated, ringing, in-progress, completed, busy, no-answer, failed, canceled.
    call_status: CallStatus,
    /// Why the call ended (docs/engine.md#ended-reasons), e.g. completed, caller_hangup,
    /// silence_timeout.
    ended_reason: Option<EndedReason>,
    /// When dialling began / the call reached us.
    started_at: DateTime<Utc>,
    /// `started_at` in epoch milliseconds (SDK).
    start_timestamp: i64,
    /// When it was answered.
    answered_at: Option<DateTime<Utc>>,
    /// When it ended.
    ended_at: Option<DateTime<Utc>>,
    /// `ended_at` in epoch milliseconds (SDK); `null` until the call ends.
    end_timestamp: Option<i64>,
    /// Connected seconds (answer → hang-up), the billed quantity.
    duration_seconds: Option<i64>,
    /// Connected time in milliseconds (SDK): `ended_at − answered_at`, or `duration_seconds`
    /// × 1000 when the call was never answered by the engine; `null` until the call ends.
    duration_ms: Option<i64>,
    /// Billed minutes (SDK): `duration_seconds` ÷ 60 (metered per whole second), rounded to
    /// four decimals; `null` until the call ends.
    charged_minutes: Option<f64>,
    /// What was said; `GET /v1/calls` leaves it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    transcript: Option<Vec<TranscriptEntry>>,
    /// A signed link to the recording (dual-channel WAV: caller left, agent right), valid for
    /// 24 hours from this response by default; fetch the call again for a fresh one.
    /// `GET /v1/calls/{call_id}/recording` serves it with the API key instead. `null` while
    /// there is none.
    recording_url: Option<String>,
    /// Length of the recording in seconds.
    recording_duration_s: Option<f64>,
    /// Post-call summary.
    call_summary: Option<String>,
    /// happy, neutral or frustrated.
    caller_sentiment: Option<String>,
    /// Whether the caller got what they needed.
    call_successful: Option<bool>,
    /// Values of the agent's `data_extraction_fields`.
    #[schema(value_type = Object)]
    extracted_data: Map<String, Value>,
    /// Appointments booked during the call (none until booking exists).
    #[schema(value_type = Vec<Object>)]
    bookings: Vec<Value>,
    /// Voicemail reached (outbound).
    voicemail_detected: bool,
    /// Batch campaign.
    campaign_id: Option<String>,
    /// Echoed from the outbound request; `{}` when none was given.
    #[schema(value_type = Object)]
    metadata: Value,
    /// Charge, excluding carrier costs.
    cost_usd: Option<f64>,
    /// Mean time from the caller's end of speech to the agent's first audio, in ms.
    avg_latency_ms: Option<f64>,
    /// Per-turn latency breakdown.
    latency: Vec<TurnLatency>,
    /// Why the pre-call gate rejected the call.
    precall_reject_reason: Option<String>,
    /// Every custom-function invocation during the call, in order (docs/api.md#function-calls).
    function_calls: Vec<FunctionCallLog>,
    /// Provider retries, switches to a fallback provider and outages, in call order
    /// (docs/api.md#provider-events); `[]` when none.
    provider_events: Vec<ProviderEvent>,
    /// The carrier's answering-machine verdict on an outbound call (agents with
    /// `amd_enabled`): `human`, `machine_start`, `machine_end_beep`, `machine_end_silence`,
    /// `machine_end_other`, `fax` or `unknown`.
    amd_result: Option<String>,
    /// Which detector found the voicemail when `voicemail_detected` is true: `amd` (the
    /// carrier's answering-machine detection) or `transcript` (the engine's phrase matcher).
    voicemail_detection_method: Option<String>,
    /// Why an outbound call ended without a conversation, as the carrier (or the queue) said:
    /// `carrier_status` and `sip_response_code` from Twilio's final status, `twilio_error`
    /// (`code`, `message`) when Twilio refused the dial, or `reason: "queue_timeout"`.
    #[schema(value_type = Option<Object>)]
    carrier_details: Option<Value>,
    /// Every attempt to deliver a webhook about this call, oldest first (`GET /v1/calls/{id}`
    /// only; lists leave it out).
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_deliveries: Option<Vec<WebhookDeliveryObject>>,
    /// Created.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
}

/// Connected milliseconds of an ended call: from the engine's answer to the end when both are
/// known, else the recorded connected seconds.
fn duration_ms(call: &CallRecord) -> Option<i64> {
    match (call.answered_at, call.ended_at) {
        (Some(answered), Some(ended)) => Some((ended - answered).num_milliseconds().max(0)),
        (None, Some(_)) => call.duration_seconds.map(|s| s.max(0).saturating_mul(1000)),
        (_, None) => None,
    }
}

/// Billed minutes of an ended call: its whole connected seconds ÷ 60, to four decimals.
fn charged_minutes(call: &CallRecord) -> Option<f64> {
    let seconds = call.ended_at.and(call.duration_seconds)?.max(0);
    let minutes = seconds as f64 / 60.0;
    Some((minutes * 10_000.0).round() / 10_000.0)
}

impl CallObject {
    fn new(call: CallRecord, with_transcript: bool, state: &AppState) -> Self {
        let recording_url = match (&call.recording, state.engine().recordings()) {
            (Some(_), Some(recordings)) => Some(recordings.url(&call.call_id, Utc::now())),
            _ => None,
        };
        let recording_duration_s = call.recording.as_ref().and_then(|r| r.duration_s);
        let duration_ms = duration_ms(&call);
        let charged_minutes = charged_minutes(&call);
        Self {
            call_id: call.call_id.into(),
            twilio_call_sid: call.twilio_call_sid,
            agent_id: call.agent_id.map(Into::into),
            direction: call.direction,
            call_direction: call.direction,
            call_type: "phone_call",
            from_number: call.from_number,
            to_number: call.to_number,
            call_status: call.call_status,
            ended_reason: call.ended_reason,
            started_at: call.started_at,
            start_timestamp: call.started_at.timestamp_millis(),
            answered_at: call.answered_at,
            ended_at: call.ended_at,
            end_timestamp: call.ended_at.map(|at| at.timestamp_millis()),
            duration_seconds: call.duration_seconds,
            duration_ms,
            charged_minutes,
            transcript: with_transcript.then_some(call.transcript),
            recording_url,
            recording_duration_s,
            call_summary: call.call_summary,
            caller_sentiment: call.caller_sentiment,
            call_successful: call.call_successful,
            extracted_data: call.extracted_data,
            bookings: Vec::new(),
            voicemail_detected: call.voicemail_detected,
            campaign_id: call.campaign_id,
            metadata: match call.metadata {
                Some(Value::Null) | None => Value::Object(Map::new()),
                Some(metadata) => metadata,
            },
            cost_usd: call.cost_usd,
            avg_latency_ms: call.avg_latency_ms,
            latency: call.turns,
            precall_reject_reason: call.precall_reject_reason,
            function_calls: call.function_calls,
            provider_events: call.provider_events,
            amd_result: call.amd_result,
            voicemail_detection_method: call.voicemail_detection_method,
            carrier_details: call.carrier_details,
            webhook_deliveries: None,
            created_at: call.created_at,
            updated_at: call.updated_at,
        }
    }
}

/// A page of calls.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CallList {
    /// Calls, newest first, without transcripts.
    calls: Vec<CallObject>,
    /// Total matching.
    count: i64,
    /// Page size.
    limit: i64,
    /// Offset.
    offset: i64,
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_calls, delete_all_calls))
        .routes(routes!(get_call, delete_call))
}

fn bad(field: &str, message: String) -> ApiError {
    ApiError::invalid(message).detail("field", field.to_owned())
}

pub(crate) fn parse_time(field: &str, raw: &str) -> ApiResult<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(raw) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(day) = NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        && let Some(midnight) = day.and_hms_opt(0, 0, 0)
    {
        return Ok(midnight.and_utc());
    }
    Err(bad(
        field,
        format!(
            "`{field}` must be an ISO-8601 date-time (2026-05-17T03:45:12Z) or date, not `{raw}`."
        ),
    ))
}

fn filter_from(query: &QueryPairs) -> ApiResult<CallFilter> {
    let text = |name: &str| query.get(name).filter(|v| !v.is_empty()).map(str::to_owned);
    let number = |name: &str| -> ApiResult<Option<String>> {
        match query.get(name).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(raw) => {
                phone::parse_e164(&phone::from_path_segment(raw)).map(Some).ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidPhoneFormat,
                        format!("`{name}` must be E.164 (send + as %2B), not `{raw}`."),
                    )
                    .detail("field", name.to_owned())
                })
            }
        }
    };
    let direction = match query.get("direction").filter(|v| !v.is_empty()) {
        None => None,
        Some(raw) => Some(Direction::parse(raw).ok_or_else(|| {
            bad("direction", format!("`direction` must be inbound or outbound, not `{raw}`."))
        })?),
    };
    let call_status = match text("call_status").or_else(|| text("status")) {
        None => None,
        Some(status) => Some(CallStatus::parse(&status).ok_or_else(|| {
            bad(
                "call_status",
                format!("`call_status` must be one of {}.", CallStatus::names().join(", ")),
            )
        })?),
    };
    let caller_sentiment = match text("caller_sentiment") {
        Some(s) if !matches!(s.as_str(), "happy" | "neutral" | "frustrated") => {
            return Err(bad(
                "caller_sentiment",
                "`caller_sentiment` must be happy, neutral or frustrated.".to_owned(),
            ));
        }
        other => other,
    };
    let since =
        query.get("since").filter(|v| !v.is_empty()).map(|v| parse_time("since", v)).transpose()?;
    let until =
        query.get("until").filter(|v| !v.is_empty()).map(|v| parse_time("until", v)).transpose()?;
    Ok(CallFilter {
        agent_id: text("agent_id"),
        direction,
        call_status,
        from_number: number("from_number")?,
        to_number: number("to_number")?,
        campaign_id: text("campaign_id"),
        since,
        until,
        caller_sentiment,
        call_successful: query.bool("call_successful")?,
        voicemail_detected: query.bool("voicemail_detected")?,
    })
}

/// List calls, newest first. Items leave out the transcript (get one call for it).
#[utoipa::path(
    get, path = "/v1/calls", tag = "calls",
    params(("limit" = Option<i64>, Query, description = "Page size, default 25, max 100"),
           ("offset" = Option<i64>, Query, description = "Rows to skip"),
           ("agent_id" = Option<String>, Query, description = "Only this agent's calls"),
           ("direction" = Option<String>, Query, description = "inbound or outbound"),
           ("call_status" = Option<String>, Query, description = "A Twilio call status"),
           ("status" = Option<String>, Query, deprecated, description = "Alias of `call_status`"),
           ("from_number" = Option<String>, Query, description = "E.164 caller ID"),
           ("to_number" = Option<String>, Query, description = "E.164 number dialled"),
           ("campaign_id" = Option<String>, Query, description = "Batch campaign"),
           ("since" = Option<String>, Query, description = "Started at or after (ISO-8601)"),
           ("until" = Option<String>, Query, description = "Started before (ISO-8601)"),
           ("caller_sentiment" = Option<String>, Query, description = "happy, neutral or frustrated"),
           ("call_successful" = Option<bool>, Query, description = "Outcome"),
           ("voicemail_detected" = Option<bool>, Query, description = "Voicemail reached")),
    responses(
        (status = 200, description = "A page of calls", body = CallList),
        (status = 400, description = "`invalid_request`, `invalid_phone_format`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn list_calls(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
) -> ApiResult<Json<CallList>> {
    let page = query.page()?;
    let filter = filter_from(&query)?;
    let (calls, count) =
        state.store().list_calls(&caller.account.account_id, &filter, page).await?;
    Ok(Json(CallList {
        calls: calls.into_iter().map(|c| CallObject::new(c, false, &state)).collect(),
        count,
        limit: page.limit,
        offset: page.offset,
    }))
}

fn not_found(call_id: &str) -> ApiError {
    ApiError::new(ErrorCode::CallNotFound, format!("No call `{call_id}` in this account."))
}

/// A call of the account named by our `call_…` id or by its Twilio call SID (webhook receivers
/// and the docs' examples use the SID). Our ids and Twilio's SIDs never look alike.
pub(crate) async fn find_call(
    state: &AppState,
    account_id: &AccountId,
    id: &str,
) -> ApiResult<CallRecord> {
    let call = if id.starts_with("call_") {
        state.store().get_call(account_id, &CallId::from(id)).await?
    } else {
        state.store().get_call_by_sid(account_id, id, None).await?
    };
    call.ok_or_else(|| not_found(id))
}

/// Get a call with its transcript (role, text, ms since answer) and per-turn latency.
#[utoipa::path(
    get, path = "/v1/calls/{call_id}", tag = "calls",
    params(("call_id" = String, Path, description = "The call id (`call_…`) or its Twilio call SID (`CA…`)")),
    responses(
        (status = 200, description = "The call", body = CallObject),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`call_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn get_call(
    State(state): State<AppState>,
    caller: Caller,
    Path(call_id): Path<String>,
) -> ApiResult<Json<CallObject>> {
    let call = find_call(&state, &caller.account.account_id, &call_id).await?;
    let deliveries = state.store().webhook_deliveries(&call.call_id).await?;
    let mut object = CallObject::new(call, true, &state);
    object.webhook_deliveries =
        Some(deliveries.into_iter().map(WebhookDeliveryObject::from).collect());
    Ok(Json(object))
}

/// One attempt to deliver a webhook about the call.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WebhookDeliveryObject {
    /// `call.started`, `call.completed` or `webhook.test`.
    event: String,
    /// The id receivers de-duplicate on (also the `X-Nixflex-Event-Id` header).
    event_id: String,
    /// Where it was sent.
    url: String,
    /// 1 for the first attempt.
    attempt: i64,
    /// When it was sent (UTC).
    attempted_at: DateTime<Utc>,
    /// The receiver's HTTP status, when it answered.
    status_code: Option<i64>,
    /// Time to the answer or failure, in ms.
    latency_ms: Option<f64>,
    /// What went wrong, when it did.
    error: Option<String>,
    /// Whether the receiver accepted it (2xx).
    delivered: bool,
}

impl From<nixflex_store::WebhookDelivery> for WebhookDeliveryObject {
    fn from(d: nixflex_store::WebhookDelivery) -> Self {
        Self {
            event: d.event,
            event_id: d.event_id,
            url: d.url,
            attempt: d.attempt,
            attempted_at: d.attempted_at,
            status_code: d.status_code,
            latency_ms: d.latency_ms,
            error: d.error,
            delivered: d.delivered,
        }
    }
}

/// Erase a call: its record, transcript and recording. Immediate and irreversible.
#[utoipa::path(
    delete, path = "/v1/calls/{call_id}", tag = "calls",
    params(("call_id" = String, Path, description = "The call id (`call_…`) or its Twilio call SID (`CA…`)")),
    responses(
        (status = 200, description = "`{\"call_id\", \"deleted\": true}`"),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`call_not_found`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn delete_call(
    State(state): State<AppState>,
    caller: Caller,
    Path(call_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let call = find_call(&state, &caller.account.account_id, &call_id).await?;
    if let Some(recording) = &call.recording {
        crate::routes::recordings::erase(&state, &call.account_id, &recording.location).await?;
    }
    if !state.store().delete_call(&caller.account.account_id, &call.call_id).await? {
        return Err(not_found(&call_id));
    }
    Ok(Json(json!({"call_id": call.call_id, "deleted": true})))
}

/// Erase every call of the account, with its transcripts and recordings. The SDK's
/// `calls.deleteAll()` sends no confirmation; `?confirm=true` is accepted too and
/// `?confirm=false` refuses.
#[utoipa::path(
    delete, path = "/v1/calls", tag = "calls",
    params(("confirm" = Option<bool>, Query, description = "Optional; `false` refuses the deletion")),
    responses(
        (status = 200, description = "`{\"deleted\": true, \"calls_deleted\": n, \"recordings_deleted\": n, \"sms_deleted\": n, \"deleted_calls\": n, \"deleted_messages\": n}` (the SMS log is erased too)"),
        (status = 400, description = "`invalid_request` (`confirm=false` or not a boolean)", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn delete_all_calls(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
) -> ApiResult<Json<Value>> {
    if query.bool("confirm")? == Some(false) {
        return Err(bad(
            "confirm",
            "`confirm=false` refuses the deletion; omit it or send `confirm=true`.".to_owned(),
        ));
    }
    let account_id = &caller.account.account_id;
    let recordings = state.store().account_recordings(account_id).await?;
    for recording in &recordings {
        crate::routes::recordings::erase(&state, account_id, &recording.location).await?;
    }
    let deleted = state.store().delete_all_calls(account_id).await?;
    let sms_deleted = state.store().delete_all_sms(account_id).await?;
    tracing::info!(message = "All calls and messages deleted.", account_id = %account_id, deleted, recordings = recordings.len(), sms_deleted);
    // `deleted_calls`/`deleted_messages` are the earlier names, kept for clients.
    Ok(Json(json!({
        "deleted": true,
        "calls_deleted": deleted,
        "recordings_deleted": recordings.len(),
        "sms_deleted": sms_deleted,
        "deleted_calls": deleted,
        "deleted_messages": sms_deleted,
    })))
}
