//! The streaming text-to-speech interface.
//!
//! Every [`TtsStream`] yields audio *already* converted to 8 kHz μ-law, whatever the vendor
//! sends: vendor clients hand their raw PCM byte stream to [`TtsStream::from_pcm`], the shared
//! adapter that strips WAV headers, resamples and compands (so no vendor does its own
//! resampling). The stream also reports its time to first byte. Dropping it cancels the request.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::time::Instant;

use crate::ProviderError;
use crate::audio::PcmToMulaw;
use crate::audio::wav::{self, WavStreamStripper};

/// A request to speak one piece of text.
#[derive(Debug, Clone, PartialEq)]
pub struct TtsRequest {
    /// The text to speak.
    pub text: String,
    /// The provider's own voice id (e.g. `"Ashley"` for Inworld, `"alloy"` for OpenAI).
    pub voice_id: String,
    /// Speaking rate, 1.0 = normal.
    pub speaking_rate: f32,
    /// A BCP-47 language hint, for providers that take one.
    pub language: Option<String>,
}

impl TtsRequest {
    /// A request at normal speed with no language hint.
    pub fn new(text: impl Into<String>, voice_id: impl Into<String>) -> Self {
        Self { text: text.into(), voice_id: voice_id.into(), speaking_rate: 1.0, language: None }
    }
}

/// How a vendor's raw audio bytes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcmLayout {
    /// Headerless 16-bit little-endian mono PCM.
    Raw,
    /// A WAV header at the start of the stream (possibly split across reads), then PCM.
    WavStream,
    /// Every item of the source stream is a complete chunk that may start with its own WAV
    /// header (Inworld's streaming LINEAR16).
    WavPerChunk,
}

/// The vendor side of a [`TtsStream`]: raw audio bytes as they arrive.
pub type PcmByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, ProviderError>> + Send + 'static>>;

/// Synthesised speech as 8 kHz μ-law chunks (any length; frame them with
/// [`MulawFramer`](crate::audio::MulawFramer)).
pub struct TtsStream {
    /// The vendor's raw audio.
    source: PcmByteStream,
    /// How `source` is laid out.
    layout: PcmLayout,
    /// Strips the stream header for [`PcmLayout::WavStream`].
    stripper: WavStreamStripper,
    /// Resamples and compands.
    converter: PcmToMulaw,
    /// When the request was started, for the time to first byte.
    started: Instant,
    /// Time from `started` to the first audio byte, once seen.
    ttfb: Option<Duration>,
    /// Whether the source ended (and the converter's tail was emitted).
    finished: bool,
}

impl fmt::Debug for TtsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TtsStream")
            .field("layout", &self.layout)
            .field("input_rate", &self.converter.input_rate())
            .field("ttfb", &self.ttfb)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl TtsStream {
    /// Wraps a vendor's PCM byte stream at `sample_rate` Hz, started at `started` (take it
    /// before sending the request so the time to first byte includes the round trip).
    pub fn from_pcm(
        source: PcmByteStream,
        sample_rate: u32,
        layout: PcmLayout,
        started: Instant,
    ) -> Self {
        Self {
            source,
            layout,
            stripper: WavStreamStripper::new(),
            converter: PcmToMulaw::new(sample_rate),
            started,
            ttfb: None,
            finished: false,
        }
    }

    /// Time from the start of the request to the first audio byte, once it arrived.
    pub fn ttfb(&self) -> Option<Duration> {
        self.ttfb
    }

    fn convert(&mut self, chunk: &[u8]) -> Result<Vec<u8>, ProviderError> {
        let invalid = |error: wav::WavError| {
            ProviderError::protocol(format!("invalid WAV header in TTS audio: {error}"))
        };
        match self.layout {
            PcmLayout::Raw => Ok(self.converter.push(chunk)),
            PcmLayout::WavStream => {
                let pcm = self.stripper.push(chunk).map_err(invalid)?;
                Ok(self.converter.push(&pcm))
            }
            PcmLayout::WavPerChunk => {
                let (_, pcm) = wav::strip_header(chunk).map_err(invalid)?;
                Ok(self.converter.push(pcm))
            }
        }
    }
}

