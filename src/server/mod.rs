//! The HTTP surface: axum router, layers (request id, trace span, body limit and
//! metrics, panic → JSON), the bearer key, handlers, and serving with graceful
//! shutdown.

mod auth;
mod chat;
mod commit;
mod connection;
mod extract;
mod handlers;
mod limits;
mod listen;
mod progress;
mod responses;
mod socket;
mod sse;
mod threads;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{OnResponse, TraceLayer};

use crate::agent::{Agent, Settings};
use crate::auth::Keys;
use crate::compact::Tokenizer;
use crate::config::{Config, ConnectionLimits};
use crate::error::ApiError;
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::tools::Registry;
use crate::upstream::Upstream;

/// The headers lariat sets or reads, named once: a `&str` name is parsed on every use.
pub(crate) mod header {
    use http::HeaderName;

    pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub const ATTEMPTS: HeaderName = HeaderName::from_static("x-lariat-attempts");
    pub const UPSTREAM: HeaderName = HeaderName::from_static("x-lariat-upstream");
    pub const LOOP_UPSTREAM: HeaderName = HeaderName::from_static("x-lariat-loop-upstream");
    pub const CONFIRMATION: HeaderName = HeaderName::from_static("x-lariat-confirmation");
    pub const SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");
    pub const PROGRESS: HeaderName = HeaderName::from_static("x-lariat-progress");
    pub const OFF_RECORD: HeaderName = HeaderName::from_static("x-lariat-off-record");
}

/// Everything a handler needs, shared by all requests.
#[derive(Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub keys: Keys,
    pub agent: Arc<Agent>,
    pub metrics: Arc<Metrics>,
    /// Unix time the config was loaded; reported as `created` of every model.
    pub started_at: u64,
    ready: AtomicBool,
}

/// Why the gateway could not be built from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Upstream(#[from] crate::upstream::BuildError),
    #[error("`tools`: {0}")]
    Tools(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl AppState {
    pub fn new(config: Arc<Config>) -> Result<Arc<Self>, StartError> {
        let metrics = Arc::new(Metrics::default());
        let upstream = Arc::new(Upstream::new(&config, metrics.clone())?);
        let tools = Registry::new(&config.tools).map_err(|e| StartError::Tools(e.to_string()))?;
        let store = Store::from_config(&config.store)?.with_limits(config.store_limits);
        let settings = Settings::from_config(&config);
        // Through Redis, replicas share summaries; in memory, the summariser's own cache is enough.
        let shared = matches!(store, Store::Redis(_)).then(|| store.clone());
        let summarizer = config.compaction.summarize.clone().map(|s| crate::agent::Summarizer::new(s, shared));
        Ok(Arc::new(Self {
            keys: Keys::new(&config.keys).with_users(&config.users),
            agent: Arc::new(Agent { upstream, tools, store, metrics: metrics.clone(), settings, summarizer }),
            metrics,
            config,
            started_at: u64::try_from(crate::clock::unix_now()).unwrap_or(0),
            ready: AtomicBool::new(false),
        }))
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Starts the tool sources, and marks the gateway ready once each has tried its
    /// first listing (a source that failed is reported by `/ready` but does not
    /// hold the others back). Must run inside the runtime.
    pub fn start(self: &Arc<Self>) {
        self.agent.tools.start();
        let tokenizers: std::collections::HashSet<Tokenizer> =
            self.config.models.values().flat_map(|m| &m.chain).map(|e| Tokenizer::for_model(&e.model)).collect();
        // One thread per table: expanding them is CPU work of a few hundred
        // milliseconds each, and readiness waits for the slowest, not the sum.
        let warm_ups: Vec<_> =
            tokenizers.into_iter().map(|t| tokio::task::spawn_blocking(move || t.warm_up())).collect();
        let state = self.clone();
        // Like the MCP supervisors, a long-lived task tied to no request: it only
        // flips the readiness flag once the first listings are done (and the BPE
        // tables are built, so no request pays for them).
        tokio::spawn(async move {
            for warm_up in warm_ups {
                let _ = warm_up.await;
            }
            state.agent.tools.wait_listed().await;
            state.ready.store(true, Ordering::Release);
            tracing::info!("ready: every tool source has been listed");
        });
    }
}

/// The virtual model a response was for, recorded by handlers for the metrics layer.
#[derive(Debug, Clone)]
pub(crate) struct ModelLabel(pub String);

pub fn router(state: Arc<AppState>) -> Router {
    router_with(state, Router::new())
}

/// The router with `extra` routes mounted under the same layers; tests use it to
/// check that the layers (panic → JSON 500 among them) hold for any handler.
pub fn router_with(state: Arc<AppState>, extra: Router<Arc<AppState>>) -> Router {
    let max_body = state.config.server.max_body_bytes;
    let api = Router::new()
        .route("/v1/chat/completions", post(handlers::chat_completions))
        .route("/v1/responses", post(responses::create))
        .route("/v1/responses/{id}", get(responses::get).delete(responses::delete))
        .route("/v1/models", get(handlers::list_models))
        .route("/v1/models/{id}", get(handlers::get_model));
    Router::new()
        .merge(api)
        .merge(extra)
        .route("/health", get(handlers::health))
        .route("/ready", get(handlers::ready))
        .route("/metrics", get(handlers::metrics))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(state.clone(), edge))
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new([http::header::AUTHORIZATION]))
                .layer(SetRequestIdLayer::new(header::REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|req: &Request| {
                            let id = req.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok());
                            tracing::info_span!("request", id = id.unwrap_or("-"), method = %req.method(), path = %req.uri().path())
                        })
                        .on_request(())
                        .on_response(AccessLog)
                        // A failed request is logged once, where its error is known
                        // (`ApiError::log`, or the SSE encoder after the start): the
                        // trace layer's own failure line would only repeat it.
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::new(header::REQUEST_ID))
                .layer(CatchPanicLayer::custom(|_| {
                    ApiError::Internal("the request handler panicked".into()).into_response()
                })),
        )
        .with_state(state)
}

