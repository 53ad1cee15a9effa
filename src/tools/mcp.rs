//! MCP servers as tool sources (stdio children and streamable HTTP).
//! Placeholder interface; the rmcp-backed implementation replaces it.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use serde_json::{Map, Value};

use super::{Tool, ToolError};
use crate::auth::Access;
use crate::config::McpServer;

/// A tool as listed by a server, already named for the model.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub remote_name: String,
    pub description: String,
    pub parameters: Value,
}

#[derive(Debug)]
pub struct Source {
    name: String,
    min_access: Access,
    timeout: Duration,
    _generation: Arc<AtomicU64>,
}

impl Source {
    pub fn new(config: &McpServer, generation: Arc<AtomicU64>) -> Arc<Self> {
        Arc::new(Self {
            name: config.name.clone(),
            min_access: config.min_access,
            timeout: config.timeout,
            _generation: generation,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn start(self: &Arc<Self>) {}

    pub async fn wait_listed(&self) {}

    pub fn tools(&self) -> Vec<Arc<Tool>> {
        let _ = (self.min_access, self.timeout);
        Vec::new()
    }

    pub async fn call(&self, _remote_name: &str, _args: Map<String, Value>) -> Result<String, ToolError> {
        Err(ToolError::Unavailable(format!("MCP server `{}` is not connected", self.name)))
    }
}
