//! The cross-cutting rules every route obeys, as axum middleware, outermost first:
//! request id → logging → envelope normalisation → timeout → guard (authentication and rate
//! limits) → idempotency → the route.

use std::time::{Duration, Instant};

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use nixflex_core::crypto::{self, hash_secret};
use nixflex_core::error::ErrorCode;
use nixflex_core::ids;
use nixflex_core::ids::KeyId;
use nixflex_store::{IdempotencyBegin, IdempotencyScope, StoredResponse};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ErrorCause};
use crate::extract::{Caller, ClientIp, too_large};
use crate::rate_limiter::Decision;
use crate::state::AppState;

/// The request id of the current request (extension).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Takes a sane incoming `X-Request-Id` or makes one, echoes it on the response, and serves the
/// request inside a `request` span carrying it.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(ids::new_request_id, str::to_owned);
    req.extensions_mut().insert(RequestId(id.clone()));
    // Everything logged while serving the request carries its id.
    let span = tracing::info_span!("request", request_id = %id);
    let mut response = tracing::Instrument::instrument(next.run(req), span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}

/// The longest path and query the API reads (8 KiB). The HTTP parser's own limit (64 KiB) sits
/// above it, so every request the parser can read gets our envelope (docs/input-validation.md).
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Answers 414 `uri_too_long` in the envelope for a path and query over [`MAX_URI_BYTES`].
pub async fn limit_uri(req: Request, next: Next) -> Response {
    let length = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if length > MAX_URI_BYTES {
        return ApiError::new(
            ErrorCode::UriTooLong,
            format!(
                "The request's path and query are {length} bytes; this server accepts at most {MAX_URI_BYTES}."
            ),
        )
        .detail("max_bytes", MAX_URI_BYTES)
        .into_response();
    }
    next.run(req).await
}

/// One log line per request (method, matched route, status, latency, request id); 5xx causes are
/// logged with their chain. Paths and bodies may hold phone numbers, so the raw URI is not logged.
pub async fn log_requests(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    tracing::debug!(message = "Request started.", %method, route, request_id);
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let latency = started.elapsed();
    // The matched route template, never the path (docs/operations.md#metrics).
    nixflex_metrics::http_request(method.as_str(), &route, status, latency);
    let latency_ms = latency.as_secs_f64() * 1000.0;
    if let Some(ErrorCause(cause)) = response.extensions().get::<ErrorCause>() {
        tracing::error!(
            message = "Request failed.",
            %method, route, status, latency_ms, request_id,
            error = %cause, error.cause_chain = ?cause
        );
    } else {
        tracing::info!(message = "Request served.", %method, route, status, latency_ms, request_id);
    }
    response
}

/// Makes sure every error response is the JSON envelope, including those produced by axum itself
/// (unknown route, wrong method) and by layers (body limit, panics).
pub async fn normalize_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, _body) = response.into_parts();
    let error = match parts.status {
        StatusCode::NOT_FOUND => ApiError::new(
            ErrorCode::RouteNotFound,
            "No route matches this path. See GET /v1/openapi.json for the API reference.",
        ),
        // axum adds the `Allow` header outside this layer, so it reaches the client as is.
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            ErrorCode::MethodNotAllowed,
            "This route does not accept that HTTP method; the Allow header lists the ones it does.",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            ErrorCode::RequestTooLarge,
            "The request body is larger than this server accepts.",
        ),
        StatusCode::URI_TOO_LONG => ApiError::new(
            ErrorCode::UriTooLong,
            "The request's path and query are longer than this server accepts.",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "Request bodies must be JSON, sent with `Content-Type: application/json`.",
        ),
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => {
            ApiError::new(ErrorCode::RequestTimeout, "The request took too long.")
        }
        s if s.is_client_error() => ApiError::invalid("The request is malformed."),
        _ => ApiError::internal(anyhow::anyhow!("non-JSON {} response", parts.status)),
    };
    let mut out = error.into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out.extensions_mut().extend(parts.extensions);
    out
}

