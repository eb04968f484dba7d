//! Agents (docs/api.md#agents): create, list, get, update (partial, all-or-nothing), delete.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use nixflex_core::agent::{
    Agent, AgentSettings, ExtractionType, MAX_EXTRACTION_FIELDS, MAX_FUNCTIONS, MAX_SYSTEM_PROMPT,
    RecordingSource, ResponseLength, TransferType,
};
use nixflex_core::error::ErrorCode;
use nixflex_core::ids;
use nixflex_core::ids::AgentId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Checked, QueryPairs};
use crate::openapi::ErrorEnvelope;
use crate::state::AppState;

/// The settable fields of an agent, for create and update. Every field is optional: create fills
/// in the documented defaults, update changes only what is given. `null` clears the nullable
/// fields. camelCase spellings are accepted; so are the legacy `extraction_schema` (mapped to text
/// `data_extraction_fields`) and `voice_speed` (ignored), and the read-only `agent_id`,
/// `api_key_id`, `created_at`, `updated_at` of a fetched agent (ignored). Any other field is
/// refused with `unknown_field`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Read by serde (type checking) and utoipa; handlers validate the fields.
pub(crate) struct AgentInput {
    /// Display name.
    #[schema(value_type = String, required = false, min_length = 1, max_length = 100, pattern = r"\S")]
    name: Option<String>,
    /// Instructions for the LLM (over 16,000 characters: `prompt_too_long`).
    #[schema(value_type = String, required = false, max_length = 16000)]
    system_prompt: Option<String>,
    /// First words of the call.
    #[schema(value_type = String, required = false, max_length = 1000)]
    welcome_message: Option<String>,
    /// A `voice_id` of `GET /v1/voices` (case-insensitive).
    #[schema(value_type = String, required = false)]
    voice_id: Option<String>,
    /// A `code` of `GET /v1/languages` (case-insensitive), or `multi`.
    #[schema(value_type = String, required = false)]
    language: Option<String>,
    /// IANA time zone, e.g. `Europe/London`.
    #[schema(value_type = String, required = false)]
    timezone: Option<String>,
    /// Inactive agents do not take calls.
    #[schema(value_type = bool, required = false)]
    is_active: Option<bool>,
    /// LLM sampling temperature.
    #[schema(value_type = f64, required = false, minimum = 0, maximum = 1)]
    temperature: Option<f64>,
    /// How long the agent's answers are.
    #[schema(value_type = ResponseLength, required = false)]
    response_length: Option<String>,
    /// The agent greets first.
    #[schema(value_type = bool, required = false)]
    ai_speaks_first: Option<bool>,
    /// Let the LLM write the greeting.
    #[schema(value_type = bool, required = false)]
    dynamic_greeting: Option<bool>,
    /// 0–100, or `low`/`medium`/`high` (25/50/75).
    #[schema(schema_with = interruption_schema, required = false)]
    interruption_sensitivity: Option<Value>,
    /// Silence (ms) after the caller speaks that ends their turn.
    #[schema(value_type = u16, required = false, minimum = 0, maximum = 1000)]
    response_eagerness: Option<f64>,
    /// Comma-separated keywords for speech recognition (fewer than 50, each ≤ 100 chars).
    boosted_keywords: Option<String>,
    /// Seconds the agent waits for the callee on outbound calls.
    #[schema(value_type = u8, required = false, minimum = 5, maximum = 30)]
    pickup_delay: Option<f64>,
    /// Hard limit of a call, in seconds.
    #[schema(value_type = u32, required = false, minimum = 60, maximum = 1800)]
    max_call_duration_seconds: Option<f64>,
    /// Silence (seconds) before the agent hangs up.
    #[schema(value_type = u32, required = false, minimum = 5, maximum = 45)]
    silence_hangup_seconds: Option<f64>,
    /// Record calls.
    #[schema(value_type = bool, required = false)]
    record_call: Option<bool>,
    /// Who records.
    #[schema(value_type = RecordingSource, required = false)]
    recording_source: Option<String>,
    /// Carrier answering-machine detection.
    #[schema(value_type = bool, required = false)]
    amd_enabled: Option<bool>,
    /// Keypad input; `null` lets the number decide.
    dtmf_enabled: Option<bool>,
    /// Leave `voicemail_message` on voicemail (then `voicemail_message` is required).
    #[schema(value_type = bool, required = false)]
    voicemail_leave_enabled: Option<bool>,
    /// Spoken on voicemail.
    #[schema(max_length = 2000)]
    voicemail_message: Option<String>,
    /// Post-call webhook (public https URL).
    #[schema(max_length = 2048, format = "uri")]
    webhook_url: Option<String>,
    /// The agent may end the call.
    #[schema(value_type = bool, required = false)]
    func_end_call: Option<bool>,
    /// Stored, not enforced.
    func_send_sms: Option<bool>,
    /// Stored, not enforced.
    func_cold_transfer: Option<bool>,
    /// How calls are transferred.
    #[schema(value_type = TransferType, required = false)]
    transfer_type: Option<String>,
    /// E.164 transfer target.
    #[schema(pattern = r"^\+[1-9][0-9]{6,14}$")]
    transfer_number: Option<String>,
    /// Whispered to the transfer target.
    #[schema(max_length = 1000)]
    transfer_whisper: Option<String>,
    /// Speech rate; values outside 0.5–1.5 are clamped.
    speaking_rate: Option<f64>,
    /// Greet known callers by name.
    #[schema(value_type = bool, required = false)]
    greet_by_name: Option<bool>,
    /// Said when the agent did not understand.
    #[schema(value_type = String, required = false, min_length = 1, max_length = 1000, pattern = r"\S")]
    fallback_message: Option<String>,
    /// Text the caller after the call.
    #[schema(value_type = bool, required = false)]
    post_call_sms_enabled: Option<bool>,
    /// The post-call text.
    #[schema(max_length = 1600)]
    post_call_sms_template: Option<String>,
    /// Texting during calls.
    #[schema(value_type = bool, required = false)]
    incall_sms_enabled: Option<bool>,
    /// What to extract after each call.
    #[schema(value_type = Vec<ExtractionFieldInput>, required = false, max_items = 25)]
    data_extraction_fields: Option<Vec<ExtractionFieldInput>>,
    /// Custom functions the LLM may call.
    #[schema(value_type = Vec<FunctionInput>, required = false, max_items = 20)]
    functions: Option<Vec<FunctionInput>>,
    /// `false` silences SMS auto-replies on all the agent's numbers.
    #[schema(value_type = bool, required = false)]
    enable_sms_reply: Option<bool>,
    /// The LLM model name.
    #[schema(value_type = String, required = false, min_length = 1, max_length = 100, pattern = r"\S")]
    llm_model: Option<String>,
    // Accepted, not documented: legacy aliases and the read-only fields of a fetched agent.
    #[schema(ignore)]
    extraction_schema: Option<Value>,
    #[schema(ignore)]
    voice_speed: Option<Value>,
    #[schema(ignore)]
    agent_id: Option<Value>,
    #[schema(ignore)]
    api_key_id: Option<Value>,
    #[schema(ignore)]
    created_at: Option<Value>,
    #[schema(ignore)]
    updated_at: Option<Value>,
}

