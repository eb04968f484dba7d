//! Calls (docs/api.md#call-object; docs/decisions.md#call-object, #call-ids, #ended-reason, #transcript-shapes): the record of one phone call, its transcript
//! and its per-turn latency.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{AccountId, AgentId, CallId};

/// Declares a closed set of API strings as an enum with its one mapping: `as_str`, `parse`,
/// `ALL`, serde and the OpenAPI schema all come from the same list, so no other code compares
/// these values as strings.
macro_rules! api_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The API and database string.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            /// Parses the API and database string.
            pub fn parse(raw: &str) -> Option<Self> {
                match raw { $($text => Some(Self::$variant),)+ _ => None }
            }

            /// Every API string, in declaration order.
            pub fn names() -> Vec<&'static str> {
                Self::ALL.iter().map(|v| v.as_str()).collect()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

api_enum! {
    /// `inbound` or `outbound`.
    Direction {
        /// The caller dialled the business number.
        Inbound => "inbound",
        /// The agent dialled out.
        Outbound => "outbound",
    }
}

api_enum! {
    /// A call's `call_status`: Twilio's set (docs/decisions.md#call-object).
    CallStatus {
        /// Waiting for a free slot under the account's concurrent-call cap (outbound).
        Queued => "queued",
        /// Dialling started.
        Initiated => "initiated",
        /// The callee's phone is ringing.
        Ringing => "ringing",
        /// Connected.
        InProgress => "in-progress",
        /// Ended after being connected.
        Completed => "completed",
        /// The callee was busy, or the call was refused busy.
        Busy => "busy",
        /// Nobody answered.
        NoAnswer => "no-answer",
        /// The carrier could not place the call.
        Failed => "failed",
        /// Cancelled before it was answered.
        Canceled => "canceled",
    }
}

impl CallStatus {
    /// Statuses after which nothing changes.
    pub const FINAL: &'static [Self] =
        &[Self::Completed, Self::Busy, Self::NoAnswer, Self::Failed, Self::Canceled];

    /// Statuses of a call that holds a slot under the concurrent-call cap.
    pub const LIVE: &'static [Self] = &[Self::Initiated, Self::Ringing, Self::InProgress];

    /// Whether nothing changes after this status.
    pub fn is_final(self) -> bool {
        Self::FINAL.contains(&self)
    }

    /// A SQL list literal of `statuses`, e.g. `('completed', 'busy')`, for the store's queries.
    pub fn sql_list(statuses: &[Self]) -> String {
        let quoted: Vec<String> = statuses.iter().map(|s| format!("'{}'", s.as_str())).collect();
        format!("({})", quoted.join(", "))
    }
}

api_enum! {
    /// Why a call ended (`ended_reason`; docs/engine.md#ended-reasons).
    EndedReason {
        /// The agent said goodbye and ended the call.
        Completed => "completed",
        /// The caller hung up.
        CallerHangup => "caller_hangup",
        /// The caller stayed silent for `silence_hangup_seconds`.
        SilenceTimeout => "silence_timeout",
        /// `max_call_duration_seconds` was reached.
        MaxDuration => "max_duration",
        /// A provider or the engine failed.
        Error => "error",
        /// The pre-call gate rejected the call.
        PrecallRejected => "precall_rejected",
        /// The number has no agent.
        NoAgent => "no_agent",
        /// The number's inbound calls are switched off.
        InboundDisabled => "inbound_disabled",
        /// The agent is inactive.
        AgentInactive => "agent_inactive",
        /// The account was at its concurrent-call cap.
        ConcurrentCallLimit => "concurrent_call_limit",
        /// The server was shutting down (draining) when the call arrived: refused busy.
        ServerDraining => "server_draining",
        /// The server's drain time ran out: the agent said a short goodbye and the call ended.
        ServerShutdown => "server_shutdown",
        /// The callee was busy (outbound).
        Busy => "busy",
        /// Nobody answered (outbound).
        NoAnswer => "no-answer",
        /// The carrier could not place the call (outbound).
        Failed => "failed",
        /// Cancelled before it was answered (outbound).
        Canceled => "canceled",
        /// A voicemail system answered.
        Voicemail => "voicemail",
        /// The call was transferred to a person.
        Transferred => "transferred",
    }
}

api_enum! {
    /// Who said a transcript line.
    TranscriptRole {
        /// The AI agent.
        Agent => "agent",
        /// The person on the phone.
        Caller => "caller",
    }
}

api_enum! {
    /// How one custom-function invocation ended (docs/engine.md#custom-functions).
    FunctionCallStatus {
        /// The endpoint answered with a 2xx status.
        Ok => "ok",
        /// The endpoint answered with another status, the request failed, or the model called a
        /// function the agent does not have.
        Error => "error",
        /// No answer within the 3 s limit.
        Timeout => "timeout",
        /// The URL breaks the outbound-URL rules (https only; no loopback, private, link-local or
        /// metadata address, checked again after DNS): nothing was sent.
        Refused => "refused",
    }
}