/// Answers 503 `request_timeout` when a request runs longer than the configured limit. Dropping
/// the handler rolls back any open transaction; an in-flight idempotency record expires with its
/// lease.
pub async fn timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.config().request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::RequestTimeout,
            format!("The request took longer than {} seconds and was stopped.", limit.as_secs()),
        )
        .into_response(),
    }
}

/// Turns a panic into a 500 envelope (the process keeps serving).
pub fn panic_response(cause: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = cause
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| cause.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unknown panic".to_owned());
    ApiError::internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
}

/// A parsed `Authorization` header.
enum Credentials {
    None,
    Malformed,
    SecretMissing,
    Pair { key_id: String, secret: String },
}

fn parse_authorization(headers: &HeaderMap) -> Credentials {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Credentials::None };
    let Ok(value) = value.to_str() else { return Credentials::Malformed };
    let value = value.trim();
    let Some((scheme, token)) = value.split_once(' ') else { return Credentials::Malformed };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Credentials::Malformed;
    }
    let token = token.trim();
    match token.split_once(':') {
        Some((key_id, secret)) if !secret.is_empty() => {
            Credentials::Pair { key_id: key_id.to_owned(), secret: secret.to_owned() }
        }
        Some(_) => Credentials::SecretMissing,
        None if token.starts_with("nxf_") => Credentials::SecretMissing,
        None => Credentials::Malformed,
    }
}

fn invalid_key() -> ApiError {
    ApiError::new(ErrorCode::InvalidApiKey, "Invalid or missing API key")
        .header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
}

/// Routes that answer without a key: sign-up and the API reference.
fn anonymous_allowed(method: &Method, path: &str) -> bool {
    (method == Method::POST && path == "/v1/keys")
        || (method == Method::GET && path == "/v1/openapi.json")
}

struct Quota {
    limit: i64,
    count: i64,
    reset: i64,
    admitted: bool,
}

impl Quota {
    fn apply_headers(&self, headers: &mut HeaderMap) {
        let remaining = (self.limit - self.count).max(0);
        for (name, value) in [
            ("x-ratelimit-limit", self.limit),
            ("x-ratelimit-remaining", remaining),
            ("x-ratelimit-reset", self.reset),
        ] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
    }
}

/// Counts a request in this node's counters (docs/api.md#rate-limits). Only a bucket this node
/// has not seen in this window, or left idle through a sync, reads the database; nothing here
/// writes to it.
async fn count_request(
    state: &AppState,
    bucket: String,
    limit: i64,
    window: i64,
) -> Result<Quota, ApiError> {
    let now = Utc::now().timestamp();
    let window_start = now - now.rem_euclid(window);
    let reset = window_start + window;
    let limiter = state.rate_limiter();
    let decision = match limiter.hit(&bucket, window_start, limit) {
        Some(decision) => decision,
        None => {
            let expires_at = reset + window;
            let shared = state.store().rate_limit_add(&bucket, window_start, expires_at, 0).await?;
            limiter.seed(&bucket, window_start, expires_at, shared);
            // `None` again only when a concurrent request already started the next window: this
            // one is the last of its window, judged by the total just read.
            limiter.hit(&bucket, window_start, limit).unwrap_or(Decision {
                count: if shared < limit { shared + 1 } else { shared },
                admitted: shared < limit,
            })
        }
    };
    Ok(Quota { limit, count: decision.count, reset, admitted: decision.admitted })
}

