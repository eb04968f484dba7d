//! Voice batch campaigns (docs/api.md#batch-campaigns, docs/campaigns.md;
//! docs/decisions.md#batch-campaigns): create, list, get with per-recipient outcomes, launch,
//! pause, resume, cancel. The handlers check the request and write the campaign; its durable
//! scheduler job (`nixflex_engine::campaigns`) places the calls, each an ordinary outbound call
//! tagged with the campaign.

use std::collections::{BTreeMap, HashSet};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, Utc};
use nixflex_core::error::ErrorCode;
use nixflex_core::ids::{self, AgentId, E164};
use nixflex_core::phone;
use nixflex_core::window::{CallingWindow, DAY_MINUTES, Days};
use nixflex_engine::campaigns::RecipientData;
use nixflex_store::{Campaign, NewRecipient, Recipient, campaign_job};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Checked, QueryPairs};
use crate::openapi::ErrorEnvelope;
use crate::state::AppState;

/// Most recipients per campaign.
const MAX_RECIPIENTS: usize = 10_000;
/// Longest prompt, in characters.
const MAX_PROMPT_CHARS: usize = 16_000;
/// Largest `metadata`, serialised, in bytes.
const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Most `variables` per recipient.
const MAX_VARS: usize = 100;
/// Longest variable value.
const MAX_VAR_CHARS: usize = 2_000;
/// Most calls per recipient (`max_attempts`).
const MAX_ATTEMPTS: i64 = 10;

/// One recipient of a batch campaign.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchRecipient {
    /// E.164 number to call (legacy name: `phone_number`).
    #[schema(value_type = String, pattern = r"^\+[1-9][0-9]{6,14}$")]
    phone: Option<Value>,
    #[schema(ignore)]
    phone_number: Option<Value>,
    /// Substituted into the prompt as `{key}` (legacy name: `dynamic_vars`).
    #[schema(required = false)]
    variables: Option<BTreeMap<String, String>>,
    #[schema(ignore)]
    dynamic_vars: Option<BTreeMap<String, String>>,
    /// Replaces the campaign prompt for this recipient.
    #[schema(value_type = String, required = false, max_length = 16000)]
    prompt_override: Option<String>,
    /// Merged over the campaign's `metadata` on this recipient's call (legacy).
    #[schema(value_type = Object, required = false)]
    metadata: Option<Map<String, Value>>,
}

/// `POST /v1/calls/batch`: a voice campaign.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchCampaignInput {
    /// Your agent.
    #[schema(value_type = String, pattern = "^agent_[0-9a-f]{16}$")]
    agent_id: Option<String>,
    /// The purpose of every call (`{key}` placeholders take each recipient's `variables`).
    #[schema(value_type = String, min_length = 1, max_length = 16000)]
    prompt: Option<String>,
    /// Display name.
    #[schema(value_type = String, required = false, max_length = 200)]
    name: Option<String>,
    /// Caller ID: one of the agent's outbound-enabled numbers (required when it has several).
    #[schema(value_type = String, required = false, pattern = r"^\+[1-9][0-9]{6,14}$")]
    from_number: Option<String>,
    /// 1 to 10,000 recipients.
    #[schema(value_type = Vec<BatchRecipient>, min_items = 1, max_items = 10000)]
    recipients: Option<Vec<BatchRecipient>>,
    /// Call the valid recipients and report the invalid ones (default false: reject all).
    #[schema(value_type = bool, required = false)]
    skip_invalid: Option<bool>,
    /// `now` (default) or `schedule`.
    #[schema(value_type = String, required = false, pattern = "^(now|schedule)$")]
    schedule_type: Option<String>,
    /// `YYYY-MM-DD`: with `schedule`, eligible from local midnight of that date.
    #[schema(value_type = String, required = false, format = Date)]
    scheduled_date: Option<String>,
    /// ISO-8601 instant (legacy): with `schedule`, eligible from then.
    #[schema(value_type = String, required = false, format = DateTime)]
    scheduled_at: Option<String>,
    /// Window start, minutes after local midnight (default 0).
    #[schema(value_type = u16, required = false, minimum = 0, maximum = 1440)]
    window_start_minutes: Option<f64>,
    /// Window end, minutes after local midnight (default 1440; below the start = overnight).
    #[schema(value_type = u16, required = false, minimum = 0, maximum = 1440)]
    window_end_minutes: Option<f64>,
    /// Days calls may be placed on (`mon`…`sun`; default all).
    #[schema(value_type = Vec<String>, required = false)]
    window_days: Option<Vec<String>>,
    /// IANA timezone of the window (default: the agent's, else Europe/London).
    #[schema(value_type = String, required = false)]
    timezone: Option<String>,
    /// Cap on the campaign's calls at once (default: the account's cap).
    #[schema(value_type = u32, required = false, minimum = 1)]
    max_concurrent: Option<f64>,
    /// Calls per recipient at most: a busy or unanswered recipient is called again up to this
    /// many times in all (default 1, no retries; at most 10).
    #[schema(value_type = u32, required = false, minimum = 1, maximum = 10)]
    max_attempts: Option<f64>,
    /// Minutes before a retry (default 30).
    #[schema(value_type = u32, required = false, minimum = 0, maximum = 10080)]
    retry_delay_minutes: Option<f64>,
    /// Echoed on each call and its webhooks.
    #[schema(value_type = Object, required = false)]
    metadata: Option<Map<String, Value>>,
}

