//! Anthropic Messages API client (streaming, tool use) — docs/protocols.md#anthropic-messages-streaming.
//!
//! `POST {base}/v1/messages` with `x-api-key` and `anthropic-version`, `stream: true`; the SSE
//! events `message_start`, `content_block_start/delta/stop`, `message_delta` (cumulative
//! usage), `message_stop`, `ping` and mid-stream `error` are mapped onto [`LlmEvent`]s; unknown
//! events are ignored as Anthropic's versioning policy requires. Tool arguments
//! (`input_json_delta`) are concatenated per content block and parsed at `content_block_stop`.

use std::collections::HashMap;
use std::time::Duration;

use nixflex_pipeline::ProviderError;
use nixflex_pipeline::llm::{
    ContentPart, LlmEvent, LlmProvider, LlmRequest, LlmStream, Role, StopReason, Usage,
};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::llm::http;
use crate::llm::sse::{SseParser, llm_stream};

const PROVIDER: &str = "anthropic";

/// Where and how to reach the Anthropic API.
#[derive(Debug, Clone)]
pub struct AnthropicConfig {
    /// Base URL without `/v1` (default `https://api.anthropic.com`).
    pub base_url: String,
    /// The API key; when missing every call fails with `NotConfigured`.
    pub api_key: Option<SecretString>,
    /// The `anthropic-version` header (default `2023-06-01`).
    pub api_version: String,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// How long to wait for the response head (status) after sending.
    pub first_byte_timeout: Duration,
    /// How long the stream may stay silent between events (pings count).
    pub idle_timeout: Duration,
}

impl Default for AnthropicConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.anthropic.com".to_owned(),
            api_key: None,
            api_version: "2023-06-01".to_owned(),
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// A streaming client of the Anthropic Messages API.
#[derive(Debug, Clone)]
pub struct AnthropicClient {
    http: reqwest::Client,
    config: AnthropicConfig,
}

impl AnthropicClient {
    /// A client for `config`. A missing API key is accepted here and reported by each call.
    ///
    /// # Errors
    /// `NotConfigured` when the HTTP client cannot be built.
    pub fn new(config: AnthropicConfig) -> Result<Self, ProviderError> {
        let http = http::build_client(config.connect_timeout)?;
        Ok(Self { http, config })
    }

    /// A client sharing an existing connection pool.
    pub fn with_http_client(config: AnthropicConfig, http: reqwest::Client) -> Self {
        Self { http, config }
    }
}

/// The JSON body of a streamed Messages request.
pub fn request_body(request: &LlmRequest) -> Value {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|message| {
            let role = match message.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            let content: Vec<Value> = message.content.iter().map(content_part).collect();
            json!({ "role": role, "content": content })
        })
        .collect();
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": messages,
        "stream": true,
    });
    if let Some(system) = &request.system {
        body["system"] = json!(system);
    }
    if let Some(temperature) = request.temperature {
        body["temperature"] = http::decimal(temperature);
    }
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": tool.input_schema,
                })
            })
            .collect();
        body["tools"] = json!(tools);
    }
    if let Some(name) = &request.tool_choice {
        body["tool_choice"] = json!({ "type": "tool", "name": name });
    }
    body
}

fn content_part(part: &ContentPart) -> Value {
    match part {
        ContentPart::Text(text) => json!({ "type": "text", "text": text }),
        ContentPart::ToolUse { id, name, input } => {
            json!({ "type": "tool_use", "id": id, "name": name, "input": input })
        }
        ContentPart::ToolResult { tool_use_id, content, is_error } => json!({
            "type": "tool_result",
            "tool_use_id": tool_use_id,
            "content": content,
            "is_error": is_error,
        }),
    }
}

