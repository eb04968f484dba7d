#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The steps after a call against a real SQLite store, the Anthropic emulator and a webhook
//! receiver on loopback: analysis stored and validated, caller context noted, one delivery per
//! distinct URL, retries on 5xx, every attempt recorded, and a signature that an independent
//! implementation (Python's `hmac`) accepts.

use std::sync::Arc;
use std::time::Duration;

use nixflex_core::agent::{Agent, AgentSettings, ExtractionField, ExtractionType};
use nixflex_core::call::{
    CallRecord, CallStatus, Direction, EndedReason, TranscriptEntry, TranscriptRole,
};
use nixflex_core::crypto::{SecretBox, hash_secret};
use nixflex_core::ids;
use nixflex_core::number::{NumberSettings, PhoneNumber};
use nixflex_engine::analysis::TOOL_NAME;
use nixflex_engine::followup::{FollowUp, FollowUpError};
use nixflex_providers::customer::CustomerHttp;
use nixflex_providers::llm::anthropic::{AnthropicClient, AnthropicConfig};
use nixflex_store::{Account, ApiKey, NumberUrlSlot, Store};
use nixflex_testkit::anthropic::{AnthropicEmulator, Reply};
use nixflex_testkit::webhook::WebhookReceiver;
use secrecy::SecretString;
use serde_json::{Map, json};

const NUMBER: &str = "+447446466847";
const CALLER: &str = "+447386172392";

struct Lab {
    store: Arc<dyn Store>,
    follow_up: FollowUp,
    llm: AnthropicEmulator,
    receiver: WebhookReceiver,
    secret: String,
    call: CallRecord,
    _dir: tempfile::TempDir,
}

async fn lab() -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("db.sqlite").display());
    let store = nixflex_store::open(&url, 4).await.unwrap();
    let secrets = SecretBox::from_encoded(&SecretBox::generate_encoded()).unwrap();
    let now = nixflex_store::now();
    let account = Account {
        account_id: ids::new_account_id(),
        name: None,
        email: None,
        created_at: now,
        max_concurrent_calls: None,
        rate_limit_reads: None,
        rate_limit_writes: None,
    };
    let secret = ids::new_key_secret();
    let key = ApiKey {
        key_id: ids::new_key_id(),
        account_id: account.account_id.clone(),
        name: None,
        secret_hash: hash_secret(&secret),
        secret_sealed: secrets.seal(&secret),
        created_at: now,
        rotated_at: None,
        revoked_at: None,
    };
    store.create_account(&account, &key).await.unwrap();
    let receiver = WebhookReceiver::start().await.unwrap();
    let agent = Agent {
        agent_id: ids::new_agent_id(),
        account_id: account.account_id.clone(),
        api_key_id: key.key_id.clone(),
        settings: AgentSettings {
            name: "Bistro".to_owned(),
            webhook_url: Some(receiver.url("/crm")),
            data_extraction_fields: vec![ExtractionField {
                kind: ExtractionType::Number,
                name: "party_size".to_owned(),
                description: "How many people".to_owned(),
                optional: true,
                choices: None,
                format_example: None,
            }],
            ..AgentSettings::default()
        },
        created_at: now,
        updated_at: now,
    };
    store.insert_agent(&agent).await.unwrap();
    let number = PhoneNumber {
        phone_number: NUMBER.into(),
        account_id: account.account_id.clone(),
        agent_id: Some(agent.agent_id.clone()),
        provider: "twilio".to_owned(),
        twilio_account_sid: format!("AC{}", "a".repeat(32)),
        twilio_auth_token_sealed: secrets.seal("token"),
        twilio_number_sid: format!("PN{}", "b".repeat(32)),
        inbound_enabled: true,
        outbound_enabled: true,
        sms_reply_enabled: true,
        settings: NumberSettings::default(),
        webhook_url: None,
        webhook2_url: None,
        precall_url: None,
        created_at: now,
        updated_at: now,
    };
    store.reserve_number(&number, &json!({}), now).await.unwrap();
    store.activate_number(&number.phone_number).await.unwrap();
    // Slot 1 is another URL; slot 2 repeats the agent's, which is delivered to once.
    for (slot, url) in [(NumberUrlSlot::Webhook, "/slot1"), (NumberUrlSlot::Webhook2, "/crm")] {
        let url = receiver.url(url);
        assert!(
            store
                .set_number_url(&account.account_id, &number.phone_number, slot, Some(&url))
                .await
                .unwrap()
        );
    }
    let line = |role, text: &str| TranscriptEntry { role, text: text.to_owned(), timestamp_ms: 0 };
    let call = CallRecord {
        call_id: ids::new_call_id(),
        account_id: account.account_id.clone(),
        agent_id: Some(agent.agent_id.clone()),
        direction: Direction::Inbound,
        from_number: CALLER.to_owned(),
        to_number: NUMBER.to_owned(),
        twilio_call_sid: Some(format!("CA{}", "c".repeat(32))),
        call_status: CallStatus::Completed,
        ended_reason: Some(EndedReason::Completed),
        started_at: now,
        answered_at: Some(now),
        ended_at: Some(now),
        duration_seconds: Some(42),
        transcript: vec![
            line(TranscriptRole::Agent, "Bistro, how can I help?"),
            line(TranscriptRole::Caller, "A table for four on Friday please, it's Ann."),
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
        metadata: Some(json!({"crm_id": 7})),
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
    };
    store.insert_call(&call).await.unwrap();
    let llm = AnthropicEmulator::start().await.unwrap();
    let client = AnthropicClient::new(AnthropicConfig {
        base_url: llm.base_url(),
        api_key: Some(SecretString::from("sk-ant-test")),
        first_byte_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        ..AnthropicConfig::default()
    })
    .unwrap();
    let follow_up =
        FollowUp::new(store.clone(), Arc::new(client), CustomerHttp::new(true).unwrap(), secrets);
    Lab { store, follow_up, llm, receiver, secret, call, _dir: dir }
}

