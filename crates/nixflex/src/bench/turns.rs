//! `nixflex bench turns`: turn-taking in noisy rooms (docs/engine.md#turn-taking,
//! docs/benchmarks.md#turn-taking).
//!
//! Runs the engine's own turn-taking parts — [`Vad`], [`BargeIn`] and [`TurnDetector`], exactly as
//! a call uses them, one 20 ms μ-law frame at a time — over the corpus of
//! `nixflex_testkit::corpus` (espeak-ng voices, phone-band) mixed with each kind of noise at
//! each level, for two detectors: `voicing` (today's: loud *and* periodic, interruptions
//! confirmed by words) and `energy` (the energy-only detector it replaced, where any speech over
//! the threshold interrupts). Per condition it reports:
//! - **false speech starts**: speech starts in 30 s of noise alone — each opens a caller turn in
//!   the engine (the recogniser is asked for its result, the silence clock stops), answered if
//!   the recogniser returns words;
//! - **false barge-ins**: interruptions in the same 30 s while the agent speaks throughout;
//! - **missed barge-ins**: interruption clips ("Wait, stop, that's wrong.", ~1.2 s, 4 voices)
//!   spoken over the agent at 10 dB SNR that did not interrupt it before they ended, and the
//!   p50 time from their first sound to the interruption;
//! - **backchannel interruptions**: "mm-hm", "yeah", "okay", "right", "uh-huh" (4 voices) over
//!   the agent that interrupted it;
//! - **end of turn**: for sentences (and sentences with a 500 ms pause inside) at 10 dB SNR with
//!   the agent silent, the time from the last sound of the sentence to the end of the caller's
//!   turn, p50 / p95 (of the turns that ended), **split** turns (ended inside the sentence) and
//!   turns **not ended** within the 2 s of background after the sentence.
//!
//! The recogniser is modelled, not run: it reveals the clip's words one more every 300 ms after
//! the speech starts (like the Deepgram emulator's interim results), its final transcript at
//! the speech's end, its endpoint (`speech_final`) `response_eagerness` after it and its
//! utterance end 1 s after it — the best a recogniser can do; `--endpoints utterance-end`
//! holds its endpoint back, `--endpoints none` leaves out both, so end-of-turn times are the
//! detector's own; `--stt-delay-ms` delays every result by as much. Noise yields no words.
//! Numbers go in docs/benchmarks.md, never into timed tests.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use nixflex_engine::vad::{BargeIn, TurnDetector, Vad, VadConfig, VadEvent, Words, classify_words};
use nixflex_pipeline::stt::UTTERANCE_END_GAP;
use nixflex_testkit::corpus::{self, Clip, ClipKind, Noise, NoiseKind};

/// One 20 ms frame.
const FRAME: Duration = Duration::from_millis(20);
const FRAME_SAMPLES: usize = 160;

/// Seconds of noise alone per condition.
const NOISE_ONLY_SECONDS: usize = 30;

/// The speech level with no noise (dBFS, active speech).
const CLEAN_SPEECH_DBFS: f64 = -20.0;

/// Arguments of `nixflex bench turns`.
#[derive(Debug, Args)]
pub struct TurnsBenchArgs {
    /// Noise levels in dBFS (RMS), comma-separated; `clean` is always measured too.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true, default_value = "-40,-30,-24")]
    pub levels: Vec<f64>,
    /// Noise kinds (white, pink, brown, rumble, babble), comma-separated; default all.
    #[arg(long, value_delimiter = ',')]
    pub noises: Vec<String>,
    /// Speech over noise, in dB above the noise's level.
    #[arg(long, default_value_t = 10.0)]
    pub snr: f64,
    /// The agent's `interruption_sensitivity`.
    #[arg(long, default_value_t = 50)]
    pub sensitivity: u8,
    /// The agent's `response_eagerness` in ms.
    #[arg(long, default_value_t = 200)]
    pub eagerness_ms: u64,
    /// Detectors to compare: `voicing`, `energy`, or both (default).
    #[arg(long, value_delimiter = ',', default_value = "voicing,energy")]
    pub detectors: Vec<String>,
    /// Noise seeds per condition (each a different stretch of noise).
    #[arg(long, default_value_t = 2)]
    pub seeds: u64,
    /// What the modelled recogniser says when the caller's words end: `all` (its endpoint and
    /// its utterance end), `utterance-end` (its endpoint held back, as by a crowd it hears as
    /// speech), or `none` (the detector alone ends turns, as before they counted).
    #[arg(long, value_enum, default_value_t = Endpoints::All)]
    pub endpoints: Endpoints,
    /// How long after the audio the modelled recogniser's results arrive, in ms: its words, its
    /// final transcript, its endpoint and its utterance end alike (0: at once, the best case; a
    /// real streaming recogniser answers some 100–300 ms after the audio).
    #[arg(long, default_value_t = 0)]
    pub stt_delay_ms: u64,
}

