//! MCP tool sources: an in-process rmcp server over streamable HTTP, the real
//! `mcp-server-time` over stdio, a server that dies and comes back, a broken source.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;
use crate::mcp_server::McpTestServer;

fn mcp_config(mock: &MockUpstream, sources: &str) -> String {
    format!(
        "[upstream]\nretries = 0\n[providers.mock]\nbase_url = \"{}\"\n[models.agent]\nchain = [\"mock/gpt-test\"]\n{sources}\n[[keys]]\nkey = \"{ALICE}\"\nuser = \"alice\"\naccess = \"admin\"\n",
        mock.url
    )
}

fn ask() -> Value {
    json!({"model": "agent", "messages": [{"role": "user", "content": "use the tools"}]})
}

fn offered(body: &Value) -> Vec<String> {
    body["tools"]
        .as_array()
        .map_or_else(Vec::new, |t| t.iter().map(|d| d["function"]["name"].as_str().unwrap().to_owned()).collect())
}

fn results(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

/// Runs one round calling `calls` and returns the tool results the model got.
async fn round(lariat: &Lariat, mock: &MockUpstream, calls: &[(&str, &str, &str)]) -> Vec<String> {
    let before = mock.received().len();
    mock.push(Reply::tool_calls(calls)).push(Reply::text("done"));
    let response = lariat.chat(ask()).await;
    assert_eq!(response.status(), 200);
    results(&mock.received()[before + 1].body)
}

#[tokio::test]
async fn tools_of_an_http_mcp_server_are_named_called_and_summarised() {
    let server = McpTestServer::default();
    let url = server.serve().await;
    let mock = MockUpstream::start().await;
    let sources = format!(
        "[tools.mcp.docs]\nurl = \"{url}\"\nheaders = {{ Authorization = \"Bearer mcp-secret\" }}\ntimeout_s = 0.5\n"
    );
    let lariat = Lariat::start(&mcp_config(&mock, &sources)).await;
    let ready = lariat.wait_ready().await;
    assert_eq!(ready["tool_sources"]["docs"], "ready (6 tools)");

    let out = round(
        &lariat,
        &mock,
        &[
            ("a", "docs__echo", r#"{"text": "hi"}"#),
            ("b", "docs__picture", "{}"),
            ("c", "docs__oops", "{}"),
            ("d", "docs__dotted_name", "{}"),
            ("e", "docs__sleep", r#"{"ms": 10000}"#),
        ],
    )
    .await;
    let names = offered(&mock.received()[0].body);
    for name in ["docs__echo", "docs__sleep", "docs__dotted_name", "current_time"] {
        assert!(names.contains(&name.to_owned()), "{name} not offered: {names:?}");
    }
    assert_eq!(out[0], "echo: hi");
    assert_eq!(out[1], "a red dot:\n[image: image/png, 11 bytes]");
    assert_eq!(out[2], "Tool error: the widget is jammed");
    assert_eq!(out[3], "dotted ok");
    assert!(out[4].starts_with("Tool error: `docs__sleep` timed out"), "{out:?}");
    // The timed-out call was cancelled on the server, not left running.
    for _ in 0..100 {
        if server.cancelled.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.cancelled.load(Ordering::SeqCst), 1);
    assert!(server.auth_headers.lock().unwrap().iter().all(|h| h == "Bearer mcp-secret"));
    assert!(!server.auth_headers.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_tool_list_change_is_picked_up() {
    let server = McpTestServer::default();
    let url = server.serve().await;
    let mock = MockUpstream::start().await;
    let lariat = Lariat::start(&mcp_config(&mock, &format!("[tools.mcp.docs]\nurl = \"{url}\"\n"))).await;
    lariat.wait_ready().await;
    let out = round(&lariat, &mock, &[("a", "docs__grow", "{}")]).await;
    assert_eq!(out, ["grown"]);
    assert!(!offered(&mock.received()[0].body).contains(&"docs__bonus".to_owned()));
    mock.always(Reply::text("ok"));
    let mut found = false;
    for _ in 0..100 {
        lariat.chat(ask()).await;
        if offered(&mock.last_body()).contains(&"docs__bonus".to_owned()) {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(found, "the new tool never appeared");
}

#[tokio::test]
async fn the_real_mcp_server_time_works_over_stdio() {
    let Some(program) = venv_program("mcp-server-time", &["--help"]) else { return };
    let mock = MockUpstream::start().await;
    let sources =
        format!("[tools.mcp.time]\ncommand = \"{}\"\nargs = [\"--local-timezone\", \"UTC\"]\n", program.display());
    let lariat = Lariat::start(&mcp_config(&mock, &sources)).await;
    let ready = lariat.wait_ready().await;
    assert!(ready["tool_sources"]["time"].as_str().unwrap().starts_with("ready"), "{ready}");
    let out = round(&lariat, &mock, &[("a", "time__get_current_time", r#"{"timezone": "Asia/Tokyo"}"#)]).await;
    assert!(out[0].contains("Asia/Tokyo") && out[0].contains("datetime"), "{out:?}");
    let names = offered(&mock.received()[0].body);
    assert!(names.contains(&"time__convert_time".to_owned()), "{names:?}");
}

#[tokio::test]
async fn a_dead_stdio_server_is_restarted() {
    let Some(python) = venv_program("python", &["-c", "import mcp.server.mcpserver"]) else { return };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/crashy_server.py");
    let mock = MockUpstream::start().await;
    let sources = format!("[tools.mcp.crashy]\ncommand = \"{}\"\nargs = [\"{script}\"]\n", python.display());
    let lariat = Lariat::start(&mcp_config(&mock, &sources)).await;
    lariat.wait_ready().await;
    let first = round(&lariat, &mock, &[("a", "crashy__echo", r#"{"text": "hi"}"#)]).await;
    assert!(first[0].starts_with("hi (pid "), "{first:?}");
    let crashed = round(&lariat, &mock, &[("b", "crashy__crash", "{}")]).await;
    assert!(crashed[0].starts_with("Tool error:"), "{crashed:?}");
    // lariat notices, restarts it, and the tools work again.
    let mut again = Vec::new();
    for _ in 0..100 {
        again = round(&lariat, &mock, &[("c", "crashy__echo", r#"{"text": "back"}"#)]).await;
        if again[0].starts_with("back (pid ") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again[0].starts_with("back (pid "), "{again:?}");
    assert_ne!(first[0].trim_start_matches("hi "), again[0].trim_start_matches("back "), "a new process answers");
}

#[tokio::test]
async fn a_broken_source_is_reported_and_the_others_keep_working() {
    let server = McpTestServer::default();
    let url = server.serve().await;
    let mock = MockUpstream::start().await;
    let sources =
        format!("[tools.mcp.broken]\ncommand = \"/nonexistent/mcp-server\"\n[tools.mcp.docs]\nurl = \"{url}\"\n");
    let lariat = Lariat::start(&mcp_config(&mock, &sources)).await;
    let ready = lariat.wait_ready().await;
    assert!(ready["tool_sources"]["broken"].as_str().unwrap().starts_with("failed: cannot start"), "{ready}");
    let out = round(&lariat, &mock, &[("a", "docs__echo", r#"{"text": "still here"}"#)]).await;
    assert_eq!(out, ["echo: still here"]);
    assert!(offered(&mock.received()[0].body).iter().all(|n| !n.starts_with("broken__")));
}

#[tokio::test]
async fn ready_waits_for_the_first_listing() {
    let mock = MockUpstream::start().await;
    // A command that never speaks MCP: the handshake is still pending.
    let lariat = Lariat::start(&mcp_config(&mock, "[tools.mcp.silent]\ncommand = \"sleep\"\nargs = [\"30\"]\n")).await;
    let response = lariat.get("/ready", None).send().await.unwrap();
    let error = expect_error(response, 503, "unavailable").await;
    assert!(error["message"].as_str().unwrap().contains("silent"), "{error}");
    // Liveness is unaffected.
    assert_eq!(lariat.get("/health", None).send().await.unwrap().status(), 200);
}
