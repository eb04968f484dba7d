//! The engine handle: what the carrier endpoints and the composition root hold. It owns the
//! providers, admits calls ([`crate::service`]), pre-warms speech recognition while a call is
//! being answered, admits media streams (checking the per-call token), and runs each call's
//! [`Session`](crate::session) with a persistence task beside it, so the audio path never awaits
//! the database. It tracks its sessions, so a shutdown can drain them ([`Engine::drain`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nixflex_core::call::CallRecord;
use nixflex_core::catalog::TtsProviderKind;
use nixflex_core::crypto::{SecretBox, hash_secret};
use nixflex_core::ids::{AccountId, CallId};
use nixflex_pipeline::ProviderError;
use nixflex_pipeline::llm::LlmProvider;
use nixflex_pipeline::stt::{SttEvents, SttInput, SttOptions, SttProvider};
use nixflex_pipeline::tts::TtsProvider;
use nixflex_providers::customer::CustomerHttp;
use nixflex_providers::twilio::{TwilioClient, TwilioCredentials, UpdateCall};
use nixflex_store::CallUpdate;

use crate::store::CallStore;
use subtle::ConstantTimeEq;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

/// The speech and language providers every call uses.
#[derive(Debug, Clone)]
pub struct Providers {
    /// The LLM.
    pub llm: Arc<dyn LlmProvider>,
    /// Streaming speech-to-text.
    pub stt: Arc<dyn SttProvider>,
    /// Streaming text-to-speech.
    pub tts: Arc<dyn TtsProvider>,
    /// Which voice catalogue maps `voice_id` to the provider's voice.
    pub tts_kind: TtsProviderKind,
    /// LLMs tried in order after `llm` fails (docs/engine.md#provider-outages).
    pub llm_fallbacks: Vec<Arc<dyn LlmProvider>>,
    /// Speech synthesisers tried in order after `tts` fails, each with its voice catalogue.
    pub tts_fallbacks: Vec<(Arc<dyn TtsProvider>, TtsProviderKind)>,
    /// Speech recognisers tried in order after `stt` fails.
    pub stt_fallbacks: Vec<Arc<dyn SttProvider>>,
}

/// The Twilio credentials of an imported number: its account SID and its auth token, unsealed.
/// `None` when the sealed token cannot be opened (another master key).
pub fn number_credentials(
    secrets: &SecretBox,
    number: &nixflex_core::number::PhoneNumber,
) -> Option<TwilioCredentials> {
    let token = secrets.open(&number.twilio_auth_token_sealed).ok()?;
    Some(TwilioCredentials::new(number.twilio_account_sid.clone(), token))
}

/// Engine settings from the configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Concurrent calls per account unless the account overrides it.
    pub default_max_concurrent_calls: i64,
    /// How often a live session refreshes its heartbeat.
    pub heartbeat_every: Duration,
    /// A call whose heartbeat is older than this no longer counts against the cap.
    pub heartbeat_stale_after: Duration,
    /// How long a pre-warmed recogniser waits for its media stream.
    pub prewarm_ttl: Duration,
    /// How long a media stream may take to send `start`.
    pub start_timeout: Duration,
    /// On shutdown, how long live calls may continue before they are ended with a goodbye.
    pub drain_timeout: Duration,
    /// Attempts of a call's follow-up jobs before they are dead.
    pub follow_up_max_attempts: i64,
    /// Notified when a call's follow-ups were queued, so this node's job worker runs them now.
    pub follow_up_wake: Option<Arc<tokio::sync::Notify>>,
    /// Where recordings go; `None` records nothing (docs/recordings.md).
    pub recordings: Option<crate::recordings::Recordings>,
    /// The server's public base URL (the carrier's callbacks of outbound calls go there);
    /// `None`: outbound calls cannot be placed.
    pub public_url: Option<String>,
    /// An outbound call queued longer than this for a free slot ends `failed`.
    pub outbound_queue_timeout: Duration,
    /// How often a queued call's dial job looks again when nothing made it due earlier.
    pub dial_recheck: Duration,
    /// The SMS service (docs/sms.md); `None` on servers without one (engine tests).
    pub sms: Option<crate::sms::Sms>,
    /// Where accounts' own speech providers are reached (docs/providers.md#bring-your-own-llm-and-tts).
    pub byo_tts_urls: crate::byo::ByoTtsUrls,
    /// Campaign dials per second per carrier account, across nodes (docs/campaigns.md#pacing).
    pub campaign_calls_per_second: f64,
    /// What the agent (or the carrier) says when a provider fails
    /// (docs/engine.md#provider-outages).
    pub outage_message: String,
}

