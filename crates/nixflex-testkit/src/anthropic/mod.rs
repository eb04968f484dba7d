//! Anthropic Messages API emulator: `POST /v1/messages`, streamed (SSE) and not.
//!
//! Speaks the documented protocol (docs/protocols.md#anthropic-messages-streaming): the event sequence `message_start`,
//! `content_block_start`, `ping`, `content_block_delta`…, `content_block_stop`,
//! `message_delta` (cumulative usage), `message_stop`; `error` events; Anthropic's error
//! bodies and statuses. Accepts `x-api-key` or `Authorization: Bearer` (the official Python
//! SDK sends the latter) and any `anthropic-version`.
//!
//! Tool use is checked as the API checks it ([`check_tool_pairing`]): each `tool_use` block
//! needs a `tool_result` in the next (user) message, each `tool_result` a `tool_use` in the
//! message before, and a request carrying either must define `tools`; otherwise a 400
//! `invalid_request_error`.
//!
//! Replies are scripted: a queue of [`Reply`]s, then an optional responder function of the
//! request, then a default echo of the last user text. Latency ([`Timing`]) and failures
//! ([`Fault`]) are configurable at any time. Every request is recorded for assertions.
//! Test-only: it must never hold a lock across an await, and never panics on bad input.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub mod python;

/// One content block of a scripted reply.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyBlock {
    /// Text, streamed word by word.
    Text(String),
    /// A tool call with its input, streamed as `input_json_delta` pieces.
    ToolUse {
        /// The tool's name.
        name: String,
        /// The tool's input.
        input: Value,
    },
}

/// A scripted assistant reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The content blocks, in order.
    pub blocks: Vec<ReplyBlock>,
    /// The stop reason; `None` means `tool_use` when a tool is called, else `end_turn`.
    pub stop_reason: Option<String>,
}

impl Reply {
    /// A text-only reply.
    pub fn text(text: impl Into<String>) -> Self {
        Self { blocks: vec![ReplyBlock::Text(text.into())], stop_reason: None }
    }

    /// A reply that only calls a tool.
    pub fn tool_call(name: impl Into<String>, input: Value) -> Self {
        Self { blocks: vec![ReplyBlock::ToolUse { name: name.into(), input }], stop_reason: None }
    }

    /// A reply that says something, then calls a tool.
    pub fn text_then_tool_call(
        text: impl Into<String>,
        name: impl Into<String>,
        input: Value,
    ) -> Self {
        Self {
            blocks: vec![
                ReplyBlock::Text(text.into()),
                ReplyBlock::ToolUse { name: name.into(), input },
            ],
            stop_reason: None,
        }
    }

    fn stop_reason(&self) -> String {
        self.stop_reason.clone().unwrap_or_else(|| {
            if self.blocks.iter().any(|block| matches!(block, ReplyBlock::ToolUse { .. })) {
                "tool_use".to_owned()
            } else {
                "end_turn".to_owned()
            }
        })
    }
}

/// Latency of the emulated model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    /// Delay before the response head (time to first byte).
    pub first_byte: Duration,
    /// Delay before each content delta after the first block starts (inter-token time).
    pub chunk_interval: Duration,
}

/// A failure to inject into the next request (faults are used up in order, one per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status and Anthropic's error body (type chosen from the status).
    Status(u16),
    /// Stream normally, then send an `error` event (e.g. `overloaded_error`) after
    /// `after_deltas` content deltas and end the stream.
    MidStreamError {
        /// Deltas sent before the error.
        after_deltas: usize,
        /// The Anthropic error type.
        error_type: String,
    },
    /// Stream normally, then cut the connection after `after_deltas` content deltas.
    Disconnect {
        /// Deltas sent before the cut.
        after_deltas: usize,
    },
    /// Stream normally, then stop sending after `after_deltas` content deltas (speech: audio
    /// chunks) and keep the connection open until the client goes away.
    Stall {
        /// Deltas sent before the stall.
        after_deltas: usize,
    },
    /// Wait this long before the response head, then answer normally.
    SlowFirstByte(Duration),
    /// Answer normally: a place holder that lets the faults queued after it hit later
    /// requests.
    Pass,
}

