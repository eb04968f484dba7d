//! The composition root: opens the store, loads the master key, builds the API and runs it with
//! graceful shutdown and the background maintenance loop.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use nixflex_api::{ApiConfig, AppState};
use nixflex_core::crypto::SecretBox;
use nixflex_store::Store;
use secrecy::ExposeSecret;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Signup};

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The bound address of the separate metrics listener, when `metrics_listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    /// Cancelling it starts a graceful shutdown: calls drain first, then the listener stops.
    pub shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// `http://addr`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until the server has stopped.
    ///
    /// # Errors
    /// When serving failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.handle.await.context("server task panicked")?
    }
}

const MASTER_KEY_CANARY: &str = "master_key_canary";
const CANARY_PLAINTEXT: &str = "nixflex master key check v1";

/// Loads the configured master key, or reads/creates `data_dir/master.key` (0600).
///
/// # Errors
/// When the key file cannot be read or written, or holds an invalid key.
pub fn load_master_key(config: &Config) -> anyhow::Result<SecretBox> {
    if let Some(key) = &config.master_key {
        return SecretBox::from_encoded(key.expose_secret()).context("master_key");
    }
    let path = config.data_dir.join("master.key");
    if path.exists() {
        warn_if_open(&path);
        let encoded = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        return SecretBox::from_encoded(&encoded)
            .with_context(|| format!("{} does not hold a valid master key", path.display()));
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let encoded = SecretBox::generate_encoded();
    let mut file = open_private(&path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(encoded.as_bytes())?;
    file.sync_all()?;
    tracing::warn!(
        message = "Generated a new master key; back it up. Every node sharing this database needs the same key (NIXFLEX_MASTER_KEY).",
        path = %path.display()
    );
    SecretBox::from_encoded(&encoded).context("generated master key")
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(unix)]
fn warn_if_open(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(message = "The master key file is readable by other users; chmod 600 it.", path = %path.display());
    }
}

#[cfg(not(unix))]
fn warn_if_open(_path: &Path) {}

/// Opens the store named by the config (creating the data dir for SQLite) and checks the master
/// key against the database's canary.
///
/// # Errors
/// When the database cannot be opened, or was encrypted under another master key.
pub async fn open_store(config: &Config, secrets: &SecretBox) -> anyhow::Result<Arc<dyn Store>> {
    if !config.uses_postgres() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
    }
    let url = config.effective_database_url();
    let store = nixflex_store::open(&url, config.database_max_connections)
        .await
        .with_context(|| format!("opening {}", crate::config::redact_url(&url)))?;
    let canary = store.meta_get_or_put(MASTER_KEY_CANARY, &secrets.seal(CANARY_PLAINTEXT)).await?;
    if secrets.open(&canary).ok().as_deref() != Some(CANARY_PLAINTEXT) {
        bail!(
            "the master key does not match this database (its secrets were encrypted under another key); \
             set NIXFLEX_MASTER_KEY to the key this database was created with"
        );
    }
    Ok(store)
}

