//! What happens after a call (docs/engine.md#post-call-analysis, docs/engine.md#webhooks), as
//! the steps the durable job queue runs:
//!
//! 1. [`FollowUp::call_ended`]: analyse the call (when it is worth it), store the analysis, note
//!    what the caller wanted on their caller-context record, and name the webhook deliveries to
//!    queue — one per distinct target. A provider failure is retried by the queue; on the last
//!    attempt the call goes on without analysis, so the webhook is never held up by the LLM.
//!    When the agent has post-call texts on, it also queues the call's `sms.post_call` job
//!    (docs/sms.md#post-call-texts).
//! 2. [`FollowUp::deliver`]: one attempt at one webhook delivery, signed with the account's key
//!    secrets, 10 s timeout, the SSRF rule checked on the resolved address, and every attempt
//!    recorded on the call. Network errors, timeouts, 429 and 5xx are worth retrying; a refused
//!    target or another 4xx is not.
//!
//! The job queue itself (leases, back-off, dead jobs) knows nothing of calls; the composition root
//! maps these results onto it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nixflex_core::call::CallRecord;
use nixflex_core::crypto::SecretBox;
use nixflex_core::ids::{self, AccountId, CallId};
use nixflex_pipeline::llm::LlmProvider;
use nixflex_providers::customer::{CustomerHttp, CustomerHttpError};
use nixflex_store::{CallAnalysis, Store, StoreError, WebhookDelivery};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::analysis::{self, AnalysisError};
use crate::recordings::Recordings;
use crate::webhook::{self, Event};

/// How often `call.ended` looks again, by default, for a carrier recording it waits for (the
/// recording's arrival makes it due at once; this catches a recording stored while the
/// follow-up itself was running).
const RECORDING_RECHECK: Duration = Duration::from_secs(1);

/// How long a receiver has to answer a webhook.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// How a step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowUpError {
    /// Worth another attempt later.
    #[error("{0}")]
    Retryable(String),
    /// Will never succeed.
    #[error("{0}")]
    Permanent(String),
    /// Too early: run the step again at this time (it waits for something, e.g. the carrier's
    /// recording); not a failure.
    #[error("not yet; run again at {0}")]
    NotYet(DateTime<Utc>),
}

impl From<StoreError> for FollowUpError {
    fn from(error: StoreError) -> Self {
        Self::Retryable(format!("storage: {error}"))
    }
}

/// One webhook to deliver: the payload of a delivery job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookJob {
    /// The call the event is about.
    pub call_id: String,
    /// Its account (whose key secrets sign the request).
    pub account_id: String,
    /// `call.completed`, `call.started`, `webhook.test`.
    pub event: String,
    /// The receiver.
    pub url: String,
}

impl WebhookJob {
    /// The key that makes queuing this delivery idempotent.
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}:{}", self.event, self.call_id, self.url)
    }

    fn event(&self) -> Result<Event, FollowUpError> {
        match self.event.as_str() {
            "call.completed" => Ok(Event::CallCompleted),
            "call.started" => Ok(Event::CallStarted),
            "webhook.test" => Ok(Event::Test),
            other => Err(FollowUpError::Permanent(format!("unknown webhook event `{other}`"))),
        }
    }
}

/// The post-call steps, with what they need.
#[derive(Debug, Clone)]
pub struct FollowUp {
    store: Arc<dyn Store>,
    llm: Arc<dyn LlmProvider>,
    customer: CustomerHttp,
    secrets: SecretBox,
    recordings: Option<Recordings>,
    /// How long `call.ended` waits for a carrier recording after the call ended.
    recording_wait: Duration,
    recording_recheck: Duration,
    /// Queues the post-call text (docs/sms.md#post-call-texts); `None` sends none.
    sms: Option<crate::sms::Sms>,
}

