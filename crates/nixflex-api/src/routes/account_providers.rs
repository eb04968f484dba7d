//! The account's own LLM (`/v1/account/llm`) and speech provider (`/v1/account/tts`) —
//! docs/providers.md#bring-your-own-llm-and-tts. Settings are checked with a real request
//! before anything is saved (a completion with a tool-calling round trip; one short synthesis);
//! settings that fail are refused and never stored. Keys are sealed under the master key and
//! never returned or logged.

use axum::Json;
use axum::extract::State;
use nixflex_core::error::ErrorCode;
use nixflex_core::validate::{ValidationError, check_len, outbound_url};
use nixflex_engine::byo::{ByoTtsKind, CheckFailed};
use nixflex_store::{AccountLlm, AccountTts};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Checked};
use crate::openapi::ErrorEnvelope;
use crate::state::AppState;

/// How long the test request may take before it counts as failed.
const VERIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(put_llm, get_llm, delete_llm))
        .routes(routes!(put_tts, get_tts, delete_tts))
}

/// `PUT /v1/account/llm`: your own OpenAI-compatible LLM.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ByoLlmInput {
    /// The server's https base URL, including `/v1` (requests go to `{endpoint}/chat/completions`).
    #[schema(value_type = String, min_length = 1, max_length = 2048)]
    endpoint: Option<String>,
    /// The model name sent with every request.
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    model: Option<String>,
    /// API key (stored encrypted, never returned).
    #[schema(value_type = String, min_length = 1, max_length = 4096)]
    api_key: Option<String>,
}

/// `PUT /v1/account/tts`: your own TTS provider.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ByoTtsInput {
    /// `elevenlabs` or `cartesia`.
    #[schema(value_type = String, pattern = "^(elevenlabs|cartesia)$")]
    provider: Option<String>,
    /// The provider's voice id (letters, digits, `_` and `-`).
    #[schema(value_type = String, min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9_-]+$")]
    voice_id: Option<String>,
    /// API key (stored encrypted, never returned).
    #[schema(value_type = String, min_length = 1, max_length = 4096)]
    api_key: Option<String>,
}

/// The account's LLM, as saved.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LlmSaved {
    /// Always true.
    ok: bool,
    /// Always true: phone calls of this account use this model.
    byo_llm_enabled: bool,
    /// The base URL.
    endpoint: String,
    /// The model.
    model: String,
    /// Always true: the test request succeeded before the settings were saved.
    verified: bool,
}

/// The account's LLM settings (never the key).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LlmView {
    /// Whether calls use the account's own LLM.
    byo_llm_enabled: bool,
    /// The base URL.
    endpoint: Option<String>,
    /// The model.
    model: Option<String>,
    /// When the test request last succeeded.
    verified_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The account's speech provider, as saved.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TtsSaved {
    /// Always true.
    ok: bool,
    /// Always true: phone calls of this account speak with this voice.
    byo_tts_enabled: bool,
    /// `elevenlabs` or `cartesia`.
    provider: String,
    /// The provider's voice id.
    voice_id: String,
    /// Always true: the test synthesis succeeded before the settings were saved.
    verified: bool,
}

/// The account's speech provider settings (never the key).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TtsView {
    /// Whether calls use the account's own voice.
    byo_tts_enabled: bool,
    /// `elevenlabs` or `cartesia`.
    provider: Option<String>,
    /// The provider's voice id.
    voice_id: Option<String>,
    /// When the test synthesis last succeeded.
    verified_at: Option<chrono::DateTime<chrono::Utc>>,
}

fn required(value: Option<&str>, name: &str, max: usize) -> ApiResult<String> {
    let value = value.map(str::trim).unwrap_or_default();
    if value.is_empty() {
        return Err(ValidationError::missing(name).into());
    }
    check_len(name, value, max, ErrorCode::InvalidRequest)?;
    Ok(value.to_owned())
}

