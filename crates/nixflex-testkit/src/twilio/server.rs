//! The emulator's HTTP handler: one fallback route that applies injected delays and failures,
//! authenticates (HTTP Basic, Account SID + auth token), routes the v2010 paths by hand (Twilio's
//! `{Sid}.json` segments do not fit path extractors) and records every request.
//!
//! Error bodies have Twilio's shape (`twilio-python` `TwilioRestException` reads `code`,
//! `message`, `more_info`, `status`); codes and messages are Twilio's own:
//! 20003 "Authenticate" (401), 20404 "The requested resource … was not found" (404),
//! 20004 "Method not allowed" (405), 21201 / 21213 / 21205 for calls without `To` / `From` /
//! `Url`, 21604 / 21603 / 21602 for messages without `To` / `From` / `Body`, 21220 "Call is not
//! in-progress. Cannot redirect." for updates of an ended call (and for a recording started on a
//! call that is not in progress).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::Utc;
use serde_json::{Value, json};

use crate::twilio::recordings::{RecordingState, SOURCE_START_CALL_RECORDING_API};
use crate::twilio::state::{
    API_PREFIX, CallState, MessageState, RecordedRequest, State, is_final_call_status,
    phone_number_matches, values_of,
};

/// State shared by the handler and the [`crate::twilio::TwilioEmulator`] handle.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Finished callees of outbound calls (`callee.rs`).
    pub(crate) callee_runs: crate::twilio::callee::CalleeRuns,
}

impl Shared {
    /// Locks the state. A panic while locked (only possible in a test) does not make the state
    /// unusable for the rest of the test.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request as the routes see it.
struct Incoming {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    form: Vec<(String, String)>,
    auth: Option<(String, String)>,
}

/// What a route answers: status and JSON body (`None` for 204), or a media file.
struct Answer {
    status: StatusCode,
    body: Option<Value>,
    media: Option<(&'static str, Bytes)>,
}

impl Answer {
    fn json(status: StatusCode, body: Value) -> Self {
        Self { status, body: Some(body), media: None }
    }

    fn no_content() -> Self {
        Self { status: StatusCode::NO_CONTENT, body: None, media: None }
    }

    fn media(content_type: &'static str, bytes: Bytes) -> Self {
        Self { status: StatusCode::OK, body: None, media: Some((content_type, bytes)) }
    }

    fn error(status: StatusCode, code: Option<u32>, message: &str) -> Self {
        let more_info = code.map(|code| format!("https://www.twilio.com/docs/errors/{code}"));
        Self::json(
            status,
            json!({"code": code, "message": message, "more_info": more_info, "status": status.as_u16()}),
        )
    }

    fn not_found(path: &str) -> Self {
        Self::error(
            StatusCode::NOT_FOUND,
            Some(20404),
            &format!("The requested resource {path} was not found"),
        )
    }

    fn method_not_allowed() -> Self {
        Self::error(StatusCode::METHOD_NOT_ALLOWED, Some(20004), "Method not allowed")
    }

    fn bad_request(code: u32, message: &str) -> Self {
        Self::error(StatusCode::BAD_REQUEST, Some(code), message)
    }
}

pub(crate) async fn handle(
    AxumState(shared): AxumState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let incoming = Incoming {
        method,
        query: uri.query().map(parse_form).unwrap_or_default(),
        form: parse_form_bytes(&body),
        auth: basic_auth(&headers),
        path,
    };

    let delay = shared.lock().take_delay(&incoming.path);
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }

