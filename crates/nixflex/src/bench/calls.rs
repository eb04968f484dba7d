//! `nixflex bench calls`: N concurrent emulated inbound calls against a separate `nixflex serve`
//! process whose providers are emulated with fixed delays.
//!
//! The bench process runs the emulators (Twilio REST, Deepgram, Anthropic, Inworld) and the
//! Twilio caller emulator; the server is this executable started as a child (`serve`) in a
//! temporary data directory, pointed at the emulators. Each call waits for the greeting, then
//! speaks `--turns` times (a tone the Deepgram emulator "hears" as the next scripted utterance),
//! each time waiting for the agent's two-sentence reply; the last reply ends with `[END_CALL]`,
//! so the server hangs up.
//!
//! What is measured, per run:
//! - caller side: from the end of the caller's speech (its last voiced frame sent) to the first
//!   agent audio frame received, minus the fixed floor the emulated call cannot beat —
//!   `max(response_eagerness, VAD hangover)` + LLM time to first byte + TTS time to first byte —
//!   = the *engine-added* latency. It includes everything the engine does in between (VAD,
//!   Deepgram round trip, HTTP to the LLM and TTS, chunking, resampling, μ-law, pacing) and the
//!   emulators' own processing, which share the machine;
//! - server side: the per-turn breakdown the server stores (`GET /v1/calls/{id}` → `latency[]`);
//! - agent audio pacing as received by the caller, against an ideal 20 ms grid, and underruns
//!   (gaps inside agent utterances);
//! - the server process's CPU seconds and peak RSS (from `/proc`).
//!
//! With `--outbound` the calls go the other way: each is placed with `POST /v1/calls/outbound`,
//! waits in the capacity queue for its `call.dial` job, is created at the Twilio emulator and
//! answered there by a scripted callee (the caller emulator on the callee's side), who says
//! hello first; the agent's opener is the reply to that hello. Added figures: queue → dial (the
//! API request sent → the emulator accepted the `Calls.json` create) and answer → first word
//! (the callee's media stream open → the agent's first frame received).
//!
//! Numbers go in notes and docs, never into timed tests.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use nixflex_testkit::anthropic::{AnthropicEmulator, Reply, Timing};
use nixflex_testkit::deepgram::DeepgramEmulator;
use nixflex_testkit::inworld::InworldEmulator;
use nixflex_testkit::twilio::caller::{
    CallEventKind, CallOutcome, CallRecording, CallerConfig, CallerEmulator, CallerScript, EndedBy,
    PlaceCall, UTTERANCE_GAP, WebhookPurpose,
};
use nixflex_testkit::twilio::{Callee, CalleeRun, TwilioEmulator};
use nixflex_testkit::webhook::{Received, WebhookReceiver};
use serde_json::{Value, json};

use crate::config::Config;

/// The business number every call dials (one number takes any number of concurrent calls).
const NUMBER: &str = "+14155552671";
/// What the agent says first.
const GREETING: &str = "Hello, thanks for calling the bench line.";
/// The agent's reply to every caller turn but the last.
const REPLY: &str = "Got it, thank you. Is there anything else I can do?";
/// The agent's reply to the last caller turn.
const GOODBYE: &str = "You're welcome. Goodbye! [END_CALL]";
/// How the Deepgram emulator transcribes every caller utterance (followed by a number).
const UTTERANCE_PREFIX: &str = "This is caller utterance number";
/// What an outbound call is for (`prompt`).
const PURPOSE: &str = "Remind the customer of their appointment tomorrow at 10 a.m.";
/// One μ-law media frame: 20 ms at 8 kHz.
const FRAME_BYTES: usize = 160;
const FRAME: Duration = Duration::from_millis(20);
/// The server sends the first frames of an utterance at once (its pacer keeps 60 ms ahead);
/// they are not compared with the grid.
const LEAD_FRAMES: usize = 3;

/// Arguments of `nixflex bench calls`.
#[derive(Debug, Clone, Args)]
pub struct CallsBenchArgs {
    /// Concurrent calls (one run; ignored with --sweep).
    #[arg(long, default_value_t = 10)]
    pub calls: usize,
    /// Caller turns per call (after the greeting); the agent ends the call after the last one.
    #[arg(long, default_value_t = 3)]
    pub turns: usize,
    /// Run several call counts in sequence, a fresh server each, e.g. 10,50,100,200,500,1000.
    #[arg(long, value_delimiter = ',')]
    pub sweep: Vec<usize>,
    /// Emulated LLM time to first byte, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub llm_ttfb_ms: u64,
    /// Emulated TTS time to first byte, in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub tts_ttfb_ms: u64,
    /// Stagger the call starts evenly over this window, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub ramp_ms: u64,
    /// The agent's `response_eagerness` (silence that ends the caller's turn), in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub eagerness_ms: u16,
    /// How long the caller speaks each turn, in milliseconds.
    #[arg(long, default_value_t = 1200)]
    pub say_ms: u64,
    /// The server executable (default: this one).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Keep each run's data directory and server log (their paths are printed).
    #[arg(long)]
    pub keep: bool,
    /// Stop a sweep once more than this fraction of a run's calls failed.
    #[arg(long, default_value_t = 0.5)]
    pub stop_failure_ratio: f64,
    /// How the benchmark's agent records its calls: `off` (`record_call: false`), `provider`
    /// (the agent's defaults: the carrier records) or `nixflex` (the engine records each call
    /// itself and stores a WAV in the server's recordings directory).
    #[arg(long, value_enum, default_value_t = BenchRecording::Provider)]
    pub recording: BenchRecording,
    /// Place outbound calls (`POST /v1/calls/outbound`, dialled through the capacity queue and
    /// answered by scripted callees) instead of receiving inbound ones.
    #[arg(long)]
    pub outbound: bool,
    /// Arrival-rate mode: start the calls at this many per second (evenly spaced), instead of
    /// spreading them over `--ramp-ms`; `--calls 6000 --rate 100` is 100 new calls a second
    /// for 60 s. Concurrency is then the rate times a call's length.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Run the server on these CPUs only (`taskset -c` syntax, e.g. `0`); run the bench itself
    /// under `taskset -c 1` to keep the load generator on the other core.
    #[arg(long)]
    pub server_cpus: Option<String>,
    /// The server's log filter (a tracing filter such as `warn,sqlx::query=debug`, for a
    /// diagnosis); its log is kept with `--keep`.
    #[arg(long, default_value = "warn")]
    pub server_log: String,
}

