//! OpenAI-compatible Chat Completions client (streaming, tool calls) — docs/protocols.md#openai-compatible-endpoints.
//!
//! `POST {base}/chat/completions` (base defaults to `https://api.openai.com/v1`, so local
//! servers such as llama.cpp or vLLM work with their own `/v1` base), Bearer auth,
//! `stream: true` with `stream_options.include_usage`. Deltas carry text and tool-call
//! fragments keyed by `index`; the final usage chunk has `choices: []` (some servers send
//! `null`); the stream ends with `data: [DONE]`.

use std::collections::BTreeMap;
use std::time::Duration;

use nixflex_pipeline::ProviderError;
use nixflex_pipeline::llm::{
    ContentPart, LlmEvent, LlmProvider, LlmRequest, LlmStream, Role, StopReason, Usage,
};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::llm::http;
use crate::llm::sse::{SseParser, llm_stream};

const PROVIDER: &str = "openai";

/// Where and how to reach an OpenAI-compatible server.
#[derive(Debug, Clone)]
pub struct OpenAiChatConfig {
    /// Base URL including `/v1` (default `https://api.openai.com/v1`).
    pub base_url: String,
    /// The API key; when missing every call fails with `NotConfigured`.
    pub api_key: Option<SecretString>,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// How long to wait for the response head (status) after sending.
    pub first_byte_timeout: Duration,
    /// How long the stream may stay silent between chunks.
    pub idle_timeout: Duration,
}

impl Default for OpenAiChatConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com/v1".to_owned(),
            api_key: None,
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// A streaming Chat Completions client.
#[derive(Debug, Clone)]
pub struct OpenAiChatClient {
    http: reqwest::Client,
    config: OpenAiChatConfig,
}

impl OpenAiChatClient {
    /// A client for `config`. A missing API key is accepted here and reported by each call.
    ///
    /// # Errors
    /// `NotConfigured` when the HTTP client cannot be built.
    pub fn new(config: OpenAiChatConfig) -> Result<Self, ProviderError> {
        let http = http::build_client(config.connect_timeout)?;
        Ok(Self { http, config })
    }

    /// A client sharing an existing connection pool.
    pub fn with_http_client(config: OpenAiChatConfig, http: reqwest::Client) -> Self {
        Self { http, config }
    }
}

/// The JSON body of a streamed Chat Completions request.
pub fn request_body(request: &LlmRequest) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = &request.system {
        messages.push(json!({ "role": "system", "content": system }));
    }
    for message in &request.messages {
        match message.role {
            Role::Assistant => {
                let text = message.text();
                let tool_calls: Vec<Value> = message
                    .content
                    .iter()
                    .filter_map(|part| match part {
                        ContentPart::ToolUse { id, name, input } => Some(json!({
                            "id": id,
                            "type": "function",
                            "function": { "name": name, "arguments": input.to_string() },
                        })),
                        _ => None,
                    })
                    .collect();
                let mut assistant = json!({ "role": "assistant", "content": text });
                if !tool_calls.is_empty() {
                    if text.is_empty() {
                        assistant["content"] = Value::Null;
                    }
                    assistant["tool_calls"] = json!(tool_calls);
                }
                messages.push(assistant);
            }
            Role::User => {
                // Tool results become `tool` messages; text stays a user message, in order.
                let mut text = String::new();
                for part in &message.content {
                    match part {
                        ContentPart::Text(piece) => text.push_str(piece),
                        ContentPart::ToolResult { tool_use_id, content, .. } => {
                            messages.push(json!({
                                "role": "tool",
                                "tool_call_id": tool_use_id,
                                "content": content,
                            }));
                        }
                        ContentPart::ToolUse { .. } => {}
                    }
                }
                if !text.is_empty() {
                    messages.push(json!({ "role": "user", "content": text }));
                }
            }
        }
    }
    let mut body = json!({
        "model": request.model,
        "messages": messages,
        "max_tokens": request.max_tokens,
        "stream": true,
        "stream_options": { "include_usage": true },
    });
    if let Some(temperature) = request.temperature {
        body["temperature"] = http::decimal(temperature);
    }
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.input_schema,
                    },
                })
            })
            .collect();
        body["tools"] = json!(tools);
    }
    if let Some(name) = &request.tool_choice {
        body["tool_choice"] = json!({ "type": "function", "function": { "name": name } });
    }
    body
}

