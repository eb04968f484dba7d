//! Voice batch campaigns (docs/campaigns.md): the scheduler that turns recipients into ordinary
//! outbound calls, inside the campaign's calling window, under its `max_concurrent` and the
//! account's cap, and settles each recipient once its call has ended.
//!
//! Each campaign has one durable `campaign.run` job for its whole life. A run settles ended
//! calls (a busy or unanswered recipient may be called again later), reconciles calls a crash
//! left without a known dial outcome, then — while the campaign is `running` and its window is
//! open — claims due recipients into calls; and asks to run again at the next tick or the next
//! window opening (`NotYet`, which spends no attempt). Any node may run it; a node killed
//! mid-run leaves nothing half-done, because each recipient's claim and its call are written in
//! one transaction.
//!
//! Exactly once (docs/campaigns.md#exactly-once): a claimed call is dialled by the one job that
//! claimed it; a claimed call that stopped being heard of (its node died between the claim and
//! the carrier's answer, or the carrier's callbacks were lost) is looked up at the carrier:
//! found → adopted (and ended with the carrier's outcome if it has ended), not found → queued
//! again and dialled. The dial refreshes the claim right before its request, and the lookup
//! only considers claims older than `reconcile_after` (longer than a dial request may take), so
//! a lookup never races a request still in flight.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use nixflex_core::call::{CallRecord, CallStatus, EndedReason};
use nixflex_core::ids::{AccountId, AgentId, E164};
use nixflex_core::window::{CallingWindow, Days, WindowError};
use nixflex_providers::twilio::CallStatus as CarrierStatus;
use nixflex_store::{CallUpdate, Campaign, RecipientCall, Settle, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::engine::Engine;
use crate::followup::FollowUpError;
use crate::outbound::{CallPurpose, OutboundRequest};

/// The clock the scheduler reads (injected by tests).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct CampaignConfig {
    /// How often a running campaign looks at its calls and recipients.
    pub tick: Duration,
    /// A claimed campaign call not heard of for this long is looked up at the carrier. Must be
    /// longer than a dial request can take.
    pub reconcile_after: Duration,
    /// The longest wait between two runs (launch and resume wake the job sooner).
    pub max_sleep: Duration,
    /// Recipients claimed per run at most.
    pub batch: i64,
}

impl Default for CampaignConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            reconcile_after: Duration::from_secs(60),
            max_sleep: Duration::from_secs(60),
            batch: 100,
        }
    }
}

/// What a recipient carries beyond its number, sealed at rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientData {
    /// Substituted into the prompt.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// Replaces the campaign prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_override: Option<String>,
    /// Merged over the campaign's metadata on this recipient's calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

/// The campaign's calling window.
///
/// # Errors
/// [`WindowError`] when the stored window is invalid.
pub fn window_of(campaign: &Campaign) -> Result<CallingWindow, WindowError> {
    let tz = CallingWindow::timezone(&campaign.timezone)?;
    let days: Vec<&str> =
        campaign.window_days.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    let days = if days.is_empty() { Days::ALL } else { Days::parse(&days)? };
    let bound = |v: i64, name| u16::try_from(v).map_err(|_| WindowError::OutOfRange(name));
    CallingWindow::new(
        bound(campaign.window_start, "window_start_minutes")?,
        bound(campaign.window_end, "window_end_minutes")?,
        days,
        tz,
    )
}

/// When a scheduled campaign becomes eligible: `scheduled_at`, or local midnight of
/// `scheduled_date` in the window's timezone; `None`: at once.
pub fn eligible_at(campaign: &Campaign, window: &CallingWindow) -> Option<DateTime<Utc>> {
    let from_date = campaign
        .scheduled_date
        .as_deref()
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .map(|date| window.start_of_day(date));
    match (campaign.scheduled_at, from_date) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// What time allows the scheduler to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// A scheduled campaign's start has come: it becomes `running`.
    Start,
    /// Inside the window: dial.
    Dial,
    /// Not yet: look again at this time.
    WaitUntil(DateTime<Utc>),
    /// Nothing to do with time (paused, or final).
    Hold,
}

/// The scheduler's decision for `campaign` at `now` (pure: the clock is passed in).
pub fn plan(campaign: &Campaign, window: &CallingWindow, now: DateTime<Utc>) -> Plan {
    match campaign.status.as_str() {
        "scheduled" => match eligible_at(campaign, window) {
            Some(at) if now < at => Plan::WaitUntil(at),
            _ => Plan::Start,
        },
        "running" => {
            if window.contains(now) {
                Plan::Dial
            } else {
                window.next_opening(now).map_or(Plan::Hold, Plan::WaitUntil)
            }
        }
        _ => Plan::Hold,
    }
}

