//! SMS campaigns (docs/api.md#sms-campaigns, docs/sms.md#campaigns): create, list, get with
//! recipients, launch, cancel. Sending is the `sms.campaign` job's (nixflex-engine).

use std::collections::{BTreeMap, HashSet};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use nixflex_core::error::ErrorCode;
use nixflex_core::ids::{AgentId, E164};
use nixflex_core::phone;
use nixflex_core::sms::{MAX_SMS_CHARS, render_template};
use nixflex_engine::sms_campaign::{campaign_job, campaign_job_key};
use nixflex_store::{NewSmsRecipient, Page, SmsCampaign, SmsCampaignWithCounts};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Checked, QueryPairs};
use crate::openapi::ErrorEnvelope;
use crate::state::AppState;

/// At most this many recipients per campaign.
pub(crate) const MAX_RECIPIENTS: usize = 10_000;

/// Attempts of a campaign's job (failures only: handing over between runs spends none).
const JOB_ATTEMPTS: i64 = 20;

/// One recipient of an SMS campaign.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SmsRecipient {
    /// E.164 recipient.
    #[schema(value_type = String, pattern = r"^\+[1-9][0-9]{6,14}$")]
    phone: Option<String>,
    /// Values for the template's `{{variable}}` placeholders.
    #[schema(required = false)]
    variables: Option<BTreeMap<String, String>>,
    #[schema(ignore)]
    phone_number: Option<String>,
}

/// `POST /v1/sms/campaigns`: a bulk SMS campaign.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SmsCampaignInput {
    /// The agent handling replies.
    #[schema(value_type = String, pattern = "^agent_[0-9a-f]{16}$")]
    agent_id: Option<String>,
    /// Your Twilio number to send from.
    #[schema(value_type = String, pattern = r"^\+[1-9][0-9]{6,14}$")]
    from_number: Option<String>,
    /// Display name.
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    name: Option<String>,
    /// Text with `{{variable}}` placeholders (a missing variable renders empty).
    #[schema(value_type = String, min_length = 1, max_length = 1600)]
    message_template: Option<String>,
    /// Up to 10,000 recipients.
    #[schema(value_type = Vec<SmsRecipient>, min_items = 1, max_items = 10000)]
    recipients: Option<Vec<SmsRecipient>>,
    /// Text the valid recipients and report the invalid ones (default false: any invalid phone
    /// rejects the request).
    #[schema(value_type = bool, required = false)]
    skip_invalid: Option<bool>,
    /// `now` or `schedule`.
    #[schema(value_type = String, pattern = "^(now|schedule)$")]
    schedule_type: Option<String>,
    /// ISO-8601, with `schedule`.
    #[schema(value_type = String, required = false, format = DateTime)]
    scheduled_at: Option<String>,
    #[schema(ignore)]
    body: Option<String>,
    // Legacy, accepted and ignored: replies go to the inbound responder with the agent's prompt
    // (docs/sms.md#campaigns).
    #[schema(ignore)]
    #[allow(dead_code)]
    context_prompt: Option<Value>,
    #[schema(ignore)]
    #[allow(dead_code)]
    reply_window_hours: Option<Value>,
}

/// A recipient the campaign skipped.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InvalidRecipient {
    /// As given.
    phone: String,
    /// `invalid_phone_format`, `duplicate` or `message_too_long`.
    reason: String,
    /// 0-based index in `recipients`.
    row_index: usize,
}