    let mut state = shared.lock();
    let authenticated = incoming.auth.as_ref().is_some_and(|(user, password)| {
        state.account(user).is_some_and(|account| account.auth_token == *password)
    });
    let answer = match state.take_failure(&incoming.path) {
        Some((status, code)) => injected_failure(status, code),
        None if !authenticated => {
            Answer::error(StatusCode::UNAUTHORIZED, Some(20003), "Authenticate")
        }
        None => route(&mut state, &incoming),
    };
    let answer = if state.take_lost_answer(&incoming.path) {
        Answer::error(StatusCode::INTERNAL_SERVER_ERROR, None, "connection lost")
    } else {
        answer
    };
    state.requests.push(RecordedRequest {
        method: incoming.method.as_str().to_owned(),
        path: incoming.path.clone(),
        query: incoming.query.clone(),
        form: incoming.form.clone(),
        auth_user: incoming.auth.as_ref().map(|(user, _)| user.clone()),
        authenticated,
        status: answer.status.as_u16(),
    });
    let dials = std::mem::take(&mut state.pending_dials);
    let deliveries = std::mem::take(&mut state.due_deliveries);
    drop(state);
    for dial in dials {
        tokio::spawn(crate::twilio::callee::run(
            Arc::clone(&shared),
            dial,
            Arc::clone(&shared.callee_runs),
        ));
    }
    // Twilio reports a message's progress after answering its create request.
    for (sid, outcome) in deliveries {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            tokio::time::sleep(crate::twilio::DELIVERY_DELAY).await;
            let client = reqwest::Client::new();
            let _ = crate::twilio::play_delivery(&shared, &client, &sid, outcome).await;
        });
    }

    match (answer.body, answer.media) {
        (Some(body), _) => (answer.status, axum::Json(body)).into_response(),
        (None, Some((content_type, bytes))) => {
            (answer.status, [(header::CONTENT_TYPE, content_type)], bytes).into_response()
        }
        (None, None) => answer.status.into_response(),
    }
}

fn injected_failure(status: u16, code: Option<u32>) -> Answer {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = match code {
        Some(20003) => "Authenticate",
        Some(20429) => "Too Many Requests",
        _ => status.canonical_reason().unwrap_or("Injected failure"),
    };
    Answer::error(status, code, message)
}

/// Routes an authenticated request.
fn route(state: &mut State, incoming: &Incoming) -> Answer {
    let Some(rest) = incoming.path.strip_prefix(API_PREFIX) else {
        return Answer::not_found(&incoming.path);
    };
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let authenticated_user = incoming.auth.as_ref().map(|(user, _)| user.as_str());
    let method = &incoming.method;
    match segments.as_slice() {
        ["Accounts", account_json] => {
            let Some(account_sid) = account_json.strip_suffix(".json") else {
                return Answer::not_found(&incoming.path);
            };
            if Some(account_sid) != authenticated_user {
                return Answer::error(StatusCode::UNAUTHORIZED, Some(20003), "Authenticate");
            }
            match *method {
                Method::GET => Answer::json(StatusCode::OK, account_json_value(account_sid)),
                _ => Answer::method_not_allowed(),
            }
        }
        ["Accounts", account_sid, resource @ ..] => {
            // Credentials of one account cannot reach another account's resources.
            if Some(*account_sid) != authenticated_user {
                return Answer::error(StatusCode::UNAUTHORIZED, Some(20003), "Authenticate");
            }
            route_account(state, incoming, account_sid, resource)
        }
        _ => Answer::not_found(&incoming.path),
    }
}

