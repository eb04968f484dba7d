//! API keys and accounts (docs/api.md#keys-and-accounts; docs/decisions.md#keys-and-accounts, #secrets-at-rest): sign-up, extra keys, listing,
//! revocation and rotation.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use nixflex_core::crypto::{SecretBox, hash_secret};
use nixflex_core::error::ErrorCode;
use nixflex_core::ids;
use nixflex_core::ids::{AccountId, KeyId};
use nixflex_core::validate::{ValidationError, as_str, check_len, normalize_keys};
use nixflex_store::{Account, ApiKey, RevokeOutcome, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Checked, QueryPairs};
use crate::middleware::SecretBearing;
use crate::openapi::ErrorEnvelope;
use crate::state::AppState;

const SECRET_NOTICE: &str = "API key created. Save your key_secret — it will not be shown again.";

/// The body of `POST /v1/keys` (both fields optional).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Read by serde (type checking) and utoipa; the handler validates the fields.
pub(crate) struct KeyInput {
    /// A label for the key (the account holder's name on sign-up).
    #[schema(max_length = 100)]
    name: Option<String>,
    /// The account holder's e-mail (sign-up only).
    #[schema(max_length = 254, format = Email)]
    email: Option<String>,
}

/// A newly created key (the secret is shown only here).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyCreated {
    /// Reminder that the secret is shown once.
    pub message: String,
    /// The key id (`nxf_` + 32 hex).
    pub key_id: String,
    /// The secret (`nxfs_` + 64 hex). Shown once.
    pub key_secret: String,
    /// The account the key belongs to.
    pub account_id: String,
    /// The key's label.
    pub name: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A key as listed (never the secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyObject {
    /// The key id.
    pub key_id: String,
    /// Label.
    pub name: Option<String>,
    /// `active` or `revoked`.
    pub status: &'static str,
    /// Whether this is the key that made the request.
    pub current: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last secret rotation.
    pub rotated_at: Option<DateTime<Utc>>,
    /// Revocation time.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A page of keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    /// The keys, newest first.
    pub keys: Vec<KeyObject>,
    /// Total keys of the account.
    pub count: i64,
    /// Page size.
    pub limit: i64,
    /// Offset.
    pub offset: i64,
}

/// The result of a revocation.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyRevoked {
    /// The key id.
    pub key_id: String,
    /// Always true.
    pub revoked: bool,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A rotated key (the new secret is shown only here).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyRotated {
    /// Reminder that the secret is shown once.
    pub message: String,
    /// Unchanged key id.
    pub key_id: String,
    /// The new secret; the old one stopped working.
    pub key_secret: String,
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_key, list_keys))
        .routes(routes!(rotate_key))
        .routes(routes!(revoke_key))
}

fn optional_text(
    body: &Map<String, Value>,
    field: &str,
    max: usize,
) -> Result<Option<String>, ValidationError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => {
            let text = as_str(field, value)?.trim();
            check_len(field, text, max, ErrorCode::InvalidRequest)?;
            Ok(if text.is_empty() { None } else { Some(text.to_owned()) })
        }
    }
}

fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else { return false };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !email.chars().any(char::is_whitespace)
}

fn new_key(account_id: &AccountId, name: Option<String>, secrets: &SecretBox) -> (ApiKey, String) {
    let secret = ids::new_key_secret();
    let key = ApiKey {
        key_id: ids::new_key_id(),
        account_id: account_id.clone(),
        name,
        secret_hash: hash_secret(&secret),
        secret_sealed: secrets.seal(&secret),
        created_at: nixflex_store::now(),
        rotated_at: None,
        revoked_at: None,
    };
    (key, secret)
}

/// Creates an account with its first key (sign-up and the admin CLI share this).
///
/// # Errors
/// When the store fails.
pub async fn provision_account(
    store: &dyn Store,
    secrets: &SecretBox,
    name: Option<String>,
    email: Option<String>,
) -> Result<KeyCreated, StoreError> {
    let account = Account {
        account_id: ids::new_account_id(),
        name,
        email,
        created_at: nixflex_store::now(),
        max_concurrent_calls: None,
        rate_limit_reads: None,
        rate_limit_writes: None,
    };
    // The first key carries the name the account was opened with, so the sign-up response
    // echoes what was sent (and `GET /v1/keys` agrees); unnamed sign-ups get `default`.
    let key_name = account.name.clone().unwrap_or_else(|| "default".to_owned());
    let (key, secret) = new_key(&account.account_id, Some(key_name), secrets);
    store.create_account(&account, &key).await?;
    Ok(KeyCreated {
        message: SECRET_NOTICE.to_owned(),
        key_id: key.key_id.into(),
        key_secret: secret,
        account_id: account.account_id.into(),
        name: key.name,
        created_at: key.created_at,
    })
}

