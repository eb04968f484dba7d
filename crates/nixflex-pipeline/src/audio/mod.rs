//! Pure audio helpers for the telephony path: G.711 μ-law, resampling to 8 kHz, WAV headers,
//! 20 ms framing, and the streaming PCM → μ-law converter every TTS adapter shares.
//!
//! Nothing here allocates per sample or awaits; the converters keep just enough state to work
//! chunk by chunk without clicks at chunk boundaries. Telephony audio is 8 kHz mono: one μ-law
//! byte per sample, 160 bytes per 20 ms frame.

mod convert;
mod frame;
pub mod mulaw;
mod resample;
pub mod tone;
pub mod wav;

pub use convert::PcmToMulaw;
pub use frame::MulawFramer;
pub use resample::Resampler;

/// The telephony sample rate.
pub const TELEPHONY_SAMPLE_RATE: u32 = 8000;

/// μ-law bytes (= samples) in one 20 ms telephony frame.
pub const MULAW_FRAME_BYTES: usize = 160;

/// The μ-law code of silence.
pub const MULAW_SILENCE: u8 = 0xFF;

/// Decodes little-endian signed 16-bit PCM bytes into samples, ignoring a trailing odd byte.
pub fn pcm16le_to_samples(bytes: &[u8]) -> Vec<i16> {
    bytes.chunks_exact(2).map(|pair| i16::from_le_bytes([pair[0], pair[1]])).collect()
}

/// Encodes samples as little-endian signed 16-bit PCM bytes.
pub fn samples_to_pcm16le(samples: &[i16]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(samples.len() * 2);
    for sample in samples {
        bytes.extend_from_slice(&sample.to_le_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcm16le_round_trips_and_ignores_a_trailing_odd_byte() {
        let samples = [0_i16, 1, -1, i16::MAX, i16::MIN, 1234];
        let mut bytes = samples_to_pcm16le(&samples);
        assert_eq!(&bytes[..4], &[0, 0, 1, 0]);
        bytes.push(0x7F);
        assert_eq!(pcm16le_to_samples(&bytes), samples);
    }
}