fn route_account(
    state: &mut State,
    incoming: &Incoming,
    account_sid: &str,
    resource: &[&str],
) -> Answer {
    let method = &incoming.method;
    match resource {
        ["IncomingPhoneNumbers.json"] => match *method {
            Method::GET => list_numbers(state, incoming, account_sid),
            _ => Answer::method_not_allowed(),
        },
        ["IncomingPhoneNumbers", sid_json] => {
            let Some(index) = sid_json.strip_suffix(".json").and_then(|sid| {
                state.numbers.iter().position(|n| n.sid == sid && n.account_sid == account_sid)
            }) else {
                return Answer::not_found(&incoming.path);
            };
            match *method {
                Method::GET => Answer::json(StatusCode::OK, state.numbers[index].to_json()),
                Method::POST => {
                    state.numbers[index].apply_update(&incoming.form);
                    Answer::json(StatusCode::OK, state.numbers[index].to_json())
                }
                _ => Answer::method_not_allowed(),
            }
        }
        ["Calls.json"] => match *method {
            Method::POST => create_call(state, incoming, account_sid),
            Method::GET => {
                // Twilio's documented filters: `To`, `From`, `Status` (exact matches).
                let filter = |name: &str| values_of(&incoming.query, name).first().copied();
                let (to, from, status) = (filter("To"), filter("From"), filter("Status"));
                let calls: Vec<Value> = state
                    .calls
                    .iter()
                    .rev()
                    .filter(|call| call.account_sid == account_sid)
                    .filter(|call| to.is_none_or(|to| call.to == to))
                    .filter(|call| from.is_none_or(|from| call.from == from))
                    .filter(|call| status.is_none_or(|status| call.status == status))
                    .map(CallState::to_json)
                    .collect();
                list_page(incoming, "calls", calls)
            }
            _ => Answer::method_not_allowed(),
        },
        ["Calls", sid_json] => {
            let Some(index) = sid_json.strip_suffix(".json").and_then(|sid| {
                state.calls.iter().position(|c| c.sid == sid && c.account_sid == account_sid)
            }) else {
                return Answer::not_found(&incoming.path);
            };
            match *method {
                Method::GET => Answer::json(StatusCode::OK, state.calls[index].to_json()),
                Method::POST => update_call(&mut state.calls[index], incoming),
                _ => Answer::method_not_allowed(),
            }
        }
        ["Calls", call_sid, "Recordings.json"] => match *method {
            Method::POST => create_recording(state, incoming, account_sid, call_sid),
            Method::GET => {
                let recordings = recordings_json(state, account_sid, Some(call_sid));
                list_page(incoming, "recordings", recordings)
            }
            _ => Answer::method_not_allowed(),
        },
        ["Calls", call_sid, "Recordings", sid_json] => {
            let found = sid_json.strip_suffix(".json").and_then(|sid| {
                state.recordings.iter().position(|r| {
                    r.sid == sid && r.account_sid == account_sid && r.call_sid == *call_sid
                })
            });
            recording_resource(state, incoming, found)
        }
        ["Recordings.json"] => match *method {
            Method::GET => {
                let call_sid = values_of(&incoming.query, "CallSid").first().copied();
                let recordings = recordings_json(state, account_sid, call_sid);
                list_page(incoming, "recordings", recordings)
            }
            _ => Answer::method_not_allowed(),
        },
        ["Recordings", name] => {
            let (sid, extension) = name.split_once('.').unwrap_or((name, ""));
            let found =
                state.recordings.iter().position(|r| r.sid == sid && r.account_sid == account_sid);
            match extension {
                "json" => recording_resource(state, incoming, found),
                // The media: WAV with or without the extension (MP3 is not emulated).
                "wav" | "" => match (found.and_then(|i| state.recordings[i].wav.clone()), method) {
                    (Some(wav), &Method::GET) => Answer::media("audio/x-wav", wav),
                    (Some(_), _) => Answer::method_not_allowed(),
                    (None, _) => Answer::not_found(&incoming.path),
                },
                _ => Answer::not_found(&incoming.path),
            }
        }
        ["Messages.json"] => match *method {
            Method::POST => create_message(state, incoming, account_sid),
            Method::GET => {
                // Twilio's `To` and `From` filters (exact numbers), newest first.
                let to = values_of(&incoming.query, "To").first().map(|v| (*v).to_owned());
                let from = values_of(&incoming.query, "From").first().map(|v| (*v).to_owned());
                let messages: Vec<Value> = state
                    .messages
                    .iter()
                    .rev()
                    .filter(|message| message.account_sid == account_sid)
                    .filter(|message| to.as_ref().is_none_or(|to| message.to == *to))
                    .filter(|message| from.as_ref().is_none_or(|from| message.from == *from))
                    .map(MessageState::to_json)
                    .collect();
                list_page(incoming, "messages", messages)
            }
            _ => Answer::method_not_allowed(),
        },
        ["Messages", sid_json] => {
            let found = sid_json.strip_suffix(".json").and_then(|sid| {
                state.messages.iter().find(|m| m.sid == sid && m.account_sid == account_sid)
            });
            match (found, method) {
                (Some(message), &Method::GET) => Answer::json(StatusCode::OK, message.to_json()),
                (Some(_), _) => Answer::method_not_allowed(),
                (None, _) => Answer::not_found(&incoming.path),
            }
        }
        _ => Answer::not_found(&incoming.path),
    }
}

