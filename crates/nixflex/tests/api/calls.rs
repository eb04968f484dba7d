//! Calls API (docs/api.md#calls; docs/decisions.md#call-object, #transcript-shapes, #outbound-requests). Calls are written by the engine; here
//! they are seeded through the store, and the call-engine tests cover calls made end to end.

use chrono::{Duration, Utc};
use nixflex_core::call::{
    CallRecord, CallStatus, Direction, EndedReason, TranscriptEntry, TranscriptRole, TurnLatency,
};
use serde_json::{Map, Value, json};

use crate::helpers::{Backend, Key, TestApp, both, expect_error};

fn record(key: &Key, i: i64, direction: Direction) -> CallRecord {
    let at = nixflex_store::now() - Duration::minutes(10 - i);
    CallRecord {
        call_id: nixflex_core::ids::new_call_id(),
        account_id: key.account_id.as_str().into(),
        agent_id: Some(
            if i % 2 == 0 { "agent_aaaaaaaaaaaaaaaa" } else { "agent_bbbbbbbbbbbbbbbb" }.into(),
        ),
        direction,
        from_number: format!("+44738617230{i}"),
        to_number: "+14155552671".to_owned(),
        twilio_call_sid: Some(format!(
            "CA{:032x}",
            i + 1000 * key.account_id.len() as i64 + Utc::now().timestamp_subsec_nanos() as i64
        )),
        call_status: if i == 0 { CallStatus::InProgress } else { CallStatus::Completed },
        ended_reason: (i != 0).then_some(EndedReason::Completed),
        started_at: at,
        answered_at: Some(at),
        ended_at: (i != 0).then_some(at + Duration::seconds(30)),
        duration_seconds: (i != 0).then_some(30),
        transcript: vec![
            TranscriptEntry {
                role: TranscriptRole::Agent,
                text: "Hello! How can I help you today?".to_owned(),
                timestamp_ms: 180,
            },
            TranscriptEntry {
                role: TranscriptRole::Caller,
                text: "I'd like a table for two.".to_owned(),
                timestamp_ms: 3100,
            },
        ],
        turns: vec![TurnLatency {
            turn: 1,
            end_of_turn_ms: 200.0,
            stt_ms: 20.0,
            llm_first_token_ms: 150.0,
            tts_first_byte_ms: 90.0,
            engine_overhead_ms: 3.5,
            total_ms: 463.5,
        }],
        avg_latency_ms: Some(463.5),
        recording: None,
        call_summary: None,
        caller_sentiment: None,
        call_successful: None,
        extracted_data: Map::new(),
        voicemail_detected: false,
        campaign_id: (i == 3).then(|| "camp_0123456789abcdef".to_owned()),
        metadata: None,
        cost_usd: None,
        function_calls: Vec::new(),
        provider_events: Vec::new(),
        precall_reject_reason: None,
        amd_result: None,
        voicemail_detection_method: None,
        carrier_details: None,
        stream_token_hash: None,
        created_at: at,
        updated_at: at,
    }
}

async fn seed(app: &TestApp, key: &Key) -> Vec<String> {
    let secrets = nixflex::server::load_master_key(&app.config).unwrap();
    let store = nixflex::server::open_store(&app.config, &secrets).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        let call = record(key, i, if i == 4 { Direction::Outbound } else { Direction::Inbound });
        store.insert_call(&call).await.unwrap();
        ids.push(call.call_id.into_string());
    }
    ids
}

async fn calls_are_listed_without_transcripts_and_fetched_with_them(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let ids = seed(&app, &key).await;
    let page: Value = app.get(&key, "/v1/calls?limit=2").await.json().await.unwrap();
    assert_eq!(
        (page["count"].as_i64(), page["limit"].as_i64(), page["offset"].as_i64()),
        (Some(5), Some(2), Some(0))
    );
    let first = &page["calls"][0];
    assert_eq!(first["call_id"], ids[4].as_str(), "newest first");
    assert!(first.get("transcript").is_none(), "lists leave the transcript out");
    assert_eq!(first["direction"], "outbound");
    assert_eq!(first["bookings"], json!([]));

    let call: Value = app.get(&key, &format!("/v1/calls/{}", ids[1])).await.json().await.unwrap();
    assert_eq!(
        call["transcript"][1],
        json!({"role": "caller", "text": "I'd like a table for two.", "timestamp_ms": 3100})
    );
    assert_eq!(call["latency"][0]["total_ms"], 463.5);
    assert_eq!(call["avg_latency_ms"], 463.5);
    assert_eq!(
        (
            call["call_status"].as_str(),
            call["ended_reason"].as_str(),
            call["duration_seconds"].as_i64()
        ),
        (Some("completed"), Some("completed"), Some(30))
    );
    for field in ["started_at", "answered_at", "ended_at", "created_at"] {
        assert!(call[field].as_str().unwrap().ends_with('Z'), "{field} is UTC ISO-8601");
    }
}

