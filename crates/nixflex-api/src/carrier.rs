//! Carrier endpoints (`/twilio/*`, ENGINE §2.2, DECISIONS #19): what Twilio calls when a call or a
//! text reaches an imported number.
//!
//! Every request passes [`verify_signature`] first: `X-Twilio-Signature` is checked against the
//! auth token of the number the request is for, over the URL Twilio requested (the configured
//! public URL plus path and query). A missing or wrong signature is refused with 403 before any
//! handler runs, so nothing happens.
//!
//! The number whose token verified the signature, and its account, are the request's only scope
//! ([`CarrierRequest`]): handlers find calls through [`CarrierRequest::own_call`], which only sees
//! calls of that account on that number. A request carrying another tenant's `CallSid` therefore
//! finds nothing and changes nothing (see `docs/carrier-webhooks.md`).
//!
//! Inbound calls are answered with a bidirectional media stream to `/twilio/stream`, whose
//! `start` message must carry the call's one-time token; texts are acknowledged without a reply
//! until SMS lands.

use std::pin::Pin;
use std::time::Duration;

use axum::body::{Body, to_bytes};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use futures::{SinkExt, StreamExt};
use nixflex_core::call::{CallRecord, CallStatus, Direction, EndedReason};
use nixflex_core::crypto::hash_secret;
use nixflex_core::error::ErrorCode;
use nixflex_core::ids;
use nixflex_core::number::PhoneNumber;
use nixflex_core::phone;
use nixflex_providers::twilio::{signature, twiml};
use nixflex_store::{Admission, CallUpdate, StoreError};

use crate::error::ApiError;
use crate::state::AppState;

/// Carrier webhooks are small; anything larger is not from Twilio.
const MAX_CARRIER_BODY: usize = 256 * 1024;

/// A verified carrier request: the number whose auth token signed it (and through it, the
/// account) and its form parameters. That number is everything the request may touch.
#[derive(Debug, Clone)]
pub struct CarrierRequest {
    /// The imported number whose auth token verified the signature.
    pub number: PhoneNumber,
    /// Form parameters (empty for JSON bodies).
    pub params: Vec<(String, String)>,
}

impl CarrierRequest {
    /// The last value of a parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The call with this Twilio SID, if it is a call of this request's account on this
    /// request's number; a SID of any other call is as good as unknown.
    async fn own_call(
        &self,
        state: &AppState,
        call_sid: &str,
    ) -> Result<Option<CallRecord>, StoreError> {
        state
            .store()
            .get_call_by_sid(&self.number.account_id, call_sid, Some(&self.number.phone_number))
            .await
    }
}

pub(crate) fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/twilio/voice", post(voice))
        .route("/twilio/status", post(status))
        .route("/twilio/sms", post(sms))
        .route("/twilio/after-stream", post(after_stream))
        .route_layer(axum::middleware::from_fn_with_state(state, verify_signature))
        // The media WebSocket is authenticated by the per-call token of its `start` message.
        .route("/twilio/stream", axum::routing::get(stream))
}

fn twiml_response(body: String) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(twiml::CONTENT_TYPE));
    response
}

fn refused(reason: &str) -> Response {
    tracing::warn!(message = "Carrier request refused: bad or missing signature.", reason);
    ApiError::new(
        ErrorCode::InvalidSignature,
        "The X-Twilio-Signature header is missing or does not match.",
    )
    .into_response()
}

