//! The Anthropic emulator's raw wire format compared with the documented example stream.

use nixflex_testkit::anthropic::{AnthropicEmulator, Reply};
use serde_json::{Value, json};

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

#[tokio::test]
async fn the_stream_follows_the_documented_event_sequence_and_framing() {
    let emulator = AnthropicEmulator::start().await.unwrap();
    emulator.push_reply(Reply::text("Hello!"));
    let response = http()
        .post(format!("{}/v1/messages", emulator.base_url()))
        .header("x-api-key", "sk-ant")
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-opus-4-6", "max_tokens": 1024, "messages": [{"role": "user", "content": "Hello"}], "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let body = response.text().await.unwrap();
    let events: Vec<(String, Value)> = body
        .split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut lines = block.lines();
            let event = lines.next().unwrap().strip_prefix("event: ").unwrap().to_owned();
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            (event, serde_json::from_str(data).unwrap())
        })
        .collect();
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    // The docs' "Basic streaming request" example, event for event.
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], json!(name), "the data type repeats the event name");
    }
    assert_eq!(events[0].1["message"]["content"], json!([]));
    assert_eq!(events[0].1["message"]["stop_reason"], Value::Null);
    assert_eq!(events[1].1["content_block"], json!({"type": "text", "text": ""}));
    assert_eq!(events[3].1["delta"], json!({"type": "text_delta", "text": "Hello!"}));
    assert_eq!(events[5].1["delta"], json!({"stop_reason": "end_turn", "stop_sequence": null}));
}

#[tokio::test]
async fn requests_without_a_key_or_required_fields_get_anthropic_errors() {
    let emulator = AnthropicEmulator::start().await.unwrap();
    let url = format!("{}/v1/messages", emulator.base_url());
    let unauthenticated = http().post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let error: Value = unauthenticated.json().await.unwrap();
    assert_eq!(error["type"], json!("error"));
    assert_eq!(error["error"]["type"], json!("authentication_error"));
    let invalid = http()
        .post(&url)
        .header("x-api-key", "k")
        .json(&json!({"model": "m", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
    assert_eq!(
        invalid.json::<Value>().await.unwrap()["error"]["type"],
        json!("invalid_request_error")
    );
}