/// The default outage line.
pub const DEFAULT_OUTAGE_MESSAGE: &str = "Sorry, I'm having trouble on my side.";

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            default_max_concurrent_calls: 10,
            heartbeat_every: Duration::from_secs(20),
            heartbeat_stale_after: Duration::from_secs(90),
            prewarm_ttl: Duration::from_secs(30),
            start_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            follow_up_max_attempts: 8,
            follow_up_wake: None,
            recordings: None,
            public_url: None,
            outbound_queue_timeout: Duration::from_secs(3600),
            dial_recheck: crate::outbound::DEFAULT_DIAL_RECHECK,
            sms: None,
            byo_tts_urls: crate::byo::ByoTtsUrls::default(),
            campaign_calls_per_second: 1.0,
            outage_message: DEFAULT_OUTAGE_MESSAGE.to_owned(),
        }
    }
}

type SttSession = Result<(SttInput, SttEvents), ProviderError>;

struct Prewarmed {
    created: tokio::time::Instant,
    options: SttOptions,
    task: JoinHandle<SttSession>,
}

/// The engine: cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn CallStore>,
    secrets: SecretBox,
    twilio: TwilioClient,
    providers: Providers,
    config: EngineConfig,
    /// Recognisers opened while the voice webhook was answered, by call id.
    prewarmed: Mutex<HashMap<String, Prewarmed>>,
    /// Sessions running on this node.
    live: AtomicUsize,
    /// The client for the customer's own endpoints (the pre-call gate).
    customer: CustomerHttp,
    /// Sessions, and the carrier hang-ups they start, so a shutdown can wait for them.
    tasks: TaskTracker,
    /// Cancelled when the server starts shutting down: new calls are refused.
    draining: CancellationToken,
    /// Cancelled when the drain time is over: live calls say goodbye and end.
    end_calls: CancellationToken,
    /// Accounts' own providers, built once (docs/providers.md#bring-your-own-llm-and-tts).
    byo: crate::byo::ByoCache,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("live_calls", &self.live_calls()).finish_non_exhaustive()
    }
}

