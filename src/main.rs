//! The `lariat` command: `serve` and `check`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use lariat::config::Access;
use lariat::config::Config;
use lariat::server::{self, AppState};
use lariat::store::Store;
use lariat::telemetry::{self, LogFormat};
use lariat::tools::{Registry, mcp};

/// `println!` that stops quietly when stdout is closed (`lariat check | head`): the
/// reader has seen what it wanted, and the exit status still reports the config.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

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

/// Validates the file, connects to every tool source, and lists what each model gets.
fn check(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{} problem(s) found", errors.errors.len());
            return ExitCode::FAILURE;
        }
    };
    say!("{}: config ok", path.display());
    say!("listen: {}", config.server.listen);
    if config.keys.is_empty() {
        say!("no [[keys]]: lariat serves without authentication, on loopback only");
    }
    match (&config.compaction.summarize, config.compaction.enabled) {
        (_, false) => say!("compaction: off"),
        (Some(summarize), true) => say!("compaction: on, dropped turns summarised by {}", summarize.target.label()),
        (None, true) => say!("compaction: on, dropped turns are not summarised"),
    }
    let problems = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(check_tools(path, &config)),
        Err(e) => {
            eprintln!("{}: cannot start the async runtime: {e}", path.display());
            1
        }
    };
    if problems == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("{problems} problem(s) found");
        ExitCode::FAILURE
    }
}

async fn check_tools(path: &std::path::Path, config: &Config) -> usize {
    let mut problems = check_store(path, &config.store).await;
    let registry = match Registry::new(&config.tools) {
        Ok(registry) => registry,
        Err(e) => {
            eprintln!("{}: `tools`: {e}", path.display());
            return problems + 1;
        }
    };
    registry.start();
    let listed = tokio::time::timeout(std::time::Duration::from_secs(60), registry.wait_listed()).await;
    problems += usize::from(listed.is_err());
    for source in registry.mcp_sources() {
        let status = source.status();
        if matches!(status, mcp::Status::Ready { .. }) {
            say!("tool source {}: {status}", source.name());
        } else {
            eprintln!("{}: `tools.mcp.{}`: {status}", path.display(), source.name());
            problems += 1;
        }
    }
    for (name, model) in &config.models {
        let chain: Vec<_> = model.chain.iter().map(|e| e.label()).collect();
        say!("model {name}: {}", chain.join(" → "));
        if let Some(answer) = &model.answer {
            let chain: Vec<_> = answer.chain.iter().map(|e| e.label()).collect();
            let when = match answer.when {
                lariat::config::AnswerWhen::Always => "always",
                lariat::config::AnswerWhen::ToolsUsed => "when tools were used",
            };
            say!("  answer ({}, {when}): {}", answer.name, chain.join(" → "));
        }
        let tools = registry.for_request(name, model.tools.as_ref(), Access::Admin);
        let names: Vec<&str> = tools.names().collect();
        say!("  tools (admin): {}", if names.is_empty() { "none".to_owned() } else { names.join(", ") });
    }
    problems
}

/// Builds the store and asks it to answer (Redis: connect and PING), so a wrong URL or
/// password shows up here rather than on the first suspended request.
async fn check_store(path: &std::path::Path, config: &lariat::config::Store) -> usize {
    let store = match Store::from_config(config) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("{}: `store`: {e}", path.display());
            return 1;
        }
    };
    match tokio::time::timeout(std::time::Duration::from_secs(10), store.ping()).await {
        Ok(Ok(())) => {
            say!("store: {store}: ok");
            0
        }
        Ok(Err(e)) => {
            eprintln!("{}: `store`: {e}", path.display());
            1
        }
        Err(_) => {
            eprintln!("{}: `store`: {store} did not answer within 10 s", path.display());
            1
        }
    }
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Arc::new(Config::load(path)?);
    lariat::redact::redact_logs(&config.redactor);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        let state = AppState::new(config.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        state.start();
        if state.keys.is_open() {
            tracing::warn!(listen = %config.server.listen, "no [[keys]] configured: serving WITHOUT authentication, on loopback only");
        }
        tracing::info!(listen = %listener.local_addr()?, models = config.models.len(), version = env!("CARGO_PKG_VERSION"), "lariat listening");
        let limits = config.server.connections;
        server::serve_with(server::router(state), listener, limits, server::shutdown_signal()).await.context("serving")
    })
}
