//! Upstream SSE → chunks (typed, or kept as their bytes for a relay): a size cap on
//! each event, `[DONE]` handling, error events, a stall timeout, and a check that the
//! stream really finished.
//!
//! Hand-written rather than a general SSE crate: this runs once per relayed event, and
//! a line reader over one reused buffer costs a fraction of a parser-combinator one
//! that allocates a `String` per line and per field.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde_json::Value;
use tokio::time::{Instant, Sleep};

use super::Failure;
use super::lines::Lines;
use crate::openai::{Reading, StreamChunk};
use crate::redact::Redactor;

/// Chunks of one upstream stream, in order; a `Failure` item ends it.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<StreamChunk, Failure>> + Send>>;

/// Bounds on one upstream stream.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_event_bytes: usize,
    /// The longest wait for the next event.
    pub stall: Duration,
    /// When the whole stream must be over: `total` after the request was sent.
    pub deadline: Instant,
    pub total: Duration,
}

/// Parses an SSE byte stream into chunks read as `reading` says, within `limits`.
/// Every event is cleaned of the configured secrets before it is parsed, so neither a
/// relayed chunk nor an error event (which reaches the client and the log) can carry one.
pub fn chunks<S, E>(bytes: S, limits: Limits, redactor: Arc<Redactor>, reading: Reading) -> ChunkStream
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display,
{
    Box::pin(Chunks {
        bytes: Box::pin(bytes),
        lines: Lines::default(),
        eof: false,
        finished: false,
        done: false,
        limits,
        redactor,
        reading,
        timer: Box::pin(tokio::time::sleep_until(limits.deadline)),
        asked: None,
    })
}

/// The stream behind [`chunks`]: a line reader over the bytes (events buffered in one
/// read are parsed without waiting again), and one timer for the stall and total
/// deadlines that is re-armed only when it fires early, not once per event.
struct Chunks<S> {
    bytes: Pin<Box<S>>,
    lines: Lines,
    eof: bool,
    /// A choice carried a `finish_reason`: the answer is complete even without `[DONE]`.
    finished: bool,
    done: bool,
    limits: Limits,
    redactor: Arc<Redactor>,
    reading: Reading,
    timer: Pin<Box<Sleep>>,
    /// When the consumer started waiting for the next chunk (set on the first wait).
    asked: Option<Instant>,
}

impl<S, E> Chunks<S>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    fn fail(&mut self, failure: Failure) -> Poll<Option<Result<StreamChunk, Failure>>> {
        self.done = true;
        Poll::Ready(Some(Err(failure)))
    }

    /// The next whole event's chunk, if one is buffered; `Ready(None)` at `[DONE]`.
    /// An event, whole or still arriving, larger than the cap fails the stream; so
    /// does a stream past its total deadline, even one whose events were all read
    /// ahead while its client was slower than the model.
    fn buffered(&mut self) -> Option<Poll<Option<Result<StreamChunk, Failure>>>> {
        let max = self.limits.max_event_bytes;
        let too_large = || Failure::InvalidBody(format!("an SSE event exceeded {max} bytes"));
        loop {
            let Some(data) = self.lines.next_event() else {
                return (self.lines.unfinished() > max).then(|| self.fail(too_large()));
            };
            if data.len() > max {
                return Some(self.fail(too_large()));
            }
            let text = match std::str::from_utf8(data) {
                Ok(text) => text.trim(),
                Err(e) => return Some(self.fail(Failure::Stream(format!("UTF8 error: {e}")))),
            };
            if text == "[DONE]" {
                self.done = true;
                return Some(Poll::Ready(None));
            }
            if text.is_empty() {
                continue;
            }
            let parsed = parse_chunk(self.redactor.redact(text), self.reading);
            if Instant::now() >= self.limits.deadline {
                let after = self.limits.total;
                return Some(self.fail(Failure::Timeout { what: "stream still running at the total timeout", after }));
            }
            return Some(match parsed {
                Ok(chunk) => {
                    self.finished |= chunk.finishes();
                    self.asked = None;
                    Poll::Ready(Some(Ok(chunk)))
                }
                Err(failure) => self.fail(failure),
            });
        }
    }

    /// Whether a deadline passed while waiting (the timer is re-armed if it fired
    /// before the current wait's own deadline).
    fn timed_out(&mut self, cx: &mut Context<'_>) -> Option<Failure> {
        let asked = *self.asked.get_or_insert_with(Instant::now);
        let stalled_at = asked + self.limits.stall;
        let (until, failure) = if self.limits.deadline < stalled_at {
            let after = self.limits.deadline.saturating_duration_since(asked);
            (self.limits.deadline, Failure::Timeout { what: "stream still running at the total timeout", after })
        } else {
            (stalled_at, Failure::Timeout { what: "stream stalled: no chunk", after: self.limits.stall })
        };
        loop {
            if self.timer.deadline() > until {
                self.timer.as_mut().reset(until);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return None;
            }
            if self.timer.deadline() >= until {
                return Some(failure);
            }
            self.timer.as_mut().reset(until);
        }
    }
}

