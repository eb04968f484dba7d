//! Twilio as the caller: the phone network and a human caller, played against *our* server's
//! carrier endpoints, for tests, `nixflex demo` and the call benchmarks.
//!
//! [`CallerEmulator::place_inbound_call`] does what Twilio does when a number rings:
//! 1. POSTs the voice webhook (Twilio's form fields, `X-Twilio-Signature`,
//!    `I-Twilio-Idempotency-Token`, Twilio's `User-Agent`), and on failure the fallback URL with
//!    `ErrorCode`/`ErrorUrl`;
//! 2. parses the TwiML answer ([`parse_twiml`]) and runs it: `<Say>` is recorded, `<Reject>`
//!    and `<Hangup>` end the call, `<Connect><Stream>` opens the media WebSocket (upgrade signed
//!    over the stream URL) and streams as Twilio Media Streams do — `connected`, `start` with the
//!    `<Parameter>`s as `customParameters`, continuous 20 ms μ-law `media`, `dtmf`, `mark` echoes
//!    and `stop` at hang-up — while playing the server's audio back in real time;
//! 3. when the socket closes, requests the `<Connect action>` URL (the after-stream TwiML is
//!    recorded, not run; without an action the rest of the document runs if the caller is still
//!    on the line), sends `<Stream statusCallback>` events, and finally the call's signed status
//!    callback.
//!
//! The caller's audio follows a [`CallerScript`] in real time, and everything lands in a
//! [`CallRecording`]. Each call is one tokio task; calls share one HTTP client, so hundreds run
//! side by side ([`CallerEmulator::place_inbound_calls`]).
//!
//! Deliberate differences from Twilio: `ws://` stream URLs are accepted (Twilio requires `wss`,
//! error 31922) so tests can use loopback; webhooks are not retried; `<Pause>`, `<Redirect>`
//! and other verbs are recorded as skipped, not run. The emulator never talks to Twilio itself:
//! it only calls the URLs it is given.

mod playback;
mod recording;
mod script;
mod stream;
mod twiml;
mod webhook;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use nixflex_providers::twilio::twiml::ConnectStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use self::recording::{
    AgentFrame, AgentUtterance, CallEvent, CallEventKind, CallOutcome, CallRecording, EndedBy,
    InboundGap, PacingStats, UTTERANCE_GAP, WebhookPurpose,
};
pub use self::script::{CallerScript, CallerStep, FRAME_DURATION, NoiseBed};
pub use self::stream::{
    CODE_CONNECTION_TIMEOUT, CODE_HANDSHAKE_ERROR, CODE_INVALID_MESSAGE, CODE_MALFORMED_MESSAGE,
    CODE_TLS_ERROR,
};
use self::stream::{CallClock, SessionSetup};
pub use self::twiml::{Conference, Dial, Twiml, TwimlError, TwimlVerb, parse_twiml};
use self::webhook::{CallParties, WebhookMethod, WebhookSender, resolve_url};
use crate::twilio::recordings::Tap;
use crate::twilio::server::Shared;
use crate::twilio::state::values_of;
use crate::twilio::{CallState, EmulatedAccount, NumberState, TwilioEmulator, new_sid};

/// Twilio's error code when a webhook cannot be fetched (network error or non-2xx answer).
pub const CODE_HTTP_RETRIEVAL_FAILURE: u32 = 11200;
/// Twilio's error code when a webhook's answer is not valid TwiML.
pub const CODE_DOCUMENT_PARSE_FAILURE: u32 = 12100;

/// How the emulated network behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerConfig {
    /// How long a webhook may take (Twilio's default is 15 s).
    pub webhook_timeout: Duration,
    /// How long opening the media WebSocket may take before error 31901.
    pub stream_connect_timeout: Duration,
    /// How long a `BargeIn` step waits for agent audio before it is skipped.
    pub step_timeout: Duration,
    /// The caller hangs up once the call has lasted this long (recorded as
    /// [`EndedBy::MaxDuration`]).
    pub max_call_duration: Duration,
    /// How long to wait for the server's close frame after hanging up.
    pub close_timeout: Duration,
    /// Keep every agent audio byte in the recording ([`CallRecording::agent_audio_mulaw`]);
    /// turn off for long benchmark runs.
    pub keep_agent_audio: bool,
}

impl Default for CallerConfig {
    fn default() -> Self {
        Self {
            webhook_timeout: Duration::from_secs(15),
            stream_connect_timeout: Duration::from_secs(10),
            step_timeout: Duration::from_secs(30),
            max_call_duration: Duration::from_secs(600),
            close_timeout: Duration::from_secs(2),
            keep_agent_audio: true,
        }
    }
}

/// An incoming call to place: who calls whom, and where Twilio would send the webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceCall {
    /// The number's voice URL (POSTed).
    pub voice_url: String,
    /// The number's voice fallback URL, tried when the voice URL fails.
    pub fallback_url: Option<String>,
    /// The number's status callback URL: receives the final call status.
    pub status_callback: Option<String>,
    /// The account the number belongs to (`AccountSid`).
    pub account_sid: String,
    /// The account's auth token: the key of every signature.
    pub auth_token: String,
    /// The caller's number (`From`, `Caller`).
    pub from: String,
    /// The called number (`To`, `Called`).
    pub to: String,
    /// The call's SID; `None` generates `CA` + 32 hex digits.
    pub call_sid: Option<String>,
    /// More form fields for every call webhook (e.g. `FromCountry`, `CallerName`,
    /// `ForwardedFrom`), after the standard ones.
    pub extra_params: Vec<(String, String)>,
}

