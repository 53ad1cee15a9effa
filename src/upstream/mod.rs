//! Talking to upstream providers: one HTTP client per provider, request encoding, the
//! response (JSON or SSE) and failure classification.
//!
//! `Upstream::call` is the one entry point the agent uses for every upstream round.
//! It walks the virtual model's chain; today it tries the first target only, and the
//! retry/fallback walk replaces `call` without changing its signature.

mod failure;
mod sse;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde::ser::SerializeMap;

pub use failure::{Attempt, Failure};
pub use sse::ChunkStream;

use crate::config::{ChainEntry, Provider};
use crate::error::ApiError;
use crate::openai::{ChatCompletion, ChatRequest};
use crate::telemetry::Metrics;

/// Largest error body read from an upstream (its message is all we keep).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// What an upstream answered.
pub enum Reply {
    Complete(ChatCompletion),
    /// A stream whose first chunk already arrived (so the target is committed).
    Stream(ChunkStream),
}

/// A reply and the target that produced it.
pub struct Answered {
    pub target: ChainEntry,
    pub reply: Reply,
    /// Upstream attempts this call made, the successful one included.
    pub attempts: u32,
}

#[derive(Debug)]
pub struct Upstream {
    clients: HashMap<String, reqwest::Client>,
    max_event_bytes: usize,
    metrics: Arc<Metrics>,
}

impl Upstream {
    pub fn new(
        providers: impl IntoIterator<Item = Arc<Provider>>,
        max_event_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ApiError> {
        let clients = providers
            .into_iter()
            .map(|p| {
                let client = reqwest::Client::builder()
                    .connect_timeout(p.connect_timeout)
                    .pool_idle_timeout(Duration::from_secs(90))
                    .tcp_nodelay(true)
                    .build()
                    .map_err(|e| ApiError::Internal(format!("building HTTP client for `{}`: {e}", p.name)))?;
                Ok((p.name.clone(), client))
            })
            .collect::<Result<_, ApiError>>()?;
        Ok(Self { clients, max_event_bytes, metrics })
    }

    /// One upstream round for `request` on `chain`. `stream` asks the upstream to stream.
    #[tracing::instrument(skip_all, fields(stream))]
    pub async fn call(&self, chain: &[ChainEntry], request: &ChatRequest, stream: bool) -> Result<Answered, ApiError> {
        let Some(target) = chain.first() else {
            return Err(ApiError::Internal("virtual model has an empty chain".into()));
        };
        let label = target.label();
        match self.attempt(target, request, stream).await {
            Ok(reply) => {
                self.metrics.record_attempt(&label, "ok");
                Ok(Answered { target: target.clone(), reply: self.watch(reply, label), attempts: 1 })
            }
            Err(failure) => {
                self.metrics.record_attempt(&label, failure.reason());
                tracing::warn!(target = %label, reason = failure.reason(), error = %failure, "upstream attempt failed");
                Err(into_api_error(vec![Attempt { target: label, failure }]))
            }
        }
    }

    /// Counts and logs a stream that fails after its first chunk (when the target was
    /// already committed and the failure reaches the client).
    fn watch(&self, reply: Reply, label: String) -> Reply {
        let Reply::Stream(chunks) = reply else { return reply };
        let metrics = self.metrics.clone();
        Reply::Stream(Box::pin(chunks.inspect(move |item| {
            if let Err(failure) = item {
                metrics.record_attempt(&label, failure.reason());
                tracing::warn!(target = %label, reason = failure.reason(), error = %failure, "upstream stream failed after its first chunk");
            }
        })))
    }

    /// One HTTP exchange with one target. For streams, waits for the first chunk so
    /// that anything failing before it is still a clean, retryable failure.
    async fn attempt(&self, target: &ChainEntry, request: &ChatRequest, stream: bool) -> Result<Reply, Failure> {
        let provider = &target.provider;
        let client = self
            .clients
            .get(&provider.name)
            .ok_or_else(|| Failure::Connect(format!("no client for provider `{}`", provider.name)))?;
        let body = serde_json::to_vec(&Outgoing { request, model: &target.model, stream })
            .map_err(|e| Failure::InvalidBody(format!("encoding the request: {e}")))?;
        let mut builder = client
            .post(&provider.chat_url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, if stream { "text/event-stream" } else { "application/json" });
        if let Some(key) = &provider.api_key {
            let mut value = http::HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()))
                .map_err(|_| Failure::Connect("provider api_key is not a valid header value".into()))?;
            value.set_sensitive(true);
            builder = builder.header(http::header::AUTHORIZATION, value);
        }
        for (name, value) in &provider.headers {
            builder = builder.header(name.as_str(), value.expose_secret());
        }
        let timeout = target.timeout();
        let exchange = async {
            let response = builder.body(body).send().await.map_err(|e| transport_failure(&e, timeout))?;
            let status = response.status();
            if !status.is_success() {
                return Err(error_response(provider, response).await);
            }
            let is_sse = response
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("text/event-stream"));
            if is_sse {
                let mut chunks = sse::chunks(response.bytes_stream(), self.max_event_bytes, timeout);
                match chunks.next().await {
                    Some(Ok(first)) => Ok(Reply::Stream(Box::pin(futures::stream::iter([Ok(first)]).chain(chunks)))),
                    Some(Err(failure)) => Err(failure),
                    None => Err(Failure::Stream("the upstream stream was empty".into())),
                }
            } else {
                let bytes = response.bytes().await.map_err(|e| transport_failure(&e, timeout))?;
                serde_json::from_slice(&bytes)
                    .map(Reply::Complete)
                    .map_err(|e| Failure::InvalidBody(format!("not a chat completion: {e}")))
            }
        };
        tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(Failure::Timeout(timeout)))
    }
}

