//! A fast mock OpenAI upstream for the benchmarks in `bench/run.sh`.
//!
//! `POST /v1/chat/completions` (and `/chat/completions`): with `"stream": true` in the
//! body it answers `text/event-stream` with a role chunk, `--chunks` content chunks, a
//! finish chunk and `data: [DONE]`; otherwise a small `chat.completion` with usage.
//! Every response body is built once at start-up, so a request costs one small JSON
//! parse (for `stream`) and a cheap `Bytes` clone.
//!
//! ```text
//! cargo run --release --example mock_upstream -- --listen 127.0.0.1:18001 \
//!     [--delay-ms 50] [--chunks 10] [--chunk-interval-ms 0] [--threads 0]
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use clap::Parser;
use serde::Deserialize;

#[derive(Parser, Debug)]
#[command(name = "mock_upstream", about = "Fast mock OpenAI upstream for lariat's benchmarks")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "MOCK_LISTEN", default_value = "127.0.0.1:18001")]
    listen: SocketAddr,
    /// Sleep this long before answering (simulates a slow model).
    #[arg(long, env = "MOCK_DELAY_MS", default_value_t = 0)]
    delay_ms: u64,
    /// Content chunks per streamed answer (plus a role chunk and a finish chunk).
    #[arg(long, env = "MOCK_CHUNKS", default_value_t = 10)]
    chunks: usize,
    /// Pause between streamed events; 0 sends the whole stream in one write.
    #[arg(long, env = "MOCK_CHUNK_INTERVAL_MS", default_value_t = 0)]
    chunk_interval_ms: u64,
    /// Runtime worker threads; 0 means one per core.
    #[arg(long, env = "MOCK_THREADS", default_value_t = 0)]
    threads: usize,
    /// Answer a request that carries no tool result with a call to this tool (no
    /// arguments), and one that does with the plain answer: a two-round tool loop.
    #[arg(long, env = "MOCK_TOOL_CALL")]
    tool_call: Option<String>,
}

struct Mock {
    /// The tool-call answer of `--tool-call`.
    tool_call: Option<Bytes>,
    delay: Duration,
    interval: Duration,
    completion: Bytes,
    /// The stream's events, each a complete `data: ...\n\n` frame, `[DONE]` last.
    events: Vec<Bytes>,
    /// All of `events` concatenated, sent in one write when `interval` is zero.
    whole_stream: Bytes,
}

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    messages: Vec<RoleOnly>,
}

#[derive(Deserialize)]
struct RoleOnly {
    role: String,
}

fn tool_call(name: &str) -> Bytes {
    let value = serde_json::json!({
        "id": ID, "object": "chat.completion", "created": CREATED, "model": MODEL,
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "call_bench", "type": "function", "function": {"name": name, "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}
    });
    Bytes::from(value.to_string())
}

const ID: &str = "chatcmpl-bench";
const MODEL: &str = "bench-model";
const CREATED: u64 = 1_700_000_000;

fn completion() -> Bytes {
    let value = serde_json::json!({
        "id": ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from the mock upstream."},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}
    });
    Bytes::from(value.to_string())
}

fn event(delta: &serde_json::Value, finish: Option<&str>) -> Bytes {
    let value = serde_json::json!({
        "id": ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
    });
    Bytes::from(format!("data: {value}\n\n"))
}

fn events(chunks: usize) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(chunks + 3);
    out.push(event(&serde_json::json!({"role": "assistant", "content": ""}), None));
    for i in 0..chunks {
        out.push(event(&serde_json::json!({"content": format!("tok{i} ")}), None));
    }
    out.push(event(&serde_json::json!({}), Some("stop")));
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

async fn chat(State(mock): State<Arc<Mock>>, body: Bytes) -> Response {
    let (stream, has_tool_result) = match serde_json::from_slice::<Request>(&body) {
        Ok(request) => (request.stream, request.messages.iter().any(|m| m.role == "tool")),
        Err(e) => {
            let message = serde_json::json!({"error": {"message": format!("bad request body: {e}"), "type": "invalid_request_error"}});
            return (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "application/json")], message.to_string())
                .into_response();
        }
    };
    if !mock.delay.is_zero() {
        tokio::time::sleep(mock.delay).await;
    }
    if !stream {
        let body = match &mock.tool_call {
            Some(call) if !has_tool_result => call.clone(),
            _ => mock.completion.clone(),
        };
        return ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response();
    }
    let body = if mock.interval.is_zero() {
        Body::from(mock.whole_stream.clone())
    } else {
        let mock = mock.clone();
        let frames = futures::stream::unfold(0usize, move |i| {
            let mock = mock.clone();
            async move {
                let frame = mock.events.get(i)?.clone();
                if i > 0 {
                    tokio::time::sleep(mock.interval).await;
                }
                Some((Ok::<_, Infallible>(frame), i + 1))
            }
        });
        Body::from_stream(frames)
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if args.threads > 0 {
        builder.worker_threads(args.threads);
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mock_upstream: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock_upstream: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> std::io::Result<()> {
    let events = events(args.chunks);
    let whole_stream = Bytes::from(events.iter().flat_map(|e| e.iter().copied()).collect::<Vec<u8>>());
    let mock = Arc::new(Mock {
        tool_call: args.tool_call.as_deref().map(tool_call),
        delay: Duration::from_millis(args.delay_ms),
        interval: Duration::from_millis(args.chunk_interval_ms),
        completion: completion(),
        events,
        whole_stream,
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        .route("/health", get(|| async { "ok" }))
        .with_state(mock);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let address = listener.local_addr()?;
    // Small writes (SSE events) go out at once, as a real server's would.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            eprintln!("mock_upstream: TCP_NODELAY: {e}");
        }
    });
    eprintln!(
        "mock_upstream listening on {} (delay {} ms, {} chunks, interval {} ms)",
        address, args.delay_ms, args.chunks, args.chunk_interval_ms
    );
    axum::serve(listener, app).await
}
