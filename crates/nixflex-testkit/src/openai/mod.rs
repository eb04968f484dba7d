//! OpenAI-compatible emulator: `POST /v1/chat/completions` (streamed and not) and
//! `POST /v1/audio/speech` (docs/protocols.md#openai-compatible-endpoints).
//!
//! Chat chunks follow the documented `chat.completion.chunk` shape: a first chunk with the
//! role, content deltas, tool-call fragments keyed by `index`, a chunk with `finish_reason`,
//! the `choices: []` usage chunk when `stream_options.include_usage` is set, then
//! `data: [DONE]`. Errors use OpenAI's `{"error":{message,type,param,code}}` shape. Tool
//! results are checked as the API checks them ([`check_tool_messages`]): an assistant message
//! with `tool_calls` must be followed by one `tool` message per call id, and a `tool` message
//! must answer such a call; otherwise a 400.
//!
//! Speech answers `pcm` (raw 24 kHz 16-bit little-endian mono) or `wav` with a deterministic
//! tone ([`nixflex_pipeline::audio::tone::text_tone`]) lasting `ms_per_char` per character of
//! input (divided by `speed`), so tests can check duration and pacing; other formats are
//! refused with a 400. Replies, timing, faults and the request log are shared with the
//! Anthropic emulator's types.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use nixflex_pipeline::audio::tone::text_tone;
use nixflex_pipeline::audio::{samples_to_pcm16le, wav};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::anthropic::split_words;

mod transcription;
pub use crate::anthropic::{Fault, RecordedRequest, Reply, ReplyBlock, Responder, Timing};
pub use transcription::TranscriptionRequest;

/// The sample rate of the `pcm` speech format.
pub const SPEECH_SAMPLE_RATE: u32 = 24_000;

/// Configuration fixed at start.
#[derive(Debug, Clone)]
pub struct OpenAiEmulatorConfig {
    /// The only accepted key; `None` accepts any non-empty key.
    pub api_key: Option<String>,
    /// Milliseconds of speech per input character at speed 1.0 (default 60).
    pub ms_per_char: u32,
    /// Milliseconds of audio per streamed speech chunk (default 100).
    pub speech_chunk_ms: u32,
}

impl Default for OpenAiEmulatorConfig {
    fn default() -> Self {
        Self { api_key: None, ms_per_char: 60, speech_chunk_ms: 100 }
    }
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
    /// Transcription's own script (docs/protocols.md#openai-compatible-endpoints).
    transcription: transcription::Script,
}

struct Shared {
    config: OpenAiEmulatorConfig,
    script: Mutex<Script>,
}

impl Shared {
    fn script(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running OpenAI-compatible emulator; stops when dropped.
pub struct OpenAiEmulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for OpenAiEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiEmulator").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for OpenAiEmulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl OpenAiEmulator {
    /// Starts an emulator accepting any non-empty key on `127.0.0.1:<free port>`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(OpenAiEmulatorConfig::default()).await
    }

    /// Starts an emulator with `config`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start_with(config: OpenAiEmulatorConfig) -> std::io::Result<Self> {
        let shared = Arc::new(Shared { config, script: Mutex::new(Script::default()) });
        let router = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/audio/speech", post(speech))
            .route("/v1/audio/transcriptions", post(transcription::transcriptions))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(crate::nodelay(listener), router).await {
                tracing::warn!(message = "OpenAI emulator stopped.", %error);
            }
        });
        Ok(Self { addr, shared, server })
    }

    /// The base URL to configure clients with, including `/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Scripts the next request (each `push_*` scripts one request, chat or speech, in
    /// order): answer a chat with `reply`. Requests beyond the script go to the responder, or
    /// get an echo of the last user message.
    pub fn push_reply(&self, reply: Reply) {
        self.shared.script().queue.push_back(Scripted { reply: Some(reply), fault: None });
    }

    /// Scripts the next request: stream `reply` but fail as `fault` says.
    pub fn push_reply_with_fault(&self, reply: Reply, fault: Fault) {
        self.shared.script().queue.push_back(Scripted { reply: Some(reply), fault: Some(fault) });
    }

    /// Answers chat requests with no queued reply by calling `responder` with the body.
    pub fn set_responder(&self, responder: impl Fn(&Value) -> Reply + Send + Sync + 'static) {
        self.shared.script().responder = Some(Arc::new(responder));
    }

    /// Sets the latency of the following responses (chat and speech).
    pub fn set_timing(&self, timing: Timing) {
        self.shared.script().timing = timing;
    }

    /// Scripts the next request (chat or speech) to fail as `fault` says. For speech, `after_deltas`
    /// counts audio chunks and a mid-stream error cuts the connection (audio has no error
    /// framing).
    pub fn push_fault(&self, fault: Fault) {
        self.shared.script().queue.push_back(Scripted { reply: None, fault: Some(fault) });
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.script().requests.clone()
    }

    /// The exact speech audio (24 kHz PCM samples) the emulator produces for `input` at `speed`.
    pub fn speech_samples(&self, input: &str, speed: f64) -> Vec<i16> {
        speech_samples(&self.shared.config, input, speed)
    }
}

