//! One upstream round, seen two ways: the chunks the client may see as they arrive,
//! and the complete assistant message the loop acts on afterwards.
//!
//! Server tool calls never reach the client; client tool calls do, re-indexed and
//! with lariat's own ids (unique, so a suspended round can be found again).

use std::collections::{BTreeMap, HashSet};

use futures::{Stream, StreamExt};
use serde_json::{Map, Value};

use crate::openai::{
    ChatChunk, ChatCompletion, ChunkChoice, Delta, FunctionCall, FunctionDelta, Message, Role, ToolCall, ToolCallDelta,
    Usage,
};
use crate::upstream::{ChunkStream, Failure};

/// The loop's view of a finished round.
#[derive(Debug)]
pub struct RoundResult {
    /// The assistant message with every tool call (client calls under lariat's ids).
    pub message: Message,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    /// Top-level and choice-level fields of a non-streamed answer, passed through.
    pub completion_rest: Map<String, Value>,
    pub choice_rest: Map<String, Value>,
}

impl RoundResult {
    /// A whole (non-streamed) answer. With `passthrough` (no server tools in play)
    /// every tool call belongs to the client and keeps its upstream id.
    pub fn from_completion(mut completion: ChatCompletion, client_tools: &HashSet<String>, passthrough: bool) -> Self {
        let usage = completion.usage.take();
        let choice = (!completion.choices.is_empty()).then(|| completion.choices.swap_remove(0));
        let (mut message, finish_reason, choice_rest) = match choice {
            Some(c) => (c.message, c.finish_reason, c.rest),
            None => (assistant(Value::Null, None), None, Map::new()),
        };
        if let Some(calls) = &mut message.tool_calls {
            if !passthrough {
                for call in calls.iter_mut().filter(|c| client_tools.contains(&c.function.name)) {
                    call.id = new_call_id();
                }
            }
            if calls.is_empty() {
                message.tool_calls = None;
            }
        }
        for key in ["id", "model", "choices", "usage"] {
            completion.rest.remove(key);
        }
        Self { message, finish_reason, usage, completion_rest: completion.rest, choice_rest }
    }
}

pub fn assistant(content: Value, tool_calls: Option<Vec<ToolCall>>) -> Message {
    Message { role: Role::Assistant, content, tool_calls, tool_call_id: None, rest: Map::new() }
}

pub fn new_call_id() -> String {
    format!("call_{}", uuid::Uuid::new_v4().simple())
}

/// One tool call being assembled from deltas.
#[derive(Debug, Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
    /// Decided once the name is known: `Some(i)` = a client call shown at index `i`.
    client_index: Option<Option<u32>>,
    /// Deltas seen before the name, replayed to the client if it is a client call.
    held_arguments: String,
}

/// Accumulates a streamed round and filters what the client sees.
#[derive(Debug)]
pub struct StreamRound<'a> {
    client_tools: &'a HashSet<String>,
    /// No server tools in play: the round is relayed as is (tool calls, finish reason).
    passthrough: bool,
    finish_sent: bool,
    /// Whether the response already sent `role: assistant` (only the first chunk may).
    role_sent: bool,
    /// Content already went out in an earlier round: separate this round's with a blank line.
    separate: bool,
    content: String,
    calls: BTreeMap<u32, PartialCall>,
    client_calls: u32,
    finish_reason: Option<String>,
    usage: Option<Usage>,
}

impl<'a> StreamRound<'a> {
    pub fn new(client_tools: &'a HashSet<String>, passthrough: bool, role_sent: bool, separate: bool) -> Self {
        Self {
            client_tools,
            passthrough,
            finish_sent: false,
            role_sent,
            separate,
            content: String::new(),
            calls: BTreeMap::new(),
            client_calls: 0,
            finish_reason: None,
            usage: None,
        }
    }

    pub fn role_sent(&self) -> bool {
        self.role_sent
    }

    pub fn has_content(&self) -> bool {
        !self.content.is_empty()
    }

