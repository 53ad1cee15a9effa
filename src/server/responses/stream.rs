//! The loop's events as the Responses API's stream: `response.created`, items opened,
//! written and closed as the answer arrives, and `response.completed` (or
//! `.incomplete`, or `.failed`), each event with its `sequence_number`.

use serde_json::{Value, json};

use super::output::{self, End, Item, Shell};
use crate::agent::{CallDelta, Event, Finished};
use crate::config::Progress;
use crate::error::ApiError;
use crate::openai::{Content, FunctionCall, Message, ToolCall};
use crate::text::new_id;

/// One stream event: its `type` and its data (`type` and `sequence_number` are
/// added when it is numbered).
#[derive(Debug)]
pub struct Out {
    pub kind: &'static str,
    pub data: Value,
}

/// An item of the output and whether it is closed.
struct Slot {
    item: Item,
    done: bool,
}

/// Where the stream is after an event.
pub enum After {
    Going,
    /// The loop finished: the response and the turn to keep.
    Finished(Box<Ending>),
    /// `response.failed` was the last event.
    Failed,
}

/// How a stream ended, for the stored copy.
pub struct Ending {
    pub response: Value,
    /// The assistant's turn as the next request continues it.
    pub message: Message,
}

pub struct StreamFace {
    pub shell: Shell,
    progress: Progress,
    sequence: u64,
    slots: Vec<Slot>,
    /// The message item being written, if any.
    text: Option<usize>,
    /// The progress item being written, if any.
    reasoning: Option<usize>,
    /// The client calls streamed so far: the upstream's call index → its slot.
    calls: Vec<(u32, usize)>,
    /// What the model said (progress left out), for the conversation.
    said: String,
    out: Vec<Out>,
}

impl StreamFace {
    pub fn new(shell: Shell, progress: Progress) -> Self {
        Self {
            shell,
            progress,
            sequence: 0,
            slots: Vec::new(),
            text: None,
            reasoning: None,
            calls: Vec::new(),
            said: String::new(),
            out: Vec::new(),
        }
    }

    /// The first two events: the response exists and is running.
    pub fn start(&mut self) -> Vec<Out> {
        let response = self.shell.object("in_progress", Vec::new(), End::default());
        self.emit("response.created", json!({"response": response.clone()}));
        self.emit("response.in_progress", json!({"response": response}));
        std::mem::take(&mut self.out)
    }

    /// The events `event` makes, and where that leaves the stream.
    pub fn render(&mut self, event: Event) -> (Vec<Out>, After) {
        if self.progress != Progress::Off
            && let Some(line) = crate::server::progress::line(&event)
        {
            self.show_progress(&line);
            return (std::mem::take(&mut self.out), After::Going);
        }
        let after = match event {
            Event::Delta(delta) => {
                if let Some(text) = delta.text.filter(|t| !t.is_empty()) {
                    self.write(&text, true);
                }
                for call in delta.calls {
                    self.call_delta(call);
                }
                After::Going
            }
            Event::ClientCall(call) => {
                self.settle_call(&call);
                After::Going
            }
            Event::ConfirmationAsked { text, confirmation } => {
                self.write(&text, true);
                self.close_open();
                for item in output::approvals(&confirmation) {
                    let at = self.open(item);
                    self.close(at);
                }
                After::Going
            }
            Event::Finished(finished) => After::Finished(Box::new(self.finish(*finished))),
            Event::Failed(error) => {
                self.fail(&ApiError::from(error));
                After::Failed
            }
            _ => After::Going,
        };
        (std::mem::take(&mut self.out), after)
    }

    /// The events made but not yet taken.
    pub fn drain(&mut self) -> Vec<Out> {
        std::mem::take(&mut self.out)
    }

    /// A failure after the start: the stream's last event.
    pub fn fail(&mut self, error: &ApiError) {
        error.log("response stream ended with response.failed");
        let body = error.body();
        let error = json!({"code": body["error"]["code"], "message": body["error"]["message"]});
        let output = self.slots.iter().map(|s| s.item.to_json(s.done)).collect();
        let response = self.shell.object("failed", output, End { error: Some(error), ..End::default() });
        self.emit("response.failed", json!({"response": response}));
    }

