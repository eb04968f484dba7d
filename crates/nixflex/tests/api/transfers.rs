//! Transfers end to end (docs/engine.md#transfers): the agent's `[TRANSFER:]` tag; cold — the
//! carrier redirect to `<Dial>`; warm — the caller on hold in a conference while the destination
//! is called and hears the whisper; the emulated destination answering, busy or not answering,
//! and the `/twilio/transfer` callbacks; inbound and outbound calls.

use std::time::Duration;

use nixflex_testkit::anthropic::Reply;
use nixflex_testkit::twilio::callee::Callee;
use nixflex_testkit::twilio::caller::{
    CallEventKind, CallRecording, CallerEmulator, CallerScript, WebhookPurpose,
};
use serde_json::{Value, json};

use crate::engine::CallLab;
use crate::helpers::{Backend, both};

const CALLER: &str = "+447386172392";
const NUMBER: &str = "+14155552671";
const DESK: &str = "+447700900123";
const SALES: &str = "+447700900999";

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn dialed(recording: &CallRecording) -> Vec<(String, String)> {
    recording
        .events
        .iter()
        .filter_map(|event| match &event.kind {
            CallEventKind::Dialed { number, status } => Some((number.clone(), status.clone())),
            _ => None,
        })
        .collect()
}

fn webhook_statuses(recording: &CallRecording, wanted: WebhookPurpose) -> Vec<Option<u16>> {
    recording
        .events
        .iter()
        .filter_map(|event| match &event.kind {
            CallEventKind::Webhook { purpose, status, .. } if *purpose == wanted => Some(*status),
            _ => None,
        })
        .collect()
}

