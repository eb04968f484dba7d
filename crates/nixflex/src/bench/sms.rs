//! `nixflex bench sms`: inbound texts answered by the agent (docs/sms.md#inbound-texts).
//!
//! Starts a server in this process with the Twilio and Anthropic emulators (the emulated LLM
//! answers after `--llm-ttfb-ms`), imports one number, then has the Twilio emulator deliver
//! `--texts` signed inbound texts to it at `--per-minute`, each from its own customer number.
//! Measures, per text, the time from the emulator sending the webhook to the reply being handed
//! to Twilio (the emulator's `Messages.json` create), and checks that every text got exactly one
//! reply: none lost, none doubled.
//!
//! With `--campaign N --rate R` it instead sends one SMS campaign of N texts from one number at a
//! pacing limit of R a second (docs/sms.md#campaigns), and reports the texts per second sustained
//! at the emulator and that every recipient got exactly one text.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Args;
use nixflex_testkit::anthropic::{AnthropicEmulator, Reply, Timing};
use nixflex_testkit::twilio::TwilioEmulator;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::config::Config;

/// Arguments of `nixflex bench sms`.
#[derive(Debug, Args)]
pub struct SmsBenchArgs {
    /// Inbound texts to send.
    #[arg(long, default_value_t = 1000)]
    pub texts: usize,
    /// Rate of the inbound texts, per minute (all to one number).
    #[arg(long, default_value_t = 1000)]
    pub per_minute: u64,
    /// Emulated LLM time to first byte, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub llm_ttfb_ms: u64,
    /// Jobs (replies) the server runs at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// postgres://… (an empty database is best); default: SQLite in a temp dir.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Instead of inbound texts: one SMS campaign to this many recipients (docs/sms.md#campaigns).
    #[arg(long)]
    pub campaign: Option<usize>,
    /// The campaign's pacing limit, texts per second from the one sending number.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
}

const NUMBER: &str = "+14155552671";

fn customer(i: usize) -> String {
    format!("+4477009{i:05}")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let index = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn api(
    client: &reqwest::Client,
    base: &str,
    key: Option<&str>,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let mut request = client.post(format!("{base}{path}")).json(&body);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let response = request.send().await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("{path} answered {status}: {body}");
    }
    Ok(body)
}