fn refused(code: ErrorCode, what: &str, reason: String) -> ApiError {
    ApiError::new(code, format!("{what}, so the settings were not saved.")).detail("reason", reason)
}

async fn within_timeout(
    check: impl Future<Output = Result<(), CheckFailed>>,
) -> Result<(), String> {
    match tokio::time::timeout(VERIFY_TIMEOUT, check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(CheckFailed(reason))) => Err(reason),
        Err(_) => Err(format!("no answer within {} s", VERIFY_TIMEOUT.as_secs())),
    }
}

/// Use your own OpenAI-compatible LLM for this account's calls. The settings are checked first
/// with a real completion in which the model must call a tool, then the tool's result sent back
/// (a model without tool calling is refused); settings that fail are never stored.
#[utoipa::path(
    put, path = "/v1/account/llm", tag = "account",
    request_body(content = ByoLlmInput, description = "Endpoint, model and key"),
    responses(
        (status = 200, description = "Saved and verified", body = LlmSaved),
        (status = 400, description = "`missing_field`, `invalid_request` (e.g. the endpoint is not a public https URL), `unknown_field`, `llm_verification_failed` (`details.reason` says what the server answered)", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn put_llm(
    State(state): State<AppState>,
    caller: Caller,
    body: Checked<ByoLlmInput>,
) -> ApiResult<Json<LlmSaved>> {
    let input = &body.input;
    let endpoint = required(input.endpoint.as_deref(), "endpoint", 2048)?;
    outbound_url("endpoint", &endpoint, state.config().allow_private_targets)?;
    let model = required(input.model.as_deref(), "model", 200)?;
    let api_key = required(input.api_key.as_deref(), "api_key", 4096)?;
    let engine = state.engine();
    let failed = |reason| {
        refused(ErrorCode::LlmVerificationFailed, "The LLM failed the test request", reason)
    };
    let llm = engine
        .build_account_llm(&endpoint, &model, SecretString::from(api_key.clone()))
        .map_err(|error| failed(error.to_string()))?;
    within_timeout(engine.check_account_llm(llm.as_ref())).await.map_err(failed)?;
    let now = nixflex_store::now();
    let account_id = caller.account.account_id.clone();
    let created_at =
        state.store().account_llm(&account_id).await?.map_or(now, |existing| existing.created_at);
    state
        .store()
        .put_account_llm(&AccountLlm {
            account_id: account_id.clone(),
            endpoint: endpoint.clone(),
            model: model.clone(),
            api_key_sealed: state.secrets().seal(&api_key),
            verified_at: now,
            created_at,
            updated_at: now,
        })
        .await?;
    engine.forget_account_providers(&account_id);
    Ok(Json(LlmSaved { ok: true, byo_llm_enabled: true, endpoint, model, verified: true }))
}

/// The account's LLM settings (the key is never returned).
#[utoipa::path(
    get, path = "/v1/account/llm", tag = "account",
    responses(
        (status = 200, description = "The settings; `byo_llm_enabled: false` and nulls without one", body = LlmView),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn get_llm(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<LlmView>> {
    let view = match state.store().account_llm(&caller.account.account_id).await? {
        Some(llm) => LlmView {
            byo_llm_enabled: true,
            endpoint: Some(llm.endpoint),
            model: Some(llm.model),
            verified_at: Some(llm.verified_at),
        },
        None => LlmView { byo_llm_enabled: false, endpoint: None, model: None, verified_at: None },
    };
    Ok(Json(view))
}

/// Stop using the account's LLM: calls go back to the server's model (within a few seconds on
/// every node).
#[utoipa::path(
    delete, path = "/v1/account/llm", tag = "account",
    responses(
        (status = 200, description = "`{\"ok\": true, \"byo_llm_enabled\": false}`"),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn delete_llm(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let account_id = &caller.account.account_id;
    let removed = state.store().delete_account_llm(account_id).await?;
    state.engine().forget_account_providers(account_id);
    Ok(Json(json!({"ok": true, "byo_llm_enabled": false, "deleted": removed})))
}

/// Use your own ElevenLabs or Cartesia voice on this account's phone calls. The settings are
/// checked first with one short synthesis in that voice; settings that fail are never stored.
#[utoipa::path(
    put, path = "/v1/account/tts", tag = "account",
    request_body(content = ByoTtsInput, description = "Provider, voice and key"),
    responses(
        (status = 200, description = "Saved and verified", body = TtsSaved),
        (status = 400, description = "`missing_field`, `invalid_request`, `unknown_field`, `tts_verification_failed` (`details.reason` says what the provider answered)", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn put_tts(
    State(state): State<AppState>,
    caller: Caller,
    body: Checked<ByoTtsInput>,
) -> ApiResult<Json<TtsSaved>> {
    let input = &body.input;
    let provider = required(input.provider.as_deref(), "provider", 32)?;
    let Some(kind) = ByoTtsKind::parse(&provider) else {
        return Err(ValidationError::invalid(
            "provider",
            "`provider` must be `elevenlabs` or `cartesia`",
        )
        .into());
    };
    let voice_id = required(input.voice_id.as_deref(), "voice_id", 200)?;
    if !voice_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(ValidationError::invalid(
            "voice_id",
            "`voice_id` must be letters, digits, `_` and `-`",
        )
        .into());
    }
    let api_key = required(input.api_key.as_deref(), "api_key", 4096)?;
    let engine = state.engine();
    let failed = |reason| {
        refused(ErrorCode::TtsVerificationFailed, "The voice failed the test synthesis", reason)
    };
    let tts = engine
        .build_account_tts(kind, SecretString::from(api_key.clone()))
        .map_err(|error| failed(error.to_string()))?;
    within_timeout(engine.check_account_tts(tts.as_ref(), &voice_id)).await.map_err(failed)?;
    let now = nixflex_store::now();
    let account_id = caller.account.account_id.clone();
    let created_at =
        state.store().account_tts(&account_id).await?.map_or(now, |existing| existing.created_at);
    state
        .store()
        .put_account_tts(&AccountTts {
            account_id: account_id.clone(),
            provider: kind.as_str().to_owned(),
            voice_id: voice_id.clone(),
            api_key_sealed: state.secrets().seal(&api_key),
            verified_at: now,
            created_at,
            updated_at: now,
        })
        .await?;
    engine.forget_account_providers(&account_id);
    Ok(Json(TtsSaved {
        ok: true,
        byo_tts_enabled: true,
        provider: kind.as_str().to_owned(),
        voice_id,
        verified: true,
    }))
}

/// The account's speech provider settings (the key is never returned).
#[utoipa::path(
    get, path = "/v1/account/tts", tag = "account",
    responses(
        (status = 200, description = "The settings; `byo_tts_enabled: false` and nulls without one", body = TtsView),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn get_tts(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<TtsView>> {
    let view = match state.store().account_tts(&caller.account.account_id).await? {
        Some(tts) => TtsView {
            byo_tts_enabled: true,
            provider: Some(tts.provider),
            voice_id: Some(tts.voice_id),
            verified_at: Some(tts.verified_at),
        },
        None => {
            TtsView { byo_tts_enabled: false, provider: None, voice_id: None, verified_at: None }
        }
    };
    Ok(Json(view))
}

/// Stop using the account's own voice: calls go back to the agent's voice (within a few seconds
/// on every node).
#[utoipa::path(
    delete, path = "/v1/account/tts", tag = "account",
    responses(
        (status = 200, description = "`{\"ok\": true, \"byo_tts_enabled\": false}`"),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn delete_tts(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let account_id = &caller.account.account_id;
    let removed = state.store().delete_account_tts(account_id).await?;
    state.engine().forget_account_providers(account_id);
    Ok(Json(json!({"ok": true, "byo_tts_enabled": false, "deleted": removed})))
}
