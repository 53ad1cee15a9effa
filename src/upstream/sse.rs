//! Upstream SSE → `ChatChunk`s: a size cap on each event, `[DONE]` handling, error
//! events, a stall timeout, and a check that the stream really finished.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::{EventStreamError, Eventsource};
use futures::{Stream, StreamExt, TryStreamExt};
use serde_json::Value;
use tokio::time::Instant;

use super::Failure;
use crate::openai::ChatChunk;
use crate::redact::Redactor;

/// Chunks of one upstream stream, in order; a `Failure` item ends it.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatChunk, Failure>> + Send>>;

#[derive(Debug, thiserror::Error)]
enum TransportError {
    #[error("{0}")]
    Body(String),
    #[error("an event exceeded {0} bytes")]
    EventTooLarge(usize),
}

/// Bounds on one upstream stream.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_event_bytes: usize,
    /// The longest wait for the next event.
    pub stall: Duration,
    /// When the whole stream must be over.
    pub deadline: Instant,
}

/// Parses an SSE byte stream into chunks, within `limits`. Every event is cleaned of
/// the configured secrets before it is parsed, so neither a relayed delta nor an
/// error event (which reaches the client and the log) can carry one.
pub fn chunks<S, E>(bytes: S, limits: Limits, redactor: Arc<Redactor>) -> ChunkStream
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display,
{
    let capped = bytes.map_err(|e| TransportError::Body(e.to_string())).scan(0usize, move |pending, item| {
        let item = item.and_then(|chunk| {
            let (longest, tail) = event_lengths(&chunk, *pending);
            *pending = tail;
            if longest > limits.max_event_bytes {
                Err(TransportError::EventTooLarge(limits.max_event_bytes))
            } else {
                Ok(chunk)
            }
        });
        futures::future::ready(Some(item))
    });
    let events = capped.eventsource();
    let state = State { events: Box::pin(events), finished: false, done: false, limits, redactor };
    Box::pin(futures::stream::unfold(state, next_chunk))
}

type Events = Pin<Box<dyn Stream<Item = Result<eventsource_stream::Event, EventStreamError<TransportError>>> + Send>>;

struct State {
    events: Events,
    /// A choice carried a `finish_reason`: the answer is complete even without `[DONE]`.
    finished: bool,
    done: bool,
    limits: Limits,
    redactor: Arc<Redactor>,
}

async fn next_chunk(mut st: State) -> Option<(Result<ChatChunk, Failure>, State)> {
    if st.done {
        return None;
    }
    loop {
        let until_deadline = st.limits.deadline.saturating_duration_since(Instant::now());
        let wait = st.limits.stall.min(until_deadline);
        let event = match tokio::time::timeout(wait, st.events.next()).await {
            Err(_) if wait < st.limits.stall => {
                Err(Failure::Timeout { what: "stream still running at the total timeout", after: wait })
            }
            Err(_) => Err(Failure::Timeout { what: "stream stalled: no chunk", after: st.limits.stall }),
            Ok(None) if st.finished => return None,
            Ok(None) => Err(Failure::Stream("the upstream closed the stream before the answer was complete".into())),
            Ok(Some(Err(e))) => Err(match e {
                EventStreamError::Transport(TransportError::EventTooLarge(n)) => {
                    Failure::InvalidBody(format!("an SSE event exceeded {n} bytes"))
                }
                other => Failure::Stream(other.to_string()),
            }),
            Ok(Some(Ok(event))) => {
                let data = event.data.trim();
                if data == "[DONE]" {
                    return None;
                }
                if data.is_empty() {
                    continue;
                }
                parse_chunk(&st.redactor.redact(data))
            }
        };
        match event {
            Ok(chunk) => {
                st.finished |= chunk.choices.iter().any(|c| c.finish_reason.is_some());
                return Some((Ok(chunk), st));
            }
            Err(failure) => {
                st.done = true;
                return Some((Err(failure), st));
            }
        }
    }
}

/// One event's JSON, parsed once, straight into the typed chunk (an error event
/// lands in `rest["error"]`, since `error` is not a chunk field).
fn parse_chunk(data: &str) -> Result<ChatChunk, Failure> {
    let chunk: ChatChunk = serde_json::from_str(data).map_err(|e| {
        if e.is_data() {
            Failure::InvalidBody(format!("an SSE event is not a chat chunk: {e}"))
        } else {
            Failure::InvalidBody(format!("an SSE event is not JSON: {e}"))
        }
    })?;
    if let Some(error) = chunk.rest.get("error") {
        let message = error.get("message").and_then(Value::as_str).map_or_else(|| error.to_string(), str::to_owned);
        return Err(Failure::Stream(format!("the upstream sent an error event: {message}")));
    }
    Ok(chunk)
}

