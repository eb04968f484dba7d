//! One call's session: the actor that owns the media WebSocket and runs the conversation.
//!
//! The actor is one task looping over a `select!` of: the caller's WebSocket messages, the
//! recogniser's events, the current agent turn's events, and one timer (the next frame due, the
//! end of the caller's turn, silence, the duration limit). Everything per frame is synchronous
//! and allocation-light; provider I/O runs in the turn task ([`run_turn`]) so the loop never
//! waits on a provider, and persistence goes through the call's recorder, so it never waits on
//! the database.
//!
//! An agent turn: LLM stream → action-tag parser → sentence chunker → TTS per sentence → μ-law
//! chunks → [`Playout`] → frames paced on a 20 ms grid with a `mark` after each sentence.
//! Barge-in sends `clear`, drops the turn and keeps in the history only what the caller heard.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::{Sink, SinkExt, Stream, StreamExt};
use nixflex_core::agent::{AgentSettings, ResponseLength};
use nixflex_core::call::{
    CallRecord, CallStatus, Direction, EndedReason, TranscriptEntry, TranscriptRole, TurnLatency,
};
use nixflex_core::catalog;
use nixflex_core::number::{NumberSettings, PhoneNumber};
use nixflex_pipeline::ProviderError;
use nixflex_pipeline::llm::{LlmEvent, LlmMessage, LlmRequest};
use nixflex_pipeline::stt::{SttEvent, SttEvents, SttInput, SttOptions};
use nixflex_pipeline::tts::TtsRequest;
use nixflex_providers::twilio::TwilioCredentials;
use nixflex_store::CallUpdate;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::chunker::SentenceChunker;
use crate::engine::{Engine, Recorder};
use crate::playout::{Frame, Pacer, Playout};
use crate::prompt::{self, Channel, PastCall, PromptContext, ToolsEnabled};
use crate::tags::{Action, Segment, TagParser};
use crate::twilio_ws::{self, Inbound};
use crate::vad::{BargeIn, TurnDetector, Vad, VadConfig, VadEvent};

/// Length of one media frame.
const FRAME: Duration = Duration::from_millis(20);
/// Inter-digit timeout that ends a DTMF entry without `#`.
const DTMF_GAP: Duration = Duration::from_millis(1500);
/// Extra time after the duration limit for the goodbye to play.
const GOODBYE_GRACE: Duration = Duration::from_secs(15);
/// A reply may not run longer than this before the engine gives up on it.
const TURN_TIMEOUT: Duration = Duration::from_secs(45);

/// Why a call ended (`ended_reason`, ENGINE §3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The agent said goodbye and emitted `[END_CALL]`.
    Completed,
    /// The caller hung up.
    CallerHangup,
    /// The caller stayed silent for `silence_hangup_seconds`.
    SilenceTimeout,
    /// `max_call_duration_seconds` was reached.
    MaxDuration,
    /// A provider or the engine failed.
    Error,
}

impl EndReason {
    /// The API value.
    pub fn as_str(self) -> &'static str {
        EndedReason::from(self).as_str()
    }
}

impl From<EndReason> for EndedReason {
    fn from(reason: EndReason) -> Self {
        match reason {
            EndReason::Completed => Self::Completed,
            EndReason::CallerHangup => Self::CallerHangup,
            EndReason::SilenceTimeout => Self::SilenceTimeout,
            EndReason::MaxDuration => Self::MaxDuration,
            EndReason::Error => Self::Error,
        }
    }
}

/// What a call needs to start, loaded once before audio flows.
pub(crate) struct CallSetup {
    pub(crate) call: CallRecord,
    pub(crate) agent: AgentSettings,
    pub(crate) agent_id: String,
    pub(crate) number: PhoneNumber,
    pub(crate) credentials: TwilioCredentials,
    pub(crate) history: Vec<PastCall>,
    pub(crate) caller_context: Option<serde_json::Map<String, serde_json::Value>>,
}

impl CallSetup {
    fn caller_number(&self) -> &str {
        match self.call.direction {
            Direction::Inbound => &self.call.from_number,
            Direction::Outbound => &self.call.to_number,
        }
    }

    fn number_settings(&self) -> &NumberSettings {
        &self.number.settings
    }
}

