#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! SQLite answers agents' versions from memory only while nothing has been committed to the
//! database, by this store or by anyone else on the same file (docs/decisions.md#api-line-rate).

use nixflex_core::agent::{Agent, AgentSettings};
use nixflex_core::ids::{self, AccountId};
use nixflex_store::{AgentRepo, Page, SqliteStore, now};

async fn new_account(store: &SqliteStore) -> AccountId {
    nixflex_store::testing::new_account(store).await.unwrap()
}

fn agent(account_id: &AccountId) -> Agent {
    let at = now();
    Agent {
        agent_id: ids::new_agent_id(),
        account_id: account_id.clone(),
        api_key_id: "nxf_x".into(),
        settings: AgentSettings { name: "kept".to_owned(), ..AgentSettings::default() },
        created_at: at,
        updated_at: at,
    }
}

fn rename(
    to: &str,
) -> impl FnMut(&Agent) -> Result<Agent, nixflex_core::validate::ValidationError> {
    let to = to.to_owned();
    move |current: &Agent| {
        let mut next = current.clone();
        next.settings.name.clone_from(&to);
        Ok(next)
    }
}

/// Two stores on one new database file — as a second process on it would be (a restart without
/// downtime, a second node) — and an account with one agent, made through the first.
struct TwoStores {
    here: SqliteStore,
    there: SqliteStore,
    account: AccountId,
    agent: Agent,
    _dir: nixflex_store::testing::TempDirGuard,
}

async fn two_stores() -> TwoStores {
    let (url, dir) = nixflex_store::testing::fresh_sqlite_url();
    let here = SqliteStore::connect(&url, 4).await.unwrap();
    let there = SqliteStore::connect(&url, 4).await.unwrap();
    let account = new_account(&here).await;
    let agent = agent(&account);
    here.insert_agent(&agent).await.unwrap();
    TwoStores { here, there, account, agent, _dir: dir }
}

#[tokio::test]
async fn a_version_is_answered_from_memory_until_anyone_commits() {
    let TwoStores { here, there, account, agent: a, _dir } = two_stores().await;

    // The first read asks the database; the next ones do not.
    assert_eq!(here.agent_version(&account, &a.agent_id).await.unwrap(), Some(1));
    let asked = here.versions_known_without_asking();
    assert_eq!(here.agent_version(&account, &a.agent_id).await.unwrap(), Some(1));
    assert_eq!(here.agent_version(&account, &a.agent_id).await.unwrap(), Some(1));
    assert_eq!(here.versions_known_without_asking(), asked + 2);
    // Another account asking for it is told it does not exist, also from memory.
    let other: AccountId = ids::new_account_id();
    assert_eq!(here.agent_version(&other, &a.agent_id).await.unwrap(), None);
    assert_eq!(here.versions_known_without_asking(), asked + 3);

    // An edit through the other store is seen at once: its commit changed the WAL index.
    there.modify_agent(&account, &a.agent_id, &mut rename("edited there")).await.unwrap();
    assert_eq!(here.agent_version(&account, &a.agent_id).await.unwrap(), Some(2));
    assert_eq!(here.versions_known_without_asking(), asked + 3, "asked the database again");
    assert_eq!(here.agent_version(&account, &a.agent_id).await.unwrap(), Some(2));
    assert_eq!(here.versions_known_without_asking(), asked + 4);

    // So is a commit of anything else (here, another account), and an edit through this one.
    new_account(&there).await;
    assert_eq!(here.agent_version(&account, &a.agent_id).await.unwrap(), Some(2));
    assert_eq!(here.versions_known_without_asking(), asked + 4);
    here.modify_agent(&account, &a.agent_id, &mut rename("edited here")).await.unwrap();
    assert_eq!(here.agent_version(&account, &a.agent_id).await.unwrap(), Some(3));
    assert_eq!(there.agent_version(&account, &a.agent_id).await.unwrap(), Some(3));

    // A deleted agent is gone everywhere; an id that never existed is remembered as absent.
    assert!(there.delete_agent(&account, &a.agent_id).await.unwrap());
    assert_eq!(here.agent_version(&account, &a.agent_id).await.unwrap(), None);
    let before = here.versions_known_without_asking();
    assert_eq!(here.agent_version(&account, &a.agent_id).await.unwrap(), None);
    assert_eq!(here.versions_known_without_asking(), before + 1);
}

#[tokio::test]
async fn a_page_of_agents_is_answered_from_memory_until_anyone_commits() {
    let TwoStores { here, there, account, agent: first, _dir } = two_stores().await;
    let page = Page { limit: 25, offset: 0 };

    let listed = here.list_agent_versions(&account, None, page).await.unwrap();
    assert_eq!(listed, (vec![(first.agent_id.clone(), 1)], 1));
    let asked = here.versions_known_without_asking();
    assert_eq!(here.list_agent_versions(&account, None, page).await.unwrap(), listed);
    assert_eq!(here.versions_known_without_asking(), asked + 1);
    // Each filter and page is its own answer.
    assert_eq!(here.list_agent_versions(&account, Some(false), page).await.unwrap(), (vec![], 0));
    assert_eq!(here.versions_known_without_asking(), asked + 1);

    // An agent created through the other store is listed at once, and counted.
    let second = agent(&account);
    there.insert_agent(&second).await.unwrap();
    let listed = here.list_agent_versions(&account, None, page).await.unwrap();
    assert_eq!(listed.1, 2);
    assert_eq!(listed.0.len(), 2);
    assert!(listed.0.contains(&(second.agent_id.clone(), 1)));
    assert_eq!(here.versions_known_without_asking(), asked + 1, "asked the database again");
    // An edit moves the listed version; a delete takes it off the page.
    there.modify_agent(&account, &first.agent_id, &mut rename("edited there")).await.unwrap();
    let listed = here.list_agent_versions(&account, None, page).await.unwrap();
    assert!(listed.0.contains(&(first.agent_id.clone(), 2)), "{listed:?}");
    assert!(there.delete_agent(&account, &second.agent_id).await.unwrap());
    assert_eq!(
        here.list_agent_versions(&account, None, page).await.unwrap(),
        (vec![(first.agent_id.clone(), 2)], 1)
    );
}