    fn emit(&mut self, kind: &'static str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        self.out.push(Out { kind, data });
    }

    fn show_progress(&mut self, line: &str) {
        match self.progress {
            Progress::Off => {}
            Progress::Content => self.write(&format!("_{line}_\n\n"), false),
            Progress::Status | Progress::Reasoning => {
                self.close_text();
                let at = match self.reasoning {
                    Some(at) => at,
                    None => {
                        let at = self.open(Item::Reasoning { id: new_id("rs_"), text: String::new() });
                        self.reasoning = Some(at);
                        at
                    }
                };
                let delta = format!("{line}\n");
                if let Item::Reasoning { text, .. } = &mut self.slots[at].item {
                    text.push_str(&delta);
                }
                let id = self.slots[at].item.id().to_owned();
                self.emit(
                    "response.reasoning_summary_text.delta",
                    json!({"item_id": id, "output_index": at, "summary_index": 0, "delta": delta}),
                );
            }
        }
    }

    /// Text for the message item (opened on first use); `said` when the model said it.
    fn write(&mut self, delta: &str, said: bool) {
        self.close_reasoning();
        let at = match self.text {
            Some(at) => at,
            None => {
                let at =
                    self.open(Item::Message { id: self.shell.item_id("msg_", self.slots.len()), text: String::new() });
                self.text = Some(at);
                at
            }
        };
        if said {
            self.said.push_str(delta);
        }
        if let Item::Message { text, .. } = &mut self.slots[at].item {
            text.push_str(delta);
        }
        let id = self.slots[at].item.id().to_owned();
        self.emit(
            "response.output_text.delta",
            json!({"item_id": id, "output_index": at, "content_index": 0, "delta": delta, "logprobs": []}),
        );
    }

    fn call_delta(&mut self, call: CallDelta) {
        let CallDelta { index, id, name, arguments } = call;
        let open = self.calls.iter().find(|(i, _)| *i == index).map(|&(_, at)| at).filter(|&at| !self.slots[at].done);
        let repeated = open.is_some_and(
            |at| matches!(&self.slots[at].item, Item::FunctionCall { call_id, .. } if Some(call_id) == id.as_ref()),
        );
        // A new id on an index opens a call; an upstream that repeats the id (or
        // sends none) goes on writing the call it opened.
        let at = match (open, id) {
            (Some(at), _) if repeated => at,
            (_, Some(call_id)) if !call_id.is_empty() => {
                self.close_open();
                let item_id = self.shell.item_id("fc_", self.slots.len());
                let item = Item::FunctionCall {
                    id: item_id,
                    call_id,
                    name: name.unwrap_or_default(),
                    arguments: String::new(),
                };
                let at = self.open(item);
                self.calls.retain(|(i, _)| *i != index);
                self.calls.push((index, at));
                at
            }
            (Some(at), _) => at,
            (None, _) => return,
        };
        if let Some(delta) = arguments.filter(|a| !a.is_empty()) {
            if let Item::FunctionCall { arguments, .. } = &mut self.slots[at].item {
                arguments.push_str(&delta);
            }
            let id = self.slots[at].item.id().to_owned();
            self.emit(
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": at, "delta": delta}),
            );
        }
    }

    /// A client call is complete: its item (if it was streamed) takes the call's
    /// final form and closes.
    fn settle_call(&mut self, call: &ToolCall) {
        let at = self
            .slots
            .iter()
            .position(|s| matches!(&s.item, Item::FunctionCall { call_id, .. } if *call_id == call.id));
        if let Some(at) = at.filter(|&at| !self.slots[at].done) {
            if let Item::FunctionCall { name, arguments, .. } = &mut self.slots[at].item {
                name.clone_from(&call.function.name);
                arguments.clone_from(&call.function.arguments);
            }
            self.close(at);
        }
    }

