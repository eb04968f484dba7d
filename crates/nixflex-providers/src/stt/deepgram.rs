//! Deepgram live transcription client (WebSocket `/v1/listen`) — docs/protocols.md#deepgram-live.
//!
//! One WebSocket per session. Audio goes out as binary frames; `KeepAlive` text frames go out
//! by themselves whenever nothing was sent for `keep_alive_interval` (Deepgram closes an idle
//! socket after 10 s with `NET-0001`); `Finalize` and `CloseStream` map to
//! [`SttInput::finalize`](nixflex_pipeline::stt::SttInput::finalize) and `close`. Incoming
//! `Results`, `SpeechStarted`, `UtteranceEnd`, `Metadata` and `Error` messages become
//! [`SttEvent`]s. The socket lives in one task per session that ends when the input is closed
//! or dropped, the listener is dropped, or Deepgram closes.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use nixflex_pipeline::ProviderError;
use nixflex_pipeline::stt::{
    AudioEncoding, SttCommand, SttDriver, SttEvent, SttEvents, SttInput, SttOptions, SttProvider,
    stt_channel,
};
use secrecy::SecretString;
use serde_json::Value;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::llm::http;

const PROVIDER: &str = "deepgram";

/// Where and how to reach Deepgram.
#[derive(Debug, Clone)]
pub struct DeepgramConfig {
    /// Base URL (default `wss://api.deepgram.com`); `http(s)` is turned into `ws(s)`.
    pub base_url: String,
    /// The API key; when missing `open` fails with `NotConfigured`.
    pub api_key: Option<SecretString>,
    /// The model (default `nova-3`).
    pub model: String,
    /// Whether to ask for smart formatting (punctuation, numbers).
    pub smart_format: bool,
    /// Timeout of the TCP/TLS connect and WebSocket upgrade.
    pub connect_timeout: Duration,
    /// Send a `KeepAlive` when nothing was sent for this long (Deepgram: every 3–5 s).
    pub keep_alive_interval: Duration,
    /// After `CloseStream`, how long to wait for the last results and the close.
    pub close_timeout: Duration,
    /// Audio chunks that may queue before new ones are dropped.
    pub audio_queue: usize,
}

impl Default for DeepgramConfig {
    fn default() -> Self {
        Self {
            base_url: "wss://api.deepgram.com".to_owned(),
            api_key: None,
            model: "nova-3".to_owned(),
            smart_format: true,
            connect_timeout: Duration::from_secs(5),
            keep_alive_interval: Duration::from_secs(4),
            close_timeout: Duration::from_secs(3),
            audio_queue: 250,
        }
    }
}

/// A Deepgram live-transcription client.
#[derive(Debug, Clone)]
pub struct DeepgramClient {
    config: DeepgramConfig,
}

impl DeepgramClient {
    /// A client for `config`. A missing API key is accepted here and reported by `open`.
    pub fn new(config: DeepgramConfig) -> Self {
        http::ensure_crypto_provider();
        Self { config }
    }

    /// The `/v1/listen` URL with the query for `options`.
    ///
    /// # Errors
    /// `NotConfigured` when the base URL is not a ws(s) or http(s) URL.
    pub fn listen_url(&self, options: &SttOptions) -> Result<url::Url, ProviderError> {
        let base = self.config.base_url.trim_end_matches('/');
        let invalid = || {
            ProviderError::not_configured(format!(
                "{PROVIDER}: base URL {:?} is not a valid ws(s) URL",
                self.config.base_url
            ))
        };
        let mut url = url::Url::parse(&format!("{base}/v1/listen")).map_err(|_| invalid())?;
        let scheme = match url.scheme() {
            "ws" | "http" => "ws",
            "wss" | "https" => "wss",
            _ => return Err(invalid()),
        };
        url.set_scheme(scheme).map_err(|()| invalid())?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("model", &self.config.model);
            query.append_pair(
                "encoding",
                match options.encoding {
                    AudioEncoding::Mulaw => "mulaw",
                    AudioEncoding::Linear16 => "linear16",
                },
            );
            query.append_pair("sample_rate", &options.sample_rate.to_string());
            query.append_pair("channels", "1");
            query.append_pair("interim_results", bool_str(options.interim_results));
            match options.endpointing {
                Some(silence) => query.append_pair("endpointing", &silence.as_millis().to_string()),
                None => query.append_pair("endpointing", "false"),
            };
            // Deepgram only sends UtteranceEnd with interim results on.
            if let (Some(gap), true) = (options.utterance_end, options.interim_results) {
                query.append_pair("utterance_end_ms", &gap.as_millis().to_string());
            }
            query.append_pair("vad_events", "true");
            query.append_pair("smart_format", bool_str(self.config.smart_format));
            query.append_pair("language", &options.language);
            // Nova-3 boosts with `keyterm` (one per term); older models with `keywords`.
            let keyterm = self.config.model.starts_with("nova-3");
            for keyword in options.keywords.iter().filter(|k| !k.trim().is_empty()) {
                if keyterm {
                    query.append_pair("keyterm", keyword);
                } else {
                    query.append_pair("keywords", keyword);
                }
            }
        }
        Ok(url)
    }
}

