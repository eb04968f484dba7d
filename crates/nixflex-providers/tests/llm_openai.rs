//! The OpenAI-compatible chat client against the OpenAI emulator over real loopback HTTP.

use futures::StreamExt;
use nixflex_pipeline::llm::{LlmEvent, LlmMessage, LlmProvider, LlmRequest, StopReason, ToolSpec};
use nixflex_pipeline::{ProviderError, ProviderErrorKind};
use nixflex_providers::llm::openai::{OpenAiChatClient, OpenAiChatConfig};
use nixflex_testkit::openai::{Fault, OpenAiEmulator, OpenAiEmulatorConfig, Reply};
use secrecy::SecretString;
use serde_json::json;

fn client(base_url: &str, key: Option<&str>) -> OpenAiChatClient {
    OpenAiChatClient::new(OpenAiChatConfig {
        base_url: base_url.to_owned(),
        api_key: key.map(SecretString::from),
        ..OpenAiChatConfig::default()
    })
    .expect("the client builds")
}

fn request(text: &str) -> LlmRequest {
    let mut request = LlmRequest::new("gpt-4o-mini", vec![LlmMessage::user(text)]);
    request.system = Some("You are a receptionist.".to_owned());
    request
}

async fn collect(
    client: &OpenAiChatClient,
    request: LlmRequest,
) -> Vec<Result<LlmEvent, ProviderError>> {
    client.stream(request).await.expect("the stream starts").collect().await
}

#[tokio::test]
async fn streamed_text_arrives_in_order_with_usage_from_the_final_chunk() {
    let emulator = OpenAiEmulator::start().await.unwrap();
    emulator.push_reply(Reply::text("Sure, I can help with that."));
    let events: Vec<LlmEvent> =
        collect(&client(&emulator.base_url(), Some("sk-test")), request("Hi"))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let text: String = events
        .iter()
        .filter_map(|event| match event {
            LlmEvent::TextDelta(delta) => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "Sure, I can help with that.");
    let Some(LlmEvent::Done { stop_reason, usage }) = events.last() else { panic!("no Done") };
    assert_eq!(*stop_reason, StopReason::EndTurn);
    assert!(usage.input_tokens > 0 && usage.output_tokens > 0);

    let recorded = &emulator.requests()[0];
    assert_eq!(recorded.path, "/v1/chat/completions");
    assert_eq!(recorded.header("authorization"), Some("Bearer sk-test"));
    assert_eq!(recorded.body["stream_options"], json!({"include_usage": true}));
    assert_eq!(recorded.body["messages"][0]["role"], json!("system"));
}

#[tokio::test]
async fn tool_call_fragments_are_joined_into_one_call_with_valid_arguments() {
    let emulator = OpenAiEmulator::start().await.unwrap();
    emulator.push_reply(Reply::tool_call(
        "transfer_call",
        json!({"department": "billing", "reason": "refund request"}),
    ));
    let mut request = request("Transfer me to billing");
    request.tools = vec![ToolSpec {
        name: "transfer_call".to_owned(),
        description: "Transfers the caller".to_owned(),
        input_schema: json!({"type": "object"}),
    }];
    let events: Vec<LlmEvent> = collect(&client(&emulator.base_url(), Some("k")), request)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    let LlmEvent::ToolCall { id, name, arguments_json } = &events[0] else { panic!("{events:?}") };
    assert!(id.starts_with("call_"));
    assert_eq!(name, "transfer_call");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(arguments_json).unwrap(),
        json!({"department": "billing", "reason": "refund request"})
    );
    assert!(matches!(events[1], LlmEvent::Done { stop_reason: StopReason::ToolUse, .. }));
    assert_eq!(emulator.requests()[0].body["tools"][0]["type"], json!("function"));
}

#[tokio::test]
async fn a_429_is_retryable_and_a_401_is_an_auth_error() {
    let emulator = OpenAiEmulator::start_with(OpenAiEmulatorConfig {
        api_key: Some("good".to_owned()),
        ..OpenAiEmulatorConfig::default()
    })
    .await
    .unwrap();
    let bad = client(&emulator.base_url(), Some("bad")).stream(request("Hi")).await.unwrap_err();
    assert_eq!(bad.kind, ProviderErrorKind::Auth);
    emulator.push_fault(Fault::Status(429));
    let limited =
        client(&emulator.base_url(), Some("good")).stream(request("Hi")).await.unwrap_err();
    assert_eq!(limited.kind, ProviderErrorKind::RateLimited);
    assert!(limited.retryable);
    emulator.push_fault(Fault::Status(503));
    let unavailable =
        client(&emulator.base_url(), Some("good")).stream(request("Hi")).await.unwrap_err();
    assert_eq!(unavailable.kind, ProviderErrorKind::Upstream { status: 503 });
    assert!(unavailable.retryable);
}

#[tokio::test]
async fn an_error_chunk_mid_stream_ends_the_stream_with_an_error() {
    let emulator = OpenAiEmulator::start().await.unwrap();
    emulator.push_reply_with_fault(
        Reply::text("one two three"),
        Fault::MidStreamError { after_deltas: 1, error_type: "server_error".to_owned() },
    );
    let events = collect(&client(&emulator.base_url(), Some("k")), request("Hi")).await;
    assert_eq!(events[0].as_ref().unwrap(), &LlmEvent::TextDelta("one".to_owned()));
    let error = events.last().unwrap().as_ref().unwrap_err();
    assert!(error.retryable);
    assert!(!events.iter().any(|event| matches!(event, Ok(LlmEvent::Done { .. }))));
}

#[tokio::test]
async fn a_connection_cut_before_done_is_a_transport_error() {
    let emulator = OpenAiEmulator::start().await.unwrap();
    emulator
        .push_reply_with_fault(Reply::text("one two three"), Fault::Disconnect { after_deltas: 2 });
    let events = collect(&client(&emulator.base_url(), Some("k")), request("Hi")).await;
    assert_eq!(events.last().unwrap().as_ref().unwrap_err().kind, ProviderErrorKind::Transport);
}

#[tokio::test]
async fn a_missing_key_fails_as_not_configured() {
    let emulator = OpenAiEmulator::start().await.unwrap();
    let error = client(&emulator.base_url(), None).stream(request("Hi")).await.unwrap_err();
    assert_eq!(error.kind, ProviderErrorKind::NotConfigured);
    assert!(emulator.requests().is_empty());
}