fn form_pairs(raw: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// Checks `X-Twilio-Signature` with the auth token of the number the request is for.
pub(crate) async fn verify_signature(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_CARRIER_BODY).await else {
        return refused("body too large");
    };
    let Some(signature_header) = parts
        .headers
        .get(signature::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return refused("no signature header");
    };
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let params = if is_form { form_pairs(&bytes) } else { Vec::new() };
    let query = parts.uri.query().map(|q| form_pairs(q.as_bytes())).unwrap_or_default();
    let lookup = |name: &str| {
        params.iter().chain(&query).rev().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    };
    let account_sid = lookup("AccountSid");

    // The URL Twilio requested: the configured public base (or, without one, the Host header).
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let bases: Vec<String> = match &state.config().public_url {
        Some(base) => vec![base.clone()],
        None => {
            let host = parts.headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
            vec![format!("https://{host}"), format!("http://{host}")]
        }
    };

    let mut candidates: Vec<String> = Vec::new();
    for name in ["To", "Called", "From", "Caller"] {
        if let Some(number) = lookup(name).as_deref().and_then(phone::parse_e164)
            && !candidates.contains(&number)
        {
            candidates.push(number);
        }
    }
    for candidate in candidates {
        let number = match state.store().find_active_number(&candidate).await {
            Ok(Some(number)) => number,
            Ok(None) => continue,
            Err(error) => return ApiError::from(error).into_response(),
        };
        if account_sid.as_deref().is_some_and(|sid| sid != number.twilio_account_sid) {
            continue;
        }
        let Ok(token) = state.secrets().open(&number.twilio_auth_token_sealed) else { continue };
        let valid = bases.iter().any(|base| {
            let url = format!("{base}{path_and_query}");
            if is_form {
                signature::validate_form(&token, &url, &params, &signature_header)
            } else {
                signature::validate_json(&token, &url, &bytes, &signature_header)
            }
        });
        if valid {
            let mut req = Request::from_parts(parts, Body::from(bytes));
            req.extensions_mut().insert(CarrierRequest { number, params });
            return next.run(req).await;
        }
    }
    refused("no imported number whose auth token matches")
}

/// The pre-call gate's time limit (ENGINE §12).
const GATE_TIMEOUT: Duration = Duration::from_secs(5);

fn public_base(state: &AppState, headers: &HeaderMap) -> String {
    match &state.config().public_url {
        Some(base) => base.clone(),
        None => {
            let host =
                headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
            format!("http://{host}")
        }
    }
}

fn ws_url(base: &str) -> String {
    if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_owned()
    }
}

fn busy() -> Response {
    twiml_response(twiml::reject(twiml::RejectReason::Busy))
}

/// A call record for an inbound call; `status` and `ended_reason` say what happened to it.
fn inbound_record(
    request: &CarrierRequest,
    agent_id: Option<String>,
    status: CallStatus,
    ended_reason: Option<EndedReason>,
    token_hash: Option<String>,
) -> CallRecord {
    let now = nixflex_store::now();
    let ended = ended_reason.is_some();
    CallRecord {
        call_id: ids::new_call_id(),
        account_id: request.number.account_id.clone(),
        agent_id,
        direction: Direction::Inbound,
        from_number: request.param("From").unwrap_or_default().to_owned(),
        to_number: request.number.phone_number.clone(),
        twilio_call_sid: request.param("CallSid").map(str::to_owned),
        call_status: status,
        ended_reason,
        started_at: now,
        answered_at: None,
        ended_at: ended.then_some(now),
        duration_seconds: ended.then_some(0),
        transcript: Vec::new(),
        turns: Vec::new(),
        avg_latency_ms: None,
        recording_url: None,
        call_summary: None,
        caller_sentiment: None,
        call_successful: None,
        extracted_data: serde_json::Map::new(),
        voicemail_detected: false,
        campaign_id: None,
        metadata: None,
        cost_usd: None,
        precall_reject_reason: None,
        stream_token_hash: token_hash,
        created_at: now,
        updated_at: now,
    }
}

async fn refuse(
    state: &AppState,
    request: &CarrierRequest,
    agent_id: Option<String>,
    reason: EndedReason,
    detail: Option<String>,
) -> Response {
    let mut record = inbound_record(request, agent_id, CallStatus::Busy, Some(reason), None);
    record.precall_reject_reason = detail;
    if let Err(error) = state.store().insert_call(&record).await {
        tracing::warn!(message = "Could not record a refused call.", error = %error);
    }
    tracing::info!(message = "Inbound call refused with busy.", reason = reason.as_str(), call_id = %record.call_id);
    busy()
}