impl PlaceCall {
    /// A call from `from` to `to` whose number has the voice URL `voice_url`.
    pub fn new(
        voice_url: impl Into<String>,
        account_sid: impl Into<String>,
        auth_token: impl Into<String>,
        from: impl Into<String>,
        to: impl Into<String>,
    ) -> Self {
        Self {
            voice_url: voice_url.into(),
            fallback_url: None,
            status_callback: None,
            account_sid: account_sid.into(),
            auth_token: auth_token.into(),
            from: from.into(),
            to: to.into(),
            call_sid: None,
            extra_params: Vec::new(),
        }
    }

    /// A call from `from` to a number of the REST emulator, with the webhooks configured on
    /// it. `None` when the number has no voice URL.
    pub fn to_number(account: &EmulatedAccount, number: &NumberState, from: &str) -> Option<Self> {
        let voice_url = number.voice_url.clone()?;
        let non_empty = |url: &str| Some(url.to_owned()).filter(|url| !url.is_empty());
        Some(Self {
            fallback_url: number.voice_fallback_url.as_deref().and_then(non_empty),
            status_callback: non_empty(&number.status_callback),
            ..Self::new(voice_url, &account.sid, &account.auth_token, from, &number.phone_number)
        })
    }
}

/// Why the emulator could not run.
#[derive(Debug)]
pub enum CallerError {
    /// The HTTP client could not be built.
    HttpClient(String),
    /// A call's task panicked or was cancelled.
    CallTask(String),
}

impl fmt::Display for CallerError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HttpClient(error) => write!(formatter, "cannot build the HTTP client: {error}"),
            Self::CallTask(error) => write!(formatter, "the emulated call's task failed: {error}"),
        }
    }
}

impl std::error::Error for CallerError {}

/// Places emulated inbound calls. Cheap to clone; clones share one HTTP connection pool.
#[derive(Debug, Clone)]
pub struct CallerEmulator {
    http: reqwest::Client,
    config: Arc<CallerConfig>,
    /// The REST emulator the calls are known to, when attached ([`CallerEmulator::with_network`]).
    network: Option<Arc<Shared>>,
}

/// A call running on its own task. Dropping the handle leaves the call running to its end.
#[derive(Debug)]
pub struct InboundCall {
    call_sid: String,
    /// Notified by [`InboundCall::hang_up`]; the call's media loop waits on it.
    hang_up: Arc<Notify>,
    task: JoinHandle<CallRecording>,
}

impl InboundCall {
    /// The call's `CA…` SID.
    pub fn call_sid(&self) -> &str {
        &self.call_sid
    }

    /// Makes the caller hang up now (`stop`, then close). Asked before the stream starts, the
    /// caller hangs up as soon as it has started.
    pub fn hang_up(&self) {
        self.hang_up.notify_one();
    }

    /// Waits for the call to end.
    ///
    /// # Errors
    ///
    /// [`CallerError::CallTask`] when the call's task panicked or was cancelled.
    pub async fn finish(self) -> Result<CallRecording, CallerError> {
        self.task.await.map_err(|error| CallerError::CallTask(error.to_string()))
    }
}

impl CallerEmulator {
    /// An emulator with the default [`CallerConfig`].
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built.
    pub fn new() -> Result<Self, CallerError> {
        Self::with_config(CallerConfig::default())
    }

