//! `nixflex bench api`: seeds agents across accounts, then drives a mixed read/write REST load
//! at a fixed concurrency against a separately running server and prints requests/s and latency
//! percentiles per route.
//!
//! Accounts are provisioned straight into the server's database (same configuration as the
//! server: data dir or database URL, and master key) with raised request limits, so the numbers
//! measure the server, not the rate limiter. Everything else goes through HTTP.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::config::Config;

/// Arguments of `nixflex bench api`.
#[derive(Debug, Args)]
pub struct ApiBenchArgs {
    /// Base URL of the running server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Accounts to create.
    #[arg(long, default_value_t = 10)]
    pub accounts: usize,
    /// Agents to seed, spread over the accounts.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Length of the measured load phase, in seconds.
    #[arg(long, default_value_t = 20)]
    pub duration_secs: u64,
    /// Directory of the server's SQLite database (when the server uses the default store).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// The server's database URL (when it uses PostgreSQL).
    #[arg(long)]
    pub database_url: Option<String>,
}

#[derive(Debug, Clone)]
struct Account {
    bearer: String,
    agents: Arc<Mutex<Vec<String>>>,
}

#[derive(Debug)]
struct RouteStats {
    /// Latency in microseconds, 1 µs to 60 s.
    histogram: Histogram<u64>,
    errors: u64,
}

impl Default for RouteStats {
    #[allow(clippy::expect_used)]
    fn default() -> Self {
        let histogram =
            Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds are valid");
        Self { histogram, errors: 0 }
    }
}

impl RouteStats {
    fn record(&mut self, micros: u64, ok: bool) {
        self.histogram.saturating_record(micros.clamp(1, 60_000_000));
        if !ok {
            self.errors += 1;
        }
    }
}

type Stats = Arc<std::sync::Mutex<BTreeMap<&'static str, RouteStats>>>;

async fn timed(
    stats: &Stats,
    route: &'static str,
    request: reqwest::RequestBuilder,
) -> Option<Value> {
    let started = Instant::now();
    let result = request.send().await;
    let (ok, body) = match result {
        Ok(response) => {
            let ok = response.status().is_success();
            let body = response.json::<Value>().await.ok();
            (ok, body)
        }
        Err(_) => (false, None),
    };
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    if let Ok(mut stats) = stats.lock() {
        stats.entry(route).or_default().record(micros, ok);
    }
    if ok { body } else { None }
}

