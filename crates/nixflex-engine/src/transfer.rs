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
//!    A warm transfer (`transfer_type: warm`, or the legacy `[TRANSFER:+E164:warm]`) answers that
//!    request with `<Play>` of [`Engine::whisper_audio`]: the destination hears a private
//!    briefing in the agent's voice (`transfer_whisper`, or a summary the model writes from the
//!    transcript) while the caller still hears ringing (on hold), then the two are connected.
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
/// `event=answered` for the `<Number url>` (and, for a warm transfer, the whisper's one-time
/// token).
pub fn callback_url(
    base: &str,
    call_id: &str,
    number: &str,
    answered: bool,
    whisper_token: Option<&str>,
) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("call_id", call_id).append_pair("number", number);
    if answered {
        query.append_pair("event", "answered");
        if let Some(token) = whisper_token {
            query.append_pair("whisper", token);
        }
    }
    format!("{}/twilio/transfer?{}", base.trim_end_matches('/'), query.finish())
}

/// The URL of a warm transfer's whisper audio (`GET`, authenticated by the one-time token).
pub fn whisper_url(base: &str, call_id: &str, token: &str) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("call_id", call_id).append_pair("token", token);
    format!("{}/twilio/whisper?{}", base.trim_end_matches('/'), query.finish())
}

/// The TwiML that hands the call to `number`: ring it for at most
/// [`TRANSFER_ANSWER_TIMEOUT`], showing the business number, and report back. With a whisper
/// token the transfer is warm.
pub fn dial_twiml(
    base: &str,
    call_id: &str,
    number: &str,
    business_number: &str,
    whisper_token: Option<&str>,
) -> String {
    twiml::dial_number(number, &dial_options(base, call_id, number, business_number, whisper_token))
}

/// The `<Dial>` options of a transfer to `number` (see [`dial_twiml`]).
pub fn dial_options(
    base: &str,
    call_id: &str,
    number: &str,
    business_number: &str,
    whisper_token: Option<&str>,
) -> DialOptions {
    DialOptions {
        action: Some(callback_url(base, call_id, number, false, None)),
        method: Some("POST".to_owned()),
        caller_id: Some(business_number.to_owned()),
        timeout: Some(TRANSFER_ANSWER_TIMEOUT),
        number_url: Some(callback_url(base, call_id, number, true, whisper_token)),
        ..DialOptions::default()
    }
}

