//! `nixflex bench api`: measures the REST API of a separately running server at a fixed
//! concurrency and prints requests/s and latency percentiles per route (docs/benchmarks.md,
//! docs/decisions.md#api-line-rate). Modes:
//!
//! - `ratio`: `GET /healthz` and an authenticated `GET /v1/agents/{id}`, each alone, and the cost
//!   of every route as a multiple of `/healthz`, measured by the same client in the same run.
//! - `lists`: the agents and calls lists of one big account (`--account-agents` agents and
//!   `--calls` calls), unfiltered and with each indexed filter.
//! - `mixed`: agents seeded over HTTP across `--accounts`, then a read/write mix.
//! - `all`: the three, in that order.
//!
//! Accounts are provisioned straight into the server's database (same configuration as the
//! server: data dir or database URL, and master key) with raised request limits, so the numbers
//! measure the server, not the rate limiter. The big account's agents and calls are written
//! there too, in batches; everything measured goes through HTTP.

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

use nixflex_core::agent::{Agent, AgentSettings};
use nixflex_core::call::{
    CallRecord, CallStatus, Direction, EndedReason, TranscriptEntry, TranscriptRole,
};
use nixflex_core::ids;
use nixflex_store::Store;

use crate::config::Config;

/// What `nixflex bench api` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ApiBenchMode {
    /// `/healthz` against an authenticated read, and the ratio.
    Ratio,
    /// Lists of one big account.
    Lists,
    /// The read/write mix over many accounts.
    Mixed,
    /// All three.
    All,
}

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
    /// Length of each measured phase, in seconds.
    #[arg(long, default_value_t = 20)]
    pub duration_secs: u64,
    /// What to measure: ratio, lists, mixed or all.
    #[arg(long, value_enum, default_value = "all")]
    pub mode: ApiBenchMode,
    /// Calls written into the big account (ratio and lists modes), straight into the database.
    #[arg(long, default_value_t = 10_000)]
    pub calls: usize,
    /// Agents written into the big account (ratio and lists modes), straight into the database.
    #[arg(long, default_value_t = 500)]
    pub account_agents: usize,
    /// Directory of the server's SQLite database (when the server uses the default store).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// The server's database URL (when it uses PostgreSQL).
    #[arg(long)]
    pub database_url: Option<String>,
}

/// An account's agents as the mixed load sees them: which exist, and how many requests each is
/// in. A `DELETE` takes only an agent no request is using, so no `GET` or `PUT` races its own
/// load's deletes into a 404 (which would count as an error the server did not make).
#[derive(Debug, Default)]
struct AgentPool {
    ids: Vec<String>,
    in_use: std::collections::HashMap<String, usize>,
}

impl AgentPool {
    /// A random agent, marked in use until [`Self::release`].
    fn take(&mut self) -> Option<String> {
        let id = self.ids.choose(&mut rand::rng()).cloned()?;
        *self.in_use.entry(id.clone()).or_default() += 1;
        Some(id)
    }

    fn release(&mut self, id: &str) {
        if let Some(count) = self.in_use.get_mut(id) {
            *count -= 1;
            if *count == 0 {
                self.in_use.remove(id);
            }
        }
    }

    /// A random agent no request is using, out of the pool for good (to be deleted).
    fn take_for_delete(&mut self) -> Option<String> {
        let idle: Vec<usize> =
            (0..self.ids.len()).filter(|&i| !self.in_use.contains_key(&self.ids[i])).collect();
        let index = *idle.choose(&mut rand::rng())?;
        Some(self.ids.swap_remove(index))
    }
}

#[derive(Debug, Clone)]
struct Account {
    bearer: String,
    agents: Arc<Mutex<AgentPool>>,
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
) -> Option<bytes::Bytes> {
    // The body is received, not decoded: decoding a 25-agent page (~30 KB) as JSON cost the
    // client more than the server spent answering it, and the ratio is the server's.
    let started = Instant::now();
    let result = request.send().await;
    let (ok, body) = match result {
        Ok(response) => {
            let ok = response.status().is_success();
            let body = response.bytes().await.ok();
            (ok && body.is_some(), body)
        }
        Err(_) => (false, None),
    };
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    if let Ok(mut stats) = stats.lock() {
        stats.entry(route).or_default().record(micros, ok);
    }
    if ok { body } else { None }
}