/// Maps an Anthropic error (`{"type":"error","error":{"type","message"}}`, from an HTTP error
/// body or a mid-stream `error` event) to a [`ProviderError`].
pub fn map_error(status: Option<u16>, body: &str) -> ProviderError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error_type = parsed
        .as_ref()
        .and_then(|value| value.pointer("/error/type"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let detail = parsed
        .as_ref()
        .and_then(|value| value.pointer("/error/message"))
        .and_then(Value::as_str)
        .map_or_else(|| body.chars().take(300).collect(), str::to_owned);
    let message = match status {
        Some(status) => format!("{PROVIDER}: HTTP {status} {error_type}: {detail}"),
        None => format!("{PROVIDER}: stream error {error_type}: {detail}"),
    };
    match (error_type, status) {
        ("authentication_error" | "permission_error", _) | (_, Some(401 | 403)) => {
            ProviderError::auth(message)
        }
        ("rate_limit_error", _) | (_, Some(429)) => ProviderError::rate_limited(message),
        ("overloaded_error", _) => ProviderError::upstream(status.unwrap_or(529), message),
        ("api_error", None) => ProviderError::upstream(500, message),
        ("invalid_request_error", None) => ProviderError::upstream(400, message),
        ("request_too_large", None) => ProviderError::upstream(413, message),
        ("not_found_error", None) => ProviderError::upstream(404, message),
        ("timeout_error", None) => ProviderError::timeout(message),
        (_, Some(status)) => ProviderError::upstream(status, message),
        (_, None) => ProviderError::upstream(500, message),
    }
}

#[async_trait::async_trait]
impl LlmProvider for AnthropicClient {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn stream(&self, request: LlmRequest) -> Result<LlmStream, ProviderError> {
        let key = http::require_key(PROVIDER, self.config.api_key.as_ref())?;
        let url = http::join_url(PROVIDER, &self.config.base_url, "/v1/messages")?;
        let mut key_header = reqwest::header::HeaderValue::from_str(key).map_err(|_| {
            ProviderError::not_configured("anthropic: the API key is not a valid header value")
        })?;
        key_header.set_sensitive(true);
        let builder = self
            .http
            .post(url)
            .header("x-api-key", key_header)
            .header("anthropic-version", &self.config.api_version)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&request_body(&request));
        let response = http::send(PROVIDER, builder, self.config.first_byte_timeout).await?;
        let status = response.status();
        if !status.is_success() {
            let body = http::error_body(response, self.config.first_byte_timeout).await;
            return Err(map_error(Some(status.as_u16()), &body));
        }
        let body = http::body_with_idle_timeout(PROVIDER, response, self.config.idle_timeout);
        Ok(llm_stream(PROVIDER, body, AnthropicParser::default()))
    }
}

/// A content block being streamed.
#[derive(Debug)]
enum Block {
    Text,
    ToolUse { id: String, name: String, json: String },
    Other,
}

/// The Anthropic event state machine.
#[derive(Debug, Default)]
pub(crate) struct AnthropicParser {
    blocks: HashMap<u64, Block>,
    stop_reason: Option<StopReason>,
    usage: Usage,
    started: bool,
    finished: bool,
}

fn protocol(detail: &str) -> ProviderError {
    ProviderError::protocol(format!("{PROVIDER}: {detail}"))
}

fn as_u32(value: Option<&Value>) -> Option<u32> {
    value.and_then(Value::as_u64).map(|count| u32::try_from(count).unwrap_or(u32::MAX))
}

fn stop_reason(reason: &str) -> StopReason {
    match reason {
        "end_turn" => StopReason::EndTurn,
        "max_tokens" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence,
        "tool_use" => StopReason::ToolUse,
        "refusal" => StopReason::ContentFilter,
        other => StopReason::Other(other.to_owned()),
    }
}

