//! Inworld TTS client (HTTP streaming, `POST {base}/tts/v1/voice:stream`) — docs/protocols.md#inworld-tts.
//!
//! The response is newline-delimited JSON, one `{"result":{"audioContent":"<base64>"}}` per
//! line (or `{"error":{…}}`). With `LINEAR16` every chunk carries its own WAV header, which the
//! shared adapter strips ([`PcmLayout::WavPerChunk`]). The key is sent verbatim as
//! `Authorization: Basic <key>` (Inworld hands out the already-encoded credential).

use std::time::Duration;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use nixflex_pipeline::ProviderError;
use nixflex_pipeline::tts::{PcmLayout, TtsProvider, TtsRequest, TtsStream};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::llm::http;

const PROVIDER: &str = "inworld";

/// The audio encoding asked of Inworld.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InworldEncoding {
    /// 16-bit PCM with a WAV header on every chunk.
    Linear16,
    /// Headerless 16-bit PCM.
    Pcm,
}

/// Where and how to reach Inworld.
#[derive(Debug, Clone)]
pub struct InworldConfig {
    /// Base URL (default `https://api.inworld.ai`).
    pub base_url: String,
    /// The Base64 credential from the Inworld portal; when missing calls fail with
    /// `NotConfigured`.
    pub api_key: Option<SecretString>,
    /// The model (default `inworld-tts-1.5-max`).
    pub model_id: String,
    /// The encoding asked for (default `LINEAR16`).
    pub encoding: InworldEncoding,
    /// The sample rate asked for; resampled to 8 kHz locally (default 24000).
    pub sample_rate_hz: u32,
    /// Sampling temperature; `None` leaves Inworld's default.
    pub temperature: Option<f32>,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// How long to wait for the response head (status).
    pub first_byte_timeout: Duration,
    /// How long the body may stay silent between chunks.
    pub idle_timeout: Duration,
}

impl Default for InworldConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.inworld.ai".to_owned(),
            api_key: None,
            model_id: "inworld-tts-1.5-max".to_owned(),
            encoding: InworldEncoding::Linear16,
            sample_rate_hz: 24_000,
            temperature: None,
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(15),
        }
    }
}

/// A streaming Inworld TTS client.
#[derive(Debug, Clone)]
pub struct InworldClient {
    http: reqwest::Client,
    config: InworldConfig,
}

impl InworldClient {
    /// A client for `config`. A missing key is accepted here and reported by each call.
    ///
    /// # Errors
    /// `NotConfigured` when the HTTP client cannot be built.
    pub fn new(config: InworldConfig) -> Result<Self, ProviderError> {
        let http = http::build_client(config.connect_timeout)?;
        Ok(Self { http, config })
    }

    /// A client sharing an existing connection pool.
    pub fn with_http_client(config: InworldConfig, http: reqwest::Client) -> Self {
        Self { http, config }
    }

    /// The JSON body of a synthesis request.
    pub fn request_body(&self, request: &TtsRequest) -> Value {
        let encoding = match self.config.encoding {
            InworldEncoding::Linear16 => "LINEAR16",
            InworldEncoding::Pcm => "PCM",
        };
        let mut body = json!({
            "text": request.text,
            "voiceId": request.voice_id,
            "modelId": self.config.model_id,
            "audioConfig": {
                "audioEncoding": encoding,
                "sampleRateHertz": self.config.sample_rate_hz,
                "speakingRate": http::decimal(request.speaking_rate),
            },
        });
        if let Some(temperature) = self.config.temperature {
            body["temperature"] = http::decimal(temperature);
        }
        body
    }
}

/// Maps an Inworld error (Google-style `{"code": <grpc code>, "message"}` or
/// `{"error": {…}}`) to a [`ProviderError`].
pub fn map_error(status: Option<u16>, body: &str) -> ProviderError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().map(|value| value.get("error").unwrap_or(value));
    let detail = error
        .and_then(|error| error.get("message"))
        .and_then(Value::as_str)
        .map_or_else(|| body.chars().take(300).collect(), str::to_owned);
    if let Some(status) = status {
        return http::status_error(PROVIDER, status, &detail);
    }
    let message = format!("{PROVIDER}: stream error: {detail}");
    // gRPC status codes, as carried by Google-style JSON errors.
    match error.and_then(|error| error.get("code")).and_then(Value::as_u64) {
        Some(7 | 16) => ProviderError::auth(message),
        Some(8) => ProviderError::rate_limited(message),
        Some(4) => ProviderError::timeout(message),
        Some(3 | 9 | 11) => ProviderError::upstream(400, message),
        Some(5) => ProviderError::upstream(404, message),
        Some(14) => ProviderError::upstream(503, message),
        _ => ProviderError::upstream(500, message),
    }
}

