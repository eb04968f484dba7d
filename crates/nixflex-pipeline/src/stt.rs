//! The streaming speech-to-text interface (livekit `SpeechStream` shape).
//!
//! [`SttProvider::open`] returns two halves: an [`SttInput`] that the call's audio path pushes
//! μ-law audio into, and [`SttEvents`], a stream of recognition events. The provider's own task
//! sits between them and owns the connection; [`stt_channel`] builds the three pieces so that
//! every provider shares the same back-pressure and shutdown rules:
//! - audio is pushed without awaiting; when the provider falls behind, new audio chunks are
//!   dropped and counted rather than stalling the caller's socket reader;
//! - control messages (finalize, keep-alive, close) are awaited and never dropped;
//! - dropping the [`SttInput`] (or calling [`SttInput::close`]) ends the session gracefully;
//!   dropping [`SttEvents`] tells the provider task nobody listens any more.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

use crate::ProviderError;

/// How the pushed audio is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioEncoding {
    /// G.711 μ-law, one byte per sample (telephony).
    Mulaw,
    /// Signed 16-bit little-endian PCM.
    Linear16,
}

/// The word gap after which a recogniser that supports it reports the end of an utterance
/// (Deepgram `utterance_end_ms`): the default of [`SttOptions::utterance_end`].
pub const UTTERANCE_END_GAP: Duration = Duration::from_millis(1000);

/// Options of one recognition session.
#[derive(Debug, Clone, PartialEq)]
pub struct SttOptions {
    /// A BCP-47 language (`"en"`, `"es"`) or `"multi"` for code-switching.
    pub language: String,
    /// Samples per second of the pushed audio (8000 for telephony).
    pub sample_rate: u32,
    /// Encoding of the pushed audio.
    pub encoding: AudioEncoding,
    /// Silence after speech before a result is marked `speech_final`; `None` disables it.
    pub endpointing: Option<Duration>,
    /// Word gap after which an `UtteranceEnd` is sent; `None` disables it.
    pub utterance_end: Option<Duration>,
    /// Words or phrases to boost (names, products).
    pub keywords: Vec<String>,
    /// Whether to emit interim (non-final) hypotheses.
    pub interim_results: bool,
}

impl Default for SttOptions {
    fn default() -> Self {
        Self {
            language: "en".to_owned(),
            sample_rate: 8000,
            encoding: AudioEncoding::Mulaw,
            endpointing: Some(Duration::from_millis(300)),
            utterance_end: Some(UTTERANCE_END_GAP),
            keywords: Vec::new(),
            interim_results: true,
        }
    }
}

/// One event of a recognition session.
#[derive(Debug, Clone, PartialEq)]
pub enum SttEvent {
    /// The provider's voice activity detector heard speech start (use for barge-in).
    SpeechStarted,
    /// A hypothesis that may still change.
    Interim {
        /// The hypothesis.
        text: String,
    },
    /// A segment that will not change. A turn can be several finals, the last `speech_final`.
    Final {
        /// The transcript of the segment (may be empty).
        text: String,
        /// The provider's confidence, 0..=1.
        confidence: f32,
        /// Whether the provider detected the end of the speaker's turn after this segment.
        speech_final: bool,
        /// Whether this segment was flushed by [`SttInput::finalize`].
        from_finalize: bool,
        /// The detected language, when the provider reports one (e.g. with `"multi"`).
        language: Option<String>,
    },
    /// A gap between words long enough to end the utterance.
    UtteranceEnd,
    /// The session failed; `Closed` follows.
    Error(ProviderError),
    /// The session ended; no events follow.
    Closed,
}

/// What the [`SttInput`] sends to the provider task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SttCommand {
    /// Audio in the session's encoding.
    Audio(Bytes),
    /// Flush: return a final result for the audio so far.
    Finalize,
    /// Keep the session open while no audio flows.
    KeepAlive,
    /// Flush and end the session.
    Close,
}

/// The sending half of a recognition session. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SttInput {
    /// Commands to the provider task, which receives them; closed when the task ends.
    commands: mpsc::Sender<SttCommand>,
    /// Audio chunks dropped because the provider task fell behind.
    dropped: Arc<AtomicU64>,
}

impl SttInput {
    /// Queues μ-law (or the session's encoding) audio without waiting. If the provider task
    /// is behind, the chunk is dropped and counted in [`SttInput::dropped_chunks`].
    ///
    /// # Errors
    /// [`ProviderErrorKind::Cancelled`](crate::ProviderErrorKind::Cancelled) when the session
    /// has ended.
    pub fn push_audio(&self, audio: Bytes) -> Result<(), ProviderError> {
        match self.commands.try_send(SttCommand::Audio(audio)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                nixflex_metrics::caller_frame_dropped();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(session_closed()),
        }
    }

    /// Asks for a final result of the audio so far (e.g. when our own VAD decides the turn ended).
    ///
    /// # Errors
    /// `Cancelled` when the session has ended.
    pub async fn finalize(&self) -> Result<(), ProviderError> {
        self.send(SttCommand::Finalize).await
    }

