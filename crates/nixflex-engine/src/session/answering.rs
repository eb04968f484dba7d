//! The start of a call that the agent does not open with a greeting, and answering machines
//! (docs/engine.md#greeting, docs/engine.md#voicemail).
//!
//! - **Opener.** An outbound call waits for the callee's first words for up to the agent's
//!   `pickup_delay`; the agent then speaks an opener the LLM writes from the call's purpose
//!   (already in the system prompt). When the callee spoke first, the same instruction rides
//!   along with their words.
//! - **Voicemail.** During the call's first seconds two detectors run: the phrase matcher over
//!   the other side's final transcripts, and (outbound calls of agents with `amd_enabled`) the
//!   carrier's answering-machine verdict, which the `/twilio/amd` callback stores on the call on
//!   whichever node it reaches — the session polls the stored `amd_result`, off the audio path.
//!   The first to fire wins. Then the call hangs up (`ended_reason: voicemail`), carries on
//!   (`ignore`), or stops the agent, waits for the beep (or a timeout) and speaks the voicemail
//!   message verbatim before hanging up.

use std::time::Duration;

use futures::Sink;
use nixflex_core::agent::AgentSettings;
use nixflex_core::call::Direction;
use nixflex_core::number::NumberSettings;
use nixflex_pipeline::llm::LlmMessage;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument as _;

use super::turn::{TurnKind, TurnSource};
use super::{EndReason, Session};
use crate::voicemail::{BeepDetector, PhraseMatcher};

/// Voicemail is only looked for in the call's first seconds: greetings are short, and later a
/// person saying "leave a message" is not a machine.
pub(super) const DETECTION_WINDOW: Duration = Duration::from_secs(30);
/// How often the stored AMD verdict is read during the detection window.
const AMD_POLL_EVERY: Duration = Duration::from_millis(400);
/// How long the agent waits for the beep after detecting a voicemail before speaking anyway.
pub(super) const BEEP_TIMEOUT: Duration = Duration::from_secs(10);
/// A beep heard this shortly before the greeting was recognised is the greeting's own (the
/// greeting's last words are often transcribed only once the beep after it has played).
const BEEP_RECENT: Duration = Duration::from_secs(3);
/// How long the voicemail message may take to play before the call is ended anyway.
const MESSAGE_GRACE: Duration = Duration::from_secs(120);
/// Told to the model when pickup_delay passed without a word from the callee.
const OPENER_NOTE: &str = "[The call connected. Introduce yourself and the reason for the call, in one or two short sentences.]";
/// Told to the model along with the callee's first words.
const OPENER_AFTER_HELLO_NOTE: &str =
    "[The call connected and the callee answered. Introduce yourself and the reason for the call.]";

/// Which detector found the voicemail (`voicemail_detection_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DetectionMethod {
    /// The carrier's answering-machine detection.
    Amd,
    /// The engine's phrase matcher over the transcript.
    Transcript,
}

impl DetectionMethod {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Amd => "amd",
            Self::Transcript => "transcript",
        }
    }
}

/// What a call does once it reached voicemail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VoicemailAction {
    /// End the call at once, without a message.
    Hangup,
    /// Wait for the beep and speak this text verbatim, then hang up.
    LeaveMessage(String),
    /// Carry on as if a person had answered.
    Ignore,
}

impl VoicemailAction {
    /// The action of a call: an outbound request's `voicemail_action` (with its
    /// `voicemail_message`, else the number's message) decides; otherwise the number's
    /// `voicemail_leave_enabled` and `voicemail_message`. Numbers are imported through the API,
    /// and for those the number's setting is the only one that applies (`null` hangs up
    /// silently; docs/engine.md#voicemail). Inbound calls always hang up.
    pub(crate) fn resolve(
        direction: Direction,
        number: &NumberSettings,
        requested: Option<&str>,
        requested_message: Option<&str>,
    ) -> Self {
        if direction == Direction::Inbound {
            return Self::Hangup;
        }
        let message = |first: Option<&str>| {
            first
                .or(number.voicemail_message.as_deref())
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
        };
        match requested {
            Some("ignore") => Self::Ignore,
            Some("leave_message") => {
                message(requested_message).map_or(Self::Hangup, Self::LeaveMessage)
            }
            Some(_) => Self::Hangup,
            None if number.voicemail_leave_enabled == Some(true) => {
                message(None).map_or(Self::Hangup, Self::LeaveMessage)
            }
            None => Self::Hangup,
        }
    }
}

/// Whether a carrier AMD verdict means a machine answered.
pub(crate) fn is_machine(answered_by: &str) -> bool {
    answered_by.starts_with("machine_") || answered_by == "fax"
}