/// Marks a response to a health probe or a metrics scrape: orchestrators and
/// Prometheus ask every few seconds, so its access-log line is DEBUG, not INFO.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe;

/// The access-log line of every response: INFO, or DEBUG for a [`Probe`].
#[derive(Debug, Clone, Copy)]
struct AccessLog;

impl<B> OnResponse<B> for AccessLog {
    fn on_response(self, response: &http::Response<B>, latency: std::time::Duration, _: &tracing::Span) {
        let status = response.status().as_u16();
        let latency_ms = latency.as_secs_f64() * 1000.0;
        if response.extensions().get::<Probe>().is_some() {
            tracing::debug!(status, latency_ms, "finished processing request");
        } else {
            tracing::info!(status, latency_ms, "finished processing request");
        }
    }
}

/// Every routed request: its body bounded (`limits`), and its response counted by
/// route, virtual model and status. One middleware, not two: each costs a request
/// a clone of the routes below it and a boxed future.
async fn edge(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = tokio::time::Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = match limits::bound_body(&state, request) {
        Ok(request) => next.run(request).await,
        Err(refused) => refused.into_response(),
    };
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let model = response.extensions().get::<ModelLabel>().map_or("-", |m| m.0.as_str());
    state.metrics.record_request(route, model, response.status().as_u16(), started.elapsed());
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        self.log(if status.is_server_error() { "request failed" } else { "request rejected" });
        let mut response = (status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        }
        if self.retried() {
            // lariat already retried every target: SDK retries would only multiply the calls.
            headers.insert(header::SHOULD_RETRY, http::HeaderValue::from_static("false"));
        }
        if let Some(after) = self.retry_after() {
            headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from(after.as_secs().max(1)));
        }
        response
    }
}

/// Serves `app` until `shutdown` resolves, then lets in-flight requests finish for at
/// most `deadline` before returning; connection limits at their defaults.
pub async fn serve(
    app: Router,
    listener: TcpListener,
    deadline: std::time::Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = ConnectionLimits { shutdown_timeout: deadline, ..ConnectionLimits::default() };
    threads::serve(app, listener, std::num::NonZeroUsize::MIN, limits, shutdown).await
}

/// Serves `app` within `limits` (the config's `server.connections`) until `shutdown`
/// resolves, then lets in-flight requests finish for `limits.shutdown_timeout`.
pub async fn serve_with(
    app: Router,
    listener: TcpListener,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    threads::serve(app, listener, std::num::NonZeroUsize::MIN, limits, shutdown).await
}

/// [`serve_with`] on `threads` threads, the caller's among them, each with its own
/// single-threaded runtime (the caller's runtime should be one too).
pub async fn serve_threads(
    app: Router,
    listener: TcpListener,
    threads: std::num::NonZeroUsize,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    threads::serve(app, listener, threads, limits, shutdown).await
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
