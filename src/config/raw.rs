//! The TOML file exactly as written: strict (`deny_unknown_fields`) serde types,
//! defaults filled in, nothing validated yet. `validate` turns these into domain types.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    pub models: BTreeMap<String, RawModel>,
    #[serde(default)]
    pub tools: RawTools,
    #[serde(default)]
    pub confirm: RawConfirm,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub keys: Vec<RawKey>,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub compaction: RawCompaction,
    /// Per-user overrides for people a frontend forwards (`forwarded_identity`).
    #[serde(default)]
    pub users: BTreeMap<String, RawUser>,
    #[serde(default)]
    pub responses: RawResponses,
}

/// The Responses API's stored responses.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawResponses {
    /// How long a stored response can be continued or fetched.
    pub ttl_s: u64,
}

impl Default for RawResponses {
    fn default() -> Self {
        Self { ttl_s: 7 * 24 * 3600 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub access: Option<String>,
    #[serde(default)]
    pub confirm_allow: Vec<String>,
    #[serde(default)]
    pub confirm_deny: Vec<String>,
}

/// Fitting every upstream call into its target's context budget.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCompaction {
    pub enabled: bool,
    /// Share of the context window a prompt may use.
    pub ratio: f64,
    /// Most recent tool results left intact by the first step.
    pub keep_recent: usize,
    /// Older tool results are cut to this many characters.
    pub head_chars: usize,
    /// Recent tool results are cut to this many characters when the first step is not enough.
    pub recent_cap_chars: usize,
    /// Tokens kept for the reply when the request sets no `max_tokens`.
    pub reply_reserve: usize,
    /// Window assumed for chain entries without `context_window` (0: none; such
    /// targets are compacted only after they refuse a prompt as too long).
    pub default_context_window: u32,
    /// A (cheap) target that summarises the turns compaction drops, in the form of a
    /// chain entry: `"provider/model"` or a table. Absent: dropped turns are dropped.
    pub summarize_with: Option<toml::Value>,
    /// The longest summary, in tokens (the summariser's `max_tokens`).
    pub summary_max_tokens: u32,
    /// How long one summary may take before the turns are dropped after all.
    pub summary_timeout_s: f64,
}

impl Default for RawCompaction {
    fn default() -> Self {
        let policy = crate::compact::Policy::default();
        Self {
            enabled: true,
            ratio: policy.ratio,
            keep_recent: policy.keep_recent,
            head_chars: policy.head_chars,
            recent_cap_chars: policy.recent_cap_chars,
            reply_reserve: policy.reply_reserve,
            default_context_window: 0,
            summarize_with: None,
            summary_max_tokens: 512,
            summary_timeout_s: 30.0,
        }
    }
}

/// Retry, backoff and cool-down policy shared by every chain walk.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    /// Retries of the same target after its first attempt (per upstream call).
    pub retries: u32,
    pub backoff_base_s: f64,
    pub backoff_max_s: f64,
    /// Longest `Retry-After` honoured; a longer one moves on to the next target.
    pub retry_after_max_s: f64,
    /// Consecutive failed calls after which a target cools down.
    pub cooldown_after: u32,
    pub cooldown_s: f64,
    /// Largest non-streaming upstream answer read.
    pub max_response_bytes: u64,
    /// How long an idle pooled upstream connection is kept.
    pub pool_idle_timeout_s: f64,
    /// Idle pooled connections kept per upstream host.
    pub pool_max_idle_per_host: usize,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            retries: 2,
            backoff_base_s: 0.25,
            backoff_max_s: 8.0,
            retry_after_max_s: 30.0,
            cooldown_after: 3,
            cooldown_s: 30.0,
            max_response_bytes: 32 * 1024 * 1024,
            pool_idle_timeout_s: 30.0,
            pool_max_idle_per_host: 64,
        }
    }
}

