//! Voice activity detection and turn-taking on the caller's 8 kHz μ-law audio
//! (docs/engine.md#turn-taking, docs/decisions.md#turn-taking).
//!
//! - [`Vad`] is a voicing detector: a frame is voiced when it is loud enough — above an adaptive
//!   noise floor by a margin — *and* periodic — the normalised autocorrelation of its
//!   pre-emphasised 4 kHz signal peaks at a pitch lag (50–400 Hz) above `min_periodicity`. Noise,
//!   however loud and however it varies, has no pitch; voiced speech does. Speech starts once
//!   frames are voiced for `start_duration` (60 ms by default, so a single loud click is ignored)
//!   and ends after `hangover` (200 ms) unvoiced. The floor follows the minimum level of the last
//!   ~1.5–2 s, so steady line noise is learnt while the pauses between words keep the floor down
//!   during speech. Why this detector: docs/decisions.md#voicing-detector.
//! - [`TurnDetector`] ends the caller's turn once silence has lasted `response_eagerness` after
//!   speech *and* a final transcript is available.
//! - [`BargeIn`] says when caller speech during agent playback has lasted long enough to
//!   interrupt: [`barge_in_threshold`] = `1200 − 11 × interruption_sensitivity` ms.
//!
//! Everything is pure and driven by the caller: audio frames and `Duration` offsets since the
//! call started come in, decisions come out. No clock is read, no task spawned, and nothing is
//! allocated per frame (μ-law is decoded through 256-entry tables; the pitch buffer is a fixed
//! ring, and the autocorrelation runs only on frames loud enough to be speech).

use std::time::Duration;

use nixflex_pipeline::audio::mulaw;

/// Telephony samples per millisecond (8 kHz).
const SAMPLES_PER_MS: u64 = 8;

/// Frames per block of the noise-floor minimum tracker (0.5 s of 20 ms frames).
const FLOOR_BLOCK_FRAMES: u32 = 25;

/// Completed blocks remembered by the minimum tracker (the window is 1.5–2 s).
const FLOOR_BLOCKS: usize = 3;

/// The squared linear value (energy) of every μ-law code.
const ENERGY: [u32; 256] = build_energy_table();

/// Audio at call start that only teaches the background level (100 ms).
const WARM_UP_SAMPLES: u64 = 800;

/// The background's first frames, averaged with equal weight.
const WARM_UP_FRAMES: u32 = 5;

/// The pitch analysis runs at 4 kHz (pairs of 8 kHz samples summed).
/// Samples kept for it: 40 ms, the window plus the longest lag.
const PITCH_HISTORY: usize = 160;
/// The analysed window: the last 20 ms (a longer one blurs the pitch of short words).
const PITCH_WINDOW: usize = 80;
/// The shortest pitch period looked for: 2.5 ms (400 Hz).
const MIN_LAG: usize = 10;
/// The longest pitch period looked for: 20 ms (50 Hz).
const MAX_LAG: usize = PITCH_HISTORY - PITCH_WINDOW;

#[allow(clippy::cast_lossless, reason = "`From` is not callable in a const fn")]
const fn build_energy_table() -> [u32; 256] {
    let mut table = [0_u32; 256];
    let mut code: u8 = 0;
    loop {
        // G.711 μ-law decoding of the magnitude: codes are bit-inverted, 3 exponent bits and
        // 4 mantissa bits, with a bias of 0x84.
        let inverted = !code;
        let exponent = ((inverted >> 4) & 0x07) as u32;
        let mantissa = (inverted & 0x0F) as u32;
        let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
        table[code as usize] = magnitude * magnitude;
        if code == u8::MAX {
            break;
        }
        code += 1;
    }
    table
}

/// The duration of `n_samples` telephony samples.
fn samples_to_duration(n_samples: u64) -> Duration {
    Duration::from_micros(n_samples * (1000 / SAMPLES_PER_MS))
}

/// The number of telephony samples in `duration`, rounded down.
fn duration_to_samples(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros() * u128::from(SAMPLES_PER_MS) / 1000).unwrap_or(u64::MAX)
}

/// Tuning of [`Vad`]. Levels are in dB relative to one linear step of 16-bit audio (digital
/// silence is 0 dB, a full-scale sine about 87 dB, normal telephone speech 55–75 dB).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// How far above the noise floor a frame must be to count as voiced.
    pub start_margin_db: f64,
    /// Frames below this level are never voiced, however low the floor.
    pub min_speech_db: f64,
    /// How much lower the voiced threshold is while speech is in progress (hysteresis).
    pub hysteresis_db: f64,
    /// Voiced audio needed, without a break, to start speech.
    pub start_duration: Duration,
    /// Unvoiced audio needed, without a break, to end speech.
    pub hangover: Duration,
    /// The noise floor assumed before any audio arrived.
    pub initial_floor_db: f64,
    /// The floor never goes below this (digital silence would otherwise pull it to 0 dB).
    pub min_floor_db: f64,
    /// The normalised autocorrelation at a pitch lag a loud frame needs to count as voiced
    /// (0 turns the periodicity test off: energy alone decides, as before issue 14).
    pub min_periodicity: f64,
    /// The periodicity that keeps speech going once it started (hysteresis: the weak voicing
    /// of a word's edges does not end it).
    pub hold_periodicity: f64,
    /// How far above the background's *mean* level (not its minimum) a frame must be to start
    /// speech: a distant crowd is periodic too, but the caller's own voice stands out of it
    /// (0 turns the test off).
    pub background_margin_db: f64,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            start_margin_db: 6.0,
            min_speech_db: 45.0,
            hysteresis_db: 3.0,
            start_duration: Duration::from_millis(60),
            hangover: Duration::from_millis(200),
            initial_floor_db: 35.0,
            min_floor_db: 25.0,
            min_periodicity: 0.4,
            hold_periodicity: 0.3,
            background_margin_db: 6.0,
        }
    }
}

/// A change of the caller's speaking state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// The caller started speaking (after `start_duration` of voiced audio).
    SpeechStarted,
    /// The caller stopped speaking (after `hangover` of silence).
    SpeechEnded,
}

/// Energy-based voice activity detector; see the module documentation.
#[derive(Debug, Clone)]
pub struct Vad {
    config: VadConfig,
    start_samples: u64,
    hangover_samples: u64,
    /// Current noise floor estimate, in dB.
    floor_db: f64,
    /// Minimum level of each completed block, newest last.
    block_minima: [f64; FLOOR_BLOCKS],
    /// Minimum level of the block in progress.
    block_min: f64,
    /// Frames in the block in progress.
    block_frames: u32,
    /// Frames seen (saturating), for the warm-up.
    n_frames: u32,
    /// Level of the last frame, in dB.
    last_level_db: f64,
    /// Samples seen (saturating), for the warm-up.
    seen_samples: u64,
    /// Frames the background was learnt from (saturating).
    background_frames: u32,
    /// The mean level of the background (frames while the caller is not speaking), in dB.
    background_db: f64,
    speaking: bool,
    /// The pre-emphasised 4 kHz signal of the last 40 ms, a ring written at `pitch_pos`.
    pitch: [f32; PITCH_HISTORY],
    pitch_pos: usize,
    /// The previous 8 kHz sample (for the pre-emphasis).
    previous_sample: i32,
    /// While a pair of 8 kHz samples is split across frames: the sample before the pair.
    half_pair: Option<i32>,
    /// The periodicity of the last frame that was loud enough to be analysed (0 otherwise).
    last_periodicity: f64,
    /// Consecutive voiced samples while not speaking.
    voiced_run: u64,
    /// Consecutive unvoiced samples while speaking.
    silence_run: u64,
    /// Samples since the current speech run started (including its start window).
    speech_samples: u64,
}

