//! The turn-taking test corpus (issue 14): clean speech clips from several offline voices, and
//! endless deterministic noises to mix under them, for measuring voice-activity detection and
//! turn-taking.
//!
//! The clips are 8 kHz mono 16-bit PCM WAV files committed under
//! `crates/nixflex-testkit/corpus/` and listed in its `manifest.tsv`. `scripts/corpus/generate.sh`
//! regenerates them (with espeak-ng, sox and python3): band-limited like a phone line
//! (300–3400 Hz), trimmed to at most 20 ms of leading and trailing silence, and normalised so
//! each clip's *active speech* RMS is −20 dBFS. Nothing at run time needs espeak-ng: the files
//! are compiled in with `include_bytes!` and decoded once, on first use.
//!
//! Levels are in dBFS: `20·log10(rms / 32768)`. This module does no I/O, reads no clock and uses
//! no global random number generator: every noise is a pure function of its kind, level and seed.

use std::f64::consts::TAU;
use std::io::Cursor;
use std::ops::Range;
use std::sync::LazyLock;
use std::time::Duration;

use nixflex_pipeline::audio::{MULAW_FRAME_BYTES, mulaw};

/// The sample rate of every clip and noise: 8 kHz, a phone line's.
pub const SAMPLE_RATE: u32 = 8000;

/// What a clip is, for a benchmark's conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClipKind {
    /// A sentence of about 1.5–3 s.
    Sentence,
    /// A sentence with a real pause of about 500 ms inside it (two parts joined by silence).
    Paused,
    /// A short interruption of about 1 s ("Wait, stop, that's wrong.").
    Interruption,
    /// A backchannel: "mm-hm", "yeah", "okay", "right", "uh-huh".
    Backchannel,
}

impl ClipKind {
    /// The name used in `manifest.tsv`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sentence => "sentence",
            Self::Paused => "paused",
            Self::Interruption => "interruption",
            Self::Backchannel => "backchannel",
        }
    }

    /// The kind named `name` in `manifest.tsv`.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Sentence, Self::Paused, Self::Interruption, Self::Backchannel]
            .into_iter()
            .find(|kind| kind.name() == name)
    }
}

/// One clean clip of the corpus.
#[derive(Debug, Clone)]
pub struct Clip {
    /// The WAV file's name in `crates/nixflex-testkit/corpus/`.
    pub file: &'static str,
    /// The espeak-ng voice that spoke it.
    pub voice: &'static str,
    /// What the clip is.
    pub kind: ClipKind,
    /// What is said.
    pub text: &'static str,
    /// The audio, 8 kHz.
    pub samples: Vec<i16>,
}

impl Clip {
    /// Ground truth: sample ranges where the clean clip has speech (frame energy > −45 dBFS
    /// over 10 ms frames, gaps < 150 ms bridged), so benches can tell true from false
    /// detections. See [`speech_ranges`].
    pub fn speech_ranges(&self) -> Vec<Range<usize>> {
        speech_ranges(&self.samples)
    }

    /// How long the clip plays.
    pub fn duration(&self) -> Duration {
        samples_duration(self.samples.len())
    }
}

/// The duration of `n_samples` at [`SAMPLE_RATE`].
pub fn samples_duration(n_samples: usize) -> Duration {
    let n_samples = u64::try_from(n_samples).unwrap_or(u64::MAX);
    Duration::from_nanos(n_samples.saturating_mul(1_000_000_000) / u64::from(SAMPLE_RATE))
}

/// Samples in one 10 ms analysis frame.
const ANALYSIS_FRAME: usize = SAMPLE_RATE as usize / 100;
/// A frame louder than this is speech (for [`speech_ranges`]).
const SPEECH_THRESHOLD_DBFS: f64 = -45.0;
/// Quieter stretches shorter than this inside speech are bridged (for [`speech_ranges`]).
const BRIDGED_GAP: usize = SAMPLE_RATE as usize * 150 / 1000;

/// Sample ranges of `samples` that are speech: 10 ms frames whose RMS is above −45 dBFS,
/// merged across gaps shorter than 150 ms. A last partial frame counts as a frame.
pub fn speech_ranges(samples: &[i16]) -> Vec<Range<usize>> {
    let mut ranges: Vec<Range<usize>> = Vec::new();
    for (frame_idx, frame) in samples.chunks(ANALYSIS_FRAME).enumerate() {
        if dbfs(frame) <= SPEECH_THRESHOLD_DBFS {
            continue;
        }
        let start = frame_idx * ANALYSIS_FRAME;
        let end = start + frame.len();
        match ranges.last_mut() {
            Some(last) if start - last.end < BRIDGED_GAP => last.end = end,
            _ => ranges.push(start..end),
        }
    }
    ranges
}

/// RMS level of `samples` in dBFS (`20·log10(rms / 32768)`); `f64::NEG_INFINITY` for digital
/// silence or no samples.
pub fn dbfs(samples: &[i16]) -> f64 {
    level_dbfs(rms(samples))
}

