//! OpenAI-compatible transcription as a recogniser (`POST {base}/audio/transcriptions`) —
//! docs/providers.md#speech-recognition-fallback.
//!
//! The endpoint transcribes a whole file, so this client cuts the call's audio into utterances
//! itself: it keeps the audio of the current utterance (with a short pre-roll), and sends it as a
//! 16-bit WAV when the engine asks for a result ([`SttCommand::Finalize`], sent when the
//! engine's own voice activity detector hears the caller stop) or when it hears `endpointing`
//! of silence after speech itself. Each answer becomes one `Final` event with
//! `speech_final: true`, in the order the utterances were spoken, while the next utterance is
//! already being collected. Audio without speech is never sent (a `Finalize` then gets an empty
//! final at once, as Deepgram does). A request that fails quickly and retryably is tried once
//! more; a second failure ends the session with an `Error` event, so the engine moves to
//! another recogniser and replays what was not transcribed.
//!
//! The endpoint reports no confidence: finals carry 1.0 (the engine then never treats them as
//! unclear speech). No interim results are produced.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use nixflex_pipeline::ProviderError;
use nixflex_pipeline::audio::{mulaw, wav};
use nixflex_pipeline::stt::{
    AudioEncoding, SttCommand, SttDriver, SttEvent, SttEvents, SttInput, SttOptions, SttProvider,
    stt_channel,
};
use secrecy::SecretString;
use serde_json::Value;
use tokio::time::Instant;

use crate::llm::http;

const PROVIDER: &str = "openai-transcription";

/// Where and how to reach an OpenAI-compatible transcription endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiTranscriptionConfig {
    /// Base URL including `/v1` (default `https://api.openai.com/v1`).
    pub base_url: String,
    /// The API key; when missing `open` fails with `NotConfigured`.
    pub api_key: Option<SecretString>,
    /// The model (default `whisper-1`, which self-hosted Whisper servers also accept).
    pub model: String,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Longest one transcription request may take.
    pub request_timeout: Duration,
    /// RMS level (16-bit linear) above which a 20 ms frame counts as speech (~ −40 dBFS).
    pub speech_rms: f64,
    /// Audio kept before the first speech frame of an utterance.
    pub pre_roll: Duration,
    /// An utterance longer than this is sent without waiting for its end.
    pub max_utterance: Duration,
    /// Audio chunks that may queue before new ones are dropped.
    pub audio_queue: usize,
}

impl Default for OpenAiTranscriptionConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com/v1".to_owned(),
            api_key: None,
            model: "whisper-1".to_owned(),
            connect_timeout: Duration::from_millis(1500),
            request_timeout: Duration::from_secs(4),
            speech_rms: 300.0,
            pre_roll: Duration::from_millis(300),
            max_utterance: Duration::from_secs(25),
            audio_queue: 250,
        }
    }
}

/// A recogniser built on an OpenAI-compatible transcription endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiTranscriber {
    http: reqwest::Client,
    config: OpenAiTranscriptionConfig,
}

impl OpenAiTranscriber {
    /// A client for `config`. A missing key is accepted here and reported by `open`.
    ///
    /// # Errors
    /// `NotConfigured` when the HTTP client cannot be built.
    pub fn new(config: OpenAiTranscriptionConfig) -> Result<Self, ProviderError> {
        let http = http::build_client(config.connect_timeout)?;
        Ok(Self { http, config })
    }

    /// The form fields (all but the file) of a request for `options`.
    pub fn form_fields(&self, options: &SttOptions) -> Vec<(&'static str, String)> {
        let mut fields = vec![("model", self.config.model.clone())];
        fields.push(("response_format", "json".to_owned()));
        let language = options.language.to_ascii_lowercase();
        // ISO-639-1 only: `multi` (and regional forms) leave detection to the model.
        let primary = language.split(['-', '_']).next().unwrap_or("");
        if primary.len() == 2 && primary != "multi" {
            fields.push(("language", primary.to_owned()));
        }
        let keywords: Vec<&str> =
            options.keywords.iter().map(|k| k.trim()).filter(|k| !k.is_empty()).collect();
        if !keywords.is_empty() {
            // The documented way to steer the vocabulary: a prompt in the transcript's style.
            fields.push(("prompt", format!("Vocabulary: {}.", keywords.join(", "))));
        }
        fields
    }

