//! The Inworld TTS client against the Inworld emulator over real loopback HTTP.

use std::time::Duration;

use futures::StreamExt;
use nixflex_pipeline::audio::{PcmToMulaw, mulaw, samples_to_pcm16le, tone};
use nixflex_pipeline::tts::{TtsProvider, TtsRequest, TtsStream};
use nixflex_pipeline::{ProviderError, ProviderErrorKind};
use nixflex_providers::tts::inworld::{InworldClient, InworldConfig, InworldEncoding};
use nixflex_testkit::inworld::{Fault, InworldEmulator, InworldEmulatorConfig, Timing};
use secrecy::SecretString;
use serde_json::json;

fn client(emulator: &InworldEmulator, key: Option<&str>) -> InworldClient {
    InworldClient::new(InworldConfig {
        base_url: emulator.base_url(),
        api_key: key.map(SecretString::from),
        ..InworldConfig::default()
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

/// What the shared adapter makes of the emulator's audio when converted in one piece.
fn expected_mulaw(emulator: &InworldEmulator, text: &str, sample_rate: u32) -> Vec<u8> {
    let pcm = samples_to_pcm16le(&emulator.speech_samples(text, sample_rate, 1.0));
    let mut converter = PcmToMulaw::new(sample_rate);
    let mut out = converter.push(&pcm);
    out.extend(converter.finish());
    out
}

#[tokio::test]
async fn linear16_chunks_come_out_as_8_khz_mulaw_without_their_wav_headers() {
    let emulator = InworldEmulator::start().await.unwrap();
    let text = "Hello, thanks for calling.";
    let stream = client(&emulator, Some("aW53b3JsZA=="))
        .synthesize(TtsRequest::new(text, "Ashley"))
        .await
        .unwrap();
    let audio = collect(stream).await.unwrap();
    // 26 characters × 60 ms = 1.56 s = 12 480 samples at 8 kHz (plus the filter's tail).
    assert!(audio.len().abs_diff(12_480) < 40, "{} bytes", audio.len());
    // Byte for byte what converting the whole tone gives: the per-chunk headers were stripped
    // and the chunk boundaries left no trace.
    assert_eq!(audio, expected_mulaw(&emulator, text, 24_000));
    let decoded = mulaw::decode_all(&audio);
    assert!(tone::rms(&decoded[800..11_000]) > 3000.0);

    let request = &emulator.requests()[0];
    assert_eq!(request.path, "/tts/v1/voice:stream");
    assert_eq!(request.header("authorization"), Some("Basic aW53b3JsZA=="));
    assert_eq!(
        request.body,
        json!({
            "text": text,
            "voiceId": "Ashley",
            "modelId": "inworld-tts-1.5-max",
            "audioConfig": {"audioEncoding": "LINEAR16", "sampleRateHertz": 24000, "speakingRate": 1.0},
        })
    );
}

#[tokio::test]
async fn headerless_pcm_at_16_khz_is_converted_the_same_way() {
    let emulator = InworldEmulator::start().await.unwrap();
    let inworld = InworldClient::new(InworldConfig {
        base_url: emulator.base_url(),
        api_key: Some(SecretString::from("k")),
        encoding: InworldEncoding::Pcm,
        sample_rate_hz: 16_000,
        ..InworldConfig::default()
    })
    .unwrap();
    let text = "One moment please.";
    let audio =
        collect(inworld.synthesize(TtsRequest::new(text, "Ashley")).await.unwrap()).await.unwrap();
    assert_eq!(audio, expected_mulaw(&emulator, text, 16_000));
    assert_eq!(emulator.requests()[0].body["audioConfig"]["audioEncoding"], json!("PCM"));
}

#[tokio::test]
async fn the_time_to_first_byte_is_reported_and_chunks_are_paced() {
    let emulator = InworldEmulator::start().await.unwrap();
    emulator.set_timing(Timing {
        first_byte: Duration::from_millis(150),
        chunk_interval: Duration::from_millis(100),
    });
    let started = std::time::Instant::now();
    // 10 characters = 600 ms of audio = 6 chunks of 100 ms, 100 ms apart.
    let mut stream = client(&emulator, Some("k"))
        .synthesize(TtsRequest::new("abcdefghij", "Ashley"))
        .await
        .unwrap();
    let mut n_chunks = 0;
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
        n_chunks += 1;
    }
    let ttfb = stream.ttfb().expect("a ttfb");
    assert!(ttfb >= Duration::from_millis(150), "{ttfb:?}");
    assert!(n_chunks >= 6);
    assert!(started.elapsed() >= Duration::from_millis(650), "{:?}", started.elapsed());
}

#[tokio::test]
async fn auth_and_rate_limit_errors_are_typed() {
    let emulator = InworldEmulator::start_with(InworldEmulatorConfig {
        api_key: Some("good".to_owned()),
        ..InworldEmulatorConfig::default()
    })
    .await
    .unwrap();
    let request = || TtsRequest::new("Hi", "Ashley");
    let auth = client(&emulator, Some("bad")).synthesize(request()).await.unwrap_err();
    assert_eq!(auth.kind, ProviderErrorKind::Auth);
    emulator.push_fault(Fault::Status(429));
    let limited = client(&emulator, Some("good")).synthesize(request()).await.unwrap_err();
    assert_eq!(limited.kind, ProviderErrorKind::RateLimited);
    assert!(limited.retryable);
    let missing = client(&emulator, None).synthesize(request()).await.unwrap_err();
    assert_eq!(missing.kind, ProviderErrorKind::NotConfigured);
}

#[tokio::test]
async fn an_error_line_mid_stream_ends_the_audio_with_an_error() {
    let emulator = InworldEmulator::start().await.unwrap();
    emulator.push_fault(Fault::MidStreamError { after_deltas: 2, error_type: String::new() });
    let mut stream = client(&emulator, Some("k"))
        .synthesize(TtsRequest::new("A longer sentence here.", "Ashley"))
        .await
        .unwrap();
    let mut results = Vec::new();
    while let Some(chunk) = stream.next().await {
        results.push(chunk);
    }
    assert!(results[0].is_ok());
    let error = results.last().unwrap().as_ref().unwrap_err();
    assert_eq!(error.kind, ProviderErrorKind::Upstream { status: 500 });
    assert!(error.retryable);
}

#[tokio::test]
async fn a_cut_connection_is_a_transport_error() {
    let emulator = InworldEmulator::start().await.unwrap();
    emulator.push_fault(Fault::Disconnect { after_deltas: 1 });
    let stream = client(&emulator, Some("k"))
        .synthesize(TtsRequest::new("A longer sentence here.", "Ashley"))
        .await
        .unwrap();
    assert_eq!(collect(stream).await.unwrap_err().kind, ProviderErrorKind::Transport);
}
