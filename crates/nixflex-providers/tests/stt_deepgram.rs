//! The Deepgram client against the Deepgram emulator over a real loopback WebSocket.
//!
//! The emulator works on audio time, so the tests push audio as fast as they like; where a
//! test must know the emulator has processed some audio it waits for the emulator's own count
//! (`wait_for_audio`), never for a guessed sleep. The keep-alive tests shrink the 10 s idle
//! timeout to a few hundred milliseconds by configuration.

use std::time::Duration;

use bytes::Bytes;
use nixflex_pipeline::ProviderErrorKind;
use nixflex_pipeline::stt::{SttEvent, SttEvents, SttInput, SttOptions, SttProvider};
use nixflex_providers::stt::deepgram::{DeepgramClient, DeepgramConfig};
use nixflex_testkit::deepgram::{
    DeepgramEmulator, DeepgramEmulatorConfig, Fault, Utterance, silence_audio, speech_audio,
};
use secrecy::SecretString;

const WAIT: Duration = Duration::from_secs(5);

fn client(emulator: &DeepgramEmulator, key: Option<&str>) -> DeepgramClient {
    DeepgramClient::new(DeepgramConfig {
        base_url: emulator.ws_url(),
        api_key: key.map(SecretString::from),
        ..DeepgramConfig::default()
    })
}

/// Pushes `audio` in 20 ms frames; returns the number of bytes pushed.
fn push(input: &SttInput, audio: &Bytes) -> u64 {
    for frame in audio.chunks(160) {
        input.push_audio(Bytes::copy_from_slice(frame)).expect("the session is open");
    }
    audio.len() as u64
}

async fn next_event(events: &mut SttEvents) -> SttEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event in time")
        .expect("the stream is open")
}

/// Events up to and including the first that matches `stop`.
async fn events_until(events: &mut SttEvents, stop: impl Fn(&SttEvent) -> bool) -> Vec<SttEvent> {
    let mut seen = Vec::new();
    loop {
        let event = next_event(events).await;
        let done = stop(&event);
        seen.push(event);
        if done {
            return seen;
        }
    }
}

fn speech_final(event: &SttEvent) -> bool {
    matches!(event, SttEvent::Final { speech_final: true, .. })
}