/// Runs the benchmark and prints one JSON line of results.
///
/// # Errors
/// When the server or the emulators cannot start, or setting up the number fails.
#[allow(clippy::print_stdout, clippy::cast_precision_loss)]
pub async fn run(args: SmsBenchArgs) -> anyhow::Result<()> {
    if let Some(recipients) = args.campaign {
        return run_campaign(&args, recipients).await;
    }
    if args.texts == 0 || args.per_minute == 0 {
        bail!("--texts and --per-minute must be at least 1");
    }
    let twilio = TwilioEmulator::start().await.context("starting the Twilio emulator")?;
    let llm = AnthropicEmulator::start().await.context("starting the Anthropic emulator")?;
    llm.set_timing(Timing {
        first_byte: Duration::from_millis(args.llm_ttfb_ms),
        chunk_interval: Duration::ZERO,
    });
    llm.set_responder(|_| Reply::text("Thanks for your message, we will get back to you today."));
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = Config {
        listen: format!("127.0.0.1:{port}"),
        data_dir: dir.path().join("data"),
        database_url: args.database_url.clone(),
        public_url: Some(format!("http://127.0.0.1:{port}")),
        master_key: Some(SecretString::from(nixflex_core::crypto::SecretBox::generate_encoded())),
        twilio_api_base: twilio.base_url().to_owned(),
        anthropic_base_url: llm.base_url(),
        anthropic_api_key: Some(SecretString::from("sk-ant-bench")),
        jobs_concurrency: args.concurrency,
        ..Config::default()
    };
    let server = crate::server::start(config).await.context("starting the server")?;
    let base = server.base_url();
    let client = reqwest::Client::new();
    let key = api(&client, &base, None, "/v1/keys", json!({"name": "Bench"})).await?;
    let bearer = format!(
        "{}:{}",
        key["key_id"].as_str().unwrap_or_default(),
        key["key_secret"].as_str().unwrap_or_default()
    );
    let agent = api(&client, &base, Some(&bearer), "/v1/agents", json!({"name": "Bench"})).await?;
    let account = twilio.add_account();
    twilio.add_number(&account.sid, NUMBER);
    api(
        &client,
        &base,
        Some(&bearer),
        "/v1/phone-numbers",
        json!({"phone_number": NUMBER, "agent_id": agent["agent_id"], "twilio_sid": account.sid, "twilio_token": account.auth_token}),
    )
    .await?;

    // Deliver the texts on schedule, each on its own task so a slow answer delays no other.
    let twilio = std::sync::Arc::new(twilio);
    let gap = Duration::from_secs_f64(60.0 / args.per_minute as f64);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.texts);
    for i in 0..args.texts {
        let due = started + gap.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let twilio = twilio.clone();
        tasks.push(tokio::spawn(async move {
            let sent_at = Utc::now();
            let answer = twilio
                .send_inbound_sms(&customer(i), NUMBER, &format!("Hello, text {i}"), None)
                .await;
            (sent_at, answer)
        }));
    }
    let mut sent_at: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut refused = 0usize;
    for (i, task) in tasks.into_iter().enumerate() {
        let (at, answer) = task.await?;
        match answer {
            Ok((_, 200)) => {
                sent_at.insert(customer(i), at);
            }
            _ => refused += 1,
        }
    }
    let sending_secs = started.elapsed().as_secs_f64();

    // Wait for the replies (up to a minute after the last text).
    let replies = || {
        twilio
            .messages()
            .into_iter()
            .filter(|m| m.direction == "outbound-api" && m.from == NUMBER)
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while replies().len() < sent_at.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let retries that might double a reply show up before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let replies = replies();
    let mut per_customer: HashMap<&str, Vec<DateTime<Utc>>> = HashMap::new();
    for reply in &replies {
        per_customer.entry(reply.to.as_str()).or_default().push(reply.date_created);
    }
    let answered = sent_at.keys().filter(|c| per_customer.contains_key(c.as_str())).count();
    let doubled = per_customer.values().filter(|times| times.len() > 1).count();
    let mut latencies: Vec<f64> = sent_at
        .iter()
        .filter_map(|(customer, at)| {
            let first = per_customer.get(customer.as_str())?.iter().min()?;
            Some((*first - *at).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    server.shutdown.cancel();
    let _ = server.wait().await;
    println!(
        "{}",
        json!({
            "texts": args.texts,
            "per_minute": args.per_minute,
            "sending_seconds": (sending_secs * 10.0).round() / 10.0,
            "llm_ttfb_ms": args.llm_ttfb_ms,
            "concurrency": args.concurrency,
            "backend": if args.database_url.is_some() { "postgres" } else { "sqlite" },
            "webhooks_refused": refused,
            "answered": answered,
            "lost": sent_at.len() - answered,
            "doubled": doubled,
            "reply_handed_to_twilio_ms": {
                "p50": (percentile(&latencies, 50.0) * 10.0).round() / 10.0,
                "p90": (percentile(&latencies, 90.0) * 10.0).round() / 10.0,
                "p99": (percentile(&latencies, 99.0) * 10.0).round() / 10.0,
                "max": (latencies.last().copied().unwrap_or(0.0) * 10.0).round() / 10.0,
            },
        })
    );
    if refused > 0 || answered < sent_at.len() || doubled > 0 {
        bail!(
            "{refused} webhooks refused, {} texts unanswered, {doubled} doubled",
            sent_at.len() - answered
        );
    }
    Ok(())
}

/// `--campaign N --rate R`: one campaign of N texts from one number paced at R a second. Measures
/// the create request, the texts per second sustained from the first text to the last at the
/// emulator, and checks every recipient got exactly one text.
#[allow(clippy::print_stdout, clippy::cast_precision_loss)]
async fn run_campaign(args: &SmsBenchArgs, recipients: usize) -> anyhow::Result<()> {
    if recipients == 0 || recipients > 10_000 {
        bail!("--campaign takes 1 to 10000 recipients");
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
        jobs_concurrency: args.concurrency,
        sms_campaign_rate_per_second: args.rate,
        ..Config::default()
    };
    let server = crate::server::start(config).await.context("starting the server")?;
    let base = server.base_url();
    let client = reqwest::Client::new();
    let key = api(&client, &base, None, "/v1/keys", json!({"name": "Bench"})).await?;
    let bearer = format!(
        "{}:{}",
        key["key_id"].as_str().unwrap_or_default(),
        key["key_secret"].as_str().unwrap_or_default()
    );
    let agent = api(&client, &base, Some(&bearer), "/v1/agents", json!({"name": "Bench"})).await?;
    let account = twilio.add_account();
    twilio.add_number(&account.sid, NUMBER);
    api(
        &client,
        &base,
        Some(&bearer),
        "/v1/phone-numbers",
        json!({"phone_number": NUMBER, "agent_id": agent["agent_id"], "twilio_sid": account.sid, "twilio_token": account.auth_token}),
    )
    .await?;
    let list: Vec<Value> = (0..recipients)
        .map(|i| json!({"phone": customer(i), "variables": {"n": i.to_string()}}))
        .collect();
    let body = json!({
        "agent_id": agent["agent_id"], "from_number": NUMBER, "name": "Bench",
        "message_template": "Reminder {{n}}: your appointment is tomorrow.",
        "recipients": list, "schedule_type": "now",
    });
    let started = Instant::now();
    let created = api(&client, &base, Some(&bearer), "/v1/sms/campaigns", body).await?;
    let create_ms = started.elapsed().as_secs_f64() * 1000.0;
    let campaign_id = created["campaign_id"].as_str().unwrap_or_default().to_owned();
    // Wait for the campaign to finish (generously: the pace, plus a minute).
    let deadline = Instant::now() + Duration::from_secs_f64(recipients as f64 / args.rate + 60.0);
    let status = loop {
        let response = client
            .get(format!("{base}/v1/sms/campaigns/{campaign_id}?recipients_limit=1"))
            .header("authorization", format!("Bearer {bearer}"))
            .send()
            .await?;
        let campaign: Value = response.json().await?;
        let status = campaign["status"].as_str().unwrap_or_default().to_owned();
        if status == "done" || status == "failed" || Instant::now() >= deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let total_secs = started.elapsed().as_secs_f64();
    let texts: Vec<_> = twilio
        .messages()
        .into_iter()
        .filter(|m| m.direction == "outbound-api" && m.from == NUMBER)
        .collect();
    let mut per_recipient: HashMap<&str, usize> = HashMap::new();
    for text in &texts {
        *per_recipient.entry(text.to.as_str()).or_default() += 1;
    }
    let lost =
        (0..recipients).filter(|i| !per_recipient.contains_key(customer(*i).as_str())).count();
    let doubled = per_recipient.values().filter(|n| **n > 1).count();
    let first = texts.iter().map(|t| t.date_created).min();
    let last = texts.iter().map(|t| t.date_created).max();
    let span_secs = match (first, last) {
        (Some(a), Some(b)) => (b - a).num_microseconds().unwrap_or(0) as f64 / 1e6,
        _ => 0.0,
    };
    let sustained = if span_secs > 0.0 { (texts.len() as f64 - 1.0) / span_secs } else { 0.0 };
    server.shutdown.cancel();
    let _ = server.wait().await;
    println!(
        "{}",
        json!({
            "campaign_recipients": recipients,
            "rate_limit_per_second": args.rate,
            "backend": if args.database_url.is_some() { "postgres" } else { "sqlite" },
            "status": status,
            "create_ms": (create_ms * 10.0).round() / 10.0,
            "first_to_last_text_seconds": (span_secs * 100.0).round() / 100.0,
            "texts_per_second_sustained": (sustained * 10.0).round() / 10.0,
            "create_to_done_seconds": (total_secs * 100.0).round() / 100.0,
            "texts": texts.len(),
            "lost": lost,
            "doubled": doubled,
        })
    );
    if lost > 0 || doubled > 0 || status != "done" {
        bail!("campaign {status}: {lost} recipients not texted, {doubled} texted more than once");
    }
    Ok(())
}
