//! Calls (API.md §4.1, DECISIONS #2, #3, #20, #36): the record of one phone call, its transcript
//! and its per-turn latency.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `inbound` or `outbound`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The caller dialled the business number.
    Inbound,
    /// The agent dialled out.
    Outbound,
}

impl Direction {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }

    /// Parses the API name.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "inbound" => Some(Self::Inbound),
            "outbound" => Some(Self::Outbound),
            _ => None,
        }
    }
}

/// Twilio's call statuses, used as `call_status` (DECISIONS #2).
pub const CALL_STATUSES: &[&str] = &[
    "queued",
    "initiated",
    "ringing",
    "in-progress",
    "completed",
    "busy",
    "no-answer",
    "failed",
    "canceled",
];

/// Statuses after which nothing changes.
pub fn is_final_status(status: &str) -> bool {
    matches!(status, "completed" | "busy" | "no-answer" | "failed" | "canceled")
}

/// One line of the transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TranscriptEntry {
    /// `agent` or `caller`.
    pub role: String,
    /// What was said (for the agent: what the caller actually heard).
    pub text: String,
    /// Milliseconds since the call was answered.
    pub timestamp_ms: u64,
}

/// Latency of one agent turn, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TurnLatency {
    /// 1-based turn number.
    pub turn: u32,
    /// Caller stopped speaking → the engine decided the turn ended (includes `response_eagerness`).
    pub end_of_turn_ms: f64,
    /// Turn end → final transcript available.
    pub stt_ms: f64,
    /// LLM request → first token.
    pub llm_first_token_ms: f64,
    /// First sentence to TTS → first audio byte.
    pub tts_first_byte_ms: f64,
    /// Everything else the engine added (queueing, parsing, framing).
    pub engine_overhead_ms: f64,
    /// Caller stopped speaking → first agent audio frame sent.
    pub total_ms: f64,
}

/// A call as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// `call_` + 24 hex.
    pub call_id: String,
    /// Owner.
    pub account_id: String,
    /// The agent (kept after the agent is deleted).
    pub agent_id: Option<String>,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Caller ID.
    pub from_number: String,
    /// Number dialled.
    pub to_number: String,
    /// Twilio's `CA…` SID (none while queued).
    pub twilio_call_sid: Option<String>,
    /// Twilio status set.
    pub call_status: String,
    /// Why it ended (ENGINE §3.6).
    pub ended_reason: Option<String>,
    /// Dialling began / the call reached us.
    pub started_at: DateTime<Utc>,
    /// Connected.
    pub answered_at: Option<DateTime<Utc>>,
    /// Hung up.
    pub ended_at: Option<DateTime<Utc>>,
    /// Connected time in seconds.
    pub duration_seconds: Option<i64>,
    /// What was said.
    pub transcript: Vec<TranscriptEntry>,
    /// Per-turn latency.
    pub turns: Vec<TurnLatency>,
    /// Mean of `turns[].total_ms`.
    pub avg_latency_ms: Option<f64>,
    /// Recording location.
    pub recording_url: Option<String>,
    /// Post-call summary.
    pub call_summary: Option<String>,
    /// `happy` | `neutral` | `frustrated`.
    pub caller_sentiment: Option<String>,
    /// Whether the caller got what they needed.
    pub call_successful: Option<bool>,
    /// Extracted fields.
    pub extracted_data: Map<String, Value>,
    /// Voicemail reached (outbound).
    pub voicemail_detected: bool,
    /// Batch campaign.
    pub campaign_id: Option<String>,
    /// Echoed from the request.
    pub metadata: Option<Value>,
    /// Charge (excludes carrier costs).
    pub cost_usd: Option<f64>,
    /// Why the pre-call gate rejected it.
    pub precall_reject_reason: Option<String>,
    /// SHA-256 of the media-stream token.
    pub stream_token_hash: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl CallRecord {
    /// The transcript as the docs' `Agent:`/`Caller:` text (webhooks, DECISIONS #36).
    pub fn transcript_text(&self) -> String {
        self.transcript
            .iter()
            .map(|entry| {
                let who = if entry.role == "agent" { "Agent" } else { "Caller" };
                format!("{who}: {}", entry.text)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_twilios_and_final_ones_are_terminal() {
        for status in CALL_STATUSES {
            let terminal = is_final_status(status);
            assert_eq!(
                terminal,
                !matches!(*status, "queued" | "initiated" | "ringing" | "in-progress"),
                "{status}"
            );
        }
        assert_eq!(Direction::parse("outbound"), Some(Direction::Outbound));
        assert_eq!(Direction::parse("sideways"), None);
    }
}