/// The `agent_id` of an agent object's JSON.
fn agent_id_of(body: Option<&[u8]>) -> Option<String> {
    let agent: Value = serde_json::from_slice(body?).ok()?;
    agent["agent_id"].as_str().map(str::to_owned)
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
    if args.mode != ApiBenchMode::Mixed {
        run_ratio_and_lists(&client, &base, &store, &secrets, &args).await?;
    }
    if matches!(args.mode, ApiBenchMode::Mixed | ApiBenchMode::All) {
        run_mixed(&client, &base, &store, &secrets, &args).await?;
    }
    Ok(())
}

/// Agents seeded over HTTP across `--accounts`, then the read/write mix.
#[allow(clippy::print_stdout)]
async fn run_mixed(
    client: &reqwest::Client,
    base: &str,
    store: &Arc<dyn Store>,
    secrets: &nixflex_core::crypto::SecretBox,
    args: &ApiBenchArgs,
) -> anyhow::Result<()> {
    let (client, base) = (client.clone(), base.to_owned());
    let mut accounts = Vec::with_capacity(args.accounts);
    for i in 0..args.accounts {
        let created = nixflex_api::routes::keys::provision_account(
            &**store,
            secrets,
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
                if let Some(id) =
                    agent_id_of(timed(&stats, "POST /v1/agents (seed)", request).await.as_deref())
                {
                    account.agents.lock().await.ids.push(id);
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
                let auth = account.bearer.as_str();
                match roll {
                    30..90 => {
                        let Some(id) = account.agents.lock().await.take() else {
                            list_agents(&client, &base, auth, &stats).await;
                            continue;
                        };
                        if roll < 70 {
                            let request = client.get(format!("{base}/v1/agents/{id}")).header("authorization", auth);
                            timed(&stats, "GET /v1/agents/{id}", request).await;
                        } else {
                            let request = client
                                .put(format!("{base}/v1/agents/{id}"))
                                .header("authorization", auth)
                                .json(&json!({"temperature": rand::rng().random_range(0..=10) as f64 / 10.0, "welcome_message": format!("Hello from run {n}")}));
                            timed(&stats, "PUT /v1/agents/{id}", request).await;
                        }
                        account.agents.lock().await.release(&id);
                    }
                    90..97 => {
                        let request = client.post(format!("{base}/v1/agents")).header("authorization", auth).json(&json!({"name": "load"}));
                        if let Some(id) = agent_id_of(timed(&stats, "POST /v1/agents", request).await.as_deref())
                        {
                            account.agents.lock().await.ids.push(id);
                        }
                    }
                    97.. => {
                        // Out of the pool first, and only one no request is using.
                        let Some(id) = account.agents.lock().await.take_for_delete() else {
                            list_agents(&client, &base, auth, &stats).await;
                            continue;
                        };
                        let request = client.delete(format!("{base}/v1/agents/{id}")).header("authorization", auth);
                        timed(&stats, "DELETE /v1/agents/{id}", request).await;
                    }
                    _ => list_agents(&client, &base, auth, &stats).await,
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    report("mixed", &stats, started.elapsed());
    Ok(())
}

/// One page of an account's agents, at a random offset of the first four pages.
async fn list_agents(client: &reqwest::Client, base: &str, auth: &str, stats: &Stats) {
    let offset = rand::rng().random_range(0..4) * 25;
    let request = client
        .get(format!("{base}/v1/agents?limit=25&offset={offset}"))
        .header("authorization", auth);
    timed(stats, "GET /v1/agents", request).await;
}

/// A request for worker request number `n`.
type MakeRequest = Arc<dyn Fn(usize) -> reqwest::RequestBuilder + Send + Sync>;

/// One measured route: its latencies and how long it was driven.
struct Measured {
    route: String,
    stats: RouteStats,
    elapsed: Duration,
}

/// Drives one route alone at `concurrency` for `duration` (closed loop: each client sends its
/// next request when the last one answered).
async fn measure(
    concurrency: usize,
    duration: Duration,
    route: &'static str,
    make: MakeRequest,
) -> Measured {
    let stats: Stats = Arc::default();
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let (stats, make) = (stats.clone(), make.clone());
        tasks.spawn(async move {
            let mut n = worker;
            while Instant::now() < deadline {
                timed(&stats, route, make(n)).await;
                n += concurrency;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let stats = stats.lock().ok().and_then(|mut all| all.remove(route)).unwrap_or_default();
    Measured { route: route.to_owned(), stats, elapsed }
}

/// What `seed_big_account` made.
struct BigAccount {
    bearer: String,
    agent_ids: Vec<String>,
    /// Agents that have calls.
    calling_agents: Vec<String>,
    /// Caller numbers of its calls.
    callers: Vec<String>,
}

/// A seeded call: one a minute going back from `now`, spread over agents, directions, callers,
/// sentiments and outcomes, each with a short transcript.
fn bench_call(i: usize, account: &str, agents: &[String], callers: &[String]) -> CallRecord {
    let minutes = i64::try_from(i).unwrap_or(i64::MAX);
    let at = nixflex_store::now() - chrono::Duration::minutes(minutes);
    let transcript = (0..6)
        .map(|turn| TranscriptEntry {
            role: if turn % 2 == 0 { TranscriptRole::Agent } else { TranscriptRole::Caller },
            text: "Thanks for calling the practice, how can I help you today?".to_owned(),
            timestamp_ms: turn * 4000,
        })
        .collect();
    let outbound = i.is_multiple_of(3);
    CallRecord {
        call_id: ids::new_call_id(),
        account_id: account.into(),
        agent_id: agents.get(i % agents.len().max(1)).map(|a| a.as_str().into()),
        direction: if outbound { Direction::Outbound } else { Direction::Inbound },
        from_number: if outbound {
            "+14155552671".to_owned()
        } else {
            callers[i % callers.len()].clone()
        },
        to_number: if outbound {
            callers[i % callers.len()].clone()
        } else {
            "+14155552671".to_owned()
        },
        twilio_call_sid: None,
        call_status: if i.is_multiple_of(10) {
            CallStatus::NoAnswer
        } else {
            CallStatus::Completed
        },
        // Ended calls, as a big account's history is: a call without an ended reason would be
        // taken for a live call whose node died, and the stale-call sweeper would end it (and
        // queue its follow-ups) during the measurement.
        ended_reason: Some(if i.is_multiple_of(10) {
            EndedReason::NoAnswer
        } else {
            EndedReason::CallerHangup
        }),
        started_at: at,
        answered_at: Some(at),
        ended_at: Some(at + chrono::Duration::seconds(60)),
        duration_seconds: Some(60),
        transcript,
        turns: Vec::new(),
        avg_latency_ms: Some(640.0),
        recording: None,
        call_summary: Some("The caller booked a cleaning for Tuesday.".to_owned()),
        caller_sentiment: Some(["happy", "neutral", "frustrated"][i % 3].to_owned()),
        call_successful: Some(i.is_multiple_of(2)),
        extracted_data: serde_json::Map::new(),
        voicemail_detected: i.is_multiple_of(7),
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
    }
}

/// One account with `n_agents` agents and `n_calls` calls, written straight into the database
/// (agents eight at a time, calls in transactions of 1,000).
#[allow(clippy::print_stdout)]
async fn seed_big_account(
    store: &Arc<dyn Store>,
    secrets: &nixflex_core::crypto::SecretBox,
    n_agents: usize,
    n_calls: usize,
) -> anyhow::Result<BigAccount> {
    use futures::{StreamExt as _, TryStreamExt as _};
    let started = Instant::now();
    let created = nixflex_api::routes::keys::provision_account(
        &**store,
        secrets,
        Some("bench big account".to_owned()),
        None,
    )
    .await?;
    let account_id: nixflex_core::ids::AccountId = created.account_id.as_str().into();
    store.set_account_limits(&account_id, None, Some(1_000_000_000), Some(1_000_000_000)).await?;
    let now = nixflex_store::now();
    let agents: Vec<Agent> = (0..n_agents)
        .map(|i| {
            let at = now - chrono::Duration::seconds(i64::try_from(i).unwrap_or(i64::MAX));
            Agent {
                agent_id: ids::new_agent_id(),
                account_id: account_id.clone(),
                api_key_id: created.key_id.as_str().into(),
                settings: AgentSettings {
                    name: format!("agent {i}"),
                    system_prompt: "You are a helpful receptionist for a dental practice. Book, move and cancel appointments; answer questions about opening hours and prices.".to_owned(),
                    is_active: !i.is_multiple_of(4),
                    ..AgentSettings::default()
                },
                created_at: at,
                updated_at: at,
            }
        })
        .collect();
    futures::stream::iter(agents.iter().map(|agent| store.insert_agent(agent)))
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    let agent_ids: Vec<String> = agents.iter().map(|a| a.agent_id.to_string()).collect();
    let calling_agents: Vec<String> = agent_ids.iter().take(20).cloned().collect();
    let callers: Vec<String> = (0..50).map(|i| format!("+4473861723{i:02}")).collect();
    let mut seeded = 0;
    while seeded < n_calls {
        let end = (seeded + 1000).min(n_calls);
        let batch: Vec<CallRecord> = (seeded..end)
            .map(|i| bench_call(i, &created.account_id, &calling_agents, &callers))
            .collect();
        store.insert_calls(&batch).await?;
        seeded = end;
    }
    println!(
        "seeded a big account with {n_agents} agents and {n_calls} calls in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(BigAccount {
        bearer: format!("Bearer {}:{}", created.key_id, created.key_secret),
        agent_ids,
        calling_agents,
        callers,
    })
}

/// `ratio` and `lists`: each route alone, then the table with every route's cost as a multiple
/// of `/healthz`, measured by this client in this run.
async fn run_ratio_and_lists(
    client: &reqwest::Client,
    base: &str,
    store: &Arc<dyn Store>,
    secrets: &nixflex_core::crypto::SecretBox,
    args: &ApiBenchArgs,
) -> anyhow::Result<()> {
    let big = seed_big_account(store, secrets, args.account_agents.max(1), args.calls).await?;
    // Fresh statistics, as a database that grew to this size would have: right after a bulk
    // load PostgreSQL's planner still believes the account has a handful of calls.
    store.analyze().await.context("refreshing the planner's statistics")?;
    let duration = Duration::from_secs(args.duration_secs);
    let concurrency = args.concurrency;
    let authed = |path: Arc<dyn Fn(usize) -> String + Send + Sync>| -> MakeRequest {
        let (client, base, bearer) = (client.clone(), base.to_owned(), big.bearer.clone());
        Arc::new(move |n| {
            client.get(format!("{base}{}", path(n))).header("authorization", bearer.as_str())
        })
    };
    let fixed = |path: &'static str| -> Arc<dyn Fn(usize) -> String + Send + Sync> {
        Arc::new(move |_| path.to_owned())
    };
    let mut measured = Vec::new();
    let healthz: MakeRequest = {
        let (client, base) = (client.clone(), base.to_owned());
        Arc::new(move |_| client.get(format!("{base}/healthz")))
    };
    measured.push(measure(concurrency, duration, "GET /healthz", healthz).await);
    let agents = Arc::new(big.agent_ids.clone());
    measured.push(
        measure(
            concurrency,
            duration,
            "GET /v1/agents/{id}",
            authed(Arc::new(move |n| format!("/v1/agents/{}", agents[n % agents.len()]))),
        )
        .await,
    );
    measured.push(
        measure(
            concurrency,
            duration,
            "GET /v1/agents?limit=25",
            authed(fixed("/v1/agents?limit=25")),
        )
        .await,
    );
    if matches!(args.mode, ApiBenchMode::Lists | ApiBenchMode::All) {
        measured.push(
            measure(
                concurrency,
                duration,
                "GET /v1/agents?offset=…",
                authed(Arc::new(|n| format!("/v1/agents?limit=25&offset={}", (n % 4) * 25))),
            )
            .await,
        );
        measured.push(
            measure(
                concurrency,
                duration,
                "GET /v1/agents?is_active",
                authed(fixed("/v1/agents?limit=25&is_active=false")),
            )
            .await,
        );
        measured.push(
            measure(concurrency, duration, "GET /v1/calls", authed(fixed("/v1/calls?limit=25")))
                .await,
        );
        let deep = (args.calls / 2).min(1000);
        measured.push(
            measure(
                concurrency,
                duration,
                "GET /v1/calls?offset=deep",
                authed(Arc::new(move |_| format!("/v1/calls?limit=25&offset={deep}"))),
            )
            .await,
        );
        let calling = Arc::new(big.calling_agents.clone());
        measured.push(
            measure(
                concurrency,
                duration,
                "GET /v1/calls?agent_id",
                authed(Arc::new(move |n| {
                    format!("/v1/calls?limit=25&agent_id={}", calling[n % calling.len()])
                })),
            )
            .await,
        );
        measured.push(
            measure(
                concurrency,
                duration,
                "GET /v1/calls?direction",
                authed(fixed("/v1/calls?limit=25&direction=outbound")),
            )
            .await,
        );
        let callers = Arc::new(big.callers.clone());
        measured.push(
            measure(
                concurrency,
                duration,
                "GET /v1/calls?from_number",
                authed(Arc::new(move |n| {
                    let number = callers[n % callers.len()].replace('+', "%2B");
                    format!("/v1/calls?limit=25&from_number={number}")
                })),
            )
            .await,
        );
        for (route, path) in [
            ("GET /v1/calls?caller_sentiment", "/v1/calls?limit=25&caller_sentiment=frustrated"),
            ("GET /v1/calls?call_successful", "/v1/calls?limit=25&call_successful=false"),
            ("GET /v1/calls?voicemail_detected", "/v1/calls?limit=25&voicemail_detected=false"),
        ] {
            measured.push(measure(concurrency, duration, route, authed(fixed(path))).await);
        }
        let until = chrono::Utc::now() - chrono::Duration::days(1);
        let since = until - chrono::Duration::days(1);
        let range = format!(
            "/v1/calls?limit=25&since={}&until={}",
            since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        measured.push(
            measure(
                concurrency,
                duration,
                "GET /v1/calls?since&until",
                authed(Arc::new(move |_| range.clone())),
            )
            .await,
        );
        // A week up to now, from an instant inside an hour (the partial hour is counted).
        let week = format!(
            "/v1/calls?limit=25&since={}",
            (chrono::Utc::now() - chrono::Duration::days(7) - chrono::Duration::minutes(17))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        measured.push(
            measure(
                concurrency,
                duration,
                "GET /v1/calls?since (a week)",
                authed(Arc::new(move |_| week.clone())),
            )
            .await,
        );
    }
    report_ratio(&measured);
    Ok(())
}

#[allow(clippy::print_stdout, clippy::cast_precision_loss)]
fn report_ratio(measured: &[Measured]) {
    let rate = |m: &Measured| m.stats.histogram.len() as f64 / m.elapsed.as_secs_f64().max(1e-9);
    let healthz = measured.first().map_or(0.0, rate);
    println!(
        "\n{:<34} {:>8} {:>7} {:>9} {:>9} {:>9} {:>10}",
        "route (each alone)", "requests", "errors", "req/s", "p50 ms", "p99 ms", "× healthz"
    );
    for m in measured {
        let h = &m.stats.histogram;
        let per_second = rate(m);
        // How many /healthz requests one request of this route costs.
        let cost = if per_second > 0.0 { healthz / per_second } else { f64::INFINITY };
        println!(
            "{:<34} {:>8} {:>7} {:>9.1} {:>9.2} {:>9.2} {:>10.2}",
            m.route,
            h.len(),
            m.stats.errors,
            per_second,
            h.value_at_quantile(0.50) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            cost,
        );
    }
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
