//! Durable background jobs: the worker every `nixflex serve` node runs (docs/jobs.md).
//!
//! Jobs live in the store ([`nixflex_store::JobRepo`]); a [`Worker`] claims due jobs under a
//! lease, runs each with the handler registered for its kind ([`Registry`]), renews the lease
//! while a handler runs, and records the outcome: done, queued again after an exponential
//! back-off with jitter, or dead. The same loop sweeps calls whose node stopped heart-beating.
//!
//! Delivery is at least once: a node that dies after a handler's effect but before recording it
//! leaves a lease that expires, and another node runs the job again. Handlers must therefore be
//! idempotent (the job id is a natural key for their effects).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use nixflex_store::{CALL_ENDED, Job, JobRepo, Lease};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

/// The job kind that does nothing (after an optional `sleep_ms` pause, at most a minute): the
/// benchmark's and the tests' workload.
pub const NOOP: &str = "noop";

/// Calls swept per transaction.
const SWEEP_BATCH: i64 = 100;

/// How a handler failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt later (a peer was down, a timeout).
    #[error("{0}")]
    Retryable(String),
    /// Will never succeed (a malformed payload): the job is dead at once.
    #[error("{0}")]
    Permanent(String),
    /// Not a failure: too early, the job waits for something else. It is queued again for this
    /// time and the attempt is not counted (the handler bounds how long it keeps waiting).
    #[error("not yet; runs again at {0}")]
    RunAgainAt(DateTime<Utc>),
}

type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>>;
type Handler = Arc<dyn Fn(Job) -> HandlerFuture + Send + Sync>;

/// The handlers of a node, by job kind.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Handler>,
    /// Retry delays of kinds that do not use the worker's exponential back-off: the delay after
    /// attempt n is `schedule[n - 1]` (the last one repeats).
    schedules: HashMap<String, Vec<Duration>>,
    /// The wake-up of the worker that will run these handlers, so a handler that queues more
    /// jobs can wake it (see [`Registry::wake`]).
    wake: Wake,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kinds: Vec<&String> = self.handlers.keys().collect();
        kinds.sort();
        f.debug_struct("Registry").field("kinds", &kinds).finish()
    }
}

impl Registry {
    /// No handlers.
    pub fn new() -> Self {
        Self::default()
    }

    /// The handlers every node runs: `call.ended` and `noop`.
    pub fn with_builtins() -> Self {
        let mut registry = Self::new();
        registry.register(CALL_ENDED, call_ended);
        registry.register(NOOP, noop);
        registry
    }

    /// Registers (or replaces) the handler of `kind`.
    pub fn register<F, Fut>(&mut self, kind: &str, handler: F)
    where
        F: Fn(Job) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |job| Box::pin(handler(job)));
        self.handlers.insert(kind.to_owned(), handler);
    }

    /// Registers the handler of `kind` with its own retry delays (see [`retry_delay`]).
    pub fn register_with_schedule<F, Fut>(&mut self, kind: &str, schedule: &[Duration], handler: F)
    where
        F: Fn(Job) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        self.register(kind, handler);
        if !schedule.is_empty() {
            self.schedules.insert(kind.to_owned(), schedule.to_vec());
        }
    }

    /// Whether `kind` has a handler.
    pub fn handles(&self, kind: &str) -> bool {
        self.handlers.contains_key(kind)
    }

    /// The wake-up of the worker built from this registry. A handler that queues jobs on its
    /// own must wake the worker with it: the worker claims again after a job finishes only when
    /// its last claim filled every free slot (docs/jobs.md#claiming-and-leases), so a job queued
    /// by a handler would otherwise wait for the next poll.
    pub fn wake(&self) -> Wake {
        self.wake.clone()
    }
}

/// A call's follow-up. For now it only records that it ran; analysis, webhooks and recordings
/// hang off it later.
async fn call_ended(job: Job) -> Result<(), JobError> {
    let field = |name: &str| {
        job.payload
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| JobError::Permanent(format!("payload has no `{name}` string")))
    };
    let (call_id, account_id) = (field("call_id")?, field("account_id")?);
    tracing::info!(message = "Call follow-up ran.", call_id = %call_id, account_id = %account_id);
    Ok(())
}

