//! Durable background jobs: a queue in the database that every node's worker claims from
//! (docs/jobs.md).
//!
//! A job is claimed by taking a lease (an owner and an expiry). Completing, failing or extending
//! a job names the lease ([`Lease`]: owner and attempt number), so a node whose lease expired and
//! was taken over can no longer change the job. The repository trait and its data; the SQL below
//! serves both backends (see `sql.rs`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{Page, StoreError};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting for its run-at time or a worker.
    Queued,
    /// Leased by a worker (claimable again once the lease expires).
    Running,
    /// Ran successfully.
    Done,
    /// Failed permanently or exhausted its attempts; kept for inspection and `jobs retry`.
    Dead,
}

impl JobState {
    /// Every state, in life order.
    pub const ALL: [Self; 4] = [Self::Queued, Self::Running, Self::Done, Self::Dead];

    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Dead => "dead",
        }
    }

    /// Parses a stored or typed name.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// `job_…`.
    pub job_id: String,
    /// Which handler runs it (e.g. `call.ended`).
    pub kind: String,
    /// The handler's input.
    pub payload: Value,
    /// One job per effect: a second enqueue with the same key is a no-op.
    pub idempotency_key: String,
    /// Where it is in its life.
    pub state: JobState,
    /// Not claimed before this time.
    pub run_at: DateTime<Utc>,
    /// Claims so far (the running attempt included).
    pub attempts: i64,
    /// After this many failed attempts the job is dead.
    pub max_attempts: i64,
    /// The node holding (or that last held) the lease.
    pub lease_owner: Option<String>,
    /// When the lease lapses.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// Enqueued at.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl Job {
    /// The lease this claim holds (valid while the job is running under it).
    pub fn lease(&self) -> Lease {
        Lease {
            job_id: self.job_id.clone(),
            owner: self.lease_owner.clone().unwrap_or_default(),
            attempt: self.attempts,
        }
    }
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// `job_…`.
    pub job_id: String,
    /// Which handler runs it.
    pub kind: String,
    /// The handler's input.
    pub payload: Value,
    /// Unique per effect.
    pub idempotency_key: String,
    /// Not claimed before this time.
    pub run_at: DateTime<Utc>,
    /// Attempts before the job is dead (at least 1).
    pub max_attempts: i64,
}

/// The follow-up job kind queued when a call ends.
pub const CALL_ENDED: &str = "call.ended";

/// The job kind queued when a call connects (its `call.started` webhooks).
pub const CALL_STARTED: &str = "call.started";

impl NewJob {
    /// A job of `kind` due now, keyed `kind:key` so it is queued once per effect.
    pub fn new(kind: &str, key: &str, payload: Value, max_attempts: i64) -> Self {
        Self {
            job_id: nixflex_core::ids::new_job_id(),
            kind: kind.to_owned(),
            payload,
            idempotency_key: format!("{kind}:{key}"),
            run_at: crate::now(),
            max_attempts: max_attempts.max(1),
        }
    }

    /// A call's follow-up of `kind` (payload: the call and its account), once per call.
    pub fn call_follow_up(kind: &str, call_id: &str, account_id: &str, max_attempts: i64) -> Self {
        Self::new(
            kind,
            call_id,
            serde_json::json!({"call_id": call_id, "account_id": account_id}),
            max_attempts,
        )
    }
}

/// A worker's hold on a claimed job. Writes that name a lease apply only while the job is still
/// running under it (same owner, same attempt), so a worker that lost its lease changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The job.
    pub job_id: String,
    /// The node that claimed it.
    pub owner: String,
    /// Which attempt (the job's `attempts` when claimed).
    pub attempt: i64,
}

/// Filters of `nixflex jobs list` (combined with AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
}

/// How many jobs are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobCounts {
    /// Queued.
    pub queued: i64,
    /// Running.
    pub running: i64,
    /// Done.
    pub done: i64,
    /// Dead.
    pub dead: i64,
}

/// Durable background jobs.
#[async_trait]
pub trait JobRepo: Send + Sync {
    /// Queues a job; false (nothing changed) when a job with its idempotency key exists.
    async fn enqueue_job(&self, job: &NewJob) -> Result<bool, StoreError>;

