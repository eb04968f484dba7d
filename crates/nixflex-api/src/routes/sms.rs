//! SMS (docs/api.md#sms, docs/sms.md): send one text, the message log, one message.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use nixflex_core::call::Direction;
use nixflex_core::error::ErrorCode;
use nixflex_core::ids::{AgentId, E164};
use nixflex_core::phone;
use nixflex_core::sms::{MAX_REPLY_CONTEXT_CHARS, MAX_SMS_CHARS, SmsMessage, SmsSource, SmsStatus};
use nixflex_engine::sms::{Outgoing, SendError};
use nixflex_store::{Page, SmsFilter};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Checked, QueryPairs};
use crate::openapi::ErrorEnvelope;
use crate::state::AppState;

/// `POST /v1/sms`: send one SMS.
///
/// The struct is the schema and the type check; the handler reads the checked fields, because
/// the legacy aliases (`to_number`, `body`, `context_prompt`) fill the same values.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct SmsInput {
    /// The agent whose prompt answers replies (default: the agent of `from_number`).
    #[schema(value_type = String, pattern = "^agent_[0-9a-f]{16}$")]
    agent_id: Option<String>,
    /// E.164 recipient.
    #[schema(value_type = String, pattern = r"^\+[1-9][0-9]{6,14}$")]
    to: Option<String>,
    /// The text (hard cap 1600: `message_too_long`; 600 recommended).
    #[schema(value_type = String, min_length = 1, max_length = 1600)]
    message: Option<String>,
    /// Your number to send from (default: the agent's first SMS-capable number).
    #[schema(value_type = String, required = false, pattern = r"^\+[1-9][0-9]{6,14}$")]
    from_number: Option<String>,
    /// `{"reply_context": "…"}` (≤ 2,000 characters) used when the recipient replies within 24 h.
    #[schema(value_type = Object, required = false)]
    context: Option<Map<String, Value>>,
    #[schema(ignore)]
    to_number: Option<Value>,
    #[schema(ignore)]
    body: Option<Value>,
    #[schema(ignore)]
    context_prompt: Option<Value>,
    /// Echoed on the message (a JSON object).
    #[schema(value_type = Object, required = false)]
    metadata: Option<Value>,
}

/// A text as the API returns it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SmsObject {
    /// `sms_` + 24 hex.
    message_id: String,
    /// Twilio's `SM…` SID (`null` until Twilio accepted it).
    twilio_sid: Option<String>,
    /// The agent answering the thread.
    agent_id: Option<String>,
    /// `inbound` (the customer texted) or `outbound`.
    direction: Direction,
    /// pending, queued, sending, sent, delivered, undelivered, failed (outbound); received
    /// (inbound).
    status: SmsStatus,
    /// Sender.
    from: String,
    /// Recipient.
    to: String,
    /// Legacy name of `from`.
    from_number: String,
    /// Legacy name of `to`.
    to_number: String,
    /// The text.
    message: String,
    /// Segments the carrier bills (160 GSM-7 / 70 UCS-2 characters alone, 153 / 67 each when
    /// split).
    segments: i64,
    /// Why it was written: api, reply, help, post_call, in_call, inbound.
    source: SmsSource,
    /// Twilio's error code when it failed (e.g. 30007 filtered, 21610 unsubscribed).
    error_code: Option<i64>,
    /// Twilio's error text when it failed.
    error_message: Option<String>,
    /// Echoed from the send; `{}` when none was given.
    #[schema(value_type = Object)]
    metadata: Value,
    /// Created (UTC).
    created_at: DateTime<Utc>,
    /// Last status change.
    updated_at: DateTime<Utc>,
}

impl From<SmsMessage> for SmsObject {
    fn from(m: SmsMessage) -> Self {
        let from = m.from_number().to_owned();
        let to = m.to_number().to_owned();
        Self {
            message_id: m.message_id,
            twilio_sid: m.twilio_sid,
            agent_id: m.agent_id.map(Into::into),
            direction: m.direction,
            status: m.status,
            from_number: from.clone(),
            to_number: to.clone(),
            from,
            to,
            message: m.body,
            segments: m.segments,
            source: m.source,
            error_code: m.error_code,
            error_message: m.error_message,
            metadata: m.metadata.unwrap_or_else(|| Value::Object(Map::new())),
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// A page of messages.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SmsList {
    /// Messages, newest first.
    messages: Vec<SmsObject>,
    /// Total matching.
    count: i64,
    /// Page size.
    limit: i64,
    /// Offset.
    offset: i64,
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(send_sms, list_sms)).routes(routes!(get_sms))
}

fn text_field<'a>(fields: &'a Map<String, Value>, names: &[&str]) -> ApiResult<Option<&'a str>> {
    for name in names {
        match fields.get(*name) {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) => return Ok(Some(text.as_str())),
            Some(_) => {
                return Err(ApiError::invalid(format!("`{name}` must be a string."))
                    .detail("field", (*name).to_owned()));
            }
        }
    }
    Ok(None)
}

