//! What a relay reads of an upstream chunk: where `id` and `model` are (borrowed as
//! raw JSON, whatever their type), choice 0's role, text, tool calls and finish
//! reason, the usage and an error. Everything else is skipped by the parser (and
//! checked), never built.

use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::tolerant::Key;
use super::{Choice, FinishReason, ToolCallDelta, Usage};

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

/// What lariat reads of choice 0's delta (a typed round's too).
#[derive(Debug, Default, Deserialize)]
pub struct DeltaView {
    /// The delta names a role (the message starts here).
    #[serde(default, deserialize_with = "present")]
    pub role: bool,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// Whether a field holds anything but `null`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Option::<IgnoredAny>::deserialize(deserializer).map(|v| v.is_some())
}

/// Where `part`, a slice of `whole`, lies in it (`None` if it is not one: a raw
/// value borrowed by `serde_json::from_str` always is, and a chunk whose places could
/// not be trusted is refused rather than written wrong).
pub(super) fn span_in(whole: &str, part: &str) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let span = start..start.checked_add(part.len())?;
    whole.get(span.clone()).is_some_and(|s| std::ptr::eq(s, part)).then_some(span)
}

/// The top level of a chunk, read by hand (not derived) so that it must be an object
/// and `id` and `model` are borrowed as raw JSON, whatever their type.
pub(super) struct View<'a> {
    pub members: usize,
    pub id: Option<&'a RawValue>,
    pub model: Option<&'a RawValue>,
    pub choices: Choices,
    pub usage: Option<Usage>,
    pub error: Option<Value>,
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
        let (mut id, mut model, mut choices, mut usage, mut error) = (None, None, None, None, None);
        let mut members = 0;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            members += 1;
            match key.as_str() {
                "id" => once(&mut id, "id", &mut map, Ok)?,
                "model" => once(&mut model, "model", &mut map, Ok)?,
                "choices" => once(&mut choices, "choices", &mut map, Ok)?,
                "usage" => once::<Option<Usage>, _>(&mut usage, "usage", &mut map, Ok)?,
                "error" => once(&mut error, "error", &mut map, Ok)?,
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
pub(super) struct Choices {
    pub first: Option<ChoiceView>,
    pub count: usize,
    pub finished: bool,
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

/// The top level of a non-streamed answer, as a relay reads it: where `id` and
/// `model` are, whether `object` and `created` are there, and the choices and usage
/// typed, as a typed read would take them. The rest is read and dropped, so what a
/// typed read refuses is refused here too.
pub(super) struct CompletionView<'a> {
    pub id: Option<&'a RawValue>,
    pub model: Option<&'a RawValue>,
    pub object: bool,
    pub created: bool,
    pub choices: Vec<Choice>,
    pub usage: Option<Usage>,
}

impl<'de> Deserialize<'de> for CompletionView<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(CompletionVisitor)
    }
}

struct CompletionVisitor;

impl<'de> Visitor<'de> for CompletionVisitor {
    type Value = CompletionView<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct ChatCompletion")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CompletionView<'de>, A::Error> {
        let (mut id, mut model, mut choices, mut usage) = (None, None, None, None);
        let (mut object, mut created) = (false, false);
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match key.as_str() {
                "id" => once(&mut id, "id", &mut map, string)?,
                "model" => once(&mut model, "model", &mut map, string)?,
                "choices" => once(&mut choices, "choices", &mut map, Ok)?,
                "usage" => once::<Option<Usage>, _>(&mut usage, "usage", &mut map, Ok)?,
                other => {
                    object |= other == "object";
                    created |= other == "created";
                    // Read as a typed read reads it (into a `Value`, dropped): skipping
                    // does not check a lone surrogate or a number out of range.
                    map.next_value::<Value>()?;
                }
            }
        }
        let choices = choices.ok_or_else(|| de::Error::missing_field("choices"))?;
        Ok(CompletionView { id, model, object, created, choices, usage: usage.flatten() })
    }
}

/// Reads a field's value into its empty `slot` (a second one is an error) and checks
/// it with `check`.
fn once<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
    slot: &mut Option<T>,
    name: &'static str,
    map: &mut A,
    check: impl FnOnce(T) -> Result<T, String>,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(check(map.next_value()?).map_err(de::Error::custom)?);
    Ok(())
}

/// A raw value that a typed read would take as a `String`.
fn string(raw: &RawValue) -> Result<&RawValue, String> {
    let text = raw.get();
    // Only escapes can make a JSON string one that is not a Rust string (a lone surrogate).
    if text.starts_with('"') && (!text.contains('\\') || serde_json::from_str::<String>(text).is_ok()) {
        Ok(raw)
    } else {
        Err(format!("invalid type: {text}, expected a string"))
    }
}
