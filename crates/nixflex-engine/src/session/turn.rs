//! Agent turns: starting one (a reply to the caller, the greeting, a re-prompt, the fallback
//! message, a goodbye), the turn task that produces its audio ([`run_turn`]: LLM stream →
//! action tags → sentences → TTS, streamed back as [`TurnEvent`]s), what the actor does with
//! each event, barge-in, and what a failed turn leads to.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Sink;
use nixflex_core::agent::ResponseLength;
use nixflex_core::call::{
    Direction, FunctionCallLog, TranscriptEntry, TranscriptRole, TurnLatency,
};
use nixflex_pipeline::ProviderError;
use nixflex_pipeline::llm::{ContentPart, LlmEvent, LlmMessage, LlmRequest, Role};
use nixflex_pipeline::tts::TtsRequest;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument as _;

use super::Session;
use super::actions::Command;
use crate::chunker::SentenceChunker;
use crate::functions::{self, FunctionKit};
use crate::playout::Pacer;
use crate::prompt;
use crate::providers::{CallProviders, ProviderStage, StageFailure, next_or_stall};
use crate::tags::{Segment, TagParser};
use crate::twilio_ws;

/// A reply may not run longer than this before the engine gives up on it.
const TURN_TIMEOUT: Duration = Duration::from_secs(45);

/// What a turn is for; it decides whether latency is measured, whether its text joins the LLM
/// history, and what happens when it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TurnKind {
    /// The answer to something the caller said (latency is recorded).
    Reply,
    /// The opening line (fixed or improvised by the LLM).
    Greeting,
    /// "Are you still there?" after a silence.
    Reprompt,
    /// The agent's `fallback_message` when the caller could not be understood.
    Fallback,
    /// The outage line after a provider failed (docs/engine.md#provider-outages).
    Outage,
    /// A closing line the caller cannot interrupt (duration limit, server shutdown).
    Goodbye,
}

impl TurnKind {
    /// Whether the turn answers the caller, so its latency is recorded.
    pub(super) fn answers_caller(self) -> bool {
        self == Self::Reply
    }

    /// Whether the turn's text joins the LLM history (re-prompts and fallbacks do not: the
    /// model should not see its own "are you there?" or apology as part of the conversation).
    pub(super) fn in_history(self) -> bool {
        matches!(self, Self::Reply | Self::Greeting | Self::Goodbye)
    }

    /// What the session does when this turn fails at `stage` (`exhausted`: no speech
    /// synthesiser of the chain could start), after `failed_turns` consecutive failed turns
    /// including this one.
    pub(super) fn after_failure(
        self,
        stage: Stage,
        exhausted: bool,
        failed_turns: u32,
    ) -> AfterFailure {
        // Speech synthesis is down (or the outage line itself could not be spoken): only the
        // carrier's own voice can still reach the caller.
        if stage == Stage::Tts && (exhausted || self == Self::Outage) {
            return AfterFailure::CarrierSays;
        }
        if self == Self::Outage || failed_turns >= MAX_FAILED_TURNS {
            return AfterFailure::GiveUp;
        }
        AfterFailure::SpeakOutage
    }
}

/// Consecutive failed turns after which the call is transferred (or ended).
pub(super) const MAX_FAILED_TURNS: u32 = 2;

/// Where a turn failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// The LLM request or its stream.
    Llm,
    /// Speech synthesis.
    Tts,
    /// The whole turn took longer than its time limit.
    Timeout,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Self::Llm => "llm",
            Self::Tts => "tts",
            Self::Timeout => "turn",
        }
    }
}

/// What follows a failed turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterFailure {
    /// Say the outage line and carry on.
    SpeakOutage,
    /// Say the outage line, then transfer to the agent's `transfer_number` or end the call
    /// (`error`).
    GiveUp,
    /// Speech synthesis is down: the carrier says the outage line, then dials the transfer
    /// number or hangs up.
    CarrierSays,
}

