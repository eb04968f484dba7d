//! The OpenAI-compatible emulator driven by the official `openai` Python SDK.
//!
//! Fails (never skips) when python3 or the package is missing.

use std::time::Duration;

use nixflex_testkit::anthropic::python::{require_module, run_script};
use nixflex_testkit::openai::{Fault, OpenAiEmulator, Reply, ReplyBlock};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_sdk_streams_chat_tool_calls_and_speech_from_the_emulator() {
    require_module("openai", "openai==3.57.0").await.unwrap_or_else(|error| panic!("{error}"));
    let emulator = OpenAiEmulator::start().await.unwrap();
    emulator.push_reply(Reply::text("Hello from the emulator!"));
    emulator.push_reply(Reply::tool_call("lookup_order", json!({"order_id": "A-1001"})));
    emulator.push_reply(Reply::text("Not streamed."));
    emulator.push_fault(Fault::Status(429));
    // Requests 5 and 6 (speech) take their script entries too, and ignore the replies.
    emulator.push_reply(Reply::text(""));
    emulator.push_reply(Reply::text(""));
    emulator.push_reply(Reply {
        blocks: vec![
            ReplyBlock::ToolUse { name: "lookup_order".into(), input: json!({"order_id": "A-1"}) },
            ReplyBlock::ToolUse { name: "lookup_order".into(), input: json!({"order_id": "A-2"}) },
        ],
        stop_reason: None,
    });
    emulator.push_reply(Reply::text("Both orders shipped."));
    emulator.push_transcript("Do you deliver?");
    emulator.push_transcript("Second one.");

    let script = nixflex_testkit::package_file(
        env!("CARGO_MANIFEST_DIR"),
        "tests/py/openai_official_client.py",
    );
    let output = run_script(
        &script,
        &[("NIXFLEX_OPENAI_URL", emulator.base_url())],
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    assert!(output.stdout.contains("OK openai"), "{output:?}");

    let requests = emulator.requests();
    assert_eq!(requests.len(), 9);
    assert_eq!(requests[0].header("authorization"), Some("Bearer sk-test"));
    assert_eq!(requests[4].path, "/v1/audio/speech");

    let transcriptions = emulator.transcription_requests();
    assert_eq!(transcriptions.len(), 4, "{transcriptions:?}");
    assert_eq!(transcriptions[0].model, "whisper-1");
    assert_eq!(transcriptions[0].language.as_deref(), Some("en"));
    assert_eq!(transcriptions[0].prompt.as_deref(), Some("Vocabulary: Nixflex."));
    assert_eq!(transcriptions[0].answered.as_deref(), Some("Do you deliver?"));
    assert_eq!(transcriptions[1].answered.as_deref(), Some(""));
    assert_eq!(transcriptions[3].answered, None, "refused");
}