/// One post-call extraction field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct ExtractionFieldInput {
    /// Field type.
    #[serde(rename = "type")]
    #[schema(value_type = ExtractionType, required = true)]
    kind: Option<String>,
    /// Key in `extracted_data`, unique.
    #[schema(value_type = String, required = true, pattern = r"^[a-z][a-z0-9_]{0,63}$")]
    name: Option<String>,
    /// Instruction for the extractor.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 1000, pattern = r"\S")]
    description: Option<String>,
    /// Whether the value may be missing (default false).
    optional: Option<bool>,
    /// Allowed values: required for `selector`, refused otherwise.
    #[schema(min_items = 1, max_items = 50)]
    choices: Option<Vec<String>>,
    /// Example of the expected format (`text` only).
    #[serde(alias = "formatExample")]
    #[schema(max_length = 200)]
    format_example: Option<String>,
}

/// A custom function the LLM may call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct FunctionInput {
    /// Tool name, unique.
    #[schema(value_type = String, required = true, pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    name: Option<String>,
    /// What it does (read by the LLM).
    #[schema(value_type = String, required = true, min_length = 1, max_length = 1000, pattern = r"\S")]
    description: Option<String>,
    /// Public https endpoint called with the arguments.
    #[schema(value_type = String, required = true, format = "uri")]
    url: Option<String>,
    /// Always POST (the default).
    #[schema(value_type = String, required = false, pattern = "^[Pp][Oo][Ss][Tt]$")]
    method: Option<String>,
    /// JSON Schema (`"type": "object"`) of the arguments.
    #[schema(value_type = Object, required = false)]
    parameters: Option<Map<String, Value>>,
}