/// Timeouts settable on a provider and overridden per chain entry (the same four
/// keys in both places; spelt out because `flatten` defeats `deny_unknown_fields`).
#[derive(Debug, Default, Clone, Copy)]
pub struct RawTimeouts {
    pub connect_timeout_s: Option<f64>,
    pub first_byte_timeout_s: Option<f64>,
    pub stall_timeout_s: Option<f64>,
    pub timeout_s: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: String,
    pub max_body_bytes: u64,
    pub max_rounds: u32,
    /// How long in-flight requests may run after SIGTERM before the process exits.
    pub shutdown_timeout_s: f64,
    /// Interval of SSE keep-alive comments.
    pub keepalive_s: f64,
    /// Largest single SSE event accepted from an upstream.
    pub max_event_bytes: u64,
    /// Answer 404 instead of 403 when a key asks for a model it may not use.
    pub hide_forbidden_models: bool,
    /// A request's headers must be complete this long after its first byte (and a
    /// new connection must send them this long after it was accepted).
    pub header_read_timeout_s: f64,
    /// A request's body must be complete this long after its headers, plus the time
    /// what has arrived would take at `body_min_rate_bytes_s`.
    pub body_read_timeout_s: f64,
    pub body_min_rate_bytes_s: u64,
    /// A keep-alive connection waiting for its next request is closed after this.
    pub idle_timeout_s: f64,
    /// Open client connections at most; see `server::limits` for what happens beyond.
    pub max_connections: usize,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// Threads serving connections, each with its own runtime; 0: one per CPU core.
    pub threads: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 10 * 1024 * 1024,
            max_rounds: 10,
            shutdown_timeout_s: 30.0,
            keepalive_s: 10.0,
            max_event_bytes: 4 * 1024 * 1024,
            hide_forbidden_models: false,
            header_read_timeout_s: 10.0,
            body_read_timeout_s: 60.0,
            body_min_rate_bytes_s: 16 * 1024,
            idle_timeout_s: 75.0,
            max_connections: 10_000,
            max_header_bytes: 64 * 1024,
            threads: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub base_url: String,
    pub api_key: Option<String>,
    #[serde(default)]
    pub kind: ProviderKind,
    pub connect_timeout_s: Option<f64>,
    pub first_byte_timeout_s: Option<f64>,
    pub stall_timeout_s: Option<f64>,
    pub timeout_s: Option<f64>,
    pub retries: Option<u32>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    #[default]
    Openai,
    /// Open WebUI serves its OpenAI-compatible API under `/api`.
    Openwebui,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    /// Entries are `"provider/model"` strings or `RawChainTable`s; parsed in `validate`
    /// so that a bad entry gets an error naming its own keys.
    pub chain: Vec<toml::Value>,
    pub description: Option<String>,
    pub system_prompt: Option<String>,
    pub tools: Option<Vec<String>>,
    pub max_rounds: Option<u32>,
    #[serde(default)]
    pub inject_datetime: bool,
    /// A target (`"provider/model"` or a chain-entry table) or a virtual model's name.
    pub answer_with: Option<toml::Value>,
    pub answer_when: Option<AnswerWhen>,
    pub answer_fallback: Option<AnswerFallback>,
    pub gather_prompt: Option<String>,
    pub brief_result_chars: Option<usize>,
    pub brief_max_chars: Option<usize>,
    pub progress: Option<Progress>,
}

/// How a streamed response shows what the loop is doing while it works.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Progress {
    #[default]
    Off,
    /// Open WebUI's status lines: chunks with an `event` member, no choices.
    Status,
    /// Lines as `delta.reasoning_content`, shown as a "thinking" block.
    Reasoning,
    /// Plain lines in the answer's text.
    Content,
}

impl std::str::FromStr for Progress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(Self::Off),
            "status" => Ok(Self::Status),
            "reasoning" => Ok(Self::Reasoning),
            "content" => Ok(Self::Content),
            other => Err(format!("unknown progress `{other}` (expected off, status, reasoning or content)")),
        }
    }
}

/// When the answer model writes the reply.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AnswerWhen {
    #[default]
    Always,
    /// Only when the loop called a tool; otherwise the loop model's answer stands.
    ToolsUsed,
}

/// What a request gets when every answer target failed.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AnswerFallback {
    /// A 502 (or an error event) naming the answer targets.
    #[default]
    Error,
    /// The loop model's own closing text.
    Loop,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChainTable {
    pub target: String,
    pub context_window: Option<u32>,
    pub max_rounds: Option<u32>,
    pub retries: Option<u32>,
    pub connect_timeout_s: Option<f64>,
    pub first_byte_timeout_s: Option<f64>,
    pub stall_timeout_s: Option<f64>,
    pub timeout_s: Option<f64>,
}

