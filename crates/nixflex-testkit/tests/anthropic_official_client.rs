//! The Anthropic emulator driven by the official `anthropic` Python SDK.
//!
//! Fails (never skips) when python3 or the package is missing.

use std::time::Duration;

use nixflex_testkit::anthropic::python::{require_module, run_script};
use nixflex_testkit::anthropic::{AnthropicEmulator, Fault, Reply, ReplyBlock};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_anthropic_sdk_streams_text_tool_use_and_errors_from_the_emulator() {
    require_module("anthropic", "anthropic==2.14.0")
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let emulator = AnthropicEmulator::start().await.unwrap();
    emulator.push_reply(Reply::text("Hello from the emulator!"));
    emulator.push_reply(Reply::text("Streaming helper works."));
    emulator.push_reply(Reply::tool_call(
        "get_weather",
        json!({"location": "San Francisco, CA", "unit": "celsius"}),
    ));
    emulator.push_reply(Reply::text("Not streamed."));
    emulator.push_fault(Fault::Status(429));
    emulator.push_reply_with_fault(
        Reply::text("This reply is cut by the error."),
        Fault::MidStreamError { after_deltas: 1, error_type: "overloaded_error".to_owned() },
    );

    emulator.push_reply(Reply {
        blocks: vec![
            ReplyBlock::Text("Let me look.".to_owned()),
            ReplyBlock::ToolUse {
                name: "get_weather".to_owned(),
                input: json!({"location": "Paris"}),
            },
            ReplyBlock::ToolUse {
                name: "get_weather".to_owned(),
                input: json!({"location": "Rome"}),
            },
        ],
        stop_reason: None,
    });
    emulator.push_reply(Reply::text("Sunny in both."));

    let script = nixflex_testkit::package_file(
        env!("CARGO_MANIFEST_DIR"),
        "tests/py/anthropic_official_client.py",
    );
    let output = run_script(
        &script,
        &[("NIXFLEX_ANTHROPIC_URL", emulator.base_url())],
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    assert!(output.stdout.contains("OK anthropic"), "{output:?}");

    // The SDK authenticates with a Bearer token and its own anthropic-version (docs/protocols.md#anthropic-messages-streaming).
    let requests = emulator.requests();
    assert_eq!(requests.len(), 9);
    let first = &requests[0];
    assert!(
        first.header("x-api-key").is_some()
            || first.header("authorization") == Some("Bearer sk-ant-test")
    );
    assert!(first.header("anthropic-version").is_some());
}
