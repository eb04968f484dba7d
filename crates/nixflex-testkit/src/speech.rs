//! What the bring-your-own speech emulators (ElevenLabs, Cartesia) share: the fault script and
//! request log, the deterministic tone for a text, and streaming it as a chunked HTTP body with
//! the scripted latency and faults. Both services answer a synthesis with raw audio bytes, so
//! the streaming is the same; each module keeps its own paths, authentication, formats and
//! error bodies.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use nixflex_pipeline::audio::tone::text_tone;
use serde_json::Value;
use tokio::sync::mpsc;

pub use crate::anthropic::{Fault, RecordedRequest, Timing};

/// The scripted behaviour and the request log of an emulator.
#[derive(Debug, Default)]
pub(crate) struct Script {
    faults: VecDeque<Fault>,
    timing: Timing,
    requests: Vec<RecordedRequest>,
}

/// [`Script`] behind a lock that survives a panicking handler.
#[derive(Debug, Default)]
pub(crate) struct Scripted(Mutex<Script>);

impl Scripted {
    fn lock(&self) -> MutexGuard<'_, Script> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Logs a request (path with its query, headers, JSON body or `Null`).
    pub(crate) fn record(&self, path: &str, headers: &HeaderMap, body: &[u8]) {
        self.lock().requests.push(RecordedRequest {
            path: path.to_owned(),
            headers: headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
        });
    }

    /// The next queued fault, if any, and the current timing.
    pub(crate) fn next(&self) -> (Option<Fault>, Timing) {
        let mut script = self.lock();
        (script.faults.pop_front(), script.timing)
    }

    pub(crate) fn set_timing(&self, timing: Timing) {
        self.lock().timing = timing;
    }

    pub(crate) fn push_fault(&self, fault: Fault) {
        self.lock().faults.push_back(fault);
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }
}

/// The samples of `text`: a tone per character, `ms_per_char` each at speed 1.0 (divided by
/// `speed`, clamped to 0.5–2.0).
pub(crate) fn speech_samples(
    text: &str,
    sample_rate: u32,
    ms_per_char: u32,
    speed: f64,
) -> Vec<i16> {
    let speed = if speed.is_finite() && speed > 0.0 { speed.clamp(0.5, 2.0) } else { 1.0 };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // small positive values
    let ms = (f64::from(ms_per_char) / speed).round().max(1.0) as u32;
    text_tone(text, sample_rate, ms)
}

/// Streams `audio` in pieces of `chunk_bytes` as a `content_type` body, after the scripted
/// first-byte delay and with the scripted gap between pieces. `Fault::Disconnect` (and
/// `Fault::MidStreamError`, which a raw audio stream cannot express otherwise) cut the
/// connection after that many pieces.
pub(crate) async fn stream_audio(
    audio: Vec<u8>,
    chunk_bytes: usize,
    content_type: &'static str,
    fault: Option<Fault>,
    timing: Timing,
    extra_headers: &[(&'static str, String)],
) -> Response {
    if !timing.first_byte.is_zero() {
        tokio::time::sleep(timing.first_byte).await;
    }
    let cut_after = match fault {
        Some(Fault::Disconnect { after_deltas } | Fault::MidStreamError { after_deltas, .. }) => {
            Some(after_deltas)
        }
        _ => None,
    };
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        for (index, piece) in audio.chunks(chunk_bytes.max(2)).enumerate() {
            if cut_after == Some(index) {
                let _ = sender.send(Err(std::io::Error::other("injected disconnect"))).await;
                return;
            }
            if index > 0 && !timing.chunk_interval.is_zero() {
                tokio::time::sleep(timing.chunk_interval).await;
            }
            if sender.send(Ok(Bytes::copy_from_slice(piece))).await.is_err() {
                return;
            }
        }
    });
    let body = Body::from_stream(futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    }));
    let mut builder =
        Response::builder().status(StatusCode::OK).header(header::CONTENT_TYPE, content_type);
    for (name, value) in extra_headers {
        builder = builder.header(*name, value);
    }
    builder.body(body).unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A short random hex id for response headers.
pub(crate) fn random_id() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}