/// `--recording`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchRecording {
    /// `record_call: false`.
    Off,
    /// `record_call: true`, `recording_source: provider` (the agent defaults).
    Provider,
    /// `record_call: true`, `recording_source: nixflex`.
    Nixflex,
}

impl BenchRecording {
    fn agent_fields(self) -> Value {
        match self {
            Self::Off => json!({"record_call": false}),
            Self::Provider => json!({"record_call": true, "recording_source": "provider"}),
            Self::Nixflex => json!({"record_call": true, "recording_source": "nixflex"}),
        }
    }
}

/// Runs the benchmark and prints the report.
///
/// # Errors
/// When the emulators or the server cannot be started or set up.
#[allow(clippy::print_stdout)]
pub async fn run(_config: &Config, args: CallsBenchArgs) -> anyhow::Result<()> {
    if args.turns == 0 {
        bail!("--turns must be at least 1");
    }
    let counts = if args.sweep.is_empty() { vec![args.calls] } else { args.sweep.clone() };
    if counts.contains(&0) {
        bail!("call counts must be at least 1");
    }
    let clk_tck = clock_ticks_per_second();
    let mut summaries = Vec::new();
    for &n in &counts {
        let report = Box::pin(run_once(&args, n, clk_tck)).await?;
        report.print();
        let collapsed = report.failed() as f64 > args.stop_failure_ratio * n as f64;
        summaries.push(report);
        if collapsed && counts.len() > 1 {
            println!(
                "\nstopping the sweep: more than {:.0}% of the calls failed at N={n}",
                args.stop_failure_ratio * 100.0
            );
            break;
        }
    }
    print_summary(&summaries);
    Ok(())
}

/// The settings every run shares.
#[derive(Debug, Clone, Copy)]
struct Plan {
    turns: usize,
    llm_ttfb: Duration,
    tts_ttfb: Duration,
    eagerness: Duration,
    say: Duration,
    ramp: Duration,
    recording: BenchRecording,
    outbound: bool,
    rate: Option<f64>,
}

impl Plan {
    fn new(args: &CallsBenchArgs) -> Self {
        Self {
            turns: args.turns,
            llm_ttfb: Duration::from_millis(args.llm_ttfb_ms),
            tts_ttfb: Duration::from_millis(args.tts_ttfb_ms),
            eagerness: Duration::from_millis(u64::from(args.eagerness_ms)),
            say: Duration::from_millis(args.say_ms),
            ramp: Duration::from_millis(args.ramp_ms),
            recording: args.recording,
            outbound: args.outbound,
            rate: args.rate,
        }
    }

    /// When the call at `index` of `n` starts, after the first: evenly over the ramp, or one
    /// every `1 / rate` seconds in arrival-rate mode.
    fn start_offset(&self, index: usize, n: usize) -> Duration {
        match self.rate {
            Some(rate) => Duration::from_secs_f64(index as f64 / rate),
            None => self.ramp.mul_f64(index as f64 / n as f64),
        }
    }

    /// What no engine can beat here: the turn ends `max(eagerness, VAD hangover)` after the
    /// caller's last voiced audio (the Deepgram emulator's endpointing equals the eagerness, so
    /// its final result is due at the same audio time), then the emulated LLM and TTS delays.
    fn floor(&self) -> Duration {
        let hangover = nixflex_engine::vad::VadConfig::default().hangover;
        self.eagerness.max(hangover) + self.llm_ttfb + self.tts_ttfb
    }

    /// What each caller (inbound) or callee (outbound) does. An inbound caller waits for the
    /// greeting first; a callee picks up and says hello (turn 1), which the agent's opener
    /// answers.
    fn script(&self) -> CallerScript {
        let mut script = CallerScript::new();
        if !self.outbound {
            script = script
                .wait_for_agent_speech(Duration::from_secs(30))
                .wait_for_agent_silence(Duration::from_millis(600), Duration::from_secs(60));
        }
        for turn in 1..=self.turns {
            script = script.say(&turn_label(turn), self.say);
            if turn < self.turns {
                script = script
                    .wait_for_agent_speech(Duration::from_secs(30))
                    .wait_for_agent_silence(Duration::from_millis(600), Duration::from_secs(60));
            }
            // After the last turn the caller stays on the line until the agent hangs up.
        }
        script
    }

    /// Generous upper bound of one call's length, after which the caller hangs up.
    fn max_call(&self) -> Duration {
        let turns = u32::try_from(self.turns).unwrap_or(u32::MAX);
        Duration::from_secs(60) + (self.say + Duration::from_secs(10)) * turns
    }
}

fn turn_label(turn: usize) -> String {
    format!("turn {turn}")
}

/// The LLM's answer: the analysis when asked for it, else a two-sentence reply, and the goodbye
/// with `[END_CALL]` once the caller has spoken `turns` times (counted as the Deepgram
/// emulator's transcripts in user messages — an outbound callee's hello shares its message with
/// the engine's opener note, so messages themselves are not counted).
fn reply_for(body: &Value, turns: usize) -> Reply {
    // The post-call analysis asks for one forced tool call.
    if body["tool_choice"]["name"] == "record_call_analysis" {
        return Reply::tool_call(
            "record_call_analysis",
            json!({
                "call_summary": "The caller asked three questions and the agent answered them.",
                "caller_sentiment": "neutral",
                "call_successful": true,
                "extracted_data": {},
                "caller_name": null,
                "call_reason": "questions",
            }),
        );
    }
    let caller_turns = body["messages"].as_array().map_or(0, |messages| {
        messages
            .iter()
            .filter(|message| message["role"] == "user")
            .map(|message| message_text(&message["content"]).matches(UTTERANCE_PREFIX).count())
            .sum::<usize>()
    });
    Reply::text(if caller_turns >= turns { GOODBYE } else { REPLY })
}

fn message_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts.iter().filter_map(|part| part["text"].as_str()).collect(),
        _ => String::new(),
    }
}

/// The emulated providers of one run.
struct Emulators {
    twilio: TwilioEmulator,
    stt: DeepgramEmulator,
    llm: AnthropicEmulator,
    tts: InworldEmulator,
}

