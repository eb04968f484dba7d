//! One call's session: the actor that owns the media WebSocket and runs the conversation.
//!
//! The actor is one task looping over a `select!` of: the caller's WebSocket messages, the
//! recogniser's events, the current agent turn's events, the engine's "end calls now" signal and
//! one timer (the next frame due, the end of the caller's turn, silence, the duration limit).
//! Everything per frame is synchronous and allocation-light; provider I/O runs in the turn task
//! ([`turn::run_turn`]) so the loop never waits on a provider, and persistence goes through the
//! call's recorder, so it never waits on the database.
//!
//! The parts:
//! - this module: the actor loop, the caller's audio and keypad, speech recognition, the end of
//!   the call;
//! - [`turn`]: agent turns (LLM stream → action-tag parser → sentence chunker → TTS per sentence
//!   → μ-law chunks → [`Playout`] → frames paced on a 20 ms grid with a `mark` after each
//!   sentence), barge-in, and what a failed turn leads to ([`turn::TurnKind`],
//!   [`turn::Stage`]);
//! - [`timers`]: the loop's single deadline and what each deadline does (frames, silence
//!   re-prompts, the duration limit, the heartbeat, the drain's goodbye);
//! - [`actions`]: the one command path for what the agent asks for (end the call, transfer,
//!   text, functions);
//! - [`transfer`]: handing the call over to a person, and resuming it when nobody answered.
//! - [`outage`]: provider outages — the outage line, giving up after failed turns, recognition
//!   reconnecting with buffered audio, the carrier's last word.
//!
//! Barge-in sends `clear`, drops the turn and keeps in the history only what the caller heard.

mod actions;
mod answering;
mod outage;
mod timers;
mod transfer;
mod turn;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use futures::{Sink, SinkExt, Stream, StreamExt};
use nixflex_core::agent::{AgentSettings, RecordingSource};
use nixflex_core::call::{
    CallRecord, CallStatus, Direction, EndedReason, FunctionCallLog, TranscriptEntry, TurnLatency,
};
use nixflex_core::ids::AgentId;
use nixflex_core::number::{NumberSettings, PhoneNumber};
use nixflex_pipeline::ProviderError;
use nixflex_pipeline::llm::LlmMessage;
use nixflex_pipeline::stt::{SttEvent, SttEvents, SttInput, SttOptions, UTTERANCE_END_GAP};
use nixflex_providers::twilio::TwilioCredentials;
use nixflex_store::CallUpdate;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument as _;

use std::sync::Arc;

use crate::capture::CallCapture;
use crate::engine::{Engine, Recorder};
use crate::functions::{FUNCTION_TIMEOUT, FunctionKit};
use crate::playout::{Pacer, Playout};
use crate::prompt::{self, Channel, PastCall, PromptContext};
use crate::providers::CallProviders;
use crate::twilio_ws::{self, Inbound};
use crate::vad::{BargeIn, TurnDetector, Vad, VadConfig, VadEvent, Words, classify_words};

pub(crate) use actions::tools_enabled;
pub(crate) use answering::VoicemailAction;
use turn::{ActiveTurn, TurnEvent, TurnTiming};

/// A final transcript below this confidence is unclear speech: the agent's `fallback_message`
/// asks the caller to say it again.
const UNCLEAR_CONFIDENCE: f32 = 0.35;
/// Length of one media frame.
const FRAME: Duration = Duration::from_millis(20);
/// The caller's audio goes to the recogniser in pieces of 100 ms of 8 kHz μ-law (5 frames):
/// a fifth of the messages, wake-ups and allocations of sending every frame, and no delay
/// where it counts — the piece is sent at once when the caller stops speaking
/// (docs/engine.md#audio-to-the-recogniser).
const STT_BATCH: usize = 800;
/// Inter-digit timeout that ends a DTMF entry without `#`.
const DTMF_GAP: Duration = Duration::from_millis(1500);
/// How long encoding and storing the engine's own recording may hold up the call's final
/// update.
const RECORDING_SAVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Audio the engine's own recording keeps beyond the agent's duration limit: the closing
/// goodbye's grace and the stream's set-up.
const RECORDING_MARGIN: Duration = Duration::from_secs(60);

