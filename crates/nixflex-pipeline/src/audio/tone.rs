//! Deterministic test tones and simple measurements.
//!
//! The emulators in `nixflex-testkit` use [`text_tone`] as a stand-in voice whose length is
//! proportional to the text, so tests can check timing and pacing; tests use [`tone_power`]
//! (a windowed Goertzel filter) and [`rms`] to check what came out.

use std::f64::consts::PI;

/// `n_samples` of a sine at `frequency` Hz and peak `amplitude`, sampled at `sample_rate`.
pub fn sine(frequency: f64, sample_rate: u32, n_samples: usize, amplitude: f64) -> Vec<i16> {
    let step = 2.0 * PI * frequency / f64::from(sample_rate);
    (0..n_samples).map(|n| to_sample(amplitude * (step * n as f64).sin())).collect()
}

fn to_sample(value: f64) -> i16 {
    value.round().clamp(-32768.0, 32767.0) as i16
}

/// The frequency [`text_tone`] uses for a character: letters and digits get one of 16 pitches
/// between 300 and 1050 Hz; everything else (spaces, punctuation) is a soft 200 Hz hum.
pub fn char_frequency(character: char) -> f64 {
    if character.is_alphanumeric() {
        300.0 + f64::from(u32::from(character) % 16) * 50.0
    } else {
        200.0
    }
}

/// A placeholder "voice" for `text`: `ms_per_char` milliseconds of tone per character, with
/// the pitch of [`char_frequency`], continuous phase (no clicks), and 5 ms fades at both ends.
/// Letters are at amplitude 8000, other characters at 2000, so a voice activity detector sees
/// one continuous utterance.
pub fn text_tone(text: &str, sample_rate: u32, ms_per_char: u32) -> Vec<i16> {
    let per_char = (u64::from(sample_rate) * u64::from(ms_per_char) / 1000) as usize;
    let n_chars = text.chars().count();
    let mut samples = Vec::with_capacity(per_char * n_chars);
    let mut phase = 0.0_f64;
    for character in text.chars() {
        let step = 2.0 * PI * char_frequency(character) / f64::from(sample_rate);
        let amplitude = if character.is_alphanumeric() { 8000.0 } else { 2000.0 };
        for _ in 0..per_char {
            samples.push(to_sample(amplitude * phase.sin()));
            phase = (phase + step) % (2.0 * PI);
        }
    }
    let fade = (sample_rate as usize / 200).min(samples.len() / 2);
    let total = samples.len();
    for index in 0..fade {
        let gain = index as f64 / fade as f64;
        samples[index] = to_sample(f64::from(samples[index]) * gain);
        samples[total - 1 - index] = to_sample(f64::from(samples[total - 1 - index]) * gain);
    }
    samples
}

/// The power of the `frequency` component of `samples`, scaled so that a sine of peak `A`
/// at exactly that frequency measures `A² / 2` (Hann-windowed Goertzel).
pub fn tone_power(samples: &[i16], sample_rate: u32, frequency: f64) -> f64 {
    let n_samples = samples.len();
    if n_samples < 2 {
        return 0.0;
    }
    let omega = 2.0 * PI * frequency / f64::from(sample_rate);
    let coefficient = 2.0 * omega.cos();
    let (mut previous, mut before_previous) = (0.0_f64, 0.0_f64);
    let mut window_sum = 0.0;
    for (index, &sample) in samples.iter().enumerate() {
        let window = 0.5 - 0.5 * (2.0 * PI * index as f64 / (n_samples - 1) as f64).cos();
        window_sum += window;
        let current = window * f64::from(sample) + coefficient * previous - before_previous;
        before_previous = previous;
        previous = current;
    }
    let magnitude_squared = previous * previous + before_previous * before_previous
        - coefficient * previous * before_previous;
    2.0 * magnitude_squared / (window_sum * window_sum)
}

/// Root mean square of `samples` (0 for none).
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&sample| f64::from(sample) * f64::from(sample)).sum();
    (sum / samples.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_power_of_a_pure_sine_is_half_its_squared_amplitude() {
        let samples = sine(1000.0, 8000, 8000, 1000.0);
        let power = tone_power(&samples, 8000, 1000.0);
        assert!((power / 500_000.0 - 1.0).abs() < 0.01, "{power}");
        assert!(tone_power(&samples, 8000, 1500.0) < 1.0);
        assert!((rms(&samples) - 1000.0 / 2_f64.sqrt()).abs() < 1.0);
    }

    #[test]
    fn text_tone_lasts_the_configured_time_per_character_and_starts_and_ends_quietly() {
        let samples = text_tone("hello world", 24_000, 60);
        assert_eq!(samples.len(), 11 * 24 * 60);
        assert_eq!(samples[0], 0);
        assert!(samples.last().is_some_and(|sample| sample.abs() < 100));
        assert!(rms(&samples[2400..4800]) > 4000.0);
    }

    #[test]
    fn text_tone_is_deterministic() {
        assert_eq!(text_tone("abc", 16_000, 10), text_tone("abc", 16_000, 10));
        assert_ne!(text_tone("abc", 16_000, 10), text_tone("abd", 16_000, 10));
    }
}
