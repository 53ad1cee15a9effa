//! One HTTP exchange with one target: encode, send, and read a JSON answer or the
//! first chunk of a stream, within the target's deadlines.

use std::borrow::Cow;
use std::time::Duration;

use futures::StreamExt;
use http_body_util::BodyDataStream;
use serde::Serialize;
use serde::ser::SerializeMap;
use tokio::time::Instant;

use super::sse;
use super::transport::{Body, Endpoint, SendError};
use super::{Failure, Prompt, Reply};
use crate::config::{ChainEntry, Provider};
use crate::openai::{Reading, RelayedCompletion};
use crate::text::root_cause;

/// Largest error body read from an upstream (its message is all we keep).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Sends `prompt` to `target`. For streams, returns once the first chunk arrived,
/// so that anything failing before it is still a clean `Failure`.
pub async fn exchange(
    endpoint: &Endpoint,
    target: &ChainEntry,
    prompt: &Prompt<'_>,
    stream: bool,
    max_event_bytes: usize,
) -> Result<Reply, Failure> {
    let provider = &target.provider;
    let timeouts = target.timeouts;
    let started = Instant::now();
    let body = serde_json::to_vec(&Outgoing { prompt, model: &target.model, stream })
        .map_err(|e| Failure::InvalidBody(format!("encoding the request: {e}")))?;
    // A non-streaming answer arrives whole, so only the total deadline applies to it.
    let (first_deadline, what) = if stream {
        (timeouts.first_byte.min(timeouts.total), "no first chunk")
    } else {
        (timeouts.total, "no answer")
    };
    let exchange = async {
        let response = endpoint.post(body, stream).await.map_err(transport_failure)?;
        if !response.status().is_success() {
            return Err(error_response(provider, response).await);
        }
        let is_sse = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if is_sse {
            let (stall, total) = (timeouts.stall, timeouts.total);
            let limits = sse::Limits { max_event_bytes, stall, deadline: started + total, total };
            let bytes = BodyDataStream::new(response.into_body());
            // A whole answer streamed anyway is gathered by the loop, so read typed.
            let reading = if stream { prompt.params.reading } else { Reading::Typed };
            let mut chunks = sse::chunks(bytes, limits, provider.redactor.clone(), reading);
            match chunks.next().await {
                Some(Ok(first)) => Ok(Reply::Stream(Box::pin(futures::stream::iter([Ok(first)]).chain(chunks)))),
                Some(Err(failure)) => Err(failure),
                None => Err(Failure::Stream("the upstream stream was empty".into())),
            }
        } else {
            let bytes = read_capped(response, provider.max_response_bytes).await?;
            // A provider echoing a secret (its own key, or one it was handed in a tool
            // result) must not pass it on to the client.
            let bytes = match provider.redactor.redact_bytes(&bytes) {
                Cow::Borrowed(_) => bytes,
                Cow::Owned(redacted) => redacted,
            };
            let bytes = match prompt.params.reading {
                Reading::Relayed if !stream => match RelayedCompletion::read(bytes) {
                    Ok(relayed) => return Ok(Reply::Relayed(Box::new(relayed))),
                    Err(bytes) => bytes,
                },
                _ => bytes,
            };
            serde_json::from_slice(&bytes)
                .map(Reply::Complete)
                .map_err(|e| Failure::InvalidBody(format!("not a chat completion: {e}")))
        }
    };
    tokio::time::timeout(first_deadline, exchange)
        .await
        .unwrap_or(Err(Failure::Timeout { what, after: first_deadline }))
}

fn transport_failure(e: SendError) -> Failure {
    if e.connect { Failure::Connect(e.cause) } else { Failure::Stream(e.cause) }
}

async fn error_response(provider: &Provider, response: http::Response<Body>) -> Failure {
    let status = response.status().as_u16();
    let retry_after =
        response.headers().get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(retry_after);
    let mut body = Vec::new();
    let mut stream = BodyDataStream::new(response.into_body());
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    Failure::from_status(status, &body, retry_after, &provider.redactor)
}

/// A whole non-streaming answer, refused past `max` bytes (checked on the declared
/// length first, so an oversized answer is not read at all).
async fn read_capped(response: http::Response<Body>, max: usize) -> Result<Vec<u8>, Failure> {
    let too_large = || Failure::InvalidBody(format!("the answer exceeded {max} bytes (`upstream.max_response_bytes`)"));
    let declared =
        response.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(declared.map_or(0, |n| usize::try_from(n).unwrap_or(0)));
    let mut stream = BodyDataStream::new(response.into_body());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Failure::Stream(root_cause(&*e)))?;
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `Retry-After`: delay-seconds or an HTTP date.
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(crate::clock::system_now()).unwrap_or(Duration::ZERO))
}

/// The request as sent to one target: the prompt with `model` and `stream` set,
/// written straight from borrowed parts (a long history is never copied).
struct Outgoing<'a> {
    prompt: &'a Prompt<'a>,
    model: &'a str,
    stream: bool,
}

impl Serialize for Outgoing<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (messages, p) = (self.prompt.messages, self.prompt.params);
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("model", self.model)?;
        map.serialize_entry("messages", messages)?;
        map.serialize_entry("stream", &self.stream)?;
        if self.stream
            && let Some(options) = p.stream_options
        {
            map.serialize_entry("stream_options", options)?;
        }
        if !(p.tools.is_empty() && p.client_tools.is_empty()) {
            map.serialize_entry("tools", &Tools(p.tools, p.client_tools))?;
        }
        if let Some(choice) = p.tool_choice {
            map.serialize_entry("tool_choice", choice)?;
        }
        for (key, value) in p.rest {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// Server and client tool definitions as one JSON array, without concatenating them.
struct Tools<'a>(&'a [crate::openai::ToolDef], &'a [crate::openai::ToolDef]);

impl Serialize for Tools<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().chain(self.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_retry_after() {
        assert_eq!(retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(" 0 "), Some(Duration::ZERO));
        let later = crate::clock::system_now() + Duration::from_secs(120);
        let delay = retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(delay > Duration::from_secs(100) && delay <= Duration::from_secs(120), "{delay:?}");
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO), "a past date means now");
        assert_eq!(retry_after("soon"), None);
    }
}
