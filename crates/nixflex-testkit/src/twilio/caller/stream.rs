//! The media stream of a `<Connect><Stream>`, from Twilio's side (docs/protocols.md#twilio-media-streams): the
//! WebSocket client that sends `connected`, `start`, a continuous 20 ms `media` stream of the
//! caller's audio, `dtmf`, `mark` echoes and `stop`, and that plays the server's audio back
//! through [`Playback`].
//!
//! One task runs one stream: a single `select!` loop over an absolute-deadline 20 ms ticker
//! (missed ticks fire late, as a burst, so sending never drifts from the grid), the socket's
//! incoming messages, the caller's hang-up request and the maximum call duration. Each tick
//! finishes the playing agent frame, starts the next, lets the script decide the caller's frame
//! and sends it. Per frame it allocates only the outgoing message text; incoming payloads are
//! decoded into a reused buffer.
//!
//! What the server sends is checked as Twilio checks it: binary frames are warning 31950,
//! anything but a well-formed `media`, `mark` or `clear` for this stream is warning 31951. Twilio
//! logs these once per stream and otherwise ignores the message; the emulator records every
//! occurrence and ignores the message too — it does not close the stream.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64_STANDARD;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt as _, StreamExt as _};
use nixflex_pipeline::audio::{MULAW_FRAME_BYTES, MULAW_SILENCE, mulaw};
use nixflex_providers::twilio::signature::compute_signature;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::corpus::Noise;
use crate::twilio::SIGNATURE_HEADER;
use crate::twilio::caller::playback::Playback;
use crate::twilio::caller::recording::{AgentFrame, CallEventKind, CallRecording, EndedBy};
use crate::twilio::caller::script::{
    CallerScript, FRAME_DURATION, NoiseBed, ScriptRunner, TickPlan, speech_frame, tone_frame,
};
use crate::twilio::recordings::{Tap, Tape};

/// Twilio's warning for a binary message on the stream.
pub const CODE_MALFORMED_MESSAGE: u32 = 31950;
/// Twilio's warning for a message that is not a valid `media`, `mark` or `clear`.
pub const CODE_INVALID_MESSAGE: u32 = 31951;
/// Twilio's error when the stream URL does not answer the upgrade with 101.
pub const CODE_HANDSHAKE_ERROR: u32 = 31920;
/// Twilio's error when the stream URL cannot be reached in time.
pub const CODE_CONNECTION_TIMEOUT: u32 = 31901;
/// Twilio's error when the TLS connection to a `wss` URL fails.
pub const CODE_TLS_ERROR: u32 = 31910;

const SILENT_FRAME: [u8; MULAW_FRAME_BYTES] = [MULAW_SILENCE; MULAW_FRAME_BYTES];

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The call's clock: every recorded time is relative to the moment the voice webhook was sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallClock {
    pub(crate) start: Instant,
}

impl CallClock {
    pub(crate) fn start() -> Self {
        Self { start: Instant::now() }
    }

    pub(crate) fn now(self) -> Duration {
        self.at(Instant::now())
    }

    pub(crate) fn at(self, instant: Instant) -> Duration {
        instant.saturating_duration_since(self.start)
    }
}

/// Why the stream could not be opened: Twilio's error code and a message.
#[derive(Debug)]
pub(crate) struct ConnectFailure {
    pub(crate) code: u32,
    pub(crate) message: String,
}

/// Opens the media WebSocket to `url` as Twilio does: the upgrade request carries
/// `X-Twilio-Signature`, computed over the stream URL with no parameters (as for a JSON
/// webhook, the URL alone is signed), and Nagle's algorithm is off.
///
/// # Errors
///
/// A [`ConnectFailure`] with Twilio's code: 31920 when the server answers the upgrade with
/// anything but 101, 31910 for TLS failures, 31901 for everything else (unreachable, timeout).
pub(crate) async fn connect(
    url: &str,
    auth_token: &str,
    timeout: Duration,
) -> Result<Socket, ConnectFailure> {
    let failure = |code, message: String| ConnectFailure { code, message };
    let mut request = url
        .into_client_request()
        .map_err(|error| failure(CODE_HANDSHAKE_ERROR, format!("invalid stream URL: {error}")))?;
    let signature = compute_signature(auth_token, url, &[]);
    if let Ok(value) = HeaderValue::from_str(&signature) {
        request.headers_mut().insert(SIGNATURE_HEADER, value);
    }
    let websocket_config = tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    let connecting =
        tokio_tungstenite::connect_async_with_config(request, Some(websocket_config), true);
    match tokio::time::timeout(timeout, connecting).await {
        Err(_) => Err(failure(
            CODE_CONNECTION_TIMEOUT,
            "the stream URL did not answer in time".to_owned(),
        )),
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(tungstenite::Error::Http(response))) => Err(failure(
            CODE_HANDSHAKE_ERROR,
            format!("the stream URL answered the upgrade with HTTP {}", response.status()),
        )),
        Ok(Err(tungstenite::Error::Tls(error))) => Err(failure(CODE_TLS_ERROR, error.to_string())),
        Ok(Err(error)) => Err(failure(CODE_CONNECTION_TIMEOUT, error.to_string())),
    }
}

