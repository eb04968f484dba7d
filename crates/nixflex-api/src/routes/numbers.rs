//! Phone numbers on the customer's own Twilio account (docs/api.md#phone-numbers,
//! docs/decisions.md#webhook-targets, #deletes, #number-switches, #carrier-credential-errors, #number-deletion): import, list, get, update, delete.
//!
//! Import never leaves anything half-done: the number is first reserved in the database
//! (invisible, and blocking concurrent imports), then Twilio is pointed at us, then the
//! reservation becomes the number. A Twilio failure releases the reservation; a database failure
//! after Twilio was changed puts Twilio's configuration back.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use nixflex_core::agent::RecordingSource;
use nixflex_core::error::ErrorCode;
use nixflex_core::ids::{AgentId, E164};
use nixflex_core::number::{
    NUMBER_FLAGS, NUMBER_SETTING_FIELDS, NumberFlags, NumberSettings, PhoneNumber,
};
use nixflex_core::phone;
use nixflex_core::validate::{ValidationError, as_str, normalize_keys};
use nixflex_providers::twilio::{
    IncomingPhoneNumber, IncomingPhoneNumberUpdate, TwilioCredentials, TwilioError,
};
use nixflex_store::StoreError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Checked, QueryPairs};
use crate::openapi::ErrorEnvelope;
use crate::state::AppState;

/// How long an unfinished import keeps its reservation before another import may take over.
const RESERVATION_TTL_MINUTES: i64 = 5;

/// The body of `POST /v1/phone-numbers`. camelCase spellings are accepted, and so are
/// `twilio_account_sid`/`twilio_auth_token` (aliases of `twilio_sid`/`twilio_token`) and the
/// SDK's `telnyx_api_key`/`telnyx_connection_id` (Telnyx answers 501 for now).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Read by serde (type checking) and utoipa; the handler validates the fields.
pub(crate) struct NumberImportInput {
    /// The number, E.164; it must exist in the Twilio account.
    #[schema(value_type = String, required = true, pattern = r"^\+[1-9][0-9]{6,14}$")]
    phone_number: Option<String>,
    /// Your agent that answers it.
    #[schema(value_type = String, required = true, min_length = 1)]
    agent_id: Option<String>,
    /// Twilio Account SID.
    #[schema(value_type = String, required = true, pattern = "^AC[0-9a-f]{32}$")]
    twilio_sid: Option<String>,
    /// Twilio auth token (stored encrypted, never returned).
    #[schema(value_type = String, required = true, min_length = 1, max_length = 256, pattern = "^[!-~]+$")]
    twilio_token: Option<String>,
    /// Business profile layered on the agent prompt (over 8,000: `custom_prompt_too_long`).
    #[schema(max_length = 8000)]
    custom_prompt: Option<String>,
    /// Voice override (a `voice_id` of `GET /v1/voices`); `null` uses the agent's.
    voice_id: Option<String>,
    /// Instructions for SMS replies; replaces `custom_prompt` for SMS.
    #[schema(max_length = 20000)]
    sms_prompt: Option<String>,
    /// Instructions for web calls.
    #[schema(max_length = 20000)]
    web_prompt: Option<String>,
    /// Leave `voicemail_message` on voicemail; `null` hangs up silently.
    voicemail_leave_enabled: Option<bool>,
    /// Spoken verbatim on voicemail.
    #[schema(max_length = 2000)]
    voicemail_message: Option<String>,
    /// `null` inherits the agent's; clamped to 0.5–1.5.
    speaking_rate: Option<f64>,
    /// `null` inherits.
    dtmf_enabled: Option<bool>,
    /// `null` inherits; `false` disables recording on this number.
    record_call: Option<bool>,
    /// `null` inherits.
    #[schema(value_type = Option<RecordingSource>)]
    recording_source: Option<String>,
    /// Answer inbound calls.
    #[schema(value_type = bool, required = false)]
    inbound_enabled: Option<bool>,
    /// Usable for outbound calls.
    #[schema(value_type = bool, required = false)]
    outbound_enabled: Option<bool>,
    /// Auto-reply to inbound SMS.
    #[schema(value_type = bool, required = false)]
    sms_reply_enabled: Option<bool>,
    #[schema(ignore)]
    twilio_account_sid: Option<Value>,
    #[schema(ignore)]
    twilio_auth_token: Option<Value>,
    #[schema(ignore)]
    telnyx_api_key: Option<Value>,
    #[schema(ignore)]
    telnyx_connection_id: Option<Value>,
}

