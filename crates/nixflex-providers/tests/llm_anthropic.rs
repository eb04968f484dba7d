//! The Anthropic client against the Anthropic emulator over real loopback HTTP.

use std::time::Duration;

use futures::StreamExt;
use nixflex_pipeline::ProviderErrorKind;
use nixflex_pipeline::llm::{LlmEvent, LlmMessage, LlmProvider, LlmRequest, StopReason, ToolSpec};
use nixflex_providers::llm::anthropic::{AnthropicClient, AnthropicConfig};
use nixflex_testkit::anthropic::{
    AnthropicEmulator, AnthropicEmulatorConfig, Fault, Reply, Timing,
};
use secrecy::SecretString;
use serde_json::json;

fn client(base_url: &str, key: Option<&str>) -> AnthropicClient {
    AnthropicClient::new(AnthropicConfig {
        base_url: base_url.to_owned(),
        api_key: key.map(SecretString::from),
        first_byte_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        ..AnthropicConfig::default()
    })
    .expect("the client builds")
}

fn request(text: &str) -> LlmRequest {
    LlmRequest::new("claude-sonnet-4-5", vec![LlmMessage::user(text)])
}

async fn collect(
    client: &AnthropicClient,
    request: LlmRequest,
) -> Vec<Result<LlmEvent, nixflex_pipeline::ProviderError>> {
    client.stream(request).await.expect("the stream starts").collect().await
}

#[tokio::test]
async fn streamed_text_arrives_in_order_and_ends_with_cumulative_usage() {
    let emulator = AnthropicEmulator::start().await.unwrap();
    emulator.push_reply(Reply::text("Hello there, how can I help?"));
    let events = collect(&client(&emulator.base_url(), Some("sk-test")), request("Hi")).await;
    let events: Vec<LlmEvent> = events.into_iter().map(Result::unwrap).collect();
    let text: String = events
        .iter()
        .filter_map(|event| match event {
            LlmEvent::TextDelta(delta) => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "Hello there, how can I help?");
    assert!(events.len() > 3, "text should arrive in several deltas");
    let Some(LlmEvent::Done { stop_reason, usage }) = events.last() else {
        panic!("no Done: {events:?}")
    };
    assert_eq!(*stop_reason, StopReason::EndTurn);
    assert!(usage.input_tokens > 0 && usage.output_tokens > 1);

    let recorded = &emulator.requests()[0];
    assert_eq!(recorded.header("x-api-key"), Some("sk-test"));
    assert_eq!(recorded.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(recorded.body["stream"], json!(true));
    assert_eq!(recorded.body["messages"][0]["content"][0]["text"], json!("Hi"));
}

#[tokio::test]
async fn a_tool_call_is_parsed_with_its_arguments_after_the_text() {
    let emulator = AnthropicEmulator::start().await.unwrap();
    emulator.push_reply(Reply::text_then_tool_call(
        "Let me book that.",
        "book_appointment",
        json!({"date": "2026-03-01", "time": "10:00", "name": "Ada Lovelace"}),
    ));
    let mut request = request("Book me for March 1st at 10");
    request.tools = vec![ToolSpec {
        name: "book_appointment".to_owned(),
        description: "Books an appointment".to_owned(),
        input_schema: json!({"type": "object", "properties": {"date": {"type": "string"}}}),
    }];
    let events: Vec<LlmEvent> = collect(&client(&emulator.base_url(), Some("k")), request)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let call = events.iter().find_map(|event| match event {
        LlmEvent::ToolCall { id, name, arguments_json } => {
            Some((id.clone(), name.clone(), arguments_json.clone()))
        }
        _ => None,
    });
    let (id, name, arguments) = call.expect("a tool call");
    assert!(id.starts_with("toolu_"));
    assert_eq!(name, "book_appointment");
    let arguments: serde_json::Value = serde_json::from_str(&arguments).unwrap();
    assert_eq!(arguments, json!({"date": "2026-03-01", "time": "10:00", "name": "Ada Lovelace"}));
    assert!(matches!(events.last(), Some(LlmEvent::Done { stop_reason: StopReason::ToolUse, .. })));
    assert_eq!(emulator.requests()[0].body["tools"][0]["name"], json!("book_appointment"));
}

#[tokio::test]
async fn a_429_is_a_retryable_rate_limit_error() {
    let emulator = AnthropicEmulator::start().await.unwrap();
    emulator.push_fault(Fault::Status(429));
    let error = client(&emulator.base_url(), Some("k")).stream(request("Hi")).await.unwrap_err();
    assert_eq!(error.kind, ProviderErrorKind::RateLimited);
    assert!(error.retryable);
}

#[tokio::test]
async fn a_529_overloaded_answer_is_retryable_and_a_400_is_not() {
    let emulator = AnthropicEmulator::start().await.unwrap();
    emulator.push_fault(Fault::Status(529));
    emulator.push_fault(Fault::Status(400));
    let anthropic = client(&emulator.base_url(), Some("k"));
    let overloaded = anthropic.stream(request("Hi")).await.unwrap_err();
    assert_eq!(overloaded.kind, ProviderErrorKind::Upstream { status: 529 });
    assert!(overloaded.retryable);
    let invalid = anthropic.stream(request("Hi")).await.unwrap_err();
    assert_eq!(invalid.kind, ProviderErrorKind::Upstream { status: 400 });
    assert!(!invalid.retryable);
}

#[tokio::test]
async fn a_wrong_key_is_an_auth_error_that_is_not_retried() {
    let emulator = AnthropicEmulator::start_with(AnthropicEmulatorConfig {
        api_key: Some("right".to_owned()),
    })
    .await
    .unwrap();
    let error =
        client(&emulator.base_url(), Some("wrong")).stream(request("Hi")).await.unwrap_err();
    assert_eq!(error.kind, ProviderErrorKind::Auth);
    assert!(!error.retryable);
    assert!(!error.to_string().contains("wrong"), "the key must not appear in errors");
}

#[tokio::test]
async fn a_missing_key_fails_as_not_configured_without_calling_the_provider() {
    let emulator = AnthropicEmulator::start().await.unwrap();
    let error = client(&emulator.base_url(), None).stream(request("Hi")).await.unwrap_err();
    assert_eq!(error.kind, ProviderErrorKind::NotConfigured);
    assert!(error.message.contains("API key"));
    assert!(emulator.requests().is_empty());
}

#[tokio::test]
async fn a_mid_stream_overloaded_error_ends_the_stream_with_a_retryable_error() {
    let emulator = AnthropicEmulator::start().await.unwrap();
    emulator.push_reply_with_fault(
        Reply::text("one two three four five"),
        Fault::MidStreamError { after_deltas: 2, error_type: "overloaded_error".to_owned() },
    );
    let events = collect(&client(&emulator.base_url(), Some("k")), request("Hi")).await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0].as_ref().unwrap(), &LlmEvent::TextDelta("one".to_owned()));
    let error = events[2].as_ref().unwrap_err();
    assert_eq!(error.kind, ProviderErrorKind::Upstream { status: 529 });
    assert!(error.retryable);
}

