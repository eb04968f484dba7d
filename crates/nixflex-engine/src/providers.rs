//! A call's providers (docs/engine.md#provider-outages): an ordered chain per stage, resolved
//! when the session starts. A request goes to the stage's current provider; a quick, retryable
//! failure (connect error, 429, 5xx) is retried once at once, any other failure — or a second
//! one — moves the call to the next provider of the chain for the rest of the call. Every retry,
//! switch and give-up is kept as a [`ProviderEvent`] for the call record; the session writes
//! them through its recorder, so nothing here waits on the database.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use nixflex_core::call::ProviderEvent;
use nixflex_core::catalog::{self, TtsProviderKind};
use nixflex_pipeline::ProviderError;
use nixflex_pipeline::ProviderErrorKind;
use nixflex_pipeline::llm::{LlmEvent, LlmProvider, LlmRequest, LlmStream};
use nixflex_pipeline::stt::SttProvider;
use nixflex_pipeline::tts::{TtsProvider, TtsRequest, TtsStream};
use tokio::time::Instant;

use crate::engine::Providers;

/// How long the model may take to send its first event before the next provider is asked:
/// with the end-of-turn wait, a caller whose model hangs hears the fallback's answer within
/// about 2 s (docs/benchmarks.md#provider-outages). Real first tokens come well within it.
pub const LLM_FIRST_EVENT_TIMEOUT: Duration = Duration::from_millis(1700);
/// How long speech synthesis may take to send its first audio before the next provider is asked.
pub const TTS_FIRST_BYTE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Longest pause inside a stream (between two events or audio chunks) before it counts as
/// stalled.
pub const STALL_TIMEOUT: Duration = Duration::from_millis(2000);
/// A failure this soon after the request was sent leaves time to try the same provider again
/// within the turn.
const RETRY_WINDOW: Duration = Duration::from_millis(1000);

/// A pipeline stage that has providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderStage {
    /// The language model.
    Llm,
    /// Speech recognition.
    Stt,
    /// Speech synthesis.
    Tts,
}

impl ProviderStage {
    /// The API value (`provider_events[].stage`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llm => "llm",
            Self::Stt => "stt",
            Self::Tts => "tts",
        }
    }
}

/// The `kind` label of `nixflex_provider_errors_total` (docs/operations.md#metrics).
fn error_kind(kind: ProviderErrorKind) -> &'static str {
    match kind {
        ProviderErrorKind::Auth => "auth",
        ProviderErrorKind::RateLimited => "rate_limited",
        ProviderErrorKind::Timeout => "timeout",
        ProviderErrorKind::Upstream { .. } => "upstream",
        ProviderErrorKind::Protocol => "protocol",
        ProviderErrorKind::Transport => "transport",
        ProviderErrorKind::Cancelled => "cancelled",
        ProviderErrorKind::NotConfigured => "not_configured",
    }
}

/// A stage that could not produce what the turn needed.
#[derive(Debug, Clone)]
pub(crate) struct StageFailure {
    /// The last error.
    pub(crate) error: ProviderError,
    /// The provider that failed last.
    pub(crate) provider: &'static str,
    /// True when the stage is down for sure: the last provider of the chain failed before
    /// producing anything, and could not be reached at all (connection refused or reset,
    /// rejected credentials, not configured). A timeout or an error status is not enough: the
    /// next, different request may still work.
    pub(crate) exhausted: bool,
}

/// One speech-synthesis provider of a call's chain, with the call's voice in its catalogue.
#[derive(Debug, Clone)]
struct TtsLink {
    provider: Arc<dyn TtsProvider>,
    voice: String,
}

/// The providers of one call, shared by its session and its turn tasks.
#[derive(Debug)]
pub(crate) struct CallProviders {
    llm: Vec<Arc<dyn LlmProvider>>,
    tts: Vec<TtsLink>,
    stt: Vec<Arc<dyn SttProvider>>,
    llm_at: AtomicUsize,
    tts_at: AtomicUsize,
    stt_at: AtomicUsize,
    events: Mutex<Vec<ProviderEvent>>,
    answered: Instant,
}

/// The provider voice of `voice_id` in the catalogue of `kind`: the catalogue's own mapping,
/// the id as given for the primary provider (a provider voice id used directly), or the
/// catalogue's first voice for a fallback provider that does not know it.
fn voice_for(kind: TtsProviderKind, voice_id: &str, primary: bool) -> String {
    if let Some(voice) = catalog::find_voice(kind, voice_id) {
        return voice.provider_voice_id.to_owned();
    }
    if primary {
        return voice_id.to_owned();
    }
    catalog::voices(kind)
        .first()
        .map_or_else(|| voice_id.to_owned(), |v| v.provider_voice_id.to_owned())
}

