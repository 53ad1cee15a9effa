//! The `lariat` binary itself: `check`, secrets in logs, graceful shutdown.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::harness::*;

pub fn lariat_bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lariat"));
    cmd.env_remove("LARIAT_CONFIG").env_remove("OPENAI_API_KEY").env_remove("RUST_LOG");
    cmd
}

pub fn temp_config(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

/// `lariat check` on the shipped config: valid, and its MCP server (`uvx
/// mcp-server-time`, uv from `.venv`) really starts and lists its tools.
#[test]
fn the_shipped_config_passes_check() {
    let Some(uvx) = venv_program("uvx", &["--version"]) else { return };
    let venv_bin = uvx.parent().unwrap().to_owned();
    let path_var = std::env::join_paths(
        std::iter::once(venv_bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/lariat.toml");
    let out = lariat_bin().args(["check", "--config", path]).env("PATH", &path_var).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("model assistant: openai/gpt-4o-mini → local/qwen2.5:7b"), "{stdout}");
    assert!(stdout.contains("tool source time: ready (2 tools)"), "{stdout}");
    assert!(stdout.contains("time__get_current_time"), "{stdout}");
    // LARIAT_CONFIG stands in for --config.
    let via_env = lariat_bin().arg("check").env("LARIAT_CONFIG", path).env("PATH", &path_var).output().unwrap();
    assert!(via_env.status.success(), "{}", String::from_utf8_lossy(&via_env.stderr));
}

#[test]
fn check_reports_every_problem_with_file_and_key() {
    let config = temp_config(
        r#"
[providers.openai]
base_url = "ftp://example"
api_key = "${LARIAT_TEST_SURELY_UNSET}"

[models.assistant]
chain = ["openai/gpt-4o", "nowhere/model", { target = "openai/x", context_window = 0 }]
tools = ["[broken"]

[[keys]]
key_sha256 = "abc"
user = "eve"
models = ["ghost"]
"#,
    );
    let out = lariat_bin().args(["check", "--config"]).arg(config.path()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = config.path().display().to_string();
    for (key, reason) in [
        ("providers.openai.api_key", "`LARIAT_TEST_SURELY_UNSET` is not set"),
        ("providers.openai.base_url", "not an http(s) URL"),
        ("models.assistant.chain[1].target", "unknown provider `nowhere`"),
        ("models.assistant.chain[2].context_window", "must be positive"),
        ("models.assistant.tools", "bad pattern"),
        ("keys[0].key_sha256", "64 hexadecimal"),
    ] {
        let line = stderr
            .lines()
            .find(|l| l.contains(&format!("`{key}`")))
            .unwrap_or_else(|| panic!("no error for {key}:\n{stderr}"));
        assert!(line.starts_with(&file) && line.contains(reason), "{line}");
    }
    assert!(stderr.contains("problem(s) found"), "{stderr}");
}

#[test]
fn check_refuses_open_serving_off_loopback() {
    let config = temp_config(
        "[server]\nlisten = \"0.0.0.0:8080\"\n[providers.p]\nbase_url = \"http://127.0.0.1:1\"\n[models.m]\nchain = [\"p/x\"]\n",
    );
    let out = lariat_bin().args(["check", "--config"]).arg(config.path()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`server.listen`") && stderr.contains("not a loopback address"), "{stderr}");
}

#[test]
fn check_rejects_unknown_keys_with_their_path() {
    let config = temp_config(
        "[server]\nlisen = \"127.0.0.1:1\"\n[providers.p]\nbase_url = \"http://127.0.0.1:1\"\ntimeout = 3\n[models.m]\nchain = [{ target = \"p/x\", windw = 3 }]\n",
    );
    let out = lariat_bin().args(["check", "--config"]).arg(config.path()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (key, field) in
        [("server.lisen", "lisen"), ("providers.p.timeout", "timeout"), ("models.m.chain[0].windw", "windw")]
    {
        assert!(
            stderr.lines().any(|l| l.contains(&format!("`{key}`")) && l.contains(&format!("unknown field `{field}`"))),
            "no error for {key}:\n{stderr}"
        );
    }
    assert!(stderr.contains("3 problem(s) found"), "{stderr}");
}

#[test]
fn check_reports_bad_toml_with_its_location() {
    let config = temp_config("[server]\nlisten = \n");
    let out = lariat_bin().args(["check", "--config"]).arg(config.path()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid TOML") && stderr.contains("line 2"), "{stderr}");
    let missing = lariat_bin().args(["check", "--config", "/nonexistent/lariat.toml"]).output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read file"));
}

#[test]
fn version_flag_prints_the_version() {
    let out = lariat_bin().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

/// A lariat child process on a free loopback port, its stderr captured.
pub struct Child {
    process: std::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    _config: tempfile::NamedTempFile,
}

impl Child {
    pub async fn start(config_text: &str, log_format: &str) -> Self {
        Self::start_logging(config_text, log_format, "trace").await
    }

    /// `start`, with `RUST_LOG` set to `filter`.
    pub async fn start_logging(config_text: &str, log_format: &str, filter: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = temp_config(&config_text.replace("127.0.0.1:0", &format!("127.0.0.1:{port}")));
        let mut process = lariat_bin()
            .args(["serve", "--log-format", log_format, "--config"])
            .arg(config.path())
            .env("RUST_LOG", filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if client().get(format!("{url}/health")).send().await.is_ok() {
                return Self { process, url, _config: config };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = process.kill();
        let out = process.wait_with_output().unwrap();
        panic!("lariat did not start: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.process.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    pub fn wait(self) -> (std::process::ExitStatus, String) {
        let out = self.process.wait_with_output().unwrap();
        (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::text("fine"));
    mock.push(Reply::error(401, &format!("Incorrect API key provided: {PROVIDER_KEY}")));
    mock.push(Reply::stream(&["streamed"]));
    let child = Child::start(&config(&mock, ""), "json").await;
    let chat = |key: &'static str, stream: bool| {
        client()
            .post(format!("{}/v1/chat/completions", child.url))
            .bearer_auth(key)
            .header("x-request-id", "req-log-test")
            .json(&request("assistant", stream))
            .send()
    };
    assert_eq!(chat(ALICE, false).await.unwrap().status(), 200);
    assert_eq!(chat(ALICE, false).await.unwrap().status(), 502);
    let streamed = chat(ALICE, true).await.unwrap();
    assert_eq!(SseReader::new(streamed).collect().await.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(chat("sk-not-a-real-key-123", false).await.unwrap().status(), 401);
    child.terminate();
    let (status, logs) = child.wait();
    assert!(status.success(), "{logs}");
    assert!(logs.lines().count() > 5, "expected trace logs:\n{logs}");
    for secret in [ALICE, PROVIDER_KEY, "sk-not-a-real-key-123"] {
        assert!(!logs.contains(secret), "secret {secret} appears in the logs:\n{logs}");
    }
    // Every line of a request carries its id (JSON logs, one object per line).
    let request_lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l.to_string().contains("upstream attempt failed"))
        .collect();
    assert!(!request_lines.is_empty(), "{logs}");
    assert!(request_lines.iter().all(|l| l["spans"][0]["id"] == "req-log-test"), "{request_lines:?}");
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let mock = MockUpstream::start().await;
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    mock.push(Reply::Sse(vec![
        Step::Data(chunk(json!({"role": "assistant", "content": "before"}), None)),
        Step::Wait(gate.clone()),
        Step::Data(chunk(json!({"content": " after"}), Some("stop"))),
        Step::Data("[DONE]".into()),
    ]));
    let child = Child::start(&config(&mock, ""), "human").await;
    let response = client()
        .post(format!("{}/v1/chat/completions", child.url))
        .bearer_auth(ALICE)
        .json(&request("assistant", true))
        .send()
        .await
        .unwrap();
    let mut reader = SseReader::new(response);
    assert!(reader.next().await.unwrap().contains("before"));
    child.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // No new connections once shutdown began...
    assert!(client().get(format!("{}/health", child.url)).send().await.is_err());
    // ...but the open stream completes.
    gate.notify_one();
    let rest = reader.collect().await;
    assert!(rest[0].contains(" after"), "{rest:?}");
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"));
    let (status, logs) = child.wait();
    assert!(status.success(), "{logs}");
    assert!(logs.contains("shutting down"), "{logs}");
}

#[tokio::test]
async fn tool_runs_are_audited_and_off_the_record_hides_arguments() {
    let mock = MockUpstream::start().await;
    let tools = ToolServer::start().await;
    let config = config(
        &mock,
        &format!(
            "[models.agent]\nchain = [\"mock/gpt-test\"]\n[tools.http.echo]\ndescription = \"Echo\"\nurl = \"{}/echo\"\n",
            tools.url
        ),
    );
    mock.push(Reply::tool_calls(&[("a", "echo", r#"{"text": "public words"}"#)])).push(Reply::text("ok"));
    mock.push(Reply::tool_calls(&[("b", "echo", r#"{"text": "private words"}"#)])).push(Reply::text("ok"));
    let child = Child::start(&config, "json").await;
    for (request_id, off_record) in [("req-open", "false"), ("req-private", "true")] {
        let response = client()
            .post(format!("{}/v1/chat/completions", child.url))
            .bearer_auth(ALICE)
            .header("x-request-id", request_id)
            .header("x-lariat-off-record", off_record)
            .json(&json!({"model": "agent", "messages": [{"role": "user", "content": "echo"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    child.terminate();
    let (_, logs) = child.wait();
    let audit: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == "lariat::audit" && l["message"] == "tool call")
        .collect();
    assert_eq!(audit.len(), 2, "{logs}");
    let open = &audit[0];
    assert_eq!(
        (open["tool"].as_str(), open["user"].as_str(), open["model"].as_str()),
        (Some("echo"), Some("alice"), Some("agent"))
    );
    assert_eq!(open["outcome"], "ok");
    assert!(open["arguments"].as_str().unwrap().contains("public words"));
    assert!(open["duration_ms"].as_f64().is_some());
    assert_eq!(open["spans"][0]["id"], "req-open");
    assert_eq!(audit[1]["spans"][0]["id"], "req-private");
    assert!(!logs.contains("private words"), "off-the-record arguments reached the logs");
}

/// A stdio MCP server is a child of lariat: it goes when lariat goes.
#[tokio::test]
async fn mcp_children_are_stopped_with_lariat() {
    let Some(python) = venv_program("python", &["-c", "import mcp.server.mcpserver"]) else { return };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/crashy_server.py");
    let mock = MockUpstream::start().await;
    let sources = format!(
        "[models.agent]\nchain = [\"mock/gpt-test\"]\n[tools.mcp.crashy]\ncommand = \"{}\"\nargs = [\"{script}\"]\n",
        python.display()
    );
    mock.push(Reply::tool_calls(&[("a", "crashy__echo", r#"{"text": "who"}"#)])).push(Reply::text("ok"));
    let child = Child::start(&config(&mock, &sources), "json").await;
    for _ in 0..200 {
        if client().get(format!("{}/ready", child.url)).send().await.unwrap().status() == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let response = client()
        .post(format!("{}/v1/chat/completions", child.url))
        .bearer_auth(ALICE)
        .json(&json!({"model": "agent", "messages": [{"role": "user", "content": "who are you"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let result = mock.received()[1].body["messages"].as_array().unwrap().iter().find(|m| m["role"] == "tool").unwrap()
        ["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let pid: u32 = result.trim_end_matches(')').rsplit(' ').next().unwrap().parse().unwrap();
    // Alive = present and not a zombie waiting for a reaper.
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
    };
    assert!(alive(pid), "the MCP server should be running: {result}");
    child.terminate();
    let (status, logs) = child.wait();
    assert!(status.success(), "{logs}");
    let mut gone = false;
    for _ in 0..100 {
        if !alive(pid) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "MCP server {pid} outlived lariat");
}