/// Why a call ended (`ended_reason`, docs/engine.md#ended-reasons).
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
    /// The server was shutting down and the drain time ran out: the agent said a short goodbye
    /// and the call was ended (docs/engine.md#shutdown-drain).
    ServerShutdown,
    /// A voicemail system answered (docs/engine.md#voicemail).
    Voicemail,
    /// The session handed the call over to the carrier for a transfer (docs/engine.md#transfers):
    /// the call goes on without it and its end is decided by the transfer's outcome.
    Transferred,
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
            EndReason::ServerShutdown => Self::ServerShutdown,
            EndReason::Voicemail => Self::Voicemail,
            EndReason::Transferred => Self::Transferred,
        }
    }
}

/// What a call needs to start, loaded once before audio flows.
pub(crate) struct CallSetup {
    pub(crate) call: CallRecord,
    pub(crate) agent: AgentSettings,
    pub(crate) agent_id: AgentId,
    pub(crate) number: PhoneNumber,
    pub(crate) credentials: TwilioCredentials,
    pub(crate) history: Vec<PastCall>,
    pub(crate) caller_context: Option<serde_json::Map<String, serde_json::Value>>,
    /// The secrets that sign requests to the agent's custom functions (the account's active
    /// keys; empty when the agent has no functions).
    pub(crate) function_secrets: Vec<String>,
    /// An outbound call's purpose and variables (none for inbound calls).
    pub(crate) purpose: Option<crate::outbound::CallPurpose>,
    /// What the call does if a voicemail system answers.
    pub(crate) voicemail_action: VoicemailAction,
    /// When the stream's `start` message arrived: the zero of the engine's own recording, the
    /// clock Twilio's media timestamps count from.
    pub(crate) stream_started: Instant,
    /// Set when this stream returns the call from a failed transfer.
    pub(crate) resume: Option<crate::transfer::Resume>,
    /// The account's own LLM, first in the call's chain (docs/providers.md#bring-your-own-llm-and-tts).
    pub(crate) account_llm: Option<Arc<dyn nixflex_pipeline::llm::LlmProvider>>,
    /// The account's own voice (provider and its voice id), first in the call's chain.
    pub(crate) account_tts: Option<(Arc<dyn nixflex_pipeline::tts::TtsProvider>, String)>,
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

