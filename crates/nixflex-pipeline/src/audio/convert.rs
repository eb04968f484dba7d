//! The shared PCM → 8 kHz μ-law converter of every TTS adapter (resampling lives here, not in
//! each vendor client).

use crate::audio::{Resampler, TELEPHONY_SAMPLE_RATE, mulaw};

/// Converts a stream of little-endian 16-bit mono PCM at any rate into 8 kHz μ-law, chunk by
/// chunk. Chunks may split a sample in two: the odd byte is carried to the next chunk.
#[derive(Debug)]
pub struct PcmToMulaw {
    /// The source rate.
    input_rate: u32,
    /// Source rate → 8 kHz.
    resampler: Resampler,
    /// A byte left over when a chunk ended in the middle of a sample.
    carry: Option<u8>,
    /// Reused buffers (decoded input and resampled output), kept to avoid allocating per chunk.
    samples: Vec<i16>,
    resampled: Vec<i16>,
}

impl PcmToMulaw {
    /// A converter from `input_rate` Hz PCM.
    pub fn new(input_rate: u32) -> Self {
        Self {
            input_rate,
            resampler: Resampler::new(input_rate, TELEPHONY_SAMPLE_RATE),
            carry: None,
            samples: Vec::new(),
            resampled: Vec::new(),
        }
    }

    /// The source rate.
    pub fn input_rate(&self) -> u32 {
        self.input_rate
    }

    /// Converts the next PCM bytes; returns the μ-law bytes now available (possibly none).
    pub fn push(&mut self, pcm: &[u8]) -> Vec<u8> {
        self.samples.clear();
        let mut bytes = pcm;
        if let Some(low) = self.carry.take() {
            if let Some((&high, rest)) = bytes.split_first() {
                self.samples.push(i16::from_le_bytes([low, high]));
                bytes = rest;
            } else {
                self.carry = Some(low);
                return Vec::new();
            }
        }
        let mut pairs = bytes.chunks_exact(2);
        self.samples.extend(pairs.by_ref().map(|pair| i16::from_le_bytes([pair[0], pair[1]])));
        self.carry = pairs.remainder().first().copied();
        self.resampled.clear();
        self.resampler.process(&self.samples, &mut self.resampled);
        mulaw::encode_all(&self.resampled)
    }

    /// Ends the stream: returns the μ-law of the samples still held in the resampler.
    pub fn finish(&mut self) -> Vec<u8> {
        self.carry = None;
        self.resampled.clear();
        self.resampler.flush(&mut self.resampled);
        mulaw::encode_all(&self.resampled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::samples_to_pcm16le;
    use crate::audio::tone::{sine, tone_power};

    #[test]
    fn eight_kilohertz_pcm_is_only_companded() {
        let samples = [0_i16, 1000, -1000, 32767];
        let mut converter = PcmToMulaw::new(8000);
        let out = converter.push(&samples_to_pcm16le(&samples));
        assert_eq!(out, mulaw::encode_all(&samples));
        assert!(converter.finish().is_empty());
    }

    #[test]
    fn chunks_that_split_samples_give_the_same_output_as_whole_buffers() {
        let pcm = samples_to_pcm16le(&sine(700.0, 24_000, 4800, 9000.0));
        let mut whole = PcmToMulaw::new(24_000);
        let mut expected = whole.push(&pcm);
        expected.extend(whole.finish());

        let mut chunked = PcmToMulaw::new(24_000);
        let mut out = Vec::new();
        for piece in pcm.chunks(333) {
            out.extend(chunked.push(piece));
        }
        out.extend(chunked.push(&[]));
        out.extend(chunked.finish());
        assert_eq!(out, expected);
    }

    #[test]
    fn a_24_khz_tone_comes_out_as_the_same_tone_at_8_khz() {
        let pcm = samples_to_pcm16le(&sine(1000.0, 24_000, 24_000, 9000.0));
        let mut converter = PcmToMulaw::new(24_000);
        let mut out = converter.push(&pcm);
        out.extend(converter.finish());
        assert!(out.len().abs_diff(8000) < 40, "{}", out.len());
        let decoded = mulaw::decode_all(&out);
        let power = tone_power(&decoded[100..7900], 8000, 1000.0);
        let expected = 9000.0 * 9000.0 / 2.0;
        assert!((power / expected - 1.0).abs() < 0.05, "{power}");
    }
}
