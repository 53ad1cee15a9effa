//! What the loop says while it works: a closed vocabulary of protocol-neutral events.
//! Each wire protocol is a face that renders them (Chat Completions JSON and SSE
//! today); progress for chat UIs is one more rendering of the same events.
//!
//! Order: zero or more progress events (`RoundStarted`, `Compacted`, `Fallback`),
//! then `Started` or `Failed`; after `Started`, anything, ending with exactly one
//! `Finished` or `Failed`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::Error;
use crate::openai::{ChatChunk, FinishReason, FunctionCall, KeptCompletion, Message, RelayedChunk, ToolCall, Usage};
pub use crate::telemetry::ToolOutcome;

#[derive(Debug)]
pub enum Event {
    /// The response can start: the first upstream call answered (naming its target
    /// and how many attempts it took), or the loop needs no upstream to begin.
    Started {
        target: Option<Arc<str>>,
        attempts: u32,
    },
    /// Output for the client, as it arrives.
    Delta(Delta),
    /// A client tool call, complete (its deltas went out before).
    ClientCall(ToolCall),
    /// An upstream call begins (1-based; rounds of a resumed loop go on counting).
    RoundStarted {
        round: u32,
    },
    /// The round's upstream answer is in: how many calls lariat runs or holds.
    RoundFinished {
        round: u32,
        server_calls: usize,
    },
    ToolStarted {
        id: String,
        name: String,
        arguments: String,
    },
    ToolFinished {
        id: String,
        name: String,
        outcome: ToolOutcome,
        duration: Duration,
    },
    /// A tool call read `url` (`fetch_url`), between its `ToolStarted` and
    /// `ToolFinished`: chat UIs list it among the answer's sources. `excerpt` is the
    /// start of what was read, already redacted like every tool result.
    SourceRead {
        name: String,
        url: String,
        excerpt: String,
    },
    /// The chain moved on from a failing target.
    Fallback {
        from: Arc<str>,
        to: Arc<str>,
    },
    /// The loop is done gathering: the answer model `to` writes the reply.
    HandedOver {
        to: String,
    },
    /// The conversation was compacted to fit `target`.
    Compacted {
        target: Arc<str>,
        tokens_before: usize,
        tokens_after: usize,
        dropped_messages: usize,
    },
    /// A held call waits for the human: `text` is what the client shows after the
    /// model's words (the footer with the marker).
    ConfirmationAsked {
        text: String,
        confirmation: Confirmation,
    },
    /// The client's own tools must run: the round is stored, the calls handed out.
    Suspended {
        calls: Vec<ToolCall>,
    },
    Finished(Box<Finished>),
    /// The loop failed; after `Started` the client sees an error in the stream.
    Failed(Error),
}

/// A piece of the answer. Streams only: a non-streaming client gets `Finished`.
#[derive(Debug, Default)]
pub struct Delta {
    /// The upstream opened the assistant's message here (a face sends the role once).
    pub role: bool,
    pub text: Option<String>,
    /// Client tool calls as they stream, under lariat's indices and ids.
    pub calls: Vec<CallDelta>,
    /// Without server tools the upstream's finish reason is relayed as it came.
    pub finish: Option<FinishReason>,
    /// What the upstream's chunk carried besides, for a Chat Completions face to
    /// relay as is (`created`, `system_fingerprint`, `logprobs`, other choices…).
    pub remains: Option<Remains>,
}

#[derive(Debug)]
pub enum Remains {
    /// The typed chunk, the fields above taken out of it.
    Typed(Box<ChatChunk>),
    /// The whole chunk as its bytes (a transparent relay): the fields above are in
    /// it too, as they came.
    Relayed(Box<RelayedChunk>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallDelta {
    pub index: u32,
    /// Set on a call's first delta.
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: Option<String>,
}

/// A question at the confirmation gate, as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    pub id: String,
    /// The held calls, as the model asked for them.
    pub held: Vec<FunctionCall>,
    /// Unix seconds.
    pub expires_at: i64,
}

impl Confirmation {
    /// `{"id", "tools", "expires_at"}`.
    pub fn to_json(&self) -> Value {
        let tools: Vec<&str> = self.held.iter().map(|c| c.name.as_str()).collect();
        serde_json::json!({"id": self.id, "tools": tools, "expires_at": self.expires_at})
    }
}

/// The end of a loop: the answer as a non-streaming client gets it.
#[derive(Debug)]
pub struct Finished {
    pub message: Message,
    pub finish_reason: FinishReason,
    /// Every round's usage, summed.
    pub usage: Option<Usage>,
    /// Rounds in which lariat ran (or held) server tools.
    pub rounds: u32,
    pub ended_by: Ending,
    pub confirmation: Option<Confirmation>,
    /// The answer model's target that wrote the reply (with `answer_with`).
    pub answered_by: Option<Arc<str>>,
    /// Top-level and choice-level fields of the last non-streamed upstream answer,
    /// relayed as they came.
    pub completion_rest: Map<String, Value>,
    pub choice_rest: Map<String, Value>,
    /// The upstream's answer as it came, when it is the whole answer and a relay's
    /// (no tool ran): a Chat Completions face sends it on instead of `message`.
    pub kept: Option<Box<KeptCompletion>>,
}

/// Why the loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The model answered.
    Answer,
    /// The round limit was reached and the model answered without tools.
    RoundLimit,
    /// The client's tools must run.
    ClientTools,
    /// A call waits for the human.
    Confirmation,
    /// lariat answered itself (an approval that expired or was already used).
    Notice,
}

impl Finished {
    /// An answer that called nothing.
    pub fn plain(message: Message) -> Self {
        Self {
            message,
            finish_reason: FinishReason::Stop,
            usage: None,
            rounds: 0,
            ended_by: Ending::Notice,
            confirmation: None,
            answered_by: None,
            completion_rest: Map::new(),
            choice_rest: Map::new(),
            kept: None,
        }
    }
}
