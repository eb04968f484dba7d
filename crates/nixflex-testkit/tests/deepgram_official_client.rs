//! The Deepgram live emulator driven by the official `deepgram-sdk` Python package.
//!
//! Fails (never skips) when python3 or the package is missing.

use std::time::Duration;

use nixflex_testkit::anthropic::python::{require_module, run_script};
use nixflex_testkit::deepgram::DeepgramEmulator;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_deepgram_sdk_streams_audio_and_receives_a_transcript_from_the_emulator() {
    require_module("deepgram", "deepgram-sdk==7.17.0")
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let emulator = DeepgramEmulator::start().await.unwrap();
    emulator.push_utterance("I need to reschedule my appointment.");
    emulator.push_utterance("Thanks, goodbye.");

    let script = nixflex_testkit::package_file(
        env!("CARGO_MANIFEST_DIR"),
        "tests/py/deepgram_official_client.py",
    );
    let env = [
        ("NIXFLEX_DEEPGRAM_WS_URL", emulator.ws_url()),
        ("NIXFLEX_DEEPGRAM_HTTP_URL", emulator.base_url()),
    ];
    let output = run_script(&script, &env, Duration::from_secs(60))
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(output.stdout.contains("OK deepgram"), "{output:?}");

    let session = &emulator.sessions()[0];
    assert!(
        session
            .headers
            .iter()
            .any(|(name, value)| name == "authorization" && value == "Token dg-test-key")
    );
    assert_eq!(session.param("model"), Some("nova-3"));
    assert!(session.text_messages.iter().any(|m| m.contains("KeepAlive")));
    assert!(session.text_messages.iter().any(|m| m.contains("Finalize")));
    assert!(session.text_messages.iter().any(|m| m.contains("CloseStream")));
}