/// Does nothing, after `sleep_ms` (capped at a minute) if the payload asks.
async fn noop(job: Job) -> Result<(), JobError> {
    if let Some(ms) = job.payload.get("sleep_ms").and_then(serde_json::Value::as_u64) {
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    }
    Ok(())
}

/// Wakes a worker at once (instead of at its next poll) when this node queued work.
#[derive(Debug, Clone, Default)]
pub struct Wake(Arc<Notify>);

impl Wake {
    /// A wake-up nobody listens to yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The notifier inside (what the engine is given, so it need not know this crate).
    pub fn notifier(&self) -> Arc<Notify> {
        self.0.clone()
    }

    /// Asks the worker to look for jobs now.
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This node's name as a lease owner (unique per process).
    pub node_id: String,
    /// Jobs run at once.
    pub concurrency: usize,
    /// How often to look for due jobs when nothing woke the worker.
    pub poll_interval: Duration,
    /// How long a claim holds a job; renewed every third of it while the handler runs.
    pub lease: Duration,
    /// Attempts before a job is dead (for the jobs this node queues).
    pub max_attempts: i64,
    /// The first retry's delay; each further retry doubles it.
    pub backoff_base: Duration,
    /// The longest delay between attempts.
    pub backoff_cap: Duration,
    /// Calls whose heartbeat is older than this are ended by the sweeper (`None`: no sweeper).
    pub stale_after: Option<Duration>,
    /// How often the sweeper (and the purge of done jobs) runs.
    pub sweep_every: Duration,
    /// Done jobs are deleted this long after they finished (`None`: kept forever).
    pub keep_done: Option<Duration>,
    /// On shutdown, how long running jobs may finish (the rest are taken over after their lease).
    pub shutdown_wait: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            node_id: default_node_id(),
            concurrency: 8,
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(30),
            max_attempts: 8,
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(600),
            stale_after: None,
            sweep_every: Duration::from_secs(30),
            keep_done: Some(Duration::from_secs(7 * 24 * 3600)),
            shutdown_wait: Duration::from_secs(10),
        }
    }
}

/// `node-<pid>-<random>`: unique per process, and says which process holds a lease.
pub fn default_node_id() -> String {
    format!("node-{}-{:08x}", std::process::id(), rand::random::<u32>())
}

/// The delay after attempt `attempt` (from 1) of a kind with a fixed schedule; the schedule's
/// last delay repeats.
pub fn retry_delay(schedule: &[Duration], attempt: i64) -> Duration {
    let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(0);
    schedule.get(index).or_else(|| schedule.last()).copied().unwrap_or(Duration::ZERO)
}

/// The delay before retrying after failed attempt number `attempt` (1-based), without jitter:
/// `base · 2^(attempt−1)`, at most `cap`.
pub fn backoff(attempt: i64, base: Duration, cap: Duration) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    base.saturating_mul(2u32.saturating_pow(exponent)).min(cap)
}

/// A delay drawn uniformly from `[delay/2, delay]`, so jobs that failed together (a peer went
/// down) do not all retry at the same instant.
pub fn jittered(delay: Duration) -> Duration {
    let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    if millis < 2 {
        return delay;
    }
    Duration::from_millis(rand::random_range(millis / 2..=millis))
}

/// How an attempt ended, for `nixflex_job_attempts_total` (docs/operations.md#metrics).
fn attempt_outcome(
    outcome: &Result<(), JobError>,
    recorded: &Result<bool, nixflex_store::StoreError>,
    job: &Job,
) -> nixflex_metrics::JobOutcome {
    use nixflex_metrics::JobOutcome;
    match (outcome, recorded) {
        (_, Ok(false) | Err(_)) => JobOutcome::Lost,
        (Ok(()), Ok(true)) => JobOutcome::Done,
        (Err(JobError::RunAgainAt(_)), Ok(true)) => JobOutcome::Deferred,
        (Err(JobError::Permanent(_)), Ok(true)) => JobOutcome::Dead,
        (Err(JobError::Retryable(_)), Ok(true)) if job.attempts >= job.max_attempts => {
            JobOutcome::Dead
        }
        (Err(JobError::Retryable(_)), Ok(true)) => JobOutcome::Retry,
    }
}

