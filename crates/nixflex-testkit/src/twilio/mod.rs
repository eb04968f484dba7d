//! The Twilio emulator: a local HTTP server speaking Twilio's REST API v2010 for the operations
//! the product uses, plus a sender of signed webhooks, for tests and `nixflex demo`.
//!
//! What it emulates (faithful to the public docs and to what the official `twilio` Python library
//! expects; checked by `tests/twilio_official_client.rs`):
//! - accounts with HTTP Basic auth (`AccountSid:AuthToken`); wrong or missing credentials get
//!   401 with Twilio's `{"code":20003,"message":"Authenticate",…}`;
//! - `IncomingPhoneNumbers`: list (with the `PhoneNumber` / `FriendlyName` filters and v2010
//!   paging fields), fetch, update of the webhook fields;
//! - `Calls`: create (status `queued`, every parameter recorded, repeated ones included), fetch,
//!   list, update (`Status=completed|canceled`, `Url`, `Twiml`);
//! - `Messages`: create (status `queued`), fetch, list; status callbacks in Twilio's order with
//!   scripted outcomes and error codes ([`TwilioEmulator::deliver_message`]), and inbound texts
//!   delivered to a number's `SmsUrl`, signed ([`TwilioEmulator::send_inbound_sms`]);
//! - `Recordings` (`recordings.rs`): start on a live call (`POST …/Calls/{CA}/Recordings.json`,
//!   201 `in-progress`, `channels` 2 for `dual`; 21220 when the call is not in progress), fetch,
//!   list (per account, with the `CallSid` filter, and per call), delete (204), and the media at
//!   `…/Recordings/{RE}.wav` (or without extension) once the recording is completed (`.mp3` is
//!   not emulated: 404);
//! - Twilio's validation errors for missing parameters and 20404 for unknown resources.
//!
//! Outbound calls to a number with a scripted callee ([`TwilioEmulator::add_callee`],
//! [`callee::Callee`]: a human, a voicemail, busy, no answer, failed) are played to their end:
//! status callbacks in Twilio's order, the async AMD result, and, when answered, the answer URL's
//! TwiML with its media stream. Other calls are not placed: tests drive their progress with
//! [`TwilioEmulator::set_call_status`] and [`TwilioEmulator::send_webhook`]. Message status
//! callbacks it sends by itself for scripted outcomes ([`TwilioEmulator::script_message_outcomes`]).
//! The caller emulator does that part: calls it places while attached to this emulator
//! ([`caller::CallerEmulator::with_network`]) are `inbound` calls here while they last, can be
//! recorded, and end with their recordings' WAV and signed recording status callbacks.
//!
//! Test controls: the request log ([`TwilioEmulator::requests`]), failure injection
//! ([`TwilioEmulator::fail_next`], [`TwilioEmulator::fail_times`],
//! [`TwilioEmulator::fail_always`]) and delays ([`TwilioEmulator::delay_next`]), and getters for
//! the stored numbers, calls and messages.

pub mod callee;
pub mod caller;
mod recordings;
mod server;
mod state;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use self::callee::{Callee, CalleeRun};
pub use self::recordings::{RecordingState, SOURCE_START_CALL_RECORDING_API};
use self::server::Shared;
pub use self::state::{CallState, EmulatedAccount, MessageState, NumberState, RecordedRequest};
use self::state::{DelayRule, FailureRule, NumberState as StoredNumber};

/// How a created message's delivery ends ([`TwilioEmulator::deliver_message`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageOutcome {
    /// `sent` → `delivered`.
    Delivered,
    /// `sent` → `undelivered` with Twilio's error code (e.g. 30007 carrier filtering, 30003
    /// unreachable handset).
    Undelivered(u32),
    /// `failed` with Twilio's error code (e.g. 30034 unregistered A2P sender, 21610
    /// unsubscribed).
    Failed(u32),
}

/// Header carrying Twilio's webhook signature.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";

/// Header Twilio sends with every webhook delivery, reused on retries of the same delivery.
pub const IDEMPOTENCY_TOKEN_HEADER: &str = "I-Twilio-Idempotency-Token";