/// An invalid recipient row.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct InvalidRow {
    /// The phone as given.
    phone: Value,
    /// Why it is invalid.
    reason: String,
    /// Its index in `recipients`.
    row_index: usize,
}

/// The created campaign (the union of the two documented bodies).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CampaignCreated {
    /// `camp_` + 16 hex.
    campaign_id: String,
    /// The agent.
    agent_id: String,
    /// Display name.
    name: Option<String>,
    /// `running` or `scheduled`.
    status: String,
    /// The caller ID.
    from_number: String,
    /// Recipients to call.
    recipients_count: i64,
    /// Same as `recipients_count`.
    valid_count: i64,
    /// Rows skipped.
    invalid_count: usize,
    /// The rows skipped (`skip_invalid: true`).
    invalid: Vec<InvalidRow>,
    /// Created.
    created_at: DateTime<Utc>,
}

/// Recipients counted by progress and outcome.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CampaignCounts {
    /// Every recipient.
    total: i64,
    /// Still to be called (including those waiting for a retry).
    pending: i64,
    /// In a call now (queued at the carrier, ringing or talking).
    in_progress: i64,
    /// With a final outcome.
    done: i64,
    /// Not called because the campaign was cancelled or failed.
    cancelled: i64,
    /// Final outcomes: `completed`, `busy`, `no-answer`, `failed`, `canceled`.
    #[schema(value_type = Object)]
    by_outcome: BTreeMap<String, i64>,
}

/// One recipient and its outcome.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RecipientObject {
    /// Its index in the request.
    row_index: i64,
    /// E.164.
    phone: String,
    /// `pending`, `calling`, `done`, `cancelled`.
    status: String,
    /// The latest call's final status once done.
    outcome: Option<String>,
    /// The latest call's `ended_reason`.
    ended_reason: Option<String>,
    /// The latest call (`GET /v1/calls/{call_id}`).
    call_id: Option<String>,
    /// Calls placed.
    attempts: i64,
    /// When a retry is due.
    next_attempt_at: Option<DateTime<Utc>>,
}

/// A campaign.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CampaignObject {
    /// `camp_` + 16 hex.
    campaign_id: String,
    /// The agent.
    agent_id: String,
    /// Display name.
    name: Option<String>,
    /// `scheduled`, `running`, `paused`, `completed`, `cancelled`, `failed`.
    status: String,
    /// Why it failed.
    failure_reason: Option<String>,
    /// The caller ID.
    from_number: String,
    /// `now` or `schedule`.
    schedule_type: String,
    /// Eligible from local midnight of this date.
    scheduled_date: Option<String>,
    /// Eligible from this instant.
    scheduled_at: Option<DateTime<Utc>>,
    /// Window start (minutes after local midnight).
    window_start_minutes: i64,
    /// Window end.
    window_end_minutes: i64,
    /// Window days.
    window_days: Vec<String>,
    /// Window timezone.
    timezone: String,
    /// Cap on calls at once (`null`: the account's cap).
    max_concurrent: Option<i64>,
    /// Calls per recipient at most.
    max_attempts: i64,
    /// Minutes before a retry.
    retry_delay_minutes: i64,
    /// Echoed on each call.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// Recipients to call.
    recipients_count: i64,
    /// Rows skipped at creation.
    invalid_count: usize,
    /// Progress.
    counts: CampaignCounts,
    /// First started.
    launched_at: Option<DateTime<Utc>>,
    /// Finished.
    completed_at: Option<DateTime<Utc>>,
    /// Created.
    created_at: DateTime<Utc>,
    /// Last changed.
    updated_at: DateTime<Utc>,
    /// One page of recipients (`GET /v1/calls/batch/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    recipients: Option<Vec<RecipientObject>>,
    /// The page's size.
    #[serde(skip_serializing_if = "Option::is_none")]
    recipients_limit: Option<i64>,
    /// The page's offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    recipients_offset: Option<i64>,
    /// The rows skipped at creation (`GET /v1/calls/batch/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    invalid: Option<Value>,
}