/// Given `pending` bytes of an unfinished event before `chunk`, returns the length of
/// the longest event touched by `chunk` and the length of the event left unfinished.
/// Events end at a blank line (`\n\n`, `\r\n\r\n` or `\r\r`).
fn event_lengths(chunk: &[u8], pending: usize) -> (usize, usize) {
    let mut longest = 0;
    let mut start = 0;
    let mut current = pending;
    let mut i = 0;
    while i < chunk.len() {
        let rest = &chunk[i..];
        let sep = [b"\n\n".as_slice(), b"\r\n\r\n", b"\r\r"].into_iter().find(|sep| rest.starts_with(sep));
        if let Some(sep) = sep {
            longest = longest.max(current + i - start);
            i += sep.len();
            start = i;
            current = 0;
        } else {
            i += 1;
        }
    }
    let tail = current + chunk.len() - start;
    (longest.max(tail), tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_of(parts: &[&'static str]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        futures::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p.as_bytes()))).collect::<Vec<_>>())
    }

    async fn collect(parts: &[&'static str], cap: usize) -> Vec<Result<ChatChunk, Failure>> {
        let limits = Limits {
            max_event_bytes: cap,
            stall: Duration::from_secs(5),
            deadline: Instant::now() + Duration::from_secs(60),
        };
        chunks(stream_of(parts), limits, Arc::new(Redactor::new([SECRET]))).collect().await
    }

    #[tokio::test]
    async fn parses_split_events_and_done() {
        let out = collect(
            &[
                "data: {\"id\":\"a\",\"choices\":[{\"delta\":{\"content\":\"he\"}}]}\n",
                "\ndata: {\"id\":\"a\",\"choices\":[{\"delta\":{\"content\":\"llo\"},\"finish_reason\":\"stop\"}]}\n\n",
                ": keep-alive\n\ndata: [DONE]\n\n",
            ],
            1024,
        )
        .await;
        let contents: Vec<_> =
            out.iter().map(|c| c.as_ref().unwrap().choices[0].delta.content.clone().unwrap()).collect();
        assert_eq!(contents, ["he", "llo"]);
    }

    #[tokio::test]
    async fn reports_errors() {
        let cut = collect(&["data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n"], 1024).await;
        assert!(matches!(cut.last(), Some(Err(Failure::Stream(_)))), "{cut:?}");
        let garbage = collect(&["data: not json\n\n"], 1024).await;
        assert!(matches!(garbage[0], Err(Failure::InvalidBody(_))));
        let big = collect(
            &["data: {\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"],
            64,
        )
        .await;
        assert!(matches!(&big[0], Err(Failure::InvalidBody(m)) if m.contains("exceeded 64")), "{big:?}");
        let error = collect(&["data: {\"error\":{\"message\":\"overloaded\"}}\n\n"], 1024).await;
        assert!(matches!(&error[0], Err(Failure::Stream(m)) if m.contains("overloaded")));
    }

    const SECRET: &str = "sk-provider-secret-42";

    #[tokio::test]
    async fn secrets_are_blanked_from_error_events_and_deltas() {
        let out = collect(
            &[
                "data: {\"choices\":[{\"delta\":{\"content\":\"key sk-provider-secret-42\"}}]}\n\n",
                "data: {\"error\":{\"message\":\"bad key sk-provider-secret-42\"}}\n\n",
            ],
            1024,
        )
        .await;
        let delta = out[0].as_ref().unwrap().choices[0].delta.content.clone().unwrap();
        assert_eq!(delta, "key [redacted]");
        assert!(matches!(&out[1], Err(Failure::Stream(m)) if m.ends_with("bad key [redacted]") && !m.contains(SECRET)));
    }

    #[test]
    fn measures_event_lengths() {
        assert_eq!(event_lengths(b"abc", 5), (8, 8));
        assert_eq!(event_lengths(b"a\n\nbc", 5), (6, 2));
        assert_eq!(event_lengths(b"a\r\n\r\n", 5), (6, 0));
        assert_eq!(event_lengths(b"x\n\nyyyyyyyyyy\n\nz", 0), (10, 1));
    }
}