/// Runs the benchmark and prints the report.
///
/// # Errors
/// When the server or the database cannot be reached.
#[allow(clippy::print_stdout)]
pub async fn run(config: &Config, args: ApiBenchArgs) -> anyhow::Result<()> {
    if args.accounts == 0 || args.concurrency == 0 {
        bail!("--accounts and --concurrency must be at least 1");
    }
    let mut config = config.clone();
    if let Some(dir) = args.data_dir.clone() {
        config.data_dir = dir;
    }
    if let Some(url) = args.database_url.clone() {
        config.database_url = Some(url);
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let base = args.url.trim_end_matches('/').to_owned();
    client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .context("the server does not answer")?
        .error_for_status()?;

    let secrets = crate::server::load_master_key(&config)?;
    let store = crate::server::open_store(&config, &secrets).await?;
    let mut accounts = Vec::with_capacity(args.accounts);
    for i in 0..args.accounts {
        let created = nixflex_api::routes::keys::provision_account(
            &*store,
            &secrets,
            Some(format!("bench account {i}")),
            None,
        )
        .await?;
        store
            .set_account_limits(
                &created.account_id.as_str().into(),
                None,
                Some(1_000_000_000),
                Some(1_000_000_000),
            )
            .await?;
        accounts.push(Account {
            bearer: format!("Bearer {}:{}", created.key_id, created.key_secret),
            agents: Arc::default(),
        });
    }
    println!(
        "seeded {} accounts; creating {} agents over HTTP at concurrency {}",
        args.accounts, args.agents, args.concurrency
    );

    let seed_stats: Stats = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, base, accounts, stats, next) =
            (client.clone(), base.clone(), accounts.clone(), seed_stats.clone(), next.clone());
        let total = args.agents;
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let account = &accounts[i % accounts.len()];
                let request = client
                    .post(format!("{base}/v1/agents"))
                    .header("authorization", &account.bearer)
                    .json(&json!({"name": format!("agent {i}"), "system_prompt": "You are a helpful receptionist for a dental practice."}));
                if let Some(agent) = timed(&stats, "POST /v1/agents (seed)", request).await
                    && let Some(id) = agent["agent_id"].as_str()
                {
                    account.agents.lock().await.push(id.to_owned());
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let seed_elapsed = started.elapsed();
    report("seed", &seed_stats, seed_elapsed);

    println!(
        "\nmixed load for {} s at concurrency {} (list 30%, get 40%, update 20%, create 7%, delete 3%)",
        args.duration_secs, args.concurrency
    );
    let stats: Stats = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let started = Instant::now();
    for worker in 0..args.concurrency {
        let (client, base, accounts, stats) =
            (client.clone(), base.clone(), accounts.clone(), stats.clone());
        tasks.spawn(async move {
            let mut n = worker;
            while Instant::now() < deadline {
                n += 1;
                let account = &accounts[n % accounts.len()];
                let roll = rand::rng().random_range(0..100);
                let some_agent = account.agents.lock().await.choose(&mut rand::rng()).cloned();
                let auth = account.bearer.as_str();
                match (roll, some_agent) {
                    (0..30, _) | (_, None) => {
                        let offset = rand::rng().random_range(0..4) * 25;
                        let request = client.get(format!("{base}/v1/agents?limit=25&offset={offset}")).header("authorization", auth);
                        timed(&stats, "GET /v1/agents", request).await;
                    }
                    (30..70, Some(id)) => {
                        let request = client.get(format!("{base}/v1/agents/{id}")).header("authorization", auth);
                        timed(&stats, "GET /v1/agents/{id}", request).await;
                    }
                    (70..90, Some(id)) => {
                        let request = client
                            .put(format!("{base}/v1/agents/{id}"))
                            .header("authorization", auth)
                            .json(&json!({"temperature": rand::rng().random_range(0..=10) as f64 / 10.0, "welcome_message": format!("Hello from run {n}")}));
                        timed(&stats, "PUT /v1/agents/{id}", request).await;
                    }
                    (90..97, _) => {
                        let request = client.post(format!("{base}/v1/agents")).header("authorization", auth).json(&json!({"name": "load"}));
                        if let Some(agent) = timed(&stats, "POST /v1/agents", request).await
                            && let Some(id) = agent["agent_id"].as_str()
                        {
                            account.agents.lock().await.push(id.to_owned());
                        }
                    }
                    (_, Some(id)) => {
                        // Out of the pool first, so no other worker reads an agent being deleted.
                        account.agents.lock().await.retain(|a| *a != id);
                        let request = client.delete(format!("{base}/v1/agents/{id}")).header("authorization", auth);
                        timed(&stats, "DELETE /v1/agents/{id}", request).await;
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    report("mixed", &stats, started.elapsed());
    Ok(())
}

#[allow(clippy::print_stdout, clippy::cast_precision_loss)]
fn report(phase: &str, stats: &Stats, elapsed: Duration) {
    let Ok(stats) = stats.lock() else { return };
    println!("\n[{phase}] {:.1} s", elapsed.as_secs_f64());
    println!(
        "{:<28} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "route", "requests", "errors", "req/s", "p50 ms", "p99 ms", "max ms"
    );
    let mut total = 0u64;
    for (route, route_stats) in stats.iter() {
        let h = &route_stats.histogram;
        total += h.len();
        println!(
            "{:<28} {:>8} {:>7} {:>9.1} {:>9.2} {:>9.2} {:>9.2}",
            route,
            h.len(),
            route_stats.errors,
            h.len() as f64 / elapsed.as_secs_f64(),
            h.value_at_quantile(0.50) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0,
        );
    }
    println!(
        "{:<28} {:>8} {:>7} {:>9.1}",
        "total",
        total,
        "",
        total as f64 / elapsed.as_secs_f64()
    );
}
