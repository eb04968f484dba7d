//! Agents and their pre-call gates.
//!
//! The repository trait and its data; the SQL below serves both backends (see `sql.rs`).

use async_trait::async_trait;
use nixflex_core::agent::Agent;
use nixflex_core::ids::{AccountId, AgentId};
use nixflex_core::validate::ValidationError;

use crate::{Page, StoreError};

/// Agents and their pre-call gates.
#[async_trait]
pub trait AgentRepo: Send + Sync {
    /// Inserts a new agent.
    async fn insert_agent(&self, agent: &Agent) -> Result<(), StoreError>;

    /// An agent of this account, with its version (bumped by every edit).
    async fn get_agent(
        &self,
        account_id: &AccountId,
        agent_id: &AgentId,
    ) -> Result<Option<(Agent, i64)>, StoreError>;

    /// Whether an agent exists in any account (for `agent_not_owned` vs `agent_not_found`).
    async fn agent_owner(&self, agent_id: &AgentId) -> Result<Option<String>, StoreError>;

    /// The account's agents, newest first, optionally filtered by `is_active`, with the total.
    async fn list_agents(
        &self,
        account_id: &AccountId,
        is_active: Option<bool>,
        page: Page,
    ) -> Result<(Vec<Agent>, i64), StoreError>;

    /// An agent's version (bumped by every edit) without its settings: `None` when the agent is
    /// not this account's. With a cache of the agent's JSON per (id, version), a read needs no
    /// more (docs/decisions.md#api-line-rate).
    async fn agent_version(
        &self,
        account_id: &AccountId,
        agent_id: &AgentId,
    ) -> Result<Option<i64>, StoreError>;

    /// [`list_agents`](Self::list_agents) without the settings: the page's ids and versions,
    /// newest first, and the total.
    async fn list_agent_versions(
        &self,
        account_id: &AccountId,
        is_active: Option<bool>,
        page: Page,
    ) -> Result<(Vec<(AgentId, i64)>, i64), StoreError>;

    /// The account's agents among `agent_ids`, with their versions, in no particular order
    /// (missing ones are left out).
    async fn get_agents(
        &self,
        account_id: &AccountId,
        agent_ids: &[AgentId],
    ) -> Result<Vec<(Agent, i64)>, StoreError>;

    /// Edits an agent so that concurrent edits all land, each on the one before it: `edit` sees
    /// the agent as stored and returns the new one, or a validation error that changes nothing.
    /// Optimistic first (read, edit, one update that lands only on the version read; `edit` may
    /// run again on a lost race, so it must not have side effects), then in a write transaction
    /// that holds the row (PostgreSQL `FOR UPDATE`, SQLite's one writer).
    /// `None` when the agent is not this account's.
    async fn modify_agent(
        &self,
        account_id: &AccountId,
        agent_id: &AgentId,
        edit: &mut (dyn for<'a> FnMut(&'a Agent) -> Result<Agent, ValidationError> + Send),
    ) -> Result<Option<Result<Agent, ValidationError>>, StoreError>;

    /// Deletes an agent; false when it did not exist in this account.
    async fn delete_agent(
        &self,
        account_id: &AccountId,
        agent_id: &AgentId,
    ) -> Result<bool, StoreError>;

    /// Sets or clears an agent's pre-call gate; false if the agent is not this account's.
    async fn set_agent_precall(
        &self,
        account_id: &AccountId,
        agent_id: &AgentId,
        url: Option<&str>,
    ) -> Result<bool, StoreError>;

    /// An agent's pre-call gate: `None` if the agent is not this account's.
    async fn get_agent_precall(
        &self,
        account_id: &AccountId,
        agent_id: &AgentId,
    ) -> Result<Option<Option<String>>, StoreError>;
}

/// Optimistic read-edit-writes an agent's edit tries before it waits for the row's lock.
pub(crate) const OPTIMISTIC_EDITS: usize = 3;