impl Vad {
    /// A detector with the given tuning.
    pub fn new(config: VadConfig) -> Self {
        let floor_db = config.initial_floor_db.max(config.min_floor_db);
        Self {
            config,
            start_samples: duration_to_samples(config.start_duration).max(1),
            hangover_samples: duration_to_samples(config.hangover).max(1),
            floor_db,
            block_minima: [f64::INFINITY; FLOOR_BLOCKS],
            block_min: f64::INFINITY,
            block_frames: 0,
            n_frames: 0,
            last_level_db: 0.0,
            seen_samples: 0,
            background_frames: 0,
            background_db: floor_db,
            pitch: [0.0; PITCH_HISTORY],
            pitch_pos: 0,
            previous_sample: 0,
            half_pair: None,
            last_periodicity: 0.0,
            speaking: false,
            voiced_run: 0,
            silence_run: 0,
            speech_samples: 0,
        }
    }

    /// The tuning in use.
    pub fn config(&self) -> &VadConfig {
        &self.config
    }

    /// Takes one frame of μ-law audio (normally 160 bytes = 20 ms; any length works) and
    /// returns the speaking-state change it caused, if any.
    pub fn push_frame(&mut self, mulaw: &[u8]) -> Option<VadEvent> {
        if mulaw.is_empty() {
            return None;
        }
        let n_samples = u64::try_from(mulaw.len()).unwrap_or(u64::MAX);
        let level_db = level_db(mulaw);
        self.last_level_db = level_db;
        self.track_floor(level_db);
        self.feed_pitch(mulaw);

        let threshold =
            (self.floor_db + self.config.start_margin_db).max(self.config.min_speech_db);
        let threshold =
            if self.speaking { threshold - self.config.hysteresis_db } else { threshold };
        // The pitch is looked for only in frames loud enough over the floor.
        self.last_periodicity = 0.0;
        if self.config.min_periodicity > 0.0 && level_db >= threshold {
            self.last_periodicity = self.periodicity();
        }
        let needed = if self.speaking {
            self.config.hold_periodicity.min(self.config.min_periodicity)
        } else {
            self.config.min_periodicity
        };
        let periodic = self.config.min_periodicity <= 0.0 || self.last_periodicity >= needed;
        let threshold = if self.config.background_margin_db > 0.0 {
            // No hysteresis here: a crowd's loud moments must not hold speech open.
            threshold.max(self.background_db + self.config.background_margin_db)
        } else {
            threshold
        };
        // The first 100 ms only teach the background (a caller's first words are at worst heard
        // a little late).
        self.seen_samples = self.seen_samples.saturating_add(n_samples);
        let warming_up =
            self.config.background_margin_db > 0.0 && self.seen_samples <= WARM_UP_SAMPLES;
        let voiced = level_db >= threshold && periodic && !warming_up;
        // The background is what is not voice: a callee's "Hello?" at pickup must not become it.
        if self.last_periodicity < self.config.min_periodicity || self.config.min_periodicity <= 0.0
        {
            self.track_background(level_db);
        }

        if self.speaking {
            self.speech_samples = self.speech_samples.saturating_add(n_samples);
            if voiced {
                self.silence_run = 0;
                return None;
            }
            self.silence_run = self.silence_run.saturating_add(n_samples);
            if self.silence_run >= self.hangover_samples {
                self.speaking = false;
                self.silence_run = 0;
                self.voiced_run = 0;
                self.speech_samples = 0;
                return Some(VadEvent::SpeechEnded);
            }
            return None;
        }
        if !voiced {
            self.voiced_run = 0;
            return None;
        }
        self.voiced_run = self.voiced_run.saturating_add(n_samples);
        if self.voiced_run >= self.start_samples {
            self.speaking = true;
            self.speech_samples = self.voiced_run;
            self.voiced_run = 0;
            self.silence_run = 0;
            return Some(VadEvent::SpeechStarted);
        }
        None
    }

    /// Whether the caller is speaking (between `SpeechStarted` and `SpeechEnded`).
    pub fn is_speaking(&self) -> bool {
        self.speaking
    }

    /// How long the current speech run has lasted, from its first voiced frame (so it is
    /// `start_duration` when `SpeechStarted` fires); zero when not speaking.
    pub fn speech_ms(&self) -> Duration {
        samples_to_duration(self.speech_samples)
    }

    /// How long the caller has been silent within the current speech run (below the hangover).
    pub fn trailing_silence(&self) -> Duration {
        samples_to_duration(self.silence_run)
    }

    /// The current noise floor estimate, in dB (for metrics and tuning).
    pub fn noise_floor_db(&self) -> f64 {
        self.floor_db
    }

    /// The level of the last frame, in dB.
    pub fn last_level_db(&self) -> f64 {
        self.last_level_db
    }

    /// The periodicity of the last frame (0 when it was too quiet to be analysed).
    pub fn last_periodicity(&self) -> f64 {
        self.last_periodicity
    }

    /// Appends a frame to the pitch ring: pre-emphasis (first difference, which whitens the
    /// low-frequency weight of rumble and brown noise) and pairs summed down to 4 kHz.
    fn feed_pitch(&mut self, mulaw: &[u8]) {
        // The sum of a pair's two first differences telescopes: (a − before) + (b − a) is
        // b − before, so only every second sample needs decoding.
        let mut codes = mulaw;
        if let Some(before) = self.half_pair {
            // A pair split across frames: its first sample came with the previous frame.
            let Some((&code, rest)) = codes.split_first() else { return };
            let second = i32::from(mulaw::decode(code));
            self.push_pitch(second - before);
            self.previous_sample = second;
            self.half_pair = None;
            codes = rest;
        }
        let mut before = self.previous_sample;
        let mut pairs = codes.chunks_exact(2);
        for pair in &mut pairs {
            let second = i32::from(mulaw::decode(pair[1]));
            self.push_pitch(second - before);
            before = second;
        }
        self.previous_sample = before;
        if let [code] = pairs.remainder() {
            self.half_pair = Some(before);
            self.previous_sample = i32::from(mulaw::decode(*code));
        }
    }

    fn push_pitch(&mut self, value: i32) {
        #[allow(clippy::cast_precision_loss, reason = "|value| < 2^18")]
        let value = value as f32;
        self.pitch[self.pitch_pos] = value;
        self.pitch_pos += 1;
        if self.pitch_pos == PITCH_HISTORY {
            self.pitch_pos = 0;
        }
    }