/// An SMS campaign with its live counts.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SmsCampaignObject {
    /// `smsc_` + 16 hex.
    campaign_id: String,
    /// Display name.
    name: String,
    /// The agent handling replies.
    agent_id: String,
    /// The sending number.
    from_number: String,
    /// The template.
    message_template: String,
    /// `draft`, `scheduled`, `running`, `done` or `failed`.
    status: String,
    /// Every recipient.
    total_count: i64,
    /// Texts Twilio reported delivered.
    delivered_count: i64,
    /// Texts failed, undelivered, or `sent` but never confirmed delivered.
    failed_count: i64,
    /// Not sent yet, or queued/sending at Twilio.
    pending_count: i64,
    /// Recipients skipped because they opted out (texted STOP).
    opted_out_count: i64,
    /// Recipients not texted because the campaign was cancelled.
    cancelled_count: i64,
    /// Legacy name of `total_count`.
    recipients_count: i64,
    /// `api` or `dashboard`.
    source: String,
    /// When a scheduled campaign starts.
    scheduled_at: Option<DateTime<Utc>>,
    /// When sending started.
    started_at: Option<DateTime<Utc>>,
    /// When the last recipient was dealt with, or the campaign was cancelled.
    completed_at: Option<DateTime<Utc>>,
    /// When `DELETE` cancelled it.
    cancelled_at: Option<DateTime<Utc>>,
    /// Created (UTC).
    created_at: DateTime<Utc>,
}

impl From<SmsCampaignWithCounts> for SmsCampaignObject {
    fn from(SmsCampaignWithCounts { campaign: c, counts }: SmsCampaignWithCounts) -> Self {
        Self {
            campaign_id: c.campaign_id,
            name: c.name,
            agent_id: c.agent_id,
            from_number: c.from_number,
            message_template: c.message_template,
            status: c.status,
            total_count: counts.total,
            delivered_count: counts.delivered,
            failed_count: counts.failed,
            pending_count: counts.pending,
            opted_out_count: counts.opted_out,
            cancelled_count: counts.cancelled,
            recipients_count: counts.total,
            source: c.source,
            scheduled_at: c.scheduled_at,
            started_at: c.started_at,
            completed_at: c.completed_at,
            cancelled_at: c.cancelled_at,
            created_at: c.created_at,
        }
    }
}

/// `POST /v1/sms/campaigns`'s answer: the campaign and the recipients it skipped.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedSmsCampaign {
    #[serde(flatten)]
    campaign: SmsCampaignObject,
    /// Recipients accepted.
    valid_count: usize,
    /// Recipients skipped.
    invalid_count: usize,
    /// The skipped recipients.
    invalid: Vec<InvalidRecipient>,
}

/// One recipient with its text's status.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SmsCampaignRecipientObject {
    /// E.164.
    phone: String,
    /// The template's values.
    variables: BTreeMap<String, String>,
    /// `pending` until sent; then the text's status (queued, sending, sent, delivered,
    /// undelivered, failed); or `opted_out`, `cancelled`.
    status: String,
    /// The text as sent.
    rendered_message: String,
    /// The logged message (`GET /v1/sms/{message_id}`).
    message_id: Option<String>,
    /// Twilio's SID.
    twilio_sid: Option<String>,
    /// Twilio's error code.
    error_code: Option<i64>,
    /// Why it failed.
    error_message: Option<String>,
    /// When Twilio accepted it.
    sent_at: Option<DateTime<Utc>>,
}

/// A campaign with a page of its recipients.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SmsCampaignDetail {
    #[serde(flatten)]
    campaign: SmsCampaignObject,
    /// Recipients in request order, paged by `recipients_limit` / `recipients_offset`.
    recipients: Vec<SmsCampaignRecipientObject>,
    /// Page size of `recipients`.
    recipients_limit: i64,
    /// Offset of `recipients`.
    recipients_offset: i64,
}

/// A page of campaigns.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SmsCampaignList {
    /// Newest first.
    campaigns: Vec<SmsCampaignObject>,
    /// Total matching.
    count: i64,
    /// Page size.
    limit: i64,
    /// Offset.
    offset: i64,
}

/// `POST …/launch`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LaunchedSmsCampaign {
    campaign_id: String,
    /// `running` (or the current status when it already ran).
    status: String,
    total_count: i64,
    pending_count: i64,
    delivered_count: i64,
    failed_count: i64,
    /// Legacy: `total_count`.
    recipients_count: i64,
    /// Legacy: recipients not yet sent.
    queued_count: i64,
}

