//! Voice batch campaigns against real `nixflex serve` processes (docs/campaigns.md#exactly-once):
//! a 1,000-recipient campaign survives SIGKILL at random moments, and two nodes on one
//! PostgreSQL share a campaign while one of them is killed; either way every recipient is
//! dialled exactly once at the (emulated) carrier and ends with one final outcome.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    unreachable_pub
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nixflex_testkit::twilio::TwilioEmulator;
use nixflex_testkit::twilio::callee::Callee;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_nixflex");
const NUMBER: &str = "+14155552671";
const RECIPIENTS: usize = 1000;

/// A command with a clean environment: no NIXFLEX_* or provider keys from the caller.
fn nixflex(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("NIXFLEX_") || key.ends_with("_API_KEY") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command
}

type Logs = std::sync::Arc<std::sync::Mutex<String>>;

struct Serving {
    child: Child,
    logs: Logs,
}

impl Serving {
    fn kill_9(&mut self) {
        // `Child::kill` is SIGKILL on Unix: no shutdown code runs.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn count(&self, needle: &str) -> usize {
        self.logs.lock().unwrap().matches(needle).count()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `nixflex serve` on `listen` and waits for its "Listening." log line.
fn serve_on(dir: &Path, listen: &str, configure: impl FnOnce(&mut Command)) -> Serving {
    let mut command = nixflex(dir);
    command
        .args(["serve", "--listen", listen])
        .env("NIXFLEX_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    configure(&mut command);
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let logs: Logs = Logs::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("\"Listening.\"") {
                let _ = tx.send(());
            }
            let mut text = sink.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("server did not start: {}", logs.lock().unwrap()));
    Serving { child, logs }
}

/// Runs blocking test code without stalling the emulator's tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn free_listen() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("127.0.0.1:{port}")
}

/// A small xorshift generator: random kill moments, with the seed printed to replay a run.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let seed =
            std::env::var("CAMPAIGN_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(
                || {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos() as u64
                },
            ) | 1;
        println!("CAMPAIGN_KILL_SEED={seed}");
        Self(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// The environment every node gets: the emulated carrier, fast scheduler ticks, a short
/// reconciliation delay (above the 2 s carrier timeout), quick lease takeover.
fn campaign_env<'a>(
    command: &'a mut Command,
    listen: &str,
    twilio: &str,
    master: &str,
) -> &'a mut Command {
    command
        .env("RUST_LOG", "info")
        .env("NIXFLEX_PUBLIC_URL", format!("http://{listen}"))
        .env("NIXFLEX_SIGNUP", "open")
        .env("NIXFLEX_MASTER_KEY", master)
        .env("NIXFLEX_TWILIO_API_BASE", twilio)
        .env("NIXFLEX_TWILIO_REQUEST_TIMEOUT_MS", "2000")
        .env("NIXFLEX_CAMPAIGN_RECONCILE_AFTER_MS", "6000")
        .env("NIXFLEX_CAMPAIGN_TICK_MS", "100")
        .env("NIXFLEX_CAMPAIGN_CALLS_PER_SECOND", "200")
        .env("NIXFLEX_MAX_CONCURRENT_CALLS", "40")
        .env("NIXFLEX_OUTBOUND_DIAL_RECHECK_MS", "200")
        .env("NIXFLEX_JOBS_LEASE_MS", "1500")
        .env("NIXFLEX_JOBS_POLL_MS", "50")
        .env("NIXFLEX_RATE_LIMIT_READS_PER_MINUTE", "100000")
        .env("NIXFLEX_RATE_LIMIT_WRITES_PER_MINUTE", "100000")
}

fn recipient(i: usize) -> String {
    format!("+4473860{i:05}")
}

