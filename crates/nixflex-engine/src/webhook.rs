//! What customer webhooks say (docs/engine.md#webhooks): the events, their flat payloads, who
//! receives them, and the stable event id receivers de-duplicate on. Signing is
//! `nixflex_providers::customer::signature_header`; durable delivery with retries comes with the
//! jobs queue.

use nixflex_core::call::CallRecord;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The header carrying [`event_id`].
pub const EVENT_ID_HEADER: &str = "X-Nixflex-Event-Id";

/// A webhook event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The call connected: identity fields only.
    CallStarted,
    /// The call finished and its analysis is done (also unanswered outbound outcomes).
    CallCompleted,
    /// A test sent on request.
    Test,
}

impl Event {
    /// The `event` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CallStarted => "call.started",
            Self::CallCompleted => "call.completed",
            Self::Test => "webhook.test",
        }
    }
}

/// The id of one event about one call: the same for every target and every retry, different for
/// another event, so a receiver that sees it twice knows it is a duplicate.
pub fn event_id(event: Event, call_id: &str) -> String {
    let digest = Sha256::digest(format!("{}:{call_id}", event.as_str()).as_bytes());
    format!("evt_{}", &hex::encode(digest)[..24])
}

/// Every distinct configured URL, in order: the agent's `webhook_url`, then the number's two
/// slots. A URL configured twice is delivered to once.
pub fn targets<'a>(urls: impl IntoIterator<Item = Option<&'a str>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for url in urls.into_iter().flatten() {
        let url = url.trim();
        if !url.is_empty() && !out.iter().any(|u| u == url) {
            out.push(url.to_owned());
        }
    }
    out
}

fn identity(event: Event, call: &CallRecord) -> Map<String, Value> {
    let mut payload = Map::new();
    payload.insert("event".to_owned(), json!(event.as_str()));
    payload.insert("event_id".to_owned(), json!(event_id(event, call.call_id.as_str())));
    payload.insert("call_id".to_owned(), json!(call.call_id));
    payload.insert("twilio_call_sid".to_owned(), json!(call.twilio_call_sid));
    payload.insert("agent_id".to_owned(), json!(call.agent_id));
    payload.insert("direction".to_owned(), json!(call.direction));
    payload.insert("from".to_owned(), json!(call.from_number));
    payload.insert("to".to_owned(), json!(call.to_number));
    payload.insert("started_at".to_owned(), json!(call.started_at));
    payload.insert("campaign_id".to_owned(), json!(call.campaign_id));
    payload.insert("metadata".to_owned(), call.metadata.clone().unwrap_or_else(|| json!({})));
    payload
}

/// `call.started`: the call's identity only.
pub fn started_payload(call: &CallRecord) -> Value {
    Value::Object(identity(Event::CallStarted, call))
}

/// `call.completed` (or `webhook.test` with a sample call): the flat payload — identity, outcome,
/// the transcript as text (`Agent:`/`Caller:` lines) and as the API's array
/// (`transcript_object`), and the analysis under both the documented short names (`summary`,
/// `sentiment`, `successful`, `extracted`) and the call object's names. Nothing internal (system
/// prompt, key ids, tokens) is included. `recording_url` is the signed link to the recording,
/// when there is one.
pub fn completed_payload(event: Event, call: &CallRecord, recording_url: Option<&str>) -> Value {
    let mut payload = identity(event, call);
    let charged_minutes = call.duration_seconds.map(|s| {
        #[allow(clippy::cast_precision_loss)]
        let minutes = s as f64 / 60.0;
        (minutes * 10_000.0).round() / 10_000.0
    });
    let fields = [
        ("status", json!(call.call_status)),
        ("ended_reason", json!(call.ended_reason)),
        ("answered_at", json!(call.answered_at)),
        ("ended_at", json!(call.ended_at)),
        ("duration_seconds", json!(call.duration_seconds)),
        ("charged_minutes", json!(charged_minutes)),
        ("transcript", json!(call.transcript_text())),
        ("transcript_object", json!(call.transcript)),
        ("summary", json!(call.call_summary)),
        ("sentiment", json!(call.caller_sentiment)),
        ("successful", json!(call.call_successful)),
        ("extracted", json!(call.extracted_data)),
        ("call_summary", json!(call.call_summary)),
        ("caller_sentiment", json!(call.caller_sentiment)),
        ("call_successful", json!(call.call_successful)),
        ("extracted_data", json!(call.extracted_data)),
        ("recording_url", json!(recording_url)),
        ("recording_duration_s", json!(call.recording.as_ref().and_then(|r| r.duration_s))),
        ("voicemail_detected", json!(call.voicemail_detected)),
        ("avg_latency_ms", json!(call.avg_latency_ms)),
        ("function_calls", json!(call.function_calls)),
    ];
    for (key, value) in fields {
        payload.insert(key.to_owned(), value);
    }
    Value::Object(payload)
}

