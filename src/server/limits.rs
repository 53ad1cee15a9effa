//! Request bodies within bounds before any handler sees them: a declared
//! `Content-Length` over `max_body_bytes` is answered 413 at once (nothing of the
//! body is read), and a body must be complete within `body_read_timeout` plus the
//! time its bytes would take at `body_min_rate`.
//!
//! The body is not buffered here: the handler still reads it, after `auth`, so an
//! unauthenticated client cannot make lariat hold bodies in memory.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http_body::{Body as _, Frame};
use tokio::time::{Instant, Sleep};

use super::AppState;
use crate::config::ConnectionLimits;
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
    let (parts, body) = request.into_parts();
    let timed = Timed { body, started: Instant::now(), received: 0, limits, timer: None };
    Ok(Request::from_parts(parts, Body::new(timed)))
}

pin_project_lite::pin_project! {
    /// A request body that must arrive within its deadline: `body_read_timeout` from
    /// `started`, plus the time what has arrived would take at `body_min_rate`. The
    /// timer is armed only when the body makes the reader wait, so a body that came
    /// with its headers (most do) costs no timer at all.
    struct Timed {
        #[pin]
        body: Body,
        started: Instant,
        received: u64,
        limits: ConnectionLimits,
        #[pin]
        timer: Option<Sleep>,
    }
}

impl http_body::Body for Timed {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        match this.body.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.received += frame.data_ref().map_or(0, |data| data.len() as u64);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let limits = *this.limits;
                // Grace, plus the time what has arrived would take at the minimum rate.
                let deadline = *this.started
                    + limits.body_read_timeout
                    + Duration::from_secs_f64(*this.received as f64 / limits.body_min_rate as f64);
                match this.timer.as_mut().as_pin_mut() {
                    Some(timer) if timer.deadline() == deadline => {}
                    Some(timer) => timer.reset(deadline),
                    None => this.timer.set(Some(tokio::time::sleep_until(deadline))),
                }
                match this.timer.as_pin_mut().map(|timer| timer.poll(cx)) {
                    Some(Poll::Ready(())) => {
                        Poll::Ready(Some(Err(SlowBody(limits.body_read_timeout, limits.body_min_rate).into())))
                    }
                    _ => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
