//! The caller's side of the conversation: a script of steps run in real time, one decision per
//! 20 ms frame, and the deterministic speech-like signal the caller "says".
//!
//! The runner is pure: it is told the time and what the agent's audio is doing, and answers
//! what the next outbound frame carries. It never reads a clock, a socket or a channel, so its
//! tests need no runtime. Text given to `Say` is only a label for the timeline: the
//! speech-to-text emulator in a test is scripted separately with the same texts.
//!
//! A script can also put a noise bed under everything the caller sends
//! ([`CallerScript::with_noise`]), speak at a chosen level ([`CallerScript::say_at`]) and play
//! arbitrary 8 kHz audio such as a corpus clip ([`CallerScript::play`]); without them the
//! frames are exactly what they always were.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nixflex_pipeline::audio::{MULAW_FRAME_BYTES, mulaw};

use crate::corpus::{self, NoiseKind};
use crate::twilio::caller::recording::{CallEvent, CallEventKind};

/// The length of one media frame: 160 μ-law samples at 8 kHz.
pub const FRAME_DURATION: Duration = Duration::from_millis(20);

/// One step of a caller script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerStep {
    /// Speak for `duration` (rounded up to whole 20 ms frames, at least one): a non-silent,
    /// speech-like signal. `text` labels the utterance in the timeline.
    Say {
        /// The label of the utterance (what a scripted STT emulator should "hear").
        text: String,
        /// How long to speak.
        duration: Duration,
    },
    /// Send silence for the duration (rounded up to whole frames).
    Silence(Duration),
    /// Play a pure tone (an answering machine's beep) for `duration` (rounded up to whole
    /// frames), recorded in the timeline like an utterance labelled `tone`.
    Tone {
        /// The tone's frequency.
        frequency_hz: u32,
        /// How long it plays.
        duration: Duration,
    },
    /// Send silence until agent audio arrives (or is already playing); give up after `timeout`
    /// (recorded as [`CallEventKind::StepTimedOut`]) and go on with the next step.
    WaitForAgentSpeech {
        /// The longest wait.
        timeout: Duration,
    },
    /// Send silence until the agent has neither sent nor played audio for `quiet_for`, counted
    /// from the later of the step's start and the agent's last activity; give up after
    /// `timeout`. Put [`CallerStep::WaitForAgentSpeech`] before it to wait for a whole reply.
    WaitForAgentSilence {
        /// How long the agent must have been quiet.
        quiet_for: Duration,
        /// The longest wait.
        timeout: Duration,
    },
    /// Wait until the agent's current utterance has been audible (played) for
    /// `after_agent_audio`, then speak over it like [`CallerStep::Say`]. Gives up after the
    /// emulator's step timeout without speaking.
    BargeIn {
        /// How long the agent must have been audible first.
        after_agent_audio: Duration,
        /// The label of the interrupting utterance.
        text: String,
        /// How long to speak.
        duration: Duration,
    },
    /// Play arbitrary 8 kHz PCM (a corpus clip, speech scaled to a level, …), rounded up to
    /// whole frames with silence; recorded in the timeline like [`CallerStep::Say`] with
    /// `label`.
    Play {
        /// The label of the utterance (what a scripted STT emulator should "hear").
        label: String,
        /// The audio, 8 kHz.
        samples: Arc<[i16]>,
    },
    /// Like [`CallerStep::BargeIn`], but what is spoken over the agent is `samples` (as
    /// [`CallerStep::Play`] plays them).
    BargeInPlay {
        /// How long the agent must have been audible first.
        after_agent_audio: Duration,
        /// The label of the interrupting utterance.
        label: String,
        /// The audio, 8 kHz.
        samples: Arc<[i16]>,
    },
    /// Press a key: one `dtmf` message (`0`–`9`, `*`, `#`, `A`–`D`), sent alongside a silent
    /// frame.
    Dtmf(char),
    /// Hang up: send `stop` and close the socket.
    HangUp,
}

/// A noise bed on the caller's line: [`corpus::Noise`] of `kind` at `dbfs`, from `seed`.
#[derive(Debug, Clone, Copy)]
pub struct NoiseBed {
    /// The kind of noise.
    pub kind: NoiseKind,
    /// Its RMS level in dBFS.
    pub dbfs: f64,
    /// The noise's seed.
    pub seed: u64,
    /// A slow variation of the level: (depth in dB, period in seconds), as
    /// [`corpus::Noise::with_wobble`] applies it; `None`: steady.
    pub wobble: Option<(f64, f64)>,
}