    async fn transcribe(&self, options: &SttOptions, wav: Bytes) -> Result<String, ProviderError> {
        let key = http::require_key(PROVIDER, self.config.api_key.as_ref())?;
        let url = http::join_url(PROVIDER, &self.config.base_url, "/audio/transcriptions")?;
        let mut form = reqwest::multipart::Form::new();
        for (name, value) in self.form_fields(options) {
            form = form.text(name, value);
        }
        let file = reqwest::multipart::Part::stream(wav)
            .file_name("audio.wav")
            .mime_str("audio/wav")
            .map_err(|error| ProviderError::protocol(format!("{PROVIDER}: {error}")))?;
        form = form.part("file", file);
        let builder = self.http.post(url).bearer_auth(key).multipart(form);
        let timeout = self.config.request_timeout;
        let exchange = async {
            let response = http::send(PROVIDER, builder, timeout).await?;
            let status = response.status();
            if !status.is_success() {
                let body = http::error_body(response, timeout).await;
                return Err(crate::llm::openai::map_error(Some(status.as_u16()), &body));
            }
            let body = response
                .bytes()
                .await
                .map_err(|error| http::map_reqwest_error(PROVIDER, &error))?;
            parse_transcript(&body)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(ProviderError::timeout(format!(
                "{PROVIDER}: no transcript within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    /// [`Self::transcribe`], tried once more at once after a quick retryable failure.
    async fn transcribe_with_retry(
        &self,
        options: &SttOptions,
        wav: Bytes,
    ) -> Result<String, ProviderError> {
        let sent = Instant::now();
        match self.transcribe(options, wav.clone()).await {
            Err(error)
                if error.retryable
                    && error.kind != nixflex_pipeline::ProviderErrorKind::Timeout
                    && sent.elapsed() < Duration::from_secs(1) =>
            {
                tracing::warn!(message = "Transcription failed; trying once more.", error = %error);
                self.transcribe(options, wav).await
            }
            other => other,
        }
    }
}

/// The `text` of a `json` (or `verbose_json`) transcription response.
fn parse_transcript(body: &[u8]) -> Result<String, ProviderError> {
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        ProviderError::protocol(format!("{PROVIDER}: the response is not JSON: {error}"))
    })?;
    value
        .get("text")
        .and_then(Value::as_str)
        .map(|text| text.trim().to_owned())
        .ok_or_else(|| ProviderError::protocol(format!("{PROVIDER}: the response has no `text`")))
}

#[async_trait::async_trait]
impl SttProvider for OpenAiTranscriber {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn open(&self, options: SttOptions) -> Result<(SttInput, SttEvents), ProviderError> {
        // Configuration errors surface here; reachability with the first utterance.
        http::require_key(PROVIDER, self.config.api_key.as_ref())?;
        http::join_url(PROVIDER, &self.config.base_url, "/audio/transcriptions")?;
        let (input, driver, events) = stt_channel(self.config.audio_queue);
        tokio::spawn(run_session(self.clone(), options, driver));
        Ok((input, events))
    }
}

/// Why an utterance is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// The engine asked (`Finalize`).
    Finalize,
    /// Silence after speech (`endpointing`) or the length limit.
    Endpoint,
    /// The session is closing.
    Close,
}

/// Cuts the session's audio into utterances.
#[derive(Debug)]
struct Segmenter {
    sample_rate: u32,
    linear16: bool,
    speech_rms: f64,
    /// Samples of the current utterance (and its pre-roll while no speech was heard).
    samples: VecDeque<i16>,
    voiced: bool,
    /// Samples of silence since the last speech frame.
    silence: usize,
    pre_roll: usize,
    endpointing: Option<usize>,
    max_utterance: usize,
    /// A 16-bit sample split across two chunks.
    carry: Option<u8>,
    decoded: Vec<i16>,
}

impl Segmenter {
    fn new(options: &SttOptions, config: &OpenAiTranscriptionConfig) -> Self {
        let rate = options.sample_rate.max(1);
        let samples_of = |duration: Duration| {
            usize::try_from(u128::from(rate) * duration.as_millis() / 1000).unwrap_or(usize::MAX)
        };
        Self {
            sample_rate: rate,
            linear16: options.encoding == AudioEncoding::Linear16,
            speech_rms: config.speech_rms,
            samples: VecDeque::new(),
            voiced: false,
            silence: 0,
            pre_roll: samples_of(config.pre_roll),
            endpointing: options.endpointing.map(samples_of),
            max_utterance: samples_of(config.max_utterance),
            carry: None,
            decoded: Vec::new(),
        }
    }

    fn frame_len(&self) -> usize {
        (self.sample_rate as usize / 50).max(1)
    }

    /// Adds audio; returns whether the utterance should be sent now.
    fn push(&mut self, audio: &[u8]) -> bool {
        self.decoded.clear();
        if self.linear16 {
            let mut bytes = audio;
            if let Some(low) = self.carry.take()
                && let Some((&high, rest)) = bytes.split_first()
            {
                self.decoded.push(i16::from_le_bytes([low, high]));
                bytes = rest;
            }
            let mut pairs = bytes.chunks_exact(2);
            self.decoded.extend(pairs.by_ref().map(|pair| i16::from_le_bytes([pair[0], pair[1]])));
            self.carry = pairs.remainder().first().copied();
        } else {
            mulaw::decode_into(audio, &mut self.decoded);
        }
        let frame = self.frame_len();
        let mut flush = false;
        for chunk in self.decoded.chunks(frame) {
            let loud = nixflex_pipeline::audio::tone::rms(chunk) > self.speech_rms;
            self.samples.extend(chunk.iter().copied());
            if loud {
                self.voiced = true;
                self.silence = 0;
            } else {
                self.silence += chunk.len();
            }
            if !self.voiced {
                let excess = self.samples.len().saturating_sub(self.pre_roll);
                self.samples.drain(..excess);
            }
            if self.voiced
                && (self.endpointing.is_some_and(|gap| self.silence >= gap)
                    || self.samples.len() >= self.max_utterance)
            {
                flush = true;
            }
        }
        flush
    }

    /// The utterance as a WAV file, if it holds speech; starts the next one either way.
    fn take(&mut self) -> Option<Bytes> {
        let voiced = std::mem::take(&mut self.voiced);
        self.silence = 0;
        if !voiced {
            return None;
        }
        let samples: Vec<i16> = self.samples.drain(..).collect();
        let data = nixflex_pipeline::audio::samples_to_pcm16le(&samples);
        let mut file = Vec::with_capacity(44 + data.len());
        let data_len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        file.extend_from_slice(&wav::pcm16_mono_header(self.sample_rate, data_len));
        file.extend_from_slice(&data);
        Some(Bytes::from(file))
    }
}

type Pending = BoxFuture<'static, (Result<String, ProviderError>, Flush)>;

async fn run_session(client: OpenAiTranscriber, options: SttOptions, mut driver: SttDriver) {
    let mut segmenter = Segmenter::new(&options, &client.config);
    let mut pending: FuturesOrdered<Pending> = FuturesOrdered::new();
    let mut closing = false;
    loop {
        if closing && pending.is_empty() {
            let _ = driver.events.send(SttEvent::Closed).await;
            return;
        }
        tokio::select! {
            command = driver.commands.recv(), if !closing => {
                let flush = match command {
                    Some(SttCommand::Audio(audio)) => segmenter.push(&audio).then_some(Flush::Endpoint),
                    Some(SttCommand::Finalize) => Some(Flush::Finalize),
                    Some(SttCommand::KeepAlive) => None,
                    Some(SttCommand::Close) | None => {
                        closing = true;
                        Some(Flush::Close)
                    }
                };
                if let Some(flush) = flush {
                    let request: Pending = match segmenter.take() {
                        Some(wav) => {
                            let client = client.clone();
                            let options = options.clone();
                            async move { (client.transcribe_with_retry(&options, wav).await, flush) }.boxed()
                        }
                        None if flush == Flush::Finalize => async move { (Ok(String::new()), flush) }.boxed(),
                        None => continue,
                    };
                    pending.push_back(request);
                }
            }
            Some((result, flush)) = pending.next(), if !pending.is_empty() => {
                let event = match result {
                    Ok(text) => SttEvent::Final {
                        text,
                        confidence: 1.0,
                        speech_final: true,
                        from_finalize: flush == Flush::Finalize,
                        language: None,
                    },
                    Err(error) => {
                        tracing::warn!(message = "Transcription failed.", error = %error);
                        let _ = driver.events.send(SttEvent::Error(error)).await;
                        let _ = driver.events.send(SttEvent::Closed).await;
                        return;
                    }
                };
                if driver.events.send(event).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use nixflex_pipeline::audio::tone::sine;

    use super::*;

    fn mulaw_of(samples: &[i16]) -> Vec<u8> {
        mulaw::encode_all(samples)
    }

    #[test]
    fn fields_carry_the_model_the_language_and_the_vocabulary() {
        let client = OpenAiTranscriber::new(OpenAiTranscriptionConfig::default()).unwrap();
        let options = SttOptions {
            language: "en-US".to_owned(),
            keywords: vec!["Nixflex".to_owned(), " croissant ".to_owned()],
            ..SttOptions::default()
        };
        let fields = client.form_fields(&options);
        assert!(fields.contains(&("model", "whisper-1".to_owned())));
        assert!(fields.contains(&("language", "en".to_owned())));
        assert!(fields.contains(&("prompt", "Vocabulary: Nixflex, croissant.".to_owned())));
        let multi = SttOptions { language: "multi".to_owned(), ..SttOptions::default() };
        assert!(!client.form_fields(&multi).iter().any(|(name, _)| *name == "language"));
    }

    #[test]
    fn silence_is_never_sent_and_speech_keeps_a_short_pre_roll() {
        let config = OpenAiTranscriptionConfig::default();
        let mut segmenter = Segmenter::new(&SttOptions::default(), &config);
        assert!(!segmenter.push(&[mulaw::encode(0); 8000]));
        assert!(segmenter.take().is_none(), "a second of silence is not an utterance");
        assert!(!segmenter.push(&[mulaw::encode(0); 8000]));
        assert!(!segmenter.push(&mulaw_of(&sine(440.0, 8000, 4000, 8000.0))));
        let wav = segmenter.take().expect("speech");
        let header = wav::parse_header(&wav).unwrap();
        assert!(header.format.is_pcm16_mono());
        // 300 ms of pre-roll + 500 ms of speech, 2 bytes per sample, plus the header.
        assert_eq!(wav.len(), 44 + 2 * (2400 + 4000));
    }

    #[test]
    fn endpointing_silence_after_speech_ends_the_utterance() {
        let config = OpenAiTranscriptionConfig::default();
        let options =
            SttOptions { endpointing: Some(Duration::from_millis(300)), ..SttOptions::default() };
        let mut segmenter = Segmenter::new(&options, &config);
        assert!(!segmenter.push(&mulaw_of(&sine(440.0, 8000, 4000, 8000.0))));
        assert!(!segmenter.push(&[mulaw::encode(0); 2000]), "250 ms of silence is a pause");
        assert!(segmenter.push(&[mulaw::encode(0); 480]), "300 ms ends it");
    }

    #[test]
    fn a_transcript_is_the_text_field() {
        assert_eq!(parse_transcript(br#"{"text":" Hello there. "}"#).unwrap(), "Hello there.");
        assert!(parse_transcript(b"{}").is_err());
        assert!(parse_transcript(b"not json").is_err());
    }
}
