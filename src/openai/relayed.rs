//! An upstream chunk a transparent relay sends on as it came: read only as far as
//! lariat acts on it (choice 0's role, text, tool calls and finish reason, the
//! usage, an error), its bytes kept, and the places of `id` and `model` noted so the
//! response's own can be written there.
//!
//! Why: reading every chunk into the typed tree and writing the tree out again was
//! about 60% of a relayed stream's instructions, and a relay changes two values.
//! What is not read is skipped by the parser, not built.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::tolerant::Key;
use super::{ChatChunk, FinishReason, ToolCallDelta, Usage};

/// How the chunks of a streamed answer are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reading {
    /// Each into the typed tree: the loop rewrites what the client sees.
    #[default]
    Typed,
    /// As a [`RelayedChunk`]: the client gets the upstream's chunks as they are.
    Relayed,
}

/// One chunk of an upstream stream, read as the round asked.
#[derive(Debug)]
pub enum StreamChunk {
    Typed(ChatChunk),
    Relayed(Box<RelayedChunk>),
}

impl StreamChunk {
    /// Reads one event's JSON. A relayed chunk whose choices carry usage too is read
    /// typed anyway: the usage must come out of it (lariat sends usage last, summed).
    /// Borrowed JSON is copied only when it is kept.
    pub fn read(json: Cow<'_, str>, reading: Reading) -> Result<Self, serde_json::Error> {
        if reading == Reading::Typed {
            return serde_json::from_str(&json).map(Self::Typed);
        }
        let relayed = RelayedChunk::read(json.into_owned())?;
        if relayed.usage.is_some() && relayed.choices > 0 {
            return serde_json::from_str(&relayed.json).map(Self::Typed);
        }
        Ok(Self::Relayed(Box::new(relayed)))
    }

    /// An `error` field: the upstream reports a failure in the stream.
    pub fn error(&self) -> Option<&Value> {
        match self {
            Self::Typed(chunk) => chunk.rest.get("error"),
            Self::Relayed(chunk) => chunk.error.as_ref(),
        }
        .filter(|e| !e.is_null())
    }

    /// Whether any choice carries a finish reason (the answer is complete).
    pub fn finishes(&self) -> bool {
        match self {
            Self::Typed(chunk) => chunk.choices.iter().any(|c| c.finish_reason.is_some()),
            Self::Relayed(chunk) => chunk.finished,
        }
    }
}

/// Choice 0 of a relayed chunk, as the loop reads it.
#[derive(Debug, Default, Deserialize)]
pub struct ChoiceView {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    pub delta: DeltaView,
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
}

#[derive(Debug, Default, Deserialize)]
pub struct DeltaView {
    #[serde(default)]
    role: Option<IgnoredAny>,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

impl DeltaView {
    /// The delta names a role (the message starts here).
    pub fn has_role(&self) -> bool {
        self.role.is_some()
    }
}

/// Where one of the two rewritten fields is in the chunk's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// The value's bytes.
    Value(Range<usize>),
    /// Not in the chunk: written first thing in the object.
    Absent,
}

/// An upstream chunk kept as its own bytes; see the module's comment.
#[derive(Debug)]
pub struct RelayedChunk {
    /// The event's JSON, on one line.
    json: String,
    /// Just after the object's `{`.
    open: usize,
    /// The object has no member (an absent field written in needs no comma after it).
    empty: bool,
    id: Place,
    model: Place,
    /// Choice 0 (the first choice with index 0), if the chunk has one.
    pub choice: Option<ChoiceView>,
    /// How many choices the chunk has.
    pub choices: usize,
    /// Some choice carries a finish reason.
    pub finished: bool,
    pub usage: Option<Usage>,
    pub error: Option<Value>,
}

