//! The session actor under paused time: the call's clock is virtual, so limits of tens of seconds
//! run instantly and timings are exact. The providers are in-process fakes; the media socket is a
//! pair of channels carrying Twilio's JSON messages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, unreachable_pub)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use nixflex_core::agent::{Agent, AgentSettings};
use nixflex_core::call::{CallRecord, CallStatus, Direction, EndedReason};
use nixflex_core::catalog::TtsProviderKind;
use nixflex_core::crypto::{SecretBox, hash_secret};
use nixflex_core::number::{NumberSettings, PhoneNumber};
use nixflex_engine::{CallStore, Engine, EngineConfig, Providers};
use nixflex_pipeline::ProviderError;
use nixflex_pipeline::audio::{mulaw, tone};
use nixflex_pipeline::llm::{LlmEvent, LlmProvider, LlmRequest, LlmStream, StopReason, Usage};
use nixflex_pipeline::stt::{
    SttDriver, SttEvent, SttEvents, SttInput, SttOptions, SttProvider, stt_channel,
};
use nixflex_pipeline::tts::{PcmLayout, TtsProvider, TtsRequest, TtsStream};
use nixflex_providers::twilio::{TwilioClient, TwilioClientConfig};

mod functions;
mod memory_store;
use memory_store::MemoryStore;
use serde_json::{Map, json};
use tokio::time::Instant;

#[derive(Debug, Default)]
struct FakeLlm {
    replies: Mutex<VecDeque<String>>,
    /// Scripted event streams; used before `replies` while there are any.
    scripts: Mutex<VecDeque<Vec<LlmEvent>>>,
    requests: Mutex<Vec<LlmRequest>>,
}

#[async_trait::async_trait]
impl LlmProvider for FakeLlm {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn stream(&self, request: LlmRequest) -> Result<LlmStream, ProviderError> {
        self.requests.lock().unwrap().push(request);
        if let Some(events) = self.scripts.lock().unwrap().pop_front() {
            return Ok(LlmStream::new(futures::stream::iter(events.into_iter().map(Ok))));
        }
        let reply = self.replies.lock().unwrap().pop_front().unwrap_or_else(|| "Okay.".to_owned());
        let events = vec![
            Ok(LlmEvent::TextDelta(reply)),
            Ok(LlmEvent::Done { stop_reason: StopReason::EndTurn, usage: Usage::default() }),
        ];
        Ok(LlmStream::new(futures::stream::iter(events)))
    }
}

#[derive(Debug, Default)]
struct FakeStt {
    drivers: Mutex<Vec<SttDriver>>,
}

#[async_trait::async_trait]
impl SttProvider for FakeStt {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn open(&self, _options: SttOptions) -> Result<(SttInput, SttEvents), ProviderError> {
        let (input, driver, events) = stt_channel(10_000);
        self.drivers.lock().unwrap().push(driver);
        Ok((input, events))
    }
}

impl FakeStt {
    /// An interim result: words heard so far.
    async fn hear(&self, text: &str) {
        let events = self.drivers.lock().unwrap().last().unwrap().events.clone();
        let _ = events.send(SttEvent::Interim { text: text.to_owned() }).await;
    }

    /// Any event of the recogniser.
    async fn send(&self, event: SttEvent) {
        let events = self.drivers.lock().unwrap().last().unwrap().events.clone();
        let _ = events.send(event).await;
    }

    async fn say(&self, text: &str) {
        let events = self.drivers.lock().unwrap().last().unwrap().events.clone();
        let _ = events
            .send(SttEvent::Final {
                text: text.to_owned(),
                confidence: 0.99,
                speech_final: true,
                from_finalize: false,
                language: None,
            })
            .await;
    }
}

/// Speaks 50 ms of 8 kHz tone per character; fails on any sentence containing [`UNSPEAKABLE`].
#[derive(Debug, Default)]
struct FakeTts;

/// A word the fake TTS cannot say.
const UNSPEAKABLE: &str = "Zzyzx";

#[async_trait::async_trait]
impl TtsProvider for FakeTts {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn synthesize(&self, request: TtsRequest) -> Result<TtsStream, ProviderError> {
        if request.text.contains(UNSPEAKABLE) {
            return Err(ProviderError::timeout("the fake voice cannot say that"));
        }
        let n = request.text.chars().count() * 400;
        let pcm = tone::sine(440.0, 8000, n, 8000.0);
        let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
        let chunks: Vec<Result<Bytes, ProviderError>> =
            bytes.chunks(1600).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        Ok(TtsStream::from_pcm(
            Box::pin(futures::stream::iter(chunks)),
            8000,
            PcmLayout::Raw,
            Instant::now(),
        ))
    }
}

struct Lab {
    engine: Engine,
    store: Arc<dyn CallStore>,
    memory: Arc<MemoryStore>,
    /// Notified when the call's follow-ups are queued.
    follow_up_wake: Arc<tokio::sync::Notify>,
    llm: Arc<FakeLlm>,
    stt: Arc<FakeStt>,
    call_id: String,
    to_server: futures::channel::mpsc::UnboundedSender<Result<String, Infallible>>,
    from_server: futures::channel::mpsc::UnboundedReceiver<String>,
    session: tokio::task::JoinHandle<Option<nixflex_engine::EndReason>>,
    seq: u64,
    /// Where the engine's recordings go, when it has a recordings service.
    recordings_dir: Option<tempfile::TempDir>,
    /// Frame `n` is sent at `clock + n × 20 ms` (an absolute grid: timer rounding never drifts).
    clock: Instant,
}

const CALLER: &str = "+447386172392";
const NUMBER: &str = "+14155552671";
/// The secret of the account's one key (it signs requests to custom functions).
const KEY_SECRET: &str = "nxf_sk_session_test_secret";