fn speech_samples(config: &OpenAiEmulatorConfig, input: &str, speed: f64) -> Vec<i16> {
    let speed = if speed.is_finite() && speed > 0.0 { speed.clamp(0.25, 4.0) } else { 1.0 };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // small positive values
    let ms_per_char = (f64::from(config.ms_per_char) / speed).round().max(1.0) as u32;
    text_tone(input, SPEECH_SAMPLE_RATE, ms_per_char)
}

fn error_response(
    status: u16,
    message: &str,
    error_type: &str,
    code: Option<&str>,
    param: Option<&str>,
) -> Response {
    let body = json!({
        "error": { "message": message, "type": error_type, "param": param, "code": code },
    });
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body)).into_response()
}

fn status_fault_response(status: u16) -> Response {
    match status {
        401 => error_response(
            401,
            "Incorrect API key provided.",
            "invalid_request_error",
            Some("invalid_api_key"),
            None,
        ),
        429 => error_response(
            429,
            "Rate limit reached for requests. Please try again in 1s.",
            "requests",
            Some("rate_limit_exceeded"),
            None,
        ),
        400..=499 => {
            error_response(status, "injected failure", "invalid_request_error", None, None)
        }
        _ => error_response(
            status,
            "The server had an error while processing your request.",
            "server_error",
            None,
            None,
        ),
    }
}

/// An accepted request and what the script says about it.
struct Admitted {
    request: Value,
    reply: Option<Reply>,
    fault: Option<Fault>,
    timing: Timing,
    id: u64,
}

/// Records the request, checks auth and pops the script; on success returns the parsed body.
fn admit(
    shared: &Shared,
    headers: &HeaderMap,
    path: &str,
    body: &Bytes,
) -> Result<Admitted, Box<Response>> {
    let mut script = shared.script();
    script.requests.push(RecordedRequest {
        path: path.to_owned(),
        headers: headers
            .iter()
            .map(|(name, value)| {
                (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
            })
            .collect(),
        body: serde_json::from_slice(body).unwrap_or(Value::Null),
    });
    let authorised = bearer_authorised(headers, shared.config.api_key.as_deref());
    if !authorised {
        return Err(Box::new(error_response(
            401,
            "Incorrect API key provided.",
            "invalid_request_error",
            Some("invalid_api_key"),
            None,
        )));
    }
    let Scripted { reply, fault } =
        script.queue.pop_front().unwrap_or(Scripted { reply: None, fault: None });
    if let Some(Fault::Status(status)) = fault {
        return Err(Box::new(status_fault_response(status)));
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return Err(Box::new(error_response(
            400,
            "We could not parse the JSON body of your request.",
            "invalid_request_error",
            None,
            None,
        )));
    };
    script.next_id += 1;
    Ok(Admitted { request, reply, fault, timing: script.timing, id: script.next_id })
}

fn body_from_channel(receiver: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Body {
    Body::from_stream(futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    }))
}

