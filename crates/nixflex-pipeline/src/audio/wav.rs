//! RIFF/WAVE header parsing and stripping for LINEAR16 responses.
//!
//! TTS services that answer "LINEAR16" send PCM wrapped in a WAV header, and some (Inworld's
//! streaming endpoint) put a header in front of *every* streamed chunk. A header sent to the
//! caller sounds like a click, so adapters strip it with [`strip_header`] (one complete chunk)
//! or [`WavStreamStripper`] (a header that may be split across network reads).

/// The format announced by a WAV header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavFormat {
    /// 1 = integer PCM, 3 = float, 0xFFFE = extensible, 7 = μ-law, 6 = A-law.
    pub audio_format: u16,
    /// Interleaved channels.
    pub channels: u16,
    /// Samples per second.
    pub sample_rate: u32,
    /// Bits per sample.
    pub bits_per_sample: u16,
}

impl WavFormat {
    /// Whether this is 16-bit mono integer PCM (the only layout the converters take).
    pub fn is_pcm16_mono(&self) -> bool {
        (self.audio_format == 1 || self.audio_format == 0xFFFE)
            && self.channels == 1
            && self.bits_per_sample == 16
    }
}

/// Why a WAV header could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    /// The bytes do not start with `RIFF....WAVE`.
    #[error("not a RIFF/WAVE header")]
    NotWav,
    /// The header ends before its `data` chunk starts.
    #[error("the WAV header is truncated")]
    Truncated,
    /// A `data` chunk came before the `fmt ` chunk.
    #[error("the WAV header has no fmt chunk before its data")]
    MissingFormat,
}

/// A parsed header: the format and where the samples start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavHeader {
    /// The announced format.
    pub format: WavFormat,
    /// Offset of the first sample byte.
    pub data_offset: usize,
    /// The announced length of the samples; `None` for the "unknown" values streaming encoders
    /// write (0 or 0xFFFFFFFF).
    pub data_len: Option<u32>,
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    bytes.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Whether `bytes` starts with a RIFF/WAVE signature (needs at least 12 bytes).
pub fn starts_with_header(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WAVE"
}

/// Parses the header at the start of `bytes`, walking its chunks (`fmt `, `LIST`, `fact`, …)
/// up to `data`.
///
/// # Errors
/// [`WavError::Truncated`] when `bytes` ends inside the header (feed more bytes), or another
/// [`WavError`] when it is not a usable WAV header.
pub fn parse_header(bytes: &[u8]) -> Result<WavHeader, WavError> {
    if bytes.len() < 12 {
        return if b"RIFF".starts_with(&bytes[..bytes.len().min(4)]) {
            Err(WavError::Truncated)
        } else {
            Err(WavError::NotWav)
        };
    }
    if !starts_with_header(bytes) {
        return Err(WavError::NotWav);
    }
    let mut offset = 12;
    let mut format = None;
    loop {
        let (Some(id), Some(size)) = (bytes.get(offset..offset + 4), read_u32(bytes, offset + 4))
        else {
            return Err(WavError::Truncated);
        };
        let body = offset + 8;
        if id == b"data" {
            let format = format.ok_or(WavError::MissingFormat)?;
            let data_len = (size != 0 && size != u32::MAX).then_some(size);
            return Ok(WavHeader { format, data_offset: body, data_len });
        }
        if id == b"fmt " {
            let (Some(audio_format), Some(channels), Some(sample_rate), Some(bits_per_sample)) = (
                read_u16(bytes, body),
                read_u16(bytes, body + 2),
                read_u32(bytes, body + 4),
                read_u16(bytes, body + 14),
            ) else {
                return Err(WavError::Truncated);
            };
            format = Some(WavFormat { audio_format, channels, sample_rate, bits_per_sample });
        }
        // Chunks are padded to an even length.
        let size = usize::try_from(size).map_err(|_| WavError::Truncated)?;
        offset = body.checked_add(size + (size & 1)).ok_or(WavError::Truncated)?;
    }
}

/// Splits one complete chunk into its header (if it starts with one) and its samples.
///
/// # Errors
/// A [`WavError`] when the chunk starts with `RIFF` but the header is unusable or incomplete.
pub fn strip_header(chunk: &[u8]) -> Result<(Option<WavFormat>, &[u8]), WavError> {
    if !starts_with_header(chunk) {
        return Ok((None, chunk));
    }
    let header = parse_header(chunk)?;
    Ok((Some(header.format), chunk.get(header.data_offset..).unwrap_or_default()))
}

/// Removes a WAV header from the start of a byte stream whose header may arrive in pieces.
#[derive(Debug, Default)]
pub struct WavStreamStripper {
    /// Bytes held back while the header is incomplete.
    pending: Vec<u8>,
    /// The header, once seen (or `Some(None)` when the stream turned out to have none).
    header: Option<Option<WavFormat>>,
}

impl WavStreamStripper {
    /// A stripper waiting for the stream's first bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// The format of the header, once it has been parsed.
    pub fn format(&self) -> Option<WavFormat> {
        self.header.flatten()
    }

