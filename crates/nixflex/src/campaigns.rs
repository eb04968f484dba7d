//! `nixflex campaigns`: create a voice or SMS campaign from a CSV file against a running server,
//! and follow its counts (docs/campaigns.md#cli).
//!
//! - `create --csv FILE --kind sms|voice …`: the CSV's `phone` column (or `phone_number`) names
//!   the recipients, every other column is a variable of that row. Voice campaigns are created
//!   with `POST /v1/calls/batch`, SMS campaigns with `POST /v1/sms/campaigns`; both with
//!   `skip_invalid`, so the valid rows go out and the invalid ones are summarised with their CSV
//!   line. A scheduled campaign (`--at`) is launched at once with `--launch`. `--wait` follows
//!   the campaign with a progress bar until it finishes.
//! - `status ID`: the campaign's live counts, polled until it finishes (or Ctrl-C); `--once`
//!   prints one snapshot (for scripts).
//! - `launch ID`: starts a scheduled campaign now.
//!
//! Every command prints JSON on stdout; the progress bar and the summary go to stderr.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

/// The most recipients a campaign takes.
const MAX_RECIPIENTS: usize = 10_000;

/// Where the server is and who is asking.
#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(long, env = "NIXFLEX_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// `key_id:key_secret`.
    #[arg(long, env = "NIXFLEX_API_KEY", hide_env_values = true)]
    pub api_key: String,
}

/// Voice or SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// A voice batch campaign (`POST /v1/calls/batch`).
    Voice,
    /// An SMS campaign (`POST /v1/sms/campaigns`).
    Sms,
}

/// `nixflex campaigns …`.
#[derive(Debug, Subcommand)]
pub enum CampaignsCommand {
    /// Create a campaign from a CSV file (columns `phone` plus variables).
    Create(CreateArgs),
    /// Live counts of a campaign, until it finishes (Ctrl-C stops watching).
    Status(StatusArgs),
    /// Launch a scheduled campaign now.
    Launch {
        /// `camp_…` or `smsc_…`.
        campaign_id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// `nixflex campaigns create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The CSV file: a header row with `phone` (or `phone_number`) and any variable columns.
    #[arg(long)]
    pub csv: PathBuf,
    /// voice or sms.
    #[arg(long, value_enum)]
    pub kind: Kind,
    /// The agent.
    #[arg(long)]
    pub agent_id: String,
    /// The number to call or text from (voice: optional when the agent has one number).
    #[arg(long)]
    pub from_number: Option<String>,
    /// Display name (default: the CSV file's name).
    #[arg(long)]
    pub name: Option<String>,
    /// SMS: the message template (`{{column}}` placeholders).
    #[arg(long)]
    pub message: Option<String>,
    /// Voice: the purpose of every call (`{column}` placeholders).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Start at this time (ISO-8601; voice: its date) instead of now.
    #[arg(long)]
    pub at: Option<String>,
    /// Voice: IANA time zone of the calling window.
    #[arg(long)]
    pub timezone: Option<String>,
    /// Launch at once even when scheduled with `--at`.
    #[arg(long)]
    pub launch: bool,
    /// Reject the whole file when a row is invalid (default: skip and report invalid rows).
    #[arg(long)]
    pub strict: bool,
    /// Follow the campaign with a progress bar until it finishes.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `nixflex campaigns status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// `camp_…` (voice) or `smsc_…` (SMS).
    pub campaign_id: String,
    /// Print one snapshot and exit.
    #[arg(long)]
    pub once: bool,
    /// Seconds between polls.
    #[arg(long, default_value_t = 1.0)]
    pub every: f64,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// One recipient read from the CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// 1-based line in the file (the header is line 1).
    pub line: usize,
    /// The phone as written.
    pub phone: String,
    /// The other columns, by header (empty cells left out).
    pub variables: BTreeMap<String, String>,
}

/// Reads recipients from CSV text.
///
/// # Errors
/// No `phone`/`phone_number` column, a malformed row, or more than 10,000 rows.
pub fn read_rows(text: &str) -> anyhow::Result<Vec<Row>> {
    let mut reader =
        csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(text.as_bytes());
    let headers: Vec<String> =
        reader.headers().context("reading the CSV header")?.iter().map(str::to_owned).collect();
    let Some(phone_column) = headers
        .iter()
        .position(|h| h.eq_ignore_ascii_case("phone"))
        .or_else(|| headers.iter().position(|h| h.eq_ignore_ascii_case("phone_number")))
    else {
        bail!("the CSV has no `phone` column (header: {})", headers.join(","));
    };
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.context("reading the CSV")?;
        // The reader's own line count skips blank lines, and its position starts at the blank
        // lines before the record: count the newlines up to the record's first character.
        let line = record
            .position()
            .and_then(|p| usize::try_from(p.byte()).ok())
            .and_then(|byte| {
                text.get(byte..)
                    .map(|rest| byte + (rest.len() - rest.trim_start_matches(['\r', '\n']).len()))
            })
            .and_then(|start| text.get(..start))
            .map_or(0, |before| before.matches('\n').count() + 1);
        if record.iter().all(str::is_empty) {
            continue;
        }
        let phone = record.get(phone_column).unwrap_or_default().to_owned();
        let variables = headers
            .iter()
            .enumerate()
            .filter(|(i, name)| *i != phone_column && !name.is_empty())
            .filter_map(|(i, name)| {
                record.get(i).filter(|v| !v.is_empty()).map(|v| (name.clone(), v.to_owned()))
            })
            .collect();
        rows.push(Row { line, phone, variables });
    }
    if rows.len() > MAX_RECIPIENTS {
        bail!("the CSV has {} recipients; a campaign takes at most {MAX_RECIPIENTS}", rows.len());
    }
    Ok(rows)
}