    /// The highest normalised autocorrelation of the last 20 ms with itself up to 20 ms earlier, over
    /// the pitch lags (2.5–20 ms): about 0.9 for voiced speech and tones, under 0.35 for noise.
    fn periodicity(&self) -> f64 {
        let mut signal = [0.0_f32; PITCH_HISTORY];
        // The ring's oldest sample is at `pitch_pos`: lay it out oldest first.
        let (latest, oldest) = self.pitch.split_at(self.pitch_pos);
        signal[..oldest.len()].copy_from_slice(oldest);
        signal[oldest.len()..].copy_from_slice(latest);
        // Running sums of squares, so each lag's energy is one subtraction.
        let mut squares = [0.0_f32; PITCH_HISTORY + 1];
        for (index, value) in signal.iter().enumerate() {
            squares[index + 1] = squares[index] + value * value;
        }
        let start = PITCH_HISTORY - PITCH_WINDOW;
        let window = &signal[start..];
        let window_energy = squares[PITCH_HISTORY] - squares[start];
        if window_energy <= f32::EPSILON {
            return 0.0;
        }
        let mut best = 0.0_f32;
        for lag in MIN_LAG..=MAX_LAG {
            let lagged = &signal[start - lag..PITCH_HISTORY - lag];
            let product = dot(window, lagged);
            if product <= 0.0 {
                continue;
            }
            let lagged_energy = squares[PITCH_HISTORY - lag] - squares[start - lag];
            let correlation = product / (window_energy * lagged_energy).sqrt();
            best = best.max(correlation);
        }
        f64::from(best.min(1.0))
    }

    /// Forgets the speaking state (keeps the learnt noise floor).
    pub fn reset(&mut self) {
        self.speaking = false;
        self.voiced_run = 0;
        self.silence_run = 0;
        self.speech_samples = 0;
    }

    /// Follows the background's mean level (in dB, so loud moments weigh less), never below
    /// the floor: the mean of the first 100 ms, then quickly for the rest of the first half
    /// second, then with a time constant of two seconds up and under one second down.
    fn track_background(&mut self, level_db: f64) {
        self.background_frames = self.background_frames.saturating_add(1);
        let rate = if self.background_frames <= WARM_UP_FRAMES {
            // The mean of the background's first frames.
            1.0 / f64::from(self.background_frames)
        } else if self.speaking {
            // Slowly (time constant ~7 s) while the caller speaks: their voice must not become
            // the background, but a detector that took a crowd for a caller must recover.
            0.003
        } else if self.n_frames <= FLOOR_BLOCK_FRAMES {
            0.2
        } else if level_db < self.background_db {
            0.03
        } else {
            0.01
        };
        self.background_db += (level_db - self.background_db) * rate;
        self.background_db = self.background_db.max(self.floor_db);
    }

    /// Moves the floor towards the minimum level of the last 1.5–2 s: quickly down (time
    /// constant of one frame), slowly up (about one second), so a pause of a few hundred ms in
    /// the window keeps it down while steady noise is adopted within two to three seconds.
    /// During the first half second it rises faster (time constant 0.4 s), so loud steady line
    /// noise at call start is learnt in well under a second; energy alone cannot tell such
    /// noise from speech without pauses, so a false start there is possible and ends quickly.
    fn track_floor(&mut self, level_db: f64) {
        self.n_frames = self.n_frames.saturating_add(1);
        self.block_min = self.block_min.min(level_db);
        self.block_frames += 1;
        if self.block_frames >= FLOOR_BLOCK_FRAMES {
            self.block_minima.rotate_left(1);
            self.block_minima[FLOOR_BLOCKS - 1] = self.block_min;
            self.block_min = f64::INFINITY;
            self.block_frames = 0;
        }
        let window_min =
            self.block_minima.iter().fold(self.block_min, |min, &block| min.min(block));
        let rate = if window_min < self.floor_db {
            0.5
        } else if self.n_frames <= FLOOR_BLOCK_FRAMES {
            0.05
        } else {
            0.02
        };
        self.floor_db += (window_min - self.floor_db) * rate;
        self.floor_db = self.floor_db.max(self.config.min_floor_db);
    }
}

impl Default for Vad {
    fn default() -> Self {
        Self::new(VadConfig::default())
    }
}

/// The dot product of two equally long slices, in eight independent sums the compiler can
/// vectorise (a single running sum cannot be reordered, so it runs one multiply at a time).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sums = [0.0_f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..8 {
            sums[lane] += x[lane] * y[lane];
        }
    }
    sums.iter().sum::<f32>() + tail
}

/// The mean energy of a μ-law frame in dB (10·log10 of the mean square; 0 for silence).
fn level_db(mulaw: &[u8]) -> f64 {
    let sum: u64 = mulaw.iter().map(|&code| u64::from(ENERGY[usize::from(code)])).sum();
    let n_samples = u64::try_from(mulaw.len()).unwrap_or(u64::MAX).max(1);
    let mean = u32::try_from(sum / n_samples).unwrap_or(u32::MAX);
    if mean == 0 { 0.0 } else { 10.0 * f64::from(mean).log10() }
}

/// The caller's finished turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnEnd {
    /// The final transcripts of the turn, joined with spaces.
    pub text: String,
    /// When the caller's speech ended (their last voiced audio), as an offset since call start;
    /// the start of the turn latency.
    pub speech_ended_at: Duration,
}

/// The end-of-turn rule of docs/engine.md#end-of-turn: the caller's turn ends once silence has lasted
/// `response_eagerness` after speech *and* a final transcript is available.
///
/// Silence is measured from the caller's last voiced audio: [`VadEvent::SpeechEnded`] arrives
/// one VAD hangover later, so the hangover counts towards the eagerness delay (an eagerness
/// below the hangover acts like the hangover). If a final transcript arrives without any VAD
/// speech (a very quiet caller), silence is measured from the transcript's arrival.
///
/// The recogniser can also say that the caller's *words* have ended ([`Self::on_words_ended`]:
/// its own endpoint, or a long enough gap after the last word) while the detector still hears a
/// voice — a crowd behind the caller: the turn then ends at once (docs/engine.md#end-of-turn).
#[derive(Debug, Clone)]
pub struct TurnDetector {
    eagerness: Duration,
    vad_hangover: Duration,
    caller_speaking: bool,
    /// When the last speech run ended, while the turn is open.
    speech_ended_at: Option<Duration>,
    /// Final transcripts of the open turn.
    text: String,
    /// The recogniser said the turn's words ended: (when it said so, when the last word ended).
    words_ended: Option<(Duration, Duration)>,
}

impl TurnDetector {
    /// A detector that waits `response_eagerness` of silence, for a VAD whose `SpeechEnded`
    /// comes `vad_hangover` after the last voiced audio.
    pub fn new(response_eagerness: Duration, vad_hangover: Duration) -> Self {
        Self {
            eagerness: response_eagerness,
            vad_hangover,
            caller_speaking: false,
            speech_ended_at: None,
            text: String::new(),
            words_ended: None,
        }
    }

    /// Feeds a VAD event observed at `at` (offset since call start).
    pub fn on_vad(&mut self, event: VadEvent, at: Duration) {
        match event {
            VadEvent::SpeechStarted => {
                self.caller_speaking = true;
                self.speech_ended_at = None;
            }
            VadEvent::SpeechEnded => {
                self.caller_speaking = false;
                self.speech_ended_at = Some(at.saturating_sub(self.vad_hangover));
            }
        }
    }

