//! How one upstream attempt failed, and what that means for the chain walk.

use std::time::Duration;

use serde_json::Value;

use crate::redact::Redactor;

/// Why a conversation cannot be made to fit a target: even the most compacted
/// list needs more tokens than the target's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unfit {
    pub needed: usize,
    pub limit: usize,
    /// The target's context window, when known.
    pub window: Option<u32>,
    /// How many tool definitions were sent, and what they cost on their own:
    /// compaction cannot shrink them, so they are often the reason.
    pub tools: usize,
    pub tool_tokens: usize,
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the prompt needs {} tokens after compaction; the budget is {}", self.needed, self.limit)?;
        match self.window {
            Some(window) => write!(f, " (context window {window})")?,
            None => f.write_str(" (context window unknown)")?,
        }
        if self.tool_tokens * 2 > self.limit {
            write!(
                f,
                ". The {} tool definitions alone take {} tokens: offer fewer tools (a chat UI's own built-in \
                 tools count too, e.g. Open WebUI's with native function calling) or use a model with a larger \
                 context window",
                self.tools, self.tool_tokens
            )?;
        }
        Ok(())
    }
}

/// What one upstream call (a whole chain walk) failed with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An upstream rejected the request as the client's fault (a 400 or 422); its
    /// message describes the client's own request.
    #[error("{message}")]
    Rejected { status: u16, message: String, code: Option<String>, param: Option<String> },
    #[error("{}", describe_attempts("rate limited by every upstream", .0))]
    RateLimited(Vec<Attempt>),
    #[error("{}", describe_attempts("every upstream failed", .0))]
    Failed(Vec<Attempt>),
    #[error("{}", describe_attempts("every upstream timed out", .0))]
    TimedOut(Vec<Attempt>),
    #[error("{}", describe_attempts("the conversation does not fit any target's context window", .0))]
    ContextLength(Vec<Attempt>),
}

impl Error {
    /// The error a failed walk ends with, from its attempts.
    pub fn from_attempts(attempts: Vec<Attempt>) -> Self {
        match attempts.last().map(|a| &a.failure) {
            Some(failure @ Failure::Status { status, message, code, param, .. }) if failure.is_client_fault() => {
                Self::Rejected { status: *status, message: message.clone(), code: code.clone(), param: param.clone() }
            }
            Some(failure) if failure.is_context_length() => Self::ContextLength(attempts),
            _ if !attempts.is_empty() && attempts.iter().all(|a| a.failure.is_timeout()) => Self::TimedOut(attempts),
            _ if !attempts.is_empty() && attempts.iter().all(|a| a.failure.is_rate_limit()) => {
                Self::RateLimited(attempts)
            }
            _ => Self::Failed(attempts),
        }
    }

    /// A stream that failed after its first chunk, on `target`.
    pub fn midstream(target: &str, failure: Failure) -> Self {
        Self::Failed(vec![Attempt { target: target.to_owned(), failure }])
    }
}

/// `headline: a/x (3 attempts) → HTTP 503: busy; b/y → connection failed: ...`:
/// each target once, with its attempt count and its last failure.
pub fn describe_attempts(headline: &str, attempts: &[Attempt]) -> String {
    let mut out = String::from(headline);
    for (i, group) in attempts.chunk_by(|a, b| a.target == b.target).enumerate() {
        let Some(last) = group.last() else { continue };
        out.push_str(if i == 0 { ": " } else { "; " });
        out.push_str(&last.target);
        if group.len() > 1 {
            out.push_str(&format!(" ({} attempts)", group.len()));
        }
        out.push_str(" → ");
        out.push_str(&last.failure.to_string());
    }
    out
}

/// One target tried and what happened to it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// `provider/model`.
    pub target: String,
    pub failure: Failure,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("{what} after {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("HTTP {status}: {message}")]
    Status { status: u16, message: String, code: Option<String>, param: Option<String>, retry_after: Option<Duration> },
    #[error("invalid response: {0}")]
    InvalidBody(String),
    #[error("stream failed: {0}")]
    Stream(String),
    /// Not sent: even compacted, the prompt does not fit this target's budget.
    #[error("not sent: {0}")]
    TooLong(Unfit),
}