/// Maps an OpenAI-shaped error (`{"error":{"message","type","code"}}`) to a [`ProviderError`].
pub fn map_error(status: Option<u16>, body: &str) -> ProviderError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().and_then(|value| value.get("error"));
    let field = |name: &str| {
        error.and_then(|error| error.get(name)).and_then(Value::as_str).unwrap_or("").to_owned()
    };
    let (error_type, code) = (field("type"), field("code"));
    let detail = match error.and_then(|error| error.get("message")).and_then(Value::as_str) {
        Some(message) => message.to_owned(),
        None => body.chars().take(300).collect(),
    };
    let message = match status {
        Some(status) => format!("{PROVIDER}: HTTP {status} {error_type}: {detail}"),
        None => format!("{PROVIDER}: stream error {error_type}: {detail}"),
    };
    let status = status.unwrap_or(match error_type.as_str() {
        "invalid_request_error" => 400,
        _ => 500,
    });
    match status {
        401 | 403 => ProviderError::auth(message),
        // An exhausted quota is a 429 that waiting does not fix.
        429 if code == "insufficient_quota" || error_type == "insufficient_quota" => {
            ProviderError::rate_limited(message).with_retryable(false)
        }
        429 => ProviderError::rate_limited(message),
        status => ProviderError::upstream(status, message),
    }
}

#[async_trait::async_trait]
impl LlmProvider for OpenAiChatClient {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn stream(&self, request: LlmRequest) -> Result<LlmStream, ProviderError> {
        let key = http::require_key(PROVIDER, self.config.api_key.as_ref())?;
        let url = http::join_url(PROVIDER, &self.config.base_url, "/chat/completions")?;
        let builder = self
            .http
            .post(url)
            .bearer_auth(key)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&request_body(&request));
        let response = http::send(PROVIDER, builder, self.config.first_byte_timeout).await?;
        let status = response.status();
        if !status.is_success() {
            let body = http::error_body(response, self.config.first_byte_timeout).await;
            return Err(map_error(Some(status.as_u16()), &body));
        }
        let body = http::body_with_idle_timeout(PROVIDER, response, self.config.idle_timeout);
        Ok(llm_stream(PROVIDER, body, OpenAiParser::default()))
    }
}

/// A tool call being assembled from fragments.
#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// The Chat Completions chunk state machine.
#[derive(Debug, Default)]
pub(crate) struct OpenAiParser {
    calls: BTreeMap<u64, PartialCall>,
    finish_reason: Option<String>,
    usage: Usage,
    finished: bool,
}

impl OpenAiParser {
    fn take_tool_calls(&mut self) -> Result<Vec<LlmEvent>, ProviderError> {
        let mut out = Vec::new();
        for (_, call) in std::mem::take(&mut self.calls) {
            let arguments_json =
                if call.arguments.trim().is_empty() { "{}".to_owned() } else { call.arguments };
            if serde_json::from_str::<Value>(&arguments_json).is_err() {
                return Err(ProviderError::protocol(format!(
                    "{PROVIDER}: tool call {:?} has invalid JSON arguments",
                    call.name
                )));
            }
            out.push(LlmEvent::ToolCall { id: call.id, name: call.name, arguments_json });
        }
        Ok(out)
    }

    fn done(&mut self) -> Result<Vec<LlmEvent>, ProviderError> {
        self.finished = true;
        let mut out = self.take_tool_calls()?;
        let stop_reason = match self.finish_reason.as_deref() {
            Some("stop") | None => StopReason::EndTurn,
            Some("length") => StopReason::MaxTokens,
            Some("tool_calls" | "function_call") => StopReason::ToolUse,
            Some("content_filter") => StopReason::ContentFilter,
            Some(other) => StopReason::Other(other.to_owned()),
        };
        out.push(LlmEvent::Done { stop_reason, usage: self.usage });
        Ok(out)
    }
}

fn as_u32(value: Option<&Value>) -> Option<u32> {
    value.and_then(Value::as_u64).map(|count| u32::try_from(count).unwrap_or(u32::MAX))
}