/// Authentication (docs/api.md#authentication) and per-account rate limits (docs/api.md#rate-limits) for every `/v1` request.
///
/// Requests without a valid key are counted per client IP; sign-ups have their own hourly
/// bucket. Every response carries `X-RateLimit-*`; excess gets 429 with `Retry-After`.
pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/v1") {
        return next.run(req).await;
    }
    let config = state.config();
    let (parts, body) = req.into_parts();
    let ip = ClientIp::from_parts(&parts, config.trust_forwarded_for);
    let is_read = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let anonymous_ok = anonymous_allowed(&parts.method, parts.uri.path());

    let caller = match parse_authorization(&parts.headers) {
        Credentials::None => None,
        Credentials::Malformed => return invalid_key().into_response(),
        Credentials::SecretMissing => {
            return ApiError::new(
                ErrorCode::KeySecretRequired,
                "The Authorization header must carry both halves: `Bearer key_id:key_secret`.",
            )
            .header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
            .into_response();
        }
        Credentials::Pair { key_id, secret } => {
            match authenticate(&state, &key_id, &secret).await {
                Ok(Some(caller)) => Some(caller),
                Ok(None) => return invalid_key().into_response(),
                Err(error) => return error.into_response(),
            }
        }
    };

    let quota = match &caller {
        Some(caller) => {
            let (group, limit) = if is_read {
                ("r", caller.account.rate_limit_reads.unwrap_or(config.reads_per_minute))
            } else {
                ("w", caller.account.rate_limit_writes.unwrap_or(config.writes_per_minute))
            };
            let window = config.rate_limit_window;
            count_request(&state, format!("{}:{group}", caller.account.account_id), limit, window)
                .await
        }
        None if parts.method == Method::POST && parts.uri.path() == "/v1/keys" => {
            count_request(&state, format!("signup:{}", ip.0), config.signups_per_hour, 3600).await
        }
        None => {
            let window = config.rate_limit_window;
            count_request(&state, format!("anon:{}", ip.0), config.anonymous_per_minute, window)
                .await
        }
    };
    let quota = match quota {
        Ok(quota) => quota,
        Err(error) => return error.into_response(),
    };

    let mut response = if !quota.admitted {
        nixflex_metrics::rate_limit_refused(match caller {
            Some(_) => nixflex_metrics::RateLimitScope::Account,
            None => nixflex_metrics::RateLimitScope::ClientIp,
        });
        let retry_after = (quota.reset - Utc::now().timestamp()).max(1);
        ApiError::new(
            ErrorCode::RateLimitExceeded,
            format!("Rate limit exceeded. Try again in {retry_after} seconds."),
        )
        .detail("retry_after", retry_after)
        .header(header::RETRY_AFTER, HeaderValue::from(retry_after))
        .into_response()
    } else if caller.is_none() && !anonymous_ok {
        invalid_key().into_response()
    } else {
        req = Request::from_parts(parts, body);
        if let Some(caller) = caller {
            req.extensions_mut().insert(caller);
        }
        req.extensions_mut().insert(ip);
        next.run(req).await
    };
    quota.apply_headers(response.headers_mut());
    response
}

/// Verifies a key: from this node's cache when it holds the key's secret hash and is fresh,
/// else in the database (docs/security.md#key-cache). Only successes are remembered.
async fn authenticate(
    state: &AppState,
    key_id: &str,
    secret: &str,
) -> Result<Option<Caller>, ApiError> {
    if !ids::is_key_id(key_id) {
        return Ok(None);
    }
    let secret_hash = hash_secret(secret);
    let cache = state.key_cache();
    if let Some(account) = cache.lookup(key_id, &secret_hash) {
        return Ok(Some(Caller { account, key_id: KeyId::from(key_id) }));
    }
    let generation = cache.generation();
    let Some(found) = state.store().get_key(&KeyId::from(key_id)).await? else { return Ok(None) };
    // Compare in constant time even for revoked keys, so timing does not reveal their state.
    // The secret was hashed once already, for the cache.
    let matches = crypto::hashes_match(&secret_hash, &found.key.secret_hash);
    if !matches || found.key.revoked_at.is_some() {
        return Ok(None);
    }
    cache.remember(
        generation,
        &found.key.secret_hash,
        found.key.key_id.clone(),
        found.account.clone(),
    );
    Ok(Some(Caller { account: found.account, key_id: found.key.key_id }))
}

