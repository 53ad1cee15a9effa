//! A Responses request → the Chat Completions request the loop runs: input items to
//! messages, function tools to tool definitions, the sampling fields to their Chat
//! names. Whatever cannot be translated is a 400 naming its place.

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::openai::responses::{Input, ResponsesRequest};
use crate::openai::{ChatRequest, Content, FunctionCall, FunctionDef, Message, Role, StreamOptions, ToolCall, ToolDef};

/// The prefix of an approval request item's id; the checkpoint's id follows it.
pub const APPROVAL_PREFIX: &str = "mcpr_";

/// Fields a Responses request may carry that mean the same in Chat Completions.
const SAME_IN_CHAT: [&str; 5] = ["service_tier", "prompt_cache_key", "safety_identifier", "seed", "lariat"];

/// Fields whose feature lariat does not offer: a request that sets them is refused
/// rather than answered as if they had been honoured.
const UNSUPPORTED: [(&str, &str); 3] = [
    ("background", "background responses are not supported; send the request without `background`"),
    ("conversation", "conversation objects are not supported; continue with `previous_response_id`"),
    ("prompt", "stored prompt templates are not supported; send the instructions and input"),
];

/// What the loop runs.
pub struct Translated {
    pub chat: ChatRequest,
    /// How many leading messages are this request's instructions (0 or 1): the
    /// conversation kept for the next request starts after them.
    pub instructions: usize,
}

/// Translates `request`; `history` is the stored conversation `previous_response_id`
/// continues (instructions are never part of it: each request brings its own).
pub fn translate(request: &ResponsesRequest, history: Vec<Message>) -> Result<Translated, ApiError> {
    for (field, why) in UNSUPPORTED {
        if request.rest.get(field).is_some_and(|v| !v.is_null() && *v != Value::Bool(false)) {
            return Err(ApiError::bad_request(why, Some(field)));
        }
    }
    let items = match &request.input {
        None => Items::default(),
        Some(Input::Text(text)) => Items { messages: vec![Message::new(Role::User, text.clone())], ..Items::default() },
        Some(Input::Items(items)) => read_items(items)?,
    };
    let mut messages = Vec::with_capacity(history.len() + items.messages.len() + 1);
    if let Some(instructions) = request.instructions.as_deref().filter(|i| !i.is_empty()) {
        messages.push(Message::new(Role::System, instructions.to_owned()));
    }
    let instructions = messages.len();
    messages.extend(history);
    messages.extend(items.messages);
    if messages.is_empty() && items.approval.is_none() {
        return Err(ApiError::bad_request("`input` must contain at least one item", Some("input")));
    }
    let tools =
        request.tools.iter().enumerate().map(|(i, tool)| function_tool(tool, i)).collect::<Result<Vec<_>, _>>()?;
    let mut rest = sampling(request)?;
    if let Some((id, approve)) = items.approval {
        rest.insert("lariat".into(), json!({"confirm": {"id": id, "approve": approve}}));
    }
    let chat = ChatRequest {
        model: request.model.clone(),
        messages,
        stream: request.stream,
        // A response always reports its usage, streamed or not.
        stream_options: request.stream.then(|| StreamOptions { include_usage: true, rest: Map::new() }),
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice: request.tool_choice.as_ref().map(tool_choice).transpose()?,
        rest,
    };
    Ok(Translated { chat, instructions })
}

#[derive(Default)]
struct Items {
    messages: Vec<Message>,
    /// The last approval response: the checkpoint and the human's verdict.
    approval: Option<(String, bool)>,
}

