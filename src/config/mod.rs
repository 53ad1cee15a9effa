//! Configuration: one TOML file → `${VAR}` expansion → strict raw types → validated
//! domain types. After `load` returns, nothing reads the environment or the file again.

mod access;
pub(crate) mod answer;
mod bounds;
mod expand;
mod identity;
mod raw;
mod secrets;
mod validate;
mod warnings;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::globs::Globs;
use crate::redact::Redactor;

pub use access::{Access, key_digest};
pub use raw::{AnswerFallback, AnswerWhen, Progress, ProviderKind, StoreKind};
pub use warnings::ConfigWarning;

/// The validated configuration lariat runs with.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub server: Server,
    pub providers: BTreeMap<String, Arc<Provider>>,
    pub models: BTreeMap<String, Arc<VirtualModel>>,
    pub tools: Tools,
    pub confirm: Confirm,
    pub store: Store,
    pub store_limits: StoreLimits,
    pub keys: Vec<Key>,
    pub upstream: UpstreamPolicy,
    pub compaction: Compaction,
    pub users: BTreeMap<String, UserOverride>,
    pub responses: Responses,
    /// Blanks every configured secret out of what leaves lariat or enters a log.
    pub redactor: Arc<Redactor>,
    /// Valid, but probably not meant (an API key that expanded to nothing, ...):
    /// logged at start-up and printed by `lariat check`.
    pub warnings: Vec<ConfigWarning>,
}

/// How upstream calls are kept inside their targets' context budgets.
#[derive(Debug, Clone)]
pub struct Compaction {
    pub enabled: bool,
    pub policy: crate::compact::Policy,
    /// For chain entries without `context_window`.
    pub default_window: Option<u32>,
    /// Summarise dropped turns instead of only dropping them; off by default.
    pub summarize: Option<Summarize>,
}

/// Where and how the turns compaction drops are summarised.
#[derive(Debug, Clone)]
pub struct Summarize {
    pub target: ChainEntry,
    /// The summariser's `max_tokens`; compaction keeps this much room for the summary.
    pub max_tokens: u32,
    /// The whole summary, every chunk of it; past it the turns are dropped after all.
    pub timeout: Duration,
}

/// How chain walks retry, back off and cool targets down.
#[derive(Debug, Clone)]
pub struct UpstreamPolicy {
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub retry_after_max: Duration,
    pub cooldown_after: u32,
    pub cooldown: Duration,
}

/// Deadlines of one upstream attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP (and TLS) connection set-up.
    pub connect: Duration,
    /// Streams: until the first chunk. (A non-streaming answer has only `total`.)
    pub first_byte: Duration,
    /// Streams: the longest pause between two chunks.
    pub stall: Duration,
    /// The whole exchange, stream included.
    pub total: Duration,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub max_rounds: u32,
    pub shutdown_timeout: Duration,
    pub keepalive: Duration,
    pub max_event_bytes: usize,
    pub hide_forbidden_models: bool,
    pub connections: ConnectionLimits,
    /// Threads serving connections, each running its own single-threaded runtime.
    pub threads: NonZeroUsize,
}

/// What one client connection may hold of the server: time to send a request, time
/// idle between requests, and how many connections there may be at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From a request's first byte (or a new connection's acceptance) to its last header.
    pub header_read_timeout: Duration,
    /// From a request's headers to the last byte of its body, extended by the time
    /// the bytes received would take at `body_min_rate` (bytes per second), so a big
    /// body on a slow link arrives and a trickle is cut.
    pub body_read_timeout: Duration,
    pub body_min_rate: u64,
    /// A keep-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// Larger declared or sent bodies get 413.
    pub max_body_bytes: usize,
    /// After SIGTERM/SIGINT, how long in-flight requests may finish.
    pub shutdown_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            body_min_rate: 16 * 1024,
            idle_timeout: Duration::from_secs(75),
            max_connections: 10_000,
            max_header_bytes: 64 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// An upstream OpenAI-compatible endpoint.
#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    /// Full URL of the chat completions endpoint (`kind` already applied).
    pub chat_url: String,
    pub api_key: Option<SecretString>,
    pub headers: Vec<(String, SecretString)>,
    pub timeouts: Timeouts,
    pub retries: u32,
    /// Largest non-streaming answer read (`upstream.max_response_bytes`).
    pub max_response_bytes: usize,
    /// The connection pool (`upstream.pool_*`): how long an idle connection is kept,
    /// and how many idle ones per host.
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// The config's redactor: what this provider sends back is cleaned of every
    /// configured secret, not only its own.
    pub redactor: Arc<Redactor>,
}

