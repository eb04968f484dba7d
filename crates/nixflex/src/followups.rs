//! The job handlers that run a call's follow-up (docs/jobs.md, docs/engine.md#webhooks): the
//! engine's post-call steps mapped onto the durable queue.
//!
//! - `call.ended` (queued with the call's final update, in one transaction): analysis, caller
//!   context, then one `webhook.deliver` job per distinct webhook URL, each queued once (its
//!   idempotency key names the event, the call and the URL), so a re-run never doubles a delivery.
//! - `call.started` (queued when the media stream starts): one `webhook.deliver` job per URL for
//!   the `call.started` event.
//! - `recording.fetch` (queued by the carrier's recording status callback): download the
//!   carrier's recording, store it, and delete the carrier's copy when configured to
//!   (docs/recordings.md#carrier-recordings). A `call.ended` whose call waits for that recording
//!   is run again later without spending an attempt, up to `recording_wait_secs`.
//! - `call.dial` (queued with an outbound call): the capacity queue's dial step
//!   (docs/engine.md#capacity-queue).
//! - `webhook.deliver`: one attempt per run, retried on its own schedule (30 s, 2 min, 10 min,
//!   1 h, then every 6 h, by default) until it is delivered or its attempts run out (about a day).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nixflex_engine::Engine;
use nixflex_engine::carrier_recording::{CarrierRecordings, RECORDING_FETCH, RecordingFetch};
use nixflex_engine::followup::{FollowUp, FollowUpError, WebhookJob};
use nixflex_jobs::{JobError, Registry};
use nixflex_store::{CALL_DIAL, CALL_ENDED, CALL_STARTED, NewJob, Store};

/// The job kind of one webhook delivery.
pub const WEBHOOK_DELIVER: &str = "webhook.deliver";

/// How webhook deliveries are retried.
#[derive(Debug, Clone)]
pub struct WebhookRetries {
    /// The delay after each failed attempt; the last one repeats.
    pub delays: Vec<Duration>,
    /// Attempts before a delivery is given up (dead).
    pub max_attempts: i64,
}

fn job_error(error: FollowUpError) -> JobError {
    match error {
        FollowUpError::Retryable(why) => JobError::Retryable(why),
        FollowUpError::Permanent(why) => JobError::Permanent(why),
        FollowUpError::NotYet(at) => JobError::RunAgainAt(at),
    }
}

/// Queues one `webhook.deliver` job per delivery (each once: its key names event, call and URL).
async fn queue_deliveries(
    store: &dyn Store,
    deliveries: Vec<WebhookJob>,
    max_attempts: i64,
) -> Result<(), JobError> {
    for delivery in deliveries {
        let payload = serde_json::to_value(&delivery)
            .map_err(|e| JobError::Permanent(format!("payload: {e}")))?;
        let job = NewJob::new(WEBHOOK_DELIVER, &delivery.idempotency_key(), payload, max_attempts);
        store
            .enqueue_job(&job)
            .await
            .map_err(|e| JobError::Retryable(format!("queueing a webhook: {e}")))?;
    }
    Ok(())
}

/// Registers the follow-up handlers (replacing the built-in `call.ended`).
pub fn register(
    registry: &mut Registry,
    store: Arc<dyn Store>,
    follow_up: FollowUp,
    retries: WebhookRetries,
) {
    let max_attempts = retries.max_attempts;
    let wake = registry.wake();
    for kind in [CALL_ENDED, CALL_STARTED] {
        let store = store.clone();
        let steps = follow_up.clone();
        let wake = wake.clone();
        registry.register(kind, move |job| {
            let store = store.clone();
            let steps = steps.clone();
            let wake = wake.clone();
            async move {
                let call_id =
                    job.payload.get("call_id").and_then(serde_json::Value::as_str).ok_or_else(
                        || JobError::Permanent("payload has no `call_id`".to_owned()),
                    )?;
                let deliveries = if job.kind == CALL_STARTED {
                    steps.call_started(&call_id.into()).await
                } else {
                    let last_attempt = job.attempts >= job.max_attempts;
                    steps.call_ended(&call_id.into(), last_attempt).await
                }
                .map_err(job_error)?;
                // The deliveries, and a text the call's end may have queued, are this worker's
                // to run now.
                let queued = !deliveries.is_empty() || job.kind == CALL_ENDED;
                queue_deliveries(&*store, deliveries, max_attempts).await?;
                if queued {
                    wake.wake();
                }
                if job.kind == CALL_ENDED {
                    // An outbound call's purpose is kept only until its follow-up has run
                    // (docs/decisions.md#outbound-purpose).
                    store.erase_call_purpose(&call_id.into()).await.map_err(|e| {
                        JobError::Retryable(format!("erasing the call purpose: {e}"))
                    })?;
                }
                Ok(())
            }
        });
    }
    registry.register_with_schedule(WEBHOOK_DELIVER, &retries.delays, move |job| {
        let steps = follow_up.clone();
        async move {
            let delivery: WebhookJob = serde_json::from_value(job.payload.clone())
                .map_err(|e| JobError::Permanent(format!("payload: {e}")))?;
            steps.deliver(&delivery, job.attempts).await.map_err(job_error)
        }
    });
}