impl RawProvider {
    pub fn timeouts(&self) -> RawTimeouts {
        RawTimeouts {
            connect_timeout_s: self.connect_timeout_s,
            first_byte_timeout_s: self.first_byte_timeout_s,
            stall_timeout_s: self.stall_timeout_s,
            timeout_s: self.timeout_s,
        }
    }
}

impl RawChainTable {
    pub fn timeouts(&self) -> RawTimeouts {
        RawTimeouts {
            connect_timeout_s: self.connect_timeout_s,
            first_byte_timeout_s: self.first_byte_timeout_s,
            stall_timeout_s: self.stall_timeout_s,
            timeout_s: self.timeout_s,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTools {
    #[serde(default)]
    pub mcp: BTreeMap<String, RawMcp>,
    #[serde(default)]
    pub http: BTreeMap<String, RawHttpTool>,
    #[serde(default)]
    pub builtin: RawBuiltins,
    /// Per-call timeout for every tool unless the source overrides it.
    pub timeout_s: Option<f64>,
    /// Largest tool result (in bytes) handed back to the model.
    pub max_output_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcp {
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Variables of lariat's own environment handed to a stdio server as they are.
    #[serde(default)]
    pub env_passthrough: Vec<String>,
    pub url: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "yes")]
    pub prefix: bool,
    pub min_access: Option<String>,
    pub timeout_s: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpTool {
    pub description: String,
    pub url: String,
    #[serde(default = "post")]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub parameters: Option<toml::Value>,
    pub min_access: Option<String>,
    pub timeout_s: Option<f64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawBuiltins {
    pub current_time: Option<RawCurrentTime>,
    pub fetch_url: Option<RawFetchUrl>,
}

/// Built-ins are on unless a section says `enabled = false`, so `Default` is manual.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCurrentTime {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub min_access: Option<String>,
}

impl Default for RawCurrentTime {
    fn default() -> Self {
        Self { enabled: true, min_access: None }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFetchUrl {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub min_access: Option<String>,
    /// Hosts or CIDRs that may be fetched even though they resolve to private addresses.
    #[serde(default)]
    pub allow_private: Vec<String>,
    pub max_bytes: Option<u64>,
    pub timeout_s: Option<f64>,
}

impl Default for RawFetchUrl {
    fn default() -> Self {
        Self { enabled: true, min_access: None, allow_private: Vec::new(), max_bytes: None, timeout_s: None }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfirm {
    pub tools: Vec<String>,
    pub ttl_s: u64,
    pub yes_words: Option<Vec<String>>,
    pub no_words: Option<Vec<String>>,
}

impl Default for RawConfirm {
    fn default() -> Self {
        Self { tools: Vec::new(), ttl_s: 900, yes_words: None, no_words: None }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    #[serde(default)]
    pub kind: StoreKind,
    pub url: Option<String>,
    pub prefix: Option<String>,
    pub capacity: Option<u64>,
    /// Largest single entry (a checkpoint holds a whole conversation).
    pub max_entry_bytes: Option<u64>,
    /// Memory only: the most bytes all entries may take together.
    pub max_bytes: Option<u64>,
    /// The most bytes one client key's paused conversations may take together.
    pub max_bytes_per_key: Option<u64>,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub key: Option<String>,
    pub key_sha256: Option<String>,
    pub user: String,
    pub access: Option<String>,
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub confirm_allow: Vec<String>,
    #[serde(default)]
    pub confirm_deny: Vec<String>,
    /// Overrides the model's `progress` for this key's requests.
    pub progress: Option<Progress>,
    /// `"openwebui"` or a list of header names naming the end user.
    pub forwarded_identity: Option<toml::Value>,
    /// The frontend's roles → access levels (capped at the key's own).
    pub role_access: Option<BTreeMap<String, String>>,
}

fn yes() -> bool {
    true
}

fn post() -> String {
    "POST".into()
}