impl NoiseBed {
    /// A fresh generator of this noise, from its first sample.
    pub fn noise(&self) -> corpus::Noise {
        let noise = corpus::Noise::new(self.kind, self.dbfs, self.seed);
        match self.wobble {
            Some((depth_db, period_s)) => noise.with_wobble(depth_db, period_s),
            None => noise,
        }
    }
}

/// Bitwise on the level, so that scripts stay comparable (`Eq`).
impl PartialEq for NoiseBed {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.dbfs.to_bits() == other.dbfs.to_bits()
            && self.seed == other.seed
            && self.wobble.map(|(depth, period)| (depth.to_bits(), period.to_bits()))
                == other.wobble.map(|(depth, period)| (depth.to_bits(), period.to_bits()))
    }
}

impl Eq for NoiseBed {}

/// The steps a caller goes through once the media stream has started. After the last step the
/// caller stays on the line, silent, until the server ends the call (or the emulator's
/// maximum call duration passes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerScript {
    steps: Vec<CallerStep>,
    /// Mixed into every frame the caller sends on this stream; `None`: the previous stream's
    /// noise bed, if any (none on the first stream).
    noise: Option<NoiseBed>,
    /// What the caller does on the call's next media stream (after a redirect brought the call
    /// back to a stream, e.g. from a failed transfer); `None`: listen silently.
    next_stream: Option<Box<CallerScript>>,
}