fn after(now: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX)
}

/// Claims and runs jobs until shut down.
#[derive(Clone)]
pub struct Worker {
    store: Arc<dyn JobRepo>,
    registry: Arc<Registry>,
    config: WorkerConfig,
    wake: Wake,
    /// Notified when a running job finishes.
    slot_freed: Arc<Notify>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("registry", &self.registry)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker over `store` running `registry`'s handlers.
    pub fn new(store: Arc<dyn JobRepo>, registry: Registry, config: WorkerConfig) -> Self {
        Self {
            store,
            wake: registry.wake(),
            registry: Arc::new(registry),
            config,
            slot_freed: Arc::new(Notify::new()),
        }
    }

    /// The handle that wakes this worker (give it to whatever queues jobs on this node).
    pub fn wake(&self) -> Wake {
        self.wake.clone()
    }

    /// This worker's settings.
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// Runs the worker on its own task until `shutdown` is cancelled.
    pub fn spawn(self, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    /// Claims and runs jobs until `shutdown` is cancelled, then gives running jobs
    /// `shutdown_wait` to finish.
    ///
    /// Everything the worker writes (claims, outcomes, leases, sweeps) and everything its
    /// handlers write is background work: on SQLite it waits behind the request path's writes
    /// (`nixflex_store::background`, docs/operations.md#the-database).
    pub async fn run(self, shutdown: CancellationToken) {
        nixflex_store::background(self.run_loop(shutdown)).await;
    }

    async fn run_loop(self, shutdown: CancellationToken) {
        let concurrency = self.config.concurrency.max(1);
        let permits = Arc::new(Semaphore::new(concurrency));
        let tasks = TaskTracker::new();
        let mut next_sweep = Instant::now();
        // Whether to claim for a single free slot. After a job finishes, the worker waits until
        // half its slots are free and claims them in one batch: claiming per finished job would
        // cost a claim transaction per job. A poll, a wake-up or a sweep claims for any free slot.
        let mut eager = true;
        // Whether the last claim filled every free slot, so more due jobs may be waiting. Only
        // then does a finished job make the worker claim again: after a claim that came back
        // short, the queue held nothing more that was due, and whatever is queued on this node
        // since wakes the worker itself (docs/jobs.md#claiming-and-leases).
        let mut backlog = false;
        // When a claim next also takes over lapsed leases (two more statements): at most once a
        // poll interval, however often the worker is woken for work just queued
        // (docs/jobs.md#claiming-and-leases).
        let mut next_lapsed_check = Instant::now();
        tracing::info!(
            message = "Job worker started.",
            node_id = %self.config.node_id,
            concurrency,
            sweeper = self.config.stale_after.is_some()
        );
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if Instant::now() >= next_sweep {
                if let Some(stale_after) = self.config.stale_after {
                    self.sweep(stale_after).await;
                }
                if let Some(keep_done) = self.config.keep_done {
                    self.purge(keep_done).await;
                }
                next_sweep = Instant::now() + self.config.sweep_every;
            }
            let free = permits.available_permits();
            let mut more = false;
            if free > 0 && (eager || (backlog && free * 2 >= concurrency)) {
                let now = nixflex_store::now();
                let owner = &self.config.node_id;
                let limit = i64::try_from(free).unwrap_or(i64::MAX);
                let lease_until = after(now, self.config.lease);
                let at = Instant::now();
                let lapsed = at >= next_lapsed_check;
                if lapsed {
                    next_lapsed_check = at + self.config.poll_interval;
                }
                let claimed = if lapsed {
                    self.store.claim_jobs(owner, limit, lease_until, now).await
                } else {
                    self.store.claim_queued_jobs(owner, limit, lease_until, now).await
                };
                match claimed {
                    Ok(jobs) => {
                        // A full batch: there may be more waiting.
                        more = jobs.len() == free;
                        backlog = more;
                        for job in jobs {
                            let Ok(permit) = permits.clone().try_acquire_owned() else {
                                // Cannot happen (only this loop takes permits); the lease
                                // expires and the job runs elsewhere.
                                break;
                            };
                            let span =
                                tracing::info_span!("job", job_id = %job.job_id, kind = %job.kind);
                            tasks.spawn(
                                nixflex_store::background(self.clone().execute(job, permit))
                                    .instrument(span),
                            );
                        }
                    }
                    Err(error) => {
                        tracing::warn!(message = "Claiming jobs failed; retrying at the next poll.", error = %error);
                    }
                }
            }
            if more && permits.available_permits() > 0 {
                eager = true;
                continue;
            }
            let sweep_due = async {
                if self.config.stale_after.is_some() || self.config.keep_done.is_some() {
                    tokio::time::sleep_until(next_sweep).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            eager = tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.slot_freed.notified() => false,
                () = self.wake.0.notified() => true,
                () = tokio::time::sleep(self.config.poll_interval) => true,
                () = sweep_due => true,
            };
        }
        tasks.close();
        if tokio::time::timeout(self.config.shutdown_wait, tasks.wait()).await.is_err() {
            tracing::warn!(
                message = "Jobs still running at shutdown; other nodes take them over when their leases expire."
            );
        }
        tracing::info!(message = "Job worker stopped.");
    }

    /// Runs one claimed job, renewing its lease, and records the outcome.
    async fn execute(self, job: Job, permit: OwnedSemaphorePermit) {
        let lease = job.lease();
        let attempt = job.attempts;
        let outcome = match self.registry.handlers.get(&job.kind).cloned() {
            // Another node (a newer version) may know it; the attempts run out otherwise.
            None => {
                Err(JobError::Retryable(format!("no handler for kind `{}` on this node", job.kind)))
            }
            Some(handler) => match self.run_handler(handler, job.clone(), &lease).await {
                Some(outcome) => outcome,
                None => {
                    drop(permit);
                    self.slot_freed.notify_one();
                    return;
                }
            },
        };
        let now = nixflex_store::now();
        let recorded = match &outcome {
            Ok(()) => self.store.complete_job(&lease, now).await,
            Err(JobError::Retryable(error)) => {
                let delay = match self.registry.schedules.get(&job.kind) {
                    Some(schedule) => jittered(retry_delay(schedule, attempt)),
                    None => jittered(backoff(
                        attempt,
                        self.config.backoff_base,
                        self.config.backoff_cap,
                    )),
                };
                self.store.fail_job(&lease, error, Some(after(now, delay)), now).await
            }
            Err(JobError::Permanent(error)) => self.store.fail_job(&lease, error, None, now).await,
            Err(JobError::RunAgainAt(at)) => self.store.defer_job(&lease, *at, now).await,
        };
        nixflex_metrics::job_attempt(&job.kind, attempt_outcome(&outcome, &recorded, &job));
        match (&outcome, recorded) {
            (Ok(()), Ok(true)) => tracing::debug!(message = "Job done.", attempt),
            (Err(JobError::RunAgainAt(at)), Ok(true)) => {
                tracing::debug!(message = "Job deferred; the attempt does not count.", run_at = %at);
            }
            (Err(error), Ok(true)) => {
                let dead = matches!(error, JobError::Permanent(_)) || attempt >= job.max_attempts;
                if dead {
                    tracing::error!(message = "Job failed for good; it is dead (nixflex jobs list --state dead).", attempt, error = %error);
                } else {
                    tracing::warn!(message = "Job failed; it will be retried.", attempt, error = %error);
                }
            }
            (_, Ok(false)) => {
                tracing::warn!(
                    message =
                        "Job lease lost before its outcome was recorded; another node owns it now.",
                    attempt
                );
            }
            (_, Err(error)) => {
                tracing::warn!(message = "Recording a job's outcome failed; it runs again when its lease expires.", attempt, error = %error);
            }
        }
        drop(permit);
        // A slot is free: the loop decides whether to claim now or wait for more.
        self.slot_freed.notify_one();
    }

    /// Runs the handler on its own task (a panic fails the attempt, not the worker) while
    /// renewing the lease; `None` if the lease was lost (the handler is stopped).
    async fn run_handler(
        &self,
        handler: Handler,
        job: Job,
        lease: &Lease,
    ) -> Option<Result<(), JobError>> {
        let mut task = tokio::spawn(nixflex_store::background(handler(job)).in_current_span());
        let every = (self.config.lease / 3).max(Duration::from_millis(10));
        let mut renew = tokio::time::interval_at(Instant::now() + every, every);
        loop {
            tokio::select! {
                joined = &mut task => {
                    return Some(match joined {
                        Ok(outcome) => outcome,
                        Err(error) if error.is_panic() => Err(JobError::Retryable("the handler panicked".to_owned())),
                        Err(_) => Err(JobError::Retryable("the handler was cancelled".to_owned())),
                    });
                }
                _ = renew.tick() => {
                    let now = nixflex_store::now();
                    match self.store.extend_lease(lease, after(now, self.config.lease), now).await {
                        Ok(true) => {}
                        Ok(false) => {
                            task.abort();
                            tracing::warn!(message = "Job lease lost while running (this node stalled); stopped it, another node runs it.");
                            return None;
                        }
                        // The next renewal may work; the lease still has two thirds left.
                        Err(error) => tracing::warn!(message = "Renewing a job lease failed.", error = %error),
                    }
                }
            }
        }
    }

    /// Deletes done jobs older than `keep_done`, in batches.
    async fn purge(&self, keep_done: Duration) {
        const BATCH: i64 = 1000;
        let before = nixflex_store::now()
            - chrono::Duration::from_std(keep_done).unwrap_or(chrono::Duration::MAX);
        loop {
            match self.store.purge_done_jobs(before, BATCH).await {
                Ok(deleted) if deleted < u64::try_from(BATCH).unwrap_or(u64::MAX) => return,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(message = "Purging done jobs failed; retrying at the next sweep.", error = %error);
                    return;
                }
            }
        }
    }

