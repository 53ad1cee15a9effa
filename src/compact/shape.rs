//! The structure compaction must respect: which messages are tool results, which are
//! protected, and which groups of messages can only be dropped together.

use std::ops::Range;

use crate::openai::{Message, Role};

/// A tool result (legacy `function` results included).
pub fn is_result(message: &Message) -> bool {
    matches!(message.role, Role::Tool | Role::Function)
}

/// Instructions are never dropped, wherever they stand.
pub fn is_instruction(message: &Message) -> bool {
    matches!(message.role, Role::System | Role::Developer)
}

fn calls_tools(message: &Message) -> bool {
    message.role == Role::Assistant && message.tool_calls.as_ref().is_some_and(|calls| !calls.is_empty())
}

/// The parts of a message list compaction works on, computed once per compaction.
#[derive(Debug)]
pub struct Shape {
    /// Tool results older than the most recent `keep_recent` (step 1).
    pub old_results: Vec<usize>,
    /// The most recent `keep_recent` tool results (step 2).
    pub recent_results: Vec<usize>,
    /// Droppable groups, oldest first (step 3). Instructions inside a group's range
    /// are not part of it.
    pub units: Vec<Range<usize>>,
}

impl Shape {
    pub fn of(messages: &[Message], keep_recent: usize) -> Self {
        let mut old_results: Vec<usize> = (0..messages.len()).filter(|&i| is_result(&messages[i])).collect();
        let recent_results = old_results.split_off(old_results.len().saturating_sub(keep_recent));
        Self { old_results, recent_results, units: units(messages) }
    }
}

/// The droppable groups before the latest user message, which (with everything after
/// it: the current loop's rounds) is protected. Without a user message nothing is
/// droppable: there is no way to tell the current request from history.
///
/// An assistant message with tool calls forms one group with the tool results that
/// follow it, so a drop never leaves a result without its call or a call without its
/// results. Any other message is a group of its own, except a stray tool result,
/// which joins the group before it so that it never becomes the first message.
fn units(messages: &[Message]) -> Vec<Range<usize>> {
    let end = messages.iter().rposition(|m| m.role == Role::User).unwrap_or(0);
    let mut units: Vec<Range<usize>> = Vec::new();
    let mut i = 0;
    while i < end {
        let message = &messages[i];
        if is_instruction(message) {
            i += 1;
        } else if calls_tools(message) {
            let results = messages[i + 1..end].iter().take_while(|m| is_result(m)).count();
            units.push(i..i + 1 + results);
            i += 1 + results;
        } else if is_result(message)
            && let Some(previous) = units.last_mut()
        {
            previous.end = i + 1;
            i += 1;
        } else {
            units.push(i..i + 1);
            i += 1;
        }
    }
    units
}

/// Why a message list is not one the OpenAI API accepts, if it is not.
#[cfg(test)]
pub fn invalid(messages: &[Message]) -> Option<String> {
    let mut open: Vec<&str> = Vec::new();
    let mut after_calls = false;
    for (i, message) in messages.iter().enumerate() {
        if is_result(message) {
            let id = message.tool_call_id.as_deref().unwrap_or_default();
            if !after_calls {
                return Some(format!("message {i}: a tool result that follows no tool call"));
            }
            let Some(at) = open.iter().position(|open| *open == id) else {
                return Some(format!("message {i}: tool result {id:?} answers no open call"));
            };
            open.swap_remove(at);
            continue;
        }
        if !open.is_empty() {
            return Some(format!("message {i}: calls {open:?} have no result"));
        }
        after_calls = calls_tools(message);
        open = message.tool_calls.iter().flatten().map(|call| call.id.as_str()).collect();
    }
    (!open.is_empty()).then(|| format!("calls {open:?} have no result"))
}
