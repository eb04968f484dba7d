//! `GET /v1/usage` (docs/api.md#usage): the SDK's flat keys and the docs' nested blocks, over
//! calls seeded through the store.

use chrono::{Duration, Utc};
use nixflex_core::call::{CallRecord, CallStatus, Direction, EndedReason};
use serde_json::{Map, Value};

use crate::helpers::{Backend, Key, TestApp, both, expect_error};

/// A call of `key`'s account that started `ago` before now and was connected `connected`
/// seconds (`None`: refused busy at the concurrent-call cap).
fn call(key: &Key, ago: Duration, connected: Option<i64>, direction: Direction) -> CallRecord {
    let at = nixflex_store::now() - ago;
    CallRecord {
        call_id: nixflex_core::ids::new_call_id(),
        account_id: key.account_id.as_str().into(),
        agent_id: None,
        direction,
        from_number: "+447386172301".to_owned(),
        to_number: "+14155552671".to_owned(),
        twilio_call_sid: Some(format!("CA{:032x}", Utc::now().timestamp_nanos_opt().unwrap_or(0))),
        call_status: if connected.is_some() { CallStatus::Completed } else { CallStatus::Busy },
        ended_reason: Some(if connected.is_some() {
            EndedReason::Completed
        } else {
            EndedReason::ConcurrentCallLimit
        }),
        started_at: at,
        answered_at: connected.map(|_| at),
        ended_at: Some(at + Duration::seconds(connected.unwrap_or(0))),
        duration_seconds: Some(connected.unwrap_or(0)),
        transcript: Vec::new(),
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
        created_at: at,
        updated_at: at,
    }
}

async fn usage(app: &TestApp, key: &Key, query: &str) -> Value {
    let response = app.get(key, &format!("/v1/usage{query}")).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn usage_adds_up_calls_in_both_shapes(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.price_per_minute_usd = 0.02).await;
    let key = app.signup().await;
    let other = app.signup().await;
    let secrets = nixflex::server::load_master_key(&app.config).unwrap();
    let store = nixflex::server::open_store(&app.config, &secrets).await.unwrap();
    // Two overlapping calls a minute ago (90 s and 30 s), an outbound call 40 days ago (600 s),
    // one call refused at the cap, and another account's call.
    let seeded = [
        call(&key, Duration::minutes(3), Some(90), Direction::Inbound),
        call(&key, Duration::minutes(2), Some(30), Direction::Inbound),
        call(&key, Duration::days(40), Some(600), Direction::Outbound),
        call(&key, Duration::minutes(1), None, Direction::Inbound),
        call(&other, Duration::minutes(1), Some(6000), Direction::Inbound),
    ];
    for (i, mut c) in seeded.into_iter().enumerate() {
        c.twilio_call_sid = Some(format!("CA{:032x}", i + 17));
        store.insert_call(&c).await.unwrap();
    }

    let all = usage(&app, &key, "?period=all_time").await;
    assert_eq!(all["plan"], "self_hosted");
    assert_eq!(all["total_calls"], 4);
    assert_eq!(all["total_minutes"], 12.0);
    assert_eq!(all["total_cost"], 0.24);
    assert_eq!(all["rate_limit_per_minute"], 600);
    assert_eq!(all["max_concurrent"], 10);
    assert_eq!(all["rejected_at_cap_this_month"], 1);
    assert_eq!(all["period"], "all_time");
    assert_eq!(all["since"], Value::Null);
    assert_eq!(all["calls"]["total"], 4);
    assert_eq!((&all["calls"]["inbound"], &all["calls"]["outbound"]), (&3.into(), &1.into()));
    assert_eq!(all["calls"]["minutes"], 12.0);
    assert_eq!(all["calls"]["cost_usd"], 0.24);
    assert_eq!(all["sms"]["sent"], 0);
    assert_eq!(all["balance"]["credit_usd"], Value::Null);
    assert_eq!(all["balance"]["auto_topup_enabled"], false);

    // The last 30 days leave out the 40-day-old call; a custom window narrows further.
    let recent = usage(&app, &key, "?period=last_30_days").await;
    assert_eq!((&recent["calls"]["total"], &recent["calls"]["minutes"]), (&3.into(), &2.0.into()));
    assert_eq!(recent["total_calls"], 4, "the SDK's totals are all-time");
    let since =
        (Utc::now() - Duration::seconds(150)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let custom = usage(&app, &key, &format!("?since={}", since.replace('+', "%2B"))).await;
    assert_eq!(custom["period"], "custom");
    assert_eq!((&custom["calls"]["total"], &custom["calls"]["minutes"]), (&2.into(), &0.5.into()));
    // Calls 3 and 2 minutes ago overlapped (90 s from 3 minutes ago): two at once.
    let now = usage(&app, &key, "").await;
    assert_eq!(now["period"], "month_to_date");
    assert_eq!(now["peak_concurrent_this_month"], 2);

    for bad in ["?period=yesterday", "?since=soon", "?since=2026-05-02&until=2026-05-01"] {
        expect_error(app.get(&key, &format!("/v1/usage{bad}")).await, 400, "invalid_request").await;
    }
    // Another account sees only its own calls.
    let theirs = usage(&app, &other, "?period=all_time").await;
    assert_eq!((&theirs["total_calls"], &theirs["total_minutes"]), (&1.into(), &100.0.into()));
}

both!(usage_adds_up_calls_in_both_shapes);