/// Why there is no whisper audio.
#[derive(Debug, thiserror::Error)]
pub enum WhisperError {
    /// Unknown call, wrong token or ended call.
    #[error("unknown call or invalid whisper token")]
    NotFound,
    /// The model or the speech synthesis failed.
    #[error("the whisper could not be made: {0}")]
    Provider(#[from] nixflex_pipeline::ProviderError),
    /// The store failed.
    #[error("storage failed: {0}")]
    Store(#[from] nixflex_store::StoreError),
}

/// What the model is asked when the agent has no `transfer_whisper`.
const WHISPER_INSTRUCTIONS: &str = "You are briefing a colleague who is about to take over a phone call from you. In one or two short spoken sentences, say who is calling and what they need. No greeting, no lists.";

/// Upper bound of a generated whisper, in tokens.
const WHISPER_MAX_TOKENS: u32 = 120;

impl Engine {
    /// The audio of a warm transfer's whisper, as a WAV file (16-bit PCM, 8 kHz mono) in the
    /// voice of the call's agent: the agent's `transfer_whisper`, or a one- or two-sentence
    /// briefing the model writes from the call's transcript.
    ///
    /// The destination has answered when Twilio fetches it, so the call has just ended
    /// `transferred`: the token is accepted for a live or transferred call, and spent once the
    /// audio is made.
    ///
    /// # Errors
    /// [`WhisperError::NotFound`] unless `token` is the call's current one-time token and the
    /// call is live or transferred; provider and store failures otherwise.
    pub async fn whisper_audio(&self, call_id: &str, token: &str) -> Result<Vec<u8>, WhisperError> {
        use futures::StreamExt as _;
        use nixflex_pipeline::llm::{LlmEvent, LlmMessage, LlmRequest};
        use nixflex_pipeline::tts::TtsRequest;

        let call = self
            .store()
            .find_call(&ids::CallId::from(call_id))
            .await?
            .filter(|call| {
                Engine::token_matches(call, token)
                    && (call.ended_at.is_none()
                        || call.ended_reason == Some(EndedReason::Transferred))
            })
            .ok_or(WhisperError::NotFound)?;
        let agent_id = call.agent_id.clone().ok_or(WhisperError::NotFound)?;
        let (agent, _) = self
            .store()
            .get_agent(&call.account_id, &agent_id)
            .await?
            .ok_or(WhisperError::NotFound)?;
        let agent = agent.settings;
        let text = match agent.transfer_whisper.clone().filter(|w| !w.trim().is_empty()) {
            Some(text) => text,
            None => {
                let conversation = call
                    .transcript
                    .iter()
                    .map(|entry| {
                        let who = match entry.role {
                            nixflex_core::call::TranscriptRole::Agent => "Agent",
                            nixflex_core::call::TranscriptRole::Caller => "Caller",
                        };
                        format!("{who}: {}", entry.text)
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                let mut request = LlmRequest::new(
                    agent.llm_model.clone(),
                    vec![LlmMessage::user(format!("The call so far:\n{conversation}"))],
                );
                request.system = Some(WHISPER_INSTRUCTIONS.to_owned());
                request.max_tokens = WHISPER_MAX_TOKENS;
                let mut stream = self.providers().llm.stream(request).await?;
                let mut text = String::new();
                while let Some(event) = stream.next().await {
                    match event? {
                        LlmEvent::TextDelta(delta) => text.push_str(&delta),
                        LlmEvent::Done { .. } => break,
                        LlmEvent::ToolCall { .. } => {}
                    }
                }
                // Tags are never spoken, here either.
                let mut parser = crate::tags::TagParser::new();
                let mut segments = parser.push(&text);
                segments.extend(parser.finish());
                segments
                    .into_iter()
                    .filter_map(|segment| match segment {
                        crate::tags::Segment::Text(piece) => Some(piece),
                        crate::tags::Segment::Action(_) => None,
                    })
                    .collect::<String>()
                    .trim()
                    .to_owned()
            }
        };
        let voice_id = agent.voice_id.clone();
        let provider_voice =
            nixflex_core::catalog::find_voice(self.providers().tts_kind, &voice_id)
                .map_or(voice_id, |v| v.provider_voice_id.to_owned());
        let mut request = TtsRequest::new(text, provider_voice);
        #[allow(clippy::cast_possible_truncation)]
        let rate = agent.speaking_rate.unwrap_or(1.0) as f32;
        request.speaking_rate = rate;
        request.language = (agent.language != "multi").then(|| agent.language.clone());
        let mut stream = self.providers().tts.synthesize(request).await?;
        let mut mulaw = Vec::new();
        while let Some(chunk) = stream.next().await {
            mulaw.extend_from_slice(&chunk?);
        }
        // Spent: a new secret nobody knows replaces the token.
        let spent = CallUpdate {
            stream_token_hash: Some(hash_secret(&ids::new_key_secret())),
            ..CallUpdate::default()
        };
        self.store().update_call(&call.call_id, &spent, nixflex_store::now()).await?;
        let pcm = nixflex_pipeline::audio::mulaw::decode_all(&mulaw);
        let mut wav = Vec::with_capacity(44 + pcm.len() * 2);
        let data_len = u32::try_from(pcm.len() * 2).unwrap_or(u32::MAX);
        wav.extend_from_slice(&nixflex_pipeline::audio::wav::pcm16_mono_header(8000, data_len));
        for sample in pcm {
            wav.extend_from_slice(&sample.to_le_bytes());
        }
        Ok(wav)
    }

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
        let twiml =
            dial_twiml("https://n.example/", "call_1", "+447700900123", "+14155552671", None);
        assert!(twiml.contains(r#"timeout="10""#), "{twiml}");
        assert!(twiml.contains(r#"callerId="+14155552671""#), "{twiml}");
        assert!(
            twiml.contains(r#"action="https://n.example/twilio/transfer?call_id=call_1&amp;number=%2B447700900123""#),
            "{twiml}"
        );
        assert!(twiml.contains("&amp;event=answered\">+447700900123</Number>"), "{twiml}");
        let warm =
            dial_twiml("https://n.example", "call_1", "+447700900123", "+14155552671", Some("t1"));
        assert!(warm.contains("&amp;event=answered&amp;whisper=t1\">"), "{warm}");
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
