//! Streaming rational resampler (polyphase windowed-sinc FIR) for speech, mainly 24 kHz,
//! 22.05 kHz and 16 kHz → 8 kHz.
//!
//! The prototype low-pass is a Kaiser-windowed sinc designed at `L × input rate` (L/M being the
//! reduced rate ratio), with its cut-off just under the lower Nyquist frequency and about 60 dB
//! of stop-band attenuation, so energy above 4 kHz does not fold back into the telephone band.
//! Filters are built once per rate pair and shared. State between calls is only the last
//! `taps - 1` input samples and the phase, so chunked input gives exactly the same output as
//! one big buffer: no clicks at chunk boundaries.

use std::collections::HashMap;
use std::f64::consts::PI;
use std::sync::{Arc, Mutex, OnceLock};

/// Stop-band attenuation the filters are designed for, in dB.
const ATTENUATION_DB: f64 = 60.0;
/// Width of the transition band, in Hz (the pass band ends about this much below the cut-off).
const TRANSITION_HZ: f64 = 1000.0;

/// Filters by `(input_rate, output_rate)`, built on first use.
type FilterCache = HashMap<(u32, u32), Arc<PolyphaseFilter>>;

/// One polyphase filter bank for an `input_rate → output_rate` pair.
#[derive(Debug)]
struct PolyphaseFilter {
    /// Interpolation factor L of the reduced ratio L/M.
    up: usize,
    /// Decimation factor M of the reduced ratio L/M.
    down: usize,
    /// Taps per phase.
    taps: usize,
    /// `up` phases of `taps` coefficients each, every phase stored oldest-sample-first.
    coefficients: Vec<f32>,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The zeroth-order modified Bessel function of the first kind (power series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..64 {
        let factor = half / f64::from(k);
        term *= factor * factor;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

impl PolyphaseFilter {
    fn design(input_rate: u32, output_rate: u32) -> Self {
        let divisor = gcd(u64::from(input_rate), u64::from(output_rate)).max(1);
        let up = usize::try_from(u64::from(output_rate) / divisor).unwrap_or(1).max(1);
        let down = usize::try_from(u64::from(input_rate) / divisor).unwrap_or(1).max(1);
        let input_rate = f64::from(input_rate);
        let nyquist = input_rate.min(f64::from(output_rate)) / 2.0;
        // Kaiser's formulas for the window length and shape.
        let transition = (TRANSITION_HZ.min(nyquist / 2.0)) / input_rate;
        let raw_taps = (ATTENUATION_DB - 7.95) / (14.36 * transition);
        let taps = ((raw_taps.ceil() as usize) | 1).max(3);
        let beta = 0.1102 * (ATTENUATION_DB - 8.7);
        // Cut-off a little under the Nyquist of the lower rate (for 8 kHz: pass band to about
        // 3.2 kHz, stop band from about 4.2 kHz, so what folds back lands above 3.8 kHz, outside
        // the telephone band), relative to the upsampled rate.
        let cutoff = (nyquist - 0.3 * TRANSITION_HZ.min(nyquist / 2.0)) / (input_rate * up as f64);
        let length = taps * up;
        let centre = (length as f64 - 1.0) / 2.0;
        let i0_beta = bessel_i0(beta);
        let mut prototype = Vec::with_capacity(length);
        for index in 0..length {
            let offset = index as f64 - centre;
            let sinc = if offset == 0.0 {
                2.0 * cutoff
            } else {
                (2.0 * PI * cutoff * offset).sin() / (PI * offset)
            };
            let ratio = offset / centre.max(1.0);
            let window = bessel_i0(beta * (1.0 - ratio * ratio).max(0.0).sqrt()) / i0_beta;
            prototype.push(sinc * window);
        }
        // Every phase gets unit gain at DC, so no phase is louder than another.
        let mut coefficients = vec![0.0_f32; length];
        for phase in 0..up {
            let sum: f64 = (0..taps).map(|tap| prototype[phase + tap * up]).sum();
            let scale = if sum.abs() > f64::EPSILON { 1.0 / sum } else { 0.0 };
            for tap in 0..taps {
                // Stored oldest-first: the newest input sample meets prototype[phase].
                coefficients[phase * taps + (taps - 1 - tap)] =
                    (prototype[phase + tap * up] * scale) as f32;
            }
        }
        Self { up, down, taps, coefficients }
    }

    fn shared(input_rate: u32, output_rate: u32) -> Arc<Self> {
        static FILTERS: OnceLock<Mutex<FilterCache>> = OnceLock::new();
        let filters = FILTERS.get_or_init(|| Mutex::new(HashMap::new()));
        let mut filters = match filters.lock() {
            Ok(guard) => guard,
            // A panic while designing a filter cannot leave the map half-written.
            Err(poisoned) => poisoned.into_inner(),
        };
        filters
            .entry((input_rate, output_rate))
            .or_insert_with(|| Arc::new(Self::design(input_rate, output_rate)))
            .clone()
    }
}

/// A streaming resampler of mono 16-bit PCM.
#[derive(Debug)]
pub struct Resampler {
    /// `None` when input and output rates are equal (samples pass through).
    filter: Option<Arc<PolyphaseFilter>>,
    /// Input history: the last `taps - 1` consumed samples followed by unconsumed ones.
    history: Vec<f32>,
    /// Index in `history` of the newest input sample the next output needs.
    next: usize,
    /// Phase (0..up) of the next output sample.
    phase: usize,
}

impl Resampler {
    /// A resampler from `input_rate` to `output_rate` (Hz). Rates of 0 are treated as equal
    /// rates (pass-through) rather than panicking.
    pub fn new(input_rate: u32, output_rate: u32) -> Self {
        if input_rate == output_rate || input_rate == 0 || output_rate == 0 {
            return Self { filter: None, history: Vec::new(), next: 0, phase: 0 };
        }
        let filter = PolyphaseFilter::shared(input_rate, output_rate);
        let taps = filter.taps;
        Self { filter: Some(filter), history: vec![0.0; taps - 1], next: taps - 1, phase: 0 }
    }

    /// The number of taps per output sample (0 for pass-through); a measure of CPU cost.
    pub fn taps(&self) -> usize {
        self.filter.as_ref().map_or(0, |filter| filter.taps)
    }

    /// Resamples `input` and appends the output samples to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        let Some(filter) = self.filter.as_deref() else {
            out.extend_from_slice(input);
            return;
        };
        self.history.extend(input.iter().map(|&sample| f32::from(sample)));
        let taps = filter.taps;
        while self.next < self.history.len() {
            let window = &self.history[self.next + 1 - taps..=self.next];
            let coefficients = &filter.coefficients[self.phase * taps..(self.phase + 1) * taps];
            let value: f32 = window.iter().zip(coefficients).map(|(x, h)| x * h).sum();
            out.push(value.round().clamp(-32768.0, 32767.0) as i16);
            self.phase += filter.down;
            self.next += self.phase / filter.up;
            self.phase %= filter.up;
        }
        // Keep only the samples the next outputs still need.
        let keep_from = (self.next + 1).saturating_sub(taps).min(self.history.len());
        if keep_from > 0 {
            self.history.drain(..keep_from);
            self.next -= keep_from;
        }
    }

    /// Pushes enough silence through the filter to emit the tail still held in its delay line.
    /// Call once at the end of a stream.
    pub fn flush(&mut self, out: &mut Vec<i16>) {
        let Some(taps) = self.filter.as_ref().map(|filter| filter.taps) else {
            return;
        };
        let silence = vec![0_i16; taps / 2];
        self.process(&silence, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::tone::{sine, tone_power};

    fn resample_all(input: &[i16], from: u32, to: u32) -> Vec<i16> {
        let mut resampler = Resampler::new(from, to);
        let mut out = Vec::new();
        resampler.process(input, &mut out);
        out
    }

    /// Power of the `frequency` tone in `samples` relative to a full-amplitude tone, in dB.
    fn level_db(samples: &[i16], rate: u32, frequency: f64, amplitude: f64) -> f64 {
        10.0 * (tone_power(samples, rate, frequency) / (amplitude * amplitude / 2.0)).log10()
    }

    #[test]
    fn output_length_follows_the_rate_ratio() {
        for (from, n_in, n_out) in [(24_000, 2400, 800), (16_000, 1600, 800), (22_050, 2205, 800)] {
            let out = resample_all(&vec![0; n_in], from, 8000);
            assert!(out.len().abs_diff(n_out) <= 1, "{from}: {} outputs", out.len());
        }
    }

    #[test]
    fn a_one_kilohertz_tone_keeps_its_frequency_and_level_at_every_source_rate() {
        for from in [24_000, 22_050, 16_000] {
            let input = sine(1000.0, from, from as usize, 10_000.0);
            let out = resample_all(&input, from, 8000);
            // Skip the filter's start-up.
            let settled = &out[200..];
            let at_1k = level_db(settled, 8000, 1000.0, 10_000.0);
            let at_1k2 = level_db(settled, 8000, 1200.0, 10_000.0);
            assert!(at_1k.abs() < 0.5, "{from}: 1 kHz level {at_1k:.2} dB");
            assert!(at_1k2 < -30.0, "{from}: leakage at 1.2 kHz {at_1k2:.2} dB");
        }
    }

    #[test]
    fn tones_in_the_telephone_band_pass_nearly_unchanged() {
        for frequency in [300.0, 2000.0, 3000.0] {
            let input = sine(frequency, 24_000, 24_000, 10_000.0);
            let out = resample_all(&input, 24_000, 8000);
            let level = level_db(&out[200..], 8000, frequency, 10_000.0);
            assert!(level.abs() < 1.0, "{frequency} Hz: {level:.2} dB");
        }
    }

    #[test]
    fn tones_above_four_kilohertz_do_not_alias_into_the_telephone_band() {
        // Without a low-pass, 6 kHz at 24 kHz decimated by 3 folds onto 2 kHz, and 5 kHz at
        // 16 kHz decimated by 2 folds onto 3 kHz.
        for (from, frequency, alias) in
            [(24_000, 6000.0, 2000.0), (16_000, 5000.0, 3000.0), (22_050, 7000.0, 1000.0)]
        {
            let input = sine(frequency, from, from as usize, 10_000.0);
            let out = resample_all(&input, from, 8000);
            let level = level_db(&out[200..], 8000, alias, 10_000.0);
            assert!(level < -50.0, "{from} Hz source, {frequency} Hz tone: alias at {level:.1} dB");
        }
    }

    #[test]
    fn chunked_input_gives_exactly_the_output_of_one_buffer() {
        for from in [24_000, 22_050, 16_000] {
            let input = sine(440.0, from, from as usize / 2, 12_000.0);
            let whole = resample_all(&input, from, 8000);
            let mut resampler = Resampler::new(from, 8000);
            let mut chunked = Vec::new();
            let mut start = 0;
            for size in [1, 7, 160, 333, 2, 480, 1000].iter().cycle() {
                if start >= input.len() {
                    break;
                }
                let end = (start + size).min(input.len());
                resampler.process(&input[start..end], &mut chunked);
                start = end;
            }
            assert_eq!(chunked, whole, "{from}");
        }
    }

    #[test]
    fn flush_emits_the_tail_held_in_the_filter() {
        let input = sine(440.0, 24_000, 2400, 12_000.0);
        let mut resampler = Resampler::new(24_000, 8000);
        let mut out = Vec::new();
        resampler.process(&input, &mut out);
        let before = out.len();
        resampler.flush(&mut out);
        assert!(out.len() > before);
        assert!(out.len() <= 800 + resampler.taps() / 6 + 1);
    }

    #[test]
    fn equal_rates_pass_samples_through() {
        let input = [1_i16, -2, 3];
        assert_eq!(resample_all(&input, 8000, 8000), input);
        assert_eq!(Resampler::new(8000, 8000).taps(), 0);
    }

    #[test]
    fn filters_stay_short_enough_for_a_thousand_calls() {
        assert!(Resampler::new(24_000, 8000).taps() < 160);
        assert!(Resampler::new(22_050, 8000).taps() < 160);
        assert!(Resampler::new(16_000, 8000).taps() < 120);
    }
}
