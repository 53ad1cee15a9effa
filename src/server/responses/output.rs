//! The `response` object and its output items, as both the JSON answer and the
//! stream's events show them.

use serde_json::{Map, Value, json};

use super::input::APPROVAL_PREFIX;
use crate::agent::{Confirmation, Ending, Finished};
use crate::openai::responses::ResponsesRequest;
use crate::openai::{FinishReason, Usage};

/// One output item.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Message {
        id: String,
        text: String,
    },
    /// A call of one of the client's function tools.
    FunctionCall {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
    /// A held call waiting for the human (the confirmation gate).
    Approval {
        id: String,
        name: String,
        arguments: String,
    },
    /// Live progress (lariat's own work), streams only.
    Reasoning {
        id: String,
        text: String,
    },
}

impl Item {
    pub fn id(&self) -> &str {
        match self {
            Self::Message { id, .. } | Self::FunctionCall { id, .. } | Self::Approval { id, .. } => id,
            Self::Reasoning { id, .. } => id,
        }
    }

    /// The item as JSON; `done` is false while a stream is still writing it.
    pub fn to_json(&self, done: bool) -> Value {
        let status = if done { "completed" } else { "in_progress" };
        match self {
            Self::Message { id, text } => {
                let content = if done || !text.is_empty() { vec![text_part(text)] } else { Vec::new() };
                json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
            }
            Self::FunctionCall { id, call_id, name, arguments } => json!({
                "type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": arguments,
                "status": status,
            }),
            Self::Approval { id, name, arguments } => json!({
                "type": "mcp_approval_request", "id": id, "server_label": "lariat", "name": name,
                "arguments": arguments,
            }),
            Self::Reasoning { id, text } => {
                let summary =
                    if text.is_empty() { Vec::new() } else { vec![json!({"type": "summary_text", "text": text})] };
                json!({"type": "reasoning", "id": id, "summary": summary})
            }
        }
    }
}

pub fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// The response an output item id names (see [`Shell::item_id`]).
pub fn response_of(item_id: &str) -> Option<String> {
    let (_, rest) = item_id.split_once('_')?;
    let (response, index) = rest.rsplit_once('_')?;
    let well_formed =
        !response.is_empty() && response.bytes().all(|b| b.is_ascii_hexdigit()) && index.parse::<usize>().is_ok();
    well_formed.then(|| format!("resp_{response}"))
}

/// One approval request item per held call, all naming the checkpoint.
pub fn approvals(confirmation: &Confirmation) -> impl Iterator<Item = Item> + '_ {
    confirmation.held.iter().enumerate().map(|(n, call)| Item::Approval {
        id: format!("{APPROVAL_PREFIX}{}_{n}", confirmation.id),
        name: call.name.clone(),
        arguments: call.arguments.clone(),
    })
}

/// The items of a non-streamed answer.
pub fn items(shell: &Shell, finished: &Finished) -> Vec<Item> {
    let mut items = Vec::new();
    let text = finished.message.content.text();
    if !text.is_empty() {
        items.push(Item::Message { id: shell.item_id("msg_", 0), text: text.into_owned() });
    }
    for call in finished.message.calls() {
        items.push(Item::FunctionCall {
            id: shell.item_id("fc_", items.len()),
            call_id: call.id.clone(),
            name: call.function.name.clone(),
            arguments: call.function.arguments.clone(),
        });
    }
    if let Some(confirmation) = &finished.confirmation {
        items.extend(approvals(confirmation));
    }
    items
}

/// How a finished loop ends the response: `completed`, or `incomplete` and why.
pub fn outcome(finished: &Finished) -> (&'static str, Option<&'static str>) {
    match (&finished.finish_reason, finished.ended_by) {
        (FinishReason::Length, _) => ("incomplete", Some("max_output_tokens")),
        (FinishReason::ContentFilter, _) => ("incomplete", Some("content_filter")),
        (_, Ending::RoundLimit) => ("incomplete", Some("round_limit")),
        _ => ("completed", None),
    }
}

