//! HTTP tools: the model's arguments go out as the JSON body (query string for GET),
//! the response text comes back as the result.

use futures::StreamExt;
use secrecy::ExposeSecret;
use serde_json::{Map, Value};

use super::ToolError;
use crate::config;

/// Largest response read from an HTTP tool; the agent caps what the model sees.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug)]
pub struct HttpTool {
    client: reqwest::Client,
    url: String,
    method: reqwest::Method,
    headers: Vec<(String, secrecy::SecretString)>,
}

impl HttpTool {
    pub fn new(config: &config::HttpTool) -> Result<Self, ToolError> {
        // No client timeout: the agent bounds every tool call with the tool's timeout.
        let client = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            // The tool's headers are secrets: a redirect may stay on the configured
            // origin, never carry them elsewhere (the 3xx is then the tool's answer).
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let same_origin =
                    attempt.previous().first().is_some_and(|first| first.origin() == attempt.url().origin());
                if same_origin && attempt.previous().len() < 5 { attempt.follow() } else { attempt.stop() }
            }))
            .build()
            .map_err(|e| ToolError::Failed(format!("building the HTTP client for `{}`: {e}", config.name)))?;
        let method = config
            .method
            .parse()
            .map_err(|_| ToolError::Failed(format!("`{}` is not an HTTP method", config.method)))?;
        Ok(Self { client, url: config.url.clone(), method, headers: config.headers.clone() })
    }

    pub async fn call(&self, args: Map<String, Value>) -> Result<String, ToolError> {
        let mut request = self.client.request(self.method.clone(), &self.url);
        request = if self.method == reqwest::Method::GET {
            let query: Vec<(String, String)> =
                args.into_iter().map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned))).collect();
            request.query(&query)
        } else {
            request.json(&Value::Object(args))
        };
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.expose_secret());
        }
        let response = request.send().await.map_err(|e| ToolError::http(&e))?;
        let status = response.status();
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(&chunk.map_err(|e| ToolError::http(&e))?);
            if body.len() >= MAX_RESPONSE_BYTES {
                break;
            }
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        if status.is_success() { Ok(text) } else { Err(ToolError::Failed(format!("HTTP {status}: {text}"))) }
    }
}