/// The recogniser's signals that the caller's words ended, in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Endpoints {
    /// `speech_final` `response_eagerness` after the words, `UtteranceEnd` 1 s after.
    All,
    /// Only `UtteranceEnd`, 1 s after the words.
    UtteranceEnd,
    /// Neither.
    None,
}

/// A detector under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detector {
    /// Loud and periodic, interruptions confirmed by words.
    Voicing,
    /// Energy over an adaptive floor only; any long enough speech interrupts.
    Energy,
}

impl Detector {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "voicing" => Some(Self::Voicing),
            "energy" => Some(Self::Energy),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Voicing => "voicing",
            Self::Energy => "energy",
        }
    }

    fn vad(self) -> Vad {
        match self {
            Self::Voicing => Vad::default(),
            Self::Energy => Vad::new(VadConfig {
                start_margin_db: 10.0,
                hysteresis_db: 4.0,
                min_periodicity: 0.0,
                background_margin_db: 0.0,
                ..VadConfig::default()
            }),
        }
    }

    /// What the barge-in rule sees of the recogniser's words.
    fn words(self, heard: Words) -> Words {
        match self {
            Self::Voicing => heard,
            Self::Energy => Words::Content,
        }
    }
}

/// The background of a condition.
#[derive(Debug, Clone, Copy)]
struct Background {
    noise: Option<NoiseKind>,
    dbfs: f64,
}

impl Background {
    fn name(self) -> String {
        match self.noise {
            None => "clean".to_owned(),
            Some(kind) => format!("{} {:.0} dBFS", kind.name(), self.dbfs),
        }
    }

    fn speech_dbfs(self, snr: f64) -> f64 {
        match self.noise {
            None => CLEAN_SPEECH_DBFS,
            Some(_) => self.dbfs + snr,
        }
    }

    fn noise(self, seed: u64) -> Option<Noise> {
        self.noise.map(|kind| Noise::new(kind, self.dbfs, seed).with_wobble(3.0, 7.0))
    }
}

/// What one condition measured.
#[derive(Debug, Default)]
struct Outcome {
    false_speech: usize,
    false_barge_ins: usize,
    interruptions: usize,
    missed_barge_ins: usize,
    barge_in_latency: Vec<Duration>,
    backchannels: usize,
    backchannel_interruptions: usize,
    turns: usize,
    split_turns: usize,
    /// Turns still open at the end of the 2 s of background after the sentence.
    unended_turns: usize,
    end_of_turn: Vec<Duration>,
    frames: u64,
    vad_time: Duration,
}

/// A running simulation of one call's caller side.
struct Line {
    vad: Vad,
    barge_in: BargeIn,
    turns: TurnDetector,
    detector: Detector,
    now: Duration,
    frames: u64,
    vad_time: Duration,
}

impl Line {
    fn new(detector: Detector, sensitivity: u8, eagerness: Duration) -> Self {
        let vad = detector.vad();
        let hangover = vad.config().hangover;
        Self {
            vad,
            barge_in: BargeIn::new(sensitivity),
            turns: TurnDetector::new(eagerness, hangover),
            detector,
            now: Duration::ZERO,
            frames: 0,
            vad_time: Duration::ZERO,
        }
    }

    /// One frame; returns the VAD event and whether the agent was interrupted.
    fn frame(
        &mut self,
        samples: &[i16],
        agent_playing: bool,
        heard: Words,
    ) -> (Option<VadEvent>, bool) {
        let mut mulaw = [0_u8; FRAME_SAMPLES];
        for (code, &sample) in mulaw.iter_mut().zip(samples) {
            *code = nixflex_pipeline::audio::mulaw::encode(sample);
        }
        let started = Instant::now();
        let event = self.vad.push_frame(&mulaw);
        self.vad_time += started.elapsed();
        self.frames += 1;
        self.now += FRAME;
        if let Some(event) = event {
            self.turns.on_vad(event, self.now);
        }
        let words =
            if self.vad.is_speaking() { self.detector.words(heard) } else { Words::Nothing };
        let fired = self.barge_in.on_frame(self.vad.speech_ms(), FRAME, agent_playing, words);
        (event, fired)
    }
}

