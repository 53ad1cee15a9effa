//! Token counts of a message list remembered across rounds, so that each round
//! counts only what is new.
//!
//! Each entry sits at its message's index and carries a fingerprint of that message.
//! An entry whose fingerprint no longer matches is recounted, so a caller that edits,
//! inserts or removes messages gets correct counts (only slower), never stale ones.
//! The fingerprint hashes every field but samples long strings (length, first and
//! last 32 bytes), which keeps a 1,000-message check in the tens of microseconds;
//! an in-place edit in the middle of a long string that keeps its length would go
//! unnoticed, and neither the loop nor compaction makes one.

use std::hash::{Hash, Hasher};

use serde_json::Value;

use super::cost::{self, Mode};
use super::tokens::Tokenizer;
use crate::openai::{Content, Message, ToolDef};

/// The counts of one message (or of the tool schemas).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    print: u64,
    /// An upper bound from lengths alone.
    pub bound: usize,
    /// The exact count, once something needed it.
    pub exact: Option<usize>,
}

impl Entry {
    /// The best upper bound known.
    pub fn known(&self) -> usize {
        self.exact.unwrap_or(self.bound)
    }
}

#[derive(Debug, Default, Clone)]
pub struct Ledger {
    tokenizer: Option<Tokenizer>,
    pub messages: Vec<Entry>,
    pub tools: Option<Entry>,
}

impl Ledger {
    /// Brings the entries in line with `messages` and `tools` for `tokenizer`:
    /// unchanged messages keep their counts, changed and new ones get a bound.
    pub fn sync<'t>(
        &mut self,
        tokenizer: Tokenizer,
        messages: &[Message],
        tools: impl IntoIterator<Item = &'t ToolDef, IntoIter: Clone>,
    ) {
        if self.tokenizer != Some(tokenizer) {
            *self = Self { tokenizer: Some(tokenizer), ..Self::default() };
        }
        self.messages.truncate(messages.len());
        for (i, message) in messages.iter().enumerate() {
            let print = message_print(message);
            match self.messages.get_mut(i) {
                Some(entry) if entry.print == print => {}
                Some(entry) => *entry = fresh(print, cost::message(tokenizer, Mode::Bound, message)),
                None => self.messages.push(fresh(print, cost::message(tokenizer, Mode::Bound, message))),
            }
        }
        let tools = tools.into_iter();
        let print = tools_print(tools.clone());
        if self.tools.is_none_or(|entry| entry.print != print) {
            self.tools = Some(fresh(print, cost::tools(tokenizer, Mode::Bound, tools)));
        }
    }

    /// Makes room for a message inserted at `i`, so the entries after it keep their counts.
    pub fn insert(&mut self, i: usize, message: &Message) {
        if let Some(tokenizer) = self.tokenizer
            && i <= self.messages.len()
        {
            self.messages.insert(i, fresh(message_print(message), cost::message(tokenizer, Mode::Bound, message)));
        }
    }

    /// Recounts the bound of message `i` after compaction changed it.
    pub fn changed(&mut self, i: usize, message: &Message, tokenizer: Tokenizer) {
        if let Some(entry) = self.messages.get_mut(i) {
            *entry = fresh(message_print(message), cost::message(tokenizer, Mode::Bound, message));
        }
    }
}

fn fresh(print: u64, bound: usize) -> Entry {
    Entry { print, bound, exact: None }
}

fn message_print(message: &Message) -> u64 {
    let mut h = Fx::default();
    (message.role as u8).hash(&mut h);
    match &message.content {
        Content::None => 0u8.hash(&mut h),
        Content::Text(text) => {
            3u8.hash(&mut h);
            sample(&mut h, text);
        }
        Content::Parts(parts) => {
            (4u8, parts.len()).hash(&mut h);
            parts.iter().for_each(|part| value(&mut h, part));
        }
    }
    for call in message.tool_calls.iter().flatten() {
        sample(&mut h, &call.id);
        sample(&mut h, &call.function.name);
        sample(&mut h, &call.function.arguments);
    }
    message.tool_calls.as_ref().map(Vec::len).hash(&mut h);
    message.tool_call_id.as_deref().map(|id| sample(&mut h, id)).hash(&mut h);
    for (key, v) in &message.rest {
        sample(&mut h, key);
        value(&mut h, v);
    }
    h.finish()
}

fn tools_print<'t>(tools: impl Iterator<Item = &'t ToolDef>) -> u64 {
    let mut h = Fx::default();
    for tool in tools {
        sample(&mut h, &tool.function.name);
        tool.function.description.as_deref().map(|d| sample(&mut h, d)).hash(&mut h);
        tool.function.parameters.as_ref().map(|p| value(&mut h, p)).hash(&mut h);
        for (key, v) in &tool.function.rest {
            sample(&mut h, key);
            value(&mut h, v);
        }
    }
    h.finish()
}

fn value(h: &mut Fx, v: &Value) {
    match v {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => (1u8, b).hash(h),
        Value::Number(n) => (2u8, n.as_f64().map(f64::to_bits)).hash(h),
        Value::String(s) => {
            3u8.hash(h);
            sample(h, s);
        }
        Value::Array(items) => {
            (4u8, items.len()).hash(h);
            items.iter().for_each(|item| value(h, item));
        }
        Value::Object(map) => {
            (5u8, map.len()).hash(h);
            for (key, item) in map {
                sample(h, key);
                value(h, item);
            }
        }
    }
}

/// Strings up to 64 bytes whole; longer ones by length, head and tail.
fn sample(h: &mut Fx, s: &str) {
    const EDGE: usize = 32;
    let bytes = s.as_bytes();
    bytes.len().hash(h);
    if bytes.len() <= 2 * EDGE {
        h.write(bytes);
    } else {
        h.write(&bytes[..EDGE]);
        h.write(&bytes[bytes.len() - EDGE..]);
    }
}

/// A small multiply-rotate hasher (the rustc "Fx" scheme): the fingerprints only
/// need to tell a message from its own earlier versions, and SipHash would cost
/// several times as much per round.
#[derive(Default)]
struct Fx(u64);

impl Fx {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.add(u64::from_le_bytes(tail));
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