#[cfg(test)]
mod tests {
    use nixflex_core::call::{CallStatus, Direction, EndedReason, TranscriptEntry, TranscriptRole};

    use super::*;

    fn call() -> CallRecord {
        let at = chrono::DateTime::parse_from_rfc3339("2026-05-17T03:45:12Z").unwrap().to_utc();
        CallRecord {
            call_id: "call_0123456789abcdef01234567".into(),
            account_id: "acct_0123456789abcdef".into(),
            agent_id: Some("agent_0123456789abcdef".into()),
            direction: Direction::Inbound,
            from_number: "+447386172392".to_owned(),
            to_number: "+447446466847".to_owned(),
            twilio_call_sid: Some(format!("CA{}", "1".repeat(32))),
            call_status: CallStatus::Completed,
            ended_reason: Some(EndedReason::Completed),
            started_at: at,
            answered_at: Some(at),
            ended_at: Some(at + chrono::Duration::seconds(90)),
            duration_seconds: Some(90),
            transcript: vec![
                TranscriptEntry {
                    role: TranscriptRole::Agent,
                    text: "Hello!".to_owned(),
                    timestamp_ms: 100,
                },
                TranscriptEntry {
                    role: TranscriptRole::Caller,
                    text: "Hi.".to_owned(),
                    timestamp_ms: 900,
                },
            ],
            turns: Vec::new(),
            avg_latency_ms: Some(420.0),
            recording: None,
            call_summary: Some("A greeting.".to_owned()),
            caller_sentiment: Some("neutral".to_owned()),
            call_successful: Some(true),
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
            stream_token_hash: Some("secret-hash".to_owned()),
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn the_completed_payload_is_flat_and_carries_both_transcript_shapes() {
        let payload = completed_payload(Event::CallCompleted, &call(), None);
        assert_eq!(payload["event"], "call.completed");
        assert_eq!(payload["call_id"], "call_0123456789abcdef01234567");
        assert_eq!(payload["twilio_call_sid"], format!("CA{}", "1".repeat(32)));
        assert_eq!(payload["from"], "+447386172392");
        assert_eq!(payload["status"], "completed");
        assert_eq!(payload["transcript"], "Agent: Hello!\nCaller: Hi.");
        assert_eq!(payload["transcript_object"][1]["role"], "caller");
        assert_eq!(
            (&payload["summary"], &payload["successful"]),
            (&json!("A greeting."), &json!(true))
        );
        assert_eq!(payload["charged_minutes"], 1.5);
        assert_eq!(payload["metadata"], json!({}));
        assert!(payload.as_object().unwrap().values().all(|v| !v.is_object() || v == &json!({})));
        let text = payload.to_string();
        assert!(
            !text.contains("secret-hash") && !text.contains("acct_"),
            "nothing internal: {text}"
        );
    }

    #[test]
    fn started_carries_identity_only_and_event_ids_are_stable_per_event() {
        let payload = started_payload(&call());
        assert_eq!(payload["event"], "call.started");
        assert!(payload.get("transcript").is_none() && payload.get("summary").is_none());
        let id = event_id(Event::CallCompleted, "call_1");
        assert_eq!(id, event_id(Event::CallCompleted, "call_1"));
        assert_ne!(id, event_id(Event::CallStarted, "call_1"));
        assert_ne!(id, event_id(Event::CallCompleted, "call_2"));
        assert!(id.starts_with("evt_") && id.len() == 28);
    }

    #[test]
    fn each_distinct_target_is_delivered_once() {
        let urls = targets([
            Some("https://a.example.com/hook"),
            None,
            Some("https://b.example.com/hook"),
            Some(" https://a.example.com/hook "),
        ]);
        assert_eq!(urls, ["https://a.example.com/hook", "https://b.example.com/hook"]);
    }
}