/// `User-Agent` of Twilio's webhook requests.
pub(crate) const WEBHOOK_USER_AGENT: &str = "TwilioProxy/1.1";

/// A running emulator on `127.0.0.1` and an ephemeral port. Dropping it stops the server
/// (connections in flight finish first); [`TwilioEmulator::shutdown`] waits for that.
#[derive(Debug)]
pub struct TwilioEmulator {
    base_url: String,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    /// Sent (or dropped) to ask the server for a graceful shutdown; the server task receives it.
    shutdown_tx: Option<oneshot::Sender<()>>,
    server_task: Option<JoinHandle<()>>,
    /// Client for [`TwilioEmulator::send_webhook`].
    webhook_client: reqwest::Client,
}

impl TwilioEmulator {
    /// Starts the emulator on `127.0.0.1:0`, with no accounts.
    ///
    /// # Errors
    ///
    /// When the port cannot be bound or the webhook HTTP client cannot be built.
    pub async fn start() -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let app = Router::new().fallback(server::handle).with_state(Arc::clone(&shared));
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let server_task = tokio::spawn(async move {
            let shutdown = async {
                // Either a message or the sender being dropped means "stop".
                let _ = shutdown_rx.await;
            };
            if let Err(error) =
                axum::serve(crate::nodelay(listener), app).with_graceful_shutdown(shutdown).await
            {
                tracing::warn!(message = "Twilio emulator stopped with an error.", error = %error);
            }
        });
        ensure_crypto_provider();
        let webhook_client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(io::Error::other)?;
        Ok(Self {
            base_url: format!("http://{local_addr}"),
            local_addr,
            shared,
            shutdown_tx: Some(shutdown_tx),
            server_task: Some(server_task),
            webhook_client,
        })
    }

    /// `http://127.0.0.1:<port>`: what to configure as the Twilio API base URL (the
    /// `/2010-04-01/…` paths go after it).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The socket address the emulator listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Creates an account with a random `AC…` SID and a random 32-hex auth token.
    pub fn add_account(&self) -> EmulatedAccount {
        let account = EmulatedAccount {
            sid: new_sid("AC"),
            auth_token: hex::encode(rand::random::<[u8; 16]>()),
        };
        self.shared.lock().accounts.push(account.clone());
        account
    }

    /// Gives `account_sid` the incoming number `phone_number` (E.164) with Twilio's defaults
    /// (no voice URL, `POST` methods); returns its new `PN…` SID.
    pub fn add_number(&self, account_sid: &str, phone_number: &str) -> String {
        let sid = new_sid("PN");
        let number = StoredNumber::new(account_sid, phone_number, sid.clone());
        self.shared.lock().numbers.push(number);
        sid
    }

    /// Applies update parameters (`VoiceUrl`, `SmsUrl`, …) to a number as if an API client had
    /// sent them, without logging a request; e.g. to give a number pre-existing webhooks.
    /// Returns false for an unknown SID.
    pub fn configure_number(&self, number_sid: &str, params: &[(&str, &str)]) -> bool {
        let form: Vec<(String, String)> =
            params.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect();
        let mut state = self.shared.lock();
        match state.numbers.iter_mut().find(|number| number.sid == number_sid) {
            Some(number) => {
                number.apply_update(&form);
                true
            }
            None => false,
        }
    }

    /// The number with SID `number_sid`, as currently configured.
    pub fn number(&self, number_sid: &str) -> Option<NumberState> {
        self.shared.lock().numbers.iter().find(|number| number.sid == number_sid).cloned()
    }

    /// The number `phone_number` (E.164), in whichever account holds it.
    pub fn number_by_phone(&self, phone_number: &str) -> Option<NumberState> {
        self.shared
            .lock()
            .numbers
            .iter()
            .find(|number| number.phone_number == phone_number)
            .cloned()
    }

    /// The call with SID `call_sid`.
    pub fn call(&self, call_sid: &str) -> Option<CallState> {
        self.shared.lock().calls.iter().find(|call| call.sid == call_sid).cloned()
    }

    /// Every call created so far, oldest first.
    pub fn calls(&self) -> Vec<CallState> {
        self.shared.lock().calls.clone()
    }

    /// The recording with SID `recording_sid` (`None` once deleted).
    pub fn recording(&self, recording_sid: &str) -> Option<RecordingState> {
        self.shared.lock().recordings.iter().find(|r| r.sid == recording_sid).cloned()
    }

    /// Every recording not deleted, oldest first.
    pub fn recordings(&self) -> Vec<RecordingState> {
        self.shared.lock().recordings.clone()
    }

    /// Adds an `inbound` call from `from` to `to` that is `in-progress` now, as if the network
    /// had connected it (for REST-only tests; the caller emulator does this by itself when
    /// attached). Returns its `CA…` SID. End it with [`TwilioEmulator::end_call`].
    pub fn add_live_call(&self, account_sid: &str, from: &str, to: &str) -> String {
        let sid = new_sid("CA");
        let now = chrono::Utc::now();
        let mut state = self.shared.lock();
        let phone_number_sid = state
            .numbers
            .iter()
            .find(|n| n.account_sid == account_sid && n.phone_number == to)
            .map(|n| n.sid.clone());
        state.add_live_call(CallState {
            sid: sid.clone(),
            account_sid: account_sid.to_owned(),
            to: to.to_owned(),
            from: from.to_owned(),
            status: "in-progress".to_owned(),
            direction: "inbound".to_owned(),
            phone_number_sid,
            create_params: Vec::new(),
            updates: Vec::new(),
            url: None,
            twiml: None,
            date_created: now,
            date_updated: now,
            end_time: None,
        });
        sid
    }

    /// Ends a call added by [`TwilioEmulator::add_live_call`]: its recordings in progress are
    /// completed from the given μ-law audio (8 kHz; caller and agent side) and their status
    /// callbacks are sent, signed. Returns each callback's HTTP status (`Err` when it could not
    /// be delivered).
    pub async fn end_call(
        &self,
        call_sid: &str,
        caller_mulaw: &[u8],
        agent_mulaw: &[u8],
    ) -> Vec<Result<u16, String>> {
        let tape = recordings::Tape { caller: caller_mulaw.to_vec(), agent: agent_mulaw.to_vec() };
        let callbacks = self.shared.lock().end_live_call(call_sid, Some(&tape));
        let mut answers = Vec::with_capacity(callbacks.len());
        for callback in callbacks {
            let answer = self
                .send_webhook(&callback.url, &callback.auth_token, &callback.params)
                .await
                .map(|response| response.status().as_u16())
                .map_err(|error| error.to_string());
            answers.push(answer);
        }
        answers
    }

    /// The state shared with the caller emulator attached to this emulator.
    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// Moves a call to `status` (e.g. `ringing`, `in-progress`, `no-answer`) as the network
    /// would. Returns false for an unknown SID.
    pub fn set_call_status(&self, call_sid: &str, status: &str) -> bool {
        let mut state = self.shared.lock();
        match state.calls.iter_mut().find(|call| call.sid == call_sid) {
            Some(call) => {
                let now = chrono::Utc::now();
                call.status = status.to_owned();
                call.date_updated = now;
                if call.is_final() {
                    call.end_time = Some(now);
                }
                true
            }
            None => false,
        }
    }

    /// The message with SID `message_sid`.
    pub fn message(&self, message_sid: &str) -> Option<MessageState> {
        self.shared.lock().messages.iter().find(|message| message.sid == message_sid).cloned()
    }

    /// Every message created so far, oldest first.
    pub fn messages(&self) -> Vec<MessageState> {
        self.shared.lock().messages.clone()
    }

    /// Moves a created message to `status` (with Twilio's `error_code` for `undelivered` or
    /// `failed`, e.g. 30007 carrier filtering, 30034 unregistered A2P sender, 21610 unsubscribed)
    /// and sends its status callback, signed with the account's token, as Twilio does. Returns
    /// the callback's HTTP status; `Err` when the message is unknown, has no callback or the
    /// callback could not be delivered.
    pub async fn send_message_status(
        &self,
        message_sid: &str,
        status: &str,
        error_code: Option<u32>,
    ) -> Result<u16, String> {
        send_status(&self.shared, &self.webhook_client, message_sid, status, error_code).await
    }

    /// Plays a created message's delivery as Twilio reports it: `sent`, then `delivered` (no
    /// `error_code`) or `undelivered` with `error_code`; `failed` alone. One signed status
    /// callback each, in that order. Returns each callback's HTTP status.
    pub async fn deliver_message(
        &self,
        message_sid: &str,
        outcome: MessageOutcome,
    ) -> Vec<Result<u16, String>> {
        play_delivery(&self.shared, &self.webhook_client, message_sid, outcome).await
    }

    /// Scripts how the deliveries of the next created messages (those with a `StatusCallback`)
    /// end, in order: the emulator then sends their status callbacks by itself, shortly after
    /// answering each create request, as Twilio does.
    pub fn script_message_outcomes(&self, outcomes: &[MessageOutcome]) {
        self.shared.lock().message_outcomes.extend(outcomes.iter().copied());
    }

    /// How created messages' deliveries end once the scripted outcomes are used up (`None`:
    /// they stay `queued` until the test moves them).
    pub fn set_default_message_outcome(&self, outcome: Option<MessageOutcome>) {
        self.shared.lock().default_message_outcome = outcome;
    }

    /// Delivers an inbound text from `from` to the number `to` (E.164), as Twilio does: the
    /// number's `SmsUrl` (or `url`, when given) receives the incoming-message webhook, signed
    /// with the owning account's token. The message is kept (direction `inbound`, status
    /// `received`). Returns its `SM…` SID and the webhook's HTTP status.
    ///
    /// # Errors
    /// When the number is not in the emulator, has no SMS URL, or the webhook could not be sent.
    pub async fn send_inbound_sms(
        &self,
        from: &str,
        to: &str,
        body: &str,
        url: Option<&str>,
    ) -> Result<(String, u16), String> {
        let sid = new_sid("SM");
        let (url, token, params) = {
            let mut state = self.shared.lock();
            let Some(number) = state.numbers.iter().find(|n| n.phone_number == to).cloned() else {
                return Err(format!("no number {to}"));
            };
            let url = url.map(str::to_owned).unwrap_or_else(|| number.sms_url.clone());
            if url.is_empty() {
                return Err(format!("{to} has no SmsUrl"));
            }
            let token = state
                .account(&number.account_sid)
                .map(|account| account.auth_token.clone())
                .ok_or_else(|| "the number's account is gone".to_owned())?;
            state.messages.push(MessageState {
                sid: sid.clone(),
                account_sid: number.account_sid.clone(),
                to: to.to_owned(),
                from: from.to_owned(),
                body: body.to_owned(),
                messaging_service_sid: None,
                status: "received".to_owned(),
                create_params: Vec::new(),
                date_created: chrono::Utc::now(),
                status_callback: None,
                error_code: None,
                direction: "inbound".to_owned(),
            });
            let params: Vec<(String, String)> = [
                ("ToCountry", "US"),
                ("SmsMessageSid", sid.as_str()),
                ("NumMedia", "0"),
                ("SmsSid", sid.as_str()),
                ("SmsStatus", "received"),
                ("Body", body),
                ("To", to),
                ("NumSegments", "1"),
                ("MessageSid", sid.as_str()),
                ("AccountSid", number.account_sid.as_str()),
                ("From", from),
                ("ApiVersion", "2010-04-01"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            (url, token, params)
        };
        let response =
            self.send_webhook(&url, &token, &params).await.map_err(|error| error.to_string())?;
        Ok((sid, response.status().as_u16()))
    }

    /// Every request received so far, oldest first (failed and unauthenticated ones included).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// The next request whose path contains `path_contains` (`""` matches all) fails with HTTP
    /// `status` and Twilio code `twilio_code` (pass `None` for a body without code).
    pub fn fail_next(&self, path_contains: &str, status: u16, twilio_code: impl Into<Option<u32>>) {
        self.fail_times(path_contains, 1, status, twilio_code);
    }

    /// Like [`TwilioEmulator::fail_next`] for the next `times` matching requests.
    pub fn fail_times(
        &self,
        path_contains: &str,
        times: u32,
        status: u16,
        twilio_code: impl Into<Option<u32>>,
    ) {
        if times == 0 {
            return;
        }
        self.shared.lock().failures.push(FailureRule {
            path_contains: path_contains.to_owned(),
            remaining: Some(times),
            status,
            code: twilio_code.into(),
        });
    }

    /// Every matching request fails until [`TwilioEmulator::clear_failures`].
    pub fn fail_always(
        &self,
        path_contains: &str,
        status: u16,
        twilio_code: impl Into<Option<u32>>,
    ) {
        self.shared.lock().failures.push(FailureRule {
            path_contains: path_contains.to_owned(),
            remaining: None,
            status,
            code: twilio_code.into(),
        });
    }

    /// While `lose` is set, recordings that finish capture nothing: they end `absent` (Twilio's
    /// status when no audio was recorded), without media, and their callbacks say so.
    pub fn lose_recordings(&self, lose: bool) {
        self.shared.lock().lose_recordings = lose;
    }

    /// Removes every injected failure.
    pub fn clear_failures(&self) {
        self.shared.lock().failures.clear();
    }

    /// The next request whose path contains `path_contains` waits `delay` before being handled
    /// (use a delay beyond the client's timeout to make it time out; the request is then handled
    /// only if the client is still connected).
    pub fn delay_next(&self, path_contains: &str, delay: Duration) {
        self.shared.lock().delays.push(DelayRule {
            path_contains: path_contains.to_owned(),
            remaining: 1,
            delay,
        });
    }

    /// The next request whose path contains `path_contains` is applied as usual (a message is
    /// created, a call placed) but its answer is lost: the client gets a 500 without a Twilio
    /// body, as when a connection drops after Twilio acted on a request.
    pub fn lose_next_answer(&self, path_contains: &str) {
        self.shared.lock().lost_answers.push(path_contains.to_owned());
    }

    /// Scripts the callee at `to`: every outbound call created to that number from now on
    /// plays `callee` (see [`callee`]).
    pub fn add_callee(&self, to: &str, callee: Callee) {
        self.shared.lock().callees.insert(to.to_owned(), callee);
    }

    /// The finished run of the scripted callee of call `call_sid`, waiting up to `timeout`.
    pub async fn callee_run(&self, call_sid: &str, timeout: Duration) -> Option<CalleeRun> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(run) =
                self.shared.callee_runs.lock().await.iter().find(|r| r.call_sid == call_sid)
            {
                return Some(run.clone());
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every finished run of a scripted callee so far, in the order they finished.
    pub async fn callee_runs(&self) -> Vec<CalleeRun> {
        self.shared.callee_runs.lock().await.clone()
    }

    /// POSTs `params` to `url` as Twilio delivers a webhook: form-encoded, signed with
    /// `auth_token` in `X-Twilio-Signature`, with a fresh `I-Twilio-Idempotency-Token`.
    ///
    /// # Errors
    ///
    /// When the request cannot be sent; any HTTP status is a successful delivery.
    pub async fn send_webhook(
        &self,
        url: &str,
        auth_token: &str,
        params: &[(String, String)],
    ) -> Result<reqwest::Response, reqwest::Error> {
        let idempotency_token = new_idempotency_token();
        self.send_webhook_with_idempotency_token(url, auth_token, params, &idempotency_token).await
    }

    /// [`TwilioEmulator::send_webhook`] with a chosen idempotency token, to emulate Twilio
    /// retrying the same delivery.
    ///
    /// # Errors
    ///
    /// When the request cannot be sent.
    pub async fn send_webhook_with_idempotency_token(
        &self,
        url: &str,
        auth_token: &str,
        params: &[(String, String)],
        idempotency_token: &str,
    ) -> Result<reqwest::Response, reqwest::Error> {
        post_signed(&self.webhook_client, url, auth_token, params, idempotency_token).await
    }

    /// Stops accepting connections and waits (up to 5 s) for connections in flight to finish.
    pub async fn shutdown(mut self) {
        if let Some(shutdown_tx) = self.shutdown_tx.take() {
            let _ = shutdown_tx.send(());
        }
        if let Some(mut server_task) = self.server_task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut server_task).await.is_err()
        {
            server_task.abort();
        }
    }
}

impl Drop for TwilioEmulator {
    fn drop(&mut self) {
        if let Some(shutdown_tx) = self.shutdown_tx.take() {
            let _ = shutdown_tx.send(());
        }
    }
}

/// How long after answering a create request the emulator starts a scripted delivery.
pub(crate) const DELIVERY_DELAY: Duration = Duration::from_millis(20);

/// Sets a message's status and sends its signed status callback.
async fn send_status(
    shared: &Shared,
    client: &reqwest::Client,
    message_sid: &str,
    status: &str,
    error_code: Option<u32>,
) -> Result<u16, String> {
    let (callback, token, params) = {
        let mut state = shared.lock();
        let Some(message) = state.messages.iter_mut().find(|m| m.sid == message_sid) else {
            return Err(format!("no message {message_sid}"));
        };
        message.status = status.to_owned();
        message.error_code = error_code;
        let message = message.clone();
        let Some(callback) = message.status_callback.clone() else {
            return Err(format!("message {message_sid} has no StatusCallback"));
        };
        let token = state
            .account(&message.account_sid)
            .map(|account| account.auth_token.clone())
            .ok_or_else(|| "the message's account is gone".to_owned())?;
        let mut params: Vec<(String, String)> = vec![
            ("SmsSid".to_owned(), message.sid.clone()),
            ("SmsStatus".to_owned(), status.to_owned()),
            ("MessageStatus".to_owned(), status.to_owned()),
            ("To".to_owned(), message.to.clone()),
            ("MessageSid".to_owned(), message.sid.clone()),
            ("AccountSid".to_owned(), message.account_sid.clone()),
            ("From".to_owned(), message.from),
            ("ApiVersion".to_owned(), "2010-04-01".to_owned()),
        ];
        if let Some(code) = error_code {
            params.push(("ErrorCode".to_owned(), code.to_string()));
        }
        (callback, token, params)
    };
    post_signed(client, &callback, &token, &params, &new_idempotency_token())
        .await
        .map(|response| response.status().as_u16())
        .map_err(|error| error.to_string())
}

/// Plays a delivery's status callbacks in Twilio's order (see
/// [`TwilioEmulator::deliver_message`]).
pub(crate) async fn play_delivery(
    shared: &Shared,
    client: &reqwest::Client,
    message_sid: &str,
    outcome: MessageOutcome,
) -> Vec<Result<u16, String>> {
    let (last, code) = match outcome {
        MessageOutcome::Delivered => ("delivered", None),
        MessageOutcome::Undelivered(code) => ("undelivered", Some(code)),
        // A message that fails never reaches `sent`.
        MessageOutcome::Failed(code) => {
            return vec![send_status(shared, client, message_sid, "failed", Some(code)).await];
        }
    };
    vec![
        send_status(shared, client, message_sid, "sent", None).await,
        send_status(shared, client, message_sid, last, code).await,
    ]
}

/// POSTs a form as Twilio delivers a webhook: signed with `auth_token`, with an idempotency token.
async fn post_signed(
    client: &reqwest::Client,
    url: &str,
    auth_token: &str,
    params: &[(String, String)],
    idempotency_token: &str,
) -> Result<reqwest::Response, reqwest::Error> {
    let signature =
        nixflex_providers::twilio::signature::compute_signature(auth_token, url, params);
    client
        .post(url)
        .header(reqwest::header::USER_AGENT, WEBHOOK_USER_AGENT)
        .header(SIGNATURE_HEADER, signature)
        .header(IDEMPOTENCY_TOKEN_HEADER, idempotency_token)
        .form(params)
        .send()
        .await
}

/// A Twilio SID: two-letter prefix and 32 random lowercase hex digits.
pub(crate) fn new_sid(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// A random token in UUID form, like the ones Twilio sends.
pub(crate) fn new_idempotency_token() -> String {
    let hex = hex::encode(rand::random::<[u8; 16]>());
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// reqwest is built with `rustls-no-provider` and panics when no crypto provider is installed;
/// the workspace standardises on *ring*.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
