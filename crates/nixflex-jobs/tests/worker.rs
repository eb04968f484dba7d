#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The worker against real stores (SQLite and PostgreSQL): handlers run once, failures back off
//! and die, long jobs keep their lease, stale calls are swept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nixflex_jobs::{JobError, Registry, Worker, WorkerConfig};
use nixflex_store::testing::TempDirGuard;
use nixflex_store::{JobFilter, JobRepo, JobState, NewJob, Page, Store};
use serde_json::json;
use tokio_util::sync::CancellationToken;

type Fixture = (Arc<dyn Store>, Option<TempDirGuard>);
type Runs = Arc<Mutex<HashMap<String, u32>>>;

fn config(node: &str) -> WorkerConfig {
    WorkerConfig {
        node_id: node.to_owned(),
        concurrency: 4,
        poll_interval: Duration::from_millis(50),
        lease: Duration::from_millis(600),
        max_attempts: 3,
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(100),
        ..WorkerConfig::default()
    }
}

/// A registry whose `t.count` handler counts runs per job id.
fn counting(runs: &Runs) -> Registry {
    let mut registry = Registry::new();
    let runs = runs.clone();
    registry.register("t.count", move |job| {
        let runs = runs.clone();
        async move {
            *runs.lock().unwrap().entry(job.job_id).or_default() += 1;
            Ok(())
        }
    });
    registry
}

/// Polls `check` until it holds, failing after a deadline.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn state_of(store: &Arc<dyn Store>, job_id: &str) -> JobState {
    store.get_job(job_id).await.unwrap().unwrap().state
}

async fn two_workers_run_every_job_once((store, _g): Fixture) {
    let runs: Runs = Arc::default();
    let shutdown = CancellationToken::new();
    let jobs: Arc<dyn JobRepo> = store.clone();
    let a = Worker::new(jobs.clone(), counting(&runs), config("a")).spawn(shutdown.clone());
    let b = Worker::new(jobs, counting(&runs), config("b")).spawn(shutdown.clone());
    let queued: Vec<NewJob> =
        (0..60).map(|i| NewJob::new("t.count", &i.to_string(), json!({}), 3)).collect();
    for job in &queued {
        store.enqueue_job(job).await.unwrap();
    }
    eventually("every job done", || async { store.job_counts().await.unwrap().done == 60 }).await;
    shutdown.cancel();
    a.await.unwrap();
    b.await.unwrap();
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 60);
    assert!(runs.values().all(|&n| n == 1), "each job ran once: {runs:?}");
}

/// A job store that counts the worker's claims (every other call passes straight through).
struct CountingClaims {
    inner: Arc<dyn Store>,
    claims: std::sync::atomic::AtomicUsize,
}

type At = chrono::DateTime<chrono::Utc>;
type StoreResult<T> = Result<T, nixflex_store::StoreError>;

#[async_trait::async_trait]
impl JobRepo for CountingClaims {
    async fn enqueue_job(&self, job: &NewJob) -> StoreResult<bool> {
        self.inner.enqueue_job(job).await
    }
    async fn claim_jobs(
        &self,
        owner: &str,
        limit: i64,
        until: At,
        now: At,
    ) -> StoreResult<Vec<nixflex_store::Job>> {
        self.claims.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.claim_jobs(owner, limit, until, now).await
    }
    async fn claim_queued_jobs(
        &self,
        owner: &str,
        limit: i64,
        until: At,
        now: At,
    ) -> StoreResult<Vec<nixflex_store::Job>> {
        self.claims.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.claim_queued_jobs(owner, limit, until, now).await
    }
    async fn complete_job(&self, lease: &nixflex_store::Lease, now: At) -> StoreResult<bool> {
        self.inner.complete_job(lease, now).await
    }
    async fn fail_job(
        &self,
        lease: &nixflex_store::Lease,
        error: &str,
        retry_at: Option<At>,
        now: At,
    ) -> StoreResult<bool> {
        self.inner.fail_job(lease, error, retry_at, now).await
    }
    async fn defer_job(
        &self,
        lease: &nixflex_store::Lease,
        run_at: At,
        now: At,
    ) -> StoreResult<bool> {
        self.inner.defer_job(lease, run_at, now).await
    }
    async fn run_queued_job_now(&self, key: &str, now: At) -> StoreResult<bool> {
        self.inner.run_queued_job_now(key, now).await
    }
    async fn extend_lease(
        &self,
        lease: &nixflex_store::Lease,
        until: At,
        now: At,
    ) -> StoreResult<bool> {
        self.inner.extend_lease(lease, until, now).await
    }
    async fn get_job(&self, job_id: &str) -> StoreResult<Option<nixflex_store::Job>> {
        self.inner.get_job(job_id).await
    }
    async fn list_jobs(
        &self,
        filter: &JobFilter,
        page: Page,
    ) -> StoreResult<Vec<nixflex_store::Job>> {
        self.inner.list_jobs(filter, page).await
    }
    async fn retry_job(&self, job_id: &str, now: At) -> StoreResult<bool> {
        self.inner.retry_job(job_id, now).await
    }
    async fn job_counts(&self) -> StoreResult<nixflex_store::JobCounts> {
        self.inner.job_counts().await
    }
    async fn job_queue_depth(&self) -> StoreResult<Vec<(String, JobState, i64)>> {
        self.inner.job_queue_depth().await
    }
    async fn purge_done_jobs(&self, before: At, limit: i64) -> StoreResult<u64> {
        self.inner.purge_done_jobs(before, limit).await
    }
    async fn end_stale_calls(
        &self,
        stale_before: At,
        kind: &str,
        max_attempts: i64,
        limit: i64,
        now: At,
    ) -> StoreResult<Vec<String>> {
        self.inner.end_stale_calls(stale_before, kind, max_attempts, limit, now).await
    }
}

