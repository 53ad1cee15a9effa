//! The `lariat` command: `serve` and `check`.

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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Serve { config } => {
            telemetry::init_logging(cli.log_format);
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

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            println!("{}: ok", path.display());
            println!("listen: {}", config.server.listen);
            for (name, model) in &config.models {
                let chain: Vec<_> = model.chain.iter().map(|e| e.label()).collect();
                println!("model {name}: {}", chain.join(" → "));
            }
            if config.keys.is_empty() {
                println!("no [[keys]]: lariat serves without authentication, on loopback only");
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{} problem(s) found", errors.errors.len());
            ExitCode::FAILURE
        }
    }
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Arc::new(Config::load(path)?);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        let state = AppState::new(config.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        if state.keys.is_open() {
            tracing::warn!(listen = %config.server.listen, "no [[keys]] configured: serving WITHOUT authentication, on loopback only");
        }
        tracing::info!(listen = %listener.local_addr()?, models = config.models.len(), version = env!("CARGO_PKG_VERSION"), "lariat listening");
        let deadline = config.server.shutdown_timeout;
        server::serve(server::router(state), listener, deadline, server::shutdown_signal()).await.context("serving")
    })
}