fn interruption_schema() -> impl Into<RefOr<Schema>> {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).maximum(Some(100)))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["low", "medium", "high"])),
        )
        .description(Some("0–100, or low, medium, high (25, 50, 75)"))
}

// The schema attributes above need literals; this keeps them equal to the limits enforced.
const _: () =
    assert!(MAX_SYSTEM_PROMPT == 16_000 && MAX_EXTRACTION_FIELDS == 25 && MAX_FUNCTIONS == 20);

/// An agent: its ids, every setting, and timestamps.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AgentObject {
    /// `agent_` + 16 hex; immutable.
    pub(crate) agent_id: String,
    /// The key that created the agent; immutable.
    pub(crate) api_key_id: String,
    /// Every setting.
    #[serde(flatten)]
    pub(crate) settings: AgentSettings,
    /// Creation time (UTC).
    pub(crate) created_at: DateTime<Utc>,
    /// Last update (UTC).
    pub(crate) updated_at: DateTime<Utc>,
}

impl From<Agent> for AgentObject {
    fn from(agent: Agent) -> Self {
        Self {
            agent_id: agent.agent_id.into(),
            api_key_id: agent.api_key_id.into(),
            settings: agent.settings,
            created_at: agent.created_at,
            updated_at: agent.updated_at,
        }
    }
}

/// A page of agents.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AgentList {
    /// Agents, newest first.
    pub(crate) agents: Vec<AgentObject>,
    /// Total matching agents.
    pub(crate) count: i64,
    /// Page size.
    pub(crate) limit: i64,
    /// Offset.
    pub(crate) offset: i64,
}

/// Confirmation of a deletion.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AgentDeleted {
    /// The deleted agent.
    pub(crate) agent_id: String,
    /// Always true.
    pub(crate) deleted: bool,
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_agent, list_agents)).routes(routes!(
        get_agent,
        update_agent,
        delete_agent
    ))
}

fn not_found(agent_id: &str) -> ApiError {
    ApiError::new(ErrorCode::AgentNotFound, format!("No agent `{agent_id}` in this account."))
}

