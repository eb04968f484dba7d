//! The `nixflex` binary as an operator uses it: admin commands, configuration layering,
//! start-up checks, secrets kept out of logs, graceful shutdown on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_nixflex");

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

fn run_ok(command: &mut Command) -> Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn doctor_config(dir: &Path, configure: impl FnOnce(&mut Command)) -> Value {
    let mut command = nixflex(dir);
    command.arg("doctor");
    configure(&mut command);
    let output = run_ok(&mut command);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    report["config"].clone()
}

type Logs = std::sync::Arc<(std::sync::Mutex<String>, std::sync::Condvar)>;

struct Serving {
    child: Child,
    addr: String,
    logs: Logs,
}

impl Serving {
    /// Waits until a log line containing `needle` has been written (no fixed sleeps).
    fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let (lock, written) = &*self.logs;
        let mut logs = lock.lock().unwrap();
        while !logs.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no log line with {needle}: {logs}");
            logs = written.wait_timeout(logs, left).unwrap().0;
        }
    }

    fn log_text(&self) -> String {
        self.logs.0.lock().unwrap().clone()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `nixflex serve` on a free port and waits for its "Listening." log line.
fn serve(dir: &Path, configure: impl FnOnce(&mut Command)) -> Serving {
    serve_on(dir, "127.0.0.1:0", configure)
}

/// [`serve`] on a given address.
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
            if let Ok(entry) = serde_json::from_str::<Value>(&line)
                && entry["fields"]["message"] == "Listening."
            {
                let _ = tx.send(entry["fields"]["addr"].as_str().unwrap_or_default().to_owned());
            }
            let (lock, written) = &*sink;
            let mut text = lock.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
            written.notify_all();
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("server did not start: {}", logs.0.lock().unwrap()));
    Serving { child, addr, logs }
}

/// A minimal HTTP/1.1 exchange over a raw socket (so a test controls when the body is sent).
fn http(addr: &str, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    read_response(&mut stream)
}

fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let status = raw.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

fn get_with_key(addr: &str, path: &str, key: &Value) -> (u16, String) {
    let auth =
        format!("{}:{}", key["key_id"].as_str().unwrap(), key["key_secret"].as_str().unwrap());
    http(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {auth}\r\nConnection: close\r\n\r\n"
        ),
    )
}

#[test]
fn keys_create_prints_a_key_the_server_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_ok(nixflex(dir.path()).args([
        "keys",
        "create",
        "--name",
        "Ops",
        "--email",
        "ops@example.com",
    ]));
    let key: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(key["key_id"].as_str().unwrap().starts_with("nxf_"));
    assert!(key["key_secret"].as_str().unwrap().starts_with("nxfs_"));
    let server = serve(dir.path(), |c| {
        c.args(["--signup", "closed"]);
    });
    assert_eq!(get_with_key(&server.addr, "/v1/agents", &key).0, 200);
    let (status, body) = http(
        &server.addr,
        "POST /v1/keys HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("signup_disabled"));
}

#[test]
fn the_data_dir_gets_a_private_master_key_and_the_database_on_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let _server = serve(dir.path(), |_| {});
    let key_file = dir.path().join("nixflex-data/master.key");
    assert!(dir.path().join("nixflex-data/nixflex.db").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().len(), 64);
}

#[test]
fn a_wrong_master_key_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(nixflex(dir.path()).args(["keys", "create"]));
    let output = nixflex(dir.path())
        .arg("doctor")
        .env("NIXFLEX_MASTER_KEY", "ab".repeat(32))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("master key does not match"), "{stderr}");
}

