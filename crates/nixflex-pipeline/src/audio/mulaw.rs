//! G.711 μ-law (ITU-T G.711, North American/Japanese companding), table based.
//!
//! G.711 companding is defined on 14-bit linear samples, so a 16-bit sample is first shifted
//! right by two (as the ITU-T G.191 reference tools do). Both directions are lookup tables
//! built at compile time: 16 384 entries for encoding (one per 14-bit value) and 256 for
//! decoding. The tests check them against the standard's decoder values and against the
//! `audio-codec-algorithms` crate on every input.

/// The μ-law code of every 14-bit linear value, indexed by its two's-complement bits.
const ENCODE: [u8; 16_384] = build_encode_table();

/// The linear value of every μ-law code.
const DECODE: [i16; 256] = build_decode_table();

const BIAS: i32 = 0x84;

const fn encode_14_bit(value: i32) -> u8 {
    // Negative values use the one's complement, so -1 and 0 share the zero code magnitude.
    let (sign, magnitude) = if value < 0 { (0x80_u8, -value - 1) } else { (0x00_u8, value) };
    let biased = magnitude + 33;
    // The segment is the number of bits of `biased` beyond the first segment (6 bits).
    let mut bits = 0;
    let mut rest = biased;
    while rest > 0 {
        bits += 1;
        rest >>= 1;
    }
    let segment = if bits > 6 { bits - 6 } else { 0 };
    let code_word = if segment >= 8 {
        0x7F
    } else {
        ((segment << 4) | ((biased >> (segment + 1)) & 0x0F)) as u8
    };
    (sign | code_word) ^ 0xFF
}

const fn build_encode_table() -> [u8; 16_384] {
    let mut table = [0_u8; 16_384];
    let mut index = 0;
    while index < 16_384 {
        // Sign-extend the 14-bit index.
        let value = if index >= 8192 { index as i32 - 16_384 } else { index as i32 };
        table[index] = encode_14_bit(value);
        index += 1;
    }
    table
}

const fn build_decode_table() -> [i16; 256] {
    let mut table = [0_i16; 256];
    let mut code = 0;
    while code < 256 {
        let inverted = !(code as u8);
        let exponent = ((inverted >> 4) & 0x07) as i32;
        let mantissa = (inverted & 0x0F) as i32;
        let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
        table[code] = if inverted & 0x80 != 0 { -magnitude as i16 } else { magnitude as i16 };
        code += 1;
    }
    table
}

/// Encodes one linear 16-bit sample as a μ-law code.
#[inline]
pub fn encode(sample: i16) -> u8 {
    // The top 14 bits, as an unsigned table index.
    ENCODE[usize::from((sample as u16) >> 2)]
}

/// Decodes one μ-law code into a linear 16-bit sample.
#[inline]
pub fn decode(code: u8) -> i16 {
    DECODE[usize::from(code)]
}

/// Encodes samples into `out` (appending).
pub fn encode_into(samples: &[i16], out: &mut Vec<u8>) {
    out.reserve(samples.len());
    out.extend(samples.iter().map(|&sample| encode(sample)));
}

/// Decodes codes into `out` (appending).
pub fn decode_into(codes: &[u8], out: &mut Vec<i16>) {
    out.reserve(codes.len());
    out.extend(codes.iter().map(|&code| decode(code)));
}

/// Decodes codes into a new vector.
pub fn decode_all(codes: &[u8]) -> Vec<i16> {
    let mut out = Vec::with_capacity(codes.len());
    decode_into(codes, &mut out);
    out
}

/// Encodes samples into a new vector.
pub fn encode_all(samples: &[i16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len());
    encode_into(samples, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_matches_the_standard_values_at_the_segment_edges() {
        // ITU-T G.711 μ-law: codes are bit-inverted; 0xFF and 0x7F are (+/-) zero.
        assert_eq!(decode(0xFF), 0);
        assert_eq!(decode(0x7F), 0);
        assert_eq!(decode(0x80), 32124);
        assert_eq!(decode(0x00), -32124);
        assert_eq!(decode(0xFE), 8);
        assert_eq!(decode(0xF0), 120);
        assert_eq!(decode(0xEF), 132);
        assert_eq!(decode(0xE0), 372);
        assert_eq!(decode(0xDF), 396);
        assert_eq!(decode(0x9F), 8316);
        assert_eq!(decode(0x8F), 16764);
        assert_eq!(decode(0x7E), -8);
    }

    #[test]
    fn decode_agrees_with_the_reference_crate_on_all_256_codes() {
        for code in 0..=255_u8 {
            assert_eq!(decode(code), audio_codec_algorithms::decode_ulaw(code), "code {code:#04x}");
        }
    }

    #[test]
    fn encode_agrees_with_the_reference_crate_on_every_16_bit_sample() {
        for sample in i16::MIN..=i16::MAX {
            assert_eq!(
                encode(sample),
                audio_codec_algorithms::encode_ulaw(sample),
                "sample {sample}"
            );
        }
    }

    #[test]
    fn encoding_a_decoded_code_gives_the_same_code_back() {
        for code in 0..=255_u8 {
            let round_trip = encode(decode(code));
            // +0 (0xFF) and -0 (0x7F) both decode to 0, which encodes as +0.
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(round_trip, expected, "code {code:#04x}");
        }
    }

    #[test]
    fn quantisation_error_stays_within_half_a_step_of_the_segment() {
        for sample in (-32000_i16..32000).step_by(7) {
            let error = (i32::from(decode(encode(sample))) - i32::from(sample)).abs();
            let step = (i32::from(sample).abs() / 16).max(8);
            assert!(error <= step, "sample {sample} error {error}");
        }
    }
}