impl CallerScript {
    /// An empty script: a caller who listens silently.
    pub fn new() -> Self {
        Self::default()
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[CallerStep] {
        &self.steps
    }

    /// Plays `script` on the call's next media stream (this script's own next streams are
    /// replaced).
    #[must_use]
    pub fn on_next_stream(mut self, script: CallerScript) -> Self {
        self.next_stream = Some(Box::new(script));
        self
    }

    /// Mixes `kind` noise at `dbfs` (RMS, dBFS), from `seed`, into every frame the caller sends,
    /// from the stream's start until the caller hangs up: silence, speech, tones, DTMF frames
    /// and the waits for the agent alike, sample-accurately (speech + noise, saturating, then
    /// μ-law). The noise starts afresh from `seed` on each stream. It applies to the call's
    /// next streams too, unless their scripts set their own.
    #[must_use]
    pub fn with_noise(mut self, kind: NoiseKind, dbfs: f64, seed: u64) -> Self {
        self.noise = Some(NoiseBed { kind, dbfs, seed, wobble: None });
        self
    }

    /// Makes the noise bed set by [`CallerScript::with_noise`] vary slowly, ±`depth_db` over a
    /// sine of `period_s` seconds (see [`corpus::Noise::with_wobble`]); without a noise bed it
    /// does nothing.
    #[must_use]
    pub fn with_noise_wobble(mut self, depth_db: f64, period_s: f64) -> Self {
        if let Some(bed) = self.noise.as_mut() {
            bed.wobble = Some((depth_db, period_s));
        }
        self
    }

    /// The noise bed this script sets, if any (see [`CallerScript::with_noise`]).
    pub fn noise(&self) -> Option<NoiseBed> {
        self.noise
    }

    /// The noise bed of this script's stream, when the call's previous stream had `previous`:
    /// this script's own, or else the previous one carries on.
    pub(crate) fn stream_noise(&self, previous: Option<NoiseBed>) -> Option<NoiseBed> {
        self.noise.or(previous)
    }

    /// The script of the call's next media stream, if one was given.
    pub fn next_stream(&self) -> Option<&CallerScript> {
        self.next_stream.as_deref()
    }

    /// Appends a step.
    #[must_use]
    pub fn step(mut self, step: CallerStep) -> Self {
        self.steps.push(step);
        self
    }

    /// Appends [`CallerStep::Say`].
    #[must_use]
    pub fn say(self, text: &str, duration: Duration) -> Self {
        self.step(CallerStep::Say { text: text.to_owned(), duration })
    }

    /// Appends a [`CallerStep::Play`] of the caller's speech-like signal (the one
    /// [`CallerStep::Say`] sends) for `duration` (whole frames, at least one), scaled so its RMS
    /// is `dbfs`: with [`CallerScript::with_noise`], a test sets the signal-to-noise ratio.
    #[must_use]
    pub fn say_at(self, text: &str, duration: Duration, dbfs: f64) -> Self {
        self.play(text, speech_at(duration, dbfs))
    }

    /// Appends [`CallerStep::Play`]: `samples` (8 kHz) recorded as an utterance labelled
    /// `label`.
    #[must_use]
    pub fn play(self, label: &str, samples: impl Into<Arc<[i16]>>) -> Self {
        self.step(CallerStep::Play { label: label.to_owned(), samples: samples.into() })
    }

    /// Appends [`CallerStep::Silence`].
    #[must_use]
    pub fn silence(self, duration: Duration) -> Self {
        self.step(CallerStep::Silence(duration))
    }

    /// Appends [`CallerStep::Tone`].
    #[must_use]
    pub fn tone(self, frequency_hz: u32, duration: Duration) -> Self {
        self.step(CallerStep::Tone { frequency_hz, duration })
    }

    /// Appends [`CallerStep::WaitForAgentSpeech`].
    #[must_use]
    pub fn wait_for_agent_speech(self, timeout: Duration) -> Self {
        self.step(CallerStep::WaitForAgentSpeech { timeout })
    }

    /// Appends [`CallerStep::WaitForAgentSilence`].
    #[must_use]
    pub fn wait_for_agent_silence(self, quiet_for: Duration, timeout: Duration) -> Self {
        self.step(CallerStep::WaitForAgentSilence { quiet_for, timeout })
    }

    /// Appends [`CallerStep::BargeIn`].
    #[must_use]
    pub fn barge_in(self, after_agent_audio: Duration, text: &str, duration: Duration) -> Self {
        self.step(CallerStep::BargeIn { after_agent_audio, text: text.to_owned(), duration })
    }

    /// Appends a [`CallerStep::BargeInPlay`] of the speech-like signal for `duration`, scaled
    /// so its RMS is `dbfs` (see [`CallerScript::say_at`]).
    #[must_use]
    pub fn barge_in_at(
        self,
        after_agent_audio: Duration,
        text: &str,
        duration: Duration,
        dbfs: f64,
    ) -> Self {
        self.barge_in_play(after_agent_audio, text, speech_at(duration, dbfs))
    }

    /// Appends [`CallerStep::BargeInPlay`]: `samples` spoken over the agent once it has been
    /// audible for `after_agent_audio`.
    #[must_use]
    pub fn barge_in_play(
        self,
        after_agent_audio: Duration,
        label: &str,
        samples: impl Into<Arc<[i16]>>,
    ) -> Self {
        self.step(CallerStep::BargeInPlay {
            after_agent_audio,
            label: label.to_owned(),
            samples: samples.into(),
        })
    }

    /// Appends [`CallerStep::Dtmf`].
    #[must_use]
    pub fn dtmf(self, digit: char) -> Self {
        self.step(CallerStep::Dtmf(digit))
    }

    /// Appends [`CallerStep::HangUp`].
    #[must_use]
    pub fn hang_up(self) -> Self {
        self.step(CallerStep::HangUp)
    }
}

impl From<Vec<CallerStep>> for CallerScript {
    fn from(steps: Vec<CallerStep>) -> Self {
        Self { steps, noise: None, next_stream: None }
    }
}

/// What the agent's audio is doing at a tick, as the script needs to know it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AgentView {
    /// When agent media last arrived.
    pub(crate) last_arrival: Option<Duration>,
    /// When the last played agent frame finished (or finishes, if one is playing).
    pub(crate) last_audible_end: Option<Duration>,
    /// How long the current agent utterance has been audible, when a frame is playing now.
    pub(crate) audible_for: Option<Duration>,
    /// True when nothing is queued or playing.
    pub(crate) idle: bool,
}

/// What to send at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TickPlan {
    /// One media frame: speech from this offset of the speech signal, or silence; and maybe a
    /// DTMF digit sent just before it.
    Frame {
        /// Offset into the speech signal, or `None` for silence.
        speech_offset: Option<usize>,
        /// A digit to send as a `dtmf` message.
        dtmf: Option<char>,
        /// A pure tone of this frequency instead of the speech signal (`speech_offset` then
        /// counts samples of the tone).
        tone_hz: Option<u32>,
        /// The samples of the [`CallerStep::Play`] or [`CallerStep::BargeInPlay`] at this step
        /// index instead of the speech signal (`speech_offset` then counts their samples; see
        /// [`ScriptRunner::samples_of`]).
        play_step: Option<usize>,
    },
    /// Hang up now (no frame).
    HangUp,
}

