//! One upstream round, seen two ways: the deltas the client may see as they arrive,
//! and the complete assistant message the loop acts on afterwards.
//!
//! Server tool calls never reach the client; client tool calls do, re-indexed and
//! with lariat's own ids (unique, so a suspended round can be found again).

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};

use super::events::{CallDelta, Delta, Remains};
use crate::openai::{
    ChatChunk, ChatCompletion, Choice, Content, DeltaView, FinishReason, FunctionCall, KeptCompletion, Message,
    RelayedChunk, RelayedCompletion, StreamChunk, ToolCall, ToolCallDelta, Usage,
};

/// Whose tool calls a round holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No server tools in play: every call is the client's, relayed as the upstream
    /// made it, and the upstream's finish reason goes out as it came.
    Relay,
    /// lariat runs the server calls; only the client's own calls reach the client.
    Loop,
}

/// The loop's view of a finished round.
#[derive(Debug)]
pub struct RoundResult {
    /// The assistant message with every tool call (client calls under lariat's ids).
    pub message: Message,
    pub finish_reason: Option<FinishReason>,
    pub usage: Option<Usage>,
    /// Top-level and choice-level fields of a non-streamed answer, passed through.
    pub completion_rest: Map<String, Value>,
    pub choice_rest: Map<String, Value>,
    /// A relayed answer as it came, for a face that sends it on.
    pub kept: Option<Box<KeptCompletion>>,
}

impl RoundResult {
    /// A whole (non-streamed) answer; in `Mode::Relay` every call keeps its upstream id.
    pub fn from_completion(mut completion: ChatCompletion, client_tools: &HashSet<String>, mode: Mode) -> Self {
        let usage = completion.usage.take();
        let choice = (!completion.choices.is_empty()).then(|| completion.choices.swap_remove(0));
        let (mut message, finish_reason, choice_rest) = match choice {
            Some(c) => (c.message, c.finish_reason, c.rest),
            None => (Message::assistant(Content::None, Vec::new()), None, Map::new()),
        };
        if let Some(calls) = &mut message.tool_calls {
            if mode == Mode::Loop {
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
        Self { message, finish_reason, usage, completion_rest: completion.rest, choice_rest, kept: None }
    }

    /// A whole answer kept by a relay (which called no tool).
    pub fn from_relayed(relayed: RelayedCompletion) -> Self {
        let RelayedCompletion { choice: Choice { mut message, finish_reason, rest, .. }, usage, kept } = relayed;
        message.tool_calls = None;
        Self {
            message,
            finish_reason,
            usage,
            completion_rest: Map::new(),
            choice_rest: rest,
            kept: Some(Box::new(kept)),
        }
    }
}

pub fn new_call_id() -> String {
    crate::text::new_id("call_")
}

/// Whose a call being assembled is, decided once its name is known.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Owner {
    #[default]
    Undecided,
    Server,
    /// A client call, shown to the client at this index.
    Client(u32),
}

/// One tool call being assembled from deltas.
#[derive(Debug, Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
    owner: Owner,
    /// Deltas seen before the name, replayed to the client if it is a client call.
    held_arguments: String,
}

/// Where in the response a round begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    First,
    /// Text went out in an earlier round: this round's starts on a new paragraph.
    AfterText,
}

/// What of a streamed round is kept once it went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The loop needs the whole message.
    Text,
    /// A relayed stream is the client's: only the calls are kept (to end the round).
    CallsOnly,
}

/// Accumulates a streamed round and picks out what the client sees.
#[derive(Debug)]
pub struct StreamRound<'a> {
    client_tools: &'a HashSet<String>,
    mode: Mode,
    /// Text already went out in an earlier round: separate this round's with a blank line.
    separate: bool,
    /// Keep the round's text (the loop needs it); a relayed stream keeps none.
    keep_text: bool,
    text_seen: bool,
    content: String,
    calls: BTreeMap<u32, PartialCall>,
    client_calls: u32,
    finish_reason: Option<FinishReason>,
    usage: Option<Usage>,
}

impl<'a> StreamRound<'a> {
    pub fn new(client_tools: &'a HashSet<String>, mode: Mode, opening: Opening, keep: Keep) -> Self {
        Self {
            client_tools,
            mode,
            separate: opening == Opening::AfterText,
            keep_text: keep == Keep::Text,
            text_seen: false,
            content: String::new(),
            calls: BTreeMap::new(),
            client_calls: 0,
            finish_reason: None,
            usage: None,
        }
    }

