//! What a request can fail with, as the client sees it. Status, OpenAI `type`,
//! `code` and the metric label of each variant come from one exhaustive `match`,
//! so they can never disagree; the errors of `agent` and `upstream` are mapped here
//! and nowhere else.

use http::StatusCode;
use serde_json::json;

use crate::agent;
use crate::upstream::{self, Attempt};

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
    #[error("no response with id `{0}` was found (responses belong to the key that made them, and expire)")]
    ResponseNotFound(String),
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
    #[error("{}", upstream::describe_attempts("rate limited by every upstream", .0))]
    RateLimited(Vec<Attempt>),
    #[error("{}", upstream::describe_attempts("every upstream failed", .0))]
    UpstreamFailed(Vec<Attempt>),
    #[error("{}", upstream::describe_attempts("every upstream timed out", .0))]
    UpstreamTimeout(Vec<Attempt>),
    #[error("{0}")]
    ContextLengthExceeded(String),
    #[error("{0}")]
    Unavailable(String),
    /// The store of paused conversations failed: the client learns that and that
    /// nothing ran; the cause (with addresses) goes to the log only.
    #[error(
        "lariat's store for paused conversations is unreachable right now, so this request cannot be handled \
         safely; nothing was run. Try again shortly."
    )]
    StoreUnavailable(#[source] crate::store::StoreError),
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
            Self::ResponseNotFound(_) => (StatusCode::NOT_FOUND, "invalid_request_error", "response_not_found"),
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
            Self::Unavailable(_) | Self::StoreUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "server_error", "unavailable")
            }
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

    /// Upstream attempts behind this error (0: none was made).
    pub fn attempts(&self) -> usize {
        match self {
            Self::RateLimited(attempts) | Self::UpstreamFailed(attempts) | Self::UpstreamTimeout(attempts) => {
                attempts.len()
            }
            Self::UpstreamRejected { .. } => 1,
            _ => 0,
        }
    }

    /// Whether a client retrying this would only repeat what lariat already did: a
    /// 5xx after the whole chain with its retries. (A 429 carries `Retry-After`
    /// instead, when an upstream named one.)
    pub fn retried(&self) -> bool {
        matches!(self, Self::UpstreamFailed(_) | Self::UpstreamTimeout(_))
    }

    /// The longest `Retry-After` an upstream asked for, if any did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::RateLimited(attempts) | Self::UpstreamFailed(attempts) => {
                attempts.iter().filter_map(|a| a.failure.retry_after()).max()
            }
            _ => None,
        }
    }

    /// What the operator's log needs beyond the client's message: the cause the
    /// client is not told.
    pub fn cause(&self) -> Option<String> {
        match self {
            Self::StoreUnavailable(error) => Some(error.to_string()),
            _ => None,
        }
    }

    /// Logs the error once, at the edge where it leaves lariat (a response, or an
    /// error event in a stream that already started).
    pub fn log(&self, context: &'static str) {
        let status = self.status();
        let cause = self.cause();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, cause, "{context}");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, cause, "{context}");
        }
    }
}

impl From<upstream::Error> for ApiError {
    fn from(error: upstream::Error) -> Self {
        match error {
            upstream::Error::Rejected { status, message, code, param } => Self::UpstreamRejected {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                message,
                code,
                param,
            },
            upstream::Error::RateLimited(attempts) => Self::RateLimited(attempts),
            upstream::Error::Failed(attempts) => Self::UpstreamFailed(attempts),
            upstream::Error::TimedOut(attempts) => Self::UpstreamTimeout(attempts),
            error @ upstream::Error::ContextLength(_) => Self::ContextLengthExceeded(error.to_string()),
        }
    }
}

impl From<agent::Error> for ApiError {
    fn from(error: agent::Error) -> Self {
        match error {
            agent::Error::BadRequest { message, param } => Self::BadRequest { message, param: Some(param.into()) },
            agent::Error::Upstream(error) => error.into(),
            agent::Error::Store(error) => error.into(),
            agent::Error::Internal(message) => Self::Internal(message),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        match error {
            // A full store is no outage: its message says so, and that nothing ran.
            crate::store::StoreError::Full(message) => Self::Unavailable(message),
            error => Self::StoreUnavailable(error),
        }
    }
}