fn bool_str(value: bool) -> &'static str {
    if value { "true" } else { "false" }
}

fn map_handshake_error(error: tungstenite::Error) -> ProviderError {
    match error {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            let detail = response
                .headers()
                .get("dg-error")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
                .or_else(|| {
                    response.body().as_ref().map(|body| String::from_utf8_lossy(body).into_owned())
                })
                .unwrap_or_default();
            http::status_error(PROVIDER, status, &detail)
        }
        other => ProviderError::transport(format!("{PROVIDER}: cannot connect: {other}")),
    }
}

#[async_trait::async_trait]
impl SttProvider for DeepgramClient {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn open(&self, options: SttOptions) -> Result<(SttInput, SttEvents), ProviderError> {
        let key = http::require_key(PROVIDER, self.config.api_key.as_ref())?;
        let url = self.listen_url(&options)?;
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|error| ProviderError::not_configured(format!("{PROVIDER}: {error}")))?;
        let mut authorization = HeaderValue::from_str(&format!("Token {key}")).map_err(|_| {
            ProviderError::not_configured("deepgram: the API key is not a valid header value")
        })?;
        authorization.set_sensitive(true);
        request.headers_mut().insert(AUTHORIZATION, authorization);
        // Small reads (results are a few hundred bytes) and no Nagle delay on 20 ms audio frames.
        let websocket_config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(4096);
        let connect =
            tokio_tungstenite::connect_async_with_config(request, Some(websocket_config), true);
        let (socket, _response) =
            match tokio::time::timeout(self.config.connect_timeout, connect).await {
                Ok(Ok(connected)) => connected,
                Ok(Err(error)) => return Err(map_handshake_error(error)),
                Err(_) => {
                    return Err(ProviderError::timeout(format!(
                        "{PROVIDER}: no connection within {} ms",
                        self.config.connect_timeout.as_millis()
                    )));
                }
            };
        let (input, driver, events) = stt_channel(self.config.audio_queue);
        tokio::spawn(run_session(socket, driver, self.config.clone()));
        Ok((input, events))
    }
}

/// What the session loop does next.
enum Step {
    Continue,
    /// We asked to close: keep reading until Deepgram closes or the close timeout.
    Closing,
    /// The session is over (Closed already sent or nobody listens).
    Stop,
}