    /// Feeds a final transcript received at `at`; blank ones are ignored.
    pub fn on_final_transcript(&mut self, text: &str, at: Duration) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        if !self.text.is_empty() {
            self.text.push(' ');
        }
        self.text.push_str(text);
        // New words: an earlier end of the words no longer holds.
        self.words_ended = None;
        if !self.caller_speaking && self.speech_ended_at.is_none() {
            self.speech_ended_at = Some(at);
        }
    }

    /// The recogniser heard new words of the caller that are not final yet (an interim
    /// hypothesis): an earlier end of the words no longer holds.
    pub fn on_words(&mut self) {
        self.words_ended = None;
    }

    /// The recogniser's own endpoint (a `speech_final` result it gave after `endpointing`
    /// without words) arrived at `at`. It ends the turn only when `endpointing` is at least the
    /// detector's hangover, so a low `response_eagerness` cannot end turns at a short pause
    /// inside a sentence.
    pub fn on_endpoint(&mut self, at: Duration, endpointing: Duration) {
        if endpointing >= self.vad_hangover {
            self.on_words_ended(at, endpointing);
        }
    }

    /// The recogniser says the caller's words ended `gap` before `at` (its endpoint after
    /// `gap` without words, or its utterance end after a `gap` between words). Ignored while
    /// the turn has no words. The turn then ends at `at` even if the detector still hears a
    /// voice: the recogniser found no words in it.
    pub fn on_words_ended(&mut self, at: Duration, gap: Duration) {
        if self.text.is_empty() {
            return;
        }
        self.words_ended = Some((at, at.saturating_sub(gap)));
    }

    /// When [`Self::poll`] will return the turn if nothing else happens; `None` while the caller
    /// speaks (and the recogniser has not said their words ended) or no transcript is there
    /// yet. May be in the past: then poll now.
    pub fn next_deadline(&self) -> Option<Duration> {
        if self.text.is_empty() {
            return None;
        }
        let by_voice = if self.caller_speaking {
            None
        } else {
            self.speech_ended_at.map(|ended| ended + self.eagerness)
        };
        let by_words = self.words_ended.map(|(at, _)| at);
        match (by_voice, by_words) {
            (Some(voice), Some(words)) => Some(voice.min(words)),
            (voice, words) => voice.or(words),
        }
    }

    /// Returns the caller's turn once it has ended by `at`, and starts a new one.
    pub fn poll(&mut self, at: Duration) -> Option<TurnEnd> {
        let deadline = self.next_deadline()?;
        if at < deadline {
            return None;
        }
        let words_ended = self.words_ended.take().map(|(_, ended)| ended);
        let speech_ended_at = match self.speech_ended_at.take() {
            Some(ended) if !self.caller_speaking => ended,
            // Ended by the recogniser while a voice goes on: the words' end is the turn's end.
            _ => words_ended?,
        };
        Some(TurnEnd { text: std::mem::take(&mut self.text), speech_ended_at })
    }

    /// The transcript of the open turn so far.
    pub fn pending_text(&self) -> &str {
        &self.text
    }

    /// Whether the caller is speaking, per the last VAD event.
    pub fn caller_speaking(&self) -> bool {
        self.caller_speaking
    }

    /// Drops the open turn (e.g. when the call changes state).
    pub fn reset(&mut self) {
        self.speech_ended_at = None;
        self.text.clear();
        self.words_ended = None;
    }
}

/// How long the caller must speak over the agent to interrupt it (docs/engine.md#barge-in):
/// `1200 − 11 × sensitivity` ms, from 1.2 s at 0 to 100 ms at 100 (values above 100 count as
/// 100).
pub fn barge_in_threshold(sensitivity: u8) -> Duration {
    let sensitivity = u64::from(sensitivity.min(100));
    Duration::from_millis(1200 - 11 * sensitivity)
}

/// What the recogniser has heard of the caller's current speech run (docs/engine.md#barge-in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Words {
    /// No words yet (the recogniser lags the audio by a few hundred ms, or hears no words in
    /// what the detector took for speech).
    Nothing,
    /// No recogniser is connected (an outage): the voice alone decides.
    Unavailable,
    /// Only backchannels: "mm-hm", "yeah", "okay", "right", "uh-huh", …
    Backchannel,
    /// At least one word that is not a backchannel.
    Content,
}

impl Words {
    /// The words of two stretches of one utterance together.
    pub fn and(self, other: Words) -> Words {
        match (self, other) {
            (Words::Content, _) | (_, Words::Content) => Words::Content,
            (Words::Backchannel, _) | (_, Words::Backchannel) => Words::Backchannel,
            (Words::Unavailable, _) | (_, Words::Unavailable) => Words::Unavailable,
            (Words::Nothing, Words::Nothing) => Words::Nothing,
        }
    }
}

/// Single words that only acknowledge the speaker, in the languages the agents speak most.
const BACKCHANNEL_WORDS: &[&str] = &[
    "mm", "mmm", "hm", "hmm", "mhm", "mmhm", "mmhmm", "uh", "huh", "uhhuh", "um", "ah", "aha",
    "oh", "yeah", "yep", "yup", "yes", "ya", "okay", "ok", "okey", "right", "sure", "alright",
    "cool", "sí", "si", "vale", "claro", "ajá", "ja", "genau", "oui", "ouais", "d'accord", "da",
    "certo",
];

/// Two-word backchannels.
const BACKCHANNEL_PAIRS: &[(&str, &str)] =
    &[("all", "right"), ("i", "see"), ("got", "it"), ("of", "course")];

/// Sorts a transcript into [`Words`]: empty, backchannels only, or content.
pub fn classify_words(text: &str) -> Words {
    let lower = text.to_lowercase();
    let tokens: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || c == '-' || c == ',')
        .map(|token| token.trim_matches(|c: char| !c.is_alphanumeric() && c != '\''))
        .map(|token| token.trim_matches('\''))
        .filter(|token| !token.is_empty())
        .collect();
    if tokens.is_empty() {
        return Words::Nothing;
    }
    let mut index = 0;
    while index < tokens.len() {
        if BACKCHANNEL_WORDS.contains(&tokens[index]) {
            index += 1;
        } else if index + 1 < tokens.len()
            && BACKCHANNEL_PAIRS.contains(&(tokens[index], tokens[index + 1]))
        {
            index += 2;
        } else {
            return Words::Content;
        }
    }
    Words::Backchannel
}

/// Below this threshold (sensitivity 75, "high", and above) the caller's voice alone
/// interrupts; from it up, words confirm the interruption.
const CONFIRM_WITH_WORDS_FROM: Duration = Duration::from_millis(376);

/// Speech runs closer than this are one utterance for the barge-in rule: the pauses between
/// the words of "Wait, stop, that's wrong" do not restart the count.
pub const UTTERANCE_GAP: Duration = Duration::from_millis(500);