/// Whether a call's final status lets its recipient be called again (busy, no answer).
fn retryable(call_status: &str) -> bool {
    matches!(call_status, "busy" | "no-answer")
}

/// The campaign scheduler.
#[derive(Clone)]
pub struct Campaigns {
    store: Arc<dyn Store>,
    engine: Engine,
    clock: Clock,
    config: CampaignConfig,
}

impl std::fmt::Debug for Campaigns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Campaigns").field("config", &self.config).finish_non_exhaustive()
    }
}

fn retry(error: StoreError) -> FollowUpError {
    FollowUpError::Retryable(format!("store: {error}"))
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Campaigns {
    /// A scheduler over `store` placing calls through `engine`.
    pub fn new(store: Arc<dyn Store>, engine: Engine, config: CampaignConfig) -> Self {
        Self { store, engine, clock: Arc::new(nixflex_store::now), config }
    }

    /// The same with another clock (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// One run of a campaign's `campaign.run` job.
    ///
    /// # Errors
    /// `NotYet` to run again later (the usual outcome until the campaign is over); `Retryable`
    /// when the store failed.
    pub async fn run(
        &self,
        campaign_id: &str,
        account_id: &AccountId,
    ) -> Result<(), FollowUpError> {
        let now = (self.clock)();
        let store = &self.store;
        let Some(mut campaign) =
            store.get_campaign(account_id, campaign_id).await.map_err(retry)?
        else {
            return Ok(()); // deleted with its account
        };
        self.settle(&campaign, now).await?;
        self.reconcile(&campaign, now).await;
        if matches!(campaign.status.as_str(), "cancelled" | "failed") {
            self.cancel_queued(&campaign).await;
        }
        let tick = now + to_chrono(self.config.tick);
        // Launch and resume make the job due at once, but one that was running at that moment
        // defers itself afterwards: so it never sleeps longer than a few ticks.
        let long = now + to_chrono(self.config.max_sleep.min(self.config.tick * 10));
        let window = match window_of(&campaign) {
            Ok(window) => window,
            Err(error) => {
                self.fail(&campaign, &format!("invalid calling window: {error}"), now).await?;
                return Err(FollowUpError::NotYet(tick));
            }
        };
        let mut step = plan(&campaign, &window, now);
        if step == Plan::Start {
            match store
                .move_campaign(account_id, campaign_id, &["scheduled"], "running", None, now)
                .await
                .map_err(retry)?
            {
                Some(running) => {
                    tracing::info!(message = "Campaign started.", campaign_id);
                    campaign = running;
                }
                None => return Err(FollowUpError::NotYet(now)), // moved meanwhile: look again
            }
            step = plan(&campaign, &window, now);
        }
        let (pending, calling) = self.progress(campaign_id).await?;
        if campaign.is_final() {
            return if calling > 0 { Err(FollowUpError::NotYet(tick)) } else { Ok(()) };
        }
        if campaign.status == "running" && pending == 0 && calling == 0 {
            if store
                .move_campaign(account_id, campaign_id, &["running"], "completed", None, now)
                .await
                .map_err(retry)?
                .is_some()
            {
                tracing::info!(message = "Campaign completed.", campaign_id);
                return Ok(());
            }
            return Err(FollowUpError::NotYet(now));
        }
        let busy_wait = |at: DateTime<Utc>| if calling > 0 { tick.min(at) } else { at.min(long) };
        match step {
            Plan::WaitUntil(at) => Err(FollowUpError::NotYet(busy_wait(at))),
            Plan::Hold | Plan::Start => Err(FollowUpError::NotYet(busy_wait(long))),
            Plan::Dial => {
                self.start_calls(&campaign, calling, now).await?;
                Err(FollowUpError::NotYet(tick))
            }
        }
    }

    /// Recipients still to call (`pending`) and in a call (`calling`).
    async fn progress(&self, campaign_id: &str) -> Result<(i64, i64), FollowUpError> {
        let counts = self.store.recipient_counts(campaign_id).await.map_err(retry)?;
        let count = |status: &str| counts.iter().filter(|c| c.0 == status).map(|c| c.2).sum();
        Ok((count("pending"), count("calling")))
    }

    /// Records the outcome of every recipient whose call ended; a busy or unanswered one is
    /// called again after the retry delay while it has attempts left.
    async fn settle(&self, campaign: &Campaign, now: DateTime<Utc>) -> Result<(), FollowUpError> {
        loop {
            let ended = self
                .store
                .ended_recipient_calls(&campaign.campaign_id, 500)
                .await
                .map_err(retry)?;
            for call in &ended {
                let settle = if retryable(&call.call_status)
                    && call.attempts < campaign.max_attempts
                    && !campaign.is_final()
                {
                    Settle::RetryAt(now + chrono::Duration::minutes(campaign.retry_delay_minutes))
                } else {
                    Settle::Done
                };
                self.store
                    .settle_recipient(&campaign.campaign_id, call, &settle, now)
                    .await
                    .map_err(retry)?;
            }
            if ended.len() < 500 {
                return Ok(());
            }
        }
    }

    /// Fails the campaign (nothing can be dialled), cancelling its pending recipients.
    async fn fail(
        &self,
        campaign: &Campaign,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), FollowUpError> {
        tracing::warn!(message = "Campaign failed.", campaign_id = %campaign.campaign_id, reason);
        self.store
            .move_campaign(
                &campaign.account_id,
                &campaign.campaign_id,
                &["scheduled", "running", "paused"],
                "failed",
                Some(reason),
                now,
            )
            .await
            .map_err(retry)?;
        Ok(())
    }

    /// Ends the campaign's calls still waiting in the capacity queue (`canceled`).
    async fn cancel_queued(&self, campaign: &Campaign) {
        let Ok(queued) = self.store.queued_campaign_calls(&campaign.campaign_id).await else {
            return;
        };
        for call_id in queued {
            let now = nixflex_store::now();
            let update = CallUpdate {
                call_status: Some(CallStatus::Canceled),
                ended_reason: Some(EndedReason::Canceled),
                ended_at: Some(now),
                carrier_details: Some(json!({"reason": "campaign_cancelled"})),
                ..CallUpdate::default()
            };
            let follow_ups =
                self.engine.call_follow_ups(call_id.as_str(), campaign.account_id.as_str());
            if let Err(error) =
                self.store.end_queued_call(&call_id, &update, now, &follow_ups).await
            {
                tracing::warn!(message = "Could not end a cancelled campaign's queued call.", call_id = %call_id, error = %error);
            }
        }
        self.engine.wake_follow_ups();
    }

    /// Claims due recipients into calls, up to the campaign's (or the account's) cap.
    async fn start_calls(
        &self,
        campaign: &Campaign,
        calling: i64,
        now: DateTime<Utc>,
    ) -> Result<(), FollowUpError> {
        let store = &self.store;
        let cap = match campaign.max_concurrent {
            Some(cap) => cap,
            None => store
                .get_account(&campaign.account_id)
                .await
                .map_err(retry)?
                .and_then(|a| a.max_concurrent_calls)
                .unwrap_or(self.engine.config().default_max_concurrent_calls),
        };
        let room = (cap - calling).min(self.config.batch);
        if room <= 0 {
            return Ok(());
        }
        let due = store.due_recipients(&campaign.campaign_id, now, room).await.map_err(retry)?;
        if due.is_empty() {
            return Ok(());
        }
        let agent_id = AgentId::from(campaign.agent_id.as_str());
        let agent = store.get_agent(&campaign.account_id, &agent_id).await.map_err(retry)?;
        let Some((agent, _)) = agent else {
            return self.fail(campaign, "the agent was deleted", now).await;
        };
        if !agent.settings.is_active {
            return self.fail(campaign, "the agent is inactive", now).await;
        }
        let from = E164::from(campaign.from_number.clone());
        let number = store.find_active_number(&from).await.map_err(retry)?.filter(|n| {
            n.account_id == campaign.account_id
                && n.agent_id.as_ref() == Some(&agent_id)
                && n.outbound_enabled
        });
        let Some(number) = number else {
            return self
                .fail(
                    campaign,
                    "the from number is no longer one of the agent's outbound numbers",
                    now,
                )
                .await;
        };
        let secrets = self.engine.secrets();
        let Ok(prompt) = secrets.open(&campaign.prompt_sealed) else {
            return self.fail(campaign, "the campaign prompt could not be read", now).await;
        };
        let mut starts = Vec::with_capacity(due.len());
        for recipient in due {
            let data: RecipientData = recipient
                .data_sealed
                .as_deref()
                .and_then(|sealed| secrets.open(sealed).ok())
                .and_then(|opened| serde_json::from_str(&opened).ok())
                .unwrap_or_default();
            let metadata = merged_metadata(campaign.metadata.as_ref(), data.metadata);
            let request = OutboundRequest {
                account_id: campaign.account_id.clone(),
                agent_id: agent_id.clone(),
                to: E164::from(recipient.phone.clone()),
                from: Some(from.clone()),
                purpose: CallPurpose {
                    prompt: data.prompt_override.unwrap_or_else(|| prompt.clone()),
                    dynamic_vars: data.variables,
                },
                campaign_id: Some(campaign.campaign_id.clone()),
                metadata,
                voicemail_action: None,
                voicemail_message: None,
            };
            let (call, details, dial_job) = self
                .engine
                .outbound_rows(&request, &number)
                .map_err(|e| FollowUpError::Retryable(e.to_string()))?;
            starts.push(RecipientCall {
                row_index: recipient.row_index,
                attempts: recipient.attempts,
                call,
                details,
                dial_job,
            });
        }
        let started = store
            .start_recipient_calls(&campaign.campaign_id, &starts, now)
            .await
            .map_err(retry)?;
        if started > 0 {
            self.engine.wake_follow_ups();
            tracing::info!(message = "Campaign calls queued.", campaign_id = %campaign.campaign_id, started);
        }
        Ok(())
    }

    /// Looks up at the carrier each of the campaign's calls that stopped being heard of before
    /// any conversation, and settles it from what the carrier says.
    async fn reconcile(&self, campaign: &Campaign, now: DateTime<Utc>) {
        let stale_before = now - to_chrono(self.config.reconcile_after);
        let Ok(calls) =
            self.store.stale_campaign_calls(&campaign.campaign_id, stale_before, 50).await
        else {
            return;
        };
        for call in calls {
            if let Err(error) = self.reconcile_call(&call, stale_before).await {
                tracing::warn!(message = "Could not reconcile a campaign call with the carrier; trying again later.", call_id = %call.call_id, error = %error);
            }
        }
    }

    async fn reconcile_call(
        &self,
        call: &CallRecord,
        stale_before: DateTime<Utc>,
    ) -> Result<(), String> {
        let store = &self.store;
        let from = E164::from(call.from_number.clone());
        let Some(number) = store
            .find_active_number(&from)
            .await
            .map_err(|e| e.to_string())?
            .filter(|n| n.account_id == call.account_id)
        else {
            // Without the number's credentials the carrier cannot be asked; the campaign
            // fails on its next claim for the same reason.
            self.end(
                call,
                CallStatus::Failed,
                Some(EndedReason::Failed),
                None,
                json!({"reason": "from_number_gone", "message": "The caller-ID number was deleted; the call's fate at the carrier could not be looked up."}),
            )
            .await;
            return Ok(());
        };
        let credentials = crate::engine::number_credentials(self.engine.secrets(), &number)
            .ok_or("the number's credentials could not be read")?;
        let twilio = self.engine.twilio();
        let found = match &call.twilio_call_sid {
            Some(sid) => match twilio.fetch_call(&credentials, sid).await {
                Ok(found) => Some(found),
                Err(nixflex_providers::twilio::TwilioError::NotFound { .. }) => None,
                Err(error) => return Err(error.to_string()),
            },
            None => {
                let listed = twilio
                    .list_calls_between(&credentials, &call.to_number, &call.from_number, 50)
                    .await
                    .map_err(|e| e.to_string())?;
                // Ours if created after our claim (less a little clock skew) and not already
                // another call's.
                let since = call.started_at - chrono::Duration::seconds(30);
                let mut ours = None;
                for candidate in listed {
                    let created = candidate
                        .date_created
                        .as_deref()
                        .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
                        .map(|d| d.with_timezone(&Utc));
                    if created.is_none_or(|c| c < since) {
                        continue;
                    }
                    if store.carrier_sid_known(&candidate.sid).await.map_err(|e| e.to_string())? {
                        continue;
                    }
                    ours = Some(candidate);
                    break;
                }
                ours
            }
        };
        let now = nixflex_store::now();
        let Some(found) = found else {
            if call.twilio_call_sid.is_none() {
                if store
                    .requeue_stale_call(&call.call_id, stale_before, now)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    tracing::warn!(message = "A claimed campaign call was never placed at the carrier; queued to be dialled.", call_id = %call.call_id);
                    self.engine.wake_follow_ups();
                }
                return Ok(());
            }
            self.end(
                call,
                CallStatus::Failed,
                Some(EndedReason::Failed),
                None,
                json!({"reason": "unknown_at_carrier"}),
            )
            .await;
            return Ok(());
        };
        let status = carrier_status(found.status);
        if let Some(status) = status.filter(|s| s.is_final()) {
            let reason = match status {
                CallStatus::Busy => Some(EndedReason::Busy),
                CallStatus::NoAnswer => Some(EndedReason::NoAnswer),
                CallStatus::Failed => Some(EndedReason::Failed),
                CallStatus::Canceled => Some(EndedReason::Canceled),
                _ => None,
            };
            self.end(
                call,
                status,
                reason,
                Some(found.sid.clone()),
                json!({"carrier_status": status.as_str(), "reconciled": true}),
            )
            .await;
            tracing::info!(message = "A campaign call was settled from the carrier's record.", call_id = %call.call_id);
        } else {
            let update = CallUpdate {
                twilio_call_sid: Some(found.sid.clone()),
                call_status: status,
                heartbeat_at: Some(now),
                ..CallUpdate::default()
            };
            store.update_call(&call.call_id, &update, now).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn end(
        &self,
        call: &CallRecord,
        status: CallStatus,
        reason: Option<EndedReason>,
        sid: Option<String>,
        details: Value,
    ) {
        let now = nixflex_store::now();
        let update = CallUpdate {
            call_status: Some(status),
            ended_reason: reason,
            ended_at: Some(now),
            duration_seconds: Some(0),
            twilio_call_sid: sid,
            carrier_details: Some(details),
            ..CallUpdate::default()
        };
        let follow_ups =
            self.engine.call_follow_ups(call.call_id.as_str(), call.account_id.as_str());
        match self.store.finish_call(&call.call_id, &update, now, &follow_ups).await {
            Ok(_) => self.engine.wake_follow_ups(),
            Err(error) => {
                tracing::warn!(message = "Could not end a reconciled campaign call.", call_id = %call.call_id, error = %error);
            }
        }
    }
}

/// The carrier's status as ours.
fn carrier_status(status: CarrierStatus) -> Option<CallStatus> {
    Some(match status {
        CarrierStatus::Queued => CallStatus::Initiated,
        CarrierStatus::Ringing => CallStatus::Ringing,
        CarrierStatus::InProgress => CallStatus::InProgress,
        CarrierStatus::Completed => CallStatus::Completed,
        CarrierStatus::Busy => CallStatus::Busy,
        CarrierStatus::Failed => CallStatus::Failed,
        CarrierStatus::NoAnswer => CallStatus::NoAnswer,
        CarrierStatus::Canceled => CallStatus::Canceled,
        _ => return None,
    })
}

/// The campaign's metadata with the recipient's keys over it.
fn merged_metadata(
    campaign: Option<&Value>,
    recipient: Option<Map<String, Value>>,
) -> Option<Value> {
    match (campaign, recipient) {
        (None, None) => None,
        (Some(base), None) => Some(base.clone()),
        (base, Some(extra)) => {
            let mut merged = base.and_then(Value::as_object).cloned().unwrap_or_default();
            merged.extend(extra);
            Some(Value::Object(merged))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn campaign(status: &str, start: i64, end: i64, days: &str, tz: &str) -> Campaign {
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        Campaign {
            campaign_id: "camp_0123456789abcdef".to_owned(),
            account_id: AccountId::from("acct_x"),
            agent_id: "agent_0123456789abcdef".to_owned(),
            name: None,
            from_number: "+14155550100".to_owned(),
            prompt_sealed: String::new(),
            status: status.to_owned(),
            schedule_type: "schedule".to_owned(),
            scheduled_date: None,
            scheduled_at: None,
            window_start: start,
            window_end: end,
            window_days: days.to_owned(),
            timezone: tz.to_owned(),
            max_concurrent: None,
            max_attempts: 1,
            retry_delay_minutes: 0,
            metadata: None,
            recipients_count: 1,
            invalid: Value::Array(Vec::new()),
            failure_reason: None,
            launched_at: None,
            completed_at: None,
            created_at: t,
            updated_at: t,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn an_overnight_window_dials_past_midnight_and_waits_for_the_evening() {
        // 22:00–06:00 in New York, Fridays only: Friday 23:30 and Saturday 05:59 dial, Saturday
        // 06:00 waits for the next Friday 22:00.
        let c = campaign("running", 1320, 360, "fri", "America/New_York");
        let w = window_of(&c).unwrap();
        assert_eq!(plan(&c, &w, at("2026-03-07T04:30:00Z")), Plan::Dial); // Fri 23:30 EST
        assert_eq!(plan(&c, &w, at("2026-03-07T10:59:00Z")), Plan::Dial); // Sat 05:59 EST
        assert_eq!(
            plan(&c, &w, at("2026-03-07T11:00:00Z")),    // Sat 06:00 EST
            Plan::WaitUntil(at("2026-03-14T02:00:00Z"))  // Fri 13 March 22:00 EDT
        );
        // A Thursday night is not a Friday window.
        assert_eq!(
            plan(&c, &w, at("2026-03-06T04:00:00Z")),    // Thu 23:00 EST
            Plan::WaitUntil(at("2026-03-07T03:00:00Z"))  // Fri 22:00 EST
        );
    }

    #[test]
    fn a_window_on_the_day_clocks_go_forward_opens_once_when_the_clock_passes_its_start() {
        // London, 29 March 2026: 01:00 GMT becomes 02:00 BST. A 01:30–03:00 window opens at
        // 02:00 BST (01:00 UTC), the first time the clock reads 01:30 or later.
        let c = campaign("running", 90, 180, "", "Europe/London");
        let w = window_of(&c).unwrap();
        let before = at("2026-03-28T23:00:00Z");
        let Plan::WaitUntil(open) = plan(&c, &w, before) else { panic!("waits") };
        assert_eq!(open, at("2026-03-29T01:00:00Z"));
        assert_eq!(plan(&c, &w, open), Plan::Dial);
        assert_eq!(plan(&c, &w, at("2026-03-29T01:59:00Z")), Plan::Dial); // 02:59 BST
        let Plan::WaitUntil(next) = plan(&c, &w, at("2026-03-29T02:00:00Z")) else {
            panic!("closed at 03:00 BST")
        };
        assert_eq!(next, at("2026-03-30T00:30:00Z")); // 01:30 BST the next day
    }

    #[test]
    fn a_window_on_the_day_clocks_go_back_is_not_doubled() {
        // London, 25 October 2026: 02:00 BST becomes 01:00 GMT; a 01:15–01:45 window opens at
        // its first 01:15 (00:15 UTC) and, once closed, not again that night.
        let c = campaign("running", 75, 105, "", "Europe/London");
        let w = window_of(&c).unwrap();
        assert_eq!(plan(&c, &w, at("2026-10-25T00:15:00Z")), Plan::Dial);
        let Plan::WaitUntil(next) = plan(&c, &w, at("2026-10-25T00:50:00Z")) else {
            panic!("closed")
        };
        assert_eq!(next, at("2026-10-26T01:15:00Z"), "the repeated hour does not reopen it");
    }

    #[test]
    fn a_scheduled_campaign_starts_at_local_midnight_of_its_date_then_keeps_to_its_window() {
        let mut c = campaign("scheduled", 540, 1020, "", "America/New_York");
        c.scheduled_date = Some("2026-03-08".to_owned()); // the day New York springs forward
        let w = window_of(&c).unwrap();
        assert_eq!(
            plan(&c, &w, at("2026-03-07T12:00:00Z")),
            Plan::WaitUntil(at("2026-03-08T05:00:00Z")) // 00:00 EST
        );
        assert_eq!(plan(&c, &w, at("2026-03-08T05:00:00Z")), Plan::Start);
        c.status = "running".to_owned();
        assert_eq!(
            plan(&c, &w, at("2026-03-08T05:00:00Z")),
            Plan::WaitUntil(at("2026-03-08T13:00:00Z")) // 09:00 EDT
        );
        c.status = "paused".to_owned();
        assert_eq!(plan(&c, &w, at("2026-03-08T14:00:00Z")), Plan::Hold);
    }

    #[test]
    fn recipient_metadata_goes_over_the_campaign_s() {
        let base = json!({"batch": "june", "source": "crm"});
        let mut extra = Map::new();
        extra.insert("source".to_owned(), json!("csv"));
        assert_eq!(
            merged_metadata(Some(&base), Some(extra)),
            Some(json!({"batch": "june", "source": "csv"}))
        );
        assert_eq!(merged_metadata(None, None), None);
        assert!(retryable("busy") && retryable("no-answer") && !retryable("completed"));
    }
}