fn list_numbers(state: &State, incoming: &Incoming, account_sid: &str) -> Answer {
    let phone_number = values_of(&incoming.query, "PhoneNumber").first().copied();
    let friendly_name = values_of(&incoming.query, "FriendlyName").first().copied();
    let numbers: Vec<Value> = state
        .numbers
        .iter()
        .filter(|number| number.account_sid == account_sid)
        .filter(|number| phone_number.is_none_or(|p| phone_number_matches(&number.phone_number, p)))
        .filter(|number| friendly_name.is_none_or(|name| number.friendly_name == name))
        .map(|number| number.to_json())
        .collect();
    list_page(incoming, "incoming_phone_numbers", numbers)
}

/// One page of a v2010 list, with the paging fields Twilio returns (`first_page_uri`,
/// `next_page_uri`, `previous_page_uri`, `page`, `page_size`, `start`, `end`, `uri`). Filters are
/// kept in the page URIs; `PageSize` defaults to 50 and is capped at 1000, as on Twilio.
fn list_page(incoming: &Incoming, key: &str, records: Vec<Value>) -> Answer {
    let page_size = values_of(&incoming.query, "PageSize")
        .first()
        .and_then(|size| size.parse::<usize>().ok())
        .unwrap_or(50)
        .clamp(1, 1000);
    let page = values_of(&incoming.query, "Page")
        .first()
        .and_then(|page| page.parse::<usize>().ok())
        .unwrap_or(0);
    let filters: Vec<(String, String)> = incoming
        .query
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "PageSize" | "Page" | "PageToken"))
        .cloned()
        .collect();
    let page_uri = |page: usize, token: Option<&str>| {
        let mut serializer = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in &filters {
            serializer.append_pair(name, value);
        }
        serializer.append_pair("PageSize", &page_size.to_string());
        serializer.append_pair("Page", &page.to_string());
        if let Some(token) = token {
            serializer.append_pair("PageToken", token);
        }
        format!("{}?{}", incoming.path, serializer.finish())
    };
    let start = page.saturating_mul(page_size);
    let page_records: Vec<Value> = records.iter().skip(start).take(page_size).cloned().collect();
    let has_next = start.saturating_add(page_size) < records.len();
    let next_page_uri = has_next.then(|| {
        let last_sid = page_records.last().and_then(|record| record["sid"].as_str());
        page_uri(page + 1, last_sid.map(|sid| format!("PA{sid}")).as_deref())
    });
    let previous_page_uri = (page > 0).then(|| page_uri(page - 1, None));
    let end = start + page_records.len().saturating_sub(1);
    Answer::json(
        StatusCode::OK,
        json!({
            "end": end,
            "first_page_uri": page_uri(0, None),
            key: page_records,
            "next_page_uri": next_page_uri,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": previous_page_uri,
            "start": start,
            "uri": page_uri(page, None),
        }),
    )
}

fn create_call(state: &mut State, incoming: &Incoming, account_sid: &str) -> Answer {
    let form = &incoming.form;
    let first = |name: &str| values_of(form, name).first().map(|value| (*value).to_owned());
    let Some(to) = first("To").filter(|to| !to.is_empty()) else {
        return Answer::bad_request(21201, "No 'To' number is specified");
    };
    let Some(from) = first("From").filter(|from| !from.is_empty()) else {
        return Answer::bad_request(21213, "No 'From' number is specified");
    };
    let url = first("Url").filter(|url| !url.is_empty());
    let twiml = first("Twiml").filter(|twiml| !twiml.is_empty());
    if url.is_none() && twiml.is_none() && first("ApplicationSid").is_none() {
        return Answer::bad_request(21205, "Url parameter is required.");
    }
    let now = Utc::now();
    let phone_number_sid = state
        .numbers
        .iter()
        .find(|number| number.account_sid == account_sid && number.phone_number == from)
        .map(|number| number.sid.clone());
    let call = CallState {
        sid: crate::twilio::new_sid("CA"),
        account_sid: account_sid.to_owned(),
        to,
        from,
        status: "queued".to_owned(),
        direction: "outbound-api".to_owned(),
        phone_number_sid,
        create_params: form.clone(),
        updates: Vec::new(),
        url,
        twiml,
        date_created: now,
        date_updated: now,
        end_time: None,
    };
    let body = call.to_json();
    if let Some(callee) = state.callees.get(&call.to).cloned()
        && let Some(auth_token) = state.account(account_sid).map(|a| a.auth_token.clone())
    {
        state.pending_dials.push(crate::twilio::callee::Dial {
            call: call.clone(),
            callee,
            auth_token,
            dialled_at: std::time::Instant::now(),
        });
    }
    state.calls.push(call);
    Answer::json(StatusCode::CREATED, body)
}