/// Asks the customer's pre-call gate; only an explicit `{"action": "reject"}` blocks, and any
/// failure lets the call through (fail-open, ENGINE §12).
async fn gate_says_reject(
    state: &AppState,
    account_id: &str,
    url: &str,
    body: serde_json::Value,
) -> Option<Option<String>> {
    let secrets = account_secrets(state, account_id).await;
    let response = match state.customer().post_signed(url, &body, &secrets, GATE_TIMEOUT).await {
        Ok(response) if response.status().is_success() => response,
        Ok(response) => {
            tracing::warn!(
                message = "Pre-call gate answered an error; connecting (fail-open).",
                status = response.status().as_u16()
            );
            return None;
        }
        Err(error) => {
            tracing::warn!(message = "Pre-call gate unreachable; connecting (fail-open).", error = %error);
            return None;
        }
    };
    let Ok(answer) = tokio::time::timeout(GATE_TIMEOUT, response.json::<serde_json::Value>()).await
    else {
        return None;
    };
    let answer = answer.ok()?;
    if answer
        .get("action")
        .and_then(|a| a.as_str())
        .is_some_and(|a| a.eq_ignore_ascii_case("reject"))
    {
        Some(answer.get("reason").and_then(|r| r.as_str()).map(|r| r.chars().take(500).collect()))
    } else {
        None
    }
}

/// The raw secrets of the account's active keys, which sign requests to its endpoints.
async fn account_secrets(state: &AppState, account_id: &str) -> Vec<String> {
    let page = nixflex_store::Page { limit: 100, offset: 0 };
    let Ok((keys, _)) = state.store().list_keys(account_id, page).await else { return Vec::new() };
    keys.iter()
        .filter(|k| k.revoked_at.is_none())
        .filter_map(|k| state.secrets().open(&k.secret_sealed).ok())
        .collect()
}

/// `POST /twilio/voice`: an inbound call. Answered with `<Connect><Stream>` when the number
/// has an active agent, inbound calls are on, the pre-call gate does not reject and the account
/// is under its concurrent-call cap; otherwise a busy signal (never answered, never charged).
async fn voice(
    State(state): State<AppState>,
    headers: HeaderMap,
    Extension(request): Extension<CarrierRequest>,
) -> Response {
    // A retried webhook for a call this number already answered: answer it again with a fresh
    // token (Twilio streams with the token of the answer it received, so the old one is
    // replaced). Only this number's calls are seen here: another tenant's `CallSid` falls through
    // to a new call, whose insert the unique SID refuses (busy, below).
    if let Some(call_sid) = request.param("CallSid") {
        match request.own_call(&state, call_sid).await {
            Ok(Some(existing)) => return answer_again(&state, &headers, &existing).await,
            Ok(None) => {}
            Err(error) => {
                tracing::error!(message = "Store failed while answering a call.", error = %error);
                return busy();
            }
        }
    }
    let number = &request.number;
    let Some(agent_id) = number.agent_id.clone() else {
        return refuse(&state, &request, None, EndedReason::NoAgent, None).await;
    };
    if !number.inbound_enabled {
        return refuse(&state, &request, Some(agent_id), EndedReason::InboundDisabled, None).await;
    }
    let agent = match state.store().get_agent(&number.account_id, &agent_id).await {
        Ok(Some((agent, _))) => agent,
        Ok(None) => return refuse(&state, &request, None, EndedReason::NoAgent, None).await,
        Err(error) => {
            tracing::error!(message = "Store failed while answering a call.", error = %error);
            return busy();
        }
    };
    if !agent.settings.is_active {
        return refuse(&state, &request, Some(agent_id), EndedReason::AgentInactive, None).await;
    }
    // Pre-warm speech recognition while the gate and the carrier do their work.
    let token = ids::new_key_secret();
    let mut record = inbound_record(
        &request,
        Some(agent_id.clone()),
        CallStatus::InProgress,
        None,
        Some(hash_secret(&token)),
    );
    state
        .engine()
        .prewarm_stt(&record.call_id, nixflex_engine::session_stt_options(&agent.settings));

    let gate_url = match &number.precall_url {
        Some(url) => Some(url.clone()),
        None => state
            .store()
            .get_agent_precall(&number.account_id, &agent_id)
            .await
            .ok()
            .flatten()
            .flatten(),
    };
    if let Some(url) = gate_url {
        let body = serde_json::json!({
            "event": "call.inbound",
            "from": record.from_number,
            "to": record.to_number,
            "call_id": request.param("CallSid").unwrap_or_default(),
        });
        if let Some(reason) = gate_says_reject(&state, &number.account_id, &url, body).await {
            state.engine().forget_prewarmed(&record.call_id);
            return refuse(&state, &request, Some(agent_id), EndedReason::PrecallRejected, reason)
                .await;
        }
    }

    let account = state.store().get_account(&number.account_id).await.ok().flatten();
    let cap = account
        .and_then(|a| a.max_concurrent_calls)
        .unwrap_or(state.engine().config().default_max_concurrent_calls);
    let alive_after = chrono::Utc::now()
        - chrono::Duration::from_std(state.engine().config().heartbeat_stale_after)
            .unwrap_or_default();
    record.started_at = nixflex_store::now();
    match state.store().admit_call(&record, cap, alive_after).await {
        Ok(Admission::Admitted) => {}
        Ok(Admission::AtCapacity { active }) => {
            state.engine().forget_prewarmed(&record.call_id);
            tracing::info!(message = "Account at its concurrent-call cap.", account_id = %number.account_id, active, cap);
            return refuse(
                &state,
                &request,
                Some(agent_id),
                EndedReason::ConcurrentCallLimit,
                None,
            )
            .await;
        }
        Err(StoreError::Conflict { .. }) => {
            // The SID is a call of another number or account (a retry would have found its own
            // call above): nothing of that call is touched or revealed.
            state.engine().forget_prewarmed(&record.call_id);
            tracing::warn!(
                message = "Voice webhook names a CallSid this number does not own; refused."
            );
            return busy();
        }
        Err(error) => {
            state.engine().forget_prewarmed(&record.call_id);
            tracing::error!(message = "Store failed while admitting a call.", error = %error);
            return busy();
        }
    }
    tracing::info!(message = "Inbound call answered.", call_id = %record.call_id, agent_id = %agent_id);
    connect_twiml(&state, &headers, &record.call_id, &token)
}

