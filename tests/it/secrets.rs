//! Secrets stay in: stdio MCP servers get a minimal environment, every configured
//! secret is blanked out of what leaves lariat (error statuses, mid-stream error
//! events, relayed bodies, tool results) and of the logs, and redirects never carry
//! a provider's or a tool's headers to another origin.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

/// lariat's own binary on a free port, with `env` added to a clean environment and
/// JSON logs at trace level captured (rmcp at debug: its trace level adds only raw
/// transport chatter).
pub struct Spawned {
    process: std::process::Child,
    url: String,
    _config: tempfile::NamedTempFile,
}

impl Spawned {
    pub async fn start(config_text: &str, env: &[(&str, &str)]) -> Self {
        Self::start_logging(config_text, env, Some("trace,rmcp=debug")).await
    }

    /// [`Spawned::start`] with `RUST_LOG` set to `levels` (`None`: unset, lariat's default).
    pub async fn start_logging(config_text: &str, env: &[(&str, &str)], levels: Option<&str>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        config.write_all(config_text.replace("127.0.0.1:0", &format!("127.0.0.1:{port}")).as_bytes()).unwrap();
        let mut process = Command::new(env!("CARGO_BIN_EXE_lariat"))
            .args(["serve", "--log-format", "json", "--config"])
            .arg(config.path())
            .env_remove("LARIAT_CONFIG")
            .env_remove("OPENAI_API_KEY")
            .env_remove("RUST_LOG")
            .envs(levels.map(|levels| ("RUST_LOG", levels)))
            .envs(env.iter().copied())
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
        panic!("lariat did not start: {}", String::from_utf8_lossy(&process.wait_with_output().unwrap().stderr));
    }

