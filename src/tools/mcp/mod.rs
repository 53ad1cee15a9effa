//! MCP servers as tool sources: stdio children (spawned in their own process group,
//! supervised, restarted with backoff, killed with lariat) and streamable HTTP.
//!
//! Each source has one supervisor task that owns the connection: it connects, lists
//! the tools, relists on `notifications/tools/list_changed`, notices the server going
//! away (child exit; failed pings over HTTP) and reconnects. Calls go through a
//! cloned `Peer` and never wait for the supervisor.

mod child;
mod lines;
mod streamable;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ClientRequest, ContentBlock,
    Implementation, PingRequest, ResourceContents,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, Peer, RoleClient, ServiceError, ServiceExt};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use tokio::sync::{Notify, watch};

use super::{Tool, ToolError, names, stderr};
use crate::config::Access;
use crate::config::{McpServer, McpTransport};
use crate::redact::Redactor;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
const LIST_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP servers give no sign of going away until a request fails: ping them.
const PING_INTERVAL: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// stderr lines shown in a failure's reason (`/ready`, `lariat check`, the log).
const STDERR_IN_REASON: usize = 5;
/// A connection that lived this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// A tool as the server listed it, named for the model.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub remote_name: String,
    pub description: String,
    pub parameters: Value,
}

/// Where a source stands, for `/ready` and `lariat check`.
#[derive(Debug, Clone)]
pub enum Status {
    Pending,
    Ready { tools: usize },
    Restarting(String),
    Failed(String),
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pending => f.write_str("starting"),
            Self::Ready { tools } => write!(f, "ready ({tools} tools)"),
            Self::Restarting(reason) => write!(f, "restarting after: {reason}"),
            Self::Failed(reason) => write!(f, "failed: {reason}"),
        }
    }
}

#[derive(Debug)]
struct State {
    peer: Option<Peer<RoleClient>>,
    tools: Vec<Arc<Tool>>,
    status: Status,
    /// The stderr of the current (or last) stdio process.
    stderr: Option<Arc<stderr::Tail>>,
}

#[derive(Debug)]
pub struct Source {
    name: String,
    transport: McpTransport,
    prefix: bool,
    min_access: Access,
    timeout: Duration,
    state: RwLock<State>,
    /// Bumped (registry-wide) when this source's tool list changes.
    generation: Arc<AtomicU64>,
    /// Becomes true once the first connection attempt finished, either way.
    listed: watch::Sender<bool>,
    this: Weak<Source>,
    redactor: Arc<Redactor>,
}

/// Receives server notifications for one connection.
#[derive(Debug, Clone, Default)]
struct Handler {
    tools_changed: Arc<Notify>,
}

impl ClientHandler for Handler {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.tools_changed.notify_one();
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(ClientCapabilities::default(), Implementation::new("lariat", env!("CARGO_PKG_VERSION")))
    }
}

type Client = RunningService<RoleClient, Handler>;

impl Source {
    pub fn new(config: &McpServer, generation: Arc<AtomicU64>, redactor: Arc<Redactor>) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            name: config.name.clone(),
            transport: config.transport.clone(),
            prefix: config.prefix,
            min_access: config.min_access,
            timeout: config.timeout,
            state: RwLock::new(State { peer: None, tools: Vec::new(), status: Status::Pending, stderr: None }),
            generation,
            listed: watch::channel(false).0,
            this: this.clone(),
            redactor,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn status(&self) -> Status {
        self.read().status.clone()
    }

    pub fn tools(&self) -> Vec<Arc<Tool>> {
        self.read().tools.clone()
    }

    /// Spawns the supervisor. It holds only a weak reference, so it ends with the source.
    pub fn start(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        tokio::spawn(supervise(this));
    }

    pub async fn wait_listed(&self) {
        let mut listed = self.listed.subscribe();
        let _ = listed.wait_for(|done| *done).await;
    }

    /// Calls `remote_name`. Dropping the future cancels the call on the server.
    pub async fn call(&self, remote_name: &str, args: Map<String, Value>) -> Result<String, ToolError> {
        let Some(peer) = self.read().peer.clone() else {
            return Err(ToolError::Unavailable(format!(
                "MCP server `{}` is not connected ({})",
                self.name,
                self.status()
            )));
        };
        let params = CallToolRequestParams::new(remote_name.to_owned()).with_arguments(args);
        match peer.call_tool(params).await {
            Ok(result) => render(result),
            Err(ServiceError::McpError(e)) => Err(ToolError::Failed(e.message.to_string())),
            Err(e) => Err(ToolError::Unavailable(format!("MCP server `{}`: {e}", self.name))),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // Every update is a whole-field assignment, so a poisoned lock is still consistent.
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        let mut state = self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut state);
    }

