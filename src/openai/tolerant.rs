//! `Deserialize` for the wire types that keep unknown fields in a `rest` map, written
//! out instead of derived with `#[serde(flatten)]`.
//!
//! Why: serde's `flatten` buffers every unknown field into its private `Content` tree
//! and then deserializes that tree a second time into the map; on the relay path this
//! is done for every chunk of every stream (the `FlatMapDeserializer` frames were the
//! largest single cost of a relayed event). Here an unknown field is read once,
//! straight into a `Value`, and a key without escapes is borrowed from the input.
//! The behaviour is the derive's: known fields typed (a duplicate one is an error, a
//! missing one takes its default or is a `missing field` error), a JSON object only,
//! and `Serialize` stays derived, so the bytes written are unchanged.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// An object key, borrowed from the input when it has no escapes.
pub(super) enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    pub(super) fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }

    pub(super) fn into_owned(self) -> String {
        match self {
            Key::Borrowed(s) => s.to_owned(),
            Key::Owned(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The value of a field once the object is read: its default (`default`, or a
/// function's) or a `missing field` error (`required`).
macro_rules! settle {
    ($v:ident, $key:literal, required) => {
        $v.ok_or_else(|| serde::de::Error::missing_field($key))?
    };
    ($v:ident, $key:literal, default) => {
        $v.unwrap_or_default()
    };
    ($v:ident, $key:literal, $f:path) => {
        $v.unwrap_or_else($f)
    };
}

/// `tolerant!(Type, "what it is", { field: "key" how, ... })` implements `Deserialize`
/// for `Type`, whose other field is `rest: Map<String, Value>`; `how` is `default`,
/// `required` or the path of a function giving the default.
macro_rules! tolerant {
    ($ty:ident, $what:literal, { $($field:ident: $key:literal $how:tt),* $(,)? }) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct TolerantVisitor;
                impl<'de> serde::de::Visitor<'de> for TolerantVisitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<$ty, A::Error> {
                        $(let mut $field = None;)*
                        let mut rest = serde_json::Map::new();
                        while let Some(key) = map.next_key::<$crate::openai::tolerant::Key<'de>>()? {
                            match key.as_str() {
                                $($key => {
                                    if $field.is_some() {
                                        return Err(serde::de::Error::duplicate_field($key));
                                    }
                                    $field = Some(map.next_value()?);
                                })*
                                _ => {
                                    let value: serde_json::Value = map.next_value()?;
                                    rest.insert(key.into_owned(), value);
                                }
                            }
                        }
                        Ok($ty { $($field: $crate::openai::tolerant::settle!($field, $key, $how),)* rest })
                    }
                }
                deserializer.deserialize_map(TolerantVisitor)
            }
        }
    };
}

use settle;

use super::{
    ChatChunk, ChatCompletion, ChatRequest, Choice, ChunkChoice, Delta, FunctionDef, Message, StreamOptions, ToolCall,
    ToolDef, Usage, function_type,
};

// The expectations are the derive's own words, so error messages stay as they were.
tolerant!(ChatRequest, "struct ChatRequest", {
    model: "model" required, messages: "messages" required, stream: "stream" default,
    stream_options: "stream_options" default, tools: "tools" default, tool_choice: "tool_choice" default,
});
tolerant!(ToolDef, "struct ToolDef", { kind: "type" function_type, function: "function" required });
tolerant!(FunctionDef, "struct FunctionDef", {
    name: "name" required, description: "description" default, parameters: "parameters" default,
});
tolerant!(StreamOptions, "struct StreamOptions", { include_usage: "include_usage" default });
tolerant!(Message, "struct Message", {
    role: "role" required, content: "content" default, tool_calls: "tool_calls" default,
    tool_call_id: "tool_call_id" default,
});
tolerant!(ToolCall, "struct ToolCall", { id: "id" required, kind: "type" function_type, function: "function" required });
tolerant!(ChatCompletion, "struct ChatCompletion", {
    id: "id" default, model: "model" default, choices: "choices" required, usage: "usage" default,
});
tolerant!(Choice, "struct Choice", {
    index: "index" default, message: "message" required, finish_reason: "finish_reason" default,
});
tolerant!(Usage, "struct Usage", {
    prompt_tokens: "prompt_tokens" default, completion_tokens: "completion_tokens" default,
    total_tokens: "total_tokens" default,
});
tolerant!(ChatChunk, "struct ChatChunk", {
    id: "id" default, model: "model" default, choices: "choices" default, usage: "usage" default,
});
tolerant!(ChunkChoice, "struct ChunkChoice", {
    index: "index" default, delta: "delta" default, finish_reason: "finish_reason" default,
});
tolerant!(Delta, "struct Delta", {
    role: "role" default, content: "content" default, tool_calls: "tool_calls" default,
});