#[tokio::test]
async fn a_connection_cut_mid_stream_is_a_retryable_transport_error() {
    let emulator = AnthropicEmulator::start().await.unwrap();
    emulator.push_reply_with_fault(
        Reply::text("one two three four five"),
        Fault::Disconnect { after_deltas: 1 },
    );
    let events = collect(&client(&emulator.base_url(), Some("k")), request("Hi")).await;
    let error = events.last().unwrap().as_ref().unwrap_err();
    assert_eq!(error.kind, ProviderErrorKind::Transport);
    assert!(error.retryable);
    assert!(!events.iter().any(|event| matches!(event, Ok(LlmEvent::Done { .. }))));
}

#[tokio::test]
async fn a_slow_first_byte_beyond_the_timeout_is_a_timeout_error() {
    let emulator = AnthropicEmulator::start().await.unwrap();
    emulator
        .set_timing(Timing { first_byte: Duration::from_secs(2), chunk_interval: Duration::ZERO });
    let anthropic = AnthropicClient::new(AnthropicConfig {
        base_url: emulator.base_url(),
        api_key: Some(SecretString::from("k")),
        first_byte_timeout: Duration::from_millis(100),
        ..AnthropicConfig::default()
    })
    .unwrap();
    let error = anthropic.stream(request("Hi")).await.unwrap_err();
    assert_eq!(error.kind, ProviderErrorKind::Timeout);
    assert!(error.retryable);
}

#[tokio::test]
async fn a_stream_that_stalls_between_tokens_beyond_the_idle_timeout_is_a_timeout_error() {
    let emulator = AnthropicEmulator::start().await.unwrap();
    emulator.push_reply(Reply::text("one two"));
    emulator
        .set_timing(Timing { first_byte: Duration::ZERO, chunk_interval: Duration::from_secs(2) });
    let anthropic = AnthropicClient::new(AnthropicConfig {
        base_url: emulator.base_url(),
        api_key: Some(SecretString::from("k")),
        idle_timeout: Duration::from_millis(150),
        ..AnthropicConfig::default()
    })
    .unwrap();
    let events: Vec<_> = anthropic.stream(request("Hi")).await.unwrap().collect().await;
    assert_eq!(events.last().unwrap().as_ref().unwrap_err().kind, ProviderErrorKind::Timeout);
}

#[tokio::test]
async fn the_time_to_first_token_follows_the_emulated_latency() {
    let emulator = AnthropicEmulator::start().await.unwrap();
    emulator.push_reply(Reply::text("a b c"));
    emulator.set_timing(Timing {
        first_byte: Duration::from_millis(200),
        chunk_interval: Duration::from_millis(50),
    });
    let started = std::time::Instant::now();
    let mut stream = client(&emulator.base_url(), Some("k")).stream(request("Hi")).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(first, LlmEvent::TextDelta("a".to_owned()));
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
}
