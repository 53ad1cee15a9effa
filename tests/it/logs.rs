//! What lariat's log may hold: rmcp's own logging stays out at the default level,
//! and every line, a dependency's included, is cleaned of configured secrets.

use serde_json::{Value, json};

use crate::harness::*;
use crate::secrets::Spawned;

const MCP_SECRET: &str = "mcp-env-secret-0042";

/// One tool round against the env server, the secret both in the server's
/// environment (so in its result) and in the call's arguments; everything logged.
async fn logged(levels: Option<&str>) -> String {
    let python = venv_program("python", &["-c", "pass"]).expect("python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/env_server.py");
    let mock = MockUpstream::start().await;
    let extra = format!(
        "[models.agent]\nchain = [\"mock/gpt-test\"]\n[tools.mcp.envy]\ncommand = \"{}\"\nargs = [\"{script}\"]\n\
         env = {{ MCP_TOKEN = \"{MCP_SECRET}\" }}\n",
        python.display()
    );
    let child = Spawned::start_logging(&config(&mock, &extra), &[], levels).await;
    child.wait_ready().await;
    let arguments = json!({"note": MCP_SECRET}).to_string();
    mock.push(Reply::tool_calls(&[("a", "envy__get_env", &arguments)])).push(Reply::text("ok"));
    let response =
        child.chat(&json!({"model": "agent", "messages": [{"role": "user", "content": "env?"}]})).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let result = mock.received()[1].body["messages"].as_array().unwrap().iter().find(|m| m["role"] == "tool").cloned();
    assert!(result.is_some_and(|m| m["content"].as_str().unwrap().contains("\"MCP_TOKEN\": \"[redacted]\"")));
    child.stop()
}

fn rmcp_lines(logs: &str) -> Vec<&str> {
    logs.lines()
        .filter(|line| {
            serde_json::from_str::<Value>(line)
                .is_ok_and(|v| v["target"].as_str().is_some_and(|t| t.starts_with("rmcp")))
        })
        .collect()
}

#[tokio::test]
async fn at_the_default_level_rmcp_is_quiet_and_no_secret_is_logged() {
    let Some(_) = venv_program("python", &["-c", "pass"]) else { return };
    let logs = logged(None).await;
    assert!(!logs.contains(MCP_SECRET), "{logs}");
    assert_eq!(rmcp_lines(&logs), Vec::<&str>::new(), "rmcp logged at the default level");
    assert!(logs.contains("tool call"), "the audit line is there: {logs}");
}

/// At trace level rmcp logs every MCP message whole (the server's result holds the
/// secret; so does the call's argument), and at debug its requests: the log has
/// them, redacted.
#[tokio::test]
async fn at_trace_level_rmcps_messages_are_logged_redacted() {
    let Some(_) = venv_program("python", &["-c", "pass"]) else { return };
    let logs = logged(Some("debug,rmcp=trace")).await;
    assert!(!logs.contains(MCP_SECRET), "{logs}");
    let rmcp = rmcp_lines(&logs);
    assert!(rmcp.iter().any(|line| line.contains("MCP_TOKEN") && line.contains("[redacted]")), "{rmcp:#?}");
}