impl RelayedChunk {
    /// Reads `json`, which must be one JSON object. Line breaks in it can only be
    /// whitespace between tokens (a JSON string cannot hold one raw), so they become
    /// spaces: the chunk goes out as a single `data:` line.
    pub fn read(mut json: String) -> Result<Self, serde_json::Error> {
        if memchr::memchr2(b'\n', b'\r', json.as_bytes()).is_some() {
            json = json.replace(['\n', '\r'], " ");
        }
        let view: View<'_> = serde_json::from_str(&json)?;
        let place = |raw: Option<&RawValue>| match raw {
            Some(raw) => Place::Value(span_in(&json, raw.get())),
            None => Place::Absent,
        };
        let (id, model) = (place(view.id), place(view.model));
        let open = json.find('{').map_or(0, |at| at + 1);
        let Choices { first, count, finished } = view.choices;
        Ok(Self {
            open,
            empty: view.members == 0,
            id,
            model,
            choice: first,
            choices: count,
            finished,
            usage: view.usage,
            error: view.error,
            json,
        })
    }

    /// Appends the chunk with `id` and `model` (each already a JSON value) in place
    /// of its own.
    pub fn write(&self, id: &str, model: &str, out: &mut Vec<u8>) {
        let json = self.json.as_bytes();
        out.reserve(json.len() + id.len() + model.len() + 20);
        out.extend_from_slice(&json[..self.open]);
        let mut absent = [("id", &self.id, id), ("model", &self.model, model)]
            .into_iter()
            .filter(|(_, place, _)| **place == Place::Absent)
            .peekable();
        while let Some((name, _, value)) = absent.next() {
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            out.extend_from_slice(value.as_bytes());
            if absent.peek().is_some() || !self.empty {
                out.push(b',');
            }
        }
        let mut present: [Option<(&Range<usize>, &str)>; 2] =
            [(&self.id, id), (&self.model, model)].map(|(place, value)| match place {
                Place::Value(range) => Some((range, value)),
                Place::Absent => None,
            });
        present.sort_by_key(|p| p.map(|(range, _)| range.start));
        let mut cursor = self.open;
        for (range, value) in present.into_iter().flatten() {
            out.extend_from_slice(&json[cursor..range.start]);
            out.extend_from_slice(value.as_bytes());
            cursor = range.end;
        }
        out.extend_from_slice(&json[cursor..]);
    }
}

/// Where `part`, a slice of `whole`, lies in it.
fn span_in(whole: &str, part: &str) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    debug_assert!(whole.get(start..start + part.len()).is_some_and(|s| std::ptr::eq(s, part)));
    start..start + part.len()
}

/// The top level of a chunk, read by hand (not derived) so that it must be an object
/// and `id` and `model` are borrowed as raw JSON, whatever their type.
struct View<'a> {
    members: usize,
    id: Option<&'a RawValue>,
    model: Option<&'a RawValue>,
    choices: Choices,
    usage: Option<Usage>,
    error: Option<Value>,
}

impl<'de> Deserialize<'de> for View<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ViewVisitor)
    }
}

struct ViewVisitor;

impl<'de> Visitor<'de> for ViewVisitor {
    type Value = View<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct ChatChunk")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<View<'de>, A::Error> {
        fn once<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
            slot: &mut Option<T>,
            name: &'static str,
            map: &mut A,
        ) -> Result<(), A::Error> {
            if slot.is_some() {
                return Err(de::Error::duplicate_field(name));
            }
            *slot = Some(map.next_value()?);
            Ok(())
        }
        let (mut id, mut model, mut choices, mut usage, mut error) = (None, None, None, None, None);
        let mut members = 0;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            members += 1;
            match key.as_str() {
                "id" => once(&mut id, "id", &mut map)?,
                "model" => once(&mut model, "model", &mut map)?,
                "choices" => once(&mut choices, "choices", &mut map)?,
                "usage" => once::<Option<Usage>, _>(&mut usage, "usage", &mut map)?,
                "error" => once(&mut error, "error", &mut map)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(View { members, id, model, choices: choices.unwrap_or_default(), usage: usage.flatten(), error })
    }
}

/// `choices`, of which only choice 0 is kept.
#[derive(Debug, Default)]
struct Choices {
    first: Option<ChoiceView>,
    count: usize,
    finished: bool,
}

