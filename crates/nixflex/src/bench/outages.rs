//! `nixflex bench outages`: the silence a caller hears when a provider fails
//! (docs/engine.md#provider-outages).
//!
//! For each fault (`stage:mode`), starts a server in this process with emulated providers
//! (Twilio, Deepgram, Anthropic → an OpenAI-compatible fallback, Inworld → an OpenAI-compatible
//! speech fallback), injects the fault into the primary provider and places `--runs` calls one
//! after another. It measures, per call, the silence from the moment the fault hits the caller
//! to the first word they hear:
//! - LLM faults: from the end of the caller's question to the first agent audio of the answer;
//! - speech faults: from the media stream's start to the first audio of the greeting (the
//!   greeting's request is the one that fails);
//! - `tts:down` (no synthesiser answers): from the media stream's start to the carrier's `<Say>`;
//! - `stt:drop` (the recogniser drops just before the caller speaks): from the end of the
//!   caller's question to the first agent audio of the answer (the question is buffered and
//!   replayed into the new connection);
//! - `stt:{refused,5xx,slow,stall}` (Deepgram refuses, answers 503 to every upgrade, takes 10 s
//!   to upgrade, or stops sending results before the question): the same span, the question
//!   transcribed by the OpenAI-compatible fallback recogniser.
//!
//! Numbers go in docs/benchmarks.md, never into timed tests.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use nixflex_testkit::anthropic::{AnthropicEmulator, Fault, Reply};
use nixflex_testkit::deepgram::{DeepgramEmulator, Fault as SttFault};
use nixflex_testkit::inworld::InworldEmulator;
use nixflex_testkit::openai::OpenAiEmulator;
use nixflex_testkit::twilio::TwilioEmulator;
use nixflex_testkit::twilio::caller::{
    CallEventKind, CallRecording, CallerEmulator, CallerScript, PlaceCall,
};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::config::{Config, LlmProvider, SttProvider, TtsProvider};

/// Every fault the bench knows.
const ALL_FAULTS: &[&str] = &[
    "llm:refused",
    "llm:5xx",
    "llm:slow",
    "llm:stall",
    "llm:disconnect",
    "tts:refused",
    "tts:5xx",
    "tts:slow",
    "tts:stall",
    "tts:down",
    "stt:drop",
    "stt:refused",
    "stt:5xx",
    "stt:slow",
    "stt:stall",
];

