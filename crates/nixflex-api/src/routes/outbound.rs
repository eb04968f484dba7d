//! `POST /v1/calls/outbound` (docs/api.md#outbound-calls; docs/decisions.md#outbound-requests,
//! #capacity, #outbound-purpose): place one outbound call. The handler checks the request's
//! shape; the engine's call service checks the agent, picks the caller ID and queues the call
//! durably; dialling happens in the background (docs/engine.md#outbound-calls).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use nixflex_core::error::ErrorCode;
use nixflex_core::ids::{AgentId, E164};
use nixflex_core::phone;
use nixflex_engine::{CallPurpose, OutboundRefused, OutboundRequest};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Checked};
use crate::openapi::ErrorEnvelope;
use crate::state::AppState;

/// Longest call purpose, in characters.
const MAX_PROMPT_CHARS: usize = 16_000;
/// Most `dynamic_vars` entries.
const MAX_VARS: usize = 100;
/// Longest `dynamic_vars` value, in characters.
const MAX_VAR_CHARS: usize = 2_000;
/// Largest `metadata`, serialised, in bytes.
const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Longest `campaign_id`.
const MAX_CAMPAIGN_ID_CHARS: usize = 100;
/// Longest `voicemail_message`, in characters.
const MAX_VOICEMAIL_CHARS: usize = 2_000;

/// `POST /v1/calls/outbound`: place one outbound call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutboundCallInput {
    /// Your agent.
    #[schema(value_type = String, pattern = "^agent_[0-9a-f]{16}$")]
    agent_id: Option<String>,
    /// E.164 number to call.
    #[schema(value_type = String, pattern = r"^\+[1-9][0-9]{6,14}$")]
    to_number: Option<String>,
    /// The purpose of this call: what the agent is calling about. Used for this call only;
    /// never returned, erased once the call's follow-up has run.
    #[schema(value_type = String, min_length = 1, max_length = 16000)]
    prompt: Option<String>,
    /// Substituted into the prompt as `{key}` (at most 100 entries).
    #[schema(required = false)]
    dynamic_vars: Option<BTreeMap<String, String>>,
    /// The official CLI's name for `dynamic_vars` (give one of the two).
    #[schema(required = false)]
    variables: Option<BTreeMap<String, String>>,
    /// One of the agent's outbound-enabled numbers (default: the oldest).
    #[schema(value_type = String, required = false, pattern = r"^\+[1-9][0-9]{6,14}$")]
    from_number: Option<String>,
    /// Tags the call to a batch campaign.
    #[schema(value_type = String, required = false, max_length = 100)]
    campaign_id: Option<String>,
    /// Echoed on the call record and its webhooks (a JSON object, at most 16 KiB).
    #[schema(value_type = Object, required = false)]
    metadata: Option<Map<String, Value>>,
    /// Override of the voicemail message.
    #[schema(value_type = String, required = false, max_length = 2000)]
    voicemail_message: Option<String>,
    /// What to do on voicemail.
    #[schema(value_type = String, required = false, pattern = "^(hangup|leave_message|ignore)$")]
    voicemail_action: Option<String>,
}

/// The queued call.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OutboundCallCreated {
    /// `call_` + 24 hex: follow the call with `GET /v1/calls/{call_id}`.
    call_id: String,
    /// Always `queued`: dialling happens in the background.
    #[schema(value_type = String, example = "queued")]
    status: &'static str,
    /// The number called.
    to: String,
    /// The caller ID chosen.
    from: String,
    /// `null` until the carrier has the call.
    #[schema(value_type = Option<String>)]
    twilio_call_sid: Option<String>,
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(place_outbound_call))
}

fn missing(field: &str) -> ApiError {
    ApiError::new(ErrorCode::MissingField, format!("`{field}` is required.")).detail("field", field)
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(message).detail("field", field)
}

fn e164(field: &str, raw: &str) -> ApiResult<E164> {
    phone::parse_e164(raw).map(E164::from).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidPhoneFormat,
            format!("`{field}` must be an E.164 number such as +14155550123."),
        )
        .detail("field", field)
    })
}