#[test]
fn configuration_layers_in_order_file_env_flags() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nixflex.toml"),
        "data_dir = \"from-file\"\nsignup = \"closed\"\nrate_limit_reads_per_minute = 42\n",
    )
    .unwrap();
    let config = doctor_config(dir.path(), |_| {});
    assert_eq!(config["data_dir"], "from-file");
    assert_eq!(config["signup"], "closed");
    assert_eq!(config["rate_limit_reads_per_minute"], 42);
    assert_eq!(config["rate_limit_writes_per_minute"], 120, "compiled default");

    let config = doctor_config(dir.path(), |c| {
        c.env("NIXFLEX_DATA_DIR", "from-env").env("NIXFLEX_SIGNUP", "open");
    });
    assert_eq!(config["data_dir"], "from-env");
    assert_eq!(config["signup"], "open");

    let config = doctor_config(dir.path(), |c| {
        c.env("NIXFLEX_DATA_DIR", "from-env").args(["--data-dir", "from-flag"]);
    });
    assert_eq!(config["data_dir"], "from-flag");

    // An explicit --config path wins over ./nixflex.toml.
    std::fs::write(dir.path().join("other.toml"), "data_dir = \"other\"\n").unwrap();
    let config = doctor_config(dir.path(), |c| {
        c.args(["--config", "other.toml"]);
    });
    assert_eq!(config["data_dir"], "other");
}

#[test]
fn metrics_options_come_from_the_environment_and_the_token_is_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let token = "metrics-token-from-env-0123";
    let config = doctor_config(dir.path(), |c| {
        c.env("NIXFLEX_METRICS_LISTEN", "127.0.0.1:9464").env("NIXFLEX_METRICS_TOKEN", token);
    });
    assert_eq!(config["metrics_listen"], "127.0.0.1:9464");
    assert_eq!(config["metrics_token"], "[redacted]");
    assert!(!config.to_string().contains(token));
    let config = doctor_config(dir.path(), |_| {});
    assert!(config["metrics_listen"].is_null() && config["metrics_token"].is_null(), "{config}");
    for (var, value) in
        [("NIXFLEX_METRICS_LISTEN", "not-an-address"), ("NIXFLEX_METRICS_TOKEN", "too-short")]
    {
        let output = nixflex(dir.path()).arg("doctor").env(var, value).output().unwrap();
        assert!(!output.status.success(), "{var}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
        assert!(stderr.contains(&var["NIXFLEX_".len()..].to_lowercase()), "{var}: {stderr}");
    }
}

#[test]
fn unknown_or_invalid_settings_fail_loudly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nixflex.toml"), "listne = \"127.0.0.1:1\"\n").unwrap();
    let output = nixflex(dir.path()).arg("doctor").output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("listne"));
    std::fs::remove_file(dir.path().join("nixflex.toml")).unwrap();

    for (var, value, needle) in [
        ("NIXFLEX_LISTN", "127.0.0.1:1", "listn"),
        ("NIXFLEX_SIGNUP", "maybe", "signup"),
        ("NIXFLEX_LISTEN", "not-an-address", "listen"),
        ("NIXFLEX_MASTER_KEY", "short", "master"),
        ("NIXFLEX_RATE_LIMIT_READS_PER_MINUTE", "0", "rate_limit_reads_per_minute"),
    ] {
        let output = nixflex(dir.path()).arg("doctor").env(var, value).output().unwrap();
        assert!(!output.status.success(), "{var}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
        assert!(stderr.contains(needle), "{var}: {stderr}");
    }
    let output = nixflex(dir.path()).args(["doctor", "--config", "missing.toml"]).output().unwrap();
    assert!(!output.status.success());
}