    fn finish(&mut self, finished: Finished) -> Ending {
        // Calls handed out without deltas (none streamed) still become items.
        for call in finished.message.calls() {
            if !self.slots.iter().any(|s| matches!(&s.item, Item::FunctionCall { call_id, .. } if *call_id == call.id))
            {
                self.close_open();
                let item = Item::FunctionCall {
                    id: self.shell.item_id("fc_", self.slots.len()),
                    call_id: call.id.clone(),
                    name: call.function.name.clone(),
                    arguments: call.function.arguments.clone(),
                };
                let at = self.open(item);
                self.close(at);
            }
        }
        self.close_open();
        for at in 0..self.slots.len() {
            if !self.slots[at].done {
                self.close(at);
            }
        }
        let (status, incomplete) = output::outcome(&finished);
        let output = self.slots.iter().map(|s| s.item.to_json(true)).collect();
        let response = self.shell.object(status, output, End { usage: finished.usage, incomplete, error: None });
        let kind = if status == "completed" { "response.completed" } else { "response.incomplete" };
        self.emit(kind, json!({"response": response.clone()}));
        Ending { response, message: self.conversation_turn() }
    }

    /// The assistant's turn as the model said it: its words and the client calls.
    fn conversation_turn(&self) -> Message {
        let calls = self
            .slots
            .iter()
            .filter_map(|s| match &s.item {
                Item::FunctionCall { call_id, name, arguments, .. } => Some(ToolCall {
                    id: call_id.clone(),
                    kind: "function".into(),
                    function: FunctionCall { name: name.clone(), arguments: arguments.clone() },
                    rest: serde_json::Map::new(),
                }),
                _ => None,
            })
            .collect();
        let content = if self.said.is_empty() { Content::None } else { Content::Text(self.said.clone()) };
        Message::assistant(content, calls)
    }

    fn open(&mut self, item: Item) -> usize {
        let at = self.slots.len();
        let data = json!({"output_index": at, "item": item.to_json(false)});
        let id = item.id().to_owned();
        let part = match &item {
            Item::Message { .. } => {
                Some(("response.content_part.added", json!({"content_index": 0, "part": output::text_part("")})))
            }
            Item::Reasoning { .. } => Some((
                "response.reasoning_summary_part.added",
                json!({"summary_index": 0, "part": {"type": "summary_text", "text": ""}}),
            )),
            _ => None,
        };
        self.slots.push(Slot { item, done: false });
        self.emit("response.output_item.added", data);
        if let Some((kind, mut data)) = part {
            data["item_id"] = json!(id);
            data["output_index"] = json!(at);
            self.emit(kind, data);
        }
        at
    }

    fn close(&mut self, at: usize) {
        self.slots[at].done = true;
        let item = self.slots[at].item.clone();
        let id = item.id().to_owned();
        match &item {
            Item::Message { text, .. } => {
                let base = json!({"item_id": id, "output_index": at, "content_index": 0});
                let mut done = base.clone();
                done["text"] = json!(text);
                done["logprobs"] = json!([]);
                self.emit("response.output_text.done", done);
                let mut part = base;
                part["part"] = output::text_part(text);
                self.emit("response.content_part.done", part);
            }
            Item::Reasoning { text, .. } => {
                let base = json!({"item_id": id, "output_index": at, "summary_index": 0});
                let mut done = base.clone();
                done["text"] = json!(text);
                self.emit("response.reasoning_summary_text.done", done);
                let mut part = base;
                part["part"] = json!({"type": "summary_text", "text": text});
                self.emit("response.reasoning_summary_part.done", part);
            }
            Item::FunctionCall { name, arguments, .. } => {
                let data = json!({"item_id": id, "output_index": at, "name": name, "arguments": arguments});
                self.emit("response.function_call_arguments.done", data);
            }
            Item::Approval { .. } => {}
        }
        self.emit("response.output_item.done", json!({"output_index": at, "item": item.to_json(true)}));
    }

    fn close_text(&mut self) {
        if let Some(at) = self.text.take() {
            self.close(at);
        }
    }

    fn close_reasoning(&mut self) {
        if let Some(at) = self.reasoning.take() {
            self.close(at);
        }
    }

    fn close_open(&mut self) {
        self.close_text();
        self.close_reasoning();
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
