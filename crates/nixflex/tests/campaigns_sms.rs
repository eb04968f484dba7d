//! `nixflex campaigns` as an operator uses it: a CSV of recipients turned into a campaign on a
//! running server (here: one started in this process with the Twilio emulator), the invalid rows
//! summarised with their CSV lines, and the live counts followed until the campaign is done.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, unreachable_pub)]

use std::path::Path;
use std::process::Output;

use nixflex::config::Config;
use nixflex::server;
use nixflex_testkit::twilio::TwilioEmulator;
use secrecy::SecretString;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_nixflex");
const NUMBER: &str = "+14155552671";

struct Lab {
    server: Option<server::Server>,
    base: String,
    twilio: TwilioEmulator,
    api_key: String,
    agent_id: String,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown.cancel();
        }
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn post(client: &reqwest::Client, url: String, bearer: Option<&str>, body: Value) -> Value {
    let mut request = client.post(url).json(&body);
    if let Some(bearer) = bearer {
        request = request.header("authorization", bearer);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let value: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{status}: {value}");
    value
}

impl Lab {
    async fn start() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let twilio = TwilioEmulator::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = Config {
            listen: format!("127.0.0.1:{port}"),
            public_url: Some(format!("http://127.0.0.1:{port}")),
            data_dir: dir.path().join("data"),
            master_key: Some(SecretString::from(
                nixflex_core::crypto::SecretBox::generate_encoded(),
            )),
            twilio_api_base: twilio.base_url().to_owned(),
            twilio_request_timeout_ms: 2000,
            jobs_poll_ms: 20,
            sms_campaign_rate_per_second: 100.0,
            signups_per_hour: 1000,
            ..Config::default()
        };
        let server = server::start(config).await.expect("server starts");
        let base = server.base_url();
        let client = reqwest::Client::new();
        let key = post(&client, format!("{base}/v1/keys"), None, json!({"name": "Ops"})).await;
        let api_key =
            format!("{}:{}", key["key_id"].as_str().unwrap(), key["key_secret"].as_str().unwrap());
        let bearer = format!("Bearer {api_key}");
        let agent =
            post(&client, format!("{base}/v1/agents"), Some(&bearer), json!({"name": "Clinic"}))
                .await;
        let agent_id = agent["agent_id"].as_str().unwrap().to_owned();
        let account = twilio.add_account();
        twilio.add_number(&account.sid, NUMBER);
        post(
            &client,
            format!("{base}/v1/phone-numbers"),
            Some(&bearer),
            json!({"phone_number": NUMBER, "agent_id": agent_id, "twilio_sid": account.sid, "twilio_token": account.auth_token}),
        )
        .await;
        Self { server: Some(server), base, twilio, api_key, agent_id, dir }
    }

    fn csv(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs `nixflex campaigns ARGS --url … --api-key …` with a clean environment.
    async fn nixflex(&self, args: &[&str]) -> Output {
        let mut command = tokio::process::Command::new(BIN);
        command.current_dir(self.dir.path());
        for (key, _) in std::env::vars() {
            if key.starts_with("NIXFLEX_") || key.ends_with("_API_KEY") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        command.arg("campaigns").args(args).args(["--url", &self.base, "--api-key", &self.api_key]);
        command.output().await.unwrap()
    }
}

fn json_out(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&output.stdout)))
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test]
async fn cli_creates_an_sms_campaign_from_csv_and_summarises_invalid_rows() {
    let lab = Lab::start().await;
    let csv = lab.csv(
        "reminders.csv",
        "phone,name,day\n+447700900001,Ann,Monday\n+447700900002,Bob,\n\nnot-a-number,Cy,Friday\n+447700900003,,Sunday\n",
    );
    let output = lab
        .nixflex(&[
            "create",
            "--csv",
            path_str(&csv),
            "--kind",
            "sms",
            "--agent-id",
            &lab.agent_id,
            "--from-number",
            NUMBER,
            "--message",
            "Hi {{name}}, see you {{day}}.",
            "--wait",
        ])
        .await;
    let summary = json_out(&output);
    assert!(summary["campaign_id"].as_str().unwrap().starts_with("smsc_"), "{summary}");
    assert_eq!(summary["kind"], "sms");
    assert_eq!(summary["status"], "done", "{summary}");
    assert_eq!(summary["rows"], 4);
    assert_eq!(summary["valid_count"], 3);
    assert_eq!(summary["invalid_count"], 1);
    assert_eq!(summary["invalid"][0]["line"], 5, "the CSV line of the bad row: {summary}");
    assert_eq!(summary["invalid"][0]["phone"], "not-a-number");
    assert_eq!(summary["invalid"][0]["reason"], "invalid_phone_format");
    assert_eq!(summary["counts"]["total_count"], 3);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 5: not-a-number (invalid_phone_format)"), "{stderr}");
    let mut texts: Vec<(String, String)> =
        lab.twilio.messages().into_iter().map(|m| (m.to, m.body)).collect();
    texts.sort();
    assert_eq!(
        texts,
        [
            ("+447700900001".to_owned(), "Hi Ann, see you Monday.".to_owned()),
            ("+447700900002".to_owned(), "Hi Bob, see you .".to_owned()),
            ("+447700900003".to_owned(), "Hi , see you Sunday.".to_owned()),
        ]
    );
}