/// The body of `PATCH /v1/phone-numbers/{phone_number}`: any of the settings (`null` clears one,
/// falling back to the agent's), `agent_id` to re-attach, the three switches. The read-only
/// fields of a fetched number are accepted and ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Read by serde (type checking) and utoipa; the handler validates the fields.
pub(crate) struct NumberUpdateInput {
    /// Re-attach to another of your agents (`null` detaches).
    #[schema(min_length = 1)]
    agent_id: Option<String>,
    /// Business profile layered on the agent prompt (over 8,000: `custom_prompt_too_long`).
    #[schema(max_length = 8000)]
    custom_prompt: Option<String>,
    /// Voice override (a `voice_id` of `GET /v1/voices`); `null` uses the agent's.
    voice_id: Option<String>,
    /// Instructions for SMS replies; replaces `custom_prompt` for SMS.
    #[schema(max_length = 20000)]
    sms_prompt: Option<String>,
    /// Instructions for web calls.
    #[schema(max_length = 20000)]
    web_prompt: Option<String>,
    /// Leave `voicemail_message` on voicemail; `null` hangs up silently.
    voicemail_leave_enabled: Option<bool>,
    /// Spoken verbatim on voicemail.
    #[schema(max_length = 2000)]
    voicemail_message: Option<String>,
    /// `null` inherits the agent's; clamped to 0.5–1.5.
    speaking_rate: Option<f64>,
    /// `null` inherits.
    dtmf_enabled: Option<bool>,
    /// `null` inherits; `false` disables recording on this number.
    record_call: Option<bool>,
    /// `null` inherits.
    #[schema(value_type = Option<RecordingSource>)]
    recording_source: Option<String>,
    /// Answer inbound calls.
    #[schema(value_type = bool, required = false)]
    inbound_enabled: Option<bool>,
    /// Usable for outbound calls.
    #[schema(value_type = bool, required = false)]
    outbound_enabled: Option<bool>,
    /// Auto-reply to inbound SMS.
    #[schema(value_type = bool, required = false)]
    sms_reply_enabled: Option<bool>,
    #[schema(ignore)]
    phone_number: Option<Value>,
    #[schema(ignore)]
    provider: Option<Value>,
    #[schema(ignore)]
    twilio_account_sid: Option<Value>,
    #[schema(ignore)]
    twilio_number_sid: Option<Value>,
    #[schema(ignore)]
    telnyx_number_id: Option<Value>,
    #[schema(ignore)]
    created_at: Option<Value>,
    #[schema(ignore)]
    updated_at: Option<Value>,
}

// The schema attributes above need literals; this keeps them equal to the limits enforced.
const _: () = assert!(
    nixflex_core::number::MAX_CUSTOM_PROMPT == 8000
        && nixflex_core::number::MAX_CHANNEL_PROMPT == 20_000
);

/// A phone number as the API returns it (never the auth token).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NumberObject {
    /// E.164.
    pub(crate) phone_number: String,
    /// The agent answering it; `null` when its agent was deleted.
    pub(crate) agent_id: Option<String>,
    /// `twilio`.
    pub(crate) provider: String,
    /// The Twilio Account SID it was imported with.
    pub(crate) twilio_account_sid: String,
    /// `PN…`.
    pub(crate) twilio_number_sid: String,
    /// Always `null` (Telnyx is not supported yet).
    pub(crate) telnyx_number_id: Option<String>,
    /// Answer inbound calls.
    pub(crate) inbound_enabled: bool,
    /// Usable for outbound calls.
    pub(crate) outbound_enabled: bool,
    /// Auto-reply to inbound SMS.
    pub(crate) sms_reply_enabled: bool,
    /// Per-number settings.
    #[serde(flatten)]
    pub(crate) settings: NumberSettings,
    /// Import time.
    pub(crate) created_at: DateTime<Utc>,
    /// Last change.
    pub(crate) updated_at: DateTime<Utc>,
}