/// What the session needs to know about the call.
#[derive(Debug)]
pub(crate) struct SessionSetup<'a> {
    pub(crate) clock: CallClock,
    pub(crate) stream_sid: &'a str,
    pub(crate) account_sid: &'a str,
    pub(crate) call_sid: &'a str,
    /// `<Parameter>`s, surfaced as `start.customParameters`.
    pub(crate) parameters: &'a [(String, String)],
    pub(crate) script: &'a CallerScript,
    /// Mixed into every caller frame of this stream (the script's own or an earlier stream's).
    pub(crate) noise: Option<NoiseBed>,
    /// How long a `BargeIn` waits before it is skipped.
    pub(crate) step_timeout: Duration,
    /// The caller hangs up when this much time has passed since the call started.
    pub(crate) max_call_duration: Duration,
    /// How long to wait for the server's close frame after hanging up.
    pub(crate) close_timeout: Duration,
    pub(crate) keep_agent_audio: bool,
    /// Notified (by [`crate::twilio::caller::InboundCall::hang_up`]) to make the caller hang
    /// up now; a notification stored before the stream starts hangs up at its first turn.
    pub(crate) hang_up: &'a Notify,
    /// The call's tap in the REST emulator: once a recording starts, both sides are taped.
    pub(crate) tap: Option<&'a Tap>,
}

/// Runs the stream on an open socket until the caller hangs up or the server closes it.
pub(crate) async fn run_session(
    socket: Socket,
    setup: &SessionSetup<'_>,
    recording: &mut CallRecording,
) -> EndedBy {
    let (sink, mut incoming) = socket.split();
    let mut session = MediaSession {
        sink,
        setup,
        recording,
        runner: ScriptRunner::new(setup.script, setup.step_timeout),
        playback: Playback::default(),
        sequence: 0,
        chunk: 0,
        echoed: Vec::new(),
        decoded: Vec::with_capacity(4 * MULAW_FRAME_BYTES),
        audio: CallerAudio::new(setup.noise),
        tape: None,
    };
    let ended_by = session.run(&mut incoming).await;
    session.recording.inbound_gaps = session.playback.take_gaps();
    session.recording.tape = session.tape.take();
    ended_by
}

/// The sending of a message failed: the socket is gone.
#[derive(Debug)]
struct SocketGone(String);

enum TickOutcome {
    Continue,
    HangUp,
}

struct MediaSession<'a, 'r> {
    /// Our half for sending; the loop owns the receiving half.
    sink: SplitSink<Socket, Message>,
    setup: &'a SessionSetup<'a>,
    recording: &'r mut CallRecording,
    runner: ScriptRunner,
    playback: Playback,
    /// The last `sequenceNumber` sent.
    sequence: u64,
    /// The last media `chunk` sent.
    chunk: u64,
    /// Marks to echo, filled by the playback queue; emptied right after.
    echoed: Vec<String>,
    /// Reused buffer for decoding agent payloads.
    decoded: Vec<u8>,
    /// Builds the caller's frames (and mixes in the noise bed).
    audio: CallerAudio,
    /// Both sides of the call since a recording started (see [`Tap`]).
    tape: Option<Tape>,
}