#[tokio::test]
async fn cli_status_prints_live_counts_once_or_until_done() {
    let lab = Lab::start().await;
    let csv = lab.csv("later.csv", "phone\n+447700900011\n+447700900012\n");
    let created = json_out(
        &lab.nixflex(&[
            "create",
            "--csv",
            path_str(&csv),
            "--kind",
            "sms",
            "--agent-id",
            &lab.agent_id,
            "--from-number",
            NUMBER,
            "--message",
            "Reminder",
            "--at",
            "2099-01-01T09:00:00Z",
        ])
        .await,
    );
    assert_eq!(created["status"], "scheduled");
    let id = created["campaign_id"].as_str().unwrap().to_owned();
    let once = json_out(&lab.nixflex(&["status", &id, "--once"]).await);
    assert_eq!(once["status"], "scheduled");
    assert_eq!((once["total_count"].as_i64(), once["pending_count"].as_i64()), (Some(2), Some(2)));
    assert!(lab.twilio.messages().is_empty());
    let launched = json_out(&lab.nixflex(&["launch", &id]).await);
    assert_eq!(launched["status"], "running");
    let followed = json_out(&lab.nixflex(&["status", &id, "--every", "0.1"]).await);
    assert_eq!(followed["status"], "done", "{followed}");
    assert_eq!(followed["total_count"], 2);
    assert_eq!(lab.twilio.messages().len(), 2);
}

#[tokio::test]
async fn cli_reports_a_refused_request_and_a_bad_csv() {
    let lab = Lab::start().await;
    let csv = lab.csv("x.csv", "phone\n+447700900021\n");
    let mut args = vec!["create", "--csv", path_str(&csv), "--kind", "sms", "--agent-id"];
    args.extend([lab.agent_id.as_str(), "--from-number", "+14155550000", "--message", "Hi"]);
    let output = lab.nixflex(&args).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("from_number_not_owned"), "{stderr}");
    let headless = lab.csv("y.csv", "number\n+447700900021\n");
    let output = lab
        .nixflex(&[
            "create",
            "--csv",
            path_str(&headless),
            "--kind",
            "sms",
            "--agent-id",
            &lab.agent_id,
            "--message",
            "Hi",
        ])
        .await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no `phone` column"));
    let output = lab.nixflex(&["status", "call_0123", "--once"]).await;
    assert!(!output.status.success());
}

#[tokio::test]
async fn cli_creates_a_voice_campaign_from_csv() {
    let lab = Lab::start().await;
    let csv = lab.csv("calls.csv", "phone,name\n+447700900031,Ann\nbad,Bob\n");
    let output = lab
        .nixflex(&[
            "create",
            "--csv",
            path_str(&csv),
            "--kind",
            "voice",
            "--agent-id",
            &lab.agent_id,
            "--from-number",
            NUMBER,
            "--prompt",
            "Remind {name} of the appointment.",
        ])
        .await;
    let summary = json_out(&output);
    assert!(summary["campaign_id"].as_str().unwrap().starts_with("camp_"), "{summary}");
    assert_eq!(summary["kind"], "voice");
    assert_eq!(summary["invalid_count"], 1);
    assert_eq!(summary["invalid"][0]["line"], 3);
    let id = summary["campaign_id"].as_str().unwrap().to_owned();
    let once = json_out(&lab.nixflex(&["status", &id, "--once"]).await);
    assert_eq!(once["campaign_id"], id.as_str());
}