/// Arguments of `nixflex bench outages`.
#[derive(Debug, Args)]
pub struct OutagesBenchArgs {
    /// Faults to measure (`stage:mode`, comma-separated); default: all of
    /// llm:{refused,5xx,slow,stall,disconnect}, tts:{refused,5xx,slow,stall,down},
    /// stt:{drop,refused,5xx,slow,stall}.
    #[arg(long, value_delimiter = ',')]
    pub fault: Vec<String>,
    /// Calls per fault.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

const NUMBER: &str = "+14155552671";
const QUESTION: &str = "Are you open today?";

fn closed_port_url() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    drop(listener);
    Ok(format!("http://127.0.0.1:{port}"))
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

/// The emulators and server of one fault.
struct Lab {
    _server: crate::server::Server,
    _dir: tempfile::TempDir,
    twilio: TwilioEmulator,
    stt: DeepgramEmulator,
    llm: AnthropicEmulator,
    tts: InworldEmulator,
    openai: OpenAiEmulator,
    place: PlaceCall,
}

impl Lab {
    async fn start(fault: &str) -> anyhow::Result<Self> {
        let twilio = TwilioEmulator::start().await.context("starting the Twilio emulator")?;
        let stt = DeepgramEmulator::start().await.context("starting the Deepgram emulator")?;
        let llm = AnthropicEmulator::start().await.context("starting the Anthropic emulator")?;
        let tts = InworldEmulator::start().await.context("starting the Inworld emulator")?;
        let openai = OpenAiEmulator::start().await.context("starting the OpenAI emulator")?;
        llm.set_responder(|_| Reply::text("Yes, until six."));
        openai.set_responder(|_| Reply::text("Yes, until six."));
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut config = Config {
            listen: format!("127.0.0.1:{port}"),
            data_dir: dir.path().join("data"),
            public_url: Some(format!("http://127.0.0.1:{port}")),
            master_key: Some(SecretString::from(
                nixflex_core::crypto::SecretBox::generate_encoded(),
            )),
            allow_private_targets: true,
            twilio_api_base: twilio.base_url().to_owned(),
            anthropic_base_url: llm.base_url(),
            anthropic_api_key: Some(SecretString::from("sk-ant-bench")),
            openai_base_url: openai.base_url(),
            openai_api_key: Some(SecretString::from("sk-openai-bench")),
            deepgram_url: stt.base_url(),
            deepgram_api_key: Some(SecretString::from("dg-bench-key")),
            inworld_url: tts.base_url(),
            inworld_api_key: Some(SecretString::from("aW53b3JsZDpiZW5jaA==")),
            llm_fallback: vec![LlmProvider::Openai],
            tts_fallback: vec![TtsProvider::Openai],
            stt_fallback: vec![SttProvider::Openai],
            ..Config::default()
        };
        match fault {
            "llm:refused" => config.anthropic_base_url = closed_port_url()?,
            "tts:refused" => config.inworld_url = closed_port_url()?,
            "stt:refused" => config.deepgram_url = closed_port_url()?.replace("http", "ws"),
            "tts:down" => {
                config.inworld_url = closed_port_url()?;
                config.tts_fallback = Vec::new();
            }
            _ => {}
        }
        let server = crate::server::start(config).await.context("starting the server")?;
        let base = server.base_url();
        let client = reqwest::Client::new();
        let key = api(&client, &base, None, "/v1/keys", json!({"name": "Bench"})).await?;
        let bearer = format!(
            "{}:{}",
            key["key_id"].as_str().unwrap_or_default(),
            key["key_secret"].as_str().unwrap_or_default()
        );
        let agent = api(
            &client,
            &base,
            Some(&bearer),
            "/v1/agents",
            json!({"name": "Bench", "welcome_message": "Hello, thanks for calling.", "response_eagerness": 200, "record_call": false}),
        )
        .await?;
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
        let place = PlaceCall::new(
            format!("{base}/twilio/voice"),
            &account.sid,
            &account.auth_token,
            "+447386000001",
            NUMBER,
        );
        Ok(Self { _server: server, _dir: dir, twilio, stt, llm, tts, openai, place })
    }

    /// Injects the fault into the next call.
    fn arm(&self, fault: &str) {
        let slow = Fault::SlowFirstByte(Duration::from_secs(10));
        match fault {
            "llm:5xx" => {
                self.llm.push_fault(Fault::Status(503));
                self.llm.push_fault(Fault::Status(503));
            }
            "llm:slow" => self.llm.push_fault(slow),
            "llm:stall" => self.llm.push_fault(Fault::Stall { after_deltas: 0 }),
            "llm:disconnect" => {
                self.llm.push_fault(Fault::Disconnect { after_deltas: 0 });
                self.llm.push_fault(Fault::Disconnect { after_deltas: 0 });
            }
            "tts:5xx" => {
                self.tts.push_fault(Fault::Status(503));
                self.tts.push_fault(Fault::Status(503));
            }
            "tts:slow" => self.tts.push_fault(slow),
            "tts:stall" => self.tts.push_fault(Fault::Stall { after_deltas: 0 }),
            "stt:drop" => {
                self.stt.push_fault(SttFault::DisconnectAfterAudio(Duration::from_millis(1000)));
                self.stt.push_fault(SttFault::RejectUpgrade(503));
            }
            "stt:5xx" => {
                for _ in 0..3 {
                    self.stt.push_fault(SttFault::RejectUpgrade(503));
                }
            }
            "stt:slow" => self.stt.push_fault(SttFault::SlowUpgrade(Duration::from_secs(10))),
            "stt:stall" => {
                self.stt.push_fault(SttFault::StallAfterAudio(Duration::from_millis(1000)));
            }
            _ => {}
        }
        self.stt.push_utterance(QUESTION);
        self.openai.push_transcript(QUESTION);
    }