/// A page of campaigns.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CampaignList {
    /// Newest first.
    campaigns: Vec<CampaignObject>,
    /// Matching campaigns.
    count: i64,
    /// Page size.
    limit: i64,
    /// Rows skipped.
    offset: i64,
}

/// The answer of `launch`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CampaignLaunched {
    /// The campaign.
    campaign_id: String,
    /// `running` (or the state it is in when already running).
    status: String,
    /// Recipients to call.
    recipients_count: i64,
    /// Recipients still to be called.
    queued_count: i64,
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_campaign, list_campaigns))
        .routes(routes!(get_campaign))
        .routes(routes!(launch_campaign))
        .routes(routes!(pause_campaign))
        .routes(routes!(resume_campaign))
        .routes(routes!(cancel_campaign))
}

fn missing(field: &str) -> ApiError {
    ApiError::new(ErrorCode::MissingField, format!("`{field}` is required.")).detail("field", field)
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(message).detail("field", field)
}

fn schedule_error(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidSchedule, message).detail("field", field)
}

/// An integer-valued JSON number in `range`.
fn whole(value: f64, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
    #[allow(clippy::cast_possible_truncation)]
    let n = value as i64;
    (value.fract() == 0.0 && range.contains(&n)).then_some(n)
}

/// Checks one recipient: its E.164 number and its sealed data, or why it is invalid.
fn recipient_row(
    state: &AppState,
    recipient: BatchRecipient,
) -> Result<(String, Option<String>), (Value, String)> {
    let raw = recipient.phone.or(recipient.phone_number).unwrap_or(Value::Null);
    let Some(text) = raw.as_str() else {
        return Err((raw, "`phone` is required and must be a string".to_owned()));
    };
    let Some(phone) = phone::parse_e164(text.trim()) else {
        return Err((raw.clone(), "not an E.164 number such as +14155550123".to_owned()));
    };
    let variables = match (recipient.variables, recipient.dynamic_vars) {
        (Some(_), Some(_)) => {
            return Err((raw, "give `variables` or `dynamic_vars`, not both".to_owned()));
        }
        (Some(v), None) | (None, Some(v)) => v,
        (None, None) => BTreeMap::new(),
    };
    if variables.len() > MAX_VARS
        || variables.iter().any(|(k, v)| {
            k.is_empty() || k.chars().count() > 64 || v.chars().count() > MAX_VAR_CHARS
        })
    {
        return Err((
            raw,
            format!(
                "`variables`: at most {MAX_VARS} entries, keys 1–64 characters, values at most {MAX_VAR_CHARS}"
            ),
        ));
    }
    let prompt_override = recipient.prompt_override.filter(|p| !p.trim().is_empty());
    if prompt_override.as_ref().is_some_and(|p| p.chars().count() > MAX_PROMPT_CHARS) {
        return Err((
            raw,
            format!("`prompt_override` is longer than {MAX_PROMPT_CHARS} characters"),
        ));
    }
    if recipient.metadata.as_ref().is_some_and(|m| {
        serde_json::to_string(m).map_or(usize::MAX, |s| s.len()) > MAX_METADATA_BYTES
    }) {
        return Err((raw, "`metadata` is larger than 16 KiB".to_owned()));
    }
    let data = RecipientData { variables, prompt_override, metadata: recipient.metadata };
    let sealed = (data != RecipientData::default())
        .then(|| serde_json::to_string(&data).ok().map(|json| state.secrets().seal(&json)))
        .flatten();
    Ok((phone, sealed))
}