/// Events from a turn task to the session. Every event carries its turn id, so events of a
/// cancelled turn are recognised and dropped — except the two about function invocations, which
/// outlive a cancelled turn (an invocation is logged even when a barge-in dropped its turn).
#[derive(Debug)]
pub(super) enum TurnEvent {
    /// The LLM sent its first token.
    FirstToken { turn: u64, at: Instant },
    /// The first sentence went to TTS.
    FirstSentence { turn: u64, at: Instant },
    /// μ-law audio of the current sentence.
    Audio { turn: u64, audio: Bytes, first_of_turn: bool, at: Instant },
    /// The current sentence's audio is complete.
    SentenceEnd { turn: u64, text: String },
    /// Something the agent asked for (an action tag), in order with the text.
    Command { turn: u64, command: Command },
    /// A custom function is being called (on its own task).
    FunctionStarted,
    /// A custom function call ended; its log entry for the call record.
    FunctionDone { log: FunctionCallLog },
    /// The turn produced everything; `text` is the reply after its last function round (tags
    /// removed) and `exchange` the function calls and results before it, in order, for the
    /// history.
    Done { turn: u64, text: String, exchange: Vec<LlmMessage> },
    /// The turn failed.
    Failed {
        turn: u64,
        error: ProviderError,
        stage: Stage,
        provider: &'static str,
        exhausted: bool,
    },
}

/// What a turn says.
pub(super) enum TurnSource {
    /// Ask the LLM.
    Llm(LlmRequest),
    /// Speak fixed text (greeting, fallback, goodbye).
    Text(String),
}

/// Latency bookkeeping of the turn being answered.
#[derive(Debug, Default, Clone)]
pub(super) struct TurnTiming {
    pub(super) speech_ended: Option<Instant>,
    decided: Option<Instant>,
    pub(super) final_transcript: Option<Instant>,
    llm_sent: Option<Instant>,
    first_token: Option<Instant>,
    first_sentence: Option<Instant>,
    tts_first_byte: Option<Instant>,
    pub(super) first_frame: Option<Instant>,
}

/// The turn in progress.
pub(super) struct ActiveTurn {
    pub(super) id: u64,
    task: JoinHandle<()>,
    pub(super) kind: TurnKind,
    /// Index of its transcript entry, once it produced audio.
    pub(super) transcript_index: Option<usize>,
    pub(super) done: bool,
    text: String,
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
    pub(super) fn on_caller_turn(&mut self, text: String, speech_ended: Instant, now: Instant) {
        self.silence_since = None;
        self.reprompts = 0;
        // A caller who keeps talking before the agent was heard: answer everything at once.
        let mut text = text;
        if let Some(active) = &self.active
            && active.kind.answers_caller()
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
        // Notes about actions that could not be carried out ride along with the caller's words,
        // so the model does not carry on as if they had happened.
        let mut for_llm = match self.take_action_notes() {
            Some(notes) => format!("{notes}\n{text}"),
            None => text.clone(),
        };
        // An outbound callee's first words: the agent answers with its opener.
        if let Some(note) = self.take_opener_note() {
            for_llm = format!("{note}\n{for_llm}");
        }
        self.history.push(LlmMessage::user(for_llm));
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
        self.start_turn(TurnSource::Llm(request), TurnKind::Reply);
    }

    pub(super) fn llm_request(&self, mut messages: Vec<LlmMessage>) -> LlmRequest {
        // Functions are offered as tools, never as text tags.
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
        request.tools = functions::tool_specs(&agent.functions);
        request
    }

    pub(super) fn start_greeting(&mut self, now: Instant) {
        let agent = &self.setup.agent;
        if self.setup.call.direction == Direction::Outbound {
            self.await_pickup(now);
            return;
        }
        if !agent.ai_speaks_first {
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
            Some(text) => self.start_turn(TurnSource::Text(text), TurnKind::Greeting),
            None => {
                // The LLM improvises the greeting.
                let messages = vec![LlmMessage::user(
                    "[The call has just connected. Greet the caller now, in one short sentence.]",
                )];
                let request = self.llm_request(messages);
                self.start_turn(TurnSource::Llm(request), TurnKind::Greeting);
            }
        }
    }

    /// Apologises with the agent's fallback message as its own turn.
    pub(super) fn speak_fallback(&mut self) {
        let fallback = self.setup.agent.fallback_message.clone();
        self.start_turn(TurnSource::Text(fallback), TurnKind::Fallback);
    }