impl From<PhoneNumber> for NumberObject {
    fn from(n: PhoneNumber) -> Self {
        Self {
            phone_number: n.phone_number.into(),
            agent_id: n.agent_id.map(Into::into),
            provider: n.provider,
            twilio_account_sid: n.twilio_account_sid,
            twilio_number_sid: n.twilio_number_sid,
            telnyx_number_id: None,
            inbound_enabled: n.inbound_enabled,
            outbound_enabled: n.outbound_enabled,
            sms_reply_enabled: n.sms_reply_enabled,
            settings: n.settings,
            created_at: n.created_at,
            updated_at: n.updated_at,
        }
    }
}

/// `{"phone_number": {...}}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NumberEnvelope {
    /// The number.
    pub(crate) phone_number: NumberObject,
}

/// A page of numbers.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NumberList {
    /// Numbers, newest first.
    pub(crate) phone_numbers: Vec<NumberObject>,
    /// Total matching.
    pub(crate) count: i64,
    /// Page size.
    pub(crate) limit: i64,
    /// Offset.
    pub(crate) offset: i64,
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(import_number, list_numbers)).routes(routes!(
        get_number,
        update_number,
        delete_number
    ))
}

/// Reads a number from a path segment (`%2B` decoded by the router; a leading space or raw `+`
/// accepted).
pub(crate) fn path_number(raw: &str) -> ApiResult<String> {
    let candidate = phone::from_path_segment(raw);
    phone::parse_e164(&candidate).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidPhoneFormat,
            format!("`{raw}` is not an E.164 number. In a path, send the + as %2B (e.g. %2B447446466847)."),
        )
    })
}

/// An active number of the caller's account, or 404 `number_not_found`.
pub(crate) async fn owned_number(
    state: &AppState,
    caller: &Caller,
    phone_number: &str,
) -> ApiResult<(PhoneNumber, i64)> {
    state
        .store()
        .get_number(&caller.account.account_id, &E164::from(phone_number))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NumberNotFound,
                format!("No number {phone_number} in this account."),
            )
        })
}

/// 404 `agent_not_found`, or 403 `agent_not_owned` when it exists in another account.
pub(crate) async fn check_agent(
    state: &AppState,
    caller: &Caller,
    agent_id: &str,
) -> ApiResult<()> {
    if state
        .store()
        .get_agent(&caller.account.account_id, &AgentId::from(agent_id))
        .await?
        .is_some()
    {
        return Ok(());
    }
    if state.store().agent_owner(&AgentId::from(agent_id)).await?.is_some() {
        return Err(ApiError::new(
            ErrorCode::AgentNotOwned,
            format!("Agent `{agent_id}` belongs to another account."),
        ));
    }
    Err(ApiError::new(ErrorCode::AgentNotFound, format!("No agent `{agent_id}` in this account.")))
}

/// Maps a Twilio failure to the API's codes (docs/api.md#importing-a-number, docs/decisions.md#carrier-credential-errors).
pub(crate) fn twilio_error(error: TwilioError) -> ApiError {
    match error {
        TwilioError::Authentication { code: Some(20003), .. } => ApiError::new(
            ErrorCode::TwilioAuthFailed,
            "Twilio rejected the Account SID and auth token (Twilio error 20003). Check both in the Twilio console.",
        )
        .detail("twilio_error", json!({"code": 20003})),
        TwilioError::Authentication { code, status, .. } => ApiError::new(
            ErrorCode::TwilioInvalidCredentials,
            "Twilio rejected the Account SID and auth token.",
        )
        .detail("twilio_error", json!({"code": code, "status": status})),
        TwilioError::InvalidRequest(what) | TwilioError::Config(what) => {
            ApiError::internal(anyhow::anyhow!("twilio request could not be built: {what}"))
        }
        other => {
            let details = match &other {
                TwilioError::Upstream { status, code, message, more_info } => {
                    json!({"status": status, "code": code, "message": message, "more_info": more_info})
                }
                TwilioError::NotFound { code, message } => json!({"status": 404, "code": code, "message": message}),
                TwilioError::RateLimited { code, attempts, .. } => {
                    json!({"status": 429, "code": code, "message": format!("rate limited after {attempts} attempts")})
                }
                TwilioError::Timeout => json!({"message": "Twilio did not answer in time"}),
                _ => json!({"message": "Twilio could not be reached"}),
            };
            ApiError::new(ErrorCode::ProviderError, "Twilio failed to process the request. Please retry.")
                .detail("twilio_error", details)
        }
    }
}