impl Engine {
    /// Builds the engine.
    pub fn new(
        store: Arc<dyn CallStore>,
        secrets: SecretBox,
        twilio: TwilioClient,
        providers: Providers,
        customer: CustomerHttp,
        config: EngineConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                secrets,
                twilio,
                providers,
                config,
                prewarmed: Mutex::new(HashMap::new()),
                live: AtomicUsize::new(0),
                customer,
                tasks: TaskTracker::new(),
                draining: CancellationToken::new(),
                end_calls: CancellationToken::new(),
                byo: crate::byo::ByoCache::default(),
            }),
        }
    }

    /// The cache of accounts' own providers.
    pub(crate) fn byo_cache(&self) -> &crate::byo::ByoCache {
        &self.inner.byo
    }

    /// The client for the customer's own endpoints.
    pub fn customer(&self) -> &CustomerHttp {
        &self.inner.customer
    }

    /// Whether the server is shutting down (new calls are refused).
    pub fn is_draining(&self) -> bool {
        self.inner.draining.is_cancelled()
    }

    /// Drains the engine for a shutdown: new calls are refused from now on (busy,
    /// `server_draining`); live calls continue until they end or the configured drain time
    /// passes; then the remaining calls say a short goodbye, are hung up at the carrier and
    /// recorded as `server_shutdown`. Returns once every session (and the hang-ups they
    /// started) has finished. The HTTP listener must keep serving meanwhile: the calls' media
    /// streams and the carrier's webhooks run through it.
    pub async fn drain(&self) {
        let inner = &self.inner;
        inner.draining.cancel();
        inner.tasks.close();
        let live = self.live_calls();
        if live > 0 {
            tracing::info!(
                message = "Draining: waiting for live calls to end.",
                live_calls = live,
                drain_timeout_ms =
                    u64::try_from(inner.config.drain_timeout.as_millis()).unwrap_or(u64::MAX)
            );
        }
        if tokio::time::timeout(inner.config.drain_timeout, inner.tasks.wait()).await.is_ok() {
            return;
        }
        tracing::warn!(
            message = "Drain time over: ending the remaining calls.",
            live_calls = self.live_calls()
        );
        inner.end_calls.cancel();
        inner.tasks.wait().await;
    }

    /// Cancelled when live calls must end (the drain time is over).
    pub(crate) fn end_calls_signal(&self) -> CancellationToken {
        self.inner.end_calls.clone()
    }

    /// Runs `future` as part of a session's work, so a drain waits for it.
    pub(crate) async fn track<F: Future>(&self, future: F) -> F::Output {
        self.inner.tasks.track_future(future).await
    }

    /// Spawns a task a drain waits for (e.g. a carrier hang-up after the call ended).
    pub(crate) fn spawn_tracked<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.inner.tasks.spawn(future);
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn CallStore> {
        &self.inner.store
    }

    /// The master-key box.
    pub fn secrets(&self) -> &SecretBox {
        &self.inner.secrets
    }

    /// The providers.
    pub fn providers(&self) -> &Providers {
        &self.inner.providers
    }

    /// The Twilio client.
    pub fn twilio(&self) -> &TwilioClient {
        &self.inner.twilio
    }

    /// Calls whose media session runs on this node.
    pub fn live_calls(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed)
    }

    pub(crate) fn session_started(&self) -> LiveGuard {
        self.inner.live.fetch_add(1, Ordering::Relaxed);
        LiveGuard(self.clone())
    }

    /// Opens the recogniser for a call that is being answered, so its handshake overlaps the
    /// carrier's set-up of the media stream. Stale pre-warmed sessions are dropped.
    pub fn prewarm_stt(&self, call_id: &str, options: SttOptions) {
        let stt = self.inner.providers.stt.clone();
        let task_options = options.clone();
        let task = tokio::spawn(async move { stt.open(task_options).await });
        let Ok(mut prewarmed) = self.inner.prewarmed.lock() else { return };
        let ttl = self.inner.config.prewarm_ttl;
        prewarmed.retain(|_, p| {
            let fresh = p.created.elapsed() < ttl;
            if !fresh {
                p.task.abort();
            }
            fresh
        });
        prewarmed.insert(
            call_id.to_owned(),
            Prewarmed { created: tokio::time::Instant::now(), options, task },
        );
    }

    /// Drops a pre-warmed recogniser (the call was refused).
    pub fn forget_prewarmed(&self, call_id: &str) {
        if let Some(prewarmed) =
            self.inner.prewarmed.lock().ok().and_then(|mut p| p.remove(call_id))
        {
            prewarmed.task.abort();
        }
    }

    /// The pre-warmed recogniser of a call (if this node opened one with the same options), or a
    /// fresh one.
    pub(crate) async fn open_stt(&self, call_id: &str, options: SttOptions) -> SttSession {
        let taken = self.inner.prewarmed.lock().ok().and_then(|mut p| p.remove(call_id));
        if let Some(prewarmed) = taken {
            if prewarmed.options == options {
                if let Ok(result) = prewarmed.task.await {
                    return result;
                }
            } else {
                prewarmed.task.abort();
            }
        }
        self.inner.providers.stt.open(options).await
    }

    /// Whether `token` is the media-stream secret of `call` (constant time).
    pub fn token_matches(call: &CallRecord, token: &str) -> bool {
        call.stream_token_hash
            .as_deref()
            .is_some_and(|stored| hash_secret(token).as_bytes().ct_eq(stored.as_bytes()).into())
    }

    /// Ends a call at the carrier (`Status=completed`); "already ended" counts as done.
    pub(crate) async fn hang_up_at_carrier(&self, credentials: &TwilioCredentials, call_sid: &str) {
        match self.inner.twilio.update_call(credentials, call_sid, &UpdateCall::hang_up()).await {
            Ok(_) => {}
            Err(error) => {
                // 21220 / 20404: the call has already ended, which is what we wanted.
                let code = error.twilio_code();
                if !matches!(code, Some(21220 | 20404)) {
                    tracing::warn!(message = "Carrier hang-up failed; the after-stream TwiML will end the call.", error = %error);
                }
            }
        }
    }

    /// The follow-up jobs queued when a call ends, written with its final update.
    pub fn call_follow_ups(&self, call_id: &str, account_id: &str) -> Vec<nixflex_store::NewJob> {
        vec![nixflex_store::NewJob::call_follow_up(
            nixflex_store::CALL_ENDED,
            call_id,
            account_id,
            self.inner.config.follow_up_max_attempts,
        )]
    }

    /// Where recordings go, when recording is set up.
    pub fn recordings(&self) -> Option<&crate::recordings::Recordings> {
        self.inner.config.recordings.as_ref()
    }

    /// The SMS service, when the server has one.
    pub fn sms(&self) -> Option<&crate::sms::Sms> {
        self.inner.config.sms.as_ref()
    }

    /// Tells this node's job worker that follow-ups were queued.
    pub fn wake_follow_ups(&self) {
        if let Some(wake) = &self.inner.config.follow_up_wake {
            wake.notify_one();
        }
    }

    /// Starts the task that writes a call's updates in order, off the audio path. The final
    /// update goes with the call's follow-up jobs, in one transaction.
    pub(crate) fn spawn_recorder(&self, call_id: CallId, account_id: AccountId) -> Recorder {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(CallUpdate, bool)>();
        let engine = self.clone();
        let task = tokio::spawn(
            async move {
            let store = engine.inner.store.clone();
            while let Some((mut update, mut last)) = rx.recv().await {
                // Updates that queued while the previous write waited go out as one
                // (docs/engine.md#call-updates).
                while !last {
                    let Ok((next, next_last)) = rx.try_recv() else { break };
                    update = update.then(next);
                    last = next_last;
                }
                let follow_ups =
                    if last { engine.call_follow_ups(&call_id, &account_id) } else { Vec::new() };
                let mut attempt = 0u32;
                loop {
                    let at = nixflex_store::now();
                    let written = if last {
                        store.finish_call(&call_id, &update, at, &follow_ups).await
                    } else {
                        store.update_call(&call_id, &update, at).await
                    };
                    match written {
                        Ok(_) => {
                            if last {
                                engine.wake_follow_ups();
                            }
                            break;
                        }
                        Err(error) if attempt < 5 => {
                            attempt += 1;
                            tracing::warn!(message = "Call update failed; retrying.", error = %error);
                            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt)))
                                .await;
                        }
                        Err(error) => {
                            // The heartbeat stops with the session, so the sweeper ends the
                            // call and queues its follow-ups.
                            tracing::error!(message = "Call update lost after retries.", error = %error);
                            break;
                        }
                    }
                }
            }
        }
            // The call's span (`call_id`, `account_id`) is current when the session starts.
            .in_current_span(),
        );
        Recorder { tx, task }
    }
}

/// Decrements the live-call count when a session ends.
pub(crate) struct LiveGuard(Engine);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.inner.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The sending side of a call's persistence task.
pub(crate) struct Recorder {
    /// Updates to write, in order, each marked whether it is the call's last. Closing it lets
    /// the task finish.
    pub(crate) tx: tokio::sync::mpsc::UnboundedSender<(CallUpdate, bool)>,
    task: JoinHandle<()>,
}

impl Recorder {
    /// Queues an update (never waits).
    pub(crate) fn record(&self, update: CallUpdate) {
        let _ = self.tx.send((update, false));
    }

    /// Queues the call's final update, written with its follow-up jobs (never waits).
    pub(crate) fn record_end(&self, update: CallUpdate) {
        let _ = self.tx.send((update, true));
    }

    /// Waits until everything queued is written.
    pub(crate) async fn finish(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}
