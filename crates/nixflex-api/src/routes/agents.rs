//! Agents (API.md §3): create, list, get, update (partial, all-or-nothing), delete.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use nixflex_core::agent::{Agent, AgentSettings};
use nixflex_core::error::ErrorCode;
use nixflex_core::ids;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, JsonObject, QueryPairs};
use crate::openapi::ErrorEnvelope;
use crate::state::AppState;

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
            agent_id: agent.agent_id,
            api_key_id: agent.api_key_id,
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
/// defaults. camelCase aliases and legacy fields are accepted; unknown fields are ignored.
#[utoipa::path(
    post, path = "/v1/agents", tag = "agents",
    request_body(content = AgentSettings, description = "Any subset of the agent's settable fields", content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = AgentObject),
        (status = 400, description = "`invalid_request`, `invalid_json`, `prompt_too_long`, `invalid_voice_id`, `invalid_language`, `invalid_phone_format`, `voicemail_message_required`", body = ErrorEnvelope),
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
    JsonObject(body): JsonObject,
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
) -> ApiResult<Json<AgentList>> {
    let page = query.page()?;
    let is_active = query.bool("is_active")?;
    let (agents, count) =
        state.store().list_agents(&caller.account.account_id, is_active, page).await?;
    Ok(Json(AgentList {
        agents: agents.into_iter().map(AgentObject::from).collect(),
        count,
        limit: page.limit,
        offset: page.offset,
    }))
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
) -> ApiResult<Json<AgentObject>> {
    let (agent, _) = state
        .store()
        .get_agent(&caller.account.account_id, &agent_id)
        .await?
        .ok_or_else(|| not_found(&agent_id))?;
    Ok(Json(agent.into()))
}

/// Update an agent. Only the supplied fields change; `null` clears nullable fields; any invalid
/// value rejects the whole update. `agent_id`, `api_key_id` and unknown fields are ignored.
/// Calls in progress keep the settings they started with.
#[utoipa::path(
    put, path = "/v1/agents/{agent_id}", tag = "agents",
    params(("agent_id" = String, Path, description = "The agent id")),
    request_body(content = AgentSettings, description = "Any subset of the agent's settable fields", content_type = "application/json"),
    responses(
        (status = 200, description = "The updated agent", body = AgentObject),
        (status = 400, description = "`invalid_request`, `invalid_json`, `prompt_too_long`, `invalid_voice_id`, `invalid_language`, `invalid_phone_format`, `voicemail_message_required`", body = ErrorEnvelope),
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
    JsonObject(body): JsonObject,
) -> ApiResult<Json<AgentObject>> {
    // One write transaction holding the agent's row: concurrent updates queue and all land.
    let rules = state.config().agent_rules();
    let mut edit = |current: &Agent| {
        let settings = current.settings.apply_patch(body.clone(), rules)?;
        Ok(Agent { settings, updated_at: nixflex_store::now(), ..current.clone() })
    };
    match state.store().modify_agent(&caller.account.account_id, &agent_id, &mut edit).await? {
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
    if !state.store().delete_agent(&caller.account.account_id, &agent_id).await? {
        return Err(not_found(&agent_id));
    }
    tracing::info!(message = "Agent deleted.", agent_id = %agent_id);
    Ok(Json(AgentDeleted { agent_id, deleted: true }))
}
