//! A chunk stream → an SSE response: one `data:` event per chunk, keep-alive
//! comments while the upstream or tools are quiet, an OpenAI-style error event if the
//! stream fails after it started, and `data: [DONE]` at the end in every case.
//!
//! The body is written here rather than with axum's `Sse`: each chunk is serialized
//! straight into the one buffer that becomes its frame (`data: `, the JSON, a blank
//! line), and the keep-alive timer is re-armed only when it fires, not once per
//! event. The bytes are the ones axum's `Sse` writes.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::HeaderValue;
use http_body::Frame;
use tokio::time::{Instant, Sleep};

use super::chat::ChunkResults;
use crate::error::ApiError;
use crate::openai::ChatChunk;
use crate::telemetry::StreamGuard;

const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
const DONE: &[u8] = b"data: [DONE]\n\n";

pub fn respond(chunks: ChunkResults, keepalive: Duration, guard: StreamGuard) -> Response {
    let body = SseBody {
        chunks,
        state: State::Open,
        keepalive,
        timer: Box::pin(tokio::time::sleep(keepalive)),
        last_sent: None,
        size_hint: 256,
        _guard: guard,
    };
    let mut response = Response::new(Body::new(body));
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Reverse proxies (nginx) must not buffer the stream either.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// An error event went out: only `[DONE]` follows.
    Failed,
    Ended,
}

struct SseBody {
    chunks: ChunkResults,
    state: State,
    keepalive: Duration,
    timer: Pin<Box<Sleep>>,
    /// When the last event went out (`None`: none yet, the timer runs from the start).
    last_sent: Option<Instant>,
    /// The size of the last event, so the next one's buffer is allocated once.
    size_hint: usize,
    /// Lives as long as the body: dropping the response (client gone or stream
    /// finished) decrements the active-streams gauge.
    _guard: StreamGuard,
}

impl SseBody {
    fn event(&mut self, chunk: &ChatChunk) -> Bytes {
        // Compact JSON has no raw newlines, so the chunk is one `data:` line.
        let mut out = Vec::with_capacity(self.size_hint);
        out.extend_from_slice(b"data: ");
        if let Err(e) = serde_json::to_writer(&mut out, chunk) {
            self.state = State::Failed;
            return error_event(&ApiError::Internal(format!("encoding a chunk: {e}")));
        }
        out.extend_from_slice(b"\n\n");
        self.size_hint = out.len().max(64);
        Bytes::from(out)
    }

    /// A keep-alive comment when the stream has been quiet for the interval.
    fn keep_alive(&mut self, cx: &mut Context<'_>) -> Poll<Bytes> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            match self.last_sent {
                // An event went out since the timer was armed: count from that one.
                Some(sent) if now < sent + self.keepalive => self.timer.as_mut().reset(sent + self.keepalive),
                _ => {
                    self.timer.as_mut().reset(now + self.keepalive);
                    self.last_sent = None;
                    return Poll::Ready(Bytes::from_static(KEEP_ALIVE));
                }
            }
        }
    }
}

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let bytes = match this.state {
            State::Ended => return Poll::Ready(None),
            State::Failed => {
                this.state = State::Ended;
                Bytes::from_static(DONE)
            }
            State::Open => match this.chunks.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.event(&chunk),
                Poll::Ready(Some(Err(error))) => {
                    this.state = State::Failed;
                    error.log("stream ended with an error event");
                    error_event(&error)
                }
                Poll::Ready(None) => {
                    this.state = State::Ended;
                    Bytes::from_static(DONE)
                }
                Poll::Pending => match this.keep_alive(cx) {
                    Poll::Ready(comment) => return Poll::Ready(Some(Ok(Frame::data(comment)))),
                    Poll::Pending => return Poll::Pending,
                },
            },
        };
        this.last_sent = Some(Instant::now());
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Ended
    }
}

fn error_event(error: &ApiError) -> Bytes {
    Bytes::from(format!("data: {}\n\n", error.body()))
}