impl MediaSession<'_, '_> {
    async fn run(&mut self, incoming: &mut SplitStream<Socket>) -> EndedBy {
        if let Err(gone) = self.send_connected_and_start().await {
            self.record_server_closed(None, gone.0);
            return EndedBy::Server;
        }
        // The first tick fires at once: Twilio's media follows `start` immediately.
        let mut ticker = tokio::time::interval(FRAME_DURATION);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let max_duration =
            tokio::time::sleep_until(self.setup.clock.start + self.setup.max_call_duration);
        tokio::pin!(max_duration);

        let ended_by = loop {
            tokio::select! {
                // Pacing first: a busy socket must not delay the caller's frames.
                biased;
                deadline = ticker.tick() => match self.on_tick(deadline).await {
                    Ok(TickOutcome::Continue) => {}
                    Ok(TickOutcome::HangUp) => break EndedBy::Caller,
                    Err(gone) => {
                        self.record_server_closed(None, gone.0);
                        break EndedBy::Server;
                    }
                },
                message = incoming.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        if let Err(gone) = self.on_text(text.as_str()).await {
                            self.record_server_closed(None, gone.0);
                            break EndedBy::Server;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => self.record_error(
                        CODE_MALFORMED_MESSAGE,
                        "the server sent a binary message; Media Streams messages are JSON text".to_owned(),
                    ),
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = match frame {
                            Some(frame) => (Some(u16::from(frame.code)), frame.reason.as_str().to_owned()),
                            None => (None, String::new()),
                        };
                        self.record_server_closed(code, reason);
                        break EndedBy::Server;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Err(error)) => {
                        self.record_server_closed(None, error.to_string());
                        break EndedBy::Server;
                    }
                    None => {
                        self.record_server_closed(None, "the connection closed".to_owned());
                        break EndedBy::Server;
                    }
                },
                () = self.setup.hang_up.notified() => break EndedBy::Caller,
                () = &mut max_duration => break EndedBy::MaxDuration,
            }
        };

