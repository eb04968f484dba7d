//! ElevenLabs streaming speech client (`POST {base}/v1/text-to-speech/{voice_id}/stream`) —
//! docs/protocols.md#elevenlabs-tts.
//!
//! Asks for `output_format=pcm_8000` (headerless 16-bit little-endian mono at the telephone
//! rate, so nothing is resampled) and streams the body into the shared μ-law adapter, like
//! every other client. The key goes in the `xi-api-key` header.

use std::time::Duration;

use nixflex_pipeline::ProviderError;
use nixflex_pipeline::tts::{PcmLayout, TtsProvider, TtsRequest, TtsStream};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::llm::http;

const PROVIDER: &str = "elevenlabs";

/// The output format asked for, and its sample rate.
pub const OUTPUT_FORMAT: &str = "pcm_8000";
const PCM_SAMPLE_RATE: u32 = 8000;

/// Where and how to reach ElevenLabs.
#[derive(Debug, Clone)]
pub struct ElevenLabsConfig {
    /// Base URL without `/v1` (default `https://api.elevenlabs.io`).
    pub base_url: String,
    /// The API key; when missing calls fail with `NotConfigured`.
    pub api_key: Option<SecretString>,
    /// The model (default `eleven_flash_v2_5`, their lowest-latency model).
    pub model: String,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// How long to wait for the response head (status).
    pub first_byte_timeout: Duration,
    /// How long the body may stay silent between chunks.
    pub idle_timeout: Duration,
}

impl Default for ElevenLabsConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.elevenlabs.io".to_owned(),
            api_key: None,
            model: "eleven_flash_v2_5".to_owned(),
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(15),
        }
    }
}

/// A streaming ElevenLabs client.
#[derive(Debug, Clone)]
pub struct ElevenLabsClient {
    http: reqwest::Client,
    config: ElevenLabsConfig,
}

impl ElevenLabsClient {
    /// A client for `config`. A missing key is accepted here and reported by each call.
    ///
    /// # Errors
    /// `NotConfigured` when the HTTP client cannot be built.
    pub fn new(config: ElevenLabsConfig) -> Result<Self, ProviderError> {
        let http = http::build_client(config.connect_timeout)?;
        Ok(Self { http, config })
    }

    /// A client sharing an existing connection pool (e.g. one that only reaches public
    /// addresses).
    pub fn with_http_client(config: ElevenLabsConfig, http: reqwest::Client) -> Self {
        Self { http, config }
    }

    /// The JSON body of a speech request.
    pub fn request_body(&self, request: &TtsRequest) -> Value {
        let mut body = json!({ "text": request.text, "model_id": self.config.model });
        // `voice_settings.speed` takes 0.7–1.2; 1.0 is the voice's own pace and is left out.
        if (request.speaking_rate - 1.0).abs() > f32::EPSILON && request.speaking_rate.is_finite() {
            body["voice_settings"] =
                json!({ "speed": http::decimal(request.speaking_rate.clamp(0.7, 1.2)) });
        }
        if let Some(language) = request.language.as_deref().and_then(iso_639_1) {
            body["language_code"] = json!(language);
        }
        body
    }
}

/// The two-letter language of a BCP-47 tag (`en-US` → `en`).
fn iso_639_1(tag: &str) -> Option<String> {
    let primary = tag.split(['-', '_']).next()?.to_ascii_lowercase();
    (primary.len() == 2 && primary.bytes().all(|b| b.is_ascii_lowercase())).then_some(primary)
}

/// Maps an ElevenLabs error answer: `{"detail": {"status", "message"}}` (or FastAPI's list of
/// validation errors for a 422).
pub fn map_error(status: u16, body: &str) -> ProviderError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let detail = parsed.as_ref().and_then(|value| value.get("detail"));
    let code = detail.and_then(|d| d.get("status")).and_then(Value::as_str).unwrap_or("");
    let message = match detail {
        Some(Value::Object(d)) => d.get("message").and_then(Value::as_str).unwrap_or("").to_owned(),
        Some(other) => other.to_string().chars().take(300).collect(),
        None => body.chars().take(300).collect(),
    };
    let detail = if code.is_empty() { message } else { format!("{code}: {message}") };
    let error = http::status_error(PROVIDER, status, &detail);
    // A spent character quota is a 401 `quota_exceeded` or a 429 that waiting does not fix.
    if code == "quota_exceeded" { error.with_retryable(false) } else { error }
}

#[async_trait::async_trait]
impl TtsProvider for ElevenLabsClient {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn synthesize(&self, request: TtsRequest) -> Result<TtsStream, ProviderError> {
        let key = http::require_key(PROVIDER, self.config.api_key.as_ref())?;
        if request.voice_id.is_empty()
            || !request
                .voice_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ProviderError::not_configured(format!(
                "{PROVIDER}: voice id {:?} is not a valid ElevenLabs voice id",
                request.voice_id
            )));
        }
        let path =
            format!("/v1/text-to-speech/{}/stream?output_format={OUTPUT_FORMAT}", request.voice_id);
        let url = http::join_url(PROVIDER, &self.config.base_url, &path)?;
        let started = Instant::now();
        let builder =
            self.http.post(url).header("xi-api-key", key).json(&self.request_body(&request));
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
    fn the_request_names_the_model_and_leaves_defaults_out() {
        let client = ElevenLabsClient::new(ElevenLabsConfig::default()).unwrap();
        let body = client.request_body(&TtsRequest::new("Hi", "voice1"));
        assert_eq!(body, json!({"text": "Hi", "model_id": "eleven_flash_v2_5"}));
        let mut request = TtsRequest::new("Hi", "voice1");
        request.speaking_rate = 2.0;
        request.language = Some("de-DE".to_owned());
        let body = client.request_body(&request);
        assert_eq!(body["voice_settings"]["speed"], json!(1.2));
        assert_eq!(body["language_code"], json!("de"));
    }

    #[test]
    fn errors_map_to_kinds() {
        let auth = map_error(
            401,
            r#"{"detail":{"status":"invalid_api_key","message":"Invalid API key"}}"#,
        );
        assert_eq!(auth.kind, ProviderErrorKind::Auth);
        assert!(auth.message.contains("invalid_api_key"), "{}", auth.message);
        let quota = map_error(401, r#"{"detail":{"status":"quota_exceeded","message":"no"}}"#);
        assert!(!quota.retryable);
        assert!(map_error(429, "{}").retryable);
        assert_eq!(
            map_error(422, r#"{"detail":[{"msg":"x"}]}"#).kind,
            ProviderErrorKind::Upstream { status: 422 }
        );
    }
}