/// Decides when caller speech during agent playback interrupts the agent.
///
/// Call [`BargeIn::on_frame`] after every inbound frame. Only speech that overlaps playback
/// counts: if the agent was already playing when the run started, the whole run counts
/// (including the VAD's start window); if playback started mid-run, counting starts then. Once
/// the overlap reaches the threshold, the recogniser's words of the run decide (unless the
/// threshold is below 376 ms, where the voice alone does): content words interrupt at once,
/// backchannels and a voice without words never (a crowd's voices have no words for the
/// recogniser), and with no recogniser connected the voice alone does. Speech runs less than [`UTTERANCE_GAP`] apart are one
/// utterance, counted from its first sound; it fires once per utterance.
#[derive(Debug, Clone)]
pub struct BargeIn {
    threshold: Duration,
    /// Caller speech that overlapped playback in the current run.
    overlap: Duration,
    /// Whether an utterance is in progress (speech runs less than [`UTTERANCE_GAP`] apart).
    in_run: bool,
    /// Silence since the utterance's last speech run ended.
    gap: Duration,
    /// Whether this run already fired.
    fired: bool,
}

impl BargeIn {
    /// A detector for the agent's `interruption_sensitivity` (0–100).
    pub fn new(sensitivity: u8) -> Self {
        Self::with_threshold(barge_in_threshold(sensitivity))
    }

    /// A detector with an explicit threshold.
    pub fn with_threshold(threshold: Duration) -> Self {
        Self {
            threshold,
            overlap: Duration::ZERO,
            in_run: false,
            gap: Duration::ZERO,
            fired: false,
        }
    }

    /// The caller speech needed to interrupt.
    pub fn threshold(&self) -> Duration {
        self.threshold
    }

    /// Feeds one inbound frame: `caller_speech` is [`Vad::speech_ms`] after the frame (zero when
    /// not speaking), `frame` the frame's length, `agent_playing` whether agent audio is being
    /// played, `words` what the recogniser heard of the run so far. Returns `true` exactly once
    /// per speech run, when the agent should stop.
    pub fn on_frame(
        &mut self,
        caller_speech: Duration,
        frame: Duration,
        agent_playing: bool,
        words: Words,
    ) -> bool {
        if caller_speech.is_zero() {
            if self.in_run {
                self.gap += frame;
                if self.gap >= UTTERANCE_GAP {
                    self.reset();
                }
            }
            return false;
        }
        if !self.in_run {
            self.in_run = true;
            self.overlap = if agent_playing { caller_speech } else { Duration::ZERO };
        } else if !self.gap.is_zero() {
            // The next word of the same utterance: the pause before it and its start window
            // count too (the utterance's span from its first sound).
            if agent_playing {
                self.overlap += self.gap + caller_speech;
            }
            self.gap = Duration::ZERO;
        } else if agent_playing {
            self.overlap += frame;
        }
        if !agent_playing || self.fired || self.overlap < self.threshold {
            return false;
        }
        let interrupt = self.threshold < CONFIRM_WITH_WORDS_FROM
            || match words {
                Words::Content => true,
                Words::Backchannel => false,
                Words::Unavailable => true,
                Words::Nothing => false,
            };
        self.fired = interrupt;
        interrupt
    }

    /// Whether this run interrupted the agent.
    pub fn fired(&self) -> bool {
        self.fired
    }

    /// Whether an utterance is in progress (it may be in a short pause between words).
    pub fn in_utterance(&self) -> bool {
        self.in_run
    }

    /// Forgets the current utterance.
    pub fn reset(&mut self) {
        self.overlap = Duration::ZERO;
        self.in_run = false;
        self.gap = Duration::ZERO;
        self.fired = false;
    }
}

#[cfg(test)]
mod tests {
    use nixflex_pipeline::audio::mulaw;
    use nixflex_pipeline::audio::tone;

    use super::*;

    const FRAME: usize = 160;
    const FRAME_DURATION: Duration = Duration::from_millis(20);

    /// A deterministic noise source (xorshift), uniform in `-amplitude..=amplitude`.
    struct Noise(u32);