        match ended_by {
            EndedBy::Server => {
                // Completes the closing handshake (tungstenite queued the reply to a close).
                let _ = self.sink.close().await;
            }
            EndedBy::Caller | EndedBy::MaxDuration => self.hang_up(incoming).await,
        }
        ended_by
    }

    /// Sends `stop`, closes the socket and waits (bounded) for the server's close.
    async fn hang_up(&mut self, incoming: &mut SplitStream<Socket>) {
        let sequence = self.next_sequence();
        let stop = json!({
            "event": "stop",
            "sequenceNumber": sequence.to_string(),
            "streamSid": self.setup.stream_sid,
            "stop": {"accountSid": self.setup.account_sid, "callSid": self.setup.call_sid},
        });
        let now = self.setup.clock.now();
        self.recording.push(now, CallEventKind::CallerHungUp);
        let _ = self.sink.send(Message::text(stop.to_string())).await;
        let close = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        let _ = self.sink.send(Message::Close(Some(close))).await;
        let drain = async {
            while let Some(Ok(message)) = incoming.next().await {
                if message.is_close() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(self.setup.close_timeout, drain).await;
        let _ = self.sink.close().await;
    }

    async fn send_connected_and_start(&mut self) -> Result<(), SocketGone> {
        let connected = json!({"event": "connected", "protocol": "Call", "version": "1.0.0"});
        self.send(connected.to_string()).await?;
        let custom_parameters: Map<String, Value> = self
            .setup
            .parameters
            .iter()
            .map(|(name, value)| (name.clone(), Value::String(value.clone())))
            .collect();
        let sequence = self.next_sequence();
        let start = json!({
            "event": "start",
            "sequenceNumber": sequence.to_string(),
            "streamSid": self.setup.stream_sid,
            "start": {
                "streamSid": self.setup.stream_sid,
                "accountSid": self.setup.account_sid,
                "callSid": self.setup.call_sid,
                "tracks": ["inbound"],
                "customParameters": custom_parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        });
        self.send(start.to_string()).await
    }

    async fn on_tick(&mut self, deadline: Instant) -> Result<TickOutcome, SocketGone> {
        // Playback runs on the media clock (the tick's grid point), as the network plays out;
        // the caller's decisions and events use the actual time.
        let media_time = self.setup.clock.at(deadline);
        let now = self.setup.clock.now();
        if self.tape.is_none() && self.setup.tap.is_some_and(Tap::is_recording) {
            self.tape = Some(Tape::default());
        }
        let frames = &mut self.recording.agent_frames;
        match self.tape.as_mut() {
            Some(tape) => {
                let played = self.playback.tick_into(
                    media_time,
                    frames,
                    &mut self.echoed,
                    Some(&mut tape.agent),
                );
                // Silence where less than a frame played, so both tracks stay on the tick grid.
                let padded = tape.agent.len() + (MULAW_FRAME_BYTES - played);
                tape.agent.resize(padded, MULAW_SILENCE);
            }
            None => {
                self.playback.tick(media_time, frames, &mut self.echoed);
            }
        }
        self.echo_marks(false).await?;
        let view = self.playback.view(now);
        let plan = self.runner.plan_tick(now, &view, &mut self.recording.events);
        let dtmf = match plan {
            TickPlan::HangUp => return Ok(TickOutcome::HangUp),
            TickPlan::Frame { dtmf, .. } => dtmf,
        };
        if let Some(digit) = dtmf {
            let sequence = self.next_sequence();
            let message = json!({
                "event": "dtmf",
                "streamSid": self.setup.stream_sid,
                "sequenceNumber": sequence.to_string(),
                "dtmf": {"track": "inbound_track", "digit": digit.to_string()},
            });
            self.send(message.to_string()).await?;
        }
        let payload: &[u8] = self.audio.frame(&plan, &self.runner);
        if let Some(tape) = self.tape.as_mut() {
            tape.caller.extend_from_slice(payload);
        }
        self.chunk += 1;
        self.sequence += 1;
        let message = media_message(self.sequence, self.setup.stream_sid, self.chunk, payload);
        self.recording.outbound_deviations.push(Instant::now().saturating_duration_since(deadline));
        self.send(message).await?;
        self.recording.caller_frames_sent += 1;
        Ok(TickOutcome::Continue)
    }

    async fn on_text(&mut self, text: &str) -> Result<(), SocketGone> {
        let now = self.setup.clock.now();
        let command = match parse_server_message(text, self.setup.stream_sid) {
            Ok(command) => command,
            Err(problem) => {
                self.record_error(CODE_INVALID_MESSAGE, problem);
                return Ok(());
            }
        };
        match command {
            ServerCommand::Media(payload) => {
                self.decoded.clear();
                if BASE64_STANDARD.decode_vec(payload.as_bytes(), &mut self.decoded).is_err() {
                    self.record_error(
                        CODE_INVALID_MESSAGE,
                        "media.payload is not base64".to_owned(),
                    );
                    return Ok(());
                }
                if self.decoded.starts_with(b"RIFF") {
                    let message = "media.payload starts with a WAV header (heard as a click)";
                    self.recording.push(
                        now,
                        CallEventKind::Error { code: None, message: message.to_owned() },
                    );
                }
                let frame_index = self.recording.agent_frames.len();
                self.recording.agent_frames.push(AgentFrame {
                    received_at: now,
                    bytes: self.decoded.len(),
                    played_start: None,
                    played_end: None,
                    cleared: false,
                });
                if self.setup.keep_agent_audio {
                    self.recording.agent_audio.extend_from_slice(&self.decoded);
                }
                self.playback.enqueue_audio(frame_index, &self.decoded, now);
            }
            ServerCommand::Mark(name) => {
                let name = name.into_owned();
                self.recording.push(now, CallEventKind::MarkReceived { name: name.clone() });
                if let Some(name) = self.playback.enqueue_mark(name) {
                    self.echoed.push(name);
                    self.echo_marks(false).await?;
                }
            }
            ServerCommand::Clear => {
                let dropped_bytes =
                    self.playback.clear(&mut self.recording.agent_frames, &mut self.echoed);
                self.recording.push(now, CallEventKind::ClearReceived { dropped_bytes });
                self.echo_marks(true).await?;
            }
        }
        Ok(())
    }

    /// Echoes the marks the playback queue released, in order.
    async fn echo_marks(&mut self, cleared: bool) -> Result<(), SocketGone> {
        if self.echoed.is_empty() {
            return Ok(());
        }
        let mut echoed = std::mem::take(&mut self.echoed);
        for name in echoed.drain(..) {
            let sequence = self.next_sequence();
            let message = json!({
                "event": "mark",
                "sequenceNumber": sequence.to_string(),
                "streamSid": self.setup.stream_sid,
                "mark": {"name": name},
            });
            self.send(message.to_string()).await?;
            let now = self.setup.clock.now();
            self.recording.push(now, CallEventKind::MarkEchoed { name, cleared });
        }
        // Keep the buffer's capacity for the next marks.
        self.echoed = echoed;
        Ok(())
    }

    fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    async fn send(&mut self, text: String) -> Result<(), SocketGone> {
        self.sink.send(Message::text(text)).await.map_err(|error| SocketGone(error.to_string()))
    }

    fn record_error(&mut self, code: u32, message: String) {
        let now = self.setup.clock.now();
        self.recording.push(now, CallEventKind::Error { code: Some(code), message });
    }

    fn record_server_closed(&mut self, code: Option<u16>, reason: String) {
        let now = self.setup.clock.now();
        self.recording.push(now, CallEventKind::ServerClosedStream { code, reason });
    }
}

/// The caller's outgoing audio: turns a tick's plan into the frame's μ-law payload. Without a
/// noise bed the payloads are the speech signal's, the tone's or silence's bytes as they always
/// were; with one, the frame's samples (zeros for silence) get the next 160 noise samples added,
/// saturating, and are encoded again.
#[derive(Debug)]
pub(crate) struct CallerAudio {
    noise: Option<Noise>,
    /// Reused buffer for the encoded frame.
    frame: [u8; MULAW_FRAME_BYTES],
    /// Reused buffer for the frame's samples when mixing.
    samples: [i16; MULAW_FRAME_BYTES],
}

impl CallerAudio {
    pub(crate) fn new(noise: Option<NoiseBed>) -> Self {
        Self {
            noise: noise.map(|bed| bed.noise()),
            frame: SILENT_FRAME,
            samples: [0; MULAW_FRAME_BYTES],
        }
    }

    /// The payload of the frame `plan` asks for (silence for a hang-up); `runner` holds the
    /// samples of `Play` steps.
    pub(crate) fn frame(&mut self, plan: &TickPlan, runner: &ScriptRunner) -> &[u8] {
        let (speech_offset, tone_hz, play_step) = match *plan {
            TickPlan::Frame { speech_offset, tone_hz, play_step, .. } => {
                (speech_offset, tone_hz, play_step)
            }
            TickPlan::HangUp => (None, None, None),
        };
        let Some(noise) = self.noise.as_mut() else {
            return match (speech_offset, tone_hz, play_step) {
                (Some(offset), _, Some(step)) => {
                    copy_samples(runner.samples_of(step), offset, &mut self.samples);
                    for (code, &sample) in self.frame.iter_mut().zip(&self.samples) {
                        *code = mulaw::encode(sample);
                    }
                    &self.frame
                }
                (Some(offset), Some(frequency_hz), None) => {
                    tone_frame(frequency_hz, offset, &mut self.frame);
                    &self.frame
                }
                (Some(offset), None, None) => {
                    speech_frame(offset, &mut self.frame);
                    &self.frame
                }
                (None, _, _) => &SILENT_FRAME,
            };
        };
        match (speech_offset, tone_hz, play_step) {
            (Some(offset), _, Some(step)) => {
                copy_samples(runner.samples_of(step), offset, &mut self.samples);
            }
            (Some(offset), tone_hz, None) => {
                match tone_hz {
                    Some(frequency_hz) => tone_frame(frequency_hz, offset, &mut self.frame),
                    None => speech_frame(offset, &mut self.frame),
                }
                for (sample, &code) in self.samples.iter_mut().zip(&self.frame) {
                    *sample = mulaw::decode(code);
                }
            }
            (None, _, _) => self.samples = [0; MULAW_FRAME_BYTES],
        }
        noise.add_to(&mut self.samples);
        for (code, &sample) in self.frame.iter_mut().zip(&self.samples) {
            *code = mulaw::encode(sample);
        }
        &self.frame
    }
}

/// Copies the 160 samples from `offset` of `source` into `frame`, zeros past its end.
fn copy_samples(source: &[i16], offset: usize, frame: &mut [i16; MULAW_FRAME_BYTES]) {
    let available = source.get(offset..).unwrap_or(&[]);
    let n_copied = available.len().min(MULAW_FRAME_BYTES);
    frame[..n_copied].copy_from_slice(&available[..n_copied]);
    frame[n_copied..].fill(0);
}

/// The fixed characters of a `media` message: everything but the numbers, the stream SID and
/// the payload.
const MEDIA_MESSAGE_FIXED_LEN: usize = r#"{"event":"media","sequenceNumber":"","streamSid":"","media":{"track":"inbound","chunk":"","timestamp":"","payload":""}}"#.len();

/// A `media` message from Twilio, written straight into one string of exactly its length: the
/// only per-frame allocation of the send path (an exact capacity also lets the WebSocket layer
/// take the buffer over without allocating again).
fn media_message(sequence: u64, stream_sid: &str, chunk: u64, payload: &[u8]) -> String {
    // Twilio's timestamp is the chunk's media time in milliseconds.
    let timestamp = chunk * 20;
    let length = MEDIA_MESSAGE_FIXED_LEN
        + decimal_len(sequence)
        + stream_sid.len()
        + decimal_len(chunk)
        + decimal_len(timestamp)
        + payload.len().div_ceil(3) * 4;
    let mut text = String::with_capacity(length);
    // Writing into a String cannot fail.
    let _ = write!(
        text,
        r#"{{"event":"media","sequenceNumber":"{sequence}","streamSid":"{stream_sid}","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{timestamp}","payload":""#,
    );
    BASE64_STANDARD.encode_string(payload, &mut text);
    text.push_str("\"}}");
    text
}

/// The number of decimal digits of `value`.
fn decimal_len(value: u64) -> usize {
    value.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// What the server may send on a bidirectional stream (docs/protocols.md#media-streams-to-twilio), parsed without
/// copying the payload. Unknown fields are refused, as Twilio refuses them (31951).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerMessage<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(rename = "streamSid", borrow, default)]
    stream_sid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    media: Option<ServerMedia<'a>>,
    #[serde(borrow, default)]
    mark: Option<ServerMark<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerMedia<'a> {
    #[serde(borrow)]
    payload: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerMark<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Debug, PartialEq, Eq)]
enum ServerCommand<'a> {
    Media(Cow<'a, str>),
    Mark(Cow<'a, str>),
    Clear,
}

/// Checks a text message from the server the way Twilio does (warning 31951's causes: not
/// JSON, an unsupported event, missing or extra fields, another stream's SID).
fn parse_server_message<'a>(text: &'a str, stream_sid: &str) -> Result<ServerCommand<'a>, String> {
    let message: ServerMessage<'a> = serde_json::from_str(text)
        .map_err(|error| format!("not a Media Streams message: {error}"))?;
    match message.stream_sid.as_deref() {
        Some(sid) if sid == stream_sid => {}
        Some(_) => return Err("streamSid does not match this stream".to_owned()),
        None => return Err("streamSid is missing".to_owned()),
    }
    match (message.event.as_ref(), message.media, message.mark) {
        ("media", Some(media), None) => Ok(ServerCommand::Media(media.payload)),
        ("mark", None, Some(mark)) => Ok(ServerCommand::Mark(mark.name)),
        ("clear", None, None) => Ok(ServerCommand::Clear),
        (event @ ("media" | "mark" | "clear"), _, _) => {
            Err(format!("a {event} message with missing or unexpected fields"))
        }
        (event, _, _) => Err(format!("unsupported event {event:?}")),
    }
}

