//! What one message and the tool schemas cost in prompt tokens: the text a model
//! sees plus the framing the chat format wraps around it.
//!
//! The overheads follow OpenAI's published counting recipe (3 tokens to frame each
//! message, 1 more for a `name`, 3 to prime the reply) and round up where OpenAI
//! documents nothing (tool calls, tool schemas), because an overcount costs some
//! context while an undercount costs a failed upstream call.

use serde::Serialize;
use serde_json::Value;

use super::tokens::Tokenizer;
use crate::openai::{Content, Message, ToolDef};

/// Framing of every message (`<|start|>`, separator, `<|end|>`) plus the role, which
/// is one token for every role name.
pub const MESSAGE_OVERHEAD: usize = 4;
/// A message's `name` field costs its text plus one.
pub const NAME_OVERHEAD: usize = 1;
/// Every reply is primed with `<|start|>assistant<|message|>`.
pub const REPLY_PRIMING: usize = 3;
/// Per tool call, on top of its id, name and arguments: the call's framing.
pub const TOOL_CALL_OVERHEAD: usize = 6;
/// Per tool schema, on top of its JSON: the framing of one function definition.
pub const TOOL_OVERHEAD: usize = 8;
/// Once per request that sends tools: the namespace the definitions are wrapped in.
pub const TOOLS_OVERHEAD: usize = 12;
/// A fixed allowance per image part. The largest gpt-4o high-detail image costs
/// 85 + 8 × 170 = 1,445 tokens; low-detail ones cost 85. Counting every image at
/// the high end keeps the estimate an overestimate without decoding the image.
pub const IMAGE_TOKENS: usize = 1_500;

/// Count exactly, or only bound from above by length (O(1) per string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bound,
    Exact,
}

/// Tokens of one message: framing, content, tool calls, tool call id, and any other
/// field the message carries (`name`, vendor fields), since all of it is sent.
pub fn message(tokenizer: Tokenizer, mode: Mode, message: &Message) -> usize {
    let text = |s: &str| text(tokenizer, mode, s);
    let mut tokens = MESSAGE_OVERHEAD + content(tokenizer, mode, &message.content);
    for call in message.tool_calls.iter().flatten() {
        tokens += TOOL_CALL_OVERHEAD + text(&call.id) + text(&call.function.name) + text(&call.function.arguments);
    }
    if let Some(id) = &message.tool_call_id {
        tokens += text(id);
    }
    for (key, value) in &message.rest {
        tokens += match value {
            Value::String(s) if key == "name" => NAME_OVERHEAD + text(s),
            Value::String(s) => text(s),
            Value::Null => 0,
            other => json(tokenizer, mode, other),
        };
    }
    tokens
}

/// Tokens of the tool schemas sent with the request (zero when none are sent).
pub fn tools<'t>(tokenizer: Tokenizer, mode: Mode, tools: impl IntoIterator<Item = &'t ToolDef>) -> usize {
    let mut tokens = 0;
    let mut any = false;
    for tool in tools {
        any = true;
        tokens += TOOL_OVERHEAD + json(tokenizer, mode, &tool.function);
    }
    if any { tokens + TOOLS_OVERHEAD } else { 0 }
}

/// A message's content: a string, an array of parts, or null.
fn content(tokenizer: Tokenizer, mode: Mode, content: &Content) -> usize {
    match content {
        Content::None => 0,
        Content::Text(s) => text(tokenizer, mode, s),
        Content::Parts(parts) => parts.iter().map(|part| self::part(tokenizer, mode, part)).sum(),
    }
}

/// One content part: text (and refusal) parts by their text, images by the fixed
/// allowance, anything else (audio, files) by its JSON, which overcounts base64
/// payloads heavily but never undercounts them.
fn part(tokenizer: Tokenizer, mode: Mode, part: &Value) -> usize {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
    match (kind, part.get(kind)) {
        ("text" | "refusal", Some(Value::String(s))) => text(tokenizer, mode, s),
        ("image_url" | "input_image", _) => IMAGE_TOKENS,
        _ => json(tokenizer, mode, part),
    }
}

fn text(tokenizer: Tokenizer, mode: Mode, text: &str) -> usize {
    match mode {
        Mode::Bound => tokenizer.bound(text),
        Mode::Exact => tokenizer.count(text),
    }
}

/// Serializing a `Value` or a derived struct cannot fail; an empty string (zero
/// tokens) would be the harmless answer if it ever did.
fn json(tokenizer: Tokenizer, mode: Mode, value: &impl Serialize) -> usize {
    text(tokenizer, mode, &serde_json::to_string(value).unwrap_or_default())
}