/// One custom-function invocation during a call, as logged on the call record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FunctionCallLog {
    /// The function's name (as the model called it).
    pub name: String,
    /// The arguments the model gave.
    #[schema(value_type = Object)]
    pub arguments: Value,
    /// How it ended.
    pub status: FunctionCallStatus,
    /// The endpoint's HTTP status, when it answered.
    pub http_status: Option<u16>,
    /// From sending the request to its outcome, in milliseconds.
    pub latency_ms: u64,
    /// When it was called: milliseconds since the call was answered.
    pub at_ms: u64,
}

/// Something a call's speech or language provider did that changed the call
/// (docs/engine.md#provider-outages): a retry, a switch to the next provider of the chain, a
/// reconnect of speech recognition, a stage that gave up, the carrier's last word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProviderEvent {
    /// When it happened: milliseconds since the call was answered.
    pub at_ms: u64,
    /// `llm`, `stt` or `tts`.
    pub stage: String,
    /// The provider that failed (its name, e.g. `anthropic`, `inworld`, `deepgram`).
    pub provider: String,
    /// `retried` (the same provider again, within the turn), `switched` (to `to`, for the rest
    /// of the call), `reconnected` (speech recognition is back; the buffered audio was
    /// replayed), `failed` (the stage has no provider left for this turn) or `carrier_say` (the
    /// carrier spoke the outage line because no speech synthesis answered).
    pub event: String,
    /// The provider switched to (`switched` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The class of failure (e.g. `transport error`, `upstream error (status 503)`, `timed
    /// out`); never the provider's own message.
    pub error: String,
}

/// One line of the transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TranscriptEntry {
    /// `agent` or `caller`.
    pub role: TranscriptRole,
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

/// Where a call's recording is kept (docs/recordings.md#where-recordings-live).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecording {
    /// `"<store>:<object path>"`: `local:` (the server's directory), `s3:` (the server's
    /// bucket) or `byo:` (the account's own bucket).
    pub location: String,
    /// Length of the audio in seconds.
    pub duration_s: Option<f64>,
}

/// A call as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// `call_` + 24 hex.
    pub call_id: CallId,
    /// Owner.
    pub account_id: AccountId,
    /// The agent (kept after the agent is deleted).
    pub agent_id: Option<AgentId>,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Caller ID.
    pub from_number: String,
    /// Number dialled.
    pub to_number: String,
    /// Twilio's `CA…` SID (none while queued).
    pub twilio_call_sid: Option<String>,
    /// Twilio status set.
    pub call_status: CallStatus,
    /// Why it ended.
    pub ended_reason: Option<EndedReason>,
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
    /// Every custom-function invocation, in call order.
    pub function_calls: Vec<FunctionCallLog>,
    /// Provider retries, switches and outages, in call order (docs/engine.md#provider-outages).
    pub provider_events: Vec<ProviderEvent>,
    /// Mean of `turns[].total_ms`.
    pub avg_latency_ms: Option<f64>,
    /// The stored recording, once there is one (docs/recordings.md).
    pub recording: Option<StoredRecording>,
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
    /// The carrier's answering-machine verdict (outbound with `amd_enabled`): `human`,
    /// `machine_start`, `machine_end_beep`, `machine_end_silence`, `machine_end_other`, `fax`
    /// or `unknown`.
    pub amd_result: Option<String>,
    /// Which detector found the voicemail (`voicemail_detected`): `amd` (the carrier's
    /// answering-machine detection) or `transcript` (the engine's phrase matcher).
    pub voicemail_detection_method: Option<String>,
    /// What the carrier (or the queue) said about a call that ended without a conversation:
    /// e.g. `{"twilio_error": {"code": 21211, "message": "…"}}` or `{"carrier_status": "busy",
    /// "sip_response_code": 486}`.
    pub carrier_details: Option<Value>,
    /// SHA-256 of the media-stream token.
    pub stream_token_hash: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl CallRecord {
    /// The transcript as the docs' `Agent:`/`Caller:` text (webhooks, docs/decisions.md#transcript-shapes).
    pub fn transcript_text(&self) -> String {
        self.transcript
            .iter()
            .map(|entry| {
                let who = match entry.role {
                    TranscriptRole::Agent => "Agent",
                    TranscriptRole::Caller => "Caller",
                };
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
        for status in CallStatus::ALL {
            assert_eq!(
                status.is_final(),
                !matches!(
                    status,
                    CallStatus::Queued
                        | CallStatus::Initiated
                        | CallStatus::Ringing
                        | CallStatus::InProgress
                ),
                "{status}"
            );
            assert_eq!(CallStatus::parse(status.as_str()), Some(*status));
        }
        assert_eq!(CallStatus::parse("in-progress"), Some(CallStatus::InProgress));
        assert_eq!(serde_json::to_value(CallStatus::NoAnswer).unwrap(), "no-answer");
        assert_eq!(
            CallStatus::sql_list(CallStatus::LIVE),
            "('initiated', 'ringing', 'in-progress')"
        );
        assert_eq!(Direction::parse("outbound"), Some(Direction::Outbound));
        assert_eq!(Direction::parse("sideways"), None);
        for reason in EndedReason::ALL {
            assert_eq!(EndedReason::parse(reason.as_str()), Some(*reason));
        }
        assert_eq!(serde_json::to_value(TranscriptRole::Caller).unwrap(), "caller");
    }
}
