//! A stdio MCP server's odd output: stderr drained whatever bytes it holds and shown
//! where an operator looks when the server fails (`/ready`, `lariat check`); answers
//! that cannot be decoded; tools lariat cannot run.

use std::io::Write;
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::*;

fn sources_config(mock: &MockUpstream, sources: &str) -> String {
    config(mock, &format!("[models.agent]\nchain = [\"mock/gpt-test\"]\n{sources}"))
}

/// "handshake failed: connection closed" is not all an operator sees: the server's
/// last words are in the reason.
#[tokio::test]
async fn a_failing_servers_stderr_is_in_ready_and_check() {
    let mock = MockUpstream::start().await;
    let sources = "[tools.mcp.broken]\ncommand = \"sh\"\nargs = [\"-c\", \"echo 'starting' >&2; printf 'fatal: \\\\377 set API_TOKEN\\\\n' >&2; exit 3\"]\n";
    let config = sources_config(&mock, sources);
    let lariat = Lariat::start(&config).await;
    let ready = lariat.wait_ready().await;
    let status = ready["tool_sources"]["broken"].as_str().unwrap();
    assert!(status.starts_with("failed: handshake failed"), "{status}");
    assert!(status.contains("stderr: starting | fatal: \u{fffd} set API_TOKEN"), "{status}");

    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(config.as_bytes()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lariat")).args(["check", "--config"]).arg(file.path()).output().unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("fatal: \u{fffd} set API_TOKEN"), "{printed}");
}

/// Invalid UTF-8 and more output than a pipe holds: lariat keeps draining, so the
/// server neither blocks nor dies of SIGPIPE, and its tools work.
#[tokio::test]
async fn a_noisy_server_with_invalid_utf8_on_stderr_keeps_working() {
    let Some(python) = venv_program("python", &["-c", "pass"]) else { return };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/env_server.py");
    let mock = MockUpstream::start().await;
    let sources =
        format!("[tools.mcp.noisy]\ncommand = \"{}\"\nargs = [\"{script}\", \"--noisy\"]\n", python.display());
    let lariat = Lariat::start(&sources_config(&mock, &sources)).await;
    let ready = lariat.wait_ready().await;
    assert_eq!(ready["tool_sources"]["noisy"], "ready (2 tools)", "{ready}");
    mock.push(Reply::tool_calls(&[("a", "noisy__get_env", "{}")])).push(Reply::text("ok"));
    let response = lariat.chat(json!({"model": "agent", "messages": [{"role": "user", "content": "env"}]})).await;
    assert_eq!(response.status(), 200);
    let result: Value = mock.received()[1].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap()["content"]
        .clone();
    // The in-process harness reads no environment, so the child's is nearly empty.
    let env: Value = serde_json::from_str(result.as_str().unwrap()).unwrap();
    assert!(env.is_object(), "{result}");
}

/// A result nested 5,000 levels deep cannot be decoded: that call fails at once
/// (its timeout is far off), the call beside it and the connection carry on.
#[tokio::test]
async fn an_undecodable_result_fails_only_its_call_at_once() {
    let Some(python) = venv_program("python", &["-c", "pass"]) else { return };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/env_server.py");
    let mock = MockUpstream::start().await;
    let sources =
        format!("[tools.mcp.envy]\ncommand = \"{}\"\nargs = [\"{script}\"]\ntimeout_s = 600\n", python.display());
    let lariat = Lariat::start(&sources_config(&mock, &sources)).await;
    lariat.wait_ready().await;
    let results = |n: usize| -> Vec<String> {
        mock.received()[n].body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "tool")
            .map(|m| m["content"].as_str().unwrap().to_owned())
            .collect()
    };
    mock.push(Reply::tool_calls(&[("a", "envy__deep", "{}"), ("b", "envy__get_env", "{}")])).push(Reply::text("ok"));
    let ask = json!({"model": "agent", "messages": [{"role": "user", "content": "go"}]});
    assert_eq!(lariat.chat(ask.clone()).await.status(), 200);
    let first = results(1);
    assert!(
        first[0].starts_with("Tool error: lariat could not decode the MCP server's answer (recursion limit exceeded"),
        "{first:?}"
    );
    assert!(first[1].starts_with('{'), "the other call failed too: {first:?}");
    // The connection survived: the next call on it works.
    mock.push(Reply::tool_calls(&[("c", "envy__get_env", "{}")])).push(Reply::text("ok"));
    assert_eq!(lariat.chat(ask).await.status(), 200);
    assert!(results(3)[0].starts_with('{'), "{:?}", results(3));
    let ready = lariat.wait_ready().await;
    assert_eq!(ready["tool_sources"]["envy"], "ready (2 tools)", "{ready}");
}

/// `background_job` declares `execution.taskSupport = "required"`: it can only run
/// as an MCP task, which lariat does not do, so the model is never offered it.
#[tokio::test]
async fn a_tool_that_requires_task_support_is_not_offered() {
    let Some(python) = venv_program("python", &["-c", "pass"]) else { return };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/env_server.py");
    let mock = MockUpstream::start().await;
    let sources = format!("[tools.mcp.envy]\ncommand = \"{}\"\nargs = [\"{script}\"]\n", python.display());
    let lariat = Lariat::start(&sources_config(&mock, &sources)).await;
    let ready = lariat.wait_ready().await;
    assert_eq!(ready["tool_sources"]["envy"], "ready (2 tools)", "{ready}");
    mock.push(Reply::text("ok"));
    let ask = json!({"model": "agent", "messages": [{"role": "user", "content": "go"}]});
    assert_eq!(lariat.chat(ask).await.status(), 200);
    let offered: Vec<String> = mock.received()[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(offered.contains(&"envy__get_env".to_owned()) && offered.contains(&"envy__deep".to_owned()), "{offered:?}");
    assert!(!offered.iter().any(|name| name.contains("background_job")), "{offered:?}");
}