    /// Feeds the next bytes and returns the sample bytes now available.
    ///
    /// # Errors
    /// A [`WavError`] other than `Truncated` when the stream starts with a broken header.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>, WavError> {
        if self.header.is_some() {
            return Ok(bytes.to_vec());
        }
        self.pending.extend_from_slice(bytes);
        match parse_header(&self.pending) {
            Ok(header) => {
                self.header = Some(Some(header.format));
                let rest = self.pending.split_off(header.data_offset.min(self.pending.len()));
                self.pending.clear();
                Ok(rest)
            }
            Err(WavError::Truncated) => Ok(Vec::new()),
            Err(WavError::NotWav) => {
                self.header = Some(None);
                Ok(std::mem::take(&mut self.pending))
            }
            Err(error) => Err(error),
        }
    }
}

/// A canonical 44-byte header for 16-bit mono PCM (`data_len` bytes of samples, or the
/// streaming "unknown" value `u32::MAX`).
pub fn pcm16_mono_header(sample_rate: u32, data_len: u32) -> [u8; 44] {
    let mut header = [0_u8; 44];
    header[0..4].copy_from_slice(b"RIFF");
    header[4..8].copy_from_slice(&data_len.saturating_add(36).to_le_bytes());
    header[8..12].copy_from_slice(b"WAVE");
    header[12..16].copy_from_slice(b"fmt ");
    header[16..20].copy_from_slice(&16_u32.to_le_bytes());
    header[20..22].copy_from_slice(&1_u16.to_le_bytes());
    header[22..24].copy_from_slice(&1_u16.to_le_bytes());
    header[24..28].copy_from_slice(&sample_rate.to_le_bytes());
    header[28..32].copy_from_slice(&sample_rate.saturating_mul(2).to_le_bytes());
    header[32..34].copy_from_slice(&2_u16.to_le_bytes());
    header[34..36].copy_from_slice(&16_u16.to_le_bytes());
    header[36..40].copy_from_slice(b"data");
    header[40..44].copy_from_slice(&data_len.to_le_bytes());
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canonical_header_parses_to_its_format_and_a_44_byte_offset() {
        let header = parse_header(&pcm16_mono_header(24_000, 480)).unwrap();
        assert_eq!(header.data_offset, 44);
        assert_eq!(header.data_len, Some(480));
        assert_eq!(
            header.format,
            WavFormat { audio_format: 1, channels: 1, sample_rate: 24_000, bits_per_sample: 16 }
        );
        assert!(header.format.is_pcm16_mono());
    }

    #[test]
    fn a_known_header_from_a_real_file_parses() {
        // Header of a 16 kHz mono 16-bit file as written by sox, with a LIST chunk before data.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(b"RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00");
        bytes.extend_from_slice(&[0x80, 0x3E, 0, 0, 0x00, 0x7D, 0, 0, 2, 0, 16, 0]);
        bytes.extend_from_slice(b"LIST\x05\x00\x00\x00abcde\x00");
        bytes.extend_from_slice(b"data\xFF\xFF\xFF\xFF\x01\x02");
        let header = parse_header(&bytes).unwrap();
        assert_eq!(header.format.sample_rate, 16_000);
        assert_eq!(header.data_offset, bytes.len() - 2);
        assert_eq!(header.data_len, None);
    }

    #[test]
    fn strip_header_removes_a_header_and_leaves_headerless_chunks_alone() {
        let mut chunk = pcm16_mono_header(24_000, 4).to_vec();
        chunk.extend_from_slice(&[1, 2, 3, 4]);
        let (format, samples) = strip_header(&chunk).unwrap();
        assert_eq!(format.map(|f| f.sample_rate), Some(24_000));
        assert_eq!(samples, &[1, 2, 3, 4]);
        let (format, samples) = strip_header(&[9, 9, 9]).unwrap();
        assert_eq!((format, samples), (None, &[9_u8, 9, 9][..]));
    }

    #[test]
    fn a_truncated_header_is_reported_as_truncated() {
        let header = pcm16_mono_header(8000, 0);
        assert_eq!(parse_header(&header[..30]), Err(WavError::Truncated));
        assert_eq!(parse_header(b"RIF"), Err(WavError::Truncated));
        assert_eq!(parse_header(b"hello world, not a wav"), Err(WavError::NotWav));
    }

    #[test]
    fn the_stream_stripper_handles_a_header_split_across_reads() {
        let mut stream = pcm16_mono_header(22_050, u32::MAX).to_vec();
        stream.extend_from_slice(&[5, 6, 7, 8]);
        let mut stripper = WavStreamStripper::new();
        let mut out = Vec::new();
        for piece in stream.chunks(5) {
            out.extend(stripper.push(piece).unwrap());
        }
        assert_eq!(out, [5, 6, 7, 8]);
        assert_eq!(stripper.format().map(|f| f.sample_rate), Some(22_050));
    }

    #[test]
    fn the_stream_stripper_passes_a_headerless_stream_through() {
        let mut stripper = WavStreamStripper::new();
        let mut out = stripper.push(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]).unwrap();
        out.extend(stripper.push(&[14]).unwrap());
        assert_eq!(out, (1..=14).collect::<Vec<u8>>());
    }
}