/// Answers a retried voice webhook of `call` (this number's) again, with a new stream token.
async fn answer_again(state: &AppState, headers: &HeaderMap, call: &CallRecord) -> Response {
    if call.ended_at.is_some() || call.call_status == CallStatus::Busy {
        return busy();
    }
    let token = ids::new_key_secret();
    let update =
        CallUpdate { stream_token_hash: Some(hash_secret(&token)), ..CallUpdate::default() };
    match state.store().update_call(&call.call_id, &update, nixflex_store::now()).await {
        Ok(true) => {
            tracing::info!(message = "Retried voice webhook answered again.", call_id = %call.call_id);
            connect_twiml(state, headers, &call.call_id, &token)
        }
        Ok(false) => busy(),
        Err(error) => {
            tracing::error!(message = "Store failed while answering a retried call.", error = %error);
            busy()
        }
    }
}

fn connect_twiml(state: &AppState, headers: &HeaderMap, call_id: &str, token: &str) -> Response {
    let base = public_base(state, headers);
    let stream = twiml::ConnectStream {
        action: Some(format!("{base}/twilio/after-stream")),
        url: format!("{}/twilio/stream", ws_url(&base)),
        parameters: vec![
            ("call_id".to_owned(), call_id.to_owned()),
            ("token".to_owned(), token.to_owned()),
        ],
        ..twiml::ConnectStream::default()
    };
    twiml_response(twiml::connect_stream(&stream))
}