    async fn call(&self, fault: &str) -> anyhow::Result<CallRecording> {
        let caller =
            CallerEmulator::new().context("starting the caller")?.with_network(&self.twilio);
        let script = CallerScript::new()
            .wait_for_agent_speech(Duration::from_secs(15))
            .wait_for_agent_silence(Duration::from_millis(600), Duration::from_secs(15))
            .say(QUESTION, Duration::from_secs(1))
            .wait_for_agent_speech(Duration::from_secs(15))
            .wait_for_agent_silence(Duration::from_millis(600), Duration::from_secs(15))
            .hang_up();
        let script = if fault == "tts:down" {
            CallerScript::new().silence(Duration::from_secs(8))
        } else {
            script
        };
        Ok(caller.place_inbound_call(self.place.clone(), script).await)
    }
}

impl Lab {
    /// Waits (at most 10 s) until `calls` post-call analyses reached the LLM, so the next
    /// call's fault is not used up by the previous call's analysis.
    async fn await_analyses(&self, calls: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let analyses = |requests: Vec<nixflex_testkit::anthropic::RecordedRequest>| {
            requests
                .iter()
                .filter(|r| r.body["tool_choice"]["name"] == "record_call_analysis")
                .count()
        };
        while analyses(self.llm.requests()) + analyses(self.openai.requests()) < calls
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The silence the caller heard for `fault` in `recording`.
fn silence(fault: &str, recording: &CallRecording) -> Option<Duration> {
    let connected =
        recording.first_event(|kind| matches!(kind, CallEventKind::StreamConnected { .. }));
    match fault.split(':').next() {
        Some("llm" | "stt") => recording.response_latency_after(QUESTION),
        _ if fault == "tts:down" => {
            let said =
                recording.first_event(|kind| matches!(kind, CallEventKind::TwimlSay { .. }))?;
            Some(said.saturating_sub(connected?))
        }
        _ => {
            let first = recording.agent_utterances().first()?.start;
            Some(first.saturating_sub(connected?))
        }
    }
}

/// Runs the benchmark and prints a table.
///
/// # Errors
/// When the emulators or the server cannot start, or a fault is unknown.
#[allow(clippy::print_stdout, clippy::cast_precision_loss)]
pub async fn run(args: OutagesBenchArgs) -> anyhow::Result<()> {
    let faults: Vec<String> = if args.fault.is_empty() {
        ALL_FAULTS.iter().map(|f| (*f).to_owned()).collect()
    } else {
        args.fault.clone()
    };
    if let Some(unknown) = faults.iter().find(|f| !ALL_FAULTS.contains(&f.as_str())) {
        bail!("unknown fault {unknown}; known: {}", ALL_FAULTS.join(", "));
    }
    println!(
        "fault            runs  silence to the first word (ms): min / median / max   requests to the fallbacks (LLM+TTS / STT)"
    );
    for fault in &faults {
        let lab = Lab::start(fault).await?;
        let mut measured = Vec::new();
        for done in 1..=args.runs.max(1) {
            lab.arm(fault);
            let recording = lab.call(fault).await?;
            if fault.starts_with("llm:") && fault != "llm:refused" {
                lab.await_analyses(done).await;
            }
            if let Some(gap) = silence(fault, &recording) {
                measured.push(gap.as_secs_f64() * 1000.0);
            }
        }
        measured.sort_by(f64::total_cmp);
        let (min, median, max) =
            match (measured.first(), measured.get(measured.len() / 2), measured.last()) {
                (Some(a), Some(b), Some(c)) => (*a, *b, *c),
                _ => (f64::NAN, f64::NAN, f64::NAN),
            };
        println!(
            "{fault:<16} {:>4}  {min:>8.0} / {median:>6.0} / {max:>6.0}                       {} / {}",
            measured.len(),
            lab.openai.requests().len(),
            lab.openai.transcription_requests().len()
        );
    }
    Ok(())
}
