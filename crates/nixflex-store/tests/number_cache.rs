#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Each node remembers active phone numbers (docs/operations.md#number-cache): a change is seen
//! at once by the node that made it and within a quarter of a second by every other node on the
//! same database. Every test runs on SQLite (two stores on one file, as two processes) and on
//! PostgreSQL (two stores on one database, as two nodes).

use std::sync::Arc;
use std::time::Duration;

use nixflex_core::agent::{Agent, AgentSettings};
use nixflex_core::ids::{self, AccountId, E164};
use nixflex_core::number::PhoneNumber;
use nixflex_store::testing::TempDirGuard;
use nixflex_store::{NumberUrlSlot, Store, now};
use serde_json::json;

/// Longer than the window within which a node trusts what it remembers (250 ms).
const PAST_THE_WINDOW: Duration = Duration::from_millis(400);

struct TwoNodes {
    here: Arc<dyn Store>,
    there: Arc<dyn Store>,
    account: AccountId,
    agent: Agent,
    _dir: Option<TempDirGuard>,
}

async fn two_nodes(backend: &str) -> TwoNodes {
    let (url, dir) = match backend {
        "postgres" => (nixflex_store::testing::fresh_postgres_url().await, None),
        _ => {
            let (url, dir) = nixflex_store::testing::fresh_sqlite_url();
            (url, Some(dir))
        }
    };
    let here = nixflex_store::open(&url, 4).await.unwrap();
    let there = nixflex_store::open(&url, 4).await.unwrap();
    let account = nixflex_store::testing::new_account(&*here).await.unwrap();
    let at = now();
    let agent = Agent {
        agent_id: ids::new_agent_id(),
        account_id: account.clone(),
        api_key_id: "nxf_x".into(),
        settings: AgentSettings { name: "front desk".to_owned(), ..AgentSettings::default() },
        created_at: at,
        updated_at: at,
    };
    here.insert_agent(&agent).await.unwrap();
    TwoNodes { here, there, account, agent, _dir: dir }
}

fn number(two: &TwoNodes, phone: &str) -> PhoneNumber {
    nixflex_store::testing::phone_number(&two.account, Some(&two.agent.agent_id), phone)
}

async fn import(store: &dyn Store, n: &PhoneNumber) {
    store.reserve_number(n, &json!({}), now() - chrono::Duration::minutes(10)).await.unwrap();
    store.activate_number(&n.phone_number).await.unwrap();
}

async fn active(store: &dyn Store, phone: &str) -> Option<PhoneNumber> {
    store.find_active_number(&E164::from(phone)).await.unwrap()
}

/// The node that changes a number sees the change at once, however recently it looked the
/// number up — a change of its own, and a deleted agent's cascade alike.
async fn the_changing_node_sees_its_own_changes_at_once(backend: &str) {
    let two = two_nodes(backend).await;
    let store = &*two.here;
    let phone = "+14155550101";
    assert_eq!(active(store, phone).await, None);
    let n = number(&two, phone);
    import(store, &n).await;
    assert_eq!(active(store, phone).await.unwrap().agent_id, n.agent_id, "imported");

    let (mut edited, version) =
        store.get_number(&two.account, &n.phone_number).await.unwrap().unwrap();
    edited.inbound_enabled = false;
    edited.updated_at = now();
    store.update_number(&edited, version).await.unwrap();
    assert!(!active(store, phone).await.unwrap().inbound_enabled, "updated");

    assert!(
        store
            .set_number_url(
                &two.account,
                &n.phone_number,
                NumberUrlSlot::Webhook,
                Some("https://hooks.example.com/a")
            )
            .await
            .unwrap()
    );
    assert_eq!(
        active(store, phone).await.unwrap().webhook_url.as_deref(),
        Some("https://hooks.example.com/a"),
        "a new webhook URL"
    );

    assert!(store.delete_agent(&two.account, &two.agent.agent_id).await.unwrap());
    assert_eq!(active(store, phone).await.unwrap().agent_id, None, "its agent deleted");

    assert!(store.delete_number(&two.account, &n.phone_number).await.unwrap());
    assert_eq!(active(store, phone).await, None, "deleted");
}