/// What a client names in `model`: a chain of upstream targets plus loop settings.
#[derive(Debug)]
pub struct VirtualModel {
    pub name: String,
    pub description: Option<String>,
    pub chain: Vec<ChainEntry>,
    pub system_prompt: Option<String>,
    /// Server tools the model may use; `None` means every tool.
    pub tools: Option<Globs>,
    pub max_rounds: u32,
    pub inject_datetime: bool,
    /// A stronger model that writes the reply from what the loop gathered.
    pub answer: Option<AnswerModel>,
    /// What a streaming client sees while the loop works.
    pub progress: Progress,
}

/// The answer model of a virtual model (`answer_with` and its settings).
#[derive(Debug, Clone)]
pub struct AnswerModel {
    /// What `answer_with` named: a virtual model or a target.
    pub name: String,
    pub chain: Vec<ChainEntry>,
    pub when: AnswerWhen,
    pub fallback: AnswerFallback,
    /// Appended to the loop model's system message: gather, do not write the reply.
    pub gather_prompt: String,
    /// Each tool result in the brief is cut to this many characters.
    pub result_chars: usize,
    /// The whole brief is cut to this many characters (and to the answer target's budget).
    pub brief_chars: usize,
}

/// One upstream target of a chain.
#[derive(Debug, Clone)]
pub struct ChainEntry {
    /// `provider/model`, as reported in `x-lariat-upstream`, logs and metrics.
    pub label: Arc<str>,
    pub provider: Arc<Provider>,
    pub model: String,
    pub context_window: Option<u32>,
    pub max_rounds: Option<u32>,
    /// The provider's, overridden by the entry.
    pub timeouts: Timeouts,
    pub retries: u32,
}

impl ChainEntry {
    /// `provider/model`, as reported in `x-lariat-upstream` and logs.
    pub fn label(&self) -> &str {
        &self.label
    }
}

#[derive(Debug)]
pub struct Tools {
    pub mcp: Vec<McpServer>,
    pub http: Vec<HttpTool>,
    pub current_time: Option<BuiltinCurrentTime>,
    pub fetch_url: Option<BuiltinFetchUrl>,
    pub timeout: Duration,
    pub max_output_bytes: usize,
    /// Tool results and MCP stderr are cleaned of configured secrets with this.
    pub redactor: Arc<Redactor>,
}

#[derive(Debug)]
pub struct McpServer {
    pub name: String,
    pub transport: McpTransport,
    pub prefix: bool,
    pub min_access: Access,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum McpTransport {
    /// `env` is the child's whole environment: a minimal set taken from lariat's
    /// (`PATH`, `HOME`, ...), then `env_passthrough`, then the configured `env`.
    Stdio {
        command: String,
        args: Vec<String>,
        env: Vec<(String, SecretString)>,
    },
    Http {
        url: String,
        headers: Vec<(String, SecretString)>,
    },
}

#[derive(Debug)]
pub struct HttpTool {
    pub name: String,
    pub description: String,
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, SecretString)>,
    pub parameters: serde_json::Value,
    pub min_access: Access,
    pub timeout: Duration,
}

#[derive(Debug)]
pub struct BuiltinCurrentTime {
    pub min_access: Access,
}

#[derive(Debug)]
pub struct BuiltinFetchUrl {
    pub min_access: Access,
    pub allow_private: Vec<String>,
    pub max_bytes: usize,
    pub timeout: Duration,
}

/// Stored responses of the Responses API.
#[derive(Debug, Clone, Copy)]
pub struct Responses {
    /// How long `previous_response_id` and `GET /v1/responses/{id}` find one.
    pub ttl: Duration,
}

#[derive(Debug)]
pub struct Confirm {
    pub tools: Globs,
    pub ttl: Duration,
    pub yes_words: Vec<String>,
    pub no_words: Vec<String>,
}

#[derive(Debug)]
pub enum Store {
    Memory { capacity: u64 },
    Redis { url: SecretString, prefix: String },
}

/// Byte bounds of the store: a full store refuses, it never drops a waiting entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    pub max_entry_bytes: usize,
    /// Memory only (Redis has its own `maxmemory`).
    pub max_bytes: usize,
    /// What one client key's paused conversations may hold together (both backends).
    pub max_bytes_per_key: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        // A quarter of the total: one key (one person behind a forwarding frontend)
        // can never take the room everyone else needs.
        Self { max_entry_bytes: 32 * 1024 * 1024, max_bytes: 512 * 1024 * 1024, max_bytes_per_key: 128 * 1024 * 1024 }
    }
}

