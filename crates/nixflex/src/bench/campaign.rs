//! `nixflex bench campaign`: voice batch campaigns (docs/campaigns.md).
//!
//! Starts a server in this process with the Twilio emulator, imports one number, then:
//! 1. creates a `--recipients` campaign (default 10,000) scheduled far ahead (so nothing dials)
//!    and measures the request's time and the process's resident memory before and after;
//! 2. creates a `--dial` campaign (default 1,000) that runs now against emulated callees who
//!    answer and hang up at once, with the pacing and the caps raised, and measures how fast the
//!    scheduler turns recipients into carrier dials: dials per second, the delay from a call's
//!    creation (its recipient's claim) to its dial at the carrier, and the process CPU time per
//!    dial; then checks that every recipient was dialled exactly once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use nixflex_testkit::twilio::{Callee, TwilioEmulator};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::config::Config;

/// Arguments of `nixflex bench campaign`.
#[derive(Debug, Args)]
pub struct CampaignBenchArgs {
    /// Recipients of the campaign whose creation is measured.
    #[arg(long, default_value_t = 10_000)]
    pub recipients: usize,
    /// Recipients of the campaign that is dialled.
    #[arg(long, default_value_t = 1000)]
    pub dial: usize,
    /// Carrier calls per second allowed (`campaign_calls_per_second`).
    #[arg(long, default_value_t = 500.0)]
    pub calls_per_second: f64,
    /// Concurrent calls allowed (the account cap).
    #[arg(long, default_value_t = 200)]
    pub max_concurrent: i64,
    /// postgres://… (an empty database is best); default: SQLite in a temp dir.
    #[arg(long)]
    pub database_url: Option<String>,
}

const NUMBER: &str = "+14155552671";

fn recipient(campaign: usize, i: usize) -> String {
    format!("+447{campaign}{i:08}")
}

/// `(VmRSS, VmHWM)` of this process in MiB (Linux; 0 elsewhere).
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// User + system CPU seconds of this process (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; after the `)` they are at 11 and 12.
    let ticks: f64 =
        [11, 12].iter().filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok())).sum();
    ticks / 100.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let index = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let mut request = client.request(method, &url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let response = request.send().await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("{url} answered {status}: {body}");
    }
    Ok(body)
}