impl Stream for TtsStream {
    type Item = Result<Bytes, ProviderError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            match this.source.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(error))) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    if this.ttfb.is_none() && !chunk.is_empty() {
                        this.ttfb = Some(this.started.elapsed());
                    }
                    match this.convert(&chunk) {
                        Ok(mulaw) if mulaw.is_empty() => {}
                        Ok(mulaw) => return Poll::Ready(Some(Ok(Bytes::from(mulaw)))),
                        Err(error) => {
                            this.finished = true;
                            return Poll::Ready(Some(Err(error)));
                        }
                    }
                }
                Poll::Ready(None) => {
                    this.finished = true;
                    let tail = this.converter.finish();
                    if !tail.is_empty() {
                        return Poll::Ready(Some(Ok(Bytes::from(tail))));
                    }
                }
            }
        }
    }
}

/// A streaming speech synthesiser.
#[async_trait::async_trait]
pub trait TtsProvider: Send + Sync + fmt::Debug {
    /// A short name for logs and metrics (`"inworld"`, `"openai"`).
    fn name(&self) -> &'static str;

    /// Starts synthesising. Resolves once the provider accepted the request (HTTP status
    /// received), so that auth and validation errors surface here.
    ///
    /// # Errors
    /// A [`ProviderError`] when the provider is not configured, unreachable or refuses.
    async fn synthesize(&self, request: TtsRequest) -> Result<TtsStream, ProviderError>;
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::audio::samples_to_pcm16le;
    use crate::audio::tone::{sine, tone_power};
    use crate::audio::{mulaw, wav::pcm16_mono_header};

    fn source(chunks: Vec<Result<Bytes, ProviderError>>) -> PcmByteStream {
        Box::pin(futures::stream::iter(chunks))
    }

    async fn collect(mut stream: TtsStream) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn raw_24_khz_pcm_comes_out_as_8_khz_mulaw_of_a_third_the_length() {
        let pcm = samples_to_pcm16le(&sine(500.0, 24_000, 4800, 8000.0));
        let chunks = pcm.chunks(1001).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let stream = TtsStream::from_pcm(source(chunks), 24_000, PcmLayout::Raw, Instant::now());
        let out = collect(stream).await;
        assert!(out.len().abs_diff(1600) < 20, "{}", out.len());
        let power = tone_power(&mulaw::decode_all(&out[100..1500]), 8000, 500.0);
        assert!(power > 8000.0 * 8000.0 / 2.0 * 0.9);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wav_header_on_every_chunk_is_stripped_before_conversion() {
        let samples = sine(500.0, 16_000, 1600, 8000.0);
        let mut with_headers = Vec::new();
        for piece in samples.chunks(400) {
            let mut chunk = pcm16_mono_header(16_000, 800).to_vec();
            chunk.extend(samples_to_pcm16le(piece));
            with_headers.push(Ok(Bytes::from(chunk)));
        }
        let plain = vec![Ok(Bytes::from(samples_to_pcm16le(&samples)))];
        let started = Instant::now();
        let stripped = collect(TtsStream::from_pcm(
            source(with_headers),
            16_000,
            PcmLayout::WavPerChunk,
            started,
        ))
        .await;
        let expected =
            collect(TtsStream::from_pcm(source(plain), 16_000, PcmLayout::Raw, started)).await;
        assert_eq!(stripped, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn ttfb_is_measured_from_the_start_to_the_first_audio_chunk() {
        let started = Instant::now();
        tokio::time::advance(Duration::from_millis(120)).await;
        let chunks = vec![Ok(Bytes::new()), Ok(Bytes::from(vec![0_u8; 320]))];
        let mut stream = TtsStream::from_pcm(source(chunks), 8000, PcmLayout::Raw, started);
        assert_eq!(stream.ttfb(), None);
        assert_eq!(stream.next().await.unwrap().unwrap().len(), 160);
        assert_eq!(stream.ttfb(), Some(Duration::from_millis(120)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_from_the_vendor_ends_the_stream_after_it_is_reported() {
        let chunks = vec![
            Ok(Bytes::from(vec![0_u8; 320])),
            Err(ProviderError::transport("reset")),
            Ok(Bytes::from(vec![0_u8; 320])),
        ];
        let mut stream = TtsStream::from_pcm(source(chunks), 8000, PcmLayout::Raw, Instant::now());
        assert!(stream.next().await.unwrap().is_ok());
        assert!(stream.next().await.unwrap().is_err());
        assert!(stream.next().await.is_none());
    }
}
