//! Recordings (docs/recordings.md): the audio of a call with the API key, the same through a
//! signed, expiring link (the call's `recording_url`, for players and CRMs that cannot send
//! headers), and the account's own bucket (`/v1/account/storage`).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use nixflex_core::error::ErrorCode;
use nixflex_core::ids::{AccountId, CallId};
use nixflex_core::validate::{ValidationError, check_len, outbound_url};
use nixflex_engine::recordings::RecordingError;
use nixflex_providers::storage::ByteRange;
use nixflex_store::AccountStorage;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Checked};
use crate::openapi::ErrorEnvelope;
use crate::routes::calls::find_call;
use crate::state::AppState;

/// How long the bucket check may take before it counts as failed.
const VERIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_recording)).routes(routes!(
        put_storage,
        get_storage,
        delete_storage
    ))
}

/// The signed-link route (outside `/v1`: the link itself is the credential).
pub(crate) fn public_router() -> axum::Router<AppState> {
    axum::Router::new().route("/recordings/{file}", axum::routing::get(get_signed_recording))
}

fn recordings(state: &AppState) -> ApiResult<&nixflex_engine::Recordings> {
    state.engine().recordings().ok_or_else(|| {
        ApiError::new(ErrorCode::NotImplemented, "Recording storage is not set up on this server.")
    })
}

fn no_recording(call_id: &str) -> ApiError {
    ApiError::new(ErrorCode::RecordingNotFound, format!("Call `{call_id}` has no recording."))
}

fn storage_failed(error: &RecordingError) -> ApiError {
    tracing::warn!(message = "Reading a recording failed.", error = %error);
    ApiError::new(
        ErrorCode::ProviderError,
        format!("The recording could not be read from its storage: {error}."),
    )
}

/// The single byte range of a `Range: bytes=…` header. Anything else (several ranges, other
/// units, malformed) is ignored and the whole file is sent, as RFC 9110 allows.
fn byte_range(headers: &HeaderMap) -> Option<ByteRange> {
    let value = headers.get(header::RANGE)?.to_str().ok()?.trim();
    let spec = value.strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = (start.trim(), end.trim());
    match (start.is_empty(), end.is_empty()) {
        (false, false) => Some(ByteRange::Bounded(start.parse().ok()?, end.parse().ok()?)),
        (false, true) => Some(ByteRange::From(start.parse().ok()?)),
        (true, false) => Some(ByteRange::Suffix(end.parse().ok()?)),
        (true, true) => None,
    }
}

