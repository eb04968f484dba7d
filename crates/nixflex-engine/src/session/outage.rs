//! Provider outages during a call (docs/engine.md#provider-outages): what a failed turn leads
//! to (the outage line; after [`MAX_FAILED_TURNS`] failed turns in a row a transfer or the
//! end of the call), speech recognition reconnecting with backoff while the caller's audio is
//! buffered and then replayed, and the carrier's last word when speech synthesis is down.

use std::time::Duration;

use bytes::Bytes;
use futures::Sink;
use nixflex_core::phone;
use nixflex_pipeline::ProviderError;
use nixflex_pipeline::stt::{SttEvents, SttInput};
use nixflex_providers::twilio::UpdateCall;
use nixflex_providers::twilio::twiml::{Response, SayOptions};
use tracing::Instrument as _;

use super::turn::{AfterFailure, MAX_FAILED_TURNS, Stage, TurnKind, TurnSource};
use super::{EndReason, Session, stt_options};
use crate::providers::ProviderStage;
use crate::transfer;

/// Waits before each attempt of one round of reconnecting speech recognition: about 3 s in all,
/// so a short outage loses no words and a long one is noticed soon.
const STT_BACKOFF: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
    Duration::from_millis(1600),
];

/// Caller audio kept for the recogniser while it reconnects: 30 s of 8 kHz μ-law.
const STT_BUFFER_LIMIT: usize = 30 * 8000;

/// Replayed into a new recogniser in pieces of this size (100 ms).
const REPLAY_CHUNK: usize = 800;

/// The `<Say language>` of an agent language (Twilio's codes); `None` for `multi` and unknown
/// codes (the carrier then uses its default).
pub(crate) fn say_language(language: &str) -> Option<&'static str> {
    Some(match language.to_ascii_lowercase().as_str() {
        "en" => "en-US",
        "es" => "es-ES",
        "fr" => "fr-FR",
        "de" => "de-DE",
        "it" => "it-IT",
        "pt" => "pt-BR",
        "nl" => "nl-NL",
        "ru" => "ru-RU",
        "ja" => "ja-JP",
        "hi" => "hi-IN",
        "pl" => "pl-PL",
        "ko" => "ko-KR",
        "zh" => "cmn-CN",
        "he" => "he-IL",
        "ar" => "arb",
        _ => return None,
    })
}