/// How a lab differs from the default one.
struct LabOptions {
    /// Run on virtual time.
    paused: bool,
    /// The call record already knows the carrier's call SID (the webhook carried it).
    record_has_sid: bool,
    /// Where the Twilio REST client sends requests.
    twilio_base: String,
    /// The engine's drain time.
    drain_timeout: Duration,
    /// Give the engine a recordings service over a temporary directory.
    recordings: bool,
    /// The number's settings.
    number_settings: NumberSettings,
    /// Let customer endpoints (custom functions) be http and private addresses.
    allow_private_targets: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            paused: true,
            record_has_sid: true,
            twilio_base: "http://127.0.0.1:9".into(),
            drain_timeout: Duration::from_secs(30),
            recordings: false,
            number_settings: NumberSettings::default(),
            allow_private_targets: true,
        }
    }
}

async fn lab(agent: serde_json::Value) -> Lab {
    lab_with(agent, LabOptions::default()).await
}

async fn lab_with(agent: serde_json::Value, options: LabOptions) -> Lab {
    if options.paused {
        tokio::time::pause();
    }
    let memory = Arc::new(MemoryStore::default());
    let secrets = SecretBox::from_encoded(&SecretBox::generate_encoded()).unwrap();
    let now = nixflex_store::now();
    let rules = nixflex_core::agent::AgentValidation {
        tts: TtsProviderKind::Inworld,
        allow_private_targets: true,
    };
    let settings =
        AgentSettings::default().apply_patch(agent.as_object().unwrap().clone(), rules).unwrap();
    let agent = Agent {
        agent_id: "agent_1".into(),
        account_id: "acct_1".into(),
        api_key_id: "nxf_1".into(),
        settings,
        created_at: now,
        updated_at: now,
    };
    memory.agents.lock().unwrap().insert("agent_1".into(), agent);
    memory.keys.lock().unwrap().push(nixflex_store::ApiKey {
        key_id: "nxf_1".into(),
        account_id: "acct_1".into(),
        name: None,
        secret_hash: hash_secret(KEY_SECRET),
        secret_sealed: secrets.seal(KEY_SECRET),
        created_at: now,
        rotated_at: None,
        revoked_at: None,
    });
    let number = PhoneNumber {
        phone_number: NUMBER.into(),
        account_id: "acct_1".into(),
        agent_id: Some("agent_1".into()),
        provider: "twilio".into(),
        twilio_account_sid: format!("AC{}", "a".repeat(32)),
        twilio_auth_token_sealed: secrets.seal("token"),
        twilio_number_sid: format!("PN{}", "b".repeat(32)),
        inbound_enabled: true,
        outbound_enabled: true,
        sms_reply_enabled: true,
        settings: options.number_settings.clone(),
        webhook_url: None,
        webhook2_url: None,
        precall_url: None,
        created_at: now,
        updated_at: now,
    };
    memory.numbers.lock().unwrap().insert(NUMBER.into(), number);
    let call = CallRecord {
        call_id: "call_1".into(),
        account_id: "acct_1".into(),
        agent_id: Some("agent_1".into()),
        direction: Direction::Inbound,
        from_number: CALLER.into(),
        to_number: NUMBER.into(),
        twilio_call_sid: options.record_has_sid.then(|| format!("CA{}", "c".repeat(32))),
        call_status: CallStatus::InProgress,
        ended_reason: None,
        started_at: now,
        answered_at: None,
        ended_at: None,
        duration_seconds: None,
        transcript: vec![],
        turns: vec![],
        avg_latency_ms: None,
        recording: None,
        call_summary: None,
        caller_sentiment: None,
        call_successful: None,
        extracted_data: Map::new(),
        voicemail_detected: false,
        campaign_id: None,
        metadata: None,
        cost_usd: None,
        function_calls: Vec::new(),
        provider_events: Vec::new(),
        precall_reject_reason: None,
        amd_result: None,
        voicemail_detection_method: None,
        carrier_details: None,
        stream_token_hash: Some(hash_secret("stream-token")),
        created_at: now,
        updated_at: now,
    };
    memory.calls.lock().unwrap().insert("call_1".into(), call);
    let store: Arc<dyn CallStore> = memory.clone();
    let llm = Arc::new(FakeLlm::default());
    let stt = Arc::new(FakeStt::default());
    let providers = Providers {
        llm: llm.clone(),
        stt: stt.clone(),
        tts: Arc::new(FakeTts),
        tts_kind: TtsProviderKind::Inworld,
        llm_fallbacks: Vec::new(),
        tts_fallbacks: Vec::new(),
        stt_fallbacks: Vec::new(),
    };
    let twilio = TwilioClient::new(TwilioClientConfig {
        base_url: options.twilio_base.clone(),
        max_retries: 0,
        ..TwilioClientConfig::default()
    })
    .unwrap();
    let customer =
        nixflex_providers::customer::CustomerHttp::new(options.allow_private_targets).unwrap();
    let follow_up_wake = Arc::new(tokio::sync::Notify::new());
    let recordings_dir = options.recordings.then(|| tempfile::tempdir().unwrap());
    let recordings = recordings_dir.as_ref().map(|dir| {
        nixflex_engine::Recordings::new(
            nixflex_engine::RecordingsConfig {
                server: nixflex_providers::storage::ObjectStorage::local(dir.path()).unwrap(),
                server_kind: nixflex_engine::recordings::ServerStore::Local,
                public_url: "http://127.0.0.1:9".into(),
                url_ttl: Duration::from_secs(3600),
                retention: None,
                allow_private_buckets: false,
            },
            memory.clone(),
            secrets.clone(),
        )
    });
    let config = EngineConfig {
        drain_timeout: options.drain_timeout,
        follow_up_wake: Some(follow_up_wake.clone()),
        recordings,
        ..EngineConfig::default()
    };
    let engine = Engine::new(store.clone(), secrets, twilio, providers, customer, config);
    let (to_server, reader) = futures::channel::mpsc::unbounded();
    let (writer, from_server) = futures::channel::mpsc::unbounded::<String>();
    let runner = engine.clone();
    let session = tokio::spawn(async move { runner.run_media_stream(reader, writer).await.ok() });
    let mut lab = Lab {
        engine,
        store,
        memory,
        follow_up_wake,
        llm,
        stt,
        call_id: "call_1".into(),
        to_server,
        from_server,
        session,
        seq: 0,
        recordings_dir,
        clock: Instant::now(),
    };
    lab.send(json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}));
    lab.send(json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1", "start": {"streamSid": "MZ1", "accountSid": format!("AC{}", "a".repeat(32)),
        "callSid": format!("CA{}", "c".repeat(32)), "tracks": ["inbound"], "customParameters": {"call_id": "call_1", "token": "stream-token"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}));
    lab
}