/// Create a voice batch campaign
///
/// Validates the recipients (E.164; with `skip_invalid: false` any invalid row rejects the
/// request and the rows are in `details.invalid`; duplicates of a number are reported as invalid
/// rows), resolves the caller ID, and stores the campaign. `schedule_type: now` starts it at once
/// (`running`); `schedule` waits for `scheduled_date` / `scheduled_at`. Calls are placed only
/// inside the calling window (default: all day, every day) in the campaign's timezone.
#[utoipa::path(
    post, path = "/v1/calls/batch", tag = "campaigns",
    request_body(content = BatchCampaignInput, description = "The campaign", content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = CampaignCreated),
        (status = 400, description = "`missing_field`, `invalid_phone_format`, `too_many_recipients`, `campaign_no_recipients`, `invalid_schedule`, `from_number_required`, `agent_inactive`, `agent_no_phone`, `invalid_request`, `invalid_json`, `unknown_field`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 403, description = "`agent_not_owned`, `from_number_not_owned`", body = ErrorEnvelope),
        (status = 404, description = "`agent_not_found`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
        (status = 503, description = "`public_url_not_configured`", body = ErrorEnvelope),
    )
)]
#[allow(clippy::too_many_lines)]
async fn create_campaign(
    State(state): State<AppState>,
    caller: Caller,
    Checked { input, .. }: Checked<BatchCampaignInput>,
) -> ApiResult<(StatusCode, Json<CampaignCreated>)> {
    let account_id = caller.account.account_id.clone();
    let agent_id =
        input.agent_id.filter(|a| !a.trim().is_empty()).ok_or_else(|| missing("agent_id"))?;
    let prompt = input.prompt.filter(|p| !p.trim().is_empty()).ok_or_else(|| missing("prompt"))?;
    if prompt.chars().count() > MAX_PROMPT_CHARS {
        return Err(invalid(
            "prompt",
            format!("`prompt` is longer than {MAX_PROMPT_CHARS} characters."),
        ));
    }
    let name = input.name.filter(|n| !n.trim().is_empty());
    if name.as_ref().is_some_and(|n| n.chars().count() > 200) {
        return Err(invalid("name", "`name` is longer than 200 characters."));
    }
    let recipients = input.recipients.ok_or_else(|| missing("recipients"))?;
    if recipients.len() > MAX_RECIPIENTS {
        return Err(ApiError::new(
            ErrorCode::TooManyRecipients,
            format!(
                "A campaign takes at most {MAX_RECIPIENTS} recipients; this one has {}.",
                recipients.len()
            ),
        )
        .detail("field", "recipients"));
    }
    if recipients.is_empty() {
        return Err(ApiError::new(ErrorCode::CampaignNoRecipients, "`recipients` is empty.")
            .detail("field", "recipients"));
    }
    let metadata = input.metadata.map(Value::Object);
    if metadata.as_ref().is_some_and(|m| m.to_string().len() > MAX_METADATA_BYTES) {
        return Err(invalid("metadata", "`metadata` is larger than 16 KiB."));
    }
    let max_concurrent = match input.max_concurrent {
        None => None,
        Some(v) => Some(whole(v, 1..=10_000).ok_or_else(|| {
            invalid("max_concurrent", "`max_concurrent` must be a whole number from 1 to 10000.")
        })?),
    };
    let max_attempts = match input.max_attempts {
        None => 1,
        Some(v) => whole(v, 1..=MAX_ATTEMPTS).ok_or_else(|| {
            invalid(
                "max_attempts",
                format!("`max_attempts` must be a whole number from 1 to {MAX_ATTEMPTS}."),
            )
        })?,
    };
    let retry_delay_minutes = match input.retry_delay_minutes {
        None => 30,
        Some(v) => whole(v, 0..=10_080).ok_or_else(|| {
            invalid(
                "retry_delay_minutes",
                "`retry_delay_minutes` must be a whole number from 0 to 10080.",
            )
        })?,
    };

    // The schedule and window (docs/campaigns.md#calling-windows).
    let scheduled_date = match input.scheduled_date.filter(|d| !d.trim().is_empty()) {
        None => None,
        Some(raw) => {
            let date = NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d").map_err(|_| {
                schedule_error(
                    "scheduled_date",
                    format!("`scheduled_date` must be YYYY-MM-DD, not `{raw}`."),
                )
            })?;
            Some(date.format("%Y-%m-%d").to_string())
        }
    };
    let scheduled_at = match input.scheduled_at.filter(|d| !d.trim().is_empty()) {
        None => None,
        Some(raw) => Some(
            DateTime::parse_from_rfc3339(raw.trim())
                .map_err(|_| {
                    schedule_error(
                        "scheduled_at",
                        format!("`scheduled_at` must be an ISO-8601 date-time, not `{raw}`."),
                    )
                })?
                .with_timezone(&Utc),
        ),
    };
    let schedule_type = match input.schedule_type.as_deref() {
        None if scheduled_date.is_some() || scheduled_at.is_some() => "schedule",
        None | Some("now") => "now",
        Some("schedule") => "schedule",
        Some(other) => {
            return Err(schedule_error(
                "schedule_type",
                format!("`schedule_type` must be `now` or `schedule`, not `{other}`."),
            ));
        }
    };
    if schedule_type == "schedule" && scheduled_date.is_none() && scheduled_at.is_none() {
        return Err(schedule_error(
            "scheduled_date",
            "`schedule_type: schedule` needs `scheduled_date` (or `scheduled_at`).",
        ));
    }
    if schedule_type == "now" && (scheduled_date.is_some() || scheduled_at.is_some()) {
        return Err(schedule_error(
            "schedule_type",
            "`scheduled_date` and `scheduled_at` go with `schedule_type: schedule`.",
        ));
    }
    let bound = |value: Option<f64>, default: u16, field: &str| -> ApiResult<u16> {
        match value {
            None => Ok(default),
            Some(v) => whole(v, 0..=i64::from(DAY_MINUTES))
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| {
                    schedule_error(
                        field,
                        format!("`{field}` must be a whole number from 0 to 1440."),
                    )
                }),
        }
    };
    let window_start = bound(input.window_start_minutes, 0, "window_start_minutes")?;
    let window_end = bound(input.window_end_minutes, DAY_MINUTES, "window_end_minutes")?;
    let days = match &input.window_days {
        None => Days::ALL,
        Some(names) => Days::parse(names)
            .map_err(|e| schedule_error("window_days", format!("`window_days`: {e}.")))?,
    };

    // The agent, its timezone and the caller ID.
    crate::routes::numbers::check_agent(&state, &caller, &agent_id).await?;
    let agent = AgentId::from(agent_id.as_str());
    let Some((agent_record, _)) = state.store().get_agent(&account_id, &agent).await? else {
        return Err(ApiError::new(
            ErrorCode::AgentNotFound,
            format!("No agent `{agent_id}` in this account."),
        ));
    };
    if !agent_record.settings.is_active {
        return Err(ApiError::new(
            ErrorCode::AgentInactive,
            format!("Agent `{agent_id}` is inactive (`is_active: false`)."),
        ));
    }
    let timezone = input
        .timezone
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| agent_record.settings.timezone.clone());
    let tz = CallingWindow::timezone(timezone.trim())
        .map_err(|e| schedule_error("timezone", format!("`timezone`: {e}.")))?;
    CallingWindow::new(window_start, window_end, days, tz)
        .map_err(|e| schedule_error("window_end_minutes", format!("{e}.")))?;
    if state.engine().config().public_url.is_none() {
        return Err(ApiError::new(
            ErrorCode::PublicUrlNotConfigured,
            "The server has no public URL configured, so the carrier could not reach it for \
             the campaign's calls; set `public_url`.",
        ));
    }
    let numbers = state.engine().store().agent_numbers(&account_id, &agent).await?;
    let outbound: Vec<_> = numbers.into_iter().filter(|n| n.outbound_enabled).collect();
    let from_number = match input.from_number.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
        Some(raw) => {
            let from = phone::parse_e164(raw).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidPhoneFormat,
                    "`from_number` must be an E.164 number such as +14155550123.",
                )
                .detail("field", "from_number")
            })?;
            let owned = state
                .store()
                .find_active_number(&E164::from(from.clone()))
                .await?
                .is_some_and(|n| n.account_id == account_id);
            if !owned {
                return Err(ApiError::new(
                    ErrorCode::FromNumberNotOwned,
                    "`from_number` is not a number imported to this account.",
                )
                .detail("field", "from_number"));
            }
            if !outbound.iter().any(|n| n.phone_number.as_str() == from) {
                return Err(invalid(
                    "from_number",
                    format!(
                        "`from_number` is not one of agent `{agent_id}`'s outbound-enabled numbers."
                    ),
                ));
            }
            from
        }
        None => match outbound.as_slice() {
            [] => {
                return Err(ApiError::new(
                    ErrorCode::AgentNoPhone,
                    format!("Agent `{agent_id}` has no outbound-enabled number to call from."),
                ));
            }
            [only] => only.phone_number.to_string(),
            several => {
                return Err(ApiError::new(
                    ErrorCode::FromNumberRequired,
                    format!("Agent `{agent_id}` has {} outbound-enabled numbers; say which to call from with `from_number`.", several.len()),
                )
                .detail("field", "from_number"));
            }
        },
    };

    // The recipients.
    let skip_invalid = input.skip_invalid.unwrap_or(false);
    let mut valid = Vec::with_capacity(recipients.len());
    let mut invalid_rows = Vec::new();
    let mut seen = HashSet::with_capacity(recipients.len());
    for (index, recipient) in recipients.into_iter().enumerate() {
        match recipient_row(&state, recipient) {
            Ok((phone, data_sealed)) => {
                if seen.insert(phone.clone()) {
                    valid.push(NewRecipient {
                        row_index: i64::try_from(index).unwrap_or(i64::MAX),
                        phone,
                        data_sealed,
                    });
                } else {
                    invalid_rows.push(InvalidRow {
                        phone: Value::String(phone),
                        reason: "duplicate of an earlier recipient (each number is called once)"
                            .to_owned(),
                        row_index: index,
                    });
                }
            }
            Err((phone, reason)) => {
                invalid_rows.push(InvalidRow { phone, reason, row_index: index })
            }
        }
    }
    if !invalid_rows.is_empty() && !skip_invalid {
        let first = &invalid_rows[0];
        return Err(ApiError::new(
            ErrorCode::InvalidPhoneFormat,
            format!(
                "{} recipient(s) are invalid (row {}: {}); fix them or send `skip_invalid: true` to call the valid ones.",
                invalid_rows.len(), first.row_index, first.reason
            ),
        )
        .detail("invalid", json!(invalid_rows)));
    }
    if valid.is_empty() {
        return Err(ApiError::new(ErrorCode::CampaignNoRecipients, "No recipient is valid.")
            .detail("invalid", json!(invalid_rows)));
    }

    let now = nixflex_store::now();
    let status = if schedule_type == "now" { "running" } else { "scheduled" };
    let campaign = Campaign {
        campaign_id: ids::new_campaign_id(),
        account_id: account_id.clone(),
        agent_id: agent_id.clone(),
        name,
        from_number,
        prompt_sealed: state.secrets().seal(&prompt),
        status: status.to_owned(),
        schedule_type: schedule_type.to_owned(),
        scheduled_date,
        scheduled_at,
        window_start: i64::from(window_start),
        window_end: i64::from(window_end),
        window_days: days.names().join(","),
        timezone: tz.name().to_owned(),
        max_concurrent,
        max_attempts,
        retry_delay_minutes,
        metadata,
        recipients_count: i64::try_from(valid.len()).unwrap_or(i64::MAX),
        invalid: json!(invalid_rows),
        failure_reason: None,
        launched_at: (status == "running").then_some(now),
        completed_at: None,
        created_at: now,
        updated_at: now,
    };
    let job = campaign_job(
        &account_id,
        &campaign.campaign_id,
        state.engine().config().follow_up_max_attempts,
    );
    state.store().create_campaign(&campaign, &valid, &job).await?;
    state.engine().wake_follow_ups();
    tracing::info!(message = "Campaign created.", campaign_id = %campaign.campaign_id, recipients = valid.len(), status);
    Ok((
        StatusCode::CREATED,
        Json(CampaignCreated {
            campaign_id: campaign.campaign_id,
            agent_id,
            name: campaign.name,
            status: campaign.status,
            from_number: campaign.from_number,
            recipients_count: campaign.recipients_count,
            valid_count: campaign.recipients_count,
            invalid_count: invalid_rows.len(),
            invalid: invalid_rows,
            created_at: now,
        }),
    ))
}

