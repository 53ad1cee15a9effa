//! Request bodies within bounds before any handler sees them: a declared
//! `Content-Length` over `max_body_bytes` is answered 413 at once (nothing of the
//! body is read), and a body must be complete within `body_read_timeout`.
//!
//! The body is not buffered here: the handler still reads it, after `auth`, so an
//! unauthenticated client cannot make lariat hold bodies in memory.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http_body::Body as _;
use tokio::time::Instant;

use super::AppState;
use crate::error::ApiError;

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?} (server.body_read_timeout_s)")]
struct SlowBody(Duration);

pub async fn bound_body(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let max = state.config.server.max_body_bytes;
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        let mut response = ApiError::PayloadTooLarge { limit: max }.into_response();
        // The body is never read, so the connection cannot carry another request.
        response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        return response;
    }
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let timeout = state.config.server.connections.body_read_timeout;
    let deadline = Instant::now() + timeout;
    let (parts, body) = request.into_parts();
    let chunks = body.into_data_stream();
    let timed = futures::stream::unfold(Some(chunks), move |chunks| async move {
        let mut chunks = chunks?;
        match tokio::time::timeout_at(deadline, chunks.next()).await {
            Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(chunks))),
            Ok(Some(Err(e))) => Some((Err(axum::BoxError::from(e)), None)),
            Ok(None) => None,
            Err(_) => Some((Err(axum::BoxError::from(SlowBody(timeout))), None)),
        }
    });
    next.run(Request::from_parts(parts, Body::from_stream(timed))).await
}