const SILENT_FRAME: TickPlan =
    TickPlan::Frame { speech_offset: None, dtmf: None, tone_hz: None, play_step: None };

#[derive(Debug, Clone, Copy)]
enum State {
    /// About to start the step at this index.
    Start(usize),
    Speaking {
        step: usize,
        frames_left: u32,
        offset: usize,
        tone_hz: Option<u32>,
        /// Playing the step's own samples.
        play: bool,
    },
    Silent {
        step: usize,
        frames_left: u32,
    },
    WaitingForSpeech {
        step: usize,
        since: Duration,
        deadline: Duration,
    },
    WaitingForSilence {
        step: usize,
        since: Duration,
        quiet_for: Duration,
        deadline: Duration,
    },
    WaitingToBargeIn {
        step: usize,
        deadline: Duration,
    },
}

/// Runs a [`CallerScript`] one frame at a time.
#[derive(Debug)]
pub(crate) struct ScriptRunner {
    steps: Vec<CallerStep>,
    state: State,
    /// How long a `BargeIn` waits for agent audio before it is skipped.
    step_timeout: Duration,
}

impl ScriptRunner {
    pub(crate) fn new(script: &CallerScript, step_timeout: Duration) -> Self {
        Self { steps: script.steps.clone(), state: State::Start(0), step_timeout }
    }

    /// Decides the frame sent at `now` and records speech, DTMF and timeout events.
    pub(crate) fn plan_tick(
        &mut self,
        now: Duration,
        agent: &AgentView,
        events: &mut Vec<CallEvent>,
    ) -> TickPlan {
        loop {
            match self.state {
                State::Start(index) => {
                    let Some(step) = self.steps.get(index) else {
                        return SILENT_FRAME;
                    };
                    match step {
                        CallerStep::Say { text, duration } => {
                            self.state = speaking(index, text, *duration, false, now, events);
                        }
                        CallerStep::Tone { frequency_hz, duration } => {
                            self.state = speaking(index, "tone", *duration, false, now, events);
                            if let State::Speaking { tone_hz, .. } = &mut self.state {
                                *tone_hz = Some(*frequency_hz);
                            }
                        }
                        CallerStep::Play { label, samples } => {
                            self.state = playing(index, label, samples, false, now, events);
                        }
                        CallerStep::Silence(duration) => {
                            self.state =
                                State::Silent { step: index, frames_left: frames_in(*duration) };
                        }
                        CallerStep::WaitForAgentSpeech { timeout } => {
                            self.state = State::WaitingForSpeech {
                                step: index,
                                since: now,
                                deadline: now + *timeout,
                            };
                        }
                        CallerStep::WaitForAgentSilence { quiet_for, timeout } => {
                            self.state = State::WaitingForSilence {
                                step: index,
                                since: now,
                                quiet_for: *quiet_for,
                                deadline: now + *timeout,
                            };
                        }
                        CallerStep::BargeIn { .. } | CallerStep::BargeInPlay { .. } => {
                            self.state = State::WaitingToBargeIn {
                                step: index,
                                deadline: now + self.step_timeout,
                            };
                        }
                        CallerStep::Dtmf(digit) => {
                            events.push(CallEvent::new(
                                now,
                                CallEventKind::DtmfSent { digit: *digit },
                            ));
                            self.state = State::Start(index + 1);
                            return TickPlan::Frame {
                                speech_offset: None,
                                dtmf: Some(*digit),
                                tone_hz: None,
                                play_step: None,
                            };
                        }
                        CallerStep::HangUp => {
                            // Stay on this step: a hang-up is final.
                            return TickPlan::HangUp;
                        }
                    }
                }
                State::Speaking { step, frames_left, offset, tone_hz, play } => {
                    let frames_left = frames_left.saturating_sub(1);
                    if frames_left == 0 {
                        let label = self.label_of(step);
                        events
                            .push(CallEvent::new(now, CallEventKind::CallerSpeechEnded { label }));
                        self.state = State::Start(step + 1);
                    } else {
                        let next_offset = match tone_hz {
                            Some(_) => offset + MULAW_FRAME_BYTES,
                            None if play => offset + MULAW_FRAME_BYTES,
                            None => (offset + MULAW_FRAME_BYTES) % SPEECH_PERIOD,
                        };
                        self.state = State::Speaking {
                            step,
                            frames_left,
                            offset: next_offset,
                            tone_hz,
                            play,
                        };
                    }
                    return TickPlan::Frame {
                        speech_offset: Some(offset),
                        dtmf: None,
                        tone_hz,
                        play_step: play.then_some(step),
                    };
                }
                State::Silent { step, frames_left } => {
                    if frames_left == 0 {
                        self.state = State::Start(step + 1);
                        continue;
                    }
                    self.state = State::Silent { step, frames_left: frames_left - 1 };
                    return SILENT_FRAME;
                }
                State::WaitingForSpeech { step, since, deadline } => {
                    let arrived = agent.last_arrival.is_some_and(|arrival| arrival >= since);
                    if arrived || agent.audible_for.is_some() {
                        self.state = State::Start(step + 1);
                        continue;
                    }
                    if now >= deadline {
                        self.time_out(step, now, events);
                        continue;
                    }
                    return SILENT_FRAME;
                }
                State::WaitingForSilence { step, since, quiet_for, deadline } => {
                    let last_activity = [Some(since), agent.last_arrival, agent.last_audible_end]
                        .into_iter()
                        .flatten()
                        .max()
                        .unwrap_or(since);
                    if agent.idle && now.saturating_sub(last_activity) >= quiet_for {
                        self.state = State::Start(step + 1);
                        continue;
                    }
                    if now >= deadline {
                        self.time_out(step, now, events);
                        continue;
                    }
                    return SILENT_FRAME;
                }
                State::WaitingToBargeIn { step, deadline } => {
                    let after_agent_audio = match self.steps.get(step) {
                        Some(
                            CallerStep::BargeIn { after_agent_audio, .. }
                            | CallerStep::BargeInPlay { after_agent_audio, .. },
                        ) => *after_agent_audio,
                        _ => {
                            self.state = State::Start(step + 1);
                            continue;
                        }
                    };
                    if agent.audible_for.is_some_and(|audible| audible >= after_agent_audio) {
                        self.state = match self.steps.get(step) {
                            Some(CallerStep::BargeInPlay { label, samples, .. }) => {
                                playing(step, label, samples, true, now, events)
                            }
                            Some(CallerStep::BargeIn { text, duration, .. }) => {
                                speaking(step, text, *duration, true, now, events)
                            }
                            _ => State::Start(step + 1),
                        };
                        continue;
                    }
                    if now >= deadline {
                        self.time_out(step, now, events);
                        continue;
                    }
                    return SILENT_FRAME;
                }
            }
        }
    }