    /// Sends a keep-alive now (providers also send them by themselves when audio pauses).
    ///
    /// # Errors
    /// `Cancelled` when the session has ended.
    pub async fn keep_alive(&self) -> Result<(), ProviderError> {
        self.send(SttCommand::KeepAlive).await
    }

    /// Flushes and ends the session; the event stream ends with [`SttEvent::Closed`].
    ///
    /// # Errors
    /// `Cancelled` when the session has already ended.
    pub async fn close(&self) -> Result<(), ProviderError> {
        self.send(SttCommand::Close).await
    }

    /// How many audio chunks were dropped because the provider could not keep up.
    pub fn dropped_chunks(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Whether the provider task has ended.
    pub fn is_closed(&self) -> bool {
        self.commands.is_closed()
    }

    async fn send(&self, command: SttCommand) -> Result<(), ProviderError> {
        self.commands.send(command).await.map_err(|_| session_closed())
    }
}

fn session_closed() -> ProviderError {
    ProviderError::cancelled("the speech-to-text session has ended")
}

/// The event half of a recognition session.
pub struct SttEvents {
    /// Events from the provider task; the task closes it after sending `Closed`.
    events: mpsc::Receiver<SttEvent>,
}

impl fmt::Debug for SttEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SttEvents").finish_non_exhaustive()
    }
}

impl SttEvents {
    /// The next event, or `None` after the session ended.
    ///
    /// # Cancel safety
    /// Cancel safe: an event is never lost when the future is dropped.
    pub async fn recv(&mut self) -> Option<SttEvent> {
        self.events.recv().await
    }
}

impl Stream for SttEvents {
    type Item = SttEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SttEvent>> {
        self.events.poll_recv(cx)
    }
}

/// The provider task's ends of a session built by [`stt_channel`].
#[derive(Debug)]
pub struct SttDriver {
    /// Commands from the [`SttInput`]; `None` from `recv` means every input was dropped
    /// (treat it as [`SttCommand::Close`]).
    pub commands: mpsc::Receiver<SttCommand>,
    /// Events to the [`SttEvents`]; a send error means the listener is gone.
    pub events: mpsc::Sender<SttEvent>,
}

/// Builds a session's input, events and the provider task's driver. `audio_capacity` is how
/// many audio chunks may queue before new ones are dropped (at 20 ms per chunk, 250 ≈ 5 s).
pub fn stt_channel(audio_capacity: usize) -> (SttInput, SttDriver, SttEvents) {
    let (command_tx, command_rx) = mpsc::channel(audio_capacity.max(1));
    let (event_tx, event_rx) = mpsc::channel(256);
    let input = SttInput { commands: command_tx, dropped: Arc::new(AtomicU64::new(0)) };
    let driver = SttDriver { commands: command_rx, events: event_tx };
    (input, driver, SttEvents { events: event_rx })
}

/// A streaming speech recogniser.
#[async_trait::async_trait]
pub trait SttProvider: Send + Sync + fmt::Debug {
    /// A short name for logs and metrics (`"deepgram"`).
    fn name(&self) -> &'static str;

    /// Opens a recognition session. Resolves once the provider accepted it (e.g. the
    /// WebSocket upgrade succeeded), so that auth and configuration errors surface here.
    ///
    /// # Errors
    /// A [`ProviderError`] when the provider is not configured, unreachable or refuses.
    async fn open(&self, options: SttOptions) -> Result<(SttInput, SttEvents), ProviderError>;
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn audio_pushed_beyond_capacity_is_dropped_and_counted_without_blocking() {
        let (input, mut driver, _events) = stt_channel(2);
        for _ in 0..5 {
            input.push_audio(Bytes::from_static(&[0xFF; 160])).unwrap();
        }
        assert_eq!(input.dropped_chunks(), 3);
        assert_eq!(
            driver.commands.recv().await,
            Some(SttCommand::Audio(Bytes::from_static(&[0xFF; 160])))
        );
    }

    #[tokio::test]
    async fn pushing_after_the_provider_task_ended_is_a_cancelled_error() {
        let (input, driver, _events) = stt_channel(2);
        drop(driver);
        let error = input.push_audio(Bytes::from_static(&[0xFF])).unwrap_err();
        assert_eq!(error.kind, crate::ProviderErrorKind::Cancelled);
        assert!(input.close().await.is_err());
    }

    #[tokio::test]
    async fn events_sent_by_the_driver_arrive_in_order_and_end_when_it_is_dropped() {
        let (_input, driver, mut events) = stt_channel(2);
        driver.events.send(SttEvent::SpeechStarted).await.unwrap();
        driver.events.send(SttEvent::Closed).await.unwrap();
        drop(driver);
        assert_eq!(events.next().await, Some(SttEvent::SpeechStarted));
        assert_eq!(events.recv().await, Some(SttEvent::Closed));
        assert_eq!(events.next().await, None);
    }
}