/// A `nixflex serve` child on a fixed address and data directory, killed with SIGKILL.
struct Child {
    process: tokio::process::Child,
}

async fn serve_child(dir: &Path, addr: &str, twilio: &TwilioEmulator) -> Child {
    serve_child_with(dir, addr, twilio, &[]).await
}

async fn serve_child_with(
    dir: &Path,
    addr: &str,
    twilio: &TwilioEmulator,
    env: &[(&str, &str)],
) -> Child {
    let mut command = tokio::process::Command::new(BIN);
    command.current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("NIXFLEX_") || key.ends_with("_API_KEY") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command
        .args(["serve", "--listen", addr, "--public-url", &format!("http://{addr}")])
        .args(["--data-dir", path_str(&dir.join("data"))])
        .env("NIXFLEX_TWILIO_API_BASE", twilio.base_url())
        .env("NIXFLEX_SMS_CAMPAIGN_RATE_PER_SECOND", "100")
        .env("NIXFLEX_JOBS_LEASE_MS", "1000")
        .env("NIXFLEX_JOBS_POLL_MS", "50")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let process = command.spawn().unwrap();
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(response) = client.get(format!("http://{addr}/healthz")).send().await
            && response.status().is_success()
        {
            return Child { process };
        }
        assert!(std::time::Instant::now() < deadline, "nixflex serve never became healthy");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sms_campaign_survives_kill_9_and_texts_everyone_exactly_once() {
    const RECIPIENTS: usize = 300;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let twilio = TwilioEmulator::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{addr}");
    let mut child = serve_child(dir.path(), &addr, &twilio).await;
    let client = reqwest::Client::new();
    let key = post(&client, format!("{base}/v1/keys"), None, json!({"name": "Ops"})).await;
    let bearer = format!(
        "Bearer {}:{}",
        key["key_id"].as_str().unwrap(),
        key["key_secret"].as_str().unwrap()
    );
    let agent =
        post(&client, format!("{base}/v1/agents"), Some(&bearer), json!({"name": "A"})).await;
    let account = twilio.add_account();
    twilio.add_number(&account.sid, NUMBER);
    post(
        &client,
        format!("{base}/v1/phone-numbers"),
        Some(&bearer),
        json!({"phone_number": NUMBER, "agent_id": agent["agent_id"], "twilio_sid": account.sid, "twilio_token": account.auth_token}),
    )
    .await;
    let recipients: Vec<Value> =
        (0..RECIPIENTS).map(|i| json!({"phone": format!("+4477009{i:05}")})).collect();
    let created = post(
        &client,
        format!("{base}/v1/sms/campaigns"),
        Some(&bearer),
        json!({"agent_id": agent["agent_id"], "from_number": NUMBER, "name": "Crashy",
               "message_template": "Hello", "recipients": recipients, "schedule_type": "now"}),
    )
    .await;
    let id = created["campaign_id"].as_str().unwrap().to_owned();
    // Three SIGKILLs at random points of the run, each followed by a restart.
    let random = uuid::Uuid::new_v4().as_bytes().to_owned();
    for (round, byte) in random.iter().take(3).enumerate() {
        let at = round * 80 + 10 + usize::from(*byte) % 60;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while twilio.messages().len() < at {
            assert!(
                std::time::Instant::now() < deadline,
                "stuck at {} texts",
                twilio.messages().len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        child.process.start_kill().unwrap();
        child.process.wait().await.unwrap();
        child = serve_child(dir.path(), &addr, &twilio).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let campaign = loop {
        let campaign: Value = client
            .get(format!("{base}/v1/sms/campaigns/{id}?recipients_limit=1"))
            .header("authorization", &bearer)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if campaign["status"] == "done" {
            break campaign;
        }
        assert!(std::time::Instant::now() < deadline, "never done: {campaign}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let mut per_recipient: std::collections::HashMap<String, usize> =
        std::collections::HashMap::new();
    for m in twilio.messages() {
        *per_recipient.entry(m.to).or_default() += 1;
    }
    assert_eq!(per_recipient.len(), RECIPIENTS, "every recipient texted");
    let doubled: Vec<_> = per_recipient.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "texted more than once: {doubled:?}");
    assert_eq!(campaign["total_count"], RECIPIENTS);
    assert_eq!(
        campaign["pending_count"], RECIPIENTS,
        "all queued at Twilio, none failed: {campaign}"
    );
    child.process.start_kill().unwrap();
}

#[tokio::test]
async fn sms_campaign_on_two_nodes_survives_one_killed_and_texts_everyone_once() {
    const RECIPIENTS: usize = 200;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let twilio = TwilioEmulator::start().await.unwrap();
    let database = nixflex_store::testing::fresh_postgres_url().await;
    let master_key = nixflex_core::crypto::SecretBox::generate_encoded();
    let env =
        [("NIXFLEX_DATABASE_URL", database.as_str()), ("NIXFLEX_MASTER_KEY", master_key.as_str())];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let addr_a = format!("127.0.0.1:{}", free_port());
    let addr_b = format!("127.0.0.1:{}", free_port());
    let mut a = serve_child_with(dir_a.path(), &addr_a, &twilio, &env).await;
    let b = serve_child_with(dir_b.path(), &addr_b, &twilio, &env).await;
    let (base_a, base_b) = (format!("http://{addr_a}"), format!("http://{addr_b}"));
    let client = reqwest::Client::new();
    let key = post(&client, format!("{base_a}/v1/keys"), None, json!({"name": "Ops"})).await;
    let bearer = format!(
        "Bearer {}:{}",
        key["key_id"].as_str().unwrap(),
        key["key_secret"].as_str().unwrap()
    );
    let agent =
        post(&client, format!("{base_a}/v1/agents"), Some(&bearer), json!({"name": "A"})).await;
    let account = twilio.add_account();
    twilio.add_number(&account.sid, NUMBER);
    post(
        &client,
        format!("{base_a}/v1/phone-numbers"),
        Some(&bearer),
        json!({"phone_number": NUMBER, "agent_id": agent["agent_id"], "twilio_sid": account.sid, "twilio_token": account.auth_token}),
    )
    .await;
    // Two campaigns from one number, created on different nodes: they share its pace.
    let mut ids = Vec::new();
    for (base, offset) in [(&base_a, 0), (&base_b, RECIPIENTS)] {
        let recipients: Vec<Value> = (offset..offset + RECIPIENTS)
            .map(|i| json!({"phone": format!("+4477009{i:05}")}))
            .collect();
        let created = post(
            &client,
            format!("{base}/v1/sms/campaigns"),
            Some(&bearer),
            json!({"agent_id": agent["agent_id"], "from_number": NUMBER, "name": "Two nodes",
                   "message_template": "Hello", "recipients": recipients, "schedule_type": "now"}),
        )
        .await;
        ids.push(created["campaign_id"].as_str().unwrap().to_owned());
    }
    let kill_at = 40 + usize::from(uuid::Uuid::new_v4().as_bytes()[0]) % 100;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while twilio.messages().len() < kill_at {
        assert!(std::time::Instant::now() < deadline, "stuck at {} texts", twilio.messages().len());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    a.process.start_kill().unwrap();
    a.process.wait().await.unwrap();
    // Node B takes over node A's campaign once its lease expires.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for id in &ids {
        loop {
            let campaign: Value = client
                .get(format!("{base_b}/v1/sms/campaigns/{id}?recipients_limit=1"))
                .header("authorization", &bearer)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if campaign["status"] == "done" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never done: {campaign}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let mut per_recipient: std::collections::HashMap<String, usize> =
        std::collections::HashMap::new();
    let mut times = Vec::new();
    for m in twilio.messages() {
        times.push(m.date_created);
        *per_recipient.entry(m.to).or_default() += 1;
    }
    assert_eq!(per_recipient.len(), 2 * RECIPIENTS, "every recipient texted");
    let doubled: Vec<_> = per_recipient.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "texted more than once: {doubled:?}");
    // The number's pace (100 a second) held across both nodes: 400 texts take at least ~4 s.
    times.sort();
    let span = (times[times.len() - 1] - times[0]).to_std().unwrap();
    assert!(span >= std::time::Duration::from_millis(3500), "400 texts in {span:?}");
    drop(b);
}