/// Chat usage under the Responses API's names.
pub fn usage(usage: &Usage) -> Value {
    let detail = |outer: &str, inner: &str| {
        usage.rest.get(outer).and_then(|d| d.get(inner)).and_then(Value::as_u64).unwrap_or(0)
    };
    json!({
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": detail("prompt_tokens_details", "cached_tokens")},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": detail("completion_tokens_details", "reasoning_tokens")},
        "total_tokens": usage.total_tokens,
    })
}

/// What every `response` object of one request carries: its id, time, virtual
/// model, and the request's parameters echoed as the API does.
#[derive(Debug, Clone)]
pub struct Shell {
    pub id: String,
    pub created_at: i64,
    pub model: String,
    echo: Map<String, Value>,
}

impl Shell {
    pub fn new(request: &ResponsesRequest, stored: bool) -> Self {
        let or_null = |v: Option<Value>| v.unwrap_or(Value::Null);
        let echo = Map::from_iter([
            ("instructions".to_owned(), or_null(request.instructions.clone().map(Value::from))),
            ("max_output_tokens".to_owned(), or_null(request.max_output_tokens.map(Value::from))),
            ("metadata".to_owned(), Value::Object(request.metadata.clone().unwrap_or_default())),
            ("parallel_tool_calls".to_owned(), Value::Bool(request.parallel_tool_calls.unwrap_or(true))),
            ("previous_response_id".to_owned(), or_null(request.previous_response_id.clone().map(Value::from))),
            ("reasoning".to_owned(), request.reasoning.clone().unwrap_or(json!({"effort": null, "summary": null}))),
            ("store".to_owned(), Value::Bool(stored)),
            ("temperature".to_owned(), or_null(request.temperature.map(Value::from))),
            ("text".to_owned(), request.text.clone().unwrap_or(json!({"format": {"type": "text"}}))),
            ("tool_choice".to_owned(), request.tool_choice.clone().unwrap_or(json!("auto"))),
            ("tools".to_owned(), Value::Array(request.tools.clone())),
            ("top_p".to_owned(), or_null(request.top_p.map(Value::from))),
            ("truncation".to_owned(), json!("disabled")),
            ("user".to_owned(), or_null(request.user.clone().map(Value::from))),
        ]);
        Self {
            id: crate::text::new_id("resp_"),
            created_at: crate::clock::unix_now(),
            model: request.model.clone(),
            echo,
        }
    }

    /// The id of the output item at `index`: it names this response, so a client
    /// that refers to the item (`item_reference`) leads lariat to where it is kept.
    pub fn item_id(&self, prefix: &str, index: usize) -> String {
        format!("{prefix}{}_{index}", self.id.trim_start_matches("resp_"))
    }

    /// The `response` object in a given state.
    pub fn object(&self, status: &str, output: Vec<Value>, end: End) -> Value {
        let mut object = Map::from_iter([
            ("id".to_owned(), json!(self.id)),
            ("object".to_owned(), json!("response")),
            ("created_at".to_owned(), json!(self.created_at)),
            ("status".to_owned(), json!(status)),
            ("background".to_owned(), json!(false)),
            ("error".to_owned(), end.error.unwrap_or(Value::Null)),
            ("incomplete_details".to_owned(), end.incomplete.map_or(Value::Null, |reason| json!({"reason": reason}))),
            ("model".to_owned(), json!(self.model)),
            ("output".to_owned(), Value::Array(output)),
            ("usage".to_owned(), end.usage.as_ref().map_or(Value::Null, usage)),
        ]);
        object.extend(self.echo.iter().map(|(k, v)| (k.clone(), v.clone())));
        Value::Object(object)
    }
}

/// How a response object ends (all empty while it runs).
#[derive(Debug, Default)]
pub struct End {
    pub usage: Option<Usage>,
    pub incomplete: Option<&'static str>,
    pub error: Option<Value>,
}