async fn calls_filter_by_every_documented_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    seed(&app, &key).await;
    let count = |query: &'static str| {
        let app = &app;
        let key = &key;
        async move {
            let page: Value =
                app.get(key, &format!("/v1/calls?{query}")).await.json().await.unwrap();
            page["count"].as_i64().unwrap()
        }
    };
    assert_eq!(count("direction=outbound").await, 1);
    assert_eq!(count("agent_id=agent_aaaaaaaaaaaaaaaa").await, 3);
    assert_eq!(count("call_status=in-progress").await, 1);
    assert_eq!(count("from_number=%2B447386172302").await, 1);
    assert_eq!(count("to_number=%2B14155552671").await, 5);
    assert_eq!(count("campaign_id=camp_0123456789abcdef").await, 1);
    assert_eq!(count("voicemail_detected=false").await, 5);
    let since = (Utc::now() - Duration::seconds(510)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let page: Value =
        app.get(&key, &format!("/v1/calls?since={since}")).await.json().await.unwrap();
    assert_eq!(page["count"], 3);
    for (query, field) in [
        ("direction=sideways", "direction"),
        ("call_status=done", "call_status"),
        ("since=yesterday", "since"),
        ("caller_sentiment=angry", "caller_sentiment"),
        ("call_successful=maybe", "call_successful"),
    ] {
        let error = expect_error(
            app.get(&key, &format!("/v1/calls?{query}")).await,
            400,
            "invalid_request",
        )
        .await;
        assert_eq!(error["details"]["field"], field);
    }
    expect_error(app.get(&key, "/v1/calls?from_number=0738").await, 400, "invalid_phone_format")
        .await;
}

async fn calls_are_deleted_one_by_one_or_all_with_confirmation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let stranger = app.signup().await;
    let ids = seed(&app, &key).await;
    seed(&app, &stranger).await;
    let path = format!("/v1/calls/{}", ids[0]);
    expect_error(app.get(&stranger, &path).await, 404, "call_not_found").await;
    expect_error(app.delete(&stranger, &path).await, 404, "call_not_found").await;
    let response = app.delete(&key, &path).await;
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"call_id": ids[0], "deleted": true})
    );
    expect_error(app.get(&key, &path).await, 404, "call_not_found").await;
    // An explicit refusal is honoured.
    let error =
        expect_error(app.delete(&key, "/v1/calls?confirm=false").await, 400, "invalid_request")
            .await;
    assert_eq!(error["details"]["field"], "confirm");
    let response = app.delete(&key, "/v1/calls?confirm=true").await;
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"deleted": true, "calls_deleted": 4, "recordings_deleted": 0, "sms_deleted": 0,
               "deleted_calls": 4, "deleted_messages": 0})
    );
    let mine: Value = app.get(&key, "/v1/calls").await.json().await.unwrap();
    assert_eq!(mine["count"], 0);
    let theirs: Value = app.get(&stranger, "/v1/calls").await.json().await.unwrap();
    assert_eq!(theirs["count"], 5, "only the caller's account is erased");
}

async fn delete_all_calls_as_the_sdk_sends_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let stranger = app.signup().await;
    seed(&app, &key).await;
    seed(&app, &stranger).await;
    // `calls.deleteAll()` sends no confirmation and reads these keys.
    let response = app.delete(&key, "/v1/calls").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"deleted": true, "calls_deleted": 5, "recordings_deleted": 0, "sms_deleted": 0,
               "deleted_calls": 5, "deleted_messages": 0})
    );
    let mine: Value = app.get(&key, "/v1/calls").await.json().await.unwrap();
    assert_eq!(mine["count"], 0);
    let theirs: Value = app.get(&stranger, "/v1/calls").await.json().await.unwrap();
    assert_eq!(theirs["count"], 5, "only the caller's account is erased");
}