    /// Whether this round produced any text.
    pub fn has_text(&self) -> bool {
        self.text_seen
    }

    /// Takes one upstream chunk; returns what the client may see of it, if anything.
    /// In `Mode::Loop` the finish reason and usage are held back: the loop decides
    /// what ends the response.
    pub fn push(&mut self, chunk: StreamChunk) -> Option<Delta> {
        match chunk {
            StreamChunk::Typed(chunk) => self.push_typed(chunk),
            StreamChunk::Relayed(chunk) => self.push_relayed(chunk),
        }
    }

    fn push_typed(&mut self, mut chunk: ChatChunk) -> Option<Delta> {
        if let Some(usage) = chunk.usage.take() {
            self.usage = Some(usage);
        }
        if chunk.choices.is_empty() {
            return None;
        }
        let mut out = Delta::default();
        for choice in chunk.choices.iter_mut().filter(|c| c.index == 0) {
            let delta = &mut choice.delta;
            let view = DeltaView {
                role: delta.role.take().is_some(),
                content: delta.content.take(),
                tool_calls: delta.tool_calls.take(),
            };
            self.choice(view, choice.finish_reason.take(), &mut out);
        }
        out.remains = Some(Remains::Typed(Box::new(chunk)));
        Some(out)
    }

    /// A relayed chunk goes out as it came; only a loop's round (which rewrites what
    /// the client sees, and so reads its chunks typed) drops its bytes.
    fn push_relayed(&mut self, mut chunk: Box<RelayedChunk>) -> Option<Delta> {
        // A relay has one round, which opens the response: no separator to add.
        debug_assert!(self.mode == Mode::Loop || !self.separate);
        if let Some(usage) = chunk.usage.take() {
            self.usage = Some(usage);
        }
        if chunk.choices == 0 {
            return None;
        }
        let mut out = Delta::default();
        if let Some(choice) = chunk.choice.take() {
            self.choice(choice.delta, choice.finish_reason, &mut out);
        }
        if self.mode == Mode::Relay {
            out.remains = Some(Remains::Relayed(chunk));
        }
        Some(out)
    }

    /// Choice 0 of a chunk, however the chunk was read: what the client may see of
    /// it goes into `out`.
    fn choice(&mut self, delta: DeltaView, finish: Option<FinishReason>, out: &mut Delta) {
        if let Some(reason) = finish {
            if self.mode == Mode::Relay {
                out.finish = Some(reason.clone());
            }
            self.finish_reason = Some(reason);
        }
        out.role |= delta.role;
        if let Some(mut text) = delta.content.filter(|t| !t.is_empty()) {
            if !self.text_seen && self.separate {
                text.insert_str(0, "\n\n");
            }
            self.text_seen = true;
            if self.keep_text {
                self.content.push_str(&text);
            }
            out.text = Some(text);
        }
        if let Some(calls) = delta.tool_calls {
            self.tool_deltas(calls, &mut out.calls);
        }
    }

