//! Compaction: every upstream call fits the target's context budget.
//!
//! Pure and synchronous: it sees messages, tool schemas, a budget and a tokenizer,
//! and knows nothing of HTTP, configuration or the upstream. The loop calls it before
//! every round, so it is built to be cheap on a growing history:
//!
//! - counting is lazy: every message first gets an O(1) upper bound from its length
//!   (one BPE token covers at least one byte), and is counted exactly only when the
//!   bounds cannot tell whether the list fits;
//! - a [`Compactor`] kept for the whole loop remembers the counts, so each round
//!   counts only its new messages.
//!
//! *Invariant*: a list the OpenAI API accepts stays one it accepts — instructions
//! stay in place, the latest user message and everything after it stays (tool
//! results there may be shortened), and a tool call and its results are dropped
//! together or not at all.

mod budget;
mod compactor;
mod cost;
mod estimate;
mod ledger;
mod shape;
mod tokens;
mod truncate;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::fmt;

pub use budget::Budget;
pub use compactor::Compactor;
pub use cost::{IMAGE_TOKENS, MESSAGE_OVERHEAD, REPLY_PRIMING};
pub use tokens::Tokenizer;
pub use truncate::{marker, truncate};

use crate::openai::{Message, ToolDef};

/// The knobs of compaction; the agent fills them from configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// How many of the most recent tool results step 1 leaves alone.
    pub keep_recent: usize,
    /// Step 1 cuts older tool results to this many chars (plus the marker).
    pub head_chars: usize,
    /// Step 2 cuts the recent tool results to this many chars (plus the marker).
    pub recent_cap_chars: usize,
    /// The share of the context window a prompt may use (see [`Policy::budget`]).
    pub ratio: f64,
    /// Tokens kept for the reply when the request sets no `max_tokens` /
    /// `max_completion_tokens`.
    pub reply_reserve: usize,
}

impl Default for Policy {
    /// - `keep_recent: 3`: one round's parallel calls, or the last three rounds of
    ///   single calls, are what the model is reasoning about right now;
    /// - `head_chars: 400`: enough to recall what an old result was (a title, the
    ///   first rows, an error) at about 100 tokens each;
    /// - `recent_cap_chars: 8_000`: about 2,000 tokens each, so three recent results
    ///   still fit the budget of a 16k-window model;
    /// - `ratio: 0.75`;
    /// - `reply_reserve: 0`: the quarter of the window the ratio leaves over already
    ///   is the reply's room (and the estimate's margin); a reserve on top would count
    ///   it twice. Requests that set a reply length have it subtracted in full.
    fn default() -> Self {
        Self { keep_recent: 3, head_chars: 400, recent_cap_chars: 8_000, ratio: 0.75, reply_reserve: 0 }
    }
}

impl Policy {
    /// The budget of one upstream call: `context_window × ratio` minus the reply
    /// length the request asks for (`request` is the request's untyped fields, where
    /// `max_tokens` and `max_completion_tokens` live), else minus `reply_reserve`.
    pub fn budget(&self, context_window: usize, request: &serde_json::Map<String, serde_json::Value>) -> Budget {
        Budget::new(context_window, self.ratio, Budget::reply_tokens(request, self.reply_reserve))
    }
}

/// What one compaction did. Token figures are upper bounds: exact where counting
/// was needed to decide, length-based bounds where those already fitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub tokens_before: usize,
    pub tokens_after: usize,
    /// Old tool results cut to `head_chars` (step 1).
    pub truncated: usize,
    /// Recent tool results cut to `recent_cap_chars` (step 2).
    pub capped: usize,
    /// Messages dropped (step 3).
    pub dropped_messages: usize,
}

impl Report {
    /// Nothing was changed: the list already fitted.
    pub fn is_noop(&self) -> bool {
        self.truncated == 0 && self.capped == 0 && self.dropped_messages == 0
    }
}

/// The groups step 3 took out of a list, for a summary to stand in for them
/// (see [`Compactor::compact_keeping`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dropped {
    /// Oldest first, as compacted (old tool results already cut).
    pub messages: Vec<Message>,
}

impl Dropped {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

/// Even the most compacted list does not fit: system messages, the latest user
/// message and what follows it, tool results cut, with the tool schemas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    /// Exact tokens of the most compacted list.
    pub needed: usize,
    pub limit: usize,
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the prompt needs {} tokens after compaction; the budget is {}", self.needed, self.limit)
    }
}

impl std::error::Error for Overflow {}

/// One compaction without memory between calls; see [`Compactor::compact`]. A loop
/// that compacts every round should keep a [`Compactor`] instead.
pub fn compact(
    messages: &mut Vec<Message>,
    tools: &[ToolDef],
    budget: Budget,
    tokenizer: Tokenizer,
    policy: &Policy,
) -> Result<Report, Overflow> {
    Compactor::new(policy.clone()).compact(messages, tools, budget, tokenizer)
}

/// The exact prompt tokens of `messages` sent with `tools`: every message with its
/// framing, the tool schemas, and the reply priming.
pub fn count(messages: &[Message], tools: &[ToolDef], tokenizer: Tokenizer) -> usize {
    REPLY_PRIMING
        + cost::tools(tokenizer, cost::Mode::Exact, tools)
        + messages.iter().map(|m| cost::message(tokenizer, cost::Mode::Exact, m)).sum::<usize>()
}