    async fn connect(&self, handler: Handler) -> Result<Client, String> {
        match &self.transport {
            McpTransport::Stdio { command, args, env } => {
                // Never lariat's own environment (it holds provider and client keys):
                // `env` is the whole of the child's, minimal set included.
                let mut cmd = process_wrap::tokio::CommandWrap::with_new(command, |c| {
                    c.env_clear().args(args).envs(env.iter().map(|(k, v)| (k, v.expose_secret())));
                });
                // A process group, so that `uvx`/`npx` grandchildren die with it too.
                cmd.wrap(process_wrap::tokio::ProcessGroup::leader()).wrap(process_wrap::tokio::KillOnDrop);
                let (transport, stderr) =
                    child::Child::spawn(cmd, &self.name).map_err(|e| format!("cannot start `{command}`: {e}"))?;
                let tail = stderr::Tail::new();
                self.update(|s| s.stderr = Some(tail.clone()));
                if let Some(stderr) = stderr {
                    // Like the supervisor, a long-lived task: it ends when the process closes stderr.
                    tokio::spawn(stderr::drain(stderr, tail, self.name.clone(), self.redactor.clone()));
                }
                handshake(handler.serve(transport)).await
            }
            McpTransport::Http { url, headers } => {
                let mut custom = HashMap::new();
                for (name, value) in headers {
                    let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
                    let value = http::HeaderValue::from_str(value.expose_secret()).map_err(|e| e.to_string())?;
                    custom.insert(name, value);
                }
                let config = StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(custom);
                let client = streamable::Client::new(&self.name)?;
                handshake(handler.serve(StreamableHttpClientTransport::with_client(client, config))).await
            }
        }
    }

    /// Lists the server's tools and publishes them.
    async fn relist(&self, peer: &Peer<RoleClient>) -> Result<usize, String> {
        let listed = tokio::time::timeout(LIST_TIMEOUT, peer.list_all_tools())
            .await
            .map_err(|_| "listing tools timed out".to_owned())?
            .map_err(|e| format!("listing tools: {e}"))?;
        let prefix = self.prefix.then_some(self.name.as_str());
        let mut seen = std::collections::HashSet::new();
        let tools: Vec<Arc<Tool>> = listed
            .into_iter()
            .filter_map(|t| {
                let name = names::tool_name(prefix, &t.name);
                if !seen.insert(name.clone()) {
                    tracing::warn!(server = %self.name, tool = %t.name, "two tools map to the same name; keeping the first");
                    return None;
                }
                let mut parameters = Value::Object((*t.input_schema).clone());
                if parameters.get("type").is_none() {
                    parameters["type"] = Value::from("object");
                }
                let listed = Listed {
                    name,
                    remote_name: t.name.to_string(),
                    description: t.description.map(|d| d.to_string()).unwrap_or_default(),
                    parameters,
                };
                let access = (self.min_access, self.timeout);
                Some(Arc::new(Tool::mcp(listed, self.this.clone(), access, self.redactor.clone())))
            })
            .collect();
        let count = tools.len();
        self.update(|s| {
            s.tools = tools;
            s.peer = Some(peer.clone());
            s.status = Status::Ready { tools: count };
        });
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(count)
    }

    /// `reason` followed by the last lines the process wrote to stderr, if any: what
    /// an operator needs to see why a server will not start.
    async fn with_stderr(&self, reason: String) -> String {
        let Some(tail) = self.read().stderr.clone() else { return reason };
        match tail.summary(STDERR_IN_REASON).await {
            Some(lines) => format!("{reason}; stderr: {lines}"),
            None => reason,
        }
    }

    fn is_http(&self) -> bool {
        matches!(self.transport, McpTransport::Http { .. })
    }
}

async fn handshake<F>(serving: F) -> Result<Client, String>
where
    F: Future<Output = Result<Client, rmcp::service::ClientInitializeError>>,
{
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, serving).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(format!("handshake failed: {e}")),
        Err(_) => Err("handshake timed out".into()),
    }
}