async fn calls_carry_the_sdk_fields(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let ids = seed(&app, &key).await;
    let ended: Value = app.get(&key, &format!("/v1/calls/{}", ids[1])).await.json().await.unwrap();
    let started = chrono::DateTime::parse_from_rfc3339(ended["started_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    let ended_ms = chrono::DateTime::parse_from_rfc3339(ended["ended_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    assert_eq!(ended["call_direction"], "inbound");
    assert_eq!(ended["direction"], "inbound");
    assert_eq!(ended["call_type"], "phone_call");
    assert_eq!(ended["start_timestamp"].as_i64(), Some(started));
    assert_eq!(ended["end_timestamp"].as_i64(), Some(ended_ms));
    assert_eq!(ended["duration_ms"].as_i64(), Some(30_000));
    assert_eq!(ended["charged_minutes"].as_f64(), Some(0.5));
    assert_eq!(ended["bookings"], json!([]));
    // The documented shapes stay beside them.
    assert!(ended["transcript"].is_array());
    assert!(ended["answered_at"].as_str().unwrap().ends_with('Z'));
    let outbound: Value =
        app.get(&key, &format!("/v1/calls/{}", ids[4])).await.json().await.unwrap();
    assert_eq!(outbound["call_direction"], "outbound");
    // A live call has no end yet.
    let live: Value = app.get(&key, &format!("/v1/calls/{}", ids[0])).await.json().await.unwrap();
    assert!(live["start_timestamp"].is_i64());
    for field in ["end_timestamp", "duration_ms", "charged_minutes"] {
        assert!(live[field].is_null(), "{field}: {live}");
    }
    // Lists carry them too.
    let page: Value = app.get(&key, "/v1/calls").await.json().await.unwrap();
    assert!(page["calls"].as_array().unwrap().iter().all(|c| c["call_type"] == "phone_call"));
    // And the reference declares them, nullable where they can be null.
    let doc: Value = app
        .request(reqwest::Method::GET, "/v1/openapi.json", None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schema = &doc["components"]["schemas"]["CallObject"];
    let properties = schema["properties"].as_object().unwrap();
    let required: Vec<&str> =
        schema["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for field in ["call_direction", "call_type", "start_timestamp", "bookings"] {
        assert!(properties.contains_key(field) && required.contains(&field), "{field}");
    }
    for field in ["end_timestamp", "duration_ms", "charged_minutes"] {
        let declared = properties[field].to_string();
        assert!(declared.contains("null"), "{field} is nullable: {declared}");
    }
    assert!(!properties["metadata"].to_string().contains("null"), "{}", properties["metadata"]);
}

async fn a_call_without_metadata_has_an_empty_object(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let ids = seed(&app, &key).await;
    let call: Value = app.get(&key, &format!("/v1/calls/{}", ids[1])).await.json().await.unwrap();
    assert_eq!(call["metadata"], json!({}));
    let page: Value = app.get(&key, "/v1/calls").await.json().await.unwrap();
    assert!(page["calls"].as_array().unwrap().iter().all(|c| c["metadata"] == json!({})));
}

async fn calls_are_found_by_their_twilio_sid_within_the_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let stranger = app.signup().await;
    let ids = seed(&app, &key).await;
    let by_id: Value = app.get(&key, &format!("/v1/calls/{}", ids[2])).await.json().await.unwrap();
    let sid = by_id["twilio_call_sid"].as_str().unwrap().to_owned();
    assert!(sid.starts_with("CA"));
    let response = app.get(&key, &format!("/v1/calls/{sid}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), by_id);
    // Another account cannot reach it by SID either.
    expect_error(app.get(&stranger, &format!("/v1/calls/{sid}")).await, 404, "call_not_found")
        .await;
    expect_error(app.delete(&stranger, &format!("/v1/calls/{sid}")).await, 404, "call_not_found")
        .await;
    expect_error(app.get(&key, "/v1/calls/CA1234567890").await, 404, "call_not_found").await;
    // Deleting by SID answers with our id.
    let response = app.delete(&key, &format!("/v1/calls/{sid}")).await;
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"call_id": ids[2], "deleted": true})
    );
    expect_error(app.get(&key, &format!("/v1/calls/{}", ids[2])).await, 404, "call_not_found")
        .await;
    expect_error(app.get(&key, &format!("/v1/calls/{sid}")).await, 404, "call_not_found").await;
}

both!(
    calls_are_listed_without_transcripts_and_fetched_with_them,
    calls_filter_by_every_documented_field,
    calls_are_deleted_one_by_one_or_all_with_confirmation,
    delete_all_calls_as_the_sdk_sends_it,
    calls_carry_the_sdk_fields,
    a_call_without_metadata_has_an_empty_object,
    calls_are_found_by_their_twilio_sid_within_the_account,
);
