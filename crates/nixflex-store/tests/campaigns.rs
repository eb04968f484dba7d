#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Campaign storage (docs/campaigns.md#exactly-once) on SQLite and on PostgreSQL: a recipient is
//! claimed into one call once, a dial re-checks its own claim, the sweeper leaves unanswered
//! campaign calls to their campaign, and dial slots are spaced.

use std::sync::Arc;

use chrono::Duration;
use nixflex_core::call::{CallRecord, CallStatus, Direction};
use nixflex_core::ids::{self, AccountId};
use nixflex_store::testing::TempDirGuard;
use nixflex_store::{
    CALL_ENDED, Campaign, NewRecipient, OutboundDetails, RecipientCall, Store, campaign_job,
    dial_job, now,
};
use serde_json::{Map, json};

type Fixture = (Arc<dyn Store>, Option<TempDirGuard>);

async fn account(store: &dyn Store) -> AccountId {
    nixflex_store::testing::new_account(store).await.unwrap()
}

async fn campaign(store: &dyn Store, account_id: &AccountId, recipients: usize) -> Campaign {
    let at = now();
    let campaign = Campaign {
        campaign_id: ids::new_campaign_id(),
        account_id: account_id.clone(),
        agent_id: "agent_0123456789abcdef".to_owned(),
        name: None,
        from_number: "+14155550100".to_owned(),
        prompt_sealed: "v1:sealed".to_owned(),
        status: "running".to_owned(),
        schedule_type: "now".to_owned(),
        scheduled_date: None,
        scheduled_at: None,
        window_start: 0,
        window_end: 1440,
        window_days: "mon,tue,wed,thu,fri,sat,sun".to_owned(),
        timezone: "Europe/London".to_owned(),
        max_concurrent: None,
        max_attempts: 1,
        retry_delay_minutes: 0,
        metadata: Some(json!({"batch": "june"})),
        recipients_count: i64::try_from(recipients).unwrap(),
        invalid: json!([]),
        failure_reason: None,
        launched_at: Some(at),
        completed_at: None,
        created_at: at,
        updated_at: at,
    };
    let rows: Vec<NewRecipient> = (0..recipients)
        .map(|i| NewRecipient {
            row_index: i64::try_from(i).unwrap(),
            phone: format!("+4473860{i:05}"),
            data_sealed: None,
        })
        .collect();
    let job = campaign_job(account_id, &campaign.campaign_id, 5);
    store.create_campaign(&campaign, &rows, &job).await.unwrap();
    campaign
}

fn start(campaign: &Campaign, row_index: i64, attempts: i64) -> RecipientCall {
    let at = now();
    let call = CallRecord {
        call_id: ids::new_call_id(),
        account_id: campaign.account_id.clone(),
        agent_id: None,
        direction: Direction::Outbound,
        from_number: campaign.from_number.clone(),
        to_number: format!("+4473860{row_index:05}"),
        twilio_call_sid: None,
        call_status: CallStatus::Queued,
        ended_reason: None,
        started_at: at,
        answered_at: None,
        ended_at: None,
        duration_seconds: None,
        transcript: Vec::new(),
        turns: Vec::new(),
        avg_latency_ms: None,
        recording: None,
        call_summary: None,
        caller_sentiment: None,
        call_successful: None,
        extracted_data: Map::new(),
        voicemail_detected: false,
        campaign_id: Some(campaign.campaign_id.clone()),
        metadata: campaign.metadata.clone(),
        cost_usd: None,
        function_calls: Vec::new(),
        provider_events: Vec::new(),
        precall_reject_reason: None,
        amd_result: None,
        voicemail_detection_method: None,
        carrier_details: None,
        stream_token_hash: None,
        created_at: at,
        updated_at: at,
    };
    let dial_job = dial_job(&call.account_id, &call.call_id, 5);
    RecipientCall { row_index, attempts, call, details: OutboundDetails::default(), dial_job }
}