/// The RMS level, in dBFS, of the speech in `samples` (the parts [`speech_ranges`] finds);
/// `f64::NEG_INFINITY` when there is none.
pub fn active_dbfs(samples: &[i16]) -> f64 {
    let (energy, count) = speech_ranges(samples).into_iter().fold((0.0, 0_usize), |acc, range| {
        let part = &samples[range];
        (acc.0 + energy(part), acc.1 + part.len())
    });
    if count == 0 {
        return f64::NEG_INFINITY;
    }
    level_dbfs((energy / count as f64).sqrt())
}

/// Multiplies `samples` by `gain_db` decibels, rounding and saturating at the i16 range.
pub fn scaled(samples: &[i16], gain_db: f64) -> Vec<i16> {
    let gain = 10_f64.powf(gain_db / 20.0);
    samples.iter().map(|&sample| saturate(f64::from(sample) * gain)).collect()
}

/// Scales `samples` so their RMS is `dbfs` (the RMS of their speech, see [`active_dbfs`], when
/// `active_only`). Silence stays silence.
pub fn scaled_to(samples: &[i16], dbfs_level: f64, active_only: bool) -> Vec<i16> {
    let level = if active_only { active_dbfs(samples) } else { dbfs(samples) };
    if !level.is_finite() {
        return samples.to_vec();
    }
    scaled(samples, dbfs_level - level)
}

/// μ-law frames of 160 bytes (20 ms) for streaming; a last partial frame is padded with
/// silence.
pub fn to_mulaw_frames(samples: &[i16]) -> Vec<[u8; MULAW_FRAME_BYTES]> {
    samples
        .chunks(MULAW_FRAME_BYTES)
        .map(|chunk| {
            let mut frame = [mulaw::encode(0); MULAW_FRAME_BYTES];
            for (code, &sample) in frame.iter_mut().zip(chunk) {
                *code = mulaw::encode(sample);
            }
            frame
        })
        .collect()
}

fn energy(samples: &[i16]) -> f64 {
    samples.iter().map(|&sample| f64::from(sample) * f64::from(sample)).sum()
}

fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    (energy(samples) / samples.len() as f64).sqrt()
}

fn level_dbfs(rms: f64) -> f64 {
    if rms <= 0.0 { f64::NEG_INFINITY } else { 20.0 * (rms / 32768.0).log10() }
}

/// The RMS, in sample units, of a level in dBFS.
fn level_rms(dbfs_level: f64) -> f64 {
    32768.0 * 10_f64.powf(dbfs_level / 20.0)
}

fn saturate(value: f64) -> i16 {
    // Rounded and clamped to the i16 range first, so the cast is exact.
    value.round().clamp(-32768.0, 32767.0) as i16
}

/// The WAV files, compiled in. `manifest.tsv` names the same files (a test checks it).
macro_rules! corpus_files {
    ($($file:literal),* $(,)?) => {
        &[$(($file, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/", $file)))),*]
    };
}

static FILES: &[(&str, &[u8])] = corpus_files![
    "usm_appointment.wav",
    "usm_premium.wav",
    "usm_account.wav",
    "usm_address.wav",
    "usm_wait.wav",
    "usm_mmhm.wav",
    "usm_yeah.wav",
    "usm_okay.wav",
    "usm_right.wav",
    "usm_uhhuh.wav",
    "gbm_appointment.wav",
    "gbm_premium.wav",
    "gbm_account.wav",
    "gbm_address.wav",
    "gbm_wait.wav",
    "gbm_mmhm.wav",
    "gbm_yeah.wav",
    "gbm_okay.wav",
    "gbm_right.wav",
    "gbm_uhhuh.wav",
    "usf_appointment.wav",
    "usf_premium.wav",
    "usf_account.wav",
    "usf_address.wav",
    "usf_wait.wav",
    "usf_mmhm.wav",
    "usf_yeah.wav",
    "usf_okay.wav",
    "usf_right.wav",
    "usf_uhhuh.wav",
    "gbf_appointment.wav",
    "gbf_premium.wav",
    "gbf_account.wav",
    "gbf_address.wav",
    "gbf_wait.wav",
    "gbf_mmhm.wav",
    "gbf_yeah.wav",
    "gbf_okay.wav",
    "gbf_right.wav",
    "gbf_uhhuh.wav",
];

/// `file\tvoice\tkind\ttext` lines, after a header line.
static MANIFEST: &str = include_str!("../corpus/manifest.tsv");

static CLIPS: LazyLock<Vec<Clip>> = LazyLock::new(load_clips);

/// # Panics
///
/// When the committed corpus is inconsistent (a manifest line that does not parse, a file the
/// manifest names that is not compiled in, a WAV that is not 8 kHz mono 16-bit): the unit
/// tests load it, so such a corpus never gets past them.
fn load_clips() -> Vec<Clip> {
    MANIFEST
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&'static str> = line.split('\t').collect();
            let [file, voice, kind, text] = fields[..] else {
                panic!("corpus manifest line {line:?} has not four fields");
            };
            let kind = ClipKind::parse(kind)
                .unwrap_or_else(|| panic!("corpus manifest: unknown kind {kind:?}"));
            let bytes = FILES
                .iter()
                .find(|(name, _)| *name == file)
                .map(|(_, bytes)| *bytes)
                .unwrap_or_else(|| panic!("corpus file {file} is not compiled in"));
            Clip { file, voice, kind, text, samples: decode_wav(file, bytes) }
        })
        .collect()
}

fn decode_wav(file: &str, bytes: &[u8]) -> Vec<i16> {
    let reader = hound::WavReader::new(Cursor::new(bytes))
        .unwrap_or_else(|error| panic!("corpus file {file}: {error}"));
    let spec = reader.spec();
    assert!(
        spec.sample_rate == SAMPLE_RATE
            && spec.channels == 1
            && spec.bits_per_sample == 16
            && spec.sample_format == hound::SampleFormat::Int,
        "corpus file {file} is not 8 kHz mono 16-bit PCM: {spec:?}"
    );
    reader
        .into_samples::<i16>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|error| panic!("corpus file {file}: {error}"))
}

