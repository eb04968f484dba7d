//! Cartesia streaming speech client (`POST {base}/tts/bytes`) — docs/protocols.md#cartesia-tts.
//!
//! Asks for raw `pcm_s16le` at 8 kHz (the telephone rate, so nothing is resampled) and
//! streams the body into the shared μ-law adapter, like every other client. Authenticates with
//! `Authorization: Bearer <key>` and pins the API version with `Cartesia-Version`, as the
//! current official clients do.

use std::time::Duration;

use nixflex_pipeline::ProviderError;
use nixflex_pipeline::tts::{PcmLayout, TtsProvider, TtsRequest, TtsStream};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::llm::http;

const PROVIDER: &str = "cartesia";

/// The API version this client is written against.
pub const API_VERSION: &str = "2025-04-16";
const PCM_SAMPLE_RATE: u32 = 8000;

/// Where and how to reach Cartesia.
#[derive(Debug, Clone)]
pub struct CartesiaConfig {
    /// Base URL (default `https://api.cartesia.ai`).
    pub base_url: String,
    /// The API key; when missing calls fail with `NotConfigured`.
    pub api_key: Option<SecretString>,
    /// The model (default `sonic-3`).
    pub model: String,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// How long to wait for the response head (status).
    pub first_byte_timeout: Duration,
    /// How long the body may stay silent between chunks.
    pub idle_timeout: Duration,
}

impl Default for CartesiaConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.cartesia.ai".to_owned(),
            api_key: None,
            model: "sonic-3".to_owned(),
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(15),
        }
    }
}

/// A streaming Cartesia client.
#[derive(Debug, Clone)]
pub struct CartesiaClient {
    http: reqwest::Client,
    config: CartesiaConfig,
}

impl CartesiaClient {
    /// A client for `config`. A missing key is accepted here and reported by each call.
    ///
    /// # Errors
    /// `NotConfigured` when the HTTP client cannot be built.
    pub fn new(config: CartesiaConfig) -> Result<Self, ProviderError> {
        let http = http::build_client(config.connect_timeout)?;
        Ok(Self { http, config })
    }

    /// A client sharing an existing connection pool (e.g. one that only reaches public
    /// addresses).
    pub fn with_http_client(config: CartesiaConfig, http: reqwest::Client) -> Self {
        Self { http, config }
    }

    /// The JSON body of a speech request.
    pub fn request_body(&self, request: &TtsRequest) -> Value {
        let mut body = json!({
            "model_id": self.config.model,
            "transcript": request.text,
            "voice": { "mode": "id", "id": request.voice_id },
            "output_format": {
                "container": "raw",
                "encoding": "pcm_s16le",
                "sample_rate": PCM_SAMPLE_RATE,
            },
        });
        // `generation_config.speed` takes 0.6–1.5; 1.0 is the voice's own pace and is left out.
        if (request.speaking_rate - 1.0).abs() > f32::EPSILON && request.speaking_rate.is_finite() {
            body["generation_config"] =
                json!({ "speed": http::decimal(request.speaking_rate.clamp(0.6, 1.5)) });
        }
        if let Some(language) =
            request.language.as_deref().and_then(|tag| tag.split(['-', '_']).next())
        {
            let language = language.to_ascii_lowercase();
            if language.len() == 2 {
                body["language"] = json!(language);
            }
        }
        body
    }
}

/// Maps a Cartesia error answer (its body is a short JSON or text message).
pub fn map_error(status: u16, body: &str) -> ProviderError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|value| value.get("message").or_else(|| value.get("error")))
        .and_then(Value::as_str)
        .map_or_else(|| body.chars().take(300).collect(), str::to_owned);
    http::status_error(PROVIDER, status, &message)
}

#[async_trait::async_trait]
impl TtsProvider for CartesiaClient {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn synthesize(&self, request: TtsRequest) -> Result<TtsStream, ProviderError> {
        let key = http::require_key(PROVIDER, self.config.api_key.as_ref())?;
        let url = http::join_url(PROVIDER, &self.config.base_url, "/tts/bytes")?;
        let started = Instant::now();
        let builder = self
            .http
            .post(url)
            .bearer_auth(key)
            .header("cartesia-version", API_VERSION)
            .json(&self.request_body(&request));
        let response = http::send(PROVIDER, builder, self.config.first_byte_timeout).await?;
        let status = response.status();
        if !status.is_success() {
            let body = http::error_body(response, self.config.first_byte_timeout).await;
            return Err(map_error(status.as_u16(), &body));
        }
        let body = http::body_with_idle_timeout(PROVIDER, response, self.config.idle_timeout);
        Ok(TtsStream::from_pcm(Box::pin(body), PCM_SAMPLE_RATE, PcmLayout::Raw, started))
    }
}

#[cfg(test)]
mod tests {
    use nixflex_pipeline::ProviderErrorKind;

    use super::*;

    #[test]
    fn the_request_asks_for_raw_8_khz_pcm_with_the_voice_by_id() {
        let client = CartesiaClient::new(CartesiaConfig::default()).unwrap();
        let mut request = TtsRequest::new("Hi", "a0e99841");
        request.language = Some("fr-FR".to_owned());
        let body = client.request_body(&request);
        assert_eq!(body["voice"], json!({"mode": "id", "id": "a0e99841"}));
        assert_eq!(
            body["output_format"],
            json!({"container": "raw", "encoding": "pcm_s16le", "sample_rate": 8000})
        );
        assert_eq!(body["language"], json!("fr"));
        assert!(body.get("generation_config").is_none());
    }

    #[test]
    fn errors_map_to_kinds() {
        assert_eq!(map_error(401, r#"{"error":"Invalid API key"}"#).kind, ProviderErrorKind::Auth);
        assert!(
            map_error(401, r#"{"error":"Invalid API key"}"#).message.contains("Invalid API key")
        );
        assert_eq!(map_error(429, "slow down").kind, ProviderErrorKind::RateLimited);
        assert_eq!(map_error(500, "").kind, ProviderErrorKind::Upstream { status: 500 });
    }
}