macro_rules! impl_agents {
    ($store:ty, $db:ty, $backend:literal) => {
        mod agents_sql {
            use async_trait::async_trait;

            use nixflex_core::agent::{Agent, AgentSettings};



            use sqlx::Row as _;
            use sqlx::types::Json;

            use crate::sql::{agent_from_parts, map_err};
            use crate::{
                Page, StoreError,
            };
            use super::*;
            use nixflex_core::ids::{AccountId, AgentId};

            type DbRow = <$db as sqlx::Database>::Row;

            fn agent_from_row(row: &DbRow) -> Result<Agent, sqlx::Error> {
                let Json(settings): Json<AgentSettings> = row.try_get("settings")?;
                Ok(agent_from_parts(
                    row.try_get("agent_id")?,
                    row.try_get("account_id")?,
                    row.try_get("api_key_id")?,
                    settings,
                    row.try_get("created_at")?,
                    row.try_get("updated_at")?,
                ))
            }

            /// The `where` clause of an agents list: the filter is a condition only when given, so
            /// the page uses agents_account_active (or agents_account_created) directly. Binds:
            /// `$1` the account, `$2` the filter (null for none).
            fn list_condition(is_active: Option<bool>) -> &'static str {
                match is_active {
                    Some(_) => "where account_id = $1 and is_active = $2",
                    None => "where account_id = $1 and $2 is null",
                }
            }

            /// The statement reading from `agent_counts` how many agents a list with this filter
            /// has (binds `$1`, the account).
            fn count_sql(is_active: Option<bool>) -> &'static str {
                match is_active {
                    None => "select total from agent_counts where account_id = $1",
                    Some(true) => "select active from agent_counts where account_id = $1",
                    Some(false) => "select total - active from agent_counts where account_id = $1",
                }
            }

            /// A page of the account's agents (ids and versions, newest first) and the list's
            /// total, read from the database.
            async fn read_agent_page(
                pool: &sqlx::Pool<$db>,
                account_id: &AccountId,
                is_active: Option<bool>,
                page: Page,
            ) -> Result<(Vec<(AgentId, i64)>, i64), StoreError> {
                // The page and its total in one statement: each statement is a hand-over to
                // a database thread and back, which is most of a list's cost on SQLite. Only
                // a page past the end (no rows to carry the total) asks for it on its own.
                let condition = list_condition(is_active);
                let page_sql = sqlx::AssertSqlSafe(format!(
                    "select agent_id, version, coalesce(({}), 0) as total \
                     from agents {condition} order by created_at desc, agent_id desc limit $3 offset $4",
                    count_sql(is_active)
                ));
                let rows: Vec<(String, i64, i64)> = sqlx::query_as(page_sql)
                    .bind(account_id.as_str())
                    .bind(is_active)
                    .bind(page.limit)
                    .bind(page.offset)
                    .fetch_all(pool)
                    .await
                    .map_err(map_err)?;
                let total = match rows.first() {
                    Some((_, _, total)) => *total,
                    None => count_agents(pool, account_id, is_active).await?,
                };
                Ok((rows.into_iter().map(|(id, version, _)| (AgentId::from(id), version)).collect(), total))
            }

            /// How many of the account's agents a list with this filter has: the running count
            /// the database keeps (migration 0020, docs/decisions.md#call-tallies).
            async fn count_agents(
                pool: &sqlx::Pool<$db>,
                account_id: &AccountId,
                is_active: Option<bool>,
            ) -> Result<i64, StoreError> {
                Ok(sqlx::query_scalar(count_sql(is_active))
                    .bind(account_id.as_str())
                    .fetch_optional(pool)
                    .await
                    .map_err(map_err)?
                    .unwrap_or(0))
            }

            /// Writes `agent`, the edit of `current`, over `version`, bumping it; affects no row
            /// when the stored agent is no longer at `version` (another edit landed first).
            fn versioned_update<'q>(
                current: &'q Agent,
                agent: &'q Agent,
                version: i64,
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments> {
                sqlx::query(
                    "update agents set name = $3, is_active = $4, settings = $5, updated_at = $6, version = version + 1 \
                     where agent_id = $1 and account_id = $2 and version = $7",
                )
                .bind(current.agent_id.as_str())
                .bind(current.account_id.as_str())
                .bind(&agent.settings.name)
                .bind(agent.settings.is_active)
                .bind(Json(&agent.settings))
                .bind(agent.updated_at)
                .bind(version)
            }

            #[async_trait]
            impl crate::AgentRepo for $store {
                async fn insert_agent(&self, agent: &Agent) -> Result<(), StoreError> {
                    sqlx::query(
                        "insert into agents (agent_id, account_id, api_key_id, name, is_active, settings, version, created_at, updated_at) \
                         values ($1, $2, $3, $4, $5, $6, 1, $7, $8)",
                    )
                    .bind(agent.agent_id.as_str())
                    .bind(agent.account_id.as_str())
                    .bind(agent.api_key_id.as_str())
                    .bind(&agent.settings.name)
                    .bind(agent.settings.is_active)
                    .bind(Json(&agent.settings))
                    .bind(agent.created_at)
                    .bind(agent.updated_at)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(())
                }

                async fn get_agent(&self, account_id: &AccountId, agent_id: &AgentId) -> Result<Option<(Agent, i64)>, StoreError> {
                    let row = sqlx::query("select * from agents where agent_id = $1 and account_id = $2")
                        .bind(agent_id.as_str())
                        .bind(account_id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                    let Some(row) = row else { return Ok(None) };
                    let version: i64 = row.try_get("version").map_err(map_err)?;
                    Ok(Some((agent_from_row(&row).map_err(map_err)?, version)))
                }

                async fn agent_owner(&self, agent_id: &AgentId) -> Result<Option<String>, StoreError> {
                    sqlx::query_scalar("select account_id from agents where agent_id = $1")
                        .bind(agent_id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)
                }

                async fn list_agents(
                    &self,
                    account_id: &AccountId,
                    is_active: Option<bool>,
                    page: Page,
                ) -> Result<(Vec<Agent>, i64), StoreError> {
                    let condition = list_condition(is_active);
                    let total = count_agents(&self.pool, account_id, is_active).await?;
                    let page_sql = sqlx::AssertSqlSafe(format!(
                        "select * from agents {condition} order by created_at desc, agent_id desc limit $3 offset $4"
                    ));
                    let rows = sqlx::query(page_sql)
                        .bind(account_id.as_str())
                        .bind(is_active)
                        .bind(page.limit)
                        .bind(page.offset)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(map_err)?;
                    let agents = rows.iter().map(agent_from_row).collect::<Result<Vec<_>, _>>().map_err(map_err)?;
                    Ok((agents, total))
                }

                async fn agent_version(&self, account_id: &AccountId, agent_id: &AgentId) -> Result<Option<i64>, StoreError> {
                    // SQLite answers from memory while nothing has been committed since the
                    // version was read (`crate::versions`).
                    let Some(known) = self.known_versions() else {
                        return sqlx::query_scalar("select version from agents where agent_id = $1 and account_id = $2")
                            .bind(agent_id.as_str())
                            .bind(account_id.as_str())
                            .fetch_optional(&self.pool)
                            .await
                            .map_err(map_err);
                    };
                    let before = match known.get(account_id.as_str(), agent_id.as_str()) {
                        $crate::versions::Lookup::Known(version) => return Ok(version),
                        $crate::versions::Lookup::Ask(before) => before,
                    };
                    let found: Option<(String, i64)> = sqlx::query_as("select account_id, version from agents where agent_id = $1")
                        .bind(agent_id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                    let version = match &found {
                        Some((account, version)) if account == account_id.as_str() => Some(*version),
                        _ => None,
                    };
                    if let Some(before) = before {
                        known.remember(before, agent_id.as_str(), found);
                    }
                    Ok(version)
                }

                async fn list_agent_versions(
                    &self,
                    account_id: &AccountId,
                    is_active: Option<bool>,
                    page: Page,
                ) -> Result<(Vec<(AgentId, i64)>, i64), StoreError> {
                    // SQLite answers from memory while nothing has been committed since the
                    // page was read (`crate::versions`).
                    let Some(known) = self.known_versions() else {
                        return read_agent_page(&self.pool, account_id, is_active, page).await;
                    };
                    let key = (account_id.as_str().to_owned(), is_active, page.limit, page.offset);
                    let before = match known.page(&key) {
                        $crate::versions::Lookup::Known(page) => return Ok((*page).clone()),
                        $crate::versions::Lookup::Ask(before) => before,
                    };
                    let found = read_agent_page(&self.pool, account_id, is_active, page).await?;
                    if let Some(before) = before {
                        known.remember_page(before, key, std::sync::Arc::new(found.clone()));
                    }
                    Ok(found)
                }

                async fn get_agents(&self, account_id: &AccountId, agent_ids: &[AgentId]) -> Result<Vec<(Agent, i64)>, StoreError> {
                    if agent_ids.is_empty() {
                        return Ok(Vec::new());
                    }
                    // A page is at most 100 agents: one `in (…)` list, every value bound.
                    let mut query = sqlx::QueryBuilder::<$db>::new("select * from agents where account_id = ");
                    query.push_bind(account_id.as_str().to_owned()).push(" and agent_id in (");
                    let mut ids = query.separated(", ");
                    for agent_id in agent_ids {
                        ids.push_bind(agent_id.as_str().to_owned());
                    }
                    query.push(")");
                    let rows = query.build().fetch_all(&self.pool).await.map_err(map_err)?;
                    rows.iter()
                        .map(|row| {
                            let version: i64 = row.try_get("version")?;
                            Ok((agent_from_row(row)?, version))
                        })
                        .collect::<Result<Vec<_>, sqlx::Error>>()
                        .map_err(map_err)
                }

                async fn modify_agent(
                    &self,
                    account_id: &AccountId,
                    agent_id: &AgentId,
                    edit: &mut (dyn for<'a> FnMut(&'a Agent) -> Result<Agent, nixflex_core::validate::ValidationError> + Send),
                ) -> Result<Option<Result<Agent, nixflex_core::validate::ValidationError>>, StoreError> {
                    // Optimistic first: read on a reader, edit, then one conditional update on the
                    // writer, which lands only if nobody edited the agent in between. The writer
                    // runs one statement instead of holding a transaction across four round trips
                    // (docs/decisions.md#api-line-rate). A lost race reads again; a hot agent
                    // falls back to the locked transaction below, where edits queue.
                    for _ in 0..$crate::agents::OPTIMISTIC_EDITS {
                        let Some((current, version)) = $crate::agents::AgentRepo::get_agent(self, account_id, agent_id).await? else {
                            return Ok(None);
                        };
                        let agent = match edit(&current) {
                            Ok(agent) => agent,
                            Err(invalid) => return Ok(Some(Err(invalid))),
                        };
                        let done = versioned_update(&current, &agent, version)
                            .execute(&mut *self.write().await?)
                            .await
                            .map_err(map_err)?;
                        if done.rows_affected() == 1 {
                            return Ok(Some(Ok(agent)));
                        }
                    }
                    let (mut tx, _turn) = self.begin_write().await?;
                    let select = if Self::ROW_LOCKS {
                        "select * from agents where agent_id = $1 and account_id = $2 for update"
                    } else {
                        "select * from agents where agent_id = $1 and account_id = $2"
                    };
                    let row = sqlx::query(select)
                        .bind(agent_id.as_str())
                        .bind(account_id.as_str())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    let Some(row) = row else { return Ok(None) };
                    let version: i64 = row.try_get("version").map_err(map_err)?;
                    let current = agent_from_row(&row).map_err(map_err)?;
                    let agent = match edit(&current) {
                        Ok(agent) => agent,
                        // Dropping the transaction rolls it back and releases the row.
                        Err(invalid) => return Ok(Some(Err(invalid))),
                    };
                    // The row is held: it is still at `version`.
                    versioned_update(&current, &agent, version).execute(&mut *tx).await.map_err(map_err)?;
                    tx.commit().await.map_err(map_err)?;
                    Ok(Some(Ok(agent)))
                }

                async fn delete_agent(&self, account_id: &AccountId, agent_id: &AgentId) -> Result<bool, StoreError> {
                    let done = sqlx::query("delete from agents where agent_id = $1 and account_id = $2")
                        .bind(agent_id.as_str())
                        .bind(account_id.as_str())
                        .execute(&mut *self.write().await?)
                        .await
                        .map_err(map_err);
                    // Its numbers lost their agent (a cascade): this node forgets them at once.
                    self.numbers.forget();
                    Ok(done?.rows_affected() == 1)
                }

                async fn set_agent_precall(&self, account_id: &AccountId, agent_id: &AgentId, url: Option<&str>) -> Result<bool, StoreError> {
                    let done = sqlx::query("update agents set precall_url = $3 where agent_id = $1 and account_id = $2")
                        .bind(agent_id.as_str())
                        .bind(account_id.as_str())
                        .bind(url)
                        .execute(&mut *self.write().await?)
                        .await
                        .map_err(map_err)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn get_agent_precall(&self, account_id: &AccountId, agent_id: &AgentId) -> Result<Option<Option<String>>, StoreError> {
                    sqlx::query_scalar("select precall_url from agents where agent_id = $1 and account_id = $2")
                        .bind(agent_id.as_str())
                        .bind(account_id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)
                }
            }
        }
    };
}
pub(crate) use impl_agents;
