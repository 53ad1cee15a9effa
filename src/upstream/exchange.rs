//! One HTTP exchange with one target: encode, send, and read a JSON answer or the
//! first chunk of a stream, within the target's deadlines.

use std::time::Duration;

use futures::StreamExt;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde::ser::SerializeMap;
use tokio::time::Instant;

use super::sse;
use super::{Failure, Prompt, Reply};
use crate::config::{ChainEntry, Provider};
use crate::text::root_cause;

/// Largest error body read from an upstream (its message is all we keep).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Sends `prompt` to `target`. For streams, returns once the first chunk arrived,
/// so that anything failing before it is still a clean `Failure`.
pub async fn exchange(
    client: &reqwest::Client,
    url: reqwest::Url,
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
    let mut builder = client
        .post(url)
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
    // A non-streaming answer arrives whole, so only the total deadline applies to it.
    let (first_deadline, what) = if stream {
        (timeouts.first_byte.min(timeouts.total), "no first chunk")
    } else {
        (timeouts.total, "no answer")
    };
    let exchange = async {
        let response = builder.body(body).send().await.map_err(|e| transport_failure(&e))?;
        if !response.status().is_success() {
            return Err(error_response(provider, response).await);
        }
        let is_sse = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if is_sse {
            let limits = sse::Limits { max_event_bytes, stall: timeouts.stall, deadline: started + timeouts.total };
            let mut chunks = sse::chunks(response.bytes_stream(), limits, provider.redactor.clone());
            match chunks.next().await {
                Some(Ok(first)) => Ok(Reply::Stream(Box::pin(futures::stream::iter([Ok(first)]).chain(chunks)))),
                Some(Err(failure)) => Err(failure),
                None => Err(Failure::Stream("the upstream stream was empty".into())),
            }
        } else {
            let bytes = read_capped(response, provider.max_response_bytes).await?;
            // A provider echoing a secret (its own key, or one it was handed in a tool
            // result) must not pass it on to the client.
            serde_json::from_slice(&provider.redactor.redact_bytes(&bytes))
                .map(Reply::Complete)
                .map_err(|e| Failure::InvalidBody(format!("not a chat completion: {e}")))
        }
    };
    tokio::time::timeout(first_deadline, exchange)
        .await
        .unwrap_or(Err(Failure::Timeout { what, after: first_deadline }))
}

fn transport_failure(e: &reqwest::Error) -> Failure {
    if e.is_connect() { Failure::Connect(root_cause(e)) } else { Failure::Stream(root_cause(e)) }
}

async fn error_response(provider: &Provider, response: reqwest::Response) -> Failure {
    let status = response.status().as_u16();
    let retry_after =
        response.headers().get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(retry_after);
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
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
async fn read_capped(response: reqwest::Response, max: usize) -> Result<Vec<u8>, Failure> {
    let too_large = || Failure::InvalidBody(format!("the answer exceeded {max} bytes (`upstream.max_response_bytes`)"));
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| transport_failure(&e))?;
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