/// The session's opener and voicemail state.
pub(super) struct Answering {
    action: VoicemailAction,
    phrases: PhraseMatcher,
    detect_until: Instant,
    amd_next: Option<Instant>,
    amd_poll: Option<JoinHandle<Option<String>>>,
    pub(super) detected: Option<DetectionMethod>,
    /// Listens for a beep during the detection window and while a message waits.
    beep_detector: BeepDetector,
    last_beep: Option<Instant>,
    /// A message waits for the beep until then.
    beep: Option<Instant>,
    opener_at: Option<Instant>,
    /// When the voicemail message started playing (the only billed part of a voicemail call).
    message_started: Option<Instant>,
}

impl Answering {
    pub(super) fn new(
        direction: Direction,
        agent: &AgentSettings,
        action: VoicemailAction,
        started: Instant,
    ) -> Self {
        let amd = direction == Direction::Outbound && agent.amd_enabled;
        Self {
            action,
            phrases: PhraseMatcher::new(),
            detect_until: started + DETECTION_WINDOW,
            amd_next: amd.then_some(started),
            amd_poll: None,
            detected: None,
            message_started: None,
            beep_detector: BeepDetector::new(),
            last_beep: None,
            beep: None,
            opener_at: None,
        }
    }

    /// The opener or the beep is awaited: silence re-prompts and hang-ups wait.
    pub(super) fn holds_line(&self) -> bool {
        self.opener_at.is_some() || self.beep.is_some()
    }

    /// The next time this state has something to do.
    pub(super) fn deadline(&self) -> Option<Instant> {
        [self.opener_at, self.amd_next, self.beep].into_iter().flatten().min()
    }
}