/// Put in a response's extensions by handlers whose body holds a secret shown only once (new and
/// rotated API keys). The idempotency layer then stores the body sealed under the master key and
/// replays it only to the key that made the request (docs/security.md#idempotent-replays-of-secrets).
#[derive(Debug, Clone, Copy)]
pub struct SecretBearing;

/// The `content_type` under which a sealed response is stored: the column doubles as the format
/// tag, so plain and sealed records need no schema change.
const SEALED_CONTENT_TYPE: &str = "application/vnd.nixflex.sealed-response";

/// What is sealed: the response, and the key allowed to see it again (`None`: nobody).
#[derive(serde::Serialize, serde::Deserialize)]
struct SealedResponse {
    bound_key_id: Option<String>,
    content_type: Option<String>,
    body: String,
}

static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// How long an idempotency record is kept (docs/decisions.md#idempotency).
const IDEMPOTENCY_RETENTION: i64 = 24 * 3600;

/// `Idempotency-Key` on mutating requests (docs/decisions.md#idempotency): scope (account, method, path, key);
/// replays return the stored status and body with `Idempotent-Replayed: true`; a different
/// request under the same key → 409 `idempotency_key_reused`; a duplicate while the first runs →
/// 409 `idempotency_request_in_flight`; 5xx responses are not stored.
pub async fn idempotency(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let Some(raw_key) = req.headers().get(&IDEMPOTENCY_KEY) else { return next.run(req).await };
    let key = match raw_key.to_str() {
        Ok(k) if !k.trim().is_empty() && k.len() <= 255 => k.to_owned(),
        Ok(k) if k.len() > 255 => {
            return ApiError::invalid("`Idempotency-Key` must be at most 255 characters.")
                .detail("field", "Idempotency-Key")
                .into_response();
        }
        _ => {
            return ApiError::invalid("`Idempotency-Key` must be a non-empty printable string.")
                .detail("field", "Idempotency-Key")
                .into_response();
        }
    };
    let requester_key = req.extensions().get::<Caller>().map(|caller| caller.key_id.clone());
    let scope_owner = match (req.extensions().get::<Caller>(), req.extensions().get::<ClientIp>()) {
        (Some(caller), _) => caller.account.account_id.to_string(),
        (None, Some(ip)) => format!("ip:{}", ip.0),
        (None, None) => "ip:unknown".to_owned(),
    };
    let (parts, body) = req.into_parts();
    let limit = state.config().max_body_bytes;
    let Ok(bytes) = to_bytes(body, limit).await else { return too_large(limit).into_response() };

    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str());
    hasher.update([0]);
    hasher.update(parts.uri.path());
    hasher.update([0]);
    hasher.update(parts.uri.query().unwrap_or(""));
    hasher.update([0]);
    hasher.update(&bytes);
    let fingerprint = hex::encode(hasher.finalize());

    let scope = IdempotencyScope {
        scope: scope_owner,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        key,
    };
    let now = Utc::now().timestamp();
    let lease = i64::try_from(state.config().request_timeout.as_secs()).unwrap_or(30) + 30;
    let begin = state
        .store()
        .idempotency_begin(&scope, &fingerprint, now, now + lease, now - IDEMPOTENCY_RETENTION)
        .await;
    match begin {
        Err(error) => return ApiError::from(error).into_response(),
        Ok(IdempotencyBegin::Replay(stored)) => {
            return replay(&state, stored, requester_key.as_deref());
        }
        Ok(IdempotencyBegin::Mismatch) => {
            return ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "This Idempotency-Key was already used with a different request. Use a new key for a new request.",
            )
            .into_response();
        }
        Ok(IdempotencyBegin::InFlight) => {
            return ApiError::new(
                ErrorCode::IdempotencyRequestInFlight,
                "A request with this Idempotency-Key is still being processed. Retry after it finishes.",
            )
            .header(header::RETRY_AFTER, HeaderValue::from_static("1"))
            .into_response();
        }
        Ok(IdempotencyBegin::Started) => {}
    }

    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let (mut res_parts, res_body) = response.into_parts();
    if res_parts.status.is_server_error() {
        if let Err(error) = state.store().idempotency_abandon(&scope).await {
            tracing::warn!(message = "Could not release an idempotency key.", error = %error);
        }
        return Response::from_parts(res_parts, res_body);
    }
    let body_bytes = match to_bytes(res_body, usize::MAX).await {
        Ok(b) => b,
        Err(error) => {
            let _ = state.store().idempotency_abandon(&scope).await;
            return ApiError::internal(anyhow::anyhow!("reading response body: {error}"))
                .into_response();
        }
    };
    let content_type = res_parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let stored = if res_parts.extensions.get::<SecretBearing>().is_some() {
        // Never stored in plaintext; replayable only by the key that asked (an unauthenticated
        // sign-up has no such key, so its secret is never replayed).
        let sealed = SealedResponse {
            bound_key_id: requester_key.map(String::from),
            content_type,
            body: String::from_utf8_lossy(&body_bytes).into_owned(),
        };
        let plaintext = serde_json::to_string(&sealed).unwrap_or_default();
        StoredResponse {
            status_code: res_parts.status.as_u16(),
            content_type: Some(SEALED_CONTENT_TYPE.to_owned()),
            body: state.secrets().seal(&plaintext).into_bytes(),
        }
    } else {
        StoredResponse {
            status_code: res_parts.status.as_u16(),
            content_type,
            body: body_bytes.to_vec(),
        }
    };
    if let Err(error) = state.store().idempotency_complete(&scope, &stored).await {
        // The operation ran; failing to remember it only weakens a later replay.
        tracing::error!(message = "Could not store an idempotent response.", error = %error);
    }
    res_parts.headers.insert(IDEMPOTENT_REPLAYED.clone(), HeaderValue::from_static("false"));
    Response::from_parts(res_parts, Body::from(body_bytes))
}