/// All clips, in manifest order, decoded once per process.
pub fn clips() -> &'static [Clip] {
    &CLIPS
}

/// The clips of one kind, in manifest order.
pub fn clips_of(kind: ClipKind) -> impl Iterator<Item = &'static Clip> {
    clips().iter().filter(move |clip| clip.kind == kind)
}

/// The clip stored in `file`, if any.
pub fn clip(file: &str) -> Option<&'static Clip> {
    clips().iter().find(|clip| clip.file == file)
}

/// A kind of background noise on the caller's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoiseKind {
    /// Uniform white noise: equal power at every frequency up to 4 kHz.
    White,
    /// Pink noise (−3 dB per octave): Paul Kellet's refined filter on white noise.
    Pink,
    /// Brown noise (−6 dB per octave): leaky integrated white noise (leak 0.995), then a 20 Hz
    /// DC blocker.
    Brown,
    /// A moving car heard through a phone: low-passed brown rumble plus a wandering engine hum,
    /// band-limited to 300–3400 Hz.
    Rumble,
    /// A distant crowd: eight corpus sentences of all four voices, looping, summed and
    /// low-passed.
    Babble,
}

impl NoiseKind {
    /// Every kind, for sweeping benchmark conditions.
    pub const ALL: [NoiseKind; 5] =
        [NoiseKind::White, NoiseKind::Pink, NoiseKind::Brown, NoiseKind::Rumble, NoiseKind::Babble];

    /// A short lowercase name (`white`, `pink`, `brown`, `rumble`, `babble`).
    pub fn name(self) -> &'static str {
        match self {
            Self::White => "white",
            Self::Pink => "pink",
            Self::Brown => "brown",
            Self::Rumble => "rumble",
            Self::Babble => "babble",
        }
    }

    /// The kind whose [`NoiseKind::name`] is `name` (ASCII case-insensitive).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name().eq_ignore_ascii_case(name.trim()))
    }
}

/// Samples a noise generator is run for, at construction, to measure its raw level: 16.384 s.
const CALIBRATION_SAMPLES: usize = 1 << 17;

/// An endless deterministic noise at an RMS level in dBFS.
///
/// Each kind is generated from a seeded splitmix64 stream (no `rand` crate) and normalised as
/// follows: the constructor runs a copy of the same generator, from the same seed, for 16.384 s,
/// measures its RMS and sets the gain so that this run is at the requested level. The noise
/// then produces exactly that run first (so any window of several seconds from the start is
/// within a fraction of a dB of the request) and goes on with the same statistics. With
/// [`Noise::with_wobble`] the level then moves slowly around the request.
#[derive(Debug, Clone)]
pub struct Noise {
    kind: NoiseKind,
    /// Raw generator units to sample units.
    gain: f64,
    generator: Generator,
    wobble: Option<Wobble>,
    /// Samples produced so far (the wobble's clock).
    position: u64,
}

#[derive(Debug, Clone, Copy)]
struct Wobble {
    depth_db: f64,
    period_samples: f64,
}

impl Noise {
    /// `kind` at an RMS level of `dbfs` dBFS, from `seed`.
    pub fn new(kind: NoiseKind, dbfs: f64, seed: u64) -> Self {
        let generator = Generator::new(kind, seed);
        let mut probe = generator.clone();
        let sum: f64 = (0..CALIBRATION_SAMPLES)
            .map(|_| {
                let value = probe.next_raw();
                value * value
            })
            .sum();
        let raw_rms = (sum / CALIBRATION_SAMPLES as f64).sqrt();
        let gain = if raw_rms > 0.0 { level_rms(dbfs) / raw_rms } else { 0.0 };
        Self { kind, gain, generator, wobble: None, position: 0 }
    }