    pub(super) fn start_turn(&mut self, source: TurnSource, kind: TurnKind) {
        let id = self.next_turn;
        self.next_turn += 1;
        let tx = self.turn_tx.clone();
        let providers = self.providers.clone();
        let rate = self.speaking_rate;
        let language =
            (self.setup.agent.language != "multi").then(|| self.setup.agent.language.clone());
        let functions = match &source {
            TurnSource::Llm(_) if !self.setup.agent.functions.is_empty() => {
                Some(Arc::new(self.function_kit()))
            }
            _ => None,
        };
        let task = tokio::spawn(
            async move {
                let voice = Voice { rate, language };
                let run = run_turn(id, source, providers, voice, functions, tx.clone());
                if tokio::time::timeout(TURN_TIMEOUT, run).await.is_err() {
                    let _ = tx.send(TurnEvent::Failed {
                        turn: id,
                        error: ProviderError::timeout("the reply took too long"),
                        stage: Stage::Timeout,
                        provider: "",
                        exhausted: false,
                    });
                }
            }
            .in_current_span(),
        );
        self.active = Some(ActiveTurn {
            id,
            task,
            kind,
            transcript_index: None,
            done: false,
            text: String::new(),
        });
    }

    pub(super) fn cancel_turn(&mut self) {
        if let Some(active) = self.active.take() {
            active.task.abort();
        }
    }