fn required_text<'a>(
    body: &'a Map<String, Value>,
    field: &str,
) -> Result<&'a str, ValidationError> {
    match body.get(field) {
        None | Some(Value::Null) => Err(ValidationError::missing(field)),
        Some(value) => {
            let text = as_str(field, value)?.trim();
            if text.is_empty() { Err(ValidationError::missing(field)) } else { Ok(text) }
        }
    }
}

fn is_account_sid(sid: &str) -> bool {
    sid.len() == 34
        && sid.starts_with("AC")
        && sid[2..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The carrier endpoints Twilio is pointed at.
pub(crate) struct CarrierUrls {
    pub(crate) voice: String,
    pub(crate) sms: String,
    pub(crate) status: String,
}

pub(crate) fn carrier_urls(state: &AppState) -> ApiResult<CarrierUrls> {
    let base = state.config().public_url.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::PublicUrlNotConfigured,
            "This server has no public URL (NIXFLEX_PUBLIC_URL), so Twilio could not reach it. Ask its operator to set one.",
        )
    })?;
    Ok(CarrierUrls {
        voice: format!("{base}/twilio/voice"),
        sms: format!("{base}/twilio/sms"),
        status: format!("{base}/twilio/status"),
    })
}

fn previous_config(number: &IncomingPhoneNumber) -> Value {
    json!({
        "voice_url": number.voice_url, "voice_method": number.voice_method,
        "voice_fallback_url": number.voice_fallback_url, "voice_application_sid": number.voice_application_sid,
        "sms_url": number.sms_url, "sms_method": number.sms_method,
        "sms_application_sid": number.sms_application_sid,
        "status_callback": number.status_callback, "status_callback_method": number.status_callback_method,
        "trunk_sid": number.trunk_sid,
    })
}

fn restore_update(number: &IncomingPhoneNumber) -> IncomingPhoneNumberUpdate {
    let or_empty = |v: &Option<String>| Some(v.clone().unwrap_or_default());
    IncomingPhoneNumberUpdate {
        voice_url: or_empty(&number.voice_url),
        voice_method: number.voice_method.clone(),
        sms_url: or_empty(&number.sms_url),
        sms_method: number.sms_method.clone(),
        status_callback: or_empty(&number.status_callback),
        status_callback_method: number.status_callback_method.clone(),
        voice_application_sid: number.voice_application_sid.clone().filter(|s| !s.is_empty()),
        sms_application_sid: number.sms_application_sid.clone().filter(|s| !s.is_empty()),
        trunk_sid: number.trunk_sid.clone().filter(|s| !s.is_empty()),
        ..IncomingPhoneNumberUpdate::default()
    }
}

fn already_imported(phone_number: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NumberAlreadyImported,
        format!("{phone_number} is already imported. Delete it first to import it again."),
    )
}