    /// Makes the level vary slowly: multiplied by `depth_db · sin(2π·t / period_s)` decibels, so
    /// it swings ±`depth_db` around the requested level once per `period_s` seconds (starting
    /// at the requested level, going up first).
    #[must_use]
    pub fn with_wobble(mut self, depth_db: f64, period_s: f64) -> Self {
        let period_samples = (period_s * f64::from(SAMPLE_RATE)).max(1.0);
        self.wobble = Some(Wobble { depth_db, period_samples });
        self
    }

    /// The kind of noise.
    pub fn kind(&self) -> NoiseKind {
        self.kind
    }

    /// The next noise sample, in i16 units (not rounded, not clamped).
    pub fn next_sample(&mut self) -> f64 {
        let mut value = self.generator.next_raw() * self.gain;
        if let Some(wobble) = self.wobble {
            let phase = TAU * self.position as f64 / wobble.period_samples;
            value *= 10_f64.powf(wobble.depth_db * phase.sin() / 20.0);
        }
        self.position += 1;
        value
    }

    /// Adds the next `samples.len()` noise samples to `samples`, rounding and saturating.
    pub fn add_to(&mut self, samples: &mut [i16]) {
        for sample in samples {
            *sample = saturate(f64::from(*sample) + self.next_sample());
        }
    }

    /// The next `n_samples` of noise alone, rounded and saturated.
    pub fn take_samples(&mut self, n_samples: usize) -> Vec<i16> {
        let mut samples = vec![0; n_samples];
        self.add_to(&mut samples);
        samples
    }
}

/// splitmix64: a tiny, fast, well-mixed generator; enough for noise.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
    }

    /// Uniform in [−1, 1).
    fn uniform(&mut self) -> f64 {
        self.unit() * 2.0 - 1.0
    }
}

#[derive(Debug, Clone)]
enum Generator {
    White(SplitMix64),
    Pink(SplitMix64, Kellet),
    Brown(SplitMix64, BrownState),
    Rumble(Box<Rumble>),
    Babble(Box<Babble>),
}

impl Generator {
    fn new(kind: NoiseKind, seed: u64) -> Self {
        // Different kinds from the same seed are unrelated streams.
        let kind_salt = match kind {
            NoiseKind::White => 1,
            NoiseKind::Pink => 2,
            NoiseKind::Brown => 3,
            NoiseKind::Rumble => 4,
            NoiseKind::Babble => 5,
        };
        let rng = SplitMix64(seed ^ 0xA076_1D64_78BD_642F_u64.wrapping_mul(kind_salt));
        match kind {
            NoiseKind::White => Self::White(rng),
            NoiseKind::Pink => Self::Pink(rng, Kellet::default()),
            NoiseKind::Brown => Self::Brown(rng, BrownState::default()),
            NoiseKind::Rumble => Self::Rumble(Box::new(Rumble::new(rng))),
            NoiseKind::Babble => Self::Babble(Box::new(Babble::new(rng))),
        }
    }

    fn next_raw(&mut self) -> f64 {
        match self {
            Self::White(rng) => rng.uniform(),
            Self::Pink(rng, filter) => filter.next(rng.uniform()),
            Self::Brown(rng, state) => state.next(rng.uniform()),
            Self::Rumble(rumble) => rumble.next(),
            Self::Babble(babble) => babble.next(),
        }
    }
}

/// Paul Kellet's refined pink filter (accurate to ±0.05 dB above 9.2 Hz at 44.1 kHz; at 8 kHz
/// the slope holds across the phone band, which is what matters here).
#[derive(Debug, Clone, Default)]
struct Kellet {
    b: [f64; 7],
}

impl Kellet {
    fn next(&mut self, white: f64) -> f64 {
        let b = &mut self.b;
        b[0] = 0.99886 * b[0] + white * 0.055_517_9;
        b[1] = 0.99332 * b[1] + white * 0.075_075_9;
        b[2] = 0.96900 * b[2] + white * 0.153_852_0;
        b[3] = 0.86650 * b[3] + white * 0.310_485_6;
        b[4] = 0.55000 * b[4] + white * 0.532_952_2;
        b[5] = -0.7616 * b[5] - white * 0.016_898_0;
        let pink = b[0] + b[1] + b[2] + b[3] + b[4] + b[5] + b[6] + white * 0.5362;
        b[6] = white * 0.115_926;
        pink
    }
}

/// Leaky integrator (leak 0.995, a corner near 6 Hz) followed by a 20 Hz DC blocker.
#[derive(Debug, Clone, Default)]
struct BrownState {
    integrated: f64,
    blocker: DcBlocker,
}