/// `DELETE`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CancelledSmsCampaign {
    campaign_id: String,
    /// Always true.
    deleted: bool,
    /// Recipients that will not be texted.
    cancelled_count: i64,
    /// `done`: the campaign stays visible with its counts and `cancelled_at`.
    status: String,
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_campaign, list_campaigns))
        .routes(routes!(get_campaign, cancel_campaign))
        .routes(routes!(launch_campaign))
}

fn missing(field: &str) -> ApiError {
    ApiError::new(ErrorCode::MissingField, format!("`{field}` is required."))
        .detail("field", field.to_owned())
}

fn not_found(campaign_id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::CampaignNotFound,
        format!("No SMS campaign `{campaign_id}` in this account."),
    )
}

fn non_blank(value: Option<&String>) -> Option<&str> {
    value.map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// Create a bulk SMS campaign.
///
/// Renders `message_template` for every recipient (`{{variable}}` from its `variables`; missing
/// ones render empty) and texts them from `from_number` at the number's pace. `schedule_type:
/// now` starts at once (`running`); `schedule` waits for `scheduled_at` (`scheduled`).
/// Recipients who opted out (STOP) are skipped and counted in `opted_out_count`; duplicate
/// phones are texted once. Honours `Idempotency-Key`.
#[utoipa::path(
    post, path = "/v1/sms/campaigns", tag = "sms",
    request_body(content = SmsCampaignInput, description = "The campaign", content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = CreatedSmsCampaign),
        (status = 400, description = "`missing_field`, `invalid_phone_format` (with `details.invalid`), `too_many_recipients`, `invalid_schedule`, `message_too_long`, `campaign_no_recipients`, `agent_inactive`, `invalid_request`, `unknown_field`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 403, description = "`agent_not_owned`, `from_number_not_owned`", body = ErrorEnvelope),
        (status = 404, description = "`agent_not_found`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn create_campaign(
    State(state): State<AppState>,
    caller: Caller,
    Checked { input, .. }: Checked<SmsCampaignInput>,
) -> ApiResult<(StatusCode, Json<CreatedSmsCampaign>)> {
    let account_id = &caller.account.account_id;
    let agent_id = non_blank(input.agent_id.as_ref()).ok_or_else(|| missing("agent_id"))?;
    crate::routes::numbers::check_agent(&state, &caller, agent_id).await?;
    if let Some((agent, _)) = state.store().get_agent(account_id, &AgentId::from(agent_id)).await?
        && !agent.settings.is_active
    {
        return Err(ApiError::new(
            ErrorCode::AgentInactive,
            format!("Agent `{agent_id}` is inactive (`is_active: false`)."),
        ));
    }
    let from_raw = non_blank(input.from_number.as_ref()).ok_or_else(|| missing("from_number"))?;
    let from = phone::parse_e164(from_raw).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidPhoneFormat,
            format!("`from_number` must be an E.164 number like +14155552671, not `{from_raw}`."),
        )
        .detail("field", "from_number")
    })?;
    if state.store().get_number(account_id, &E164::from(from.as_str())).await?.is_none() {
        return Err(ApiError::new(
            ErrorCode::FromNumberNotOwned,
            format!("{from} is not a number imported to this account."),
        )
        .detail("field", "from_number"));
    }
    let name = non_blank(input.name.as_ref()).ok_or_else(|| missing("name"))?;
    if name.chars().count() > 200 {
        return Err(
            ApiError::invalid("`name` may have at most 200 characters.").detail("field", "name")
        );
    }
    let template = input
        .message_template
        .as_ref()
        .or(input.body.as_ref())
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| missing("message_template"))?;
    let length = template.chars().count();
    if length > MAX_SMS_CHARS {
        return Err(ApiError::new(
            ErrorCode::MessageTooLong,
            format!("`message_template` has {length} characters; the limit is {MAX_SMS_CHARS}."),
        )
        .detail("field", "message_template")
        .detail("length", length));
    }
    let recipients = input.recipients.ok_or_else(|| missing("recipients"))?;
    if recipients.len() > MAX_RECIPIENTS {
        return Err(ApiError::new(
            ErrorCode::TooManyRecipients,
            format!(
                "A campaign has at most {MAX_RECIPIENTS} recipients; this one has {}.",
                recipients.len()
            ),
        )
        .detail("field", "recipients")
        .detail("count", recipients.len()));
    }
    let now = nixflex_store::now();
    let scheduled_at = match input.schedule_type.as_deref().map(str::trim) {
        None | Some("") => return Err(missing("schedule_type")),
        Some("now") => None,
        Some("schedule") => {
            let raw = non_blank(input.scheduled_at.as_ref()).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidSchedule,
                    "`scheduled_at` (ISO-8601) is required with `schedule_type: schedule`.",
                )
                .detail("field", "scheduled_at")
            })?;
            let at = crate::routes::calls::parse_time("scheduled_at", raw).map_err(|_| {
                ApiError::new(
                    ErrorCode::InvalidSchedule,
                    format!("`scheduled_at` must be an ISO-8601 date and time, not `{raw}`."),
                )
                .detail("field", "scheduled_at")
            })?;
            Some(at)
        }
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidSchedule,
                format!("`schedule_type` must be `now` or `schedule`, not `{other}`."),
            )
            .detail("field", "schedule_type"));
        }
    };
    let skip_invalid = input.skip_invalid.unwrap_or(false);
    let mut valid = Vec::with_capacity(recipients.len());
    let mut invalid = Vec::new();
    let mut seen = HashSet::with_capacity(recipients.len());
    for (row_index, r) in recipients.into_iter().enumerate() {
        let raw = r.phone.or(r.phone_number).unwrap_or_default();
        let Some(phone) = phone::parse_e164(raw.trim()) else {
            invalid.push(InvalidRecipient {
                phone: raw,
                reason: "invalid_phone_format".to_owned(),
                row_index,
            });
            continue;
        };
        if !seen.insert(phone.clone()) {
            invalid.push(InvalidRecipient { phone, reason: "duplicate".to_owned(), row_index });
            continue;
        }
        let variables = r.variables.unwrap_or_default();
        let rendered = render_template(template, &variables);
        if rendered.chars().count() > MAX_SMS_CHARS {
            invalid.push(InvalidRecipient {
                phone,
                reason: "message_too_long".to_owned(),
                row_index,
            });
            continue;
        }
        valid.push(NewSmsRecipient { phone, variables, rendered_message: rendered });
    }
    let rejected = invalid.iter().filter(|i| i.reason != "duplicate").count();
    if rejected > 0 && !skip_invalid {
        let first = invalid.iter().find(|i| i.reason != "duplicate");
        return Err(ApiError::new(
            ErrorCode::InvalidPhoneFormat,
            format!(
                "{rejected} recipient(s) cannot be texted (the first at row {}); fix them or pass `skip_invalid: true`.",
                first.map_or(0, |i| i.row_index)
            ),
        )
        .detail("field", "recipients")
        .detail("invalid", serde_json::to_value(&invalid).unwrap_or(Value::Null)));
    }
    if valid.is_empty() {
        return Err(ApiError::new(
            ErrorCode::CampaignNoRecipients,
            "The campaign has no valid recipient.",
        )
        .detail("invalid", serde_json::to_value(&invalid).unwrap_or(Value::Null)));
    }
    let campaign = SmsCampaign {
        campaign_id: nixflex_core::ids::new_sms_campaign_id(),
        account_id: account_id.clone(),
        agent_id: agent_id.to_owned(),
        from_number: from,
        name: name.to_owned(),
        message_template: template.clone(),
        status: if scheduled_at.is_some() { "scheduled" } else { "running" }.to_owned(),
        source: "api".to_owned(),
        scheduled_at,
        started_at: scheduled_at.is_none().then_some(now),
        completed_at: None,
        cancelled_at: None,
        created_at: now,
        updated_at: now,
    };
    let job = campaign_job(&campaign.campaign_id, scheduled_at.unwrap_or(now), JOB_ATTEMPTS);
    state.store().create_sms_campaign(&campaign, &valid, &job).await?;
    state.engine().wake_follow_ups();
    let created = state
        .store()
        .get_sms_campaign(account_id, &campaign.campaign_id)
        .await?
        .ok_or_else(|| not_found(&campaign.campaign_id))?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedSmsCampaign {
            campaign: created.into(),
            valid_count: valid.len(),
            invalid_count: invalid.len(),
            invalid,
        }),
    ))
}