fn not_found(campaign_id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::CampaignNotFound,
        format!("No campaign `{campaign_id}` in this account."),
    )
}

async fn find(state: &AppState, caller: &Caller, campaign_id: &str) -> ApiResult<Campaign> {
    if !ids::is_campaign_id(campaign_id) {
        return Err(not_found(campaign_id));
    }
    state
        .store()
        .get_campaign(&caller.account.account_id, campaign_id)
        .await?
        .ok_or_else(|| not_found(campaign_id))
}

async fn counts(state: &AppState, campaign_id: &str) -> ApiResult<CampaignCounts> {
    let rows = state.store().recipient_counts(campaign_id).await?;
    let mut counts = CampaignCounts {
        total: 0,
        pending: 0,
        in_progress: 0,
        done: 0,
        cancelled: 0,
        by_outcome: BTreeMap::new(),
    };
    for (status, outcome, n) in rows {
        counts.total += n;
        match status.as_str() {
            "pending" => counts.pending += n,
            "calling" => counts.in_progress += n,
            "done" => {
                counts.done += n;
                *counts
                    .by_outcome
                    .entry(outcome.unwrap_or_else(|| "unknown".to_owned()))
                    .or_default() += n;
            }
            _ => counts.cancelled += n,
        }
    }
    Ok(counts)
}

