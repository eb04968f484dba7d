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
    /// Run real webhook deliveries instead of no-ops: one signed `call.completed` per job (each
    /// about its own call) to a receiver on loopback, then check none was lost or doubled.
    #[arg(long)]
    pub webhooks: bool,
}

/// Seeds an account and one finished call per job, and queues one delivery per call.
async fn seed_webhooks(
    store: &dyn Store,
    jobs: usize,
    url: &str,
    secrets: &nixflex_core::crypto::SecretBox,
) -> anyhow::Result<()> {
    use nixflex_core::call::{CallRecord, CallStatus, Direction, EndedReason};
    let now = nixflex_store::now();
    let account = nixflex_store::Account {
        account_id: nixflex_core::ids::new_account_id(),
        name: None,
        email: None,
        created_at: now,
        max_concurrent_calls: None,
        rate_limit_reads: None,
        rate_limit_writes: None,
    };
    let secret = nixflex_core::ids::new_key_secret();
    let key = nixflex_store::ApiKey {
        key_id: nixflex_core::ids::new_key_id(),
        account_id: account.account_id.clone(),
        name: None,
        secret_hash: nixflex_core::crypto::hash_secret(&secret),
        secret_sealed: secrets.seal(&secret),
        created_at: now,
        rotated_at: None,
        revoked_at: None,
    };
    store.create_account(&account, &key).await?;
    for i in 0..jobs {
        let call = CallRecord {
            call_id: nixflex_core::ids::new_call_id(),
            account_id: account.account_id.clone(),
            agent_id: None,
            direction: Direction::Inbound,
            from_number: "+447386172392".to_owned(),
            to_number: "+14155552671".to_owned(),
            twilio_call_sid: Some(format!("CA{i:032x}")),
            call_status: CallStatus::Completed,
            ended_reason: Some(EndedReason::Completed),
            started_at: now,
            answered_at: Some(now),
            ended_at: Some(now),
            duration_seconds: Some(60),
            transcript: Vec::new(),
            turns: Vec::new(),
            avg_latency_ms: None,
            recording: None,
            call_summary: Some("A bench call.".to_owned()),
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
            created_at: now,
            updated_at: now,
        };
        store.insert_call(&call).await?;
        let delivery = nixflex_engine::followup::WebhookJob {
            call_id: call.call_id.to_string(),
            account_id: call.account_id.to_string(),
            event: "call.completed".to_owned(),
            url: url.to_owned(),
        };
        let job = NewJob::new(
            crate::followups::WEBHOOK_DELIVER,
            &delivery.idempotency_key(),
            serde_json::to_value(&delivery)?,
            3,
        );
        store.enqueue_job(&job).await?;
    }
    Ok(())
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
    let secrets = nixflex_core::crypto::SecretBox::from_encoded(
        &nixflex_core::crypto::SecretBox::generate_encoded(),
    )?;
    let receiver = if args.webhooks {
        Some(nixflex_testkit::webhook::WebhookReceiver::start().await?)
    } else {
        None
    };
    let enqueue_started = Instant::now();
    if let Some(receiver) = &receiver {
        seed_webhooks(&*store, args.jobs, &receiver.url("/hook"), &secrets).await?;
    } else {
        for i in 0..args.jobs {
            store
                .enqueue_job(&NewJob::new(NOOP, &format!("bench-{run_id}-{i}"), json!({}), 3))
                .await?;
        }
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
        let mut registry = Registry::with_builtins();
        if args.webhooks {
            let llm = nixflex_providers::llm::anthropic::AnthropicClient::new(
                nixflex_providers::llm::anthropic::AnthropicConfig::default(),
            )?;
            crate::followups::register(
                &mut registry,
                node_store.clone(),
                nixflex_engine::followup::FollowUp::new(
                    node_store.clone(),
                    Arc::new(llm),
                    nixflex_providers::customer::CustomerHttp::new(true)?,
                    secrets.clone(),
                ),
                crate::followups::WebhookRetries {
                    delays: vec![Duration::from_millis(100)],
                    max_attempts: 3,
                },
            );
        }
        workers.push(Worker::new(node_store, registry, config).spawn(shutdown.clone()));
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
    // Every delivery arrived once: as many requests as jobs, each a different event.
    let (received, distinct) = match &receiver {
        Some(receiver) => {
            let got = receiver.received();
            let ids: std::collections::HashSet<String> = got
                .iter()
                .filter_map(|r| r.header("x-nixflex-event-id").map(str::to_owned))
                .collect();
            (Some(got.len()), Some(ids.len()))
        }
        None => (None, None),
    };
    println!(
        "{}",
        json!({
            "kind": if args.webhooks { "webhook.deliver" } else { "noop" },
            "webhooks_received": received,
            "webhooks_distinct_events": distinct,
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
