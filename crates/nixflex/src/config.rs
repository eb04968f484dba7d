//! Configuration: compiled defaults < `nixflex.toml` < `NIXFLEX_*` environment < command-line
//! flags. Unknown keys are rejected (a typo fails loudly); secrets are `SecretString`s and the
//! effective configuration is printed with them redacted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use nixflex_core::catalog::TtsProviderKind;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `signup`: whether `POST /v1/keys` without a key creates accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Signup {
    /// Anyone can sign up (10 per hour per IP).
    Open,
    /// Only `nixflex keys create` makes accounts.
    Closed,
}

/// `log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `llm_provider`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmProvider {
    /// Anthropic Messages API.
    Anthropic,
    /// Any OpenAI-compatible chat-completions server.
    Openai,
}

/// `stt_provider`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SttProvider {
    /// Deepgram live streaming.
    Deepgram,
    /// Any OpenAI-compatible `/v1/audio/transcriptions` server, one request per utterance
    /// (docs/providers.md#speech-recognition-fallback).
    Openai,
}

/// `tts_provider`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TtsProvider {
    /// Inworld TTS.
    Inworld,
    /// Any OpenAI-compatible `/v1/audio/speech` server.
    Openai,
}

impl TtsProvider {
    /// The voice catalogue of this provider.
    pub fn kind(self) -> TtsProviderKind {
        match self {
            Self::Inworld => TtsProviderKind::Inworld,
            Self::Openai => TtsProviderKind::OpenAi,
        }
    }
}

/// Where the server keeps recordings (docs/recordings.md#where-recordings-live).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingStorage {
    /// A directory on this server (`recordings_dir`).
    Local,
    /// An S3-compatible bucket (`recording_s3_*`).
    S3,
}