impl Emulators {
    async fn start(plan: Plan, calls: usize) -> anyhow::Result<Self> {
        let twilio = TwilioEmulator::start().await.context("starting the Twilio emulator")?;
        let stt = DeepgramEmulator::start().await.context("starting the Deepgram emulator")?;
        let llm = AnthropicEmulator::start().await.context("starting the Anthropic emulator")?;
        let tts = InworldEmulator::start().await.context("starting the Inworld emulator")?;
        llm.set_timing(Timing { first_byte: plan.llm_ttfb, chunk_interval: Duration::ZERO });
        tts.set_timing(Timing { first_byte: plan.tts_ttfb, chunk_interval: Duration::ZERO });
        let turns = plan.turns;
        llm.set_responder(move |body| reply_for(body, turns));
        // The emulator's utterance queue is shared by every connection, in detection order, and
        // an utterance detected with the queue empty is transcribed as "" (which never ends a
        // turn). Every call says `turns` things; the rest is a margin.
        for index in 0..calls * (plan.turns + 2) {
            stt.push_utterance(format!("{UTTERANCE_PREFIX} {index}."));
        }
        Ok(Self { twilio, stt, llm, tts })
    }
}

/// `nixflex serve` as a child process; killed when dropped.
struct ServerProcess {
    child: Child,
    base: String,
    data_dir: Option<tempfile::TempDir>,
    log_path: PathBuf,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    fn spawn(args: &CallsBenchArgs, emulators: &Emulators, calls: usize) -> anyhow::Result<Self> {
        let exe = match &args.server_bin {
            Some(path) => path.clone(),
            None => std::env::current_exe().context("locating this executable")?,
        };
        let data_dir = tempfile::Builder::new()
            .prefix("nixflex-bench-calls-")
            .tempdir()
            .context("creating the data directory")?;
        let port = free_port()?;
        let base = format!("http://127.0.0.1:{port}");
        let log_path = data_dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).context("creating the server log")?;
        let high = "1000000000";
        // A fixed key: no "generated a new master key" warning in the log.
        let master_key: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        let cap = (calls + 10).to_string();
        let mut command = match &args.server_cpus {
            Some(cpus) => {
                let mut command = Command::new("taskset");
                command.arg("-c").arg(cpus).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        command.arg("serve").current_dir(data_dir.path());
        // Nothing of the bench's own configuration leaks into the server's.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("NIXFLEX_")
                || ["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "DEEPGRAM_API_KEY", "INWORLD_API_KEY"]
                    .contains(&name.as_ref())
            {
                command.env_remove(name.as_ref());
            }
        }
        let server_log = &args.server_log;
        command
            .env("RUST_LOG", server_log)
            .env("NIXFLEX_LOG_LEVEL", server_log)
            .env("NIXFLEX_LISTEN", format!("127.0.0.1:{port}"))
            .env("NIXFLEX_PUBLIC_URL", &base)
            .env("NIXFLEX_DATA_DIR", data_dir.path())
            .env("NIXFLEX_MASTER_KEY", master_key)
            .env("NIXFLEX_SIGNUP", "open")
            .env("NIXFLEX_ALLOW_PRIVATE_TARGETS", "true")
            .env("NIXFLEX_MAX_CONCURRENT_CALLS", &cap)
            .env("NIXFLEX_RATE_LIMIT_READS_PER_MINUTE", high)
            .env("NIXFLEX_RATE_LIMIT_WRITES_PER_MINUTE", high)
            .env("NIXFLEX_RATE_LIMIT_ANONYMOUS_PER_MINUTE", high)
            .env("NIXFLEX_TWILIO_API_BASE", emulators.twilio.base_url())
            .env("NIXFLEX_TWILIO_REQUEST_TIMEOUT_MS", "5000")
            .env("NIXFLEX_LLM_PROVIDER", "anthropic")
            .env("NIXFLEX_ANTHROPIC_BASE_URL", emulators.llm.base_url())
            .env("NIXFLEX_ANTHROPIC_API_KEY", "sk-ant-bench")
            .env("NIXFLEX_STT_PROVIDER", "deepgram")
            .env("NIXFLEX_DEEPGRAM_URL", emulators.stt.base_url())
            .env("NIXFLEX_DEEPGRAM_API_KEY", "dg-bench-key")
            .env("NIXFLEX_TTS_PROVIDER", "inworld")
            .env("NIXFLEX_INWORLD_URL", emulators.tts.base_url())
            .env("NIXFLEX_INWORLD_API_KEY", "aW53b3JsZDpiZW5jaA==")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let child = command.spawn().context("starting `nixflex serve`")?;
        let data_dir = if args.keep {
            let _ = data_dir.keep();
            None
        } else {
            Some(data_dir)
        };
        Ok(Self { child, base, data_dir, log_path })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// WAV files under the server's recordings directory and their total size.
    fn recording_files(&self) -> (usize, u64) {
        fn walk(dir: &std::path::Path, found: &mut (usize, u64)) {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, found);
                } else if let Ok(meta) = entry.metadata() {
                    found.0 += 1;
                    found.1 += meta.len();
                }
            }
        }
        let mut found = (0, 0);
        if let Some(dir) = &self.data_dir {
            walk(&dir.path().join("recordings"), &mut found);
        }
        found
    }

    async fn wait_ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the server exited ({status}) before it was ready; its log:\n{}",
                    self.log_tail(20)
                );
            }
            let ready = http
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the server was not ready within 60 s; its log:\n{}", self.log_tail(20));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Warning and error lines of the server log: (count, first few).
    fn log_problems(&self, keep: usize) -> (usize, Vec<String>) {
        let Ok(file) = std::fs::File::open(&self.log_path) else {
            return (0, Vec::new());
        };
        let mut count = 0;
        let mut first = Vec::new();
        for line in BufReader::new(file).lines().map_while(Result::ok) {
            if line.contains("WARN") || line.contains("ERROR") {
                count += 1;
                if first.len() < keep {
                    first.push(strip_ansi(&line).chars().take(400).collect());
                }
            }
        }
        (count, first)
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// `text` without terminal colour codes (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// CPU time and memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
struct ProcSample {
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    /// Resident set size now (VmRSS), KiB.
    rss_kib: u64,
    /// Peak resident set size (VmHWM), KiB.
    hwm_kib: u64,
}

fn proc_sample(pid: &str) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 (state) on.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some(ProcSample { cpu_ticks: utime + stime, rss_kib: kib("VmRSS:"), hwm_kib: kib("VmHWM:") })
}