async fn a_recipient_is_claimed_into_one_call_once((store, _g): Fixture) {
    let account_id = account(&*store).await;
    let c = campaign(&*store, &account_id, 3).await;
    let t = now();
    let due = store.due_recipients(&c.campaign_id, t, 10).await.unwrap();
    assert_eq!(due.len(), 3);
    // Two schedulers read the same pending recipient and both try to claim it: one call.
    let first = start(&c, 0, 0);
    let second = start(&c, 0, 0);
    assert_eq!(
        store.start_recipient_calls(&c.campaign_id, std::slice::from_ref(&first), t).await.unwrap(),
        1
    );
    assert_eq!(
        store
            .start_recipient_calls(&c.campaign_id, std::slice::from_ref(&second), t)
            .await
            .unwrap(),
        0
    );
    assert!(store.get_call(&account_id, &first.call.call_id).await.unwrap().is_some());
    assert!(
        store.get_call(&account_id, &second.call.call_id).await.unwrap().is_none(),
        "no orphan call"
    );
    let recipients = store.campaign_recipients(&c.campaign_id, 10, 0).await.unwrap();
    assert_eq!(recipients[0].status, "calling");
    assert_eq!(recipients[0].call_id.as_deref(), Some(first.call.call_id.as_str()));
    assert_eq!(recipients[0].attempts, 1);
    // A paused campaign claims nothing; a cancelled one cancels its pending recipients.
    store
        .move_campaign(&account_id, &c.campaign_id, &["running"], "paused", None, t)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.start_recipient_calls(&c.campaign_id, &[start(&c, 1, 0)], t).await.unwrap(),
        0
    );
    assert!(
        store
            .move_campaign(&account_id, &c.campaign_id, &["running"], "paused", None, t)
            .await
            .unwrap()
            .is_none()
    );
    let cancelled = store
        .move_campaign(&account_id, &c.campaign_id, &["paused"], "cancelled", None, t)
        .await
        .unwrap()
        .unwrap();
    assert!(cancelled.completed_at.is_some());
    let counts = store.recipient_counts(&c.campaign_id).await.unwrap();
    let count = |status: &str| counts.iter().filter(|r| r.0 == status).map(|r| r.2).sum::<i64>();
    assert_eq!((count("calling"), count("cancelled"), count("pending")), (1, 2, 0));
}

async fn a_dial_re_checks_its_own_claim_after_a_reconciliation((store, _g): Fixture) {
    let account_id = account(&*store).await;
    let c = campaign(&*store, &account_id, 1).await;
    let s = start(&c, 0, 0);
    let call_id = s.call.call_id.clone();
    let t0 = now();
    store.start_recipient_calls(&c.campaign_id, &[s], t0).await.unwrap();
    let claimed = store
        .claim_queued_calls(&account_id, 10, t0 - Duration::seconds(90), t0, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let first_claim = claimed[0].started_at;
    assert!(store.touch_unplaced_call(&call_id, first_claim, t0).await.unwrap());
    // Not stale yet: the lookup may not put it back.
    assert!(!store.requeue_stale_call(&call_id, t0 - Duration::seconds(1), t0).await.unwrap());
    let later = t0 + Duration::seconds(10);
    let stale =
        store.stale_campaign_calls(&c.campaign_id, later - Duration::seconds(5), 10).await.unwrap();
    assert_eq!(stale.len(), 1, "claimed and silent: looked up at the carrier");
    // The sweeper leaves it to its campaign.
    let swept = store.end_stale_calls(later, CALL_ENDED, 5, 100, later).await.unwrap();
    assert!(!swept.contains(&call_id.as_str().to_owned()), "{swept:?}");
    // Not at the carrier: queued again and claimed again.
    assert!(store.requeue_stale_call(&call_id, later - Duration::seconds(5), later).await.unwrap());
    let again = store
        .claim_queued_calls(&account_id, 10, later - Duration::seconds(90), later, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].started_at, first_claim);
    // The first claim's dial, waking up late, must not dial; the new claim's does.
    assert!(!store.touch_unplaced_call(&call_id, first_claim, later).await.unwrap());
    assert!(store.touch_unplaced_call(&call_id, again[0].started_at, later).await.unwrap());
    // Once the carrier has it, there is nothing to touch.
    let update = nixflex_store::CallUpdate {
        twilio_call_sid: Some("CA0123".to_owned()),
        ..Default::default()
    };
    store.update_call(&call_id, &update, later).await.unwrap();
    assert!(!store.touch_unplaced_call(&call_id, again[0].started_at, later).await.unwrap());
    assert!(store.carrier_sid_known("CA0123").await.unwrap());
    assert!(!store.carrier_sid_known("CA0124").await.unwrap());
}

async fn dial_slots_are_spaced_per_carrier_account((store, _g): Fixture) {
    let t = now();
    let gap = Duration::milliseconds(250);
    let a = store.reserve_dial_slot("twilio:AC1", gap, t).await.unwrap();
    let b = store.reserve_dial_slot("twilio:AC1", gap, t).await.unwrap();
    let c = store.reserve_dial_slot("twilio:AC1", gap, t).await.unwrap();
    let other = store.reserve_dial_slot("twilio:AC2", gap, t).await.unwrap();
    assert_eq!((a, b, c, other), (t, t + gap, t + gap * 2, t));
    // A slot never lies in the past.
    let late = t + Duration::seconds(10);
    assert_eq!(store.reserve_dial_slot("twilio:AC1", gap, late).await.unwrap(), late);
}

macro_rules! suite {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(nixflex_store::testing::fresh_store("sqlite").await.unwrap()).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(nixflex_store::testing::fresh_store("postgres").await.unwrap()).await;
                }
            )+
        }
    };
}

suite!(
    a_recipient_is_claimed_into_one_call_once,
    a_dial_re_checks_its_own_claim_after_a_reconciliation,
    dial_slots_are_spaced_per_carrier_account,
);
