//! The smallest relay built on lariat's own stack (axum server, reqwest client), for
//! `bench/run.sh`: it forwards `POST /v1/chat/completions` bodies unchanged to
//! `--upstream` and relays the answer (JSON or SSE) as bytes, with no parsing, no
//! middleware and no metrics. Its figures are the floor of what this stack costs per
//! request, next to which lariat's own work can be told apart from the stack's.
//!
//! ```text
//! cargo run --release --example bare_relay -- --listen 127.0.0.1:18084 \
//!     --upstream http://127.0.0.1:18001/v1/chat/completions [--threads N]
//! ```
//!
//! By default it runs on tokio's work-stealing runtime, the stack as commonly used.
//! `--threads N` runs it as lariat serves: N threads, each a single-threaded runtime
//! accepting from the same listening socket, with its own client (so its own
//! connection pool), a request never leaving its thread.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "bare_relay", about = "Minimal axum + reqwest relay (benchmark baseline)")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:18084")]
    listen: SocketAddr,
    /// Full URL requests are forwarded to.
    #[arg(long, default_value = "http://127.0.0.1:18001/v1/chat/completions")]
    upstream: String,
    /// Single-threaded runtimes, one per thread (0: tokio's work-stealing runtime).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

struct Relay {
    client: reqwest::Client,
    upstream: reqwest::Url,
}

async fn relay(State(relay): State<Arc<Relay>>, body: Bytes) -> Response {
    let sent = relay
        .client
        .post(relay.upstream.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    let upstream = match sent {
        Ok(response) => response,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = upstream.status();
    let content_type = upstream.headers().get(header::CONTENT_TYPE).cloned();
    let mut response = Response::new(Body::from_stream(upstream.bytes_stream()));
    *response.status_mut() = status;
    if let Some(value) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

fn main() -> ExitCode {
    let args = Args::parse();
    let served = if args.threads == 0 { work_stealing(&args) } else { per_thread(&args) };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare_relay: {e}");
            ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn work_stealing(args: &Args) -> Result<(), Error> {
    let listener = std::net::TcpListener::bind(args.listen)?;
    eprintln!("bare_relay listening on {}, forwarding to {}", listener.local_addr()?, args.upstream);
    tokio::runtime::Runtime::new()?.block_on(serve(listener, args.upstream.clone()))
}

/// `args.threads` threads, each serving on its own single-threaded runtime from a
/// duplicate of one listening socket.
fn per_thread(args: &Args) -> Result<(), Error> {
    let listener = std::net::TcpListener::bind(args.listen)?;
    eprintln!(
        "bare_relay listening on {} with {} single-threaded runtimes, forwarding to {}",
        listener.local_addr()?,
        args.threads,
        args.upstream
    );
    let threads: Vec<_> = (0..args.threads)
        .map(|_| {
            let (listener, upstream) = (listener.try_clone()?, args.upstream.clone());
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            Ok(std::thread::spawn(move || runtime.block_on(serve(listener, upstream))))
        })
        .collect::<Result<_, Error>>()?;
    for thread in threads {
        thread.join().map_err(|_| "a serving thread panicked")??;
    }
    Ok(())
}

async fn serve(listener: std::net::TcpListener, upstream: String) -> Result<(), Error> {
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let upstream = reqwest::Url::parse(&upstream)?;
    let app = Router::new()
        .route("/v1/chat/completions", post(relay))
        .route("/health", get(|| async { "ok" }))
        .with_state(Arc::new(Relay { client, upstream }));
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            eprintln!("bare_relay: TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, app).await?;
    Ok(())
}
