//! The session's timers: the one deadline the actor loop sleeps until, and what each deadline
//! does when it passes — the next frame on the 20 ms grid, the end of the caller's turn, a
//! keypad entry, silence re-prompts and hang-up, the duration limit's goodbye, the heartbeat —
//! and the goodbye when the server's drain time runs out.

use std::time::Duration;

use futures::Sink;
use nixflex_pipeline::llm::LlmMessage;
use nixflex_store::CallUpdate;
use tokio::time::Instant;

use super::turn::{TurnKind, TurnSource};
use super::{EndReason, Session};
use crate::playout::Frame;
use crate::twilio_ws;
use crate::vad::Words;

/// Whenever the loop is awake anyway (the caller's frames wake it every 20 ms) and an agent
/// frame falls due within this much, it sends it — and every frame due within [`SEND_BURST`],
/// in one write: Twilio then holds 60–100 ms of agent audio instead of 60, the loop's own frame
/// timer almost never fires while the caller's audio flows, and a speaking agent costs one
/// socket write per 40 ms instead of one per 20 ms (docs/engine.md#playout-and-marks).
const SEND_SLACK: Duration = Duration::from_millis(20);
const SEND_BURST: Duration = Duration::from_millis(40);

/// How long a voice on the line holds the silence clock's check-ins and hang-up while its words
/// are awaited from the recogniser (which sends its first interim words within about half a
/// second of speech).
const WORDS_WAIT: Duration = Duration::from_millis(1500);

/// Extra time after the duration limit for the goodbye to play.
const GOODBYE_GRACE: Duration = Duration::from_secs(15);
/// Extra time after the drain time for the shutdown goodbye to play.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// What a call hears when the server ends it at the end of its drain time.
const SHUTDOWN_GOODBYE: &str =
    "I'm sorry, we have to end this call now. Please call back in a moment. Goodbye!";