fn e164(field: &str, raw: &str) -> ApiResult<String> {
    phone::parse_e164(raw).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidPhoneFormat,
            format!("`{field}` must be an E.164 number like +14155552671, not `{raw}`."),
        )
        .detail("field", field.to_owned())
    })
}

fn missing(field: &str) -> ApiError {
    ApiError::new(ErrorCode::MissingField, format!("`{field}` is required."))
        .detail("field", field.to_owned())
}

fn send_error(error: SendError) -> ApiError {
    match error {
        SendError::Unsubscribed => ApiError::new(
            ErrorCode::RecipientUnsubscribed,
            "The recipient opted out of texts from this account (they texted STOP). They can opt back in by texting START.",
        ),
        SendError::NotSupportedInRegion(code) => ApiError::new(
            ErrorCode::SmsNotSupportedInRegion,
            "Twilio does not allow texts to this destination from this number (for US numbers: register it for A2P 10DLC).",
        )
        .detail("twilio_error", json!({"code": code})),
        SendError::Provider { error, message_id } => {
            crate::routes::numbers::twilio_error(error).detail("message_id", message_id)
        }
        SendError::Credentials => ApiError::internal(anyhow::anyhow!(
            "the number's Twilio auth token cannot be unsealed"
        )),
        SendError::Store(error) => ApiError::from(error),
    }
}

/// Send one SMS through your number's Twilio account.
///
/// The recipient must not have opted out (STOP) of this account's texts. The message is logged
/// (see `GET /v1/sms`) and its status follows Twilio's status callbacks. Legacy bodies
/// (`to_number`, `body`, `context_prompt`) are accepted. Honours `Idempotency-Key`.
#[utoipa::path(
    post, path = "/v1/sms", tag = "sms",
    request_body(content = SmsInput, description = "`to`, `message` and `agent_id` or `from_number`", content_type = "application/json"),
    responses(
        (status = 201, description = "Handed to Twilio", body = SmsObject),
        (status = 400, description = "`missing_field`, `invalid_phone_format`, `message_too_long`, `recipient_unsubscribed`, `sms_not_supported_in_region`, `agent_no_phone`, `invalid_request`, `unknown_field`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`, `twilio_auth_failed`, `twilio_invalid_credentials`", body = ErrorEnvelope),
        (status = 403, description = "`from_number_not_owned`, `agent_not_owned`", body = ErrorEnvelope),
        (status = 404, description = "`agent_not_found`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
        (status = 502, description = "`provider_error` with `details.twilio_error` and `details.message_id`", body = ErrorEnvelope),
    )
)]
async fn send_sms(
    State(state): State<AppState>,
    caller: Caller,
    Checked { fields, .. }: Checked<SmsInput>,
) -> ApiResult<(StatusCode, Json<SmsObject>)> {
    let account_id = &caller.account.account_id;
    let to = text_field(&fields, &["to", "to_number"])?.ok_or_else(|| missing("to"))?;
    let to = e164("to", to.trim())?;
    let body = text_field(&fields, &["message", "body"])?.ok_or_else(|| missing("message"))?;
    if body.trim().is_empty() {
        return Err(missing("message"));
    }
    let length = body.chars().count();
    if length > MAX_SMS_CHARS {
        return Err(ApiError::new(
            ErrorCode::MessageTooLong,
            format!("`message` has {length} characters; the limit is {MAX_SMS_CHARS} (600 or fewer is recommended)."),
        )
        .detail("field", "message")
        .detail("length", length));
    }
    let reply_context = match fields.get("context") {
        None | Some(Value::Null) => text_field(&fields, &["context_prompt"])?.map(str::to_owned),
        Some(Value::Object(context)) => match context.get("reply_context") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(_) => {
                return Err(ApiError::invalid("`context.reply_context` must be a string.")
                    .detail("field", "context.reply_context"));
            }
        },
        Some(_) => {
            return Err(
                ApiError::invalid("`context` must be an object.").detail("field", "context")
            );
        }
    };
    if reply_context.as_ref().is_some_and(|c| c.chars().count() > MAX_REPLY_CONTEXT_CHARS) {
        return Err(ApiError::invalid(format!(
            "`context.reply_context` may have at most {MAX_REPLY_CONTEXT_CHARS} characters."
        ))
        .detail("field", "context.reply_context"));
    }
    let metadata = match fields.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(Value::Object(map.clone())),
        Some(_) => {
            return Err(
                ApiError::invalid("`metadata` must be an object.").detail("field", "metadata")
            );
        }
    };
    let agent_id = text_field(&fields, &["agent_id"])?.map(str::trim).filter(|a| !a.is_empty());
    if let Some(agent_id) = agent_id {
        crate::routes::numbers::check_agent(&state, &caller, agent_id).await?;
    }
    let from = match text_field(&fields, &["from_number"])? {
        Some(raw) => {
            let from = e164("from_number", raw.trim())?;
            match state.store().get_number(account_id, &E164::from(from.as_str())).await? {
                Some((number, _)) => number,
                None => {
                    return Err(ApiError::new(
                        ErrorCode::FromNumberNotOwned,
                        format!("{from} is not a number imported to this account."),
                    )
                    .detail("field", "from_number"));
                }
            }
        }
        None => {
            let Some(agent_id) = agent_id else {
                return Err(missing("agent_id"));
            };
            let (numbers, _) = state
                .store()
                .list_numbers(
                    account_id,
                    Some(&AgentId::from(agent_id)),
                    Page { limit: 100, offset: 0 },
                )
                .await?;
            // Newest first: the agent's first number is the oldest.
            numbers.into_iter().next_back().ok_or_else(|| {
                ApiError::new(
                    ErrorCode::AgentNoPhone,
                    format!("Agent `{agent_id}` has no number to text from; import one or pass `from_number`."),
                )
            })?
        }
    };
    let agent_id = agent_id.map(AgentId::from).or_else(|| from.agent_id.clone());
    let Some(sms) = state.engine().sms() else {
        return Err(ApiError::not_implemented("Sending SMS"));
    };
    let sent = sms
        .send(Outgoing {
            from,
            agent_id,
            to,
            body: body.to_owned(),
            reply_context,
            metadata,
            source: SmsSource::Api,
            send_key: None,
        })
        .await
        .map_err(send_error)?;
    Ok((StatusCode::CREATED, Json(SmsObject::from(sent))))
}

