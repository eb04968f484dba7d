//! Accounts' own LLM and speech provider (`/v1/account/llm`, `/v1/account/tts`;
//! docs/providers.md#bring-your-own-llm-and-tts): building their clients from the stored
//! settings, checking them with a real request before they are saved, and a per-account cache.
//!
//! The cache keeps one client per account so its connection pool is reused across calls. An
//! entry is trusted for [`CACHE_TTL`]; after that the next lookup reads the settings row again
//! (one primary-key select) and rebuilds the client only when the row changed. `PUT` and
//! `DELETE` on this node drop the entry at once ([`Engine::forget_account_providers`]); other
//! nodes see the change within [`CACHE_TTL`], without any node-to-node message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use nixflex_core::ids::AccountId;
use nixflex_pipeline::ProviderError;
use nixflex_pipeline::llm::{
    ContentPart, LlmEvent, LlmMessage, LlmProvider, LlmRequest, LlmStream, Role, ToolSpec,
};
use nixflex_pipeline::tts::{TtsProvider, TtsRequest};
use nixflex_providers::llm::openai::{OpenAiChatClient, OpenAiChatConfig};
use nixflex_providers::tts::cartesia::{CartesiaClient, CartesiaConfig};
use nixflex_providers::tts::elevenlabs::{ElevenLabsClient, ElevenLabsConfig};
use secrecy::SecretString;
use tokio::time::Instant;

use crate::Engine;

/// How long a cached client is used before its settings are read again.
pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// The name of the tool the LLM check makes the model call.
pub const CHECK_TOOL: &str = "connection_check";

/// The speech providers an account may bring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByoTtsKind {
    /// ElevenLabs (docs/protocols.md#elevenlabs-tts).
    ElevenLabs,
    /// Cartesia (docs/protocols.md#cartesia-tts).
    Cartesia,
}

impl ByoTtsKind {
    /// `elevenlabs` → ElevenLabs, `cartesia` → Cartesia.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "elevenlabs" => Some(Self::ElevenLabs),
            "cartesia" => Some(Self::Cartesia),
            _ => None,
        }
    }

    /// The API and database name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ElevenLabs => "elevenlabs",
            Self::Cartesia => "cartesia",
        }
    }
}

/// Where the bring-your-own speech providers are reached: their public APIs, or emulators in
/// tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByoTtsUrls {
    /// ElevenLabs' base URL (without `/v1`).
    pub elevenlabs: String,
    /// Cartesia's base URL.
    pub cartesia: String,
}

impl Default for ByoTtsUrls {
    fn default() -> Self {
        Self {
            elevenlabs: ElevenLabsConfig::default().base_url,
            cartesia: CartesiaConfig::default().base_url,
        }
    }
}

/// Why a provider's check failed, in words for the account (never containing the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailed(pub String);

/// The account's OpenAI-compatible server with its model: every request is sent with the
/// account's model, whatever the agent asked for.
#[derive(Debug)]
struct AccountModel {
    client: OpenAiChatClient,
    model: String,
}

#[async_trait::async_trait]
impl LlmProvider for AccountModel {
    fn name(&self) -> &'static str {
        "account-llm"
    }

    async fn stream(&self, mut request: LlmRequest) -> Result<LlmStream, ProviderError> {
        request.model.clone_from(&self.model);
        self.client.stream(request).await
    }
}

struct Cached<T> {
    checked: Instant,
    /// `updated_at` of the row the value was built from (`None`: no row).
    version: Option<DateTime<Utc>>,
    value: Option<T>,
}

type CachedTts = (Arc<dyn TtsProvider>, String);

/// The per-account clients.
#[derive(Default)]
pub(crate) struct ByoCache {
    llm: Mutex<HashMap<String, Cached<Arc<dyn LlmProvider>>>>,
    tts: Mutex<HashMap<String, Cached<CachedTts>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A fresh entry's value, or why the row must be read again.
fn fresh<T: Clone>(
    map: &Mutex<HashMap<String, Cached<T>>>,
    account: &str,
) -> Result<Option<T>, Option<DateTime<Utc>>> {
    match lock(map).get(account) {
        Some(entry) if entry.checked.elapsed() < CACHE_TTL => Ok(entry.value.clone()),
        Some(entry) => Err(entry.version),
        None => Err(None),
    }
}

fn keep<T: Clone>(
    map: &Mutex<HashMap<String, Cached<T>>>,
    account: &str,
    version: Option<DateTime<Utc>>,
    build: impl FnOnce() -> Option<T>,
) -> Option<T> {
    let mut map = lock(map);
    let reuse = map
        .get(account)
        .filter(|entry| entry.version == version && entry.value.is_some() == version.is_some())
        .map(|entry| entry.value.clone());
    let value = match reuse {
        Some(value) => value,
        None => build(),
    };
    map.insert(
        account.to_owned(),
        Cached { checked: Instant::now(), version, value: value.clone() },
    );
    value
}

impl Engine {
    fn provider_http(&self, connect_timeout: Duration) -> Result<reqwest::Client, ProviderError> {
        nixflex_providers::customer::provider_http(
            self.customer().allows_private(),
            connect_timeout,
        )
        .map_err(|error| {
            ProviderError::not_configured(format!("cannot build HTTP client: {error}"))
        })
    }