async fn campaign_object(state: &AppState, campaign: Campaign) -> ApiResult<CampaignObject> {
    let counts = counts(state, &campaign.campaign_id).await?;
    Ok(CampaignObject {
        invalid_count: campaign.invalid.as_array().map_or(0, Vec::len),
        counts,
        window_days: campaign
            .window_days
            .split(',')
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect(),
        campaign_id: campaign.campaign_id,
        agent_id: campaign.agent_id,
        name: campaign.name,
        status: campaign.status,
        failure_reason: campaign.failure_reason,
        from_number: campaign.from_number,
        schedule_type: campaign.schedule_type,
        scheduled_date: campaign.scheduled_date,
        scheduled_at: campaign.scheduled_at,
        window_start_minutes: campaign.window_start,
        window_end_minutes: campaign.window_end,
        timezone: campaign.timezone,
        max_concurrent: campaign.max_concurrent,
        max_attempts: campaign.max_attempts,
        retry_delay_minutes: campaign.retry_delay_minutes,
        metadata: campaign.metadata,
        recipients_count: campaign.recipients_count,
        launched_at: campaign.launched_at,
        completed_at: campaign.completed_at,
        created_at: campaign.created_at,
        updated_at: campaign.updated_at,
        recipients: None,
        recipients_limit: None,
        recipients_offset: None,
        invalid: None,
    })
}