/// The whole configuration. Every key can be set in `nixflex.toml` (same name), as
/// `NIXFLEX_<KEY>` in the environment (provider keys also as their usual names, e.g.
/// `ANTHROPIC_API_KEY`), and the common ones as flags.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: String,
    /// Directory for the SQLite database, the generated master key and recordings.
    pub data_dir: PathBuf,
    /// `postgres://…` to use PostgreSQL; unset = SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Pool size.
    pub database_max_connections: u32,
    /// The public https base URL the carrier calls back (webhooks, media stream).
    pub public_url: Option<String>,
    /// 32 bytes (hex or base64) that encrypt secrets at rest; generated into `data_dir` if unset.
    pub master_key: Option<SecretString>,
    /// Whether API sign-up is open.
    pub signup: Signup,
    /// Sign-ups per client IP per hour.
    pub signups_per_hour: i64,
    /// Default read requests per account per minute.
    pub rate_limit_reads_per_minute: i64,
    /// Default write requests per account per minute.
    pub rate_limit_writes_per_minute: i64,
    /// Requests per minute per client IP without a valid key.
    pub rate_limit_anonymous_per_minute: i64,
    /// How often each node reconciles its in-memory request counts with the database, in
    /// milliseconds (docs/api.md#rate-limits): the bound on how far several nodes together can
    /// overshoot a limit.
    pub rate_limit_sync_ms: u64,
    /// Default concurrent calls per account.
    pub max_concurrent_calls: i64,
    /// Price of a connected minute in USD, reported by `GET /v1/usage` (0: no charge).
    pub price_per_minute_usd: f64,
    /// Trust `X-Forwarded-For` for the client IP (only behind your own proxy).
    pub trust_forwarded_for: bool,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Longest a request may run, in milliseconds.
    pub request_timeout_ms: u64,
    /// How long shutdown waits for in-flight requests, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// On shutdown, how long live calls may continue before they are ended with a short
    /// goodbye, in milliseconds (new calls are refused busy meanwhile).
    pub drain_timeout_ms: u64,
    /// How long a client may take to send a request's headers (and how long an idle keep-alive
    /// connection is kept), in milliseconds; slower connections are closed.
    pub header_read_timeout_ms: u64,
    /// Most open client connections (HTTP and WebSocket); more are refused with 503. Capped
    /// below the process's open-file limit at start.
    pub max_connections: usize,
    /// Let webhooks and functions reach http and private addresses (local testing only).
    pub allow_private_targets: bool,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Address of a separate listener serving only `GET /metrics` (e.g. `127.0.0.1:9090`);
    /// unset = no such listener (docs/operations.md#metrics).
    pub metrics_listen: Option<String>,
    /// A bearer token that opens `GET /metrics` on the public listener; unset = the public
    /// listener answers 404 there (docs/operations.md#metrics).
    pub metrics_token: Option<SecretString>,
    /// Log filter (overridden by `RUST_LOG`).
    pub log_level: String,
    /// Twilio REST base URL.
    pub twilio_api_base: String,
    /// Longest a Twilio REST request may take, in milliseconds.
    pub twilio_request_timeout_ms: u64,
    /// `anthropic` or `openai`.
    pub llm_provider: LlmProvider,
    /// Anthropic base URL (the client appends `/v1/messages`).
    pub anthropic_base_url: String,
    /// Anthropic API key.
    pub anthropic_api_key: Option<SecretString>,
    /// OpenAI-compatible base URL (the client appends `/chat/completions`, `/audio/speech`).
    pub openai_base_url: String,
    /// OpenAI-compatible API key.
    pub openai_api_key: Option<SecretString>,
    /// `deepgram`.
    pub stt_provider: SttProvider,
    /// Deepgram base URL (the client appends `/v1/listen?…`).
    pub deepgram_url: String,
    /// Deepgram API key.
    pub deepgram_api_key: Option<SecretString>,
    /// `inworld` or `openai`.
    pub tts_provider: TtsProvider,
    /// Inworld base URL.
    pub inworld_url: String,
    /// Inworld API key (the Basic credential from the Inworld portal).
    pub inworld_api_key: Option<SecretString>,
    /// LLMs tried in order after `llm_provider` fails, for the rest of the call
    /// (docs/engine.md#provider-outages), e.g. `["openai"]`; each uses its own `*_base_url` and
    /// key.
    pub llm_fallback: Vec<LlmProvider>,
    /// Speech synthesisers tried in order after `tts_provider` fails, e.g. `["openai"]`.
    pub tts_fallback: Vec<TtsProvider>,
    /// Speech recognisers tried in order after `stt_provider` fails, e.g. `["openai"]`
    /// (docs/providers.md#speech-recognition-fallback).
    pub stt_fallback: Vec<SttProvider>,
    /// The model of the OpenAI-compatible transcription endpoint (`stt_provider` or
    /// `stt_fallback` `openai`).
    pub openai_transcription_model: String,
    /// What the agent says when a provider fails (and what the carrier says when speech
    /// synthesis is down); the agents' `fallback_message` stays for unclear speech.
    pub outage_message: String,
    /// Days recordings are kept (0 = forever).
    pub recording_retention_days: u32,
    /// Where the server keeps recordings: `local` (a directory) or `s3` (a bucket).
    pub recording_storage: RecordingStorage,
    /// The directory of `local` recordings (default: `recordings` under `data_dir`).
    pub recordings_dir: Option<PathBuf>,
    /// The server's bucket (`recording_storage = "s3"`).
    pub recording_s3_bucket: Option<String>,
    /// Its S3-compatible endpoint (unset: Amazon S3).
    pub recording_s3_endpoint: Option<String>,
    /// Its signing region.
    pub recording_s3_region: String,
    /// Its access key id.
    pub recording_s3_access_key: Option<String>,
    /// Its secret access key.
    pub recording_s3_secret_key: Option<SecretString>,
    /// How long a signed `recording_url` works, in seconds.
    pub recording_url_ttl_secs: u64,
    /// Delete the carrier's copy once a `provider` recording is stored here (kept by default).
    pub delete_carrier_recordings: bool,
    /// How long a carrier-recorded call's `call.completed` waits for its recording, in seconds
    /// (docs/recordings.md#carrier-recordings); then it goes out without it.
    pub recording_wait_secs: u64,
    /// While `call.completed` waits for a carrier recording, how often it looks again, in
    /// milliseconds; the recording's arrival also ends the wait at once
    /// (docs/recordings.md#carrier-recordings).
    pub recording_recheck_ms: u64,
    /// An outbound call queued this long for a free slot under the account's concurrent-call
    /// cap ends `failed` (docs/engine.md#capacity-queue), in seconds.
    pub outbound_queue_timeout_secs: u64,
    /// How often a queued outbound call's dial job looks again when no call of its account
    /// ended in between, in milliseconds.
    pub outbound_dial_recheck_ms: u64,
    /// SMS campaign pacing: texts per second from one sending number, across every node
    /// (docs/sms.md#campaigns). Twilio's long-code default is 1.
    pub sms_campaign_rate_per_second: f64,
    /// Campaign dials per second per Twilio account, shared by every node (docs/campaigns.md#pacing).
    pub campaign_calls_per_second: f64,
    /// How often a running campaign's scheduler looks at its calls and recipients, in ms.
    pub campaign_tick_ms: u64,
    /// A claimed campaign call not heard of for this long (ms) is looked up at the carrier
    /// (docs/campaigns.md#exactly-once); must exceed `twilio_request_timeout_ms` by 2 s or more.
    pub campaign_reconcile_after_ms: u64,
    /// This node's name as a job lease owner (default: `node-<pid>-<random>`; unique per process).
    pub node_id: Option<String>,
    /// Background jobs run at once on this node (docs/jobs.md).
    pub jobs_concurrency: usize,
    /// How often the job worker looks for due jobs when nothing woke it.
    pub jobs_poll_ms: u64,
    /// How long a claimed job is held before another node may take it over (renewed while running).
    pub jobs_lease_ms: u64,
    /// Attempts before a job is dead.
    pub jobs_max_attempts: i64,
    /// Delay before a job's first retry; doubled for each further one.
    pub jobs_backoff_base_ms: u64,
    /// Longest delay between a job's attempts.
    pub jobs_backoff_cap_ms: u64,
    /// How often the sweeper ends calls whose node stopped heart-beating (and purges done jobs).
    pub jobs_sweep_ms: u64,
    /// Hours a done job is kept (its idempotency key with it) before it is deleted; 0 = forever.
    pub jobs_keep_done_hours: u64,
    /// Delays between a webhook's delivery attempts, in milliseconds; the last one repeats.
    pub webhook_retry_delays_ms: Vec<u64>,
    /// Attempts before a webhook delivery is given up.
    pub webhook_max_attempts: i64,
    /// Length of a rate-limit window for the per-minute limits. Always 60 s in production; not
    /// settable from files or the environment, only by tests that must not cross a boundary.
    #[serde(skip)]
    pub rate_limit_window_secs: i64,
    /// Where accounts' own speech providers (ElevenLabs, Cartesia) are reached: their public
    /// APIs. Not settable from files or the environment, only by tests that use emulators.
    #[serde(skip)]
    pub byo_tts_urls: nixflex_engine::byo::ByoTtsUrls,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            data_dir: PathBuf::from("./nixflex-data"),
            database_url: None,
            database_max_connections: 16,
            public_url: None,
            master_key: None,
            metrics_listen: None,
            metrics_token: None,
            signup: Signup::Open,
            signups_per_hour: 10,
            rate_limit_reads_per_minute: 600,
            rate_limit_writes_per_minute: 120,
            rate_limit_anonymous_per_minute: 600,
            rate_limit_sync_ms: 100,
            max_concurrent_calls: 10,
            price_per_minute_usd: 0.0,
            trust_forwarded_for: false,
            max_body_bytes: 8 * 1024 * 1024,
            request_timeout_ms: 30_000,
            shutdown_grace_ms: 30_000,
            drain_timeout_ms: 30_000,
            header_read_timeout_ms: 10_000,
            max_connections: 20_000,
            allow_private_targets: false,
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            twilio_api_base: "https://api.twilio.com".to_owned(),
            twilio_request_timeout_ms: 10_000,
            llm_provider: LlmProvider::Anthropic,
            anthropic_base_url: "https://api.anthropic.com".to_owned(),
            anthropic_api_key: None,
            openai_base_url: "https://api.openai.com/v1".to_owned(),
            openai_api_key: None,
            stt_provider: SttProvider::Deepgram,
            deepgram_url: "wss://api.deepgram.com".to_owned(),
            deepgram_api_key: None,
            tts_provider: TtsProvider::Inworld,
            inworld_url: "https://api.inworld.ai".to_owned(),
            inworld_api_key: None,
            llm_fallback: Vec::new(),
            tts_fallback: Vec::new(),
            stt_fallback: Vec::new(),
            openai_transcription_model: "whisper-1".to_owned(),
            outage_message: nixflex_engine::DEFAULT_OUTAGE_MESSAGE.to_owned(),
            recording_retention_days: 90,
            recording_storage: RecordingStorage::Local,
            recordings_dir: None,
            recording_s3_bucket: None,
            recording_s3_endpoint: None,
            recording_s3_region: "us-east-1".to_owned(),
            recording_s3_access_key: None,
            recording_s3_secret_key: None,
            recording_url_ttl_secs: 86_400,
            delete_carrier_recordings: false,
            recording_wait_secs: 120,
            recording_recheck_ms: 1000,
            outbound_queue_timeout_secs: 3600,
            outbound_dial_recheck_ms: 5000,
            sms_campaign_rate_per_second: 1.0,
            campaign_calls_per_second: 1.0,
            campaign_tick_ms: 1000,
            campaign_reconcile_after_ms: 60_000,
            node_id: None,
            jobs_concurrency: 8,
            jobs_poll_ms: 1000,
            jobs_lease_ms: 30_000,
            jobs_max_attempts: 8,
            jobs_backoff_base_ms: 2000,
            jobs_backoff_cap_ms: 600_000,
            jobs_sweep_ms: 30_000,
            jobs_keep_done_hours: 168,
            // 30 s, 2 min, 10 min, 1 h, then every 6 h: eight attempts span about 19 h, and the
            // delivery is given up within a day.
            webhook_retry_delays_ms: vec![30_000, 120_000, 600_000, 3_600_000, 21_600_000],
            webhook_max_attempts: 8,
            rate_limit_window_secs: 60,
            byo_tts_urls: nixflex_engine::byo::ByoTtsUrls::default(),
        }
    }
}