#[test]
fn secrets_never_reach_the_output_or_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let master = "cd".repeat(32);
    let output = run_ok(
        nixflex(dir.path())
            .arg("doctor")
            .env("NIXFLEX_MASTER_KEY", &master)
            .env("ANTHROPIC_API_KEY", "sk-ant-topsecret")
            .env("NIXFLEX_DATABASE_URL", format!("sqlite://{}/db.sqlite", dir.path().display())),
    );
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!printed.contains(&master) && !printed.contains("topsecret"), "{printed}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["config"]["anthropic_api_key"], "[redacted]");

    let server = serve(dir.path(), |c| {
        c.env("NIXFLEX_MASTER_KEY", &master)
            .env("ANTHROPIC_API_KEY", "sk-ant-topsecret")
            .env("RUST_LOG", "debug");
    });
    let (status, body) = http(
        &server.addr,
        "POST /v1/keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert_eq!(status, 201);
    let key: Value = serde_json::from_str(&body).unwrap();
    let secret = key["key_secret"].as_str().unwrap().to_owned();
    assert_eq!(get_with_key(&server.addr, "/v1/agents", &key).0, 200);
    server.wait_for_log("\"route\":\"/v1/agents\"");
    let logs = server.log_text();
    for needle in [&secret[..], &secret[5..], &master[..], "topsecret"] {
        assert!(!logs.contains(needle), "a secret reached the logs");
    }
    // The database holds only the hash and the sealed secret.
    let db = std::fs::read(dir.path().join("db.sqlite")).unwrap_or_default();
    let wal = std::fs::read(dir.path().join("db.sqlite-wal")).unwrap_or_default();
    let haystack = [db, wal].concat();
    assert!(!haystack.windows(secret.len()).any(|w| w == secret.as_bytes()), "plain secret stored");
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path(), |c| {
        c.env("RUST_LOG", "info,nixflex_api=debug");
    });
    // Start a sign-up whose body has not fully arrived yet.
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream
        .write_all(b"POST /v1/keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{\"name\":")
        .unwrap();
    server.wait_for_log("Request started.");
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    server.wait_for_log("Shutting down");
    stream.write_all(b"\"late\"}").unwrap();
    let (status, body) = read_response(&mut stream);
    assert_eq!(status, 201, "{body}");
    server.wait_for_log("Stopped.");
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    // New connections are refused once it has stopped.
    assert!(TcpStream::connect(&server.addr).is_err());
}