/// Another node sees every kind of change within the window: a new number, an edit, a new
/// URL, an agent's deletion and the number's deletion.
async fn another_node_sees_changes_within_the_window(backend: &str) {
    let two = two_nodes(backend).await;
    let phone = "+14155550102";
    // The other node remembers that there is no such number.
    assert_eq!(active(&*two.there, phone).await, None);
    let n = number(&two, phone);
    import(&*two.here, &n).await;
    tokio::time::sleep(PAST_THE_WINDOW).await;
    assert_eq!(active(&*two.there, phone).await.unwrap().agent_id, n.agent_id, "imported");

    let (mut edited, version) =
        two.here.get_number(&two.account, &n.phone_number).await.unwrap().unwrap();
    edited.sms_reply_enabled = false;
    edited.updated_at = now();
    two.here.update_number(&edited, version).await.unwrap();
    tokio::time::sleep(PAST_THE_WINDOW).await;
    assert!(!active(&*two.there, phone).await.unwrap().sms_reply_enabled, "updated");

    assert!(
        two.here
            .set_number_url(
                &two.account,
                &n.phone_number,
                NumberUrlSlot::Precall,
                Some("https://gate.example.com")
            )
            .await
            .unwrap()
    );
    tokio::time::sleep(PAST_THE_WINDOW).await;
    assert_eq!(
        active(&*two.there, phone).await.unwrap().precall_url.as_deref(),
        Some("https://gate.example.com"),
        "a new pre-call URL"
    );

    assert!(two.here.delete_agent(&two.account, &two.agent.agent_id).await.unwrap());
    tokio::time::sleep(PAST_THE_WINDOW).await;
    assert_eq!(active(&*two.there, phone).await.unwrap().agent_id, None, "its agent deleted");

    assert!(two.here.delete_number(&two.account, &n.phone_number).await.unwrap());
    tokio::time::sleep(PAST_THE_WINDOW).await;
    assert_eq!(active(&*two.there, phone).await, None, "deleted");
}

/// Every change of a number moves the authentication epoch, in its own transaction: what the
/// other nodes read before trusting what they remember.
async fn every_number_change_moves_the_auth_epoch(backend: &str) {
    let two = two_nodes(backend).await;
    let store = &*two.here;
    let n = number(&two, "+14155550103");
    let mut last = store.auth_epoch().await.unwrap();
    let mut moved = |what: &str, epoch: i64| {
        assert!(epoch > last, "{what}: the epoch stayed at {last}");
        last = epoch;
    };
    store.reserve_number(&n, &json!({}), now() - chrono::Duration::minutes(10)).await.unwrap();
    moved("reserved", store.auth_epoch().await.unwrap());
    store.activate_number(&n.phone_number).await.unwrap();
    moved("activated", store.auth_epoch().await.unwrap());
    let (mut edited, version) =
        store.get_number(&two.account, &n.phone_number).await.unwrap().unwrap();
    edited.outbound_enabled = false;
    store.update_number(&edited, version).await.unwrap();
    moved("updated", store.auth_epoch().await.unwrap());
    store
        .set_number_url(
            &two.account,
            &n.phone_number,
            NumberUrlSlot::Webhook2,
            Some("https://b.example.com"),
        )
        .await
        .unwrap();
    moved("a URL", store.auth_epoch().await.unwrap());
    store.delete_agent(&two.account, &two.agent.agent_id).await.unwrap();
    moved("its agent deleted", store.auth_epoch().await.unwrap());
    store.delete_number(&two.account, &n.phone_number).await.unwrap();
    moved("deleted", store.auth_epoch().await.unwrap());
}

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name("sqlite").await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name("postgres").await;
                }
            )+
        }
    };
}

both!(
    the_changing_node_sees_its_own_changes_at_once,
    another_node_sees_changes_within_the_window,
    every_number_change_moves_the_auth_epoch,
);