/// Events from a turn task to the session. Every event carries its turn id, so events of a
/// cancelled turn are recognised and dropped.
#[derive(Debug)]
enum TurnEvent {
    /// The LLM sent its first token.
    FirstToken { turn: u64, at: Instant },
    /// The first sentence went to TTS.
    FirstSentence { turn: u64, at: Instant },
    /// μ-law audio of the current sentence.
    Audio { turn: u64, audio: Bytes, first_of_turn: bool, at: Instant },
    /// The current sentence's audio is complete.
    SentenceEnd { turn: u64, text: String },
    /// An action tag, in order with the text.
    Action { turn: u64, action: Action },
    /// The turn produced everything; `text` is the full reply (tags removed).
    Done { turn: u64, text: String },
    /// The turn failed.
    Failed { turn: u64, error: ProviderError, stage: &'static str },
}

/// What a turn says.
enum TurnSource {
    /// Ask the LLM.
    Llm(LlmRequest),
    /// Speak fixed text (greeting, fallback, goodbye).
    Text(String),
}

/// Latency bookkeeping of the turn being answered.
#[derive(Debug, Default, Clone)]
struct TurnTiming {
    speech_ended: Option<Instant>,
    decided: Option<Instant>,
    final_transcript: Option<Instant>,
    llm_sent: Option<Instant>,
    first_token: Option<Instant>,
    first_sentence: Option<Instant>,
    tts_first_byte: Option<Instant>,
    first_frame: Option<Instant>,
}

struct ActiveTurn {
    id: u64,
    task: JoinHandle<()>,
    /// Whether this turn answers the caller (latency is recorded) or speaks fixed text.
    answers_caller: bool,
    /// Index of its transcript entry, once it produced audio.
    transcript_index: Option<usize>,
    /// Whether its text joins the LLM history.
    in_history: bool,
    done: bool,
    text: String,
}

/// The session actor.
pub(crate) struct Session<W> {
    engine: Engine,
    setup: CallSetup,
    writer: W,
    stream_sid: String,
    started: Instant,
    recorder: Recorder,
    system_prompt: String,
    provider_voice: String,
    speaking_rate: f32,
    // Audio in.
    stt_input: Option<SttInput>,
    stt_events: Option<SttEvents>,
    /// A reconnection of the recogniser in progress.
    stt_reconnect: Option<JoinHandle<Result<(SttInput, SttEvents), ProviderError>>>,
    vad: Vad,
    turns: TurnDetector,
    barge_in: BargeIn,
    last_final_at: Option<Instant>,
    // Audio out.
    playout: Playout,
    pacer: Pacer,
    // Conversation.
    history: Vec<LlmMessage>,
    transcript: Vec<TranscriptEntry>,
    latencies: Vec<TurnLatency>,
    next_turn: u64,
    active: Option<ActiveTurn>,
    turn_tx: mpsc::UnboundedSender<TurnEvent>,
    turn_rx: mpsc::UnboundedReceiver<TurnEvent>,
    timing: TurnTiming,
    pending_caller_text: Option<String>,
    dtmf: String,
    dtmf_deadline: Option<Instant>,
    // Silence and limits.
    silence_since: Option<Instant>,
    reprompts: u32,
    max_duration_at: Instant,
    goodbye_started: bool,
    end_after_playout: Option<EndReason>,
    hard_deadline: Option<Instant>,
    ended: Option<EndReason>,
    last_heartbeat: Instant,
    audio_buf: Vec<u8>,
}

fn max_tokens(length: ResponseLength) -> u32 {
    match length {
        ResponseLength::Short => 200,
        ResponseLength::Medium => 400,
        ResponseLength::Long => 800,
    }
}

impl<W> Session<W>
where
    W: Sink<String> + Unpin + Send,
{
    pub(crate) fn new(engine: Engine, setup: CallSetup, writer: W, stream_sid: String) -> Self {
        let started = Instant::now();
        let recorder = engine.spawn_recorder(setup.call.call_id.clone());
        let agent = &setup.agent;
        let number = setup.number_settings();
        let voice_id = number.voice_id.clone().unwrap_or_else(|| agent.voice_id.clone());
        let provider_voice = catalog::find_voice(engine.providers().tts_kind, &voice_id)
            .map_or_else(|| voice_id.clone(), |v| v.provider_voice_id.to_owned());
        let speaking_rate = number.speaking_rate.or(agent.speaking_rate).unwrap_or(1.0);
        let empty_vars = BTreeMap::new();
        let system_prompt = prompt::build_system_prompt(&PromptContext {
            agent,
            number: Some(number),
            channel: Channel::Voice,
            direction: setup.call.direction,
            caller_phone: setup.caller_number(),
            business_phone: &setup.number.phone_number,
            call_id: &setup.call.call_id,
            agent_id: &setup.agent_id,
            now: Utc::now(),
            history: &setup.history,
            caller_context: setup.caller_context.as_ref(),
            call_purpose: None,
            dynamic_vars: &empty_vars,
            tools_enabled: ToolsEnabled::for_agent(agent),
        });
        let vad_config = VadConfig::default();
        let turns = TurnDetector::new(
            Duration::from_millis(u64::from(agent.response_eagerness)),
            vad_config.hangover,
        );
        let barge_in = BargeIn::new(agent.interruption_sensitivity);
        let max_duration_at =
            started + Duration::from_secs(u64::from(agent.max_call_duration_seconds));
        let (turn_tx, turn_rx) = mpsc::unbounded_channel();
        #[allow(clippy::cast_possible_truncation)]
        let speaking_rate = speaking_rate as f32;
        Self {
            engine,
            setup,
            writer,
            stream_sid,
            started,
            recorder,
            system_prompt,
            provider_voice,
            speaking_rate,
            stt_input: None,
            stt_events: None,
            stt_reconnect: None,
            vad: Vad::new(vad_config),
            turns,
            barge_in,
            last_final_at: None,
            playout: Playout::new(),
            pacer: Pacer::new(started),
            history: Vec::new(),
            transcript: Vec::new(),
            latencies: Vec::new(),
            next_turn: 1,
            active: None,
            turn_tx,
            turn_rx,
            timing: TurnTiming::default(),
            pending_caller_text: None,
            dtmf: String::new(),
            dtmf_deadline: None,
            silence_since: None,
            reprompts: 0,
            max_duration_at,
            goodbye_started: false,
            end_after_playout: None,
            hard_deadline: None,
            ended: None,
            last_heartbeat: started,
            audio_buf: Vec::with_capacity(320),
        }
    }

    fn offset(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.started)
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(self.offset(at).as_millis()).unwrap_or(u64::MAX)
    }
}

