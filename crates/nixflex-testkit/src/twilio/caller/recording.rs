//! What an emulated call leaves behind: the timeline of everything that happened (times relative
//! to the moment the voice webhook was sent), every agent media frame with its arrival and
//! playback times, the caller's pacing, and the measurements tests and benchmarks read from them.
//!
//! This module only stores and computes; it takes no part in the call itself.

use std::time::Duration;

use nixflex_pipeline::audio::{TELEPHONY_SAMPLE_RATE, mulaw};

use crate::twilio::caller::twiml::Twiml;
use crate::twilio::recordings::Tape;

/// Agent audio separated by more than this much silence counts as two utterances, and a
/// playback pause longer than this is the end of an utterance rather than an underrun.
pub const UTTERANCE_GAP: Duration = Duration::from_millis(300);

/// One thing that happened during a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEvent {
    /// Time since the call started (the voice webhook was sent).
    pub at: Duration,
    /// What happened.
    pub kind: CallEventKind,
}

impl CallEvent {
    pub(crate) fn new(at: Duration, kind: CallEventKind) -> Self {
        Self { at, kind }
    }
}

/// Which request a webhook event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookPurpose {
    /// The voice URL (incoming call).
    Voice,
    /// The voice fallback URL, after the voice URL failed.
    VoiceFallback,
    /// The `<Connect action>` URL, after the stream ended.
    ConnectAction,
    /// The call's status callback.
    StatusCallback,
    /// The `<Stream statusCallback>` URL.
    StreamStatus,
    /// A recording's `RecordingStatusCallback` (emulator attached to the REST emulator).
    RecordingStatus,
    /// The `<Dial action>` URL, after the dial ended.
    DialAction,
    /// The `<Number url>` URL, when the dialled party answered.
    DialNumberUrl,
    /// The `Url` a REST update redirected the live call to.
    Redirect,
}

/// Who ended a call that reached its media stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// The caller hung up (a `HangUp` step or [`crate::twilio::caller::InboundCall::hang_up`]).
    Caller,
    /// The server closed the media socket (or it broke).
    Server,
    /// The emulator's maximum call duration passed; the caller hung up.
    MaxDuration,
}

