//! The smallest relay built on lariat's own stack (axum server, reqwest client), for
//! `bench/run.sh`: it forwards `POST /v1/chat/completions` bodies unchanged to
//! `--upstream` and relays the answer (JSON or SSE) as bytes, with no parsing, no
//! middleware and no metrics. Its figures are the floor of what this stack costs per
//! request, next to which lariat's own work can be told apart from the stack's.
//!
//! ```text
//! cargo run --release --example bare_relay -- --listen 127.0.0.1:18084 \
//!     --upstream http://127.0.0.1:18001/v1/chat/completions
//! ```

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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bare_relay: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare_relay: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let upstream = reqwest::Url::parse(&args.upstream)?;
    let app = Router::new()
        .route("/v1/chat/completions", post(relay))
        .route("/health", get(|| async { "ok" }))
        .with_state(Arc::new(Relay { client, upstream }));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let address = listener.local_addr()?;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            eprintln!("bare_relay: TCP_NODELAY: {e}");
        }
    });
    eprintln!("bare_relay listening on {address}, forwarding to {}", args.upstream);
    axum::serve(listener, app).await?;
    Ok(())
}