impl Lab {
    fn send(&mut self, message: serde_json::Value) {
        self.to_server.unbounded_send(Ok(message.to_string())).unwrap();
    }

    /// One 20 ms frame of caller audio (speech or silence), then 20 ms of virtual time.
    async fn frame(&mut self, speech: bool) {
        self.seq += 1;
        let audio = if speech {
            mulaw::encode_all(&tone::sine(300.0, 8000, 160, 9000.0))
        } else {
            vec![0xFF; 160]
        };
        let payload = base64::engine::general_purpose::STANDARD.encode(audio);
        let message = json!({"event": "media", "sequenceNumber": self.seq.to_string(), "streamSid": "MZ1",
            "media": {"track": "inbound", "chunk": self.seq.to_string(), "timestamp": (self.seq * 20).to_string(), "payload": payload}});
        self.send(message);
        tokio::time::sleep_until(self.clock + Duration::from_millis(20 * self.seq)).await;
    }

    /// Drains what the server sent so far: (virtual time, event, mark name).
    fn drain(&mut self, out: &mut Vec<(Instant, String, String)>) {
        while let Ok(Some(text)) = self.from_server.try_recv().map(Some) {
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            let event = value["event"].as_str().unwrap().to_owned();
            let name = value["mark"]["name"].as_str().unwrap_or("").to_owned();
            if event == "mark" {
                // Play it back at once: the fake handset has no buffer.
                self.send(json!({"event": "mark", "streamSid": "MZ1", "mark": {"name": name}}));
            }
            out.push((Instant::now(), event, name));
        }
    }
}

#[tokio::test]
async fn the_duration_limit_plays_a_goodbye_that_cannot_be_interrupted_then_ends_the_call() {
    let mut lab = lab(json!({"welcome_message": "Hi.", "max_call_duration_seconds": 60, "silence_hangup_seconds": 45})).await;
    let start = Instant::now();
    let mut out = Vec::new();
    // The caller talks over everything from 3 s on (syllables with short gaps, as speech has; a
    // steady tone would be learnt as line noise); the recogniser hears words each second (which
    // keep the silence clock stopped) but never a final transcript.
    while !lab.session.is_finished() && start.elapsed() < Duration::from_secs(120) {
        let t = start.elapsed();
        let speaking = t > Duration::from_secs(3) && t.as_millis() % 320 < 240;
        lab.frame(speaking).await;
        if speaking && t.as_millis() % 1000 < 20 {
            lab.stt.hear("and another thing").await;
        }
        lab.drain(&mut out);
    }
    let reason = lab.session.await.unwrap();
    assert_eq!(reason.map(|r| r.as_str()), Some("max_duration"));
    let goodbye_audio = out
        .iter()
        .filter(|(at, e, _)| e == "media" && at.duration_since(start) >= Duration::from_secs(60))
        .count();
    assert!(goodbye_audio > 50, "the goodbye was spoken ({goodbye_audio} frames)");
    assert!(
        !out.iter()
            .any(|(at, e, _)| e == "clear" && at.duration_since(start) >= Duration::from_secs(60)),
        "never cleared"
    );
    let ended = start.elapsed();
    assert!(ended >= Duration::from_secs(60) && ended < Duration::from_secs(76), "{ended:?}");
    let call = lab.store.find_call(&lab.call_id.as_str().into()).await.unwrap().unwrap();
    assert_eq!(call.ended_reason.map(EndedReason::as_str), Some("max_duration"));
}

#[tokio::test]
async fn silence_is_reprompted_twice_then_the_call_ends_at_the_limit() {
    let mut lab = lab(json!({"welcome_message": "Hi.", "silence_hangup_seconds": 30})).await;
    lab.llm.replies.lock().unwrap().extend(["Are you there?".to_owned(), "Hello?".to_owned()]);
    let start = Instant::now();
    let mut out = Vec::new();
    while !lab.session.is_finished() && start.elapsed() < Duration::from_secs(60) {
        lab.frame(false).await;
        lab.drain(&mut out);
    }
    assert_eq!(lab.session.await.unwrap().map(|r| r.as_str()), Some("silence_timeout"));
    assert_eq!(lab.llm.requests.lock().unwrap().len(), 2, "two re-prompts, not more");
    // Greeting ends ~0.15 s in; re-prompts at +5 s and +10 s; hang-up at +30 s.
    let ended = start.elapsed();
    assert!(ended >= Duration::from_secs(30) && ended < Duration::from_secs(32), "{ended:?}");
    let call = lab.store.find_call(&lab.call_id.as_str().into()).await.unwrap().unwrap();
    assert_eq!(call.ended_reason.map(EndedReason::as_str), Some("silence_timeout"));
}

/// A voice on the line without words (a crowd, a television) does not stop the silence clock:
/// the silent caller is checked on and the call ends at the limit (docs/engine.md#silence).
#[tokio::test]
async fn a_voice_without_words_does_not_keep_a_silent_call_open() {
    let mut lab = lab(json!({"welcome_message": "Hi.", "silence_hangup_seconds": 10})).await;
    lab.llm.replies.lock().unwrap().extend(["Are you there?".to_owned(), "Hello?".to_owned()]);
    let start = Instant::now();
    let mut out = Vec::new();
    while !lab.session.is_finished() && start.elapsed() < Duration::from_secs(60) {
        let t = start.elapsed();
        // Voiced from 1 s on, in syllables; the recogniser hears no words in it.
        lab.frame(t > Duration::from_secs(1) && t.as_millis() % 320 < 240).await;
        lab.drain(&mut out);
    }
    assert_eq!(lab.session.await.unwrap().map(|r| r.as_str()), Some("silence_timeout"));
    // Greeting ends ~0.15 s in; check-in at +5 s; hang-up at +10 s.
    let ended = start.elapsed();
    assert!(ended >= Duration::from_secs(10) && ended < Duration::from_secs(11), "{ended:?}");
    let requests = lab.llm.requests.lock().unwrap().len();
    assert_eq!(requests, 1, "one check-in");
}