/// Maps the failed attempts of one call to what the client sees.
fn into_api_error(attempts: Vec<Attempt>) -> ApiError {
    match attempts.last().map(|a| &a.failure) {
        Some(Failure::Status { status, message, code, param, .. })
            if attempts.last().is_some_and(|a| a.failure.is_client_fault()) =>
        {
            ApiError::UpstreamRejected {
                status: http::StatusCode::from_u16(*status).unwrap_or(http::StatusCode::BAD_REQUEST),
                message: message.clone(),
                code: code.clone(),
                param: param.clone(),
            }
        }
        _ if attempts.iter().all(|a| a.failure.is_timeout()) => ApiError::UpstreamTimeout(attempts),
        _ if attempts.iter().all(|a| a.failure.is_rate_limit()) => ApiError::RateLimited(attempts),
        _ => ApiError::UpstreamFailed(attempts),
    }
}

fn transport_failure(e: &reqwest::Error, timeout: Duration) -> Failure {
    if e.is_timeout() {
        Failure::Timeout(timeout)
    } else if e.is_connect() {
        Failure::Connect(root_cause(e))
    } else {
        Failure::Stream(root_cause(e))
    }
}

/// reqwest's top-level message names the URL only; the cause says what happened.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

async fn error_response(provider: &Provider, response: reqwest::Response) -> Failure {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    let secrets: Vec<&str> =
        provider.api_key.iter().chain(provider.headers.iter().map(|(_, v)| v)).map(|s| s.expose_secret()).collect();
    Failure::from_status(status, &body, retry_after, &secrets)
}

/// The request as sent to one target: the client's body with `model` and `stream`
/// replaced, written without copying the message list.
struct Outgoing<'a> {
    request: &'a ChatRequest,
    model: &'a str,
    stream: bool,
}

impl Serialize for Outgoing<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let r = self.request;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("model", self.model)?;
        map.serialize_entry("messages", &r.messages)?;
        map.serialize_entry("stream", &self.stream)?;
        if self.stream
            && let Some(options) = &r.stream_options
        {
            map.serialize_entry("stream_options", options)?;
        }
        for (key, value) in &r.rest {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}
