//! The ElevenLabs emulator driven by the official `elevenlabs` Python SDK.
//!
//! Fails (never skips) when python3 or the package is missing.

use std::time::Duration;

use nixflex_testkit::anthropic::python::{require_module, run_script};
use nixflex_testkit::elevenlabs::{ElevenLabsEmulator, ElevenLabsEmulatorConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_elevenlabs_sdk_streams_pcm_and_ulaw_and_sees_its_errors() {
    require_module("elevenlabs", "elevenlabs==2.78.0")
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let emulator = ElevenLabsEmulator::start_with(ElevenLabsEmulatorConfig {
        api_key: Some("xi-test".to_owned()),
        voices: Some(vec!["voice-1".to_owned()]),
        ..ElevenLabsEmulatorConfig::default()
    })
    .await
    .unwrap();
    let script = nixflex_testkit::package_file(
        env!("CARGO_MANIFEST_DIR"),
        "tests/py/elevenlabs_official_client.py",
    );
    let output = run_script(
        &script,
        &[("NIXFLEX_ELEVENLABS_URL", emulator.base_url())],
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    assert!(output.stdout.contains("OK elevenlabs"), "{output:?}");

    let requests = emulator.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[0].path, "/v1/text-to-speech/voice-1/stream?output_format=pcm_16000");
    assert_eq!(requests[0].header("xi-api-key"), Some("xi-test"));
    assert_eq!(requests[0].body["model_id"], "eleven_flash_v2_5");
    assert_eq!(requests[1].path, "/v1/text-to-speech/voice-1?output_format=ulaw_8000");
}
