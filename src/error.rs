//! What a request can fail with. Status, OpenAI `type`, `code` and the metric label of
//! each variant come from one exhaustive `match`, so they can never disagree.

use http::StatusCode;
use serde_json::json;

use crate::upstream::Attempt;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { message: String, param: Option<String> },
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("you may not use model `{0}`")]
    ForbiddenModel(String),
    #[error("the model `{0}` does not exist or you do not have access to it")]
    ModelNotFound(String),
    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("method {0} is not allowed on this route")]
    MethodNotAllowed(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// An upstream rejected the request as the client's fault (a 400 or 422); its
    /// message is passed on because it describes the client's own request.
    #[error("{message}")]
    UpstreamRejected { status: StatusCode, message: String, code: Option<String>, param: Option<String> },
    #[error("{}", describe_attempts("rate limited by every upstream", .0))]
    RateLimited(Vec<Attempt>),
    #[error("{}", describe_attempts("every upstream failed", .0))]
    UpstreamFailed(Vec<Attempt>),
    #[error("{}", describe_attempts("every upstream timed out", .0))]
    UpstreamTimeout(Vec<Attempt>),
    #[error("{0}")]
    ContextLengthExceeded(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        Self::BadRequest { message: message.into(), param: param.map(str::to_owned) }
    }

    /// HTTP status, OpenAI error `type`, OpenAI error `code` — also the metric label.
    pub fn kind(&self) -> (StatusCode, &'static str, &str) {
        match self {
            Self::BadRequest { .. } => (StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_request"),
            Self::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_json"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "authentication_error", "invalid_api_key"),
            Self::ForbiddenModel(_) => (StatusCode::FORBIDDEN, "permission_error", "model_not_allowed"),
            Self::ModelNotFound(_) => (StatusCode::NOT_FOUND, "invalid_request_error", "model_not_found"),
            Self::RouteNotFound { .. } => (StatusCode::NOT_FOUND, "invalid_request_error", "not_found"),
            Self::MethodNotAllowed(_) => {
                (StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", "method_not_allowed")
            }
            Self::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", "payload_too_large")
            }
            Self::UpstreamRejected { status, code, .. } => {
                (*status, "invalid_request_error", code.as_deref().unwrap_or("upstream_rejected"))
            }
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "rate_limited"),
            Self::UpstreamFailed(_) => (StatusCode::BAD_GATEWAY, "upstream_error", "upstream_failed"),
            Self::UpstreamTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, "upstream_error", "upstream_timeout"),
            Self::ContextLengthExceeded(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", "context_length_exceeded")
            }
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "server_error", "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal_error"),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.kind().0
    }

    /// The OpenAI error object: `{"error": {message, type, param, code}}`.
    pub fn body(&self) -> serde_json::Value {
        let (_, kind, code) = self.kind();
        let param = match self {
            Self::BadRequest { param, .. } | Self::UpstreamRejected { param, .. } => param.as_deref(),
            _ => None,
        };
        json!({"error": {"message": self.to_string(), "type": kind, "param": param, "code": code}})
    }
}

/// The innermost cause of an error: HTTP clients' top-level messages name the URL
/// only, the cause says what happened (connection refused, reset, …).
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
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
