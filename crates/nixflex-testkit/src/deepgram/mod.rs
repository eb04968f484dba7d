//! Deepgram live-transcription emulator: WebSocket `/v1/listen` (docs/protocols.md#deepgram-live).
//!
//! The emulator "hears" with a simple energy detector over the incoming audio (μ-law or
//! linear16) in 20 ms frames, and transcribes each detected utterance, in order, with the next
//! scripted text ([`DeepgramEmulator::push_utterance`]). A test scripts "the caller says X" by
//! sending non-silent audio (e.g. [`speech_audio`]) followed by silence ([`silence_audio`]).
//! Everything runs on *audio time* (samples received), so results are deterministic whatever
//! the network timing:
//! - `SpeechStarted` (with `vad_events=true`) when speech begins;
//! - interim `Results` (`is_final: false`, one more word each time) every `interim_interval`
//!   of speech (with `interim_results=true`);
//! - a final `Results` with `speech_final: true` after `endpointing` ms of silence;
//! - `UtteranceEnd` after `utterance_end_ms` of silence after the last word;
//! - `Finalize` flushes a final result with `from_finalize: true`; `CloseStream` flushes,
//!   sends `Metadata` and closes normally; `KeepAlive` only keeps the socket open.
//!
//! The one wall-clock rule: a socket that receives neither audio nor a text message for
//! `idle_timeout` (10 s like Deepgram, configurable) is closed with code 1011 and the
//! NET-0001 reason. Failures can be injected per connection ([`Fault`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use nixflex_pipeline::audio::mulaw;
use nixflex_pipeline::audio::tone::{rms, sine};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The close reason Deepgram gives when a socket idles (NET-0001).
pub const NET_0001_REASON: &str = "Deepgram did not receive audio data or a text message within the timeout window. See https://dpgr.am/net0001";

/// `duration` of 8 kHz μ-law "speech" (a 440 Hz tone loud enough for the detector).
pub fn speech_audio(duration: Duration) -> Bytes {
    let n_samples = samples_for(duration, 8000);
    Bytes::from(mulaw::encode_all(&sine(440.0, 8000, n_samples, 8000.0)))
}

/// `duration` of 8 kHz μ-law silence.
pub fn silence_audio(duration: Duration) -> Bytes {
    Bytes::from(vec![nixflex_pipeline::audio::MULAW_SILENCE; samples_for(duration, 8000)])
}

/// Whether a frame is voiced: its normalised autocorrelation peaks above 0.5 at some lag of
/// 2.5–10 ms (a pitch of 100–400 Hz) *after* dipping at least 0.5 below that peak at a shorter
/// lag — the mark of a periodic sound. White noise never correlates; brown noise and rumble
/// correlate at every short lag but decay without a dip.
fn voiced(frame: &[i16], sample_rate: u32) -> bool {
    let samples: Vec<f64> = frame.iter().map(|&sample| f64::from(sample)).collect();
    let n = samples.len();
    let max_lag = ((sample_rate / 100) as usize).min(n / 2);
    let min_lag = (sample_rate / 400) as usize;
    let correlation = |lag: usize| {
        let (head, tail) = (&samples[..n - lag], &samples[lag..]);
        let product: f64 = head.iter().zip(tail).map(|(a, b)| a * b).sum();
        let energy =
            head.iter().map(|a| a * a).sum::<f64>() * tail.iter().map(|b| b * b).sum::<f64>();
        if energy > 0.0 { product / energy.sqrt() } else { 0.0 }
    };
    let mut lowest = f64::INFINITY;
    for lag in 1..=max_lag {
        let r = correlation(lag);
        if lag >= min_lag && r > 0.5 && r - lowest >= 0.5 {
            return true;
        }
        lowest = lowest.min(r);
    }
    false
}

fn samples_for(duration: Duration, sample_rate: u32) -> usize {
    usize::try_from(duration.as_micros() * u128::from(sample_rate) / 1_000_000)
        .unwrap_or(usize::MAX)
}

/// One scripted utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    /// What the caller "says".
    pub text: String,
    /// The language reported with `language=multi` (default `en`).
    pub language: Option<String>,
    /// The reported confidence.
    pub confidence: f64,
}