    pub async fn wait_ready(&self) -> Value {
        for _ in 0..400 {
            let response = client().get(format!("{}/ready", self.url)).send().await.unwrap();
            if response.status() == 200 {
                return response.json().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("lariat did not become ready");
    }

    pub fn chat(&self, body: &Value) -> reqwest::RequestBuilder {
        client().post(format!("{}/v1/chat/completions", self.url)).bearer_auth(ALICE).json(body)
    }

    /// SIGTERM, then everything lariat logged.
    pub fn stop(self) -> String {
        let status = Command::new("kill").args(["-TERM", &self.process.id().to_string()]).status().unwrap();
        assert!(status.success());
        let out = self.process.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn tool_result(body: &Value) -> String {
    body["messages"].as_array().unwrap().iter().find(|m| m["role"] == "tool").unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The issue's `get-env` case: a stdio server that reports its environment sees
/// neither the provider key nor a client key from lariat's, only the minimal set,
/// what `env_passthrough` names and its configured `env`.
#[tokio::test]
async fn a_stdio_server_sees_no_key_of_lariats_environment() {
    let Some(python) = venv_program("python", &["-c", "pass"]) else { return };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/env_server.py");
    let mock = MockUpstream::start().await;
    let extra = format!(
        "[models.agent]\nchain = [\"mock/gpt-test\"]\n[tools.mcp.envy]\ncommand = \"{}\"\nargs = [\"{script}\"]\n\
         env = {{ CONFIGURED = \"configured-value-0003\" }}\nenv_passthrough = [\"LARIAT_PASS\", \"LARIAT_UNSET_SURELY\"]\n",
        python.display()
    );
    let provider_env_key = "sk-env-provider-key-0001";
    let config =
        config(&mock, &extra).replace(&format!("api_key = \"{PROVIDER_KEY}\""), "api_key = \"${OPENAI_API_KEY}\"");
    let child = Spawned::start(
        &config,
        &[("OPENAI_API_KEY", provider_env_key), ("LARIAT_KEY_ALICE", ALICE), ("LARIAT_PASS", "passed-value-0002")],
    )
    .await;
    let ready = child.wait_ready().await;
    assert_eq!(ready["tool_sources"]["envy"], "ready (2 tools)", "{ready}");
    mock.push(Reply::tool_calls(&[("a", "envy__get_env", "{}")])).push(Reply::text("ok"));
    let response =
        child.chat(&json!({"model": "agent", "messages": [{"role": "user", "content": "env?"}]})).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let result = tool_result(&mock.received()[1].body);
    let env: serde_json::Map<String, Value> = serde_json::from_str(&result).unwrap_or_else(|e| panic!("{e}: {result}"));
    for absent in ["OPENAI_API_KEY", "LARIAT_KEY_ALICE", "RUST_LOG", "LARIAT_UNSET_SURELY"] {
        assert!(!env.contains_key(absent), "{absent} reached the MCP server: {result}");
    }
    for secret in [provider_env_key, ALICE] {
        assert!(!result.contains(secret), "{secret} reached the model: {result}");
    }
    assert!(env.contains_key("PATH"), "{result}");
    // Passed in by name or configured, and (being secrets) blanked out of the result.
    assert_eq!(env["LARIAT_PASS"], "[redacted]", "{result}");
    assert_eq!(env["CONFIGURED"], "[redacted]", "{result}");
    let logs = child.stop();
    assert!(!logs.contains(provider_env_key) && !logs.contains("passed-value-0002"), "{logs}");
}

/// A provider echoing its key in a mid-stream error event: the client's error event
/// and lariat's log carry `[redacted]`, never the key. The same holds for a relayed
/// answer and for an error status echoing another configured secret.
#[tokio::test]
async fn secrets_echoed_by_an_upstream_reach_neither_client_nor_log() {
    let mock = MockUpstream::start().await;
    let tool_secret = "tool-header-secret-77";
    let extra = format!(
        "[tools.http.lookup]\ndescription = \"Lookup\"\nurl = \"http://127.0.0.1:1/x\"\nheaders = {{ X-Token = \"{tool_secret}\" }}\n"
    );
    mock.push(Reply::Sse(vec![
        Step::Data(chunk(json!({"role": "assistant", "content": "partial"}), None)),
        Step::Data(
            json!({"error": {"message": format!("invalid api key {PROVIDER_KEY}"), "type": "auth"}}).to_string(),
        ),
    ]));
    mock.push(Reply::text(&format!("your key is {PROVIDER_KEY} and the tool's is {tool_secret}")));
    mock.push(Reply::error(500, &format!("upstream saw X-Token: {tool_secret}")));
    let child = Spawned::start(&config(&mock, &extra), &[]).await;

    let streamed = child.chat(&request("assistant", true)).send().await.unwrap();
    let events = SseReader::new(streamed).collect().await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let error = json_events(&events).into_iter().find(|e| e.get("error").is_some()).expect("an error event");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("invalid api key [redacted]"), "{message}");
    assert!(events.iter().all(|e| !e.contains(PROVIDER_KEY)), "{events:?}");

    let relayed: Value = child.chat(&request("assistant", false)).send().await.unwrap().json().await.unwrap();
    let content = relayed["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(content, "your key is [redacted] and the tool's is [redacted]");

    let failed = child.chat(&request("assistant", false)).send().await.unwrap();
    let error = expect_error(failed, 502, "upstream_failed").await;
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("X-Token: [redacted]") && !message.contains(tool_secret), "{message}");

    let logs = child.stop();
    assert!(logs.contains("invalid api key [redacted]"), "the stream failure should be logged:\n{logs}");
    for secret in [PROVIDER_KEY, tool_secret] {
        assert!(!logs.contains(secret), "{secret} appears in the logs:\n{logs}");
    }
}

/// A tool result is cleaned of every configured secret before the model (and the
/// audit log) sees it.
#[tokio::test]
async fn tool_results_are_cleaned_of_secrets() {
    let mock = MockUpstream::start().await;
    let tools = ToolServer::start().await;
    let extra = format!(
        "[models.agent]\nchain = [\"mock/gpt-test\"]\n[tools.http.echo]\ndescription = \"Echo\"\nurl = \"{}/echo\"\nheaders = {{ X-Token = \"echo-header-secret-5\" }}\n",
        tools.url
    );
    let lariat = Lariat::start(&config(&mock, &extra)).await;
    let args = format!(r#"{{"text": "the keys are {PROVIDER_KEY} and echo-header-secret-5"}}"#);
    mock.push(Reply::tool_calls(&[("a", "echo", &args)])).push(Reply::text("ok"));
    let response = lariat.chat(json!({"model": "agent", "messages": [{"role": "user", "content": "echo"}]})).await;
    assert_eq!(response.status(), 200);
    let result = tool_result(&mock.received()[1].body);
    assert!(result.contains("the keys are [redacted] and [redacted]"), "{result}");
}

/// Where redirects point, and what reached there.
#[derive(Clone, Default)]
struct Redirector {
    target: Arc<Mutex<String>>,
    final_headers: Arc<Mutex<Vec<HeaderMap>>>,
}

async fn redirect_handler(State(r): State<Redirector>, uri: http::Uri, headers: HeaderMap) -> Response {
    let location = match uri.path() {
        "/v1/chat/completions" => format!("{}/chat/completions", r.target.lock().unwrap()),
        "/tool/away" => format!("{}/echo", r.target.lock().unwrap()),
        "/tool/here" => "/tool/final".to_owned(),
        "/tool/final" => {
            let token = headers.get("x-token").and_then(|v| v.to_str().ok()).unwrap_or("none").to_owned();
            r.final_headers.lock().unwrap().push(headers);
            return format!("final, token {}", token.len()).into_response();
        }
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (StatusCode::TEMPORARY_REDIRECT, [(http::header::LOCATION, location)]).into_response()
}

async fn start_redirector(target: &str) -> (String, Redirector) {
    let state = Redirector::default();
    *state.target.lock().unwrap() = target.to_owned();
    let app = Router::new().fallback(redirect_handler).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), state)
}

/// A provider that redirects elsewhere gets no second request: its key would go along.
#[tokio::test]
async fn upstream_redirects_are_not_followed() {
    let mock = MockUpstream::start().await;
    mock.always(Reply::text("should not be reached"));
    let (redirector, _) = start_redirector(&mock.url).await;
    let config =
        config(&mock, "").replace(&format!("base_url = \"{}\"", mock.url), &format!("base_url = \"{redirector}/v1\""));
    let lariat = Lariat::start(&config).await;
    let response = lariat.chat(request("assistant", false)).await;
    let error = expect_error(response, 502, "upstream_failed").await;
    assert!(error["message"].as_str().unwrap().contains("307"), "{error}");
    assert!(mock.received().is_empty(), "the redirect was followed with the provider's key");
}

/// An HTTP tool follows a redirect on its own origin, never to another one.
#[tokio::test]
async fn http_tools_follow_redirects_only_on_their_origin() {
    let mock = MockUpstream::start().await;
    let tools = ToolServer::start().await;
    let (redirector, state) = start_redirector(&tools.url).await;
    let extra = format!(
        "[models.agent]\nchain = [\"mock/gpt-test\"]\n\
         [tools.http.away]\ndescription = \"Away\"\nurl = \"{redirector}/tool/away\"\nheaders = {{ X-Token = \"redirect-secret-9\" }}\n\
         [tools.http.here]\ndescription = \"Here\"\nurl = \"{redirector}/tool/here\"\nheaders = {{ X-Token = \"redirect-secret-9\" }}\n"
    );
    let lariat = Lariat::start(&config(&mock, &extra)).await;
    mock.push(Reply::tool_calls(&[("a", "away", "{}"), ("b", "here", "{}")])).push(Reply::text("ok"));
    let response = lariat.chat(json!({"model": "agent", "messages": [{"role": "user", "content": "go"}]})).await;
    assert_eq!(response.status(), 200);
    let results: Vec<String> =
        crate::tools::tool_results(&mock.received()[1].body).into_iter().map(|(_, content)| content).collect();
    assert!(results[0].starts_with("Tool error: HTTP 307"), "{results:?}");
    assert!(tools.hits("/echo").is_empty(), "the cross-origin redirect was followed");
    assert_eq!(results[1], "final, token 17", "{results:?}");
    assert_eq!(state.final_headers.lock().unwrap().len(), 1);
}