fn read_items(items: &[Value]) -> Result<Items, ApiError> {
    let mut out = Items::default();
    for (i, item) in items.iter().enumerate() {
        let at = |field: &str| format!("input[{i}]{field}");
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("message");
        match kind {
            "message" => out.messages.push(message(item, i)?),
            "function_call" => {
                let call = ToolCall {
                    id: string(item, "call_id", &at(".call_id"))?,
                    kind: "function".into(),
                    function: FunctionCall {
                        name: string(item, "name", &at(".name"))?,
                        arguments: item.get("arguments").and_then(Value::as_str).unwrap_or("{}").to_owned(),
                    },
                    rest: Map::new(),
                };
                // Calls right after the assistant's words (or each other) are one turn.
                match out.messages.last_mut() {
                    Some(last) if last.role == Role::Assistant => {
                        last.tool_calls.get_or_insert_with(Vec::new).push(call)
                    }
                    _ => out.messages.push(Message::assistant(Content::None, vec![call])),
                }
            }
            "function_call_output" => {
                let call_id = string(item, "call_id", &at(".call_id"))?;
                let output = match item.get("output") {
                    Some(Value::String(text)) => text.clone(),
                    Some(Value::Array(parts)) => {
                        let texts: Vec<&str> =
                            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
                        texts.join("\n\n")
                    }
                    _ => {
                        return Err(ApiError::bad_request(
                            "`output` must be a string or content parts",
                            Some(&at(".output")),
                        ));
                    }
                };
                out.messages.push(Message::tool_result(&call_id, output));
            }
            "mcp_approval_response" => {
                let id = string(item, "approval_request_id", &at(".approval_request_id"))?;
                let checkpoint = checkpoint_of(&id).ok_or_else(|| {
                    ApiError::bad_request(
                        format!("`{id}` is not an approval request of lariat's"),
                        Some(&at(".approval_request_id")),
                    )
                })?;
                let approve = item
                    .get("approve")
                    .and_then(Value::as_bool)
                    .ok_or_else(|| ApiError::bad_request("`approve` must be true or false", Some(&at(".approve"))))?;
                // Several held calls share one checkpoint: one "no" denies them all.
                out.approval = Some(match out.approval.take() {
                    Some((same, before)) if same == checkpoint => (same, before && approve),
                    _ => (checkpoint.to_owned(), approve),
                });
            }
            // The question's words (with their marker) are in the message beside it;
            // reasoning items are progress lariat showed, never part of the conversation.
            "mcp_approval_request" | "reasoning" => {}
            // What stays of references once those to stored items were resolved.
            "item_reference"
                if item
                    .get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| id.starts_with("rs_") || id.starts_with(APPROVAL_PREFIX)) => {}
            other => {
                return Err(ApiError::bad_request(
                    format!("input items of type `{other}` are not supported by lariat"),
                    Some(&at(".type")),
                ));
            }
        }
    }
    Ok(out)
}

/// The checkpoint an approval request item's id names.
pub fn checkpoint_of(approval_id: &str) -> Option<&str> {
    let rest = approval_id.strip_prefix(APPROVAL_PREFIX)?;
    let checkpoint = rest.split('_').next()?;
    (!checkpoint.is_empty()).then_some(checkpoint)
}

fn message(item: &Value, i: usize) -> Result<Message, ApiError> {
    let role = match item.get("role").and_then(Value::as_str) {
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("system") => Role::System,
        Some("developer") => Role::Developer,
        _ => {
            let param = format!("input[{i}].role");
            return Err(ApiError::bad_request("`role` must be user, assistant, system or developer", Some(&param)));
        }
    };
    let content = match item.get("content") {
        Some(Value::String(text)) => Content::Text(text.clone()),
        Some(Value::Array(parts)) => {
            let parts =
                parts.iter().enumerate().map(|(j, part)| content_part(part, i, j)).collect::<Result<Vec<_>, _>>()?;
            // Text alone stays a string: the form every upstream reads.
            if role == Role::Assistant || parts.iter().all(|p| p["type"] == "text") {
                Content::Text(Content::Parts(parts).text().into_owned())
            } else {
                Content::Parts(parts)
            }
        }
        _ => {
            let param = format!("input[{i}].content");
            return Err(ApiError::bad_request("`content` must be a string or a list of parts", Some(&param)));
        }
    };
    Ok(Message::new(role, content))
}

/// A Responses content part → a Chat Completions one.
fn content_part(part: &Value, i: usize, j: usize) -> Result<Value, ApiError> {
    let param = |field: &str| format!("input[{i}].content[{j}]{field}");
    match part.get("type").and_then(Value::as_str) {
        Some("input_text" | "output_text" | "text") => {
            Ok(json!({"type": "text", "text": string(part, "text", &param(".text"))?}))
        }
        Some("refusal") => Ok(json!({"type": "text", "text": string(part, "refusal", &param(".refusal"))?})),
        Some("input_image") => {
            let Some(url) = part.get("image_url").and_then(Value::as_str) else {
                return Err(ApiError::bad_request(
                    "images must be given by `image_url` (a URL or a data: URL); file ids are not supported",
                    Some(&param(".image_url")),
                ));
            };
            let mut image = json!({"url": url});
            if let Some(detail) = part.get("detail").filter(|d| !d.is_null()) {
                image["detail"] = detail.clone();
            }
            Ok(json!({"type": "image_url", "image_url": image}))
        }
        Some("input_file") => {
            let Some(data) = part.get("file_data").and_then(Value::as_str) else {
                return Err(ApiError::bad_request(
                    "files must be given inline by `file_data`; file ids and URLs are not supported",
                    Some(&param(".file_data")),
                ));
            };
            let mut file = json!({"file_data": data});
            if let Some(name) = part.get("filename").filter(|n| n.is_string()) {
                file["filename"] = name.clone();
            }
            Ok(json!({"type": "file", "file": file}))
        }
        other => Err(ApiError::bad_request(
            format!("content parts of type `{}` are not supported", other.unwrap_or("(none)")),
            Some(&param(".type")),
        )),
    }
}

