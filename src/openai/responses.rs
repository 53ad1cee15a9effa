//! OpenAI Responses API wire types for what a client sends (`POST /v1/responses`).
//! Input items stay JSON values: the face reads them one by one so that a bad item's
//! error can name its place (`input[3].content[0].type`).

use serde::Deserialize;
use serde_json::{Map, Value};

/// `POST /v1/responses` body. Fields lariat does not translate land in `rest`.
#[derive(Debug, Clone, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    #[serde(default)]
    pub input: Option<Input>,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub tools: Vec<Value>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default)]
    pub stream: bool,
    /// Keep the response for `previous_response_id` and `GET`; on unless `false`.
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default)]
    pub previous_response_id: Option<String>,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", …}, "verbosity": …}`.
    #[serde(default)]
    pub text: Option<Value>,
    /// `{"effort": …, "summary": …}`.
    #[serde(default)]
    pub reasoning: Option<Value>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// A string (one user message) or a list of items.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Items(Vec<Value>),
}

impl ResponsesRequest {
    /// Whether the response is kept (the API's default is to keep it).
    pub fn stores(&self) -> bool {
        self.store.unwrap_or(true)
    }
}