impl<'de> Deserialize<'de> for Choices {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ChoicesVisitor;
        impl<'de> Visitor<'de> for ChoicesVisitor {
            type Value = Choices;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Choices, A::Error> {
                let mut choices = Choices::default();
                while let Some(choice) = seq.next_element::<ChoiceView>()? {
                    choices.count += 1;
                    choices.finished |= choice.finish_reason.is_some();
                    if choice.index == 0 && choices.first.is_none() {
                        choices.first = Some(choice);
                    }
                }
                Ok(choices)
            }
        }
        deserializer.deserialize_seq(ChoicesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn relayed(json: &str) -> RelayedChunk {
        RelayedChunk::read(json.to_owned()).unwrap()
    }

    fn written(chunk: &RelayedChunk) -> String {
        let mut out = Vec::new();
        chunk.write("\"chatcmpl-1\"", "\"virtual\"", &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn id_and_model_are_replaced_and_every_other_byte_kept() {
        let json = r#"{"model":"up-model", "system_fingerprint":"fp","id":"up-1","choices":[{"index":0,"delta":{"content":"hi \"there\""},"logprobs":null,"finish_reason":null}],"created":7}"#;
        let chunk = relayed(json);
        let expected = json.replace(r#""up-model""#, r#""virtual""#).replace(r#""up-1""#, r#""chatcmpl-1""#);
        assert_eq!(written(&chunk), expected);
        let choice = chunk.choice.as_ref().unwrap();
        assert_eq!(choice.delta.content.as_deref(), Some("hi \"there\""));
        assert!(!choice.delta.has_role() && choice.finish_reason.is_none() && !chunk.finished);
    }

    #[test]
    fn absent_fields_are_written_first_and_null_ones_replaced() {
        let chunk = relayed(r#" {"choices":[{"delta":{"role":"assistant"}}]}"#);
        assert_eq!(
            written(&chunk),
            r#" {"id":"chatcmpl-1","model":"virtual","choices":[{"delta":{"role":"assistant"}}]}"#
        );
        assert!(chunk.choice.unwrap().delta.has_role(), "index defaults to 0");
        let chunk = relayed(r#"{"id":null,"choices":[]}"#);
        assert_eq!(written(&chunk), r#"{"model":"virtual","id":"chatcmpl-1","choices":[]}"#);
        assert_eq!(written(&relayed("{}")), r#"{"id":"chatcmpl-1","model":"virtual"}"#);
    }

    #[test]
    fn line_breaks_become_spaces() {
        let chunk = relayed("{\"id\":\"a\",\r\n\"choices\":[\n{\"delta\":{\"content\":\"x\\ny\"}}]}");
        let out = written(&chunk);
        assert!(!out.contains(['\n', '\r']), "{out}");
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["choices"][0]["delta"]["content"], "x\ny");
    }

    #[test]
    fn only_choice_zero_is_read_and_finishing_is_any_choice() {
        let chunk = relayed(
            r#"{"choices":[{"index":1,"delta":{"content":"other"},"finish_reason":"length"},
            {"index":0,"delta":{"content":"mine","tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":"{}"}}]}}],
            "usage":null}"#,
        );
        assert_eq!((chunk.choices, chunk.finished), (2, true));
        let choice = chunk.choice.unwrap();
        assert_eq!(choice.delta.content.as_deref(), Some("mine"));
        assert_eq!(choice.delta.tool_calls.unwrap()[0].id.as_deref(), Some("c"));
        assert!(chunk.usage.is_none());
    }

    #[test]
    fn what_is_not_a_chunk_is_refused() {
        for bad in ["[1]", "\"text\"", r#"{"id":"a","id":"b"}"#, r#"{"choices":{}}"#, "{\"choices\":[]"] {
            assert!(RelayedChunk::read(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn usage_beside_choices_is_read_typed_and_errors_are_found() {
        let both = r#"{"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
        assert!(matches!(StreamChunk::read(both.into(), Reading::Relayed).unwrap(), StreamChunk::Typed(_)));
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
        let StreamChunk::Relayed(chunk) = StreamChunk::read(usage.into(), Reading::Relayed).unwrap() else {
            panic!("a usage chunk without choices is relayed")
        };
        assert_eq!(chunk.usage.as_ref().unwrap().total_tokens, 3);
        for reading in [Reading::Typed, Reading::Relayed] {
            let error = StreamChunk::read(r#"{"error":{"message":"boom"}}"#.into(), reading).unwrap();
            assert_eq!(error.error(), Some(&json!({"message": "boom"})));
            assert!(StreamChunk::read(r#"{"error":null,"choices":[]}"#.into(), reading).unwrap().error().is_none());
        }
    }
}