    impl Noise {
        fn sample(&mut self, amplitude: i32) -> i32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 17;
            self.0 ^= self.0 << 5;
            let unit = i64::from(self.0 % 20_001) - 10_000;
            i32::try_from(unit * i64::from(amplitude) / 10_000).unwrap()
        }
    }

    /// Encodes `samples` (mixed with noise of `noise_amplitude`) as μ-law frames.
    fn frames(samples: &[i16], noise: &mut Noise, noise_amplitude: i32) -> Vec<[u8; FRAME]> {
        samples
            .chunks(FRAME)
            .map(|chunk| {
                let mut frame = [0xFF_u8; FRAME];
                for (code, &sample) in frame.iter_mut().zip(chunk) {
                    let mixed = i32::from(sample) + noise.sample(noise_amplitude);
                    *code = mulaw::encode(i16::try_from(mixed.clamp(-32768, 32767)).unwrap());
                }
                frame
            })
            .collect()
    }

    fn speech(ms: usize) -> Vec<i16> {
        tone::sine(440.0, 8000, ms * 8, 6000.0)
    }

    fn silence(ms: usize) -> Vec<i16> {
        vec![0; ms * 8]
    }

    /// Runs `frames` through a default VAD and returns (frame index, event) pairs.
    fn events(vad: &mut Vad, frames: &[[u8; FRAME]]) -> Vec<(usize, VadEvent)> {
        frames
            .iter()
            .enumerate()
            .filter_map(|(index, frame)| vad.push_frame(frame).map(|event| (index, event)))
            .collect()
    }

    #[test]
    fn energy_table_matches_the_mulaw_decoder_on_every_code() {
        for code in 0..=255_u8 {
            let linear = i64::from(mulaw::decode(code));
            assert_eq!(i64::from(ENERGY[usize::from(code)]), linear * linear, "code {code:#04x}");
        }
    }

    #[test]
    fn digital_silence_gives_no_events() {
        let mut vad = Vad::default();
        let mut noise = Noise(1);
        assert_eq!(events(&mut vad, &frames(&silence(2000), &mut noise, 0)), []);
        assert!(!vad.is_speaking());
        assert_eq!(vad.speech_ms(), Duration::ZERO);
    }

    #[test]
    fn speech_starts_after_sixty_ms_and_ends_after_the_hangover() {
        let mut vad = Vad::default();
        let mut noise = Noise(1);
        let audio = [silence(400), speech(500), silence(400)].concat();
        // Speech occupies frames 20..45: it starts at the 3rd voiced frame (index 22) and ends
        // at the 10th silent frame (index 54).
        assert_eq!(
            events(&mut vad, &frames(&audio, &mut noise, 0)),
            [(22, VadEvent::SpeechStarted), (54, VadEvent::SpeechEnded)]
        );
    }

    #[test]
    fn speech_ms_counts_from_the_first_voiced_frame() {
        let mut vad = Vad::default();
        let mut noise = Noise(1);
        // The first 100 ms of a call only teach the detector the background.
        for frame in frames(&silence(100), &mut noise, 0) {
            assert_eq!(vad.push_frame(&frame), None);
        }
        let audio = frames(&speech(200), &mut noise, 0);
        assert_eq!(vad.push_frame(&audio[0]), None);
        assert_eq!(vad.push_frame(&audio[1]), None);
        assert_eq!(vad.push_frame(&audio[2]), Some(VadEvent::SpeechStarted));
        assert_eq!(vad.speech_ms(), Duration::from_millis(60));
        for frame in &audio[3..] {
            vad.push_frame(frame);
        }
        assert_eq!(vad.speech_ms(), Duration::from_millis(200));
        assert!(vad.is_speaking());
    }

    #[test]
    fn a_single_loud_click_is_not_speech() {
        let mut vad = Vad::default();
        let mut noise = Noise(7);
        let mut audio = silence(1000);
        for sample in &mut audio[4000..4160] {
            *sample = 30_000;
        }
        assert_eq!(events(&mut vad, &frames(&audio, &mut noise, 100)), []);
    }

    #[test]
    fn short_pauses_between_words_do_not_end_speech() {
        let mut vad = Vad::default();
        let mut noise = Noise(3);
        let audio =
            [speech(300), silence(120), speech(300), silence(160), speech(300), silence(400)]
                .concat();
        let got = events(&mut vad, &frames(&audio, &mut noise, 50));
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].1, VadEvent::SpeechStarted);
        assert_eq!(got[1].1, VadEvent::SpeechEnded);
    }

    #[test]
    fn steady_line_noise_is_learnt_and_speech_over_it_is_still_found() {
        let mut vad = Vad::default();
        let mut noise = Noise(11);
        // Noise of amplitude 1500 (about 59 dB), well above the absolute speech minimum.
        let noise_only = frames(&silence(3000), &mut noise, 1500);
        let early = events(&mut vad, &noise_only[..50]);
        // The floor is learnt within a second; a false start there has ended by then.
        assert!(early.len() <= 2, "{early:?}");
        assert!(!vad.is_speaking());
        assert_eq!(events(&mut vad, &noise_only[50..]), []);
        assert!(vad.noise_floor_db() > 50.0, "floor {}", vad.noise_floor_db());

        let audio = [speech(600), silence(600)].concat();
        let got = events(&mut vad, &frames(&audio, &mut noise, 1500));
        assert_eq!(
            got.iter().map(|(_, event)| *event).collect::<Vec<_>>(),
            [VadEvent::SpeechStarted, VadEvent::SpeechEnded]
        );
    }

    #[test]
    fn quiet_line_noise_never_triggers() {
        let mut vad = Vad::default();
        let mut noise = Noise(5);
        assert_eq!(events(&mut vad, &frames(&silence(5000), &mut noise, 250)), []);
    }

    #[test]
    fn a_text_tone_utterance_is_one_speech_run() {
        let mut vad = Vad::default();
        let mut noise = Noise(9);
        let voice = tone::text_tone("Hello, I would like to book an appointment.", 8000, 60);
        let audio = [silence(300), voice, silence(500)].concat();
        let got = events(&mut vad, &frames(&audio, &mut noise, 30));
        assert_eq!(
            got.iter().map(|(_, event)| *event).collect::<Vec<_>>(),
            [VadEvent::SpeechStarted, VadEvent::SpeechEnded]
        );
    }

    #[test]
    fn frames_of_any_length_are_accepted() {
        let mut vad = Vad::default();
        let mut noise = Noise(1);
        let audio: Vec<u8> = frames(&speech(100), &mut noise, 0).concat();
        assert_eq!(vad.push_frame(&[]), None);
        // The first 100 ms of a call only teach the detector the background.
        assert_eq!(vad.push_frame(&frames(&silence(100), &mut noise, 0).concat()), None);
        // 60 ms of speech in one 480-byte frame starts speech at once.
        assert_eq!(vad.push_frame(&audio[..480]), Some(VadEvent::SpeechStarted));
        assert_eq!(vad.speech_ms(), Duration::from_millis(60));
        vad.reset();
        assert!(!vad.is_speaking());
    }

    #[test]
    fn the_pitch_ring_is_the_same_whatever_the_frame_lengths() {
        // The ring holds pairs of first differences summed down to 4 kHz; computed straight
        // from the decoded samples, whatever lengths (odd ones included) the frames had.
        let mut noise = Noise(7);
        let audio: Vec<u8> = frames(&speech(100), &mut noise, 0).concat();
        let samples: Vec<i32> = audio.iter().map(|&code| i32::from(mulaw::decode(code))).collect();
        let mut expected = Vec::new();
        let mut previous = 0;
        for pair in samples.chunks_exact(2) {
            expected.push(((pair[0] - previous) + (pair[1] - pair[0])) as f32);
            previous = pair[1];
        }
        for lengths in [&[160_usize][..], &[1], &[3, 160, 7], &[159, 1, 161]] {
            let mut vad = Vad::default();
            let (mut at, mut pushed) = (0, Vec::new());
            for &length in lengths.iter().cycle() {
                let end = (at + length).min(audio.len());
                let before = vad.pitch_pos;
                vad.feed_pitch(&audio[at..end]);
                let mut pos = before;
                while pos != vad.pitch_pos {
                    pushed.push(vad.pitch[pos]);
                    pos = (pos + 1) % PITCH_HISTORY;
                }
                at = end;
                if at == audio.len() {
                    break;
                }
            }
            assert_eq!(pushed, expected, "frame lengths {lengths:?}");
        }
    }

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    #[test]
    fn turn_ends_after_eagerness_once_the_transcript_is_there() {
        let mut turns = TurnDetector::new(ms(500), ms(200));
        turns.on_vad(VadEvent::SpeechStarted, ms(1000));
        turns.on_final_transcript("I'd like to book", ms(1800));
        assert_eq!(turns.next_deadline(), None, "the caller is still speaking");
        // Speech ended at 2000 ms (event at 2200 ms after the hangover).
        turns.on_vad(VadEvent::SpeechEnded, ms(2200));
        assert_eq!(turns.next_deadline(), Some(ms(2500)));
        assert_eq!(turns.poll(ms(2499)), None);
        assert_eq!(
            turns.poll(ms(2500)),
            Some(TurnEnd { text: "I'd like to book".to_owned(), speech_ended_at: ms(2000) })
        );
        assert_eq!(turns.poll(ms(9000)), None);
        assert_eq!(turns.next_deadline(), None);
    }

    #[test]
    fn turn_waits_for_a_late_transcript() {
        let mut turns = TurnDetector::new(ms(200), ms(200));
        turns.on_vad(VadEvent::SpeechStarted, ms(0));
        turns.on_vad(VadEvent::SpeechEnded, ms(1200));
        assert_eq!(turns.next_deadline(), None);
        assert_eq!(turns.poll(ms(3000)), None);
        turns.on_final_transcript("  ", ms(3000));
        assert_eq!(turns.poll(ms(3000)), None);
        turns.on_final_transcript("Yes please.", ms(3100));
        assert_eq!(turns.next_deadline(), Some(ms(1200)));
        let turn = turns.poll(ms(3100)).unwrap();
        assert_eq!(turn.text, "Yes please.");
        assert_eq!(turn.speech_ended_at, ms(1000));
    }

    #[test]
    fn speech_resuming_before_the_deadline_continues_the_turn() {
        let mut turns = TurnDetector::new(ms(800), ms(200));
        turns.on_vad(VadEvent::SpeechStarted, ms(0));
        turns.on_final_transcript("My number is", ms(900));
        turns.on_vad(VadEvent::SpeechEnded, ms(1000));
        turns.on_vad(VadEvent::SpeechStarted, ms(1300));
        assert_eq!(turns.poll(ms(1700)), None);
        turns.on_vad(VadEvent::SpeechEnded, ms(2500));
        turns.on_final_transcript("five five five.", ms(2600));
        assert_eq!(turns.pending_text(), "My number is five five five.");
        assert_eq!(turns.poll(ms(3000)), None);
        assert_eq!(turns.poll(ms(3100)).unwrap().text, "My number is five five five.");
    }

    #[test]
    fn a_transcript_without_vad_speech_ends_the_turn_after_eagerness() {
        let mut turns = TurnDetector::new(ms(300), ms(200));
        turns.on_final_transcript("hello?", ms(5000));
        assert_eq!(turns.next_deadline(), Some(ms(5300)));
        assert_eq!(
            turns.poll(ms(5300)),
            Some(TurnEnd { text: "hello?".to_owned(), speech_ended_at: ms(5000) })
        );
    }

    #[test]
    fn reset_drops_the_open_turn() {
        let mut turns = TurnDetector::new(ms(0), ms(200));
        turns.on_final_transcript("stale", ms(10));
        turns.reset();
        assert_eq!(turns.poll(ms(1000)), None);
        assert!(!turns.caller_speaking());
    }

    #[test]
    fn the_recogniser_ends_a_turn_that_a_voice_behind_the_caller_holds_open() {
        // The caller's words end at 2000 ms; a crowd keeps the detector hearing a voice.
        let mut turns = TurnDetector::new(ms(200), ms(200));
        turns.on_vad(VadEvent::SpeechStarted, ms(0));
        turns.on_final_transcript("A table for two.", ms(2050));
        assert_eq!(turns.next_deadline(), None, "the voice holds the turn");
        assert_eq!(turns.poll(ms(3000)), None);
        // An endpoint after less silence than the hangover does not count.
        turns.on_endpoint(ms(2500), ms(100));
        assert_eq!(turns.next_deadline(), None, "a short endpoint ends nothing");
        // The recogniser's endpoint: 200 ms without words after the last one.
        turns.on_endpoint(ms(3100), ms(200));
        assert_eq!(turns.next_deadline(), Some(ms(3100)));
        assert_eq!(turns.poll(ms(3099)), None);
        assert_eq!(
            turns.poll(ms(3100)),
            Some(TurnEnd { text: "A table for two.".to_owned(), speech_ended_at: ms(2900) })
        );
        // The crowd's run goes on and ends later: no second turn, no stale end of words.
        assert!(turns.caller_speaking());
        turns.on_vad(VadEvent::SpeechEnded, ms(4000));
        assert_eq!(turns.poll(ms(9000)), None);
        turns.on_words_ended(ms(9000), ms(1000));
        assert_eq!(turns.next_deadline(), None, "an end of words without words is ignored");
    }

    #[test]
    fn new_words_void_an_earlier_end_of_words() {
        let mut turns = TurnDetector::new(ms(200), ms(200));
        turns.on_vad(VadEvent::SpeechStarted, ms(0));
        turns.on_final_transcript("My number is", ms(1500));
        turns.on_words_ended(ms(1700), ms(200));
        // The caller goes on: an interim hypothesis with new words.
        turns.on_words();
        assert_eq!(turns.next_deadline(), None);
        turns.on_words_ended(ms(2500), ms(200));
        turns.on_final_transcript("five five five.", ms(2600));
        assert_eq!(turns.next_deadline(), None, "a later final's words void it too");
        // The detector hears the end before the recogniser does: the earlier of the two wins.
        turns.on_vad(VadEvent::SpeechEnded, ms(2800));
        turns.on_words_ended(ms(2900), ms(200));
        assert_eq!(turns.next_deadline(), Some(ms(2800)));
        let turn = turns.poll(ms(2800)).unwrap();
        assert_eq!(turn.text, "My number is five five five.");
        assert_eq!(turn.speech_ended_at, ms(2600), "the detector's end of speech");
        assert_eq!(turns.next_deadline(), None);
    }

    #[test]
    fn words_are_sorted_into_backchannels_and_content() {
        for text in [
            "mm-hm",
            "Mhm.",
            "yeah",
            "Okay.",
            "right",
            "uh-huh",
            "Yeah, yeah, okay.",
            "All right.",
            "I see",
            "got it",
            "sí, vale",
            "d'accord",
        ] {
            assert_eq!(classify_words(text), Words::Backchannel, "{text}");
        }
        for text in
            ["wait", "Yeah, but stop.", "no", "right now please", "I see a problem", "okay so what"]
        {
            assert_eq!(classify_words(text), Words::Content, "{text}");
        }
        assert_eq!(classify_words(""), Words::Nothing);
        assert_eq!(classify_words(" ... "), Words::Nothing);
    }

    #[test]
    fn words_decide_an_interruption_at_the_default_sensitivity() {
        let frames = |barge_in: &mut BargeIn, from: u64, to: u64, words: Words| {
            (from..=to).find(|step| barge_in.on_frame(ms(step * 20), FRAME_DURATION, true, words))
        };
        // Content words: at the threshold (650 ms = step 32 with the 60 ms start window).
        assert_eq!(frames(&mut BargeIn::new(50), 3, 100, Words::Content), Some(33));
        // Backchannels never interrupt, however long.
        assert_eq!(frames(&mut BargeIn::new(50), 3, 200, Words::Backchannel), None);
        // A voice without words never: a distant crowd is voices without words.
        assert_eq!(frames(&mut BargeIn::new(50), 3, 500, Words::Nothing), None);
        // No recogniser: the voice alone, at the threshold.
        assert_eq!(frames(&mut BargeIn::new(50), 3, 100, Words::Unavailable), Some(33));
        // At high sensitivity the voice alone decides, even for a backchannel.
        assert_eq!(frames(&mut BargeIn::new(90), 3, 100, Words::Backchannel), Some(11));
    }

    #[test]
    fn the_words_of_one_utterance_count_from_its_first_sound() {
        let mut barge_in = BargeIn::new(50);
        // "Wait," (300 ms of speech), a 300 ms pause, "stop, that's wrong".
        for step in 3..=15 {
            assert!(!barge_in.on_frame(ms(step * 20), FRAME_DURATION, true, Words::Content));
        }
        for _ in 0..15 {
            assert!(!barge_in.on_frame(Duration::ZERO, FRAME_DURATION, true, Words::Content));
        }
        assert!(barge_in.in_utterance());
        // 300 + 300 + 60 ms = 660 ms of utterance when the next word starts.
        assert!(barge_in.on_frame(ms(60), FRAME_DURATION, true, Words::Content));
        // A pause longer than the utterance gap starts a new utterance.
        let mut barge_in = BargeIn::new(50);
        for step in 3..=15 {
            barge_in.on_frame(ms(step * 20), FRAME_DURATION, true, Words::Content);
        }
        for _ in 0..25 {
            barge_in.on_frame(Duration::ZERO, FRAME_DURATION, true, Words::Content);
        }
        assert!(!barge_in.in_utterance());
        assert!(!barge_in.on_frame(ms(60), FRAME_DURATION, true, Words::Content));
    }

    #[test]
    fn barge_in_threshold_follows_the_decision_formula() {
        assert_eq!(barge_in_threshold(0), ms(1200));
        assert_eq!(barge_in_threshold(25), ms(925));
        assert_eq!(barge_in_threshold(50), ms(650));
        assert_eq!(barge_in_threshold(100), ms(100));
        assert_eq!(barge_in_threshold(255), ms(100));
        assert_eq!(BargeIn::new(100).threshold(), ms(100));
    }

    #[test]
    fn barge_in_fires_once_when_overlapping_speech_reaches_the_threshold() {
        let mut barge_in = BargeIn::with_threshold(ms(100));
        // The VAD reports 60 ms at SpeechStarted, then 20 ms more per frame.
        assert!(!barge_in.on_frame(ms(60), FRAME_DURATION, true, Words::Content));
        assert!(!barge_in.on_frame(ms(80), FRAME_DURATION, true, Words::Content));
        assert!(barge_in.on_frame(ms(100), FRAME_DURATION, true, Words::Content));
        assert!(
            !barge_in.on_frame(ms(120), FRAME_DURATION, true, Words::Content),
            "fires once per run"
        );
        // A pause of the utterance gap (500 ms) ends the utterance.
        for _ in 0..25 {
            assert!(!barge_in.on_frame(Duration::ZERO, FRAME_DURATION, true, Words::Content));
        }
        assert!(!barge_in.on_frame(ms(60), FRAME_DURATION, true, Words::Content));
        assert!(!barge_in.on_frame(ms(80), FRAME_DURATION, true, Words::Content));
        assert!(
            barge_in.on_frame(ms(100), FRAME_DURATION, true, Words::Content),
            "a new utterance fires again"
        );
    }

    #[test]
    fn barge_in_counts_only_speech_during_playback() {
        let mut barge_in = BargeIn::with_threshold(ms(100));
        // The caller speaks 1 s while the agent is silent: nothing to interrupt.
        for step in 3..=50 {
            assert!(!barge_in.on_frame(ms(step * 20), FRAME_DURATION, false, Words::Content));
        }
        // Playback starts mid-run: only the overlap counts (20 ms per frame).
        assert!(!barge_in.on_frame(ms(1020), FRAME_DURATION, true, Words::Content));
        assert!(!barge_in.on_frame(ms(1040), FRAME_DURATION, true, Words::Content));
        assert!(!barge_in.on_frame(ms(1060), FRAME_DURATION, true, Words::Content));
        assert!(!barge_in.on_frame(ms(1080), FRAME_DURATION, true, Words::Content));
        assert!(barge_in.on_frame(ms(1100), FRAME_DURATION, true, Words::Content));
    }

    #[test]
    fn vad_and_barge_in_together_interrupt_after_the_threshold() {
        let mut vad = Vad::default();
        let mut barge_in = BargeIn::new(50);
        let mut noise = Noise(2);
        let audio = frames(&[silence(200), speech(1000)].concat(), &mut noise, 20);
        let fired: Vec<usize> = audio
            .iter()
            .enumerate()
            .filter(|(_, frame)| {
                vad.push_frame(&frame[..]);
                barge_in.on_frame(vad.speech_ms(), FRAME_DURATION, true, Words::Content)
            })
            .map(|(index, _)| index)
            .collect();
        // Speech starts at frame 10; 650 ms of it is reached at frame 10 + 32.
        assert_eq!(fired, [42]);
    }
}