    /// A client for an OpenAI-compatible server at `endpoint` (its base URL including `/v1`)
    /// that always asks for `model`. The endpoint must pass the outbound-URL rules (https,
    /// public) unless the server allows private targets; names are resolved to public
    /// addresses only.
    ///
    /// # Errors
    /// `NotConfigured` when the endpoint is not allowed or the client cannot be built.
    pub fn build_account_llm(
        &self,
        endpoint: &str,
        model: &str,
        api_key: SecretString,
    ) -> Result<Arc<dyn LlmProvider>, ProviderError> {
        nixflex_core::validate::outbound_url(
            "endpoint",
            endpoint,
            self.customer().allows_private(),
        )
        .map_err(|error| ProviderError::not_configured(error.message))?;
        let config = OpenAiChatConfig {
            base_url: endpoint.to_owned(),
            api_key: Some(api_key),
            ..OpenAiChatConfig::default()
        };
        let http = self.provider_http(config.connect_timeout)?;
        let client = OpenAiChatClient::with_http_client(config, http);
        Ok(Arc::new(AccountModel { client, model: model.to_owned() }))
    }

    /// A client for the account's speech provider.
    ///
    /// # Errors
    /// `NotConfigured` when the client cannot be built.
    pub fn build_account_tts(
        &self,
        kind: ByoTtsKind,
        api_key: SecretString,
    ) -> Result<Arc<dyn TtsProvider>, ProviderError> {
        let urls = &self.config().byo_tts_urls;
        Ok(match kind {
            ByoTtsKind::ElevenLabs => {
                let config = ElevenLabsConfig {
                    base_url: urls.elevenlabs.clone(),
                    api_key: Some(api_key),
                    ..ElevenLabsConfig::default()
                };
                let http = self.provider_http(config.connect_timeout)?;
                Arc::new(ElevenLabsClient::with_http_client(config, http))
            }
            ByoTtsKind::Cartesia => {
                let config = CartesiaConfig {
                    base_url: urls.cartesia.clone(),
                    api_key: Some(api_key),
                    ..CartesiaConfig::default()
                };
                let http = self.provider_http(config.connect_timeout)?;
                Arc::new(CartesiaClient::with_http_client(config, http))
            }
        })
    }

    /// Checks an account's LLM with a real completion that must call a tool (the model is made
    /// to call [`CHECK_TOOL`]), then the tool's result sent back for a final answer: the round
    /// trip a call's functions need. A model without tool calling fails the check.
    ///
    /// # Errors
    /// [`CheckFailed`] saying what the server answered.
    pub async fn check_account_llm(&self, llm: &dyn LlmProvider) -> Result<(), CheckFailed> {
        let tool = ToolSpec {
            name: CHECK_TOOL.to_owned(),
            description: "Confirms the connection works. Call it with ok=true.".to_owned(),
            input_schema: serde_json::json!({
                "type": "object",
                "properties": {"ok": {"type": "boolean"}},
                "required": ["ok"],
            }),
        };
        let mut request = LlmRequest::new(
            String::new(),
            vec![LlmMessage::user("This is a connection check. Call the tool with ok=true.")],
        );
        request.max_tokens = 64;
        request.tools = vec![tool];
        request.tool_choice = Some(CHECK_TOOL.to_owned());
        let first = collect(llm, request.clone()).await?;
        let Some((id, arguments)) = first.tool_call else {
            return Err(CheckFailed(format!(
                "the model answered without calling the `{CHECK_TOOL}` tool it was required to call; a model with tool calling is needed"
            )));
        };
        let input = serde_json::from_str(&arguments).unwrap_or(serde_json::Value::Null);
        request.tool_choice = None;
        request.messages.push(LlmMessage {
            role: Role::Assistant,
            content: vec![ContentPart::ToolUse {
                id: id.clone(),
                name: CHECK_TOOL.to_owned(),
                input,
            }],
        });
        request.messages.push(LlmMessage {
            role: Role::User,
            content: vec![ContentPart::ToolResult {
                tool_use_id: id,
                content: "{\"ok\": true}".to_owned(),
                is_error: false,
            }],
        });
        let second = collect(llm, request).await?;
        if second.text.trim().is_empty() && second.tool_call.is_none() {
            return Err(CheckFailed("the model gave no answer after the tool's result".to_owned()));
        }
        Ok(())
    }

