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
//!
//! A warm transfer (`transfer_type: warm`, or the legacy `[TRANSFER:+E164:warm]`) goes through a
//! conference named after the call ([`conference_name`]), as Twilio recommends for warm
//! hand-offs ([`Engine::start_warm_transfer`]):
//! 1. The destination is called with the Calls API (10 s answer timeout, the business number as
//!    caller ID); its answer URL and status callback carry a one-time token.
//! 2. The caller's live call is redirected to [`hold_twiml`]: a conference they wait in on hold
//!    (`startConferenceOnEnter="false"`). The session lets go of the call as for a cold transfer.
//! 3. The destination answers: its answer URL ([`WarmEvent::Answered`]) ends the call
//!    `transferred` and answers [`destination_twiml`]: `<Play>` of [`Engine::whisper_audio`] — a
//!    private briefing in the agent's voice (`transfer_whisper`, or a summary the model writes
//!    from the transcript) — then the conference, which starts when they enter: the caller is
//!    taken off hold and the two talk. Whoever leaves first ends it; the caller's `<Dial action>`
//!    then answers `<Hangup/>`.
//! 4. Nobody answers: the destination leg's final status ([`WarmEvent::Status`]) redirects the
//!    caller's live call (REST) to a new `<Connect><Stream>`, exactly as step 3 of a cold
//!    transfer, and the agent tells the caller.

use std::time::Duration;

use nixflex_core::call::{CallRecord, CallStatus, EndedReason};
use nixflex_core::crypto::hash_secret;
use nixflex_core::ids;
use nixflex_providers::twilio::twiml::{self, ConferenceOptions, DialOptions};
use nixflex_providers::twilio::{
    CallTarget, CreateCall, TwilioCredentials, TwilioError, UpdateCall,
};
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
/// `event=answered` for the `<Number url>` of a cold transfer.
pub fn callback_url(base: &str, call_id: &str, number: &str, answered: bool) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("call_id", call_id).append_pair("number", number);
    if answered {
        query.append_pair("event", "answered");
    }
    format!("{}/twilio/transfer?{}", base.trim_end_matches('/'), query.finish())
}

/// What a warm transfer's callbacks report (the `event` of [`warm_url`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmEvent {
    /// `warm-answered`: the destination leg's answer URL.
    Answered,
    /// `warm-status`: the destination leg's final status.
    Status,
    /// `warm-held`: the caller's `<Dial action>`, once they left the conference.
    HoldEnded,
}

impl WarmEvent {
    /// The `event` query value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "warm-answered",
            Self::Status => "warm-status",
            Self::HoldEnded => "warm-held",
        }
    }

    /// Parses the `event` query value.
    pub fn parse(value: &str) -> Option<Self> {
        [Self::Answered, Self::Status, Self::HoldEnded].into_iter().find(|e| e.as_str() == value)
    }
}

/// A warm transfer's callback URL: `/twilio/transfer` with the call id, the number, the event
/// and (on the destination leg, whose requests carry another call's SID) the one-time token.
pub fn warm_url(
    base: &str,
    call_id: &str,
    number: &str,
    event: WarmEvent,
    token: Option<&str>,
) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("call_id", call_id)
        .append_pair("number", number)
        .append_pair("event", event.as_str());
    if let Some(token) = token {
        query.append_pair("token", token);
    }
    format!("{}/twilio/transfer?{}", base.trim_end_matches('/'), query.finish())
}

/// The conference a warm transfer meets in: one per call.
pub fn conference_name(call_id: &str) -> String {
    format!("nixflex-transfer-{call_id}")
}

/// The caller's side of a warm transfer: on hold in the call's conference until the
/// destination enters; when they leave, the `<Dial action>` ([`WarmEvent::HoldEnded`]) hangs up.
pub fn hold_twiml(base: &str, call_id: &str, number: &str) -> String {
    let options = ConferenceOptions {
        action: Some(warm_url(base, call_id, number, WarmEvent::HoldEnded, None)),
        method: Some("POST".to_owned()),
        start_on_enter: Some(false),
        end_on_exit: Some(true),
        beep: Some(false),
        wait_url: None,
    };
    twiml::Response::new().dial_conference(&conference_name(call_id), &options).to_xml()
}

/// The destination's side of a warm transfer once they answer: the whisper, then the
/// conference, which starts as they enter and ends when they leave.
pub fn destination_twiml(base: &str, call_id: &str, whisper_token: &str) -> String {
    let options = ConferenceOptions {
        start_on_enter: Some(true),
        end_on_exit: Some(true),
        beep: Some(false),
        ..ConferenceOptions::default()
    };
    twiml::Response::new()
        .play(&whisper_url(base, call_id, whisper_token))
        .dial_conference(&conference_name(call_id), &options)
        .to_xml()
}

/// Why a warm transfer could not start.
#[derive(Debug, thiserror::Error)]
pub enum WarmTransferError {
    /// The destination could not be called.
    #[error("the destination could not be called: {0}")]
    Dial(TwilioError),
    /// The caller could not be put on hold (the destination's call was cancelled).
    #[error("the caller could not be put on hold: {0}")]
    Hold(TwilioError),
}

