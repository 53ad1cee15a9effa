//! An upstream chunk a transparent relay sends on as it came: read only as far as
//! lariat acts on it (choice 0's role, text, tool calls and finish reason, the
//! usage, an error), its bytes kept, and the places of `id` and `model` noted so the
//! response's own can be written there.
//!
//! Why: reading every chunk into the typed tree and writing the tree out again was
//! about 60% of a relayed stream's instructions, and a relay changes two values.
//! What is not read is skipped by the parser, not built.

use std::borrow::Cow;
use std::ops::Range;

use serde_json::Value;
use serde_json::value::RawValue;

use super::view::{ChoiceView, Choices, View, span_in};
use super::{ChatChunk, Usage};

/// How an upstream answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Into the typed tree: the loop rewrites what the client sees.
    Typed,
    /// Kept as it came, for a client that gets the upstream's answer as it is: each
    /// chunk of a stream as a [`RelayedChunk`], a whole answer as a
    /// [`RelayedCompletion`](super::RelayedCompletion) (each read typed when more
    /// than its `id` and `model` must change).
    Relayed,
}

/// One chunk of an upstream stream, read as the round asked.
#[derive(Debug)]
pub enum StreamChunk {
    Typed(ChatChunk),
    Relayed(Box<RelayedChunk>),
}

impl StreamChunk {
    /// Reads one event's JSON. Two kinds of chunk are read typed even for a relay,
    /// because lariat must change more than their `id` and `model`: usage beside
    /// choices (lariat sends usage last, summed) and tool calls (a call's first delta
    /// gets the `type` some upstreams leave out and some clients require). Borrowed
    /// JSON is copied only when it is kept.
    pub fn read(json: Cow<'_, str>, reading: Reading) -> Result<Self, serde_json::Error> {
        if reading == Reading::Typed {
            return Ok(Self::Typed(serde_json::from_str(&json)?));
        }
        let relayed = RelayedChunk::read(json.into_owned())?;
        let calls = relayed.choice.as_ref().is_some_and(|c| c.delta.tool_calls.is_some());
        if calls || (relayed.usage.is_some() && relayed.choices > 0) {
            return Ok(Self::Typed(relayed.typed()?));
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

/// Where a member lariat writes is in a kept object's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Place {
    /// The value's bytes.
    Value(Range<usize>),
    /// In the object, where is not noted: for a member written by default, whose
    /// value the object's own stays.
    Present,
    /// Not in the object: written first thing in it.
    Absent,
}

impl Place {
    /// Where `raw`, borrowed from `whole` by its parser, lies in it.
    pub(super) fn of(whole: &str, raw: Option<&RawValue>) -> Result<Self, serde_json::Error> {
        match raw {
            Some(raw) => span_in(whole, raw.get())
                .map(Place::Value)
                .ok_or_else(|| <serde_json::Error as serde::de::Error>::custom("a raw value outside its object")),
            None => Ok(Place::Absent),
        }
    }
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
    /// Reads `json`, which must be one JSON object. Once it is known to be valid, a
    /// line break in it can only be whitespace between tokens, so line breaks become
    /// spaces (byte for byte: the places found stay right) and the chunk goes out as
    /// a single `data:` line.
    pub fn read(mut json: String) -> Result<Self, serde_json::Error> {
        let view: View<'_> = serde_json::from_str(&json)?;
        let (id, model) = (Place::of(&json, view.id)?, Place::of(&json, view.model)?);
        let open = memchr::memchr(b'{', json.as_bytes()).map_or(0, |at| at + 1);
        let Choices { first, count, finished } = view.choices;
        let (empty, usage, error) = (view.members == 0, view.usage, view.error);
        if memchr::memchr2(b'\n', b'\r', json.as_bytes()).is_some() {
            json = json.replace(['\n', '\r'], " ");
        }
        Ok(Self { json, open, empty, id, model, choice: first, choices: count, finished, usage, error })
    }

    /// The chunk read typed, for when more of it than `id` and `model` must change.
    pub fn typed(&self) -> Result<ChatChunk, serde_json::Error> {
        serde_json::from_str(&self.json)
    }

    /// Appends the chunk with `id` and `model` (each already a JSON value) in place
    /// of its own.
    pub fn write(&self, id: &str, model: &str, out: &mut Vec<u8>) {
        let members = [Member::replacing("id", &self.id, id), Member::replacing("model", &self.model, model)];
        splice(self.json.as_bytes(), self.open, self.empty, members, out);
    }
}

/// A member lariat writes into an object kept as its bytes: `value` (JSON) in place
/// of the object's own, or first in the object when it has none. A default is
/// written only where the object has none; the object's own value stays.
pub(super) struct Member<'a> {
    name: &'static str,
    place: &'a Place,
    value: &'a str,
    replaces: bool,
}

impl<'a> Member<'a> {
    pub(super) fn replacing(name: &'static str, place: &'a Place, value: &'a str) -> Self {
        Self { name, place, value, replaces: true }
    }