fn filter_from(query: &QueryPairs) -> ApiResult<SmsFilter> {
    let number = |names: &[&str]| -> ApiResult<Option<String>> {
        for name in names {
            if let Some(raw) = query.get(name).filter(|v| !v.is_empty()) {
                let raw = phone::from_path_segment(raw);
                return e164(name, &raw).map(Some);
            }
        }
        Ok(None)
    };
    let direction = match query.get("direction").filter(|v| !v.is_empty()) {
        None => None,
        Some(raw) => Some(Direction::parse(raw).ok_or_else(|| {
            ApiError::invalid(format!("`direction` must be inbound or outbound, not `{raw}`."))
                .detail("field", "direction")
        })?),
    };
    let time = |name: &str| {
        query
            .get(name)
            .filter(|v| !v.is_empty())
            .map(|v| crate::routes::calls::parse_time(name, v))
            .transpose()
    };
    Ok(SmsFilter {
        agent_id: query.get("agent_id").filter(|v| !v.is_empty()).map(str::to_owned),
        direction,
        to: number(&["to", "to_number"])?,
        from_number: number(&["from_number", "from"])?,
        customer_number: number(&["customer_number"])?,
        since: time("since")?,
        until: time("until")?,
    })
}

/// The message log: texts sent and received, newest first.
#[utoipa::path(
    get, path = "/v1/sms", tag = "sms",
    params(("limit" = Option<i64>, Query, description = "Page size, default 25, max 100"),
           ("offset" = Option<i64>, Query, description = "Rows to skip"),
           ("to" = Option<String>, Query, description = "E.164 recipient"),
           ("to_number" = Option<String>, Query, deprecated, description = "Alias of `to`"),
           ("from_number" = Option<String>, Query, description = "E.164 sender"),
           ("from" = Option<String>, Query, deprecated, description = "Alias of `from_number`"),
           ("customer_number" = Option<String>, Query, description = "One customer's thread: texts to or from this number"),
           ("agent_id" = Option<String>, Query, description = "The thread's agent"),
           ("direction" = Option<String>, Query, description = "inbound or outbound"),
           ("since" = Option<String>, Query, description = "Created at or after (ISO-8601)"),
           ("until" = Option<String>, Query, description = "Created before (ISO-8601)")),
    responses(
        (status = 200, description = "A page of messages", body = SmsList),
        (status = 400, description = "`invalid_request`, `invalid_phone_format`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn list_sms(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
) -> ApiResult<Json<SmsList>> {
    let page = query.page()?;
    let filter = filter_from(&query)?;
    let (messages, count) =
        state.store().list_sms(&caller.account.account_id, &filter, page).await?;
    Ok(Json(SmsList {
        messages: messages.into_iter().map(SmsObject::from).collect(),
        count,
        limit: page.limit,
        offset: page.offset,
    }))
}

/// One message, inbound or outbound, with its current status.
#[utoipa::path(
    get, path = "/v1/sms/{message_id}", tag = "sms",
    params(("message_id" = String, Path, description = "`sms_…`")),
    responses(
        (status = 200, description = "The message", body = SmsObject),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`message_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn get_sms(
    State(state): State<AppState>,
    caller: Caller,
    Path(message_id): Path<String>,
) -> ApiResult<Json<SmsObject>> {
    let message = state.store().get_sms(&caller.account.account_id, &message_id).await?;
    message.map(|m| Json(SmsObject::from(m))).ok_or_else(|| {
        ApiError::new(
            ErrorCode::MessageNotFound,
            format!("No message `{message_id}` in this account."),
        )
    })
}
