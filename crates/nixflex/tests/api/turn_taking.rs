//! Turn-taking in real rooms over real WebSockets (docs/engine.md#turn-taking): the caller
//! emulator mixes noise into everything it sends; the Deepgram emulator, like a real recogniser,
//! transcribes no words from noise.

use std::time::Duration;

use nixflex_testkit::anthropic::{RecordedRequest, Reply};
use nixflex_testkit::corpus::NoiseKind;
use nixflex_testkit::twilio::caller::{CallEventKind, CallRecording, CallerScript};
use serde_json::{Value, json};

use crate::engine::CallLab;
use crate::helpers::{Backend, on_backend};

/// A greeting of about eight seconds of agent speech.
const LONG_GREETING: &str = "Hello and welcome to Bella's Bakery! We bake sourdough, rye, spelt, brioche and focaccia every morning, and on weekends cinnamon buns and a chocolate babka. How can I help you today?";

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn clears(recording: &CallRecording) -> usize {
    recording
        .events
        .iter()
        .filter(|e| matches!(e.kind, CallEventKind::ClearReceived { .. }))
        .count()
}

/// The model's requests during the call (not the post-call analysis).
fn conversation_requests(lab: &CallLab) -> Vec<RecordedRequest> {
    lab.llm
        .requests()
        .into_iter()
        .filter(|r| !r.body["system"].as_str().unwrap_or("").starts_with("You analyse phone calls"))
        .collect()
}

