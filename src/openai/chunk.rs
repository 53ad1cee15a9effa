//! Streamed Chat Completions: `chat.completion.chunk` and its parts, and the chunks
//! lariat writes itself.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{ChatCompletion, Content, FinishReason, Role, Usage};

/// One streamed `chat.completion.chunk`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatChunk {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolCallDelta {
    #[serde(default)]
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionDelta>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FunctionDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

impl ChatChunk {
    /// A chunk of `choices` (and `usage`), with `id` and `model` left for the
    /// renderer to set.
    fn of(choices: Vec<ChunkChoice>, usage: Option<Usage>) -> Self {
        Self { id: String::new(), model: String::new(), choices, usage, rest: chunk_object() }
    }

    /// One delta for choice 0.
    pub fn delta(delta: Delta, finish_reason: Option<FinishReason>) -> Self {
        Self::of(vec![ChunkChoice { index: 0, delta, finish_reason, rest: Map::new() }], None)
    }

    /// Text as content of choice 0 (and `role` when the response has not sent it),
    /// with `extra` fields on the delta.
    pub fn text(text: String, role: bool, extra: Map<String, Value>) -> Self {
        let role = role.then_some(Role::Assistant);
        Self::delta(Delta { role, content: Some(text), tool_calls: None, rest: extra }, None)
    }

    /// Only `finish_reason` for choice 0.
    pub fn finish(reason: FinishReason) -> Self {
        Self::delta(Delta::default(), Some(reason))
    }

    /// A chunk with no choices carrying `event` (Open WebUI's status lines and sources).
    pub fn event(event: Value) -> Self {
        let mut chunk = Self::of(Vec::new(), None);
        chunk.rest.insert("event".into(), event);
        chunk
    }

    /// The `include_usage` chunk: no choices, the summed usage.
    pub fn usage(usage: Usage) -> Self {
        Self::of(Vec::new(), Some(usage))
    }
}

impl Delta {
    /// Nothing a client would act on: no role, content, tool calls or other field.
    pub fn is_empty(&self) -> bool {
        self.role.is_none()
            && self.content.is_none()
            && self.tool_calls.is_none()
            && self.rest.values().all(Value::is_null)
    }
}

fn chunk_object() -> Map<String, Value> {
    Map::from_iter([("object".to_owned(), Value::from("chat.completion.chunk"))])
}

impl ChatCompletion {
    /// The same answer as a sequence of chunks, for clients that asked to stream from
    /// an upstream that did not: role and content first, then tool calls, then the
    /// finish reason, then (if asked for) usage.
    pub fn into_chunks(self) -> Vec<ChatChunk> {
        let mut chunks = Vec::with_capacity(self.choices.len() * 3 + 1);
        let chunk = |choices: Vec<ChunkChoice>, usage: Option<Usage>| ChatChunk {
            id: self.id.clone(),
            model: self.model.clone(),
            choices,
            usage,
            rest: chunk_object(),
        };
        for choice in self.choices {
            let one = |delta: Delta, finish_reason: Option<FinishReason>| ChunkChoice {
                index: choice.index,
                delta,
                finish_reason,
                rest: Map::new(),
            };
            let content = match choice.message.content {
                Content::Text(text) => text,
                Content::None => String::new(),
                parts @ Content::Parts(_) => parts.text().into_owned(),
            };
            let mut first = Delta { role: Some(Role::Assistant), content: Some(content), ..Delta::default() };
            first.rest = choice.message.rest;
            chunks.push(chunk(vec![one(first, None)], None));
            if let Some(calls) = choice.message.tool_calls {
                let tool_calls = calls
                    .into_iter()
                    .enumerate()
                    .map(|(i, call)| ToolCallDelta {
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                        id: Some(call.id),
                        kind: Some(call.kind),
                        function: Some(FunctionDelta {
                            name: Some(call.function.name),
                            arguments: Some(call.function.arguments),
                        }),
                    })
                    .collect();
                chunks.push(chunk(vec![one(Delta { tool_calls: Some(tool_calls), ..Delta::default() }, None)], None));
            }
            chunks.push(chunk(vec![one(Delta::default(), choice.finish_reason.or(Some(FinishReason::Stop)))], None));
        }
        if let Some(usage) = self.usage.clone() {
            chunks.push(chunk(Vec::new(), Some(usage)));
        }
        chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn completion_becomes_chunks() {
        let completion: ChatCompletion = serde_json::from_value(json!({
            "id": "c1", "model": "m", "object": "chat.completion",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "hi",
                "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        }))
        .unwrap();
        let chunks: Vec<Value> = completion.into_chunks().iter().map(|c| serde_json::to_value(c).unwrap()).collect();
        assert_eq!(chunks.len(), 4);
        assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": "hi"}));
        assert_eq!(chunks[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"], "f");
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[3]["usage"]["total_tokens"], 5);
        assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == "c1"));
    }

    #[test]
    fn lariat_s_own_chunks() {
        let text = serde_json::to_value(ChatChunk::text("hi".into(), true, Map::new())).unwrap();
        assert_eq!(text["choices"][0]["delta"], json!({"role": "assistant", "content": "hi"}));
        assert_eq!(text["object"], "chat.completion.chunk");
        let finish = serde_json::to_value(ChatChunk::finish(FinishReason::ToolCalls)).unwrap();
        assert_eq!(finish["choices"][0], json!({"index": 0, "delta": {}, "finish_reason": "tool_calls"}));
        let usage = serde_json::to_value(ChatChunk::usage(Usage { total_tokens: 3, ..Usage::default() })).unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 3);
    }
}