    fn time_out(&mut self, step: usize, now: Duration, events: &mut Vec<CallEvent>) {
        events.push(CallEvent::new(now, CallEventKind::StepTimedOut { step }));
        self.state = State::Start(step + 1);
    }

    /// The samples of the [`CallerStep::Play`] or [`CallerStep::BargeInPlay`] at `step` (empty
    /// for any other step).
    pub(crate) fn samples_of(&self, step: usize) -> &[i16] {
        match self.steps.get(step) {
            Some(CallerStep::Play { samples, .. } | CallerStep::BargeInPlay { samples, .. }) => {
                samples
            }
            _ => &[],
        }
    }

    fn label_of(&self, step: usize) -> String {
        match self.steps.get(step) {
            Some(CallerStep::Say { text, .. } | CallerStep::BargeIn { text, .. }) => text.clone(),
            Some(CallerStep::Play { label, .. } | CallerStep::BargeInPlay { label, .. }) => {
                label.clone()
            }
            Some(CallerStep::Tone { .. }) => "tone".to_owned(),
            _ => String::new(),
        }
    }
}

/// Records the start of an utterance and returns the state that speaks it.
fn speaking(
    step: usize,
    text: &str,
    duration: Duration,
    barge_in: bool,
    now: Duration,
    events: &mut Vec<CallEvent>,
) -> State {
    let label = text.to_owned();
    events.push(CallEvent::new(now, CallEventKind::CallerSpeechStarted { label, barge_in }));
    State::Speaking {
        step,
        frames_left: frames_in(duration).max(1),
        offset: 0,
        tone_hz: None,
        play: false,
    }
}