/// A failure to inject into the next connection (used up in order, one per connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Refuse the WebSocket upgrade with this HTTP status (and a `dg-error` header).
    RejectUpgrade(u16),
    /// After this much audio, send an `Error` message and close with code 1011.
    ErrorAfterAudio(Duration),
    /// After this much audio, drop the connection without a close frame.
    DisconnectAfterAudio(Duration),
    /// After this much audio, send nothing more (no results, no answer to `Finalize`) while
    /// still reading audio and keeping the connection open.
    StallAfterAudio(Duration),
    /// Wait this long before answering the WebSocket upgrade, then work normally.
    SlowUpgrade(Duration),
}

/// Configuration fixed at start.
#[derive(Debug, Clone)]
pub struct DeepgramEmulatorConfig {
    /// The only accepted key; `None` accepts any non-empty key.
    pub api_key: Option<String>,
    /// Close a socket that received nothing for this long (NET-0001).
    pub idle_timeout: Duration,
    /// RMS level (16-bit linear) above which a 20 ms frame may be speech.
    pub speech_threshold: f64,
    /// Whether a loud frame must also be voiced (periodic, with a pitch between 100 and 400 Hz)
    /// to be heard as speech: like a real recogniser, the emulator then transcribes no words
    /// from noise (white, pink, brown, rumble), however loud. On by default.
    pub ignore_noise: bool,
    /// Consecutive speech needed before an utterance starts.
    pub min_speech: Duration,
    /// Audio time between interim results.
    pub interim_interval: Duration,
}

impl Default for DeepgramEmulatorConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            idle_timeout: Duration::from_secs(10),
            speech_threshold: 500.0,
            ignore_noise: true,
            min_speech: Duration::from_millis(60),
            interim_interval: Duration::from_millis(300),
        }
    }
}

/// What one connection did, for assertions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionLog {
    /// The query parameters, in order.
    pub query: Vec<(String, String)>,
    /// The upgrade request's headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Audio bytes received.
    pub audio_bytes: u64,
    /// Text messages received, in order.
    pub text_messages: Vec<String>,
    /// Messages sent to the client, in order (JSON texts).
    pub sent: Vec<String>,
    /// How the session ended (`None` while open): `"close_stream"`, `"idle_timeout"`,
    /// `"client_closed"`, `"fault"`.
    pub ended: Option<String>,
}

impl SessionLog {
    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// Every value of query parameter `name`.
    pub fn params(&self, name: &str) -> Vec<&str> {
        self.query.iter().filter(|(key, _)| key == name).map(|(_, value)| value.as_str()).collect()
    }
}

#[derive(Default)]
struct Script {
    utterances: VecDeque<Utterance>,
    faults: VecDeque<Fault>,
    sessions: Vec<SessionLog>,
}

struct Shared {
    config: DeepgramEmulatorConfig,
    script: Mutex<Script>,
}

impl Shared {
    fn script(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn log(&self, session: usize, update: impl FnOnce(&mut SessionLog)) {
        if let Some(log) = self.script().sessions.get_mut(session) {
            update(log);
        }
    }
}

/// A running Deepgram emulator; stops when dropped.
pub struct DeepgramEmulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for DeepgramEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeepgramEmulator").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for DeepgramEmulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl DeepgramEmulator {
    /// Starts an emulator accepting any non-empty key on `127.0.0.1:<free port>`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(DeepgramEmulatorConfig::default()).await
    }

    /// Starts an emulator with `config`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start_with(config: DeepgramEmulatorConfig) -> std::io::Result<Self> {
        let shared = Arc::new(Shared { config, script: Mutex::new(Script::default()) });
        let router = Router::new().route("/v1/listen", any(listen)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(crate::nodelay(listener), router).await {
                tracing::warn!(message = "Deepgram emulator stopped.", %error);
            }
        });
        Ok(Self { addr, shared, server })
    }

    /// The base URL to configure clients with (`ws://127.0.0.1:<port>`).
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The same address as an http URL (for SDKs that derive the ws URL themselves).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Scripts the transcript of the next detected utterance.
    pub fn push_utterance(&self, text: impl Into<String>) {
        self.push(Utterance { text: text.into(), language: None, confidence: 0.98 });
    }

    /// Scripts an utterance with all its details.
    pub fn push(&self, utterance: Utterance) {
        self.shared.script().utterances.push_back(utterance);
    }

    /// Queues a failure for the next connection.
    pub fn push_fault(&self, fault: Fault) {
        self.shared.script().faults.push_back(fault);
    }

    /// Every connection so far (including refused ones), oldest first.
    pub fn sessions(&self) -> Vec<SessionLog> {
        self.shared.script().sessions.clone()
    }

    /// Waits until session `index` has processed at least `audio_bytes` of audio (and sent
    /// the results it caused), polling every 5 ms, for at most `timeout`. Returns the log.
    ///
    /// # Errors
    /// A message when the session does not get there in time.
    pub async fn wait_for_audio(
        &self,
        index: usize,
        audio_bytes: u64,
        timeout: Duration,
    ) -> Result<SessionLog, String> {
        self.wait_for(index, timeout, |log| log.audio_bytes >= audio_bytes).await
    }

    /// Waits until `condition` holds for session `index`, polling every 5 ms, for at most
    /// `timeout`. Returns the log.
    ///
    /// # Errors
    /// A message when the condition does not hold in time.
    pub async fn wait_for(
        &self,
        index: usize,
        timeout: Duration,
        condition: impl Fn(&SessionLog) -> bool,
    ) -> Result<SessionLog, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.shared.script().sessions.get(index).cloned();
            if let Some(log) = &log
                && condition(log)
            {
                return Ok(log.clone());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "session {index} did not reach the condition in {timeout:?}: {log:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect()
}