/// Busy clock ticks of the whole machine (all CPUs) since boot, from `/proc/stat`.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let at = |index: usize| fields.get(index).copied().unwrap_or(0);
    Some(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

/// The machine's CPUs as `/proc/stat` counts them (not this process's affinity: the bench may
/// be pinned with `taskset` while the machine-wide busy time covers every CPU).
fn machine_cores() -> usize {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .map(|stat| {
            stat.lines()
                .filter(|line| {
                    line.strip_prefix("cpu")
                        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
                })
                .count()
        })
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// The account, agent and number the calls go to.
struct Setup {
    bearer: String,
    place: PlaceCall,
    agent_id: String,
}

async fn provision(
    http: &reqwest::Client,
    base: &str,
    emulators: &Emulators,
    plan: Plan,
    webhook_url: &str,
) -> anyhow::Result<Setup> {
    let signup: Value = checked(
        http.post(format!("{base}/v1/keys"))
            .json(&json!({"name": "Bench Co", "email": "bench@example.com"})),
        "sign-up",
    )
    .await?;
    let (Some(key_id), Some(secret)) = (signup["key_id"].as_str(), signup["key_secret"].as_str())
    else {
        bail!("the sign-up answer has no key: {signup}");
    };
    let bearer = format!("Bearer {key_id}:{secret}");
    let mut body = json!({
        "name": "Bench agent",
        "welcome_message": GREETING,
        "response_eagerness": plan.eagerness.as_millis(),
        "interruption_sensitivity": 0,
        "webhook_url": webhook_url,
    });
    if let (Some(body), Value::Object(fields)) =
        (body.as_object_mut(), plan.recording.agent_fields())
    {
        body.extend(fields);
    }
    let agent: Value = checked(
        http.post(format!("{base}/v1/agents")).header("authorization", &bearer).json(&body),
        "creating the agent",
    )
    .await?;
    let Some(agent_id) = agent["agent_id"].as_str() else {
        bail!("the agent has no id: {agent}");
    };
    let account = emulators.twilio.add_account();
    emulators.twilio.add_number(&account.sid, NUMBER);
    let _: Value = checked(
        http.post(format!("{base}/v1/phone-numbers")).header("authorization", &bearer).json(
            &json!({"phone_number": NUMBER, "agent_id": agent_id, "twilio_sid": account.sid, "twilio_token": account.auth_token, "outbound_enabled": true}),
        ),
        "importing the number",
    )
    .await?;
    let place = PlaceCall::new(
        format!("{base}/twilio/voice"),
        &account.sid,
        &account.auth_token,
        "+447386000000",
        NUMBER,
    );
    Ok(Setup { bearer, place, agent_id: agent_id.to_owned() })
}

async fn checked(request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
    let response = request.send().await.with_context(|| format!("{what}: no answer"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{what}: HTTP {status}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("{what}: not JSON: {body}"))
}

/// One call as placed.
struct Placed {
    started: Duration,
    recording: Option<CallRecording>,
    error: Option<String>,
    /// Outbound: the API request sent → the emulator accepted the call's create.
    queue_to_dial: Option<Duration>,
}

impl Placed {
    fn failed(started: Duration, error: String) -> Self {
        Self { started, recording: None, error: Some(error), queue_to_dial: None }
    }
}

/// The number the `index`-th call comes from (inbound) or goes to (outbound): distinct, so no
/// call reads another's history as its caller's past calls.
fn party_number(index: usize) -> String {
    format!("+447386{:06}", index + 1)
}

async fn place_calls(
    caller: &CallerEmulator,
    template: &PlaceCall,
    plan: Plan,
    n: usize,
) -> (Vec<Placed>, std::time::Instant) {
    let script = plan.script();
    let origin = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for index in 0..n {
        let mut place = template.clone();
        place.from = party_number(index);
        let offset = plan.start_offset(index, n);
        let (caller, script) = (caller.clone(), script.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(origin + offset).await;
            let started = origin.elapsed();
            let result = caller.start_inbound_call(place, script).finish().await;
            (started, result)
        }));
    }
    let mut placed = Vec::with_capacity(n);
    for task in tasks {
        placed.push(match task.await {
            Ok((started, Ok(recording))) => {
                Placed { started, recording: Some(recording), error: None, queue_to_dial: None }
            }
            Ok((started, Err(error))) => Placed::failed(started, error.to_string()),
            Err(error) => Placed::failed(Duration::ZERO, error.to_string()),
        });
    }
    (placed, origin.into_std())
}

/// Places `n` outbound calls through the API, each to its own scripted callee, staggered over
/// the ramp, and collects each callee's side of the call once it has ended.
async fn place_outbound_calls(
    http: &reqwest::Client,
    base: &str,
    setup: &Setup,
    twilio: &TwilioEmulator,
    plan: Plan,
    n: usize,
) -> (Vec<Placed>, std::time::Instant) {
    let script = plan.script();
    for index in 0..n {
        twilio.add_callee(
            &party_number(index),
            Callee::Human { ring_for: Duration::from_millis(100), script: script.clone() },
        );
    }
    let origin = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for index in 0..n {
        let offset = plan.start_offset(index, n);
        let request = http
            .post(format!("{base}/v1/calls/outbound"))
            .header("authorization", &setup.bearer)
            .json(&json!({"agent_id": setup.agent_id, "to_number": party_number(index), "prompt": PURPOSE}));
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(origin + offset).await;
            let sent = std::time::Instant::now();
            (origin.elapsed(), sent, checked(request, "placing an outbound call").await)
        }));
    }
    let mut queued = BTreeMap::new();
    let mut placed = Vec::with_capacity(n);
    for (index, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok((started, sent, Ok(_))) => {
                queued.insert(party_number(index), (started, sent));
            }
            Ok((started, _, Err(error))) => placed.push(Placed::failed(started, error.to_string())),
            Err(error) => placed.push(Placed::failed(Duration::ZERO, error.to_string())),
        }
    }
    let deadline = Instant::now() + plan.max_call() + plan.ramp + Duration::from_secs(60);
    let runs = loop {
        let runs = twilio.callee_runs().await;
        if runs.len() >= queued.len() || Instant::now() >= deadline {
            break runs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut by_number: BTreeMap<String, CalleeRun> =
        runs.into_iter().map(|run| (run.to.clone(), run)).collect();
    for (to, (started, sent)) in queued {
        let Some(run) = by_number.remove(&to) else {
            placed.push(Placed::failed(started, format!("{to}: never dialled or never ended")));
            continue;
        };
        let queue_to_dial = Some(run.dialled_at.saturating_duration_since(sent));
        // The media side's clock starts when the callee answers.
        let started =
            run.answered_at.unwrap_or(run.dialled_at).saturating_duration_since(origin.into_std());
        match run.recording {
            Some(recording) => {
                placed.push(Placed {
                    started,
                    recording: Some(recording),
                    error: None,
                    queue_to_dial,
                });
            }
            None => placed.push(Placed {
                queue_to_dial,
                ..Placed::failed(started, format!("{to}: ended {} unanswered", run.final_status))
            }),
        }
    }
    (placed, origin.into_std())
}

/// Every call record of the account, with transcript and latency, once all `n` have ended (or
/// after 60 s, as they are).
async fn fetch_call_records(
    http: &reqwest::Client,
    base: &str,
    bearer: &str,
    n: usize,
) -> anyhow::Result<Vec<Value>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let summaries = loop {
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let page = checked(
                http.get(format!("{base}/v1/calls?limit=100&offset={offset}"))
                    .header("authorization", bearer),
                "listing calls",
            )
            .await?;
            let calls = page["calls"].as_array().cloned().unwrap_or_default();
            let got = calls.len();
            all.extend(calls);
            offset += got;
            if got < 100 {
                break;
            }
        }
        let ended = all.iter().filter(|call| call["ended_at"].is_string()).count();
        if (all.len() >= n && ended == all.len()) || Instant::now() >= deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let ids: Vec<String> =
        summaries.iter().filter_map(|call| call["call_id"].as_str().map(str::to_owned)).collect();
    let details = futures::stream::iter(ids)
        .map(|id| async move {
            checked(
                http.get(format!("{base}/v1/calls/{id}")).header("authorization", bearer),
                "getting a call",
            )
            .await
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    details.into_iter().collect()
}

/// A latency distribution in microseconds.
#[derive(Debug, Clone)]
struct Dist {
    histogram: Histogram<u64>,
    /// Smallest value as measured (may be negative for differences).
    min_signed_us: i64,
}

impl Dist {
    #[allow(clippy::expect_used)]
    fn new() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant bounds are valid"),
            min_signed_us: i64::MAX,
        }
    }

    fn record_us(&mut self, micros: i64) {
        self.min_signed_us = self.min_signed_us.min(micros);
        let clamped = u64::try_from(micros.max(1)).unwrap_or(1);
        self.histogram.saturating_record(clamped);
    }

    fn record(&mut self, value: Duration) {
        self.record_us(i64::try_from(value.as_micros()).unwrap_or(i64::MAX));
    }

    fn record_ms(&mut self, millis: f64) {
        #[allow(clippy::cast_possible_truncation)]
        self.record_us((millis * 1000.0).round() as i64);
    }

    fn len(&self) -> u64 {
        self.histogram.len()
    }

    #[allow(clippy::cast_precision_loss)]
    fn ms(&self, quantile: f64) -> f64 {
        if self.histogram.is_empty() {
            return f64::NAN;
        }
        self.histogram.value_at_quantile(quantile) as f64 / 1000.0
    }

    #[allow(clippy::cast_precision_loss)]
    fn max_ms(&self) -> f64 {
        if self.histogram.is_empty() {
            return f64::NAN;
        }
        self.histogram.max() as f64 / 1000.0
    }

    #[allow(clippy::cast_precision_loss)]
    fn min_ms(&self) -> f64 {
        if self.histogram.is_empty() {
            return f64::NAN;
        }
        self.min_signed_us as f64 / 1000.0
    }

    fn line(&self) -> String {
        format!(
            "p50 {:8.2}  p95 {:8.2}  p99 {:8.2}  max {:8.2}  min {:8.2} ms  (n={})",
            self.ms(0.50),
            self.ms(0.95),
            self.ms(0.99),
            self.max_ms(),
            self.min_ms(),
            self.len()
        )
    }
}

