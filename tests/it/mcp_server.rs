//! An in-process MCP server for tests, served over streamable HTTP on a loopback
//! port. Its tool list can change (`grow` adds `bonus` and notifies the client).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};

#[derive(Clone, Default)]
pub struct McpTestServer {
    grown: Arc<AtomicBool>,
    /// `sleep` calls the client cancelled.
    pub cancelled: Arc<AtomicUsize>,
    /// `authorization` headers of the HTTP requests received.
    pub auth_headers: Arc<Mutex<Vec<String>>>,
}

fn schema(v: Value) -> Arc<serde_json::Map<String, Value>> {
    match v {
        Value::Object(map) => Arc::new(map),
        _ => unreachable!(),
    }
}

impl McpTestServer {
    fn tools(&self) -> Vec<Tool> {
        let mut tools = vec![
            Tool::new(
                "echo",
                "Echo the text",
                schema(json!({"type": "object", "properties": {"text": {"type": "string"}}})),
            ),
            Tool::new(
                "sleep",
                "Sleep for ms",
                schema(json!({"type": "object", "properties": {"ms": {"type": "integer"}}})),
            ),
            Tool::new("picture", "Text and an image", schema(json!({"type": "object"}))),
            Tool::new("oops", "Fails", schema(json!({"type": "object"}))),
            Tool::new("grow", "Adds a tool", schema(json!({"type": "object"}))),
            Tool::new("dotted.name", "A name OpenAI would refuse", schema(json!({"type": "object"}))),
        ];
        if self.grown.load(Ordering::SeqCst) {
            tools.push(Tool::new("bonus", "Appears after grow", schema(json!({"type": "object"}))));
        }
        tools
    }

    /// Serves on a loopback port; returns the URL of the MCP endpoint.
    pub async fn serve(&self) -> String {
        let this = self.clone();
        let service: StreamableHttpService<McpTestServer, LocalSessionManager> = StreamableHttpService::new(
            move || Ok(this.clone()),
            Default::default(),
            StreamableHttpServerConfig::default(),
        );
        let headers = self.auth_headers.clone();
        let app = axum::Router::new().nest_service("/mcp", service).layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let headers = headers.clone();
                async move {
                    if let Some(v) = request.headers().get("authorization").and_then(|v| v.to_str().ok()) {
                        headers.lock().unwrap().push(v.to_owned());
                    }
                    next.run(request).await
                }
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/mcp")
    }
}

impl ServerHandler for McpTestServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_tool_list_changed().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        let result = match request.name.as_ref() {
            "echo" => CallToolResult::success(vec![ContentBlock::text(format!(
                "echo: {}",
                args.get("text").and_then(Value::as_str).unwrap_or("")
            ))]),
            "sleep" => {
                let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(0);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(ms)) => CallToolResult::success(vec![ContentBlock::text("awake")]),
                    () = context.ct.cancelled() => {
                        self.cancelled.fetch_add(1, Ordering::SeqCst);
                        return Err(ErrorData::internal_error("cancelled", None));
                    }
                }
            }
            "picture" => CallToolResult::success(vec![
                ContentBlock::text("a red dot:"),
                ContentBlock::image("iVBORw0KGgoAAAA=", "image/png"),
            ]),
            "oops" => CallToolResult::error(vec![ContentBlock::text("the widget is jammed")]),
            "grow" => {
                self.grown.store(true, Ordering::SeqCst);
                context
                    .peer
                    .notify_tool_list_changed()
                    .await
                    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                CallToolResult::success(vec![ContentBlock::text("grown")])
            }
            "dotted.name" => CallToolResult::success(vec![ContentBlock::text("dotted ok")]),
            "bonus" => CallToolResult::success(vec![ContentBlock::text("bonus!")]),
            _ => return Err(ErrorData::invalid_params("tool not found", None)),
        };
        Ok(result.into())
    }
}