/// `Status=completed` ends a call whatever its state; `Status=canceled` only ends a queued or
/// ringing one (https://www.twilio.com/docs/voice/api/call-resource#update-a-call-resource);
/// `Url`/`Twiml` redirect it. Any update of an ended call is refused with 21220.
fn update_call(call: &mut CallState, incoming: &Incoming) -> Answer {
    let form = &incoming.form;
    let first = |name: &str| values_of(form, name).first().map(|value| (*value).to_owned());
    if call.is_final() {
        return Answer::bad_request(21220, "Call is not in-progress. Cannot redirect.");
    }
    let status = first("Status");
    if let Some(status) = status.as_deref()
        && !matches!(status, "completed" | "canceled")
    {
        // Twilio's exact code for this case was not found in its docs; answer without one.
        return Answer::error(StatusCode::BAD_REQUEST, None, "Invalid value for Status");
    }
    call.updates.push(form.clone());
    let now = Utc::now();
    call.date_updated = now;
    match status.as_deref() {
        Some("completed") => call.status = "completed".to_owned(),
        Some("canceled") if matches!(call.status.as_str(), "queued" | "ringing") => {
            call.status = "canceled".to_owned();
        }
        _ => {}
    }
    if is_final_call_status(&call.status) {
        call.end_time = Some(now);
    } else {
        if let Some(url) = first("Url").filter(|url| !url.is_empty()) {
            call.url = Some(url);
        }
        if let Some(twiml) = first("Twiml").filter(|twiml| !twiml.is_empty()) {
            call.twiml = Some(twiml);
        }
    }
    Answer::json(StatusCode::OK, call.to_json())
}

/// The account's recordings, newest first, optionally of one call only.
fn recordings_json(state: &State, account_sid: &str, call_sid: Option<&str>) -> Vec<Value> {
    state
        .recordings
        .iter()
        .rev()
        .filter(|r| r.account_sid == account_sid && call_sid.is_none_or(|sid| r.call_sid == sid))
        .map(RecordingState::to_json)
        .collect()
}

/// `GET` (fetch) or `DELETE` (204) of one recording; `found` is its index.
fn recording_resource(state: &mut State, incoming: &Incoming, found: Option<usize>) -> Answer {
    let Some(index) = found else {
        return Answer::not_found(&incoming.path);
    };
    match incoming.method {
        Method::GET => Answer::json(StatusCode::OK, state.recordings[index].to_json()),
        Method::DELETE => {
            state.recordings.remove(index);
            Answer::no_content()
        }
        _ => Answer::method_not_allowed(),
    }
}