/// The Chat Completions rules for tool results, with the API's error messages: an assistant
/// message with `tool_calls` is followed by `tool` messages answering each call id, and every
/// `tool` message answers a call of the assistant message before the run of `tool` messages.
///
/// # Errors
/// The API's message for the first rule broken.
pub fn check_tool_messages(request: &Value) -> Result<(), String> {
    let messages = request.get("messages").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    fn role(message: &Value) -> &str {
        message.get("role").and_then(Value::as_str).unwrap_or("")
    }
    let mut open: Option<Vec<String>> = None;
    for message in messages {
        if role(message) == "tool" {
            let id = message.get("tool_call_id").and_then(Value::as_str).unwrap_or_default();
            match open.as_mut() {
                Some(ids) if ids.iter().any(|open_id| open_id == id) => {
                    ids.retain(|open_id| open_id != id)
                }
                _ => {
                    return Err("Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.".to_owned());
                }
            }
            continue;
        }
        if let Some(ids) = open.take()
            && !ids.is_empty()
        {
            return Err(format!(
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
                ids.join(", ")
            ));
        }
        if role(message) == "assistant" {
            let ids: Vec<String> = message
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|call| call.get("id").and_then(Value::as_str).map(str::to_owned))
                .collect();
            if !ids.is_empty() {
                open = Some(ids);
            }
        }
    }
    match open {
        Some(ids) if !ids.is_empty() => Err(format!(
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
            ids.join(", ")
        )),
        _ => Ok(()),
    }
}

fn last_user_text(request: &Value) -> String {
    request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|messages| messages.iter().rev().find(|m| m.get("role") == Some(&json!("user"))))
        .and_then(|message| match message.get("content") {
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Array(parts)) => Some(
                parts
                    .iter()
                    .filter_map(|part| part.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4).max(1)
}

fn finish_reason(reply: &Reply) -> &'static str {
    match reply.stop_reason.as_deref() {
        Some("max_tokens" | "length") => "length",
        Some("content_filter") => "content_filter",
        _ if reply.blocks.iter().any(|b| matches!(b, ReplyBlock::ToolUse { .. })) => "tool_calls",
        _ => "stop",
    }
}

fn reply_text(reply: &Reply) -> String {
    reply
        .blocks
        .iter()
        .filter_map(|block| match block {
            ReplyBlock::Text(text) => Some(text.as_str()),
            ReplyBlock::ToolUse { .. } => None,
        })
        .collect()
}

fn reply_tools(reply: &Reply) -> Vec<(String, String)> {
    reply
        .blocks
        .iter()
        .filter_map(|block| match block {
            ReplyBlock::ToolUse { name, input } => Some((name.clone(), input.to_string())),
            ReplyBlock::Text(_) => None,
        })
        .collect()
}

fn call_id(completion: u64, index: usize) -> String {
    format!("call_emu{completion:08}{index:04}")
}