    /// Records tool-call deltas; appends the part the client may see to `visible`.
    fn tool_deltas(&mut self, deltas: Vec<ToolCallDelta>, visible: &mut Vec<CallDelta>) {
        for d in deltas {
            let call = self.calls.entry(d.index).or_default();
            if let Some(id) = d.id.as_ref().filter(|id| !id.is_empty()) {
                call.id.get_or_insert_with(|| id.clone());
            }
            let (name, arguments) = match d.function {
                Some(f) => (f.name, f.arguments),
                None => (None, None),
            };
            call.name.push_str(name.as_deref().unwrap_or_default());
            call.arguments.push_str(arguments.as_deref().unwrap_or_default());
            if self.mode == Mode::Relay {
                visible.push(CallDelta { index: d.index, id: d.id, name, arguments });
                continue;
            }
            let arguments = arguments.unwrap_or_default();
            match call.owner {
                Owner::Client(index) => {
                    if !arguments.is_empty() {
                        visible.push(CallDelta { index, id: None, name: None, arguments: Some(arguments) });
                    }
                }
                Owner::Server => {}
                Owner::Undecided if call.name.is_empty() => call.held_arguments.push_str(&arguments),
                Owner::Undecided if self.client_tools.contains(&call.name) => {
                    let index = self.client_calls;
                    self.client_calls += 1;
                    call.owner = Owner::Client(index);
                    let id = new_call_id();
                    call.id = Some(id.clone());
                    call.held_arguments.push_str(&arguments);
                    visible.push(CallDelta {
                        index,
                        id: Some(id),
                        name: Some(call.name.clone()),
                        arguments: Some(std::mem::take(&mut call.held_arguments)),
                    });
                }
                Owner::Undecided => call.owner = Owner::Server,
            }
        }
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
        let content = if self.content.is_empty() { Content::None } else { Content::Text(self.content) };
        RoundResult {
            message: Message::assistant(content, calls),
            finish_reason: self.finish_reason,
            usage: self.usage,
            completion_rest: Map::new(),
            choice_rest: Map::new(),
            kept: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::Reading;
    use serde_json::json;

    fn chunk(delta: Value, finish: Option<&str>) -> StreamChunk {
        StreamChunk::Typed(
            serde_json::from_value(
                json!({"id": "x", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
            )
            .unwrap(),
        )
    }

    fn relayed(json: Value) -> StreamChunk {
        StreamChunk::read(json.to_string().into(), Reading::Relayed).unwrap()
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

    type Shown<'a> = (u32, Option<&'a str>, Option<&'a str>, Option<&'a str>);

    fn calls(delta: &Delta) -> Vec<Shown<'_>> {
        delta.calls.iter().map(|c| (c.index, c.id.as_deref(), c.name.as_deref(), c.arguments.as_deref())).collect()
    }

    #[test]
    fn server_calls_are_hidden_and_client_calls_forwarded() {
        let client: HashSet<String> = ["web_search".to_owned()].into();
        let mut round = StreamRound::new(&client, Mode::Loop, Opening::First, Keep::Text);
        let feed = [
            chunk(json!({"role": "assistant", "content": "Let me check."}), None),
            chunk(call_delta(0, Some("up_1"), Some("current_time"), "{\"timez"), None),
            chunk(call_delta(1, Some("up_2"), Some("web_search"), "{\"q\":"), None),
            chunk(call_delta(0, None, None, "one\":\"UTC\"}"), None),
            chunk(call_delta(1, None, None, "\"rust\"}"), None),
            chunk(json!({}), Some("tool_calls")),
        ];
        let seen: Vec<Delta> = feed.into_iter().filter_map(|c| round.push(c)).collect();
        assert!(seen[0].role);
        assert_eq!(seen[0].text.as_deref(), Some("Let me check."));
        assert!(seen[1].calls.is_empty(), "a server call's deltas are not shown");
        let forwarded = calls(&seen[2]);
        assert_eq!(forwarded.len(), 1);
        let (index, id, name, arguments) = forwarded[0];
        assert_eq!((index, name, arguments), (0, Some("web_search"), Some("{\"q\":")), "re-indexed from 0");
        let lariat_id = id.unwrap().to_owned();
        assert!(lariat_id.starts_with("call_") && lariat_id != "up_2");
        assert!(seen[3].calls.is_empty());
        assert_eq!(calls(&seen[4]), [(0, None, None, Some("\"rust\"}"))]);
        assert!(seen.iter().all(|d| d.finish.is_none()), "finish is the loop's call");

        let result = round.finish();
        assert_eq!(result.finish_reason, Some(FinishReason::ToolCalls));
        let calls = result.message.tool_calls.unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!((calls[0].id.as_str(), calls[0].function.arguments.as_str()), ("up_1", "{\"timezone\":\"UTC\"}"));
        assert_eq!(
            (calls[1].id.as_str(), calls[1].function.arguments.as_str()),
            (lariat_id.as_str(), "{\"q\":\"rust\"}")
        );
        assert_eq!(result.message.content, "Let me check.");
    }

    #[test]
    fn later_rounds_separate_their_text() {
        let client = HashSet::new();
        let mut round = StreamRound::new(&client, Mode::Loop, Opening::AfterText, Keep::Text);
        let first = round.push(chunk(json!({"role": "assistant", "content": ""}), None)).unwrap();
        assert!(first.role && first.text.is_none(), "empty content is no text");
        let out = round.push(chunk(json!({"content": "It is noon."}), None)).unwrap();
        assert_eq!(out.text.as_deref(), Some("\n\nIt is noon."));
        let last = round.push(chunk(json!({}), Some("stop"))).unwrap();
        assert!(last.finish.is_none());
        assert_eq!(round.finish().message.content, "\n\nIt is noon.");
    }

    #[test]
    fn relay_passes_tool_calls_and_finish_as_is_and_keeps_no_text() {
        let client = HashSet::new();
        let mut round = StreamRound::new(&client, Mode::Relay, Opening::First, Keep::CallsOnly);
        let out = round.push(chunk(call_delta(0, Some("up_1"), Some("anything"), "{}"), Some("tool_calls"))).unwrap();
        assert_eq!(calls(&out), [(0, Some("up_1"), Some("anything"), Some("{}"))]);
        assert_eq!(out.finish, Some(FinishReason::ToolCalls));
        assert!(round.push(chunk(json!({"content": "words"}), None)).unwrap().text.is_some());
        assert!(round.has_text());
        let result = round.finish();
        assert_eq!(result.message.tool_calls.unwrap()[0].id, "up_1");
        assert_eq!(result.message.content, Content::None, "a relayed stream's text is the client's alone");
    }

    #[test]
    fn usage_chunks_are_recorded_not_forwarded() {
        let client = HashSet::new();
        let mut round = StreamRound::new(&client, Mode::Loop, Opening::First, Keep::Text);
        let usage: ChatChunk = serde_json::from_value(
            json!({"id": "x", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}),
        )
        .unwrap();
        assert!(round.push(StreamChunk::Typed(usage)).is_none());
        assert_eq!(round.finish().usage.unwrap().total_tokens, 7);
    }

    #[test]
    fn what_lariat_does_not_read_stays_in_the_remains() {
        let client = HashSet::new();
        let mut round = StreamRound::new(&client, Mode::Loop, Opening::First, Keep::Text);
        let raw: ChatChunk = serde_json::from_value(json!({"id": "x", "system_fingerprint": "fp", "choices": [
            {"index": 0, "delta": {"content": "a", "reasoning_content": "r"}, "logprobs": {"content": []}},
            {"index": 1, "delta": {"content": "other choice"}}
        ]}))
        .unwrap();
        let delta = round.push(StreamChunk::Typed(raw)).unwrap();
        let Some(Remains::Typed(remains)) = delta.remains else { panic!("a typed chunk's remains are typed") };
        let remains = serde_json::to_value(remains).unwrap();
        assert_eq!(remains["system_fingerprint"], "fp");
        assert_eq!(remains["choices"][0]["delta"], json!({"reasoning_content": "r"}));
        assert_eq!(remains["choices"][0]["logprobs"], json!({"content": []}));
        assert_eq!(remains["choices"][1]["delta"]["content"], "other choice");
    }

    #[test]
    fn a_relayed_chunk_is_read_the_same_and_kept_whole_only_by_a_relay() {
        let client = HashSet::new();
        let words = json!({"id": "up", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"},
            "finish_reason": "stop"}]});
        let mut relay = StreamRound::new(&client, Mode::Relay, Opening::First, Keep::CallsOnly);
        let delta = relay.push(relayed(words.clone())).unwrap();
        assert!(delta.role);
        assert_eq!(delta.text.as_deref(), Some("hi"));
        assert_eq!(delta.finish, Some(FinishReason::Stop));
        let Some(Remains::Relayed(bytes)) = delta.remains else { panic!("a relay keeps the chunk's bytes") };
        let mut out = Vec::new();
        bytes.write("\"id\"", "\"m\"", &mut out);
        let mut expected = words.clone();
        (expected["id"], expected["model"]) = (json!("id"), json!("m"));
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), expected);

        // A call's chunk is read typed (its first delta gets a `type`), and recorded.
        let call = json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "up_1",
            "function": {"name": "f", "arguments": "{}"}}]}}]});
        let delta = relay.push(relayed(call)).unwrap();
        assert_eq!(calls(&delta), [(0, Some("up_1"), Some("f"), Some("{}"))]);
        assert!(matches!(delta.remains, Some(Remains::Typed(_))));
        let usage = json!({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}});
        assert!(relay.push(relayed(usage)).is_none(), "usage goes out once, summed, at the end");
        let result = relay.finish();
        assert_eq!((result.usage.unwrap().total_tokens, result.message.calls()[0].id.as_str()), (2, "up_1"));

        let mut round = StreamRound::new(&client, Mode::Loop, Opening::AfterText, Keep::Text);
        let delta = round.push(relayed(words)).unwrap();
        assert_eq!(delta.text.as_deref(), Some("\n\nhi"));
        assert!(delta.remains.is_none() && delta.finish.is_none(), "a loop rewrites what the client sees");
    }
}