/// List SMS campaigns, newest first, with live counts.
#[utoipa::path(
    get, path = "/v1/sms/campaigns", tag = "sms",
    params(("limit" = Option<i64>, Query, description = "Page size, default 25, max 100"),
           ("offset" = Option<i64>, Query, description = "Rows to skip"),
           ("agent_id" = Option<String>, Query, description = "Only this agent's campaigns"),
           ("status" = Option<String>, Query, description = "draft, scheduled, running, done or failed")),
    responses(
        (status = 200, description = "A page of campaigns", body = SmsCampaignList),
        (status = 400, description = "`invalid_request`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn list_campaigns(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
) -> ApiResult<Json<SmsCampaignList>> {
    let page = query.page()?;
    let status = query.get("status").filter(|s| !s.is_empty());
    if let Some(status) = status
        && !matches!(status, "draft" | "scheduled" | "running" | "done" | "failed")
    {
        return Err(ApiError::invalid(format!(
            "`status` must be draft, scheduled, running, done or failed, not `{status}`."
        ))
        .detail("field", "status"));
    }
    let agent_id = query.get("agent_id").filter(|s| !s.is_empty());
    let (campaigns, count) = state
        .store()
        .list_sms_campaigns(&caller.account.account_id, agent_id, status, page)
        .await?;
    Ok(Json(SmsCampaignList {
        campaigns: campaigns.into_iter().map(Into::into).collect(),
        count,
        limit: page.limit,
        offset: page.offset,
    }))
}

fn recipients_page(query: &QueryPairs) -> ApiResult<Page> {
    let number = |name: &str, default: i64, min: i64, max: i64| -> ApiResult<i64> {
        match query.get(name).map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if n >= min => Ok(n.min(max)),
                _ => Err(ApiError::invalid(format!(
                    "`{name}` must be an integer of at least {min}, not `{raw}`."
                ))
                .detail("field", name.to_owned())),
            },
        }
    };
    Ok(Page {
        limit: number("recipients_limit", 100, 1, 1000)?,
        offset: number("recipients_offset", 0, 0, i64::MAX)?,
    })
}