impl<W> Session<W>
where
    W: Sink<String> + Unpin + Send,
{
    /// An outbound call's start: wait for the callee's first words up to `pickup_delay`.
    pub(super) fn await_pickup(&mut self, now: Instant) {
        let delay = Duration::from_secs(u64::from(self.setup.agent.pickup_delay));
        self.answering.opener_at = Some(now + delay);
    }

    /// The note that asks for the opener along with the callee's first words, once.
    pub(super) fn take_opener_note(&mut self) -> Option<&'static str> {
        self.answering.opener_at.take().map(|_| OPENER_AFTER_HELLO_NOTE)
    }

    /// A final transcript of the other side, for the phrase matcher.
    pub(super) async fn voicemail_heard(&mut self, text: &str, now: Instant) {
        if self.answering.detected.is_some() || now >= self.answering.detect_until {
            return;
        }
        if let Some(found) = self.answering.phrases.push(text) {
            tracing::info!(
                message = "Voicemail greeting recognised.",
                phrase = found.phrase,
                language = found.language
            );
            self.on_voicemail(DetectionMethod::Transcript, now).await;
        }
    }

    /// A frame of the other side's audio, for the beep detector while a message waits.
    pub(super) fn voicemail_audio(&mut self, frame: &[u8], now: Instant) {
        let listening = self.answering.beep.is_some()
            || (self.answering.detected.is_none()
                && now < self.answering.detect_until
                && matches!(self.answering.action, VoicemailAction::LeaveMessage(_)));
        if !listening || self.answering.beep_detector.push_frame(frame).is_none() {
            return;
        }
        self.answering.last_beep = Some(now);
        if self.answering.beep.is_some() {
            tracing::info!(message = "Voicemail beep heard: leaving the message.");
            self.leave_message(now);
        }
    }

    /// What the opener, the AMD poll and the beep's timeout do when their time comes.
    pub(super) async fn on_answering_tick(&mut self, now: Instant) {
        if let Some(at) = self.answering.opener_at
            && at <= now
        {
            if self.vad.is_speaking() || !self.turns.pending_text().is_empty() || !self.idle() {
                // The callee is talking right now: their words will carry the note.
                self.answering.opener_at = Some(now + Duration::from_millis(200));
            } else {
                self.answering.opener_at = None;
                let mut messages = self.history.clone();
                messages.push(LlmMessage::user(OPENER_NOTE));
                let request = self.llm_request(messages);
                self.start_turn(TurnSource::Llm(request), TurnKind::Greeting);
            }
        }
        if let Some(at) = self.answering.amd_next
            && at <= now
        {
            self.poll_amd(now).await;
        }
        if let Some(at) = self.answering.beep
            && at <= now
        {
            tracing::info!(message = "No voicemail beep heard in time: leaving the message.");
            self.leave_message(now);
        }
    }

    async fn poll_amd(&mut self, now: Instant) {
        let verdict = match self.answering.amd_poll.take() {
            Some(task) if task.is_finished() => task.await.ok().flatten(),
            Some(task) => {
                // The last read is still running: check again shortly.
                self.answering.amd_poll = Some(task);
                self.answering.amd_next = Some(now + AMD_POLL_EVERY);
                return;
            }
            None => None,
        };
        if let Some(verdict) = verdict {
            // The carrier decided: stop polling, whatever it said.
            self.answering.amd_next = None;
            if is_machine(&verdict) && self.answering.detected.is_none() {
                tracing::info!(message = "Carrier AMD: a machine answered.", answered_by = %verdict);
                self.on_voicemail(DetectionMethod::Amd, now).await;
            }
            return;
        }
        if now >= self.answering.detect_until || self.answering.detected.is_some() {
            self.answering.amd_next = None;
            return;
        }
        let store = self.engine.store().clone();
        let call_id = self.setup.call.call_id.clone();
        self.answering.amd_poll =
            Some(
                tokio::spawn(
                    async move {
                        store.find_call(&call_id).await.ok().flatten().and_then(|c| c.amd_result)
                    }
                    .in_current_span(),
                ),
            );
        self.answering.amd_next = Some(now + AMD_POLL_EVERY);
    }

    async fn on_voicemail(&mut self, method: DetectionMethod, now: Instant) {
        self.answering.detected = Some(method);
        self.answering.amd_next = None;
        if let Some(task) = self.answering.amd_poll.take() {
            task.abort();
        }
        // The carrier's verdict comes without a greeting heard: it never leaves a message.
        let action = match (&self.answering.action, method) {
            (VoicemailAction::LeaveMessage(_), DetectionMethod::Amd) => VoicemailAction::Hangup,
            (action, _) => action.clone(),
        };
        tracing::info!(
            message = "Voicemail reached.",
            method = method.as_str(),
            action = match action {
                VoicemailAction::Hangup => "hangup",
                VoicemailAction::LeaveMessage(_) => "leave_message",
                VoicemailAction::Ignore => "ignore",
            }
        );
        match action {
            VoicemailAction::Ignore => {}
            VoicemailAction::Hangup => self.ended = Some(EndReason::Voicemail),
            VoicemailAction::LeaveMessage(_) => {
                self.answering.opener_at = None;
                if self.agent_audible() {
                    self.barge_in_now().await;
                }
                self.cancel_turn();
                // Nothing the machine "says" is answered, and the message is not interrupted.
                self.goodbye_started = true;
                self.silence_since = None;
                if self.answering.last_beep.is_some_and(|at| now.duration_since(at) <= BEEP_RECENT)
                {
                    tracing::info!(message = "Voicemail beep already heard: leaving the message.");
                    self.leave_message(now);
                } else {
                    self.answering.beep = Some(now + BEEP_TIMEOUT);
                }
            }
        }
    }

    /// The seconds a call that reached voicemail is billed for: the message it left, none when
    /// it hung up at detection (docs/engine.md#voicemail). `None` for any other call.
    pub(super) fn voicemail_billable_seconds(&self, reason: EndReason) -> Option<i64> {
        (reason == EndReason::Voicemail).then(|| {
            self.answering
                .message_started
                .map_or(0, |started| i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX))
        })
    }

    fn leave_message(&mut self, now: Instant) {
        self.answering.beep = None;
        let VoicemailAction::LeaveMessage(message) = self.answering.action.clone() else { return };
        self.end_after_playout = Some(EndReason::Voicemail);
        self.answering.message_started = Some(now);
        self.hard_deadline = Some(now + MESSAGE_GRACE);
        self.start_turn(TurnSource::Text(message), TurnKind::Goodbye);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(enabled: Option<bool>, message: Option<&str>) -> NumberSettings {
        NumberSettings {
            voicemail_leave_enabled: enabled,
            voicemail_message: message.map(str::to_owned),
            ..NumberSettings::default()
        }
    }

    #[test]
    fn the_request_overrides_the_number_and_inbound_calls_always_hang_up() {
        use VoicemailAction::*;
        let out = Direction::Outbound;
        let on = number(Some(true), Some("Call us back."));
        assert_eq!(
            VoicemailAction::resolve(out, &on, None, None),
            LeaveMessage("Call us back.".into())
        );
        assert_eq!(VoicemailAction::resolve(out, &on, Some("hangup"), None), Hangup);
        assert_eq!(VoicemailAction::resolve(out, &on, Some("ignore"), None), Ignore);
        assert_eq!(
            VoicemailAction::resolve(out, &on, Some("leave_message"), Some("Hi from Ava.")),
            LeaveMessage("Hi from Ava.".into())
        );
        assert_eq!(
            VoicemailAction::resolve(out, &on, Some("leave_message"), None),
            LeaveMessage("Call us back.".into())
        );
        // Null on the number: a silent hang-up; nothing to say: a hang-up.
        assert_eq!(VoicemailAction::resolve(out, &number(None, Some("x")), None, None), Hangup);
        assert_eq!(
            VoicemailAction::resolve(out, &number(None, None), Some("leave_message"), Some(" ")),
            Hangup
        );
        assert_eq!(VoicemailAction::resolve(Direction::Inbound, &on, Some("ignore"), None), Hangup);
    }

    #[test]
    fn machine_verdicts_are_voicemail_and_human_or_unknown_are_not() {
        for machine in
            ["machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"]
        {
            assert!(is_machine(machine), "{machine}");
        }
        assert!(!is_machine("human") && !is_machine("unknown"));
    }
}