    /// What the prompt and the functions' variables are built from, as of `now`.
    fn prompt_context<'a>(
        &'a self,
        no_vars: &'a BTreeMap<String, String>,
        now: chrono::DateTime<Utc>,
    ) -> PromptContext<'a> {
        PromptContext {
            agent: &self.agent,
            number: Some(self.number_settings()),
            channel: Channel::Voice,
            direction: self.call.direction,
            caller_phone: self.caller_number(),
            business_phone: &self.number.phone_number,
            call_id: &self.call.call_id,
            agent_id: &self.agent_id,
            now,
            history: &self.history,
            caller_context: self.caller_context.as_ref(),
            call_purpose: self.purpose.as_ref().map(|p| p.prompt.as_str()),
            dynamic_vars: self.purpose.as_ref().map_or(no_vars, |p| &p.dynamic_vars),
            tools_enabled: tools_enabled(&self.agent),
        }
    }
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
    /// The call's provider chains (docs/engine.md#provider-outages).
    providers: Arc<CallProviders>,
    /// Turns that failed in a row (reset by a turn that worked).
    failed_turns: u32,
    /// Speech synthesis is down: the carrier says the outage line when the session ends.
    last_word: bool,
    /// The caller's audio the recogniser has not transcribed yet (since its last final result;
    /// only a short tail while nobody speaks): replayed into a new recogniser when this one is
    /// lost (docs/engine.md#provider-outages).
    stt_pending: Vec<u8>,
    /// The caller spoke since the recogniser's last final result.
    stt_pending_speech: bool,
    /// Why the recogniser was lost (for the record once it is back).
    stt_lost_error: Option<ProviderError>,
    /// The chain index of the recogniser in use (or being connected).
    stt_index: usize,
    /// When the recogniser in use was reconnected after a loss (`None` for the call's first),
    /// and whether it sent a final result since.
    stt_connected_at: Option<Instant>,
    stt_heard: bool,
    /// A final result is owed by then (the end of speech was signalled): past it, the
    /// recogniser counts as stalled.
    stt_final_due: Option<Instant>,
    speaking_rate: f32,
    // Audio in.
    stt_input: Option<SttInput>,
    /// Caller audio not yet handed to the recogniser: it goes in [`STT_BATCH`] pieces, not
    /// frame by frame (docs/engine.md#audio-to-the-recogniser).
    stt_batch: BytesMut,
    stt_events: Option<SttEvents>,
    /// A reconnection of the recogniser in progress.
    stt_reconnect: Option<JoinHandle<outage::SttReconnect>>,
    vad: Vad,
    turns: TurnDetector,
    barge_in: BargeIn,
    /// What the recogniser heard of the caller's current speech run: the finals since it
    /// started and the latest interim hypothesis (docs/engine.md#backchannels).
    run_finals: Words,
    run_interim: Words,
    /// Whether every speech run of the open caller turn ended while the agent was still
    /// audible (`None` before the first ended), and whether one of them interrupted it.
    turn_under_agent: Option<bool>,
    turn_interrupted: bool,
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
    /// Custom-function invocations so far (logged on the call).
    function_calls: Vec<FunctionCallLog>,
    /// Invocations started and not yet logged (they may outlive their turn).
    functions_pending: usize,
    /// Notes for the model about actions that were not carried out (see `actions`).
    action_notes: Vec<&'static str>,
    /// `[SEND_SMS:]` tags handled so far (each text's send key counts them).
    texts_sent: u32,
    dtmf: String,
    dtmf_deadline: Option<Instant>,
    // Silence and limits.
    silence_since: Option<Instant>,
    reprompts: u32,
    max_duration_at: Instant,
    goodbye_started: bool,
    end_after_playout: Option<EndReason>,
    /// The destination of a transfer waiting for the hand-off line to play.
    transfer_to: Option<transfer::PendingTransfer>,
    hard_deadline: Option<Instant>,
    ended: Option<EndReason>,
    /// The engine's drain time ran out and the goodbye was started.
    shutting_down: bool,
    last_heartbeat: Instant,
    audio_buf: Vec<u8>,
    /// The engine's own recording, when this call is recorded by the engine.
    capture: Option<CallCapture>,
    /// The outbound opener and voicemail detection.
    answering: answering::Answering,
}

impl<W> Session<W>
where
    W: Sink<String> + Unpin + Send,
{
    pub(crate) fn new(engine: Engine, setup: CallSetup, writer: W, stream_sid: String) -> Self {
        let started = Instant::now();
        let recorder =
            engine.spawn_recorder(setup.call.call_id.clone(), setup.call.account_id.clone());
        let agent = &setup.agent;
        let number = setup.number_settings();
        let voice_id = number.voice_id.clone().unwrap_or_else(|| agent.voice_id.clone());
        let providers = Arc::new(CallProviders::new(
            engine.providers(),
            &voice_id,
            started,
            setup.account_llm.clone(),
            setup.account_tts.clone(),
        ));
        let speaking_rate = number.speaking_rate.or(agent.speaking_rate).unwrap_or(1.0);
        let empty_vars = BTreeMap::new();
        let system_prompt =
            prompt::build_system_prompt(&setup.prompt_context(&empty_vars, Utc::now()));
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
        let capture = (engine.recordings().is_some()
            && crate::recordings::recording_source(agent, number)
                == Some(RecordingSource::Nixflex))
        .then(|| {
            let limit = Duration::from_secs(u64::from(agent.max_call_duration_seconds));
            CallCapture::new(limit + RECORDING_MARGIN)
        });
        let answering = answering::Answering::new(
            setup.call.direction,
            agent,
            setup.voicemail_action.clone(),
            started,
        );
        Self {
            answering,
            engine,
            setup,
            writer,
            stream_sid,
            started,
            recorder,
            system_prompt,
            providers,
            failed_turns: 0,
            last_word: false,
            stt_pending: Vec::new(),
            stt_pending_speech: false,
            stt_lost_error: None,
            stt_index: 0,
            stt_connected_at: None,
            stt_heard: false,
            stt_final_due: None,
            speaking_rate,
            stt_input: None,
            stt_batch: BytesMut::new(),
            stt_events: None,
            stt_reconnect: None,
            vad: Vad::new(vad_config),
            turns,
            barge_in,
            run_finals: Words::Nothing,
            run_interim: Words::Nothing,
            turn_under_agent: None,
            turn_interrupted: false,
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
            function_calls: Vec::new(),
            functions_pending: 0,
            action_notes: Vec::new(),
            texts_sent: 0,
            dtmf: String::new(),
            dtmf_deadline: None,
            silence_since: None,
            reprompts: 0,
            max_duration_at,
            goodbye_started: false,
            end_after_playout: None,
            transfer_to: None,
            hard_deadline: None,
            ended: None,
            shutting_down: false,
            last_heartbeat: started,
            audio_buf: Vec::with_capacity(320),
            capture,
        }
    }

    fn offset(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.started)
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(self.offset(at).as_millis()).unwrap_or(u64::MAX)
    }

    /// What a turn needs to run the agent's functions, with the variables as of now.
    fn function_kit(&self) -> FunctionKit {
        let no_vars = BTreeMap::new();
        FunctionKit {
            functions: self.setup.agent.functions.clone(),
            secrets: self.setup.function_secrets.clone(),
            variables: prompt::template_variables(&self.setup.prompt_context(&no_vars, Utc::now())),
            call_started: self.started,
            http: self.engine.customer().clone(),
        }
    }

    /// `at` on the clock of the engine's own recording (time since the stream started).
    fn stream_offset(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.setup.stream_started)
    }
}