/// The providers the configuration names. A missing API key is not an error here: calls then
/// fail with a clear "not configured" error (never a silent fallback).
fn build_providers(config: &Config) -> anyhow::Result<nixflex_engine::Providers> {
    use nixflex_pipeline::llm::LlmProvider;
    use nixflex_pipeline::stt::SttProvider;
    use nixflex_pipeline::tts::TtsProvider;
    use nixflex_providers::llm::{anthropic, openai as openai_llm};
    use nixflex_providers::stt::{deepgram, openai as openai_stt};
    use nixflex_providers::tts::{inworld, openai as openai_tts};

    use crate::config::{
        LlmProvider as LlmChoice, SttProvider as SttChoice, TtsProvider as TtsChoice,
    };

    let llm_client = |choice: LlmChoice| -> anyhow::Result<Arc<dyn LlmProvider>> {
        Ok(match choice {
            LlmChoice::Anthropic => Arc::new(
                anthropic::AnthropicClient::new(anthropic::AnthropicConfig {
                    base_url: config.anthropic_base_url.clone(),
                    api_key: config.anthropic_api_key.clone(),
                    ..anthropic::AnthropicConfig::default()
                })
                .context("building the Anthropic client")?,
            ),
            LlmChoice::Openai => Arc::new(
                openai_llm::OpenAiChatClient::new(openai_llm::OpenAiChatConfig {
                    base_url: config.openai_base_url.clone(),
                    api_key: config.openai_api_key.clone(),
                    ..openai_llm::OpenAiChatConfig::default()
                })
                .context("building the OpenAI-compatible chat client")?,
            ),
        })
    };
    let stt_client = |choice: SttChoice| -> anyhow::Result<Arc<dyn SttProvider>> {
        Ok(match choice {
            SttChoice::Deepgram => {
                Arc::new(deepgram::DeepgramClient::new(deepgram::DeepgramConfig {
                    base_url: config.deepgram_url.clone(),
                    api_key: config.deepgram_api_key.clone(),
                    // A recogniser that does not answer this soon is treated as down and the
                    // caller's audio is buffered for the next one (docs/engine.md#provider-outages).
                    connect_timeout: std::time::Duration::from_millis(1500),
                    ..deepgram::DeepgramConfig::default()
                }))
            }
            SttChoice::Openai => Arc::new(
                openai_stt::OpenAiTranscriber::new(openai_stt::OpenAiTranscriptionConfig {
                    base_url: config.openai_base_url.clone(),
                    api_key: config.openai_api_key.clone(),
                    model: config.openai_transcription_model.clone(),
                    ..openai_stt::OpenAiTranscriptionConfig::default()
                })
                .context("building the OpenAI-compatible transcription client")?,
            ),
        })
    };
    let stt = stt_client(config.stt_provider)?;
    let stt_fallbacks = config
        .stt_fallback
        .iter()
        .map(|choice| stt_client(*choice))
        .collect::<anyhow::Result<_>>()?;
    let tts_client = |choice: TtsChoice| -> anyhow::Result<Arc<dyn TtsProvider>> {
        Ok(match choice {
            TtsChoice::Inworld => Arc::new(
                inworld::InworldClient::new(inworld::InworldConfig {
                    base_url: config.inworld_url.clone(),
                    api_key: config.inworld_api_key.clone(),
                    // Telephony audio is 8 kHz: asking for it directly skips resampling, which
                    // cost a tenth of the server's CPU in the call benchmark.
                    sample_rate_hz: 8000,
                    ..inworld::InworldConfig::default()
                })
                .context("building the Inworld client")?,
            ),
            TtsChoice::Openai => Arc::new(
                openai_tts::OpenAiSpeechClient::new(openai_tts::OpenAiSpeechConfig {
                    base_url: config.openai_base_url.clone(),
                    api_key: config.openai_api_key.clone(),
                    ..openai_tts::OpenAiSpeechConfig::default()
                })
                .context("building the OpenAI-compatible speech client")?,
            ),
        })
    };
    let llm = llm_client(config.llm_provider)?;
    let tts = tts_client(config.tts_provider)?;
    let llm_fallbacks = config
        .llm_fallback
        .iter()
        .map(|choice| llm_client(*choice))
        .collect::<anyhow::Result<_>>()?;
    let tts_fallbacks = config
        .tts_fallback
        .iter()
        .map(|choice| Ok((tts_client(*choice)?, choice.kind())))
        .collect::<anyhow::Result<_>>()?;
    Ok(nixflex_engine::Providers {
        llm,
        stt,
        tts,
        tts_kind: config.tts_kind(),
        llm_fallbacks,
        tts_fallbacks,
        stt_fallbacks,
    })
}

/// The recordings service: the server's store from the configuration (docs/recordings.md).
///
/// # Errors
/// When the directory cannot be created or the bucket settings are unusable.
pub fn build_recordings(
    config: &Config,
    store: &Arc<dyn nixflex_store::Store>,
    secrets: &nixflex_core::crypto::SecretBox,
    bound: SocketAddr,
) -> anyhow::Result<nixflex_engine::Recordings> {
    use nixflex_engine::recordings::ServerStore;
    use nixflex_providers::storage::{ObjectStorage, S3Config};
    let (server, server_kind) = match config.recording_storage {
        crate::config::RecordingStorage::Local => (
            ObjectStorage::local(config.recordings_dir()).context("the recordings directory")?,
            ServerStore::Local,
        ),
        crate::config::RecordingStorage::S3 => (
            ObjectStorage::s3(&S3Config {
                bucket: config.recording_s3_bucket.clone().unwrap_or_default(),
                endpoint: config.recording_s3_endpoint.clone(),
                region: config.recording_s3_region.clone(),
                access_key: config.recording_s3_access_key.clone().unwrap_or_default(),
                secret_key: config
                    .recording_s3_secret_key
                    .clone()
                    .unwrap_or_else(|| secrecy::SecretString::from(String::new())),
                allow_http: config
                    .recording_s3_endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://")),
                // The operator's own bucket may well be on the private network.
                public_only: false,
            })
            .context("the recordings bucket")?,
            ServerStore::S3,
        ),
    };
    let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{bound}"));
    Ok(nixflex_engine::Recordings::new(
        nixflex_engine::RecordingsConfig {
            server,
            server_kind,
            public_url,
            url_ttl: Duration::from_secs(config.recording_url_ttl_secs),
            retention: (config.recording_retention_days > 0)
                .then(|| Duration::from_secs(u64::from(config.recording_retention_days) * 86_400)),
            allow_private_buckets: config.allow_private_targets,
        },
        store.clone(),
        secrets.clone(),
    ))
}