/// Records the start of an utterance and returns the state that plays `samples`.
fn playing(
    step: usize,
    label: &str,
    samples: &[i16],
    barge_in: bool,
    now: Duration,
    events: &mut Vec<CallEvent>,
) -> State {
    let label = label.to_owned();
    events.push(CallEvent::new(now, CallEventKind::CallerSpeechStarted { label, barge_in }));
    let frames = u32::try_from(samples.len().div_ceil(MULAW_FRAME_BYTES)).unwrap_or(u32::MAX);
    State::Speaking { step, frames_left: frames.max(1), offset: 0, tone_hz: None, play: true }
}

/// The speech-like signal (see [`speech_signal`]) for `duration` (whole frames, at least one),
/// scaled so its RMS over one period is `dbfs`.
pub(crate) fn speech_at(duration: Duration, dbfs: f64) -> Vec<i16> {
    let period = mulaw::decode_all(speech_signal());
    let n_samples = frames_in(duration).max(1) as usize * MULAW_FRAME_BYTES;
    let looped: Vec<i16> = period.iter().copied().cycle().take(n_samples).collect();
    corpus::scaled(&looped, dbfs - corpus::dbfs(&period))
}

/// Whole frames needed to cover `duration` (rounded up).
fn frames_in(duration: Duration) -> u32 {
    let frame_nanos = FRAME_DURATION.as_nanos();
    let frames = duration.as_nanos().div_ceil(frame_nanos);
    u32::try_from(frames).unwrap_or(u32::MAX)
}

/// Samples in one period of the speech signal: 250 ms, one "syllable" at 4 Hz. Every component
/// frequency is a multiple of 4 Hz, so the signal repeats exactly and can be looped.
pub(crate) const SPEECH_PERIOD: usize = 2000;

/// One period of the caller's speech-like signal, μ-law encoded: a 200 Hz voice with harmonics
/// at 400, 600 and 1000 Hz (vowel-like), amplitude-modulated at the syllable rate (4 Hz) between
/// 10 % and 100 %, peaking at about −11 dBFS. Computed once per process.
pub(crate) fn speech_signal() -> &'static [u8; SPEECH_PERIOD] {
    static SIGNAL: OnceLock<[u8; SPEECH_PERIOD]> = OnceLock::new();
    SIGNAL.get_or_init(|| {
        use std::f64::consts::TAU;
        const SAMPLE_RATE: f64 = 8000.0;
        const PEAK: f64 = 9000.0;
        // (frequency, relative amplitude); the amplitudes add up to 1.
        const PARTIALS: [(f64, f64); 4] =
            [(200.0, 0.45), (400.0, 0.3), (600.0, 0.15), (1000.0, 0.1)];
        let mut signal = [0_u8; SPEECH_PERIOD];
        for (index, code) in signal.iter_mut().enumerate() {
            let time = index as f64 / SAMPLE_RATE;
            let envelope = 0.55 - 0.45 * (TAU * 4.0 * time).cos();
            let voice: f64 = PARTIALS
                .iter()
                .map(|(frequency, amplitude)| amplitude * (TAU * frequency * time).sin())
                .sum();
            let sample = (PEAK * envelope * voice).round().clamp(-32768.0, 32767.0);
            // The value is rounded and clamped to the i16 range just above.
            #[allow(clippy::cast_possible_truncation)]
            let sample = sample as i16;
            *code = mulaw::encode(sample);
        }
        signal
    })
}

/// Writes 160 samples of a pure tone at `frequency_hz` (about −12 dBFS), starting at sample
/// `offset`, μ-law encoded, into `frame`.
pub(crate) fn tone_frame(frequency_hz: u32, offset: usize, frame: &mut [u8; MULAW_FRAME_BYTES]) {
    use std::f64::consts::TAU;
    for (index, code) in frame.iter_mut().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let time = (offset + index) as f64 / 8000.0;
        let sample = (8000.0 * (TAU * f64::from(frequency_hz) * time).sin()).round();
        // Within ±8000, so within the i16 range.
        #[allow(clippy::cast_possible_truncation)]
        let sample = sample as i16;
        *code = mulaw::encode(sample);
    }
}

/// Writes the 160-byte speech frame starting at `offset` of the looped signal into `frame`.
pub(crate) fn speech_frame(offset: usize, frame: &mut [u8; MULAW_FRAME_BYTES]) {
    let signal = speech_signal();
    let start = offset % SPEECH_PERIOD;
    let first = (SPEECH_PERIOD - start).min(MULAW_FRAME_BYTES);
    frame[..first].copy_from_slice(&signal[start..start + first]);
    frame[first..].copy_from_slice(&signal[..MULAW_FRAME_BYTES - first]);
}

