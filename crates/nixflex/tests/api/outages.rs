//! Provider outages with a caller on the line (docs/engine.md#provider-outages): each provider
//! (Anthropic and OpenAI-compatible chat, Inworld and OpenAI-compatible speech, Deepgram)
//! under each fault mode (connection refused, 5xx, 429, stall mid-stream, slow first byte,
//! disconnect mid-call). Each test asserts what the caller heard (audio, the carrier's `<Say>`,
//! a `<Dial>`) and what the call record says (`transcript`, `ended_reason`, `provider_events`).

use std::time::{Duration, Instant};

use nixflex::config::{LlmProvider, SttProvider, TtsProvider};
use nixflex_testkit::anthropic::{Fault, Reply, Timing};
use nixflex_testkit::deepgram::Fault as SttFault;
use nixflex_testkit::openai::OpenAiEmulator;
use nixflex_testkit::twilio::callee::Callee;
use nixflex_testkit::twilio::caller::{
    CallEventKind, CallOutcome, CallRecording, CallerEmulator, CallerScript, EndedBy,
};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::engine::CallLab;
use crate::helpers::{Backend, both};

const OUTAGE: &str = "Sorry, I'm having trouble on my side.";
const DESK: &str = "+447700900123";

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A local port nothing listens on: connecting to it is refused.
fn closed_port_url(path: &str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}{path}")
}