/// Import a number from your Twilio account and attach it to an agent.
///
/// Verifies the number exists in that Twilio account, then overwrites its voice, SMS and status
/// webhooks so calls and texts reach this server (other systems stop receiving them). The auth
/// token is stored encrypted. camelCase and `twilio_account_sid`/`twilio_auth_token` aliases are
/// accepted; the per-number settings of PATCH may be given too.
#[utoipa::path(
    post, path = "/v1/phone-numbers", tag = "phone-numbers",
    request_body(content = NumberImportInput, description = "`phone_number`, `agent_id`, `twilio_sid`, `twilio_token` (required); optional `inbound_enabled`, `outbound_enabled`, `sms_reply_enabled` and every setting of PATCH", content_type = "application/json"),
    responses(
        (status = 201, description = "Imported", body = NumberEnvelope),
        (status = 400, description = "`missing_field`, `invalid_phone_format`, `invalid_twilio_sid`, `custom_prompt_too_long`, `invalid_voice_id`, `voicemail_message_required`, `invalid_request`, `invalid_json`, `unknown_field`", body = ErrorEnvelope),
        (status = 401, description = "`twilio_auth_failed`, `twilio_invalid_credentials` (Twilio refused the credentials); `invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 403, description = "`agent_not_owned`", body = ErrorEnvelope),
        (status = 404, description = "`agent_not_found`, `number_not_in_twilio`", body = ErrorEnvelope),
        (status = 409, description = "`number_already_imported`, `idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
        (status = 501, description = "`not_implemented` (Telnyx credentials)", body = ErrorEnvelope),
        (status = 502, description = "`provider_error` with `details.twilio_error`", body = ErrorEnvelope),
        (status = 503, description = "`public_url_not_configured`", body = ErrorEnvelope),
    )
)]
async fn import_number(
    State(state): State<AppState>,
    caller: Caller,
    Checked { fields: body, .. }: Checked<NumberImportInput>,
) -> ApiResult<(StatusCode, Json<NumberEnvelope>)> {
    let mut body = normalize_keys(body);
    for (alias, canonical) in
        [("twilio_account_sid", "twilio_sid"), ("twilio_auth_token", "twilio_token")]
    {
        if let Some(value) = body.remove(alias) {
            body.entry(canonical).or_insert(value);
        }
    }
    if !body.contains_key("twilio_sid")
        && (body.contains_key("telnyx_api_key") || body.contains_key("telnyx_connection_id"))
    {
        return Err(ApiError::not_implemented("Importing Telnyx numbers"));
    }
    let raw_number = required_text(&body, "phone_number")?;
    let agent_id = required_text(&body, "agent_id")?.to_owned();
    let sid = required_text(&body, "twilio_sid")?.to_owned();
    let token = required_text(&body, "twilio_token")?.to_owned();
    let phone_number = phone::parse_e164(raw_number).ok_or_else(|| {
        ValidationError::new(
            ErrorCode::InvalidPhoneFormat,
            "phone_number",
            format!("`{raw_number}` is not an E.164 number like +447446466847"),
        )
    })?;
    if !is_account_sid(&sid) {
        return Err(ValidationError::new(
            ErrorCode::InvalidTwilioSid,
            "twilio_sid",
            "`twilio_sid` must be a Twilio Account SID: AC followed by 32 lowercase hex characters",
        )
        .into());
    }
    if token.len() > 256 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ValidationError::invalid(
            "twilio_token",
            "`twilio_token` is not a Twilio auth token",
        )
        .into());
    }
    let rules = state.config().agent_rules();
    let settings = NumberSettings::default().apply_patch(&body, rules.tts)?;
    let flags = NumberFlags::default().apply(&body)?;
    check_agent(&state, &caller, &agent_id).await?;
    let urls = carrier_urls(&state)?;
    let stale_before = Utc::now() - Duration::minutes(RESERVATION_TTL_MINUTES);
    if state.store().number_taken(&E164::from(phone_number.as_str()), stale_before).await? {
        return Err(already_imported(&phone_number));
    }

    let credentials = TwilioCredentials::new(sid.clone(), token.clone());
    let found = state
        .twilio()
        .find_incoming_phone_number(&credentials, &phone_number)
        .await
        .map_err(twilio_error)?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NumberNotInTwilio,
                format!("{phone_number} is not a number of Twilio account {sid}."),
            )
        })?;

    let now = nixflex_store::now();
    let number = PhoneNumber {
        phone_number: E164::from(phone_number.as_str()),
        account_id: caller.account.account_id.clone(),
        agent_id: Some(AgentId::from(agent_id)),
        provider: "twilio".to_owned(),
        twilio_account_sid: sid,
        twilio_auth_token_sealed: state.secrets().seal(&token),
        twilio_number_sid: found.sid.clone(),
        inbound_enabled: flags.inbound_enabled,
        outbound_enabled: flags.outbound_enabled,
        sms_reply_enabled: flags.sms_reply_enabled,
        settings,
        webhook_url: None,
        webhook2_url: None,
        precall_url: None,
        created_at: now,
        updated_at: now,
    };
    match state.store().reserve_number(&number, &previous_config(&found), stale_before).await {
        Ok(()) => {}
        Err(StoreError::Conflict { .. }) => return Err(already_imported(&phone_number)),
        Err(other) => return Err(other.into()),
    }

    let clear_if_set =
        |v: &Option<String>| v.as_ref().filter(|s| !s.is_empty()).map(|_| String::new());
    let update = IncomingPhoneNumberUpdate {
        voice_url: Some(urls.voice),
        voice_method: Some("POST".to_owned()),
        sms_url: Some(urls.sms),
        sms_method: Some("POST".to_owned()),
        status_callback: Some(urls.status),
        status_callback_method: Some("POST".to_owned()),
        // Application and trunk SIDs override the URLs; remove them so the URLs apply.
        voice_application_sid: clear_if_set(&found.voice_application_sid),
        sms_application_sid: clear_if_set(&found.sms_application_sid),
        trunk_sid: clear_if_set(&found.trunk_sid),
        ..IncomingPhoneNumberUpdate::default()
    };
    if let Err(error) =
        state.twilio().update_incoming_phone_number(&credentials, &found.sid, &update).await
    {
        // A timed-out update may still have been applied: put the old configuration back too.
        if matches!(error, TwilioError::Timeout | TwilioError::Transport(_)) {
            let _ = state
                .twilio()
                .update_incoming_phone_number(&credentials, &found.sid, &restore_update(&found))
                .await;
        }
        release(&state, &phone_number).await;
        return Err(twilio_error(error));
    }
    if let Err(error) = state.store().activate_number(&E164::from(phone_number.as_str())).await {
        if let Err(restore) = state
            .twilio()
            .update_incoming_phone_number(&credentials, &found.sid, &restore_update(&found))
            .await
        {
            tracing::error!(message = "Could not restore a number's Twilio webhooks after a failed import.", error = %restore);
        }
        release(&state, &phone_number).await;
        return Err(error.into());
    }
    tracing::info!(message = "Number imported.", account_id = %number.account_id, number_sid = %number.twilio_number_sid);
    Ok((StatusCode::CREATED, Json(NumberEnvelope { phone_number: number.into() })))
}

