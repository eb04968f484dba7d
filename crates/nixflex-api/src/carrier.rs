//! Carrier endpoints (`/twilio/*`, docs/engine.md#carrier-endpoints, docs/decisions.md#carrier-endpoints): what Twilio calls when a call or a
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
//! Whether an inbound call is answered is decided by the engine's call service
//! (`Engine::admit_inbound`); this module only speaks HTTP and TwiML. Answered calls get a
//! bidirectional media stream to `/twilio/stream`, whose `start` message must carry the call's
//! one-time token. Texts are logged and answered by the SMS service (`nixflex_engine::sms`).

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
use nixflex_core::error::ErrorCode;
use nixflex_core::ids::{CallId, E164};
use nixflex_core::number::PhoneNumber;
use nixflex_core::phone;
use nixflex_engine::carrier_recording::RecordingFetch;
use nixflex_engine::transfer::{
    DialOutcome, NotConnected, RESUME_NUMBER_PARAM, RESUME_PARAM, WarmEvent,
};
use nixflex_engine::{Admission, InboundCall};
use nixflex_providers::twilio::{signature, twiml};
use nixflex_store::{CallUpdate, StoreError};

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

    /// The outbound call named by our `call_id` in the callback URL (the URLs we give Twilio
    /// when dialling carry it), if it is a call of this account placed from this number and
    /// its carrier SID, when known, is `call_sid`. This finds a call whose SID is not stored
    /// yet: Twilio's first callbacks can arrive before its answer to the dial.
    async fn own_outbound_call(
        &self,
        state: &AppState,
        call_id: Option<&str>,
        call_sid: Option<&str>,
    ) -> Result<Option<CallRecord>, StoreError> {
        let Some(call_id) = call_id else { return Ok(None) };
        let call = state.store().get_call(&self.number.account_id, &CallId::from(call_id)).await?;
        Ok(call.filter(|call| {
            call.direction == Direction::Outbound
                && call.from_number == self.number.phone_number.as_str()
                && match (&call.twilio_call_sid, call_sid) {
                    (Some(known), Some(given)) => known == given,
                    _ => true,
                }
        }))
    }

    /// The call a status or AMD callback is about: by its SID, else by our call id.
    async fn callback_call(
        &self,
        state: &AppState,
        call_id: Option<&str>,
        call_sid: &str,
    ) -> Result<Option<CallRecord>, StoreError> {
        match self.own_call(state, call_sid).await? {
            Some(call) => Ok(Some(call)),
            None => self.own_outbound_call(state, call_id, Some(call_sid)).await,
        }
    }
}

/// The `call_id` query parameter of the callback URLs of outbound calls.
fn query_call_id(uri: &axum::http::Uri) -> Option<String> {
    form_pairs(uri.query()?.as_bytes())
        .into_iter()
        .rev()
        .find(|(k, _)| k == "call_id")
        .map(|(_, v)| v)
}