#[cfg(test)]
mod tests {
    use nixflex_pipeline::audio::MULAW_SILENCE;
    use nixflex_pipeline::audio::tone::rms;

    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    /// Runs the script for `n_ticks` ticks with a fixed agent view.
    fn run(
        runner: &mut ScriptRunner,
        n_ticks: u64,
        agent: &AgentView,
    ) -> (Vec<TickPlan>, Vec<CallEvent>) {
        let mut events = Vec::new();
        let plans =
            (0..n_ticks).map(|tick| runner.plan_tick(ms(tick * 20), agent, &mut events)).collect();
        (plans, events)
    }

    #[test]
    fn say_sends_speech_for_whole_frames_then_silence_and_records_start_and_end() {
        let script = CallerScript::new().say("hello", ms(50));
        let mut runner = ScriptRunner::new(&script, ms(1000));

        let (plans, events) = run(&mut runner, 5, &AgentView::default());

        let speech: Vec<bool> = plans
            .iter()
            .map(|plan| matches!(plan, TickPlan::Frame { speech_offset: Some(_), .. }))
            .collect();
        assert_eq!(speech, vec![true, true, true, false, false]);
        assert_eq!(
            events.iter().map(|event| (event.at, event.kind.clone())).collect::<Vec<_>>(),
            vec![
                (
                    ms(0),
                    CallEventKind::CallerSpeechStarted {
                        label: "hello".to_owned(),
                        barge_in: false
                    }
                ),
                (ms(40), CallEventKind::CallerSpeechEnded { label: "hello".to_owned() }),
            ]
        );
    }

    #[test]
    fn waiting_for_agent_speech_times_out_and_moves_on() {
        let script = CallerScript::new().wait_for_agent_speech(ms(100)).dtmf('5').hang_up();
        let mut runner = ScriptRunner::new(&script, ms(1000));

        let (plans, events) = run(&mut runner, 8, &AgentView::default());

        assert_eq!(
            plans[5],
            TickPlan::Frame {
                speech_offset: None,
                dtmf: Some('5'),
                tone_hz: None,
                play_step: None
            }
        );
        assert_eq!(plans[6], TickPlan::HangUp);
        assert_eq!(events[0].kind, CallEventKind::StepTimedOut { step: 0 });
        assert_eq!(events[0].at, ms(100));
    }

    #[test]
    fn agent_audio_ends_the_wait_for_agent_speech() {
        let script = CallerScript::new().wait_for_agent_speech(ms(10_000)).hang_up();
        let mut runner = ScriptRunner::new(&script, ms(1000));
        let mut events = Vec::new();

        assert_eq!(runner.plan_tick(ms(0), &AgentView::default(), &mut events), SILENT_FRAME);
        let arrived = AgentView { last_arrival: Some(ms(15)), ..AgentView::default() };
        assert_eq!(runner.plan_tick(ms(20), &arrived, &mut events), TickPlan::HangUp);
    }

    #[test]
    fn waiting_for_silence_needs_an_idle_agent_for_the_quiet_period() {
        let script = CallerScript::new().wait_for_agent_silence(ms(100), ms(10_000)).hang_up();
        let mut runner = ScriptRunner::new(&script, ms(1000));
        let mut events = Vec::new();
        let playing = AgentView {
            last_arrival: Some(ms(0)),
            last_audible_end: Some(ms(60)),
            audible_for: Some(ms(40)),
            idle: false,
        };
        let quiet = AgentView { audible_for: None, idle: true, ..playing };

        assert_eq!(runner.plan_tick(ms(40), &playing, &mut events), SILENT_FRAME);
        assert_eq!(runner.plan_tick(ms(140), &quiet, &mut events), SILENT_FRAME);
        assert_eq!(runner.plan_tick(ms(160), &quiet, &mut events), TickPlan::HangUp);
    }

