//! `nixflex`: the server and its admin commands.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use nixflex::config::{Config, FlagOverrides, LogFormat, Signup};
use nixflex::server;

#[derive(Debug, Parser)]
#[command(
    name = "nixflex",
    version,
    about = "Self-hosted voice-AI agents on your own Twilio numbers"
)]
struct Cli {
    /// Path of nixflex.toml (default: $NIXFLEX_CONFIG, else ./nixflex.toml if present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args, Default)]
struct StoreArgs {
    /// Directory for the SQLite database and the generated master key.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// postgres://… to use PostgreSQL instead of SQLite.
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API server (and, as they land, the call engine and workers).
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
        /// Public https base URL the carrier calls back.
        #[arg(long)]
        public_url: Option<String>,
        /// open | closed.
        #[arg(long, value_parser = parse_signup)]
        signup: Option<Signup>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Manage API keys without HTTP.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Check the configuration and the database, and print the effective configuration.
    Doctor {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Inspect background jobs and retry dead ones.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Voice and SMS campaigns from a CSV file, against a running server.
    Campaigns {
        #[command(subcommand)]
        command: nixflex::campaigns::CampaignsCommand,
    },
    /// Benchmarks against a running server.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create an account and its first key; prints the key once, as JSON.
    Create {
        /// Account holder name.
        #[arg(long)]
        name: Option<String>,
        /// Billing/alert e-mail.
        #[arg(long)]
        email: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// Print jobs, newest first, one JSON object per line.
    List {
        /// queued | running | done | dead.
        #[arg(long, value_parser = nixflex::jobs::parse_state)]
        state: Option<nixflex_store::JobState>,
        /// Only jobs of this kind (e.g. call.ended).
        #[arg(long)]
        kind: Option<String>,
        /// At most this many (1-1000).
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Queue a dead job again with fresh attempts; prints it.
    Retry {
        /// The job (job_…).
        job_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Mixed REST load: seeds agents across accounts, then reads and writes at a concurrency.
    Api(nixflex::bench::api::ApiBenchArgs),
    /// N concurrent emulated calls against a `nixflex serve` child with emulated providers.
    Calls(nixflex::bench::calls::CallsBenchArgs),
    /// Background jobs claimed and completed per second, with 1 or more worker nodes.
    Jobs(nixflex::bench::jobs::JobsBenchArgs),
    /// Inbound texts answered by the agent: reply latency and none lost or doubled.
    Sms(nixflex::bench::sms::SmsBenchArgs),
    /// Voice batch campaigns: creation time and memory, dial scheduling overhead per call.
    Campaign(nixflex::bench::campaign::CampaignBenchArgs),
    /// The silence a caller hears when a provider fails, per fault (`stage:mode`).
    Outages(nixflex::bench::outages::OutagesBenchArgs),
    /// Turn-taking in noise: false and missed barge-ins, backchannels, end-of-turn latency.
    Turns(nixflex::bench::turns::TurnsBenchArgs),
}

fn parse_signup(raw: &str) -> Result<Signup, String> {
    match raw {
        "open" => Ok(Signup::Open),
        "closed" => Ok(Signup::Closed),
        _ => Err("expected open or closed".to_owned()),
    }
}

/// Logs go to standard error through a writer thread, so a request never waits for the write
/// (docs/operations.md#logs); colours only on a terminal. Keep the guard: dropping it flushes.
#[must_use = "dropping the guard stops the log writer"]
fn init_tracing(config: &Config) -> tracing_appender::non_blocking::WorkerGuard {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    nixflex::metrics::watch_log_drops(writer.error_counter());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    guard
}

fn load(cli_config: Option<&PathBuf>, flags: &FlagOverrides) -> anyhow::Result<Config> {
    Config::load(cli_config.map(PathBuf::as_path), flags)
}

fn store_flags(store: StoreArgs) -> FlagOverrides {
    FlagOverrides {
        data_dir: store.data_dir,
        database_url: store.database_url,
        ..FlagOverrides::default()
    }
}

#[allow(clippy::print_stdout)]
fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

#[allow(clippy::print_stdout)]
fn print_line(value: &serde_json::Value) {
    println!("{value}");
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { listen, public_url, signup, store } => {
            let flags = FlagOverrides { listen, public_url, signup, ..store_flags(store) };
            let config = load(cli.config.as_ref(), &flags)?;
            let _log = init_tracing(&config);
            tracing::info!(message = "Effective configuration.", config = %config.redacted());
            let running = server::start(config).await?;
            let token = running.shutdown.clone();
            tokio::spawn(async move {
                server::shutdown_signal().await;
                token.cancel();
            });
            running.wait().await
        }
        Command::Keys { command: KeysCommand::Create { name, email, store } } => {
            let config = load(cli.config.as_ref(), &store_flags(store))?;
            let _log = init_tracing(&config);
            let secrets = server::load_master_key(&config)?;
            let store = server::open_store(&config, &secrets).await?;
            let created =
                nixflex_api::routes::keys::provision_account(&*store, &secrets, name, email)
                    .await
                    .context("creating the account")?;
            print_json(&serde_json::to_value(&created)?);
            Ok(())
        }
        Command::Migrate { store } => {
            let config = load(cli.config.as_ref(), &store_flags(store))?;
            let _log = init_tracing(&config);
            let secrets = server::load_master_key(&config)?;
            let store = server::open_store(&config, &secrets).await?;
            print_json(&serde_json::json!({"migrated": true, "database": store.backend()}));
            Ok(())
        }
        Command::Doctor { store } => {
            let config = load(cli.config.as_ref(), &store_flags(store))?;
            let _log = init_tracing(&config);
            let secrets = server::load_master_key(&config)?;
            let store = server::open_store(&config, &secrets).await?;
            store.ping().await?;
            let mut warnings = Vec::new();
            if config.public_url.is_none() {
                warnings.push(
                    "public_url is not set: Twilio cannot reach this server for calls and SMS",
                );
            }
            if config.uses_postgres() && config.master_key.is_none() {
                warnings.push(
                    "PostgreSQL without master_key: every node must share one NIXFLEX_MASTER_KEY",
                );
            }
            print_json(&serde_json::json!({
                "ok": true,
                "database": store.backend(),
                "warnings": warnings,
                "config": config.redacted(),
            }));
            Ok(())
        }
        Command::Jobs { command: JobsCommand::List { state, kind, limit, store } } => {
            let config = load(cli.config.as_ref(), &store_flags(store))?;
            let _log = init_tracing(&config);
            let secrets = server::load_master_key(&config)?;
            let store = server::open_store(&config, &secrets).await?;
            let filter = nixflex_store::JobFilter { state, kind };
            for job in nixflex::jobs::list(&*store, &filter, limit).await? {
                print_line(&job);
            }
            Ok(())
        }
        Command::Jobs { command: JobsCommand::Retry { job_id, store } } => {
            let config = load(cli.config.as_ref(), &store_flags(store))?;
            let _log = init_tracing(&config);
            let secrets = server::load_master_key(&config)?;
            let store = server::open_store(&config, &secrets).await?;
            print_line(&nixflex::jobs::retry(&*store, &job_id).await?);
            Ok(())
        }
        Command::Campaigns { command } => nixflex::campaigns::run(command).await,
        Command::Bench { command: BenchCommand::Api(args) } => {
            let config = load(cli.config.as_ref(), &FlagOverrides::default())?;
            let _log = init_tracing(&config);
            nixflex::bench::api::run(&config, args).await
        }
        Command::Bench { command: BenchCommand::Jobs(args) } => {
            let config = load(cli.config.as_ref(), &FlagOverrides::default())?;
            let _log = init_tracing(&config);
            nixflex::bench::jobs::run(args).await
        }
        Command::Bench { command: BenchCommand::Sms(args) } => {
            let config = load(cli.config.as_ref(), &FlagOverrides::default())?;
            let _log = init_tracing(&config);
            nixflex::bench::sms::run(args).await
        }
        Command::Bench { command: BenchCommand::Campaign(args) } => {
            let config = load(cli.config.as_ref(), &FlagOverrides::default())?;
            let _log = init_tracing(&config);
            nixflex::bench::campaign::run(args).await
        }
        Command::Bench { command: BenchCommand::Turns(args) } => nixflex::bench::turns::run(&args),
        Command::Bench { command: BenchCommand::Outages(args) } => {
            let config = load(cli.config.as_ref(), &FlagOverrides::default())?;
            let _log = init_tracing(&config);
            Box::pin(nixflex::bench::outages::run(args)).await
        }
        Command::Bench { command: BenchCommand::Calls(args) } => {
            let config = load(cli.config.as_ref(), &FlagOverrides::default())?;
            let _log = init_tracing(&config);
            nixflex::bench::calls::run(&config, args).await
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            report(&anyhow::Error::new(error));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report(&error);
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stderr)]
fn report(error: &anyhow::Error) {
    eprintln!("error: {error:#}");
}