/// Streams the recording (or the byte range asked for), never holding a whole file in memory.
async fn serve(
    state: &AppState,
    account_id: &AccountId,
    call_id: &CallId,
    location: &str,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let range = byte_range(headers);
    let object = match recordings(state)?.open(account_id, location, range).await {
        Ok(object) => object,
        Err(RecordingError::NotFound | RecordingError::BucketRemoved) => {
            return Err(no_recording(call_id.as_str()));
        }
        Err(RecordingError::RangeNotSatisfiable { size }) => {
            return Err(ApiError::new(
                ErrorCode::RangeNotSatisfiable,
                format!("The requested range is outside the recording's {size} bytes."),
            )
            .header(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}"))
                    .unwrap_or(HeaderValue::from_static("bytes */0")),
            ));
        }
        Err(error) => return Err(storage_failed(&error)),
    };
    let partial = range.is_some();
    let length = object.range.end - object.range.start;
    let mut response = Body::from_stream(object.stream).into_response();
    if partial {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    if partial
        && let Ok(value) = HeaderValue::from_str(&format!(
            "bytes {}-{}/{}",
            object.range.start,
            object.range.end.saturating_sub(1),
            object.size
        ))
    {
        headers.insert(header::CONTENT_RANGE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("inline; filename=\"{call_id}.wav\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// Download a call's recording: a dual-channel WAV, 8 kHz, caller on the left channel and the
/// agent on the right.
#[utoipa::path(
    get, path = "/v1/calls/{call_id}/recording", tag = "calls",
    params(("call_id" = String, Path, description = "The call id (`call_…`) or its Twilio call SID (`CA…`)")),
    responses(
        (status = 200, description = "The recording (`audio/wav`); `Range: bytes=…` (one range) is honoured with 206", content_type = "audio/wav", body = Vec<u8>),
        (status = 206, description = "The requested byte range", content_type = "audio/wav", body = Vec<u8>),
        (status = 416, description = "`range_not_satisfiable`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`call_not_found`, `recording_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
        (status = 502, description = "`provider_error` (the recording's storage failed)", body = ErrorEnvelope),
    )
)]
async fn get_recording(
    State(state): State<AppState>,
    caller: Caller,
    Path(call_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let call = find_call(&state, &caller.account.account_id, &call_id).await?;
    let Some(recording) = &call.recording else {
        return Err(no_recording(&call_id));
    };
    serve(&state, &call.account_id, &call.call_id, &recording.location, &headers).await
}

/// The signature of a recording link.
#[derive(Debug, Deserialize)]
struct LinkQuery {
    expires: Option<String>,
    signature: Option<String>,
}

async fn get_signed_recording(
    State(state): State<AppState>,
    Path(file): Path<String>,
    Query(link): Query<LinkQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let invalid = || {
        ApiError::new(
            ErrorCode::RecordingLinkInvalid,
            "This recording link is invalid or has expired; fetch the call again for a fresh `recording_url`.",
        )
    };
    let call_id = file.strip_suffix(".wav").unwrap_or(&file);
    let expires =
        link.expires.as_deref().and_then(|e| e.parse::<i64>().ok()).ok_or_else(invalid)?;
    let signature = link.signature.as_deref().ok_or_else(invalid)?;
    if !recordings(&state)?.check_url(call_id, expires, signature, Utc::now()) {
        return Err(invalid());
    }
    let call_id = CallId::from(call_id);
    let call =
        state.store().find_call(&call_id).await?.ok_or_else(|| no_recording(call_id.as_str()))?;
    let Some(recording) = &call.recording else {
        return Err(no_recording(call_id.as_str()));
    };
    serve(&state, &call.account_id, &call.call_id, &recording.location, &headers).await
}

/// Deletes a recording's file. If its store fails, the deletion is queued as a durable job that
/// retries until the file is gone, so the call can be erased now and the file is never left
/// behind (docs/recordings.md#deleting-recordings).
pub(crate) async fn erase(
    state: &AppState,
    account_id: &AccountId,
    location: &str,
) -> ApiResult<()> {
    let Some(recordings) = state.engine().recordings() else {
        return Ok(());
    };
    match recordings.delete(account_id, location).await {
        // The account removed its bucket: the files in it are the account's own business.
        Ok(()) | Err(RecordingError::BucketRemoved | RecordingError::NotFound) => Ok(()),
        Err(error) => {
            tracing::warn!(message = "Deleting a recording failed; it is queued to be retried.", error = %error);
            let job = nixflex_store::NewJob::new(
                nixflex_engine::recordings::RECORDING_DELETE,
                location,
                json!({"account_id": account_id, "location": location}),
                DELETE_ATTEMPTS,
            );
            state.store().enqueue_job(&job).await?;
            state.engine().wake_follow_ups();
            Ok(())
        }
    }
}

/// Attempts of a queued recording deletion (about five hours with the default back-off).
const DELETE_ATTEMPTS: i64 = 30;

/// `PUT /v1/account/storage`: your own S3-compatible bucket for recordings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StorageInput {
    /// Bucket name (3–63 characters: lowercase letters, digits, `.` and `-`).
    #[schema(value_type = String, min_length = 3, max_length = 63)]
    bucket: Option<String>,
    /// Access key id.
    #[schema(value_type = String, min_length = 1, max_length = 256)]
    access_key: Option<String>,
    /// Secret key (stored encrypted, never returned).
    #[schema(value_type = String, min_length = 1, max_length = 256)]
    secret_key: Option<String>,
    /// The S3-compatible endpoint, an https URL; empty or absent = Amazon S3.
    #[schema(value_type = String, required = false, max_length = 2048)]
    endpoint: Option<String>,
    /// Signing region (default `auto`).
    #[schema(value_type = String, required = false, min_length = 1, max_length = 64)]
    region: Option<String>,
}

/// The account's bucket, as saved.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StorageSaved {
    /// Always true.
    ok: bool,
    /// Always true: new recordings go to this bucket.
    storage_enabled: bool,
    /// Bucket name.
    bucket: String,
    /// The endpoint (`null`: Amazon S3).
    endpoint: Option<String>,
    /// Signing region.
    region: String,
    /// Always true: the test write succeeded before the settings were saved.
    verified: bool,
}

/// The account's bucket settings (never the secret).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StorageView {
    /// Whether recordings go to the account's bucket.
    storage_enabled: bool,
    /// The endpoint (`null`: Amazon S3, or no bucket).
    endpoint: Option<String>,
    /// Signing region.
    region: Option<String>,
    /// Bucket name.
    bucket: Option<String>,
    /// Access key id.
    access_key: Option<String>,
    /// When the test write last succeeded.
    verified_at: Option<chrono::DateTime<Utc>>,
}

fn required(value: Option<&str>, name: &str, max: usize) -> ApiResult<String> {
    let value = value.map(str::trim).unwrap_or_default();
    if value.is_empty() {
        return Err(ValidationError::missing(name).into());
    }
    check_len(name, value, max, ErrorCode::InvalidRequest)?;
    Ok(value.to_owned())
}

fn optional(value: Option<&str>) -> Option<String> {
    value.map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
}

fn valid_bucket(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && !name.contains("..")
}

/// Use your own S3-compatible bucket for this account's recordings. The credentials are checked
/// with a test write (then read back and deleted) before anything is saved; broken ones are
/// refused and never stored. From then on new recordings go only to this bucket.
#[utoipa::path(
    put, path = "/v1/account/storage", tag = "account",
    request_body(content = StorageInput, description = "Bucket and credentials"),
    responses(
        (status = 200, description = "Saved and verified", body = StorageSaved),
        (status = 400, description = "`missing_field`, `invalid_request`, `unknown_field`, `storage_verification_failed` (`details.reason` says what the bucket answered)", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn put_storage(
    State(state): State<AppState>,
    caller: Caller,
    body: Checked<StorageInput>,
) -> ApiResult<Json<StorageSaved>> {
    let input = &body.input;
    let bucket = required(input.bucket.as_deref(), "bucket", 63)?;
    if !valid_bucket(&bucket) {
        return Err(ValidationError::invalid(
            "bucket",
            "`bucket` must be 3-63 characters of lowercase letters, digits, `.` and `-`, starting and ending with a letter or digit",
        )
        .into());
    }
    let access_key = required(input.access_key.as_deref(), "access_key", 256)?;
    let secret_key = required(input.secret_key.as_deref(), "secret_key", 256)?;
    let endpoint = optional(input.endpoint.as_deref());
    if let Some(endpoint) = &endpoint {
        check_len("endpoint", endpoint, 2048, ErrorCode::InvalidRequest)?;
        outbound_url("endpoint", endpoint, state.config().allow_private_targets)?;
    }
    let region = optional(input.region.as_deref()).unwrap_or_else(|| "auto".to_owned());
    if region.len() > 64
        || !region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ValidationError::invalid(
            "region",
            "`region` must be up to 64 letters, digits, `-` or `_`",
        )
        .into());
    }
    let recordings = recordings(&state)?;
    let refused = |reason: String| {
        ApiError::new(
            ErrorCode::StorageVerificationFailed,
            "The bucket refused the test write, so the settings were not saved.",
        )
        .detail("reason", reason)
    };
    let client = recordings
        .bucket(&bucket, endpoint.as_deref(), &region, &access_key, &secret_key)
        .map_err(|e| refused(e.to_string()))?;
    let probe = format!("nixflex-verify/{}.txt", nixflex_core::ids::new_job_id());
    match tokio::time::timeout(VERIFY_TIMEOUT, client.verify(&probe)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(refused(error.to_string())),
        Err(_) => return Err(refused(format!("no answer within {} s", VERIFY_TIMEOUT.as_secs()))),
    }
    let now = nixflex_store::now();
    let account_id = caller.account.account_id.clone();
    let created_at = state
        .store()
        .account_storage(&account_id)
        .await?
        .map_or(now, |existing| existing.created_at);
    state
        .store()
        .put_account_storage(&AccountStorage {
            account_id,
            bucket: bucket.clone(),
            endpoint: endpoint.clone(),
            region: region.clone(),
            access_key,
            secret_key_sealed: state.secrets().seal(&secret_key),
            verified_at: now,
            created_at,
            updated_at: now,
        })
        .await?;
    Ok(Json(StorageSaved {
        ok: true,
        storage_enabled: true,
        bucket,
        endpoint,
        region,
        verified: true,
    }))
}

/// The account's bucket settings (the secret key is never returned).
#[utoipa::path(
    get, path = "/v1/account/storage", tag = "account",
    responses(
        (status = 200, description = "The settings; `storage_enabled: false` and nulls without a bucket", body = StorageView),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn get_storage(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<StorageView>> {
    let view = match state.store().account_storage(&caller.account.account_id).await? {
        Some(s) => StorageView {
            storage_enabled: true,
            endpoint: s.endpoint,
            region: Some(s.region),
            bucket: Some(s.bucket),
            access_key: Some(s.access_key),
            verified_at: Some(s.verified_at),
        },
        None => StorageView {
            storage_enabled: false,
            endpoint: None,
            region: None,
            bucket: None,
            access_key: None,
            verified_at: None,
        },
    };
    Ok(Json(view))
}

/// Stop using the account's bucket: new recordings go to the server's storage again. Files
/// already in the bucket are left there (and stop being served through Nixflex).
#[utoipa::path(
    delete, path = "/v1/account/storage", tag = "account",
    responses(
        (status = 200, description = "`{\"ok\": true, \"storage_enabled\": false}`"),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn delete_storage(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let removed = state.store().delete_account_storage(&caller.account.account_id).await?;
    Ok(Json(json!({"ok": true, "storage_enabled": false, "deleted": removed})))
}