/// Deletes recordings past their retention time (one batch per run; every node runs it, and
/// two nodes sweeping at once delete nothing twice).
async fn sweep_recordings(recordings: &nixflex_engine::Recordings) {
    match recordings.sweep_expired(nixflex_store::now()).await {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(message = "Expired recordings deleted.", deleted),
        Err(error) => {
            tracing::warn!(message = "The recording retention sweep failed; it runs again later.", error = %error);
        }
    }
}

fn api_config(config: &Config) -> ApiConfig {
    ApiConfig {
        signup_open: config.signup == Signup::Open,
        signups_per_hour: config.signups_per_hour,
        reads_per_minute: config.rate_limit_reads_per_minute,
        writes_per_minute: config.rate_limit_writes_per_minute,
        anonymous_per_minute: config.rate_limit_anonymous_per_minute,
        rate_limit_window: config.rate_limit_window_secs,
        trust_forwarded_for: config.trust_forwarded_for,
        max_body_bytes: config.max_body_bytes,
        request_timeout: config.request_timeout(),
        tts_provider: config.tts_kind(),
        allow_private_targets: config.allow_private_targets,
        public_url: config.public_url.as_ref().map(|u| u.trim_end_matches('/').to_owned()),
        price_per_minute_usd: config.price_per_minute_usd,
    }
}

/// Starts serving; returns once the socket is bound.
///
/// # Errors
/// When the store, master key or socket cannot be set up.
/// Runs `step` every `period` until `token` is cancelled. A failure is logged once, as
/// `failure`, until a step succeeds again.
fn spawn_periodic<F, Fut>(
    token: CancellationToken,
    period: Duration,
    failure: &'static str,
    mut step: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), nixflex_store::StoreError>> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                _ = tick.tick() => match step().await {
                    Ok(()) => failing = false,
                    Err(error) if !failing => {
                        failing = true;
                        tracing::warn!(message = failure, error = %error);
                    }
                    Err(_) => {}
                },
            }
        }
    })
}

