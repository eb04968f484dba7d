#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Post-call analysis against the Anthropic emulator through the real client: the model is made
//! to call the analysis tool, and what it answers is checked field by field.

use std::time::Duration;

use nixflex_core::agent::{AgentSettings, ExtractionField, ExtractionType};
use nixflex_core::call::{CallRecord, CallStatus, Direction, TranscriptEntry, TranscriptRole};
use nixflex_engine::analysis::{self, AnalysisError, Sentiment, TOOL_NAME};
use nixflex_providers::llm::anthropic::{AnthropicClient, AnthropicConfig};
use nixflex_testkit::anthropic::{AnthropicEmulator, Fault, Reply};
use secrecy::SecretString;
use serde_json::{Map, Value, json};

fn client(base_url: &str) -> AnthropicClient {
    AnthropicClient::new(AnthropicConfig {
        base_url: base_url.to_owned(),
        api_key: Some(SecretString::from("sk-ant-test")),
        first_byte_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        ..AnthropicConfig::default()
    })
    .unwrap()
}

fn agent() -> AgentSettings {
    let field = |kind, name: &str, choices: Option<Vec<String>>| ExtractionField {
        kind,
        name: name.to_owned(),
        description: format!("the {name}"),
        optional: true,
        choices,
        format_example: None,
    };
    AgentSettings {
        name: "Bistro".to_owned(),
        data_extraction_fields: vec![
            field(ExtractionType::Number, "party_size", None),
            field(ExtractionType::Text, "date", None),
            field(
                ExtractionType::Selector,
                "seating",
                Some(vec!["Inside".into(), "Terrace".into()]),
            ),
            field(ExtractionType::Boolean, "allergies", None),
        ],
        ..AgentSettings::default()
    }
}

fn call() -> CallRecord {
    let now = chrono::Utc::now();
    let line = |role, text: &str| TranscriptEntry { role, text: text.to_owned(), timestamp_ms: 0 };
    CallRecord {
        call_id: "call_000000000000000000000001".into(),
        account_id: "acct_0000000000000001".into(),
        agent_id: None,
        direction: Direction::Inbound,
        from_number: "+447386172392".to_owned(),
        to_number: "+447446466847".to_owned(),
        twilio_call_sid: None,
        call_status: CallStatus::Completed,
        ended_reason: None,
        started_at: now,
        answered_at: Some(now),
        ended_at: Some(now),
        duration_seconds: Some(42),
        transcript: vec![
            line(TranscriptRole::Agent, "Bistro, how can I help?"),
            line(
                TranscriptRole::Caller,
                "A table for four on Friday, on the terrace please. I'm Ann.",
            ),
        ],
        turns: Vec::new(),
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
        stream_token_hash: None,
        created_at: now,
        updated_at: now,
    }
}

#[tokio::test]
async fn the_model_fills_the_tool_and_wrong_types_and_missing_fields_become_null() {
    let emulator = AnthropicEmulator::start().await.unwrap();
    emulator.push_reply(Reply::tool_call(
        TOOL_NAME,
        json!({
            "call_summary": "Ann booked a table for four on Friday on the terrace.",
            "caller_sentiment": "happy",
            "call_successful": true,
            "caller_name": "Ann",
            "call_reason": "table booking",
            "last_call": "a table for four on Friday",
            "extracted_data": {"party_size": "4", "date": "Friday", "seating": "terrace", "invented": 1},
        }),
    ));
    let llm = client(&emulator.base_url());
    let agent = agent();
    let found =
        analysis::analyse(&llm, analysis::request(&agent, &call()), &agent.data_extraction_fields)
            .await
            .unwrap();
    assert_eq!(found.caller_sentiment, Some(Sentiment::Happy));
    assert_eq!(found.call_successful, Some(true));
    assert_eq!(found.caller_name.as_deref(), Some("Ann"));
    assert_eq!(found.open_item, None);
    assert_eq!(
        Value::Object(found.extracted_data),
        json!({"party_size": null, "date": "Friday", "seating": "Terrace", "allergies": null})
    );
    // What the model was sent: the transcript, and the tool it had to call.
    let sent = &emulator.requests()[0].body;
    assert_eq!(sent["tool_choice"], json!({"type": "tool", "name": TOOL_NAME}));
    assert_eq!(sent["tools"][0]["name"], TOOL_NAME);
    assert!(sent["messages"][0]["content"].to_string().contains("terrace please"));
}

#[tokio::test]
async fn a_reply_without_the_tool_and_a_provider_failure_are_errors_not_guesses() {
    let emulator = AnthropicEmulator::start().await.unwrap();
    let llm = client(&emulator.base_url());
    let agent = agent();
    emulator.push_reply(Reply::text("The caller wanted a table."));
    let outcome =
        analysis::analyse(&llm, analysis::request(&agent, &call()), &agent.data_extraction_fields)
            .await;
    assert!(matches!(outcome, Err(AnalysisError::NoStructuredOutput)), "{outcome:?}");
    emulator.push_fault(Fault::Status(529));
    let outcome =
        analysis::analyse(&llm, analysis::request(&agent, &call()), &agent.data_extraction_fields)
            .await;
    match outcome {
        Err(AnalysisError::Provider(error)) => assert!(error.retryable, "{error}"),
        other => panic!("expected a provider error, got {other:?}"),
    }
}
