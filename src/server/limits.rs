//! Request bodies within bounds before any handler sees them: a declared
//! `Content-Length` over `max_body_bytes` is answered 413 at once (nothing of the
//! body is read), and a body must be complete within `body_read_timeout` plus the
//! time its bytes would take at `body_min_rate`.
//!
//! The body is not buffered here: the handler still reads it, after `auth`, so an
//! unauthenticated client cannot make lariat hold bodies in memory.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http_body::Body as _;
use tokio::time::Instant;

use super::AppState;
use crate::error::ApiError;

#[derive(Debug, thiserror::Error)]
#[error(
    "the request body did not arrive in time ({0:?}, plus a second per {1} bytes received: \
     server.body_read_timeout_s, server.body_min_rate_bytes_s)"
)]
struct SlowBody(Duration, u64);

/// A declared body over `max_body_bytes` (the limit).
pub struct TooLarge(usize);

impl IntoResponse for TooLarge {
    fn into_response(self) -> Response {
        let mut response = ApiError::PayloadTooLarge { limit: self.0 }.into_response();
        // The body is never read, so the connection cannot carry another request.
        response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        response
    }
}

/// `request` with its body bounded, or refused at once for its declared length.
pub fn bound_body(state: &AppState, request: Request) -> Result<Request, TooLarge> {
    let max = state.config.server.max_body_bytes;
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(TooLarge(max));
    }
    if request.body().is_end_stream() {
        return Ok(request);
    }
    let limits = state.config.server.connections;
    let started = Instant::now();
    // Grace, plus the time what has arrived would take at the minimum rate.
    let deadline = move |received: u64| {
        started + limits.body_read_timeout + Duration::from_secs_f64(received as f64 / limits.body_min_rate as f64)
    };
    let (parts, body) = request.into_parts();
    let chunks = body.into_data_stream();
    let timed = futures::stream::unfold(Some((chunks, 0u64)), move |state| async move {
        let (mut chunks, received) = state?;
        match tokio::time::timeout_at(deadline(received), chunks.next()).await {
            Ok(Some(Ok(bytes))) => {
                let received = received + bytes.len() as u64;
                Some((Ok(bytes), Some((chunks, received))))
            }
            Ok(Some(Err(e))) => Some((Err(axum::BoxError::from(e)), None)),
            Ok(None) => None,
            Err(_) => Some((Err(axum::BoxError::from(SlowBody(limits.body_read_timeout, limits.body_min_rate))), None)),
        }
    });
    Ok(Request::from_parts(parts, Body::from_stream(timed)))
}
