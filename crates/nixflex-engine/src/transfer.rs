//! Transfers (docs/engine.md#transfers): handing a live call over to a person.
//!
//! A cold transfer is three steps across the engine and the carrier:
//! 1. The session plays the agent's hand-off line, then redirects the live call through the
//!    carrier's REST API to the TwiML of [`dial_twiml`]: `<Dial timeout="10" action=…>` around
//!    `<Number url=…>` with the business number as caller ID. The media stream closes; the
//!    session writes the transcript and the AI's talk time so far (`duration_seconds`: billing
//!    stops at the hand-off) and lets go of the call, which stays `in-progress`.
//! 2. The destination answers: Twilio requests the `<Number url>` ([`TransferEvent::Answered`])
//!    before connecting the two, and the call ends `transferred` ([`Engine::transfer_connected`]).
//!    The `action` request after the bridged call (`DialCallStatus=completed`) finds it ended.
//! 3. Nobody answers (`busy`, `no-answer`, `failed`, `canceled`): the `action` request answers
//!    `<Connect><Stream>` with a new one-time token ([`Engine::transfer_failed`]) and the
//!    parameters of [`Resume`]. The new stream may reach any node: that node loads the call from
//!    the database (the transcript, function calls and talk time the first session persisted),
//!    rebuilds the conversation from it and lets the agent tell the caller, with a note saying
//!    why the transfer failed.

use std::time::Duration;

use nixflex_core::call::{CallRecord, CallStatus, EndedReason};
use nixflex_core::crypto::hash_secret;
use nixflex_core::ids;
use nixflex_providers::twilio::twiml::{self, DialOptions};
use nixflex_store::CallUpdate;

use crate::engine::Engine;
use crate::service::Admission;

/// How long the destination may ring before the transfer counts as unanswered.
pub const TRANSFER_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The media-stream parameter that marks a stream as the return of a call from a failed
/// transfer; its value is Twilio's `DialCallStatus`.
pub const RESUME_PARAM: &str = "transfer_status";
/// The media-stream parameter naming the number the failed transfer dialled.
pub const RESUME_NUMBER_PARAM: &str = "transfer_to";

/// What a request to `/twilio/transfer` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferEvent {
    /// The `<Number url>` request: the destination answered and is about to be connected.
    Answered,
    /// The `<Dial action>` request: the dial is over, with this outcome.
    DialEnded(DialOutcome),
}

/// Twilio's `DialCallStatus`, grouped by what it means for the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialOutcome {
    /// `completed` or `answered`: the caller talked to the destination.
    Connected,
    /// `busy`, `no-answer`, `failed` or `canceled`: nobody was reached; the caller returns to
    /// the agent.
    NotConnected(NotConnected),
}

/// Why a transfer reached nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotConnected {
    /// `busy`.
    Busy,
    /// `no-answer`.
    NoAnswer,
    /// `failed`.
    Failed,
    /// `canceled`.
    Canceled,
}

impl NotConnected {
    /// Twilio's `DialCallStatus` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::NoAnswer => "no-answer",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    /// Parses Twilio's value.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "busy" => Some(Self::Busy),
            "no-answer" => Some(Self::NoAnswer),
            "failed" => Some(Self::Failed),
            "canceled" => Some(Self::Canceled),
            _ => None,
        }
    }

    /// What the agent is told about it.
    fn reason(self) -> &'static str {
        match self {
            Self::Busy => "the line was busy",
            Self::NoAnswer => "no answer",
            Self::Failed => "the call could not be connected",
            Self::Canceled => "the call was cancelled",
        }
    }
}

impl DialOutcome {
    /// Parses `DialCallStatus`; an unknown value counts as a failure, so the caller is never
    /// left without anyone.
    pub fn parse(value: &str) -> Self {
        match value {
            "completed" | "answered" => Self::Connected,
            other => Self::NotConnected(NotConnected::parse(other).unwrap_or(NotConnected::Failed)),
        }
    }
}

/// A stream that returns a call from a failed transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// Why the transfer failed.
    pub status: NotConnected,
    /// The number it dialled.
    pub number: String,
}

impl Resume {
    /// The note the agent gets before it speaks again.
    pub fn note(&self) -> String {
        format!(
            "[The transfer to {} failed: {}. Tell the caller and continue.]",
            self.number,
            self.status.reason()
        )
    }
}