/// Keeps one source connected for as long as it exists.
async fn supervise(source: Weak<Source>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let Some(this) = source.upgrade() else { return };
        let handler = Handler::default();
        let started = tokio::time::Instant::now();
        let reason = match this.connect(handler.clone()).await {
            Err(reason) => {
                let reason = this.with_stderr(reason).await;
                // Never connected: its tools are absent until it comes up.
                this.update(|s| {
                    s.peer = None;
                    s.tools.clear();
                    s.status = Status::Failed(reason.clone());
                });
                this.generation.fetch_add(1, Ordering::AcqRel);
                reason
            }
            Ok(client) => match this.relist(client.peer()).await {
                Err(reason) => this.with_stderr(reason).await,
                Ok(count) => {
                    tracing::info!(server = %this.name, tools = count, "MCP server connected");
                    this.listed.send_replace(true);
                    let reason = watch_connection(&this, client, &handler).await;
                    let reason = this.with_stderr(reason).await;
                    this.update(|s| {
                        s.peer = None;
                        s.status = Status::Restarting(reason.clone());
                    });
                    reason
                }
            },
        };
        this.listed.send_replace(true);
        if started.elapsed() > STABLE_AFTER {
            backoff = BACKOFF_MIN;
        }
        tracing::warn!(server = %this.name, reason = %reason, retry_in_s = backoff.as_secs_f64(), "MCP server unavailable");
        drop(this);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Serves one live connection until it ends; returns why it ended.
async fn watch_connection(source: &Source, client: Client, handler: &Handler) -> String {
    let peer = client.peer().clone();
    let waiting = client.waiting();
    tokio::pin!(waiting);
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    loop {
        tokio::select! {
            ended = &mut waiting => {
                return match ended {
                    Ok(reason) => format!("the connection closed ({reason:?})"),
                    Err(e) => format!("the connection task failed: {e}"),
                };
            }
            () = handler.tools_changed.notified() => {
                match source.relist(&peer).await {
                    Ok(count) => tracing::info!(server = %source.name, tools = count, "MCP tool list changed"),
                    Err(reason) => tracing::warn!(server = %source.name, reason = %reason, "relisting tools failed"),
                }
            }
            _ = ping.tick(), if source.is_http() => {
                if let Err(e) = ping_once(&peer).await {
                    return format!("ping failed: {e}");
                }
            }
        }
    }
}

async fn ping_once(peer: &Peer<RoleClient>) -> Result<(), ServiceError> {
    let request = ClientRequest::PingRequest(PingRequest::default());
    let handle =
        peer.send_request_with_option(request, PeerRequestOptions::with_timeout(Duration::from_secs(10))).await?;
    handle.await_response().await.map(|_| ())
}

/// A tool result as text: text blocks verbatim, other content summarised (never
/// dropped silently); `is_error` becomes a tool error.
fn render(result: CallToolResult) -> Result<String, ToolError> {
    let mut parts: Vec<String> = result.content.iter().map(describe).collect();
    if parts.is_empty()
        && let Some(structured) = &result.structured_content
    {
        parts.push(structured.to_string());
    }
    let text = parts.join("\n");
    if result.is_error.unwrap_or(false) { Err(ToolError::Failed(text)) } else { Ok(text) }
}

fn describe(block: &ContentBlock) -> String {
    match block {
        ContentBlock::Text(t) => t.text.clone(),
        ContentBlock::Image(i) => format!("[image: {}, {} bytes]", i.mime_type, base64_len(&i.data)),
        ContentBlock::Audio(a) => format!("[audio: {}, {} bytes]", a.mime_type, base64_len(&a.data)),
        ContentBlock::Resource(embedded) => match &embedded.resource {
            ResourceContents::TextResourceContents { uri, text, .. } => format!("[resource {uri}]\n{text}"),
            ResourceContents::BlobResourceContents { uri, blob, mime_type, .. } => {
                format!("[resource {uri}: {}, {} bytes]", mime_type.as_deref().unwrap_or("binary"), base64_len(blob))
            }
            _ => "[resource of an unknown kind]".into(),
        },
        ContentBlock::ResourceLink(link) => format!("[resource link: {}]", link.uri),
        _ => "[content of a kind lariat does not know]".into(),
    }
}

/// Decoded size of base64 text.
fn base64_len(data: &str) -> usize {
    let padding = data.bytes().rev().take_while(|b| *b == b'=').count();
    (data.len() / 4 * 3).saturating_sub(padding)
}