/// Create an agent. Every field is optional: `{}` yields a working agent with the documented
/// defaults. camelCase aliases and legacy fields are accepted; unknown fields are refused.
#[utoipa::path(
    post, path = "/v1/agents", tag = "agents",
    request_body(content = AgentInput, description = "Any subset of the agent's settable fields", content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = AgentObject),
        (status = 400, description = "`invalid_request`, `invalid_json`, `unknown_field`, `prompt_too_long`, `invalid_voice_id`, `invalid_language`, `invalid_phone_format`, `voicemail_message_required`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 413, description = "`request_too_large`", body = ErrorEnvelope),
        (status = 415, description = "`unsupported_media_type`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn create_agent(
    State(state): State<AppState>,
    caller: Caller,
    Checked { fields: body, .. }: Checked<AgentInput>,
) -> ApiResult<(StatusCode, Json<AgentObject>)> {
    let settings = AgentSettings::default().apply_patch(body, state.config().agent_rules())?;
    let now = nixflex_store::now();
    let agent = Agent {
        agent_id: ids::new_agent_id(),
        account_id: caller.account.account_id.clone(),
        api_key_id: caller.key_id.clone(),
        settings,
        created_at: now,
        updated_at: now,
    };
    state.store().insert_agent(&agent).await?;
    tracing::info!(message = "Agent created.", agent_id = %agent.agent_id, account_id = %agent.account_id);
    Ok((StatusCode::CREATED, Json(agent.into())))
}

/// List agents, newest first. Active and inactive agents are listed; `is_active` filters.
#[utoipa::path(
    get, path = "/v1/agents", tag = "agents",
    params(("limit" = Option<i64>, Query, description = "Page size, default 25, max 100 (larger values are clamped)"),
           ("offset" = Option<i64>, Query, description = "Rows to skip, default 0"),
           ("is_active" = Option<bool>, Query, description = "Only active (true) or inactive (false) agents")),
    responses(
        (status = 200, description = "A page of agents", body = AgentList),
        (status = 400, description = "`invalid_request` (bad limit, offset or is_active)", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn list_agents(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
) -> ApiResult<Response> {
    let page = query.page()?;
    let is_active = query.bool("is_active")?;
    let account_id = &caller.account.account_id;
    // Ids and versions first; only agents whose current version is not encoded yet are read
    // and encoded (docs/decisions.md#api-line-rate).
    let (versions, count) = state.store().list_agent_versions(account_id, is_active, page).await?;
    let cache = state.agent_json();
    let mut bodies: Vec<Option<Bytes>> =
        versions.iter().map(|(agent_id, version)| cache.get(agent_id.as_str(), *version)).collect();
    let missing: Vec<AgentId> = versions
        .iter()
        .zip(&bodies)
        .filter(|(_, body)| body.is_none())
        .map(|((agent_id, _), _)| agent_id.clone())
        .collect();
    if !missing.is_empty() {
        let mut encoded = HashMap::with_capacity(missing.len());
        for (agent, version) in state.store().get_agents(account_id, &missing).await? {
            let agent_id = agent.agent_id.to_string();
            let json = encode_agent(agent)?;
            cache.put(&agent_id, version, json.clone());
            encoded.insert(agent_id, json);
        }
        for ((agent_id, _), body) in versions.iter().zip(bodies.iter_mut()) {
            if body.is_none() {
                // None again when it was deleted in between: it is left out of the page.
                *body = encoded.remove(agent_id.as_str());
            }
        }
    }
    // The bytes `Json(AgentList { .. })` would write: the same encoder, the same field order.
    let mut json = Vec::with_capacity(bodies.iter().flatten().map(Bytes::len).sum::<usize>() + 64);
    json.extend_from_slice(b"{\"agents\":[");
    for (i, body) in bodies.iter().flatten().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.extend_from_slice(body);
    }
    json.extend_from_slice(
        format!("],\"count\":{count},\"limit\":{},\"offset\":{}}}", page.limit, page.offset)
            .as_bytes(),
    );
    Ok(json_response(Bytes::from(json)))
}

/// An agent object's JSON.
fn encode_agent(agent: Agent) -> ApiResult<Bytes> {
    serde_json::to_vec(&AgentObject::from(agent))
        .map(Bytes::from)
        .map_err(|error| ApiError::internal(anyhow::Error::new(error).context("encoding an agent")))
}

/// A 200 with a JSON body encoded already.
fn json_response(json: Bytes) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json).into_response()
}

