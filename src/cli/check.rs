//! `lariat check`: validates a config, connects to every tool source, lists what each
//! model offers (to the admin, or to one key's user with `--as`), and with `--probe`
//! asks every provider for its models. Problems go to stderr as `FILE: `key`: reason`
//! and make the exit status non-zero; warnings are printed but do not.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use lariat::config::{Access, AnswerWhen, Config};
use lariat::globs::Globs;
use lariat::store::Store;
use lariat::tools::{Registry, mcp};
use lariat::upstream::probe;

use super::say;

/// What `check` was asked to do besides validating.
pub struct Options {
    /// Ask each provider's `/models`, with this timeout.
    pub probe: Option<Duration>,
    /// Show the models and tools of this key's user instead of the admin view.
    pub as_user: Option<String>,
}

/// Whose tools `check` lists.
struct View {
    who: String,
    access: Access,
    /// Models this view may use; `None`: all.
    models: Option<Globs>,
}

pub fn run(path: &Path, options: &Options) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{} problem(s) found", errors.errors.len());
            return ExitCode::FAILURE;
        }
    };
    say!("{}: config ok", path.display());
    for warning in &config.warnings {
        eprintln!("{}: warning: {warning}", path.display());
    }
    say!("listen: {}", config.server.listen);
    if config.keys.is_empty() {
        say!("no [[keys]]: lariat serves without authentication, on loopback only");
    }
    match (&config.compaction.summarize, config.compaction.enabled) {
        (_, false) => say!("compaction: off"),
        (Some(summarize), true) => say!("compaction: on, dropped turns summarised by {}", summarize.target.label()),
        (None, true) => say!("compaction: on, dropped turns are not summarised"),
    }
    let view = match view(&config, options.as_user.as_deref()) {
        Ok(view) => view,
        Err(reason) => {
            eprintln!("{}: `--as`: {reason}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let problems = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(async {
            let mut problems = check_tools(path, &config, &view).await;
            if let Some(timeout) = options.probe {
                problems += probe_providers(path, &config, timeout).await;
            }
            problems
        }),
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

/// The admin view, or that of the first key whose `user` is `user`.
fn view(config: &Config, user: Option<&str>) -> Result<View, String> {
    let Some(user) = user else {
        return Ok(View { who: "admin".into(), access: Access::Admin, models: None });
    };
    match config.keys.iter().find(|k| k.user == user) {
        Some(key) => {
            Ok(View { who: format!("{user}, {}", key.access), access: key.access, models: key.models.clone() })
        }
        None => {
            let users: Vec<&str> = config.keys.iter().map(|k| k.user.as_str()).collect();
            Err(if users.is_empty() {
                format!("no [[keys]] are configured, so there is no user `{user}`")
            } else {
                format!("no [[keys]] entry has user `{user}` (there are: {})", users.join(", "))
            })
        }
    }
}

async fn check_tools(path: &Path, config: &Config, view: &View) -> usize {
    let mut problems = check_store(path, &config.store).await;
    let registry = match Registry::new(&config.tools) {
        Ok(registry) => registry,
        Err(e) => {
            eprintln!("{}: `tools`: {e}", path.display());
            return problems + 1;
        }
    };
    registry.start();
    let listed = tokio::time::timeout(Duration::from_secs(60), registry.wait_listed()).await;
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
        if !view.models.as_ref().is_none_or(|m| m.matches(name)) {
            say!("model {name}: not offered to {}", view.who);
            continue;
        }
        let chain: Vec<_> = model.chain.iter().map(|e| e.label()).collect();
        say!("model {name}: {}", chain.join(" → "));
        if let Some(answer) = &model.answer {
            let chain: Vec<_> = answer.chain.iter().map(|e| e.label()).collect();
            let when = match answer.when {
                AnswerWhen::Always => "always",
                AnswerWhen::ToolsUsed => "when tools were used",
            };
            say!("  answer ({}, {when}): {}", answer.name, chain.join(" → "));
        }
        let tools = registry.for_request(name, model.tools.as_ref(), view.access);
        let names: Vec<&str> = tools.names().collect();
        say!("  tools ({}): {}", view.who, if names.is_empty() { "none".to_owned() } else { names.join(", ") });
    }
    problems
}

/// Builds the store and asks it to answer (Redis: connect and PING), so a wrong URL or
/// password shows up here rather than on the first suspended request.
async fn check_store(path: &Path, config: &lariat::config::Store) -> usize {
    let store = match Store::from_config(config) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("{}: `store`: {e}", path.display());
            return 1;
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), store.ping()).await {
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

/// Asks every provider for its models, all at once; each verdict on one line. A
/// provider that answers but does not list a model a chain names gets a note (some
/// providers list only part of what they serve, so it is not counted as a problem).
async fn probe_providers(path: &Path, config: &Config, timeout: Duration) -> usize {
    let probes = config.providers.values().map(|p| async move { (p, probe::probe(p, timeout).await) });
    let mut problems = 0;
    for (provider, verdict) in futures::future::join_all(probes).await {
        let url = probe::models_url(provider);
        let probe::Verdict::Ok { models } = &verdict else {
            eprintln!("{}: `providers.{}`: GET {url}: {verdict}", path.display(), provider.name);
            problems += 1;
            continue;
        };
        say!("provider {}: GET {url}: {verdict}", provider.name);
        let Some(listed) = models else { continue };
        let mut named: Vec<&str> = config
            .models
            .values()
            .flat_map(|m| m.chain.iter().chain(m.answer.iter().flat_map(|a| &a.chain)))
            .filter(|e| e.provider.name == provider.name)
            .map(|e| e.model.as_str())
            .collect();
        named.sort_unstable();
        named.dedup();
        for model in named.into_iter().filter(|m| !listed.iter().any(|l| l == m)) {
            say!("  note: `{model}` is not in its list of models");
        }
    }
    problems
}