/// The kinds of [`CallEvent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEventKind {
    /// A webhook request finished: `status` is the HTTP status, `None` when no response came.
    Webhook {
        /// Which webhook.
        purpose: WebhookPurpose,
        /// The URL requested.
        url: String,
        /// The HTTP status of the answer.
        status: Option<u16>,
    },
    /// A `<Say>` of the call's TwiML was "spoken" (recorded only; it takes no time here).
    TwimlSay {
        /// The text.
        text: String,
    },
    /// The call entered a conference (`<Dial><Conference>`); `on_hold` when it has not started
    /// yet, so the participant waits (hears the `waitUrl`).
    ConferenceEntered {
        /// The room's name.
        name: String,
        /// Waiting for a participant who starts the conference.
        on_hold: bool,
    },
    /// The conference has started and someone else is in it: the call talks to them.
    ConferenceTalking {
        /// The room's name.
        name: String,
    },
    /// The call left the conference.
    ConferenceLeft {
        /// The room's name.
        name: String,
        /// `conference-ended` (a participant with `endConferenceOnExit` left), `talked` (this
        /// scripted participant hung up after talking), `redirected` (a REST update moved the
        /// call), `ended` (a REST update ended the call) or `timeout`.
        why: String,
    },
    /// A `<Dial>` ended: `status` is the `DialCallStatus` Twilio reports.
    Dialed {
        /// The number dialled.
        number: String,
        /// `completed`, `busy`, `no-answer` or `failed`.
        status: String,
    },
    /// A `<Play>` was fetched and played on this leg (e.g. a warm transfer's whisper, heard by
    /// the transfer's destination): `status` is the HTTP status, `bytes` the audio's length.
    PlayedToCallee {
        /// The audio URL.
        url: String,
        /// The HTTP status, `None` when no response came.
        status: Option<u16>,
        /// The response body's length.
        bytes: usize,
    },
    /// A REST update replaced the call's TwiML while its stream ran; the stream ended and the new
    /// document runs.
    Redirected,
    /// A verb the emulator does not run was skipped.
    TwimlVerbSkipped {
        /// The element name.
        name: String,
    },
    /// The media WebSocket is open; `connected` and `start` follow.
    StreamConnected {
        /// The stream URL.
        url: String,
    },
    /// The caller began an utterance.
    CallerSpeechStarted {
        /// The step's text.
        label: String,
        /// True for a `BargeIn` step.
        barge_in: bool,
    },
    /// The caller's utterance ended: the moment its last frame was sent.
    CallerSpeechEnded {
        /// The step's text.
        label: String,
    },
    /// A `dtmf` message was sent.
    DtmfSent {
        /// The key.
        digit: char,
    },
    /// A waiting step gave up (its index in the script).
    StepTimedOut {
        /// Index of the step in the script.
        step: usize,
    },
    /// The server sent a `mark`.
    MarkReceived {
        /// The mark's name.
        name: String,
    },
    /// The caller echoed a `mark`: its audio finished playing, or a `clear` dropped it.
    MarkEchoed {
        /// The mark's name.
        name: String,
        /// True when a `clear` released it.
        cleared: bool,
    },
    /// The server sent a `clear`; `dropped_bytes` of queued audio were discarded.
    ClearReceived {
        /// μ-law bytes (= samples) discarded.
        dropped_bytes: usize,
    },
    /// The caller sent `stop` and closed the socket.
    CallerHungUp,
    /// The server closed the media socket (or the connection broke).
    ServerClosedStream {
        /// The close code, when the server sent a close frame with one.
        code: Option<u16>,
        /// The close reason, if any.
        reason: String,
    },
    /// The `<Connect action>` answered with TwiML (see [`CallRecording::after_stream_twiml`]).
    AfterStreamTwiml,
    /// Something went wrong; `code` is Twilio's error code where Twilio has one (11200 HTTP
    /// retrieval failure, 12100 document parse failure, 31901/31910/31920 stream connection
    /// failures, 31950 binary message, 31951 invalid message).
    Error {
        /// Twilio's error or warning code.
        code: Option<u32>,
        /// What happened.
        message: String,
    },
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// `<Reject reason>`: the call was never answered.
    Rejected {
        /// `busy` or `rejected`.
        reason: String,
    },
    /// `<Hangup/>`, or the TwiML ran out before any stream.
    Hungup,
    /// The media stream ran and ended.
    Completed {
        /// Who ended it.
        ended_by: EndedBy,
    },
    /// The call failed before or while opening its stream.
    Failed {
        /// Twilio's error code, when it has one.
        code: Option<u32>,
        /// What went wrong.
        message: String,
    },
}

/// One `media` message the server sent, and what became of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentFrame {
    /// When it arrived.
    pub received_at: Duration,
    /// μ-law bytes (= samples) in its payload.
    pub bytes: usize,
    /// When its first byte started playing, if it did. Playback times are points of the
    /// caller's 20 ms media clock, the grid the network plays out on.
    pub played_start: Option<Duration>,
    /// When its last byte finished playing, if it did (media clock).
    pub played_end: Option<Duration>,
    /// True when a `clear` discarded all or part of it.
    pub cleared: bool,
}

/// Contiguous agent audio as the caller heard it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentUtterance {
    /// When the first frame started playing.
    pub start: Duration,
    /// When the last frame finished playing.
    pub end: Duration,
    /// Audio actually played (excludes gaps and discarded audio).
    pub audio: Duration,
}

/// A pause inside an agent utterance: the playback queue ran dry and audio came again within
/// [`UTTERANCE_GAP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundGap {
    /// When playback found the queue empty (or short).
    pub at: Duration,
    /// How long until a full frame could be played again.
    pub duration: Duration,
}

/// How regularly the caller's own frames went out: deviation of each send from its 20 ms grid
/// point.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacingStats {
    /// Frames measured.
    pub frames: usize,
    /// Median deviation.
    pub p50: Duration,
    /// 99th percentile deviation.
    pub p99: Duration,
    /// Largest deviation.
    pub max: Duration,
}

impl PacingStats {
    /// Statistics of `deviations` (any order).
    pub fn from_deviations(deviations: &[Duration]) -> Self {
        if deviations.is_empty() {
            return Self::default();
        }
        let mut sorted = deviations.to_vec();
        sorted.sort_unstable();
        let percentile = |fraction: f64| {
            // Nearest-rank percentile: the smallest value with at least `fraction` of the
            // samples at or below it.
            let rank = (fraction * sorted.len() as f64).ceil();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let rank = rank as usize;
            sorted[rank.clamp(1, sorted.len()) - 1]
        };
        Self {
            frames: sorted.len(),
            p50: percentile(0.50),
            p99: percentile(0.99),
            max: sorted[sorted.len() - 1],
        }
    }
}

