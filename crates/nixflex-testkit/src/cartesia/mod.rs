//! Cartesia text-to-speech emulator: `POST /tts/bytes`, the audio streamed as it is made —
//! docs/protocols.md#cartesia-tts.
//!
//! The key may come as `Authorization: Bearer <key>` (what the current official clients send)
//! or `X-API-Key: <key>` (older examples); a wrong or missing one is a 401. A
//! `Cartesia-Version` header is required (400 without it). The body needs `model_id`,
//! `transcript`, `voice` (a voice id string, `{"id"}` or `{"mode": "id", "id"}`) and
//! `output_format` `{container: "raw"|"wav", encoding: "pcm_s16le"|"pcm_f32le"|"pcm_mulaw"|"pcm_alaw",
//! sample_rate}`; MP3 is refused with a 400 (the emulator makes no compressed audio). With a
//! voice list configured, any other voice is a 404. Errors are `{"error": message}`. Audio is
//! the deterministic tone of [`nixflex_pipeline::audio::tone::text_tone`], `ms_per_char` per
//! character (divided by `generation_config.speed`). Timing, faults and the request log reuse
//! the Anthropic emulator's types (`after_deltas` counts audio chunks).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use nixflex_pipeline::audio::{mulaw, samples_to_pcm16le, wav};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

pub use crate::speech::{Fault, RecordedRequest, Timing};
use crate::speech::{Scripted, speech_samples, stream_audio};

/// The sample rates Cartesia offers.
pub const SAMPLE_RATES: [u32; 6] = [8000, 16_000, 22_050, 24_000, 44_100, 48_000];

/// Configuration fixed at start.
#[derive(Debug, Clone)]
pub struct CartesiaEmulatorConfig {
    /// The only accepted key; `None` accepts any non-empty key.
    pub api_key: Option<String>,
    /// The voices that exist; `None` accepts any voice id.
    pub voices: Option<Vec<String>>,
    /// Milliseconds of audio per character at speed 1.0 (default 60).
    pub ms_per_char: u32,
    /// Milliseconds of audio per streamed chunk (default 100).
    pub chunk_ms: u32,
}

impl Default for CartesiaEmulatorConfig {
    fn default() -> Self {
        Self { api_key: None, voices: None, ms_per_char: 60, chunk_ms: 100 }
    }
}

struct Shared {
    config: CartesiaEmulatorConfig,
    script: Scripted,
}

/// A running Cartesia emulator; stops when dropped.
pub struct CartesiaEmulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for CartesiaEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CartesiaEmulator").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for CartesiaEmulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl CartesiaEmulator {
    /// Starts an emulator accepting any non-empty key on `127.0.0.1:<free port>`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(CartesiaEmulatorConfig::default()).await
    }

    /// Starts an emulator with `config`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start_with(config: CartesiaEmulatorConfig) -> std::io::Result<Self> {
        let shared = Arc::new(Shared { config, script: Scripted::default() });
        let router =
            Router::new().route("/tts/bytes", post(bytes_endpoint)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(crate::nodelay(listener), router).await {
                tracing::warn!(message = "Cartesia emulator stopped.", %error);
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

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.script.requests()
    }

    /// The exact samples produced for `text` at `sample_rate` and `speed`.
    pub fn speech_samples(&self, text: &str, sample_rate: u32, speed: f64) -> Vec<i16> {
        speech_samples(text, sample_rate, self.shared.config.ms_per_char, speed)
    }
}

fn error(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(json!({ "error": message }))).into_response()
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    bearer.or_else(|| headers.get("x-api-key").and_then(|value| value.to_str().ok()))
}

fn voice_id(voice: Option<&Value>) -> Option<&str> {
    match voice? {
        Value::String(id) => Some(id.as_str()),
        Value::Object(fields) => {
            let mode = fields.get("mode").and_then(Value::as_str).unwrap_or("id");
            if mode == "id" { fields.get("id").and_then(Value::as_str) } else { None }
        }
        _ => None,
    }
    .filter(|id| !id.is_empty())
}