    /// Whether the upstream's finish reason already went to the client (passthrough).
    pub fn finish_sent(&self) -> bool {
        self.finish_sent
    }

    /// Takes one upstream chunk; returns it as the client should see it, if at all.
    /// The finish reason and usage are held back: the loop decides what ends the response.
    pub fn push(&mut self, mut chunk: ChatChunk) -> Option<ChatChunk> {
        if let Some(usage) = chunk.usage.take() {
            self.usage = Some(usage);
        }
        let mut keep = Vec::with_capacity(chunk.choices.len());
        for mut choice in std::mem::take(&mut chunk.choices) {
            if choice.index != 0 {
                keep.push(choice);
                continue;
            }
            if self.passthrough {
                if let Some(reason) = &choice.finish_reason {
                    self.finish_reason = Some(reason.clone());
                    self.finish_sent = true;
                }
            } else if let Some(reason) = choice.finish_reason.take() {
                self.finish_reason = Some(reason);
            }
            let delta = &mut choice.delta;
            if delta.role.is_some() && self.role_sent {
                delta.role = None;
            }
            if let Some(text) = delta.content.as_mut().filter(|t| !t.is_empty()) {
                if self.content.is_empty() && self.separate {
                    text.insert_str(0, "\n\n");
                }
                self.content.push_str(text);
            } else {
                delta.content = None;
            }
            delta.tool_calls = delta.tool_calls.take().and_then(|calls| self.tool_deltas(calls));
            let empty = delta.role.is_none()
                && delta.content.is_none()
                && delta.tool_calls.is_none()
                && choice.finish_reason.is_none()
                && delta.rest.values().all(Value::is_null)
                && choice.rest.values().all(Value::is_null);
            if !empty {
                if choice.delta.role.is_some() {
                    self.role_sent = true;
                }
                keep.push(choice);
            }
        }
        if keep.is_empty() {
            return None;
        }
        chunk.choices = keep;
        Some(chunk)
    }

    /// Records tool-call deltas; returns the part the client may see.
    fn tool_deltas(&mut self, deltas: Vec<ToolCallDelta>) -> Option<Vec<ToolCallDelta>> {
        if self.passthrough {
            for d in &deltas {
                let call = self.calls.entry(d.index).or_default();
                if let Some(id) = d.id.as_ref().filter(|id| !id.is_empty()) {
                    call.id.get_or_insert_with(|| id.clone());
                }
                if let Some(f) = &d.function {
                    call.name.push_str(f.name.as_deref().unwrap_or_default());
                    call.arguments.push_str(f.arguments.as_deref().unwrap_or_default());
                }
            }
            return (!deltas.is_empty()).then_some(deltas);
        }
        let mut visible = Vec::new();
        for d in deltas {
            let call = self.calls.entry(d.index).or_default();
            if let Some(id) = d.id.filter(|id| !id.is_empty()) {
                call.id.get_or_insert(id);
            }
            let (name, arguments) = match d.function {
                Some(f) => (f.name.unwrap_or_default(), f.arguments.unwrap_or_default()),
                None => (String::new(), String::new()),
            };
            call.name.push_str(&name);
            call.arguments.push_str(&arguments);
            match call.client_index {
                Some(Some(index)) => {
                    if !arguments.is_empty() {
                        visible.push(argument_delta(index, arguments));
                    }
                }
                Some(None) => {}
                None if call.name.is_empty() => call.held_arguments.push_str(&arguments),
                None => {
                    if self.client_tools.contains(&call.name) {
                        let index = self.client_calls;
                        self.client_calls += 1;
                        call.client_index = Some(Some(index));
                        let id = new_call_id();
                        call.id = Some(id.clone());
                        call.held_arguments.push_str(&arguments);
                        visible.push(ToolCallDelta {
                            index,
                            id: Some(id),
                            kind: Some("function".into()),
                            function: Some(FunctionDelta {
                                name: Some(call.name.clone()),
                                arguments: Some(std::mem::take(&mut call.held_arguments)),
                            }),
                        });
                    } else {
                        call.client_index = Some(None);
                    }
                }
            }
        }
        (!visible.is_empty()).then_some(visible)
    }