impl BrownState {
    fn next(&mut self, white: f64) -> f64 {
        self.integrated = 0.995 * self.integrated + white;
        self.blocker.next(self.integrated)
    }
}

/// `y[n] = x[n] − x[n−1] + R·y[n−1]` with R = 1 − 2π·20 Hz / 8 kHz.
#[derive(Debug, Clone, Default)]
struct DcBlocker {
    previous_in: f64,
    previous_out: f64,
}

impl DcBlocker {
    const POLE: f64 = 1.0 - TAU * 20.0 / SAMPLE_RATE as f64;

    fn next(&mut self, input: f64) -> f64 {
        let output = input - self.previous_in + Self::POLE * self.previous_out;
        self.previous_in = input;
        self.previous_out = output;
        output
    }
}

/// A one-pole low-pass: `y += a·(x − y)`, `a = 1 − e^(−2π·fc/fs)`.
#[derive(Debug, Clone)]
struct OnePole {
    coefficient: f64,
    state: f64,
}

impl OnePole {
    fn low_pass(cutoff_hz: f64) -> Self {
        Self { coefficient: 1.0 - (-TAU * cutoff_hz / f64::from(SAMPLE_RATE)).exp(), state: 0.0 }
    }

    fn next(&mut self, input: f64) -> f64 {
        self.state += self.coefficient * (input - self.state);
        self.state
    }
}

/// A biquad (RBJ cookbook), direct form I.
#[derive(Debug, Clone)]
struct Biquad {
    b: [f64; 3],
    a: [f64; 2],
    x: [f64; 2],
    y: [f64; 2],
}

impl Biquad {
    fn new(high_pass: bool, cutoff_hz: f64, q: f64) -> Self {
        let omega = TAU * cutoff_hz / f64::from(SAMPLE_RATE);
        let alpha = omega.sin() / (2.0 * q);
        let cos = omega.cos();
        let a0 = 1.0 + alpha;
        let b = if high_pass {
            [(1.0 + cos) / 2.0, -(1.0 + cos), (1.0 + cos) / 2.0]
        } else {
            [(1.0 - cos) / 2.0, 1.0 - cos, (1.0 - cos) / 2.0]
        };
        Self {
            b: [b[0] / a0, b[1] / a0, b[2] / a0],
            a: [-2.0 * cos / a0, (1.0 - alpha) / a0],
            x: [0.0; 2],
            y: [0.0; 2],
        }
    }

    fn next(&mut self, input: f64) -> f64 {
        let output = self.b[0] * input + self.b[1] * self.x[0] + self.b[2] * self.x[1]
            - self.a[0] * self.y[0]
            - self.a[1] * self.y[1];
        self.x = [input, self.x[0]];
        self.y = [output, self.y[0]];
        output
    }
}

/// A phone line's band: 300 Hz high-pass and 3400 Hz low-pass, two biquads each (Butterworth
/// Q), so 24 dB per octave outside the band.
#[derive(Debug, Clone)]
struct PhoneBand {
    stages: [Biquad; 4],
}

impl PhoneBand {
    fn new() -> Self {
        let q = std::f64::consts::FRAC_1_SQRT_2;
        Self {
            stages: [
                Biquad::new(true, 300.0, q),
                Biquad::new(true, 300.0, q),
                Biquad::new(false, 3400.0, q),
                Biquad::new(false, 3400.0, q),
            ],
        }
    }

    fn next(&mut self, input: f64) -> f64 {
        self.stages.iter_mut().fold(input, |value, stage| stage.next(value))
    }
}

/// A moving car heard through a phone.
///
/// Physically most of a car's noise is below 200 Hz: road rumble (brown noise, low-passed at
/// 200 Hz here) and the engine's firing frequency (30–45 Hz at cruising revs, wandering as a
/// random walk, with its amplitude wandering too). A phone line passes 300–3400 Hz, so what
/// reaches the caller's far end is the rumble's tail above 300 Hz and the engine's upper
/// harmonics (the 7th to 12th of 30–45 Hz fall in 210–540 Hz): a dull, slowly surging
/// low-mid roar. The generator keeps exactly that: the full low-frequency mix is built first
/// and then band-limited like the line, and the level is set after the band-limit, so the
/// requested dBFS is what reaches the wire. Twelve harmonics with a 1/√k roll-off keep the
/// hum audible next to the rumble after the band-limit.
#[derive(Debug, Clone)]
struct Rumble {
    rng: SplitMix64,
    brown: BrownState,
    low_pass: OnePole,
    band: PhoneBand,
    /// The engine's fundamental, 30–45 Hz.
    engine_hz: f64,
    /// The hum's amplitude factor, 0.5–1.5.
    engine_level: f64,
    /// The fundamental's phase, in cycles.
    phase: f64,
    /// Samples until the next random-walk step.
    countdown: u32,
}

impl Rumble {
    const HARMONICS: usize = 12;
    /// The random walks step every 10 ms.
    const STEP_SAMPLES: u32 = 80;