/// Sign up, or create another key.
///
/// Without an API key this creates a new account and its first key (when sign-up is enabled on
/// the server; limited to 10 per hour per client IP). With a valid key it creates an additional
/// key for the same account. The secret is returned once and never again.
///
/// With an `Idempotency-Key`, a retry never creates a second key; it replays the response (secret
/// included, stored sealed) only when sent with the same API key as the original request. A
/// sign-up's secret is never replayed: its retry answers 409 `idempotent_replay_withheld`.
#[utoipa::path(
    post, path = "/v1/keys", tag = "keys",
    security((), ("api_key" = [])),
    request_body(content = KeyInput, description = "`name` (≤ 100 chars) and `email` (account holder, sign-up only); both optional", content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = KeyCreated),
        (status = 400, description = "`invalid_request`, `invalid_json`, `unknown_field`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required` (a key was sent but is wrong)", body = ErrorEnvelope),
        (status = 403, description = "`signup_disabled`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`, `idempotent_replay_withheld` (the response held a secret: it is replayed only to the key that made the request, and a sign-up's never)", body = ErrorEnvelope),
        (status = 415, description = "`unsupported_media_type`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn create_key(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Checked { fields: body, .. }: Checked<KeyInput>,
) -> ApiResult<(StatusCode, Extension<SecretBearing>, Json<KeyCreated>)> {
    let body = normalize_keys(body);
    let name = optional_text(&body, "name", 100)?;
    match caller {
        Some(caller) => {
            let (key, secret) = new_key(&caller.account.account_id, name, state.secrets());
            state.store().insert_key(&key).await?;
            Ok((
                StatusCode::CREATED,
                Extension(SecretBearing),
                Json(KeyCreated {
                    message: SECRET_NOTICE.to_owned(),
                    key_id: key.key_id.into(),
                    key_secret: secret,
                    account_id: key.account_id.into(),
                    name: key.name,
                    created_at: key.created_at,
                }),
            ))
        }
        None => {
            if !state.config().signup_open {
                return Err(ApiError::new(
                    ErrorCode::SignupDisabled,
                    "Sign-up is disabled on this server. Ask its operator for an API key (nixflex keys create).",
                ));
            }
            let email = optional_text(&body, "email", 254)?;
            if let Some(email) = &email
                && !valid_email(email)
            {
                return Err(ValidationError::invalid(
                    "email",
                    "`email` is not a valid e-mail address",
                )
                .into());
            }
            let created = provision_account(state.store(), state.secrets(), name, email).await?;
            tracing::info!(message = "Account signed up.", account_id = %created.account_id);
            Ok((StatusCode::CREATED, Extension(SecretBearing), Json(created)))
        }
    }
}

/// List the account's API keys (never their secrets), newest first.
#[utoipa::path(
    get, path = "/v1/keys", tag = "keys",
    params(("limit" = Option<i64>, Query, description = "Page size, default 25, max 100 (larger values are clamped)"),
           ("offset" = Option<i64>, Query, description = "Rows to skip, default 0")),
    responses(
        (status = 200, description = "A page of keys", body = KeyList),
        (status = 400, description = "`invalid_request` (bad limit/offset)", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
) -> ApiResult<Json<KeyList>> {
    let page = query.page()?;
    let (keys, count) = state.store().list_keys(&caller.account.account_id, page).await?;
    Ok(Json(KeyList {
        keys: keys
            .into_iter()
            .map(|key| KeyObject {
                current: key.key_id == caller.key_id,
                status: if key.revoked_at.is_some() { "revoked" } else { "active" },
                key_id: key.key_id.into(),
                name: key.name,
                created_at: key.created_at,
                rotated_at: key.rotated_at,
                revoked_at: key.revoked_at,
            })
            .collect(),
        count,
        limit: page.limit,
        offset: page.offset,
    }))
}

/// Revoke a key. It stops working at once. The account's last active key cannot be revoked.
#[utoipa::path(
    delete, path = "/v1/keys/{key_id}", tag = "keys",
    params(("key_id" = String, Path, description = "The key to revoke")),
    responses(
        (status = 200, description = "Revoked (revoking a revoked key is a no-op)", body = KeyRevoked),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`key_not_found`", body = ErrorEnvelope),
        (status = 409, description = "`last_active_key`, `idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> ApiResult<Json<KeyRevoked>> {
    match state
        .store()
        .revoke_key(&caller.account.account_id, &KeyId::from(key_id.as_str()), nixflex_store::now())
        .await?
    {
        RevokeOutcome::Revoked(key) => {
            // Other nodes see the epoch move within a second (docs/security.md#key-cache).
            state.key_cache().invalidate();
            Ok(Json(KeyRevoked {
                key_id: key.key_id.into(),
                revoked: true,
                revoked_at: key.revoked_at,
            }))
        }
        RevokeOutcome::LastActiveKey => Err(ApiError::new(
            ErrorCode::LastActiveKey,
            "This is the account's last active key. Create another key before revoking it.",
        )),
        RevokeOutcome::NotFound => Err(ApiError::new(
            ErrorCode::KeyNotFound,
            format!("No key `{key_id}` in this account."),
        )),
    }
}

/// Rotate the secret of the key making this request. The old secret stops working the moment
/// the new one is returned; the key id, and everything tied to it, stays. Webhook signatures use
/// the new secret from then on. A retry with the same `Idempotency-Key` authenticates with the
/// old secret and is refused (401): rotation is never repeated, and its secret never replayed
/// to anyone who does not already hold it.
#[utoipa::path(
    post, path = "/v1/keys/rotate", tag = "keys",
    responses(
        (status = 200, description = "Rotated", body = KeyRotated),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`, `idempotent_replay_withheld` (the response held a secret: it is replayed only to the key that made the request, and a sign-up's never)", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn rotate_key(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<(Extension<SecretBearing>, Json<KeyRotated>)> {
    let secret = ids::new_key_secret();
    let rotated = state
        .store()
        .rotate_key(
            &caller.key_id,
            &hash_secret(&secret),
            &state.secrets().seal(&secret),
            nixflex_store::now(),
        )
        .await
        .map_err(|error| match error {
            // Revoked between authentication and now.
            StoreError::NotFound => {
                ApiError::new(ErrorCode::InvalidApiKey, "Invalid or missing API key")
            }
            other => other.into(),
        })?;
    // The old secret stops working here at once, and on other nodes within a second
    // (docs/security.md#key-cache).
    state.key_cache().invalidate();
    Ok((Extension(SecretBearing), Json(KeyRotated {
        message: "API key rotated. Save your new key_secret — it will not be shown again; the old secret no longer works.".to_owned(),
        key_id: rotated.key_id.into(),
        key_secret: secret,
    })))
}