    pub fn finish(self) -> RoundResult {
        let calls: Vec<ToolCall> = self
            .calls
            .into_values()
            .filter(|c| !c.name.is_empty())
            .map(|c| ToolCall {
                id: c.id.unwrap_or_else(new_call_id),
                kind: "function".into(),
                function: FunctionCall { name: c.name, arguments: c.arguments },
                rest: Map::new(),
            })
            .collect();
        let content = if self.content.is_empty() { Value::Null } else { Value::String(self.content) };
        RoundResult {
            message: assistant(content, (!calls.is_empty()).then_some(calls)),
            finish_reason: self.finish_reason,
            usage: self.usage,
            completion_rest: Map::new(),
            choice_rest: Map::new(),
        }
    }
}

fn argument_delta(index: u32, arguments: String) -> ToolCallDelta {
    ToolCallDelta {
        index,
        id: None,
        kind: None,
        function: Some(FunctionDelta { name: None, arguments: Some(arguments) }),
    }
}

/// What relaying an upstream stream produces: the client's chunks as they come, then
/// the round as a whole (and the failure that cut it short, if one did).
pub enum Relayed {
    Chunk(ChatChunk),
    Done(Box<Relay>),
}

pub struct Relay {
    pub round: RoundResult,
    pub role_sent: bool,
    pub has_content: bool,
    pub finish_sent: bool,
    pub failure: Option<Failure>,
}

/// Feeds `chunks` through `acc`, yielding what the client may see, then `Done`.
pub fn relay<'a>(mut chunks: ChunkStream, mut acc: StreamRound<'a>) -> impl Stream<Item = Relayed> + Send + 'a {
    async_stream::stream! {
        let mut failure = None;
        while let Some(item) = chunks.next().await {
            match item {
                Ok(chunk) => {
                    if let Some(out) = acc.push(chunk) {
                        yield Relayed::Chunk(out);
                    }
                }
                Err(cut) => {
                    failure = Some(cut);
                    break;
                }
            }
        }
        let (role_sent, has_content, finish_sent) = (acc.role_sent(), acc.has_content(), acc.finish_sent());
        yield Relayed::Done(Box::new(Relay { round: acc.finish(), role_sent, has_content, finish_sent, failure }));
    }
}

/// A chunk carrying `text` as content (and `role` when the response has not sent it).
pub fn text_chunk(text: String, role: bool, extra: Map<String, Value>) -> ChatChunk {
    ChatChunk {
        id: String::new(),
        model: String::new(),
        choices: vec![ChunkChoice {
            index: 0,
            delta: Delta { role: role.then_some(Role::Assistant), content: Some(text), tool_calls: None, rest: extra },
            finish_reason: None,
            rest: Map::new(),
        }],
        usage: None,
        rest: chunk_object(),
    }
}

/// A chunk carrying only `finish_reason` for choice 0.
pub fn finish_chunk(reason: &str) -> ChatChunk {
    ChatChunk {
        id: String::new(),
        model: String::new(),
        choices: vec![ChunkChoice {
            index: 0,
            delta: Delta::default(),
            finish_reason: Some(reason.into()),
            rest: Map::new(),
        }],
        usage: None,
        rest: chunk_object(),
    }
}

/// The `include_usage` chunk: no choices, the summed usage.
pub fn usage_chunk(usage: Usage) -> ChatChunk {
    ChatChunk { id: String::new(), model: String::new(), choices: Vec::new(), usage: Some(usage), rest: chunk_object() }
}