impl FollowUp {
    /// The steps over this store, LLM, customer-endpoint client and master key.
    pub fn new(
        store: Arc<dyn Store>,
        llm: Arc<dyn LlmProvider>,
        customer: CustomerHttp,
        secrets: SecretBox,
    ) -> Self {
        Self {
            store,
            llm,
            customer,
            secrets,
            recordings: None,
            recording_wait: Duration::from_secs(120),
            recording_recheck: RECORDING_RECHECK,
            sms: None,
        }
    }

    /// The same steps, queueing the post-call text through this SMS service.
    #[must_use]
    pub fn with_sms(mut self, sms: Option<crate::sms::Sms>) -> Self {
        self.sms = sms;
        self
    }

    /// The same steps, with recordings (their links go into `call.completed`).
    #[must_use]
    pub fn with_recordings(mut self, recordings: Option<Recordings>) -> Self {
        self.recordings = recordings;
        self
    }

    /// The same steps, waiting up to `wait` after a call ended for its carrier recording.
    #[must_use]
    pub fn with_recording_wait(mut self, wait: Duration) -> Self {
        self.recording_wait = wait;
        self
    }

    /// The same steps, looking again every `recheck` while they wait for a carrier recording
    /// (the recording's arrival also makes the waiting follow-up due at once).
    #[must_use]
    pub fn with_recording_recheck(mut self, recheck: Duration) -> Self {
        self.recording_recheck = recheck;
        self
    }

    /// When the call still waits for its carrier recording (docs/recordings.md#carrier-recordings):
    /// the time to look again, never past `recording_wait` after the call ended. `None` when
    /// there is nothing to wait for, or the wait is over (then the webhooks go out without it).
    async fn waits_for_recording(
        &self,
        call: &CallRecord,
    ) -> Result<Option<DateTime<Utc>>, FollowUpError> {
        let Some(recordings) = &self.recordings else { return Ok(None) };
        if call.recording.is_some() {
            return Ok(None);
        }
        let pending = recordings
            .pending_carrier_recording(&call.call_id)
            .await
            .map_err(|e| FollowUpError::Retryable(format!("recordings: {e}")))?;
        let Some(recording_sid) = pending else { return Ok(None) };
        let ended = call.ended_at.unwrap_or(call.updated_at);
        let wait = chrono::Duration::from_std(self.recording_wait).unwrap_or(chrono::Duration::MAX);
        let deadline = ended.checked_add_signed(wait).unwrap_or(DateTime::<Utc>::MAX_UTC);
        let now = nixflex_store::now();
        if now >= deadline {
            tracing::warn!(message = "The carrier recording did not arrive in time; the call's webhooks go out without it.", call_id = %call.call_id, recording_sid = %recording_sid);
            return Ok(None);
        }
        let recheck = now + chrono::Duration::from_std(self.recording_recheck).unwrap_or_default();
        Ok(Some(recheck.min(deadline)))
    }

