//! The far end of outbound calls: when the REST emulator accepts a `POST …/Calls.json` whose
//! `To` has a scripted [`Callee`], it plays that callee on its own task, as the phone network
//! and Twilio would, sending the signed callbacks Twilio sends
//! (https://www.twilio.com/docs/voice/api/call-resource#statuscallback,
//! https://www.twilio.com/docs/voice/answering-machine-detection):
//!
//! - status callbacks to `StatusCallback` (with `StatusCallbackMethod`) for the subscribed
//!   `StatusCallbackEvent`s, in Twilio's order: `initiated`, `ringing`, `answered` (sent with
//!   `CallStatus: in-progress`), then the final status, which Twilio always sends — `completed`
//!   with `CallDuration`, or `busy` / `no-answer` / `failed` with `CallDuration: 0` and the SIP
//!   response (486, 487, 404 here); each carries `CallbackSource: call-progress-events`,
//!   `SequenceNumber` (0, 1, …) and `Timestamp`;
//! - for a call created with `MachineDetection` and `AsyncAmd=true`, the AMD result to
//!   `AsyncAmdStatusCallback` once the call is answered: `AnsweredBy` `human` for a person, and
//!   for a voicemail `machine_start` (`MachineDetection=Enable`) or `machine_end_beep`
//!   (`DetectMessageEnd`, after the greeting), with `MachineDetectionDuration` in ms;
//! - when answered, the answer `Url` is requested and its TwiML run by the caller emulator's
//!   machinery ([`CallerEmulator::answer_outbound_call`]): a human plays its [`CallerScript`], a
//!   voicemail plays its greeting, a beep (a 1 kHz tone of 300 ms), then silence.
//!
//! The call's status in the REST emulator follows (`queued` → `ringing` → `in-progress` →
//! final); a hang-up through the REST API (`Status=completed`) ends it with that status.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex as AsyncMutex;

use crate::twilio::caller::{CallRecording, CallerEmulator, CallerScript, PlaceCall};
use crate::twilio::server::Shared;
use crate::twilio::state::{CallState, values_of};
use crate::twilio::{IDEMPOTENCY_TOKEN_HEADER, SIGNATURE_HEADER, WEBHOOK_USER_AGENT};

/// How the callee of an outbound call behaves.
#[derive(Debug, Clone)]
pub enum Callee {
    /// A person picks up after `ring_for` and talks: the answer URL's TwiML runs and its media
    /// stream hears `script`.
    Human {
        /// Ringing time before the answer.
        ring_for: Duration,
        /// What the person says and does.
        script: CallerScript,
    },
    /// A voicemail system answers after `ring_for`: a greeting of `greeting_length`, a beep,
    /// then silence until the other side hangs up (or `silence` passes).
    Voicemail {
        /// Ringing time before the answer.
        ring_for: Duration,
        /// The greeting's words (spoken as the caller emulator speaks).
        greeting: String,
        /// How long the greeting lasts.
        greeting_length: Duration,
        /// Silence after the beep before the voicemail system hangs up itself.
        silence: Duration,
    },
    /// The line is busy (SIP 486).
    Busy,
    /// It rings for `ring_for` (at most the create's `Timeout`), then nobody answers (SIP 487).
    /// A person or voicemail whose `ring_for` reaches the `Timeout` is not answered either.
    NoAnswer {
        /// Ringing time.
        ring_for: Duration,
    },
    /// The call cannot be connected (SIP 404).
    Failed,
    /// Someone picks up after `ring_for` and hangs up after `talk_for`, before any media
    /// stream connects: Twilio sends `answered`, requests the answer `Url` (its TwiML is not
    /// run), then sends `completed`.
    HangsUp {
        /// Ringing time before the answer.
        ring_for: Duration,
        /// Time between the answer and the hang-up.
        talk_for: Duration,
    },
}

impl Callee {
    /// A person who answers at once and plays `script`.
    pub fn human(script: CallerScript) -> Self {
        Self::Human { ring_for: Duration::from_millis(100), script }
    }

    /// A voicemail with a short greeting.
    pub fn voicemail() -> Self {
        Self::Voicemail {
            ring_for: Duration::from_millis(100),
            greeting: "Hi, you've reached Sam. Please leave a message after the tone.".to_owned(),
            greeting_length: Duration::from_millis(2500),
            silence: Duration::from_secs(30),
        }
    }
}

/// A finished callee's call, for the test to inspect.
#[derive(Debug, Clone)]
pub struct CalleeRun {
    /// The call's SID.
    pub call_sid: String,
    /// The number dialled (`To`).
    pub to: String,
    /// When the emulator accepted the `POST …/Calls.json` that created the call.
    pub dialled_at: std::time::Instant,
    /// When the callee answered (the media side's clock starts about then).
    pub answered_at: Option<std::time::Instant>,
    /// The final status sent.
    pub final_status: String,
    /// The media side, when the call was answered.
    pub recording: Option<CallRecording>,
}

/// Finished callee runs, shared with the emulator handle.
pub(crate) type CalleeRuns = Arc<AsyncMutex<Vec<CalleeRun>>>;