impl<W> Session<W>
where
    W: Sink<String> + Unpin + Send,
{
    pub(super) fn next_deadline(&self) -> Instant {
        let mut next = self.started + Duration::from_secs(24 * 3600);
        let mut consider = |at: Option<Instant>| {
            if let Some(at) = at
                && at < next
            {
                next = at;
            }
        };
        if self.playout.has_frames() {
            consider(Some(self.pacer.next_due()));
        }
        consider(self.turns.next_deadline().map(|d| self.started + d));
        // Deadlines that act only in a given state are only timers in that state; a past
        // deadline that cannot act would make the loop spin.
        if self.idle() && !self.answering.holds_line() && !self.voice_awaiting_words() {
            consider(self.silence_deadline());
        }
        consider(self.answering.deadline());
        consider(self.dtmf_deadline);
        consider(self.stt_final_due);
        if !self.goodbye_started {
            consider(Some(self.max_duration_at));
        }
        consider(self.hard_deadline);
        consider(Some(self.last_heartbeat + self.engine.config().heartbeat_every));
        next
    }

    /// A voice has been on the line for less than [`WORDS_WAIT`]: the silence clock holds its
    /// check-in or hang-up, as the caller's first words may be on the way from the recogniser
    /// (docs/engine.md#silence). A voice that brings no words for longer is a background.
    pub(super) fn voice_awaiting_words(&self) -> bool {
        self.vad.is_speaking() && self.vad.speech_ms() < WORDS_WAIT
    }

    pub(super) fn silence_period(&self) -> (Duration, Duration) {
        let hangup = Duration::from_secs(u64::from(self.setup.agent.silence_hangup_seconds));
        let reprompt = (hangup / 2).min(Duration::from_secs(5));
        (reprompt, hangup)
    }

    pub(super) fn silence_deadline(&self) -> Option<Instant> {
        let since = self.silence_since?;
        let (reprompt, hangup) = self.silence_period();
        let next_reprompt = since + reprompt * (self.reprompts + 1);
        if self.reprompts < 2 && next_reprompt < since + hangup {
            Some(next_reprompt)
        } else {
            Some(since + hangup)
        }
    }

    pub(super) async fn on_tick(&mut self, now: Instant) {
        // Outbound frames due on the 20 ms grid, in bursts written at once.
        let burst = self.playout.has_frames() && self.pacer.next_due() <= now + SEND_SLACK;
        while burst && self.playout.has_frames() && self.pacer.next_due() <= now + SEND_BURST {
            match self.playout.next_frame() {
                Some(Frame::Audio(frame)) => {
                    let message = twilio_ws::media(&self.stream_sid, frame);
                    let plays_at = self.pacer.on_sent(now);
                    if let Some(capture) = self.capture.as_mut() {
                        let plays_at =
                            plays_at.saturating_duration_since(self.setup.stream_started);
                        capture.agent_frame(plays_at, frame);
                    }
                    if self.timing.first_frame.is_none()
                        && self.active.as_ref().is_some_and(|t| t.kind.answers_caller())
                    {
                        self.timing.first_frame = Some(now);
                        self.record_latency();
                    }
                    self.feed(message).await;
                }
                Some(Frame::Mark(name)) => {
                    let message = twilio_ws::mark(&self.stream_sid, name);
                    self.feed(message).await;
                }
                None => break,
            }
        }
        if burst {
            self.flush().await;
        }
        self.on_answering_tick(now).await;
        if self.ended.is_some() {
            return;
        }
        self.check_stt_stall(now);
        // The caller's turn ended.
        if let Some(turn_end) = self.turns.poll(self.offset(now)) {
            if self.vad.is_speaking() {
                // Ended by the recogniser while a voice behind the caller goes on: the words
                // so far belong to this turn, not to whatever that voice does next (they
                // would otherwise let it interrupt the reply), and the overlap with the agent
                // is settled now (docs/engine.md#end-of-turn).
                self.turn_under_agent =
                    Some(self.turn_under_agent.unwrap_or(true) && self.agent_audible());
                self.run_finals = Words::Nothing;
                self.run_interim = Words::Nothing;
            }
            if self.take_backchannel_turn(&turn_end.text) {
                tracing::info!(message = "A backchannel over the agent: it talks on.");
            } else {
                self.on_caller_turn(turn_end.text, self.started + turn_end.speech_ended_at, now);
            }
        }
        if let Some(deadline) = self.dtmf_deadline
            && deadline <= now
        {
            self.dtmf_deadline = None;
            let digits = std::mem::take(&mut self.dtmf);
            if !digits.is_empty() {
                self.on_caller_turn(format!("[DTMF: {digits}]"), now, now);
            }
        }
        // The agent finished speaking: start the silence clock, or end the call.
        let idle = self.idle();
        if idle {
            if let Some(reason) = self.end_after_playout {
                self.ended = Some(reason);
                return;
            }
            if self.silence_since.is_none()
                && !self.answering.holds_line()
                && !self.vad.is_speaking()
                && self.turns.pending_text().is_empty()
            {
                self.silence_since = Some(now);
            }
        }
        if let Some(since) = self.silence_since
            && idle
            && !self.answering.holds_line()
            && !self.voice_awaiting_words()
        {
            let (reprompt, hangup) = self.silence_period();
            if now >= since + hangup {
                self.ended = Some(EndReason::SilenceTimeout);
                return;
            }
            // No "are you still there?" while recognition is down: the caller may well be
            // talking (their audio is buffered for the recogniser).
            if self.reprompts < 2
                && now >= since + reprompt * (self.reprompts + 1)
                && self.stt_input.is_some()
            {
                self.reprompts += 1;
                self.reprompt(now);
            }
        }
        if now >= self.max_duration_at && !self.goodbye_started {
            self.goodbye_started = true;
            self.say_goodbye(now).await;
        }
        if let Some(hard) = self.hard_deadline
            && now >= hard
        {
            self.ended = Some(self.end_after_playout.unwrap_or(EndReason::MaxDuration));
        }
        if now >= self.last_heartbeat + self.engine.config().heartbeat_every {
            self.last_heartbeat = now;
            self.recorder.record(CallUpdate {
                heartbeat_at: Some(nixflex_store::now()),
                ..CallUpdate::default()
            });
        }
    }

    pub(super) fn reprompt(&mut self, _now: Instant) {
        let mut messages = self.history.clone();
        messages.push(LlmMessage::user("[The caller has been silent for a few seconds. Gently check whether they are still there, in one short sentence, in the language of the conversation.]"));
        let request = self.llm_request(messages);
        self.start_turn(TurnSource::Llm(request), TurnKind::Reprompt);
    }

    pub(super) async fn say_goodbye(&mut self, now: Instant) {
        if self.agent_audible() {
            self.barge_in_now().await;
        }
        self.cancel_turn();
        self.end_after_playout = Some(EndReason::MaxDuration);
        self.hard_deadline = Some(now + GOODBYE_GRACE);
        let goodbye = "I'm sorry, we've reached the time limit for this call. Thank you for calling, goodbye!";
        self.start_turn(TurnSource::Text(goodbye.to_owned()), TurnKind::Goodbye);
    }

    /// The server's drain time ran out: stop what the agent is saying, say a short goodbye
    /// (not interruptible), then end the call as `server_shutdown`.
    pub(super) async fn on_server_shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        tracing::info!(message = "Drain time over: ending the call with a goodbye.");
        if self.agent_audible() {
            self.barge_in_now().await;
        }
        self.cancel_turn();
        self.goodbye_started = true;
        self.end_after_playout = Some(EndReason::ServerShutdown);
        self.hard_deadline = Some(now + SHUTDOWN_GRACE);
        self.start_turn(TurnSource::Text(SHUTDOWN_GOODBYE.to_owned()), TurnKind::Goodbye);
    }
}