#[tokio::test]
async fn scripted_speech_is_transcribed_and_marked_speech_final_only_after_the_endpointing_silence()
{
    let emulator = DeepgramEmulator::start().await.unwrap();
    emulator.push_utterance("I'd like to book an appointment for Tuesday.");
    let options = SttOptions { keywords: vec!["Nixflex".to_owned()], ..SttOptions::default() };
    let (input, mut events) = client(&emulator, Some("dg-key")).open(options).await.unwrap();

    let mut sent = push(&input, &silence_audio(Duration::from_millis(200)));
    sent += push(&input, &speech_audio(Duration::from_millis(1500)));
    sent += push(&input, &silence_audio(Duration::from_millis(200)));
    // 200 ms of silence is less than the 300 ms endpointing: no speech_final yet.
    let log = emulator.wait_for_audio(0, sent, WAIT).await.unwrap();
    assert!(!log.sent.iter().any(|m| m.contains(r#""speech_final":true"#)), "{:?}", log.sent);
    sent += push(&input, &silence_audio(Duration::from_millis(120)));
    emulator.wait_for_audio(0, sent, WAIT).await.unwrap();

    let seen = events_until(&mut events, speech_final).await;
    assert_eq!(seen[0], SttEvent::SpeechStarted);
    assert!(
        seen.iter()
            .any(|event| matches!(event, SttEvent::Interim { text } if text.starts_with("I'd")))
    );
    let Some(SttEvent::Final { text, confidence, from_finalize, .. }) = seen.last() else {
        panic!("{seen:?}")
    };
    assert_eq!(text, "I'd like to book an appointment for Tuesday.");
    assert!(*confidence > 0.9);
    assert!(!from_finalize);

    // UtteranceEnd follows once the word gap reaches utterance_end_ms (1000 ms).
    push(&input, &silence_audio(Duration::from_millis(800)));
    assert_eq!(next_event(&mut events).await, SttEvent::UtteranceEnd);

    let session = &emulator.sessions()[0];
    let headers: Vec<_> =
        session.headers.iter().filter(|(name, _)| name == "authorization").collect();
    assert_eq!(headers[0].1, "Token dg-key");
    for (name, value) in [
        ("model", "nova-3"),
        ("encoding", "mulaw"),
        ("sample_rate", "8000"),
        ("channels", "1"),
        ("interim_results", "true"),
        ("endpointing", "300"),
        ("utterance_end_ms", "1000"),
        ("vad_events", "true"),
        ("smart_format", "true"),
        ("language", "en"),
        ("keyterm", "Nixflex"),
    ] {
        assert_eq!(session.param(name), Some(value), "{name}");
    }
    input.close().await.unwrap();
}

#[tokio::test]
async fn two_utterances_are_transcribed_in_script_order() {
    let emulator = DeepgramEmulator::start().await.unwrap();
    emulator.push_utterance("Hello.");
    emulator.push_utterance("Goodbye.");
    let (input, mut events) =
        client(&emulator, Some("k")).open(SttOptions::default()).await.unwrap();
    for _ in 0..2 {
        push(&input, &speech_audio(Duration::from_millis(400)));
        push(&input, &silence_audio(Duration::from_millis(400)));
    }
    let finals: Vec<String> = events_until(
        &mut events,
        |e| matches!(e, SttEvent::Final { text, .. } if text == "Goodbye."),
    )
    .await
    .into_iter()
    .filter_map(|event| match event {
        SttEvent::Final { text, .. } => Some(text),
        _ => None,
    })
    .collect();
    assert_eq!(finals, vec!["Hello.", "Goodbye."]);
}

#[tokio::test]
async fn finalize_flushes_the_pending_speech_as_a_final_from_finalize() {
    let emulator = DeepgramEmulator::start().await.unwrap();
    emulator.push_utterance("Cancel my order");
    let (input, mut events) =
        client(&emulator, Some("k")).open(SttOptions::default()).await.unwrap();
    let sent = push(&input, &speech_audio(Duration::from_millis(600)));
    emulator.wait_for_audio(0, sent, WAIT).await.unwrap();
    input.finalize().await.unwrap();
    let seen = events_until(&mut events, |e| matches!(e, SttEvent::Final { .. })).await;
    assert_eq!(
        seen.last(),
        Some(&SttEvent::Final {
            text: "Cancel my order".to_owned(),
            confidence: 0.98,
            speech_final: false,
            from_finalize: true,
            language: None,
        })
    );
    assert!(emulator.sessions()[0].text_messages.contains(&r#"{"type":"Finalize"}"#.to_owned()));
}

#[tokio::test]
async fn close_flushes_pending_speech_then_ends_the_session_normally() {
    let emulator = DeepgramEmulator::start().await.unwrap();
    emulator.push_utterance("Thank you");
    let (input, mut events) =
        client(&emulator, Some("k")).open(SttOptions::default()).await.unwrap();
    push(&input, &speech_audio(Duration::from_millis(400)));
    input.close().await.unwrap();
    let seen = events_until(&mut events, |e| *e == SttEvent::Closed).await;
    assert!(
        seen.iter().any(|e| matches!(e, SttEvent::Final { text, .. } if text == "Thank you")),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|e| matches!(e, SttEvent::Error(_))), "{seen:?}");
    assert!(events.recv().await.is_none());
    let session = emulator.wait_for(0, WAIT, |log| log.ended.is_some()).await.unwrap();
    assert_eq!(session.ended.as_deref(), Some("close_stream"));
    assert!(session.sent.last().unwrap().contains(r#""type":"Metadata""#));
}

#[tokio::test]
async fn keep_alives_keep_the_socket_open_past_the_idle_timeout() {
    let emulator = DeepgramEmulator::start_with(DeepgramEmulatorConfig {
        idle_timeout: Duration::from_millis(500),
        ..DeepgramEmulatorConfig::default()
    })
    .await
    .unwrap();
    emulator.push_utterance("Still there?");
    let deepgram = DeepgramClient::new(DeepgramConfig {
        base_url: emulator.ws_url(),
        api_key: Some(SecretString::from("k")),
        keep_alive_interval: Duration::from_millis(100),
        ..DeepgramConfig::default()
    });
    let (input, mut events) = deepgram.open(SttOptions::default()).await.unwrap();
    // No audio for more than two idle timeouts: only keep-alives flow.
    let log = emulator
        .wait_for(0, WAIT, |log| {
            log.text_messages.iter().filter(|m| m.contains("KeepAlive")).count() >= 12
        })
        .await
        .unwrap();
    assert_eq!(log.ended, None);
    push(&input, &speech_audio(Duration::from_millis(400)));
    push(&input, &silence_audio(Duration::from_millis(400)));
    let seen = events_until(&mut events, speech_final).await;
    assert!(matches!(seen.last(), Some(SttEvent::Final { text, .. }) if text == "Still there?"));
    input.close().await.unwrap();
}

#[tokio::test]
async fn without_keep_alives_the_idle_socket_is_closed_with_a_net_0001_timeout_error() {
    let emulator = DeepgramEmulator::start_with(DeepgramEmulatorConfig {
        idle_timeout: Duration::from_millis(200),
        ..DeepgramEmulatorConfig::default()
    })
    .await
    .unwrap();
    let deepgram = DeepgramClient::new(DeepgramConfig {
        base_url: emulator.ws_url(),
        api_key: Some(SecretString::from("k")),
        keep_alive_interval: Duration::from_secs(60),
        ..DeepgramConfig::default()
    });
    let (input, mut events) = deepgram.open(SttOptions::default()).await.unwrap();
    let SttEvent::Error(error) = next_event(&mut events).await else { panic!("expected an error") };
    assert_eq!(error.kind, ProviderErrorKind::Timeout);
    assert!(error.message.contains("NET-0001"));
    assert_eq!(next_event(&mut events).await, SttEvent::Closed);
    assert_eq!(emulator.sessions()[0].ended.as_deref(), Some("idle_timeout"));
    // The task has ended; pushing now reports the session as over.
    tokio::time::timeout(WAIT, async {
        while !input.is_closed() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    assert_eq!(
        input.push_audio(Bytes::from_static(&[0xFF])).unwrap_err().kind,
        ProviderErrorKind::Cancelled
    );
}

#[tokio::test]
async fn a_wrong_key_fails_the_open_with_an_auth_error() {
    let emulator = DeepgramEmulator::start_with(DeepgramEmulatorConfig {
        api_key: Some("right".to_owned()),
        ..DeepgramEmulatorConfig::default()
    })
    .await
    .unwrap();
    let error = client(&emulator, Some("wrong")).open(SttOptions::default()).await.unwrap_err();
    assert_eq!(error.kind, ProviderErrorKind::Auth);
    assert!(!error.to_string().contains("wrong"));
}

#[tokio::test]
async fn a_refused_upgrade_with_429_is_a_retryable_rate_limit() {
    let emulator = DeepgramEmulator::start().await.unwrap();
    emulator.push_fault(Fault::RejectUpgrade(429));
    let error = client(&emulator, Some("k")).open(SttOptions::default()).await.unwrap_err();
    assert_eq!(error.kind, ProviderErrorKind::RateLimited);
    assert!(error.retryable);
}

#[tokio::test]
async fn a_missing_key_fails_as_not_configured_without_connecting() {
    let emulator = DeepgramEmulator::start().await.unwrap();
    let error = client(&emulator, None).open(SttOptions::default()).await.unwrap_err();
    assert_eq!(error.kind, ProviderErrorKind::NotConfigured);
    assert!(emulator.sessions().is_empty());
}

#[tokio::test]
async fn a_server_error_mid_session_surfaces_as_an_error_then_closed() {
    let emulator = DeepgramEmulator::start().await.unwrap();
    emulator.push_fault(Fault::ErrorAfterAudio(Duration::from_millis(200)));
    let (input, mut events) =
        client(&emulator, Some("k")).open(SttOptions::default()).await.unwrap();
    push(&input, &silence_audio(Duration::from_millis(300)));
    let seen = events_until(&mut events, |e| *e == SttEvent::Closed).await;
    let errors: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            SttEvent::Error(error) => Some(error),
            _ => None,
        })
        .collect();
    assert!(!errors.is_empty(), "{seen:?}");
    assert!(errors.iter().all(|error| error.retryable));
}

#[tokio::test]
async fn a_dropped_connection_surfaces_as_a_transport_error_then_closed() {
    let emulator = DeepgramEmulator::start().await.unwrap();
    emulator.push_fault(Fault::DisconnectAfterAudio(Duration::from_millis(100)));
    let (input, mut events) =
        client(&emulator, Some("k")).open(SttOptions::default()).await.unwrap();
    push(&input, &silence_audio(Duration::from_millis(200)));
    let seen = events_until(&mut events, |e| *e == SttEvent::Closed).await;
    assert!(
        seen.iter().any(
            |e| matches!(e, SttEvent::Error(error) if error.kind == ProviderErrorKind::Transport)
        ),
        "{seen:?}"
    );
}

#[tokio::test]
async fn multilingual_sessions_report_the_detected_language() {
    let emulator = DeepgramEmulator::start().await.unwrap();
    emulator.push(Utterance {
        text: "Hola, buenos días".to_owned(),
        language: Some("es".to_owned()),
        confidence: 0.9,
    });
    let options = SttOptions {
        language: "multi".to_owned(),
        endpointing: Some(Duration::from_millis(100)),
        ..SttOptions::default()
    };
    let (input, mut events) = client(&emulator, Some("k")).open(options).await.unwrap();
    push(&input, &speech_audio(Duration::from_millis(500)));
    push(&input, &silence_audio(Duration::from_millis(200)));
    let seen = events_until(&mut events, speech_final).await;
    assert!(
        matches!(seen.last(), Some(SttEvent::Final { language: Some(language), .. }) if language == "es")
    );
    assert_eq!(emulator.sessions()[0].param("endpointing"), Some("100"));
}
