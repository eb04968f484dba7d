#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Databases created before the migrations' comments were reworded keep opening; any other change
//! to an applied migration still stops the server.

use sqlx::Connection as _;

const OLD_SQLITE_0001: &str = "e410e18266296fe286fdeccafe4339b162570639c06f7b08ac2a93f68eefa3f2d107299577d0af5bf5f613c69006e31c";
const OLD_POSTGRES_0001: &str = "93e435f3839760250266e759626b8e3957c9331140b361c927c98564a200f858cbd61974980bbfe1d954863b2dc5f41e";

async fn set_checksum(url: &str, checksum: Vec<u8>) {
    let query = "update _sqlx_migrations set checksum = $1 where version = 1";
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(query).bind(checksum).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(query).bind(checksum).execute(&mut conn).await.unwrap();
    }
}

async fn reworded_comments_are_adopted_other_changes_are_refused(url: String, old: &str) {
    drop(nixflex_store::open(&url, 2).await.unwrap());
    // As a database migrated by the earlier wording of 0001 records it.
    set_checksum(&url, hex::decode(old).unwrap()).await;
    let store = nixflex_store::open(&url, 2).await.expect("an earlier wording is adopted");
    store.ping().await.unwrap();
    drop(store);
    // Any other checksum means the migration really changed: refuse to start.
    set_checksum(&url, vec![0; 48]).await;
    assert!(nixflex_store::open(&url, 2).await.is_err());
}

#[tokio::test]
async fn sqlite_databases_from_the_earlier_wording_still_open() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    reworded_comments_are_adopted_other_changes_are_refused(url, OLD_SQLITE_0001).await;
}

#[tokio::test]
async fn postgres_databases_from_the_earlier_wording_still_open() {
    let url = nixflex_store::testing::fresh_postgres_url().await;
    reworded_comments_are_adopted_other_changes_are_refused(url, OLD_POSTGRES_0001).await;
}

/// One call as a database of release 0018 held it (the columns the tallies of 0019 read).
#[derive(Debug, Clone)]
struct OldCall {
    call_id: String,
    account_id: String,
    agent_id: Option<String>,
    direction: &'static str,
    caller_sentiment: Option<&'static str>,
    call_successful: Option<bool>,
    voicemail_detected: bool,
    started_at: chrono::DateTime<chrono::Utc>,
}

/// Two accounts' agents and calls, spread over hours, partial hours and every tallied value.
fn old_data() -> (Vec<(String, String, bool)>, Vec<OldCall>) {
    use chrono::TimeZone as _;
    let mut agents = Vec::new();
    for i in 0..25 {
        agents.push((format!("agent_old_{i:02}"), "acct_upgrade_a".to_owned(), i % 3 != 0));
    }
    for i in 0..4 {
        agents.push((format!("agent_other_{i}"), "acct_upgrade_b".to_owned(), i % 2 == 0));
    }
    let first = chrono::Utc.with_ymd_and_hms(2026, 10, 30, 22, 17, 3).unwrap();
    let mut calls = Vec::new();
    for i in 0..420_i64 {
        let account = if i % 7 == 6 { "acct_upgrade_b" } else { "acct_upgrade_a" };
        calls.push(OldCall {
            call_id: format!("call_old_{i:04}"),
            account_id: account.to_owned(),
            agent_id: match i % 5 {
                4 => None,
                n if account == "acct_upgrade_a" => Some(format!("agent_old_{:02}", n * 3)),
                n => Some(format!("agent_other_{n}")),
            },
            direction: if i % 3 == 0 { "outbound" } else { "inbound" },
            caller_sentiment: [Some("happy"), Some("neutral"), Some("frustrated"), None]
                [usize::try_from(i % 4).unwrap()],
            call_successful: [Some(true), Some(false), None][usize::try_from(i % 3).unwrap()],
            voicemail_detected: i % 11 == 0,
            // Uneven steps over about two days, crossing hour boundaries inside the hour.
            started_at: first + chrono::Duration::seconds(i * 397 + (i % 13) * 59),
        });
    }
    (agents, calls)
}

