//! The Inworld TTS emulator checked with raw HTTP requests shaped like Inworld's documented
//! examples (there is no official Inworld Python SDK to rely on), and with our own client.

use base64::Engine;
use futures::StreamExt;
use nixflex_pipeline::audio::wav;
use nixflex_pipeline::tts::{TtsProvider, TtsRequest};
use nixflex_providers::tts::inworld::{InworldClient, InworldConfig};
use nixflex_testkit::inworld::InworldEmulator;
use serde_json::{Value, json};

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn documented_body(text: &str, encoding: &str) -> Value {
    // The request body of docs/protocols.md#inworld-tts (Inworld's synthesize-speech example).
    json!({
        "text": text,
        "voiceId": "Ashley",
        "modelId": "inworld-tts-1.5-max",
        "audioConfig": {"audioEncoding": encoding, "sampleRateHertz": 24000, "speakingRate": 1.0},
        "temperature": 0.8,
        "timestampType": "WORD",
    })
}

fn decode(content: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(content.as_str().expect("audioContent is a string"))
        .expect("audioContent is base64")
}

#[tokio::test]
async fn the_streaming_endpoint_answers_ndjson_lines_of_wav_chunks_with_word_timestamps() {
    let emulator = InworldEmulator::start().await.unwrap();
    let text = "Hello, how are you?";
    let response = http()
        .post(format!("{}/tts/v1/voice:stream", emulator.base_url()))
        .header("Authorization", "Basic dGVzdDp0ZXN0")
        .json(&documented_body(text, "LINEAR16"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    let lines: Vec<Value> =
        body.lines().filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.len() > 5, "{} lines", lines.len());
    let mut pcm_bytes = 0;
    for line in &lines {
        let chunk = decode(&line["result"]["audioContent"]);
        // Every LINEAR16 chunk carries its own WAV header, as Inworld's stream does.
        let header = wav::parse_header(&chunk).unwrap();
        assert_eq!(header.data_offset, 44);
        assert!(header.format.is_pcm16_mono());
        assert_eq!(header.format.sample_rate, 24_000);
        assert_eq!(header.data_len, Some(u32::try_from(chunk.len() - 44).unwrap()));
        pcm_bytes += chunk.len() - 44;
    }
    // 19 characters × 60 ms at 24 kHz, 2 bytes per sample.
    assert_eq!(pcm_bytes, 19 * 60 * 24 * 2);
    let alignment = &lines[0]["result"]["timestampInfo"]["wordAlignment"];
    assert_eq!(alignment["words"], json!(["Hello,", "how", "are", "you?"]));
    assert_eq!(alignment["wordEndTimeSeconds"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn the_non_streaming_endpoint_answers_one_wav_with_a_complete_header() {
    let emulator = InworldEmulator::start().await.unwrap();
    let response = http()
        .post(format!("{}/tts/v1/voice", emulator.base_url()))
        .header("Authorization", "Basic dGVzdDp0ZXN0")
        .json(&documented_body("Hi there", "LINEAR16"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    let audio = decode(&reply["audioContent"]);
    let header = wav::parse_header(&audio).unwrap();
    assert_eq!(header.data_len, Some(8 * 60 * 24 * 2));
    assert_eq!(audio.len(), 44 + 8 * 60 * 24 * 2);
    assert!(reply["timestampInfo"]["wordAlignment"]["words"].is_array());
}

#[tokio::test]
async fn pcm_chunks_have_no_header() {
    let emulator = InworldEmulator::start().await.unwrap();
    let body = http()
        .post(format!("{}/tts/v1/voice:stream", emulator.base_url()))
        .header("Authorization", "Basic a2V5")
        .json(&documented_body("abc", "PCM"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let first: Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    let chunk = decode(&first["result"]["audioContent"]);
    assert!(!wav::starts_with_header(&chunk));
}

#[tokio::test]
async fn missing_credentials_and_unsupported_encodings_get_google_style_errors() {
    let emulator = InworldEmulator::start().await.unwrap();
    let url = format!("{}/tts/v1/voice:stream", emulator.base_url());
    let unauthenticated =
        http().post(&url).json(&documented_body("Hi", "LINEAR16")).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let error: Value = unauthenticated.json().await.unwrap();
    assert_eq!(error["code"], json!(16));
    let mp3 = http()
        .post(&url)
        .header("Authorization", "Basic a2V5")
        .json(&documented_body("Hi", "MP3"))
        .send()
        .await
        .unwrap();
    assert_eq!(mp3.status(), 400);
    assert_eq!(mp3.json::<Value>().await.unwrap()["code"], json!(3));
}

#[tokio::test]
async fn our_own_client_receives_the_whole_utterance_as_8_khz_mulaw() {
    let emulator = InworldEmulator::start().await.unwrap();
    let client = InworldClient::new(InworldConfig {
        base_url: emulator.base_url(),
        api_key: Some("a2V5".to_owned().into()),
        ..InworldConfig::default()
    })
    .unwrap();
    let mut stream = client.synthesize(TtsRequest::new("Goodbye!", "Ashley")).await.unwrap();
    let mut n_bytes = 0;
    while let Some(chunk) = stream.next().await {
        n_bytes += chunk.unwrap().len();
    }
    // 8 characters × 60 ms = 480 ms = 3840 samples at 8 kHz.
    assert!(n_bytes.abs_diff(3840) < 40, "{n_bytes}");
    assert_eq!(emulator.requests()[0].header("authorization"), Some("Basic a2V5"));
}