fn encode(samples: &[i16], container: &str, encoding: &str, rate: u32) -> (Vec<u8>, usize) {
    let (data, width): (Vec<u8>, usize) = match encoding {
        "pcm_mulaw" => (mulaw::encode_all(samples), 1),
        "pcm_alaw" => (samples.iter().map(|s| alaw(*s)).collect(), 1),
        "pcm_f32le" => {
            (samples.iter().flat_map(|s| (f32::from(*s) / 32768.0).to_le_bytes()).collect(), 4)
        }
        _ => (samples_to_pcm16le(samples), 2),
    };
    if container == "wav" && encoding == "pcm_s16le" {
        let mut out =
            wav::pcm16_mono_header(rate, u32::try_from(data.len()).unwrap_or(u32::MAX)).to_vec();
        out.extend(data);
        (out, width)
    } else {
        (data, width)
    }
}

/// G.711 A-law of one sample.
fn alaw(sample: i16) -> u8 {
    let sign: u8 = if sample >= 0 { 0x80 } else { 0 };
    let magnitude = (i32::from(sample).unsigned_abs() >> 3).min(0x0FFF);
    let (exponent, mantissa) = if magnitude < 32 {
        (0_u32, (magnitude >> 1) & 0x0F)
    } else {
        let exponent = 31 - magnitude.leading_zeros() - 4;
        (exponent, (magnitude >> exponent) & 0x0F)
    };
    #[allow(clippy::cast_possible_truncation)] // exponent ≤ 7, mantissa ≤ 15
    let code = (sign | ((exponent as u8) << 4) | mantissa as u8) ^ 0x55;
    code
}

async fn bytes_endpoint(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.script.record("/tts/bytes", &headers, &body);
    let authorised = match (presented_key(&headers), &shared.config.api_key) {
        (Some(presented), Some(expected)) => presented == expected,
        (Some(presented), None) => !presented.trim().is_empty(),
        (None, _) => false,
    };
    if !authorised {
        return error(401, "Invalid API key");
    }
    if headers.get("cartesia-version").is_none() {
        return error(400, "Cartesia-Version header is required");
    }
    let (fault, timing) = shared.script.next();
    if let Some(Fault::Status(status)) = fault {
        return error(status, "Injected failure.");
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "invalid JSON body");
    };
    let text = request.get("transcript").and_then(Value::as_str).unwrap_or_default();
    if text.trim().is_empty() {
        return error(400, "transcript is required");
    }
    if request.get("model_id").and_then(Value::as_str).is_none_or(str::is_empty) {
        return error(400, "model_id is required");
    }
    let Some(voice) = voice_id(request.get("voice")) else {
        return error(400, "voice must be a voice id");
    };
    if let Some(voices) = &shared.config.voices
        && !voices.iter().any(|known| known == voice)
    {
        return error(404, &format!("Voice {voice} not found"));
    }
    let format = request.get("output_format").cloned().unwrap_or(Value::Null);
    let container = format.get("container").and_then(Value::as_str).unwrap_or_default();
    let encoding = format.get("encoding").and_then(Value::as_str).unwrap_or_default();
    let rate = format.get("sample_rate").and_then(Value::as_u64).unwrap_or_default();
    if !matches!(container, "raw" | "wav") {
        return error(400, &format!("the emulator does not produce container {container:?}"));
    }
    if !matches!(encoding, "pcm_s16le" | "pcm_f32le" | "pcm_mulaw" | "pcm_alaw") {
        return error(400, &format!("unsupported encoding {encoding:?}"));
    }
    let Some(rate) = u32::try_from(rate).ok().filter(|rate| SAMPLE_RATES.contains(rate)) else {
        return error(400, &format!("unsupported sample_rate {rate}"));
    };
    let speed = request.pointer("/generation_config/speed").and_then(Value::as_f64).unwrap_or(1.0);
    let samples = speech_samples(text, rate, shared.config.ms_per_char, speed);
    let (audio, width) = encode(&samples, container, encoding, rate);
    let chunk = rate as usize * shared.config.chunk_ms.max(1) as usize / 1000 * width;
    let content_type = if container == "wav" { "audio/wav" } else { "application/octet-stream" };
    stream_audio(audio, chunk, content_type, fault, timing, &[]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_law_follows_g711() {
        // Reference values of ITU-T G.711 A-law (silence and the two extremes).
        assert_eq!(alaw(0), 0xD5);
        assert_eq!(alaw(-1), 0x55);
        assert_eq!(alaw(32767), 0xAA);
        assert_eq!(alaw(-32768), 0x2A);
    }
}