impl SseParser for OpenAiParser {
    fn on_event(&mut self, _event: &str, data: &str) -> Result<Vec<LlmEvent>, ProviderError> {
        let data = data.trim();
        if data.is_empty() {
            return Ok(Vec::new());
        }
        if data == "[DONE]" {
            return self.done();
        }
        let chunk: Value = serde_json::from_str(data).map_err(|error| {
            ProviderError::protocol(format!("{PROVIDER}: chunk is not JSON: {error}"))
        })?;
        if chunk.get("error").is_some_and(|error| !error.is_null()) {
            return Err(map_error(None, data));
        }
        if let Some(usage) = chunk.get("usage").filter(|usage| usage.is_object()) {
            if let Some(tokens) = as_u32(usage.get("prompt_tokens")) {
                self.usage.input_tokens = tokens;
            }
            if let Some(tokens) = as_u32(usage.get("completion_tokens")) {
                self.usage.output_tokens = tokens;
            }
        }
        let mut out = Vec::new();
        let choices = chunk.get("choices").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        // One completion is requested (`n` = 1); other choice indexes are ignored.
        for choice in
            choices.iter().filter(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        {
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            if let Some(text) = delta.get("content").and_then(Value::as_str)
                && !text.is_empty()
            {
                out.push(LlmEvent::TextDelta(text.to_owned()));
            }
            for fragment in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten()
            {
                let index = fragment.get("index").and_then(Value::as_u64).unwrap_or(0);
                let call = self.calls.entry(index).or_default();
                if let Some(id) = fragment.get("id").and_then(Value::as_str) {
                    call.id = id.to_owned();
                }
                let function = fragment.get("function").unwrap_or(&Value::Null);
                if let Some(name) = function.get("name").and_then(Value::as_str) {
                    call.name.push_str(name);
                }
                if let Some(arguments) = function.get("arguments").and_then(Value::as_str) {
                    call.arguments.push_str(arguments);
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(reason.to_owned());
                // Tool calls are complete once the choice finished; hand them out before the
                // usage chunk and [DONE].
                out.extend(self.take_tool_calls()?);
            }
        }
        Ok(out)
    }

    fn is_finished(&self) -> bool {
        self.finished
    }

    fn on_eof(&mut self) -> Result<Vec<LlmEvent>, ProviderError> {
        if self.finish_reason.is_some() {
            // Some servers close without [DONE] after the final chunk; the reply is complete.
            self.done()
        } else {
            Err(ProviderError::transport("openai: the stream ended before the reply finished"))
        }
    }
}

#[cfg(test)]
mod tests {
    use nixflex_pipeline::ProviderErrorKind;
    use nixflex_pipeline::llm::{LlmMessage, ToolSpec};

    use super::*;

    fn feed(parser: &mut OpenAiParser, chunks: &[&str]) -> Vec<LlmEvent> {
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(parser.on_event("", chunk).unwrap());
        }
        out
    }

    #[test]
    fn text_chunks_usage_chunk_and_done_become_deltas_and_done() {
        let mut parser = OpenAiParser::default();
        let events = feed(
            &mut parser,
            &[
                r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}"#,
                r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
                r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
                r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#,
                "[DONE]",
            ],
        );
        assert_eq!(
            events,
            vec![
                LlmEvent::TextDelta("Hello".to_owned()),
                LlmEvent::Done {
                    stop_reason: StopReason::EndTurn,
                    usage: Usage { input_tokens: 9, output_tokens: 2 },
                },
            ]
        );
        assert!(parser.is_finished());
    }