    pub(super) fn default(name: &'static str, place: &'a Place, value: &'a str) -> Self {
        Self { name, place, value, replaces: false }
    }
}

/// Appends `json`, an object whose members start at `open` (`empty`: it has none),
/// with `members` written in.
pub(super) fn splice<const N: usize>(
    json: &[u8],
    open: usize,
    empty: bool,
    members: [Member<'_>; N],
    out: &mut Vec<u8>,
) {
    out.reserve(json.len() + members.iter().map(|m| m.name.len() + m.value.len() + 4).sum::<usize>());
    out.extend_from_slice(&json[..open]);
    let mut absent = members.iter().filter(|m| *m.place == Place::Absent).peekable();
    while let Some(member) = absent.next() {
        out.push(b'"');
        out.extend_from_slice(member.name.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(member.value.as_bytes());
        if absent.peek().is_some() || !empty {
            out.push(b',');
        }
    }
    let mut present: [Option<(&Range<usize>, &str)>; N] = members.map(|m| match m.place {
        Place::Value(range) if m.replaces => Some((range, m.value)),
        _ => None,
    });
    present.sort_unstable_by_key(|p| p.map(|(range, _)| range.start));
    let mut cursor = open;
    for (range, value) in present.into_iter().flatten() {
        out.extend_from_slice(&json[cursor..range.start]);
        out.extend_from_slice(value.as_bytes());
        cursor = range.end;
    }
    out.extend_from_slice(&json[cursor..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::mutations::mutations;
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
        assert!(!choice.delta.role && choice.finish_reason.is_none() && !chunk.finished);
    }

    #[test]
    fn absent_fields_are_written_first_and_null_ones_replaced() {
        let chunk = relayed(r#" {"choices":[{"delta":{"role":"assistant"}}]}"#);
        assert_eq!(
            written(&chunk),
            r#" {"id":"chatcmpl-1","model":"virtual","choices":[{"delta":{"role":"assistant"}}]}"#
        );
        assert!(chunk.choice.unwrap().delta.role, "index defaults to 0");
        let chunk = relayed(r#"{"id":null,"choices":[]}"#);
        assert_eq!(written(&chunk), r#"{"model":"virtual","id":"chatcmpl-1","choices":[]}"#);
        assert_eq!(written(&relayed("{}")), r#"{"id":"chatcmpl-1","model":"virtual"}"#);
    }

    #[test]
    fn a_line_break_inside_a_string_is_refused_not_mended() {
        let err = RelayedChunk::read("{\"choices\":[{\"delta\":{\"content\":\"a\nb\"}}]}".to_owned()).unwrap_err();
        assert!(err.is_syntax(), "{err}");
    }

    #[test]
    fn escaped_keys_and_values_of_any_type_are_found() {
        let chunk = relayed(r#"{"\u0069d":7,"mod\u0065l":{"a":[1]},"choices":[{"delta":{"cont\u0065nt":"\u00e9"}}]}"#);
        assert_eq!(
            written(&chunk),
            r#"{"\u0069d":"chatcmpl-1","mod\u0065l":"virtual","choices":[{"delta":{"cont\u0065nt":"\u00e9"}}]}"#
        );
        assert_eq!(chunk.choice.unwrap().delta.content.as_deref(), Some("é"));
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
        let call = r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f"}}]}}]}"#;
        assert!(matches!(StreamChunk::read(call.into(), Reading::Relayed).unwrap(), StreamChunk::Typed(_)));
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

    /// Every text a few edits away from real chunks: what is refused as JSON is what
    /// serde_json refuses as a `Value`, and what is read of a valid chunk is what the
    /// `Value` holds, down to the bytes written back.
    #[test]
    fn reads_what_serde_json_reads_of_chunks_and_their_mutations() {
        let templates = [
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"he said \"hi\" \u00e9\\"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"choices":[{"index":1,"delta":{"content":"x"}},{"index":0,"delta":{},"finish_reason":"stop"}],"model":"m","id":"a","system_fingerprint":"fp_1","x":[true,false,-1.5e3,{"y":[]}]}"#,
            r#"{"id":"u","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
            r#"{"error":{"message":"overloaded","code":529}}"#,
        ];
        let (mut valid, mut refused) = (0, 0);
        for bytes in mutations(&templates, 3000, 0x9e37_79b9_7f4a_7c15) {
            let Ok(text) = String::from_utf8(bytes) else { continue };
            let expected = serde_json::from_str::<Value>(&text);
            let read = RelayedChunk::read(text.clone());
            match (&expected, &read) {
                (Err(_), Ok(_)) => panic!("accepted invalid JSON: {text}"),
                (Ok(_), Err(e)) if e.is_syntax() || e.is_eof() => panic!("refused valid JSON ({e}): {text}"),
                (Ok(value), Ok(chunk)) => {
                    same_reading(value, chunk, &text);
                    valid += 1;
                }
                _ => refused += 1,
            }
        }
        assert!(valid > 1000 && refused > 1000, "{valid} valid, {refused} refused");
    }

    fn same_reading(value: &Value, chunk: &RelayedChunk, text: &str) {
        let mut expected = value.clone();
        expected["id"] = json!("chatcmpl-1");
        expected["model"] = json!("virtual");
        assert_eq!(serde_json::from_str::<Value>(&written(chunk)).unwrap(), expected, "{text}");
        let choices = value["choices"].as_array().map_or(&[][..], Vec::as_slice);
        assert_eq!(chunk.choices, choices.len(), "{text}");
        assert_eq!(chunk.finished, choices.iter().any(|c| !c["finish_reason"].is_null()), "{text}");
        let first = choices.iter().find(|c| c.get("index").is_none_or(|i| i == 0));
        let content = first.and_then(|c| c["delta"]["content"].as_str());
        assert_eq!(chunk.choice.as_ref().and_then(|c| c.delta.content.as_deref()), content, "{text}");
        let usage = value.get("usage").filter(|u| !u.is_null()).map(|u| u["total_tokens"].as_u64().unwrap_or(0));
        assert_eq!(chunk.usage.as_ref().map(|u| u.total_tokens), usage, "{text}");
        assert_eq!(chunk.error.as_ref(), value.get("error"), "{text}");
    }
}
