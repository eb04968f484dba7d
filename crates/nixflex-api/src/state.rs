//! Shared state of the HTTP layer.

use std::sync::Arc;
use std::time::Duration;

use nixflex_core::agent::AgentValidation;
use nixflex_core::catalog::TtsProviderKind;
use nixflex_core::crypto::SecretBox;
use nixflex_engine::Engine;
use nixflex_providers::twilio::TwilioClient;

use nixflex_store::Store;

use crate::agent_json::AgentJsonCache;
use crate::key_cache::KeyCache;
use crate::outbound::CustomerHttp;
use crate::rate_limiter::RateLimiter;

/// What the API layer needs from the configuration.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Whether `POST /v1/keys` without a key creates accounts.
    pub signup_open: bool,
    /// Sign-ups per client IP per hour.
    pub signups_per_hour: i64,
    /// Default read requests per account per minute.
    pub reads_per_minute: i64,
    /// Default write requests per account per minute.
    pub writes_per_minute: i64,
    /// Requests per minute per client IP without a valid key.
    pub anonymous_per_minute: i64,
    /// Window of the per-minute limits in seconds (60; tests may lengthen it).
    pub rate_limit_window: i64,
    /// Take the client IP from `X-Forwarded-For` (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Longest a request may run.
    pub request_timeout: Duration,
    /// Which voice catalogue applies.
    pub tts_provider: TtsProviderKind,
    /// Whether webhook/function URLs may be http or private (local testing).
    pub allow_private_targets: bool,
    /// The public base URL the carrier calls back (`NIXFLEX_PUBLIC_URL`), without a trailing `/`.
    pub public_url: Option<String>,
    /// What a connected minute costs, for `GET /v1/usage` (0 by default: self-hosting bills
    /// nothing).
    pub price_per_minute_usd: f64,
}

impl ApiConfig {
    /// The agent validation rules that follow from this config.
    pub fn agent_rules(&self) -> AgentValidation {
        AgentValidation {
            tts: self.tts_provider,
            allow_private_targets: self.allow_private_targets,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            signup_open: true,
            signups_per_hour: 10,
            reads_per_minute: 600,
            writes_per_minute: 120,
            anonymous_per_minute: 600,
            rate_limit_window: 60,
            trust_forwarded_for: false,
            max_body_bytes: 8 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            tts_provider: TtsProviderKind::Inworld,
            allow_private_targets: false,
            public_url: None,
            price_per_minute_usd: 0.0,
        }
    }
}

/// Everything a handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    secrets: SecretBox,
    config: ApiConfig,
    twilio: TwilioClient,
    engine: Engine,
    customer: CustomerHttp,
    /// Verified keys of this node (docs/security.md#key-cache).
    key_cache: KeyCache,
    /// Request counters of this node (docs/api.md#rate-limits).
    rate_limiter: RateLimiter,
    /// Encoded agents per (id, version) (docs/decisions.md#api-line-rate).
    agent_json: AgentJsonCache,
}

impl AppState {
    /// Builds the state.
    pub fn new(
        store: Arc<dyn Store>,
        secrets: SecretBox,
        config: ApiConfig,
        twilio: TwilioClient,
        engine: Engine,
        customer: CustomerHttp,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                secrets,
                config,
                twilio,
                engine,
                customer,
                key_cache: KeyCache::new(),
                rate_limiter: RateLimiter::new(),
                agent_json: AgentJsonCache::new(),
            }),
        }
    }

    /// This node's cache of verified keys; its epoch poller runs in the binary.
    pub fn key_cache(&self) -> &KeyCache {
        &self.inner.key_cache
    }

    /// This node's encoded agents.
    pub fn agent_json(&self) -> &AgentJsonCache {
        &self.inner.agent_json
    }

    /// This node's request counters; their sync with the database runs in the binary.
    pub fn rate_limiter(&self) -> &RateLimiter {
        &self.inner.rate_limiter
    }

    /// The call engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The client for the customer's own endpoints.
    pub fn customer(&self) -> &CustomerHttp {
        &self.inner.customer
    }

    /// The Twilio REST client (credentials are passed per call).
    pub fn twilio(&self) -> &TwilioClient {
        &self.inner.twilio
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        &*self.inner.store
    }

    /// The secret box (master key).
    pub fn secrets(&self) -> &SecretBox {
        &self.inner.secrets
    }

    /// The configuration.
    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }
}