/// A client key: who the caller is and what they may do.
#[derive(Debug)]
pub struct Key {
    pub sha256: [u8; 32],
    pub user: String,
    pub access: Access,
    /// Virtual models this key may use; `None` means all.
    pub models: Option<Globs>,
    pub confirm_allow: Globs,
    pub confirm_deny: Globs,
    pub progress: Option<Progress>,
    /// The end user comes from a frontend's headers (one key for all its people).
    pub forwarded: Option<Forwarded>,
}

/// Which headers name the person behind a frontend's key, and what their roles mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// Lower-case names tried in order; the first present is the user.
    pub user_headers: Vec<String>,
    /// The header with the person's role in the frontend, if it sends one.
    pub role_header: Option<String>,
    /// Role → access level; a role not listed gets the lowest level.
    pub role_access: BTreeMap<String, Access>,
    /// The header naming the conversation (Open WebUI's chat id), if the frontend
    /// sends one.
    pub conversation_header: Option<String>,
}

/// Overrides for one forwarded user (`[users."alice@example.com"]`).
#[derive(Debug, Clone)]
pub struct UserOverride {
    pub access: Option<Access>,
    pub confirm_allow: Globs,
    pub confirm_deny: Globs,
}

/// One problem in a config file: the key it concerns and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { key: key.into(), reason: reason.into() }
    }
}

/// Every problem found in one file.
#[derive(Debug)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if e.key.is_empty() {
                write!(f, "{}: {}", self.file.display(), e.reason)?;
            } else {
                write!(f, "{}: `{}`: {}", self.file.display(), e.key, e.reason)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads, expands and validates the file at `path`, reporting every problem found.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let fail = |errors| ConfigErrors { file: path.to_owned(), errors };
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(vec![ConfigError::new("", format!("cannot read file: {e}"))]))?;
        Self::from_toml(path, &text, &|name| std::env::var(name).ok()).map_err(fail)
    }

    /// Parses `text` as if it were the file `path`, reading variables through `env`.
    pub fn from_toml(path: &Path, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, Vec<ConfigError>> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            vec![ConfigError::new("", format!("invalid TOML: {}", e.message())).with_location(text, e.span())]
        })?;
        let mut errors = Vec::new();
        // As written, so a warning can name the variable a value came from.
        let unexpanded_providers = table.get("providers").cloned();
        expand::expand_table(&mut table, "", env, &mut errors);
        let Some(raw) = deserialize_reporting_unknown_keys(table, &mut errors) else {
            return Err(errors);
        };
        match validate::validate(path, raw, env) {
            Ok(mut config) if errors.is_empty() => {
                config.warnings = warnings::collect(unexpanded_providers.as_ref(), &config.providers);
                Ok(config)
            }
            Ok(_) => Err(errors),
            Err(more) => {
                errors.extend(more);
                Err(errors)
            }
        }
    }
}

/// Deserializes the raw config. An unknown key is reported, removed, and parsing
/// retried, so one `check` run names every misspelt key, not just the first.
fn deserialize_reporting_unknown_keys(mut table: toml::Table, errors: &mut Vec<ConfigError>) -> Option<raw::RawConfig> {
    const MAX_UNKNOWN_KEYS: usize = 100;
    for _ in 0..MAX_UNKNOWN_KEYS {
        match serde_path_to_error::deserialize::<_, raw::RawConfig>(table.clone()) {
            Ok(raw) => return Some(raw),
            Err(e) => {
                let message = e.inner().message().to_owned();
                errors.push(ConfigError::new(e.path().to_string(), message.clone()));
                if !(message.starts_with("unknown field") && remove_key(&mut table, e.path())) {
                    return None;
                }
            }
        }
    }
    None
}

/// Removes the value at `path` from `table`; false if the path does not lead anywhere.
fn remove_key(table: &mut toml::Table, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((Segment::Map { key: last }, parents)) = segments.split_last() else { return false };
    let mut root = toml::Value::Table(std::mem::take(table));
    let mut current = Some(&mut root);
    for segment in parents {
        current = match (segment, current) {
            (Segment::Map { key }, Some(toml::Value::Table(t))) => t.get_mut(key.as_str()),
            (Segment::Seq { index }, Some(toml::Value::Array(a))) => a.get_mut(*index),
            _ => None,
        };
    }
    let removed = match current {
        Some(toml::Value::Table(t)) => t.remove(last.as_str()).is_some(),
        _ => false,
    };
    if let toml::Value::Table(t) = root {
        *table = t;
    }
    removed
}

impl ConfigError {
    fn with_location(mut self, text: &str, span: Option<std::ops::Range<usize>>) -> Self {
        if let Some(span) = span {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |p| p + 1) + 1;
            self.reason = format!("line {line}, column {col}: {}", self.reason);
        }
        self
    }
}

#[cfg(test)]
mod tests;
