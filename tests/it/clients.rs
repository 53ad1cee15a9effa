//! Real clients beyond the Python SDK: the Vercel AI SDK's default provider and
//! Codex CLI over the Responses API, and both official SDKs parsing every live
//! progress mode. `.ci/run` installs them (`tests/node`, `.venv`); under CI=true a
//! missing one fails the test.

use std::path::PathBuf;
use std::process::Output;

use serde_json::{Value, json};

use crate::harness::*;
use crate::tools::agent_config;

/// A program installed under `tests/node/node_modules` (by `.ci/run`).
fn node_program(path: &str) -> Option<PathBuf> {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/node_modules")).join(path);
    let exists = path.exists();
    installed(path, exists)
}

async fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str], lariat: &Lariat, envs: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .env("LARIAT_URL", format!("{}/v1", lariat.url))
        .env("LARIAT_KEY", ALICE);
    for (name, value) in envs {
        command.env(name, value);
    }
    tokio::time::timeout(std::time::Duration::from_secs(120), command.output()).await.expect("the client hung").unwrap()
}

fn json_out(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim().lines().last().unwrap_or_default()).unwrap()
}

fn script(name: &str) -> String {
    format!("{}/tests/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs the client script `name` (under `tests/`) with `program` against `lariat`
/// as ALICE, and returns the JSON it printed last (asserting it succeeded).
pub async fn script_json(program: impl AsRef<std::ffi::OsStr>, name: &str, lariat: &Lariat) -> Value {
    json_out(&run(program, &[&script(name)], lariat, &[]).await)
}

#[tokio::test]
async fn the_vercel_ai_sdk_default_provider_speaks_responses_to_lariat() {
    let Some(_) = node_program("ai/package.json") else { return };
    let mock = MockUpstream::start().await;
    mock.push(Reply::text("Hello."));
    mock.push(Reply::stream_with_usage(&["Str", "eamed."]));
    // Words before the call: the SDK (storing responses, its default) refers to them
    // by id in the next step instead of repeating them.
    let call = json!([{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": r#"{"city":"Oslo"}"#}}]);
    mock.push(Reply::completion(
        json!({"role": "assistant", "content": "Checking.", "tool_calls": call}),
        "tool_calls",
    ));
    mock.push(Reply::text("Clear in Oslo."));
    let lariat = Lariat::start(&config(&mock, "")).await;
    let result = script_json("node", "node/vercel.mjs", &lariat).await;
    let expected = json!({
        "plain": {"text": "Hello.", "inputTokens": 10, "outputTokens": 5},
        "streamed": {"text": "Streamed.", "finishReason": "stop", "totalTokens": 15},
        "multi": {"text": "Clear in Oslo.", "steps": 2, "calls": ["Oslo"]},
    });
    assert_eq!(result, expected);
    let last = mock.last_body();
    let tool = last["messages"].as_array().unwrap().iter().find(|m| m["role"] == "tool").unwrap().clone();
    assert_eq!(tool["tool_call_id"], "call_1", "{last}");
    assert!(tool["content"].as_str().unwrap().contains("clear"), "{last}");
    let said = last["messages"].as_array().unwrap().iter().find(|m| m["role"] == "assistant").unwrap().clone();
    assert_eq!(said["content"], "Checking.", "the referenced words came back: {last}");
}

/// `codex exec` with lariat as a `wire_api = "responses"` provider: the model asks
/// for one of Codex's own tools, Codex runs it and sends the output back.
#[tokio::test]
async fn codex_cli_runs_a_turn_with_its_own_tool_through_lariat() {
    let Some(codex) = node_program(".bin/codex") else { return };
    let mock = MockUpstream::start().await;
    mock.push(Reply::stream_tool_calls(
        Some("Checking."),
        &[("call_x", "exec_command", r#"{"cmd":"echo lariat-$((40+2))"}"#)],
    ));
    mock.push(Reply::stream_with_usage(&["The command printed lariat-42."]));
    let lariat = Lariat::start(&config(&mock, "")).await;
    let home = tempdir("codex-home");
    let provider = format!(
        "model = \"other\"\nmodel_provider = \"lariat\"\nweb_search = \"disabled\"\n\n[features]\nmulti_agent = false\n\n\
         [model_providers.lariat]\nname = \"lariat\"\nbase_url = \"{}/v1\"\nwire_api = \"responses\"\nenv_key = \"LARIAT_KEY\"\n",
        lariat.url
    );
    std::fs::write(home.join("config.toml"), provider).unwrap();
    let args = ["exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox", "Run the echo"];
    let out = run(&codex, &args, &lariat, &[("CODEX_HOME", home.to_str().unwrap())]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("The command printed lariat-42."), "{stdout}");
    let received = mock.received();
    assert_eq!(received.len(), 2, "one call, one answer");
    let first = &received[0].body;
    assert!(first["tools"].as_array().unwrap().iter().any(|t| t["function"]["name"] == "exec_command"), "{first}");
    let tool = received[1].body["messages"].as_array().unwrap().iter().find(|m| m["role"] == "tool").unwrap().clone();
    assert_eq!(tool["tool_call_id"], "call_x");
    assert!(tool["content"].as_str().unwrap().contains("lariat-42"), "Codex ran it and sent the output: {tool}");
}

/// A fresh directory under the target's tmp dir (kept for inspection after a failure).
fn tempdir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("lariat-{name}-{}", uuid_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn uuid_suffix() -> String {
    format!(
        "{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    )
}

/// Four modes × (a round calling `echo`, then the answer).
async fn progress_rig() -> (MockUpstream, ToolServer, Lariat) {
    let mock = MockUpstream::start().await;
    let tools = ToolServer::start().await;
    for _ in 0..4 {
        mock.push(Reply::stream_tool_calls(None, &[("up_1", "echo", r#"{"text": "hi"}"#)]));
        mock.push(Reply::stream_with_usage(&["Echoed ", "hi."]));
    }
    let lariat = Lariat::start(&agent_config(&mock, &tools, "tools = [\"echo\"]")).await;
    (mock, tools, lariat)
}

fn assert_progress_modes(result: &Value) {
    for mode in ["off", "status", "reasoning", "content"] {
        let seen = &result[mode];
        assert_eq!(seen["finish"], "stop", "{mode}: {seen}");
        let content = seen["content"].as_str().unwrap();
        assert!(content.ends_with("Echoed hi."), "{mode}: {seen}");
        let reasoning = seen["reasoning"].as_str().unwrap();
        match mode {
            "reasoning" => assert!(reasoning.contains("Running `echo`"), "{seen}"),
            "content" => assert!(content.contains("_Running `echo`"), "{seen}"),
            _ => assert!(reasoning.is_empty() && content == "Echoed hi.", "{mode}: {seen}"),
        }
    }
    assert!(
        result["status"]["chunks"].as_u64() > result["off"]["chunks"].as_u64(),
        "status lines are chunks: {result}"
    );
}

#[tokio::test]
async fn the_node_sdk_parses_every_progress_mode() {
    let Some(_) = node_program("openai/package.json") else { return };
    let (_mock, tools, lariat) = progress_rig().await;
    assert_progress_modes(&script_json("node", "node/progress.mjs", &lariat).await);
    assert_eq!(tools.hits("/echo").len(), 4);
}

#[tokio::test]
async fn the_python_sdk_parses_every_progress_mode() {
    let Some(python) = venv_program("python", &["-c", "import openai"]) else { return };
    let (_mock, tools, lariat) = progress_rig().await;
    assert_progress_modes(&script_json(python, "sdk/progress_client.py", &lariat).await);
    assert_eq!(tools.hits("/echo").len(), 4);
}