/// Values given as command-line flags (the highest layer).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlagOverrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--database-url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// `--public-url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// `--signup`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signup: Option<Signup>,
}

/// Provider keys read from their conventional variable names.
const PROVIDER_KEY_VARS: &[&str] =
    &["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "DEEPGRAM_API_KEY", "INWORLD_API_KEY"];

impl Config {
    /// Loads the layers. `config_path` is `--config`, else `NIXFLEX_CONFIG`, else `./nixflex.toml`
    /// if it exists.
    ///
    /// # Errors
    /// Unknown keys, wrong types, or invalid values, naming the layer at fault.
    pub fn load(config_path: Option<&Path>, flags: &FlagOverrides) -> anyhow::Result<Self> {
        let path = config_path
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("NIXFLEX_CONFIG").map(PathBuf::from));
        let mut figment = Figment::new();
        match path {
            Some(path) => {
                if !path.exists() {
                    bail!("config file {} does not exist", path.display());
                }
                figment = figment.merge(Toml::file_exact(path));
            }
            None => figment = figment.merge(Toml::file("nixflex.toml")),
        }
        figment = figment
            .merge(Env::raw().only(PROVIDER_KEY_VARS))
            .merge(
                Env::prefixed("NIXFLEX_")
                    .ignore(&["config"])
                    .filter(|key| !key.as_str().to_ascii_lowercase().starts_with("test_")),
            )
            .merge(Serialized::globals(flags));
        let config: Config = figment.extract().map_err(|error| {
            anyhow::anyhow!("invalid configuration: {}", error.to_string().replace('\n', "; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values beyond their types.
    ///
    /// # Errors
    /// The first invalid value.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.listen_addr()?;
        self.metrics_addr()?;
        if let Some(token) = &self.metrics_token
            && token.expose_secret().len() < 16
        {
            bail!("metrics_token must be at least 16 characters");
        }
        if self.outage_message.trim().is_empty() || self.outage_message.chars().count() > 500 {
            bail!("outage_message must be 1 to 500 characters");
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:"))
        {
            bail!("database_url must start with postgres:// (or sqlite:)");
        }
        if let Some(public) = &self.public_url {
            let parsed = url::Url::parse(public).context("public_url is not a valid URL")?;
            if !matches!(parsed.scheme(), "https" | "http") {
                bail!("public_url must be an https URL");
            }
        }
        if let Some(key) = &self.master_key {
            nixflex_core::crypto::SecretBox::from_encoded(key.expose_secret())
                .context("master_key")?;
        }
        for (name, value) in [
            ("signups_per_hour", self.signups_per_hour),
            ("rate_limit_reads_per_minute", self.rate_limit_reads_per_minute),
            ("rate_limit_writes_per_minute", self.rate_limit_writes_per_minute),
            ("rate_limit_anonymous_per_minute", self.rate_limit_anonymous_per_minute),
            ("max_concurrent_calls", self.max_concurrent_calls),
        ] {
            if value < 1 {
                bail!("{name} must be at least 1");
            }
        }
        if !(self.price_per_minute_usd.is_finite() && self.price_per_minute_usd >= 0.0) {
            bail!("price_per_minute_usd must be a number of at least 0");
        }
        if !(10..=10_000).contains(&self.rate_limit_sync_ms) {
            bail!("rate_limit_sync_ms must be between 10 and 10000");
        }
        if self.max_body_bytes < 1024 {
            bail!("max_body_bytes must be at least 1024");
        }
        if self.header_read_timeout_ms < 100 {
            bail!("header_read_timeout_ms must be at least 100");
        }
        if self.max_connections < 1 {
            bail!("max_connections must be at least 1");
        }
        if self.request_timeout_ms < 100 {
            bail!("request_timeout_ms must be at least 100");
        }
        self.validate_jobs()?;
        self.validate_recordings()?;
        for (name, value) in [
            ("twilio_api_base", &self.twilio_api_base),
            ("anthropic_base_url", &self.anthropic_base_url),
            ("openai_base_url", &self.openai_base_url),
            ("deepgram_url", &self.deepgram_url),
            ("inworld_url", &self.inworld_url),
        ] {
            url::Url::parse(value).with_context(|| format!("{name} is not a valid URL"))?;
        }
        Ok(())
    }

    /// The listen address.
    ///
    /// # Errors
    /// When `listen` is not `host:port`.
    fn validate_jobs(&self) -> anyhow::Result<()> {
        if !(1..=256).contains(&self.jobs_concurrency) {
            bail!("jobs_concurrency must be between 1 and 256");
        }
        if !(1..=100).contains(&self.webhook_max_attempts) {
            bail!("webhook_max_attempts must be between 1 and 100");
        }
        if self.webhook_retry_delays_ms.is_empty() || self.webhook_retry_delays_ms.len() > 32 {
            bail!("webhook_retry_delays_ms must list 1 to 32 delays");
        }
        if !(1..=100).contains(&self.jobs_max_attempts) {
            bail!("jobs_max_attempts must be between 1 and 100");
        }
        for (name, value, min) in [
            ("jobs_poll_ms", self.jobs_poll_ms, 10),
            ("jobs_lease_ms", self.jobs_lease_ms, 300),
            ("jobs_backoff_base_ms", self.jobs_backoff_base_ms, 1),
            ("jobs_sweep_ms", self.jobs_sweep_ms, 100),
        ] {
            if value < min {
                bail!("{name} must be at least {min}");
            }
        }
        if self.jobs_backoff_cap_ms < self.jobs_backoff_base_ms {
            bail!("jobs_backoff_cap_ms must be at least jobs_backoff_base_ms");
        }
        if let Some(node_id) = &self.node_id
            && (node_id.is_empty()
                || node_id.len() > 100
                || !node_id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)))
        {
            bail!("node_id must be 1-100 characters of letters, digits, `-`, `_`, `.` or `:`");
        }
        Ok(())
    }

    fn validate_recordings(&self) -> anyhow::Result<()> {
        if self.recording_url_ttl_secs < 60 || self.recording_url_ttl_secs > 7 * 86_400 {
            bail!("recording_url_ttl_secs must be between 60 and 604800 (7 days)");
        }
        if self.recording_wait_secs > 86_400 {
            bail!("recording_wait_secs must be at most 86400 (a day)");
        }
        if !(100..=3_600_000).contains(&self.recording_recheck_ms) {
            bail!("recording_recheck_ms must be between 100 and 3600000 (an hour)");
        }
        if self.outbound_queue_timeout_secs == 0 || self.outbound_queue_timeout_secs > 7 * 86_400 {
            bail!("outbound_queue_timeout_secs must be between 1 and 604800 (7 days)");
        }
        if !(100..=600_000).contains(&self.outbound_dial_recheck_ms) {
            bail!("outbound_dial_recheck_ms must be between 100 and 600000 (10 minutes)");
        }
        if !(0.01..=10_000.0).contains(&self.sms_campaign_rate_per_second) {
            bail!("sms_campaign_rate_per_second must be between 0.01 and 10000");
        }
        if !(self.campaign_calls_per_second.is_finite()
            && (0.01..=1000.0).contains(&self.campaign_calls_per_second))
        {
            bail!("campaign_calls_per_second must be between 0.01 and 1000");
        }
        if !(50..=60_000).contains(&self.campaign_tick_ms) {
            bail!("campaign_tick_ms must be between 50 and 60000");
        }
        if self.campaign_reconcile_after_ms < self.twilio_request_timeout_ms.saturating_add(2000)
            || self.campaign_reconcile_after_ms > 86_400_000
        {
            bail!(
                "campaign_reconcile_after_ms must be at least twilio_request_timeout_ms + 2000 \
                 (a lookup must never race a dial request in flight) and at most 86400000"
            );
        }
        if self.recording_storage == RecordingStorage::S3 {
            for (name, set) in [
                ("recording_s3_bucket", self.recording_s3_bucket.is_some()),
                ("recording_s3_access_key", self.recording_s3_access_key.is_some()),
                ("recording_s3_secret_key", self.recording_s3_secret_key.is_some()),
            ] {
                if !set {
                    bail!("recording_storage = \"s3\" needs {name}");
                }
            }
        }
        if let Some(endpoint) = &self.recording_s3_endpoint {
            url::Url::parse(endpoint).context("recording_s3_endpoint is not a valid URL")?;
        }
        Ok(())
    }

    /// The directory of `local` recordings.
    pub fn recordings_dir(&self) -> PathBuf {
        self.recordings_dir.clone().unwrap_or_else(|| self.data_dir.join("recordings"))
    }

    /// The job worker's settings.
    pub fn worker_config(&self, stale_after: Option<Duration>) -> nixflex_jobs::WorkerConfig {
        nixflex_jobs::WorkerConfig {
            node_id: self.node_id.clone().unwrap_or_else(nixflex_jobs::default_node_id),
            concurrency: self.jobs_concurrency,
            poll_interval: Duration::from_millis(self.jobs_poll_ms),
            lease: Duration::from_millis(self.jobs_lease_ms),
            max_attempts: self.jobs_max_attempts,
            backoff_base: Duration::from_millis(self.jobs_backoff_base_ms),
            backoff_cap: Duration::from_millis(self.jobs_backoff_cap_ms),
            stale_after,
            sweep_every: Duration::from_millis(self.jobs_sweep_ms),
            keep_done: (self.jobs_keep_done_hours > 0)
                .then(|| Duration::from_secs(self.jobs_keep_done_hours.saturating_mul(3600))),
            ..nixflex_jobs::WorkerConfig::default()
        }
    }

    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listen.parse().with_context(|| {
            format!("listen `{}` is not an address like 127.0.0.1:8080", self.listen)
        })
    }

    /// The address of the separate metrics listener, if one is configured.
    ///
    /// # Errors
    /// When `metrics_listen` is not `host:port`.
    pub fn metrics_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        self.metrics_listen
            .as_deref()
            .map(|listen| {
                listen.parse().with_context(|| {
                    format!("metrics_listen `{listen}` is not an address like 127.0.0.1:9090")
                })
            })
            .transpose()
    }

    /// The database URL in effect (SQLite under `data_dir` unless `database_url` is set).
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("nixflex.db").display()),
        }
    }

    /// Whether the database is PostgreSQL.
    pub fn uses_postgres(&self) -> bool {
        self.effective_database_url().starts_with("postgres")
    }

    /// The voice catalogue in use.
    pub fn tts_kind(&self) -> TtsProviderKind {
        self.tts_provider.kind()
    }

    /// Request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// How often request counts are reconciled with the database (docs/api.md#rate-limits).
    pub fn rate_limit_sync(&self) -> Duration {
        Duration::from_millis(self.rate_limit_sync_ms)
    }

    /// The effective configuration with every secret redacted (and database passwords removed).
    pub fn redacted(&self) -> Value {
        let secret = |s: &Option<SecretString>| match s {
            Some(_) => json!("[redacted]"),
            None => Value::Null,
        };
        let mut printed = json!({
            "listen": self.listen,
            "data_dir": self.data_dir.display().to_string(),
            "database_url": redact_url(&self.effective_database_url()),
            "database_max_connections": self.database_max_connections,
            "public_url": self.public_url,
            "master_key": match &self.master_key { Some(_) => json!("[redacted]"), None => json!("(generated in data_dir)") },
            "signup": self.signup,
            "signups_per_hour": self.signups_per_hour,
            "rate_limit_reads_per_minute": self.rate_limit_reads_per_minute,
            "rate_limit_writes_per_minute": self.rate_limit_writes_per_minute,
            "rate_limit_anonymous_per_minute": self.rate_limit_anonymous_per_minute,
            "rate_limit_sync_ms": self.rate_limit_sync_ms,
            "max_concurrent_calls": self.max_concurrent_calls,
            "outbound_queue_timeout_secs": self.outbound_queue_timeout_secs,
            "outbound_dial_recheck_ms": self.outbound_dial_recheck_ms,
            "sms_campaign_rate_per_second": self.sms_campaign_rate_per_second,
            "price_per_minute_usd": self.price_per_minute_usd,
            "trust_forwarded_for": self.trust_forwarded_for,
            "max_body_bytes": self.max_body_bytes,
            "request_timeout_ms": self.request_timeout_ms,
            "shutdown_grace_ms": self.shutdown_grace_ms,
            "drain_timeout_ms": self.drain_timeout_ms,
            "header_read_timeout_ms": self.header_read_timeout_ms,
            "max_connections": self.max_connections,
            "allow_private_targets": self.allow_private_targets,
            "log_format": self.log_format,
            "log_level": self.log_level,
            "twilio_api_base": self.twilio_api_base,
            "twilio_request_timeout_ms": self.twilio_request_timeout_ms,
            "llm_provider": self.llm_provider,
            "anthropic_base_url": self.anthropic_base_url,
            "anthropic_api_key": secret(&self.anthropic_api_key),
            "openai_base_url": self.openai_base_url,
            "openai_api_key": secret(&self.openai_api_key),
            "stt_provider": self.stt_provider,
            "deepgram_url": self.deepgram_url,
            "deepgram_api_key": secret(&self.deepgram_api_key),
            "tts_provider": self.tts_provider,
            "inworld_url": self.inworld_url,
            "inworld_api_key": secret(&self.inworld_api_key),
            "recording_retention_days": self.recording_retention_days,
        });
        // The campaign settings (their own object, for the same reason).
        if let (Some(printed), Value::Object(campaigns)) = (
            printed.as_object_mut(),
            json!({
                "campaign_calls_per_second": self.campaign_calls_per_second,
                "campaign_tick_ms": self.campaign_tick_ms,
                "campaign_reconcile_after_ms": self.campaign_reconcile_after_ms,
            }),
        ) {
            printed.extend(campaigns);
        }
        // The provider-outage settings (another object, for the same reason).
        if let Some(printed) = printed.as_object_mut() {
            printed.insert("llm_fallback".to_owned(), json!(self.llm_fallback));
            printed.insert("tts_fallback".to_owned(), json!(self.tts_fallback));
            printed.insert("stt_fallback".to_owned(), json!(self.stt_fallback));
            printed.insert(
                "openai_transcription_model".to_owned(),
                json!(self.openai_transcription_model),
            );
            printed.insert("outage_message".to_owned(), json!(self.outage_message));
            printed.insert("metrics_listen".to_owned(), json!(self.metrics_listen));
            printed.insert("metrics_token".to_owned(), secret(&self.metrics_token));
        }
        // The recording settings (a third object, for the same reason).
        if let (Some(printed), Value::Object(recordings)) = (
            printed.as_object_mut(),
            json!({
                "recording_storage": self.recording_storage,
                "recordings_dir": self.recordings_dir().display().to_string(),
                "recording_s3_bucket": self.recording_s3_bucket,
                "recording_s3_endpoint": self.recording_s3_endpoint,
                "recording_s3_region": self.recording_s3_region,
                "recording_s3_access_key": self.recording_s3_access_key,
                "recording_s3_secret_key": secret(&self.recording_s3_secret_key),
                "recording_url_ttl_secs": self.recording_url_ttl_secs,
                "delete_carrier_recordings": self.delete_carrier_recordings,
            }),
        ) {
            printed.extend(recordings);
        }
        // The job settings (a second object: one literal this long exceeds `json!`'s recursion).
        if let (Some(printed), Value::Object(jobs)) = (
            printed.as_object_mut(),
            json!({
                "node_id": self.node_id,
                "jobs_concurrency": self.jobs_concurrency,
                "jobs_poll_ms": self.jobs_poll_ms,
                "jobs_lease_ms": self.jobs_lease_ms,
                "jobs_max_attempts": self.jobs_max_attempts,
                "jobs_backoff_base_ms": self.jobs_backoff_base_ms,
                "jobs_backoff_cap_ms": self.jobs_backoff_cap_ms,
                "jobs_sweep_ms": self.jobs_sweep_ms,
                "jobs_keep_done_hours": self.jobs_keep_done_hours,
                "webhook_retry_delays_ms": self.webhook_retry_delays_ms,
                "webhook_max_attempts": self.webhook_max_attempts,
            }),
        ) {
            printed.extend(jobs);
        }
        printed
    }
}