/// A caller who starts speaking just before the check-in is not talked over: the voice holds
/// the check-in until the recogniser's first words, which stop the clock; the caller's
/// question is what the model answers first.
#[tokio::test]
async fn a_voice_holds_the_check_in_until_its_words_arrive() {
    let mut lab = lab(json!({"welcome_message": "Hi.", "silence_hangup_seconds": 30})).await;
    lab.llm.replies.lock().unwrap().extend(["We do.".to_owned(), "Hello?".to_owned()]);
    let start = Instant::now();
    let mut out = Vec::new();
    let (speech_from, speech_to) = (Duration::from_millis(4900), Duration::from_millis(6500));
    let mut heard = false;
    let mut said = false;
    while !lab.session.is_finished() && start.elapsed() < Duration::from_secs(9) {
        let t = start.elapsed();
        let speaking = t >= speech_from && t < speech_to && t.as_millis() % 320 < 240;
        lab.frame(speaking).await;
        // The recogniser's first words 400 ms into the speech (the check-in was due at ~5.15 s).
        if !heard && t >= speech_from + Duration::from_millis(400) {
            heard = true;
            lab.stt.hear("do you").await;
        }
        if !said && t >= speech_to + Duration::from_millis(100) {
            said = true;
            lab.stt.say("Do you have rye today?").await;
        }
        lab.drain(&mut out);
    }
    let requests = lab.llm.requests.lock().unwrap().clone();
    assert!(!requests.is_empty(), "the question was answered");
    let first = format!("{:?}", requests[0].messages);
    assert!(first.contains("Do you have rye today?"), "{first}");
    assert!(!first.contains("has been silent"), "the check-in talked over the caller: {first}");
}

/// A voice without words while the agent is silent (a crowd) says nothing about the caller's
/// next turn: a "yeah" spoken over the agent's check-in afterwards is still a backchannel, so
/// the agent talks on and the model is not asked to answer it (docs/engine.md#backchannels).
#[tokio::test]
async fn a_wordless_voice_does_not_turn_a_later_backchannel_into_a_question() {
    let mut lab = lab(json!({"welcome_message": "Hi.", "silence_hangup_seconds": 30})).await;
    let check_in = "Are you still there? I can help with bookings, opening hours and our menu.";
    lab.llm.replies.lock().unwrap().push_back(check_in.to_owned());
    let start = Instant::now();
    let mut out: Vec<(Instant, String, String)> = Vec::new();
    let (mut flushed, mut said) = (false, false);
    let mut check_in_from = None;
    while start.elapsed() < Duration::from_secs(12) {
        assert!(!lab.session.is_finished(), "the call ended at {:?}", start.elapsed());
        let t = start.elapsed();
        if check_in_from.is_none()
            && out.iter().any(|(at, e, _): &(Instant, String, String)| {
                e == "media" && at.duration_since(start) > Duration::from_secs(2)
            })
        {
            check_in_from = Some(t);
        }
        // A wordless voice at 1.0–1.5 s, the agent silent; "yeah" 1 s into the check-in.
        let yeah_at = check_in_from.map(|from| from + Duration::from_secs(1));
        let voiced = (t >= Duration::from_millis(1000) && t < Duration::from_millis(1500))
            || yeah_at.is_some_and(|at| t >= at && t < at + Duration::from_millis(300));
        lab.frame(voiced).await;
        if !flushed && t >= Duration::from_millis(1800) {
            // The recogniser's answer to the engine's `Finalize`: no words in that voice.
            flushed = true;
            lab.stt
                .send(SttEvent::Final {
                    text: String::new(),
                    confidence: 0.0,
                    speech_final: false,
                    from_finalize: true,
                    language: None,
                })
                .await;
        }
        if !said && yeah_at.is_some_and(|at| t >= at + Duration::from_millis(500)) {
            said = true;
            lab.stt.say("Yeah.").await;
        }
        lab.drain(&mut out);
    }
    assert!(said, "the check-in was spoken");
    let requests = lab.llm.requests.lock().unwrap().clone();
    assert_eq!(
        requests.len(),
        1,
        "the backchannel was answered: {:?}",
        requests.iter().map(|r| format!("{:?}", r.messages)).collect::<Vec<_>>()
    );
    assert!(!out.iter().any(|(_, e, _)| e == "clear"), "the check-in was cut off");
    let call_audio = out.iter().filter(|(_, e, _)| e == "media").count();
    // "Hi." and the whole check-in (50 ms of audio a character, 20 ms frames).
    assert!(call_audio >= check_in.len() * 5 / 2, "{call_audio} frames");
}

/// How the recogniser says a caller's words ended, in
/// `the_recogniser_ends_a_turn_that_a_voice_behind_the_caller_holds_open`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum WordsEnd {
    /// Its final carries its own endpoint (`speech_final`), 250 ms after the words.
    Endpoint,
    /// Its final has no endpoint; its utterance end follows 1.1 s after the words.
    UtteranceEnd,
    /// Neither: only the detector can end the turn.
    Nothing,
}

