#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Our ElevenLabs and Cartesia clients against their emulators: the audio comes out as 8 kHz
//! μ-law of the right length, and failures map to `ProviderError` kinds.

use std::time::Duration;

use futures::StreamExt;
use nixflex_pipeline::audio::mulaw;
use nixflex_pipeline::audio::tone::tone_power;
use nixflex_pipeline::tts::{TtsProvider, TtsRequest};
use nixflex_pipeline::{ProviderError, ProviderErrorKind};
use nixflex_providers::tts::cartesia::{CartesiaClient, CartesiaConfig};
use nixflex_providers::tts::elevenlabs::{ElevenLabsClient, ElevenLabsConfig};
use nixflex_testkit::cartesia::{CartesiaEmulator, CartesiaEmulatorConfig};
use nixflex_testkit::elevenlabs::{ElevenLabsEmulator, ElevenLabsEmulatorConfig, Fault, Timing};
use secrecy::SecretString;

async fn speak(
    client: &dyn TtsProvider,
    text: &str,
    voice: &str,
) -> Result<Vec<u8>, ProviderError> {
    let mut stream = client.synthesize(TtsRequest::new(text, voice)).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

fn elevenlabs(emulator: &ElevenLabsEmulator, key: &str) -> ElevenLabsClient {
    ElevenLabsClient::new(ElevenLabsConfig {
        base_url: emulator.base_url(),
        api_key: Some(SecretString::from(key)),
        idle_timeout: Duration::from_millis(500),
        ..ElevenLabsConfig::default()
    })
    .unwrap()
}

fn cartesia(emulator: &CartesiaEmulator, key: &str) -> CartesiaClient {
    CartesiaClient::new(CartesiaConfig {
        base_url: emulator.base_url(),
        api_key: Some(SecretString::from(key)),
        idle_timeout: Duration::from_millis(500),
        ..CartesiaConfig::default()
    })
    .unwrap()
}

/// 8 kHz μ-law of `text`: 60 ms (480 bytes) per character, carrying the tone of its first
/// character.
fn assert_speech(audio: &[u8], text: &str) {
    let expected = text.chars().count() * 480;
    assert!(
        audio.len().abs_diff(expected) < 20,
        "{} bytes, expected about {expected}",
        audio.len()
    );
    let first = nixflex_pipeline::audio::tone::char_frequency(text.chars().next().unwrap());
    let power = tone_power(&mulaw::decode_all(&audio[40..440]), 8000, first);
    assert!(power > 1.0e5, "the first character's tone is missing ({power})");
}

#[tokio::test]
async fn elevenlabs_speech_comes_out_as_8_khz_mulaw() {
    let emulator = ElevenLabsEmulator::start().await.unwrap();
    let audio = speak(&elevenlabs(&emulator, "xi-test"), "Hello there", "voice-1").await.unwrap();
    assert_speech(&audio, "Hello there");
    let request = &emulator.requests()[0];
    assert_eq!(request.path, "/v1/text-to-speech/voice-1/stream?output_format=pcm_8000");
    assert_eq!(request.header("xi-api-key"), Some("xi-test"));
}

#[tokio::test]
async fn cartesia_speech_comes_out_as_8_khz_mulaw() {
    let emulator = CartesiaEmulator::start().await.unwrap();
    let audio = speak(&cartesia(&emulator, "sk_car_test"), "Hello there", "voice-1").await.unwrap();
    assert_speech(&audio, "Hello there");
    let request = &emulator.requests()[0];
    assert_eq!(request.header("authorization"), Some("Bearer sk_car_test"));
    assert_eq!(
        request.header("cartesia-version"),
        Some(nixflex_providers::tts::cartesia::API_VERSION)
    );
}

#[tokio::test]
async fn elevenlabs_failures_map_to_provider_error_kinds() {
    let emulator = ElevenLabsEmulator::start_with(ElevenLabsEmulatorConfig {
        api_key: Some("right".to_owned()),
        voices: Some(vec!["voice-1".to_owned()]),
        ..ElevenLabsEmulatorConfig::default()
    })
    .await
    .unwrap();
    let wrong = speak(&elevenlabs(&emulator, "wrong"), "Hi", "voice-1").await.unwrap_err();
    assert_eq!(wrong.kind, ProviderErrorKind::Auth);
    assert!(!wrong.message.contains("wrong"), "the key leaked into {}", wrong.message);
    let client = elevenlabs(&emulator, "right");
    let unknown = speak(&client, "Hi", "nobody").await.unwrap_err();
    assert_eq!(unknown.kind, ProviderErrorKind::Upstream { status: 404 });
    emulator.push_fault(Fault::Status(429));
    assert_eq!(
        speak(&client, "Hi", "voice-1").await.unwrap_err().kind,
        ProviderErrorKind::RateLimited
    );
    emulator.push_fault(Fault::Status(503));
    let unavailable = speak(&client, "Hi", "voice-1").await.unwrap_err();
    assert!(unavailable.retryable);
    emulator.push_fault(Fault::Disconnect { after_deltas: 1 });
    let cut = speak(&client, "Hello there", "voice-1").await.unwrap_err();
    assert_eq!(cut.kind, ProviderErrorKind::Transport);
    emulator
        .set_timing(Timing { first_byte: Duration::ZERO, chunk_interval: Duration::from_secs(2) });
    let stalled = speak(&client, "Hello there", "voice-1").await.unwrap_err();
    assert_eq!(stalled.kind, ProviderErrorKind::Timeout);
    let bad_voice = speak(&client, "Hi", "../admin").await.unwrap_err();
    assert_eq!(bad_voice.kind, ProviderErrorKind::NotConfigured);
}

#[tokio::test]
async fn cartesia_failures_map_to_provider_error_kinds() {
    let emulator = CartesiaEmulator::start_with(CartesiaEmulatorConfig {
        api_key: Some("right".to_owned()),
        voices: Some(vec!["voice-1".to_owned()]),
        ..CartesiaEmulatorConfig::default()
    })
    .await
    .unwrap();
    let wrong = speak(&cartesia(&emulator, "wrong"), "Hi", "voice-1").await.unwrap_err();
    assert_eq!(wrong.kind, ProviderErrorKind::Auth);
    let client = cartesia(&emulator, "right");
    let unknown = speak(&client, "Hi", "nobody").await.unwrap_err();
    assert_eq!(unknown.kind, ProviderErrorKind::Upstream { status: 404 });
    emulator.push_fault(nixflex_testkit::cartesia::Fault::Status(500));
    let failed = speak(&client, "Hi", "voice-1").await.unwrap_err();
    assert_eq!(failed.kind, ProviderErrorKind::Upstream { status: 500 });
    assert!(failed.retryable);
    emulator.push_fault(nixflex_testkit::cartesia::Fault::Disconnect { after_deltas: 1 });
    assert_eq!(
        speak(&client, "Hello there", "voice-1").await.unwrap_err().kind,
        ProviderErrorKind::Transport
    );
    // Nothing listens on the port once the emulator is gone.
    let base = emulator.base_url();
    drop(emulator);
    let gone = CartesiaClient::new(CartesiaConfig {
        base_url: base,
        api_key: Some(SecretString::from("right")),
        ..CartesiaConfig::default()
    })
    .unwrap();
    assert_eq!(speak(&gone, "Hi", "voice-1").await.unwrap_err().kind, ProviderErrorKind::Transport);
}
