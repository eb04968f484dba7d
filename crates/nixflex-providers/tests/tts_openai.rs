//! The OpenAI-compatible speech client against the OpenAI emulator over real loopback HTTP.

use futures::StreamExt;
use nixflex_pipeline::audio::{PcmToMulaw, samples_to_pcm16le};
use nixflex_pipeline::tts::{TtsProvider, TtsRequest, TtsStream};
use nixflex_pipeline::{ProviderError, ProviderErrorKind};
use nixflex_providers::tts::openai::{OpenAiSpeechClient, OpenAiSpeechConfig};
use nixflex_testkit::openai::{Fault, OpenAiEmulator};
use secrecy::SecretString;
use serde_json::json;

fn client(emulator: &OpenAiEmulator, key: Option<&str>) -> OpenAiSpeechClient {
    OpenAiSpeechClient::new(OpenAiSpeechConfig {
        base_url: emulator.base_url(),
        api_key: key.map(SecretString::from),
        ..OpenAiSpeechConfig::default()
    })
    .expect("the client builds")
}

async fn collect(stream: TtsStream) -> Result<Vec<u8>, ProviderError> {
    let mut stream = stream;
    let mut audio = Vec::new();
    while let Some(chunk) = stream.next().await {
        audio.extend_from_slice(&chunk?);
    }
    Ok(audio)
}

#[tokio::test]
async fn pcm_speech_comes_out_as_8_khz_mulaw_of_the_expected_duration() {
    let emulator = OpenAiEmulator::start().await.unwrap();
    let text = "Your appointment is confirmed.";
    let audio = collect(
        client(&emulator, Some("sk")).synthesize(TtsRequest::new(text, "alloy")).await.unwrap(),
    )
    .await
    .unwrap();
    // 30 characters × 60 ms = 1.8 s = 14 400 samples at 8 kHz.
    assert!(audio.len().abs_diff(14_400) < 40, "{} bytes", audio.len());
    let mut converter = PcmToMulaw::new(24_000);
    let mut expected = converter.push(&samples_to_pcm16le(&emulator.speech_samples(text, 1.0)));
    expected.extend(converter.finish());
    assert_eq!(audio, expected);

    let request = &emulator.requests()[0];
    assert_eq!(request.path, "/v1/audio/speech");
    assert_eq!(request.header("authorization"), Some("Bearer sk"));
    assert_eq!(request.body["response_format"], json!("pcm"));
    assert_eq!(request.body["voice"], json!("alloy"));
}

#[tokio::test]
async fn double_speed_halves_the_duration() {
    let emulator = OpenAiEmulator::start().await.unwrap();
    let mut request = TtsRequest::new("abcdefghij", "alloy");
    request.speaking_rate = 2.0;
    let audio =
        collect(client(&emulator, Some("sk")).synthesize(request).await.unwrap()).await.unwrap();
    // 10 characters × 30 ms = 300 ms = 2400 samples.
    assert!(audio.len().abs_diff(2400) < 40, "{}", audio.len());
}

#[tokio::test]
async fn errors_are_typed_and_a_missing_key_is_not_configured() {
    let emulator = OpenAiEmulator::start().await.unwrap();
    emulator.push_fault(Fault::Status(429));
    let limited =
        client(&emulator, Some("sk")).synthesize(TtsRequest::new("Hi", "alloy")).await.unwrap_err();
    assert_eq!(limited.kind, ProviderErrorKind::RateLimited);
    assert!(limited.retryable);
    emulator.push_fault(Fault::Status(401));
    let auth =
        client(&emulator, Some("sk")).synthesize(TtsRequest::new("Hi", "alloy")).await.unwrap_err();
    assert_eq!(auth.kind, ProviderErrorKind::Auth);
    let missing =
        client(&emulator, None).synthesize(TtsRequest::new("Hi", "alloy")).await.unwrap_err();
    assert_eq!(missing.kind, ProviderErrorKind::NotConfigured);
}

#[tokio::test]
async fn a_cut_connection_is_a_transport_error() {
    let emulator = OpenAiEmulator::start().await.unwrap();
    emulator.push_fault(Fault::Disconnect { after_deltas: 1 });
    let stream = client(&emulator, Some("sk"))
        .synthesize(TtsRequest::new("A long enough sentence.", "alloy"))
        .await
        .unwrap();
    assert_eq!(collect(stream).await.unwrap_err().kind, ProviderErrorKind::Transport);
}