/// A voice behind the caller (a crowd) goes on after the caller's words: the recogniser's
/// endpoint or utterance end ends the turn, not the end of that voice; and the voice, which
/// brings no words, does not interrupt the reply (docs/engine.md#end-of-turn).
#[tokio::test]
async fn the_recogniser_ends_a_turn_that_a_voice_behind_the_caller_holds_open() {
    for (index, how) in
        [WordsEnd::Endpoint, WordsEnd::UtteranceEnd, WordsEnd::Nothing].into_iter().enumerate()
    {
        // Time is paused once, by the first lab.
        let options = LabOptions { paused: index == 0, ..LabOptions::default() };
        let mut lab = lab_with(json!({"welcome_message": "Hi."}), options).await;
        lab.llm
            .replies
            .lock()
            .unwrap()
            .push_back("We have a table for two at seven tonight.".to_owned());
        let start = Instant::now();
        let mut out = Vec::new();
        let words_end = Duration::from_millis(2000);
        let voice_end = Duration::from_millis(6000);
        let (mut said, mut ended) = (false, false);
        let mut asked_at = None;
        while start.elapsed() < Duration::from_secs(9) {
            let t = start.elapsed();
            // The caller from 1 s to 2 s, then the voice behind them in syllables to 6 s.
            let voiced = t >= Duration::from_secs(1) && t < voice_end && t.as_millis() % 320 < 240;
            lab.frame(voiced).await;
            if !said && t >= words_end + Duration::from_millis(250) {
                said = true;
                lab.stt
                    .send(SttEvent::Final {
                        text: "A table for two.".to_owned(),
                        confidence: 0.99,
                        speech_final: how == WordsEnd::Endpoint,
                        from_finalize: false,
                        language: None,
                    })
                    .await;
            }
            if how == WordsEnd::UtteranceEnd
                && !ended
                && t >= words_end + Duration::from_millis(1100)
            {
                ended = true;
                lab.stt.send(SttEvent::UtteranceEnd).await;
            }
            if asked_at.is_none() && !lab.llm.requests.lock().unwrap().is_empty() {
                asked_at = Some(t);
            }
            lab.drain(&mut out);
        }
        let asked_at = asked_at.expect("the caller was answered");
        // Within a frame or two of the frame grid.
        let expected = match how {
            WordsEnd::Endpoint => words_end + Duration::from_millis(250),
            WordsEnd::UtteranceEnd => words_end + Duration::from_millis(1100),
            // The voice's end, then the eagerness (the hangover counts towards it).
            WordsEnd::Nothing => voice_end + Duration::from_millis(200),
        };
        assert!(
            asked_at + Duration::from_millis(40) >= expected
                && asked_at <= expected + Duration::from_millis(100),
            "{how:?}: the model was asked at {asked_at:?}, expected {expected:?}"
        );
        let requests = lab.llm.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 1, "{how:?}");
        assert!(format!("{:?}", requests[0].messages).contains("A table for two."), "{how:?}");
        // The reply played over the voice behind the caller and was not cut off by it.
        assert!(
            !out.iter().any(|(_, e, _)| e == "clear"),
            "{how:?}: the voice interrupted the reply"
        );
        let reply_frames = out
            .iter()
            .filter(|(at, e, _)| e == "media" && at.duration_since(start) > asked_at)
            .count();
        assert!(reply_frames > 50, "{how:?}: the reply was spoken ({reply_frames} frames)");
    }
}

#[tokio::test]
async fn barge_in_clears_within_one_frame_of_the_threshold() {
    let mut lab = lab(json!({"welcome_message": "Welcome to the bakery, we have a lot of bread to tell you about today.", "interruption_sensitivity": 100})).await;
    let start = lab.clock;
    let mut out = Vec::new();
    let speech_from = Duration::from_millis(1000);
    while start.elapsed() < Duration::from_millis(2000) {
        let next_frame_at = Duration::from_millis(20 * lab.seq);
        lab.frame(next_frame_at >= speech_from).await;
        lab.drain(&mut out);
    }
    // Frames are drained when the next one is due; the server answers while processing one.
    let clear = out.iter().find(|(_, e, _)| e == "clear").expect("a clear").0.duration_since(start)
        - Duration::from_millis(20);
    // The frame at which the VAD and the barge-in rule fire on this audio, computed on their own.
    let mut vad = nixflex_engine::vad::Vad::new(nixflex_engine::vad::VadConfig::default());
    let mut rule = nixflex_engine::vad::BargeIn::new(100);
    let speech = mulaw::encode_all(&tone::sine(300.0, 8000, 160, 9000.0));
    let silence = vec![0xFF_u8; 160];
    let mut fire_at = None;
    for k in 0..100_u64 {
        let at = Duration::from_millis(20 * k);
        let frame = if at >= speech_from { &speech } else { &silence };
        vad.push_frame(frame);
        if rule.on_frame(
            vad.speech_ms(),
            Duration::from_millis(20),
            true,
            nixflex_engine::vad::Words::Content,
        ) {
            fire_at = Some(at);
            break;
        }
    }
    let fire_at = fire_at.expect("the rule fires on this audio");
    // Compare frame indices (tokio rounds timer deadlines to the millisecond).
    let frame_of = |d: Duration| (d.as_millis() + 10) / 20;
    assert_eq!(
        frame_of(clear),
        frame_of(fire_at),
        "clear must go out while processing the frame that crossed the threshold ({clear:?} vs {fire_at:?})"
    );
    assert!(fire_at <= speech_from + Duration::from_millis(60 + 100), "{fire_at:?}");
    let after_clear =
        out.iter().filter(|(at, e, _)| e == "media" && at.duration_since(start) > clear).count();
    assert_eq!(after_clear, 0, "no greeting audio after the clear");
    // The caller finishes; the transcript keeps only the heard part of the greeting.
    while start.elapsed() < Duration::from_millis(2600) {
        lab.frame(false).await;
        lab.drain(&mut out);
    }
    lab.stt.say("Do you have rye?").await;
    for _ in 0..50 {
        lab.frame(false).await;
        lab.drain(&mut out);
    }
    let requests = lab.llm.requests.lock().unwrap();
    let history = &requests.last().unwrap().messages;
    let heard =
        history.iter().find(|m| m.role == nixflex_pipeline::llm::Role::Assistant).unwrap().text();
    assert!(
        !heard.is_empty()
            && "Welcome to the bakery, we have a lot of bread to tell you about today."
                .starts_with(heard.trim_end_matches(',')),
        "{heard:?}"
    );
    assert!(heard.len() < 40, "{heard:?}");
}