impl Fault {
    /// The extra delay before the response head ([`Fault::SlowFirstByte`]).
    pub fn first_byte_delay(fault: Option<&Self>) -> Duration {
        match fault {
            Some(Self::SlowFirstByte(delay)) => *delay,
            _ => Duration::ZERO,
        }
    }

    /// Whether the stream stalls at delta `index`.
    pub fn stalls_at(fault: Option<&Self>, index: usize) -> bool {
        matches!(fault, Some(Self::Stall { after_deltas }) if *after_deltas == index)
    }
}

/// One request as received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// The request path.
    pub path: String,
    /// Headers with lower-case names, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` when it was not JSON).
    pub body: Value,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(key, _)| *key == name).map(|(_, value)| value.as_str())
    }
}

/// A function from the request body to the reply.
pub type Responder = Arc<dyn Fn(&Value) -> Reply + Send + Sync>;

/// Configuration fixed at start.
#[derive(Debug, Clone, Default)]
pub struct AnthropicEmulatorConfig {
    /// The only accepted key; `None` accepts any non-empty key.
    pub api_key: Option<String>,
}

/// What one scripted request gets.
struct Scripted {
    reply: Option<Reply>,
    fault: Option<Fault>,
}

#[derive(Default)]
struct Script {
    /// One entry per coming request, in order.
    queue: VecDeque<Scripted>,
    responder: Option<Responder>,
    timing: Timing,
    requests: Vec<RecordedRequest>,
    next_id: u64,
}

struct Shared {
    config: AnthropicEmulatorConfig,
    script: Mutex<Script>,
}

impl Shared {
    fn script(&self) -> MutexGuard<'_, Script> {
        // A panicking test thread cannot leave the script inconsistent; keep serving.
        self.script.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running Anthropic emulator; stops when dropped.
pub struct AnthropicEmulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for AnthropicEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicEmulator").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for AnthropicEmulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl AnthropicEmulator {
    /// Starts an emulator accepting any non-empty key on `127.0.0.1:<free port>`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(AnthropicEmulatorConfig::default()).await
    }

    /// Starts an emulator with `config`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start_with(config: AnthropicEmulatorConfig) -> std::io::Result<Self> {
        let shared = Arc::new(Shared { config, script: Mutex::new(Script::default()) });
        let router = Router::new().route("/v1/messages", post(messages)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(crate::nodelay(listener), router).await {
                tracing::warn!(message = "Anthropic emulator stopped.", %error);
            }
        });
        Ok(Self { addr, shared, server })
    }

    /// The base URL to configure clients with (`http://127.0.0.1:<port>`, no `/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Scripts the next request (each `push_*` scripts one request, in order): answer with
    /// `reply`. Requests beyond the script go to the responder, or get an echo of the last
    /// user message.
    pub fn push_reply(&self, reply: Reply) {
        self.shared.script().queue.push_back(Scripted { reply: Some(reply), fault: None });
    }

    /// Scripts the next request: stream `reply` but fail as `fault` says (a
    /// [`Fault::Status`] ignores the reply).
    pub fn push_reply_with_fault(&self, reply: Reply, fault: Fault) {
        self.shared.script().queue.push_back(Scripted { reply: Some(reply), fault: Some(fault) });
    }

    /// Answers requests with no queued reply by calling `responder` with the request body.
    pub fn set_responder(&self, responder: impl Fn(&Value) -> Reply + Send + Sync + 'static) {
        self.shared.script().responder = Some(Arc::new(responder));
    }

    /// Sets the latency of the following responses.
    pub fn set_timing(&self, timing: Timing) {
        self.shared.script().timing = timing;
    }

    /// Scripts the next request to fail as `fault` says (streamed faults stream the
    /// responder's or the default reply first).
    pub fn push_fault(&self, fault: Fault) {
        self.shared.script().queue.push_back(Scripted { reply: None, fault: Some(fault) });
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.script().requests.clone()
    }
}