/// Everything one run measured.
#[derive(Debug)]
struct RunReport {
    n: usize,
    plan: Plan,
    wall: Duration,
    peak_concurrency: usize,
    completed: usize,
    failures: BTreeMap<String, usize>,
    failure_examples: Vec<String>,
    caller_latency: Dist,
    engine_added: Dist,
    missing_replies: usize,
    webhook: Dist,
    answer: Dist,
    greeting: Dist,
    queue_to_dial: Dist,
    server_turns: BTreeMap<&'static str, Dist>,
    server_records: usize,
    server_reasons: BTreeMap<String, usize>,
    jitter: Dist,
    interarrival: Dist,
    agent_frames: u64,
    gaps: usize,
    gap_ms: f64,
    caller_send: Dist,
    server_cpu_s: f64,
    bench_cpu_s: f64,
    machine_cpu_s: f64,
    baseline_rss_kib: u64,
    peak_rss_kib: u64,
    log_problems: usize,
    log_examples: Vec<String>,
    kept: Option<PathBuf>,
    /// Call records with a recording.
    recorded: usize,
    /// WAV files in the server's recordings directory, and their bytes.
    recording_files: (usize, u64),
    /// Hang-up (the caller's stream closed) → the `call.completed` webhook received.
    hangup_to_webhook: Dist,
    /// Calls whose `call.completed` never arrived.
    webhooks_missing: usize,
    /// `call.completed` deliveries for the same call beyond the first.
    webhooks_doubled: usize,
}

const SERVER_FIELDS: [&str; 6] = [
    "engine_overhead_ms",
    "total_ms",
    "end_of_turn_ms",
    "stt_ms",
    "llm_first_token_ms",
    "tts_first_byte_ms",
];