/// `POST /twilio/status`: call progress from Twilio. Final statuses end the call record
/// (the session, when it ran, records why it ended). Only a call of the signing number is
/// updated; any other `CallSid` gets the same empty answer as an unknown one.
async fn status(
    State(state): State<AppState>,
    Extension(request): Extension<CarrierRequest>,
) -> Response {
    let (Some(call_sid), Some(call_status)) =
        (request.param("CallSid"), request.param("CallStatus"))
    else {
        return twiml_response(twiml::empty());
    };
    let Some(call_status) = CallStatus::parse(call_status) else {
        return twiml_response(twiml::empty());
    };
    let call = match request.own_call(&state, call_sid).await {
        Ok(Some(call)) => call,
        Ok(None) => return twiml_response(twiml::empty()),
        Err(error) => {
            tracing::warn!(message = "Could not look up a call for its status.", error = %error);
            return twiml_response(twiml::empty());
        }
    };
    let final_status = call_status.is_final();
    let update = CallUpdate {
        call_status: Some(call_status),
        ended_at: final_status.then(nixflex_store::now),
        duration_seconds: request.param("CallDuration").and_then(|d| d.parse().ok()),
        ..CallUpdate::default()
    };
    if let Err(error) =
        state.store().update_call(&call.call_id, &update, nixflex_store::now()).await
    {
        tracing::warn!(message = "Could not apply a call status.", error = %error);
    }
    twiml_response(twiml::empty())
}

/// `POST /twilio/after-stream`: the media stream closed; hang up (the safety net of the
/// three-layer hang-up: the session's REST hang-up and the stream close come first). It reads
/// and writes nothing, so it has nothing to scope.
async fn after_stream(Extension(_request): Extension<CarrierRequest>) -> Response {
    twiml_response(twiml::hangup())
}

/// `POST /twilio/sms`: an inbound text. Acknowledged without a reply until SMS lands; when it
/// does, the message belongs to the signing number ([`CarrierRequest::number`]).
async fn sms(_request: Extension<CarrierRequest>) -> Response {
    twiml_response(twiml::empty())
}

/// The close code and reason (at most 123 bytes) for a refused media stream: 1008 (policy
/// violation) when the stream is not a call we set up, 1011 (internal error) when we failed.
fn close_for(refused: &nixflex_engine::StreamRefused) -> (u16, &'static str) {
    use nixflex_engine::StreamRefused;
    match refused {
        StreamRefused::NoStart => {
            (1008, "no start message with the call's parameters arrived in time")
        }
        StreamRefused::BadToken => (1008, "unknown call or invalid stream token"),
        StreamRefused::Gone => (1008, "the call has ended or its number or agent no longer exists"),
        StreamRefused::Store(_) => (1011, "the server could not load the call; try again"),
    }
}

/// `GET /twilio/stream`: the media WebSocket of a call.
async fn stream(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    // Twilio's messages are a few hundred bytes; the default 128 KiB read buffer is zero-filled
    // on every read and cost a quarter of the server's CPU at 500 calls.
    upgrade.read_buffer_size(4096).on_upgrade(move |socket: WebSocket| async move {
        let (sink, source) = socket.split();
        let reader = source
            .take_while(|message| futures::future::ready(!matches!(message, Ok(Message::Close(_)))))
            .filter_map(|message| async move {
                match message {
                    Ok(Message::Text(text)) => {
                        Some(Ok::<String, axum::Error>(text.as_str().to_owned()))
                    }
                    Ok(_) => None,
                    Err(error) => Some(Err(error)),
                }
            });
        let writer = sink.with(|text: String| {
            futures::future::ready(Ok::<Message, axum::Error>(Message::Text(text.into())))
        });
        let reader = Box::pin(reader);
        let mut writer = Box::pin(writer);
        match state.engine().run_media_stream(reader, &mut writer).await {
            Ok(reason) => {
                tracing::debug!(message = "Media stream finished.", ended_reason = reason.as_str())
            }
            Err(refused) => {
                tracing::warn!(message = "Media stream refused.", reason = %refused);
                // Say why in a close frame rather than dropping the connection.
                let (code, reason) = close_for(&refused);
                let mut sink = Pin::into_inner(writer).into_inner();
                let frame = CloseFrame { code, reason: reason.into() };
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    sink.send(Message::Close(Some(frame))),
                )
                .await;
            }
        }
    })
}