/// Verifies `X-Nixflex-Signature` over the raw body with Python's standard library, not ours.
fn python_verifies(secret: &str, header: &str, body: &[u8]) -> bool {
    let script = r#"
import hmac, hashlib, sys
secret, header, body = sys.argv[1], sys.argv[2], sys.stdin.buffer.read()
parts = dict(p.split("=", 1) for p in header.split(",") if p.startswith("t="))
t = parts["t"]
sigs = [p[3:] for p in header.split(",") if p.startswith("v1=")]
want = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
sys.exit(0 if any(hmac.compare_digest(want, s) for s in sigs) else 1)
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, secret, header])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(body).unwrap();
    child.wait().unwrap().success()
}

#[tokio::test]
async fn after_a_call_the_analysis_is_stored_and_each_url_gets_one_signed_event() {
    let lab = lab().await;
    lab.llm.push_reply(Reply::tool_call(
        TOOL_NAME,
        json!({
            "call_summary": "Ann booked a table for four on Friday.",
            "caller_sentiment": "happy",
            "call_successful": true,
            "caller_name": "Ann",
            "last_call": "a table for four on Friday",
            "open_item": null,
            "extracted_data": {"party_size": 4},
        }),
    ));
    let jobs = lab.follow_up.call_ended(&lab.call.call_id, false).await.unwrap();
    let urls: Vec<&str> = jobs.iter().map(|j| j.url.as_str()).collect();
    assert_eq!(urls, [lab.receiver.url("/crm"), lab.receiver.url("/slot1")]);

    let stored = lab.store.find_call(&lab.call.call_id).await.unwrap().unwrap();
    assert_eq!(stored.call_summary.as_deref(), Some("Ann booked a table for four on Friday."));
    assert_eq!(stored.caller_sentiment.as_deref(), Some("happy"));
    assert_eq!(stored.extracted_data["party_size"], json!(4));
    let context = lab.store.get_caller(&NUMBER.into(), CALLER).await.unwrap().unwrap().context;
    assert_eq!(context["last_call"], "a table for four on Friday");
    assert_eq!(context["name"], "Ann");

    // The first receiver is down once, then up: two attempts, one delivery, one event id.
    lab.receiver.answer_with(&[503]);
    let first = &jobs[0];
    assert!(matches!(lab.follow_up.deliver(first, 1).await, Err(FollowUpError::Retryable(_))));
    lab.follow_up.deliver(first, 2).await.unwrap();
    lab.follow_up.deliver(&jobs[1], 1).await.unwrap();
    let received = lab.receiver.received();
    assert_eq!(received.len(), 3);
    let ids: Vec<&str> = received.iter().map(|r| r.header("x-nixflex-event-id").unwrap()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one event, one id: {ids:?}");
    for request in &received {
        let header = request.header("x-nixflex-signature").unwrap();
        assert!(python_verifies(&lab.secret, header, &request.body), "signature {header}");
        assert!(!python_verifies("nxfs_wrong", header, &request.body));
    }
    let payload = received[2].json();
    assert_eq!(payload["event"], "call.completed");
    assert_eq!(payload["summary"], "Ann booked a table for four on Friday.");
    assert_eq!(
        payload["transcript"],
        "Agent: Bistro, how can I help?\nCaller: A table for four on Friday please, it's Ann."
    );
    assert_eq!(payload["metadata"], json!({"crm_id": 7}));

    let attempts = lab.store.webhook_deliveries(&lab.call.call_id).await.unwrap();
    assert_eq!(attempts.len(), 3);
    assert_eq!((attempts[0].status_code, attempts[0].delivered), (Some(503), false));
    assert_eq!((attempts[1].attempt, attempts[1].delivered), (2, true));
}

#[tokio::test]
async fn an_llm_outage_is_retried_then_given_up_without_holding_the_webhook() {
    let lab = lab().await;
    lab.llm.push_fault(nixflex_testkit::anthropic::Fault::Status(529));
    let retry = lab.follow_up.call_ended(&lab.call.call_id, false).await;
    assert!(matches!(retry, Err(FollowUpError::Retryable(_))), "{retry:?}");
    lab.llm.push_fault(nixflex_testkit::anthropic::Fault::Status(529));
    let jobs = lab.follow_up.call_ended(&lab.call.call_id, true).await.unwrap();
    assert_eq!(jobs.len(), 2, "the webhooks still go out");
    let stored = lab.store.find_call(&lab.call.call_id).await.unwrap().unwrap();
    assert_eq!(stored.call_summary, None);
    // A receiver that refuses the request for good is not retried.
    lab.receiver.answer_with(&[410]);
    assert!(matches!(lab.follow_up.deliver(&jobs[0], 1).await, Err(FollowUpError::Permanent(_))));
}