impl SseParser for AnthropicParser {
    fn on_event(&mut self, event: &str, data: &str) -> Result<Vec<LlmEvent>, ProviderError> {
        if event == "ping" || data.trim().is_empty() {
            return Ok(Vec::new());
        }
        if event == "error" {
            return Err(map_error(None, data));
        }
        let value: Value = serde_json::from_str(data)
            .map_err(|error| protocol(&format!("event {event:?} is not JSON: {error}")))?;
        let kind = value.get("type").and_then(Value::as_str).unwrap_or(event);
        let index = value.get("index").and_then(Value::as_u64);
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                self.started = true;
                let usage = value.pointer("/message/usage");
                if let Some(tokens) = as_u32(usage.and_then(|u| u.get("input_tokens"))) {
                    self.usage.input_tokens = tokens;
                }
                if let Some(tokens) = as_u32(usage.and_then(|u| u.get("output_tokens"))) {
                    self.usage.output_tokens = tokens;
                }
            }
            "content_block_start" => {
                let index = index.ok_or_else(|| protocol("content_block_start without index"))?;
                let block = value.get("content_block").unwrap_or(&Value::Null);
                let block = match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        // The start block may already carry text (it is "" in practice).
                        if let Some(text) = block.get("text").and_then(Value::as_str)
                            && !text.is_empty()
                        {
                            out.push(LlmEvent::TextDelta(text.to_owned()));
                        }
                        Block::Text
                    }
                    Some("tool_use") => Block::ToolUse {
                        id: block.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
                        name: block
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        json: String::new(),
                    },
                    _ => Block::Other,
                };
                self.blocks.insert(index, block);
            }
            "content_block_delta" => {
                let index = index.ok_or_else(|| protocol("content_block_delta without index"))?;
                let delta = value.get("delta").unwrap_or(&Value::Null);
                match (delta.get("type").and_then(Value::as_str), self.blocks.get_mut(&index)) {
                    (Some("text_delta"), Some(Block::Text)) => {
                        let text = delta.get("text").and_then(Value::as_str).unwrap_or_default();
                        if !text.is_empty() {
                            out.push(LlmEvent::TextDelta(text.to_owned()));
                        }
                    }
                    (Some("input_json_delta"), Some(Block::ToolUse { json, .. })) => {
                        json.push_str(
                            delta.get("partial_json").and_then(Value::as_str).unwrap_or_default(),
                        );
                    }
                    (Some("text_delta" | "input_json_delta"), None) => {
                        return Err(protocol(&format!("delta for unknown content block {index}")));
                    }
                    // thinking_delta, signature_delta, citations_delta and future delta types.
                    _ => {}
                }
            }
            "content_block_stop" => {
                let index = index.ok_or_else(|| protocol("content_block_stop without index"))?;
                if let Some(Block::ToolUse { id, name, json }) = self.blocks.remove(&index) {
                    let arguments_json =
                        if json.trim().is_empty() { "{}".to_owned() } else { json };
                    if serde_json::from_str::<Value>(&arguments_json).is_err() {
                        return Err(protocol(&format!(
                            "tool call {name:?} has invalid JSON arguments"
                        )));
                    }
                    out.push(LlmEvent::ToolCall { id, name, arguments_json });
                }
            }
            "message_delta" => {
                if let Some(reason) = value.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(stop_reason(reason));
                }
                // Usage in message_delta is cumulative: it replaces, never adds.
                if let Some(tokens) = as_u32(value.pointer("/usage/output_tokens")) {
                    self.usage.output_tokens = tokens;
                }
                if let Some(tokens) = as_u32(value.pointer("/usage/input_tokens")) {
                    self.usage.input_tokens = tokens;
                }
            }
            "message_stop" => {
                self.finished = true;
                out.push(LlmEvent::Done {
                    stop_reason: self.stop_reason.clone().unwrap_or(StopReason::EndTurn),
                    usage: self.usage,
                });
            }
            // Unknown event types must be ignored (versioning policy).
            _ => {}
        }
        Ok(out)
    }

    fn is_finished(&self) -> bool {
        self.finished
    }

    fn on_eof(&mut self) -> Result<Vec<LlmEvent>, ProviderError> {
        Err(ProviderError::transport(if self.started {
            "anthropic: the stream ended before message_stop"
        } else {
            "anthropic: the stream ended before message_start"
        }))
    }
}

#[cfg(test)]
mod tests {
    use nixflex_pipeline::ProviderErrorKind;
    use nixflex_pipeline::llm::{LlmMessage, ToolSpec};

    use super::*;

    fn feed(parser: &mut AnthropicParser, events: &[(&str, &str)]) -> Vec<LlmEvent> {
        let mut out = Vec::new();
        for (event, data) in events {
            out.extend(parser.on_event(event, data).unwrap());
        }
        out
    }

