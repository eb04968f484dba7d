#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The storage conformance suite: every test runs on SQLite and on PostgreSQL.

use std::sync::Arc;

use chrono::Duration;
use nixflex_core::agent::{Agent, AgentSettings};
use nixflex_core::call::{
    CallRecord, CallStatus, Direction, EndedReason, TranscriptEntry, TranscriptRole, TurnLatency,
};
use nixflex_core::ids::{self, AccountId, AgentId, E164};
use nixflex_core::number::{NumberSettings, PhoneNumber};
use nixflex_core::sms::{SmsMessage, SmsSource, SmsStatus};
use nixflex_store::testing::TempDirGuard;
use nixflex_store::{
    Account, Admission, ApiKey, CALL_ENDED, CallFilter, CallUpdate, IdempotencyBegin,
    IdempotencyScope, JobCounts, JobFilter, JobState, NewJob, NumberUrlSlot, OutboundDetails, Page,
    RevokeOutcome, SmsFilter, Store, StoreError, StoredResponse, now,
};
use serde_json::{Map, Value, json};

type Fixture = (Arc<dyn Store>, Option<TempDirGuard>);

fn account(id: &str) -> Account {
    Account {
        account_id: id.into(),
        name: Some("Ada".to_owned()),
        email: Some("ada@example.com".to_owned()),
        created_at: now(),
        max_concurrent_calls: None,
        rate_limit_reads: None,
        rate_limit_writes: None,
    }
}

fn key(account_id: &str) -> ApiKey {
    ApiKey {
        key_id: ids::new_key_id(),
        account_id: account_id.into(),
        name: Some("default".to_owned()),
        secret_hash: "h".repeat(64),
        secret_sealed: "v1:sealed".to_owned(),
        created_at: now(),
        rotated_at: None,
        revoked_at: None,
    }
}

async fn new_account(store: &dyn Store) -> (Account, ApiKey) {
    let acct = account(&ids::new_account_id());
    let k = key(&acct.account_id);
    store.create_account(&acct, &k).await.unwrap();
    (acct, k)
}

fn agent(account_id: &str, name: &str, active: bool) -> Agent {
    let settings =
        AgentSettings { name: name.to_owned(), is_active: active, ..AgentSettings::default() };
    let at = now();
    Agent {
        agent_id: ids::new_agent_id(),
        account_id: account_id.into(),
        api_key_id: "nxf_x".into(),
        settings,
        created_at: at,
        updated_at: at,
    }
}

fn scope(key: &str) -> IdempotencyScope {
    IdempotencyScope {
        scope: "acct_1".to_owned(),
        method: "POST".to_owned(),
        path: "/v1/agents".to_owned(),
        key: key.to_owned(),
    }
}

const PAGE: Page = Page { limit: 100, offset: 0 };

async fn account_and_key_round_trip((store, _g): Fixture) {
    let (acct, k) = new_account(&*store).await;
    let found = store.get_key(&k.key_id).await.unwrap().unwrap();
    assert_eq!(found.key, k);
    assert_eq!(found.account, acct);
    assert_eq!(store.get_account(&acct.account_id).await.unwrap(), Some(acct.clone()));
    assert!(store.get_key(&"nxf_missing".into()).await.unwrap().is_none());
    // A duplicate key id is a conflict, and the failed account insert leaves nothing behind.
    let other = account(&ids::new_account_id());
    let mut dup = key(&other.account_id);
    dup.key_id = k.key_id.clone();
    assert!(matches!(store.create_account(&other, &dup).await, Err(StoreError::Conflict { .. })));
    assert_eq!(store.get_account(&other.account_id).await.unwrap(), None);
    store.set_account_limits(&acct.account_id, Some(3), Some(1000), None).await.unwrap();
    let limited = store.get_account(&acct.account_id).await.unwrap().unwrap();
    assert_eq!((limited.max_concurrent_calls, limited.rate_limit_reads), (Some(3), Some(1000)));
    assert!(matches!(
        store.set_account_limits(&"acct_none".into(), None, None, None).await,
        Err(StoreError::NotFound)
    ));
}

async fn keys_list_newest_first_with_total((store, _g): Fixture) {
    let (acct, first) = new_account(&*store).await;
    let mut second = key(&acct.account_id);
    second.created_at = first.created_at + Duration::milliseconds(5);
    store.insert_key(&second).await.unwrap();
    let (keys, total) = store.list_keys(&acct.account_id, PAGE).await.unwrap();
    assert_eq!(total, 2);
    assert_eq!(
        keys.iter().map(|k| k.key_id.clone()).collect::<Vec<_>>(),
        vec![second.key_id.clone(), first.key_id.clone()]
    );
    let (page, total) =
        store.list_keys(&acct.account_id, Page { limit: 1, offset: 1 }).await.unwrap();
    assert_eq!((page.len(), total), (1, 2));
    assert_eq!(page[0].key_id, first.key_id);
}

async fn the_last_active_key_cannot_be_revoked((store, _g): Fixture) {
    let (acct, first) = new_account(&*store).await;
    let (other_acct, _) = new_account(&*store).await;
    assert_eq!(
        store.revoke_key(&other_acct.account_id, &first.key_id, now()).await.unwrap(),
        RevokeOutcome::NotFound
    );
    assert_eq!(
        store.revoke_key(&acct.account_id, &first.key_id, now()).await.unwrap(),
        RevokeOutcome::LastActiveKey
    );
    let second = key(&acct.account_id);
    store.insert_key(&second).await.unwrap();
    let at = now();
    let RevokeOutcome::Revoked(revoked) =
        store.revoke_key(&acct.account_id, &first.key_id, at).await.unwrap()
    else {
        panic!("expected revoked");
    };
    assert_eq!(revoked.revoked_at, Some(at));
    // Revoking again is idempotent and keeps the first time.
    let RevokeOutcome::Revoked(again) =
        store.revoke_key(&acct.account_id, &first.key_id, at + Duration::seconds(5)).await.unwrap()
    else {
        panic!("expected revoked");
    };
    assert_eq!(again.revoked_at, Some(at));
    assert_eq!(
        store.revoke_key(&acct.account_id, &second.key_id, now()).await.unwrap(),
        RevokeOutcome::LastActiveKey
    );
    // The keys that sign: the active one only, and none of another account's.
    let active = store.active_keys(&acct.account_id).await.unwrap();
    assert_eq!(active.iter().map(|k| &k.key_id).collect::<Vec<_>>(), [&second.key_id]);
    assert_eq!(active[0].secret_sealed, second.secret_sealed);
    let others = store.active_keys(&other_acct.account_id).await.unwrap();
    assert_eq!(others.len(), 1);
    assert_ne!(others[0].key_id, second.key_id);
}

async fn concurrent_revocations_never_leave_an_account_without_keys((store, _g): Fixture) {
    for _ in 0..5 {
        let (acct, first) = new_account(&*store).await;
        let second = key(&acct.account_id);
        store.insert_key(&second).await.unwrap();
        let (a, b) = tokio::join!(
            store.revoke_key(&acct.account_id, &first.key_id, now()),
            store.revoke_key(&acct.account_id, &second.key_id, now()),
        );
        let outcomes = [a.unwrap(), b.unwrap()];
        let revoked = outcomes.iter().filter(|o| matches!(o, RevokeOutcome::Revoked(_))).count();
        let refused = outcomes.iter().filter(|o| **o == RevokeOutcome::LastActiveKey).count();
        assert_eq!((revoked, refused), (1, 1), "{outcomes:?}");
    }
}

async fn rotation_replaces_the_secret_of_active_keys_only((store, _g): Fixture) {
    let (acct, first) = new_account(&*store).await;
    let at = now();
    let rotated = store.rotate_key(&first.key_id, &"n".repeat(64), "v1:new", at).await.unwrap();
    assert_eq!(rotated.secret_hash, "n".repeat(64));
    assert_eq!(rotated.rotated_at, Some(at));
    let second = key(&acct.account_id);
    store.insert_key(&second).await.unwrap();
    store.revoke_key(&acct.account_id, &first.key_id, now()).await.unwrap();
    assert!(matches!(
        store.rotate_key(&first.key_id, "x", "y", now()).await,
        Err(StoreError::NotFound)
    ));
}

