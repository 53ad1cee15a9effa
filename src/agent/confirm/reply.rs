//! Reading the human's reply in a request: the marker in the question, the user's
//! words after it, or lariat's structured field.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::openai::{Message, Role};

const MARKER_TAG: &str = "lariat:confirm:";

/// The question's marker: a markdown link-reference definition, which chat UIs do
/// not show and send back verbatim with the history. It must stand on its own line
/// after a blank one (a definition cannot interrupt a paragraph).
pub fn marker(id: &str) -> String {
    format!("[//]: # ({MARKER_TAG}{id})")
}

/// The id in the last marker of `text`, if it is well formed: the invisible form, or
/// the `[lariat:confirm:<id>]` of questions asked by earlier releases.
pub fn find_marker(text: &str) -> Option<&str> {
    let start = text.rfind(MARKER_TAG)? + MARKER_TAG.len();
    let rest = &text[start..];
    let id = rest.get(..32)?;
    let closed = matches!(rest.as_bytes().get(32), Some(b')' | b']'));
    (closed && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// A typed reply to a confirmation question found in a client's messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Typed<'a> {
    pub id: String,
    /// The user's words (the last message).
    pub text: String,
    /// The question message the client showed.
    pub question: &'a Message,
}

/// If the last message is the user's and the assistant message before it carries a
/// marker: the checkpoint it answers and what the user said.
pub fn find_reply(messages: &[Message]) -> Option<Typed<'_>> {
    let (last, earlier) = messages.split_last()?;
    if last.role != Role::User {
        return None;
    }
    let question = earlier.iter().rev().find(|m| m.role == Role::Assistant)?;
    let id = find_marker(&question.content.text())?.to_owned();
    Some(Typed { id, text: last.content.text().into_owned(), question })
}

/// The structured alternative to a typed reply:
/// `"lariat": {"confirm": {"id": "...", "approve": true}}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Structured {
    pub id: String,
    pub approve: bool,
}

/// Takes lariat's own request field out of the pass-through fields (it never goes
/// upstream) and returns its `confirm` part; a malformed one is a 400.
pub fn take_structured(rest: &mut Map<String, Value>) -> Result<Option<Structured>, String> {
    let Some(lariat) = rest.remove("lariat") else { return Ok(None) };
    let Some(confirm) = lariat.get("confirm") else { return Ok(None) };
    serde_json::from_value(confirm.clone())
        .map(Some)
        .map_err(|e| format!("`lariat.confirm` must be {{\"id\": \"<id>\", \"approve\": true|false}}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::confirm::checkpoint::new_id;
    use serde_json::json;

    #[test]
    fn markers_are_found_only_when_well_formed() {
        let id = new_id();
        assert_eq!(id.len(), 32);
        assert_ne!(id, new_id());
        let text = format!("Shall I?\n\n---\nReply yes.\n{}", marker(&id));
        assert_eq!(find_marker(&text), Some(id.as_str()));
        assert_eq!(find_marker(&format!("Asked earlier.\n[lariat:confirm:{id}]")), Some(id.as_str()), "legacy form");
        assert_eq!(find_marker("[lariat:confirm:xyz]"), None);
        assert_eq!(find_marker("[//]: # (lariat:confirm:0123456789abcdef0123456789abcdef0)"), None, "too long");
        assert_eq!(find_marker("[lariat:confirm:0123456789abcdef0123456789abcdef"), None);
        assert_eq!(find_marker("no marker"), None);
    }

    #[test]
    fn finds_the_reply_to_the_last_question() {
        let id = new_id();
        let messages: Vec<Message> = serde_json::from_value(json!([
            {"role": "user", "content": "fetch it"},
            {"role": "assistant", "content": format!("Ok? {}", marker(&id))},
            {"role": "user", "content": [{"type": "text", "text": "Yes!"}]}
        ]))
        .unwrap();
        let reply = find_reply(&messages).unwrap();
        assert_eq!((reply.id.as_str(), reply.text.as_str()), (id.as_str(), "Yes!"));
        assert!(find_reply(&messages[..2]).is_none(), "the last message must be the user's");
        assert!(find_reply(&messages[..1]).is_none());
    }

    #[test]
    fn the_structured_field_leaves_the_pass_through_fields() {
        let mut rest: Map<String, Value> =
            serde_json::from_value(json!({"temperature": 0.1, "lariat": {"confirm": {"id": "abc", "approve": true}}}))
                .unwrap();
        let got = take_structured(&mut rest).unwrap();
        assert_eq!(got, Some(Structured { id: "abc".into(), approve: true }));
        assert!(!rest.contains_key("lariat"));
        let mut bad: Map<String, Value> = serde_json::from_value(json!({"lariat": {"confirm": {"id": 3}}})).unwrap();
        assert!(take_structured(&mut bad).unwrap_err().contains("lariat.confirm"));
    }
}