/// `{"type": "function", "name", "description", "parameters", "strict"}` → a Chat tool.
fn function_tool(tool: &Value, i: usize) -> Result<ToolDef, ApiError> {
    let param = format!("tools[{i}]");
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => {}
        other => {
            return Err(ApiError::bad_request(
                format!(
                    "tools of type `{}` are not supported by lariat: only `function` tools (lariat runs its own \
                     configured tools itself)",
                    other.unwrap_or("(none)")
                ),
                Some(&format!("{param}.type")),
            ));
        }
    }
    let mut rest = Map::new();
    if let Some(strict) = tool.get("strict").filter(|s| !s.is_null()) {
        rest.insert("strict".into(), strict.clone());
    }
    Ok(ToolDef {
        kind: "function".into(),
        function: FunctionDef {
            name: string(tool, "name", &format!("{param}.name"))?,
            description: tool.get("description").and_then(Value::as_str).map(str::to_owned),
            parameters: tool.get("parameters").filter(|p| !p.is_null()).cloned(),
            rest,
        },
        rest: Map::new(),
    })
}

fn tool_choice(choice: &Value) -> Result<Value, ApiError> {
    match choice {
        Value::String(mode) if matches!(mode.as_str(), "auto" | "none" | "required") => Ok(choice.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = string(choice, "name", "tool_choice.name")?;
            Ok(json!({"type": "function", "function": {"name": name}}))
        }
        _ => Err(ApiError::bad_request(
            "`tool_choice` must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"name\": …}",
            Some("tool_choice"),
        )),
    }
}

/// The sampling and output fields under their Chat Completions names.
fn sampling(request: &ResponsesRequest) -> Result<Map<String, Value>, ApiError> {
    let mut rest = Map::new();
    let mut set = |name: &str, value: Option<Value>| {
        if let Some(value) = value.filter(|v| !v.is_null()) {
            rest.insert(name.to_owned(), value);
        }
    };
    set("temperature", request.temperature.map(Value::from));
    set("top_p", request.top_p.map(Value::from));
    // `max_tokens` rather than `max_completion_tokens`: every Chat upstream reads it.
    set("max_tokens", request.max_output_tokens.map(Value::from));
    set("parallel_tool_calls", request.parallel_tool_calls.map(Value::from));
    set("user", request.user.clone().map(Value::from));
    set("reasoning_effort", request.reasoning.as_ref().and_then(|r| r.get("effort")).cloned());
    if let Some(text) = &request.text {
        set("verbosity", text.get("verbosity").cloned());
        set("response_format", text.get("format").map(response_format).transpose()?.flatten());
    }
    if let Some(top) = request.rest.get("top_logprobs").filter(|v| !v.is_null()) {
        set("logprobs", Some(Value::Bool(true)));
        set("top_logprobs", Some(top.clone()));
    }
    for field in SAME_IN_CHAT {
        set(field, request.rest.get(field).cloned());
    }
    Ok(rest)
}

/// `text.format` → `response_format` (`None` for plain text).
fn response_format(format: &Value) -> Result<Option<Value>, ApiError> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            for field in ["name", "schema", "strict", "description"] {
                if let Some(value) = format.get(field).filter(|v| !v.is_null()) {
                    schema.insert(field.into(), value.clone());
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        _ => Err(ApiError::bad_request(
            "`text.format.type` must be text, json_object or json_schema",
            Some("text.format.type"),
        )),
    }
}

fn string(value: &Value, field: &str, param: &str) -> Result<String, ApiError> {
    value
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::bad_request(format!("`{field}` must be a string"), Some(param)))
}

#[cfg(test)]
#[path = "input_tests.rs"]
mod tests;