fn lines(call: &Value, role: &str) -> Vec<String> {
    call["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["role"] == role)
        .map(|e| e["text"].as_str().unwrap().to_owned())
        .collect()
}

/// Item 1: steady noise at −24 dBFS from the first frame, the caller silent: the greeting plays
/// to its end, no turn opens, the model is never asked.
async fn noise_on_the_line_neither_interrupts_the_agent_nor_opens_a_turn(backend: Backend) {
    for (kind, seed) in [NoiseKind::White, NoiseKind::Pink, NoiseKind::Brown, NoiseKind::Rumble]
        .into_iter()
        .zip(1..)
    {
        let lab = CallLab::start(backend, json!({"welcome_message": LONG_GREETING})).await;
        let script = CallerScript::new()
            .with_noise(kind, -24.0, seed)
            .with_noise_wobble(3.0, 7.0)
            .wait_for_agent_speech(secs(10.0))
            .wait_for_agent_silence(secs(1.0), secs(20.0))
            .silence(secs(1.5))
            .hang_up();
        let recording = lab.caller.place_inbound_call(lab.place(), script).await;
        let name = kind.name();
        assert_eq!(clears(&recording), 0, "{name}: the greeting was cut off");
        let call = lab.finished_call().await;
        assert_eq!(lines(&call, "agent"), [LONG_GREETING], "{name}");
        assert!(lines(&call, "caller").is_empty(), "{name}: {call}");
        let requests = conversation_requests(&lab);
        assert!(
            requests.is_empty(),
            "{name}: the model was asked: {:?}",
            requests.iter().map(|r| r.body.to_string()).collect::<Vec<_>>()
        );
    }
}

/// Item 2: a caller speaking 10 dB over −24 dBFS noise still interrupts at the default
/// sensitivity, and is answered.
async fn speech_over_noise_still_barges_in_and_is_answered(backend: Backend) {
    let lab = CallLab::start(backend, json!({"welcome_message": LONG_GREETING})).await;
    lab.stt.push_utterance("Stop, just the sourdough please.");
    lab.llm.push_reply(Reply::text("One sourdough it is. [END_CALL]"));
    let script = CallerScript::new().with_noise(NoiseKind::White, -24.0, 7).barge_in_at(
        secs(2.0),
        "Stop, just the sourdough please.",
        secs(1.5),
        -14.0,
    );
    let recording = lab.caller.place_inbound_call(lab.place(), script).await;
    let clear = recording.first_clear_after("Stop, just the sourdough please.").expect("a clear");
    // 650 ms of speech at sensitivity 50, the words already there: no extra wait.
    assert!(clear >= secs(0.6) && clear < secs(1.0), "clear {clear:?} after the caller started");
    let call = lab.finished_call().await;
    assert_eq!(lines(&call, "caller"), ["Stop, just the sourdough please."]);
    assert_eq!(lines(&call, "agent").last().unwrap(), "One sourdough it is.");
}

/// Item 3: "Yeah, okay, right." over the agent at the default sensitivity: the agent talks on,
/// and the backchannel gets no answer of its own; the caller's real question afterwards does.
async fn a_backchannel_over_the_agent_neither_stops_it_nor_is_answered(backend: Backend) {
    let lab = CallLab::start(backend, json!({"welcome_message": LONG_GREETING})).await;
    lab.stt.push_utterance("Yeah, okay, right.");
    lab.stt.push_utterance("Do you have rye today?");
    lab.llm.push_reply(Reply::text("We do. Bye! [END_CALL]"));
    let script = CallerScript::new()
        .with_noise(NoiseKind::Pink, -30.0, 3)
        .barge_in_at(secs(2.0), "Yeah, okay, right.", secs(1.2), -18.0)
        .wait_for_agent_silence(secs(1.0), secs(20.0))
        .say_at("Do you have rye today?", secs(1.2), -18.0);
    let recording = lab.caller.place_inbound_call(lab.place(), script).await;
    assert_eq!(clears(&recording), 0, "the backchannel stopped the agent");
    let call = lab.finished_call().await;
    assert_eq!(lines(&call, "agent"), [LONG_GREETING, "We do. Bye!"].map(str::to_owned));
    assert_eq!(lines(&call, "caller"), ["Do you have rye today?"]);
    let requests = conversation_requests(&lab);
    assert_eq!(
        requests.len(),
        1,
        "only the question was answered: {:?}",
        requests.iter().map(|r| r.body["messages"].to_string()).collect::<Vec<_>>()
    );
    assert!(!requests[0].body.to_string().contains("Yeah, okay"), "{}", requests[0].body);
}

/// Item 1, over a whole call: a distant crowd's voices are voiced, so the detector hears
/// speech in them now and then; only the recogniser's words stop the silence clock, so a silent
/// caller in a crowd is still checked on and the call still ends at `silence_hangup_seconds`.
async fn a_crowd_on_the_line_does_not_keep_a_silent_call_open(backend: Backend) {
    let lab =
        CallLab::start(backend, json!({"welcome_message": "Hello?", "silence_hangup_seconds": 6}))
            .await;
    lab.llm.push_reply(Reply::text("Are you still there?"));
    lab.llm.push_reply(Reply::text("Hello, can you hear me?"));
    let script = CallerScript::new()
        .with_noise(NoiseKind::Babble, -24.0, 5)
        .with_noise_wobble(3.0, 7.0)
        .wait_for_agent_speech(secs(10.0))
        .silence(secs(30.0))
        .hang_up();
    let started = std::time::Instant::now();
    let recording = lab.caller.place_inbound_call(lab.place(), script).await;
    let elapsed = started.elapsed();
    let call = lab.finished_call().await;
    assert_eq!(call["ended_reason"], "silence_timeout", "{call}");
    assert!(elapsed < secs(15.0), "{elapsed:?}");
    // Check-ins at 3 s and 6 s of a 6 s limit: the second is cut by the hang-up.
    assert!(!recording.agent_utterances().is_empty());
    assert!(lines(&call, "caller").is_empty(), "{call}");
    let requests = conversation_requests(&lab);
    assert!(!requests.is_empty(), "the silent caller was never checked on");
    assert!(requests[0].body.to_string().contains("silent"), "{}", requests[0].body);
}

/// A low voice in syllables, 70 Hz: voiced for the engine's detector (its pitch range reaches
/// down to 50 Hz), but below the range the Deepgram emulator hears words in (100–400 Hz) — a
/// voice behind the caller that a recogniser finds no words in, deterministically.
fn voice_behind(duration: Duration, dbfs: f64) -> Vec<i16> {
    let amplitude = 32768.0 * 10f64.powf(dbfs / 20.0) * std::f64::consts::SQRT_2;
    let n = (duration.as_secs_f64() * 8000.0) as usize;
    (0..n)
        .map(|i| {
            // 240 ms of voice, 80 ms apart: shorter than the detector's 200 ms hangover.
            if i % 2560 >= 1920 {
                return 0;
            }
            let t = i as f64 / 8000.0;
            (amplitude * (std::f64::consts::TAU * 70.0 * t).sin()) as i16
        })
        .collect()
}

/// Item 2, the end of a turn in a crowd: a voice behind the caller goes on after their words;
/// the recogniser's endpoint ends the turn, so the agent answers within its usual time instead
/// of after that voice stops, and the voice (no words) does not cut the reply off
/// (docs/engine.md#end-of-turn).
async fn the_recogniser_ends_a_turn_that_a_voice_behind_the_caller_holds_open(backend: Backend) {
    let lab = CallLab::start(backend, json!({"welcome_message": "Hello?"})).await;
    lab.stt.push_utterance("A table for two, please.");
    lab.llm.push_reply(Reply::text("A table for two it is."));
    let script = CallerScript::new()
        .wait_for_agent_speech(secs(10.0))
        .wait_for_agent_silence(secs(0.5), secs(20.0))
        .say_at("A table for two, please.", secs(1.5), -18.0)
        .play("a voice behind the caller", voice_behind(secs(5.0), -22.0))
        .wait_for_agent_silence(secs(0.5), secs(20.0))
        .hang_up();
    let recording = lab.caller.place_inbound_call(lab.place(), script).await;
    let latency =
        recording.response_latency_after("A table for two, please.").expect("the agent answered");
    // The voice went on for 5 s: a turn ended by the detector alone waits for it.
    assert!(latency < secs(1.5), "answered {latency:?} after the caller's words");
    assert_eq!(clears(&recording), 0, "the voice behind the caller cut the reply off");
    let call = lab.finished_call().await;
    assert_eq!(lines(&call, "caller"), ["A table for two, please."], "{call}");
    assert_eq!(lines(&call, "agent").last().unwrap(), "A table for two it is.", "{call}");
}

on_backend!(
    sqlite,
    Sqlite,
    noise_on_the_line_neither_interrupts_the_agent_nor_opens_a_turn,
    speech_over_noise_still_barges_in_and_is_answered,
    a_backchannel_over_the_agent_neither_stops_it_nor_is_answered,
    a_crowd_on_the_line_does_not_keep_a_silent_call_open,
    the_recogniser_ends_a_turn_that_a_voice_behind_the_caller_holds_open,
);
