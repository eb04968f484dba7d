//! Inworld TTS emulator: `POST /tts/v1/voice:stream` (newline-delimited JSON) and
//! `POST /tts/v1/voice` (one JSON) — docs/protocols.md#inworld-tts.
//!
//! Audio is a deterministic tone ([`nixflex_pipeline::audio::tone::text_tone`]) lasting
//! `ms_per_char` per character (divided by `speakingRate`) at the requested
//! `sampleRateHertz`. `LINEAR16` chunks each carry their own 44-byte WAV header, as Inworld's
//! streaming endpoint does; `PCM` chunks are headerless; other encodings are refused with a
//! Google-style error (`{"code": 3, "message", "details": []}`). The credential must come as
//! `Authorization: Basic <key>`. Timing, faults and the request log reuse the Anthropic
//! emulator's types (`after_deltas` counts audio chunks).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use nixflex_pipeline::audio::tone::text_tone;
use nixflex_pipeline::audio::{samples_to_pcm16le, wav};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use crate::anthropic::{Fault, RecordedRequest, Timing};

/// Sample rates Inworld accepts.
pub const SAMPLE_RATES: [u32; 7] = [8000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000];

/// Configuration fixed at start.
#[derive(Debug, Clone)]
pub struct InworldEmulatorConfig {
    /// The only accepted credential; `None` accepts any non-empty one.
    pub api_key: Option<String>,
    /// Milliseconds of audio per character at speaking rate 1.0 (default 60).
    pub ms_per_char: u32,
    /// Milliseconds of audio per streamed line (default 100).
    pub chunk_ms: u32,
}

impl Default for InworldEmulatorConfig {
    fn default() -> Self {
        Self { api_key: None, ms_per_char: 60, chunk_ms: 100 }
    }
}

#[derive(Default)]
struct Script {
    faults: VecDeque<Fault>,
    timing: Timing,
    requests: Vec<RecordedRequest>,
}

struct Shared {
    config: InworldEmulatorConfig,
    script: Mutex<Script>,
    /// Synthesised speech by (text, sample rate, ms per character): a benchmark asks for the
    /// same few sentences thousands of times, and the tone costs a sine per sample.
    tones: Mutex<HashMap<ToneKey, Arc<[i16]>>>,
}

/// Text, sample rate, milliseconds per character.
type ToneKey = (String, u32, u32);

/// How many distinct syntheses [`Shared::tones`] keeps before it starts over.
const TONE_CACHE_ENTRIES: usize = 256;

impl Shared {
    fn script(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`speech_samples`], remembered.
    fn speech(&self, text: &str, sample_rate: u32, speaking_rate: f64) -> Arc<[i16]> {
        let ms_per_char = ms_per_char(&self.config, speaking_rate);
        let key = (text.to_owned(), sample_rate, ms_per_char);
        let mut tones = self.tones.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(samples) = tones.get(&key) {
            return Arc::clone(samples);
        }
        if tones.len() >= TONE_CACHE_ENTRIES {
            tones.clear();
        }
        let samples: Arc<[i16]> = text_tone(text, sample_rate, ms_per_char).into();
        tones.insert(key, Arc::clone(&samples));
        samples
    }
}

/// A running Inworld TTS emulator; stops when dropped.
pub struct InworldEmulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for InworldEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InworldEmulator").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for InworldEmulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl InworldEmulator {
    /// Starts an emulator accepting any non-empty credential on `127.0.0.1:<free port>`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(InworldEmulatorConfig::default()).await
    }

    /// Starts an emulator with `config`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start_with(config: InworldEmulatorConfig) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            config,
            script: Mutex::new(Script::default()),
            tones: Mutex::default(),
        });
        let router = Router::new()
            .route("/tts/v1/voice:stream", post(voice_stream))
            .route("/tts/v1/voice", post(voice))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(crate::nodelay(listener), router).await {
                tracing::warn!(message = "Inworld emulator stopped.", %error);
            }
        });
        Ok(Self { addr, shared, server })
    }

    /// The base URL to configure clients with (`http://127.0.0.1:<port>`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the latency of the following responses.
    pub fn set_timing(&self, timing: Timing) {
        self.shared.script().timing = timing;
    }

    /// Queues a failure for the next request.
    pub fn push_fault(&self, fault: Fault) {
        self.shared.script().faults.push_back(fault);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.script().requests.clone()
    }

    /// The exact samples the emulator produces for `text` at `sample_rate` and `speaking_rate`.
    pub fn speech_samples(&self, text: &str, sample_rate: u32, speaking_rate: f64) -> Vec<i16> {
        speech_samples(&self.shared.config, text, sample_rate, speaking_rate)
    }
}