/// A finished job makes the worker claim again only when its last claim filled every free slot
/// (docs/jobs.md#claiming-and-leases): jobs queued one at a time on an idle worker cost one
/// claim each — the one their wake-up makes —, not a second, empty one after each finishes.
async fn a_finished_job_claims_again_only_after_a_full_batch((store, _g): Fixture) {
    let runs: Runs = Arc::default();
    let shutdown = CancellationToken::new();
    let counting_store = Arc::new(CountingClaims { inner: store.clone(), claims: 0.into() });
    let worker = Worker::new(
        counting_store.clone(),
        counting(&runs),
        WorkerConfig { poll_interval: Duration::from_secs(600), ..config("a") },
    );
    let wake = worker.wake();
    let handle = worker.spawn(shutdown.clone());
    eventually("the first claim", || async {
        counting_store.claims.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    for i in 0..5 {
        store
            .enqueue_job(&NewJob::new("t.count", &format!("one-{i}"), json!({}), 3))
            .await
            .unwrap();
        wake.wake();
        eventually("the job done", || async { store.job_counts().await.unwrap().done == i + 1 })
            .await;
    }
    // Let any claim a finished job would make happen before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(counting_store.claims.load(std::sync::atomic::Ordering::SeqCst), 1 + 5);

    // A burst larger than the worker's four slots: claims go on until the queue is drained.
    for i in 0..10 {
        store
            .enqueue_job(&NewJob::new("t.count", &format!("burst-{i}"), json!({}), 3))
            .await
            .unwrap();
    }
    wake.wake();
    eventually("the burst done", || async { store.job_counts().await.unwrap().done == 15 }).await;
    shutdown.cancel();
    handle.await.unwrap();
    assert_eq!(runs.lock().unwrap().len(), 15);
}

async fn failures_back_off_then_succeed_or_die((store, _g): Fixture) {
    let attempts: Runs = Arc::default();
    let mut registry = Registry::new();
    let seen = attempts.clone();
    // Fails twice, then succeeds (3 attempts allowed).
    registry.register("t.flaky", move |job| {
        let seen = seen.clone();
        async move {
            let mut seen = seen.lock().unwrap();
            let n = seen.entry(job.job_id).or_default();
            *n += 1;
            if *n < 3 { Err(JobError::Retryable(format!("try {n}"))) } else { Ok(()) }
        }
    });
    registry.register("t.always", |_job| async { Err(JobError::Retryable("down".to_owned())) });
    registry.register("t.bad", |_job| async { Err(JobError::Permanent("bad payload".to_owned())) });
    registry.register("t.panics", |_job| async { panic!("handler bug") });
    let shutdown = CancellationToken::new();
    let worker = Worker::new(store.clone(), registry, config("w")).spawn(shutdown.clone());
    let flaky = NewJob::new("t.flaky", "1", json!({}), 3);
    let always = NewJob::new("t.always", "1", json!({}), 3);
    let bad = NewJob::new("t.bad", "1", json!({}), 3);
    let panics = NewJob::new("t.panics", "1", json!({}), 2);
    let unknown = NewJob::new("t.unknown", "1", json!({}), 1);
    for job in [&flaky, &always, &bad, &panics, &unknown] {
        store.enqueue_job(job).await.unwrap();
    }
    eventually("the flaky job done", || async {
        state_of(&store, &flaky.job_id).await == JobState::Done
    })
    .await;
    for job in [&always, &bad, &panics, &unknown] {
        eventually(&job.kind, || async { state_of(&store, &job.job_id).await == JobState::Dead })
            .await;
    }
    shutdown.cancel();
    worker.await.unwrap();
    let get = |id: &str| {
        let store = store.clone();
        let id = id.to_owned();
        async move { store.get_job(&id).await.unwrap().unwrap() }
    };
    assert_eq!(get(&flaky.job_id).await.attempts, 3);
    let always = get(&always.job_id).await;
    assert_eq!((always.attempts, always.last_error.as_deref()), (3, Some("down")));
    let bad = get(&bad.job_id).await;
    assert_eq!(
        (bad.attempts, bad.last_error.as_deref()),
        (1, Some("bad payload")),
        "permanent: no retry"
    );
    let panics = get(&panics.job_id).await;
    assert_eq!((panics.attempts, panics.last_error.as_deref()), (2, Some("the handler panicked")));
    assert!(get(&unknown.job_id).await.last_error.unwrap().contains("no handler"));
    let dead = store
        .list_jobs(
            &JobFilter { state: Some(JobState::Dead), kind: None },
            Page { limit: 10, offset: 0 },
        )
        .await
        .unwrap();
    assert_eq!(dead.len(), 4);
}

async fn a_job_that_is_not_due_yet_runs_again_later_without_spending_attempts(
    (store, _g): Fixture,
) {
    // Says "not yet" five times (more than its 2 attempts), then succeeds.
    let runs: Runs = Arc::default();
    let mut registry = Registry::new();
    let seen = runs.clone();
    registry.register("t.wait", move |job| {
        let seen = seen.clone();
        async move {
            let n = {
                let mut seen = seen.lock().unwrap();
                let n = seen.entry(job.job_id).or_default();
                *n += 1;
                *n
            };
            if n <= 5 {
                let again = nixflex_store::now() + chrono::Duration::milliseconds(30);
                Err(JobError::RunAgainAt(again))
            } else {
                Ok(())
            }
        }
    });
    let shutdown = CancellationToken::new();
    let worker = Worker::new(store.clone(), registry, config("w")).spawn(shutdown.clone());
    let waiting = NewJob::new("t.wait", "1", json!({}), 2);
    store.enqueue_job(&waiting).await.unwrap();
    eventually("the waiting job done", || async {
        state_of(&store, &waiting.job_id).await == JobState::Done
    })
    .await;
    shutdown.cancel();
    worker.await.unwrap();
    let done = store.get_job(&waiting.job_id).await.unwrap().unwrap();
    assert_eq!(runs.lock().unwrap()[&waiting.job_id], 6);
    assert_eq!((done.attempts, done.last_error), (1, None), "only the real run counted");
}

async fn a_long_job_keeps_its_lease((store, _g): Fixture) {
    let runs: Runs = Arc::default();
    let mut registry = counting(&runs);
    let seen = runs.clone();
    // Runs for four lease lengths: only renewals keep the other worker off it.
    registry.register("t.slow", move |job| {
        let seen = seen.clone();
        async move {
            *seen.lock().unwrap().entry(job.job_id).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(2400)).await;
            Ok(())
        }
    });
    let shutdown = CancellationToken::new();
    let a = Worker::new(store.clone(), registry.clone(), config("a")).spawn(shutdown.clone());
    let slow = NewJob::new("t.slow", "1", json!({}), 3);
    store.enqueue_job(&slow).await.unwrap();
    eventually("the slow job started", || async {
        state_of(&store, &slow.job_id).await == JobState::Running
    })
    .await;
    let b = Worker::new(store.clone(), registry, config("b")).spawn(shutdown.clone());
    eventually("the slow job done", || async {
        state_of(&store, &slow.job_id).await == JobState::Done
    })
    .await;
    shutdown.cancel();
    a.await.unwrap();
    b.await.unwrap();
    let job = store.get_job(&slow.job_id).await.unwrap().unwrap();
    assert_eq!((job.attempts, job.lease_owner.as_deref()), (1, Some("a")));
    assert_eq!(runs.lock().unwrap().get(&slow.job_id), Some(&1));
}

/// A call of a new account, live, whose session last beat at `heartbeat_at`.
async fn live_call(
    store: &Arc<dyn Store>,
    heartbeat_at: chrono::DateTime<chrono::Utc>,
) -> nixflex_core::ids::CallId {
    use nixflex_core::call::{CallRecord, CallStatus, Direction};
    use nixflex_core::ids;
    let at = nixflex_store::now();
    let account = nixflex_store::Account {
        account_id: ids::new_account_id(),
        name: None,
        email: None,
        created_at: at,
        max_concurrent_calls: None,
        rate_limit_reads: None,
        rate_limit_writes: None,
    };
    let key = nixflex_store::ApiKey {
        key_id: ids::new_key_id(),
        account_id: account.account_id.clone(),
        name: None,
        secret_hash: "h".repeat(64),
        secret_sealed: "v1:sealed".to_owned(),
        created_at: at,
        rotated_at: None,
        revoked_at: None,
    };
    store.create_account(&account, &key).await.unwrap();
    let call = CallRecord {
        call_id: ids::new_call_id(),
        account_id: account.account_id.clone(),
        agent_id: None,
        direction: Direction::Inbound,
        from_number: "+447386172392".to_owned(),
        to_number: "+14155552671".to_owned(),
        twilio_call_sid: None,
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
        extracted_data: serde_json::Map::new(),
        voicemail_detected: false,
        campaign_id: None,
        metadata: None,
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
    store.insert_call(&call).await.unwrap();
    let beat = nixflex_store::CallUpdate { heartbeat_at: Some(heartbeat_at), ..Default::default() };
    store.update_call(&call.call_id, &beat, at).await.unwrap();
    call.call_id
}

async fn the_sweeper_ends_a_dead_nodes_calls_and_runs_their_follow_up((store, _g): Fixture) {
    use nixflex_core::call::EndedReason;
    let now = nixflex_store::now();
    let stale = live_call(&store, now - chrono::Duration::minutes(5)).await;
    let alive = live_call(&store, now).await;
    let shutdown = CancellationToken::new();
    let worker = Worker::new(
        store.clone(),
        Registry::with_builtins(),
        WorkerConfig { stale_after: Some(Duration::from_secs(90)), ..config("sweeper") },
    )
    .spawn(shutdown.clone());
    let follow_up = || async {
        store
            .list_jobs(
                &JobFilter {
                    state: Some(JobState::Done),
                    kind: Some(nixflex_store::CALL_ENDED.to_owned()),
                },
                Page { limit: 10, offset: 0 },
            )
            .await
            .unwrap()
    };
    eventually("the stale call's follow-up done", || async { !follow_up().await.is_empty() }).await;
    shutdown.cancel();
    worker.await.unwrap();
    let done = follow_up().await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].payload["call_id"], stale.as_str());
    let ended = store.find_call(&stale).await.unwrap().unwrap();
    assert_eq!(ended.ended_reason, Some(EndedReason::Error));
    assert!(ended.call_status.is_final());
    assert_eq!(store.find_call(&alive).await.unwrap().unwrap().ended_reason, None);
}