#[cfg(test)]
mod tests {
    use crate::corpus::{NoiseKind, dbfs};
    use crate::twilio::caller::script::AgentView;

    use super::*;

    /// Runs `script` for `n_ticks` 20 ms ticks with a silent agent and returns the caller's
    /// payloads, as the stream sends them.
    fn wire_frames(script: &CallerScript, noise: Option<NoiseBed>, n_ticks: u64) -> Vec<Vec<u8>> {
        let mut runner = ScriptRunner::new(script, Duration::from_secs(60));
        let mut audio = CallerAudio::new(noise);
        let mut events = Vec::new();
        (0..n_ticks)
            .map(|tick| {
                let now = Duration::from_millis(tick * 20);
                let plan = runner.plan_tick(now, &AgentView::default(), &mut events);
                audio.frame(&plan, &runner).to_vec()
            })
            .collect()
    }

    fn decoded(frames: &[Vec<u8>]) -> Vec<i16> {
        frames.iter().flat_map(|frame| mulaw::decode_all(frame)).collect()
    }

    #[test]
    fn a_noise_bed_reaches_the_wire_at_its_level_during_silence_and_waits() {
        for kind in NoiseKind::ALL {
            let script = CallerScript::new()
                .silence(Duration::from_secs(3))
                .wait_for_agent_speech(Duration::from_secs(60))
                .with_noise(kind, -30.0, 7);

            let frames = wire_frames(&script, script.noise(), 500);

            let level = dbfs(&decoded(&frames));
            assert!((level - -30.0).abs() <= 0.5, "{kind:?}: {level} dBFS on the wire");
            assert!(frames.iter().all(|frame| frame.len() == MULAW_FRAME_BYTES));
        }
    }