pub(crate) fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/twilio/voice", post(voice))
        .route("/twilio/status", post(status))
        .route("/twilio/sms", post(sms))
        .route("/twilio/sms-status", post(sms_status))
        .route("/twilio/after-stream", post(after_stream))
        .route("/twilio/recording-status", post(recording_status))
        .route("/twilio/amd", post(amd))
        .route("/twilio/transfer", post(transfer))
        .route_layer(axum::middleware::from_fn_with_state(state, verify_signature))
        // The media WebSocket is authenticated by the per-call token of its `start` message.
        .route("/twilio/stream", axum::routing::get(stream))
        // Twilio's `<Play>` fetch is not a webhook we can count on being signed: the URL carries a
        // one-time token.
        .route("/twilio/whisper", axum::routing::get(whisper))
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

    // `number` is ours: Twilio's recording status callback names no phone number, so its URL
    // carries the business number (`Recordings::status_callback_url`).
    let mut candidates: Vec<String> = Vec::new();
    for name in ["To", "Called", "From", "Caller", "number"] {
        if let Some(number) = lookup(name).as_deref().and_then(phone::parse_e164)
            && !candidates.contains(&number)
        {
            candidates.push(number);
        }
    }
    for candidate in candidates {
        let number = match state.store().find_active_number(&E164::from(candidate)).await {
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

/// `POST /twilio/voice`: an inbound call. Whether it is answered is the engine's call service's
/// decision ([`nixflex_engine::Engine::admit_inbound`], scoped to the signing number); this
/// handler turns it into TwiML: `<Connect><Stream>` with the call id and one-time token, or a
/// busy signal (never answered, never charged).
async fn voice(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Extension(request): Extension<CarrierRequest>,
) -> Response {
    // An outbound call of ours was answered: the answer URL we gave Twilio names the call.
    if let Some(call_id) = query_call_id(&uri) {
        let call = match request
            .own_outbound_call(&state, Some(&call_id), request.param("CallSid"))
            .await
        {
            Ok(Some(call)) => call,
            Ok(None) => return twiml_response(twiml::hangup()),
            Err(error) => {
                tracing::warn!(message = "Could not look up an answered outbound call.", error = %error);
                return ApiError::from(error).into_response();
            }
        };
        return match state.engine().answer_outbound(&call, request.param("CallSid")).await {
            Admission::Connect { call_id, token } => {
                connect_twiml(&state, &headers, &call_id, &token)
            }
            // `<Reject>` is only for incoming calls; an answered outbound call is hung up.
            Admission::Busy { .. } => twiml_response(twiml::hangup()),
        };
    }
    let call = InboundCall {
        number: &request.number,
        from: request.param("From").unwrap_or_default(),
        call_sid: request.param("CallSid"),
    };
    match state.engine().admit_inbound(call).await {
        Admission::Connect { call_id, token } => connect_twiml(&state, &headers, &call_id, &token),
        Admission::Busy { .. } => busy(),
    }
}

fn connect_twiml(state: &AppState, headers: &HeaderMap, call_id: &str, token: &str) -> Response {
    connect_twiml_with(state, headers, call_id, token, Vec::new())
}

fn connect_twiml_with(
    state: &AppState,
    headers: &HeaderMap,
    call_id: &str,
    token: &str,
    more: Vec<(String, String)>,
) -> Response {
    twiml_response(connect_xml(state, headers, call_id, token, more))
}

/// `<Connect><Stream>` to our media endpoint with the call id, its one-time token and `more`.
fn connect_xml(
    state: &AppState,
    headers: &HeaderMap,
    call_id: &str,
    token: &str,
    more: Vec<(String, String)>,
) -> String {
    let base = public_base(state, headers);
    let mut parameters =
        vec![("call_id".to_owned(), call_id.to_owned()), ("token".to_owned(), token.to_owned())];
    parameters.extend(more);
    let stream = twiml::ConnectStream {
        action: Some(format!("{base}/twilio/after-stream")),
        url: format!("{}/twilio/stream", ws_url(&base)),
        parameters,
        ..twiml::ConnectStream::default()
    };
    twiml::connect_stream(&stream)
}

/// `POST /twilio/transfer?call_id=…&number=…[&event=answered]`: the carrier reports on a
/// transfer (docs/carrier-webhooks.md#the-endpoints). With `event=answered` it is the `<Number url>`
/// request made when the destination answers: the call ends `transferred` and the empty answer
/// lets Twilio connect the two. Otherwise it is the `<Dial action>` request after the dial:
/// `DialCallStatus` `completed`/`answered` ends the call `transferred` (if the answer did not
/// already) and hangs up; `busy`/`no-answer`/`failed`/`canceled` returns the caller to the
/// agent on a new media stream. Only a call of the signing number whose carrier SID is the
/// request's `CallSid` (or, on the called party's leg, `ParentCallSid`) is touched; anything
/// else is answered with a hang-up and changes nothing.
async fn transfer(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Extension(request): Extension<CarrierRequest>,
) -> Response {
    let query: Vec<(String, String)> =
        uri.query().map(|q| form_pairs(q.as_bytes())).unwrap_or_default();
    let query_param =
        |name: &str| query.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let event = query_param("event");
    let answered = event.as_deref() == Some("answered");
    let Some(call_id) = query_param("call_id") else {
        return twiml_response(twiml::hangup());
    };
    if let Some(warm) = event.as_deref().and_then(WarmEvent::parse) {
        let number = query_param("number").and_then(|n| phone::parse_e164(&n)).unwrap_or_default();
        let callback = WarmCallback { call_id, number, event: warm, token: query_param("token") };
        return warm_transfer(&state, &headers, &request, callback).await;
    }
    let number = query_param("number").and_then(|n| phone::parse_e164(&n)).unwrap_or_default();
    let call =
        match state.store().get_call(&request.number.account_id, &CallId::from(call_id)).await {
            Ok(call) => call,
            Err(error) => {
                tracing::warn!(message = "Could not look up a transferred call.", error = %error);
                return ApiError::from(error).into_response();
            }
        };
    let sids = [request.param("CallSid"), request.param("ParentCallSid")];
    let call = call.filter(|call| {
        let business = match call.direction {
            Direction::Inbound => &call.to_number,
            Direction::Outbound => &call.from_number,
        };
        business == request.number.phone_number.as_str()
            && call.twilio_call_sid.as_deref().is_some_and(|sid| sids.contains(&Some(sid)))
    });
    let Some(call) = call else {
        tracing::warn!(message = "Transfer callback for a call this number does not have.");
        return twiml_response(twiml::hangup());
    };
    let engine = state.engine();
    let outcome = if answered {
        None
    } else {
        Some(DialOutcome::parse(request.param("DialCallStatus").unwrap_or("failed")))
    };
    match outcome {
        None | Some(DialOutcome::Connected) => {
            if let Err(error) = engine.transfer_connected(&call).await {
                tracing::warn!(message = "Could not record a transfer.", error = %error);
                return ApiError::from(error).into_response();
            }
            if answered { twiml_response(twiml::empty()) } else { twiml_response(twiml::hangup()) }
        }
        Some(DialOutcome::NotConnected(status)) => {
            tracing::info!(message = "Transfer not connected; the caller returns to the agent.", call_id = %call.call_id, dial_call_status = status.as_str());
            match engine.transfer_failed(&call).await {
                Admission::Connect { call_id, token } => connect_twiml_with(
                    &state,
                    &headers,
                    &call_id,
                    &token,
                    vec![
                        (RESUME_PARAM.to_owned(), status.as_str().to_owned()),
                        (RESUME_NUMBER_PARAM.to_owned(), number),
                    ],
                ),
                Admission::Busy { .. } => twiml_response(twiml::hangup()),
            }
        }
    }
}

/// The query of a warm transfer's callback.
struct WarmCallback {
    call_id: String,
    number: String,
    event: WarmEvent,
    token: Option<String>,
}

/// The callbacks of a warm transfer (docs/engine.md#transfers): `warm-answered` (the
/// destination leg's answer URL: the call ends `transferred`, the destination hears the whisper
/// and enters the conference), `warm-status` (its final status: when nobody answered, the
/// caller's live call is redirected back to the agent) and `warm-held` (the caller's
/// `<Dial action>` after the conference: hang up). The destination leg's requests carry its own
/// SID, so they are matched by the one-time token instead; the caller's by its SID.
async fn warm_transfer(
    state: &AppState,
    headers: &HeaderMap,
    request: &CarrierRequest,
    callback: WarmCallback,
) -> Response {
    let WarmCallback { call_id, number, event, token } = callback;
    let call =
        match state.store().get_call(&request.number.account_id, &CallId::from(call_id)).await {
            Ok(call) => call,
            Err(error) => {
                tracing::warn!(message = "Could not look up a transferred call.", error = %error);
                return ApiError::from(error).into_response();
            }
        };
    let call = call.filter(|call| {
        let business = match call.direction {
            Direction::Inbound => &call.to_number,
            Direction::Outbound => &call.from_number,
        };
        business == request.number.phone_number.as_str()
    });
    let Some(call) = call else {
        tracing::warn!(message = "Warm transfer callback for a call this number does not have.");
        return twiml_response(twiml::hangup());
    };
    let engine = state.engine();
    let live_with_token = call.ended_at.is_none()
        && token
            .as_deref()
            .is_some_and(|token| nixflex_engine::Engine::token_matches(&call, token));
    match event {
        WarmEvent::HoldEnded => twiml_response(twiml::hangup()),
        WarmEvent::Answered => {
            let Some(token) = token.filter(|_| live_with_token) else {
                // The caller hung up on hold, or the token is not this call's.
                return twiml_response(twiml::hangup());
            };
            if let Err(error) = engine.transfer_connected(&call).await {
                tracing::warn!(message = "Could not record a transfer.", error = %error);
                return ApiError::from(error).into_response();
            }
            let base = public_base(state, headers);
            twiml_response(nixflex_engine::transfer::destination_twiml(
                &base,
                call.call_id.as_str(),
                &token,
            ))
        }
        WarmEvent::Status => {
            let status = request.param("CallStatus").unwrap_or_default();
            let Some(not_connected) = NotConnected::parse(status) else {
                // `completed` after the conference, or a progress event.
                return twiml_response(twiml::empty());
            };
            let Some(caller_sid) = call.twilio_call_sid.clone().filter(|_| live_with_token) else {
                return twiml_response(twiml::empty());
            };
            tracing::info!(message = "Warm transfer not answered; the caller returns to the agent.", call_id = %call.call_id, call_status = status);
            let Admission::Connect { call_id, token } = engine.transfer_failed(&call).await else {
                return twiml_response(twiml::empty());
            };
            let xml = connect_xml(
                state,
                headers,
                &call_id,
                &token,
                vec![
                    (RESUME_PARAM.to_owned(), not_connected.as_str().to_owned()),
                    (RESUME_NUMBER_PARAM.to_owned(), number),
                ],
            );
            let Some(credentials) =
                nixflex_engine::engine::number_credentials(state.secrets(), &request.number)
            else {
                tracing::error!(message = "The number's auth token cannot be unsealed; the caller stays on hold.", call_id = %call.call_id);
                return twiml_response(twiml::empty());
            };
            if let Err(error) = engine
                .twilio()
                .update_call(
                    &credentials,
                    &caller_sid,
                    &nixflex_providers::twilio::UpdateCall::twiml(xml),
                )
                .await
            {
                tracing::warn!(message = "Could not return the caller from a warm transfer.", call_id = %call.call_id, error = %error);
            }
            twiml_response(twiml::empty())
        }
    }
}

/// `POST /twilio/status`: call progress from Twilio. Final statuses end the call record
/// (the session, when it ran, records why it ended). Only a call of the signing number is
/// updated; any other `CallSid` gets the same empty answer as an unknown one.
async fn status(
    State(state): State<AppState>,
    uri: axum::http::Uri,
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
    let call_id = query_call_id(&uri);
    let call = match request.callback_call(&state, call_id.as_deref(), call_sid).await {
        Ok(Some(call)) => call,
        Ok(None) => return twiml_response(twiml::empty()),
        Err(error) => {
            tracing::warn!(message = "Could not look up a call for its status.", error = %error);
            return twiml_response(twiml::empty());
        }
    };
    let final_status = call_status.is_final();
    // A transferred call's duration is the AI's part (billing stops at the hand-off), not the
    // carrier's whole call.
    let transferred = call.ended_reason == Some(EndedReason::Transferred);
    let mut update = CallUpdate {
        call_status: Some(call_status),
        ended_at: final_status.then(nixflex_store::now),
        duration_seconds: request
            .param("CallDuration")
            .and_then(|d| d.parse().ok())
            .filter(|_| !transferred),
        twilio_call_sid: Some(call_sid.to_owned()),
        ..CallUpdate::default()
    };
    if call.direction == Direction::Outbound && call.answered_at.is_none() {
        if final_status {
            // An outbound call that never had a conversation ends with the carrier's outcome
            // (docs/engine.md#ended-reasons), and what the carrier said about it.
            update.ended_reason = carrier_outcome(call_status);
            update.duration_seconds = update.duration_seconds.or(Some(0));
            update.carrier_details = Some(carrier_details(&request, call_status));
        } else {
            // Ringing counts against the cap like a live call: keep it fresh.
            update.heartbeat_at = Some(nixflex_store::now());
        }
    }
    // A call that never had a media session (its session sets `answered_at` when it starts)
    // ends here, so its follow-ups are queued here, in the same transaction. A call with a
    // session gets them from the session's final write (or from the sweeper if its node died).
    let engine = state.engine();
    let written = if final_status && call.answered_at.is_none() {
        let follow_ups = engine.call_follow_ups(&call.call_id, &call.account_id);
        let written = state
            .store()
            .finish_call(&call.call_id, &update, nixflex_store::now(), &follow_ups)
            .await;
        if written.is_ok() {
            engine.wake_follow_ups();
        }
        written
    } else {
        state.store().update_call(&call.call_id, &update, nixflex_store::now()).await
    };
    if let Err(error) = written {
        tracing::warn!(message = "Could not apply a call status.", error = %error);
    }
    twiml_response(twiml::empty())
}

/// The `ended_reason` of an outbound call the carrier ended before any conversation.
fn carrier_outcome(status: CallStatus) -> Option<EndedReason> {
    match status {
        CallStatus::Busy => Some(EndedReason::Busy),
        CallStatus::NoAnswer => Some(EndedReason::NoAnswer),
        CallStatus::Failed => Some(EndedReason::Failed),
        CallStatus::Canceled => Some(EndedReason::Canceled),
        _ => None,
    }
}

/// What Twilio's final status callback said about an unanswered call (the fields it sends
/// that explain an outcome), kept on the call as `carrier_details`.
fn carrier_details(request: &CarrierRequest, status: CallStatus) -> serde_json::Value {
    let mut details = serde_json::Map::new();
    details.insert("carrier_status".to_owned(), status.as_str().into());
    for (param, key) in [
        ("SipResponseCode", "sip_response_code"),
        ("ErrorCode", "error_code"),
        ("ErrorMessage", "error_message"),
        ("AnsweredBy", "answered_by"),
    ] {
        if let Some(value) = request.param(param).filter(|v| !v.is_empty()) {
            let value = value.parse::<i64>().map_or_else(|_| value.into(), Into::into);
            details.insert(key.to_owned(), value);
        }
    }
    serde_json::Value::Object(details)
}

/// `POST /twilio/amd`: Twilio's asynchronous answering-machine verdict on an outbound call
/// (`AnsweredBy`: `human`, `machine_start`, `machine_end_beep`, …), stored as the call's
/// `amd_result`. Acting on it (voicemail handling) is separate. Only a call of the signing
/// number is touched.
async fn amd(
    State(state): State<AppState>,
    uri: axum::http::Uri,
    Extension(request): Extension<CarrierRequest>,
) -> Response {
    let (Some(call_sid), Some(answered_by)) =
        (request.param("CallSid"), request.param("AnsweredBy"))
    else {
        return twiml_response(twiml::empty());
    };
    const KNOWN: &[&str] = &[
        "human",
        "machine_start",
        "machine_end_beep",
        "machine_end_silence",
        "machine_end_other",
        "fax",
        "unknown",
    ];
    if !KNOWN.contains(&answered_by) {
        return twiml_response(twiml::empty());
    }
    let call_id = query_call_id(&uri);
    let call = match request.callback_call(&state, call_id.as_deref(), call_sid).await {
        Ok(Some(call)) => call,
        Ok(None) => return twiml_response(twiml::empty()),
        Err(error) => {
            tracing::warn!(message = "Could not look up a call for its AMD result.", error = %error);
            return ApiError::from(error).into_response();
        }
    };
    let update = CallUpdate {
        amd_result: Some(answered_by.to_owned()),
        twilio_call_sid: Some(call_sid.to_owned()),
        ..CallUpdate::default()
    };
    if let Err(error) =
        state.store().update_call(&call.call_id, &update, nixflex_store::now()).await
    {
        tracing::warn!(message = "Could not store an AMD result.", error = %error);
        return ApiError::from(error).into_response();
    }
    tracing::info!(message = "Answering-machine detection result stored.", call_id = %call.call_id, answered_by);
    twiml_response(twiml::empty())
}

/// `GET /twilio/whisper?call_id=…&token=…`: the audio of a warm transfer's whisper (WAV), which
/// Twilio plays to the destination before connecting the caller. Authenticated by the one-time
/// token the transfer put in the URL; anything else is 404 `not_found`, a provider failure 502.
async fn whisper(State(state): State<AppState>, uri: axum::http::Uri) -> Response {
    let query: Vec<(String, String)> =
        uri.query().map(|q| form_pairs(q.as_bytes())).unwrap_or_default();
    let param = |name: &str| {
        query.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("")
    };
    match state.engine().whisper_audio(param("call_id"), param("token")).await {
        Ok(wav) => {
            let mut response = wav.into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
            response
        }
        Err(nixflex_engine::transfer::WhisperError::NotFound) => {
            ApiError::new(ErrorCode::CallNotFound, "No live call with this whisper token.")
                .into_response()
        }
        Err(nixflex_engine::transfer::WhisperError::Store(error)) => {
            ApiError::from(error).into_response()
        }
        Err(error @ nixflex_engine::transfer::WhisperError::Provider(_)) => {
            tracing::warn!(message = "The whisper of a warm transfer could not be made.", error = %error);
            ApiError::new(ErrorCode::ProviderError, "The whisper could not be made.")
                .into_response()
        }
    }
}

/// `POST /twilio/after-stream`: the media stream closed; hang up (the safety net of the
/// three-layer hang-up: the session's REST hang-up and the stream close come first). It reads
/// and writes nothing, so it has nothing to scope.
async fn after_stream(Extension(_request): Extension<CarrierRequest>) -> Response {
    twiml_response(twiml::hangup())
}

/// `POST /twilio/recording-status`: the carrier's recording of a call changed status
/// (docs/recordings.md#carrier-recordings). `completed` queues one `recording.fetch` job per call
/// and recording SID (a retried callback queues nothing more); `absent` or `failed` means there is
/// nothing to fetch, so the call's follow-up stops waiting for it. Only a call of the signing
/// number is considered; any other `CallSid` changes nothing. Answered with an empty 200.
async fn recording_status(
    State(state): State<AppState>,
    Extension(request): Extension<CarrierRequest>,
) -> Response {
    let (Some(call_sid), Some(recording_sid), Some(status)) =
        (request.param("CallSid"), request.param("RecordingSid"), request.param("RecordingStatus"))
    else {
        return twiml_response(twiml::empty());
    };
    let call = match request.own_call(&state, call_sid).await {
        Ok(Some(call)) => call,
        Ok(None) => return twiml_response(twiml::empty()),
        Err(error) => {
            tracing::warn!(message = "Could not look up a call for its recording.", error = %error);
            return ApiError::from(error).into_response();
        }
    };
    let engine = state.engine();
    match status {
        "completed" => {
            let fetch = RecordingFetch {
                call_id: call.call_id.to_string(),
                account_id: call.account_id.to_string(),
                recording_sid: recording_sid.to_owned(),
                duration_s: request.param("RecordingDuration").and_then(|d| d.parse().ok()),
            };
            let queued = match fetch.job(engine.config().follow_up_max_attempts) {
                Ok(job) => state.store().enqueue_job(&job).await.map_err(ApiError::from),
                Err(error) => {
                    tracing::warn!(message = "Could not build the recording job.", error = %error);
                    return twiml_response(twiml::empty());
                }
            };
            match queued {
                Ok(_) => engine.wake_follow_ups(),
                // Twilio retries a callback that failed: the next try queues it.
                Err(error) => return error.into_response(),
            }
        }
        "absent" | "failed" => {
            tracing::warn!(message = "The carrier reports no recording of the call; nothing is stored.", call_id = %call.call_id, recording_sid, recording_status = status, error_code = request.param("ErrorCode").unwrap_or(""));
            if let Some(recordings) = engine.recordings()
                && let Err(error) =
                    recordings.forget_carrier_recording(&call.call_id, recording_sid).await
            {
                tracing::warn!(message = "Could not note that the recording failed.", error = %error);
            }
        }
        _ => {}
    }
    twiml_response(twiml::empty())
}

/// `POST /twilio/sms`: an inbound text to the signing number (docs/sms.md#inbound-texts). It is
/// logged once per `MessageSid` and, unless it is an opt-out keyword, one `sms.reply` job is
/// queued with it; the webhook answers an empty `<Response/>` at once and the reply goes out
/// through the Messages API, so a slow LLM never holds Twilio's request. A database failure
/// answers 503, so Twilio retries (the retry finds the message it already logged).
async fn sms(
    State(state): State<AppState>,
    Extension(request): Extension<CarrierRequest>,
) -> Response {
    let (Some(message_sid), Some(from)) = (
        request.param("MessageSid").or_else(|| request.param("SmsSid")),
        request.param("From").and_then(phone::parse_e164),
    ) else {
        return twiml_response(twiml::empty());
    };
    let Some(sms) = state.engine().sms() else {
        return twiml_response(twiml::empty());
    };
    let body = request.param("Body").unwrap_or_default();
    match sms.receive(&request.number, message_sid, &from, body).await {
        Ok(_) => {
            state.engine().wake_follow_ups();
            twiml_response(twiml::empty())
        }
        Err(error) => {
            tracing::warn!(message = "Could not log an inbound text; Twilio will retry.", error = %error);
            ApiError::from(error).into_response()
        }
    }
}

/// `POST /twilio/sms-status`: a status callback of a text we sent (docs/sms.md#statuses). Only
/// a message of the signing number's account changes, and only forwards: a late `sent` after
/// `delivered` changes nothing.
async fn sms_status(
    State(state): State<AppState>,
    Extension(request): Extension<CarrierRequest>,
) -> Response {
    let (Some(message_sid), Some(status)) = (
        request.param("MessageSid").or_else(|| request.param("SmsSid")),
        request.param("MessageStatus").or_else(|| request.param("SmsStatus")),
    ) else {
        return twiml_response(twiml::empty());
    };
    let Some(sms) = state.engine().sms() else {
        return twiml_response(twiml::empty());
    };
    let error_code = request.param("ErrorCode").and_then(|c| c.trim().parse::<i64>().ok());
    let error_message = request.param("ErrorMessage");
    let callback = nixflex_engine::sms::StatusCallback {
        account_id: &request.number.account_id,
        twilio_sid: message_sid,
        status,
        error_code,
        error_message,
        from: request.param("From"),
        to: request.param("To"),
    };
    match sms.apply_status(&callback).await {
        Ok(_) => twiml_response(twiml::empty()),
        Err(error) => {
            tracing::warn!(message = "Could not apply a message status; Twilio will retry.", error = %error);
            ApiError::from(error).into_response()
        }
    }
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
                    // The socket's own buffer, handed over without a copy.
                    Ok(Message::Text(text)) => Some(Ok::<_, axum::Error>(text)),
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