fn transcript(call: &Value) -> Vec<(String, String)> {
    call["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["role"].as_str().unwrap().to_owned(), e["text"].as_str().unwrap().to_owned()))
        .collect()
}

fn entry(role: &str, text: &str) -> (String, String) {
    (role.to_owned(), text.to_owned())
}

/// The caller asks for a person and listens to the hand-off line.
fn asks_for_a_person() -> CallerScript {
    CallerScript::new()
        .wait_for_agent_speech(secs(10.0))
        .wait_for_agent_silence(secs(0.6), secs(15.0))
        .say("Can I speak to a person?", secs(1.2))
        .wait_for_agent_speech(secs(10.0))
}

/// The Twiml the session redirected the live call to.
fn transfer_twiml(lab: &CallLab, call_sid: &str) -> String {
    let call = lab.twilio.call(call_sid).expect("the call is known to the REST emulator");
    call.updates
        .iter()
        .find_map(|form| form.iter().find(|(k, _)| k == "Twiml").map(|(_, v)| v.clone()))
        .expect("the call was redirected with TwiML")
}

/// A bare `[TRANSFER:]` on an inbound call: after the hand-off line, the call is redirected to
/// `<Dial>` the agent's `transfer_number` (10 s, our number as caller ID); the desk answers, the
/// call ends `transferred` with the AI's talk time as its duration — a later status callback
/// with the carrier's whole duration does not change it.
async fn an_answered_cold_transfer_ends_the_call_transferred(backend: Backend) {
    let lab = CallLab::start(
        backend,
        json!({"welcome_message": "Hello, Bella's Bakery!", "response_eagerness": 200,
               "transfer_number": DESK}),
    )
    .await;
    lab.twilio.add_callee(DESK, Callee::human(CallerScript::new()));
    lab.stt.push_utterance("Can I speak to a person?");
    lab.llm.push_reply(Reply::text("Of course, putting you through now. [TRANSFER:]"));
    let caller = CallerEmulator::new().unwrap().with_network(&lab.twilio);
    let recording = caller.place_inbound_call(lab.place(), asks_for_a_person()).await;
    assert!(recording.errors().is_empty(), "{:?}", recording.errors());
    assert_eq!(dialed(&recording), [(DESK.to_owned(), "completed".to_owned())]);
    assert_eq!(webhook_statuses(&recording, WebhookPurpose::DialNumberUrl), [Some(200)]);
    assert_eq!(webhook_statuses(&recording, WebhookPurpose::DialAction), [Some(200)]);
    assert_eq!(
        webhook_statuses(&recording, WebhookPurpose::ConnectAction),
        Vec::<Option<u16>>::new(),
        "the redirect replaced the document: the after-stream URL is not requested"
    );
    let twiml = transfer_twiml(&lab, &recording.call_sid);
    assert!(twiml.contains(r#"timeout="10""#), "{twiml}");
    assert!(twiml.contains(&format!(r#"callerId="{NUMBER}""#)), "{twiml}");
    assert!(twiml.contains(&format!(">{DESK}</Number>")), "{twiml}");
    assert_eq!(recording.agent_utterances().len(), 2, "greeting and hand-off line");

    let call = lab.finished_call().await;
    assert_eq!(call["ended_reason"], "transferred");
    assert_eq!(call["call_status"], "completed");
    assert_eq!(
        transcript(&call),
        [
            entry("agent", "Hello, Bella's Bakery!"),
            entry("caller", "Can I speak to a person?"),
            entry("agent", "Of course, putting you through now."),
        ]
    );
    let duration = call["duration_seconds"].as_i64().unwrap();
    assert!(duration <= recording.duration.as_secs().cast_signed(), "{duration}");
    // Twilio's final status callback reports the carrier's whole call; the AI's part stays.
    let params = [
        ("CallSid", recording.call_sid.as_str()),
        ("AccountSid", lab.number.sid.as_str()),
        ("From", CALLER),
        ("To", NUMBER),
        ("CallStatus", "completed"),
        ("CallDuration", "600"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let answer = lab
        .twilio
        .send_webhook(&format!("{}/twilio/status", lab.app.base), &lab.number.token, &params)
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let after: Value = lab
        .app
        .get(&lab.key, &format!("/v1/calls/{}", call["call_id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(after["duration_seconds"], duration, "billing stopped at the hand-off");
    assert_eq!(after["ended_reason"], "transferred");
    lab.follow_up_ran(call["call_id"].as_str().unwrap()).await;
}

/// `[TRANSFER:+…]` to a number that does not connect: the caller is back with the agent on a new
/// stream of the same call, the model is told why, the caller hears it, and the conversation
/// goes on to its normal end.
async fn transfer_falls_back(backend: Backend, callee: Callee, reason: &str, warm: bool) {
    let lab = CallLab::start(
        backend,
        json!({"welcome_message": "Hello, Bella's Bakery!", "response_eagerness": 200,
               "func_cold_transfer": true,
               "transfer_type": if warm { "warm" } else { "cold" }}),
    )
    .await;
    lab.twilio.add_callee(SALES, callee);
    lab.stt.push_utterance("Can I speak to a person?");
    lab.stt.push_utterance("No thanks, bye.");
    lab.llm.push_reply(Reply::text(format!("Let me get sales for you. [TRANSFER:{SALES}]")));
    lab.llm.push_reply(Reply::text("Sorry, sales did not pick up. Can I take a message?"));
    lab.llm.push_reply(Reply::text("Goodbye! [END_CALL]"));
    let back = CallerScript::new()
        .wait_for_agent_speech(secs(10.0))
        .wait_for_agent_silence(secs(0.6), secs(15.0))
        .say("No thanks, bye.", secs(1.0));
    let script = asks_for_a_person().on_next_stream(back);
    let caller = CallerEmulator::new().unwrap().with_network(&lab.twilio);
    let recording = caller.place_inbound_call(lab.place(), script).await;
    assert!(recording.errors().is_empty(), "{:?}", recording.errors());
    let status = match reason {
        "no answer" => "no-answer",
        _ => "busy",
    };
    if warm {
        assert!(dialed(&recording).is_empty());
        assert_eq!(conference_steps(&recording), ["entered on hold", "left: redirected"]);
        let sales = destination_leg(&lab, SALES).await;
        assert_eq!(sales.final_status, status);
        assert!(sales.recording.is_none());
    } else {
        assert_eq!(dialed(&recording), [(SALES.to_owned(), status.to_owned())]);
    }
    assert!(webhook_statuses(&recording, WebhookPurpose::DialNumberUrl).is_empty());
    let streams: Vec<Duration> = recording
        .events
        .iter()
        .filter(|e| matches!(e.kind, CallEventKind::StreamConnected { .. }))
        .map(|e| e.at)
        .collect();
    assert_eq!(streams.len(), 2, "the caller came back on a new stream");
    // The caller heard the agent again on the new stream (the apology, then the goodbye).
    let heard_again = recording.agent_utterances().iter().filter(|u| u.start > streams[1]).count();
    assert!(heard_again >= 1, "{:?}", recording.agent_utterances());

    let call = lab.finished_call().await;
    assert_eq!(call["ended_reason"], "completed");
    assert_eq!(
        transcript(&call),
        [
            entry("agent", "Hello, Bella's Bakery!"),
            entry("caller", "Can I speak to a person?"),
            entry("agent", "Let me get sales for you."),
            entry("agent", "Sorry, sales did not pick up. Can I take a message?"),
            entry("caller", "No thanks, bye."),
            entry("agent", "Goodbye!"),
        ]
    );
    let calls: Value = lab.app.get(&lab.key, "/v1/calls").await.json().await.unwrap();
    assert_eq!(calls["count"], 1, "one call throughout: {calls}");
    // The model got the conversation so far and the note, before it spoke again.
    let requests = lab.llm.requests();
    let second = requests[1].body["messages"].to_string();
    let note = format!("[The transfer to {SALES} failed: {reason}. Tell the caller and continue.]");
    assert!(second.contains(&note), "{second}");
    assert!(second.contains("Let me get sales for you."), "{second}");
    let third = requests[2].body["messages"].to_string();
    assert!(third.contains(&note) && third.contains("No thanks, bye."), "{third}");
}

async fn an_unanswered_transfer_to_a_tagged_number_returns_the_caller_to_the_agent(
    backend: Backend,
) {
    Box::pin(transfer_falls_back(
        backend,
        Callee::NoAnswer { ring_for: secs(0.2) },
        "no answer",
        false,
    ))
    .await;
}

async fn a_busy_transfer_returns_the_caller_to_the_agent(backend: Backend) {
    Box::pin(transfer_falls_back(backend, Callee::Busy, "the line was busy", false)).await;
}

/// An outbound call is transferred like an inbound one.
async fn an_outbound_call_is_transferred(backend: Backend) {
    const CALLEE: &str = "+447386172300";
    let lab =
        CallLab::start(backend, json!({"response_eagerness": 200, "transfer_number": DESK})).await;
    lab.twilio.add_callee(DESK, Callee::human(CallerScript::new()));
    lab.stt.push_utterance("Hello, can I talk to someone about my order?");
    lab.llm.push_reply(Reply::text("Sure, connecting you to the desk. [TRANSFER:]"));
    lab.twilio.add_callee(
        CALLEE,
        Callee::human(
            CallerScript::new()
                .silence(secs(0.3))
                .say("Hello, can I talk to someone about my order?", secs(1.2))
                .wait_for_agent_speech(secs(10.0)),
        ),
    );
    let response = lab
        .app
        .post(
            &lab.key,
            "/v1/calls/outbound",
            json!({"agent_id": lab.agent_id, "to_number": CALLEE, "prompt": "Follow up on the order."}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let call_id = created["call_id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let call = loop {
        let call: Value =
            lab.app.get(&lab.key, &format!("/v1/calls/{call_id}")).await.json().await.unwrap();
        if call["ended_reason"].is_string() {
            break call;
        }
        assert!(std::time::Instant::now() < deadline, "never ended: {call}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(call["ended_reason"], "transferred", "{call}");
    assert_eq!(call["direction"], "outbound");
    let sid = call["twilio_call_sid"].as_str().unwrap();
    let run = lab.twilio.callee_run(sid, Duration::from_secs(20)).await.expect("callee ran");
    let recording = run.recording.expect("answered");
    assert_eq!(dialed(&recording), [(DESK.to_owned(), "completed".to_owned())]);
    assert!(transfer_twiml(&lab, sid).contains(&format!(r#"callerId="{NUMBER}""#)));
}

/// A transfer callback names a call by id, but only the call whose carrier SID the request
/// carries is touched: a guessed `call_id` with another `CallSid` changes nothing.
async fn a_transfer_callback_for_another_call_changes_nothing(backend: Backend) {
    let lab = CallLab::start(backend, json!({"welcome_message": "Hi!"})).await;
    let caller = CallerEmulator::new().unwrap().with_network(&lab.twilio);
    let recording = caller
        .place_inbound_call(
            lab.place(),
            CallerScript::new()
                .wait_for_agent_speech(secs(10.0))
                .wait_for_agent_silence(secs(0.3), secs(10.0))
                .hang_up(),
        )
        .await;
    let call = lab.finished_call().await;
    let call_id = call["call_id"].as_str().unwrap();
    assert_eq!(call["ended_reason"], "caller_hangup");
    let params = [
        ("CallSid", format!("CA{}", "9".repeat(32))),
        ("AccountSid", lab.number.sid.clone()),
        ("From", CALLER.to_owned()),
        ("To", NUMBER.to_owned()),
        ("DialCallStatus", "no-answer".to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let url = format!("{}/twilio/transfer?call_id={call_id}&number=%2B447700900123", lab.app.base);
    let answer = lab.twilio.send_webhook(&url, &lab.number.token, &params).await.unwrap();
    assert_eq!(answer.status(), 200);
    let body = answer.text().await.unwrap();
    assert!(body.contains("<Hangup") && !body.contains("<Stream"), "{body}");
    // With the right SID, an ended call is not reconnected either.
    let mut params = params;
    params[0].1.clone_from(&recording.call_sid);
    let answer = lab.twilio.send_webhook(&url, &lab.number.token, &params).await.unwrap();
    let body = answer.text().await.unwrap();
    assert!(body.contains("<Hangup") && !body.contains("<Stream"), "{body}");
    let after: Value =
        lab.app.get(&lab.key, &format!("/v1/calls/{call_id}")).await.json().await.unwrap();
    assert_eq!(after["ended_reason"], "caller_hangup");
}

/// A warm transfer's callbacks name the call by our id and prove themselves with the one-time
/// token: a forged `warm-answered` or `warm-status` for a live call whose token it does not know
/// neither transfers it nor pulls it anywhere.
async fn a_warm_transfer_callback_without_the_calls_token_changes_nothing(backend: Backend) {
    let lab = CallLab::start(backend, json!({"welcome_message": "Hi!"})).await;
    let caller = CallerEmulator::new().unwrap().with_network(&lab.twilio);
    let live = caller.start_inbound_call(
        lab.place(),
        CallerScript::new()
            .wait_for_agent_speech(secs(10.0))
            .wait_for_agent_silence(secs(0.3), secs(10.0)),
    );
    // The caller stays on the line (until `hang_up`) once the greeting has played.
    let deadline = tokio::time::Instant::now() + secs(20.0);
    let call_id = loop {
        let calls: Value = lab.app.get(&lab.key, "/v1/calls").await.json().await.unwrap();
        let answered =
            calls["calls"].as_array().unwrap().iter().find(|c| {
                c["twilio_call_sid"] == live.call_sid() && c["call_status"] == "in-progress"
            });
        if let Some(call) = answered {
            break call["call_id"].as_str().unwrap().to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "the call never went live: {calls}");
        tokio::time::sleep(secs(0.05)).await;
    };
    for (event, status) in [("warm-answered", "in-progress"), ("warm-status", "no-answer")] {
        let params = [
            ("CallSid", format!("CA{}", "7".repeat(32))),
            ("AccountSid", lab.number.sid.clone()),
            ("From", NUMBER.to_owned()),
            ("To", DESK.to_owned()),
            ("CallStatus", status.to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v));
        let url = format!(
            "{}/twilio/transfer?call_id={call_id}&number=%2B447700900123&event={event}&token=guess",
            lab.app.base
        );
        let answer = lab.twilio.send_webhook(&url, &lab.number.token, &params).await.unwrap();
        assert_eq!(answer.status(), 200);
        let body = answer.text().await.unwrap();
        assert!(!body.contains("<Conference") && !body.contains("<Stream"), "{event}: {body}");
    }
    assert!(
        lab.twilio.call(live.call_sid()).unwrap().updates.is_empty(),
        "the live call was not redirected"
    );
    live.hang_up();
    let recording = live.finish().await.unwrap();
    assert!(recording.errors().is_empty(), "{:?}", recording.errors());
    let call = lab.finished_call().await;
    assert_eq!(call["ended_reason"], "caller_hangup");
}

fn whisper_plays(recording: &CallRecording) -> Vec<(String, Option<u16>, usize)> {
    recording
        .events
        .iter()
        .filter_map(|event| match &event.kind {
            CallEventKind::PlayedToCallee { url, status, bytes } => {
                Some((url.clone(), *status, *bytes))
            }
            _ => None,
        })
        .collect()
}

/// The conference steps of a leg, in order: `entered(on hold)`, `talking`, `left(why)`.
fn conference_steps(recording: &CallRecording) -> Vec<String> {
    recording
        .events
        .iter()
        .filter_map(|event| match &event.kind {
            CallEventKind::ConferenceEntered { on_hold, .. } => {
                Some(if *on_hold { "entered on hold".to_owned() } else { "entered".to_owned() })
            }
            CallEventKind::ConferenceTalking { .. } => Some("talking".to_owned()),
            CallEventKind::ConferenceLeft { why, .. } => Some(format!("left: {why}")),
            _ => None,
        })
        .collect()
}

/// The destination leg's side of a warm transfer, once it has ended.
async fn destination_leg(lab: &CallLab, number: &str) -> nixflex_testkit::twilio::CalleeRun {
    let deadline = tokio::time::Instant::now() + secs(20.0);
    loop {
        if let Some(run) = lab.twilio.callee_runs().await.into_iter().find(|r| r.to == number) {
            return run;
        }
        assert!(tokio::time::Instant::now() < deadline, "the destination was never called");
        tokio::time::sleep(secs(0.02)).await;
    }
}

fn spoken(lab: &CallLab) -> String {
    lab._tts.requests().iter().map(|r| r.body.to_string()).collect::<Vec<_>>().join("\n")
}

/// A warm transfer with the agent's `transfer_whisper`: after the hand-off line the caller waits
/// on hold in the call's conference while the desk is called (10 s, our number as caller ID);
/// when the desk answers it hears the whisper in the agent's voice (audio from the server,
/// synthesised by the agent's TTS), then enters the conference, which starts: the caller is
/// taken off hold and the two talk; the call ends `transferred`. The whisper's URL works while
/// the transfer is live only.
async fn a_warm_transfer_whispers_the_agents_briefing_to_the_destination(backend: Backend) {
    let lab = CallLab::start(
        backend,
        json!({"welcome_message": "Hello, Bella's Bakery!", "response_eagerness": 200,
               "transfer_number": DESK, "transfer_type": "warm",
               "transfer_whisper": "A caller wants a refund for order 1234."}),
    )
    .await;
    lab.twilio.add_callee(DESK, Callee::human(CallerScript::new()));
    lab.stt.push_utterance("Can I speak to a person?");
    lab.llm.push_reply(Reply::text("Of course, putting you through now. [TRANSFER:]"));
    let caller = CallerEmulator::new().unwrap().with_network(&lab.twilio);
    let recording = caller.place_inbound_call(lab.place(), asks_for_a_person()).await;
    assert!(recording.errors().is_empty(), "{:?}", recording.errors());
    let hold = transfer_twiml(&lab, &recording.call_sid);
    assert!(hold.contains(r#"startConferenceOnEnter="false""#), "{hold}");
    assert!(
        !hold.contains("<Number"),
        "a warm transfer does not <Dial> the desk from the caller's leg: {hold}"
    );
    assert_eq!(
        conference_steps(&recording),
        ["entered on hold", "talking", "left: conference-ended"],
        "{:?}",
        recording.events
    );
    assert_eq!(
        webhook_statuses(&recording, WebhookPurpose::DialAction),
        [Some(200)],
        "the caller's <Dial action> after the conference"
    );
    assert!(dialed(&recording).is_empty());

    let desk = destination_leg(&lab, DESK).await;
    let desk_call = lab.twilio.call(&desk.call_sid).unwrap();
    let param = |name: &str| {
        desk_call.create_params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    };
    assert_eq!(param("From").as_deref(), Some(NUMBER), "the business number is shown");
    assert_eq!(param("Timeout").as_deref(), Some("10"));
    let desk_side = desk.recording.expect("the desk answered");
    let plays = whisper_plays(&desk_side);
    assert_eq!(plays.len(), 1, "{:?}", desk_side.events);
    let (url, status, bytes) = &plays[0];
    assert_eq!(*status, Some(200));
    assert!(*bytes > 44 + 1600, "a WAV with audio: {bytes} bytes");
    assert_eq!(conference_steps(&desk_side), ["entered", "talking", "left: talked"]);
    let whispered_at = desk_side
        .events
        .iter()
        .find(|e| matches!(e.kind, CallEventKind::PlayedToCallee { .. }))
        .unwrap()
        .at;
    let entered_at = desk_side
        .events
        .iter()
        .find(|e| matches!(e.kind, CallEventKind::ConferenceEntered { .. }))
        .unwrap()
        .at;
    assert!(whispered_at <= entered_at, "the whisper is heard before the caller is joined");
    assert!(spoken(&lab).contains("A caller wants a refund for order 1234."));
    let call = lab.finished_call().await;
    assert_eq!(call["ended_reason"], "transferred");
    // Spent: the call has ended.
    let again = reqwest::get(url).await.unwrap();
    assert_eq!(again.status(), 404);
    let guessed = reqwest::get(format!(
        "{}/twilio/whisper?call_id={}&token=guess",
        lab.app.base,
        call["call_id"].as_str().unwrap()
    ))
    .await
    .unwrap();
    assert_eq!(guessed.status(), 404);
}

/// Without `transfer_whisper`, the model writes the briefing from the conversation.
async fn a_warm_transfer_without_a_whisper_has_the_model_write_one(backend: Backend) {
    let lab = CallLab::start(
        backend,
        json!({"welcome_message": "Hello, Bella's Bakery!", "response_eagerness": 200,
               "transfer_number": DESK, "transfer_type": "warm"}),
    )
    .await;
    lab.twilio.add_callee(DESK, Callee::human(CallerScript::new()));
    lab.stt.push_utterance("Can I speak to a person?");
    lab.llm.push_reply(Reply::text("Of course, putting you through now. [TRANSFER:]"));
    lab.llm.push_reply(Reply::text("The caller would like to speak to a person."));
    let caller = CallerEmulator::new().unwrap().with_network(&lab.twilio);
    let recording = caller.place_inbound_call(lab.place(), asks_for_a_person()).await;
    assert!(recording.errors().is_empty(), "{:?}", recording.errors());
    let desk_side = destination_leg(&lab, DESK).await.recording.expect("the desk answered");
    let plays = whisper_plays(&desk_side);
    assert_eq!(plays.len(), 1);
    assert_eq!(plays[0].1, Some(200));
    let requests = lab.llm.requests();
    let briefing = requests[1].body.to_string();
    assert!(
        briefing.contains("briefing a colleague")
            && briefing.contains("Caller: Can I speak to a person?"),
        "{briefing}"
    );
    assert!(spoken(&lab).contains("The caller would like to speak to a person."));
    assert_eq!(lab.finished_call().await["ended_reason"], "transferred");
}

/// A warm transfer nobody answers: the caller, on hold in the conference, is brought back to the
/// agent on a new stream of the same call (the destination leg's final status redirects the
/// live call), and the agent tells them.
async fn an_unanswered_warm_transfer_takes_the_caller_off_hold_back_to_the_agent(backend: Backend) {
    Box::pin(transfer_falls_back(
        backend,
        Callee::NoAnswer { ring_for: secs(0.2) },
        "no answer",
        true,
    ))
    .await;
}

async fn a_busy_warm_transfer_takes_the_caller_back_to_the_agent(backend: Backend) {
    Box::pin(transfer_falls_back(backend, Callee::Busy, "the line was busy", true)).await;
}

both!(
    a_warm_transfer_callback_without_the_calls_token_changes_nothing,
    a_warm_transfer_whispers_the_agents_briefing_to_the_destination,
    an_unanswered_warm_transfer_takes_the_caller_off_hold_back_to_the_agent,
    a_busy_warm_transfer_takes_the_caller_back_to_the_agent,
    a_warm_transfer_without_a_whisper_has_the_model_write_one,
    an_answered_cold_transfer_ends_the_call_transferred,
    an_unanswered_transfer_to_a_tagged_number_returns_the_caller_to_the_agent,
    a_busy_transfer_returns_the_caller_to_the_agent,
    an_outbound_call_is_transferred,
    a_transfer_callback_for_another_call_changes_nothing,
);