    #[test]
    fn the_documented_text_stream_becomes_deltas_and_done_with_cumulative_usage() {
        // The example stream of the Anthropic streaming docs ("Basic streaming request").
        let mut parser = AnthropicParser::default();
        let events = feed(
            &mut parser,
            &[
                (
                    "message_start",
                    r#"{"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-6", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}"#,
                ),
                (
                    "content_block_start",
                    r#"{"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}"#,
                ),
                ("ping", r#"{"type": "ping"}"#),
                (
                    "content_block_delta",
                    r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}"#,
                ),
                (
                    "content_block_delta",
                    r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}"#,
                ),
                ("content_block_stop", r#"{"type": "content_block_stop", "index": 0}"#),
                (
                    "message_delta",
                    r#"{"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, "usage": {"output_tokens": 15}}"#,
                ),
                ("message_stop", r#"{"type": "message_stop"}"#),
            ],
        );
        assert_eq!(
            events,
            vec![
                LlmEvent::TextDelta("Hello".to_owned()),
                LlmEvent::TextDelta("!".to_owned()),
                LlmEvent::Done {
                    stop_reason: StopReason::EndTurn,
                    usage: Usage { input_tokens: 25, output_tokens: 15 },
                },
            ]
        );
        assert!(parser.is_finished());
    }

    #[test]
    fn tool_input_json_deltas_are_joined_and_parsed_at_block_stop() {
        let mut parser = AnthropicParser::default();
        let events = feed(
            &mut parser,
            &[
                (
                    "message_start",
                    r#"{"type":"message_start","message":{"usage":{"input_tokens":10,"output_tokens":1}}}"#,
                ),
                (
                    "content_block_start",
                    r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}"#,
                ),
                (
                    "content_block_delta",
                    r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
                ),
                (
                    "content_block_delta",
                    r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\": \"San Fra"}}"#,
                ),
                (
                    "content_block_delta",
                    r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ncisco, CA\"}"}}"#,
                ),
                ("content_block_stop", r#"{"type":"content_block_stop","index":1}"#),
                (
                    "message_delta",
                    r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}"#,
                ),
                ("message_stop", r#"{"type":"message_stop"}"#),
            ],
        );
        assert_eq!(
            events[0],
            LlmEvent::ToolCall {
                id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".to_owned(),
                name: "get_weather".to_owned(),
                arguments_json: r#"{"location": "San Francisco, CA"}"#.to_owned(),
            }
        );
        assert!(matches!(&events[1], LlmEvent::Done { stop_reason: StopReason::ToolUse, .. }));
    }

    #[test]
    fn text_then_two_tool_calls_with_json_split_anywhere_come_out_in_order() {
        let mut parser = AnthropicParser::default();
        let delta = |index: u32, piece: &str| {
            let data = json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": piece}});
            ("content_block_delta", data.to_string())
        };
        let mut events: Vec<(&str, String)> = vec![
            ("message_start", r#"{"type":"message_start","message":{"usage":{"input_tokens":5,"output_tokens":1}}}"#.to_owned()),
            ("content_block_start", r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#.to_owned()),
            ("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me check."}}"#.to_owned()),
            ("content_block_stop", r#"{"type":"content_block_stop","index":0}"#.to_owned()),
            ("content_block_start", r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_a","name":"stock","input":{}}}"#.to_owned()),
        ];
        // Split inside a key and inside an escaped quote, with non-ASCII text.
        for piece in ["{\"it", "em\": \"pain au \\\"choc", "olat\\\" \u{e9}", "clair\"}"] {
            events.push(delta(1, piece));
        }
        events
            .push(("content_block_stop", r#"{"type":"content_block_stop","index":1}"#.to_owned()));
        events.push(("content_block_start", r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_b","name":"hours","input":{}}}"#.to_owned()));
        events
            .push(("content_block_stop", r#"{"type":"content_block_stop","index":2}"#.to_owned()));
        events.push(("message_delta", r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":30}}"#.to_owned()));
        events.push(("message_stop", r#"{"type":"message_stop"}"#.to_owned()));
        let borrowed: Vec<(&str, &str)> = events.iter().map(|(e, d)| (*e, d.as_str())).collect();
        let out = feed(&mut parser, &borrowed);
        assert_eq!(out[0], LlmEvent::TextDelta("Let me check.".to_owned()));
        let LlmEvent::ToolCall { id, name, arguments_json } = &out[1] else { panic!("{out:?}") };
        assert_eq!((id.as_str(), name.as_str()), ("toolu_a", "stock"));
        let arguments: Value = serde_json::from_str(arguments_json).unwrap();
        assert_eq!(arguments, json!({"item": "pain au \"chocolat\" \u{e9}clair"}));
        assert_eq!(
            out[2],
            LlmEvent::ToolCall {
                id: "toolu_b".to_owned(),
                name: "hours".to_owned(),
                arguments_json: "{}".to_owned()
            },
            "a tool call without input deltas has empty arguments"
        );
        assert!(matches!(&out[3], LlmEvent::Done { stop_reason: StopReason::ToolUse, .. }));
    }

    #[test]
    fn unknown_events_and_thinking_deltas_are_ignored() {
        let mut parser = AnthropicParser::default();
        let events = feed(
            &mut parser,
            &[
                ("brand_new_event", r#"{"type":"brand_new_event","x":1}"#),
                (
                    "content_block_start",
                    r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
                ),
                (
                    "content_block_delta",
                    r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
                ),
                ("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
            ],
        );
        assert!(events.is_empty());
    }

    #[test]
    fn a_mid_stream_overloaded_error_is_a_retryable_529() {
        let mut parser = AnthropicParser::default();
        let error = parser
            .on_event("error", r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#)
            .unwrap_err();
        assert_eq!(error.kind, ProviderErrorKind::Upstream { status: 529 });
        assert!(error.retryable);
    }

    #[test]
    fn invalid_tool_json_is_a_protocol_error() {
        let mut parser = AnthropicParser::default();
        feed(
            &mut parser,
            &[
                (
                    "content_block_start",
                    r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}"#,
                ),
                (
                    "content_block_delta",
                    r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}"#,
                ),
            ],
        );
        let error = parser
            .on_event("content_block_stop", r#"{"type":"content_block_stop","index":0}"#)
            .unwrap_err();
        assert_eq!(error.kind, ProviderErrorKind::Protocol);
    }

    #[test]
    fn http_errors_map_to_kinds_with_the_right_retryability() {
        let body =
            |kind: &str| format!(r#"{{"type":"error","error":{{"type":"{kind}","message":"m"}}}}"#);
        assert_eq!(
            map_error(Some(401), &body("authentication_error")).kind,
            ProviderErrorKind::Auth
        );
        let limited = map_error(Some(429), &body("rate_limit_error"));
        assert_eq!(limited.kind, ProviderErrorKind::RateLimited);
        assert!(limited.retryable);
        let overloaded = map_error(Some(529), &body("overloaded_error"));
        assert_eq!(overloaded.kind, ProviderErrorKind::Upstream { status: 529 });
        assert!(overloaded.retryable);
        assert!(map_error(Some(500), &body("api_error")).retryable);
        let invalid = map_error(Some(400), &body("invalid_request_error"));
        assert!(!invalid.retryable);
        assert!(map_error(Some(502), "<html>bad gateway</html>").retryable);
    }

    #[test]
    fn the_request_body_carries_system_tools_and_tool_results() {
        let mut request = LlmRequest::new(
            "claude-sonnet-4-5",
            vec![
                LlmMessage::user("What's the weather?"),
                LlmMessage {
                    role: Role::Assistant,
                    content: vec![ContentPart::ToolUse {
                        id: "t1".to_owned(),
                        name: "weather".to_owned(),
                        input: json!({"city": "Paris"}),
                    }],
                },
                LlmMessage {
                    role: Role::User,
                    content: vec![ContentPart::ToolResult {
                        tool_use_id: "t1".to_owned(),
                        content: "sunny".to_owned(),
                        is_error: false,
                    }],
                },
            ],
        );
        request.system = Some("Be brief.".to_owned());
        request.temperature = Some(0.7);
        request.tools = vec![ToolSpec {
            name: "weather".to_owned(),
            description: "Weather by city".to_owned(),
            input_schema: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        }];
        let body = request_body(&request);
        assert_eq!(body["stream"], json!(true));
        assert_eq!(body["system"], json!("Be brief."));
        assert_eq!(body["max_tokens"], json!(1024));
        assert_eq!(body["temperature"].to_string(), "0.7");
        assert_eq!(body["messages"][1]["content"][0]["type"], json!("tool_use"));
        assert_eq!(body["messages"][2]["content"][0]["tool_use_id"], json!("t1"));
        assert_eq!(body["tools"][0]["input_schema"]["type"], json!("object"));
        assert_eq!(body.get("tool_choice"), None);
        request.tool_choice = Some("weather".to_owned());
        let body = request_body(&request);
        assert_eq!(body["tool_choice"], json!({"type": "tool", "name": "weather"}));
    }

    #[test]
    fn debug_output_never_shows_the_api_key() {
        let client = AnthropicClient::new(AnthropicConfig {
            api_key: Some(SecretString::from("sk-ant-very-secret")),
            ..AnthropicConfig::default()
        })
        .unwrap();
        assert!(!format!("{client:?}").contains("very-secret"));
    }
}