impl CallProviders {
    /// The chains of a call whose agent speaks with `voice_id`; `answered` is the zero of the
    /// events' `at_ms`. The account's own LLM and voice, when it set them, come first: the
    /// server's providers are then its fallbacks (docs/providers.md#bring-your-own-llm-and-tts).
    pub(crate) fn new(
        providers: &Providers,
        voice_id: &str,
        answered: Instant,
        account_llm: Option<Arc<dyn LlmProvider>>,
        account_tts: Option<(Arc<dyn TtsProvider>, String)>,
    ) -> Self {
        let mut llm: Vec<Arc<dyn LlmProvider>> = account_llm.into_iter().collect();
        llm.push(providers.llm.clone());
        llm.extend(providers.llm_fallbacks.iter().cloned());
        let mut tts: Vec<TtsLink> =
            account_tts.into_iter().map(|(provider, voice)| TtsLink { provider, voice }).collect();
        tts.push(TtsLink {
            provider: providers.tts.clone(),
            voice: voice_for(providers.tts_kind, voice_id, true),
        });
        tts.extend(providers.tts_fallbacks.iter().map(|(provider, kind)| TtsLink {
            provider: provider.clone(),
            voice: voice_for(*kind, voice_id, false),
        }));
        let mut stt = vec![providers.stt.clone()];
        stt.extend(providers.stt_fallbacks.iter().cloned());
        Self {
            llm,
            tts,
            stt,
            llm_at: AtomicUsize::new(0),
            tts_at: AtomicUsize::new(0),
            stt_at: AtomicUsize::new(0),
            events: Mutex::new(Vec::new()),
            answered,
        }
    }

    /// The events so far, for the call record.
    pub(crate) fn events(&self) -> Vec<ProviderEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Whether anything happened worth recording.
    pub(crate) fn has_events(&self) -> bool {
        self.events.lock().is_ok_and(|e| !e.is_empty())
    }

    /// The speech recogniser at `index` of the chain.
    pub(crate) fn stt_at(&self, index: usize) -> Arc<dyn SttProvider> {
        self.stt[index.min(self.stt.len() - 1)].clone()
    }

    /// The name of the speech recogniser at `index`.
    pub(crate) fn stt_name(&self, index: usize) -> &'static str {
        self.stt[index.min(self.stt.len() - 1)].name()
    }

    /// Whether a recogniser follows the one at `index`.
    pub(crate) fn stt_has_next(&self, index: usize) -> bool {
        index + 1 < self.stt.len()
    }

    /// The recogniser at `index` failed: the rest of the call uses the next one, recorded as a
    /// switch. `None` when it was the last.
    pub(crate) fn stt_switch(&self, index: usize, error: &ProviderError) -> Option<usize> {
        if !self.stt_has_next(index) {
            return None;
        }
        let next = index + 1;
        let _ = self.stt_at.compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
        self.record(
            ProviderStage::Stt,
            self.stt_name(index),
            "switched",
            Some(self.stt_name(next)),
            Some(error),
        );
        Some(next)
    }

    /// Records an event.
    pub(crate) fn record(
        &self,
        stage: ProviderStage,
        provider: &str,
        event: &str,
        to: Option<&str>,
        error: Option<&ProviderError>,
    ) {
        let at_ms = u64::try_from(self.answered.elapsed().as_millis()).unwrap_or(u64::MAX);
        let entry = ProviderEvent {
            at_ms,
            stage: stage.as_str().to_owned(),
            provider: provider.to_owned(),
            event: event.to_owned(),
            to: to.map(str::to_owned),
            error: error.map(|e| e.kind.to_string()).unwrap_or_default(),
        };
        tracing::warn!(
            message = "Provider event.",
            stage = stage.as_str(),
            provider,
            event,
            to,
            error = error.map(tracing::field::display)
        );
        if let Some(error) = error {
            nixflex_metrics::provider_error(stage.as_str(), provider, error_kind(error.kind));
        }
        if let Ok(mut events) = self.events.lock() {
            events.push(entry);
        }
    }

    /// Starts a model response through the chain; returns the stream, its first event and
    /// the provider's index.
    pub(crate) async fn open_llm(
        &self,
        request: &LlmRequest,
    ) -> Result<(LlmStream, Option<LlmEvent>, usize), StageFailure> {
        let names: Vec<&'static str> = self.llm.iter().map(|p| p.name()).collect();
        through_chain(
            self,
            ProviderStage::Llm,
            &self.llm_at,
            &names,
            LLM_FIRST_EVENT_TIMEOUT,
            |index| {
                let provider = self.llm[index].clone();
                let request = request.clone();
                async move { provider.stream(request).await }
            },
        )
        .await
    }

    /// Starts synthesising `request` (its voice is replaced by each provider's) through the
    /// chain; returns the stream, its first chunk and the provider's index.
    pub(crate) async fn open_tts(
        &self,
        request: &TtsRequest,
    ) -> Result<(TtsStream, Option<bytes::Bytes>, usize), StageFailure> {
        let names: Vec<&'static str> = self.tts.iter().map(|l| l.provider.name()).collect();
        through_chain(
            self,
            ProviderStage::Tts,
            &self.tts_at,
            &names,
            TTS_FIRST_BYTE_TIMEOUT,
            |index| {
                let link = self.tts[index].clone();
                let mut request = request.clone();
                request.voice_id = link.voice.clone();
                async move { link.provider.synthesize(request).await }
            },
        )
        .await
    }

    /// A stream of the provider at `index` failed after it had produced something: the turn
    /// fails, and the call moves to the next provider (if any) for the rest of the call.
    pub(crate) fn failed_mid_stream(
        &self,
        stage: ProviderStage,
        index: usize,
        error: &ProviderError,
    ) -> StageFailure {
        let (at, names): (&AtomicUsize, Vec<&'static str>) = match stage {
            ProviderStage::Llm => (&self.llm_at, self.llm.iter().map(|p| p.name()).collect()),
            ProviderStage::Tts | ProviderStage::Stt => {
                (&self.tts_at, self.tts.iter().map(|l| l.provider.name()).collect())
            }
        };
        let provider = names[index];
        if index + 1 < names.len() {
            let _ = at.compare_exchange(index, index + 1, Ordering::Relaxed, Ordering::Relaxed);
            self.record(stage, provider, "switched", Some(names[index + 1]), Some(error));
        } else {
            self.record(stage, provider, "failed", None, Some(error));
        }
        StageFailure { error: error.clone(), provider, exhausted: false }
    }
}