fn chunk_object() -> Map<String, Value> {
    Map::from_iter([("object".to_owned(), Value::from("chat.completion.chunk"))])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chunk(delta: Value, finish: Option<&str>) -> ChatChunk {
        serde_json::from_value(
            json!({"id": "x", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
        .unwrap()
    }

    fn call_delta(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> Value {
        let mut f = json!({"arguments": args});
        if let Some(n) = name {
            f["name"] = json!(n);
        }
        let mut d = json!({"index": index, "function": f});
        if let Some(id) = id {
            d["id"] = json!(id);
            d["type"] = json!("function");
        }
        json!({"tool_calls": [d]})
    }

    #[test]
    fn server_calls_are_hidden_and_client_calls_forwarded() {
        let client: HashSet<String> = ["web_search".to_owned()].into();
        let mut round = StreamRound::new(&client, false, false, false);
        let mut seen = Vec::new();
        let feed = [
            chunk(json!({"role": "assistant", "content": "Let me check."}), None),
            chunk(call_delta(0, Some("up_1"), Some("current_time"), "{\"timez"), None),
            chunk(call_delta(1, Some("up_2"), Some("web_search"), "{\"q\":"), None),
            chunk(call_delta(0, None, None, "one\":\"UTC\"}"), None),
            chunk(call_delta(1, None, None, "\"rust\"}"), None),
            chunk(json!({}), Some("tool_calls")),
        ];
        for c in feed {
            if let Some(out) = round.push(c) {
                seen.push(serde_json::to_value(out).unwrap());
            }
        }
        assert_eq!(seen.len(), 3, "{seen:#?}");
        assert_eq!(seen[0]["choices"][0]["delta"], json!({"role": "assistant", "content": "Let me check."}));
        let forwarded = &seen[1]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(forwarded["index"], 0, "client calls are re-indexed from 0");
        assert_eq!(forwarded["function"]["name"], "web_search");
        let lariat_id = forwarded["id"].as_str().unwrap().to_owned();
        assert!(lariat_id.starts_with("call_") && lariat_id != "up_2");
        assert_eq!(seen[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"], "\"rust\"}");
        assert!(seen.iter().all(|c| c["choices"][0]["finish_reason"].is_null()), "finish is the loop's call");

        let result = round.finish();
        assert_eq!(result.finish_reason.as_deref(), Some("tool_calls"));
        let calls = result.message.tool_calls.unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!((calls[0].id.as_str(), calls[0].function.arguments.as_str()), ("up_1", "{\"timezone\":\"UTC\"}"));
        assert_eq!(
            (calls[1].id.as_str(), calls[1].function.arguments.as_str()),
            (lariat_id.as_str(), "{\"q\":\"rust\"}")
        );
        assert_eq!(result.message.content, json!("Let me check."));
    }

    #[test]
    fn later_rounds_send_no_role_and_separate_their_content() {
        let client = HashSet::new();
        let mut round = StreamRound::new(&client, false, true, true);
        let first = round.push(chunk(json!({"role": "assistant", "content": ""}), None));
        assert!(first.is_none(), "an empty role chunk is dropped after the first round");
        let out = serde_json::to_value(round.push(chunk(json!({"content": "It is noon."}), None)).unwrap()).unwrap();
        assert_eq!(out["choices"][0]["delta"], json!({"content": "\n\nIt is noon."}));
        assert!(round.push(chunk(json!({}), Some("stop"))).is_none());
    }

    #[test]
    fn passthrough_relays_tool_calls_and_finish_as_is() {
        let client = HashSet::new();
        let mut round = StreamRound::new(&client, true, false, false);
        let out = round.push(chunk(call_delta(0, Some("up_1"), Some("anything"), "{}"), Some("tool_calls"))).unwrap();
        let out = serde_json::to_value(out).unwrap();
        assert_eq!(out["choices"][0]["delta"]["tool_calls"][0]["id"], "up_1");
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        assert!(round.finish_sent());
        assert_eq!(round.finish().message.tool_calls.unwrap()[0].id, "up_1");
    }

    #[test]
    fn usage_chunks_are_recorded_not_forwarded() {
        let client = HashSet::new();
        let mut round = StreamRound::new(&client, false, false, false);
        let usage: ChatChunk = serde_json::from_value(
            json!({"id": "x", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}),
        )
        .unwrap();
        assert!(round.push(usage).is_none());
        assert_eq!(round.finish().usage.unwrap().total_tokens, 7);
    }
}