/// The detector against the corpus of `nixflex_testkit::corpus` (real voices, phone-band noise).
#[cfg(test)]
mod corpus_tests {
    use nixflex_testkit::corpus::{self, ClipKind, Noise, NoiseKind};

    use super::*;

    const FRAME: Duration = Duration::from_millis(20);

    fn starts(vad: &mut Vad, samples: &[i16]) -> usize {
        corpus::to_mulaw_frames(samples)
            .iter()
            .filter(|frame| vad.push_frame(&frame[..]) == Some(VadEvent::SpeechStarted))
            .count()
    }

    #[test]
    fn steady_and_slowly_varying_noise_at_minus_24_dbfs_is_never_speech() {
        for kind in [NoiseKind::White, NoiseKind::Pink, NoiseKind::Brown, NoiseKind::Rumble] {
            for seed in 1..=2 {
                let mut noise = Noise::new(kind, -24.0, seed).with_wobble(3.0, 7.0);
                let mut vad = Vad::default();
                // From the first frame of the call: no time to learn the noise first.
                let found = starts(&mut vad, &noise.take_samples(20 * 8000));
                assert_eq!(found, 0, "{} seed {seed}", kind.name());
            }
        }
    }

    #[test]
    fn every_voice_over_noise_at_ten_db_snr_is_speech_and_ends() {
        for kind in [NoiseKind::White, NoiseKind::Pink, NoiseKind::Brown, NoiseKind::Rumble] {
            for clip in corpus::clips_of(ClipKind::Sentence) {
                let mut noise = Noise::new(kind, -24.0, 3);
                let mut samples = noise.take_samples(2 * 8000);
                let mut speech = corpus::scaled_to(&clip.samples, -14.0, true);
                noise.add_to(&mut speech);
                samples.extend(speech);
                samples.extend(noise.take_samples(8000));
                let mut vad = Vad::default();
                let events: Vec<(usize, VadEvent)> = corpus::to_mulaw_frames(&samples)
                    .iter()
                    .enumerate()
                    .filter_map(|(index, frame)| vad.push_frame(&frame[..]).map(|e| (index, e)))
                    .collect();
                let name = format!("{} over {}", clip.file, kind.name());
                let first = events.first().unwrap_or_else(|| panic!("{name}: not heard"));
                assert_eq!(first.1, VadEvent::SpeechStarted, "{name}");
                // Heard within 600 ms of its first sound (frame 100): a soft first syllable
                // ("Can you…") may drown in the noise, the recogniser still gets all of it.
                assert!((100..=130).contains(&first.0), "{name}: {events:?}");
                assert_eq!(events.last().map(|e| e.1), Some(VadEvent::SpeechEnded), "{name}");
                assert!(!vad.is_speaking(), "{name}");
            }
        }
    }