    /// The `call.ended` step for `call_id`. `last_attempt` says the queue will not retry: an
    /// analysis that fails then is given up and the webhooks go out without it.
    ///
    /// # Errors
    /// [`FollowUpError::Retryable`] when storage or (before the last attempt) the LLM failed;
    /// [`FollowUpError::Permanent`] never for a call that exists; [`FollowUpError::NotYet`] while
    /// the call waits for its carrier recording (so `call.completed` carries it).
    pub async fn call_ended(
        &self,
        call_id: &CallId,
        last_attempt: bool,
    ) -> Result<Vec<WebhookJob>, FollowUpError> {
        let Some(call) = self.store.find_call(call_id).await? else {
            // Deleted before its follow-up ran: nothing to do.
            return Ok(Vec::new());
        };
        if let Some(again) = self.waits_for_recording(&call).await? {
            return Err(FollowUpError::NotYet(again));
        }
        let agent = match &call.agent_id {
            Some(agent_id) => {
                self.store.get_agent(&call.account_id, agent_id).await?.map(|(agent, _)| agent)
            }
            None => None,
        };
        if let Some(agent) = &agent
            && analysis::should_analyse(&call)
            && call.call_summary.is_none()
        {
            let request = analysis::request(&agent.settings, &call);
            match analysis::analyse(&*self.llm, request, &agent.settings.data_extraction_fields)
                .await
            {
                Ok(found) => self.store_analysis(&call, found).await?,
                Err(AnalysisError::Provider(error)) if error.retryable && !last_attempt => {
                    return Err(FollowUpError::Retryable(format!("analysis: {error}")));
                }
                Err(error) => {
                    tracing::warn!(message = "Post-call analysis gave up; webhooks go out without it.", call_id = %call.call_id, error = %error);
                }
            }
        }
        // After the analysis (the template may use the summary), before the webhooks; keyed by
        // the call, so a re-run queues nothing more.
        if let (Some(sms), Some(agent)) = (&self.sms, &agent)
            && let Some(job) = sms.post_call_job(&call, agent)?
        {
            self.store.enqueue_job(&job).await?;
        }
        self.deliveries(&call, agent.as_ref(), Event::CallCompleted).await
    }

    /// The `call.started` step: the webhook deliveries to queue for a call that connected.
    ///
    /// # Errors
    /// [`FollowUpError::Retryable`] when storage failed.
    pub async fn call_started(&self, call_id: &CallId) -> Result<Vec<WebhookJob>, FollowUpError> {
        let Some(call) = self.store.find_call(call_id).await? else { return Ok(Vec::new()) };
        let agent = match &call.agent_id {
            Some(agent_id) => {
                self.store.get_agent(&call.account_id, agent_id).await?.map(|(agent, _)| agent)
            }
            None => None,
        };
        self.deliveries(&call, agent.as_ref(), Event::CallStarted).await
    }

    /// One delivery of `event` per distinct URL among the agent's and the number's.
    async fn deliveries(
        &self,
        call: &CallRecord,
        agent: Option<&nixflex_core::agent::Agent>,
        event: Event,
    ) -> Result<Vec<WebhookJob>, FollowUpError> {
        let number = self.store.find_active_number(&business_number(call).into()).await?;
        let urls = webhook::targets([
            agent.and_then(|a| a.settings.webhook_url.as_deref()),
            number.as_ref().and_then(|n| n.webhook_url.as_deref()),
            number.as_ref().and_then(|n| n.webhook2_url.as_deref()),
        ]);
        Ok(urls
            .into_iter()
            .map(|url| WebhookJob {
                call_id: call.call_id.to_string(),
                account_id: call.account_id.to_string(),
                event: event.as_str().to_owned(),
                url,
            })
            .collect())
    }

    async fn store_analysis(
        &self,
        call: &CallRecord,
        found: analysis::Analysis,
    ) -> Result<(), FollowUpError> {
        let stored = CallAnalysis {
            call_summary: found.call_summary.clone(),
            caller_sentiment: found.caller_sentiment.map(|s| s.as_str().to_owned()),
            call_successful: found.call_successful,
            extracted_data: found.extracted_data.clone(),
        };
        self.store.record_analysis(&call.call_id, &stored).await?;
        // The caller's context remembers what they wanted and what is still open, for the next
        // call or text from them.
        let mut notes = Map::new();
        if let Some(wanted) = found.last_call {
            notes.insert("last_call".to_owned(), Value::String(wanted));
        }
        notes.insert("open_item".to_owned(), found.open_item.map_or(Value::Null, Value::String));
        if let Some(name) = found.caller_name {
            let known = self
                .store
                .get_caller(&business_number(call).into(), caller_number(call))
                .await?
                .is_some_and(|c| c.context.contains_key("name"));
            if !known {
                notes.insert("name".to_owned(), Value::String(name));
            }
        }
        self.store
            .upsert_callers(
                &business_number(call).into(),
                &[(caller_number(call).to_owned(), notes)],
                nixflex_store::now(),
            )
            .await?;
        Ok(())
    }