/// Everything an emulated call recorded. Returned when the call ends.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallRecording {
    /// The call's `CA…` SID.
    pub call_sid: String,
    /// The media stream's `MZ…` SID, when a stream started.
    pub stream_sid: Option<String>,
    /// How the call ended.
    pub outcome: CallOutcome,
    /// The TwiML the voice webhook answered with, when it parsed.
    pub twiml: Option<Twiml>,
    /// The TwiML the `<Connect action>` URL answered with after the stream (recorded, not run).
    pub after_stream_twiml: Option<Twiml>,
    /// The timeline, in order.
    pub events: Vec<CallEvent>,
    /// Every agent `media` message, in arrival order.
    pub agent_frames: Vec<AgentFrame>,
    /// Media frames the caller sent.
    pub caller_frames_sent: u64,
    /// From the webhook to the end of the call.
    pub duration: Duration,
    pub(crate) outbound_deviations: Vec<Duration>,
    pub(crate) inbound_gaps: Vec<InboundGap>,
    pub(crate) agent_audio: Vec<u8>,
    /// The call's recording tape while the call's end is processed (taken out at once).
    pub(crate) tape: Option<Tape>,
}

impl CallRecording {
    pub(crate) fn new(call_sid: String) -> Self {
        Self {
            call_sid,
            stream_sid: None,
            outcome: CallOutcome::Hungup,
            twiml: None,
            after_stream_twiml: None,
            events: Vec::new(),
            agent_frames: Vec::new(),
            caller_frames_sent: 0,
            duration: Duration::ZERO,
            outbound_deviations: Vec::new(),
            inbound_gaps: Vec::new(),
            agent_audio: Vec::new(),
            tape: None,
        }
    }

    pub(crate) fn push(&mut self, at: Duration, kind: CallEventKind) {
        self.events.push(CallEvent::new(at, kind));
    }

    /// Who ended the media stream, when the call got that far.
    pub fn ended_by(&self) -> Option<EndedBy> {
        match self.outcome {
            CallOutcome::Completed { ended_by } => Some(ended_by),
            _ => None,
        }
    }

    /// The recorded errors and warnings, as (Twilio code, message).
    pub fn errors(&self) -> Vec<(Option<u32>, &str)> {
        self.events
            .iter()
            .filter_map(|event| match &event.kind {
                CallEventKind::Error { code, message } => Some((*code, message.as_str())),
                _ => None,
            })
            .collect()
    }

