//! Request guards: rate-limit counters and idempotency records.
//!
//! The repository trait and its data; the SQL below serves both backends (see `sql.rs`).

use async_trait::async_trait;

use crate::StoreError;

/// A stored idempotent response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status_code: u16,
    /// Content-Type of the body.
    pub content_type: Option<String>,
    /// Raw body.
    pub body: Vec<u8>,
}

/// Identity of an idempotent request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyScope {
    /// `acct_…` or `ip:<addr>` for unauthenticated requests.
    pub scope: String,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// The client's `Idempotency-Key`.
    pub key: String,
}

/// What to do with a request carrying an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// First time (or the old record expired/was abandoned): run it.
    Started,
    /// Finished earlier with the same request: replay this.
    Replay(StoredResponse),
    /// Same key, different request.
    Mismatch,
    /// The same request is still running elsewhere.
    InFlight,
}

/// Request guards: rate-limit counters and idempotency records.
#[async_trait]
pub trait GuardRepo: Send + Sync {
    /// Adds `n` requests counted on one node to `bucket`'s fixed window starting at
    /// `window_start` (one upsert, atomic across nodes) and returns the window's total across
    /// nodes. `n = 0` only reads the total (no write). A flush for a window older than the one
    /// stored is dropped (a late node must not rewind the counter) and returns `n`.
    /// (docs/api.md#rate-limits)
    async fn rate_limit_add(
        &self,
        bucket: &str,
        window_start: i64,
        expires_at: i64,
        n: i64,
    ) -> Result<i64, StoreError>;

    /// Deletes counters that expired before `now` (unix seconds).
    async fn purge_rate_limits(&self, now: i64) -> Result<u64, StoreError>;

    /// Claims an idempotency key, or reports why not. `now`/`lease_until`/`expired_before` are
    /// unix seconds: a record created before `expired_before` is treated as absent, and an
    /// in-flight record whose lease has passed was abandoned by a crashed node.
    async fn idempotency_begin(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &str,
        now: i64,
        lease_until: i64,
        expired_before: i64,
    ) -> Result<IdempotencyBegin, StoreError>;

    /// Stores the response of a started request.
    async fn idempotency_complete(
        &self,
        scope: &IdempotencyScope,
        response: &StoredResponse,
    ) -> Result<(), StoreError>;

    /// Forgets a started request (5xx responses are not stored).
    async fn idempotency_abandon(&self, scope: &IdempotencyScope) -> Result<(), StoreError>;

    /// Deletes records created before `before` (unix seconds): finished ones, and in-flight ones
    /// whose lease has also passed (abandoned by a crashed node). A live lease is kept.
    async fn purge_idempotency(&self, before: i64) -> Result<u64, StoreError>;
}

