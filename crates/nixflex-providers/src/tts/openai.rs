//! OpenAI-compatible speech client (`POST {base}/audio/speech`) — docs/protocols.md#openai-compatible-endpoints.
//!
//! Asks for `response_format: "pcm"` (raw 24 kHz 16-bit little-endian mono) and streams the
//! body into the shared 8 kHz μ-law adapter.

use std::time::Duration;

use nixflex_pipeline::ProviderError;
use nixflex_pipeline::tts::{PcmLayout, TtsProvider, TtsRequest, TtsStream};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::llm::http;

const PROVIDER: &str = "openai-speech";

/// The rate of OpenAI's `pcm` format.
const PCM_SAMPLE_RATE: u32 = 24_000;

/// Where and how to reach an OpenAI-compatible speech endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiSpeechConfig {
    /// Base URL including `/v1` (default `https://api.openai.com/v1`).
    pub base_url: String,
    /// The API key; when missing calls fail with `NotConfigured`.
    pub api_key: Option<SecretString>,
    /// The model (default `gpt-4o-mini-tts`).
    pub model: String,
    /// Voice instructions (not supported by `tts-1*` models).
    pub instructions: Option<String>,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// How long to wait for the response head (status).
    pub first_byte_timeout: Duration,
    /// How long the body may stay silent between chunks.
    pub idle_timeout: Duration,
}

impl Default for OpenAiSpeechConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com/v1".to_owned(),
            api_key: None,
            model: "gpt-4o-mini-tts".to_owned(),
            instructions: None,
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(15),
        }
    }
}

/// A streaming OpenAI-compatible speech client.
#[derive(Debug, Clone)]
pub struct OpenAiSpeechClient {
    http: reqwest::Client,
    config: OpenAiSpeechConfig,
}

impl OpenAiSpeechClient {
    /// A client for `config`. A missing key is accepted here and reported by each call.
    ///
    /// # Errors
    /// `NotConfigured` when the HTTP client cannot be built.
    pub fn new(config: OpenAiSpeechConfig) -> Result<Self, ProviderError> {
        let http = http::build_client(config.connect_timeout)?;
        Ok(Self { http, config })
    }

    /// A client sharing an existing connection pool.
    pub fn with_http_client(config: OpenAiSpeechConfig, http: reqwest::Client) -> Self {
        Self { http, config }
    }

    /// The JSON body of a speech request.
    pub fn request_body(&self, request: &TtsRequest) -> Value {
        let mut body = json!({
            "model": self.config.model,
            "input": request.text,
            "voice": request.voice_id,
            "response_format": "pcm",
            "speed": http::decimal(request.speaking_rate),
        });
        if let Some(instructions) = &self.config.instructions {
            body["instructions"] = json!(instructions);
        }
        body
    }
}

#[async_trait::async_trait]
impl TtsProvider for OpenAiSpeechClient {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn synthesize(&self, request: TtsRequest) -> Result<TtsStream, ProviderError> {
        let key = http::require_key(PROVIDER, self.config.api_key.as_ref())?;
        let url = http::join_url(PROVIDER, &self.config.base_url, "/audio/speech")?;
        let started = Instant::now();
        let builder = self.http.post(url).bearer_auth(key).json(&self.request_body(&request));
        let response = http::send(PROVIDER, builder, self.config.first_byte_timeout).await?;
        let status = response.status();
        if !status.is_success() {
            let body = http::error_body(response, self.config.first_byte_timeout).await;
            return Err(crate::llm::openai::map_error(Some(status.as_u16()), &body));
        }
        let body = http::body_with_idle_timeout(PROVIDER, response, self.config.idle_timeout);
        Ok(TtsStream::from_pcm(Box::pin(body), PCM_SAMPLE_RATE, PcmLayout::Raw, started))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_asks_for_raw_pcm() {
        let client = OpenAiSpeechClient::new(OpenAiSpeechConfig::default()).unwrap();
        let body = client.request_body(&TtsRequest::new("Hi", "alloy"));
        assert_eq!(body["response_format"], json!("pcm"));
        assert_eq!(body["voice"], json!("alloy"));
        assert_eq!(body["input"], json!("Hi"));
    }
}