fn usage_json(prompt_tokens: u64, completion_tokens: u64) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Admitted { request, reply: scripted_reply, fault, timing, id: completion } =
        match admit(&shared, &headers, "/v1/chat/completions", &body) {
            Ok(admitted) => admitted,
            Err(response) => return *response,
        };
    if request.get("model").and_then(Value::as_str).is_none() {
        return error_response(
            400,
            "you must provide a model parameter",
            "invalid_request_error",
            None,
            Some("model"),
        );
    }
    if request.get("messages").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        return error_response(
            400,
            "[] is too short - 'messages'",
            "invalid_request_error",
            None,
            Some("messages"),
        );
    }
    if let Err(message) = check_tool_messages(&request) {
        return error_response(400, &message, "invalid_request_error", None, Some("messages"));
    }
    let reply = {
        let script = shared.script();
        match scripted_reply {
            Some(reply) => reply,
            None => match &script.responder {
                Some(responder) => responder(&request),
                None => Reply::text(format!("You said: {}", last_user_text(&request))),
            },
        }
    };
    let delay = timing.first_byte + Fault::first_byte_delay(fault.as_ref());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let model = request.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
    let prompt_tokens = estimate_tokens(&request.to_string());
    let text = reply_text(&reply);
    let tools = reply_tools(&reply);
    let completion_tokens =
        estimate_tokens(&text) + tools.iter().map(|(_, a)| estimate_tokens(a)).sum::<u64>();
    if !request.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        let tool_calls: Vec<Value> = tools
            .iter()
            .enumerate()
            .map(|(index, (name, arguments))| {
                json!({ "id": call_id(completion, index), "type": "function", "function": { "name": name, "arguments": arguments } })
            })
            .collect();
        let mut message = json!({ "role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }, "refusal": null });
        if !tool_calls.is_empty() {
            message["tool_calls"] = json!(tool_calls);
        }
        return axum::Json(json!({
            "id": format!("chatcmpl-emu{completion:012}"),
            "object": "chat.completion",
            "created": now_unix(),
            "model": model,
            "system_fingerprint": "fp_emulator",
            "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(&reply) }],
            "usage": usage_json(prompt_tokens, completion_tokens),
        }))
        .into_response();
    }
    let include_usage =
        request.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    let (sender, receiver) = mpsc::channel(16);
    let finish = finish_reason(&reply);
    tokio::spawn(async move {
        let stream = ChatStream {
            sender,
            id: format!("chatcmpl-emu{completion:012}"),
            created: now_unix(),
            model,
            include_usage,
        };
        // A send error means the client went away.
        let _ = stream
            .produce(
                &text,
                &tools,
                finish,
                completion,
                (prompt_tokens, completion_tokens),
                timing,
                fault,
            )
            .await;
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body_from_channel(receiver))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

struct ChatStream {
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

type SendResult = Result<(), mpsc::error::SendError<Result<Bytes, std::io::Error>>>;

impl ChatStream {
    async fn data(&self, data: &Value) -> SendResult {
        self.sender.send(Ok(Bytes::from(format!("data: {data}\n\n")))).await
    }

    async fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> SendResult {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_emulator",
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason }],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        self.data(&chunk).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn produce(
        &self,
        text: &str,
        tools: &[(String, String)],
        finish_reason: &str,
        completion: u64,
        (prompt_tokens, completion_tokens): (u64, u64),
        timing: Timing,
        fault: Option<Fault>,
    ) -> SendResult {
        self.chunk(json!({ "role": "assistant", "content": "", "refusal": null }), None).await?;
        let mut deltas: Vec<Value> =
            split_words(text).into_iter().map(|word| json!({ "content": word })).collect();
        for (index, (name, arguments)) in tools.iter().enumerate() {
            deltas.push(json!({ "tool_calls": [{ "index": index, "id": call_id(completion, index), "type": "function", "function": { "name": name, "arguments": "" } }] }));
            let characters: Vec<char> = arguments.chars().collect();
            for piece in characters.chunks(12) {
                let piece: String = piece.iter().collect();
                deltas.push(json!({ "tool_calls": [{ "index": index, "function": { "arguments": piece } }] }));
            }
        }
        for (n_sent, delta) in deltas.into_iter().enumerate() {
            if Fault::stalls_at(fault.as_ref(), n_sent) {
                self.sender.closed().await;
                return Ok(());
            }
            match &fault {
                Some(Fault::MidStreamError { after_deltas, error_type })
                    if n_sent == *after_deltas =>
                {
                    let error = json!({ "error": { "message": "The server had an error while processing your request.", "type": error_type, "param": null, "code": null } });
                    return self.data(&error).await;
                }
                Some(Fault::Disconnect { after_deltas }) if n_sent == *after_deltas => {
                    return self
                        .sender
                        .send(Err(std::io::Error::other("injected disconnect")))
                        .await;
                }
                _ => {}
            }
            if !timing.chunk_interval.is_zero() {
                tokio::time::sleep(timing.chunk_interval).await;
            }
            self.chunk(delta, None).await?;
        }
        self.chunk(json!({}), Some(finish_reason)).await?;
        if self.include_usage {
            let usage = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": "fp_emulator",
                "choices": [],
                "usage": usage_json(prompt_tokens, completion_tokens),
            });
            self.data(&usage).await?;
        }
        self.sender.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await
    }
}