/// Registers `call.dial`, the capacity queue's dial step (docs/engine.md#capacity-queue): the
/// engine dials the account's oldest queued calls while it is under its cap; the job of a call
/// still waiting runs again later without spending an attempt.
pub fn register_dial(registry: &mut Registry, engine: Arc<OnceLock<Engine>>) {
    registry.register(CALL_DIAL, move |job| {
        let engine = engine.clone();
        async move {
            let field = |name: &str| {
                job.payload
                    .get(name)
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| JobError::Permanent(format!("payload has no `{name}`")))
            };
            let (call_id, account_id) = (field("call_id")?, field("account_id")?);
            let Some(engine) = engine.get() else {
                return Err(JobError::Retryable("the engine is not started yet".to_owned()));
            };
            engine.dial_queued(&call_id.into(), &account_id.into()).await.map_err(job_error)
        }
    });
}

/// Registers `recording.fetch` (docs/recordings.md#carrier-recordings).
pub fn register_recordings(registry: &mut Registry, carrier: CarrierRecordings) {
    let wake = registry.wake();
    registry.register(RECORDING_FETCH, move |job| {
        let carrier = carrier.clone();
        let wake = wake.clone();
        async move {
            let fetch: RecordingFetch = serde_json::from_value(job.payload.clone())
                .map_err(|e| JobError::Permanent(format!("payload: {e}")))?;
            carrier.fetch(&fetch).await.map_err(job_error)?;
            // The call's follow-up, made due if it waited for this recording.
            wake.wake();
            Ok(())
        }
    });
}

/// Registers `sms.reply` (docs/sms.md#inbound-texts), the agent's answer to one inbound text,
/// and `sms.post_call` (docs/sms.md#post-call-texts), one call's post-call text.
/// Registers `campaign.run`, a voice campaign's scheduler (docs/campaigns.md); the scheduler
/// needs the engine, set once it is built.
pub fn register_campaigns(
    registry: &mut Registry,
    campaigns: Arc<OnceLock<nixflex_engine::campaigns::Campaigns>>,
) {
    registry.register(nixflex_store::CAMPAIGN_RUN, move |job| {
        let campaigns = campaigns.clone();
        async move {
            let field = |name: &str| {
                job.payload
                    .get(name)
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| JobError::Permanent(format!("payload has no `{name}`")))
            };
            let (campaign_id, account_id) = (field("campaign_id")?, field("account_id")?);
            let Some(campaigns) = campaigns.get() else {
                return Err(JobError::Retryable("the engine is not started yet".to_owned()));
            };
            campaigns.run(&campaign_id, &account_id.into()).await.map_err(job_error)
        }
    });
}

pub fn register_sms(registry: &mut Registry, sms: nixflex_engine::sms::Sms) {
    let post_call = sms.clone();
    registry.register(nixflex_engine::sms::SMS_POST_CALL, move |job| {
        let sms = post_call.clone();
        async move {
            let post_call: nixflex_engine::sms::PostCallJob =
                serde_json::from_value(job.payload.clone())
                    .map_err(|e| JobError::Permanent(format!("payload: {e}")))?;
            sms.post_call(&post_call).await.map_err(job_error)
        }
    });
    registry.register(nixflex_engine::sms::SMS_REPLY, move |job| {
        let sms = sms.clone();
        async move {
            let reply: nixflex_engine::sms::ReplyJob = serde_json::from_value(job.payload.clone())
                .map_err(|e| JobError::Permanent(format!("payload: {e}")))?;
            sms.reply(&reply).await.map_err(job_error)
        }
    });
}

/// Registers `sms.campaign` (docs/sms.md#campaigns): one run sends a slice of the campaign at
/// the number's pace and hands over to the next run without spending an attempt.
pub fn register_sms_campaigns(
    registry: &mut Registry,
    campaigns: nixflex_engine::sms_campaign::SmsCampaigns,
) {
    registry.register(nixflex_engine::sms_campaign::SMS_CAMPAIGN, move |job| {
        let campaigns = campaigns.clone();
        async move {
            let run: nixflex_engine::sms_campaign::CampaignJob =
                serde_json::from_value(job.payload.clone())
                    .map_err(|e| JobError::Permanent(format!("payload: {e}")))?;
            campaigns.run(&run).await.map_err(job_error)
        }
    });
}
