#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The OpenAI-compatible transcription recogniser against the OpenAI emulator over loopback
//! HTTP: utterances cut by `Finalize` and by its own endpointing, silence never sent, results in
//! spoken order, a single failure retried, a second one ending the session with an error.

use std::time::Duration;

use bytes::Bytes;
use nixflex_pipeline::ProviderErrorKind;
use nixflex_pipeline::stt::{SttEvent, SttEvents, SttInput, SttOptions, SttProvider};
use nixflex_providers::stt::openai::{OpenAiTranscriber, OpenAiTranscriptionConfig};
use nixflex_testkit::deepgram::{silence_audio, speech_audio};
use nixflex_testkit::openai::{Fault, OpenAiEmulator};
use secrecy::SecretString;

const WAIT: Duration = Duration::from_secs(5);

fn client(emulator: &OpenAiEmulator, key: Option<&str>) -> OpenAiTranscriber {
    OpenAiTranscriber::new(OpenAiTranscriptionConfig {
        base_url: emulator.base_url(),
        api_key: key.map(SecretString::from),
        ..OpenAiTranscriptionConfig::default()
    })
    .unwrap()
}

fn push(input: &SttInput, audio: &Bytes) {
    for frame in audio.chunks(160) {
        input.push_audio(Bytes::copy_from_slice(frame)).expect("the session is open");
    }
}

async fn next_event(events: &mut SttEvents) -> SttEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event in time")
        .expect("the stream is open")
}

fn final_text(event: &SttEvent) -> &str {
    match event {
        SttEvent::Final { text, .. } => text,
        other => panic!("expected a final result, got {other:?}"),
    }
}

fn no_endpointing() -> SttOptions {
    SttOptions { endpointing: None, ..SttOptions::default() }
}

#[tokio::test]
async fn finalize_sends_the_utterance_and_the_transcript_comes_back_as_a_final() {
    let emulator = OpenAiEmulator::start().await.unwrap();
    emulator.push_transcript("Do you deliver?");
    let (input, mut events) =
        client(&emulator, Some("sk-test")).open(no_endpointing()).await.unwrap();
    push(&input, &silence_audio(Duration::from_secs(2)));
    push(&input, &speech_audio(Duration::from_millis(800)));
    push(&input, &silence_audio(Duration::from_millis(200)));
    input.finalize().await.unwrap();
    let event = next_event(&mut events).await;
    assert_eq!(final_text(&event), "Do you deliver?");
    assert!(matches!(
        event,
        SttEvent::Final { speech_final: true, from_finalize: true, confidence, .. } if confidence == 1.0
    ));
    let requests = emulator.transcription_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].model, "whisper-1");
    assert_eq!(requests[0].language.as_deref(), Some("en"));
    // 300 ms pre-roll + 800 ms speech + 200 ms silence, 16-bit, plus the WAV header.
    assert_eq!(requests[0].file_bytes, 44 + 2 * 8 * 1300);
    // A Finalize with nothing said answers at once, without a request.
    input.finalize().await.unwrap();
    assert_eq!(final_text(&next_event(&mut events).await), "");
    assert_eq!(emulator.transcription_requests().len(), 1);
    input.close().await.unwrap();
    assert_eq!(next_event(&mut events).await, SttEvent::Closed);
}

#[tokio::test]
async fn endpointing_cuts_utterances_and_results_keep_the_spoken_order() {
    let emulator = OpenAiEmulator::start().await.unwrap();
    emulator.push_transcript("First.");
    emulator.push_transcript("Second.");
    let options =
        SttOptions { endpointing: Some(Duration::from_millis(300)), ..SttOptions::default() };
    let (input, mut events) = client(&emulator, Some("sk-test")).open(options).await.unwrap();
    for _ in 0..2 {
        push(&input, &speech_audio(Duration::from_millis(500)));
        push(&input, &silence_audio(Duration::from_millis(400)));
    }
    let first = next_event(&mut events).await;
    let second = next_event(&mut events).await;
    assert_eq!((final_text(&first), final_text(&second)), ("First.", "Second."));
    assert!(matches!(first, SttEvent::Final { from_finalize: false, .. }));
}

#[tokio::test]
async fn one_failure_is_retried_and_a_second_ends_the_session_with_an_error() {
    let emulator = OpenAiEmulator::start().await.unwrap();
    emulator.push_transcription_fault(Fault::Status(503));
    emulator.push_transcript("Retried.");
    let (input, mut events) =
        client(&emulator, Some("sk-test")).open(no_endpointing()).await.unwrap();
    push(&input, &speech_audio(Duration::from_millis(500)));
    input.finalize().await.unwrap();
    assert_eq!(final_text(&next_event(&mut events).await), "Retried.");
    assert_eq!(emulator.transcription_requests().len(), 2);

    emulator.push_transcription_fault(Fault::Status(500));
    emulator.push_transcription_fault(Fault::Status(429));
    push(&input, &speech_audio(Duration::from_millis(500)));
    input.finalize().await.unwrap();
    match next_event(&mut events).await {
        SttEvent::Error(error) => assert_eq!(error.kind, ProviderErrorKind::RateLimited),
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(next_event(&mut events).await, SttEvent::Closed);
}

#[tokio::test]
async fn a_missing_key_fails_at_open_and_a_wrong_one_at_the_first_utterance() {
    let emulator = OpenAiEmulator::start().await.unwrap();
    let error = client(&emulator, None).open(SttOptions::default()).await.unwrap_err();
    assert_eq!(error.kind, ProviderErrorKind::NotConfigured);

    let emulator = nixflex_testkit::openai::OpenAiEmulator::start_with(
        nixflex_testkit::openai::OpenAiEmulatorConfig {
            api_key: Some("sk-right".to_owned()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (input, mut events) =
        client(&emulator, Some("sk-wrong")).open(no_endpointing()).await.unwrap();
    push(&input, &speech_audio(Duration::from_millis(500)));
    input.finalize().await.unwrap();
    match next_event(&mut events).await {
        SttEvent::Error(error) => assert_eq!(error.kind, ProviderErrorKind::Auth),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stalled_endpoint_times_out() {
    let emulator = OpenAiEmulator::start().await.unwrap();
    emulator.push_transcription_fault(Fault::Stall { after_deltas: 0 });
    let transcriber = OpenAiTranscriber::new(OpenAiTranscriptionConfig {
        base_url: emulator.base_url(),
        api_key: Some(SecretString::from("sk-test")),
        request_timeout: Duration::from_millis(300),
        ..OpenAiTranscriptionConfig::default()
    })
    .unwrap();
    let (input, mut events) = transcriber.open(no_endpointing()).await.unwrap();
    push(&input, &speech_audio(Duration::from_millis(500)));
    input.finalize().await.unwrap();
    match next_event(&mut events).await {
        SttEvent::Error(error) => assert_eq!(error.kind, ProviderErrorKind::Timeout),
        other => panic!("expected an error, got {other:?}"),
    }
}