async fn speech(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let Admitted { request, fault, timing, .. } =
        match admit(&shared, &headers, "/v1/audio/speech", &body) {
            Ok(admitted) => admitted,
            Err(response) => return *response,
        };
    for field in ["model", "input", "voice"] {
        if request.get(field).is_none() {
            return error_response(
                400,
                &format!("Missing required parameter: '{field}'."),
                "invalid_request_error",
                None,
                Some(field),
            );
        }
    }
    let input = request.get("input").and_then(Value::as_str).unwrap_or_default().to_owned();
    if input.chars().count() > 4096 {
        return error_response(
            400,
            "input is longer than 4096 characters",
            "invalid_request_error",
            None,
            Some("input"),
        );
    }
    let format = request.get("response_format").and_then(Value::as_str).unwrap_or("mp3").to_owned();
    if format != "pcm" && format != "wav" {
        return error_response(
            400,
            &format!("The emulator only produces 'pcm' and 'wav', not '{format}'."),
            "invalid_request_error",
            None,
            Some("response_format"),
        );
    }
    let speed = request.get("speed").and_then(Value::as_f64).unwrap_or(1.0);
    let samples = speech_samples(&shared.config, &input, speed);
    let mut audio = Vec::with_capacity(samples.len() * 2 + 44);
    if format == "wav" {
        // Streamed WAV announces an unknown length, as OpenAI's does.
        audio.extend_from_slice(&wav::pcm16_mono_header(SPEECH_SAMPLE_RATE, u32::MAX));
    }
    audio.extend(samples_to_pcm16le(&samples));
    let chunk_bytes =
        (SPEECH_SAMPLE_RATE as usize * 2 * shared.config.speech_chunk_ms.max(1) as usize / 1000)
            .max(2);
    let delay = timing.first_byte + Fault::first_byte_delay(fault.as_ref());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (sender, receiver) = mpsc::channel(8);
    tokio::spawn(async move {
        for (index, chunk) in audio.chunks(chunk_bytes).enumerate() {
            if Fault::stalls_at(fault.as_ref(), index) {
                sender.closed().await;
                return;
            }
            if let Some(
                Fault::Disconnect { after_deltas } | Fault::MidStreamError { after_deltas, .. },
            ) = &fault
                && index == *after_deltas
            {
                let _ = sender.send(Err(std::io::Error::other("injected disconnect"))).await;
                return;
            }
            if index > 0 && !timing.chunk_interval.is_zero() {
                tokio::time::sleep(timing.chunk_interval).await;
            }
            if sender.send(Ok(Bytes::copy_from_slice(chunk))).await.is_err() {
                return;
            }
        }
    });
    let content_type = if format == "wav" { "audio/wav" } else { "audio/pcm" };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(body_from_channel(receiver))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Whether the request's `Authorization: Bearer` key is accepted: the configured key, or any
/// non-blank key when none is configured.
pub(crate) fn bearer_authorised(headers: &HeaderMap, expected: Option<&str>) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match (presented, expected) {
        (Some(presented), Some(expected)) => presented == expected,
        (Some(presented), None) => !presented.trim().is_empty(),
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_messages_must_answer_each_call_of_the_assistant_message_before() {
        let calls = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "call_b", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        ]});
        let tool = |id: &str| json!({"role": "tool", "tool_call_id": id, "content": "ok"});
        let user = json!({"role": "user", "content": "hi"});
        let request = |messages: Value| json!({"messages": messages});
        assert_eq!(
            check_tool_messages(&request(json!([
                user,
                calls,
                tool("call_b"),
                tool("call_a"),
                user
            ]))),
            Ok(())
        );
        let missing =
            check_tool_messages(&request(json!([user, calls, tool("call_a"), user]))).unwrap_err();
        assert!(missing.ends_with("did not have response messages: call_b"), "{missing}");
        let at_end = check_tool_messages(&request(json!([user, calls]))).unwrap_err();
        assert!(at_end.contains("call_a, call_b"), "{at_end}");
        let stray = check_tool_messages(&request(json!([user, tool("call_z")]))).unwrap_err();
        assert!(stray.contains("must be a response to a preceeding message"), "{stray}");
    }
}