/// What the callee's task needs.
#[derive(Debug)]
pub(crate) struct Dial {
    pub(crate) call: CallState,
    pub(crate) callee: Callee,
    pub(crate) auth_token: String,
    /// When the create request was accepted.
    pub(crate) dialled_at: std::time::Instant,
}

struct Callbacks<'a> {
    http: reqwest::Client,
    call: &'a CallState,
    auth_token: &'a str,
    sequence: u32,
}

impl Callbacks<'_> {
    fn first(&self, name: &str) -> Option<String> {
        values_of(&self.call.create_params, name).first().map(|v| (*v).to_owned())
    }

    fn subscribed(&self, event: &str) -> bool {
        values_of(&self.call.create_params, "StatusCallbackEvent").contains(&event)
    }

    async fn post(&self, url: &str, method: Option<String>, params: &[(String, String)]) {
        // A GET callback carries its parameters in the URL, which is then what is signed.
        let request = if method.is_some_and(|m| m.eq_ignore_ascii_case("GET")) {
            let query: String =
                url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
            let separator = if url.contains('?') { '&' } else { '?' };
            let full = format!("{url}{separator}{query}");
            let signature = nixflex_providers::twilio::signature::compute_signature(
                self.auth_token,
                &full,
                &[],
            );
            self.http.get(full).header(SIGNATURE_HEADER, signature)
        } else {
            let signature = nixflex_providers::twilio::signature::compute_signature(
                self.auth_token,
                url,
                params,
            );
            self.http.post(url).form(params).header(SIGNATURE_HEADER, signature)
        };
        let sent = request
            .header(reqwest::header::USER_AGENT, WEBHOOK_USER_AGENT)
            .header(IDEMPOTENCY_TOKEN_HEADER, crate::twilio::new_idempotency_token())
            .timeout(Duration::from_secs(15))
            .send()
            .await;
        if let Err(error) = sent {
            tracing::debug!(message = "Callee callback not delivered.", url, error = %error);
        }
    }

    fn base_params(&self, status: &str) -> Vec<(String, String)> {
        [
            ("CallSid", self.call.sid.as_str()),
            ("AccountSid", self.call.account_sid.as_str()),
            ("From", self.call.from.as_str()),
            ("To", self.call.to.as_str()),
            ("Caller", self.call.from.as_str()),
            ("Called", self.call.to.as_str()),
            ("CallStatus", status),
            ("ApiVersion", "2010-04-01"),
            ("Direction", "outbound-api"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Sends the status callback for `status` when its event is subscribed (final statuses
    /// always go out).
    async fn status(&mut self, status: &str, extra: &[(&str, String)]) {
        let event = match status {
            "initiated" => "initiated",
            "ringing" => "ringing",
            "in-progress" => "answered",
            _ => "completed",
        };
        let Some(url) = self.first("StatusCallback") else { return };
        if event != "completed" && !self.subscribed(event) {
            return;
        }
        let mut params = self.base_params(status);
        params.push(("CallbackSource".to_owned(), "call-progress-events".to_owned()));
        params.push(("SequenceNumber".to_owned(), self.sequence.to_string()));
        params.push(("Timestamp".to_owned(), chrono::Utc::now().to_rfc2822()));
        params.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        self.sequence += 1;
        self.post(&url, self.first("StatusCallbackMethod"), &params).await;
    }

    /// Sends the asynchronous AMD result, when the call asked for it.
    async fn amd(&self, answered_by: &str, duration_ms: u64) {
        let async_amd = self.first("AsyncAmd").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if self.first("MachineDetection").is_none() || !async_amd {
            return;
        }
        let Some(url) = self.first("AsyncAmdStatusCallback") else { return };
        let params: Vec<(String, String)> = [
            ("CallSid", self.call.sid.clone()),
            ("AccountSid", self.call.account_sid.clone()),
            ("AnsweredBy", answered_by.to_owned()),
            ("MachineDetectionDuration", duration_ms.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        self.post(&url, self.first("AsyncAmdStatusCallbackMethod"), &params).await;
    }
}

/// Plays the callee of one dialled call to its end.
pub(crate) async fn run(shared: Arc<Shared>, dial: Dial, runs: CalleeRuns) {
    let Dial { call, callee, auth_token, dialled_at } = dial;
    let set_status = |status: &str| {
        let mut state = shared.lock();
        if let Some(stored) = state.calls.iter_mut().find(|c| c.sid == call.sid)
            && !stored.is_final()
        {
            stored.status = status.to_owned();
            stored.date_updated = chrono::Utc::now();
            if stored.is_final() {
                stored.end_time = Some(chrono::Utc::now());
            }
        }
    };
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    let mut callbacks = Callbacks { http, call: &call, auth_token: &auth_token, sequence: 0 };
    callbacks.status("initiated", &[]).await;
    set_status("ringing");
    callbacks.status("ringing", &[]).await;
    let unanswered =
        |sip: u16| vec![("CallDuration", "0".to_owned()), ("SipResponseCode", sip.to_string())];
    // `Timeout`: how long Twilio lets the call ring before giving up (default 60 s).
    let timeout = callbacks
        .first("Timeout")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(60), Duration::from_secs);
    let callee = match callee {
        Callee::Human { ring_for, .. } | Callee::Voicemail { ring_for, .. }
            if ring_for >= timeout =>
        {
            Callee::NoAnswer { ring_for }
        }
        other => other,
    };
    let mut answered_at = None;
    let (final_status, recording) = match callee {
        Callee::Busy => {
            set_status("busy");
            callbacks.status("busy", &unanswered(486)).await;
            ("busy", None)
        }
        Callee::Failed => {
            set_status("failed");
            callbacks.status("failed", &unanswered(404)).await;
            ("failed", None)
        }
        Callee::NoAnswer { ring_for } => {
            tokio::time::sleep(ring_for.min(timeout)).await;
            set_status("no-answer");
            callbacks.status("no-answer", &unanswered(487)).await;
            ("no-answer", None)
        }
        Callee::HangsUp { ring_for, talk_for } => {
            tokio::time::sleep(ring_for).await;
            set_status("in-progress");
            callbacks.status("in-progress", &[]).await;
            if let Some(url) = callbacks.first("Url") {
                let params = callbacks.base_params("in-progress");
                callbacks.post(&url, callbacks.first("Method"), &params).await;
            }
            tokio::time::sleep(talk_for).await;
            set_status("completed");
            let duration = talk_for.as_secs().max(1);
            callbacks.status("completed", &[("CallDuration", duration.to_string())]).await;
            ("completed", None)
        }
        Callee::Human { ring_for, script } => {
            tokio::time::sleep(ring_for).await;
            answered_at = Some(std::time::Instant::now());
            let recording = answer(&shared, &mut callbacks, script, "human", 1800).await;
            ("completed", recording)
        }
        Callee::Voicemail { ring_for, greeting, greeting_length, silence } => {
            tokio::time::sleep(ring_for).await;
            let end_beep =
                callbacks.first("MachineDetection").as_deref() == Some("DetectMessageEnd");
            let (answered_by, after_ms) = if end_beep {
                ("machine_end_beep", u64::try_from(greeting_length.as_millis()).unwrap_or(0) + 600)
            } else {
                ("machine_start", 1500)
            };
            // The beep: a 1 kHz tone for 300 ms after the greeting; then silence, during which
            // the recording keeps what the other side says (a message left after the beep).
            let script = CallerScript::new()
                .say(&greeting, greeting_length)
                .tone(1000, Duration::from_millis(300))
                .silence(silence)
                .hang_up();
            answered_at = Some(std::time::Instant::now());
            let recording = answer(&shared, &mut callbacks, script, answered_by, after_ms).await;
            ("completed", recording)
        }
    };
    runs.lock().await.push(CalleeRun {
        call_sid: call.sid.clone(),
        to: call.to.clone(),
        dialled_at,
        answered_at,
        final_status: final_status.to_owned(),
        recording,
    });
}

/// The callee answers: `answered` callback, the AMD result (after `amd_after_ms`) and the
/// answer URL's TwiML with `script`; then the final `completed`.
async fn answer(
    shared: &Arc<Shared>,
    callbacks: &mut Callbacks<'_>,
    script: CallerScript,
    answered_by: &str,
    amd_after_ms: u64,
) -> Option<CallRecording> {
    let call = callbacks.call;
    let answered_at = std::time::Instant::now();
    {
        let mut state = shared.lock();
        if let Some(stored) = state.calls.iter_mut().find(|c| c.sid == call.sid)
            && !stored.is_final()
        {
            stored.status = "in-progress".to_owned();
        }
    }
    callbacks.status("in-progress", &[]).await;
    let url = callbacks.first("Url")?;
    let amd = {
        let http = callbacks.http.clone();
        let amd_callbacks =
            Callbacks { http, call: callbacks.call, auth_token: callbacks.auth_token, sequence: 0 };
        let answered_by = answered_by.to_owned();
        async move {
            tokio::time::sleep(Duration::from_millis(amd_after_ms)).await;
            amd_callbacks.amd(&answered_by, amd_after_ms).await;
        }
    };
    let media = async {
        let emulator = CallerEmulator::new().ok()?.with_shared(Arc::clone(shared));
        let mut place =
            PlaceCall::new(url, &call.account_sid, callbacks.auth_token, &call.from, &call.to);
        place.call_sid = Some(call.sid.clone());
        Some(emulator.answer_outbound_call(place, script).await)
    };
    let (recording, ()) = tokio::join!(media, amd);
    let duration = answered_at.elapsed().as_secs().max(1);
    {
        let mut state = shared.lock();
        if let Some(stored) = state.calls.iter_mut().find(|c| c.sid == call.sid)
            && !stored.is_final()
        {
            stored.status = "completed".to_owned();
            stored.end_time = Some(chrono::Utc::now());
        }
    }
    callbacks.status("completed", &[("CallDuration", duration.to_string())]).await;
    recording
}
