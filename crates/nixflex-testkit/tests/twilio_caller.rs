//! `CallerEmulator` (Twilio as the caller) over real loopback HTTP and WebSocket, against a fake
//! carrier endpoint written here that speaks the server side of the protocol: it checks every
//! webhook's `X-Twilio-Signature` with `nixflex_providers`' validator, answers with TwiML from
//! `nixflex_providers`' builder, accepts the media socket, records every message it receives
//! with Twilio's exact shapes checked, and sends agent audio, marks and clears.
//!
//! Timing assertions use events (what the server saw, counted in the caller's 20 ms frames) and
//! generous lower bounds where real-time playback guarantees them; nothing sleeps.
// The fake server's helpers are test code outside `#[test]` functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use nixflex_pipeline::audio::{mulaw, tone};
use nixflex_providers::twilio::signature;
use nixflex_providers::twilio::twiml::{self, ConnectStream, RejectReason};
use nixflex_testkit::corpus::{self, Noise, NoiseKind};
use nixflex_testkit::twilio::TwilioEmulator;
use nixflex_testkit::twilio::caller::{
    CallEventKind, CallOutcome, CallRecording, CallerEmulator, CallerScript, EndedBy, PlaceCall,
    TwimlVerb, WebhookPurpose,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

const AUTH_TOKEN: &str = "0123456789abcdef0123456789abcdef";
const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const FROM: &str = "+15550001111";
const TO: &str = "+15550002222";

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

// ---------------------------------------------------------------------------------------------
// The fake server
// ---------------------------------------------------------------------------------------------

/// A webhook the fake server received.
#[derive(Debug, Clone)]
struct WebhookSeen {
    path: String,
    params: Vec<(String, String)>,
    signature_valid: bool,
    user_agent: Option<String>,
    idempotency_token: Option<String>,
}

impl WebhookSeen {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// One media socket, as the fake server saw it, reported when the socket has closed.
#[derive(Debug)]
struct StreamSeen {
    upgrade_signature_valid: bool,
    /// Every text message received, parsed, with its arrival time.
    messages: Vec<(Instant, Value)>,
    /// Moments the scenario noted by name.
    notes: Vec<(&'static str, Instant)>,
    /// Numbers the scenario noted by name.
    counts: Vec<(&'static str, usize)>,
}

impl StreamSeen {
    fn note(&self, name: &str) -> Instant {
        self.notes.iter().find(|(key, _)| *key == name).map(|(_, at)| *at).expect(name)
    }

    fn count(&self, name: &str) -> usize {
        self.counts.iter().find(|(key, _)| *key == name).map(|(_, count)| *count).expect(name)
    }

    fn values(&self) -> Vec<&Value> {
        self.messages.iter().map(|(_, value)| value).collect()
    }

    fn events(&self) -> Vec<&str> {
        self.messages.iter().map(|(_, value)| value["event"].as_str().unwrap()).collect()
    }
}

/// The server side of one media socket, driven by a test's scenario.
struct StreamConn {
    socket: WebSocket,
    messages: Vec<(Instant, Value)>,
    notes: Vec<(&'static str, Instant)>,
    counts: Vec<(&'static str, usize)>,
    stream_sid: String,
    closed: bool,
}

impl StreamConn {
    /// The next text message, recorded; `None` once the socket is closed.
    async fn recv(&mut self) -> Option<Value> {
        while !self.closed {
            match self.socket.recv().await {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(text.as_str()).expect("JSON text");
                    self.messages.push((Instant::now(), value.clone()));
                    return Some(value);
                }
                Some(Ok(Message::Binary(_))) => panic!("Twilio never sends binary frames"),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => self.closed = true,
            }
        }
        None
    }

    /// Reads `connected` and `start`; remembers the stream SID.
    async fn read_start(&mut self) {
        let connected = self.recv().await.expect("connected");
        assert_eq!(connected["event"], "connected");
        let start = self.recv().await.expect("start");
        assert_eq!(start["event"], "start");
        self.stream_sid = start["streamSid"].as_str().unwrap().to_owned();
    }

    async fn send(&mut self, value: Value) {
        self.socket.send(Message::Text(value.to_string().into())).await.expect("send");
    }

    /// Sends `duration` of agent audio (a 440 Hz tone) as 20 ms `media` messages, at once.
    async fn send_agent_audio(&mut self, duration: Duration) {
        let n_samples = usize::try_from(duration.as_millis()).unwrap() * 8;
        let audio = mulaw::encode_all(&tone::sine(440.0, 8000, n_samples, 6000.0));
        for frame in audio.chunks(160) {
            let payload = BASE64.encode(frame);
            let media = json!({"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}});
            self.send(media).await;
        }
    }

    async fn send_mark(&mut self, name: &str) {
        let mark = json!({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}});
        self.send(mark).await;
    }

    async fn send_clear(&mut self) {
        self.send(json!({"event": "clear", "streamSid": self.stream_sid})).await;
    }

    /// Reads until a caller `media` frame carries speech (not all μ-law silence).
    async fn wait_for_caller_speech(&mut self) {
        while let Some(message) = self.recv().await {
            if is_speech(&message) {
                return;
            }
        }
        panic!("the socket closed before the caller spoke");
    }

    /// Reads until a silent frame follows the caller's speech.
    async fn wait_for_caller_speech_end(&mut self) {
        self.wait_for_caller_speech().await;
        while let Some(message) = self.recv().await {
            if message["event"] == "media" && !is_speech(&message) {
                return;
            }
        }
        panic!("the socket closed while the caller spoke");
    }

    /// Reads until the caller echoes the mark `name`.
    async fn wait_for_mark_echo(&mut self, name: &str) {
        while let Some(message) = self.recv().await {
            if message["event"] == "mark" && message["mark"]["name"] == name {
                return;
            }
        }
        panic!("the socket closed before the mark {name} was echoed");
    }

    /// Reads `n` more caller `media` frames: the caller's 20 ms clock, used as a time base.
    async fn read_media_frames(&mut self, n: usize) -> usize {
        let mut seen = 0;
        while seen < n {
            let message = self.recv().await.expect("caller media");
            if message["event"] == "media" {
                seen += 1;
            }
        }
        seen
    }

    async fn close(&mut self, code: u16) {
        let frame = CloseFrame { code, reason: "server done".into() };
        self.socket.send(Message::Close(Some(frame))).await.expect("close");
        while self.recv().await.is_some() {}
    }

    fn note(&mut self, name: &'static str) {
        self.notes.push((name, Instant::now()));
    }
}

fn is_speech(message: &Value) -> bool {
    message["event"] == "media"
        && BASE64
            .decode(message["media"]["payload"].as_str().unwrap())
            .unwrap()
            .iter()
            .any(|&code| code != 0xFF)
}

type Scenario = Arc<dyn Fn(StreamConn) -> BoxFuture<'static, StreamConn> + Send + Sync>;

fn scenario<F, Fut>(scenario: F) -> Scenario
where
    F: Fn(StreamConn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = StreamConn> + Send + 'static,
{
    Arc::new(move |conn| scenario(conn).boxed())
}

/// A scenario that only listens until the caller hangs up.
fn listen() -> Scenario {
    scenario(|mut conn: StreamConn| async move {
        conn.read_start().await;
        conn
    })
}

struct ServerState {
    base_url: String,
    stream_url: String,
    voice_twiml: String,
    action_twiml: String,
    scenario: Scenario,
    webhooks: mpsc::UnboundedSender<WebhookSeen>,
    streams: mpsc::UnboundedSender<StreamSeen>,
}

struct FakeServer {
    base_url: String,
    webhooks: mpsc::UnboundedReceiver<WebhookSeen>,
    streams: mpsc::UnboundedReceiver<StreamSeen>,
}

/// URLs of the fake server, for building TwiML.
struct Urls {
    base: String,
    stream: String,
}

impl Urls {
    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The usual answer: a bidirectional stream with parameters, an action and a status
    /// callback.
    fn connect_stream_twiml(&self) -> String {
        twiml::Response::new()
            .say("This call may be recorded.")
            .connect_stream(&ConnectStream {
                action: Some(self.at("/twilio/stream-ended")),
                url: self.stream.clone(),
                status_callback: Some(self.at("/twilio/stream-status")),
                status_callback_method: Some("POST".to_owned()),
                parameters: vec![
                    ("call_id".to_owned(), "c_123".to_owned()),
                    ("token".to_owned(), "per-call-secret".to_owned()),
                ],
                ..ConnectStream::default()
            })
            .to_xml()
    }
}

impl FakeServer {
    async fn start(voice_twiml: impl FnOnce(&Urls) -> String, scenario: Scenario) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let urls = Urls {
            base: base_url.clone(),
            stream: format!("{}/twilio/stream", base_url.replace("http://", "ws://")),
        };
        let (webhooks_tx, webhooks) = mpsc::unbounded_channel();
        let (streams_tx, streams) = mpsc::unbounded_channel();
        let state = Arc::new(ServerState {
            base_url: base_url.clone(),
            stream_url: urls.stream.clone(),
            voice_twiml: voice_twiml(&urls),
            action_twiml: twiml::Response::new().say("Goodbye.").hangup().to_xml(),
            scenario,
            webhooks: webhooks_tx,
            streams: streams_tx,
        });
        let app = Router::new()
            .route("/twilio/stream", get(accept_stream))
            .route("/twilio/{hook}", post(webhook))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base_url, webhooks, streams }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    fn place_call(&self) -> PlaceCall {
        PlaceCall {
            status_callback: Some(self.url("/twilio/status")),
            ..PlaceCall::new(self.url("/twilio/voice"), ACCOUNT_SID, AUTH_TOKEN, FROM, TO)
        }
    }

    /// Every webhook received so far (all are answered before the call's recording returns).
    fn webhooks(&mut self) -> Vec<WebhookSeen> {
        let mut seen = Vec::new();
        while let Ok(webhook) = self.webhooks.try_recv() {
            seen.push(webhook);
        }
        seen
    }

    /// The next media socket to close, as the server saw it.
    async fn stream(&mut self) -> StreamSeen {
        tokio::time::timeout(Duration::from_secs(10), self.streams.recv())
            .await
            .expect("the server's socket handler finishes")
            .expect("a stream")
    }
}

async fn webhook(
    State(state): State<Arc<ServerState>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    let url = format!("{}{}", state.base_url, uri);
    let header =
        |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let signature_valid = header("x-twilio-signature")
        .is_some_and(|signature| signature::validate_form(AUTH_TOKEN, &url, &params, &signature));
    let path = uri.path().to_owned();
    state
        .webhooks
        .send(WebhookSeen {
            path: path.clone(),
            params,
            signature_valid,
            user_agent: header("user-agent"),
            idempotency_token: header("i-twilio-idempotency-token"),
        })
        .unwrap();
    let xml = [("content-type", twiml::CONTENT_TYPE)];
    match path.as_str() {
        "/twilio/voice" => (xml, state.voice_twiml.clone()).into_response(),
        "/twilio/stream-ended" => (xml, state.action_twiml.clone()).into_response(),
        "/twilio/broken" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn accept_stream(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let upgrade_signature_valid =
        headers.get("x-twilio-signature").and_then(|value| value.to_str().ok()).is_some_and(
            |signature| signature::validate_form(AUTH_TOKEN, &state.stream_url, &[], signature),
        );
    upgrade.on_upgrade(move |socket| async move {
        let conn = StreamConn {
            socket,
            messages: Vec::new(),
            notes: Vec::new(),
            counts: Vec::new(),
            stream_sid: String::new(),
            closed: false,
        };
        let mut conn = (state.scenario)(conn).await;
        while conn.recv().await.is_some() {}
        let seen = StreamSeen {
            upgrade_signature_valid,
            messages: conn.messages,
            notes: conn.notes,
            counts: conn.counts,
        };
        let _ = state.streams.send(seen);
    })
}

// ---------------------------------------------------------------------------------------------
// Checks of Twilio's message shapes
// ---------------------------------------------------------------------------------------------

fn is_sid(value: &Value, prefix: &str) -> bool {
    value.as_str().is_some_and(|sid| {
        sid.len() == 34
            && sid.starts_with(prefix)
            && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// Checks every message of a stream against docs/protocols.md#media-streams-from-twilio and returns the number of media
/// frames. `sequenceNumber` must count 1, 2, 3… from `start` across all messages, `chunk` 1, 2,
/// 3… across media, and `timestamp` advance 20 per chunk.
fn assert_twilio_stream_shape(seen: &StreamSeen, recording: &CallRecording) -> usize {
    let messages = seen.values();
    assert_eq!(*messages[0], json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}));
    let start = messages[1];
    let stream_sid = start["streamSid"].as_str().unwrap();
    assert!(is_sid(&start["streamSid"], "MZ"), "{start}");
    assert_eq!(recording.stream_sid.as_deref(), Some(stream_sid));
    assert_eq!(
        *start,
        json!({
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": stream_sid,
            "start": {
                "streamSid": stream_sid,
                "accountSid": ACCOUNT_SID,
                "callSid": recording.call_sid,
                "tracks": ["inbound"],
                "customParameters": {"call_id": "c_123", "token": "per-call-secret"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
            }
        })
    );
    let mut n_media = 0_u64;
    for (index, message) in messages.iter().enumerate().skip(2) {
        let expected_sequence = (index as u64).to_string();
        assert_eq!(message["sequenceNumber"], expected_sequence.as_str(), "{message}");
        assert_eq!(message["streamSid"], stream_sid);
        let object = message.as_object().unwrap();
        match message["event"].as_str().unwrap() {
            "media" => {
                n_media += 1;
                assert_eq!(object.len(), 4, "{message}");
                let media = message["media"].as_object().unwrap();
                assert_eq!(media.len(), 4, "{message}");
                assert_eq!(media["track"], "inbound");
                assert_eq!(media["chunk"], n_media.to_string().as_str());
                assert_eq!(media["timestamp"], (n_media * 20).to_string().as_str());
                let payload = BASE64.decode(media["payload"].as_str().unwrap()).unwrap();
                assert_eq!(payload.len(), 160);
            }
            "mark" => {
                assert_eq!(object.len(), 4, "{message}");
                assert!(message["mark"]["name"].is_string());
            }
            "dtmf" => {
                assert_eq!(object.len(), 4, "{message}");
                assert_eq!(message["dtmf"]["track"], "inbound_track");
            }
            "stop" => {
                assert_eq!(index, messages.len() - 1, "stop is the last message");
                assert_eq!(
                    message["stop"],
                    json!({"accountSid": ACCOUNT_SID, "callSid": recording.call_sid})
                );
            }
            other => panic!("unexpected event {other}"),
        }
    }
    assert!(seen.upgrade_signature_valid, "the WebSocket upgrade carries a valid signature");
    assert_eq!(recording.caller_frames_sent, n_media, "every frame sent arrived");
    usize::try_from(n_media).unwrap()
}

fn webhook_purposes(recording: &CallRecording) -> Vec<(WebhookPurpose, Option<u16>)> {
    recording
        .events
        .iter()
        .filter_map(|event| match &event.kind {
            CallEventKind::Webhook { purpose, status, .. } => Some((*purpose, *status)),
            _ => None,
        })
        .collect()
}

fn emulator() -> CallerEmulator {
    CallerEmulator::new().expect("emulator")
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_rejected_busy_ends_unanswered_and_reports_busy() {
    let mut server = FakeServer::start(|_| twiml::reject(RejectReason::Busy), listen()).await;
    // The number comes from the REST emulator, with the webhooks configured on it.
    let rest = TwilioEmulator::start().await.unwrap();
    let account = rest.add_account();
    let number_sid = rest.add_number(&account.sid, TO);
    let (voice_url, status_url) = (server.url("/twilio/voice"), server.url("/twilio/status"));
    rest.configure_number(
        &number_sid,
        &[("VoiceUrl", voice_url.as_str()), ("StatusCallback", status_url.as_str())],
    );
    let call = PlaceCall::to_number(&account, &rest.number(&number_sid).unwrap(), FROM).unwrap();
    let call = PlaceCall {
        auth_token: AUTH_TOKEN.to_owned(),
        account_sid: ACCOUNT_SID.to_owned(),
        ..call
    };

    let recording = emulator().place_inbound_call(call, CallerScript::new().hang_up()).await;

    assert_eq!(recording.outcome, CallOutcome::Rejected { reason: "busy".to_owned() });
    assert_eq!(recording.stream_sid, None);
    let webhooks = server.webhooks();
    assert_eq!(webhooks.len(), 2);
    let voice = &webhooks[0];
    assert_eq!(voice.path, "/twilio/voice");
    assert!(voice.signature_valid);
    assert_eq!(voice.user_agent.as_deref(), Some("TwilioProxy/1.1"));
    assert_eq!(voice.idempotency_token.as_ref().map(String::len), Some(36));
    assert!(is_sid(&json!(voice.param("CallSid").unwrap()), "CA"));
    assert_eq!(voice.param("CallSid"), Some(recording.call_sid.as_str()));
    for (name, value) in [
        ("AccountSid", ACCOUNT_SID),
        ("From", FROM),
        ("To", TO),
        ("Caller", FROM),
        ("Called", TO),
        ("CallStatus", "ringing"),
        ("ApiVersion", "2010-04-01"),
        ("Direction", "inbound"),
    ] {
        assert_eq!(voice.param(name), Some(value), "{name}");
    }
    let status = &webhooks[1];
    assert_eq!(status.path, "/twilio/status");
    assert!(status.signature_valid);
    assert_eq!(status.param("CallStatus"), Some("busy"));
    assert_eq!(status.param("CallbackSource"), Some("call-progress-events"));
    assert_ne!(voice.idempotency_token, status.idempotency_token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reply_plays_in_real_time_and_its_mark_is_echoed_only_after_it_played() {
    let scenario = scenario(|mut conn: StreamConn| async move {
        conn.read_start().await;
        conn.wait_for_caller_speech_end().await;
        conn.note("audio sending started");
        conn.send_agent_audio(ms(1000)).await;
        conn.send_mark("reply-1").await;
        conn.wait_for_mark_echo("reply-1").await;
        conn.note("mark echoed");
        conn
    });
    let mut server = FakeServer::start(Urls::connect_stream_twiml, scenario).await;
    let script = CallerScript::new()
        .silence(ms(100))
        .say("I need a table for two", ms(600))
        .wait_for_agent_speech(ms(5000))
        .wait_for_agent_silence(ms(200), ms(5000))
        .hang_up();

    let recording = emulator().place_inbound_call(server.place_call(), script).await;
    let seen = server.stream().await;

    // The echo needs the whole second of audio to play out in real time after it arrived.
    let mark_round_trip = seen.note("mark echoed") - seen.note("audio sending started");
    assert!(mark_round_trip >= ms(950), "echoed after {mark_round_trip:?}");
    assert!(mark_round_trip < ms(5000), "echoed after {mark_round_trip:?}");
    assert_twilio_stream_shape(&seen, &recording);
    // The caller's own timeline agrees: every frame played, the mark after the last one ended.
    assert_eq!(recording.agent_frames.len(), 50);
    assert!(
        recording.agent_frames.iter().all(|frame| frame.played_end.is_some() && !frame.cleared)
    );
    let last_played =
        recording.agent_frames.iter().filter_map(|frame| frame.played_end).max().unwrap();
    let echoed_at = recording
        .first_event(|kind| matches!(kind, CallEventKind::MarkEchoed { name, cleared: false } if name == "reply-1"))
        .unwrap();
    assert!(echoed_at >= last_played);
    let utterances = recording.agent_utterances();
    assert_eq!(utterances.len(), 1);
    assert_eq!(utterances[0].audio, ms(1000));
    assert!(utterances[0].end - utterances[0].start >= ms(1000));
    assert!(recording.response_latency_after("I need a table for two").is_some());
    assert_eq!(recording.agent_audio_mulaw().len(), 8000);
    assert_eq!(recording.agent_audio_pcm().len(), 8000);
    assert_eq!(recording.ended_by(), Some(EndedBy::Caller));
    assert_eq!(recording.twiml.as_ref().unwrap().said(), vec!["This call may be recorded."]);
    assert!(recording.errors().is_empty(), "{:?}", recording.errors());
    let pacing = recording.outbound_pacing();
    assert_eq!(pacing.frames as u64, recording.caller_frames_sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_drops_queued_audio_and_echoes_the_pending_mark_at_once() {
    let scenario = scenario(|mut conn: StreamConn| async move {
        conn.read_start().await;
        conn.send_agent_audio(ms(3000)).await;
        conn.send_mark("long-reply").await;
        // Let about 200 ms of the reply play, counted in the caller's frames.
        conn.read_media_frames(10).await;
        conn.send_clear().await;
        conn.note("clear sent");
        let media_before = conn.messages.len();
        conn.wait_for_mark_echo("long-reply").await;
        let frames_until_echo = conn.messages[media_before..]
            .iter()
            .filter(|(_, message)| message["event"] == "media")
            .count();
        conn.counts.push(("frames until echo", frames_until_echo));
        conn.note("mark echoed");
        conn
    });
    let mut server = FakeServer::start(Urls::connect_stream_twiml, scenario).await;
    let script = CallerScript::new()
        .wait_for_agent_speech(ms(5000))
        .wait_for_agent_silence(ms(300), ms(5000))
        .hang_up();

    let recording = emulator().place_inbound_call(server.place_call(), script).await;
    let seen = server.stream().await;

    assert!(seen.note("mark echoed") >= seen.note("clear sent"));
    // Had the mark waited for its audio, at least 140 more caller frames would have come first.
    let frames_until_echo = seen.count("frames until echo");
    assert!(frames_until_echo < 100, "{frames_until_echo} caller frames before the echo");
    assert_twilio_stream_shape(&seen, &recording);
    let dropped = recording
        .events
        .iter()
        .find_map(|event| match event.kind {
            CallEventKind::ClearReceived { dropped_bytes } => Some(dropped_bytes),
            _ => None,
        })
        .unwrap();
    assert!(dropped > 8000, "dropped {dropped} bytes");
    assert!(
        recording
            .first_event(|kind| matches!(kind, CallEventKind::MarkEchoed { cleared: true, .. }))
            .is_some()
    );
    let played = recording.agent_frames.iter().filter(|frame| frame.played_start.is_some()).count();
    let cleared = recording.agent_frames.iter().filter(|frame| frame.cleared).count();
    assert_eq!(recording.agent_frames.len(), 150);
    assert!(played < 100, "{played} frames played");
    assert!(cleared >= 50, "{cleared} frames cleared");
    assert_eq!(recording.agent_utterances().len(), 1);
}

/// The caller's audio as the server received it, decoded.
fn caller_audio(seen: &StreamSeen) -> Vec<i16> {
    seen.values()
        .into_iter()
        .filter(|message| message["event"] == "media")
        .flat_map(|message| {
            mulaw::decode_all(
                &BASE64.decode(message["media"]["payload"].as_str().unwrap()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noise_bed_reaches_the_server_sample_for_sample_at_its_level() {
    let mut server = FakeServer::start(Urls::connect_stream_twiml, listen()).await;
    let script = CallerScript::new()
        .silence(ms(1000))
        .dtmf('1')
        .silence(ms(1000))
        .hang_up()
        .with_noise(NoiseKind::Pink, -30.0, 11);

    let recording = emulator().place_inbound_call(server.place_call(), script).await;
    let seen = server.stream().await;

    assert_twilio_stream_shape(&seen, &recording);
    let received = caller_audio(&seen);
    assert_eq!(received.len(), 101 * 160);
    let level = corpus::dbfs(&received);
    assert!((level - -30.0).abs() <= 0.5, "{level} dBFS");
    // Exactly the noise, through μ-law, from its first sample: the DTMF frame has it too.
    let expected: Vec<i16> = Noise::new(NoiseKind::Pink, -30.0, 11)
        .take_samples(received.len())
        .into_iter()
        .map(|sample| mulaw::decode(mulaw::encode(sample)))
        .collect();
    assert_eq!(received, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_played_over_a_noise_bed_reaches_the_server_at_its_snr() {
    let mut server = FakeServer::start(Urls::connect_stream_twiml, listen()).await;
    let clip = corpus::clips_of(corpus::ClipKind::Interruption).next().unwrap();
    let script = CallerScript::new().play(clip.text, clip.samples.clone()).hang_up().with_noise(
        NoiseKind::White,
        -30.0,
        2,
    );

    let recording = emulator().place_inbound_call(server.place_call(), script).await;
    let seen = server.stream().await;

    let received = caller_audio(&seen);
    assert_eq!(received.len(), clip.samples.len().div_ceil(160) * 160);
    let noise = Noise::new(NoiseKind::White, -30.0, 2).take_samples(received.len());
    let residual: Vec<i16> = received
        .iter()
        .zip(clip.samples.iter().chain(std::iter::repeat(&0)))
        .map(|(&mixed, &speech)| mixed.saturating_sub(speech))
        .collect();
    // What is left after removing the clip is the noise (plus μ-law rounding).
    let noise_level = corpus::dbfs(&residual);
    assert!((noise_level - corpus::dbfs(&noise)).abs() < 1.0, "{noise_level} dBFS");
    let labels: Vec<String> = recording
        .events
        .iter()
        .filter_map(|event| match &event.kind {
            CallEventKind::CallerSpeechStarted { label, barge_in: false } => Some(label.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(labels, vec![clip.text.to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_messages_have_twilios_shape() {
    let mut server = FakeServer::start(Urls::connect_stream_twiml, listen()).await;
    let script = CallerScript::new().silence(ms(60)).dtmf('7').dtmf('#').silence(ms(40)).hang_up();

    let recording = emulator().place_inbound_call(server.place_call(), script).await;
    let seen = server.stream().await;

    assert_twilio_stream_shape(&seen, &recording);
    let stream_sid = recording.stream_sid.clone().unwrap();
    let dtmf: Vec<&Value> =
        seen.values().into_iter().filter(|message| message["event"] == "dtmf").collect();
    assert_eq!(dtmf.len(), 2);
    let sequence = dtmf[0]["sequenceNumber"].clone();
    assert_eq!(
        *dtmf[0],
        json!({
            "event": "dtmf",
            "streamSid": stream_sid,
            "sequenceNumber": sequence,
            "dtmf": {"track": "inbound_track", "digit": "7"}
        })
    );
    assert_eq!(dtmf[1]["dtmf"]["digit"], "#");
    let digits: Vec<char> = recording
        .events
        .iter()
        .filter_map(|event| match event.kind {
            CallEventKind::DtmfSent { digit } => Some(digit),
            _ => None,
        })
        .collect();
    assert_eq!(digits, vec!['7', '#']);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_up_sends_stop_and_requests_the_signed_connect_action() {
    let mut server = FakeServer::start(Urls::connect_stream_twiml, listen()).await;
    let script = CallerScript::new().say("That's all, bye", ms(300)).hang_up();

    let recording = emulator().place_inbound_call(server.place_call(), script).await;
    let seen = server.stream().await;

    assert_twilio_stream_shape(&seen, &recording);
    assert_eq!(seen.events().last(), Some(&"stop"));
    assert_eq!(recording.outcome, CallOutcome::Completed { ended_by: EndedBy::Caller });
    assert!(recording.first_event(|kind| matches!(kind, CallEventKind::CallerHungUp)).is_some());
    let webhooks = server.webhooks();
    let paths: Vec<&str> = webhooks.iter().map(|webhook| webhook.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/twilio/voice",
            "/twilio/stream-status",
            "/twilio/stream-status",
            "/twilio/stream-ended",
            "/twilio/status"
        ]
    );
    assert!(webhooks.iter().all(|webhook| webhook.signature_valid));
    let stream_events: Vec<Option<&str>> = webhooks
        .iter()
        .filter(|webhook| webhook.path == "/twilio/stream-status")
        .map(|webhook| webhook.param("StreamEvent"))
        .collect();
    assert_eq!(stream_events, [Some("stream-started"), Some("stream-stopped")]);
    let action = &webhooks[3];
    assert_eq!(action.param("CallSid"), Some(recording.call_sid.as_str()));
    assert_eq!(action.param("CallStatus"), Some("completed"));
    assert_eq!(webhooks[4].param("CallStatus"), Some("completed"));
    let after = recording.after_stream_twiml.as_ref().unwrap();
    assert_eq!(
        after.verbs,
        vec![
            TwimlVerb::Say { text: "Goodbye.".to_owned(), voice: None, language: None },
            TwimlVerb::Hangup
        ]
    );
    assert_eq!(
        webhook_purposes(&recording),
        vec![
            (WebhookPurpose::Voice, Some(200)),
            (WebhookPurpose::StreamStatus, Some(204)),
            (WebhookPurpose::StreamStatus, Some(204)),
            (WebhookPurpose::ConnectAction, Some(200)),
            (WebhookPurpose::StatusCallback, Some(204)),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_closing_the_socket_ends_the_call() {
    let scenario = scenario(|mut conn: StreamConn| async move {
        conn.read_start().await;
        conn.read_media_frames(5).await;
        conn.close(1000).await;
        conn
    });
    let mut server = FakeServer::start(Urls::connect_stream_twiml, scenario).await;

    let recording = emulator().place_inbound_call(server.place_call(), CallerScript::new()).await;
    let seen = server.stream().await;

    assert_twilio_stream_shape(&seen, &recording);
    assert!(!seen.events().contains(&"stop"));
    assert_eq!(recording.ended_by(), Some(EndedBy::Server));
    assert!(
        recording
            .first_event(|kind| matches!(
                kind,
                CallEventKind::ServerClosedStream { code: Some(1000), .. }
            ))
            .is_some()
    );
    let action = server
        .webhooks()
        .into_iter()
        .find(|webhook| webhook.path == "/twilio/stream-ended")
        .unwrap();
    assert!(action.signature_valid);
    assert_eq!(action.param("CallStatus"), Some("in-progress"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_server_messages_are_recorded_as_twilio_warnings_and_ignored() {
    let scenario = scenario(|mut conn: StreamConn| async move {
        conn.read_start().await;
        let sid = conn.stream_sid.clone();
        conn.socket.send(Message::Binary(Bytes::from_static(&[0xFF; 160]))).await.unwrap();
        conn.socket.send(Message::Text("{not json".into())).await.unwrap();
        conn.send(json!({"event": "clear", "streamSid": "MZ00000000000000000000000000000000"}))
            .await;
        conn.send(json!({"event": "speak", "streamSid": sid})).await;
        conn.send(json!({"event": "media", "streamSid": sid, "media": {"payload": "/w==", "track": "outbound"}})).await;
        conn.send(json!({"event": "media", "streamSid": sid, "media": {"payload": "not base64!"}}))
            .await;
        // The stream is still alive: a mark with nothing queued comes straight back.
        conn.send_mark("still-alive").await;
        conn.wait_for_mark_echo("still-alive").await;
        conn.close(1000).await;
        conn
    });
    let mut server = FakeServer::start(Urls::connect_stream_twiml, scenario).await;

    let recording = emulator().place_inbound_call(server.place_call(), CallerScript::new()).await;
    let seen = server.stream().await;

    assert_twilio_stream_shape(&seen, &recording);
    let codes: Vec<Option<u32>> = recording.errors().into_iter().map(|(code, _)| code).collect();
    assert_eq!(
        codes,
        [Some(31950), Some(31951), Some(31951), Some(31951), Some(31951), Some(31951)]
    );
    assert_eq!(recording.marks_echoed(), ["still-alive"]);
    assert!(recording.agent_frames.is_empty());
    assert_eq!(recording.ended_by(), Some(EndedBy::Server));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_speech_is_answered_by_a_clear_that_the_recording_measures() {
    let scenario = scenario(|mut conn: StreamConn| async move {
        conn.read_start().await;
        conn.send_agent_audio(ms(4000)).await;
        conn.send_mark("greeting").await;
        conn.wait_for_caller_speech().await;
        conn.send_clear().await;
        conn.wait_for_mark_echo("greeting").await;
        conn
    });
    let mut server = FakeServer::start(Urls::connect_stream_twiml, scenario).await;
    let script = CallerScript::new()
        .wait_for_agent_speech(ms(5000))
        .barge_in(ms(300), "wait, stop", ms(400))
        .wait_for_agent_silence(ms(200), ms(5000))
        .hang_up();

    let recording = emulator().place_inbound_call(server.place_call(), script).await;
    let seen = server.stream().await;

    assert_twilio_stream_shape(&seen, &recording);
    let barge_in_at = recording
        .first_event(|kind| {
            matches!(kind, CallEventKind::CallerSpeechStarted { barge_in: true, .. })
        })
        .unwrap();
    let first_played =
        recording.agent_frames.iter().filter_map(|frame| frame.played_start).min().unwrap();
    assert!(barge_in_at - first_played >= ms(300));
    assert!(recording.first_clear_after("wait, stop").is_some());
    assert!(
        recording
            .first_event(|kind| matches!(kind, CallEventKind::MarkEchoed { cleared: true, .. }))
            .is_some()
    );
    assert!(recording.agent_frames.iter().any(|frame| frame.cleared));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_voice_url_falls_back_with_twilios_error_code() {
    let mut server = FakeServer::start(|_| twiml::hangup(), listen()).await;
    let call = PlaceCall {
        voice_url: server.url("/twilio/broken"),
        fallback_url: Some(server.url("/twilio/voice")),
        ..server.place_call()
    };

    let recording = emulator().place_inbound_call(call, CallerScript::new()).await;

    assert_eq!(recording.outcome, CallOutcome::Hungup);
    assert_eq!(recording.errors().first().map(|(code, _)| *code), Some(Some(11200)));
    let webhooks = server.webhooks();
    assert_eq!(webhooks[0].path, "/twilio/broken");
    let fallback = &webhooks[1];
    assert!(fallback.signature_valid);
    assert_eq!(fallback.param("ErrorCode"), Some("11200"));
    assert_eq!(fallback.param("ErrorUrl"), Some(server.url("/twilio/broken").as_str()));
    assert_eq!(webhooks[2].param("CallStatus"), Some("completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_url_that_refuses_the_upgrade_fails_the_call_with_31920() {
    let server = FakeServer::start(
        |urls| {
            twiml::connect_stream(&ConnectStream {
                url: urls.stream.replace("/twilio/stream", "/nowhere"),
                ..ConnectStream::default()
            })
        },
        listen(),
    )
    .await;

    let recording = emulator().place_inbound_call(server.place_call(), CallerScript::new()).await;

    assert!(
        matches!(recording.outcome, CallOutcome::Failed { code: Some(31920), .. }),
        "{:?}",
        recording.outcome
    );
    assert_eq!(recording.stream_sid, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_calls_send_every_frame_with_gapless_sequence_numbers() {
    const N_CALLS: usize = 50;
    let scenario = scenario(|mut conn: StreamConn| async move {
        conn.read_start().await;
        conn.wait_for_caller_speech_end().await;
        conn.send_agent_audio(ms(400)).await;
        conn.send_mark("reply").await;
        conn
    });
    let mut server = FakeServer::start(Urls::connect_stream_twiml, scenario).await;
    let script = CallerScript::new()
        .say("hello there", ms(400))
        .wait_for_agent_speech(ms(10_000))
        .wait_for_agent_silence(ms(200), ms(10_000))
        .hang_up();
    let calls = (0..N_CALLS).map(|_| (server.place_call(), script.clone()));

    let recordings = emulator().place_inbound_calls(calls).await.unwrap();

    let mut streams = Vec::with_capacity(N_CALLS);
    for _ in 0..N_CALLS {
        streams.push(server.stream().await);
    }
    let mut all_deviations = Vec::new();
    for recording in &recordings {
        assert_eq!(recording.ended_by(), Some(EndedBy::Caller), "{:?}", recording.events);
        assert_eq!(recording.marks_echoed(), ["reply"]);
        let seen = streams
            .iter()
            .find(|seen| seen.messages[1].1["start"]["callSid"] == recording.call_sid.as_str())
            .expect("the server saw the call's stream");
        assert_twilio_stream_shape(seen, recording);
        all_deviations.extend_from_slice(recording.outbound_deviations());
    }
    let pacing = nixflex_testkit::twilio::caller::PacingStats::from_deviations(&all_deviations);
    println!(
        "{N_CALLS} concurrent calls, {} caller frames: pacing deviation p50 {:?}, p99 {:?}, max {:?}",
        pacing.frames, pacing.p50, pacing.p99, pacing.max
    );
}
