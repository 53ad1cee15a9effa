//! A non-streamed upstream answer a transparent relay sends on as it came: its choice
//! and usage read typed (the loop needs the message, the metrics the usage), the rest
//! skipped by the parser, its bytes kept, and the places of `id` and `model` noted so
//! the response's own can be written there.
//!
//! Why: reading the whole answer into the typed tree and writing the tree out again
//! was about a sixth of a relayed non-streaming request's instructions, and a relay
//! changes two values (and adds `object` and `created` where they are missing).

use serde_json::Map;
use serde_json::value::RawValue;

use super::relayed::{Member, Place, splice};
use super::view::CompletionView;
use super::{ChatCompletion, Choice, Usage};

/// What of an upstream answer the loop takes, and the answer kept for the client.
#[derive(Debug)]
pub struct RelayedCompletion {
    pub choice: Choice,
    pub usage: Option<Usage>,
    pub kept: KeptCompletion,
}

/// An upstream answer kept as its own bytes; see the module's comment.
#[derive(Debug)]
pub struct KeptCompletion {
    json: Vec<u8>,
    /// Just after the object's `{` (it has members: `choices` at least).
    open: usize,
    id: Place,
    model: Place,
    object: Place,
    created: Place,
}

impl RelayedCompletion {
    /// Reads `json` if a relay can send it on unchanged but for `id` and `model`: a
    /// valid answer (as a typed read would take it) with one choice, which has a
    /// finish reason and no `tool_calls`. Anything else, invalid JSON included, comes
    /// back to be read typed.
    pub fn read(json: Vec<u8>) -> Result<Self, Vec<u8>> {
        let Some((choice, usage, places)) = Self::parts(&json) else { return Err(json) };
        let [id, model, object, created] = places;
        let open = memchr::memchr(b'{', &json).map_or(0, |at| at + 1);
        Ok(Self { choice, usage, kept: KeptCompletion { json, open, id, model, object, created } })
    }

    fn parts(json: &[u8]) -> Option<(Choice, Option<Usage>, [Place; 4])> {
        let text = std::str::from_utf8(json).ok()?;
        let view: CompletionView<'_> = serde_json::from_str(text).ok()?;
        let place = |raw: Option<&RawValue>| Place::of(text, raw).ok();
        let places = [place(view.id)?, place(view.model)?, present(view.object), present(view.created)];
        let [choice] = <[Choice; 1]>::try_from(view.choices).ok()?;
        // An empty `tool_calls` too: a typed read drops it, and OpenAI refuses it when a
        // client sends the message back.
        let calls = choice.message.tool_calls.is_some();
        (choice.finish_reason.is_some() && !calls).then_some((choice, view.usage, places))
    }
}

/// `object` and `created` are written only where the answer has none.
fn present(there: bool) -> Place {
    if there { Place::Present } else { Place::Absent }
}

impl RelayedCompletion {
    /// The answer typed, without the top-level fields a relay does not read.
    pub fn into_completion(self) -> ChatCompletion {
        let choices = vec![self.choice];
        ChatCompletion { id: String::new(), model: String::new(), choices, usage: self.usage, rest: Map::new() }
    }
}

impl KeptCompletion {
    /// Appends the answer with `id` and `model` (each already a JSON value) in place of
    /// its own, and `created` where it has none.
    pub fn write(&self, id: &str, model: &str, created: i64, out: &mut Vec<u8>) {
        // Formatted only when it is written.
        let created = if self.created == Place::Absent { created.to_string() } else { String::new() };
        let members = [
            Member::replacing("id", &self.id, id),
            Member::replacing("model", &self.model, model),
            Member::default("object", &self.object, "\"chat.completion\""),
            Member::default("created", &self.created, &created),
        ];
        splice(&self.json, self.open, false, members, out);
    }
}

#[cfg(test)]
#[path = "relayed_completion_tests.rs"]
mod tests;
