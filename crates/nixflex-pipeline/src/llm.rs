//! The streaming LLM interface: one request in, a stream of text deltas, tool calls and a final
//! `Done` out (livekit `LLMStream` shape).
//!
//! The types here are vendor-neutral; each client in `nixflex-providers` maps them onto its wire
//! format. Dropping an [`LlmStream`] cancels the request: implementations must not keep working
//! in the background after the stream is dropped.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;

use crate::ProviderError;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The caller (or tool results returned on the caller's side of the conversation).
    User,
    /// The agent.
    Assistant,
}

/// One piece of a message's content.
#[derive(Debug, Clone, PartialEq)]
pub enum ContentPart {
    /// Plain text.
    Text(String),
    /// The assistant asked to call a tool (recorded in history so the result can follow it).
    ToolUse {
        /// The provider's id of the call, echoed by the matching [`ContentPart::ToolResult`].
        id: String,
        /// The tool's name.
        name: String,
        /// The arguments as a JSON value.
        input: serde_json::Value,
    },
    /// The result of a tool call, sent back in a `User` message.
    ToolResult {
        /// The id of the [`ContentPart::ToolUse`] this answers.
        tool_use_id: String,
        /// The result as text (often JSON).
        content: String,
        /// Whether the tool failed.
        is_error: bool,
    },
}

/// One message of the conversation history.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmMessage {
    /// Who said it.
    pub role: Role,
    /// What was said, in order.
    pub content: Vec<ContentPart>,
}

impl LlmMessage {
    /// A user message with one text part.
    pub fn user(text: impl Into<String>) -> Self {
        Self { role: Role::User, content: vec![ContentPart::Text(text.into())] }
    }

    /// An assistant message with one text part.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self { role: Role::Assistant, content: vec![ContentPart::Text(text.into())] }
    }

    /// The concatenated text parts of the message.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for part in &self.content {
            if let ContentPart::Text(piece) = part {
                text.push_str(piece);
            }
        }
        text
    }
}

/// A tool (custom function) the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// The name the model uses to call it.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// The JSON Schema of its arguments (an `object` schema).
    pub input_schema: serde_json::Value,
}

/// A request for one streamed completion.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmRequest {
    /// The provider's model id.
    pub model: String,
    /// The system prompt, if any.
    pub system: Option<String>,
    /// The conversation so far, oldest first.
    pub messages: Vec<LlmMessage>,
    /// Sampling temperature; `None` leaves the provider's default.
    pub temperature: Option<f32>,
    /// The maximum number of tokens to generate.
    pub max_tokens: u32,
    /// Tools the model may call; empty for none.
    pub tools: Vec<ToolSpec>,
    /// The name of one of `tools` the model must call (structured output); `None` lets the
    /// model choose.
    pub tool_choice: Option<String>,
}

impl LlmRequest {
    /// A request with no system prompt, tools or temperature and `max_tokens = 1024`.
    pub fn new(model: impl Into<String>, messages: Vec<LlmMessage>) -> Self {
        Self {
            model: model.into(),
            system: None,
            messages,
            temperature: None,
            max_tokens: 1024,
            tools: Vec::new(),
            tool_choice: None,
        }
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// It finished its turn.
    EndTurn,
    /// It hit `max_tokens`.
    MaxTokens,
    /// It produced a stop sequence.
    StopSequence,
    /// It wants tool results before it continues.
    ToolUse,
    /// The provider filtered the content.
    ContentFilter,
    /// A reason this crate does not know, verbatim.
    Other(String),
}

/// Token counts of one completion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Generated tokens.
    pub output_tokens: u32,
}

/// One event of a streamed completion.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    /// More text of the reply, in order.
    TextDelta(String),
    /// A complete tool call (arguments fully received and checked to be valid JSON).
    ToolCall {
        /// The provider's id of the call.
        id: String,
        /// The tool's name.
        name: String,
        /// The arguments as a JSON text (`{}` when the model sent none).
        arguments_json: String,
    },
    /// The completion ended; always the last event of a successful stream.
    Done {
        /// Why it ended.
        stop_reason: StopReason,
        /// Final token counts.
        usage: Usage,
    },
}

/// The stream of events of one completion. Dropping it cancels the request.
pub struct LlmStream {
    /// The provider's event stream.
    inner: Pin<Box<dyn Stream<Item = Result<LlmEvent, ProviderError>> + Send + 'static>>,
}

impl LlmStream {
    /// Wraps a provider's event stream.
    pub fn new(
        stream: impl Stream<Item = Result<LlmEvent, ProviderError>> + Send + 'static,
    ) -> Self {
        Self { inner: Box::pin(stream) }
    }
}

impl fmt::Debug for LlmStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmStream").finish_non_exhaustive()
    }
}

impl Stream for LlmStream {
    type Item = Result<LlmEvent, ProviderError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// A streaming chat model.
#[async_trait::async_trait]
pub trait LlmProvider: Send + Sync + fmt::Debug {
    /// A short name for logs and metrics (`"anthropic"`, `"openai"`).
    fn name(&self) -> &'static str;

    /// Starts a completion. Resolves once the provider accepted the request (HTTP status
    /// received), so that auth, rate-limit and validation errors surface here rather than
    /// inside the stream.
    ///
    /// # Errors
    /// A [`ProviderError`] when the provider is not configured, unreachable or rejects the request.
    async fn stream(&self, request: LlmRequest) -> Result<LlmStream, ProviderError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_text_joins_only_the_text_parts() {
        let message = LlmMessage {
            role: Role::Assistant,
            content: vec![
                ContentPart::Text("Let me check. ".to_owned()),
                ContentPart::ToolUse {
                    id: "t1".to_owned(),
                    name: "lookup".to_owned(),
                    input: serde_json::json!({}),
                },
                ContentPart::Text("Done.".to_owned()),
            ],
        };
        assert_eq!(message.text(), "Let me check. Done.");
    }
}
