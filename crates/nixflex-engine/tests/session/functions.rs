//! Custom functions during a call: the model's tool calls are POSTed to a real endpoint on
//! loopback (the testkit's `FunctionEndpoint`), so these labs run on the real clock — under
//! paused time the clock would jump while a request is on the wire.

use nixflex_core::call::{CallRecord, FunctionCallStatus};
use nixflex_pipeline::llm::{ContentPart, Role};
use nixflex_testkit::function::{Answer, FunctionEndpoint};
use serde_json::Value;

use super::*;

const FILLER: &str = "One moment while I check that.";

fn agent_with(functions: Value) -> Value {
    json!({"welcome_message": "Hi.", "interruption_sensitivity": 100, "functions": functions})
}

fn hours_function(url: &str) -> Value {
    json!([{
        "name": "check_hours",
        "description": "Opening hours for a day of the week",
        "url": url,
        "parameters": {"type": "object", "properties": {"day": {"type": "string"}}, "required": ["day"]},
    }])
}

async fn real_time_lab(agent: Value) -> Lab {
    lab_with(agent, LabOptions { paused: false, ..LabOptions::default() }).await
}

fn call_events(calls: &[(&str, &str, Value)], text_before: Option<&str>) -> Vec<LlmEvent> {
    let mut events = Vec::new();
    if let Some(text) = text_before {
        events.push(LlmEvent::TextDelta(text.to_owned()));
    }
    for (id, name, args) in calls {
        events.push(LlmEvent::ToolCall {
            id: (*id).to_owned(),
            name: (*name).to_owned(),
            arguments_json: args.to_string(),
        });
    }
    events.push(LlmEvent::Done { stop_reason: StopReason::ToolUse, usage: Usage::default() });
    events
}

fn text_events(text: &str) -> Vec<LlmEvent> {
    vec![
        LlmEvent::TextDelta(text.to_owned()),
        LlmEvent::Done { stop_reason: StopReason::EndTurn, usage: Usage::default() },
    ]
}

/// What the agent said so far, as recorded on the call.
async fn agent_said(lab: &Lab) -> String {
    let call = lab.store.find_call(&lab.call_id.as_str().into()).await.unwrap().unwrap();
    call.transcript
        .iter()
        .filter(|e| e.role == nixflex_core::call::TranscriptRole::Agent)
        .map(|e| e.text.as_str())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Plays silent frames until the agent has said `needle` (or `limit` passes); returns all it said.
async fn until_said(
    lab: &mut Lab,
    out: &mut Vec<(Instant, String, String)>,
    needle: &str,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        lab.frame(false).await;
        lab.drain(out);
        let said = agent_said(lab).await;
        if said.contains(needle) || Instant::now() > deadline {
            return said;
        }
    }
}

/// Hangs up and returns the final call record.
async fn hang_up(mut lab: Lab) -> CallRecord {
    lab.send(json!({"event": "stop", "sequenceNumber": "99", "streamSid": "MZ1", "stop": {"accountSid": "AC", "callSid": "CA"}}));
    let store = lab.store.clone();
    let call_id = lab.call_id.clone();
    tokio::time::timeout(Duration::from_secs(10), lab.session).await.unwrap().unwrap();
    store.find_call(&call_id.as_str().into()).await.unwrap().unwrap()
}

/// Greets, then the caller asks `question`.
async fn ask(lab: &mut Lab, out: &mut Vec<(Instant, String, String)>, question: &str) {
    until_said(lab, out, "Hi.").await;
    lab.stt.say(question).await;
}