fn recipient_object(r: Recipient) -> RecipientObject {
    RecipientObject {
        row_index: r.row_index,
        phone: r.phone,
        status: r.status,
        outcome: r.outcome,
        ended_reason: r.ended_reason,
        call_id: r.call_id,
        attempts: r.attempts,
        next_attempt_at: r.next_attempt_at,
    }
}

const STATUSES: &[&str] = &["scheduled", "running", "paused", "completed", "cancelled", "failed"];

/// List voice batch campaigns
#[utoipa::path(
    get, path = "/v1/calls/batch", tag = "campaigns",
    params(("limit" = Option<i64>, Query, description = "Page size, default 25, max 100"),
           ("offset" = Option<i64>, Query, description = "Rows to skip"),
           ("agent_id" = Option<String>, Query, description = "Only this agent's campaigns"),
           ("status" = Option<String>, Query, description = "scheduled, running, paused, completed, cancelled or failed")),
    responses(
        (status = 200, description = "A page of campaigns, newest first", body = CampaignList),
        (status = 400, description = "`invalid_request`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn list_campaigns(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
) -> ApiResult<Json<CampaignList>> {
    let page = query.page()?;
    let status = query.get("status").filter(|s| !s.is_empty());
    if let Some(status) = status
        && !STATUSES.contains(&status)
    {
        return Err(invalid("status", format!("`status` must be one of {}.", STATUSES.join(", "))));
    }
    let agent_id = query.get("agent_id").filter(|s| !s.is_empty());
    let (campaigns, count) = state
        .store()
        .list_campaigns(&caller.account.account_id, status, agent_id, page.limit, page.offset)
        .await?;
    let mut items = Vec::with_capacity(campaigns.len());
    for campaign in campaigns {
        items.push(campaign_object(&state, campaign).await?);
    }
    Ok(Json(CampaignList { campaigns: items, count, limit: page.limit, offset: page.offset }))
}

/// Get a voice batch campaign with its recipients' outcomes
#[utoipa::path(
    get, path = "/v1/calls/batch/{campaign_id}", tag = "campaigns",
    params(("campaign_id" = String, Path, description = "`camp_` + 16 hex"),
           ("recipients_limit" = Option<i64>, Query, description = "Recipients per page, default 100, max 1000"),
           ("recipients_offset" = Option<i64>, Query, description = "Recipients to skip")),
    responses(
        (status = 200, description = "The campaign, its counts and a page of recipients", body = CampaignObject),
        (status = 400, description = "`invalid_request`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`campaign_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn get_campaign(
    State(state): State<AppState>,
    caller: Caller,
    Path(campaign_id): Path<String>,
    query: QueryPairs,
) -> ApiResult<Json<CampaignObject>> {
    let number = |name: &str, default: i64, min: i64| -> ApiResult<i64> {
        match query.get(name).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(raw) => match raw.trim().parse::<i64>() {
                Ok(n) if n >= min => Ok(if name == "recipients_limit" { n.min(1000) } else { n }),
                _ => Err(invalid(
                    name,
                    format!("`{name}` must be an integer of at least {min}, not `{raw}`."),
                )),
            },
        }
    };
    let limit = number("recipients_limit", 100, 1)?;
    let offset = number("recipients_offset", 0, 0)?;
    let campaign = find(&state, &caller, &campaign_id).await?;
    let invalid_rows = campaign.invalid.clone();
    let recipients =
        state.store().campaign_recipients(&campaign.campaign_id, limit, offset).await?;
    let mut object = campaign_object(&state, campaign).await?;
    object.recipients = Some(recipients.into_iter().map(recipient_object).collect());
    object.recipients_limit = Some(limit);
    object.recipients_offset = Some(offset);
    object.invalid = Some(invalid_rows);
    Ok(Json(object))
}

fn finished(campaign: &Campaign) -> ApiError {
    ApiError::new(
        ErrorCode::CampaignAlreadyCompleted,
        format!(
            "Campaign `{}` is {} and can no longer change.",
            campaign.campaign_id, campaign.status
        ),
    )
    .detail("status", campaign.status.clone())
}

/// Moves the campaign from one of `from` to `to`; `Ok(None)` when it was not in `from` (the
/// caller looks at the state it is in).
async fn move_to(
    state: &AppState,
    campaign: &Campaign,
    from: &[&str],
    to: &str,
) -> ApiResult<Option<Campaign>> {
    let moved = state
        .store()
        .move_campaign(
            &campaign.account_id,
            &campaign.campaign_id,
            from,
            to,
            None,
            nixflex_store::now(),
        )
        .await?;
    if moved.is_some() {
        state.engine().wake_follow_ups();
        tracing::info!(message = "Campaign moved.", campaign_id = %campaign.campaign_id, from = %campaign.status, to);
    }
    Ok(moved)
}

/// Launch a campaign now
///
/// Starts a scheduled (or paused) campaign now, ignoring its `scheduled_date`; calls are still
/// placed only inside its calling window. Already running: no change.
#[utoipa::path(
    post, path = "/v1/calls/batch/{campaign_id}/launch", tag = "campaigns",
    params(("campaign_id" = String, Path, description = "`camp_` + 16 hex")),
    responses(
        (status = 200, description = "Running", body = CampaignLaunched),
        (status = 400, description = "`campaign_already_completed` (also for a cancelled or failed campaign; `details.status` says which)", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`campaign_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn launch_campaign(
    State(state): State<AppState>,
    caller: Caller,
    Path(campaign_id): Path<String>,
) -> ApiResult<Json<CampaignLaunched>> {
    let campaign = find(&state, &caller, &campaign_id).await?;
    let current = match move_to(&state, &campaign, &["scheduled", "paused"], "running").await? {
        Some(moved) => moved,
        None => {
            let now = find(&state, &caller, &campaign_id).await?;
            if now.is_final() {
                return Err(finished(&now));
            }
            now
        }
    };
    let counts = counts(&state, &current.campaign_id).await?;
    Ok(Json(CampaignLaunched {
        campaign_id: current.campaign_id,
        status: current.status,
        recipients_count: current.recipients_count,
        queued_count: counts.pending,
    }))
}

/// Pause a campaign
///
/// No new calls are placed until it is resumed; calls in progress continue. Already paused: no
/// change.
#[utoipa::path(
    post, path = "/v1/calls/batch/{campaign_id}/pause", tag = "campaigns",
    params(("campaign_id" = String, Path, description = "`camp_` + 16 hex")),
    responses(
        (status = 200, description = "Paused", body = CampaignObject),
        (status = 400, description = "`campaign_already_completed`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`campaign_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn pause_campaign(
    State(state): State<AppState>,
    caller: Caller,
    Path(campaign_id): Path<String>,
) -> ApiResult<Json<CampaignObject>> {
    transition(&state, &caller, &campaign_id, &["scheduled", "running"], "paused", &["paused"])
        .await
}

/// Resume a paused campaign
///
/// Placing calls continues (inside the calling window). Already running: no change.
#[utoipa::path(
    post, path = "/v1/calls/batch/{campaign_id}/resume", tag = "campaigns",
    params(("campaign_id" = String, Path, description = "`camp_` + 16 hex")),
    responses(
        (status = 200, description = "Running", body = CampaignObject),
        (status = 400, description = "`campaign_already_completed`, `invalid_request` (a scheduled campaign: launch it)", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`campaign_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn resume_campaign(
    State(state): State<AppState>,
    caller: Caller,
    Path(campaign_id): Path<String>,
) -> ApiResult<Json<CampaignObject>> {
    transition(&state, &caller, &campaign_id, &["paused"], "running", &["running"]).await
}

/// Cancel a campaign
///
/// Recipients not yet called are not called (`cancelled`); calls waiting for a free slot are
/// ended `canceled`; calls in progress finish. Already cancelled: no change.
#[utoipa::path(
    post, path = "/v1/calls/batch/{campaign_id}/cancel", tag = "campaigns",
    params(("campaign_id" = String, Path, description = "`camp_` + 16 hex")),
    responses(
        (status = 200, description = "Cancelled", body = CampaignObject),
        (status = 400, description = "`campaign_already_completed` (completed or failed)", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`campaign_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn cancel_campaign(
    State(state): State<AppState>,
    caller: Caller,
    Path(campaign_id): Path<String>,
) -> ApiResult<Json<CampaignObject>> {
    transition(
        &state,
        &caller,
        &campaign_id,
        &["scheduled", "running", "paused"],
        "cancelled",
        &["cancelled"],
    )
    .await
}

async fn transition(
    state: &AppState,
    caller: &Caller,
    campaign_id: &str,
    from: &[&str],
    to: &str,
    no_op: &[&str],
) -> ApiResult<Json<CampaignObject>> {
    let campaign = find(state, caller, campaign_id).await?;
    let current = match move_to(state, &campaign, from, to).await? {
        Some(moved) => moved,
        None => {
            let now = find(state, caller, campaign_id).await?;
            if !no_op.contains(&now.status.as_str()) {
                if now.is_final() {
                    return Err(finished(&now));
                }
                return Err(ApiError::invalid(format!(
                    "Campaign `{campaign_id}` is {}; it cannot be {to} (a scheduled campaign starts with launch).",
                    now.status
                ))
                .detail("status", now.status));
            }
            now
        }
    };
    Ok(Json(campaign_object(state, current).await?))
}