/// The request body for the campaign.
///
/// # Errors
/// A missing `--message` (SMS) or `--prompt` (voice).
pub fn request_body(args: &CreateArgs, rows: &[Row]) -> anyhow::Result<Value> {
    let name = args.name.clone().unwrap_or_else(|| {
        args.csv
            .file_stem()
            .map_or_else(|| "campaign".to_owned(), |s| s.to_string_lossy().into_owned())
    });
    let mut body = json!({
        "agent_id": args.agent_id,
        "name": name,
        "skip_invalid": !args.strict,
        "schedule_type": if args.at.is_some() { "schedule" } else { "now" },
    });
    if let Some(from) = &args.from_number {
        body["from_number"] = json!(from);
    }
    match args.kind {
        Kind::Sms => {
            let Some(message) = &args.message else {
                bail!("--message is required for an SMS campaign");
            };
            body["message_template"] = json!(message);
            body["recipients"] =
                rows.iter().map(|r| json!({"phone": r.phone, "variables": r.variables})).collect();
            if let Some(at) = &args.at {
                body["scheduled_at"] = json!(at);
            }
        }
        Kind::Voice => {
            let Some(prompt) = &args.prompt else {
                bail!("--prompt is required for a voice campaign");
            };
            body["prompt"] = json!(prompt);
            body["recipients"] = rows
                .iter()
                .map(|r| json!({"phone": r.phone, "dynamic_vars": r.variables}))
                .collect();
            if let Some(at) = &args.at {
                // The voice API takes the day; a full timestamp is accepted as legacy `scheduled_at`.
                match at.get(..10).filter(|_| at.len() == 10) {
                    Some(day) => body["scheduled_date"] = json!(day),
                    None => body["scheduled_at"] = json!(at),
                }
            }
            if let Some(tz) = &args.timezone {
                body["timezone"] = json!(tz);
            }
        }
    }
    Ok(body)
}

/// The campaign's API path from its id.
fn campaign_path(campaign_id: &str) -> anyhow::Result<String> {
    if campaign_id.starts_with("smsc_") {
        Ok(format!("/v1/sms/campaigns/{campaign_id}"))
    } else if campaign_id.starts_with("camp_") {
        Ok(format!("/v1/calls/batch/{campaign_id}"))
    } else {
        bail!("`{campaign_id}` is not a campaign id (camp_… or smsc_…)")
    }
}