    /// Leases up to `limit` claimable jobs to `owner` until `lease_until`: queued jobs due at
    /// `now`, and running jobs whose lease expired (their worker is gone). Each claim counts an
    /// attempt. Running jobs whose lease expired on their last attempt become dead instead.
    /// Exclusive across nodes: a job is leased to one worker at a time.
    async fn claim_jobs(
        &self,
        owner: &str,
        limit: i64,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Job>, StoreError>;

    /// [`JobRepo::claim_jobs`] without looking for lapsed leases: only queued jobs due at `now`
    /// (one statement instead of three). A worker uses it when it is woken for work just queued;
    /// its periodic polls use `claim_jobs`, so a lapsed lease is still taken over within one poll
    /// interval (docs/jobs.md#claiming-and-leases).
    async fn claim_queued_jobs(
        &self,
        owner: &str,
        limit: i64,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Job>, StoreError>;

    /// Marks a leased job done; false if the lease was lost.
    async fn complete_job(&self, lease: &Lease, now: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Records a failed attempt: queued again at `retry_at`, or dead when `retry_at` is `None`
    /// or the attempts are exhausted. False if the lease was lost.
    async fn fail_job(
        &self,
        lease: &Lease,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Puts a leased job back in the queue until `run_at` without counting the attempt: the
    /// handler found it is too early (it waits for something else), not that it failed. False if
    /// the lease was lost.
    async fn defer_job(
        &self,
        lease: &Lease,
        run_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Makes the queued job keyed `idempotency_key` due at `now` if it was waiting for later
    /// (what it waited for has happened); false if no such job waits.
    async fn run_queued_job_now(
        &self,
        idempotency_key: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Extends a lease (long jobs); false if it was lost.
    async fn extend_lease(
        &self,
        lease: &Lease,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// One job.
    async fn get_job(&self, job_id: &str) -> Result<Option<Job>, StoreError>;

    /// Jobs, newest first, filtered.
    async fn list_jobs(&self, filter: &JobFilter, page: Page) -> Result<Vec<Job>, StoreError>;

    /// Queues a dead job again with fresh attempts; false if it is not dead.
    async fn retry_job(&self, job_id: &str, now: DateTime<Utc>) -> Result<bool, StoreError>;

    /// How many jobs are in each state.
    async fn job_counts(&self) -> Result<JobCounts, StoreError>;

    /// Jobs queued or running, per kind and state: the queue depth `GET /metrics` reports
    /// (docs/operations.md#metrics). Reads only the rows of those two states, through the
    /// `(state, run_at)` index.
    async fn job_queue_depth(&self) -> Result<Vec<(String, JobState, i64)>, StoreError>;

    /// Deletes up to `limit` done jobs last changed before `before`; returns how many. Their
    /// idempotency keys go with them, so keep them longer than a duplicate writer can arrive.
    async fn purge_done_jobs(&self, before: DateTime<Utc>, limit: i64) -> Result<u64, StoreError>;

    /// Ends calls whose media session stopped heart-beating before `stale_before` without writing
    /// its end: each gets `ended_reason: error` (status `completed` unless already final) and its
    /// `kind` follow-up, in one transaction per batch, once across nodes. Returns the call ids.
    async fn end_stale_calls(
        &self,
        stale_before: DateTime<Utc>,
        kind: &str,
        max_attempts: i64,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError>;
}

macro_rules! impl_jobs {
    ($store:ty, $db:ty, $backend:literal) => {
        mod jobs_sql {
            use async_trait::async_trait;
            use chrono::{DateTime, Utc};
            use nixflex_core::call::{CallStatus, EndedReason};
            use serde_json::Value;
            use sqlx::Row as _;
            use sqlx::types::Json;

            use crate::sql::map_err;
            use crate::{Job, JobCounts, JobFilter, JobState, Lease, NewJob, Page, StoreError};
            use super::*;

            type DbRow = <$db as sqlx::Database>::Row;

            fn job_from_row(row: &DbRow) -> Result<Job, sqlx::Error> {
                let state: String = row.try_get("state")?;
                let Json(payload): Json<Value> = row.try_get("payload")?;
                Ok(Job {
                    job_id: row.try_get("job_id")?,
                    kind: row.try_get("kind")?,
                    payload,
                    idempotency_key: row.try_get("idempotency_key")?,
                    state: JobState::parse(&state).ok_or_else(|| {
                        sqlx::Error::Decode(format!("unknown job state `{state}`").into())
                    })?,
                    run_at: row.try_get("run_at")?,
                    attempts: row.try_get("attempts")?,
                    max_attempts: row.try_get("max_attempts")?,
                    lease_owner: row.try_get("lease_owner")?,
                    lease_expires_at: row.try_get("lease_expires_at")?,
                    last_error: row.try_get("last_error")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }

            /// Inserts a job unless its idempotency key exists (then nothing happens).
            pub(super) async fn insert_job_in<'e, E>(executor: E, job: &NewJob, now: DateTime<Utc>) -> Result<bool, StoreError>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                let done = sqlx::query(
                    "insert into jobs (job_id, kind, payload, idempotency_key, state, run_at, attempts, max_attempts, created_at, updated_at) \
                     values ($1, $2, $3, $4, 'queued', $5, 0, $6, $7, $7) on conflict (idempotency_key) do nothing",
                )
                .bind(&job.job_id)
                .bind(&job.kind)
                .bind(Json(&job.payload))
                .bind(&job.idempotency_key)
                .bind(job.run_at)
                .bind(job.max_attempts.max(1))
                .bind(now)
                .execute(executor)
                .await
                .map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }

            /// Claims due queued jobs, first (`lapsed`) taking over running jobs whose lease
            /// expired and burying those on their last attempt.
            async fn claim(
                store: &$store,
                owner: &str,
                limit: i64,
                lease_until: DateTime<Utc>,
                now: DateTime<Utc>,
                lapsed: bool,
            ) -> Result<Vec<Job>, StoreError> {
                let (mut tx, _turn) = store.begin_write().await?;
                // A lease that lapsed on the last attempt: the worker died running it, and
                // there is no attempt left to give.
                if lapsed {
                    sqlx::query(
                        "update jobs set state = 'dead', last_error = coalesce(last_error, 'lease expired on the last attempt'), \
                         lease_expires_at = null, updated_at = $1 \
                         where state = 'running' and lease_expires_at <= $1 and attempts >= max_attempts",
                    )
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                }
                // Two statements, each served by its index (`jobs_lease`, `jobs_due`): one
                // query with an OR of both would scan the whole table, done jobs included.
                // Expired leases first: their jobs have waited longest. PostgreSQL: rows
                // another node is claiming are skipped, not waited for. SQLite: the write
                // transaction already excludes every other writer.
                static CLAIM: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
                    let lock = if <$store>::ROW_LOCKS { " for update skip locked" } else { "" };
                    let claim = |due: &str| {
                        format!(
                            "update jobs set state = 'running', lease_owner = $1, lease_expires_at = $2, \
                             attempts = attempts + 1, updated_at = $3 \
                             where job_id in (select job_id from jobs where {due} limit $4{lock}) returning *"
                        )
                    };
                    [
                        claim("state = 'running' and lease_expires_at <= $3 order by lease_expires_at"),
                        claim("state = 'queued' and run_at <= $3 order by run_at"),
                    ]
                });
                let mut rows = Vec::new();
                for sql in CLAIM.iter().skip(usize::from(!lapsed)) {
                    let left = limit.max(0) - i64::try_from(rows.len()).unwrap_or(i64::MAX);
                    if left <= 0 {
                        break;
                    }
                    rows.extend(
                        sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                            .bind(owner)
                            .bind(lease_until)
                            .bind(now)
                            .bind(left)
                            .fetch_all(&mut *tx)
                            .await
                            .map_err(map_err)?,
                    );
                }
                tx.commit().await.map_err(map_err)?;
                let mut jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>, _>>().map_err(map_err)?;
                jobs.sort_by(|a, b| (a.run_at, &a.job_id).cmp(&(b.run_at, &b.job_id)));
                Ok(jobs)
            }

            #[async_trait]
            impl crate::JobRepo for $store {
                async fn enqueue_job(&self, job: &NewJob) -> Result<bool, StoreError> {
                    insert_job_in(&mut *self.write().await?, job, crate::now()).await
                }

                async fn claim_jobs(
                    &self,
                    owner: &str,
                    limit: i64,
                    lease_until: DateTime<Utc>,
                    now: DateTime<Utc>,
                ) -> Result<Vec<Job>, StoreError> {
                    claim(self, owner, limit, lease_until, now, true).await
                }

                async fn claim_queued_jobs(
                    &self,
                    owner: &str,
                    limit: i64,
                    lease_until: DateTime<Utc>,
                    now: DateTime<Utc>,
                ) -> Result<Vec<Job>, StoreError> {
                    claim(self, owner, limit, lease_until, now, false).await
                }

                async fn complete_job(&self, lease: &Lease, now: DateTime<Utc>) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "update jobs set state = 'done', lease_expires_at = null, updated_at = $4 \
                         where job_id = $1 and state = 'running' and lease_owner = $2 and attempts = $3",
                    )
                    .bind(&lease.job_id)
                    .bind(&lease.owner)
                    .bind(lease.attempt)
                    .bind(now)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn fail_job(
                    &self,
                    lease: &Lease,
                    error: &str,
                    retry_at: Option<DateTime<Utc>>,
                    now: DateTime<Utc>,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "update jobs set \
                         state = case when $5 is null or attempts >= max_attempts then 'dead' else 'queued' end, \
                         run_at = coalesce($5, run_at), last_error = $4, lease_expires_at = null, updated_at = $6 \
                         where job_id = $1 and state = 'running' and lease_owner = $2 and attempts = $3",
                    )
                    .bind(&lease.job_id)
                    .bind(&lease.owner)
                    .bind(lease.attempt)
                    .bind(error)
                    .bind(retry_at)
                    .bind(now)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn defer_job(
                    &self,
                    lease: &Lease,
                    run_at: DateTime<Utc>,
                    now: DateTime<Utc>,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "update jobs set state = 'queued', run_at = $4, attempts = attempts - 1, \
                         lease_expires_at = null, updated_at = $5 \
                         where job_id = $1 and state = 'running' and lease_owner = $2 and attempts = $3",
                    )
                    .bind(&lease.job_id)
                    .bind(&lease.owner)
                    .bind(lease.attempt)
                    .bind(run_at)
                    .bind(now)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn run_queued_job_now(&self, idempotency_key: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "update jobs set run_at = $2, updated_at = $2 where idempotency_key = $1 and state = 'queued' and run_at > $2",
                    )
                    .bind(idempotency_key)
                    .bind(now)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn extend_lease(
                    &self,
                    lease: &Lease,
                    lease_until: DateTime<Utc>,
                    now: DateTime<Utc>,
                ) -> Result<bool, StoreError> {
                    // Only a lease that has not lapsed: once it has, another node may hold the job.
                    let done = sqlx::query(
                        "update jobs set lease_expires_at = $4, updated_at = $5 \
                         where job_id = $1 and state = 'running' and lease_owner = $2 and attempts = $3 and lease_expires_at > $5",
                    )
                    .bind(&lease.job_id)
                    .bind(&lease.owner)
                    .bind(lease.attempt)
                    .bind(lease_until)
                    .bind(now)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn get_job(&self, job_id: &str) -> Result<Option<Job>, StoreError> {
                    let row = sqlx::query("select * from jobs where job_id = $1")
                        .bind(job_id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                    row.map(|row| job_from_row(&row)).transpose().map_err(map_err)
                }

                async fn list_jobs(&self, filter: &JobFilter, page: Page) -> Result<Vec<Job>, StoreError> {
                    let rows = sqlx::query(
                        "select * from jobs where ($1 is null or state = $1) and ($2 is null or kind = $2) \
                         order by created_at desc, job_id desc limit $3 offset $4",
                    )
                    .bind(filter.state.map(JobState::as_str))
                    .bind(&filter.kind)
                    .bind(page.limit)
                    .bind(page.offset)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                    rows.iter().map(job_from_row).collect::<Result<Vec<_>, _>>().map_err(map_err)
                }

                async fn retry_job(&self, job_id: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "update jobs set state = 'queued', attempts = 0, run_at = $2, lease_owner = null, \
                         lease_expires_at = null, updated_at = $2 where job_id = $1 and state = 'dead'",
                    )
                    .bind(job_id)
                    .bind(now)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn job_counts(&self) -> Result<JobCounts, StoreError> {
                    let rows = sqlx::query("select state, count(*) as n from jobs group by state")
                        .fetch_all(&self.pool)
                        .await
                        .map_err(map_err)?;
                    let mut counts = JobCounts::default();
                    for row in &rows {
                        let state: String = row.try_get("state").map_err(map_err)?;
                        let n: i64 = row.try_get("n").map_err(map_err)?;
                        match JobState::parse(&state) {
                            Some(JobState::Queued) => counts.queued = n,
                            Some(JobState::Running) => counts.running = n,
                            Some(JobState::Done) => counts.done = n,
                            Some(JobState::Dead) => counts.dead = n,
                            None => {}
                        }
                    }
                    Ok(counts)
                }

                async fn job_queue_depth(&self) -> Result<Vec<(String, JobState, i64)>, StoreError> {
                    let rows = sqlx::query(
                        "select kind, state, count(*) as n from jobs \
                         where state in ('queued', 'running') group by kind, state",
                    )
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                    let mut depth = Vec::with_capacity(rows.len());
                    for row in &rows {
                        let kind: String = row.try_get("kind").map_err(map_err)?;
                        let state: String = row.try_get("state").map_err(map_err)?;
                        let n: i64 = row.try_get("n").map_err(map_err)?;
                        if let Some(state) = JobState::parse(&state) {
                            depth.push((kind, state, n));
                        }
                    }
                    Ok(depth)
                }

                async fn purge_done_jobs(&self, before: DateTime<Utc>, limit: i64) -> Result<u64, StoreError> {
                    let done = sqlx::query(
                        "delete from jobs where job_id in \
                         (select job_id from jobs where state = 'done' and updated_at < $1 limit $2)",
                    )
                    .bind(before)
                    .bind(limit.max(0))
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(done.rows_affected())
                }

                async fn end_stale_calls(
                    &self,
                    stale_before: DateTime<Utc>,
                    kind: &str,
                    max_attempts: i64,
                    limit: i64,
                    now: DateTime<Utc>,
                ) -> Result<Vec<String>, StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    // A session writes its end (with `ended_reason`) before it lets go of the call;
                    // a heartbeat that went stale without one means the node running it is gone.
                    // A campaign's call that never had a session is left to its campaign, which
                    // asks the carrier what became of it (docs/campaigns.md#exactly-once).
                    static SWEEP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
                        format!(
                            "update calls set \
                             call_status = case when call_status in {final_list} then call_status else '{completed}' end, \
                             ended_reason = '{error}', ended_at = coalesce(ended_at, $2), updated_at = $2 \
                             where call_id in (select call_id from calls where ended_reason is null and heartbeat_at is not null \
                             and heartbeat_at < $1 and not (answered_at is null and exists (select 1 from campaigns k \
                             where k.campaign_id = calls.campaign_id)) order by heartbeat_at limit $3{lock}) \
                             returning call_id, account_id",
                            final_list = CallStatus::sql_list(CallStatus::FINAL),
                            completed = CallStatus::Completed.as_str(),
                            error = EndedReason::Error.as_str(),
                            lock = if <$store>::ROW_LOCKS { " for update skip locked" } else { "" },
                        )
                    });
                    let rows = sqlx::query(sqlx::AssertSqlSafe(SWEEP.as_str()))
                        .bind(stale_before)
                        .bind(now)
                        .bind(limit.max(0))
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    let mut ended = Vec::with_capacity(rows.len());
                    for row in &rows {
                        let call_id: String = row.try_get("call_id").map_err(map_err)?;
                        let account_id: String = row.try_get("account_id").map_err(map_err)?;
                        let job = NewJob::call_follow_up(kind, &call_id, &account_id, max_attempts);
                        insert_job_in(&mut *tx, &job, now).await?;
                        ended.push(call_id);
                    }
                    tx.commit().await.map_err(map_err)?;
                    Ok(ended)
                }
            }
        }
    };
}
pub(crate) use impl_jobs;