    #[test]
    fn without_a_noise_bed_the_frames_are_the_plain_speech_and_silence_bytes() {
        let script =
            CallerScript::new().say("hello", Duration::from_millis(60)).silence(FRAME_DURATION);

        let frames = wire_frames(&script, None, 5);

        let mut speech = [0_u8; MULAW_FRAME_BYTES];
        for (index, frame) in frames[..3].iter().enumerate() {
            speech_frame(index * MULAW_FRAME_BYTES, &mut speech);
            assert_eq!(frame[..], speech[..]);
        }
        assert!(frames[3..].iter().all(|frame| frame[..] == SILENT_FRAME[..]));
    }

    #[test]
    fn speech_at_a_level_over_a_noise_bed_keeps_its_signal_to_noise_ratio() {
        let script = CallerScript::new().say_at("hello", Duration::from_secs(2), -20.0).with_noise(
            NoiseKind::Pink,
            -30.0,
            1,
        );

        let noisy = decoded(&wire_frames(&script, script.noise(), 100));
        let clean = decoded(&wire_frames(&script, None, 100));

        let speech = dbfs(&clean);
        assert!((speech - -20.0).abs() < 0.3, "speech at {speech} dBFS");
        let noise: Vec<i16> =
            noisy.iter().zip(&clean).map(|(&mixed, &alone)| mixed.saturating_sub(alone)).collect();
        let snr = speech - dbfs(&noise);
        assert!((snr - 10.0).abs() < 1.0, "SNR {snr} dB");
    }