macro_rules! seed_old_data {
    ($conn:expr) => {{
        let conn = $conn;
        let (agents, calls) = old_data();
        let now = chrono::Utc::now();
        for account in ["acct_upgrade_a", "acct_upgrade_b"] {
            sqlx::query("insert into accounts (account_id, created_at) values ($1, $2)")
                .bind(account)
                .bind(now)
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        for (agent_id, account_id, active) in &agents {
            sqlx::query(
                "insert into agents (agent_id, account_id, api_key_id, name, is_active, settings, \
                 created_at, updated_at) values ($1, $2, 'key_old', $1, $3, $4, $5, $5)",
            )
            .bind(agent_id)
            .bind(account_id)
            .bind(*active)
            .bind(sqlx::types::Json(serde_json::json!({ "name": agent_id, "is_active": active })))
            .bind(now)
            .execute(&mut *conn)
            .await
            .unwrap();
        }
        for c in &calls {
            sqlx::query(
                "insert into calls (call_id, account_id, agent_id, direction, from_number, \
                 to_number, call_status, ended_reason, started_at, transcript, turns, \
                 caller_sentiment, call_successful, extracted_data, voicemail_detected, \
                 created_at, updated_at) values ($1, $2, $3, $4, '+447386172500', \
                 '+14155552671', 'completed', 'caller_hangup', $5, $6, $6, $7, $8, $9, $10, $5, $5)",
            )
            .bind(&c.call_id)
            .bind(&c.account_id)
            .bind(&c.agent_id)
            .bind(c.direction)
            .bind(c.started_at)
            .bind(sqlx::types::Json(serde_json::json!([])))
            .bind(c.caller_sentiment)
            .bind(c.call_successful)
            .bind(sqlx::types::Json(serde_json::json!({})))
            .bind(c.voicemail_detected)
            .execute(&mut *conn)
            .await
            .unwrap();
        }
    }};
}

/// Which seeded calls a filter should list.
type Matches = Box<dyn Fn(&OldCall) -> bool>;

/// Every total the store gives (calls with each documented filter, unfiltered, with ranges;
/// agents all, active, inactive) against what the seeded rows say.
async fn totals_agree(
    store: &dyn nixflex_store::Store,
    agents: &[(String, String, bool)],
    calls: &[OldCall],
) {
    use nixflex_core::call::Direction;
    use nixflex_store::{CallFilter, Page};
    let page = Page { limit: 1, offset: 0 };
    for account in ["acct_upgrade_a", "acct_upgrade_b"] {
        let id = account.to_owned().into();
        for is_active in [None, Some(true), Some(false)] {
            let expected = agents
                .iter()
                .filter(|(_, a, active)| {
                    a == account && is_active.is_none_or(|want| want == *active)
                })
                .count();
            let (_, total) = store.list_agents(&id, is_active, page).await.unwrap();
            assert_eq!(usize::try_from(total).unwrap(), expected, "{account} agents {is_active:?}");
        }
        let mine: Vec<&OldCall> = calls.iter().filter(|c| c.account_id == account).collect();
        let first = mine.iter().map(|c| c.started_at).min().unwrap();
        let mut filters: Vec<(CallFilter, Matches)> = vec![
            (CallFilter::default(), Box::new(|_| true)),
            (
                CallFilter { direction: Some(Direction::Inbound), ..CallFilter::default() },
                Box::new(|c| c.direction == "inbound"),
            ),
            (
                CallFilter { direction: Some(Direction::Outbound), ..CallFilter::default() },
                Box::new(|c| c.direction == "outbound"),
            ),
        ];
        for agent in ["agent_old_00", "agent_old_03", "agent_other_1", "agent_old_01"] {
            filters.push((
                CallFilter { agent_id: Some(agent.into()), ..CallFilter::default() },
                Box::new(move |c| c.agent_id.as_deref() == Some(agent)),
            ));
        }
        for sentiment in ["happy", "neutral", "frustrated"] {
            filters.push((
                CallFilter { caller_sentiment: Some(sentiment.into()), ..CallFilter::default() },
                Box::new(move |c| c.caller_sentiment == Some(sentiment)),
            ));
        }
        for success in [true, false] {
            filters.push((
                CallFilter { call_successful: Some(success), ..CallFilter::default() },
                Box::new(move |c| c.call_successful == Some(success)),
            ));
            filters.push((
                CallFilter { voicemail_detected: Some(success), ..CallFilter::default() },
                Box::new(move |c| c.voicemail_detected == success),
            ));
        }
        // Ranges with ends on, just off and inside hours, open at either end.
        for (from_minutes, to_minutes) in
            [(0, 60), (13, 600), (43, 1_441), (-60, 3_000), (100, 100)]
        {
            let since = first + chrono::Duration::minutes(from_minutes);
            let until = first + chrono::Duration::minutes(to_minutes);
            filters.push((
                CallFilter { since: Some(since), until: Some(until), ..CallFilter::default() },
                Box::new(move |c| c.started_at >= since && c.started_at <= until),
            ));
            filters.push((
                CallFilter { since: Some(since), ..CallFilter::default() },
                Box::new(move |c| c.started_at >= since),
            ));
            filters.push((
                CallFilter { until: Some(until), ..CallFilter::default() },
                Box::new(move |c| c.started_at <= until),
            ));
        }
        for (filter, matches) in filters {
            let expected = mine.iter().filter(|c| matches(c)).count();
            let (_, total) = store.list_calls(&id, &filter, page).await.unwrap();
            assert_eq!(usize::try_from(total).unwrap(), expected, "{account} {filter:?}");
        }
    }
}

async fn a_database_holding_data_upgrades_to_running_tallies(url: String) {
    // A database as release 0018 left it, holding agents and calls, then this release's
    // migrations (0019's call tallies, 0020's agent counts) backfill from what it holds.
    nixflex_store::testing::migrate_through(&url, 18).await.unwrap();
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        seed_old_data!(&mut conn);
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        seed_old_data!(&mut conn);
    }
    let store = nixflex_store::open(&url, 2).await.expect("the upgrade applies");
    let (mut agents, mut calls) = old_data();
    totals_agree(&*store, &agents, &calls).await;

    // After the upgrade the triggers keep them: set-based edits of every tallied column, as an
    // operator's SQL would make them, then deletes.
    let edits = [
        "update calls set caller_sentiment = 'happy', call_successful = null \
         where call_id like 'call_old_00%'",
        "update calls set started_at = started_at + interval_text, voicemail_detected = not voicemail_detected \
         where call_id like 'call_old_01%'",
        "update calls set agent_id = 'agent_old_03', direction = 'outbound' where call_id like 'call_old_02%'",
        "delete from calls where call_id like 'call_old_03%'",
        "update agents set is_active = not is_active where agent_id like 'agent_old_1%'",
        "delete from agents where agent_id like 'agent_old_2%'",
    ];
    drop(store);
    let postgres = url.starts_with("postgres");
    let shift = chrono::Duration::minutes(90);
    for edit in edits {
        let edit = if postgres {
            edit.replace("interval_text", "interval '90 minutes'")
        } else {
            // SQLite's text timestamps: rewrite them as the store writes them.
            edit.replace("started_at = started_at + interval_text, ", "")
        };
        if postgres {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(edit)).execute(&mut conn).await.unwrap();
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(edit)).execute(&mut conn).await.unwrap();
        }
    }
    for c in calls.iter_mut().filter(|c| c.call_id.starts_with("call_old_01")) {
        c.started_at += shift;
        c.voicemail_detected = !c.voicemail_detected;
        if !postgres {
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("update calls set started_at = $1 where call_id = $2")
                .bind(c.started_at)
                .bind(&c.call_id)
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
    for c in calls.iter_mut() {
        if c.call_id.starts_with("call_old_00") {
            c.caller_sentiment = Some("happy");
            c.call_successful = None;
        }
        if c.call_id.starts_with("call_old_02") {
            c.agent_id = Some("agent_old_03".into());
            c.direction = "outbound";
        }
    }
    calls.retain(|c| !c.call_id.starts_with("call_old_03"));
    for (agent_id, _, active) in agents.iter_mut() {
        if agent_id.starts_with("agent_old_1") {
            *active = !*active;
        }
    }
    agents.retain(|(agent_id, _, _)| !agent_id.starts_with("agent_old_2"));
    let store = nixflex_store::open(&url, 2).await.unwrap();
    totals_agree(&*store, &agents, &calls).await;
}

#[tokio::test]
async fn a_sqlite_database_holding_data_upgrades_to_running_tallies() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    a_database_holding_data_upgrades_to_running_tallies(url).await;
}

#[tokio::test]
async fn a_postgres_database_holding_data_upgrades_to_running_tallies() {
    let url = nixflex_store::testing::fresh_postgres_url().await;
    a_database_holding_data_upgrades_to_running_tallies(url).await;
}