    #[test]
    fn an_interruption_over_the_agent_in_noise_barges_in_before_it_ends() {
        for kind in [NoiseKind::White, NoiseKind::Rumble] {
            for clip in corpus::clips_of(ClipKind::Interruption) {
                let mut noise = Noise::new(kind, -24.0, 5);
                let mut samples = noise.take_samples(2 * 8000);
                let mut speech = corpus::scaled_to(&clip.samples, -14.0, true);
                noise.add_to(&mut speech);
                let end_frame = (samples.len() + speech.len()) / 160;
                samples.extend(speech);
                let mut vad = Vad::default();
                let mut barge_in = BargeIn::new(50);
                let fired: Vec<usize> = corpus::to_mulaw_frames(&samples)
                    .iter()
                    .enumerate()
                    .filter(|(index, frame)| {
                        vad.push_frame(&frame[..]);
                        // The recogniser has the first word ("Wait") from 300 ms in.
                        let words = if *index >= 115 { Words::Content } else { Words::Nothing };
                        barge_in.on_frame(vad.speech_ms(), FRAME, true, words)
                    })
                    .map(|(index, _)| index)
                    .collect();
                assert_eq!(fired.len(), 1, "{} over {}: {fired:?}", clip.file, kind.name());
                assert!(fired[0] <= end_frame, "{}: {fired:?} after {end_frame}", clip.file);
            }
        }
    }
}