fn speech_samples(
    config: &InworldEmulatorConfig,
    text: &str,
    sample_rate: u32,
    speaking_rate: f64,
) -> Vec<i16> {
    text_tone(text, sample_rate, ms_per_char(config, speaking_rate))
}

/// Milliseconds of tone per character at a speaking rate (clamped to 0.5–1.5, 1 if invalid).
fn ms_per_char(config: &InworldEmulatorConfig, speaking_rate: f64) -> u32 {
    let rate = if speaking_rate.is_finite() && speaking_rate > 0.0 {
        speaking_rate.clamp(0.5, 1.5)
    } else {
        1.0
    };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // small positive values
    let ms = (f64::from(config.ms_per_char) / rate).round().max(1.0) as u32;
    ms
}

/// gRPC status code and name for an HTTP status, as Google-style APIs map them.
fn grpc_code(status: u16) -> (u16, &'static str) {
    match status {
        400 => (3, "INVALID_ARGUMENT"),
        401 => (16, "UNAUTHENTICATED"),
        403 => (7, "PERMISSION_DENIED"),
        404 => (5, "NOT_FOUND"),
        429 => (8, "RESOURCE_EXHAUSTED"),
        503 => (14, "UNAVAILABLE"),
        504 => (4, "DEADLINE_EXCEEDED"),
        _ => (13, "INTERNAL"),
    }
}

fn error_response(status: u16, message: &str) -> Response {
    let (code, _) = grpc_code(status);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(json!({ "code": code, "message": message, "details": [] }))).into_response()
}

/// A validated synthesis request.
struct Synthesis {
    text: String,
    linear16: bool,
    sample_rate: u32,
    speaking_rate: f64,
    word_timestamps: bool,
}

fn admit(
    shared: &Shared,
    headers: &HeaderMap,
    path: &str,
    body: &Bytes,
) -> Result<(Synthesis, Option<Fault>, Timing), Box<Response>> {
    let mut script = shared.script();
    script.requests.push(RecordedRequest {
        path: path.to_owned(),
        headers: headers
            .iter()
            .map(|(name, value)| {
                (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
            })
            .collect(),
        body: serde_json::from_slice(body).unwrap_or(Value::Null),
    });
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "));
    let authorised = match (presented, &shared.config.api_key) {
        (Some(presented), Some(expected)) => presented == expected,
        (Some(presented), None) => !presented.trim().is_empty(),
        (None, _) => false,
    };
    if !authorised {
        return Err(Box::new(error_response(
            401,
            "Request had invalid authentication credentials.",
        )));
    }
    let fault = script.faults.pop_front();
    if let Some(Fault::Status(status)) = fault {
        return Err(Box::new(error_response(status, "Injected failure.")));
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return Err(Box::new(error_response(400, "Invalid JSON payload received.")));
    };
    let text = request.get("text").and_then(Value::as_str).unwrap_or_default();
    if text.trim().is_empty() {
        return Err(Box::new(error_response(400, "text is required")));
    }
    if text.chars().count() > 2000 {
        return Err(Box::new(error_response(400, "text must be at most 2000 characters")));
    }
    if request.get("voiceId").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err(Box::new(error_response(400, "voiceId is required")));
    }
    if request.get("modelId").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err(Box::new(error_response(400, "modelId is required")));
    }
    let audio_config = request.get("audioConfig").cloned().unwrap_or(Value::Null);
    let linear16 =
        match audio_config.get("audioEncoding").and_then(Value::as_str).unwrap_or("LINEAR16") {
            "LINEAR16" => true,
            "PCM" => false,
            other => {
                return Err(Box::new(error_response(
                    400,
                    &format!("the emulator does not produce audioEncoding {other}"),
                )));
            }
        };
    let sample_rate = audio_config.get("sampleRateHertz").and_then(Value::as_u64).unwrap_or(48_000);
    let Some(sample_rate) =
        u32::try_from(sample_rate).ok().filter(|rate| SAMPLE_RATES.contains(rate))
    else {
        return Err(Box::new(error_response(
            400,
            &format!("unsupported sampleRateHertz {sample_rate}"),
        )));
    };
    let speaking_rate = audio_config.get("speakingRate").and_then(Value::as_f64).unwrap_or(1.0);
    let word_timestamps = request.get("timestampType").and_then(Value::as_str) == Some("WORD");
    let synthesis =
        Synthesis { text: text.to_owned(), linear16, sample_rate, speaking_rate, word_timestamps };
    Ok((synthesis, fault, script.timing))
}

fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn timestamp_info(text: &str, seconds: f64) -> Value {
    let words: Vec<&str> = text.split_whitespace().collect();
    let per_word = if words.is_empty() { 0.0 } else { seconds / words.len() as f64 };
    let starts: Vec<f64> = (0..words.len()).map(|i| per_word * i as f64).collect();
    let ends: Vec<f64> = (0..words.len()).map(|i| per_word * (i + 1) as f64).collect();
    json!({ "wordAlignment": { "words": words, "wordStartTimeSeconds": starts, "wordEndTimeSeconds": ends } })
}

async fn voice(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (synthesis, _fault, timing) = match admit(&shared, &headers, "/tts/v1/voice", &body) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    if !timing.first_byte.is_zero() {
        tokio::time::sleep(timing.first_byte).await;
    }
    let samples = shared.speech(&synthesis.text, synthesis.sample_rate, synthesis.speaking_rate);
    let pcm = samples_to_pcm16le(&samples);
    let mut audio = Vec::with_capacity(pcm.len() + 44);
    if synthesis.linear16 {
        let data_len = u32::try_from(pcm.len()).unwrap_or(u32::MAX);
        audio.extend_from_slice(&wav::pcm16_mono_header(synthesis.sample_rate, data_len));
    }
    audio.extend(pcm);
    let mut reply = json!({ "audioContent": encode(&audio), "usage": { "processedCharactersCount": synthesis.text.chars().count(), "modelId": "emulator" } });
    if synthesis.word_timestamps {
        reply["timestampInfo"] = timestamp_info(
            &synthesis.text,
            samples.len() as f64 / f64::from(synthesis.sample_rate),
        );
    }
    axum::Json(reply).into_response()
}

async fn voice_stream(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (synthesis, fault, timing) = match admit(&shared, &headers, "/tts/v1/voice:stream", &body) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    let delay = timing.first_byte + Fault::first_byte_delay(fault.as_ref());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let samples = shared.speech(&synthesis.text, synthesis.sample_rate, synthesis.speaking_rate);
    let seconds = samples.len() as f64 / f64::from(synthesis.sample_rate);
    let per_chunk =
        (synthesis.sample_rate as usize * shared.config.chunk_ms.max(1) as usize / 1000).max(1);
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        for (index, chunk) in samples.chunks(per_chunk).enumerate() {
            if Fault::stalls_at(fault.as_ref(), index) {
                sender.closed().await;
                return;
            }
            match &fault {
                Some(Fault::MidStreamError { after_deltas, .. }) if index == *after_deltas => {
                    let line = json!({ "error": { "code": 13, "message": "Injected failure.", "details": [] } });
                    let _ = sender.send(Ok(Bytes::from(format!("{line}\n")))).await;
                    return;
                }
                Some(Fault::Disconnect { after_deltas }) if index == *after_deltas => {
                    let _ = sender.send(Err(std::io::Error::other("injected disconnect"))).await;
                    return;
                }
                _ => {}
            }
            if index > 0 && !timing.chunk_interval.is_zero() {
                tokio::time::sleep(timing.chunk_interval).await;
            }
            let pcm = samples_to_pcm16le(chunk);
            let mut audio = Vec::with_capacity(pcm.len() + 44);
            if synthesis.linear16 {
                let data_len = u32::try_from(pcm.len()).unwrap_or(u32::MAX);
                audio.extend_from_slice(&wav::pcm16_mono_header(synthesis.sample_rate, data_len));
            }
            audio.extend(pcm);
            let mut result = json!({ "audioContent": encode(&audio) });
            if synthesis.word_timestamps && index == 0 {
                result["timestampInfo"] = timestamp_info(&synthesis.text, seconds);
            }
            let line = json!({ "result": result });
            if sender.send(Ok(Bytes::from(format!("{line}\n")))).await.is_err() {
                return;
            }
        }
    });
    let body = Body::from_stream(futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    }));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
