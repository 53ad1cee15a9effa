//! A JSON body extractor whose every rejection is an OpenAI-shaped `ApiError`:
//! 413 over the body limit, 400 for bad JSON, 400 naming the field for wrong types.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use std::sync::Arc;

use super::AppState;
use crate::error::ApiError;

pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge { limit: state.config.server.max_body_bytes }
            } else {
                ApiError::bad_request(format!("could not read the request body: {rejection}"), None)
            }
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// Parses `bytes` once, untracked; only a body that fails is parsed again with
/// the path of every value noted, to name the field (path tracking costs on every
/// value, and nearly every request is well-formed).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).or_else(|_| explain(bytes))
}

/// The error of a body that did not parse, naming the field where it can.
fn explain<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::InvalidJson(format!("the request body is not valid JSON: {inner}"))
            }
            Category::Data => {
                let message = inner.to_string();
                let field = missing_field(&message)
                    .map(|f| if path == "." { f.to_owned() } else { format!("{path}.{f}") })
                    .unwrap_or(path);
                if field == "." {
                    ApiError::bad_request(format!("invalid request body: {message}"), None)
                } else {
                    ApiError::bad_request(format!("invalid field `{field}`: {message}"), Some(&field))
                }
            }
        }
    })?;
    de.end().map_err(|e| ApiError::InvalidJson(format!("the request body is not valid JSON: {e}")))?;
    Ok(value)
}

/// `missing field `model` at line 1 column 2` → `model`.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::ChatRequest;

    fn reject(body: &str) -> (String, Option<String>, &'static str) {
        let err = parse::<ChatRequest>(body.as_bytes()).unwrap_err();
        let (_, _, code) = err.kind();
        let code = if code == "invalid_json" { "invalid_json" } else { "invalid_request" };
        let param = err.body()["error"]["param"].as_str().map(str::to_owned);
        (err.to_string(), param, code)
    }

    #[test]
    fn names_the_bad_field() {
        let cases = [
            ("{", None, "invalid_json"),
            ("[]", None, "invalid_request"),
            (r#"{"model": "m", "messages": []} trailing"#, None, "invalid_json"),
            (r#"{"messages": []}"#, Some("model"), "invalid_request"),
            (r#"{"model": "m"}"#, Some("messages"), "invalid_request"),
            (r#"{"model": "m", "messages": "hi"}"#, Some("messages"), "invalid_request"),
            (r#"{"model": 5, "messages": []}"#, Some("model"), "invalid_request"),
            (
                r#"{"model": "m", "messages": [{"role": "wizard", "content": "x"}]}"#,
                Some("messages[0].role"),
                "invalid_request",
            ),
            (r#"{"model": "m", "messages": [{"content": "x"}]}"#, Some("messages[0].role"), "invalid_request"),
        ];
        for (body, param, code) in cases {
            let (message, got_param, got_code) = reject(body);
            assert_eq!((got_param.as_deref(), got_code), (param, code), "{body}: {message}");
        }
    }
}