fn error_type_for(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

fn error_response(status: u16, message: &str) -> Response {
    let body = json!({
        "type": "error",
        "error": { "type": error_type_for(status), "message": message },
        "request_id": "req_emulator",
    });
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert("request-id", header::HeaderValue::from_static("req_emulator"));
    response
}

fn record(headers: &HeaderMap, path: &str, body: &Bytes) -> RecordedRequest {
    RecordedRequest {
        path: path.to_owned(),
        headers: headers
            .iter()
            .map(|(name, value)| {
                (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
            })
            .collect(),
        body: serde_json::from_slice(body).unwrap_or(Value::Null),
    }
}

fn presented_key(headers: &HeaderMap) -> Option<String> {
    if let Some(key) = headers.get("x-api-key").and_then(|value| value.to_str().ok()) {
        return Some(key.to_owned());
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_owned)
}

/// The text of the last user message, for the default echo.
fn last_user_text(body: &Value) -> String {
    let Some(message) = body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|messages| messages.iter().rev().find(|m| m.get("role") == Some(&json!("user"))))
    else {
        return String::new();
    };
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The `type: kind` blocks of a message's content (`field` of each, e.g. their ids).
fn block_ids(message: &Value, kind: &str, field: &str) -> Vec<String> {
    message
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|block| block.get("type").and_then(Value::as_str) == Some(kind))
        .map(|block| block.get(field).and_then(Value::as_str).unwrap_or_default().to_owned())
        .collect()
}

/// The Messages API's rules for tool use in the history, with its error messages: every
/// `tool_use` is answered by a `tool_result` in the next message (a user message), every
/// `tool_result` answers a `tool_use` of the message before, and requests with either define
/// `tools`.
///
/// # Errors
/// The API's message for the first rule broken.
pub fn check_tool_pairing(request: &Value) -> Result<(), String> {
    let messages = request.get("messages").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let mut any = false;
    for (index, message) in messages.iter().enumerate() {
        let uses = block_ids(message, "tool_use", "id");
        let results = block_ids(message, "tool_result", "tool_use_id");
        any |= !uses.is_empty() || !results.is_empty();
        if !results.is_empty() {
            let previous_uses = index
                .checked_sub(1)
                .map(|i| block_ids(&messages[i], "tool_use", "id"))
                .unwrap_or_default();
            if let Some(unexpected) = results.iter().find(|id| !previous_uses.contains(id)) {
                return Err(format!(
                    "messages.{index}.content: unexpected `tool_use_id` found in `tool_result` blocks: {unexpected}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                ));
            }
        }
        if !uses.is_empty() {
            let answered = messages
                .get(index + 1)
                .filter(|next| next.get("role").and_then(Value::as_str) == Some("user"))
                .map(|next| block_ids(next, "tool_result", "tool_use_id"))
                .unwrap_or_default();
            let missing: Vec<&str> =
                uses.iter().filter(|id| !answered.contains(id)).map(String::as_str).collect();
            if !missing.is_empty() {
                return Err(format!(
                    "messages.{}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                    index + 1,
                    missing.join(", ")
                ));
            }
        }
    }
    if any && request.get("tools").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        return Err("Requests which include `tool_use` or `tool_result` blocks must define tools."
            .to_owned());
    }
    Ok(())
}

/// A rough token count (about four characters per token), at least 1.
fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4).max(1)
}

