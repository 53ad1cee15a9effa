//! A chunk stream → an SSE response: one `data:` event per chunk, keep-alive
//! comments while the upstream or tools are quiet, an OpenAI-style error event if the
//! stream fails after it started, and `data: [DONE]` at the end in every case.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::chat::ChunkResults;
use crate::error::ApiError;
use crate::telemetry::StreamGuard;

pub fn respond(chunks: ChunkResults, keepalive: Duration, guard: StreamGuard) -> Response {
    let events = chunks
        .scan(false, |failed, item| {
            let event = if *failed {
                None
            } else {
                Some(match item {
                    // One buffer, one `data` call: compact JSON has no raw newlines, and
                    // axum's writer scans each of serde's small writes separately.
                    Ok(chunk) => match serde_json::to_string(&chunk) {
                        Ok(json) => Event::default().data(json),
                        Err(e) => {
                            *failed = true;
                            error_event(&ApiError::Internal(format!("encoding a chunk: {e}")))
                        }
                    },
                    Err(error) => {
                        *failed = true;
                        error.log("stream ended with an error event");
                        error_event(&error)
                    }
                })
            };
            futures::future::ready(event)
        })
        .chain(futures::stream::once(futures::future::ready(Event::default().data("[DONE]"))))
        .map(move |event| {
            // The guard lives as long as the stream: dropping the response (client gone
            // or stream finished) decrements the active-streams gauge.
            let _ = &guard;
            Ok::<_, Infallible>(event)
        });
    let mut response =
        Sse::new(events).keep_alive(KeepAlive::new().interval(keepalive).text("keep-alive")).into_response();
    // Reverse proxies (nginx) must not buffer the stream either.
    response.headers_mut().insert("x-accel-buffering", http::HeaderValue::from_static("no"));
    response
}

fn error_event(error: &ApiError) -> Event {
    Event::default().data(error.body().to_string())
}