async fn run_session<S>(
    socket: tokio_tungstenite::WebSocketStream<S>,
    mut driver: SttDriver,
    config: DeepgramConfig,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = socket.split();
    let mut last_sent = Instant::now();
    let mut closing_deadline: Option<Instant> = None;
    loop {
        let keep_alive_at = last_sent + config.keep_alive_interval;
        let step = tokio::select! {
            command = driver.commands.recv(), if closing_deadline.is_none() => {
                let close = matches!(command, Some(SttCommand::Close) | None);
                let message = match command {
                    Some(SttCommand::Audio(audio)) => Message::Binary(audio),
                    Some(SttCommand::Finalize) => Message::text(r#"{"type":"Finalize"}"#),
                    Some(SttCommand::KeepAlive) => Message::text(r#"{"type":"KeepAlive"}"#),
                    Some(SttCommand::Close) | None => Message::text(r#"{"type":"CloseStream"}"#),
                };
                last_sent = Instant::now();
                if let Err(error) = sink.send(message).await {
                    let error = ProviderError::transport(format!("{PROVIDER}: send failed: {error}"));
                    finish(&driver, Some(error)).await;
                    Step::Stop
                } else if close {
                    Step::Closing
                } else {
                    Step::Continue
                }
            }
            () = tokio::time::sleep_until(keep_alive_at), if closing_deadline.is_none() => {
                last_sent = Instant::now();
                match sink.send(Message::text(r#"{"type":"KeepAlive"}"#)).await {
                    Ok(()) => Step::Continue,
                    Err(error) => {
                        let error = ProviderError::transport(format!("{PROVIDER}: keep-alive failed: {error}"));
                        finish(&driver, Some(error)).await;
                        Step::Stop
                    }
                }
            }
            () = sleep_until_deadline(closing_deadline) => {
                finish(&driver, None).await;
                Step::Stop
            }
            message = stream.next() => handle_message(message, &driver).await,
        };
        match step {
            Step::Continue => {}
            Step::Closing => {
                closing_deadline = Some(Instant::now() + config.close_timeout);
            }
            Step::Stop => break,
        }
    }
    // Best effort: the peer may already be gone.
    let _ = sink.close().await;
}

async fn sleep_until_deadline(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Sends the final error (if any) and `Closed`.
async fn finish(driver: &SttDriver, error: Option<ProviderError>) {
    if let Some(error) = error {
        let _ = driver.events.send(SttEvent::Error(error)).await;
    }
    let _ = driver.events.send(SttEvent::Closed).await;
}

async fn handle_message(
    message: Option<Result<Message, tungstenite::Error>>,
    driver: &SttDriver,
) -> Step {
    let message = match message {
        Some(Ok(message)) => message,
        Some(Err(error)) => {
            let error = ProviderError::transport(format!("{PROVIDER}: connection lost: {error}"));
            finish(driver, Some(error)).await;
            return Step::Stop;
        }
        None => {
            let error = ProviderError::transport(format!(
                "{PROVIDER}: connection closed without a close frame"
            ));
            finish(driver, Some(error)).await;
            return Step::Stop;
        }
    };
    match message {
        Message::Text(text) => {
            let events = match parse_message(&text) {
                Ok(events) => events,
                Err(error) => vec![SttEvent::Error(error)],
            };
            for event in events {
                if driver.events.send(event).await.is_err() {
                    // Nobody listens any more: end the session.
                    return Step::Stop;
                }
            }
            Step::Continue
        }
        Message::Close(frame) => {
            finish(driver, close_error(frame.as_ref())).await;
            Step::Stop
        }
        Message::Binary(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
            Step::Continue
        }
    }
}

/// The error a close frame stands for (`None` for a normal close).
fn close_error(frame: Option<&CloseFrame>) -> Option<ProviderError> {
    let frame = frame?;
    let reason = frame.reason.as_str();
    // Deepgram's reason text links "dpgr.am/net0001"; the error code is spelled NET-0001.
    let lower = reason.to_ascii_lowercase();
    let idle = lower.contains("net0001") || lower.contains("net-0001");
    match frame.code {
        CloseCode::Normal => None,
        _ if idle => Some(ProviderError::timeout(format!(
            "{PROVIDER}: closed for lack of audio or keep-alive (NET-0001): {reason}"
        ))),
        CloseCode::Policy | CloseCode::Invalid | CloseCode::Unsupported | CloseCode::Size => {
            Some(ProviderError::protocol(format!(
                "{PROVIDER}: closed with code {}: {reason}",
                u16::from(frame.code)
            )))
        }
        code => Some(ProviderError::upstream(
            500,
            format!("{PROVIDER}: closed with code {}: {reason}", u16::from(code)),
        )),
    }
}

/// The events of one Deepgram JSON message.
///
/// # Errors
/// `Protocol` when the message is not JSON; an upstream error for `Error` messages.
pub fn parse_message(text: &str) -> Result<Vec<SttEvent>, ProviderError> {
    let value: Value = serde_json::from_str(text).map_err(|error| {
        ProviderError::protocol(format!("{PROVIDER}: message is not JSON: {error}"))
    })?;
    let event = match value.get("type").and_then(Value::as_str) {
        Some("Results") => {
            let alternative = value.pointer("/channel/alternatives/0");
            let text = alternative
                .and_then(|a| a.get("transcript"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let flag = |name: &str| value.get(name).and_then(Value::as_bool).unwrap_or(false);
            if flag("is_final") {
                #[allow(clippy::cast_possible_truncation)] // a confidence is within 0..=1
                let confidence = alternative
                    .and_then(|a| a.get("confidence"))
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0) as f32;
                let language = alternative
                    .and_then(|a| a.pointer("/languages/0"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                SttEvent::Final {
                    text,
                    confidence,
                    speech_final: flag("speech_final"),
                    from_finalize: flag("from_finalize"),
                    language,
                }
            } else if text.is_empty() {
                return Ok(Vec::new());
            } else {
                SttEvent::Interim { text }
            }
        }
        Some("SpeechStarted") => SttEvent::SpeechStarted,
        Some("UtteranceEnd") => SttEvent::UtteranceEnd,
        Some("Error") => {
            let field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or_default();
            SttEvent::Error(ProviderError::upstream(
                500,
                format!("{PROVIDER}: {} {}", field("variant"), field("description")),
            ))
        }
        // Metadata, configure acknowledgements and future message types carry nothing we use.
        _ => return Ok(Vec::new()),
    };
    Ok(vec![event])
}

#[cfg(test)]
mod tests {
    use nixflex_pipeline::ProviderErrorKind;

    use super::*;

    fn client(base_url: &str, model: &str) -> DeepgramClient {
        DeepgramClient::new(DeepgramConfig {
            base_url: base_url.to_owned(),
            model: model.to_owned(),
            api_key: Some(SecretString::from("dg-secret")),
            ..DeepgramConfig::default()
        })
    }

    #[test]
    fn the_listen_url_carries_the_documented_query() {
        let options = SttOptions { keywords: vec!["Nixflex".to_owned()], ..SttOptions::default() };
        let url = client("wss://api.deepgram.com/", "nova-3").listen_url(&options).unwrap();
        assert_eq!(
            url.as_str(),
            "wss://api.deepgram.com/v1/listen?model=nova-3&encoding=mulaw&sample_rate=8000&channels=1&interim_results=true&endpointing=300&utterance_end_ms=1000&vad_events=true&smart_format=true&language=en&keyterm=Nixflex"
        );
    }

    #[test]
    fn older_models_boost_with_keywords_and_endpointing_can_be_disabled() {
        let options = SttOptions {
            keywords: vec!["Nixflex:2".to_owned()],
            endpointing: None,
            language: "multi".to_owned(),
            ..SttOptions::default()
        };
        let url = client("http://127.0.0.1:9", "nova-2").listen_url(&options).unwrap();
        assert_eq!(url.scheme(), "ws");
        let query = url.query().unwrap();
        assert!(query.contains("endpointing=false"));
        assert!(query.contains("keywords=Nixflex%3A2"));
        assert!(query.contains("language=multi"));
    }

    #[test]
    fn results_become_interim_and_final_events() {
        let interim = r#"{"type":"Results","channel_index":[0,1],"duration":1.0,"start":0.0,"is_final":false,"speech_final":false,"channel":{"alternatives":[{"transcript":"hello","confidence":0.9,"words":[]}]},"metadata":{"request_id":"r","model_info":{"name":"n","version":"v","arch":"a"},"model_uuid":"u"}}"#;
        assert_eq!(
            parse_message(interim).unwrap(),
            vec![SttEvent::Interim { text: "hello".to_owned() }]
        );
        let final_result = r#"{"type":"Results","channel_index":[0,1],"duration":1.0,"start":0.0,"is_final":true,"speech_final":true,"from_finalize":false,"channel":{"alternatives":[{"transcript":"hello there","confidence":0.5,"languages":["es"],"words":[]}]},"metadata":{}}"#;
        assert_eq!(
            parse_message(final_result).unwrap(),
            vec![SttEvent::Final {
                text: "hello there".to_owned(),
                confidence: 0.5,
                speech_final: true,
                from_finalize: false,
                language: Some("es".to_owned()),
            }]
        );
    }

    #[test]
    fn vad_and_utterance_messages_map_and_metadata_is_ignored() {
        assert_eq!(
            parse_message(r#"{"type":"SpeechStarted","channel":[0,1],"timestamp":1.2}"#).unwrap(),
            vec![SttEvent::SpeechStarted]
        );
        assert_eq!(
            parse_message(r#"{"type":"UtteranceEnd","channel":[0,1],"last_word_end":2.5}"#)
                .unwrap(),
            vec![SttEvent::UtteranceEnd]
        );
        assert!(
            parse_message(r#"{"type":"Metadata","request_id":"r","duration":1.0}"#)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_net_0001_close_is_a_timeout_and_a_normal_close_is_not_an_error() {
        let idle = CloseFrame { code: CloseCode::Error, reason: "Deepgram did not receive audio data or a text message within the timeout window. See https://dpgr.am/net0001".into() };
        assert_eq!(close_error(Some(&idle)).unwrap().kind, ProviderErrorKind::Timeout);
        let normal = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        assert!(close_error(Some(&normal)).is_none());
    }

    #[test]
    fn debug_output_never_shows_the_api_key() {
        assert!(!format!("{:?}", client("wss://x", "nova-3")).contains("dg-secret"));
    }
}