macro_rules! impl_guards {
    ($store:ty, $db:ty, $backend:literal) => {
        mod guards_sql {
            use async_trait::async_trait;





            use sqlx::Row as _;


            use crate::sql::map_err;
            use crate::{
                IdempotencyBegin,
                IdempotencyScope, StoreError,
                StoredResponse,
            };
            use super::*;


            #[async_trait]
            impl crate::GuardRepo for $store {
                async fn rate_limit_add(
                    &self,
                    bucket: &str,
                    window_start: i64,
                    expires_at: i64,
                    n: i64,
                ) -> Result<i64, StoreError> {
                    if n <= 0 {
                        let total: Option<i64> = sqlx::query_scalar(
                            "select count from rate_limits where bucket = $1 and window_start = $2",
                        )
                        .bind(bucket)
                        .bind(window_start)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                        return Ok(total.unwrap_or(0));
                    }
                    let total: Option<i64> = sqlx::query_scalar(
                        "insert into rate_limits (bucket, window_start, count, expires_at) values ($1, $2, $4, $3) \
                         on conflict (bucket) do update set \
                         count = case when rate_limits.window_start = excluded.window_start then rate_limits.count + excluded.count else excluded.count end, \
                         window_start = excluded.window_start, expires_at = excluded.expires_at \
                         where excluded.window_start >= rate_limits.window_start \
                         returning count",
                    )
                    .bind(bucket)
                    .bind(window_start)
                    .bind(expires_at)
                    .bind(n)
                    .fetch_optional(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(total.unwrap_or(n))
                }

                async fn purge_rate_limits(&self, now: i64) -> Result<u64, StoreError> {
                    let done = sqlx::query("delete from rate_limits where expires_at < $1")
                        .bind(now)
                        .execute(&mut *self.write().await?)
                        .await
                        .map_err(map_err)?;
                    Ok(done.rows_affected())
                }

                async fn idempotency_begin(
                    &self,
                    scope: &IdempotencyScope,
                    fingerprint: &str,
                    now: i64,
                    lease_until: i64,
                    expired_before: i64,
                ) -> Result<IdempotencyBegin, StoreError> {
                    // Two attempts: the second runs only if a stale record was replaced concurrently.
                    for _ in 0..2 {
                        let inserted = sqlx::query(
                            "insert into idempotency_keys (scope, method, path, idem_key, fingerprint, state, created_at, locked_until) \
                             values ($1, $2, $3, $4, $5, 'in_flight', $6, $7) on conflict do nothing",
                        )
                        .bind(&scope.scope)
                        .bind(&scope.method)
                        .bind(&scope.path)
                        .bind(&scope.key)
                        .bind(fingerprint)
                        .bind(now)
                        .bind(lease_until)
                        .execute(&mut *self.write().await?)
                        .await
                        .map_err(map_err)?;
                        if inserted.rows_affected() == 1 {
                            return Ok(IdempotencyBegin::Started);
                        }
                        let row = sqlx::query(
                            "select fingerprint, state, status_code, content_type, response_body, created_at, locked_until \
                             from idempotency_keys where scope = $1 and method = $2 and path = $3 and idem_key = $4",
                        )
                        .bind(&scope.scope)
                        .bind(&scope.method)
                        .bind(&scope.path)
                        .bind(&scope.key)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                        let Some(row) = row else { continue };
                        let stored_fingerprint: String = row.try_get("fingerprint").map_err(map_err)?;
                        let state: String = row.try_get("state").map_err(map_err)?;
                        let created_at: i64 = row.try_get("created_at").map_err(map_err)?;
                        let locked_until: i64 = row.try_get("locked_until").map_err(map_err)?;
                        let expired = created_at < expired_before;
                        let abandoned = state == "in_flight" && locked_until < now && stored_fingerprint == fingerprint;
                        if expired || abandoned {
                            // Take the record over, but only if nobody else changed it meanwhile.
                            let taken = sqlx::query(
                                "update idempotency_keys set fingerprint = $5, state = 'in_flight', status_code = null, \
                                 content_type = null, response_body = null, created_at = $6, locked_until = $7 \
                                 where scope = $1 and method = $2 and path = $3 and idem_key = $4 and created_at = $8 and locked_until = $9",
                            )
                            .bind(&scope.scope)
                            .bind(&scope.method)
                            .bind(&scope.path)
                            .bind(&scope.key)
                            .bind(fingerprint)
                            .bind(now)
                            .bind(lease_until)
                            .bind(created_at)
                            .bind(locked_until)
                            .execute(&mut *self.write().await?)
                            .await
                            .map_err(map_err)?;
                            if taken.rows_affected() == 1 {
                                return Ok(IdempotencyBegin::Started);
                            }
                            continue;
                        }
                        if stored_fingerprint != fingerprint {
                            return Ok(IdempotencyBegin::Mismatch);
                        }
                        if state != "done" {
                            return Ok(IdempotencyBegin::InFlight);
                        }
                        let status: i64 = row.try_get("status_code").map_err(map_err)?;
                        return Ok(IdempotencyBegin::Replay(StoredResponse {
                            status_code: u16::try_from(status).unwrap_or(500),
                            content_type: row.try_get("content_type").map_err(map_err)?,
                            body: row.try_get::<Option<Vec<u8>>, _>("response_body").map_err(map_err)?.unwrap_or_default(),
                        }));
                    }
                    Ok(IdempotencyBegin::InFlight)
                }

                async fn idempotency_complete(
                    &self,
                    scope: &IdempotencyScope,
                    response: &StoredResponse,
                ) -> Result<(), StoreError> {
                    sqlx::query(
                        "update idempotency_keys set state = 'done', status_code = $5, content_type = $6, response_body = $7 \
                         where scope = $1 and method = $2 and path = $3 and idem_key = $4",
                    )
                    .bind(&scope.scope)
                    .bind(&scope.method)
                    .bind(&scope.path)
                    .bind(&scope.key)
                    .bind(i64::from(response.status_code))
                    .bind(&response.content_type)
                    .bind(&response.body)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(())
                }

                async fn idempotency_abandon(&self, scope: &IdempotencyScope) -> Result<(), StoreError> {
                    sqlx::query(
                        "delete from idempotency_keys where scope = $1 and method = $2 and path = $3 and idem_key = $4 and state = 'in_flight'",
                    )
                    .bind(&scope.scope)
                    .bind(&scope.method)
                    .bind(&scope.path)
                    .bind(&scope.key)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(())
                }

                async fn purge_idempotency(&self, before: i64) -> Result<u64, StoreError> {
                    // Finished records, and in-flight ones whose lease ran out (their node crashed).
                    let done = sqlx::query(
                        "delete from idempotency_keys where created_at < $1 and (state = 'done' or locked_until < $1)",
                    )
                        .bind(before)
                        .execute(&mut *self.write().await?)
                        .await
                        .map_err(map_err)?;
                    Ok(done.rows_affected())
                }
            }
        }
    };
}
pub(crate) use impl_guards;