/// One SMS campaign with live counts and a page of its recipients.
#[utoipa::path(
    get, path = "/v1/sms/campaigns/{campaign_id}", tag = "sms",
    params(("campaign_id" = String, Path, description = "`smsc_…`"),
           ("recipients_limit" = Option<i64>, Query, description = "Recipients per page, default 100, max 1000"),
           ("recipients_offset" = Option<i64>, Query, description = "Recipients to skip")),
    responses(
        (status = 200, description = "The campaign", body = SmsCampaignDetail),
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
) -> ApiResult<Json<SmsCampaignDetail>> {
    let page = recipients_page(&query)?;
    let campaign = state
        .store()
        .get_sms_campaign(&caller.account.account_id, &campaign_id)
        .await?
        .ok_or_else(|| not_found(&campaign_id))?;
    let recipients = state.store().list_sms_campaign_recipients(&campaign_id, page).await?;
    Ok(Json(SmsCampaignDetail {
        campaign: campaign.into(),
        recipients: recipients
            .into_iter()
            .map(|v| SmsCampaignRecipientObject {
                phone: v.recipient.phone,
                variables: v.recipient.variables,
                status: v.status,
                rendered_message: v.recipient.rendered_message,
                message_id: v.message_id,
                twilio_sid: v.twilio_sid,
                error_code: v.error_code,
                error_message: v.error_message,
                sent_at: v.recipient.sent_at,
            })
            .collect(),
        recipients_limit: page.limit,
        recipients_offset: page.offset,
    }))
}