#[tokio::test]
async fn the_caller_hanging_up_ends_the_session_and_writes_the_record() {
    let mut lab = lab(json!({"welcome_message": "Hi."})).await;
    for _ in 0..20 {
        lab.frame(false).await;
    }
    lab.send(json!({"event": "stop", "sequenceNumber": "99", "streamSid": "MZ1", "stop": {"accountSid": "AC", "callSid": "CA"}}));
    let reason = lab.session.await.unwrap();
    assert_eq!(reason.map(|r| r.as_str()), Some("caller_hangup"));
    let call = lab.store.find_call(&lab.call_id.as_str().into()).await.unwrap().unwrap();
    assert_eq!(
        (call.call_status.as_str(), call.ended_reason.map(EndedReason::as_str)),
        ("completed", Some("caller_hangup"))
    );
    assert_eq!(call.transcript.first().map(|e| e.text.as_str()), Some("Hi."));
    // The stream's start queued the call.started webhooks; the final update carried the call's
    // follow-up (one transaction) and woke the worker.
    let jobs = lab.memory.follow_ups.lock().unwrap().clone();
    // (call.started is queued on its own task, so the two may be written in either order.)
    let mut kinds: Vec<&str> = jobs.iter().map(|j| j.kind.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, [nixflex_store::CALL_ENDED, nixflex_store::CALL_STARTED], "{jobs:?}");
    for job in &jobs {
        assert_eq!(job.payload, json!({"call_id": "call_1", "account_id": call.account_id}));
    }
    tokio::time::timeout(std::time::Duration::from_secs(5), lab.follow_up_wake.notified())
        .await
        .expect("the worker was woken");
}

#[tokio::test]
async fn a_reprompt_that_cannot_be_spoken_is_followed_by_the_outage_line_and_the_call_goes_on() {
    let mut lab = lab(json!({"welcome_message": "Hi.", "silence_hangup_seconds": 30})).await;
    lab.llm
        .replies
        .lock()
        .unwrap()
        .extend([format!("Are you there, {UNSPEAKABLE}?"), "Hello?".to_owned()]);
    let start = Instant::now();
    let mut out = Vec::new();
    while !lab.session.is_finished() && start.elapsed() < Duration::from_secs(60) {
        lab.frame(false).await;
        lab.drain(&mut out);
    }
    // Like any failed turn: the outage line (the synthesiser timed out on one sentence, it is
    // not known to be down), then the call continues (the second re-prompt, then the silence
    // limit) instead of ending with `error`.
    assert_eq!(lab.session.await.unwrap().map(|r| r.as_str()), Some("silence_timeout"));
    assert_eq!(lab.llm.requests.lock().unwrap().len(), 2, "both re-prompts were asked for");
    let call = lab.store.find_call(&lab.call_id.as_str().into()).await.unwrap().unwrap();
    let said: Vec<&str> = call.transcript.iter().map(|e| e.text.as_str()).collect();
    assert!(
        said.contains(&nixflex_engine::DEFAULT_OUTAGE_MESSAGE),
        "the outage line was spoken: {said:?}"
    );
    assert!(said.contains(&"Hello?"), "the second re-prompt was spoken: {said:?}");
}

#[tokio::test]
async fn the_call_sid_learned_at_stream_start_is_used_to_hang_up_at_the_carrier() {
    use std::io::{BufRead as _, Write as _};
    // Twilio's REST API, on its own thread: reports the first request's request line.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<String>();
    std::thread::spawn(move || {
        let Ok((mut socket, _)) = listener.accept() else { return };
        let mut reader = std::io::BufReader::new(socket.try_clone().unwrap());
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = seen_tx.send(line);
        let _ = socket.write_all(
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        );
    });
    // The voice webhook carried no CallSid; the media stream's `start` does.
    let options = LabOptions {
        paused: false,
        record_has_sid: false,
        twilio_base: base,
        ..LabOptions::default()
    };
    let mut lab = lab_with(json!({"welcome_message": "Hi."}), options).await;
    lab.llm.replies.lock().unwrap().push_back("Goodbye. [END_CALL]".to_owned());
    let mut out = Vec::new();
    for _ in 0..10 {
        lab.frame(false).await;
        lab.drain(&mut out);
    }
    lab.stt.say("That's all, thanks.").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !lab.session.is_finished() {
        assert!(Instant::now() < deadline, "the call did not end");
        lab.frame(false).await;
        lab.drain(&mut out);
    }
    assert_eq!(lab.session.await.unwrap().map(|r| r.as_str()), Some("completed"));
    let line = tokio::time::timeout(Duration::from_secs(10), seen_rx)
        .await
        .expect("the carrier was asked to hang up")
        .unwrap();
    assert!(
        line.starts_with("POST ") && line.contains(&format!("/Calls/CA{}", "c".repeat(32))),
        "{line}"
    );
}

#[tokio::test]
async fn a_drain_lets_the_call_go_on_then_ends_it_with_a_goodbye_and_refuses_new_calls() {
    use nixflex_engine::{Admission, BusyReason, InboundCall};
    let options = LabOptions { drain_timeout: Duration::from_secs(3), ..LabOptions::default() };
    let mut lab = lab_with(json!({"welcome_message": "Hi."}), options).await;
    lab.llm.replies.lock().unwrap().push_back("We open at nine.".to_owned());
    let start = Instant::now();
    let mut out = Vec::new();
    for _ in 0..25 {
        lab.frame(false).await;
        lab.drain(&mut out);
    }
    let engine = lab.engine.clone();
    let drained = tokio::spawn(async move { engine.drain().await });
    tokio::task::yield_now().await;
    assert!(lab.engine.is_draining());
    // A new call is refused while draining.
    let number = lab.store.find_active_number(&NUMBER.into()).await.unwrap().unwrap();
    let admission = lab
        .engine
        .admit_inbound(InboundCall { number: &number, from: CALLER, call_sid: None })
        .await;
    assert_eq!(admission, Admission::Busy { reason: BusyReason::ServerDraining });
    // The live call goes on: the caller asks, the agent answers.
    lab.stt.say("When do you open?").await;
    while !lab.session.is_finished() && start.elapsed() < Duration::from_secs(30) {
        lab.frame(false).await;
        lab.drain(&mut out);
    }
    assert_eq!(lab.session.await.unwrap().map(|r| r.as_str()), Some("server_shutdown"));
    let ended = start.elapsed();
    // Drain started at 0.5 s; 3 s of drain time, then a goodbye of a few seconds at most.
    assert!(ended >= Duration::from_millis(3500) && ended < Duration::from_secs(10), "{ended:?}");
    tokio::time::timeout(Duration::from_secs(5), drained)
        .await
        .expect("the drain finished")
        .unwrap();
    let call = lab.store.find_call(&lab.call_id.as_str().into()).await.unwrap().unwrap();
    assert_eq!(call.ended_reason.map(EndedReason::as_str), Some("server_shutdown"));
    assert!(call.ended_at.is_some());
    let said: Vec<&str> = call.transcript.iter().map(|e| e.text.as_str()).collect();
    assert!(said.contains(&"We open at nine."), "{said:?}");
    assert!(said.last().is_some_and(|s| s.contains("we have to end this call now")), "{said:?}");
}

