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
use tokio::time::Instant;
use tracing::Instrument as _;

use super::turn::{AfterFailure, MAX_FAILED_TURNS, Stage, TurnKind, TurnSource};
use super::{EndReason, STT_BATCH, Session, stt_options};
use crate::DEFAULT_OUTAGE_MESSAGE;
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

/// With another recogniser after this one in the chain, a lost connection is re-tried this
/// briefly before the call moves on to the next.
const STT_QUICK_BACKOFF: [Duration; 2] = [Duration::ZERO, Duration::from_millis(200)];

/// Caller audio kept for the recogniser while it is away or the caller speaks: 30 s of 8 kHz
/// μ-law.
const STT_BUFFER_LIMIT: usize = 30 * 8000;

/// Audio kept after a final result (400 ms): the words of a result that arrived while the
/// caller went on speaking.
const STT_KEEP_AFTER_FINAL: usize = 3200;

/// How long a recogniser has to send its final result once the end of speech was signalled
/// (Deepgram answers a `Finalize` within a few hundred ms; the emulated providers at once).
const STT_FINAL_TIMEOUT: Duration = Duration::from_millis(1000);

/// A recogniser lost again within this time of connecting, without having sent a result,
/// counts as failing, not as a passing glitch.
const STT_FLAPPING_WINDOW: Duration = Duration::from_secs(10);

/// How a recogniser was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SttLoss {
    /// The connection closed or could not be opened: worth re-opening on the same provider.
    Dropped,
    /// The provider reported an error or stalled: the next provider of the chain takes over.
    Failed,
}

/// What a round of connecting a recogniser ended with: the chain index it ended on.
pub(super) struct SttReconnect {
    index: usize,
    /// The call's first connection (not a reconnection).
    first: bool,
    result: Result<(SttInput, SttEvents), ProviderError>,
}

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

/// The outage line for an agent speaking `language` (docs/engine.md#provider-outages): the
/// server's `outage_message` when the operator changed it; otherwise the default line in the
/// agent's language (English for `multi` and languages without a translation).
pub(crate) fn outage_line<'a>(configured: &'a str, language: &str) -> &'a str {
    if configured != DEFAULT_OUTAGE_MESSAGE {
        return configured;
    }
    match language.to_ascii_lowercase().as_str() {
        "es" => "Lo siento, estoy teniendo problemas por mi parte.",
        "fr" => "Désolé, je rencontre un problème de mon côté.",
        "de" => "Entschuldigung, ich habe gerade ein technisches Problem.",
        "it" => "Mi dispiace, sto avendo un problema tecnico.",
        "pt" => "Desculpe, estou com um problema do meu lado.",
        "nl" => "Sorry, ik heb aan mijn kant een technisch probleem.",
        "ru" => "Извините, у меня технические неполадки.",
        "ja" => "申し訳ありません、こちらで問題が発生しています。",
        "hi" => "क्षमा करें, मेरी ओर से कुछ तकनीकी समस्या है।",
        "pl" => "Przepraszam, mam problem techniczny po mojej stronie.",
        "ko" => "죄송합니다, 저희 쪽에 문제가 생겼습니다.",
        "zh" => "抱歉，我这边出了点问题。",
        "he" => "סליחה, יש לי תקלה מהצד שלי.",
        "ar" => "عذرًا، أواجه مشكلة من جهتي.",
        _ => DEFAULT_OUTAGE_MESSAGE,
    }
}