#[test]
fn migrate_and_doctor_work_on_postgres() {
    let Ok(admin) = std::env::var("NIXFLEX_TEST_POSTGRES_URL") else {
        panic!("NIXFLEX_TEST_POSTGRES_URL is not set: run ./scripts/test");
    };
    let url = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(nixflex_store::testing::fresh_postgres_url());
    let _ = admin;
    let dir = tempfile::tempdir().unwrap();
    let master = "ef".repeat(32);
    let output = run_ok(
        nixflex(dir.path())
            .args(["migrate", "--database-url", &url])
            .env("NIXFLEX_MASTER_KEY", &master),
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["database"], "postgres");
    let output = run_ok(
        nixflex(dir.path())
            .args(["keys", "create", "--database-url", &url])
            .env("NIXFLEX_MASTER_KEY", &master),
    );
    let key: Value = serde_json::from_slice(&output.stdout).unwrap();
    let server = serve(dir.path(), |c| {
        c.env("NIXFLEX_DATABASE_URL", &url).env("NIXFLEX_MASTER_KEY", &master);
    });
    assert_eq!(get_with_key(&server.addr, "/v1/agents", &key).0, 200);
    let (_, ready) =
        http(&server.addr, "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(ready.contains("postgres"));
}

/// Runs blocking test code (log waits, process waits) without stalling the emulators' tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

async fn json_ok(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_calls_the_live_call_ends_cleanly_and_new_calls_get_busy() {
    use nixflex_testkit::anthropic::{AnthropicEmulator, Reply, Timing};
    use nixflex_testkit::deepgram::DeepgramEmulator;
    use nixflex_testkit::inworld::InworldEmulator;
    use nixflex_testkit::twilio::TwilioEmulator;
    use nixflex_testkit::twilio::caller::{
        CallOutcome, CallerEmulator, CallerScript, EndedBy, PlaceCall,
    };

    const NUMBER: &str = "+14155552671";
    const REPLY: &str = "We open at nine every morning.";
    let twilio = TwilioEmulator::start().await.unwrap();
    let stt = DeepgramEmulator::start().await.unwrap();
    let llm = AnthropicEmulator::start().await.unwrap();
    let tts = InworldEmulator::start().await.unwrap();
    // The reply's first byte comes late, so SIGTERM arrives while the turn is in progress.
    llm.set_timing(Timing {
        first_byte: Duration::from_millis(800),
        chunk_interval: Duration::ZERO,
    });
    llm.push_reply(Reply::text(REPLY));
    stt.push_utterance("When do you open?");

    let dir = tempfile::tempdir().unwrap();
    let (twilio_base, llm_base, stt_base, tts_base) =
        (twilio.base_url().to_owned(), llm.base_url(), stt.base_url(), tts.base_url());
    // The carrier needs the server's public URL, so the port is chosen up front.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = blocking(|| {
        serve_on(dir.path(), &listen, |c| {
            c.env("RUST_LOG", "info")
                .env("NIXFLEX_PUBLIC_URL", format!("http://{listen}"))
                .env("NIXFLEX_SIGNUP", "open")
                .env("NIXFLEX_ALLOW_PRIVATE_TARGETS", "true")
                .env("NIXFLEX_DRAIN_TIMEOUT_MS", "5000")
                .env("NIXFLEX_TWILIO_API_BASE", &twilio_base)
                .env("NIXFLEX_TWILIO_REQUEST_TIMEOUT_MS", "2000")
                .env("NIXFLEX_LLM_PROVIDER", "anthropic")
                .env("NIXFLEX_ANTHROPIC_BASE_URL", &llm_base)
                .env("NIXFLEX_ANTHROPIC_API_KEY", "sk-ant-test")
                .env("NIXFLEX_STT_PROVIDER", "deepgram")
                .env("NIXFLEX_DEEPGRAM_URL", &stt_base)
                .env("NIXFLEX_DEEPGRAM_API_KEY", "dg-test-key")
                .env("NIXFLEX_TTS_PROVIDER", "inworld")
                .env("NIXFLEX_INWORLD_URL", &tts_base)
                .env("NIXFLEX_INWORLD_API_KEY", "aW53b3JsZDp0ZXN0");
        })
    });
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let key = json_ok(
        http.post(format!("{base}/v1/keys"))
            .json(&serde_json::json!({"name": "Drain Co", "email": "drain@example.com"})),
    )
    .await;
    let bearer = format!(
        "Bearer {}:{}",
        key["key_id"].as_str().unwrap(),
        key["key_secret"].as_str().unwrap()
    );
    let agent = json_ok(
        http.post(format!("{base}/v1/agents"))
            .header("authorization", &bearer)
            .json(&serde_json::json!({"name": "Drain agent", "welcome_message": "Hello, thanks for calling.", "response_eagerness": 200})),
    )
    .await;
    let account = twilio.add_account();
    twilio.add_number(&account.sid, NUMBER);
    json_ok(http.post(format!("{base}/v1/phone-numbers")).header("authorization", &bearer).json(
        &serde_json::json!({"phone_number": NUMBER, "agent_id": agent["agent_id"], "twilio_sid": account.sid, "twilio_token": account.auth_token}),
    ))
    .await;
    let place = |from: &str| {
        PlaceCall::new(
            format!("{base}/twilio/voice"),
            &account.sid,
            &account.auth_token,
            from,
            NUMBER,
        )
    };
    let caller = CallerEmulator::new().unwrap();
    let secs = Duration::from_secs_f64;
    // The caller asks one thing, then stays on the line without a word.
    let script = CallerScript::new()
        .wait_for_agent_speech(secs(10.0))
        .wait_for_agent_silence(secs(0.6), secs(15.0))
        .say("When do you open?", secs(1.2))
        .wait_for_agent_speech(secs(15.0))
        .wait_for_agent_silence(secs(0.6), secs(15.0))
        .silence(secs(60.0));
    let live = caller.start_inbound_call(place("+447386172392"), script);

    // SIGTERM once the caller's question has reached the LLM (the agent's turn is under way).
    let deadline = Instant::now() + Duration::from_secs(20);
    while llm.requests().is_empty() {
        assert!(Instant::now() < deadline, "the caller's turn never reached the LLM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    blocking(|| server.wait_for_log("Shutdown requested"));

    // A call arriving during the drain hears busy.
    let refused = caller
        .place_inbound_call(place("+447386000002"), CallerScript::new().silence(secs(1.0)))
        .await;
    assert_eq!(refused.outcome, CallOutcome::Rejected { reason: "busy".to_owned() });

    // The live call finishes its turn, then hears a goodbye when the drain time is over.
    let recording = live.finish().await.unwrap();
    assert_eq!(
        recording.outcome,
        CallOutcome::Completed { ended_by: EndedBy::Server },
        "{:?}",
        recording.events
    );
    assert_eq!(recording.agent_utterances().len(), 3, "greeting, the answer, the goodbye");
    blocking(|| server.wait_for_log("Stopped."));
    let exit = blocking(|| server.child.wait().unwrap());
    assert!(exit.success(), "{exit:?}");
    drop(server);

    // The records, read back after a restart: both complete.
    let server = blocking(|| {
        serve(dir.path(), |c| {
            c.env("RUST_LOG", "info");
        })
    });
    let base = format!("http://{}", server.addr);
    let list = json_ok(http.get(format!("{base}/v1/calls")).header("authorization", &bearer)).await;
    let mut calls = Vec::new();
    for summary in list["calls"].as_array().unwrap() {
        let id = summary["call_id"].as_str().unwrap();
        calls.push(
            json_ok(http.get(format!("{base}/v1/calls/{id}")).header("authorization", &bearer))
                .await,
        );
    }
    assert_eq!(calls.len(), 2, "{calls:?}");
    let busy = calls.iter().find(|c| c["call_status"] == "busy").expect("the refused call");
    assert_eq!(busy["ended_reason"], "server_draining");
    let ended = calls.iter().find(|c| c["call_status"] == "completed").expect("the live call");
    assert_eq!(ended["ended_reason"], "server_shutdown");
    assert!(ended["ended_at"].is_string() && ended["duration_seconds"].is_number(), "{ended}");
    let transcript: Vec<(&str, &str)> = ended["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["role"].as_str().unwrap(), e["text"].as_str().unwrap()))
        .collect();
    assert_eq!(transcript.len(), 4, "{transcript:?}");
    assert_eq!(transcript[1], ("caller", "When do you open?"));
    assert_eq!(transcript[2], ("agent", REPLY), "the turn in progress was completed");
    assert!(transcript[3].1.contains("end this call now"), "{transcript:?}");
    drop(tts);
}

/// The pause between two checks of a deadline-bounded poll, in a plain `#[test]` (its thread is
/// not a runtime worker, so blocking it stalls nothing).
#[allow(clippy::disallowed_methods)]
fn poll_pause(pause: Duration) {
    std::thread::sleep(pause);
}

/// Lines of a command's stdout, each a JSON object.
fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn jobs_list_shows_dead_jobs_and_retry_queues_them_again() {
    use nixflex_store::NewJob;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap().to_owned();
    run_ok(nixflex(dir.path()).args(["migrate", "--data-dir", &data_arg]));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = format!("sqlite://{}", data.join("nixflex.db").display());
    let (dead, queued) = runtime.block_on(async {
        let store = nixflex_store::open(&url, 2).await.unwrap();
        let dead = NewJob::new(
            "call.ended",
            "call_1",
            serde_json::json!({"call_id": "call_1", "account_id": "acct_1"}),
            1,
        );
        let queued = NewJob::new("noop", "later", serde_json::json!({}), 3);
        store.enqueue_job(&dead).await.unwrap();
        let now = nixflex_store::now();
        let claimed =
            store.claim_jobs("node-x", 1, now + chrono::Duration::seconds(30), now).await.unwrap();
        assert_eq!(claimed[0].job_id, dead.job_id);
        store.fail_job(&claimed[0].lease(), "customer endpoint down", None, now).await.unwrap();
        store.enqueue_job(&queued).await.unwrap();
        (dead.job_id, queued.job_id)
    });
    let list = |args: &[&str]| {
        let mut command = nixflex(dir.path());
        command.args(["jobs", "list", "--data-dir", &data_arg]).args(args);
        json_lines(&run_ok(&mut command))
    };
    let listed = list(&["--state", "dead"]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["job_id"], dead.as_str());
    assert_eq!(listed[0]["state"], "dead");
    assert_eq!(listed[0]["kind"], "call.ended");
    assert_eq!(listed[0]["attempts"], 1);
    assert_eq!(listed[0]["last_error"], "customer endpoint down");
    assert_eq!(list(&[]).len(), 2);
    assert_eq!(list(&["--kind", "noop"])[0]["job_id"], queued.as_str());
    assert_eq!(list(&["--limit", "1"]).len(), 1);
    for (args, message) in [
        (vec!["list", "--state", "sleeping"], "expected queued, running, done or dead"),
        (vec!["list", "--limit", "0"], "--limit must be between 1 and 1000"),
        (vec!["retry", queued.as_str()], "only dead jobs can be retried"),
        (vec!["retry", "job_missing"], "no job job_missing"),
    ] {
        let output = nixflex(dir.path())
            .arg("jobs")
            .args(&args)
            .args(["--data-dir", &data_arg])
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    let retried =
        run_ok(nixflex(dir.path()).args(["jobs", "retry", &dead, "--data-dir", &data_arg]));
    let retried = &json_lines(&retried)[0];
    assert_eq!(
        (retried["state"].as_str(), retried["attempts"].as_i64()),
        (Some("queued"), Some(0))
    );
    assert!(list(&["--state", "dead"]).is_empty());
    // A server on this database runs it now.
    let _server = serve(dir.path(), |c| {
        c.args(["--data-dir", &data_arg]).env("NIXFLEX_JOBS_POLL_MS", "50");
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while list(&["--state", "done", "--kind", "call.ended"]).is_empty() {
        assert!(Instant::now() < deadline, "the retried job did not run: {:?}", list(&[]));
        poll_pause(Duration::from_millis(50));
    }
}

/// How many times each node logged running `job_id` to completion.
fn runs_of(logs: &str, job_id: &str) -> usize {
    logs.lines().filter(|l| l.contains("\"Job done.\"") && l.contains(job_id)).count()
}

#[test]
fn two_nodes_on_one_postgres_share_the_queue_and_take_over_a_killed_nodes_job() {
    use nixflex_store::{JobState, NewJob};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = runtime.block_on(nixflex_store::testing::fresh_postgres_url());
    let store = runtime.block_on(nixflex_store::open(&url, 2)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let master = "cd".repeat(32);
    let node = |name: &str| {
        serve(dir.path(), |c| {
            c.env("NIXFLEX_DATABASE_URL", &url)
                .env("NIXFLEX_MASTER_KEY", &master)
                .env("NIXFLEX_NODE_ID", name)
                .env("NIXFLEX_JOBS_POLL_MS", "50")
                .env("NIXFLEX_JOBS_LEASE_MS", "1000")
                .env("NIXFLEX_LOG_LEVEL", "info,nixflex_jobs=debug");
        })
    };
    let mut nodes = [node("node-a"), node("node-b")];
    let wait_until = |what: &str, check: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            poll_pause(Duration::from_millis(25));
        }
    };
    // Shared queue: 200 short jobs, each run exactly once, by both nodes between them.
    let jobs: Vec<NewJob> = (0..200)
        .map(|i| NewJob::new("noop", &format!("share-{i}"), serde_json::json!({"sleep_ms": 10}), 3))
        .collect();
    runtime.block_on(async {
        for job in &jobs {
            store.enqueue_job(job).await.unwrap();
        }
    });
    wait_until("all 200 jobs done", &|| runtime.block_on(store.job_counts()).unwrap().done == 200);
    let mut owners = std::collections::HashSet::new();
    for job in &jobs {
        let stored = runtime.block_on(store.get_job(&job.job_id)).unwrap().unwrap();
        assert_eq!((stored.state, stored.attempts), (JobState::Done, 1), "{stored:?}");
        owners.insert(stored.lease_owner.unwrap());
    }
    assert_eq!(owners.len(), 2, "both nodes took jobs: {owners:?}");
    // Logged runs are written after the outcome; wait for the last before counting.
    let last = &jobs[199].job_id;
    wait_until("the last run logged", &|| {
        nodes.iter().map(|n| runs_of(&n.log_text(), last)).sum::<usize>() == 1
    });
    let logs: Vec<String> = nodes.iter().map(Serving::log_text).collect();
    for job in &jobs {
        let runs: usize = logs.iter().map(|l| runs_of(l, &job.job_id)).sum();
        assert_eq!(runs, 1, "{} ran {runs} times", job.job_id);
    }
    // A node dies (SIGKILL) holding a job's lease: the other takes it once the lease lapses.
    let slow = NewJob::new("noop", "slow", serde_json::json!({"sleep_ms": 3000}), 3);
    runtime.block_on(store.enqueue_job(&slow)).unwrap();
    let running = || runtime.block_on(store.get_job(&slow.job_id)).unwrap().unwrap();
    wait_until("the slow job leased", &|| running().state == JobState::Running);
    let holder = running().lease_owner.unwrap();
    let (dead, survivor) = if holder == "node-a" { (0, "node-b") } else { (1, "node-a") };
    nodes[dead].child.kill().unwrap();
    nodes[dead].child.wait().unwrap();
    wait_until("the slow job done", &|| running().state == JobState::Done);
    let done = running();
    assert_eq!(done.attempts, 2, "one attempt on the killed node, one on the survivor");
    assert_eq!(done.lease_owner.as_deref(), Some(survivor));
    wait_until("the survivor logged the run", &|| {
        runs_of(&nodes[1 - dead].log_text(), &slow.job_id) == 1
    });
}

/// A call's end and its follow-up are one transaction, and every delivery is a durable job: a
/// server killed with SIGKILL while the receiver is down delivers the `call.completed` event after
/// its restart, and each URL accepts it exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_survives_kill_9_and_each_url_accepts_it_once() {
    use nixflex_core::call::{CallRecord, CallStatus, Direction, EndedReason};
    use nixflex_store::{CallUpdate, JobFilter, JobState, NewJob, Page};
    use nixflex_testkit::webhook::WebhookReceiver;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let receiver = WebhookReceiver::start().await.unwrap();
    receiver.answer_with(&[503; 1000]);
    let dir = tempfile::tempdir().unwrap();
    let master = "ab".repeat(32);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let start = |dir: &Path| {
        serve_on(dir, &listen, |c| {
            c.env("RUST_LOG", "info")
                .env("NIXFLEX_MASTER_KEY", &master)
                .env("NIXFLEX_ALLOW_PRIVATE_TARGETS", "true")
                .env("NIXFLEX_WEBHOOK_RETRY_DELAYS_MS", "[100]")
                .env("NIXFLEX_WEBHOOK_MAX_ATTEMPTS", "100")
                .env("NIXFLEX_JOBS_LEASE_MS", "1000")
                .env("NIXFLEX_JOBS_POLL_MS", "100");
        })
    };
    let mut server = blocking(|| start(dir.path()));
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let key = json_ok(http.post(format!("{base}/v1/keys")).json(&serde_json::json!({}))).await;
    let bearer = format!(
        "Bearer {}:{}",
        key["key_id"].as_str().unwrap(),
        key["key_secret"].as_str().unwrap()
    );
    let agent = json_ok(
        http.post(format!("{base}/v1/agents"))
            .header("authorization", &bearer)
            .json(&serde_json::json!({"name": "Desk", "webhook_url": receiver.url("/crm")})),
    )
    .await;

    // A short call (no analysis) ends the way the engine ends one: its final update and its
    // follow-up in one transaction, written here into the server's own database.
    let secrets = nixflex_core::crypto::SecretBox::from_encoded(&master).unwrap();
    let config = nixflex::config::Config {
        data_dir: dir.path().join("nixflex-data"),
        master_key: Some(secrecy::SecretString::from(master.clone())),
        ..nixflex::config::Config::default()
    };
    let store = nixflex::server::open_store(&config, &secrets).await.unwrap();
    let now = nixflex_store::now();
    let call = CallRecord {
        call_id: nixflex_core::ids::new_call_id(),
        account_id: key["account_id"].as_str().unwrap().into(),
        agent_id: Some(agent["agent_id"].as_str().unwrap().into()),
        direction: Direction::Inbound,
        from_number: "+447386172392".to_owned(),
        to_number: "+14155552671".to_owned(),
        twilio_call_sid: Some(format!("CA{}", "d".repeat(32))),
        call_status: CallStatus::InProgress,
        ended_reason: None,
        started_at: now,
        answered_at: Some(now),
        ended_at: None,
        duration_seconds: None,
        transcript: Vec::new(),
        turns: Vec::new(),
        avg_latency_ms: None,
        recording: None,
        call_summary: None,
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
    store.insert_call(&call).await.unwrap();
    let end = CallUpdate {
        call_status: Some(CallStatus::Completed),
        ended_reason: Some(EndedReason::Completed),
        ended_at: Some(nixflex_store::now()),
        duration_seconds: Some(3),
        ..CallUpdate::default()
    };
    let follow_up = NewJob::call_follow_up(
        nixflex_store::CALL_ENDED,
        call.call_id.as_str(),
        call.account_id.as_str(),
        8,
    );
    assert!(store.finish_call(&call.call_id, &end, now, &[follow_up]).await.unwrap());

    // The receiver is down: wait for a retry, then kill the server mid-way.
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.received().len() < 2 {
        assert!(Instant::now() < deadline, "no delivery attempt reached the receiver");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        Command::new("kill")
            .args(["-KILL", &server.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let _ = server.child.wait();
    let failed_before = receiver.received().len();

    // Back up, the receiver accepts; the restarted server finishes the delivery.
    receiver.answer_ok_from_now_on();
    server = blocking(|| start(dir.path()));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending = store
            .list_jobs(
                &JobFilter { state: None, kind: Some("webhook.deliver".to_owned()) },
                Page { limit: 10, offset: 0 },
            )
            .await
            .unwrap();
        let done = !pending.is_empty() && pending.iter().all(|j| j.state == JobState::Done);
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "the delivery never finished: {pending:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = receiver.received();
    assert!(received.len() > failed_before, "delivered after the restart");
    // A request the killed server had already sent may land late; what counts is what the
    // receiver accepted.
    let accepted: Vec<_> = received.iter().filter(|r| r.status == 200).collect();
    assert_eq!(accepted.len(), 1, "accepted exactly once");
    assert_eq!(accepted[0].json()["event"], "call.completed");
    assert_eq!(accepted[0].json()["call_id"], call.call_id.as_str());
    let event_ids: std::collections::HashSet<_> =
        received.iter().filter_map(|r| r.header("x-nixflex-event-id")).collect();
    assert_eq!(event_ids.len(), 1, "every attempt is the same event");
    let attempts = store.webhook_deliveries(&call.call_id).await.unwrap();
    assert_eq!(attempts.iter().filter(|a| a.delivered).count(), 1);
    let _ = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status();
    let _ = server.child.wait();
}