    /// The names of the marks echoed, in order.
    pub fn marks_echoed(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|event| match &event.kind {
                CallEventKind::MarkEchoed { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    /// When the first event matching `predicate` happened.
    pub fn first_event(&self, predicate: impl Fn(&CallEventKind) -> bool) -> Option<Duration> {
        self.events.iter().find(|event| predicate(&event.kind)).map(|event| event.at)
    }

    /// The agent's audio as the caller heard it: played frames merged into utterances, split
    /// where playback paused for more than [`UTTERANCE_GAP`].
    pub fn agent_utterances(&self) -> Vec<AgentUtterance> {
        let mut utterances: Vec<AgentUtterance> = Vec::new();
        for frame in &self.agent_frames {
            let (Some(start), Some(end)) = (frame.played_start, frame.played_end) else {
                continue;
            };
            let played = end.saturating_sub(start).min(bytes_duration(frame.bytes));
            match utterances.last_mut() {
                Some(current) if start.saturating_sub(current.end) <= UTTERANCE_GAP => {
                    current.end = current.end.max(end);
                    current.audio += played;
                }
                _ => utterances.push(AgentUtterance { start, end, audio: played }),
            }
        }
        utterances
    }

    /// From the end of the caller's utterance labelled `say_label` (its first occurrence) to
    /// the arrival of the first agent audio after it.
    pub fn response_latency_after(&self, say_label: &str) -> Option<Duration> {
        let speech_end = self.first_event(
            |kind| matches!(kind, CallEventKind::CallerSpeechEnded { label } if label == say_label),
        )?;
        self.agent_frames
            .iter()
            .find(|frame| frame.received_at >= speech_end)
            .map(|frame| frame.received_at - speech_end)
    }

    /// From the start of the caller's utterance labelled `barge_in_label` (its first occurrence)
    /// to the first `clear` received after it.
    pub fn first_clear_after(&self, barge_in_label: &str) -> Option<Duration> {
        let speech_start = self.first_event(|kind| {
            matches!(kind, CallEventKind::CallerSpeechStarted { label, .. } if label == barge_in_label)
        })?;
        self.events
            .iter()
            .find(|event| {
                event.at >= speech_start
                    && matches!(event.kind, CallEventKind::ClearReceived { .. })
            })
            .map(|event| event.at - speech_start)
    }

    /// How far each outbound frame's send time was from its 20 ms grid point.
    pub fn outbound_pacing(&self) -> PacingStats {
        PacingStats::from_deviations(&self.outbound_deviations)
    }

    /// Every outbound frame's deviation from its grid point, in send order.
    pub fn outbound_deviations(&self) -> &[Duration] {
        &self.outbound_deviations
    }

    /// Underruns: pauses inside agent utterances where the playback queue ran dry.
    pub fn inbound_gaps(&self) -> &[InboundGap] {
        &self.inbound_gaps
    }

    /// Every agent audio byte received, μ-law, in arrival order (empty when the emulator was
    /// configured not to keep audio).
    pub fn agent_audio_mulaw(&self) -> &[u8] {
        &self.agent_audio
    }

    /// [`CallRecording::agent_audio_mulaw`] decoded to 16-bit linear PCM samples at 8 kHz.
    pub fn agent_audio_pcm(&self) -> Vec<i16> {
        mulaw::decode_all(&self.agent_audio)
    }
}

/// The playing time of `bytes` μ-law samples.
pub(crate) fn bytes_duration(bytes: usize) -> Duration {
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    Duration::from_micros(bytes.saturating_mul(1_000_000) / u64::from(TELEPHONY_SAMPLE_RATE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn played(received: u64, start: u64, end: u64) -> AgentFrame {
        AgentFrame {
            received_at: ms(received),
            bytes: 160,
            played_start: Some(ms(start)),
            played_end: Some(ms(end)),
            cleared: false,
        }
    }

    #[test]
    fn utterances_merge_close_frames_and_split_on_gaps_longer_than_300_ms() {
        let mut recording = CallRecording::new("CA1".to_owned());
        recording.agent_frames = vec![
            played(0, 0, 20),
            played(0, 20, 40),
            played(100, 240, 260),
            played(900, 900, 920),
            AgentFrame { played_start: None, played_end: None, ..played(950, 0, 0) },
        ];

        assert_eq!(
            recording.agent_utterances(),
            vec![
                AgentUtterance { start: ms(0), end: ms(260), audio: ms(60) },
                AgentUtterance { start: ms(900), end: ms(920), audio: ms(20) },
            ]
        );
    }

    #[test]
    fn response_latency_counts_from_speech_end_to_the_next_agent_frame() {
        let mut recording = CallRecording::new("CA1".to_owned());
        recording.agent_frames = vec![played(100, 100, 120), played(1700, 1700, 1720)];
        recording.push(
            ms(500),
            CallEventKind::CallerSpeechStarted { label: "hi".to_owned(), barge_in: false },
        );
        recording.push(ms(1000), CallEventKind::CallerSpeechEnded { label: "hi".to_owned() });
        recording.push(ms(2000), CallEventKind::ClearReceived { dropped_bytes: 0 });

        assert_eq!(recording.response_latency_after("hi"), Some(ms(700)));
        assert_eq!(recording.response_latency_after("other"), None);
        assert_eq!(recording.first_clear_after("hi"), Some(ms(1500)));
    }

    #[test]
    fn pacing_percentiles_use_the_nearest_rank() {
        let deviations: Vec<Duration> = (1..=100).map(ms).collect();

        let stats = PacingStats::from_deviations(&deviations);

        assert_eq!(stats, PacingStats { frames: 100, p50: ms(50), p99: ms(99), max: ms(100) });
        assert_eq!(PacingStats::from_deviations(&[]), PacingStats::default());
    }

    #[test]
    fn one_frame_of_mulaw_plays_for_20_ms() {
        assert_eq!(bytes_duration(160), ms(20));
        assert_eq!(bytes_duration(8000), ms(1000));
    }
}