    const SID: &str = "MZ00000000000000000000000000000001";

    #[test]
    fn media_messages_have_twilios_shape_with_string_numbers() {
        let text = media_message(3, SID, 2, &[0xFF, 0x00, 0x7F]);

        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            json!({
                "event": "media",
                "sequenceNumber": "3",
                "streamSid": SID,
                "media": {"track": "inbound", "chunk": "2", "timestamp": "40", "payload": "/wB/"}
            })
        );
    }

    #[test]
    fn media_messages_are_built_in_a_buffer_of_exactly_their_length() {
        for (sequence, chunk) in [(1, 1), (9, 10), (99_999, 123_456), (u64::MAX / 100, 7)] {
            let text = media_message(sequence, SID, chunk, &[0x55; 160]);
            assert_eq!(text.len(), text.capacity(), "sequence {sequence}, chunk {chunk}");
        }
    }

    #[test]
    fn the_three_server_messages_parse() {
        let media =
            format!(r#"{{"event":"media","streamSid":"{SID}","media":{{"payload":"/wB/"}}}}"#);
        let mark = format!(r#"{{"event":"mark","streamSid":"{SID}","mark":{{"name":"utt-1"}}}}"#);
        let clear = format!(r#"{{"event":"clear","streamSid":"{SID}"}}"#);

        assert_eq!(parse_server_message(&media, SID), Ok(ServerCommand::Media("/wB/".into())));
        assert_eq!(parse_server_message(&mark, SID), Ok(ServerCommand::Mark("utt-1".into())));
        assert_eq!(parse_server_message(&clear, SID), Ok(ServerCommand::Clear));
    }

    #[test]
    fn messages_twilio_would_refuse_are_errors() {
        for text in [
            "not json".to_owned(),
            r#"{"event":"clear"}"#.to_owned(),
            r#"{"event":"clear","streamSid":"MZother"}"#.to_owned(),
            format!(r#"{{"event":"hello","streamSid":"{SID}"}}"#),
            format!(r#"{{"event":"media","streamSid":"{SID}"}}"#),
            format!(
                r#"{{"event":"media","streamSid":"{SID}","media":{{"payload":"","track":"x"}}}}"#
            ),
            format!(r#"{{"event":"mark","streamSid":"{SID}","mark":{{}}}}"#),
            format!(r#"{{"event":"clear","streamSid":"{SID}","extra":1}}"#),
        ] {
            assert!(parse_server_message(&text, SID).is_err(), "accepted {text}");
        }
    }
}