    /// An emulator with `config`.
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built.
    pub fn with_config(config: CallerConfig) -> Result<Self, CallerError> {
        webhook::ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| CallerError::HttpClient(error.to_string()))?;
        Ok(Self { http, config: Arc::new(config), network: None })
    }

    /// Attaches the REST emulator `twilio`, as one Twilio: each call placed from now on is an
    /// `inbound` call there while it lasts (`ringing`, `in-progress` once its TwiML runs, then
    /// final), so the REST API can fetch, hang up and record it. A recording started on it
    /// captures both sides from then on; when the call ends the recording is completed with a
    /// dual-channel WAV and its signed status callback is sent (recorded as
    /// [`WebhookPurpose::RecordingStatus`]).
    #[must_use]
    pub fn with_network(mut self, twilio: &TwilioEmulator) -> Self {
        self.network = Some(twilio.shared());
        self
    }

    /// [`CallerEmulator::with_network`] from inside the REST emulator (its scripted callees).
    pub(crate) fn with_shared(mut self, shared: Arc<Shared>) -> Self {
        self.network = Some(shared);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &CallerConfig {
        &self.config
    }

    /// Places the call and runs it to its end on the current task.
    pub async fn place_inbound_call(&self, call: PlaceCall, script: CallerScript) -> CallRecording {
        let call_sid = call.call_sid.clone().unwrap_or_else(|| new_sid("CA"));
        self.run_call(call, call_sid, script, Arc::new(Notify::new()), false).await
    }

    /// Plays the callee of an outbound call Twilio placed through the Calls API and the callee
    /// answered: the answer URL (`call.voice_url`) is requested as Twilio does for such a call
    /// (`Direction: outbound-api`, `CallStatus: in-progress`, `From` our caller ID, `To` the
    /// callee), and its TwiML runs as for an incoming call, the callee speaking `script`. The
    /// REST emulator's call is not touched (its owner drives its status).
    pub async fn answer_outbound_call(
        &self,
        call: PlaceCall,
        script: CallerScript,
    ) -> CallRecording {
        let call_sid = call.call_sid.clone().unwrap_or_else(|| new_sid("CA"));
        self.run_call(call, call_sid, script, Arc::new(Notify::new()), true).await
    }

    /// Places the call on a new task and returns at once.
    pub fn start_inbound_call(&self, call: PlaceCall, script: CallerScript) -> InboundCall {
        let call_sid = call.call_sid.clone().unwrap_or_else(|| new_sid("CA"));
        let hang_up = Arc::new(Notify::new());
        let emulator = self.clone();
        let task = tokio::spawn({
            let call_sid = call_sid.clone();
            let hang_up = Arc::clone(&hang_up);
            async move { emulator.run_call(call, call_sid, script, hang_up, false).await }
        });
        InboundCall { call_sid, hang_up, task }
    }

    /// Places every call at once, each on its own task, and waits for all of them. Results are
    /// in the order of `calls`.
    ///
    /// # Errors
    ///
    /// [`CallerError::CallTask`] when a call's task panicked.
    pub async fn place_inbound_calls(
        &self,
        calls: impl IntoIterator<Item = (PlaceCall, CallerScript)>,
    ) -> Result<Vec<CallRecording>, CallerError> {
        let running: Vec<InboundCall> =
            calls.into_iter().map(|(call, script)| self.start_inbound_call(call, script)).collect();
        let mut recordings = Vec::with_capacity(running.len());
        for call in running {
            recordings.push(call.finish().await?);
        }
        Ok(recordings)
    }

    async fn run_call(
        &self,
        call: PlaceCall,
        call_sid: String,
        script: CallerScript,
        hang_up: Arc<Notify>,
        outbound: bool,
    ) -> CallRecording {
        let clock = CallClock::start();
        let mut recording = CallRecording::new(call_sid.clone());
        // An answered outbound call already exists in the REST emulator: it is tapped as it is.
        let tap = self
            .network
            .as_ref()
            .filter(|_| outbound)
            .map(|network| network.lock().tap_call(&call_sid));
        let tap = tap.or_else(|| {
            self.network.as_ref().filter(|_| !outbound).map(|network| {
                let now = chrono::Utc::now();
                let mut state = network.lock();
                let phone_number_sid = state
                    .numbers
                    .iter()
                    .find(|n| n.account_sid == call.account_sid && n.phone_number == call.to)
                    .map(|n| n.sid.clone());
                state.add_live_call(CallState {
                    sid: call_sid.clone(),
                    account_sid: call.account_sid.clone(),
                    to: call.to.clone(),
                    from: call.from.clone(),
                    status: "ringing".to_owned(),
                    direction: "inbound".to_owned(),
                    phone_number_sid,
                    create_params: Vec::new(),
                    updates: Vec::new(),
                    url: Some(call.voice_url.clone()),
                    twiml: None,
                    date_created: now,
                    date_updated: now,
                    end_time: None,
                })
            })
        });
        let parties = CallParties {
            call_sid,
            account_sid: call.account_sid.clone(),
            from: call.from.clone(),
            to: call.to.clone(),
            extra_params: call.extra_params.clone(),
            outbound,
        };
        let run = CallRun {
            config: &self.config,
            clock,
            parties: &parties,
            sender: WebhookSender {
                http: self.http.clone(),
                auth_token: call.auth_token.clone(),
                timeout: self.config.webhook_timeout,
            },
            script: &script,
            hang_up: &hang_up,
            network: self.network.as_deref(),
            tap: tap.as_deref(),
        };
        let outcome = run.answer(&call, &mut recording).await;
        recording.outcome = outcome;
        let tape = recording.tape.take();
        let recording_callbacks = match &self.network {
            Some(network) => {
                let mut state = network.lock();
                state
                    .set_live_call_status(&parties.call_sid, final_call_status(&recording.outcome));
                state.end_live_call(&parties.call_sid, tape.as_ref())
            }
            None => Vec::new(),
        };
        drop(tape);
        if let Some(status_callback) = &call.status_callback {
            run.send_status_callback(status_callback, &mut recording).await;
        }
        for callback in recording_callbacks {
            let sender = WebhookSender { auth_token: callback.auth_token, ..run.sender.clone() };
            let method = WebhookMethod::from_attribute(Some(&callback.method));
            let answer = sender.deliver(method, &callback.url, &callback.params).await;
            let purpose = WebhookPurpose::RecordingStatus;
            record_delivery(&mut recording, clock.now(), purpose, &callback.url, answer);
        }
        recording.duration = clock.now();
        // Background deliveries (stream status) are recorded when they finish.
        recording.events.sort_by_key(|event| event.at);
        recording
    }
}

/// One call in progress: what every step of [`CallerEmulator::run_call`] needs.
struct CallRun<'a> {
    config: &'a CallerConfig,
    clock: CallClock,
    parties: &'a CallParties,
    sender: WebhookSender,
    script: &'a CallerScript,
    hang_up: &'a Notify,
    /// The attached REST emulator, if any.
    network: Option<&'a Shared>,
    /// This call's tap in the REST emulator, if attached.
    tap: Option<&'a Tap>,
}