    pub(super) fn on_turn_event(&mut self, event: TurnEvent) {
        let current = self.active.as_ref().map(|t| t.id);
        match event {
            TurnEvent::FunctionStarted => {
                self.functions_pending += 1;
                return;
            }
            TurnEvent::FunctionDone { log } => {
                self.functions_pending = self.functions_pending.saturating_sub(1);
                self.function_calls.push(log);
                self.persist_progress();
                return;
            }
            _ => {}
        }
        let turn = match &event {
            TurnEvent::FirstToken { turn, .. }
            | TurnEvent::FirstSentence { turn, .. }
            | TurnEvent::Audio { turn, .. }
            | TurnEvent::SentenceEnd { turn, .. }
            | TurnEvent::Command { turn, .. }
            | TurnEvent::Done { turn, .. }
            | TurnEvent::Failed { turn, .. } => *turn,
            TurnEvent::FunctionStarted | TurnEvent::FunctionDone { .. } => return,
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
                        if active.kind.answers_caller() || active.kind.in_history() {
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
            TurnEvent::Command { command, .. } => self.on_command(command),
            TurnEvent::Done { text, exchange, .. } => {
                if let Some(active) = self.active.as_mut() {
                    active.done = true;
                    if active.kind != TurnKind::Outage && active.kind != TurnKind::Fallback {
                        self.failed_turns = 0;
                    }
                    if active.kind.in_history() {
                        self.history.extend(exchange);
                        if !text.trim().is_empty() {
                            self.history.push(LlmMessage::assistant(text));
                        }
                    }
                }
                self.persist_progress();
            }
            TurnEvent::FunctionStarted | TurnEvent::FunctionDone { .. } => {}
            TurnEvent::Failed { error, stage, provider, exhausted, .. } => {
                let Some(active) = self.active.as_mut() else { return };
                active.done = true;
                let kind = active.kind;
                tracing::error!(message = "Agent turn failed.", stage = stage.as_str(), provider, turn_kind = ?kind, error = %error);
                self.on_turn_failed(kind, stage, provider, exhausted);
            }
        }
    }

    pub(super) async fn barge_in_now(&mut self) {
        let clear = twilio_ws::clear(&self.stream_sid);
        self.send(clear).await;
        let interrupted = self.playout.clear();
        // What was sent ahead of its play time is dropped by the clear: the caller never heard
        // it, so the engine's own recording does not keep it either.
        let cleared_at = self.stream_offset(Instant::now());
        if let Some(capture) = self.capture.as_mut() {
            capture.cut_agent(cleared_at);
        }
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
            if active.kind.in_history() {
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
        tracing::debug!(message = "Barge-in: agent audio cleared.");
    }

    pub(super) fn record_latency(&mut self) {
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
        nixflex_metrics::TurnLatencyMs {
            end_of_turn,
            stt,
            llm_first_token,
            tts_first_byte,
            engine_overhead,
            total,
        }
        .record();
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
}

/// The voice a turn speaks with (the voice id comes from the call's current speech provider).
pub(super) struct Voice {
    /// Speaking rate.
    pub(super) rate: f32,
    /// The language to speak, unless the agent is multilingual.
    pub(super) language: Option<String>,
}

/// A tool call of the model's response, as received.
struct ToolCall {
    id: String,
    name: String,
    arguments_json: String,
}

/// Produces one agent turn: text → sentences → speech, streamed to the session. With
/// `functions`, the model's tool calls are run (docs/engine.md#custom-functions) and the turn
/// continues with their results, for at most [`functions::MAX_TOOL_ROUNDS`] rounds.
pub(super) async fn run_turn(
    turn: u64,
    source: TurnSource,
    providers: Arc<CallProviders>,
    voice: Voice,
    functions: Option<Arc<FunctionKit>>,
    tx: mpsc::UnboundedSender<TurnEvent>,
) {
    let (sentence_tx, mut sentence_rx) = mpsc::unbounded_channel::<String>();
    let speak_tx = tx.clone();
    let tts = providers.clone();
    // Speech runs beside the LLM: sentence N is synthesised while N+1 is being written.
    let speaker = async move {
        let mut first = true;
        let failed = |failure: StageFailure| TurnEvent::Failed {
            turn,
            error: failure.error,
            stage: Stage::Tts,
            provider: failure.provider,
            exhausted: failure.exhausted,
        };
        while let Some(sentence) = sentence_rx.recv().await {
            // The voice is set per provider by the chain.
            let mut request = TtsRequest::new(sentence.clone(), String::new());
            request.speaking_rate = voice.rate;
            request.language.clone_from(&voice.language);
            let (mut stream, head, index) = match tts.open_tts(&request).await {
                Ok(opened) => opened,
                Err(failure) => {
                    let _ = speak_tx.send(failed(failure));
                    return false;
                }
            };
            let mut next = head.map(Ok);
            loop {
                let chunk = match next.take() {
                    Some(chunk) => chunk,
                    None => match next_or_stall(&mut stream).await {
                        Some(chunk) => chunk,
                        None => break,
                    },
                };
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
                        let failure = tts.failed_mid_stream(ProviderStage::Tts, index, &error);
                        let _ = speak_tx.send(failed(failure));
                        return false;
                    }
                }
            }
            let _ = speak_tx.send(TurnEvent::SentenceEnd { turn, text: sentence });
        }
        true
    };
    let writer = async {
        let mut exchange = Vec::new();
        let text = match source {
            TurnSource::Text(text) => {
                let _ = tx.send(TurnEvent::FirstSentence { turn, at: Instant::now() });
                let _ = sentence_tx.send(text.clone());
                text
            }
            TurnSource::Llm(mut request) => {
                let mut speech = Speech {
                    turn,
                    tx: &tx,
                    sentence_tx: &sentence_tx,
                    chunker: SentenceChunker::new(40),
                    first_token: true,
                    first_sentence: true,
                };
                let mut rounds = 0;
                loop {
                    let (text, calls) = match speech.one_response(&providers, request.clone()).await
                    {
                        Ok(response) => response,
                        Err(failure) => {
                            let _ = tx.send(TurnEvent::Failed {
                                turn,
                                error: failure.error,
                                stage: Stage::Llm,
                                provider: failure.provider,
                                exhausted: failure.exhausted,
                            });
                            return None;
                        }
                    };
                    let kit = match &functions {
                        Some(kit) if !calls.is_empty() && rounds < functions::MAX_TOOL_ROUNDS => {
                            kit.clone()
                        }
                        _ => {
                            if !calls.is_empty() {
                                tracing::warn!(
                                    message = "Function calls not run: none offered, or the turn's rounds are used up.",
                                    calls = calls.len()
                                );
                            }
                            speech.flush();
                            break text;
                        }
                    };
                    rounds += 1;
                    // What the model said before calling is spoken now, while the call runs.
                    speech.flush();
                    let (assistant, results) =
                        speech.run_calls(&kit, calls, round_id(turn, rounds)).await;
                    let mut content = Vec::new();
                    if !text.trim().is_empty() {
                        content.push(ContentPart::Text(text.trim().to_owned()));
                    }
                    content.extend(assistant);
                    let messages = [
                        LlmMessage { role: Role::Assistant, content },
                        LlmMessage { role: Role::User, content: results },
                    ];
                    request.messages.extend(messages.iter().cloned());
                    exchange.extend(messages);
                }
            }
        };
        drop(sentence_tx);
        Some((text, exchange))
    };
    let (spoken, written) = tokio::join!(speaker, writer);
    if spoken && let Some((text, exchange)) = written {
        let _ = tx.send(TurnEvent::Done { turn, text: text.trim().to_owned(), exchange });
    }
}

/// A prefix for tool-call ids the provider left empty (some OpenAI-compatible servers do).
fn round_id(turn: u64, round: usize) -> String {
    format!("call_t{turn}r{round}_")
}

/// The text side of an LLM turn: tags and sentences out of the model's deltas, in order, to
/// the speaker.
struct Speech<'a> {
    turn: u64,
    tx: &'a mpsc::UnboundedSender<TurnEvent>,
    sentence_tx: &'a mpsc::UnboundedSender<String>,
    chunker: SentenceChunker,
    first_token: bool,
    first_sentence: bool,
}