async fn release(state: &AppState, phone_number: &str) {
    if let Err(error) = state.store().release_number(&E164::from(phone_number)).await {
        // The reservation expires by itself after RESERVATION_TTL_MINUTES.
        tracing::error!(message = "Could not release a number reservation.", error = %error);
    }
}

/// List the account's numbers, newest first.
#[utoipa::path(
    get, path = "/v1/phone-numbers", tag = "phone-numbers",
    params(("limit" = Option<i64>, Query, description = "Page size, default 25, max 100"),
           ("offset" = Option<i64>, Query, description = "Rows to skip"),
           ("agent_id" = Option<String>, Query, description = "Only this agent's numbers")),
    responses(
        (status = 200, description = "A page of numbers", body = NumberList),
        (status = 400, description = "`invalid_request`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn list_numbers(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
) -> ApiResult<Json<NumberList>> {
    let page = query.page()?;
    let agent_id = query.get("agent_id").filter(|a| !a.is_empty());
    let (numbers, count) = state
        .store()
        .list_numbers(&caller.account.account_id, agent_id.map(AgentId::from).as_ref(), page)
        .await?;
    Ok(Json(NumberList {
        phone_numbers: numbers.into_iter().map(NumberObject::from).collect(),
        count,
        limit: page.limit,
        offset: page.offset,
    }))
}

/// Get one number.
#[utoipa::path(
    get, path = "/v1/phone-numbers/{phone_number}", tag = "phone-numbers",
    params(("phone_number" = String, Path, description = "E.164, with + sent as %2B")),
    responses(
        (status = 200, description = "The number", body = NumberEnvelope),
        (status = 400, description = "`invalid_phone_format`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`number_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn get_number(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<NumberEnvelope>> {
    let phone_number = path_number(&raw)?;
    let (number, _) = owned_number(&state, &caller, &phone_number).await?;
    Ok(Json(NumberEnvelope { phone_number: number.into() }))
}

/// Update a number's settings. Only the supplied fields change; `null` clears a setting (it then
/// falls back to the agent's). `agent_id` re-attaches the number to another of your agents. Takes
/// effect on the next call or SMS.
#[utoipa::path(
    patch, path = "/v1/phone-numbers/{phone_number}", tag = "phone-numbers",
    params(("phone_number" = String, Path, description = "E.164, with + sent as %2B")),
    request_body(content = NumberUpdateInput, description = "Any of the settings, plus `agent_id`, `inbound_enabled`, `outbound_enabled`, `sms_reply_enabled`", content_type = "application/json"),
    responses(
        (status = 200, description = "The updated number", body = NumberEnvelope),
        (status = 400, description = "`missing_field` (no setting given), `custom_prompt_too_long`, `invalid_voice_id`, `voicemail_message_required`, `invalid_phone_format`, `invalid_request`, `invalid_json`, `unknown_field`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 403, description = "`agent_not_owned`", body = ErrorEnvelope),
        (status = 404, description = "`number_not_found`, `agent_not_found`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn update_number(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    Checked { fields: body, .. }: Checked<NumberUpdateInput>,
) -> ApiResult<Json<NumberEnvelope>> {
    let phone_number = path_number(&raw)?;
    let body = normalize_keys(body);
    let settable = NUMBER_SETTING_FIELDS.iter().chain(NUMBER_FLAGS).chain(&["agent_id"]);
    if !settable.clone().any(|f| body.contains_key(*f)) {
        let names: Vec<&str> = settable.copied().collect();
        return Err(ApiError::new(
            ErrorCode::MissingField,
            format!("Give at least one setting to change: {}.", names.join(", ")),
        ));
    }
    let new_agent = match body.get("agent_id") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(value) => {
            let id = as_str("agent_id", value)?.to_owned();
            check_agent(&state, &caller, &id).await?;
            Some(Some(id))
        }
    };
    let tts = state.config().agent_rules().tts;
    for _ in 0..5 {
        let (current, version) = owned_number(&state, &caller, &phone_number).await?;
        let settings = current.settings.apply_patch(&body, tts)?;
        let flags = NumberFlags {
            inbound_enabled: current.inbound_enabled,
            outbound_enabled: current.outbound_enabled,
            sms_reply_enabled: current.sms_reply_enabled,
        }
        .apply(&body)?;
        let updated = PhoneNumber {
            agent_id: new_agent
                .clone()
                .map(|a| a.map(AgentId::from))
                .unwrap_or_else(|| current.agent_id.clone()),
            inbound_enabled: flags.inbound_enabled,
            outbound_enabled: flags.outbound_enabled,
            sms_reply_enabled: flags.sms_reply_enabled,
            settings,
            updated_at: nixflex_store::now(),
            ..current
        };
        match state.store().update_number(&updated, version).await {
            Ok(()) => return Ok(Json(NumberEnvelope { phone_number: updated.into() })),
            Err(StoreError::Conflict { constraint: "version" }) => {}
            Err(StoreError::NotFound) => {
                return Err(ApiError::new(
                    ErrorCode::NumberNotFound,
                    format!("No number {phone_number} in this account."),
                ));
            }
            // A concurrent agent deletion removed the agent being attached.
            Err(StoreError::Conflict { constraint: "foreign key" }) => {
                return Err(ApiError::new(
                    ErrorCode::AgentNotFound,
                    "The agent was deleted meanwhile.",
                ));
            }
            Err(other) => return Err(other.into()),
        }
    }
    Err(ApiError::new(
        ErrorCode::ServiceUnavailable,
        "The number is being updated by many requests at once; retry shortly.",
    ))
}

/// Whether a webhook URL currently configured on Twilio is one of ours.
fn points_at_us(url: Option<&str>, ours: &str) -> bool {
    url.is_some_and(|u| u == ours)
}

/// Remove a number: its Twilio webhooks are cleared (only those still pointing at this server),
/// then the number, its caller context and its integrations are deleted. The number itself stays
/// in your Twilio account. If Twilio no longer accepts the stored credentials or no longer has
/// the number, the number is still removed here and `twilio_webhooks_cleared` is false.
#[utoipa::path(
    delete, path = "/v1/phone-numbers/{phone_number}", tag = "phone-numbers",
    params(("phone_number" = String, Path, description = "E.164, with + sent as %2B")),
    responses(
        (status = 200, description = "`{\"phone_number\": {\"phone_number\", \"deleted\": true, \"twilio_webhooks_cleared\"}}`"),
        (status = 400, description = "`invalid_phone_format`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`number_not_found`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
        (status = 502, description = "`provider_error` (Twilio failed; nothing was deleted, retry)", body = ErrorEnvelope),
    )
)]
async fn delete_number(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let phone_number = path_number(&raw)?;
    let (number, _) = owned_number(&state, &caller, &phone_number).await?;
    let token = state
        .secrets()
        .open(&number.twilio_auth_token_sealed)
        .map_err(|e| ApiError::internal(anyhow::Error::new(e)))?;
    let credentials = TwilioCredentials::new(number.twilio_account_sid.clone(), token);
    let cleared = match state
        .twilio()
        .fetch_incoming_phone_number(&credentials, &number.twilio_number_sid)
        .await
    {
        Ok(current) => {
            let ours = carrier_urls(&state).ok();
            let mut update = IncomingPhoneNumberUpdate::default();
            let matches = |configured: Option<&str>, ours_url: Option<&String>, suffix: &str| {
                match ours_url {
                    Some(o) => points_at_us(configured, o),
                    None => configured.is_some_and(|c| c.ends_with(suffix)),
                }
            };
            if matches(
                current.voice_url.as_deref(),
                ours.as_ref().map(|u| &u.voice),
                "/twilio/voice",
            ) {
                update.voice_url = Some(String::new());
            }
            if matches(current.sms_url.as_deref(), ours.as_ref().map(|u| &u.sms), "/twilio/sms") {
                update.sms_url = Some(String::new());
            }
            if matches(
                current.status_callback.as_deref(),
                ours.as_ref().map(|u| &u.status),
                "/twilio/status",
            ) {
                update.status_callback = Some(String::new());
            }
            let nothing_to_clear = update.voice_url.is_none()
                && update.sms_url.is_none()
                && update.status_callback.is_none();
            if nothing_to_clear {
                true
            } else {
                match state
                    .twilio()
                    .update_incoming_phone_number(&credentials, &number.twilio_number_sid, &update)
                    .await
                {
                    Ok(_) => true,
                    Err(TwilioError::Authentication { .. } | TwilioError::NotFound { .. }) => false,
                    Err(other) => return Err(twilio_error(other)),
                }
            }
        }
        // The customer rotated the token or released the number: nothing we can clear.
        Err(TwilioError::Authentication { .. } | TwilioError::NotFound { .. }) => false,
        Err(other) => return Err(twilio_error(other)),
    };
    if !state
        .store()
        .delete_number(&caller.account.account_id, &E164::from(phone_number.as_str()))
        .await?
    {
        return Err(ApiError::new(
            ErrorCode::NumberNotFound,
            format!("No number {phone_number} in this account."),
        ));
    }
    tracing::info!(message = "Number deleted.", account_id = %caller.account.account_id, twilio_webhooks_cleared = cleared);
    Ok(Json(
        json!({"phone_number": {"phone_number": phone_number, "deleted": true, "twilio_webhooks_cleared": cleared}}),
    ))
}
