//! A streamable HTTP MCP server written by hand (rmcp's own server cannot say
//! `execution` or send what no client can decode): what lariat does with a tool that
//! requires task support and with an undecodable answer over HTTP.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::harness::*;

/// Every answer is one SSE event, as the TypeScript SDK and rmcp stream them.
async fn mcp(Json(message): Json<Value>) -> Response {
    let Some(id) = message.get("id").cloned() else { return StatusCode::ACCEPTED.into_response() };
    let answer = |result: Value| json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
    let line = match (message["method"].as_str(), message["params"]["name"].as_str()) {
        (Some("initialize"), _) => answer(json!({
            "protocolVersion": message["params"]["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "raw", "version": "1"},
        })),
        (Some("tools/list"), _) => answer(json!({"tools": [
            {"name": "echo", "inputSchema": {"type": "object"}},
            {"name": "deep", "inputSchema": {"type": "object"}},
            {"name": "background_job", "inputSchema": {"type": "object"}, "execution": {"taskSupport": "required"}},
        ]})),
        (Some("tools/call"), Some("deep")) => format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[],"structuredContent":{{"x":{}{}}}}}}}"#,
            "[".repeat(5000),
            "]".repeat(5000)
        ),
        (Some("tools/call"), _) => answer(json!({"content": [{"type": "text", "text": "echoed"}]})),
        _ => answer(json!({})),
    };
    ([(header::CONTENT_TYPE, "text/event-stream")], format!("data: {line}\n\n")).into_response()
}

async fn serve() -> String {
    let app = axum::Router::new()
        .route("/mcp", post(mcp).get(|| async { StatusCode::METHOD_NOT_ALLOWED }).delete(|| async { StatusCode::OK }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/mcp")
}

#[tokio::test]
async fn over_http_task_only_tools_are_not_offered_and_an_undecodable_answer_fails_its_call_at_once() {
    let url = serve().await;
    let mock = MockUpstream::start().await;
    let extra =
        format!("[models.agent]\nchain = [\"mock/gpt-test\"]\n[tools.mcp.raw]\nurl = \"{url}\"\ntimeout_s = 600\n");
    let lariat = Lariat::start(&config(&mock, &extra)).await;
    let ready = lariat.wait_ready().await;
    assert_eq!(ready["tool_sources"]["raw"], "ready (2 tools)", "{ready}");

    mock.push(Reply::tool_calls(&[("a", "raw__deep", "{}"), ("b", "raw__echo", "{}")])).push(Reply::text("ok"));
    let response = lariat.chat(json!({"model": "agent", "messages": [{"role": "user", "content": "go"}]})).await;
    assert_eq!(response.status(), 200);
    let received = mock.received();
    let offered: Vec<&str> =
        received[0].body["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    assert!(offered.contains(&"raw__echo") && !offered.iter().any(|n| n.contains("background_job")), "{offered:?}");
    let results: Vec<&str> = received[1].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert!(results[0].starts_with("Tool error: lariat could not decode the MCP server's answer"), "{results:?}");
    assert_eq!(results[1], "echoed");
}