fn replay(state: &AppState, stored: StoredResponse, requester_key: Option<&str>) -> Response {
    let status = StatusCode::from_u16(stored.status_code).unwrap_or(StatusCode::OK);
    let (content_type, body) = if stored.content_type.as_deref() == Some(SEALED_CONTENT_TYPE) {
        let sealed = std::str::from_utf8(&stored.body)
            .ok()
            .and_then(|text| state.secrets().open(text).ok())
            .and_then(|plaintext| serde_json::from_str::<SealedResponse>(&plaintext).ok());
        match sealed {
            Some(sealed)
                if sealed.bound_key_id.is_some()
                    && sealed.bound_key_id.as_deref() == requester_key =>
            {
                (sealed.content_type, sealed.body.into_bytes())
            }
            _ => {
                return ApiError::new(
                    ErrorCode::IdempotentReplayWithheld,
                    "A request with this Idempotency-Key already succeeded. Its response held a secret that is shown only once, so it is replayed only to the API key that made the request. Use a new Idempotency-Key to make a new request.",
                )
                .into_response();
            }
        }
    } else {
        (stored.content_type, stored.body)
    };
    let mut response = (status, body).into_response();
    if let Some(ct) = content_type.and_then(|ct| HeaderValue::from_str(&ct).ok()) {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response.headers_mut().insert(IDEMPOTENT_REPLAYED.clone(), HeaderValue::from_static("true"));
    response
}

/// Periodic clean-up of expired rate-limit windows and idempotency records.
pub async fn purge_expired(state: &AppState) {
    let now = Utc::now().timestamp();
    if let Err(error) = state.store().purge_rate_limits(now).await {
        tracing::warn!(message = "Rate-limit purge failed.", error = %error);
    }
    if let Err(error) = state.store().purge_idempotency(now - IDEMPOTENCY_RETENTION).await {
        tracing::warn!(message = "Idempotency purge failed.", error = %error);
    }
}

/// The purge interval.
pub const PURGE_EVERY: Duration = Duration::from_secs(300);