/// `POST …/Calls/{CA}/Recordings.json`: starts recording a live call
/// (https://www.twilio.com/docs/voice/api/recording#create-a-recording-resource). Defaults as
/// Twilio's: `mono`, track `both`, callback event `completed`, callback method `POST`. An unknown
/// call is 20404; a call that is not in progress is refused with 21220.
fn create_recording(
    state: &mut State,
    incoming: &Incoming,
    account_sid: &str,
    call_sid: &str,
) -> Answer {
    let form = &incoming.form;
    let first = |name: &str| values_of(form, name).first().map(|value| (*value).to_owned());
    let Some(call) =
        state.calls.iter().find(|call| call.sid == call_sid && call.account_sid == account_sid)
    else {
        return Answer::not_found(&incoming.path);
    };
    if call.status != "in-progress" {
        return Answer::bad_request(21220, "Call is not in-progress. Cannot start recording.");
    }
    let channels = match first("RecordingChannels").as_deref() {
        None | Some("mono") => 1,
        Some("dual") => 2,
        Some(_) => {
            return Answer::error(
                StatusCode::BAD_REQUEST,
                None,
                "Invalid value for RecordingChannels",
            );
        }
    };
    let track = first("RecordingTrack").unwrap_or_else(|| "both".to_owned());
    if !matches!(track.as_str(), "inbound" | "outbound" | "both") {
        return Answer::error(StatusCode::BAD_REQUEST, None, "Invalid value for RecordingTrack");
    }
    // Repeated parameters or one space-separated value, as the docs show both.
    let mut events: Vec<String> = values_of(form, "RecordingStatusCallbackEvent")
        .iter()
        .flat_map(|value| value.split_whitespace())
        .map(str::to_owned)
        .collect();
    if events.is_empty() {
        events.push("completed".to_owned());
    }
    let now = Utc::now();
    let recording = RecordingState {
        sid: crate::twilio::new_sid("RE"),
        account_sid: account_sid.to_owned(),
        call_sid: call_sid.to_owned(),
        status: "in-progress".to_owned(),
        channels,
        track,
        source: SOURCE_START_CALL_RECORDING_API.to_owned(),
        status_callback: first("RecordingStatusCallback").filter(|url| !url.is_empty()),
        status_callback_method: first("RecordingStatusCallbackMethod")
            .map_or_else(|| "POST".to_owned(), |method| method.to_ascii_uppercase()),
        status_callback_events: events,
        create_params: form.clone(),
        date_created: now,
        date_updated: now,
        duration: None,
        wav: None,
    };
    if let Some(tap) = state.taps.get(call_sid) {
        tap.start_recording();
    }
    let body = recording.to_json();
    state.recordings.push(recording);
    Answer::json(StatusCode::CREATED, body)
}

fn create_message(state: &mut State, incoming: &Incoming, account_sid: &str) -> Answer {
    let form = &incoming.form;
    let first = |name: &str| values_of(form, name).first().map(|value| (*value).to_owned());
    let Some(to) = first("To").filter(|to| !to.is_empty()) else {
        return Answer::bad_request(21604, "A 'To' phone number is required.");
    };
    let from = first("From").filter(|from| !from.is_empty());
    let messaging_service_sid = first("MessagingServiceSid").filter(|sid| !sid.is_empty());
    if from.is_none() && messaging_service_sid.is_none() {
        return Answer::bad_request(21603, "A 'From' phone number is required.");
    }
    let body = first("Body").unwrap_or_default();
    if body.is_empty() && values_of(form, "MediaUrl").is_empty() && first("ContentSid").is_none() {
        return Answer::bad_request(21602, "Message body is required.");
    }
    if body.chars().count() > 1600 {
        return Answer::bad_request(
            21617,
            "The concatenated message body exceeds the 1600 character limit.",
        );
    }
    let status = if from.is_none() { "accepted" } else { "queued" };
    let message = MessageState {
        sid: crate::twilio::new_sid("SM"),
        account_sid: account_sid.to_owned(),
        to,
        from: from.unwrap_or_default(),
        body,
        messaging_service_sid,
        status: status.to_owned(),
        create_params: form.clone(),
        date_created: Utc::now(),
        status_callback: first("StatusCallback").filter(|url| !url.is_empty()),
        error_code: None,
        direction: "outbound-api".to_owned(),
    };
    let json = message.to_json();
    if message.status_callback.is_some()
        && let Some(outcome) = state.message_outcomes.pop_front().or(state.default_message_outcome)
    {
        state.due_deliveries.push((message.sid.clone(), outcome));
    }
    state.messages.push(message);
    Answer::json(StatusCode::CREATED, json)
}

fn account_json_value(account_sid: &str) -> Value {
    let now = Utc::now().to_rfc2822();
    json!({
        "auth_token": "[redacted]",
        "date_created": now,
        "date_updated": now,
        "friendly_name": format!("Emulated account {account_sid}"),
        "owner_account_sid": account_sid,
        "sid": account_sid,
        "status": "active",
        "subresource_uris": {},
        "type": "Full",
        "uri": format!("{API_PREFIX}/Accounts/{account_sid}.json"),
    })
}

fn parse_form(encoded: &str) -> Vec<(String, String)> {
    parse_form_bytes(encoded.as_bytes())
}

fn parse_form_bytes(encoded: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(encoded)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}

/// `Authorization: Basic base64(user:password)`, decoded.
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}