    /// Checks an account's speech provider with one real, short synthesis in `voice_id`: it
    /// must produce audio.
    ///
    /// # Errors
    /// [`CheckFailed`] saying what the provider answered.
    pub async fn check_account_tts(
        &self,
        tts: &dyn TtsProvider,
        voice_id: &str,
    ) -> Result<(), CheckFailed> {
        let failed = |error: ProviderError| CheckFailed(error.to_string());
        let mut stream =
            tts.synthesize(TtsRequest::new("Hello.", voice_id)).await.map_err(failed)?;
        let mut bytes = 0;
        while let Some(chunk) = stream.next().await {
            bytes += chunk.map_err(failed)?.len();
        }
        if bytes == 0 {
            return Err(CheckFailed("the provider answered with no audio".to_owned()));
        }
        Ok(())
    }

    /// The account's own LLM, if it set one and its key can be opened; built once and cached
    /// (see the module documentation). Failures to read or build are logged and treated as no
    /// provider, so a call falls back to the server's LLM.
    pub async fn account_llm(&self, account_id: &AccountId) -> Option<Arc<dyn LlmProvider>> {
        let cache = &self.byo_cache().llm;
        if let Ok(value) = fresh(cache, account_id.as_str()) {
            return value;
        }
        let row = match self.store().account_llm(account_id).await {
            Ok(row) => row,
            Err(error) => {
                tracing::warn!(message = "Reading the account's LLM failed.", account_id = %account_id, %error);
                return None;
            }
        };
        let version = row.as_ref().map(|row| row.updated_at);
        keep(cache, account_id.as_str(), version, || {
            let row = row?;
            let key = self.open_key(account_id, &row.api_key_sealed)?;
            self.build_account_llm(&row.endpoint, &row.model, key)
                .inspect_err(|error| {
                    tracing::warn!(message = "The account's LLM cannot be used.", account_id = %account_id, %error);
                })
                .ok()
        })
    }

    /// The account's own speech provider and its voice id, if it set one; cached like
    /// [`Engine::account_llm`].
    pub async fn account_tts(
        &self,
        account_id: &AccountId,
    ) -> Option<(Arc<dyn TtsProvider>, String)> {
        let cache = &self.byo_cache().tts;
        if let Ok(value) = fresh(cache, account_id.as_str()) {
            return value;
        }
        let row = match self.store().account_tts(account_id).await {
            Ok(row) => row,
            Err(error) => {
                tracing::warn!(message = "Reading the account's speech provider failed.", account_id = %account_id, %error);
                return None;
            }
        };
        let version = row.as_ref().map(|row| row.updated_at);
        keep(cache, account_id.as_str(), version, || {
            let row = row?;
            let Some(kind) = ByoTtsKind::parse(&row.provider) else {
                tracing::warn!(message = "The account's speech provider is unknown.", account_id = %account_id, provider = %row.provider);
                return None;
            };
            let key = self.open_key(account_id, &row.api_key_sealed)?;
            let client = self
                .build_account_tts(kind, key)
                .inspect_err(|error| {
                    tracing::warn!(message = "The account's speech provider cannot be used.", account_id = %account_id, %error);
                })
                .ok()?;
            Some((client, row.voice_id))
        })
    }

    /// Drops this node's cached clients of an account (after its settings changed).
    pub fn forget_account_providers(&self, account_id: &AccountId) {
        lock(&self.byo_cache().llm).remove(account_id.as_str());
        lock(&self.byo_cache().tts).remove(account_id.as_str());
    }

    fn open_key(&self, account_id: &AccountId, sealed: &str) -> Option<SecretString> {
        match self.secrets().open(sealed) {
            Ok(key) => Some(SecretString::from(key)),
            Err(error) => {
                tracing::warn!(message = "An account's provider key cannot be opened with this master key.", account_id = %account_id, %error);
                None
            }
        }
    }
}

/// What one check request produced.
struct Answer {
    text: String,
    tool_call: Option<(String, String)>,
}

async fn collect(llm: &dyn LlmProvider, request: LlmRequest) -> Result<Answer, CheckFailed> {
    let failed = |error: ProviderError| CheckFailed(error.to_string());
    let mut stream = llm.stream(request).await.map_err(failed)?;
    let mut answer = Answer { text: String::new(), tool_call: None };
    let mut done = false;
    while let Some(event) = stream.next().await {
        match event.map_err(failed)? {
            LlmEvent::TextDelta(piece) => answer.text.push_str(&piece),
            LlmEvent::ToolCall { id, name, arguments_json } if name == CHECK_TOOL => {
                answer.tool_call.get_or_insert((id, arguments_json));
            }
            LlmEvent::ToolCall { .. } => {}
            LlmEvent::Done { .. } => done = true,
        }
    }
    if done {
        Ok(answer)
    } else {
        Err(CheckFailed("the answer ended before it was complete".to_owned()))
    }
}
