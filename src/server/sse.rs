//! A chunk stream → an SSE response: one `data:` event per chunk, keep-alive
//! comments while the upstream or tools are quiet, an OpenAI-style error event if the
//! stream fails after it started, and `data: [DONE]` at the end in every case.
//!
//! The body is written here rather than with axum's `Sse`: each chunk is serialized
//! straight into the buffer that becomes its frame (`data: `, the JSON, a blank line),
//! the events ready at once share one frame, and the keep-alive timer is re-armed
//! only when it fires, not once per event. The bytes are the ones axum's `Sse` writes.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::HeaderValue;
use http_body::Frame;
use tokio::time::{Instant, Sleep};

use super::chat::{ChunkResults, Outgoing};
use crate::error::ApiError;
use crate::telemetry::StreamGuard;

const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
const DONE: &[u8] = b"data: [DONE]\n\n";
/// Ready events are gathered into one frame up to about this size.
const MAX_FRAME: usize = 64 * 1024;

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
    /// The size of the last frame, so the next one's buffer is allocated once.
    size_hint: usize,
    /// Lives as long as the body: dropping the response (client gone or stream
    /// finished) decrements the active-streams gauge.
    _guard: StreamGuard,
}

impl SseBody {
    /// Appends `chunk` as one event to `out`.
    fn event(&mut self, chunk: &Outgoing, out: &mut Vec<u8>) {
        let start = out.len();
        // Neither compact JSON nor a relayed chunk has a raw newline: one `data:` line.
        out.extend_from_slice(b"data: ");
        if let Err(e) = chunk.write(out) {
            out.truncate(start);
            self.state = State::Failed;
            error_event(&ApiError::Internal(format!("encoding a chunk: {e}")), out);
            return;
        }
        out.extend_from_slice(b"\n\n");
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
        // The events that are ready go out together, in one frame: fewer frames for
        // hyper to encode and fewer buffers to write, and no event waits for another
        // (the frame is sent as soon as the stream has nothing more ready).
        let mut out = Vec::new();
        loop {
            match this.state {
                State::Ended => break,
                State::Failed => {
                    this.state = State::Ended;
                    out.extend_from_slice(DONE);
                    break;
                }
                State::Open if out.len() >= MAX_FRAME => break,
                State::Open => {}
            }
            if out.capacity() == 0 {
                out.reserve(this.size_hint);
            }
            match this.chunks.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.event(&chunk, &mut out),
                Poll::Ready(Some(Err(error))) => {
                    this.state = State::Failed;
                    error.log("stream ended with an error event");
                    error_event(&error, &mut out);
                }
                Poll::Ready(None) => {
                    this.state = State::Ended;
                    out.extend_from_slice(DONE);
                    break;
                }
                Poll::Pending if out.is_empty() => {
                    return match this.keep_alive(cx) {
                        Poll::Ready(comment) => Poll::Ready(Some(Ok(Frame::data(comment)))),
                        Poll::Pending => Poll::Pending,
                    };
                }
                Poll::Pending => break,
            }
        }
        if out.is_empty() {
            return Poll::Ready(None);
        }
        this.size_hint = out.len().clamp(256, MAX_FRAME);
        this.last_sent = Some(Instant::now());
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Ended
    }
}

fn error_event(error: &ApiError, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("data: {}\n\n", error.body()).as_bytes());
}