/// A warm transfer to start.
#[derive(Debug, Clone, Copy)]
pub struct WarmTransfer<'a> {
    /// The server's public URL.
    pub base: &'a str,
    /// The account's Twilio credentials (of the business number).
    pub credentials: &'a TwilioCredentials,
    /// Our call id.
    pub call_id: &'a str,
    /// The caller's live call at the carrier.
    pub call_sid: &'a str,
    /// The destination (E.164).
    pub number: &'a str,
    /// The business number, shown to the destination.
    pub business_number: &'a str,
    /// The one-time token of the destination leg's callbacks and the whisper.
    pub token: &'a str,
}

/// The URL of a warm transfer's whisper audio (`GET`, authenticated by the one-time token).
pub fn whisper_url(base: &str, call_id: &str, token: &str) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("call_id", call_id).append_pair("token", token);
    format!("{}/twilio/whisper?{}", base.trim_end_matches('/'), query.finish())
}

/// The TwiML of a cold transfer to `number`: ring it for at most [`TRANSFER_ANSWER_TIMEOUT`],
/// showing the business number, and report back.
pub fn dial_twiml(base: &str, call_id: &str, number: &str, business_number: &str) -> String {
    twiml::dial_number(number, &dial_options(base, call_id, number, business_number))
}

/// The `<Dial>` options of a cold transfer to `number` (see [`dial_twiml`]).
pub fn dial_options(base: &str, call_id: &str, number: &str, business_number: &str) -> DialOptions {
    DialOptions {
        action: Some(callback_url(base, call_id, number, false)),
        method: Some("POST".to_owned()),
        caller_id: Some(business_number.to_owned()),
        timeout: Some(TRANSFER_ANSWER_TIMEOUT),
        number_url: Some(callback_url(base, call_id, number, true)),
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
    /// Starts a warm transfer: calls the destination (answer URL and final status on
    /// `/twilio/transfer` with the one-time token), then redirects the caller's live call into
    /// the conference on hold. When the caller cannot be put on hold the destination's call is
    /// cancelled, so nobody is called for nothing.
    ///
    /// # Errors
    /// [`WarmTransferError`] when either carrier request failed; the caller is then still with
    /// the agent.
    pub async fn start_warm_transfer(
        &self,
        transfer: &WarmTransfer<'_>,
    ) -> Result<(), WarmTransferError> {
        let url = |event| {
            warm_url(transfer.base, transfer.call_id, transfer.number, event, Some(transfer.token))
        };
        let mut create = CreateCall::new(
            transfer.number.to_owned(),
            transfer.business_number.to_owned(),
            CallTarget::Url(url(WarmEvent::Answered)),
        );
        create.method = Some("POST".to_owned());
        // The final status is always sent; no progress events are needed.
        create.status_callback = Some(url(WarmEvent::Status));
        create.status_callback_method = Some("POST".to_owned());
        create.timeout = Some(TRANSFER_ANSWER_TIMEOUT);
        let leg = self
            .twilio()
            .create_call(transfer.credentials, &create)
            .await
            .map_err(WarmTransferError::Dial)?;
        let hold = hold_twiml(transfer.base, transfer.call_id, transfer.number);
        if let Err(error) = self
            .twilio()
            .update_call(transfer.credentials, transfer.call_sid, &UpdateCall::twiml(hold))
            .await
        {
            if let Err(cancel) = self
                .twilio()
                .update_call(transfer.credentials, &leg.sid, &UpdateCall::cancel())
                .await
            {
                tracing::warn!(message = "Could not cancel the destination's call of a failed warm transfer.", error = %cancel);
            }
            return Err(WarmTransferError::Hold(error));
        }
        tracing::info!(message = "Warm transfer: destination called, caller on hold.", call_id = transfer.call_id, destination_call_sid = %leg.sid);
        Ok(())
    }

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
    fn a_warm_transfer_holds_the_caller_and_the_destination_starts_the_conference() {
        let hold = hold_twiml("https://n.example/", "call_1", "+447700900123");
        assert!(
            hold.contains(r#"<Conference beep="false" endConferenceOnExit="true" startConferenceOnEnter="false">nixflex-transfer-call_1</Conference>"#),
            "{hold}"
        );
        assert!(hold.contains("&amp;event=warm-held\" method=\"POST\""), "{hold}");
        assert!(!hold.contains("token="), "the caller's leg needs no token: {hold}");
        let join = destination_twiml("https://n.example", "call_1", "t1");
        assert!(
            join.contains("<Play>https://n.example/twilio/whisper?call_id=call_1&amp;token=t1</Play><Dial><Conference beep=\"false\" endConferenceOnExit=\"true\" startConferenceOnEnter=\"true\">nixflex-transfer-call_1</Conference></Dial>"),
            "{join}"
        );
        let status =
            warm_url("https://n.example", "call_1", "+447700900123", WarmEvent::Status, Some("t1"));
        assert_eq!(
            status,
            "https://n.example/twilio/transfer?call_id=call_1&number=%2B447700900123&event=warm-status&token=t1"
        );
        for event in [WarmEvent::Answered, WarmEvent::Status, WarmEvent::HoldEnded] {
            assert_eq!(WarmEvent::parse(event.as_str()), Some(event));
        }
        assert_eq!(WarmEvent::parse("answered"), None);
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
