//! Message content: a string, an array of content parts, or nothing. Parts stay
//! JSON values (images, audio, files… are passed through untouched); only their
//! text is ever read.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq)]
pub enum Content {
    Text(String),
    /// `[{"type": "text", "text": …}, {"type": "image_url", …}, …]`.
    Parts(Vec<Value>),
    /// `null` or absent: an assistant message that only calls tools.
    #[default]
    None,
}

impl Content {
    /// Every text part, joined by a blank line; other parts are left out.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Self::Text(text) => Cow::Borrowed(text),
            Self::Parts(parts) => {
                let mut texts = parts.iter().filter_map(part_text);
                match (texts.next(), texts.next()) {
                    (None, _) => Cow::Borrowed(""),
                    (Some(only), None) => Cow::Borrowed(only),
                    (Some(first), Some(second)) => {
                        let mut joined = format!("{first}\n\n{second}");
                        for text in texts {
                            joined.push_str("\n\n");
                            joined.push_str(text);
                        }
                        Cow::Owned(joined)
                    }
                }
            }
            Self::None => Cow::Borrowed(""),
        }
    }

    /// The text of every part, non-text parts named by their type (`[image_url]`):
    /// for transcripts that must say something was there.
    pub fn describe(&self) -> String {
        match self {
            Self::Parts(parts) => parts
                .iter()
                .map(|part| match part_text(part) {
                    Some(text) => text.to_owned(),
                    None => format!("[{}]", part.get("type").and_then(Value::as_str).unwrap_or("part")),
                })
                .collect::<Vec<_>>()
                .join(" "),
            other => other.text().into_owned(),
        }
    }

    /// The text of a plain string content.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Self::Text(text) => text.is_empty(),
            Self::Parts(parts) => parts.is_empty(),
            Self::None => true,
        }
    }

    /// Appends `addition` as its own paragraph (a string) or its own text part.
    pub fn append_paragraph(&mut self, addition: &str) {
        match self {
            Self::Text(text) => {
                text.push_str("\n\n");
                text.push_str(addition);
            }
            Self::Parts(parts) => parts.push(serde_json::json!({"type": "text", "text": addition})),
            Self::None => *self = Self::Text(addition.to_owned()),
        }
    }
}

/// The text of a `{"type": "text", "text": …}` part (a part without a type but
/// with a text counts too: some clients leave the type out).
pub fn part_text(part: &Value) -> Option<&str> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") | None => part.get("text")?.as_str(),
        Some(_) => None,
    }
}

impl From<String> for Content {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for Content {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl PartialEq<&str> for Content {
    fn eq(&self, other: &&str) -> bool {
        matches!(self, Self::Text(text) if text == other)
    }
}

impl PartialEq<String> for Content {
    fn eq(&self, other: &String) -> bool {
        matches!(self, Self::Text(text) if text == other)
    }
}

impl Serialize for Content {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(text) => serializer.serialize_str(text),
            Self::Parts(parts) => parts.serialize(serializer),
            Self::None => serializer.serialize_unit(),
        }
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ContentVisitor)
    }
}

struct ContentVisitor;

impl<'de> Visitor<'de> for ContentVisitor {
    type Value = Content;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, an array of content parts, or null")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Content, E> {
        Ok(Content::Text(text.to_owned()))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Content, E> {
        Ok(Content::Text(text))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Content, E> {
        Ok(Content::None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Content, E> {
        Ok(Content::None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Content, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
        let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(part) = seq.next_element()? {
            parts.push(part);
        }
        Ok(Content::Parts(parts))
    }
}

#[cfg(test)]
impl PartialEq<Value> for Content {
    fn eq(&self, other: &Value) -> bool {
        serde_json::to_value(self).is_ok_and(|v| &v == other)
    }
}

#[cfg(test)]
impl From<Value> for Content {
    fn from(value: Value) -> Self {
        serde_json::from_value(value).unwrap_or(Self::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_and_writes_every_shape() {
        for raw in [json!("hi"), json!([{"type": "text", "text": "a"}, {"type": "image_url"}]), Value::Null] {
            let content: Content = serde_json::from_value(raw.clone()).unwrap();
            assert_eq!(serde_json::to_value(&content).unwrap(), raw);
        }
        assert!(serde_json::from_value::<Content>(json!(3)).is_err(), "a number is not content");
    }

    #[test]
    fn text_joins_the_text_parts() {
        assert_eq!(Content::from("plain").text(), "plain");
        let parts: Content = serde_json::from_value(json!([
            {"type": "text", "text": "one"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "two"}
        ]))
        .unwrap();
        assert_eq!(parts.text(), "one\n\ntwo");
        assert_eq!(parts.describe(), "one [image_url] two");
        assert_eq!(Content::None.text(), "");
    }

    #[test]
    fn paragraphs_are_appended_in_the_content_s_own_shape() {
        let mut text = Content::from("a");
        text.append_paragraph("b");
        assert_eq!(text, "a\n\nb");
        let mut parts = Content::Parts(vec![json!({"type": "text", "text": "a"})]);
        parts.append_paragraph("b");
        assert_eq!(serde_json::to_value(&parts).unwrap()[1], json!({"type": "text", "text": "b"}));
        let mut none = Content::None;
        none.append_paragraph("b");
        assert_eq!(none, "b");
    }
}
