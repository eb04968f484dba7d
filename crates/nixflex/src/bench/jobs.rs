//! `nixflex bench jobs`: how many background jobs per second the queue claims and completes.
//!
//! Enqueues N no-op jobs, then starts `--nodes` job workers — each with its own connection pool
//! and node id, exactly as separate `nixflex serve` processes would claim — and measures the
//! time until every job is done. The workers run in this process; the database sees the same
//! claims as from separate nodes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use nixflex_jobs::{NOOP, Registry, Worker, WorkerConfig};
use nixflex_store::{NewJob, Store};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Arguments of `nixflex bench jobs`.
#[derive(Debug, Args)]
pub struct JobsBenchArgs {
    /// Jobs to run.
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// Worker nodes sharing the queue.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Jobs each node runs at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// postgres://… (an empty database is best); default: a fresh SQLite file in a temp dir.
    #[arg(long)]
    pub database_url: Option<String>,
}

async fn open(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    nixflex_store::open(url, 8)
        .await
        .with_context(|| format!("opening {}", crate::config::redact_url(url)))
}

/// Runs the benchmark and prints one JSON line of results.
///
/// # Errors
/// When the database cannot be opened, or the jobs do not finish within ten minutes.
#[allow(clippy::print_stdout, clippy::cast_precision_loss)]
pub async fn run(args: JobsBenchArgs) -> anyhow::Result<()> {
    if args.jobs == 0 || args.nodes == 0 || args.concurrency == 0 {
        bail!("--jobs, --nodes and --concurrency must be at least 1");
    }
    let temp = tempfile::tempdir()?;
    let url = match &args.database_url {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", temp.path().join("jobs.db").display()),
    };
    let store = open(&url).await?;
    let before = store.job_counts().await?.done;
    let run_id = format!("{:08x}", rand::random::<u32>());
    let enqueue_started = Instant::now();
    for i in 0..args.jobs {
        store.enqueue_job(&NewJob::new(NOOP, &format!("bench-{run_id}-{i}"), json!({}), 3)).await?;
    }
    let enqueue_secs = enqueue_started.elapsed().as_secs_f64();
    let shutdown = CancellationToken::new();
    let mut workers = Vec::new();
    let started = Instant::now();
    for n in 0..args.nodes {
        let node_store = open(&url).await?;
        let config = WorkerConfig {
            node_id: format!("bench-{run_id}-{n}"),
            concurrency: args.concurrency,
            poll_interval: Duration::from_millis(100),
            ..WorkerConfig::default()
        };
        workers.push(
            Worker::new(node_store, Registry::with_builtins(), config).spawn(shutdown.clone()),
        );
    }
    let target = before + i64::try_from(args.jobs).unwrap_or(i64::MAX);
    let deadline = started + Duration::from_secs(600);
    loop {
        if store.job_counts().await?.done >= target {
            break;
        }
        if Instant::now() > deadline {
            shutdown.cancel();
            bail!("the jobs did not finish within ten minutes");
        }
        // Counting scans the table: often enough to time the end within 2%, rarely enough
        // not to slow the workers down.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    shutdown.cancel();
    for worker in workers {
        let _ = worker.await;
    }
    println!(
        "{}",
        json!({
            "backend": store.backend(),
            "nodes": args.nodes,
            "concurrency": args.concurrency,
            "jobs": args.jobs,
            "enqueued_per_sec": (args.jobs as f64 / enqueue_secs).round(),
            "seconds": (secs * 1000.0).round() / 1000.0,
            "completed_per_sec": (args.jobs as f64 / secs).round(),
        })
    );
    Ok(())
}