/// Removes the password from a URL.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        _ => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords_when_printed() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/nixflex"),
            "postgres://app:redacted@db:5432/nixflex"
        );
        assert_eq!(redact_url("sqlite://./x.db"), "sqlite://./x.db");
    }

    #[test]
    fn redacted_config_never_contains_secret_values() {
        let config = Config {
            master_key: Some(SecretString::from("ab".repeat(32))),
            anthropic_api_key: Some(SecretString::from("sk-ant-verysecret")),
            database_url: Some("postgres://u:pw123@h/db".to_owned()),
            ..Config::default()
        };
        let printed = config.redacted().to_string();
        assert!(!printed.contains("verysecret"));
        assert!(!printed.contains("abab"));
        assert!(!printed.contains("pw123"));
        assert!(printed.contains("\"jobs_concurrency\":8"), "{printed}");
    }

    #[test]
    fn job_settings_are_validated() {
        let bad = |tweak: fn(&mut Config)| {
            let mut config = Config::default();
            tweak(&mut config);
            config.validate().expect_err("invalid").to_string()
        };
        assert!(bad(|c| c.jobs_concurrency = 0).contains("jobs_concurrency"));
        assert!(bad(|c| c.jobs_max_attempts = 0).contains("jobs_max_attempts"));
        assert!(bad(|c| c.jobs_lease_ms = 10).contains("jobs_lease_ms"));
        assert!(bad(|c| c.jobs_poll_ms = 0).contains("jobs_poll_ms"));
        assert!(bad(|c| c.rate_limit_sync_ms = 0).contains("rate_limit_sync_ms"));
        assert!(bad(|c| c.jobs_backoff_cap_ms = 1).contains("jobs_backoff_cap_ms"));
        assert!(bad(|c| c.node_id = Some("a b".to_owned())).contains("node_id"));
        Config::default().validate().expect("defaults are valid");
    }

    #[test]
    fn metrics_options_load_from_the_file_are_checked_and_the_token_is_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nixflex.toml");
        std::fs::write(
            &path,
            "metrics_listen = \"127.0.0.1:9091\"\nmetrics_token = \"metrics-token-0123456789\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&path), &FlagOverrides::default()).unwrap();
        assert_eq!(config.metrics_addr().unwrap(), Some("127.0.0.1:9091".parse().unwrap()));
        assert_eq!(
            config.metrics_token.as_ref().map(ExposeSecret::expose_secret),
            Some("metrics-token-0123456789")
        );
        let printed = config.redacted().to_string();
        assert!(!printed.contains("metrics-token-0123456789"), "{printed}");
        assert!(printed.contains("\"metrics_token\":\"[redacted]\""), "{printed}");
        assert!(printed.contains("\"metrics_listen\":\"127.0.0.1:9091\""), "{printed}");
        assert_eq!(Config::default().metrics_addr().unwrap(), None);

        let bad = |tweak: fn(&mut Config)| {
            let mut config = Config::default();
            tweak(&mut config);
            config.validate().expect_err("invalid").to_string()
        };
        assert!(
            bad(|c| c.metrics_listen = Some("localhost".to_owned())).contains("metrics_listen")
        );
        assert!(
            bad(|c| c.metrics_token = Some(SecretString::from("short"))).contains("metrics_token")
        );
    }
}