async fn done_jobs_are_purged_by_the_worker_after_their_retention((store, _g): Fixture) {
    let runs: Runs = Arc::default();
    let shutdown = CancellationToken::new();
    let config = WorkerConfig {
        keep_done: Some(Duration::ZERO),
        sweep_every: Duration::from_millis(50),
        ..config("purger")
    };
    let worker = Worker::new(store.clone(), counting(&runs), config).spawn(shutdown.clone());
    let job = NewJob::new("t.count", "1", json!({}), 3);
    store.enqueue_job(&job).await.unwrap();
    eventually("the done job purged", || async {
        store.get_job(&job.job_id).await.unwrap().is_none()
    })
    .await;
    shutdown.cancel();
    worker.await.unwrap();
    assert_eq!(runs.lock().unwrap().get(&job.job_id), Some(&1), "it ran before it went");
}

macro_rules! suite {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(nixflex_store::testing::fresh_store("sqlite").await.unwrap()).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(nixflex_store::testing::fresh_store("postgres").await.unwrap()).await;
                }
            )+
        }
    };
}

suite!(
    two_workers_run_every_job_once,
    a_finished_job_claims_again_only_after_a_full_batch,
    failures_back_off_then_succeed_or_die,
    a_job_that_is_not_due_yet_runs_again_later_without_spending_attempts,
    a_long_job_keeps_its_lease,
    the_sweeper_ends_a_dead_nodes_calls_and_runs_their_follow_up,
    done_jobs_are_purged_by_the_worker_after_their_retention,
);