impl<S, E> Stream for Chunks<S>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    type Item = Result<StreamChunk, Failure>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(ready) = this.buffered() {
                return ready;
            }
            if this.eof {
                this.done = true;
                if this.finished {
                    return Poll::Ready(None);
                }
                let closed = "the upstream closed the stream before the answer was complete";
                return Poll::Ready(Some(Err(Failure::Stream(closed.into()))));
            }
            match this.bytes.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.lines.push(&chunk),
                Poll::Ready(Some(Err(e))) => return this.fail(Failure::Stream(format!("Transport error: {e}"))),
                Poll::Ready(None) => {
                    this.eof = true;
                    this.lines.end();
                }
                Poll::Pending => {
                    return match this.timed_out(cx) {
                        Some(failure) => this.fail(failure),
                        None => Poll::Pending,
                    };
                }
            }
        }
    }
}

/// One event's JSON, parsed once, as `reading` says; an `error` field fails the stream.
fn parse_chunk(data: Cow<'_, str>, reading: Reading) -> Result<StreamChunk, Failure> {
    let chunk = StreamChunk::read(data, reading).map_err(|e| {
        if e.is_data() {
            Failure::InvalidBody(format!("an SSE event is not a chat chunk: {e}"))
        } else {
            Failure::InvalidBody(format!("an SSE event is not JSON: {e}"))
        }
    })?;
    if let Some(error) = chunk.error() {
        let message = error.get("message").and_then(Value::as_str).map_or_else(|| error.to_string(), str::to_owned);
        return Err(Failure::Stream(format!("the upstream sent an error event: {message}")));
    }
    Ok(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::ChatChunk;
    use futures::StreamExt;

    fn stream_of(parts: &[&'static str]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        futures::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p.as_bytes()))).collect::<Vec<_>>())
    }

    async fn read(parts: &[&'static str], cap: usize, reading: Reading) -> Vec<Result<StreamChunk, Failure>> {
        let limits = Limits {
            max_event_bytes: cap,
            stall: Duration::from_secs(5),
            deadline: Instant::now() + Duration::from_secs(60),
            total: Duration::from_secs(60),
        };
        chunks(stream_of(parts), limits, Arc::new(Redactor::new([SECRET])), reading).collect().await
    }

    async fn collect(parts: &[&'static str], cap: usize) -> Vec<Result<ChatChunk, Failure>> {
        let typed = |item| match item {
            Ok(StreamChunk::Typed(chunk)) => Ok(chunk),
            Ok(StreamChunk::Relayed(_)) => panic!("asked for typed chunks"),
            Err(failure) => Err(failure),
        };
        read(parts, cap, Reading::Typed).await.into_iter().map(typed).collect()
    }

    #[tokio::test]
    async fn relayed_chunks_keep_their_bytes_cleaned_and_still_end_and_fail_the_stream() {
        let finished = read(
            &[
                "data: {\"id\":\"a\",\"choices\":[{\"delta\":{\"content\":\"key sk-provider-secret-42\"}}]}\n\n",
                "data: {\"id\":\"a\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            ],
            1024,
            Reading::Relayed,
        )
        .await;
        assert_eq!(finished.len(), 2, "a finish reason completes a stream without [DONE]: {finished:?}");
        let Ok(StreamChunk::Relayed(first)) = &finished[0] else { panic!("{finished:?}") };
        let mut out = Vec::new();
        first.write("\"x\"", "\"m\"", &mut out);
        assert_eq!(out, br#"{"model":"m","id":"x","choices":[{"delta":{"content":"key [redacted]"}}]}"#);
        let error = read(&["data: {\"error\":{\"message\":\"overloaded\"}}\n\n"], 1024, Reading::Relayed).await;
        assert!(matches!(&error[0], Err(Failure::Stream(m)) if m.contains("overloaded")), "{error:?}");
        let cut = read(&["data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n"], 1024, Reading::Relayed).await;
        assert!(matches!(cut.last(), Some(Err(Failure::Stream(_)))), "{cut:?}");
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

    /// One event every `every`, forever.
    fn trickle(every: Duration) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        futures::stream::unfold((), move |()| async move {
            tokio::time::sleep(every).await;
            Some((Ok(Bytes::from_static(b"data: {\"choices\":[]}\n\n")), ()))
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_stream_and_an_endless_one_time_out() {
        let limits = |stall, total| Limits {
            max_event_bytes: 1024,
            stall: Duration::from_secs(stall),
            deadline: Instant::now() + Duration::from_secs(total),
            total: Duration::from_secs(total),
        };
        let redactor = Arc::new(Redactor::default());
        let stalled = trickle(Duration::from_secs(1)).take(2).chain(futures::stream::pending());
        let out: Vec<_> = chunks(stalled, limits(5, 60), redactor.clone(), Reading::Typed).collect().await;
        assert_eq!(out.len(), 3, "{out:?}");
        let after = Duration::from_secs(5);
        assert!(matches!(out[2], Err(Failure::Timeout { what: "stream stalled: no chunk", after: a }) if a == after));

        // Events every 3 s never stall (5 s), but the stream is cut at its total (10 s).
        let out: Vec<_> =
            chunks(trickle(Duration::from_secs(3)), limits(5, 10), redactor, Reading::Typed).collect().await;
        assert_eq!(out.len(), 4, "{out:?}");
        assert!(out[..3].iter().all(Result::is_ok));
        let total = "stream still running at the total timeout";
        assert!(
            matches!(out[3], Err(Failure::Timeout { what, after }) if what == total && after == Duration::from_secs(1))
        );
    }

    #[tokio::test]
    async fn the_size_cap_counts_each_event_however_its_bytes_arrive() {
        // 40-byte events whose blank line comes in the next read: never over a 64-byte cap.
        let event = "data: {\"choices\":[{\"delta\":{\"content\":\"abcd\"}}]}\n";
        let mut parts = Vec::new();
        for _ in 0..10 {
            parts.extend([event, "\n"]);
        }
        parts.push("data: [DONE]\n\n");
        let out = collect(&parts, 64).await;
        assert_eq!(out.len(), 10, "{out:?}");
        assert!(out.iter().all(Result::is_ok), "{out:?}");
        // One event over the cap, spread over reads of a few bytes each, fails the stream.
        let big = collect(
            &["data: {\"choices\":", "[{\"delta\":{\"content\":", "\"aaaaaaaaaaaaaaaa", "aaaaaaaaaaaaaaaa\"}}]}\n\n"],
            64,
        )
        .await;
        assert!(matches!(&big[0], Err(Failure::InvalidBody(m)) if m.contains("exceeded 64")), "{big:?}");
        // So does one that arrives whole in one read.
        let whole = collect(
            &["data: {\"choices\":[{\"delta\":{\"content\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}}]}\n\n"],
            64,
        )
        .await;
        assert!(matches!(&whole[0], Err(Failure::InvalidBody(m)) if m.contains("exceeded 64")), "{whole:?}");
    }

    #[tokio::test]
    async fn a_stream_ending_in_a_bare_cr_keeps_its_last_event() {
        let out =
            collect(&["data: {\"choices\":[{\"delta\":{\"content\":\"x\"},\"finish_reason\":\"stop\"}]}\r\r"], 1024)
                .await;
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].as_ref().unwrap().choices[0].delta.content.as_deref(), Some("x"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_read_slower_than_it_is_written_still_ends_at_its_total_deadline() {
        let limits = Limits {
            max_event_bytes: 1024,
            stall: Duration::from_secs(5),
            deadline: Instant::now() + Duration::from_secs(10),
            total: Duration::from_secs(10),
        };
        // Every event is there at once; the client takes 4 s for each.
        let parts: Vec<&'static str> = vec!["data: {\"choices\":[]}\n\n"; 6];
        let mut stream = chunks(stream_of(&parts), limits, Arc::new(Redactor::default()), Reading::Typed);
        let mut read = Vec::new();
        while let Some(item) = stream.next().await {
            read.push(item);
            tokio::time::sleep(Duration::from_secs(4)).await;
        }
        assert_eq!(read.len(), 4, "{read:?}");
        assert!(read[..3].iter().all(Result::is_ok));
        let total = "stream still running at the total timeout";
        assert!(
            matches!(read[3], Err(Failure::Timeout { what, after }) if what == total && after == Duration::from_secs(10)),
            "{read:?}"
        );
    }
}