    #[test]
    fn text_then_a_tool_call_whose_arguments_arrive_a_character_at_a_time() {
        let mut parser = OpenAiParser::default();
        let arguments = r#"{"item":"pain au \"chocolat\"","count":2}"#;
        let mut chunks = vec![
            json!({"choices":[{"index":0,"delta":{"role":"assistant","content":"Let me check."},"finish_reason":null}]}).to_string(),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"stock","arguments":""}}]},"finish_reason":null}]}).to_string(),
        ];
        for piece in arguments.chars() {
            chunks.push(json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":piece.to_string()}}]},"finish_reason":null}]}).to_string());
        }
        chunks.push(
            json!({"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}).to_string(),
        );
        chunks.push("[DONE]".to_owned());
        let borrowed: Vec<&str> = chunks.iter().map(String::as_str).collect();
        let events = feed(&mut parser, &borrowed);
        assert_eq!(events[0], LlmEvent::TextDelta("Let me check.".to_owned()));
        assert_eq!(
            events[1],
            LlmEvent::ToolCall {
                id: "call_1".to_owned(),
                name: "stock".to_owned(),
                arguments_json: arguments.to_owned(),
            }
        );
        assert!(matches!(&events[2], LlmEvent::Done { stop_reason: StopReason::ToolUse, .. }));
        assert_eq!(events.len(), 3, "each call is handed out once: {events:?}");
    }

    #[test]
    fn tool_call_fragments_are_joined_by_index() {
        let mut parser = OpenAiParser::default();
        let events = feed(
            &mut parser,
            &[
                r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_abc","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}"#,
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_def","type":"function","function":{"name":"get_time","arguments":"{}"}}]},"finish_reason":null}]}"#,
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]}"#,
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":null}]}"#,
                r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
                r#"{"choices":null,"usage":{"prompt_tokens":5,"completion_tokens":7}}"#,
                "[DONE]",
            ],
        );
        assert_eq!(
            events,
            vec![
                LlmEvent::ToolCall {
                    id: "call_abc".to_owned(),
                    name: "get_weather".to_owned(),
                    arguments_json: r#"{"city":"Paris"}"#.to_owned(),
                },
                LlmEvent::ToolCall {
                    id: "call_def".to_owned(),
                    name: "get_time".to_owned(),
                    arguments_json: "{}".to_owned(),
                },
                LlmEvent::Done {
                    stop_reason: StopReason::ToolUse,
                    usage: Usage { input_tokens: 5, output_tokens: 7 },
                },
            ]
        );
    }

    #[test]
    fn an_error_chunk_in_the_stream_is_an_error() {
        let mut parser = OpenAiParser::default();
        let error = parser
            .on_event("", r#"{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}"#)
            .unwrap_err();
        assert!(error.retryable);
    }

    #[test]
    fn a_stream_cut_before_the_finish_is_a_transport_error() {
        let mut parser = OpenAiParser::default();
        feed(
            &mut parser,
            &[r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#],
        );
        assert_eq!(parser.on_eof().unwrap_err().kind, ProviderErrorKind::Transport);
    }

    #[test]
    fn quota_exhaustion_is_not_retryable_but_rate_limits_are() {
        let quota = map_error(
            Some(429),
            r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
        );
        assert_eq!(quota.kind, ProviderErrorKind::RateLimited);
        assert!(!quota.retryable);
        let limited = map_error(
            Some(429),
            r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        );
        assert!(limited.retryable);
        assert_eq!(map_error(Some(401), "{}").kind, ProviderErrorKind::Auth);
    }

    #[test]
    fn the_request_body_maps_tool_history_to_assistant_tool_calls_and_tool_messages() {
        let mut request = LlmRequest::new(
            "gpt-4o-mini",
            vec![
                LlmMessage::user("Weather?"),
                LlmMessage {
                    role: Role::Assistant,
                    content: vec![ContentPart::ToolUse {
                        id: "call_1".to_owned(),
                        name: "weather".to_owned(),
                        input: json!({"city": "Paris"}),
                    }],
                },
                LlmMessage {
                    role: Role::User,
                    content: vec![ContentPart::ToolResult {
                        tool_use_id: "call_1".to_owned(),
                        content: "sunny".to_owned(),
                        is_error: false,
                    }],
                },
            ],
        );
        request.system = Some("Be brief.".to_owned());
        request.tools = vec![ToolSpec {
            name: "weather".to_owned(),
            description: "Weather".to_owned(),
            input_schema: json!({"type": "object"}),
        }];
        let body = request_body(&request);
        assert_eq!(body["messages"][0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(body["messages"][2]["content"], Value::Null);
        assert_eq!(
            body["messages"][2]["tool_calls"][0]["function"]["arguments"],
            json!(r#"{"city":"Paris"}"#)
        );
        assert_eq!(
            body["messages"][3],
            json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"})
        );
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert_eq!(body["tools"][0]["function"]["parameters"], json!({"type": "object"}));
        assert_eq!(body.get("tool_choice"), None);
        request.tool_choice = Some("weather".to_owned());
        let body = request_body(&request);
        assert_eq!(
            body["tool_choice"],
            json!({"type": "function", "function": {"name": "weather"}})
        );
    }
}