/// Place one outbound call
///
/// Queues the call and answers at once; the carrier dials in the background. Over the account's
/// concurrent-call cap the call waits in a durable queue (`call_status: queued`) and is dialled,
/// oldest first, when a slot frees; a call queued longer than the server's limit (default 1 h)
/// ends `failed`. Send an `Idempotency-Key` to make a retried request safe: it returns the same
/// call and dials once.
#[utoipa::path(
    post, path = "/v1/calls/outbound", tag = "calls",
    request_body(content = OutboundCallInput, description = "The call to place", content_type = "application/json"),
    responses(
        (status = 201, description = "Queued", body = OutboundCallCreated),
        (status = 400, description = "`missing_field`, `invalid_phone_format`, `agent_inactive`, `agent_no_phone`, `invalid_request`, `invalid_json`, `unknown_field`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 403, description = "`agent_not_owned`, `from_number_not_owned`", body = ErrorEnvelope),
        (status = 404, description = "`agent_not_found`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
        (status = 503, description = "`public_url_not_configured`", body = ErrorEnvelope),
    )
)]
async fn place_outbound_call(
    State(state): State<AppState>,
    caller: Caller,
    Checked { input, .. }: Checked<OutboundCallInput>,
) -> ApiResult<(StatusCode, Json<OutboundCallCreated>)> {
    let agent_id =
        input.agent_id.filter(|a| !a.trim().is_empty()).ok_or_else(|| missing("agent_id"))?;
    let to =
        input.to_number.filter(|t| !t.trim().is_empty()).ok_or_else(|| missing("to_number"))?;
    let to = e164("to_number", to.trim())?;
    let prompt = input.prompt.filter(|p| !p.trim().is_empty()).ok_or_else(|| missing("prompt"))?;
    if prompt.chars().count() > MAX_PROMPT_CHARS {
        return Err(invalid(
            "prompt",
            format!("`prompt` is longer than {MAX_PROMPT_CHARS} characters."),
        ));
    }
    let dynamic_vars = match (input.dynamic_vars, input.variables) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "variables",
                "`variables` is another name for `dynamic_vars`; give one of them.",
            ));
        }
        (Some(vars), None) | (None, Some(vars)) => vars,
        (None, None) => BTreeMap::new(),
    };
    if dynamic_vars.len() > MAX_VARS {
        return Err(invalid(
            "dynamic_vars",
            format!("`dynamic_vars` has more than {MAX_VARS} entries."),
        ));
    }
    if let Some((key, _)) = dynamic_vars
        .iter()
        .find(|(k, v)| k.is_empty() || k.chars().count() > 64 || v.chars().count() > MAX_VAR_CHARS)
    {
        return Err(invalid(
            "dynamic_vars",
            format!(
                "`dynamic_vars` keys must be 1–64 characters and values at most {MAX_VAR_CHARS}; `{}` is not.",
                key.chars().take(64).collect::<String>()
            ),
        ));
    }
    let from = match input.from_number.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
        Some(raw) => Some(e164("from_number", raw)?),
        None => None,
    };
    let campaign_id = input.campaign_id.filter(|c| !c.is_empty());
    if campaign_id.as_ref().is_some_and(|c| c.chars().count() > MAX_CAMPAIGN_ID_CHARS) {
        return Err(invalid(
            "campaign_id",
            format!("`campaign_id` is longer than {MAX_CAMPAIGN_ID_CHARS} characters."),
        ));
    }
    let metadata = input.metadata.map(Value::Object);
    if metadata.as_ref().is_some_and(|m| m.to_string().len() > MAX_METADATA_BYTES) {
        return Err(invalid("metadata", "`metadata` is larger than 16 KiB."));
    }
    if let Some(action) = &input.voicemail_action
        && !matches!(action.as_str(), "hangup" | "leave_message" | "ignore")
    {
        return Err(invalid(
            "voicemail_action",
            "`voicemail_action` must be `hangup`, `leave_message` or `ignore`.",
        ));
    }
    let voicemail_message = input.voicemail_message.filter(|m| !m.trim().is_empty());
    if voicemail_message.as_ref().is_some_and(|m| m.chars().count() > MAX_VOICEMAIL_CHARS) {
        return Err(invalid(
            "voicemail_message",
            format!("`voicemail_message` is longer than {MAX_VOICEMAIL_CHARS} characters."),
        ));
    }
    crate::routes::numbers::check_agent(&state, &caller, &agent_id).await?;

    let request = OutboundRequest {
        account_id: caller.account.account_id.clone(),
        agent_id: AgentId::from(agent_id.as_str()),
        to,
        from,
        purpose: CallPurpose { prompt, dynamic_vars },
        campaign_id,
        metadata,
        voicemail_action: input.voicemail_action,
        voicemail_message,
    };
    let call = state.engine().queue_outbound(request).await.map_err(|refused| match refused {
        OutboundRefused::AgentNotFound => ApiError::new(
            ErrorCode::AgentNotFound,
            format!("No agent `{agent_id}` in this account."),
        ),
        OutboundRefused::AgentInactive => ApiError::new(
            ErrorCode::AgentInactive,
            format!("Agent `{agent_id}` is inactive (`is_active: false`)."),
        ),
        OutboundRefused::NoOutboundNumber => ApiError::new(
            ErrorCode::AgentNoPhone,
            format!("Agent `{agent_id}` has no outbound-enabled number to call from."),
        ),
        OutboundRefused::FromNumberNotOwned => ApiError::new(
            ErrorCode::FromNumberNotOwned,
            "`from_number` is not a number imported to this account.",
        )
        .detail("field", "from_number"),
        OutboundRefused::FromNumberNotUsable => invalid(
            "from_number",
            format!("`from_number` is not one of agent `{agent_id}`'s outbound-enabled numbers."),
        ),
        OutboundRefused::NoPublicUrl => ApiError::new(
            ErrorCode::PublicUrlNotConfigured,
            "The server has no public URL configured, so the carrier could not reach it for \
             this call; set `public_url`.",
        ),
        OutboundRefused::Store(error) => ApiError::from(error),
    })?;
    Ok((
        StatusCode::CREATED,
        Json(OutboundCallCreated {
            call_id: call.call_id.into(),
            status: "queued",
            to: call.to_number,
            from: call.from_number,
            twilio_call_sid: None,
        }),
    ))
}