    fn new(mut rng: SplitMix64) -> Self {
        let engine_hz = 30.0 + 15.0 * rng.unit();
        let engine_level = 0.5 + rng.unit();
        Self {
            rng,
            brown: BrownState::default(),
            low_pass: OnePole::low_pass(200.0),
            band: PhoneBand::new(),
            engine_hz,
            engine_level,
            phase: 0.0,
            countdown: 0,
        }
    }

    fn next(&mut self) -> f64 {
        if self.countdown == 0 {
            self.countdown = Self::STEP_SAMPLES;
            self.engine_hz = reflect(self.engine_hz + 0.15 * self.rng.uniform(), 30.0, 45.0);
            self.engine_level = reflect(self.engine_level + 0.02 * self.rng.uniform(), 0.5, 1.5);
        }
        self.countdown -= 1;
        let white = self.rng.uniform();
        // The brown noise's RMS is about 1.6 before the low-pass; the hum's about 1.5.
        let rumble = self.low_pass.next(self.brown.next(white)) * 4.0;
        self.phase = (self.phase + self.engine_hz / f64::from(SAMPLE_RATE)).fract();
        let hum: f64 = (1..=Self::HARMONICS)
            .map(|harmonic| {
                let k = harmonic as f64;
                (TAU * k * self.phase).sin() / k.sqrt()
            })
            .sum();
        self.band.next(rumble + self.engine_level * hum * 0.5)
    }
}

/// `value` folded back into `[low, high]`.
fn reflect(value: f64, low: f64, high: f64) -> f64 {
    if value < low {
        2.0 * low - value
    } else if value > high {
        2.0 * high - value
    } else {
        value
    }
}

/// A distant crowd.
///
/// Eight corpus *sentences* (two per voice, never backchannels, so a babble can't be mistaken
/// for one in a backchannel benchmark), each looping with its own seeded start offset and a
/// seeded 0.2–1 s pause between repeats, its level swaying slowly (±4 dB over 4–9 s, seeded
/// phase), summed and low-passed at 1.5 kHz (one pole: a distant crowd loses its highs). With
/// eight talkers the sum is a murmur rather than words.
#[derive(Debug, Clone)]
struct Babble {
    talkers: Vec<Talker>,
    low_pass: OnePole,
    position: u64,
}

#[derive(Debug, Clone)]
struct Talker {
    samples: &'static [i16],
    /// Samples of silence after each repeat.
    pause: usize,
    /// Position in the loop of `samples` followed by `pause`.
    cursor: usize,
    sway_phase: f64,
    sway_period: f64,
}

impl Babble {
    const TALKERS: usize = 8;

    fn new(mut rng: SplitMix64) -> Self {
        let sentences: Vec<&'static Clip> = clips_of(ClipKind::Sentence).collect();
        // Two per voice: round-robin over the voices, in manifest order.
        let mut voices: Vec<&'static str> = Vec::new();
        for clip in &sentences {
            if !voices.contains(&clip.voice) {
                voices.push(clip.voice);
            }
        }
        let mut chosen: Vec<&'static Clip> = Vec::new();
        for round in 0..Self::TALKERS {
            let Some(voice) = voices.get(round % voices.len().max(1)) else { break };
            let nth = round / voices.len().max(1);
            if let Some(clip) = sentences.iter().filter(|clip| clip.voice == *voice).nth(nth) {
                chosen.push(clip);
            }
        }
        let rate = SAMPLE_RATE as usize;
        let talkers = chosen
            .into_iter()
            .map(|clip| {
                let pause = rate / 5 + (rng.unit() * (rate * 4 / 5) as f64) as usize;
                let length = clip.samples.len() + pause;
                Talker {
                    samples: &clip.samples,
                    pause,
                    cursor: (rng.unit() * length as f64) as usize % length.max(1),
                    sway_phase: rng.unit() * TAU,
                    sway_period: (4.0 + 5.0 * rng.unit()) * f64::from(SAMPLE_RATE),
                }
            })
            .collect();
        Self { talkers, low_pass: OnePole::low_pass(1500.0), position: 0 }
    }