/// The recognition options of a call with these agent settings.
pub(crate) fn stt_options(agent: &AgentSettings) -> SttOptions {
    SttOptions {
        language: agent.language.clone(),
        endpointing: Some(stt_endpointing(agent)),
        keywords: agent
            .boosted_keywords
            .as_deref()
            .map(|k| k.split(',').map(|w| w.trim().to_owned()).filter(|w| !w.is_empty()).collect())
            .unwrap_or_default(),
        ..SttOptions::default()
    }
}

/// The silence after the caller's words after which the recogniser marks its result
/// `speech_final`: the agent's `response_eagerness` (at least 10 ms).
fn stt_endpointing(agent: &AgentSettings) -> Duration {
    Duration::from_millis(u64::from(agent.response_eagerness).max(10))
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
        self.restore_from_record();
        let now = Instant::now();
        self.recorder.record(CallUpdate {
            call_status: Some(CallStatus::InProgress),
            answered_at: Some(nixflex_store::now()),
            heartbeat_at: Some(nixflex_store::now()),
            ..CallUpdate::default()
        });
        // The recogniser (pre-warmed at the webhook) is connected in the background: the
        // greeting never waits for it, and the caller's audio is kept until it is there.
        self.open_first_stt();
        if !self.resume_after_transfer(now) {
            self.start_greeting(now);
        }
        // Cancelled when the server's drain time runs out: the call then says goodbye and ends.
        let end_calls = self.engine.end_calls_signal();
        loop {
            if let Some(reason) = self.ended {
                if reason == EndReason::Transferred && !self.hand_off().await {
                    continue;
                }
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
                () = end_calls.cancelled(), if !self.shutting_down => {
                    self.on_server_shutdown(Instant::now()).await;
                }
                () = tokio::time::sleep_until(deadline) => {}
            }
            self.on_tick(Instant::now()).await;
        }
    }

    async fn send(&mut self, text: String) {
        if self.writer.send(text).await.is_err() && self.ended.is_none() {
            self.ended = Some(EndReason::CallerHangup);
        }
    }

    /// Queues a message in the socket's buffer without writing it out: [`Self::flush`] then
    /// writes everything queued at once.
    async fn feed(&mut self, text: String) {
        if self.writer.feed(text).await.is_err() && self.ended.is_none() {
            self.ended = Some(EndReason::CallerHangup);
        }
    }

    async fn flush(&mut self) {
        if self.writer.flush().await.is_err() && self.ended.is_none() {
            self.ended = Some(EndReason::CallerHangup);
        }
    }

    async fn on_ws_text(&mut self, text: &str) {
        let mut audio = std::mem::take(&mut self.audio_buf);
        let decoded = twilio_ws::decode(text, &mut audio);
        match decoded {
            Ok(Inbound::Media { timestamp_ms }) => {
                let arrived = self.stream_offset(Instant::now());
                if let Some(capture) = self.capture.as_mut() {
                    capture.caller_frame(timestamp_ms.map(Duration::from_millis), arrived, &audio);
                }
                self.on_caller_audio(&audio).await;
            }
            Ok(Inbound::Mark { name }) => self.playout.on_mark(&name),
            Ok(Inbound::Dtmf { digit }) => self.on_dtmf(digit),
            Ok(Inbound::Stop) => self.ended = Some(EndReason::CallerHangup),
            Ok(Inbound::Connected | Inbound::Start(_) | Inbound::Other) => {}
            Err(error) => {
                tracing::warn!(message = "Malformed media message ignored.", error = %error)
            }
        }
        self.audio_buf = audio;
    }

    async fn on_caller_audio(&mut self, audio: &[u8]) {
        let now = Instant::now();
        self.voicemail_audio(audio, now);
        self.keep_for_stt(audio);
        if self.stt_input.is_some() {
            self.stt_batch.extend_from_slice(audio);
            if self.stt_batch.len() >= STT_BATCH {
                self.send_stt_batch();
            }
        }
        if let Some(event) = self.vad.push_frame(audio) {
            let at = self.offset(now);
            self.turns.on_vad(event, at);
            match event {
                VadEvent::SpeechStarted => {
                    // With a recogniser connected only its words stop the silence clock: a
                    // crowd's voices are voiced too (docs/engine.md#silence). Without one the
                    // voice alone has to.
                    if self.stt_input.is_none() {
                        self.caller_heard();
                    }
                    self.stt_pending_speech = true;
                    // Nothing heard of the caller's turn so far: earlier speech runs were a
                    // voice without words (a crowd), and whether they overlapped the agent says
                    // nothing about this turn (docs/engine.md#backchannels).
                    if self.turns.pending_text().is_empty() && self.run_words() == Words::Nothing {
                        self.turn_under_agent = None;
                    }
                    if !self.barge_in.in_utterance() {
                        self.run_finals = Words::Nothing;
                        self.run_interim = Words::Nothing;
                    }
                }
                VadEvent::SpeechEnded => {
                    let under_agent = self.agent_audible();
                    self.turn_under_agent =
                        Some(self.turn_under_agent.unwrap_or(true) && under_agent);
                    self.timing.speech_ended =
                        Some(now.checked_sub(VadConfig::default().hangover).unwrap_or(now));
                    self.finalize_stt(now);
                }
            }
        }
        let agent_playing = self.agent_audible();
        let words = if !agent_playing || !self.vad.is_speaking() {
            Words::Nothing
        } else if self.stt_input.is_none() {
            Words::Unavailable
        } else {
            self.run_words()
        };
        // The closing goodbye at the duration limit is not interruptible.
        if self.barge_in.on_frame(self.vad.speech_ms(), FRAME, agent_playing, words)
            && !self.goodbye_started
        {
            self.turn_interrupted = true;
            self.barge_in_now().await;
        }
    }

    /// The caller was heard (words, or their voice while no recogniser listens): the
    /// silence clock stops and the check-ins start over.
    fn caller_heard(&mut self) {
        self.silence_since = None;
        self.reprompts = 0;
    }

    /// What the recogniser heard of the current speech run.
    fn run_words(&self) -> Words {
        self.run_finals.and(self.run_interim)
    }

    /// Whether a finished caller turn is only an acknowledgement spoken over the agent, which
    /// the agent talks on through rather than answers (docs/engine.md#backchannels). Forgets the
    /// turn's overlap either way.
    pub(super) fn take_backchannel_turn(&mut self, text: &str) -> bool {
        let under_agent = self.turn_under_agent.take() == Some(true);
        let interrupted = std::mem::take(&mut self.turn_interrupted);
        under_agent && !interrupted && classify_words(text) == Words::Backchannel
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
        if let Some(SttEvent::Final { .. }) = &event {
            self.on_stt_final();
        }
        match event {
            Some(SttEvent::Final { text, confidence, .. })
                if !text.trim().is_empty() && confidence < UNCLEAR_CONFIDENCE =>
            {
                // Unclear speech: ask again rather than answer a guess.
                tracing::info!(
                    message = "Unclear speech: the fallback message asks again.",
                    confidence
                );
                if self.idle() && !self.goodbye_started {
                    self.speak_fallback();
                }
            }
            Some(SttEvent::Final { text, speech_final, from_finalize, .. }) => {
                let at = self.offset(now);
                self.run_interim = Words::Nothing;
                if !text.trim().is_empty() {
                    self.caller_heard();
                    self.run_finals = self.run_finals.and(classify_words(&text));
                    self.last_final_at = Some(now);
                    self.turns.on_final_transcript(&text, at);
                    self.timing.final_transcript = Some(now);
                    // The recogniser's own endpoint after the words ends the turn even while a
                    // crowd keeps the detector hearing a voice (docs/engine.md#end-of-turn).
                    if speech_final && !from_finalize {
                        self.turns.on_endpoint(at, stt_endpointing(&self.setup.agent));
                    }
                    self.voicemail_heard(&text, now).await;
                }
            }
            Some(SttEvent::Interim { text }) => {
                self.run_interim = classify_words(&text);
                if self.run_interim != Words::Nothing {
                    self.caller_heard();
                    self.turns.on_words();
                }
            }
            Some(SttEvent::UtteranceEnd) => {
                // A gap between words as long as the utterance end asks for: the caller's
                // words have ended, whatever the detector still hears.
                self.turns.on_words_ended(self.offset(now), UTTERANCE_END_GAP);
            }
            Some(SttEvent::SpeechStarted) => {}
            Some(SttEvent::Error(error)) => {
                tracing::error!(message = "Speech recognition failed mid-call.", error = %error);
                // A broken connection is worth re-opening; an error the provider reported
                // moves the call down the chain (docs/engine.md#recognition-outages).
                let loss = if error.kind == nixflex_pipeline::ProviderErrorKind::Transport {
                    outage::SttLoss::Dropped
                } else {
                    outage::SttLoss::Failed
                };
                self.stt_lost(Some(error), loss);
            }
            Some(SttEvent::Closed) | None => {
                if self.ended.is_none() {
                    self.stt_lost(None, outage::SttLoss::Dropped);
                }
            }
        }
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
            function_calls: Some(self.function_calls.clone()),
            provider_events: self.providers.has_events().then(|| self.providers.events()),
            avg_latency_ms: self.avg_latency(),
            heartbeat_at: Some(nixflex_store::now()),
            ..CallUpdate::default()
        });
    }

    /// Encodes the engine's own recording (on a blocking thread: the caller is gone, but the
    /// runtime still carries other calls) and stores it. Bounded by a timeout; a failure is
    /// logged and the call ends without a recording.
    async fn save_recording(&self, capture: CallCapture) {
        let Some(recordings) = self.engine.recordings().cloned() else { return };
        if capture.is_empty() {
            return;
        }
        let account_id = self.setup.call.account_id.clone();
        let call_id = self.setup.call.call_id.clone();
        let save = async move {
            let wav = match tokio::task::spawn_blocking(move || capture.to_wav()).await {
                Ok(Ok(wav)) => wav,
                Ok(Err(error)) => {
                    tracing::error!(message = "The call's recording could not be encoded.", error = %error);
                    return;
                }
                Err(error) => {
                    tracing::error!(message = "Encoding the call's recording failed.", error = %error);
                    return;
                }
            };
            let duration_s = wav.duration_s;
            match recordings
                .save(&account_id, &call_id, Bytes::from(wav.wav), Some(duration_s))
                .await
            {
                Ok(stored) => tracing::info!(
                    message = "Call recording stored.",
                    location = %stored.location,
                    duration_s
                ),
                Err(error) => {
                    tracing::error!(message = "The call's recording could not be stored.", error = %error);
                }
            }
        };
        if tokio::time::timeout(RECORDING_SAVE_TIMEOUT, save).await.is_err() {
            tracing::error!(
                message = "Storing the call's recording timed out; the call ends without it."
            );
        }
    }

    /// Waits (bounded by the functions' own limit) for invocations still running when the call
    /// ended, so each is logged on the call.
    async fn await_functions(&mut self) {
        let deadline = Instant::now() + FUNCTION_TIMEOUT + Duration::from_secs(1);
        let is_function = |event: &TurnEvent| {
            matches!(event, TurnEvent::FunctionStarted | TurnEvent::FunctionDone { .. })
        };
        loop {
            // Starts already queued count before deciding there is nothing to wait for.
            while let Ok(event) = self.turn_rx.try_recv() {
                if is_function(&event) {
                    self.on_turn_event(event);
                }
            }
            if self.functions_pending == 0 {
                break;
            }
            match tokio::time::timeout_at(deadline, self.turn_rx.recv()).await {
                Ok(Some(event)) if is_function(&event) => self.on_turn_event(event),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }

    async fn finish(mut self, reason: EndReason) -> EndReason {
        self.cancel_turn();
        self.send_stt_batch();
        if let Some(input) = self.stt_input.take() {
            let _ = input.close().await;
        }
        if let Some(task) = self.stt_reconnect.take() {
            task.abort();
        }
        // Speech synthesis is down: the carrier's own voice has the last word.
        let mut reason = reason;
        let mut carrier_took_over = false;
        if self.last_word
            && reason != EndReason::CallerHangup
            && let Some(after) = self.carrier_last_word().await
        {
            reason = after;
            carrier_took_over = true;
        }
        if !carrier_took_over && !matches!(reason, EndReason::CallerHangup | EndReason::Transferred)
        {
            // Layer 1: the carrier ends the call; layer 2: closing the stream makes Twilio ask
            // the after-stream URL, which answers with a hang-up.
            let engine = self.engine.clone();
            let credentials = self.setup.credentials.clone();
            if let Some(sid) = self.setup.call.twilio_call_sid.clone() {
                // Tracked with the sessions, so a shutdown waits for it.
                self.engine.spawn_tracked(
                    async move { engine.hang_up_at_carrier(&credentials, &sid).await }
                        .in_current_span(),
                );
            }
        }
        let _ = self.writer.close().await;
        let ended_at = nixflex_store::now();
        self.await_functions().await;
        let duration = i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX);
        // Before the final update, which queues the follow-up: the analysis and the
        // `call.completed` webhook then find the recording on the call.
        if let Some(mut capture) = self.capture.take() {
            capture.end(self.stream_offset(Instant::now()));
            self.save_recording(capture).await;
        }
        if reason == EndReason::Transferred {
            // The call goes on at the carrier; what it cost the AI ends here.
            self.recorder.record(CallUpdate {
                duration_seconds: Some(duration),
                transcript: Some(self.transcript.clone()),
                turns: Some(self.latencies.clone()),
                function_calls: Some(self.function_calls.clone()),
                provider_events: self.providers.has_events().then(|| self.providers.events()),
                avg_latency_ms: self.avg_latency(),
                heartbeat_at: Some(nixflex_store::now()),
                ..CallUpdate::default()
            });
            tracing::info!(message = "Call handed over for a transfer.");
            self.recorder.finish().await;
            return reason;
        }
        self.recorder.record_end(CallUpdate {
            call_status: Some(CallStatus::Completed),
            ended_reason: Some(reason.into()),
            ended_at: Some(ended_at),
            duration_seconds: Some(duration),
            transcript: Some(self.transcript.clone()),
            turns: Some(self.latencies.clone()),
            function_calls: Some(self.function_calls.clone()),
            provider_events: self.providers.has_events().then(|| self.providers.events()),
            avg_latency_ms: self.avg_latency(),
            voicemail_detected: self.answering.detected.map(|_| true),
            voicemail_detection_method: self
                .answering
                .detected
                .map(|method| method.as_str().to_owned()),
            billable_seconds: self.voicemail_billable_seconds(reason),
            ..CallUpdate::default()
        });
        tracing::info!(
            message = "Call ended.",
            ended_reason = reason.as_str(),
            turns = self.latencies.len()
        );
        self.recorder.finish().await;
        reason
    }
}