/// Whether a campaign status is final.
pub fn is_finished(status: &str) -> bool {
    matches!(status, "done" | "failed" | "completed" | "cancelled")
}

struct Client {
    http: reqwest::Client,
    base: String,
    bearer: String,
}

impl Client {
    fn new(server: &ServerArgs) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: server.url.trim_end_matches('/').to_owned(),
            bearer: format!("Bearer {}", server.api_key.trim()),
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("authorization", &self.bearer);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}: the server did not answer"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let error = &value["error"];
            let code = error["code"].as_str().unwrap_or("error");
            let message = error["message"].as_str().unwrap_or("");
            let mut report = format!("{method} {path}: {status} {code}: {message}");
            if let Some(invalid) = error["details"]["invalid"].as_array() {
                report.push_str(&format!(" ({} invalid rows)", invalid.len()));
            }
            bail!(report);
        }
        Ok(value)
    }
}

/// Reads a campaign's progress: (done, total), for the bar.
fn progress(campaign: &Value) -> (u64, u64) {
    let n = |k: &str| campaign[k].as_u64();
    let total = n("total_count").or_else(|| n("recipients_count")).unwrap_or(0);
    let pending = n("pending_count").or_else(|| n("queued_count")).unwrap_or(0);
    (total.saturating_sub(pending), total)
}