impl CallRun<'_> {
    /// Fetches and runs the call's TwiML; returns how the call ended.
    async fn answer(&self, call: &PlaceCall, recording: &mut CallRecording) -> CallOutcome {
        let (document_url, twiml) = match self.fetch_voice_twiml(call, recording).await {
            Ok(fetched) => fetched,
            Err(outcome) => return outcome,
        };
        recording.twiml = Some(twiml.clone());
        if let Some(network) = self.network {
            // Twilio answers the call to run its TwiML.
            network.lock().set_live_call_status(&self.parties.call_sid, "in-progress");
        }
        let mut outcome = None;
        let mut document_url = document_url;
        let mut verbs: std::collections::VecDeque<TwimlVerb> = twiml.verbs.into();
        // Each media stream of the call plays the next script (a call can come back to a
        // stream after a redirect, e.g. from a failed transfer).
        let silent = CallerScript::new();
        let mut script = Some(self.script);
        // A noise bed carries on to the next streams unless their scripts set their own.
        let mut noise = None;
        while let Some(verb) = verbs.pop_front() {
            let now = self.clock.now();
            match verb {
                TwimlVerb::Say { text, .. } => {
                    recording.push(now, CallEventKind::TwimlSay { text })
                }
                TwimlVerb::Hangup => break,
                TwimlVerb::Reject { reason } => {
                    outcome.get_or_insert(CallOutcome::Rejected { reason });
                    break;
                }
                TwimlVerb::Pause { .. } => skip(recording, now, "Pause"),
                TwimlVerb::Redirect { .. } => skip(recording, now, "Redirect"),
                TwimlVerb::Play { url } => {
                    self.play_to_callee(&document_url, &url, recording).await
                }
                TwimlVerb::Other { name } => skip(recording, now, &name),
                TwimlVerb::Dial(dial) => {
                    if let Some((url, next)) = self.dial(&document_url, &dial, recording).await {
                        document_url = url;
                        verbs = next.verbs.into();
                    }
                }
                TwimlVerb::ConnectStream { stream, method } => {
                    let updates_before = self.update_count();
                    let this_script = script.unwrap_or(&silent);
                    script = this_script.next_stream();
                    noise = this_script.stream_noise(noise);
                    let ended = self
                        .connect_stream(&document_url, &stream, this_script, noise, recording)
                        .await;
                    let ended_by = match ended {
                        Ok(ended_by) => ended_by,
                        Err(failed) => {
                            outcome = Some(failed);
                            break;
                        }
                    };
                    outcome = Some(CallOutcome::Completed { ended_by });
                    // A REST update with `Twiml` or `Url` replaced the document: Twilio ended the
                    // stream and runs the new TwiML; the `<Connect action>` is not requested.
                    if ended_by == EndedBy::Server
                        && let Some(redirect) = self.redirect_since(updates_before)
                    {
                        recording.push(self.clock.now(), CallEventKind::Redirected);
                        match self.follow_redirect(&document_url, redirect, recording).await {
                            Some((url, next)) => {
                                document_url = url;
                                verbs = next.verbs.into();
                                continue;
                            }
                            None => break,
                        }
                    }
                    if let Some(action) = &stream.action {
                        let method = WebhookMethod::from_attribute(method.as_deref());
                        self.request_after_stream_twiml(
                            &document_url,
                            action,
                            method,
                            ended_by,
                            recording,
                        )
                        .await;
                        break;
                    }
                    if ended_by != EndedBy::Server {
                        // The caller is gone: nothing more of the document runs.
                        break;
                    }
                }
            }
        }
        outcome.unwrap_or(CallOutcome::Hungup)
    }

    /// POSTs the voice webhook (and the fallback when it fails) and parses the answer. Returns
    /// the URL that answered and its TwiML.
    async fn fetch_voice_twiml(
        &self,
        call: &PlaceCall,
        recording: &mut CallRecording,
    ) -> Result<(String, Twiml), CallOutcome> {
        let status = if self.parties.outbound { "in-progress" } else { "ringing" };
        let params = self.parties.standard_params(status);
        let mut answered = self
            .fetch(WebhookPurpose::Voice, &call.voice_url, WebhookMethod::Post, &params, recording)
            .await
            .map(|body| (call.voice_url.clone(), body));
        if let (Err(_), Some(fallback_url)) = (&answered, &call.fallback_url) {
            let mut fallback_params = params.clone();
            fallback_params.push(("ErrorCode".to_owned(), CODE_HTTP_RETRIEVAL_FAILURE.to_string()));
            fallback_params.push(("ErrorUrl".to_owned(), call.voice_url.clone()));
            answered = self
                .fetch(
                    WebhookPurpose::VoiceFallback,
                    fallback_url,
                    WebhookMethod::Post,
                    &fallback_params,
                    recording,
                )
                .await
                .map(|body| (fallback_url.clone(), body));
        }
        let (document_url, body) = answered.map_err(|message| CallOutcome::Failed {
            code: Some(CODE_HTTP_RETRIEVAL_FAILURE),
            message,
        })?;
        match parse_twiml(&body) {
            Ok(twiml) => Ok((document_url, twiml)),
            Err(error) => {
                let message = error.to_string();
                let code = Some(CODE_DOCUMENT_PARSE_FAILURE);
                recording.push(
                    self.clock.now(),
                    CallEventKind::Error { code, message: message.clone() },
                );
                Err(CallOutcome::Failed { code, message })
            }
        }
    }

    /// Delivers a webhook whose answer must be a 2xx TwiML body; records the delivery and, on
    /// failure, error 11200.
    async fn fetch(
        &self,
        purpose: WebhookPurpose,
        url: &str,
        method: WebhookMethod,
        params: &[(String, String)],
        recording: &mut CallRecording,
    ) -> Result<String, String> {
        let answer = self.sender.deliver(method, url, params).await;
        let now = self.clock.now();
        let status = answer.as_ref().ok().map(|answer| answer.status);
        recording.push(now, CallEventKind::Webhook { purpose, url: url.to_owned(), status });
        let failure = match answer {
            Ok(answer) if answer.is_success() => return Ok(answer.body),
            Ok(answer) => format!("{url} answered HTTP {}", answer.status),
            Err(error) => format!("{url} could not be fetched: {error}"),
        };
        let code = Some(CODE_HTTP_RETRIEVAL_FAILURE);
        recording.push(now, CallEventKind::Error { code, message: failure.clone() });
        Err(failure)
    }

    /// Runs a `<Connect><Stream>`: connects, streams until one side ends, and sends the
    /// stream's status callbacks. Returns who ended it, or the failed call's outcome.
    async fn connect_stream(
        &self,
        document_url: &str,
        stream: &ConnectStream,
        script: &CallerScript,
        noise: Option<NoiseBed>,
        recording: &mut CallRecording,
    ) -> Result<EndedBy, CallOutcome> {
        let stream_sid = new_sid("MZ");
        let status = StreamStatus::new(self, document_url, stream, &stream_sid);
        let Some(url) = resolve_url(document_url, &stream.url, true) else {
            let message = format!("the stream URL {:?} is not a URL", stream.url);
            return Err(self
                .stream_failed(stream::CODE_HANDSHAKE_ERROR, message, &status, recording)
                .await);
        };
        let socket = match stream::connect(
            &url,
            &self.sender.auth_token,
            self.config.stream_connect_timeout,
        )
        .await
        {
            Ok(socket) => socket,
            Err(failure) => {
                return Err(self
                    .stream_failed(failure.code, failure.message, &status, recording)
                    .await);
            }
        };
        recording.push(self.clock.now(), CallEventKind::StreamConnected { url });
        recording.stream_sid = Some(stream_sid.clone());
        // Twilio reports the start asynchronously; the media must not wait for it.
        let started = status.spawn("stream-started", None);
        let setup = SessionSetup {
            clock: self.clock,
            stream_sid: &stream_sid,
            account_sid: &self.parties.account_sid,
            call_sid: &self.parties.call_sid,
            parameters: &stream.parameters,
            script,
            noise,
            step_timeout: self.config.step_timeout,
            max_call_duration: self.config.max_call_duration,
            close_timeout: self.config.close_timeout,
            keep_agent_audio: self.config.keep_agent_audio,
            hang_up: self.hang_up,
            tap: self.tap,
        };
        let ended_by = stream::run_session(socket, &setup, recording).await;
        if let Some(started) = started {
            status.record_spawned(started, recording).await;
        }
        status.deliver("stream-stopped", None, recording).await;
        Ok(ended_by)
    }

    async fn stream_failed(
        &self,
        code: u32,
        message: String,
        status: &StreamStatus<'_>,
        recording: &mut CallRecording,
    ) -> CallOutcome {
        recording.push(
            self.clock.now(),
            CallEventKind::Error { code: Some(code), message: message.clone() },
        );
        status.deliver("stream-error", Some(&message), recording).await;
        CallOutcome::Failed { code: Some(code), message }
    }

    /// Requests the `<Connect action>` URL after the stream and records the TwiML it returns.
    async fn request_after_stream_twiml(
        &self,
        document_url: &str,
        action: &str,
        method: WebhookMethod,
        ended_by: EndedBy,
        recording: &mut CallRecording,
    ) {
        let Some(url) = resolve_url(document_url, action, false) else {
            let message = format!("the <Connect action> {action:?} is not a URL");
            recording.push(
                self.clock.now(),
                CallEventKind::Error { code: Some(CODE_HTTP_RETRIEVAL_FAILURE), message },
            );
            return;
        };
        let call_status = if ended_by == EndedBy::Server { "in-progress" } else { "completed" };
        let params = self.parties.standard_params(call_status);
        let Ok(body) =
            self.fetch(WebhookPurpose::ConnectAction, &url, method, &params, recording).await
        else {
            return;
        };
        let now = self.clock.now();
        match parse_twiml(&body) {
            Ok(twiml) => {
                recording.after_stream_twiml = Some(twiml);
                recording.push(now, CallEventKind::AfterStreamTwiml);
            }
            Err(error) => {
                let message = error.to_string();
                recording.push(
                    now,
                    CallEventKind::Error { code: Some(CODE_DOCUMENT_PARSE_FAILURE), message },
                );
            }
        }
    }

    /// How many REST updates the call has had so far (none without the REST emulator).
    fn update_count(&self) -> usize {
        self.network.map_or(0, |network| {
            let state = network.lock();
            state
                .calls
                .iter()
                .find(|call| call.sid == self.parties.call_sid)
                .map_or(0, |call| call.updates.len())
        })
    }

    /// The last REST update after the first `since` that redirected the call (`Twiml` or `Url`
    /// without a final `Status`).
    fn redirect_since(&self, since: usize) -> Option<Redirect> {
        let network = self.network?;
        let state = network.lock();
        let call = state.calls.iter().find(|call| call.sid == self.parties.call_sid)?;
        call.updates.iter().skip(since).rev().find_map(|form| {
            let first = |name: &str| {
                values_of(form, name).first().map(|v| (*v).to_owned()).filter(|v| !v.is_empty())
            };
            if first("Status").is_some() {
                return None;
            }
            match (first("Twiml"), first("Url")) {
                (Some(twiml), _) => Some(Redirect::Twiml(twiml)),
                (None, Some(url)) => Some(Redirect::Url { url, method: first("Method") }),
                (None, None) => None,
            }
        })
    }

    /// Runs a redirect: the new document and the URL relative URLs in it resolve against.
    async fn follow_redirect(
        &self,
        document_url: &str,
        redirect: Redirect,
        recording: &mut CallRecording,
    ) -> Option<(String, Twiml)> {
        let (url, body) = match redirect {
            Redirect::Twiml(twiml) => (document_url.to_owned(), twiml),
            Redirect::Url { url, method } => {
                let params = self.parties.standard_params("in-progress");
                let method = WebhookMethod::from_attribute(method.as_deref());
                let body = self
                    .fetch(WebhookPurpose::Redirect, &url, method, &params, recording)
                    .await
                    .ok()?;
                (url, body)
            }
        };
        self.parse_or_record(&body, recording).map(|twiml| (url, twiml))
    }

    fn parse_or_record(&self, body: &str, recording: &mut CallRecording) -> Option<Twiml> {
        match parse_twiml(body) {
            Ok(twiml) => Some(twiml),
            Err(error) => {
                let code = Some(CODE_DOCUMENT_PARSE_FAILURE);
                recording.push(
                    self.clock.now(),
                    CallEventKind::Error { code, message: error.to_string() },
                );
                None
            }
        }
    }

    /// Runs a `<Dial>` to one number, as Twilio would
    /// (https://www.twilio.com/docs/voice/twiml/dial): the scripted callee at that number (see
    /// [`crate::twilio::callee::Callee`]; an unscripted number fails) answers, is busy, or
    /// rings past `timeout`. When it answers, the `<Number url>` is requested on its leg, then
    /// the two talk for a moment ([`DIAL_TALK`]) and the callee hangs up. The `action` URL then
    /// gets `DialCallStatus`, `DialCallSid` and `DialCallDuration`, and its TwiML replaces the
    /// document (returned with its URL); without `action` the document goes on.
    async fn dial(
        &self,
        document_url: &str,
        dial: &Dial,
        recording: &mut CallRecording,
    ) -> Option<(String, Twiml)> {
        use crate::twilio::callee::Callee;
        if let Some(room) = &dial.conference {
            return self.conference(document_url, dial, room, recording).await;
        }
        let callee =
            self.network.and_then(|network| network.lock().callees.get(&dial.number).cloned());
        let timeout = Duration::from_secs(u64::from(dial.timeout_seconds));
        let dial_sid = new_sid("CA");
        let rang_then = |ring_for: Duration| async move {
            tokio::time::sleep(ring_for.min(timeout)).await;
            ring_for < timeout
        };
        let mut talked = Duration::ZERO;
        let status = match callee {
            Some(Callee::Human { ring_for, .. } | Callee::Voicemail { ring_for, .. }) => {
                if rang_then(ring_for).await {
                    if let Some(number_url) = &dial.number_url
                        && let Some(url) = resolve_url(document_url, number_url, false)
                    {
                        let from =
                            dial.caller_id.clone().unwrap_or_else(|| self.parties.from.clone());
                        let params: Vec<(String, String)> = [
                            ("CallSid", dial_sid.as_str()),
                            ("ParentCallSid", self.parties.call_sid.as_str()),
                            ("AccountSid", self.parties.account_sid.as_str()),
                            ("From", from.as_str()),
                            ("To", dial.number.as_str()),
                            ("Caller", from.as_str()),
                            ("Called", dial.number.as_str()),
                            ("CallStatus", "in-progress"),
                            ("Direction", "outbound-dial"),
                            ("ApiVersion", "2010-04-01"),
                        ]
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect();
                        let answer = self
                            .fetch(
                                WebhookPurpose::DialNumberUrl,
                                &url,
                                WebhookMethod::Post,
                                &params,
                                recording,
                            )
                            .await;
                        // The called party hears the `<Play>`s (a whisper) before the caller joins.
                        let plays: Vec<String> = answer
                            .ok()
                            .and_then(|body| self.parse_or_record(&body, recording))
                            .map(|twiml| {
                                twiml
                                    .verbs
                                    .into_iter()
                                    .filter_map(|verb| match verb {
                                        TwimlVerb::Play { url } => Some(url),
                                        _ => None,
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        for play in plays {
                            self.play_to_callee(&url, &play, recording).await;
                        }
                    }
                    tokio::time::sleep(DIAL_TALK).await;
                    talked = DIAL_TALK;
                    "completed"
                } else {
                    "no-answer"
                }
            }
            Some(Callee::NoAnswer { ring_for }) => {
                rang_then(ring_for).await;
                "no-answer"
            }
            Some(Callee::HangsUp { ring_for, talk_for }) => {
                if rang_then(ring_for).await {
                    tokio::time::sleep(talk_for).await;
                    talked = talk_for;
                    "completed"
                } else {
                    "no-answer"
                }
            }
            Some(Callee::Busy) => "busy",
            Some(Callee::Failed) | None => "failed",
        };
        recording.push(
            self.clock.now(),
            CallEventKind::Dialed { number: dial.number.clone(), status: status.to_owned() },
        );
        let action = dial.action.as_deref()?;
        let url = resolve_url(document_url, action, false)?;
        let mut params = self.parties.standard_params("in-progress");
        params.extend([
            ("DialCallStatus".to_owned(), status.to_owned()),
            ("DialCallSid".to_owned(), dial_sid),
            ("DialCallDuration".to_owned(), talked.as_secs().to_string()),
            ("DialBridged".to_owned(), (status == "completed").to_string()),
        ]);
        let method = WebhookMethod::from_attribute(dial.method.as_deref());
        let body =
            self.fetch(WebhookPurpose::DialAction, &url, method, &params, recording).await.ok()?;
        self.parse_or_record(&body, recording).map(|twiml| (url, twiml))
    }

    /// Runs a `<Dial><Conference>` (https://www.twilio.com/docs/voice/twiml/conference) in the
    /// REST emulator's room of that name: the call enters (on hold while the conference has not
    /// started), talks once the conference has started and someone else is in it, and leaves
    /// when the conference ends (a participant with `endConferenceOnExit` left), when a REST
    /// update redirects or ends the call, or — for a participant that starts *and* ends the
    /// conference, as a transfer's destination does — after talking for [`DIAL_TALK`]. Leaving
    /// with `endConferenceOnExit` ends the conference for everyone. Then the `<Dial action>` is
    /// requested (unless the call was redirected or ended) and its TwiML replaces the document.
    async fn conference(
        &self,
        document_url: &str,
        dial: &Dial,
        room: &Conference,
        recording: &mut CallRecording,
    ) -> Option<(String, Twiml)> {
        use crate::twilio::state::ConferenceRoom;
        let Some(network) = self.network else {
            skip(recording, self.clock.now(), "Conference");
            return None;
        };
        let sid = self.parties.call_sid.clone();
        let updates_before = self.update_count();
        let on_hold = {
            let mut state = network.lock();
            let entry = state.conferences.entry(room.name.clone()).or_default();
            if entry.ended {
                // A new conference under the same name.
                *entry = ConferenceRoom::default();
            }
            entry.participants.push(sid.clone());
            entry.started |= room.start_on_enter;
            !entry.started
        };
        let name = room.name.clone();
        recording.push(
            self.clock.now(),
            CallEventKind::ConferenceEntered { name: name.clone(), on_hold },
        );
        let deadline = self.clock.now() + self.config.max_call_duration;
        let mut talking_since: Option<Duration> = None;
        let why = loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = self.clock.now();
            if self.update_count() > updates_before {
                if self.redirect_since(updates_before).is_some() {
                    break "redirected";
                }
                if network.lock().calls.iter().any(|call| call.sid == sid && call.is_final()) {
                    break "ended";
                }
            }
            let (started, others, ended) = {
                let state = network.lock();
                state.conferences.get(&name).map_or((false, 0, true), |r| {
                    (r.started, r.participants.iter().filter(|p| **p != sid).count(), r.ended)
                })
            };
            if ended {
                break "conference-ended";
            }
            if started && others > 0 && talking_since.is_none() {
                talking_since = Some(now);
                recording.push(now, CallEventKind::ConferenceTalking { name: name.clone() });
            }
            if room.start_on_enter
                && room.end_on_exit
                && talking_since.is_some_and(|since| now.saturating_sub(since) >= DIAL_TALK)
            {
                break "talked";
            }
            if now >= deadline {
                break "timeout";
            }
        };
        {
            let mut state = network.lock();
            if let Some(entry) = state.conferences.get_mut(&name) {
                entry.participants.retain(|p| *p != sid);
                if room.end_on_exit && entry.started {
                    entry.ended = true;
                }
            }
        }
        recording
            .push(self.clock.now(), CallEventKind::ConferenceLeft { name, why: why.to_owned() });
        match why {
            "redirected" => {
                let redirect = self.redirect_since(updates_before)?;
                recording.push(self.clock.now(), CallEventKind::Redirected);
                self.follow_redirect(document_url, redirect, recording).await
            }
            "ended" => Some((document_url.to_owned(), Twiml { verbs: vec![TwimlVerb::Hangup] })),
            _ => {
                let action = dial.action.as_deref()?;
                let url = resolve_url(document_url, action, false)?;
                let params = self.parties.standard_params("in-progress");
                let method = WebhookMethod::from_attribute(dial.method.as_deref());
                let body = self
                    .fetch(WebhookPurpose::DialAction, &url, method, &params, recording)
                    .await
                    .ok()?;
                self.parse_or_record(&body, recording).map(|twiml| (url, twiml))
            }
        }
    }

    /// Fetches a `<Play>` URL (a plain GET) and records what came back.
    async fn play_to_callee(&self, document_url: &str, play: &str, recording: &mut CallRecording) {
        let Some(url) = resolve_url(document_url, play, false) else { return };
        let answer = self.sender.http.get(&url).timeout(self.sender.timeout).send().await;
        let (status, bytes) = match answer {
            Ok(response) => {
                let status = response.status().as_u16();
                (Some(status), response.bytes().await.map_or(0, |b| b.len()))
            }
            Err(_) => (None, 0),
        };
        recording.push(self.clock.now(), CallEventKind::PlayedToCallee { url, status, bytes });
    }

    /// Sends the call's final status to its status callback.
    async fn send_status_callback(&self, url: &str, recording: &mut CallRecording) {
        let call_status = final_call_status(&recording.outcome);
        let mut params = self.parties.standard_params(call_status);
        params.extend([
            ("CallDuration".to_owned(), self.clock.now().as_secs().to_string()),
            ("Timestamp".to_owned(), rfc2822_now()),
            ("CallbackSource".to_owned(), "call-progress-events".to_owned()),
            ("SequenceNumber".to_owned(), "0".to_owned()),
        ]);
        let answer = self.sender.deliver(WebhookMethod::Post, url, &params).await;
        let purpose = WebhookPurpose::StatusCallback;
        record_delivery(recording, self.clock.now(), purpose, url, answer);
    }
}

/// How long an answered `<Dial>` leg talks before the called party hangs up.
pub const DIAL_TALK: Duration = Duration::from_millis(300);

/// A REST update that replaced a live call's TwiML.
enum Redirect {
    /// `Twiml`.
    Twiml(String),
    /// `Url` (and `Method`).
    Url { url: String, method: Option<String> },
}

/// The call's final `CallStatus` for how it ended.
fn final_call_status(outcome: &CallOutcome) -> &'static str {
    match outcome {
        CallOutcome::Rejected { reason } if reason == "busy" => "busy",
        CallOutcome::Rejected { .. } => "no-answer",
        CallOutcome::Failed { .. } => "failed",
        CallOutcome::Hungup | CallOutcome::Completed { .. } => "completed",
    }
}

fn skip(recording: &mut CallRecording, now: Duration, name: &str) {
    recording.push(now, CallEventKind::TwimlVerbSkipped { name: name.to_owned() });
}

/// Records a delivery whose answer body does not matter (status callbacks).
fn record_delivery(
    recording: &mut CallRecording,
    now: Duration,
    purpose: WebhookPurpose,
    url: &str,
    answer: Result<webhook::WebhookAnswer, String>,
) {
    let status = answer.as_ref().ok().map(|answer| answer.status);
    recording.push(now, CallEventKind::Webhook { purpose, url: url.to_owned(), status });
    if let Err(error) = answer {
        let message = format!("{url} could not be reached: {error}");
        recording
            .push(now, CallEventKind::Error { code: Some(CODE_HTTP_RETRIEVAL_FAILURE), message });
    }
}

/// The current time as Twilio writes it in callbacks (RFC 2822, GMT).
fn rfc2822_now() -> String {
    chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

/// The `<Stream statusCallback>` of one stream, if it has one: `stream-started`,
/// `stream-stopped` and `stream-error` events with `AccountSid`, `CallSid`, `StreamSid`,
/// `StreamName`, `StreamEvent`, `Timestamp` (and `StreamError`).
struct StreamStatus<'a> {
    run: &'a CallRun<'a>,
    /// The resolved callback URL; `None` when the stream has none.
    url: Option<String>,
    method: WebhookMethod,
    stream_sid: &'a str,
    stream_name: String,
}

impl<'a> StreamStatus<'a> {
    fn new(
        run: &'a CallRun<'a>,
        document_url: &str,
        stream: &ConnectStream,
        stream_sid: &'a str,
    ) -> Self {
        Self {
            run,
            url: stream
                .status_callback
                .as_deref()
                .and_then(|url| resolve_url(document_url, url, false)),
            method: WebhookMethod::from_attribute(stream.status_callback_method.as_deref()),
            stream_sid,
            stream_name: stream.name.clone().unwrap_or_else(|| stream_sid.to_owned()),
        }
    }

    fn params(&self, event: &str, error: Option<&str>) -> Vec<(String, String)> {
        let mut params: Vec<(String, String)> = [
            ("AccountSid", self.run.parties.account_sid.as_str()),
            ("CallSid", self.run.parties.call_sid.as_str()),
            ("StreamSid", self.stream_sid),
            ("StreamName", self.stream_name.as_str()),
            ("StreamEvent", event),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
        params.push(("Timestamp".to_owned(), rfc2822_now()));
        if let Some(error) = error {
            params.push(("StreamError".to_owned(), error.to_owned()));
        }
        params
    }

    async fn deliver(&self, event: &str, error: Option<&str>, recording: &mut CallRecording) {
        let Some(url) = &self.url else { return };
        let answer = self.run.sender.deliver(self.method, url, &self.params(event, error)).await;
        record_delivery(recording, self.run.clock.now(), WebhookPurpose::StreamStatus, url, answer);
    }

    /// Starts a delivery in the background; [`StreamStatus::record_spawned`] records it.
    fn spawn(
        &self,
        event: &str,
        error: Option<&str>,
    ) -> Option<JoinHandle<(Duration, Result<webhook::WebhookAnswer, String>)>> {
        let url = self.url.clone()?;
        let sender = self.run.sender.clone();
        let params = self.params(event, error);
        let (method, clock) = (self.method, self.run.clock);
        Some(tokio::spawn(async move {
            let answer = sender.deliver(method, &url, &params).await;
            (clock.now(), answer)
        }))
    }

    async fn record_spawned(
        &self,
        delivery: JoinHandle<(Duration, Result<webhook::WebhookAnswer, String>)>,
        recording: &mut CallRecording,
    ) {
        let Some(url) = &self.url else { return };
        let (at, answer) = match delivery.await {
            Ok(done) => done,
            Err(error) => (self.run.clock.now(), Err(error.to_string())),
        };
        record_delivery(recording, at, WebhookPurpose::StreamStatus, url, answer);
    }
}