    /// One attempt (`attempt`, from 1) at delivering `job`; the attempt is recorded on the call.
    ///
    /// # Errors
    /// [`FollowUpError::Retryable`] for network errors, timeouts, 429 and 5xx;
    /// [`FollowUpError::Permanent`] for a refused target or another non-2xx answer.
    pub async fn deliver(&self, job: &WebhookJob, attempt: i64) -> Result<(), FollowUpError> {
        let event = job.event()?;
        let call_id = CallId::from(job.call_id.as_str());
        let Some(call) = self.store.find_call(&call_id).await? else {
            return Ok(()); // The call was deleted: nobody is told about it any more.
        };
        let payload = match event {
            Event::CallStarted => webhook::started_payload(&call),
            Event::CallCompleted | Event::Test => {
                let recording_url = match (&self.recordings, &call.recording) {
                    (Some(recordings), Some(_)) => {
                        Some(recordings.url(&call.call_id, nixflex_store::now()))
                    }
                    _ => None,
                };
                webhook::completed_payload(event, &call, recording_url.as_deref())
            }
        };
        let event_id = webhook::event_id(event, call.call_id.as_str());
        let secrets = self.account_secrets(&AccountId::from(job.account_id.as_str())).await?;
        let started = Instant::now();
        let sent = self
            .customer
            .post_signed_with(
                &job.url,
                &payload,
                &secrets,
                WEBHOOK_TIMEOUT,
                &[(webhook::EVENT_ID_HEADER, event_id.as_str())],
            )
            .await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (status_code, outcome) = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let outcome = if response.status().is_success() {
                    Ok(())
                } else if status == 429 || status >= 500 {
                    Err(FollowUpError::Retryable(format!("HTTP {status}")))
                } else {
                    Err(FollowUpError::Permanent(format!("HTTP {status}")))
                };
                (Some(i64::from(status)), outcome)
            }
            Err(CustomerHttpError::Forbidden(why)) => {
                (None, Err(FollowUpError::Permanent(format!("target not allowed: {why}"))))
            }
            Err(CustomerHttpError::Request(error)) => {
                let what = if error.is_timeout() { "timed out" } else { "could not connect" };
                (None, Err(FollowUpError::Retryable(what.to_owned())))
            }
        };
        let record = WebhookDelivery {
            delivery_id: ids::new_delivery_id(),
            call_id: call.call_id.clone(),
            event: event.as_str().to_owned(),
            event_id,
            url: job.url.clone(),
            attempt,
            attempted_at: nixflex_store::now(),
            status_code,
            latency_ms: Some((latency_ms * 10.0).round() / 10.0),
            error: outcome.as_ref().err().map(ToString::to_string),
            delivered: outcome.is_ok(),
        };
        if let Err(error) = self.store.record_webhook_delivery(&record).await {
            tracing::warn!(message = "Could not record a webhook attempt.", error = %error);
        }
        outcome
    }

    /// The raw secrets of the account's active keys (receivers verify with any of them).
    async fn account_secrets(&self, account_id: &AccountId) -> Result<Vec<String>, FollowUpError> {
        let keys = self.store.active_keys(account_id).await?;
        Ok(keys.iter().filter_map(|k| self.secrets.open(&k.secret_sealed).ok()).collect())
    }
}

/// The business side of a call: the number called (inbound) or calling (outbound).
pub(crate) fn business_number(call: &CallRecord) -> String {
    match call.direction {
        nixflex_core::call::Direction::Inbound => call.to_number.clone(),
        nixflex_core::call::Direction::Outbound => call.from_number.clone(),
    }
}

/// The other side of a call.
fn caller_number(call: &CallRecord) -> &str {
    match call.direction {
        nixflex_core::call::Direction::Inbound => &call.from_number,
        nixflex_core::call::Direction::Outbound => &call.to_number,
    }
}