impl<W> Session<W>
where
    W: Sink<String> + Unpin + Send,
{
    /// Says the outage line as its own turn.
    pub(super) fn speak_outage(&mut self) {
        let line = outage_line(&self.engine.config().outage_message, &self.setup.agent.language)
            .to_owned();
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

    /// Connects the call's first recogniser (the one pre-warmed at the webhook, if any) in
    /// the background.
    pub(super) fn open_first_stt(&mut self) {
        let engine = self.engine.clone();
        let call_id = self.setup.call.call_id.clone();
        let options = stt_options(&self.setup.agent);
        self.stt_reconnect = Some(tokio::spawn(
            async move {
                let result = engine.open_stt(&call_id, options).await;
                SttReconnect { index: 0, first: true, result }
            }
            .in_current_span(),
        ));
    }

    /// Keeps the caller's audio that the recogniser has not transcribed yet: everything since
    /// its last final result while the caller speaks or the recogniser is away, only a short
    /// tail otherwise (so a quiet call holds almost nothing).
    pub(super) fn keep_for_stt(&mut self, audio: &[u8]) {
        self.stt_pending.extend_from_slice(audio);
        let limit = if self.stt_pending_speech || self.stt_input.is_none() {
            STT_BUFFER_LIMIT
        } else {
            STT_KEEP_AFTER_FINAL
        };
        // Trimmed in steps, not every frame.
        if self.stt_pending.len() > limit + limit / 2 {
            let excess = self.stt_pending.len() - limit;
            self.stt_pending.drain(..excess);
        }
    }

    /// Hands the caller's audio gathered so far to the recogniser.
    pub(super) fn send_stt_batch(&mut self) {
        if let Some(input) = &self.stt_input
            && !self.stt_batch.is_empty()
        {
            let _ = input.push_audio(self.stt_batch.split().freeze());
            self.stt_batch.reserve(STT_BATCH);
        }
    }

    /// The recogniser sent a final result: what it heard is transcribed.
    pub(super) fn on_stt_final(&mut self) {
        self.stt_heard = true;
        self.stt_final_due = None;
        let excess = self.stt_pending.len().saturating_sub(STT_KEEP_AFTER_FINAL);
        self.stt_pending.drain(..excess);
        self.stt_pending_speech = self.vad.is_speaking();
    }

    /// The caller stopped speaking: ask the recogniser for its final result (off the audio
    /// path: its command queue may be full), which is then owed within [`STT_FINAL_TIMEOUT`].
    pub(super) fn finalize_stt(&mut self, now: Instant) {
        self.send_stt_batch();
        if let Some(input) = &self.stt_input {
            let input = input.clone();
            tokio::spawn(async move { input.finalize().await }.in_current_span());
            self.stt_final_due = Some(now + STT_FINAL_TIMEOUT);
        }
    }

    /// A recogniser that owes a final result past its time has stalled: it is replaced as if
    /// it had failed, and what it did not transcribe is replayed into the next one.
    pub(super) fn check_stt_stall(&mut self, now: Instant) {
        if let Some(due) = self.stt_final_due
            && now >= due
        {
            self.stt_final_due = None;
            if self.stt_input.is_some() {
                tracing::warn!(message = "Speech recognition stalled: no final result in time.");
                let error = ProviderError::timeout("no final result after the end of speech");
                self.stt_lost(Some(error), SttLoss::Failed);
            }
        }
    }

    /// Speech recognition was lost: keep the caller's audio and connect a recogniser in the
    /// background (the loop keeps pacing audio meanwhile). A dropped connection is first
    /// re-opened on the same provider; a failure, a stall, or a connection that drops again
    /// before it transcribed anything moves the call down the chain at once.
    pub(super) fn stt_lost(&mut self, error: Option<ProviderError>, loss: SttLoss) {
        self.stt_input = None;
        // Still in `stt_pending`: replayed into the next recogniser.
        self.stt_batch.clear();
        self.stt_events = None;
        self.stt_final_due = None;
        let error = error.unwrap_or_else(|| ProviderError::transport("the recogniser closed"));
        // Lost again soon after it was reconnected, without a single result: not a passing
        // glitch.
        let flapping = self
            .stt_connected_at
            .take()
            .is_some_and(|at| !self.stt_heard && at.elapsed() < STT_FLAPPING_WINDOW);
        if self.stt_reconnect.is_some() {
            return;
        }
        let index = self.stt_index;
        // A recogniser too slow to connect or to answer is not worth waiting for again.
        let move_on = loss == SttLoss::Failed
            || flapping
            || error.kind == nixflex_pipeline::ProviderErrorKind::Timeout;
        if move_on && let Some(next) = self.providers.stt_switch(index, &error) {
            self.stt_index = next;
            self.stt_lost_error = None;
            self.spawn_stt_reconnect(Duration::ZERO);
            return;
        }
        if flapping {
            // The last recogniser of the chain keeps failing: a failed round.
            self.stt_lost_error = None;
            self.on_stt_round_failed(error);
            return;
        }
        if self.stt_lost_error.is_none() {
            self.stt_lost_error = Some(error);
        }
        self.spawn_stt_reconnect(Duration::ZERO);
    }

    /// Connects the recogniser at `self.stt_index` after `first_wait`, with backoff: a short
    /// round when another recogniser follows it in the chain (then the task moves on to that
    /// one), a longer one for the last.
    fn spawn_stt_reconnect(&mut self, first_wait: Duration) {
        let options = stt_options(&self.setup.agent);
        let providers = self.providers.clone();
        let start = self.stt_index;
        self.stt_reconnect = Some(tokio::spawn(
            async move {
                let mut index = start;
                let mut wait_first = first_wait;
                loop {
                    let stt = providers.stt_at(index);
                    let waits: &[Duration] = if providers.stt_has_next(index) {
                        &STT_QUICK_BACKOFF
                    } else {
                        &STT_BACKOFF
                    };
                    let mut last = ProviderError::transport("the recogniser could not reconnect");
                    for (attempt, wait) in waits.iter().enumerate() {
                        let wait = if attempt == 0 { wait_first.max(*wait) } else { *wait };
                        tokio::time::sleep(wait).await;
                        match stt.open(options.clone()).await {
                            Ok((input, events)) => {
                                return SttReconnect {
                                    index,
                                    first: false,
                                    result: Ok((input, events)),
                                };
                            }
                            Err(error) => last = error,
                        }
                    }
                    match providers.stt_switch(index, &last) {
                        Some(next) => {
                            index = next;
                            wait_first = Duration::ZERO;
                        }
                        None => return SttReconnect { index, first: false, result: Err(last) },
                    }
                }
            }
            .in_current_span(),
        ));
    }

    /// A round of connecting ended: replay what the recogniser has not transcribed, or say the
    /// outage line and try again (after [`MAX_FAILED_TURNS`] failures: give up).
    pub(super) fn on_stt_reconnected(&mut self, reconnect: SttReconnect) {
        self.stt_reconnect = None;
        let previous = self.stt_index;
        self.stt_index = reconnect.index;
        let name = self.providers.stt_name(reconnect.index);
        match reconnect.result {
            Ok((input, events)) => {
                for piece in self.stt_pending.chunks(REPLAY_CHUNK) {
                    let _ = input.push_audio(Bytes::copy_from_slice(piece));
                }
                let error = self.stt_lost_error.take();
                if previous == reconnect.index && error.is_some() {
                    self.providers.record(
                        ProviderStage::Stt,
                        name,
                        "reconnected",
                        None,
                        error.as_ref(),
                    );
                }
                let now = Instant::now();
                self.stt_connected_at = (!reconnect.first).then_some(now);
                self.stt_heard = false;
                self.stt_input = Some(input);
                self.stt_events = Some(events);
                // The caller already stopped: their words are all in the replay.
                if self.stt_pending_speech && !self.vad.is_speaking() {
                    self.finalize_stt(now);
                }
            }
            Err(error) if reconnect.first => {
                tracing::error!(message = "Speech recognition unavailable at call start.", error = %error);
                self.stt_lost(Some(error), SttLoss::Dropped);
            }
            Err(error) => {
                self.stt_lost_error = None;
                self.on_stt_round_failed(error);
            }
        }
    }

    /// No recogniser of the chain could be used: a failed turn. The caller hears the outage
    /// line (when nothing else is being said) and the last recogniser is tried again, until
    /// [`MAX_FAILED_TURNS`].
    fn on_stt_round_failed(&mut self, error: ProviderError) {
        let name = self.providers.stt_name(self.stt_index);
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
            self.spawn_stt_reconnect(STT_BACKOFF[1]);
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
        let line = outage_line(&self.engine.config().outage_message, &agent.language);
        let mut response = Response::new().say_with(line, &options);
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
    fn the_default_outage_line_follows_the_agent_language_and_a_configured_one_wins() {
        assert_eq!(outage_line(DEFAULT_OUTAGE_MESSAGE, "en"), DEFAULT_OUTAGE_MESSAGE);
        assert_eq!(outage_line(DEFAULT_OUTAGE_MESSAGE, "multi"), DEFAULT_OUTAGE_MESSAGE);
        assert_eq!(
            outage_line(DEFAULT_OUTAGE_MESSAGE, "DE"),
            "Entschuldigung, ich habe gerade ein technisches Problem."
        );
        assert_eq!(outage_line("We'll be right back.", "de"), "We'll be right back.");
        // Every language the carrier can say has its own line.
        for language in nixflex_core::catalog::LANGUAGES {
            if language.code != "en" && say_language(language.code).is_some() {
                assert_ne!(
                    outage_line(DEFAULT_OUTAGE_MESSAGE, language.code),
                    DEFAULT_OUTAGE_MESSAGE
                );
            }
        }
    }

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