/// The counts worth a line: every `*_count` field and the status.
fn counts(campaign: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for key in ["campaign_id", "status"] {
        out.insert(key.to_owned(), campaign[key].clone());
    }
    if let Some(object) = campaign.as_object() {
        for (key, value) in object {
            if key.ends_with("_count") || key == "counts" {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(out)
}

fn bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
    {
        bar.set_style(style);
    }
    bar
}

/// Polls until the campaign finishes (or Ctrl-C), with a progress bar; returns the last state.
async fn follow(client: &Client, path: &str, every: Duration) -> anyhow::Result<Value> {
    let mut campaign = client.call(reqwest::Method::GET, path, None).await?;
    let (done, total) = progress(&campaign);
    let bar = bar(total);
    bar.set_position(done);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let (done, total) = progress(&campaign);
        bar.set_length(total);
        bar.set_position(done);
        bar.set_message(campaign["status"].as_str().unwrap_or("").to_owned());
        if is_finished(campaign["status"].as_str().unwrap_or("")) {
            bar.finish();
            return Ok(campaign);
        }
        tokio::select! {
            _ = &mut ctrl_c => {
                bar.abandon();
                return Ok(campaign);
            }
            () = tokio::time::sleep(every) => {}
        }
        campaign = client.call(reqwest::Method::GET, path, None).await?;
    }
}

#[allow(clippy::print_stdout)]
fn print(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

#[allow(clippy::print_stderr)]
fn summarise_invalid(invalid: &[Value]) {
    if invalid.is_empty() {
        return;
    }
    eprintln!("{} row(s) skipped:", invalid.len());
    for row in invalid.iter().take(20) {
        eprintln!(
            "  line {}: {} ({})",
            row["line"],
            row["phone"].as_str().unwrap_or(""),
            row["reason"].as_str().unwrap_or("")
        );
    }
    if invalid.len() > 20 {
        eprintln!("  … and {} more", invalid.len() - 20);
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.csv)
        .with_context(|| format!("reading {}", args.csv.display()))?;
    let rows = read_rows(&text)?;
    if rows.is_empty() {
        bail!("{} has no recipients", args.csv.display());
    }
    let body = request_body(&args, &rows)?;
    let client = Client::new(&args.server)?;
    let path = match args.kind {
        Kind::Sms => "/v1/sms/campaigns",
        Kind::Voice => "/v1/calls/batch",
    };
    let created = client.call(reqwest::Method::POST, path, Some(&body)).await?;
    let campaign_id =
        created["campaign_id"].as_str().context("the answer has no campaign_id")?.to_owned();
    // The server reports rows by their index in the request: map them back to CSV lines.
    let invalid: Vec<Value> = created["invalid"]
        .as_array()
        .map(|rows_out| {
            rows_out
                .iter()
                .map(|r| {
                    let index = r["row_index"].as_u64().and_then(|i| usize::try_from(i).ok());
                    let line = index.and_then(|i| rows.get(i)).map(|row| row.line);
                    json!({"line": line, "row_index": r["row_index"], "phone": r["phone"], "reason": r["reason"]})
                })
                .collect()
        })
        .unwrap_or_default();
    summarise_invalid(&invalid);
    let mut status = created["status"].as_str().unwrap_or("").to_owned();
    if args.launch && matches!(status.as_str(), "scheduled" | "draft" | "paused") {
        let launched = client
            .call(
                reqwest::Method::POST,
                &format!("{}/launch", campaign_path(&campaign_id)?),
                Some(&json!({})),
            )
            .await?;
        status = launched["status"].as_str().unwrap_or("").to_owned();
    }
    let mut summary = json!({
        "campaign_id": campaign_id,
        "kind": match args.kind { Kind::Sms => "sms", Kind::Voice => "voice" },
        "status": status,
        "rows": rows.len(),
        "valid_count": created["valid_count"],
        "invalid_count": invalid.len(),
        "invalid": invalid,
    });
    if args.wait {
        let last = follow(&client, &campaign_path(&campaign_id)?, Duration::from_secs(1)).await?;
        summary["status"] = last["status"].clone();
        summary["counts"] = counts(&last);
    }
    print(&summary);
    Ok(())
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    let path = campaign_path(&args.campaign_id)?;
    let campaign = if args.once {
        client.call(reqwest::Method::GET, &format!("{path}?recipients_limit=1"), None).await?
    } else {
        let every = Duration::from_secs_f64(args.every.clamp(0.05, 3600.0));
        follow(&client, &format!("{path}?recipients_limit=1"), every).await?
    };
    print(&counts(&campaign));
    Ok(())
}

/// Runs `nixflex campaigns …`.
///
/// # Errors
/// A bad CSV, the server unreachable or refusing the request.
pub async fn run(command: CampaignsCommand) -> anyhow::Result<()> {
    match command {
        CampaignsCommand::Create(args) => create(args).await,
        CampaignsCommand::Status(args) => status(args).await,
        CampaignsCommand::Launch { campaign_id, server } => {
            let client = Client::new(&server)?;
            let launched = client
                .call(
                    reqwest::Method::POST,
                    &format!("{}/launch", campaign_path(&campaign_id)?),
                    Some(&json!({})),
                )
                .await?;
            print(&launched);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_keep_lines_and_variables() {
        let rows =
            read_rows("phone,name,day\n+447700900001,Ann,Mon\n\n+447700900002,,Tue\nbad,Bob,\n")
                .unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[0].variables.get("name").map(String::as_str), Some("Ann"));
        assert_eq!(rows[1].line, 4);
        assert!(!rows[1].variables.contains_key("name"));
        assert_eq!((rows[2].line, rows[2].phone.as_str()), (5, "bad"));
        assert!(read_rows("number,name\n+447700900001,Ann\n").is_err());
        let aliased = read_rows("Phone_Number\n+447700900001\n").unwrap();
        assert_eq!(aliased[0].phone, "+447700900001");
    }

    #[test]
    fn campaign_ids_pick_the_endpoint() {
        assert_eq!(
            campaign_path("smsc_0123456789abcdef").unwrap(),
            "/v1/sms/campaigns/smsc_0123456789abcdef"
        );
        assert_eq!(
            campaign_path("camp_0123456789abcdef").unwrap(),
            "/v1/calls/batch/camp_0123456789abcdef"
        );
        assert!(campaign_path("call_1").is_err());
    }
}