/// Launch a draft or scheduled campaign now.
///
/// A running campaign is left as it is (the answer shows its status).
#[utoipa::path(
    post, path = "/v1/sms/campaigns/{campaign_id}/launch", tag = "sms",
    params(("campaign_id" = String, Path, description = "`smsc_…`")),
    responses(
        (status = 200, description = "Running", body = LaunchedSmsCampaign),
        (status = 400, description = "`campaign_already_done`, `campaign_no_recipients`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`campaign_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn launch_campaign(
    State(state): State<AppState>,
    caller: Caller,
    Path(campaign_id): Path<String>,
) -> ApiResult<Json<LaunchedSmsCampaign>> {
    let account_id = &caller.account.account_id;
    let campaign = state
        .store()
        .get_sms_campaign(account_id, &campaign_id)
        .await?
        .ok_or_else(|| not_found(&campaign_id))?;
    match campaign.campaign.status.as_str() {
        "done" | "failed" => {
            return Err(ApiError::new(
                ErrorCode::CampaignAlreadyDone,
                format!("Campaign `{campaign_id}` has finished ({}).", campaign.campaign.status),
            ));
        }
        _ if campaign.counts.total == 0 => {
            return Err(ApiError::new(
                ErrorCode::CampaignNoRecipients,
                format!("Campaign `{campaign_id}` has no recipients."),
            ));
        }
        "draft" | "scheduled" => {
            let now = nixflex_store::now();
            if state
                .store()
                .launch_sms_campaign(&campaign_id, &campaign_job_key(&campaign_id), now)
                .await?
            {
                state.engine().wake_follow_ups();
            }
        }
        _ => {}
    }
    let c = state
        .store()
        .get_sms_campaign(account_id, &campaign_id)
        .await?
        .ok_or_else(|| not_found(&campaign_id))?;
    Ok(Json(LaunchedSmsCampaign {
        campaign_id: c.campaign.campaign_id,
        status: c.campaign.status,
        total_count: c.counts.total,
        pending_count: c.counts.pending,
        delivered_count: c.counts.delivered,
        failed_count: c.counts.failed,
        recipients_count: c.counts.total,
        queued_count: c.counts.pending,
    }))
}

/// Cancel a campaign.
///
/// Scheduled: nothing is sent. Running: no further text is sent (texts already handed to
/// Twilio may still go out). The campaign stays visible as `done` with `cancelled_at` and its
/// counts; `cancelled_count` recipients will not be texted. A finished campaign answers
/// `campaign_already_done`.
#[utoipa::path(
    delete, path = "/v1/sms/campaigns/{campaign_id}", tag = "sms",
    params(("campaign_id" = String, Path, description = "`smsc_…`")),
    responses(
        (status = 200, description = "Cancelled", body = CancelledSmsCampaign),
        (status = 400, description = "`campaign_already_done`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`campaign_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn cancel_campaign(
    State(state): State<AppState>,
    caller: Caller,
    Path(campaign_id): Path<String>,
) -> ApiResult<Json<CancelledSmsCampaign>> {
    if state.store().get_sms_campaign(&caller.account.account_id, &campaign_id).await?.is_none() {
        return Err(not_found(&campaign_id));
    }
    match state.store().cancel_sms_campaign(&campaign_id, nixflex_store::now()).await? {
        Some(cancelled_count) => Ok(Json(CancelledSmsCampaign {
            campaign_id,
            deleted: true,
            cancelled_count,
            status: "done".to_owned(),
        })),
        None => Err(ApiError::new(
            ErrorCode::CampaignAlreadyDone,
            format!("Campaign `{campaign_id}` has already finished."),
        )),
    }
}
