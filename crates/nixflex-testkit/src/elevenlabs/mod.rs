//! ElevenLabs text-to-speech emulator: `POST /v1/text-to-speech/{voice_id}/stream` (chunked
//! audio as it is made) and `POST /v1/text-to-speech/{voice_id}` (the same audio in one body) —
//! docs/protocols.md#elevenlabs-tts.
//!
//! The key must come in `xi-api-key`; a wrong or missing one is a 401 with ElevenLabs' body
//! `{"detail": {"status": "invalid_api_key", "message"}}`. `output_format` (query) may be
//! `pcm_<rate>` (headerless 16-bit little-endian mono) or `ulaw_8000`; the MP3 default and the
//! other codecs are refused with a 400 (the emulator makes no compressed audio), so a client
//! that forgets to ask for PCM notices. A missing `text` is FastAPI's 422. With a voice list
//! configured, any other voice is a 404 `voice_not_found`. Audio is the deterministic tone of
//! [`nixflex_pipeline::audio::tone::text_tone`], `ms_per_char` per character (divided by
//! `voice_settings.speed`). Timing, faults and the request log reuse the Anthropic emulator's
//! types (`after_deltas` counts audio chunks).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use nixflex_pipeline::audio::{mulaw, samples_to_pcm16le};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

pub use crate::speech::{Fault, RecordedRequest, Timing};
use crate::speech::{Scripted, speech_samples, stream_audio};

/// The PCM sample rates ElevenLabs offers (`pcm_<rate>`).
pub const PCM_RATES: [u32; 7] = [8000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000];

/// Configuration fixed at start.
#[derive(Debug, Clone)]
pub struct ElevenLabsEmulatorConfig {
    /// The only accepted key; `None` accepts any non-empty key.
    pub api_key: Option<String>,
    /// The voices that exist; `None` accepts any voice id.
    pub voices: Option<Vec<String>>,
    /// Milliseconds of audio per character at speed 1.0 (default 60).
    pub ms_per_char: u32,
    /// Milliseconds of audio per streamed chunk (default 100).
    pub chunk_ms: u32,
}

impl Default for ElevenLabsEmulatorConfig {
    fn default() -> Self {
        Self { api_key: None, voices: None, ms_per_char: 60, chunk_ms: 100 }
    }
}

struct Shared {
    config: ElevenLabsEmulatorConfig,
    script: Scripted,
}

/// A running ElevenLabs emulator; stops when dropped.
pub struct ElevenLabsEmulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for ElevenLabsEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElevenLabsEmulator").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for ElevenLabsEmulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ElevenLabsEmulator {
    /// Starts an emulator accepting any non-empty key on `127.0.0.1:<free port>`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(ElevenLabsEmulatorConfig::default()).await
    }

    /// Starts an emulator with `config`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start_with(config: ElevenLabsEmulatorConfig) -> std::io::Result<Self> {
        let shared = Arc::new(Shared { config, script: Scripted::default() });
        let router = Router::new()
            .route("/v1/text-to-speech/{voice_id}/stream", post(stream))
            .route("/v1/text-to-speech/{voice_id}", post(convert))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(crate::nodelay(listener), router).await {
                tracing::warn!(message = "ElevenLabs emulator stopped.", %error);
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
        self.shared.script.set_timing(timing);
    }

    /// Queues a failure for the next request.
    pub fn push_fault(&self, fault: Fault) {
        self.shared.script.push_fault(fault);
    }

    /// Every request received so far (paths include the query).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.script.requests()
    }

    /// The exact samples produced for `text` at `sample_rate` and `speed`.
    pub fn speech_samples(&self, text: &str, sample_rate: u32, speed: f64) -> Vec<i16> {
        speech_samples(text, sample_rate, self.shared.config.ms_per_char, speed)
    }
}

fn error(status: u16, code: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(json!({ "detail": { "status": code, "message": message } })))
        .into_response()
}

/// `pcm_<rate>` → (rate, false); `ulaw_8000` → (8000, true).
fn output_format(query: Option<&str>) -> Result<(u32, bool), String> {
    let format = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "output_format")
        .map_or("mp3_44100_128", |(_, value)| value);
    if format == "ulaw_8000" {
        return Ok((8000, true));
    }
    match format.strip_prefix("pcm_").and_then(|rate| rate.parse::<u32>().ok()) {
        Some(rate) if PCM_RATES.contains(&rate) => Ok((rate, false)),
        _ => Err(format!("the emulator does not produce output_format {format}")),
    }
}

async fn synthesize(
    shared: &Shared,
    voice_id: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
    streamed: bool,
) -> Response {
    let path = format!(
        "/v1/text-to-speech/{voice_id}{}{}",
        if streamed { "/stream" } else { "" },
        query.map(|q| format!("?{q}")).unwrap_or_default()
    );
    shared.script.record(&path, headers, body);
    let presented = headers.get("xi-api-key").and_then(|value| value.to_str().ok());
    let authorised = match (presented, &shared.config.api_key) {
        (Some(presented), Some(expected)) => presented == expected,
        (Some(presented), None) => !presented.trim().is_empty(),
        (None, _) => false,
    };
    if !authorised {
        return error(401, "invalid_api_key", "Invalid API key");
    }
    let (fault, timing) = shared.script.next();
    if let Some(Fault::Status(status)) = fault {
        return error(status, "injected_failure", "Injected failure.");
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"detail": [{"type": "json_invalid", "loc": ["body"], "msg": "JSON decode error"}]})),
        )
            .into_response();
    };
    let text = request.get("text").and_then(Value::as_str).unwrap_or_default();
    if text.is_empty() {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"detail": [{"type": "missing", "loc": ["body", "text"], "msg": "Field required"}]})),
        )
            .into_response();
    }
    if let Some(voices) = &shared.config.voices
        && !voices.iter().any(|voice| voice == voice_id)
    {
        return error(
            404,
            "voice_not_found",
            &format!("A voice with voice_id {voice_id} was not found."),
        );
    }
    let (rate, ulaw) = match output_format(query) {
        Ok(format) => format,
        Err(message) => return error(400, "invalid_output_format", &message),
    };
    let speed = request.pointer("/voice_settings/speed").and_then(Value::as_f64).unwrap_or(1.0);
    let samples = speech_samples(text, rate, shared.config.ms_per_char, speed);
    let (audio, bytes_per_sample) =
        if ulaw { (mulaw::encode_all(&samples), 1) } else { (samples_to_pcm16le(&samples), 2) };
    let chunk = if streamed {
        rate as usize * shared.config.chunk_ms.max(1) as usize / 1000 * bytes_per_sample
    } else {
        audio.len().max(2)
    };
    let content_type = if ulaw { "audio/basic" } else { "audio/pcm" };
    let request_id = format!("req_{}", crate::speech::random_id());
    stream_audio(audio, chunk, content_type, fault, timing, &[("request-id", request_id)]).await
}

async fn stream(
    State(shared): State<Arc<Shared>>,
    Path(voice_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    synthesize(&shared, &voice_id, query.as_deref(), &headers, &body, true).await
}

async fn convert(
    State(shared): State<Arc<Shared>>,
    Path(voice_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    synthesize(&shared, &voice_id, query.as_deref(), &headers, &body, false).await
}
