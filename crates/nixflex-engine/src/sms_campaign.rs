//! The SMS campaign sender (docs/sms.md#campaigns): one durable `sms.campaign` job per campaign.
//!
//! Each run of the job:
//! 1. waits for a scheduled campaign's `scheduled_at` (the job runs again then, without
//!    spending an attempt), then marks it `running`;
//! 2. finishes the recipients an earlier run claimed but did not record (a crash): each is
//!    reconciled with Twilio before anything is sent ([`Sms::reconcile`]);
//! 3. claims the next queued recipients (the claim is committed before any of them is texted;
//!    a cancelled campaign has nothing left to claim), reserves their send slots on the sending
//!    number (shared by every node, so the pace holds however many campaigns and nodes send
//!    from it), and texts each at its slot through [`Sms::send`] under the recipient's send key;
//! 4. after `slice` it hands over to a fresh run of itself (due at once, no attempt spent), so
//!    one campaign never holds a worker for hours and a restart resumes where it stopped;
//! 5. when no recipient is left, marks the campaign `done` (or `failed` when no text could be
//!    handed to Twilio).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use nixflex_core::ids::E164;
use nixflex_core::number::PhoneNumber;
use nixflex_core::sms::SmsSource;
use nixflex_store::{NewJob, SmsCampaignRecipient, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::followup::FollowUpError;
use crate::sms::{Outgoing, SendError, Sms};

/// The job kind that sends one SMS campaign.
pub const SMS_CAMPAIGN: &str = "sms.campaign";

/// The payload of an `sms.campaign` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignJob {
    /// The campaign.
    pub campaign_id: String,
}

/// The idempotency key of a campaign's job.
pub fn campaign_job_key(campaign_id: &str) -> String {
    format!("{SMS_CAMPAIGN}:{campaign_id}")
}

/// The campaign's sender job, due at `run_at`.
pub fn campaign_job(
    campaign_id: &str,
    run_at: chrono::DateTime<chrono::Utc>,
    max_attempts: i64,
) -> NewJob {
    let mut job = NewJob::new(
        SMS_CAMPAIGN,
        campaign_id,
        serde_json::json!({"campaign_id": campaign_id}),
        max_attempts,
    );
    job.run_at = run_at;
    job
}

/// How campaigns are sent.
#[derive(Debug, Clone)]
pub struct CampaignConfig {
    /// Texts per second from one sending number (every node together).
    pub rate_per_second: f64,
    /// How long one run of a campaign's job sends before handing over to the next run.
    pub slice: Duration,
    /// Texts in flight at once (to keep a raised pace despite Twilio's latency).
    pub concurrency: usize,
}

impl Default for CampaignConfig {
    fn default() -> Self {
        Self { rate_per_second: 1.0, slice: Duration::from_secs(20), concurrency: 32 }
    }
}

/// The campaign sender; cheap to clone.
#[derive(Clone)]
pub struct SmsCampaigns {
    store: Arc<dyn Store>,
    sms: Sms,
    config: CampaignConfig,
}

impl std::fmt::Debug for SmsCampaigns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsCampaigns").field("config", &self.config).finish_non_exhaustive()
    }
}

fn store_error(error: StoreError) -> FollowUpError {
    FollowUpError::Retryable(format!("storage: {error}"))
}

/// What became of one recipient.
enum Outcome {
    /// Recorded (sent, opted out or failed).
    Recorded,
    /// Twilio could not be reached or answered with a transient error: left claimed, so the
    /// next run reconciles it before sending.
    Unsure(String),
}

impl SmsCampaigns {
    /// The sender over this store and SMS service.
    pub fn new(store: Arc<dyn Store>, sms: Sms, config: CampaignConfig) -> Self {
        Self { store, sms, config }
    }

    /// The pacing interval between two texts of one number.
    fn interval(&self) -> chrono::Duration {
        let micros = (1_000_000.0 / self.config.rate_per_second.max(0.001)).round();
        // At most one text per microsecond; the float is positive and bounded above.
        #[allow(clippy::cast_possible_truncation)]
        chrono::Duration::microseconds((micros as i64).max(1))
    }

    /// Texts claimed and paced at once: about one second's worth, at least one.
    fn batch_size(&self) -> i64 {
        #[allow(clippy::cast_possible_truncation)]
        let per_second = self.config.rate_per_second.ceil() as i64;
        per_second.clamp(1, 500)
    }

    /// One run of a campaign's job (see the module docs).
    ///
    /// # Errors
    /// `NotYet` to wait for the schedule or hand over to the next run; `Retryable` for storage
    /// or Twilio failures (claimed recipients are reconciled by the next run).
    pub async fn run(&self, job: &CampaignJob) -> Result<(), FollowUpError> {
        let store = &self.store;
        let Some(campaign) =
            store.find_sms_campaign(&job.campaign_id).await.map_err(store_error)?
        else {
            return Ok(());
        };
        let now = nixflex_store::now();
        match campaign.status.as_str() {
            "running" => {}
            "scheduled" => match campaign.scheduled_at {
                Some(at) if at > now => return Err(FollowUpError::NotYet(at)),
                _ => {
                    store
                        .launch_sms_campaign(
                            &campaign.campaign_id,
                            &campaign_job_key(&campaign.campaign_id),
                            now,
                        )
                        .await
                        .map_err(store_error)?;
                }
            },
            // draft (waits for launch, which makes this job due again), done, failed.
            _ => return Ok(()),
        }
        let number = store
            .get_number(&campaign.account_id, &E164::from(campaign.from_number.as_str()))
            .await
            .map_err(store_error)?
            .map(|(number, _)| number);
        let deadline = Instant::now() + self.config.slice;
        let batch = self.batch_size();
        // Claims an earlier run left behind: reconcile, then send what Twilio does not have.
        loop {
            let claimed = store
                .claimed_sms_recipients(&campaign.campaign_id, batch)
                .await
                .map_err(store_error)?;
            if claimed.is_empty() {
                break;
            }
            self.send_batch(&campaign.agent_id, number.as_ref(), claimed).await?;
            if Instant::now() >= deadline {
                return Err(FollowUpError::NotYet(nixflex_store::now()));
            }
        }
        loop {
            let claimed = store
                .claim_sms_recipients(&campaign.campaign_id, batch, nixflex_store::now())
                .await
                .map_err(store_error)?;
            if claimed.is_empty() {
                let finished = store
                    .finish_sms_campaign(&campaign.campaign_id, nixflex_store::now())
                    .await
                    .map_err(store_error)?;
                if let Some(status) = finished {
                    tracing::info!(
                        message = "SMS campaign finished.",
                        campaign_id = %campaign.campaign_id,
                        status = %status
                    );
                }
                return Ok(());
            }
            self.send_batch(&campaign.agent_id, number.as_ref(), claimed).await?;
            if Instant::now() >= deadline {
                return Err(FollowUpError::NotYet(nixflex_store::now()));
            }
        }
    }

