//! Shared test harness: a scripted mock upstream and lariat started on port 0.
//!
//! Script the upstream with one line per answer (`mock.push(Reply::text("hi"))`),
//! start lariat against it (`Lariat::start(&config(&mock, ""))`), talk HTTP to it,
//! then assert on what the upstream received (`mock.received()`).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::{HeaderMap, StatusCode};
use lariat::config::Config;
use lariat::server::{self, AppState};
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};

/// One scripted upstream answer.
#[derive(Clone)]
pub enum Reply {
    /// A JSON body with a status (and optional extra headers).
    Json { status: u16, body: Value, headers: Vec<(&'static str, String)> },
    /// Any body with any content type (for garbage answers).
    Raw { status: u16, content_type: &'static str, body: String },
    /// An SSE body played step by step.
    Sse(Vec<Step>),
    /// Never answers.
    Hang,
    /// Another reply, after a pause.
    Delayed(Duration, Box<Reply>),
}

/// One step of a scripted SSE body.
#[derive(Clone)]
pub enum Step {
    /// `data: <payload>\n\n`
    Data(String),
    /// Raw bytes, exactly as given.
    Bytes(String),
    Sleep(Duration),
    /// Waits until the test calls `notify_one` on it.
    Wait(Arc<Notify>),
    /// Aborts the connection mid-body.
    Cut,
}

impl Reply {
    /// A plain assistant answer with usage.
    pub fn text(content: &str) -> Self {
        Self::completion(json!({"role": "assistant", "content": content}), "stop")
    }

    pub fn completion(message: Value, finish_reason: &str) -> Self {
        Self::json(
            200,
            json!({
                "id": "chatcmpl-upstream", "object": "chat.completion", "created": 1, "model": "upstream-model",
                "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
            }),
        )
    }

    pub fn json(status: u16, body: Value) -> Self {
        Self::Json { status, body, headers: Vec::new() }
    }

    /// Adds a response header (JSON replies only).
    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        if let Self::Json { headers, .. } = &mut self {
            headers.push((name, value.to_owned()));
        }
        self
    }

    /// An OpenAI-shaped error.
    pub fn error(status: u16, message: &str) -> Self {
        Self::json(status, json!({"error": {"message": message, "type": "upstream_error", "code": null}}))
    }

    /// A streamed answer: a role chunk, one chunk per piece, a finish chunk, `[DONE]`.
    pub fn stream(pieces: &[&str]) -> Self {
        let mut steps = vec![Step::Data(chunk(json!({"role": "assistant", "content": ""}), None))];
        steps.extend(pieces.iter().map(|p| Step::Data(chunk(json!({"content": p}), None))));
        steps.push(Step::Data(chunk(json!({}), Some("stop"))));
        steps.push(Step::Data("[DONE]".into()));
        Self::Sse(steps)
    }
}

/// One upstream chunk JSON with the given delta.
pub fn chunk(delta: Value, finish_reason: Option<&str>) -> String {
    json!({
        "id": format!("chatcmpl-up-{}", rand_suffix()), "object": "chat.completion.chunk", "created": 1,
        "model": "upstream-model", "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    })
    .to_string()
}

fn rand_suffix() -> usize {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Default)]
struct MockState {
    script: Mutex<VecDeque<Reply>>,
    fallback: Mutex<Option<Reply>>,
    received: Mutex<Vec<Received>>,
    /// Notified when an SSE body is dropped before it finished (client went away).
    stream_dropped: Notify,
}

/// The scripted upstream, serving on a loopback port.
#[derive(Clone)]
pub struct MockUpstream {
    pub url: String,
    state: Arc<MockState>,
}

impl MockUpstream {
    pub async fn start() -> Self {
        let state = Arc::new(MockState::default());
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url: format!("http://{addr}/v1"), state }
    }

    /// Queues an answer for the next request.
    pub fn push(&self, reply: Reply) -> &Self {
        self.state.script.lock().unwrap().push_back(reply);
        self
    }

    /// The answer once the script is used up.
    pub fn always(&self, reply: Reply) -> &Self {
        *self.state.fallback.lock().unwrap() = Some(reply);
        self
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn last_body(&self) -> Value {
        self.received().last().expect("the upstream received no request").body.clone()
    }

    /// Waits (up to 5 s) for an SSE body to be dropped before it finished.
    pub async fn wait_stream_dropped(&self) -> bool {
        tokio::time::timeout(Duration::from_secs(5), self.state.stream_dropped.notified()).await.is_ok()
    }
}

async fn handle(State(state): State<Arc<MockState>>, uri: http::Uri, headers: HeaderMap, body: Bytes) -> Response {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.received.lock().unwrap().push(Received { path: uri.path().to_owned(), headers, body });
    let reply = state.script.lock().unwrap().pop_front().or_else(|| state.fallback.lock().unwrap().clone());
    let Some(mut reply) = reply else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "mock upstream: no reply scripted").into_response();
    };
    while let Reply::Delayed(pause, inner) = reply {
        tokio::time::sleep(pause).await;
        reply = *inner;
    }
    match reply {
        Reply::Json { status, body, headers } => {
            let mut response = (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
            for (name, value) in headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
        Reply::Raw { status, content_type, body } => {
            (StatusCode::from_u16(status).unwrap(), [(http::header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Reply::Hang => std::future::pending().await,
        Reply::Delayed(..) => unreachable!("unwrapped above"),
        Reply::Sse(steps) => {
            let guard = DropGuard { state: Some(state.clone()) };
            let body = futures::stream::unfold((steps.into_iter(), guard), |(mut steps, guard)| async move {
                loop {
                    let Some(step) = steps.next() else {
                        guard.disarm();
                        return None;
                    };
                    match step {
                        Step::Data(payload) => {
                            return Some((Ok(Bytes::from(format!("data: {payload}\n\n"))), (steps, guard)));
                        }
                        Step::Bytes(raw) => return Some((Ok(Bytes::from(raw)), (steps, guard))),
                        Step::Sleep(d) => tokio::time::sleep(d).await,
                        Step::Wait(notify) => notify.notified().await,
                        Step::Cut => {
                            guard.disarm();
                            return Some((Err(std::io::Error::other("cut")), (steps, DropGuard::disarmed())));
                        }
                    }
                }
            });
            Response::builder()
                .header(http::header::CONTENT_TYPE, "text/event-stream")
                .body(Body::from_stream(body))
                .unwrap()
        }
    }
}

struct DropGuard {
    state: Option<Arc<MockState>>,
}

impl DropGuard {
    /// The body finished as scripted; dropping it now is not a cancellation.
    fn disarm(mut self) {
        self.state = None;
    }

    fn disarmed() -> Self {
        Self { state: None }
    }
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if let Some(state) = &self.state {
            state.stream_dropped.notify_one();
        }
    }
}

/// Keys every test config knows.
pub const ALICE: &str = "sk-alice-0123456789";
pub const BOB: &str = "sk-bob-0123456789";
pub const PROVIDER_KEY: &str = "sk-provider-secret-42";

/// A config with provider `mock` (pointing at `mock`), models `assistant` and `other`,
/// key ALICE (all models) and key BOB (only `other`); `extra` is appended.
pub fn config(mock: &MockUpstream, extra: &str) -> String {
    config_with_server(mock, "", extra)
}

/// `config`, with `server` lines added to the `[server]` table.
pub fn config_with_server(mock: &MockUpstream, server: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{server}

[upstream]
retries = 0

[providers.mock]
base_url = "{url}"
api_key = "{PROVIDER_KEY}"
timeout_s = 5

# Pure relays: no server tools, so lariat is transparent.
[models.assistant]
chain = [{{ target = "mock/gpt-test", context_window = 8000 }}]
tools = []

[models.other]
chain = ["mock/other-model"]
tools = []

[[keys]]
key = "{ALICE}"
user = "alice"
access = "admin"

[[keys]]
key_sha256 = "{bob_sha}"
user = "bob"
models = ["other"]
{extra}
"#,
        url = mock.url,
        bob_sha = sha256_hex(BOB),
    )
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(lariat::config::key_digest(s.as_bytes()))
}

/// A running lariat instance.
pub struct Lariat {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    pub state: Arc<AppState>,
}

impl Lariat {
    pub async fn start(config_text: &str) -> Self {
        Self::start_with(config_text, Router::new()).await
    }

    /// Starts lariat with `extra` routes mounted under its layers.
    pub async fn start_with(config_text: &str, extra: Router<Arc<AppState>>) -> Self {
        let config = Config::from_toml(Path::new("test.toml"), config_text, &|_| None)
            .unwrap_or_else(|e| panic!("test config is invalid: {e:?}"));
        let state = AppState::new(Arc::new(config)).unwrap();
        state.start();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let app = server::router_with(state.clone(), extra);
        tokio::spawn(server::serve(app, listener, Duration::from_secs(5), async move {
            let _ = stopped.await;
        }));
        Self { url: format!("http://{addr}"), stop: Some(stop), state }
    }

    pub fn post(&self, path: &str, key: Option<&str>) -> reqwest::RequestBuilder {
        let mut builder = client().post(format!("{}{path}", self.url));
        if let Some(key) = key {
            builder = builder.bearer_auth(key);
        }
        builder
    }

    pub fn get(&self, path: &str, key: Option<&str>) -> reqwest::RequestBuilder {
        let mut builder = client().get(format!("{}{path}", self.url));
        if let Some(key) = key {
            builder = builder.bearer_auth(key);
        }
        builder
    }

    /// POST /v1/chat/completions as ALICE.
    pub async fn chat(&self, body: Value) -> reqwest::Response {
        self.post("/v1/chat/completions", Some(ALICE)).json(&body).send().await.unwrap()
    }
}

impl Drop for Lariat {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The test client. Its timeout is a backstop against hangs, longer than any
/// (paused-clock) upstream deadline the tests configure.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap()
}

/// A minimal chat request for `model`.
pub fn request(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hello"}]})
}

/// Asserts an OpenAI-shaped error with `status` and `code`; returns the error object.
pub async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    let content_type = response.headers()[http::header::CONTENT_TYPE].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/json"), "error content type {content_type}");
    let body: Value = response.json().await.unwrap();
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(error["type"].is_string(), "{body}");
    assert!(error.get("param").is_some(), "{body}");
    error.clone()
}

/// Reads SSE from a response: events (data payloads) and comments, in arrival order.
pub struct SseReader {
    stream: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    buffer: String,
    pub comments: usize,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        let ct = response.headers()[http::header::CONTENT_TYPE].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/event-stream"), "content type {ct}");
        Self { stream: response.bytes_stream().boxed(), buffer: String::new(), comments: 0 }
    }

    /// The next `data:` payload, or None at the end of the body. Fails after 60 s.
    pub async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: Vec<&str> =
                    event.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
                if event.lines().filter(|l| !l.is_empty()).all(|l| l.starts_with(':')) {
                    self.comments += 1;
                    continue;
                }
                return Some(data.join("\n"));
            }
            let next = tokio::time::timeout(Duration::from_secs(60), self.stream.next())
                .await
                .expect("no SSE event within 60 s");
            match next {
                Some(Ok(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                Some(Err(e)) => panic!("SSE body failed: {e}"),
                None => return None,
            }
        }
    }

    /// Every remaining payload, `[DONE]` included.
    pub async fn collect(mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(event) = self.next().await {
            out.push(event);
        }
        out
    }
}

/// Parses every payload but `[DONE]` as JSON.
pub fn json_events(events: &[String]) -> Vec<Value> {
    events.iter().filter(|e| *e != "[DONE]").map(|e| serde_json::from_str(e).unwrap()).collect()
}

impl Reply {
    /// A non-streamed round calling tools: `(id, name, arguments)`.
    pub fn tool_calls(calls: &[(&str, &str, &str)]) -> Self {
        let calls: Vec<Value> = calls
            .iter()
            .map(
                |(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}),
            )
            .collect();
        Self::completion(json!({"role": "assistant", "content": null, "tool_calls": calls}), "tool_calls")
    }

    /// A streamed round: optional content, then each call in two deltas (name with
    /// the first half of the arguments, then the rest), finish, usage, `[DONE]`.
    pub fn stream_tool_calls(content: Option<&str>, calls: &[(&str, &str, &str)]) -> Self {
        let mut steps = vec![Step::Data(chunk(json!({"role": "assistant", "content": content.unwrap_or("")}), None))];
        for (i, (id, name, args)) in calls.iter().enumerate() {
            let (head, tail) = args.split_at(args.len() / 2);
            let first = json!({"tool_calls": [{"index": i, "id": id, "type": "function", "function": {"name": name, "arguments": head}}]});
            let second = json!({"tool_calls": [{"index": i, "function": {"arguments": tail}}]});
            steps.push(Step::Data(chunk(first, None)));
            steps.push(Step::Data(chunk(second, None)));
        }
        steps.push(Step::Data(chunk(json!({}), Some("tool_calls"))));
        steps.push(Step::Data(usage_event(10, 5)));
        steps.push(Step::Data("[DONE]".into()));
        Self::Sse(steps)
    }

    /// `stream`, with a usage event before `[DONE]` (as with `include_usage`).
    pub fn stream_with_usage(pieces: &[&str]) -> Self {
        let Self::Sse(mut steps) = Self::stream(pieces) else { unreachable!() };
        steps.insert(steps.len() - 1, Step::Data(usage_event(10, 5)));
        Self::Sse(steps)
    }
}

fn usage_event(prompt: u64, completion: u64) -> String {
    json!({"id": "chatcmpl-up-usage", "object": "chat.completion.chunk", "model": "upstream-model", "choices": [],
           "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}})
    .to_string()
}

/// One request a `ToolServer` served.
#[derive(Debug, Clone)]
pub struct ToolHit {
    pub path: String,
    pub body: Value,
    pub started: std::time::Instant,
    pub finished: Option<std::time::Instant>,
}

/// HTTP tool endpoints on a loopback port: `/echo` (returns its body), `/slow`
/// (300 ms), `/fail` (500), `/hang` (never answers), `/big` (`big_result()`).
#[derive(Clone)]
pub struct ToolServer {
    pub url: String,
    hits: Arc<Mutex<Vec<ToolHit>>>,
    /// Notified when a `/hang` request is dropped (its caller went away).
    pub hang_dropped: Arc<Notify>,
}

impl ToolServer {
    pub async fn start() -> Self {
        let hits: Arc<Mutex<Vec<ToolHit>>> = Arc::default();
        let hang_dropped = Arc::new(Notify::new());
        let state = (hits.clone(), hang_dropped.clone());
        let app = Router::new().fallback(tool_handler).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url: format!("http://{addr}"), hits, hang_dropped }
    }

    pub fn hits(&self, path: &str) -> Vec<ToolHit> {
        self.hits.lock().unwrap().iter().filter(|h| h.path == path).cloned().collect()
    }
}

/// About 20 kB of log-like text, different on every line (what a web page or a
/// query result looks like to a tokenizer).
pub fn big_result() -> String {
    (0..450)
        .map(|i| format!("{i:04} GET /api/v1/items/{} status=200 bytes={} user=u{}\n", i * 37, i * 911, i % 13))
        .collect()
}

struct HangGuard(Arc<Notify>);

impl Drop for HangGuard {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

type ToolState = (Arc<Mutex<Vec<ToolHit>>>, Arc<Notify>);

async fn tool_handler(State((hits, hang_dropped)): State<ToolState>, uri: http::Uri, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let started = std::time::Instant::now();
    let index = {
        let mut hits = hits.lock().unwrap();
        hits.push(ToolHit { path: path.clone(), body: body.clone(), started, finished: None });
        hits.len() - 1
    };
    let response = match path.as_str() {
        "/echo" => axum::Json(json!({"echo": body})).into_response(),
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "slow done".into_response()
        }
        "/fail" => (StatusCode::INTERNAL_SERVER_ERROR, "database exploded").into_response(),
        "/big" => big_result().into_response(),
        "/hang" => {
            let _guard = HangGuard(hang_dropped);
            std::future::pending::<()>().await;
            unreachable!()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    };
    hits.lock().unwrap()[index].finished = Some(std::time::Instant::now());
    response
}

/// A program from the project's `.venv` (made by `.ci/run`) that passes `probe`.
/// Missing: under CI=true the test fails; otherwise it says it skipped (None).
pub fn venv_program(name: &str, probe: &[&str]) -> Option<std::path::PathBuf> {
    let path = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin")).join(name);
    let works = std::process::Command::new(&path)
        .args(probe)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    installed(path, works)
}

/// `path` if it `works`; else, under CI=true the test fails (`.ci/run` installs every
/// component a test needs), otherwise it says it skipped (None).
pub fn installed(path: std::path::PathBuf, works: bool) -> Option<std::path::PathBuf> {
    if works {
        return Some(path);
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{} is required under CI=true (run .ci/run)", path.display());
    eprintln!("SKIPPED: {} not found or not working (bash .ci/run installs it)", path.display());
    None
}

impl Lariat {
    /// Waits (up to 20 s) for `/ready` to answer 200; returns its body.
    pub async fn wait_ready(&self) -> Value {
        for _ in 0..400 {
            let response = self.get("/ready", None).send().await.unwrap();
            if response.status() == 200 {
                return response.json().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("lariat did not become ready");
    }
}