/// Runs the benchmark and prints one JSON line of results.
///
/// # Errors
/// When the server or the emulator cannot start, or a request fails.
#[allow(clippy::print_stdout, clippy::cast_precision_loss, clippy::too_many_lines)]
pub async fn run(args: CampaignBenchArgs) -> anyhow::Result<()> {
    if args.recipients == 0 || args.recipients > 10_000 || args.dial == 0 || args.dial > 10_000 {
        bail!("--recipients and --dial must be between 1 and 10000");
    }
    let twilio = TwilioEmulator::start().await.context("starting the Twilio emulator")?;
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = Config {
        listen: format!("127.0.0.1:{port}"),
        data_dir: dir.path().join("data"),
        database_url: args.database_url.clone(),
        public_url: Some(format!("http://127.0.0.1:{port}")),
        master_key: Some(SecretString::from(nixflex_core::crypto::SecretBox::generate_encoded())),
        twilio_api_base: twilio.base_url().to_owned(),
        max_concurrent_calls: args.max_concurrent,
        campaign_calls_per_second: args.calls_per_second,
        campaign_tick_ms: 100,
        outbound_dial_recheck_ms: 200,
        jobs_concurrency: 64,
        rate_limit_reads_per_minute: 1_000_000,
        rate_limit_writes_per_minute: 1_000_000,
        ..Config::default()
    };
    let server = crate::server::start(config).await.context("starting the server")?;
    let base = server.base_url();
    let client = reqwest::Client::new();
    let post = reqwest::Method::POST;
    let key = call(
        &client,
        post.clone(),
        format!("{base}/v1/keys"),
        None,
        Some(json!({"name": "Bench"})),
    )
    .await?;
    let bearer = format!(
        "{}:{}",
        key["key_id"].as_str().unwrap_or_default(),
        key["key_secret"].as_str().unwrap_or_default()
    );
    let key = Some(bearer.as_str());
    let agent = call(
        &client,
        post.clone(),
        format!("{base}/v1/agents"),
        key,
        Some(json!({"name": "Bench"})),
    )
    .await?;
    let account = twilio.add_account();
    twilio.add_number(&account.sid, NUMBER);
    call(
        &client,
        post.clone(),
        format!("{base}/v1/phone-numbers"),
        key,
        Some(json!({"phone_number": NUMBER, "agent_id": agent["agent_id"], "twilio_sid": account.sid, "twilio_token": account.auth_token})),
    )
    .await?;
    let body = |campaign: usize, n: usize, scheduled: bool| {
        let recipients: Vec<Value> = (0..n)
            .map(|i| {
                json!({"phone": recipient(campaign, i),
                       "variables": {"first_name": format!("Customer {i}"), "appointment": "Tuesday 10:30"}})
            })
            .collect();
        let mut body = json!({"agent_id": agent["agent_id"], "recipients": recipients,
                              "prompt": "Remind {first_name} of the appointment on {appointment}."});
        if scheduled {
            body["schedule_type"] = json!("schedule");
            body["scheduled_date"] = json!("2099-01-01");
        }
        body
    };

    // 1. Creation of a large campaign.
    let request = body(1, args.recipients, true);
    let (rss_before, _) = memory_mib();
    let started = Instant::now();
    let created =
        call(&client, post.clone(), format!("{base}/v1/calls/batch"), key, Some(request)).await?;
    let create_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (rss_after, peak) = memory_mib();
    let big_id = created["campaign_id"].as_str().unwrap_or_default().to_owned();
    let started = Instant::now();
    call(
        &client,
        reqwest::Method::GET,
        format!("{base}/v1/calls/batch/{big_id}?recipients_limit=1000"),
        key,
        None,
    )
    .await?;
    let get_ms = started.elapsed().as_secs_f64() * 1000.0;

    // 2. Dialling.
    for i in 0..args.dial {
        twilio.add_callee(
            &recipient(2, i),
            Callee::HangsUp {
                ring_for: Duration::from_millis(20),
                talk_for: Duration::from_millis(20),
            },
        );
    }
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let created =
        call(&client, post, format!("{base}/v1/calls/batch"), key, Some(body(2, args.dial, false)))
            .await?;
    let id = created["campaign_id"].as_str().unwrap_or_default().to_owned();
    let deadline = Instant::now() + Duration::from_secs(3600);
    let dials = |twilio: &TwilioEmulator| {
        twilio.calls().into_iter().filter(|c| c.direction == "outbound-api").collect::<Vec<_>>()
    };
    while dials(&twilio).len() < args.dial {
        if Instant::now() > deadline {
            bail!("only {} of {} dialled in an hour", dials(&twilio).len(), args.dial);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dial_seconds = started.elapsed().as_secs_f64();
    let cpu_per_dial_ms = (cpu_seconds() - cpu_before) * 1000.0 / args.dial as f64;
    let completed = loop {
        let campaign = call(
            &client,
            reqwest::Method::GET,
            format!("{base}/v1/calls/batch/{id}?recipients_limit=1"),
            key,
            None,
        )
        .await?;
        if campaign["status"] == "completed" || Instant::now() > deadline {
            break campaign;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let total_seconds = started.elapsed().as_secs_f64();

    // Claim → dial delay per call: the call's `created_at` (written with its recipient's claim)
    // to the carrier's creation of the call.
    let carrier: HashMap<String, chrono::DateTime<chrono::Utc>> =
        dials(&twilio).into_iter().map(|c| (c.to.clone(), c.date_created)).collect();
    let mut per_number: HashMap<String, usize> = HashMap::new();
    for c in dials(&twilio) {
        *per_number.entry(c.to).or_default() += 1;
    }
    let doubled = per_number.values().filter(|n| **n > 1).count();
    let mut delays = Vec::with_capacity(args.dial);
    let mut offset = 0;
    loop {
        let page = call(
            &client,
            reqwest::Method::GET,
            format!("{base}/v1/calls?campaign_id={id}&limit=100&offset={offset}"),
            key,
            None,
        )
        .await?;
        let calls = page["calls"].as_array().cloned().unwrap_or_default();
        for c in &calls {
            let created =
                c["created_at"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            if let (Some(created), Some(dialled)) =
                (created, c["to_number"].as_str().and_then(|to| carrier.get(to)))
            {
                delays.push(
                    (*dialled - created.with_timezone(&chrono::Utc)).num_microseconds().unwrap_or(0)
                        as f64
                        / 1000.0,
                );
            }
        }
        offset += calls.len();
        if calls.len() < 100 {
            break;
        }
    }
    delays.sort_by(f64::total_cmp);
    let result = json!({
        "bench": "campaign",
        "database": if args.database_url.is_some() { "postgres" } else { "sqlite" },
        "create": {
            "recipients": args.recipients,
            "create_ms": (create_ms * 10.0).round() / 10.0,
            "rss_before_mib": (rss_before * 10.0).round() / 10.0,
            "rss_after_mib": (rss_after * 10.0).round() / 10.0,
            "rss_peak_mib": (peak * 10.0).round() / 10.0,
            "get_1000_recipients_ms": (get_ms * 10.0).round() / 10.0,
        },
        "dial": {
            "recipients": args.dial,
            "calls_per_second_limit": args.calls_per_second,
            "max_concurrent": args.max_concurrent,
            "all_dialled_s": (dial_seconds * 100.0).round() / 100.0,
            "dials_per_second": ((args.dial as f64 / dial_seconds) * 10.0).round() / 10.0,
            "completed_s": (total_seconds * 100.0).round() / 100.0,
            "status": completed["status"],
            "claim_to_dial_ms_p50": (percentile(&delays, 50.0) * 10.0).round() / 10.0,
            "claim_to_dial_ms_p95": (percentile(&delays, 95.0) * 10.0).round() / 10.0,
            "claim_to_dial_ms_max": (percentile(&delays, 100.0) * 10.0).round() / 10.0,
            "process_cpu_ms_per_dial": (cpu_per_dial_ms * 100.0).round() / 100.0,
            "dialled_numbers": per_number.len(),
            "doubled": doubled,
        },
    });
    println!("{result}");
    server.shutdown.cancel();
    let _ = server.wait().await;
    if doubled > 0 || per_number.len() != args.dial {
        bail!("{doubled} recipients dialled twice, {} of {} dialled", per_number.len(), args.dial);
    }
    Ok(())
}