async fn run_once(args: &CallsBenchArgs, n: usize, clk_tck: f64) -> anyhow::Result<RunReport> {
    let plan = Plan::new(args);
    let emulators = Emulators::start(plan, n).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    let mut server = ServerProcess::spawn(args, &emulators, n)?;
    server.wait_ready(&http).await?;
    let receiver = WebhookReceiver::start().await.context("starting the webhook receiver")?;
    let setup = provision(&http, &server.base, &emulators, plan, &receiver.url("/hook")).await?;
    let caller = CallerEmulator::with_config(CallerConfig {
        keep_agent_audio: false,
        max_call_duration: plan.max_call(),
        ..CallerConfig::default()
    })
    .context("building the caller emulator")?
    // One Twilio: the calls exist at the REST emulator too, so `--recording provider` records
    // them there (without it every recording start was refused as an unknown call).
    .with_network(&emulators.twilio);

    // Let the server settle after start-up and provisioning before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = server.pid().to_string();
    let before = proc_sample(&pid).unwrap_or_default();
    let bench_before = proc_sample("self").unwrap_or_default();
    let machine_before = machine_busy_ticks().unwrap_or(0);
    let started = Instant::now();
    let (placed, origin) = if plan.outbound {
        place_outbound_calls(&http, &server.base, &setup, &emulators.twilio, plan, n).await
    } else {
        place_calls(&caller, &setup.place, plan, n).await
    };
    let wall = started.elapsed();
    let after = proc_sample(&pid).unwrap_or_default();
    let bench_after = proc_sample("self").unwrap_or_default();
    let machine_after = machine_busy_ticks().unwrap_or(0);

    let records = fetch_call_records(&http, &server.base, &setup.bearer, n).await?;
    let delivered = completed_deliveries(&receiver, records.len()).await;
    let (log_problems, log_examples) = server.log_problems(5);
    let recording_files = server.recording_files();
    let kept = server.data_dir.is_none().then(|| server.log_path.clone());
    drop(server);
    drop(emulators);

    #[allow(clippy::cast_precision_loss)]
    let cpu = |from: ProcSample, to: ProcSample| {
        to.cpu_ticks.saturating_sub(from.cpu_ticks) as f64 / clk_tck
    };
    let mut report = RunReport {
        n,
        plan,
        wall,
        peak_concurrency: peak_concurrency(&placed),
        completed: 0,
        failures: BTreeMap::new(),
        failure_examples: Vec::new(),
        caller_latency: Dist::new(),
        engine_added: Dist::new(),
        missing_replies: 0,
        webhook: Dist::new(),
        answer: Dist::new(),
        greeting: Dist::new(),
        queue_to_dial: Dist::new(),
        server_turns: SERVER_FIELDS.iter().map(|field| (*field, Dist::new())).collect(),
        server_records: records.len(),
        server_reasons: BTreeMap::new(),
        jitter: Dist::new(),
        interarrival: Dist::new(),
        agent_frames: 0,
        gaps: 0,
        gap_ms: 0.0,
        caller_send: Dist::new(),
        server_cpu_s: cpu(before, after),
        bench_cpu_s: cpu(bench_before, bench_after),
        #[allow(clippy::cast_precision_loss)]
        machine_cpu_s: machine_after.saturating_sub(machine_before) as f64 / clk_tck,
        baseline_rss_kib: before.rss_kib,
        peak_rss_kib: after.hwm_kib,
        log_problems,
        log_examples,
        kept,
        recorded: 0,
        recording_files,
        hangup_to_webhook: Dist::new(),
        webhooks_missing: 0,
        webhooks_doubled: 0,
    };
    for call in &placed {
        report.add_call(call);
    }
    report.add_deliveries(&placed, origin, &delivered);
    for record in &records {
        report.add_record(record);
    }
    Ok(report)
}