/// The words a recogniser has revealed `elapsed` after the speech of `text` started: one more
/// every 300 ms.
fn revealed(text: &str, elapsed: Duration) -> Words {
    let n_words = usize::try_from(elapsed.as_millis() / 300).unwrap_or(usize::MAX);
    let partial: Vec<&str> = text.split_whitespace().take(n_words).collect();
    classify_words(&partial.join(" "))
}

/// `n` samples of the background (silence without noise).
fn background(noise: &mut Option<Noise>, n_samples: usize) -> Vec<i16> {
    match noise {
        Some(noise) => noise.take_samples(n_samples),
        None => vec![0; n_samples],
    }
}

/// A clip scaled to `dbfs` with the background mixed in, preceded by `lead` of background.
fn mixed(
    clip: &Clip,
    dbfs: f64,
    noise: &mut Option<Noise>,
    lead: usize,
    tail: usize,
) -> (Vec<i16>, usize) {
    let mut samples = background(noise, lead);
    let mut speech = corpus::scaled_to(&clip.samples, dbfs, true);
    if let Some(noise) = noise {
        noise.add_to(&mut speech);
    }
    samples.extend_from_slice(&speech);
    samples.extend(background(noise, tail));
    (samples, lead)
}

fn measure(
    detector: Detector,
    background_of: Background,
    args: &TurnsBenchArgs,
    seed: u64,
    outcome: &mut Outcome,
) {
    let eagerness = Duration::from_millis(args.eagerness_ms);
    let stt_delay = Duration::from_millis(args.stt_delay_ms);
    let new_line = || Line::new(detector, args.sensitivity, eagerness);
    let speech_dbfs = background_of.speech_dbfs(args.snr);

    // Noise alone, the agent speaking throughout.
    let mut noise = background_of.noise(seed);
    let mut line = new_line();
    let samples = background(&mut noise, NOISE_ONLY_SECONDS * corpus::SAMPLE_RATE as usize);
    for frame in samples.chunks_exact(FRAME_SAMPLES) {
        let (event, fired) = line.frame(frame, true, Words::Nothing);
        outcome.false_speech += usize::from(event == Some(VadEvent::SpeechStarted));
        outcome.false_barge_ins += usize::from(fired);
    }
    outcome.frames += line.frames;
    outcome.vad_time += line.vad_time;

    // Interruptions and backchannels over the agent, each on a line whose floor has settled
    // on 2 s of the background.
    for kind in [ClipKind::Interruption, ClipKind::Backchannel] {
        for clip in corpus::clips_of(kind) {
            let mut line = new_line();
            let (samples, onset) = mixed(clip, speech_dbfs, &mut noise, 2 * 8000, 8000);
            let clip_end = onset + clip.samples.len();
            let mut fired_at = None;
            for (index, frame) in samples.chunks_exact(FRAME_SAMPLES).enumerate() {
                let at = index * FRAME_SAMPLES;
                let heard = match corpus::samples_duration(at.saturating_sub(onset))
                    .checked_sub(stt_delay)
                {
                    Some(elapsed) if at >= onset => revealed(clip.text, elapsed),
                    _ => Words::Nothing,
                };
                let (_, fired) = line.frame(frame, true, heard);
                if fired && fired_at.is_none() {
                    fired_at = Some(at + FRAME_SAMPLES);
                }
            }
            outcome.frames += line.frames;
            outcome.vad_time += line.vad_time;
            match kind {
                ClipKind::Interruption => {
                    outcome.interruptions += 1;
                    match fired_at {
                        Some(at) if at >= onset && at <= clip_end => {
                            outcome.barge_in_latency.push(corpus::samples_duration(at - onset))
                        }
                        _ => outcome.missed_barge_ins += 1,
                    }
                }
                _ => {
                    outcome.backchannels += 1;
                    outcome.backchannel_interruptions += usize::from(fired_at.is_some());
                }
            }
        }
    }

    // Caller turns with the agent silent.
    for clip in corpus::clips_of(ClipKind::Sentence).chain(corpus::clips_of(ClipKind::Paused)) {
        let mut line = new_line();
        let (samples, onset) = mixed(clip, speech_dbfs, &mut noise, 2 * 8000, 2 * 8000);
        let speech_end =
            onset + clip.speech_ranges().last().map_or(clip.samples.len(), |range| range.end);
        let true_end = corpus::samples_duration(speech_end);
        let final_at = true_end + stt_delay;
        let endpoint = true_end + eagerness + stt_delay;
        let utterance_end = true_end + UTTERANCE_END_GAP + stt_delay;
        let (mut final_sent, mut endpoint_sent, mut utterance_end_sent) = (false, false, false);
        let mut ended = None;
        for frame in samples.chunks_exact(FRAME_SAMPLES) {
            line.frame(frame, false, Words::Nothing);
            if !final_sent && line.now >= final_at {
                final_sent = true;
                line.turns.on_final_transcript(clip.text, line.now);
            }
            // The recogniser's endpoint and its utterance end.
            if args.endpoints == Endpoints::All && !endpoint_sent && line.now >= endpoint {
                endpoint_sent = true;
                line.turns.on_endpoint(line.now, eagerness);
            }
            if args.endpoints != Endpoints::None && !utterance_end_sent && line.now >= utterance_end
            {
                utterance_end_sent = true;
                line.turns.on_words_ended(line.now, UTTERANCE_END_GAP);
            }
            if let Some(turn) = line.turns.poll(line.now) {
                let _ = turn;
                ended.get_or_insert(line.now);
            }
        }
        outcome.frames += line.frames;
        outcome.vad_time += line.vad_time;
        outcome.turns += 1;
        match ended {
            Some(at) if at >= true_end => outcome.end_of_turn.push(at - true_end),
            Some(_) => outcome.split_turns += 1,
            None => outcome.unended_turns += 1,
        }
    }
}