    /// Texts claimed recipients, each at its reserved slot.
    async fn send_batch(
        &self,
        agent_id: &str,
        number: Option<&PhoneNumber>,
        recipients: Vec<SmsCampaignRecipient>,
    ) -> Result<(), FollowUpError> {
        let Some(number) = number else {
            // The sending number was removed from the account: nothing can be sent.
            for r in &recipients {
                self.store
                    .finish_sms_recipient(
                        &r.campaign_id,
                        r.position,
                        "failed",
                        Some("the sending number is no longer imported to this account"),
                        None,
                    )
                    .await
                    .map_err(store_error)?;
            }
            return Ok(());
        };
        let count = i64::try_from(recipients.len()).unwrap_or(i64::MAX);
        let interval = self.interval();
        let start = self
            .store
            .reserve_sms_slots(number.phone_number.as_str(), count, interval, nixflex_store::now())
            .await
            .map_err(store_error)?;
        let outcomes: Vec<Result<Outcome, FollowUpError>> =
            futures::stream::iter(recipients.into_iter().enumerate())
                .map(|(i, r)| {
                    let slot = start + interval * i32::try_from(i).unwrap_or(i32::MAX);
                    async move {
                        let wait = (slot - chrono::Utc::now()).to_std().unwrap_or_default();
                        if !wait.is_zero() {
                            tokio::time::sleep(wait).await;
                        }
                        self.send_one(agent_id, number, r).await
                    }
                })
                .buffer_unordered(self.config.concurrency.max(1))
                .collect()
                .await;
        let mut unsure = None;
        for outcome in outcomes {
            match outcome? {
                Outcome::Recorded => {}
                Outcome::Unsure(why) => unsure = Some(why),
            }
        }
        match unsure {
            Some(why) => Err(FollowUpError::Retryable(why)),
            None => Ok(()),
        }
    }

    async fn send_one(
        &self,
        agent_id: &str,
        number: &PhoneNumber,
        r: SmsCampaignRecipient,
    ) -> Result<Outcome, FollowUpError> {
        let out = Outgoing {
            from: number.clone(),
            agent_id: Some(agent_id.into()),
            to: r.phone.clone(),
            body: r.rendered_message.clone(),
            reply_context: None,
            metadata: Some(serde_json::json!({"campaign_id": r.campaign_id})),
            source: SmsSource::Campaign,
            send_key: Some(r.send_key.clone()),
        };
        // Every send is reconciled first: it costs one lookup by send key when nothing was
        // logged, and asks Twilio only when an earlier run logged the text without its SID.
        let result = match self.sms.reconcile(&out).await {
            Ok(Some(message)) => Ok(message),
            Ok(None) => self.sms.send(out).await,
            Err(error) => Err(error),
        };
        let store = &self.store;
        let finish = |state: &'static str, error: Option<String>, sent| async move {
            store
                .finish_sms_recipient(&r.campaign_id, r.position, state, error.as_deref(), sent)
                .await
                .map_err(store_error)
        };
        match result {
            Ok(message) => {
                // A message refused by Twilio at creation is logged `failed` without a SID.
                if message.twilio_sid.is_some() {
                    finish("sent", None, Some(message.updated_at)).await?;
                } else {
                    finish("failed", message.error_message.clone(), None).await?;
                }
                Ok(Outcome::Recorded)
            }
            Err(SendError::Unsubscribed) => {
                finish(
                    "opted_out",
                    Some("the recipient opted out of this account's texts".to_owned()),
                    None,
                )
                .await?;
                Ok(Outcome::Recorded)
            }
            Err(SendError::NotSupportedInRegion(code)) => {
                finish(
                    "failed",
                    Some(format!("texts to this destination are not allowed from this number (twilio code {code})")),
                    None,
                )
                .await?;
                Ok(Outcome::Recorded)
            }
            Err(SendError::Credentials) => {
                finish(
                    "failed",
                    Some("the number's Twilio credentials cannot be read".to_owned()),
                    None,
                )
                .await?;
                Ok(Outcome::Recorded)
            }
            Err(SendError::Provider { error, .. }) if error.is_retryable() => {
                Ok(Outcome::Unsure(format!("twilio: {error}")))
            }
            Err(SendError::Provider { error, .. }) => {
                finish("failed", Some(format!("twilio: {error}")), None).await?;
                Ok(Outcome::Recorded)
            }
            Err(SendError::Store(error)) => Err(store_error(error)),
        }
    }
}