/// The callback URL of a transfer: `/twilio/transfer` with the call id and the number, plus
/// `event=answered` for the `<Number url>`.
pub fn callback_url(base: &str, call_id: &str, number: &str, answered: bool) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("call_id", call_id).append_pair("number", number);
    if answered {
        query.append_pair("event", "answered");
    }
    format!("{}/twilio/transfer?{}", base.trim_end_matches('/'), query.finish())
}

/// The TwiML that hands the call to `number`: ring it for at most
/// [`TRANSFER_ANSWER_TIMEOUT`], showing the business number, and report back.
pub fn dial_twiml(base: &str, call_id: &str, number: &str, business_number: &str) -> String {
    let options = DialOptions {
        action: Some(callback_url(base, call_id, number, false)),
        method: Some("POST".to_owned()),
        caller_id: Some(business_number.to_owned()),
        timeout: Some(TRANSFER_ANSWER_TIMEOUT),
        number_url: Some(callback_url(base, call_id, number, true)),
        ..DialOptions::default()
    };
    twiml::dial_number(number, &options)
}

impl Engine {
    /// The transferred call reached the destination: it ends `transferred`, with its follow-ups.
    /// Its `duration_seconds` stays the AI's talk time written at the hand-off. A call that has
    /// already ended is left alone.
    ///
    /// # Errors
    /// The store failed.
    pub async fn transfer_connected(
        &self,
        call: &CallRecord,
    ) -> Result<(), nixflex_store::StoreError> {
        if call.ended_at.is_some() {
            return Ok(());
        }
        let update = CallUpdate {
            call_status: Some(CallStatus::Completed),
            ended_reason: Some(EndedReason::Transferred),
            ended_at: Some(nixflex_store::now()),
            ..CallUpdate::default()
        };
        let follow_ups = self.call_follow_ups(&call.call_id, &call.account_id);
        self.store().finish_call(&call.call_id, &update, nixflex_store::now(), &follow_ups).await?;
        self.wake_follow_ups();
        tracing::info!(message = "Call transferred.", call_id = %call.call_id);
        Ok(())
    }

    /// The transfer reached nobody: the caller goes back to the agent on a new media stream with
    /// a new one-time token. `Busy` when the call has already ended.
    pub async fn transfer_failed(&self, call: &CallRecord) -> Admission {
        if call.ended_at.is_some() {
            return Admission::Busy { reason: crate::service::BusyReason::AlreadyEnded };
        }
        let token = ids::new_key_secret();
        let update = CallUpdate {
            stream_token_hash: Some(hash_secret(&token)),
            heartbeat_at: Some(nixflex_store::now()),
            ..CallUpdate::default()
        };
        match self.store().update_call(&call.call_id, &update, nixflex_store::now()).await {
            Ok(true) => Admission::Connect { call_id: call.call_id.clone(), token },
            Ok(false) => Admission::Busy { reason: crate::service::BusyReason::AlreadyEnded },
            Err(error) => {
                tracing::error!(message = "Store failed while returning a call from a transfer.", error = %error);
                Admission::Busy { reason: crate::service::BusyReason::StoreFailed }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_status_values_map_to_outcomes() {
        assert_eq!(DialOutcome::parse("completed"), DialOutcome::Connected);
        assert_eq!(DialOutcome::parse("answered"), DialOutcome::Connected);
        for (value, reason) in [
            ("busy", NotConnected::Busy),
            ("no-answer", NotConnected::NoAnswer),
            ("failed", NotConnected::Failed),
            ("canceled", NotConnected::Canceled),
            ("something-new", NotConnected::Failed),
        ] {
            assert_eq!(DialOutcome::parse(value), DialOutcome::NotConnected(reason), "{value}");
        }
    }

    #[test]
    fn the_dial_rings_ten_seconds_shows_the_business_number_and_reports_back() {
        let twiml = dial_twiml("https://n.example/", "call_1", "+447700900123", "+14155552671");
        assert!(twiml.contains(r#"timeout="10""#), "{twiml}");
        assert!(twiml.contains(r#"callerId="+14155552671""#), "{twiml}");
        assert!(
            twiml.contains(r#"action="https://n.example/twilio/transfer?call_id=call_1&amp;number=%2B447700900123""#),
            "{twiml}"
        );
        assert!(twiml.contains("&amp;event=answered\">+447700900123</Number>"), "{twiml}");
    }

    #[test]
    fn the_note_says_where_and_why() {
        let resume = Resume { status: NotConnected::NoAnswer, number: "+447700900123".to_owned() };
        assert_eq!(
            resume.note(),
            "[The transfer to +447700900123 failed: no answer. Tell the caller and continue.]"
        );
    }
}