#[tokio::test]
async fn actions_the_server_cannot_carry_out_are_not_offered_and_their_use_is_reported_to_the_model()
 {
    let mut lab = lab(json!({"welcome_message": "Hi.", "transfer_number": "+447446466000"})).await;
    lab.llm
        .replies
        .lock()
        .unwrap()
        .extend(["Sure. [SEND_SMS: We open at nine.]".to_owned(), "Sorry, I cannot.".to_owned()]);
    let mut out = Vec::new();
    for _ in 0..10 {
        lab.frame(false).await;
        lab.drain(&mut out);
    }
    lab.stt.say("Can you text me the hours?").await;
    for _ in 0..150 {
        lab.frame(false).await;
        lab.drain(&mut out);
    }
    lab.stt.say("Hello?").await;
    for _ in 0..150 {
        lab.frame(false).await;
        lab.drain(&mut out);
    }
    let requests = lab.llm.requests.lock().unwrap();
    assert_eq!(requests.len(), 2);
    let system = requests[0].system.as_deref().unwrap();
    assert!(system.contains("[END_CALL]"), "{system}");
    assert!(system.contains("[TRANSFER"), "an agent with a transfer number is offered transfers");
    assert!(!system.contains("[SEND_SMS"), "{system}");
    let asked = requests[1].messages.last().unwrap().text();
    assert!(
        asked.contains("text message you asked for was NOT sent") && asked.ends_with("Hello?"),
        "{asked}"
    );
}

/// A transfer the carrier cannot be asked to make (here: no public URL for its callbacks) does
/// not strand the caller: after the hand-off line, the model is told it failed and speaks again.
#[tokio::test]
async fn a_transfer_that_cannot_be_placed_is_reported_to_the_model_which_speaks_again() {
    let mut lab = lab(json!({"welcome_message": "Hi.", "transfer_number": "+447446466000"})).await;
    lab.llm.replies.lock().unwrap().extend([
        "One moment. [TRANSFER:]".to_owned(),
        "Sorry, nobody is available right now.".to_owned(),
    ]);
    let mut out = Vec::new();
    for _ in 0..10 {
        lab.frame(false).await;
        lab.drain(&mut out);
    }
    lab.stt.say("Can I talk to a person?").await;
    for _ in 0..300 {
        lab.frame(false).await;
        lab.drain(&mut out);
    }
    let requests = lab.llm.requests.lock().unwrap();
    assert_eq!(requests.len(), 2, "the model was asked again after the failed hand-off");
    let asked = requests[1].messages.last().unwrap().text();
    assert_eq!(
        asked,
        "[The transfer to +447446466000 failed: the call could not be connected. Tell the caller and continue.]"
    );
    assert!(requests[1].messages.iter().any(|m| m.text() == "One moment."));
}

/// The engine's own recording read back: per-channel loudness of each 20 ms window.
struct Wav {
    caller: Vec<f64>,
    agent: Vec<f64>,
    duration: Duration,
}

impl Wav {
    fn parse(bytes: &[u8]) -> Self {
        let mut reader = hound::WavReader::new(std::io::Cursor::new(bytes)).unwrap();
        let spec = reader.spec();
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample, spec.sample_format),
            (2, 8000, 16, hound::SampleFormat::Int),
            "a dual-channel 16-bit PCM WAV at 8 kHz"
        );
        let duration = Duration::from_micros(u64::from(reader.duration()) * 125);
        let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        let channel = |offset: usize| -> Vec<f64> {
            let channel: Vec<i16> = samples.iter().skip(offset).step_by(2).copied().collect();
            channel.chunks(160).map(tone::rms).collect()
        };
        Self { caller: channel(0), agent: channel(1), duration }
    }

    /// The 20 ms windows that lie wholly within `from..to`.
    fn windows(track: &[f64], from: Duration, to: Duration) -> &[f64] {
        let first = usize::try_from(from.as_millis().div_ceil(20)).unwrap();
        let last = usize::try_from(to.as_millis() / 20).unwrap().min(track.len());
        &track[first.min(last)..last]
    }

    fn sounds(track: &[f64], from: Duration, to: Duration) -> bool {
        let windows = Self::windows(track, from, to);
        !windows.is_empty() && windows.iter().all(|&rms| rms > 1000.0)
    }

    fn silent(track: &[f64], from: Duration, to: Duration) -> bool {
        Self::windows(track, from, to).iter().all(|&rms| rms < 1.0)
    }
}

/// Allowed error when comparing the recording with what the caller side saw.
const SLACK: Duration = Duration::from_millis(100);