pub async fn start(config: Config) -> anyhow::Result<Server> {
    let secrets = load_master_key(&config)?;
    if config.uses_postgres() && config.master_key.is_none() {
        tracing::warn!(
            message = "PostgreSQL without NIXFLEX_MASTER_KEY: other nodes will not be able to read secrets written by this one."
        );
    }
    let store = open_store(&config, &secrets).await?;
    let twilio = nixflex_providers::twilio::TwilioClient::new(
        nixflex_providers::twilio::TwilioClientConfig {
            base_url: config.twilio_api_base.clone(),
            request_timeout: Duration::from_millis(config.twilio_request_timeout_ms),
            ..nixflex_providers::twilio::TwilioClientConfig::default()
        },
    )
    .context("building the Twilio client")?;
    let providers = build_providers(&config)?;
    // Bound early: without a public URL, recording links name the address actually bound.
    let listener = tokio::net::TcpListener::bind(config.listen_addr()?)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match config.metrics_addr()? {
        Some(metrics_addr) => Some(
            tokio::net::TcpListener::bind(metrics_addr)
                .await
                .with_context(|| format!("binding metrics_listen {metrics_addr}"))?,
        ),
        None => None,
    };
    let metrics_addr =
        metrics_listener.as_ref().map(tokio::net::TcpListener::local_addr).transpose()?;
    let recordings = build_recordings(&config, &store, &secrets, addr)?;
    let engine_config = nixflex_engine::EngineConfig {
        recordings: Some(recordings.clone()),
        default_max_concurrent_calls: config.max_concurrent_calls,
        drain_timeout: Duration::from_millis(config.drain_timeout_ms),
        follow_up_max_attempts: config.jobs_max_attempts,
        public_url: config.public_url.clone(),
        outbound_queue_timeout: Duration::from_secs(config.outbound_queue_timeout_secs),
        dial_recheck: Duration::from_millis(config.outbound_dial_recheck_ms),
        byo_tts_urls: config.byo_tts_urls.clone(),
        campaign_calls_per_second: config.campaign_calls_per_second,
        outage_message: config.outage_message.clone(),
        ..nixflex_engine::EngineConfig::default()
    };
    // Every node runs a job worker; it also sweeps the calls of nodes that stopped
    // heart-beating, with the staleness limit the engine uses for the call cap.
    let customer = nixflex_api::outbound::CustomerHttp::new(config.allow_private_targets)
        .context("building the HTTP client for customer endpoints")?;
    let mut registry = nixflex_jobs::Registry::with_builtins();
    let sms = nixflex_engine::sms::Sms::new(
        store.clone(),
        secrets.clone(),
        twilio.clone(),
        providers.llm.clone(),
        nixflex_engine::sms::SmsConfig {
            public_url: config.public_url.as_ref().map(|u| u.trim_end_matches('/').to_owned()),
            max_attempts: config.jobs_max_attempts,
        },
    );
    crate::followups::register(
        &mut registry,
        store.clone(),
        nixflex_engine::followup::FollowUp::new(
            store.clone(),
            providers.llm.clone(),
            customer.clone(),
            secrets.clone(),
        )
        .with_recordings(Some(recordings.clone()))
        .with_recording_wait(Duration::from_secs(config.recording_wait_secs))
        .with_recording_recheck(Duration::from_millis(config.recording_recheck_ms))
        .with_sms(Some(sms.clone())),
        crate::followups::WebhookRetries {
            delays: config
                .webhook_retry_delays_ms
                .iter()
                .map(|ms| Duration::from_millis(*ms))
                .collect(),
            max_attempts: config.webhook_max_attempts,
        },
    );
    crate::recording_jobs::register(&mut registry, recordings.clone());
    // The dial job needs the engine, which needs the worker's wake-up: set once built.
    let dial_engine = Arc::new(std::sync::OnceLock::new());
    crate::followups::register_dial(&mut registry, dial_engine.clone());
    let campaigns = Arc::new(std::sync::OnceLock::new());
    crate::followups::register_campaigns(&mut registry, campaigns.clone());
    crate::followups::register_recordings(
        &mut registry,
        nixflex_engine::carrier_recording::CarrierRecordings::new(
            store.clone(),
            secrets.clone(),
            twilio.clone(),
            recordings.clone(),
            config.delete_carrier_recordings,
        ),
    );
    crate::followups::register_sms(&mut registry, sms.clone());
    crate::followups::register_sms_campaigns(
        &mut registry,
        nixflex_engine::sms_campaign::SmsCampaigns::new(
            store.clone(),
            sms.clone(),
            nixflex_engine::sms_campaign::CampaignConfig {
                rate_per_second: config.sms_campaign_rate_per_second,
                ..nixflex_engine::sms_campaign::CampaignConfig::default()
            },
        ),
    );
    let worker = nixflex_jobs::Worker::new(
        store.clone(),
        registry,
        config.worker_config(Some(engine_config.heartbeat_stale_after)),
    );
    let engine = nixflex_engine::Engine::new(
        Arc::new(store.clone()),
        secrets.clone(),
        twilio.clone(),
        providers,
        customer.clone(),
        nixflex_engine::EngineConfig {
            follow_up_wake: Some(worker.wake().notifier()),
            sms: Some(sms),
            ..engine_config
        },
    );
    let _ = dial_engine.set(engine.clone());
    let _ = campaigns.set(nixflex_engine::campaigns::Campaigns::new(
        store.clone(),
        engine.clone(),
        nixflex_engine::campaigns::CampaignConfig {
            tick: Duration::from_millis(config.campaign_tick_ms),
            reconcile_after: Duration::from_millis(config.campaign_reconcile_after_ms),
            ..nixflex_engine::campaigns::CampaignConfig::default()
        },
    ));
    let metrics = crate::metrics::Metrics::new(store.clone());
    let state =
        AppState::new(store, secrets, api_config(&config), twilio, engine.clone(), customer);
    // `/metrics` joins the public router only with its token (docs/operations.md#metrics).
    let app = match &config.metrics_token {
        Some(token) => {
            nixflex_api::app_with(state.clone(), metrics.clone().public_route(token.clone()))
        }
        None => nixflex_api::app(state.clone()),
    };
    let shutdown = CancellationToken::new();
    let grace = Duration::from_millis(config.shutdown_grace_ms);

    let state_for_guards = state.clone();
    // Background work: on SQLite its writes wait behind the request path's
    // (docs/operations.md#the-database).
    let maintenance = tokio::spawn({
        let token = shutdown.clone();
        nixflex_store::background(async move {
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(nixflex_api::middleware::PURGE_EVERY) => {
                        nixflex_api::middleware::purge_expired(&state).await;
                        sweep_recordings(&recordings).await;
                    }
                }
            }
        })
    });

    // The key cache's epoch poller and the rate limiter's sync: they keep the request path free
    // of database writes (docs/security.md#key-cache, docs/api.md#rate-limits).
    let key_epoch = spawn_periodic(
        shutdown.clone(),
        nixflex_api::key_cache::POLL_EVERY,
        "Reading the authentication epoch failed; keys are verified in the database until it works again.",
        {
            let state = state_for_guards.clone();
            move || {
                let state = state.clone();
                async move { state.key_cache().poll(state.store()).await }
            }
        },
    );
    let rate_sync = spawn_periodic(
        shutdown.clone(),
        config.rate_limit_sync(),
        "Syncing rate-limit counts failed; they are kept and sent again.",
        move || {
            let state = state_for_guards.clone();
            async move {
                let now = chrono::Utc::now().timestamp();
                state.rate_limiter().sync(state.store(), now).await
            }
        },
    );

    let open_files = crate::listener::raise_open_file_limit();
    let limits = crate::listener::ConnectionLimits {
        header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
        max_connections: crate::listener::effective_max_connections(
            config.max_connections,
            open_files,
        ),
    };
    if limits.max_connections < config.max_connections {
        tracing::warn!(
            message = "max_connections lowered to half the open-file limit.",
            configured = config.max_connections,
            max_connections = limits.max_connections,
            open_file_limit = open_files
        );
    }

    // Shutdown runs in order: `shutdown` is cancelled (SIGTERM, or a test) → the engine drains
    // its calls (new calls are refused busy; live ones continue until they end or the drain
    // time passes, then say goodbye) while the listener keeps serving their media streams and
    // webhooks → `stop_accepting` is cancelled → the listener stops and in-flight requests get
    // `shutdown_grace_ms` to finish.
    let stop_accepting = CancellationToken::new();
    // The worker stops with the listener, after the drain, so the follow-ups of drained calls
    // still run here (what it leaves is taken over by another node, or by this one on restart).
    let node_id = worker.config().node_id.clone();
    let worker = worker.spawn(stop_accepting.clone());
    metrics.spawn_upkeep(stop_accepting.clone());
    if let Some(metrics_listener) = metrics_listener {
        let limits = crate::listener::ConnectionLimits { max_connections: 64, ..limits };
        let router = metrics.listener_router();
        tokio::spawn(crate::listener::serve(
            metrics_listener,
            router,
            limits,
            stop_accepting.clone(),
        ));
    }
    let drained = tokio::spawn({
        let (shutdown, stop_accepting) = (shutdown.clone(), stop_accepting.clone());
        async move {
            shutdown.cancelled().await;
            tracing::info!(message = "Shutdown requested: draining calls; new calls get busy.");
            engine.drain().await;
            stop_accepting.cancel();
        }
    });
    let handle = tokio::spawn(async move {
        let connections = crate::listener::serve(listener, app, limits, stop_accepting).await;
        tracing::info!(
            message = "Shutting down: finishing in-flight requests.",
            grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX)
        );
        if tokio::time::timeout(grace, connections.wait()).await.is_err() {
            tracing::warn!(
                message = "Shutdown grace period elapsed; closing remaining connections."
            );
        }
        maintenance.abort();
        key_epoch.abort();
        rate_sync.abort();
        drained.abort();
        // Bounded by the worker's own shutdown wait.
        let _ = worker.await;
        tracing::info!(message = "Stopped.");
        Ok(())
    });
    tracing::info!(message = "Listening.", addr = %addr, metrics_addr = ?metrics_addr, database = store_backend(&config), node_id = %node_id);
    Ok(Server { addr, metrics_addr, shutdown, handle })
}

fn store_backend(config: &Config) -> &'static str {
    if config.uses_postgres() { "postgres" } else { "sqlite" }
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