/// Get an agent. Another account's agent is reported as not found.
#[utoipa::path(
    get, path = "/v1/agents/{agent_id}", tag = "agents",
    params(("agent_id" = String, Path, description = "The agent id")),
    responses(
        (status = 200, description = "The agent", body = AgentObject),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`agent_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn get_agent(
    State(state): State<AppState>,
    caller: Caller,
    Path(agent_id): Path<String>,
) -> ApiResult<Response> {
    let id = AgentId::from(agent_id.as_str());
    let account_id = &caller.account.account_id;
    // The version alone, then the encoded agent if this node has it at that version
    // (docs/decisions.md#api-line-rate).
    let version =
        state.store().agent_version(account_id, &id).await?.ok_or_else(|| not_found(&agent_id))?;
    if let Some(json) = state.agent_json().get(id.as_str(), version) {
        return Ok(json_response(json));
    }
    let (agent, version) =
        state.store().get_agent(account_id, &id).await?.ok_or_else(|| not_found(&agent_id))?;
    let json = encode_agent(agent)?;
    state.agent_json().put(id.as_str(), version, json.clone());
    Ok(json_response(json))
}

/// Update an agent. Only the supplied fields change; `null` clears nullable fields; any invalid
/// value rejects the whole update. `agent_id`, `api_key_id` are ignored; unknown fields are refused.
/// Calls in progress keep the settings they started with.
#[utoipa::path(
    put, path = "/v1/agents/{agent_id}", tag = "agents",
    params(("agent_id" = String, Path, description = "The agent id")),
    request_body(content = AgentInput, description = "Any subset of the agent's settable fields", content_type = "application/json"),
    responses(
        (status = 200, description = "The updated agent", body = AgentObject),
        (status = 400, description = "`invalid_request`, `invalid_json`, `unknown_field`, `prompt_too_long`, `invalid_voice_id`, `invalid_language`, `invalid_phone_format`, `voicemail_message_required`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`agent_not_found`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 413, description = "`request_too_large`", body = ErrorEnvelope),
        (status = 415, description = "`unsupported_media_type`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn update_agent(
    State(state): State<AppState>,
    caller: Caller,
    Path(agent_id): Path<String>,
    Checked { fields: body, .. }: Checked<AgentInput>,
) -> ApiResult<Json<AgentObject>> {
    // Read, patch, write if unchanged, else again (docs/decisions.md#api-line-rate): concurrent
    // updates all land, each on the one before it.
    let rules = state.config().agent_rules();
    let mut edit = |current: &Agent| {
        let settings = current.settings.apply_patch(body.clone(), rules)?;
        Ok(Agent { settings, updated_at: nixflex_store::now(), ..current.clone() })
    };
    let id = AgentId::from(agent_id.as_str());
    match state.store().modify_agent(&caller.account.account_id, &id, &mut edit).await? {
        Some(Ok(updated)) => Ok(Json(updated.into())),
        Some(Err(invalid)) => Err(invalid.into()),
        None => Err(not_found(&agent_id)),
    }
}

/// Delete an agent, permanently. Calls in progress finish; past calls stay readable; numbers
/// attached to it stop routing calls until re-attached.
#[utoipa::path(
    delete, path = "/v1/agents/{agent_id}", tag = "agents",
    params(("agent_id" = String, Path, description = "The agent id")),
    responses(
        (status = 200, description = "Deleted", body = AgentDeleted),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`agent_not_found`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn delete_agent(
    State(state): State<AppState>,
    caller: Caller,
    Path(agent_id): Path<String>,
) -> ApiResult<Json<AgentDeleted>> {
    if !state
        .store()
        .delete_agent(&caller.account.account_id, &AgentId::from(agent_id.as_str()))
        .await?
    {
        return Err(not_found(&agent_id));
    }
    state.agent_json().forget(&agent_id);
    tracing::info!(message = "Agent deleted.", agent_id = %agent_id);
    Ok(Json(AgentDeleted { agent_id, deleted: true }))
}