#[tokio::test]
async fn the_engines_recording_holds_both_sides_on_one_clock_and_drops_audio_cut_by_a_barge_in() {
    const GREETING: &str = "Welcome to the bakery, we have a lot of bread to tell you about today.";
    let options = LabOptions { recordings: true, ..LabOptions::default() };
    let mut lab = lab_with(
        json!({"welcome_message": GREETING, "interruption_sensitivity": 100,
               "recording_source": "nixflex", "silence_hangup_seconds": 45}),
        options,
    )
    .await;
    lab.llm.replies.lock().unwrap().push_back("We have rye today.".to_owned());
    let start = lab.clock;
    let mut out = Vec::new();
    // Twilio's timestamps of the frames that carried the caller's speech.
    let mut spoken = Vec::new();
    let speech = Duration::from_millis(1000)..Duration::from_millis(1600);
    while start.elapsed() < Duration::from_millis(2600) {
        let next_frame_at = Duration::from_millis(20 * lab.seq);
        let speaking = speech.contains(&next_frame_at);
        if speaking {
            spoken.push(Duration::from_millis(20 * (lab.seq + 1)));
        }
        lab.frame(speaking).await;
        lab.drain(&mut out);
    }
    lab.stt.say("Do you have rye?").await;
    while start.elapsed() < Duration::from_millis(5000) {
        lab.frame(false).await;
        lab.drain(&mut out);
    }
    lab.send(json!({"event": "stop", "sequenceNumber": "999", "streamSid": "MZ1", "stop": {"accountSid": "AC", "callSid": "CA"}}));
    let hung_up = start.elapsed();
    assert_eq!(lab.session.await.unwrap().map(|r| r.as_str()), Some("caller_hangup"));

    // What the caller side saw, on the same clock (the stream started with the lab's clock).
    let at = |t: Instant| t.duration_since(start);
    // The server answers while processing a frame; the lab reads it when the next one is due.
    let clear = at(out.iter().find(|(_, e, _)| e == "clear").expect("a barge-in").0)
        - Duration::from_millis(20);
    let media: Vec<Duration> =
        out.iter().filter(|(_, e, _)| e == "media").map(|(t, _, _)| at(*t)).collect();
    let greeting_from = media[0];
    let reply: Vec<Duration> = media.iter().copied().filter(|t| *t > clear).collect();
    let (reply_from, reply_to) = (reply[0], *reply.last().unwrap());
    let (speech_from, speech_to) = (spoken[0], *spoken.last().unwrap() + Duration::from_millis(20));
    assert!(clear > speech_from && clear < speech_to, "the barge-in came while the caller spoke");

    let call = lab.store.find_call(&lab.call_id.as_str().into()).await.unwrap().unwrap();
    let stored = call.recording.clone().expect("the call has its recording");
    assert_eq!(stored.location, "local:recordings/acct_1/call_1.wav");
    assert_eq!(
        *lab.memory.recording_at_finish.lock().unwrap(),
        [true],
        "the recording was on the call when its final update queued the follow-up"
    );
    let file = lab.recordings_dir.as_ref().unwrap().path().join("recordings/acct_1/call_1.wav");
    let bytes =
        lab.engine.recordings().unwrap().read(&call.account_id, &stored.location).await.unwrap();
    assert_eq!(bytes, std::fs::read(file).unwrap());
    let wav = Wav::parse(&bytes);
    assert!((stored.duration_s.unwrap() - wav.duration.as_secs_f64()).abs() < 1e-9);
    assert!(wav.duration.abs_diff(hung_up) <= SLACK, "{:?} vs {hung_up:?}", wav.duration);

    // The caller's channel: silent, their speech where they spoke it, silent again.
    assert!(Wav::silent(&wav.caller, Duration::ZERO, speech_from.saturating_sub(SLACK)));
    assert!(Wav::sounds(&wav.caller, speech_from + SLACK, speech_to - SLACK));
    assert!(Wav::silent(&wav.caller, speech_to + SLACK, wav.duration));
    // The agent's channel: the greeting until the clear, nothing of what was queued past it
    // (the pacer sends 60 ms ahead), silence until the reply, the reply, silence.
    assert!(Wav::silent(&wav.agent, Duration::ZERO, greeting_from.saturating_sub(SLACK)));
    assert!(Wav::sounds(&wav.agent, greeting_from + SLACK, clear - SLACK));
    assert!(
        Wav::silent(&wav.agent, clear + Duration::from_millis(20), reply_from - SLACK),
        "the agent channel is silent from the clear to the next turn: {:?}",
        Wav::windows(
            &wav.agent,
            clear - Duration::from_millis(40),
            clear + Duration::from_millis(100)
        )
    );
    assert!(Wav::sounds(&wav.agent, reply_from + SLACK, reply_to - SLACK));
    assert!(Wav::silent(&wav.agent, reply_to + SLACK, wav.duration));
}

/// A short call with some caller speech, then the caller hangs up; returns the lab.
async fn short_call(agent: serde_json::Value, number_settings: NumberSettings) -> Lab {
    let options = LabOptions { recordings: true, number_settings, ..LabOptions::default() };
    let mut lab = lab_with(agent, options).await;
    for n in 0..60 {
        lab.frame((20..40).contains(&n)).await;
    }
    lab.send(json!({"event": "stop", "sequenceNumber": "999", "streamSid": "MZ1", "stop": {"accountSid": "AC", "callSid": "CA"}}));
    (&mut lab.session).await.unwrap();
    lab
}

fn recorded_files(lab: &Lab) -> usize {
    let dir = lab.recordings_dir.as_ref().unwrap().path().join("recordings");
    walk(&dir)
}

fn walk(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.map(|e| e.unwrap().path()).map(|p| if p.is_dir() { walk(&p) } else { 1 }).sum()
}

#[tokio::test]
async fn the_engine_records_nothing_when_recording_is_off_or_left_to_the_carrier() {
    let cases = [
        (
            json!({"welcome_message": "Hi.", "recording_source": "nixflex", "record_call": false}),
            NumberSettings::default(),
            "the agent does not record",
        ),
        (
            json!({"welcome_message": "Hi.", "recording_source": "nixflex"}),
            NumberSettings { record_call: Some(false), ..NumberSettings::default() },
            "the number turns recording off",
        ),
        (
            json!({"welcome_message": "Hi."}),
            NumberSettings::default(),
            "the carrier records (the default source)",
        ),
        (
            json!({"welcome_message": "Hi.", "recording_source": "nixflex"}),
            NumberSettings {
                recording_source: Some(nixflex_core::agent::RecordingSource::Provider),
                ..NumberSettings::default()
            },
            "the number leaves recording to the carrier",
        ),
        // The control: the same call is recorded when the engine is the source.
        (
            json!({"welcome_message": "Hi."}),
            NumberSettings {
                recording_source: Some(nixflex_core::agent::RecordingSource::Nixflex),
                ..NumberSettings::default()
            },
            "recorded",
        ),
    ];
    for (agent, number, case) in cases {
        let lab = short_call(agent, number).await;
        // The next lab pauses the clock afresh.
        tokio::time::resume();
        let call = lab.store.find_call(&lab.call_id.as_str().into()).await.unwrap().unwrap();
        let recorded = case == "recorded";
        assert_eq!(call.recording.is_some(), recorded, "{case}");
        assert_eq!(recorded_files(&lab), usize::from(recorded), "{case}");
    }
}
