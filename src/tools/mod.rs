//! Server-side tools: the registry of every configured source (built-ins, HTTP
//! tools, MCP servers), the per-request `ToolSet` (model allow-list ∩ access level),
//! and calling one tool.

mod builtin;
mod html;
mod http;
pub mod mcp;
pub mod names;
mod stderr;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::config;
use crate::config::Access;
use crate::globs::Globs;
use crate::openai::{FunctionDef, ToolDef};
use crate::redact::Redactor;

/// Why a tool call failed; becomes the tool result `Tool error: <this>`.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{0}")]
    Failed(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("the tool source is unavailable: {0}")]
    Unavailable(String),
}

impl ToolError {
    /// The same error with every configured secret blanked out of its message.
    fn redacted(self, redactor: &Redactor) -> Self {
        match self {
            Self::Failed(m) => Self::Failed(redactor.clean(m)),
            Self::Refused(m) => Self::Refused(redactor.clean(m)),
            Self::Unavailable(m) => Self::Unavailable(redactor.clean(m)),
        }
    }

    /// An HTTP call of a tool that failed: a timeout, or the innermost cause.
    fn http(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            Self::Failed("the request timed out".into())
        } else {
            Self::Failed(crate::text::root_cause(e))
        }
    }
}

/// One server tool as offered to the model.
#[derive(Debug)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// JSON schema of the arguments (`type: object`).
    pub parameters: Value,
    pub min_access: Access,
    pub timeout: Duration,
    kind: Kind,
    redactor: Arc<Redactor>,
}

#[derive(Debug)]
enum Kind {
    CurrentTime,
    FetchUrl(Arc<builtin::Fetcher>),
    Http(Arc<http::HttpTool>),
    /// Weak: the source owns its tools, so a strong reference would be a cycle.
    Mcp {
        source: Weak<mcp::Source>,
        remote_name: String,
    },
    #[cfg(test)]
    Scripted(Arc<testing::Scripted>),
}

impl Tool {
    pub fn def(&self) -> ToolDef {
        ToolDef {
            kind: "function".into(),
            function: FunctionDef {
                name: self.name.clone(),
                description: Some(self.description.clone()),
                parameters: Some(self.parameters.clone()),
                rest: Map::new(),
            },
            rest: Map::new(),
        }
    }

    /// The URL a call with `args` reads, for a tool known to read one (`fetch_url`;
    /// what an MCP or HTTP tool does with its arguments is not lariat's to guess).
    /// Redacted, as it goes to the client.
    pub fn url_read(&self, args: &Map<String, Value>) -> Option<String> {
        match &self.kind {
            Kind::FetchUrl(_) => args.get("url").and_then(Value::as_str).map(|url| self.redactor.clean(url.to_owned())),
            _ => None,
        }
    }

    /// Runs the tool. Timeouts and output caps are the caller's (the agent's) job.
    /// What it returns, result or error, goes to the model, the client and the audit
    /// log, so it is cleaned of every configured secret here, for every kind of tool.
    pub async fn call(&self, args: Map<String, Value>) -> Result<String, ToolError> {
        match self.run(args).await {
            Ok(text) => Ok(self.redactor.clean(text)),
            Err(error) => Err(error.redacted(&self.redactor)),
        }
    }

    async fn run(&self, args: Map<String, Value>) -> Result<String, ToolError> {
        match &self.kind {
            Kind::CurrentTime => builtin::current_time(&args),
            Kind::FetchUrl(fetcher) => fetcher.fetch(&args).await,
            Kind::Http(tool) => tool.call(args).await,
            Kind::Mcp { source, remote_name } => match source.upgrade() {
                Some(source) => source.call(remote_name, args).await,
                None => Err(ToolError::Unavailable("the MCP server was removed".into())),
            },
            #[cfg(test)]
            Kind::Scripted(scripted) => scripted.run(args).await,
        }
    }

    /// A tool listed by an MCP server.
    pub fn mcp(
        listed: mcp::Listed,
        source: Weak<mcp::Source>,
        access: (Access, Duration),
        redactor: Arc<Redactor>,
    ) -> Self {
        let kind = Kind::Mcp { source, remote_name: listed.remote_name };
        let (min_access, timeout) = access;
        Self {
            name: listed.name,
            description: listed.description,
            parameters: listed.parameters,
            min_access,
            timeout,
            kind,
            redactor,
        }
    }

    fn new(
        name: &str,
        description: &str,
        parameters: Value,
        access: (Access, Duration),
        kind: Kind,
        redactor: &Arc<Redactor>,
    ) -> Self {
        let (min_access, timeout) = access;
        Self {
            name: name.to_owned(),
            description: description.to_owned(),
            parameters,
            min_access,
            timeout,
            kind,
            redactor: redactor.clone(),
        }
    }
}

#[cfg(test)]
pub mod testing {
    //! Tools whose behaviour a test scripts, for driving the loop without servers.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use serde_json::{Map, Value, json};

    use super::{Access, Kind, Registry, Tool, ToolError};

    /// Answers `result` after `delay` (tokio's clock), counting its runs.
    #[derive(Debug)]
    pub struct Scripted {
        delay: Duration,
        result: Result<String, String>,
        runs: AtomicUsize,
        finished: AtomicUsize,
    }

    impl Scripted {
        pub async fn run(&self, _args: Map<String, Value>) -> Result<String, ToolError> {
            self.runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            self.finished.fetch_add(1, Ordering::SeqCst);
            self.result.clone().map_err(ToolError::Failed)
        }

        /// Calls that started.
        pub fn runs(&self) -> usize {
            self.runs.load(Ordering::SeqCst)
        }