impl<W> Session<W>
where
    W: Sink<String> + Unpin + Send,
{
    /// Says the outage line as its own turn.
    pub(super) fn speak_outage(&mut self) {
        let line = self.engine.config().outage_message.clone();
        self.start_turn(TurnSource::Text(line), TurnKind::Outage);
    }

    /// A turn failed at `stage` (the chain already retried and switched what it could).
    pub(super) fn on_turn_failed(
        &mut self,
        kind: TurnKind,
        stage: Stage,
        provider: &'static str,
        exhausted: bool,
    ) {
        if kind != TurnKind::Outage {
            self.failed_turns += 1;
        }
        tracing::warn!(message = "Failed turn.", stage = ?stage, provider, failed_turns = self.failed_turns);
        match kind.after_failure(stage, exhausted, self.failed_turns) {
            AfterFailure::SpeakOutage => self.speak_outage(),
            AfterFailure::GiveUp => self.give_up(kind != TurnKind::Outage),
            AfterFailure::CarrierSays => {
                self.last_word = true;
                self.cancel_turn();
                self.ended = Some(EndReason::Error);
            }
        }
    }

    /// Too many failures in a row: after the outage line (when `speak`), transfer to the
    /// agent's `transfer_number`, or end the call (`error`).
    fn give_up(&mut self, speak: bool) {
        if speak {
            self.speak_outage();
        }
        if self.end_after_playout.is_some() {
            return;
        }
        let has_transfer =
            self.setup.agent.transfer_number.as_deref().and_then(phone::parse_e164).is_some();
        if has_transfer {
            self.request_transfer(None, false);
        } else {
            self.end_after_playout = Some(EndReason::Error);
        }
    }

    /// Speech recognition failed: buffer the caller's audio and reconnect in the background
    /// (the loop keeps pacing audio meanwhile).
    pub(super) fn stt_lost(&mut self, error: Option<ProviderError>) {
        self.stt_input = None;
        self.stt_events = None;
        if self.stt_buffer.is_none() {
            self.stt_buffer = Some(Vec::new());
        }
        if self.stt_lost_error.is_none() {
            self.stt_lost_error =
                Some(error.unwrap_or_else(|| ProviderError::transport("the recogniser closed")));
        }
        if self.stt_reconnect.is_none() {
            self.spawn_stt_reconnect();
        }
    }

    fn spawn_stt_reconnect(&mut self) {
        let options = stt_options(&self.setup.agent);
        let stt = self.engine.providers().stt.clone();
        self.stt_reconnect = Some(tokio::spawn(
            async move {
                let mut last = ProviderError::transport("the recogniser could not reconnect");
                for wait in STT_BACKOFF {
                    tokio::time::sleep(wait).await;
                    match stt.open(options.clone()).await {
                        Ok(session) => return Ok(session),
                        Err(error) => last = error,
                    }
                }
                Err(last)
            }
            .in_current_span(),
        ));
    }

    /// Keeps the caller's audio for the recogniser while it is away.
    pub(super) fn buffer_for_stt(&mut self, audio: &[u8]) {
        if let Some(buffer) = self.stt_buffer.as_mut() {
            buffer.extend_from_slice(audio);
            if buffer.len() > STT_BUFFER_LIMIT {
                let excess = buffer.len() - STT_BUFFER_LIMIT;
                buffer.drain(..excess);
            }
        }
    }

    /// A round of reconnecting ended: replay what the caller said meanwhile, or say the
    /// outage line and try again (after [`MAX_FAILED_TURNS`] failures: give up).
    pub(super) fn on_stt_reconnected(
        &mut self,
        result: Result<(SttInput, SttEvents), ProviderError>,
    ) {
        self.stt_reconnect = None;
        let name = self.providers.stt_name();
        match result {
            Ok((input, events)) => {
                if let Some(buffer) = self.stt_buffer.take() {
                    for piece in buffer.chunks(REPLAY_CHUNK) {
                        let _ = input.push_audio(Bytes::copy_from_slice(piece));
                    }
                }
                let error = self.stt_lost_error.take();
                self.providers.record(
                    ProviderStage::Stt,
                    name,
                    "reconnected",
                    None,
                    error.as_ref(),
                );
                self.stt_input = Some(input);
                self.stt_events = Some(events);
            }
            Err(error) => {
                tracing::error!(message = "Speech recognition could not reconnect.", error = %error);
                self.providers.record(ProviderStage::Stt, name, "failed", None, Some(&error));
                self.failed_turns += 1;
                if self.failed_turns >= MAX_FAILED_TURNS {
                    self.cancel_turn();
                    self.give_up(true);
                } else {
                    if self.idle() {
                        self.speak_outage();
                    }
                    self.spawn_stt_reconnect();
                }
            }
        }
    }

    /// Speech synthesis is down: the carrier says the outage line in its own voice (in the
    /// agent's language), then dials the agent's transfer number or hangs up. Returns how the
    /// session ends when the carrier took the call; `None` when it refused (the call is then
    /// hung up as usual).
    pub(super) async fn carrier_last_word(&mut self) -> Option<EndReason> {
        let sid = self.setup.call.twilio_call_sid.clone()?;
        let agent = &self.setup.agent;
        let options =
            SayOptions { voice: None, language: say_language(&agent.language).map(str::to_owned) };
        let mut response = Response::new().say_with(&self.engine.config().outage_message, &options);
        let number = agent.transfer_number.as_deref().and_then(phone::parse_e164);
        let reason = match (number, self.engine.config().public_url.clone()) {
            (Some(number), Some(base)) => {
                let dial = transfer::dial_options(
                    &base,
                    self.setup.call.call_id.as_str(),
                    &number,
                    self.setup.number.phone_number.as_str(),
                );
                response = response.dial_number(&number, &dial);
                EndReason::Transferred
            }
            _ => {
                response = response.hangup();
                EndReason::Error
            }
        };
        let update = UpdateCall::twiml(response.to_xml());
        match self.engine.twilio().update_call(&self.setup.credentials, &sid, &update).await {
            Ok(_) => {
                self.providers.record(ProviderStage::Tts, "twilio", "carrier_say", None, None);
                tracing::warn!(
                    message = "Speech synthesis is down: the carrier says the outage line."
                );
                Some(reason)
            }
            Err(error) => {
                tracing::error!(message = "The carrier refused the outage line.", error = %error, twilio_code = error.twilio_code());
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn say_languages_are_the_carriers_codes_and_multi_has_none() {
        assert_eq!(say_language("en"), Some("en-US"));
        assert_eq!(say_language("DE"), Some("de-DE"));
        assert_eq!(say_language("multi"), None);
        for language in nixflex_core::catalog::LANGUAGES {
            assert_eq!(
                say_language(language.code).is_some(),
                language.code != "multi",
                "{}",
                language.code
            );
        }
    }
}
