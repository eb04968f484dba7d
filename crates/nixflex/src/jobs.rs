//! `nixflex jobs`: inspect the background-job queue and retry dead jobs (docs/jobs.md).

use anyhow::bail;
use nixflex_store::{Job, JobFilter, JobRepo, JobState, Page};
use serde_json::{Value, json};

/// One job as the CLI prints it (a JSON object per line).
pub fn job_json(job: &Job) -> Value {
    json!({
        "job_id": job.job_id,
        "kind": job.kind,
        "state": job.state.as_str(),
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "run_at": job.run_at,
        "lease_owner": job.lease_owner,
        "lease_expires_at": job.lease_expires_at,
        "last_error": job.last_error,
        "idempotency_key": job.idempotency_key,
        "payload": job.payload,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
    })
}

/// Parses `--state`.
///
/// # Errors
/// When the name is not a job state.
pub fn parse_state(raw: &str) -> Result<JobState, String> {
    JobState::parse(raw).ok_or_else(|| "expected queued, running, done or dead".to_owned())
}

/// The newest `limit` jobs (1–1000) matching the filter.
///
/// # Errors
/// When the limit is out of range or the store fails.
pub async fn list(
    store: &dyn JobRepo,
    filter: &JobFilter,
    limit: i64,
) -> anyhow::Result<Vec<Value>> {
    if !(1..=1000).contains(&limit) {
        bail!("--limit must be between 1 and 1000");
    }
    let jobs = store.list_jobs(filter, Page { limit, offset: 0 }).await?;
    Ok(jobs.iter().map(job_json).collect())
}

/// Queues a dead job again with fresh attempts; returns it as queued.
///
/// # Errors
/// When the job does not exist or is not dead (only dead jobs are retried: a queued or running
/// job will run anyway, and a done job's effect happened).
pub async fn retry(store: &dyn JobRepo, job_id: &str) -> anyhow::Result<Value> {
    let Some(job) = store.get_job(job_id).await? else {
        bail!("no job {job_id}");
    };
    if job.state != JobState::Dead || !store.retry_job(job_id, nixflex_store::now()).await? {
        bail!("job {job_id} is {}; only dead jobs can be retried", job.state.as_str());
    }
    let Some(job) = store.get_job(job_id).await? else {
        bail!("no job {job_id}");
    };
    Ok(job_json(&job))
}