/// Sends a request to the stage's current provider, retrying a quick retryable failure once
/// and moving down the chain otherwise, until one produces its first item in time.
async fn through_chain<S, T, F, Fut>(
    providers: &CallProviders,
    stage: ProviderStage,
    at: &AtomicUsize,
    names: &[&'static str],
    first_timeout: Duration,
    open: F,
) -> Result<(S, Option<T>, usize), StageFailure>
where
    S: Stream<Item = Result<T, ProviderError>> + Unpin,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<S, ProviderError>>,
{
    let mut index = at.load(Ordering::Relaxed).min(names.len() - 1);
    let mut retried = false;
    loop {
        let sent = Instant::now();
        let attempt = async {
            let mut stream = open(index).await?;
            match stream.next().await {
                Some(Ok(first)) => Ok((stream, Some(first))),
                Some(Err(error)) => Err(error),
                None => Ok((stream, None)),
            }
        };
        let outcome = match tokio::time::timeout(first_timeout, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(ProviderError::timeout("no first response in time")),
        };
        let error = match outcome {
            Ok((stream, first)) => return Ok((stream, first, index)),
            Err(error) => error,
        };
        let name = names[index];
        if error.kind == ProviderErrorKind::Cancelled {
            return Err(StageFailure { error, provider: name, exhausted: false });
        }
        if !retried
            && error.retryable
            && error.kind != ProviderErrorKind::Timeout
            && sent.elapsed() < RETRY_WINDOW
        {
            retried = true;
            providers.record(stage, name, "retried", None, Some(&error));
            continue;
        }
        if index + 1 < names.len() {
            let next = index + 1;
            // Sticky: the rest of the call uses the next provider (unless a concurrent request
            // already moved it further).
            let _ = at.compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
            providers.record(stage, name, "switched", Some(names[next]), Some(&error));
            index = next;
            retried = false;
            continue;
        }
        providers.record(stage, name, "failed", None, Some(&error));
        let unreachable = matches!(
            error.kind,
            ProviderErrorKind::Transport
                | ProviderErrorKind::Auth
                | ProviderErrorKind::NotConfigured
        );
        return Err(StageFailure { error, provider: name, exhausted: unreachable });
    }
}

/// The next item of a stream, or a timeout error when it stalls.
pub(crate) async fn next_or_stall<S, T>(stream: &mut S) -> Option<Result<T, ProviderError>>
where
    S: Stream<Item = Result<T, ProviderError>> + Unpin,
{
    match tokio::time::timeout(STALL_TIMEOUT, stream.next()).await {
        Ok(item) => item,
        Err(_) => Some(Err(ProviderError::timeout("the stream stalled"))),
    }
}
