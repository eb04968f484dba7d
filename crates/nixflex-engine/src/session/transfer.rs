//! The session's side of a transfer (docs/engine.md#transfers; the carrier's side is in
//! `crate::transfer`): `[TRANSFER:]` waits for the hand-off line to play, then the live call is
//! redirected to a `<Dial>` and the session lets go of it without ending it; a call that comes
//! back from a failed transfer resumes the conversation from what the database holds.

use std::time::Duration;

use futures::Sink;
use nixflex_core::call::TranscriptRole;
use nixflex_core::phone;
use nixflex_pipeline::llm::LlmMessage;
use nixflex_providers::twilio::UpdateCall;
use tokio::time::Instant;

use nixflex_core::agent::TransferType;
use nixflex_core::crypto::hash_secret;
use nixflex_core::ids;
use nixflex_store::CallUpdate;

use super::turn::{TurnKind, TurnSource};
use super::{EndReason, Session};
use crate::transfer::{self, NotConnected, Resume};

/// A transfer waiting for the hand-off line to play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PendingTransfer {
    /// The E.164 destination.
    number: String,
    /// Whether the destination hears a whisper before the caller joins.
    warm: bool,
}

impl<W> Session<W>
where
    W: Sink<String> + Unpin + Send,
{
    /// `[TRANSFER:]` / `[TRANSFER:+…]`: once the hand-off line has played, hand the call over.
    /// Without a valid destination nothing happens and the model is told so.
    pub(super) fn request_transfer(&mut self, number: Option<String>, warm_tag: bool) {
        let number = number
            .or_else(|| self.setup.agent.transfer_number.clone())
            .and_then(|n| phone::parse_e164(&n));
        let Some(number) = number else {
            tracing::info!(message = "[TRANSFER:] without a destination ignored.");
            self.action_notes.push(
                "[System note: the transfer you asked for was NOT made: there is no valid number to transfer to. Do not tell the caller they are being transferred.]",
            );
            return;
        };
        if self.end_after_playout.is_some() {
            return;
        }
        tracing::info!(message = "Transfer requested; it starts after the hand-off line.", number = %number);
        let warm = warm_tag || self.setup.agent.transfer_type == TransferType::Warm;
        self.transfer_to = Some(PendingTransfer { number, warm });
        self.end_after_playout = Some(EndReason::Transferred);
    }

    /// Hands the call over for the pending transfer: a cold transfer redirects the live call to
    /// a `<Dial>`; a warm one calls the destination and puts the caller on hold in a conference
    /// (`crate::transfer`). True when the carrier took it (the session then lets go of the
    /// call); false when it could not be placed, in which case the agent is told and the
    /// conversation goes on.
    pub(super) async fn hand_off(&mut self) -> bool {
        let Some(PendingTransfer { number, warm }) = self.transfer_to.take() else { return false };
        let base = self.engine.config().public_url.clone();
        let call_sid = self.setup.call.twilio_call_sid.clone();
        let handed = match (base, call_sid) {
            (Some(base), Some(call_sid)) => {
                let token = if warm { self.whisper_token().await } else { None };
                match token {
                    Some(token) => self.hand_off_warm(&base, &call_sid, &number, &token).await,
                    None => self.hand_off_cold(&base, &call_sid, &number).await,
                }
            }
            _ => {
                tracing::warn!(
                    message = "Transfer impossible: no public URL or no carrier call SID."
                );
                false
            }
        };
        if handed {
            tracing::info!(message = "Call handed over to the carrier for the transfer.", number = %number, warm);
            return true;
        }
        self.ended = None;
        self.end_after_playout = None;
        let resume = Resume { status: NotConnected::Failed, number };
        self.speak_after_note(resume.note());
        false
    }

    async fn hand_off_cold(&self, base: &str, call_sid: &str, number: &str) -> bool {
        let twiml = transfer::dial_twiml(
            base,
            self.setup.call.call_id.as_str(),
            number,
            self.setup.number.phone_number.as_str(),
        );
        match self
            .engine
            .twilio()
            .update_call(&self.setup.credentials, call_sid, &UpdateCall::twiml(twiml))
            .await
        {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(message = "The carrier refused the transfer.", error = %error, twilio_code = error.twilio_code());
                false
            }
        }
    }

    async fn hand_off_warm(&self, base: &str, call_sid: &str, number: &str, token: &str) -> bool {
        let warm = transfer::WarmTransfer {
            base,
            credentials: &self.setup.credentials,
            call_id: self.setup.call.call_id.as_str(),
            call_sid,
            number,
            business_number: self.setup.number.phone_number.as_str(),
            token,
        };
        match self.engine.start_warm_transfer(&warm).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(message = "The warm transfer could not start.", error = %error);
                false
            }
        }
    }

    /// The one-time token of a warm transfer (the destination leg's callbacks and the whisper
    /// audio), its hash stored on the call before the carrier can use it (it replaces the stream
    /// token, which is spent). `None` when it cannot be stored: the transfer is then made cold.
    async fn whisper_token(&self) -> Option<String> {
        let token = ids::new_key_secret();
        let update =
            CallUpdate { stream_token_hash: Some(hash_secret(&token)), ..CallUpdate::default() };
        match self
            .engine
            .store()
            .update_call(&self.setup.call.call_id, &update, nixflex_store::now())
            .await
        {
            Ok(true) => Some(token),
            Ok(false) => None,
            Err(error) => {
                tracing::warn!(message = "Could not prepare the whisper; transferring cold.", error = %error);
                None
            }
        }
    }

    /// A call back from a failed transfer: the conversation so far (from the call record) is
    /// the history, and the agent speaks first, told why the transfer failed. False for a new
    /// call.
    pub(super) fn resume_after_transfer(&mut self, now: Instant) -> bool {
        let Some(resume) = self.setup.resume.clone() else { return false };
        tracing::info!(
            message = "Call back from a failed transfer.",
            transfer_status = resume.status.as_str()
        );
        self.silence_since = Some(now);
        self.speak_after_note(resume.note());
        true
    }

    /// Carries the conversation persisted by an earlier stream of this call over into this one:
    /// transcript, latencies, function calls, and the clock (talk time continues where it
    /// stopped).
    pub(super) fn restore_from_record(&mut self) {
        if self.setup.resume.is_none() {
            return;
        }
        let call = &self.setup.call;
        self.transcript.clone_from(&call.transcript);
        self.latencies.clone_from(&call.turns);
        self.function_calls.clone_from(&call.function_calls);
        self.history = call
            .transcript
            .iter()
            .map(|entry| match entry.role {
                TranscriptRole::Agent => LlmMessage::assistant(entry.text.clone()),
                TranscriptRole::Caller => LlmMessage::user(entry.text.clone()),
            })
            .collect();
        let before = Duration::from_secs(
            u64::try_from(call.duration_seconds.unwrap_or(0).max(0)).unwrap_or(0),
        );
        if let Some(started) = self.started.checked_sub(before) {
            self.started = started;
            self.max_duration_at = started
                + Duration::from_secs(u64::from(self.setup.agent.max_call_duration_seconds));
        }
    }

    /// The agent speaks next, after `note` (for the model only, kept in the history).
    fn speak_after_note(&mut self, note: String) {
        self.history.push(LlmMessage::user(note));
        let request = self.llm_request(self.history.clone());
        self.cancel_turn();
        self.start_turn(TurnSource::Llm(request), TurnKind::Greeting);
    }
}