    fn next(&mut self) -> f64 {
        let time = self.position as f64;
        self.position += 1;
        let sum: f64 = self
            .talkers
            .iter_mut()
            .map(|talker| {
                let value = talker.samples.get(talker.cursor).map_or(0.0, |&s| f64::from(s));
                talker.cursor = (talker.cursor + 1) % (talker.samples.len() + talker.pause);
                let sway = (TAU * time / talker.sway_period + talker.sway_phase).sin();
                value * 10_f64.powf(4.0 * sway / 20.0)
            })
            .sum();
        self.low_pass.next(sum / 32768.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_SECONDS: usize = 10 * SAMPLE_RATE as usize;

    #[test]
    fn every_manifest_line_is_a_compiled_in_clip_and_every_file_is_in_the_manifest() {
        let clips = clips();
        let manifest_lines = MANIFEST.lines().skip(1).filter(|l| !l.trim().is_empty()).count();

        assert_eq!(clips.len(), manifest_lines);
        assert_eq!(clips.len(), FILES.len());
        for (file, _) in FILES {
            assert!(clip(file).is_some(), "{file} is not in the manifest");
        }
    }

    #[test]
    fn the_corpus_has_four_voices_each_with_every_kind_of_clip() {
        let mut voices: Vec<&str> = clips().iter().map(|clip| clip.voice).collect();
        voices.dedup();
        assert!(voices.len() >= 4, "{voices:?}");

        for voice in voices {
            let count = |kind| clips_of(kind).filter(|clip| clip.voice == voice).count();
            assert_eq!(count(ClipKind::Sentence), 3, "{voice}");
            assert_eq!(count(ClipKind::Paused), 1, "{voice}");
            assert_eq!(count(ClipKind::Interruption), 1, "{voice}");
            assert_eq!(count(ClipKind::Backchannel), 5, "{voice}");
        }
    }

    #[test]
    fn clips_have_their_kinds_durations_and_a_speech_level_near_minus_20_dbfs() {
        for clip in clips() {
            let seconds = clip.duration().as_secs_f64();
            let expected = match clip.kind {
                ClipKind::Sentence => 1.5..3.2,
                ClipKind::Paused => 2.0..4.5,
                ClipKind::Interruption => 0.6..1.6,
                ClipKind::Backchannel => 0.2..1.0,
            };
            assert!(expected.contains(&seconds), "{} lasts {seconds} s", clip.file);
            let level = active_dbfs(&clip.samples);
            assert!((-22.0..-18.0).contains(&level), "{} at {level} dBFS", clip.file);
        }
    }

    #[test]
    fn a_paused_clip_has_a_silence_of_about_half_a_second_inside() {
        for clip in clips_of(ClipKind::Paused) {
            // The longest run of quiet 10 ms frames.
            let quiet: Vec<bool> = clip
                .samples
                .chunks(ANALYSIS_FRAME)
                .map(|frame| dbfs(frame) <= SPEECH_THRESHOLD_DBFS)
                .collect();
            let longest = quiet.split(|is_quiet| !is_quiet).map(<[bool]>::len).max().unwrap_or(0);
            let millis = longest * 10;
            assert!((450..=700).contains(&millis), "{}: {millis} ms", clip.file);
            // And it is still one utterance with two speech ranges.
            assert_eq!(clip.speech_ranges().len(), 2, "{}", clip.file);
        }
    }

    #[test]
    fn speech_ranges_of_a_sentence_cover_most_of_it_and_none_of_a_silence_padding() {
        let padding = SAMPLE_RATE as usize / 2;
        for clip in clips_of(ClipKind::Sentence) {
            let mut padded = vec![0_i16; padding];
            padded.extend_from_slice(&clip.samples);
            padded.extend(std::iter::repeat_n(0, padding));

            let ranges = speech_ranges(&padded);

            let covered: usize = ranges.iter().map(ExactSizeIterator::len).sum();
            assert!(covered * 10 >= clip.samples.len() * 8, "{}: {ranges:?}", clip.file);
            let first = ranges.first().expect("speech");
            let last = ranges.last().expect("speech");
            assert!(first.start >= padding, "{}: {ranges:?}", clip.file);
            assert!(last.end <= padding + clip.samples.len() + ANALYSIS_FRAME, "{ranges:?}");
        }
    }

    #[test]
    fn clips_have_little_leading_and_trailing_silence() {
        for clip in clips() {
            let ranges = clip.speech_ranges();
            let first = ranges.first().expect("speech");
            let last = ranges.last().expect("speech");
            // 20 ms, plus a 10 ms frame of slack for the frame grid.
            assert!(first.start <= 240, "{}: starts at {}", clip.file, first.start);
            assert!(clip.samples.len() - last.end <= 240, "{}: {ranges:?}", clip.file);
        }
    }

    #[test]
    fn each_noise_over_ten_seconds_is_within_half_a_db_of_the_request() {
        for kind in NoiseKind::ALL {
            for (level, seed) in [(-24.0, 1), (-40.0, 7), (-30.0, 12_345)] {
                let samples = Noise::new(kind, level, seed).take_samples(TEN_SECONDS);
                let measured = dbfs(&samples);
                assert!((measured - level).abs() <= 0.5, "{kind:?} {level} dBFS: {measured}");
            }
        }
    }

    #[test]
    fn noises_are_deterministic_per_seed_and_differ_across_seeds() {
        for kind in NoiseKind::ALL {
            let first = Noise::new(kind, -30.0, 42).take_samples(4000);
            let again = Noise::new(kind, -30.0, 42).take_samples(4000);
            let other = Noise::new(kind, -30.0, 43).take_samples(4000);
            assert_eq!(first, again, "{kind:?}");
            assert_ne!(first, other, "{kind:?}");
        }
    }

    /// The mean power of `samples` in a band, from Goertzel bins every 50 Hz.
    fn band_power(samples: &[i16], low_hz: u32, high_hz: u32) -> f64 {
        let segment = 1600;
        let frequencies: Vec<f64> = (low_hz..=high_hz).step_by(50).map(f64::from).collect();
        let mut total = 0.0;
        let mut count = 0;
        for chunk in samples.chunks_exact(segment) {
            for &frequency in &frequencies {
                total += nixflex_pipeline::audio::tone::tone_power(chunk, SAMPLE_RATE, frequency);
                count += 1;
            }
        }
        total / f64::from(count)
    }

    #[test]
    fn white_noise_is_spectrally_flat_and_brown_is_dominated_by_low_frequencies() {
        let white = Noise::new(NoiseKind::White, -30.0, 3).take_samples(TEN_SECONDS);
        let brown = Noise::new(NoiseKind::Brown, -30.0, 3).take_samples(TEN_SECONDS);
        let pink = Noise::new(NoiseKind::Pink, -30.0, 3).take_samples(TEN_SECONDS);

        let ratio_db = |samples: &[i16]| {
            10.0 * (band_power(samples, 200, 600) / band_power(samples, 2400, 3400)).log10()
        };

        let white_db = ratio_db(&white);
        assert!(white_db.abs() < 1.5, "white: low/high {white_db} dB");
        let brown_db = ratio_db(&brown);
        // −6 dB per octave: about 17 dB between bands centred near 400 Hz and 2.9 kHz.
        assert!(brown_db > 12.0, "brown: low/high {brown_db} dB");
        let pink_db = ratio_db(&pink);
        assert!((4.0..12.0).contains(&pink_db), "pink: low/high {pink_db} dB");
    }

    #[test]
    fn rumble_stays_inside_the_phone_band() {
        let rumble = Noise::new(NoiseKind::Rumble, -30.0, 5).take_samples(TEN_SECONDS);

        let in_band = band_power(&rumble, 300, 600);
        let below = band_power(&rumble, 50, 150);
        assert!(in_band > 10.0 * below, "in band {in_band}, below {below}");
    }

    #[test]
    fn babble_is_made_of_sentences_of_several_voices() {
        let Generator::Babble(babble) = Generator::new(NoiseKind::Babble, 9) else {
            panic!("not a babble");
        };
        assert!(babble.talkers.len() >= 6);
        let mut voices = Vec::new();
        for talker in &babble.talkers {
            let clip = clips()
                .iter()
                .find(|clip| std::ptr::eq(clip.samples.as_slice(), talker.samples))
                .expect("a corpus clip");
            assert_eq!(clip.kind, ClipKind::Sentence);
            if !voices.contains(&clip.voice) {
                voices.push(clip.voice);
            }
        }
        assert!(voices.len() >= 4, "{voices:?}");
    }

    #[test]
    fn a_wobble_moves_the_level_slowly_around_the_request() {
        let mut noise = Noise::new(NoiseKind::White, -30.0, 1).with_wobble(6.0, 4.0);
        let samples = noise.take_samples(4 * SAMPLE_RATE as usize);
        let second = |index: usize| {
            let size = SAMPLE_RATE as usize / 4;
            // A quarter of a second centred on second `index + 1`.
            let start = (index + 1) * SAMPLE_RATE as usize - size / 2;
            dbfs(&samples[start..start + size])
        };
        // Up at 1 s, down at 3 s (a quarter and three quarters of the period).
        assert!((second(0) - (-24.0)).abs() < 1.0, "{} {}", second(0), second(2));
        assert!((second(2) - (-36.0)).abs() < 1.0, "{} {}", second(0), second(2));
    }

    #[test]
    fn noise_names_round_trip() {
        for kind in NoiseKind::ALL {
            assert_eq!(NoiseKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(NoiseKind::parse("Pink"), Some(NoiseKind::Pink));
        assert_eq!(NoiseKind::parse("violet"), None);
    }

    #[test]
    fn levels_scaling_and_mulaw_frames() {
        assert_eq!(dbfs(&[0; 100]), f64::NEG_INFINITY);
        let square = [-3277_i16, 3277].repeat(500);
        assert!((dbfs(&square) - (-20.0)).abs() < 0.01);
        let louder = scaled(&square, 6.0);
        assert!((dbfs(&louder) - (-14.0)).abs() < 0.01);
        let clip = &clips()[0];
        let quieter = scaled_to(&clip.samples, -26.0, true);
        let level = active_dbfs(&quieter);
        assert!((level - (-26.0)).abs() < 0.5, "{level}");

        let frames = to_mulaw_frames(&[1000; 200]);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1][40..], [mulaw::encode(0); 120]);
        assert_eq!(frames[0][0], mulaw::encode(1000));
    }
}