impl Speech<'_> {
    fn sentence(&mut self, sentence: String) {
        if self.first_sentence {
            self.first_sentence = false;
            let _ = self.tx.send(TurnEvent::FirstSentence { turn: self.turn, at: Instant::now() });
        }
        let _ = self.sentence_tx.send(sentence);
    }

    /// Speaks what the chunker holds back (the end of a reply, or the words before a tag or a
    /// function call).
    fn flush(&mut self) {
        if let Some(rest) = self.chunker.finish() {
            self.sentence(rest);
        }
    }

    fn emit(&mut self, segments: Vec<Segment>, text: &mut String) {
        for segment in segments {
            match segment {
                Segment::Text(piece) => {
                    text.push_str(&piece);
                    for sentence in self.chunker.push(&piece) {
                        self.sentence(sentence);
                    }
                }
                Segment::Action(action) => {
                    // Flush what was said before the tag, so actions keep their order.
                    if let Some(rest) = self.chunker.finish() {
                        let _ = self.sentence_tx.send(rest);
                    }
                    let _ = self.tx.send(TurnEvent::Command {
                        turn: self.turn,
                        command: Command::from_tag(action),
                    });
                }
            }
        }
    }

    /// Streams one model response: its text goes to the speaker as it comes; returns the text
    /// (tags removed) and the tool calls.
    async fn one_response(
        &mut self,
        providers: &CallProviders,
        request: LlmRequest,
    ) -> Result<(String, Vec<ToolCall>), StageFailure> {
        let (mut stream, head, index) = providers.open_llm(&request).await?;
        let mut tags = TagParser::new();
        let mut text = String::new();
        let mut calls = Vec::new();
        let mut next = head.map(Ok);
        loop {
            let event = match next.take() {
                Some(event) => event,
                None => match next_or_stall(&mut stream).await {
                    Some(event) => event,
                    None => break,
                },
            };
            let event = event
                .map_err(|error| providers.failed_mid_stream(ProviderStage::Llm, index, &error))?;
            match event {
                LlmEvent::TextDelta(delta) => {
                    if self.first_token {
                        self.first_token = false;
                        let _ = self
                            .tx
                            .send(TurnEvent::FirstToken { turn: self.turn, at: Instant::now() });
                    }
                    let segments = tags.push(&delta);
                    self.emit(segments, &mut text);
                }
                LlmEvent::ToolCall { id, name, arguments_json } => {
                    calls.push(ToolCall { id, name, arguments_json });
                }
                LlmEvent::Done { .. } => break,
            }
        }
        let segments = tags.finish();
        self.emit(segments, &mut text);
        Ok((text, calls))
    }

    /// Runs one round of tool calls concurrently, each on its own task (logged even if this
    /// turn is cancelled); says [`functions::FILLER_LINE`] once if they take longer than
    /// [`functions::FILLER_AFTER`]. Returns the assistant's tool-use parts and the results.
    async fn run_calls(
        &mut self,
        kit: &Arc<FunctionKit>,
        calls: Vec<ToolCall>,
        id_prefix: String,
    ) -> (Vec<ContentPart>, Vec<ContentPart>) {
        let mut uses = Vec::with_capacity(calls.len());
        let mut pending = Vec::with_capacity(calls.len());
        for (index, call) in calls.into_iter().enumerate() {
            let id = if call.id.is_empty() { format!("{id_prefix}{index}") } else { call.id };
            let input = serde_json::from_str(&call.arguments_json)
                .unwrap_or_else(|_| serde_json::Value::Object(serde_json::Map::new()));
            uses.push(ContentPart::ToolUse { id: id.clone(), name: call.name.clone(), input });
            let _ = self.tx.send(TurnEvent::FunctionStarted);
            let log_tx = self.tx.clone();
            let receiver = functions::spawn_invocation(
                kit.clone(),
                call.name,
                call.arguments_json,
                move |outcome| {
                    let _ = log_tx.send(TurnEvent::FunctionDone { log: outcome.log.clone() });
                },
            );
            pending.push((id, receiver));
        }
        let (ids, receivers): (Vec<String>, Vec<_>) = pending.into_iter().unzip();
        let all = futures::future::join_all(receivers);
        tokio::pin!(all);
        let outcomes = tokio::select! {
            outcomes = &mut all => outcomes,
            () = tokio::time::sleep(functions::FILLER_AFTER) => {
                self.sentence(functions::FILLER_LINE.to_owned());
                all.await
            }
        };
        let results = ids
            .into_iter()
            .zip(outcomes)
            .map(|(tool_use_id, outcome)| match outcome {
                Ok(outcome) => ContentPart::ToolResult {
                    tool_use_id,
                    content: outcome.content,
                    is_error: outcome.is_error,
                },
                // The invocation task ended without an answer (it cannot panic by design).
                Err(_) => ContentPart::ToolResult {
                    tool_use_id,
                    content: "The function did not run. Its result is not available.".to_owned(),
                    is_error: true,
                },
            })
            .collect();
        (uses, results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_turn_says_the_outage_line_then_gives_up_and_a_dead_synthesiser_leaves_it_to_the_carrier()
     {
        for kind in [TurnKind::Reply, TurnKind::Greeting, TurnKind::Reprompt, TurnKind::Goodbye] {
            for stage in [Stage::Llm, Stage::Tts, Stage::Timeout] {
                assert_eq!(
                    kind.after_failure(stage, false, 1),
                    AfterFailure::SpeakOutage,
                    "{kind:?} {stage:?}"
                );
                assert_eq!(
                    kind.after_failure(stage, false, 2),
                    AfterFailure::GiveUp,
                    "{kind:?} {stage:?}"
                );
            }
            assert_eq!(kind.after_failure(Stage::Tts, true, 1), AfterFailure::CarrierSays);
            // An exhausted LLM chain is an ordinary failed turn: speech still works.
            assert_eq!(kind.after_failure(Stage::Llm, true, 1), AfterFailure::SpeakOutage);
        }
        assert_eq!(TurnKind::Outage.after_failure(Stage::Tts, false, 1), AfterFailure::CarrierSays);
        assert_eq!(TurnKind::Outage.after_failure(Stage::Timeout, false, 1), AfterFailure::GiveUp);
        assert_eq!(
            TurnKind::Fallback.after_failure(Stage::Tts, false, 1),
            AfterFailure::SpeakOutage
        );
    }

    #[test]
    fn only_replies_are_timed_and_reprompts_and_fallbacks_stay_out_of_the_history() {
        assert!(TurnKind::Reply.answers_caller());
        assert!(!TurnKind::Greeting.answers_caller());
        assert!(TurnKind::Greeting.in_history() && TurnKind::Goodbye.in_history());
        assert!(!TurnKind::Reprompt.in_history() && !TurnKind::Fallback.in_history());
        assert!(!TurnKind::Outage.in_history() && !TurnKind::Outage.answers_caller());
    }
}
