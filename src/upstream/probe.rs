//! `lariat check --probe`: one `GET {base_url}/models` per provider, so an operator
//! learns before the first request whether a provider answers and takes its key.

use std::fmt;
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::config::Provider;
use crate::text::{one_line, root_cause};

/// How one provider answered the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A 2xx answer, with the model ids it listed (`None`: not an OpenAI model list).
    Ok { models: Option<Vec<String>> },
    /// An HTTP answer that is not a success: a wrong key, a wrong path, ...
    Refused { status: u16, message: String },
    /// No HTTP answer at all: nothing listens, DNS, TLS, a cut connection.
    Unreachable(String),
    /// No answer within the probe's timeout.
    Timeout(Duration),
}

impl Verdict {
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok { .. })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ok { models: Some(models) } => write!(f, "ok ({} models)", models.len()),
            Self::Ok { models: None } => f.write_str("ok"),
            Self::Refused { status, message } if message.is_empty() => write!(f, "refused: HTTP {status}"),
            Self::Refused { status, message } => write!(f, "refused: HTTP {status}: {message}"),
            Self::Unreachable(reason) => write!(f, "unreachable: {reason}"),
            Self::Timeout(after) => write!(f, "timeout: no answer within {} s", after.as_secs_f64()),
        }
    }
}

/// The URL the probe asks: the provider's base URL (its `kind` applied) + `/models`.
pub fn models_url(provider: &Provider) -> String {
    let base = provider.chat_url.strip_suffix("/chat/completions").unwrap_or(&provider.chat_url);
    format!("{base}/models")
}

/// Asks `provider` for its models, with its key and headers, within `timeout`.
pub async fn probe(provider: &Provider, timeout: Duration) -> Verdict {
    let client = match reqwest::Client::builder()
        .connect_timeout(provider.timeouts.connect.min(timeout))
        // As for chat calls: a redirect would carry the key to wherever it points.
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(e) => return Verdict::Unreachable(format!("building the HTTP client: {}", root_cause(&e))),
    };
    let mut request = client.get(models_url(provider)).header(http::header::ACCEPT, "application/json");
    if let Some(key) = &provider.api_key {
        request = request.bearer_auth(key.expose_secret());
    }
    for (name, value) in &provider.headers {
        request = request.header(name.as_str(), value.expose_secret());
    }
    let exchange = async {
        let response = request.send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Verdict::Timeout(timeout),
        Ok(Err(e)) if e.is_timeout() => Verdict::Timeout(timeout),
        Ok(Err(e)) => Verdict::Unreachable(provider.redactor.clean(root_cause(&e))),
        Ok(Ok((status, body))) if status.is_success() => Verdict::Ok { models: model_ids(&body) },
        Ok(Ok((status, body))) => Verdict::Refused {
            status: status.as_u16(),
            message: provider.redactor.clean(one_line(&error_message(&body), 300)),
        },
    }
}

/// The ids of an OpenAI model list (`{"data": [{"id": ...}]}`).
fn model_ids(body: &[u8]) -> Option<Vec<String>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let data = value.get("data")?.as_array()?;
    Some(data.iter().filter_map(|m| m.get("id")?.as_str().map(str::to_owned)).collect())
}

/// An OpenAI error's message, else the body as text.
fn error_message(body: &[u8]) -> String {
    let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let message = value.as_ref().and_then(|v| v.pointer("/error/message").or_else(|| v.get("error"))?.as_str());
    match message {
        Some(message) => message.to_owned(),
        None => String::from_utf8_lossy(body).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_lists_and_error_bodies_are_read() {
        assert_eq!(model_ids(br#"{"data": [{"id": "a"}, {"id": "b"}]}"#), Some(vec!["a".into(), "b".into()]));
        assert_eq!(model_ids(b"<html>"), None);
        assert_eq!(error_message(br#"{"error": {"message": "Incorrect API key"}}"#), "Incorrect API key");
        assert_eq!(error_message(br#"{"error": "model not found"}"#), "model not found");
        assert_eq!(error_message(b"404 page not found"), "404 page not found");
    }

    #[test]
    fn verdicts_read_as_sentences() {
        assert_eq!(Verdict::Ok { models: Some(vec!["m".into()]) }.to_string(), "ok (1 models)");
        assert_eq!(
            Verdict::Refused { status: 401, message: "bad key".into() }.to_string(),
            "refused: HTTP 401: bad key"
        );
        assert_eq!(Verdict::Timeout(Duration::from_secs(2)).to_string(), "timeout: no answer within 2 s");
    }
}