/// Splits text into word-sized deltas that concatenate back to the text.
pub(crate) fn split_words(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    for character in text.chars() {
        if character.is_whitespace() && !current.trim().is_empty() {
            pieces.push(std::mem::take(&mut current));
        }
        current.push(character);
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// Splits a JSON text into a few pieces, as the API streams tool input.
fn split_json(json: &str) -> Vec<String> {
    let characters: Vec<char> = json.chars().collect();
    let mut pieces = vec![String::new()];
    pieces.extend(characters.chunks(12).map(|chunk| chunk.iter().collect::<String>()));
    pieces
}

async fn messages(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (fault, timing, reply, message_id) = {
        let mut script = shared.script();
        script.requests.push(record(&headers, "/v1/messages", &body));
        let authorised = match (presented_key(&headers), &shared.config.api_key) {
            (Some(presented), Some(expected)) => presented == *expected,
            (Some(presented), None) => !presented.is_empty(),
            (None, _) => false,
        };
        if !authorised {
            return error_response(401, "invalid x-api-key");
        }
        let Scripted { reply: scripted_reply, fault } =
            script.queue.pop_front().unwrap_or(Scripted { reply: None, fault: None });
        if let Some(Fault::Status(status)) = fault {
            return error_response(status, "injected failure");
        }
        let Ok(request) = serde_json::from_slice::<Value>(&body) else {
            return error_response(400, "The request body is not valid JSON.");
        };
        for field in ["model", "max_tokens", "messages"] {
            if request.get(field).is_none() {
                return error_response(400, &format!("{field}: Field required"));
            }
        }
        if request.get("messages").and_then(Value::as_array).is_none_or(Vec::is_empty) {
            return error_response(400, "messages: at least one message is required");
        }
        if let Err(message) = check_tool_pairing(&request) {
            return error_response(400, &message);
        }
        let reply = match scripted_reply {
            Some(reply) => reply,
            None => match &script.responder {
                Some(responder) => responder(&request),
                None => Reply::text(format!("You said: {}", last_user_text(&request))),
            },
        };
        script.next_id += 1;
        (fault, script.timing, (reply, request), script.next_id)
    };
    let (reply, request) = reply;
    let delay = timing.first_byte + Fault::first_byte_delay(fault.as_ref());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let model = request.get("model").and_then(Value::as_str).unwrap_or("claude").to_owned();
    let input_tokens = estimate_tokens(&request.to_string());
    if request.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        stream_reply(reply, model, input_tokens, message_id, timing, fault)
    } else {
        axum::Json(message_json(&reply, &model, input_tokens, message_id)).into_response()
    }
}

fn tool_use_id(message_id: u64, index: usize) -> String {
    format!("toolu_emu{message_id:010}{index:04}")
}

fn output_tokens(reply: &Reply) -> u64 {
    reply
        .blocks
        .iter()
        .map(|block| match block {
            ReplyBlock::Text(text) => estimate_tokens(text),
            ReplyBlock::ToolUse { input, .. } => estimate_tokens(&input.to_string()),
        })
        .sum()
}

fn message_json(reply: &Reply, model: &str, input_tokens: u64, message_id: u64) -> Value {
    let content: Vec<Value> = reply
        .blocks
        .iter()
        .enumerate()
        .map(|(index, block)| match block {
            ReplyBlock::Text(text) => json!({ "type": "text", "text": text }),
            ReplyBlock::ToolUse { name, input } => json!({
                "type": "tool_use",
                "id": tool_use_id(message_id, index),
                "name": name,
                "input": input,
            }),
        })
        .collect();
    json!({
        "id": format!("msg_emu{message_id:012}"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reply.stop_reason(),
        "stop_sequence": null,
        "usage": { "input_tokens": input_tokens, "output_tokens": output_tokens(reply) },
    })
}

fn sse(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

type Chunk = Result<Bytes, std::io::Error>;

fn stream_reply(
    reply: Reply,
    model: String,
    input_tokens: u64,
    message_id: u64,
    timing: Timing,
    fault: Option<Fault>,
) -> Response {
    let (sender, receiver) = mpsc::channel::<Chunk>(16);
    tokio::spawn(async move {
        // A send error means the client went away: stop producing.
        let _ =
            produce_events(&sender, reply, model, input_tokens, message_id, timing, fault).await;
    });
    let body = Body::from_stream(futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    }));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("request-id", "req_emulator")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn produce_events(
    sender: &mpsc::Sender<Chunk>,
    reply: Reply,
    model: String,
    input_tokens: u64,
    message_id: u64,
    timing: Timing,
    fault: Option<Fault>,
) -> Result<(), mpsc::error::SendError<Chunk>> {
    let send = |event: &str, data: Value| sender.send(Ok(sse(event, &data)));
    send(
        "message_start",
        json!({
            "type": "message_start",
            "message": {
                "id": format!("msg_emu{message_id:012}"),
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": model,
                "stop_reason": null,
                "stop_sequence": null,
                "usage": { "input_tokens": input_tokens, "output_tokens": 1 },
            },
        }),
    )
    .await?;
    let mut n_deltas = 0_usize;
    for (index, block) in reply.blocks.iter().enumerate() {
        let (start, deltas) = match block {
            ReplyBlock::Text(text) => (
                json!({ "type": "text", "text": "" }),
                split_words(text)
                    .into_iter()
                    .map(|word| json!({ "type": "text_delta", "text": word }))
                    .collect::<Vec<_>>(),
            ),
            ReplyBlock::ToolUse { name, input } => (
                json!({ "type": "tool_use", "id": tool_use_id(message_id, index), "name": name, "input": {} }),
                split_json(&input.to_string())
                    .into_iter()
                    .map(|piece| json!({ "type": "input_json_delta", "partial_json": piece }))
                    .collect(),
            ),
        };
        send(
            "content_block_start",
            json!({ "type": "content_block_start", "index": index, "content_block": start }),
        )
        .await?;
        if index == 0 {
            send("ping", json!({ "type": "ping" })).await?;
        }
        for delta in deltas {
            if Fault::stalls_at(fault.as_ref(), n_deltas) {
                sender.closed().await;
                return Ok(());
            }
            match &fault {
                Some(Fault::MidStreamError { after_deltas, error_type })
                    if n_deltas == *after_deltas =>
                {
                    let message = if error_type == "overloaded_error" {
                        "Overloaded"
                    } else {
                        "injected failure"
                    };
                    send("error", json!({ "type": "error", "error": { "type": error_type, "message": message } }))
                        .await?;
                    return Ok(());
                }
                Some(Fault::Disconnect { after_deltas }) if n_deltas == *after_deltas => {
                    sender.send(Err(std::io::Error::other("injected disconnect"))).await?;
                    return Ok(());
                }
                _ => {}
            }
            if !timing.chunk_interval.is_zero() {
                tokio::time::sleep(timing.chunk_interval).await;
            }
            send(
                "content_block_delta",
                json!({ "type": "content_block_delta", "index": index, "delta": delta }),
            )
            .await?;
            n_deltas += 1;
        }
        send("content_block_stop", json!({ "type": "content_block_stop", "index": index })).await?;
    }
    send(
        "message_delta",
        json!({
            "type": "message_delta",
            "delta": { "stop_reason": reply.stop_reason(), "stop_sequence": null },
            "usage": { "output_tokens": output_tokens(&reply) },
        }),
    )
    .await?;
    send("message_stop", json!({ "type": "message_stop" })).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_into_deltas_that_join_back_to_the_text() {
        let text = "Hello there,  how are you?";
        let pieces = split_words(text);
        assert_eq!(pieces, vec!["Hello", " there,", "  how", " are", " you?"]);
        assert_eq!(pieces.concat(), text);
    }

    #[test]
    fn tool_results_must_answer_the_tool_uses_of_the_message_before() {
        let tools = json!([{"name": "f", "input_schema": {"type": "object"}}]);
        let use_f = json!({"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]});
        let result = |id: &str| json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "ok"}]});
        let request = |messages: Value| json!({"messages": messages, "tools": tools});
        let hello = json!({"role": "user", "content": "hi"});
        assert_eq!(check_tool_pairing(&request(json!([hello, use_f, result("t1")]))), Ok(()));
        let missing = check_tool_pairing(&request(json!([hello, use_f, hello]))).unwrap_err();
        assert!(missing.contains("without `tool_result`") && missing.contains("t1"), "{missing}");
        let stray = check_tool_pairing(&request(json!([hello, result("t9")]))).unwrap_err();
        assert!(stray.contains("unexpected `tool_use_id`"), "{stray}");
        let no_tools =
            check_tool_pairing(&json!({"messages": [hello, use_f, result("t1")]})).unwrap_err();
        assert!(no_tools.contains("must define tools"), "{no_tools}");
    }

    #[test]
    fn tool_input_splits_into_pieces_starting_with_an_empty_one() {
        let pieces = split_json(r#"{"location":"San Francisco, CA"}"#);
        assert_eq!(pieces[0], "");
        assert_eq!(pieces.concat(), r#"{"location":"San Francisco, CA"}"#);
    }
}