/// What the callee of recipient `i` does, and the outcome that must be recorded for it.
fn script(i: usize) -> (Callee, &'static str) {
    match i % 10 {
        0 => (Callee::Busy, "busy"),
        1 => (Callee::NoAnswer { ring_for: Duration::from_millis(150) }, "no-answer"),
        _ => (
            Callee::HangsUp {
                ring_for: Duration::from_millis(50),
                talk_for: Duration::from_millis(150),
            },
            "completed",
        ),
    }
}

async fn json_ok(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Signs up, makes an agent with the emulated number and creates the campaign; returns the
/// bearer and the campaign id.
async fn create_campaign(base: &str, twilio: &TwilioEmulator) -> (String, String) {
    let http = reqwest::Client::new();
    let key = json_ok(http.post(format!("{base}/v1/keys")).json(&json!({}))).await;
    let bearer = format!(
        "Bearer {}:{}",
        key["key_id"].as_str().unwrap(),
        key["key_secret"].as_str().unwrap()
    );
    let agent = json_ok(
        http.post(format!("{base}/v1/agents"))
            .header("authorization", &bearer)
            .json(&json!({"name": "Reminders"})),
    )
    .await;
    let account = twilio.add_account();
    twilio.add_number(&account.sid, NUMBER);
    json_ok(http.post(format!("{base}/v1/phone-numbers")).header("authorization", &bearer).json(
        &json!({"phone_number": NUMBER, "agent_id": agent["agent_id"], "twilio_sid": account.sid,
                "twilio_token": account.auth_token}),
    ))
    .await;
    let recipients: Vec<Value> = (0..RECIPIENTS)
        .map(|i| json!({"phone": recipient(i), "variables": {"n": i.to_string()}}))
        .collect();
    let created =
        json_ok(http.post(format!("{base}/v1/calls/batch")).header("authorization", &bearer).json(
            &json!({"agent_id": agent["agent_id"], "prompt": "Remind customer {n} of the visit.",
                "recipients": recipients}),
        ))
        .await;
    assert_eq!(created["valid_count"], RECIPIENTS);
    (bearer, created["campaign_id"].as_str().unwrap().to_owned())
}

fn dials(twilio: &TwilioEmulator) -> usize {
    twilio.calls().iter().filter(|c| c.direction == "outbound-api").count()
}

/// Waits until the carrier has seen at least `n` dials.
async fn dials_reach(twilio: &TwilioEmulator, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while dials(twilio) < n {
        assert!(Instant::now() < deadline, "only {} dials, waiting for {n}", dials(twilio));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for the campaign to complete, then checks: one dial per recipient at the carrier,
/// one call per recipient in the API, and each recipient's outcome is its callee's.
async fn check_exactly_once(base: &str, bearer: &str, campaign_id: &str, twilio: &TwilioEmulator) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    let campaign = loop {
        let campaign = json_ok(
            http.get(format!("{base}/v1/calls/batch/{campaign_id}?recipients_limit=1000"))
                .header("authorization", bearer),
        )
        .await;
        if campaign["status"] == "completed" {
            break campaign;
        }
        assert!(
            Instant::now() < deadline,
            "the campaign did not complete: {} dials, counts {}",
            dials(twilio),
            campaign["counts"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(campaign["counts"]["done"], RECIPIENTS, "{}", campaign["counts"]);
    let mut per_number: HashMap<String, usize> = HashMap::new();
    for call in twilio.calls().iter().filter(|c| c.direction == "outbound-api") {
        *per_number.entry(call.to.clone()).or_default() += 1;
    }
    let doubled: Vec<_> = per_number.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubled.is_empty(), "dialled more than once: {doubled:?}");
    assert_eq!(per_number.len(), RECIPIENTS, "every recipient dialled");
    let recipients = campaign["recipients"].as_array().unwrap();
    assert_eq!(recipients.len(), RECIPIENTS);
    for r in recipients {
        let i = usize::try_from(r["row_index"].as_u64().unwrap()).unwrap();
        assert_eq!(r["phone"], recipient(i));
        assert_eq!(r["status"], "done", "{r}");
        assert_eq!(r["attempts"], 1, "{r}");
        assert_eq!(r["outcome"], script(i).1, "recipient {i}: {r}");
        assert!(r["call_id"].is_string(), "{r}");
    }
    let calls = json_ok(
        http.get(format!("{base}/v1/calls?campaign_id={campaign_id}&limit=1"))
            .header("authorization", bearer),
    )
    .await;
    assert_eq!(calls["count"], RECIPIENTS, "one call per recipient");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1000_recipient_campaign_survives_three_kill_9s_and_dials_each_recipient_once() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let twilio = TwilioEmulator::start().await.unwrap();
    for i in 0..RECIPIENTS {
        twilio.add_callee(&recipient(i), script(i).0);
    }
    let dir = tempfile::tempdir().unwrap();
    let master = "ab".repeat(32);
    let listen = free_listen();
    let twilio_base = twilio.base_url().to_owned();
    let start = || {
        blocking(|| {
            serve_on(dir.path(), &listen, |c| {
                campaign_env(c, &listen, &twilio_base, &master);
            })
        })
    };
    let mut server = start();
    let base = format!("http://{listen}");
    let (bearer, campaign_id) = create_campaign(&base, &twilio).await;

    let mut rng = Rng::seeded();
    let mut at = 0;
    let (mut requeued, mut adopted) = (0, 0);
    for _ in 0..3 {
        at += 100 + usize::try_from(rng.below(200)).unwrap();
        dials_reach(&twilio, at).await;
        tokio::time::sleep(Duration::from_millis(rng.below(150))).await;
        server.kill_9();
        requeued += server.count("never placed at the carrier");
        adopted += server.count("settled from the carrier's record");
        server = start();
    }
    check_exactly_once(&base, &bearer, &campaign_id, &twilio).await;
    requeued += server.count("never placed at the carrier");
    adopted += server.count("settled from the carrier's record");
    println!(
        "reconciled: {requeued} re-dialled after a lookup, {adopted} settled from the carrier"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_postgres_share_a_campaign_and_a_killed_node_doubles_no_dial() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = nixflex_store::testing::fresh_postgres_url().await;
    let twilio = TwilioEmulator::start().await.unwrap();
    for i in 0..RECIPIENTS {
        twilio.add_callee(&recipient(i), script(i).0);
    }
    let dir = tempfile::tempdir().unwrap();
    let master = "cd".repeat(32);
    let twilio_base = twilio.base_url().to_owned();
    let (listen_a, listen_b) = (free_listen(), free_listen());
    let node = |listen: &str, name: &str| {
        blocking(|| {
            serve_on(dir.path(), listen, |c| {
                campaign_env(c, listen, &twilio_base, &master)
                    .env("NIXFLEX_DATABASE_URL", &url)
                    .env("NIXFLEX_NODE_ID", name);
            })
        })
    };
    let mut a = node(&listen_a, "node-a");
    let b = node(&listen_b, "node-b");
    let (bearer, campaign_id) = create_campaign(&format!("http://{listen_a}"), &twilio).await;

    // Node A dies twice at random moments (and comes back once); node B carries on.
    let mut rng = Rng::seeded();
    let first = 100 + usize::try_from(rng.below(300)).unwrap();
    dials_reach(&twilio, first).await;
    tokio::time::sleep(Duration::from_millis(rng.below(150))).await;
    a.kill_9();
    a = node(&listen_a, "node-a-2");
    dials_reach(&twilio, first + 150 + usize::try_from(rng.below(300)).unwrap()).await;
    tokio::time::sleep(Duration::from_millis(rng.below(150))).await;
    a.kill_9();
    check_exactly_once(&format!("http://{listen_b}"), &bearer, &campaign_id, &twilio).await;
    assert!(b.count("Campaign calls queued.") > 0, "node B placed calls too");
}