impl Failure {
    /// Worth trying the same target again (after a backoff).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect(_) | Self::Timeout { .. } => true,
            Self::Status { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            Self::InvalidBody(_) | Self::Stream(_) | Self::TooLong(_) => false,
        }
    }

    /// The upstream says the request itself is wrong: no other target will do better,
    /// so the error goes back to the client.
    pub fn is_client_fault(&self) -> bool {
        matches!(self, Self::Status { status: 400 | 422, .. }) && !self.is_context_length()
    }

    /// The prompt does not fit the target's window (compaction or a larger target helps).
    pub fn is_context_length(&self) -> bool {
        if matches!(self, Self::TooLong(_)) {
            return true;
        }
        let Self::Status { status: 400 | 413 | 422, message, code, .. } = self else { return false };
        if code.as_deref() == Some("context_length_exceeded") {
            return true;
        }
        let m = message.to_ascii_lowercase();
        [
            "context length",
            "context_length",
            "context window",
            "maximum context",
            "too many tokens",
            "prompt is too long",
            "exceeds the available context",
        ]
        .iter()
        .any(|needle| m.contains(needle))
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    /// The delay the upstream asked for (`Retry-After`), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn is_rate_limit(&self) -> bool {
        matches!(self, Self::Status { status: 429, .. })
    }

    /// A short label for metrics; never contains request data.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Timeout { .. } => "timeout",
            Self::Status { status: 429, .. } => "rate_limited",
            Self::Status { status: 400..=499, .. } => "client_error",
            Self::Status { .. } => "server_error",
            Self::InvalidBody(_) => "invalid_body",
            Self::Stream(_) => "stream",
            Self::TooLong(_) => "too_long",
        }
    }

    /// Builds a status failure from an error response body, keeping the upstream's
    /// message (OpenAI shape, or a plain body cut short) with every configured secret
    /// blanked out.
    pub fn from_status(status: u16, body: &[u8], retry_after: Option<Duration>, redactor: &Redactor) -> Self {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let error = parsed.as_ref().map(|v| v.get("error").unwrap_or(v));
        let field = |name: &str| error.and_then(|e| e.get(name)).and_then(Value::as_str).map(str::to_owned);
        let message =
            field("message").or_else(|| error.and_then(Value::as_str).map(str::to_owned)).unwrap_or_else(|| {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                if text.is_empty() { "no error message".to_owned() } else { crate::text::shorten(text, 300) }
            });
        Self::Status {
            status,
            message: redactor.clean(message),
            code: field("code").map(|c| redactor.clean(c)),
            param: field("param").map(|p| redactor.clean(p)),
            retry_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        let status = |s| Failure::from_status(s, b"{}", None, &Redactor::default());
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(status(s).is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 422, 501] {
            assert!(!status(s).is_retryable(), "{s}");
        }
        assert!(status(400).is_client_fault());
        assert!(!status(401).is_client_fault());
        assert!(Failure::Connect("x".into()).is_retryable());
    }

    #[test]
    fn detects_context_length_errors() {
        let cases = [
            (r#"{"error":{"message":"too long","code":"context_length_exceeded"}}"#, true),
            (r#"{"error":{"message":"This model's maximum context length is 8192 tokens"}}"#, true),
            (r#"{"error":"the prompt is too long"}"#, true),
            (r#"{"error":{"message":"temperature must be <= 2"}}"#, false),
        ];
        for (body, want) in cases {
            let f = Failure::from_status(400, body.as_bytes(), None, &Redactor::default());
            assert_eq!(f.is_context_length(), want, "{body}");
            assert_eq!(f.is_client_fault(), !want, "{body}");
        }
    }

    #[test]
    fn keeps_upstream_message_without_secrets() {
        let f = Failure::from_status(
            401,
            br#"{"error":{"message":"Incorrect API key provided: sk-secret-123","code":"invalid_api_key"}}"#,
            None,
            &Redactor::new(["sk-secret-123"]),
        );
        assert_eq!(f.to_string(), "HTTP 401: Incorrect API key provided: [redacted]");
        let plain = Failure::from_status(502, b"<html>Bad gateway</html>", None, &Redactor::default());
        assert_eq!(plain.to_string(), "HTTP 502: <html>Bad gateway</html>");
    }
}