fn tool_results(request: &LlmRequest) -> Vec<(String, String, bool)> {
    request
        .messages
        .iter()
        .flat_map(|m| m.content.iter())
        .filter_map(|part| match part {
            ContentPart::ToolResult { tool_use_id, content, is_error } => {
                Some((tool_use_id.clone(), content.clone(), *is_error))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_called_function_is_posted_signed_with_the_documented_body_and_its_answer_is_spoken() {
    let endpoint = FunctionEndpoint::start().await.unwrap();
    endpoint.push(Answer::result("Monday 9 am to 5 pm"));
    let mut lab = real_time_lab(agent_with(hours_function(&endpoint.url("/hours")))).await;
    lab.llm.scripts.lock().unwrap().extend([
        call_events(&[("toolu_1", "check_hours", json!({"day": "monday"}))], Some("Let me check.")),
        text_events("We open at nine on Monday."),
    ]);
    let mut out = Vec::new();
    ask(&mut lab, &mut out, "When do you open on Monday?").await;
    let said = until_said(&mut lab, &mut out, "We open at nine on Monday.").await;
    assert!(said.contains("Let me check.") && said.contains("We open at nine"), "{said}");
    assert!(!said.contains(FILLER), "a fast function needs no filler: {said}");

    // The request: the documented body, signed with the account's key.
    let received = endpoint.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.path, "/hours");
    let body = request.json();
    assert_eq!(body["name"], json!("check_hours"));
    assert_eq!(body["args"], json!({"day": "monday"}));
    let variables = body["variables"].as_object().unwrap();
    assert_eq!(variables["call_id"], json!("call_1"));
    assert_eq!(variables["caller_phone"], json!(CALLER));
    assert_eq!(variables["business_phone"], json!(NUMBER));
    assert_eq!(variables["call_direction"], json!("inbound"));
    assert_eq!(variables["agent_id"], json!("agent_1"));
    assert_eq!(variables.len(), 14, "{variables:?}");
    let signature = request.header("x-nixflex-signature").unwrap();
    let timestamp: i64 =
        signature.split(',').next().unwrap().trim_start_matches("t=").parse().unwrap();
    assert_eq!(
        signature,
        nixflex_providers::customer::signature_header(
            timestamp,
            &request.body,
            &[KEY_SECRET.to_owned()]
        )
    );
    assert_eq!(request.header("user-agent"), Some("Nixflex-VoiceEngine/1.0"));

    // The model: offered the tool, then given its call and result, in the same turn.
    {
        let requests = lab.llm.requests.lock().unwrap();
        let reply = &requests[requests.len() - 2];
        assert_eq!(reply.tools.len(), 1);
        assert_eq!(reply.tools[0].name, "check_hours");
        assert_eq!(reply.tools[0].input_schema["required"], json!(["day"]));
        let system = reply.system.as_deref().unwrap();
        assert!(system.contains("## FUNCTIONS") && !system.contains("check_hours"), "{system}");
        let follow_up = requests.last().unwrap();
        let n = follow_up.messages.len();
        assert_eq!(follow_up.messages[n - 2].role, Role::Assistant);
        assert_eq!(
            follow_up.messages[n - 2].content,
            vec![
                ContentPart::Text("Let me check.".to_owned()),
                ContentPart::ToolUse {
                    id: "toolu_1".to_owned(),
                    name: "check_hours".to_owned(),
                    input: json!({"day": "monday"})
                },
            ]
        );
        assert_eq!(
            tool_results(follow_up),
            vec![("toolu_1".to_owned(), "Monday 9 am to 5 pm".to_owned(), false)]
        );
    }

    // A later turn still sees the exchange in the history.
    lab.llm.scripts.lock().unwrap().push_back(text_events("You're welcome."));
    lab.stt.say("Thanks.").await;
    until_said(&mut lab, &mut out, "You're welcome.").await;
    {
        let requests = lab.llm.requests.lock().unwrap();
        assert_eq!(tool_results(requests.last().unwrap()).len(), 1);
    }

    let call = hang_up(lab).await;
    assert_eq!(call.function_calls.len(), 1, "{:?}", call.function_calls);
    let log = &call.function_calls[0];
    assert_eq!(log.name, "check_hours");
    assert_eq!(log.arguments, json!({"day": "monday"}));
    assert_eq!(log.status, FunctionCallStatus::Ok);
    assert_eq!(log.http_status, Some(200));
    assert!(log.latency_ms < 1000, "{log:?}");
    assert!(log.at_ms > 0, "{log:?}");
}

#[tokio::test]
async fn a_slow_function_gets_one_filler_line_then_its_answer() {
    let endpoint = FunctionEndpoint::start().await.unwrap();
    endpoint.push(Answer::slow("Open until six.", Duration::from_millis(1800)));
    let mut lab = real_time_lab(agent_with(hours_function(&endpoint.url("/hours")))).await;
    lab.llm.scripts.lock().unwrap().extend([
        call_events(&[("toolu_1", "check_hours", json!({"day": "friday"}))], None),
        text_events("We are open until six on Friday."),
    ]);
    let mut out = Vec::new();
    ask(&mut lab, &mut out, "How late are you open on Friday?").await;
    let said = until_said(&mut lab, &mut out, "until six on Friday").await;
    assert_eq!(said.matches(FILLER).count(), 1, "{said}");
    assert!(
        said.find(FILLER).unwrap() < said.find("until six on Friday").unwrap(),
        "the filler comes first: {said}"
    );
    let call = hang_up(lab).await;
    let log = &call.function_calls[0];
    assert_eq!(log.status, FunctionCallStatus::Ok);
    assert!((1800..3000).contains(&log.latency_ms), "{log:?}");
}

#[tokio::test]
async fn failing_and_silent_functions_are_reported_to_the_model_which_carries_on() {
    let endpoint = FunctionEndpoint::start().await.unwrap();
    endpoint.push(Answer::status(500));
    endpoint.push(Answer::Never);
    let mut lab = real_time_lab(agent_with(hours_function(&endpoint.url("/hours")))).await;
    lab.llm.scripts.lock().unwrap().extend([
        call_events(&[("toolu_1", "check_hours", json!({"day": "monday"}))], None),
        text_events("Sorry, I cannot check that right now."),
        call_events(&[("toolu_2", "check_hours", json!({"day": "sunday"}))], None),
        text_events("I could not look that up either."),
    ]);
    let mut out = Vec::new();
    ask(&mut lab, &mut out, "Monday hours?").await;
    until_said(&mut lab, &mut out, "cannot check that right now").await;
    {
        let requests = lab.llm.requests.lock().unwrap();
        let results = tool_results(requests.last().unwrap());
        assert_eq!(results.len(), 1);
        assert!(results[0].2 && results[0].1.contains("HTTP 500"), "{results:?}");
    }
    lab.stt.say("And Sunday?").await;
    let said = until_said(&mut lab, &mut out, "could not look that up either").await;
    assert!(said.contains("could not look that up either"), "{said}");
    {
        let requests = lab.llm.requests.lock().unwrap();
        let results = tool_results(requests.last().unwrap());
        let (id, content, is_error) = results.last().unwrap();
        assert_eq!(id, "toolu_2");
        assert!(*is_error && content.contains("did not answer in time"), "{content}");
    }
    let call = hang_up(lab).await;
    let logs: Vec<(FunctionCallStatus, Option<u16>)> =
        call.function_calls.iter().map(|l| (l.status, l.http_status)).collect();
    assert_eq!(
        logs,
        vec![(FunctionCallStatus::Error, Some(500)), (FunctionCallStatus::Timeout, None)]
    );
    assert!((3000..3600).contains(&call.function_calls[1].latency_ms), "{:?}", call.function_calls);
    assert_eq!(endpoint.received().len(), 2);
}

#[tokio::test]
async fn a_barge_in_while_a_function_runs_drops_the_turn_but_the_invocation_is_logged() {
    let endpoint = FunctionEndpoint::start().await.unwrap();
    endpoint.push(Answer::slow("Open until six.", Duration::from_millis(2500)));
    let mut lab = real_time_lab(agent_with(hours_function(&endpoint.url("/hours")))).await;
    lab.llm.scripts.lock().unwrap().extend([
        call_events(&[("toolu_1", "check_hours", json!({"day": "friday"}))], None),
        text_events("We are open until six."),
    ]);
    let mut out = Vec::new();
    ask(&mut lab, &mut out, "Friday?").await;
    while endpoint.received().is_empty() {
        lab.frame(false).await;
        lab.drain(&mut out);
    }
    // The filler starts 1 s into the call; the caller talks over it.
    let called = Instant::now();
    while called.elapsed() < Duration::from_millis(1300) {
        lab.frame(false).await;
        lab.drain(&mut out);
    }
    assert!(
        out.iter().any(|(at, e, _)| e == "media" && *at > called + Duration::from_millis(900)),
        "the filler is playing"
    );
    let barge_from = out.len();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !out[barge_from..].iter().any(|(_, e, _)| e == "clear") && Instant::now() < deadline {
        lab.frame(true).await;
        lab.drain(&mut out);
    }
    assert!(out[barge_from..].iter().any(|(_, e, _)| e == "clear"), "the filler was cut");
    // The function still finishes and is logged, but its answer is never asked for or spoken.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        lab.frame(false).await;
        lab.drain(&mut out);
    }
    {
        let requests = lab.llm.requests.lock().unwrap();
        assert_eq!(
            requests.len(),
            1,
            "the turn ended with the barge-in: {:?}",
            requests.last().unwrap().messages
        );
    }
    assert!(!agent_said(&lab).await.contains("open until six"));
    let call = hang_up(lab).await;
    assert_eq!(call.function_calls.len(), 1);
    assert_eq!(call.function_calls[0].status, FunctionCallStatus::Ok);
}

#[tokio::test]
async fn a_call_ending_while_a_function_runs_still_logs_it() {
    let endpoint = FunctionEndpoint::start().await.unwrap();
    endpoint.push(Answer::slow("late", Duration::from_millis(1500)));
    let mut lab = real_time_lab(agent_with(hours_function(&endpoint.url("/hours")))).await;
    lab.llm
        .scripts
        .lock()
        .unwrap()
        .push_back(call_events(&[("toolu_1", "check_hours", json!({"day": "friday"}))], None));
    let mut out = Vec::new();
    ask(&mut lab, &mut out, "Friday?").await;
    assert_eq!(endpoint.wait_for(1, Duration::from_secs(3)).await, 1);
    let call = hang_up(lab).await;
    assert_eq!(call.function_calls.len(), 1, "{:?}", call.function_calls);
    assert_eq!(call.function_calls[0].status, FunctionCallStatus::Ok);
}

#[tokio::test]
async fn two_calls_in_one_response_run_concurrently() {
    let endpoint = FunctionEndpoint::start().await.unwrap();
    endpoint.push(Answer::slow("nine", Duration::from_millis(700)));
    endpoint.push(Answer::slow("ten", Duration::from_millis(700)));
    let mut lab = real_time_lab(agent_with(hours_function(&endpoint.url("/hours")))).await;
    lab.llm.scripts.lock().unwrap().extend([
        call_events(
            &[
                ("toolu_a", "check_hours", json!({"day": "monday"})),
                ("toolu_b", "check_hours", json!({"day": "tuesday"})),
            ],
            None,
        ),
        text_events("Nine on Monday, ten on Tuesday."),
    ]);
    let mut out = Vec::new();
    ask(&mut lab, &mut out, "Monday and Tuesday?").await;
    let said = until_said(&mut lab, &mut out, "ten on Tuesday").await;
    assert!(said.contains("Nine on Monday"), "{said}");
    {
        let requests = lab.llm.requests.lock().unwrap();
        let results: Vec<String> =
            tool_results(requests.last().unwrap()).into_iter().map(|(id, _, _)| id).collect();
        assert_eq!(results, ["toolu_a", "toolu_b"]);
    }
    let call = hang_up(lab).await;
    let [first, second] = call.function_calls.as_slice() else {
        panic!("{:?}", call.function_calls)
    };
    // The second started before the first answered.
    assert!(second.at_ms < first.at_ms + first.latency_ms, "{first:?} {second:?}");
    assert!(first.latency_ms >= 700 && second.latency_ms >= 700);
}

#[tokio::test]
async fn a_model_that_keeps_calling_functions_is_stopped_after_three_rounds() {
    let endpoint = FunctionEndpoint::start().await.unwrap();
    let mut lab = real_time_lab(agent_with(hours_function(&endpoint.url("/hours")))).await;
    for round in 0..5 {
        let id = format!("toolu_{round}");
        lab.llm.scripts.lock().unwrap().push_back(call_events(
            &[(id.as_str(), "check_hours", json!({"day": "monday"}))],
            None,
        ));
    }
    lab.llm.scripts.lock().unwrap().push_back(text_events("Anything else?"));
    let mut out = Vec::new();
    ask(&mut lab, &mut out, "Monday?").await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while lab.llm.requests.lock().unwrap().len() < 4 && Instant::now() < deadline {
        lab.frame(false).await;
        lab.drain(&mut out);
    }
    for _ in 0..25 {
        lab.frame(false).await;
        lab.drain(&mut out);
    }
    // The reply's request, then one per round: the fourth response's call is not run.
    assert_eq!(lab.llm.requests.lock().unwrap().len(), 4);
    assert_eq!(endpoint.received().len(), 3);
    let call = hang_up(lab).await;
    assert_eq!(call.function_calls.len(), 3);
}

#[tokio::test]
async fn a_function_at_a_private_address_is_refused_unless_private_targets_are_allowed() {
    let endpoint = FunctionEndpoint::start().await.unwrap();
    let options =
        LabOptions { paused: false, allow_private_targets: false, ..LabOptions::default() };
    let mut lab = lab_with(agent_with(hours_function(&endpoint.url("/hours"))), options).await;
    lab.llm.scripts.lock().unwrap().extend([
        call_events(&[("toolu_1", "check_hours", json!({"day": "monday"}))], None),
        text_events("I cannot check the hours right now."),
    ]);
    let mut out = Vec::new();
    ask(&mut lab, &mut out, "Monday?").await;
    until_said(&mut lab, &mut out, "cannot check the hours").await;
    {
        let requests = lab.llm.requests.lock().unwrap();
        let results = tool_results(requests.last().unwrap());
        assert!(results[0].2 && results[0].1.contains("not allowed"), "{results:?}");
    }
    let call = hang_up(lab).await;
    assert_eq!(call.function_calls[0].status, FunctionCallStatus::Refused);
    assert!(endpoint.received().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn agents_without_functions_offer_no_tools_and_no_function_rules() {
    let mut lab = lab(json!({"welcome_message": "Hi."})).await;
    let mut out = Vec::new();
    for _ in 0..10 {
        lab.frame(false).await;
        lab.drain(&mut out);
    }
    lab.stt.say("Hello?").await;
    for _ in 0..50 {
        lab.frame(false).await;
        lab.drain(&mut out);
    }
    let requests = lab.llm.requests.lock().unwrap();
    assert!(requests[0].tools.is_empty());
    assert!(!requests[0].system.as_deref().unwrap().contains("## FUNCTIONS"));
}