fn refuse(status: u16, reason: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (
        status,
        axum::Json(
            json!({ "err_code": "Bad Request", "err_msg": reason, "request_id": "emulator" }),
        ),
    )
        .into_response();
    if let Ok(value) = header::HeaderValue::from_str(reason) {
        response.headers_mut().insert("dg-error", value);
    }
    response
}

/// The listening options of one session, from its query.
#[derive(Debug, Clone)]
struct Params {
    linear16: bool,
    sample_rate: u32,
    interim_results: bool,
    /// `None` = endpointing disabled.
    endpointing: Option<f64>,
    utterance_end: Option<f64>,
    vad_events: bool,
    multi: bool,
    model: String,
}

fn parse_params(query: &[(String, String)]) -> Result<Params, String> {
    let get =
        |name: &str| query.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
    let flag = |name: &str| get(name).is_some_and(|value| value == "true");
    let linear16 = match get("encoding") {
        Some("mulaw") => false,
        Some("linear16") => true,
        Some(other) => return Err(format!("the emulator does not decode encoding {other:?}")),
        None => return Err("the emulator needs raw audio: set encoding and sample_rate".to_owned()),
    };
    let sample_rate = get("sample_rate")
        .ok_or("sample_rate is required with encoding")?
        .parse::<u32>()
        .map_err(|_| "sample_rate must be an integer".to_owned())?;
    if sample_rate == 0 {
        return Err("sample_rate must be positive".to_owned());
    }
    if get("channels").is_some_and(|channels| channels != "1") {
        return Err("the emulator handles one channel".to_owned());
    }
    let millis = |name: &str| -> Result<Option<f64>, String> {
        match get(name) {
            None | Some("false") => Ok(None),
            Some(value) => value
                .parse::<f64>()
                .map(|ms| Some(ms / 1000.0))
                .map_err(|_| format!("{name} must be a number of milliseconds or false")),
        }
    };
    // Deepgram's default endpointing is 10 ms.
    let endpointing =
        if get("endpointing").is_none() { Some(0.010) } else { millis("endpointing")? };
    let interim_results = flag("interim_results");
    let utterance_end = millis("utterance_end_ms")?;
    if utterance_end.is_some() && !interim_results {
        return Err("utterance_end_ms requires interim_results=true".to_owned());
    }
    Ok(Params {
        linear16,
        sample_rate,
        interim_results,
        endpointing,
        utterance_end,
        vad_events: flag("vad_events"),
        multi: get("language") == Some("multi"),
        model: get("model").unwrap_or("base").to_owned(),
    })
}