/// The recognition options of a call with these agent settings.
pub(crate) fn stt_options(agent: &AgentSettings) -> SttOptions {
    SttOptions {
        language: agent.language.clone(),
        endpointing: Some(Duration::from_millis(u64::from(agent.response_eagerness).max(10))),
        keywords: agent
            .boosted_keywords
            .as_deref()
            .map(|k| k.split(',').map(|w| w.trim().to_owned()).filter(|w| !w.is_empty()).collect())
            .unwrap_or_default(),
        ..SttOptions::default()
    }
}

impl<W> Session<W>
where
    W: Sink<String> + Unpin + Send,
{
    /// Runs the call until it ends; returns why.
    pub(crate) async fn run<R, T, E>(mut self, mut reader: R) -> EndReason
    where
        R: Stream<Item = Result<T, E>> + Unpin + Send,
        T: std::ops::Deref<Target = str>,
    {
        let now = Instant::now();
        self.recorder.record(CallUpdate {
            call_status: Some(CallStatus::InProgress),
            answered_at: Some(nixflex_store::now()),
            heartbeat_at: Some(nixflex_store::now()),
            ..CallUpdate::default()
        });
        let options = stt_options(&self.setup.agent);
        match self.engine.open_stt(&self.setup.call.call_id, options).await {
            Ok((input, events)) => {
                self.stt_input = Some(input);
                self.stt_events = Some(events);
            }
            Err(error) => {
                tracing::error!(message = "Speech recognition unavailable at call start.", call_id = %self.setup.call.call_id, error = %error);
            }
        }
        self.start_greeting(now);
        loop {
            if let Some(reason) = self.ended {
                return self.finish(reason).await;
            }
            let deadline = self.next_deadline();
            let stt_open = self.stt_events.is_some();
            tokio::select! {
                biased;
                message = reader.next() => {
                    match message {
                        Some(Ok(text)) => self.on_ws_text(&text).await,
                        Some(Err(_)) | None => self.ended = Some(EndReason::CallerHangup),
                    }
                }
                event = async { match self.stt_events.as_mut() { Some(events) => events.recv().await, None => None } }, if stt_open => {
                    self.on_stt(event).await;
                }
                Some(event) = self.turn_rx.recv() => self.on_turn_event(event),
                reconnected = async { match self.stt_reconnect.as_mut() { Some(task) => task.await, None => std::future::pending().await } }, if self.stt_reconnect.is_some() => {
                    match reconnected {
                        Ok(result) => self.on_stt_reconnected(result),
                        Err(_) => self.stt_reconnect = None,
                    }
                }
                () = tokio::time::sleep_until(deadline) => {}
            }
            self.on_tick(Instant::now()).await;
        }
    }

    fn next_deadline(&self) -> Instant {
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
        if self.idle() {
            consider(self.silence_deadline());
        }
        consider(self.dtmf_deadline);
        if !self.goodbye_started {
            consider(Some(self.max_duration_at));
        }
        consider(self.hard_deadline);
        consider(Some(self.last_heartbeat + self.engine.config().heartbeat_every));
        next
    }

    fn silence_period(&self) -> (Duration, Duration) {
        let hangup = Duration::from_secs(u64::from(self.setup.agent.silence_hangup_seconds));
        let reprompt = (hangup / 2).min(Duration::from_secs(5));
        (reprompt, hangup)
    }

    fn silence_deadline(&self) -> Option<Instant> {
        let since = self.silence_since?;
        let (reprompt, hangup) = self.silence_period();
        let next_reprompt = since + reprompt * (self.reprompts + 1);
        if self.reprompts < 2 && next_reprompt < since + hangup {
            Some(next_reprompt)
        } else {
            Some(since + hangup)
        }
    }

    async fn send(&mut self, text: String) {
        if self.writer.send(text).await.is_err() && self.ended.is_none() {
            self.ended = Some(EndReason::CallerHangup);
        }
    }

    async fn on_ws_text(&mut self, text: &str) {
        let mut audio = std::mem::take(&mut self.audio_buf);
        let decoded = twilio_ws::decode(text, &mut audio);
        match decoded {
            Ok(Inbound::Media { .. }) => self.on_caller_audio(&audio).await,
            Ok(Inbound::Mark { name }) => self.playout.on_mark(&name),
            Ok(Inbound::Dtmf { digit }) => self.on_dtmf(digit),
            Ok(Inbound::Stop) => self.ended = Some(EndReason::CallerHangup),
            Ok(Inbound::Connected | Inbound::Start(_) | Inbound::Other) => {}
            Err(error) => {
                tracing::warn!(message = "Malformed media message ignored.", call_id = %self.setup.call.call_id, error = %error)
            }
        }
        self.audio_buf = audio;
    }

    async fn on_caller_audio(&mut self, audio: &[u8]) {
        let now = Instant::now();
        if let Some(input) = &self.stt_input {
            let _ = input.push_audio(Bytes::copy_from_slice(audio));
        }
        if let Some(event) = self.vad.push_frame(audio) {
            let at = self.offset(now);
            self.turns.on_vad(event, at);
            match event {
                VadEvent::SpeechStarted => {
                    self.silence_since = None;
                    self.reprompts = 0;
                }
                VadEvent::SpeechEnded => {
                    self.timing.speech_ended =
                        Some(now.checked_sub(VadConfig::default().hangover).unwrap_or(now));
                    if let Some(input) = &self.stt_input {
                        // Off the audio path: the command queue may be full.
                        let input = input.clone();
                        tokio::spawn(async move { input.finalize().await });
                    }
                }
            }
        }
        let agent_playing = self.agent_audible();
        // The closing goodbye at the duration limit is not interruptible.
        if self.barge_in.on_frame(self.vad.speech_ms(), FRAME, agent_playing)
            && !self.goodbye_started
        {
            self.barge_in_now().await;
        }
    }

    /// Nothing is being said or prepared by the agent.
    fn idle(&self) -> bool {
        self.active.as_ref().is_none_or(|t| t.done) && !self.agent_audible()
    }

    fn agent_audible(&self) -> bool {
        self.playout.has_frames() || self.playout.pending_marks() > 0
    }

    fn on_dtmf(&mut self, digit: char) {
        let enabled = self
            .setup
            .number_settings()
            .dtmf_enabled
            .or(self.setup.agent.dtmf_enabled)
            .unwrap_or(true);
        if !enabled {
            return;
        }
        if digit == '#' {
            self.dtmf_deadline = Some(Instant::now());
        } else {
            self.dtmf.push(digit);
            self.dtmf_deadline = Some(Instant::now() + DTMF_GAP);
        }
        self.silence_since = None;
    }

    async fn on_stt(&mut self, event: Option<SttEvent>) {
        let now = Instant::now();
        match event {
            Some(SttEvent::Final { text, .. }) => {
                let at = self.offset(now);
                if !text.trim().is_empty() {
                    self.last_final_at = Some(now);
                    self.turns.on_final_transcript(&text, at);
                    self.timing.final_transcript = Some(now);
                }
            }
            Some(SttEvent::SpeechStarted | SttEvent::Interim { .. } | SttEvent::UtteranceEnd) => {}
            Some(SttEvent::Error(error)) => {
                tracing::error!(message = "Speech recognition failed mid-call.", call_id = %self.setup.call.call_id, error = %error);
                self.stt_lost().await;
            }
            Some(SttEvent::Closed) | None => {
                if self.ended.is_none() {
                    self.stt_lost().await;
                }
            }
        }
    }

    /// Recognition failed: apologise with the fallback message and reconnect in the
    /// background (the loop keeps pacing audio meanwhile).
    async fn stt_lost(&mut self) {
        self.stt_input = None;
        self.stt_events = None;
        let fallback = self.setup.agent.fallback_message.clone();
        self.speak_text(fallback, Instant::now(), false);
        if self.stt_reconnect.is_some() {
            return;
        }
        let options = stt_options(&self.setup.agent);
        let stt = self.engine.providers().stt.clone();
        self.stt_reconnect = Some(tokio::spawn(async move { stt.open(options).await }));
    }

    fn on_stt_reconnected(&mut self, result: Result<(SttInput, SttEvents), ProviderError>) {
        self.stt_reconnect = None;
        match result {
            Ok((input, events)) => {
                self.stt_input = Some(input);
                self.stt_events = Some(events);
            }
            Err(error) => {
                tracing::error!(message = "Speech recognition could not reconnect.", call_id = %self.setup.call.call_id, error = %error);
            }
        }
    }

    async fn on_tick(&mut self, now: Instant) {
        // Outbound frames due on the 20 ms grid.
        while self.playout.has_frames() && self.pacer.next_due() <= now {
            match self.playout.next_frame() {
                Some(Frame::Audio(frame)) => {
                    let message = twilio_ws::media(&self.stream_sid, frame);
                    self.pacer.on_sent(now);
                    if self.timing.first_frame.is_none()
                        && self.active.as_ref().is_some_and(|t| t.answers_caller)
                    {
                        self.timing.first_frame = Some(now);
                        self.record_latency();
                    }
                    self.send(message).await;
                }
                Some(Frame::Mark(name)) => {
                    let message = twilio_ws::mark(&self.stream_sid, name);
                    self.send(message).await;
                }
                None => break,
            }
        }
        // The caller's turn ended.
        if let Some(turn_end) = self.turns.poll(self.offset(now)) {
            self.on_caller_turn(turn_end.text, self.started + turn_end.speech_ended_at, now);
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
                && !self.vad.is_speaking()
                && self.turns.pending_text().is_empty()
            {
                self.silence_since = Some(now);
            }
        }
        if let Some(since) = self.silence_since
            && idle
        {
            let (reprompt, hangup) = self.silence_period();
            if now >= since + hangup {
                self.ended = Some(EndReason::SilenceTimeout);
                return;
            }
            if self.reprompts < 2 && now >= since + reprompt * (self.reprompts + 1) {
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

    fn on_caller_turn(&mut self, text: String, speech_ended: Instant, now: Instant) {
        self.silence_since = None;
        self.reprompts = 0;
        // A caller who keeps talking before the agent was heard: answer everything at once.
        let mut text = text;
        if let Some(active) = &self.active
            && active.answers_caller
            && active.transcript_index.is_none()
            && let Some(previous) = self.pending_caller_text.take()
        {
            text = format!("{previous} {text}");
            self.cancel_turn();
            // The earlier caller line is replaced by the combined one.
            if let Some(last) = self.transcript.last()
                && last.role == TranscriptRole::Caller
            {
                self.transcript.pop();
            }
            if self.history.last().is_some_and(|m| m.role == nixflex_pipeline::llm::Role::User) {
                self.history.pop();
            }
        }
        self.transcript.push(TranscriptEntry {
            role: TranscriptRole::Caller,
            text: text.clone(),
            timestamp_ms: self.ms(speech_ended),
        });
        self.history.push(LlmMessage::user(text.clone()));
        self.pending_caller_text = Some(text);
        self.timing = TurnTiming {
            speech_ended: Some(speech_ended),
            decided: Some(now),
            final_transcript: self.last_final_at.filter(|f| *f >= speech_ended).or(Some(now)),
            ..TurnTiming::default()
        };
        if self.goodbye_started {
            return;
        }
        self.cancel_turn();
        let request = self.llm_request(self.history.clone());
        self.timing.llm_sent = Some(Instant::now());
        self.start_turn(TurnSource::Llm(request), true, true);
    }

    fn llm_request(&self, mut messages: Vec<LlmMessage>) -> LlmRequest {
        let agent = &self.setup.agent;
        // Chat APIs expect the user to speak first; the agent's greeting came first on the phone.
        if messages.first().is_some_and(|m| m.role == nixflex_pipeline::llm::Role::Assistant) {
            messages.insert(0, LlmMessage::user("[The call connected.]"));
        }
        let mut request = LlmRequest::new(agent.llm_model.clone(), messages);
        request.system = Some(self.system_prompt.clone());
        #[allow(clippy::cast_possible_truncation)]
        let temperature = agent.temperature as f32;
        request.temperature = Some(temperature);
        request.max_tokens = max_tokens(agent.response_length);
        request
    }

    fn start_greeting(&mut self, now: Instant) {
        let agent = &self.setup.agent;
        if self.setup.call.direction == Direction::Outbound || !agent.ai_speaks_first {
            self.silence_since = Some(now);
            return;
        }
        let caller_name = self
            .setup
            .caller_context
            .as_ref()
            .and_then(|c| c.get("name"))
            .and_then(|n| n.as_str())
            .map(str::to_owned);
        match prompt::greeting(agent, caller_name.as_deref()) {
            Some(text) => self.speak_text(text, now, true),
            None => {
                // The LLM improvises the greeting.
                let messages = vec![LlmMessage::user(
                    "[The call has just connected. Greet the caller now, in one short sentence.]",
                )];
                let request = self.llm_request(messages);
                self.start_turn(TurnSource::Llm(request), false, true);
            }
        }
    }

    fn reprompt(&mut self, _now: Instant) {
        let mut messages = self.history.clone();
        messages.push(LlmMessage::user("[The caller has been silent for a few seconds. Gently check whether they are still there, in one short sentence, in the language of the conversation.]"));
        let request = self.llm_request(messages);
        self.start_turn(TurnSource::Llm(request), false, false);
    }

    async fn say_goodbye(&mut self, now: Instant) {
        if self.agent_audible() {
            self.barge_in_now().await;
        }
        self.cancel_turn();
        self.end_after_playout = Some(EndReason::MaxDuration);
        self.hard_deadline = Some(now + GOODBYE_GRACE);
        self.speak_text("I'm sorry, we've reached the time limit for this call. Thank you for calling, goodbye!".to_owned(), now, true);
    }

    /// Speaks fixed text as its own turn.
    fn speak_text(&mut self, text: String, _now: Instant, in_history: bool) {
        self.start_turn(TurnSource::Text(text), false, in_history);
    }

    fn start_turn(&mut self, source: TurnSource, answers_caller: bool, in_history: bool) {
        let id = self.next_turn;
        self.next_turn += 1;
        let tx = self.turn_tx.clone();
        let engine = self.engine.clone();
        let voice = self.provider_voice.clone();
        let rate = self.speaking_rate;
        let language =
            (self.setup.agent.language != "multi").then(|| self.setup.agent.language.clone());
        let task = tokio::spawn(async move {
            let run = run_turn(id, source, engine, voice, rate, language, tx.clone());
            if tokio::time::timeout(TURN_TIMEOUT, run).await.is_err() {
                let _ = tx.send(TurnEvent::Failed {
                    turn: id,
                    error: ProviderError::timeout("the reply took too long"),
                    stage: "turn",
                });
            }
        });
        self.active = Some(ActiveTurn {
            id,
            task,
            answers_caller,
            transcript_index: None,
            in_history,
            done: false,
            text: String::new(),
        });
    }

    fn cancel_turn(&mut self) {
        if let Some(active) = self.active.take() {
            active.task.abort();
        }
    }

    fn on_turn_event(&mut self, event: TurnEvent) {
        let current = self.active.as_ref().map(|t| t.id);
        let turn = match &event {
            TurnEvent::FirstToken { turn, .. }
            | TurnEvent::FirstSentence { turn, .. }
            | TurnEvent::Audio { turn, .. }
            | TurnEvent::SentenceEnd { turn, .. }
            | TurnEvent::Action { turn, .. }
            | TurnEvent::Done { turn, .. }
            | TurnEvent::Failed { turn, .. } => *turn,
        };
        if current != Some(turn) {
            return; // a cancelled turn
        }
        match event {
            TurnEvent::FirstToken { at, .. } => self.timing.first_token = Some(at),
            TurnEvent::FirstSentence { at, .. } => self.timing.first_sentence = Some(at),
            TurnEvent::Audio { audio, first_of_turn, at, .. } => {
                if first_of_turn {
                    self.timing.tts_first_byte = Some(at);
                    let timestamp_ms = self.ms(at);
                    if let Some(active) = self.active.as_mut()
                        && active.transcript_index.is_none()
                    {
                        self.transcript.push(TranscriptEntry {
                            role: TranscriptRole::Agent,
                            text: String::new(),
                            timestamp_ms,
                        });
                        active.transcript_index = Some(self.transcript.len() - 1);
                        // A re-prompt does not restart the caller's silence clock; a reply does.
                        if active.answers_caller || active.in_history {
                            self.silence_since = None;
                        }
                    }
                }
                self.playout.push_audio(turn, &audio);
            }
            TurnEvent::SentenceEnd { text, .. } => {
                self.playout.end_segment(turn, &text);
                if let Some(active) = self.active.as_mut() {
                    if !active.text.is_empty() {
                        active.text.push(' ');
                    }
                    active.text.push_str(&text);
                    if let Some(index) = active.transcript_index
                        && let Some(entry) = self.transcript.get_mut(index)
                    {
                        entry.text.clone_from(&active.text);
                    }
                }
            }
            TurnEvent::Action { action, .. } => self.on_action(action),
            TurnEvent::Done { text, .. } => {
                if let Some(active) = self.active.as_mut() {
                    active.done = true;
                    if active.in_history && !text.trim().is_empty() {
                        self.history.push(LlmMessage::assistant(text));
                    }
                }
                self.persist_progress();
            }
            TurnEvent::Failed { error, stage, .. } => {
                tracing::error!(message = "Agent turn failed.", call_id = %self.setup.call.call_id, stage, error = %error);
                let was_fallback =
                    self.active.as_ref().is_some_and(|t| !t.answers_caller && !t.in_history);
                if let Some(active) = self.active.as_mut() {
                    active.done = true;
                }
                if stage == "tts" && was_fallback {
                    // Cannot speak at all: end the call rather than leave the caller in silence.
                    self.end_after_playout = Some(EndReason::Error);
                } else if stage != "tts" || !was_fallback {
                    let fallback = self.setup.agent.fallback_message.clone();
                    self.speak_text(fallback, Instant::now(), false);
                }
            }
        }
    }

    fn on_action(&mut self, action: Action) {
        match action {
            Action::EndCall if self.setup.agent.func_end_call => {
                self.end_after_playout = Some(EndReason::Completed);
            }
            Action::EndCall => {
                tracing::info!(message = "[END_CALL] ignored: func_end_call is off.", call_id = %self.setup.call.call_id);
            }
            other => {
                tracing::info!(
                    message = "Action tag received; this action is not available yet on this server.",
                    call_id = %self.setup.call.call_id,
                    action = other.kind()
                );
            }
        }
    }

    async fn barge_in_now(&mut self) {
        let clear = twilio_ws::clear(&self.stream_sid);
        self.send(clear).await;
        let interrupted = self.playout.clear();
        self.end_after_playout = None;
        if let Some(active) = self.active.take() {
            active.task.abort();
            // What the caller heard of *this* turn (the cleared audio may belong to an earlier one).
            let heard = if interrupted.turn == Some(active.id) {
                interrupted.heard_text.trim().to_owned()
            } else {
                self.playout.heard_text_of_turn(active.id).trim().to_owned()
            };
            if let Some(index) = active.transcript_index {
                if heard.is_empty() {
                    self.transcript.remove(index);
                } else if let Some(entry) = self.transcript.get_mut(index) {
                    entry.text.clone_from(&heard);
                }
            }
            if active.in_history {
                let already_added = active.done;
                if already_added
                    && self
                        .history
                        .last()
                        .is_some_and(|m| m.role == nixflex_pipeline::llm::Role::Assistant)
                {
                    self.history.pop();
                }
                if !heard.is_empty() {
                    self.history.push(LlmMessage::assistant(heard));
                }
            }
        }
        self.pacer = Pacer::new(Instant::now());
        tracing::debug!(message = "Barge-in: agent audio cleared.", call_id = %self.setup.call.call_id);
    }

    fn record_latency(&mut self) {
        let t = &self.timing;
        let (Some(speech_ended), Some(first_frame)) = (t.speech_ended, t.first_frame) else {
            return;
        };
        let ms = |from: Option<Instant>, to: Option<Instant>| match (from, to) {
            (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64() * 1000.0,
            _ => 0.0,
        };
        let total = ms(Some(speech_ended), Some(first_frame));
        let end_of_turn = ms(Some(speech_ended), t.decided);
        let stt = ms(Some(speech_ended), t.final_transcript);
        let llm_first_token = ms(t.llm_sent, t.first_token);
        let llm_to_sentence = ms(t.llm_sent, t.first_sentence);
        let tts_first_byte = ms(t.first_sentence, t.tts_first_byte);
        let engine_overhead = (total - end_of_turn - llm_to_sentence - tts_first_byte).max(0.0);
        let turn = u32::try_from(self.latencies.len() + 1).unwrap_or(u32::MAX);
        self.latencies.push(TurnLatency {
            turn,
            end_of_turn_ms: end_of_turn,
            stt_ms: stt,
            llm_first_token_ms: llm_first_token,
            tts_first_byte_ms: tts_first_byte,
            engine_overhead_ms: engine_overhead,
            total_ms: total,
        });
    }

    fn avg_latency(&self) -> Option<f64> {
        if self.latencies.is_empty() {
            return None;
        }
        #[allow(clippy::cast_precision_loss)]
        let n = self.latencies.len() as f64;
        Some(self.latencies.iter().map(|l| l.total_ms).sum::<f64>() / n)
    }

    fn persist_progress(&self) {
        self.recorder.record(CallUpdate {
            transcript: Some(self.transcript.clone()),
            turns: Some(self.latencies.clone()),
            avg_latency_ms: self.avg_latency(),
            heartbeat_at: Some(nixflex_store::now()),
            ..CallUpdate::default()
        });
    }

    async fn finish(mut self, reason: EndReason) -> EndReason {
        self.cancel_turn();
        if let Some(input) = self.stt_input.take() {
            let _ = input.close().await;
        }
        if reason != EndReason::CallerHangup {
            // Layer 1: the carrier ends the call; layer 2: closing the stream makes Twilio ask
            // the after-stream URL, which answers with a hang-up.
            let engine = self.engine.clone();
            let credentials = self.setup.credentials.clone();
            if let Some(sid) = self.setup.call.twilio_call_sid.clone() {
                tokio::spawn(async move { engine.hang_up_at_carrier(&credentials, &sid).await });
            }
        }
        let _ = self.writer.close().await;
        let ended_at = nixflex_store::now();
        let duration = i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX);
        self.recorder.record(CallUpdate {
            call_status: Some(CallStatus::Completed),
            ended_reason: Some(reason.into()),
            ended_at: Some(ended_at),
            duration_seconds: Some(duration),
            transcript: Some(self.transcript.clone()),
            turns: Some(self.latencies.clone()),
            avg_latency_ms: self.avg_latency(),
            ..CallUpdate::default()
        });
        tracing::info!(message = "Call ended.", call_id = %self.setup.call.call_id, ended_reason = reason.as_str(), turns = self.latencies.len());
        self.recorder.finish().await;
        reason
    }
}

/// Produces one agent turn: text → sentences → speech, streamed to the session.
async fn run_turn(
    turn: u64,
    source: TurnSource,
    engine: Engine,
    voice: String,
    rate: f32,
    language: Option<String>,
    tx: mpsc::UnboundedSender<TurnEvent>,
) {
    let (sentence_tx, mut sentence_rx) = mpsc::unbounded_channel::<String>();
    let tts = engine.providers().tts.clone();
    let speak_tx = tx.clone();
    // Speech runs beside the LLM: sentence N is synthesised while N+1 is being written.
    let speaker = async move {
        let mut first = true;
        while let Some(sentence) = sentence_rx.recv().await {
            let mut request = TtsRequest::new(sentence.clone(), voice.clone());
            request.speaking_rate = rate;
            request.language.clone_from(&language);
            let mut stream = match tts.synthesize(request).await {
                Ok(stream) => stream,
                Err(error) => {
                    let _ = speak_tx.send(TurnEvent::Failed { turn, error, stage: "tts" });
                    return false;
                }
            };
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(audio) if !audio.is_empty() => {
                        let _ = speak_tx.send(TurnEvent::Audio {
                            turn,
                            audio,
                            first_of_turn: first,
                            at: Instant::now(),
                        });
                        first = false;
                    }
                    Ok(_) => {}
                    Err(error) => {
                        let _ = speak_tx.send(TurnEvent::Failed { turn, error, stage: "tts" });
                        return false;
                    }
                }
            }
            let _ = speak_tx.send(TurnEvent::SentenceEnd { turn, text: sentence });
        }
        true
    };
    let writer = async {
        let mut full = String::new();
        match source {
            TurnSource::Text(text) => {
                let _ = tx.send(TurnEvent::FirstSentence { turn, at: Instant::now() });
                let _ = sentence_tx.send(text.clone());
                full = text;
            }
            TurnSource::Llm(request) => {
                let mut stream = match engine.providers().llm.stream(request).await {
                    Ok(stream) => stream,
                    Err(error) => {
                        let _ = tx.send(TurnEvent::Failed { turn, error, stage: "llm" });
                        return None;
                    }
                };
                let mut tags = TagParser::new();
                let mut chunker = SentenceChunker::new(40);
                let mut first_token = true;
                let mut first_sentence = true;
                let emit = |segments: Vec<Segment>,
                            chunker: &mut SentenceChunker,
                            full: &mut String,
                            first_sentence: &mut bool| {
                    for segment in segments {
                        match segment {
                            Segment::Text(text) => {
                                full.push_str(&text);
                                for sentence in chunker.push(&text) {
                                    if *first_sentence {
                                        *first_sentence = false;
                                        let _ = tx.send(TurnEvent::FirstSentence {
                                            turn,
                                            at: Instant::now(),
                                        });
                                    }
                                    let _ = sentence_tx.send(sentence);
                                }
                            }
                            Segment::Action(action) => {
                                // Flush what was said before the tag, so actions keep their order.
                                if let Some(rest) = chunker.finish() {
                                    let _ = sentence_tx.send(rest);
                                }
                                let _ = tx.send(TurnEvent::Action { turn, action });
                            }
                        }
                    }
                };
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(LlmEvent::TextDelta(delta)) => {
                            if first_token {
                                first_token = false;
                                let _ = tx.send(TurnEvent::FirstToken { turn, at: Instant::now() });
                            }
                            let segments = tags.push(&delta);
                            emit(segments, &mut chunker, &mut full, &mut first_sentence);
                        }
                        Ok(LlmEvent::ToolCall { .. }) => {}
                        Ok(LlmEvent::Done { .. }) => break,
                        Err(error) => {
                            let _ = tx.send(TurnEvent::Failed { turn, error, stage: "llm" });
                            return None;
                        }
                    }
                }
                let segments = tags.finish();
                emit(segments, &mut chunker, &mut full, &mut first_sentence);
                if let Some(rest) = chunker.finish() {
                    if first_sentence {
                        let _ = tx.send(TurnEvent::FirstSentence { turn, at: Instant::now() });
                    }
                    let _ = sentence_tx.send(rest);
                }
            }
        }
        drop(sentence_tx);
        Some(full)
    };
    let (spoken, written) = tokio::join!(speaker, writer);
    if spoken && let Some(text) = written {
        let _ = tx.send(TurnEvent::Done { turn, text: text.trim().to_owned() });
    }
}