async fn agents_round_trip_and_stay_in_their_account((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let (other, _) = new_account(&*store).await;
    let mut a = agent(&acct.account_id, "Front desk", true);
    a.settings.system_prompt = "Ünïcödé prompt 🚀".to_owned();
    a.settings.temperature = 0.55;
    store.insert_agent(&a).await.unwrap();
    let (found, version) = store.get_agent(&acct.account_id, &a.agent_id).await.unwrap().unwrap();
    assert_eq!(found, a);
    assert_eq!(version, 1);
    assert!(store.get_agent(&other.account_id, &a.agent_id).await.unwrap().is_none());
    assert_eq!(
        store.agent_owner(&a.agent_id).await.unwrap().as_deref(),
        Some(acct.account_id.as_str())
    );
    assert_eq!(store.agent_owner(&"agent_none".into()).await.unwrap(), None);
    assert!(!store.delete_agent(&other.account_id, &a.agent_id).await.unwrap());
    assert!(store.delete_agent(&acct.account_id, &a.agent_id).await.unwrap());
    assert!(!store.delete_agent(&acct.account_id, &a.agent_id).await.unwrap());
    assert!(store.get_agent(&acct.account_id, &a.agent_id).await.unwrap().is_none());
}

async fn agents_list_newest_first_filtered_and_counted((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let base = now();
    let mut ids_newest_first = Vec::new();
    for i in 0..5 {
        let mut a = agent(&acct.account_id, &format!("a{i}"), i % 2 == 0);
        a.created_at = base + Duration::microseconds(i * 1500);
        store.insert_agent(&a).await.unwrap();
        ids_newest_first.insert(0, a.agent_id);
    }
    let (all, total) = store.list_agents(&acct.account_id, None, PAGE).await.unwrap();
    assert_eq!(total, 5);
    assert_eq!(all.iter().map(|a| a.agent_id.clone()).collect::<Vec<_>>(), ids_newest_first);
    let (active, total) = store.list_agents(&acct.account_id, Some(true), PAGE).await.unwrap();
    assert_eq!((active.len(), total), (3, 3));
    assert!(active.iter().all(|a| a.settings.is_active));
    let (inactive, total) = store.list_agents(&acct.account_id, Some(false), PAGE).await.unwrap();
    assert_eq!((inactive.len(), total), (2, 2));
    let (page, total) =
        store.list_agents(&acct.account_id, None, Page { limit: 2, offset: 4 }).await.unwrap();
    assert_eq!((page.len(), total), (1, 5));
    assert_eq!(page[0].agent_id, ids_newest_first[4]);
    // The totals are running counts the database keeps (migration 0020): they follow an agent
    // switched off, an edit that keeps the switch, a deletion, and stay in their account.
    let (other, _) = new_account(&*store).await;
    store.insert_agent(&agent(&other.account_id, "elsewhere", true)).await.unwrap();
    let totals = |account: AccountId| {
        let store = store.clone();
        async move {
            let mut totals = Vec::new();
            for filter in [None, Some(true), Some(false)] {
                totals.push(store.list_agents(&account, filter, PAGE).await.unwrap().1);
            }
            totals
        }
    };
    let switch = |active: bool| {
        move |a: &Agent| {
            let mut edited = a.clone();
            edited.settings.is_active = active;
            Ok(edited)
        }
    };
    let first_active = ids_newest_first[0].clone();
    store.modify_agent(&acct.account_id, &first_active, &mut switch(false)).await.unwrap();
    assert_eq!(totals(acct.account_id.clone()).await, [5, 2, 3]);
    store.modify_agent(&acct.account_id, &first_active, &mut switch(false)).await.unwrap();
    assert_eq!(totals(acct.account_id.clone()).await, [5, 2, 3]);
    assert!(store.delete_agent(&acct.account_id, &ids_newest_first[1]).await.unwrap());
    assert_eq!(totals(acct.account_id.clone()).await, [4, 2, 2]);
    assert_eq!(totals(other.account_id.clone()).await, [1, 1, 0]);
}

async fn an_agents_version_is_never_older_than_the_stored_one((store, _g): Fixture) {
    // The API serves an agent's cached JSON by the version `agent_version` gives
    // (docs/decisions.md#api-line-rate): whatever it answers must be what the database holds once
    // edits (optimistic, racing each other) have returned, never going back, and nothing once the
    // agent is deleted.
    let (acct, _) = new_account(&*store).await;
    let a = agent(&acct.account_id, "raced", true);
    store.insert_agent(&a).await.unwrap();
    let stored = |store: Arc<dyn Store>, account: AccountId, id: AgentId| async move {
        store.get_agent(&account, &id).await.unwrap().map(|(_, version)| version)
    };
    for round in 0..10 {
        let mut rename = |current: &Agent| {
            let mut next = current.clone();
            next.settings.name = format!("raced {round}");
            Ok(next)
        };
        store.modify_agent(&acct.account_id, &a.agent_id, &mut rename).await.unwrap();
        let known = store.agent_version(&acct.account_id, &a.agent_id).await.unwrap();
        assert_eq!(known, stored(store.clone(), acct.account_id.clone(), a.agent_id.clone()).await);
        assert_eq!(known, Some(round + 2));
    }
    // Edits racing each other and reads of the version.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (store, stop) = (store.clone(), stop.clone());
            let (account, id) = (acct.account_id.clone(), a.agent_id.clone());
            tokio::spawn(async move {
                let mut last = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let version = store.agent_version(&account, &id).await.unwrap().unwrap();
                    assert!(version >= last, "a version went back: {version} after {last}");
                    last = version;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let edits: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let (account, id) = (acct.account_id.clone(), a.agent_id.clone());
            tokio::spawn(async move {
                let mut append = |current: &Agent| {
                    let mut next = current.clone();
                    next.settings.name = format!("{}+{i}", current.settings.name);
                    Ok(next)
                };
                store.modify_agent(&account, &id, &mut append).await.unwrap().unwrap().unwrap();
                // Read after one's own edit: at least what that edit wrote.
                let known = store.agent_version(&account, &id).await.unwrap().unwrap();
                let (agent, _) = store.get_agent(&account, &id).await.unwrap().unwrap();
                assert!(agent.settings.name.contains(&format!("+{i}")));
                assert!(known >= 12, "{known}");
            })
        })
        .collect();
    for edit in edits {
        edit.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    let known = store.agent_version(&acct.account_id, &a.agent_id).await.unwrap();
    assert_eq!(known, Some(11 + 16));
    assert_eq!(known, stored(store.clone(), acct.account_id.clone(), a.agent_id.clone()).await);
    assert!(store.delete_agent(&acct.account_id, &a.agent_id).await.unwrap());
    assert_eq!(store.agent_version(&acct.account_id, &a.agent_id).await.unwrap(), None);
}

async fn agent_versions_are_read_without_settings_and_move_with_edits((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let (other, _) = new_account(&*store).await;
    let base = now();
    let mut agents = Vec::new();
    for i in 0..4 {
        let mut a = agent(&acct.account_id, &format!("a{i}"), i % 2 == 0);
        a.created_at = base + Duration::microseconds(i * 1500);
        store.insert_agent(&a).await.unwrap();
        agents.push(a);
    }
    let first = &agents[0];
    assert_eq!(store.agent_version(&acct.account_id, &first.agent_id).await.unwrap(), Some(1));
    assert_eq!(store.agent_version(&other.account_id, &first.agent_id).await.unwrap(), None);
    let mut rename = |a: &Agent| {
        let mut edited = a.clone();
        edited.settings.name = "renamed".to_owned();
        Ok(edited)
    };
    store.modify_agent(&acct.account_id, &first.agent_id, &mut rename).await.unwrap();
    assert_eq!(store.agent_version(&acct.account_id, &first.agent_id).await.unwrap(), Some(2));
    // Versions page like the agents themselves.
    let (page, total) = store.list_agent_versions(&acct.account_id, None, PAGE).await.unwrap();
    assert_eq!(total, 4);
    let newest_first: Vec<AgentId> = agents.iter().rev().map(|a| a.agent_id.clone()).collect();
    assert_eq!(page.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), newest_first);
    assert_eq!(page.last().unwrap().1, 2);
    let (active, total) =
        store.list_agent_versions(&acct.account_id, Some(true), PAGE).await.unwrap();
    assert_eq!((active.len(), total), (2, 2));
    // The total comes with the page's rows; past the end, where there are none, it still holds.
    for (filter, offset, expected) in
        [(None, 3, (1, 4)), (None, 4, (0, 4)), (Some(false), 2, (0, 2)), (Some(true), 9, (0, 2))]
    {
        let (page, total) = store
            .list_agent_versions(&acct.account_id, filter, Page { limit: 2, offset })
            .await
            .unwrap();
        assert_eq!((page.len(), total), expected, "{filter:?} from {offset}");
    }
    let (page, total) = store.list_agent_versions(&other.account_id, None, PAGE).await.unwrap();
    assert_eq!((page.len(), total), (0, 0), "an account without agents");
    // Fetched by id, only the account's.
    let wanted = [first.agent_id.clone(), agents[3].agent_id.clone(), "agent_missing".into()];
    let mut fetched = store.get_agents(&acct.account_id, &wanted).await.unwrap();
    fetched.sort_by_key(|(a, _)| a.settings.name.clone());
    assert_eq!(fetched.len(), 2);
    assert_eq!((fetched[1].0.settings.name.as_str(), fetched[1].1), ("renamed", 2));
    assert!(store.get_agents(&other.account_id, &wanted).await.unwrap().is_empty());
    assert!(store.get_agents(&acct.account_id, &[]).await.unwrap().is_empty());
}

async fn agent_edits_are_serialised_and_all_or_nothing((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let (other, _) = new_account(&*store).await;
    let a = agent(&acct.account_id, "v1", true);
    store.insert_agent(&a).await.unwrap();
    let mut rename = |current: &Agent| {
        let mut next = current.clone();
        next.settings.name = "v2".to_owned();
        next.settings.is_active = false;
        next.updated_at = now();
        Ok(next)
    };
    let edited = store.modify_agent(&acct.account_id, &a.agent_id, &mut rename).await.unwrap();
    assert_eq!(edited.unwrap().unwrap().settings.name, "v2");
    let (found, version) = store.get_agent(&acct.account_id, &a.agent_id).await.unwrap().unwrap();
    assert_eq!((found.settings.name.as_str(), version), ("v2", 2));
    let (inactive, _) = store.list_agents(&acct.account_id, Some(false), PAGE).await.unwrap();
    assert_eq!(inactive.len(), 1, "is_active column follows the settings");

    // A refused edit changes nothing.
    let mut refuse =
        |_: &Agent| Err(nixflex_core::validate::ValidationError::invalid("name", "no"));
    let refused = store.modify_agent(&acct.account_id, &a.agent_id, &mut refuse).await.unwrap();
    assert_eq!(refused.unwrap().unwrap_err().field.as_deref(), Some("name"));
    let (after, version) = store.get_agent(&acct.account_id, &a.agent_id).await.unwrap().unwrap();
    assert_eq!((after, version), (found, 2));

    // Another account's agent, or none: nothing to edit.
    let mut touch = |current: &Agent| Ok(current.clone());
    assert!(
        store.modify_agent(&other.account_id, &a.agent_id, &mut touch).await.unwrap().is_none()
    );
    assert!(
        store
            .modify_agent(&acct.account_id, &"agent_ghost".into(), &mut touch)
            .await
            .unwrap()
            .is_none()
    );

    // Concurrent edits queue: each sees the previous one's result, so none is lost.
    let edits = (0..16).map(|i| {
        let store = store.clone();
        let account_id = acct.account_id.clone();
        let agent_id = a.agent_id.clone();
        tokio::spawn(async move {
            let mut append = |current: &Agent| {
                let mut next = current.clone();
                next.settings.name = format!("{}+{i}", current.settings.name);
                Ok(next)
            };
            store
                .modify_agent(&account_id, &agent_id, &mut append)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        })
    });
    for edit in edits.collect::<Vec<_>>() {
        edit.await.unwrap();
    }
    let (last, version) = store.get_agent(&acct.account_id, &a.agent_id).await.unwrap().unwrap();
    assert_eq!(last.settings.name.matches('+').count(), 16, "{}", last.settings.name);
    assert_eq!(version, 18);
}

async fn rate_limit_counters_are_atomic_and_reset_per_window((store, _g): Fixture) {
    let bucket = "acct_1:w";
    assert_eq!(store.rate_limit_add(bucket, 60, 200, 1).await.unwrap(), 1);
    assert_eq!(store.rate_limit_add(bucket, 60, 200, 1).await.unwrap(), 2);
    let hits: Vec<i64> =
        futures::future::join_all((0..40).map(|_| store.rate_limit_add(bucket, 60, 200, 1)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let mut sorted = hits.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (3..=42).collect::<Vec<i64>>(), "every hit counted exactly once");
    assert_eq!(
        store.rate_limit_add(bucket, 120, 260, 1).await.unwrap(),
        1,
        "a new window starts at 1"
    );
    assert_eq!(store.rate_limit_add("other", 120, 100, 1).await.unwrap(), 1);
    assert_eq!(store.purge_rate_limits(150).await.unwrap(), 1);
    assert_eq!(store.rate_limit_add(bucket, 120, 260, 1).await.unwrap(), 2);
}

async fn rate_limit_flushes_add_up_across_nodes_and_never_rewind_a_window((store, _g): Fixture) {
    let bucket = "acct_1:r";
    assert_eq!(store.rate_limit_add(bucket, 60, 200, 0).await.unwrap(), 0, "a read writes nothing");
    assert_eq!(store.rate_limit_add(bucket, 60, 200, 3).await.unwrap(), 3);
    // Two nodes flushing at once: every request is counted once.
    let totals: Vec<i64> =
        futures::future::join_all((0..20).map(|_| store.rate_limit_add(bucket, 60, 200, 2)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    assert_eq!(totals.iter().max(), Some(&43));
    assert_eq!(store.rate_limit_add(bucket, 60, 200, 0).await.unwrap(), 43);
    assert_eq!(
        store.rate_limit_add(bucket, 60, 200, 1).await.unwrap(),
        44,
        "single requests and flushes share a row"
    );
    // A new window starts from the flushed count; a late flush of the old one does not rewind it.
    assert_eq!(store.rate_limit_add(bucket, 120, 260, 5).await.unwrap(), 5);
    store.rate_limit_add(bucket, 60, 200, 7).await.unwrap();
    assert_eq!(store.rate_limit_add(bucket, 120, 260, 0).await.unwrap(), 5);
    assert_eq!(
        store.rate_limit_add(bucket, 60, 200, 0).await.unwrap(),
        0,
        "the old window is gone"
    );
}

async fn the_auth_epoch_moves_with_every_key_and_limit_change((store, _g): Fixture) {
    let start = store.auth_epoch().await.unwrap();
    let (acct, first) = new_account(&*store).await;
    let after_signup = store.auth_epoch().await.unwrap();
    assert!(after_signup > start, "a new account and key");
    let second = key(&acct.account_id);
    store.insert_key(&second).await.unwrap();
    let after_insert = store.auth_epoch().await.unwrap();
    assert!(after_insert > after_signup, "a new key");
    store.rotate_key(&first.key_id, &"n".repeat(64), "v1:new", now()).await.unwrap();
    let after_rotate = store.auth_epoch().await.unwrap();
    assert!(after_rotate > after_insert, "a rotation");
    store.revoke_key(&acct.account_id, &first.key_id, now()).await.unwrap();
    let after_revoke = store.auth_epoch().await.unwrap();
    assert!(after_revoke > after_rotate, "a revocation");
    store.set_account_limits(&acct.account_id, Some(2), Some(10), None).await.unwrap();
    let after_limits = store.auth_epoch().await.unwrap();
    assert!(after_limits > after_revoke, "new limits");
    // Refused changes leave it alone.
    assert_eq!(
        store.revoke_key(&acct.account_id, &second.key_id, now()).await.unwrap(),
        RevokeOutcome::LastActiveKey
    );
    assert!(matches!(
        store.rotate_key(&first.key_id, "x", "y", now()).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.auth_epoch().await.unwrap(), after_limits);
}

async fn idempotency_keys_start_once_then_replay((store, _g): Fixture) {
    let s = scope("k1");
    assert_eq!(
        store.idempotency_begin(&s, "fp", 1000, 1060, 0).await.unwrap(),
        IdempotencyBegin::Started
    );
    assert_eq!(
        store.idempotency_begin(&s, "fp", 1001, 1061, 0).await.unwrap(),
        IdempotencyBegin::InFlight
    );
    assert_eq!(
        store.idempotency_begin(&s, "other", 1001, 1061, 0).await.unwrap(),
        IdempotencyBegin::Mismatch
    );
    let response = StoredResponse {
        status_code: 201,
        content_type: Some("application/json".to_owned()),
        body: b"{\"ok\":1}".to_vec(),
    };
    store.idempotency_complete(&s, &response).await.unwrap();
    assert_eq!(
        store.idempotency_begin(&s, "fp", 1002, 1062, 0).await.unwrap(),
        IdempotencyBegin::Replay(response)
    );
    assert_eq!(
        store.idempotency_begin(&s, "other", 1002, 1062, 0).await.unwrap(),
        IdempotencyBegin::Mismatch
    );
    // Past retention the key is free again, even for another request.
    assert_eq!(
        store.idempotency_begin(&s, "other", 90_000, 90_060, 1001).await.unwrap(),
        IdempotencyBegin::Started
    );
    // Scope parts are independent.
    let mut elsewhere = scope("k1");
    elsewhere.path = "/v1/keys".to_owned();
    assert_eq!(
        store.idempotency_begin(&elsewhere, "fp", 1000, 1060, 0).await.unwrap(),
        IdempotencyBegin::Started
    );
}

async fn abandoned_and_failed_idempotent_requests_can_run_again((store, _g): Fixture) {
    let s = scope("k2");
    assert_eq!(
        store.idempotency_begin(&s, "fp", 1000, 1060, 0).await.unwrap(),
        IdempotencyBegin::Started
    );
    store.idempotency_abandon(&s).await.unwrap();
    assert_eq!(
        store.idempotency_begin(&s, "fp", 1001, 1061, 0).await.unwrap(),
        IdempotencyBegin::Started
    );
    // A crashed node's lease runs out: the same request may take over, a different one may not.
    assert_eq!(
        store.idempotency_begin(&s, "zz", 2000, 2060, 0).await.unwrap(),
        IdempotencyBegin::Mismatch
    );
    assert_eq!(
        store.idempotency_begin(&s, "fp", 2000, 2060, 0).await.unwrap(),
        IdempotencyBegin::Started
    );
    assert_eq!(
        store.idempotency_begin(&s, "fp", 2001, 2061, 0).await.unwrap(),
        IdempotencyBegin::InFlight
    );
    assert_eq!(
        store.purge_idempotency(2030).await.unwrap(),
        0,
        "an in-flight record whose lease is live is not purged"
    );
    store
        .idempotency_complete(
            &s,
            &StoredResponse { status_code: 200, content_type: None, body: vec![] },
        )
        .await
        .unwrap();
    assert_eq!(store.purge_idempotency(5000).await.unwrap(), 1);
    // A request lost with a crashed node leaves an in-flight record whose lease ran out: it is
    // purged with the rest once it is old enough.
    let lost = scope("k-lost");
    assert_eq!(
        store.idempotency_begin(&lost, "fp", 100, 160, 0).await.unwrap(),
        IdempotencyBegin::Started
    );
    assert_eq!(store.purge_idempotency(5000).await.unwrap(), 1, "abandoned in-flight records go");
    assert_eq!(
        store.idempotency_begin(&lost, "other", 5001, 5061, 0).await.unwrap(),
        IdempotencyBegin::Started,
        "the key is free again"
    );
}

async fn concurrent_duplicates_start_exactly_once((store, _g): Fixture) {
    let s = scope("k3");
    let outcomes = futures::future::join_all(
        (0..12).map(|_| store.idempotency_begin(&s, "fp", 1000, 1060, 0)),
    )
    .await;
    let started = outcomes.iter().filter(|o| matches!(o, Ok(IdempotencyBegin::Started))).count();
    let in_flight = outcomes.iter().filter(|o| matches!(o, Ok(IdempotencyBegin::InFlight))).count();
    assert_eq!((started, in_flight), (1, 11), "{outcomes:?}");
}

async fn server_meta_keeps_the_first_value((store, _g): Fixture) {
    assert_eq!(store.meta_get_or_put("canary", "one").await.unwrap(), "one");
    assert_eq!(store.meta_get_or_put("canary", "two").await.unwrap(), "one");
    store.ping().await.unwrap();
    // Refreshing the planner's statistics changes no data.
    store.analyze().await.unwrap();
    assert_eq!(store.meta_get_or_put("canary", "three").await.unwrap(), "one");
}

async fn timestamps_round_trip_in_utc_at_microsecond_precision((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let stored = store.get_account(&acct.account_id).await.unwrap().unwrap();
    assert_eq!(stored.created_at, acct.created_at);
    assert_eq!(stored.created_at.timezone(), chrono::Utc);
}

fn number(account_id: &str, agent_id: Option<&str>, phone: &str) -> PhoneNumber {
    let agent_id = agent_id.map(AgentId::from);
    let mut number =
        nixflex_store::testing::phone_number(&account_id.into(), agent_id.as_ref(), phone);
    number.settings =
        NumberSettings { custom_prompt: Some("Bakery".to_owned()), ..NumberSettings::default() };
    number
}

async fn imported(store: &dyn Store, n: &PhoneNumber) {
    store
        .reserve_number(
            n,
            &json!({"voice_url": "https://old.example.com"}),
            now() - Duration::minutes(10),
        )
        .await
        .unwrap();
    store.activate_number(&n.phone_number).await.unwrap();
}

fn obj(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

async fn numbers_are_reserved_then_activated((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let (other, _) = new_account(&*store).await;
    let a = agent(&acct.account_id, "a", true);
    store.insert_agent(&a).await.unwrap();
    let n = number(&acct.account_id, Some(&a.agent_id), "+447446466847");
    let stale_before = now() - Duration::minutes(10);
    store.reserve_number(&n, &json!({}), stale_before).await.unwrap();
    assert!(
        store.get_number(&acct.account_id, &n.phone_number).await.unwrap().is_none(),
        "pending is invisible"
    );
    assert!(store.find_active_number(&n.phone_number).await.unwrap().is_none());
    assert!(store.number_taken(&n.phone_number, stale_before).await.unwrap());
    let rival = number(&other.account_id, None, "+447446466847");
    assert!(matches!(
        store.reserve_number(&rival, &json!({}), stale_before).await,
        Err(StoreError::Conflict { .. })
    ));
    store.activate_number(&n.phone_number).await.unwrap();
    let (found, version) =
        store.get_number(&acct.account_id, &n.phone_number).await.unwrap().unwrap();
    assert_eq!(found, n);
    assert_eq!(version, 1);
    assert_eq!(store.find_active_number(&n.phone_number).await.unwrap(), Some(n.clone()));
    assert!(store.get_number(&other.account_id, &n.phone_number).await.unwrap().is_none());
    assert!(matches!(store.activate_number(&n.phone_number).await, Err(StoreError::NotFound)));
}

async fn failed_and_stale_reservations_free_the_number((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let n = number(&acct.account_id, None, "+14155552671");
    store.reserve_number(&n, &json!({}), now() - Duration::minutes(10)).await.unwrap();
    store.release_number(&n.phone_number).await.unwrap();
    assert!(!store.number_taken(&n.phone_number, now() - Duration::minutes(10)).await.unwrap());
    // A reservation left by a crashed import is taken over once stale.
    store.reserve_number(&n, &json!({}), now() - Duration::minutes(10)).await.unwrap();
    assert!(!store.number_taken(&n.phone_number, now() + Duration::seconds(1)).await.unwrap());
    let mut again = n.clone();
    again.created_at = now();
    store.reserve_number(&again, &json!({}), now() + Duration::seconds(1)).await.unwrap();
    store.activate_number(&n.phone_number).await.unwrap();
    // Releasing never removes an active number.
    store.release_number(&n.phone_number).await.unwrap();
    assert!(store.get_number(&acct.account_id, &n.phone_number).await.unwrap().is_some());
}

async fn numbers_list_update_and_follow_their_agent((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let a = agent(&acct.account_id, "a", true);
    let b = agent(&acct.account_id, "b", true);
    store.insert_agent(&a).await.unwrap();
    store.insert_agent(&b).await.unwrap();
    let base = now();
    for (i, phone) in ["+447446466801", "+447446466802", "+447446466803"].iter().enumerate() {
        let mut n =
            number(&acct.account_id, Some(if i == 0 { &b.agent_id } else { &a.agent_id }), phone);
        n.created_at = base + Duration::milliseconds(i as i64);
        imported(&*store, &n).await;
    }
    let (all, total) = store.list_numbers(&acct.account_id, None, PAGE).await.unwrap();
    assert_eq!(total, 3);
    assert_eq!(
        all.iter().map(|n| n.phone_number.as_str()).collect::<Vec<_>>(),
        ["+447446466803", "+447446466802", "+447446466801"]
    );
    let (of_a, total) =
        store.list_numbers(&acct.account_id, Some(&a.agent_id), PAGE).await.unwrap();
    assert_eq!((of_a.len(), total), (2, 2));

    let (mut n, version) =
        store.get_number(&acct.account_id, &"+447446466801".into()).await.unwrap().unwrap();
    n.agent_id = Some(a.agent_id.clone());
    n.outbound_enabled = false;
    n.settings.voice_id = Some("Olivia".to_owned());
    n.updated_at = now();
    store.update_number(&n, version).await.unwrap();
    assert!(matches!(
        store.update_number(&n, version).await,
        Err(StoreError::Conflict { constraint: "version" })
    ));
    let (stored, _) =
        store.get_number(&acct.account_id, &"+447446466801".into()).await.unwrap().unwrap();
    assert_eq!(stored, n);

    // Deleting the agent orphans its numbers instead of deleting them.
    assert!(store.delete_agent(&acct.account_id, &a.agent_id).await.unwrap());
    let (all, _) = store.list_numbers(&acct.account_id, None, PAGE).await.unwrap();
    assert!(all.iter().all(|n| n.agent_id.is_none()), "{all:?}");
}

async fn deleting_a_number_erases_its_callers_and_integrations((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let (other, _) = new_account(&*store).await;
    let n = number(&acct.account_id, None, "+447446466847");
    imported(&*store, &n).await;
    assert!(
        store
            .set_number_url(
                &acct.account_id,
                &n.phone_number,
                NumberUrlSlot::Webhook,
                Some("https://h.example.com/1")
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .set_number_url(
                &acct.account_id,
                &n.phone_number,
                NumberUrlSlot::Webhook2,
                Some("https://h.example.com/2")
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .set_number_url(
                &acct.account_id,
                &n.phone_number,
                NumberUrlSlot::Precall,
                Some("https://h.example.com/gate")
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_number_url(
                &other.account_id,
                &n.phone_number,
                NumberUrlSlot::Webhook,
                Some("https://evil.example.com")
            )
            .await
            .unwrap()
    );
    let (stored, _) = store.get_number(&acct.account_id, &n.phone_number).await.unwrap().unwrap();
    assert_eq!(stored.webhook_url.as_deref(), Some("https://h.example.com/1"));
    assert_eq!(stored.webhook2_url.as_deref(), Some("https://h.example.com/2"));
    assert_eq!(stored.precall_url.as_deref(), Some("https://h.example.com/gate"));
    store
        .upsert_callers(
            &n.phone_number,
            &[("+447386172392".to_owned(), obj(json!({"name": "Ann"})))],
            now(),
        )
        .await
        .unwrap();
    assert!(!store.delete_number(&other.account_id, &n.phone_number).await.unwrap());
    assert!(store.delete_number(&acct.account_id, &n.phone_number).await.unwrap());
    assert!(store.get_caller(&n.phone_number, "+447386172392").await.unwrap().is_none());
    // Re-importing starts clean.
    imported(&*store, &n).await;
    let (fresh, _) = store.get_number(&acct.account_id, &n.phone_number).await.unwrap().unwrap();
    assert_eq!((fresh.webhook_url, fresh.precall_url), (None, None));
    assert!(store.get_caller(&n.phone_number, "+447386172392").await.unwrap().is_none());
}

async fn agent_precall_urls_stay_in_their_account((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let (other, _) = new_account(&*store).await;
    let a = agent(&acct.account_id, "a", true);
    store.insert_agent(&a).await.unwrap();
    assert_eq!(store.get_agent_precall(&acct.account_id, &a.agent_id).await.unwrap(), Some(None));
    assert!(
        store
            .set_agent_precall(&acct.account_id, &a.agent_id, Some("https://gate.example.com"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_agent_precall(&acct.account_id, &a.agent_id).await.unwrap(),
        Some(Some("https://gate.example.com".to_owned()))
    );
    assert!(!store.set_agent_precall(&other.account_id, &a.agent_id, None).await.unwrap());
    assert_eq!(store.get_agent_precall(&other.account_id, &a.agent_id).await.unwrap(), None);
    // The gate is not part of the settings document: updating the agent keeps it.
    let mut rename = |current: &Agent| {
        let mut next = current.clone();
        next.settings.name = "renamed".to_owned();
        Ok(next)
    };
    store.modify_agent(&acct.account_id, &a.agent_id, &mut rename).await.unwrap().unwrap().unwrap();
    assert_eq!(
        store.get_agent_precall(&acct.account_id, &a.agent_id).await.unwrap(),
        Some(Some("https://gate.example.com".to_owned()))
    );
}

async fn caller_context_merges_patches((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let n = number(&acct.account_id, None, "+447446466847");
    imported(&*store, &n).await;
    let caller = "+447386172392".to_owned();
    let first = now();
    store
        .upsert_callers(
            &n.phone_number,
            &[(caller.clone(), obj(json!({"name": "Ann", "email": "ann@example.com"})))],
            first,
        )
        .await
        .unwrap();
    let later = first + Duration::seconds(1);
    let out = store
        .upsert_callers(
            &n.phone_number,
            &[(caller.clone(), obj(json!({"email": null, "location": "Leeds"})))],
            later,
        )
        .await
        .unwrap();
    assert_eq!(Value::Object(out[0].context.clone()), json!({"name": "Ann", "location": "Leeds"}));
    let stored = store.get_caller(&n.phone_number, &caller).await.unwrap().unwrap();
    assert_eq!(stored.context, out[0].context);
    assert_eq!((stored.created_at, stored.updated_at), (first, later));
    let patch_a = [(caller.clone(), obj(json!({"phone": "+14155552671"})))];
    let patch_b = [(caller.clone(), obj(json!({"preference": "mornings"})))];
    let (a, b) = tokio::join!(
        store.upsert_callers(&n.phone_number, &patch_a, later),
        store.upsert_callers(&n.phone_number, &patch_b, later),
    );
    a.unwrap();
    b.unwrap();
    let merged = store.get_caller(&n.phone_number, &caller).await.unwrap().unwrap();
    assert_eq!(merged.context.len(), 4, "concurrent patches both land: {:?}", merged.context);
    assert!(store.delete_caller(&n.phone_number, &caller).await.unwrap());
    assert!(!store.delete_caller(&n.phone_number, &caller).await.unwrap());
}

fn call(account_id: &str, agent_id: &str, from: &str, to: &str) -> CallRecord {
    let at = now();
    CallRecord {
        call_id: ids::new_call_id(),
        account_id: account_id.into(),
        agent_id: Some(agent_id.into()),
        direction: Direction::Inbound,
        from_number: from.to_owned(),
        to_number: to.to_owned(),
        twilio_call_sid: Some(format!("CA{}", &ids::new_call_id()[5..])),
        call_status: CallStatus::InProgress,
        ended_reason: None,
        started_at: at,
        answered_at: Some(at),
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
        campaign_id: None,
        metadata: Some(json!({"crm": 7})),
        cost_usd: None,
        function_calls: Vec::new(),
        provider_events: Vec::new(),
        precall_reject_reason: None,
        amd_result: None,
        voicemail_detection_method: None,
        carrier_details: None,
        stream_token_hash: Some("h".repeat(64)),
        created_at: at,
        updated_at: at,
    }
}

async fn a_deferred_job_waits_without_spending_an_attempt((store, _g): Fixture) {
    let j = job("t.defer", "d", 1);
    store.enqueue_job(&j).await.unwrap();
    let t = now();
    let claimed = store.claim_jobs("n", 1, t + Duration::seconds(30), t).await.unwrap();
    let later = t + Duration::seconds(5);
    assert!(store.defer_job(&claimed[0].lease(), later, t).await.unwrap());
    assert!(!store.defer_job(&claimed[0].lease(), later, t).await.unwrap(), "the lease is gone");
    let queued = store.get_job(&j.job_id).await.unwrap().unwrap();
    assert_eq!((queued.state, queued.attempts, queued.run_at), (JobState::Queued, 0, later));
    assert!(store.claim_jobs("n", 1, t + Duration::seconds(30), t).await.unwrap().is_empty());
    // Its one attempt is still there to fail (or succeed) with.
    let again = store.claim_jobs("n", 1, later + Duration::seconds(30), later).await.unwrap();
    assert_eq!(again[0].attempts, 1);
    assert!(store.complete_job(&again[0].lease(), later).await.unwrap());
}

async fn carrier_recordings_are_noted_until_cleared((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let c = call(&acct.account_id, "agent_x", "+447386172392", "+14155552671");
    store.insert_call(&c).await.unwrap();
    assert_eq!(store.carrier_recording(&c.call_id).await.unwrap(), None);
    assert!(store.set_carrier_recording(&c.call_id, "RE1", now()).await.unwrap());
    assert_eq!(store.carrier_recording(&c.call_id).await.unwrap().as_deref(), Some("RE1"));
    assert!(!store.clear_carrier_recording(&c.call_id, "RE2", now()).await.unwrap(), "another SID");
    assert!(store.clear_carrier_recording(&c.call_id, "RE1", now()).await.unwrap());
    assert_eq!(store.carrier_recording(&c.call_id).await.unwrap(), None);
    let gone = ids::new_call_id();
    assert!(!store.set_carrier_recording(&gone, "RE1", now()).await.unwrap());
    assert_eq!(store.carrier_recording(&gone).await.unwrap(), None);
}

async fn calls_are_admitted_up_to_the_cap((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let alive_after = now() - Duration::minutes(2);
    for _ in 0..3 {
        let c = call(&acct.account_id, "agent_x", "+447386172392", "+14155552671");
        assert_eq!(store.admit_call(&c, 3, alive_after).await.unwrap(), Admission::Admitted);
    }
    let extra = call(&acct.account_id, "agent_x", "+447386172392", "+14155552671");
    assert_eq!(
        store.admit_call(&extra, 3, alive_after).await.unwrap(),
        Admission::AtCapacity { active: 3 }
    );
    assert!(
        store.find_call(&extra.call_id).await.unwrap().is_none(),
        "nothing inserted at capacity"
    );
    // Ending one frees a place; a call whose media session went silent stops counting.
    let (calls, _) =
        store.list_calls(&acct.account_id, &CallFilter::default(), PAGE).await.unwrap();
    store
        .update_call(
            &calls[0].call_id,
            &CallUpdate { call_status: Some(CallStatus::Completed), ..CallUpdate::default() },
            now(),
        )
        .await
        .unwrap();
    assert_eq!(store.admit_call(&extra, 3, alive_after).await.unwrap(), Admission::Admitted);
    let later = call(&acct.account_id, "agent_x", "+447386172392", "+14155552671");
    assert_eq!(
        store.admit_call(&later, 3, now() + Duration::seconds(1)).await.unwrap(),
        Admission::Admitted,
        "stale sessions are not live"
    );
}

async fn concurrent_admissions_never_exceed_the_cap((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let alive_after = now() - Duration::minutes(2);
    let calls: Vec<CallRecord> =
        (0..8).map(|_| call(&acct.account_id, "a", "+447386172392", "+14155552671")).collect();
    let outcomes =
        futures::future::join_all(calls.iter().map(|c| store.admit_call(c, 3, alive_after))).await;
    let admitted = outcomes.iter().filter(|o| matches!(o, Ok(Admission::Admitted))).count();
    assert_eq!(admitted, 3, "{outcomes:?}");
}

async fn call_updates_keep_first_outcomes((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let c = call(&acct.account_id, "a", "+447386172392", "+14155552671");
    store.insert_call(&c).await.unwrap();
    assert!(
        matches!(
            store.insert_call(&CallRecord { call_id: ids::new_call_id(), ..c.clone() }).await,
            Err(StoreError::Conflict { .. })
        ),
        "one row per Twilio SID"
    );
    let transcript = vec![TranscriptEntry {
        role: TranscriptRole::Agent,
        text: "Hello!".to_owned(),
        timestamp_ms: 120,
    }];
    let turns = vec![TurnLatency { turn: 1, total_ms: 312.5, ..TurnLatency::default() }];
    let function_calls = vec![nixflex_core::call::FunctionCallLog {
        name: "check_stock".to_owned(),
        arguments: json!({"item": "croissant"}),
        status: nixflex_core::call::FunctionCallStatus::Timeout,
        http_status: None,
        latency_ms: 3001,
        at_ms: 4200,
    }];
    assert!(c.function_calls.is_empty());
    let ended = now();
    let first = CallUpdate {
        call_status: Some(CallStatus::Completed),
        ended_reason: Some(EndedReason::Completed),
        ended_at: Some(ended),
        duration_seconds: Some(42),
        transcript: Some(transcript.clone()),
        turns: Some(turns.clone()),
        function_calls: Some(function_calls.clone()),
        avg_latency_ms: Some(312.5),
        ..CallUpdate::default()
    };
    assert!(store.update_call(&c.call_id, &first, now()).await.unwrap());
    let late = CallUpdate {
        call_status: Some(CallStatus::InProgress),
        ended_reason: Some(EndedReason::CallerHangup),
        ended_at: Some(ended + Duration::seconds(3)),
        ..CallUpdate::default()
    };
    store.update_call(&c.call_id, &late, now()).await.unwrap();
    let stored = store.find_call(&c.call_id).await.unwrap().unwrap();
    assert_eq!(
        (
            stored.call_status.as_str(),
            stored.ended_reason.map(EndedReason::as_str),
            stored.ended_at
        ),
        ("completed", Some("completed"), Some(ended))
    );
    assert_eq!(
        (stored.transcript, stored.turns, stored.duration_seconds),
        (transcript, turns, Some(42))
    );
    assert_eq!(stored.function_calls, function_calls, "later updates without them keep them");
    assert_eq!(stored.metadata, Some(json!({"crm": 7})));
    assert!(!store.update_call(&"call_missing".into(), &first, now()).await.unwrap());
}

async fn updates_merged_with_then_write_what_they_would_one_by_one((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let t = now();
    let line = |text: &str| TranscriptEntry {
        role: TranscriptRole::Agent,
        text: text.to_owned(),
        timestamp_ms: 120,
    };
    let mut unanswered = call(&acct.account_id, "a", "+447386172392", "+14155552671");
    unanswered.answered_at = None;
    unanswered.twilio_call_sid = None;
    unanswered.call_status = CallStatus::Ringing;
    let sequences: Vec<Vec<CallUpdate>> = vec![
        vec![
            CallUpdate {
                call_status: Some(CallStatus::InProgress),
                answered_at: Some(t),
                heartbeat_at: Some(t),
                ..CallUpdate::default()
            },
            CallUpdate {
                transcript: Some(vec![line("Hi")]),
                heartbeat_at: Some(t + Duration::seconds(1)),
                ..CallUpdate::default()
            },
            CallUpdate { twilio_call_sid: Some("CA1".to_owned()), ..CallUpdate::default() },
            CallUpdate {
                answered_at: Some(t + Duration::seconds(9)),
                twilio_call_sid: Some("CA2".to_owned()),
                transcript: Some(vec![line("Hi"), line("Bye")]),
                avg_latency_ms: Some(420.0),
                ..CallUpdate::default()
            },
        ],
        vec![
            CallUpdate {
                call_status: Some(CallStatus::Completed),
                ended_reason: Some(EndedReason::Completed),
                ended_at: Some(t),
                ..CallUpdate::default()
            },
            CallUpdate {
                call_status: Some(CallStatus::InProgress),
                ended_reason: Some(EndedReason::CallerHangup),
                ended_at: Some(t + Duration::seconds(3)),
                duration_seconds: Some(5),
                ..CallUpdate::default()
            },
        ],
        vec![
            CallUpdate {
                voicemail_detected: Some(true),
                billable_seconds: Some(10),
                ..CallUpdate::default()
            },
            CallUpdate { call_status: Some(CallStatus::Busy), ..CallUpdate::default() },
            CallUpdate {
                voicemail_detected: Some(false),
                duration_seconds: Some(2),
                ..CallUpdate::default()
            },
        ],
    ];
    for (i, updates) in sequences.into_iter().enumerate() {
        // One after the other (the twilio_call_sid is unique: the first call goes first).
        let one_by_one = CallRecord { call_id: ids::new_call_id(), ..unanswered.clone() };
        store.insert_call(&one_by_one).await.unwrap();
        for update in &updates {
            store.update_call(&one_by_one.call_id, update, t).await.unwrap();
        }
        let a = store.find_call(&one_by_one.call_id).await.unwrap().unwrap();
        assert!(store.delete_call(&acct.account_id, &one_by_one.call_id).await.unwrap());
        let merged = CallRecord { call_id: ids::new_call_id(), ..unanswered.clone() };
        store.insert_call(&merged).await.unwrap();
        let all = updates.into_iter().reduce(CallUpdate::then).unwrap();
        store.update_call(&merged.call_id, &all, t).await.unwrap();
        let b = store.find_call(&merged.call_id).await.unwrap().unwrap();
        assert_eq!(CallRecord { call_id: a.call_id.clone(), ..b }, a, "sequence {i}");
    }
}

async fn a_new_stream_token_replaces_the_old_one((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let c = call(&acct.account_id, "a", "+447386172392", "+14155552671");
    store.insert_call(&c).await.unwrap();
    let update = CallUpdate { stream_token_hash: Some("n".repeat(64)), ..CallUpdate::default() };
    assert!(store.update_call(&c.call_id, &update, now()).await.unwrap());
    let stored = store.find_call(&c.call_id).await.unwrap().unwrap();
    assert_eq!(stored.stream_token_hash, Some("n".repeat(64)));
    // Other updates leave it alone.
    let status = CallUpdate { call_status: Some(CallStatus::Ringing), ..CallUpdate::default() };
    store.update_call(&c.call_id, &status, now()).await.unwrap();
    let stored = store.find_call(&c.call_id).await.unwrap().unwrap();
    assert_eq!(stored.stream_token_hash, Some("n".repeat(64)));
}

async fn calls_by_sid_stay_in_their_account_and_number((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let (other, _) = new_account(&*store).await;
    let business = "+14155552671";
    let inbound = call(&acct.account_id, "a", "+447386172392", business);
    let mut outbound = call(&acct.account_id, "a", business, "+447386172392");
    outbound.direction = Direction::Outbound;
    store.insert_call(&inbound).await.unwrap();
    store.insert_call(&outbound).await.unwrap();
    for c in [&inbound, &outbound] {
        let sid = c.twilio_call_sid.as_deref().unwrap();
        let found = |account: AccountId, number: Option<&'static str>| {
            let store = store.clone();
            let sid = sid.to_owned();
            async move {
                store
                    .get_call_by_sid(&account, &sid, number.map(E164::from).as_ref())
                    .await
                    .unwrap()
                    .map(|c| c.call_id)
            }
        };
        assert_eq!(found(acct.account_id.clone(), None).await, Some(c.call_id.clone()));
        assert_eq!(found(acct.account_id.clone(), Some(business)).await, Some(c.call_id.clone()));
        assert_eq!(found(acct.account_id.clone(), Some("+14155552672")).await, None);
        // The caller's side of the call is not the business number.
        assert_eq!(found(acct.account_id.clone(), Some("+447386172392")).await, None);
        assert_eq!(found(other.account_id.clone(), None).await, None);
        assert_eq!(found(other.account_id.clone(), Some(business)).await, None);
    }
}

async fn calls_list_with_filters_and_delete((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let (other, _) = new_account(&*store).await;
    let base = now();
    let mut ids = Vec::new();
    for i in 0..6 {
        let mut c = call(
            &acct.account_id,
            if i < 4 { "a1" } else { "a2" },
            &format!("+44738617230{i}"),
            "+14155552671",
        );
        c.created_at = base + Duration::milliseconds(i);
        c.started_at = base + Duration::seconds(i);
        if i % 2 == 1 {
            c.direction = Direction::Outbound;
            c.call_status = CallStatus::Completed;
        }
        store.insert_call(&c).await.unwrap();
        ids.push(c.call_id);
    }
    store
        .insert_call(&call(&other.account_id, "a1", "+447386172300", "+14155552671"))
        .await
        .unwrap();
    let (all, total) =
        store.list_calls(&acct.account_id, &CallFilter::default(), PAGE).await.unwrap();
    assert_eq!(total, 6);
    assert_eq!(all[0].call_id, ids[5], "newest first");
    let count = |filter: CallFilter| {
        let store = store.clone();
        let account = acct.account_id.clone();
        async move { store.list_calls(&account, &filter, PAGE).await.unwrap().1 }
    };
    assert_eq!(
        count(CallFilter { agent_id: Some("a1".to_owned()), ..CallFilter::default() }).await,
        4
    );
    assert_eq!(
        count(CallFilter { direction: Some(Direction::Outbound), ..CallFilter::default() }).await,
        3
    );
    assert_eq!(
        count(CallFilter {
            call_status: Some(CallStatus::Completed),
            agent_id: Some("a2".to_owned()),
            ..CallFilter::default()
        })
        .await,
        1
    );
    assert_eq!(
        count(CallFilter {
            from_number: Some("+447386172302".to_owned()),
            ..CallFilter::default()
        })
        .await,
        1
    );
    assert_eq!(
        count(CallFilter {
            since: Some(base + Duration::seconds(2)),
            until: Some(base + Duration::seconds(4)),
            ..CallFilter::default()
        })
        .await,
        2
    );
    assert_eq!(
        count(CallFilter { voicemail_detected: Some(true), ..CallFilter::default() }).await,
        0
    );
    assert!(!store.delete_call(&other.account_id, &ids[0]).await.unwrap());
    assert!(store.delete_call(&acct.account_id, &ids[0]).await.unwrap());
    assert_eq!(store.delete_all_calls(&acct.account_id).await.unwrap(), 5);
    assert_eq!(
        store.list_calls(&other.account_id, &CallFilter::default(), PAGE).await.unwrap().1,
        1,
        "other accounts keep theirs"
    );
}

async fn calls_inserted_in_a_batch_land_all_or_none((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let batch: Vec<CallRecord> = (0..50)
        .map(|i| call(&acct.account_id, "a1", &format!("+4473861723{i:02}"), "+14155552671"))
        .collect();
    store.insert_calls(&batch).await.unwrap();
    let listed = store.list_calls(&acct.account_id, &CallFilter::default(), PAGE).await.unwrap();
    assert_eq!(listed.1, 50);
    // A duplicate anywhere in the batch writes nothing of it.
    let mut again = vec![call(&acct.account_id, "a1", "+447386172399", "+14155552671")];
    again.push(batch[10].clone());
    assert!(matches!(store.insert_calls(&again).await, Err(StoreError::Conflict { .. })));
    let listed = store.list_calls(&acct.account_id, &CallFilter::default(), PAGE).await.unwrap();
    assert_eq!(listed.1, 50);
}

async fn the_unfiltered_calls_total_is_exact_through_inserts_and_deletes((store, _g): Fixture) {
    // The unfiltered total is a running count kept by the database (migration 0018); it must
    // agree with a real count after every kind of insert and delete.
    let (acct, _) = new_account(&*store).await;
    let (other, _) = new_account(&*store).await;
    let total = |account: AccountId| {
        let store = store.clone();
        async move { store.list_calls(&account, &CallFilter::default(), PAGE).await.unwrap().1 }
    };
    assert_eq!(total(acct.account_id.clone()).await, 0, "an account without calls");
    let batch: Vec<CallRecord> = (0..7)
        .map(|i| call(&acct.account_id, "a1", &format!("+4473861724{i:02}"), "+14155552671"))
        .collect();
    store.insert_calls(&batch).await.unwrap();
    let one = call(&acct.account_id, "a2", "+447386172499", "+14155552671");
    store.insert_call(&one).await.unwrap();
    store
        .insert_call(&call(&other.account_id, "a1", "+447386172498", "+14155552671"))
        .await
        .unwrap();
    assert_eq!(total(acct.account_id.clone()).await, 8);
    assert_eq!(total(other.account_id.clone()).await, 1);
    // A failed batch (a duplicate inside) counts nothing.
    assert!(store.insert_calls(&[batch[0].clone()]).await.is_err());
    assert_eq!(total(acct.account_id.clone()).await, 8);
    assert!(store.delete_call(&acct.account_id, &one.call_id).await.unwrap());
    assert_eq!(total(acct.account_id.clone()).await, 7);
    // The filtered count still counts: the same rows, one filter that matches them all.
    let filtered = store
        .list_calls(
            &acct.account_id,
            &CallFilter { agent_id: Some("a1".to_owned()), ..CallFilter::default() },
            PAGE,
        )
        .await
        .unwrap()
        .1;
    assert_eq!(filtered, 7);
    assert_eq!(store.delete_all_calls(&acct.account_id).await.unwrap(), 7);
    assert_eq!(total(acct.account_id.clone()).await, 0);
    assert_eq!(total(other.account_id.clone()).await, 1, "other accounts keep theirs");
}

async fn every_filtered_calls_total_agrees_with_the_calls_through_inserts_updates_and_deletes(
    (store, _g): Fixture,
) {
    // The totals of single-filter lists come from tallies the database keeps (migration 0019,
    // docs/decisions.md#call-tallies); each must equal what the stored calls say, after every
    // kind of write that can move a call between tallies.
    use chrono::{DateTime, TimeZone as _, Utc};
    let (acct, _) = new_account(&*store).await;
    let (other, _) = new_account(&*store).await;
    let hour = Utc.with_ymd_and_hms(2026, 11, 2, 9, 0, 0).unwrap();
    let at = |minutes: i64, millis: i64| {
        hour + Duration::minutes(minutes) + Duration::milliseconds(millis)
    };
    // Calls on hour boundaries and either side of them, over five hours.
    let starts = [
        (0, 0),
        (0, 1),
        (59, 59_999),
        (60, 0),
        (61, 500),
        (125, 0),
        (179, 59_999),
        (180, 0),
        (240, 1),
        (299, 0),
    ];
    let mut ids = Vec::new();
    for (i, (minutes, millis)) in starts.iter().enumerate() {
        let mut c = call(
            &acct.account_id,
            ["a1", "a2"][i % 2],
            &format!("+4473861725{i:02}"),
            "+14155552671",
        );
        c.started_at = at(*minutes, *millis);
        c.created_at = c.started_at;
        if i % 3 == 0 {
            c.direction = Direction::Outbound;
        }
        c.voicemail_detected = i % 4 == 0;
        if i == 9 {
            c.agent_id = None;
        }
        ids.push(c.call_id.clone());
        store.insert_call(&c).await.unwrap();
    }
    // A queued outbound call whose start moves when it is claimed for dialling.
    let mut queued = call(&acct.account_id, "a1", "+14155552671", "+447386172599");
    queued.direction = Direction::Outbound;
    queued.call_status = CallStatus::Queued;
    queued.started_at = at(30, 0);
    queued.created_at = queued.started_at;
    store.insert_call(&queued).await.unwrap();
    store
        .insert_call(&call(&other.account_id, "a1", "+447386172598", "+14155552671"))
        .await
        .unwrap();

    let check = |stage: &'static str| {
        let store = store.clone();
        let account = acct.account_id.clone();
        async move {
            let mut stored = Vec::new();
            let (page, _) = store.list_calls(&account, &CallFilter::default(), PAGE).await.unwrap();
            for listed in page {
                stored.push(store.get_call(&account, &listed.call_id).await.unwrap().unwrap());
            }
            let t = |minutes: i64, millis: i64| Some(at(minutes, millis));
            let mut filters = vec![
                CallFilter::default(),
                CallFilter { agent_id: Some("a1".into()), ..CallFilter::default() },
                CallFilter { agent_id: Some("a2".into()), ..CallFilter::default() },
                CallFilter { agent_id: Some("nobody".into()), ..CallFilter::default() },
                CallFilter { direction: Some(Direction::Inbound), ..CallFilter::default() },
                CallFilter { direction: Some(Direction::Outbound), ..CallFilter::default() },
                CallFilter { call_successful: Some(true), ..CallFilter::default() },
                CallFilter { call_successful: Some(false), ..CallFilter::default() },
                CallFilter { voicemail_detected: Some(true), ..CallFilter::default() },
                CallFilter { voicemail_detected: Some(false), ..CallFilter::default() },
                CallFilter {
                    agent_id: Some("a1".into()),
                    direction: Some(Direction::Inbound),
                    ..CallFilter::default()
                },
            ];
            for sentiment in ["happy", "neutral", "frustrated", "ecstatic"] {
                filters.push(CallFilter {
                    caller_sentiment: Some(sentiment.into()),
                    ..CallFilter::default()
                });
            }
            let ranges = [
                (t(0, 0), t(60, 0)),
                (t(0, 1), t(180, 0)),
                (t(0, 0), t(179, 59_999)),
                (t(30, 0), t(150, 0)),
                (t(59, 59_999), t(61, 0)),
                (t(61, 0), t(62, 0)),
                (t(60, 0), t(60, 0)),
                (t(120, 0), t(60, 0)),
                (t(-600, 0), t(6000, 0)),
                (t(61, 500), None),
                (t(60, 0), None),
                (None, t(180, 0)),
                (None, t(180, 1)),
                (t(-10_000_000, 0), None),
            ];
            for (since, until) in ranges {
                filters.push(CallFilter { since, until, ..CallFilter::default() });
            }
            for filter in filters {
                let matches = |c: &CallRecord| {
                    filter
                        .agent_id
                        .as_ref()
                        .is_none_or(|a| c.agent_id.as_deref() == Some(a.as_str()))
                        && filter.direction.is_none_or(|d| c.direction == d)
                        && filter
                            .caller_sentiment
                            .as_ref()
                            .is_none_or(|s| c.caller_sentiment.as_ref() == Some(s))
                        && filter.call_successful.is_none_or(|s| c.call_successful == Some(s))
                        && filter.voicemail_detected.is_none_or(|v| c.voicemail_detected == v)
                        && filter.since.is_none_or(|s: DateTime<Utc>| c.started_at >= s)
                        && filter.until.is_none_or(|u: DateTime<Utc>| c.started_at < u)
                };
                let expected = stored.iter().filter(|c| matches(c)).count();
                let (page, total) = store.list_calls(&account, &filter, PAGE).await.unwrap();
                assert_eq!(
                    total,
                    i64::try_from(expected).unwrap(),
                    "{stage}: the total of {filter:?}"
                );
                assert_eq!(page.len(), expected, "{stage}: the page of {filter:?}");
                // Listed by start time, newest first (a claimed call moves up with its start).
                let order: Vec<_> =
                    page.iter().map(|c| (c.started_at, c.call_id.to_string())).collect();
                let mut sorted = order.clone();
                sorted.sort_by(|a, b| b.cmp(a));
                assert_eq!(order, sorted, "{stage}: the order of {filter:?}");
                // The total rides on the page's rows; a page past the end has none and still
                // gives it, as does a page of one (the rest of the matches unread).
                for page in [Page { limit: 5, offset: 1_000 }, Page { limit: 1, offset: 0 }] {
                    let (rows, alone) = store.list_calls(&account, &filter, page).await.unwrap();
                    assert_eq!(alone, total, "{stage}: the total of {filter:?} in {page:?}");
                    assert_eq!(
                        rows.len(),
                        expected
                            .min(usize::try_from(page.limit).unwrap())
                            .min(expected.saturating_sub(usize::try_from(page.offset).unwrap()))
                    );
                }
            }
        }
    };
    check("inserted").await;

    // Analysis moves calls between sentiment and success tallies, and back to none.
    for (i, id) in ids.iter().enumerate() {
        let analysis = nixflex_store::CallAnalysis {
            call_summary: Some("s".to_owned()),
            caller_sentiment: [Some("happy"), Some("neutral"), Some("frustrated"), None][i % 4]
                .map(str::to_owned),
            call_successful: [Some(true), Some(false), None][i % 3],
            extracted_data: Map::new(),
        };
        assert!(store.record_analysis(id, &analysis).await.unwrap());
    }
    check("analysed").await;
    let again = nixflex_store::CallAnalysis {
        call_summary: None,
        caller_sentiment: Some("frustrated".to_owned()),
        call_successful: Some(false),
        extracted_data: Map::new(),
    };
    store.record_analysis(&ids[0], &again).await.unwrap();
    // Voicemail found and then not.
    let voicemail = |v: bool| CallUpdate { voicemail_detected: Some(v), ..CallUpdate::default() };
    store.update_call(&ids[1], &voicemail(true), now()).await.unwrap();
    store.update_call(&ids[4], &voicemail(false), now()).await.unwrap();
    // An update that touches no tallied column.
    store
        .update_call(
            &ids[2],
            &CallUpdate { duration_seconds: Some(3), ..CallUpdate::default() },
            now(),
        )
        .await
        .unwrap();
    check("updated").await;

    // Claimed for dialling: the call's start moves to now, into another hour.
    let claimed = store
        .claim_queued_calls(&acct.account_id, 100, now() - Duration::hours(1), now(), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    check("claimed").await;

    assert!(store.delete_call(&acct.account_id, &ids[3]).await.unwrap());
    assert!(store.delete_call(&acct.account_id, &ids[9]).await.unwrap());
    check("deleted").await;
    store.delete_all_calls(&acct.account_id).await.unwrap();
    check("all deleted").await;
    let (_, others) =
        store.list_calls(&other.account_id, &CallFilter::default(), PAGE).await.unwrap();
    assert_eq!(others, 1, "other accounts keep theirs");
}

async fn history_is_the_latest_summaries_between_a_number_and_a_caller((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let business = "+14155552671";
    let caller = "+447386172392";
    let base = now();
    for (i, summary) in ["first", "second", "third"].iter().enumerate() {
        let mut c = call(&acct.account_id, "a1", caller, business);
        c.started_at = base + Duration::seconds(i as i64);
        c.call_summary = Some((*summary).to_owned());
        store.insert_call(&c).await.unwrap();
    }
    let mut outbound = call(&acct.account_id, "a1", business, caller);
    outbound.direction = Direction::Outbound;
    outbound.started_at = base + Duration::seconds(10);
    outbound.call_summary = Some("outbound".to_owned());
    store.insert_call(&outbound).await.unwrap();
    let mut other_agent = call(&acct.account_id, "a2", caller, business);
    other_agent.call_summary = Some("elsewhere".to_owned());
    store.insert_call(&other_agent).await.unwrap();
    let history = store
        .call_history(&acct.account_id, &"a1".into(), &business.into(), caller, 2)
        .await
        .unwrap();
    assert_eq!(history.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(), ["outbound", "third"]);
}

async fn call_usage_adds_up_a_period_and_finds_the_peak((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let (other, _) = new_account(&*store).await;
    let base = now() - Duration::hours(2);
    let at = |minutes: i64| base + Duration::minutes(minutes);
    // (start, end, direction, refused at the cap)
    let plan = [
        (0, Some(10), Direction::Inbound, false),
        (5, Some(8), Direction::Outbound, false),
        (6, Some(7), Direction::Inbound, false),
        (9, Some(12), Direction::Inbound, false),
        (20, None, Direction::Inbound, false),
        (30, Some(30), Direction::Inbound, true),
    ];
    for (start, end, direction, refused) in plan {
        let mut c = call(&acct.account_id, "a1", "+447386172392", "+447446466801");
        c.direction = direction;
        c.started_at = at(start);
        c.answered_at = (!refused).then(|| at(start));
        c.ended_at = end.map(at);
        c.duration_seconds = end.map(|e| (e - start) * 60);
        if refused {
            c.call_status = CallStatus::Busy;
            c.ended_reason = Some(EndedReason::ConcurrentCallLimit);
        }
        store.insert_call(&c).await.unwrap();
    }
    store
        .insert_call(&call(&other.account_id, "a1", "+447386172392", "+447446466802"))
        .await
        .unwrap();

    let all = store.call_usage(&acct.account_id, None, None).await.unwrap();
    assert_eq!((all.total, all.inbound, all.outbound), (6, 5, 1));
    assert_eq!(all.connected_seconds, (10 + 3 + 1 + 3) * 60);
    assert_eq!(all.rejected_at_cap, 1);
    // Minutes 6–7: the calls from 0, 5 and 6 are connected at once.
    assert_eq!(all.peak_concurrent, 3);

    let later = store.call_usage(&acct.account_id, Some(at(9)), None).await.unwrap();
    assert_eq!((later.total, later.connected_seconds, later.peak_concurrent), (3, 180, 1));
    let early = store.call_usage(&acct.account_id, None, Some(at(6))).await.unwrap();
    assert_eq!((early.total, early.outbound, early.peak_concurrent), (2, 1, 2));
    let none =
        store.call_usage(&other.account_id, Some(now() + Duration::hours(1)), None).await.unwrap();
    assert_eq!(none, nixflex_store::CallUsage::default());
}

async fn webhook_deliveries_are_kept_per_call_and_go_with_it((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let c = call(&acct.account_id, "a1", "+447386172392", "+447446466801");
    store.insert_call(&c).await.unwrap();
    let base = now();
    let attempt = |n: i64, delivered: bool| nixflex_store::WebhookDelivery {
        delivery_id: format!("whd_{n}"),
        call_id: c.call_id.clone(),
        event: "call.completed".to_owned(),
        event_id: "evt_1".to_owned(),
        url: "https://hooks.example.com/a".to_owned(),
        attempt: n,
        attempted_at: base + Duration::seconds(n),
        status_code: Some(if delivered { 200 } else { 503 }),
        latency_ms: Some(12.5),
        error: (!delivered).then(|| "HTTP 503".to_owned()),
        delivered,
    };
    store.record_webhook_delivery(&attempt(1, false)).await.unwrap();
    store.record_webhook_delivery(&attempt(2, true)).await.unwrap();
    let mut stray = attempt(3, true);
    stray.call_id = "call_gone".into();
    store.record_webhook_delivery(&stray).await.unwrap();
    let kept = store.webhook_deliveries(&c.call_id).await.unwrap();
    assert_eq!(kept, vec![attempt(1, false), attempt(2, true)]);
    assert!(store.webhook_deliveries(&"call_gone".into()).await.unwrap().is_empty());
    assert!(store.delete_call(&acct.account_id, &c.call_id).await.unwrap());
    assert!(store.webhook_deliveries(&c.call_id).await.unwrap().is_empty());
}

fn job(kind: &str, key: &str, max_attempts: i64) -> NewJob {
    NewJob::new(kind, key, json!({"n": key}), max_attempts)
}

async fn jobs_enqueue_once_per_idempotency_key((store, _g): Fixture) {
    let first = job("t.noop", "k1", 3);
    assert!(store.enqueue_job(&first).await.unwrap());
    let again = job("t.noop", "k1", 3);
    assert!(!store.enqueue_job(&again).await.unwrap(), "same key: no second job");
    assert!(store.get_job(&again.job_id).await.unwrap().is_none());
    let stored = store.get_job(&first.job_id).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Queued);
    assert_eq!(stored.payload, json!({"n": "k1"}));
    assert_eq!(stored.idempotency_key, "t.noop:k1");
    assert_eq!(stored.attempts, 0);
    // Concurrent writers of one effect: exactly one job.
    let racers: Vec<NewJob> = (0..8).map(|_| job("t.noop", "k2", 3)).collect();
    let outcomes = futures::future::join_all(racers.iter().map(|j| store.enqueue_job(j))).await;
    assert_eq!(outcomes.iter().filter(|o| matches!(o, Ok(true))).count(), 1, "{outcomes:?}");
    assert_eq!(store.job_counts().await.unwrap(), JobCounts { queued: 2, ..JobCounts::default() });
}

/// An outbound call's sealed purpose is erased once (after its follow-up ran), keeping the rest
/// of its details; a call without one, or with none left, is left alone.
async fn an_outbound_calls_purpose_is_erased_and_nothing_else((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let mut outbound = call(&acct.account_id, "a1", "+14155552671", "+447386172599");
    outbound.direction = Direction::Outbound;
    outbound.call_status = CallStatus::Queued;
    let details = OutboundDetails {
        purpose_sealed: Some("v1:sealed-purpose".to_owned()),
        voicemail_action: Some("leave_message".to_owned()),
        voicemail_message: Some("Call us back.".to_owned()),
        dial_attempts: 0,
    };
    let dial = job("call.dial", outbound.call_id.as_str(), 3);
    store.queue_outbound_call(&outbound, &details, &dial).await.unwrap();
    let inbound = call(&acct.account_id, "a1", "+447386172598", "+14155552671");
    store.insert_call(&inbound).await.unwrap();

    store.erase_call_purpose(&outbound.call_id).await.unwrap();
    let kept = store.get_outbound(&outbound.call_id).await.unwrap().unwrap();
    assert_eq!(kept, OutboundDetails { purpose_sealed: None, ..details.clone() });
    // Again, and for a call that never had one: nothing changes, nothing fails.
    store.erase_call_purpose(&outbound.call_id).await.unwrap();
    store.erase_call_purpose(&inbound.call_id).await.unwrap();
    assert_eq!(store.get_outbound(&outbound.call_id).await.unwrap().unwrap(), kept);
    assert_eq!(store.get_outbound(&inbound.call_id).await.unwrap(), None);
}

async fn a_waiting_job_can_be_made_due_by_its_key((store, _g): Fixture) {
    let t = now();
    let mut waiting = job("t.noop", "later", 3);
    waiting.run_at = t + Duration::minutes(10);
    store.enqueue_job(&waiting).await.unwrap();
    assert!(
        store.claim_queued_jobs("n", 5, t + Duration::seconds(30), t).await.unwrap().is_empty()
    );
    assert!(!store.run_queued_job_now("t.noop:unknown", t).await.unwrap(), "no such job");
    assert!(store.run_queued_job_now("t.noop:later", t).await.unwrap());
    assert!(!store.run_queued_job_now("t.noop:later", t).await.unwrap(), "already due");
    let claimed = store.claim_queued_jobs("n", 5, t + Duration::seconds(30), t).await.unwrap();
    assert_eq!(claimed.iter().map(|j| &j.job_id).collect::<Vec<_>>(), [&waiting.job_id]);
    // A running job is not touched.
    assert!(!store.run_queued_job_now("t.noop:later", t).await.unwrap());
    assert_eq!(store.get_job(&waiting.job_id).await.unwrap().unwrap().state, JobState::Running);
}

async fn jobs_are_claimed_by_one_worker_at_a_time((store, _g): Fixture) {
    for i in 0..40 {
        store.enqueue_job(&job("t.noop", &i.to_string(), 3)).await.unwrap();
    }
    let later = NewJob { run_at: now() + Duration::hours(1), ..job("t.noop", "later", 3) };
    store.enqueue_job(&later).await.unwrap();
    let t = now();
    let lease_until = t + Duration::minutes(1);
    // Eight workers claim concurrently, in batches of 3, until nothing is left.
    let workers = (0..8).map(|w| {
        let store = store.clone();
        async move {
            let mut mine = Vec::new();
            loop {
                let batch =
                    store.claim_jobs(&format!("node-{w}"), 3, lease_until, t).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                for j in &batch {
                    assert_eq!(j.state, JobState::Running);
                    assert_eq!(j.lease_owner.as_deref(), Some(format!("node-{w}").as_str()));
                    assert_eq!(j.attempts, 1);
                }
                mine.extend(batch.into_iter().map(|j| j.job_id));
            }
        }
    });
    let claimed: Vec<String> =
        futures::future::join_all(workers).await.into_iter().flatten().collect();
    let unique: std::collections::HashSet<&String> = claimed.iter().collect();
    assert_eq!(claimed.len(), 40, "every due job claimed");
    assert_eq!(unique.len(), 40, "no job claimed twice");
    assert!(!claimed.contains(&later.job_id), "not before its run-at");
    assert_eq!(
        store.job_counts().await.unwrap(),
        JobCounts { queued: 1, running: 40, ..JobCounts::default() }
    );
    // The queue's depth per kind, as `/metrics` reports it (done and dead jobs are not in it).
    store.enqueue_job(&job("t.other", "x", 3)).await.unwrap();
    let mut depth = store.job_queue_depth().await.unwrap();
    depth.sort_by(|a, b| (&a.0, a.1.as_str()).cmp(&(&b.0, b.1.as_str())));
    assert_eq!(
        depth,
        [
            ("t.noop".to_owned(), JobState::Queued, 1),
            ("t.noop".to_owned(), JobState::Running, 40),
            ("t.other".to_owned(), JobState::Queued, 1),
        ]
    );
}

async fn an_expired_lease_is_taken_over_and_fences_the_old_owner((store, _g): Fixture) {
    let j = job("t.noop", "lease", 3);
    store.enqueue_job(&j).await.unwrap();
    let t = now();
    let a = store.claim_jobs("node-a", 10, t + Duration::seconds(5), t).await.unwrap();
    assert_eq!(a.len(), 1);
    let old = a[0].lease();
    assert!(
        store.claim_jobs("node-b", 10, t + Duration::seconds(5), t).await.unwrap().is_empty(),
        "leased"
    );
    assert!(store.extend_lease(&old, t + Duration::seconds(10), t).await.unwrap());
    // node-a dies; after its lease lapses node-b takes the job (a second attempt).
    let t2 = t + Duration::seconds(11);
    let b = store.claim_jobs("node-b", 10, t2 + Duration::seconds(5), t2).await.unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].attempts, 2);
    assert_eq!(b[0].lease_owner.as_deref(), Some("node-b"));
    // node-a comes back: its lease no longer counts.
    assert!(!store.extend_lease(&old, t2 + Duration::seconds(60), t2).await.unwrap());
    assert!(!store.complete_job(&old, t2).await.unwrap());
    assert!(!store.fail_job(&old, "late", None, t2).await.unwrap());
    assert!(store.complete_job(&b[0].lease(), t2).await.unwrap());
    let done = store.get_job(&j.job_id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Done);
    assert!(!store.complete_job(&b[0].lease(), t2).await.unwrap(), "once");
}

async fn a_claim_for_queued_work_leaves_lapsed_leases_to_the_full_claim((store, _g): Fixture) {
    let lapsing = job("t.noop", "lapsing", 3);
    let last = job("t.noop", "last attempt", 1);
    store.enqueue_job(&lapsing).await.unwrap();
    store.enqueue_job(&last).await.unwrap();
    let t = now();
    let a = store.claim_queued_jobs("node-a", 10, t + Duration::seconds(5), t).await.unwrap();
    assert_eq!(a.len(), 2, "queued jobs are claimed");
    // Both leases lapse; a new job is queued.
    let fresh = job("t.noop", "fresh", 3);
    store.enqueue_job(&fresh).await.unwrap();
    let t2 = t + Duration::seconds(6);
    let b = store.claim_queued_jobs("node-b", 10, t2 + Duration::seconds(5), t2).await.unwrap();
    assert_eq!(b.iter().map(|j| j.job_id.as_str()).collect::<Vec<_>>(), [fresh.job_id.as_str()]);
    let still = store.get_job(&last.job_id).await.unwrap().unwrap();
    assert_eq!(still.state, JobState::Running, "nothing buried either");
    // The full claim takes the lapsed one over and buries the one on its last attempt.
    let c = store.claim_jobs("node-b", 10, t2 + Duration::seconds(5), t2).await.unwrap();
    assert_eq!(c.iter().map(|j| j.job_id.as_str()).collect::<Vec<_>>(), [lapsing.job_id.as_str()]);
    assert_eq!(c[0].attempts, 2);
    assert_eq!(store.get_job(&last.job_id).await.unwrap().unwrap().state, JobState::Dead);
}

async fn failed_jobs_wait_for_their_retry_then_die_after_max_attempts((store, _g): Fixture) {
    let j = job("t.fail", "f", 2);
    store.enqueue_job(&j).await.unwrap();
    let t = now();
    let first = store.claim_jobs("n", 1, t + Duration::seconds(30), t).await.unwrap();
    let retry_at = t + Duration::seconds(2);
    assert!(store.fail_job(&first[0].lease(), "boom 1", Some(retry_at), t).await.unwrap());
    let queued = store.get_job(&j.job_id).await.unwrap().unwrap();
    assert_eq!(queued.state, JobState::Queued);
    assert_eq!(queued.run_at, retry_at);
    assert_eq!(queued.last_error.as_deref(), Some("boom 1"));
    assert!(
        store.claim_jobs("n", 1, t + Duration::seconds(30), t).await.unwrap().is_empty(),
        "not before the back-off"
    );
    let t2 = retry_at;
    let second = store.claim_jobs("n", 1, t2 + Duration::seconds(30), t2).await.unwrap();
    assert_eq!(second[0].attempts, 2);
    // The last attempt fails: dead even though a retry time was offered.
    assert!(
        store
            .fail_job(&second[0].lease(), "boom 2", Some(t2 + Duration::seconds(4)), t2)
            .await
            .unwrap()
    );
    let dead = store.get_job(&j.job_id).await.unwrap().unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.last_error.as_deref(), Some("boom 2"));
    assert!(
        store
            .claim_jobs("n", 1, t2 + Duration::hours(2), t2 + Duration::hours(1))
            .await
            .unwrap()
            .is_empty(),
        "dead jobs are never claimed"
    );
    // A permanent failure is dead at once.
    let p = job("t.fail", "permanent", 5);
    store.enqueue_job(&p).await.unwrap();
    let claimed = store.claim_jobs("n", 1, t2 + Duration::seconds(30), t2).await.unwrap();
    assert!(store.fail_job(&claimed[0].lease(), "bad payload", None, t2).await.unwrap());
    assert_eq!(store.get_job(&p.job_id).await.unwrap().unwrap().state, JobState::Dead);
    // A lease that lapses on the last attempt: dead, not claimed again.
    let l = job("t.fail", "lapsed", 1);
    store.enqueue_job(&l).await.unwrap();
    let claimed = store.claim_jobs("n", 1, t2 + Duration::seconds(1), t2).await.unwrap();
    assert_eq!(claimed[0].job_id, l.job_id);
    let t3 = t2 + Duration::seconds(2);
    assert!(store.claim_jobs("m", 1, t3 + Duration::seconds(1), t3).await.unwrap().is_empty());
    let lapsed = store.get_job(&l.job_id).await.unwrap().unwrap();
    assert_eq!(lapsed.state, JobState::Dead);
    assert_eq!(lapsed.last_error.as_deref(), Some("lease expired on the last attempt"));
    assert_eq!(store.job_counts().await.unwrap().dead, 3);
}

async fn dead_jobs_are_listed_and_can_be_retried((store, _g): Fixture) {
    let ok = job("t.ok", "a", 3);
    let bad = job("t.bad", "b", 1);
    store.enqueue_job(&ok).await.unwrap();
    store.enqueue_job(&bad).await.unwrap();
    let t = now();
    for j in store.claim_jobs("n", 10, t + Duration::seconds(30), t).await.unwrap() {
        if j.kind == "t.bad" {
            store.fail_job(&j.lease(), "nope", Some(t), t).await.unwrap();
        }
    }
    let dead = store
        .list_jobs(&JobFilter { state: Some(JobState::Dead), kind: None }, PAGE)
        .await
        .unwrap();
    assert_eq!(dead.iter().map(|j| j.job_id.as_str()).collect::<Vec<_>>(), [bad.job_id.as_str()]);
    let by_kind = store
        .list_jobs(&JobFilter { state: None, kind: Some("t.ok".to_owned()) }, PAGE)
        .await
        .unwrap();
    assert_eq!(by_kind.len(), 1);
    assert_eq!(by_kind[0].state, JobState::Running);
    assert_eq!(store.list_jobs(&JobFilter::default(), PAGE).await.unwrap().len(), 2);
    assert_eq!(
        store.list_jobs(&JobFilter::default(), Page { limit: 1, offset: 1 }).await.unwrap().len(),
        1
    );
    assert!(!store.retry_job(&ok.job_id, t).await.unwrap(), "only dead jobs are retried");
    assert!(!store.retry_job("job_missing", t).await.unwrap());
    assert!(store.retry_job(&bad.job_id, t).await.unwrap());
    let again = store.get_job(&bad.job_id).await.unwrap().unwrap();
    assert_eq!((again.state, again.attempts), (JobState::Queued, 0));
    let claimed = store.claim_jobs("n", 10, t + Duration::seconds(30), t).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].job_id, bad.job_id);
}

async fn done_jobs_are_purged_after_their_retention((store, _g): Fixture) {
    let old = job("t.ok", "old", 3);
    let recent = job("t.ok", "recent", 3);
    let dead = job("t.ok", "dead", 1);
    let t = now();
    for j in [&old, &recent, &dead] {
        store.enqueue_job(j).await.unwrap();
    }
    let claimed = store.claim_jobs("n", 10, t + Duration::seconds(30), t).await.unwrap();
    let lease = |id: &str| claimed.iter().find(|j| j.job_id == id).unwrap().lease();
    store.complete_job(&lease(&old.job_id), t - Duration::days(8)).await.unwrap();
    store.complete_job(&lease(&recent.job_id), t).await.unwrap();
    store.fail_job(&lease(&dead.job_id), "x", None, t - Duration::days(8)).await.unwrap();
    assert_eq!(store.purge_done_jobs(t - Duration::days(7), 100).await.unwrap(), 1);
    assert!(store.get_job(&old.job_id).await.unwrap().is_none());
    assert!(store.get_job(&recent.job_id).await.unwrap().is_some());
    assert!(store.get_job(&dead.job_id).await.unwrap().is_some(), "dead jobs stay");
    assert_eq!(store.purge_done_jobs(t - Duration::days(7), 100).await.unwrap(), 0);
}

async fn a_call_ends_with_its_follow_ups_in_one_transaction((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let c = call(&acct.account_id, "a", "+447386172392", "+14155552671");
    store.insert_call(&c).await.unwrap();
    let end = CallUpdate {
        call_status: Some(CallStatus::Completed),
        ended_reason: Some(EndedReason::CallerHangup),
        ended_at: Some(now()),
        ..CallUpdate::default()
    };
    let follow_up = NewJob::call_follow_up(CALL_ENDED, &c.call_id, &acct.account_id, 5);
    assert!(
        store.finish_call(&c.call_id, &end, now(), std::slice::from_ref(&follow_up)).await.unwrap()
    );
    let ended = store.find_call(&c.call_id).await.unwrap().unwrap();
    assert_eq!(ended.call_status, CallStatus::Completed);
    let queued = store.get_job(&follow_up.job_id).await.unwrap().unwrap();
    assert_eq!(queued.kind, CALL_ENDED);
    assert_eq!(queued.payload, json!({"call_id": c.call_id, "account_id": acct.account_id}));
    // A second writer of the end (the carrier's status, a retry) queues nothing more.
    let again = NewJob::call_follow_up(CALL_ENDED, &c.call_id, &acct.account_id, 5);
    assert!(
        store.finish_call(&c.call_id, &end, now(), std::slice::from_ref(&again)).await.unwrap()
    );
    assert!(store.get_job(&again.job_id).await.unwrap().is_none());
    // No call, nothing written: no orphan follow-up.
    let orphan = NewJob::call_follow_up(CALL_ENDED, "call_missing", &acct.account_id, 5);
    assert!(
        !store
            .finish_call(&"call_missing".into(), &end, now(), std::slice::from_ref(&orphan))
            .await
            .unwrap()
    );
    assert!(store.get_job(&orphan.job_id).await.unwrap().is_none());
    // A follow-up that cannot be written rolls the call's end back (all or nothing).
    let c2 = call(&acct.account_id, "a", "+447386172392", "+14155552671");
    store.insert_call(&c2).await.unwrap();
    let duplicate_id = NewJob {
        job_id: follow_up.job_id.clone(),
        ..NewJob::call_follow_up(CALL_ENDED, &c2.call_id, &acct.account_id, 5)
    };
    assert!(store.finish_call(&c2.call_id, &end, now(), &[duplicate_id]).await.is_err());
    let untouched = store.find_call(&c2.call_id).await.unwrap().unwrap();
    assert_eq!(untouched.call_status, CallStatus::InProgress, "rolled back");
    assert_eq!(untouched.ended_reason, None);
}

async fn stale_calls_are_swept_once_with_their_follow_up((store, _g): Fixture) {
    let (acct, _) = new_account(&*store).await;
    let t = now();
    let stale = call(&acct.account_id, "a", "+447386172392", "+14155552671");
    let fresh = call(&acct.account_id, "a", "+447386172392", "+14155552671");
    let ended = call(&acct.account_id, "a", "+447386172392", "+14155552671");
    let never_streamed = call(&acct.account_id, "a", "+447386172392", "+14155552671");
    for c in [&stale, &fresh, &ended, &never_streamed] {
        store.insert_call(c).await.unwrap();
    }
    let beat = |at| CallUpdate { heartbeat_at: Some(at), ..CallUpdate::default() };
    store.update_call(&stale.call_id, &beat(t - Duration::minutes(5)), t).await.unwrap();
    store.update_call(&fresh.call_id, &beat(t), t).await.unwrap();
    store.update_call(&ended.call_id, &beat(t - Duration::minutes(5)), t).await.unwrap();
    let end = CallUpdate {
        call_status: Some(CallStatus::Completed),
        ended_reason: Some(EndedReason::CallerHangup),
        ..CallUpdate::default()
    };
    store.update_call(&ended.call_id, &end, t).await.unwrap();
    // Several nodes sweep at once: each stale call is ended and followed up once.
    let sweeps = futures::future::join_all(
        (0..4).map(|_| store.end_stale_calls(t - Duration::seconds(90), CALL_ENDED, 5, 100, t)),
    )
    .await;
    let swept: Vec<String> = sweeps.into_iter().flat_map(Result::unwrap).collect();
    assert_eq!(swept, [stale.call_id.to_string()]);
    let record = store.find_call(&stale.call_id).await.unwrap().unwrap();
    assert_eq!(record.call_status, CallStatus::Completed);
    assert_eq!(record.ended_reason, Some(EndedReason::Error));
    assert_eq!(record.ended_at, Some(t));
    let follow_ups = store
        .list_jobs(&JobFilter { state: None, kind: Some(CALL_ENDED.to_owned()) }, PAGE)
        .await
        .unwrap();
    assert_eq!(follow_ups.len(), 1);
    assert_eq!(follow_ups[0].idempotency_key, format!("{CALL_ENDED}:{}", stale.call_id));
    assert!(
        store
            .end_stale_calls(t - Duration::seconds(90), CALL_ENDED, 5, 100, t)
            .await
            .unwrap()
            .is_empty(),
        "nothing left"
    );
    assert_eq!(store.find_call(&fresh.call_id).await.unwrap().unwrap().ended_reason, None);
}

fn sms(account_id: &str, direction: Direction, customer: &str, body: &str) -> SmsMessage {
    let at = now();
    SmsMessage {
        message_id: ids::new_message_id(),
        account_id: account_id.into(),
        agent_id: None,
        direction,
        business_number: "+14155552671".to_owned(),
        customer_number: customer.to_owned(),
        body: body.to_owned(),
        status: if direction == Direction::Inbound {
            SmsStatus::Received
        } else {
            SmsStatus::Pending
        },
        twilio_sid: None,
        segments: 1,
        error_code: None,
        error_message: None,
        reply_context: None,
        source: if direction == Direction::Inbound { SmsSource::Inbound } else { SmsSource::Api },
        send_key: None,
        metadata: Some(json!({"k": 1})),
        created_at: at,
        updated_at: at,
    }
}

async fn sms_statuses_only_move_forward((store, _g): Fixture) {
    let (account, _) = new_account(&*store).await;
    let id = &account.account_id;
    let message = sms(id.as_str(), Direction::Outbound, "+447700900001", "Hi");
    assert!(store.insert_sms(&message).await.unwrap());
    assert!(
        store.mark_sms_handed(&message.message_id, "SM1", SmsStatus::Queued, now()).await.unwrap()
    );
    let update = |status| store.update_sms_status(id, "SM1", status, None, None, now());
    assert!(update(SmsStatus::Sent).await.unwrap());
    assert!(update(SmsStatus::Delivered).await.unwrap());
    assert!(!update(SmsStatus::Sent).await.unwrap(), "late callbacks change nothing");
    assert!(!update(SmsStatus::Undelivered).await.unwrap(), "the first final status stays");
    // Another account's SID is as good as unknown.
    let (other, _) = new_account(&*store).await;
    assert!(
        !store
            .update_sms_status(&other.account_id, "SM1", SmsStatus::Failed, Some(1), None, now())
            .await
            .unwrap()
    );
    let stored = store.get_sms(id, &message.message_id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.twilio_sid.as_deref()), (SmsStatus::Delivered, Some("SM1")));
    assert_eq!(stored.metadata, Some(json!({"k": 1})));
    assert!(store.get_sms(&other.account_id, &message.message_id).await.unwrap().is_none());
    // A callback that beats the create answer is not undone by it.
    let early = sms(id.as_str(), Direction::Outbound, "+447700900002", "Hi");
    store.insert_sms(&early).await.unwrap();
    store.mark_sms_handed(&early.message_id, "SM2", SmsStatus::Queued, now()).await.unwrap();
    assert!(
        store
            .update_sms_status(id, "SM2", SmsStatus::Undelivered, Some(30007), None, now())
            .await
            .unwrap()
    );
    store.mark_sms_handed(&early.message_id, "SM2", SmsStatus::Queued, now()).await.unwrap();
    let early = store.get_sms_by_twilio_sid(id, "SM2").await.unwrap().unwrap();
    assert_eq!((early.status, early.error_code), (SmsStatus::Undelivered, Some(30007)));
    // A refused send is failed and stays so.
    let refused = sms(id.as_str(), Direction::Outbound, "+447700900003", "Hi");
    store.insert_sms(&refused).await.unwrap();
    assert!(
        store
            .mark_sms_failed(&refused.message_id, Some(21211), Some("bad To"), now())
            .await
            .unwrap()
    );
    assert!(!store.mark_sms_failed(&refused.message_id, Some(1), None, now()).await.unwrap());
}

async fn sms_sends_and_inbound_texts_are_written_once((store, _g): Fixture) {
    let (account, _) = new_account(&*store).await;
    let id = &account.account_id;
    let keyed = SmsMessage {
        send_key: Some("reply:x".to_owned()),
        ..sms(id.as_str(), Direction::Outbound, "+447700900001", "A")
    };
    assert!(store.insert_sms(&keyed).await.unwrap());
    let again = SmsMessage { message_id: ids::new_message_id(), ..keyed.clone() };
    assert!(!store.insert_sms(&again).await.unwrap(), "one message per send key");
    assert_eq!(
        store.get_sms_by_send_key("reply:x").await.unwrap().unwrap().message_id,
        keyed.message_id
    );
    // An inbound text and its job, once per Twilio SID, whatever the retries.
    let inbound = SmsMessage {
        twilio_sid: Some("SMin".to_owned()),
        created_at: keyed.created_at + Duration::milliseconds(1),
        ..sms(id.as_str(), Direction::Inbound, "+447700900001", "Hello")
    };
    let reply_job = NewJob::new("sms.reply", "SMin", json!({"message_id": inbound.message_id}), 3);
    let (first, new) = store.record_inbound_sms(&inbound, Some(&reply_job)).await.unwrap();
    assert!(new);
    let retry = SmsMessage { message_id: ids::new_message_id(), ..inbound.clone() };
    let retry_job = NewJob::new("sms.reply", "SMin", json!({"message_id": retry.message_id}), 3);
    let (second, new) = store.record_inbound_sms(&retry, Some(&retry_job)).await.unwrap();
    assert!(!new);
    assert_eq!(first.message_id, second.message_id);
    assert_eq!(store.job_counts().await.unwrap().queued, 1);
    assert!(store.get_job(&retry_job.job_id).await.unwrap().is_none());
    // The thread, newest first, and the log's filters.
    let thread = store.sms_thread(id, "+14155552671", "+447700900001", 10).await.unwrap();
    assert_eq!(thread.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), vec!["Hello", "A"]);
    let filter = SmsFilter { direction: Some(Direction::Inbound), ..SmsFilter::default() };
    let (inbound_only, count) =
        store.list_sms(id, &filter, Page { limit: 10, offset: 0 }).await.unwrap();
    assert_eq!((count, inbound_only[0].body.as_str()), (1, "Hello"));
    let filter =
        SmsFilter { from_number: Some("+447700900001".to_owned()), ..SmsFilter::default() };
    assert_eq!(store.list_sms(id, &filter, Page { limit: 10, offset: 0 }).await.unwrap().1, 1);
    let filter = SmsFilter { to: Some("+447700900001".to_owned()), ..SmsFilter::default() };
    assert_eq!(store.list_sms(id, &filter, Page { limit: 10, offset: 0 }).await.unwrap().1, 1);
    let filter = SmsFilter {
        customer_number: Some("+447700900001".to_owned()),
        since: Some(now() - Duration::hours(1)),
        ..SmsFilter::default()
    };
    assert_eq!(store.list_sms(id, &filter, Page { limit: 10, offset: 0 }).await.unwrap().1, 2);
    let filter = SmsFilter { until: Some(now() - Duration::hours(1)), ..SmsFilter::default() };
    assert_eq!(store.list_sms(id, &filter, Page { limit: 10, offset: 0 }).await.unwrap().1, 0);
    assert_eq!(store.delete_all_sms(id).await.unwrap(), 2);
}

async fn sms_opt_outs_are_per_account((store, _g): Fixture) {
    let (account, _) = new_account(&*store).await;
    let (other, _) = new_account(&*store).await;
    let phone = "+447700900009";
    assert!(!store.is_sms_opted_out(&account.account_id, phone).await.unwrap());
    store.set_sms_opt_out(&account.account_id, phone, true, now()).await.unwrap();
    store.set_sms_opt_out(&account.account_id, phone, true, now()).await.unwrap();
    assert!(store.is_sms_opted_out(&account.account_id, phone).await.unwrap());
    assert!(!store.is_sms_opted_out(&other.account_id, phone).await.unwrap());
    store.set_sms_opt_out(&account.account_id, phone, false, now()).await.unwrap();
    assert!(!store.is_sms_opted_out(&account.account_id, phone).await.unwrap());
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
    account_and_key_round_trip,
    keys_list_newest_first_with_total,
    the_last_active_key_cannot_be_revoked,
    concurrent_revocations_never_leave_an_account_without_keys,
    rotation_replaces_the_secret_of_active_keys_only,
    agents_round_trip_and_stay_in_their_account,
    agents_list_newest_first_filtered_and_counted,
    agent_edits_are_serialised_and_all_or_nothing,
    agent_versions_are_read_without_settings_and_move_with_edits,
    an_agents_version_is_never_older_than_the_stored_one,
    call_usage_adds_up_a_period_and_finds_the_peak,
    webhook_deliveries_are_kept_per_call_and_go_with_it,
    rate_limit_counters_are_atomic_and_reset_per_window,
    rate_limit_flushes_add_up_across_nodes_and_never_rewind_a_window,
    the_auth_epoch_moves_with_every_key_and_limit_change,
    idempotency_keys_start_once_then_replay,
    abandoned_and_failed_idempotent_requests_can_run_again,
    concurrent_duplicates_start_exactly_once,
    timestamps_round_trip_in_utc_at_microsecond_precision,
    server_meta_keeps_the_first_value,
    numbers_are_reserved_then_activated,
    failed_and_stale_reservations_free_the_number,
    numbers_list_update_and_follow_their_agent,
    deleting_a_number_erases_its_callers_and_integrations,
    agent_precall_urls_stay_in_their_account,
    caller_context_merges_patches,
    calls_are_admitted_up_to_the_cap,
    concurrent_admissions_never_exceed_the_cap,
    call_updates_keep_first_outcomes,
    a_new_stream_token_replaces_the_old_one,
    updates_merged_with_then_write_what_they_would_one_by_one,
    calls_by_sid_stay_in_their_account_and_number,
    calls_list_with_filters_and_delete,
    calls_inserted_in_a_batch_land_all_or_none,
    the_unfiltered_calls_total_is_exact_through_inserts_and_deletes,
    every_filtered_calls_total_agrees_with_the_calls_through_inserts_updates_and_deletes,
    history_is_the_latest_summaries_between_a_number_and_a_caller,
    jobs_enqueue_once_per_idempotency_key,
    a_waiting_job_can_be_made_due_by_its_key,
    an_outbound_calls_purpose_is_erased_and_nothing_else,
    jobs_are_claimed_by_one_worker_at_a_time,
    an_expired_lease_is_taken_over_and_fences_the_old_owner,
    failed_jobs_wait_for_their_retry_then_die_after_max_attempts,
    a_claim_for_queued_work_leaves_lapsed_leases_to_the_full_claim,
    dead_jobs_are_listed_and_can_be_retried,
    done_jobs_are_purged_after_their_retention,
    a_call_ends_with_its_follow_ups_in_one_transaction,
    stale_calls_are_swept_once_with_their_follow_up,
    a_deferred_job_waits_without_spending_an_attempt,
    carrier_recordings_are_noted_until_cleared,
    sms_statuses_only_move_forward,
    sms_sends_and_inbound_texts_are_written_once,
    sms_opt_outs_are_per_account,
);
