//! The Cartesia emulator driven by the official `cartesia` Python SDK.
//!
//! Fails (never skips) when python3 or the package is missing.

use std::time::Duration;

use nixflex_testkit::anthropic::python::{require_module, run_script};
use nixflex_testkit::cartesia::{CartesiaEmulator, CartesiaEmulatorConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_cartesia_sdk_streams_raw_and_wav_audio_and_sees_its_errors() {
    require_module("cartesia", "cartesia==4.2.0").await.unwrap_or_else(|error| panic!("{error}"));
    let emulator = CartesiaEmulator::start_with(CartesiaEmulatorConfig {
        api_key: Some("sk_car_test".to_owned()),
        voices: Some(vec!["voice-1".to_owned()]),
        ..CartesiaEmulatorConfig::default()
    })
    .await
    .unwrap();
    let script = nixflex_testkit::package_file(
        env!("CARGO_MANIFEST_DIR"),
        "tests/py/cartesia_official_client.py",
    );
    let output = run_script(
        &script,
        &[("NIXFLEX_CARTESIA_URL", emulator.base_url())],
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    assert!(output.stdout.contains("OK cartesia"), "{output:?}");

    let requests = emulator.requests();
    assert_eq!(requests.len(), 5);
    assert_eq!(requests[0].path, "/tts/bytes");
    assert_eq!(requests[0].header("authorization"), Some("Bearer sk_car_test"));
    assert!(requests[0].header("cartesia-version").is_some());
    assert_eq!(requests[0].body["voice"]["id"], "voice-1");
}