/// Splits the NDJSON body into decoded audio chunks (one per line).
fn ndjson_audio<S>(body: S) -> impl Stream<Item = Result<Bytes, ProviderError>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, ProviderError>> + Send + Unpin + 'static,
{
    struct Lines<S> {
        body: S,
        buffer: BytesMut,
        done: bool,
    }
    let state = Lines { body, buffer: BytesMut::new(), done: false };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(newline) = state.buffer.iter().position(|&byte| byte == b'\n') {
                let line = state.buffer.split_to(newline + 1);
                match parse_line(&line) {
                    Ok(Some(audio)) => return Some((Ok(audio), state)),
                    Ok(None) => continue,
                    Err(error) => {
                        state.done = true;
                        state.buffer.clear();
                        return Some((Err(error), state));
                    }
                }
            }
            if state.done {
                // A last line without a trailing newline.
                if state.buffer.is_empty() {
                    return None;
                }
                let line = state.buffer.split();
                return match parse_line(&line) {
                    Ok(Some(audio)) => Some((Ok(audio), state)),
                    Ok(None) => None,
                    Err(error) => Some((Err(error), state)),
                };
            }
            match state.body.next().await {
                Some(Ok(chunk)) => state.buffer.extend_from_slice(&chunk),
                Some(Err(error)) => {
                    state.done = true;
                    state.buffer.clear();
                    return Some((Err(error), state));
                }
                None => state.done = true,
            }
        }
    })
}

/// The audio of one NDJSON line (`None` for blank lines and lines without audio).
fn parse_line(line: &[u8]) -> Result<Option<Bytes>, ProviderError> {
    let line = line.trim_ascii();
    if line.is_empty() {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(line).map_err(|error| {
        ProviderError::protocol(format!("{PROVIDER}: line is not JSON: {error}"))
    })?;
    if value.get("error").is_some_and(|error| !error.is_null()) {
        return Err(map_error(None, &String::from_utf8_lossy(line)));
    }
    let Some(content) = value.pointer("/result/audioContent").and_then(Value::as_str) else {
        return Ok(None);
    };
    let audio = base64::engine::general_purpose::STANDARD.decode(content).map_err(|error| {
        ProviderError::protocol(format!("{PROVIDER}: audioContent is not base64: {error}"))
    })?;
    Ok(Some(Bytes::from(audio)))
}

#[async_trait::async_trait]
impl TtsProvider for InworldClient {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn synthesize(&self, request: TtsRequest) -> Result<TtsStream, ProviderError> {
        let key = http::require_key(PROVIDER, self.config.api_key.as_ref())?;
        let url = http::join_url(PROVIDER, &self.config.base_url, "/tts/v1/voice:stream")?;
        let mut authorization = reqwest::header::HeaderValue::from_str(&format!("Basic {key}"))
            .map_err(|_| {
                ProviderError::not_configured("inworld: the API key is not a valid header value")
            })?;
        authorization.set_sensitive(true);
        let started = Instant::now();
        let builder = self
            .http
            .post(url)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .json(&self.request_body(&request));
        let response = http::send(PROVIDER, builder, self.config.first_byte_timeout).await?;
        let status = response.status();
        if !status.is_success() {
            let body = http::error_body(response, self.config.first_byte_timeout).await;
            return Err(map_error(Some(status.as_u16()), &body));
        }
        let body = http::body_with_idle_timeout(PROVIDER, response, self.config.idle_timeout);
        let audio = ndjson_audio(Box::pin(body));
        let layout = match self.config.encoding {
            InworldEncoding::Linear16 => PcmLayout::WavPerChunk,
            InworldEncoding::Pcm => PcmLayout::Raw,
        };
        Ok(TtsStream::from_pcm(Box::pin(audio), self.config.sample_rate_hz, layout, started))
    }
}

#[cfg(test)]
mod tests {
    use nixflex_pipeline::ProviderErrorKind;

    use super::*;

    #[tokio::test]
    async fn ndjson_lines_split_across_chunks_decode_in_order() {
        let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let body = format!(
            "{{\"result\":{{\"audioContent\":\"{}\"}}}}\n\n{{\"result\":{{\"audioContent\":\"{}\",\"timestampInfo\":{{}}}}}}",
            encode(&[1, 2, 3]),
            encode(&[4, 5])
        );
        let pieces: Vec<Result<Bytes, ProviderError>> =
            body.as_bytes().chunks(7).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let audio: Vec<_> = ndjson_audio(futures::stream::iter(pieces)).collect().await;
        let audio: Vec<Bytes> = audio.into_iter().map(Result::unwrap).collect();
        assert_eq!(audio, vec![Bytes::from_static(&[1, 2, 3]), Bytes::from_static(&[4, 5])]);
    }

    #[test]
    fn an_error_line_maps_its_grpc_code() {
        let error =
            parse_line(br#"{"error":{"code":8,"message":"quota","details":[]}}"#).unwrap_err();
        assert_eq!(error.kind, ProviderErrorKind::RateLimited);
        let error = map_error(Some(401), r#"{"code":16,"message":"Unauthenticated"}"#);
        assert_eq!(error.kind, ProviderErrorKind::Auth);
    }

    #[test]
    fn the_request_body_matches_the_documented_shape() {
        let client = InworldClient::new(InworldConfig::default()).unwrap();
        let body = client.request_body(&TtsRequest::new("Hello", "Ashley"));
        assert_eq!(
            body,
            json!({
                "text": "Hello",
                "voiceId": "Ashley",
                "modelId": "inworld-tts-1.5-max",
                "audioConfig": {"audioEncoding": "LINEAR16", "sampleRateHertz": 24000, "speakingRate": 1.0},
            })
        );
    }
}