        /// Calls that ran to the end (not cancelled).
        pub fn finished(&self) -> usize {
            self.finished.load(Ordering::SeqCst)
        }
    }

    /// A tool named `name` that answers `result` after `delay`, within `timeout`.
    pub fn tool(name: &str, delay: Duration, timeout: Duration, result: Result<&str, &str>) -> (Tool, Arc<Scripted>) {
        let result = result.map(str::to_owned).map_err(str::to_owned);
        let scripted = Arc::new(Scripted { delay, result, runs: AtomicUsize::new(0), finished: AtomicUsize::new(0) });
        let parameters = json!({"type": "object", "properties": {}});
        let kind = Kind::Scripted(scripted.clone());
        let redactor = Arc::new(crate::redact::Redactor::default());
        (Tool::new(name, "A scripted test tool.", parameters, (Access::Guest, timeout), kind, &redactor), scripted)
    }

    impl Registry {
        /// A registry of exactly these tools.
        pub fn of(tools: Vec<Tool>) -> Self {
            Self {
                fixed: tools.into_iter().map(Arc::new).collect(),
                mcp: Vec::new(),
                generation: Arc::new(std::sync::atomic::AtomicU64::new(0)),
                cache: std::sync::RwLock::new(std::collections::HashMap::new()),
            }
        }
    }
}

/// Every configured tool source.
#[derive(Debug)]
pub struct Registry {
    /// Built-ins and HTTP tools: fixed at start-up.
    fixed: Vec<Arc<Tool>>,
    mcp: Vec<Arc<mcp::Source>>,
    /// Bumped whenever a source's tool list changes; invalidates `cache`.
    generation: Arc<AtomicU64>,
    cache: RwLock<HashMap<(String, Access), CachedSet>>,
}

/// A tool set and the registry generation it was built from.
type CachedSet = (u64, Arc<ToolSet>);

impl Registry {
    pub fn new(config: &config::Tools) -> Result<Self, ToolError> {
        let mut fixed = Vec::new();
        if let Some(ct) = &config.current_time {
            fixed.push(Arc::new(Tool::new(
                "current_time",
                builtin::CURRENT_TIME_DESCRIPTION,
                builtin::current_time_schema(),
                (ct.min_access, config.timeout),
                Kind::CurrentTime,
                &config.redactor,
            )));
        }
        if let Some(fetch) = &config.fetch_url {
            let fetcher = builtin::Fetcher::new(fetch)?;
            fixed.push(Arc::new(Tool::new(
                "fetch_url",
                builtin::FETCH_URL_DESCRIPTION,
                builtin::fetch_url_schema(),
                (fetch.min_access, fetch.timeout),
                Kind::FetchUrl(Arc::new(fetcher)),
                &config.redactor,
            )));
        }
        for h in &config.http {
            let kind = Kind::Http(Arc::new(http::HttpTool::new(h)?));
            fixed.push(Arc::new(Tool::new(
                &h.name,
                &h.description,
                h.parameters.clone(),
                (h.min_access, h.timeout),
                kind,
                &config.redactor,
            )));
        }
        let generation = Arc::new(AtomicU64::new(0));
        let mcp = config
            .mcp
            .iter()
            .map(|server| mcp::Source::new(server, generation.clone(), config.redactor.clone()))
            .collect();
        Ok(Self { fixed, mcp, generation, cache: RwLock::new(HashMap::new()) })
    }

    /// Starts the MCP sources (connect, list, supervise). Returns at once.
    pub fn start(&self) {
        for source in &self.mcp {
            source.start();
        }
    }

    /// Waits until every MCP source has tried its first listing (successfully or not).
    pub async fn wait_listed(&self) {
        for source in &self.mcp {
            source.wait_listed().await;
        }
    }

    pub fn mcp_sources(&self) -> &[Arc<mcp::Source>] {
        &self.mcp
    }

    /// Every tool available right now, in a stable order.
    pub fn all(&self) -> Vec<Arc<Tool>> {
        let mut tools = self.fixed.clone();
        for source in &self.mcp {
            tools.extend(source.tools().iter().cloned());
        }
        tools
    }

    /// The server tools a request for `model` by a caller with `access` may use: the
    /// model's allow-list (`None` = all) intersected with what `access` reaches.
    pub fn for_request(&self, model: &str, allow: Option<&Globs>, access: Access) -> Arc<ToolSet> {
        let generation = self.generation.load(Ordering::Acquire);
        let key = (model.to_owned(), access);
        // Read-locked on every request; written only when the tool lists change.
        let cached = self.cache.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key).cloned();
        if let Some((cached_generation, set)) = cached
            && cached_generation == generation
        {
            return set;
        }
        let tools = self
            .all()
            .into_iter()
            .filter(|t| allow.is_none_or(|a| a.matches(&t.name)) && access >= t.min_access)
            .collect();
        let set = Arc::new(ToolSet::new(tools));
        self.cache.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, (generation, set.clone()));
        set
    }
}

/// The server tools of one request, by name.
#[derive(Debug, Default)]
pub struct ToolSet {
    by_name: HashMap<String, Arc<Tool>>,
    defs: Vec<ToolDef>,
}

impl ToolSet {
    fn new(tools: Vec<Arc<Tool>>) -> Self {
        let defs = tools.iter().map(|t| t.def()).collect();
        Self { by_name: tools.into_iter().map(|t| (t.name.clone(), t)).collect(), defs }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Tool>> {
        self.by_name.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Definitions to send upstream, in registry order.
    pub fn defs(&self) -> &[ToolDef] {
        &self.defs
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.defs.iter().map(|d| d.function.name.as_str())
    }
}
