//! The `lariat` command: `serve`, `check` and `health`.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use lariat::config::Config;
use lariat::server::{self, AppState};
use lariat::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(name = "lariat", version, about = "OpenAI-compatible gateway that runs the agent loop for its clients")]
struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value = "human")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway.
    Serve {
        /// The TOML config file.
        #[arg(long, env = "LARIAT_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config file, report every problem, and exit non-zero if there are any.
    Check {
        #[arg(long, env = "LARIAT_CONFIG")]
        config: PathBuf,
        /// Also ask every provider for its models (`GET {base_url}/models`) and say
        /// whether it answers: ok, refused (with the status), unreachable, timeout.
        #[arg(long)]
        probe: bool,
        /// Seconds each provider has to answer the probe.
        #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
        probe_timeout: f64,
        /// List the models and tools the key of this user gets, not the admin's.
        #[arg(long = "as", value_name = "KEY_USER")]
        as_user: Option<String>,
    },
    /// Ask a running lariat's `/health`; exit 0 if it answers 200 (for container
    /// health checks: no curl needed).
    Health {
        /// Where lariat listens; default: the config's `server.listen` (0.0.0.0 asked
        /// on 127.0.0.1) if a config is given, else 127.0.0.1:8080.
        #[arg(long, value_name = "HOST:PORT")]
        addr: Option<String>,
        #[arg(long, env = "LARIAT_CONFIG")]
        config: Option<PathBuf>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
        timeout: f64,
    },
}

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = Cli::parse();
    match args.command {
        Command::Check { config, probe, probe_timeout, as_user } => {
            let probe = probe.then(|| seconds(probe_timeout));
            cli::check::run(&config, &cli::check::Options { probe, as_user })
        }
        Command::Health { addr, config, timeout } => health(addr.as_deref(), config.as_deref(), seconds(timeout)),
        Command::Serve { config } => {
            telemetry::init_logging(args.log_format);
            match serve(&config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("lariat: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// A duration from a command-line number of seconds (a bad one: a tenth of a second
/// at least, a day at most).
fn seconds(s: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(if s.is_finite() { s.clamp(0.1, 86_400.0) } else { 10.0 })
}

fn health(addr: Option<&str>, config: Option<&std::path::Path>, timeout: std::time::Duration) -> ExitCode {
    // Only the listen address is wanted from the config; one that does not load
    // leaves the default (the server could not have started from it either).
    let listen = match (addr, config) {
        (None, Some(path)) => Config::load(path).ok().map(|c| c.server.listen),
        _ => None,
    };
    match cli::health::target(addr, listen) {
        Ok(target) => cli::health::run(target, timeout),
        Err(e) => {
            eprintln!("lariat health: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Arc::new(Config::load(path)?);
    lariat::redact::redact_logs(&config.redactor);
    for warning in &config.warnings {
        tracing::warn!(key = %warning.key, "config: {}", warning.message);
    }
    // This thread is the first of the serving threads; `serve_threads` starts the others.
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        let state = AppState::new(config.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        state.start();
        if state.keys.is_open() {
            tracing::warn!(listen = %config.server.listen, "no [[keys]] configured: serving WITHOUT authentication, on loopback only");
        }
        let threads = config.server.threads;
        tracing::info!(listen = %listener.local_addr()?, models = config.models.len(), threads, version = env!("CARGO_PKG_VERSION"), "lariat listening");
        let limits = config.server.connections;
        server::serve_threads(server::router(state), listener, threads, limits, server::shutdown_signal())
            .await
            .context("serving")
    })
}