/// The call record of `call_sid` once the engine has written its end.
async fn finished(lab: &CallLab, call_sid: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let list: Value = lab.app.get(&lab.key, "/v1/calls?limit=100").await.json().await.unwrap();
        let found = list["calls"]
            .as_array()
            .and_then(|calls| calls.iter().find(|c| c["twilio_call_sid"] == call_sid).cloned());
        if let Some(summary) = found
            && summary["ended_reason"].is_string()
            && summary["ended_at"].is_string()
        {
            let id = summary["call_id"].as_str().unwrap();
            let call: Value =
                lab.app.get(&lab.key, &format!("/v1/calls/{id}")).await.json().await.unwrap();
            return call;
        }
        assert!(Instant::now() < deadline, "the call {call_sid} was never finalised: {list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn agent_lines(call: &Value) -> Vec<String> {
    call["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["role"] == "agent")
        .map(|e| e["text"].as_str().unwrap().to_owned())
        .collect()
}

/// `(stage, provider, event, to)` of each provider event.
fn events(call: &Value) -> Vec<(String, String, String, Option<String>)> {
    call["provider_events"]
        .as_array()
        .unwrap_or_else(|| panic!("provider_events is a list: {call}"))
        .iter()
        .map(|e| {
            (
                e["stage"].as_str().unwrap().to_owned(),
                e["provider"].as_str().unwrap().to_owned(),
                e["event"].as_str().unwrap().to_owned(),
                e["to"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn ev(
    stage: &str,
    provider: &str,
    event: &str,
    to: Option<&str>,
) -> (String, String, String, Option<String>) {
    (stage.to_owned(), provider.to_owned(), event.to_owned(), to.map(str::to_owned))
}

fn says(recording: &CallRecording) -> Vec<String> {
    recording
        .events
        .iter()
        .filter_map(|event| match &event.kind {
            CallEventKind::TwimlSay { text } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn dialed(recording: &CallRecording) -> Vec<String> {
    recording
        .events
        .iter()
        .filter_map(|event| match &event.kind {
            CallEventKind::Dialed { number, .. } => Some(number.clone()),
            _ => None,
        })
        .collect()
}

/// The caller hears the greeting, asks one question and listens to the answer.
fn one_question(question: &str) -> CallerScript {
    CallerScript::new()
        .wait_for_agent_speech(secs(10.0))
        .wait_for_agent_silence(secs(0.6), secs(15.0))
        .say(question, secs(1.0))
        .wait_for_agent_speech(secs(15.0))
        .wait_for_agent_silence(secs(0.6), secs(15.0))
}

/// A lab whose LLM chain is Anthropic → an OpenAI-compatible server, the second answering.
async fn llm_chain_lab(backend: Backend, anthropic_down: bool) -> (CallLab, OpenAiEmulator) {
    let openai = OpenAiEmulator::start().await.unwrap();
    let openai_base = openai.base_url();
    let lab = CallLab::start_with(
        backend,
        json!({"welcome_message": "Hello!", "response_eagerness": 200}),
        |c| {
            c.llm_fallback = vec![LlmProvider::Openai];
            c.openai_base_url = openai_base;
            c.openai_api_key = Some(SecretString::from("sk-openai-test"));
            if anthropic_down {
                c.anthropic_base_url = closed_port_url("");
            }
        },
    )
    .await;
    (lab, openai)
}

/// Item 2 (LLM): for each way Anthropic can fail before the reply starts — connection refused,
/// 5xx twice, 429 twice, a slow first byte, a stall before the first token, a disconnect
/// before the first token — the caller's question is answered by the fallback LLM within the
/// turn, and the record shows the switch.
async fn an_llm_outage_before_the_reply_switches_to_the_fallback_llm(backend: Backend) {
    type Setup = fn(&CallLab);
    let cases: [(&str, Setup, bool); 6] = [
        ("connection refused", |_| {}, true),
        (
            "5xx",
            |lab| {
                lab.llm.push_fault(Fault::Status(503));
                lab.llm.push_fault(Fault::Status(503));
            },
            false,
        ),
        (
            "429",
            |lab| {
                lab.llm.push_fault(Fault::Status(429));
                lab.llm.push_fault(Fault::Status(429));
            },
            false,
        ),
        ("slow first byte", |lab| lab.llm.push_fault(Fault::SlowFirstByte(secs(6.0))), false),
        ("stall", |lab| lab.llm.push_fault(Fault::Stall { after_deltas: 0 }), false),
        (
            "disconnect",
            |lab| {
                lab.llm.push_fault(Fault::Disconnect { after_deltas: 0 });
                lab.llm.push_fault(Fault::Disconnect { after_deltas: 0 });
            },
            false,
        ),
    ];
    for (name, setup, down) in cases {
        let (lab, openai) = llm_chain_lab(backend, down).await;
        setup(&lab);
        lab.stt.push_utterance("Are you open today?");
        openai.push_reply(Reply::text("Yes, until six. Bye! [END_CALL]"));
        let caller = CallerEmulator::new().unwrap();
        let recording =
            caller.place_inbound_call(lab.place(), one_question("Are you open today?")).await;
        assert_eq!(
            recording.outcome,
            CallOutcome::Completed { ended_by: EndedBy::Server },
            "{name}"
        );
        let silence = recording.response_latency_after("Are you open today?").expect(name);
        // Within the turn: the first-event limit (1.7 s) plus the answer itself.
        assert!(silence < secs(3.0), "{name}: {silence:?}");
        let call = finished(&lab, &recording.call_sid).await;
        assert_eq!(agent_lines(&call), ["Hello!", "Yes, until six. Bye!"], "{name}");
        assert_eq!(call["ended_reason"], "completed", "{name}");
        let events = events(&call);
        assert_eq!(
            events.last(),
            Some(&ev("llm", "anthropic", "switched", Some("openai"))),
            "{name}: {events:?}"
        );
        assert_eq!(openai.requests().len(), 1, "{name}");
    }
}

/// Item 1 (LLM): one quick 5xx or 429 is retried at once on the same provider; the caller hears
/// the answer and the record shows the retry, no switch.
async fn a_single_llm_error_is_retried_at_once(backend: Backend) {
    for status in [529, 429] {
        let lab = CallLab::start(
            backend,
            json!({"welcome_message": "Hello!", "response_eagerness": 200}),
        )
        .await;
        lab.llm.push_fault(Fault::Status(status));
        lab.llm.push_reply(Reply::text("Yes, until six. Bye! [END_CALL]"));
        lab.stt.push_utterance("Are you open today?");
        let recording =
            lab.caller.place_inbound_call(lab.place(), one_question("Are you open today?")).await;
        let call = finished(&lab, &recording.call_sid).await;
        assert_eq!(agent_lines(&call), ["Hello!", "Yes, until six. Bye!"], "{status}");
        assert_eq!(events(&call), [ev("llm", "anthropic", "retried", None)], "{status}");
        assert_eq!(lab.llm.requests().len(), 2, "{status}");
    }
}

/// Item 3 + 2: a reply cut mid-stream (error, disconnect or stall after some words) — the caller
/// hears the outage line, not "I didn't catch that"; the next turn goes to the fallback LLM.
async fn a_reply_cut_mid_stream_says_the_outage_line_and_moves_to_the_fallback(backend: Backend) {
    let faults = [
        Fault::MidStreamError { after_deltas: 2, error_type: "overloaded_error".to_owned() },
        Fault::Disconnect { after_deltas: 2 },
        Fault::Stall { after_deltas: 2 },
    ];
    for fault in faults {
        let (lab, openai) = llm_chain_lab(backend, false).await;
        // Deltas arrive one by one, so the cut comes after words were received.
        lab.llm.set_timing(Timing { first_byte: Duration::ZERO, chunk_interval: secs(0.05) });
        lab.llm
            .push_reply_with_fault(Reply::text("Let me see what we have on today."), fault.clone());
        openai.push_reply(Reply::text("We have croissants. Bye! [END_CALL]"));
        lab.stt.push_utterance("What do you have?");
        lab.stt.push_utterance("What do you have?");
        let script = one_question("What do you have?")
            .say("What do you have?", secs(1.0))
            .wait_for_agent_speech(secs(15.0))
            .wait_for_agent_silence(secs(0.6), secs(15.0));
        let recording = lab.caller.place_inbound_call(lab.place(), script).await;
        let call = finished(&lab, &recording.call_sid).await;
        assert_eq!(agent_lines(&call), ["Hello!", OUTAGE, "We have croissants. Bye!"], "{fault:?}");
        assert_eq!(call["ended_reason"], "completed", "{fault:?}");
        assert_eq!(
            events(&call),
            [ev("llm", "anthropic", "switched", Some("openai"))],
            "{fault:?}"
        );
        let silence = recording.response_latency_after("What do you have?").unwrap();
        assert!(silence < secs(5.0), "{fault:?}: {silence:?}");
    }
}

/// Item 3: the LLM is down with no fallback: the outage line after the first failed turn; after
/// the second the call ends politely, `error`, the failing stage and provider on the record.
async fn an_llm_down_without_fallback_says_the_outage_line_then_ends_with_error(backend: Backend) {
    let lab = CallLab::start_with(
        backend,
        json!({"welcome_message": "Hello!", "response_eagerness": 200, "fallback_message": "Sorry, I didn't catch that."}),
        |c| c.anthropic_base_url = closed_port_url(""),
    )
    .await;
    lab.stt.push_utterance("Are you open today?");
    lab.stt.push_utterance("Hello? Are you open?");
    let script = one_question("Are you open today?")
        .say("Hello? Are you open?", secs(1.0))
        .wait_for_agent_speech(secs(15.0))
        .wait_for_agent_silence(secs(0.6), secs(15.0));
    let recording = lab.caller.place_inbound_call(lab.place(), script).await;
    assert_eq!(recording.outcome, CallOutcome::Completed { ended_by: EndedBy::Server });
    assert_eq!(recording.agent_utterances().len(), 3, "greeting and the outage line twice");
    let silence = recording.response_latency_after("Are you open today?").unwrap();
    assert!(silence < secs(2.0), "connection refused is noticed at once: {silence:?}");
    let call = finished(&lab, &recording.call_sid).await;
    assert_eq!(agent_lines(&call), ["Hello!", OUTAGE, OUTAGE]);
    assert_eq!(call["ended_reason"], "error");
    let events = events(&call);
    assert_eq!(
        events,
        [
            ev("llm", "anthropic", "retried", None),
            ev("llm", "anthropic", "failed", None),
            ev("llm", "anthropic", "retried", None),
            ev("llm", "anthropic", "failed", None),
        ]
    );
}

/// Item 3: with a `transfer_number`, two failed turns hand the caller to a person.
async fn an_llm_down_transfers_to_the_transfer_number_after_two_failed_turns(backend: Backend) {
    let lab = CallLab::start_with(
        backend,
        json!({"welcome_message": "Hello!", "response_eagerness": 200, "transfer_number": DESK}),
        |c| c.anthropic_base_url = closed_port_url(""),
    )
    .await;
    lab.twilio.add_callee(DESK, Callee::human(CallerScript::new()));
    lab.stt.push_utterance("Are you open today?");
    lab.stt.push_utterance("Hello? Are you open?");
    let script = one_question("Are you open today?")
        .say("Hello? Are you open?", secs(1.0))
        .wait_for_agent_speech(secs(15.0));
    let caller = CallerEmulator::new().unwrap().with_network(&lab.twilio);
    let recording = caller.place_inbound_call(lab.place(), script).await;
    assert_eq!(dialed(&recording), [DESK]);
    let call = finished(&lab, &recording.call_sid).await;
    assert_eq!(agent_lines(&call), ["Hello!", OUTAGE, OUTAGE]);
    assert_eq!(call["ended_reason"], "transferred");
    assert!(events(&call).contains(&ev("llm", "anthropic", "failed", None)));
}

/// A lab whose speech chain is Inworld → an OpenAI-compatible speech server.
async fn tts_chain_lab(backend: Backend, inworld_down: bool) -> (CallLab, OpenAiEmulator) {
    let openai = OpenAiEmulator::start().await.unwrap();
    let openai_base = openai.base_url();
    let lab = CallLab::start_with(
        backend,
        json!({"welcome_message": "Hello, Bella's Bakery!", "response_eagerness": 200}),
        |c| {
            c.tts_fallback = vec![TtsProvider::Openai];
            c.openai_base_url = openai_base;
            c.openai_api_key = Some(SecretString::from("sk-openai-test"));
            if inworld_down {
                c.inworld_url = closed_port_url("");
            }
        },
    )
    .await;
    (lab, openai)
}

/// Item 2 (TTS): for each way Inworld can fail — connection refused, 5xx twice, a slow first
/// byte, a stall before the first audio, a disconnect before the first audio — the greeting is
/// spoken by the fallback synthesiser and the rest of the call stays on it.
async fn a_speech_outage_switches_to_the_fallback_synthesiser(backend: Backend) {
    type Setup = fn(&CallLab);
    let cases: [(&str, Setup, bool); 5] = [
        ("connection refused", |_| {}, true),
        (
            "5xx",
            |lab| {
                lab._tts.push_fault(Fault::Status(503));
                lab._tts.push_fault(Fault::Status(503));
            },
            false,
        ),
        ("slow first byte", |lab| lab._tts.push_fault(Fault::SlowFirstByte(secs(6.0))), false),
        ("stall", |lab| lab._tts.push_fault(Fault::Stall { after_deltas: 0 }), false),
        (
            "disconnect",
            |lab| {
                lab._tts.push_fault(Fault::Disconnect { after_deltas: 0 });
                lab._tts.push_fault(Fault::Disconnect { after_deltas: 0 });
            },
            false,
        ),
    ];
    for (name, setup, down) in cases {
        let (lab, openai) = tts_chain_lab(backend, down).await;
        setup(&lab);
        lab.stt.push_utterance("Bye.");
        lab.llm.push_reply(Reply::text("Goodbye! [END_CALL]"));
        let recording = lab.caller.place_inbound_call(lab.place(), one_question("Bye.")).await;
        assert_eq!(
            recording.outcome,
            CallOutcome::Completed { ended_by: EndedBy::Server },
            "{name}"
        );
        assert_eq!(recording.agent_utterances().len(), 2, "{name}: greeting and goodbye");
        let first_word = recording.agent_utterances()[0].start;
        assert!(first_word < secs(4.0), "{name}: the greeting started at {first_word:?}");
        let call = finished(&lab, &recording.call_sid).await;
        assert_eq!(agent_lines(&call), ["Hello, Bella's Bakery!", "Goodbye!"], "{name}");
        assert_eq!(
            events(&call).last(),
            Some(&ev("tts", "inworld", "switched", Some("openai-speech"))),
            "{name}"
        );
        let spoken: Vec<String> = openai
            .requests()
            .iter()
            .map(|r| r.body["input"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            spoken,
            ["Hello, Bella's Bakery!", "Goodbye!"],
            "{name}: the rest of the call stays on the fallback"
        );
    }
}

/// Item 4: speech synthesis down entirely, before the greeting: the carrier says the outage
/// line in the agent's language and hangs up; the call ends `error` with the failing stage and
/// provider on the record.
async fn speech_down_before_the_greeting_leaves_the_last_word_to_the_carrier(backend: Backend) {
    let lab =
        CallLab::start_with(backend, json!({"welcome_message": "Hello!", "language": "de"}), |c| {
            c.inworld_url = closed_port_url("")
        })
        .await;
    let caller = CallerEmulator::new().unwrap().with_network(&lab.twilio);
    let recording =
        caller.place_inbound_call(lab.place(), CallerScript::new().silence(secs(10.0))).await;
    // The operator kept the default outage line: the German agent's carrier says it in German.
    assert_eq!(says(&recording), ["Entschuldigung, ich habe gerade ein technisches Problem."]);
    assert!(recording.agent_utterances().is_empty());
    let say_at =
        recording.first_event(|kind| matches!(kind, CallEventKind::TwimlSay { .. })).unwrap();
    let connected = recording
        .first_event(|kind| matches!(kind, CallEventKind::StreamConnected { .. }))
        .unwrap();
    assert!(
        say_at - connected < secs(3.0),
        "the carrier spoke {:?} after the stream opened",
        say_at - connected
    );
    let call_state = lab.twilio.call(&recording.call_sid).unwrap();
    let twiml = call_state.twiml.clone().unwrap();
    assert!(twiml.contains(r#"language="de-DE""#), "{twiml}");
    assert!(twiml.contains("<Hangup"), "{twiml}");
    let call = finished(&lab, &recording.call_sid).await;
    assert_eq!(call["ended_reason"], "error");
    assert_eq!(
        events(&call),
        [
            ev("tts", "inworld", "retried", None),
            ev("tts", "inworld", "failed", None),
            ev("tts", "twilio", "carrier_say", None),
        ]
    );
    assert!(
        lab.llm.requests().iter().all(|r| r.body["tool_choice"]["name"] == "record_call_analysis"),
        "no conversation request: the greeting is fixed text"
    );
}

/// Item 4 with a transfer number: the carrier says the outage line, then dials the desk.
async fn speech_down_mid_call_has_the_carrier_say_the_outage_line_and_dial_the_desk(
    backend: Backend,
) {
    let lab = CallLab::start(
        backend,
        json!({"welcome_message": "Hello!", "response_eagerness": 200, "transfer_number": DESK}),
    )
    .await;
    lab.twilio.add_callee(DESK, Callee::human(CallerScript::new()));
    lab.stt.push_utterance("Are you open today?");
    lab.llm.push_reply(Reply::text("Yes, we are."));
    // The greeting works; the answer's request fails, and so does its retry; then the outage
    // line cannot be spoken either.
    lab._tts.push_fault(Fault::Pass);
    for _ in 0..4 {
        lab._tts.push_fault(Fault::Status(503));
    }
    let caller = CallerEmulator::new().unwrap().with_network(&lab.twilio);
    let recording =
        caller.place_inbound_call(lab.place(), one_question("Are you open today?")).await;
    assert_eq!(says(&recording), [OUTAGE]);
    assert_eq!(dialed(&recording), [DESK]);
    assert_eq!(recording.agent_utterances().len(), 1, "the greeting only");
    let call = finished(&lab, &recording.call_sid).await;
    assert_eq!(call["ended_reason"], "transferred");
    assert_eq!(
        events(&call),
        [
            ev("tts", "inworld", "retried", None),
            ev("tts", "inworld", "failed", None),
            ev("tts", "inworld", "retried", None),
            ev("tts", "inworld", "failed", None),
            ev("tts", "twilio", "carrier_say", None),
        ]
    );
}

/// Item 1 (STT): the recogniser refuses the call's first connection; it reconnects while the
/// caller's words are buffered, and they are answered — nothing is lost, no apology.
async fn recognition_down_at_call_start_reconnects_and_loses_no_words(backend: Backend) {
    let lab =
        CallLab::start(backend, json!({"welcome_message": "Hello!", "response_eagerness": 200}))
            .await;
    lab.stt.push_fault(SttFault::RejectUpgrade(503));
    lab.stt.push_fault(SttFault::RejectUpgrade(503));
    lab.stt.push_utterance("Do you deliver?");
    lab.llm.push_reply(Reply::text("Yes, we do. Bye! [END_CALL]"));
    let recording =
        lab.caller.place_inbound_call(lab.place(), one_question("Do you deliver?")).await;
    let call = finished(&lab, &recording.call_sid).await;
    assert_eq!(agent_lines(&call), ["Hello!", "Yes, we do. Bye!"]);
    assert_eq!(call["ended_reason"], "completed");
    assert_eq!(events(&call), [ev("stt", "deepgram", "reconnected", None)]);
}

/// Item 1 (STT): the recogniser drops mid-call just before the caller speaks; the words spoken
/// during the reconnect are replayed into the new connection and answered.
async fn recognition_lost_mid_call_replays_the_buffered_words(backend: Backend) {
    let lab = CallLab::start(backend, json!({"welcome_message": "Hello!", "response_eagerness": 200, "fallback_message": "Sorry, I didn't catch that."})).await;
    lab.stt.push_fault(SttFault::DisconnectAfterAudio(secs(1.0)));
    lab.stt.push_fault(SttFault::RejectUpgrade(503));
    lab.stt.push_utterance("Do you deliver?");
    lab.llm.push_reply(Reply::text("Yes, we do. Bye! [END_CALL]"));
    let recording =
        lab.caller.place_inbound_call(lab.place(), one_question("Do you deliver?")).await;
    let call = finished(&lab, &recording.call_sid).await;
    assert_eq!(agent_lines(&call), ["Hello!", "Yes, we do. Bye!"]);
    let caller_lines: Vec<&str> = call["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["role"] == "caller")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(caller_lines, ["Do you deliver?"]);
    assert_eq!(events(&call), [ev("stt", "deepgram", "reconnected", None)]);
    assert!(lab.stt.sessions().len() >= 3, "prewarm, the lost one, the replay");
}

/// Item 3 (STT): recognition unreachable for the whole call: the caller hears the outage line,
/// not an answer to words nobody heard; after the second failed round the call ends `error`.
async fn recognition_down_for_good_says_the_outage_line_then_ends(backend: Backend) {
    let lab = CallLab::start_with(
        backend,
        json!({"welcome_message": "Hello!", "response_eagerness": 200}),
        |c| c.deepgram_url = closed_port_url("").replace("http", "ws"),
    )
    .await;
    let script = CallerScript::new()
        .wait_for_agent_speech(secs(10.0))
        .wait_for_agent_silence(secs(0.6), secs(15.0))
        .say("Do you deliver?", secs(1.0))
        .silence(secs(20.0));
    let recording = lab.caller.place_inbound_call(lab.place(), script).await;
    assert_eq!(recording.outcome, CallOutcome::Completed { ended_by: EndedBy::Server });
    let call = finished(&lab, &recording.call_sid).await;
    assert_eq!(agent_lines(&call), ["Hello!", OUTAGE, OUTAGE]);
    assert_eq!(call["ended_reason"], "error");
    assert_eq!(
        events(&call),
        [ev("stt", "deepgram", "failed", None), ev("stt", "deepgram", "failed", None)]
    );
    // Only the post-call analysis may have asked the model (after the call).
    let conversation: Vec<_> = lab
        .llm
        .requests()
        .into_iter()
        .filter(|r| r.body["tool_choice"]["name"] != "record_call_analysis")
        .collect();
    assert!(conversation.is_empty(), "nothing was answered without the caller's words");
}

/// A lab whose recognition chain is Deepgram → an OpenAI-compatible transcription server.
async fn stt_chain_lab(backend: Backend, deepgram_down: bool) -> (CallLab, OpenAiEmulator) {
    let openai = OpenAiEmulator::start().await.unwrap();
    let openai_base = openai.base_url();
    let lab = CallLab::start_with(
        backend,
        json!({"welcome_message": "Hello!", "response_eagerness": 200}),
        |c| {
            c.stt_fallback = vec![SttProvider::Openai];
            c.openai_base_url = openai_base;
            c.openai_api_key = Some(SecretString::from("sk-openai-test"));
            if deepgram_down {
                c.deepgram_url = closed_port_url("").replace("http", "ws");
            }
        },
    )
    .await;
    (lab, openai)
}

/// Items 1–2 (STT): for each way Deepgram fails — refused, 5xx at every connect, upgrades too
/// slow to wait for, a stall that leaves the caller's question without a result, a drop
/// mid-call — the question is transcribed (by the fallback recogniser or a new connection, with
/// the audio replayed) and answered, and the record says which.
async fn a_recognition_outage_moves_to_the_fallback_recogniser_or_reconnects(backend: Backend) {
    type Setup = fn(&CallLab);
    type Events = Vec<(String, String, String, Option<String>)>;
    let switched = || vec![ev("stt", "deepgram", "switched", Some("openai-transcription"))];
    let cases: [(&str, Setup, bool, Events, f64); 5] = [
        ("connection refused", |_| {}, true, switched(), 2.0),
        (
            "5xx",
            |lab| {
                for _ in 0..3 {
                    lab.stt.push_fault(SttFault::RejectUpgrade(503));
                }
            },
            false,
            switched(),
            2.0,
        ),
        // The webhook's pre-warmed connection times out (1.5 s) while the greeting plays.
        (
            "slow upgrade",
            |lab| lab.stt.push_fault(SttFault::SlowUpgrade(secs(5.0))),
            false,
            switched(),
            2.0,
        ),
        // Stalled before the question: its final result is owed 1 s after the caller stops.
        (
            "stall",
            |lab| lab.stt.push_fault(SttFault::StallAfterAudio(secs(1.0))),
            false,
            switched(),
            2.0,
        ),
        (
            "disconnect",
            |lab| {
                lab.stt.push_fault(SttFault::DisconnectAfterAudio(secs(1.0)));
                lab.stt.push_utterance("Do you deliver?");
            },
            false,
            vec![ev("stt", "deepgram", "reconnected", None)],
            2.0,
        ),
    ];
    for (name, setup, down, expected, within) in cases {
        let (lab, openai) = stt_chain_lab(backend, down).await;
        setup(&lab);
        openai.push_transcript("Do you deliver?");
        lab.llm.push_reply(Reply::text("Yes, we do. Bye! [END_CALL]"));
        let recording =
            lab.caller.place_inbound_call(lab.place(), one_question("Do you deliver?")).await;
        let call = finished(&lab, &recording.call_sid).await;
        assert_eq!(agent_lines(&call), ["Hello!", "Yes, we do. Bye!"], "{name}");
        assert_eq!(call["ended_reason"], "completed", "{name}");
        assert_eq!(events(&call), expected, "{name}");
        let caller_lines: Vec<&str> = call["transcript"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["role"] == "caller")
            .map(|e| e["text"].as_str().unwrap())
            .collect();
        assert_eq!(caller_lines, ["Do you deliver?"], "{name}");
        // Silence after the question: the end-of-turn wait, the switch (a stall is noticed
        // 1.5 s after the caller stops), the transcription and the answer.
        let silence = recording.response_latency_after("Do you deliver?").expect(name);
        assert!(silence < secs(within), "{name}: {silence:?}");
        let transcribed = openai.transcription_requests();
        if expected == switched() {
            assert_eq!(transcribed.len(), 1, "{name}: {transcribed:?}");
            assert_eq!(transcribed[0].answered.as_deref(), Some("Do you deliver?"), "{name}");
        } else {
            assert!(transcribed.is_empty(), "{name}: {transcribed:?}");
        }
    }
}

/// Item 1 (STT): without a fallback, a recogniser that stalls (connected, but no result after
/// the caller stopped) is replaced by a new connection and the question is replayed into it.
async fn a_stalled_recogniser_is_reconnected_and_the_question_replayed(backend: Backend) {
    let lab =
        CallLab::start(backend, json!({"welcome_message": "Hello!", "response_eagerness": 200}))
            .await;
    lab.stt.push_fault(SttFault::StallAfterAudio(secs(1.0)));
    // The stalled connection takes the first scripted utterance with it.
    lab.stt.push_utterance("Do you deliver?");
    lab.stt.push_utterance("Do you deliver?");
    lab.llm.push_reply(Reply::text("Yes, we do. Bye! [END_CALL]"));
    let recording =
        lab.caller.place_inbound_call(lab.place(), one_question("Do you deliver?")).await;
    let call = finished(&lab, &recording.call_sid).await;
    assert_eq!(agent_lines(&call), ["Hello!", "Yes, we do. Bye!"]);
    let found = events(&call);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].1.as_str(), found[0].2.as_str()), ("deepgram", "reconnected"));
    assert_eq!(call["provider_events"][0]["error"], "timed out", "{call}");
    let silence = recording.response_latency_after("Do you deliver?").unwrap();
    assert!(silence < secs(2.0), "{silence:?}");
}

both!(
    a_recognition_outage_moves_to_the_fallback_recogniser_or_reconnects,
    a_stalled_recogniser_is_reconnected_and_the_question_replayed,
    an_llm_outage_before_the_reply_switches_to_the_fallback_llm,
    a_single_llm_error_is_retried_at_once,
    a_reply_cut_mid_stream_says_the_outage_line_and_moves_to_the_fallback,
    an_llm_down_without_fallback_says_the_outage_line_then_ends_with_error,
    an_llm_down_transfers_to_the_transfer_number_after_two_failed_turns,
    a_speech_outage_switches_to_the_fallback_synthesiser,
    speech_down_before_the_greeting_leaves_the_last_word_to_the_carrier,
    speech_down_mid_call_has_the_carrier_say_the_outage_line_and_dial_the_desk,
    recognition_down_at_call_start_reconnects_and_loses_no_words,
    recognition_lost_mid_call_replays_the_buffered_words,
    recognition_down_for_good_says_the_outage_line_then_ends,
);