    #[test]
    fn barge_in_starts_speaking_once_the_agent_was_audible_long_enough() {
        let script = CallerScript::new().barge_in(ms(200), "stop", ms(40));
        let mut runner = ScriptRunner::new(&script, ms(10_000));
        let mut events = Vec::new();
        let audible = |millis| AgentView { audible_for: Some(ms(millis)), ..AgentView::default() };

        assert_eq!(runner.plan_tick(ms(0), &audible(180), &mut events), SILENT_FRAME);
        let plan = runner.plan_tick(ms(20), &audible(200), &mut events);

        assert_eq!(
            plan,
            TickPlan::Frame { speech_offset: Some(0), dtmf: None, tone_hz: None, play_step: None }
        );
        assert_eq!(
            events[0].kind,
            CallEventKind::CallerSpeechStarted { label: "stop".to_owned(), barge_in: true }
        );
    }

    #[test]
    fn a_noise_bed_carries_on_to_the_next_streams_unless_they_set_their_own() {
        let third = CallerScript::new().with_noise(NoiseKind::Brown, -35.0, 3);
        let second = CallerScript::new().on_next_stream(third);
        let first = CallerScript::new()
            .with_noise(NoiseKind::White, -30.0, 1)
            .with_noise_wobble(3.0, 5.0)
            .on_next_stream(second);

        let mut noise = None;
        let mut kinds = Vec::new();
        let mut script = Some(&first);
        while let Some(this_script) = script {
            noise = this_script.stream_noise(noise);
            kinds.push(noise.map(|bed| (bed.kind, bed.wobble.is_some())));
            script = this_script.next_stream();
        }

        assert_eq!(
            kinds,
            vec![
                Some((NoiseKind::White, true)),
                Some((NoiseKind::White, true)),
                Some((NoiseKind::Brown, false))
            ]
        );
        assert_eq!(CallerScript::new().stream_noise(None), None);
    }

    #[test]
    fn play_sends_the_samples_in_whole_frames_and_records_its_label_like_say() {
        let samples: Vec<i16> = (0..200).map(|index| index * 10).collect();
        let script = CallerScript::new().play("mm-hm", samples);
        let mut runner = ScriptRunner::new(&script, ms(1000));

        let (plans, events) = run(&mut runner, 3, &AgentView::default());

        let offsets: Vec<_> = plans
            .iter()
            .map(|plan| match plan {
                TickPlan::Frame { speech_offset, play_step, .. } => (*speech_offset, *play_step),
                TickPlan::HangUp => (None, None),
            })
            .collect();
        assert_eq!(offsets, vec![(Some(0), Some(0)), (Some(160), Some(0)), (None, None)]);
        assert_eq!(runner.samples_of(0)[199], 1990);
        assert_eq!(
            events.iter().map(|event| event.kind.clone()).collect::<Vec<_>>(),
            vec![
                CallEventKind::CallerSpeechStarted { label: "mm-hm".to_owned(), barge_in: false },
                CallEventKind::CallerSpeechEnded { label: "mm-hm".to_owned() },
            ]
        );
    }

    #[test]
    fn barge_in_at_speaks_scaled_speech_over_the_agent() {
        let script = CallerScript::new().barge_in_at(ms(200), "stop", ms(1000), -26.0);
        let mut runner = ScriptRunner::new(&script, ms(10_000));
        let mut events = Vec::new();
        let audible = AgentView { audible_for: Some(ms(200)), ..AgentView::default() };

        let plan = runner.plan_tick(ms(0), &audible, &mut events);

        assert_eq!(
            plan,
            TickPlan::Frame {
                speech_offset: Some(0),
                dtmf: None,
                tone_hz: None,
                play_step: Some(0)
            }
        );
        assert_eq!(
            events[0].kind,
            CallEventKind::CallerSpeechStarted { label: "stop".to_owned(), barge_in: true }
        );
        let samples = runner.samples_of(0);
        assert_eq!(samples.len(), 50 * MULAW_FRAME_BYTES);
        let level = corpus::dbfs(samples);
        assert!((level - -26.0).abs() < 0.2, "{level}");
    }

    #[test]
    fn the_speech_signal_is_loud_enough_for_a_voice_detector_and_loops_without_a_seam() {
        let samples = mulaw::decode_all(speech_signal());
        let level = rms(&samples);
        assert!((1500.0..8000.0).contains(&level), "rms {level}");
        assert!(speech_signal().iter().any(|&code| code != MULAW_SILENCE));

        let mut frame = [0_u8; MULAW_FRAME_BYTES];
        speech_frame(1920, &mut frame);
        assert_eq!(&frame[..80], &speech_signal()[1920..]);
        assert_eq!(&frame[80..], &speech_signal()[..80]);
    }
}