/// The `call.completed` webhooks received, once there is one per call record (or after 60 s).
async fn completed_deliveries(receiver: &WebhookReceiver, calls: usize) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let completed: Vec<Received> = receiver
            .received()
            .into_iter()
            .filter(|r| r.status < 300 && r.json()["event"] == "call.completed")
            .collect();
        if completed.len() >= calls || Instant::now() >= deadline {
            return completed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The most calls in progress at once, from each call's start and length.
fn peak_concurrency(placed: &[Placed]) -> usize {
    let mut edges: Vec<(Duration, i32)> = Vec::with_capacity(placed.len() * 2);
    for call in placed {
        if let Some(recording) = &call.recording {
            edges.push((call.started, 1));
            edges.push((call.started + recording.duration, -1));
        }
    }
    edges.sort();
    let (mut now, mut peak) = (0_i32, 0_i32);
    for (_, step) in edges {
        now += step;
        peak = peak.max(now);
    }
    usize::try_from(peak).unwrap_or(0)
}

impl RunReport {
    fn failed(&self) -> usize {
        self.failures.values().sum()
    }

    fn fail(&mut self, kind: &str, example: String) {
        *self.failures.entry(kind.to_owned()).or_default() += 1;
        if self.failure_examples.len() < 5 {
            self.failure_examples.push(example);
        }
    }

    fn add_call(&mut self, call: &Placed) {
        if let Some(delay) = call.queue_to_dial {
            self.queue_to_dial.record(delay);
        }
        let Some(recording) = &call.recording else {
            self.fail("task", call.error.clone().unwrap_or_default());
            return;
        };
        let floor = i64::try_from(self.plan.floor().as_micros()).unwrap_or(i64::MAX);
        let mut missing = 0;
        for turn in 1..=self.plan.turns {
            match recording.response_latency_after(&turn_label(turn)) {
                Some(latency) => {
                    self.caller_latency.record(latency);
                    let micros = i64::try_from(latency.as_micros()).unwrap_or(i64::MAX);
                    self.engine_added.record_us(micros - floor);
                }
                None => missing += 1,
            }
        }
        self.missing_replies += missing;
        let webhook = recording.first_event(|kind| {
            matches!(kind, CallEventKind::Webhook { purpose: WebhookPurpose::Voice, .. })
        });
        if let Some(answered) = webhook {
            self.webhook.record(answered);
        }
        let connected =
            recording.first_event(|kind| matches!(kind, CallEventKind::StreamConnected { .. }));
        if let Some(connected) = connected {
            self.answer.record(connected);
            if let Some(first) = recording.agent_frames.first() {
                self.greeting.record(first.received_at.saturating_sub(connected));
            }
        }
        self.add_pacing(recording);
        for deviation in recording.outbound_deviations() {
            self.caller_send.record(*deviation);
        }
        let timed_out = recording
            .events
            .iter()
            .filter(|event| matches!(event.kind, CallEventKind::StepTimedOut { .. }))
            .count();
        let sid = &recording.call_sid;
        match &recording.outcome {
            CallOutcome::Completed { ended_by: EndedBy::Server } if missing == 0 => {
                self.completed += 1;
            }
            CallOutcome::Completed { ended_by: EndedBy::Server } => self.fail(
                "incomplete",
                format!("{sid}: {missing} replies missing, {timed_out} waits timed out"),
            ),
            CallOutcome::Completed { ended_by } => self.fail(
                "not ended by the agent",
                format!("{sid}: ended by {ended_by:?}, {missing} replies missing"),
            ),
            CallOutcome::Rejected { reason } => {
                self.fail(&format!("rejected ({reason})"), format!("{sid}: rejected {reason}"));
            }
            CallOutcome::Failed { code, message } => {
                self.fail("failed", format!("{sid}: failed {code:?}: {message}"));
            }
            CallOutcome::Hungup => self.fail("hung up by TwiML", format!("{sid}: <Hangup>")),
        }
    }

    /// Agent frames against an ideal 20 ms grid, per run of frames (frames closer than
    /// [`UTTERANCE_GAP`]): the grid point of frame k is `anchor + k × 20 ms`, where the anchor
    /// is the median of `arrival − k × 20 ms` over the run; the first [`LEAD_FRAMES`] of a run
    /// (sent at once by design) are not compared.
    fn add_pacing(&mut self, recording: &CallRecording) {
        let frames = &recording.agent_frames;
        self.agent_frames += frames.len() as u64;
        for gap in recording.inbound_gaps() {
            self.gaps += 1;
            self.gap_ms += gap.duration.as_secs_f64() * 1000.0;
        }
        let mut start = 0;
        while start < frames.len() {
            let mut end = start + 1;
            while end < frames.len()
                && frames[end].received_at.saturating_sub(frames[end - 1].received_at)
                    <= UTTERANCE_GAP
            {
                end += 1;
            }
            let mut audio_before = Duration::ZERO;
            let mut offsets = Vec::with_capacity(end - start);
            for (index, frame) in frames[start..end].iter().enumerate() {
                if index > LEAD_FRAMES {
                    let previous = frames[start + index - 1].received_at;
                    let interval = frame.received_at.saturating_sub(previous);
                    let expected = frame_audio(frames[start + index - 1].bytes);
                    let interval = i64::try_from(interval.as_micros()).unwrap_or(i64::MAX);
                    let expected = i64::try_from(expected.as_micros()).unwrap_or(i64::MAX);
                    self.interarrival.record_us((interval - expected).abs());
                }
                let arrival = i64::try_from(frame.received_at.as_micros()).unwrap_or(i64::MAX);
                let grid = i64::try_from(audio_before.as_micros()).unwrap_or(i64::MAX);
                offsets.push(arrival - grid);
                audio_before += frame_audio(frame.bytes);
            }
            if offsets.len() > LEAD_FRAMES {
                let steady = &offsets[LEAD_FRAMES..];
                let mut sorted = steady.to_vec();
                sorted.sort_unstable();
                let anchor = sorted[sorted.len() / 2];
                for offset in steady {
                    self.jitter.record_us((offset - anchor).abs());
                }
            }
            start = end;
        }
    }

    /// Pairs each call's hang-up with its `call.completed` delivery (by the Twilio call SID).
    fn add_deliveries(
        &mut self,
        placed: &[Placed],
        origin: std::time::Instant,
        delivered: &[Received],
    ) {
        let mut by_sid: BTreeMap<String, Vec<std::time::Instant>> = BTreeMap::new();
        for delivery in delivered {
            if let Some(sid) = delivery.json()["twilio_call_sid"].as_str() {
                by_sid.entry(sid.to_owned()).or_default().push(delivery.at);
            }
        }
        for call in placed {
            let Some(recording) = &call.recording else { continue };
            let hung_up = origin + call.started + recording.duration;
            match by_sid.get(&recording.call_sid).map(Vec::as_slice) {
                Some([first, rest @ ..]) => {
                    self.hangup_to_webhook.record(first.saturating_duration_since(hung_up));
                    self.webhooks_doubled += rest.len();
                }
                _ => self.webhooks_missing += 1,
            }
        }
    }

    fn add_record(&mut self, record: &Value) {
        if record["recording_duration_s"].is_number() {
            self.recorded += 1;
        }
        let reason = record["ended_reason"].as_str().unwrap_or("(not ended)").to_owned();
        *self.server_reasons.entry(reason).or_default() += 1;
        for turn in record["latency"].as_array().into_iter().flatten() {
            for field in SERVER_FIELDS {
                if let (Some(value), Some(dist)) =
                    (turn[field].as_f64(), self.server_turns.get_mut(field))
                {
                    dist.record_ms(value);
                }
            }
        }
    }

    /// Share of the machine's CPU time that was busy during the calls, in percent.
    #[allow(clippy::cast_precision_loss)]
    fn busy_percent(&self) -> f64 {
        let cores = machine_cores();
        100.0 * self.machine_cpu_s / (self.wall.as_secs_f64() * cores as f64).max(1e-9)
    }

    fn holds(&self) -> bool {
        self.failed() == 0
            && self.missing_replies == 0
            && self.gaps == 0
            && self.engine_added.len() > 0
            && self.engine_added.ms(0.99) <= 10.0
    }

    #[allow(clippy::print_stdout, clippy::cast_precision_loss)]
    fn print(&self) {
        let plan = &self.plan;
        let n = self.n as f64;
        println!(
            "\n=== nixflex bench calls: N={} {} calls x {} turns | LLM TTFB {} ms, TTS TTFB {} ms, \
             response_eagerness {} ms, caller speech {} ms, {}, recording {:?} ===",
            self.n,
            if plan.outbound { "outbound" } else { "inbound" },
            plan.turns,
            plan.llm_ttfb.as_millis(),
            plan.tts_ttfb.as_millis(),
            plan.eagerness.as_millis(),
            plan.say.as_millis(),
            match plan.rate {
                Some(rate) => format!("arriving at {rate} calls/s"),
                None => format!("ramp {} ms", plan.ramp.as_millis()),
            },
            plan.recording
        );
        println!(
            "calls: {} placed, {} completed as scripted, {} failed {:?}; peak concurrent {}; wall {:.1} s",
            self.n,
            self.completed,
            self.failed(),
            self.failures,
            self.peak_concurrency,
            self.wall.as_secs_f64()
        );
        for example in &self.failure_examples {
            println!("  e.g. {example}");
        }
        if plan.outbound {
            println!("call set-up, callee side (outbound, through the capacity queue):");
            println!("  API request -> Twilio create    {}", self.queue_to_dial.line());
            println!("  answer URL -> media stream open {}", self.answer.line());
            println!(
                "  answer (stream open) -> agent's first word {} (the callee says hello for {} ms                  first; the opener answers it)",
                self.greeting.line(),
                plan.say.as_millis()
            );
        } else {
            println!("call set-up, caller side:");
            println!("  voice webhook answered          {}", self.webhook.line());
            println!("  webhook -> media stream open    {}", self.answer.line());
            println!("  stream open -> greeting's first frame {}", self.greeting.line());
        }
        println!(
            "caller side, per turn: caller end of speech -> first agent frame received \
             ({} replies missing)",
            self.missing_replies
        );
        println!("  raw latency          {}", self.caller_latency.line());
        println!("  engine-added         {}", self.engine_added.line());
        println!(
            "    (= raw - {:.0} ms floor: max(eagerness, VAD hangover {} ms) + LLM TTFB + TTS TTFB)",
            plan.floor().as_secs_f64() * 1000.0,
            nixflex_engine::vad::VadConfig::default().hangover.as_millis()
        );
        println!(
            "server side, per turn (GET /v1/calls/{{id}} latency[], {} call records, ended_reason {:?}):",
            self.server_records, self.server_reasons
        );
        for field in SERVER_FIELDS {
            if let Some(dist) = self.server_turns.get(field) {
                println!("  {field:<20} {}", dist.line());
            }
        }
        println!("agent audio as received by the caller: {} frames", self.agent_frames);
        println!("  |arrival - 20 ms grid| {}", self.jitter.line());
        println!("  |interval - 20 ms|     {}", self.interarrival.line());
        println!(
            "dropped frames (underruns inside agent utterances): {} gaps, {:.0} ms (~{:.0} frames)",
            self.gaps,
            self.gap_ms,
            self.gap_ms / 20.0
        );
        println!("bench health: caller send deviation {}", self.caller_send.line());
        let per_call = |kib: u64| kib as f64 / 1024.0 / n;
        println!(
            "server process: CPU {:.2} s during the calls ({:.3} s/call); RSS baseline {:.1} MiB, \
             peak {:.1} MiB (peak/N {:.2} MiB/call, (peak-baseline)/N {:.2} MiB/call)",
            self.server_cpu_s,
            self.server_cpu_s / n,
            self.baseline_rss_kib as f64 / 1024.0,
            self.peak_rss_kib as f64 / 1024.0,
            per_call(self.peak_rss_kib),
            per_call(self.peak_rss_kib.saturating_sub(self.baseline_rss_kib)),
        );
        println!(
            "bench process (emulators + callers, same 2 cores): CPU {:.2} s ({:.3} s/call)",
            self.bench_cpu_s,
            self.bench_cpu_s / n
        );
        let cores = machine_cores();
        println!(
            "machine: {:.2} CPU-s busy of {:.2} available ({cores} cores x wall); other processes ~{:.2} s",
            self.machine_cpu_s,
            self.wall.as_secs_f64() * cores as f64,
            (self.machine_cpu_s - self.server_cpu_s - self.bench_cpu_s).max(0.0)
        );
        println!(
            "recording: {:?}; {} call records with a recording; {} files, {:.1} MiB in the \
             server's recordings directory",
            plan.recording,
            self.recorded,
            self.recording_files.0,
            self.recording_files.1 as f64 / 1024.0 / 1024.0
        );
        println!(
            "hang-up -> call.completed received (analysis with the emulated LLM, then the signed \
             delivery): {}; {} missing, {} doubled",
            self.hangup_to_webhook.line(),
            self.webhooks_missing,
            self.webhooks_doubled
        );
        println!("server log: {} warning/error lines", self.log_problems);
        for line in &self.log_examples {
            println!("  {line}");
        }
        if let Some(path) = &self.kept {
            println!("server log kept at {}", path.display());
        }
    }
}

/// Playing time of `bytes` μ-law samples.
fn frame_audio(bytes: usize) -> Duration {
    if bytes == FRAME_BYTES {
        return FRAME;
    }
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    Duration::from_micros(bytes.saturating_mul(125))
}

#[allow(clippy::print_stdout, clippy::cast_precision_loss)]
fn print_summary(reports: &[RunReport]) {
    println!(
        "\n=== summary (engine-added = caller-side latency - floor; holds = no failed call, \
         engine-added p99 <= 10 ms, zero dropped frames) ==="
    );
    println!(
        "{:>5} {:>5} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6} {:>8} {:>9} {:>9} {:>6}  holds",
        "N",
        "peak",
        "failed",
        "raw p50",
        "added p50",
        "added p99",
        "srv ovh99",
        "grid p99",
        "intvl p99",
        "gaps",
        "gapms",
        "cpu s/c",
        "MiB/call",
        "peak MiB",
        "busy%"
    );
    for report in reports {
        let n = report.n as f64;
        println!(
            "{:>5} {:>5} {:>6} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8} {:>6.0} {:>8.3} {:>9.2} {:>9.1} {:>6.0}  {}",
            report.n,
            report.peak_concurrency,
            report.failed(),
            report.caller_latency.ms(0.50),
            report.engine_added.ms(0.50),
            report.engine_added.ms(0.99),
            report.server_turns.get("engine_overhead_ms").map_or(f64::NAN, |d| d.ms(0.99)),
            report.jitter.ms(0.99),
            report.interarrival.ms(0.99),
            report.gaps,
            report.gap_ms,
            report.server_cpu_s / n,
            report.peak_rss_kib as f64 / 1024.0 / n,
            report.peak_rss_kib as f64 / 1024.0,
            report.busy_percent(),
            if report.holds() { "yes" } else { "no" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_llm_says_goodbye_after_the_last_caller_turn() {
        let body = |users: usize| {
            let mut messages = vec![
                json!({"role": "user", "content": "[The call connected.]"}),
                json!({"role": "assistant", "content": GREETING}),
            ];
            for index in 0..users {
                messages.push(json!({"role": "user", "content": [{"type": "text", "text": format!("{UTTERANCE_PREFIX} {index}.")}]}));
                messages.push(json!({"role": "assistant", "content": REPLY}));
            }
            messages.pop();
            json!({ "messages": messages })
        };
        assert_eq!(reply_for(&body(1), 3), Reply::text(REPLY));
        assert_eq!(reply_for(&body(2), 3), Reply::text(REPLY));
        assert_eq!(reply_for(&body(3), 3), Reply::text(GOODBYE));
        // An outbound callee's hello shares its message with the engine's opener note.
        let opener = json!({"messages": [{"role": "user", "content": format!(
            "[The call connected and the callee answered. Introduce yourself.]\n{UTTERANCE_PREFIX} 7."
        )}]});
        assert_eq!(reply_for(&opener, 1), Reply::text(GOODBYE));
        assert_eq!(reply_for(&opener, 2), Reply::text(REPLY));
    }

    #[test]
    fn proc_stat_parses_for_this_process() {
        let sample = proc_sample("self").unwrap();
        assert!(sample.rss_kib > 0 && sample.hwm_kib >= sample.rss_kib);
    }
}