async fn listen(
    State(shared): State<Arc<Shared>>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let query = parse_query(raw_query.as_deref());
    let (session_index, fault) = {
        let mut script = shared.script();
        script.sessions.push(SessionLog {
            query: query.clone(),
            headers: headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            ..SessionLog::default()
        });
        (script.sessions.len() - 1, script.faults.pop_front())
    };
    let end_refused = |reason: &str| {
        shared.log(session_index, |log| log.ended = Some(format!("refused: {reason}")));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Token ").or_else(|| value.strip_prefix("Bearer ")))
        .map(str::trim);
    let authorised = match (presented, &shared.config.api_key) {
        (Some(presented), Some(expected)) => presented == expected,
        (Some(presented), None) => !presented.is_empty(),
        (None, _) => false,
    };
    if !authorised {
        end_refused("auth");
        return refuse(401, "Invalid credentials.");
    }
    if let Some(Fault::RejectUpgrade(status)) = fault {
        end_refused("fault");
        return refuse(status, "Injected failure.");
    }
    let params = match parse_params(&query) {
        Ok(params) => params,
        Err(reason) => {
            end_refused(&reason);
            return refuse(400, &reason);
        }
    };
    if let Some(Fault::SlowUpgrade(delay)) = fault {
        tokio::time::sleep(delay).await;
    }
    let Ok(upgrade) = upgrade else {
        end_refused("not a websocket");
        return refuse(400, "Expected a WebSocket upgrade.");
    };
    let request_id = format!("emu-{session_index:08}-0000-4000-8000-000000000000");
    let mut response = upgrade.read_buffer_size(4096).on_upgrade(move |socket| async move {
        let session = Session::new(shared.clone(), session_index, params, request_id, fault);
        session.run(socket).await;
    });
    if let Ok(value) = header::HeaderValue::from_str(&format!("emu-{session_index:08}")) {
        response.headers_mut().insert("dg-request-id", value);
    }
    response
}

/// Where the detector is.
#[derive(Debug)]
enum Phase {
    /// No speech; counting consecutive loud frames.
    Silent { loud_frames: u32, loud_since: f64 },
    /// In an utterance.
    Speaking {
        start: f64,
        last_voiced_end: f64,
        silence: f64,
        utterance: Utterance,
        interims: usize,
        last_interim: f64,
    },
}

struct Session {
    shared: Arc<Shared>,
    index: usize,
    params: Params,
    request_id: String,
    fault: Option<Fault>,
    /// Samples received (audio time = samples / rate).
    samples: u64,
    /// Samples of the current, incomplete 20 ms frame.
    frame: Vec<i16>,
    /// A byte left over when linear16 audio split a sample.
    carry: Option<u8>,
    phase: Phase,
    /// End of the last word of an ended utterance whose UtteranceEnd is still due.
    utterance_end_due: Option<f64>,
    /// Outgoing messages produced by the last input.
    outbox: Vec<Value>,
    /// A [`Fault::StallAfterAudio`] struck: nothing is sent any more.
    stalled: bool,
}

impl Session {
    fn new(
        shared: Arc<Shared>,
        index: usize,
        params: Params,
        request_id: String,
        fault: Option<Fault>,
    ) -> Self {
        Self {
            shared,
            index,
            params,
            request_id,
            fault,
            samples: 0,
            frame: Vec::new(),
            carry: None,
            phase: Phase::Silent { loud_frames: 0, loud_since: 0.0 },
            utterance_end_due: None,
            outbox: Vec::new(),
            stalled: false,
        }
    }

    fn now(&self) -> f64 {
        self.samples as f64 / f64::from(self.params.sample_rate)
    }

    fn frame_len(&self) -> usize {
        (self.params.sample_rate as usize / 50).max(1)
    }

    async fn run(mut self, mut socket: WebSocket) {
        let idle_timeout = self.shared.config.idle_timeout;
        let mut last_activity = Instant::now();
        let mut received_audio = 0_u64;
        let ended = loop {
            let message = tokio::select! {
                message = socket.recv() => message,
                () = tokio::time::sleep_until(last_activity + idle_timeout) => {
                    let close = CloseFrame { code: 1011, reason: NET_0001_REASON.into() };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    break "idle_timeout";
                }
            };
            last_activity = Instant::now();
            let outcome = match message {
                Some(Ok(Message::Binary(audio))) => {
                    received_audio = audio.len() as u64;
                    self.on_audio(&audio)
                }
                Some(Ok(Message::Text(text))) => {
                    let text = text.as_str().to_owned();
                    self.shared.log(self.index, |log| log.text_messages.push(text.clone()));
                    self.on_text(&text)
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => Outcome::Continue,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => Outcome::End("client_closed"),
            };
            if !self.flush(&mut socket).await {
                break "client_closed";
            }
            // Counted after the results it caused were sent, so a test that waits for the
            // count sees those results in the log.
            if received_audio > 0 {
                self.shared.log(self.index, |log| log.audio_bytes += received_audio);
                received_audio = 0;
            }
            match outcome {
                Outcome::Continue => {}
                Outcome::Close => {
                    let close = CloseFrame { code: 1000, reason: "".into() };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    break "close_stream";
                }
                Outcome::Fail => {
                    let close = CloseFrame { code: 1011, reason: "Injected failure.".into() };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    break "fault";
                }
                Outcome::Drop => break "fault",
                Outcome::End(reason) => break reason,
            }
        };
        self.shared.log(self.index, |log| log.ended = Some(ended.to_owned()));
    }

    async fn flush(&mut self, socket: &mut WebSocket) -> bool {
        if self.stalled {
            self.outbox.clear();
            return true;
        }
        for message in std::mem::take(&mut self.outbox) {
            let text = message.to_string();
            self.shared.log(self.index, |log| log.sent.push(text.clone()));
            if socket.send(Message::Text(text.into())).await.is_err() {
                return false;
            }
        }
        true
    }

    fn on_text(&mut self, text: &str) -> Outcome {
        let kind = serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|value| value.get("type").and_then(Value::as_str).map(str::to_owned));
        match kind.as_deref() {
            Some("KeepAlive") => Outcome::Continue,
            Some("Finalize") => {
                self.finish_utterance(false, true);
                Outcome::Continue
            }
            Some("CloseStream") => {
                self.finish_utterance(false, false);
                self.outbox.push(self.metadata());
                Outcome::Close
            }
            _ => {
                self.outbox.push(json!({
                    "type": "Error",
                    "variant": "SchemaError",
                    "description": "Could not parse the client message.",
                    "message": text,
                }));
                Outcome::Continue
            }
        }
    }

    fn on_audio(&mut self, audio: &[u8]) -> Outcome {
        let mut decoded = Vec::with_capacity(audio.len());
        if self.params.linear16 {
            let mut bytes = audio;
            if let Some(low) = self.carry.take()
                && let Some((&high, rest)) = bytes.split_first()
            {
                decoded.push(i16::from_le_bytes([low, high]));
                bytes = rest;
            }
            let mut pairs = bytes.chunks_exact(2);
            decoded.extend(pairs.by_ref().map(|pair| i16::from_le_bytes([pair[0], pair[1]])));
            self.carry = pairs.remainder().first().copied();
        } else {
            mulaw::decode_into(audio, &mut decoded);
        }
        let frame_len = self.frame_len();
        let mut rest = decoded.as_slice();
        // Whole frames straight from the decoded audio; a partial one waits in `self.frame`.
        while !rest.is_empty() {
            let take = (frame_len - self.frame.len()).min(rest.len());
            let (head, tail) = rest.split_at(take);
            rest = tail;
            self.samples += take as u64;
            if self.frame.is_empty() && take == frame_len {
                self.on_frame(head);
            } else {
                self.frame.extend_from_slice(head);
                if self.frame.len() < frame_len {
                    break;
                }
                let mut frame = std::mem::take(&mut self.frame);
                self.on_frame(&frame);
                frame.clear();
                self.frame = frame;
            }
            if let Some(outcome) = self.check_fault() {
                return outcome;
            }
        }
        self.check_fault().unwrap_or(Outcome::Continue)
    }

    fn check_fault(&mut self) -> Option<Outcome> {
        let after = match &self.fault {
            Some(
                Fault::ErrorAfterAudio(after)
                | Fault::DisconnectAfterAudio(after)
                | Fault::StallAfterAudio(after),
            ) => *after,
            _ => return None,
        };
        if self.now() < after.as_secs_f64() {
            return None;
        }
        match self.fault.take() {
            Some(Fault::StallAfterAudio(_)) => {
                self.stalled = true;
                self.outbox.clear();
                None
            }
            Some(Fault::ErrorAfterAudio(_)) => {
                self.outbox.push(json!({
                    "type": "Error",
                    "variant": "InternalServerError",
                    "description": "Injected failure.",
                }));
                Some(Outcome::Fail)
            }
            _ => Some(Outcome::Drop),
        }
    }

    fn on_frame(&mut self, frame: &[i16]) {
        let frame_seconds = frame.len() as f64 / f64::from(self.params.sample_rate);
        let now = self.now();
        let loud = rms(frame) > self.shared.config.speech_threshold
            && (!self.shared.config.ignore_noise || voiced(frame, self.params.sample_rate));
        let min_speech = self.shared.config.min_speech.as_secs_f64();
        match &mut self.phase {
            Phase::Silent { loud_frames, loud_since } => {
                if !loud {
                    *loud_frames = 0;
                    if let Some(last_word_end) = self.utterance_end_due
                        && let Some(gap) = self.params.utterance_end
                        && now - last_word_end >= gap
                    {
                        self.utterance_end_due = None;
                        self.outbox.push(json!({
                            "type": "UtteranceEnd",
                            "channel": [0, 1],
                            "last_word_end": round3(last_word_end),
                        }));
                    }
                    return;
                }
                if *loud_frames == 0 {
                    *loud_since = now - frame_seconds;
                }
                *loud_frames += 1;
                if f64::from(*loud_frames) * frame_seconds + 1e-9 < min_speech {
                    return;
                }
                let start = *loud_since;
                let utterance = self.shared.script().utterances.pop_front().unwrap_or(Utterance {
                    text: String::new(),
                    language: None,
                    confidence: 0.0,
                });
                // Speech resumed before UtteranceEnd was due: no UtteranceEnd for that gap.
                self.utterance_end_due = None;
                if self.params.vad_events {
                    self.outbox.push(json!({ "type": "SpeechStarted", "channel": [0, 1], "timestamp": round3(start) }));
                }
                self.phase = Phase::Speaking {
                    start,
                    last_voiced_end: now,
                    silence: 0.0,
                    utterance,
                    interims: 0,
                    last_interim: start,
                };
            }
            Phase::Speaking { last_voiced_end, silence, interims, last_interim, .. } => {
                if loud {
                    *last_voiced_end = now;
                    *silence = 0.0;
                } else {
                    *silence += frame_seconds;
                }
                let interim_due = self.params.interim_results
                    && loud
                    && now - *last_interim >= self.shared.config.interim_interval.as_secs_f64();
                if interim_due {
                    *interims += 1;
                    *last_interim = now;
                }
                let silence = *silence;
                if interim_due {
                    let result = self.result(ResultKind::Interim);
                    self.outbox.push(result);
                }
                if let Some(endpointing) = self.params.endpointing
                    && silence >= endpointing
                {
                    self.finish_utterance(true, false);
                } else if self.params.endpointing.is_none()
                    && let Some(gap) = self.params.utterance_end
                    && silence >= gap
                {
                    // Without endpointing, the word gap ends the segment.
                    self.finish_utterance(false, false);
                    if let Some(last_word_end) = self.utterance_end_due.take() {
                        self.outbox.push(json!({ "type": "UtteranceEnd", "channel": [0, 1], "last_word_end": round3(last_word_end) }));
                    }
                }
            }
        }
    }

    /// Ends the current utterance (if any) with a final result.
    fn finish_utterance(&mut self, speech_final: bool, from_finalize: bool) {
        if matches!(self.phase, Phase::Silent { .. }) {
            if from_finalize {
                // Nothing pending: Deepgram still answers a Finalize with an empty final.
                let now = self.now();
                self.outbox.push(self.result_json(now, 0.0, "", 0.0, None, &[], true, false, true));
            }
            return;
        }
        let result = self.result(ResultKind::Final { speech_final, from_finalize });
        self.outbox.push(result);
        if let Phase::Speaking { last_voiced_end, .. } = self.phase {
            self.utterance_end_due = self.params.utterance_end.map(|_| last_voiced_end);
        }
        self.phase = Phase::Silent { loud_frames: 0, loud_since: 0.0 };
    }

    fn result(&self, kind: ResultKind) -> Value {
        let Phase::Speaking { start, last_voiced_end, utterance, interims, .. } = &self.phase
        else {
            return Value::Null;
        };
        let words: Vec<&str> = utterance.text.split_whitespace().collect();
        let (shown, is_final, speech_final, from_finalize) = match kind {
            ResultKind::Interim => (&words[..(*interims).min(words.len())], false, false, false),
            ResultKind::Final { speech_final, from_finalize } => {
                (&words[..], true, speech_final, from_finalize)
            }
        };
        let end = if is_final { *last_voiced_end } else { self.now() };
        let transcript = if shown.len() == words.len() {
            utterance.text.trim().to_owned()
        } else {
            shown.join(" ")
        };
        let language = self
            .params
            .multi
            .then(|| utterance.language.clone().unwrap_or_else(|| "en".to_owned()));
        self.result_json(
            *start,
            (end - *start).max(0.0),
            &transcript,
            utterance.confidence,
            language.as_deref(),
            shown,
            is_final,
            speech_final,
            from_finalize,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn result_json(
        &self,
        start: f64,
        duration: f64,
        transcript: &str,
        confidence: f64,
        language: Option<&str>,
        words: &[&str],
        is_final: bool,
        speech_final: bool,
        from_finalize: bool,
    ) -> Value {
        let per_word = if words.is_empty() { 0.0 } else { duration / words.len() as f64 };
        let words: Vec<Value> = words
            .iter()
            .enumerate()
            .map(|(index, word)| {
                let mut entry = json!({
                    "word": word.trim_matches(|c: char| !c.is_alphanumeric() && c != '\'').to_lowercase(),
                    "start": round3(start + per_word * index as f64),
                    "end": round3(start + per_word * (index + 1) as f64),
                    "confidence": confidence,
                    "punctuated_word": word,
                });
                if let Some(language) = language {
                    entry["language"] = json!(language);
                }
                entry
            })
            .collect();
        let mut alternative =
            json!({ "transcript": transcript, "confidence": confidence, "words": words });
        if let Some(language) = language {
            alternative["languages"] = json!([language]);
        }
        json!({
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round3(duration),
            "start": round3(start),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": { "alternatives": [alternative] },
            "metadata": {
                "request_id": self.request_id,
                "model_info": { "name": format!("2-general-{}", self.params.model), "version": "2025-01-01.0", "arch": self.params.model },
                "model_uuid": "00000000-0000-4000-8000-000000000001",
            },
        })
    }

    fn metadata(&self) -> Value {
        json!({
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": "0000000000000000000000000000000000000000000000000000000000000000",
            "created": "2026-01-01T00:00:00.000Z",
            "duration": round3(self.now()),
            "channels": 1,
            "models": ["00000000-0000-4000-8000-000000000001"],
            "model_info": {
                "00000000-0000-4000-8000-000000000001": { "name": format!("2-general-{}", self.params.model), "version": "2025-01-01.0", "arch": self.params.model },
            },
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum ResultKind {
    Interim,
    Final { speech_final: bool, from_finalize: bool },
}

enum Outcome {
    Continue,
    /// CloseStream: close normally.
    Close,
    /// Injected error: close with 1011.
    Fail,
    /// Injected disconnect: drop without a close frame.
    Drop,
    /// The client went away.
    End(&'static str),
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn the_documented_query_parses_with_endpointing_and_utterance_end_in_seconds() {
        let params = parse_params(&query(&[
            ("model", "nova-3"),
            ("encoding", "mulaw"),
            ("sample_rate", "8000"),
            ("channels", "1"),
            ("interim_results", "true"),
            ("endpointing", "300"),
            ("utterance_end_ms", "1000"),
            ("vad_events", "true"),
            ("language", "multi"),
        ]))
        .unwrap();
        assert_eq!(params.endpointing, Some(0.3));
        assert_eq!(params.utterance_end, Some(1.0));
        assert!(params.multi && params.vad_events && params.interim_results && !params.linear16);
    }

    #[test]
    fn utterance_end_without_interim_results_is_refused_like_deepgram_does() {
        let error = parse_params(&query(&[
            ("encoding", "mulaw"),
            ("sample_rate", "8000"),
            ("utterance_end_ms", "1000"),
        ]))
        .unwrap_err();
        assert!(error.contains("interim_results"));
    }

    #[test]
    fn speech_audio_is_loud_and_silence_audio_is_silent() {
        let speech = mulaw::decode_all(&speech_audio(Duration::from_millis(100)));
        assert_eq!(speech.len(), 800);
        assert!(rms(&speech) > 5000.0);
        assert_eq!(rms(&mulaw::decode_all(&silence_audio(Duration::from_millis(20)))), 0.0);
    }
}