    /// Ends calls whose node stopped heart-beating, queueing their follow-ups.
    async fn sweep(&self, stale_after: Duration) {
        let now = nixflex_store::now();
        let stale_before =
            now - chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX);
        loop {
            match self
                .store
                .end_stale_calls(
                    stale_before,
                    CALL_ENDED,
                    self.config.max_attempts,
                    SWEEP_BATCH,
                    now,
                )
                .await
            {
                Ok(ended) => {
                    for call_id in &ended {
                        tracing::warn!(message = "Call ended by the sweeper: its node stopped heart-beating.", call_id = %call_id);
                    }
                    if !ended.is_empty() {
                        self.wake.wake();
                    }
                    if i64::try_from(ended.len()).unwrap_or(i64::MAX) < SWEEP_BATCH {
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(message = "Sweeping stale calls failed; retrying at the next sweep.", error = %error);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_schedules_step_through_then_repeat_their_last_delay() {
        let schedule =
            [Duration::from_secs(30), Duration::from_secs(120), Duration::from_secs(600)];
        let delays: Vec<u64> = (1..=5).map(|n| retry_delay(&schedule, n).as_secs()).collect();
        assert_eq!(delays, [30, 120, 600, 600, 600]);
        assert_eq!(retry_delay(&[], 1), Duration::ZERO);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (base, cap) = (Duration::from_secs(2), Duration::from_secs(60));
        let delays: Vec<u64> = (1..=7).map(|n| backoff(n, base, cap).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(0, base, cap), base, "a first attempt never waits less than base");
        assert_eq!(backoff(i64::MAX, base, cap), cap, "no overflow");
    }

    #[test]
    fn jitter_stays_within_half_to_full() {
        let delay = Duration::from_millis(1000);
        for _ in 0..200 {
            let d = jittered(delay);
            assert!(d >= Duration::from_millis(500) && d <= delay, "{d:?}");
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }
}