fn percentile(values: &mut [Duration], p: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    values.sort();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let index = ((values.len() - 1) as f64 * p).round() as usize;
    values.get(index).copied()
}

fn ms(value: Option<Duration>) -> String {
    value.map_or_else(|| "—".to_owned(), |value| format!("{}", value.as_millis()))
}

/// Runs the benchmark and prints a Markdown table.
#[allow(clippy::print_stdout, reason = "the report is the command's output")]
pub fn run(args: &TurnsBenchArgs) -> anyhow::Result<()> {
    let detectors = args
        .detectors
        .iter()
        .map(|name| {
            Detector::parse(name).ok_or_else(|| anyhow::anyhow!("unknown detector {name:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let kinds = if args.noises.is_empty() {
        NoiseKind::ALL.to_vec()
    } else {
        args.noises
            .iter()
            .map(|name| {
                NoiseKind::parse(name).ok_or_else(|| anyhow::anyhow!("unknown noise {name:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    if args.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let mut backgrounds = vec![Background { noise: None, dbfs: f64::NEG_INFINITY }];
    for &kind in &kinds {
        for &dbfs in &args.levels {
            backgrounds.push(Background { noise: Some(kind), dbfs });
        }
    }
    println!(
        "sensitivity {}, eagerness {} ms, speech {} dB over the noise, {} s of noise alone × {} seeds per row, recogniser endpoints: {:?}, its results {} ms after the audio",
        args.sensitivity,
        args.eagerness_ms,
        args.snr,
        NOISE_ONLY_SECONDS,
        args.seeds,
        args.endpoints,
        args.stt_delay_ms
    );
    println!();
    println!(
        "| detector | background | false speech starts | false barge-ins | missed barge-ins | barge-in p50 ms | backchannel interruptions | end of turn p50 / p95 ms | split turns | not ended within 2 s | µs per frame |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for detector in detectors {
        for &background_of in &backgrounds {
            let mut outcome = Outcome::default();
            for seed in 1..=args.seeds {
                measure(detector, background_of, args, seed, &mut outcome);
            }
            let p50 = percentile(&mut outcome.barge_in_latency, 0.5);
            let eot50 = percentile(&mut outcome.end_of_turn, 0.5);
            let eot95 = percentile(&mut outcome.end_of_turn, 0.95);
            #[allow(clippy::cast_precision_loss)]
            let per_frame = outcome.vad_time.as_secs_f64() * 1e6 / outcome.frames.max(1) as f64;
            println!(
                "| {} | {} | {} | {} | {} / {} | {} | {} / {} | {} / {} | {} / {} | {} / {} | {:.2} |",
                detector.name(),
                background_of.name(),
                outcome.false_speech,
                outcome.false_barge_ins,
                outcome.missed_barge_ins,
                outcome.interruptions,
                ms(p50),
                outcome.backchannel_interruptions,
                outcome.backchannels,
                ms(eot50),
                ms(eot95),
                outcome.split_turns,
                outcome.turns,
                outcome.unended_turns,
                outcome.turns,
                per_frame,
            );
        }
    }
    Ok(())
}
