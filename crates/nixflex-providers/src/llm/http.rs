//! HTTP plumbing shared by the LLM and TTS clients: building a `reqwest` client, joining base
//! URLs, timeouts on the response head and between body chunks, and mapping transport errors
//! to [`ProviderError`]. Error messages never include headers, so API keys cannot leak into
//! them.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use nixflex_pipeline::ProviderError;
use secrecy::{ExposeSecret, SecretString};

/// Installs the ring crypto provider for rustls if the process has none yet (the binary
/// normally installs it at startup; tests and tools may not). Idempotent.
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: some provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// An `f32` setting as the JSON number a person would write (`0.7`, not the
/// `0.699999988079071` a plain `f32` → `f64` conversion gives).
pub(crate) fn decimal(value: f32) -> serde_json::Value {
    let shortest = value.to_string().parse::<f64>().unwrap_or_else(|_| f64::from(value));
    serde_json::Number::from_f64(shortest)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// A `reqwest` client with the given connect timeout.
///
/// # Errors
/// `NotConfigured` if the TLS backend cannot be set up.
pub(crate) fn build_client(connect_timeout: Duration) -> Result<reqwest::Client, ProviderError> {
    ensure_crypto_provider();
    reqwest::Client::builder().connect_timeout(connect_timeout).build().map_err(|error| {
        ProviderError::not_configured(format!("cannot build HTTP client: {error}"))
    })
}

/// `base` (with or without a trailing slash) followed by `path`, checked to be an http(s) URL.
///
/// # Errors
/// `NotConfigured` when the result is not a valid http or https URL.
pub(crate) fn join_url(provider: &str, base: &str, path: &str) -> Result<String, ProviderError> {
    let joined = format!("{}{path}", base.trim_end_matches('/'));
    match url::Url::parse(&joined) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(joined),
        _ => Err(ProviderError::not_configured(format!(
            "{provider}: base URL {base:?} is not a valid http(s) URL"
        ))),
    }
}

/// The API key, or a `NotConfigured` error naming the provider.
///
/// # Errors
/// `NotConfigured` when the key is missing or empty.
pub(crate) fn require_key<'a>(
    provider: &str,
    key: Option<&'a SecretString>,
) -> Result<&'a str, ProviderError> {
    match key.map(ExposeSecret::expose_secret) {
        Some(key) if !key.trim().is_empty() => Ok(key),
        _ => Err(ProviderError::not_configured(format!(
            "{provider}: no API key is configured; set it to use this provider"
        ))),
    }
}

/// Maps a `reqwest` failure (connect, timeout, broken body) to a retryable error.
pub(crate) fn map_reqwest_error(provider: &str, error: &reqwest::Error) -> ProviderError {
    if error.is_timeout() {
        ProviderError::timeout(format!("{provider}: request timed out"))
    } else if error.is_connect() {
        ProviderError::transport(format!("{provider}: cannot connect: {error}"))
    } else {
        ProviderError::transport(format!("{provider}: {error}"))
    }
}

/// Sends the request and waits at most `timeout` for the response head.
///
/// # Errors
/// `Timeout` or `Transport` errors.
pub(crate) async fn send(
    provider: &str,
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<reqwest::Response, ProviderError> {
    match tokio::time::timeout(timeout, request.send()).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) => Err(map_reqwest_error(provider, &error)),
        Err(_) => Err(ProviderError::timeout(format!(
            "{provider}: no response within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// Reads the (small) body of an error response, at most `timeout` long.
pub(crate) async fn error_body(response: reqwest::Response, timeout: Duration) -> String {
    match tokio::time::timeout(timeout, response.text()).await {
        Ok(Ok(text)) => text.chars().take(2000).collect(),
        _ => String::new(),
    }
}

/// The default classification of an HTTP error status.
pub(crate) fn status_error(provider: &str, status: u16, detail: &str) -> ProviderError {
    let message = format!("{provider}: HTTP {status}: {detail}");
    match status {
        401 | 403 => ProviderError::auth(message),
        429 => ProviderError::rate_limited(message),
        _ => ProviderError::upstream(status, message),
    }
}

/// The response body as a stream of chunks that fails with `Timeout` when no chunk arrives
/// within `idle_timeout`, and ends after the first error.
pub(crate) fn body_with_idle_timeout(
    provider: &'static str,
    response: reqwest::Response,
    idle_timeout: Duration,
) -> impl Stream<Item = Result<Bytes, ProviderError>> + Send + 'static {
    let body = response.bytes_stream().boxed();
    futures::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        match tokio::time::timeout(idle_timeout, body.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
            Ok(Some(Err(error))) => Some((Err(map_reqwest_error(provider, &error)), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(ProviderError::timeout(format!(
                    "{provider}: no data for {} ms",
                    idle_timeout.as_millis()
                ))),
                None,
            )),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_url_accepts_bases_with_and_without_a_trailing_slash() {
        assert_eq!(join_url("x", "http://h:1/v1/", "/chat").unwrap(), "http://h:1/v1/chat");
        assert_eq!(join_url("x", "https://h", "/v1/messages").unwrap(), "https://h/v1/messages");
        let error = join_url("x", "not a url", "/p").unwrap_err();
        assert_eq!(error.kind, nixflex_pipeline::ProviderErrorKind::NotConfigured);
    }

    #[test]
    fn decimals_serialise_as_written() {
        assert_eq!(decimal(0.7).to_string(), "0.7");
        assert_eq!(decimal(1.0).to_string(), "1.0");
        assert_eq!(decimal(f32::NAN), serde_json::Value::Null);
    }

    #[test]
    fn a_missing_or_blank_key_is_not_configured() {
        assert!(require_key("anthropic", None).is_err());
        let blank = SecretString::from(" ");
        assert!(require_key("anthropic", Some(&blank)).is_err());
        let key = SecretString::from("k");
        assert_eq!(require_key("anthropic", Some(&key)).unwrap(), "k");
    }

    #[test]
    fn statuses_map_to_auth_rate_limit_and_upstream_errors() {
        assert_eq!(status_error("p", 401, "").kind, nixflex_pipeline::ProviderErrorKind::Auth);
        assert!(status_error("p", 429, "").retryable);
        assert!(status_error("p", 503, "").retryable);
        assert!(!status_error("p", 400, "").retryable);
    }
}
